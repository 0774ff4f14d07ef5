"""SAML interoperability check: the gateway, as a SAML 2.0 service provider, against pysaml2
(PyPI) as the identity provider, everything on 127.0.0.1. Run by scripts/interop-saml.sh:

    check.py --gateway URL --idp-port P --work DIR     (the app key in PGW_APP_KEY)

pysaml2 does the IdP's SAML work: its metadata (saml2.metadata), reading the gateway's SP
metadata (remote metadata, from the gateway's metadata URLs), parsing and checking the
AuthnRequest (saml2.server.Server.parse_authn_request, including the HTTP-Redirect binding's
signature when the IdP wants signed requests), the persistent NameID (its IdentDB), the
attribute statement (its attribute maps, NameFormat uri), signing (xmlsec1, RSA-SHA256),
encryption and the HTTP-POST form (apply_binding). The glue here: key generation, an HTTP
server for the metadata and the SSO endpoint, a browser (requests, no automatic redirects)
and the checks. Prints one line per check; exits 1 when any failed.

One adaptation: pysaml2 7.5 encrypts assertions with tripledes-cbc whatever it is asked
(Entity._encrypt_assertion calls pre_encryption_part() and SecurityContext.encrypt_assertion
with their defaults, msg_enc=tripledes-cbc and key_type="des-192"; create_authn_response has
no parameter for it and the config's encrypt_key_type is not used on that path). The gateway
decrypts aes128-cbc and aes128-gcm only, so for the encrypted checks the IdP's
_encrypt_assertion is replaced (on the instance) by the same steps with those two pysaml2
parameters set: pre_encryption_part(msg_enc=aes128-cbc|aes128-gcm, key_enc=rsa-oaep-mgf1p)
and encrypt_assertion(key_type="aes-128"). The rest of create_authn_response (which element
is signed and in which order, the EncryptedAssertion) stays pysaml2's own. pysaml2's
untouched tripledes-cbc output is checked too: the gateway must refuse it and say why.

Gateway bugs this check found are listed in KNOWN_GATEWAY_BUGS; their checks print KNOWN and
do not fail the run unless INTEROP_SAML_STRICT=1 (and print XPASS, failing, once fixed).
The responses pysaml2 made are saved as pysaml2-*.xml in --work (INTEROP_KEEP_TMP=1 keeps it).
"""

import argparse
import base64
import datetime
import html.parser
import json
import os
import shutil
import sys
import threading
import traceback
import urllib.parse
import xml.dom.minidom
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, saml
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_PERSISTENT
from saml2.server import Server
from saml2.sigver import (
    RSA_OAEP_MGF1P,
    get_pem_wrapped_unwrapped,
    make_temp,
    pre_encryption_part,
)
from saml2.xmldsig import DIGEST_SHA1, DIGEST_SHA256, SIG_RSA_SHA1, SIG_RSA_SHA256

AES128_CBC = "http://www.w3.org/2001/04/xmlenc#aes128-cbc"
AES128_GCM = "http://www.w3.org/2009/xmlenc11#aes128-gcm"
TRIPLE_DES_CBC = "http://www.w3.org/2001/04/xmlenc#tripledes-cbc"

# Gateway behaviour this check found wrong, each shown by a check marked with its key (see
# Checker.check): those print KNOWN instead of failing the run (INTEROP_SAML_STRICT=1 makes
# them fail), and XPASS, failing, once the gateway is fixed.
KNOWN_GATEWAY_BUGS = {
    # None open. Fixed (src/sso/xmlenc.rs): "keyinfo-xmlns" (a KeyInfo without its own
    # xmlns:ds declaration inside EncryptedData), "encrypted-inner-signature" (an assertion
    # signed inside its encryption, Response unsigned), "unsupported-method-message".
}

APP_URL = "https://app.uni.example/sso"
PARTNER = "state-uni"
# The connections scripts/interop-saml.sh configures, all with this IdP's metadata URL.
CONN = "uni-saml"  # SP-initiated, routed by the email domain, asks for a persistent NameID
CONN_ENC = "uni-saml-enc"  # require_encrypted_assertions = true
CONN_PORTAL = "uni-saml-portal"  # allow_idp_initiated = true
CONN_SIGNED = "uni-saml-signed"  # sign_authn_requests = true

