//! The console's SQL: sessions and single-use sign-in links.

use crate::db::{Db, Tx};
use crate::{with_db, with_tx};

/// A session as the console reads it on every request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id_hash: String,
    pub person: String,
    pub display_name: String,
    pub email: Option<String>,
    pub role: String,
    pub partner_id: Option<String>,
    pub via: String,
    pub csrf: String,
    pub created_at_us: i64,
    pub last_seen_at_us: i64,
    pub expires_at_us: i64,
    pub ended_at_us: Option<i64>,
}

const SESSION_COLUMNS: &str = "id_hash, person, display_name, email, role, partner_id, via, \
                               csrf, created_at_us, last_seen_at_us, expires_at_us, ended_at_us";

pub async fn insert_session(tx: &mut Tx, s: &SessionRow) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO console_sessions ({SESSION_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    );
    with_tx!(tx, c => sqlx::query(&sql)
        .bind(&s.id_hash)
        .bind(&s.person)
        .bind(&s.display_name)
        .bind(&s.email)
        .bind(&s.role)
        .bind(&s.partner_id)
        .bind(&s.via)
        .bind(&s.csrf)
        .bind(s.created_at_us)
        .bind(s.last_seen_at_us)
        .bind(s.expires_at_us)
        .bind(s.ended_at_us)
        .execute(c)
        .await
        .map(|_| ()))
}

pub async fn session(db: &Db, id_hash: &str) -> anyhow::Result<Option<SessionRow>> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM console_sessions WHERE id_hash = $1");
    Ok(with_db!(db, c => sqlx::query_as::<_, SessionRow>(&sql)
        .bind(id_hash)
        .fetch_optional(c)
        .await)?)
}

/// Note that the session was used (the idle timeout counts from here), unless it ended.
pub async fn touch_session(db: &Db, id_hash: &str, now_us: i64) -> anyhow::Result<()> {
    let sql = "UPDATE console_sessions SET last_seen_at_us = $2 \
               WHERE id_hash = $1 AND ended_at_us IS NULL AND last_seen_at_us < $2";
    with_db!(db, c => sqlx::query(sql).bind(id_hash).bind(now_us).execute(c).await.map(|_| ()))?;
    Ok(())
}

/// End one session; whether it was open.
pub async fn end_session(tx: &mut Tx, id_hash: &str, now_us: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE console_sessions SET ended_at_us = $2 \
               WHERE id_hash = $1 AND ended_at_us IS NULL";
    with_tx!(tx, c => sqlx::query(sql).bind(id_hash).bind(now_us).execute(c).await
        .map(|r| r.rows_affected() > 0))
}

/// End every open session of `person`; how many.
pub async fn end_sessions_of(tx: &mut Tx, person: &str, now_us: i64) -> Result<u64, sqlx::Error> {
    let sql = "UPDATE console_sessions SET ended_at_us = $2 \
               WHERE person = $1 AND ended_at_us IS NULL";
    with_tx!(tx, c => sqlx::query(sql).bind(person).bind(now_us).execute(c).await
        .map(|r| r.rows_affected()))
}

/// A sign-in link: an invitation or a break-glass link.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkRow {
    pub id: String,
    pub token_hash: String,
    pub kind: String,
    pub role: String,
    pub partner_id: Option<String>,
    pub email: Option<String>,
    pub created_by: String,
    pub created_at_us: i64,
    pub expires_at_us: i64,
    pub used_at_us: Option<i64>,
    pub revoked_at_us: Option<i64>,
}

const LINK_COLUMNS: &str = "id, token_hash, kind, role, partner_id, email, created_by, \
                            created_at_us, expires_at_us, used_at_us, revoked_at_us";

pub async fn insert_link(tx: &mut Tx, l: &LinkRow) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO console_links ({LINK_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    );
    with_tx!(tx, c => sqlx::query(&sql)
        .bind(&l.id)
        .bind(&l.token_hash)
        .bind(&l.kind)
        .bind(&l.role)
        .bind(&l.partner_id)
        .bind(&l.email)
        .bind(&l.created_by)
        .bind(l.created_at_us)
        .bind(l.expires_at_us)
        .bind(l.used_at_us)
        .bind(l.revoked_at_us)
        .execute(c)
        .await
        .map(|_| ()))
}

pub async fn link(db: &Db, token_hash: &str) -> anyhow::Result<Option<LinkRow>> {
    let sql = format!("SELECT {LINK_COLUMNS} FROM console_links WHERE token_hash = $1");
    Ok(with_db!(db, c => sqlx::query_as::<_, LinkRow>(&sql)
        .bind(token_hash)
        .fetch_optional(c)
        .await)?)
}

/// Spend a link: once, before it expires, unless revoked. The spending UPDATE is the check,
/// so two browsers redeeming the same link at once cannot both win.
pub async fn spend_link(tx: &mut Tx, token_hash: &str, now_us: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE console_links SET used_at_us = $2 WHERE token_hash = $1 \
               AND used_at_us IS NULL AND revoked_at_us IS NULL AND expires_at_us > $2";
    with_tx!(tx, c => sqlx::query(sql).bind(token_hash).bind(now_us).execute(c).await
        .map(|r| r.rows_affected() == 1))
}

