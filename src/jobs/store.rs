//! SQL for jobs.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::NewJob;
use crate::db::{Db, Tx};
use crate::time::to_micros;
use crate::{with_db, with_tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub partner_id: Option<String>,
    pub payload: Json<Value>,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at_us: i64,
    pub lease_until_us: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_us: i64,
    pub updated_at_us: i64,
    pub finished_at_us: Option<i64>,
}

const COLUMNS: &str = "id, kind, partner_id, payload, state, attempts, max_attempts, run_at_us, \
                       lease_until_us, last_error, created_at_us, updated_at_us, finished_at_us";

pub async fn insert_job(
    tx: &mut Tx,
    job: &NewJob,
    default_max_attempts: i32,
    now: DateTime<Utc>,
) -> Result<Option<String>, sqlx::Error> {
    let id = crate::ids::new(crate::ids::JOB);
    let now_us = to_micros(now);
    let run_at = job.run_at.map(to_micros).unwrap_or(now_us);
    let sql = "INSERT INTO jobs (id, kind, partner_id, payload, state, attempts, max_attempts, run_at_us, \
               dedupe_key, created_at_us, updated_at_us) \
               VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6, $7, $8, $8) \
               ON CONFLICT (dedupe_key) DO NOTHING";
    let done = with_tx!(tx, c => {
        sqlx::query(sql)
            .bind(&id)
            .bind(&job.kind)
            .bind(&job.partner_id)
            .bind(Json(&job.payload))
            .bind(job.max_attempts.unwrap_or(default_max_attempts))
            .bind(run_at)
            .bind(&job.dedupe_key)
            .bind(now_us)
            .execute(c).await.map(|r| r.rows_affected())
    })?;
    Ok((done == 1).then_some(id))
}

/// A claimed job, as the runner sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: String,
    pub kind: String,
    pub partner_id: Option<String>,
    pub payload: Json<Value>,
    pub attempts: i32,
    pub max_attempts: i32,
}

/// Claim the next due job of one of `kinds`: a pending job whose time has come, or a running
/// job whose lease lapsed (its worker died) and that has attempts left.
pub async fn claim_next_job(
    db: &Db,
    kinds: &[String],
    owner: &str,
    now_us: i64,
    lease_until_us: i64,
) -> Result<Option<Claimed>, sqlx::Error> {
    const RETURNING: &str = "RETURNING id, kind, partner_id, payload, attempts, max_attempts";
    const SET: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $1, \
                       lease_until_us = $2, updated_at_us = $3";
    const DUE: &str = "((state = 'pending' AND run_at_us <= $3) \
                        OR (state = 'running' AND lease_until_us < $3 AND attempts < max_attempts))";
    match db {
        Db::Postgres(pool) => {
            let sql = format!(
                "{SET} WHERE id = (SELECT id FROM jobs WHERE {DUE} AND kind = ANY($4) \
                 ORDER BY run_at_us, id LIMIT 1 FOR UPDATE SKIP LOCKED) {RETURNING}"
            );
            sqlx::query_as(&sql)
                .bind(owner)
                .bind(lease_until_us)
                .bind(now_us)
                .bind(kinds)
                .fetch_optional(pool)
                .await
        }
        Db::Sqlite(pool) => {
            // One statement: SQLite runs it under its single write lock, so two claimers
            // can never both see the same row as due.
            let sql = format!(
                "{SET} WHERE id = (SELECT id FROM jobs WHERE {DUE} \
                 AND kind IN (SELECT value FROM json_each($4)) ORDER BY run_at_us, id LIMIT 1) {RETURNING}"
            );
            let kinds = serde_json::to_string(kinds).unwrap_or_else(|_| "[]".into());
            sqlx::query_as(&sql)
                .bind(owner)
                .bind(lease_until_us)
                .bind(now_us)
                .bind(kinds)
                .fetch_optional(pool)
                .await
        }
    }
}

/// Running jobs whose lease lapsed on their last attempt are dead: nobody may run them again.
pub async fn bury_abandoned_jobs(db: &Db, now_us: i64) -> Result<Vec<String>, sqlx::Error> {
    let sql = "UPDATE jobs SET state = 'dead', lease_owner = NULL, lease_until_us = NULL, \
               finished_at_us = $1, updated_at_us = $1, \
               last_error = COALESCE(last_error || '; ', '') || 'worker lost on the final attempt' \
               WHERE state = 'running' AND lease_until_us < $1 AND attempts >= max_attempts RETURNING id";
    with_db!(db, pool => sqlx::query_scalar(sql).bind(now_us).fetch_all(pool).await)
}

