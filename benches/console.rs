//! Console benchmark (issue 23): the month-end page (`GET /console/finance?period=2026-10`)
//! and the 90-day usage chart (`GET /console/usage`, per day) over a large ledger, signed in
//! as finance through a sign-in link, each timed against baselines in the same rounds: for
//! the month-end page `GET /healthz` and the page's own reads called directly (no HTTP, no
//! HTML); for the chart the JSON `GET /v1/usage/query` of the same partner, meter and windows.
//! SQLite and PostgreSQL. Target: every page under 300 ms at the median.
//!
//! ```sh
//! export CARGO_TARGET_DIR=/var/tmp/pg-bench-target   # any target dir
//! cargo bench --bench console                         # 10,000,000 events, 100 partners, both backends
//! cargo bench --bench console -- --events 200000 --backend sqlite --runs 10
//! ```
//!
//! The ledger is written by SQL inside the store (`INSERT ... SELECT` over a generated
//! series, `--batch` rows a statement), not through the ingest path: what is measured is
//! reading it. Every column and index of `usage_events` is as the gateway writes them
//! (pseudonymous subjects, `recorded_by = 'gateway'`, `subject_form = 1`). The September
//! statements are then computed and finalized and the October drafts computed through the
//! statements service, so the month-end page shows real statuses.
//!
//! PostgreSQL: `BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! is used only to create a fresh database `pgw_bench_console_<random>`, dropped at the end
//! unless `--postgres-db NAME` names one to keep (reused when it holds the same ledger).
//! SQLite: a file in a temporary directory, or `--sqlite-file PATH` (kept, reused the same
//! way). See `docs/PERFORMANCE.md` ("Console: month-end page and usage chart").

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use partner_gateway::apikeys::Role as KeyRole;
use partner_gateway::audit::Who;
use partner_gateway::config::{Config, Layer};
use partner_gateway::console::finance::count_after_cut_off;
use partner_gateway::console::role::Role as ConsoleRole;
use partner_gateway::console::session::{LinkKind, create_link};
use partner_gateway::db::Db;
use partner_gateway::metering::window::local_midnight;
use partner_gateway::state::AppState;
use partner_gateway::statements::model::Status;
use partner_gateway::statements::store::{self as st_store, ListFilter, Span};
use serde_json::Value;
use support::args::{Args, pg_url_or_default};
use support::cpu::CpuSample;
use support::db::{Backend, PgDatabase, each_backend, fail_if_any, sqlite_size};
use support::http::{answer_text, snippet};
use support::server::{self, Serving};
use support::stats::{Timings, ms};

/// The month-end period, and the one before it (finalized in the setup).
const PERIOD: &str = "2026-10";
const PREVIOUS: &str = "2026-09";
/// The chart: 90 days, the last one 31 October.
const CHART_FROM: &str = "2026-08-03";
const CHART_TO: &str = "2026-10-31";
const CHART_DAYS: usize = 90;
/// The meter charted: distinct users who launched (UNIQUE_COUNT of `subject` over
/// `smart.launch`, `lti.launch`, `sso.login`), from `config/meters.toml`.
const METER: &str = "active_users";
/// A COUNT meter charted beside it for the biggest partner (an LMS): `lti.launch` events.
const COUNT_METER: &str = "lti_launches";
/// The target, per page, at the median.
const TARGET_MS: f64 = 300.0;
/// The page asks per day; a partner's share of the events is drawn in 1/BUCKETS steps.
const BUCKETS: u64 = 100_000;
/// Any fixed 32-byte key (a kept store is reopened with the same one).
const MASTER_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
/// What the store's `bench_meta` says about a loaded ledger.
const META_KEY: &str = "console-ledger";

fn utc(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}
/// Events are dated in [3 July, 1 November) UTC: 120 days.
fn ledger_start() -> DateTime<Utc> {
    utc(2026, 7, 3)
}
fn ledger_end() -> DateTime<Utc> {
    utc(2026, 11, 1)
}
/// A few October events arrive late, in [3 November, 9 November): after the October drafts'
/// cut-off, so the page's "events after cut-off" column counts something.
fn late_start() -> DateTime<Utc> {
    utc(2026, 11, 3)
}
/// When September's statements are computed and finalized, and October's drafts computed.
fn september_now() -> DateTime<Utc> {
    utc(2026, 10, 2)
}
fn october_now() -> DateTime<Utc> {
    utc(2026, 11, 3)
}

const USAGE: &str = "usage: cargo bench --bench console -- [--events N (10000000)] \
[--partners N (100)] [--runs N (30, after 2 warm-up rounds)] \
[--before-runs N (3: rounds of the month-end reads as counted before migration 0024)] [--batch N (500000 rows a fill statement)] \
[--backend sqlite|postgres|both] [--sqlite-file PATH (kept; reused when it holds the same ledger)] \
[--postgres-db NAME (kept; reused when it holds the same ledger)]";

struct Opts {
    events: u64,
    partners: usize,
    runs: usize,
    before_runs: usize,
    batch: u64,
    backends: Vec<Backend>,
    pg_url: String,
    sqlite_file: Option<PathBuf>,
    postgres_db: Option<String>,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        events: 10_000_000,
        partners: 100,
        runs: 30,
        before_runs: 3,
        batch: 500_000,
        backends: Backend::BOTH.to_vec(),
        pg_url: pg_url_or_default(),
        sqlite_file: None,
        postgres_db: None,
    };
    let mut args = Args::new(USAGE);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => o.events = args.num(&a)?,
            "--partners" => o.partners = args.num(&a)?,
            "--runs" => o.runs = args.num(&a)?,
            "--before-runs" => o.before_runs = args.num(&a)?,
            "--batch" => o.batch = args.num(&a)?,
            "--sqlite-file" => o.sqlite_file = Some(args.value()?.into()),
            "--postgres-db" => o.postgres_db = Some(args.value()?),
            "--backend" => o.backends = args.backends()?,
            other => args.other(other)?,
        }
    }
    if o.events == 0 || o.runs == 0 || o.batch == 0 {
        bail!("--events, --runs and --batch must be at least 1");
    }
    if !(8..=1000).contains(&o.partners) {
        bail!("--partners is 8 to 1000 (the chart compares 8)");
    }
    if o.events > 1_000_000_000 {
        bail!("--events is at most 1,000,000,000 (the fill's arithmetic stays in 63 bits)");
    }
    if let Some(n) = &o.postgres_db
        && !n
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        bail!("--postgres-db: use lowercase letters, digits and _ only");
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// The partners, their agreements, the config.

struct Partner {
    id: String,
    /// An LMS (seat licence and share by `active_learners`, events mostly `lti.launch`);
    /// else an EHR vendor (flat share of recorded revenue, `smart.launch`, `fhir.request`).
    lms: bool,
    tz: &'static str,
    /// Its buckets `[lo, hi)` of `BUCKETS`: its share of the events.
    buckets: (u64, u64),
    /// Distinct subjects its events draw from.
    pool: u64,
}

