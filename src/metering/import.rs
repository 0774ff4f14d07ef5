//! `usage import FILE`: NDJSON CloudEvents into the ledger, through the same validation and
//! insert as the HTTP API. Valid lines are imported in batches of 1000; invalid lines are
//! reported by line number and skipped. Re-running the same file imports nothing twice.

use std::io::BufRead;

use chrono::Utc;
use serde_json::Value;

use super::ingest::{Attribution, PrepareError, prepare_one, store_batch};
use super::{MAX_BATCH, UsageEvent};
use crate::config::Config;
use crate::db::Db;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub accepted: u64,
    pub duplicates: u64,
    /// (line number, reason), in file order.
    pub rejected: Vec<(usize, String)>,
}

/// Import from a reader. `progress` is called with the bytes read so far after each batch.
pub async fn import_ndjson(
    db: &Db,
    config: &Config,
    reader: impl BufRead,
    default_partner: Option<&str>,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut batch: Vec<UsageEvent> = Vec::with_capacity(MAX_BATCH);
    let mut bytes = 0u64;
    let known = |p: &str| config.partner(p).is_some();
    let attribution = Attribution::Named {
        default: default_partner,
    };
    for (i, line) in reader.lines().enumerate() {
        let lineno = i + 1;
        let line = line.map_err(|e| anyhow::anyhow!("reading line {lineno}: {e}"))?;
        bytes += line.len() as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                report
                    .rejected
                    .push((lineno, format!("not valid JSON: {e}")));
                continue;
            }
        };
        match prepare_one(value, attribution, &known, Utc::now()) {
            Ok(e) => batch.push(e),
            Err(PrepareError::Forbidden(m)) => report.rejected.push((lineno, m)),
            Err(PrepareError::Invalid(problems)) => {
                let reasons: Vec<String> = problems
                    .iter()
                    .map(|p| format!("{} {}", p.field, p.reason))
                    .collect();
                report.rejected.push((lineno, reasons.join("; ")));
            }
        }
        if batch.len() == MAX_BATCH {
            flush(db, &mut batch, &mut report).await?;
            progress(bytes);
        }
    }
    flush(db, &mut batch, &mut report).await?;
    progress(bytes);
    metrics::counter!("gateway_usage_events_total", "outcome" => "rejected")
        .increment(report.rejected.len() as u64);
    Ok(report)
}

async fn flush(
    db: &Db,
    batch: &mut Vec<UsageEvent>,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let done = store_batch(db, batch, Utc::now()).await?;
    report.accepted += done.accepted;
    report.duplicates += done.duplicates;
    batch.clear();
    Ok(())
}
