//! SMART bench: complete launches per second through the gateway against the mock EHR
//! (`partner_sim::ehr`) on loopback, and the FHIR proxy against the mock FHIR server called
//! directly, all in one run. SQLite, then PostgreSQL when `BENCH_DATABASE_URL` is set.
//!
//! ```sh
//! export CARGO_TARGET_DIR=/work/target-bench    # any target dir
//! cargo bench --bench smart                      # SQLite (+ PostgreSQL with BENCH_DATABASE_URL)
//! cargo bench --bench smart -- --duration 10 --rounds 5 --backend sqlite
//! scripts/bench-smart.sh                         # installs wrk if missing, then the above
//! ```
//!
//! What it measures, per store:
//! 1. Launches: the whole browser flow (`/smart/launch` -> the mock's authorize ->
//!    `/smart/callback` -> `POST /v1/launches/exchange`) for a public and a
//!    confidential-asymmetric client: `--launches` sequential ones, then `--workers`
//!    concurrent workers for `--launch-secs`. Baseline in the same run: the EHR's part alone
//!    (the mock's launch, authorize and token requests, driven by a minimal client that
//!    sends the same authorize parameters and, for the asymmetric client, signs the same
//!    RS384 assertion with the gateway's key loaded once).
//! 2. Proxy throughput: `wrk` (a separate process) against `GET {iss}/Patient/{id}` with the
//!    EHR's access token (direct) and `GET /v1/launches/{id}/fhir/Patient/{id}` with the app
//!    key (proxy), same threads/connections/duration, alternating, `--rounds` times; medians.
//!    Without wrk (or with `--no-wrk`) an in-process reqwest load generator is used instead.
//! 3. Added latency: `--latency-requests` sequential pairs (direct, proxy; the order
//!    alternates), one keep-alive connection each, after `--warmup` pairs.
//!
//! The gateway and the mock EHR run on one tokio runtime (2 workers), the bench's client
//! side on another (2 workers), wrk in its own process: all share the machine's cores.
//! Targets (from the issue): the proxy keeps >= 70% of the direct throughput and adds
//! < 1 ms at the median. Exit status 1 when a request failed (its figures are not valid).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use partner_gateway::apikeys::{self, Role};
use partner_gateway::keys::{self, SigningKey};
use partner_gateway::smart::flow::{
    AuthorizeRequest, authorize_url, client_assertion_claims, pkce_pair,
};
use partner_gateway::state::AppState;
use partner_sim::ehr::{LaunchContext, MockClient, MockEhr, MockEhrOptions, Vendor};
use serde_json::Value;
use support::args::{self, Args};
use support::cpu::{CpuSample, ProcCpu};
use support::db::{Backend, Store, each_backend, fail_if_any};
use support::facts::{command_line, machine_facts};
use support::http::{answer_text, bearer_seen, exchange, query_param, redirect_of, snippet};
use support::server::{self, Serving, on_server, unshared};
use support::stats::{median_f64, ms, percentile};
use support::workers::{Stats, for_secs, with_cpu};
use support::wrk;
use tokio::runtime::Handle;

const APP_URL: &str = "https://app.example.test/launch";
const PUBLIC_PARTNER: &str = "bench-ehr-public";
const ASYM_PARTNER: &str = "bench-ehr-asym";
const PUBLIC_CLIENT: &str = "app-public";
const ASYM_CLIENT: &str = "app-asym";
const SCOPES: [&str; 5] = [
    "openid",
    "fhirUser",
    "offline_access",
    "patient/Patient.rs",
    "patient/Observation.cruds",
];
const FHIR_ACCEPT: &str = "application/fhir+json";
const TARGET_RATIO: f64 = 0.70;
const TARGET_ADDED_MS: f64 = 1.0;

const USAGE: &str = "usage: cargo bench --bench smart -- [--backend sqlite|postgres|both] \
[--launches N (200)] [--workers N (8)] [--launch-secs S (5)] [--duration S (5, per wrk run)] \
[--rounds N (3)] [--threads N (2)] [--connections N (32)] [--latency-requests N (2000)] \
[--warmup N (200)] [--no-wrk] [--only launches,proxy,latency] \
[--key-cache-ms N (config default)] [--ehr-latency-ms N (0)]\n\
PostgreSQL runs when BENCH_DATABASE_URL is set (a fresh schema, dropped at the end).";

// ------------------------------------------------------------------------------------------
// Options

struct Opts {
    backends: Vec<Backend>,
    pg_url: Option<String>,
    launches: usize,
    workers: usize,
    launch_secs: f64,
    duration_secs: u64,
    rounds: usize,
    threads: usize,
    connections: usize,
    latency_requests: usize,
    warmup: usize,
    no_wrk: bool,
    /// `http.api_key_cache_ms` for the gateway (None: the config default).
    key_cache_ms: Option<u64>,
    /// Time the mock FHIR API waits before answering (a real EHR's service time).
    ehr_latency_ms: u64,
    /// Which parts run (all by default; `--only` narrows it, e.g. for a profiler).
    launches_phase: bool,
    proxy_phase: bool,
    latency_phase: bool,
}

fn parse_args() -> anyhow::Result<Opts> {
    let pg_url = args::pg_url();
    let mut o = Opts {
        backends: args::backends_for(pg_url.as_deref()),
        pg_url,
        launches: 200,
        workers: 8,
        launch_secs: 5.0,
        duration_secs: 5,
        rounds: 3,
        threads: 2,
        connections: 32,
        latency_requests: 2000,
        warmup: 200,
        no_wrk: false,
        key_cache_ms: None,
        ehr_latency_ms: 0,
        launches_phase: true,
        proxy_phase: true,
        latency_phase: true,
    };
    let mut args = Args::new(USAGE);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--launches" => o.launches = args.num(&a)?,
            "--workers" => o.workers = args.num(&a)?,
            "--launch-secs" => o.launch_secs = args.num(&a)?,
            "--duration" => o.duration_secs = args.num(&a)?,
            "--rounds" => o.rounds = args.num(&a)?,
            "--threads" => o.threads = args.num(&a)?,
            "--connections" => o.connections = args.num(&a)?,
            "--latency-requests" => o.latency_requests = args.num(&a)?,
            "--warmup" => o.warmup = args.num(&a)?,
            "--no-wrk" => o.no_wrk = true,
            "--key-cache-ms" => o.key_cache_ms = Some(args.num(&a)?),
            "--ehr-latency-ms" => o.ehr_latency_ms = args.num(&a)?,
            "--only" => {
                let v = args.value()?;
                o.launches_phase = false;
                o.proxy_phase = false;
                o.latency_phase = false;
                for part in v.split(',') {
                    match part.trim() {
                        "launches" => o.launches_phase = true,
                        "proxy" => o.proxy_phase = true,
                        "latency" => o.latency_phase = true,
                        other => bail!(
                            "--only takes launches, proxy, latency (comma-separated), not {other:?}\n{USAGE}"
                        ),
                    }
                }
            }
            "--backend" => o.backends = args.backends()?,
            other => args.other(other)?,
        }
    }
    args::check_pg_url(&o.backends, o.pg_url.as_deref())?;
    ensure!(
        o.launches > 0 && o.workers > 0 && o.rounds > 0 && o.latency_requests > 0,
        "--launches, --workers, --rounds and --latency-requests must be at least 1"
    );
    ensure!(
        o.duration_secs > 0 && o.launch_secs > 0.0,
        "--duration and --launch-secs must be positive"
    );
    ensure!(
        o.threads > 0 && o.connections >= o.threads,
        "--threads must be at least 1 and --connections at least --threads (wrk's rule)"
    );
    Ok(o)
}

