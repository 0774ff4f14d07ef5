//! Deep Linking 2.0: an `LtiDeepLinkingRequest` opens a picker of the content items the
//! partner's config offers; the choice goes back to the platform as a signed
//! `LtiDeepLinkingResponse` (RS256, the gateway's key), auto-posted as the `JWT` field to
//! `deep_link_return_url`. Without configured items the app chooses: the launch is handed
//! to it and it answers through `POST /v1/launches/{id}/deep-link`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use super::claims::{self, MessageType};
use super::platforms::Platform;
use super::registration::ContentItem;
use crate::http::page::{Forms, Page, auto_post, escape};
use crate::state::AppState;

const DL_TTL_SECS: i64 = 3600;

pub async fn open(state: &AppState, platform: &Platform, claims: &Value) -> Result<Response, Page> {
    let partner = state
        .config
        .partner(&platform.partner_id)
        .and_then(|p| p.lti.as_ref())
        .ok_or_else(|| crate::http::page::internal("no LTI registration".into()))?;
    let settings = claims
        .get(claims::DEEP_LINKING)
        .cloned()
        .unwrap_or(Value::Null);
    // The answer goes back to this URL by a form post from the gateway's page (or the
    // app's): refused unless it is somewhere a browser may be sent.
    if let Err(e) = return_url(&settings) {
        tracing::warn!(issuer = %platform.issuer, error = %e, "Deep Linking request with an unusable return URL");
        return Err(Page::new(
            StatusCode::BAD_REQUEST,
            "This content selection cannot be answered",
        )
        .line(format!("The LMS's deep_link_return_url {e}."))
        .line("Tell your LMS administrator."));
    }
    if partner.content_items.is_empty() {
        // The app picks: hand the launch over; it answers through the API.
        return super::launch::complete(state, platform, claims, MessageType::DeepLinking).await;
    }
    let deployment = claims
        .get(claims::DEPLOYMENT_ID)
        .and_then(Value::as_str)
        .unwrap_or_default();
    let id = crate::random::token(24);
    let now = crate::time::now_micros();
    let settings_json = settings.to_string();
    let row = super::store::NewDeepLink {
        id: &id,
        partner_id: &platform.partner_id,
        issuer: &platform.issuer,
        client_id: &platform.client_id,
        deployment_id: deployment,
        settings: &settings_json,
        created_at_us: now,
        expires_at_us: now + DL_TTL_SECS * 1_000_000,
    };
    super::store::insert_deep_link(&state.db, &row)
        .await
        .map_err(|e| crate::http::page::internal(format!("storing the deep link request: {e}")))?;
    Ok(picker(&id, &partner.content_items, &settings))
}

/// The Deep Linking settings' `deep_link_return_url`, checked as any place the gateway
/// sends a browser (`page::redirect_target`).
fn return_url(settings: &Value) -> Result<url::Url, String> {
    let raw = settings
        .get("deep_link_return_url")
        .and_then(Value::as_str)
        .ok_or_else(|| "is missing".to_owned())?;
    crate::http::page::redirect_target(raw)
}

fn accepted(settings: &Value, item: &ContentItem) -> bool {
    settings
        .get("accept_types")
        .and_then(Value::as_array)
        .is_none_or(|t| {
            t.iter()
                .any(|x| x.as_str() == Some(item.item_type.as_str()))
        })
}

fn picker(id: &str, items: &[ContentItem], settings: &Value) -> Response {
    let multiple = settings
        .get("accept_multiple")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let input = if multiple { "checkbox" } else { "radio" };
    let rows: String = items
        .iter()
        .enumerate()
        .filter(|(_, item)| accepted(settings, item))
        .map(|(i, item)| {
            format!(
                "<li><label><input type=\"{input}\" name=\"item\" value=\"{i}\"> <strong>{}</strong>{}</label></li>",
                escape(&item.title),
                item.text.as_deref().map(|t| format!(" — {}", escape(t))).unwrap_or_default()
            )
        })
        .collect();
    let inner = format!(
        "<h1>Choose what to add to your course</h1><form method=\"post\" action=\"/lti/deep-link/{id}\"><ul>{rows}</ul>\
         <button type=\"submit\">Add</button></form>",
        id = escape(id)
    );
    crate::http::page::layout(StatusCode::OK, "Choose content", &inner, Forms::Gateway)
}

