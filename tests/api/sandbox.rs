//! Sandbox partners (marked in responses, in the ledger and in usage queries; refused by
//! statements) on SQLite and PostgreSQL.

use partner_gateway::apikeys::Role;
use partner_gateway::config::{Config, Layer};
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
    }

    async fn usage_of_a_sandbox_partner_is_marked_in_the_ledger_and_in_queries(backend) {
        let Some(app) = app(backend).await else { return };
        let sbx = app.partner_key(SBX).await;
        let prod = app.partner_key(PROD).await;
        let admin = app.admin().await;
        let ev = |id: &str| json!({"specversion": "1.0", "id": id, "source": "/t", "type": "smart.launch", "subject": "u1"});
        let r = app.post_json(&sbx, &ev("s-1")).await;
        assert_eq!(r.status(), 202);
        assert_eq!(sandbox_header(&r).as_deref(), Some("true"));
        // A client cannot mark its own events: the mark comes from the partner's row.
        let mut forged = ev("p-1");
        forged["sandbox"] = json!(true);
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
        let r = app.get(&admin, &format!("/v1/usage/query?meter=smart_launches&partner={SBX}&from={from}")).await;
        assert_eq!(sandbox_header(&r).as_deref(), Some("true"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["sandbox"], true, "{body}");
        assert_eq!(body["data"][0]["value"], 2, "{body}");
        let (status, body) = app.query(&admin, &[("meter", "smart_launches"), ("partner", PROD), ("from", from)]).await;
        assert_eq!(status, 200);
        assert_eq!(body["sandbox"], false, "{body}");
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

        let items = app.state.statements().run("2026-10", chrono::Utc::now(), |_, _| {}).await;
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
