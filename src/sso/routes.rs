//! SSO routes: `GET /sso/start` (home-realm discovery, then the redirect to the IdP) and
//! `GET /sso/oidc/callback` (state check, code exchange, id_token verification, launch and
//! handoff to the app).

use std::collections::HashMap;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::connection::SsoConnection;
use super::store::{Pending, StateProblem};
use crate::app::AppState;
use crate::config::PartnerConfig;
use crate::http::page::{self, Page};
use crate::launches::{Launch, LaunchKind};
use crate::metering::UsageEvent;
use crate::time::to_micros;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sso/start", get(start))
        .route("/sso/oidc/callback", get(callback))
        .route("/v1/sso/connections", get(list_connections))
}

/// Every connection with what its IdP administrator registers (the redirect URI) and the
/// sign-in link to give people. Admin keys only: it names every customer's IdP.
async fn list_connections(
    State(state): State<AppState>,
    caller: crate::http::auth::Caller,
) -> Result<axum::Json<Value>, crate::http::ApiError> {
    caller.require(&[crate::apikeys::Role::Admin])?;
    let base = state.config.http.public_base();
    let redirect = super::oidc_redirect_uri(&state.config);
    let list: Vec<Value> = state
        .config
        .partners
        .iter()
        .flat_map(|p| p.sso_connections.iter().map(move |c| (p, c)))
        .map(|(p, c)| {
            json!({
                "id": c.id,
                "partner": p.id,
                "organisation": org_name(p, c),
                "protocol": "oidc",
                "issuer": c.issuer,
                "client_id": c.client_id,
                "domains": c.domains,
                "redirect_uri": redirect,
                "start_url": format!("{base}/sso/start?organisation={}", c.id),
                "app_url": c.app_url,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "connections": list })))
}

