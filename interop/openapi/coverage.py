"""Every status the OpenAPI document promises is reached by a test somewhere.

Reads the document (a file) and Prometheus text with the gateway's
`http_requests_total{method, route, status}` counters: scraped from the gateway after the
schemathesis run, and dumped by the API test suite (tests/api/helpers.rs writes its
process's counters when PGW_ROUTE_STATUS_DIR is set). `route` is axum's matched path, the
same template as the document's path (the FHIR proxies' `{*path}` is the document's
`{path}`). A range such as `2XX` is reached by any status in it; a documented `default`
response is a catch-all (a partner's own status passed through) and is not counted.

    python coverage.py openapi.json metrics.txt [more.prom ...]

Prints what is missing and exits 1 when anything is.
"""

import json
import re
import sys

LINE = re.compile(r'^http_requests_total\{(.*)\}\s+(\S+)\s*$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def seen(paths):
    out = set()
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for line in f:
                m = LINE.match(line)
                if not m or float(m.group(2)) <= 0:
                    continue
                labels = dict(LABEL.findall(m.group(1)))
                route = labels.get("route", "").replace("{*", "{")
                out.add((labels.get("method", "").lower(), route, labels.get("status", "")))
    return out


def main():
    doc = json.load(open(sys.argv[1], encoding="utf-8"))
    reached = seen(sys.argv[2:])
    promised = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            for status, resp in op.get("responses", {}).items():
                # The Idempotency-Key header's own refusals are one middleware for every
                # operation (tests/api/idempotency.rs reaches each on several); an operation
                # documents them only where it has no answer of that status of its own.
                if resp.get("$ref", "").startswith("#/components/responses/IdempotencyKey"):
                    continue
                if status != "default":
                    promised.append((method, path, status))
    def hit(method, path, status):
        # "2XX": any success of that operation.
        if len(status) == 3 and status.endswith("XX"):
            return any(m == method and r == path and s[:1] == status[0] for m, r, s in reached)
        return (method, path, status) in reached

    missing = [p for p in promised if not hit(*p)]
    print(f"openapi coverage: {len(promised) - len(missing)}/{len(promised)} documented statuses reached")
    for method, path, status in sorted(missing, key=lambda t: (t[1], t[0], t[2])):
        print(f"  not reached: {method.upper()} {path} {status}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
