//! Ledger benchmark: ingest through the code path the HTTP API uses, against a plain
//! multi-row INSERT baseline measured in the same run, then the `active_users` day query
//! against a bare `COUNT(*)` over the same rows. SQLite and PostgreSQL.
//!
//! ```sh
//! export CARGO_TARGET_DIR=/work/target-bench   # any target dir
//! cargo bench --bench ledger                    # 1,000,000 events, both backends
//! cargo bench --bench ledger -- --events 100000 --backend sqlite
//! ```
//!
//! PostgreSQL: `BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! is used only to create a fresh database `pgw_bench_<random>`, which is dropped at the end.
//! SQLite: a file in a temporary directory. See `docs/PERFORMANCE.md` for the method.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use partner_gateway::config::{Config, Layer};
use partner_gateway::db::Db;
use partner_gateway::metering::Meter;
use partner_gateway::metering::authority::Recorder;
use partner_gateway::metering::ingest::{Attribution, Writer, ingest_batch, prepare_batch};
use partner_gateway::metering::store::query_meter;
use partner_gateway::metering::window::{Window, WindowSize, windows};
use partner_gateway::state::AppState;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::args::{Args, pg_url_or_default};
use support::cpu::CpuSample;
use support::db::{Backend, PgDatabase, each_backend, fail_if_any, sqlite_size};
use support::stats::{Timings, ms, percentile};

const PARTNER: &str = "epic-sandbox";
const METER: &str = "active_users";
const TYPES: [&str; 4] = ["smart.launch", "lti.launch", "sso.login", "fhir.request"];
const SOURCES: [&str; 4] = [
    "/gateway/smart",
    "/gateway/lti",
    "/gateway/sso",
    "/gateway/fhir",
];
/// The month the events are spread over (it holds the New York fall-back day, 1 November).
const YEAR: i32 = 2026;
const MONTH: u32 = 11;
const HOUR_MS: i64 = 3_600_000;
/// Columns of a baseline row.
const COLS: usize = 7;

const USAGE: &str = "usage: cargo bench --bench ledger -- [--events N] [--batch N] \
[--backend sqlite|postgres|both] [--users N] [--query-runs N] [--seed N] [--config DIR] \
[--sqlite-file PATH (kept after the run, for inspection)] \
[--query-only (with an existing --sqlite-file of the same --events and --seed)] \
[--keep-postgres (do not drop the pgw_bench_* database)]";

struct Opts {
    events: usize,
    batch: usize,
    backends: Vec<Backend>,
    users: u32,
    query_runs: usize,
    seed: u64,
    config_dir: PathBuf,
    pg_url: String,
    sqlite_file: Option<PathBuf>,
    query_only: bool,
    keep_postgres: bool,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        events: 1_000_000,
        batch: 1000,
        backends: Backend::BOTH.to_vec(),
        users: 20_000,
        query_runs: 5,
        seed: 20261101,
        config_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        pg_url: pg_url_or_default(),
        sqlite_file: None,
        query_only: false,
        keep_postgres: false,
    };
    let mut args = Args::new(USAGE);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => o.events = args.num(&a)?,
            "--batch" => o.batch = args.num(&a)?,
            "--users" => o.users = args.num(&a)?,
            "--query-runs" => o.query_runs = args.num(&a)?,
            "--seed" => o.seed = args.num(&a)?,
            "--config" => o.config_dir = args.value()?.into(),
            "--sqlite-file" => o.sqlite_file = Some(args.value()?.into()),
            "--query-only" => o.query_only = true,
            "--keep-postgres" => o.keep_postgres = true,
            "--backend" => o.backends = args.backends()?,
            other => args.other(other)?,
        }
    }
    if o.query_only && (o.sqlite_file.is_none() || o.backends != [Backend::Sqlite]) {
        bail!("--query-only needs --backend sqlite and an existing --sqlite-file");
    }
    if o.events == 0 || o.users == 0 || o.query_runs == 0 {
        bail!("--events, --users and --query-runs must be at least 1");
    }
    if o.batch == 0 || o.batch > partner_gateway::metering::MAX_BATCH {
        bail!(
            "--batch must be 1..={} (the ingest limit)",
            partner_gateway::metering::MAX_BATCH
        );
    }
    Ok(o)
}

