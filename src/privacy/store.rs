//! Privacy SQL: the retention purge, finding a person's records, erasing them, and the
//! audit log. Lists are bound as one parameter: a JSON array expanded by `json_each` on
//! SQLite, a text array compared with `= ANY` on PostgreSQL.

use crate::db::{Db, Tx};

/// `column IN (the list bound as ${n})`, in the backend's dialect.
fn in_list(tx_is_pg: bool, column: &str, n: usize) -> String {
    if tx_is_pg {
        format!("{column} = ANY(${n})")
    } else {
        format!("{column} IN (SELECT value FROM json_each(${n}))")
    }
}

/// A JSON text field of a TEXT column holding JSON, by path segments.
fn json_text(pg: bool, column: &str, path: &[&str]) -> String {
    if pg {
        format!("(({column})::jsonb #>> '{{{}}}')", path.join(","))
    } else {
        format!("json_extract({column}, '$.{}')", path.join("."))
    }
}

/// Execute `sql` whose `$1` is the list, with further parameters `$2`... on either backend.
macro_rules! exec_with_list {
    ($tx:expr, $sql:expr, $list:expr $(, $bind:expr)*) => {{
        let list: &[String] = $list;
        match $tx {
            Tx::Sqlite(t) => {
                let json = serde_json::to_string(list).unwrap_or_else(|_| "[]".into());
                sqlx::query($sql).bind(json)$(.bind($bind))*.execute(&mut **t).await
                    .map(|r| r.rows_affected())
            }
            Tx::Postgres(t) => sqlx::query($sql).bind(list)$(.bind($bind))*.execute(&mut **t).await
                .map(|r| r.rows_affected()),
        }
    }};
}

// ---------------------------------------------------------------- the retention purge

/// Launches expired before `cutoff_us` whose personal fields are still there (at most `n`).
pub async fn expired_launches(db: &Db, cutoff_us: i64, n: i64) -> Result<Vec<String>, sqlx::Error> {
    let sql = "SELECT id FROM launches \
               WHERE expires_at_us < $1 AND personal_purged_at_us IS NULL LIMIT $2";
    crate::with_db!(db, pool => sqlx::query_scalar(sql).bind(cutoff_us).bind(n).fetch_all(pool).await)
}

/// Remove the personal fields of these launches (user id and name, the context) and what
/// hangs off them for the EHR or the app (sealed tokens, handoff codes). The rows stay.
pub async fn scrub_launches(tx: &mut Tx, ids: &[String], now_us: i64) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let pg = matches!(tx, Tx::Postgres(_));
    let sessions = format!(
        "DELETE FROM smart_sessions WHERE {}",
        in_list(pg, "launch_id", 1)
    );
    exec_with_list!(tx, &sessions, ids)?;
    let handoffs = format!(
        "DELETE FROM launch_handoffs WHERE {}",
        in_list(pg, "launch_id", 1)
    );
    exec_with_list!(tx, &handoffs, ids)?;
    let scrub = format!(
        "UPDATE launches SET user_id = NULL, user_name = NULL, context = '{{}}', \
         personal_purged_at_us = $2 WHERE {} AND personal_purged_at_us IS NULL",
        in_list(pg, "id", 1)
    );
    exec_with_list!(tx, &scrub, ids, now_us)
}

/// Delete up to `n` sign-in states (SMART, LTI, SSO) that expired before `cutoff_us`.
pub async fn purge_states(tx: &mut Tx, cutoff_us: i64, n: i64) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    for table in ["smart_states", "lti_states", "sso_states"] {
        let sql = format!(
            "DELETE FROM {table} WHERE state_hash IN \
             (SELECT state_hash FROM {table} WHERE expires_at_us < $1 LIMIT $2)"
        );
        total += exec(tx, &sql, cutoff_us, n).await?;
    }
    Ok(total)
}

/// Delete up to `n` scores that were settled (delivered, failed, unknown) and created
/// before `cutoff_us`.
pub async fn purge_scores(tx: &mut Tx, cutoff_us: i64, n: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM lti_scores WHERE id IN (SELECT id FROM lti_scores \
               WHERE created_at_us < $1 AND status <> 'pending' \
                 AND COALESCE(delivered_at_us, 0) < $1 LIMIT $2)";
    exec(tx, sql, cutoff_us, n).await
}

