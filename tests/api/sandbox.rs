//! Sandbox partners (marked in responses, in the ledger and in usage queries; refused by
//! statements) on SQLite and PostgreSQL, and the `sandbox` command itself driven over HTTP
//! from its start page to the sample app.

use partner_gateway::apikeys::Role;
use partner_gateway::config::{Config, Layer};
use partner_gateway::sandbox::run::{self, Options};
use partner_sim::lms::parse_auto_post_form;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};

const SBX: &str = "sbx-tryout";
/// A production partner of the sample config.
const PROD: &str = "epic-sandbox";

const SANDBOX_PARTNER: &str = r#"
[jobs]
enabled = false
[[partners]]
id = "sbx-tryout"
name = "A partner trying flows out"
kind = "other"
sandbox = true
self_reported_types = ["app.*"]
"#;

async fn app(backend: Backend) -> Option<TestApp> {
    TestApp::spawn_with(
        backend,
        SANDBOX_PARTNER,
        partner_gateway::jobs::Handlers::new(),
    )
    .await
}

fn sandbox_header(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("x-gateway-sandbox")
        .map(|v| v.to_str().unwrap().to_owned())
}

// The partner listing says which partners are sandboxes, and every answer to a sandbox
// partner's key carries the header (errors included); production keys never get it.
crate::both_backends! {
    async fn a_sandbox_partners_key_gets_the_sandbox_header_on_every_answer(backend) {
        let Some(app) = app(backend).await else { return };
        let sbx = app.partner_key(SBX).await;
        let prod = app.partner_key(PROD).await;

        let r = app.get(&sbx, "/v1/partners").await;
        assert_eq!(r.status(), 200);
        assert_eq!(sandbox_header(&r).as_deref(), Some("true"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["data"][0]["id"], SBX);
        assert_eq!(body["data"][0]["sandbox"], true);

        // A refusal to a sandbox key is marked too.
        let r = app.get(&sbx, &format!("/v1/partners/{PROD}")).await;
        assert_eq!(r.status(), 403);
        assert_eq!(sandbox_header(&r).as_deref(), Some("true"));

        let r = app.get(&prod, "/v1/partners").await;
        assert_eq!(r.status(), 200);
        assert_eq!(sandbox_header(&r), None);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["data"][0]["sandbox"], false);

        // An admin sees both, each marked for what it is.
        let admin = app.admin().await;
        let body: Value = app.get(&admin, "/v1/partners").await.json().await.unwrap();
        let of = |id: &str| body["data"].as_array().unwrap().iter().find(|p| p["id"] == id).unwrap()["sandbox"].clone();
        assert_eq!(of(SBX), true);
        assert_eq!(of(PROD), false);
        // A sandbox partner asked for by name is marked for any key; a production one is not.
        let r = app.get(&admin, &format!("/v1/partners/{SBX}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(sandbox_header(&r).as_deref(), Some("true"));
        let r = app.get(&admin, &format!("/v1/partners/{PROD}")).await;
        assert_eq!(sandbox_header(&r), None);
    }

    async fn usage_of_a_sandbox_partner_is_marked_in_the_ledger_and_in_queries(backend) {
        let Some(app) = app(backend).await else { return };
        let sbx = app.partner_key(SBX).await;
        let prod = app.key(partner_gateway::apikeys::Role::App, None).await;
        let admin = app.admin().await;
        let ev = |id: &str| json!({"specversion": "1.0", "id": id, "source": "/t", "type": "app.launch", "subject": "u1"});
        let r = app.post_json(&sbx, &ev("s-1")).await;
        assert_eq!(r.status(), 202);
        assert_eq!(sandbox_header(&r).as_deref(), Some("true"));
        // A client cannot mark its own events: the mark comes from the partner's row.
        let mut forged = ev("p-1");
        forged["sandbox"] = json!(true);
        forged["partner"] = json!(PROD);
        assert_eq!(app.post_json(&prod, &forged).await.status(), 202);
        // The admin names the sandbox partner: the event is marked all the same.
        let mut named = ev("s-2");
        named["partner"] = json!(SBX);
        assert_eq!(app.post_json(&admin, &named).await.status(), 202);

        let rows: Vec<(String, String, bool)> = partner_gateway::with_db!(app.db(), pool => {
            sqlx::query_as("SELECT partner_id, event_id, sandbox FROM usage_events ORDER BY event_id").fetch_all(pool).await
        }).unwrap();
        assert_eq!(rows, vec![
            (PROD.to_owned(), "p-1".to_owned(), false),
            (SBX.to_owned(), "s-1".to_owned(), true),
            (SBX.to_owned(), "s-2".to_owned(), true),
        ]);

        let from = "2020-01-01T00:00:00Z";
        let r = app.get(&admin, &format!("/v1/usage/query?meter=app_events&partner={SBX}&from={from}")).await;
        assert_eq!(sandbox_header(&r).as_deref(), Some("true"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["sandbox"], true, "{body}");
        assert_eq!(body["data"][0]["value"], 2, "{body}");
        let (status, body) = app.query(&admin, &[("meter", "app_events"), ("partner", PROD), ("from", from)]).await;
        assert_eq!(status, 200);
        assert_eq!(body["sandbox"], false, "{body}");
    }

    async fn webhook_messages_of_a_sandbox_partner_say_so_and_others_keep_their_shape(backend) {
        let Some(app) = app(backend).await else { return };
        let mut tx = app.db().begin().await.unwrap();
        let now = chrono::Utc::now();
        let data = json!({"n": 1});
        let sbx = partner_gateway::webhooks::emit(&mut tx, Some(SBX), "launch.completed", &data, now).await.unwrap();
        let prod = partner_gateway::webhooks::emit(&mut tx, Some(PROD), "launch.completed", &data, now).await.unwrap();
        let app_only = partner_gateway::webhooks::emit(&mut tx, None, "launch.completed", &data, now).await.unwrap();
        tx.commit().await.unwrap();
        let payload = |id: String| {
            let db = app.db().clone();
            async move {
                let text: String = partner_gateway::with_db!(&db, pool => {
                    sqlx::query_scalar("SELECT payload FROM webhook_messages WHERE id = $1").bind(&id).fetch_one(pool).await
                }).unwrap();
                text
            }
        };
        let body: Value = serde_json::from_str(&payload(sbx).await).unwrap();
        assert_eq!(body["sandbox"], true, "{body}");
        assert_eq!(body["data"], data);
        for id in [prod, app_only] {
            let text = payload(id).await;
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body.as_object().unwrap().keys().collect::<Vec<_>>(), ["data", "timestamp", "type"], "{text}");
        }
    }

    async fn statements_are_refused_for_a_sandbox_partner_and_a_run_skips_it(backend) {
        let Some(app) = app(backend).await else { return };
        let finance = app.key(Role::Finance, None).await;
        let r = app
            .client
            .post(app.url("/v1/statements"))
            .bearer_auth(&finance)
            .json(&json!({"partner": SBX, "period": "2026-10"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "sandbox_partner", "{body}");
        assert!(body["detail"].as_str().unwrap().contains("sandbox partner"), "{body}");

        let items = app.state.statements().run("2026-10", chrono::Utc::now(), &partner_gateway::audit::Who::cli(), |_, _| {}).await;
        assert!(!items.is_empty());
        assert!(items.iter().all(|i| i.partner != SBX));
    }
}

fn layers(partners: &str, agreements: &str) -> Vec<Layer> {
    vec![
        Layer {
            origin: "partners.toml".into(),
            text: partners.into(),
        },
        Layer {
            origin: "meters.toml".into(),
            text: include_str!("../../config/meters.toml").into(),
        },
        Layer {
            origin: "agreements.toml".into(),
            text: agreements.into(),
        },
    ]
}

#[test]
fn a_sandbox_partner_with_an_agreement_is_refused_naming_the_fields() {
    let partners = include_str!("../../config/partners.toml").replacen(
        "id = \"canvas-sandbox\"\n",
        "id = \"canvas-sandbox\"\nsandbox = true\n",
        1,
    );
    let errors = Config::from_layers(
        layers(&partners, include_str!("../../config/agreements.toml")),
        Vec::new(),
    )
    .unwrap_err();
    let text: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    let hit = text
        .iter()
        .find(|l| l.contains("sandbox"))
        .unwrap_or_else(|| panic!("no sandbox problem in {text:#?}"));
    assert!(hit.starts_with("agreements.toml: agreements["), "{hit}");
    assert!(hit.contains("].partner: "), "{hit}");
    assert!(hit.contains("\"canvas-sandbox\""), "{hit}");
    assert!(hit.contains(".sandbox = true"), "{hit}");
    // Without the flag the sample config is fine.
    Config::from_layers(
        layers(
            include_str!("../../config/partners.toml"),
            include_str!("../../config/agreements.toml"),
        ),
        Vec::new(),
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// The sandbox command, as a newcomer's browser drives it.

/// `name=value` pairs of the Set-Cookie headers.
fn cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// Follow redirects from `url` (GET) until a page answers; returns its URL and body.
async fn follow(
    browser: &reqwest::Client,
    base: &str,
    url: String,
    jar: &[String],
) -> (String, u16, String) {
    let mut url = url;
    for _ in 0..10 {
        let mut req = browser.get(&url);
        if !jar.is_empty() {
            req = req.header("cookie", jar.join("; "));
        }
        let r = req.send().await.unwrap();
        if r.status().is_redirection() {
            let next = location(&r);
            url = if next.starts_with('/') {
                format!("{base}{next}")
            } else {
                next
            };
            continue;
        }
        let status = r.status().as_u16();
        return (url, status, r.text().await.unwrap());
    }
    panic!("too many redirects from {url}");
}

/// The `href` of the page's `<a id="continue">`.
fn continue_link(html: &str) -> String {
    let marker = "id=\"continue\" href=\"";
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no continue link in {html}"))
        + marker.len();
    let end = at + html[at..].find('"').unwrap();
    html[at..end].replace("&amp;", "&")
}

/// The text of the element with this id (`<dd id="x">text</dd>`).
fn by_id(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let tag = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let at = tag + html[tag..].find('>').unwrap() + 1;
    let end = at + html[at..].find('<').unwrap();
    html[at..end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_runs_an_ehr_launch_and_an_lti_launch_through_to_the_sample_app() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = run::start(Options {
        port: 0,
        site_port: None,
        data_dir: dir.path().join("sandbox"),
    })
    .await
    .unwrap();
    let site = sandbox.site_url.clone();
    // Keeps cookies, as a browser does: the SMART launch is bound to it by one.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();

    // The start page lists every flow.
    let (_, status, start) = follow(&browser, &site, sandbox.start_page(), &[]).await;
    assert_eq!(status, 200);
    for id in [
        "ehr-epic",
        "ehr-oracle",
        "lti-canvas",
        "lti-moodle",
        "dl-canvas",
        "dl-moodle",
        "gradebook-canvas",
        "sso-oidc",
        "sso-saml",
        "webhooks",
        "usage-sbx-epic",
        "console",
    ] {
        assert!(
            start.contains(&format!("id=\"{id}\"")),
            "no #{id} on the start page"
        );
    }

    // EHR launch from Epic: start page -> gateway -> EHR authorize -> callback -> app.
    let (url, status, page) = follow(&browser, &site, format!("{site}/ehr/epic/launch"), &[]).await;
    assert_eq!(status, 200, "{page}");
    assert!(url.starts_with(&format!("{site}/app/")), "{url}");
    assert_eq!(by_id(&page, "context-kind"), "smart");
    assert_eq!(by_id(&page, "partner"), "sbx-epic");
    assert_eq!(by_id(&page, "sandbox"), "true");
    assert_eq!(
        by_id(&page, "patient"),
        sandbox.site.sims.epic.default_patient()
    );
    assert!(page.contains("X-Gateway-Sandbox: true"), "{page}");
    // The follow-on action: the patient read through the FHIR proxy.
    let (_, status, patient) = follow(&browser, &site, format!("{url}/patient"), &[]).await;
    assert_eq!(status, 200, "{patient}");
    assert!(!by_id(&patient, "patient-name").is_empty());
    assert!(patient.contains("X-Gateway-Sandbox: true"), "{patient}");

    // LTI launch from Canvas: the LMS's login initiation form, the gateway's login (cookie
    // bound), the platform's auth form, the launch, the app.
    let r = browser
        .get(format!("{site}/lms/canvas/launch"))
        .send()
        .await
        .unwrap();
    let init = parse_auto_post_form(&r.text().await.unwrap()).unwrap();
    assert!(init.action.ends_with("/lti/login"), "{}", init.action);
    let r = browser
        .post(&init.action)
        .form(&init.fields)
        .send()
        .await
        .unwrap();
    let jar = cookies(&r);
    // Canvas offers platform storage: the gateway answers a page that stores the binding
    // there and continues (a script, or the link for browsers without one).
    let auth = match r.status().as_u16() {
        302 => location(&r),
        200 => continue_link(&r.text().await.unwrap()),
        other => panic!("login answered {other}"),
    };
    let r = browser.get(&auth).send().await.unwrap();
    let launch = parse_auto_post_form(&r.text().await.unwrap()).unwrap();
    assert!(launch.action.ends_with("/lti/launch"), "{}", launch.action);
    let r = browser
        .post(&launch.action)
        .header("cookie", jar.join("; "))
        .form(&launch.fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{:?}", r.text().await);
    let (url, status, page) = follow(&browser, &site, location(&r), &[]).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(by_id(&page, "context-kind"), "lti");
    assert_eq!(by_id(&page, "partner"), "sbx-canvas");
    assert_eq!(by_id(&page, "course"), run::COURSE);
    assert_eq!(by_id(&page, "sandbox"), "true");

    // A grade posted from the app reaches the Canvas gradebook.
    let launch_path = url.split('?').next().unwrap().to_owned();
    let r = browser
        .post(format!("{launch_path}/grade"))
        .form(&[("score", "8.5")])
        .send()
        .await
        .unwrap();
    let graded = r.text().await.unwrap();
    assert_eq!(by_id(&graded, "score-status"), "delivered", "{graded}");
    // The app's own calls for a sandbox launch are marked: the context and the score.
    let launch_id = launch_path.rsplit('/').next().unwrap();
    let score_id = graded
        .split("GET /v1/scores/")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    for path in [
        format!("/v1/launches/{launch_id}"),
        format!("/v1/scores/{score_id}"),
    ] {
        let r = browser
            .get(format!("{}{path}", sandbox.gateway_url))
            .bearer_auth(&sandbox.site.app_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(sandbox_header(&r).as_deref(), Some("true"), "{path}");
    }
    let book = sandbox.site.sims.canvas.gradebook_url(run::COURSE);
    let book = browser
        .get(&book)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(book.contains("8.5"), "{book}");
    assert!(book.contains("sandbox-learner-1"), "{book}");

    // Usage recorded and marked; the webhooks reached the receiver, signed.
    let (_, _, start) = follow(&browser, &site, sandbox.start_page(), &[]).await;
    assert!(start.contains("<code>smart.launch</code>"), "{start}");
    assert!(start.contains("<code>lti.launch</code>"), "{start}");
    assert!(start.contains("sandbox: true"), "{start}");
    assert!(
        sandbox
            .site
            .sims
            .receiver
            .wait_for(2, std::time::Duration::from_secs(10))
            .await
            >= 2,
        "the launch.completed webhooks did not arrive"
    );
    // Each message of a sandbox partner says so beside its data.
    for r in sandbox.site.sims.receiver.received() {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["sandbox"], true, "{body}");
    }
    let (_, _, hooks) = follow(&browser, &site, format!("{site}/webhooks"), &[]).await;
    assert!(hooks.contains("launch.completed"), "{hooks}");
    assert!(hooks.contains("signature valid"), "{hooks}");
    assert!(!hooks.contains("class=\"bad\""), "{hooks}");

    // The console, signed in as finance through the mock Okta (its user is in the group the
    // connection maps to finance): the start page's link, the IdP, home to month-end.
    let console = run::console_signin(&sandbox.gateway_url);
    assert!(start.contains(&format!("href=\"{console}\"")), "{start}");
    let (url, status, month) = follow(&browser, &sandbox.gateway_url, console, &[]).await;
    assert_eq!(status, 200, "{month}");
    assert!(url.ends_with("/console/finance"), "{url}");
    assert!(
        month.contains("Ada Lovelace") && month.contains("Finance"),
        "{month}"
    );

    let db_url = sandbox.state.config.database.url.expose().to_owned();
    assert!(
        db_url.contains(&dir.path().display().to_string()),
        "{db_url}"
    );
    sandbox.stop().await.unwrap();
}