/// One generated event, compact; its strings are made per batch, outside the timed part.
#[derive(Clone, Copy)]
struct Gen {
    id: u128,
    kind: usize,
    subject: u32,
    time_ms: i64,
    context: u16,
}

impl Gen {
    fn id(&self) -> String {
        format!("{:032x}", self.id)
    }
    fn subject(&self) -> String {
        format!("user-{:05}", self.subject)
    }
    fn time(&self) -> String {
        DateTime::from_timestamp_millis(self.time_ms)
            .unwrap()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
    fn time_us(&self) -> i64 {
        self.time_ms * 1000
    }
    fn context(&self) -> String {
        format!("c{}", self.context)
    }
    /// The event as a client sends it.
    fn cloud_event(&self) -> Value {
        json!({
            "specversion": "1.0",
            "id": self.id(),
            "source": SOURCES[self.kind],
            "type": TYPES[self.kind],
            "subject": self.subject(),
            "time": self.time(),
            "data": {"context_id": self.context()},
        })
    }
    /// The same event as a baseline row: (source, event_id, type, subject, time_us, data).
    fn row(&self) -> Row {
        Row {
            source: SOURCES[self.kind],
            event_id: self.id(),
            event_type: TYPES[self.kind],
            subject: self.subject(),
            time_us: self.time_us(),
            data: json!({"context_id": self.context()}).to_string(),
        }
    }
}

struct Row {
    source: &'static str,
    event_id: String,
    event_type: &'static str,
    subject: String,
    time_us: i64,
    data: String,
}

fn month_bounds(tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
    let (ny, nm) = if MONTH == 12 {
        (YEAR + 1, 1)
    } else {
        (YEAR, MONTH + 1)
    };
    let start = tz
        .with_ymd_and_hms(YEAR, MONTH, 1, 0, 0, 0)
        .single()
        .unwrap();
    let end = tz.with_ymd_and_hms(ny, nm, 1, 0, 0, 0).single().unwrap();
    (start.with_timezone(&Utc), end.with_timezone(&Utc))
}

/// Events spread evenly over the UTC month in arrival order (+-1 h of jitter, so a batch is
/// not sorted), subjects uniform over `users`, the four event types equally likely.
fn generate(o: &Opts) -> Vec<Gen> {
    let (start, end) = month_bounds(chrono_tz::UTC);
    let (start, end) = (start.timestamp_millis(), end.timestamp_millis());
    let span = i128::from(end - start);
    let n = o.events as i128;
    let mut rng = StdRng::seed_from_u64(o.seed);
    (0..o.events)
        .map(|i| {
            let base = start + (i as i128 * span / n) as i64;
            let t = (base + rng.random_range(-HOUR_MS..HOUR_MS)).clamp(start, end - 1);
            Gen {
                id: rng.random(),
                kind: rng.random_range(0..TYPES.len()),
                subject: rng.random_range(0..o.users),
                time_ms: t,
                context: rng.random_range(0..50),
            }
        })
        .collect()
}

/// The answer the meter must give per window, computed from the generated events.
fn expected_unique(gens: &[Gen], wins: &[Window], meter: &Meter) -> Vec<i64> {
    let mut sets: Vec<HashSet<u32>> = vec![HashSet::new(); wins.len()];
    for g in gens {
        if !meter.matches_type(TYPES[g.kind]) {
            continue;
        }
        let t = g.time_us();
        let i = wins.partition_point(|w| w.start.timestamp_micros() <= t);
        if i > 0 && t < wins[i - 1].end.timestamp_micros() {
            sets[i - 1].insert(g.subject);
        }
    }
    sets.iter().map(|s| s.len() as i64).collect()
}

fn load_config(dir: &Path, url: &str) -> anyhow::Result<Config> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading config directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut layers = Vec::new();
    for p in paths {
        layers.push(Layer {
            origin: p.display().to_string(),
            text: std::fs::read_to_string(&p)
                .with_context(|| format!("reading {}", p.display()))?,
        });
    }
    // The URL comes in the way an operator overrides it: a GATEWAY__ variable.
    let env = vec![("GATEWAY__DATABASE__URL".to_owned(), url.to_owned())];
    Config::from_layers(layers, env).map_err(|e| anyhow::anyhow!("configuration: {e}"))
}

