//! What `/metrics` exports beyond the counters the areas increment: a `# HELP` line for every
//! metric, every known series present from the start (at zero, so a rate or an alert has a
//! baseline before the first event), the build, the process (CPU, memory, file descriptors),
//! the database pool, and the shared queues counted from the store at scrape time.
//! `deploy/metrics.txt` lists the names; a test checks the running gateway exports each.

use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use crate::config::Config;
use crate::db::Db;

/// Launch protocols, as `gateway_launches_total{protocol}`.
pub const LAUNCH_PROTOCOLS: [&str; 3] = ["smart", "lti", "lti11"];
/// Sign-in protocols, as `gateway_sso_logins_total{protocol}`.
pub const SSO_PROTOCOLS: [&str; 2] = ["oidc", "saml"];
/// Outcomes of a launch or sign-in: the browser got through, was refused (a 4xx page: bad
/// state, signature, expired), or the gateway or the partner failed (5xx).
pub const OUTCOMES: [&str; 3] = ["completed", "refused", "failed"];
/// The `partner` label while the partner is not known yet (a state that never existed).
pub const UNKNOWN_PARTNER: &str = "unknown";

/// The commit the binary was built from (`build.rs`: git, or `GATEWAY_BUILD_COMMIT`).
pub const COMMIT: &str = env!("PARTNER_GATEWAY_COMMIT");
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `# HELP` and units for every metric. Called once, when the recorder is installed.
pub(super) fn describe() {
    describe_counter!(
        "http_requests_total",
        "Requests answered, by method, matched route (or unmatched) and status; timeouts (503) and panics (500) included"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time from the request's arrival to its answer, by method, route and status"
    );
    describe_gauge!(
        "gateway_build_info",
        "Always 1; the labels name the running version and commit"
    );
    describe_gauge!(
        "gateway_db_pool_connections",
        "Database connections of this instance's pool, by state (in_use, idle)"
    );
    describe_gauge!(
        "gateway_db_pool_max_connections",
        "The pool's maximum (database.max_connections)"
    );
    describe_histogram!(
        "gateway_db_acquire_seconds",
        Unit::Seconds,
        "Wait to start a transaction: a pool connection (PostgreSQL) or the writer's turn (SQLite)"
    );
    describe_counter!(
        "gateway_usage_events_total",
        "Usage events offered to the ledger, by outcome (accepted, duplicate, rejected, dropped)"
    );
    describe_gauge!(
        "gateway_jobs",
        "Jobs in the shared queue by state, counted from the database at scrape time"
    );
    describe_counter!(
        "gateway_jobs_dead_total",
        "Jobs that ran out of attempts on this instance"
    );
    describe_gauge!(
        "gateway_webhook_deliveries",
        "Webhook deliveries by partner, endpoint and state (pending: waiting or in flight; failed: given up), counted from the database at scrape time"
    );
    describe_counter!(
        "gateway_webhook_attempts_total",
        "Webhook delivery attempts made by this instance, by outcome (succeeded, failed)"
    );
    describe_counter!(
        "gateway_launches_total",
        "Launches by protocol (smart, lti, lti11), partner and outcome (completed, refused, failed)"
    );
    describe_counter!(
        "gateway_sso_logins_total",
        "Single sign-ons by protocol (oidc, saml), partner and outcome (completed, refused, failed)"
    );
    describe_counter!(
        "gateway_lti_migration_claims_ignored_total",
        "LTI 1.3 launches whose lti1p1 migration claim was not trusted (unsigned, wrong consumer, bad signature); the launch went on without joining the learner's 1.1 identity"
    );
    describe_gauge!(
        "gateway_statements_hash_mismatches",
        "Issued statements whose stored content no longer matches their hash, at the last check"
    );
    describe_counter!(
        "gateway_sqlite_commits_total",
        "SQLite COMMITs (group commit)"
    );
    describe_counter!(
        "gateway_ledger_subjects_pseudonymized_total",
        "Ledger rows written with a person's id as the subject (before pseudonyms, or by an older instance) that were converted to the pseudonym"
    );
    describe_counter!(
        "gateway_privacy_purged_total",
        "Rows removed or stripped of personal fields by the retention purge, by kind (launches, webhook_payloads, states, scores, finished_jobs, lti_people, audit_entries, ledger_subjects, console)"
    );
    describe_counter!(
        "gateway_privacy_purge_runs_total",
        "Retention purges run to the end (one job per privacy.purge_interval_secs across instances)"
    );
    describe_counter!(
        "gateway_privacy_erasures_total",
        "People erased (POST /v1/privacy/erasures or privacy erase)"
    );
    describe_counter!(
        "gateway_postgres_ledger_writes_total",
        "Ledger INSERT statements on PostgreSQL (group insert: gateway_usage_events_total / this = events per write); 0 on SQLite"
    );
    describe_counter!(
        "gateway_sqlite_committed_transactions_total",
        "Transactions the SQLite commits carried"
    );
}

