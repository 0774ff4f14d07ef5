"""Standard Webhooks interoperability check (run by scripts/interop-webhooks.sh).

Outbound: webhook endpoints on a receiver in this process; the running gateway emits a real
event (a usage threshold crossed after an ingested event); each delivery is verified with
independent code: the reference `standardwebhooks` library for v1 (HMAC-SHA256, also with
two signatures during a secret rotation) and `cryptography`'s ed25519 for v1a, following the
spec's key format (whpk_ = base64 of the 32-byte public key). A tampered copy must fail.

Inbound: webhooks signed by the reference library are posted to the gateway's inbound
source; a good one is accepted once, a replay is a duplicate, a tampered or stale one is
refused.

Prints one line per check and exits 1 if any failed.
"""

import argparse
import base64
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks import Webhook, WebhookVerificationError

INBOUND_SECRET = "whsec_" + base64.b64encode(b"interop-inbound-secret-32-bytes!").decode()

received = []
lock = threading.Lock()
failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""), flush=True)
    if not ok:
        failures.append(name)


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with lock:
            received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def api(gateway, key, method, path, body=None, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(gateway + path, data=data, method=method)
    if key:
        req.add_header("authorization", f"Bearer {key}")
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
            return r.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text.decode(errors="replace")


def emit_partners(port):
    """The extra partner with a standard (v1) inbound source, as TOML."""
    print(f"""
[[partners]]
id = "interop-partner"
name = "Standard Webhooks interop partner"
kind = "other"

[[partners.webhook_sources]]
id = "orders"
signing = "standard"
secrets = ["{INBOUND_SECRET}"]
tolerance_secs = 300

[[partners.webhook_sources.events]]
when = "order.paid"
event_type = "interop.order_paid"
subject = "/data/customer"
[partners.webhook_sources.events.data]
order = "/data/order"
total = "/data/total"
""")


def wait_for(path, n=1, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with lock:
            got = [r for r in received if r[0] == path]
        if len(got) >= n:
            return got
        time.sleep(0.1)
    return []


def outbound(gateway, admin, port):
    base = f"http://127.0.0.1:{port}"
    eps = {}
    for path, scheme in [("/v1", "v1"), ("/v1a", "v1a"), ("/rotated", "v1")]:
        s, e = api(gateway, admin, "POST", "/v1/webhooks/endpoints", {
            "partner": "interop-partner", "url": base + path, "scheme": scheme,
            "event_types": ["usage.*"],
        })
        check(f"create {scheme} endpoint {path}", s == 201, f"{s} {e}")
        eps[path] = e
    old = eps["/rotated"]["secret"]
    s, rot = api(gateway, admin, "POST", f"/v1/webhooks/endpoints/{eps['/rotated']['id']}/rotate-secret")
    check("rotate the secret", s == 200 and rot.get("secret", "").startswith("whsec_"), f"{s} {rot}")
    new = rot["secret"]

    # A real event: the interop meter's threshold (1) is crossed by one usage event.
    event = {"specversion": "1.0", "id": "interop-1", "source": "/interop", "type": "interop.ping",
             "partner": "interop-partner", "subject": "u1"}
    s, r = api(gateway, admin, "POST", "/v1/usage/events", event)
    check("ingest a usage event", s == 202, f"{s} {r}")

    for path in ["/v1", "/v1a", "/rotated"]:
        got = wait_for(path)
        check(f"delivery reached {path}", bool(got), "nothing arrived in 30 s")
        if not got:
            continue
        _, headers, body = got[0]
        payload = json.loads(body)
        check(f"{path}: body has type, timestamp, data",
              payload.get("type") == "usage.threshold.crossed" and "timestamp" in payload and "data" in payload,
              str(payload))
        tampered = body.replace(b"interop", b"INTEROP")
        if path == "/v1":
            try:
                Webhook(eps[path]["secret"]).verify(body, headers)
                check("v1 verified by the standardwebhooks library", True)
            except WebhookVerificationError as e:
                check("v1 verified by the standardwebhooks library", False, str(e))
            try:
                Webhook(eps[path]["secret"]).verify(tampered, headers)
                check("v1 tampered body refused by the library", False, "verified")
            except WebhookVerificationError:
                check("v1 tampered body refused by the library", True)
        elif path == "/v1a":
            pk = Ed25519PublicKey.from_public_bytes(base64.b64decode(eps[path]["public_key"][len("whpk_"):]))
            signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode()
            sigs = [s.split(",", 1)[1] for s in headers["webhook-signature"].split(" ") if s.startswith("v1a,")]
            check("v1a signature present", len(sigs) == 1, headers["webhook-signature"])
            for label, content, want in [("v1a verified with cryptography's ed25519", body, True),
                                         ("v1a tampered body refused", tampered, False)]:
                try:
                    pk.verify(base64.b64decode(sigs[0]), signed + content)
                    check(label, want, "verified")
                except InvalidSignature:
                    check(label, not want, "refused")
            age = abs(time.time() - int(headers["webhook-timestamp"]))
            check("v1a webhook-timestamp is now", age < 60, str(age))
        else:
            check("rotation sends two signatures", len(headers["webhook-signature"].split(" ")) == 2,
                  headers["webhook-signature"])
            for label, secret in [("old", old), ("new", new)]:
                try:
                    Webhook(secret).verify(body, headers)
                    check(f"rotated endpoint verified with the {label} secret by the library", True)
                except WebhookVerificationError as e:
                    check(f"rotated endpoint verified with the {label} secret by the library", False, str(e))


def inbound(gateway):
    wh = Webhook(INBOUND_SECRET)
    path = "/webhooks/in/interop-partner/orders"

    def post(msg_id, body, when):
        sig = wh.sign(msg_id, when, body)
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())), "webhook-signature": sig}
        return api(gateway, None, "POST", path, body.encode(), headers)

    body = json.dumps({"type": "order.paid", "data": {"order": "o-1", "total": "12.50", "customer": "c-1"}})
    now = datetime.now(tz=timezone.utc)
    s, r = post("msg_interop_1", body, now)
    check("inbound: signed by the library, accepted", s == 200 and r.get("status") == "accepted", f"{s} {r}")
    s, r = post("msg_interop_1", body, now)
    check("inbound: the same webhook-id again is a duplicate", s == 200 and r.get("status") == "duplicate", f"{s} {r}")
    sig = wh.sign("msg_interop_2", now, body)
    headers = {"webhook-id": "msg_interop_2", "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": sig}
    s, r = api(gateway, None, "POST", path, body.replace("12.50", "99.00").encode(), headers)
    check("inbound: tampered body refused (401)", s == 401, f"{s} {r}")
    s, r = post("msg_interop_3", body, now - timedelta(minutes=10))
    check("inbound: stale timestamp refused (401)", s == 401, f"{s} {r}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--receiver-port", type=int, required=True)
    p.add_argument("--gateway")
    p.add_argument("--emit-partners", action="store_true")
    a = p.parse_args()
    if a.emit_partners:
        emit_partners(a.receiver_port)
        return 0
    server = ThreadingHTTPServer(("127.0.0.1", a.receiver_port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    admin = os.environ["PGW_ADMIN_KEY"]
    outbound(a.gateway, admin, a.receiver_port)
    inbound(a.gateway)
    server.shutdown()
    print(f"{len(failures)} failed" if failures else "all checks passed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
