//! The launch (`POST /lti/launch`): the platform form-posts `id_token` and `state`. The
//! state must be live, unspent and bound to this browser; the id_token must verify and
//! carry every claim LTI requires. A resource link launch becomes a launch handed to the
//! app; a Deep Linking request opens the content picker.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::claims::{self, Expect, LaunchError, MessageType};
use super::login::{binding_cookie, storage_key};
use super::platforms::Platform;
use super::store::StateProblem;
use crate::http::page::{Forms, Page, data_script_page};
use crate::launches::{Launch, LaunchKind, binding};
use crate::metering::UsageEvent;
use crate::state::AppState;
use crate::time::{now_micros, to_micros};

pub async fn launch(
    state: &AppState,
    headers: &HeaderMap,
    form: HashMap<String, String>,
) -> Response {
    let flow = launch_inner(state, headers, form);
    let outcome = crate::telemetry::metrics::counted("lti", flow).await;
    match outcome {
        Ok(r) => r,
        Err(page) => page.into_response(),
    }
}

fn refused(reason: impl Into<String>) -> Page {
    Page::new(StatusCode::BAD_REQUEST, "This launch could not be verified")
        .line(reason.into())
        .line("Open the activity again from your course; if this repeats, tell your LMS administrator.")
}

async fn launch_inner(
    state: &AppState,
    headers: &HeaderMap,
    form: HashMap<String, String>,
) -> Result<Response, Page> {
    let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    if let Some(error) = get("error") {
        let description = get("error_description").unwrap_or("");
        tracing::warn!(%error, %description, "the LMS answered the login with an error");
        let mut page = Page::new(
            StatusCode::BAD_REQUEST,
            "The LMS did not complete the launch",
        )
        .line(format!("It answered: {error}"));
        if !description.is_empty() {
            page = page.line(description.to_owned());
        }
        return Err(page.line("Open the activity again from your course."));
    }
    let state_value =
        get("state").ok_or_else(|| refused("The LMS's answer has no state parameter."))?;
    let id_token = get("id_token").ok_or_else(|| refused("The LMS's answer has no id_token."))?;
    let state_hash = crate::launches::hash_code(state_value);
    let now = now_micros();
    let pending = super::store::peek_state(&state.db, &state_hash, now)
        .await
        .map_err(|e| crate::http::page::internal(format!("reading the LTI state: {e:#}")))?
        .map_err(state_page)?;

    // The state must belong to this browser: its cookie, or the value platform storage kept.
    let cookie = binding_cookie(state, &state_hash).read(headers);
    let presented = cookie.or_else(|| get("lti_storage_binding").map(str::to_owned));
    let presented_hash = match presented.as_deref().map(binding::hash) {
        Some(h) if h == pending.binding_hash => h,
        Some(_) => {
            tracing::warn!(issuer = %pending.issuer, "LTI launch with a state bound to another browser");
            return Err(refused(
                "This launch was started in another browser window or session.",
            ));
        }
        None => {
            return Ok(recover_binding(
                state,
                &pending,
                &state_hash,
                state_value,
                id_token,
            ));
        }
    };
    if !super::store::spend_state(&state.db, &state_hash, &presented_hash, now)
        .await
        .map_err(|e| crate::http::page::internal(format!("spending the LTI state: {e:#}")))?
    {
        return Err(state_page(StateProblem::Reused));
    }

    let platforms = super::platforms::find(state, &pending.issuer, Some(&pending.client_id))
        .await
        .map_err(|e| crate::http::page::internal(format!("finding the LTI platform: {e:#}")))?;
    let platform = platforms
        .first()
        .ok_or_else(|| refused(format!("{} is no longer registered.", pending.issuer)))?;
    crate::telemetry::metrics::note_partner(&platform.partner_id);
    let claims = verify(state, platform, id_token, &pending.nonce)
        .await
        .map_err(|e| {
            tracing::warn!(issuer = %pending.issuer, error = %e, "LTI launch refused");
            refused(format!("{e}."))
        })?;
    let (message, claims) = claims;
    let deployment = claims
        .get(claims::DEPLOYMENT_ID)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let owner = super::platforms::for_deployment(&platforms, &deployment).ok_or_else(|| {
        tracing::warn!(issuer = %pending.issuer, %deployment, "LTI launch from an unregistered deployment");
        refused(LaunchError::Deployment(deployment.clone()).to_string())
    })?;
    crate::telemetry::metrics::note_partner(&owner.partner_id);
    match message {
        MessageType::ResourceLink => complete(state, owner, &claims, message).await,
        MessageType::DeepLinking => super::deep_linking::open(state, owner, &claims).await,
    }
}

