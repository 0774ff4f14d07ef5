//! Where a sign-in finds its connection (config first, then those created at runtime) and
//! the gateway's SAML SP keys, kept a minute in memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Found, saml, store};
use crate::config::Config;
use crate::state::AppState;

/// The gateway's SAML SP keys (created on first use), kept a minute in memory.
pub async fn sp_keys(state: &AppState) -> anyhow::Result<Arc<Vec<saml::SpKey>>> {
    let mut guard = state.sso.sp_keys.lock().await;
    if let Some((at, keys)) = guard.as_ref()
        && at.elapsed() < Duration::from_secs(60)
    {
        return Ok(keys.clone());
    }
    let host = url::Url::parse(&state.config.http.public_base())
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "partner-gateway".into());
    let keys = Arc::new(
        store::sp_keys(
            &state.db,
            &state.master_key,
            &format!("{host} SAML SP"),
            crate::time::now_micros(),
        )
        .await?,
    );
    *guard = Some((Instant::now(), keys.clone()));
    Ok(keys)
}

pub(super) fn configured(config: &Config) -> impl Iterator<Item = Found> + '_ {
    config.partners.iter().flat_map(|p| {
        p.sso_connections.iter().map(move |c| Found {
            partner_id: p.id.clone(),
            partner_name: p.name.clone(),
            conn: Arc::new(c.clone()),
        })
    })
}

/// Every connection: those in config, then those created at runtime.
pub async fn all_connections(state: &AppState) -> anyhow::Result<Vec<Found>> {
    let mut out: Vec<Found> = configured(&state.config).collect();
    out.extend(store::runtime_connections(&state.db, &state.master_key, None, None).await?);
    Ok(out)
}

/// The connection with this id.
pub async fn connection(state: &AppState, id: &str) -> anyhow::Result<Option<Found>> {
    if let Some(f) = configured(&state.config).find(|f| f.conn.id == id) {
        return Ok(Some(f));
    }
    Ok(
        store::runtime_connections(&state.db, &state.master_key, Some(id), None)
            .await?
            .into_iter()
            .next(),
    )
}

/// The connection an email address routes to, by its domain (exact, case-insensitive).
pub async fn connection_for_email(state: &AppState, email: &str) -> anyhow::Result<Option<Found>> {
    let Some((_, domain)) = email.rsplit_once('@') else {
        return Ok(None);
    };
    let domain = domain.trim().to_ascii_lowercase();
    if let Some(f) = configured(&state.config).find(|f| f.conn.domains.contains(&domain)) {
        return Ok(Some(f));
    }
    Ok(
        store::runtime_connections(&state.db, &state.master_key, None, Some(&domain))
            .await?
            .into_iter()
            .next(),
    )
}

/// The connections of one partner.
pub async fn partner_connections(state: &AppState, partner_id: &str) -> anyhow::Result<Vec<Found>> {
    Ok(all_connections(state)
        .await?
        .into_iter()
        .filter(|f| f.partner_id == partner_id)
        .collect())
}