impl Partner {
    fn expected(&self, events: u64) -> u64 {
        (self.buckets.1 - self.buckets.0) * events / BUCKETS
    }
}

/// Partner `i` has volume rank `i + 1` (Zipf, weight 1/rank, as in the statements bench):
/// the first is the biggest. 4 in 10 are LMSs, the biggest among them.
fn plan(o: &Opts) -> Vec<Partner> {
    let n = o.partners;
    let total: f64 = (1..=n).map(|r| 1.0 / r as f64).sum();
    let mut counts: Vec<u64> = (1..=n)
        .map(|r| ((BUCKETS as f64 / r as f64 / total).round() as u64).max(1))
        .collect();
    let sum: u64 = counts.iter().sum();
    counts[0] = counts[0] + BUCKETS - sum;
    let mut lo = 0;
    let mut out = Vec::with_capacity(n);
    for (i, c) in counts.into_iter().enumerate() {
        let lms = matches!(i % 5, 0 | 2);
        let tz = if lms {
            [
                "America/New_York",
                "America/Chicago",
                "Europe/London",
                "UTC",
            ][(i / 5) % 4]
        } else {
            ["America/Chicago", "America/New_York"][i % 2]
        };
        let id = format!("{}-{i:03}", if lms { "lms" } else { "ehr" });
        let expected = c * o.events / BUCKETS;
        out.push(Partner {
            id,
            lms,
            tz,
            buckets: (lo, lo + c),
            // About 100 events per subject over the 120 days (25 a month).
            pool: (expected / 100).max(100),
        });
        lo += c;
    }
    out
}

/// The bench's config layer: the store, a fixed master key, no background jobs, the
/// partners and one agreement each (covering 2026-09 and 2026-10, monthly, USD).
fn config_toml(partners: &[Partner], db_url: &str, gateway: &str) -> String {
    use std::fmt::Write;
    let mut t = format!(
        "[database]\nurl = \"{db_url}\"\n[keys]\nmaster_key = \"{MASTER_KEY}\"\n\
         [jobs]\nenabled = false\n[http]\npublic_url = \"{gateway}\"\n\
         [statements]\ncompany_name = \"Bench Learning & Health Software, Inc.\"\nsettle_secs = 60\n\n"
    );
    for p in partners {
        let kind = if p.lms { "lms" } else { "ehr" };
        writeln!(
            t,
            "[[partners]]\nid = \"{}\"\nname = \"Partner {} ({kind})\"\nkind = \"{kind}\"\n",
            p.id, p.id
        )
        .unwrap();
    }
    for p in partners {
        let (id, tz) = (&p.id, p.tz);
        if p.lms {
            writeln!(
                t,
                "[[agreements]]\nid = \"{id}-agreement\"\npartner = \"{id}\"\nversion = 1\n\
                 valid_from = \"2026-01-01\"\ncurrency = \"USD\"\ntime_zone = \"{tz}\"\n\n\
                 [agreements.revenue]\nrecorded = true\n\n\
                 [[agreements.revenue.prices]]\nmeter = \"active_learners\"\nmodel = \"licence\"\n\
                 description = \"Seat licence by active learners\"\ntiers = [\n\
                 {{ up_to = \"500\", annual_fee = \"10000.00\" }},\n\
                 {{ up_to = \"2000\", annual_fee = \"40000.00\" }},\n\
                 {{ annual_fee = \"100000.00\" }},\n]\n\n\
                 [agreements.share]\nmeter = \"active_learners\"\nmode = \"graduated\"\n\
                 reset = \"period\"\ntiers = [\n\
                 {{ up_to = \"1000\", rate = \"25%\" }},\n\
                 {{ up_to = \"5000\", rate = \"30%\" }},\n\
                 {{ rate = \"35%\" }},\n]\n"
            )
            .unwrap();
        } else {
            writeln!(
                t,
                "[[agreements]]\nid = \"{id}-agreement\"\npartner = \"{id}\"\nversion = 1\n\
                 valid_from = \"2026-01-01\"\ncurrency = \"USD\"\ntime_zone = \"{tz}\"\n\
                 share = {{ rate = \"18%\" }}\n"
            )
            .unwrap();
        }
    }
    t
}

async fn open_state(partners: &[Partner], db_url: &str, gateway: &str) -> anyhow::Result<AppState> {
    let layers = vec![
        server::meters_layer(),
        Layer {
            origin: "benches/console.rs".into(),
            text: config_toml(partners, db_url, gateway),
        },
    ];
    let config = Config::from_layers(layers, Vec::new())
        .map_err(|e| anyhow::anyhow!("bench configuration: {e}"))?;
    AppState::prepare(config, true)
        .await
        .context("preparing the gateway (connect, migrate, sync partners, keys)")
}

// ---------------------------------------------------------------------------------------
// The store.

async fn exec(db: &Db, sql: &str) -> anyhow::Result<()> {
    partner_gateway::with_db!(db, p => sqlx::query(sql).execute(p).await.map(|_| ()))
        .with_context(|| format!("running {}", snippet(sql)))?;
    Ok(())
}

async fn scalar_i64(db: &Db, sql: &str) -> anyhow::Result<i64> {
    partner_gateway::with_db!(db, p => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await)
        .with_context(|| format!("running {}", snippet(sql)))
}

fn ledger_key(o: &Opts) -> String {
    format!("events={} partners={} fill=2", o.events, o.partners)
}

async fn loaded_key(db: &Db) -> Option<String> {
    partner_gateway::with_db!(db, p => sqlx::query_scalar::<_, String>(
        "SELECT v FROM bench_meta WHERE k = 'console-ledger'")
        .fetch_optional(p)
        .await)
    .ok()
    .flatten()
}

/// The SQL that differs between the backends.
#[derive(Clone, Copy)]
struct Dialect {
    pg: bool,
}

