//! Concurrent workers repeating one operation, and what they measured.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::cpu::{CpuSample, ProcCpu};
use super::stats::{ms, percentile};

/// A block of operations: how many completed in how long, each one's time, the failures.
#[derive(Default)]
pub struct Stats {
    pub ops: usize,
    pub elapsed: Duration,
    pub times: Vec<Duration>,
    pub failures: usize,
    pub first_error: Option<String>,
    /// CPU of this process per op, µs.
    pub cpu_us: Option<f64>,
    /// Machine busy %, all cores.
    pub busy_pct: Option<f64>,
}

impl Stats {
    /// One operation's outcome: its time since `started`, or its failure.
    pub fn record(&mut self, started: Instant, outcome: anyhow::Result<()>) {
        match outcome {
            Ok(()) => self.times.push(started.elapsed()),
            Err(e) => {
                self.failures += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    /// Two blocks of the same operation as one.
    pub fn merge(mut self, other: Stats) -> Stats {
        let n = (self.ops + other.ops).max(1) as f64;
        let secs = (self.elapsed + other.elapsed).as_secs_f64().max(1e-9);
        self.cpu_us = match (self.cpu_us, other.cpu_us) {
            (Some(a), Some(b)) => Some((a * self.ops as f64 + b * other.ops as f64) / n),
            _ => None,
        };
        self.busy_pct = match (self.busy_pct, other.busy_pct) {
            (Some(a), Some(b)) => {
                Some((a * self.elapsed.as_secs_f64() + b * other.elapsed.as_secs_f64()) / secs)
            }
            _ => None,
        };
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.times.extend(other.times);
        self.failures += other.failures;
        self.first_error = self.first_error.or(other.first_error);
        self
    }

    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` percentile of the times, ms.
    pub fn p(&self, q: f64) -> f64 {
        let mut s = self.times.clone();
        s.sort();
        ms(percentile(&s, q))
    }

    /// "; N FAILED, first: ..." when some failed, else nothing.
    pub fn failed_note(&self) -> String {
        if self.failures > 0 {
            format!(
                "; {} FAILED, first: {}",
                self.failures,
                self.first_error.as_deref().unwrap_or("")
            )
        } else {
            String::new()
        }
    }
}

/// `f`'s stats with the CPU it took.
pub async fn with_cpu(f: impl Future<Output = Stats>) -> Stats {
    let cpu = CpuSample::now();
    let before = ProcCpu::read();
    let mut s = f.await;
    if let (Some(b), Some(a)) = (before, ProcCpu::read())
        && s.ops > 0
    {
        s.cpu_us = Some((a.own - b.own) * 1e6 / s.ops as f64);
    }
    s.busy_pct = cpu.since().map(|c| c.busy());
    s
}

/// `workers` tasks running `op` until `secs` have passed; `op` gets a sequence number.
pub async fn for_secs<F, Fut>(workers: usize, secs: f64, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    run(workers, move |_| Instant::now() < deadline, op).await
}

/// `workers` tasks sharing the items `0..n`.
pub async fn for_items<F, Fut>(workers: usize, n: usize, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    run(workers, move |i| i < n, op).await
}

/// `workers` tasks taking sequence numbers from one counter and running `op` on each while
/// `go` holds for it.
async fn run<G, F, Fut>(workers: usize, go: G, op: F) -> Stats
where
    G: Fn(usize) -> bool + Send + Sync + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let (go, op) = (Arc::new(go), Arc::new(op));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (go, op, next) = (go.clone(), op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = Stats::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if !go(i) {
                    break;
                }
                let t0 = Instant::now();
                s.record(t0, op(i).await);
            }
            s
        }));
    }
    collect(tasks, started).await
}

/// The workers' stats as one block that started at `started` and ends now.
pub async fn collect(tasks: Vec<tokio::task::JoinHandle<Stats>>, started: Instant) -> Stats {
    let mut all = Stats::default();
    for task in tasks {
        match task.await {
            Ok(s) => {
                all.times.extend(s.times);
                all.failures += s.failures;
                if all.first_error.is_none() {
                    all.first_error = s.first_error;
                }
            }
            Err(e) => {
                all.failures += 1;
                all.first_error
                    .get_or_insert_with(|| format!("a worker panicked: {e}"));
            }
        }
    }
    all.elapsed = started.elapsed();
    all.ops = all.times.len();
    all
}