struct IngestStats {
    events: usize,
    timed: Duration,
    wall: Duration,
    batches: Vec<Duration>,
    /// Ledger only: time `prepare_batch` (parse, validate, attribute) takes on a copy of
    /// each batch, measured separately after the timed call, to split the timed total.
    prepare: Option<Duration>,
}

impl IngestStats {
    fn rate(&self) -> f64 {
        self.events as f64 / self.timed.as_secs_f64()
    }
    fn line(&self, label: &str) -> String {
        let mut b = self.batches.clone();
        b.sort();
        let split = match self.prepare {
            Some(p) => format!(
                "\n            of which prepare_batch (parse, validate, attribute; measured on a copy) \
                 ~{:.2} s = {:.0}%, store_batch (SQL, commit) ~{:.2} s",
                p.as_secs_f64(),
                p.as_secs_f64() * 100.0 / self.timed.as_secs_f64(),
                self.timed.saturating_sub(p).as_secs_f64()
            ),
            None => String::new(),
        };
        format!(
            "{label:<9} {:>9} events in {:>7.2} s timed ({:>7.2} s wall) = {:>9.0} events/s; \
             batch p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{split}",
            self.events,
            self.timed.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.rate(),
            ms(percentile(&b, 0.5)),
            ms(percentile(&b, 0.99)),
            ms(percentile(&b, 1.0)),
        )
    }
}

/// An ingest phase's timed batches, counted as they go in.
struct Tally {
    label: &'static str,
    events: usize,
    wall: Instant,
    timed: Duration,
    batches: Vec<Duration>,
    done: usize,
}

impl Tally {
    fn start(label: &'static str, events: usize, batch: usize) -> Tally {
        Tally {
            label,
            events,
            wall: Instant::now(),
            timed: Duration::ZERO,
            batches: Vec::with_capacity(events / batch + 1),
            done: 0,
        }
    }
    /// A batch of `n` events in, its timed part `took`.
    fn add(&mut self, n: usize, took: Duration) {
        self.timed += took;
        self.batches.push(took);
        self.done += n;
        progress(self.label, self.done, n, self.events, self.timed);
    }
    fn finish(self, prepare: Option<Duration>) -> IngestStats {
        IngestStats {
            events: self.events,
            timed: self.timed,
            wall: self.wall.elapsed(),
            batches: self.batches,
            prepare,
        }
    }
}

/// A line on stderr each time another tenth of the events is in.
fn progress(label: &str, done: usize, batch: usize, total: usize, timed: Duration) {
    let step = (total / 10).max(1);
    if done / step != done.saturating_sub(batch) / step || done == total {
        eprintln!(
            "  {label}: {done}/{total} ({:.0} events/s so far)",
            done as f64 / timed.as_secs_f64().max(1e-9)
        );
    }
}

fn baseline_ddl(db: &Db) -> &'static str {
    match db {
        Db::Sqlite(_) => {
            "CREATE TABLE bench_baseline (partner_id TEXT NOT NULL, source TEXT NOT NULL, \
             event_id TEXT NOT NULL, type TEXT NOT NULL, subject TEXT, time_us INTEGER NOT NULL, \
             data TEXT, UNIQUE (partner_id, source, event_id))"
        }
        // The ledger's own column types (data is JSONB there too).
        Db::Postgres(_) => {
            "CREATE TABLE bench_baseline (partner_id TEXT NOT NULL, source TEXT NOT NULL, \
             event_id TEXT NOT NULL, type TEXT NOT NULL, subject TEXT, time_us BIGINT NOT NULL, \
             data JSONB, UNIQUE (partner_id, source, event_id))"
        }
    }
}

