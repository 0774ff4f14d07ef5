//! `/v1/statements`: create or recompute a draft, list, read (JSON, CSV or PDF), adjust,
//! finalize, void, verify. Finance and admin keys do everything; a partner key reads its
//! own issued statements.

use std::str::FromStr;

use crate::http::Path;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::calc::CalcError;
use super::model::{Statement, Status};
use super::service::StatementError;
use super::store::{ListFilter, list_statements};
use crate::apikeys::Role;
use crate::http::auth::Caller;
use crate::http::list::{Page, Paging};
use crate::http::{ApiError, Body, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(generate, list))
        .routes(routes!(read, delete_statement))
        .routes(routes!(adjust))
        .routes(routes!(remove_adjustment))
        .routes(routes!(finalize))
        .routes(routes!(void))
        .routes(routes!(verify))
}

crate::page_schema!(
    StatementList,
    Statement,
    "A page of statements: newest period first, then by partner and agreement, newest computed first."
);

#[derive(Serialize, utoipa::ToSchema)]
struct Verified {
    /// Both the hash and the recomputation match.
    ok: bool,
    verification: super::service::Verification,
}

impl From<StatementError> for ApiError {
    fn from(e: StatementError) -> Self {
        use StatementError as E;
        let detail = e.to_string();
        match e {
            E::UnknownPartner(_)
            | E::UnknownAgreement { .. }
            | E::NotFound(_)
            | E::NoAdjustment { .. } => ApiError::NotFound(detail),
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
            | E::LaterIssued { .. }
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"partner": "epic-sandbox", "period": "2026-10"}))]
struct GenerateRequest {
    partner: String,
    /// `2026-10` for a monthly agreement, `2026-Q4` for a quarterly one.
    period: String,
    /// Needed only when several of the partner's agreements cover the period.
    #[serde(default)]
    agreement: Option<String>,
    /// When the new draft replaces a voided statement: carry the voided one's adjustments
    /// over, each naming where it came from (default true).
    #[serde(default)]
    carry_adjustments: Option<bool>,
}

/// Create the draft for a partner's period, or recompute it: 201 when created, 200 when an
/// existing draft was recomputed.
#[utoipa::path(
    post,
    path = "/v1/statements",
    tag = "statements",
    operation_id = "generate_statement",
    request_body = GenerateRequest,
    security(("finance_key" = []), ("admin_key" = [])),
    responses(
        (status = 201, description = "A new draft", body = Statement),
        (status = 200, description = "The existing draft, recomputed", body = Statement),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 409, response = crate::http::openapi::Conflict),
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
        (status = 422, response = crate::http::openapi::Unprocessable),
    )
)]
async fn generate(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    finance(&caller)?;
    let req: GenerateRequest = parse(
        &body,
        r#"{"partner": "...", "period": "2026-10", "agreement": "... (optional)"}"#,
    )?;
    let (st, created) = state
        .statements()
        .generate_with(
            &req.partner,
            req.agreement.as_deref(),
            &req.period,
            chrono::Utc::now(),
            req.carry_adjustments.unwrap_or(true),
            &caller.who(&headers),
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(st)).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    partner: Option<String>,
    #[param(example = "2026-10")]
    period: Option<String>,
    /// Comma-separated: draft, finalized, void (partner keys: finalized and void only).
    #[param(example = "finalized,void")]
    status: Option<String>,
    agreement: Option<String>,
    /// At most this many: default 100, 1 to 1000.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// A `next_cursor` from the page before.
    cursor: Option<String>,
}

/// Statements, newest period first. A partner key sees its own issued statements.
#[utoipa::path(
    get,
    path = "/v1/statements",
    tag = "statements",
    operation_id = "list_statements",
    params(ListQuery),
    security(("finance_key" = []), ("admin_key" = []), ("partner_key" = [])),
    responses(
        (status = 200, description = "A page of statements", body = StatementList),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<Statement>>, ApiError> {
    let paging = Paging::new("statements", q.limit, q.cursor.as_deref())?;
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
    let items = list_statements(&state.db, &filter, paging.after()?, paging.fetch()).await?;
    Ok(Json(paging.page(items, super::store::list_key)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReadQuery {
    /// json, csv or pdf; wins over `Accept`. JSON without either.
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

/// One statement as JSON, CSV or PDF (`?format=` or `Accept`).
#[utoipa::path(
    get,
    path = "/v1/statements/{id}",
    tag = "statements",
    operation_id = "get_statement",
    params(("id" = String, Path, description = "The statement's id"), ReadQuery),
    security(("finance_key" = []), ("admin_key" = []), ("partner_key" = [])),
    responses(
        (status = 200, description = "The statement", content(
            (Statement = "application/json"),
            (String = "text/csv"),
            (Vec<u8> = "application/pdf"),
        )),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
    )
)]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = format_of(q.format.as_deref(), &headers)?;
    let st = readable(&state, &caller, &id).await?;
    render(&state, st, format).await
}

/// The file name a download is saved under: the statement number, or the id for a draft.
pub fn file_stem(st: &Statement) -> String {
    st.number_display.clone().unwrap_or_else(|| st.id.clone())
}

async fn render(state: &AppState, st: Statement, format: Format) -> Result<Response, ApiError> {
    let stem = file_stem(&st);
    Ok(match format {
        Format::Json => Json(st).into_response(),
        Format::Csv => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{stem}.csv\""),
                ),
            ],
            super::export::csv(&st),
        )
            .into_response(),
        Format::Pdf => {
            // Shaping and subsetting the fonts is CPU work (milliseconds, more for a long
            // statement in CJK): off the async workers, which serve every other request.
            let state = state.clone();
            let pdf = tokio::task::spawn_blocking(move || {
                super::pdf::render(&st, &state.letterhead(&st.document))
            })
            .await
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("drawing the PDF failed: {e}")))?;
            (
                [
                    (header::CONTENT_TYPE, "application/pdf".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{stem}.pdf\""),
                    ),
                ],
                pdf,
            )
                .into_response()
        }
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"amount": "-125.00", "reason": "Refund of invoice 2291 counted in October", "author": "Grace (finance)"}))]
struct AdjustRequest {
    /// A decimal string, e.g. "-125.00" (a JSON number would pass through floating point).
    amount: String,
    reason: String,
    #[serde(default)]
    author: Option<String>,
}

