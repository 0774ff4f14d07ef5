//! The facts a report starts with: the command that ran, the commit, the machine.

/// The trimmed output of a command that succeeded and printed something.
pub fn shell(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// The checkout's commit, abbreviated.
pub fn commit() -> Option<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    shell("git", &["-C", root, "rev-parse", "--short", "HEAD"])
}

/// The command that ran `cargo bench --bench {bench}`, to repeat it (the database URL without
/// its password).
pub fn command_line(bench: &str) -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let db = match std::env::var("BENCH_DATABASE_URL") {
        Ok(u) if !u.is_empty() => format!(
            "BENCH_DATABASE_URL={} ",
            partner_gateway::db::redact_url(&u)
        ),
        _ => String::new(),
    };
    if args.is_empty() {
        format!("{db}cargo bench --bench {bench}")
    } else {
        format!("{db}cargo bench --bench {bench} -- {}", args.join(" "))
    }
}

/// The commit (and uncommitted changes), the machine, the compiler.
pub fn machine_facts() -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let commit = commit().unwrap_or_else(|| "unknown".into());
    let dirty = shell(
        "git",
        &[
            "-C",
            root,
            "status",
            "--porcelain",
            "--",
            "src",
            "Cargo.toml",
        ],
    )
    .map(|s| {
        format!(
            " (+ {} uncommitted changes under src/ or Cargo.toml)",
            s.lines().count()
        )
    })
    .unwrap_or_default();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let kernel = shell("uname", &["-sr"]).unwrap_or_else(|| "?".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let rustc = shell("rustc", &["--version"]).unwrap_or_else(|| "rustc ?".into());
    vec![
        format!("commit `{commit}`{dirty}"),
        format!("machine: nproc {nproc}, {cpu}, {mem} RAM, {kernel}"),
        format!("{rustc}, release profile (cargo bench)"),
    ]
}