/// `INSERT INTO bench_baseline VALUES (...), (...)` with `rows` rows of bound parameters.
fn baseline_insert_sql(db: &Db, rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO bench_baseline (partner_id, source, event_id, type, subject, time_us, data) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        match db {
            Db::Sqlite(_) => sql.push_str("(?,?,?,?,?,?,?)"),
            Db::Postgres(_) => {
                let b = r * COLS;
                sql.push_str(&format!(
                    "(${},${},${},${},${},${},${}::jsonb)",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7
                ));
            }
        }
    }
    sql
}

/// One baseline batch: its own transaction (BEGIN IMMEDIATE on SQLite, as the ledger's),
/// one INSERT statement, commit.
async fn baseline_batch(db: &Db, sql: &str, rows: &[Row]) -> anyhow::Result<u64> {
    let mut tx = db.begin().await?;
    let n = partner_gateway::with_tx!(&mut tx, c => {
        let mut q = sqlx::query(sql);
        for r in rows {
            q = q
                .bind(PARTNER)
                .bind(r.source)
                .bind(&r.event_id)
                .bind(r.event_type)
                .bind(&r.subject)
                .bind(r.time_us)
                .bind(&r.data);
        }
        q.execute(c).await?.rows_affected()
    });
    tx.commit().await?;
    Ok(n)
}

async fn run_baseline(db: &Db, gens: &[Gen], batch: usize) -> anyhow::Result<IngestStats> {
    partner_gateway::with_db!(db, p => sqlx::query(baseline_ddl(db)).execute(p).await.map(drop))?;
    let full_sql = baseline_insert_sql(db, batch);
    let mut tally = Tally::start("baseline", gens.len(), batch);
    for chunk in gens.chunks(batch) {
        // Client work, not timed: the rows and (for a short last batch) the statement text.
        let rows: Vec<Row> = chunk.iter().map(Gen::row).collect();
        let short_sql;
        let sql = if chunk.len() == batch {
            &full_sql
        } else {
            short_sql = baseline_insert_sql(db, chunk.len());
            &short_sql
        };
        let t = Instant::now();
        let n = baseline_batch(db, sql, &rows).await?;
        let took = t.elapsed();
        if n != chunk.len() as u64 {
            bail!("baseline inserted {n} of {} rows", chunk.len());
        }
        tally.add(chunk.len(), took);
    }
    Ok(tally.finish(None))
}

async fn run_ledger(
    state: &AppState,
    gens: &[Gen],
    batch: usize,
    now: DateTime<Utc>,
) -> anyhow::Result<IngestStats> {
    let config = state.config.clone();
    let writer = Writer {
        attribution: Attribution::Fixed(PARTNER),
        recorder: &Recorder::Gateway,
        rules: &state.ledger_rules,
    };
    let mut tally = Tally::start("ledger", gens.len(), batch);
    let mut prepare = Duration::ZERO;
    for chunk in gens.chunks(batch) {
        // Client work, not timed: building the CloudEvents JSON values.
        let values: Vec<Value> = chunk.iter().map(Gen::cloud_event).collect();
        let copy = values.clone();
        let t = Instant::now();
        // As POST /v1/usage/events does (validation, attribution, the write rules), with
        // the gateway as the writer: these are its own event types, which no key may send.
        let ingested = ingest_batch(
            &state.db,
            &state.subjects,
            values,
            writer,
            |p| config.partner(p).is_some(),
            now,
        )
        .await
        .map_err(|e| anyhow::anyhow!("ingest_batch: {e}"))?;
        let took = t.elapsed();
        if ingested.accepted != chunk.len() as u64 {
            bail!("ledger accepted {ingested:?} of {} events", chunk.len());
        }
        // Diagnostic, outside the timed section: the CPU part of the same call alone.
        let t = Instant::now();
        let prepared = prepare_batch(copy, writer, |p| config.partner(p).is_some(), now);
        prepare += t.elapsed();
        drop(prepared);
        tally.add(chunk.len(), took);
    }
    Ok(tally.finish(Some(prepare)))
}

