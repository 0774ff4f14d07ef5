//! Statements benchmark: the statement run for one month (every partner's draft, as
//! `statements run` makes it) over a large ledger, against a same-run baseline of one plain
//! SQL aggregate over the same events. SQLite and PostgreSQL.
//!
//! ```sh
//! export CARGO_TARGET_DIR=/var/tmp/partner-gateway-bench   # any target dir
//! cargo bench --bench statements                            # 10,000,000 events, 100 partners, both backends
//! cargo bench --bench statements -- --events 200000 --backend sqlite --runs 3
//! ```
//!
//! PostgreSQL: `BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! is used only to create a fresh database `pgw_bench_<random>`, dropped at the end unless
//! `--postgres-db NAME` names one to keep (and, when it already holds a loaded ledger of the
//! same `--events`, `--partners` and `--seed`, to reuse without loading again).
//! SQLite: a file in a temporary directory, or `--sqlite-file PATH` (kept, reused the same
//! way). See `docs/PERFORMANCE.md` ("Statements") for the method.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, TimeZone, Utc};
use partner_gateway::config::{Config, Layer};
use partner_gateway::db::Db;
use partner_gateway::keys::crypto::MasterKey;
use partner_gateway::metering::UsageEvent;
use partner_gateway::metering::authority::Recorder;
use partner_gateway::metering::store::{insert_usage_events, meter_value};
use partner_gateway::metering::window::Window;
use partner_gateway::state::AppState;
use partner_gateway::statements::model::{LineKind, Statement, Status};
use partner_gateway::statements::period::{Period, PeriodKind};
use partner_gateway::statements::service::RunItem;
use partner_gateway::statements::store as st_store;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::json;
use support::args::{Args, pg_url_or_default};
use support::cpu::CpuSample;
use support::db::{Backend, PgDatabase, each_backend, fail_if_any, sqlite_size};
use support::stats::{Timings, ms};

/// The month the statements are for, and the one before it (finalized in the setup).
const PERIOD: &str = "2026-10";
const PREVIOUS: &str = "2026-09";
/// Events are dated in [Oct 1 05:00Z, Nov 1 00:00Z): inside October in every zone the
/// agreements use (UTC, New York, Chicago, London), so each statement counts all of its
/// partner's events and the baseline's UTC month counts all of them too.
fn events_window() -> (DateTime<Utc>, DateTime<Utc>) {
    (
        Utc.with_ymd_and_hms(2026, 10, 1, 5, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
    )
}
/// The baseline's range: the UTC month.
fn utc_month() -> (DateTime<Utc>, DateTime<Utc>) {
    (
        Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
    )
}
/// When the previous month's statements are computed and finalized in the setup.
fn previous_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 2, 0, 0, 0).unwrap()
}
/// `now` for the statement runs: the clock, but never before the month has settled.
fn run_now() -> DateTime<Utc> {
    Utc::now().max(Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap())
}
/// Any fixed 32-byte key: the bench never seals or opens a signing key.
const MASTER_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

const USAGE: &str = "usage: cargo bench --bench statements -- [--events N (10000000)] \
[--partners N (100)] [--seed N] [--runs N (5)] [--batch N (5000)] \
[--backend sqlite|postgres|both] [--max-connections N (the gateway default, 10)] \
[--no-profile] [--sqlite-file PATH (kept; reused when it holds the same ledger)] \
[--postgres-db NAME (kept; reused when it holds the same ledger)]";

struct Opts {
    events: usize,
    partners: usize,
    seed: u64,
    runs: usize,
    batch: usize,
    backends: Vec<Backend>,
    max_connections: Option<u32>,
    profile: bool,
    pg_url: String,
    sqlite_file: Option<PathBuf>,
    postgres_db: Option<String>,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        events: 10_000_000,
        partners: 100,
        seed: 20261001,
        runs: 5,
        batch: 5000,
        backends: Backend::BOTH.to_vec(),
        max_connections: None,
        profile: true,
        pg_url: pg_url_or_default(),
        sqlite_file: None,
        postgres_db: None,
    };
    let mut args = Args::new(USAGE);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => o.events = args.num(&a)?,
            "--partners" => o.partners = args.num(&a)?,
            "--seed" => o.seed = args.num(&a)?,
            "--runs" => o.runs = args.num(&a)?,
            "--batch" => o.batch = args.num(&a)?,
            "--max-connections" => o.max_connections = Some(args.num(&a)?),
            "--no-profile" => o.profile = false,
            "--sqlite-file" => o.sqlite_file = Some(args.value()?.into()),
            "--postgres-db" => o.postgres_db = Some(args.value()?),
            "--backend" => o.backends = args.backends()?,
            other => args.other(other)?,
        }
    }
    if o.events == 0 || o.partners == 0 || o.runs == 0 || o.batch == 0 {
        bail!("--events, --partners, --runs and --batch must be at least 1");
    }
    if o.partners > 10_000 {
        bail!("--partners is at most 10000");
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
// The partners, their agreements, and the config.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Flat 18% of recorded revenue (15% before July: two versions).
    Ehr,
    /// Flat 20% of recorded revenue.
    Marketplace,
    /// Licence by active learners + recorded revenue, 25/30/35% graduated by active
    /// learners, a bonus, an annual minimum.
    Lms,
    /// 12% of each completed implementation's contract value.
    Referral,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Ehr => "ehr",
            Kind::Marketplace => "market",
            Kind::Lms => "lms",
            Kind::Referral => "referral",
        }
    }
}

struct PartnerSpec {
    id: String,
    kind: Kind,
    tz: &'static str,
    /// Volume rank (1 = biggest) and its Zipf weight.
    rank: usize,
    weight: f64,
    /// Distinct subjects the partner's events draw from (learners, for an LMS).
    pool: u32,
    /// LMS only: the agreement year ends with October (valid from 2025-11-01), so the
    /// October statement is the year-end true-up.
    year_ends_october: bool,
    /// LMS only: the bonus reads the `launches` meter instead of `active_learners`.
    bonus_on_launches: bool,
}

impl PartnerSpec {
    fn agreement_id(&self) -> String {
        format!("{}-agreement", self.id)
    }
}

struct Plan {
    partners: Vec<PartnerSpec>,
    /// Cumulative weights, for drawing a partner.
    cum: Vec<f64>,
    events: usize,
}

