//! The job runner: claims due jobs, runs their handlers under a renewed lease, and records
//! the outcome. `run_next` works one job and returns; tests call it to drain the queue.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::backoff::retry_delay;
use super::store::{self, Claimed};
use crate::config::JobsConfig;
use crate::db::Db;
use crate::time::now_micros;

/// What a handler gets.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub id: String,
    pub kind: String,
    pub partner_id: Option<String>,
    pub payload: Value,
    /// 1 on the first try.
    pub attempt: i32,
    pub db: Db,
}

/// How a handler failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// Worth trying again later (a timeout, a 5xx from a partner).
    #[error("{0}")]
    Retry(String),
    /// Will never succeed (the partner refused the request as invalid): dead at once.
    #[error("{0}")]
    Permanent(String),
    /// Try again, not before `after` (a partner's `Retry-After`).
    #[error("{reason}")]
    RetryAfter {
        reason: String,
        after: std::time::Duration,
    },
}

pub type JobFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;
pub type Handler = Arc<dyn Fn(JobContext) -> JobFuture + Send + Sync>;

/// Handlers by job kind.
#[derive(Clone, Default)]
pub struct Handlers(HashMap<String, Handler>);

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register<F, Fut>(&mut self, kind: impl Into<String>, f: F) -> &mut Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        self.0.insert(
            kind.into(),
            Arc::new(move |ctx| Box::pin(f(ctx)) as JobFuture),
        );
        self
    }

    pub fn kinds(&self) -> Vec<String> {
        let mut k: Vec<String> = self.0.keys().cloned().collect();
        k.sort();
        k
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Add `other`'s handlers (its win for a kind both have).
    pub fn extend(&mut self, other: Handlers) -> &mut Self {
        self.0.extend(other.0);
        self
    }
}

/// What one `run_next` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was due.
    Idle,
    Succeeded(String),
    /// Failed; will run again.
    Retrying(String),
    /// Failed for the last time, or permanently.
    Dead(String),
    /// Another worker took the job over (our lease lapsed); we stopped.
    LeaseLost(String),
    /// Shutdown came before the handler finished; the lease was given back.
    Released(String),
}

#[derive(Clone)]
pub struct Runner {
    db: Db,
    handlers: Handlers,
    cfg: JobsConfig,
    instance: String,
}

