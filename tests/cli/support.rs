//! What every CLI test needs: a temp dir with a config dir and a database of its own (SQLite
//! or a fresh PostgreSQL schema), a way to run the binary against them, a `serve` process on a
//! free loopback port, and a direct connection to the store to check what it holds.

use std::collections::BTreeSet;
use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_partner-gateway");

/// The crate root, for the sample config and the fixtures.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    manifest_dir().join("fixtures").join(name)
}

/// Write two `#[tokio::test]` wrappers, one per backend, around `async fn $body(Backend)`.
macro_rules! on_both_backends {
    ($body:ident => $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $body($crate::support::Backend::Sqlite).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[cfg_attr(not(pg_tests), ignore = "PostgreSQL variant: set TEST_DATABASE_URL (./dev test does when PostgreSQL answers on 127.0.0.1:5432)")]
        async fn $postgres() {
            $body($crate::support::Backend::Postgres).await
        }
    };
}
pub(crate) use on_both_backends;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A test's own directory, config and database. Dropping it drops the PostgreSQL schema.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub config_dir: PathBuf,
    /// What the binary gets in `GATEWAY__DATABASE__URL`.
    pub db_url: String,
    /// (bootstrap URL, schema) for PostgreSQL.
    pg_schema: Option<(String, String)>,
}

impl TestEnv {
    /// A fresh environment with a copy of the sample config and a migrated database (as an
    /// operator's `partner-gateway migrate` leaves it: the other commands do not migrate).
    pub async fn new(backend: Backend) -> Option<TestEnv> {
        let env = Self::unmigrated(backend).await?;
        let out = env.run(&["migrate"]).await;
        assert!(out.status.success(), "{out}");
        Some(env)
    }

