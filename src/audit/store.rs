//! The audit log's SQL.

use super::Entry;
use crate::db::{Db, Tx};

/// Write `e` in the caller's transaction; returns the entry's id (`aud_...`).
pub async fn insert(tx: &mut Tx, e: &Entry<'_>, at_us: i64) -> Result<String, sqlx::Error> {
    let id = crate::ids::new("aud");
    let sql = "INSERT INTO audit_log (id, at_us, actor, actor_role, actor_partner, action, \
               partner_id, subject_ref, origin, detail) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
    crate::with_tx!(tx, c => sqlx::query(sql)
        .bind(&id)
        .bind(at_us)
        .bind(e.actor)
        .bind(e.actor_role)
        .bind(e.actor_partner)
        .bind(e.action)
        .bind(e.partner_id)
        .bind(e.subject_ref)
        .bind(e.origin)
        .bind(e.detail.to_string())
        .execute(c)
        .await
        .map(|_| ()))?;
    Ok(id)
}

/// An entry as read back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Record {
    pub id: String,
    pub at_us: i64,
    pub actor: String,
    pub actor_role: String,
    pub actor_partner: Option<String>,
    pub action: String,
    pub partner_id: Option<String>,
    pub subject_ref: Option<String>,
    pub origin: String,
    pub detail: String,
}

/// Which entries to read.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub partner: Option<String>,
    /// An action or its prefix: `statement.` matches every statement action.
    pub action: Option<String>,
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
}

/// Entries newest first, after the keyset `(at_us, id)` of the last one seen.
pub async fn list(
    db: &Db,
    f: &Filter,
    after: Option<(i64, String)>,
    limit: i64,
) -> anyhow::Result<Vec<Record>> {
    let (after_at, after_id) = match after {
        Some((at, id)) => (Some(at), id),
        None => (None, String::new()),
    };
    let action_like = f.action.as_ref().map(|a| {
        let escaped = a
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        if a.ends_with('.') {
            format!("{escaped}%")
        } else {
            escaped
        }
    });
    let sql = "SELECT id, at_us, actor, actor_role, actor_partner, action, partner_id, \
               subject_ref, origin, detail FROM audit_log \
               WHERE ($1 IS NULL OR partner_id = $1) \
               AND ($2 IS NULL OR action LIKE $2 ESCAPE '\\') \
               AND ($3 IS NULL OR at_us >= $3) AND ($4 IS NULL OR at_us < $4) \
               AND ($5 IS NULL OR at_us < $5 OR (at_us = $5 AND id < $6)) \
               ORDER BY at_us DESC, id DESC LIMIT $7";
    Ok(crate::with_db!(db, c => sqlx::query_as::<_, Record>(sql)
        .bind(f.partner.as_deref())
        .bind(action_like.as_deref())
        .bind(f.since_us)
        .bind(f.until_us)
        .bind(after_at)
        .bind(&after_id)
        .bind(limit)
        .fetch_all(c)
        .await)?)
}
