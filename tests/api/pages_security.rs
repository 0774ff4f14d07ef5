//! Every browser-facing route as a table, attacked one parameter at a time (issue 17:
//! HTML injection, open redirects, missing page policies). For each route, each of its
//! query/form/path parameters and each payload, the response must:
//! - carry `X-Content-Type-Options: nosniff`;
//! - if HTML: carry a CSP with `default-src 'none'`/`'self'`, `form-action`, `base-uri`,
//!   `frame-ancestors` (`'none'` with `X-Frame-Options: DENY`, or the partner framing of
//!   LTI and SMART flows) and no `'unsafe-inline'`/`'unsafe-eval'` for scripts; run no
//!   inline script the policy does not allow by hash; keep JSON data blocks escaped; never
//!   contain the payload unescaped; link, post or load nothing outside the gateway, the
//!   partner systems and the app;
//! - if a redirect: go only to the gateway, a partner system or the app;
//! - never be a 500.
//!
//! The table joins automatically: `every_browser_route_in_the_source_is_in_the_table`
//! scans `src/` for `.route("...")` strings outside `/v1` and fails naming any the table
//! lacks.

use std::collections::{BTreeSet, HashMap};

use base64::Engine;
use partner_sim::ehr::{MockClient, MockEhr, MockEhrOptions, Vendor};
use partner_sim::idp::{IdpUser, IdpVendor, MockIdp};
use partner_sim::lms::{
    LaunchSpec, MockLms, MockLmsOptions, MockTool, MockUser, Personality, parse_auto_post_form,
};
use sha2::{Digest, Sha256};

use crate::helpers::{Backend, TestApp, urlencode};

/// What an attacker puts in a parameter.
const PAYLOADS: &[&str] = &[
    "</script><script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
    "'><svg onload=alert(1)>",
    "javascript:alert(1)",
    "'",
    "\u{2028}",
    "</title><script>alert(1)</script>",
    "https://evil.example/",
    "//evil.example/",
    "<!--",
];

/// Who may frame LTI and SMART pages (`http::page`'s partner framing).
const PARTNER_FRAMES: &str = "https: http://localhost:* http://127.0.0.1:*";

const APP: &str = "https://app.pages.example";
const EHR_PARTNER: &str = "pg-ehr";
const LMS_CLIENT: &str = "tool-client-1";
const DEPLOYMENT: &str = "deployment-1";
const LTI11_KEY: &str = "pg-consumer";
const LTI11_SECRET: &str = "pg-shared-secret-0123456789";
const IDP_SECRET: &str = "pg-idp-secret";

/// One browser-facing route: its pattern as registered, the method, the parameters to
/// attack (`{name}` for a path parameter), and whether a partner frames its pages.
struct Route {
    pattern: &'static str,
    method: &'static str,
    params: &'static [&'static str],
    framed: bool,
}

const fn route(
    pattern: &'static str,
    method: &'static str,
    params: &'static [&'static str],
    framed: bool,
) -> Route {
    Route {
        pattern,
        method,
        params,
        framed,
    }
}

const LTI_LOGIN: &[&str] = &[
    "iss",
    "login_hint",
    "target_link_uri",
    "lti_message_hint",
    "client_id",
    "lti_deployment_id",
    "lti_storage_target",
];

