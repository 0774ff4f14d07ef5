# Shared by scripts/interop-*.sh, sourced once `name` (lti, webhooks, oidc, saml) and `root`
# are set: the log prefix, a cached Python venv with pinned requirements, the gateway binary.

say() { printf 'interop-%s: %s\n' "$name" "$*" >&2; }
fail() {
  say "$*"
  echo "interop-$name: FAILED"
  exit 1
}

# interop_venv REQUIREMENTS [VENV]: a venv (default: a per-user cache dir) with the pinned
# requirements installed, reinstalled when the file changes; sets `py`.
interop_venv() {
  local req=$1 venv=${2:-} want
  if [ -z "$venv" ]; then
    venv="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/partner-gateway/interop-$name-venv"
    mkdir -p "$(dirname "$venv")" 2>/dev/null || venv="${TMPDIR:-/tmp}/partner-gateway-interop-$name-venv"
  fi
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ]; then
    say "creating the venv $venv"
    "${PYTHON:-python3}" -m venv "$venv" || fail "could not create a venv (Debian: apt-get install python3-venv)"
  fi
  if [ "$(cat "$venv/.interop-$name-requirements" 2>/dev/null || true)" != "$want" ]; then
    say "installing $req"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req" \
      || fail "pip install -r $req failed"
    echo "$want" >"$venv/.interop-$name-requirements"
  fi
  py="$venv/bin/python"
}

# interop_gateway_bin: PGW_BIN as given, or a release build.
interop_gateway_bin() {
  if [ -z "${PGW_BIN:-}" ]; then
    say "building the gateway (cargo build --release --locked)"
    cargo build --release --locked
    PGW_BIN="${CARGO_TARGET_DIR:-$root/target}/release/partner-gateway"
  fi
  [ -x "$PGW_BIN" ] || fail "no gateway binary at $PGW_BIN"
}

# gw ARGS...: the gateway's CLI on the generated config.
gw() { NO_COLOR=1 "$PGW_BIN" --config "$work/config" "$@"; }

# interop_start_gateway ROLE: check the generated config ($work/config), migrate, create an
# API key of ROLE (in `api_key`), start `serve` (its pid in `gw_pid`, log in
# $work/gateway.log) and wait until $gateway/readyz answers. Needs `py`.
interop_start_gateway() {
  local role=$1 ready=""
  gw check-config >"$work/check-config.log" 2>&1 || { cat "$work/check-config.log" >&2; fail "check-config refused the generated config"; }
  gw migrate >>"$work/gateway.log" 2>&1 || fail "migrate failed"
  api_key=$(gw api-keys create --role "$role" --name "interop-$name" 2>>"$work/gateway.log") || fail "api-keys create failed"
  # Started directly (not through gw, a function: $! would be a subshell's pid).
  NO_COLOR=1 "$PGW_BIN" --config "$work/config" serve >>"$work/gateway.log" 2>&1 &
  gw_pid=$!
  for _ in $(seq 1 150); do
    kill -0 "$gw_pid" 2>/dev/null || fail "the gateway exited during start-up"
    if "$py" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$gateway/readyz" 2>/dev/null; then
      ready=1
      break
    fi
    sleep 0.2
  done
  [ -n "$ready" ] || fail "the gateway did not become ready at $gateway within 30 s"
}

# interop_stop PID: SIGTERM, up to 5 s to exit, then SIGKILL.
interop_stop() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# interop_finish STATUS LOG...: when STATUS is not 0, the last lines of each LOG in $work;
# then $work is removed (kept with INTEROP_KEEP_TMP=1).
interop_finish() {
  local status=$1 f
  shift
  if [ "$status" -ne 0 ]; then
    for f in "$@"; do
      [ -s "$work/$f" ] && { say "$f (last 40 lines):"; tail -n 40 "$work/$f" >&2; }
    done
  fi
  if [ "${INTEROP_KEEP_TMP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}

# interop_free_ports N: N distinct free loopback ports on one line (all bound at once, so
# they differ). Needs `py`.
interop_free_ports() {
  "$py" -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()
' "$1"
}
