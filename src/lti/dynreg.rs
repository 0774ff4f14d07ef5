//! LTI Dynamic Registration 1.0: `GET /lti/register?openid_configuration=...&registration_token=...`
//! (the LMS admin opens the tool's registration URL, `?partner=<id>` naming whose LMS it
//! is). The tool reads the platform's configuration, registers itself, stores the platform
//! and deployment (pending an admin's approval unless `lti.auto_approve_registrations`),
//! and answers with the page that tells the LMS to close the window.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::http::page::{Page, script_page};
use crate::with_db;

const PLATFORM_CONFIGURATION: &str = "https://purl.imsglobal.org/spec/lti-platform-configuration";
const TOOL_CONFIGURATION: &str = "https://purl.imsglobal.org/spec/lti-tool-configuration";

fn bad(line: impl Into<String>) -> Page {
    Page::new(StatusCode::BAD_REQUEST, "The tool could not be registered").line(line.into())
}

pub async fn register(state: &AppState, q: std::collections::HashMap<String, String>) -> Response {
    match register_inner(state, q).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

/// The registration the tool sends (Dynamic Registration §3.3 / OIDC client metadata).
pub fn tool_registration(state: &AppState) -> Value {
    let base = state.config.http.public_base();
    let host = url::Url::parse(&base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
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
            "domain": host,
            "target_link_uri": format!("{base}/lti/launch"),
            "claims": ["iss", "sub", "name", "given_name", "family_name", "email"],
            "messages": [
                {"type": "LtiResourceLinkRequest", "target_link_uri": format!("{base}/lti/launch")},
                {"type": "LtiDeepLinkingRequest", "target_link_uri": format!("{base}/lti/launch"), "label": "Partner Gateway"}
            ]
        }
    })
}

