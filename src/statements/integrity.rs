//! The periodic check that issued statements are what was issued: each finalized or void
//! statement's stored SHA-256 recomputed over its stored number and document. The triggers
//! refuse changes through SQL; this finds what got past them (a restored old backup, a
//! hand edit with the triggers dropped) and says so loudly: an error log per statement, the
//! `gateway_statements_hash_mismatches` gauge, and `/readyz`'s `statements` field.
//! `statements verify ID` goes further and recomputes a statement from the ledger.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::model::{Document, number_display};
use crate::db::Db;

/// What the last check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Integrity {
    #[serde(with = "crate::time::api")]
    pub checked_at: DateTime<Utc>,
    /// Issued statements checked.
    pub issued: u64,
    /// Those whose stored hash does not match their stored content, as `id (NUMBER)`.
    pub mismatched: Vec<String>,
}

/// The latest result, shared by the checker and `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct IntegrityWatch(Arc<RwLock<Option<Integrity>>>);

impl IntegrityWatch {
    pub fn latest(&self) -> Option<Integrity> {
        self.0.read().ok().and_then(|g| g.clone())
    }

    fn set(&self, value: Integrity) {
        if let Ok(mut g) = self.0.write() {
            *g = Some(value);
        }
    }

    /// Check now, report what is wrong (an error log per statement, the gauge) and keep the
    /// result for `/readyz`.
    pub async fn refresh(&self, db: &Db, now: DateTime<Utc>) -> anyhow::Result<Integrity> {
        let result = check(db, now).await?;
        metrics::gauge!("gateway_statements_hash_mismatches").set(result.mismatched.len() as f64);
        for m in &result.mismatched {
            tracing::error!(
                statement = %m,
                "an issued statement no longer matches its hash: its stored content was \
                 changed after it was issued; run `statements verify` on it and restore it \
                 from a backup"
            );
        }
        self.set(result.clone());
        Ok(result)
    }
}

/// The stored hash of one issued statement against its stored content (pure).
pub fn hash_matches(number: i64, hash: &str, document: &str) -> bool {
    serde_json::from_str::<Document>(document).is_ok_and(|d| d.hash(number) == hash)
}

/// Check every issued statement once.
pub async fn check(db: &Db, now: DateTime<Utc>) -> anyhow::Result<Integrity> {
    let rows = super::store::issued_contents(db).await?;
    let mut mismatched = Vec::new();
    for r in &rows {
        let ok = match (r.number, r.hash.as_deref()) {
            (Some(n), Some(h)) => hash_matches(n, h, &r.document),
            _ => false,
        };
        if !ok {
            let shown = r
                .number
                .map(|n| number_display(&r.partner_id, n))
                .unwrap_or_else(|| "no number".into());
            mismatched.push(format!("{} ({shown})", r.id));
        }
    }
    Ok(Integrity {
        checked_at: now,
        issued: rows.len() as u64,
        mismatched,
    })
}

/// Check at start and then every `every` until `shutdown`.
pub async fn run(db: Db, watch: IntegrityWatch, every: Duration, shutdown: CancellationToken) {
    loop {
        if let Err(e) = watch.refresh(&db, Utc::now()).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "the statement integrity check failed"
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_document_or_number_no_longer_matches() {
        let doc = r#"{"company":"c","partner_id":"p","partner_name":"P","agreement_id":"a","agreement_version":1,"period":"2026-10","period_start":"2026-10-01T00:00:00Z","period_end":"2026-11-01T00:00:00Z","time_zone":"UTC","currency":"USD","rounding":"half_away_from_zero","ledger_as_of":"2026-11-02T00:00:00Z","provisional":false,"lines":[],"revenue_basis":"0.00","total":"10.00","total_precise":"10"}"#;
        let d: Document = serde_json::from_str(doc).unwrap();
        let h = d.hash(3);
        assert!(hash_matches(3, &h, doc));
        assert!(!hash_matches(4, &h, doc));
        assert!(!hash_matches(3, &h, &doc.replace("10.00", "99.00")));
        assert!(!hash_matches(3, &h, "not json"));
    }
}
