//! Deep Linking 2.0: the return URL of each deep-linking launch (§4.4), which takes the
//! tool's `LtiDeepLinkingResponse` JWT (§4.5) as the form field `JWT`, verifies it against
//! the tool's JWKS and keeps the content items.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::token::{assertion_algs, aud_contains, check_times, unverified_claims, verify_tool_jwt};
use super::{
    LAUNCH_TTL_SECS, LaunchSpec, Personality, Shared, claim, essence, html_page, lock, now_secs,
    parse_form, random_token, single,
};

pub(super) const RETURN_PATH: &str = "/lti/deep_link_return";

/// A deep-linking launch waiting for its response.
pub(crate) struct Session {
    client_id: String,
    deployment_id: String,
    context_id: String,
    data: Option<String>,
    accept_types: Vec<String>,
    expires_at: u64,
}

#[derive(Default)]
pub(crate) struct State {
    sessions: HashMap<String, Session>,
    /// Verified claims of the responses accepted, in order.
    pub accepted: Vec<Value>,
    /// Response nonces seen, to refuse replays.
    nonces: HashSet<String>,
}

/// The content item types each platform takes from a deep-linking launch of the kind the
/// mock makes (an activity picker).
pub(super) fn accept_types(p: Personality) -> Vec<String> {
    let types: &[&str] = match p {
        Personality::Moodle => &["ltiResourceLink"],
        Personality::Canvas => &["ltiResourceLink"],
        Personality::Blackboard => &["link", "ltiResourceLink", "file", "html", "image"],
        Personality::D2l => &["ltiResourceLink", "link", "html", "file", "image"],
        Personality::Generic => &["ltiResourceLink", "link", "file", "html", "image"],
    };
    types.iter().map(|t| (*t).to_owned()).collect()
}

/// Open a session for a deep-linking launch; returns the `deep_link_return_url` to send
/// (the caller's own URL when it gave one: the session is then never posted to).
pub(super) fn open_session(
    s: &Shared,
    spec: &LaunchSpec,
    return_url: Option<String>,
    data: Option<String>,
    accept_types: &[String],
) -> String {
    let id = random_token();
    let url = return_url.unwrap_or_else(|| s.url(&format!("{RETURN_PATH}/{id}")));
    let now = now_secs();
    let mut state = lock(&s.deep_links);
    state.sessions.retain(|_, session| session.expires_at > now);
    state.sessions.insert(
        id,
        Session {
            client_id: spec.client_id.clone(),
            deployment_id: spec.deployment_id.clone(),
            context_id: spec.context_id.clone(),
            data,
            accept_types: accept_types.to_vec(),
            // A teacher may take a while to pick content.
            expires_at: now + 6 * LAUNCH_TTL_SECS,
        },
    );
    url
}

fn refuse(reason: &str) -> Response {
    html_page(
        StatusCode::BAD_REQUEST,
        "Deep linking response refused",
        reason,
    )
}