/// Every route outside `/v1` the gateway serves.
const ROUTES: &[Route] = &[
    route("/smart/launch", "GET", &["iss", "launch"], true),
    route(
        "/smart/callback",
        "GET",
        &["state", "code", "error", "error_description", "error_uri"],
        true,
    ),
    route("/smart/{partner}/start", "GET", &["{partner}", "iss"], true),
    route("/lti/login", "GET", LTI_LOGIN, true),
    route("/lti/login", "POST", LTI_LOGIN, true),
    route(
        "/lti/launch",
        "POST",
        &[
            "id_token",
            "state",
            "lti_storage_binding",
            "error",
            "error_description",
        ],
        true,
    ),
    route("/lti/deep-link/{id}", "POST", &["{id}", "item"], true),
    route("/lti/config/canvas.json", "GET", &["x"], true),
    route(
        "/lti/11/launch",
        "POST",
        &[
            "oauth_consumer_key",
            "user_id",
            "resource_link_id",
            "lis_person_name_full",
            "launch_presentation_return_url",
            "oauth_signature",
        ],
        true,
    ),
    route(
        "/lti/register",
        "GET",
        &["openid_configuration", "registration_token", "partner"],
        true,
    ),
    route("/sso/start", "GET", &["email", "organisation"], false),
    route(
        "/sso/oidc/callback",
        "GET",
        &["state", "code", "error", "error_description"],
        false,
    ),
    route(
        "/sso/saml/{connection}/metadata",
        "GET",
        &["{connection}"],
        false,
    ),
    route(
        "/sso/saml/{connection}/acs",
        "POST",
        &["{connection}", "SAMLResponse", "RelayState"],
        false,
    ),
    // The console: signed out, every page but sign-in answers with a redirect to it (a
    // `next` only inside the console); tests/api/console.rs covers them signed in.
    route("/console", "GET", &["x"], false),
    route("/console/", "GET", &["x"], false),
    route("/console/assets/console.css", "GET", &["x"], false),
    route("/console/assets/console.js", "GET", &["x"], false),
    route(
        "/console/signin",
        "GET",
        &["next", "expired", "why", "problem"],
        false,
    ),
    route("/console/signin/email", "GET", &["email"], false),
    route(
        "/console/signin/sso/{connection}",
        "GET",
        &["{connection}"],
        false,
    ),
    route("/console/redeem", "GET", &["token"], false),
    route("/console/redeem", "POST", &["token", "pre"], false),
    route("/console/signout", "POST", &["csrf", "everywhere"], false),
    route("/console/finance", "GET", &["period", "done"], false),
    route("/console/finance/run", "POST", &["csrf", "period"], false),
    route("/console/statements/{id}", "GET", &["{id}", "done"], false),
    route(
        "/console/statements/{id}/download",
        "GET",
        &["{id}", "format"],
        false,
    ),
    route("/console/statements/{id}/verify", "GET", &["{id}"], false),
    route(
        "/console/statements/{id}/adjustments",
        "POST",
        &["{id}", "csrf", "amount", "reason"],
        false,
    ),
    route(
        "/console/statements/{id}/adjustments/{adjustment}/delete",
        "POST",
        &["{id}", "{adjustment}", "csrf"],
        false,
    ),
    route(
        "/console/statements/{id}/finalize",
        "POST",
        &["{id}", "csrf", "number", "confirm"],
        false,
    ),
    route(
        "/console/statements/{id}/void",
        "POST",
        &["{id}", "csrf", "reason"],
        false,
    ),
    route("/console/partner", "GET", &["x"], false),
    route("/console/partner/webhooks", "GET", &["x"], false),
    route(
        "/console/partner/webhooks",
        "POST",
        &["csrf", "url", "description", "scheme", "event_type"],
        false,
    ),
    route("/console/partner/webhooks/{id}", "GET", &["{id}"], false),
    route(
        "/console/partner/webhooks/{id}",
        "POST",
        &["{id}", "csrf", "url", "description", "event_type"],
        false,
    ),
    route(
        "/console/partner/webhooks/{id}/enabled",
        "POST",
        &["{id}", "csrf", "enabled"],
        false,
    ),
    route(
        "/console/partner/webhooks/{id}/rotate",
        "POST",
        &["{id}", "csrf"],
        false,
    ),
    route(
        "/console/partner/webhooks/{id}/test",
        "POST",
        &["{id}", "csrf"],
        false,
    ),
    route(
        "/console/partner/webhooks/{id}/replay",
        "POST",
        &["{id}", "csrf", "since"],
        false,
    ),
    route(
        "/console/partner/webhooks/{id}/messages/{message}/replay",
        "POST",
        &["{id}", "{message}", "csrf"],
        false,
    ),
    route(
        "/console/partner/webhooks/{id}/delete",
        "POST",
        &["{id}", "csrf"],
        false,
    ),
    route(
        "/console/usage",
        "GET",
        &[
            "partner", "meter", "window", "from", "to", "period", "compare", "format",
        ],
        false,
    ),
    route("/console/partner/integration", "GET", &["tested"], false),
    route(
        "/console/partner/integration/test/{connection}",
        "POST",
        &["{connection}", "csrf"],
        false,
    ),
    route("/console/admin/partners", "GET", &["x"], false),
    route("/console/admin/keys", "GET", &["x"], false),
    route(
        "/console/admin/keys",
        "POST",
        &["csrf", "role", "partner", "name"],
        false,
    ),
    route(
        "/console/admin/keys/{id}/revoke",
        "POST",
        &["{id}", "csrf"],
        false,
    ),
    route("/console/admin/jobs", "GET", &["x"], false),
    route(
        "/console/admin/jobs/{id}/retry",
        "POST",
        &["{id}", "csrf"],
        false,
    ),
    route("/console/admin/registrations", "GET", &["x"], false),
    route(
        "/console/admin/registrations/{id}/{decision}",
        "POST",
        &["{id}", "{decision}", "csrf"],
        false,
    ),
    route("/console/admin/sso", "GET", &["x"], false),
    route(
        "/console/admin/sso",
        "POST",
        &["csrf", "partner", "definition"],
        false,
    ),
    route(
        "/console/admin/sso/{id}/delete",
        "POST",
        &["{id}", "csrf"],
        false,
    ),
    route("/console/admin/invitations", "GET", &["x"], false),
    route(
        "/console/admin/invitations",
        "POST",
        &["csrf", "partner", "email", "role"],
        false,
    ),
    route(
        "/console/admin/invitations/{id}/revoke",
        "POST",
        &["{id}", "csrf"],
        false,
    ),
    route(
        "/console/admin/audit",
        "GET",
        &["partner", "action", "before"],
        false,
    ),
    route(
        "/console/admin/audit.csv",
        "GET",
        &["partner", "action"],
        false,
    ),
    route("/.well-known/jwks.json", "GET", &["x"], false),
    route(
        "/webhooks/in/{partner}/{source}",
        "POST",
        &["{partner}", "{source}", "type"],
        false,
    ),
    route("/healthz", "GET", &["x"], false),
    route("/readyz", "GET", &["x"], false),
    route("/metrics", "GET", &["x"], false),
    // Swagger UI (its routes come from utoipa-swagger-ui, not a `.route` in src/).
    route("/docs", "GET", &["x"], false),
    route("/docs/", "GET", &["x", "url", "configUrl"], false),
    route("/docs/{*rest}", "GET", &["{*rest}"], false),
    route("/openapi.json", "GET", &["x"], false),
];