/// The content item JSON (LTI DL 2.0 §3.4) for a configured item.
pub fn item_json(item: &ContentItem, default_url: &str) -> Value {
    let mut v = json!({ "type": item.item_type, "title": item.title });
    if let Some(t) = &item.text {
        v["text"] = json!(t);
    }
    match (&item.url, item.item_type.as_str()) {
        (Some(u), _) => v["url"] = json!(u),
        (None, "ltiResourceLink") => v["url"] = json!(default_url),
        _ => {}
    }
    if !item.custom.is_empty() {
        v["custom"] = Value::Object(item.custom.clone());
    }
    if let Some(max) = item.score_maximum {
        v["lineItem"] = json!({ "scoreMaximum": max, "label": item.title });
    }
    v
}

/// The signed `LtiDeepLinkingResponse` for `items`.
pub async fn response_jwt(
    state: &AppState,
    client_id: &str,
    issuer: &str,
    deployment_id: &str,
    settings: &Value,
    items: Vec<Value>,
) -> anyhow::Result<String> {
    let key =
        crate::keys::signing_key(&state.db, &state.master_key, crate::keys::Alg::Rs256).await?;
    let now = Utc::now().timestamp();
    let mut claims = json!({
        "iss": client_id,
        "aud": issuer,
        "iat": now,
        "exp": now + 300,
        "nonce": crate::random::token(16),
        claims::MESSAGE_TYPE: "LtiDeepLinkingResponse",
        claims::VERSION: "1.3.0",
        claims::DEPLOYMENT_ID: deployment_id,
        "https://purl.imsglobal.org/spec/lti-dl/claim/content_items": items,
    });
    if let Some(data) = settings.get("data") {
        claims["https://purl.imsglobal.org/spec/lti-dl/claim/data"] = data.clone();
    }
    crate::keys::sign_jwt(&key, &claims)
}

/// `POST /lti/deep-link/{id}`: the user's choice from the picker.
pub async fn choose(state: &AppState, id: &str, chosen: Vec<usize>) -> Response {
    match choose_inner(state, id, chosen).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

async fn choose_inner(state: &AppState, id: &str, chosen: Vec<usize>) -> Result<Response, Page> {
    let now = crate::time::now_micros();
    let mut tx = state
        .db
        .begin()
        .await
        .map_err(|e| crate::http::page::internal(e.to_string()))?;
    let row = super::store::deep_link(&mut tx, id)
        .await
        .map_err(|e| crate::http::page::internal(e.to_string()))?;
    let Some(super::store::DeepLink {
        partner_id,
        issuer,
        client_id,
        deployment_id,
        settings,
        expires_at_us: expires,
        used_at_us: used,
    }) = row
    else {
        return Err(Page::new(
            StatusCode::NOT_FOUND,
            "This selection is not one the tool started",
        ));
    };
    if used.is_some() || expires <= now {
        return Err(Page::new(
            StatusCode::BAD_REQUEST,
            "This selection was already sent or has expired",
        )
        .line("Start adding content again from your course."));
    }
    super::store::spend_deep_link(&mut tx, id, now)
        .await
        .map_err(|e| crate::http::page::internal(e.to_string()))?;
    tx.commit()
        .await
        .map_err(|e| crate::http::page::internal(e.to_string()))?;
    let settings: Value = serde_json::from_str(&settings).unwrap_or(Value::Null);
    let items_cfg = state
        .config
        .partner(&partner_id)
        .and_then(|p| p.lti.as_ref())
        .map(|l| l.content_items.clone())
        .unwrap_or_default();
    let default_url = super::login::launch_url(state);
    let items: Vec<Value> = chosen
        .iter()
        .filter_map(|i| items_cfg.get(*i))
        .filter(|item| accepted(&settings, item))
        .map(|item| item_json(item, &default_url))
        .collect();
    let jwt = response_jwt(state, &client_id, &issuer, &deployment_id, &settings, items)
        .await
        .map_err(|e| {
            crate::http::page::internal(format!("signing the deep linking response: {e:#}"))
        })?;
    let return_url = return_url(&settings)
        .map_err(|e| crate::http::page::internal(format!("deep_link_return_url {e}")))?;
    Ok(auto_post(
        &return_url,
        &[("JWT", &jwt)],
        "Returning to your course",
    ))
}
