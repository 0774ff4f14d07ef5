//! `/v1/statements`: create or recompute a draft, list, read (JSON, CSV or PDF), adjust,
//! finalize, void, verify. Finance and admin keys do everything; a partner key reads its
//! own issued statements.

use std::str::FromStr;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};

use super::calc::CalcError;
use super::model::{Statement, Status};
use super::service::StatementError;
use super::store::{ListFilter, list_statements};
use crate::apikeys::Role;
use crate::app::AppState;
use crate::http::auth::Caller;
use crate::http::{ApiError, Body, Query};

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/statements", post(generate).get(list))
        .route("/v1/statements/{id}", get(read))
        .route("/v1/statements/{id}/adjustments", post(adjust))
        .route("/v1/statements/{id}/finalize", post(finalize))
        .route("/v1/statements/{id}/void", post(void))
        .route("/v1/statements/{id}/verify", get(verify))
}

impl From<StatementError> for ApiError {
    fn from(e: StatementError) -> Self {
        use StatementError as E;
        let detail = e.to_string();
        match e {
            E::UnknownPartner(_) | E::UnknownAgreement { .. } | E::NotFound(_) => {
                ApiError::NotFound(detail)
            }
            E::BadPeriod(_) => ApiError::bad_request("invalid_period", detail),
            E::AmbiguousAgreement { .. } => ApiError::bad_request("agreement_required", detail),
            E::BadAdjustment(_) => ApiError::bad_request("invalid_request", detail),
            E::Sandbox(_) => ApiError::Unprocessable {
                code: "sandbox_partner",
                detail,
            },
            E::NoAgreement { .. } => ApiError::Unprocessable {
                code: "no_agreement",
                detail,
            },
            E::Calc(CalcError::CurrencyMismatch { .. }) => ApiError::Unprocessable {
                code: "currency_mismatch",
                detail,
            },
            E::Calc(CalcError::BadEvent { .. }) | E::BadEvent(_) => ApiError::Unprocessable {
                code: "unreadable_event",
                detail,
            },
            E::AlreadyFinalized { .. }
            | E::NotDraft { .. }
            | E::NotFinalized { .. }
            | E::NotIssued(_)
            | E::NotEnded { .. }
            | E::OutOfOrder(_)
            | E::Stale(_)
            | E::NotLatest(_)
            | E::Conflict(_) => ApiError::Conflict(detail),
            E::Store(e) => ApiError::Internal(e),
        }
    }
}

fn finance(caller: &Caller) -> Result<(), ApiError> {
    caller.require(&[Role::Admin, Role::Finance])
}

