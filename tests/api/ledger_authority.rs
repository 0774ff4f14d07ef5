//! Who may write which event types into the ledger, and the provenance kept with each event
//! (issue 17, H1): a partner cannot raise its own payout.

use chrono::Utc;
use partner_gateway::apikeys::Role;
use partner_gateway::webhooks::signature;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

fn ev(id: &str, ty: &str, partner: Option<&str>, data: Value) -> Value {
    let mut e = json!({
        "specversion": "1.0", "id": id, "source": "/attacker", "type": ty,
        "subject": "someone", "time": "2026-10-15T12:00:00Z", "data": data,
    });
    if let Some(p) = partner {
        e["partner"] = json!(p);
    }
    e
}

fn money(amount: &str) -> Value {
    json!({"amount": amount, "currency": "USD", "product": "prod_fake", "customer": "cus_x"})
}

async fn post(app: &TestApp, key: &str, body: &Value) -> (u16, Value) {
    let r = app.post_json(key, body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// (recorded_by, recorded_ref) of one stored event.
async fn provenance(app: &TestApp, event_id: &str) -> (String, Option<String>) {
    partner_gateway::with_db!(app.db(), c => sqlx::query_as(
        "SELECT recorded_by, recorded_ref FROM usage_events WHERE event_id = $1")
        .bind(event_id).fetch_one(c).await)
    .unwrap()
}

async fn statement(app: &TestApp, partner: &str, period: &str) -> Value {
    let finance = app.key(Role::Finance, None).await;
    let r = app
        .client
        .post(app.url("/v1/statements"))
        .bearer_auth(&finance)
        .json(&json!({"partner": partner, "period": period}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

/// A partner that reports some types itself, with an agreement that prices one of them.
const SELF_REPORTING: &str = r#"
[[partners]]
id = "acme-lms"
name = "Acme LMS"
kind = "lms"
self_reported_types = ["course.completed", "acme.*"]

[[meters]]
name = "completions"
event_types = ["course.completed"]
aggregation = "COUNT"

[[agreements]]
id = "acme-completions"
partner = "acme-lms"
valid_from = "2026-01-01"
currency = "USD"
self_reported_events = "SETTING"

[agreements.revenue]
recorded = false

[[agreements.revenue.prices]]
meter = "completions"
model = "per_unit"
unit_price = "10.00"

[agreements.share]
rate = "50%"
"#;

async fn spawn_self_reporting(backend: Backend, setting: &str) -> Option<TestApp> {
    let extra = format!(
        "[jobs]\nenabled = false\n{}",
        SELF_REPORTING.replace("SETTING", setting)
    );
    TestApp::spawn_with(backend, &extra, Default::default()).await
}

both_backends! {
    async fn a_partner_key_cannot_record_revenue_referrals_or_the_gateways_events(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        // The attack pass's three cases, each refused with 403 naming the type.
        let epic = app.partner_key("epic-sandbox").await;
        let (s, b) = post(&app, &epic, &ev("fake-1", "revenue.recognized", None, money("1000000.00"))).await;
        assert_eq!(s, 403, "{b}");
        assert!(b["detail"].as_str().unwrap().contains("\"revenue.recognized\""), "{b}");
        let northwind = app.partner_key("northwind-consulting").await;
        let (s, b) = post(&app, &northwind, &ev("fake-2", "referral.implementation_completed", None,
            json!({"contract_value": "5000000.00", "currency": "USD", "customer": "x"}))).await;
        assert_eq!(s, 403, "{b}");
        assert!(b["detail"].as_str().unwrap().contains("referral.implementation_completed"), "{b}");
        let canvas = app.partner_key("canvas-sandbox").await;
        let launches: Vec<Value> = (0..1000)
            .map(|i| ev(&format!("fake-launch-{i}"), "lti.launch", None, json!({})))
            .collect();
        let (s, b) = post(&app, &canvas, &Value::Array(launches)).await;
        assert_eq!(s, 403, "{b}");
        assert!(b["detail"].as_str().unwrap().contains("only by the gateway"), "{b}");
        // Nothing of any of it reached the ledger, so no statement moved.
        assert_eq!(app.ledger_count().await, 0);
        let st = statement(&app, "epic-sandbox", "2026-10").await;
        assert_eq!(st["document"]["total"], "0.00", "{st}");
        let st = statement(&app, "northwind-consulting", "2026-10").await;
        assert_eq!(st["document"]["total"], "0.00", "{st}");
        // Not even a type the partner might invent, until its config lists it.
        let (s, b) = post(&app, &epic, &ev("own-1", "app.session", None, json!({}))).await;
        assert_eq!(s, 403, "{b}");
        assert!(b["detail"].as_str().unwrap().contains("self_reported_types"), "{b}");
    }

    async fn admin_and_app_keys_record_money_but_never_the_gateways_types(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        for role in [Role::Admin, Role::App] {
            let key = app.key(role, None).await;
            let id = format!("rev-{}", role.as_str());
            let (s, b) = post(&app, &key, &ev(&id, "revenue.recognized", Some("epic-sandbox"), money("100.00"))).await;
            assert_eq!(s, 202, "{b}");
            let (kind, reference) = provenance(&app, &id).await;
            assert_eq!(kind, format!("{}_key", role.as_str()));
            assert!(reference.is_some());
            for t in ["smart.launch", "lti.launch", "sso.login", "fhir.request", "lti.grade_posted", "webhook.delivered"] {
                let (s, b) = post(&app, &key, &ev("x", t, Some("epic-sandbox"), json!({}))).await;
                assert_eq!(s, 403, "{t}: {b}");
                assert!(b["detail"].as_str().unwrap().contains(t), "{b}");
            }
        }
        // One refused event refuses the whole batch: nothing half-written.
        let admin = app.admin().await;
        let batch = json!([
            ev("ok-1", "app.session", Some("epic-sandbox"), json!({})),
            ev("bad-1", "smart.launch", Some("epic-sandbox"), json!({})),
        ]);
        let (s, b) = post(&app, &admin, &batch).await;
        assert_eq!(s, 403, "{b}");
        assert!(b["detail"].as_str().unwrap().starts_with("event 1:"), "{b}");
        assert_eq!(app.ledger_count().await, 2);
    }

    async fn the_gateways_own_events_are_marked_as_its_own(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let mut tx = app.db().begin().await.unwrap();
        let e = partner_gateway::metering::UsageEvent {
            partner_id: "epic-sandbox".into(), id: "l-1".into(), source: "/smart".into(),
            event_type: "smart.launch".into(), subject: Some("dr".into()), time: Utc::now(),
            data: None, extensions: None,
        };
        assert!(partner_gateway::metering::record_usage_event(&mut tx, &app.state.subjects, e).await.unwrap());
        tx.commit().await.unwrap();
        assert_eq!(provenance(&app, "l-1").await, ("gateway".to_owned(), None));
    }

    async fn a_partners_self_reported_types_are_its_word_and_count_only_when_the_agreement_says_so(backend) {
        for (setting, total) in [("exclude", "5.00"), ("include", "15.00")] {
            let Some(app) = spawn_self_reporting(backend, setting).await else { return };
            let key = app.partner_key("acme-lms").await;
            let (s, b) = post(&app, &key, &json!([
                ev("c-1", "course.completed", None, json!({})),
                ev("c-2", "course.completed", None, json!({})),
                ev("a-1", "acme.note", None, json!({})),
            ])).await;
            assert_eq!(s, 202, "{b}");
            let (kind, reference) = provenance(&app, "c-1").await;
            assert_eq!(kind, "partner_key");
            assert!(reference.is_some());
            // Still not money it may record.
            let (s, _) = post(&app, &key, &ev("r-1", "revenue.recognized", None, money("5.00"))).await;
            assert_eq!(s, 403);
            // The app records one completion too: trusted, it always counts.
            let app_key = app.key(Role::App, None).await;
            let (s, b) = post(&app, &app_key, &ev("c-3", "course.completed", Some("acme-lms"), json!({}))).await;
            assert_eq!(s, 202, "{b}");
            let st = statement(&app, "acme-lms", "2026-10").await;
            let d = &st["document"];
            assert_eq!(d["self_reported_events"], format!("{setting}d"), "{d}");
            assert_eq!(d["total"], total, "{d}");
            let usage = d["lines"].as_array().unwrap().iter()
                .find(|l| l["meter"] == "completions").unwrap();
            let kinds: Vec<&str> = usage["recorded_by"].as_array().unwrap().iter()
                .map(|r| r["kind"].as_str().unwrap()).collect();
            if setting == "exclude" {
                assert_eq!(usage["quantity"], "1", "{usage}");
                assert_eq!(kinds, ["app_key"], "{usage}");
            } else {
                assert_eq!(usage["quantity"], "3", "{usage}");
                assert_eq!(kinds, ["app_key", "partner_key"], "{usage}");
            }
        }
    }

    async fn usage_lines_count_the_gateways_events_from_the_index_as_from_the_rows(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let mut tx = app.db().begin().await.unwrap();
        for i in 0..5 {
            let e = partner_gateway::metering::UsageEvent {
                partner_id: "canvas-sandbox".into(), id: format!("l-{i}"), source: "/lti".into(),
                event_type: "lti.launch".into(), subject: Some(format!("learner-{}", i % 3)),
                time: chrono::DateTime::parse_from_rfc3339("2026-10-12T12:00:00Z").unwrap().into(),
                data: None, extensions: None,
            };
            partner_gateway::metering::record_usage_event(&mut tx, &app.state.subjects, e).await.unwrap();
        }
        tx.commit().await.unwrap();
        // Provenance began today (this database's migration): October is read row by row.
        let rows = statement(&app, "canvas-sandbox", "2026-10").await;
        // A ledger that has kept provenance since January: the gateway's types from the index.
        partner_gateway::with_db!(app.db(), c => sqlx::query(
            "UPDATE ledger_provenance SET since_us = 1767225600000000").execute(c).await.map(|r| r.rows_affected())).unwrap();
        let index = statement(&app, "canvas-sandbox", "2026-10").await;
        let usage = |st: &Value| st["document"]["lines"].as_array().unwrap().iter()
            .find(|l| l["meter"] == "active_learners").unwrap()["recorded_by"].clone();
        assert_eq!(usage(&rows), json!([{"kind": "gateway", "events": 5}]), "{rows}");
        assert_eq!(usage(&index), usage(&rows));
        assert_eq!(index["document"]["lines"], rows["document"]["lines"]);
        // And no other writer can slip a gateway type in underneath.
        let mut tx = app.db().begin().await.unwrap();
        let e = partner_gateway::metering::UsageEvent {
            partner_id: "canvas-sandbox".into(), id: "forged".into(), source: "/x".into(),
            event_type: "lti.launch".into(), subject: None, time: Utc::now(), data: None, extensions: None,
        };
        let admin = partner_gateway::metering::authority::Recorder::AdminKey { key_id: "k".into() };
        let err = partner_gateway::metering::store::insert_usage_events(&mut tx, &app.state.subjects, vec![e], &admin, Utc::now()).await.unwrap_err();
        assert!(err.to_string().contains("recorded only by the gateway"), "{err}");
    }

    async fn statements_say_who_recorded_the_revenue(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        // Through the billing system's signed webhook.
        let secret = b"sandbox-billing-webhook-secret";
        let created = chrono::DateTime::parse_from_rfc3339("2026-10-10T12:00:00Z").unwrap().timestamp();
        let body = json!({
            "id": "in_1", "type": "invoice.paid", "created": created,
            "data": {"object": {"id": "in_1", "customer": "cus_1", "amount_paid": 100_000, "currency": "usd",
                     "lines": {"data": [{"price": {"product": "prod_ehr"}}]}}}
        }).to_string();
        let now = Utc::now().timestamp();
        let r = app.client.post(app.url("/webhooks/in/epic-sandbox/billing"))
            .header("Billing-Signature", signature::timestamped_hmac_header(secret, now, body.as_bytes()))
            .body(body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(provenance(&app, "in_1").await, ("webhook".to_owned(), Some("billing".to_owned())));
        // And one by an admin, for the same product.
        let admin = app.admin().await;
        let (s, _) = post(&app, &admin, &ev("adm-1", "revenue.recognized", Some("epic-sandbox"),
            json!({"amount": "50.00", "currency": "USD", "product": "prod_ehr"}))).await;
        assert_eq!(s, 202);
        let st = statement(&app, "epic-sandbox", "2026-10").await;
        // Revenue is listed per customer and invoice: each line says who recorded it.
        let line = |customer: Value| st["document"]["lines"].as_array().unwrap().iter()
            .find(|l| l["product"] == "prod_ehr" && l["customer"] == customer).unwrap().clone();
        let billed = line(json!("cus_1"));
        assert_eq!(billed["invoice"], "in_1");
        assert_eq!(billed["recorded_by"], json!([{"kind": "webhook", "reference": "billing", "events": 1}]), "{billed}");
        let by_admin = line(Value::Null);
        assert_eq!(by_admin["recorded_by"], json!([
            {"kind": "admin_key", "reference": by_admin["recorded_by"][0]["reference"], "events": 1},
        ]), "{by_admin}");
        // The CSV says it in words.
        let finance = app.key(Role::Finance, None).await;
        let id = st["id"].as_str().unwrap();
        let csv = app.get(&finance, &format!("/v1/statements/{id}?format=csv")).await.text().await.unwrap();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let col = header.iter().position(|h| *h == "recorded_by").unwrap();
        assert!(csv.contains("1 recorded by the webhook `billing`"), "{csv}");
        assert!(csv.contains("1 recorded with an admin key"), "{csv}");
        assert!(col > 0);
    }
}

#[test]
fn check_config_refuses_what_a_source_or_partner_may_not_record() {
    use partner_gateway::config::{Config, Layer};
    let load = |extra: &str| {
        let layers = vec![
            Layer {
                origin: "partners.toml".into(),
                text: include_str!("../../config/partners.toml").into(),
            },
            Layer {
                origin: "meters.toml".into(),
                text: include_str!("../../config/meters.toml").into(),
            },
            Layer {
                origin: "agreements.toml".into(),
                text: include_str!("../../config/agreements.toml").into(),
            },
            Layer {
                origin: "extra.toml".into(),
                text: extra.into(),
            },
        ];
        match Config::from_layers(layers, Vec::new()) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    assert_eq!(load(""), "");
    // A partner may not claim the gateway's own types.
    let e = load(
        "[[partners]]\nid = \"p1\"\nname = \"P\"\nkind = \"lms\"\nself_reported_types = [\"lti.*\"]\n",
    );
    assert!(
        e.contains("self_reported_types[0]") && e.contains("only the gateway records"),
        "{e}"
    );
    let e = load(
        "[[partners]]\nid = \"p1\"\nname = \"P\"\nkind = \"lms\"\nself_reported_types = [\"*\"]\n",
    );
    assert!(e.contains("self_reported_types[0]"), "{e}");
    // An untrusted source may not map to money, and no source to the gateway's types.
    let source = |trusted: bool, ty: &str| {
        format!(
            "[[partners]]\nid = \"p2\"\nname = \"P\"\nkind = \"other\"\n[[partners.webhook_sources]]\nid = \"s\"\nsigning = \"standard\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\ntrusted = {trusted}\n[[partners.webhook_sources.events]]\nwhen = \"x\"\nevent_type = \"{ty}\"\n"
        )
    };
    let e = load(&source(false, "revenue.recognized"));
    assert!(
        e.contains("events[0].event_type") && e.contains("not trusted for money"),
        "{e}"
    );
    assert_eq!(load(&source(true, "revenue.recognized")), "");
    assert_eq!(load(&source(false, "orders.paid")), "");
    let e = load(&source(true, "smart.launch"));
    assert!(e.contains("only by the gateway"), "{e}");
    // An agreement reading a type its partner reports itself must say what counts.
    let e = load(&SELF_REPORTING.replace("self_reported_events = \"SETTING\"\n", ""));
    assert!(
        e.contains("self_reported_events") && e.contains("include"),
        "{e}"
    );
    assert_eq!(load(&SELF_REPORTING.replace("SETTING", "exclude")), "");
}
