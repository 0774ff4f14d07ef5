//! `GET /v1/partners` and `GET /v1/partners/{id}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::get;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::http::ApiError;
use crate::http::auth::Caller;

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/partners", get(list))
        .route("/v1/partners/{id}", get(one))
}

/// Admin, finance and app keys see every partner; a partner key sees itself.
async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let partners = super::list_partners(&state.db, caller.partner_id.as_deref()).await?;
    Ok(Json(json!({ "data": partners })))
}

async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.check_partner(&id)?;
    let mut partners = super::list_partners(&state.db, Some(&id)).await?;
    match partners.pop() {
        Some(p) => Ok(Json(serde_json::to_value(p).map_err(anyhow::Error::from)?)),
        None => Err(ApiError::NotFound(format!("unknown partner {id:?}"))),
    }
}
