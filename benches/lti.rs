//! LTI bench: complete LTI 1.3 launches per second (login initiation + launch validation +
//! the app's handoff exchange) through the gateway against the mock LMS (`partner_sim::lms`),
//! and scores delivered per second through the durable job queue, each beside a baseline
//! measured in the same run: the mock LMS's own throughput for a trivial request (its JWKS)
//! with the same client and concurrency, and, for scores, the mock's AGS score endpoint
//! called directly with a platform token at the job runner's concurrency. SQLite, then
//! PostgreSQL when `BENCH_DATABASE_URL` is set (a fresh schema, dropped at the end).
//!
//! ```sh
//! export CARGO_TARGET_DIR=/work/target-bench    # any target dir
//! cargo bench --bench lti                        # SQLite (+ PostgreSQL with BENCH_DATABASE_URL)
//! cargo bench --bench lti -- --workers 8 --launch-secs 6 --scores 1000 --backend sqlite
//! ```
//!
//! What it measures, per store:
//! 1. Launches: `--workers` concurrent "browsers", each launch a new learner (the mock's
//!    `lti_message_hint` is single-use): the LMS's login initiation -> `/lti/login` -> the
//!    mock's auth endpoint (auto-post form) -> `POST /lti/launch` (id_token validated) ->
//!    302 to the app with a code -> `POST /v1/launches/exchange`. Blocks gateway, JWKS,
//!    JWKS, gateway (`--launch-secs` in all per kind). Baseline: `GET {lms}/jwks` with the
//!    same client and worker count.
//! 2. Scores: one score per launched learner (`POST /v1/launches/{id}/scores`, 202), posted
//!    by `--workers` clients; delivered by the job runner (`[jobs] concurrency = 4,
//!    poll_interval_ms = 10`) to the mock's AGS endpoint; the figure is scores delivered per
//!    second from the first POST to the last delivery (a count of `lti_scores` rows with
//!    status `delivered`), in two blocks (half the learners each) around the baseline:
//!    the mock's score endpoint called directly (same score, a platform token obtained once,
//!    `jobs.concurrency` workers, `--baseline-secs` in all, cycling through up to 200
//!    learners kept out of the gateway blocks, a second apart per learner); then the mock's
//!    JWKS at `jobs.concurrency` workers for `--baseline-secs`.
//!
//! The gateway and the mock LMS run on one tokio runtime (2 workers), the bench's clients on
//! another (2 workers): all share the machine's cores. No timing assertions; exit status 1
//! when a request or delivery failed (the figures of that store are not valid).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use partner_gateway::apikeys::Role;
use partner_gateway::lti::ags::{SCORE_TYPE, scores_url};
use partner_gateway::lti::platforms;
use partner_gateway::lti::token::{SCOPE_SCORE, platform_token};
use partner_gateway::state::AppState;
use partner_sim::lms::{
    LaunchSpec, MockLms, MockLmsOptions, MockTool, MockUser, Personality, parse_auto_post_form,
};
use serde_json::{Value, json};
use support::args::{self, Args};
use support::cpu::{CpuSample, ProcCpu};
use support::db::{Backend, Store, each_backend, fail_if_any};
use support::facts::{command_line, machine_facts};
use support::http::{answer_text, exchange, snippet};
use support::server::{self, Serving, on_server, unshared};
use support::stats::{ms, percentile};
use support::workers::{Stats, collect, for_items, for_secs, with_cpu};
use tokio::runtime::Handle;
use tokio::sync::Mutex;

const PARTNER: &str = "bench-lms";
const APP_URL: &str = "https://app.example.test/lti";
const CLIENT: &str = "bench-tool";
const DEPLOYMENT: &str = "bench-deployment";
const COURSE: &str = "bench-course";
const LINK: &str = "bench-link";
const JOB_CONCURRENCY: usize = 4;
const JOB_POLL_MS: u64 = 10;

const USAGE: &str = "usage: cargo bench --bench lti -- [--backend sqlite|postgres|both] \
[--workers N (8)] [--launch-secs S (6, gateway launches; the JWKS baseline gets as long)] \
[--scores N (2000, capped by the launches made)] [--baseline-secs S (2, for each of the direct-AGS and JWKS baselines at the job concurrency)] \
[--personality moodle|generic]\n\
PostgreSQL runs when BENCH_DATABASE_URL is set (a fresh schema, dropped at the end).";

