//! Access tokens for a platform's services (AGS, NRPS): `client_credentials` with an RS256
//! client assertion (IMS Security Framework §4.1), cached per (platform, scope set) until
//! shortly before expiry.

use std::time::{Duration, Instant};

use super::platforms::Platform;
use crate::smart::token::{ClientAuth, TokenError};
use crate::state::AppState;

const EARLY: Duration = Duration::from_secs(60);

pub const SCOPE_LINEITEM: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem";
pub const SCOPE_LINEITEM_READ: &str =
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly";
pub const SCOPE_RESULT_READ: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly";
pub const SCOPE_SCORE: &str = "https://purl.imsglobal.org/spec/lti-ags/scope/score";
pub const SCOPE_NRPS: &str =
    "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly";

fn key(platform: &Platform, scopes: &[&str]) -> String {
    let mut s: Vec<&str> = scopes.to_vec();
    s.sort_unstable();
    format!(
        "{}\n{}\n{}",
        platform.issuer,
        platform.client_id,
        s.join(" ")
    )
}

/// A token for `scopes` at `platform`; `fresh` skips the cache (after a 401).
pub async fn platform_token(
    state: &AppState,
    platform: &Platform,
    scopes: &[&str],
    fresh: bool,
) -> Result<String, TokenError> {
    let k = key(platform, scopes);
    let mut cache = state.lti.tokens.lock().await;
    if !fresh
        && let Some((token, until)) = cache.get(&k)
        && Instant::now() < *until
    {
        return Ok(token.clone());
    }
    let signing = crate::keys::signing_key(&state.db, &state.master_key, crate::keys::Alg::Rs256)
        .await
        .map_err(|e| TokenError::Invalid(format!("loading the RS256 key: {e:#}")))?;
    let auth = ClientAuth::Asymmetric {
        client_id: platform.client_id.clone(),
        key: signing,
        audience: Some(platform.token_aud().to_owned()),
    };
    let form = vec![
        ("grant_type", "client_credentials".to_owned()),
        ("scope", scopes.join(" ")),
    ];
    let token =
        crate::smart::token::request(&state.outbound, &platform.token_url, &auth, form).await?;
    let life = Duration::from_secs(token.expires_in_secs().unwrap_or(3600).max(0) as u64);
    cache.insert(
        k,
        (
            token.access_token.clone(),
            Instant::now() + life.saturating_sub(EARLY),
        ),
    );
    Ok(token.access_token)
}
