//! Admin view of the job queue: `GET /v1/jobs` and `POST /v1/jobs/{id}/retry`.

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::apikeys::Role;
use crate::app::AppState;
use crate::http::auth::Caller;
use crate::http::{ApiError, Query};
use crate::time::now_micros;

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/jobs", get(list))
        .route("/v1/jobs/{id}", get(one))
        .route("/v1/jobs/{id}/retry", post(retry))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    kind: Option<String>,
    limit: Option<i64>,
}

/// Jobs, newest change first; `?state=dead` lists the jobs that need a person.
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "data": jobs })))
}

async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let job = super::get_job(&state.db, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("unknown job {id:?}")))?;
    Ok(Json(json!({ "job": job, "payload": job.payload.0 })))
}

/// Requeue a dead job with a fresh set of attempts.
async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    if super::retry_dead_job(&state.db, &id, now_micros()).await? {
        Ok(Json(json!({ "id": id, "state": "pending" })))
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