// ------------------------------------------------------------------------------------------
// Small helpers

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ------------------------------------------------------------------------------------------
// The environment: two mock EHRs (one per client type) and the gateway

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Public,
    Asymmetric,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Public => "public",
            Kind::Asymmetric => "confidential-asymmetric",
        }
    }
}

struct Env {
    server: Handle,
    state: AppState,
    gateway: String,
    ehr_public: MockEhr,
    ehr_asym: MockEhr,
    app_key: String,
    /// The gateway's RS384 key, loaded once, for the EHR-only baseline's assertions.
    assertion_key: SigningKey,
    browser: reqwest::Client,
    serving: Serving,
    _dir: tempfile::TempDir,
}

impl Env {
    fn ehr(&self, kind: Kind) -> &MockEhr {
        match kind {
            Kind::Public => &self.ehr_public,
            Kind::Asymmetric => &self.ehr_asym,
        }
    }

    fn client_id(kind: Kind) -> &'static str {
        match kind {
            Kind::Public => PUBLIC_CLIENT,
            Kind::Asymmetric => ASYM_CLIENT,
        }
    }

    fn context(&self, kind: Kind) -> LaunchContext {
        let ehr = self.ehr(kind);
        LaunchContext {
            patient: Some(ehr.default_patient()),
            encounter: Some("enc-1".into()),
            user: ehr.default_practitioner(),
            fhir_context: vec![serde_json::json!({"reference": "DiagnosticReport/dr-1"})],
            intent: Some("reconcile-medications".into()),
            need_patient_banner: true,
            smart_style_url: Some("https://ehr.example.test/style.json".into()),
        }
    }

    /// `/smart/launch` with a new launch of `kind` from its mock EHR, as the EHR opens it.
    fn launch_url(&self, kind: Kind) -> String {
        let ehr = self.ehr(kind);
        let launch = ehr.launch(self.context(kind));
        format!(
            "{}/smart/launch?iss={}&launch={}",
            self.gateway,
            enc(&ehr.iss()),
            enc(&launch)
        )
    }
}

fn bench_layer(
    db_url: &str,
    dir: &Path,
    gateway: &str,
    iss_public: &str,
    iss_asym: &str,
    key_cache_ms: Option<u64>,
) -> String {
    let key_cache = key_cache_ms
        .map(|ms| format!("api_key_cache_ms = {ms}"))
        .unwrap_or_default();
    let scopes: Vec<String> = SCOPES.iter().map(|s| format!("{s:?}")).collect();
    let scopes = scopes.join(", ");
    format!(
        r#"
{base}[http]
public_url = "{gateway}"
{key_cache}
[jobs]
enabled = false

[[partners]]
id = "{PUBLIC_PARTNER}"
name = "Bench EHR (public client)"
kind = "ehr"
[partners.smart]
vendor = "epic"
issuers = ["{iss_public}"]
client_id = "{PUBLIC_CLIENT}"
client_type = "public"
scopes = [{scopes}]
app_url = "{APP_URL}"

[[partners]]
id = "{ASYM_PARTNER}"
name = "Bench EHR (confidential-asymmetric client)"
kind = "ehr"
[partners.smart]
vendor = "epic"
issuers = ["{iss_asym}"]
client_id = "{ASYM_CLIENT}"
client_type = "confidential-asymmetric"
scopes = [{scopes}]
app_url = "{APP_URL}"
"#,
        base = server::base_toml(db_url, dir),
    )
}

/// Start both mocks and the gateway on the server runtime; returns the environment.
async fn start_env(server: Handle, db_url: String, o: &Opts) -> anyhow::Result<Env> {
    let key_cache_ms = o.key_cache_ms;
    let fhir_latency = Duration::from_millis(o.ehr_latency_ms);
    let dir = tempfile::Builder::new()
        .prefix("pgw-bench-smart-")
        .tempdir()
        .context("creating a temporary directory")?;
    let dir_path = dir.path().to_owned();
    let h = server.clone();
    let started = on_server(&server, async move {
        let (listener, gateway) = server::bind().await?;
        let redirect = format!("{gateway}/smart/callback");
        let jwks = format!("{gateway}/.well-known/jwks.json");
        let mut public_opts = MockEhrOptions::new(
            Vendor::Epic,
            vec![MockClient::public(PUBLIC_CLIENT, &redirect)],
        );
        public_opts.fhir_latency = fhir_latency;
        let ehr_public = MockEhr::start(public_opts)
            .await
            .context("starting the mock EHR (public client)")?;
        let ehr_asym = MockEhr::start(MockEhrOptions::new(
            Vendor::Epic,
            vec![MockClient::asymmetric(
                ASYM_CLIENT,
                &jwks,
                vec![redirect.clone()],
            )],
        ))
        .await
        .context("starting the mock EHR (asymmetric client)")?;
        let state = server::prepare(vec![
            server::partners_layer(),
            server::meters_layer(),
            server::bench_layer(bench_layer(
                &db_url,
                &dir_path,
                &gateway,
                &ehr_public.iss(),
                &ehr_asym.iss(),
                key_cache_ms,
            )),
        ])
        .await?;
        let app_key = server::api_key(&state, Role::App).await?;
        let alg = state
            .config
            .partner(ASYM_PARTNER)
            .and_then(|p| p.smart.as_ref())
            .map(|r| r.alg())
            .context("the asymmetric partner has no SMART registration")?;
        let assertion_key = keys::signing_key(&state.db, &state.master_key, alg)
            .await
            .context("loading the gateway's signing key")?;
        let serving = Serving::spawn(&state, listener);
        anyhow::Ok((
            gateway,
            ehr_public,
            ehr_asym,
            state,
            app_key,
            assertion_key,
            serving,
        ))
    })
    .await?;
    let (gateway, ehr_public, ehr_asym, state, app_key, assertion_key, serving) = started;
    // Keeps cookies: each launch's state is bound to the browser by a cookie of its own.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .cookie_store(true)
        .build()
        .context("building the bench's HTTP client")?;
    let env = Env {
        server: h,
        state,
        gateway,
        ehr_public,
        ehr_asym,
        app_key,
        assertion_key,
        browser,
        serving,
        _dir: dir,
    };
    // The gateway answers before anything is timed.
    server::wait_healthy(&env.browser, &env.gateway).await?;
    Ok(env)
}

