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
