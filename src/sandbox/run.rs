//! `partner-gateway sandbox`: the real gateway on the embedded default (SQLite under a data
//! directory of its own) with the simulators of this folder started beside it and
//! registered as sandbox partners, plus a small site (start page, the EHR's and LMS's "click
//! to launch", a sample app) on a loopback listener of its own.
//!
//! Why a separate listener rather than routes on the gateway: the gateway's router stays the
//! one `serve` runs, with no sandbox path a config mistake could switch on in production;
//! and the sample app plays the company's product, which is another origin than the
//! gateway, so the handoff (a one-time code in the URL, exchanged server-side with an app
//! key) crosses origins exactly as it does for real.
//!
//! Every flow goes through the gateway's public endpoints: the site only does what an EHR,
//! an LMS, an IdP or the app's back end does (make a launch, post a login initiation, call
//! `/v1/...` with an API key).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::apikeys::{self, Role};
use crate::app;
use crate::config::{Config, Layer};
use crate::state::AppState;
use partner_sim::ehr::{MockClient, MockEhr, MockEhrOptions, Vendor};
use partner_sim::idp::{IdpUser, IdpVendor, MockIdp};
use partner_sim::lms::{MockLms, MockLmsOptions, MockTool, Personality};
use partner_sim::receiver::Receiver;
use partner_sim::saml_idp::{MockSamlIdp, SamlIdpUser, SamlIdpVendor};

/// Sandbox partner ids all start with this, so they can never be a production partner's
/// (production config should not use the prefix; `check-config` does not forbid it, but a
/// partner with it and without `sandbox = true` would be an obvious mistake in review).
pub const PREFIX: &str = "sbx-";

pub const EPIC: &str = "sbx-epic";
pub const ORACLE: &str = "sbx-oracle";
pub const CANVAS: &str = "sbx-canvas";
pub const MOODLE: &str = "sbx-moodle";
pub const OKTA: &str = "sbx-okta";
pub const SHIBBOLETH: &str = "sbx-shibboleth";
/// Every sandbox partner, in the order the start page lists them.
pub const PARTNERS: [&str; 6] = [EPIC, ORACLE, CANVAS, MOODLE, OKTA, SHIBBOLETH];

/// The SSO connections (one per IdP partner).
pub const OKTA_CONNECTION: &str = "sbx-okta-oidc";
pub const SHIBBOLETH_CONNECTION: &str = "sbx-shibboleth-saml";
/// The mock Okta's group that signs its user in to the console as finance (the Okta
/// connection is the sandbox company's staff sign-in too).
pub const CONSOLE_FINANCE_GROUP: &str = "sandbox-finance";

/// LTI registration values, the same on both mock LMSs.
pub const LTI_CLIENT: &str = "sandbox-tool";
pub const LTI_DEPLOYMENT: &str = "sandbox-deployment-1";
/// The course every LTI launch of the sandbox happens in.
pub const COURSE: &str = "sandbox-course-101";
/// The LTI 1.1 consumer the sandbox Moodle's tool was migrated from.
pub const MOODLE_LTI11_KEY: &str = "sandbox-moodle-lti11";
const MOODLE_LTI11_SECRET: &str = "sandbox-moodle-lti11-shared-secret";

/// The OIDC client the gateway is at the mock IdP; a sandbox value, not a secret.
const OIDC_CLIENT: &str = "sandbox-gateway";
const OIDC_SECRET: &str = "sandbox-oidc-client-secret";

/// The webhook endpoint the sandbox registers, recognised again on the next start.
pub const RECEIVER_DESCRIPTION: &str = "partner-gateway sandbox receiver";

/// A meter over every event type, grouped by type: what the usage panels show.
pub const USAGE_METER: &str = "sandbox_events";

#[derive(Debug, Clone)]
pub struct Options {
    /// The gateway's port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// The sandbox site's port (start page and sample app); `None`: `port + 1`, or any free
    /// port when `port` is 0.
    pub site_port: Option<u16>,
    /// Where the SQLite database and the master key live (never the production ones).
    pub data_dir: PathBuf,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            port: 8080,
            site_port: None,
            data_dir: PathBuf::from("data/sandbox"),
        }
    }
}

/// The simulators, kept alive (each stops serving when dropped) and reachable by the site.
pub struct Simulators {
    pub epic: MockEhr,
    pub oracle: MockEhr,
    pub canvas: MockLms,
    pub moodle: MockLms,
    pub okta: MockIdp,
    pub shibboleth: MockSamlIdp,
    pub receiver: Receiver,
}

