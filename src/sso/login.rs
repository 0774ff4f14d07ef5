//! A sign-in's two halves, apart from the HTTP routes: `begin` (state stored, the IdP's
//! authorization URL) and `complete` (state spent, code exchanged and id_token verified,
//! then the launch, its `sso.login` event and the handoff code in one transaction).

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
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

fn state_hash(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

pub async fn begin(
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

pub fn org_name(partner: &PartnerConfig, conn: &SsoConnection) -> String {
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

pub async fn complete(state: &AppState, q: HashMap<String, String>) -> Result<Response, Page> {
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
