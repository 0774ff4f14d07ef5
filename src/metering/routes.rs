//! `POST /v1/usage/events`, `GET /v1/usage/query`, `GET /v1/usage/meters`.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::MAX_BATCH;
use super::authority::Recorder;
use super::ingest::{Attribution, IngestError, Ingested, Writer, ingest_batch};
use super::query::{QueryError, StatementPeriod, UsageReport, parse_query, render};
use super::store::query_meter;
use super::window::windows;
use crate::apikeys::Role;
use crate::http::auth::Caller;
use crate::http::list::{Page, Paging};
use crate::http::{ApiError, Body, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ingest))
        .routes(routes!(query))
        .routes(routes!(meters))
}

/// A CloudEvent 1.0 usage event, as ingest reads it.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({
    "specversion": "1.0", "id": "launch-1", "source": "/ehr/epic", "type": "smart.launch",
    "subject": "clinician-7", "time": "2026-11-02T14:03:11Z", "data": {"course": "bio-101"}
}))]
#[allow(dead_code)] // Describes the body; ingest validates the raw JSON field by field.
struct CloudEvent {
    /// Must be "1.0".
    specversion: String,
    /// With `source`, the deduplication key: an event sent twice is counted once.
    id: String,
    source: String,
    /// What happened, e.g. `smart.launch`; meters select events by type.
    #[schema(rename = "type")]
    event_type: String,
    /// Who or what it is about (a user, a course); UNIQUE_COUNT meters often count it.
    subject: Option<String>,
    /// RFC 3339; defaults to the time of receipt.
    time: Option<String>,
    /// Admin and app keys name the partner (`partner` extension attribute); a partner key's
    /// events are its own.
    partner: Option<String>,
    /// The event's own fields, which SUM/MAX/LATEST/UNIQUE_COUNT meters and group-by read.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// One event, or a batch of up to 1000.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
enum CloudEventBody {
    One(CloudEvent),
    Batch(Vec<CloudEvent>),
}

/// The documented parameters of `GET /v1/usage/query` (the handler reads them as a map so
/// that every problem, unknown names included, is reported at once).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct UsageQueryParams {
    /// The meter's name (`GET /v1/usage/meters`).
    #[param(example = "active_users")]
    meter: String,
    /// Required for admin, finance and app keys; a partner key's own partner by default.
    partner: Option<String>,
    /// RFC 3339 start of the range (inclusive); required unless `period` is given.
    #[param(example = "2026-11-01T00:00:00Z")]
    from: Option<String>,
    /// RFC 3339 end of the range (exclusive); now by default.
    to: Option<String>,
    /// hour, day, week (from Monday) or month; omitted: one total over the range.
    #[param(example = "day")]
    window: Option<String>,
    /// IANA time zone that windows are cut in; UTC by default.
    #[param(example = "America/New_York")]
    tz: Option<String>,
    /// Comma-separated group-by fields of the meter.
    group_by: Option<String>,
    /// A statement period (`2026-11`, or `2026-Q4` for a quarterly agreement): sets `from`,
    /// `to` and `tz` to its bounds in the agreement's zone (leave those out).
    #[param(example = "2026-11")]
    period: Option<String>,
    /// With `period`: the agreement; the partner's agreement covering the period by default.
    agreement: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct MeterInfo {
    name: String,
    description: String,
    aggregation: String,
    event_types: Option<Vec<String>>,
    /// The JSON path of the summed or compared value.
    value: Option<String>,
    group_by: Vec<String>,
    /// Events the meter does not count: field (as in `group_by`) to the value, or list of
    /// values, that leaves an event out; an event without the field counts.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object, required = false, example = json!({"$.reached": false}))]
    exclude: BTreeMap<String, Value>,
}

crate::page_schema!(MeterList, MeterInfo, "A page of meters, by name.");

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct MetersQuery {
    /// At most this many: default 100, 1 to 1000.
    limit: Option<i64>,
    /// A `next_cursor` from the page before.
    cursor: Option<String>,
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
#[utoipa::path(
    post,
    path = "/v1/usage/events",
    tag = "usage",
    operation_id = "ingest_usage_events",
    request_body(
        content(
            (CloudEventBody = "application/json"),
            (CloudEvent = "application/cloudevents+json"),
            (Vec<CloudEvent> = "application/cloudevents-batch+json"),
        ),
    ),
    security(("partner_key" = []), ("admin_key" = []), ("app_key" = [])),
    responses(
        (status = 202, description = "Committed: `accepted` new events, `duplicates` already in the ledger", body = Ingested),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
        (status = 415, response = crate::http::openapi::UnsupportedMediaType),
    )
)]
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
    super::event::check_data_sizes(&values, state.config.usage.max_data_bytes).map_err(
        |errors| ApiError::Validation {
            detail: "event data over the size limit; nothing was written".into(),
            errors,
        },
    )?;
    let attribution = match (&caller.role, &caller.partner_id) {
        (Role::Partner, Some(p)) => Attribution::Fixed(p.as_str()),
        _ => Attribution::Named { default: None },
    };
    let key_id = caller.key_id.clone();
    let recorder = match caller.role {
        Role::Admin => Recorder::AdminKey { key_id },
        Role::App => Recorder::AppKey { key_id },
        Role::Partner => Recorder::PartnerKey { key_id },
        // Refused by `require` above.
        Role::Finance => return Err(ApiError::Forbidden("finance keys record no usage".into())),
    };
    let writer = Writer {
        attribution,
        recorder: &recorder,
        rules: &state.ledger_rules,
    };
    let config = state.config.clone();
    let ingested = ingest_batch(
        &state.db,
        &state.subjects,
        values,
        writer,
        |p| config.partner(p).is_some(),
        Utc::now(),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(ingested)))
}

