//! `TestApp`: the real gateway on a loopback port with its own database, SQLite or
//! PostgreSQL. PostgreSQL tests run when `TEST_DATABASE_URL` is set (CI sets it); each gets a
//! schema of its own.

use std::time::{SystemTime, UNIX_EPOCH};

use partner_gateway::apikeys::{self, Role};
use partner_gateway::app;
use partner_gateway::config::{Config, Layer};
use partner_gateway::db::Db;
use partner_gateway::jobs::Handlers;
use partner_gateway::state::AppState;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Meters used by tests beyond the sample ones.
const TEST_METERS: &str = r#"
[[meters]]
name = "session_minutes"
event_types = ["app.session"]
aggregation = "SUM"
value = "$.minutes"
group_by = ["$.course", "subject"]

[[meters]]
name = "peak_score"
event_types = ["app.*"]
aggregation = "MAX"
value = "$.score"

[[meters]]
name = "app_events"
event_types = ["app.*"]
aggregation = "COUNT"

[[meters]]
name = "last_plan"
event_types = ["app.plan"]
aggregation = "LATEST"
value = "$.plan"
"#;

/// Two test partners that report `app.*` and `test.*` events themselves (what a partner
/// key may record: `partners.self_reported_types`).
pub const REPORTER: &str = "self-reporter";
pub const REPORTER_2: &str = "self-reporter-2";
const REPORTERS: &str = r#"
[[partners]]
id = "self-reporter"
name = "A partner reporting its own events (tests)"
kind = "other"
self_reported_types = ["app.*", "test.*"]

[[partners]]
id = "self-reporter-2"
name = "Another partner reporting its own events (tests)"
kind = "other"
self_reported_types = ["app.*", "test.*"]
"#;

pub struct TestApp {
    pub address: String,
    pub state: AppState,
    pub client: reqwest::Client,
    pub db_url: String,
    /// Where the master key file is: every instance of one deployment shares it.
    pub key_dir: std::path::PathBuf,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

pub fn pg_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// A fresh database URL for `backend`, or None when PostgreSQL tests are not configured.
pub async fn fresh_database(backend: Backend, dir: &std::path::Path) -> Option<String> {
    match backend {
        Backend::Sqlite => Some(format!("sqlite://{}/gateway.db", dir.display())),
        Backend::Postgres => {
            let Some(url) = pg_url() else {
                // Only a test not marked ignored without pg_tests gets here: fail it, so
                // no PostgreSQL test passes without running.
                panic!(
                    "TEST_DATABASE_URL is not set, and this PostgreSQL test is not marked \
                     #[cfg_attr(not(pg_tests), ignore = ...)]"
                );
            };
            let pool = sqlx::PgPool::connect(&url).await.unwrap_or_else(|e| {
                panic!("TEST_DATABASE_URL is set but PostgreSQL is unreachable: {e}")
            });
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let schema = format!("pgw_test_{secs}_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&pool)
                .await
                .unwrap();
            drop_stale_schemas(&pool, secs).await;
            pool.close().await;
            let sep = if url.contains('?') { '&' } else { '?' };
            Some(format!("{url}{sep}options=-c%20search_path%3D{schema}"))
        }
    }
}

/// Schemas left by runs more than an hour old (a test that panicked cannot clean up).
async fn drop_stale_schemas(pool: &sqlx::PgPool, now_secs: u64) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'pgw_test_%'",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    for n in names {
        let age_ok = n
            .split('_')
            .nth(2)
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|t| t + 3600 < now_secs);
        if age_ok {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {n} CASCADE"))
                .execute(pool)
                .await;
        }
    }
}

