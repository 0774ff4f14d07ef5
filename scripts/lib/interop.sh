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
