//! OIDC login initiation (`GET|POST /lti/login`), the first step of an LTI 1.3 launch: the
//! platform names itself; the tool checks the registration, keeps `state` and `nonce`
//! server-side, binds the state to this browser (a cookie, and platform storage when the
//! platform offers it) and sends the browser to the platform's auth endpoint.

use std::collections::HashMap;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::page::{Forms, Page, data_script_page, notice};
use crate::launches::binding;
use crate::state::AppState;
use crate::time::now_micros;

/// The login page's script when the platform offers storage (LTI Client Side
/// postMessages, <https://www.imsglobal.org/spec/lti-cs-pm/v0p1>; platform storage,
/// <https://www.imsglobal.org/spec/lti-pm-s/v0p1>): put the binding into the platform's
/// storage through the frame it named, then go on to its auth endpoint. Fixed text (the
/// policy allows it by hash); what it needs comes from the page's JSON block.
pub const PUT_BINDING: &str = "(function(){var d=JSON.parse(document.getElementById('pgw-data').textContent),done=false;\
function go(){if(!done){done=true;window.location.replace(d.url);}}\
var f=null;try{f=window.parent.frames[d.target]||window.parent;}catch(e){f=window.parent;}\
window.addEventListener('message',function(e){if(e.origin!==d.origin||!e.data)return;\
if(e.data.subject==='lti.put_data.response'&&e.data.message_id===d.id)go();});\
try{f.postMessage({subject:'lti.put_data',message_id:d.id,key:d.key,value:d.value},d.origin);}catch(e){}\
setTimeout(go,2000);})();";