/// 100 partners: per 10, 3 EHR vendors, 1 marketplace (flat shares: 40%), 4 LMSs (40%),
/// 2 referral partners (20%). Volumes Zipf (weight 1/rank), ranks shuffled over the kinds.
fn plan(o: &Opts) -> Plan {
    let mut rng = StdRng::seed_from_u64(o.seed ^ 0x5e_ed0f_7a57);
    let mut ranks: Vec<usize> = (1..=o.partners).collect();
    ranks.shuffle(&mut rng);
    let total: f64 = (1..=o.partners).map(|r| 1.0 / r as f64).sum();
    let mut lms_no = 0;
    let mut partners = Vec::with_capacity(o.partners);
    for (i, rank) in ranks.into_iter().enumerate() {
        let kind = match i % 10 {
            0..=2 => Kind::Ehr,
            3 => Kind::Marketplace,
            4..=7 => Kind::Lms,
            _ => Kind::Referral,
        };
        let tz = match kind {
            Kind::Ehr => ["America/Chicago", "America/New_York"][(i / 10) % 2],
            Kind::Marketplace => "UTC",
            Kind::Lms => [
                "America/New_York",
                "America/Chicago",
                "Europe/London",
                "UTC",
            ][lms_no % 4],
            Kind::Referral => ["UTC", "Europe/London"][i % 2],
        };
        let weight = 1.0 / rank as f64;
        let expected = weight / total * o.events as f64;
        // About 25 launches per learner a month; other partners' users about 10 events each.
        let pool = match kind {
            Kind::Lms => (expected * 0.85 / 25.0).max(100.0) as u32,
            _ => (expected / 10.0).max(100.0) as u32,
        };
        let (year_ends_october, bonus_on_launches) = if kind == Kind::Lms {
            let v = (lms_no % 4 == 1, lms_no % 2 == 1);
            lms_no += 1;
            v
        } else {
            (false, false)
        };
        partners.push(PartnerSpec {
            id: format!("{}-{i:03}", kind.prefix()),
            kind,
            tz,
            rank,
            weight,
            pool,
            year_ends_october,
            bonus_on_launches,
        });
    }
    let mut acc = 0.0;
    let cum = partners
        .iter()
        .map(|p| {
            acc += p.weight;
            acc
        })
        .collect();
    Plan {
        partners,
        cum,
        events: o.events,
    }
}

/// The config as TOML text: partners, meters, agreements, statements.
fn config_toml(plan: &Plan) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    t.push_str(
        "[statements]\ncompany_name = \"Bench Learning & Health Software, Inc.\"\nsettle_secs = 60\n\n\
         [[meters]]\nname = \"active_learners\"\nevent_types = [\"lti.launch\"]\n\
         aggregation = \"UNIQUE_COUNT\"\nvalue = \"subject\"\n\n\
         [[meters]]\nname = \"launches\"\nevent_types = [\"lti.launch\"]\naggregation = \"COUNT\"\n\n",
    );
    for p in &plan.partners {
        let kind = match p.kind {
            Kind::Ehr => "ehr",
            Kind::Marketplace => "marketplace",
            Kind::Lms => "lms",
            Kind::Referral => "referral",
        };
        writeln!(
            t,
            "[[partners]]\nid = \"{}\"\nname = \"Partner {} ({kind})\"\nkind = \"{kind}\"\n",
            p.id, p.id
        )
        .unwrap();
    }
    for p in &plan.partners {
        let (id, partner, tz) = (p.agreement_id(), &p.id, p.tz);
        match p.kind {
            Kind::Ehr => {
                writeln!(
                    t,
                    "[[agreements]]\nid = \"{id}\"\npartner = \"{partner}\"\nversion = 1\n\
                     valid_from = \"2026-01-01\"\nvalid_to = \"2026-07-01\"\ncurrency = \"USD\"\n\
                     time_zone = \"{tz}\"\nshare = {{ rate = \"15%\" }}\n\n\
                     [[agreements]]\nid = \"{id}\"\npartner = \"{partner}\"\nversion = 2\n\
                     valid_from = \"2026-07-01\"\ncurrency = \"USD\"\ntime_zone = \"{tz}\"\n\
                     share = {{ rate = \"18%\" }}\n"
                )
                .unwrap();
            }
            Kind::Marketplace => {
                writeln!(
                    t,
                    "[[agreements]]\nid = \"{id}\"\npartner = \"{partner}\"\nversion = 1\n\
                     valid_from = \"2026-01-01\"\ncurrency = \"USD\"\ntime_zone = \"{tz}\"\n\
                     share = {{ rate = \"20%\" }}\n"
                )
                .unwrap();
            }
            Kind::Referral => {
                writeln!(
                    t,
                    "[[agreements]]\nid = \"{id}\"\npartner = \"{partner}\"\nversion = 1\n\
                     valid_from = \"2026-01-01\"\ncurrency = \"USD\"\ntime_zone = \"{tz}\"\n\
                     revenue = {{ recorded = false }}\n\n\
                     [[agreements.referrals]]\nevent_type = \"referral.implementation_completed\"\n\
                     rate = \"12%\"\n"
                )
                .unwrap();
            }
            Kind::Lms => {
                let from = if p.year_ends_october {
                    "2025-11-01"
                } else {
                    "2026-01-01"
                };
                let bonus = if p.bonus_on_launches {
                    "meter = \"launches\"\nthreshold = \"100000\"\namount = \"1000.00\"\n\
                     description = \"Volume bonus: more than 100,000 launches in the month\""
                } else {
                    "meter = \"active_learners\"\nthreshold = \"5000\"\namount = \"2500.00\"\n\
                     description = \"Volume bonus: more than 5,000 active learners in the month\""
                };
                writeln!(
                    t,
                    "[[agreements]]\nid = \"{id}\"\npartner = \"{partner}\"\nversion = 1\n\
                     valid_from = \"{from}\"\ncurrency = \"USD\"\ntime_zone = \"{tz}\"\n\n\
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
                     {{ rate = \"35%\" }},\n]\n\n\
                     [[agreements.bonuses]]\n{bonus}\n\n\
                     [agreements.minimum]\nannual = \"60000.00\"\ntrue_up = \"year_end\"\n"
                )
                .unwrap();
            }
        }
    }
    t
}

fn build_config(plan: &Plan, url: &str, max_connections: Option<u32>) -> anyhow::Result<Config> {
    let layers = vec![Layer {
        origin: "benches/statements.rs".into(),
        text: config_toml(plan),
    }];
    let mut env = vec![("GATEWAY__DATABASE__URL".to_owned(), url.to_owned())];
    if let Some(n) = max_connections {
        env.push((
            "GATEWAY__DATABASE__MAX_CONNECTIONS".to_owned(),
            n.to_string(),
        ));
    }
    Config::from_layers(layers, env).map_err(|e| anyhow::anyhow!("configuration: {e}"))
}

// ---------------------------------------------------------------------------------------
// The events.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EvKind {
    SmartLaunch,
    FhirRequest,
    LtiLaunch,
    GradePosted,
    Revenue,
    Referral,
}

