//! SQL for the SMART client: authorization states and the launch's sealed tokens.

use crate::db::{Db, Tx};
use crate::keys::crypto::MasterKey;
use crate::{with_db, with_tx};

/// An authorization request waiting for its callback.
#[derive(Debug, Clone)]
pub struct PendingState {
    pub partner_id: String,
    pub iss: String,
    pub launch_param: Option<String>,
    pub code_verifier: String,
    pub scope: String,
    /// SHA-256 of the secret in the starting browser's binding cookie.
    pub binding_hash: String,
}

pub use crate::launches::StateProblem;

pub async fn insert_state(
    db: &Db,
    master: &MasterKey,
    state_hash: &str,
    pending: &PendingState,
    now_us: i64,
    expires_at_us: i64,
) -> anyhow::Result<()> {
    let sealed = master.seal(state_hash, pending.code_verifier.as_bytes())?;
    let mut tx = db.begin().await?;
    crate::launches::store::purge_states(&mut tx, "smart_states", now_us).await?;
    let sql = "INSERT INTO smart_states (state_hash, partner_id, iss, launch_param, sealed_verifier, \
               scope, created_at_us, expires_at_us, binding_hash) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    with_tx!(&mut tx, c => {
        sqlx::query(sql)
            .bind(state_hash)
            .bind(&pending.partner_id)
            .bind(&pending.iss)
            .bind(&pending.launch_param)
            .bind(&sealed)
            .bind(&pending.scope)
            .bind(now_us)
            .bind(expires_at_us)
            .bind(&pending.binding_hash)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
    })?;
    tx.commit().await?;
    Ok(())
}

type StateRow = (String, String, Option<String>, Vec<u8>, String, String);