pub fn test_config(db_url: &str, dir: &std::path::Path, extra: &str) -> Config {
    let layers = vec![
        Layer {
            origin: "partners.toml".into(),
            text: include_str!("../../config/partners.toml").into(),
        },
        Layer {
            origin: "meters.toml".into(),
            text: format!(
                "{}\n{TEST_METERS}",
                include_str!("../../config/meters.toml")
            ),
        },
        Layer {
            origin: "agreements.toml".into(),
            text: include_str!("../../config/agreements.toml").into(),
        },
        Layer {
            origin: "test.toml".into(),
            text: format!(
                "[database]\nurl = \"{db_url}\"\nmax_connections = 5\n[http]\naddr = \"127.0.0.1:0\"\nbody_limit_bytes = 1048576\n[keys]\nmaster_key_file = \"{}/master.key\"\nrotation_overlap_hours = 1\n[statements]\nsettle_secs = 0\n{REPORTERS}",
                dir.display()
            ),
        },
        // A layer of its own, so a test may add to sections the base layer opens.
        Layer {
            origin: "extra.toml".into(),
            text: extra.into(),
        },
    ];
    Config::from_layers(layers, Vec::new()).unwrap()
}

impl TestApp {
    /// The app's exchange of a one-time launch code: status and body.
    pub async fn exchange(&self, app_key: &str, code: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url("/v1/launches/exchange"))
            .bearer_auth(app_key)
            .json(&serde_json::json!({ "code": code }))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// How many usage events of this type the ledger holds.
    pub async fn usage_count(&self, event_type: &str) -> i64 {
        let sql = "SELECT COUNT(*) FROM usage_events WHERE type = $1";
        partner_gateway::with_db!(self.db(), pool => {
            sqlx::query_scalar(sql).bind(event_type).fetch_one(pool).await
        })
        .unwrap()
    }

    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, "[jobs]\nenabled = false\n", Handlers::new()).await
    }

    pub async fn spawn_with(backend: Backend, extra: &str, handlers: Handlers) -> Option<TestApp> {
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database(backend, dir.path()).await?;
        Some(Self::spawn_on(url, dir, extra, handlers).await)
    }

    /// Like `spawn_with`, on a listener bound beforehand (so its address can go into the
    /// config, e.g. as `http.public_url`).
    pub async fn spawn_on_listener(
        backend: Backend,
        listener: tokio::net::TcpListener,
        extra: &str,
    ) -> Option<TestApp> {
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database(backend, dir.path()).await?;
        Some(Self::spawn_full(url, dir, None, Some(listener), extra, Handlers::new()).await)
    }

    /// A second instance on the same database with the given extra config.
    pub async fn another_instance_with(&self, extra: &str) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        Self::spawn_full(
            self.db_url.clone(),
            dir,
            Some(self.key_dir.clone()),
            None,
            extra,
            Handlers::new(),
        )
        .await
    }

    /// A second instance on the same database, as behind a load balancer.
    pub async fn another_instance(&self) -> TestApp {
        self.another_instance_with("[jobs]\nenabled = false\n")
            .await
    }

    async fn spawn_on(
        url: String,
        dir: tempfile::TempDir,
        extra: &str,
        handlers: Handlers,
    ) -> TestApp {
        Self::spawn_full(url, dir, None, None, extra, handlers).await
    }

    async fn spawn_full(
        url: String,
        dir: tempfile::TempDir,
        key_dir: Option<std::path::PathBuf>,
        listener: Option<tokio::net::TcpListener>,
        extra: &str,
        handlers: Handlers,
    ) -> TestApp {
        let key_dir = key_dir.unwrap_or_else(|| dir.path().to_owned());
        let config = test_config(&url, &key_dir, extra);
        let db_url = url.clone();
        let state = AppState::prepare(config, true).await.unwrap();
        let listener = match listener {
            Some(l) => l,
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let address = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app::serve_wrapped(
            state.clone(),
            listener,
            handlers,
            shutdown.clone(),
            crate::answer_check::wrap,
        ));
        TestApp {
            address,
            state,
            client: reqwest::Client::new(),
            db_url,
            key_dir,
            shutdown,
            server: Some(server),
            _dir: dir,
        }
    }

    /// A second, independent connection to the app's database.
    pub async fn connect_again(&self) -> Db {
        let cfg = partner_gateway::config::DatabaseConfig {
            url: partner_gateway::config::Secret::new(self.db_url.clone()),
            ..Default::default()
        };
        Db::connect(&cfg).await.unwrap()
    }

    pub fn db(&self) -> &Db {
        &self.state.db
    }

    pub async fn key(&self, role: Role, partner: Option<&str>) -> String {
        apikeys::create_api_key(self.db(), role, partner, Some("test"))
            .await
            .unwrap()
            .1
    }

    pub async fn admin(&self) -> String {
        self.key(Role::Admin, None).await
    }

    pub async fn partner_key(&self, partner: &str) -> String {
        self.key(Role::Partner, Some(partner)).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, key: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_events(
        &self,
        key: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/v1/usage/events"))
            .bearer_auth(key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, key: &str, body: &Value) -> reqwest::Response {
        self.post_events(key, "application/json", body.to_string())
            .await
    }

    /// `GET /v1/usage/query` with the given parameters; returns (status, body).
    pub async fn query(&self, key: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let qs: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect();
        let resp = self
            .get(key, &format!("/v1/usage/query?{}", qs.join("&")))
            .await;
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// Rows in the ledger (all partners).
    pub async fn ledger_count(&self) -> i64 {
        partner_gateway::with_db!(self.db(), pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM usage_events").fetch_one(pool).await
        })
        .unwrap()
    }

    /// Stop as `serve` does on SIGTERM and check it stopped cleanly.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(s) = self.server.take() {
            s.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        dump_route_statuses();
    }
}