// ------------------------------------------------------------------------------------------
// Options

struct Opts {
    backends: Vec<Backend>,
    pg_url: Option<String>,
    workers: usize,
    launch_secs: f64,
    scores: usize,
    baseline_secs: f64,
    personality: Personality,
}

fn parse_args() -> anyhow::Result<Opts> {
    let pg_url = args::pg_url();
    let mut o = Opts {
        backends: args::backends_for(pg_url.as_deref()),
        pg_url,
        workers: 8,
        launch_secs: 6.0,
        scores: 2000,
        baseline_secs: 2.0,
        personality: Personality::Moodle,
    };
    let mut args = Args::new(USAGE);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--workers" => o.workers = args.num(&a)?,
            "--launch-secs" => o.launch_secs = args.num(&a)?,
            "--scores" => o.scores = args.num(&a)?,
            "--baseline-secs" => o.baseline_secs = args.num(&a)?,
            "--personality" => {
                o.personality = match args.next().as_deref() {
                    Some("moodle") => Personality::Moodle,
                    Some("generic") => Personality::Generic,
                    _ => bail!("--personality takes moodle or generic\n{USAGE}"),
                }
            }
            "--backend" => o.backends = args.backends()?,
            other => args.other(other)?,
        }
    }
    args::check_pg_url(&o.backends, o.pg_url.as_deref())?;
    ensure!(
        o.workers > 0 && o.scores >= 4,
        "--workers must be at least 1 and --scores at least 4"
    );
    ensure!(
        o.launch_secs > 0.0 && o.baseline_secs > 0.0,
        "--launch-secs and --baseline-secs must be positive"
    );
    Ok(o)
}

// ------------------------------------------------------------------------------------------
// The environment: the mock LMS and the gateway

struct Env {
    server: Handle,
    state: AppState,
    gateway: String,
    lms: MockLms,
    /// The line item bound to the launched resource link (carried in the AGS claim).
    lineitem: String,
    app_key: String,
    browser: reqwest::Client,
    serving: Serving,
    _dir: tempfile::TempDir,
}

fn bench_layer(db_url: &str, dir: &Path, gateway: &str, lms: &MockLms, vendor: &str) -> String {
    let audience = if lms.token_audience() != lms.token_url() {
        format!("token_audience = \"{}\"\n", lms.token_audience())
    } else {
        String::new()
    };
    format!(
        r#"
{base}[http]
public_url = "{gateway}"
[jobs]
enabled = true
concurrency = {JOB_CONCURRENCY}
poll_interval_ms = {JOB_POLL_MS}

[[partners]]
id = "{PARTNER}"
name = "Bench LMS"
kind = "lms"
[partners.lti]
app_url = "{APP_URL}"
[[partners.lti.platforms]]
vendor = "{vendor}"
issuer = "{issuer}"
client_id = "{CLIENT}"
deployment_ids = ["{DEPLOYMENT}"]
auth_url = "{auth}"
token_url = "{token}"
jwks_url = "{jwks}"
{audience}
"#,
        base = server::base_toml(db_url, dir),
        issuer = lms.issuer(),
        auth = lms.auth_url(),
        token = lms.token_url(),
        jwks = lms.jwks_url(),
    )
}

/// Start the mock LMS and the gateway on the server runtime.
async fn start_env(
    server: Handle,
    db_url: String,
    personality: Personality,
) -> anyhow::Result<Env> {
    let dir = tempfile::Builder::new()
        .prefix("pgw-bench-lti-")
        .tempdir()
        .context("creating a temporary directory")?;
    let dir_path = dir.path().to_owned();
    let h = server.clone();
    let started = on_server(&server, async move {
        let (listener, gateway) = server::bind().await?;
        let lms = MockLms::start(MockLmsOptions::new(
            personality,
            vec![MockTool::gateway(CLIENT, DEPLOYMENT, &gateway)],
        ))
        .await
        .context("starting the mock LMS")?;
        let lineitem = lms.create_lineitem(COURSE, "Bench quiz", 10.0, Some(LINK));
        let vendor = match personality {
            Personality::Moodle => "moodle",
            _ => "generic",
        };
        let state = server::prepare(vec![
            server::partners_layer(),
            server::meters_layer(),
            server::bench_layer(bench_layer(&db_url, &dir_path, &gateway, &lms, vendor)),
        ])
        .await?;
        let app_key = server::api_key(&state, Role::App).await?;
        let serving = Serving::spawn(&state, listener);
        anyhow::Ok((gateway, lms, lineitem, state, app_key, serving))
    })
    .await?;
    let (gateway, lms, lineitem, state, app_key, serving) = started;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the bench's HTTP client")?;
    let env = Env {
        server: h,
        state,
        gateway,
        lms,
        lineitem,
        app_key,
        browser,
        serving,
        _dir: dir,
    };
    server::wait_healthy(&env.browser, &env.gateway).await?;
    Ok(env)
}