/// Delete up to `n` jobs that finished (succeeded or dead) before `cutoff_us`.
pub async fn purge_jobs(tx: &mut Tx, cutoff_us: i64, n: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
               WHERE finished_at_us < $1 AND state IN ('succeeded', 'dead') LIMIT $2)";
    exec(tx, sql, cutoff_us, n).await
}

/// Delete up to `n` person links last launched before `cutoff_us`, then up to `n`
/// identities older than it whose person has no link left (no launch since).
pub async fn purge_lti_people(tx: &mut Tx, cutoff_us: i64, n: i64) -> Result<u64, sqlx::Error> {
    let links = "DELETE FROM lti_person_links WHERE (partner_id, person_id, link_key) IN \
                 (SELECT partner_id, person_id, link_key FROM lti_person_links \
                  WHERE launched_at_us < $1 LIMIT $2)";
    let identities = "DELETE FROM lti_identities WHERE (partner_id, namespace, user_id) IN \
                      (SELECT i.partner_id, i.namespace, i.user_id FROM lti_identities i \
                       WHERE i.created_at_us < $1 AND COALESCE(i.relinked_at_us, 0) < $1 \
                         AND NOT EXISTS (SELECT 1 FROM lti_person_links l \
                                         WHERE l.partner_id = i.partner_id \
                                           AND l.person_id = i.person_id) \
                       LIMIT $2)";
    Ok(exec(tx, links, cutoff_us, n).await? + exec(tx, identities, cutoff_us, n).await?)
}

/// Delete up to `n` audit entries older than `cutoff_us`.
pub async fn purge_audit(tx: &mut Tx, cutoff_us: i64, n: i64) -> Result<u64, sqlx::Error> {
    let sql = "DELETE FROM audit_log WHERE id IN \
               (SELECT id FROM audit_log WHERE at_us < $1 LIMIT $2)";
    exec(tx, sql, cutoff_us, n).await
}

/// Delete up to `n` console rows of each table (sessions ended or expired, links used,
/// revoked or lapsed, runs finished) older than `cutoff_us`.
pub async fn purge_console(tx: &mut Tx, cutoff_us: i64, n: i64) -> Result<u64, sqlx::Error> {
    let sessions = "DELETE FROM console_sessions WHERE id_hash IN (SELECT id_hash FROM console_sessions \
                    WHERE COALESCE(ended_at_us, expires_at_us) < $1 AND expires_at_us < $1 LIMIT $2)";
    let links = "DELETE FROM console_links WHERE id IN (SELECT id FROM console_links \
                 WHERE COALESCE(used_at_us, revoked_at_us, expires_at_us) < $1 AND expires_at_us < $1 LIMIT $2)";
    let runs = "DELETE FROM statement_runs WHERE id IN (SELECT id FROM statement_runs \
                WHERE updated_at_us < $1 LIMIT $2)";
    Ok(exec(tx, sessions, cutoff_us, n).await?
        + exec(tx, links, cutoff_us, n).await?
        + exec(tx, runs, cutoff_us, n).await?)
}

async fn exec(tx: &mut Tx, sql: &str, a: i64, b: i64) -> Result<u64, sqlx::Error> {
    crate::with_tx!(tx, c => sqlx::query(sql).bind(a).bind(b).execute(c).await.map(|r| r.rows_affected()))
}

// ---------------------------------------------------------------- finding a person

/// A launch that names the person.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LaunchRow {
    pub id: String,
    pub kind: String,
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub context: String,
    pub created_at_us: i64,
    pub expires_at_us: i64,
}

/// The partner's launches of the person: SMART and LTI launches whose user is one of
/// `user_ids`, sign-ins whose subject qualified by its connection (`acme-okta:1234`, what
/// the ledger and the app call it) is one of `sso_subjects` (an IdP's bare subject is only
/// unique within that IdP: two connections of one partner may each have a `1`), and any
/// launch whose context's email is `email` (compared without case).
pub async fn launches_of(
    db: &Db,
    partner: &str,
    user_ids: &[String],
    sso_subjects: &[String],
    email: Option<&str>,
) -> Result<Vec<LaunchRow>, sqlx::Error> {
    let pg = matches!(db, Db::Postgres(_));
    let sql = format!(
        "SELECT id, kind, user_id, user_name, context, created_at_us, expires_at_us \
         FROM launches WHERE partner_id = $1 AND personal_purged_at_us IS NULL \
           AND ((kind <> 'sso' AND {}) OR (kind = 'sso' AND {}) \
                OR (CAST($4 AS TEXT) IS NOT NULL AND lower({}) = lower($4))) \
         ORDER BY created_at_us, id",
        in_list(pg, "user_id", 2),
        in_list(pg, &json_text(pg, "context", &["subject"]), 3),
        json_text(pg, "context", &["email"]),
    );
    fetch_with_lists(db, &sql, partner, &[user_ids, sso_subjects], Some(email)).await
}

