//! SQL for API keys.

use serde::Serialize;

use super::{Role, generate_key, hash_key};
use crate::db::Db;
use crate::time::now_micros;
use crate::with_db;

#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub prefix: String,
    pub role: Role,
    pub partner_id: Option<String>,
    pub name: Option<String>,
    pub created_at_us: i64,
    pub revoked_at_us: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    prefix: String,
    role: String,
    partner_id: Option<String>,
    name: Option<String>,
    created_at_us: i64,
    revoked_at_us: Option<i64>,
}

impl Row {
    fn into_key(self) -> anyhow::Result<ApiKey> {
        let role = Role::parse(&self.role)
            .ok_or_else(|| anyhow::anyhow!("unknown role {:?} in api_keys", self.role))?;
        Ok(ApiKey {
            id: self.id,
            prefix: self.prefix,
            role,
            partner_id: self.partner_id,
            name: self.name,
            created_at_us: self.created_at_us,
            revoked_at_us: self.revoked_at_us,
        })
    }
}

const COLUMNS: &str = "id, prefix, role, partner_id, name, created_at_us, revoked_at_us";

/// Store a new key; returns the record and the secret, which exists only in this return value.
pub async fn create_api_key(
    db: &Db,
    role: Role,
    partner_id: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<(ApiKey, String)> {
    create_api_key_by(db, role, partner_id, name, None).await
}

/// [`create_api_key`], with the audit entry of `who` in the same transaction (the CLI and
/// the console; test and sandbox set-up need none).
pub async fn create_api_key_by(
    db: &Db,
    role: Role,
    partner_id: Option<&str>,
    name: Option<&str>,
    who: Option<&crate::audit::Who>,
) -> anyhow::Result<(ApiKey, String)> {
    match (role, partner_id) {
        (Role::Partner, None) => anyhow::bail!("a partner key needs --partner"),
        (r, Some(_)) if r != Role::Partner => {
            anyhow::bail!(
                "only partner keys are scoped to a partner; drop --partner for a {} key",
                r.as_str()
            )
        }
        _ => {}
    }
    let key = generate_key();
    let id = crate::ids::new(crate::ids::API_KEY);
    let now = now_micros();
    let sql = "INSERT INTO api_keys (id, key_hash, prefix, role, partner_id, name, created_at_us) \
               VALUES ($1, $2, $3, $4, $5, $6, $7)";
    let mut tx = db.begin().await?;
    crate::with_tx!(&mut tx, c => {
        sqlx::query(sql)
            .bind(&id)
            .bind(&key.hash)
            .bind(&key.prefix)
            .bind(role.as_str())
            .bind(partner_id)
            .bind(name)
            .bind(now)
            .execute(c).await.map(|r| r.rows_affected())
    })?;
    if let Some(who) = who {
        let detail =
            serde_json::json!({ "role": role.as_str(), "prefix": key.prefix, "name": name });
        let entry = who.entry("api_key.create", partner_id, Some(&id), &detail);
        crate::audit::store::insert(&mut tx, &entry, now).await?;
    }
    tx.commit().await?;
    Ok((
        ApiKey {
            id,
            prefix: key.prefix,
            role,
            partner_id: partner_id.map(str::to_owned),
            name: name.map(str::to_owned),
            created_at_us: now,
            revoked_at_us: None,
        },
        key.secret,
    ))
}

/// The live (not revoked) key with this secret.
pub async fn find_api_key(db: &Db, secret: &str) -> anyhow::Result<Option<ApiKey>> {
    find_api_key_by_hash(db, &hash_key(secret)).await
}

/// The live (not revoked) key with this hash.
pub async fn find_api_key_by_hash(db: &Db, hash: &str) -> anyhow::Result<Option<ApiKey>> {
    let sql =
        format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at_us IS NULL");
    let row: Option<Row> =
        with_db!(db, pool => sqlx::query_as(&sql).bind(hash).fetch_optional(pool).await)?;
    row.map(Row::into_key).transpose()
}

/// What changes whenever any key is revoked: how many are revoked and the latest time.
/// Keys are never deleted, so the pair only moves forward.
pub async fn revocation_watermark(db: &Db) -> anyhow::Result<(i64, i64)> {
    let sql = "SELECT COUNT(*), CAST(COALESCE(MAX(revoked_at_us), 0) AS BIGINT) \
               FROM api_keys WHERE revoked_at_us IS NOT NULL";
    let pair: (i64, i64) = with_db!(db, pool => sqlx::query_as(sql).fetch_one(pool).await)?;
    Ok(pair)
}

pub async fn list_api_keys(db: &Db) -> anyhow::Result<Vec<ApiKey>> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at_us, id");
    let rows: Vec<Row> = with_db!(db, pool => sqlx::query_as(&sql).fetch_all(pool).await)?;
    rows.into_iter().map(Row::into_key).collect()
}

/// Revoke by id or by prefix; returns whether a live key was revoked.
pub async fn revoke_api_key(db: &Db, id_or_prefix: &str) -> anyhow::Result<bool> {
    revoke_api_key_by(db, id_or_prefix, None).await
}

/// [`revoke_api_key`], with the audit entry of `who` in the same transaction.
pub async fn revoke_api_key_by(
    db: &Db,
    id_or_prefix: &str,
    who: Option<&crate::audit::Who>,
) -> anyhow::Result<bool> {
    let now = now_micros();
    let sql = "UPDATE api_keys SET revoked_at_us = $1 WHERE (id = $2 OR prefix = $2) AND revoked_at_us IS NULL";
    let mut tx = db.begin().await?;
    let done = crate::with_tx!(&mut tx, c => sqlx::query(sql).bind(now).bind(id_or_prefix).execute(c).await.map(|r| r.rows_affected()))?;
    if done > 0
        && let Some(who) = who
    {
        let detail = serde_json::json!({});
        let entry = who.entry("api_key.revoke", None, Some(id_or_prefix), &detail);
        crate::audit::store::insert(&mut tx, &entry, now).await?;
    }
    tx.commit().await?;
    Ok(done > 0)
}