/// Start the next phase from a clean slate: an empty WAL on SQLite, a checkpoint on
/// PostgreSQL, so one phase does not pay for writing back the other's pages.
async fn settle(db: &Db) -> anyhow::Result<()> {
    match db {
        Db::Sqlite(p) => {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(p)
                .await?;
        }
        Db::Postgres(p) => {
            sqlx::query("CHECKPOINT").execute(p).await?;
        }
    }
    Ok(())
}

/// Machine-wide CPU use since `cpu`, to show how busy the two cores were and whether the
/// hypervisor took time away (steal) during a phase: "[cpu: busy X%, iowait Y%, steal Z%]".
fn cpu_note(cpu: &CpuSample) -> String {
    cpu.since().map_or_else(String::new, |c| {
        format!(
            "[cpu: busy {:.0}%, iowait {:.0}%, steal {:.1}%]",
            c.busy(),
            c.iowait(),
            c.steal()
        )
    })
}

struct QueryResult {
    tz: &'static str,
    meter: Timings,
    count: Timings,
    windows: usize,
}

/// `SELECT COUNT(*)` over the partner's events in `[from, to)`: the floor for a query that
/// must visit those rows.
async fn count_in_range(db: &Db, from: i64, to: i64) -> anyhow::Result<i64> {
    const SQL: &str = "SELECT COUNT(*) FROM usage_events \
                       WHERE partner_id = $1 AND time_us >= $2 AND time_us < $3";
    Ok(partner_gateway::with_db!(db, p => {
        sqlx::query_scalar::<_, i64>(SQL)
            .bind(PARTNER)
            .bind(from)
            .bind(to)
            .fetch_one(p)
            .await?
    }))
}

async fn run_queries(
    state: &AppState,
    gens: &[Gen],
    runs: usize,
) -> anyhow::Result<Vec<QueryResult>> {
    let meter = state
        .meters
        .get(METER)
        .with_context(|| format!("meter {METER} is not in the config"))?;
    let mut out = Vec::new();
    let zones: [(&'static str, Tz); 2] = [
        ("UTC", chrono_tz::UTC),
        ("America/New_York", chrono_tz::America::New_York),
    ];
    for (label, tz) in zones {
        let (from, to) = month_bounds(tz);
        let wins = windows(from, to, Some(WindowSize::Day), tz)?;
        let expected = expected_unique(gens, &wins, meter);
        let mut meter_times = Vec::new();
        for run in 0..runs {
            let t = Instant::now();
            let buckets = query_meter(&state.db, PARTNER, meter, &wins, &[], None).await?;
            meter_times.push(t.elapsed());
            let mut got = vec![0i64; wins.len()];
            for b in &buckets {
                got[b.window] = b.value.as_i64().context("UNIQUE_COUNT is an integer")?;
            }
            if got != expected {
                let i = (0..wins.len())
                    .find(|&i| got[i] != expected[i])
                    .unwrap_or(0);
                bail!(
                    "{METER} by day in {label} is WRONG: window {i} ({}) gave {}, expected {}",
                    wins[i].start,
                    got[i],
                    expected[i]
                );
            }
            if run == 0 {
                let mid = wins.len() / 2;
                println!(
                    "  {METER} by day, {label}: {} windows, all equal to the counts computed while \
                     generating (e.g. day starting {}: {}; sum over days {})",
                    wins.len(),
                    wins[mid]
                        .start
                        .with_timezone(&tz)
                        .format("%Y-%m-%d %H:%M %Z"),
                    got[mid],
                    got.iter().sum::<i64>()
                );
            }
        }
        let (f, t) = (from.timestamp_micros(), to.timestamp_micros());
        let expected_count = gens
            .iter()
            .filter(|g| g.time_us() >= f && g.time_us() < t)
            .count() as i64;
        let mut count_times = Vec::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            let n = count_in_range(&state.db, f, t).await?;
            count_times.push(t0.elapsed());
            if n != expected_count {
                bail!("COUNT(*) over the {label} month gave {n}, expected {expected_count}");
            }
        }
        out.push(QueryResult {
            tz: label,
            meter: Timings(meter_times),
            count: Timings(count_times),
            windows: wins.len(),
        });
    }
    Ok(out)
}

