//! `LtiEnv`: the gateway and a mock LMS (`partner_sim::lms`) wired to each
//! other on loopback, and a "browser" that follows redirects and auto-post forms by hand
//! and carries cookies itself.

use std::time::Duration;

use partner_gateway::apikeys::Role;
use partner_sim::lms::{
    LaunchSpec, MockLms, MockLmsOptions, MockTool, MockUser, Personality, parse_auto_post_form,
};
use serde_json::Value;

use crate::helpers::{Backend, TestApp};

pub const PARTNER: &str = "test-lms";
pub const APP_URL: &str = "https://app.example.test/lti";
pub const CLIENT: &str = "tool-client-1";
pub const DEPLOYMENT: &str = "deployment-1";
pub const LTI11_KEY: &str = "legacy-consumer";
pub const LTI11_SECRET: &str = "legacy-shared-secret-0123456789";

pub struct LtiEnv {
    pub app: TestApp,
    pub lms: MockLms,
    pub browser: reqwest::Client,
    pub app_key: String,
    pub gateway: String,
}

/// Where the browser ended.
#[derive(Debug)]
pub enum Outcome {
    App(String),
    Page(u16, String),
}

impl Outcome {
    pub fn code(self) -> String {
        match self {
            Outcome::App(c) => c,
            Outcome::Page(s, b) => panic!("expected the app redirect, got a {s} page: {b}"),
        }
    }

    pub fn page(self) -> (u16, String) {
        match self {
            Outcome::Page(s, b) => (s, b),
            Outcome::App(c) => panic!("expected a page, got the app redirect with code {c}"),
        }
    }
}

pub async fn start(backend: Backend, personality: Personality) -> Option<LtiEnv> {
    start_with(backend, personality, "").await
}

pub async fn start_with(backend: Backend, personality: Personality, extra: &str) -> Option<LtiEnv> {
    start_full(backend, personality, extra, true, &EnvOpts::default()).await
}

/// Settings a test changes from the defaults.
#[derive(Default)]
pub struct EnvOpts {
    /// Lines added to `[outbound]` (e.g. `timeout_secs = 1`).
    pub outbound: &'static str,
    /// Replaces the quick job backoff (`backoff_base_ms = ...`).
    pub backoff: Option<&'static str>,
    /// The LMS offers no AGS result service.
    pub no_results_service: bool,
    /// The 1.3 tool replaces the 1.1 consumer: the LMS sends the signed migration claim,
    /// signing with this secret (the gateway's is [`LTI11_SECRET`]: another value forges).
    pub migration_secret: Option<&'static str>,
    /// Lines added to the `[[partners.lti.platforms]]` table (e.g. `lti11_consumer_key`).
    pub platform: &'static str,
}

pub async fn start_opts(
    backend: Backend,
    personality: Personality,
    opts: EnvOpts,
) -> Option<LtiEnv> {
    start_full(backend, personality, "", true, &opts).await
}

/// Both: extra config and changed settings.
pub async fn start_opts_with(
    backend: Backend,
    personality: Personality,
    extra: &str,
    opts: EnvOpts,
) -> Option<LtiEnv> {
    start_full(backend, personality, extra, true, &opts).await
}

/// A partner without configured content items: the app answers Deep Linking requests.
pub async fn start_app_picks(backend: Backend, personality: Personality) -> Option<LtiEnv> {
    start_full(backend, personality, "", false, &EnvOpts::default()).await
}

async fn start_full(
    backend: Backend,
    personality: Personality,
    extra: &str,
    items: bool,
    opts: &EnvOpts,
) -> Option<LtiEnv> {
    let items = if items {
        r#"[[partners.lti.content_items]]
title = "Unit 1 quiz"
text = "Ten questions"
score_maximum = 10.0
[[partners.lti.content_items]]
title = "Reading"
type = "link"
url = "https://app.example.test/reading"
"#
    } else {
        ""
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = format!("http://{}", listener.local_addr().unwrap());
    let mut tool = MockTool::gateway(CLIENT, DEPLOYMENT, &gateway);
    tool.lti11 = Some((
        LTI11_KEY.into(),
        opts.migration_secret.unwrap_or(LTI11_SECRET).into(),
    ));
    tool.migrated_from_lti11 = opts.migration_secret.is_some();
    let mut lms_opts = MockLmsOptions::new(personality, vec![tool]);
    lms_opts.results_service = !opts.no_results_service;
    let lms = MockLms::start(lms_opts).await.unwrap();
    let audience = if lms.token_audience() != lms.token_url() {
        format!("token_audience = \"{}\"\n", lms.token_audience())
    } else {
        String::new()
    };
    let vendor = match personality {
        Personality::Moodle => "moodle",
        Personality::Canvas => "canvas",
        Personality::Blackboard => "blackboard",
        Personality::D2l => "d2l",
        _ => "generic",
    };
    let toml = format!(
        r#"[jobs]
enabled = true
poll_interval_ms = 20
{backoff}
backoff_max_secs = 2
[outbound]
allow_http = true
{outbound}
[http]
public_url = "{gateway}"
[[partners]]
id = "{PARTNER}"
name = "Test LMS"
kind = "lms"
# The mock LMS runs on loopback.
private_networks = ["127.0.0.1"]
[partners.lti]
app_url = "{APP_URL}"
[[partners.lti.platforms]]
vendor = "{vendor}"
issuer = "{issuer}"
client_id = "{CLIENT}"
deployment_ids = ["{DEPLOYMENT}"]
auth_url = "{auth}"
token_url = "{token}"
jwks_url = "{jwks}"
{platform}
{audience}
{items}
[[partners.lti.lti11]]
consumer_key = "{LTI11_KEY}"
shared_secret = "{LTI11_SECRET}"
{extra}
"#,
        backoff = opts.backoff.unwrap_or("backoff_base_ms = 50"),
        outbound = opts.outbound,
        platform = opts.platform,
        issuer = lms.issuer(),
        auth = lms.auth_url(),
        token = lms.token_url(),
        jwks = lms.jwks_url(),
    );
    let app = TestApp::spawn_on_listener(backend, listener, &toml).await?;
    let app_key = app.key(Role::App, None).await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Some(LtiEnv {
        app,
        lms,
        browser,
        app_key,
        gateway,
    })
}

/// `name=value` pairs from Set-Cookie headers.
fn cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next().map(str::to_owned))
        .collect()
}

