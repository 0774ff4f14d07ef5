//! All SQL of the LTI tool: login states, dynamic registrations and their links, Deep
//! Linking requests, scores and their delivery, LTI 1.1 nonces.

use super::platforms::Platform;
use super::registration::LmsVendor;
use crate::db::{Db, Tx};
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
    Option<String>,
);

/// Approved dynamic registrations of `issuer` (and `client_id` when given).
pub async fn registered_platforms(
    db: &Db,
    issuer: &str,
    client_id: Option<&str>,
) -> anyhow::Result<Vec<Platform>> {
    let sql = "SELECT partner_id, issuer, client_id, deployment_id, auth_url, token_url, jwks_url, \
               token_audience, vendor, lti11_consumer_key FROM lti_platforms \
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
                lti11_consumer_key,
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
                lti11_consumer_key,
            },
        )
        .collect())
}

/// A Dynamic Registration link as stored (its secret is not: only its SHA-256).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkRow {
    pub id: String,
    pub partner_id: String,
    pub note: Option<String>,
    pub created_by: String,
    pub created_at_us: i64,
    pub expires_at_us: i64,
    pub used_at_us: Option<i64>,
    pub registration_id: Option<String>,
    pub revoked_at_us: Option<i64>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub last_error_at_us: Option<i64>,
    /// The LTI 1.1 consumer the registered platform replaces (migration claims).
    pub lti11_consumer_key: Option<String>,
}

const LINK_COLUMNS: &str = "id, partner_id, note, created_by, created_at_us, expires_at_us, used_at_us, \
                            registration_id, revoked_at_us, attempts, last_error, last_error_at_us, \
                            lti11_consumer_key";