/// With `PGW_ROUTE_STATUS_DIR` set (.ci/run sets it), write this process's
/// `http_requests_total{method, route, status}` counters there, so the OpenAPI check can
/// tell which documented statuses some test reached. The counters are process-wide and
/// only grow, so the last write holds them all.
fn dump_route_statuses() {
    let Some(dir) = std::env::var_os("PGW_ROUTE_STATUS_DIR") else {
        return;
    };
    let Some(handle) = partner_gateway::telemetry::prometheus() else {
        return;
    };
    let text: String = handle
        .render()
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = std::path::PathBuf::from(dir);
    let _ = std::fs::create_dir_all(&dir);
    let tmp = dir.join(format!("api-{}.prom.tmp", std::process::id()));
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(format!("api-{}.prom", std::process::id())));
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A CloudEvent for tests.
pub fn event(id: &str, event_type: &str, subject: &str, time: &str) -> Value {
    serde_json::json!({
        "specversion": "1.0", "id": id, "source": "/test", "type": event_type,
        "subject": subject, "time": time,
    })
}

/// Run a behaviour test on SQLite and on PostgreSQL: `both!(async fn name(app) { ... })`
/// becomes `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($app: $crate::helpers::TestApp) $body
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await.unwrap();
                    run(app).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(pg_tests), ignore = "PostgreSQL variant: set TEST_DATABASE_URL (./dev test does when PostgreSQL answers on 127.0.0.1:5432)")]
                async fn postgres() {
                    if let Some(app) = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await {
                        run(app).await
                    }
                }
            }
        )*
    };
}

/// For tests that build their own app(s): `both_backends!(async fn name(backend) { ... })`
/// becomes `name::sqlite` and `name::postgres`; `TestApp::spawn_with` skips PostgreSQL when
/// it is not configured.
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($backend:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($backend: $crate::helpers::Backend) $body
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() { run($crate::helpers::Backend::Sqlite).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(pg_tests), ignore = "PostgreSQL variant: set TEST_DATABASE_URL (./dev test does when PostgreSQL answers on 127.0.0.1:5432)")]
                async fn postgres() { run($crate::helpers::Backend::Postgres).await }
            }
        )*
    };
}