/// What the site needs: the gateway's address, its keys, the simulators.
pub struct Site {
    pub gateway: String,
    pub site: String,
    pub admin_key: String,
    pub app_key: String,
    /// The receiver endpoint's signing secret (`whsec_...`), to verify what arrives.
    pub webhook_secret: String,
    pub sims: Simulators,
    /// Calls to the gateway's API, as the app's back end makes them.
    pub client: reqwest::Client,
}

/// A running sandbox.
pub struct Sandbox {
    pub gateway_url: String,
    pub site_url: String,
    pub state: AppState,
    pub site: Arc<Site>,
    /// Keys made for this run, revoked by [`Sandbox::stop`].
    key_ids: Vec<String>,
    shutdown: CancellationToken,
    gateway: JoinHandle<anyhow::Result<()>>,
    site_server: JoinHandle<std::io::Result<()>>,
}

/// `flag`: the option that chooses this port, for the error.
async fn bind(port: u16, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!("cannot listen on 127.0.0.1:{port} for {what}; choose another port with {flag}")
        })
}

/// Start the simulators, the gateway and the site. Nothing listens beyond 127.0.0.1.
pub async fn start(opts: Options) -> anyhow::Result<Sandbox> {
    std::fs::create_dir_all(&opts.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            opts.data_dir.display()
        )
    })?;
    let data_dir = std::fs::canonicalize(&opts.data_dir)
        .with_context(|| format!("cannot read {}", opts.data_dir.display()))?;
    let gateway_listener = bind(opts.port, "the gateway", "--port").await?;
    let site_port = opts.site_port.unwrap_or(if opts.port == 0 {
        0
    } else {
        opts.port.saturating_add(1)
    });
    let site_listener = bind(site_port, "the start page and sample app", "--site-port").await?;
    let gateway = format!("http://{}", gateway_listener.local_addr()?);
    let site = format!("http://{}", site_listener.local_addr()?);

    let sims = start_simulators(&gateway).await?;
    let config = sandbox_config(&gateway, &site, &data_dir, &sims)?;
    let state = AppState::prepare(config, true)
        .await
        .context("preparing the sandbox gateway")?;
    let (admin, admin_key) =
        apikeys::create_api_key(&state.db, Role::Admin, None, Some("sandbox admin")).await?;
    let (app_k, app_key) =
        apikeys::create_api_key(&state.db, Role::App, None, Some("sandbox app")).await?;
    let shutdown = CancellationToken::new();
    let gateway_task = tokio::spawn(app::serve(
        state.clone(),
        gateway_listener,
        crate::jobs::Handlers::new(),
        shutdown.clone(),
    ));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let webhook_secret = match register_with_gateway(&client, &gateway, &admin_key, &sims).await {
        Ok(secret) => secret,
        Err(e) => {
            // The gateway is already serving: stop it before reporting, so no task outlives
            // a failed start.
            shutdown.cancel();
            if let Ok(Err(stop)) = gateway_task.await {
                tracing::warn!(error = %stop, "the sandbox gateway stopped with an error");
            }
            return Err(e);
        }
    };

    let site_state = Arc::new(Site {
        gateway: gateway.clone(),
        site: site.clone(),
        admin_key,
        app_key,
        webhook_secret,
        sims,
        client,
    });
    let router = super::pages::router(site_state.clone());
    let token = shutdown.clone();
    let site_server = tokio::spawn(async move {
        use axum::serve::ListenerExt;
        let site_listener = site_listener.tap_io(|s| {
            let _ = s.set_nodelay(true);
        });
        axum::serve(site_listener, router)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await
    });
    Ok(Sandbox {
        gateway_url: gateway,
        site_url: site,
        state,
        site: site_state,
        key_ids: vec![admin.id, app_k.id],
        shutdown,
        gateway: gateway_task,
        site_server,
    })
}

impl Sandbox {
    /// The page a newcomer opens.
    pub fn start_page(&self) -> String {
        format!("{}/sandbox", self.site_url)
    }

    /// The console, signed in as finance through the mock Okta.
    pub fn console(&self) -> String {
        console_signin(&self.gateway_url)
    }

    /// A partner key of a sandbox partner, for trying the API by hand (revoked on stop).
    pub async fn partner_key(&mut self, partner: &str) -> anyhow::Result<String> {
        let (k, secret) = apikeys::create_api_key(
            &self.state.db,
            Role::Partner,
            Some(partner),
            Some("sandbox partner"),
        )
        .await?;
        self.key_ids.push(k.id);
        Ok(secret)
    }