// ------------------------------------------------------------------------------------------
// One launch, through the gateway or against the EHR alone

/// The whole EHR launch through the gateway, ending with the app's exchange: the launch id.
async fn gateway_launch(env: &Env, kind: Kind) -> anyhow::Result<String> {
    let start = env.launch_url(kind);
    let authorize = redirect_of(&env.browser, &start, "GET /smart/launch").await?;
    let callback = redirect_of(&env.browser, &authorize, "the EHR's authorize").await?;
    ensure!(
        callback.starts_with(&format!("{}/smart/callback", env.gateway)),
        "the EHR's authorize redirected elsewhere: {}",
        snippet(&callback)
    );
    let app = redirect_of(&env.browser, &callback, "GET /smart/callback").await?;
    ensure!(
        app.starts_with(APP_URL),
        "the callback did not redirect to the app: {}",
        snippet(&app)
    );
    let code = query_param(&app, "code")?;
    exchange(&env.browser, &env.gateway, &env.app_key, &code).await
}

/// What the gateway sends to the EHR's authorize endpoint, captured from one launch.
struct AuthorizeTemplate {
    endpoint: url::Url,
    scope: String,
    redirect_uri: String,
}

async fn authorize_template(env: &Env, kind: Kind) -> anyhow::Result<AuthorizeTemplate> {
    let ehr = env.ehr(kind);
    let start = env.launch_url(kind);
    let authorize = redirect_of(&env.browser, &start, "GET /smart/launch").await?;
    let mut endpoint = url::Url::parse(&authorize).context("the authorize URL")?;
    endpoint.set_query(None);
    ensure!(
        endpoint.as_str() == ehr.authorize_url(),
        "the gateway sent the browser to {endpoint}, not the mock's {}",
        ehr.authorize_url()
    );
    ensure!(query_param(&authorize, "client_id")? == Env::client_id(kind));
    Ok(AuthorizeTemplate {
        endpoint,
        scope: query_param(&authorize, "scope")?,
        redirect_uri: query_param(&authorize, "redirect_uri")?,
    })
}

/// The EHR's part of a launch alone: launch, authorize (same parameters the gateway sends),
/// token request with PKCE and the client's authentication (for the asymmetric client the
/// same RS384 assertion the gateway signs, with its key loaded once).
async fn ehr_only_launch(env: &Env, kind: Kind, t: &AuthorizeTemplate) -> anyhow::Result<()> {
    let ehr = env.ehr(kind);
    let launch = ehr.launch(env.context(kind));
    let (verifier, challenge) = pkce_pair();
    let state = partner_gateway::random::token(32);
    let iss = ehr.iss();
    let url = authorize_url(
        &t.endpoint,
        &AuthorizeRequest {
            client_id: Env::client_id(kind),
            redirect_uri: &t.redirect_uri,
            scope: &t.scope,
            state: &state,
            aud: &iss,
            code_challenge: &challenge,
            launch: Some(&launch),
        },
    );
    let callback = redirect_of(&env.browser, url.as_str(), "the EHR's authorize").await?;
    ensure!(
        query_param(&callback, "state")? == state,
        "the EHR returned another state"
    );
    let code = query_param(&callback, "code")?;
    let token_url = ehr.token_url();
    let mut form: Vec<(&str, String)> = vec![
        ("grant_type", "authorization_code".into()),
        ("code", code),
        ("redirect_uri", t.redirect_uri.clone()),
        ("code_verifier", verifier),
    ];
    match kind {
        Kind::Public => form.push(("client_id", PUBLIC_CLIENT.into())),
        Kind::Asymmetric => {
            let claims =
                client_assertion_claims(ASYM_CLIENT, &token_url, chrono::Utc::now().timestamp());
            let assertion = keys::sign_jwt(&env.assertion_key, &claims)?;
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ));
            form.push(("client_assertion", assertion));
        }
    }
    let r = env
        .browser
        .post(&token_url)
        .header("accept", "application/json")
        .form(&form)
        .send()
        .await
        .context("the EHR's token endpoint: request failed")?;
    let text = answer_text(r, |s| s.is_success(), "the EHR's token endpoint").await?;
    let body: Value = serde_json::from_str(&text).context("the token answer is not JSON")?;
    ensure!(
        body["access_token"].as_str().is_some_and(|s| !s.is_empty()),
        "no access_token"
    );
    Ok(())
}

#[derive(Clone, Copy)]
enum Flow {
    Gateway(Kind),
    EhrOnly(Kind),
}

async fn run_flow(env: &Env, flow: Flow, t: &AuthorizeTemplate) -> anyhow::Result<()> {
    match flow {
        Flow::Gateway(kind) => gateway_launch(env, kind).await.map(|_| ()),
        Flow::EhrOnly(kind) => ehr_only_launch(env, kind, t).await,
    }
}

/// "N launches in S s = R/s; p50, p99; CPU ms/launch [machine busy]", and the failures.
fn line(s: &Stats) -> String {
    format!(
        "{:>5} launches in {:>6.2} s = {:>7.1}/s; p50 {:.2} ms, p99 {:.2} ms{}{}",
        s.ops,
        s.elapsed.as_secs_f64(),
        s.rate(),
        s.p(0.5),
        s.p(0.99),
        match (cpu_ms(s), s.busy_pct) {
            (Some(c), Some(b)) => format!("; CPU {c:.2} ms/launch [machine busy {b:.0}%]"),
            _ => String::new(),
        },
        s.failed_note()
    )
}

