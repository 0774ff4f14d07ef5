//! Browser routes of the LTI tool (`/lti/...`) and the app's LTI routes under
//! `/v1/launches/{id}/...`. Handlers stay thin: the work is in `login`, `launch`,
//! `deep_linking`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::http::auth::Caller;
use crate::http::{ApiError, Body};

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/lti/login", get(login).post(login))
        .route("/lti/launch", post(launch))
        .route("/lti/deep-link/{id}", post(deep_link_choice))
        .route("/lti/config/canvas.json", get(canvas_config))
        .route("/v1/launches/{launch_id}/deep-link", post(app_deep_link))
        .route("/lti/11/launch", post(lti11_launch))
        .route("/lti/register", get(register))
        .route("/v1/lti/registrations", get(list_registrations))
        .route(
            "/v1/lti/registrations/{id}/approve",
            post(approve_registration),
        )
        .route(
            "/v1/lti/registrations/{id}/reject",
            post(reject_registration),
        )
        .route("/v1/launches/{launch_id}/scores", post(post_score))
        .route("/v1/scores/{score_id}", get(get_score))
        .route(
            "/v1/launches/{launch_id}/lineitems",
            get(list_line_items).post(create_line_item),
        )
        .route(
            "/v1/launches/{launch_id}/lineitems/item",
            get(line_item).put(line_item).delete(line_item),
        )
        .route("/v1/launches/{launch_id}/members", get(members))
        .route(
            "/v1/launches/{launch_id}/outcome",
            get(read_outcome).delete(delete_outcome),
        )
}

async fn register(State(state): State<AppState>, RawQuery(q): RawQuery) -> Response {
    super::dynreg::register(&state, pairs(q.unwrap_or_default().as_bytes())).await
}

async fn list_registrations(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[crate::apikeys::Role::Admin])?;
    let status = pairs(q.unwrap_or_default().as_bytes()).remove("status");
    if let Some(s) = &status
        && !matches!(s.as_str(), "pending" | "approved" | "rejected")
    {
        return Err(ApiError::bad_request(
            "invalid_status",
            "status must be pending, approved or rejected",
        ));
    }
    Ok(Json(
        json!({ "registrations": super::dynreg::list(&state, status.as_deref()).await? }),
    ))
}

async fn decide(
    state: AppState,
    caller: Caller,
    id: String,
    approve: bool,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[crate::apikeys::Role::Admin])?;
    if !super::dynreg::decide(&state, &id, approve).await? {
        return Err(ApiError::Conflict(format!(
            "registration {id:?} does not exist or was already decided"
        )));
    }
    tracing::info!(registration_id = %id, approve, "LTI registration decided");
    Ok(Json(
        json!({ "id": id, "status": if approve { "approved" } else { "rejected" } }),
    ))
}

async fn approve_registration(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    decide(state, caller, id, true).await
}

async fn reject_registration(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    decide(state, caller, id, false).await
}

async fn lti11_launch(State(state): State<AppState>, body: Bytes) -> Response {
    super::lti11::launch(&state, super::lti11::form_params(&body)).await
}

/// `POST /v1/launches/{id}/scores`: 202 with the score id once stored; delivered by a job.
async fn post_score(
    State(state): State<AppState>,
    caller: Caller,
    Path(launch_id): Path<String>,
    Body(body): Body,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    caller.require(&[crate::apikeys::Role::App])?;
    let launch = crate::launches::routes::authorized_launch(&state, &caller, &launch_id).await?;
    let req: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("expected a JSON score: {e}"))
    })?;
    let score = super::ags::parse_score(&req, launch.user_id.as_deref()).map_err(|errors| {
        ApiError::Validation {
            detail: "the score is invalid; nothing was stored".into(),
            errors,
        }
    })?;
    let id = super::ags::accept_score(&state, &launch, score).await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({ "score_id": id, "status": "pending" })),
    ))
}