/// Invitations (newest first), of one partner or all.
pub async fn invitations(
    db: &Db,
    partner: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<LinkRow>> {
    let sql = format!(
        "SELECT {LINK_COLUMNS} FROM console_links WHERE kind = 'invitation' \
         AND ($1 IS NULL OR partner_id = $1) ORDER BY created_at_us DESC, id DESC LIMIT $2"
    );
    Ok(with_db!(db, c => sqlx::query_as::<_, LinkRow>(&sql)
        .bind(partner)
        .bind(limit)
        .fetch_all(c)
        .await)?)
}

/// Revoke an unused link; whether it was open.
pub async fn revoke_link(
    tx: &mut Tx,
    id: &str,
    partner: Option<&str>,
    now_us: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE console_links SET revoked_at_us = $3 WHERE id = $1 \
               AND ($2 IS NULL OR partner_id = $2) AND used_at_us IS NULL AND revoked_at_us IS NULL";
    with_tx!(tx, c => sqlx::query(sql).bind(id).bind(partner).bind(now_us).execute(c).await
        .map(|r| r.rows_affected() == 1))
}

/// What the partners overview shows of one partner.
#[derive(Debug, Clone, Default)]
pub struct PartnerFacts {
    pub last_launch_us: Option<i64>,
    pub last_event_us: Option<i64>,
    pub failing_endpoints: i64,
    pub disabled_endpoints: i64,
    pub pending_registrations: i64,
    pub failed_scores: i64,
}

/// The overview's facts of `partner`: each an index lookup or a count over small tables.
pub async fn partner_facts(db: &Db, partner: &str) -> anyhow::Result<PartnerFacts> {
    let last_launch = "SELECT MAX(created_at_us) FROM launches WHERE partner_id = $1";
    let last_event = "SELECT MAX(time_us) FROM usage_events WHERE partner_id = $1";
    let endpoints = "SELECT \
         COALESCE(SUM(CASE WHEN enabled AND failing_since_us IS NOT NULL THEN 1 ELSE 0 END), 0), \
         COALESCE(SUM(CASE WHEN NOT enabled THEN 1 ELSE 0 END), 0) \
         FROM webhook_endpoints WHERE partner_id = $1 AND deleted_at_us IS NULL";
    let pending = "SELECT COUNT(*) FROM lti_platforms WHERE partner_id = $1 AND status = 'pending'";
    let failed = "SELECT COUNT(*) FROM lti_scores WHERE partner_id = $1 AND status = 'failed'";
    let facts = with_db!(db, c => {
        let launch: Option<i64> = sqlx::query_scalar(last_launch).bind(partner).fetch_one(c).await?;
        let event: Option<i64> = sqlx::query_scalar(last_event).bind(partner).fetch_one(c).await?;
        let (failing, disabled): (i64, i64) = sqlx::query_as(endpoints).bind(partner).fetch_one(c).await?;
        let pending: i64 = sqlx::query_scalar(pending).bind(partner).fetch_one(c).await?;
        let failed: i64 = sqlx::query_scalar(failed).bind(partner).fetch_one(c).await?;
        Ok::<PartnerFacts, sqlx::Error>(PartnerFacts {
            last_launch_us: launch,
            last_event_us: event,
            failing_endpoints: failing,
            disabled_endpoints: disabled,
            pending_registrations: pending,
            failed_scores: failed,
        })
    })?;
    Ok(facts)
}

/// A period run's row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: String,
    pub period: String,
    pub started_by: String,
    pub started_at_us: i64,
    pub done: i64,
    pub total: i64,
    pub updated_at_us: i64,
    pub finished_at_us: Option<i64>,
    pub failures: Option<String>,
}

pub async fn insert_run(db: &Db, r: &RunRow) -> anyhow::Result<()> {
    let sql = "INSERT INTO statement_runs (id, period, started_by, started_at_us, done, total, \
               updated_at_us, finished_at_us, failures) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)";
    with_db!(db, c => sqlx::query(sql)
        .bind(&r.id).bind(&r.period).bind(&r.started_by).bind(r.started_at_us)
        .bind(r.done).bind(r.total).bind(r.updated_at_us)
        .execute(c).await.map(|_| ()))?;
    Ok(())
}

pub async fn run_progress(db: &Db, id: &str, done: i64, now_us: i64) -> anyhow::Result<()> {
    let sql = "UPDATE statement_runs SET done = $2, updated_at_us = $3 WHERE id = $1";
    with_db!(db, c => sqlx::query(sql).bind(id).bind(done).bind(now_us).execute(c).await.map(|_| ()))?;
    Ok(())
}

pub async fn finish_run(
    db: &Db,
    id: &str,
    done: i64,
    failures: &str,
    now_us: i64,
) -> anyhow::Result<()> {
    let sql = "UPDATE statement_runs SET done = $2, updated_at_us = $4, finished_at_us = $4, \
               failures = $3 WHERE id = $1";
    with_db!(db, c => sqlx::query(sql).bind(id).bind(done).bind(failures).bind(now_us)
        .execute(c).await.map(|_| ()))?;
    Ok(())
}

/// The newest run of a period.
pub async fn latest_run(db: &Db, period: &str) -> anyhow::Result<Option<RunRow>> {
    let sql = "SELECT id, period, started_by, started_at_us, done, total, updated_at_us, \
               finished_at_us, failures FROM statement_runs WHERE period = $1 \
               ORDER BY started_at_us DESC, id DESC LIMIT 1";
    Ok(with_db!(db, c => sqlx::query_as::<_, RunRow>(sql).bind(period).fetch_optional(c).await)?)
}
