#!/usr/bin/env bash
# Incremental rebuild times after touching a simulator file and after touching a gateway
# file, for two revisions, in one run on one machine (docs/PERFORMANCE.md, "Build times").
#
#   scripts/rebuild-times.sh BEFORE_REV AFTER_REV [RUNS]
#
# Each revision is checked out in a worktree under /var/tmp and built once (warm-up); then
# for each touched file, RUNS times: touch it, time `cargo build --locked` (the library and
# the binary) and `cargo test --locked --no-run` (everything a test run compiles). The
# target dir is $CARGO_TARGET_DIR (default /var/tmp/rebuild-target): dependencies are
# shared, each worktree's own crates are not. Run it on a quiet machine.
set -euo pipefail
before=${1:?before revision}
after=${2:?after revision}
runs=${3:-3}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/rebuild-target}"
export CARGO_TERM_COLOR=never
repo=$(cd "$(dirname "$0")/.." && pwd)

sim_file() { # the mock EHR: in the library before the split, in crates/partner-sim after
  if [ -f "$1/crates/partner-sim/src/ehr.rs" ]; then echo crates/partner-sim/src/ehr.rs; else echo src/sandbox/ehr.rs; fi
}
gateway_file=src/metering/window.rs

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }

for rev in "$before" "$after"; do
  wt=/var/tmp/rebuild-$rev
  [ -d "$wt" ] || git -C "$repo" worktree add -q --detach "$wt" "$rev"
  (cd "$wt" && cargo build --locked >/dev/null 2>&1 && cargo test --locked --no-run >/dev/null 2>&1)
  for f in "$(sim_file "$wt")" "$gateway_file"; do
    for cmd in "cargo build --locked" "cargo test --locked --no-run"; do
      times=()
      for _ in $(seq 1 "$runs"); do
        touch "$wt/$f"
        # shellcheck disable=SC2086
        times+=("$(cd "$wt" && secs $cmd)")
      done
      median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p")
      printf '%s\t%s\t%s\tmedian %.1f s\t(runs: %s)\n' "$rev" "$f" "$cmd" "$median" "${times[*]}"
    done
  done
done
for rev in "$before" "$after"; do git -C "$repo" worktree remove --force "/var/tmp/rebuild-$rev" || true; done
