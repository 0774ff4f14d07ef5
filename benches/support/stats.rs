//! Timing summaries.

use std::time::Duration;

/// The value at `p` (0.0..=1.0) of sorted durations, nearest rank; zero when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The times of repeated runs of one thing, in the order they ran.
#[derive(Clone, Default)]
pub struct Timings(pub Vec<Duration>);

impl Timings {
    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.0.clone();
        v.sort();
        v
    }
    pub fn min(&self) -> Duration {
        self.sorted()[0]
    }
    pub fn median(&self) -> Duration {
        percentile(&self.sorted(), 0.5)
    }
    pub fn max(&self) -> Duration {
        percentile(&self.sorted(), 1.0)
    }
    /// The value at `p` (0.0..=1.0), nearest rank: `p(0.95)` is the p95.
    pub fn p(&self, p: f64) -> Duration {
        percentile(&self.sorted(), p)
    }
    /// "min .. ms, median .. ms, max .. ms (runs in order: .. ms)", the three figures `width`
    /// wide with `decimals` decimals.
    pub fn show(&self, width: usize, decimals: usize) -> String {
        let runs: Vec<String> = self.0.iter().map(|d| format!("{:.0}", ms(*d))).collect();
        format!(
            "min {:>width$.decimals$} ms, median {:>width$.decimals$} ms, max {:>width$.decimals$} ms \
             (runs in order: {} ms)",
            ms(self.min()),
            ms(self.median()),
            ms(self.max()),
            runs.join(", ")
        )
    }
}

/// The median of `v` (0 when empty).
pub fn median_f64(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}
