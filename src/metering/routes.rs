//! `POST /v1/usage/events`, `GET /v1/usage/query`, `GET /v1/usage/meters`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use super::MAX_BATCH;
use super::ingest::{Attribution, IngestError, Ingested, ingest_batch};
use super::meter::Field;
use super::query::empty_value;
use super::store::query_meter;
use super::window::{WindowSize, windows};
use crate::apikeys::Role;
use crate::app::AppState;
use crate::http::auth::Caller;
use crate::http::{ApiError, Body, FieldError, Query};

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
    const KNOWN: [&str; 7] = ["meter", "partner", "from", "to", "window", "tz", "group_by"];
    let mut errors = Vec::new();
    let mut invalid = |field: &str, reason: String| {
        errors.push(FieldError {
            index: None,
            field: field.to_owned(),
            reason,
        })
    };
    for k in params.keys() {
        if !KNOWN.contains(&k.as_str()) {
            invalid(
                k,
                format!("unknown parameter; expected one of {}", KNOWN.join(", ")),
            );
        }
    }
    let meter_name = params.get("meter").map(String::as_str).unwrap_or("");
    let meter = if meter_name.is_empty() {
        invalid("meter", "is required".into());
        None
    } else {
        state.meters.get(meter_name)
    };
    let partner = match (params.get("partner"), &caller.partner_id) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(own)) => Some(own.clone()),
        (None, None) => {
            invalid("partner", "is required".into());
            None
        }
    };
    let from = parse_time(params.get("from"), "from", &mut invalid);
    let to = match params.get("to") {
        // The ledger keeps microseconds; so does the default end of the range.
        None => Some(Utc::now().trunc_subsecs(6)),
        some => parse_time(some, "to", &mut invalid),
    };
    let size = match params.get("window").map(String::as_str) {
        None | Some("") => Some(None),
        Some(w) => match WindowSize::parse(w) {
            Some(s) => Some(Some(s)),
            None => {
                invalid("window", format!("{w:?} is not one of hour, day, month"));
                None
            }
        },
    };
    let tz_name = params.get("tz").cloned().unwrap_or_else(|| "UTC".into());
    let tz = match tz_name.parse::<Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            invalid(
                "tz",
                format!("{tz_name:?} is not an IANA time zone such as UTC or America/New_York"),
            );
            None
        }
    };
    let group_names: Vec<String> = params
        .get("group_by")
        .map(|g| {
            g.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut group_fields: Vec<Field> = Vec::new();
    if let Some(m) = meter {
        for g in &group_names {
            match m.group_by.iter().find(|(name, _)| name == g) {
                Some((_, f)) => group_fields.push(f.clone()),
                None => {
                    let declared: Vec<&str> = m.group_by.iter().map(|(n, _)| n.as_str()).collect();
                    invalid(
                        "group_by",
                        format!(
                            "meter {:?} cannot group by {g:?}; it declares: {}",
                            m.name,
                            if declared.is_empty() {
                                "none".to_owned()
                            } else {
                                declared.join(", ")
                            }
                        ),
                    );
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation {
            detail: "the query parameters are invalid".into(),
            errors,
        });
    }
    // All present once there are no errors.
    let (Some(partner), Some(from), Some(to), Some(size), Some(tz)) = (partner, from, to, size, tz)
    else {
        return Err(ApiError::bad_request(
            "invalid_query",
            "the query parameters are incomplete",
        ));
    };
    let Some(meter) = meter else {
        let mut known: Vec<&str> = state.meters.keys().map(String::as_str).collect();
        known.sort_unstable();
        return Err(ApiError::NotFound(format!(
            "unknown meter {meter_name:?}; configured meters: {}",
            known.join(", ")
        )));
    };
    caller.check_partner(&partner)?;
    if state.config.partner(&partner).is_none() {
        return Err(ApiError::NotFound(format!("unknown partner {partner:?}")));
    }
    let wins = windows(from, to, size, tz)
        .map_err(|e| ApiError::bad_request("invalid_range", e.to_string()))?;

    let buckets = query_meter(&state.db, &partner, meter, &wins, &group_fields).await?;

    let fmt = |t: DateTime<Utc>| {
        t.with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::AutoSi, true)
    };
    let mut data = Vec::new();
    let mut it = buckets.into_iter().peekable();
    for (i, w) in wins.iter().enumerate() {
        let mut any = false;
        while let Some(b) = it.next_if(|b| b.window == i) {
            any = true;
            let group: Map<String, Value> = group_names
                .iter()
                .cloned()
                .zip(
                    b.group
                        .into_iter()
                        .map(|v| v.map_or(Value::Null, Value::String)),
                )
                .collect();
            data.push(
                json!({"start": fmt(w.start), "end": fmt(w.end), "value": b.value, "group": group}),
            );
        }
        // Without grouping every window is listed, empty ones included, so a chart has no gaps.
        if !any && group_names.is_empty() {
            data.push(json!({"start": fmt(w.start), "end": fmt(w.end), "value": empty_value(meter.aggregation), "group": {}}));
        }
    }
    Ok(Json(json!({
        "meter": meter.name,
        "partner": partner,
        "aggregation": meter.aggregation.as_str(),
        "window": size.map(WindowSize::as_str),
        "tz": tz_name,
        "from": fmt(from),
        "to": fmt(to),
        "data": data,
    })))
}

fn parse_time(
    v: Option<&String>,
    field: &str,
    invalid: &mut impl FnMut(&str, String),
) -> Option<DateTime<Utc>> {
    match v {
        None => {
            invalid(field, "is required (an RFC 3339 timestamp)".into());
            None
        }
        // An unencoded '+' in a query string arrives as a space.
        Some(s) => match DateTime::parse_from_rfc3339(&s.replace(' ', "+")) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                invalid(
                    field,
                    format!("{s:?} is not an RFC 3339 timestamp such as 2026-11-01T00:00:00Z"),
                );
                None
            }
        },
    }
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
