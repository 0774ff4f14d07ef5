//! Keeping a launch's access token usable: refresh ahead of expiry (`smart.refresh_ahead_secs`)
//! or on demand after a 401. Only one instance refreshes a session at a time (a lease in the
//! store), so a rotating refresh token (Epic) is never spent twice; the others wait for the
//! new version. The refresh token is replaced only when the EHR returns a new one.

use std::sync::Arc;
use std::time::Duration;

use super::store::{Session, lease_refresh, load_session, release_refresh, store_refreshed};
use crate::app::AppState;
use crate::http::ApiError;
use crate::time::now_micros;

const LEASE: Duration = Duration::from_secs(30);
const WAIT_STEP: Duration = Duration::from_millis(100);

/// The session with a token good for at least `refresh_ahead_secs` (or a new one when
/// `force`), refreshing if needed.
pub async fn ensure_fresh(
    state: &AppState,
    session: Arc<Session>,
    force: bool,
) -> Result<Arc<Session>, ApiError> {
    let ahead = (state.config.smart.refresh_ahead_secs as i64) * 1_000_000;
    let now = now_micros();
    let due = force || session.access_expires_at_us - ahead <= now;
    if !due {
        return Ok(session);
    }
    if session.refresh_token.is_none() {
        if session.access_expires_at_us > now && !force {
            return Ok(session); // nothing to refresh with; use it while it lasts
        }
        return Err(ApiError::Gone(format!(
            "the EHR's access token for launch {} has expired and the EHR gave no refresh token; the user must launch again",
            session.launch_id
        )));
    }
    let deadline = tokio::time::Instant::now() + LEASE;
    let mut current = session;
    loop {
        let now = now_micros();
        let lease_until = now + LEASE.as_micros() as i64;
        if lease_refresh(
            &state.db,
            &current.launch_id,
            current.version,
            now,
            lease_until,
        )
        .await?
        {
            return refresh(state, &current).await;
        }
        // Another request (here or on another instance) is refreshing: wait for its result.
        tokio::time::sleep(WAIT_STEP).await;
        let latest = load_session(&state.db, &state.master_key, &current.launch_id)
            .await?
            .ok_or_else(|| {
                ApiError::NotFound(format!("launch {} has no SMART session", current.launch_id))
            })?;
        if latest.version > current.version {
            let latest = Arc::new(latest);
            state.smart.update_session(latest.clone());
            return Ok(latest);
        }
        current = Arc::new(latest);
        if tokio::time::Instant::now() > deadline {
            return Err(ApiError::Unavailable(
                "another request is still refreshing this launch's token; try again".into(),
            ));
        }
    }
}

async fn refresh(state: &AppState, old: &Session) -> Result<Arc<Session>, ApiError> {
    let outcome = refresh_inner(state, old).await;
    if outcome.is_err() {
        let _ = release_refresh(&state.db, &old.launch_id).await;
    }
    outcome
}

async fn refresh_inner(state: &AppState, old: &Session) -> Result<Arc<Session>, ApiError> {
    let reg = state
        .config
        .partner(&old.partner_id)
        .and_then(|p| p.smart.as_ref())
        .ok_or_else(|| {
            ApiError::Gone(format!(
                "partner {} has no SMART registration any more",
                old.partner_id
            ))
        })?;
    let auth = super::launch::client_auth(state, reg, &reg.client_id, reg.alg())
        .await
        .map_err(|_| {
            ApiError::Internal(anyhow::anyhow!("building the client authentication failed"))
        })?;
    let refresh_token = old.refresh_token.clone().unwrap_or_default();
    let form = vec![
        ("grant_type", "refresh_token".to_owned()),
        ("refresh_token", refresh_token),
    ];
    let token = super::token::request(&state.outbound, &old.token_endpoint, &auth, form)
        .await
        .map_err(|e| {
            tracing::warn!(launch_id = %old.launch_id, partner_id = %old.partner_id, error = %e, "token refresh failed");
            if e.is_invalid_grant() {
                ApiError::Gone(format!(
                    "the EHR no longer accepts this launch's refresh token ({e}); the user must launch again"
                ))
            } else {
                ApiError::BadGateway { code: "ehr_refresh_failed", detail: e.to_string() }
            }
        })?;
    let now = now_micros();
    let lifetime = token.expires_in_secs().unwrap_or(3600).max(0);
    let new = store_refreshed(
        &state.db,
        &state.master_key,
        old,
        &token.access_token,
        token.refresh_token.as_deref(),
        now + lifetime * 1_000_000,
        now,
    )
    .await?;
    tracing::info!(launch_id = %old.launch_id, version = new.version, rotated = token.refresh_token.is_some(), "access token refreshed");
    let new = Arc::new(new);
    state.smart.update_session(new.clone());
    Ok(new)
}
