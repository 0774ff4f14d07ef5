//! Usage events the gateway records on hot paths (one per proxied FHIR call) without a
//! commit per request: events queue in memory and a writer commits them in batches every
//! `smart.usage_flush_ms` (or at 500 events), deduplicated by id like any other event. On
//! shutdown the queue is flushed before the store closes. A crash loses at most the
//! events of the last interval; with an interval of 0 every event is committed before
//! `record` returns.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::UsageEvent;
use super::subject::Subjects;
use crate::db::Db;

/// Everything this recorder writes is the gateway's own (`fhir.request`).
const GATEWAY: super::authority::Recorder = super::authority::Recorder::Gateway;

const BATCH: usize = 500;
/// Queued events beyond this are refused (and counted) rather than growing without bound
/// while the store is down.
const MAX_QUEUED: usize = 100_000;

enum Msg {
    Event(UsageEvent),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct UsageRecorder {
    db: Db,
    subjects: Subjects,
    queue: Option<mpsc::Sender<Msg>>,
}

impl UsageRecorder {
    /// Start the writer task (when `flush` is non-zero).
    pub fn start(db: Db, subjects: Subjects, flush: Duration) -> UsageRecorder {
        if flush.is_zero() {
            return UsageRecorder {
                db,
                subjects,
                queue: None,
            };
        }
        let (tx, rx) = mpsc::channel(MAX_QUEUED);
        tokio::spawn(writer(db.clone(), subjects.clone(), rx, flush));
        UsageRecorder {
            db,
            subjects,
            queue: Some(tx),
        }
    }

    /// Record `event`: queued for the next batch, or written now when batching is off.
    pub async fn record(&self, event: UsageEvent) {
        match &self.queue {
            Some(q) => {
                if q.try_send(Msg::Event(event)).is_err() {
                    metrics::counter!("gateway_usage_events_total", "outcome" => "dropped")
                        .increment(1);
                    tracing::error!("usage queue full or closed: a fhir.request event was dropped");
                }
            }
            None => {
                if let Err(e) = super::ingest::store_batch(
                    &self.db,
                    &self.subjects,
                    vec![event],
                    &GATEWAY,
                    chrono::Utc::now(),
                )
                .await
                {
                    tracing::error!(error = format!("{e:#}"), "recording a usage event failed");
                }
            }
        }
    }

    /// Write everything queued so far; returns when it is committed (or given up).
    pub async fn flush(&self) {
        if let Some(q) = &self.queue {
            let (done, wait) = oneshot::channel();
            if q.send(Msg::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }
}

async fn writer(db: Db, subjects: Subjects, mut rx: mpsc::Receiver<Msg>, every: Duration) {
    let mut pending: Vec<UsageEvent> = Vec::new();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Event(e)) => {
                    pending.push(e);
                    if pending.len() >= BATCH {
                        write(&db, &subjects, &mut pending).await;
                    }
                }
                Some(Msg::Flush(done)) => {
                    write(&db, &subjects, &mut pending).await;
                    let _ = done.send(());
                }
                None => {
                    write(&db, &subjects, &mut pending).await;
                    return;
                }
            },
            _ = ticker.tick() => {
                if !pending.is_empty() {
                    write(&db, &subjects, &mut pending).await;
                }
            }
        }
    }
}

/// Commit `pending` in batches; on a store error keep the events for the next attempt.
async fn write(db: &Db, subjects: &Subjects, pending: &mut Vec<UsageEvent>) {
    while !pending.is_empty() {
        let n = pending.len().min(1000);
        let batch: Vec<UsageEvent> = pending[..n].to_vec();
        match super::ingest::store_batch(db, subjects, batch, &GATEWAY, chrono::Utc::now()).await {
            Ok(_) => {
                pending.drain(..n);
            }
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    queued = pending.len(),
                    "writing queued usage events failed; will retry"
                );
                if pending.len() > MAX_QUEUED {
                    let drop = pending.len() - MAX_QUEUED;
                    pending.drain(..drop);
                    metrics::counter!("gateway_usage_events_total", "outcome" => "dropped")
                        .increment(drop as u64);
                }
                return;
            }
        }
    }
}
