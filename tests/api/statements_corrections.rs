//! Corrections without side effects: a draft's adjustment and a draft itself can be taken
//! back (finance and admin, drafts only); an older period than the latest issued one is
//! refused, naming the later statement.

use partner_gateway::apikeys::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

const PARTNER: &str = "cloud-marketplace";

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    key: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn generate(app: &TestApp, key: &str, period: &str) -> (StatusCode, Value) {
    call(
        app,
        reqwest::Method::POST,
        key,
        "/v1/statements",
        Some(json!({"partner": PARTNER, "period": period})),
    )
    .await
}

fn adjustment_refs(st: &Value) -> Vec<String> {
    st["document"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "adjustment")
        .map(|l| l["reference"].as_str().unwrap().to_owned())
        .collect()
}

crate::both! {
    async fn a_drafts_adjustment_is_taken_back_and_the_total_with_it(app) {
        let key = app.key(Role::Finance, None).await;
        let partner = app.partner_key(PARTNER).await;
        let (_, st) = generate(&app, &key, "2026-09").await;
        let id = st["id"].as_str().unwrap().to_owned();
        let total = st["document"]["total"].clone();
        let adjust = |amount: &str| json!({"amount": amount, "reason": "credit"});
        let (s, _) = call(&app, reqwest::Method::POST, &key, &format!("/v1/statements/{id}/adjustments"), Some(adjust("-150.00"))).await;
        assert_eq!(s, 201);
        let (_, st) = call(&app, reqwest::Method::POST, &key, &format!("/v1/statements/{id}/adjustments"), Some(adjust("-150.00"))).await;
        let refs = adjustment_refs(&st);
        assert_eq!(refs.len(), 2, "the retried credit, landed twice");
        // Taken back: the line and its amount go.
        let path = format!("/v1/statements/{id}/adjustments/{}", refs[1]);
        assert_eq!(call(&app, reqwest::Method::DELETE, &partner, &path, None).await.0, 403);
        let (s, st) = call(&app, reqwest::Method::DELETE, &key, &path, None).await;
        assert_eq!(s, 200, "{st}");
        assert_eq!(adjustment_refs(&st), [refs[0].clone()]);
        assert_eq!(st["document"]["total"], "-150.00");
        let (s, body) = call(&app, reqwest::Method::DELETE, &key, &path, None).await;
        assert_eq!(s, 404, "{body}");
        assert!(body["detail"].as_str().unwrap().contains(&refs[1]), "{body}");
        let (s, st) = call(&app, reqwest::Method::DELETE, &key, &format!("/v1/statements/{id}/adjustments/{}", refs[0]), None).await;
        assert_eq!(s, 200);
        assert_eq!(st["document"]["total"], total);
        // Issued: its adjustments stay.
        call(&app, reqwest::Method::POST, &key, &format!("/v1/statements/{id}/adjustments"), Some(adjust("-5.00"))).await;
        let (s, st) = call(&app, reqwest::Method::POST, &key, &format!("/v1/statements/{id}/finalize"), Some(json!({}))).await;
        assert_eq!(s, 200, "{st}");
        let kept = adjustment_refs(&st);
        let (s, body) = call(&app, reqwest::Method::DELETE, &key, &format!("/v1/statements/{id}/adjustments/{}", kept[0]), None).await;
        assert_eq!(s, 409, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("not a draft"), "{body}");
        let (_, st) = call(&app, reqwest::Method::GET, &key, &format!("/v1/statements/{id}"), None).await;
        assert_eq!(adjustment_refs(&st), kept);
    }

    async fn a_draft_is_deleted_and_an_issued_statement_is_not(app) {
        let key = app.key(Role::Finance, None).await;
        let partner = app.partner_key(PARTNER).await;
        let (_, st) = generate(&app, &key, "2026-09").await;
        let id = st["id"].as_str().unwrap().to_owned();
        call(&app, reqwest::Method::POST, &key, &format!("/v1/statements/{id}/adjustments"), Some(json!({"amount": "-1.00", "reason": "x"}))).await;
        assert_eq!(call(&app, reqwest::Method::DELETE, &partner, &format!("/v1/statements/{id}"), None).await.0, 403);
        assert_eq!(call(&app, reqwest::Method::DELETE, &key, &format!("/v1/statements/{id}"), None).await.0, 204);
        assert_eq!(call(&app, reqwest::Method::GET, &key, &format!("/v1/statements/{id}"), None).await.0, 404);
        assert_eq!(call(&app, reqwest::Method::DELETE, &key, &format!("/v1/statements/{id}"), None).await.0, 404);
        // The period can be drafted again, from scratch.
        let (s, again) = generate(&app, &key, "2026-09").await;
        assert_eq!(s, 201, "{again}");
        assert!(adjustment_refs(&again).is_empty());
        let again_id = again["id"].as_str().unwrap();
        let (s, _) = call(&app, reqwest::Method::POST, &key, &format!("/v1/statements/{again_id}/finalize"), Some(json!({}))).await;
        assert_eq!(s, 200);
        let (s, body) = call(&app, reqwest::Method::DELETE, &key, &format!("/v1/statements/{again_id}"), None).await;
        assert_eq!(s, 409, "{body}");
        assert_eq!(call(&app, reqwest::Method::GET, &key, &format!("/v1/statements/{again_id}"), None).await.0, 200);
    }

    async fn a_replacement_carries_the_voided_statements_adjustments_visibly(app) {
        let key = app.key(Role::Finance, None).await;
        let (_, st) = generate(&app, &key, "2026-09").await;
        let id = st["id"].as_str().unwrap().to_owned();
        call(&app, reqwest::Method::POST, &key, &format!("/v1/statements/{id}/adjustments"), Some(json!({"amount": "-150.00", "reason": "Credit for the outage"}))).await;
        let (s, fin) = call(&app, reqwest::Method::POST, &key, &format!("/v1/statements/{id}/finalize"), Some(json!({}))).await;
        assert_eq!(s, 200, "{fin}");
        let number = fin["number_display"].as_str().unwrap().to_owned();
        let (s, _) = call(&app, reqwest::Method::POST, &key, &format!("/v1/statements/{id}/void"), Some(json!({"reason": "wrong bank details"}))).await;
        assert_eq!(s, 200);
        let (s, rep) = generate(&app, &key, "2026-09").await;
        assert_eq!(s, 201, "{rep}");
        assert_eq!(rep["replaces"], id.as_str(), "{rep}");
        let lines: Vec<&Value> = rep["document"]["lines"].as_array().unwrap().iter().filter(|l| l["kind"] == "adjustment").collect();
        assert_eq!(lines.len(), 1, "{rep}");
        assert_eq!(lines[0]["amount"], "-150.00");
        let reason = lines[0]["label"].as_str().or(lines[0]["description"].as_str()).unwrap_or_default().to_owned();
        assert!(rep.to_string().contains(&format!("carried over from voided statement {number}")), "{reason} {rep}");
        assert_eq!(rep["document"]["total"], fin["document"]["total"]);
        // Or not, when finance says so.
        let rep_id = rep["id"].as_str().unwrap();
        assert_eq!(call(&app, reqwest::Method::DELETE, &key, &format!("/v1/statements/{rep_id}"), None).await.0, 204);
        let (s, bare) = call(&app, reqwest::Method::POST, &key, "/v1/statements", Some(json!({"partner": PARTNER, "period": "2026-09", "carry_adjustments": false}))).await;
        assert_eq!(s, 201, "{bare}");
        assert!(adjustment_refs(&bare).is_empty(), "{bare}");
    }

    async fn an_older_period_than_an_issued_one_is_refused_naming_it(app) {
        let key = app.key(Role::Finance, None).await;
        let (_, oct) = generate(&app, &key, "2026-10").await;
        let oct_id = oct["id"].as_str().unwrap().to_owned();
        let (s, fin) = call(&app, reqwest::Method::POST, &key, &format!("/v1/statements/{oct_id}/finalize"), Some(json!({}))).await;
        assert_eq!(s, 200, "{fin}");
        let (s, body) = generate(&app, &key, "2026-09").await;
        assert_eq!(s, 409, "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("2026-10") && detail.contains(&oct_id) && detail.contains("next statement"), "{detail}");
        // Nothing was stored.
        let (_, list) = call(&app, reqwest::Method::GET, &key, "/v1/statements?period=2026-09", None).await;
        assert_eq!(list.to_string().matches("stmt_").count(), 0, "{list}");
        // The next period is fine.
        assert_eq!(generate(&app, &key, "2026-11").await.0, 201);
    }
}
