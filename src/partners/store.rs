//! SQL for partners.

use serde::Serialize;

use crate::config::PartnerConfig;
use crate::db::{Db, Tx};
use crate::time::now_micros;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(example = json!({"id": "epic-sandbox", "name": "Epic on FHIR sandbox", "kind": "ehr", "contact": "integrations+epic@example.com", "active": true, "sandbox": false}))]
pub struct Partner {
    pub id: String,
    pub name: String,
    /// ehr, lms, idp, marketplace, referral or other.
    pub kind: String,
    pub contact: Option<String>,
    /// False once the partner is gone from config: its history stays, its keys stop working.
    pub active: bool,
    /// A sandbox partner: never billed, marked in every response and usage event.
    pub sandbox: bool,
}

/// Make the store's partners match the config: insert or update each configured partner and
/// mark the rest inactive. Rows are never deleted: keys and ledger rows refer to them.
pub async fn sync_partners(db: &Db, partners: &[PartnerConfig]) -> anyhow::Result<()> {
    let now = now_micros();
    let mut tx = db.begin().await?;
    let upsert = "INSERT INTO partners (id, name, kind, contact, active, sandbox, created_at_us, updated_at_us) \
                  VALUES ($1, $2, $3, $4, TRUE, $6, $5, $5) \
                  ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind, \
                  contact = excluded.contact, active = TRUE, sandbox = excluded.sandbox, \
                  updated_at_us = excluded.updated_at_us";
    for p in partners {
        crate::with_tx!(&mut tx, c => {
            sqlx::query(upsert)
                .bind(&p.id)
                .bind(&p.name)
                .bind(p.kind.as_str())
                .bind(&p.contact)
                .bind(now)
                .bind(p.sandbox)
                .execute(c).await.map(|r| r.rows_affected())
        })?;
    }
    let ids: Vec<String> = partners.iter().map(|p| p.id.clone()).collect();
    let ids_json = serde_json::to_string(&ids)?;
    // The configured ids travel as one JSON array so the statement has a fixed shape.
    let deactivate_sqlite = "UPDATE partners SET active = FALSE, updated_at_us = $1 \
                             WHERE active AND id NOT IN (SELECT value FROM json_each($2))";
    let deactivate_pg = "UPDATE partners SET active = FALSE, updated_at_us = $1 \
                         WHERE active AND NOT (id = ANY(SELECT jsonb_array_elements_text($2::jsonb)))";
    match &mut tx {
        crate::db::Tx::Sqlite(t) => {
            sqlx::query(deactivate_sqlite)
                .bind(now)
                .bind(&ids_json)
                .execute(&mut **t)
                .await?;
        }
        crate::db::Tx::Postgres(t) => {
            sqlx::query(deactivate_pg)
                .bind(now)
                .bind(&ids_json)
                .execute(&mut **t)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Active partners, optionally just one.
pub async fn list_partners(db: &Db, only: Option<&str>) -> anyhow::Result<Vec<Partner>> {
    // CAST gives the optional filter a type PostgreSQL can infer; SQLite reads it the same.
    let sql = "SELECT id, name, kind, contact, active, sandbox FROM partners \
               WHERE active AND (CAST($1 AS TEXT) IS NULL OR id = $1) ORDER BY id";
    let rows = crate::with_db!(db, pool => sqlx::query_as(sql).bind(only).fetch_all(pool).await)?;
    Ok(rows)
}

/// Whether `id` is a sandbox partner, read inside the caller's transaction (an unknown
/// partner is not one).
pub async fn is_sandbox(tx: &mut Tx, id: &str) -> Result<bool, sqlx::Error> {
    let sql = "SELECT sandbox FROM partners WHERE id = $1";
    let found: Option<bool> =
        crate::with_tx!(tx, c => sqlx::query_scalar(sql).bind(id).fetch_optional(c).await)?;
    Ok(found.unwrap_or(false))
}
