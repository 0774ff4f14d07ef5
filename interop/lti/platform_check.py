#!/usr/bin/env python3
"""LTI 1.3 interoperability check: the gateway (the tool) driven by an independent platform.

The platform side is `lti1p3platform` (PyPI, MIT; https://pypi.org/project/lti1p3platform/),
an LTI 1.3 Advantage *platform* implementation that shares no code with the gateway or its
mock LMS. The library does the platform's protocol work:

  - the OIDC third-party login initiation URL        (OIDCLoginAbstract.initiate_login)
  - the auth response: checking the tool's auth request, building the launch message and
    signing the id_token with the platform's RSA key (MessageLaunchAbstract.lti_launch),
    and the form_post page (the library's own launch.html template)
  - the platform JWKS                                (LTI1P3PlatformConfAbstract.get_jwks)
  - the token endpoint: client_credentials with an RS256 client assertion verified against
    the tool's JWKS                                  (get_access_token)
  - AGS line items and scores, NRPS memberships, with access-token checks
                                                     (AssignmentsGradesService,
                                                      NamesRoleProvisioningService)
  - Deep Linking response verification               (validate_deeplinking_resp)

This file adds only the glue the library leaves to its host: an HTTP server (stdlib
http.server instead of Django/FastAPI), storage for line items and scores, and the checks
the library leaves to the platform (the auth request's fixed OIDC parameters and
redirect_uri, login_hint; the client assertion's and the Deep Linking response's aud/iss,
which the library does not verify; the score media type and body).

A "browser" (plain HTTP, redirects and auto-post forms followed by hand, cookies carried
explicitly) and an "app back end" (the gateway's /v1 API with an app key) drive the flows:

  1. resource link launch (learner; AGS with a line item; NRPS) -> app redirect -> exchange
  2. roster through NRPS, line items through AGS
  3. a score to the launch's line item (token with client assertion, POST {lineitem}/scores)
  4. a second launch whose link has no line item: the gateway finds none and creates one
  5. Deep Linking (instructor): picker -> signed LtiDeepLinkingResponse -> the library
  6. negative: a replayed launch, a reused handoff code, a tampered id_token

Usage (scripts/interop-lti.sh does all of it):

  platform_check.py --platform-port P --emit-partners > partners.toml   # the gateway's config
  platform_check.py --platform-port P --gateway http://127.0.0.1:G --app-key KEY

Exit status: 0 when every check passed, 1 otherwise (2 for usage errors).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
import sys
import threading
import time
import traceback
import uuid
from datetime import datetime, timezone
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qsl, urljoin, urlparse

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lti1p3platform.exceptions import LineItemNotFoundException, LtiServiceException
from lti1p3platform.ltiplatform import LTI1P3PlatformConfAbstract
from lti1p3platform.membership import Context
from lti1p3platform.message_launch import LTIAdvantageMessageLaunchAbstract
from lti1p3platform.oidc_login import OIDCLoginAbstract
from lti1p3platform.registration import Registration
from lti1p3platform.request import Request
from lti1p3platform.response import Response, generate_next_link
from lti1p3platform.score import UpdateScoreStatus
from lti1p3platform.service_connector import (
    AssignmentsGradesService,
    NamesRoleProvisioningService,
)

# --------------------------------------------------------------------------------------
# What the platform and the gateway's registration agree on
# --------------------------------------------------------------------------------------

PARTNER_ID = "interop-lms"
CLIENT_ID = "interop-tool"
DEPLOYMENT_ID = "interop-deployment-1"
APP_URL = "https://app.example.test/lti"
HTTP_TIMEOUT = 15

LIS = "http://purl.imsglobal.org/vocab/lis/v2/"
ROLE_LEARNER = LIS + "membership#Learner"
ROLE_INSTRUCTOR = LIS + "membership#Instructor"
ROLE_STUDENT = LIS + "institution/person#Student"
ROLE_FACULTY = LIS + "institution/person#Faculty"

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
TOOL_PLATFORM = CLAIM + "tool_platform"
DL_CONTENT_ITEMS = "https://purl.imsglobal.org/spec/lti-dl/claim/content_items"
DL_DATA = "https://purl.imsglobal.org/spec/lti-dl/claim/data"
AGS_CLAIM = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
SCOPE_SCORE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
SCOPE_NRPS = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
SCORE_MEDIA_TYPE = "application/vnd.ims.lis.v1.score+json"
LINEITEM_MEDIA_TYPE = "application/vnd.ims.lis.v2.lineitem+json"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

COURSE = {
    "id": "course-101",
    "title": "Interoperability 101",
    "label": "INT101",
    "type": [LIS + "course#CourseOffering"],
}
USERS = {
    "ada": {"sub": "lms-user-1001", "name": "Ada Lovelace", "email": "ada@example.edu",
            "roles": [ROLE_LEARNER]},
    "alan": {"sub": "lms-user-1002", "name": "Alan Turing", "email": "alan@example.edu",
             "roles": [ROLE_LEARNER, ROLE_STUDENT]},
    "grace": {"sub": "lms-user-2001", "name": "Grace Hopper", "email": "grace@example.edu",
              "roles": [ROLE_INSTRUCTOR, ROLE_FACULTY]},
}
QUIZ_LINK = {"id": "rl-quiz-1", "title": "Week 1 quiz", "description": "Ten questions"}
ESSAY_LINK = {"id": "rl-essay-2", "title": "Week 2 essay"}
SCENARIOS = {
    # A graded link: the AGS claim names its line item (Canvas/Moodle style) and the container.
    "graded": {"kind": "resource", "user": "ada", "link": QUIZ_LINK, "ags": "lineitem",
               "custom": {"quiz_id": "q-17", "attempt": "1"}},
    # A link without a line item: only the container; the tool must find or create one.
    "new-column": {"kind": "resource", "user": "alan", "link": ESSAY_LINK, "ags": "container",
                   "custom": {}},
    "deep-link": {"kind": "deeplink", "user": "grace"},
    "tampered": {"kind": "resource", "user": "ada", "link": QUIZ_LINK, "ags": "lineitem",
                 "custom": {}},
}
# The partner's Deep Linking picker (written into the gateway's config by --emit-partners).
CONTENT_ITEMS = [
    {"title": "Practice module", "type": "ltiResourceLink",
     "text": "Adaptive practice with grade passback", "custom": {"chapter": "3"},
     "score_maximum": 100.0},
    {"title": "Reading list", "type": "link", "url": "https://app.example.test/reading"},
]


def toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string for these values


def partners_toml(base: str) -> str:
    """The gateway's partner registration for this platform."""
    lines = [
        "# Generated by interop/lti/platform_check.py --emit-partners: the LMS partner",
        "# registered for the lti1p3platform interop platform.",
        "[[partners]]",
        f"id = {toml_str(PARTNER_ID)}",
        'name = "lti1p3platform interop platform"',
        'kind = "lms"',
        'contact = "interop@example.test"',
        "",
        "[partners.lti]",
        f"app_url = {toml_str(APP_URL)}",
        "",
        "[[partners.lti.platforms]]",
        'vendor = "generic"',
        f"issuer = {toml_str(base)}",
        f"client_id = {toml_str(CLIENT_ID)}",
        f"deployment_ids = [{toml_str(DEPLOYMENT_ID)}]",
        f"auth_url = {toml_str(base + '/auth')}",
        f"token_url = {toml_str(base + '/token')}",
        f"jwks_url = {toml_str(base + '/jwks')}",
    ]
    for item in CONTENT_ITEMS:
        lines += ["", "[[partners.lti.content_items]]"]
        for key in ("title", "type", "text", "url"):
            if key in item:
                lines.append(f"{key} = {toml_str(item[key])}")
        if "custom" in item:
            pairs = ", ".join(f"{k} = {toml_str(v)}" for k, v in item["custom"].items())
            lines.append(f"custom = {{ {pairs} }}")
        if "score_maximum" in item:
            lines.append(f"score_maximum = {item['score_maximum']}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Glue: the library's abstract classes, bound to this platform
# --------------------------------------------------------------------------------------


class StdlibRequest(Request):
    """lti1p3platform's Request for a stdlib http.server handler (the library ships
    adapters for Django and FastAPI only)."""

    def build_metadata(self, handler):  # type: ignore[override]
        parsed = urlparse(handler.path)
        ctype = handler.headers.get("Content-Type", "") or ""
        form, body_json = {}, None
        if "application/x-www-form-urlencoded" in ctype:
            form = dict(parse_qsl(handler.body.decode("utf-8"), keep_blank_values=True))
        elif "json" in ctype and handler.body:
            body_json = json.loads(handler.body)
        return {
            "method": handler.command,
            "form_data": form,
            "get_data": dict(parse_qsl(parsed.query, keep_blank_values=True)),
            "headers": handler.headers,
            "content_type": ctype,
            "path": parsed.path,
            "json": body_json,
        }


class InteropPlatformConf(LTI1P3PlatformConfAbstract):
    """The registration of the gateway (the tool) in this platform."""

    def init_platform_config(self, lms: "InteropLms") -> None:  # type: ignore[override]
        self._registration = (
            Registration()
            .set_iss(lms.issuer)
            .set_client_id(CLIENT_ID)
            .set_deployment_id(DEPLOYMENT_ID)
            .set_launch_url(lms.tool_launch_url)
            .set_deeplink_launch_url(lms.tool_launch_url)
            .set_oidc_login_url(lms.gateway + "/lti/login")
            .set_tool_key_set_url(lms.gateway + "/.well-known/jwks.json")
            .set_platform_public_key(lms.public_pem)
            .set_platform_private_key(lms.private_pem)
        )
        self.set_accepted_deeplinking_types(["ltiResourceLink", "link"])

    def get_registration_by_params(self, **kwargs):  # type: ignore[override]
        return self._registration


class InteropOIDCLogin(OIDCLoginAbstract):
    def set_lti_message_hint(self, **kwargs) -> None:  # type: ignore[override]
        self._lti_message_hint = kwargs["hint"]

    def get_redirect(self, url: str) -> str:
        return url


class InteropMessageLaunch(LTIAdvantageMessageLaunchAbstract):
    """The launch message of one scenario; the library validates the tool's auth request,
    assembles the claims and signs the id_token."""

    def __init__(self, request, platform_config, lms: "InteropLms", pending: dict) -> None:
        super().__init__(request, platform_config)
        self.lms = lms
        self.pending = pending

    def prepare_launch(self, preflight_response) -> None:  # type: ignore[override]
        scenario = SCENARIOS[self.pending["scenario"]]
        user = USERS[scenario["user"]]
        lms = self.lms
        self.set_user_data(user["sub"], user["roles"], full_name=user["name"],
                           email_address=user["email"])
        self.set_launch_context_claim(COURSE["id"], COURSE["type"], COURSE["title"],
                                      COURSE["label"])
        self.set_launch_presentation_claim("iframe", return_url=lms.base + "/course/101")
        self.set_extra_claims({TOOL_PLATFORM: {
            "guid": "interop-platform-1", "name": "lti1p3platform interop",
            "product_family_code": "lti1p3platform", "version": "0.1.8"}})
        self.set_nrps(lms.memberships_url)
        if scenario["kind"] == "resource":
            link = scenario["link"]
            self.set_resource_link_claim(link["id"], link.get("description"), link["title"])
            if scenario["custom"]:
                self.set_custom_parameters_claim(scenario["custom"])
            lineitem = lms.lineitem_for_link(link["id"]) if scenario["ags"] == "lineitem" else None
            self.set_ags(lms.lineitems_url, lineitem_url=lineitem, allow_creating_lineitems=True)
            with lms.lock:  # what the tool may ask tokens for (AGS 2.0 §3.1, NRPS 2.0 §2.4)
                lms.offered_scopes.update(self.extra_claims[AGS_CLAIM]["scope"])
                lms.offered_scopes.add(SCOPE_NRPS)
        else:
            self.set_dl(lms.dl_return_url, title="Add content to Interoperability 101",
                        description="Pick what to add", accept_types={"ltiResourceLink", "link"},
                        extra_data=self.pending["dl_data"])  # type: ignore[arg-type]

    def render_launch_form(self, launch_data, **kwargs):  # type: ignore[override]
        return launch_data


def render_library_form(launch_data: dict) -> str:
    """The library's own form_post page (framework/templates/launch.html), filled in with
    escaping (its Jinja2 environment does not escape, and loading it needs pkg_resources)."""
    template = (resources.files("lti1p3platform.framework") / "templates" / "launch.html").read_text()
    for key in ("launch_url", "id_token", "state"):
        template = template.replace("{{ %s }}" % key, html.escape(str(launch_data[key]), quote=True))
    return template


class InteropAgs(AssignmentsGradesService):
    """AGS storage for the library's AssignmentsGradesService (which does the token and
    scope checks and the HTTP semantics)."""

    def __init__(self, request, platform_config, lms: "InteropLms") -> None:
        super().__init__(request, platform_config, lineitems_url=lms.lineitems_url,
                         allow_creating_lineitems=True)
        self.lms = lms

    def find_lineitems(self, page=1, limit=None, line_item_id=None, resource_link_id=None,
                       resource_id=None, tag=None, **_ignored):  # type: ignore[override]
        with self.lms.lock:
            items = [dict(i) for i in self.lms.line_items.values()]
        if resource_link_id is not None:
            items = [i for i in items if i.get("resourceLinkId") == resource_link_id]
        if resource_id is not None:
            items = [i for i in items if i.get("resourceId") == resource_id]
        if tag is not None:
            items = [i for i in items if i.get("tag") == tag]
        return {"content": items, "has_next": False, "next": None}

    def find_lineitem(self, line_item_id):  # type: ignore[override]
        with self.lms.lock:
            item = self.lms.line_items.get(str(line_item_id))
        if item is None:
            raise LineItemNotFoundException(f"no line item {line_item_id}")
        return dict(item)

    def create_lineitem(self, creation_data):  # type: ignore[override]
        problems = []
        ctype = self.request.headers.get("Content-Type", "")
        if not ctype.startswith(LINEITEM_MEDIA_TYPE):
            problems.append(f"Content-Type is {ctype!r}, AGS 2.0 §3.2 wants {LINEITEM_MEDIA_TYPE}")
        if not isinstance(creation_data, dict):
            raise LtiServiceException("the line item is not a JSON object", 400)
        if not str(creation_data.get("label") or "").strip():
            problems.append("the line item has no label (AGS 2.0 §3.2.5)")
        maximum = creation_data.get("scoreMaximum")
        if not isinstance(maximum, (int, float)) or maximum <= 0:
            problems.append(f"scoreMaximum {maximum!r} is not a number above 0 (AGS 2.0 §3.2.4)")
        if problems:
            self.lms.problem("POST line item: " + "; ".join(problems))
            raise LtiServiceException("; ".join(problems), 400)
        return self.lms.add_line_item(creation_data)

    def update_lineitem(self, update_data):  # type: ignore[override]
        with self.lms.lock:
            key = next((k for k, v in self.lms.line_items.items() if v["id"] == update_data.get("id")
                        or k == str(update_data.get("id"))), None)
            if key is None:
                raise LineItemNotFoundException("no such line item")
            item = self.lms.line_items[key]
            for field in ("label", "scoreMaximum", "resourceId", "tag", "resourceLinkId"):
                if field in update_data:
                    item[field] = update_data[field]
            return dict(item)

    def delete_lineitem(self, line_item_id):  # type: ignore[override]
        with self.lms.lock:
            if self.lms.line_items.pop(str(line_item_id), None) is None:
                raise LineItemNotFoundException("no such line item")

    def update_score(self, line_item_id, score):  # type: ignore[override]
        item = self.find_lineitem(line_item_id)
        headers = self.request.headers
        problems = []
        ctype = headers.get("Content-Type", "")
        if not ctype.startswith(SCORE_MEDIA_TYPE):
            problems.append(f"Content-Type is {ctype!r}, AGS 2.0 §3.4 wants {SCORE_MEDIA_TYPE}")
        if not isinstance(score, dict):
            problems.append("the score body is not a JSON object")
            score = {}
        members = {u["sub"] for u in USERS.values()}
        if score.get("userId") not in members:
            problems.append(f"userId {score.get('userId')!r} is not a member of the course")
        if score.get("activityProgress") not in (
                "Initialized", "Started", "InProgress", "Submitted", "Completed"):
            problems.append(f"activityProgress {score.get('activityProgress')!r} is invalid")
        if score.get("gradingProgress") not in (
                "FullyGraded", "Pending", "PendingManual", "Failed", "NotReady"):
            problems.append(f"gradingProgress {score.get('gradingProgress')!r} is invalid")
        given, maximum = score.get("scoreGiven"), score.get("scoreMaximum")
        if given is not None:
            if not isinstance(given, (int, float)) or given < 0:
                problems.append(f"scoreGiven {given!r} is not a number >= 0")
            if not isinstance(maximum, (int, float)) or maximum <= 0:
                problems.append(f"scoreGiven without a scoreMaximum above 0 ({maximum!r})")
        stamp = None
        try:
            stamp = datetime.fromisoformat(str(score.get("timestamp")).replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                problems.append("timestamp has no time zone (AGS 2.0 §3.4.7: ISO 8601 with offset)")
        except ValueError:
            problems.append(f"timestamp {score.get('timestamp')!r} is not ISO 8601")
        if problems:
            self.lms.problem(f"POST {item['id']}/scores: " + "; ".join(problems))
            return UpdateScoreStatus.NOTAPPLIED
        with self.lms.lock:
            previous = [s for s in self.lms.scores
                        if s["line_item"] == item["id"] and s["body"]["userId"] == score["userId"]]
            if previous and stamp is not None and stamp <= previous[-1]["stamp"]:
                return UpdateScoreStatus.OLD_TIMESTAMP  # 409, as AGS 2.0 §3.4.7 allows
            self.lms.scores.append({
                "line_item": item["id"], "line_item_key": str(line_item_id), "body": score,
                "stamp": stamp, "content_type": ctype, "query": dict(self.request.get_data),
            })
        return UpdateScoreStatus.SUCCESS

    def get_results(self, line_item_id, page=1, limit=None, user_id=None, **_):  # type: ignore[override]
        item = self.find_lineitem(line_item_id)
        with self.lms.lock:
            latest = {}
            for s in self.lms.scores:
                if s["line_item"] == item["id"]:
                    latest[s["body"]["userId"]] = s["body"]
        results = [{"id": f"{item['id']}/results/{u}", "userId": u, "scoreOf": item["id"],
                    "resultScore": b.get("scoreGiven"), "resultMaximum": b.get("scoreMaximum")}
                   for u, b in latest.items() if user_id in (None, u)]
        return {"content": results, "has_next": False, "next": None}


class InteropNrps(NamesRoleProvisioningService):
    def __init__(self, request, platform_config, lms: "InteropLms") -> None:
        super().__init__(request, platform_config, context_memberships_url=lms.memberships_url)

    def get_member_data_page(self, page=1, limit=None, role=None, since=None, **_):  # type: ignore[override]
        members = [{"user_id": u["sub"], "roles": u["roles"], "name": u["name"],
                    "email": u["email"], "status": "Active"} for u in USERS.values()]
        return {"content": members, "has_next": False, "next": None}

    def get_context_by_id(self):  # type: ignore[override]
        return Context(id=COURSE["id"], label=COURSE["label"], title=COURSE["title"])

    def is_resource_link_valid(self, context_id, resource_link_id):  # type: ignore[override]
        return resource_link_id in (QUIZ_LINK["id"], ESSAY_LINK["id"])


# --------------------------------------------------------------------------------------
# The platform: an HTTP server around the library
# --------------------------------------------------------------------------------------


class InteropLms:
    def __init__(self, port: int, gateway: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.port = port
        self.issuer = self.base
        self.gateway = gateway.rstrip("/")
        self.tool_launch_url = self.gateway + "/lti/launch"
        self.auth_url = self.base + "/auth"
        self.token_url = self.base + "/token"
        self.lineitems_url = self.base + f"/ags/{COURSE['id']}/lineitems"
        self.memberships_url = self.base + f"/nrps/{COURSE['id']}/memberships"
        self.dl_return_url = self.base + "/dl/return"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()
        self.public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.lock = threading.Lock()
        self.pending: dict[str, dict] = {}     # lti_message_hint -> launch in progress
        self.nonces: set[str] = set()
        self.line_items: dict[str, dict] = {}  # key (path segment) -> line item
        self.next_line_item = 1
        self.scores: list[dict] = []
        self.tokens: list[dict] = []
        self.jtis: set[str] = set()
        self.offered_scopes: set[str] = set()  # scopes offered in launches' service claims
        self.deep_links: list[dict] = []
        self.problems: list[str] = []
        self.log: list[str] = []
        self.server: ThreadingHTTPServer | None = None
        # The graded link's column exists before any launch (created by the instructor).
        self.add_line_item({"label": QUIZ_LINK["title"], "scoreMaximum": 10,
                            "resourceLinkId": QUIZ_LINK["id"], "tag": "quiz"})

    # -- state ---------------------------------------------------------------------------

    def platform(self) -> InteropPlatformConf:
        """A platform config per request, as the library's README does."""
        return InteropPlatformConf(lms=self)

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def line_item_url(self, key: str) -> str:
        # Moodle-style: the line item URL carries a query the tool must keep.
        return f"{self.lineitems_url}/{key}/lineitem?type_id=7"

    def add_line_item(self, data: dict) -> dict:
        with self.lock:
            key = str(self.next_line_item)
            self.next_line_item += 1
            item = {k: v for k, v in data.items() if k != "id"}
            item["id"] = self.line_item_url(key)
            self.line_items[key] = item
            return dict(item)

    def lineitem_for_link(self, link_id: str) -> str | None:
        with self.lock:
            return next((i["id"] for i in self.line_items.values()
                         if i.get("resourceLinkId") == link_id), None)

    def tool_jwks(self) -> dict:
        return requests.get(self.gateway + "/.well-known/jwks.json", timeout=HTTP_TIMEOUT).json()

    def verify_tool_jwt(self, token: str, audience: str, what: str) -> dict:
        """Glue: checks the library skips (it decodes with verify_aud=False and never looks
        at iss/sub/jti): signature by the key the gateway publishes for the header's kid,
        RS256, aud, iss, exp/iat."""
        header = jwt.get_unverified_header(token)
        if header.get("alg") != "RS256":
            raise ValueError(f"{what} is signed with {header.get('alg')}, LTI requires RS256")
        kid = header.get("kid")
        if not kid:
            raise ValueError(f"{what} has no kid in its header")
        keys = [k for k in self.tool_jwks().get("keys", []) if k.get("kid") == kid]
        if not keys:
            raise ValueError(f"{what} names kid {kid!r}, which the gateway's JWKS does not publish")
        if keys[0].get("use", "sig") != "sig":
            raise ValueError(f"the gateway's key {kid!r} has use {keys[0].get('use')!r}, not sig")
        key = jwt.PyJWK(keys[0], algorithm="RS256")
        return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience,
                          issuer=CLIENT_ID, leeway=10,
                          options={"require": ["iss", "aud", "exp", "iat"]})

    # -- endpoints -----------------------------------------------------------------------

    def start_launch(self, h: "Handler") -> None:
        """The user clicks the link in the course: third-party login initiation."""
        q = dict(parse_qsl(urlparse(h.path).query))
        name = q.get("scenario", "")
        if name not in SCENARIOS:
            return h.send_text(404, f"no scenario {name!r}")
        scenario = SCENARIOS[name]
        user = USERS[scenario["user"]]
        hint = f"{name}.{uuid.uuid4().hex}"
        pending = {"scenario": name, "user": user["sub"], "used": False,
                   "dl_data": f"dl-{uuid.uuid4().hex}"}
        with self.lock:
            self.pending[hint] = pending
        login = InteropOIDCLogin(StdlibRequest(h), self.platform())
        login.set_lti_message_hint(hint=hint)
        if scenario["kind"] == "deeplink":
            login.set_deeplinking_launch_url()
        h.redirect(login.initiate_login(user["sub"]))

    def auth(self, h: "Handler") -> None:
        """The OIDC auth endpoint: the tool's authentication request comes back through the
        browser; answer with the signed id_token, form-posted to the redirect_uri."""
        req = StdlibRequest(h)
        params = req.get_data or req.form_data
        problems = []
        # OIDC Core §3.1.2.1 / §3.1.2.2 and LTI 1.3 §5.1.1.2 / IMS Security Framework §5.1.1.
        expect = {"response_type": "id_token", "response_mode": "form_post", "prompt": "none",
                  "client_id": CLIENT_ID, "redirect_uri": self.tool_launch_url}
        for k, v in expect.items():
            if params.get(k) != v:
                problems.append(f"{k} is {params.get(k)!r}, expected {v!r}")
        if "openid" not in (params.get("scope") or "").split():
            problems.append(f"scope {params.get('scope')!r} lacks openid")
        for k in ("state", "nonce"):
            if not params.get(k):
                problems.append(f"{k} is missing")
        with self.lock:
            pending = self.pending.get(params.get("lti_message_hint", ""))
            if params.get("nonce") in self.nonces:
                problems.append("nonce was already used by an earlier auth request")
            self.nonces.add(params.get("nonce", ""))
            if pending is None:
                problems.append(f"lti_message_hint {params.get('lti_message_hint')!r} was not issued")
            elif pending["used"]:
                problems.append("lti_message_hint was already used")
            else:
                pending["used"] = True
        if pending is not None and params.get("login_hint") != pending["user"]:
            problems.append(f"login_hint {params.get('login_hint')!r} is not the user who "
                            f"started the launch ({pending['user']!r})")
        if problems:
            self.problem("auth request: " + "; ".join(problems))
            return h.send_text(400, "invalid auth request: " + "; ".join(problems))
        launch = InteropMessageLaunch(req, self.platform(), self, pending)
        data = launch.lti_launch()  # the library: preflight checks, claims, RS256 id_token
        h.send_html(200, render_library_form(data))

    def jwks(self, h: "Handler") -> None:
        h.send_json(200, self.platform().get_jwks())

    def token(self, h: "Handler") -> None:
        """Token endpoint (IMS Security Framework §4.1): the library verifies the client
        assertion's signature against the tool's JWKS and issues the token; the glue checks
        what it leaves out (aud, iss = sub = client_id, jti, lifetime)."""
        req = StdlibRequest(h)
        form = req.form_data
        problems = []
        if "application/x-www-form-urlencoded" not in req.content_type:
            problems.append(f"Content-Type is {req.content_type!r}, RFC 6749 §4.4.2 wants a form")
        if form.get("client_assertion_type") != JWT_BEARER:
            problems.append(f"client_assertion_type is {form.get('client_assertion_type')!r}")
        claims: dict = {}
        try:
            granted = self.platform().get_access_token(form)
        except Exception as exc:  # the library's refusal
            self.problem(f"token request refused by lti1p3platform: {type(exc).__name__}: {exc}")
            return h.send_json(400, {"error": "invalid_client",
                                     "error_description": f"{type(exc).__name__}: {exc}"})
        try:
            claims = self.verify_tool_jwt(form["client_assertion"], self.token_url,
                                          "the client assertion")
            if claims.get("sub") != CLIENT_ID:
                problems.append(f"assertion sub is {claims.get('sub')!r}, expected {CLIENT_ID!r}")
            if not claims.get("jti"):
                problems.append("assertion has no jti")
            if claims.get("exp", 0) - claims.get("iat", 0) > 300:
                problems.append("assertion lives longer than 5 minutes")
        except Exception as exc:
            problems.append(f"client assertion: {type(exc).__name__}: {exc}")
        with self.lock:
            # AGS 2.0 §3.1: the claim's scope lists "the scopes the tool may ask an access
            # token for". The library grants any known scope; the glue flags a request
            # beyond what the launches offered (RFC 6749 §3.3 leaves the server free to
            # narrow or refuse it: the library's services then refuse the token).
            beyond = [s for s in form.get("scope", "").split() if s not in self.offered_scopes]
            if beyond:
                note = (f"token request asks for {beyond}, which no launch offered in its "
                        f"AGS/NRPS claim (offered: {sorted(self.offered_scopes)}); AGS 2.0 §3.1: "
                        "the claim's scope lists the scopes the tool may ask an access token for")
                self.problems.append("token request: " + note)
            if claims.get("jti") in self.jtis:
                problems.append(f"assertion jti {claims.get('jti')!r} was replayed")
            self.jtis.add(claims.get("jti", ""))
        if problems:
            self.problem("token request: " + "; ".join(problems))
            return h.send_json(400, {"error": "invalid_client", "error_description": "; ".join(problems)})
        with self.lock:
            self.tokens.append({"assertion": claims, "scope_requested": form.get("scope", ""),
                                "scope_granted": granted["scope"]})
        h.send_json(200, dict(granted))

    def ags(self, h: "Handler", rest: list[str]) -> None:
        svc = InteropAgs(StdlibRequest(h), self.platform(), self)
        if not rest:
            if h.command == "GET":
                return h.send_lti(svc.handle_resp(svc.handle_get_lineitems))
            return h.send_lti(svc.handle_resp(svc.handle_create_lineitem))
        key, tail = rest[0], rest[1:]
        if tail == ["lineitem"]:
            handler = {"GET": svc.handle_get_lineitem, "PUT": svc.handle_update_lineitem,
                       "DELETE": svc.handle_delete_lineitem}.get(h.command, svc.handle_get_lineitem)
            return h.send_lti(svc.handle_resp(handler, line_item_id=key))
        if tail == ["lineitem", "scores"]:
            return h.send_lti(svc.handle_resp(svc.handle_update_score, line_item_id=key))
        if tail == ["lineitem", "results"]:
            return h.send_lti(svc.handle_resp(svc.handle_get_results, line_item_id=key))
        h.send_text(404, "no such AGS resource")

    def nrps(self, h: "Handler") -> None:
        svc = InteropNrps(StdlibRequest(h), self.platform(), self)
        h.send_lti(svc.handle_resp(svc.handle_get_members))

    def deep_link_return(self, h: "Handler") -> None:
        """deep_link_return_url: the library verifies the LtiDeepLinkingResponse (signature
        against the tool's JWKS, message type, accepted item types); the glue checks the
        claims it does not (LTI DL 2.0 §4.2: iss, aud, deployment_id, data, version)."""
        req = StdlibRequest(h)
        token = req.form_data.get("JWT", "")
        problems = []
        try:
            items = self.platform().validate_deeplinking_resp({"JWT": token})
        except Exception as exc:
            self.problem(f"deep linking response refused by lti1p3platform: {type(exc).__name__}: {exc}")
            return h.send_text(400, f"deep linking response refused: {type(exc).__name__}: {exc}")
        claims: dict = {}
        try:
            claims = self.verify_tool_jwt(token, self.issuer, "the deep linking response")
        except Exception as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
        if claims.get(CLAIM + "deployment_id") != DEPLOYMENT_ID:
            problems.append(f"deployment_id is {claims.get(CLAIM + 'deployment_id')!r}")
        if claims.get(CLAIM + "version") != "1.3.0":
            problems.append(f"version is {claims.get(CLAIM + 'version')!r}")
        if not claims.get("nonce"):
            problems.append("no nonce")
        with self.lock:
            issued = {p["dl_data"]: p for p in self.pending.values()
                      if SCENARIOS[p["scenario"]]["kind"] == "deeplink"}
        data = claims.get(DL_DATA)
        if data not in issued:
            problems.append(f"data {data!r} is not the value sent in deep_linking_settings")
        if problems:
            self.problem("deep linking response: " + "; ".join(problems))
            return h.send_text(400, "deep linking response: " + "; ".join(problems))
        with self.lock:
            self.deep_links.append({"claims": claims, "items": items})
        h.send_html(200, f"<!doctype html><p>Added {len(items)} item(s) to the course.</p>")

    def serve(self) -> None:
        lms = self

        class Bound(Handler):
            platform = lms

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Bound)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class Handler(BaseHTTPRequestHandler):
    platform: InteropLms
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep stderr quiet; requests are kept in the log
        pass

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        self.status = 0
        lms = self.platform
        path = urlparse(self.path).path
        parts = [p for p in path.split("/") if p]
        try:
            if path == "/lms/launch" and self.command == "GET":
                lms.start_launch(self)
            elif path == "/auth" and self.command in ("GET", "POST"):
                lms.auth(self)
            elif path == "/jwks" and self.command == "GET":
                lms.jwks(self)
            elif path == "/token" and self.command == "POST":
                lms.token(self)
            elif parts[:3] == ["ags", COURSE["id"], "lineitems"]:
                lms.ags(self, parts[3:])
            elif parts == ["nrps", COURSE["id"], "memberships"] and self.command == "GET":
                lms.nrps(self)
            elif path == "/dl/return" and self.command == "POST":
                lms.deep_link_return(self)
            else:
                self.send_text(404, f"no route {self.command} {path}")
        except Exception as exc:
            lms.problem(f"platform error on {self.command} {self.path}: {type(exc).__name__}: {exc}\n"
                        + traceback.format_exc())
            if not self.status:
                status = 401 if isinstance(exc, jwt.PyJWTError) else 500
                self.send_json(status, {"error": f"{type(exc).__name__}: {exc}"})
        note = ""
        bearer = (self.headers.get("Authorization") or "").split()
        if len(bearer) == 2 and bearer[0].lower() == "bearer":
            try:
                scopes = jwt_claims_unverified(bearer[1]).get("scopes", "")
                note = " [token scopes: " + " ".join(x.rsplit("/", 1)[-1] for x in scopes.split()) + "]"
            except jwt.PyJWTError:
                note = " [token unreadable]"
        elif path == "/token":
            asked = dict(parse_qsl(self.body.decode("utf-8", "replace"))).get("scope", "")
            note = " [asks: " + " ".join(x.rsplit("/", 1)[-1] for x in asked.split()) + "]"
        with lms.lock:
            lms.log.append(f"{self.command} {self.path[:120]} -> {self.status}{note}")

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.status = status
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def send_html(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/html; charset=utf-8")

    def send_json(self, status: int, value, ctype: str = "application/json") -> None:
        self._send(status, json.dumps(value).encode(), ctype)

    def redirect(self, url: str) -> None:
        self._send(302, b"", "text/plain", {"Location": url})

    def send_lti(self, resp: Response) -> None:
        """The library's Response as HTTP, as its Django adapter (wrap_json_resp) does:
        a page's content as the body, its next page as a Link header."""
        if 200 <= resp.code < 300:
            result = resp.result
            data = result["content"] if isinstance(result, dict) and "content" in result else result
            headers = {}
            if isinstance(result, dict) and result.get("next"):
                headers["Link"] = generate_next_link(result["next"])
            if resp.code == 204:
                return self._send(204, b"", resp.media_type, headers)
            return self._send(resp.code, json.dumps(data).encode(), resp.media_type, headers)
        self.send_json(resp.code, {"error": resp.message})


# --------------------------------------------------------------------------------------
# The driver: a browser and the app's back end
# --------------------------------------------------------------------------------------


class CheckFailed(Exception):
    pass


class FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": (a.get("method") or "get").lower(),
                               "inputs": []})
        elif tag == "input" and self.forms:
            self.forms[-1]["inputs"].append({"name": a.get("name"), "value": a.get("value", ""),
                                             "type": (a.get("type") or "text").lower()})


