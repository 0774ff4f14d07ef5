"""Cross-file checks for the deployment files, run by scripts/check-deploy.sh in its venv.

The linters check each file against its own format; this checks that the files agree with
each other and with the gateway: ports, paths, probe routes, the secrets' mount points,
the config sections that GATEWAY__ variables name, the build context, and the metric
names that docs/OPERATIONS.md quotes. Prints one line per problem; exit 1 if any.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
problems: list[str] = []


def problem(where: str, message: str) -> None:
    problems.append(f"{where}: {message}")


def read(rel: str) -> str:
    return (ROOT / rel).read_text(encoding="utf-8")


def load_yaml_docs(rel: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(read(rel)) if d]


# -- What the gateway accepts (read from its source, never changed here) ----------------
config_rs = read("src/config/mod.rs")
m = re.search(r"const SECTIONS: \[&str; \d+\] = \[(.*?)\];", config_rs, re.S)
SECTIONS = set(re.findall(r'"([a-z_]+)"', m.group(1))) if m else set()
if not SECTIONS:
    problem("src/config/mod.rs", "cannot find the SECTIONS list (config sections)")

sample = tomllib.loads(read("config/gateway.toml"))
body_limit = sample.get("http", {}).get("body_limit_bytes", 4 * 1024 * 1024)
request_timeout = sample.get("http", {}).get("request_timeout_secs", 30)


def check_env_names(where: str, names: list[str]) -> None:
    for name in names:
        if not name.startswith("GATEWAY__"):
            continue
        parts = name[len("GATEWAY__"):].split("__")
        if len(parts) < 2 or parts[0].lower() not in SECTIONS:
            problem(where, f"{name}: not GATEWAY__SECTION__KEY with a known section")


# -- Dockerfile and .dockerignore ----------------------------------------------------------
dockerfile = read("deploy/Dockerfile")
df_lines = re.sub(r"\\\n", " ", dockerfile).splitlines()
copies = []
for line in df_lines:
    words = line.split()
    if words and words[0] == "COPY" and not any(w.startswith("--from") for w in words):
        copies.extend(w.rstrip("/") for w in words[1:-1] if not w.startswith("--"))
allowed = [
    line[1:].strip().rstrip("/")
    for line in read(".dockerignore").splitlines()
    if line.startswith("!")
]
for src in copies:
    top = src.split("/")[0]
    if not any(src == a or top == a or fnmatch.fnmatch(src, a) for a in allowed):
        problem(".dockerignore", f"the Dockerfile copies {src!r}, which is not let in (!{src})")
for a in allowed:
    if not any(src == a or src.split("/")[0] == a for src in copies):
        problem(".dockerignore", f"!{a} lets in something the Dockerfile never copies")
for d in re.findall(r'sqlx::migrate!\("\./([^"]+)"\)', read("src/db.rs")):
    if not any(d == c or d.startswith(c + "/") for c in copies):
        problem("deploy/Dockerfile", f"sqlx::migrate! embeds {d} at build time; copy it")

uid = re.search(r"ARG UID=(\d+)", dockerfile)
uid = int(uid.group(1)) if uid else None
env_addr = re.search(r"GATEWAY__HTTP__ADDR=0\.0\.0\.0:(\d+)", dockerfile)
port = int(env_addr.group(1)) if env_addr else None
if port is None:
    problem("deploy/Dockerfile", "ENV GATEWAY__HTTP__ADDR=0.0.0.0:PORT is missing")
if f"EXPOSE {port}" not in dockerfile:
    problem("deploy/Dockerfile", f"EXPOSE {port} (the port of GATEWAY__HTTP__ADDR) is missing")
hc = re.search(r"HEALTHCHECK.*?/dev/tcp/127\.0\.0\.1/(\d+).*?GET (/\S+)", dockerfile, re.S)
if not hc or int(hc.group(1)) != port or hc.group(2) != "/healthz":
    problem("deploy/Dockerfile", f"HEALTHCHECK must GET /healthz on port {port}")
if 'ENTRYPOINT ["partner-gateway", "--config", "/etc/partner-gateway"]' not in dockerfile:
    problem("deploy/Dockerfile", "ENTRYPOINT must be partner-gateway --config /etc/partner-gateway")
check_env_names("deploy/Dockerfile", re.findall(r"\b(GATEWAY__[A-Z0-9_]+)=", dockerfile))

# -- Compose --------------------------------------------------------------------------------
compose = load_yaml_docs("deploy/compose.yaml")[0]
services = compose.get("services", {})
gateways = sorted(s for s in services if re.fullmatch(r"gateway-\d+", s))
if len(gateways) < 2:
    problem("deploy/compose.yaml", "expected at least two gateway-N services")
for name in gateways + ["migrate"]:
    svc = services.get(name, {})
    env = svc.get("environment", {})
    check_env_names(f"deploy/compose.yaml {name}", list(env))
    mounted = {s if isinstance(s, str) else s.get("source") for s in svc.get("secrets", [])}
    for var, path in env.items():
        if var.endswith("__FILE") and str(path).startswith("/run/secrets/"):
            if path.rsplit("/", 1)[1] not in mounted:
                problem("deploy/compose.yaml", f"{name}: {var} reads {path}, not mounted")
for name in gateways:
    deps = services[name].get("depends_on", {})
    if deps.get("migrate", {}).get("condition") != "service_completed_successfully":
        problem("deploy/compose.yaml", f"{name} must wait for migrate to complete successfully")
    if services[name].get("environment", {}).get("GATEWAY__DATABASE__MIGRATE_ON_START") != "false":
        problem("deploy/compose.yaml", f"{name}: migrations belong to the migrate service")
    if "healthcheck" not in services[name]:
        problem("deploy/compose.yaml", f"{name} has no healthcheck")
for name in ("db", "proxy"):
    if "healthcheck" not in services.get(name, {}):
        problem("deploy/compose.yaml", f"{name} has no healthcheck")
if services.get("migrate", {}).get("command") != ["migrate"]:
    problem("deploy/compose.yaml", "the migrate service must run `migrate`")
for secret, spec in compose.get("secrets", {}).items():
    f = DEPLOY / spec.get("file", "")
    rel = f.relative_to(ROOT)
    if not Path(str(f) + ".example").is_file():
        problem("deploy/compose.yaml", f"secret {secret}: {rel}.example is missing")
    ignored = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", str(rel)],
        check=False,
    ).returncode
    if ignored != 0:
        problem(".gitignore", f"{rel} (a real secret) is not git-ignored")

compose_conf = read("deploy/nginx/compose.conf")
conf_code = "\n".join(line.split("#", 1)[0] for line in compose_conf.splitlines())
upstream = set(re.findall(r"^\s*server\s+([\w.-]+):(\d+)", conf_code, re.M))
if upstream != {(g, str(port)) for g in gateways}:
    problem("deploy/nginx/compose.conf", f"upstream {sorted(upstream)} is not every gateway-N:{port}")
for sticky in ("ip_hash", "hash ", "sticky", "least_conn"):
    if re.search(rf"^\s*{sticky}", conf_code, re.M):
        problem("deploy/nginx/compose.conf", f"{sticky.strip()}: no stickiness, plain round-robin")
mounted_conf = [v for v in services.get("proxy", {}).get("volumes", []) if "compose.conf" in v]
if not mounted_conf:
    problem("deploy/compose.yaml", "the proxy does not mount nginx/compose.conf")

# -- nginx limits against the gateway's ------------------------------------------------------
def size_bytes(v: str) -> int:
    mult = {"k": 1024, "m": 1024 * 1024, "g": 1024**3}
    return int(v[:-1]) * mult[v[-1].lower()] if v[-1].isalpha() else int(v)


for rel in ("deploy/nginx/partner-gateway.conf", "deploy/nginx/compose.conf"):
    text = read(rel)
    for v in re.findall(r"client_max_body_size\s+(\w+);", text):
        if size_bytes(v) < body_limit:
            problem(rel, f"client_max_body_size {v} is below http.body_limit_bytes ({body_limit})")
    for v in re.findall(r"proxy_read_timeout\s+(\d+)s;", text):
        if int(v) <= request_timeout:
            problem(rel, f"proxy_read_timeout {v}s is not above http.request_timeout_secs")
    if not re.search(r"location = /metrics \{\s*return 404;", text):
        problem(rel, "/metrics (unauthenticated) must not be served through the proxy")
site = read("deploy/nginx/partner-gateway.conf")
if f"server 127.0.0.1:{sample.get('http', {}).get('addr', '127.0.0.1:8080').split(':')[1]};" not in site:
    problem("deploy/nginx/partner-gateway.conf", "upstream is not the sample config's http.addr")

# -- systemd and its environment file -------------------------------------------------------
unit = read("deploy/partner-gateway.service")
for needle in ("--config /etc/partner-gateway serve", "EnvironmentFile=-/etc/partner-gateway/gateway.env",
               "WorkingDirectory=/var/lib/partner-gateway"):
    if needle not in unit:
        problem("deploy/partner-gateway.service", f"missing {needle!r}")
env_example = read("deploy/gateway.env.example")
names = re.findall(r"^#?\s*(GATEWAY__[A-Z0-9_]+)=", env_example, re.M)
check_env_names("deploy/gateway.env.example", names)

# -- Kubernetes ------------------------------------------------------------------------------
k8s = DEPLOY / "k8s"
kust = load_yaml_docs("deploy/k8s/kustomization.yaml")[0]
resources = kust.get("resources", [])
for r in resources:
    if not (k8s / r).is_file():
        problem("deploy/k8s/kustomization.yaml", f"resource {r} does not exist")
for f in sorted(k8s.glob("*.yaml")):
    if f.name == "kustomization.yaml":
        continue
    if f.name.endswith(".example.yaml"):
        if f.name in resources:
            problem("deploy/k8s/kustomization.yaml", f"{f.name} is an example: never a resource")
    elif f.name not in resources:
        problem("deploy/k8s/kustomization.yaml", f"{f.name} is not listed in resources")

docs = {}
for r in resources:
    for d in load_yaml_docs(f"deploy/k8s/{r}"):
        docs[(d["kind"], d["metadata"]["name"])] = d
secret_mount = None
dep = docs.get(("Deployment", "partner-gateway"))
job = docs.get(("Job", "partner-gateway-migrate"))
cm = docs.get(("ConfigMap", "partner-gateway-config"))
if not (dep and job and cm):
    problem("deploy/k8s", "expected Deployment partner-gateway, Job partner-gateway-migrate, "
            "ConfigMap partner-gateway-config")
else:
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    c = pod["containers"][0]
    if spec.get("replicas") != 2:
        problem("deploy/k8s/deployment.yaml", "replicas must be 2")
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        problem("deploy/k8s/deployment.yaml", "readinessProbe must GET /readyz")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
        problem("deploy/k8s/deployment.yaml", "livenessProbe must GET /healthz")
    ann = spec["template"]["metadata"].get("annotations", {})
    want = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
    for k, v in want.items():
        if ann.get(k) != v:
            problem("deploy/k8s/deployment.yaml", f"annotation {k} must be {v!r}")
    if [p.get("containerPort") for p in c.get("ports", [])] != [port]:
        problem("deploy/k8s/deployment.yaml", f"containerPort must be {port}")
    for name, d in (("deployment", dep), ("migrate-job", job)):
        ps = d["spec"]["template"]["spec"]
        sc = ps.get("securityContext", {})
        if sc.get("runAsUser") != uid or not sc.get("runAsNonRoot"):
            problem(f"deploy/k8s/{name}.yaml", f"must run as non-root UID {uid} (the image's)")
        for ct in ps["containers"]:
            csc = ct.get("securityContext", {})
            if not csc.get("readOnlyRootFilesystem") or csc.get("allowPrivilegeEscalation") is not False:
                problem(f"deploy/k8s/{name}.yaml", f"{ct['name']}: read-only root, no escalation")
            if ct.get("args") != (["serve"] if name == "deployment" else ["migrate"]):
                problem(f"deploy/k8s/{name}.yaml", f"{ct['name']}: unexpected args {ct.get('args')}")
    if not any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])):
        problem("deploy/k8s/deployment.yaml", "a writable /tmp (emptyDir) is needed")
    for kind in ("Service", "PodDisruptionBudget"):
        obj = next((d for (k, _), d in docs.items() if k == kind), None)
        if obj is None:
            problem("deploy/k8s", f"no {kind}")
            continue
        sel = obj["spec"]["selector"]
        sel = sel.get("matchLabels", sel)
        if any(labels.get(k) != v for k, v in sel.items()):
            problem("deploy/k8s", f"{kind} selector {sel} does not match the pods' labels")
    pdb = docs.get(("PodDisruptionBudget", "partner-gateway"))
    if pdb and pdb["spec"].get("minAvailable") != 1:
        problem("deploy/k8s/pdb.yaml", "minAvailable must be 1")
    # The secret paths in gateway.toml must be where the Secret is mounted.
    try:
        gw = tomllib.loads(cm["data"]["gateway.toml"])
    except (KeyError, tomllib.TOMLDecodeError) as e:
        problem("deploy/k8s/configmap.yaml", f"gateway.toml: {e}")
        gw = {}
    for sect in gw:
        if sect not in SECTIONS:
            problem("deploy/k8s/configmap.yaml", f"gateway.toml: unknown section [{sect}]")
    secret_mount = next(
        (m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] == "secrets"), None
    )
    secret_keys = set()
    for d in load_yaml_docs("deploy/k8s/secret.example.yaml"):
        secret_keys |= set(d.get("stringData", {}))
    for field in (("database", "url"), ("keys", "master_key")):
        v = gw.get(field[0], {}).get(field[1])
        if not (isinstance(v, dict) and "file" in v):
            problem("deploy/k8s/configmap.yaml", f"{'.'.join(field)} must be {{ file = ... }}")
            continue
        path = Path(v["file"])
        if str(path.parent) != secret_mount or path.name not in secret_keys:
            problem("deploy/k8s/configmap.yaml",
                    f"{'.'.join(field)} reads {path}: not a key of the Secret at {secret_mount}")
    if gw.get("database", {}).get("migrate_on_start") is not False:
        problem("deploy/k8s/configmap.yaml", "database.migrate_on_start must be false (the Job migrates)")

# -- docs/OPERATIONS.md quotes only metrics the gateway emits -------------------------------
emitted = set()
for f in (ROOT / "src").rglob("*.rs"):
    emitted |= set(re.findall(r'(?:counter|gauge|histogram)!\(\s*"([a-z_]+)"', f.read_text("utf-8")))
ops = read("docs/OPERATIONS.md")
quoted = set(re.findall(r"\b((?:gateway|http)_[a-z_]+)", ops))
for name in sorted(quoted):
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    if name not in emitted and base not in emitted:
        problem("docs/OPERATIONS.md", f"metric {name} is not emitted anywhere in src/")
for name in sorted(emitted):
    if name not in quoted:
        problem("docs/OPERATIONS.md", f"metric {name} (emitted in src/) is not described")

# -- The gateway itself reads each deployment's config (PGW_BIN: a built binary) ----------
def check_config(label: str, config_dir: Path, env: dict[str, str]) -> None:
    """`partner-gateway check-config` as the deployment would run it (only these variables)."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_COLOR": "1"}
    out = subprocess.run(
        [pgw_bin, "--config", str(config_dir), "check-config"],
        env={**base, **env}, capture_output=True, text=True, timeout=60, check=False,
    )
    if out.returncode != 0:
        problem(f"check-config ({label})", (out.stdout + out.stderr).strip().replace("\n", "\n    "))