/// Put every series whose labels are known at start in place at zero (or its value):
/// the build, the outcomes of each protocol for each configured partner, the ledger's and
/// the webhook sender's outcomes. Idempotent (a second app in one process adds nothing).
pub fn register(config: &Config, db: &Db) {
    metrics::gauge!("gateway_build_info", "version" => VERSION, "commit" => COMMIT).set(1.0);
    start_time();
    for outcome in ["accepted", "duplicate", "rejected", "dropped"] {
        metrics::counter!("gateway_usage_events_total", "outcome" => outcome).increment(0);
    }
    for outcome in ["succeeded", "failed"] {
        metrics::counter!("gateway_webhook_attempts_total", "outcome" => outcome).increment(0);
    }
    metrics::counter!("gateway_jobs_dead_total").increment(0);
    metrics::counter!("gateway_lti_migration_claims_ignored_total").increment(0);
    metrics::counter!("gateway_postgres_ledger_writes_total").increment(0);
    metrics::counter!("gateway_ledger_subjects_pseudonymized_total").increment(0);
    metrics::counter!("gateway_privacy_purge_runs_total").increment(0);
    metrics::counter!("gateway_privacy_erasures_total").increment(0);
    for kind in crate::privacy::purge::KINDS {
        metrics::counter!("gateway_privacy_purged_total", "kind" => kind).increment(0);
    }
    metrics::gauge!("gateway_statements_hash_mismatches").increment(0.0);
    if db.sqlite_commit_stats().is_some() {
        metrics::counter!("gateway_sqlite_commits_total").increment(0);
        metrics::counter!("gateway_sqlite_committed_transactions_total").increment(0);
    }
    // Launch series for the protocols each partner is registered for (and `unknown`: a
    // launch refused before its partner is known); sign-in series for every partner, whose
    // connections live in the store.
    let mut series: Vec<(String, Vec<&'static str>)> = config
        .partners
        .iter()
        .map(|p| {
            let lti = p.lti.as_ref();
            let registered = [
                ("smart", p.smart.is_some()),
                ("lti", lti.is_some()),
                ("lti11", lti.is_some_and(|l| !l.lti11.is_empty())),
            ];
            let protocols = registered.into_iter().filter(|(_, on)| *on).map(|(p, _)| p);
            (p.id.clone(), protocols.collect())
        })
        .collect();
    series.push((UNKNOWN_PARTNER.to_owned(), LAUNCH_PROTOCOLS.to_vec()));
    for (partner, protocols) in series {
        for outcome in OUTCOMES {
            for protocol in &protocols {
                metrics::counter!("gateway_launches_total", "protocol" => *protocol, "partner" => partner.clone(), "outcome" => outcome)
                    .increment(0);
            }
            for protocol in SSO_PROTOCOLS {
                metrics::counter!("gateway_sso_logins_total", "protocol" => protocol, "partner" => partner.clone(), "outcome" => outcome)
                    .increment(0);
            }
        }
    }
}

tokio::task_local! {
    /// The partner a launch or sign-in turned out to belong to, noted by the flow as soon
    /// as it knows (a refusal after that point is counted against the partner).
    static PARTNER: std::cell::RefCell<Option<String>>;
}

/// Note the partner of the launch or sign-in being counted by [`counted`] (no-op outside).
pub fn note_partner(partner_id: &str) {
    let _ = PARTNER.try_with(|p| *p.borrow_mut() = Some(partner_id.to_owned()));
}

/// Run a launch or sign-in flow and count its outcome by protocol and partner: a page is
/// a refusal (4xx) or a failure (5xx) by its status.
pub async fn counted<T>(
    protocol: &'static str,
    flow: impl std::future::Future<Output = Result<T, crate::http::page::Page>>,
) -> Result<T, crate::http::page::Page> {
    let (result, partner) = PARTNER
        .scope(std::cell::RefCell::new(None), async {
            let r = flow.await;
            (r, PARTNER.with(|p| p.borrow().clone()))
        })
        .await;
    let refusal = result.as_ref().err().map(|page| page.status.as_u16());
    count_launch(protocol, partner.as_deref(), refusal);
    result
}

/// Count a launch (`gateway_launches_total`) or a sign-in (`gateway_sso_logins_total`).
pub fn count_launch(protocol: &'static str, partner: Option<&str>, status: Option<u16>) {
    let (name, partner, outcome) = launch_labels(protocol, partner, status);
    metrics::counter!(name, "protocol" => protocol, "partner" => partner, "outcome" => outcome)
        .increment(1);
}

fn launch_labels(
    protocol: &'static str,
    partner: Option<&str>,
    status: Option<u16>,
) -> (&'static str, String, &'static str) {
    let name = if SSO_PROTOCOLS.contains(&protocol) {
        "gateway_sso_logins_total"
    } else {
        "gateway_launches_total"
    };
    let outcome = match status {
        None => "completed",
        Some(s) if (400..500).contains(&s) => "refused",
        Some(_) => "failed",
    };
    let partner = partner.unwrap_or(UNKNOWN_PARTNER).to_owned();
    (name, partner, outcome)
}

/// Read the figures that live outside the counters, just before a scrape renders them.
pub async fn sample(db: &Db) {
    sample_pool(db);
    // The queues are shared by every instance and read from the store: each reports the
    // same numbers (alert on max, not sum).
    match crate::jobs::count_jobs_by_state(db).await {
        Ok(counts) => {
            for (s, n) in counts {
                metrics::gauge!("gateway_jobs", "state" => s).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count jobs"),
    }
    match crate::webhooks::store::delivery_backlog(db).await {
        Ok(rows) => report_deliveries(rows),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count webhook deliveries"),
    }
}

/// Set `gateway_webhook_deliveries` per live endpoint. An endpoint deleted since the last
/// scrape drops to zero rather than keep reporting its last backlog.
fn report_deliveries(rows: Vec<crate::webhooks::store::Backlog>) {
    static SEEN: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let mut now: Vec<(String, String, i64, i64)> = rows
        .into_iter()
        .map(|r| {
            let partner = r.partner_id.unwrap_or_else(|| "app".to_owned());
            (partner, r.endpoint_id, r.pending, r.failed)
        })
        .collect();
    {
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<(String, String)> = seen
            .drain(..)
            .filter(|(p, e)| !now.iter().any(|(np, ne, _, _)| np == p && ne == e))
            .collect();
        // Only live endpoints are remembered: a gone one is set to zero once.
        seen.extend(now.iter().map(|(p, e, _, _)| (p.clone(), e.clone())));
        now.extend(gone.into_iter().map(|(p, e)| (p, e, 0, 0)));
    }
    for (partner, endpoint, pending, failed) in now {
        for (state, n) in [("pending", pending), ("failed", failed)] {
            metrics::gauge!("gateway_webhook_deliveries", "partner" => partner.clone(), "endpoint" => endpoint.clone(), "state" => state)
                .set(n as f64);
        }
    }
}

fn sample_pool(db: &Db) {
    let (size, idle, max) = match db {
        Db::Sqlite(p) => (p.size(), p.num_idle(), p.options().get_max_connections()),
        Db::Postgres(p) => (p.size(), p.num_idle(), p.options().get_max_connections()),
    };
    let idle = idle.min(size as usize) as f64;
    metrics::gauge!("gateway_db_pool_connections", "state" => "in_use").set(f64::from(size) - idle);
    metrics::gauge!("gateway_db_pool_connections", "state" => "idle").set(idle);
    metrics::gauge!("gateway_db_pool_max_connections").set(f64::from(max));
}

fn start_time() -> f64 {
    static START: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        process_start().unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        })
    })
}

