//! Group insert for PostgreSQL: the counterpart of SQLite's group commit (`crate::db`). A
//! single event's durable write is mostly the statement's round trip and its WAL flush, the
//! same for one row as for hundreds. So writers that arrive while a write is in flight queue
//! up, and the next write takes all of them in one self-committing statement:
//!
//! - each writer gets the number of its own events that were new (the statement returns the
//!   keys it stored; a key sent by two writers of one group is credited to the first, as a
//!   key repeated within one batch is);
//! - nothing is reported stored before the statement has committed;
//! - if the grouped statement fails, each writer's events are written again on their own, so
//!   one writer's bad batch cannot fail the others;
//! - a lone writer waits for nobody: with no write in flight it is written at once.
//!
//! Each pool (one per database and schema) has its own queue.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::oneshot;

use super::UsageEvent;
use super::authority::Recorder;
use super::store::{GroupPart, insert_postgres_group};

/// Most events in one grouped statement (a writer's batch is never split).
const MAX_EVENTS: usize = 2000;

struct Waiting {
    events: Vec<UsageEvent>,
    recorder: Recorder,
    received_at: DateTime<Utc>,
    done: oneshot::Sender<Result<u64, sqlx::Error>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// A task is writing; it takes whatever is queued when its write ends.
    writing: bool,
}

type Queues = Mutex<HashMap<usize, Arc<Mutex<Queue>>>>;

static QUEUES: LazyLock<Queues> = LazyLock::new(Default::default);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain pushes and takes under these locks: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The queue of `pool`: its connect options live as long as the pool, so their address
/// names it.
fn queue_of(pool: &PgPool) -> Arc<Mutex<Queue>> {
    let id = Arc::as_ptr(&pool.connect_options()) as usize;
    lock(&QUEUES).entry(id).or_default().clone()
}

/// Store `events` (already checked against the write rules); returns how many were new,
/// once they are committed.
pub async fn store(
    pool: &PgPool,
    events: Vec<UsageEvent>,
    recorder: Recorder,
    received_at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let queue = queue_of(pool);
    let (done, answer) = oneshot::channel();
    let start = {
        let mut q = lock(&queue);
        q.waiting.push(Waiting {
            events,
            recorder,
            received_at,
            done,
        });
        !std::mem::replace(&mut q.writing, true)
    };
    if start {
        // A task of its own: it writes for others too, and must not be cancelled with a
        // caller, nor hold up the caller's answer while it writes theirs.
        tokio::spawn(write_all(pool.clone(), queue));
    }
    answer.await.unwrap_or_else(|_| {
        Err(sqlx::Error::Protocol(
            "the ledger's group writer stopped before answering".into(),
        ))
    })
}

/// Write queued groups until the queue is empty.
async fn write_all(pool: PgPool, queue: Arc<Mutex<Queue>>) {
    loop {
        let group = {
            let mut q = lock(&queue);
            if q.waiting.is_empty() {
                q.writing = false;
                return;
            }
            take_group(&mut q.waiting)
        };
        write_group(&pool, group).await;
    }
}

/// The first writers of the queue, up to [`MAX_EVENTS`] events (at least one writer).
fn take_group(waiting: &mut Vec<Waiting>) -> Vec<Waiting> {
    let mut total = 0;
    let mut n = 0;
    for w in waiting.iter() {
        if n > 0 && total + w.events.len() > MAX_EVENTS {
            break;
        }
        total += w.events.len();
        n += 1;
    }
    waiting.drain(..n).collect()
}

async fn write_group(pool: &PgPool, group: Vec<Waiting>) {
    let parts: Vec<GroupPart<'_>> = group
        .iter()
        .map(|w| GroupPart {
            events: &w.events,
            recorder: &w.recorder,
            received_at: w.received_at,
        })
        .collect();
    let result = insert_postgres_group(pool, &parts).await;
    drop(parts);
    match result {
        Ok(stored) => {
            metrics::counter!("gateway_postgres_ledger_writes_total").increment(1);
            let counts = credit(&group, stored);
            for (w, n) in group.into_iter().zip(counts) {
                let _ = w.done.send(Ok(n));
            }
        }
        Err(e) if group.len() == 1 => {
            if let Some(w) = group.into_iter().next() {
                let _ = w.done.send(Err(e));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, writers = group.len(), "a grouped ledger write failed; writing each writer's events alone");
            for w in group {
                let part = [GroupPart {
                    events: &w.events,
                    recorder: &w.recorder,
                    received_at: w.received_at,
                }];
                let alone = insert_postgres_group(pool, &part).await;
                metrics::counter!("gateway_postgres_ledger_writes_total").increment(1);
                let _ = w.done.send(alone.map(|stored| stored.len() as u64));
            }
        }
    }
}

/// How many of each writer's events were new, given the keys the statement stored: each
/// stored key goes to the first writer (in queue order) that sent it, once.
fn credit(group: &[Waiting], stored: Vec<(String, String, String)>) -> Vec<u64> {
    let mut fresh: HashSet<(String, String, String)> = stored.into_iter().collect();
    group
        .iter()
        .map(|w| {
            w.events
                .iter()
                .filter(|e| fresh.remove(&(e.partner_id.clone(), e.source.clone(), e.id.clone())))
                .count() as u64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> UsageEvent {
        UsageEvent {
            partner_id: "p".into(),
            id: id.into(),
            source: "s".into(),
            event_type: "t".into(),
            subject: None,
            time: Utc::now(),
            data: None,
            extensions: None,
        }
    }

    fn waiting(ids: &[&str]) -> Waiting {
        Waiting {
            events: ids.iter().map(|i| event(i)).collect(),
            recorder: Recorder::Gateway,
            received_at: Utc::now(),
            done: oneshot::channel().0,
        }
    }

    fn key(id: &str) -> (String, String, String) {
        ("p".into(), "s".into(), id.into())
    }

    #[test]
    fn a_stored_key_counts_once_for_the_first_writer_that_sent_it() {
        let group = vec![
            waiting(&["a", "b", "a"]),
            waiting(&["b", "c"]),
            waiting(&["d"]),
        ];
        // "d" was already in the ledger: not returned.
        let stored = vec![key("a"), key("b"), key("c")];
        assert_eq!(credit(&group, stored), [2, 1, 0]);
    }

    #[test]
    fn a_group_takes_whole_writers_up_to_the_limit() {
        let many: Vec<String> = (0..MAX_EVENTS - 1).map(|i| i.to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut q = vec![waiting(&many), waiting(&["x", "y"]), waiting(&["z"])];
        assert_eq!(take_group(&mut q).len(), 1);
        assert_eq!(take_group(&mut q).len(), 2);
        assert!(q.is_empty());
        // A writer bigger than the limit still goes, alone.
        let huge: Vec<String> = (0..MAX_EVENTS + 5).map(|i| i.to_string()).collect();
        let huge: Vec<&str> = huge.iter().map(String::as_str).collect();
        let mut q = vec![waiting(&huge), waiting(&["x"])];
        assert_eq!(take_group(&mut q).len(), 1);
        assert_eq!(q.len(), 1);
    }
}