/// Who did it, for the record: the key (and the person, when the request names one).
fn actor(caller: &Caller, person: Option<&str>) -> String {
    match person.map(str::trim).filter(|p| !p.is_empty()) {
        Some(p) => format!("{p} (key {})", caller.key_id),
        None => format!("key {}", caller.key_id),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("expected {shape}: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateRequest {
    partner: String,
    period: String,
    #[serde(default)]
    agreement: Option<String>,
}

/// Create the draft for a partner's period, or recompute it: 201 when created, 200 when an
/// existing draft was recomputed.
async fn generate(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body,
) -> Result<Response, ApiError> {
    finance(&caller)?;
    let req: GenerateRequest = parse(
        &body,
        r#"{"partner": "...", "period": "2026-10", "agreement": "... (optional)"}"#,
    )?;
    let (st, created) = state
        .statements()
        .generate(
            &req.partner,
            req.agreement.as_deref(),
            &req.period,
            chrono::Utc::now(),
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(st))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    partner: Option<String>,
    period: Option<String>,
    status: Option<String>,
    agreement: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut statuses = Vec::new();
    for s in q.status.iter().flat_map(|s| s.split(',')) {
        statuses.push(Status::parse(s.trim()).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_status",
                format!("status {s:?} is not one of draft, finalized, void"),
            )
        })?);
    }
    let mut filter = ListFilter {
        partner: q.partner,
        period: q.period,
        statuses,
        agreement: q.agreement,
    };
    match caller.role {
        Role::Admin | Role::Finance => {}
        Role::Partner => {
            let own = caller.partner_id.clone().unwrap_or_default();
            if let Some(p) = &filter.partner {
                caller.check_partner(p)?;
            }
            if filter.statuses.contains(&Status::Draft) {
                return Err(ApiError::Forbidden(
                    "partner keys read issued statements only, not drafts".into(),
                ));
            }
            if filter.statuses.is_empty() {
                filter.statuses = vec![Status::Finalized, Status::Void];
            }
            filter.partner = Some(own);
        }
        Role::App => finance(&caller)?,
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be between 1 and 1000",
        ));
    }
    let items = list_statements(&state.db, &filter, limit).await?;
    Ok(Json(json!({ "statements": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    format: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Pdf,
}

/// `?format=` wins over `Accept`; without either, JSON.
fn format_of(q: Option<&str>, headers: &HeaderMap) -> Result<Format, ApiError> {
    if let Some(f) = q {
        return match f {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "pdf" => Ok(Format::Pdf),
            other => Err(ApiError::bad_request(
                "invalid_format",
                format!("format {other:?} is not one of json, csv, pdf"),
            )),
        };
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Ok(if accept.contains("application/pdf") {
        Format::Pdf
    } else if accept.contains("text/csv") {
        Format::Csv
    } else {
        Format::Json
    })
}

/// A statement the caller may read: finance and admin any; a partner its own issued ones
/// (anything else reads as not found, so ids of others' statements reveal nothing).
async fn readable(state: &AppState, caller: &Caller, id: &str) -> Result<Statement, ApiError> {
    let st = state.statements().get(id).await?;
    match caller.role {
        Role::Admin | Role::Finance => Ok(st),
        Role::Partner
            if caller.may_access_partner(&st.document.partner_id) && st.status != Status::Draft =>
        {
            Ok(st)
        }
        Role::Partner => Err(ApiError::NotFound(format!("no statement {id:?}"))),
        Role::App => finance(caller).map(|()| st),
    }
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = format_of(q.format.as_deref(), &headers)?;
    let st = readable(&state, &caller, &id).await?;
    Ok(render(&state, &st, format))
}

/// The file name a download is saved under: the statement number, or the id for a draft.
pub fn file_stem(st: &Statement) -> String {
    st.number_display.clone().unwrap_or_else(|| st.id.clone())
}

fn render(state: &AppState, st: &Statement, format: Format) -> Response {
    let stem = file_stem(st);
    match format {
        Format::Json => Json(json!(st)).into_response(),
        Format::Csv => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{stem}.csv\""),
                ),
            ],
            super::export::csv(st),
        )
            .into_response(),
        Format::Pdf => (
            [
                (header::CONTENT_TYPE, "application/pdf".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{stem}.pdf\""),
                ),
            ],
            super::pdf::render(
                st,
                &super::pdf::Letterhead {
                    company_address: &state.config.statements.company_address,
                },
            ),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdjustRequest {
    /// A decimal string, e.g. "-125.00" (a JSON number would pass through floating point).
    amount: String,
    reason: String,
    #[serde(default)]
    author: Option<String>,
}

async fn adjust(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    finance(&caller)?;
    let req: AdjustRequest = parse(
        &body,
        r#"{"amount": "-125.00", "reason": "...", "author": "... (optional)"}"#,
    )?;
    let amount = Decimal::from_str(req.amount.trim()).map_err(|_| {
        ApiError::bad_request(
            "invalid_request",
            format!(
                "amount {:?} is not a decimal such as \"-125.00\"",
                req.amount
            ),
        )
    })?;
    let st = state
        .statements()
        .adjust(
            &id,
            amount,
            &req.reason,
            &actor(&caller, req.author.as_deref()),
            chrono::Utc::now(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(json!(st))).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActorRequest {
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

fn optional_body(body: &[u8]) -> Result<ActorRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ActorRequest::default());
    }
    parse(body, r#"{"author": "... (optional)", "reason": "..."}"#)
}

async fn finalize(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    finance(&caller)?;
    let req = optional_body(&body)?;
    let st = state
        .statements()
        .finalize(
            &id,
            &actor(&caller, req.author.as_deref()),
            chrono::Utc::now(),
        )
        .await?;
    Ok(Json(json!(st)))
}

async fn void(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    finance(&caller)?;
    let req = optional_body(&body)?;
    let reason = req.reason.unwrap_or_default();
    let st = state
        .statements()
        .void(
            &id,
            &reason,
            &actor(&caller, req.author.as_deref()),
            chrono::Utc::now(),
        )
        .await?;
    Ok(Json(json!(st)))
}

async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    finance(&caller)?;
    let v = state.statements().verify(&id).await?;
    Ok(Json(json!({ "ok": v.ok(), "verification": v })))
}