USER_ID = "ghopper"  # the IdP's local user id; the SP sees a persistent NameID for it
IDENTITY = {
    "mail": ["grace.hopper@uni.example"],
    "displayName": ["Grace Hopper"],
    "givenName": ["Grace"],
    "sn": ["Hopper"],
    "eduPersonPrincipalName": ["ghopper@uni.example"],
    "eduPersonScopedAffiliation": ["faculty@uni.example", "member@uni.example"],
    "isMemberOf": ["cs-faculty", "course-admins"],
}
OID_MAIL = "urn:oid:0.9.2342.19200300.100.1.3"
OID_EPPN = "urn:oid:1.3.6.1.4.1.5923.1.1.1.6"
OID_IS_MEMBER_OF = "urn:oid:1.3.6.1.4.1.5923.1.5.1.1"


def key_and_cert(work, name):
    """A new RSA-2048 key and a self-signed certificate (PEM files) for the IdP."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_file = os.path.join(work, f"{name}.key")
    cert_file = os.path.join(work, f"{name}.crt")
    with open(key_file, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    with open(cert_file, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


def idp_server(base, key_file, cert_file, sp_metadata_urls, want_signed_requests=False):
    """A pysaml2 IdP (saml2.server.Server) configured in code."""
    conf = {
        "entityid": f"{base}/idp/metadata",
        "name": "pysaml2 interop IdP",
        "service": {
            "idp": {
                "name": "pysaml2 interop IdP",
                "endpoints": {
                    "single_sign_on_service": [(f"{base}/idp/sso/redirect", BINDING_HTTP_REDIRECT)],
                },
                "policy": {
                    "default": {
                        "lifetime": {"minutes": 5},
                        "attribute_restrictions": None,
                        "name_form": NAME_FORMAT_URI,
                        "nameid_format": NAMEID_FORMAT_PERSISTENT,
                    },
                },
                "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                "want_authn_requests_signed": want_signed_requests,
                "sign_response": True,
                "sign_assertion": False,
                # Here, not only at the top level: the Server reads them in its service's
                # context (config.getattr("signing_algorithm") is _idp_signing_algorithm),
                # and without them pysaml2 7.5 signs with rsa-sha1, which the gateway refuses.
                "signing_algorithm": SIG_RSA_SHA256,
                "digest_algorithm": DIGEST_SHA256,
            },
        },
        "key_file": key_file,
        "cert_file": cert_file,
        # The gateway's SP metadata, fetched from its metadata URLs (unsigned metadata: no
        # cert to check it with, as for a metadata URL an SP administrator hands over).
        "metadata": {"remote": [{"url": u} for u in sp_metadata_urls]},
        "signing_algorithm": SIG_RSA_SHA256,
        "digest_algorithm": DIGEST_SHA256,
        "xmlsec_binary": shutil.which("xmlsec1"),
        "delete_tmpfiles": True,
        "accepted_time_diff": 60,
    }
    cfg = IdPConfig()
    cfg.load(conf)
    return Server(config=cfg)


def use_aes_for_encryption(server, msg_enc):
    """pysaml2's Entity._encrypt_assertion with the data-encryption algorithm chosen: the
    same calls (certificate from the SP metadata, pre_encryption_part, sec.encrypt_assertion),
    msg_enc and key_type set instead of left at their tripledes-cbc/des-192 defaults."""

    def _encrypt_assertion(encrypt_cert, sp_entity_id, response, node_xpath=None):
        if encrypt_cert:
            certs = [(None, encrypt_cert)]
        else:
            certs = server.metadata.certs(sp_entity_id, "any", "encryption")
        if not certs:
            raise RuntimeError(f"no encryption certificate for {sp_entity_id} in its metadata")
        cert_name, cert = certs[0]
        wrapped, unwrapped = get_pem_wrapped_unwrapped(cert)
        tmp = make_temp(wrapped.encode("ascii"), decode=False, delete_tmpfiles=server.config.delete_tmpfiles)
        return server.sec.encrypt_assertion(
            response,
            tmp.name,
            pre_encryption_part(msg_enc=msg_enc, key_enc=RSA_OAEP_MGF1P, key_name=cert_name, encrypt_cert=unwrapped),
            key_type="aes-128",
            node_xpath=node_xpath,
        )

    server._encrypt_assertion = _encrypt_assertion


def default_encryption(server):
    """Back to pysaml2's own _encrypt_assertion (tripledes-cbc)."""
    server.__dict__.pop("_encrypt_assertion", None)


