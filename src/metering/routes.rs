//! `POST /v1/usage/events`, `GET /v1/usage/query`, `GET /v1/usage/meters`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use chrono::Utc;
use serde_json::{Value, json};

use super::MAX_BATCH;
use super::ingest::{Attribution, IngestError, Ingested, ingest_batch};
use super::query::{QueryError, parse_query, render};
use super::store::query_meter;
use super::window::windows;
use crate::apikeys::Role;
use crate::app::AppState;
use crate::http::auth::Caller;
use crate::http::{ApiError, Body, Query};

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/usage/events", post(ingest))
        .route("/v1/usage/query", get(query))
        .route("/v1/usage/meters", get(meters))
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Forbidden(m) => ApiError::Forbidden(m),
            IngestError::Invalid(errors) => ApiError::Validation {
                detail: format!(
                    "{} problem(s) in the batch; nothing was written",
                    errors.len()
                ),
                errors,
            },
            IngestError::TooMany(_) => ApiError::bad_request("batch_too_large", e.to_string()),
            IngestError::Empty => ApiError::bad_request("empty_batch", e.to_string()),
            IngestError::Store(e) => ApiError::Internal(e),
        }
    }
}

/// What the body must be, from its content type.
enum Shape {
    Single,
    Batch,
    Either,
}

/// Ingest one CloudEvent or a batch of up to 1000 (structured or batched content mode,
/// <https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md>).
/// Answers 202 only after the batch is committed; a batch is written whole or not at all.
async fn ingest(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<(StatusCode, Json<Ingested>), ApiError> {
    caller.require(&[Role::Partner, Role::Admin, Role::App])?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let shape = match essence.as_str() {
        "application/json" => Shape::Either,
        "application/cloudevents+json" => Shape::Single,
        "application/cloudevents-batch+json" => Shape::Batch,
        _ => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content type {content_type:?} is not accepted: use application/json, \
                 application/cloudevents+json or application/cloudevents-batch+json"
            )));
        }
    };
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
    })?;
    let values = match (shape, value) {
        (Shape::Single | Shape::Either, v @ Value::Object(_)) => vec![v],
        (Shape::Batch | Shape::Either, Value::Array(items)) => items,
        (Shape::Single, _) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "application/cloudevents+json carries one event: a JSON object",
            ));
        }
        (Shape::Batch, _) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "application/cloudevents-batch+json carries a JSON array of events",
            ));
        }
        (Shape::Either, _) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "the body must be one event (a JSON object) or a batch (a JSON array)",
            ));
        }
    };
    if values.len() > MAX_BATCH {
        return Err(IngestError::TooMany(values.len()).into());
    }
    let attribution = match (&caller.role, &caller.partner_id) {
        (Role::Partner, Some(p)) => Attribution::Fixed(p.as_str()),
        _ => Attribution::Named { default: None },
    };
    let config = state.config.clone();
    let ingested = ingest_batch(
        &state.db,
        values,
        attribution,
        |p| config.partner(p).is_some(),
        Utc::now(),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(ingested)))
}

/// `GET /v1/usage/query?meter=M&partner=P&from=T&to=T&window=hour|day|month&tz=ZONE&group_by=F`
async fn query(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(
        &params,
        &state.meters,
        caller.partner_id.as_deref(),
        Utc::now(),
    )
    .map_err(|e| match e {
        QueryError::Invalid(errors) => ApiError::Validation {
            detail: "the query parameters are invalid".into(),
            errors,
        },
        QueryError::UnknownMeter(m) => ApiError::NotFound(m),
    })?;
    caller.check_partner(&q.partner)?;
    if state.config.partner(&q.partner).is_none() {
        return Err(ApiError::NotFound(format!(
            "unknown partner {:?}",
            q.partner
        )));
    }
    let wins = windows(q.from, q.to, q.size, q.tz)
        .map_err(|e| ApiError::bad_request("invalid_range", e.to_string()))?;
    let buckets = query_meter(&state.db, &q.partner, q.meter, &wins, &q.group_fields, None).await?;
    let sandbox = state.sandbox_partner(&q.partner);
    Ok(Json(render(&q, &wins, buckets, sandbox)))
}

/// The configured meters, so clients can discover names and group-by fields.
async fn meters(State(state): State<AppState>, _caller: Caller) -> Json<Value> {
    let mut list: Vec<Value> = state
        .meters
        .values()
        .map(|m| {
            json!({
                "name": m.name,
                "description": m.description,
                "aggregation": m.aggregation.as_str(),
                "event_types": state.config.meters.iter().find(|c| c.name == m.name).map(|c| c.event_types.clone()),
                "value": state.config.meters.iter().find(|c| c.name == m.name).and_then(|c| c.value.clone()),
                "group_by": m.group_by.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Json(json!({ "data": list }))
}
