//! `GET /v1/partners` and `GET /v1/partners/{id}`.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Partner;
use crate::app::AppState;
use crate::http::ApiError;
use crate::http::auth::Caller;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(one))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PartnerList {
    pub data: Vec<Partner>,
}

/// The partners this key may see: admin, finance and app keys see every partner; a partner
/// key sees itself.
#[utoipa::path(
    get,
    path = "/v1/partners",
    tag = "partners",
    operation_id = "list_partners",
    security(("admin_key" = []), ("finance_key" = []), ("app_key" = []), ("partner_key" = [])),
    responses((status = 200, description = "The partners, active and inactive", body = PartnerList))
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PartnerList>, ApiError> {
    let data = super::list_partners(&state.db, caller.partner_id.as_deref()).await?;
    Ok(Json(PartnerList { data }))
}

/// One partner.
#[utoipa::path(
    get,
    path = "/v1/partners/{id}",
    tag = "partners",
    operation_id = "get_partner",
    params(("id" = String, Path, description = "The partner's id, as in config", example = "epic-sandbox")),
    security(("admin_key" = []), ("finance_key" = []), ("app_key" = []), ("partner_key" = [])),
    responses(
        (status = 200, description = "The partner", body = Partner),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 404, response = crate::http::openapi::NotFound),
    )
)]
async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Partner>, ApiError> {
    caller.check_partner(&id)?;
    // A sandbox partner asked for by name is marked, whoever asks.
    state.sandbox_partner(&id);
    let mut partners = super::list_partners(&state.db, Some(&id)).await?;
    partners
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("unknown partner {id:?}")))
}