/// Verify the id_token against the platform's keys (refetched once for an unknown kid) and
/// check its claims.
async fn verify(
    state: &AppState,
    platform: &Platform,
    token: &str,
    nonce: &str,
) -> Result<(MessageType, Value), LaunchError> {
    let (alg, kid) = claims::header(token)?;
    // The algorithm first: `none` or HS256 is refused whatever else the header says.
    if alg != "RS256" {
        return Err(LaunchError::Algorithm(if alg.is_empty() {
            "(none)".into()
        } else {
            alg
        }));
    }
    let kid = kid.ok_or(LaunchError::NoKid)?;
    let fetch = |refresh| state.smart.discovery.jwks(&platform.jwks_url, refresh);
    let jwks = fetch(false).await.map_err(|e| {
        LaunchError::Malformed(format!("the platform's keys could not be read: {e}"))
    })?;
    let key = match claims::find_key(&jwks, &kid) {
        Some(k) => k,
        None => {
            let fresh = fetch(true).await.map_err(|e| {
                LaunchError::Malformed(format!("the platform's keys could not be read: {e}"))
            })?;
            claims::find_key(&fresh, &kid).ok_or(LaunchError::UnknownKid(kid.clone()))?
        }
    };
    let values = claims::verify_signature(token, &key)?;
    let cfg = &state.config.lti;
    let message = claims::check(
        &values,
        &Expect {
            issuer: &platform.issuer,
            client_id: &platform.client_id,
            nonce,
            now_secs: Utc::now().timestamp(),
            leeway_secs: cfg.clock_skew_secs as i64,
            max_age_secs: cfg.max_token_age_secs as i64,
        },
    )?;
    Ok((message, values))
}

/// The launch context the app receives for an LTI launch.
pub fn context_of(platform: &Platform, claims: &Value, message: MessageType) -> Map<String, Value> {
    let roles: Vec<String> = claims
        .get(claims::ROLES)
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let ags = claims.get(claims::AGS).cloned();
    let grade_passback = ags
        .as_ref()
        .and_then(|a| a.get("scope"))
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter()
                .any(|x| x.as_str() == Some("https://purl.imsglobal.org/spec/lti-ags/scope/score"))
        });
    let nrps = claims.get(claims::NRPS).cloned();
    let mut c = Map::new();
    c.insert("iss".into(), json!(platform.issuer));
    c.insert("client_id".into(), json!(platform.client_id));
    c.insert(
        "deployment_id".into(),
        claims
            .get(claims::DEPLOYMENT_ID)
            .cloned()
            .unwrap_or(Value::Null),
    );
    c.insert("lms".into(), json!(platform.vendor.as_str()));
    c.insert("message_type".into(), json!(message.as_str()));
    c.insert("lti_version".into(), json!("1.3.0"));
    c.insert(
        "email".into(),
        claims.get("email").cloned().unwrap_or(Value::Null),
    );
    c.insert("roles".into(), json!(super::roles::normalise(&roles)));
    c.insert("roles_original".into(), json!(roles));
    c.insert(
        "context".into(),
        claims.get(claims::CONTEXT).cloned().unwrap_or(Value::Null),
    );
    c.insert(
        "resource_link".into(),
        claims
            .get(claims::RESOURCE_LINK)
            .cloned()
            .unwrap_or(Value::Null),
    );
    c.insert(
        "custom".into(),
        claims
            .get(claims::CUSTOM)
            .cloned()
            .unwrap_or_else(|| json!({})),
    );
    c.insert(
        "launch_presentation".into(),
        claims
            .get(claims::LAUNCH_PRESENTATION)
            .cloned()
            .unwrap_or(Value::Null),
    );
    c.insert(
        "tool_platform".into(),
        claims
            .get(claims::TOOL_PLATFORM)
            .cloned()
            .unwrap_or(Value::Null),
    );
    c.insert(
        "target_link_uri".into(),
        claims
            .get(claims::TARGET_LINK_URI)
            .cloned()
            .unwrap_or(Value::Null),
    );
    c.insert("grade_passback".into(), json!(grade_passback));
    c.insert("roster".into(), json!(nrps.is_some()));
    c.insert("ags".into(), ags.unwrap_or(Value::Null));
    if message == MessageType::DeepLinking {
        c.insert(
            "deep_linking".into(),
            claims
                .get(claims::DEEP_LINKING)
                .cloned()
                .unwrap_or(Value::Null),
        );
    }
    c.insert("nrps".into(), nrps.unwrap_or(Value::Null));
    c
}