class FormParser(html.parser.HTMLParser):
    """The auto-posting form of the HTTP-POST binding: its action and hidden inputs."""

    def __init__(self):
        super().__init__()
        self.action = None
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.action = a.get("action")
        elif tag == "input" and a.get("name"):
            self.fields[a["name"]] = a.get("value") or ""


class Idp:
    """The IdP's HTTP side: metadata, and the HTTP-Redirect SSO endpoint answering with
    pysaml2's HTTP-POST form. `mode` says how the next response is made."""

    def __init__(self, base, work, sp_metadata_urls):
        self.base = base
        self.work = work
        self.sp_metadata_urls = sp_metadata_urls
        self.key_file, self.cert_file = key_and_cert(work, "idp")
        self.server = None  # made once the gateway serves its SP metadata
        self.strict = None  # the same IdP, wanting signed AuthnRequests
        self.metadata_xml = None
        self.mode = {}
        self.requests = []  # (query dict, AuthnRequest) per SSO request
        self.issued = []  # (sp entity id, NameID text) per response
        self.saved = {}  # name -> response XML, for the report

    def load(self):
        self.server = idp_server(self.base, self.key_file, self.cert_file, self.sp_metadata_urls)
        self.strict = idp_server(
            self.base, self.key_file, self.cert_file, self.sp_metadata_urls, want_signed_requests=True
        )
        self.strict.ident = self.server.ident  # one IdP: the same persistent NameIDs
        self.metadata_xml = create_metadata_string(None, config=self.server.config, sign=False)
        if isinstance(self.metadata_xml, bytes):
            self.metadata_xml = self.metadata_xml.decode("utf-8")

    def response(self, server, req_id, acs, sp_entity_id, name_id_policy=None, **kw):
        """pysaml2's authn response (signing as kw says), as an XML string. `audience` in kw
        makes it for another SP (its entity id in the Audience and the NameID qualifier)."""
        audience = kw.pop("audience", sp_entity_id)
        resp = server.create_authn_response(
            IDENTITY,
            in_response_to=req_id,
            destination=acs,
            sp_entity_id=audience,
            name_id_policy=name_id_policy,
            userid=USER_ID,
            authn={"class_ref": saml.AUTHN_PASSWORD_PROTECTED, "authn_auth": self.server.config.entityid},
            **kw,
        )
        return str(resp)

    def sso(self, query):
        """HTTP-Redirect SSO: parse (and verify) the AuthnRequest, answer with the POST form."""
        strict = self.mode.get("strict", False)
        server = self.strict if strict else self.server
        try:
            req = server.parse_authn_request(
                query["SAMLRequest"],
                BINDING_HTTP_REDIRECT,
                relay_state=query.get("RelayState"),
                sigalg=query.get("SigAlg"),
                signature=query.get("Signature"),
            )
        except Exception as e:  # pysaml2 raises IncorrectlySigned and others
            self.requests.append((query, None))
            return 400, "text/plain", f"pysaml2 refused the AuthnRequest: {type(e).__name__}: {e}"
        self.requests.append((query, req))
        msg = req.message
        sp = msg.issuer.text
        binding_out, acs = server.pick_binding(
            "assertion_consumer_service", bindings=[BINDING_HTTP_POST], entity_id=sp, request=msg
        )
        mode = dict(self.mode)
        signer = mode.pop("signer", None) or server
        mode.pop("strict", None)
        saved_as = mode.pop("save", None)
        rewrite = mode.pop("rewrite", None)
        enc = mode.pop("encrypt_with", None)
        if enc:
            use_aes_for_encryption(signer, enc)
        else:
            default_encryption(signer)
        xml_str = self.response(signer, msg.id, acs, sp, name_id_policy=msg.name_id_policy, **mode)
        default_encryption(signer)
        if rewrite:
            xml_str = rewrite(xml_str)
        if saved_as:
            self.saved[saved_as] = xml_str
        self.note_name_id(xml_str, sp)
        http_args = server.apply_binding(
            BINDING_HTTP_POST, xml_str, destination=acs, relay_state=query.get("RelayState", ""), response=True
        )
        return 200, "text/html", http_args["data"]

    def note_name_id(self, xml_str, sp):
        if "NameID" in xml_str and "EncryptedAssertion" not in xml_str:
            doc = xml.dom.minidom.parseString(xml_str)
            for n in doc.getElementsByTagNameNS("urn:oasis:names:tc:SAML:2.0:assertion", "NameID"):
                self.issued.append((sp, n.firstChild.data if n.firstChild else ""))

    def persistent_id(self, sp_entity_id):
        """The persistent NameID pysaml2's IdentDB gave USER_ID at this SP (None before any)."""
        nid = self.server.ident.match_local_id(USER_ID, sp_entity_id, self.server.config.entityid)
        return nid.text if nid else None

    def serve(self, port):
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):
                sys.stderr.write("idp: " + fmt % args + "\n")

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                try:
                    if u.path == "/idp/metadata" and idp.metadata_xml:
                        status, ctype, body = 200, "application/samlmetadata+xml", idp.metadata_xml
                    elif u.path == "/idp/sso/redirect":
                        q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
                        status, ctype, body = idp.sso(q)
                    else:
                        status, ctype, body = 404, "text/plain", "not found"
                except Exception:
                    status, ctype, body = 500, "text/plain", traceback.format_exc()
                    sys.stderr.write(body)
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd


