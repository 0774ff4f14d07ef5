//! The stores a bench runs on: the backends, a fresh PostgreSQL database (or schema) made
//! through `BENCH_DATABASE_URL` and dropped at the end, SQLite file sizes.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use partner_gateway::db::redact_url;
use tokio::runtime::Handle;

use super::server::on_server;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub const BOTH: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

    /// As on the command line: `sqlite`, `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// As in prose: `SQLite`, `PostgreSQL`.
    pub fn title(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// `run` on each backend in turn. A backend whose run fails is named on stderr and in the
/// list returned beside the reports, and so is one whose report `failed` says so; the other
/// backends' reports are kept, so that a bench can print them before it fails. `name` is how
/// the messages name a backend.
pub async fn each_backend<R, F, Fut>(
    backends: &[Backend],
    name: fn(Backend) -> &'static str,
    mut run: F,
    failed: fn(&R) -> bool,
) -> (Vec<R>, Vec<&'static str>)
where
    F: FnMut(Backend) -> Fut,
    Fut: Future<Output = anyhow::Result<R>>,
{
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for &backend in backends {
        match run(backend).await {
            Ok(r) => {
                if failed(&r) {
                    failures.push(name(backend));
                }
                reports.push(r);
            }
            Err(e) => {
                eprintln!("{} bench FAILED: {e:#}", name(backend));
                failures.push(name(backend));
            }
        }
    }
    (reports, failures)
}

/// Fails when a backend failed (the list of `each_backend`), naming them, with `note`.
pub fn fail_if_any(failed: &[&str], note: &str) -> anyhow::Result<()> {
    if !failed.is_empty() {
        bail!("the bench failed for: {}{note}", failed.join(", "));
    }
    Ok(())
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (scheme, rest) = base
        .split_once("://")
        .context("BENCH_DATABASE_URL must look like postgres://user@host:port/db")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut out = format!("{scheme}://{authority}/{db}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// A PostgreSQL database for one run, made through `BENCH_DATABASE_URL`, with the connection
/// that made it (to drop it at the end).
pub struct PgDatabase {
    admin: sqlx::PgPool,
    pub name: String,
    /// `BENCH_DATABASE_URL` naming this database.
    pub url: String,
}

impl PgDatabase {
    /// A fresh database `{prefix}<random>`.
    pub async fn create(pg_url: &str, prefix: &str) -> anyhow::Result<PgDatabase> {
        let name = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
        PgDatabase::open(pg_url, name, false).await
    }

    /// The database `name`, created unless it exists.
    pub async fn create_or_reuse(pg_url: &str, name: String) -> anyhow::Result<PgDatabase> {
        PgDatabase::open(pg_url, name, true).await
    }

    async fn open(pg_url: &str, name: String, reuse: bool) -> anyhow::Result<PgDatabase> {
        let admin = sqlx::PgPool::connect(pg_url).await.with_context(|| {
            format!(
                "cannot connect to BENCH_DATABASE_URL ({})",
                redact_url(pg_url)
            )
        })?;
        let exists: bool = if reuse {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&admin)
                .await?
        } else {
            false
        };
        if !exists {
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .with_context(|| format!("creating database {name}"))?;
        }
        let url = with_database(pg_url, &name)?;
        Ok(PgDatabase { admin, name, url })
    }

    /// The end of the run: keep the database (and say so), or drop it.
    pub async fn finish(self, keep: bool) {
        let name = &self.name;
        if keep {
            println!("  kept database {name}");
        } else if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&self.admin)
            .await
        {
            eprintln!("warning: could not drop database {name}: {e}");
        }
        self.admin.close().await;
    }
}

/// The store of a bench whose gateway runs on its own runtime (`server`): a SQLite file in a
/// temporary directory, or a fresh PostgreSQL schema `pgw_bench_{bench}_<random>` (the
/// gateway's connections get it as their search_path), dropped by `close`.
pub struct Store {
    pub url: String,
    /// (BENCH_DATABASE_URL, schema).
    schema: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Store {
    /// `run` with the URL of a new store for `backend`, announced as "== backend (url)";
    /// the store is dropped after.
    pub async fn with<R, F, Fut>(
        backend: Backend,
        pg_url: Option<&str>,
        bench: &str,
        server: &Handle,
        run: F,
    ) -> anyhow::Result<R>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = anyhow::Result<R>>,
    {
        let store = Store::open(backend, pg_url, bench, server).await?;
        println!("== {} ({})", backend.name(), redact_url(&store.url));
        let result = run(store.url.clone()).await;
        store.close(server).await;
        result
    }

    pub async fn open(
        backend: Backend,
        pg_url: Option<&str>,
        bench: &str,
        server: &Handle,
    ) -> anyhow::Result<Store> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pgw-bench-{bench}-db-"))
            .tempdir()
            .context("creating a temporary directory")?;
        let mut schema: Option<(String, String)> = None;
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}/gateway.db", dir.path().display()),
            Backend::Postgres => {
                let admin_url = pg_url.context("BENCH_DATABASE_URL is not set")?.to_owned();
                let name = format!("pgw_bench_{bench}_{}", uuid::Uuid::new_v4().simple());
                let (a, n) = (admin_url.clone(), name.clone());
                on_server(server, async move {
                    let pool = sqlx::postgres::PgPoolOptions::new()
                        .acquire_timeout(Duration::from_secs(10))
                        .connect(&a)
                        .await
                        .with_context(|| {
                            format!("cannot connect to BENCH_DATABASE_URL ({})", redact_url(&a))
                        })?;
                    sqlx::query(&format!("CREATE SCHEMA {n}"))
                        .execute(&pool)
                        .await
                        .with_context(|| format!("creating schema {n}"))?;
                    pool.close().await;
                    anyhow::Ok(())
                })
                .await?;
                let sep = if admin_url.contains('?') { '&' } else { '?' };
                let url = format!("{admin_url}{sep}options=-c%20search_path%3D{name}");
                schema = Some((admin_url, name));
                url
            }
        };
        Ok(Store {
            url,
            schema,
            _dir: dir,
        })
    }

    /// Drop the schema, if any, and the temporary directory.
    pub async fn close(self, server: &Handle) {
        let Some((admin_url, name)) = self.schema else {
            return;
        };
        let dropped = on_server(server, async move {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .acquire_timeout(Duration::from_secs(10))
                .connect(&admin_url)
                .await?;
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(&pool)
                .await?;
            pool.close().await;
            anyhow::Ok(())
        })
        .await;
        if let Err(e) = dropped {
            eprintln!("warning: could not drop the bench schema: {e:#}");
        }
    }
}

/// Bytes of a SQLite database file with its `-wal` and `-shm` files (0 without a file).
pub fn sqlite_size(file: Option<&Path>) -> u64 {
    file.map(|f| {
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                let mut name = f.as_os_str().to_owned();
                name.push(suffix);
                std::fs::metadata(name).ok()
            })
            .map(|m| m.len())
            .sum()
    })
    .unwrap_or(0)
}