/// CPU of this process (gateway + mock EHR + bench client) per launch, ms.
fn cpu_ms(s: &Stats) -> Option<f64> {
    s.cpu_us.map(|c| c / 1000.0)
}

#[derive(Clone, Copy)]
enum Mode {
    Sequential(usize),
    /// Workers, seconds.
    Concurrent(usize, f64),
}

/// The gateway flow and the EHR-only flow of `kind`, each in two blocks of half the
/// launches (or half the time), run gateway, EHR-only, EHR-only, gateway.
async fn abba(
    env: &Arc<Env>,
    kind: Kind,
    t: &Arc<AuthorizeTemplate>,
    mode: Mode,
) -> (Stats, Stats) {
    let half = match mode {
        Mode::Sequential(n) => Mode::Sequential(n.div_ceil(2)),
        Mode::Concurrent(w, secs) => Mode::Concurrent(w, secs / 2.0),
    };
    let block = |flow: Flow| async move {
        with_cpu(async {
            match half {
                Mode::Sequential(n) => sequential(env, flow, t, n).await,
                Mode::Concurrent(w, secs) => concurrent(env, flow, t, w, secs).await,
            }
        })
        .await
    };
    let g1 = block(Flow::Gateway(kind)).await;
    let b1 = block(Flow::EhrOnly(kind)).await;
    let b2 = block(Flow::EhrOnly(kind)).await;
    let g2 = block(Flow::Gateway(kind)).await;
    (g1.merge(g2), b1.merge(b2))
}

async fn sequential(env: &Env, flow: Flow, t: &AuthorizeTemplate, n: usize) -> Stats {
    let mut s = Stats {
        times: Vec::with_capacity(n),
        ..Stats::default()
    };
    let started = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        s.record(t0, run_flow(env, flow, t).await);
    }
    s.elapsed = started.elapsed();
    s.ops = s.times.len();
    s
}

async fn concurrent(
    env: &Arc<Env>,
    flow: Flow,
    t: &Arc<AuthorizeTemplate>,
    workers: usize,
    secs: f64,
) -> Stats {
    let (env, t) = (env.clone(), t.clone());
    for_secs(workers, secs, move |_| {
        let (env, t) = (env.clone(), t.clone());
        async move { run_flow(&env, flow, &t).await }
    })
    .await
}

// ------------------------------------------------------------------------------------------
// Load: wrk, or an in-process fallback

struct LoadRun {
    rps: f64,
    requests: u64,
    p50_ms: f64,
    p99_ms: f64,
    non2xx: u64,
    socket_errors: u64,
    /// CPU of this process (gateway + mock + idle bench client) per answered request, µs.
    server_cpu_us: Option<f64>,
    /// CPU of wrk per answered request, µs.
    client_cpu_us: Option<f64>,
    busy_pct: Option<f64>,
    steal_pct: Option<f64>,
}

struct Target {
    url: String,
    bearer: String,
}

struct Load {
    wrk: bool,
    threads: usize,
    connections: usize,
}

impl Load {
    async fn run(&self, target: &Target, secs: u64) -> anyhow::Result<LoadRun> {
        let cpu = CpuSample::now();
        let before = ProcCpu::read();
        let mut run = if self.wrk {
            self.wrk(target, secs).await?
        } else {
            self.in_process(target, secs).await?
        };
        let after = ProcCpu::read();
        if let (Some(b), Some(a)) = (before, after)
            && run.requests > 0
        {
            let n = run.requests as f64;
            run.server_cpu_us = Some((a.own - b.own) * 1e6 / n);
            if self.wrk {
                run.client_cpu_us = Some((a.children - b.children) * 1e6 / n);
            }
        }
        if let Some(c) = cpu.since() {
            run.busy_pct = Some(c.busy());
            run.steal_pct = Some(c.steal());
        }
        Ok(run)
    }

    async fn wrk(&self, target: &Target, secs: u64) -> anyhow::Result<LoadRun> {
        let r = wrk::run(
            self.threads,
            self.connections,
            Duration::from_secs(secs),
            &target.url,
            &[
                format!("Authorization: Bearer {}", target.bearer),
                format!("Accept: {FHIR_ACCEPT}"),
            ],
        )
        .await?;
        Ok(LoadRun {
            rps: r.rps,
            requests: r.requests,
            p50_ms: r.p50_ms,
            p99_ms: r.p99_ms,
            non2xx: r.non2xx,
            socket_errors: r.socket_errors,
            server_cpu_us: None,
            client_cpu_us: None,
            busy_pct: None,
            steal_pct: None,
        })
    }

