#!/usr/bin/env bash
# Browser check of `partner-gateway sandbox`: headless Chromium (Debian's package) driven by
# playwright-core clicks from the start page through the EHR launch (Epic) and the LTI
# launches (Canvas, Moodle) to the sample app, checks the context it shows, posts a grade,
# and takes a screenshot of every page (tests/browser/sandbox.mjs).
#
#   scripts/browser-sandbox.sh                    # builds the gateway: cargo build --release --locked
#   PGW_BIN=target/debug/partner-gateway scripts/browser-sandbox.sh   # uses that binary
#
# Environment: PGW_BIN (the gateway binary), SCREENSHOTS (default
# $CARGO_TARGET_DIR/browser-screenshots, or target/browser-screenshots), INTEROP_KEEP_TMP=1
# (keep the sandbox's data directory and log). Installs `chromium` (apt-get) when missing
# and playwright-core (pinned in tests/browser/package-lock.json) into a cache directory
# outside the repository. Prints "browser-sandbox: ok" and exits 0 when every check passed;
# otherwise prints the failures and the sandbox log's tail and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

name=browser-sandbox
# shellcheck source=scripts/lib/interop.sh
. "$root/scripts/lib/interop.sh"
# Not an interop check: its own prefix (interop_gateway_bin logs through these).
say() { printf 'browser-sandbox: %s\n' "$*" >&2; }
fail() {
  say "$*"
  echo "browser-sandbox: FAILED"
  exit 1
}

chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  say "installing Debian's chromium"
  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || fail "apt-get install chromium failed"
fi
[ -x "$chromium" ] || fail "no Chromium at $chromium"
command -v node >/dev/null || fail "node is not installed (Debian: apt-get install nodejs npm)"

# playwright-core from npm, exactly as locked, in a per-user cache (never in the repository).
cache="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/partner-gateway/browser-node"
mkdir -p "$cache" 2>/dev/null || cache="${TMPDIR:-/tmp}/partner-gateway-browser-node"
mkdir -p "$cache"
want=$(cat tests/browser/package.json tests/browser/package-lock.json | sha256sum | cut -d' ' -f1)
if [ "$(cat "$cache/node_modules/.browser-sandbox-package" 2>/dev/null || true)" != "$want" ]; then
  say "installing tests/browser/package-lock.json into $cache"
  cp tests/browser/package.json tests/browser/package-lock.json "$cache/"
  (cd "$cache" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || fail "npm ci failed"
  echo "$want" >"$cache/node_modules/.browser-sandbox-package"
fi

interop_gateway_bin

work=$(mktemp -d "${TMPDIR:-/tmp}/browser-sandbox.XXXXXX")
sbx_pid=""
cleanup() {
  local status=$?
  if [ -n "$sbx_pid" ] && kill -0 "$sbx_pid" 2>/dev/null; then
    kill -INT "$sbx_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$sbx_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$sbx_pid" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -s "$work/sandbox.log" ]; then
    say "sandbox.log (last 40 lines):"
    tail -n 40 "$work/sandbox.log" >&2
  fi
  if [ "${INTEROP_KEEP_TMP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r gw_port site_port < <(node -e '
const net = require("net");
const a = net.createServer().listen(0, "127.0.0.1", () => {
  const b = net.createServer().listen(0, "127.0.0.1", () => {
    console.log(a.address().port, b.address().port); a.close(); b.close();
  });
});')
start="http://127.0.0.1:$site_port/sandbox"

# As the README says, with its own data directory (never data/gateway.db).
NO_COLOR=1 RUST_LOG=warn "$PGW_BIN" sandbox --port "$gw_port" --site-port "$site_port" \
  --data-dir "$work/data" >"$work/sandbox.log" 2>&1 &
sbx_pid=$!
ready=""
for _ in $(seq 1 300); do
  kill -0 "$sbx_pid" 2>/dev/null || fail "the sandbox exited during start-up"
  if grep -q "Start page:" "$work/sandbox.log" 2>/dev/null &&
    node -e 'fetch(process.argv[1]).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$start"; then
    ready=1
    break
  fi
  sleep 0.2
done
[ -n "$ready" ] || fail "the sandbox did not answer at $start within 60 s"
say "sandbox up: $start"

shots=${SCREENSHOTS:-${CARGO_TARGET_DIR:-$root/target}/browser-screenshots}
rm -rf "$shots"
START_URL="$start" SCREENSHOTS="$shots" PLAYWRIGHT_MODULES="$cache/node_modules" CHROMIUM="$chromium" \
  node tests/browser/sandbox.mjs || fail "the browser checks failed (screenshots in $shots)"

# Ctrl-C, as a person stops it: everything must stop cleanly and the process exit 0.
kill -INT "$sbx_pid"
stopped=""
for _ in $(seq 1 300); do
  if ! kill -0 "$sbx_pid" 2>/dev/null; then stopped=1; break; fi
  sleep 0.1
done
[ -n "$stopped" ] || fail "the sandbox did not stop within 30 s of Ctrl-C"
code=0
wait "$sbx_pid" || code=$?
sbx_pid=""
[ "$code" -eq 0 ] || fail "the sandbox exited with $code after Ctrl-C"
say "screenshots in $shots"
echo "browser-sandbox: ok"
