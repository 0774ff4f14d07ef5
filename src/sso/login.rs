//! A sign-in's two halves, apart from the HTTP routes: `begin` (state stored, the IdP's
//! sign-in URL: an OIDC authorization request or a SAML AuthnRequest) and `complete` /
//! `complete_saml` (state spent, the IdP's answer verified, then the launch, its
//! `sso.login` event and the handoff code in one transaction).

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::Found;
use super::connection::{Protocol, SsoConnection};
use super::store::{Pending, StateProblem};
use crate::http::page::{self, Page};
use crate::launches::{Launch, LaunchKind, binding};
use crate::metering::UsageEvent;
use crate::state::AppState;
use crate::time::to_micros;

fn state_hash(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

/// Start a sign-in from the browser holding the cookie value `browser`: to the app, or to
/// the console when `console` (the connection must allow it; the caller checks).
pub async fn begin(
    state: &AppState,
    found: &Found,
    browser: &str,
    console: bool,
) -> Result<String, Page> {
    match found.conn.protocol {
        Protocol::Oidc => begin_oidc(state, found, browser, console).await,
        Protocol::Saml => begin_saml(state, found, browser, console).await,
    }
}

fn unavailable(found: &Found, e: impl std::fmt::Display) -> Page {
    tracing::warn!(connection = %found.conn.id, error = %e, "SSO start failed");
    Page::new(
        StatusCode::BAD_GATEWAY,
        "Your organisation's sign-in is unavailable",
    )
    .line(format!(
        "The gateway could not reach the identity provider of {}: {e}",
        found.organisation()
    ))
    .line("Try again in a moment; if it persists, tell your administrator.")
}

/// Keep the pending sign-in under `token`'s hash, bound to the browser holding the cookie
/// secret `browser`: the answer must come back through that browser (no login CSRF).
async fn store_pending(
    state: &AppState,
    token: &str,
    pending: &Pending,
    browser: &str,
) -> Result<(), Page> {
    let now = to_micros(Utc::now());
    let expires = now + state.config.sso.state_ttl_secs as i64 * 1_000_000;
    super::store::insert_state(
        &state.db,
        &state.master_key,
        &state_hash(token),
        pending,
        &binding::hash(browser),
        now,
        expires,
    )
    .await
    .map_err(|e| page::internal(format!("storing the SSO state: {e:#}")))
}

async fn begin_oidc(
    state: &AppState,
    found: &Found,
    browser: &str,
    console: bool,
) -> Result<String, Page> {
    let conn = &found.conn;
    let redirect = super::oidc_redirect_uri(&state.config);
    let started = super::oidc::start(&state.sso.discovery, &state.outbound, conn, &redirect)
        .await
        .map_err(|e| unavailable(found, e))?;
    let pending = Pending {
        connection_id: conn.id.clone(),
        partner_id: found.partner_id.clone(),
        nonce: started.nonce,
        code_verifier: started.code_verifier,
        request_id: None,
        console,
    };
    store_pending(state, &started.state, &pending, browser).await?;
    Ok(started.url)
}

/// The SP settings for one SAML connection.
fn sp(
    state: &AppState,
    conn: &SsoConnection,
    keys: std::sync::Arc<Vec<super::saml::SpKey>>,
) -> super::saml::Sp {
    super::saml::Sp {
        entity_id: super::saml_entity_id(&state.config, conn),
        acs_url: super::saml_acs_url(&state.config, &conn.id),
        keys,
        clock_skew: std::time::Duration::from_secs(state.config.sso.saml_clock_skew_secs),
        max_age: std::time::Duration::from_secs(state.config.sso.saml_max_response_age_secs),
    }
}

async fn begin_saml(
    state: &AppState,
    found: &Found,
    browser: &str,
    console: bool,
) -> Result<String, Page> {
    let conn = &found.conn;
    let idp = state
        .sso
        .saml_metadata
        .get(&state.outbound, conn)
        .await
        .map_err(|e| unavailable(found, e))?;
    let keys = super::lookup::sp_keys(state)
        .await
        .map_err(|e| page::internal(format!("loading the SAML SP key: {e:#}")))?;
    // RelayState is at most 80 bytes (SAML bindings 3.4.3): 32 random bytes are 43.
    let relay = crate::random::token(32);
    let request_id = format!("_{}", uuid::Uuid::new_v4().simple());
    let signer = if conn.sign_authn_requests {
        super::saml::signer(&keys)
    } else {
        None
    };
    let url = super::saml::authn_request_url(
        &sp(state, conn, keys.clone()),
        &idp,
        conn.name_id_format.as_deref(),
        &request_id,
        &relay,
        signer,
    )
    .map_err(|e| unavailable(found, e))?;
    let pending = Pending {
        connection_id: conn.id.clone(),
        partner_id: found.partner_id.clone(),
        nonce: String::new(),
        code_verifier: String::new(),
        request_id: Some(request_id),
        console,
    };
    store_pending(state, &relay, &pending, browser).await?;
    Ok(url)
}

/// Spend the state `token` for the browser holding the cookie secret `browser`; a wrong
/// browser (or none) leaves it unspent for the right one.
async fn take_state(
    state: &AppState,
    token: &str,
    browser: Option<&str>,
    now_us: i64,
) -> Result<Result<Pending, StateProblem>, Page> {
    let outcome = super::store::take_state(
        &state.db,
        &state.master_key,
        &state_hash(token),
        browser.map(binding::hash).as_deref(),
        now_us,
    )
    .await
    .map_err(|e| page::internal(format!("reading the SSO state: {e:#}")))?;
    if outcome.as_ref().err() == Some(&StateProblem::OtherBrowser) {
        tracing::warn!(
            cookie = browser.is_some(),
            "SSO answer from a browser that did not start the sign-in"
        );
    }
    Ok(outcome)
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
        StateProblem::OtherBrowser => (
            "This sign-in was started in another browser",
            "A sign-in must finish in the browser that started it (with cookies on). Start again from your organisation's sign-in link.",
        ),
    };
    Page::new(StatusCode::BAD_REQUEST, title).line(line)
}