/// A meter's value per window over a range, optionally grouped.
#[utoipa::path(
    get,
    path = "/v1/usage/query",
    tag = "usage",
    operation_id = "query_usage",
    params(UsageQueryParams),
    security(("partner_key" = []), ("admin_key" = []), ("finance_key" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "The meter's values", body = UsageReport),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
    )
)]
async fn query(
    State(state): State<AppState>,
    caller: Caller,
    Query(mut params): Query<HashMap<String, String>>,
) -> Result<Json<UsageReport>, ApiError> {
    let by_period = statement_period(&state, &caller, &mut params)?;
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
    let mut report = render(&q, &wins, buckets, sandbox);
    report.statement_period = by_period;
    Ok(Json(report))
}

/// `period` (with `agreement`, or the partner's agreement covering it) sets `from`, `to`
/// and `tz` to the statement period's bounds in the agreement's zone, so a usage figure
/// can be set beside the statement's (daylight-saving changes included) without the caller
/// computing offsets. Fills `params` and says which agreement and period it used.
fn statement_period(
    state: &AppState,
    caller: &Caller,
    params: &mut HashMap<String, String>,
) -> Result<Option<StatementPeriod>, ApiError> {
    let agreement = params.remove("agreement");
    let Some(label) = params.remove("period") else {
        return match agreement {
            Some(_) => Err(ApiError::Validation {
                detail: "the query parameters are invalid".into(),
                errors: vec![crate::http::FieldError {
                    index: None,
                    field: "agreement".into(),
                    reason: "goes with period (a statement period such as 2026-11)".into(),
                }],
            }),
            None => Ok(None),
        };
    };
    let clash: Vec<crate::http::FieldError> = ["from", "to", "tz"]
        .into_iter()
        .filter(|k| params.contains_key(*k))
        .map(|k| crate::http::FieldError {
            index: None,
            field: k.into(),
            reason: "period sets it (the statement period's bounds in the agreement's zone); leave it out".into(),
        })
        .collect();
    if !clash.is_empty() {
        return Err(ApiError::Validation {
            detail: "the query parameters are invalid".into(),
            errors: clash,
        });
    }
    let partner = params
        .get("partner")
        .cloned()
        .or_else(|| caller.partner_id.clone())
        .unwrap_or_default();
    if !partner.is_empty() {
        caller.check_partner(&partner)?;
    }
    let (agreement, from, to, tz) = state
        .statements()
        .period_range(&partner, agreement.as_deref(), &label)
        .map_err(ApiError::from)?;
    let fmt = crate::time::rfc3339;
    params.insert("from".into(), fmt(from));
    params.insert("to".into(), fmt(to));
    params.insert("tz".into(), tz.clone());
    Ok(Some(StatementPeriod {
        period: label,
        agreement,
        time_zone: tz,
    }))
}

/// The configured meters, so clients can discover names and group-by fields.
#[utoipa::path(
    get,
    path = "/v1/usage/meters",
    tag = "usage",
    operation_id = "list_meters",
    params(MetersQuery),
    security(("partner_key" = []), ("admin_key" = []), ("finance_key" = []), ("app_key" = [])),
    responses(
        (status = 200, description = "A page of meters, by name", body = MeterList),
        (status = 400, response = crate::http::openapi::BadRequest),
    )
)]
async fn meters(
    State(state): State<AppState>,
    _caller: Caller,
    crate::http::Query(q): crate::http::Query<MetersQuery>,
) -> Result<Json<Page<MeterInfo>>, ApiError> {
    let paging = Paging::new("meters", q.limit, q.cursor.as_deref())?;
    let mut data: Vec<MeterInfo> = state
        .meters
        .values()
        .map(|m| {
            let config = state.config.meters.iter().find(|c| c.name == m.name);
            MeterInfo {
                name: m.name.clone(),
                description: m.description.clone(),
                aggregation: m.aggregation.as_str().to_owned(),
                event_types: config.map(|c| c.event_types.clone()),
                value: config.and_then(|c| c.value.clone()),
                group_by: m.group_by.iter().map(|(n, _)| n.clone()).collect(),
                exclude: config.map(|c| c.exclude.clone()).unwrap_or_default(),
            }
        })
        .collect();
    data.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(paging.page_sorted(data, |m| m.name.clone())?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_documented_query_parameters_are_the_ones_the_parser_knows() {
        use utoipa::IntoParams;
        let names: Vec<String> = super::UsageQueryParams::into_params(|| None)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, super::super::query::KNOWN_PARAMS);
    }
}