pub async fn insert_link(db: &Db, link: &LinkRow, token_hash: &str) -> anyhow::Result<()> {
    let sql = "INSERT INTO lti_registration_links (id, token_hash, partner_id, note, created_by, \
               created_at_us, expires_at_us, lti11_consumer_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
    with_db!(db, pool => sqlx::query(sql)
        .bind(&link.id).bind(token_hash).bind(&link.partner_id).bind(&link.note)
        .bind(&link.created_by).bind(link.created_at_us).bind(link.expires_at_us)
        .bind(&link.lti11_consumer_key)
        .execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The link whose secret hashes to `token_hash`, whatever its state.
pub async fn link_by_hash(db: &Db, token_hash: &str) -> anyhow::Result<Option<LinkRow>> {
    let sql = format!("SELECT {LINK_COLUMNS} FROM lti_registration_links WHERE token_hash = $1");
    Ok(
        with_db!(db, pool => sqlx::query_as::<_, LinkRow>(&sql).bind(token_hash).fetch_optional(pool).await)?,
    )
}

pub async fn link(db: &Db, id: &str) -> anyhow::Result<Option<LinkRow>> {
    let sql = format!("SELECT {LINK_COLUMNS} FROM lti_registration_links WHERE id = $1");
    Ok(
        with_db!(db, pool => sqlx::query_as::<_, LinkRow>(&sql).bind(id).fetch_optional(pool).await)?,
    )
}

/// Links, newest first, of one partner or all.
pub async fn list_links(db: &Db, partner_id: Option<&str>) -> anyhow::Result<Vec<LinkRow>> {
    let sql = format!(
        "SELECT {LINK_COLUMNS} FROM lti_registration_links \
         WHERE (CAST($1 AS TEXT) IS NULL OR partner_id = $1) ORDER BY created_at_us DESC, id DESC"
    );
    Ok(
        with_db!(db, pool => sqlx::query_as::<_, LinkRow>(&sql).bind(partner_id).fetch_all(pool).await)?,
    )
}

/// Revoke a link nobody used yet; false when it was used or revoked already.
pub async fn revoke_link(db: &Db, id: &str, now_us: i64) -> anyhow::Result<bool> {
    let sql = "UPDATE lti_registration_links SET revoked_at_us = $2 \
               WHERE id = $1 AND used_at_us IS NULL AND revoked_at_us IS NULL";
    let n = with_db!(db, pool => sqlx::query(sql).bind(id).bind(now_us).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Keep why a registration through the link failed; `counted` adds it to the attempts (a
/// failure once the LMS was contacted).
pub async fn record_link_failure(
    db: &Db,
    id: &str,
    error: &str,
    counted: bool,
    now_us: i64,
) -> anyhow::Result<()> {
    let sql = "UPDATE lti_registration_links SET last_error = $2, last_error_at_us = $3, \
               attempts = attempts + $4 WHERE id = $1";
    let add: i64 = counted.into();
    with_db!(db, pool => sqlx::query(sql).bind(id).bind(error).bind(now_us).bind(add).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Spend the link for `registration_id` inside the registration's transaction: true for
/// the one caller that gets it while it is still usable.
pub async fn spend_link(
    tx: &mut Tx,
    id: &str,
    registration_id: &str,
    now_us: i64,
    max_attempts: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE lti_registration_links SET used_at_us = $3, registration_id = $2 \
               WHERE id = $1 AND used_at_us IS NULL AND revoked_at_us IS NULL \
               AND expires_at_us > $3 AND attempts < $4";
    let n = with_tx!(tx, c => sqlx::query(sql).bind(id).bind(registration_id).bind(now_us).bind(max_attempts).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// A platform registered through Dynamic Registration, as stored.
pub struct NewRegistration<'a> {
    pub id: &'a str,
    pub partner_id: &'a str,
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub deployment_id: &'a str,
    pub auth_url: &'a str,
    pub token_url: &'a str,
    pub jwks_url: &'a str,
    pub vendor: &'a str,
    /// pending or approved.
    pub status: &'a str,
    /// The platform's configuration and its answer, as JSON.
    pub registration: &'a str,
    pub link_id: &'a str,
    pub created_at_us: i64,
    /// From the link: the LTI 1.1 consumer this platform replaces.
    pub lti11_consumer_key: Option<&'a str>,
}

pub async fn insert_registration(tx: &mut Tx, r: &NewRegistration<'_>) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO lti_platforms (id, partner_id, issuer, client_id, deployment_id, auth_url, token_url, \
               jwks_url, token_audience, vendor, status, registration, created_at_us, link_id, \
               lti11_consumer_key) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10, $11, $12, $13, $14)";
    with_tx!(tx, c => sqlx::query(sql)
        .bind(r.id).bind(r.partner_id).bind(r.issuer).bind(r.client_id).bind(r.deployment_id)
        .bind(r.auth_url).bind(r.token_url).bind(r.jwks_url).bind(r.vendor).bind(r.status)
        .bind(r.registration).bind(r.created_at_us).bind(r.link_id).bind(r.lti11_consumer_key)
        .execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
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
    Option<i64>,
);

/// `GET /v1/scores/{score_id}`: where a score is.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ScoreStatus {
    pub score_id: String,
    pub launch_id: String,
    pub partner: String,
    pub user_id: String,
    /// pending (queued or being retried), delivered, failed (the LMS refused it for good),
    /// or unknown (the LMS refused a resend of it after an earlier attempt's answer was
    /// lost, and offers no way to read back what it holds: delivered or refused, unknown;
    /// check the gradebook).
    pub status: String,
    /// Sends so far, including one whose answer was lost.
    pub attempts: i64,
    /// The line item it went to, once known.
    pub line_item: Option<String>,
    /// The LMS's last HTTP status; null when the last attempt did not reach it (network
    /// error, timeout, token failure: `last_error` says which).
    pub last_status: Option<i64>,
    /// Why the last attempt did not deliver it, in the LMS's words where it gave any (Moodle
    /// gives them in the HTTP status line); for a score delivered after a refused resend,
    /// how that was known.
    pub last_error: Option<String>,
    /// When a pending score is tried next (RFC 3339, UTC); null while it is being sent or
    /// once settled.
    pub next_attempt_at: Option<String>,
    /// The score's timestamp as sent to the LMS: a resend carries the same one.
    pub timestamp: String,
    pub delivered_at: Option<String>,
}

/// A score's delivery status as the API shows it, with its partner (for the caller check).
pub async fn score_status(
    db: &Db,
    score_id: &str,
) -> anyhow::Result<Option<(String, ScoreStatus)>> {
    // The score's job (dedupe key `lti.score:{id}`) knows when it runs next.
    let sql = "SELECT s.id, s.launch_id, s.partner_id, s.user_id, s.status, s.attempts, s.line_item, \
               s.last_status, s.last_error, s.timestamp_us, s.delivered_at_us, \
               (SELECT j.run_at_us FROM jobs j WHERE j.dedupe_key = 'lti.score:' || s.id \
                AND j.state = 'pending') \
               FROM lti_scores s WHERE s.id = $1";
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
            next_run,
        )| {
            let status_pending = status == "pending";
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
                timestamp: crate::time::rfc3339(crate::time::from_micros(ts)),
                delivered_at: delivered.map(|d| crate::time::rfc3339(crate::time::from_micros(d))),
                next_attempt_at: next_run
                    .filter(|_| status_pending)
                    .map(|n| crate::time::rfc3339(crate::time::from_micros(n))),
            };
            (partner_id, view)
        },
    ))
}

// Scores (`lti_scores`): a series is one user's scores for one line item, numbered in the
// order they were given; the `lti.score` job delivers them in that order.

/// A score to store, pending delivery.
pub struct NewScore<'a> {
    pub id: &'a str,
    pub launch_id: &'a str,
    pub partner_id: &'a str,
    pub series: &'a str,
    pub seq: i64,
    pub user_id: &'a str,
    /// The score's JSON as it will be sent.
    pub payload: &'a str,
    pub timestamp_us: i64,
    pub created_at_us: i64,
    /// The launch the app posted it on, when it goes through another (newer) launch.
    pub posted_launch_id: Option<&'a str>,
}

/// Store a pending score; a unique violation means a concurrent score took `seq`.
pub async fn insert_score(tx: &mut Tx, s: &NewScore<'_>) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO lti_scores (id, launch_id, partner_id, series, seq, user_id, score, \
               timestamp_us, status, created_at_us, posted_launch_id) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10)";
    with_tx!(tx, c => {
        sqlx::query(sql)
            .bind(s.id).bind(s.launch_id).bind(s.partner_id).bind(s.series).bind(s.seq)
            .bind(s.user_id).bind(s.payload).bind(s.timestamp_us).bind(s.created_at_us)
            .bind(s.posted_launch_id)
            .execute(c).await.map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// What the delivery job reads of a score.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScoreToSend {
    pub launch_id: String,
    pub series: String,
    pub status: String,
    pub seq: i64,
    /// The score's JSON as stored.
    pub payload: String,
    pub timestamp_us: i64,
    pub attempts: i64,
    /// The line item it went to, once known.
    pub line_item: Option<String>,
}

pub async fn score_to_send(db: &Db, id: &str) -> Result<Option<ScoreToSend>, sqlx::Error> {
    let sql = "SELECT launch_id, series, status, seq, score AS payload, timestamp_us, attempts, \
               line_item FROM lti_scores WHERE id = $1";
    with_db!(db, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)
}

/// How many scores before `seq` in the series are still pending.
pub async fn pending_before(db: &Db, series: &str, seq: i64) -> Result<i64, sqlx::Error> {
    let sql =
        "SELECT COUNT(*) FROM lti_scores WHERE series = $1 AND seq < $2 AND status = 'pending'";
    with_db!(db, pool => sqlx::query_scalar(sql).bind(series).bind(seq).fetch_one(pool).await)
}

/// Count one more send of a score (before it goes, so a lost answer still counts).
pub async fn bump_attempts(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    let sql = "UPDATE lti_scores SET attempts = attempts + 1 WHERE id = $1";
    with_db!(db, pool => sqlx::query(sql).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn set_line_item(db: &Db, id: &str, line_item: &str) -> Result<(), sqlx::Error> {
    let sql = "UPDATE lti_scores SET line_item = $2 WHERE id = $1";
    with_db!(db, pool => sqlx::query(sql).bind(id).bind(line_item).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Keep the last failed attempt's LMS status (none when it was not reached) and reason.
pub async fn note_failure(
    db: &Db,
    id: &str,
    status: Option<u16>,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let sql = "UPDATE lti_scores SET last_status = $2, last_error = $3 WHERE id = $1";
    with_db!(db, pool => sqlx::query(sql).bind(id).bind(status.map(i64::from)).bind(reason).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Settle a pending score as `outcome` (failed, unknown) with the LMS's last answer.
pub async fn settle_score(
    tx: &mut Tx,
    id: &str,
    status: u16,
    reason: &str,
    outcome: &str,
) -> Result<(), sqlx::Error> {
    let sql = "UPDATE lti_scores SET last_status = $2, last_error = $3, status = $4 \
               WHERE id = $1 AND status = 'pending'";
    with_tx!(tx, c => sqlx::query(sql).bind(id).bind(i64::from(status)).bind(reason).bind(outcome).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Mark a score delivered at `at_us`; `note` says how it was known when not from a 2xx.
pub async fn mark_delivered(
    tx: &mut Tx,
    id: &str,
    at_us: i64,
    status: u16,
    note: Option<&str>,
) -> Result<(), sqlx::Error> {
    let sql = "UPDATE lti_scores SET status = 'delivered', delivered_at_us = $2, last_status = $3, \
               last_error = $4 WHERE id = $1";
    with_tx!(tx, c => sqlx::query(sql).bind(id).bind(at_us).bind(i64::from(status)).bind(note).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

// Deep Linking requests (`lti_deep_links`): the settings a platform sent, kept while the
// user picks content from the tool's own picker, spent once.

pub struct NewDeepLink<'a> {
    pub id: &'a str,
    pub partner_id: &'a str,
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub deployment_id: &'a str,
    /// The platform's `deep_linking_settings` claim, as JSON.
    pub settings: &'a str,
    pub created_at_us: i64,
    pub expires_at_us: i64,
}

pub async fn insert_deep_link(db: &Db, d: &NewDeepLink<'_>) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO lti_deep_links (id, partner_id, issuer, client_id, deployment_id, settings, \
               created_at_us, expires_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
    with_db!(db, pool => {
        sqlx::query(sql)
            .bind(d.id).bind(d.partner_id).bind(d.issuer).bind(d.client_id).bind(d.deployment_id)
            .bind(d.settings).bind(d.created_at_us).bind(d.expires_at_us)
            .execute(pool).await.map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// A stored Deep Linking request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeepLink {
    pub partner_id: String,
    pub issuer: String,
    pub client_id: String,
    pub deployment_id: String,
    pub settings: String,
    pub expires_at_us: i64,
    pub used_at_us: Option<i64>,
}

/// The request `id`, read inside the transaction that will spend it.
pub async fn deep_link(tx: &mut Tx, id: &str) -> Result<Option<DeepLink>, sqlx::Error> {
    let sql = "SELECT partner_id, issuer, client_id, deployment_id, settings, expires_at_us, used_at_us \
               FROM lti_deep_links WHERE id = $1";
    with_tx!(tx, c => sqlx::query_as(sql).bind(id).fetch_optional(c).await)
}

/// Spend the request; false when it was already spent.
pub async fn spend_deep_link(tx: &mut Tx, id: &str, now_us: i64) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE lti_deep_links SET used_at_us = $2 WHERE id = $1 AND used_at_us IS NULL";
    let n = with_tx!(tx, c => sqlx::query(sql).bind(id).bind(now_us).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

// Dynamic registrations awaiting an admin (`lti_platforms` rows with a status).

/// A dynamic registration as admins list it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RegistrationRow {
    pub id: String,
    pub partner_id: String,
    pub issuer: String,
    pub client_id: String,
    pub deployment_id: String,
    pub vendor: String,
    pub status: String,
    pub link_id: Option<String>,
    pub created_at_us: i64,
    pub decided_at_us: Option<i64>,
}

/// Registrations, oldest first, with `status` when given.
pub async fn registrations(
    db: &Db,
    status: Option<&str>,
) -> Result<Vec<RegistrationRow>, sqlx::Error> {
    let sql = "SELECT id, partner_id, issuer, client_id, deployment_id, vendor, status, link_id, \
               created_at_us, decided_at_us FROM lti_platforms \
               WHERE (CAST($1 AS TEXT) IS NULL OR status = $1) ORDER BY created_at_us";
    with_db!(db, pool => sqlx::query_as(sql).bind(status).fetch_all(pool).await)
}

/// Approve or reject a pending registration; false when there is none pending with `id`.
pub async fn decide_registration(
    db: &Db,
    id: &str,
    status: &str,
    now_us: i64,
    who: &crate::audit::Who,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE lti_platforms SET status = $2, decided_at_us = $3 WHERE id = $1 AND status = 'pending' \
               RETURNING partner_id";
    let mut tx = db.begin().await?;
    let partner: Option<String> = crate::with_tx!(&mut tx, c => sqlx::query_scalar(sql).bind(id).bind(status).bind(now_us).fetch_optional(c).await)?;
    if let Some(p) = &partner {
        let detail = serde_json::json!({ "status": status });
        let action = if status == "approved" {
            "lti.registration.approve"
        } else {
            "lti.registration.reject"
        };
        let entry = who.entry(action, Some(p), Some(id), &detail);
        crate::audit::store::insert(&mut tx, &entry, now_us).await?;
    }
    tx.commit().await?;
    Ok(partner.is_some())
}

// LTI 1.1 nonces (`lti11_nonces`): one OAuth 1.0a nonce per consumer key within the window.

/// Record the nonce; false when it was seen already. Nonces older than `forget_before_us`
/// are dropped first.
pub async fn record_lti11_nonce(
    db: &Db,
    key: &str,
    nonce: &str,
    now_us: i64,
    forget_before_us: i64,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let purge = "DELETE FROM lti11_nonces WHERE seen_at_us < $1";
    with_tx!(&mut tx, c => sqlx::query(purge).bind(forget_before_us).execute(c).await.map(|r| r.rows_affected()))?;
    let insert = "INSERT INTO lti11_nonces (consumer_key, nonce, seen_at_us) VALUES ($1, $2, $3) \
                  ON CONFLICT DO NOTHING";
    let inserted = with_tx!(&mut tx, c => {
        sqlx::query(insert).bind(key).bind(nonce).bind(now_us).execute(c).await.map(|r| r.rows_affected())
    })?;
    tx.commit().await?;
    Ok(inserted == 1)
}

/// The person an LTI identity (`namespace`, `user_id`) of `partner` belongs to.
pub async fn identity_person(
    tx: &mut Tx,
    partner: &str,
    namespace: &str,
    user_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let sql = "SELECT person_id FROM lti_identities \
               WHERE partner_id = $1 AND namespace = $2 AND user_id = $3";
    with_tx!(tx, c => sqlx::query_scalar(sql).bind(partner).bind(namespace).bind(user_id).fetch_optional(c).await)
}

/// Put an identity under `person`: a new identity is added, a known one moved (`relinked_at`).
pub async fn link_identity(
    tx: &mut Tx,
    partner: &str,
    namespace: &str,
    user_id: &str,
    person: &str,
    now_us: i64,
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO lti_identities (partner_id, namespace, user_id, person_id, created_at_us) \
               VALUES ($1, $2, $3, $4, $5) \
               ON CONFLICT (partner_id, namespace, user_id) DO UPDATE \
               SET person_id = excluded.person_id, relinked_at_us = excluded.created_at_us \
               WHERE lti_identities.person_id <> excluded.person_id";
    with_tx!(tx, c => sqlx::query(sql).bind(partner).bind(namespace).bind(user_id).bind(person).bind(now_us).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Every identity of `person`, as (namespace, user id), oldest first.
pub async fn person_identities(
    tx: &mut Tx,
    partner: &str,
    person: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let sql = "SELECT namespace, user_id FROM lti_identities WHERE partner_id = $1 AND person_id = $2 \
               ORDER BY created_at_us, namespace, user_id";
    with_tx!(tx, c => sqlx::query_as(sql).bind(partner).bind(person).fetch_all(c).await)
}

/// Note `launch_id` as the newest launch of `person` in `link` (an older one never
/// replaces a newer one).
pub async fn note_person_link(
    tx: &mut Tx,
    partner: &str,
    person: &str,
    link: &str,
    launch_id: &str,
    launched_at_us: i64,
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO lti_person_links (partner_id, person_id, link_key, launch_id, launched_at_us) \
               VALUES ($1, $2, $3, $4, $5) \
               ON CONFLICT (partner_id, person_id, link_key) DO UPDATE \
               SET launch_id = excluded.launch_id, launched_at_us = excluded.launched_at_us \
               WHERE excluded.launched_at_us >= lti_person_links.launched_at_us";
    with_tx!(tx, c => sqlx::query(sql).bind(partner).bind(person).bind(link).bind(launch_id).bind(launched_at_us).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The newest launch of `person` in `link`.
pub async fn newest_person_link(
    db: &Db,
    partner: &str,
    person: &str,
    link: &str,
) -> Result<Option<String>, sqlx::Error> {
    let sql = "SELECT launch_id FROM lti_person_links \
               WHERE partner_id = $1 AND person_id = $2 AND link_key = $3";
    with_db!(db, pool => sqlx::query_scalar(sql).bind(partner).bind(person).bind(link).fetch_optional(pool).await)
}

/// The last score of a series as stored (a series is one user's scores for one line item).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LastScore {
    pub id: String,
    /// Its number in the series, and the timestamp it carries.
    pub seq: i64,
    pub timestamp_us: i64,
    pub payload: String,
    pub status: String,
    /// The launch the app posted it on (its own launch unless it was routed to another).
    pub posted_on: String,
}

pub async fn last_score(tx: &mut Tx, series: &str) -> Result<Option<LastScore>, sqlx::Error> {
    let sql = "SELECT id, seq, timestamp_us, score AS payload, status, \
               COALESCE(posted_launch_id, launch_id) AS posted_on \
               FROM lti_scores WHERE series = $1 ORDER BY seq DESC LIMIT 1";
    with_tx!(tx, c => sqlx::query_as(sql).bind(series).fetch_optional(c).await)
}