    /// `connections` tasks on the bench's client runtime, each with its own connection.
    async fn in_process(&self, target: &Target, secs: u64) -> anyhow::Result<LoadRun> {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(secs);
        let ok = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..self.connections {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(10))
                .build()?;
            let (url, bearer, ok) = (target.url.clone(), target.bearer.clone(), ok.clone());
            tasks.push(tokio::spawn(async move {
                let (mut times, mut bad, mut errors) = (Vec::new(), 0u64, 0u64);
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let r = client
                        .get(&url)
                        .bearer_auth(&bearer)
                        .header("accept", FHIR_ACCEPT)
                        .send()
                        .await;
                    match r {
                        Ok(r) => {
                            let good = r.status().is_success();
                            if r.bytes().await.is_err() {
                                errors += 1;
                                continue;
                            }
                            times.push(t0.elapsed());
                            ok.fetch_add(1, Ordering::Relaxed);
                            if !good {
                                bad += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                }
                (times, bad, errors)
            }));
        }
        let (mut times, mut non2xx, mut socket_errors) = (Vec::new(), 0, 0);
        for t in tasks {
            let (t, b, e) = t.await.context("a load task panicked")?;
            times.extend(t);
            non2xx += b;
            socket_errors += e;
        }
        let elapsed = started.elapsed();
        times.sort();
        Ok(LoadRun {
            rps: times.len() as f64 / elapsed.as_secs_f64(),
            requests: times.len() as u64,
            p50_ms: ms(percentile(&times, 0.5)),
            p99_ms: ms(percentile(&times, 0.99)),
            non2xx,
            socket_errors,
            server_cpu_us: None,
            client_cpu_us: None,
            busy_pct: None,
            steal_pct: None,
        })
    }
}

// ------------------------------------------------------------------------------------------
// One store

struct LaunchRow {
    kind: Kind,
    mode: String,
    gateway: Stats,
    baseline: Stats,
}

struct ProxyReport {
    direct: Vec<LoadRun>,
    proxy: Vec<LoadRun>,
    /// fhir.request usage events stored during the proxy runs vs requests wrk counted.
    usage_stored: i64,
    usage_counted: u64,
}

struct LatencyReport {
    pairs: usize,
    direct: Vec<Duration>,
    proxy: Vec<Duration>,
    diffs_us: Vec<f64>,
}

struct StoreReport {
    backend: Backend,
    launches: Vec<LaunchRow>,
    proxy: Option<ProxyReport>,
    latency: Option<LatencyReport>,
    diagnostics: Option<Diagnostics>,
    failures: Vec<String>,
}

/// Pieces of a proxied request measured on their own, to show where its time goes.
struct Diagnostics {
    /// `GET /healthz` under the same load: the gateway's HTTP stack and middleware alone.
    healthz: LoadRun,
    /// `apikeys::find_api_key`, sequential (what every authenticated request does first).
    key_lookup_wall_us: f64,
    key_lookup_cpu_us: Option<f64>,
    /// `metering::ingest::store_batch` of 500 `fhir.request`-like events (what the usage
    /// recorder does in the background), per event.
    usage_wall_us: f64,
    usage_cpu_us: Option<f64>,
}

const DIAG_LOOKUPS: usize = 2000;
const DIAG_BATCHES: usize = 4;
const DIAG_BATCH: usize = 500;

async fn diagnostics(env: &Env, load: &Load, secs: u64) -> anyhow::Result<Diagnostics> {
    let healthz = load
        .run(
            &Target {
                url: format!("{}/healthz", env.gateway),
                bearer: "none".into(),
            },
            secs,
        )
        .await?;
    let (db, key) = (env.state.db.clone(), env.app_key.clone());
    let (key_wall, key_cpu) = on_server(&env.server, async move {
        let before = ProcCpu::read();
        let t0 = Instant::now();
        for _ in 0..DIAG_LOOKUPS {
            apikeys::find_api_key(&db, &key)
                .await?
                .context("the app key was not found")?;
        }
        let wall = t0.elapsed().as_secs_f64() * 1e6 / DIAG_LOOKUPS as f64;
        let cpu = match (before, ProcCpu::read()) {
            (Some(b), Some(a)) => Some((a.own - b.own) * 1e6 / DIAG_LOOKUPS as f64),
            _ => None,
        };
        anyhow::Ok((wall, cpu))
    })
    .await?;
    let (db, subjects) = (env.state.db.clone(), env.state.subjects.clone());
    let (usage_wall, usage_cpu) = on_server(&env.server, async move {
        let before = ProcCpu::read();
        let t0 = Instant::now();
        for _ in 0..DIAG_BATCHES {
            let now = chrono::Utc::now();
            let events: Vec<partner_gateway::metering::UsageEvent> = (0..DIAG_BATCH)
                .map(|_| partner_gateway::metering::UsageEvent {
                    partner_id: PUBLIC_PARTNER.into(),
                    id: uuid::Uuid::now_v7().to_string(),
                    source: "partner-gateway/smart".into(),
                    // Not fhir.request: the proxy runs' event count stays exact.
                    event_type: "bench.diagnostic".into(),
                    subject: Some("Practitioner/bench".into()),
                    time: now,
                    data: Some(serde_json::json!({
                        "launch_id": "00000000-0000-0000-0000-000000000000",
                        "method": "GET",
                        "resource_type": "Patient",
                        "status": 200,
                    })),
                    extensions: None,
                })
                .collect();
            let gateway = partner_gateway::metering::authority::Recorder::Gateway;
            partner_gateway::metering::ingest::store_batch(&db, &subjects, events, &gateway, now)
                .await?;
        }
        let n = (DIAG_BATCHES * DIAG_BATCH) as f64;
        let wall = t0.elapsed().as_secs_f64() * 1e6 / n;
        let cpu = match (before, ProcCpu::read()) {
            (Some(b), Some(a)) => Some((a.own - b.own) * 1e6 / n),
            _ => None,
        };
        anyhow::Ok((wall, cpu))
    })
    .await?;
    Ok(Diagnostics {
        healthz,
        key_lookup_wall_us: key_wall,
        key_lookup_cpu_us: key_cpu,
        usage_wall_us: usage_wall,
        usage_cpu_us: usage_cpu,
    })
}

async fn count_fhir_events(env: &Env) -> anyhow::Result<i64> {
    env.state.usage.flush().await;
    let db = env.state.db.clone();
    on_server(&env.server, async move {
        let n = partner_gateway::with_db!(&db, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM usage_events WHERE type = 'fhir.request'")
                .fetch_one(pool).await
        })?;
        anyhow::Ok(n)
    })
    .await
}

async fn get_ok(c: &reqwest::Client, url: &str, bearer: &str) -> anyhow::Result<bytes::Bytes> {
    let r = c
        .get(url)
        .bearer_auth(bearer)
        .header("accept", FHIR_ACCEPT)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = r.status();
    let body = r
        .bytes()
        .await
        .with_context(|| format!("reading GET {url}"))?;
    ensure!(
        status.is_success(),
        "GET {url} answered {status}: {}",
        snippet(&String::from_utf8_lossy(&body))
    );
    Ok(body)
}