/// The `href` of the page's `<a id="continue">`.
fn continue_link(html: &str) -> Option<String> {
    let at = html.find("id=\"continue\" href=\"")? + "id=\"continue\" href=\"".len();
    let end = at + html[at..].find('"')?;
    Some(html[at..end].replace("&amp;", "&"))
}

impl LtiEnv {
    /// The login initiation, as the LMS makes the browser send it: the URL of the
    /// platform's auth endpoint the tool sends the browser to, and the cookies it set.
    pub async fn login(&self, spec: LaunchSpec) -> (String, Vec<String>) {
        let init = self.lms.login_initiation(spec);
        let resp = if init.post {
            self.browser
                .post(&init.url)
                .form(&init.params)
                .send()
                .await
                .unwrap()
        } else {
            self.browser.get(init.get_url()).send().await.unwrap()
        };
        let jar = cookies(&resp);
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.text().await.unwrap();
        let next = match status {
            302 => location.unwrap(),
            200 => continue_link(&body)
                .unwrap_or_else(|| panic!("no way on from the login page: {body}")),
            _ => panic!("login answered {status}: {body}"),
        };
        (next, jar)
    }

    /// The platform's auth endpoint answers with the form to post to the tool.
    pub async fn authenticate(&self, auth_url: &str) -> Vec<(String, String)> {
        let resp = self.browser.get(auth_url).send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!(status, 200, "auth endpoint: {body}");
        let form = parse_auto_post_form(&body).unwrap_or_else(|| panic!("no form: {body}"));
        assert_eq!(form.action, format!("{}/lti/launch", self.gateway));
        form.fields
    }

    /// POST the launch form with `cookies`.
    pub async fn post_launch(
        &self,
        fields: &[(String, String)],
        cookies: &[String],
    ) -> (u16, Option<String>, String) {
        let mut req = self
            .browser
            .post(format!("{}/lti/launch", self.gateway))
            .form(fields);
        if !cookies.is_empty() {
            req = req.header("cookie", cookies.join("; "));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, location, resp.text().await.unwrap())
    }

    pub fn outcome(status: u16, location: Option<String>, body: String) -> Outcome {
        if status == 302 {
            let loc = location.unwrap();
            assert!(loc.starts_with(APP_URL), "{loc}");
            let url = url::Url::parse(&loc).unwrap();
            Outcome::App(
                url.query_pairs()
                    .find(|(k, _)| k == "code")
                    .map(|(_, v)| v.into_owned())
                    .unwrap(),
            )
        } else {
            Outcome::Page(status, body)
        }
    }

    /// A whole launch.
    pub async fn launch(&self, spec: LaunchSpec) -> Outcome {
        let (auth, jar) = self.login(spec).await;
        let fields = self.authenticate(&auth).await;
        let (s, l, b) = self.post_launch(&fields, &jar).await;
        Self::outcome(s, l, b)
    }

    pub fn learner_launch(&self, sub: &str) -> LaunchSpec {
        LaunchSpec::resource_link(
            CLIENT,
            DEPLOYMENT,
            MockUser::learner(sub),
            "course-1",
            "link-1",
        )
    }

    pub async fn exchange(&self, code: &str) -> (u16, Value) {
        let r = self
            .app
            .client
            .post(self.app.url("/v1/launches/exchange"))
            .bearer_auth(&self.app_key)
            .json(&serde_json::json!({ "code": code }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// Launch as a learner and exchange: the launch context.
    pub async fn launched(&self, sub: &str) -> Value {
        let code = self.launch(self.learner_launch(sub)).await.code();
        let (status, ctx) = self.exchange(&code).await;
        assert_eq!(status, 200, "{ctx}");
        ctx
    }

    pub async fn post_score(&self, launch_id: &str, score: Value) -> (u16, Value) {
        let r = self
            .app
            .client
            .post(self.app.url(&format!("/v1/launches/{launch_id}/scores")))
            .bearer_auth(&self.app_key)
            .json(&score)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// Poll the score until it is no longer pending (at most ~20 s).
    pub async fn settled(&self, score_id: &str) -> Value {
        for _ in 0..400 {
            let r = self
                .app
                .get(&self.app_key, &format!("/v1/scores/{score_id}"))
                .await;
            let v: Value = r.json().await.unwrap();
            if v["status"] != "pending" {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("score {score_id} still pending");
    }

    pub async fn usage_count(&self, event_type: &str) -> i64 {
        partner_gateway::with_db!(self.app.db(), pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM usage_events WHERE partner_id = $1 AND type = $2")
                .bind(PARTNER).bind(event_type).fetch_one(pool).await
        })
        .unwrap()
    }
}