    /// Stop the site and the gateway (in-flight requests finish, job leases are given back),
    /// revoke this run's keys, then drop the simulators.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Ok(Err(e)) = self.site_server.await {
            tracing::warn!(error = %e, "the sandbox site stopped with an error");
        }
        // `serve` closes the store as it ends: revoke through a connection of our own.
        self.gateway
            .await
            .context("the sandbox gateway task failed")??;
        let db = crate::db::Db::connect(&self.state.config.database).await?;
        for id in &self.key_ids {
            apikeys::revoke_api_key(&db, id).await?;
        }
        db.close().await;
        Ok(())
    }
}

/// Run until `shutdown` (Ctrl-C / SIGTERM in the CLI), printing where to start.
pub async fn run(opts: Options, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut sandbox = start(opts).await?;
    let partner_key = sandbox.partner_key(EPIC).await?;
    println!("partner-gateway sandbox is running (Ctrl-C stops it).");
    println!();
    println!("  Start page:  {}", sandbox.start_page());
    println!("  Console:     {} (finance)", sandbox.console());
    println!("  Gateway:     {}", sandbox.gateway_url);
    println!(
        "  Data:        {}",
        sandbox.state.config.database.url.expose()
    );
    println!();
    println!("  Sandbox partners: {}", PARTNERS.join(", "));
    println!("  A partner key of {EPIC} (revoked when the sandbox stops):");
    println!("    {partner_key}");
    println!(
        "    curl -i -H 'authorization: Bearer {partner_key}' {}/v1/partners",
        sandbox.gateway_url
    );
    shutdown.cancelled().await;
    println!("stopping the sandbox");
    sandbox.stop().await
}

async fn start_simulators(gateway: &str) -> anyhow::Result<Simulators> {
    let callback = format!("{gateway}/smart/callback");
    let oidc_callback = format!("{gateway}/sso/oidc/callback");
    let jwks = format!("{gateway}/.well-known/jwks.json");
    let epic = MockEhr::start(MockEhrOptions::new(
        Vendor::Epic,
        vec![MockClient::asymmetric(
            "sandbox-epic-app",
            &jwks,
            vec![callback.clone()],
        )],
    ));
    let oracle = MockEhr::start(MockEhrOptions::new(
        Vendor::Oracle,
        vec![MockClient::public("sandbox-oracle-app", &callback)],
    ));
    let tool = MockTool::gateway(LTI_CLIENT, LTI_DEPLOYMENT, gateway);
    let canvas = MockLms::start(MockLmsOptions::new(Personality::Canvas, vec![tool.clone()]));
    // Moodle's tool was converted from LTI 1.1 (same consumer key and secret): its 1.3
    // launches carry the signed migration claim, so a learner is one person in both.
    let mut migrated = tool;
    migrated.lti11 = Some((MOODLE_LTI11_KEY.into(), MOODLE_LTI11_SECRET.into()));
    migrated.migrated_from_lti11 = true;
    let moodle = MockLms::start(MockLmsOptions::new(Personality::Moodle, vec![migrated]));
    let okta = MockIdp::start(
        IdpVendor::Okta,
        OIDC_CLIENT,
        OIDC_SECRET,
        &oidc_callback,
        IdpUser {
            sub: "00u-sandbox-ada".into(),
            email: "ada@okta.sandbox.example".into(),
            name: "Ada Lovelace".into(),
            groups: vec![
                "clinicians".into(),
                "sandbox".into(),
                CONSOLE_FINANCE_GROUP.into(),
            ],
        },
    );
    let shibboleth = MockSamlIdp::start(
        SamlIdpVendor::Shibboleth,
        SamlIdpUser {
            persistent_id: "sandbox-persistent-grace".into(),
            principal_name: "ghopper@uni.sandbox.example".into(),
            email: "grace.hopper@uni.sandbox.example".into(),
            name: "Grace Hopper".into(),
            affiliations: vec!["faculty@uni.sandbox.example".into()],
            groups: vec!["cs-faculty".into()],
        },
    );
    // Each simulator makes an RSA key: start them side by side.
    let (epic, oracle, canvas, moodle, okta, shibboleth) =
        tokio::try_join!(epic, oracle, canvas, moodle, okta, shibboleth)?;
    let receiver = Receiver::start()
        .await
        .context("starting the webhook receiver")?;
    Ok(Simulators {
        epic,
        oracle,
        canvas,
        moodle,
        okta,
        shibboleth,
        receiver,
    })
}

