#!/usr/bin/env bash
# HTTP load benchmark: wrk against a release build of the gateway on a loopback port.
#
#   scripts/bench-http.sh                      # SQLite in a temporary directory
#   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/bench-http.sh
#                                              # ... then PostgreSQL too, in a fresh database
#
# For each store: GET /healthz (the ceiling of this server + wrk on this machine), then
# POST /v1/usage/events with one event per request, then with BATCH events per request.
# Every event id is new (run prefix + wrk thread + counter), so nothing is a duplicate.
# Knobs (environment): DURATION (10s), THREADS (2), CONNECTIONS (32), BATCH (100),
# CARGO_TARGET_DIR (target/). Only 127.0.0.1 is contacted; the server is stopped on exit.
# Each wrk run gets a freshly started server (same database). After each run one more event
# is posted: wrk ends a run by closing connections with requests in flight, and the gateway
# must still take writes afterwards.
# Exit status: 0 all good; 1 an error, or requests failed during a run (its figures are not
# valid); 2 the figures are valid, but a server stopped taking writes after a run.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
BATCH=${BATCH:-100}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN="$TARGET_DIR/release/partner-gateway"
LUA="$ROOT/scripts/bench-http"
PARTNER=epic-sandbox

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- tools -------------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
  say "wrk is not installed; installing it with apt-get"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
  $SUDO apt-get install -y wrk >/dev/null 2>&1 || {
    $SUDO apt-get update >/dev/null && $SUDO apt-get install -y wrk >/dev/null
  } || die "could not install wrk"
fi
command -v curl >/dev/null 2>&1 || die "curl is needed to wait for the server"

say "== cargo build --release"
cargo build --release >&2
[ -x "$BIN" ] || die "no binary at $BIN"