/// A frame name as `lti_storage_target` must be (`post_message_forwarding`, `_parent`).
fn is_frame_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The cookie carrying the browser binding of one state (several launches may be in
/// flight in one browser, each in its own frame). The LMS frames the tool and brings the
/// browser back with a cross-site form post, so it is `SameSite=None; Secure;
/// Partitioned` (CHIPS: kept in the LMS's partition where third-party cookies are blocked).
pub fn binding_cookie(state: &AppState, state_hash: &str) -> binding::Cookie {
    binding::Cookie {
        name: binding::per_state_name("pgw_lti", state_hash),
        path: "/lti",
        max_age_secs: state.config.lti.state_ttl_secs,
        site: binding::Site::Framed,
    }
}

/// The key under which platform storage keeps the binding.
pub fn storage_key(state_hash: &str) -> String {
    format!("pgw_state_{}", &state_hash[..16.min(state_hash.len())])
}

pub fn launch_url(state: &AppState) -> String {
    format!("{}/lti/launch", state.config.http.public_base())
}

pub async fn initiate(state: &AppState, q: HashMap<String, String>) -> Response {
    match initiate_inner(state, q).await {
        Ok(r) => r,
        Err(page) => page.into_response(),
    }
}

fn bad(title: &str, line: String) -> Page {
    Page::new(StatusCode::BAD_REQUEST, title).line(line)
}

async fn initiate_inner(state: &AppState, q: HashMap<String, String>) -> Result<Response, Page> {
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let iss = get("iss").ok_or_else(|| {
        bad(
            "This launch is incomplete",
            "The LMS did not send iss (its issuer).".into(),
        )
    })?;
    let login_hint = get("login_hint").ok_or_else(|| {
        bad(
            "This launch is incomplete",
            "The LMS did not send login_hint.".into(),
        )
    })?;
    let target = get("target_link_uri").ok_or_else(|| {
        bad(
            "This launch is incomplete",
            "The LMS did not send target_link_uri.".into(),
        )
    })?;
    let client_id = get("client_id");
    let platforms = super::platforms::find(state, iss, client_id)
        .await
        .map_err(|e| crate::http::page::internal(format!("finding the LTI platform: {e:#}")))?;
    if platforms.is_empty() {
        tracing::warn!(%iss, client_id = client_id.unwrap_or(""), "LTI login from an unregistered platform");
        return Err(Page::new(
            StatusCode::BAD_REQUEST,
            "This LMS is not registered with the tool",
        )
        .line(format!(
            "The launch came from issuer {iss}{}, which no partner has registered.",
            client_id
                .map(|c| format!(" with client id {c}"))
                .unwrap_or_default()
        ))
        .line("Ask your LMS administrator to check the tool's registration."));
    }
    let mut clients: Vec<&str> = platforms.iter().map(|p| p.client_id.as_str()).collect();
    clients.dedup();
    if clients.len() > 1 && client_id.is_none() {
        return Err(bad(
            "This launch is ambiguous",
            format!(
                "{iss} has several tool registrations and the LMS did not say which (client_id)."
            ),
        ));
    }
    if let Some(d) = get("lti_deployment_id")
        && super::platforms::for_deployment(&platforms, d).is_none()
    {
        tracing::warn!(%iss, deployment_id = d, "LTI login for an unregistered deployment");
        return Err(bad(
            "This deployment is not registered",
            format!("Deployment {d} of {iss} is not registered with the tool."),
        ));
    }
    let public = state.config.http.public_base();
    if !(target == public || target.starts_with(&format!("{public}/"))) {
        return Err(bad(
            "This launch points elsewhere",
            format!("target_link_uri {target} is not an address of this tool ({public})."),
        ));
    }
    let platform = &platforms[0];
    let auth = url::Url::parse(&platform.auth_url)
        .map_err(|e| crate::http::page::internal(format!("auth_url: {e}")))?;

    let state_value = crate::random::token(32);
    let state_hash = crate::launches::hash_code(&state_value);
    let nonce = crate::random::token(32);
    let binding = binding::new_secret();
    let storage_target = get("lti_storage_target").map(str::to_owned);
    if let Some(t) = &storage_target
        && !is_frame_name(t)
    {
        return Err(bad(
            "This launch is malformed",
            "lti_storage_target must be the name of a frame (letters, digits, _ or -).".into(),
        ));
    }
    let storage_origin = storage_target
        .as_ref()
        .map(|_| auth.origin().ascii_serialization());
    let login: serde_json::Map<String, serde_json::Value> = q
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "iss"
                    | "login_hint"
                    | "target_link_uri"
                    | "lti_message_hint"
                    | "client_id"
                    | "lti_deployment_id"
            )
        })
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let pending = super::store::PendingLogin {
        binding_hash: binding::hash(&binding),
        nonce: nonce.clone(),
        issuer: iss.to_owned(),
        client_id: platform.client_id.clone(),
        login: serde_json::Value::Object(login).to_string(),
        storage_target: storage_target.clone(),
        storage_origin: storage_origin.clone(),
    };
    let now = now_micros();
    let ttl = state.config.lti.state_ttl_secs;
    super::store::insert_state(
        &state.db,
        &state_hash,
        &pending,
        now,
        now + ttl as i64 * 1_000_000,
    )
    .await
    .map_err(|e| crate::http::page::internal(format!("storing the LTI state: {e:#}")))?;

    let mut url = auth;
    {
        let mut p = url.query_pairs_mut();
        p.append_pair("scope", "openid")
            .append_pair("response_type", "id_token")
            .append_pair("response_mode", "form_post")
            .append_pair("prompt", "none")
            .append_pair("client_id", &platform.client_id)
            .append_pair("redirect_uri", &launch_url(state))
            .append_pair("login_hint", login_hint)
            .append_pair("state", &state_value)
            .append_pair("nonce", &nonce);
        if let Some(h) = q.get("lti_message_hint") {
            p.append_pair("lti_message_hint", h);
        }
    }
    let mut resp = match (&storage_target, &storage_origin) {
        (Some(target), Some(origin)) => {
            // Also keep the binding in the platform's storage: the cookie may be blocked in
            // the LMS's frame. Navigate on once the platform confirms (or after a timeout).
            let data = json!({
                "target": target,
                "origin": origin,
                "key": storage_key(&state_hash),
                "value": binding,
                "url": url.as_str(),
                "id": crate::random::token(9),
            });
            // Without script, the link continues (the cookie alone then binds the state).
            let title = "Opening the activity";
            let inner = notice(
                title,
                &[format!("Continuing to {}…", platform.issuer)],
                Some(("Continue", url.as_str())),
            );
            data_script_page(
                StatusCode::OK,
                title,
                &inner,
                PUT_BINDING,
                &data,
                Forms::None,
            )
        }
        _ => crate::http::page::redirect(url.as_str()),
    };
    if let Some(v) = binding_cookie(state, &state_hash).set(&binding) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    tracing::info!(%iss, client_id = %platform.client_id, storage = storage_target.is_some(), "LTI login initiated");
    Ok(resp)
}
