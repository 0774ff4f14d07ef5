//! Admin view of the job queue: `GET /v1/jobs` and `POST /v1/jobs/{id}/retry`.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::apikeys::Role;
use crate::app::AppState;
use crate::http::auth::Caller;
use crate::http::{ApiError, Query};
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
    /// At most this many: default 100, brought into 1 to 1000.
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct JobList {
    data: Vec<super::Job>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct JobDetail {
    job: super::Job,
    /// What the job works on, as its kind defines it.
    payload: Value,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Requeued {
    id: String,
    /// Always `pending`.
    state: String,
}

/// Jobs, newest change first; `?state=dead` lists the jobs that need a person.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    operation_id = "list_jobs",
    params(ListQuery),
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "The jobs", body = JobList),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<JobList>, ApiError> {
    caller.require(&[Role::Admin])?;
    if let Some(s) = &q.state
        && !super::STATES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("state {s:?} is not one of {}", super::STATES.join(", ")),
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let jobs = super::list_jobs(&state.db, q.state.as_deref(), q.kind.as_deref(), limit).await?;
    Ok(Json(JobList { data: jobs }))
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
    let payload = job.payload.0.clone();
    Ok(Json(JobDetail { job, payload }))
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
    Path(id): Path<String>,
) -> Result<Json<Requeued>, ApiError> {
    caller.require(&[Role::Admin])?;
    if super::retry_dead_job(&state.db, &id, now_micros()).await? {
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
