//! Single sign-on for customer organisations: the gateway is the app's front door to each
//! organisation's identity provider and hands the person to the app through the shared
//! launch model (`kind: "sso"`). It speaks OIDC (`oidc.rs`) and SAML 2.0 (`saml.rs`);
//! connections come from config or are created at runtime (`connection.rs`, `store.rs`),
//! pending requests and used assertions live in the store, `login.rs` holds a sign-in's
//! two halves and `routes.rs` the thin HTTP handlers.

pub mod admin;
pub mod connection;
pub mod login;
pub mod lookup;
pub mod oidc;
pub mod routes;
pub mod saml;
pub mod store;
pub mod xmlenc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use connection::SsoConnection;

/// The SP keys and when they were read.
type LoadedKeys = (Instant, Arc<Vec<saml::SpKey>>);

/// Caches shared by the SSO routes.
#[derive(Clone)]
pub struct SsoState {
    pub discovery: oidc::Discovery,
    pub saml_metadata: saml::IdpMetadataCache,
    sp_keys: Arc<tokio::sync::Mutex<Option<LoadedKeys>>>,
}

impl SsoState {
    pub fn new(cfg: &crate::config::SsoConfig) -> SsoState {
        SsoState {
            discovery: oidc::Discovery::new(
                Duration::from_secs(cfg.discovery_ttl_secs),
                Duration::from_secs(cfg.jwks_min_refetch_secs),
            ),
            saml_metadata: saml::IdpMetadataCache::new(Duration::from_secs(
                cfg.saml_metadata_refresh_secs,
            )),
            sp_keys: Arc::default(),
        }
    }
}

impl SsoState {
    /// Drop the SP keys kept in memory (after a rotation by this process).
    pub async fn forget_sp_keys(&self) {
        *self.sp_keys.lock().await = None;
    }
}

/// A connection and whose it is.
#[derive(Debug, Clone)]
pub struct Found {
    pub partner_id: String,
    pub partner_name: String,
    pub conn: Arc<SsoConnection>,
}

impl Found {
    /// The organisation's display name: the connection's, else the partner's.
    pub fn organisation(&self) -> String {
        self.conn
            .organisation
            .clone()
            .unwrap_or_else(|| self.partner_name.clone())
    }
}

/// The redirect URI every OIDC connection registers with its IdP.
pub fn oidc_redirect_uri(config: &Config) -> String {
    format!("{}/sso/oidc/callback", config.http.public_base())
}

/// The gateway's SAML entity id for a connection (its metadata URL unless configured).
pub fn saml_entity_id(config: &Config, conn: &SsoConnection) -> String {
    conn.sp_entity_id
        .clone()
        .unwrap_or_else(|| saml_metadata_url(config, &conn.id))
}

pub fn saml_metadata_url(config: &Config, id: &str) -> String {
    format!("{}/sso/saml/{id}/metadata", config.http.public_base())
}

pub fn saml_acs_url(config: &Config, id: &str) -> String {
    format!("{}/sso/saml/{id}/acs", config.http.public_base())
}
