//! `SmartEnv`: the gateway and a mock EHR (`partner_sim::ehr`) wired to each
//! other on loopback, and a "browser" (an HTTP client that follows redirects by hand).

use partner_gateway::apikeys::Role;
use partner_sim::ehr::{LaunchContext, MockClient, MockEhr, MockEhrOptions, Vendor};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, TestApp, urlencode};

pub const PARTNER: &str = "test-ehr";
pub const APP_URL: &str = "https://app.example.test/launch";

pub struct SmartEnv {
    pub app: TestApp,
    pub ehr: MockEhr,
    pub browser: reqwest::Client,
    pub app_key: String,
    pub gateway: String,
    /// The extra config the gateway was started with (for a second instance).
    pub config: String,
}

/// What the browser ends on after the callback.
#[derive(Debug)]
pub enum Outcome {
    /// Redirected to the app with this one-time code.
    App(String),
    /// A page from the gateway.
    Page(u16, String),
}

impl Outcome {
    pub fn code(self) -> String {
        match self {
            Outcome::App(c) => c,
            Outcome::Page(s, body) => panic!("expected the app redirect, got a {s} page: {body}"),
        }
    }

    pub fn page(self) -> (u16, String) {
        match self {
            Outcome::Page(s, b) => (s, b),
            Outcome::App(c) => panic!("expected a page, got the app redirect with code {c}"),
        }
    }
}

pub struct Setup {
    pub vendor: Vendor,
    pub client_type: &'static str,
    pub scopes: Vec<&'static str>,
    pub tweak: Box<dyn FnOnce(&mut MockEhrOptions) + Send>,
    pub extra: String,
    pub outbound: String,
    /// The test partner's `private_networks` (the mock EHR is on loopback).
    pub private_networks: Vec<&'static str>,
    pub more_issuers: Vec<String>,
}

impl Setup {
    pub fn new(vendor: Vendor, client_type: &'static str) -> Setup {
        Setup {
            vendor,
            client_type,
            scopes: vec![
                "openid",
                "fhirUser",
                "offline_access",
                "patient/Patient.rs",
                "patient/Observation.cruds",
            ],
            tweak: Box::new(|_| {}),
            extra: String::new(),
            outbound: "allow_http = true\n".into(),
            private_networks: vec!["127.0.0.1"],
            more_issuers: Vec::new(),
        }
    }

    /// The `[outbound]` section's body.
    pub fn outbound(mut self, toml: &str) -> Setup {
        self.outbound = toml.to_owned();
        self
    }

