//! LTI Dynamic Registration 1.0 (<https://www.imsglobal.org/spec/lti-dr/v1p0>), behind
//! registration links.
//!
//! An admin creates a link for a partner (`POST /v1/lti/registration-links` or
//! `partner-gateway lti registration-link`): `{public_url}/lti/register?link=<secret>`,
//! single use, expiring, only the secret's SHA-256 stored. The LMS's administrator pastes it
//! as the tool's registration URL; the LMS opens it with `openid_configuration` and
//! `registration_token` added (§3.3). Without a usable link nothing is fetched. With one, the
//! tool reads the platform's configuration (§3.4) through an outbound client that reaches
//! non-public addresses only in the link's partner's `private_networks`, checks that it
//! comes from the issuer's own origin (§3.5.1), registers itself (§3.5.2), and in one
//! transaction spends the link and stores the platform for that partner, pending an
//! admin's approval unless `lti.auto_approve_registrations`. The person in the browser sees
//! a generic page when anything fails; the reason goes to the log and to the link's record
//! (`GET /v1/lti/registration-links`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use url::Url;

use super::store::{self, LinkRow, NewRegistration};
use crate::http::page::{Page, script_page};
use crate::outbound::Outbound;
use crate::state::AppState;

const PLATFORM_CONFIGURATION: &str = "https://purl.imsglobal.org/spec/lti-platform-configuration";
const TOOL_CONFIGURATION: &str = "https://purl.imsglobal.org/spec/lti-tool-configuration";

/// A link lives this long unless its creator says otherwise.
pub const LINK_TTL_DEFAULT_SECS: u64 = 7 * 86_400;
pub const LINK_TTL_MIN_SECS: u64 = 300;
pub const LINK_TTL_MAX_SECS: u64 = 30 * 86_400;
/// Failed registrations (once the LMS was contacted) a link survives: an LMS admin fixing
/// a setting retries a few times; a leaked link cannot be used to probe for long.
pub const LINK_MAX_ATTEMPTS: i64 = 20;
const NOTE_MAX_CHARS: usize = 500;
/// The most of a platform's configuration or registration answer the tool reads.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// A link as the API shows it (never its secret, which only the creator saw).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LinkView {
    pub id: String,
    pub partner: String,
    pub note: Option<String>,
    /// active, used, expired, revoked, or exhausted (too many failed registrations).
    pub status: String,
    /// The API key id that created it, or `cli`.
    pub created_by: String,
    pub created_at: String,
    pub expires_at: String,
    pub used_at: Option<String>,
    /// The registration it made (`GET /v1/lti/registrations`).
    pub registration_id: Option<String>,
    pub revoked_at: Option<String>,
    /// Registrations tried with it that failed once the LMS was contacted.
    pub attempts: i64,
    /// Why the last try failed (what the person in the LMS was not shown).
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// The LTI 1.1 consumer the registered platform replaces: its launches' migration
    /// claims are verified with that consumer's secret.
    pub lti11_consumer_key: Option<String>,
}

/// What a link's state is at `now_us`.
pub fn link_status(row: &LinkRow, now_us: i64) -> &'static str {
    if row.used_at_us.is_some() {
        "used"
    } else if row.revoked_at_us.is_some() {
        "revoked"
    } else if row.expires_at_us <= now_us {
        "expired"
    } else if row.attempts >= LINK_MAX_ATTEMPTS {
        "exhausted"
    } else {
        "active"
    }
}

pub const LINK_STATUSES: [&str; 5] = ["active", "used", "expired", "revoked", "exhausted"];

fn rfc3339(us: i64) -> String {
    crate::time::rfc3339(crate::time::from_micros(us))
}