/// `GET /v1/scores/{id}`: where a score is (pending, delivered, failed) and why.
async fn get_score(
    State(state): State<AppState>,
    caller: Caller,
    Path(score_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[
        crate::apikeys::Role::App,
        crate::apikeys::Role::Partner,
        crate::apikeys::Role::Admin,
    ])?;
    let (partner_id, view) = super::store::score_status(&state.db, &score_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no score {score_id:?}")))?;
    state.sandbox_partner(&partner_id);
    caller.check_partner(&partner_id)?;
    Ok(Json(view))
}

async fn app_launch(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<crate::launches::Launch, ApiError> {
    caller.require(&[crate::apikeys::Role::App])?;
    let l = crate::launches::routes::authorized_launch(state, caller, id).await?;
    if l.kind != crate::launches::LaunchKind::Lti {
        return Err(ApiError::Conflict(format!(
            "launch {id} is not an LTI launch"
        )));
    }
    Ok(l)
}

async fn list_line_items(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let launch = app_launch(&state, &caller, &id).await?;
    Ok(Json(
        super::ags::list_line_items(&state, &launch, q.as_deref()).await?,
    ))
}

fn passthrough(
    (status, body): (u16, Value),
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let code =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    if code.is_server_error() {
        return Err(ApiError::BadGateway {
            code: "lms_error",
            detail: format!("the LMS answered {status}: {body}"),
        });
    }
    Ok((code, Json(body)))
}

fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("expected a JSON line item: {e}"))
    })
}

fn item_id(q: Option<String>) -> Result<String, ApiError> {
    pairs(q.unwrap_or_default().as_bytes())
        .remove("id")
        .ok_or_else(|| ApiError::bad_request("missing_id", "name the line item with ?id=<its URL>"))
}

async fn create_line_item(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let launch = app_launch(&state, &caller, &id).await?;
    let item = json_body(&body)?;
    if item
        .get("label")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        || item
            .get("scoreMaximum")
            .and_then(Value::as_f64)
            .is_none_or(|m| m <= 0.0)
    {
        return Err(ApiError::bad_request(
            "invalid_line_item",
            "a line item needs a label and a scoreMaximum above 0",
        ));
    }
    passthrough(
        super::ags::write_line_item(&state, &launch, reqwest::Method::POST, None, Some(item))
            .await?,
    )
}

/// GET, PUT or DELETE one line item, named by `?id=<its URL>`.
async fn line_item(
    State(state): State<AppState>,
    method: Method,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    Body(body): Body,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let launch = app_launch(&state, &caller, &id).await?;
    let body = if method == Method::PUT {
        Some(json_body(&body)?)
    } else {
        None
    };
    passthrough(
        super::ags::write_line_item(&state, &launch, method, Some(&item_id(q)?), body).await?,
    )
}

async fn members(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let launch = app_launch(&state, &caller, &id).await?;
    Ok(Json(super::ags::members(&state, &launch).await?))
}

fn lti11_only(l: &crate::launches::Launch) -> Result<(), ApiError> {
    if l.context.get("lti_version").and_then(Value::as_str) != Some("1.1") {
        return Err(ApiError::Conflict(
            "outcomes are for LTI 1.1 launches; use /scores and /lineitems".into(),
        ));
    }
    Ok(())
}

fn outcome_error((permanent, reason): (bool, String)) -> ApiError {
    if permanent {
        ApiError::Conflict(reason)
    } else {
        ApiError::BadGateway {
            code: "lms_unreachable",
            detail: reason,
        }
    }
}

/// readResult for an LTI 1.1 launch.
async fn read_outcome(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let launch = app_launch(&state, &caller, &id).await?;
    lti11_only(&launch)?;
    let score = super::lti11::read_result(&state, &launch)
        .await
        .map_err(outcome_error)?;
    Ok(Json(json!({ "launch_id": id, "score": score })))
}