// ------------------------------------------------------------------------------------------
// One launch; one trivial request to the mock; one score

/// `name=value` pairs from Set-Cookie headers.
fn cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next().map(str::to_owned))
        .collect()
}

fn location(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A whole LTI 1.3 launch of learner `sub` through the gateway, ending with the app's
/// exchange: the launch id.
async fn gateway_launch(env: &Env, sub: &str) -> anyhow::Result<String> {
    let init = env.lms.login_initiation(LaunchSpec::resource_link(
        CLIENT,
        DEPLOYMENT,
        MockUser::learner(sub),
        COURSE,
        LINK,
    ));
    let r = if init.post {
        env.browser.post(&init.url).form(&init.params).send().await
    } else {
        env.browser.get(init.get_url()).send().await
    }
    .context("/lti/login: request failed")?;
    let jar = cookies(&r);
    let (status, auth) = (r.status(), location(&r));
    let Some(auth) = auth.filter(|_| status.as_u16() == 302) else {
        bail!(
            "/lti/login answered {status}: {}",
            snippet(&r.text().await.unwrap_or_default())
        );
    };
    let r = env
        .browser
        .get(&auth)
        .send()
        .await
        .context("the LMS's auth endpoint: request failed")?;
    let page = answer_text(r, |s| s.as_u16() == 200, "the LMS's auth endpoint").await?;
    let form = parse_auto_post_form(&page)
        .with_context(|| format!("no auto-post form: {}", snippet(&page)))?;
    ensure!(
        form.action == format!("{}/lti/launch", env.gateway),
        "the form posts to {}",
        form.action
    );
    let mut req = env.browser.post(&form.action).form(&form.fields);
    if !jar.is_empty() {
        req = req.header("cookie", jar.join("; "));
    }
    let r = req
        .send()
        .await
        .context("POST /lti/launch: request failed")?;
    let (status, app) = (r.status(), location(&r));
    let Some(app) = app.filter(|l| status.as_u16() == 302 && l.starts_with(APP_URL)) else {
        bail!(
            "POST /lti/launch answered {status}: {}",
            snippet(&r.text().await.unwrap_or_default())
        );
    };
    let code = url::Url::parse(&app)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "code")
                .map(|(_, v)| v.into_owned())
        })
        .with_context(|| format!("no code in {}", snippet(&app)))?;
    exchange(&env.browser, &env.gateway, &env.app_key, &code).await
}

/// The baseline: the mock LMS's JWKS.
async fn jwks_get(env: &Env, url: &str) -> anyhow::Result<()> {
    let r = env.browser.get(url).send().await.context("GET jwks")?;
    let status = r.status();
    let body = r.bytes().await.context("reading the JWKS")?;
    ensure!(
        status.is_success() && !body.is_empty(),
        "GET jwks answered {status}"
    );
    Ok(())
}

const SCORE: fn() -> Value = || json!({"scoreGiven": 8, "scoreMaximum": 10, "activityProgress": "Completed", "gradingProgress": "FullyGraded"});

/// The app posts a score: its id.
async fn post_score(env: &Env, launch_id: &str) -> anyhow::Result<String> {
    let r = env
        .browser
        .post(format!("{}/v1/launches/{launch_id}/scores", env.gateway))
        .bearer_auth(&env.app_key)
        .json(&SCORE())
        .send()
        .await
        .context("POST /v1/launches/{id}/scores: request failed")?;
    let text = answer_text(r, |s| s.as_u16() == 202, "POST scores").await?;
    let v: Value = serde_json::from_str(&text).context("the score answer is not JSON")?;
    v["score_id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no score_id in {}", snippet(&text)))
}

