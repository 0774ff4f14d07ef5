//! The `privacy.purge` job's handler: beside the handlers, since it needs the whole state
//! (`purge.rs` does the work and needs none of it).

use chrono::Utc;

use super::purge::{JOB_KIND, purge};
use crate::jobs::{JobContext, JobError};
use crate::state::AppState;

/// The `privacy.purge` job.
pub async fn run_job(state: AppState, _ctx: JobContext) -> Result<(), JobError> {
    let t0 = std::time::Instant::now();
    let done = purge(&state.db, &state.subjects, &state.config, Utc::now())
        .await
        .map_err(|e| JobError::Retry(format!("{e:#}")))?;
    metrics::counter!("gateway_privacy_purge_runs_total").increment(1);
    if done.total() > 0 {
        tracing::info!(
            launches = done.launches,
            webhook_payloads = done.webhook_payloads,
            states = done.states,
            scores = done.scores,
            finished_jobs = done.finished_jobs,
            lti_people = done.lti_people,
            audit_entries = done.audit_entries,
            ledger_subjects = done.ledger_subjects,
            console = done.console,
            secs = t0.elapsed().as_secs_f64(),
            "purged personal data past its retention"
        );
    }
    Ok(())
}

/// The job handler, for `app::job_handlers`.
pub fn job_handlers(state: &AppState) -> crate::jobs::Handlers {
    let mut h = crate::jobs::Handlers::new();
    let st = state.clone();
    h.register(JOB_KIND, move |ctx| run_job(st.clone(), ctx));
    h
}
