//! SSO routes, thin: `GET /sso/start` (home-realm discovery, then `login::begin`),
//! `GET /sso/oidc/callback` (`login::complete`) and `GET /v1/sso/connections`.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::connection::SsoConnection;
use crate::app::AppState;
use crate::config::PartnerConfig;
use crate::http::page::{self, Page};

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
                "organisation": super::login::org_name(p, c),
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
    match super::login::begin(&state, partner, conn).await {
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

async fn callback(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    match super::login::complete(&state, query(raw)).await {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}
