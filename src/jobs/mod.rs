//! Durable jobs. A job is enqueued in the same transaction as the change that causes it, so
//! a job exists if and only if its cause was committed. Workers claim jobs with a lease
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's single writer makes the claim statement
//! atomic), renew the lease while they work, and retry failures with exponential backoff and
//! jitter until the job succeeds or runs out of attempts and is dead. A job whose worker died
//! is taken again by any instance once its lease lapses. Handlers must be idempotent.

pub mod backoff;
pub mod routes;
pub mod runner;
pub mod store;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::db::Tx;

pub use runner::{Handler, Handlers, JobContext, JobError, Outcome, Runner};
pub use store::{Job, count_jobs_by_state, get_job, list_jobs, retry_dead_job};

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Names the handler, e.g. `lti.grade_passback`.
    pub kind: String,
    pub partner_id: Option<String>,
    pub payload: Value,
    /// Not before this instant; now when `None`.
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts before the job is dead; `jobs.max_attempts` when `None`.
    pub max_attempts: Option<i32>,
    /// Enqueueing a second job with the same key does nothing, so a retried request does
    /// not create a second job.
    pub dedupe_key: Option<String>,
}

impl NewJob {
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        Self {
            kind: kind.into(),
            partner_id: None,
            payload,
            run_at: None,
            max_attempts: None,
            dedupe_key: None,
        }
    }
}

/// Enqueue inside the caller's transaction. Returns the job id, or `None` when a job with
/// the same dedupe key already exists.
pub async fn enqueue(
    tx: &mut Tx,
    job: &NewJob,
    default_max_attempts: i32,
    now: DateTime<Utc>,
) -> Result<Option<String>, sqlx::Error> {
    store::insert_job(tx, job, default_max_attempts, now).await
}

/// The states a job moves through.
pub const STATES: [&str; 4] = ["pending", "running", "succeeded", "dead"];