/// The whole configuration, built in memory: no file of `config/` is read, and no
/// `GATEWAY__*` variable either, so a shell set up for production cannot point the sandbox at
/// a production database.
fn sandbox_config(
    gateway: &str,
    site: &str,
    data_dir: &std::path::Path,
    sims: &Simulators,
) -> anyhow::Result<Config> {
    let app_url = format!("{site}/app");
    let db = data_dir.join("gateway.db");
    let key = data_dir.join("master.key");
    let base = format!(
        r#"[http]
addr = "{addr}"
public_url = "{gateway}"
[database]
url = "sqlite://{db}"
[keys]
master_key_file = "{key}"
[outbound]
allow_http = true
# The webhook receiver (the app's endpoint) listens on this machine.
private_networks = ["127.0.0.1"]
[jobs]
poll_interval_ms = 100
backoff_base_ms = 500
backoff_max_secs = 10
[webhooks]
poll_interval_ms = 100
"#,
        addr = gateway.trim_start_matches("http://"),
        db = toml_str(&db.display().to_string()),
        key = toml_str(&key.display().to_string()),
    );
    let meters = format!(
        r#"{sample}
[[meters]]
name = "{USAGE_METER}"
description = "Every usage event, by type (the sandbox's usage panels)"
event_types = ["*"]
aggregation = "COUNT"
group_by = ["type"]
"#,
        sample = include_str!("../../config/meters.toml"),
    );
    let partners = format!(
        r#"
[[partners]]
id = "{EPIC}"
name = "Epic (sandbox simulator)"
kind = "ehr"
sandbox = true
# The simulator runs on this machine.
private_networks = ["127.0.0.1"]
[partners.smart]
vendor = "epic"
issuers = ["{epic_iss}"]
client_id = "sandbox-epic-app"
client_type = "confidential-asymmetric"
signing_alg = "RS384"
scopes = ["openid", "fhirUser", "patient/Patient.rs", "patient/Observation.rs"]
app_url = "{app_url}"

[[partners]]
id = "{ORACLE}"
name = "Oracle Health (sandbox simulator)"
kind = "ehr"
sandbox = true
# The simulator runs on this machine.
private_networks = ["127.0.0.1"]
[partners.smart]
vendor = "oracle"
issuers = ["{oracle_iss}"]
client_id = "sandbox-oracle-app"
client_type = "public"
scopes = ["openid", "fhirUser", "offline_access", "patient/Patient.rs", "patient/Observation.rs"]
app_url = "{app_url}"

[[partners]]
id = "{CANVAS}"
name = "Canvas (sandbox simulator)"
kind = "lms"
sandbox = true
# The simulator runs on this machine.
private_networks = ["127.0.0.1"]
[partners.lti]
app_url = "{app_url}"
[[partners.lti.platforms]]
vendor = "canvas"
issuer = "{canvas_iss}"
client_id = "{LTI_CLIENT}"
deployment_ids = ["{LTI_DEPLOYMENT}"]
auth_url = "{canvas_auth}"
token_url = "{canvas_token}"
jwks_url = "{canvas_jwks}"
# Canvas's deep linking goes through the gateway's picker of these items.
[[partners.lti.content_items]]
title = "Unit 1 quiz"
text = "Ten questions on the first unit"
score_maximum = 10.0
[[partners.lti.content_items]]
title = "Course reading"
type = "link"
url = "{site}/reading"

[[partners]]
id = "{MOODLE}"
name = "Moodle (sandbox simulator)"
kind = "lms"
sandbox = true
# The simulator runs on this machine.
private_networks = ["127.0.0.1"]
# No content items: on a deep linking launch the app chooses, through the API.
[partners.lti]
app_url = "{app_url}"
[[partners.lti.platforms]]
vendor = "moodle"
issuer = "{moodle_iss}"
client_id = "{LTI_CLIENT}"
deployment_ids = ["{LTI_DEPLOYMENT}"]
auth_url = "{moodle_auth}"
token_url = "{moodle_token}"
jwks_url = "{moodle_jwks}"
# Migrated from this LTI 1.1 consumer: the claim's signature is checked with its secret.
lti11_consumer_key = "{MOODLE_LTI11_KEY}"
[[partners.lti.lti11]]
consumer_key = "{MOODLE_LTI11_KEY}"
shared_secret = "{MOODLE_LTI11_SECRET}"

[[partners]]
id = "{OKTA}"
name = "Okta (sandbox simulator, OIDC)"
kind = "idp"
sandbox = true
# The simulator runs on this machine.
private_networks = ["127.0.0.1"]
[[partners.sso_connections]]
id = "{OKTA_CONNECTION}"
protocol = "oidc"
issuer = "{okta_iss}"
client_id = "{OIDC_CLIENT}"
client_secret = "{OIDC_SECRET}"
domains = ["okta.sandbox.example"]
app_url = "{app_url}"
# The sandbox company's staff sign in to the console through this IdP too.
[partners.sso_connections.console]
audience = "staff"
roles = {{ finance = ["{CONSOLE_FINANCE_GROUP}"] }}

[[partners]]
id = "{SHIBBOLETH}"
name = "Shibboleth (sandbox simulator, SAML)"
kind = "idp"
sandbox = true
# The simulator runs on this machine.
private_networks = ["127.0.0.1"]
[[partners.sso_connections]]
id = "{SHIBBOLETH_CONNECTION}"
protocol = "saml"
idp_metadata_url = "{saml_md}"
domains = ["uni.sandbox.example"]
app_url = "{app_url}"
"#,
        epic_iss = sims.epic.iss(),
        oracle_iss = sims.oracle.iss(),
        canvas_iss = sims.canvas.issuer(),
        canvas_auth = sims.canvas.auth_url(),
        canvas_token = sims.canvas.token_url(),
        canvas_jwks = sims.canvas.jwks_url(),
        moodle_iss = sims.moodle.issuer(),
        moodle_auth = sims.moodle.auth_url(),
        moodle_token = sims.moodle.token_url(),
        moodle_jwks = sims.moodle.jwks_url(),
        okta_iss = sims.okta.issuer(),
        saml_md = sims.shibboleth.metadata_url(),
    );
    let layers = vec![
        Layer {
            origin: "sandbox gateway.toml (built in)".into(),
            text: base,
        },
        Layer {
            origin: "sandbox meters.toml (built in)".into(),
            text: meters,
        },
        Layer {
            origin: "sandbox partners.toml (built in)".into(),
            text: partners,
        },
    ];
    Config::from_layers(layers, Vec::new()).map_err(|errors| {
        let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(
            "the sandbox configuration is invalid:\n  {}",
            lines.join("\n  ")
        )
    })
}