class Checker:
    def __init__(self, gateway, app_key, idp, work):
        self.gateway = gateway.rstrip("/")
        self.app_key = app_key
        self.idp = idp
        self.work = work
        self.failures = 0
        self.known = set()
        self.browser = requests.Session()

    def check(self, ok, what, detail="", known=None):
        """One line per check. `known` names an entry of KNOWN_GATEWAY_BUGS this check shows
        while the bug is there: then a failure prints KNOWN (and fails only with
        INTEROP_SAML_STRICT=1), and a pass prints XPASS and fails, so the entry is removed
        once the gateway is fixed."""
        if known:
            assert known in KNOWN_GATEWAY_BUGS, known
            if ok:
                print(f"XPASS {what}: known gateway bug {known!r} no longer shows; remove it from KNOWN_GATEWAY_BUGS in interop/saml/check.py", flush=True)
                self.failures += 1
            else:
                print(f"KNOWN {what} [{known}: {KNOWN_GATEWAY_BUGS[known]}]{': ' + str(detail)[:600] if detail else ''}", flush=True)
                self.known.add(known)
                if os.environ.get("INTEROP_SAML_STRICT") == "1":
                    self.failures += 1
            return ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}{'' if ok or not detail else ': ' + str(detail)[:1500]}", flush=True)
        if not ok:
            self.failures += 1
        return ok

    def entity_id(self, conn):
        return f"{self.gateway}/sso/saml/{conn}/metadata"

    def acs(self, conn):
        return f"{self.gateway}/sso/saml/{conn}/acs"

    def get(self, url):
        return self.browser.get(url, allow_redirects=False, timeout=30)

    def start(self, query):
        """/sso/start -> the IdP's SSO URL (the Location)."""
        r = self.get(f"{self.gateway}/sso/start?{query}")
        loc = r.headers.get("location", "")
        if r.status_code != 302 or not loc.startswith(f"{self.idp.base}/idp/sso/redirect?"):
            raise AssertionError(f"/sso/start?{query} answered {r.status_code} {loc or r.text[:400]}")
        return loc

    def at_idp(self, url):
        """The browser at the IdP: the POST form's action and fields."""
        r = self.get(url)
        if r.status_code != 200:
            raise AssertionError(f"the IdP answered {r.status_code}: {r.text[:600]}")
        p = FormParser()
        p.feed(r.text)
        return p.action, p.fields

    def post(self, action, fields):
        """POST to the ACS: ("app", code) or ("page", status, text)."""
        r = self.browser.post(action, data=fields, allow_redirects=False, timeout=30)
        loc = r.headers.get("location", "")
        if r.status_code in (302, 303) and loc.startswith(APP_URL):
            q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))
            return ("app", q.get("code"))
        return ("page", r.status_code, r.text)

    def exchange(self, code):
        r = requests.post(
            f"{self.gateway}/v1/launches/exchange",
            headers={"Authorization": f"Bearer {self.app_key}"},
            json={"code": code},
            timeout=30,
        )
        try:
            body = r.json()
        except ValueError:
            body = {"raw": r.text}
        return r.status_code, body

    def login(self, query, **mode):
        """A whole SP-initiated sign-in with the IdP in `mode`: (outcome, form, start URL)."""
        self.idp.mode = mode
        url = self.start(query)
        action, fields = self.at_idp(url)
        return self.post(action, fields), (action, fields), url

    def signed_in(self, what, outcome, conn=CONN, known=None):
        """The outcome is a code for the app; exchange it and return the launch (or None)."""
        detail = f"{outcome[1]} {page_text(outcome[2])}" if outcome[0] == "page" else ""
        if not self.check(outcome[0] == "app", what, detail, known=known) or known:
            return None
        status, launch = self.exchange(outcome[1])
        if not self.check(status == 200 and launch.get("kind") == "sso", f"{what}: the app exchanges the code", launch):
            return None
        self.check(
            launch.get("connection") == conn and launch.get("protocol") == "saml",
            f"{what}: the launch names connection {conn} and protocol saml",
            launch,
        )
        return launch

    def refused(self, what, outcome, fragment, known=None):
        if outcome[0] == "app":
            self.check(False, what, f"accepted (code {outcome[1]})")
            return
        _, status, text = outcome
        self.check(400 <= status < 500 and fragment in page_text(text), what, f"{status} {page_text(text)}", known=known)

    def run(self):
        idp = self.idp
        eid = self.entity_id(CONN)

        # 0. The SP metadata, as pysaml2 read it.
        md = idp.server.metadata
        self.check(
            md.assertion_consumer_service(eid, BINDING_HTTP_POST)[0]["location"] == self.acs(CONN),
            "pysaml2 reads the SP metadata: the ACS (HTTP-POST)",
        )
        self.check(len(md.certs(eid, "any", "encryption")) >= 1, "pysaml2 reads the SP metadata: an encryption certificate")
        self.check(len(md.certs(eid, "any", "signing")) >= 1, "pysaml2 reads the SP metadata: a signing certificate")

        # 1. SP-initiated, the Response signed (RSA-SHA256), routed by the email's domain.
        try:
            outcome, form, url = self.login("email=grace.hopper%40uni.example", sign_response=True, sign_assertion=False, save="response-signed")
        except AssertionError as e:
            self.check(False, "1 SP-initiated, Response signed", e)
            outcome, form, url = ("page", 0, ""), (None, {}), ""
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        query, req = idp.requests[-1] if idp.requests else ({}, None)
        self.check(req is not None, "1 pysaml2 parses the gateway's AuthnRequest (HTTP-Redirect, deflated)")
        if req is not None:
            m = req.message
            self.check(m.issuer.text == eid, "1 the AuthnRequest's Issuer is the SP entity id", m.issuer.text)
            self.check(
                m.assertion_consumer_service_url in (None, self.acs(CONN)) and m.destination == f"{idp.base}/idp/sso/redirect",
                "1 the AuthnRequest's Destination (and ACS URL, if given) are right",
                f"{m.destination} {m.assertion_consumer_service_url}",
            )
            self.check(
                m.name_id_policy is not None and m.name_id_policy.format == NAMEID_FORMAT_PERSISTENT,
                "1 the AuthnRequest asks for a persistent NameID (name_id_format)",
            )
        self.check("Signature" not in q and len(q.get("RelayState", "")) >= 40, "1 unsigned request with a RelayState", q.keys())
        self.check(form[1].get("RelayState") == q.get("RelayState"), "1 pysaml2 hands the RelayState back")
        xml_str = idp.saved.get("response-signed", "")
        self.check(
            xml_str.count("SignatureValue>") == 2 and SIG_RSA_SHA256 in xml_str and DIGEST_SHA256 in xml_str and "Assertion" in xml_str,
            "1 pysaml2 signed the Response (rsa-sha256, sha256 digest)",
        )
        launch = self.signed_in("1 SP-initiated login, Response signed (rsa-sha256)", outcome)
        persistent = idp.persistent_id(eid)
        if launch:
            user = launch.get("user") or {}
            attrs = (launch.get("claims") or {}).get("attributes") or {}
            self.check(
                user.get("id") == persistent and persistent and idp.issued and idp.issued[-1][1] == persistent,
                "1 user.id is pysaml2's persistent NameID",
                f"{user.get('id')} vs {persistent}",
            )
            self.check(
                (launch.get("claims") or {}).get("name_id_format") == NAMEID_FORMAT_PERSISTENT,
                "1 the NameID format is persistent",
                launch.get("claims"),
            )
            self.check(launch.get("email") == IDENTITY["mail"][0], "1 email from mail (urn:oid:0.9.2342.19200300.100.1.3)", launch.get("email"))
            self.check(user.get("name") == IDENTITY["displayName"][0], "1 name from displayName", user)
            self.check(launch.get("groups") == IDENTITY["isMemberOf"], "1 groups from isMemberOf", launch.get("groups"))
            self.check(launch.get("issuer") == idp.server.config.entityid, "1 the issuer is the IdP's entity id", launch.get("issuer"))
            self.check(
                attrs.get(OID_EPPN) == IDENTITY["eduPersonPrincipalName"]
                and attrs.get("eduPersonPrincipalName") == IDENTITY["eduPersonPrincipalName"]
                and attrs.get(OID_MAIL) == IDENTITY["mail"]
                and attrs.get(OID_IS_MEMBER_OF) == IDENTITY["isMemberOf"],
                "1 claims.attributes has every attribute by Name (urn:oid) and FriendlyName",
                json.dumps(attrs)[:800],
            )
        # The same POST again: its RelayState (and assertion) are spent.
        if form[0]:
            self.refused("1 the same response posted again is refused", self.post(*form), "already used")

        # 2. SP-initiated, only the Assertion signed.
        outcome, _, _ = self.login(f"organisation={CONN}", sign_response=False, sign_assertion=True, save="assertion-signed")
        xml_str = idp.saved.get("assertion-signed", "")
        self.check(xml_str.count("SignatureValue>") == 2, "2 pysaml2 signed the Assertion and not the Response", "")
        launch = self.signed_in("2 SP-initiated login, only the Assertion signed", outcome)
        if launch:
            self.check(launch["user"].get("id") == persistent, "2 the same persistent NameID again", launch["user"])

        # 2b. Both signed.
        outcome, _, _ = self.login(f"organisation={CONN}", sign_response=True, sign_assertion=True)
        self.signed_in("2b SP-initiated login, Response and Assertion signed", outcome)

        # 3. Encrypted assertions (to the SP metadata's encryption certificate), Response
        # signed, on the connection that requires encryption.
        eid_enc = self.entity_id(CONN_ENC)
        outcome, _, _ = self.login(f"organisation={CONN_ENC}", sign_response=False, sign_assertion=True, save="assertion-signed-clear-to-enc")
        self.refused("3 an assertion in clear is refused where encryption is required", outcome, "requires encrypted assertions")
        for label, alg in (("aes128-cbc", AES128_CBC), ("aes128-gcm", AES128_GCM)):
            name = f"encrypted-{label}"
            outcome, _, _ = self.login(
                f"organisation={CONN_ENC}", sign_response=True, sign_assertion=False, encrypt_assertion=True, encrypt_with=alg, save=name
            )
            xml_str = idp.saved.get(name, "")
            self.check(
                "EncryptedAssertion" in xml_str and alg in xml_str and RSA_OAEP_MGF1P in xml_str and "Grace Hopper" not in xml_str,
                f"3 pysaml2 encrypted the assertion ({label}, rsa-oaep-mgf1p)",
                xml_str[:600],
            )
            launch = self.signed_in(f"3 encrypted assertion ({label}), Response signed", outcome, conn=CONN_ENC)
            if launch:
                self.check(
                    launch["user"].get("id") == idp.persistent_id(eid_enc)
                    and launch.get("email") == IDENTITY["mail"][0]
                    and launch["user"].get("name") == IDENTITY["displayName"][0]
                    and launch.get("groups") == IDENTITY["isMemberOf"],
                    f"3 ({label}): the decrypted assertion's user, email, name and groups",
                    launch,
                )
        # Encrypted, with the Assertion signed inside and the Response unsigned (ADFS's
        # default when the relying party has an encryption certificate).
        outcome, _, _ = self.login(
            f"organisation={CONN_ENC}", sign_response=False, sign_assertion=True, encrypt_assertion=True, encrypt_with=AES128_CBC,
            save="encrypted-assertion-signed-inside",
        )
        self.signed_in(
            "3 encrypted assertion (aes128-cbc), only the Assertion inside signed", outcome, conn=CONN_ENC,
        )
        # pysaml2's own default, tripledes-cbc: not one of the SP metadata's EncryptionMethods.
        outcome, _, _ = self.login(
            f"organisation={CONN_ENC}", sign_response=True, sign_assertion=False, encrypt_assertion=True,
            save="encrypted-tripledes",
        )
        xml_str = idp.saved.get("encrypted-tripledes", "")
        self.check(TRIPLE_DES_CBC in xml_str, "3 pysaml2's default encryption is tripledes-cbc (create_authn_response offers no choice)")
        self.refused("3 a tripledes-cbc encrypted assertion is refused", outcome, "refused")
        self.refused("3 the tripledes-cbc refusal names the method", outcome, "tripledes-cbc")

        # 4. IdP-initiated (unsolicited) to the connection that allows it; once only.
        eid_portal = self.entity_id(CONN_PORTAL)
        xml_str = idp.response(idp.server, None, self.acs(CONN_PORTAL), eid_portal, sign_response=True)
        idp.saved["idp-initiated"] = xml_str
        form = (self.acs(CONN_PORTAL), {"SAMLResponse": b64(xml_str), "RelayState": "https://portal.uni.example/apps"})
        launch = self.signed_in("4 IdP-initiated login (no InResponseTo, a portal RelayState)", self.post(*form), conn=CONN_PORTAL)
        if launch:
            self.check(launch["user"].get("id") == idp.persistent_id(eid_portal), "4 user.id is the persistent NameID for that SP", launch["user"])
        self.refused("4 the same unsolicited response again is refused", self.post(*form), "already used")
        xml_str = idp.response(idp.server, None, self.acs(CONN), eid, sign_response=True)
        self.refused(
            "4 an unsolicited response to a connection that does not allow them is refused",
            self.post(self.acs(CONN), {"SAMLResponse": b64(xml_str)}),
            "does not accept sign-ins started at the identity provider",
        )

        # 5. Refusals.
        rogue_key, rogue_cert = key_and_cert(self.work, "rogue")
        rogue = idp_server(idp.base, rogue_key, rogue_cert, idp.sp_metadata_urls)
        outcome, _, _ = self.login(f"organisation={CONN}", signer=rogue, sign_response=True, sign_assertion=True, save="rogue-key")
        self.refused("5 a response signed by a key not in the IdP metadata is refused", outcome, "signature does not verify")
        outcome, _, _ = self.login(f"organisation={CONN}", sign_response=True, audience=eid_portal, save="other-audience")
        self.check(f"<ns1:Audience>{eid_portal}</ns1:Audience>" in idp.saved.get("other-audience", ""), "5 pysaml2 made a response for another SP's audience")
        self.refused("5 a response for another SP (audience) is refused", outcome, "another audience")
        outcome, _, _ = self.login(f"organisation={CONN}", sign_response=False, sign_assertion=False, save="unsigned")
        self.check("SignatureValue" not in idp.saved.get("unsigned", "x SignatureValue"), "5 pysaml2 made an unsigned response")
        self.refused("5 an unsigned response is refused", outcome, "signature does not verify")
        outcome, _, _ = self.login(
            f"organisation={CONN}", sign_response=True, sign_assertion=True, sign_alg=SIG_RSA_SHA1, digest_alg=DIGEST_SHA1, save="sha1"
        )
        self.check(SIG_RSA_SHA1 in idp.saved.get("sha1", "") and SIG_RSA_SHA256 not in idp.saved.get("sha1", ""), "5 pysaml2 signed with rsa-sha1")
        self.refused("5 a response signed with RSA-SHA1 is refused", outcome, "SHA-256 or stronger")

        # 6. Signed AuthnRequests: pysaml2 (want_authn_requests_signed) checks the
        # HTTP-Redirect signature with the certificate in the gateway's SP metadata.
        try:
            outcome, _, url = self.login(f"organisation={CONN_SIGNED}", strict=True, sign_response=True)
        except AssertionError as e:
            self.check(False, "6 pysaml2 verifies the gateway's signed AuthnRequest", e)
            outcome, url = ("page", 0, ""), ""
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        self.check("Signature" in q and "SigAlg" in q, "6 the redirect carries SigAlg and Signature", q.get("SigAlg"))
        self.signed_in("6 login with a signed AuthnRequest verified by pysaml2", outcome, conn=CONN_SIGNED)
        url = self.start(f"organisation={CONN_SIGNED}")
        r = self.get(url.replace("RelayState=", "RelayState=x", 1))
        self.check(
            r.status_code == 400 and "IncorrectlySigned" in r.text, "6 pysaml2 refuses the request once its RelayState was changed", f"{r.status_code} {r.text[:200]}"
        )
        url = self.start(f"organisation={CONN}")
        r = self.get(url)
        self.check(r.status_code == 400 and "IncorrectlySigned" in r.text, "6 pysaml2 (wanting signed requests) refuses an unsigned one", r.status_code)
        idp.mode = {}

        for name, x in idp.saved.items():
            with open(os.path.join(self.work, f"pysaml2-{name}.xml"), "w") as f:
                f.write(x)
        return self.failures


