//! OIDC login initiation (`GET|POST /lti/login`), the first step of an LTI 1.3 launch: the
//! platform names itself; the tool checks the registration, keeps `state` and `nonce`
//! server-side, binds the state to this browser (a cookie, and platform storage when the
//! platform offers it) and sends the browser to the platform's auth endpoint.

use std::collections::HashMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppState;
use crate::http::page::{Page, script_page};
use crate::smart::flow::random_token;
use crate::time::now_micros;

/// The cookie carrying the browser binding of one state (several launches may be in
/// flight in one browser, each in its own frame).
pub fn cookie_name(state_hash: &str) -> String {
    format!("pgw_lti_{}", &state_hash[..16.min(state_hash.len())])
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

    let state_value = random_token(32);
    let state_hash = crate::launches::hash_code(&state_value);
    let nonce = random_token(32);
    let binding = random_token(32);
    let storage_target = get("lti_storage_target").map(str::to_owned);
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
        binding_hash: crate::launches::hash_code(&binding),
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
    let cookie = format!(
        "{}={binding}; Path=/lti; Max-Age={ttl}; HttpOnly; Secure; SameSite=None; Partitioned",
        cookie_name(&state_hash)
    );
    let mut resp = match (&storage_target, &storage_origin) {
        (Some(target), Some(origin)) => {
            // Also keep the binding in the platform's storage: the cookie may be blocked in
            // the LMS's frame. Navigate on once the platform confirms (or after a timeout).
            let script = format!(
                "(function(){{var t={target},o={origin},k={key},v={value},u={url},id={id},done=false;\
                 function go(){{if(!done){{done=true;window.location.replace(u);}}}}\
                 var f=null;try{{f=window.parent.frames[t]||window.parent;}}catch(e){{f=window.parent;}}\
                 window.addEventListener('message',function(e){{if(e.origin!==o||!e.data)return;\
                 if(e.data.subject==='lti.put_data.response'&&e.data.message_id===id)go();}});\
                 try{{f.postMessage({{subject:'lti.put_data',message_id:id,key:k,value:v}},o);}}catch(e){{}}\
                 setTimeout(go,2000);}})();",
                target = json!(target),
                origin = json!(origin),
                key = json!(storage_key(&state_hash)),
                value = json!(binding),
                url = json!(url.as_str()),
                id = json!(random_token(9)),
            );
            // Without script, the link continues (the cookie alone then binds the state).
            script_page(
                StatusCode::OK,
                "Opening the activity",
                &[format!("Continuing to {}…", platform.issuer)],
                &script,
                Some(("Continue", url.as_str())),
            )
        }
        _ => crate::http::page::redirect(url.as_str()),
    };
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    tracing::info!(%iss, client_id = %platform.client_id, storage = storage_target.is_some(), "LTI login initiated");
    Ok(resp)
}
