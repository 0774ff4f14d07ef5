//! SQL for webhooks: endpoints and their secrets, messages, deliveries and attempts.
//!
//! Lists of ids and batches of results travel as one JSON text parameter on both backends
//! (SQLite `json_each`, PostgreSQL `jsonb_array_elements_text` / `jsonb_to_recordset`), so
//! each statement has one shape whatever the batch size.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::db::{Backend, Db, Tx};
use crate::time::{from_micros, to_micros};
use crate::{with_db, with_tx};

/// `IN (...)` over the JSON array bound at `$n`, for `cast` values (`text`, `bigint`).
fn in_json(backend: Backend, n: usize, cast: &str) -> String {
    match backend {
        Backend::Sqlite => format!("IN (SELECT value FROM json_each(${n}))"),
        Backend::Postgres => format!("IN (SELECT jsonb_array_elements_text(${n}::jsonb)::{cast})"),
    }
}

fn json_list<T: Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

// ---------------------------------------------------------------------------------------
// Messages and fan-out

/// Write a message and one pending delivery, due now, for every enabled endpoint that hears
/// it: the partner's own and the app's (`partner_id` None: the app's only), whose type filter
/// matches (`endpoint::filter_matches`, here in SQL: no filter, an exact type, or a
/// `prefix.*` matching `prefix.` + more). PostgreSQL does both in one statement (a
/// data-modifying CTE), SQLite in two: the emitting transaction pays one or two round trips.
/// Returns the number of deliveries.
/// A message with no delivery yet (a test message: its one delivery is added by
/// [`replay_message`] for the endpoint asked for).
pub async fn insert_message(
    tx: &mut Tx,
    id: &str,
    partner_id: Option<&str>,
    event_type: &str,
    payload: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO webhook_messages (id, partner_id, type, created_at_us, payload) \
               VALUES ($1, $2, $3, $4, $5)";
    with_tx!(tx, c => sqlx::query(sql)
        .bind(id)
        .bind(partner_id)
        .bind(event_type)
        .bind(to_micros(now))
        .bind(payload)
        .execute(c)
        .await
        .map(|_| ()))
}

pub async fn insert_message_and_fan_out(
    tx: &mut Tx,
    id: &str,
    partner_id: Option<&str>,
    event_type: &str,
    payload: &str,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    const MESSAGE: &str = "INSERT INTO webhook_messages (id, partner_id, type, created_at_us, payload) \
                           VALUES ($1, $2, $3, $4, $5)";
    let (types, message_cte, from) = match tx.backend() {
        Backend::Sqlite => (
            "json_each(e.event_types)",
            String::new(),
            "webhook_endpoints e",
        ),
        Backend::Postgres => (
            "jsonb_array_elements_text(e.event_types::jsonb) AS f(value)",
            format!("WITH m AS ({MESSAGE} RETURNING id) "),
            "webhook_endpoints e CROSS JOIN m",
        ),
    };
    let fan_out = format!(
        "{message_cte}INSERT INTO webhook_deliveries (message_id, endpoint_id, state, attempts, \
         next_at_us, created_at_us, updated_at_us) \
         SELECT $1, e.id, 'pending', 0, $4, $4, $4 FROM {from} \
         WHERE e.enabled AND e.deleted_at_us IS NULL \
           AND (e.partner_id IS NULL OR e.partner_id = $2) \
           AND (NOT EXISTS (SELECT 1 FROM {types}) \
                OR EXISTS (SELECT 1 FROM {types} WHERE value = $3 \
                   OR (substr(value, length(value) - 1) = '.*' \
                       AND length($3) >= length(value) - 1 \
                       AND substr($3, 1, length(value) - 1) = substr(value, 1, length(value) - 1)))) \
         ORDER BY e.id"
    );
    let at = to_micros(now);
    let n = match tx {
        Tx::Sqlite(c) => {
            sqlx::query(MESSAGE)
                .bind(id)
                .bind(partner_id)
                .bind(event_type)
                .bind(at)
                .bind(payload)
                .execute(&mut **c)
                .await?;
            sqlx::query(&fan_out)
                .bind(id)
                .bind(partner_id)
                .bind(event_type)
                .bind(at)
                .execute(&mut **c)
                .await?
                .rows_affected()
        }
        Tx::Postgres(c) => sqlx::query(&fan_out)
            .bind(id)
            .bind(partner_id)
            .bind(event_type)
            .bind(at)
            .bind(payload)
            .execute(&mut **c)
            .await?
            .rows_affected(),
    };
    Ok(n)
}