impl Dialect {
    /// `v` as `width` lowercase hex digits, zero-padded.
    fn hex(self, v: &str, width: usize) -> String {
        if self.pg {
            format!("lpad(to_hex({v}), {width}, '0')")
        } else {
            format!("printf('%0{width}x', {v})")
        }
    }
    /// `v` as `width` decimal digits, zero-padded.
    fn dec(self, v: &str, width: usize) -> String {
        if self.pg {
            format!("lpad(({v})::text, {width}, '0')")
        } else {
            format!("printf('%0{width}d', {v})")
        }
    }
    /// The integers `lo..hi` as `s(n)`.
    fn series(self, lo: u64, hi: u64) -> String {
        if self.pg {
            format!(
                "s(n) AS (SELECT generate_series({lo}::bigint, {}::bigint))",
                hi - 1
            )
        } else {
            format!(
                "s(n) AS (SELECT {lo} UNION ALL SELECT n + 1 FROM s WHERE n < {})",
                hi - 1
            )
        }
    }
    fn with(self) -> &'static str {
        if self.pg { "WITH" } else { "WITH RECURSIVE" }
    }
    fn clamp(self, v: &str, lo: i64, hi: i64) -> String {
        if self.pg {
            format!("LEAST(GREATEST({v}, {lo}), {hi})")
        } else {
            format!("min(max({v}, {lo}), {hi})")
        }
    }
    fn json(self, v: &str) -> String {
        if self.pg {
            format!("CAST({v} AS jsonb)")
        } else {
            v.to_owned()
        }
    }
}

/// The rows `lo..hi` of the ledger, as one `INSERT ... SELECT`. Row `n` is dated
/// `start + n * step` (+-30 s); its partner, type, subject and the rest come from four
/// integer hashes of `n` (squares modulo primes below 2^31, so every product fits in 63
/// bits on both backends), the partner by its bucket in the temporary `bench_pick`.
///
/// - types: 2% `revenue.recognized` (`amount` 10.00-2000.00, 5% refunds at a quarter, a
///   product, a customer); at an LMS 85% `lti.launch` (`context_id` c0-c49) and 13%
///   `lti.grade_posted`; elsewhere 40% `smart.launch` (`client_id`), 58% `fhir.request`
///   (`resource_type`).
/// - subject: a pseudonym-like `ps1_` + 24 hex digits, unique per partner and subject
///   number (a customer's for revenue, else one of the partner's pool).
/// - event id: UUIDv7-shaped, the event's millisecond first, unique by `n`.
/// - received 2-3 s after its time; 1 in 2,000 October events in [3 Nov, 9 Nov) instead.
fn fill_sql(d: Dialect, lo: u64, hi: u64, events: u64) -> String {
    let start = ledger_start().timestamp_micros();
    let end = ledger_end().timestamp_micros();
    let step = (end - start) / events as i64;
    let oct1 = utc(2026, 10, 1).timestamp_micros();
    let late = late_start().timestamp_micros();
    let t = d.clamp(
        &format!("{start} + h.n * {step} + (h.h2 % 60001 - 30000) * 1000"),
        start,
        end - 1,
    );
    let event_id = [
        d.hex("t / 1000 / 65536", 8),
        "'-'".into(),
        d.hex("t / 1000 % 65536", 4),
        "'-7'".into(),
        d.hex("h1 % 4096", 3),
        "'-'".into(),
        d.hex("32768 + h2 % 16384", 4),
        "'-'".into(),
        d.hex("n", 12),
    ]
    .join(" || ");
    let subject = format!(
        "'ps1_' || {} || {}",
        d.hex("kk * 181081183811 % 281474976710656", 12),
        d.hex("(pidx * 1000003 + kk + 1) * 40503 % 281474976710656", 12)
    );
    let amount = format!(
        "(CASE WHEN r % 20 = 0 THEN '-' || (cents / 4 / 100) || '.' || {} \
         ELSE (cents / 100) || '.' || {} END)",
        d.dec("cents / 4 % 100", 2),
        d.dec("cents % 100", 2)
    );
    let data = d.json(&format!(
        "(CASE ty \
          WHEN 0 THEN '{{\"client_id\":\"app-' || (aux % 20) || '\"}}' \
          WHEN 1 THEN '{{\"resource_type\":\"' || (CASE aux % 5 WHEN 0 THEN 'Patient' \
               WHEN 1 THEN 'Observation' WHEN 2 THEN 'Condition' WHEN 3 THEN 'MedicationRequest' \
               ELSE 'Encounter' END) || '\"}}' \
          WHEN 4 THEN '{{\"amount\":\"' || {amount} || '\",\"currency\":\"USD\",\"product\":\"p' \
               || (1 + aux % 5) || '\",\"customer\":\"cust-' || {} || '\"}}' \
          ELSE '{{\"context_id\":\"c' || (aux % 50) || '\"}}' END)",
        d.dec("aux", 4)
    ));
    format!(
        "INSERT INTO usage_events (partner_id, source, event_id, type, subject, time_us, data, \
             extensions, received_at_us, sandbox, recorded_by, recorded_ref, subject_form) \
         {with} {series}, \
         a AS (SELECT n, (n * 1103515245 + 12345) % 2147483647 AS a1, \
                  (n * 1664525 + 1013904223) % 2147483629 AS a2, \
                  (n * 22695477 + 7) % 2147483587 AS a3, \
                  (n * 134775813 + 3) % 2147483579 AS a4 FROM s), \
         h AS (SELECT n, ((a1 * a1) % 2147483647 * 48271 + a1) % 2147483647 AS h1, \
                  ((a2 * a2) % 2147483629 * 69621 + a2) % 2147483629 AS h2, \
                  ((a3 * a3) % 2147483587 * 16807 + a3) % 2147483587 AS h3, \
                  ((a4 * a4) % 2147483579 * 40692 + a4) % 2147483579 AS h4 FROM a), \
         e AS (SELECT h.n AS n, h.h1 AS h1, h.h2 AS h2, h.h3 AS h3, p.pidx AS pidx, \
                  p.partner_id AS partner_id, p.lms AS lms, p.pool AS pool, {t} AS t, \
                  h.h4 % 10000 AS r, (h.h3 / 1000003) % 2000 AS aux \
               FROM h JOIN bench_pick p ON p.bucket = h.h1 % {BUCKETS}), \
         f AS (SELECT n, h1, h2, h3, pidx, partner_id, t, r, aux, \
                  (CASE WHEN r < 200 THEN 4 WHEN lms = 1 AND r < 8700 THEN 2 WHEN lms = 1 THEN 3 \
                        WHEN r < 4200 THEN 0 ELSE 1 END) AS ty, \
                  (CASE WHEN r < 200 THEN 10000000 + aux ELSE h3 % pool END) AS kk, \
                  1000 + h3 % 199001 AS cents \
               FROM e) \
         SELECT partner_id, \
             (CASE ty WHEN 0 THEN '/gateway/smart' WHEN 1 THEN '/gateway/fhir' \
                      WHEN 4 THEN '/billing' ELSE '/gateway/lti' END), \
             {event_id}, \
             (CASE ty WHEN 0 THEN 'smart.launch' WHEN 1 THEN 'fhir.request' WHEN 2 THEN 'lti.launch' \
                      WHEN 3 THEN 'lti.grade_posted' ELSE 'revenue.recognized' END), \
             {subject}, t, {data}, NULL, \
             (CASE WHEN t >= {oct1} AND (h2 / 60001) % 2000 = 0 \
                   THEN {late} + (h1 % 518400) * 1000000 \
                   ELSE t + 2000000 + (h3 % 1000) * 1000 END), \
             FALSE, 'gateway', NULL, 1 \
         FROM f",
        with = d.with(),
        series = d.series(lo, hi),
    )
}

