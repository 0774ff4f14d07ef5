//! SQL for the gateway's signing keys.

use serde_json::Value;
use sqlx::types::Json;

use super::crypto::MasterKey;
use super::{Alg, generate_key};
use crate::db::Db;
use crate::{with_db, with_tx};

/// A key the gateway signs with, decrypted.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub alg: Alg,
    pub private_der: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({} {})", self.alg.as_str(), self.kid)
    }
}

async fn insert_new_key(
    tx: &mut crate::db::Tx,
    master: &MasterKey,
    alg: Alg,
    now_us: i64,
) -> anyhow::Result<String> {
    let key = generate_key(alg)?;
    let sealed = master.seal(&key.kid, &key.private_der)?;
    let sql = "INSERT INTO signing_keys (kid, alg, sealed_private_key, public_jwk, created_at_us) \
               VALUES ($1, $2, $3, $4, $5)";
    with_tx!(tx, c => {
        sqlx::query(sql)
            .bind(&key.kid)
            .bind(alg.as_str())
            .bind(&sealed)
            .bind(Json(&key.public_jwk))
            .bind(now_us)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
    })?;
    tracing::info!(kid = %key.kid, alg = alg.as_str(), "signing key created");
    Ok(key.kid)
}

/// Make sure each algorithm has a current key (first start, or a new algorithm).
pub async fn ensure_signing_keys(db: &Db, master: &MasterKey, now_us: i64) -> anyhow::Result<()> {
    for alg in Alg::ALL {
        let sql = "SELECT COUNT(*) FROM signing_keys WHERE alg = $1 AND retire_at_us IS NULL";
        let current: i64 =
            with_db!(db, pool => sqlx::query_scalar(sql).bind(alg.as_str()).fetch_one(pool).await)?;
        if current == 0 {
            // Instances starting together on an empty database: one of them creates it.
            let mut tx = db.begin().await?;
            tx.lock_named("signing_keys").await?;
            let current: i64 = with_tx!(&mut tx, c => sqlx::query_scalar(sql).bind(alg.as_str()).fetch_one(c).await)?;
            if current == 0 {
                insert_new_key(&mut tx, master, alg, now_us).await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Add a new key for each of `algs`; the keys they replace stay published until
/// `now + overlap` and sign nothing more. Returns the new kids.
pub async fn rotate_signing_keys(
    db: &Db,
    master: &MasterKey,
    algs: &[Alg],
    now_us: i64,
    overlap_us: i64,
) -> anyhow::Result<Vec<String>> {
    let mut tx = db.begin().await?;
    let mut kids = Vec::new();
    for alg in algs {
        let sql =
            "UPDATE signing_keys SET retire_at_us = $1 WHERE alg = $2 AND retire_at_us IS NULL";
        with_tx!(&mut tx, c => sqlx::query(sql).bind(now_us + overlap_us).bind(alg.as_str()).execute(c).await.map(|r| r.rows_affected()))?;
        kids.push(insert_new_key(&mut tx, master, *alg, now_us).await?);
    }
    tx.commit().await?;
    Ok(kids)
}

/// The current key for `alg`: the newest one not set to retire.
pub async fn signing_key(db: &Db, master: &MasterKey, alg: Alg) -> anyhow::Result<SigningKey> {
    let sql = "SELECT kid, sealed_private_key FROM signing_keys WHERE alg = $1 AND retire_at_us IS NULL \
               ORDER BY created_at_us DESC, kid DESC LIMIT 1";
    let row: Option<(String, Vec<u8>)> =
        with_db!(db, pool => sqlx::query_as(sql).bind(alg.as_str()).fetch_optional(pool).await)?;
    let (kid, sealed) =
        row.ok_or_else(|| anyhow::anyhow!("no current {} signing key", alg.as_str()))?;
    let private_der = master.open(&kid, &sealed)?;
    Ok(SigningKey {
        kid,
        alg,
        private_der,
    })
}

/// Public JWKs to publish at `now`: current keys and those still in their overlap.
pub async fn published_keys(db: &Db, now_us: i64) -> anyhow::Result<Vec<Value>> {
    let sql = "SELECT public_jwk FROM signing_keys WHERE retire_at_us IS NULL OR retire_at_us > $1 \
               ORDER BY created_at_us DESC, kid";
    let rows: Vec<Json<Value>> =
        with_db!(db, pool => sqlx::query_scalar(sql).bind(now_us).fetch_all(pool).await)?;
    Ok(rows.into_iter().map(|j| j.0).collect())
}
