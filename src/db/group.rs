//! Group commit for SQLite. SQLite has one writer and, with `synchronous = FULL`, an fsync
//! per COMMIT, so one-change transactions are bound by the commit, not by the work (about
//! 0.6 ms each here). This shares commits between callers without weakening them:
//!
//! - Writers of one process queue for the file's turn in order (a fair mutex).
//! - Each caller's transaction is a savepoint inside a transaction that may hold other
//!   callers' finished work. Its rollback (or an error, or a drop) undoes only its own part.
//! - At commit the caller releases its savepoint. If other writers are queued, it hands the
//!   open transaction on and waits; the last of the queue (or a flusher queued behind them)
//!   commits once for all, and every caller's `commit` returns only after that COMMIT is
//!   durable, with its result. A failed COMMIT fails every caller in the batch; nothing is
//!   reported committed that is not.
//! - With no one queued, a caller commits at once: a lone writer waits for nobody.
//!
//! Other processes on the same file (`usage import`) still meet on SQLite's busy timeout.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::{OwnedMutexGuard, oneshot};

/// Most callers sharing one COMMIT (bounds how much a failed commit takes with it).
const MAX_BATCH: usize = 256;

type Waiter = oneshot::Sender<Result<(), String>>;

/// The write queue and the open shared transaction of one SQLite file in this process.
#[derive(Default)]
pub struct Group {
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Writers waiting for the turn (including a scheduled flusher).
    waiting: AtomicUsize,
    state: std::sync::Mutex<State>,
    /// COMMITs run, and callers' commits they carried (callers / commits = batch size).
    commits: AtomicU64,
    callers: AtomicU64,
}

/// How much commits were shared in this process, per SQLite file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    pub commits: u64,
    pub callers: u64,
}

#[derive(Default)]
struct State {
    /// A transaction holding released work of callers that wait for its commit.
    open: Option<Transaction<'static, Sqlite>>,
    waiters: Vec<Waiter>,
    /// A flusher is queued for the turn and will commit whatever is open when it gets it.
    flusher: bool,
}

impl Group {
    pub fn stats(&self) -> CommitStats {
        CommitStats {
            commits: self.commits.load(Ordering::Relaxed),
            callers: self.callers.load(Ordering::Relaxed),
        }
    }

    /// Count a COMMIT that carried `callers` callers' work.
    fn committed(&self, callers: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.callers.fetch_add(callers as u64, Ordering::Relaxed);
        metrics::counter!("gateway_sqlite_commits_total").increment(1);
        metrics::counter!("gateway_sqlite_committed_transactions_total").increment(callers as u64);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain takes and pushes under this lock: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn take_turn(self: &Arc<Self>) -> OwnedMutexGuard<()> {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        self.turn.clone().lock_owned().await
    }
}

/// One caller's transaction: a savepoint in the file's shared write transaction, held with
/// the write turn. Derefs to the connection, so store code runs its queries on it as usual.
pub struct SqliteTx {
    /// Present until `commit` or drop takes it.
    tx: Option<Transaction<'static, Sqlite>>,
    turn: Option<OwnedMutexGuard<()>>,
    group: Arc<Group>,
}

const SAVEPOINT: &str = "SAVEPOINT pgw_caller";
const RELEASE: &str = "RELEASE pgw_caller";
const ROLLBACK_TO: &str = "ROLLBACK TO pgw_caller";

/// Wait for the turn, join the open transaction (or begin one), and open this caller's
/// savepoint.
pub async fn begin(pool: &SqlitePool, group: Arc<Group>) -> Result<SqliteTx, sqlx::Error> {
    let turn = group.take_turn().await;
    let open = group.state().open.take();
    let joined = open.is_some();
    let mut tx = match open {
        Some(t) => t,
        None => pool.begin_with("BEGIN IMMEDIATE").await?,
    };
    if let Err(e) = sqlx::query(SAVEPOINT).execute(&mut *tx).await {
        if joined {
            fail_batch(&group, tx, &e).await;
        }
        return Err(e);
    }
    Ok(SqliteTx {
        tx: Some(tx),
        turn: Some(turn),
        group,
    })
}

impl SqliteTx {
    /// Release this caller's savepoint and return once the transaction holding it has been
    /// committed (by this caller or by the last of the batch).
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let (Some(tx), Some(turn)) = (self.tx.take(), self.turn.take()) else {
            return Ok(());
        };
        let group = self.group.clone();
        // In a task of its own: a caller cancelled mid-commit must not leave the shared
        // transaction half handed on (the batch's other callers wait for it).
        let task = tokio::spawn(async move {
            let mut tx = tx;
            if let Err(e) = sqlx::query(RELEASE).execute(&mut *tx).await {
                fail_batch(&group, tx, &e).await;
                drop(turn);
                return Err(e);
            }
            finish(&group, tx, turn, true).await
        });
        task.await.map_err(|e| {
            tracing::error!(error = %e, "the task committing a transaction failed");
            sqlx::Error::WorkerCrashed
        })?
    }
}

