//! SQL for SSO: pending authorization requests (single use, expiring).

use crate::db::Db;
use crate::keys::crypto::MasterKey;
use crate::with_tx;

/// An authorization request waiting for its callback.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub connection_id: String,
    pub partner_id: String,
    pub nonce: String,
    pub code_verifier: String,
}

/// Why a callback's `state` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateProblem {
    Unknown,
    Reused,
    Expired,
}

pub async fn insert_state(
    db: &Db,
    master: &MasterKey,
    state_hash: &str,
    pending: &Pending,
    now_us: i64,
    expires_at_us: i64,
) -> anyhow::Result<()> {
    let sealed = master.seal(state_hash, &serde_json::to_vec(pending)?)?;
    let mut tx = db.begin().await?;
    // States a day past expiry only matter as "expired" answers; drop them as we go.
    let purge = "DELETE FROM sso_states WHERE expires_at_us < $1";
    with_tx!(&mut tx, c => sqlx::query(purge).bind(now_us - 86_400_000_000).execute(c).await.map(|r| r.rows_affected()))?;
    let sql = "INSERT INTO sso_states (state_hash, connection_id, partner_id, sealed, \
               created_at_us, expires_at_us) VALUES ($1, $2, $3, $4, $5, $6)";
    with_tx!(&mut tx, c => {
        sqlx::query(sql)
            .bind(state_hash)
            .bind(&pending.connection_id)
            .bind(&pending.partner_id)
            .bind(&sealed)
            .bind(now_us)
            .bind(expires_at_us)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
    })?;
    tx.commit().await?;
    Ok(())
}

/// Spend a state: it works once, before it expires.
pub async fn take_state(
    db: &Db,
    master: &MasterKey,
    state_hash: &str,
    now_us: i64,
) -> anyhow::Result<Result<Pending, StateProblem>> {
    let spend = "UPDATE sso_states SET used_at_us = $2 \
                 WHERE state_hash = $1 AND used_at_us IS NULL AND expires_at_us > $2 \
                 RETURNING sealed";
    let mut tx = db.begin().await?;
    let row: Option<Vec<u8>> = with_tx!(&mut tx, c => {
        sqlx::query_scalar(spend).bind(state_hash).bind(now_us).fetch_optional(c).await
    })?;
    let outcome = match row {
        Some(sealed) => Ok(serde_json::from_slice(&master.open(state_hash, &sealed)?)?),
        None => {
            let sql = "SELECT used_at_us FROM sso_states WHERE state_hash = $1";
            let found: Option<Option<i64>> = with_tx!(&mut tx, c => {
                sqlx::query_scalar(sql).bind(state_hash).fetch_optional(c).await
            })?;
            Err(match found {
                None => StateProblem::Unknown,
                Some(Some(_)) => StateProblem::Reused,
                Some(None) => StateProblem::Expired,
            })
        }
    };
    tx.commit().await?;
    Ok(outcome)
}