/// An LTI identity: (namespace, user id, person id).
pub type IdentityRow = (String, String, String);

/// The partner's LTI identities whose id or person is one of `ids`, and every identity of
/// those persons.
pub async fn identities_of(
    db: &Db,
    partner: &str,
    ids: &[String],
) -> Result<Vec<IdentityRow>, sqlx::Error> {
    let pg = matches!(db, Db::Postgres(_));
    let sql = format!(
        "SELECT namespace, user_id, person_id FROM lti_identities \
         WHERE partner_id = $1 AND person_id IN \
           (SELECT person_id FROM lti_identities WHERE partner_id = $1 AND ({} OR {})) \
         ORDER BY person_id, namespace, user_id",
        in_list(pg, "user_id", 2),
        in_list(pg, "person_id", 2),
    );
    fetch_with_lists(db, &sql, partner, &[ids], None).await
}

/// A score the app posted for the person.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScoreRow {
    pub id: String,
    pub launch_id: String,
    pub user_id: String,
    pub score: String,
    pub status: String,
    pub line_item: Option<String>,
    pub last_error: Option<String>,
    pub created_at_us: i64,
    pub delivered_at_us: Option<i64>,
}

pub async fn scores_of(
    db: &Db,
    partner: &str,
    user_ids: &[String],
) -> Result<Vec<ScoreRow>, sqlx::Error> {
    let pg = matches!(db, Db::Postgres(_));
    let sql = format!(
        "SELECT id, launch_id, user_id, score, status, line_item, last_error, created_at_us, \
                delivered_at_us \
         FROM lti_scores WHERE partner_id = $1 AND {} ORDER BY created_at_us, id",
        in_list(pg, "user_id", 2)
    );
    fetch_with_lists(db, &sql, partner, &[user_ids], None).await
}

/// A webhook message naming the person (`launch.completed`'s `user.id`, `grade.*`'s
/// `user_id`) whose payload is still kept.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    pub id: String,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub created_at_us: i64,
    pub payload: String,
}

pub async fn messages_of(
    db: &Db,
    partner: &str,
    user_ids: &[String],
    launch_ids: &[String],
) -> Result<Vec<MessageRow>, sqlx::Error> {
    let pg = matches!(db, Db::Postgres(_));
    // A sign-in's `launch.completed` names the IdP's bare subject, which another IdP of the
    // partner may also use: those are found by their launch, never by that id.
    let sql = format!(
        "SELECT id, type, created_at_us, payload FROM webhook_messages \
         WHERE partner_id = $1 AND payload IS NOT NULL \
           AND ((COALESCE({}, '') <> 'sso' AND {}) OR {} \
                OR (type = 'launch.completed' AND {})) \
         ORDER BY created_at_us, id",
        json_text(pg, "payload", &["data", "kind"]),
        in_list(pg, &json_text(pg, "payload", &["data", "user", "id"]), 2),
        in_list(pg, &json_text(pg, "payload", &["data", "user_id"]), 2),
        in_list(pg, &json_text(pg, "payload", &["data", "launch_id"]), 3),
    );
    fetch_with_lists(db, &sql, partner, &[user_ids, launch_ids], None).await
}

/// A ledger event of the person (by pseudonym).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LedgerRow {
    pub source: String,
    pub event_id: String,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub subject: Option<String>,
    pub time_us: i64,
    pub data: Option<String>,
}

pub async fn ledger_of(
    db: &Db,
    partner: &str,
    pseudonyms: &[String],
) -> Result<Vec<LedgerRow>, sqlx::Error> {
    let pg = matches!(db, Db::Postgres(_));
    let data = if pg {
        "data::text"
    } else {
        "CAST(data AS TEXT)"
    };
    let sql = format!(
        "SELECT source, event_id, type, subject, time_us, {data} AS data FROM usage_events \
         WHERE partner_id = $1 AND {} ORDER BY time_us, seq",
        in_list(pg, "subject", 2)
    );
    fetch_with_lists(db, &sql, partner, &[pseudonyms], None).await
}