/// The partners' buckets, in a temporary table of the fill's connection.
fn pick_sql(d: Dialect, partners: &[Partner]) -> Vec<String> {
    let mut out = vec![if d.pg {
        "CREATE TEMP TABLE bench_pick (bucket BIGINT PRIMARY KEY, pidx BIGINT NOT NULL, \
         partner_id TEXT NOT NULL, lms INTEGER NOT NULL, pool BIGINT NOT NULL)"
            .to_owned()
    } else {
        "CREATE TEMP TABLE bench_pick (bucket INTEGER PRIMARY KEY, pidx INTEGER NOT NULL, \
         partner_id TEXT NOT NULL, lms INTEGER NOT NULL, pool INTEGER NOT NULL)"
            .to_owned()
    }];
    for (i, p) in partners.iter().enumerate() {
        let (lo, hi) = p.buckets;
        out.push(format!(
            "INSERT INTO bench_pick (bucket, pidx, partner_id, lms, pool) {} {} \
             SELECT n, {i}, '{}', {}, {} FROM s",
            d.with(),
            d.series(lo, hi),
            p.id,
            u8::from(p.lms),
            p.pool
        ));
    }
    if d.pg {
        out.push("ANALYZE bench_pick".to_owned());
    }
    out
}

struct Fill {
    secs: f64,
    maintenance_secs: f64,
    maintenance: &'static str,
}

