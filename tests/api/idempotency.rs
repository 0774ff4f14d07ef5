//! `Idempotency-Key`: a retried POST runs once, across instances; another request under the
//! same key is 422; a key still running is 409; an abandoned one is taken over.

use partner_gateway::apikeys::Role;
use reqwest::Response;
use serde_json::{Value, json};

use crate::helpers::TestApp;

const PARTNER: &str = "cloud-marketplace";

async fn draft(app: &TestApp, key: &str, period: &str) -> String {
    let r = app
        .client
        .post(app.url("/v1/statements"))
        .bearer_auth(key)
        .json(&json!({"partner": PARTNER, "period": period}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn adjust(
    app: &TestApp,
    key: &str,
    statement: &str,
    idem: Option<&str>,
    body: Value,
) -> Response {
    let mut req = app
        .client
        .post(app.url(&format!("/v1/statements/{statement}/adjustments")))
        .bearer_auth(key)
        .json(&body);
    if let Some(k) = idem {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.unwrap()
}

async fn adjustments(app: &TestApp, key: &str, statement: &str) -> usize {
    let st: Value = app
        .get(key, &format!("/v1/statements/{statement}"))
        .await
        .json()
        .await
        .unwrap();
    st["document"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "adjustment")
        .count()
}

fn credit() -> Value {
    json!({"amount": "-150.00", "reason": "Credit for the outage"})
}

crate::both! {
    async fn a_retried_adjustment_lands_once(app) {
        let key = app.key(Role::Finance, None).await;
        let st = draft(&app, &key, "2026-09").await;
        let first = adjust(&app, &key, &st, Some("adj-0001"), credit()).await;
        assert_eq!(first.status(), 201);
        assert!(first.headers().get("idempotent-replayed").is_none());
        let first_body: Value = first.json().await.unwrap();
        let again = adjust(&app, &key, &st, Some("adj-0001"), credit()).await;
        assert_eq!(again.status(), 201, "the kept answer, status included");
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.headers()["content-type"], "application/json");
        assert_eq!(again.json::<Value>().await.unwrap(), first_body);
        assert_eq!(adjustments(&app, &key, &st).await, 1, "one credit, not two");
        // Without a key, each request runs.
        assert_eq!(adjust(&app, &key, &st, None, credit()).await.status(), 201);
        assert_eq!(adjustments(&app, &key, &st).await, 2);
    }

    async fn the_same_key_for_another_request_is_refused(app) {
        let key = app.key(Role::Finance, None).await;
        let st = draft(&app, &key, "2026-09").await;
        assert_eq!(adjust(&app, &key, &st, Some("adj-0002"), credit()).await.status(), 201);
        let other = adjust(&app, &key, &st, Some("adj-0002"), json!({"amount": "-15.00", "reason": "x"})).await;
        assert_eq!(other.status(), 422);
        let body: Value = other.json().await.unwrap();
        assert_eq!(body["code"], "idempotency_key_reused", "{body}");
        assert!(body["detail"].as_str().unwrap().contains("/adjustments"), "{body}");
        assert_eq!(adjustments(&app, &key, &st).await, 1);
        // Bad keys are named.
        for bad in ["", "with space"] {
            let r = adjust(&app, &key, &st, Some(bad), credit()).await;
            assert_eq!(r.status(), 400, "{bad:?}");
            assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_idempotency_key");
        }
        let long = "k".repeat(256);
        assert_eq!(adjust(&app, &key, &st, Some(&long), credit()).await.status(), 400);
        assert_eq!(adjustments(&app, &key, &st).await, 1);
    }

    async fn keys_belong_to_the_api_key_that_sent_them(app) {
        let alice = app.key(Role::Finance, None).await;
        let bob = app.key(Role::Finance, None).await;
        let st = draft(&app, &alice, "2026-09").await;
        assert_eq!(adjust(&app, &alice, &st, Some("shared-0003"), credit()).await.status(), 201);
        let r = adjust(&app, &bob, &st, Some("shared-0003"), credit()).await;
        assert_eq!(r.status(), 201);
        assert!(r.headers().get("idempotent-replayed").is_none());
        assert_eq!(adjustments(&app, &alice, &st).await, 2);
        // A key on a request that is not authenticated does nothing: 401 as always.
        let r = adjust(&app, "pgw_nonsense", &st, Some("shared-0003"), credit()).await;
        assert_eq!(r.status(), 401);
    }

    async fn a_key_still_running_is_409_and_an_abandoned_one_is_taken_over(app) {
        let key = app.key(Role::Finance, None).await;
        let st = draft(&app, &key, "2026-09").await;
        // Another instance holds the key for this very request.
        let caller: String = partner_gateway::with_db!(app.db(), pool => {
            sqlx::query_scalar("SELECT id FROM api_keys ORDER BY created_at_us DESC LIMIT 1").fetch_one(pool).await
        }).unwrap();
        let path = format!("/v1/statements/{st}/adjustments");
        let body = serde_json::to_vec(&credit()).unwrap();
        let hash = partner_gateway::http::idempotency::request_hash(&reqwest::Method::POST, &path, &body);
        let now = partner_gateway::time::now_micros();
        partner_gateway::with_db!(app.db(), pool => {
            sqlx::query("INSERT INTO idempotency_keys (caller, key, request_hash, method, path, state, created_at_us, locked_until_us, expires_at_us) VALUES ($1, 'busy-0004', $2, 'POST', $3, 'running', $4, $5, $6)")
                .bind(&caller).bind(&hash).bind(&path).bind(now).bind(now + 60_000_000).bind(now + 3_600_000_000)
                .execute(pool).await.map(|r| r.rows_affected())
        }).unwrap();
        let r = app.client.post(app.url(&path)).bearer_auth(&key).header("Idempotency-Key", "busy-0004")
            .header("content-type", "application/json").body(body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 409);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "idempotency_key_in_use");
        assert_eq!(adjustments(&app, &key, &st).await, 0);
        // Its instance died: past the lock, a retry runs, once.
        partner_gateway::with_db!(app.db(), pool => {
            sqlx::query("UPDATE idempotency_keys SET locked_until_us = $1 WHERE key = 'busy-0004'").bind(now - 1).execute(pool).await.map(|r| r.rows_affected())
        }).unwrap();
        for replayed in [false, true] {
            let r = app.client.post(app.url(&path)).bearer_auth(&key).header("Idempotency-Key", "busy-0004")
                .header("content-type", "application/json").body(body.clone()).send().await.unwrap();
            assert_eq!(r.status(), 201);
            assert_eq!(r.headers().get("idempotent-replayed").is_some(), replayed);
        }
        assert_eq!(adjustments(&app, &key, &st).await, 1);
        // An expired key is forgotten: the request runs again.
        partner_gateway::with_db!(app.db(), pool => {
            sqlx::query("UPDATE idempotency_keys SET expires_at_us = $1 WHERE key = 'busy-0004'").bind(now - 1).execute(pool).await.map(|r| r.rows_affected())
        }).unwrap();
        let r = app.client.post(app.url(&path)).bearer_auth(&key).header("Idempotency-Key", "busy-0004")
            .header("content-type", "application/json").body(body).send().await.unwrap();
        assert!(r.headers().get("idempotent-replayed").is_none());
        assert_eq!(adjustments(&app, &key, &st).await, 2);
    }

    // A webhook endpoint's signing secret is shown once; the kept answer holds it, sealed.
    async fn a_kept_answer_holds_no_secret_in_the_clear(app) {
        let admin = app.admin().await;
        let create = || app.client.post(app.url("/v1/webhooks/endpoints")).bearer_auth(&admin)
            .header("Idempotency-Key", "ep-0007")
            .json(&json!({"partner": "epic-sandbox", "url": "https://hooks.example/gw"}));
        let first: Value = create().send().await.unwrap().json().await.unwrap();
        let secret = first["secret"].as_str().unwrap().to_owned();
        let again = create().send().await.unwrap();
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.json::<Value>().await.unwrap()["secret"], secret.as_str());
        let stored: Vec<u8> = partner_gateway::with_db!(app.db(), pool => {
            sqlx::query_scalar("SELECT body FROM idempotency_keys WHERE key = 'ep-0007'").fetch_one(pool).await
        }).unwrap();
        let text = String::from_utf8_lossy(&stored);
        assert!(!text.contains(&secret) && !text.contains("hooks.example"), "sealed: {text}");
    }

    async fn two_instances_share_keys(app) {
        let other = app.another_instance().await;
        let key = app.key(Role::Finance, None).await;
        let st = draft(&app, &key, "2026-09").await;
        assert_eq!(adjust(&app, &key, &st, Some("multi-0005"), credit()).await.status(), 201);
        let r = adjust(&other, &key, &st, Some("multi-0005"), credit()).await;
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["idempotent-replayed"], "true");
        assert_eq!(adjustments(&other, &key, &st).await, 1);
        // Any changing operation, not only adjustments: a draft generated twice.
        let r1 = other.client.post(other.url("/v1/statements")).bearer_auth(&key).header("Idempotency-Key", "gen-0006")
            .json(&json!({"partner": PARTNER, "period": "2026-08"})).send().await.unwrap();
        let r2 = app.client.post(app.url("/v1/statements")).bearer_auth(&key).header("Idempotency-Key", "gen-0006")
            .json(&json!({"partner": PARTNER, "period": "2026-08"})).send().await.unwrap();
        assert_eq!(r1.status(), r2.status());
        assert_eq!(r2.headers()["idempotent-replayed"], "true");
        other.stop().await;
    }
}