# base64 of 32 bytes, as `head -c 32 /dev/urandom | base64` makes (a fixed one: no secret).
TEST_MASTER_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
pgw_bin = os.environ.get("PGW_BIN", "")
if pgw_bin:
    work = Path(tempfile.mkdtemp(prefix="check-deploy-config."))
    try:
        env_lines = " ".join(line for line in df_lines if line.startswith("ENV "))
        image_env = dict(re.findall(r"\b(GATEWAY__[A-Z0-9_]+|NO_COLOR)=(\S+)", env_lines))
        # Compose: the image's config and environment, the anchor's variables, the secrets
        # (their *.example files) where compose mounts them.
        secrets_dir = work / "compose-secrets"
        secrets_dir.mkdir()
        for secret, spec in compose.get("secrets", {}).items():
            (secrets_dir / secret).write_bytes((DEPLOY / (spec["file"] + ".example")).read_bytes())
        # check-config refuses the examples' REPLACE_ME master key, as serve does: a key of
        # the right form stands in for the one an operator makes.
        (secrets_dir / "master_key").write_text(TEST_MASTER_KEY + "\n")
        for name in gateways[:1] + ["migrate"]:
            # ${VAR:-default} as compose interpolates it with VAR unset.
            env = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v))
                   .replace("/run/secrets/", f"{secrets_dir}/")
                   for k, v in services[name].get("environment", {}).items()}
            check_config(f"compose {name}", ROOT / "config", {**image_env, **env})
        # Kubernetes: the ConfigMap's gateway.toml beside the sample partners, meters and
        # agreements (what partner-gateway-partners holds), the Secret's keys as files.
        if cm and secret_mount:
            k8s_dir, k8s_secrets = work / "k8s-config", work / "k8s-secrets"
            k8s_dir.mkdir()
            k8s_secrets.mkdir()
            for d in load_yaml_docs("deploy/k8s/secret.example.yaml"):
                for key, value in d.get("stringData", {}).items():
                    value = TEST_MASTER_KEY if key == "master-key" else value
                    (k8s_secrets / key).write_text(value + "\n", encoding="utf-8")
            (k8s_dir / "gateway.toml").write_text(
                cm["data"]["gateway.toml"].replace(f"{secret_mount}/", f"{k8s_secrets}/"),
                encoding="utf-8",
            )
            for f in ("partners.toml", "meters.toml", "agreements.toml"):
                (k8s_dir / f).write_bytes((ROOT / "config" / f).read_bytes())
            check_config("kubernetes", k8s_dir, image_env)
        # systemd: the sample config with gateway.env.example, then its PostgreSQL variant
        # (the commented lines) with the secret files it names.
        active = dict(re.findall(r"^(GATEWAY__[A-Z0-9_]+)=(\S+)", env_example, re.M))
        check_config("systemd, SQLite", ROOT / "config", active)
        variant = dict(re.findall(r"^#\s*(GATEWAY__[A-Z0-9_]+)=(\S+)", env_example, re.M))
        files = work / "systemd-secrets"
        files.mkdir()
        (files / "database_url").write_text("postgres://gateway:x@db.internal:5432/gateway\n")
        (files / "master_key").write_text(TEST_MASTER_KEY + "\n")
        pg = {k: v.replace("/etc/partner-gateway/secrets/", f"{files}/") for k, v in variant.items()}
        keep = {k: v for k, v in active.items()
                if k not in ("GATEWAY__DATABASE__URL", "GATEWAY__KEYS__MASTER_KEY_FILE")}
        check_config("systemd, PostgreSQL", ROOT / "config", {**keep, **pg})
    finally:
        shutil.rmtree(work, ignore_errors=True)
else:
    print("check-config of the deployment configs skipped (PGW_BIN not set)")

for p in problems:
    print(p)
sys.exit(1 if problems else 0)