// ---------------------------------------------------------------------------------------
// Endpoints

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointRow {
    pub id: String,
    pub partner_id: Option<String>,
    pub url: String,
    pub description: String,
    pub event_types: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub rate_limit: Option<i32>,
    pub ordered: bool,
    pub scheme: String,
    pub failing_since_us: Option<i64>,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

const ENDPOINT_COLUMNS: &str = "id, partner_id, url, description, event_types, enabled, \
    disabled_reason, rate_limit, ordered, scheme, failing_since_us, created_at_us, updated_at_us";

pub async fn insert_endpoint(tx: &mut Tx, e: &EndpointRow) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    );
    with_tx!(tx, c => sqlx::query(&sql)
        .bind(&e.id)
        .bind(&e.partner_id)
        .bind(&e.url)
        .bind(&e.description)
        .bind(&e.event_types)
        .bind(e.enabled)
        .bind(&e.disabled_reason)
        .bind(e.rate_limit)
        .bind(e.ordered)
        .bind(&e.scheme)
        .bind(e.failing_since_us)
        .bind(e.created_at_us)
        .bind(e.updated_at_us)
        .execute(c)
        .await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// How many live endpoints a partner has (`None`: the company's app).
pub async fn count_endpoints(tx: &mut Tx, partner: Option<&str>) -> Result<i64, sqlx::Error> {
    let sql = "SELECT COUNT(*) FROM webhook_endpoints WHERE deleted_at_us IS NULL \
               AND ((CAST($1 AS TEXT) IS NULL AND partner_id IS NULL) OR partner_id = $1)";
    with_tx!(tx, c => sqlx::query_scalar(sql).bind(partner).fetch_one(c).await)
}

/// One live endpoint's deliveries waiting (pending or in flight) and given up, for the
/// metrics.
pub struct Backlog {
    pub partner_id: Option<String>,
    pub endpoint_id: String,
    pub pending: i64,
    pub failed: i64,
}

/// Every live endpoint's [`Backlog`], zeros included (read from the endpoint index).
pub async fn delivery_backlog(db: &Db) -> Result<Vec<Backlog>, sqlx::Error> {
    let sql = "SELECT e.partner_id, e.id, \
               COALESCE(SUM(CASE WHEN d.state IN ('pending', 'sending') THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN d.state = 'failed' THEN 1 ELSE 0 END), 0) \
               FROM webhook_endpoints e LEFT JOIN webhook_deliveries d ON d.endpoint_id = e.id \
               AND d.state IN ('pending', 'sending', 'failed') \
               WHERE e.deleted_at_us IS NULL GROUP BY e.partner_id, e.id";
    let rows: Vec<(Option<String>, String, i64, i64)> =
        with_db!(db, c => sqlx::query_as(sql).fetch_all(c).await)?;
    Ok(rows
        .into_iter()
        .map(|(partner_id, endpoint_id, pending, failed)| Backlog {
            partner_id,
            endpoint_id,
            pending,
            failed,
        })
        .collect())
}

/// A live (not deleted) endpoint.
pub async fn get_endpoint(db: &Db, id: &str) -> Result<Option<EndpointRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND deleted_at_us IS NULL"
    );
    with_db!(db, c => sqlx::query_as(&sql).bind(id).fetch_optional(c).await)
}

/// Which endpoints a list shows.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    All,
    Partner(&'a str),
    App,
}

pub async fn list_endpoints(db: &Db, owner: Owner<'_>) -> Result<Vec<EndpointRow>, sqlx::Error> {
    let (partner, app_only) = match owner {
        Owner::All => (None, false),
        Owner::Partner(p) => (Some(p), false),
        Owner::App => (None, true),
    };
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE deleted_at_us IS NULL \
         AND (CAST($1 AS TEXT) IS NULL OR partner_id = $1) AND (NOT $2 OR partner_id IS NULL) \
         ORDER BY created_at_us, id"
    );
    with_db!(db, c => sqlx::query_as(&sql).bind(partner).bind(app_only).fetch_all(c).await)
}