impl EvKind {
    fn type_name(self) -> &'static str {
        match self {
            EvKind::SmartLaunch => "smart.launch",
            EvKind::FhirRequest => "fhir.request",
            EvKind::LtiLaunch => "lti.launch",
            EvKind::GradePosted => "lti.grade_posted",
            EvKind::Revenue => "revenue.recognized",
            EvKind::Referral => "referral.implementation_completed",
        }
    }
    fn source(self) -> &'static str {
        match self {
            EvKind::SmartLaunch => "/gateway/smart",
            EvKind::FhirRequest => "/gateway/fhir",
            EvKind::LtiLaunch | EvKind::GradePosted => "/gateway/lti",
            EvKind::Revenue => "/billing",
            EvKind::Referral => "/crm",
        }
    }
}

const RESOURCES: [&str; 5] = [
    "Patient",
    "Observation",
    "Condition",
    "MedicationRequest",
    "Encounter",
];

/// What the statements must find, per partner, computed while generating.
#[derive(Default, Clone)]
struct Expect {
    events: u64,
    revenue_n: u64,
    revenue_cents: i64,
    launches: u64,
    referrals: u64,
    /// Distinct learners seen (bitmap over the pool).
    learners: Vec<u64>,
}

impl Expect {
    fn learners_n(&self) -> u64 {
        self.learners
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }
    fn revenue(&self) -> Decimal {
        Decimal::new(self.revenue_cents, 2)
    }
}

fn cents_text(c: i64) -> String {
    let sign = if c < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", c.abs() / 100, c.abs() % 100)
}

struct Batch {
    events: Vec<UsageEvent>,
    received: DateTime<Utc>,
}

/// Generate the events in arrival order (times spread evenly over the window, +-30 s of
/// jitter), partner by Zipf weight, type by the partner's kind. With `tx`, each batch is
/// sent for loading; without, only the expectations are computed (a reused ledger). The
/// random draws are the same either way.
fn generate(
    plan: &Plan,
    seed: u64,
    batch: usize,
    tx: Option<tokio::sync::mpsc::Sender<Batch>>,
) -> Vec<Expect> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut exp: Vec<Expect> = plan
        .partners
        .iter()
        .map(|p| Expect {
            learners: if p.kind == Kind::Lms {
                vec![0; (p.pool as usize).div_ceil(64)]
            } else {
                Vec::new()
            },
            ..Expect::default()
        })
        .collect();
    let (start, end) = events_window();
    let (start, end) = (start.timestamp_millis(), end.timestamp_millis());
    let span = i128::from(end - start);
    let n = plan.events as i128;
    let total = *plan.cum.last().unwrap();
    let mut out: Vec<UsageEvent> = Vec::with_capacity(batch);
    let mut max_t = start;
    let mut last_received = start;
    for i in 0..plan.events {
        // Every draw, in a fixed order, whatever the event turns out to be.
        let u: f64 = rng.random();
        let r: f64 = rng.random();
        let jitter: i64 = rng.random_range(-30_000..=30_000);
        let subject_u: u32 = rng.random();
        let aux: u32 = rng.random();
        let cents: i64 = rng.random_range(1_000..=200_000);
        let refund = rng.random_bool(0.05);
        let id_bytes: [u8; 10] = rng.random();

        let pi = plan
            .cum
            .partition_point(|c| *c <= u * total)
            .min(plan.partners.len() - 1);
        let p = &plan.partners[pi];
        let kind = if r < 0.02 {
            EvKind::Revenue
        } else if p.kind == Kind::Referral && r < 0.0202 {
            EvKind::Referral
        } else if p.kind == Kind::Lms {
            if r < 0.87 {
                EvKind::LtiLaunch
            } else {
                EvKind::GradePosted
            }
        } else if r < 0.42 {
            EvKind::SmartLaunch
        } else {
            EvKind::FhirRequest
        };
        let base = start + (i as i128 * span / n) as i64;
        let t = (base + jitter).clamp(start, end - 1);
        max_t = max_t.max(t);
        let subject_n = subject_u % p.pool;
        let amount = if refund { -(cents / 4) } else { cents };

        let e = &mut exp[pi];
        e.events += 1;
        match kind {
            EvKind::Revenue => {
                e.revenue_n += 1;
                e.revenue_cents += amount;
            }
            EvKind::Referral => e.referrals += 1,
            EvKind::LtiLaunch => {
                e.launches += 1;
                e.learners[(subject_n / 64) as usize] |= 1 << (subject_n % 64);
            }
            _ => {}
        }

        let Some(tx) = &tx else {
            continue;
        };
        let customer = format!("cust-{:04}", aux % 2000);
        let (subject, data) = match kind {
            EvKind::LtiLaunch | EvKind::GradePosted => (
                format!("learner-{subject_n:06}"),
                json!({"context_id": format!("c{}", aux % 50)}),
            ),
            EvKind::SmartLaunch => (
                format!("user-{subject_n:06}"),
                json!({"client_id": format!("app-{}", aux % 20)}),
            ),
            EvKind::FhirRequest => (
                format!("user-{subject_n:06}"),
                json!({"resource_type": RESOURCES[(aux % 5) as usize]}),
            ),
            EvKind::Revenue => (
                customer.clone(),
                json!({"amount": cents_text(amount), "currency": "USD",
                       "product": format!("p{}", 1 + aux % 5), "customer": customer}),
            ),
            EvKind::Referral => (
                customer.clone(),
                json!({"contract_value": format!("{}.00", 50_000 + (aux % 450) * 1000),
                       "currency": "USD", "customer": customer}),
            ),
        };
        // UUIDv7: the event's millisecond, then random bits (ids in arrival order).
        let id = uuid::Builder::from_unix_timestamp_millis(t as u64, &id_bytes).into_uuid();
        out.push(UsageEvent {
            partner_id: p.id.clone(),
            id: id.to_string(),
            source: kind.source().to_owned(),
            event_type: kind.type_name().to_owned(),
            subject: Some(subject),
            time: DateTime::from_timestamp_millis(t).unwrap(),
            data: Some(data),
            extensions: None,
        });
        if out.len() == batch || i + 1 == plan.events {
            // Received a couple of seconds after the batch's latest event.
            last_received = last_received.max(max_t + 2000);
            let b = Batch {
                events: std::mem::replace(&mut out, Vec::with_capacity(batch)),
                received: DateTime::from_timestamp_millis(last_received).unwrap(),
            };
            if tx.blocking_send(b).is_err() {
                break;
            }
        }
    }
    exp
}

// ---------------------------------------------------------------------------------------
// CPU