/// Fill the ledger, on one connection of the gateway's pool.
async fn fill(db: &Db, partners: &[Partner], o: &Opts) -> anyhow::Result<Fill> {
    let step = (o.events / 10).max(1);
    let t0 = Instant::now();
    let cpu = CpuSample::now();
    let progress = |done: u64| {
        eprintln!(
            "  filled {done}/{} ({:.0} events/s so far)",
            o.events,
            done as f64 / t0.elapsed().as_secs_f64()
        );
    };
    let maintenance = match db {
        Db::Sqlite(pool) => {
            let d = Dialect { pg: false };
            let mut c = pool.acquire().await?;
            let cache: i64 = sqlx::query_scalar("PRAGMA cache_size")
                .fetch_one(&mut *c)
                .await?;
            // A 1 GiB page cache for the fill's connection (the indexes' hot pages), put back
            // after.
            sqlx::query("PRAGMA cache_size = -1048576")
                .execute(&mut *c)
                .await?;
            for s in pick_sql(d, partners) {
                sqlx::query(&s).execute(&mut *c).await?;
            }
            let mut lo = 0;
            while lo < o.events {
                let hi = (lo + o.batch).min(o.events);
                sqlx::query(&fill_sql(d, lo, hi, o.events))
                    .execute(&mut *c)
                    .await
                    .with_context(|| format!("filling rows {lo}..{hi}"))?;
                if hi / step != lo / step {
                    progress(hi);
                }
                lo = hi;
            }
            sqlx::query("DROP TABLE bench_pick")
                .execute(&mut *c)
                .await?;
            sqlx::query(&format!("PRAGMA cache_size = {cache}"))
                .execute(&mut *c)
                .await?;
            "PRAGMA wal_checkpoint(TRUNCATE)"
        }
        Db::Postgres(pool) => {
            let d = Dialect { pg: true };
            let mut c = pool.acquire().await?;
            for s in pick_sql(d, partners) {
                sqlx::query(&s).execute(&mut *c).await?;
            }
            let mut lo = 0;
            while lo < o.events {
                let hi = (lo + o.batch).min(o.events);
                sqlx::query(&fill_sql(d, lo, hi, o.events))
                    .execute(&mut *c)
                    .await
                    .with_context(|| format!("filling rows {lo}..{hi}"))?;
                if hi / step != lo / step {
                    progress(hi);
                }
                lo = hi;
            }
            sqlx::query("DROP TABLE bench_pick")
                .execute(&mut *c)
                .await?;
            "VACUUM (ANALYZE) usage_events; CHECKPOINT"
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "  fill: {} events in {secs:.1} s = {:.0} events/s (statements of {} rows) {}",
        o.events,
        o.events as f64 / secs,
        o.batch,
        cpu_note(&cpu)
    );
    // What a running system has done by the time a month-end is looked at: SQLite's WAL
    // written back; PostgreSQL's autovacuum (visibility map, statistics) after the bulk insert.
    let t1 = Instant::now();
    let mut took = Vec::new();
    for s in maintenance.split("; ") {
        let t = Instant::now();
        exec(db, s).await?;
        took.push(format!("{s} {:.1} s", t.elapsed().as_secs_f64()));
    }
    let maintenance_secs = t1.elapsed().as_secs_f64();
    println!("  after the fill: {}", took.join(", "));
    Ok(Fill {
        secs,
        maintenance_secs,
        maintenance,
    })
}

/// What the fill gave, checked against the plan: the total, and the biggest partner's count
/// within 1% of its share.
async fn check_fill(db: &Db, partners: &[Partner], o: &Opts) -> anyhow::Result<()> {
    let n = scalar_i64(db, "SELECT COUNT(*) FROM usage_events").await?;
    ensure!(
        n as u64 == o.events,
        "usage_events holds {n} events, expected {}",
        o.events
    );
    let big = &partners[0];
    let got = scalar_i64(
        db,
        &format!(
            "SELECT COUNT(*) FROM usage_events WHERE partner_id = '{}'",
            big.id
        ),
    )
    .await?;
    let want = big.expected(o.events) as f64;
    ensure!(
        (got as f64 - want).abs() <= want * 0.01 + 10.0,
        "{} has {got} events, expected about {want:.0}",
        big.id
    );
    let subjects = scalar_i64(
        db,
        &format!(
            "SELECT COUNT(DISTINCT subject) FROM usage_events WHERE partner_id = '{}' \
             AND type = 'lti.launch'",
            big.id
        ),
    )
    .await?;
    println!(
        "  ledger: {n} events; the biggest partner {} has {got} ({:.1}%), {subjects} distinct learners",
        big.id,
        got as f64 * 100.0 / n as f64
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The statements.

struct Setup {
    september_secs: f64,
    october_secs: f64,
}

/// September computed and finalized (as of 2 October), October's drafts computed (as of 3
/// November), each only when the store does not hold them yet.
async fn statements(state: &AppState, partners: &[Partner]) -> anyhow::Result<Option<Setup>> {
    let n = partners.len() as i64;
    let count = |period: &str, status: &str| {
        format!("SELECT COUNT(*) FROM statements WHERE period = '{period}' AND status = '{status}'")
    };
    let finalized = scalar_i64(&state.db, &count(PREVIOUS, "finalized")).await?;
    let drafts = scalar_i64(&state.db, &count(PERIOD, "draft")).await?;
    if finalized == n && drafts == n {
        return Ok(None);
    }
    ensure!(
        finalized == 0 && drafts == 0,
        "the store holds {finalized} finalized {PREVIOUS} and {drafts} {PERIOD} drafts, \
         not 0 or {n}: use a fresh one"
    );
    // The steady state: a ledger that has kept provenance since before these months (the
    // statements count the gateway's own types from the covering index).
    exec(
        &state.db,
        "UPDATE ledger_provenance SET since_us = 1767225600000000",
    )
    .await?;
    let svc = state.statements();
    let who = Who::cli();
    let t = Instant::now();
    let now = september_now();
    for item in svc.run(PREVIOUS, now, &who, |_, _| {}).await {
        let st = item
            .outcome
            .map_err(|e| anyhow::anyhow!("{PREVIOUS} statement of {}: {e}", item.partner))?;
        if st.status == Status::Draft {
            svc.finalize(&st.id, "bench", now, &who).await?;
        }
    }
    let september_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for item in svc.run(PERIOD, october_now(), &who, |_, _| {}).await {
        if let Err(e) = item.outcome {
            bail!("{PERIOD} statement of {}: {e}", item.partner);
        }
    }
    let october_secs = t.elapsed().as_secs_f64();
    let finalized = scalar_i64(&state.db, &count(PREVIOUS, "finalized")).await?;
    let drafts = scalar_i64(&state.db, &count(PERIOD, "draft")).await?;
    ensure!(
        finalized == n && drafts == n,
        "after the setup: {finalized} finalized {PREVIOUS}, {drafts} {PERIOD} drafts, expected {n} each"
    );
    println!(
        "  statements: {PREVIOUS} computed and finalized in {september_secs:.1} s, \
         {PERIOD} drafts in {october_secs:.1} s"
    );
    Ok(Some(Setup {
        september_secs,
        october_secs,
    }))
}

/// How the month-end reads count the events after a statement's cut-off.
#[derive(Clone, Copy)]
enum Count {
    /// As the page does (`console::finance::count_after_cut_off`, migration 0024).
    Page,
    /// As it did before: `statements::store::count_arrived_after`, which reads everything
    /// the partner sent since the cut-off.
    Before,
}

/// The month-end page's reads, as `console::finance::month_rows` makes them, called directly:
/// the period's statements, the previous period's, and a count of late events per live
/// statement. Returns that count summed.
async fn month_end_reads(state: &AppState, period: &str, count: Count) -> anyhow::Result<i64> {
    let svc = state.statements();
    let all = |period: &str| ListFilter {
        partner: None,
        period: Some(period.to_owned()),
        statuses: Vec::new(),
        agreement: None,
    };
    let this = st_store::list_statements(&state.db, &all(period), None, 10_000).await?;
    let mut previous_label = None;
    let mut late = 0;
    for (partner, agreement) in svc.covering(period) {
        if previous_label.is_none() {
            let label = svc
                .previous_label(&agreement, period)
                .context("no previous period")?;
            st_store::list_statements(&state.db, &all(&label), None, 10_000).await?;
            previous_label = Some(label);
        }
        let Some(st) = this
            .iter()
            .find(|s| s.document.agreement_id == agreement && s.status != Status::Void)
        else {
            continue;
        };
        let span = Span {
            partner_id: &partner,
            start: st.document.period_start,
            end: st.document.period_end,
            as_of: st.document.ledger_as_of,
            exclude_self_reported: false,
        };
        late += match count {
            Count::Page => count_after_cut_off(&state.db, span).await?,
            Count::Before => st_store::count_arrived_after(&state.db, span).await?,
        };
    }
    Ok(late)
}

// ---------------------------------------------------------------------------------------
// The requests.

fn cpu_note(cpu: &CpuSample) -> String {
    cpu.since().map_or_else(String::new, |c| {
        format!("[cpu busy {:.0}%, steal {:.1}%]", c.busy(), c.steal())
    })
}

/// The value of hidden input `name` in a page.
fn hidden(html: &str, name: &str) -> anyhow::Result<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .with_context(|| format!("no {name} field in {}", snippet(html)))?
        + marker.len();
    let end = html[start..].find('"').context("unterminated value")? + start;
    Ok(html[start..end].to_owned())
}

/// A browser signed in as finance: a break-glass sign-in link (as `console link` makes
/// one), opened and redeemed over HTTP, leaving the session cookie in the client.
async fn sign_in(state: &AppState, gateway: &str) -> anyhow::Result<reqwest::Client> {
    let link = create_link(
        &state.db,
        &state.config.console,
        LinkKind::BreakGlass,
        ConsoleRole::Finance,
        None,
        None,
        &Who::cli(),
        Utc::now(),
    )
    .await?;
    let b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()?;
    let r = b
        .get(format!("{gateway}/console/redeem?token={}", link.token))
        .send()
        .await?;
    let page = answer_text(r, |s| s.is_success(), "GET /console/redeem").await?;
    let pre = hidden(&page, "pre")?;
    let r = b
        .post(format!("{gateway}/console/redeem"))
        .form(&[("token", link.token.as_str()), ("pre", pre.as_str())])
        .send()
        .await?;
    let text = answer_text(r, |s| s.is_redirection(), "POST /console/redeem").await?;
    drop(text);
    Ok(b)
}

#[derive(Clone, Copy)]
enum Check {
    Health,
    /// The month-end page of a period, one row per partner, each of this status.
    MonthEnd(&'static str, &'static str, usize),
    /// A chart page: the SVG and one table row per day.
    Chart,
    /// The chart's CSV: a header and one line per day, `series` values each.
    Csv(usize),
    /// The JSON usage report: one bucket per day.
    Json,
}

fn check(c: Check, body: &str) -> anyhow::Result<()> {
    match c {
        Check::Health => Ok(()),
        Check::MonthEnd(period, status, n) => {
            let rows = body.matches(&format!("\"status status-{status}\"")).count();
            ensure!(
                body.contains(&format!("Month-end {period}")) && rows == n,
                "the month-end page of {period} shows {rows} {status} statements, expected {n}: {}",
                snippet(body)
            );
            Ok(())
        }
        Check::Chart => {
            let rows = body.matches("<th scope=\"row\">").count();
            ensure!(
                body.contains("<svg") && rows == CHART_DAYS,
                "the chart page has {rows} rows, expected {CHART_DAYS}: {}",
                snippet(body)
            );
            Ok(())
        }
        Check::Csv(series) => {
            let lines: Vec<&str> = body.lines().collect();
            ensure!(
                lines.len() == CHART_DAYS + 1
                    && lines[1..]
                        .iter()
                        .all(|l| l.split(',').count() == series + 1),
                "the CSV has {} lines, expected {}: {}",
                lines.len(),
                CHART_DAYS + 1,
                snippet(body)
            );
            Ok(())
        }
        Check::Json => {
            let v: Value = serde_json::from_str(body).context("the usage report is not JSON")?;
            let n = v["data"].as_array().map_or(0, Vec::len);
            ensure!(
                n == CHART_DAYS,
                "the usage report has {n} buckets, expected {CHART_DAYS}"
            );
            Ok(())
        }
    }
}

type Job<'a> = Box<dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>> + 'a>;

/// One thing timed: its label, what it is compared with, and the work.
struct Probe<'a> {
    label: String,
    /// Index of the probe it is set against (its baseline), if any.
    against: Vec<usize>,
    job: Job<'a>,
    times: Timings,
    /// At most this many timed rounds (after the 2 warm-ups).
    limit: usize,
}

/// Add a probe; its index.
fn push<'a>(
    probes: &mut Vec<Probe<'a>>,
    label: String,
    against: Vec<usize>,
    job: Job<'a>,
) -> usize {
    probes.push(Probe {
        label,
        against,
        job,
        times: Timings::default(),
        limit: usize::MAX,
    });
    probes.len() - 1
}