async fn register_inner(
    state: &AppState,
    q: std::collections::HashMap<String, String>,
) -> Result<Response, Page> {
    let config_url = q
        .get("openid_configuration")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| bad("The LMS did not send openid_configuration."))?;
    let partner_id = q.get("partner").ok_or_else(|| {
        bad("The registration URL must name the partner: add ?partner=<partner id> to the URL you give the LMS.")
    })?;
    let partner = state
        .config
        .partner(partner_id)
        .filter(|p| p.lti.is_some())
        .ok_or_else(|| {
            bad(format!(
                "{partner_id:?} is not an LMS partner with an LTI registration."
            ))
        })?;
    let fetch_url = state
        .outbound
        .url(config_url)
        .map_err(|e| bad(e.to_string()))?;
    let resp = state
        .outbound
        .client()
        .get(fetch_url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| {
            bad(format!(
                "The LMS configuration could not be read: {}",
                crate::smart::discovery::error_chain(&e.without_url())
            ))
        })?;
    if !resp.status().is_success() {
        return Err(bad(format!(
            "The LMS configuration answered HTTP {}.",
            resp.status().as_u16()
        )));
    }
    let cfg: Value = resp
        .json()
        .await
        .map_err(|e| bad(format!("The LMS configuration is not JSON: {e}")))?;
    let s = |k: &str| cfg.get(k).and_then(Value::as_str).map(str::to_owned);
    let issuer = s("issuer").ok_or_else(|| bad("The LMS configuration has no issuer."))?;
    // Dynamic Registration §3.5.1: the configuration must come from the issuer's own URL.
    if !config_url.starts_with(issuer.trim_end_matches('/')) {
        return Err(bad(format!(
            "The configuration URL {config_url} is not under the issuer {issuer}."
        )));
    }
    let need = |k: &str| s(k).ok_or_else(|| bad(format!("The LMS configuration has no {k}.")));
    let (auth_url, token_url, jwks_url, registration_endpoint) = (
        need("authorization_endpoint")?,
        need("token_endpoint")?,
        need("jwks_uri")?,
        need("registration_endpoint")?,
    );
    for u in [&auth_url, &token_url, &jwks_url, &registration_endpoint] {
        crate::outbound::parse_http_url(u).map_err(bad)?;
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
    let reg_url = state
        .outbound
        .url(&registration_endpoint)
        .map_err(|e| bad(e.to_string()))?;
    let mut req = state
        .outbound
        .client()
        .post(reg_url)
        .header("content-type", "application/json")
        .header("accept", "application/json");
    if let Some(t) = q.get("registration_token").filter(|t| !t.is_empty()) {
        req = req.bearer_auth(t);
    }
    let resp = req
        .body(tool_registration(state).to_string())
        .send()
        .await
        .map_err(|e| {
            bad(format!(
                "The LMS registration endpoint could not be reached: {}",
                crate::smart::discovery::error_chain(&e.without_url())
            ))
        })?;
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        return Err(bad(format!(
            "The LMS refused the registration (HTTP {status}): {answer}"
        )));
    }
    let client_id = answer
        .get("client_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("The LMS's answer has no client_id."))?
        .to_owned();
    // A platform that returns no deployment id lets any deployment of this client in.
    let deployment = answer
        .pointer(&format!(
            "/{}/deployment_id",
            TOOL_CONFIGURATION.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .unwrap_or("*")
        .to_owned();
    let status_text = if state.config.lti.auto_approve_registrations {
        "approved"
    } else {
        "pending"
    };
    let now = crate::time::now_micros();
    let id = uuid::Uuid::now_v7().to_string();
    let sql = "INSERT INTO lti_platforms (id, partner_id, issuer, client_id, deployment_id, auth_url, token_url, \
               jwks_url, token_audience, vendor, status, registration, created_at_us) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10, $11, $12)";
    let pending = json!({
        "registration_id": id, "partner": partner.id, "issuer": issuer,
        "client_id": client_id, "deployment_id": deployment, "platform": vendor,
    });
    // The registration and its `lti.registration.pending` message, in one transaction.
    let stored: Result<(), sqlx::Error> = async {
        let mut tx = state.db.begin().await?;
        crate::with_tx!(&mut tx, c => {
            sqlx::query(sql)
                .bind(&id).bind(&partner.id).bind(&issuer).bind(&client_id).bind(&deployment)
                .bind(&auth_url).bind(&token_url).bind(&jwks_url).bind(vendor).bind(status_text)
                .bind(json!({"platform": cfg, "answer": answer}).to_string()).bind(now)
                .execute(c).await.map(|r| r.rows_affected())
        })?;
        if status_text == "pending" {
            let event = crate::webhooks::events::LTI_REGISTRATION_PENDING;
            let at = crate::time::from_micros(now);
            crate::webhooks::emit(&mut tx, Some(&partner.id), event, &pending, at).await?;
        }
        tx.commit().await
    }
    .await;
    match stored {
        Ok(()) => {}
        Err(e) if crate::db::is_unique_violation(&e) => {
            return Err(bad(format!(
                "{issuer} client {client_id} deployment {deployment} is already registered."
            )));
        }
        Err(e) => {
            return Err(crate::http::page::internal(format!(
                "storing the registration: {e}"
            )));
        }
    }
    tracing::info!(registration_id = %id, partner_id = %partner.id, %issuer, %client_id, status = status_text, "LTI dynamic registration stored");
    let line = if status_text == "approved" {
        "The tool is registered and ready to use.".to_owned()
    } else {
        "The tool is registered; an administrator of the tool will approve it shortly.".to_owned()
    };
    Ok(script_page(
        StatusCode::OK,
        "Registration complete",
        &[line],
        "(window.opener || window.parent).postMessage({subject: 'org.imsglobal.lti.close'}, '*');",
        None,
    ))
}

/// Registrations for admins: `status` filter.
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
    pub created_at: String,
    pub decided_at: Option<String>,
}

pub async fn list(state: &AppState, status: Option<&str>) -> anyhow::Result<Vec<RegistrationView>> {
    type Row = (
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        i64,
        Option<i64>,
    );
    let sql = "SELECT id, partner_id, issuer, client_id, deployment_id, vendor, status, created_at_us, decided_at_us \
               FROM lti_platforms WHERE (CAST($1 AS TEXT) IS NULL OR status = $1) ORDER BY created_at_us";
    let rows: Vec<Row> =
        with_db!(&state.db, pool => sqlx::query_as(sql).bind(status).fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .map(
            |(id, partner, issuer, client_id, deployment_id, vendor, status, created, decided)| {
                RegistrationView {
                    id,
                    partner,
                    issuer,
                    client_id,
                    deployment_id,
                    lms: vendor,
                    status,
                    created_at: crate::time::from_micros(created).to_rfc3339(),
                    decided_at: decided.map(|d| crate::time::from_micros(d).to_rfc3339()),
                }
            },
        )
        .collect())
}

/// Approve or reject a pending registration; false when there is none.
pub async fn decide(state: &AppState, id: &str, approve: bool) -> anyhow::Result<bool> {
    let sql = "UPDATE lti_platforms SET status = $2, decided_at_us = $3 WHERE id = $1 AND status = 'pending'";
    let status = if approve { "approved" } else { "rejected" };
    let n = with_db!(&state.db, pool => sqlx::query(sql).bind(id).bind(status).bind(crate::time::now_micros()).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}
