//! wrk, the load generator the benches run in a process of its own: one run and its
//! figures, read from wrk's `--latency` output.

use std::time::Duration;

use anyhow::{Context, ensure};

/// What one wrk run reported.
#[derive(Debug, Clone)]
pub struct WrkRun {
    pub rps: f64,
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non2xx: u64,
    pub socket_errors: u64,
}

/// `wrk -t threads -c connections -d secs --latency` against `url` with `headers`.
pub async fn run(
    threads: usize,
    connections: usize,
    secs: Duration,
    url: &str,
    headers: &[String],
) -> anyhow::Result<WrkRun> {
    let mut cmd = tokio::process::Command::new("wrk");
    cmd.arg("-t")
        .arg(threads.to_string())
        .arg("-c")
        .arg(connections.to_string())
        .arg("-d")
        .arg(format!("{}s", secs.as_secs().max(1)))
        .arg("--timeout")
        .arg("10s")
        .arg("--latency");
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    let out = cmd
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "wrk failed ({}): {}{}",
        out.status,
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&text)
}

/// `1.23ms`, `456.78us`, `1.02s`, `2.00m` -> milliseconds.
pub fn ms(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, mul) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * mul)
}

/// The figures of wrk's `--latency` output.
pub fn parse(out: &str) -> anyhow::Result<WrkRun> {
    let mut rps = None;
    let mut requests = None;
    let (mut p50, mut p99) = (None, None);
    let (mut non2xx, mut socket) = (0u64, 0u64);
    for line in out.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = l.strip_prefix("50%") {
            p50 = ms(v);
        } else if let Some(v) = l.strip_prefix("99%") {
            p99 = ms(v);
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            non2xx = v.trim().parse().unwrap_or(u64::MAX);
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            socket = v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if l.contains(" requests in ") {
            requests = l.split_whitespace().next().and_then(|n| n.parse().ok());
        }
    }
    Ok(WrkRun {
        rps: rps.with_context(|| format!("no Requests/sec in wrk's output:\n{out}"))?,
        requests: requests.with_context(|| format!("no request count in wrk's output:\n{out}"))?,
        p50_ms: p50.with_context(|| format!("no 50% latency in wrk's output:\n{out}"))?,
        p99_ms: p99.with_context(|| format!("no 99% latency in wrk's output:\n{out}"))?,
        non2xx,
        socket_errors: socket,
    })
}

/// wrk's version line, when wrk is installed.
pub fn version() -> Option<String> {
    // `wrk -v` prints its version and exits non-zero.
    let out = std::process::Command::new("wrk").arg("-v").output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .next()
        .filter(|l| l.starts_with("wrk"))
        .map(|l| l.split(" [").next().unwrap_or(l).trim().to_owned())
}