struct BackendReport {
    backend: Backend,
    /// (baseline, ledger); None with --query-only.
    ingest: Option<(IngestStats, IngestStats)>,
    queries: Vec<QueryResult>,
    storage: String,
}

async fn storage_note(db: &Db, sqlite_file: Option<&Path>) -> String {
    match db {
        Db::Sqlite(_) => format!(
            "database files (both tables) {:.0} MiB",
            sqlite_size(sqlite_file) as f64 / 1048576.0
        ),
        Db::Postgres(p) => {
            let sizes: Result<(i64, i64), _> = sqlx::query_as(
                "SELECT pg_total_relation_size('usage_events'), pg_total_relation_size('bench_baseline')",
            )
            .fetch_one(p)
            .await;
            match sizes {
                Ok((l, b)) => format!(
                    "usage_events {:.0} MiB, bench_baseline {:.0} MiB (tables + indexes)",
                    l as f64 / 1048576.0,
                    b as f64 / 1048576.0
                ),
                Err(e) => format!("sizes unavailable: {e}"),
            }
        }
    }
}

async fn bench_backend(
    o: &Opts,
    backend: Backend,
    url: &str,
    sqlite_file: Option<&Path>,
    gens: &[Gen],
) -> anyhow::Result<BackendReport> {
    let config = load_config(&o.config_dir, url)?;
    if config.partner(PARTNER).is_none() {
        bail!("partner {PARTNER} is not in {}", o.config_dir.display());
    }
    if backend == Backend::Sqlite {
        println!(
            "  sqlite: WAL, synchronous={:?}, pool of {}",
            config.database.sqlite_synchronous, config.database.max_connections
        );
    }
    // As `serve` does: connect, migrate, sync partners, compile meters.
    let state = AppState::prepare(config, true).await?;
    if let Db::Postgres(p) = &state.db {
        let sc: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(p)
            .await?;
        println!("  postgres: synchronous_commit={sc}");
    }
    // The ledger's clock: just after the month, so every event is in the past and the
    // run does not depend on today's date.
    let now = month_bounds(chrono_tz::UTC).1 + chrono::Duration::hours(1);
    let result = async {
        let ingest = if o.query_only {
            None
        } else {
            settle(&state.db).await?;
            let cpu = CpuSample::now();
            let baseline = run_baseline(&state.db, gens, o.batch).await?;
            println!("  {} {}", baseline.line("baseline"), cpu_note(&cpu));
            settle(&state.db).await?;
            let cpu = CpuSample::now();
            let ledger = run_ledger(&state, gens, o.batch, now).await?;
            println!("  {} {}", ledger.line("ledger"), cpu_note(&cpu));
            println!(
                "  ingest ratio ledger/baseline = {:.2} (target >= 0.50)",
                ledger.rate() / baseline.rate()
            );
            settle(&state.db).await?;
            Some((baseline, ledger))
        };
        if let Db::Postgres(p) = &state.db {
            // What autovacuum does on its own shortly after a bulk load; without it the
            // planner has no statistics for the freshly filled table.
            sqlx::query("ANALYZE usage_events").execute(p).await?;
        }
        let cpu = CpuSample::now();
        let queries = run_queries(&state, gens, o.query_runs).await?;
        println!("  queries done {}", cpu_note(&cpu));
        for q in &queries {
            println!(
                "  query {METER} by day, {:<16} {}",
                q.tz,
                q.meter.show(8, 1)
            );
            println!(
                "  query COUNT(*) month,   {:<16} {}",
                q.tz,
                q.count.show(8, 1)
            );
        }
        let storage = storage_note(&state.db, sqlite_file).await;
        println!("  {storage}");
        Ok::<_, anyhow::Error>(BackendReport {
            backend,
            ingest,
            queries,
            storage,
        })
    }
    .await;
    state.db.close().await;
    result
}

