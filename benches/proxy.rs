//! Proxy bench: the gateway's FHIR proxy beside nginx as a reverse proxy, in front of the
//! same upstream, in one run; and the CPU an idle gateway uses with many usage thresholds.
//!
//! ```sh
//! scripts/bench-proxy.sh                 # installs wrk and nginx, builds the release binary
//! cargo bench --bench proxy -- --bin target/release/partner-gateway --duration 5 --rounds 3
//! ```
//!
//! The upstream is the mock EHR (`partner_sim::ehr`) in this process, on a runtime of its
//! own, in four forms: answering at once or after 2 ms, with a `Content-Length` or chunked.
//! For each form, three ways to `GET Patient/{id}`, alternating, `--rounds` times, medians:
//!
//! - **direct**: wrk to the mock with the EHR's access token;
//! - **nginx**: wrk to nginx (Debian's, a process of its own, `worker_processes auto`,
//!   keep-alive to the upstream, an access log buffered as in production) in front of it;
//! - **gateway**: wrk to `/v1/launches/{id}/fhir/Patient/{id}` of the release binary,
//!   started as an operator runs it (`serve`, SQLite, the sample config's logging) after a
//!   real SMART launch through it, with an app key.
//!
//! Throughput is wrk `--threads`×`--connections`; latency wrk 1×1 (one keep-alive
//! connection), p50 added over direct. The gateway's CPU per answered call is read from
//! `/proc/<pid>/stat`. Then the idle phase: a gateway with `--thresholds` thresholds on one
//! meter, all reached this month and checked every second, against the same gateway with
//! none, each left alone for `--idle-secs`; CPU as % of one core.
//!
//! Targets (issue 25), as ratios in this run: gateway/nginx >= 0.9 at 2 ms and >= 0.5 at
//! 0 ms; chunked within 10% of Content-Length; added p50 <= 0.15 ms; idle <= 2% of a core.
//! Exit status 1 when a request failed (the figures are not valid).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use partner_sim::ehr::{LaunchContext, MockClient, MockEhr, MockEhrOptions, Vendor};
use support::cpu::{CpuSample, ticks};
use support::facts::{command_line, machine_facts};
use support::http::{bearer_seen, exchange, query_param, redirect_of, snippet};
use support::stats::median_f64;
use support::wrk::{self, WrkRun};

const USAGE: &str = "usage: cargo bench --bench proxy -- [--bin PATH (target/release/partner-gateway)] \
[--duration S (5)] [--latency-secs S (3)] [--rounds N (3)] [--threads N (2)] [--connections N (32)] \
[--idle-secs S (10)] [--thresholds N (10000)] [--only proxy,idle] [--perf FILE] [--before]";
const APP_URL: &str = "https://app.example.test/launch";
const CLIENT: &str = "bench-app";
const FHIR_ACCEPT: &str = "application/fhir+json";

struct Opts {
    bin: PathBuf,
    duration: u64,
    latency_secs: u64,
    rounds: usize,
    threads: usize,
    connections: usize,
    idle_secs: u64,
    thresholds: usize,
    proxy: bool,
    idle: bool,
    /// `perf record` the gateway through one more throughput run against the upstream that
    /// answers at once with a Content-Length (where the gateway is CPU-bound), into FILE.
    perf: Option<PathBuf>,
    /// The binary is from before the access log setting (commit 7e71294 and earlier): its
    /// config leaves out `access_log*`, which that binary does not know.
    before: bool,
}

fn parse_args() -> anyhow::Result<Opts> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let mut o = Opts {
        bin: target.join("release/partner-gateway"),
        duration: 5,
        latency_secs: 3,
        rounds: 3,
        threads: 2,
        connections: 32,
        idle_secs: 10,
        thresholds: 10_000,
        proxy: true,
        idle: true,
        perf: None,
        before: false,
    };
    let mut args = support::args::Args::new(USAGE);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bin" => o.bin = PathBuf::from(args.value()?),
            "--duration" => o.duration = args.num("--duration")?,
            "--latency-secs" => o.latency_secs = args.num("--latency-secs")?,
            "--rounds" => o.rounds = args.num("--rounds")?,
            "--threads" => o.threads = args.num("--threads")?,
            "--connections" => o.connections = args.num("--connections")?,
            "--idle-secs" => o.idle_secs = args.num("--idle-secs")?,
            "--thresholds" => o.thresholds = args.num("--thresholds")?,
            "--perf" => o.perf = Some(PathBuf::from(args.value()?)),
            "--before" => o.before = true,
            "--only" => {
                let v = args.value()?;
                o.proxy = v.split(',').any(|p| p == "proxy");
                o.idle = v.split(',').any(|p| p == "idle");
            }
            other => args.other(other)?,
        }
    }
    ensure!(
        o.bin.exists(),
        "no gateway binary at {} (cargo build --release, or --bin PATH)\n{USAGE}",
        o.bin.display()
    );
    ensure!(
        o.rounds >= 1 && o.threads >= 1 && o.connections >= o.threads,
        "{USAGE}"
    );
    Ok(o)
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// CPU seconds a process has used (`/proc/<pid>/stat`, user + system).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    Some((f.get(11)? + f.get(12)?) / ticks())
}