/// The same score straight to the mock's AGS endpoint with a platform token, stamped `at`.
async fn direct_score(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    sub: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let mut body = SCORE();
    body["userId"] = json!(sub);
    body["timestamp"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    let r = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", SCORE_TYPE)
        .body(body.to_string())
        .send()
        .await
        .context("the LMS's score endpoint: request failed")?;
    answer_text(r, |s| s.is_success(), "the LMS's score endpoint").await?;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Runs

/// "N {what} in S s = R/s; p50, p99; CPU µs/op [machine busy]", and the failures.
fn line(s: &Stats, what: &str) -> String {
    format!(
        "{:>6} {what} in {:>6.2} s = {:>8.1}/s; p50 {:.2} ms, p99 {:.2} ms; CPU {} µs/op{}{}",
        s.ops,
        s.elapsed.as_secs_f64(),
        s.rate(),
        s.p(0.5),
        s.p(0.99),
        cpu(s),
        s.busy_pct
            .map_or_else(String::new, |b| format!(" [machine busy {b:.0}%]")),
        s.failed_note()
    )
}

/// "N {what} failed, first: ..." when some failed.
fn failure(s: &Stats, what: &str) -> Option<String> {
    (s.failures > 0).then(|| {
        format!(
            "{} {what} failed, first: {}",
            s.failures,
            s.first_error.as_deref().unwrap_or("")
        )
    })
}

/// CPU µs per op, or "?".
fn cpu(s: &Stats) -> String {
    s.cpu_us
        .map_or_else(|| "?".to_owned(), |c| format!("{c:.0}"))
}

/// Launches through the gateway for `secs`; the (launch id, learner) pairs go to `made`.
async fn launch_block(
    env: &Arc<Env>,
    workers: usize,
    secs: f64,
    tag: &'static str,
    made: &Arc<Mutex<Vec<(String, String)>>>,
) -> Stats {
    let (env, made) = (env.clone(), made.clone());
    with_cpu(for_secs(workers, secs, move |i| {
        let (env, made) = (env.clone(), made.clone());
        async move {
            let sub = format!("learner-{tag}-{i}");
            let id = gateway_launch(&env, &sub).await?;
            made.lock().await.push((id, sub));
            Ok(())
        }
    }))
    .await
}

async fn jwks_block(env: &Arc<Env>, workers: usize, secs: f64) -> Stats {
    let env = env.clone();
    let url = env.lms.jwks_url();
    with_cpu(for_secs(workers, secs, move |_| {
        let (env, url) = (env.clone(), url.clone());
        async move { jwks_get(&env, &url).await }
    }))
    .await
}

async fn count_scores(env: &Env, status: &'static str) -> anyhow::Result<i64> {
    let db = env.state.db.clone();
    on_server(&env.server, async move {
        partner_gateway::with_db!(&db, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM lti_scores WHERE status = $1")
                .bind(status).fetch_one(pool).await
        })
        .map_err(anyhow::Error::from)
    })
    .await
}

/// Accept-to-delivered times of the delivered scores among `ids`.
async fn delivery_times(env: &Env, ids: &HashSet<String>) -> anyhow::Result<Vec<Duration>> {
    let db = env.state.db.clone();
    let rows: Vec<(String, i64, Option<i64>)> = on_server(&env.server, async move {
        partner_gateway::with_db!(&db, pool => {
            sqlx::query_as("SELECT id, created_at_us, delivered_at_us FROM lti_scores WHERE status = 'delivered'")
                .fetch_all(pool).await
        })
        .map_err(anyhow::Error::from)
    })
    .await?;
    let mut out: Vec<Duration> = rows
        .into_iter()
        .filter(|(id, _, _)| ids.contains(id))
        .filter_map(|(_, c, d)| d.map(|d| Duration::from_micros((d - c).max(0) as u64)))
        .collect();
    out.sort();
    Ok(out)
}

struct ScoreRun {
    scores: usize,
    /// All 202s in.
    accepted_in: Duration,
    /// First POST to the last delivery.
    delivered_in: Duration,
    delivered: usize,
    /// Accept -> delivered, per score.
    latency: Vec<Duration>,
    post: Stats,
    cpu_us: Option<f64>,
    busy_pct: Option<f64>,
    failure: Option<String>,
}

impl ScoreRun {
    fn rate(&self) -> f64 {
        self.delivered as f64 / self.delivered_in.as_secs_f64().max(1e-9)
    }
}

/// Post one score for each launch in `launches` and wait until all are delivered.
async fn score_block(env: &Arc<Env>, workers: usize, launches: Vec<(String, String)>) -> ScoreRun {
    let n = launches.len();
    let before = count_scores(env, "delivered").await.unwrap_or(0);
    let failed_before = count_scores(env, "failed").await.unwrap_or(0);
    let ids = Arc::new(Mutex::new(HashSet::new()));
    let launches = Arc::new(launches);
    let cpu = CpuSample::now();
    let cpu0 = ProcCpu::read();
    let started = Instant::now();
    let post = {
        let (env, ids, launches) = (env.clone(), ids.clone(), launches.clone());
        for_items(workers, n, move |i| {
            let (env, ids, launches) = (env.clone(), ids.clone(), launches.clone());
            async move {
                let id = post_score(&env, &launches[i].0).await?;
                ids.lock().await.insert(id);
                Ok(())
            }
        })
        .await
    };
    let accepted_in = started.elapsed();
    let mut failure = post.first_error.clone();
    let want = before + post.ops as i64;
    let mut delivered = before;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match count_scores(env, "delivered").await {
            Ok(d) => delivered = d,
            Err(e) => {
                failure.get_or_insert_with(|| format!("counting delivered scores: {e:#}"));
                break;
            }
        }
        if delivered >= want {
            break;
        }
        if Instant::now() > deadline {
            failure.get_or_insert_with(|| {
                format!("{} scores still undelivered after 60 s", want - delivered)
            });
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivered_in = started.elapsed();
    let cpu_us = match (cpu0, ProcCpu::read()) {
        (Some(b), Some(a)) if post.ops > 0 => Some((a.own - b.own) * 1e6 / post.ops as f64),
        _ => None,
    };
    let busy_pct = cpu.since().map(|c| c.busy());
    if let Ok(f) = count_scores(env, "failed").await
        && f > failed_before
    {
        failure.get_or_insert_with(|| format!("{} scores failed delivery", f - failed_before));
    }
    let ids = ids.lock().await.clone();
    let latency = match delivery_times(env, &ids).await {
        Ok(l) => l,
        Err(e) => {
            failure.get_or_insert_with(|| format!("reading delivery times: {e:#}"));
            Vec::new()
        }
    };
    ScoreRun {
        scores: n,
        accepted_in,
        delivered_in,
        delivered: (delivered - before).max(0) as usize,
        latency,
        post,
        cpu_us,
        busy_pct,
        failure,
    }
}

/// Scores straight to the mock's AGS endpoint, `workers` at a time for `secs`. Each worker
/// cycles through its own share of `users` (learners the gateway does not score), so one
/// learner's scores go one after another; round `r` of a learner is stamped `base + r`
/// seconds (Moodle refuses a score not newer than the one on record, at 1 s resolution).
async fn direct_block(
    env: &Arc<Env>,
    workers: usize,
    secs: f64,
    token: &str,
    users: &Arc<Vec<String>>,
    base: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Stats> {
    let url = scores_url(&env.lineitem)
        .map_err(|e| anyhow::anyhow!("the line item's score URL: {e}"))?
        .to_string();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let workers = workers.min(users.len()).max(1);
    let run = async {
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(secs);
        let mut tasks = Vec::new();
        for w in 0..workers {
            let mine: Vec<String> = users.iter().skip(w).step_by(workers).cloned().collect();
            let (client, url, token) = (client.clone(), url.clone(), token.to_owned());
            tasks.push(tokio::spawn(async move {
                let mut s = Stats::default();
                let mut i = 0usize;
                while Instant::now() < deadline {
                    let at = base + chrono::TimeDelta::seconds((i / mine.len()) as i64);
                    let t0 = Instant::now();
                    s.record(
                        t0,
                        direct_score(&client, &url, &token, &mine[i % mine.len()], at).await,
                    );
                    i += 1;
                }
                s
            }));
        }
        collect(tasks, started).await
    };
    Ok(with_cpu(run).await)
}

// ------------------------------------------------------------------------------------------
// One store

struct StoreReport {
    backend: Backend,
    launches: Stats,
    launch_jwks: Stats,
    scores: Vec<ScoreRun>,
    direct: Option<Stats>,
    score_jwks: Option<Stats>,
    failures: Vec<String>,
}

async fn bench_store(o: &Opts, backend: Backend, env: Arc<Env>) -> StoreReport {
    let mut failures = Vec::new();
    // Warm-up: a few launches (the gateway fetches and caches the LMS's JWKS), not counted.
    let warm = Arc::new(Mutex::new(Vec::new()));
    let w = launch_block(&env, 2, 0.5, "warm", &warm).await;
    if w.failures > 0 || w.ops == 0 {
        failures.push(format!(
            "warm-up launches failed: {}",
            w.first_error.as_deref().unwrap_or("none completed")
        ));
    }

    // 1. Launches: gateway, JWKS, JWKS, gateway.
    let made = Arc::new(Mutex::new(Vec::new()));
    let half = o.launch_secs / 2.0;
    let g1 = launch_block(&env, o.workers, half, "a", &made).await;
    println!(
        "  launches (gateway, {} workers): {}",
        o.workers,
        line(&g1, "launches")
    );
    let b1 = jwks_block(&env, o.workers, half).await;
    println!(
        "  baseline (mock JWKS, {} workers): {}",
        o.workers,
        line(&b1, "GETs")
    );
    let b2 = jwks_block(&env, o.workers, half).await;
    println!(
        "  baseline (mock JWKS, {} workers): {}",
        o.workers,
        line(&b2, "GETs")
    );
    let g2 = launch_block(&env, o.workers, half, "b", &made).await;
    println!(
        "  launches (gateway, {} workers): {}",
        o.workers,
        line(&g2, "launches")
    );
    let launches = g1.merge(g2);
    let launch_jwks = b1.merge(b2);
    failures.extend(failure(&launches, "launches"));
    failures.extend(failure(&launch_jwks, "JWKS GETs"));

    // 2. Scores: one per launched learner: gateway, direct, direct, gateway, then JWKS.
    let mut made = std::mem::take(&mut *made.lock().await);
    made.truncate(o.scores + 200);
    let mut scores = Vec::new();
    let mut direct = None;
    let mut score_jwks = None;
    if made.len() < 6 {
        failures.push("too few launches to score".into());
    } else {
        // Learners for the direct baseline (never scored through the gateway), then two
        // halves for the gateway blocks.
        let k = (made.len() / 10).clamp(2, 200);
        let direct_users: Arc<Vec<String>> =
            Arc::new(made[..k].iter().map(|(_, sub)| sub.clone()).collect());
        let rest = &made[k..];
        let (q1, q4) = (
            rest[..rest.len() / 2].to_vec(),
            rest[rest.len() / 2..].to_vec(),
        );
        // The platform token the job runner uses (cached in the gateway's state).
        let token = {
            let (state, issuer) = (env.state.clone(), env.lms.issuer());
            on_server(&env.server, async move {
                let p = platforms::find(&state, &issuer, Some(CLIENT)).await?;
                let p = p.first().context("the bench platform is not configured")?;
                platform_token(&state, p, &[SCOPE_SCORE], false)
                    .await
                    .map_err(|e| anyhow::anyhow!("platform token: {e}"))
            })
            .await
        };
        let s1 = score_block(&env, o.workers, q1).await;
        print_score_run(&s1, o.workers);
        match token {
            Ok(token) => {
                let now = chrono::Utc::now();
                let secs = o.baseline_secs / 2.0;
                let d1 = direct_block(
                    &env,
                    JOB_CONCURRENCY,
                    secs,
                    &token,
                    &direct_users,
                    now - chrono::TimeDelta::days(2),
                )
                .await;
                let d2 = direct_block(
                    &env,
                    JOB_CONCURRENCY,
                    secs,
                    &token,
                    &direct_users,
                    now - chrono::TimeDelta::days(1),
                )
                .await;
                match (d1, d2) {
                    (Ok(d1), Ok(d2)) => {
                        for d in [&d1, &d2] {
                            println!(
                                "  baseline (mock AGS score POST, {JOB_CONCURRENCY} workers): {}",
                                line(d, "scores")
                            );
                        }
                        let d = d1.merge(d2);
                        failures.extend(failure(&d, "direct score posts"));
                        direct = Some(d);
                    }
                    (Err(e), _) | (_, Err(e)) => failures.push(format!("direct scores: {e:#}")),
                }
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
        let s2 = score_block(&env, o.workers, q4).await;
        print_score_run(&s2, o.workers);
        let j = jwks_block(&env, JOB_CONCURRENCY, o.baseline_secs).await;
        println!(
            "  baseline (mock JWKS, {JOB_CONCURRENCY} workers): {}",
            line(&j, "GETs")
        );
        failures.extend(failure(&j, "JWKS GETs"));
        score_jwks = Some(j);
        for s in [&s1, &s2] {
            if let Some(f) = &s.failure {
                failures.push(format!("scores: {f}"));
            }
        }
        scores.push(s1);
        scores.push(s2);
    }
    StoreReport {
        backend,
        launches,
        launch_jwks,
        scores,
        direct,
        score_jwks,
        failures,
    }
}

fn print_score_run(s: &ScoreRun, workers: usize) {
    println!(
        "  scores (gateway, {workers} posting, {JOB_CONCURRENCY} job workers): {} posted, all 202 in {:.2} s \
         ({:.0}/s, p50 {:.2} ms); {} delivered in {:.2} s = {:.1}/s; accept->delivered p50 {:.1} ms, \
         p99 {:.1} ms; CPU {} µs/score{}{}",
        s.scores,
        s.accepted_in.as_secs_f64(),
        s.post.ops as f64 / s.accepted_in.as_secs_f64().max(1e-9),
        s.post.p(0.5),
        s.delivered,
        s.delivered_in.as_secs_f64(),
        s.rate(),
        ms(percentile(&s.latency, 0.5)),
        ms(percentile(&s.latency, 0.99)),
        s.cpu_us
            .map_or_else(|| "?".to_owned(), |c| format!("{c:.0}")),
        s.busy_pct
            .map_or_else(String::new, |b| format!(" [machine busy {b:.0}%]")),
        s.failure
            .as_deref()
            .map_or_else(String::new, |f| format!("; FAILED: {f}")),
    );
}

async fn run_backend(o: &Opts, backend: Backend, server: &Handle) -> anyhow::Result<StoreReport> {
    Store::with(
        backend,
        o.pg_url.as_deref(),
        "lti",
        server,
        |url| async move {
            let env = Arc::new(start_env(server.clone(), url, o.personality).await?);
            let report = bench_store(o, backend, env.clone()).await;
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

fn summary(o: &Opts, facts: &[String], reports: &[StoreReport]) {
    println!();
    println!("## LTI bench");
    println!();
    println!("Command: `{}`", command_line("lti"));
    println!();
    for f in facts {
        println!("- {f}");
    }
    println!(
        "- mock LMS personality {:?}; gateway + mock LMS on one tokio runtime (2 workers), bench \
         clients on another (2 workers); everything shares the machine's cores",
        o.personality
    );
    println!();
    println!(
        "### Launches (login initiation + launch validation + handoff exchange, {} workers)",
        o.workers
    );
    println!();
    println!(
        "Baseline: the mock LMS's JWKS (`GET {{lms}}/jwks`), same client and workers, blocks \
         alternating with the launches' (gateway, JWKS, JWKS, gateway)."
    );
    println!();
    println!(
        "| store | launches | launches/s | p50 ms | p99 ms | CPU µs/launch | mock JWKS GETs/s | JWKS CPU µs/GET | launches / baseline | CPU per launch in baseline GETs |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in reports {
        let l = &r.launches;
        let b = &r.launch_jwks;
        let cpu_ratio = match (l.cpu_us, b.cpu_us) {
            (Some(a), Some(c)) if c > 0.0 => format!("{:.1}", a / c),
            _ => "?".into(),
        };
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.2} | {} | {:.0} | {} | **{:.4}** (1 : {:.0}) | {} |",
            r.backend.name(),
            l.ops,
            l.rate(),
            l.p(0.5),
            l.p(0.99),
            cpu(l),
            b.rate(),
            cpu(b),
            l.rate() / b.rate().max(1e-9),
            b.rate() / l.rate().max(1e-9),
            cpu_ratio,
        );
    }
    if reports.iter().any(|r| !r.scores.is_empty()) {
        println!();
        println!(
            "### Scores delivered through the job queue ({JOB_CONCURRENCY} job workers, poll {JOB_POLL_MS} ms; {} clients posting)",
            o.workers
        );
        println!();
        println!(
            "Delivered/s = scores / (first POST -> last delivery). Baselines: the mock's AGS score \
             endpoint called directly ({JOB_CONCURRENCY} workers, a platform token obtained once, \
             {} s), \
             and its JWKS at {JOB_CONCURRENCY} workers; blocks gateway, direct, direct, gateway, \
             then JWKS ({} s).",
            o.baseline_secs, o.baseline_secs
        );
        println!();
        println!(
            "| store | scores | delivered/s | 202s/s (app POST) | accept->delivered p50 / p99 ms | CPU µs/score | direct AGS POSTs/s | JWKS GETs/s ({JOB_CONCURRENCY} w) | delivered / direct | delivered / JWKS |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for r in reports {
            if r.scores.is_empty() {
                continue;
            }
            let delivered: usize = r.scores.iter().map(|s| s.delivered).sum();
            let secs: f64 = r.scores.iter().map(|s| s.delivered_in.as_secs_f64()).sum();
            let rate = delivered as f64 / secs.max(1e-9);
            let posted: usize = r.scores.iter().map(|s| s.post.ops).sum();
            let accept_secs: f64 = r.scores.iter().map(|s| s.accepted_in.as_secs_f64()).sum();
            let mut lat: Vec<Duration> = r.scores.iter().flat_map(|s| s.latency.clone()).collect();
            lat.sort();
            let cpu: Vec<f64> = r
                .scores
                .iter()
                .filter_map(|s| s.cpu_us.map(|c| c * s.post.ops as f64))
                .collect();
            let cpu = if cpu.len() == r.scores.len() && posted > 0 {
                format!("{:.0}", cpu.iter().sum::<f64>() / posted as f64)
            } else {
                "?".into()
            };
            let direct = r.direct.as_ref().map(Stats::rate);
            let jwks = r.score_jwks.as_ref().map(Stats::rate);
            let f = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.0}"));
            let ratio = |v: Option<f64>| {
                v.map_or_else(
                    || "?".to_owned(),
                    |v| format!("**{:.3}**", rate / v.max(1e-9)),
                )
            };
            println!(
                "| {} | {} | {:.1} | {:.0} | {:.1} / {:.1} | {} | {} | {} | {} | {} |",
                r.backend.name(),
                delivered,
                rate,
                posted as f64 / accept_secs.max(1e-9),
                ms(percentile(&lat, 0.5)),
                ms(percentile(&lat, 0.99)),
                cpu,
                f(direct),
                f(jwks),
                ratio(direct),
                ratio(jwks),
            );
        }
    }
    println!();
    for r in reports {
        for f in &r.failures {
            println!("- {}: FAILURE: {f}", r.backend.name());
        }
    }
    println!(
        "- CPU µs: CPU time of the bench process (gateway + mock LMS + the bench's clients) per \
         completed operation; PostgreSQL's own CPU (another process) is not included. CPU per \
         score covers posting it, the job runner's delivery and the mock's handling"
    );
}

// ------------------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    let mut facts = machine_facts();
    // Other processes' load (another bench, a test run) skews every figure: say so.
    let idle = CpuSample::now();
    std::thread::sleep(Duration::from_secs(1));
    if let Some(busy) = idle.since().map(|c| c.busy()) {
        facts.push(format!(
            "machine busy {busy:.0}% (all cores) in the second before the bench started"
        ));
    }
    println!("lti bench: {}", command_line("lti"));
    for f in &facts {
        println!("  {f}");
    }
    let (server, client) = server::runtimes()?;
    let handle = server.handle().clone();
    let started = Instant::now();
    let (reports, failed) = client.block_on(each_backend(
        &o.backends,
        Backend::name,
        |backend| run_backend(&o, backend, &handle),
        |r: &StoreReport| !r.failures.is_empty(),
    ));
    summary(&o, &facts, &reports);
    println!("- whole bench: {:.0} s", started.elapsed().as_secs_f64());
    drop(client);
    server.shutdown_timeout(Duration::from_secs(5));
    fail_if_any(
        &failed,
        " (requests or setup failed; the figures of that store are not valid, see above)",
    )
}
