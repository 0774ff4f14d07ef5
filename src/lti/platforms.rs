//! Finding the platform (LMS registration) a request belongs to: configured platforms
//! first, then approved dynamic registrations from the store.

use super::registration::LmsVendor;
use crate::state::AppState;

/// One platform registration and the deployments a partner owns on it.
#[derive(Debug, Clone)]
pub struct Platform {
    pub partner_id: String,
    pub issuer: String,
    pub client_id: String,
    pub deployment_ids: Vec<String>,
    pub auth_url: String,
    pub token_url: String,
    pub jwks_url: String,
    pub token_audience: Option<String>,
    pub vendor: LmsVendor,
    /// The LTI 1.1 consumer key whose secret verifies the migration claim (config only).
    pub lti11_consumer_key: Option<String>,
}

impl Platform {
    /// The `aud` of client assertions for the token endpoint.
    pub fn token_aud(&self) -> &str {
        self.token_audience.as_deref().unwrap_or(&self.token_url)
    }
}

/// Every registration of (`issuer`, `client_id`) — one per partner that owns deployments
/// on it — or of `issuer` alone when no client id was given.
pub async fn find(
    state: &AppState,
    issuer: &str,
    client_id: Option<&str>,
) -> anyhow::Result<Vec<Platform>> {
    let mut out = Vec::new();
    for p in &state.config.partners {
        let Some(lti) = &p.lti else { continue };
        for pl in &lti.platforms {
            if pl.issuer == issuer && client_id.is_none_or(|c| c == pl.client_id) {
                out.push(Platform {
                    partner_id: p.id.clone(),
                    issuer: pl.issuer.clone(),
                    client_id: pl.client_id.clone(),
                    deployment_ids: pl.deployment_ids.clone(),
                    auth_url: pl.auth_url.clone(),
                    token_url: pl.token_url.clone(),
                    jwks_url: pl.jwks_url.clone(),
                    token_audience: pl.token_audience.clone(),
                    vendor: pl.vendor,
                    lti11_consumer_key: pl.lti11_consumer_key.clone(),
                });
            }
        }
    }
    out.extend(super::store::registered_platforms(&state.db, issuer, client_id).await?);
    Ok(out)
}

/// The registration owning `deployment_id` among `platforms`.
pub fn for_deployment<'a>(platforms: &'a [Platform], deployment_id: &str) -> Option<&'a Platform> {
    // An exact registration first; `*` (a dynamic registration the platform gave no
    // deployment id) admits any deployment of its client.
    platforms
        .iter()
        .find(|p| p.deployment_ids.iter().any(|d| d == deployment_id))
        .or_else(|| {
            platforms
                .iter()
                .find(|p| p.deployment_ids.iter().any(|d| d == "*"))
        })
}
