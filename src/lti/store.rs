//! SQL for the LTI tool: login states, dynamic registrations, Deep Linking requests.

use super::platforms::Platform;
use super::registration::LmsVendor;
use crate::db::Db;
use crate::{with_db, with_tx};

/// A login initiation waiting for its launch.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    pub binding_hash: String,
    pub nonce: String,
    pub issuer: String,
    pub client_id: String,
    /// The login parameters as JSON (to reopen the launch in a new window).
    pub login: String,
    pub storage_target: Option<String>,
    pub storage_origin: Option<String>,
}

pub use crate::launches::StateProblem;

pub async fn insert_state(
    db: &Db,
    state_hash: &str,
    p: &PendingLogin,
    now_us: i64,
    expires_at_us: i64,
) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    crate::launches::store::purge_states(&mut tx, "lti_states", now_us).await?;
    let sql = "INSERT INTO lti_states (state_hash, binding_hash, nonce, issuer, client_id, login, \
               storage_target, storage_origin, created_at_us, expires_at_us) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
    with_tx!(&mut tx, c => {
        sqlx::query(sql)
            .bind(state_hash)
            .bind(&p.binding_hash)
            .bind(&p.nonce)
            .bind(&p.issuer)
            .bind(&p.client_id)
            .bind(&p.login)
            .bind(&p.storage_target)
            .bind(&p.storage_origin)
            .bind(now_us)
            .bind(expires_at_us)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
    })?;
    tx.commit().await?;
    Ok(())
}

type StateRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    i64,
);

/// Read a state without spending it (the launch may first need the browser binding from
/// platform storage).
pub async fn peek_state(
    db: &Db,
    state_hash: &str,
    now_us: i64,
) -> anyhow::Result<Result<PendingLogin, StateProblem>> {
    let sql = "SELECT binding_hash, nonce, issuer, client_id, login, storage_target, storage_origin, \
               used_at_us, expires_at_us FROM lti_states WHERE state_hash = $1";
    let row: Option<StateRow> =
        with_db!(db, pool => sqlx::query_as(sql).bind(state_hash).fetch_optional(pool).await)?;
    Ok(match row {
        None => Err(StateProblem::Unknown),
        Some((.., Some(_), _)) => Err(StateProblem::Reused),
        Some((.., None, expires)) if expires <= now_us => Err(StateProblem::Expired),
        Some((
            binding_hash,
            nonce,
            issuer,
            client_id,
            login,
            storage_target,
            storage_origin,
            _,
            _,
        )) => Ok(PendingLogin {
            binding_hash,
            nonce,
            issuer,
            client_id,
            login,
            storage_target,
            storage_origin,
        }),
    })
}

/// Spend a state for the browser that presented the binding hashing to `binding_hash`:
/// true for the one caller that gets it. The binding is checked in the UPDATE itself (as
/// well as by the caller before), so a wrong browser never spends it.
pub async fn spend_state(
    db: &Db,
    state_hash: &str,
    binding_hash: &str,
    now_us: i64,
) -> anyhow::Result<bool> {
    let sql = "UPDATE lti_states SET used_at_us = $2 \
               WHERE state_hash = $1 AND used_at_us IS NULL AND expires_at_us > $2 \
               AND binding_hash = $3";
    let n = with_db!(db, pool => sqlx::query(sql).bind(state_hash).bind(now_us).bind(binding_hash).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

type PlatformRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
);

/// Approved dynamic registrations of `issuer` (and `client_id` when given).
pub async fn registered_platforms(
    db: &Db,
    issuer: &str,
    client_id: Option<&str>,
) -> anyhow::Result<Vec<Platform>> {
    let sql = "SELECT partner_id, issuer, client_id, deployment_id, auth_url, token_url, jwks_url, \
               token_audience, vendor FROM lti_platforms \
               WHERE status = 'approved' AND issuer = $1 AND (CAST($2 AS TEXT) IS NULL OR client_id = $2)";
    let rows: Vec<PlatformRow> = with_db!(db, pool => sqlx::query_as(sql).bind(issuer).bind(client_id).fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .map(
            |(
                partner_id,
                issuer,
                client_id,
                deployment_id,
                auth_url,
                token_url,
                jwks_url,
                token_audience,
                vendor,
            )| Platform {
                partner_id,
                issuer,
                client_id,
                deployment_ids: vec![deployment_id],
                auth_url,
                token_url,
                jwks_url,
                token_audience,
                vendor: LmsVendor::parse(&vendor),
            },
        )
        .collect())
}

type ScoreRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
    i64,
    Option<i64>,
);

/// `GET /v1/scores/{score_id}`: where a score is.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ScoreStatus {
    pub score_id: String,
    pub launch_id: String,
    pub partner: String,
    pub user_id: String,
    /// pending (queued or being retried), delivered, or failed (the LMS refused it for good).
    pub status: String,
    pub attempts: i64,
    /// The line item it went to, once known.
    pub line_item: Option<String>,
    /// The LMS's last HTTP status.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    /// The score's timestamp as sent to the LMS: a resend carries the same one.
    pub timestamp: String,
    pub delivered_at: Option<String>,
}

/// A score's delivery status as the API shows it, with its partner (for the caller check).
pub async fn score_status(
    db: &Db,
    score_id: &str,
) -> anyhow::Result<Option<(String, ScoreStatus)>> {
    let sql = "SELECT id, launch_id, partner_id, user_id, status, attempts, line_item, last_status, \
               last_error, timestamp_us, delivered_at_us FROM lti_scores WHERE id = $1";
    let row: Option<ScoreRow> =
        with_db!(db, pool => sqlx::query_as(sql).bind(score_id).fetch_optional(pool).await)?;
    Ok(row.map(
        |(
            id,
            launch_id,
            partner_id,
            user_id,
            status,
            attempts,
            line_item,
            last_status,
            last_error,
            ts,
            delivered,
        )| {
            let view = ScoreStatus {
                score_id: id,
                launch_id,
                partner: partner_id.clone(),
                user_id,
                status,
                attempts,
                line_item,
                last_status,
                last_error,
                timestamp: crate::time::from_micros(ts).to_rfc3339(),
                delivered_at: delivered.map(|d| crate::time::from_micros(d).to_rfc3339()),
            };
            (partner_id, view)
        },
    ))
}