/// GET each of `urls` in turn (the bearer key when given), each answer checked.
fn get_job<'a>(
    client: &'a reqwest::Client,
    urls: Vec<String>,
    bearer: Option<&'a str>,
    c: Check,
) -> Job<'a> {
    Box::new(move || {
        let urls = urls.clone();
        Box::pin(async move {
            for url in &urls {
                let mut req = client.get(url);
                if let Some(k) = bearer {
                    req = req.bearer_auth(k);
                }
                let r = req.send().await.with_context(|| format!("GET {url}"))?;
                let body = answer_text(r, |s| s.is_success(), url).await?;
                check(c, &body).with_context(|| format!("GET {url}"))?;
            }
            Ok(())
        })
    })
}

fn chart_url(gateway: &str, partners: &[&Partner], meter: &str, csv: bool) -> String {
    let mut u = url::Url::parse(&format!("{gateway}/console/usage")).unwrap();
    {
        let mut q = u.query_pairs_mut();
        for p in partners {
            q.append_pair("partner", &p.id);
        }
        q.append_pair("meter", meter)
            .append_pair("window", "day")
            .append_pair("from", CHART_FROM)
            .append_pair("to", CHART_TO);
        if csv {
            q.append_pair("format", "csv");
        }
    }
    u.to_string()
}

/// The JSON report of the same windows as the chart: days in `tz` (the chart's zone is its
/// first partner's agreement's).
fn json_url(gateway: &str, partner: &Partner, meter: &str, tz: Tz) -> String {
    let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    let from = local_midnight(day(CHART_FROM), tz);
    let to = local_midnight(day(CHART_TO) + chrono::Duration::days(1), tz);
    let mut u = url::Url::parse(&format!("{gateway}/v1/usage/query")).unwrap();
    u.query_pairs_mut()
        .append_pair("meter", meter)
        .append_pair("partner", &partner.id)
        .append_pair("window", "day")
        .append_pair("from", &from.to_rfc3339_opts(SecondsFormat::Secs, true))
        .append_pair("to", &to.to_rfc3339_opts(SecondsFormat::Secs, true))
        .append_pair("tz", tz.name());
    u.to_string()
}

/// The chart's numbers are the API's: the CSV of the biggest partner's chart against the
/// JSON report, day by day (once, before the timing).
async fn check_same_numbers(
    client: &reqwest::Client,
    gateway: &str,
    key: &str,
    p: &Partner,
) -> anyhow::Result<u64> {
    let tz: Tz = p.tz.parse().unwrap();
    let csv = client
        .get(chart_url(gateway, &[p], METER, true))
        .send()
        .await?
        .text()
        .await?;
    let json: Value = client
        .get(json_url(gateway, p, METER, tz))
        .bearer_auth(key)
        .send()
        .await?
        .json()
        .await?;
    let api: Vec<String> = json["data"]
        .as_array()
        .context("no data in the usage report")?
        .iter()
        .map(|b| b["value"].to_string())
        .collect();
    let chart: Vec<String> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap_or("").to_owned())
        .collect();
    ensure!(
        api == chart,
        "the chart's CSV and the API differ for {}:\n{chart:?}\n{api:?}",
        p.id
    );
    Ok(api.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
}

// ---------------------------------------------------------------------------------------
// Per backend.

struct Row {
    label: String,
    median: f64,
    p95: f64,
    min: f64,
    max: f64,
    /// (baseline label, ratio of medians)
    ratios: Vec<(String, f64)>,
    /// A page (not a baseline): held to the target.
    page: bool,
}

struct Report {
    backend: Backend,
    fill: Option<Fill>,
    setup: Option<Setup>,
    rows: Vec<Row>,
    storage: String,
    /// Events after the cut-off of October's drafts and of September's statements.
    late: (i64, i64),
}

async fn storage_note(db: &Db, sqlite_file: Option<&Path>) -> String {
    match db {
        Db::Sqlite(_) => format!(
            "database file {:.2} GiB",
            sqlite_size(sqlite_file) as f64 / 1073741824.0
        ),
        Db::Postgres(p) => {
            let sizes: Result<(i64, i64), _> = sqlx::query_as(
                "SELECT pg_total_relation_size('usage_events'), pg_relation_size('usage_events')",
            )
            .fetch_one(p)
            .await;
            match sizes {
                Ok((all, table)) => format!(
                    "usage_events {:.2} GiB with its indexes ({:.2} GiB table)",
                    all as f64 / 1073741824.0,
                    table as f64 / 1073741824.0
                ),
                Err(e) => format!("sizes unavailable: {e}"),
            }
        }
    }
}