async fn bench_store(o: &Opts, backend: Backend, env: Arc<Env>, load: &Load) -> StoreReport {
    let mut report = StoreReport {
        backend,
        launches: Vec::new(),
        proxy: None,
        latency: None,
        diagnostics: None,
        failures: Vec::new(),
    };

    // --- launches ---
    let kinds: &[Kind] = if o.launches_phase {
        &[Kind::Public, Kind::Asymmetric]
    } else {
        &[]
    };
    for &kind in kinds {
        let template = match authorize_template(&env, kind).await {
            Ok(t) => Arc::new(t),
            Err(e) => {
                report
                    .failures
                    .push(format!("{} launch setup: {e:#}", kind.name()));
                continue;
            }
        };
        // Warm-up: discovery, JWKS (the mock fetches the gateway's once), pools.
        let warm = sequential(&env, Flow::Gateway(kind), &template, 5).await;
        let warm_b = sequential(&env, Flow::EhrOnly(kind), &template, 5).await;
        if warm.failures + warm_b.failures > 0 {
            report.failures.push(format!(
                "{} warm-up launches failed: {}",
                kind.name(),
                warm.first_error.or(warm_b.first_error).unwrap_or_default()
            ));
            continue;
        }
        println!("  launches, {} client:", kind.name());
        // Gateway and EHR-only blocks in the order A B B A, so that a drift of the
        // machine during the phase weighs on both alike.
        let (g, b) = abba(&env, kind, &template, Mode::Sequential(o.launches)).await;
        println!("    gateway   sequential        {}", line(&g));
        println!("    EHR only  sequential        {}", line(&b));
        let (gc, bc) = abba(
            &env,
            kind,
            &template,
            Mode::Concurrent(o.workers, o.launch_secs),
        )
        .await;
        println!(
            "    gateway   {:>2} workers        {}",
            o.workers,
            line(&gc)
        );
        println!(
            "    EHR only  {:>2} workers        {}",
            o.workers,
            line(&bc)
        );
        for s in [&g, &b, &gc, &bc] {
            if s.failures > 0 {
                report.failures.push(format!(
                    "{} launches: {} failed, first: {}",
                    kind.name(),
                    s.failures,
                    s.first_error.as_deref().unwrap_or("")
                ));
            }
        }
        report.launches.push(LaunchRow {
            kind,
            mode: "sequential".into(),
            gateway: g,
            baseline: b,
        });
        report.launches.push(LaunchRow {
            kind,
            mode: format!("{} workers", o.workers),
            gateway: gc,
            baseline: bc,
        });
    }

    // --- proxy vs direct ---
    if !o.proxy_phase && !o.latency_phase {
        return report;
    }
    let setup = async {
        let launch_id = gateway_launch(&env, Kind::Public).await?;
        let patient = env.ehr_public.default_patient();
        let proxy_url = format!(
            "{}/v1/launches/{launch_id}/fhir/Patient/{patient}",
            env.gateway
        );
        let via_proxy = get_ok(&env.browser, &proxy_url, &env.app_key).await?;
        let path = format!("Patient/{patient}");
        let ehr_token = bearer_seen(&env.ehr_public, &path)?;
        let direct_url = format!("{}/{path}", env.ehr_public.iss());
        let direct = get_ok(&env.browser, &direct_url, &ehr_token).await?;
        ensure!(
            direct == via_proxy,
            "the proxy answered other bytes than the FHIR server ({} vs {} bytes)",
            via_proxy.len(),
            direct.len()
        );
        anyhow::Ok((
            Target {
                url: direct_url,
                bearer: ehr_token,
            },
            Target {
                url: proxy_url,
                bearer: env.app_key.clone(),
            },
            direct.len(),
        ))
    };
    let (direct_t, proxy_t, body_len) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            report.failures.push(format!("proxy setup: {e:#}"));
            return report;
        }
    };
    println!(
        "  proxy vs direct: GET Patient/{} ({body_len} bytes), {}, {} connections, {} s per run",
        env.ehr_public.default_patient(),
        if load.wrk {
            format!("wrk with {} threads", load.threads)
        } else {
            "in-process reqwest load (no wrk)".to_owned()
        },
        load.connections,
        o.duration_secs,
    );
    let proxy_report = async {
        if !o.proxy_phase {
            return anyhow::Ok(None);
        }
        // Warm-up: connections, the gateway's pool to the mock, caches.
        load.run(&direct_t, 2).await?;
        load.run(&proxy_t, 2).await?;
        let mut pr = ProxyReport {
            direct: Vec::new(),
            proxy: Vec::new(),
            usage_stored: 0,
            usage_counted: 0,
        };
        for round in 0..o.rounds {
            // Alternate the order so that neither side always runs second.
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for is_proxy in order {
                let (t, label) = if is_proxy {
                    (&proxy_t, "proxy ")
                } else {
                    (&direct_t, "direct")
                };
                let before = if is_proxy {
                    count_fhir_events(&env).await?
                } else {
                    0
                };
                let run = load.run(t, o.duration_secs).await?;
                if is_proxy {
                    pr.usage_stored += count_fhir_events(&env).await? - before;
                    pr.usage_counted += run.requests;
                }
                println!(
                    "    round {} {label} {:>9.0} req/s, p50 {:.3} ms, p99 {:.3} ms, {} requests, \
                     non-2xx {}, socket errors {}{}{}",
                    round + 1,
                    run.rps,
                    run.p50_ms,
                    run.p99_ms,
                    run.requests,
                    run.non2xx,
                    run.socket_errors,
                    run.server_cpu_us
                        .map(|c| format!(", server CPU {c:.0} µs/req"))
                        .unwrap_or_default(),
                    match (run.client_cpu_us, run.busy_pct, run.steal_pct) {
                        (Some(w), Some(b), Some(s)) => format!(
                            ", wrk CPU {w:.0} µs/req [machine busy {b:.0}%, steal {s:.1}%]"
                        ),
                        (None, Some(b), Some(s)) => format!(" [machine busy {b:.0}%, steal {s:.1}%]"),
                        _ => String::new(),
                    }
                );
                if is_proxy {
                    pr.proxy.push(run);
                } else {
                    pr.direct.push(run);
                }
            }
        }
        anyhow::Ok(Some(pr))
    }
    .await;
    match proxy_report {
        Ok(None) => {}
        Ok(Some(pr)) => {
            for r in pr.direct.iter().chain(&pr.proxy) {
                if r.non2xx > 0 || r.socket_errors > 0 {
                    report.failures.push(format!(
                        "a load run had {} non-2xx responses and {} socket errors",
                        r.non2xx, r.socket_errors
                    ));
                    break;
                }
            }
            report.proxy = Some(pr);
        }
        Err(e) => report.failures.push(format!("proxy load: {e:#}")),
    }

    // --- diagnostics: the pieces of a proxied request on their own ---
    if o.proxy_phase {
        match diagnostics(&env, load, o.duration_secs).await {
            Ok(d) => {
                let opt = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.0}"));
                println!(
                    "  diagnostics: GET /healthz {:.0} req/s, server CPU {} µs/req, non-2xx {}; \
                     API-key lookup {:.0} µs wall, {} µs CPU; usage event store {:.1} µs wall, {} µs CPU per event",
                    d.healthz.rps,
                    opt(d.healthz.server_cpu_us),
                    d.healthz.non2xx,
                    d.key_lookup_wall_us,
                    opt(d.key_lookup_cpu_us),
                    d.usage_wall_us,
                    opt(d.usage_cpu_us),
                );
                if d.healthz.non2xx > 0 || d.healthz.socket_errors > 0 {
                    report.failures.push(format!(
                        "GET /healthz had {} non-2xx responses and {} socket errors",
                        d.healthz.non2xx, d.healthz.socket_errors
                    ));
                }
                report.diagnostics = Some(d);
            }
            Err(e) => report.failures.push(format!("diagnostics: {e:#}")),
        }
    }

    // --- added latency: sequential pairs, one connection each ---
    if !o.latency_phase {
        return report;
    }
    let latency = async {
        let mk = || {
            reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(10))
                .build()
        };
        let (cd, cp) = (mk()?, mk()?);
        let once = |c: &reqwest::Client, t: &Target| {
            let (c, url, bearer) = (c.clone(), t.url.clone(), t.bearer.clone());
            async move {
                let t0 = Instant::now();
                get_ok(&c, &url, &bearer).await?;
                anyhow::Ok(t0.elapsed())
            }
        };
        for _ in 0..o.warmup {
            once(&cd, &direct_t).await?;
            once(&cp, &proxy_t).await?;
        }
        let mut lr = LatencyReport {
            pairs: o.latency_requests,
            direct: Vec::with_capacity(o.latency_requests),
            proxy: Vec::with_capacity(o.latency_requests),
            diffs_us: Vec::with_capacity(o.latency_requests),
        };
        for i in 0..o.latency_requests {
            let (d, p) = if i % 2 == 0 {
                let d = once(&cd, &direct_t).await?;
                (d, once(&cp, &proxy_t).await?)
            } else {
                let p = once(&cp, &proxy_t).await?;
                (once(&cd, &direct_t).await?, p)
            };
            lr.direct.push(d);
            lr.proxy.push(p);
            lr.diffs_us.push((p.as_secs_f64() - d.as_secs_f64()) * 1e6);
        }
        lr.direct.sort();
        lr.proxy.sort();
        anyhow::Ok(lr)
    }
    .await;
    match latency {
        Ok(lr) => {
            println!(
                "  latency, {} sequential pairs after {} warm-up: direct p50 {:.3} ms p99 {:.3} ms; \
                 proxy p50 {:.3} ms p99 {:.3} ms; median paired difference {:.3} ms",
                lr.pairs,
                o.warmup,
                ms(percentile(&lr.direct, 0.5)),
                ms(percentile(&lr.direct, 0.99)),
                ms(percentile(&lr.proxy, 0.5)),
                ms(percentile(&lr.proxy, 0.99)),
                median_f64(&lr.diffs_us) / 1000.0
            );
            report.latency = Some(lr);
        }
        Err(e) => report.failures.push(format!("latency: {e:#}")),
    }
    report
}

