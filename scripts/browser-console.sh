#!/usr/bin/env bash
# Browser check of the console (/console): headless Chromium (Debian's package) driven by
# playwright-core signs in with single-use links as finance, as a partner user and as an
# admin, runs October 2026's month-end, adjusts and finalizes statements, downloads a PDF,
# charts usage, checks the partner sees only its own statements, that a form without its
# CSRF token and an idle session are refused, runs axe-core on every page (any serious or
# critical violation fails) and takes a screenshot of every page (tests/browser/console.mjs).
#
#   scripts/browser-console.sh                    # builds the gateway: cargo build --release --locked
#   PGW_BIN=target/debug/partner-gateway scripts/browser-console.sh   # uses that binary
#
# The gateway runs `serve` on a copy of config/ with a SQLite database and a master key in a
# temporary directory, seeded with October 2026: epic-sandbox's revenue through `usage
# import` (as the billing system's file would come) and canvas-sandbox's LTI launches
# written into the ledger as the gateway records its own (`usage import` refuses the
# gateway's event types, by design).
#
# Environment: PGW_BIN (the gateway binary), SCREENSHOTS (default
# $CARGO_TARGET_DIR/browser-screenshots, or target/browser-screenshots; this script replaces
# only its own console-*.png there), INTEROP_KEEP_TMP=1 (keep the data directory and the
# log). Installs `chromium` (apt-get) when missing, and playwright-core and axe-core (pinned
# in tests/browser/package-lock.json) into a cache directory outside the repository. Prints
# "browser-console: ok" and exits 0 when every check passed; otherwise prints the failures
# and the gateway log's tail and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

name=browser-console
# shellcheck source=scripts/lib/interop.sh
. "$root/scripts/lib/interop.sh"
# Not an interop check: its own prefix (interop_gateway_bin logs through these).
say() { printf 'browser-console: %s\n' "$*" >&2; }
fail() {
  say "$*"
  echo "browser-console: FAILED"
  exit 1
}

chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  say "installing Debian's chromium"
  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || fail "apt-get install chromium failed"
fi
[ -x "$chromium" ] || fail "no Chromium at $chromium"
command -v node >/dev/null || fail "node is not installed (Debian: apt-get install nodejs npm)"
command -v python3 >/dev/null || fail "python3 is not installed (it writes the seeded launches into SQLite)"

# playwright-core and axe-core from npm, exactly as locked, in the per-user cache
# scripts/browser-sandbox.sh uses too (never in the repository).
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

work=$(mktemp -d "${TMPDIR:-/tmp}/browser-console.XXXXXX")
gw_pid=""
cleanup() {
  local status=$?
  if [ -n "$gw_pid" ]; then interop_stop "$gw_pid"; fi
  if [ "$status" -ne 0 ] && [ -s "$work/gateway.log" ]; then
    say "gateway.log (last 40 lines):"
    tail -n 40 "$work/gateway.log" >&2
  fi
  if [ "${INTEROP_KEEP_TMP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Nothing from a shell set up for another gateway leaks in: this run's settings only.
while IFS= read -r var; do
  case $var in GATEWAY__* | GATEWAY_MASTER_KEY) unset "$var" ;; esac
done < <(compgen -e)

port=$(node -e '
const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });')
base="http://127.0.0.1:$port"
cp -R config "$work/config"
# The partner's webhook endpoint in the browser check is a receiver on loopback, over http.
sed -i -e 's/^allow_http = false/allow_http = true/' \
  -e 's/^private_networks = \[\]/private_networks = ["127.0.0.1"]/' "$work/config/gateway.toml"
grep -q '^private_networks = \["127.0.0.1"\]' "$work/config/gateway.toml" ||
  fail "could not allow the loopback webhook receiver in the copied config"
db="$work/gateway.db"
export GATEWAY__DATABASE__URL="sqlite://$db"
export GATEWAY__HTTP__ADDR="127.0.0.1:$port"
export GATEWAY__KEYS__MASTER_KEY_FILE="$work/master.key"
export GATEWAY__TELEMETRY__LOG_LEVEL=warn
# Events received a moment ago count at once (the default waits 60 s for stragglers).
export GATEWAY__STATEMENTS__SETTLE_SECS=0
export NO_COLOR=1 RUST_LOG=warn

gw migrate >>"$work/gateway.log" 2>&1 || fail "migrate failed"