/// Write the endpoint's editable fields back.
pub async fn update_endpoint(tx: &mut Tx, e: &EndpointRow) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE webhook_endpoints SET url = $2, description = $3, event_types = $4, enabled = $5, \
               disabled_reason = $6, rate_limit = $7, ordered = $8, failing_since_us = $9, updated_at_us = $10 \
               WHERE id = $1 AND deleted_at_us IS NULL";
    let n = with_tx!(tx, c => sqlx::query(sql)
        .bind(&e.id)
        .bind(&e.url)
        .bind(&e.description)
        .bind(&e.event_types)
        .bind(e.enabled)
        .bind(&e.disabled_reason)
        .bind(e.rate_limit)
        .bind(e.ordered)
        .bind(e.failing_since_us)
        .bind(e.updated_at_us)
        .execute(c)
        .await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Delete an endpoint: it stops hearing events and its open deliveries are cancelled; the
/// row stays for the attempt log.
pub async fn delete_endpoint(
    tx: &mut Tx,
    id: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let now = to_micros(now);
    let sql = "UPDATE webhook_endpoints SET deleted_at_us = $2, enabled = FALSE, updated_at_us = $2 \
               WHERE id = $1 AND deleted_at_us IS NULL";
    let n = with_tx!(tx, c => sqlx::query(sql).bind(id).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
    let cancel = "UPDATE webhook_deliveries SET state = 'cancelled', lease_owner = NULL, \
                  last_error = 'endpoint deleted', finished_at_us = $2, updated_at_us = $2 \
                  WHERE endpoint_id = $1 AND state IN ('pending', 'sending')";
    with_tx!(tx, c => sqlx::query(cancel).bind(id).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Disable an endpoint with a reason; false when it was already disabled or gone.
pub async fn disable_endpoint(
    tx: &mut Tx,
    id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $2, updated_at_us = $3 \
               WHERE id = $1 AND enabled AND deleted_at_us IS NULL";
    let n = with_tx!(tx, c => sqlx::query(sql).bind(id).bind(reason).bind(to_micros(now)).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// After a batch of attempts: each endpoint's health. `Some(t)`: failing since `t` (kept if
/// already failing earlier); `None`: the latest attempt succeeded. Returns the endpoints
/// still enabled with their (possibly older) failing-since instant.
pub async fn set_failing_since(
    tx: &mut Tx,
    updates: &[(String, Option<i64>)],
) -> Result<Vec<(String, Option<i64>)>, sqlx::Error> {
    let mut out = Vec::with_capacity(updates.len());
    for (id, since) in updates {
        let sql = match since {
            Some(_) => {
                "UPDATE webhook_endpoints SET failing_since_us = COALESCE(failing_since_us, $2) \
                 WHERE id = $1 AND enabled AND deleted_at_us IS NULL RETURNING id, failing_since_us"
            }
            None => {
                "UPDATE webhook_endpoints SET failing_since_us = NULL \
                 WHERE id = $1 AND failing_since_us IS NOT NULL AND CAST($2 AS BIGINT) IS NULL \
                 RETURNING id, failing_since_us"
            }
        };
        let row: Option<(String, Option<i64>)> =
            with_tx!(tx, c => sqlx::query_as(sql).bind(id).bind(*since).fetch_optional(c).await)?;
        if let (Some(row), Some(_)) = (row, since) {
            out.push(row);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Secrets

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecretRow {
    pub endpoint_id: String,
    pub version: i32,
    pub scheme: String,
    pub sealed: String,
    pub public_key: Option<String>,
    pub created_at_us: i64,
    pub retire_at_us: Option<i64>,
}

pub async fn insert_secret(tx: &mut Tx, s: &SecretRow) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO webhook_secrets (endpoint_id, version, scheme, sealed, public_key, created_at_us, retire_at_us) \
               VALUES ($1, $2, $3, $4, $5, $6, $7)";
    with_tx!(tx, c => sqlx::query(sql)
        .bind(&s.endpoint_id)
        .bind(s.version)
        .bind(&s.scheme)
        .bind(&s.sealed)
        .bind(&s.public_key)
        .bind(s.created_at_us)
        .bind(s.retire_at_us)
        .execute(c)
        .await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Start the overlap of every current secret of an endpoint: they sign until `retire_at`.
/// Returns the next version number.
pub async fn retire_secrets(
    tx: &mut Tx,
    endpoint_id: &str,
    retire_at: DateTime<Utc>,
) -> Result<i32, sqlx::Error> {
    let sql = "UPDATE webhook_secrets SET retire_at_us = $2 WHERE endpoint_id = $1 AND retire_at_us IS NULL";
    with_tx!(tx, c => sqlx::query(sql).bind(endpoint_id).bind(to_micros(retire_at)).execute(c).await.map(|r| r.rows_affected()))?;
    let next = "SELECT COALESCE(MAX(version), 0) + 1 FROM webhook_secrets WHERE endpoint_id = $1";
    let v: i32 =
        with_tx!(tx, c => sqlx::query_scalar::<_, i32>(next).bind(endpoint_id).fetch_one(c).await)?;
    Ok(v)
}

/// The secrets that sign for these endpoints at `now`, newest first per endpoint.
pub async fn signing_secrets(
    db: &Db,
    endpoint_ids: &[&str],
    now: DateTime<Utc>,
) -> Result<Vec<SecretRow>, sqlx::Error> {
    let list = in_json(db.backend(), 1, "text");
    let sql = format!(
        "SELECT endpoint_id, version, scheme, sealed, public_key, created_at_us, retire_at_us \
         FROM webhook_secrets WHERE endpoint_id {list} AND (retire_at_us IS NULL OR retire_at_us > $2) \
         ORDER BY endpoint_id, version DESC"
    );
    with_db!(db, c => sqlx::query_as(&sql)
        .bind(json_list(endpoint_ids))
        .bind(to_micros(now))
        .fetch_all(c)
        .await)
}

/// The current public key (`v1a`) of each endpoint listed.
pub async fn public_keys(
    db: &Db,
    endpoint_ids: &[&str],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let list = in_json(db.backend(), 1, "text");
    let sql = format!(
        "SELECT endpoint_id, public_key FROM webhook_secrets WHERE endpoint_id {list} \
         AND retire_at_us IS NULL AND public_key IS NOT NULL"
    );
    with_db!(db, c => sqlx::query_as(&sql).bind(json_list(endpoint_ids)).fetch_all(c).await)
}

// ---------------------------------------------------------------------------------------
// Claiming deliveries

/// A delivery claimed for one attempt, with what sending it needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery_id: i64,
    pub message_id: String,
    pub endpoint_id: String,
    /// This attempt's number (1-based).
    pub attempt: i32,
    /// When the attempt may start (the endpoint's rate limit); now when not limited.
    pub send_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Candidate {
    id: i64,
    endpoint_id: String,
    rate_limit: Option<i32>,
}

/// Claim up to `limit` due deliveries for `owner` until `lease_until`: pending ones whose
/// time has come, and sending ones whose sender's lease lapsed. Ordered endpoints give only
/// their oldest open delivery, and only when it is not being sent. Rate-limited endpoints
/// give only deliveries that fit in their rate before `horizon`, each with its start slot
/// (GCRA: slots 1/rate apart, kept in the endpoint row, so every instance shares them).
pub async fn claim_deliveries(
    db: &Db,
    owner: &str,
    now: DateTime<Utc>,
    horizon: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let now_us = to_micros(now);
    let horizon_us = to_micros(horizon);
    let mut tx = db.begin().await?;
    let lock = match tx.backend() {
        Backend::Postgres => "FOR UPDATE OF d SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "SELECT d.id, d.endpoint_id, e.rate_limit FROM webhook_deliveries d \
         JOIN webhook_endpoints e ON e.id = d.endpoint_id \
         WHERE d.state IN ('pending', 'sending') AND d.next_at_us <= $1 \
           AND e.enabled AND e.deleted_at_us IS NULL \
           AND (e.rate_limit IS NULL OR e.rate_tat_us < $2) \
           AND (NOT e.ordered OR d.id = (SELECT MIN(o.id) FROM webhook_deliveries o \
                WHERE o.endpoint_id = d.endpoint_id AND o.state IN ('pending', 'sending'))) \
         ORDER BY d.next_at_us, d.id LIMIT $3 {lock}"
    );
    let candidates: Vec<Candidate> = with_tx!(&mut tx, c => sqlx::query_as(&sql)
        .bind(now_us)
        .bind(horizon_us)
        .bind(limit)
        .fetch_all(c)
        .await)?;
    if candidates.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }

    // Rate slots for limited endpoints, under the endpoint rows' locks.
    let mut limited: Vec<&str> = candidates
        .iter()
        .filter(|c| c.rate_limit.is_some())
        .map(|c| c.endpoint_id.as_str())
        .collect();
    limited.sort_unstable();
    limited.dedup();
    let mut tats: std::collections::HashMap<String, (i64, i64)> = Default::default();
    if !limited.is_empty() {
        let list = in_json(tx.backend(), 1, "text");
        let lock_e = match tx.backend() {
            Backend::Postgres => "FOR UPDATE",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "SELECT id, rate_limit, rate_tat_us FROM webhook_endpoints WHERE id {list} ORDER BY id {lock_e}"
        );
        let rows: Vec<(String, i32, i64)> = with_tx!(&mut tx, c => sqlx::query_as(&sql).bind(json_list(&limited)).fetch_all(c).await)?;
        for (id, rate, tat) in rows {
            let spacing = 1_000_000 / i64::from(rate.max(1));
            tats.insert(id, (tat.max(now_us), spacing));
        }
    }
    let mut chosen: Vec<(i64, i64)> = Vec::with_capacity(candidates.len());
    for c in &candidates {
        match (c.rate_limit, tats.get_mut(&c.endpoint_id)) {
            (Some(_), Some((tat, spacing))) => {
                if *tat < horizon_us {
                    chosen.push((c.id, *tat));
                    *tat += *spacing;
                }
            }
            _ => chosen.push((c.id, now_us)),
        }
    }
    for (id, (tat, _)) in &tats {
        let sql = "UPDATE webhook_endpoints SET rate_tat_us = $2 WHERE id = $1";
        with_tx!(&mut tx, c => sqlx::query(sql).bind(id).bind(*tat).execute(c).await.map(|r| r.rows_affected()))?;
    }
    let ids: Vec<i64> = chosen.iter().map(|(id, _)| *id).collect();
    let list = in_json(tx.backend(), 1, "bigint");
    let sql = format!(
        "UPDATE webhook_deliveries SET state = 'sending', attempts = attempts + 1, lease_owner = $2, \
         next_at_us = $3, updated_at_us = $4 WHERE id {list} \
         RETURNING id, message_id, endpoint_id, attempts"
    );
    let rows: Vec<(i64, String, String, i32)> = with_tx!(&mut tx, c => sqlx::query_as(&sql)
        .bind(json_list(&ids))
        .bind(owner)
        .bind(to_micros(lease_until))
        .bind(now_us)
        .fetch_all(c)
        .await)?;
    tx.commit().await?;
    let slots: std::collections::HashMap<i64, i64> = chosen.into_iter().collect();
    let mut out: Vec<Claimed> = rows
        .into_iter()
        .map(|(id, message_id, endpoint_id, attempt)| Claimed {
            delivery_id: id,
            message_id,
            endpoint_id,
            attempt,
            send_at: from_micros(slots.get(&id).copied().unwrap_or(now_us)),
        })
        .collect();
    out.sort_by_key(|c| (c.send_at, c.delivery_id));
    Ok(out)
}

/// What sending needs from a message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageForSend {
    pub id: String,
    pub partner_id: Option<String>,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub payload: Option<String>,
}

pub async fn messages_for_send(db: &Db, ids: &[&str]) -> Result<Vec<MessageForSend>, sqlx::Error> {
    let list = in_json(db.backend(), 1, "text");
    let sql = format!("SELECT id, partner_id, type, payload FROM webhook_messages WHERE id {list}");
    with_db!(db, c => sqlx::query_as(&sql).bind(json_list(ids)).fetch_all(c).await)
}

/// The live (not deleted) endpoints among `ids`, in id order.
pub async fn endpoints_by_id(db: &Db, ids: &[&str]) -> Result<Vec<EndpointRow>, sqlx::Error> {
    let list = in_json(db.backend(), 1, "text");
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id {list} AND deleted_at_us IS NULL ORDER BY id"
    );
    with_db!(db, c => sqlx::query_as(&sql).bind(json_list(ids)).fetch_all(c).await)
}

// ---------------------------------------------------------------------------------------
// Recording attempts

/// One attempt's record, and where it leaves its delivery.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub delivery_id: i64,
    pub message_id: String,
    pub endpoint_id: String,
    pub attempt: i32,
    pub started_at_us: i64,
    pub duration_us: i64,
    pub status: Option<i32>,
    pub outcome: String,
    pub error: Option<String>,
    pub response_headers: Option<String>,
    pub response_body: Option<String>,
    pub next_at_us: Option<i64>,
    /// The delivery's new state: `delivered`, `pending` (retry) or `failed`.
    pub state: String,
    pub finished_at_us: Option<i64>,
}

/// Write a batch of attempts and move their deliveries on, in the caller's transaction.
/// A delivery whose lease another sender took over meanwhile keeps that sender's state
/// (its attempt is still recorded). Returns the deliveries moved.
pub async fn record_attempts(
    tx: &mut Tx,
    owner: &str,
    records: &[AttemptRecord],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if records.is_empty() {
        return Ok(0);
    }
    let json = json_list(records);
    let (insert, update) = match tx.backend() {
        Backend::Sqlite => (
            "INSERT INTO webhook_attempts (delivery_id, message_id, endpoint_id, attempt, started_at_us, \
             duration_us, status, outcome, error, response_headers, response_body, next_at_us) \
             SELECT value->>'delivery_id', value->>'message_id', value->>'endpoint_id', value->>'attempt', \
                    value->>'started_at_us', value->>'duration_us', value->>'status', value->>'outcome', \
                    value->>'error', value->>'response_headers', value->>'response_body', value->>'next_at_us' \
             FROM json_each($1) WHERE true",
            "UPDATE webhook_deliveries SET state = r.state, \
                 next_at_us = COALESCE(r.next_at_us, webhook_deliveries.next_at_us), \
                 lease_owner = NULL, last_status = r.status, last_error = r.error, \
                 finished_at_us = r.finished_at_us, updated_at_us = $3 \
             FROM (SELECT value->>'delivery_id' AS id, value->>'state' AS state, value->>'next_at_us' AS next_at_us, \
                          value->>'status' AS status, value->>'error' AS error, value->>'finished_at_us' AS finished_at_us \
                   FROM json_each($1)) AS r \
             WHERE webhook_deliveries.id = r.id AND webhook_deliveries.lease_owner = $2 \
               AND webhook_deliveries.state = 'sending'",
        ),
        Backend::Postgres => (
            "INSERT INTO webhook_attempts (delivery_id, message_id, endpoint_id, attempt, started_at_us, \
             duration_us, status, outcome, error, response_headers, response_body, next_at_us) \
             SELECT delivery_id, message_id, endpoint_id, attempt, started_at_us, duration_us, status, \
                    outcome, error, response_headers, response_body, next_at_us \
             FROM jsonb_to_recordset($1::jsonb) AS r(delivery_id bigint, message_id text, endpoint_id text, \
                  attempt int, started_at_us bigint, duration_us bigint, status int, outcome text, error text, \
                  response_headers text, response_body text, next_at_us bigint)",
            "UPDATE webhook_deliveries d SET state = r.state, next_at_us = COALESCE(r.next_at_us, d.next_at_us), \
                 lease_owner = NULL, last_status = r.status, last_error = r.error, \
                 finished_at_us = r.finished_at_us, updated_at_us = $3 \
             FROM jsonb_to_recordset($1::jsonb) AS r(delivery_id bigint, state text, next_at_us bigint, \
                  status int, error text, finished_at_us bigint) \
             WHERE d.id = r.delivery_id AND d.lease_owner = $2 AND d.state = 'sending'",
        ),
    };
    with_tx!(tx, c => sqlx::query(insert).bind(&json).execute(c).await.map(|r| r.rows_affected()))?;
    let moved = with_tx!(tx, c => sqlx::query(update)
        .bind(&json)
        .bind(owner)
        .bind(to_micros(now))
        .execute(c)
        .await.map(|r| r.rows_affected()))?;
    Ok(moved)
}

/// Hand claimed deliveries back untried (shutdown before their slot came): the attempt is
/// not counted.
pub async fn release_deliveries(
    db: &Db,
    owner: &str,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let list = in_json(db.backend(), 1, "bigint");
    let sql = format!(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = attempts - 1, lease_owner = NULL, \
         next_at_us = $3 WHERE id {list} AND lease_owner = $2 AND state = 'sending'"
    );
    with_db!(db, c => sqlx::query(&sql).bind(json_list(ids)).bind(owner).bind(to_micros(now)).execute(c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Reading messages and attempts

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MessageRow {
    pub id: String,
    pub partner_id: Option<String>,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub created_at_us: i64,
    pub payload: Option<String>,
    pub purged_at_us: Option<i64>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub message_id: String,
    pub endpoint_id: String,
    pub state: String,
    pub attempts: i32,
    pub next_at_us: i64,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at_us: i64,
    pub finished_at_us: Option<i64>,
}

/// Filters of `GET /v1/webhooks/messages`.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub partner: Option<String>,
    /// Only messages with a delivery to this endpoint.
    pub endpoint: Option<String>,
    pub event_type: Option<String>,
    /// Only messages with a delivery in this state.
    pub state: Option<String>,
    /// Messages older than this id (paging backwards).
    pub before: Option<String>,
    pub limit: i64,
}

pub async fn list_messages(db: &Db, f: &MessageFilter) -> Result<Vec<MessageRow>, sqlx::Error> {
    let sql = "SELECT m.id, m.partner_id, m.type, m.created_at_us, m.payload, m.purged_at_us \
               FROM webhook_messages m \
               WHERE (CAST($1 AS TEXT) IS NULL OR m.partner_id = $1) \
                 AND (CAST($2 AS TEXT) IS NULL OR m.type = $2) \
                 AND (CAST($3 AS TEXT) IS NULL OR m.id < $3) \
                 AND (CAST($4 AS TEXT) IS NULL AND CAST($5 AS TEXT) IS NULL OR EXISTS ( \
                      SELECT 1 FROM webhook_deliveries d WHERE d.message_id = m.id \
                      AND (CAST($4 AS TEXT) IS NULL OR d.endpoint_id = $4) \
                      AND (CAST($5 AS TEXT) IS NULL OR d.state = $5))) \
               ORDER BY m.id DESC LIMIT $6";
    with_db!(db, c => sqlx::query_as(sql)
        .bind(&f.partner)
        .bind(&f.event_type)
        .bind(&f.before)
        .bind(&f.endpoint)
        .bind(&f.state)
        .bind(f.limit)
        .fetch_all(c)
        .await)
}

pub async fn get_message(db: &Db, id: &str) -> Result<Option<MessageRow>, sqlx::Error> {
    let sql = "SELECT id, partner_id, type, created_at_us, payload, purged_at_us FROM webhook_messages WHERE id = $1";
    with_db!(db, c => sqlx::query_as(sql).bind(id).fetch_optional(c).await)
}

pub async fn deliveries_of(db: &Db, message_ids: &[&str]) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let list = in_json(db.backend(), 1, "text");
    let sql = format!(
        "SELECT id, message_id, endpoint_id, state, attempts, next_at_us, last_status, last_error, \
         created_at_us, finished_at_us FROM webhook_deliveries WHERE message_id {list} ORDER BY id"
    );
    with_db!(db, c => sqlx::query_as(&sql).bind(json_list(message_ids)).fetch_all(c).await)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AttemptRow {
    pub id: i64,
    pub delivery_id: i64,
    pub message_id: String,
    pub endpoint_id: String,
    pub attempt: i32,
    pub started_at_us: i64,
    pub duration_us: i64,
    pub status: Option<i32>,
    pub outcome: String,
    pub error: Option<String>,
    pub response_headers: Option<String>,
    pub response_body: Option<String>,
    pub next_at_us: Option<i64>,
}

pub async fn attempts_of(db: &Db, message_id: &str) -> Result<Vec<AttemptRow>, sqlx::Error> {
    let sql = "SELECT id, delivery_id, message_id, endpoint_id, attempt, started_at_us, duration_us, status, \
               outcome, error, response_headers, response_body, next_at_us \
               FROM webhook_attempts WHERE message_id = $1 ORDER BY id";
    with_db!(db, c => sqlx::query_as(sql).bind(message_id).fetch_all(c).await)
}

// ---------------------------------------------------------------------------------------
// Replay and retention

/// Send `message_id` to each endpoint listed (live ones only) now. A delivery of it that is
/// still waiting for a retry is brought forward instead of getting a second one beside it
/// (which would send the same `webhook-id` again at the retry's time); one being sent right
/// now is that send. Otherwise a new pending delivery, due now.
pub async fn replay_message(
    tx: &mut Tx,
    message_id: &str,
    endpoint_ids: &[&str],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    if endpoint_ids.is_empty() {
        return Ok(0);
    }
    let list = in_json(tx.backend(), 3, "text");
    let forward = format!(
        "UPDATE webhook_deliveries SET next_at_us = $2, updated_at_us = $2 \
         WHERE message_id = $1 AND state = 'pending' AND endpoint_id {list} \
           AND EXISTS (SELECT 1 FROM webhook_messages m WHERE m.id = $1 AND m.payload IS NOT NULL)"
    );
    let brought = with_tx!(tx, c => sqlx::query(&forward)
        .bind(message_id)
        .bind(to_micros(now))
        .bind(json_list(endpoint_ids))
        .execute(c)
        .await.map(|r| r.rows_affected()))?;
    let sql = format!(
        "INSERT INTO webhook_deliveries (message_id, endpoint_id, state, attempts, next_at_us, created_at_us, updated_at_us) \
         SELECT $1, e.id, 'pending', 0, $2, $2, $2 FROM webhook_endpoints e \
         WHERE e.id {list} AND e.deleted_at_us IS NULL \
           AND EXISTS (SELECT 1 FROM webhook_messages m WHERE m.id = $1 AND m.payload IS NOT NULL) \
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.message_id = $1 \
                           AND d.endpoint_id = e.id AND d.state IN ('pending', 'sending')) \
         ORDER BY e.id"
    );
    let n = with_tx!(tx, c => sqlx::query(&sql)
        .bind(message_id)
        .bind(to_micros(now))
        .bind(json_list(endpoint_ids))
        .execute(c)
        .await.map(|r| r.rows_affected()))?;
    Ok(brought + n)
}

/// Replay every message whose delivery to `endpoint_id` failed for good, created since
/// `since` (and still holding its payload), once each, in creation order. Returns how many.
pub async fn replay_failed(
    tx: &mut Tx,
    endpoint_id: &str,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let sql = "INSERT INTO webhook_deliveries (message_id, endpoint_id, state, attempts, next_at_us, created_at_us, updated_at_us) \
               SELECT m.id, $1, 'pending', 0, $3, $3, $3 FROM webhook_messages m \
               WHERE m.created_at_us >= $2 AND m.payload IS NOT NULL \
                 AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.message_id = m.id \
                             AND d.endpoint_id = $1 AND d.state = 'failed') \
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.message_id = m.id \
                             AND d.endpoint_id = $1 AND d.state IN ('pending', 'sending', 'delivered')) \
               ORDER BY m.id";
    let n = with_tx!(tx, c => sqlx::query(sql)
        .bind(endpoint_id)
        .bind(to_micros(since))
        .bind(to_micros(now))
        .execute(c)
        .await.map(|r| r.rows_affected()))?;
    Ok(n)
}

/// Purge payloads (and response bodies) older than `before`. Open deliveries of a purged
/// message can no longer be sent: they fail with the reason. Returns messages purged.
pub async fn purge_before(
    db: &Db,
    before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let (before, now) = (to_micros(before), to_micros(now));
    let mut tx = db.begin().await?;
    let fail = "UPDATE webhook_deliveries SET state = 'failed', lease_owner = NULL, \
                last_error = 'payload purged after the retention period', finished_at_us = $2, updated_at_us = $2 \
                WHERE state IN ('pending', 'sending') AND message_id IN \
                (SELECT id FROM webhook_messages WHERE created_at_us < $1 AND payload IS NOT NULL)";
    with_tx!(&mut tx, c => sqlx::query(fail).bind(before).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
    let bodies = "UPDATE webhook_attempts SET response_body = NULL, response_headers = NULL \
                  WHERE started_at_us < $1 AND (response_body IS NOT NULL OR response_headers IS NOT NULL)";
    with_tx!(&mut tx, c => sqlx::query(bodies).bind(before).execute(c).await.map(|r| r.rows_affected()))?;
    let purge = "UPDATE webhook_messages SET payload = NULL, purged_at_us = $2 \
                 WHERE created_at_us < $1 AND payload IS NOT NULL";
    let n = with_tx!(&mut tx, c => sqlx::query(purge).bind(before).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n)
}

/// Counts of deliveries by state (for metrics and the bench).
pub async fn count_deliveries(db: &Db) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let sql = "SELECT state, COUNT(*) FROM webhook_deliveries GROUP BY state ORDER BY state";
    with_db!(db, c => sqlx::query_as(sql).fetch_all(c).await)
}

/// Convert a stored instant for the API.
pub fn rfc3339(us: i64) -> String {
    crate::time::rfc3339(from_micros(us))
}

/// Parse the JSON filter column.
pub fn event_types(text: &str) -> Vec<String> {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// A usage threshold a partner's meter crossed in one window.
pub struct ThresholdMark<'a> {
    pub partner_id: &'a str,
    pub meter: &'a str,
    /// The window's start, RFC 3339 to the second (the mark's key).
    pub window_start: &'a str,
    pub threshold: &'a str,
    pub crossed_at_us: i64,
}

/// The thresholds of `meter` already marked for `partner` in the window starting at
/// `window_start` (as written by [`mark_threshold`]).
pub async fn marked_thresholds(
    db: &Db,
    partner_id: &str,
    meter: &str,
    window_start: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let sql = "SELECT threshold FROM usage_threshold_marks \
               WHERE partner_id = $1 AND meter = $2 AND window_start = $3";
    with_db!(db, c => sqlx::query_scalar(sql)
        .bind(partner_id)
        .bind(meter)
        .bind(window_start)
        .fetch_all(c)
        .await)
}

/// Mark the crossing; false when it was marked before (by this or another instance), so
/// `usage.threshold.crossed` goes out once per threshold and window.
pub async fn mark_threshold(tx: &mut Tx, m: &ThresholdMark<'_>) -> Result<bool, sqlx::Error> {
    let sql = "INSERT INTO usage_threshold_marks (partner_id, meter, window_start, threshold, crossed_at_us) \
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
    let n = with_tx!(tx, c => sqlx::query(sql)
        .bind(m.partner_id)
        .bind(m.meter)
        .bind(m.window_start)
        .bind(m.threshold)
        .bind(m.crossed_at_us)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}