/// Where the console's staff sign-in through the mock Okta starts, on the gateway at `gateway`.
pub fn console_signin(gateway: &str) -> String {
    format!("{gateway}/console/signin/sso/{OKTA_CONNECTION}")
}

/// A path inside a TOML basic string.
fn toml_str(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// What the partners' administrators do once the gateway answers: the SAML IdP loads the
/// SP metadata, and the receiver becomes the app's webhook endpoint. Returns its secret.
async fn register_with_gateway(
    client: &reqwest::Client,
    gateway: &str,
    admin_key: &str,
    sims: &Simulators,
) -> anyhow::Result<String> {
    let metadata = client
        .get(format!(
            "{gateway}/sso/saml/{SHIBBOLETH_CONNECTION}/metadata"
        ))
        .send()
        .await?
        .error_for_status()
        .context("reading the gateway's SAML SP metadata")?
        .text()
        .await?;
    sims.shibboleth
        .register_sp(&metadata)
        .context("loading the SP metadata into the mock SAML IdP")?;
    register_receiver(client, gateway, admin_key, &sims.receiver).await
}

/// Register the receiver as the app's webhook endpoint through the API, replacing the one a
/// previous run left (its port is gone). Returns the new endpoint's secret.
async fn register_receiver(
    client: &reqwest::Client,
    gateway: &str,
    admin_key: &str,
    receiver: &Receiver,
) -> anyhow::Result<String> {
    let listed: serde_json::Value = client
        .get(format!("{gateway}/v1/webhooks/endpoints?app=true"))
        .bearer_auth(admin_key)
        .send()
        .await?
        .error_for_status()
        .context("listing webhook endpoints")?
        .json()
        .await?;
    let old = listed
        .get("endpoints")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    for ep in old {
        if ep.get("description").and_then(serde_json::Value::as_str) == Some(RECEIVER_DESCRIPTION)
            && let Some(id) = ep.get("id").and_then(serde_json::Value::as_str)
        {
            client
                .delete(format!("{gateway}/v1/webhooks/endpoints/{id}"))
                .bearer_auth(admin_key)
                .send()
                .await?
                .error_for_status()
                .context("removing the previous run's receiver endpoint")?;
        }
    }
    let created: serde_json::Value = client
        .post(format!("{gateway}/v1/webhooks/endpoints"))
        .bearer_auth(admin_key)
        .json(&serde_json::json!({
            "app": true,
            "url": receiver.url("/webhooks"),
            "description": RECEIVER_DESCRIPTION,
        }))
        .send()
        .await?
        .error_for_status()
        .context("registering the webhook receiver")?
        .json()
        .await?;
    created
        .get("secret")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("the new webhook endpoint came without its secret"))
}