# October 2026. Epic's billing system: two paid invoices (the revenue share's basis).
cat >"$work/revenue.ndjson" <<'EOF'
{"specversion":"1.0","id":"bc-inv-1","source":"/billing","partner":"epic-sandbox","type":"revenue.recognized","time":"2026-10-03T15:00:00Z","data":{"amount":"12000.00","currency":"USD","product":"care-pathways","customer":"Mercy"}}
{"specversion":"1.0","id":"bc-inv-2","source":"/billing","partner":"epic-sandbox","type":"revenue.recognized","time":"2026-10-20T15:00:00Z","data":{"amount":"3450.55","currency":"USD","product":"care-pathways","customer":"Mercy"}}
EOF
gw usage import "$work/revenue.ndjson" >>"$work/gateway.log" 2>&1 || fail "usage import failed"
# Canvas: learners' LTI launches, as the gateway records them (recorded_by 'gateway'). The
# subjects go in as sent (subject_form 0); the gateway turns them into pseudonyms as it
# starts, as it does for rows written before pseudonyms.
python3 - "$db" <<'EOF' || fail "seeding the LTI launches failed"
import sqlite3, sys
from datetime import datetime, timezone

def us(s):
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1_000_000)

received = us("2026-11-02T09:00:00Z")
launches = [
    ("bc-l1", "learner-1", "2026-10-05T14:00:00Z"),
    ("bc-l2", "learner-2", "2026-10-06T15:30:00Z"),
    ("bc-l3", "learner-1", "2026-10-15T12:00:00Z"),
    ("bc-l4", "learner-3", "2026-10-21T18:45:00Z"),
    ("bc-l5", "learner-4", "2026-10-28T13:10:00Z"),
]
with sqlite3.connect(sys.argv[1]) as c:
    c.executemany(
        "INSERT INTO usage_events (partner_id, source, event_id, type, subject, time_us, "
        "received_at_us, sandbox, recorded_by, subject_form) "
        "VALUES ('canvas-sandbox', '/lti', ?, 'lti.launch', ?, ?, ?, FALSE, 'gateway', 0)",
        [(i, s, us(t), received) for i, s, t in launches],
    )
EOF

# Started directly (not through gw, a function: $! would be a subshell's pid).
"$PGW_BIN" --config "$work/config" serve >>"$work/gateway.log" 2>&1 &
gw_pid=$!
ready=""
for _ in $(seq 1 150); do
  kill -0 "$gw_pid" 2>/dev/null || fail "the gateway exited during start-up"
  if node -e 'fetch(process.argv[1]).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$base/readyz"; then
    ready=1
    break
  fi
  sleep 0.2
done
[ -n "$ready" ] || fail "the gateway did not become ready at $base within 30 s"
say "gateway up: $base"

# The sign-in links, each on stdout alone, as an operator prints them.
finance_link=$(gw console link --role finance 2>>"$work/gateway.log") || fail "console link --role finance failed"
partner_link=$(gw console invite --partner canvas-sandbox --email ana@canvas.example --role partner-admin 2>>"$work/gateway.log") ||
  fail "console invite failed"
admin_link=$(gw console link --role admin 2>>"$work/gateway.log") || fail "console link --role admin failed"

shots=${SCREENSHOTS:-${CARGO_TARGET_DIR:-$root/target}/browser-screenshots}
mkdir -p "$shots"
rm -f "$shots"/console-*.png
BASE_URL="$base" FINANCE_LINK="$finance_link" PARTNER_LINK="$partner_link" ADMIN_LINK="$admin_link" \
  DB_PATH="$db" SCREENSHOTS="$shots" PLAYWRIGHT_MODULES="$cache/node_modules" CHROMIUM="$chromium" \
  node tests/browser/console.mjs || fail "the browser checks failed (screenshots in $shots)"

# SIGTERM, as a service manager stops it: the gateway must exit cleanly.
kill -TERM "$gw_pid"
stopped=""
for _ in $(seq 1 300); do
  if ! kill -0 "$gw_pid" 2>/dev/null; then stopped=1; break; fi
  sleep 0.1
done
[ -n "$stopped" ] || fail "the gateway did not stop within 30 s of SIGTERM"
code=0
wait "$gw_pid" || code=$?
gw_pid=""
[ "$code" -eq 0 ] || fail "the gateway exited with $code after SIGTERM"
say "screenshots in $shots (console-*.png)"
echo "browser-console: ok"