/// Add an adjustment line to a draft (a correction is never an edit of an issued statement).
#[utoipa::path(
    post,
    path = "/v1/statements/{id}/adjustments",
    tag = "statements",
    operation_id = "adjust_statement",
    params(("id" = String, Path, description = "A draft statement's id")),
    request_body = AdjustRequest,
    security(("finance_key" = []), ("admin_key" = [])),
    responses(
        (status = 201, description = "The draft with the adjustment", body = Statement),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 409, response = crate::http::openapi::Conflict),
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
    )
)]
async fn adjust(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
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
            &caller.who(&headers),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(st)).into_response())
}

/// Take an adjustment off a draft: the draft without it. An issued statement keeps its
/// adjustments; a correction goes in a later statement.
#[utoipa::path(
    delete,
    path = "/v1/statements/{id}/adjustments/{adjustment_id}",
    tag = "statements",
    operation_id = "remove_statement_adjustment",
    params(
        ("id" = String, Path, description = "A draft statement's id"),
        ("adjustment_id" = String, Path, description = "The adjustment line's `reference` (adj_...)"),
    ),
    security(("finance_key" = []), ("admin_key" = [])),
    responses(
        (status = 200, description = "The draft without the adjustment", body = Statement),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 409, response = crate::http::openapi::Conflict),
    )
)]
async fn remove_adjustment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, adjustment)): Path<(String, String)>,
) -> Result<Json<Statement>, ApiError> {
    finance(&caller)?;
    let who = caller.who(&headers);
    Ok(Json(
        state
            .statements()
            .remove_adjustment(&id, &adjustment, chrono::Utc::now(), &who)
            .await?,
    ))
}

/// Delete a draft (and its adjustments). An issued statement is never deleted: void it.
#[utoipa::path(
    delete,
    path = "/v1/statements/{id}",
    tag = "statements",
    operation_id = "delete_statement",
    params(("id" = String, Path, description = "A draft statement's id")),
    security(("finance_key" = []), ("admin_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 409, response = crate::http::openapi::Conflict),
    )
)]
async fn delete_statement(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    finance(&caller)?;
    let who = caller.who(&headers);
    state
        .statements()
        .delete_draft(&id, chrono::Utc::now(), &who)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"author": "Grace (finance)"}))]
struct ActorRequest {
    /// The person, recorded with the key.
    #[serde(default)]
    author: Option<String>,
    /// Void only: why (required there).
    #[serde(default)]
    reason: Option<String>,
}

fn optional_body(body: &[u8]) -> Result<ActorRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ActorRequest::default());
    }
    parse(body, r#"{"author": "... (optional)", "reason": "..."}"#)
}

/// Issue a draft: the partner's next number and a SHA-256 over its content. Refused before
/// the period has ended and settled, out of order, or when the draft is stale.
#[utoipa::path(
    post,
    path = "/v1/statements/{id}/finalize",
    tag = "statements",
    operation_id = "finalize_statement",
    params(("id" = String, Path, description = "A draft statement's id")),
    request_body(content = Option<ActorRequest>, description = "Optional: who is finalizing"),
    security(("finance_key" = []), ("admin_key" = [])),
    responses(
        (status = 200, description = "The issued statement", body = Statement),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 409, response = crate::http::openapi::Conflict),
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
    )
)]
async fn finalize(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Statement>, ApiError> {
    finance(&caller)?;
    let req = optional_body(&body)?;
    let st = state
        .statements()
        .finalize(
            &id,
            &actor(&caller, req.author.as_deref()),
            chrono::Utc::now(),
            &caller.who(&headers),
        )
        .await?;
    Ok(Json(st))
}

/// Void the latest finalized statement of its agreement; the next generate makes its
/// replacement.
#[utoipa::path(
    post,
    path = "/v1/statements/{id}/void",
    tag = "statements",
    operation_id = "void_statement",
    params(("id" = String, Path, description = "A finalized statement's id")),
    request_body = ActorRequest,
    security(("finance_key" = []), ("admin_key" = [])),
    responses(
        (status = 200, description = "The void statement", body = Statement),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 409, response = crate::http::openapi::Conflict),
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
    )
)]
async fn void(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<Statement>, ApiError> {
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
            &caller.who(&headers),
        )
        .await?;
    Ok(Json(st))
}

/// Recompute an issued statement from the ledger at its cut-off and check its hash.
#[utoipa::path(
    get,
    path = "/v1/statements/{id}/verify",
    tag = "statements",
    operation_id = "verify_statement",
    params(("id" = String, Path, description = "An issued statement's id")),
    security(("finance_key" = []), ("admin_key" = [])),
    responses(
        (status = 200, description = "What verification found (`ok` false lists the differences)", body = Verified),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 409, response = crate::http::openapi::Conflict),
    )
)]
async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Verified>, ApiError> {
    finance(&caller)?;
    let v = state.statements().verify(&id).await?;
    Ok(Json(Verified {
        ok: v.ok(),
        verification: v,
    }))
}