async fn bench_backend(
    o: &Opts,
    partners: &[Partner],
    backend: Backend,
    db_url: &str,
    sqlite_file: Option<&Path>,
) -> anyhow::Result<Report> {
    let (listener, gateway) = server::bind().await?;
    let state = open_state(partners, db_url, &gateway).await?;
    let result = async {
        exec(
            &state.db,
            "CREATE TABLE IF NOT EXISTS bench_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
        )
        .await?;
        let key = ledger_key(o);
        let fill_report = match loaded_key(&state.db).await {
            Some(k) if k == key => {
                println!("  reusing the ledger already filled ({k})");
                None
            }
            Some(k) => bail!("the store holds another ledger ({k}); use a fresh one"),
            None => {
                let n = scalar_i64(&state.db, "SELECT COUNT(*) FROM usage_events").await?;
                ensure!(
                    n == 0,
                    "the store already holds {n} events but no bench ledger"
                );
                let f = fill(&state.db, partners, o).await?;
                exec(
                    &state.db,
                    &format!("INSERT INTO bench_meta (k, v) VALUES ('{META_KEY}', '{key}')"),
                )
                .await?;
                Some(f)
            }
        };
        check_fill(&state.db, partners, o).await?;
        let setup = statements(&state, partners).await?;

        let serving = Serving::spawn(&state, listener);
        let timed = async {
            let plain = reqwest::Client::new();
            server::wait_healthy(&plain, &gateway).await?;
            let browser = sign_in(&state, &gateway).await?;
            let key = server::api_key(&state, KeyRole::Finance).await?;
            let learners = check_same_numbers(&browser, &gateway, &key, &partners[0]).await?;
            println!(
                "  the chart's CSV equals the API's numbers for {} ({learners} user-days in 90 days)",
                partners[0].id
            );
            let late = month_end_reads(&state, PERIOD, Count::Page).await?;
            let late_previous = month_end_reads(&state, PREVIOUS, Count::Page).await?;
            for (period, page) in [(PERIOD, late), (PREVIOUS, late_previous)] {
                let before = month_end_reads(&state, period, Count::Before).await?;
                ensure!(
                    page == before,
                    "{period}: the page counts {page} events after the cut-offs, \
                     count_arrived_after {before}"
                );
            }
            println!(
                "  events after the cut-offs, the same counted both ways: {late} ({PERIOD}), \
                 {late_previous} ({PREVIOUS})"
            );
            let big = &partners[0];
            let mid = &partners[partners.len() / 2];
            let eight: Vec<&Partner> = partners.iter().take(8).collect();
            let tz = |p: &Partner| -> Tz { p.tz.parse().unwrap() };
            let n = partners.len();
            let mut probes: Vec<Probe<'_>> = Vec::new();
            let health = push(
                &mut probes,
                "GET /healthz".into(),
                vec![],
                get_job(&plain, vec![format!("{gateway}/healthz")], None, Check::Health),
            );
            // Each month-end page beside its own reads called directly (on a worker thread
            // of the runtime, as the gateway's handlers run): October's drafts, cut off on
            // 3 November, and September's finalized statements, cut off on 2 October (a
            // month of later arrivals to look through for late ones).
            let shared = &state;
            let reads_job = move |period: &'static str, count: Count| -> Job<'_> {
                Box::new(move || {
                    let state = shared.clone();
                    Box::pin(async move {
                        tokio::spawn(async move { month_end_reads(&state, period, count).await })
                            .await??;
                        Ok(())
                    })
                })
            };
            for (period, status, note) in [
                (PERIOD, "draft", "drafts"),
                (PREVIOUS, "finalized", "finalized, cut off a month back"),
            ] {
                let reads = push(
                    &mut probes,
                    format!("month-end {period}: its reads called directly (no HTTP, no HTML)"),
                    vec![],
                    reads_job(period, Count::Page),
                );
                push(
                    &mut probes,
                    format!("GET /console/finance?period={period} ({n} rows, {note})"),
                    vec![health, reads],
                    get_job(
                        &browser,
                        vec![format!("{gateway}/console/finance?period={period}")],
                        None,
                        Check::MonthEnd(period, status, n),
                    ),
                );
                let before = push(
                    &mut probes,
                    format!(
                        "month-end {period}: the same reads counting late events as before \
                         0024 (count_arrived_after)"
                    ),
                    vec![],
                    reads_job(period, Count::Before),
                );
                probes[before].limit = o.before_runs;
            }
            let json_big = push(
                &mut probes,
                format!("JSON /v1/usage/query, {} (biggest), {METER}", big.id),
                vec![],
                get_job(
                    &plain,
                    vec![json_url(&gateway, big, METER, tz(big))],
                    Some(&key),
                    Check::Json,
                ),
            );
            push(
                &mut probes,
                format!("chart, 1 partner: {} (biggest), {METER}", big.id),
                vec![json_big],
                get_job(
                    &browser,
                    vec![chart_url(&gateway, &[big], METER, false)],
                    None,
                    Check::Chart,
                ),
            );
            push(
                &mut probes,
                format!("chart CSV, 1 partner: {} (biggest)", big.id),
                vec![json_big],
                get_job(
                    &browser,
                    vec![chart_url(&gateway, &[big], METER, true)],
                    None,
                    Check::Csv(1),
                ),
            );
            let json_count = push(
                &mut probes,
                format!("JSON /v1/usage/query, {} (biggest), {COUNT_METER} (COUNT)", big.id),
                vec![],
                get_job(
                    &plain,
                    vec![json_url(&gateway, big, COUNT_METER, tz(big))],
                    Some(&key),
                    Check::Json,
                ),
            );
            push(
                &mut probes,
                format!("chart, 1 partner: {} (biggest), {COUNT_METER} (COUNT)", big.id),
                vec![json_count],
                get_job(
                    &browser,
                    vec![chart_url(&gateway, &[big], COUNT_METER, false)],
                    None,
                    Check::Chart,
                ),
            );
            let json_mid = push(
                &mut probes,
                format!("JSON /v1/usage/query, {} (median size)", mid.id),
                vec![],
                get_job(
                    &plain,
                    vec![json_url(&gateway, mid, METER, tz(mid))],
                    Some(&key),
                    Check::Json,
                ),
            );
            push(
                &mut probes,
                format!("chart, 1 partner: {} (median size)", mid.id),
                vec![json_mid],
                get_job(
                    &browser,
                    vec![chart_url(&gateway, &[mid], METER, false)],
                    None,
                    Check::Chart,
                ),
            );
            let json_eight = push(
                &mut probes,
                "JSON /v1/usage/query x 8, the 8 biggest one after another".into(),
                vec![],
                get_job(
                    &plain,
                    eight
                        .iter()
                        .map(|p| json_url(&gateway, p, METER, tz(big)))
                        .collect(),
                    Some(&key),
                    Check::Json,
                ),
            );
            push(
                &mut probes,
                "chart, 8 partners: the 8 biggest".into(),
                vec![json_eight],
                get_job(
                    &browser,
                    vec![chart_url(&gateway, &eight, METER, false)],
                    None,
                    Check::Chart,
                ),
            );
            println!(
                "  timing {} rounds after 2 warm-up rounds; each round runs every probe once, in this order:",
                o.runs
            );
            for p in &probes {
                println!("    - {}", p.label);
            }
            let cpu = CpuSample::now();
            for round in 0..o.runs + 2 {
                for p in &mut probes {
                    if round >= p.limit.saturating_add(2) {
                        continue;
                    }
                    let t = Instant::now();
                    (p.job)()
                        .await
                        .with_context(|| format!("{} (round {})", p.label, round + 1))?;
                    if round >= 2 {
                        p.times.0.push(t.elapsed());
                    }
                }
            }
            println!("  timed rounds done {}", cpu_note(&cpu));
            let rows: Vec<Row> = probes
                .iter()
                .map(|p| Row {
                    label: p.label.clone(),
                    median: ms(p.times.median()),
                    p95: ms(p.times.p(0.95)),
                    min: ms(p.times.min()),
                    max: ms(p.times.max()),
                    ratios: p
                        .against
                        .iter()
                        .map(|&i| {
                            (
                                probes[i].label.clone(),
                                ms(p.times.median()) / ms(probes[i].times.median()).max(1e-6),
                            )
                        })
                        .collect(),
                    page: !p.against.is_empty(),
                })
                .collect();
            // Before the gateway stops: stopping closes the pool.
            let storage = storage_note(&state.db, sqlite_file).await;
            anyhow::Ok((rows, (late, late_previous), storage))
        }
        .await;
        serving.stop().await;
        let (rows, late, storage) = timed?;
        print_rows(&rows);
        println!("  {storage}");
        Ok::<_, anyhow::Error>(Report {
            backend,
            fill: fill_report,
            setup,
            rows,
            storage,
            late,
        })
    }
    .await;
    state.db.close().await;
    result
}