struct Env {
    /// The gateway (also for the admin calls a page needs first, such as a registration link).
    app: TestApp,
    gateway: String,
    ehr: MockEhr,
    lms: MockLms,
    idp: MockIdp,
}

async fn start(backend: Backend) -> Option<Env> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = format!("http://{}", listener.local_addr().unwrap());
    let ehr = MockEhr::start(MockEhrOptions::new(
        Vendor::Generic,
        vec![MockClient::public(
            "app-public",
            &format!("{gateway}/smart/callback"),
        )],
    ))
    .await
    .unwrap();
    let mut tool = MockTool::gateway(LMS_CLIENT, DEPLOYMENT, &gateway);
    tool.lti11 = Some((LTI11_KEY.into(), LTI11_SECRET.into()));
    let lms = MockLms::start(MockLmsOptions::new(Personality::Canvas, vec![tool]))
        .await
        .unwrap();
    let audience = if lms.token_audience() != lms.token_url() {
        format!("token_audience = \"{}\"\n", lms.token_audience())
    } else {
        String::new()
    };
    let idp = MockIdp::start(
        IdpVendor::Generic,
        "gateway-client",
        IDP_SECRET,
        &format!("{gateway}/sso/oidc/callback"),
        IdpUser {
            sub: "u-1".into(),
            email: "pat@pages.example".into(),
            name: "Pat".into(),
            groups: vec![],
        },
    )
    .await
    .unwrap();
    let config = format!(
        r#"[jobs]
enabled = false
[outbound]
allow_http = true
private_networks = ["127.0.0.1"]
[http]
public_url = "{gateway}"
[[partners]]
id = "{EHR_PARTNER}"
name = "Pages EHR"
kind = "ehr"
[partners.smart]
vendor = "generic"
issuers = ["{ehr_iss}"]
client_id = "app-public"
client_type = "public"
scopes = ["openid", "fhirUser", "patient/Patient.rs"]
app_url = "{APP}/smart"
[[partners]]
id = "pg-lms"
name = "Pages LMS"
kind = "lms"
[partners.lti]
app_url = "{APP}/lti"
[[partners.lti.platforms]]
vendor = "canvas"
issuer = "{lms_iss}"
client_id = "{LMS_CLIENT}"
deployment_ids = ["{DEPLOYMENT}"]
auth_url = "{auth}"
token_url = "{token}"
jwks_url = "{jwks}"
{audience}
[[partners.lti.content_items]]
title = "Unit 1 quiz"
score_maximum = 10.0
[[partners.lti.lti11]]
consumer_key = "{LTI11_KEY}"
shared_secret = "{LTI11_SECRET}"
[[partners]]
id = "pg-org"
name = "Pages Org"
kind = "idp"
[[partners.sso_connections]]
id = "pg-oidc"
protocol = "oidc"
issuer = "{idp_iss}"
client_id = "gateway-client"
client_secret = "{IDP_SECRET}"
domains = ["pages.example"]
app_url = "{APP}/sso"
[[partners.sso_connections]]
id = "pg-saml"
protocol = "saml"
idp_metadata_url = "http://127.0.0.1:9/metadata"
allow_idp_initiated = true
domains = ["saml.pages.example"]
app_url = "{APP}/sso"
"#,
        ehr_iss = ehr.iss(),
        lms_iss = lms.issuer(),
        auth = lms.auth_url(),
        token = lms.token_url(),
        jwks = lms.jwks_url(),
        idp_iss = idp.issuer(),
    );
    let app = TestApp::spawn_on_listener(backend, listener, &config).await?;
    Some(Env {
        app,
        gateway,
        ehr,
        lms,
        idp,
    })
}