/// Extend a lease we hold. False means we no longer hold it.
pub async fn renew_lease(
    db: &Db,
    id: &str,
    owner: &str,
    until_us: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE jobs SET lease_until_us = $1 WHERE id = $2 AND lease_owner = $3 AND state = 'running'";
    let done = with_db!(db, pool => sqlx::query(sql).bind(until_us).bind(id).bind(owner).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

pub async fn complete_job(
    db: &Db,
    id: &str,
    owner: &str,
    now_us: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE jobs SET state = 'succeeded', lease_owner = NULL, lease_until_us = NULL, \
               finished_at_us = $1, updated_at_us = $1 WHERE id = $2 AND lease_owner = $3 AND state = 'running'";
    let done = with_db!(db, pool => sqlx::query(sql).bind(now_us).bind(id).bind(owner).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

pub async fn reschedule_job(
    db: &Db,
    id: &str,
    owner: &str,
    run_at_us: i64,
    error: &str,
    now_us: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE jobs SET state = 'pending', run_at_us = $1, last_error = $2, lease_owner = NULL, \
               lease_until_us = NULL, updated_at_us = $3 WHERE id = $4 AND lease_owner = $5 AND state = 'running'";
    // An error can quote a partner's answer; PostgreSQL cannot store U+0000 in text.
    let error = crate::text::without_nul(error.to_owned());
    let error = error.as_str();
    let done = with_db!(db, pool => {
        sqlx::query(sql).bind(run_at_us).bind(error).bind(now_us).bind(id).bind(owner).execute(pool).await.map(|r| r.rows_affected())
    })?;
    Ok(done == 1)
}

pub async fn bury_job(
    db: &Db,
    id: &str,
    owner: &str,
    error: &str,
    now_us: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE jobs SET state = 'dead', last_error = $1, lease_owner = NULL, lease_until_us = NULL, \
               finished_at_us = $2, updated_at_us = $2 WHERE id = $3 AND lease_owner = $4 AND state = 'running'";
    let error = crate::text::without_nul(error.to_owned());
    let error = error.as_str();
    let done = with_db!(db, pool => {
        sqlx::query(sql).bind(error).bind(now_us).bind(id).bind(owner).execute(pool).await.map(|r| r.rows_affected())
    })?;
    Ok(done == 1)
}

/// Give a job back untried (graceful shutdown): the attempt is not counted.
pub async fn release_job(db: &Db, id: &str, owner: &str, now_us: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE jobs SET state = 'pending', attempts = attempts - 1, lease_owner = NULL, \
               lease_until_us = NULL, run_at_us = $1, updated_at_us = $1 \
               WHERE id = $2 AND lease_owner = $3 AND state = 'running'";
    let done = with_db!(db, pool => sqlx::query(sql).bind(now_us).bind(id).bind(owner).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

pub async fn count_jobs_by_state(db: &Db) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let sql = "SELECT state, COUNT(*) FROM jobs GROUP BY state";
    let rows: Vec<(String, i64)> = with_db!(db, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
    // Every state is reported, zero included, so a gauge drops back when a queue drains.
    Ok(super::STATES
        .iter()
        .map(|s| {
            let n = rows.iter().find(|(st, _)| st == s).map_or(0, |(_, n)| *n);
            ((*s).to_owned(), n)
        })
        .collect())
}

/// Jobs newest first (by creation, ties by id), after the `after` position when given.
pub async fn list_jobs(
    db: &Db,
    state: Option<&str>,
    kind: Option<&str>,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<Job>, sqlx::Error> {
    let (after_us, after_id) = after.unzip();
    // CAST gives the optional filters a type PostgreSQL can infer; SQLite reads it the same.
    let sql = format!(
        "SELECT {COLUMNS} FROM jobs WHERE (CAST($1 AS TEXT) IS NULL OR state = $1) \
         AND (CAST($2 AS TEXT) IS NULL OR kind = $2) \
         AND (CAST($3 AS BIGINT) IS NULL OR created_at_us < $3 OR (created_at_us = $3 AND id < $4)) \
         ORDER BY created_at_us DESC, id DESC LIMIT $5"
    );
    with_db!(db, pool => sqlx::query_as(&sql).bind(state).bind(kind).bind(after_us).bind(after_id).bind(limit).fetch_all(pool).await)
}

pub async fn get_job(db: &Db, id: &str) -> Result<Option<Job>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
    with_db!(db, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)
}

/// Put a dead job back in the queue with a fresh set of attempts, with the audit entry of
/// `who` in the same transaction.
pub async fn retry_dead_job(
    db: &Db,
    id: &str,
    now_us: i64,
    who: &crate::audit::Who,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE jobs SET state = 'pending', attempts = 0, run_at_us = $1, updated_at_us = $1, \
               finished_at_us = NULL WHERE id = $2 AND state = 'dead'";
    let mut tx = db.begin().await?;
    let done = crate::with_tx!(&mut tx, c => sqlx::query(sql).bind(now_us).bind(id).execute(c).await.map(|r| r.rows_affected()))?;
    if done == 1 {
        let detail = serde_json::json!({});
        let entry = who.entry("job.retry", None, Some(id), &detail);
        crate::audit::store::insert(&mut tx, &entry, now_us).await?;
    }
    tx.commit().await?;
    Ok(done == 1)
}
