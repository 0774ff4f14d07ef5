//! The two storage backends. An enum, not a trait object: there are exactly two real
//! backends and most SQL is shared text (`$1` placeholders work on both), so each store
//! function matches once with [`with_db!`] or [`with_tx!`] and writes the query a single time
//! unless the dialects differ.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Transaction};

use crate::config::{self, DatabaseConfig};

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

mod group;

/// A pooled PostgreSQL connection idle this long is pinged before it is handed out.
const PG_PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);
pub use group::{CommitStats, SqliteTx};

/// A transaction on either backend. Store functions that must join the caller's transaction
/// (record a usage event, enqueue a job) take `&mut Tx`. On SQLite it is a savepoint in a
/// commit shared with concurrent writers of the process ([`group`]): same all-or-nothing
/// meaning, `commit` returns once it is durable.
pub enum Tx {
    Sqlite(SqliteTx),
    Postgres(Transaction<'static, Postgres>),
}

/// One writer queue and shared transaction per SQLite file in this process. SQLite has one
/// writer at a time; without the queue, waiting writers sleep and retry in SQLite's busy
/// handler and some wait far longer than others. With it they take turns in order.
static SQLITE_WRITERS: LazyLock<std::sync::Mutex<HashMap<PathBuf, Arc<group::Group>>>> =
    LazyLock::new(Default::default);

fn sqlite_writer_group(pool: &SqlitePool) -> Arc<group::Group> {
    let file = pool.connect_options().get_filename().to_path_buf();
    let mut queues = SQLITE_WRITERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    queues.entry(file).or_default().clone()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Run `$body` with `$c` bound to the backend's pool.
#[macro_export]
macro_rules! with_db {
    ($db:expr, $c:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($c) => $body,
            $crate::db::Db::Postgres($c) => $body,
        }
    };
}

/// Run `$body` with `$c` bound to the transaction's connection.
#[macro_export]
macro_rules! with_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx {
            $crate::db::Tx::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::db::Tx::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

/// Open and close one PostgreSQL connection, with the reason in words when it fails.
async fn probe_postgres(opts: &PgConnectOptions, limit: Duration) -> anyhow::Result<()> {
    use sqlx::ConnectOptions;
    let at = format!("{}:{}", opts.get_host(), opts.get_port());
    match tokio::time::timeout(limit, opts.connect()).await {
        Err(_) => anyhow::bail!(
            "cannot connect to PostgreSQL at {at}: no answer within {} s (database.acquire_timeout_secs)",
            limit.as_secs()
        ),
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
            Ok(())
        }
        Ok(Err(e)) => anyhow::bail!(
            "cannot connect to PostgreSQL at {at}: {}",
            connect_reason(&e)
        ),
    }
}

/// A connection error as an operator reads it.
fn connect_reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                "connection refused (is PostgreSQL running, and on this port?)".into()
            }
            std::io::ErrorKind::TimedOut => "the connection timed out".into(),
            _ if io.to_string().contains("failed to lookup address") => {
                format!("the host name does not resolve ({io})")
            }
            _ => io.to_string(),
        },
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Tls(t) => format!("TLS failed: {t}"),
        other => other.to_string(),
    }
}

/// See [`Db::schema_state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    Current,
    /// No migration applied: a fresh database.
    Empty,
    /// These migrations are not applied yet.
    Behind(Vec<i64>),
}

/// What `Db::backup` wrote.
#[derive(Debug, Clone, Copy)]
pub struct BackupReport {
    pub bytes: u64,
    pub tables: i64,
}

