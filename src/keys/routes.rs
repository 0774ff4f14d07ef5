//! `GET /.well-known/jwks.json`: the gateway's public signing keys (RFC 7517), which
//! partners fetch to verify the gateway's client assertions.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::http::ApiError;
use crate::state::AppState;
use crate::time::now_micros;

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().route("/.well-known/jwks.json", get(jwks))
}

async fn jwks(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let keys = super::published_keys(&state.db, now_micros()).await?;
    // Short enough that a rotation reaches verifiers well inside the overlap.
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(json!({ "keys": keys })),
    ))
}
