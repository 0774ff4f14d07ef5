//! Turning a batch of JSON values into ledger rows: validate all, attribute each to a
//! partner, then write all in one transaction or nothing.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::authority::{Authority, Recorder};
use super::event::{FieldProblem, parse_event};
use super::store::store_usage_events;
use super::subject::Subjects;
use super::{MAX_BATCH, UsageEvent};
use crate::db::Db;
use crate::http::FieldError;

/// Who is writing: whom the events are attributed to, who records them (kept with each
/// event), and the rules saying which types that recorder may write.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub attribution: Attribution<'a>,
    pub recorder: &'a Recorder,
    pub rules: &'a Authority,
}

/// Who the events are attributed to.
#[derive(Debug, Clone, Copy)]
pub enum Attribution<'a> {
    /// A partner key: its own partner; a `partner` attribute naming another is refused.
    Fixed(&'a str),
    /// An admin or app key (or an import): each event names its partner in `partner`,
    /// falling back to `default` when given.
    Named { default: Option<&'a str> },
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{} invalid event(s); nothing was written", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("a batch holds at most {MAX_BATCH} events; this one has {0}")]
    TooMany(usize),
    #[error("the batch is empty")]
    Empty,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"accepted": 1, "duplicates": 0}))]
pub struct Ingested {
    pub accepted: u64,
    pub duplicates: u64,
}

/// Validate every event of the batch and attribute it; all problems are listed by index.
pub fn prepare_batch(
    values: Vec<Value>,
    writer: Writer<'_>,
    known_partner: impl Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> Result<Vec<UsageEvent>, IngestError> {
    if values.is_empty() {
        return Err(IngestError::Empty);
    }
    if values.len() > MAX_BATCH {
        return Err(IngestError::TooMany(values.len()));
    }
    let mut events = Vec::with_capacity(values.len());
    let mut problems = Vec::new();
    for (index, value) in values.into_iter().enumerate() {
        match prepare_one(value, writer, &known_partner, now) {
            Ok(e) => events.push(e),
            Err(PrepareError::Forbidden(m)) => {
                return Err(IngestError::Forbidden(format!(
                    "event {index}: {m}; nothing was written"
                )));
            }
            Err(PrepareError::Invalid(ps)) => problems.extend(ps.into_iter().map(|p| FieldError {
                index: Some(index),
                field: p.field,
                reason: p.reason,
            })),
        }
    }
    if problems.is_empty() {
        Ok(events)
    } else {
        Err(IngestError::Invalid(problems))
    }
}

pub enum PrepareError {
    Forbidden(String),
    Invalid(Vec<FieldProblem>),
}

/// Validate and attribute one event, and check the writer may record its type.
pub fn prepare_one(
    value: Value,
    writer: Writer<'_>,
    known_partner: &impl Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> Result<UsageEvent, PrepareError> {
    let parsed = parse_event(value, now).map_err(PrepareError::Invalid)?;
    let partner = match (writer.attribution, parsed.partner.as_deref()) {
        (Attribution::Fixed(own), Some(named)) if named != own => {
            return Err(PrepareError::Forbidden(format!(
                "this key belongs to partner {own:?} and may not record events for partner {named:?}"
            )));
        }
        (Attribution::Fixed(own), _) => own.to_owned(),
        (Attribution::Named { .. }, Some(named)) => named.to_owned(),
        (Attribution::Named { default: Some(d) }, None) => d.to_owned(),
        (Attribution::Named { default: None }, None) => {
            return Err(PrepareError::Invalid(vec![FieldProblem {
                field: "partner".into(),
                reason: "is required: name the partner in the `partner` extension attribute".into(),
            }]));
        }
    };
    if !known_partner(&partner) {
        return Err(PrepareError::Invalid(vec![FieldProblem {
            field: "partner".into(),
            reason: format!("unknown partner {partner:?}"),
        }]));
    }
    writer
        .rules
        .check(writer.recorder, &partner, &parsed.event.event_type)
        .map_err(|r| PrepareError::Forbidden(r.0))?;
    let mut event = parsed.event;
    event.partner_id = partner;
    Ok(event)
}

/// Write prepared events all or nothing; returns once they are durably committed (on
/// PostgreSQL one self-committing statement, on SQLite the group commit).
///
/// The write runs in a task of its own, so a client that hangs up mid-request cannot cancel
/// it half-way (inside the statement or the COMMIT): the batch is committed or rolled back
/// whole, and the connection goes back to the pool clean. A retry of a batch
/// that was committed after its client left is reported as duplicates.
pub async fn store_batch(
    db: &Db,
    subjects: &Subjects,
    events: Vec<UsageEvent>,
    recorder: &Recorder,
    now: DateTime<Utc>,
) -> anyhow::Result<Ingested> {
    let count = events.len() as u64;
    let (db, subjects, recorder) = (db.clone(), subjects.clone(), recorder.clone());
    let accepted =
        tokio::spawn(
            async move { store_usage_events(&db, &subjects, events, recorder, now).await },
        )
        .await
        .map_err(|e| anyhow::anyhow!("the ledger write task failed: {e}"))??;
    let ingested = Ingested {
        accepted,
        duplicates: count - accepted,
    };
    metrics::counter!("gateway_usage_events_total", "outcome" => "accepted")
        .increment(ingested.accepted);
    metrics::counter!("gateway_usage_events_total", "outcome" => "duplicate")
        .increment(ingested.duplicates);
    Ok(ingested)
}

/// Validate, attribute and store a batch: the path the HTTP API and the importer share.
pub async fn ingest_batch(
    db: &Db,
    subjects: &Subjects,
    values: Vec<Value>,
    writer: Writer<'_>,
    known_partner: impl Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> Result<Ingested, IngestError> {
    let count = values.len() as u64;
    let events = match prepare_batch(values, writer, known_partner, now) {
        Ok(e) => e,
        Err(e) => {
            metrics::counter!("gateway_usage_events_total", "outcome" => "rejected")
                .increment(count);
            return Err(e);
        }
    };
    Ok(store_batch(db, subjects, events, writer.recorder, now).await?)
}