fn query(raw: Option<String>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn state_hash(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

/// The small page asking for an email address when the link named no organisation.
fn ask_email(note: Option<&str>) -> Response {
    let note = note
        .map(|n| format!("<p>{}</p>", page::escape(n)))
        .unwrap_or_default();
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign in with your organisation</title><style>body{{font-family:system-ui,sans-serif;\
         max-width:30rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#222}}\
         input{{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box}}\
         button{{font-size:1rem;margin-top:.8rem;padding:.4rem 1rem}}</style></head><body>\
         <h1>Sign in with your organisation</h1>{note}\
         <form method=\"get\" action=\"start\"><label for=\"email\">Your work or school email</label>\
         <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" required autofocus>\
         <button type=\"submit\">Continue</button></form></body></html>\n"
    );
    page::html(
        StatusCode::OK,
        body,
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    )
}

async fn start(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw);
    let found = if let Some(org) = q.get("organisation").filter(|s| !s.is_empty()) {
        match pick_organisation(&state, org) {
            Ok(found) => found,
            Err(p) => return p.into_response(),
        }
    } else if let Some(email) = q.get("email").filter(|s| !s.trim().is_empty()) {
        match super::connection_for_email(&state.config, email) {
            Some(found) => found,
            None => {
                let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or(email);
                return ask_email(Some(&format!(
                    "No organisation signs in with {domain} addresses here. Check the address, or ask your administrator for your organisation's sign-in link."
                )));
            }
        }
    } else {
        return ask_email(None);
    };
    let (partner, conn) = found;
    match begin(&state, partner, conn).await {
        Ok(url) => page::redirect(&url),
        Err(p) => p.into_response(),
    }
}

/// `?organisation=` names a connection, or a partner with exactly one connection.
fn pick_organisation<'a>(
    state: &'a AppState,
    org: &str,
) -> Result<(&'a PartnerConfig, &'a SsoConnection), Page> {
    if let Some(found) = super::connection(&state.config, org) {
        return Ok(found);
    }
    if let Some(p) = state.config.partner(org) {
        match p.sso_connections.as_slice() {
            [only] => return Ok((p, only)),
            [] => {}
            _ => {
                return Err(
                    Page::new(StatusCode::BAD_REQUEST, "Choose a sign-in connection").line(
                        format!(
                            "{} has several sign-in connections ({}); the link must name one.",
                            p.name,
                            p.sso_connections
                                .iter()
                                .map(|c| c.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                );
            }
        }
    }
    Err(
        Page::new(StatusCode::NOT_FOUND, "Unknown organisation").line(format!(
            "No organisation {org:?} signs in through this gateway."
        )),
    )
}

async fn begin(
    state: &AppState,
    partner: &PartnerConfig,
    conn: &SsoConnection,
) -> Result<String, Page> {
    let redirect = super::oidc_redirect_uri(&state.config);
    let started = super::oidc::start(&state.sso.discovery, &state.outbound, conn, &redirect)
        .await
        .map_err(|e| {
            tracing::warn!(connection = %conn.id, error = %e, "SSO start failed");
            Page::new(
                StatusCode::BAD_GATEWAY,
                "Your organisation's sign-in is unavailable",
            )
            .line(format!(
                "The gateway could not reach the identity provider of {}: {e}",
                org_name(partner, conn)
            ))
            .line("Try again in a moment; if it persists, tell your administrator.")
        })?;
    let now = to_micros(Utc::now());
    let expires = now + state.config.sso.state_ttl_secs as i64 * 1_000_000;
    let pending = Pending {
        connection_id: conn.id.clone(),
        partner_id: partner.id.clone(),
        nonce: started.nonce,
        code_verifier: started.code_verifier,
    };
    super::store::insert_state(
        &state.db,
        &state.master_key,
        &state_hash(&started.state),
        &pending,
        now,
        expires,
    )
    .await
    .map_err(|e| page::internal(format!("storing the SSO state: {e:#}")))?;
    Ok(started.url)
}

fn org_name(partner: &PartnerConfig, conn: &SsoConnection) -> String {
    conn.organisation
        .clone()
        .unwrap_or_else(|| partner.name.clone())
}

fn state_page(p: StateProblem) -> Page {
    let (title, line) = match p {
        StateProblem::Unknown => (
            "This sign-in link is not one the gateway started",
            "The sign-in response names a request the gateway does not know. Start again from your organisation's sign-in link.",
        ),
        StateProblem::Reused => (
            "This sign-in was already used",
            "Each sign-in response works once. Start again from your organisation's sign-in link.",
        ),
        StateProblem::Expired => (
            "This sign-in took too long",
            "The sign-in request expired before your identity provider answered. Start again.",
        ),
    };
    Page::new(StatusCode::BAD_REQUEST, title).line(line)
}

async fn callback(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    match complete(&state, query(raw)).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

async fn complete(state: &AppState, q: HashMap<String, String>) -> Result<Response, Page> {
    let Some(st) = q.get("state").filter(|s| !s.is_empty()) else {
        return Err(
            Page::new(StatusCode::BAD_REQUEST, "The sign-in response has no state")
                .line("Start again from your organisation's sign-in link."),
        );
    };
    let now = Utc::now();
    let pending = super::store::take_state(
        &state.db,
        &state.master_key,
        &state_hash(st),
        to_micros(now),
    )
    .await
    .map_err(|e| page::internal(format!("reading the SSO state: {e:#}")))?
    .map_err(state_page)?;
    let Some((partner, conn)) = super::connection(&state.config, &pending.connection_id) else {
        return Err(
            Page::new(StatusCode::BAD_REQUEST, "This sign-in connection is gone")
                .line("The organisation's connection was removed while you were signing in."),
        );
    };
    if let Some(err) = q.get("error") {
        let detail = q.get("error_description").map(String::as_str).unwrap_or("");
        tracing::warn!(connection = %conn.id, error = %err, detail, "the IdP returned an error");
        return Err(Page::new(
            StatusCode::BAD_REQUEST,
            "Your organisation's sign-in did not complete",
        )
        .line(format!(
            "{} answered: {err} {detail}",
            org_name(partner, conn)
        )));
    }
    let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
        return Err(
            Page::new(StatusCode::BAD_REQUEST, "The sign-in response has no code")
                .line("Start again from your organisation's sign-in link."),
        );
    };
    let redirect = super::oidc_redirect_uri(&state.config);
    let assertion_key = match conn.client_auth {
        super::connection::ClientAuth::PrivateKeyJwt => {
            let alg = crate::keys::Alg::parse(&conn.client_assertion_alg).ok_or_else(|| {
                page::internal(format!(
                    "client_assertion_alg {:?}",
                    conn.client_assertion_alg
                ))
            })?;
            Some(
                crate::keys::signing_key(&state.db, &state.master_key, alg)
                    .await
                    .map_err(|e| page::internal(format!("loading the signing key: {e:#}")))?,
            )
        }
        _ => None,
    };
    let claims = super::oidc::finish(
        &state.sso.discovery,
        &state.outbound,
        conn,
        &redirect,
        code,
        &pending.nonce,
        &pending.code_verifier,
        assertion_key.as_ref(),
    )
    .await
    .map_err(|e| {
        tracing::warn!(connection = %conn.id, error = %e, "SSO callback refused");
        Page::new(
            StatusCode::BAD_GATEWAY,
            "Your organisation's sign-in was refused",
        )
        .line(e.to_string())
    })?;
    let code = write_launch(state, partner, conn, &claims)
        .await
        .map_err(|e| page::internal(format!("recording the SSO login: {e:#}")))?;
    let mut app =
        url::Url::parse(&conn.app_url).map_err(|e| page::internal(format!("app_url: {e}")))?;
    app.query_pairs_mut().append_pair("code", &code);
    Ok(page::redirect(app.as_str()))
}

fn claim_str(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// The launch for this login, its `sso.login` usage event and the handoff code, in one
/// transaction.
async fn write_launch(
    state: &AppState,
    partner: &PartnerConfig,
    conn: &SsoConnection,
    claims: &Map<String, Value>,
) -> anyhow::Result<String> {
    let map = &conn.claims;
    let subject = claim_str(claims, &map.subject)
        .ok_or_else(|| anyhow::anyhow!("the id_token has no {:?} claim", map.subject))?;
    let email = claim_str(claims, &map.email);
    let name = claim_str(claims, &map.name);
    let groups: Vec<Value> = match claims.get(&map.groups) {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::String(s)) => vec![Value::String(s.clone())],
        _ => Vec::new(),
    };
    let now = Utc::now();
    let launch_id = uuid::Uuid::now_v7().to_string();
    // What the IdP said beyond the protocol's own claims (e.g. Entra `tid`, Google `hd`).
    let protocol = [
        "iss",
        "aud",
        "exp",
        "iat",
        "nbf",
        "nonce",
        "at_hash",
        "c_hash",
        "azp",
        "auth_time",
        "sid",
        "jti",
    ];
    let extra: Map<String, Value> = claims
        .iter()
        .filter(|(k, _)| !protocol.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut context = Map::new();
    context.insert("connection".into(), json!(conn.id));
    context.insert("organisation".into(), json!(org_name(partner, conn)));
    context.insert("protocol".into(), json!("oidc"));
    context.insert("issuer".into(), json!(conn.issuer));
    context.insert("email".into(), json!(email));
    context.insert("groups".into(), Value::Array(groups));
    context.insert("claims".into(), Value::Object(extra));
    let launch = Launch {
        id: launch_id.clone(),
        partner_id: partner.id.clone(),
        kind: LaunchKind::Sso,
        user_id: Some(subject.clone()),
        user_name: name,
        context,
        scopes: conn.scope_list(),
        created_at: now,
        expires_at: now + chrono::Duration::hours(state.config.launches.launch_ttl_hours as i64),
    };
    let event = UsageEvent {
        partner_id: partner.id.clone(),
        id: launch_id.clone(),
        source: "partner-gateway/sso".into(),
        event_type: "sso.login".into(),
        subject: Some(subject),
        time: now,
        data: Some(json!({
            "launch_id": launch_id,
            "connection": conn.id,
            "protocol": "oidc",
        })),
        extensions: None,
    };
    let handoff_expires =
        to_micros(now) + state.config.launches.handoff_ttl_secs as i64 * 1_000_000;
    let db = state.db.clone();
    // In a task of its own, so a browser hanging up cannot cancel it half-way.
    tokio::spawn(async move {
        let mut tx = db.begin().await?;
        crate::launches::insert_launch(&mut tx, &launch).await?;
        crate::metering::record_usage_event(&mut tx, &event).await?;
        let code = crate::launches::create_handoff(&mut tx, &launch.id, handoff_expires).await?;
        tx.commit().await?;
        Ok::<String, anyhow::Error>(code)
    })
    .await?
}
