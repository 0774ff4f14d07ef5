//! Keeping a launch's access token usable: refresh ahead of expiry (`smart.refresh_ahead_secs`)
//! or on demand after a 401. Only one instance refreshes a session at a time (a lease in the
//! store), so a rotating refresh token (Epic) is never spent twice; the others wait for the
//! new version. The refresh token is replaced only when the EHR returns a new one.
//!
//! A refresh is *due* when the call cannot go out with the current token: it has expired, or
//! the EHR answered 401. A due refresh that fails fails the call (502, or 410 when the EHR
//! refuses the refresh token). An *early* refresh, inside the refresh window while the token
//! is still valid, never fails a call: when it fails the call goes out with the current
//! token, and no early refresh of that launch is tried again for `smart.refresh_retry_secs`
//! (until the token expires when the EHR refused the refresh token: retrying cannot help,
//! and the due refresh at expiry gives the 410). The back-off is kept in the store
//! (`refresh_retry_after_us`, checked by the same UPDATE that takes the lease) so that every
//! instance honours it and a down token endpoint is asked once per launch per back-off, not
//! once per instance; each instance also remembers it in memory so that calls during the
//! back-off cost no store write.

use std::sync::Arc;
use std::time::Duration;

use super::store::{Session, lease_refresh, load_session, release_refresh, store_refreshed};
use crate::http::ApiError;
use crate::state::AppState;
use crate::time::now_micros;

const LEASE: Duration = Duration::from_secs(30);
const WAIT_STEP: Duration = Duration::from_millis(100);

/// The session with a token good for at least `refresh_ahead_secs` (or a new one when
/// `force`), refreshing if needed. Fails only when the refresh was due (see the module).
pub async fn ensure_fresh(
    state: &AppState,
    session: Arc<Session>,
    force: bool,
) -> Result<Arc<Session>, ApiError> {
    let ahead = (state.config.smart.refresh_ahead_secs as i64) * 1_000_000;
    let now = now_micros();
    let due = force || session.access_expires_at_us <= now;
    if !due && session.access_expires_at_us - ahead > now {
        return Ok(session);
    }
    if session.refresh_token.is_none() {
        if !due {
            return Ok(session); // nothing to refresh with; use it while it lasts
        }
        return Err(ApiError::Gone(format!(
            "the EHR's access token for launch {} has expired and the EHR gave no refresh token; the user must launch again",
            session.launch_id
        )));
    }
    if !due {
        return Ok(refresh_early(state, session, now).await);
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
            false,
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

/// Refresh a token that is still valid, or carry on with it: the new session when the
/// refresh worked, else the current one. Nobody waits here: when another request holds the
/// lease (or a failed early refresh is backing off), the call goes out with the current
/// token and this instance tries again after the back-off.
async fn refresh_early(state: &AppState, session: Arc<Session>, now: i64) -> Arc<Session> {
    let id = session.launch_id.as_str();
    if state.smart.early_refresh_waits(id, now) {
        return session;
    }
    let retry = (state.config.smart.refresh_retry_secs as i64) * 1_000_000;
    let lease_until = now + LEASE.as_micros() as i64;
    match lease_refresh(&state.db, id, session.version, now, lease_until, true).await {
        Ok(true) => {}
        Ok(false) => {
            // Another request refreshes, or an earlier early refresh is backing off.
            state.smart.delay_early_refresh(id, now + retry, now);
            return session;
        }
        Err(e) => {
            tracing::warn!(launch_id = %id, error = %e, "could not take the refresh lease; using the current token");
            return session;
        }
    }
    match refresh_inner(state, &session).await {
        Ok(new) => new,
        Err(e) => {
            // A refused refresh token (410) will be refused again: keep the token until it
            // expires, when the due refresh tells the app to launch again.
            let retry_at = match e {
                ApiError::Gone(_) => session.access_expires_at_us,
                _ => now + retry,
            };
            if let Err(store) = release_refresh(&state.db, id, Some(retry_at)).await {
                tracing::warn!(launch_id = %id, error = %store, "could not release the refresh lease; it lapses by itself");
            }
            state.smart.delay_early_refresh(id, retry_at, now);
            let expires_in_secs = (session.access_expires_at_us - now) / 1_000_000;
            let retry_in_secs = (retry_at - now) / 1_000_000;
            tracing::warn!(
                launch_id = %id,
                partner_id = %session.partner_id,
                error = %e,
                expires_in_secs,
                retry_in_secs,
                "early token refresh failed; the current access token is used while it is valid"
            );
            session
        }
    }
}

async fn refresh(state: &AppState, old: &Session) -> Result<Arc<Session>, ApiError> {
    let outcome = refresh_inner(state, old).await;
    if outcome.is_err() {
        let _ = release_refresh(&state.db, &old.launch_id, None).await;
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