impl Runner {
    pub fn new(db: Db, handlers: Handlers, cfg: JobsConfig) -> Self {
        Self {
            db,
            handlers,
            cfg,
            instance: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        }
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.cfg.lease_secs)
    }

    /// Claim and run one due job.
    pub async fn run_next(&self) -> anyhow::Result<Outcome> {
        self.run_next_until(&CancellationToken::new()).await
    }

    async fn run_next_until(&self, shutdown: &CancellationToken) -> anyhow::Result<Outcome> {
        let now = now_micros();
        let owner = format!("{}:{}", self.instance, uuid::Uuid::new_v4().simple());
        let lease_until = now + self.lease().as_micros() as i64;
        let kinds = self.handlers.kinds();
        let Some(job) = store::claim_next_job(&self.db, &kinds, &owner, now, lease_until).await?
        else {
            for id in store::bury_abandoned_jobs(&self.db, now).await? {
                tracing::error!(job_id = %id, "job is dead: its worker was lost on the final attempt");
                metrics::counter!("gateway_jobs_dead_total").increment(1);
            }
            return Ok(Outcome::Idle);
        };
        let Some(handler) = self.handlers.0.get(&job.kind).cloned() else {
            // Claimed kinds are filtered to ours, so this is unreachable in practice; give
            // the job back rather than fail it.
            store::release_job(&self.db, &job.id, &owner, now).await?;
            return Ok(Outcome::Released(job.id));
        };
        let span =
            tracing::info_span!("job", job_id = %job.id, kind = %job.kind, attempt = job.attempts);
        self.execute(job, handler, owner, shutdown)
            .instrument(span)
            .await
    }

    async fn execute(
        &self,
        job: Claimed,
        handler: Handler,
        owner: String,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        let ctx = JobContext {
            id: job.id.clone(),
            kind: job.kind.clone(),
            partner_id: job.partner_id.clone(),
            payload: job.payload.0.clone(),
            attempt: job.attempts,
            db: self.db.clone(),
        };
        // Spawned so a panicking handler is an error, not a dead worker.
        let mut task = tokio::spawn(handler(ctx));
        let mut heartbeat = tokio::time::interval(self.lease() / 3);
        heartbeat.tick().await;
        let grace = Duration::from_secs(self.cfg.shutdown_grace_secs);
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::pin!(deadline);

        let result = loop {
            tokio::select! {
                joined = &mut task => break match joined {
                    Ok(r) => r,
                    Err(e) if e.is_panic() => Err(JobError::Retry("the handler panicked".into())),
                    Err(e) => Err(JobError::Retry(format!("the handler was cancelled: {e}"))),
                },
                _ = heartbeat.tick() => {
                    let until = now_micros() + self.lease().as_micros() as i64;
                    if !store::renew_lease(&self.db, &job.id, &owner, until).await? {
                        task.abort();
                        tracing::warn!("lease lost: another worker has the job; stopped this run");
                        return Ok(Outcome::LeaseLost(job.id));
                    }
                }
                _ = &mut deadline => {
                    task.abort();
                    store::release_job(&self.db, &job.id, &owner, now_micros()).await?;
                    tracing::info!("shutdown: job lease released before the handler finished");
                    return Ok(Outcome::Released(job.id));
                }
            }
        };

        let now = now_micros();
        match result {
            Ok(()) => {
                if store::complete_job(&self.db, &job.id, &owner, now).await? {
                    tracing::info!("job succeeded");
                    Ok(Outcome::Succeeded(job.id))
                } else {
                    Ok(Outcome::LeaseLost(job.id))
                }
            }
            Err(e) => {
                let last = job.attempts >= job.max_attempts || matches!(e, JobError::Permanent(_));
                if last {
                    let message = format!("attempt {}/{}: {e}", job.attempts, job.max_attempts);
                    store::bury_job(&self.db, &job.id, &owner, &message, now).await?;
                    tracing::error!(error = %e, "job is dead");
                    metrics::counter!("gateway_jobs_dead_total").increment(1);
                    Ok(Outcome::Dead(job.id))
                } else {
                    let mut delay = retry_delay(
                        job.attempts,
                        Duration::from_millis(self.cfg.backoff_base_ms),
                        Duration::from_secs(self.cfg.backoff_max_secs),
                        rand::random::<f64>(),
                    );
                    if let JobError::RetryAfter { after, .. } = &e {
                        // Honour the partner's wish, within the configured ceiling.
                        delay =
                            delay.max((*after).min(Duration::from_secs(self.cfg.backoff_max_secs)));
                    }
                    let at = now + delay.as_micros() as i64;
                    let message = format!("attempt {}/{}: {e}", job.attempts, job.max_attempts);
                    store::reschedule_job(&self.db, &job.id, &owner, at, &message, now).await?;
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "job failed; will retry");
                    Ok(Outcome::Retrying(job.id))
                }
            }
        }
    }

    /// Work jobs with `jobs.concurrency` workers until `shutdown` is cancelled; in-flight jobs
    /// then get `jobs.shutdown_grace_secs` before their leases are released.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.handlers.is_empty() {
            tracing::info!("job runner: no job kinds registered; not polling");
            return;
        }
        tracing::info!(kinds = ?self.handlers.kinds(), concurrency = self.cfg.concurrency, "job runner started");
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.cfg.concurrency {
            let me = self.clone();
            let shutdown = shutdown.clone();
            workers.spawn(async move { me.work(shutdown).await });
        }
        while workers.join_next().await.is_some() {}
        tracing::info!("job runner stopped");
    }

    async fn work(&self, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.cfg.poll_interval_ms);
        while !shutdown.is_cancelled() {
            match self.run_next_until(&shutdown).await {
                Ok(Outcome::Idle) => {
                    // Jitter the poll so idle workers of many instances do not poll in step.
                    let wait = poll.mul_f64(0.5 + rand::random::<f64>());
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "job runner: store error; backing off"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(poll * 4) => {}
                    }
                }
            }
        }
    }
}