pub fn link_view(row: &LinkRow, now_us: i64) -> LinkView {
    LinkView {
        id: row.id.clone(),
        partner: row.partner_id.clone(),
        note: row.note.clone(),
        status: link_status(row, now_us).to_owned(),
        created_by: row.created_by.clone(),
        created_at: rfc3339(row.created_at_us),
        expires_at: rfc3339(row.expires_at_us),
        used_at: row.used_at_us.map(rfc3339),
        registration_id: row.registration_id.clone(),
        revoked_at: row.revoked_at_us.map(rfc3339),
        attempts: row.attempts,
        last_error: row.last_error.clone(),
        last_error_at: row.last_error_at_us.map(rfc3339),
        lti11_consumer_key: row.lti11_consumer_key.clone(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("unknown partner {0:?}: it is not declared in the config")]
    UnknownPartner(String),
    #[error(
        "partner {0:?} has no LTI registration ([partners.lti]); a dynamic registration needs its app_url"
    )]
    NotLti(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Check a new link's lifetime: default when absent, else within the bounds.
pub fn link_ttl(expires_in_secs: Option<u64>) -> Result<u64, String> {
    let secs = expires_in_secs.unwrap_or(LINK_TTL_DEFAULT_SECS);
    if !(LINK_TTL_MIN_SECS..=LINK_TTL_MAX_SECS).contains(&secs) {
        return Err(format!(
            "a registration link lives {LINK_TTL_MIN_SECS} s (5 minutes) to {LINK_TTL_MAX_SECS} s (30 days), not {secs} s"
        ));
    }
    Ok(secs)
}

/// Create a link for `partner_id`: its record and the URL to give the LMS (the only place
/// the secret appears).
pub async fn create_link(
    state: &AppState,
    partner_id: &str,
    expires_in_secs: Option<u64>,
    note: Option<String>,
    lti11_consumer_key: Option<String>,
    created_by: &str,
    now_us: i64,
) -> Result<(LinkView, String), LinkError> {
    let partner = state
        .config
        .partner(partner_id)
        .ok_or_else(|| LinkError::UnknownPartner(partner_id.to_owned()))?;
    let Some(lti) = &partner.lti else {
        return Err(LinkError::NotLti(partner_id.to_owned()));
    };
    if let Some(k) = &lti11_consumer_key
        && !lti.lti11.iter().any(|c| &c.consumer_key == k)
    {
        return Err(LinkError::Invalid(format!(
            "lti11_consumer_key {k:?} is not one of partner {partner_id}'s LTI 1.1 consumers \
             ([[partners.lti.lti11]]), whose secret verifies the migration claim"
        )));
    }
    let ttl = link_ttl(expires_in_secs).map_err(LinkError::Invalid)?;
    let note = note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if note
        .as_ref()
        .is_some_and(|n| n.chars().count() > NOTE_MAX_CHARS || n.chars().any(char::is_control))
    {
        return Err(LinkError::Invalid(format!(
            "the note must be at most {NOTE_MAX_CHARS} characters on one line"
        )));
    }
    let (token, token_hash) = crate::launches::new_code();
    let row = LinkRow {
        id: crate::ids::new(crate::ids::REGISTRATION_LINK),
        partner_id: partner.id.clone(),
        note,
        created_by: created_by.to_owned(),
        created_at_us: now_us,
        expires_at_us: now_us.saturating_add(i64::try_from(ttl).unwrap_or(0) * 1_000_000),
        used_at_us: None,
        registration_id: None,
        revoked_at_us: None,
        attempts: 0,
        last_error: None,
        last_error_at_us: None,
        lti11_consumer_key,
    };
    store::insert_link(&state.db, &row, &token_hash).await?;
    tracing::info!(link_id = %row.id, partner_id = %row.partner_id, created_by, "LTI registration link created");
    let url = format!(
        "{}/lti/register?link={token}",
        state.config.http.public_base()
    );
    Ok((link_view(&row, now_us), url))
}

/// The tool configuration's `domain`: the authority of the public URL as written, so
/// host:port when the port is given (Moodle compares it with what it reads off
/// `target_link_uri`, everything between the scheme and the first `/`, and refuses the
/// registration with `domain_targetlinkuri_mismatch` when they differ).
pub fn tool_domain(base: &str) -> String {
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Userinfo never belongs in a domain.
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    authority.to_ascii_lowercase()
}

/// The registration the tool sends (Dynamic Registration §3.3 / OIDC client metadata).
pub fn tool_registration(state: &AppState) -> Value {
    let base = state.config.http.public_base();
    let domain = tool_domain(&base);
    let scope = [
        super::token::SCOPE_LINEITEM,
        super::token::SCOPE_LINEITEM_READ,
        super::token::SCOPE_RESULT_READ,
        super::token::SCOPE_SCORE,
        super::token::SCOPE_NRPS,
    ]
    .join(" ");
    json!({
        "application_type": "web",
        "response_types": ["id_token"],
        "grant_types": ["implicit", "client_credentials"],
        "initiate_login_uri": format!("{base}/lti/login"),
        "redirect_uris": [format!("{base}/lti/launch")],
        "client_name": "Partner Gateway",
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint_auth_method": "private_key_jwt",
        "scope": scope,
        TOOL_CONFIGURATION: {
            "domain": domain,
            "target_link_uri": format!("{base}/lti/launch"),
            "claims": ["iss", "sub", "name", "given_name", "family_name", "email"],
            "messages": [
                {"type": "LtiResourceLinkRequest", "target_link_uri": format!("{base}/lti/launch")},
                {"type": "LtiDeepLinkingRequest", "target_link_uri": format!("{base}/lti/launch"), "label": "Partner Gateway"}
            ]
        }
    })
}

/// The registration initiation's parameters (§3.3). A name given twice is refused: the
/// tool URL carries only `link`, and the LMS adds the other two.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InitiationParams {
    pub link: Option<String>,
    pub openid_configuration: Option<String>,
    pub registration_token: Option<String>,
}

