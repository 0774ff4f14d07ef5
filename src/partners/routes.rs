//! `GET /v1/partners` and `GET /v1/partners/{id}`.

use crate::http::Path;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Partner;
use crate::http::auth::Caller;
use crate::http::list::{Page, Paging};
use crate::http::{ApiError, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(one))
}

crate::page_schema!(PartnerList, Partner, "A page of partners, by id.");

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// At most this many: default 100, 1 to 1000.
    limit: Option<i64>,
    /// A `next_cursor` from the page before.
    cursor: Option<String>,
}

/// The partners this key may see: admin, finance and app keys see every partner; a partner
/// key sees itself.
#[utoipa::path(
    get,
    path = "/v1/partners",
    tag = "partners",
    operation_id = "list_partners",
    params(ListQuery),
    security(("admin_key" = []), ("finance_key" = []), ("app_key" = []), ("partner_key" = [])),
    responses(
        (status = 200, description = "A page of the active partners, by id", body = PartnerList),
        (status = 400, response = crate::http::openapi::BadRequest),
    )
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<Partner>>, ApiError> {
    let paging = Paging::new("partners", q.limit, q.cursor.as_deref())?;
    // Partners come from config: few enough to page in memory.
    let all = super::list_partners(&state.db, caller.partner_id.as_deref()).await?;
    Ok(Json(paging.page_sorted(all, |p| p.id.clone())?))
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