/// Spend a state: it works once, before it expires, and only for the browser holding the
/// secret whose hash is `binding_hash` (checked in the spending UPDATE itself, so a wrong
/// browser leaves the state for the right one).
pub async fn take_state(
    db: &Db,
    master: &MasterKey,
    state_hash: &str,
    binding_hash: Option<&str>,
    now_us: i64,
) -> anyhow::Result<Result<PendingState, StateProblem>> {
    let spend = "UPDATE smart_states SET used_at_us = $2 \
                 WHERE state_hash = $1 AND used_at_us IS NULL AND expires_at_us > $2 \
                 AND binding_hash = $3 \
                 RETURNING partner_id, iss, launch_param, sealed_verifier, scope, binding_hash";
    let mut tx = db.begin().await?;
    let row: Option<StateRow> = with_tx!(&mut tx, c => {
        sqlx::query_as(spend).bind(state_hash).bind(now_us).bind(binding_hash).fetch_optional(c).await
    })?;
    let outcome = match row {
        Some((partner_id, iss, launch_param, sealed, scope, binding_hash)) => {
            let verifier = master.open(state_hash, &sealed)?;
            Ok(PendingState {
                partner_id,
                iss,
                launch_param,
                code_verifier: String::from_utf8(verifier)?,
                scope,
                binding_hash,
            })
        }
        None => {
            Err(
                crate::launches::store::state_problem(&mut tx, "smart_states", state_hash, now_us)
                    .await?,
            )
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// The tokens of one launch, decrypted.
#[derive(Clone)]
pub struct Session {
    pub launch_id: String,
    pub partner_id: String,
    pub iss: String,
    pub token_endpoint: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub access_expires_at_us: i64,
    pub version: i64,
    /// When the launch ends; the row is deleted some time after.
    pub launch_expires_at_us: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({} v{})", self.launch_id, self.version)
    }
}

fn aad(launch_id: &str, which: &str, version: i64) -> String {
    format!("smart:{launch_id}:{which}:{version}")
}

/// Store a new launch's tokens inside the launch's transaction.
pub async fn insert_session(
    tx: &mut Tx,
    master: &MasterKey,
    s: &Session,
    now_us: i64,
) -> anyhow::Result<()> {
    let access = master.seal(
        &aad(&s.launch_id, "access", s.version),
        s.access_token.as_bytes(),
    )?;
    let refresh = s
        .refresh_token
        .as_ref()
        .map(|r| master.seal(&aad(&s.launch_id, "refresh", s.version), r.as_bytes()))
        .transpose()?;
    // Tokens of launches that ended are of no use to anyone: drop them as launches come in.
    let purge = "DELETE FROM smart_sessions WHERE launch_expires_at_us < $1";
    with_tx!(tx, c => sqlx::query(purge).bind(now_us).execute(c).await.map(|r| r.rows_affected()))?;
    let sql = "INSERT INTO smart_sessions (launch_id, partner_id, iss, token_endpoint, \
               sealed_access_token, sealed_refresh_token, access_expires_at_us, token_version, \
               updated_at_us, launch_expires_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
    with_tx!(tx, c => {
        sqlx::query(sql)
            .bind(&s.launch_id)
            .bind(&s.partner_id)
            .bind(&s.iss)
            .bind(&s.token_endpoint)
            .bind(&access)
            .bind(&refresh)
            .bind(s.access_expires_at_us)
            .bind(s.version)
            .bind(now_us)
            .bind(s.launch_expires_at_us)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(())
}

type SessionRow = (
    String,
    String,
    String,
    Vec<u8>,
    Option<Vec<u8>>,
    i64,
    i64,
    i64,
);

pub async fn load_session(
    db: &Db,
    master: &MasterKey,
    launch_id: &str,
) -> anyhow::Result<Option<Session>> {
    let sql = "SELECT partner_id, iss, token_endpoint, sealed_access_token, sealed_refresh_token, \
               access_expires_at_us, token_version, launch_expires_at_us FROM smart_sessions \
               WHERE launch_id = $1";
    let row: Option<SessionRow> =
        with_db!(db, pool => sqlx::query_as(sql).bind(launch_id).fetch_optional(pool).await)?;
    let Some((partner_id, iss, token_endpoint, access, refresh, expires, version, launch_expires)) =
        row
    else {
        return Ok(None);
    };
    let access_token =
        String::from_utf8(master.open(&aad(launch_id, "access", version), &access)?)?;
    let refresh_token = refresh
        .map(|r| master.open(&aad(launch_id, "refresh", version), &r))
        .transpose()?
        .map(String::from_utf8)
        .transpose()?;
    Ok(Some(Session {
        launch_id: launch_id.to_owned(),
        partner_id,
        iss,
        token_endpoint,
        access_token,
        refresh_token,
        access_expires_at_us: expires,
        version,
        launch_expires_at_us: launch_expires,
    }))
}

/// Take the right to refresh this session's token (`version` must still be current and no
/// other instance hold an unexpired lease). Returns false when someone else refreshes. An
/// `early` refresh (the token is still valid) is also refused while an earlier early attempt
/// is backing off (`refresh_retry_after_us`); a due one (expired token, or a 401) is not.
pub async fn lease_refresh(
    db: &Db,
    launch_id: &str,
    version: i64,
    now_us: i64,
    lease_until_us: i64,
    early: bool,
) -> anyhow::Result<bool> {
    let backoff = if early {
        " AND (refresh_retry_after_us IS NULL OR refresh_retry_after_us <= $3)"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE smart_sessions SET refresh_lease_until_us = $4 \
         WHERE launch_id = $1 AND token_version = $2 \
         AND (refresh_lease_until_us IS NULL OR refresh_lease_until_us < $3){backoff}"
    );
    let n = with_db!(db, pool => sqlx::query(&sql).bind(launch_id).bind(version).bind(now_us).bind(lease_until_us).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Store refreshed tokens as `version + 1`. The refresh token is replaced only when the
/// EHR returned a new one (Oracle Health does not), so the old one is resealed.
pub async fn store_refreshed(
    db: &Db,
    master: &MasterKey,
    old: &Session,
    access_token: &str,
    refresh_token: Option<&str>,
    access_expires_at_us: i64,
    now_us: i64,
) -> anyhow::Result<Session> {
    let version = old.version + 1;
    let keep = refresh_token
        .map(str::to_owned)
        .or_else(|| old.refresh_token.clone());
    let access = master.seal(
        &aad(&old.launch_id, "access", version),
        access_token.as_bytes(),
    )?;
    let refresh = keep
        .as_ref()
        .map(|r| master.seal(&aad(&old.launch_id, "refresh", version), r.as_bytes()))
        .transpose()?;
    let sql = "UPDATE smart_sessions SET sealed_access_token = $3, sealed_refresh_token = $4, \
               access_expires_at_us = $5, token_version = $6, refresh_lease_until_us = NULL, \
               refresh_retry_after_us = NULL, updated_at_us = $7 \
               WHERE launch_id = $1 AND token_version = $2";
    let mut tx = db.begin().await?;
    let n = with_tx!(&mut tx, c => {
        sqlx::query(sql)
            .bind(&old.launch_id)
            .bind(old.version)
            .bind(&access)
            .bind(&refresh)
            .bind(access_expires_at_us)
            .bind(version)
            .bind(now_us)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
    })?;
    anyhow::ensure!(
        n == 1,
        "the session of launch {} changed during the refresh",
        old.launch_id
    );
    tx.commit().await?;
    Ok(Session {
        access_token: access_token.to_owned(),
        refresh_token: keep,
        access_expires_at_us,
        version,
        ..old.clone()
    })
}

/// Give the refresh lease back after a failed refresh. With `retry_after_us` (a failed
/// early refresh), no early refresh is tried again before then, on any instance.
pub async fn release_refresh(
    db: &Db,
    launch_id: &str,
    retry_after_us: Option<i64>,
) -> anyhow::Result<()> {
    let sql = match retry_after_us {
        Some(_) => {
            "UPDATE smart_sessions SET refresh_lease_until_us = NULL, refresh_retry_after_us = $2 \
             WHERE launch_id = $1"
        }
        None => "UPDATE smart_sessions SET refresh_lease_until_us = NULL WHERE launch_id = $1",
    };
    with_db!(db, pool => {
        let q = sqlx::query(sql).bind(launch_id);
        let q = match retry_after_us {
            Some(t) => q.bind(t),
            None => q,
        };
        q.execute(pool).await.map(|r| r.rows_affected())
    })?;
    Ok(())
}