    /// A fresh environment whose database nothing has touched yet.
    pub async fn unmigrated(backend: Backend) -> Option<TestEnv> {
        let dir = tempfile::tempdir().unwrap();
        let config_dir = dir.path().join("config");
        std::fs::create_dir(&config_dir).unwrap();
        for name in [
            "gateway.toml",
            "partners.toml",
            "meters.toml",
            "agreements.toml",
            "logo.png",
        ] {
            std::fs::copy(
                manifest_dir().join("config").join(name),
                config_dir.join(name),
            )
            .unwrap();
        }
        let (db_url, pg_schema) = match backend {
            Backend::Sqlite => (format!("sqlite://{}/gw.db", dir.path().display()), None),
            Backend::Postgres => {
                let Some(base) = std::env::var("TEST_DATABASE_URL")
                    .ok()
                    .filter(|s| !s.is_empty())
                else {
                    // Only a test not marked ignored without pg_tests gets here: fail it,
                    // so no PostgreSQL test passes without running.
                    panic!(
                        "TEST_DATABASE_URL is not set, and this PostgreSQL test is not marked \
                         #[cfg_attr(not(pg_tests), ignore = ...)]"
                    );
                };
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(&base)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("TEST_DATABASE_URL is set but PostgreSQL is unreachable: {e}")
                    });
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
                (url, Some((base, schema)))
            }
        };
        Some(TestEnv {
            dir,
            config_dir,
            db_url,
            pg_schema,
        })
    }

    /// The SQLite database file (SQLite only).
    pub fn sqlite_path(&self) -> PathBuf {
        self.dir.path().join("gw.db")
    }

    /// The binary with `--config <this env's config dir>` and `args`, its database set by
    /// environment, and no `GATEWAY__*` or `RUST_LOG` leaking in from the test's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(&self.config_dir).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("GATEWAY__") || k == "RUST_LOG" {
                c.env_remove(k);
            }
        }
        c.env("GATEWAY__DATABASE__URL", &self.db_url)
            .env("GATEWAY__TELEMETRY__LOG_LEVEL", "warn")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Run to completion with the given extra environment.
    pub async fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), c.output())
            .await
            .unwrap_or_else(|_| panic!("partner-gateway {args:?} did not finish in 60 s"))
            .unwrap();
        Outcome {
            args: args.iter().map(|s| s.to_string()).collect(),
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub async fn run(&self, args: &[&str]) -> Outcome {
        self.run_with_env(args, &[]).await
    }

    /// `api-keys create`; returns the key printed on stdout.
    pub async fn create_key(&self, role: &str, partner: Option<&str>) -> String {
        let mut args = vec!["api-keys", "create", "--role", role];
        if let Some(p) = partner {
            args.extend(["--partner", p]);
        }
        let out = self.run(&args).await;
        assert!(out.status.success(), "{out}");
        let key = out.stdout.trim().to_owned();
        assert!(key.starts_with("pgw_"), "{out}");
        key
    }

    /// `serve` on a free loopback port, once `/healthz` answers.
    pub async fn serve(&self) -> Server {
        self.serve_with_env(&[]).await
    }

    /// [`TestEnv::serve`] with extra environment.
    pub async fn serve_with_env(&self, env: &[(&str, &str)]) -> Server {
        let mut last = String::new();
        // A port picked by binding :0 can be taken by someone else before the server binds it.
        for attempt in 0..3 {
            let port = free_port();
            let log_path = self.dir.path().join(format!("serve-{port}-{attempt}.log"));
            let log = std::fs::File::create(&log_path).unwrap();
            let mut command = self.command(&["serve"]);
            command.envs(env.iter().copied());
            let child = command
                .env("GATEWAY__HTTP__ADDR", format!("127.0.0.1:{port}"))
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap();
            let mut server = Server {
                child,
                base: format!("http://127.0.0.1:{port}"),
                client: reqwest::Client::new(),
                log_path,
            };
            match server.wait_healthy(Duration::from_secs(30)).await {
                Ok(()) => return server,
                Err(e) => last = format!("{e}\n--- serve log ---\n{}", server.log()),
            }
            if !last.contains("cannot listen") {
                break;
            }
        }
        panic!("serve did not become healthy: {last}");
    }

    /// `serve` on `port` with extra environment, once `/healthz` answers (one attempt: the
    /// caller chose the port because something else already names it).
    pub async fn serve_at(&self, port: u16, env: &[(&str, &str)]) -> Server {
        let log_path = self.dir.path().join(format!(
            "serve-{port}-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut c = self.command(&["serve"]);
        c.env("GATEWAY__HTTP__ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        for (k, v) in env {
            c.env(k, v);
        }
        let mut server = Server {
            child: c.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            log_path,
        };
        if let Err(e) = server.wait_healthy(Duration::from_secs(30)).await {
            panic!(
                "serve did not become healthy: {e}\n--- serve log ---\n{}",
                server.log()
            );
        }
        server
    }

    /// A direct connection to this env's store.
    pub async fn store(&self) -> Store {
        Store::open(&self.db_url).await
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let Some((base, schema)) = self.pg_schema.take() else {
            return;
        };
        // Drop runs inside the test's runtime (and during unwinding): use a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(pool) = sqlx::PgPool::connect(&base).await {
                    let _ = sqlx::query("SET lock_timeout = '10s'").execute(&pool).await;
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&pool)
                        .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// How a finished command went.
pub struct Outcome {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// The value of a `name: N` line of stdout.
    pub fn counter(&self, name: &str) -> u64 {
        let prefix = format!("{name}: ");
        let lines: Vec<&str> = self
            .stdout
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .collect();
        assert_eq!(lines.len(), 1, "expected one `{prefix}N` line\n{self}");
        lines[0][prefix.len()..]
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("`{}` is not `{prefix}N`: {e}\n{self}", lines[0]))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "partner-gateway {}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

/// A running `serve`. Killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub client: reqwest::Client,
    log_path: PathBuf,
}

impl Server {
    async fn wait_healthy(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        let url = self.url("/healthz");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("serve exited before answering /healthz: {status}"));
            }
            if let Ok(r) = self
                .client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && r.status().is_success()
            {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(format!("no healthy answer from {url} in {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("serve has already been reaped")
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL, and reap.
    pub async fn sigkill(&mut self) -> ExitStatus {
        self.child.kill().await.unwrap();
        self.child.wait().await.unwrap()
    }

    /// Send a signal with the `kill` command (no signal crate is available).
    pub async fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Wait for the process to exit on its own, up to `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .map(|r| r.unwrap())
    }

    pub async fn get(&self, key: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/usage/query`; panics unless it answers 200.
    pub async fn query(&self, key: &str, params: &[(&str, &str)]) -> Value {
        let qs: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let resp = self
            .client
            .get(self.url(&format!("/v1/usage/query?{}", qs.join("&"))))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status.as_u16(), 200, "query {params:?}: {body}");
        body
    }
}

/// Percent-encode a query string component.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A numeric meter value as the query API returns it.
pub fn number(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("{v} is not a whole number"))
}

/// The `value` of each bucket of a query answer, in order.
pub fn bucket_values(body: &Value) -> Vec<i64> {
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array in {body}"))
        .iter()
        .map(|b| number(&b["value"]))
        .collect()
}

/// The gateway's store, opened directly (not through the binary) to check what it holds.
pub enum Store {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Store {
    pub async fn open(url: &str) -> Store {
        if url.starts_with("sqlite:") {
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .unwrap()
                .busy_timeout(Duration::from_secs(30));
            Store::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(2)
                    .connect_with(opts)
                    .await
                    .unwrap(),
            )
        } else {
            Store::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect(url)
                    .await
                    .unwrap(),
            )
        }
    }

    /// A query returning one integer (write SQL both dialects accept).
    pub async fn scalar(&self, sql: &str) -> i64 {
        match self {
            Store::Sqlite(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await,
            Store::Postgres(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A query returning one text column.
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        match self {
            Store::Sqlite(p) => sqlx::query_scalar::<_, String>(sql).fetch_all(p).await,
            Store::Postgres(p) => sqlx::query_scalar::<_, String>(sql).fetch_all(p).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// `source \t event_id` of every stored event of a partner.
    pub async fn event_keys(&self, partner: &str) -> BTreeSet<String> {
        assert!(
            partner
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        );
        self.strings(&format!(
            "SELECT source || '\t' || event_id FROM usage_events WHERE partner_id = '{partner}'"
        ))
        .await
        .into_iter()
        .collect()
    }

    pub async fn count_events(&self, partner: &str) -> i64 {
        assert!(
            partner
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        );
        self.scalar(&format!(
            "SELECT COUNT(*) FROM usage_events WHERE partner_id = '{partner}'"
        ))
        .await
    }

    /// (partner, source, id) keys stored more than once.
    pub async fn duplicated_keys(&self) -> Vec<String> {
        self.strings(
            "SELECT partner_id || '/' || source || '/' || event_id FROM usage_events \
             GROUP BY partner_id, source, event_id HAVING COUNT(*) > 1",
        )
        .await
    }

    pub async fn close(self) {
        match self {
            Store::Sqlite(p) => p.close().await,
            Store::Postgres(p) => p.close().await,
        }
    }
}

/// Every file of the SQLite database (main file, WAL, shared memory), as bytes.
pub fn sqlite_files(db: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let name = db.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&name))
        })
        // SQLite may delete the WAL or shared-memory file between the listing and the read
        // (its content is in the main file by then): a file gone is skipped, any other error
        // fails the test.
        .filter_map(|p| match std::fs::read(&p) {
            Ok(bytes) => Some((p, bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("reading {}: {e}", p.display()),
        })
        .collect()
}
