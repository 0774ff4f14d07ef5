//! Single sign-on for customer organisations: the gateway is the app's front door to each
//! organisation's identity provider and hands the person to the app through the shared
//! launch model (`kind: "sso"`). This slice speaks OIDC (`oidc.rs`); connections come from
//! config (`connection.rs`), pending requests live in the store (`store.rs`), and the
//! routes (`routes.rs`) do home-realm discovery, the redirect and the callback.

pub mod connection;
pub mod login;
pub mod oidc;
pub mod routes;
pub mod store;

pub use routes::router;

use crate::config::{Config, PartnerConfig};
use connection::SsoConnection;

/// Caches shared by the SSO routes.
#[derive(Clone)]
pub struct SsoState {
    pub discovery: oidc::Discovery,
}

impl SsoState {
    pub fn new(cfg: &crate::config::SsoConfig) -> SsoState {
        SsoState {
            discovery: oidc::Discovery::new(
                std::time::Duration::from_secs(cfg.discovery_ttl_secs),
                std::time::Duration::from_secs(cfg.jwks_min_refetch_secs),
            ),
        }
    }
}

/// The connection with this id, and its partner.
pub fn connection<'a>(
    config: &'a Config,
    id: &str,
) -> Option<(&'a PartnerConfig, &'a SsoConnection)> {
    config
        .partners
        .iter()
        .flat_map(|p| p.sso_connections.iter().map(move |c| (p, c)))
        .find(|(_, c)| c.id == id)
}

/// The connection an email address routes to, by its domain (exact, case-insensitive).
pub fn connection_for_email<'a>(
    config: &'a Config,
    email: &str,
) -> Option<(&'a PartnerConfig, &'a SsoConnection)> {
    let domain = email.rsplit_once('@')?.1.trim().to_ascii_lowercase();
    config
        .partners
        .iter()
        .flat_map(|p| p.sso_connections.iter().map(move |c| (p, c)))
        .find(|(_, c)| c.domains.contains(&domain))
}

/// The redirect URI every OIDC connection registers with its IdP.
pub fn oidc_redirect_uri(config: &Config) -> String {
    format!("{}/sso/oidc/callback", config.http.public_base())
}