/// The process figures from `/proc` (Linux; elsewhere they are left out), in Prometheus
/// text with the names and types every Prometheus client uses. Written here rather than
/// through the `metrics` recorder, whose counters hold whole numbers (CPU seconds are not).
pub fn process_text() -> String {
    let Some(p) = read_proc() else {
        return String::new();
    };
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
        ));
    };
    let cpu = p.cpu_centis as f64 / 100.0;
    metric(
        "process_cpu_seconds_total",
        "counter",
        "CPU time (user and system) the process has used",
        format!("{cpu}"),
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of the process",
        p.rss_bytes.to_string(),
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory of the process",
        p.virtual_bytes.to_string(),
    );
    metric(
        "process_open_fds",
        "gauge",
        "File descriptors the process holds open",
        p.open_fds.to_string(),
    );
    if let Some(max) = p.max_fds {
        metric(
            "process_max_fds",
            "gauge",
            "The process's limit on open file descriptors (soft)",
            max.to_string(),
        );
    }
    metric(
        "process_start_time_seconds",
        "gauge",
        "When the process started, in seconds since the Unix epoch",
        format!("{}", start_time()),
    );
    out
}

struct ProcStats {
    /// utime + stime in clock ticks; Linux reports them in USER_HZ, 100 on every
    /// architecture it runs servers on.
    cpu_centis: u64,
    rss_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: Option<u64>,
}

