//! Build facts the binary reports (`/healthz`, `/readyz`, `gateway_build_info`, `--version`):
//! the commit, from `GATEWAY_BUILD_COMMIT` (an image build without `.git`) or git. And
//! `cfg(pg_tests)` when `TEST_DATABASE_URL` is set, so the PostgreSQL variants of the tests
//! run then and are listed as ignored (with the reason) otherwise, never passed unrun.

use std::process::Command;

fn main() {
    println!("cargo::rerun-if-env-changed=GATEWAY_BUILD_COMMIT");
    println!("cargo::rerun-if-env-changed=TEST_DATABASE_URL");
    println!("cargo::rustc-check-cfg=cfg(pg_tests)");
    let commit = std::env::var("GATEWAY_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=PARTNER_GATEWAY_COMMIT={}", commit.trim());
    if std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.trim().is_empty()) {
        println!("cargo::rustc-cfg=pg_tests");
    }
}

/// The short commit id, and rerun when HEAD moves (the ref it points at, or a detached
/// HEAD). None outside a git checkout or without git.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let head = git(&["rev-parse", "--git-path", "HEAD"])?;
    println!("cargo::rerun-if-changed={head}");
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git(&["rev-parse", "--git-path", &reference]) {
            println!("cargo::rerun-if-changed={path}");
        }
        // A packed ref moves in packed-refs.
        if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
            println!("cargo::rerun-if-changed={packed}");
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}