impl Db {
    pub async fn connect(cfg: &DatabaseConfig) -> anyhow::Result<Db> {
        let url = cfg.url.expose();
        let acquire = Duration::from_secs(cfg.acquire_timeout_secs);
        if url.starts_with("sqlite:") {
            let mut opts = SqliteConnectOptions::from_str(url)
                .with_context(|| {
                    format!(
                        "database.url is not a valid SQLite URL ({})",
                        redact_url(url)
                    )
                })?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match cfg.sqlite_synchronous {
                    config::SqliteSynchronous::Full => SqliteSynchronous::Full,
                    config::SqliteSynchronous::Normal => SqliteSynchronous::Normal,
                })
                // Below the default request timeout (30 s), so a writer stuck behind the lock
                // gets a clear error before its client gives up.
                .busy_timeout(Duration::from_secs(20))
                .foreign_keys(true);
            let filename = opts.get_filename().to_path_buf();
            if let Some(parent) = filename.parent().filter(|p| !p.as_os_str().is_empty())
                && !is_memory(&filename)
            {
                std::fs::create_dir_all(parent).with_context(|| {
                    format!("cannot create the database directory {}", parent.display())
                })?;
            }
            if !is_memory(&filename) {
                owner_only(&filename)?;
            }
            opts = opts.pragma("temp_store", "memory");
            let pool = SqlitePoolOptions::new()
                .max_connections(cfg.max_connections)
                .acquire_timeout(acquire)
                // An in-process file cannot drop a connection: skip sqlx's ping before each
                // checkout (two worker hand-offs per query otherwise). PostgreSQL keeps it, so
                // a failover does not hand out dead connections.
                .test_before_acquire(false)
                .connect_with(opts)
                .await
                .with_context(|| format!("cannot open SQLite database {}", filename.display()))?;
            Ok(Db::Sqlite(pool))
        } else {
            let opts = PgConnectOptions::from_str(url)
                .with_context(|| {
                    format!(
                        "database.url is not a valid PostgreSQL URL ({})",
                        redact_url(url)
                    )
                })?
                // JIT compiles the big ledger aggregates for longer than it saves them (~10 ms
                // each measured) and never helps the short OLTP queries.
                .options([("jit", "off")]);
            // One connection first, to report why it fails at once (refused, no such host,
            // authentication, no such database); the pool would retry until its acquire
            // timeout and report only "pool timed out".
            probe_postgres(&opts, acquire).await?;
            let pool = PgPoolOptions::new()
                .max_connections(cfg.max_connections)
                .acquire_timeout(acquire)
                // sqlx pings every connection it hands out: a round trip before each
                // transaction, a third of a one-event ingest's. Only a connection idle for
                // a while is pinged (as HikariCP's alive-bypass window does): one in steady
                // use was working a moment ago; one that dies in between (the server
                // restarting under load) fails the one transaction on it, which rolls back,
                // as the transactions in flight at that moment fail anyway.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PG_PING_AFTER_IDLE {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .connect_with(opts)
                .await
                .with_context(|| format!("cannot connect to PostgreSQL at {}", redact_url(url)))?;
            Ok(Db::Postgres(pool))
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Copy a SQLite database to `dest` while it keeps serving: `VACUUM INTO` reads one
    /// consistent snapshot (a WAL read transaction; writers are not blocked) into a
    /// temporary file beside `dest`, which is checked (`PRAGMA integrity_check`) and then
    /// renamed into place, so `dest` is never a half-written copy.
    pub async fn backup(&self, dest: &Path, force: bool) -> anyhow::Result<BackupReport> {
        let Db::Sqlite(pool) = self else {
            anyhow::bail!(
                "database.url is PostgreSQL: back it up with pg_dump or the server's own backups (docs/OPERATIONS.md)"
            );
        };
        if dest.exists() && !force {
            anyhow::bail!("{} exists; pass --force to replace it", dest.display());
        }
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "backup.db".into());
        let tmp = dir.join(format!(".{name}.{}.partial", uuid::Uuid::new_v4().simple()));
        let result = async {
            // The copy holds everything the database does: readable by its owner only, from
            // its first byte (VACUUM INTO fills an existing empty file, keeping its mode).
            create_owner_only(&tmp)?;
            sqlx::query("VACUUM INTO $1")
                .bind(tmp.to_string_lossy().into_owned())
                .execute(pool)
                .await
                .with_context(|| format!("VACUUM INTO {}", tmp.display()))?;
            let opts = SqliteConnectOptions::new().filename(&tmp).read_only(true);
            let copy = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await?;
            let check: String = sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_one(&copy)
                .await?;
            let tables: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'")
                    .fetch_one(&copy)
                    .await?;
            copy.close().await;
            anyhow::ensure!(
                check == "ok",
                "the copy failed its integrity check: {check}"
            );
            std::fs::rename(&tmp, dest)
                .with_context(|| format!("cannot move the copy to {}", dest.display()))?;
            let bytes = std::fs::metadata(dest)?.len();
            Ok(BackupReport { bytes, tables })
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn migrator(&self) -> &'static Migrator {
        match self {
            Db::Sqlite(_) => &SQLITE_MIGRATOR,
            Db::Postgres(_) => &POSTGRES_MIGRATOR,
        }
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = self.migrator();
        with_db!(self, pool => migrator.run(pool).await).context("applying migrations")?;
        Ok(())
    }

    /// Whether the database has this binary's schema: none at all, some migrations
    /// missing, or current.
    pub async fn schema_state(&self) -> anyhow::Result<SchemaState> {
        let pending = self.pending_migrations().await?;
        Ok(if pending.is_empty() {
            SchemaState::Current
        } else if pending.len() == self.migrator().iter().count() {
            SchemaState::Empty
        } else {
            SchemaState::Behind(pending)
        })
    }

    /// Versions the binary knows that the database has not applied (empty when current).
    pub async fn pending_migrations(&self) -> anyhow::Result<Vec<i64>> {
        let applied: Vec<i64> = with_db!(self, pool => {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(pool)
                .await
        })
        .unwrap_or_default();
        Ok(self
            .migrator()
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        with_db!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|r| r.rows_affected())).map(|_| ())
    }