pub async fn complete(
    state: &AppState,
    q: HashMap<String, String>,
    browser: Option<&str>,
) -> Result<Response, Page> {
    let Some(st) = q.get("state").filter(|s| !s.is_empty()) else {
        return Err(
            Page::new(StatusCode::BAD_REQUEST, "The sign-in response has no state")
                .line("Start again from your organisation's sign-in link."),
        );
    };
    let now = Utc::now();
    let pending = take_state(state, st, browser, to_micros(now))
        .await?
        .map_err(state_page)?;
    let Some(found) = super::lookup::connection(state, &pending.connection_id)
        .await
        .map_err(|e| page::internal(format!("reading the SSO connection: {e:#}")))?
    else {
        return Err(gone());
    };
    crate::telemetry::metrics::note_partner(&found.partner_id);
    let conn = &*found.conn;
    if let Some(err) = q.get("error") {
        let detail = q.get("error_description").map(String::as_str).unwrap_or("");
        tracing::warn!(connection = %conn.id, error = %err, detail, "the IdP returned an error");
        return Err(Page::new(
            StatusCode::BAD_REQUEST,
            "Your organisation's sign-in did not complete",
        )
        .line(format!("{} answered: {err} {detail}", found.organisation())));
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
    let identity = oidc_identity(conn, &claims).map_err(|e| {
        Page::new(
            StatusCode::BAD_GATEWAY,
            "Your organisation's sign-in was refused",
        )
        .line(e)
    })?;
    finish(state, &found, identity, pending.console).await
}

fn gone() -> Page {
    Page::new(StatusCode::BAD_REQUEST, "This sign-in connection is gone")
        .line("The organisation's connection was removed while you were signing in.")
}

/// Write the launch and send the browser to the app with the one-time code; or, for a
/// console sign-in, open the console session instead (no launch, no usage: signing in to
/// the console is not the partner's use of the product).
async fn finish(
    state: &AppState,
    found: &Found,
    identity: Identity,
    console: bool,
) -> Result<Response, Page> {
    if console {
        return crate::console::signin::from_sso(state, found, identity).await;
    }
    let code = match write_launch(state, found, identity)
        .await
        .map_err(|e| page::internal(format!("recording the SSO login: {e:#}")))?
    {
        Some(code) => code,
        None => {
            return Err(Page::new(
                StatusCode::BAD_REQUEST,
                "This sign-in response was already used",
            )
            .line("Each SAML assertion signs in once (the assertion id was seen before). Start again from your organisation's sign-in link."));
        }
    };
    let mut app = page::redirect_target(&found.conn.app_url)
        .map_err(|e| page::internal(format!("app_url: {e}")))?;
    app.query_pairs_mut().append_pair("code", &code);
    Ok(page::redirect(app.as_str()))
}

/// `POST /sso/saml/{connection}/acs`: the IdP's response, SP-initiated (its RelayState
/// names the request the gateway sent) or unsolicited where the connection allows it.
pub async fn complete_saml(
    state: &AppState,
    connection_id: &str,
    form: HashMap<String, String>,
    browser: Option<&str>,
) -> Result<Response, Page> {
    let Some(found) = super::lookup::connection(state, connection_id)
        .await
        .map_err(|e| page::internal(format!("reading the SSO connection: {e:#}")))?
        .filter(|f| f.conn.protocol == Protocol::Saml)
    else {
        return Err(
            Page::new(StatusCode::NOT_FOUND, "Unknown sign-in connection").line(format!(
                "No SAML connection {connection_id:?} signs in through this gateway."
            )),
        );
    };
    crate::telemetry::metrics::note_partner(&found.partner_id);
    let conn = &*found.conn;
    let Some(response) = form.get("SAMLResponse").filter(|s| !s.is_empty()) else {
        return Err(Page::new(StatusCode::BAD_REQUEST, "The sign-in response is empty")
            .line("The identity provider posted no SAMLResponse. Start again from your organisation's sign-in link."));
    };
    let now = Utc::now();
    let relay = form.get("RelayState").filter(|s| !s.is_empty());
    let pending = match relay {
        Some(r) => take_state(state, r, browser, to_micros(now)).await?,
        None => Err(StateProblem::Unknown),
    };
    let mut console = false;
    let request_id = match pending {
        Ok(p) if p.connection_id == conn.id => {
            console = p.console;
            p.request_id
        }
        Ok(_) => {
            return Err(Page::new(StatusCode::BAD_REQUEST, "This sign-in response went to the wrong place")
                .line("The response's RelayState belongs to a sign-in with another organisation. Start again."));
        }
        // Not a RelayState the gateway issued: an unsolicited response (an IdP portal's
        // RelayState is its own, such as a target URL), if this connection takes those.
        Err(StateProblem::Unknown) if conn.allow_idp_initiated => None,
        Err(StateProblem::Unknown) => {
            return Err(Page::new(StatusCode::BAD_REQUEST, "This sign-in was not started here")
                .line(format!(
                    "{} does not accept sign-ins started at the identity provider. Start from your organisation's sign-in link.",
                    found.organisation()
                )));
        }
        Err(p) => return Err(state_page(p)),
    };
    let request_id = match request_id {
        Some(id) => Some(id),
        None if conn.allow_idp_initiated => None,
        None => return Err(state_page(StateProblem::Unknown)),
    };
    let idp = state
        .sso
        .saml_metadata
        .get(&state.outbound, conn)
        .await
        .map_err(|e| unavailable(&found, e))?;
    let keys = super::lookup::sp_keys(state)
        .await
        .map_err(|e| page::internal(format!("loading the SAML SP key: {e:#}")))?;
    let sp = sp(state, conn, keys);
    let response = response.clone();
    let conn_arc = found.conn.clone();
    // xmlsec is CPU work: off the async threads.
    let user = tokio::task::spawn_blocking(move || {
        super::saml::validate_response(&response, &conn_arc, &idp, &sp, request_id.as_deref())
    })
    .await
    .map_err(|e| page::internal(format!("checking the SAML response: {e}")))?
    .map_err(|r| {
        tracing::warn!(connection = %conn.id, code = r.code, reason = %r.message, "SAML response refused");
        Page::new(StatusCode::BAD_REQUEST, "Your organisation's sign-in was refused").line(r.message)
    })?;
    finish(state, &found, saml_identity(&user), console).await
}

fn claim_str(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// Who signed in, whatever the protocol.
pub struct Identity {
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<Value>,
    pub issuer: String,
    /// What the IdP said beyond the protocol's own fields (Entra `tid`, Google `hd`, SAML
    /// attributes...).
    pub claims: Map<String, Value>,
    pub scopes: Vec<String>,
    /// SAML: (issuer, assertion id, valid until) to record as used in the same transaction.
    pub assertion: Option<(String, String, i64)>,
}

fn oidc_identity(conn: &SsoConnection, claims: &Map<String, Value>) -> Result<Identity, String> {
    let map = &conn.claims;
    let subject = claim_str(claims, &map.subject)
        .ok_or_else(|| format!("the id_token has no {:?} claim", map.subject))?;
    let groups: Vec<Value> = match claims.get(&map.groups) {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::String(s)) => vec![Value::String(s.clone())],
        _ => Vec::new(),
    };
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
    Ok(Identity {
        subject,
        email: claim_str(claims, &map.email),
        name: claim_str(claims, &map.name),
        groups,
        issuer: conn.issuer.clone(),
        claims: extra,
        scopes: conn.scope_list(),
        assertion: None,
    })
}

fn saml_identity(u: &super::saml::SamlUser) -> Identity {
    let mut claims = Map::new();
    claims.insert("name_id".into(), json!(u.name_id));
    claims.insert("name_id_format".into(), json!(u.name_id_format));
    claims.insert("session_index".into(), json!(u.session_index));
    claims.insert("attributes".into(), json!(u.attributes));
    Identity {
        subject: u.subject.clone(),
        email: u.email.clone(),
        name: u.name.clone(),
        groups: u.groups.iter().map(|g| json!(g)).collect(),
        issuer: u.issuer.clone(),
        claims,
        scopes: Vec::new(),
        assertion: Some((
            u.issuer.clone(),
            u.assertion_id.clone(),
            to_micros(u.valid_until),
        )),
    }
}

/// The launch for this login, its `sso.login` usage event and the handoff code, in one
/// transaction (with the SAML assertion recorded as used). `None` when the assertion was
/// used before.
async fn write_launch(
    state: &AppState,
    found: &Found,
    identity: Identity,
) -> anyhow::Result<Option<String>> {
    let conn = &found.conn;
    let now = Utc::now();
    let launch_id = crate::ids::new(crate::ids::LAUNCH);
    let protocol = conn.protocol.as_str();
    // The IdP's subject is unique only within that IdP: the ledger qualifies it, so two
    // people with subject `1` at two of the partner's connections are two active users.
    let ledger_subject = conn.ledger_subject(&identity.subject);
    let mut context = Map::new();
    context.insert("subject".into(), json!(ledger_subject));
    context.insert("connection".into(), json!(conn.id));
    context.insert("organisation".into(), json!(found.organisation()));
    context.insert("protocol".into(), json!(protocol));
    context.insert("issuer".into(), json!(identity.issuer));
    context.insert("email".into(), json!(identity.email));
    context.insert("groups".into(), Value::Array(identity.groups));
    context.insert("claims".into(), Value::Object(identity.claims));
    let launch = Launch {
        id: launch_id.clone(),
        partner_id: found.partner_id.clone(),
        kind: LaunchKind::Sso,
        user_id: Some(identity.subject.clone()),
        user_name: identity.name,
        context,
        scopes: identity.scopes,
        created_at: now,
        expires_at: now + chrono::Duration::hours(state.config.launches.launch_ttl_hours as i64),
        sandbox: state.config.is_sandbox(&found.partner_id),
    };
    let event = UsageEvent {
        partner_id: found.partner_id.clone(),
        id: launch_id.clone(),
        source: "partner-gateway/sso".into(),
        event_type: "sso.login".into(),
        subject: Some(ledger_subject),
        time: now,
        data: Some(json!({
            "launch_id": launch_id,
            "connection": conn.id,
            "protocol": protocol,
        })),
        extensions: None,
    };
    let now_us = to_micros(now);
    let handoff_expires = now_us + state.config.launches.handoff_ttl_secs as i64 * 1_000_000;
    let (db, subjects) = (state.db.clone(), state.subjects.clone());
    let assertion = identity.assertion;
    let connection_id = conn.id.clone();
    // In a task of its own, so a browser hanging up cannot cancel it half-way.
    tokio::spawn(async move {
        let mut tx = db.begin().await?;
        if let Some((issuer, id, until)) = &assertion
            && !super::store::spend_assertion(&mut tx, issuer, id, &connection_id, now_us, *until)
                .await?
        {
            return Ok(None);
        }
        crate::launches::insert_launch(&mut tx, &launch).await?;
        crate::metering::record_usage_event(&mut tx, &subjects, event).await?;
        let code = crate::launches::create_handoff(&mut tx, &launch.id, handoff_expires).await?;
        tx.commit().await?;
        Ok::<Option<String>, anyhow::Error>(Some(code))
    })
    .await?
}