pub fn initiation_params(query: &str) -> Result<InitiationParams, String> {
    let mut p = InitiationParams::default();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match k.as_ref() {
            "link" => &mut p.link,
            "openid_configuration" => &mut p.openid_configuration,
            "registration_token" => &mut p.registration_token,
            _ => continue,
        };
        if slot.is_some() {
            return Err(format!("the parameter {k} is given more than once"));
        }
        *slot = Some(v.into_owned()).filter(|v| !v.is_empty());
    }
    Ok(p)
}

/// DR 1.0 §3.5.1: the configuration must come from the issuer's own URL. The origins
/// (scheme, host, port) must be equal, the configuration's path must be under the issuer's,
/// and neither may carry user info (`https://lms.example.edu@evil.test/` is evil.test).
pub fn check_issuer_origin(config_url: &Url, issuer: &str) -> Result<(), String> {
    let iss = crate::outbound::parse_http_url(issuer)
        .map_err(|e| format!("the configuration's issuer is not usable: {e}"))?;
    if iss.query().is_some() {
        return Err(format!("the issuer {issuer:?} has a query string"));
    }
    if !config_url.username().is_empty() || config_url.password().is_some() {
        return Err("the configuration URL carries user info".into());
    }
    if config_url.origin() != iss.origin() {
        return Err(format!(
            "the configuration was read from {} but names the issuer {issuer}: the origins (scheme, host, port) differ",
            config_url.origin().ascii_serialization()
        ));
    }
    let base = iss.path().trim_end_matches('/');
    let path = config_url.path();
    if !base.is_empty() && path != base && !path.starts_with(&format!("{base}/")) {
        return Err(format!(
            "the configuration URL's path {path} is not under the issuer's path {base}"
        ));
    }
    Ok(())
}

/// The browser's page for a link that cannot be used: nothing more is said, nothing fetched.
fn link_unusable() -> Response {
    Page::new(StatusCode::FORBIDDEN, "This registration link is not valid")
        .line("It is unknown, expired, revoked or already used. Ask the tool's administrator for a new registration link.")
        .into_response()
}

/// The browser's page for any failure once the link was accepted: the same whatever went
/// wrong (an unreachable host, an HTTP error, a configuration that does not check out), so
/// the page tells nothing about the network it was tried on.
fn registration_failed(link_id: &str) -> Response {
    Page::new(StatusCode::BAD_GATEWAY, "The tool could not be registered")
        .line("The registration with your LMS did not complete.")
        .line(format!(
            "The tool's administrator can see why under registration link {link_id}; the link stays usable for another try."
        ))
        .into_response()
}