// ------------------------------------------------------------------------------------------
// Stores: SQLite in a temporary directory, PostgreSQL in a fresh schema

async fn run_backend(
    o: &Opts,
    backend: Backend,
    server: &Handle,
    load: &Load,
) -> anyhow::Result<StoreReport> {
    Store::with(
        backend,
        o.pg_url.as_deref(),
        "smart",
        server,
        |url| async move {
            let env = Arc::new(start_env(server.clone(), url, o).await?);
            let report = bench_store(o, backend, env.clone(), load).await;
            if let Some(env) = unshared(env) {
                env.serving.stop().await;
            }
            anyhow::Ok(report)
        },
    )
    .await
}

// ------------------------------------------------------------------------------------------
// Summary

fn summary(o: &Opts, load: &Load, facts: &[String], reports: &[StoreReport]) {
    println!();
    println!("## SMART bench");
    println!();
    println!("Command: `{}`", command_line("smart"));
    println!();
    for f in facts {
        println!("- {f}");
    }
    println!(
        "- load: {}; gateway + mock EHR on one tokio runtime (2 workers), bench client on another \
         (2 workers); everything shares the machine's cores",
        if load.wrk {
            format!(
                "{} (`-t{} -c{} -d{}s`, separate process)",
                wrk::version().unwrap_or_else(|| "wrk".into()),
                load.threads,
                load.connections,
                o.duration_secs
            )
        } else {
            format!(
                "in-process reqwest load generator ({} connections, {} s; wrk not used)",
                load.connections, o.duration_secs
            )
        }
    );
    println!(
        "- gateway `http.api_key_cache_ms` = {}; mock FHIR API answers after {} ms{}",
        o.key_cache_ms
            .map(|ms| ms.to_string())
            .unwrap_or_else(|| "default (1000)".into()),
        o.ehr_latency_ms,
        if o.ehr_latency_ms == 0 {
            " (from memory, at once)"
        } else {
            " (waited, as a real EHR's service time; not CPU)"
        }
    );
    if reports.iter().any(|r| !r.launches.is_empty()) {
        println!();
        println!("### Launches (EHR launch, whole flow incl. the app's exchange)");
        println!();
        println!(
            "Baseline: the EHR's part alone (mock launch + authorize + token request with the same \
             parameters and client authentication), same run."
        );
        println!();
        println!(
            "| store | client | mode | launches | launches/s | p50 ms | p99 ms | EHR-only launches/s | EHR-only p50 ms | gateway / EHR-only | CPU ms/launch gateway / EHR-only |"
        );
        println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for r in reports {
            for l in &r.launches {
                println!(
                    "| {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {} / {} |",
                    r.backend.name(),
                    l.kind.name(),
                    l.mode,
                    l.gateway.ops,
                    l.gateway.rate(),
                    l.gateway.p(0.5),
                    l.gateway.p(0.99),
                    l.baseline.rate(),
                    l.baseline.p(0.5),
                    l.gateway.rate() / l.baseline.rate().max(1e-9),
                    cpu_ms(&l.gateway).map_or_else(|| "?".to_owned(), |c| format!("{c:.2}")),
                    cpu_ms(&l.baseline).map_or_else(|| "?".to_owned(), |c| format!("{c:.2}")),
                );
            }
        }
    }
    if reports.iter().any(|r| r.proxy.is_some()) {
        println!();
        println!(
            "### FHIR proxy throughput (GET Patient/{{id}}; median of {} alternating rounds)",
            o.rounds
        );
        println!();
        println!(
            "| store | direct req/s | proxy req/s | proxy / direct | per-round ratios | direct p50 / p99 ms | proxy p50 / p99 ms | server CPU µs/req direct / proxy | target >= {TARGET_RATIO:.2} |"
        );
        println!("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |");
        for r in reports {
            let Some(p) = &r.proxy else { continue };
            let med = |runs: &[LoadRun], f: fn(&LoadRun) -> f64| {
                median_f64(&runs.iter().map(f).collect::<Vec<_>>())
            };
            let d = med(&p.direct, |x| x.rps);
            let x = med(&p.proxy, |x| x.rps);
            let ratio = x / d.max(1e-9);
            let rounds: Vec<String> = p
                .direct
                .iter()
                .zip(&p.proxy)
                .map(|(d, x)| format!("{:.2}", x.rps / d.rps.max(1e-9)))
                .collect();
            let cpu = |runs: &[LoadRun]| {
                let v: Vec<f64> = runs.iter().filter_map(|r| r.server_cpu_us).collect();
                if v.is_empty() {
                    "?".to_owned()
                } else {
                    format!("{:.0}", median_f64(&v))
                }
            };
            println!(
                "| {} | {:.0} | {:.0} | **{:.2}** | {} | {:.2} / {:.2} | {:.2} / {:.2} | {} / {} | {} |",
                r.backend.name(),
                d,
                x,
                ratio,
                rounds.join(", "),
                med(&p.direct, |x| x.p50_ms),
                med(&p.direct, |x| x.p99_ms),
                med(&p.proxy, |x| x.p50_ms),
                med(&p.proxy, |x| x.p99_ms),
                cpu(&p.direct),
                cpu(&p.proxy),
                if ratio >= TARGET_RATIO {
                    "met"
                } else {
                    "MISSED"
                }
            );
        }
    }
    if reports.iter().any(|r| r.latency.is_some()) {
        println!();
        println!(
            "### Added latency (sequential, one keep-alive connection each, pairs alternating)"
        );
        println!();
        println!(
            "| store | pairs | direct p50 / p99 ms | proxy p50 / p99 ms | added at p50 ms | median paired difference ms | target < {TARGET_ADDED_MS:.0} ms |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
        for r in reports {
            let Some(l) = &r.latency else { continue };
            let added = ms(percentile(&l.proxy, 0.5)) - ms(percentile(&l.direct, 0.5));
            println!(
                "| {} | {} | {:.3} / {:.3} | {:.3} / {:.3} | **{:.3}** | {:.3} | {} |",
                r.backend.name(),
                l.pairs,
                ms(percentile(&l.direct, 0.5)),
                ms(percentile(&l.direct, 0.99)),
                ms(percentile(&l.proxy, 0.5)),
                ms(percentile(&l.proxy, 0.99)),
                added,
                median_f64(&l.diffs_us) / 1000.0,
                if added < TARGET_ADDED_MS {
                    "met"
                } else {
                    "MISSED"
                }
            );
        }
    }
    if reports.iter().any(|r| r.diagnostics.is_some()) {
        println!();
        println!("### Where a proxied request's time goes (same run)");
        println!();
        println!(
            "| store | GET /healthz req/s (gateway HTTP floor, same load) | server CPU µs/req: healthz / direct (mock) / proxy | gateway CPU µs per proxied request (proxy - direct) | API-key lookup µs wall / CPU | usage event store µs CPU per event |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        for r in reports {
            let Some(d) = &r.diagnostics else { continue };
            let opt = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.0}"));
            let cpu = |runs: &[LoadRun]| {
                let v: Vec<f64> = runs.iter().filter_map(|r| r.server_cpu_us).collect();
                (!v.is_empty()).then(|| median_f64(&v))
            };
            let (direct, proxy) = match &r.proxy {
                Some(p) => (cpu(&p.direct), cpu(&p.proxy)),
                None => (None, None),
            };
            let gateway = match (direct, proxy) {
                (Some(d), Some(p)) => Some(p - d),
                _ => None,
            };
            println!(
                "| {} | {:.0} | {} / {} / {} | {} | {:.0} / {} | {} |",
                r.backend.name(),
                d.healthz.rps,
                opt(d.healthz.server_cpu_us),
                opt(direct),
                opt(proxy),
                opt(gateway),
                d.key_lookup_wall_us,
                opt(d.key_lookup_cpu_us),
                opt(d.usage_cpu_us),
            );
        }
    }
    println!();
    for r in reports {
        if let Some(p) = &r.proxy {
            println!(
                "- {}: fhir.request usage events stored during the proxy runs: {} for {} requests the load \
                 generator counted (may exceed it by requests in flight when a run stopped)",
                r.backend.name(),
                p.usage_stored,
                p.usage_counted
            );
        }
        for f in &r.failures {
            println!("- {}: FAILURE: {f}", r.backend.name());
        }
    }
    println!(
        "- server CPU µs/req: CPU time of the bench process (gateway + mock EHR{}) over the run divided by \
         the requests answered; direct is the mock alone, proxy - direct is the gateway's share; \
         PostgreSQL's own CPU (another process) is not included",
        if load.wrk {
            ""
        } else {
            " + the in-process load generator"
        }
    );
    println!(
        "- CPU ms/launch: CPU time of the bench process (gateway + mock EHR + the bench's client) per \
         completed launch"
    );
}

// ------------------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    let facts = machine_facts();
    let have_wrk = wrk::version().is_some();
    if !have_wrk && !o.no_wrk {
        eprintln!(
            "warning: wrk is not installed (apt-get install -y wrk, or scripts/bench-smart.sh); \
             falling back to an in-process load generator, which takes CPU from the server"
        );
    }
    let load = Load {
        wrk: have_wrk && !o.no_wrk,
        threads: o.threads,
        connections: o.connections,
    };
    println!("smart bench: {}", command_line("smart"));
    for f in &facts {
        println!("  {f}");
    }
    let (server, client) = server::runtimes()?;
    let handle = server.handle().clone();
    let started = Instant::now();
    let (reports, failed) = client.block_on(each_backend(
        &o.backends,
        Backend::name,
        |backend| run_backend(&o, backend, &handle, &load),
        |r: &StoreReport| !r.failures.is_empty(),
    ));
    summary(&o, &load, &facts, &reports);
    println!("- whole bench: {:.0} s", started.elapsed().as_secs_f64());
    drop(client);
    server.shutdown_timeout(Duration::from_secs(5));
    fail_if_any(
        &failed,
        " (requests or setup failed; the figures of that store are not valid, see above)",
    )
}