/// Commit now, or hand the open transaction to the writers queued behind (a flusher is
/// queued too, so the last of them is never left waiting). `wait`: this caller's own work is
/// in the batch, so it waits for the result.
async fn finish(
    group: &Arc<Group>,
    tx: Transaction<'static, Sqlite>,
    turn: OwnedMutexGuard<()>,
    wait: bool,
) -> Result<(), sqlx::Error> {
    enum Next {
        /// Handed on: the flusher or the last of the queue commits; wait for it if ours.
        HandedOn(Option<oneshot::Receiver<Result<(), String>>>),
        /// Commit (or, with nobody's work in it, roll back) now and tell these.
        Now(Transaction<'static, Sqlite>, Vec<Waiter>),
    }
    let next = {
        let mut st = group.state();
        let receiver = if wait {
            let (s, r) = oneshot::channel();
            st.waiters.push(s);
            Some(r)
        } else {
            None
        };
        let queued = group.waiting.load(Ordering::SeqCst) > 0;
        if queued && !st.waiters.is_empty() && st.waiters.len() < MAX_BATCH {
            st.open = Some(tx);
            if !st.flusher {
                st.flusher = true;
                tokio::spawn(flush(group.clone()));
            }
            Next::HandedOn(receiver)
        } else {
            Next::Now(tx, std::mem::take(&mut st.waiters))
        }
    };
    match next {
        Next::HandedOn(receiver) => {
            drop(turn);
            match receiver {
                Some(r) => match r.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(msg)) => Err(shared_failure(msg)),
                    Err(_) => Err(shared_failure("the shared transaction was dropped".into())),
                },
                None => Ok(()),
            }
        }
        Next::Now(tx, waiters) => {
            let result = if waiters.is_empty() {
                tx.rollback().await
            } else {
                let r = tx.commit().await;
                if r.is_ok() {
                    group.committed(waiters.len());
                }
                r
            };
            drop(turn);
            let shared = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
            for w in waiters {
                let _ = w.send(shared.clone());
            }
            // Our own result came through our waiter above when we had one; the direct
            // result is the same, and covers the rollback case.
            result
        }
    }
}

/// Queued behind the writers that were waiting when a batch was left open: commits
/// whatever is open when its turn comes.
async fn flush(group: Arc<Group>) {
    let turn = group.take_turn().await;
    let (open, waiters) = {
        let mut st = group.state();
        st.flusher = false;
        (st.open.take(), std::mem::take(&mut st.waiters))
    };
    let Some(tx) = open else {
        drop(turn);
        return;
    };
    let callers = waiters.len();
    let result = tx
        .commit()
        .await
        .map(|()| group.committed(callers))
        .map_err(|e| {
            tracing::error!(error = %e, callers = waiters.len(), "a shared SQLite commit failed");
            e.to_string()
        });
    drop(turn);
    for w in waiters {
        let _ = w.send(result.clone());
    }
}

/// The shared transaction can no longer be trusted (a savepoint statement failed: SQLite may
/// have rolled it all back): roll it back and fail every caller waiting on it.
async fn fail_batch(group: &Arc<Group>, tx: Transaction<'static, Sqlite>, e: &sqlx::Error) {
    let waiters = std::mem::take(&mut group.state().waiters);
    if !waiters.is_empty() {
        tracing::error!(error = %e, callers = waiters.len(), "a shared SQLite transaction failed; rolling it back");
    }
    let _ = tx.rollback().await;
    for w in waiters {
        let _ = w.send(Err(format!("the shared transaction was rolled back: {e}")));
    }
}

fn shared_failure(msg: String) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(format!(
        "the commit shared with other writers failed: {msg}"
    )))
}

/// Undo a caller's part after a drop without commit, then let the batch go on.
async fn undo(group: Arc<Group>, mut tx: Transaction<'static, Sqlite>, turn: OwnedMutexGuard<()>) {
    let undone = match sqlx::query(ROLLBACK_TO).execute(&mut *tx).await {
        Ok(_) => sqlx::query(RELEASE).execute(&mut *tx).await,
        Err(e) => Err(e),
    };
    if let Err(e) = undone {
        fail_batch(&group, tx, &e).await;
        return;
    }
    if let Err(e) = finish(&group, tx, turn, false).await {
        tracing::error!(error = %e, "committing other writers' work after a rollback failed");
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        let (Some(tx), Some(turn)) = (self.tx.take(), self.turn.take()) else {
            return;
        };
        let group = self.group.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(undo(group, tx, turn));
            }
            Err(_) => {
                // No runtime to undo in: dropping the transaction rolls all of it back, so
                // whoever waits on it is told so.
                let waiters = std::mem::take(&mut group.state().waiters);
                drop(tx);
                drop(turn);
                for w in waiters {
                    let _ = w.send(Err("the shared transaction was dropped".into()));
                }
            }
        }
    }
}

impl Deref for SqliteTx {
    type Target = SqliteConnection;

    #[allow(clippy::expect_used)]
    fn deref(&self) -> &SqliteConnection {
        // Only `commit` (which consumes self) and `drop` take it.
        self.tx
            .as_ref()
            .expect("a live SqliteTx holds its transaction")
    }
}

impl DerefMut for SqliteTx {
    #[allow(clippy::expect_used)]
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.tx
            .as_mut()
            .expect("a live SqliteTx holds its transaction")
    }
}
