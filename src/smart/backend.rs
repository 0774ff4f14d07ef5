//! SMART Backend Services: a partner's system-to-system client (`client_credentials` with a
//! `private_key_jwt` assertion), its token cached until shortly before expiry, used by
//! gateway-side work and by `/v1/partners/{partner}/fhir/{path}` (admin keys).

use std::time::{Duration, Instant};

use crate::http::Path;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;

use super::proxy::Forwarded;
use super::token::ClientAuth;
use crate::apikeys::Role;
use crate::http::ApiError;
use crate::http::auth::Caller;
use crate::state::AppState;

/// A cached backend token is dropped this long before it expires.
const EARLY: Duration = Duration::from_secs(60);

/// A Backend Services token for `partner_id` and the FHIR base it is for.
pub async fn backend_token(
    state: &AppState,
    partner_id: &str,
    force_new: bool,
) -> Result<(String, String), ApiError> {
    let partner = state
        .config
        .partner(partner_id)
        .ok_or_else(|| ApiError::NotFound(format!("no partner {partner_id:?}")))?;
    let reg = partner.smart.as_ref().ok_or_else(|| {
        ApiError::NotFound(format!("partner {partner_id:?} has no SMART registration"))
    })?;
    let backend = reg.backend.as_ref().ok_or_else(|| {
        ApiError::NotFound(format!(
            "partner {partner_id:?} has no Backend Services registration ([partners.smart.backend])"
        ))
    })?;
    let iss = backend
        .issuer
        .as_deref()
        .or(reg.issuers.first().map(String::as_str))
        .ok_or_else(|| ApiError::NotFound(format!("partner {partner_id:?} has no issuer")))?
        .trim_end_matches('/')
        .to_owned();

    // One fetch at a time per instance; the others wait and reuse it.
    let mut cache = state.smart.backend_tokens.lock().await;
    if !force_new
        && let Some((token, until)) = cache.get(partner_id)
        && Instant::now() < *until
    {
        return Ok((token.clone(), iss));
    }
    let cfg = state
        .smart
        .discovery
        .configuration(&iss)
        .await
        .map_err(|e| ApiError::BadGateway {
            code: "ehr_discovery_failed",
            detail: e.to_string(),
        })?;
    let alg = crate::keys::Alg::parse(&backend.signing_alg).unwrap_or(crate::keys::Alg::Rs384);
    let key = crate::keys::signing_key(&state.db, &state.master_key, alg).await?;
    let auth = ClientAuth::Asymmetric {
        client_id: backend.client_id.clone(),
        key,
        audience: None,
    };
    let form = vec![
        ("grant_type", "client_credentials".to_owned()),
        ("scope", backend.scopes.join(" ")),
    ];
    let token = super::token::request(&state.outbound, &cfg.token_endpoint, &auth, form)
        .await
        .map_err(|e| {
            tracing::warn!(%partner_id, error = %e, "Backend Services token request failed");
            ApiError::BadGateway {
                code: "ehr_token_failed",
                detail: e.to_string(),
            }
        })?;
    let lifetime = Duration::from_secs(token.expires_in_secs().unwrap_or(300).max(0) as u64);
    let until = Instant::now() + lifetime.saturating_sub(EARLY);
    cache.insert(partner_id.to_owned(), (token.access_token.clone(), until));
    tracing::info!(%partner_id, expires_in = lifetime.as_secs(), "Backend Services token obtained");
    Ok((token.access_token, iss))
}

/// `/v1/partners/{partner}/fhir/{path}` for admin keys: the partner's FHIR server with the
/// Backend Services token.
#[utoipa::path(
    method(get, post, put, patch, delete),
    path = "/v1/partners/{partner}/fhir/{path}",
    tag = "smart",
    params(
        ("partner" = String, Path, description = "A partner with a Backend Services registration"),
        ("path" = String, Path, description = "FHIR path relative to the partner's FHIR base (may contain slashes)", example = "Group/123/$export"),
    ),
    security(("admin_key" = [])),
    responses(crate::http::openapi::FhirProxyResponses)
)]
pub async fn partner_proxy(
    State(state): State<AppState>,
    caller: Caller,
    Path((partner_id, _path)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin])?;
    super::proxy::check_fhir_method(req.method())?;
    let raw = req
        .uri()
        .path()
        .find("/fhir/")
        .map(|i| req.uri().path()[i + 6..].to_owned())
        .unwrap_or_default();
    super::proxy::check_relative_path(&raw)
        .map_err(|e| ApiError::bad_request("invalid_fhir_path", e))?;
    let query = req.uri().query().map(str::to_owned);
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), state.config.http.body_limit_bytes)
        .await
        .map_err(|_| ApiError::PayloadTooLarge("the request body is over the limit".into()))?;
    let call = call(
        &state,
        &partner_id,
        &method,
        &raw,
        query.as_deref(),
        &headers,
        body,
    )
    .await;
    super::proxy::record_fhir_request(&state, &partner_id, None, None, &method, &raw, &call).await;
    call.result.map(super::proxy::stream_back)
}

/// One FHIR call with the backend token; a 401 gets one new token and one retry.
pub async fn call(
    state: &AppState,
    partner_id: &str,
    method: &Method,
    raw_path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Forwarded {
    let (token, iss) = match backend_token(state, partner_id, false).await {
        Ok(t) => t,
        Err(e) => return Forwarded::unreached(e),
    };
    let url = match super::proxy::target_url(state, &iss, raw_path, query) {
        Ok(u) => u,
        Err(e) => return Forwarded::unreached(e),
    };
    let resp =
        match super::proxy::send_fhir(state, &token, method, &url, headers, body.clone()).await {
            Ok(r) => r,
            Err(e) => return Forwarded::unreached(e),
        };
    if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
        return Ok(resp).into();
    }
    // The server answered (401): from here on the call has reached it.
    let result = match backend_token(state, partner_id, true).await {
        Ok((token, _)) => super::proxy::send_fhir(state, &token, method, &url, headers, body).await,
        Err(e) => Err(e),
    };
    Forwarded {
        result,
        reached: true,
    }
}