/// A browser without cookies that does not follow redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A browser that keeps cookies (the one that starts a sign-in).
fn browser_with_cookies() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

fn query_of(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// A valid request to a route: the browser to send it with, its path values and its
/// parameters. Made afresh for each attack where the route spends what it is given.
struct Base {
    browser: reqwest::Client,
    path: Vec<(&'static str, String)>,
    params: Vec<(String, String)>,
}

impl Base {
    fn plain(params: &[(&str, &str)]) -> Base {
        Base {
            browser: browser(),
            path: Vec::new(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl Env {
    fn learner(&self, sub: &str) -> LaunchSpec {
        LaunchSpec::resource_link(
            LMS_CLIENT,
            DEPLOYMENT,
            MockUser::learner(sub),
            "course-1",
            "link-1",
        )
    }

    /// The platform's form post to `/lti/launch` after a login the browser started
    /// (cookies in `browser`, if it keeps them).
    async fn lti_launch_form(
        &self,
        browser: &reqwest::Client,
        spec: LaunchSpec,
    ) -> Vec<(String, String)> {
        let init = self.lms.login_initiation(spec);
        let r = browser
            .post(&init.url)
            .form(&init.params)
            .send()
            .await
            .unwrap();
        let auth = match r.status().as_u16() {
            302 => location(&r),
            200 => {
                let page = r.text().await.unwrap();
                let at = page.find("id=\"continue\" href=\"").unwrap() + 20;
                page[at..at + page[at..].find('"').unwrap()].replace("&amp;", "&")
            }
            s => panic!("login answered {s}"),
        };
        let page = browser
            .get(&auth)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        parse_auto_post_form(&page)
            .unwrap_or_else(|| panic!("no form from the platform: {page}"))
            .fields
    }

    async fn base(&self, r: &Route) -> Base {
        let g = &self.gateway;
        match (r.pattern, r.method) {
            ("/smart/launch", _) => {
                let launch = self
                    .ehr
                    .launch(crate::smart_env::default_context(&self.ehr));
                Base::plain(&[("iss", &self.ehr.iss()), ("launch", &launch)])
            }
            ("/smart/callback", _) => {
                // A launch this browser started, stopped at the callback.
                let b = browser_with_cookies();
                let launch = self
                    .ehr
                    .launch(crate::smart_env::default_context(&self.ehr));
                let start = format!(
                    "{g}/smart/launch?iss={}&launch={}",
                    urlencode(&self.ehr.iss()),
                    urlencode(&launch)
                );
                let authorize = location(&b.get(&start).send().await.unwrap());
                let callback = location(&b.get(&authorize).send().await.unwrap());
                let q = query_of(&callback);
                Base {
                    browser: b,
                    path: Vec::new(),
                    params: vec![
                        ("state".into(), q["state"].clone()),
                        ("code".into(), q["code"].clone()),
                    ],
                }
            }
            ("/smart/{partner}/start", _) => Base {
                browser: browser(),
                path: vec![("{partner}", EHR_PARTNER.into())],
                params: vec![("iss".into(), self.ehr.iss())],
            },
            ("/lti/login", _) => {
                let init = self.lms.login_initiation(self.learner("pg-login"));
                Base {
                    browser: browser(),
                    path: Vec::new(),
                    params: init.params,
                }
            }
            ("/lti/launch", _) => {
                // The cookie stays behind: the page that recovers the binding answers.
                let fields = self
                    .lti_launch_form(&browser(), self.learner("pg-launch"))
                    .await;
                Base {
                    browser: browser(),
                    path: Vec::new(),
                    params: fields,
                }
            }
            ("/lti/deep-link/{id}", _) => {
                let b = browser_with_cookies();
                let spec = LaunchSpec::deep_linking(
                    LMS_CLIENT,
                    DEPLOYMENT,
                    MockUser::instructor("pg-teacher"),
                    "course-1",
                    Some("data"),
                );
                let fields = self.lti_launch_form(&b, spec).await;
                let page = b
                    .post(format!("{g}/lti/launch"))
                    .form(&fields)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let at = page
                    .find("action=\"/lti/deep-link/")
                    .unwrap_or_else(|| panic!("no picker: {page}"))
                    + "action=\"/lti/deep-link/".len();
                let id = page[at..at + page[at..].find('"').unwrap()].to_owned();
                Base {
                    browser: b,
                    path: vec![("{id}", id)],
                    params: vec![("item".into(), "0".into())],
                }
            }
            ("/lti/11/launch", _) => {
                let params = self.lms.lti11_launch(
                    &format!("{g}/lti/11/launch"),
                    LTI11_KEY,
                    MockUser::learner("pg-11"),
                    "c-1",
                    "r-1",
                );
                Base {
                    browser: browser(),
                    path: Vec::new(),
                    params,
                }
            }
            ("/lti/register", _) => {
                // A fresh link of an admin's each time: a registration spends its link.
                let admin = self.app.admin().await;
                let r = self
                    .app
                    .client
                    .post(self.app.url("/v1/lti/registration-links"))
                    .bearer_auth(&admin)
                    .json(&serde_json::json!({"partner": "pg-lms"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                let link: serde_json::Value = r.json().await.unwrap();
                let url = self
                    .lms
                    .dynamic_registration_url(link["url"].as_str().unwrap());
                Base {
                    browser: browser(),
                    path: Vec::new(),
                    params: query_of(&url).into_iter().collect(),
                }
            }
            ("/sso/start", _) => Base::plain(&[("organisation", "pg-oidc")]),
            ("/sso/oidc/callback", _) => {
                let b = browser_with_cookies();
                let authorize = location(
                    &b.get(format!("{g}/sso/start?organisation=pg-oidc"))
                        .send()
                        .await
                        .unwrap(),
                );
                let callback = location(&b.get(&authorize).send().await.unwrap());
                let q = query_of(&callback);
                Base {
                    browser: b,
                    path: Vec::new(),
                    params: vec![
                        ("state".into(), q["state"].clone()),
                        ("code".into(), q["code"].clone()),
                    ],
                }
            }
            ("/sso/saml/{connection}/metadata", _) => Base {
                browser: browser(),
                path: vec![("{connection}", "pg-saml".into())],
                params: Vec::new(),
            },
            ("/sso/saml/{connection}/acs", _) => Base {
                browser: browser(),
                path: vec![("{connection}", "pg-saml".into())],
                params: vec![
                    (
                        "SAMLResponse".into(),
                        base64::engine::general_purpose::STANDARD.encode("<samlp:Response/>"),
                    ),
                    ("RelayState".into(), "https://portal.pages.example/".into()),
                ],
            },
            ("/webhooks/in/{partner}/{source}", _) => Base {
                browser: browser(),
                path: vec![
                    ("{partner}", "pg-lms".into()),
                    ("{source}", "stripe".into()),
                ],
                params: vec![("type".into(), "invoice.paid".into())],
            },
            ("/docs/{*rest}", _) => Base {
                browser: browser(),
                path: vec![("{*rest}", "swagger-ui.css".into())],
                params: Vec::new(),
            },
            _ => Base::plain(&[]),
        }
    }

    /// The origins a browser may be sent to or load from: the gateway, the partner
    /// systems of this test and the app.
    fn allowed_hosts(&self) -> BTreeSet<String> {
        [
            self.gateway.as_str(),
            &self.ehr.base_url(),
            &self.lms.base_url(),
            &self.idp.issuer(),
            APP,
        ]
        .iter()
        .filter_map(|u| url::Url::parse(u).ok())
        .map(|u| u.origin().ascii_serialization())
        .collect()
    }

    /// Send `r` with `param` set to `payload` (everything else as in its valid base).
    async fn attack(&self, r: &Route, param: &str, payload: &str) -> reqwest::Response {
        let mut base = self.base(r).await;
        let mut path = r.pattern.to_owned();
        if param.starts_with('{') {
            base.path.retain(|(k, _)| *k != param);
            path = path.replace(param, &urlencode(payload));
        } else {
            base.params.retain(|(k, _)| k != param);
            base.params.push((param.to_owned(), payload.to_owned()));
            // An error's description shows only with the error itself.
            if param.starts_with("error_") && !base.params.iter().any(|(k, _)| k == "error") {
                base.params.push(("error".into(), "access_denied".into()));
            }
        }
        for (k, v) in &base.path {
            path = path.replace(k, v);
        }
        if r.pattern == "/lti/11/launch" && param != "oauth_signature" {
            // Signed again, so the attack reaches past the signature check.
            let url = format!("{}/lti/11/launch", self.gateway);
            base.params.retain(|(k, _)| k != "oauth_signature");
            let sig = partner_gateway::lti::lti11::sign(
                &partner_gateway::lti::lti11::base_string("POST", &url, &base.params),
                LTI11_SECRET,
            );
            base.params.push(("oauth_signature".into(), sig));
        }
        let url = format!("{}{path}", self.gateway);
        let req = if r.method == "GET" {
            let mut u = url::Url::parse(&url).unwrap();
            if !base.params.is_empty() {
                u.query_pairs_mut().extend_pairs(&base.params);
            }
            base.browser.get(u)
        } else {
            base.browser.post(url).form(&base.params)
        };
        req.send().await.unwrap()
    }
}

/// The Content-Security-Policy as directive -> sources.
fn directives(csp: &str) -> HashMap<String, Vec<String>> {
    csp.split(';')
        .filter_map(|d| {
            let mut parts = d.split_whitespace();
            let name = parts.next()?.to_ascii_lowercase();
            Some((name, parts.map(str::to_owned).collect()))
        })
        .collect()
}

/// `<script ...>body</script>` elements: (the opening tag, the body).
fn scripts(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find("<script") {
        let tag_end = at + rest[at..].find('>').unwrap_or(rest.len() - at);
        let tag = rest[at..=tag_end.min(rest.len() - 1)].to_owned();
        let body_start = (tag_end + 1).min(rest.len());
        let close = rest[body_start..]
            .find("</script>")
            .map(|i| body_start + i)
            .unwrap_or(rest.len());
        out.push((tag, rest[body_start..close].to_owned()));
        rest = &rest[(close + "</script>".len()).min(rest.len())..];
    }
    out
}

/// The values of `attr="..."` attributes, unescaped.
fn attribute_values(html: &str, attr: &str) -> Vec<String> {
    let marker = format!(" {attr}=\"");
    html.match_indices(&marker)
        .filter_map(|(at, _)| {
            let start = at + marker.len();
            let end = start + html[start..].find('"')?;
            Some(
                html[start..end]
                    .replace("&quot;", "\"")
                    .replace("&#39;", "'")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&"),
            )
        })
        .collect()
}

/// What is wrong with one response (empty when nothing is). `reference` is the page the
/// same request gets with a harmless value, so a payload that is part of the page anyway
/// (Swagger UI's `<!--` comment) is not taken for a reflection.
fn problems(
    env: &Env,
    r: &Route,
    payload: &str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &str,
    reference: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    if status >= 500 && status != 502 && status != 503 {
        out.push(format!("answered {status}: {body}"));
    }
    if header("x-content-type-options") != "nosniff" {
        out.push("no X-Content-Type-Options: nosniff".into());
    }
    let allowed = env.allowed_hosts();
    let allowed_url = |value: &str| -> bool {
        let v = value.trim().to_ascii_lowercase();
        if v.starts_with("javascript:") || v.starts_with("data:") || v.starts_with("vbscript:") {
            return false;
        }
        match url::Url::parse(&env.gateway).unwrap().join(value.trim()) {
            Ok(u) => {
                matches!(u.scheme(), "http" | "https")
                    && allowed.contains(&u.origin().ascii_serialization())
            }
            Err(_) => false,
        }
    };
    if (300..400).contains(&status) {
        let loc = header("location");
        if !allowed_url(loc) {
            out.push(format!("redirects to {loc:?}"));
        }
    }
    let html = header("content-type")
        .to_ascii_lowercase()
        .starts_with("text/html");
    if !html {
        return out;
    }
    let csp = header("content-security-policy");
    let d = directives(csp);
    let one = |name: &str| d.get(name).map(|v| v.join(" ")).unwrap_or_default();
    if !matches!(one("default-src").as_str(), "'none'" | "'self'") {
        out.push(format!("CSP default-src is not 'none' or 'self': {csp:?}"));
    }
    for required in ["form-action", "base-uri", "frame-ancestors"] {
        if !d.contains_key(required) {
            out.push(format!("CSP has no {required}: {csp:?}"));
        }
    }
    let frames = one("frame-ancestors");
    if r.framed {
        if frames != PARTNER_FRAMES {
            out.push(format!("an LTI/SMART page framed by {frames:?}"));
        }
    } else if frames != "'none'" {
        out.push(format!("a page that must not be framed allows {frames:?}"));
    }
    if frames == "'none'" && header("x-frame-options") != "DENY" {
        out.push("frame-ancestors 'none' without X-Frame-Options: DENY".into());
    }
    if !matches!(one("base-uri").as_str(), "'none'" | "'self'") {
        out.push(format!("CSP base-uri {:?}", one("base-uri")));
    }
    let script_src = d
        .get("script-src")
        .or_else(|| d.get("default-src"))
        .cloned()
        .unwrap_or_default();
    for bad in [
        "'unsafe-inline'",
        "'unsafe-eval'",
        "*",
        "data:",
        "http:",
        "https:",
    ] {
        if script_src.iter().any(|s| s == bad) {
            out.push(format!("script-src allows {bad}: {csp:?}"));
        }
    }
    for (tag, content) in scripts(body) {
        if tag.contains("type=\"application/json\"") {
            for raw in ['<', '>', '\u{2028}', '\u{2029}'] {
                if content.contains(raw) {
                    out.push(format!("a JSON data block holds a raw {raw:?}: {content}"));
                }
            }
            if serde_json::from_str::<serde_json::Value>(&content).is_err() {
                out.push(format!("a JSON data block does not parse: {content}"));
            }
        } else if tag.contains(" src=\"") {
            if !script_src.iter().any(|s| s == "'self'") {
                out.push(format!("{tag} without script-src 'self'"));
            }
        } else {
            let hash = format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD
                    .encode(Sha256::digest(content.as_bytes()))
            );
            if !script_src.contains(&hash) {
                out.push(format!(
                    "an inline script the policy does not allow: {content}"
                ));
            }
        }
    }
    if payload.contains(['<', '>', '"'])
        && body.matches(payload).count() > reference.matches(payload).count()
    {
        out.push("the payload is in the page unescaped".into());
    }
    if body.contains("<meta http-equiv") {
        out.push("a <meta http-equiv> in the page".into());
    }
    for attr in ["href", "src", "action", "formaction"] {
        for v in attribute_values(body, attr) {
            if !allowed_url(&v) {
                out.push(format!("{attr}={v:?} leads outside"));
            }
        }
    }
    out
}

crate::both_backends! {
    async fn every_browser_route_keeps_every_payload_inert(backend) {
        let Some(env) = start(backend).await else { return };
        let mut failures = Vec::new();
        let mut checked = 0;
        for r in ROUTES {
            for param in r.params {
                let reference = env.attack(r, param, "harmless").await.text().await.unwrap();
                for payload in PAYLOADS {
                    let resp = env.attack(r, param, payload).await;
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    let body = resp.text().await.unwrap();
                    checked += 1;
                    for p in problems(&env, r, payload, status, &headers, &body, &reference) {
                        failures.push(format!("{} {} {param}={payload:?} ({status}): {p}", r.method, r.pattern));
                    }
                }
            }
        }
        assert!(checked > 400, "{checked}");
        assert!(failures.is_empty(), "{} problem(s):\n{}", failures.len(), failures.join("\n"));
    }

    async fn the_valid_requests_of_the_table_reach_their_pages(backend) {
        // The bases are real: without an attack, each route answers as it should, so the
        // payloads above go where a real request would.
        let Some(env) = start(backend).await else { return };
        let expect: &[(&str, &str, u16)] = &[
            ("/smart/launch", "GET", 302),
            ("/smart/callback", "GET", 302),
            ("/smart/{partner}/start", "GET", 302),
            ("/lti/login", "GET", 200),
            ("/lti/launch", "POST", 200),
            ("/lti/deep-link/{id}", "POST", 200),
            ("/lti/11/launch", "POST", 302),
            ("/sso/start", "GET", 302),
            ("/sso/oidc/callback", "GET", 302),
            ("/sso/saml/{connection}/metadata", "GET", 200),
            ("/docs/", "GET", 200),
        ];
        for (pattern, method, status) in expect {
            let r = ROUTES.iter().find(|r| r.pattern == *pattern && r.method == *method).unwrap();
            let base = env.base(r).await;
            let mut path = r.pattern.to_owned();
            for (k, v) in &base.path {
                path = path.replace(k, v);
            }
            let url = format!("{}{path}", env.gateway);
            let resp = if r.method == "GET" {
                let mut u = url::Url::parse(&url).unwrap();
                if !base.params.is_empty() {
                    u.query_pairs_mut().extend_pairs(&base.params);
                }
                base.browser.get(u).send().await.unwrap()
            } else {
                base.browser.post(url).form(&base.params).send().await.unwrap()
            };
            let got = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.text().await.unwrap();
            assert_eq!(got, *status, "{method} {pattern}: {body}");
            let p = problems(&env, r, "", got, &headers, &body, "");
            assert!(p.is_empty(), "{method} {pattern}: {p:?}");
        }
        // The Deep Linking answer page posts to the platform's return URL only.
        let r = ROUTES.iter().find(|r| r.pattern == "/lti/deep-link/{id}").unwrap();
        let resp = env.attack(r, "item", "0").await;
        let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_owned();
        let form = parse_auto_post_form(&resp.text().await.unwrap()).unwrap();
        let u = url::Url::parse(&form.action).unwrap();
        let target = format!("{}{}", u.origin().ascii_serialization(), u.path());
        assert!(csp.contains(&format!("form-action {target};")), "{csp}");
    }
}

/// Every `.route("...")` string in `src/` outside `/v1` and the sandbox command's site (`src/sandbox/`,
/// which serve on listeners of their own).
fn routes_in_source() -> BTreeSet<(String, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("sandbox") {
                    walk(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut found = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices(".route(") {
            let rest = text[at + ".route(".len()..].trim_start();
            let Some(rest) = rest.strip_prefix('"') else {
                continue;
            };
            let path = rest.split('"').next().unwrap_or("").to_owned();
            if path.starts_with("/v1") || !path.starts_with('/') {
                continue;
            }
            found.insert((path, file.display().to_string()));
        }
    }
    found
}

#[test]
fn every_browser_route_in_the_source_is_in_the_table() {
    let found = routes_in_source();
    assert!(found.len() >= 15, "the scan found too little: {found:?}");
    let missing: Vec<String> = found
        .iter()
        .filter(|(path, _)| !ROUTES.iter().any(|r| r.pattern == path))
        .map(|(path, file)| format!("{path} (in {file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "routes missing from tests/api/pages_security.rs ROUTES (add each with its parameters): {missing:#?}"
    );
}