def forms_of(page: str) -> list[dict]:
    p = FormParser()
    p.feed(page)
    return p.forms


def query_of(url: str) -> dict:
    return dict(parse_qsl(urlparse(url).query, keep_blank_values=True))


def jwt_claims_unverified(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


class Browser:
    """Follows nothing by itself. Carries the gateway's cookies explicitly: they are Secure,
    which browsers honour on http://127.0.0.1 (a secure context) but Python's cookiejar does
    not."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.cookies: dict[str, dict] = {}

    def request(self, method: str, url: str, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if url.startswith(self.gateway + "/"):
            path = urlparse(url).path
            sent = [f"{n}={c['value']}" for n, c in self.cookies.items()
                    if path.startswith(c["attrs"].get("path", "/"))]
            if sent:
                headers["Cookie"] = "; ".join(sent)
        r = requests.request(method, url, headers=headers, allow_redirects=False,
                             timeout=HTTP_TIMEOUT, **kw)
        if url.startswith(self.gateway + "/"):
            for raw in r.raw.headers.getlist("Set-Cookie"):
                first, *attrs = [p.strip() for p in raw.split(";")]
                name, _, value = first.partition("=")
                parsed = {}
                for attr in attrs:
                    k, _, v = attr.partition("=")
                    parsed[k.lower()] = v if v else True
                self.cookies[name] = {"value": value, "attrs": parsed, "raw": raw}
        return r

    def get(self, url: str, **kw) -> requests.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw) -> requests.Response:
        return self.request("POST", url, **kw)


class Check:
    def __init__(self, lms: InteropLms, gateway: str, app_key: str, verbose: bool) -> None:
        self.lms = lms
        self.verbose = verbose
        self.gw = gateway.rstrip("/")
        self.app_key = app_key
        self.passed = 0
        self.failures: list[str] = []
        self.flow = ""

    # -- assertions ----------------------------------------------------------------------

    def ok(self, cond: bool, what: str, detail: str = "") -> None:
        if not cond:
            raise CheckFailed(what + (f"\n      {detail}" if detail else ""))
        self.passed += 1
        if self.verbose:
            print(f"  ok   {what}")

    def eq(self, actual, expected, what: str) -> None:
        self.ok(actual == expected, what, f"expected {expected!r}\n      got      {actual!r}")

    def status(self, r: requests.Response, expected: int, what: str) -> None:
        body = r.text[:800] if r.text else ""
        self.ok(r.status_code == expected, what,
                f"{r.request.method} {r.request.url[:200]} answered {r.status_code}, expected "
                f"{expected}; Location: {r.headers.get('Location')}; body: {body}")

    def run(self, name: str, fn) -> object:
        """One flow; its first failed check ends it (later flows still run)."""
        if self.verbose:
            print(f"\n== {name}")
        self.flow = name
        before = self.passed
        try:
            result = fn()
            print(f"ok   {name} ({self.passed - before} checks)")
            return result
        except CheckFailed as exc:
            self.failures.append(f"[{name}] {exc}")
            first = str(exc).splitlines()[0] if str(exc) else ""
            print(f"FAIL {name} (after {self.passed - before} checks passed): {first}")
        except Exception as exc:
            self.failures.append(f"[{name}] unexpected {type(exc).__name__}: {exc}")
            print(f"FAIL {name}: unexpected {type(exc).__name__}: {exc}")
            traceback.print_exc()
        return None

    # -- the app's back end --------------------------------------------------------------

    def api(self, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, self.gw + path, timeout=HTTP_TIMEOUT,
                                headers={"Authorization": f"Bearer {self.app_key}"}, **kw)

    # -- flows ---------------------------------------------------------------------------

    def gateway_up(self) -> None:
        r = requests.get(self.gw + "/readyz", timeout=HTTP_TIMEOUT)
        self.status(r, 200, "the gateway is ready (GET /readyz)")
        r = requests.get(self.gw + "/.well-known/jwks.json", timeout=HTTP_TIMEOUT)
        self.status(r, 200, "the gateway publishes its JWKS")
        rs256 = [k for k in r.json().get("keys", []) if k.get("alg") == "RS256"]
        self.ok(bool(rs256) and all(k.get("kid") and k.get("use") == "sig" and k.get("kty") == "RSA"
                                    for k in rs256),
                "the JWKS has an RS256 signing key with a kid (LTI Security Framework §6)",
                json.dumps(r.json())[:400])

    def start(self, scenario: str) -> dict:
        """Link click -> tool login initiation -> platform auth -> the form_post page.
        Returns the browser, the tool's auth request and the form to post."""
        b = Browser(self.gw)
        r = b.get(f"{self.lms.base}/lms/launch?scenario={scenario}")
        self.status(r, 302, f"{scenario}: the platform (lti1p3platform) starts the OIDC login")
        login_url = r.headers["Location"]
        self.ok(login_url.startswith(self.gw + "/lti/login?"),
                f"{scenario}: the login initiation goes to the tool's /lti/login", login_url)
        r = b.get(login_url)
        self.status(r, 302, f"{scenario}: GET /lti/login redirects to the platform's auth endpoint")
        auth_url = r.headers.get("Location", "")
        self.ok(auth_url.startswith(self.lms.auth_url + "?"),
                f"{scenario}: the redirect goes to the registered auth_url", auth_url)
        auth = query_of(auth_url)
        binding = [c for n, c in b.cookies.items() if re.fullmatch(r"pgw_lti_[0-9a-f]{16}", n)]
        self.ok(len(binding) == 1, f"{scenario}: the login sets one pgw_lti_<16 hex> binding cookie",
                f"cookies: {[c['raw'] for c in b.cookies.values()]}")
        attrs = binding[0]["attrs"]
        self.ok(attrs.get("path") == "/lti" and attrs.get("httponly") and attrs.get("secure")
                and str(attrs.get("samesite", "")).lower() == "none",
                f"{scenario}: the cookie is Path=/lti; HttpOnly; Secure; SameSite=None", binding[0]["raw"])
        r = b.get(auth_url)
        self.status(r, 200, f"{scenario}: the platform accepts the tool's auth request and answers "
                            "with the form_post page")
        forms = forms_of(r.text)
        self.ok(len(forms) == 1 and forms[0]["method"] == "post",
                f"{scenario}: the auth response is one POST form", r.text[:400])
        form = forms[0]
        fields = {i["name"]: i["value"] for i in form["inputs"] if i["name"]}
        self.eq(form["action"], self.gw + "/lti/launch", f"{scenario}: the form posts to the redirect_uri")
        self.ok(set(fields) == {"id_token", "state"}, f"{scenario}: the form carries id_token and state",
                repr(sorted(fields)))
        self.eq(fields["state"], auth["state"], f"{scenario}: the state comes back unchanged")
        claims = jwt_claims_unverified(fields["id_token"])
        self.eq(claims.get("nonce"), auth["nonce"], f"{scenario}: the id_token carries the tool's nonce")
        self.eq(jwt.get_unverified_header(fields["id_token"]).get("kid"),
                self.lms.platform().get_jwks()["keys"][0]["kid"],
                f"{scenario}: the id_token names the platform's key (kid)")
        return {"browser": b, "auth": auth, "action": form["action"], "fields": fields, "claims": claims}

    def launch_to_app(self, scenario: str) -> dict:
        s = self.start(scenario)
        r = s["browser"].post(s["action"], data=s["fields"])
        self.status(r, 302, f"{scenario}: POST /lti/launch accepts the library's id_token")
        location = r.headers.get("Location", "")
        self.ok(location.startswith(APP_URL + "?"), f"{scenario}: the tool redirects to app_url", location)
        code = query_of(location).get("code", "")
        self.ok(len(code) >= 20, f"{scenario}: with a one-time code", location)
        r = self.api("POST", "/v1/launches/exchange", json={"code": code})
        self.status(r, 200, f"{scenario}: POST /v1/launches/exchange returns the launch context")
        s.update(code=code, context=r.json(), launch_response=r)
        return s

    def check_context(self, scenario: str, ctx: dict) -> None:
        sc = SCENARIOS[scenario]
        user = USERS[sc["user"]]
        self.eq(ctx.get("kind"), "lti", f"{scenario}: kind is lti")
        self.eq(ctx.get("partner"), PARTNER_ID, f"{scenario}: partner is the registered one")
        self.eq(ctx.get("user"), {"id": user["sub"], "name": user["name"]}, f"{scenario}: user is sub and name")
        self.eq(ctx.get("email"), user["email"], f"{scenario}: email")
        self.eq((ctx.get("iss"), ctx.get("client_id"), ctx.get("deployment_id"), ctx.get("lms")),
                (self.lms.issuer, CLIENT_ID, DEPLOYMENT_ID, "generic"),
                f"{scenario}: iss, client_id, deployment_id, lms")
        self.eq((ctx.get("message_type"), ctx.get("lti_version")), ("LtiResourceLinkRequest", "1.3.0"),
                f"{scenario}: message type and version")
        expected_roles = sorted({"learner" if r in (ROLE_LEARNER, ROLE_STUDENT) else "instructor"
                                 for r in user["roles"]})
        self.eq(ctx.get("roles"), expected_roles, f"{scenario}: roles normalised")
        self.eq(ctx.get("roles_original"), user["roles"], f"{scenario}: roles_original as sent")
        self.eq(ctx.get("context"), COURSE, f"{scenario}: context (course) claim")
        link = dict(sc["link"])
        self.eq(ctx.get("resource_link"), link, f"{scenario}: resource_link claim")
        self.eq(ctx.get("custom"), sc["custom"], f"{scenario}: custom parameters")
        self.eq(ctx.get("launch_presentation"),
                {"document_target": "iframe", "return_url": self.lms.base + "/course/101"},
                f"{scenario}: launch_presentation")
        self.eq((ctx.get("tool_platform") or {}).get("guid"), "interop-platform-1", f"{scenario}: tool_platform")
        self.eq(ctx.get("target_link_uri"), self.gw + "/lti/launch", f"{scenario}: target_link_uri")
        self.eq((ctx.get("grade_passback"), ctx.get("roster")), (True, True),
                f"{scenario}: grade_passback and roster offered")
        ags = ctx.get("ags") or {}
        expected_li = self.lms.lineitem_for_link(link["id"]) if sc["ags"] == "lineitem" else None
        self.eq((ags.get("lineitem"), ags.get("lineitems")), (expected_li, self.lms.lineitems_url),
                f"{scenario}: AGS endpoints")
        self.ok(SCOPE_SCORE in (ags.get("scope") or []), f"{scenario}: AGS score scope", repr(ags))
        self.eq((ctx.get("nrps") or {}).get("context_memberships_url"), self.lms.memberships_url,
                f"{scenario}: NRPS endpoint")
        self.ok(bool(ctx.get("launch_id")), f"{scenario}: a launch_id")

    def resource_link_launch(self) -> dict:
        s = self.launch_to_app("graded")
        ctx = s["context"]
        self.check_context("graded", ctx)
        r = self.api("GET", f"/v1/launches/{ctx['launch_id']}")
        self.status(r, 200, "graded: GET /v1/launches/{id} returns the launch again")
        r = s["browser"].post(s["action"], data=s["fields"])
        self.ok(r.status_code == 400 and "Location" not in r.headers,
                "graded: the same launch posted again is refused (state spent)",
                f"{r.status_code} {r.headers.get('Location')} {r.text[:300]}")
        r = self.api("POST", "/v1/launches/exchange", json={"code": s["code"]})
        self.ok(400 <= r.status_code < 500, "graded: the handoff code works once",
                f"{r.status_code} {r.text[:300]}")
        return ctx

    def roster_and_line_items(self, ctx: dict) -> None:
        r = self.api("GET", f"/v1/launches/{ctx['launch_id']}/members")
        self.status(r, 200, "GET /v1/launches/{id}/members (NRPS through the library's service)")
        body = r.json()
        self.ok(set(body) == {"data", "next_cursor"}, "the roster is a page of the API's list shape", repr(body)[:300])
        members = body.get("data") or []
        self.eq(sorted((m.get("user_id"), tuple(m.get("roles") or [])) for m in members),
                sorted((u["sub"], tuple(u["roles"])) for u in USERS.values()),
                "the roster is the platform's members with their roles")
        r = self.api("GET", f"/v1/launches/{ctx['launch_id']}/lineitems")
        self.status(r, 200, "GET /v1/launches/{id}/lineitems (AGS line item container)")
        body = r.json()
        self.ok(set(body) == {"data", "next_cursor"}, "the line items are a page of the API's list shape", repr(body)[:300])
        ids = [i.get("id") for i in body.get("data") or []]
        self.ok(self.lms.lineitem_for_link(QUIZ_LINK["id"]) in ids,
                "the container lists the quiz's line item", repr(body))

    def post_score(self, ctx: dict, score: dict, label: str) -> dict:
        before = len(self.lms.scores)
        r = self.api("POST", f"/v1/launches/{ctx['launch_id']}/scores", json=score)
        self.status(r, 202, f"{label}: POST /v1/launches/{{id}}/scores is accepted")
        score_id = r.json().get("score_id")
        self.ok(bool(score_id), f"{label}: with a score_id", r.text)
        deadline = time.monotonic() + 30
        view: dict = {}
        while time.monotonic() < deadline:
            r = self.api("GET", f"/v1/scores/{score_id}")
            if r.status_code != 200:
                self.status(r, 200, f"{label}: GET /v1/scores/{{id}}")
            view = r.json()
            if view.get("status") != "pending":
                break
            time.sleep(0.1)
        self.eq(view.get("status"), "delivered",
                f"{label}: the gateway delivers the score to the platform "
                f"(last_status {view.get('last_status')}, last_error {view.get('last_error')!r})")
        with self.lms.lock:
            new = self.lms.scores[before:]
        self.eq(len(new), 1, f"{label}: the platform recorded exactly one score")
        return {"view": view, "recorded": new[0]}

    def check_recorded_score(self, label: str, got: dict, sent: dict, user: str, line_item: str) -> None:
        rec = got["recorded"]
        body = rec["body"]
        self.eq(rec["line_item"], line_item, f"{label}: posted to {{line item}}/scores")
        self.eq(rec["query"], {"type_id": "7"}, f"{label}: the line item URL's query is kept")
        self.ok(rec["content_type"].startswith(SCORE_MEDIA_TYPE), f"{label}: Content-Type {SCORE_MEDIA_TYPE}",
                rec["content_type"])
        self.eq(body.get("userId"), user, f"{label}: userId is the launch's sub")
        for k in ("scoreGiven", "scoreMaximum", "activityProgress", "gradingProgress", "comment"):
            if k in sent:
                self.eq(body.get(k), sent[k], f"{label}: {k}")
        self.ok(rec["stamp"] is not None and abs((datetime.now(timezone.utc) - rec["stamp"]).total_seconds()) < 120,
                f"{label}: timestamp is ISO 8601 with a zone and current", repr(body.get("timestamp")))
        self.eq(got["view"].get("line_item"), line_item, f"{label}: GET /v1/scores names the line item")
        with self.lms.lock:
            tokens = list(self.lms.tokens)
        self.ok(any(SCOPE_SCORE in t["scope_granted"].split() for t in tokens),
                f"{label}: the platform issued a score-scoped token for a client assertion it verified "
                "(RS256, kid from the gateway's JWKS, aud = token URL, iss = sub = client_id)",
                repr(tokens))

    def score_to_launch_line_item(self, ctx: dict) -> None:
        sent = {"scoreGiven": 8, "scoreMaximum": 10, "activityProgress": "Completed",
                "gradingProgress": "FullyGraded", "comment": "Well done"}
        got = self.post_score(ctx, sent, "score 1")
        self.check_recorded_score("score 1", got, sent, USERS["ada"]["sub"],
                                  self.lms.lineitem_for_link(QUIZ_LINK["id"]) or "")

    def score_to_new_line_item(self) -> None:
        s = self.launch_to_app("new-column")
        ctx = s["context"]
        self.check_context("new-column", ctx)
        self.eq(self.lms.lineitem_for_link(ESSAY_LINK["id"]), None, "new-column: the platform has no line item "
                "for the essay yet")
        sent = {"scoreGiven": 41.5, "scoreMaximum": 50, "activityProgress": "Submitted",
                "gradingProgress": "FullyGraded"}
        got = self.post_score(ctx, sent, "score 2")
        created = self.lms.lineitem_for_link(ESSAY_LINK["id"])
        self.ok(created is not None, "score 2: the gateway created a line item for the link in the container",
                repr(self.lms.line_items))
        with self.lms.lock:
            item = next(i for i in self.lms.line_items.values() if i["id"] == created)
        self.eq((item.get("label"), item.get("scoreMaximum")), (ESSAY_LINK["title"], 50),
                "score 2: the new line item has the link's title and the score's maximum")
        self.check_recorded_score("score 2", got, sent, USERS["alan"]["sub"], created or "")

    def deep_linking(self) -> None:
        s = self.start("deep-link")
        claims = s["claims"]
        self.eq(claims.get(CLAIM + "message_type"), "LtiDeepLinkingRequest",
                "deep-link: the library sends an LtiDeepLinkingRequest")
        b = s["browser"]
        r = b.post(s["action"], data=s["fields"])
        self.status(r, 200, "deep-link: POST /lti/launch opens the content picker")
        forms = forms_of(r.text)
        self.ok(len(forms) == 1 and forms[0]["method"] == "post", "deep-link: the picker is one POST form",
                r.text[:400])
        picker = forms[0]
        choices = [i for i in picker["inputs"] if i["name"] == "item"]
        self.eq([c["type"] for c in choices], ["checkbox", "checkbox"],
                "deep-link: both configured items are offered, several allowed (accept_multiple)")
        action = urljoin(self.gw + "/", picker["action"])
        self.ok(action.startswith(self.gw + "/lti/deep-link/"), "deep-link: the picker posts to the gateway",
                action)
        r = b.post(action, data=[("item", c["value"]) for c in choices])
        self.status(r, 200, "deep-link: the choice yields the auto-post page")
        forms = forms_of(r.text)
        self.ok(len(forms) == 1, "deep-link: one form back to the platform", r.text[:400])
        back = forms[0]
        self.eq(back["action"], self.lms.dl_return_url, "deep-link: it posts to deep_link_return_url")
        fields = {i["name"]: i["value"] for i in back["inputs"] if i["name"]}
        self.ok("JWT" in fields, "deep-link: the response is the JWT field", repr(sorted(fields)))
        before = len(self.lms.deep_links)
        r = b.post(back["action"], data={"JWT": fields["JWT"]})
        self.status(r, 200, "deep-link: lti1p3platform verifies the LtiDeepLinkingResponse "
                            "(signature by the gateway's JWKS, message type, item types; glue: iss, aud, "
                            "deployment_id, data)")
        with self.lms.lock:
            got = self.lms.deep_links[before:]
        self.eq(len(got), 1, "deep-link: the platform recorded the response")
        items = got[0]["items"]
        self.eq(len(items), 2, "deep-link: two content items")
        first, second = items
        self.eq((first.get("type"), first.get("title"), first.get("url"), first.get("custom")),
                ("ltiResourceLink", "Practice module", self.gw + "/lti/launch", {"chapter": "3"}),
                "deep-link: the ltiResourceLink item (type, title, launch url, custom)")
        self.eq((first.get("lineItem") or {}).get("scoreMaximum"), 100.0,
                "deep-link: with its line item's scoreMaximum")
        self.eq((second.get("type"), second.get("title"), second.get("url")),
                ("link", "Reading list", "https://app.example.test/reading"), "deep-link: the link item")

    def tampered(self) -> None:
        s = self.start("tampered")
        head, body, sig = s["fields"]["id_token"].split(".")
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        claims["sub"] = USERS["grace"]["sub"]
        claims[CLAIM + "roles"] = [ROLE_INSTRUCTOR]
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        fields = dict(s["fields"], id_token=f"{head}.{forged}.{sig}")
        r = s["browser"].post(s["action"], data=fields)
        self.ok(r.status_code == 400 and not r.headers.get("Location"),
                "tampered: an id_token whose claims were changed after signing is refused",
                f"{r.status_code} {r.headers.get('Location')} {r.text[:300]}")

    def platform_clean(self) -> None:
        with self.lms.lock:
            problems = list(self.lms.problems)
        self.ok(not problems, "the platform saw no protocol problem in any request from the gateway",
                "\n      ".join(problems))

    def all(self) -> int:
        self.run("gateway", self.gateway_up)
        ctx = self.run("resource link launch (learner; AGS line item; NRPS)", self.resource_link_launch)
        if ctx:
            self.run("NRPS roster and AGS line items through the gateway", lambda: self.roster_and_line_items(ctx))
            self.run("AGS score to the launch's line item", lambda: self.score_to_launch_line_item(ctx))
        self.run("AGS score to a link without a line item (the gateway creates one)", self.score_to_new_line_item)
        self.run("Deep Linking (instructor): picker -> LtiDeepLinkingResponse", self.deep_linking)
        self.run("tampered id_token", self.tampered)
        self.run("platform-side protocol checks", self.platform_clean)
        if self.failures:
            print()
            print("Failures:")
            for f in self.failures:
                print("  - " + f)
            with self.lms.lock:
                log = list(self.lms.log)
            print("Requests the platform received (last 40):")
            for line in log[-40:]:
                print("    " + line)
        print(f"platform_check: {self.passed} passed, {len(self.failures)} failed")
        return 1 if self.failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--platform-port", type=int, default=int(os.environ.get("LTI_PLATFORM_PORT", "0") or 0),
                    help="port of the platform on 127.0.0.1 (env LTI_PLATFORM_PORT)")
    ap.add_argument("--gateway", default=os.environ.get("PGW_URL", ""),
                    help="the gateway's public URL, e.g. http://127.0.0.1:8080 (env PGW_URL)")
    ap.add_argument("--app-key", default=os.environ.get("PGW_APP_KEY", ""),
                    help="an app-role API key of the gateway (env PGW_APP_KEY)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    default=os.environ.get("INTEROP_VERBOSE", "") not in ("", "0"),
                    help="print every check, not only each flow's outcome (env INTEROP_VERBOSE=1)")
    ap.add_argument("--emit-partners", action="store_true",
                    help="print the gateway's partners TOML for this platform and exit")
    args = ap.parse_args()
    if not args.platform_port:
        ap.error("--platform-port (or LTI_PLATFORM_PORT) is required")
    base = f"http://127.0.0.1:{args.platform_port}"
    if args.emit_partners:
        sys.stdout.write(partners_toml(base))
        return 0
    if not args.gateway or not args.app_key:
        ap.error("--gateway and --app-key (or PGW_URL and PGW_APP_KEY) are required")
    lms = InteropLms(args.platform_port, args.gateway)
    lms.serve()
    print(f"platform_check: lti1p3platform platform at {base} (issuer {lms.issuer}, client_id "
          f"{CLIENT_ID}, deployment {DEPLOYMENT_ID}); tool at {lms.gateway}")
    try:
        return Check(lms, args.gateway, args.app_key, args.verbose).all()
    finally:
        lms.stop()


if __name__ == "__main__":
    sys.exit(main())