/// Busy share of all cores since `cpu`, in percent.
fn cpu_busy(cpu: &CpuSample) -> Option<f64> {
    cpu.since().map(|c| c.busy())
}

/// "[cpu busy X%]" since `cpu`.
fn cpu_note(cpu: &CpuSample) -> String {
    cpu_busy(cpu).map_or_else(String::new, |b| format!("[cpu busy {b:.0}%]"))
}

// ---------------------------------------------------------------------------------------
// SQL statement capture (the profile): sqlx reports each statement's elapsed time as a
// `sqlx::query` tracing event; this layer sums them by kind while switched on.

static CAPTURE_ON: AtomicBool = AtomicBool::new(false);

#[derive(Default, Clone)]
struct SqlStat {
    count: u64,
    secs: f64,
    max_secs: f64,
    rows: u64,
}

static CAPTURED: LazyLock<Mutex<BTreeMap<String, SqlStat>>> = LazyLock::new(Default::default);

struct CaptureLayer;

#[derive(Default)]
struct SqlVisitor {
    summary: String,
    statement: String,
    secs: f64,
    rows: u64,
}

impl tracing::field::Visit for SqlVisitor {
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        match f.name() {
            "summary" => self.summary = v.to_owned(),
            "db.statement" => self.statement = v.to_owned(),
            _ => {}
        }
    }
    fn record_f64(&mut self, f: &tracing::field::Field, v: f64) {
        if f.name() == "elapsed_secs" {
            self.secs = v;
        }
    }
    fn record_u64(&mut self, f: &tracing::field::Field, v: u64) {
        if f.name() == "rows_returned" {
            self.rows = v;
        }
    }
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        match f.name() {
            "summary" if self.summary.is_empty() => {
                self.summary = format!("{v:?}").trim_matches('"').to_owned()
            }
            "db.statement" if self.statement.is_empty() => {
                self.statement = format!("{v:?}").trim_matches('"').replace("\\n", "\n")
            }
            _ => {}
        }
    }
}