/// deleteResult for an LTI 1.1 launch.
async fn delete_outcome(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    let launch = app_launch(&state, &caller, &id).await?;
    lti11_only(&launch)?;
    super::lti11::delete_result(&state, &launch)
        .await
        .map_err(outcome_error)?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Form or query pairs; the first of a repeated name wins.
pub fn pairs(bytes: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(bytes) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// Login initiation: parameters in the query (GET) or the form body (POST), as platforms
/// differ.
async fn login(
    State(state): State<AppState>,
    method: Method,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let mut params = pairs(q.unwrap_or_default().as_bytes());
    if method == Method::POST {
        for (k, v) in pairs(&body) {
            params.insert(k, v);
        }
    }
    super::login::initiate(&state, params).await
}

async fn launch(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    super::launch::launch(&state, &headers, pairs(&body)).await
}

async fn deep_link_choice(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let chosen: Vec<usize> = url::form_urlencoded::parse(&body)
        .filter(|(k, _)| k == "item")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    super::deep_linking::choose(&state, &id, chosen).await
}

/// The JSON to paste into a Canvas LTI 1.3 developer key ("Enter URL").
async fn canvas_config(State(state): State<AppState>) -> Json<Value> {
    let base = state.config.http.public_base();
    let host = url::Url::parse(&base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    Json(json!({
        "title": "Partner Gateway",
        "description": "Launches the app from Canvas with grade passback and rosters.",
        "oidc_initiation_url": format!("{base}/lti/login"),
        "target_link_uri": format!("{base}/lti/launch"),
        "public_jwk_url": format!("{base}/.well-known/jwks.json"),
        "scopes": [
            "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
            "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly",
            "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly",
            "https://purl.imsglobal.org/spec/lti-ags/scope/score",
            "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
        ],
        "extensions": [{
            "domain": host,
            "tool_id": "partner-gateway",
            "platform": "canvas.instructure.com",
            "privacy_level": "public",
            "settings": {
                "text": "Partner Gateway",
                "placements": [
                    {"placement": "link_selection", "message_type": "LtiDeepLinkingRequest", "target_link_uri": format!("{base}/lti/launch")},
                    {"placement": "assignment_selection", "message_type": "LtiDeepLinkingRequest", "target_link_uri": format!("{base}/lti/launch")},
                    {"placement": "course_navigation", "message_type": "LtiResourceLinkRequest", "target_link_uri": format!("{base}/lti/launch")}
                ]
            }
        }],
        "custom_fields": {
            "canvas_course_id": "$Canvas.course.id",
            "canvas_user_id": "$Canvas.user.id"
        }
    }))
}

/// `POST /v1/launches/{id}/deep-link` (app keys): for a Deep Linking launch the app chose
/// content for, the signed response and where the browser must POST it (as field `JWT`).
async fn app_deep_link(
    State(state): State<AppState>,
    caller: Caller,
    Path(launch_id): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let launch = crate::launches::routes::authorized_launch(&state, &caller, &launch_id).await?;
    if launch.context.get("message_type").and_then(Value::as_str) != Some("LtiDeepLinkingRequest") {
        return Err(ApiError::Conflict(format!(
            "launch {launch_id} is not a Deep Linking request"
        )));
    }
    let req: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("expected {{\"content_items\": [...]}}: {e}"),
        )
    })?;
    let items = req
        .get("content_items")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_body",
                "content_items must be an array of LTI content items",
            )
        })?;
    for (i, item) in items.iter().enumerate() {
        if item.get("type").and_then(Value::as_str).is_none() {
            return Err(ApiError::Validation {
                detail: "every content item needs a type".into(),
                errors: vec![crate::http::FieldError {
                    index: Some(i),
                    field: "type".into(),
                    reason: "missing".into(),
                }],
            });
        }
    }
    let c = &launch.context;
    let s = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    // The settings came in the launch; the app's answer reuses them (data echoed).
    let settings = c.get("deep_linking").cloned().unwrap_or(Value::Null);
    let jwt = super::deep_linking::response_jwt(
        &state,
        &s("client_id"),
        &s("iss"),
        &s("deployment_id"),
        &settings,
        items,
    )
    .await?;
    Ok(Json(json!({
        "return_url": settings.get("deep_link_return_url"),
        "jwt": jwt,
    })))
}
