//! The command line: the flags and values every bench reads the same way.

use anyhow::{Context, bail};

use super::db::Backend;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// `BENCH_DATABASE_URL` when it is set and not empty.
pub fn pg_url() -> Option<String> {
    std::env::var("BENCH_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// `BENCH_DATABASE_URL`, else the local default.
pub fn pg_url_or_default() -> String {
    pg_url().unwrap_or_else(|| DEFAULT_PG_URL.to_owned())
}

/// The backends of a bench that runs PostgreSQL only when `BENCH_DATABASE_URL` is set.
pub fn backends_for(pg_url: Option<&str>) -> Vec<Backend> {
    if pg_url.is_some() {
        Backend::BOTH.to_vec()
    } else {
        vec![Backend::Sqlite]
    }
}

/// Refuses PostgreSQL without `BENCH_DATABASE_URL` (for the benches of `backends_for`).
pub fn check_pg_url(backends: &[Backend], pg_url: Option<&str>) -> anyhow::Result<()> {
    if backends.contains(&Backend::Postgres) && pg_url.is_none() {
        bail!("--backend postgres needs BENCH_DATABASE_URL (e.g. {DEFAULT_PG_URL})");
    }
    Ok(())
}

/// The arguments after the program's name, one by one; the errors end with the bench's usage.
pub struct Args {
    args: std::iter::Skip<std::env::Args>,
    usage: &'static str,
}

impl Iterator for Args {
    type Item = String;
    fn next(&mut self) -> Option<String> {
        self.args.next()
    }
}

impl Args {
    pub fn new(usage: &'static str) -> Args {
        Args {
            args: std::env::args().skip(1),
            usage,
        }
    }

    /// The number after `flag` (`_` allowed between digits: `1_000_000`).
    pub fn num<T: std::str::FromStr>(&mut self, flag: &str) -> anyhow::Result<T> {
        let usage = self.usage;
        let v = self
            .args
            .next()
            .with_context(|| format!("{flag} needs a value\n{usage}"))?;
        v.replace('_', "")
            .parse()
            .map_err(|_| anyhow::anyhow!("{flag}: {v:?} is not a number\n{usage}"))
    }

    /// The value after a flag.
    pub fn value(&mut self) -> anyhow::Result<String> {
        self.args.next().context(self.usage)
    }

    /// The value of `--backend`: `sqlite`, `postgres` or `both`.
    pub fn backends(&mut self) -> anyhow::Result<Vec<Backend>> {
        Ok(match self.args.next().as_deref() {
            Some("sqlite") => vec![Backend::Sqlite],
            Some("postgres") => vec![Backend::Postgres],
            Some("both") => Backend::BOTH.to_vec(),
            _ => bail!("--backend takes sqlite, postgres or both\n{}", self.usage),
        })
    }

    /// An argument that is not one of the bench's own flags: `--bench` (cargo bench passes it
    /// to harness = false targets) is ignored, `-h`/`--help` prints the usage and exits, any
    /// other is an error.
    pub fn other(&self, arg: &str) -> anyhow::Result<()> {
        match arg {
            "--bench" => Ok(()),
            "-h" | "--help" => {
                println!("{}", self.usage);
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{}", self.usage),
        }
    }
}
