#!/usr/bin/env bash
# SMART bench: launches/s through the gateway against the mock EHR, and the FHIR proxy
# against the mock FHIR server called directly (throughput with wrk, added latency), in one
# run. Installs wrk (Debian package) when it is missing, then runs the bench in release.
#
#   scripts/bench-smart.sh                                  # SQLite in a temporary directory
#   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/bench-smart.sh
#                                                           # ... then PostgreSQL, fresh schema
#   scripts/bench-smart.sh --duration 10 --rounds 5         # options: see benches/smart.rs
#
# CARGO_TARGET_DIR is respected. Only 127.0.0.1 is contacted.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '%s\n' "$*" >&2; }

if ! command -v wrk >/dev/null 2>&1; then
  say "wrk is not installed; installing it with apt-get"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
  $SUDO apt-get install -y wrk >/dev/null 2>&1 || {
    $SUDO apt-get update >/dev/null && $SUDO apt-get install -y wrk >/dev/null
  } || say "warning: could not install wrk; the bench falls back to an in-process load generator"
fi

exec cargo bench --bench smart -- "$@"
