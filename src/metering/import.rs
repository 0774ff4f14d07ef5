//! `usage import FILE`: NDJSON CloudEvents into the ledger, through the same validation and
//! insert as the HTTP API. Valid lines are imported in batches of 1000; invalid lines are
//! reported by line number and skipped. Re-running the same file imports nothing twice.

use std::io::BufRead;

use chrono::Utc;
use serde_json::Value;

use super::authority::{Authority, Recorder};
use super::ingest::{Attribution, PrepareError, Writer, prepare_one, store_batch};
use super::subject::Subjects;
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

/// The import's outcome: what was written, and the error that stopped it early, if any.
/// Batches written before an error stay written; re-running the file skips them.
pub struct ImportOutcome {
    pub report: ImportReport,
    pub error: Option<anyhow::Error>,
}

/// Import from a reader. `progress` is called with the bytes read so far after each batch.
/// A line that is not UTF-8 or not valid JSON is rejected like any invalid event; only a
/// read or store failure stops the import. The events are recorded as imported by an
/// operator from `file` (its name is kept with each event); the gateway's own event types
/// are refused like any invalid line.
#[allow(clippy::too_many_arguments)]
pub async fn import_ndjson(
    db: &Db,
    subjects: &Subjects,
    config: &Config,
    rules: &Authority,
    file: &str,
    mut reader: impl BufRead,
    default_partner: Option<&str>,
    mut progress: impl FnMut(u64),
) -> ImportOutcome {
    let mut report = ImportReport::default();
    let mut batch: Vec<UsageEvent> = Vec::with_capacity(MAX_BATCH);
    let mut bytes = 0u64;
    let known = |p: &str| config.partner(p).is_some();
    let recorder = Recorder::Import {
        file: file.to_owned(),
    };
    let writer = Writer {
        attribution: Attribution::Named {
            default: default_partner,
        },
        recorder: &recorder,
        rules,
    };
    let mut buf = Vec::new();
    let mut lineno = 0usize;
    loop {
        buf.clear();
        let n = match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let error = anyhow::anyhow!("reading line {}: {e}", lineno + 1);
                return finish(db, subjects, batch, &recorder, report, Some(error)).await;
            }
        };
        lineno += 1;
        bytes += n as u64;
        let mut line: &[u8] = &buf;
        if lineno == 1 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line); // a UTF-8 byte-order mark
        }
        while let Some(rest) = line
            .strip_suffix(b"\n")
            .or_else(|| line.strip_suffix(b"\r"))
        {
            line = rest;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            report.rejected.push((lineno, "not valid UTF-8".into()));
            continue;
        };
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                report
                    .rejected
                    .push((lineno, format!("not valid JSON: {e}")));
                continue;
            }
        };
        if let Some(p) = super::event::line_problem(&value, config.usage.max_data_bytes) {
            report
                .rejected
                .push((lineno, format!("{} {}", p.field, p.reason)));
            continue;
        }
        match prepare_one(value, writer, &known, Utc::now()) {
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
            if let Err(e) = flush(db, subjects, &mut batch, &recorder, &mut report).await {
                return finish(db, subjects, Vec::new(), &recorder, report, Some(e)).await;
            }
            progress(bytes);
        }
    }
    progress(bytes);
    finish(db, subjects, batch, &recorder, report, None).await
}

async fn finish(
    db: &Db,
    subjects: &Subjects,
    mut batch: Vec<UsageEvent>,
    recorder: &Recorder,
    mut report: ImportReport,
    mut error: Option<anyhow::Error>,
) -> ImportOutcome {
    // Valid events read before a read error are still written.
    if let Err(e) = flush(db, subjects, &mut batch, recorder, &mut report).await {
        error.get_or_insert(e);
    }
    metrics::counter!("gateway_usage_events_total", "outcome" => "rejected")
        .increment(report.rejected.len() as u64);
    ImportOutcome { report, error }
}

async fn flush(
    db: &Db,
    subjects: &Subjects,
    batch: &mut Vec<UsageEvent>,
    recorder: &Recorder,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let done = store_batch(db, subjects, std::mem::take(batch), recorder, Utc::now()).await?;
    report.accepted += done.accepted;
    report.duplicates += done.duplicates;
    Ok(())
}