/// Fetch rows of `sql` whose `$1` is `partner`, `$2`... are `lists` (each bound as one
/// parameter, see [`in_list`]) and the parameter after them is `text`, when given.
async fn fetch_with_lists<T>(
    db: &Db,
    sql: &str,
    partner: &str,
    lists: &[&[String]],
    text: Option<Option<&str>>,
) -> Result<Vec<T>, sqlx::Error>
where
    T: Send
        + Unpin
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    match db {
        Db::Sqlite(pool) => {
            let mut q = sqlx::query_as(sql).bind(partner);
            for list in lists {
                q = q.bind(serde_json::to_string(list).unwrap_or_else(|_| "[]".into()));
            }
            if let Some(t) = text {
                q = q.bind(t);
            }
            q.fetch_all(pool).await
        }
        Db::Postgres(pool) => {
            let mut q = sqlx::query_as(sql).bind(partner);
            for list in lists {
                q = q.bind(*list);
            }
            if let Some(t) = text {
                q = q.bind(t);
            }
            q.fetch_all(pool).await
        }
    }
}

// ---------------------------------------------------------------- erasing

/// Delete the scores and the jobs that sent them (their errors may quote the LMS naming
/// the learner).
pub async fn delete_scores(tx: &mut Tx, ids: &[String]) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let pg = matches!(tx, Tx::Postgres(_));
    let keys: Vec<String> = ids.iter().map(|id| format!("lti.score:{id}")).collect();
    let jobs = format!("DELETE FROM jobs WHERE {}", in_list(pg, "dedupe_key", 1));
    exec_with_list!(tx, &jobs, &keys)?;
    let scores = format!("DELETE FROM lti_scores WHERE {}", in_list(pg, "id", 1));
    exec_with_list!(tx, &scores, ids)
}

/// Delete every identity and person link of these persons.
pub async fn delete_people(
    tx: &mut Tx,
    partner: &str,
    persons: &[String],
) -> Result<u64, sqlx::Error> {
    if persons.is_empty() {
        return Ok(0);
    }
    let pg = matches!(tx, Tx::Postgres(_));
    let mut n = 0;
    for table in ["lti_person_links", "lti_identities"] {
        let sql = format!(
            "DELETE FROM {table} WHERE partner_id = $2 AND {}",
            in_list(pg, "person_id", 1)
        );
        n += exec_with_list!(tx, &sql, persons, partner)?;
    }
    Ok(n)
}

/// Drop the payloads of these messages (as the retention purge does) and the bodies and
/// headers of every answer to them.
pub async fn scrub_messages(tx: &mut Tx, ids: &[String], now_us: i64) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let pg = matches!(tx, Tx::Postgres(_));
    let attempts = format!(
        "UPDATE webhook_attempts SET response_body = NULL, response_headers = NULL WHERE {}",
        in_list(pg, "message_id", 1)
    );
    exec_with_list!(tx, &attempts, ids)?;
    let messages = format!(
        "UPDATE webhook_messages SET payload = NULL, purged_at_us = $2 WHERE {}",
        in_list(pg, "id", 1)
    );
    exec_with_list!(tx, &messages, ids, now_us)
}

/// Forget the answers kept for idempotent retries of requests about these launches (their
/// paths name them; the answers are sealed, and expire within a day anyway).
pub async fn delete_idempotency_for(
    tx: &mut Tx,
    launch_ids: &[String],
) -> Result<u64, sqlx::Error> {
    let mut n = 0;
    for id in launch_ids {
        let sql = "DELETE FROM idempotency_keys WHERE path LIKE $1 ESCAPE '\\'";
        // Launch ids hold `_`, a LIKE wildcard: matched as itself.
        let escaped = id
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = format!("%/launches/{escaped}%");
        n += crate::with_tx!(tx, c => sqlx::query(sql).bind(&pattern).execute(c).await.map(|r| r.rows_affected()))?;
    }
    Ok(n)
}

/// Delete LTI login states whose `login_hint` is one of the person's ids (Moodle hints
/// with the user id; they expire within the hour and go a day later anyway).
pub async fn delete_login_states(tx: &mut Tx, user_ids: &[String]) -> Result<u64, sqlx::Error> {
    if user_ids.is_empty() {
        return Ok(0);
    }
    let pg = matches!(tx, Tx::Postgres(_));
    let sql = format!(
        "DELETE FROM lti_states WHERE {}",
        in_list(pg, &json_text(pg, "login", &["login_hint"]), 1)
    );
    exec_with_list!(tx, &sql, user_ids)
}

// ---------------------------------------------------------------- the audit log