/// `GET /lti/register` (§3.3): the registration initiation, opened by the LMS.
pub async fn register(state: &AppState, query: &str) -> Response {
    let now = crate::time::now_micros();
    let params = match initiation_params(query) {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(error = %e, "LTI registration refused: malformed initiation");
            return Page::new(StatusCode::BAD_REQUEST, "The tool could not be registered")
                .line("The registration request is malformed. Start the registration again from the LMS.")
                .into_response();
        }
    };
    let Some(token) = params.link.as_deref() else {
        tracing::info!("LTI registration refused: no registration link");
        return link_unusable();
    };
    let link = match store::link_by_hash(&state.db, &crate::launches::hash_code(token)).await {
        Ok(Some(link)) => link,
        Ok(None) => {
            tracing::info!("LTI registration refused: unknown registration link");
            return link_unusable();
        }
        Err(e) => {
            return crate::http::page::internal(format!("reading the registration link: {e:#}"))
                .into_response();
        }
    };
    let status = link_status(&link, now);
    if status != "active" {
        tracing::info!(link_id = %link.id, status, "LTI registration refused: the link is not usable");
        note_failure(
            state,
            &link,
            &format!("refused a registration: the link is {status}"),
            false,
            now,
        )
        .await;
        return link_unusable();
    }
    let Some(config_url) = params.openid_configuration.as_deref() else {
        note_failure(state, &link, "the LMS opened the link without openid_configuration (open it from the LMS's dynamic registration, not directly)", false, now).await;
        return Page::new(StatusCode::BAD_REQUEST, "The tool could not be registered")
            .line("The LMS did not send its configuration (openid_configuration). Paste this link into your LMS's dynamic registration (Moodle: Tool URL; Canvas: Dynamic Registration URL) instead of opening it directly.")
            .into_response();
    };
    match complete(
        state,
        &link,
        config_url,
        params.registration_token.as_deref(),
        now,
    )
    .await
    {
        Ok(Done::Registered { approved }) => {
            let line = if approved {
                "The tool is registered and ready to use."
            } else {
                "The tool is registered; an administrator of the tool will approve it shortly."
            };
            script_page(
                StatusCode::OK,
                "Registration complete",
                &[line.to_owned()],
                "(window.opener || window.parent).postMessage({subject: 'org.imsglobal.lti.close'}, '*');",
                None,
            )
        }
        Ok(Done::LinkSpent) => {
            tracing::info!(link_id = %link.id, "LTI registration refused: the link was spent meanwhile");
            link_unusable()
        }
        Err(Failure { detail, counted }) => {
            tracing::warn!(link_id = %link.id, partner_id = %link.partner_id, error = %detail, "LTI dynamic registration failed");
            note_failure(state, &link, &detail, counted, now).await;
            registration_failed(&link.id)
        }
    }
}

async fn note_failure(state: &AppState, link: &LinkRow, detail: &str, counted: bool, now: i64) {
    let detail: String = detail.chars().take(2000).collect();
    if let Err(e) = store::record_link_failure(&state.db, &link.id, &detail, counted, now).await {
        tracing::error!(link_id = %link.id, error = %format!("{e:#}"), "recording a registration link's failure");
    }
}

enum Done {
    Registered { approved: bool },
    LinkSpent,
}

/// Why a registration failed, for the log and the link's record; `counted` once the LMS
/// was contacted.
struct Failure {
    detail: String,
    counted: bool,
}

fn failed(detail: impl Into<String>) -> Failure {
    Failure {
        detail: detail.into(),
        counted: true,
    }
}

/// What the platform's configuration and registration answer say.
struct Registered {
    issuer: String,
    auth_url: String,
    token_url: String,
    jwks_url: String,
    vendor: &'static str,
    client_id: String,
    deployment_id: String,
    platform: Value,
    answer: Value,
}