def b64(s):
    return base64.b64encode(s.encode("utf-8")).decode("ascii")


def page_text(html_text):
    """The refusal page's words, tags dropped, for a failure line."""

    class T(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.out = []
            self.skip = False

        def handle_starttag(self, tag, attrs):
            self.skip = tag in ("style", "script")

        def handle_endtag(self, tag):
            self.skip = False

        def handle_data(self, data):
            if not self.skip and data.strip():
                self.out.append(data.strip())

    t = T()
    t.feed(html_text)
    return " | ".join(t.out)[:700]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--idp-port", type=int, required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    app_key = os.environ.get("PGW_APP_KEY", "")
    gateway = args.gateway.rstrip("/")
    base = f"http://127.0.0.1:{args.idp_port}"
    conns = [CONN, CONN_ENC, CONN_PORTAL, CONN_SIGNED]
    idp = Idp(base, args.work, [f"{gateway}/sso/saml/{c}/metadata" for c in conns])
    httpd = idp.serve(args.idp_port)
    try:
        idp.load()
        with open(os.path.join(args.work, "idp-metadata.xml"), "w") as f:
            f.write(idp.metadata_xml)
        checker = Checker(gateway, app_key, idp, args.work)
        failures = checker.run()
        if checker.known:
            print(f"interop-saml: {len(checker.known)} known gateway bug(s) shown: {', '.join(sorted(checker.known))}")
    except Exception:
        traceback.print_exc()
        failures = 1
    finally:
        httpd.shutdown()
    print(f"interop-saml: {'all checks passed' if not failures else f'{failures} check(s) failed'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
