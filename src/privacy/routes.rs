//! `POST /v1/privacy/exports` and `POST /v1/privacy/erasures`: everything held about a
//! person at a partner, as JSON, or erased; admin keys only, each written to the audit log.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::person::{self, Actor, Counts, Lookup};
use crate::apikeys::Role;
use crate::http::ApiError;
use crate::http::auth::Caller;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export))
        .routes(routes!(erase))
}

/// Whom a request is about: a partner and the person's id there, or an email it sent for
/// them (or both).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"partner": "canvas-sandbox", "email": "ada@example.edu"}))]
struct PersonRequest {
    /// The partner the person came through.
    #[schema(example = "canvas-sandbox")]
    partner: String,
    /// Their id at the partner: an LTI `sub` or 1.1 `user_id`, a SMART `fhirUser` or
    /// `sub`, or an SSO subject qualified by its connection (`acme-okta:00u1ada`, the
    /// launch's `subject`): a bare IdP subject is unique only within its IdP.
    #[schema(example = "c1d2e3f4-student-7")]
    user_id: Option<String>,
    /// An email the partner sent for them (compared without case).
    #[schema(example = "ada@example.edu")]
    email: Option<String>,
}

/// What an erasure did.
#[derive(Serialize, utoipa::ToSchema)]
struct Erased {
    erased: Counts,
    /// The audit log entry recording it (`aud_...`).
    audit_id: String,
}

fn lookup(state: &AppState, body: &[u8]) -> Result<Lookup, ApiError> {
    let r: PersonRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the body is not a person request: {e}"),
        )
    })?;
    let q = Lookup {
        partner: r.partner,
        user_id: r.user_id,
        email: r.email,
    };
    if let Some(p) = q.problem() {
        return Err(ApiError::bad_request("invalid_body", p));
    }
    if state.config.partner(&q.partner).is_none() {
        return Err(ApiError::NotFound(format!(
            "unknown partner {:?}",
            q.partner
        )));
    }
    Ok(q)
}

fn actor(caller: &Caller, headers: &HeaderMap) -> Actor {
    caller.who(headers)
}

/// Everything the gateway holds about a person at a partner: their launches (SMART, LTI,
/// SSO sign-ins, with the context each carried), LTI identities, scores, webhook messages
/// naming them and ledger events (under their pseudonym). Recorded in the audit log.
#[utoipa::path(
    post,
    path = "/v1/privacy/exports",
    tag = "privacy",
    operation_id = "export_person",
    request_body = PersonRequest,
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "Everything held about the person, as JSON (empty lists when nothing is)", body = Value),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
    )
)]
async fn export(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    crate::http::Body(body): crate::http::Body,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let q = lookup(&state, &body)?;
    let now = chrono::Utc::now();
    let found = person::find(&state.db, &state.subjects, &q).await?;
    person::audit_export(
        &state.db,
        &state.subjects,
        &actor(&caller, &headers),
        &q,
        &found,
        now,
    )
    .await?;
    Ok(Json(person::export_document(&q, &found, now)))
}

/// Erase a person at a partner: launches lose their user, name and context (and their
/// tokens and handoff codes), scores and LTI identities are deleted, webhook payloads
/// naming them are dropped, and their ledger events are relabelled with a random
/// pseudonym, so meters and issued statements are unchanged. One transaction, recorded in
/// the audit log. Erasing again finds nothing more.
#[utoipa::path(
    post,
    path = "/v1/privacy/erasures",
    tag = "privacy",
    operation_id = "erase_person",
    request_body = PersonRequest,
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "Erased: what was changed, and the audit entry", body = Erased),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
    )
)]
async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    crate::http::Body(body): crate::http::Body,
) -> Result<Json<Erased>, ApiError> {
    caller.require(&[Role::Admin])?;
    let q = lookup(&state, &body)?;
    let now = chrono::Utc::now();
    let found = person::find(&state.db, &state.subjects, &q).await?;
    let (erased, audit_id) = person::erase(
        &state.db,
        &state.subjects,
        &actor(&caller, &headers),
        &q,
        &found,
        now,
    )
    .await?;
    Ok(Json(Erased { erased, audit_id }))
}