pub(super) async fn deep_link_return(
    AxumState(s): AxumState<Arc<Shared>>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| essence(v) == "application/x-www-form-urlencoded");
    if !form_type {
        return refuse("The response must be an application/x-www-form-urlencoded form POST.");
    }
    let form = parse_form(&body);
    let jwt = match single(&form, "JWT") {
        Ok(Some(jwt)) if !jwt.is_empty() => jwt.to_owned(),
        Ok(_) => return refuse("The form has no JWT field."),
        Err(_) => return refuse("JWT appears more than once."),
    };
    let (client_id, deployment_id, context_id, data, accept_types) = {
        let state = lock(&s.deep_links);
        match state.sessions.get(&session_id) {
            Some(session) if session.expires_at > now_secs() => (
                session.client_id.clone(),
                session.deployment_id.clone(),
                session.context_id.clone(),
                session.data.clone(),
                session.accept_types.clone(),
            ),
            _ => return refuse("This return URL is unknown, expired or already used."),
        }
    };
    if unverified_claims(&jwt)
        .and_then(|c| c.get("iss").and_then(Value::as_str).map(str::to_owned))
        .as_deref()
        != Some(client_id.as_str())
    {
        return refuse("iss must be the client_id of the tool that was launched.");
    }
    let Some(tool) = s.tool(&client_id) else {
        return refuse("The tool is no longer registered.");
    };
    let claims =
        match verify_tool_jwt(&s, &tool.tool.jwks_url, &jwt, assertion_algs(s.personality)).await {
            Ok((_, claims)) => claims,
            Err(e) => return refuse(&format!("The JWT does not verify: {e}")),
        };
    if let Err(e) = check_claims(&s, &claims, &deployment_id, data.as_deref(), &accept_types) {
        return refuse(&e);
    }
    let nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or("");

    {
        let mut state = lock(&s.deep_links);
        if !state.nonces.insert(nonce.to_owned()) {
            return refuse("nonce was already used (replay).");
        }
        if state.sessions.remove(&session_id).is_none() {
            return refuse("This return URL was used meanwhile.");
        }
        state.accepted.push(claims.clone());
    }
    let items = claims
        .get(claim::DL_CONTENT_ITEMS)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    create_line_items(&s, &context_id, &client_id, &items);
    let message = claims
        .get("https://purl.imsglobal.org/spec/lti-dl/claim/msg")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            // Name what was added, as an LMS's course page would show it.
            let titles: Vec<&str> = items
                .iter()
                .filter_map(|i| i.get("title").and_then(Value::as_str))
                .collect();
            format!("{} item(s) added: {}.", items.len(), titles.join(", "))
        });
    html_page(StatusCode::OK, "Content added", &message)
}

/// The rules of Deep Linking 2.0 §4.5 for the response's claims.
fn check_claims(
    s: &Shared,
    claims: &Value,
    deployment_id: &str,
    data: Option<&str>,
    accept_types: &[String],
) -> Result<(), String> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if !aud_contains(claims.get("aud"), &s.issuer) {
        return Err(format!("aud must be the platform's issuer {}", s.issuer));
    }
    if text("nonce").is_none_or(str::is_empty) {
        return Err("nonce is required.".into());
    }
    check_times(claims, now_secs())?;
    if text(claim::MESSAGE_TYPE) != Some("LtiDeepLinkingResponse") {
        return Err("message_type must be LtiDeepLinkingResponse.".into());
    }
    if text(claim::VERSION) != Some("1.3.0") {
        return Err("version must be 1.3.0.".into());
    }
    if text(claim::DEPLOYMENT_ID) != Some(deployment_id) {
        return Err("deployment_id does not match the launch's.".into());
    }
    if text(claim::DL_DATA) != data {
        return Err("data must be returned exactly as the deep_linking_settings sent it.".into());
    }
    match claims.get(claim::DL_CONTENT_ITEMS) {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
                if !accept_types.iter().any(|t| t == kind) {
                    return Err(format!(
                        "content item type {kind:?} is not one of the accepted types {accept_types:?}"
                    ));
                }
            }
        }
        Some(_) => return Err("content_items must be an array.".into()),
    }
    Ok(())
}

/// An `ltiResourceLink` with a `lineItem` makes a gradebook column bound to the new link,
/// as Canvas and Moodle do.
fn create_line_items(s: &Shared, ctx: &str, client_id: &str, items: &[Value]) {
    let mut data = lock(&s.data);
    for item in items {
        if item.get("type").and_then(Value::as_str) != Some("ltiResourceLink") {
            continue;
        }
        let Some(line_item) = item.get("lineItem") else {
            continue;
        };
        let Some(max) = line_item.get("scoreMaximum").and_then(Value::as_f64) else {
            continue;
        };
        let label = line_item
            .get("label")
            .or_else(|| item.get("title"))
            .and_then(Value::as_str)
            .unwrap_or("Untitled");
        let mut fields = Map::new();
        fields.insert("label".into(), json!(label));
        fields.insert("scoreMaximum".into(), json!(max));
        fields.insert(
            "resourceLinkId".into(),
            json!(format!("dl-{}", &random_token()[..12])),
        );
        for name in ["resourceId", "tag"] {
            if let Some(v) = line_item.get(name).and_then(Value::as_str) {
                fields.insert(name.into(), json!(v));
            }
        }
        data.create_item(ctx, fields, Some(client_id.to_owned()));
    }
}