    /// The test partner's `private_networks`.
    pub fn private_networks(mut self, networks: &[&'static str]) -> Setup {
        self.private_networks = networks.to_vec();
        self
    }

    /// Register further issuers beside the mock's.
    pub fn more_issuers(mut self, issuers: &[&str]) -> Setup {
        self.more_issuers = issuers.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn scopes(mut self, scopes: &[&'static str]) -> Setup {
        self.scopes = scopes.to_vec();
        self
    }

    pub fn tweak(mut self, f: impl FnOnce(&mut MockEhrOptions) + Send + 'static) -> Setup {
        self.tweak = Box::new(f);
        self
    }

    pub fn extra(mut self, toml: &str) -> Setup {
        self.extra = toml.to_owned();
        self
    }

    pub async fn start(self, backend: Backend) -> Option<SmartEnv> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = format!("http://{}", listener.local_addr().unwrap());
        let redirect = format!("{gateway}/smart/callback");
        let jwks = format!("{gateway}/.well-known/jwks.json");
        let (client, client_id, secret_line) = match self.client_type {
            "public" => (
                MockClient::public("app-public", &redirect),
                "app-public",
                String::new(),
            ),
            "confidential-symmetric" => (
                MockClient::symmetric("app-sym", "s3cr:et/+", &redirect),
                "app-sym",
                "client_secret = \"s3cr:et/+\"\n".to_owned(),
            ),
            _ => (
                MockClient::asymmetric("app-asym", &jwks, vec![redirect.clone()]),
                "app-asym",
                String::new(),
            ),
        };
        let backend_client = MockClient::asymmetric("backend-svc", &jwks, vec![]);
        let mut opts = MockEhrOptions::new(self.vendor, vec![client, backend_client]);
        (self.tweak)(&mut opts);
        let ehr = MockEhr::start(opts).await.unwrap();
        let scopes: Vec<String> = self.scopes.iter().map(|s| format!("{s:?}")).collect();
        let toml = format!(
            r#"
[outbound]
{outbound}[http]
public_url = "{gateway}"
[[partners]]
id = "{PARTNER}"
name = "Test EHR"
kind = "ehr"
private_networks = [{networks}]
[partners.smart]
vendor = "{vendor}"
issuers = [{issuers}]
client_id = "{client_id}"
client_type = "{client_type}"
{secret_line}scopes = [{scopes}]
app_url = "{APP_URL}"
[partners.smart.backend]
client_id = "backend-svc"
scopes = ["system/Patient.rs", "system/Observation.rs"]
{extra}
"#,
            vendor = self.vendor.as_str(),
            issuers = std::iter::once(ehr.iss())
                .chain(self.more_issuers.iter().cloned())
                .map(|i| format!("{i:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            outbound = self.outbound,
            networks = self
                .private_networks
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            client_type = self.client_type,
            scopes = scopes.join(", "),
            extra = self.extra,
        );
        let config = format!("[jobs]\nenabled = false\n{toml}");
        let app = TestApp::spawn_on_listener(backend, listener, &config).await?;
        let app_key = app.key(Role::App, None).await;
        // A browser keeps cookies: the launch binds its state to this one.
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .unwrap();
        Some(SmartEnv {
            app,
            ehr,
            browser,
            app_key,
            gateway,
            config,
        })
    }
}

pub fn default_context(ehr: &MockEhr) -> LaunchContext {
    LaunchContext {
        patient: Some(ehr.default_patient()),
        encounter: Some("enc-1".into()),
        user: ehr.default_practitioner(),
        fhir_context: vec![serde_json::json!({"reference": "DiagnosticReport/dr-1"})],
        intent: Some("reconcile-medications".into()),
        need_patient_banner: true,
        smart_style_url: Some("https://ehr.example.test/style.json".into()),
    }
}

impl SmartEnv {
    /// GET `url`; returns (status, Location, body).
    pub async fn visit(&self, url: &str) -> (u16, Option<String>, String) {
        let r = self.browser.get(url).send().await.unwrap();
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, location, r.text().await.unwrap())
    }

    /// The EHR opens the app: returns the authorize URL the gateway redirects to.
    pub async fn open_from_ehr(&self, launch: &str) -> String {
        let url = format!(
            "{}/smart/launch?iss={}&launch={}",
            self.gateway,
            urlencode(&self.ehr.iss()),
            urlencode(launch)
        );
        let (status, location, body) = self.visit(&url).await;
        assert_eq!(status, 302, "{body}");
        location.unwrap()
    }

    /// The user passes the EHR's authorize step: returns the callback URL it redirects to.
    pub async fn authorize(&self, authorize_url: &str) -> String {
        let (status, location, body) = self.visit(authorize_url).await;
        assert_eq!(status, 302, "authorize answered {status}: {body}");
        let location = location.unwrap();
        assert!(
            location.starts_with(&format!("{}/smart/callback", self.gateway)),
            "{location}"
        );
        location
    }

    /// The browser lands on the gateway's callback.
    pub async fn callback(&self, callback_url: &str) -> Outcome {
        let (status, location, body) = self.visit(callback_url).await;
        if status == 302 {
            let location = location.unwrap();
            assert!(location.starts_with(APP_URL), "{location}");
            let url = url::Url::parse(&location).unwrap();
            let code = url
                .query_pairs()
                .find(|(k, _)| k == "code")
                .map(|(_, v)| v.into_owned())
                .unwrap();
            Outcome::App(code)
        } else {
            Outcome::Page(status, body)
        }
    }

    /// A whole EHR launch.
    pub async fn ehr_launch(&self, ctx: LaunchContext) -> Outcome {
        let launch = self.ehr.launch(ctx);
        let authorize = self.open_from_ehr(&launch).await;
        let callback = self.authorize(&authorize).await;
        self.callback(&callback).await
    }

    /// A whole standalone launch.
    pub async fn standalone_launch(&self) -> Outcome {
        let (status, location, body) = self
            .visit(&format!("{}/smart/{PARTNER}/start", self.gateway))
            .await;
        assert_eq!(status, 302, "{body}");
        let callback = self.authorize(&location.unwrap()).await;
        self.callback(&callback).await
    }

    /// `POST /v1/launches/exchange` with the app key.
    pub async fn exchange(&self, code: &str) -> (u16, Value) {
        self.exchange_with(&self.app_key, code).await
    }

    pub async fn exchange_with(&self, key: &str, code: &str) -> (u16, Value) {
        let r = self
            .app
            .client
            .post(self.app.url("/v1/launches/exchange"))
            .bearer_auth(key)
            .json(&serde_json::json!({ "code": code }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// Launch from the EHR with the default context and exchange the code: the launch id.
    pub async fn launched(&self) -> String {
        let code = self.ehr_launch(default_context(&self.ehr)).await.code();
        let (status, body) = self.exchange(&code).await;
        assert_eq!(status, 200, "{body}");
        body["launch_id"].as_str().unwrap().to_owned()
    }

    /// A request through the FHIR proxy.
    pub fn fhir(
        &self,
        method: reqwest::Method,
        launch_id: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.app
            .client
            .request(
                method,
                self.app
                    .url(&format!("/v1/launches/{launch_id}/fhir/{path}")),
            )
            .bearer_auth(&self.app_key)
    }

    pub async fn fhir_get(&self, launch_id: &str, path: &str) -> (StatusCode, Value) {
        let r = self
            .fhir(reqwest::Method::GET, launch_id, path)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A GET written on the socket by hand: HTTP clients normalise `..` and `%2e%2e` in
    /// paths (WHATWG URL rules), an attacker's client need not.
    pub async fn raw_get(&self, key: &str, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = self.gateway.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        (status, out)
    }

    /// Committed usage events of `event_type` for the test partner.
    pub async fn usage_count(&self, event_type: &str) -> i64 {
        self.app.state.usage.flush().await;
        partner_gateway::with_db!(self.app.db(), pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM usage_events WHERE partner_id = $1 AND type = $2")
                .bind(PARTNER).bind(event_type).fetch_one(pool).await
        })
        .unwrap()
    }

    /// The `data` of every `fhir.request` event in the ledger, oldest first.
    pub async fn fhir_events(&self) -> Vec<Value> {
        self.app.state.usage.flush().await;
        let rows: Vec<String> = partner_gateway::with_db!(self.app.db(), pool => {
            sqlx::query_scalar("SELECT CAST(data AS TEXT) FROM usage_events WHERE type = 'fhir.request' ORDER BY seq")
                .fetch_all(pool).await
        })
        .unwrap();
        rows.iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect()
    }

    pub async fn exec(&self, sql: &str) {
        partner_gateway::with_db!(self.app.db(), pool => sqlx::query(sql).execute(pool).await.map(|_| ())).unwrap();
    }
}
