//! CPU accounting from Linux `/proc`: how busy the whole machine was between two points
//! (and whether the hypervisor took time away: steal), and this process's own CPU time.

use std::sync::OnceLock;

use super::facts::shell;

/// Machine-wide CPU use between two points (`/proc/stat`).
pub struct CpuSample(Option<Vec<u64>>);

impl CpuSample {
    fn read() -> Option<Vec<u64>> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        line.split_whitespace()
            .skip(1)
            .map(|v| v.parse().ok())
            .collect()
    }

    pub fn now() -> Self {
        CpuSample(Self::read())
    }

    /// The machine's CPU time since the sample, by kind; None without `/proc/stat` or when
    /// no tick has passed.
    pub fn since(&self) -> Option<CpuShare> {
        let (Some(a), Some(b)) = (&self.0, Self::read()) else {
            return None;
        };
        let d: Vec<u64> = b.iter().zip(a).map(|(b, a)| b.saturating_sub(*a)).collect();
        if d.len() < 8 {
            return None;
        }
        let total: u64 = d.iter().take(8).sum();
        if total == 0 {
            return None;
        }
        Some(CpuShare { d, total })
    }
}

/// Ticks of all cores between two samples: user, nice, system, idle, iowait, irq, softirq,
/// steal, ...; `total` is the sum of the first eight.
pub struct CpuShare {
    d: Vec<u64>,
    total: u64,
}

impl CpuShare {
    fn pct(&self, v: u64) -> f64 {
        v as f64 * 100.0 / self.total as f64
    }
    /// Busy % of all cores: neither idle nor waiting for I/O.
    pub fn busy(&self) -> f64 {
        self.pct(self.total - self.d[3] - self.d[4])
    }
    pub fn iowait(&self) -> f64 {
        self.pct(self.d[4])
    }
    /// Time the hypervisor gave this VM's CPUs to others, %.
    pub fn steal(&self) -> f64 {
        self.pct(self.d[7])
    }
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`, else 100).
pub fn ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        shell("getconf", &["CLK_TCK"])
            .and_then(|s| s.parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds of this process (the gateway, the mocks and the bench's clients when they run
/// in it) and of its reaped children (wrk), from `/proc/self/stat`.
#[derive(Clone, Copy, Default)]
pub struct ProcCpu {
    pub own: f64,
    pub children: f64,
}

impl ProcCpu {
    pub fn read() -> Option<ProcCpu> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        // After the command: state (field 3) ... utime 14, stime 15, cutime 16, cstime 17.
        let at = |field: usize| f.get(field - 3).copied().unwrap_or(0.0);
        Some(ProcCpu {
            own: (at(14) + at(15)) / ticks(),
            children: (at(16) + at(17)) / ticks(),
        })
    }
}