fn read_proc() -> Option<ProcStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let (utime, stime) = parse_stat_cpu(&stat)?;
    Some(ProcStats {
        cpu_centis: utime + stime,
        rss_bytes: status_kib(&status, "VmRSS:")? * 1024,
        virtual_bytes: status_kib(&status, "VmSize:")? * 1024,
        // read_dir's own descriptor is among those counted.
        open_fds: open_fds.saturating_sub(1),
        max_fds: parse_max_open_files(&limits),
    })
}

/// `utime` and `stime` (fields 14 and 15) of `/proc/self/stat`. The command name (field
/// 2) is in parentheses and may hold spaces, so fields are counted after its last `)`.
fn parse_stat_cpu(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime = fields.next()?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// The start of the process from `/proc/self/stat` (field 22, ticks after boot) and the
/// boot time in `/proc/stat`.
fn process_start() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot as f64 + ticks as f64 / 100.0)
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1510 0 0 0 731 52 0 0 20 0 9 0 123456 1000 200";
        assert_eq!(parse_stat_cpu(stat), Some((731, 52)));
    }

    #[test]
    fn limits_and_status_are_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        let status = "Name:\tx\nVmSize:\t  123 kB\nVmRSS:\t  45 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(45));
        assert_eq!(status_kib(status, "VmSize:"), Some(123));
    }

    #[test]
    fn outcomes_follow_the_answer() {
        assert_eq!(
            launch_labels("smart", Some("epic"), None),
            ("gateway_launches_total", "epic".to_owned(), "completed")
        );
        assert_eq!(
            launch_labels("saml", None, Some(400)),
            ("gateway_sso_logins_total", "unknown".to_owned(), "refused")
        );
        assert_eq!(launch_labels("lti", None, Some(502)).2, "failed");
    }

    #[test]
    fn this_process_is_read() {
        if cfg!(target_os = "linux") {
            let p = read_proc().expect("linux has /proc");
            assert!(p.rss_bytes > 0 && p.open_fds > 0);
        }
    }
}
