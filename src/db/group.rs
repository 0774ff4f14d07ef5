//! Group commit for SQLite. SQLite has one writer; each transaction holds the write lock for
//! BEGIN, its statements and COMMIT (with `synchronous = FULL`, an fsync of the WAL), each a
//! round trip to sqlx's connection thread. For small transactions BEGIN and COMMIT are most
//! of it. This shares them between callers without weakening them:
//!
//! - Writers of one process queue for the file's turn in order (a fair mutex).
//! - The first caller begins the transaction; each caller that joins it opens a savepoint.
//!   A caller's rollback (an error, a drop, a cancellation) undoes only its own part.
//! - At commit, if other writers are queued, the caller hands the open transaction on and
//!   waits; the last of the queue (or a flusher queued behind them) commits once for all,
//!   and every caller's `commit` returns only after that COMMIT is durable, with its
//!   result. A failed COMMIT fails every caller in the batch; nothing is reported committed
//!   that is not.
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

/// One caller's transaction: a savepoint in the file's shared write transaction (or, for
/// the first caller, the transaction itself), held with the write turn. Derefs to the
/// connection, so store code runs its queries on it as usual.
pub struct SqliteTx {
    /// Present until `commit` or drop takes it.
    tx: Option<Transaction<'static, Sqlite>>,
    turn: Option<OwnedMutexGuard<()>>,
    group: Arc<Group>,
    /// False for the caller that began the transaction: nobody else's work is in it while
    /// it holds the turn, so its undo is a plain rollback.
    savepoint: bool,
}

// Every caller's savepoint has the same name and none is released: `ROLLBACK TO` names the
// most recent one, which is always the current caller's, and COMMIT ends them all. That
// spares a round trip to SQLite per caller.
const SAVEPOINT: &str = "SAVEPOINT pgw_caller";
const ROLLBACK_TO: &str = "ROLLBACK TO pgw_caller";

/// Wait for the turn, then join the open transaction with a savepoint, or begin one.
pub async fn begin(pool: &SqlitePool, group: Arc<Group>) -> Result<SqliteTx, sqlx::Error> {
    let turn = group.take_turn().await;
    let open = group.state().open.take();
    let (tx, savepoint) = match open {
        Some(mut tx) => {
            if let Err(e) = sqlx::query(SAVEPOINT).execute(&mut *tx).await {
                fail_batch(&group, tx, &e).await;
                return Err(e);
            }
            (tx, true)
        }
        None => (pool.begin_with("BEGIN IMMEDIATE").await?, false),
    };
    Ok(SqliteTx {
        tx: Some(tx),
        turn: Some(turn),
        group,
        savepoint,
    })
}

impl SqliteTx {
    /// Return once the transaction holding this caller's work has been committed (by this
    /// caller, by the last of the queue, or by the flusher), with that commit's result.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let (Some(tx), Some(turn)) = (self.tx.take(), self.turn.take()) else {
            return Ok(());
        };
        let group = self.group.clone();
        match hand_on(&group, tx, true) {
            Next::HandedOn(receiver) => {
                drop(turn);
                await_shared(receiver).await
            }
            // In a task of its own: a caller cancelled mid-commit must not drop the shared
            // transaction (the batch's other callers wait for its result).
            Next::Now(tx, waiters) => {
                let task = tokio::spawn(async move { commit_now(&group, tx, waiters, turn).await });
                task.await.map_err(|e| {
                    tracing::error!(error = %e, "the task committing a transaction failed");
                    sqlx::Error::WorkerCrashed
                })?
            }
        }
    }
}

enum Next {
    /// Handed on: the flusher or the last of the queue commits; wait for it if ours.
    HandedOn(Option<oneshot::Receiver<Result<(), String>>>),
    /// Commit (or, with nobody's work in it, roll back) now and tell these.
    Now(Transaction<'static, Sqlite>, Vec<Waiter>),
}

/// Hand the open transaction to the writers queued behind (a flusher is queued too, so the
/// last of them is never left waiting), or say it must end now. `wait`: the caller's own
/// work is in it, so it waits for the result.
fn hand_on(group: &Arc<Group>, tx: Transaction<'static, Sqlite>, wait: bool) -> Next {
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
}

async fn await_shared(
    receiver: Option<oneshot::Receiver<Result<(), String>>>,
) -> Result<(), sqlx::Error> {
    match receiver {
        Some(r) => match r.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(shared_failure(msg)),
            Err(_) => Err(shared_failure("the shared transaction was dropped".into())),
        },
        None => Ok(()),
    }
}

/// Commit with the turn held (roll back when no one's work is in it), then tell the waiters.
async fn commit_now(
    group: &Arc<Group>,
    tx: Transaction<'static, Sqlite>,
    waiters: Vec<Waiter>,
    turn: OwnedMutexGuard<()>,
) -> Result<(), sqlx::Error> {
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
    // A caller committing reads its own result here (its waiter, above, was told the same).
    result
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
async fn undo(
    group: Arc<Group>,
    mut tx: Transaction<'static, Sqlite>,
    turn: OwnedMutexGuard<()>,
    savepoint: bool,
) {
    if !savepoint {
        // The caller began it and still held the turn: only its own work is in it.
        let e = sqlx::Error::Protocol("rolled back".into());
        fail_batch(&group, tx, &e).await;
        return;
    }
    if let Err(e) = sqlx::query(ROLLBACK_TO).execute(&mut *tx).await {
        fail_batch(&group, tx, &e).await;
        return;
    }
    let result = match hand_on(&group, tx, false) {
        Next::HandedOn(_) => Ok(()),
        Next::Now(tx, waiters) => commit_now(&group, tx, waiters, turn).await,
    };
    if let Err(e) = result {
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
                rt.spawn(undo(group, tx, turn, self.savepoint));
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