# --- PostgreSQL URL: checked before anything runs -------------------------------------------
PG_URL=""
if [ -n "${BENCH_DATABASE_URL:-}" ]; then
  command -v psql >/dev/null 2>&1 || die "psql is needed to create the PostgreSQL bench database"
  base=${BENCH_DATABASE_URL%%\?*}
  query=${BENCH_DATABASE_URL#"$base"}
  scheme=${base%%://*}
  rest=${base#*://}
  authority=${rest%%/*}
  host=${authority##*@}
  host=${host%:*}
  case "$host" in
    127.0.0.1 | localhost | "[::1]") ;;
    *) die "BENCH_DATABASE_URL must point at a loopback host (127.0.0.1), not $host" ;;
  esac
  psql "$BENCH_DATABASE_URL" -qAtc "SELECT 1" >/dev/null || die "cannot reach BENCH_DATABASE_URL"
fi

# --- state and cleanup ---------------------------------------------------------------------
WORK=$(mktemp -d -t pgw-bench-http.XXXXXX)
SERVER_PID=""
WRK_PID=""
PG_DB=""
PORT=""
RUN=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
if [ -n "${BENCH_DATABASE_URL:-}" ]; then
  PG_URL="$scheme://$authority/pgw_bench_http_$RUN$query"
fi

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      kill -TERM "$SERVER_PID" 2>/dev/null || true
      for _ in $(seq 1 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      say "warning: the server (pid $SERVER_PID) is still running"
    fi
    SERVER_PID=""
  fi
}

cleanup() {
  if [ -n "$WRK_PID" ]; then
    kill -TERM "$WRK_PID" 2>/dev/null || true
    wait "$WRK_PID" 2>/dev/null || true
  fi
  stop_server
  if [ -n "$PG_DB" ]; then
    psql "$BENCH_DATABASE_URL" -qAtc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 \
      || say "warning: could not drop database $PG_DB"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
    return
  fi
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  die "no free port found"
}

# The gateway's own configuration (config/), with the store, address and log level set the
# way an operator would: GATEWAY__ environment variables. It execs, so call it only in a
# subshell: `(gateway serve) &` makes $! the server's own pid, which the trap can stop.
gateway() {
  exec env -u RUST_LOG \
    GATEWAY__DATABASE__URL="$DB_URL" \
    GATEWAY__HTTP__ADDR="127.0.0.1:$PORT" \
    GATEWAY__TELEMETRY__LOG_LEVEL=warn \
    "$BIN" --config "$ROOT/config" "$@"
}

start_server() {
  PORT=$(free_port)
  (gateway serve) >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      cat "$WORK/server.log" >&2
      die "the server exited during start-up"
    fi
    sleep 0.1
  done
  die "the server did not answer /healthz within 30 s"
}

# run_wrk LABEL PATH SCRIPT EVENTS_PER_REQUEST: sets RES to
# "rps p50_ms p99_ms non2xx socket_errors requests". wrk runs in the background and the
# script waits for it, so Ctrl-C reaches the trap at once (wrk catches SIGINT itself and
# exits normally, which would otherwise let the script carry on).
run_wrk() {
  local label=$1 path=$2 script=$3 per=$4 line
  say "-- $label: wrk -t$THREADS -c$CONNECTIONS -d$DURATION http://127.0.0.1:$PORT$path"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$script" \
    -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT$path" -- "$per" "$RUN-$label" \
    >"$WORK/wrk.out" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || die "wrk failed: $(cat "$WORK/wrk.out")"
  WRK_PID=""
  sed 's/^/   /' "$WORK/wrk.out" >&2
  line=$({ grep '^RESULT ' "$WORK/wrk.out" || true; } | tail -n1)
  [ -n "$line" ] || die "wrk printed no RESULT line"
  field() { printf '%s\n' "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  RES="$(field rps) $(field p50_ms) $(field p99_ms) $(field non2xx) $(field socket_errors) $(field requests)"
}

stored_events() {
  case "$DB_URL" in
    sqlite:*)
      if command -v sqlite3 >/dev/null 2>&1; then
        sqlite3 "${DB_URL#sqlite://}" "SELECT COUNT(*) FROM usage_events"
      else
        echo "?"
      fi
      ;;
    *) psql "$DB_URL" -qAtc "SELECT COUNT(*) FROM usage_events" 2>/dev/null || echo "?" ;;
  esac
}

# One request to the server after wrk has stopped: does it still take writes? wrk closes its
# connections with requests in flight, which cancels them inside the server.
probe_write() {
  sleep 0.5
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST "http://127.0.0.1:$PORT/v1/usage/events" \
    -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
    -d "{\"specversion\":\"1.0\",\"id\":\"probe-$RUN-$1\",\"source\":\"/bench/probe\",\"type\":\"app.session\",\"partner\":\"$PARTNER\",\"subject\":\"probe\"}" \
    || true
}

ROWS=()
NOTES=()
FAILED=0
WEDGED=0

# bench_run STORE LABEL DESCRIPTION PATH SCRIPT EVENTS_PER_REQUEST: one wrk run against a
# freshly started server on the store's database, so one run cannot spoil the next.
bench_run() {
  local store=$1 label=$2 desc=$3 path=$4 script=$5 per=$6 res code rps p50 p99 bad sock req events vs
  start_server
  run_wrk "$label" "$path" "$script" "$per"
  res=$RES
  code=$(probe_write "$label")
  cp "$WORK/server.log" "$WORK/server-$store-$label.log"
  stop_server
  read -r rps p50 p99 bad sock req <<<"$res"
  if [ "$label" = healthz ]; then HEALTHZ_RPS=$rps; fi
  if [ "$per" = 0 ]; then
    events="-"
  else
    events=$(awk -v r="$rps" -v n="$per" 'BEGIN { printf "%.0f", r * n }')
    COUNTED=$((COUNTED + req * per))
  fi
  if [ "$code" = 202 ]; then
    COUNTED=$((COUNTED + 1))
    code="202 ok"
  else
    NOTES+=("$store $label: after wrk stopped, the server no longer accepted a write (HTTP $code; 000 = no answer in 10 s); first errors in its log:")
    code="FAILED ($code)"
    WEDGED=1
    NOTES+=("$( (grep -m3 -E 'ERROR|WARN' "$WORK/server-$store-$label.log" || true) | sed 's/\x1b\[[0-9;]*m//g')")
  fi
  if [ "$bad" != 0 ]; then
    FAILED=1
    NOTES+=("$store $label: $bad non-2xx responses during the run; the figures are not valid; log:")
    NOTES+=("$( (grep -m3 -E 'ERROR|WARN' "$WORK/server-$store-$label.log" || true) | sed 's/\x1b\[[0-9;]*m//g')")
  fi
  vs=$(awk -v a="$rps" -v b="$HEALTHZ_RPS" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
  ROWS+=("| $store | $desc | $(printf '%.0f' "$rps") | $events | $vs | $p50 | $p99 | $bad | $sock | $code |")
}

bench_store() {
  local store=$1 stored
  say "== $store: $(printf '%s' "$DB_URL" | sed 's#//[^@/]*@#//***@#')"
  PORT=0
  # A fresh database: commands other than `migrate` and `serve` never change the schema.
  (gateway migrate) >>"$WORK/keys.log" 2>&1 || { cat "$WORK/keys.log" >&2; die "migrate failed"; }
  # The app's key: it records its own events (no key may send the gateway's types).
  KEY=$( (gateway api-keys create --role app --name bench-http) 2>>"$WORK/keys.log")
  [ -n "$KEY" ] || { cat "$WORK/keys.log" >&2; die "api-keys create printed no key"; }
  COUNTED=0
  HEALTHZ_RPS=0
  bench_run "$store" healthz "GET /healthz" /healthz "$LUA/get.lua" 0
  bench_run "$store" single "POST 1 event" /v1/usage/events "$LUA/events.lua" 1
  bench_run "$store" "batch$BATCH" "POST $BATCH events" /v1/usage/events "$LUA/events.lua" "$BATCH"
  stored=$(stored_events)
  NOTES+=("$store: events acknowledged with 202 and counted by wrk (+ probes): $COUNTED; rows in usage_events: $stored (may exceed the count by requests in flight when wrk stopped)")
}

say "machine: $(nproc) CPU(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
say "wrk: $(wrk -v 2>&1 | head -n1)"

# --- SQLite --------------------------------------------------------------------------------
DB_URL="sqlite://$WORK/sqlite/gateway.db"
bench_store sqlite

# --- PostgreSQL (optional) -----------------------------------------------------------------
if [ -n "${BENCH_DATABASE_URL:-}" ]; then
  PG_DB="pgw_bench_http_$RUN"
  psql "$BENCH_DATABASE_URL" -qAtc "CREATE DATABASE $PG_DB" >/dev/null
  DB_URL="$PG_URL"
  bench_store postgres
fi

echo
echo "duration $DURATION per run, $THREADS wrk threads, $CONNECTIONS connections, $(nproc) CPUs shared by wrk and the server"
echo
echo "| store | request | requests/s | events/s | requests/s vs healthz | p50 ms | p99 ms | non-2xx | socket errors | write after the run |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
printf '%s\n' "${ROWS[@]}"
echo
printf -- '- %s\n' "${NOTES[@]}"
if [ "$FAILED" != 0 ]; then
  say "error: requests failed during a run, so its figures are not valid; see the notes above"
  exit 1
fi
if [ "$WEDGED" != 0 ]; then
  say "warning: the figures are valid, but a server stopped accepting writes after wrk cancelled"
  say "its in-flight requests (a defect of the gateway, see docs/PERFORMANCE.md); exit status 2"
  exit 2
fi
