//! `POST /v1/launches/exchange` (app keys) and `GET /v1/launches/{id}`.

use crate::http::Path;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::apikeys::Role;
use crate::http::auth::Caller;
use crate::http::{ApiError, Body};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(exchange))
        .routes(routes!(one))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ExchangeRequest {
    /// The `code` query parameter the gateway put on the app URL: single use, short-lived.
    #[schema(example = "Yp3v0mQy2p7cQf0o5Y6C0aWbq3bX1m3dZcH7u0p9yT8")]
    code: String,
}

/// Trade the one-time code from the app URL for the launch context. The code works once
/// and only for a few minutes: exchange it from the app's back end as soon as it arrives.
#[utoipa::path(
    post,
    path = "/v1/launches/exchange",
    tag = "launches",
    operation_id = "exchange_launch_code",
    request_body = ExchangeRequest,
    security(("app_key" = [])),
    responses(
        (status = 200, description = "The launch context", body = super::LaunchView),
        (status = 400, description = "Not a code body, or the code is unknown (`unknown_code`), used (`code_used`) or expired (`code_expired`)", body = crate::http::error::ErrorBody),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 413, response = crate::http::openapi::PayloadTooLarge),
    )
)]
async fn exchange(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body,
) -> Result<Json<super::LaunchView>, ApiError> {
    caller.require(&[Role::App])?;
    let req: ExchangeRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("expected {{\"code\": \"...\"}}: {e}"),
        )
    })?;
    if req.code.is_empty() || req.code.len() > 200 {
        return Err(ApiError::bad_request(
            "invalid_code",
            "code must be the value from the app URL",
        ));
    }
    match super::redeem_handoff(&state.db, &req.code, crate::time::now_micros()).await? {
        Ok(launch) => {
            crate::http::sandbox::note(launch.sandbox);
            tracing::info!(launch_id = %launch.id, partner_id = %launch.partner_id, "launch handed to the app");
            Ok(Json(launch.view()))
        }
        Err(e) => Err(ApiError::bad_request(
            match e {
                super::RedeemError::Unknown => "unknown_code",
                super::RedeemError::Used => "code_used",
                super::RedeemError::Expired => "code_expired",
            },
            e.to_string(),
        )),
    }
}

/// The launch context again (the app may ask while the launch lives).
#[utoipa::path(
    get,
    path = "/v1/launches/{launch_id}",
    tag = "launches",
    operation_id = "get_launch",
    params(("launch_id" = String, Path, description = "From the exchange")),
    security(("app_key" = []), ("partner_key" = [])),
    responses(
        (status = 200, description = "The launch context", body = super::LaunchView),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
        (status = 410, response = crate::http::openapi::Gone),
    )
)]
async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(launch_id): Path<String>,
) -> Result<Json<super::LaunchView>, ApiError> {
    let launch = authorized_launch(&state, &caller, &launch_id).await?;
    Ok(Json(launch.view()))
}

/// The launch, if it exists, is live, and the caller may use it: app keys for any launch,
/// partner keys for their own partner's.
pub async fn authorized_launch(
    state: &AppState,
    caller: &Caller,
    launch_id: &str,
) -> Result<super::Launch, ApiError> {
    caller.require(&[Role::App, Role::Partner])?;
    let launch = super::find_launch(&state.db, launch_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no launch {launch_id:?}")))?;
    crate::http::sandbox::note(launch.sandbox);
    caller.check_owner(&launch.partner_id, || format!("no launch {launch_id:?}"))?;
    if !launch.is_live(chrono::Utc::now()) {
        return Err(ApiError::Gone(format!(
            "launch {launch_id} expired at {}; the user must launch again",
            crate::time::rfc3339(launch.expires_at)
        )));
    }
    Ok(launch)
}
