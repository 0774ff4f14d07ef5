//! The partner's integration details, to copy into its own systems: LTI tool URLs and the
//! Canvas developer key, SMART redirect and launch URLs, the JWKS, each SSO connection's
//! redirect URI or SAML metadata, inbound webhook URLs; and "Test the connection" for an
//! SSO connection (OIDC discovery and JWKS, or the SAML metadata, fetched now).

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

use super::auth::{self, Posted, Signed};
use super::layout::{self, csrf, error, page};
use crate::http::Path;
use crate::sso::connection::Protocol;
use crate::state::AppState;

const HERE: &str = "/console/partner/integration";

/// A value to copy, with its label.
fn copy(id: &str, label: &str, value: &str) -> Markup {
    html! {
        div.copy {
            label for=(id) { (label) }
            input id=(id) type="text" readonly value=(value) size="70";
        }
    }
}

/// `GET /console/partner/integration`.
pub async fn page_view(
    State(state): State<AppState>,
    s: Signed,
    RawQuery(raw): RawQuery,
) -> Response {
    let v = &s.viewer;
    let partner = match auth::partner_of(v) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(cfg) = state.config.partner(&partner) else {
        return error(
            StatusCode::NOT_FOUND,
            "Unknown partner",
            "This partner is no longer configured.",
        );
    };
    let conns = match crate::sso::lookup::partner_connections(&state, &partner).await {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Connections could not be read",
                &format!("{e:#}"),
            );
        }
    };
    let q: Vec<(String, String)> = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let tested = q
        .iter()
        .find(|(k, _)| k == "tested")
        .map(|(_, v)| v.as_str());
    let notice = match tested {
        Some("ok") => Some("The connection answered: its metadata was fetched and read."),
        _ => None,
    };
    let base = state.config.http.public_base();
    let jwks = format!("{base}/.well-known/jwks.json");
    let body = html! {
        h1 { "Integration details for " (cfg.name) }
        (layout::notice(notice))
        p { "Copy these into your systems. Every URL is this gateway's: " code { (base) } }
        @if let Some(lti) = &cfg.lti {
            h2 { "LTI 1.3 (your LMS)" }
            (copy("lti-login", "OIDC login (initiation) URL", &format!("{base}/lti/login")))
            (copy("lti-launch", "Target link / redirect URI", &format!("{base}/lti/launch")))
            (copy("lti-jwks", "Public JWK set URL", &jwks))
            (copy("lti-canvas", "Canvas developer key (JSON URL)", &format!("{base}/lti/config/canvas.json")))
            p.muted { "In Canvas: Developer Keys → + LTI Key → Method: Enter URL, and paste the JSON URL." }
            @if !lti.platforms.is_empty() {
                table {
                    caption { "Registered platforms" }
                    thead { tr { th scope="col" { "Issuer" } th scope="col" { "Client id" } th scope="col" { "Deployments" } } }
                    tbody { @for p in &lti.platforms { tr { td.mono { (p.issuer) } td.mono { (p.client_id) } td.mono { (p.deployment_ids.join(", ")) } } } }
                }
            }
            @if !lti.lti11.is_empty() {
                (copy("lti11-launch", "LTI 1.1 launch URL", &format!("{base}/lti/11/launch")))
            }
        }
        @if let Some(smart) = &cfg.smart {
            h2 { "SMART on FHIR (your EHR)" }
            (copy("smart-redirect", "Redirect URI", &format!("{base}/smart/callback")))
            (copy("smart-launch", "EHR launch URL", &format!("{base}/smart/launch")))
            (copy("smart-standalone", "Standalone launch URL", &format!("{base}/smart/{partner}/start")))
            (copy("smart-jwks", "JWK set URL (asymmetric client authentication)", &jwks))
            (copy("smart-client", "Client id", &smart.client_id))
        }
        @if !conns.is_empty() {
            h2 { "Single sign-on" }
            @for f in &conns {
                @let c = &f.conn;
                section {
                    h3 { (f.organisation()) " " span.muted.mono { "(" (c.id) ", " (c.protocol.as_str()) ")" } }
                    @match c.protocol {
                        Protocol::Oidc => {
                            (copy(&format!("sso-{}-redirect", c.id), "Redirect URI", &crate::sso::oidc_redirect_uri(&state.config)))
                            (copy(&format!("sso-{}-issuer", c.id), "Issuer the gateway expects", &c.issuer))
                        }
                        Protocol::Saml => {
                            (copy(&format!("sso-{}-metadata", c.id), "SP metadata URL", &crate::sso::saml_metadata_url(&state.config, &c.id)))
                            (copy(&format!("sso-{}-acs", c.id), "ACS URL", &crate::sso::saml_acs_url(&state.config, &c.id)))
                            (copy(&format!("sso-{}-entity", c.id), "SP entity id", &crate::sso::saml_entity_id(&state.config, c)))
                        }
                    }
                    @if v.role.writes_partner() {
                        form method="post" action={ (HERE) "/test/" (c.id) } {
                            (csrf(v))
                            button.secondary type="submit" { "Test the connection" }
                        }
                    }
                }
            }
        }
        @if !cfg.webhook_sources.is_empty() {
            h2 { "Webhooks you send us" }
            @for src in &cfg.webhook_sources {
                (copy(&format!("in-{}", src.id), &format!("Source {}", src.id), &format!("{base}/webhooks/in/{partner}/{}", src.id)))
            }
        }
        @if cfg.lti.is_none() && cfg.smart.is_none() && conns.is_empty() && cfg.webhook_sources.is_empty() {
            p { "No LMS, EHR, sign-in or inbound webhook integration is configured for you yet." }
        }
    };
    page(Some(v), "Integration", HERE, body)
}

/// `POST /console/partner/integration/test/{connection}`: fetch the IdP's metadata now.
pub async fn test(State(state): State<AppState>, Path(id): Path<String>, p: Posted) -> Response {
    let partner = match auth::partner_of(&p.viewer) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Err(r) = auth::require(
        &p.viewer,
        p.viewer.role.writes_partner(),
        "testing connections",
    ) {
        return r;
    }
    let found = match crate::sso::lookup::connection(&state, &id).await {
        Ok(Some(f)) if f.partner_id == partner => f,
        Ok(_) => {
            return error(
                StatusCode::NOT_FOUND,
                "No such connection",
                "There is no sign-in connection of that name among yours.",
            );
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The connection could not be read",
                &format!("{e:#}"),
            );
        }
    };
    let outcome = match found.conn.protocol {
        Protocol::Oidc => state
            .sso
            .discovery
            .fetch(&state.outbound, &found.conn.issuer)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Protocol::Saml => crate::sso::saml::load_idp_metadata(&state.outbound, &found.conn)
            .await
            .map(|_| ()),
    };
    match outcome {
        Ok(()) => layout::see_other(&format!("{HERE}?tested=ok")),
        Err(why) => error(
            StatusCode::BAD_GATEWAY,
            "The connection did not answer as it should",
            &format!("{}: {why}", found.organisation()),
        ),
    }
}
