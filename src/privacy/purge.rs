//! The retention purge: what `privacy.retention` says is kept no longer is removed, kind by
//! kind, in batches of `privacy.purge_batch` rows each committed on its own (no long locks,
//! and a purge cut short loses nothing: the next one carries on).
//!
//! It runs as a durable job (`privacy.purge`): every instance's scheduler enqueues one per
//! `privacy.purge_interval_secs` slot under the same dedupe key, so however many instances
//! run, one job per slot is run, by whichever claims it, and a job whose worker died is
//! taken again. Every step is idempotent. `partner-gateway privacy purge` runs one at once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::store;
use crate::config::{Config, PrivacyConfig};
use crate::db::Db;
use crate::jobs::NewJob;
use crate::metering::subject::Subjects;
use crate::time::{from_micros, to_micros};

pub const JOB_KIND: &str = "privacy.purge";

/// The kinds `gateway_privacy_purged_total` counts.
pub const KINDS: [&str; 9] = [
    "launches",
    "webhook_payloads",
    "states",
    "scores",
    "finished_jobs",
    "lti_people",
    "audit_entries",
    "ledger_subjects",
    "console",
];

/// Rows removed (or stripped of personal fields) by one purge, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// Launches whose user, context, tokens and handoff codes were removed.
    pub launches: u64,
    /// Webhook messages whose payloads (and the answers to them) were dropped, after
    /// `webhooks.retention_days`.
    pub webhook_payloads: u64,
    /// SMART, LTI and SSO sign-in states a day past expiry (an LTI `login_hint` is often
    /// the user's id).
    pub states: u64,
    pub scores: u64,
    pub finished_jobs: u64,
    /// LTI person links and identities.
    pub lti_people: u64,
    pub audit_entries: u64,
    /// Ledger rows an older instance wrote with an id as the subject, made pseudonymous.
    pub ledger_subjects: u64,
    /// Console sessions, sign-in links and period runs past `console_days`.
    pub console: u64,
}

impl Purged {
    pub fn total(&self) -> u64 {
        self.launches
            + self.webhook_payloads
            + self.states
            + self.scores
            + self.finished_jobs
            + self.lti_people
            + self.audit_entries
            + self.ledger_subjects
            + self.console
    }
}

/// The instant before which each kind is no longer kept, at `now`.
fn cutoff(now: DateTime<Utc>, days: u64) -> i64 {
    let days = i64::try_from(days).unwrap_or(i64::MAX / 86_400_000_000);
    to_micros(now).saturating_sub(days.saturating_mul(86_400_000_000))
}

/// Run every kind of purge to the end. Each batch is its own transaction; the counts of
/// what was done are added to the metrics as they are committed.
pub async fn purge(
    db: &Db,
    subjects: &Subjects,
    config: &Config,
    now: DateTime<Utc>,
) -> anyhow::Result<Purged> {
    let cfg = &config.privacy;
    let r = &cfg.retention;
    let n = i64::from(cfg.purge_batch.max(1));
    let now_us = to_micros(now);
    let mut done = Purged::default();

    let launch_cutoff = cutoff(now, r.launch_days);
    loop {
        let ids = store::expired_launches(db, launch_cutoff, n).await?;
        if ids.is_empty() {
            break;
        }
        let mut tx = db.begin().await?;
        let k = store::scrub_launches(&mut tx, &ids, now_us).await?;
        tx.commit().await?;
        count("launches", k);
        done.launches += k;
        if (ids.len() as i64) < n {
            break;
        }
    }
    let before = from_micros(cutoff(now, config.webhooks.retention_days));
    done.webhook_payloads = crate::webhooks::store::purge_before(db, before, now).await?;
    count("webhook_payloads", done.webhook_payloads);
    // Their own purge keeps states a day past expiry ("expired" answers), then drops them.
    done.states = batches(db, Step::States, n, now_us - 86_400_000_000).await?;
    done.scores = batches(db, Step::Scores, n, cutoff(now, r.score_days)).await?;
    done.finished_jobs = batches(db, Step::Jobs, n, cutoff(now, r.finished_job_days)).await?;
    done.lti_people = batches(db, Step::LtiPeople, n, cutoff(now, r.lti_people_days)).await?;
    done.audit_entries = batches(db, Step::Audit, n, cutoff(now, r.audit_log_days)).await?;
    done.console = batches(db, Step::Console, n, cutoff(now, r.console_days)).await?;
    done.ledger_subjects = crate::metering::store::pseudonymize_legacy(db, subjects, n).await?;
    count("ledger_subjects", done.ledger_subjects);
    Ok(done)
}

/// The purges that are one batched delete each.
#[derive(Clone, Copy)]
enum Step {
    States,
    Scores,
    Jobs,
    LtiPeople,
    Audit,
    Console,
}

impl Step {
    fn kind(self) -> &'static str {
        match self {
            Step::States => "states",
            Step::Scores => "scores",
            Step::Jobs => "finished_jobs",
            Step::LtiPeople => "lti_people",
            Step::Audit => "audit_entries",
            Step::Console => "console",
        }
    }
}

/// Run one batched delete until a batch finds less than a full batch.
async fn batches(db: &Db, step: Step, n: i64, cutoff_us: i64) -> anyhow::Result<u64> {
    let mut total = 0;
    loop {
        let mut tx = db.begin().await?;
        let k = match step {
            Step::States => store::purge_states(&mut tx, cutoff_us, n).await?,
            Step::Scores => store::purge_scores(&mut tx, cutoff_us, n).await?,
            Step::Jobs => store::purge_jobs(&mut tx, cutoff_us, n).await?,
            Step::LtiPeople => store::purge_lti_people(&mut tx, cutoff_us, n).await?,
            Step::Audit => store::purge_audit(&mut tx, cutoff_us, n).await?,
            Step::Console => store::purge_console(&mut tx, cutoff_us, n).await?,
        };
        tx.commit().await?;
        count(step.kind(), k);
        total += k;
        if (k as i64) < n {
            return Ok(total);
        }
    }
}

fn count(kind: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!("gateway_privacy_purged_total", "kind" => kind).increment(n);
    }
}

/// Enqueue the purge of the current slot now and at every slot after, until `shutdown`.
/// Every instance does this; the slot's dedupe key makes it one job.
pub async fn schedule(db: Db, cfg: PrivacyConfig, max_attempts: i32, shutdown: CancellationToken) {
    let every = Duration::from_secs(cfg.purge_interval_secs.max(60));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = enqueue(&db, &cfg, max_attempts, Utc::now()).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "could not schedule the privacy purge; trying again next time"
            );
        }
    }
}

/// Enqueue this slot's purge (nothing when it already is).
pub async fn enqueue(
    db: &Db,
    cfg: &PrivacyConfig,
    max_attempts: i32,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<String>> {
    let slot = now.timestamp() / i64::try_from(cfg.purge_interval_secs.max(60)).unwrap_or(3600);
    let mut job = NewJob::new(JOB_KIND, json!({ "slot": slot }));
    job.dedupe_key = Some(format!("{JOB_KIND}:{slot}"));
    let mut tx = db.begin().await?;
    let id = crate::jobs::enqueue(&mut tx, &job, max_attempts, now).await?;
    tx.commit().await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs_count_back_whole_days_and_never_overflow() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let day = 86_400_000_000;
        assert_eq!(cutoff(now, 30), to_micros(now) - 30 * day);
        assert!(cutoff(now, u64::MAX) < 0);
    }
}