async fn bench_sqlite(o: &Opts, gens: &[Gen]) -> anyhow::Result<BackendReport> {
    let dir = tempfile::Builder::new().prefix("pgw-bench-").tempdir()?;
    let file = match &o.sqlite_file {
        Some(f) if o.query_only && !f.exists() => bail!("--sqlite-file {} is missing", f.display()),
        Some(f) if !o.query_only && f.exists() => {
            bail!("--sqlite-file {} already exists", f.display())
        }
        Some(f) => f.clone(),
        None => dir.path().join("bench.db"),
    };
    let url = format!("sqlite://{}", file.display());
    println!("== sqlite ({url})");
    bench_backend(o, Backend::Sqlite, &url, Some(&file), gens).await
}

async fn bench_postgres(o: &Opts, gens: &[Gen]) -> anyhow::Result<BackendReport> {
    let pg = PgDatabase::create(&o.pg_url, "pgw_bench_").await?;
    println!("== postgres ({})", partner_gateway::db::redact_url(&pg.url));
    let result = bench_backend(o, Backend::Postgres, &pg.url, None, gens).await;
    pg.finish(o.keep_postgres).await;
    result
}

fn summary(o: &Opts, reports: &[BackendReport]) {
    println!();
    println!(
        "## Summary ({} events, batches of {}, {} users, month {YEAR}-{MONTH:02})",
        o.events, o.batch, o.users
    );
    println!();
    println!("| backend | baseline events/s | ledger events/s | ledger / baseline | target |");
    println!("| --- | ---: | ---: | ---: | --- |");
    for r in reports {
        let Some((baseline, ledger)) = &r.ingest else {
            continue;
        };
        let ratio = ledger.rate() / baseline.rate();
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | >= 0.50: {} |",
            r.backend.name(),
            baseline.rate(),
            ledger.rate(),
            ratio,
            if ratio >= 0.5 { "met" } else { "MISSED" }
        );
    }
    println!();
    println!(
        "| backend | tz | windows | {METER} min / median (ms) | COUNT(*) min / median (ms) | median ratio | < 1 s |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | --- |");
    for r in reports {
        for q in &r.queries {
            println!(
                "| {} | {} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1}x | {} |",
                r.backend.name(),
                q.tz,
                q.windows,
                ms(q.meter.min()),
                ms(q.meter.median()),
                ms(q.count.min()),
                ms(q.count.median()),
                q.meter.median().as_secs_f64() / q.count.median().as_secs_f64(),
                if q.meter.median() < Duration::from_secs(1) {
                    "yes"
                } else {
                    "NO"
                }
            );
        }
    }
    println!();
    for r in reports {
        println!("- {}: {}", r.backend.name(), r.storage);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    println!(
        "ledger bench: {} events in batches of {}, {} users, {} query runs, seed {}",
        o.events, o.batch, o.users, o.query_runs, o.seed
    );
    let t = Instant::now();
    let gens = generate(&o);
    println!(
        "generated {} events in {:.1} s (not timed)",
        gens.len(),
        t.elapsed().as_secs_f64()
    );
    let (o, gens) = (&o, &gens[..]);
    // Keep the other backend's figures: report a failed one and fail at the end.
    let (reports, failed) = each_backend(
        &o.backends,
        Backend::name,
        |backend| async move {
            match backend {
                Backend::Sqlite => bench_sqlite(o, gens).await,
                Backend::Postgres => bench_postgres(o, gens).await,
            }
        },
        |_| false,
    )
    .await;
    summary(o, &reports);
    fail_if_any(&failed, "")
}
