//! `POST /v1/launches/exchange` (app keys) and `GET /v1/launches/{id}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use crate::apikeys::Role;
use crate::app::AppState;
use crate::http::auth::Caller;
use crate::http::{ApiError, Body};

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/launches/exchange", post(exchange))
        .route("/v1/launches/{launch_id}", get(one))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExchangeRequest {
    code: String,
}

/// Trade the one-time code from the app URL for the launch context.
async fn exchange(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
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
async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(launch_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
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
    caller.check_partner(&launch.partner_id)?;
    if !launch.is_live(chrono::Utc::now()) {
        return Err(ApiError::Gone(format!(
            "launch {launch_id} expired at {}; the user must launch again",
            launch.expires_at.to_rfc3339()
        )));
    }
    Ok(launch)
}
