#!/usr/bin/env bash
# Proxy bench (benches/proxy.rs): the gateway's FHIR proxy beside nginx in front of the same
# upstream (at once / 2 ms; Content-Length / chunked), and the idle CPU with many usage
# thresholds. Installs wrk and nginx (Debian packages) when missing, builds the release
# binary, then runs the bench against it.
#
#   scripts/bench-proxy.sh                            # 3 rounds of 5 s, medians
#   scripts/bench-proxy.sh --duration 10 --rounds 5   # options: see benches/proxy.rs
#
# CARGO_TARGET_DIR is respected. Only 127.0.0.1 is contacted.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '%s\n' "$*" >&2; }

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need+=(nginx)
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]} (Debian packages)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
  $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
    $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
  }
fi

TARGET_DIR=${CARGO_TARGET_DIR:-target}
say "== cargo build --release"
cargo build --release --locked >&2
exec cargo bench --locked --bench proxy -- --bin "$TARGET_DIR/release/partner-gateway" "$@"