/// Record the launch, its usage event and a handoff code; redirect to the app.
pub async fn complete(
    state: &AppState,
    platform: &Platform,
    claims: &Value,
    message: MessageType,
) -> Result<Response, Page> {
    let partner = state.config.partner(&platform.partner_id).ok_or_else(|| {
        crate::http::page::internal(format!("partner {} is gone", platform.partner_id))
    })?;
    let reg = partner.lti.as_ref().ok_or_else(|| {
        crate::http::page::internal(format!("partner {} has no LTI registration", partner.id))
    })?;
    let now = Utc::now();
    let now_us = to_micros(now);
    let launch_id = crate::ids::new(crate::ids::LAUNCH);
    let sub = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
    let name = crate::smart::idtoken::display_name(claims);
    let context = context_of(platform, claims, message);
    let context_id = claims
        .pointer(&format!("/{}/id", claims::CONTEXT.replace('/', "~1")))
        .cloned();
    let launch = Launch {
        id: launch_id.clone(),
        partner_id: platform.partner_id.clone(),
        kind: LaunchKind::Lti,
        user_id: sub.clone(),
        user_name: name,
        context,
        scopes: Vec::new(),
        created_at: now,
        expires_at: now + chrono::Duration::hours(state.config.launches.launch_ttl_hours as i64),
        sandbox: state.config.is_sandbox(&platform.partner_id),
    };
    let event = UsageEvent {
        partner_id: platform.partner_id.clone(),
        id: launch_id.clone(),
        source: "partner-gateway/lti".into(),
        event_type: "lti.launch".into(),
        subject: sub,
        time: now,
        data: Some(json!({
            "launch_id": launch_id,
            "iss": platform.issuer,
            "deployment_id": claims.get(claims::DEPLOYMENT_ID),
            "context_id": context_id,
            "message_type": message.as_str(),
            "lms": platform.vendor.as_str(),
        })),
        extensions: None,
    };
    let handoff_expires = now_us + state.config.launches.handoff_ttl_secs as i64 * 1_000_000;
    // The person: the 1.3 identity, joined to the learner's 1.1 one by a verified claim.
    let people = launch.user_id.as_deref().map(|sub| {
        let claimed = migration_identity(reg, platform, claims);
        // The link both versions name: the 1.1 link id when the claim gives one (Canvas,
        // whose 1.3 ids differ), else the link's own id (Moodle keeps it).
        let link = claimed
            .as_ref()
            .and_then(|c| c.resource_link_id.clone())
            .or_else(|| {
                claims
                    .get(claims::RESOURCE_LINK)
                    .and_then(|r| r.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        let legacy = claimed.map(|l| super::people::Identity::lti11(&l.consumer_key, &l.user_id));
        People {
            own: super::people::Identity::lti13(&platform.issuer, sub),
            legacy,
            link,
        }
    });
    let code = write_launch(state, &launch, &event, people, handoff_expires)
        .await
        .map_err(|e| crate::http::page::internal(format!("recording the LTI launch: {e:#}")))?;
    tracing::info!(launch_id = %launch.id, partner_id = %launch.partner_id, "LTI launch completed");
    let mut app = crate::http::page::redirect_target(&reg.app_url)
        .map_err(|e| crate::http::page::internal(format!("app_url: {e}")))?;
    app.query_pairs_mut().append_pair("code", &code);
    Ok(crate::http::page::redirect(app.as_str()))
}

/// Who launched: the launch's own identity, the 1.1 identity a verified claim names, and
/// the link.
pub(super) struct People {
    pub own: super::people::Identity,
    pub legacy: Option<super::people::Identity>,
    pub link: Option<String>,
}

/// The learner's LTI 1.1 identity, from the launch's `lti1p1` claim verified with the
/// secret of the 1.1 consumer configured for the platform. A claim that does not verify is
/// logged and ignored: the launch goes on as a 1.3 launch of its own person.
fn migration_identity(
    reg: &super::registration::LtiRegistration,
    platform: &Platform,
    claims: &Value,
) -> Option<super::migration::Lti11Identity> {
    let consumer = platform.lti11_consumer_key.as_deref().and_then(|k| {
        reg.lti11
            .iter()
            .find(|c| c.consumer_key == k)
            .map(|c| (c.consumer_key.as_str(), c.shared_secret.expose()))
    });
    match super::migration::verify(claims, consumer) {
        Ok(found) => found,
        Err(problem) => {
            tracing::warn!(
                partner_id = %platform.partner_id,
                issuer = %platform.issuer,
                %problem,
                "LTI 1.1 migration claim ignored"
            );
            metrics::counter!("gateway_lti_migration_claims_ignored_total").increment(1);
            None
        }
    }
}

/// Record the launch (LTI 1.3 or 1.1), its person, its usage event and a handoff code in
/// one transaction; returns the code.
pub(super) async fn write_launch(
    state: &AppState,
    launch: &Launch,
    event: &UsageEvent,
    people: Option<People>,
    handoff_expires_us: i64,
) -> anyhow::Result<String> {
    let (db, mut launch, mut event) = (state.db.clone(), launch.clone(), event.clone());
    let subjects = state.subjects.clone();
    tokio::spawn(async move {
        let mut tx = db.begin().await?;
        if let Some(p) = &people {
            let now = to_micros(launch.created_at);
            let (legacy, link) = (p.legacy.as_ref(), p.link.as_deref());
            super::people::attach(&mut tx, &mut launch, &mut event, &p.own, legacy, link, now)
                .await?;
        }
        crate::launches::insert_launch(&mut tx, &launch).await?;
        crate::metering::record_usage_event(&mut tx, &subjects, event).await?;
        let code = crate::launches::create_handoff(&mut tx, &launch.id, handoff_expires_us).await?;
        tx.commit().await?;
        Ok::<String, anyhow::Error>(code)
    })
    .await?
}

/// The recovery page's script (LTI platform storage,
/// <https://www.imsglobal.org/spec/lti-pm-s/v0p1>): ask the platform's storage for the
/// binding through the frame it named and re-post the launch with it; if the platform
/// has none, show the way out. Fixed text (the policy allows it by hash); the id_token,
/// state and the rest come from the page's JSON block.
pub const GET_BINDING: &str = "(function(){var d=JSON.parse(document.getElementById('pgw-data').textContent),sent=false;\
function post(v){if(sent)return;sent=true;var f=document.createElement('form');f.method='post';f.action=d.action;\
[['id_token',d.id_token],['state',d.state],['lti_storage_binding',v]].forEach(function(p){var i=document.createElement('input');i.type='hidden';i.name=p[0];i.value=p[1];f.appendChild(i);});\
document.body.appendChild(f);f.submit();}\
function fail(){var p=document.getElementById('m');if(p)p.textContent='Your browser blocked what this activity needs inside the course page. Use the link below to open it in a new window.';var a=document.getElementById('r');if(a)a.hidden=false;}\
window.addEventListener('message',function(e){if(e.origin!==d.origin||!e.data)return;\
if(e.data.subject==='lti.get_data.response'&&e.data.message_id===d.id){if(e.data.value)post(e.data.value);else fail();}});\
var f=null;try{f=window.parent.frames[d.target]||window.parent;}catch(e){f=window.parent;}\
try{f.postMessage({subject:'lti.get_data',message_id:d.id,key:d.key},d.origin);}catch(e){fail();}\
setTimeout(function(){if(!sent)fail();},3000);})();";

/// No binding came with the launch: the LMS's frame blocked the cookie. Ask platform
/// storage for it when the platform offered storage; otherwise offer to reopen the launch
/// in a window of its own, where the cookie works.
fn recover_binding(
    state: &AppState,
    pending: &super::store::PendingLogin,
    state_hash: &str,
    state_value: &str,
    id_token: &str,
) -> Response {
    if let (Some(target), Some(origin)) = (&pending.storage_target, &pending.storage_origin) {
        let data = json!({
            "target": target,
            "origin": origin,
            "key": storage_key(state_hash),
            "id": crate::random::token(9),
            "action": super::login::launch_url(state),
            "id_token": id_token,
            "state": state_value,
        });
        // What `fail()` shows when the platform has no binding: the way out.
        let reopen = reopen_url(state, pending)
            .map(|u| {
                format!(
                    "<p><a id=\"r\" hidden href=\"{}\" target=\"_blank\" rel=\"noopener\">Open it in a new window</a></p>",
                    crate::http::page::escape(u.as_str())
                )
            })
            .unwrap_or_default();
        let inner = format!(
            "<h1>Opening the activity</h1>\n<p id=\"m\">Checking this browser…</p>\n{reopen}"
        );
        return data_script_page(
            StatusCode::OK,
            "Opening the activity",
            &inner,
            GET_BINDING,
            &data,
            Forms::Gateway,
        );
    }
    reopen_page(state, pending)
}

/// `/lti/login` with the launch's login parameters: the launch again, from the start.
fn reopen_url(state: &AppState, pending: &super::store::PendingLogin) -> Option<url::Url> {
    let params: Map<String, Value> = serde_json::from_str(&pending.login).unwrap_or_default();
    let mut url =
        url::Url::parse(&format!("{}/lti/login", state.config.http.public_base())).ok()?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in &params {
            if let Some(v) = v.as_str() {
                q.append_pair(k, v);
            }
        }
    }
    Some(url)
}

/// A page with a link that restarts the launch in a new window (top-level, cookies work).
fn reopen_page(state: &AppState, pending: &super::store::PendingLogin) -> Response {
    let Some(url) = reopen_url(state, pending) else {
        return refused("The launch could not be reopened.").into_response();
    };
    let inner = format!(
        "<h1>Open the activity in a new window</h1>\
         <p>Your browser does not let this activity keep its sign-in inside the course page.</p>\
         <p><a href=\"{link}\" target=\"_blank\" rel=\"noopener\">Open it in a new window</a>; it will continue there.</p>",
        link = crate::http::page::escape(url.as_str()),
    );
    crate::http::page::layout(StatusCode::OK, "Open the activity", &inner, Forms::None)
}

fn state_page(problem: StateProblem) -> Page {
    let why = match problem {
        StateProblem::Unknown => "The state parameter does not match any launch the tool started.",
        StateProblem::Reused => "This launch was already used; each works once.",
        StateProblem::Expired => {
            "Too much time passed between opening the activity and the LMS's answer."
        }
        StateProblem::OtherBrowser => {
            "This launch was started in another browser window or session."
        }
    };
    refused(why)
}
