//! SQL for launches and their one-time handoff codes.

use serde_json::{Map, Value};

use super::{Launch, LaunchKind, hash_code, new_code};
use crate::db::{Db, Tx};
use crate::time::{from_micros, to_micros};
use crate::{with_db, with_tx};

/// Insert a launch inside the caller's transaction (beside its usage event), with its
/// `launch.completed` webhook message.
pub async fn insert_launch(tx: &mut Tx, launch: &Launch) -> anyhow::Result<()> {
    let sql = "INSERT INTO launches (id, partner_id, kind, user_id, user_name, context, scopes, \
               created_at_us, expires_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    let context = serde_json::to_string(&launch.context)?;
    let scopes = launch.scopes.join(" ");
    with_tx!(tx, c => {
        sqlx::query(sql)
            .bind(&launch.id)
            .bind(&launch.partner_id)
            .bind(launch.kind.as_str())
            .bind(&launch.user_id)
            .bind(&launch.user_name)
            .bind(&context)
            .bind(&scopes)
            .bind(to_micros(launch.created_at))
            .bind(to_micros(launch.expires_at))
            .execute(c)
            .await
            .map(|r| r.rows_affected())
    })?;
    crate::webhooks::events::launch_completed(tx, launch, launch.created_at).await?;
    Ok(())
}

/// Create a one-time code for `launch_id`; returns the code (only its hash is stored).
pub async fn create_handoff(
    tx: &mut Tx,
    launch_id: &str,
    expires_at_us: i64,
) -> anyhow::Result<String> {
    let (code, hash) = new_code();
    let sql =
        "INSERT INTO launch_handoffs (code_hash, launch_id, expires_at_us) VALUES ($1, $2, $3)";
    with_tx!(tx, c => {
        sqlx::query(sql)
            .bind(&hash)
            .bind(launch_id)
            .bind(expires_at_us)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(code)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedeemError {
    #[error("unknown code")]
    Unknown,
    #[error("this code was already exchanged; a code works once")]
    Used,
    #[error("this code expired; codes must be exchanged within seconds of the launch")]
    Expired,
}

type LaunchRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    i64,
    i64,
    bool,
);

// The sandbox mark is the partner's, read with the launch so a launch view always says it.
const LAUNCH_COLUMNS: &str = "l.id, l.partner_id, l.kind, l.user_id, l.user_name, l.context, l.scopes, l.created_at_us, l.expires_at_us, \
    COALESCE((SELECT pa.sandbox FROM partners pa WHERE pa.id = l.partner_id), FALSE)";

fn launch_from_row(row: LaunchRow) -> anyhow::Result<Launch> {
    let (id, partner_id, kind, user_id, user_name, context, scopes, created, expires, sandbox) =
        row;
    let context: Map<String, Value> = serde_json::from_str(&context)?;
    Ok(Launch {
        kind: LaunchKind::parse(&kind)
            .ok_or_else(|| anyhow::anyhow!("launch {id} has unknown kind {kind:?}"))?,
        id,
        partner_id,
        user_id,
        user_name,
        context,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        created_at: from_micros(created),
        expires_at: from_micros(expires),
        sandbox,
    })
}

/// Spend a handoff code: the first caller gets the launch, every later one `Used`.
pub async fn redeem_handoff(
    db: &Db,
    code: &str,
    now_us: i64,
) -> anyhow::Result<Result<Launch, RedeemError>> {
    let hash = hash_code(code);
    // One conditional UPDATE decides the winner on both backends.
    let spend = "UPDATE launch_handoffs SET used_at_us = $2 \
                 WHERE code_hash = $1 AND used_at_us IS NULL AND expires_at_us > $2 \
                 RETURNING launch_id";
    let mut tx = db.begin().await?;
    let spent: Option<String> = with_tx!(&mut tx, c => {
        sqlx::query_scalar(spend).bind(&hash).bind(now_us).fetch_optional(c).await
    })?;
    let outcome = match spent {
        Some(launch_id) => {
            let sql = format!("SELECT {LAUNCH_COLUMNS} FROM launches l WHERE l.id = $1");
            let row: LaunchRow = with_tx!(&mut tx, c => {
                sqlx::query_as(&sql).bind(&launch_id).fetch_one(c).await
            })?;
            Ok(launch_from_row(row)?)
        }
        None => {
            let sql = "SELECT used_at_us, expires_at_us FROM launch_handoffs WHERE code_hash = $1";
            let row: Option<(Option<i64>, i64)> = with_tx!(&mut tx, c => {
                sqlx::query_as(sql).bind(&hash).fetch_optional(c).await
            })?;
            match row {
                None => Err(RedeemError::Unknown),
                Some((Some(_), _)) => Err(RedeemError::Used),
                Some((None, _)) => Err(RedeemError::Expired),
            }
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

pub async fn find_launch(db: &Db, id: &str) -> anyhow::Result<Option<Launch>> {
    let sql = format!("SELECT {LAUNCH_COLUMNS} FROM launches l WHERE l.id = $1");
    let row: Option<LaunchRow> =
        with_db!(db, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
    row.map(launch_from_row).transpose()
}

/// Drop the states of `table` (a `*_states` table) a day past expiry, in the caller's
/// transaction: until then they only matter as "expired" answers.
pub async fn purge_states(tx: &mut Tx, table: &'static str, now_us: i64) -> anyhow::Result<()> {
    let sql = format!("DELETE FROM {table} WHERE expires_at_us < $1");
    with_tx!(tx, c => sqlx::query(&sql).bind(now_us - 86_400_000_000).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Why a single-use state (SMART, LTI and SSO sign-in requests) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateProblem {
    Unknown,
    Reused,
    Expired,
    /// Live and unspent, but the answer came through another browser (no binding cookie,
    /// or another one): refused without spending it, so the right browser can still finish.
    OtherBrowser,
}

/// Why `state_hash` in `table` (one of the `*_states` tables: `state_hash`, `used_at_us`,
/// `expires_at_us`, `binding_hash`) could not be spent by a spend that also required
/// `binding_hash`: never issued, already spent, expired, or bound to another browser.
/// Called in the transaction whose spend found nothing.
pub async fn state_problem(
    tx: &mut Tx,
    table: &'static str,
    state_hash: &str,
    now_us: i64,
) -> anyhow::Result<StateProblem> {
    let sql = format!("SELECT used_at_us, expires_at_us FROM {table} WHERE state_hash = $1");
    let found: Option<(Option<i64>, i64)> = with_tx!(tx, c => {
        sqlx::query_as(&sql).bind(state_hash).fetch_optional(c).await
    })?;
    Ok(match found {
        None => StateProblem::Unknown,
        Some((Some(_), _)) => StateProblem::Reused,
        Some((None, expires)) if expires <= now_us => StateProblem::Expired,
        Some((None, _)) => StateProblem::OtherBrowser,
    })
}