    /// Begin a write transaction. On SQLite the shared transaction is `BEGIN IMMEDIATE`, so
    /// another process's writer queues on the busy timeout instead of one failing when it
    /// upgrades from reader to writer.
    ///
    /// The begin runs in a task of its own: if the caller is cancelled (a client hangs up,
    /// a request times out) while sqlx is between sending BEGIN and handing back the
    /// transaction, the task still finishes, and the transaction it made is dropped, which
    /// rolls it back. Cancelled inline, the connection would go back to the pool inside an
    /// open transaction, and on SQLite hold the write lock for good.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let db = self.clone();
        let started = std::time::Instant::now();
        let task = tokio::spawn(async move {
            let tx = Ok(match db {
                Db::Sqlite(p) => Tx::Sqlite(group::begin(&p, sqlite_writer_group(&p)).await?),
                Db::Postgres(p) => Tx::Postgres(p.begin().await?),
            });
            metrics::histogram!("gateway_db_acquire_seconds")
                .record(started.elapsed().as_secs_f64());
            tx
        });
        task.await.map_err(|e| {
            tracing::error!(error = %e, "the task beginning a transaction failed");
            sqlx::Error::WorkerCrashed
        })?
    }

    /// How this process shared SQLite commits so far (None on PostgreSQL).
    pub fn sqlite_commit_stats(&self) -> Option<CommitStats> {
        match self {
            Db::Sqlite(p) => Some(sqlite_writer_group(p).stats()),
            Db::Postgres(_) => None,
        }
    }

    pub async fn close(&self) {
        with_db!(self, pool => pool.close().await)
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Tx::Sqlite(..) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        }
    }

    /// Hold the lock `name` until this transaction ends, so a check-then-insert is done by
    /// one instance at a time: a PostgreSQL advisory transaction lock (instances share the
    /// database). SQLite transactions already run one writer at a time.
    pub async fn lock_named(&mut self, name: &str) -> Result<(), sqlx::Error> {
        if let Tx::Postgres(t) = self {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(name)
                .execute(&mut **t)
                .await?;
        }
        Ok(())
    }
}

fn is_memory(p: &Path) -> bool {
    p.as_os_str() == ":memory:"
}

/// Make the SQLite file readable and writable by its owner only (0600), creating it empty
/// if missing: it holds sealed keys, launch contexts and the ledger. SQLite gives the `-wal`
/// and `-shm` files the database file's mode; any left by an earlier, laxer start are
/// tightened too.
fn owner_only(db_file: &Path) -> anyhow::Result<()> {
    if !db_file.exists() {
        create_owner_only(db_file)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db_file.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        if file.exists() {
            set_owner_only(&file)?;
        }
    }
    Ok(())
}

/// Create an empty file with mode 0600 (or open an existing one), before anything is in it.
fn create_owner_only(path: &Path) -> anyhow::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    set_owner_only(path)
}

fn set_owner_only(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).with_context(
                || format!("cannot make {} readable by its owner only", path.display()),
            )?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split(':').next().unwrap_or("");
    let host = host.split('?').next().unwrap_or(host);
    format!("{scheme}://{user}:***@{host}")
}

/// True when the error is a unique-constraint violation (both backends).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite://data/g.db"), "sqlite://data/g.db");
    }
}