/// What a statement the statement run makes is for.
fn classify(sql: &str) -> String {
    let s = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    let label = if s.contains("COUNT(DISTINCT") && s.contains("w(idx") {
        "meter UNIQUE_COUNT (active_learners)"
    } else if s.contains("w(idx") && s.contains("COUNT(*)") {
        "meter COUNT (launches)"
    } else if s.starts_with("SELECT event_id, type, data") {
        "revenue / milestone events (fetch)"
    } else if s.starts_with("SELECT event_id, data") {
        "revenue events (fetch)"
    } else if s.contains("SELECT EXISTS") && s.contains("received_at_us > $2") {
        "arrived after the cut-off? (EXISTS)"
    } else if s.contains("MIN(time_us), MAX(time_us)") {
        "late usage span"
    } else if s.contains("status <> 'void'") && s.contains("period = $2") {
        "live statement of the period"
    } else if s.contains("status = 'finalized' ORDER BY") {
        "finalized statements of the agreement"
    } else if s.contains("status = 'void' ORDER BY") {
        "last void statement"
    } else if s.contains("FROM statement_adjustments") {
        "adjustments"
    } else if s.starts_with("UPDATE statements SET agreement_version") {
        "write: update draft"
    } else if s.starts_with("INSERT INTO statements") {
        "write: insert draft"
    } else if s.contains("FROM statements WHERE id = $1") {
        "read back the statement"
    } else if s.starts_with("BEGIN") || s.starts_with("COMMIT") || s.starts_with("ROLLBACK") {
        "begin / commit"
    } else {
        return s.chars().take(70).collect();
    };
    label.to_owned()
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureLayer {
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if meta.target() == "sqlx::query" {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        meta.target() == "sqlx::query" && CAPTURE_ON.load(Ordering::Relaxed)
    }
    fn on_event(&self, ev: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        if !CAPTURE_ON.load(Ordering::Relaxed) {
            return;
        }
        let mut v = SqlVisitor::default();
        ev.record(&mut v);
        let sql = if v.statement.trim().is_empty() {
            v.summary
        } else {
            v.statement
        };
        let mut map = CAPTURED.lock().unwrap();
        let e = map.entry(classify(&sql)).or_default();
        e.count += 1;
        e.secs += v.secs;
        e.max_secs = e.max_secs.max(v.secs);
        e.rows += v.rows;
    }
}

fn capture_start() {
    CAPTURED.lock().unwrap().clear();
    CAPTURE_ON.store(true, Ordering::SeqCst);
}

fn capture_stop() -> BTreeMap<String, SqlStat> {
    CAPTURE_ON.store(false, Ordering::SeqCst);
    std::mem::take(&mut *CAPTURED.lock().unwrap())
}

// ---------------------------------------------------------------------------------------
// The store.

async fn exec(db: &Db, sql: &str) -> anyhow::Result<()> {
    partner_gateway::with_db!(db, p => sqlx::query(sql).execute(p).await.map(|_| ()))?;
    Ok(())
}

async fn scalar_i64(db: &Db, sql: &str) -> anyhow::Result<i64> {
    Ok(partner_gateway::with_db!(db, p => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await)?)
}

/// What a loaded ledger was generated with, kept beside it so a kept store is reused only
/// for the same ledger.
fn ledger_key(o: &Opts) -> String {
    format!(
        "events={} partners={} seed={}",
        o.events, o.partners, o.seed
    )
}

async fn loaded_key(db: &Db) -> Option<String> {
    partner_gateway::with_db!(db, p => sqlx::query_scalar::<_, String>("SELECT v FROM bench_meta WHERE k = 'ledger'")
        .fetch_optional(p)
        .await)
    .ok()
    .flatten()
}

async fn open_state(plan: &Plan, url: &str, o: &Opts) -> anyhow::Result<AppState> {
    let config = build_config(plan, url, o.max_connections)?;
    let db = Db::connect(&config.database).await?;
    db.migrate().await?;
    partner_gateway::partners::sync_partners(&db, &config.partners).await?;
    exec(
        &db,
        "CREATE TABLE IF NOT EXISTS bench_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
    )
    .await?;
    AppState::with_db(db, config, MasterKey::from_base64(MASTER_KEY)?)
}

/// The previous month's statements, finalized (as a monthly routine leaves them): the
/// October run then also looks for late usage of September, as it would in production.
async fn finalize_previous(state: &AppState, plan: &Plan) -> anyhow::Result<()> {
    let done = scalar_i64(
        &state.db,
        &format!(
            "SELECT COUNT(*) FROM statements WHERE period = '{PREVIOUS}' AND status = 'finalized'"
        ),
    )
    .await?;
    if done == plan.partners.len() as i64 {
        return Ok(());
    }
    let svc = state.statements();
    let who = partner_gateway::audit::Who::cli();
    let now = previous_now();
    for item in svc.run(PREVIOUS, now, &who, |_, _| {}).await {
        match item.outcome {
            Ok(st) if st.status == Status::Draft => {
                svc.finalize(&st.id, "bench", now, &who).await?;
            }
            Ok(_) => {}
            Err(e) => bail!("{PREVIOUS} statement of {}: {e}", item.partner),
        }
    }
    Ok(())
}

struct Load {
    events: u64,
    secs: f64,
    batches: usize,
    maintenance_secs: f64,
    maintenance: &'static str,
}

/// Load the generated events with `insert_usage_events`, one transaction per batch.
async fn load(state: &AppState, plan: &Arc<Plan>, o: &Opts) -> anyhow::Result<(Load, Vec<Expect>)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(4);
    let (p2, seed, batch) = (plan.clone(), o.seed, o.batch);
    let generator = std::thread::spawn(move || generate(&p2, seed, batch, Some(tx)));
    let t0 = Instant::now();
    let cpu = CpuSample::now();
    let (mut n, mut batches) = (0u64, 0usize);
    let step = (plan.events as u64 / 10).max(1);
    while let Some(b) = rx.recv().await {
        let mut t = state.db.begin().await?;
        let sent = b.events.len();
        let added = insert_usage_events(
            &mut t,
            &state.subjects,
            b.events,
            &Recorder::Gateway,
            b.received,
        )
        .await?;
        t.commit().await?;
        if added != sent as u64 {
            bail!("a batch of {sent} stored {added}");
        }
        let before = n;
        n += added;
        batches += 1;
        if n / step != before / step {
            eprintln!(
                "  loaded {n}/{} ({:.0} events/s so far)",
                plan.events,
                n as f64 / t0.elapsed().as_secs_f64()
            );
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let exp = generator
        .join()
        .map_err(|_| anyhow::anyhow!("the generator panicked"))?;
    println!(
        "  load: {n} events in {batches} transactions, {secs:.1} s = {:.0} events/s {}",
        n as f64 / secs,
        cpu_note(&cpu)
    );
    // What a running system has done by the time a month is billed: SQLite's WAL written
    // back; PostgreSQL's autovacuum (visibility map, statistics) after the bulk insert.
    let t1 = Instant::now();
    let maintenance = match &state.db {
        Db::Sqlite(p) => {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(p)
                .await?;
            "PRAGMA wal_checkpoint(TRUNCATE)"
        }
        Db::Postgres(p) => {
            sqlx::query("VACUUM (ANALYZE) usage_events")
                .execute(p)
                .await?;
            sqlx::query("CHECKPOINT").execute(p).await?;
            "VACUUM (ANALYZE) usage_events; CHECKPOINT"
        }
    };
    let maintenance_secs = t1.elapsed().as_secs_f64();
    println!("  after the load: {maintenance} in {maintenance_secs:.1} s");
    Ok((
        Load {
            events: n,
            secs,
            batches,
            maintenance_secs,
            maintenance,
        },
        exp,
    ))
}

// ---------------------------------------------------------------------------------------
// The baseline and the run, each checked.

const BASELINE_SQLITE: &str = "SELECT partner_id, type, COUNT(*), COUNT(DISTINCT subject), \
    SUM(CASE WHEN type = 'revenue.recognized' THEN CAST(data ->> '$.amount' AS REAL) END) \
    FROM usage_events WHERE time_us >= $1 AND time_us < $2 GROUP BY partner_id, type";
const BASELINE_POSTGRES: &str = "SELECT partner_id, type, COUNT(*), COUNT(DISTINCT subject), \
    (SUM(CASE WHEN type = 'revenue.recognized' THEN (data ->> 'amount')::numeric END))::text \
    FROM usage_events WHERE time_us >= $1 AND time_us < $2 GROUP BY partner_id, type";

/// (partner, type) -> (count, distinct subjects, revenue sum).
type BaselineRows = Vec<(String, String, i64, i64, Option<Decimal>)>;

async fn baseline(db: &Db) -> anyhow::Result<BaselineRows> {
    let (from, to) = utc_month();
    let (from, to) = (from.timestamp_micros(), to.timestamp_micros());
    Ok(match db {
        Db::Sqlite(p) => {
            let rows: Vec<(String, String, i64, i64, Option<f64>)> =
                sqlx::query_as(BASELINE_SQLITE)
                    .bind(from)
                    .bind(to)
                    .fetch_all(p)
                    .await?;
            rows.into_iter()
                .map(|(a, b, c, d, e)| {
                    let e = e.map(|v| Decimal::from_f64_retain(v).unwrap_or_default().round_dp(2));
                    (a, b, c, d, e)
                })
                .collect()
        }
        Db::Postgres(p) => {
            let rows: Vec<(String, String, i64, i64, Option<String>)> =
                sqlx::query_as(BASELINE_POSTGRES)
                    .bind(from)
                    .bind(to)
                    .fetch_all(p)
                    .await?;
            rows.into_iter()
                .map(|(a, b, c, d, e)| (a, b, c, d, e.and_then(|s| s.parse().ok())))
                .collect()
        }
    })
}

fn check_baseline(rows: &BaselineRows, plan: &Plan, exp: &[Expect]) -> anyhow::Result<()> {
    let index: HashMap<&str, usize> = plan
        .partners
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let mut events = vec![0u64; plan.partners.len()];
    for (partner, ty, count, distinct, revenue) in rows {
        let i = *index
            .get(partner.as_str())
            .with_context(|| format!("baseline: unknown partner {partner}"))?;
        events[i] += *count as u64;
        let e = &exp[i];
        if ty == "lti.launch" && (*distinct as u64 != e.learners_n() || *count as u64 != e.launches)
        {
            bail!(
                "baseline: {partner} lti.launch {count} / {distinct} distinct, expected {} / {}",
                e.launches,
                e.learners_n()
            );
        }
        if ty == "revenue.recognized" && *revenue != Some(e.revenue()) {
            bail!(
                "baseline: {partner} revenue {revenue:?}, expected {}",
                e.revenue()
            );
        }
    }
    for (i, p) in plan.partners.iter().enumerate() {
        if events[i] != exp[i].events {
            bail!(
                "baseline: {} has {} events, expected {}",
                p.id,
                events[i],
                exp[i].events
            );
        }
    }
    Ok(())
}

fn check_statement(st: &Statement, p: &PartnerSpec, e: &Expect) -> anyhow::Result<()> {
    let doc = &st.document;
    if doc.period != PERIOD || doc.partner_id != p.id || st.status != Status::Draft {
        bail!(
            "{}: got {} {} {:?}",
            p.id,
            doc.partner_id,
            doc.period,
            st.status
        );
    }
    let recorded: Vec<_> = doc
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Revenue && l.product.is_some())
        .collect();
    let rev_n: Decimal = recorded.iter().filter_map(|l| l.quantity).sum();
    let rev: Decimal = recorded.iter().map(|l| l.precise).sum();
    match p.kind {
        Kind::Ehr | Kind::Marketplace | Kind::Lms => {
            if rev_n != Decimal::from(e.revenue_n) || rev.normalize() != e.revenue().normalize() {
                bail!(
                    "{}: recorded revenue {rev} in {rev_n} events, expected {} in {}",
                    p.id,
                    e.revenue(),
                    e.revenue_n
                );
            }
            if !doc.lines.iter().any(|l| l.kind == LineKind::Share) {
                bail!("{}: no share line", p.id);
            }
        }
        Kind::Referral => {
            let n = doc
                .lines
                .iter()
                .filter(|l| l.kind == LineKind::Referral)
                .count() as u64;
            if n != e.referrals {
                bail!("{}: {n} referral lines, expected {}", p.id, e.referrals);
            }
        }
    }
    if p.kind == Kind::Lms {
        let seats = doc
            .lines
            .iter()
            .find(|l| l.kind == LineKind::Revenue && l.meter.as_deref() == Some("active_learners"))
            .and_then(|l| l.quantity)
            .with_context(|| format!("{}: no licence line", p.id))?;
        if seats != Decimal::from(e.learners_n()) {
            bail!(
                "{}: licence for {seats} learners, expected {}",
                p.id,
                e.learners_n()
            );
        }
        if p.year_ends_october
            && !doc.lines.iter().any(|l| l.kind == LineKind::MinimumTrueUp)
            && doc.total < Decimal::from(60_000)
        {
            bail!("{}: the year-end statement has no minimum true-up", p.id);
        }
    }
    Ok(())
}

fn check_run(items: &[RunItem], plan: &Plan, exp: &[Expect]) -> anyhow::Result<()> {
    if items.len() != plan.partners.len() {
        bail!(
            "the run made {} statements, expected {}",
            items.len(),
            plan.partners.len()
        );
    }
    let index: HashMap<&str, usize> = plan
        .partners
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    for item in items {
        let st = match &item.outcome {
            Ok(st) => st,
            Err(e) => bail!(
                "statement of {} ({}) FAILED: {e}",
                item.partner,
                item.agreement
            ),
        };
        let i = index[item.partner.as_str()];
        check_statement(st, &plan.partners[i], &exp[i])?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The profile: where a run's time goes.

#[derive(Default, Clone)]
struct PartTimes {
    arrived_after: Duration,
    meter_unique: Duration,
    meter_count: Duration,
    revenue: Duration,
    referral: Duration,
    late: Duration,
    lines: Duration,
    generate: Duration,
}

async fn profile(
    state: &AppState,
    plan: &Plan,
    exp: &[Expect],
    runs_median: Duration,
) -> anyhow::Result<()> {
    let svc = state.statements();
    let who = partner_gateway::audit::Who::cli();
    // 1. One more run, with every SQL statement's time captured.
    let cpu = CpuSample::now();
    capture_start();
    let t = Instant::now();
    let items = svc.run(PERIOD, run_now(), &who, |_, _| {}).await;
    let wall = t.elapsed();
    let stats = capture_stop();
    check_run(&items, plan, exp)?;
    let n = plan.partners.len() as f64;
    let sql_total: f64 = stats.values().map(|s| s.secs).sum();
    println!(
        "  profile 1: a run with SQL timing on: {:.0} ms wall (median of the timed runs {:.0} ms) {}; \
         SQL time summed over statements {:.0} ms (several run at once: {} connections)",
        ms(wall),
        ms(runs_median),
        cpu_note(&cpu),
        sql_total * 1000.0,
        state.config.database.max_connections.clamp(1, 8),
    );
    let mut by_time: Vec<_> = stats.iter().collect();
    by_time.sort_by(|a, b| b.1.secs.total_cmp(&a.1.secs));
    println!(
        "    {:<40} {:>7} {:>8} {:>10} {:>6} {:>9} {:>10}",
        "SQL", "count", "per stmt", "total ms", "share", "mean ms", "rows"
    );
    for (k, s) in by_time {
        println!(
            "    {:<40} {:>7} {:>8.1} {:>10.0} {:>5.0}% {:>9.2} {:>10}",
            k,
            s.count,
            s.count as f64 / n,
            s.secs * 1000.0,
            s.secs * 100.0 / sql_total.max(1e-9),
            s.secs * 1000.0 / s.count.max(1) as f64,
            s.rows
        );
    }

    // 2. Each partner alone, one call at a time: the parts of a statement.
    let period = Period::parse(PERIOD, PeriodKind::Monthly).map_err(|e| anyhow::anyhow!(e))?;
    let prev = Period::parse(PREVIOUS, PeriodKind::Monthly).map_err(|e| anyhow::anyhow!(e))?;
    let now = run_now();
    let as_of = now - chrono::Duration::seconds(state.config.statements.settle_secs as i64);
    let mut rows: Vec<(usize, PartTimes)> = Vec::new();
    for (i, p) in plan.partners.iter().enumerate() {
        let id = p.agreement_id();
        let a = state
            .agreements
            .version_for(&id, period)
            .with_context(|| format!("no agreement {id}"))?;
        let (start, end) = period.bounds(a.tz);
        let span = st_store::Span {
            partner_id: &p.id,
            start,
            end,
            as_of,
            exclude_self_reported: false,
        };
        let mut pt = PartTimes::default();
        let t = Instant::now();
        // As the service does: the meters read without the cut-off when nothing arrived after it.
        let cutoff = st_store::arrived_after(&state.db, span)
            .await?
            .then_some(as_of);
        pt.arrived_after = t.elapsed();
        for name in a.meters() {
            let meter = &state.meters[&name];
            let t = Instant::now();
            meter_value(
                &state.db,
                &p.id,
                meter,
                Window { start, end },
                cutoff,
                false,
            )
            .await?;
            if name == "active_learners" {
                pt.meter_unique += t.elapsed();
            } else {
                pt.meter_count += t.elapsed();
            }
        }
        if a.config.revenue.recorded {
            let t = Instant::now();
            let r = st_store::revenue_events(&state.db, span).await?;
            pt.revenue = t.elapsed();
            if r.map(|v| v.len() as u64).ok() != Some(exp[i].revenue_n) {
                bail!("profile: revenue events of {} do not match", p.id);
            }
        }
        let types: Vec<String> = a
            .config
            .referrals
            .iter()
            .map(|r| r.event_type.clone())
            .collect();
        if !types.is_empty() {
            let t = Instant::now();
            let r = st_store::referral_events(&state.db, span, &types).await?;
            pt.referral = t.elapsed();
            if r.map(|v| v.len() as u64).ok() != Some(exp[i].referrals) {
                bail!("profile: milestone events of {} do not match", p.id);
            }
        }
        let issued = st_store::finalized_of_agreement(&state.db, &id).await?;
        if let Some(last) = issued.last() {
            let (first_start, _) = prev.bounds(a.tz);
            let t = Instant::now();
            st_store::late_usage_span(
                &state.db,
                &p.id,
                first_start,
                start,
                last.ledger_as_of,
                as_of,
            )
            .await?;
            pt.late = t.elapsed();
        }
        let t = Instant::now();
        svc.period_lines(&id, period, as_of).await?;
        pt.lines = t.elapsed();
        let t = Instant::now();
        svc.generate(&p.id, Some(&id), PERIOD, now, &who).await?;
        pt.generate = t.elapsed();
        rows.push((i, pt));
    }
    let sum = |f: fn(&PartTimes) -> Duration| -> Duration { rows.iter().map(|(_, p)| f(p)).sum() };
    let generate_total = sum(|p| p.generate);
    println!(
        "  profile 2: the {} statements one at a time (generate alone: {:.0} ms in total; the parts \
         below are timed on their own calls, before each generate):",
        rows.len(),
        ms(generate_total)
    );
    let parts: [(&str, Duration); 7] = [
        (
            "arrived after the cut-off? (EXISTS)",
            sum(|p| p.arrived_after),
        ),
        (
            "meter active_learners (UNIQUE_COUNT)",
            sum(|p| p.meter_unique),
        ),
        ("meter launches (COUNT)", sum(|p| p.meter_count)),
        ("revenue events: fetch + parse", sum(|p| p.revenue)),
        ("milestone events: fetch + parse", sum(|p| p.referral)),
        ("late usage span", sum(|p| p.late)),
        ("period_lines (all inputs + calc)", sum(|p| p.lines)),
    ];
    for (name, d) in parts {
        println!(
            "    {name:<40} {:>9.0} ms  {:>5.1}% of generate",
            ms(d),
            ms(d) * 100.0 / ms(generate_total).max(1e-9)
        );
    }
    println!(
        "    {:<40} {:>9.0} ms  (the rest of generate: late usage, the write, reading back)",
        "generate - period_lines",
        ms(generate_total.saturating_sub(sum(|p| p.lines)))
    );
    let mut by_gen = rows.clone();
    by_gen.sort_by_key(|r| std::cmp::Reverse(r.1.generate));
    println!(
        "    slowest statements: partner (kind, events, distinct learners, revenue events): generate = \
         arrived-after + meters + revenue + milestones + late span + rest, ms"
    );
    for (i, pt) in by_gen.iter().take(8) {
        let p = &plan.partners[*i];
        let e = &exp[*i];
        let known = pt.arrived_after
            + pt.meter_unique
            + pt.meter_count
            + pt.revenue
            + pt.referral
            + pt.late;
        println!(
            "    {:<13} ({:?}, {} events, {} learners, {} revenue): {:.0} = {:.0} + {:.0} + {:.0} + {:.0} + {:.0} + {:.0}",
            p.id,
            p.kind,
            e.events,
            e.learners_n(),
            e.revenue_n,
            ms(pt.generate),
            ms(pt.arrived_after),
            ms(pt.meter_unique + pt.meter_count),
            ms(pt.revenue),
            ms(pt.referral),
            ms(pt.late),
            ms(pt.generate.saturating_sub(known))
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Per backend.

struct Report {
    backend: Backend,
    load: Option<Load>,
    run: Timings,
    base: Timings,
    run_cpu: Vec<f64>,
    base_cpu: Vec<f64>,
    storage: String,
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
    plan: &Arc<Plan>,
    backend: Backend,
    url: &str,
    sqlite_file: Option<&Path>,
) -> anyhow::Result<Report> {
    let state = open_state(plan, url, o).await?;
    let result = async {
        if let Db::Postgres(p) = &state.db {
            let (jit, wm): (String, String) =
                sqlx::query_as("SELECT current_setting('jit'), current_setting('work_mem')")
                    .fetch_one(p)
                    .await?;
            println!("  postgres: jit={jit}, work_mem={wm} (the gateway's connections)");
        }
        println!(
            "  pool of {} connections; the run generates {} statements at a time",
            state.config.database.max_connections,
            state.config.database.max_connections.clamp(1, 8)
        );
        let key = ledger_key(o);
        let (load_report, exp) = match loaded_key(&state.db).await {
            Some(k) if k == key => {
                println!(
                    "  reusing the ledger already loaded ({k}); regenerating the expectations"
                );
                let p2 = plan.clone();
                let seed = o.seed;
                let exp = tokio::task::spawn_blocking(move || generate(&p2, seed, 1, None)).await?;
                finalize_previous(&state, plan).await?;
                (None, exp)
            }
            Some(k) => bail!("the store holds another ledger ({k}); use a fresh one"),
            None => {
                let n = scalar_i64(&state.db, "SELECT COUNT(*) FROM usage_events").await?;
                if n != 0 {
                    bail!("the store already holds {n} events but no bench ledger");
                }
                finalize_previous(&state, plan).await?;
                let (l, exp) = load(&state, plan, o).await?;
                exec(
                    &state.db,
                    &format!("INSERT INTO bench_meta (k, v) VALUES ('ledger', '{key}')"),
                )
                .await?;
                (Some(l), exp)
            }
        };
        let n = scalar_i64(&state.db, "SELECT COUNT(*) FROM usage_events").await?;
        if n != o.events as i64 {
            bail!("usage_events holds {n} events, expected {}", o.events);
        }
        // The steady state: a ledger that has kept provenance since before the month billed
        // (this store's migration ran today, after October), so statements count the
        // gateway's own types' provenance from the index. The first month after an upgrade
        // reads those rows instead.
        exec(
            &state.db,
            "UPDATE ledger_provenance SET since_us = 1767225600000000",
        )
        .await?;
        let svc = state.statements();
        let who = partner_gateway::audit::Who::cli();
        let (mut run, mut base) = (Timings::default(), Timings::default());
        let (mut run_cpu, mut base_cpu) = (Vec::new(), Vec::new());
        for i in 0..o.runs {
            let cpu = CpuSample::now();
            let t = Instant::now();
            let rows = baseline(&state.db).await?;
            base.0.push(t.elapsed());
            base_cpu.push(cpu_busy(&cpu).unwrap_or(0.0));
            check_baseline(&rows, plan, &exp)?;
            println!(
                "  run {}: baseline {:>8.0} ms ({} groups) {}",
                i + 1,
                ms(*base.0.last().unwrap()),
                rows.len(),
                cpu_note(&cpu)
            );
            let before = scalar_i64(
                &state.db,
                &format!("SELECT COUNT(*) FROM statements WHERE period = '{PERIOD}'"),
            )
            .await?;
            let cpu = CpuSample::now();
            let t = Instant::now();
            let items = svc.run(PERIOD, run_now(), &who, |_, _| {}).await;
            run.0.push(t.elapsed());
            run_cpu.push(cpu_busy(&cpu).unwrap_or(0.0));
            check_run(&items, plan, &exp)?;
            let drafts = scalar_i64(
                &state.db,
                &format!(
                    "SELECT COUNT(*) FROM statements WHERE period = '{PERIOD}' AND status = 'draft'"
                ),
            )
            .await?;
            if drafts != plan.partners.len() as i64 {
                bail!(
                    "{drafts} drafts for {PERIOD} in the store, expected {}",
                    plan.partners.len()
                );
            }
            println!(
                "  run {}: statements {:>8.0} ms ({} drafts {}, all checked) {}",
                i + 1,
                ms(*run.0.last().unwrap()),
                items.len(),
                if before == 0 {
                    "inserted"
                } else {
                    "recomputed (updated)"
                },
                cpu_note(&cpu)
            );
        }
        println!("  baseline:   {}", base.show(0, 0));
        println!("  statements: {}", run.show(0, 0));
        println!(
            "  ratio statements / baseline (medians) = {:.2} (aim: <= 2)",
            run.median().as_secs_f64() / base.median().as_secs_f64()
        );
        if o.profile {
            profile(&state, plan, &exp, run.median()).await?;
        }
        let storage = storage_note(&state.db, sqlite_file).await;
        println!("  {storage}");
        Ok::<_, anyhow::Error>(Report {
            backend,
            load: load_report,
            run,
            base,
            run_cpu,
            base_cpu,
            storage,
        })
    }
    .await;
    state.db.close().await;
    result
}

async fn bench_sqlite(o: &Opts, plan: &Arc<Plan>) -> anyhow::Result<Report> {
    let dir = tempfile::Builder::new()
        .prefix("pgw-bench-statements-")
        .tempdir_in(
            std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from),
        )?;
    let file = o
        .sqlite_file
        .clone()
        .unwrap_or_else(|| dir.path().join("bench.db"));
    let url = format!("sqlite://{}", file.display());
    println!("== SQLite ({url})");
    bench_backend(o, plan, Backend::Sqlite, &url, Some(&file)).await
}

async fn bench_postgres(o: &Opts, plan: &Arc<Plan>) -> anyhow::Result<Report> {
    let pg = match &o.postgres_db {
        Some(n) => PgDatabase::create_or_reuse(&o.pg_url, n.clone()).await?,
        None => PgDatabase::create(&o.pg_url, "pgw_bench_").await?,
    };
    println!(
        "== PostgreSQL ({})",
        partner_gateway::db::redact_url(&pg.url)
    );
    let result = bench_backend(o, plan, Backend::Postgres, &pg.url, None).await;
    pg.finish(o.postgres_db.is_some()).await;
    result
}

fn summary(o: &Opts, plan: &Plan, reports: &[Report]) {
    println!();
    let kinds = |k: Kind| plan.partners.iter().filter(|p| p.kind == k).count();
    println!(
        "## Summary: statements for {PERIOD}, {} events, {} partners ({} EHR, {} marketplace, {} LMS, {} referral), {} runs",
        o.events,
        o.partners,
        kinds(Kind::Ehr),
        kinds(Kind::Marketplace),
        kinds(Kind::Lms),
        kinds(Kind::Referral),
        o.runs
    );
    println!();
    println!(
        "| backend | load | statement run min / median / max | baseline min / median / max | ratio (medians) | <= 2x |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    for r in reports {
        let load = r.load.as_ref().map_or_else(
            || "(reused)".to_owned(),
            |l| {
                format!(
                    "{:.0} s ({:.0} events/s; + {:.0} s {})",
                    l.secs,
                    l.events as f64 / l.secs,
                    l.maintenance_secs,
                    l.maintenance
                )
            },
        );
        let ratio = r.run.median().as_secs_f64() / r.base.median().as_secs_f64();
        println!(
            "| {} | {load} | {:.2} / {:.2} / {:.2} s | {:.2} / {:.2} / {:.2} s | {ratio:.2} | {} |",
            r.backend.title(),
            r.run.min().as_secs_f64(),
            r.run.median().as_secs_f64(),
            r.run.max().as_secs_f64(),
            r.base.min().as_secs_f64(),
            r.base.median().as_secs_f64(),
            r.base.max().as_secs_f64(),
            if ratio <= 2.0 { "yes" } else { "NO" }
        );
    }
    println!();
    for r in reports {
        let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        println!(
            "- {}: statement runs {} ms; baseline runs {} ms; CPU busy (both cores) {:.0}% in the runs, \
             {:.0}% in the baseline; {}{}",
            r.backend.title(),
            r.run
                .0
                .iter()
                .map(|d| format!("{:.0}", ms(*d)))
                .collect::<Vec<_>>()
                .join(", "),
            r.base
                .0
                .iter()
                .map(|d| format!("{:.0}", ms(*d)))
                .collect::<Vec<_>>()
                .join(", "),
            avg(&r.run_cpu),
            avg(&r.base_cpu),
            r.storage,
            r.load.as_ref().map_or_else(String::new, |l| format!(
                "; {} load transactions",
                l.batches
            ))
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry().with(CaptureLayer).init();

    let o = parse_args()?;
    let plan = Arc::new(plan(&o));
    println!(
        "statements bench: {} events over {} partners in {PERIOD}, {} runs, batches of {}, seed {}",
        o.events, o.partners, o.runs, o.batch, o.seed
    );
    let biggest = plan.partners.iter().min_by_key(|p| p.rank).unwrap();
    println!(
        "  volumes Zipf (1/rank): the biggest partner {} ({:?}) gets {:.1}% of the events",
        biggest.id,
        biggest.kind,
        biggest.weight * 100.0 / plan.cum.last().unwrap()
    );
    let (o, plan) = (&o, &plan);
    let (reports, failed) = each_backend(
        &o.backends,
        Backend::title,
        |backend| async move {
            match backend {
                Backend::Sqlite => bench_sqlite(o, plan).await,
                Backend::Postgres => bench_postgres(o, plan).await,
            }
        },
        |_| false,
    )
    .await;
    summary(o, plan, &reports);
    fail_if_any(&failed, "")
}