async fn complete(
    state: &AppState,
    link: &LinkRow,
    config_url: &str,
    registration_token: Option<&str>,
    now: i64,
) -> Result<Done, Failure> {
    let not_counted = |detail: String| Failure {
        detail,
        counted: false,
    };
    let partner = state
        .config
        .partner(&link.partner_id)
        .filter(|p| p.lti.is_some())
        .ok_or_else(|| {
            not_counted(format!(
                "partner {:?} is no longer an LMS partner with [partners.lti] in the config",
                link.partner_id
            ))
        })?;
    let outbound = state
        .outbound
        .for_partner(partner)
        .map_err(|e| not_counted(format!("building the outbound client: {e:#}")))?;
    let reg = fetch_and_register(
        &outbound,
        &tool_registration(state),
        config_url,
        registration_token,
    )
    .await?;

    let status = if state.config.lti.auto_approve_registrations {
        "approved"
    } else {
        "pending"
    };
    // The fetches took a while: the link's expiry is judged when it is spent.
    let now = crate::time::now_micros().max(now);
    let id = crate::ids::new(crate::ids::REGISTRATION);
    let registration = json!({"platform": reg.platform, "answer": reg.answer}).to_string();
    let row = NewRegistration {
        id: &id,
        partner_id: &partner.id,
        issuer: &reg.issuer,
        client_id: &reg.client_id,
        deployment_id: &reg.deployment_id,
        auth_url: &reg.auth_url,
        token_url: &reg.token_url,
        jwks_url: &reg.jwks_url,
        vendor: reg.vendor,
        status,
        registration: &registration,
        link_id: &link.id,
        created_at_us: now,
        lti11_consumer_key: link.lti11_consumer_key.as_deref(),
    };
    let pending = json!({
        "registration_id": id, "partner": partner.id, "issuer": reg.issuer,
        "client_id": reg.client_id, "deployment_id": reg.deployment_id, "platform": reg.vendor,
    });
    // The link spent, the registration and its `lti.registration.pending` message: one
    // transaction, so a link makes one registration at most.
    let stored: Result<bool, sqlx::Error> = async {
        let mut tx = state.db.begin().await?;
        if !store::spend_link(&mut tx, &link.id, &id, now, LINK_MAX_ATTEMPTS).await? {
            return Ok(false);
        }
        store::insert_registration(&mut tx, &row).await?;
        if status == "pending" {
            let event = crate::webhooks::events::LTI_REGISTRATION_PENDING;
            let at = crate::time::from_micros(now);
            crate::webhooks::emit(&mut tx, Some(&partner.id), event, &pending, at).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
    .await;
    match stored {
        Ok(true) => {}
        Ok(false) => return Ok(Done::LinkSpent),
        Err(e) if crate::db::is_unique_violation(&e) => {
            return Err(failed(format!(
                "{} client {} deployment {} is already registered",
                reg.issuer, reg.client_id, reg.deployment_id
            )));
        }
        Err(e) => return Err(not_counted(format!("storing the registration: {e}"))),
    }
    tracing::info!(registration_id = %id, link_id = %link.id, partner_id = %partner.id, issuer = %reg.issuer, client_id = %reg.client_id, status, "LTI dynamic registration stored");
    Ok(Done::Registered {
        approved: status == "approved",
    })
}

/// Read the platform's configuration (§3.4), check it, and register the tool (§3.5).
async fn fetch_and_register(
    outbound: &Outbound,
    tool: &Value,
    config_url: &str,
    registration_token: Option<&str>,
) -> Result<Registered, Failure> {
    let parsed = crate::outbound::parse_http_url(config_url)
        .map_err(|e| failed(format!("openid_configuration: {e}")))?;
    let fetch_url = outbound
        .url(parsed.as_str())
        .map_err(|e| failed(format!("openid_configuration refused: {e}")))?;
    let shown = crate::outbound::redact(&fetch_url);
    let resp = outbound
        .client()
        .get(fetch_url.clone())
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| {
            failed(format!(
                "reading the LMS configuration at {shown}: {}",
                crate::smart::discovery::error_chain(&e.without_url())
            ))
        })?;
    let status = resp.status().as_u16();
    let body = read_limited(resp)
        .await
        .map_err(|e| failed(format!("reading the LMS configuration at {shown}: {e}")))?;
    if !(200..300).contains(&status) {
        return Err(failed(format!(
            "the LMS configuration at {shown} answered HTTP {status}"
        )));
    }
    let cfg: Value = serde_json::from_slice(&body)
        .map_err(|e| failed(format!("the LMS configuration at {shown} is not JSON: {e}")))?;
    let s = |k: &str| cfg.get(k).and_then(Value::as_str).map(str::to_owned);
    let issuer = s("issuer").ok_or_else(|| failed("the LMS configuration has no issuer"))?;
    check_issuer_origin(&parsed, &issuer).map_err(failed)?;
    let need = |k: &str| s(k).ok_or_else(|| failed(format!("the LMS configuration has no {k}")));
    let (auth_url, token_url, jwks_url, registration_endpoint) = (
        need("authorization_endpoint")?,
        need("token_endpoint")?,
        need("jwks_uri")?,
        need("registration_endpoint")?,
    );
    for (name, u) in [
        ("authorization_endpoint", &auth_url),
        ("token_endpoint", &token_url),
        ("jwks_uri", &jwks_url),
        ("registration_endpoint", &registration_endpoint),
    ] {
        crate::outbound::parse_http_url(u).map_err(|e| failed(format!("{name}: {e}")))?;
    }
    let family = cfg
        .pointer(&format!(
            "/{}/product_family_code",
            PLATFORM_CONFIGURATION.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    let vendor = match family.as_str() {
        "canvas" => "canvas",
        "moodle" => "moodle",
        f if f.contains("blackboard") => "blackboard",
        f if f.contains("desire2learn") || f.contains("d2l") || f.contains("brightspace") => "d2l",
        _ => "generic",
    };
    let reg_url = outbound
        .url(&registration_endpoint)
        .map_err(|e| failed(format!("registration_endpoint refused: {e}")))?;
    let reg_shown = crate::outbound::redact(&reg_url);
    let mut req = outbound
        .client()
        .post(reg_url)
        .header("content-type", "application/json")
        .header("accept", "application/json");
    if let Some(t) = registration_token {
        req = req.bearer_auth(t);
    }
    let resp = req.body(tool.to_string()).send().await.map_err(|e| {
        failed(format!(
            "posting the registration to {reg_shown}: {}",
            crate::smart::discovery::error_chain(&e.without_url())
        ))
    })?;
    let status = resp.status().as_u16();
    let phrase = crate::outbound::refusal::reason_phrase(&resp);
    let body = read_limited(resp)
        .await
        .map_err(|e| failed(format!("reading the answer of {reg_shown}: {e}")))?;
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        // The LMS's own words, readable even when it answers with an HTML page (Moodle).
        let why = crate::outbound::refusal::describe(phrase.as_deref(), &body);
        let why = if why.is_empty() {
            "no reason given".to_owned()
        } else {
            why
        };
        return Err(failed(format!(
            "the LMS refused the registration at {reg_shown} (HTTP {status}): {why}"
        )));
    }
    let client_id = answer
        .get("client_id")
        .and_then(Value::as_str)
        .ok_or_else(|| failed(format!("the LMS's answer at {reg_shown} has no client_id")))?
        .to_owned();
    // A platform that returns no deployment id lets any deployment of this client in.
    let deployment_id = answer
        .pointer(&format!(
            "/{}/deployment_id",
            TOOL_CONFIGURATION.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .unwrap_or("*")
        .to_owned();
    Ok(Registered {
        issuer,
        auth_url,
        token_url,
        jwks_url,
        vendor,
        client_id,
        deployment_id,
        platform: cfg,
        answer,
    })
}

/// The body, up to [`MAX_DOCUMENT_BYTES`].
async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| crate::smart::discovery::error_chain(&e.without_url()))?
    {
        if out.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!(
                "the body is larger than {MAX_DOCUMENT_BYTES} bytes"
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A dynamic registration as `GET /v1/lti/registrations` shows it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RegistrationView {
    pub id: String,
    pub partner: String,
    pub issuer: String,
    pub client_id: String,
    pub deployment_id: String,
    /// The LMS product as the platform named itself (canvas, moodle, ...).
    pub lms: String,
    /// pending, approved or rejected.
    pub status: String,
    /// The registration link it came through.
    pub link_id: Option<String>,
    pub created_at: String,
    pub decided_at: Option<String>,
}

/// Registrations for admins: `status` filter.
pub async fn list(state: &AppState, status: Option<&str>) -> anyhow::Result<Vec<RegistrationView>> {
    let rows = store::registrations(&state.db, status).await?;
    Ok(rows
        .into_iter()
        .map(|r| RegistrationView {
            id: r.id,
            partner: r.partner_id,
            issuer: r.issuer,
            client_id: r.client_id,
            deployment_id: r.deployment_id,
            lms: r.vendor,
            status: r.status,
            link_id: r.link_id,
            created_at: rfc3339(r.created_at_us),
            decided_at: r.decided_at_us.map(rfc3339),
        })
        .collect())
}

/// Approve or reject a pending registration; false when there is none.
pub async fn decide(
    state: &AppState,
    id: &str,
    approve: bool,
    who: &crate::audit::Who,
) -> anyhow::Result<bool> {
    let status = if approve { "approved" } else { "rejected" };
    let now = crate::time::now_micros();
    Ok(store::decide_registration(&state.db, id, status, now, who).await?)
}

/// Links, newest first, filtered by partner and by status at `now_us`.
pub async fn list_links(
    state: &AppState,
    partner: Option<&str>,
    status: Option<&str>,
    now_us: i64,
) -> anyhow::Result<Vec<LinkView>> {
    let rows = store::list_links(&state.db, partner).await?;
    Ok(rows
        .iter()
        .filter(|r| status.is_none_or(|s| link_status(r, now_us) == s))
        .map(|r| link_view(r, now_us))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_keeps_a_port_that_is_given() {
        assert_eq!(tool_domain("https://gw.example.edu"), "gw.example.edu");
        assert_eq!(tool_domain("http://127.0.0.1:18010"), "127.0.0.1:18010");
        assert_eq!(
            tool_domain("https://GW.example.edu:8443/base"),
            "gw.example.edu:8443"
        );
        assert_eq!(tool_domain("https://[::1]:8443"), "[::1]:8443");
        assert_eq!(
            tool_domain("https://user:pw@gw.example.edu"),
            "gw.example.edu"
        );
    }

    fn origin_ok(config_url: &str, issuer: &str) -> Result<(), String> {
        check_issuer_origin(&Url::parse(config_url).unwrap(), issuer)
    }

    #[test]
    fn the_configuration_must_come_from_the_issuers_own_origin() {
        for (config_url, issuer) in [
            (
                "https://lms.example.edu/mod/lti/openid-configuration.php",
                "https://lms.example.edu",
            ),
            (
                "https://lms.example.edu/mod/lti/openid-configuration.php",
                "https://lms.example.edu/",
            ),
            (
                "https://lms.example.edu:443/.well-known/openid-configuration",
                "https://lms.example.edu",
            ),
            ("https://LMS.example.edu/x", "https://lms.example.edu"),
            (
                "https://example.edu/moodle/mod/lti/openid-configuration.php",
                "https://example.edu/moodle",
            ),
            (
                "https://example.edu/moodle/x",
                "https://example.edu/moodle/",
            ),
            ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080"),
            (
                "https://canvas.instructure.com/api/lti/security/openid-configuration?x=1",
                "https://canvas.instructure.com",
            ),
        ] {
            assert_eq!(
                origin_ok(config_url, issuer),
                Ok(()),
                "{config_url} for {issuer}"
            );
        }
        for (config_url, issuer, why) in [
            (
                "http://lms.example.edu@evil.test/config",
                "http://lms.example.edu",
                "user info",
            ),
            (
                "https://lms.example.edu:x@evil.test/config",
                "https://lms.example.edu",
                "user info",
            ),
            (
                "https://lms.example.edu.evil.test/config",
                "https://lms.example.edu",
                "origins",
            ),
            (
                "https://lms.example.edu.evil.test/config",
                "https://lms.example.edu.",
                "origins",
            ),
            (
                "https://evil.test/lms.example.edu/config",
                "https://lms.example.edu",
                "origins",
            ),
            (
                "http://lms.example.edu/config",
                "https://lms.example.edu",
                "origins",
            ),
            (
                "https://lms.example.edu:8443/config",
                "https://lms.example.edu",
                "origins",
            ),
            (
                "http://127.0.0.1:12345/config",
                "http://127.0.0.1:1",
                "origins",
            ),
            (
                "http://127.0.0.1:12345/config",
                "http://127.0.0.1",
                "origins",
            ),
            (
                "https://example.edu/moodle2/config",
                "https://example.edu/moodle",
                "not under",
            ),
            (
                "https://example.edu/config",
                "https://example.edu/moodle",
                "not under",
            ),
            (
                "https://lms.example.edu/config",
                "https://u@lms.example.edu",
                "user info",
            ),
            (
                "https://lms.example.edu/config",
                "https://lms.example.edu?x=1",
                "query",
            ),
            (
                "https://lms.example.edu/config",
                "lms.example.edu",
                "not usable",
            ),
        ] {
            let e = origin_ok(config_url, issuer).unwrap_err();
            assert!(e.contains(why), "{config_url} for {issuer}: {e}");
        }
    }

    #[test]
    fn initiation_parameters_are_read_once_each() {
        let p = initiation_params(
            "link=abc&openid_configuration=https%3A%2F%2Flms%2Fc&registration_token=t&x=1",
        )
        .unwrap();
        assert_eq!(p.link.as_deref(), Some("abc"));
        assert_eq!(p.openid_configuration.as_deref(), Some("https://lms/c"));
        assert_eq!(p.registration_token.as_deref(), Some("t"));
        assert_eq!(initiation_params("").unwrap(), InitiationParams::default());
        assert_eq!(initiation_params("link=").unwrap().link, None);
        for dup in [
            "link=a&link=b",
            "link=a&openid_configuration=x&openid_configuration=y",
            "registration_token=a&registration_token=b",
        ] {
            assert!(initiation_params(dup).is_err(), "{dup}");
        }
    }

    #[test]
    fn a_links_status_follows_its_fields() {
        let row = LinkRow {
            id: "lrl_1".into(),
            partner_id: "p".into(),
            note: None,
            created_by: "cli".into(),
            created_at_us: 0,
            expires_at_us: 100,
            used_at_us: None,
            registration_id: None,
            revoked_at_us: None,
            attempts: 0,
            last_error: None,
            last_error_at_us: None,
            lti11_consumer_key: None,
        };
        assert_eq!(link_status(&row, 99), "active");
        assert_eq!(link_status(&row, 100), "expired");
        let r = LinkRow {
            attempts: LINK_MAX_ATTEMPTS,
            ..row.clone()
        };
        assert_eq!(link_status(&r, 0), "exhausted");
        let r = LinkRow {
            revoked_at_us: Some(1),
            ..row.clone()
        };
        assert_eq!(link_status(&r, 0), "revoked");
        let r = LinkRow {
            used_at_us: Some(1),
            revoked_at_us: Some(2),
            ..row
        };
        assert_eq!(link_status(&r, 500), "used");
    }

    #[test]
    fn link_lifetimes_are_bounded() {
        assert_eq!(link_ttl(None), Ok(LINK_TTL_DEFAULT_SECS));
        assert_eq!(link_ttl(Some(300)), Ok(300));
        assert_eq!(link_ttl(Some(30 * 86_400)), Ok(30 * 86_400));
        assert!(link_ttl(Some(299)).is_err());
        assert!(link_ttl(Some(30 * 86_400 + 1)).is_err());
        assert!(link_ttl(Some(0)).is_err());
    }
}