// ------------------------------------------------------------------------------------------
// The upstreams

/// One form of the upstream.
#[derive(Clone, Copy)]
struct Form {
    latency_ms: u64,
    chunked: bool,
}

impl Form {
    const ALL: [Form; 4] = [
        Form {
            latency_ms: 0,
            chunked: false,
        },
        Form {
            latency_ms: 0,
            chunked: true,
        },
        Form {
            latency_ms: 2,
            chunked: false,
        },
        Form {
            latency_ms: 2,
            chunked: true,
        },
    ];

    fn name(self) -> String {
        let body = if self.chunked {
            "chunked"
        } else {
            "Content-Length"
        };
        if self.latency_ms == 0 {
            format!("answers at once, {body}")
        } else {
            format!("{} ms service time, {body}", self.latency_ms)
        }
    }

    fn partner(self) -> String {
        format!(
            "bench-ehr-{}ms-{}",
            self.latency_ms,
            if self.chunked { "chunked" } else { "length" }
        )
    }
}

struct Upstream {
    form: Form,
    ehr: MockEhr,
    nginx_port: u16,
}

async fn start_upstreams(gateway: &str) -> anyhow::Result<Vec<Upstream>> {
    let redirect = format!("{gateway}/smart/callback");
    let mut out = Vec::new();
    for form in Form::ALL {
        let mut opts =
            MockEhrOptions::new(Vendor::Epic, vec![MockClient::public(CLIENT, &redirect)]);
        opts.fhir_latency = Duration::from_millis(form.latency_ms);
        opts.fhir_chunked = form.chunked;
        let ehr = MockEhr::start(opts).await.context("starting a mock EHR")?;
        out.push(Upstream {
            form,
            ehr,
            nginx_port: free_port()?,
        });
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// The gateway, as a process

struct Gateway {
    child: tokio::process::Child,
    url: String,
    dir: PathBuf,
}

impl Gateway {
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM: the gateway finishes in-flight requests and flushes usage.
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }
}

/// The sample config's `[telemetry]` section, as written (what an operator starts from).
fn sample_telemetry(before: bool) -> String {
    let sample = include_str!("../config/gateway.toml");
    let start = sample.find("[telemetry]").unwrap_or(sample.len());
    let rest = &sample[start..];
    let end = rest[1..].find("\n[").map_or(rest.len(), |i| i + 1);
    rest[..end]
        .lines()
        .filter(|l| !(before && l.starts_with("access_log")))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Write a config directory and start `serve` on it; waits for `/readyz`.
async fn start_gateway(
    o: &Opts,
    dir: &Path,
    port: u16,
    partners: &str,
    meters: &str,
    jobs: bool,
) -> anyhow::Result<Gateway> {
    let url = format!("http://127.0.0.1:{port}");
    std::fs::create_dir_all(dir)?;
    let gateway_toml = format!(
        "[http]\naddr = \"127.0.0.1:{port}\"\npublic_url = \"{url}\"\n\
         [database]\nurl = \"sqlite://{db}\"\n\
         [keys]\nmaster_key_file = \"{key}\"\n\
         [outbound]\nallow_http = true\nprivate_networks = [\"127.0.0.1\"]\n\
         [jobs]\nenabled = {jobs}\n\
         [webhooks]\nthresholds_interval_secs = 1\n\
         {telemetry}\n",
        db = dir.join("gateway.db").display(),
        key = dir.join("master.key").display(),
        telemetry = sample_telemetry(o.before),
    );
    std::fs::write(dir.join("gateway.toml"), gateway_toml)?;
    std::fs::write(dir.join("partners.toml"), partners)?;
    std::fs::write(dir.join("meters.toml"), meters)?;
    let log = std::fs::File::create(dir.join("gateway.log"))?;
    let child = tokio::process::Command::new(&o.bin)
        .arg("--config")
        .arg(dir)
        .arg("serve")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", o.bin.display()))?;
    let g = Gateway {
        child,
        url,
        dir: dir.to_owned(),
    };
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{}/readyz", g.url)).send().await
            && r.status().is_success()
        {
            return Ok(g);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the gateway did not become ready:\n{}", snippet(&g.log()))
}

/// A new API key from the CLI, as an operator makes one.
async fn cli_key(
    o: &Opts,
    dir: &Path,
    role: &str,
    partner: Option<&str>,
) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(&o.bin);
    cmd.arg("--config")
        .arg(dir)
        .args(["api-keys", "create", "--role", role, "--name", "bench"]);
    if let Some(p) = partner {
        cmd.args(["--partner", p]);
    }
    let out = cmd
        .env_remove("RUST_LOG")
        .output()
        .await
        .context("api-keys create")?;
    ensure!(
        out.status.success(),
        "api-keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn smart_partners(ups: &[Upstream]) -> String {
    let mut s = String::new();
    for u in ups {
        s += &format!(
            "[[partners]]\nid = \"{id}\"\nname = \"Bench EHR ({name})\"\nkind = \"ehr\"\n\
             [partners.smart]\nvendor = \"epic\"\nissuers = [\"{iss}\"]\nclient_id = \"{CLIENT}\"\n\
             client_type = \"public\"\nscopes = [\"openid\", \"fhirUser\", \"patient/Patient.rs\"]\n\
             app_url = \"{APP_URL}\"\n\n",
            id = u.form.partner(),
            name = u.form.name(),
            iss = u.ehr.iss(),
        );
    }
    s
}

/// A SMART EHR launch through the gateway, ending in the app's exchange: the launch id.
async fn launch(
    browser: &reqwest::Client,
    gateway: &str,
    app_key: &str,
    ehr: &MockEhr,
) -> anyhow::Result<String> {
    let ctx = LaunchContext {
        patient: Some(ehr.default_patient()),
        user: ehr.default_practitioner(),
        ..LaunchContext::default()
    };
    let start = format!(
        "{gateway}/smart/launch?iss={}&launch={}",
        enc(&ehr.iss()),
        enc(&ehr.launch(ctx))
    );
    let authorize = redirect_of(browser, &start, "GET /smart/launch").await?;
    let callback = redirect_of(browser, &authorize, "the EHR's authorize").await?;
    let app = redirect_of(browser, &callback, "GET /smart/callback").await?;
    ensure!(
        app.starts_with(APP_URL),
        "the callback went to {}",
        snippet(&app)
    );
    let code = query_param(&app, "code")?;
    exchange(browser, gateway, app_key, &code).await
}

// ------------------------------------------------------------------------------------------
// nginx

struct Nginx {
    child: tokio::process::Child,
}

impl Nginx {
    async fn start(dir: &Path, ups: &[Upstream]) -> anyhow::Result<Nginx> {
        std::fs::create_dir_all(dir)?;
        // Root starts nginx's workers as `nobody` unless told otherwise; they need this dir.
        let user = if nix_root() { "user root;\n" } else { "" };
        let mut servers = String::new();
        for (i, u) in ups.iter().enumerate() {
            let up = url::Url::parse(&u.ehr.iss())?;
            let port = up.port().context("the mock's port")?;
            servers += &format!(
                "upstream up{i} {{ server 127.0.0.1:{port}; keepalive 64; }}\n\
                 server {{\n  listen 127.0.0.1:{listen};\n  location / {{\n    proxy_pass http://up{i};\n    \
                 proxy_http_version 1.1;\n    proxy_set_header Connection \"\";\n  }}\n}}\n",
                listen = u.nginx_port
            );
        }
        let d = dir.display();
        let conf = format!(
            "{user}worker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log {d}/access.log combined buffer=64k flush=1s;\n  \
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             keepalive_requests 100000;\n{servers}}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let child = tokio::process::Command::new(nginx_bin())
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context(
                "starting nginx (Debian's nginx package; scripts/bench-proxy.sh installs it)",
            )?;
        let n = Nginx { child };
        let client = reqwest::Client::new();
        let probe = format!("http://127.0.0.1:{}/", ups[0].nginx_port);
        for _ in 0..100 {
            if client.get(&probe).send().await.is_ok() {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("nginx did not start (see {d}/error.log)")
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn nix_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn nginx_bin() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

fn nginx_version() -> Option<String> {
    let out = std::process::Command::new(nginx_bin())
        .arg("-v")
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stderr).trim().to_owned())
}

// ------------------------------------------------------------------------------------------
// The proxy phase

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    Direct,
    Nginx,
    Gateway,
}

struct Target {
    url: String,
    bearer: String,
}

#[derive(Default)]
struct Row {
    rps: [Vec<f64>; 3],
    p50: [Vec<f64>; 3],
    /// Gateway CPU per answered call in the throughput runs, µs.
    gateway_cpu_us: Vec<f64>,
    busy: Vec<f64>,
    steal: Vec<f64>,
    failed: u64,
}

fn via_index(v: Via) -> usize {
    match v {
        Via::Direct => 0,
        Via::Nginx => 1,
        Via::Gateway => 2,
    }
}

async fn load(t: &Target, threads: usize, connections: usize, secs: u64) -> anyhow::Result<WrkRun> {
    wrk::run(
        threads,
        connections,
        Duration::from_secs(secs),
        &t.url,
        &[
            format!("Authorization: Bearer {}", t.bearer),
            format!("Accept: {FHIR_ACCEPT}"),
        ],
    )
    .await
    .with_context(|| format!("wrk against {}", t.url))
}

/// `upstream` is the runtime the mocks run on, apart from the bench's clients, as an EHR is
/// a server apart.
async fn proxy_phase(
    o: &Opts,
    root: &Path,
    upstream: tokio::runtime::Handle,
) -> anyhow::Result<(Vec<(Form, Row)>, bool)> {
    let port = free_port()?;
    let gateway_url = format!("http://127.0.0.1:{port}");
    let gw = gateway_url.clone();
    let ups = upstream
        .spawn(async move { start_upstreams(&gw).await })
        .await??;
    let g = start_gateway(
        o,
        &root.join("gateway"),
        port,
        &smart_partners(&ups),
        "",
        false,
    )
    .await?;
    let nginx = Nginx::start(&root.join("nginx"), &ups).await?;
    let app_key = cli_key(o, &g.dir, "app", None).await?;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()?;

    let mut rows = Vec::new();
    let mut all_ok = true;
    for u in &ups {
        let launch_id = launch(&browser, &g.url, &app_key, &u.ehr).await?;
        let patient = u.ehr.default_patient();
        let path = format!("Patient/{patient}");
        let via_gateway = Target {
            url: format!("{}/v1/launches/{launch_id}/fhir/{path}", g.url),
            bearer: app_key.clone(),
        };
        let first = browser
            .get(&via_gateway.url)
            .bearer_auth(&app_key)
            .header("accept", FHIR_ACCEPT)
            .send()
            .await?;
        ensure!(
            first.status().is_success(),
            "the proxy answered {}",
            first.status()
        );
        let through = first.bytes().await?;
        let token = bearer_seen(&u.ehr, &path)?;
        let iss = url::Url::parse(&u.ehr.iss())?;
        let direct = Target {
            url: format!("{}/{path}", u.ehr.iss()),
            bearer: token.clone(),
        };
        let via_nginx = Target {
            url: format!("http://127.0.0.1:{}{}/{path}", u.nginx_port, iss.path()),
            bearer: token,
        };
        for t in [&direct, &via_nginx] {
            let r = browser
                .get(&t.url)
                .bearer_auth(&t.bearer)
                .header("accept", FHIR_ACCEPT)
                .send()
                .await?;
            ensure!(r.status().is_success(), "{} answered {}", t.url, r.status());
            ensure!(
                r.bytes().await? == through,
                "{} answered other bytes than the proxy",
                t.url
            );
        }
        let targets = [
            (Via::Direct, &direct),
            (Via::Nginx, &via_nginx),
            (Via::Gateway, &via_gateway),
        ];
        let mut row = Row::default();
        for round in 0..o.rounds {
            // Rotate the order each round: no way always runs first or last.
            for k in 0..3 {
                let (via, t) = targets[(k + round) % 3];
                let cpu = CpuSample::now();
                let before = cpu_secs(g.pid());
                let r = load(t, o.threads, o.connections, o.duration).await?;
                let after = cpu_secs(g.pid());
                if let Some(c) = cpu.since() {
                    row.busy.push(c.busy());
                    row.steal.push(c.steal());
                }
                if via == Via::Gateway
                    && let (Some(b), Some(a)) = (before, after)
                    && r.requests > 0
                {
                    row.gateway_cpu_us.push((a - b) * 1e6 / r.requests as f64);
                }
                row.failed += r.non2xx + r.socket_errors;
                row.rps[via_index(via)].push(r.rps);
            }
            for k in 0..3 {
                let (via, t) = targets[(k + round) % 3];
                let r = load(t, 1, 1, o.latency_secs).await?;
                row.failed += r.non2xx + r.socket_errors;
                row.p50[via_index(via)].push(r.p50_ms);
            }
        }
        if let Some(out) = &o.perf
            && u.form.latency_ms == 0
            && !u.form.chunked
        {
            // DWARF call graphs: the release build keeps no frame pointers.
            let perf = tokio::process::Command::new("perf")
                .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-o"])
                .arg(out)
                .args(["-p", &g.pid().to_string(), "--", "sleep"])
                .arg(o.duration.saturating_sub(1).max(1).to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting perf record (Debian's linux-perf)")?;
            let r = load(&via_gateway, o.threads, o.connections, o.duration).await?;
            let status = perf.wait_with_output().await?.status;
            eprintln!(
                "perf record: {status}, {:.0} req/s while recording, into {}",
                r.rps,
                out.display()
            );
        }
        if row.failed > 0 {
            all_ok = false;
            eprintln!("{}: {} requests failed", u.form.name(), row.failed);
        }
        eprintln!(
            "{}: direct {:.0}, nginx {:.0}, gateway {:.0} req/s",
            u.form.name(),
            median_f64(&row.rps[0]),
            median_f64(&row.rps[1]),
            median_f64(&row.rps[2])
        );
        rows.push((u.form, row));
    }
    nginx.stop().await;
    let log = g.log();
    g.stop().await;
    let lines = log.lines().count();
    eprintln!("gateway log: {lines} lines over the proxy phase");
    drop(ups);
    Ok((rows, all_ok))
}

// ------------------------------------------------------------------------------------------
// The idle phase

fn threshold_meters(n: usize) -> String {
    let list: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    format!(
        "[[meters]]\nname = \"bench_sessions\"\nevent_types = [\"app.session\"]\naggregation = \"COUNT\"\n\
         thresholds = [{}]\n",
        list.join(", ")
    )
}

const IDLE_PARTNER: &str = "[[partners]]\nid = \"bench-idle\"\nname = \"Bench partner (idle)\"\nkind = \"other\"\n\
self_reported_types = [\"app.*\"]\n";

/// CPU of a gateway left alone for `secs`, as % of one core; `events` app.session events
/// recorded first (so that many thresholds are reached) and the first checks let run.
async fn idle_cpu(o: &Opts, dir: &Path, meters: &str, events: usize) -> anyhow::Result<f64> {
    let port = free_port()?;
    let g = start_gateway(o, dir, port, IDLE_PARTNER, meters, true).await?;
    let key = cli_key(o, dir, "partner", Some("bench-idle")).await?;
    let client = reqwest::Client::new();
    // A minute ago: not in the future on any clock here, and inside this month unless
    // the bench runs in the first minute of one.
    let now = (chrono::Utc::now() - chrono::Duration::seconds(60)).to_rfc3339();
    for chunk in (0..events).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<serde_json::Value> = chunk
            .iter()
            .map(|i| {
                serde_json::json!({"specversion": "1.0", "id": format!("s{i}"), "source": "/bench", "type": "app.session",
                    "subject": format!("u{i}"), "time": now})
            })
            .collect();
        let r = client
            .post(format!("{}/v1/usage/events", g.url))
            .bearer_auth(&key)
            .json(&batch)
            .send()
            .await?;
        let status = r.status();
        ensure!(
            status.is_success(),
            "ingest answered {status}: {}",
            snippet(&r.text().await.unwrap_or_default())
        );
    }
    // The checks that mark what was reached (writes, webhook events) are not idle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = cpu_secs(g.pid()).context("reading the gateway's CPU")?;
    tokio::time::sleep(Duration::from_secs(o.idle_secs)).await;
    let after = cpu_secs(g.pid()).context("reading the gateway's CPU")?;
    g.stop().await;
    Ok((after - before) * 100.0 / o.idle_secs as f64)
}

// ------------------------------------------------------------------------------------------

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let root = tempfile::Builder::new()
        .prefix("pgw-bench-proxy-")
        .tempdir()?;
    // nginx's workers (user root or nobody) read its dir.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    println!("# Proxy bench\n");
    println!("{}\n", command_line("proxy"));
    for f in machine_facts() {
        println!("- {f}");
    }
    println!(
        "- {}; {}; the gateway: {}",
        wrk::version().unwrap_or_else(|| "wrk (not found)".into()),
        nginx_version().unwrap_or_else(|| "nginx (not found)".into()),
        o.bin.display()
    );
    println!();
    let mut ok = true;
    if o.proxy {
        let upstream = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-upstream")
            .enable_all()
            .build()?;
        let result = rt.block_on(proxy_phase(&o, root.path(), upstream.handle().clone()));
        upstream.shutdown_timeout(Duration::from_secs(5));
        let (rows, all_ok) = result?;
        ok &= all_ok;
        println!(
            "## FHIR proxy: wrk {}x{} for {} s (throughput), 1x1 for {} s (latency); {} rounds, medians\n",
            o.threads, o.connections, o.duration, o.latency_secs, o.rounds
        );
        println!(
            "| upstream | direct req/s | nginx req/s | gateway req/s | gateway/nginx | nginx added p50 | gateway added p50 | gateway CPU/call | busy | steal |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        let mut targets = Vec::new();
        let mut by_form = Vec::new();
        for (form, r) in &rows {
            let (d, n, g) = (
                median_f64(&r.rps[0]),
                median_f64(&r.rps[1]),
                median_f64(&r.rps[2]),
            );
            let (pd, pn, pg) = (
                median_f64(&r.p50[0]),
                median_f64(&r.p50[1]),
                median_f64(&r.p50[2]),
            );
            println!(
                "| {} | {d:.0} | {n:.0} | {g:.0} | {:.2} | {:.3} ms | {:.3} ms | {:.0} µs | {:.0}% | {:.1}% |",
                form.name(),
                ratio(g, n),
                pn - pd,
                pg - pd,
                median_f64(&r.gateway_cpu_us),
                median_f64(&r.busy),
                median_f64(&r.steal),
            );
            by_form.push((*form, g, pg - pd, ratio(g, n)));
        }
        println!();
        for (form, _, added, vs_nginx) in &by_form {
            let want = if form.latency_ms == 0 { 0.5 } else { 0.9 };
            targets.push((
                format!("gateway/nginx >= {want} ({})", form.name()),
                *vs_nginx >= want,
                format!("{vs_nginx:.2}"),
            ));
            targets.push((
                format!("added p50 <= 0.15 ms ({})", form.name()),
                *added <= 0.15,
                format!("{added:.3} ms"),
            ));
        }
        for ms in [0, 2] {
            let find = |chunked: bool| {
                by_form
                    .iter()
                    .find(|(f, ..)| f.latency_ms == ms && f.chunked == chunked)
                    .map(|(_, g, ..)| *g)
                    .unwrap_or(f64::NAN)
            };
            let r = ratio(find(true), find(false));
            targets.push((
                format!("chunked within 10% of Content-Length ({ms} ms)"),
                r >= 0.9,
                format!("{r:.2}"),
            ));
        }
        println!("| target | figure | |\n| --- | ---: | --- |");
        for (t, good, fig) in targets {
            println!("| {t} | {fig} | {} |", met(good));
        }
        println!();
    }
    if o.idle {
        let root = root.path();
        let none = rt.block_on(idle_cpu(&o, &root.join("idle-none"), "", o.thresholds))?;
        let open = rt.block_on(idle_cpu(
            &o,
            &root.join("idle-open"),
            &threshold_meters(o.thresholds),
            0,
        ))?;
        let reached = rt.block_on(idle_cpu(
            &o,
            &root.join("idle-reached"),
            &threshold_meters(o.thresholds),
            o.thresholds,
        ))?;
        println!(
            "## Idle gateway: {} thresholds on one meter, checked every second; {} s alone\n",
            o.thresholds, o.idle_secs
        );
        println!("| gateway | CPU (% of one core) |\n| --- | ---: |");
        println!(
            "| no thresholds ({} events this month) | {none:.2}% |",
            o.thresholds
        );
        println!("| {} thresholds, none reached | {open:.2}% |", o.thresholds);
        println!(
            "| {} thresholds, all reached ({} events) | {reached:.2}% |",
            o.thresholds, o.thresholds
        );
        println!();
        let worst = open.max(reached);
        println!("| target | figure | |\n| --- | ---: | --- |");
        println!(
            "| idle CPU <= 2% of a core with {} thresholds | {worst:.2}% | {} |",
            o.thresholds,
            met(worst <= 2.0)
        );
    }
    if !ok {
        eprintln!("requests failed: the figures are not valid");
        std::process::exit(1);
    }
    Ok(())
}
