//! Admin view of the job queue: `GET /v1/jobs` and `POST /v1/jobs/{id}/retry`.

use crate::http::Path;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::apikeys::Role;
use crate::http::auth::Caller;
use crate::http::list::{Page, Paging};
use crate::http::{ApiError, Query};
use crate::state::AppState;
use crate::time::now_micros;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(one))
        .routes(routes!(retry))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// pending, running, succeeded or dead.
    #[param(example = "dead")]
    state: Option<String>,
    /// A job kind, e.g. `lti.score`.
    kind: Option<String>,
    /// At most this many: default 100, 1 to 1000.
    limit: Option<i64>,
    /// A `next_cursor` from the page before.
    cursor: Option<String>,
}

/// A job as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
struct JobView {
    /// `job_...`
    id: String,
    kind: String,
    partner: Option<String>,
    /// pending, running, succeeded or dead.
    state: String,
    attempts: i32,
    max_attempts: i32,
    /// When it runs (next).
    run_at: String,
    /// While running: until when its runner holds it.
    lease_until: Option<String>,
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
}

impl From<&super::Job> for JobView {
    fn from(j: &super::Job) -> Self {
        let at = |us: i64| crate::time::rfc3339(crate::time::from_micros(us));
        JobView {
            id: j.id.clone(),
            kind: j.kind.clone(),
            partner: j.partner_id.clone(),
            state: j.state.clone(),
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            run_at: at(j.run_at_us),
            lease_until: j.lease_until_us.map(at),
            last_error: j.last_error.clone(),
            created_at: at(j.created_at_us),
            updated_at: at(j.updated_at_us),
            finished_at: j.finished_at_us.map(at),
        }
    }
}

crate::page_schema!(JobList, JobView, "A page of jobs, newest first.");

#[derive(Serialize, utoipa::ToSchema)]
struct JobDetail {
    job: JobView,
    /// What the job works on, as its kind defines it.
    payload: Value,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Requeued {
    id: String,
    /// Always `pending`.
    state: String,
}

/// Jobs, newest first; `?state=dead` lists the jobs that need a person.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    operation_id = "list_jobs",
    params(ListQuery),
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<JobView>>, ApiError> {
    caller.require(&[Role::Admin])?;
    if let Some(s) = &q.state
        && !super::STATES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("state {s:?} is not one of {}", super::STATES.join(", ")),
        ));
    }
    let paging = Paging::new("jobs", q.limit, q.cursor.as_deref())?;
    let jobs = super::list_jobs(
        &state.db,
        q.state.as_deref(),
        q.kind.as_deref(),
        paging.after()?,
        paging.fetch(),
    )
    .await?;
    let page = paging.page(jobs, |j| (j.created_at_us, j.id.clone()));
    Ok(Json(Page {
        data: page.data.iter().map(JobView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One job with its payload.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    operation_id = "get_job",
    params(("id" = String, Path, description = "The job's id")),
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "The job", body = JobDetail),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
    )
)]
async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobDetail>, ApiError> {
    caller.require(&[Role::Admin])?;
    let job = super::get_job(&state.db, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("unknown job {id:?}")))?;
    Ok(Json(JobDetail {
        job: JobView::from(&job),
        payload: job.payload.0,
    }))
}

/// Requeue a dead job with a fresh set of attempts.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    tag = "jobs",
    operation_id = "retry_job",
    params(("id" = String, Path, description = "The dead job's id")),
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "Requeued", body = Requeued),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 409, response = crate::http::openapi::Conflict),
    )
)]
async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Requeued>, ApiError> {
    caller.require(&[Role::Admin])?;
    let who = caller.who(&headers);
    if super::retry_dead_job(&state.db, &id, now_micros(), &who).await? {
        Ok(Json(Requeued {
            id,
            state: "pending".into(),
        }))
    } else {
        match super::get_job(&state.db, &id).await? {
            None => Err(ApiError::NotFound(format!("unknown job {id:?}"))),
            Some(j) => Err(ApiError::Conflict(format!(
                "job {id:?} is {}, not dead",
                j.state
            ))),
        }
    }
}