fn print_rows(rows: &[Row]) {
    println!();
    println!("| request | median | p95 | min | max | against (ratio of medians) |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    for r in rows {
        let against = r
            .ratios
            .iter()
            .map(|(l, x)| format!("{x:.2}x {l}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mark = if r.page && r.median >= TARGET_MS {
            " **over 300 ms**"
        } else {
            ""
        };
        println!(
            "| {}{mark} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            r.label,
            r.median,
            r.p95,
            r.min,
            r.max,
            if against.is_empty() {
                "(baseline)".to_owned()
            } else {
                against
            }
        );
    }
    println!();
}

async fn bench_sqlite(o: &Opts, partners: &[Partner]) -> anyhow::Result<Report> {
    let dir = tempfile::Builder::new()
        .prefix("pgw-bench-console-")
        .tempdir_in(
            std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from),
        )?;
    let file = o
        .sqlite_file
        .clone()
        .unwrap_or_else(|| dir.path().join("bench.db"));
    let url = format!("sqlite://{}", file.display());
    println!("== SQLite ({url})");
    bench_backend(o, partners, Backend::Sqlite, &url, Some(&file)).await
}

async fn bench_postgres(o: &Opts, partners: &[Partner]) -> anyhow::Result<Report> {
    let pg = match &o.postgres_db {
        Some(n) => PgDatabase::create_or_reuse(&o.pg_url, n.clone()).await?,
        None => PgDatabase::create(&o.pg_url, "pgw_bench_console_").await?,
    };
    println!(
        "== PostgreSQL ({})",
        partner_gateway::db::redact_url(&pg.url)
    );
    let result = bench_backend(o, partners, Backend::Postgres, &pg.url, None).await;
    pg.finish(o.postgres_db.is_some()).await;
    result
}

fn summary(o: &Opts, partners: &[Partner], reports: &[Report]) {
    println!();
    println!(
        "## Summary: console pages over {} events, {} partners ({} LMS, {} EHR), {} timed rounds",
        o.events,
        o.partners,
        partners.iter().filter(|p| p.lms).count(),
        partners.iter().filter(|p| !p.lms).count(),
        o.runs
    );
    for line in support::facts::machine_facts() {
        println!("- {line}");
    }
    println!("- command: `{}`", support::facts::command_line("console"));
    println!();
    println!("| backend | page | median | p95 | against (ratio of medians) | < 300 ms |");
    println!("| --- | --- | ---: | ---: | --- | --- |");
    for r in reports {
        for row in r.rows.iter().filter(|row| row.page) {
            let against = row
                .ratios
                .iter()
                .map(|(l, x)| format!("{x:.2}x {l}"))
                .collect::<Vec<_>>()
                .join("; ");
            println!(
                "| {} | {} | {:.1} ms | {:.1} ms | {against} | {} |",
                r.backend.title(),
                row.label,
                row.median,
                row.p95,
                if row.median < TARGET_MS { "yes" } else { "NO" }
            );
        }
    }
    println!();
    for r in reports {
        let fill = r.fill.as_ref().map_or_else(
            || "reused".to_owned(),
            |f| {
                format!(
                    "{:.0} s = {:.0} events/s (+ {:.1} s {})",
                    f.secs,
                    o.events as f64 / f.secs,
                    f.maintenance_secs,
                    f.maintenance
                )
            },
        );
        let setup = r.setup.as_ref().map_or_else(
            || "reused".to_owned(),
            |s| {
                format!(
                    "{PREVIOUS} computed and finalized {:.0} s, {PERIOD} drafts {:.0} s",
                    s.september_secs, s.october_secs
                )
            },
        );
        println!(
            "- {}: fill {fill}; statements {setup}; {}; events after the cut-off: {} of {PERIOD}'s \
             drafts, {} of {PREVIOUS}'s statements",
            r.backend.title(),
            r.storage,
            r.late.0,
            r.late.1
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    let partners = plan(&o);
    println!(
        "console bench: {} events over {} partners, dated {} to {} (UTC), {} timed rounds",
        o.events,
        o.partners,
        ledger_start().date_naive(),
        (ledger_end() - chrono::Duration::days(1)).date_naive(),
        o.runs
    );
    let shares: HashMap<&str, f64> = partners
        .iter()
        .map(|p| {
            (
                p.id.as_str(),
                (p.buckets.1 - p.buckets.0) as f64 * 100.0 / BUCKETS as f64,
            )
        })
        .collect();
    println!(
        "  volumes Zipf (1/rank): the biggest, {}, about {:.1}% of the events; the 8 biggest {:.1}%; \
         the median one, {}, {:.2}%",
        partners[0].id,
        shares[partners[0].id.as_str()],
        partners
            .iter()
            .take(8)
            .map(|p| shares[p.id.as_str()])
            .sum::<f64>(),
        partners[partners.len() / 2].id,
        shares[partners[partners.len() / 2].id.as_str()],
    );
    let cpu = CpuSample::now();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    println!(
        "  the machine before the start, over 2 s: {}",
        cpu_note(&cpu)
    );
    let (o, partners) = (&o, &partners);
    let (reports, failed) = each_backend(
        &o.backends,
        Backend::title,
        |backend| async move {
            match backend {
                Backend::Sqlite => bench_sqlite(o, partners).await,
                Backend::Postgres => bench_postgres(o, partners).await,
            }
        },
        // A page over the target is a finding (the tables say NO), not a failed bench.
        |_| false,
    )
    .await;
    summary(o, partners, &reports);
    fail_if_any(
        &failed,
        " (a page over 300 ms at the median, or an error above)",
    )
}
