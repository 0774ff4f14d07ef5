//! Webhooks over real HTTP, each on SQLite and PostgreSQL: endpoints, signed delivery to a
//! loopback receiver (checked with the project's verifier; `scripts/interop-webhooks.sh`
//! checks with independent ones), retries, Retry-After, 410, timeouts, ordering, rate
//! limits across two instances, rotation, replay, retention, the address policy, and
//! inbound webhooks into the ledger.

use std::time::{Duration, Instant};

use chrono::Utc;
use partner_gateway::apikeys::Role;
use partner_gateway::jobs::Handlers;
use partner_gateway::webhooks::signature::{self, Headers, VerifyingKey};
use partner_sim::receiver::{Receiver, Reply, Request};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

/// Loopback allowed, fast retries, short timeouts.
const FAST: &str = "[jobs]\nenabled = false\n[outbound]\nallow_http = true\nprivate_networks = [\"127.0.0.1\"]\n\
[webhooks]\npoll_interval_ms = 20\nretry_schedule_secs = [1, 1, 1]\nretry_jitter_percent = 0\n\
timeout_secs = 2\nthresholds_interval_secs = 3600\nrotation_overlap_secs = 3600\n";

async fn spawn(backend: Backend, extra: &str) -> Option<TestApp> {
    TestApp::spawn_with(backend, &format!("{FAST}{extra}"), Handlers::new()).await
}

const PARTNER: &str = "canvas-sandbox";

async fn create(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/v1/webhooks/endpoints"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn endpoint(app: &TestApp, body: Value) -> Value {
    let (status, v) = create(app, &app.admin().await, body).await;
    assert_eq!(status, 201, "{v}");
    v
}

/// Emit through the library call, as the other areas do.
async fn emit(app: &TestApp, partner: Option<&str>, ty: &str, data: Value) -> String {
    let mut tx = app.db().begin().await.unwrap();
    let id = partner_gateway::webhooks::emit(&mut tx, partner, ty, &data, Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

fn verify(req: &Request, key: &str) -> Result<(), signature::VerifyError> {
    let keys = [VerifyingKey::decode(key).unwrap()];
    let h = Headers {
        id: req.header("webhook-id"),
        timestamp: req.header("webhook-timestamp"),
        signature: req.header("webhook-signature"),
    };
    signature::verify(h, &req.body, &keys, 300, Utc::now()).map(|_| ())
}

async fn get_json(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    let r = app.get(key, path).await;
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Poll the message until its delivery to `endpoint` reaches `state`.
async fn wait_state(app: &TestApp, key: &str, msg: &str, endpoint: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, m) = get_json(app, key, &format!("/v1/webhooks/messages/{msg}")).await;
        let found = m["deliveries"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["endpoint_id"] == endpoint && d["state"] == state);
        if found {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "delivery never reached {state}: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn attempts(app: &TestApp, key: &str, msg: &str) -> Vec<Value> {
    let (s, v) = get_json(app, key, &format!("/v1/webhooks/messages/{msg}/attempts")).await;
    assert_eq!(s, 200, "{v}");
    let list = v["data"].as_array().cloned().unwrap_or_default();
    for a in &list {
        assert!(a["id"].as_str().unwrap().starts_with("att_"), "{a}");
        assert!(
            a["delivery_id"].as_str().unwrap().starts_with("dlv_"),
            "{a}"
        );
        assert_eq!(a["message_id"], msg);
    }
    list
}

both_backends! {
    async fn an_event_reaches_the_receiver_signed_v1_and_v1a(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let rx = Receiver::start().await.unwrap();
        let admin = app.admin().await;
        let v1 = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/v1"), "description": "hmac"})).await;
        let v1a = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/v1a"), "scheme": "v1a"})).await;
        let secret = v1["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("whsec_"));
        assert!(v1a.get("secret").is_none(), "the ed25519 private key never leaves the gateway");
        let public = v1a["public_key"].as_str().unwrap().to_owned();
        assert!(public.starts_with("whpk_"));

        let data = json!({"launch_id": "l-1", "note": "caf\u{e9} \u{2603}"});
        let msg = emit(&app, Some(PARTNER), "launch.completed", data.clone()).await;
        assert_eq!(rx.wait_for(2, Duration::from_secs(10)).await, 2);
        for req in rx.received() {
            assert_eq!(req.header("webhook-id"), Some(msg.as_str()));
            assert_eq!(req.header("content-type"), Some("application/json"));
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            assert_eq!(body["type"], "launch.completed");
            assert_eq!(body["data"], data);
            assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
            let key = if req.path == "/v1" { &secret } else { &public };
            verify(&req, key).unwrap();
            // Signed over the exact bytes: one changed byte fails.
            let mut tampered = req.clone();
            tampered.body = axum::body::Bytes::from(String::from_utf8_lossy(&req.body).replace("l-1", "l-2"));
            assert_eq!(verify(&tampered, key), Err(signature::VerifyError::NoMatch));
        }
        let ids = [v1["id"].as_str().unwrap(), v1a["id"].as_str().unwrap()];
        for ep in ids {
            wait_state(&app, &admin, &msg, ep, "delivered").await;
        }
        // Each delivery is metered once for the partner.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n: i64 = partner_gateway::with_db!(app.db(), c => sqlx::query_scalar(
                "SELECT COUNT(*) FROM usage_events WHERE type = 'webhook.delivered' AND partner_id = $1")
                .bind(PARTNER).fetch_one(c).await).unwrap();
            if n == 2 { break; }
            assert!(Instant::now() < deadline, "webhook.delivered events: {n}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn endpoints_are_managed_by_their_owner_only(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let admin = app.admin().await;
        let mine = app.partner_key(PARTNER).await;
        let other = app.partner_key("moodle-sandbox").await;
        let finance = app.key(Role::Finance, None).await;
        let app_key = app.key(Role::App, None).await;

        let (s, e) = create(&app, &mine, json!({"url": "http://127.0.0.1:9/hook", "event_types": ["grade.*"], "rate_limit": 5})).await;
        assert_eq!(s, 201, "{e}");
        assert_eq!(e["partner"], PARTNER);
        assert_eq!(e["event_types"], json!(["grade.*"]));
        let id = e["id"].as_str().unwrap().to_owned();
        let path = format!("/v1/webhooks/endpoints/{id}");

        // Read back: never the secret.
        let (s, got) = get_json(&app, &mine, &path).await;
        assert_eq!(s, 200);
        assert!(got.get("secret").is_none());
        // Another partner cannot see or touch it; finance has no business here.
        assert_eq!(app.get(&other, &path).await.status(), 404);
        assert_eq!(app.get(&finance, &path).await.status(), 403);
        let (s, _) = create(&app, &other, json!({"partner": PARTNER, "url": "http://127.0.0.1:9/x"})).await;
        assert_eq!(s, 403);
        // App keys manage the app's endpoints, which hear every partner.
        let (s, ae) = create(&app, &app_key, json!({"url": "http://127.0.0.1:9/app"})).await;
        assert_eq!(s, 201, "{ae}");
        assert_eq!(ae["partner"], Value::Null);
        assert_eq!(app.get(&app_key, &path).await.status(), 404);
        // Admin must say whose.
        let (s, body) = create(&app, &admin, json!({"url": "http://127.0.0.1:9/x"})).await;
        assert_eq!(s, 400, "{body}");

        // Update: filter, rate limit off, disable.
        let r = app.client.patch(app.url(&path)).bearer_auth(&mine)
            .json(&json!({"event_types": ["grade.delivered", "statement.*"], "rate_limit": null, "enabled": false}))
            .send().await.unwrap();
        assert_eq!(r.status(), 200);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["rate_limit"], Value::Null);
        assert_eq!(e["enabled"], false);
        assert!(e["disabled_reason"].as_str().unwrap().contains("disabled by key"));

        // Bad fields are named.
        let (s, body) = create(&app, &mine, json!({"url": "http://127.0.0.1:9/x", "event_types": ["grade..x", "*"], "rate_limit": 0})).await;
        assert_eq!(s, 400, "{body}");
        assert_eq!(body["code"], "validation_failed");
        let fields: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["event_types", "event_types", "rate_limit"]);
        // A filter that names nothing the gateway sends would never receive anything.
        let (s, body) = create(&app, &mine, json!({"url": "http://127.0.0.1:9/x", "event_types": ["grades.*"]})).await;
        assert_eq!(s, 400, "{body}");
        let reason = body["errors"][0]["reason"].as_str().unwrap();
        assert!(reason.contains("grades.*") && reason.ends_with("the nearest is grade.*"), "{reason}");
        let (s, body) = create(&app, &mine, json!({"url": "ftp://example.com/x"})).await;
        assert_eq!(s, 400, "{body}");

        // Listing is scoped.
        let (_, list) = get_json(&app, &mine, "/v1/webhooks/endpoints").await;
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
        let (_, list) = get_json(&app, &admin, "/v1/webhooks/endpoints").await;
        assert_eq!(list["data"].as_array().unwrap().len(), 2);

        // Delete.
        let r = app.client.delete(app.url(&path)).bearer_auth(&mine).send().await.unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(app.get(&mine, &path).await.status(), 404);
    }

    async fn filters_pick_the_endpoints_and_app_endpoints_hear_every_partner(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let rx = Receiver::start().await.unwrap();
        endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/grades"), "event_types": ["grade.*"]})).await;
        endpoint(&app, json!({"partner": "moodle-sandbox", "url": rx.url("/moodle")})).await;
        endpoint(&app, json!({"app": true, "url": rx.url("/app"), "event_types": ["launch.completed"]})).await;
        emit(&app, Some(PARTNER), "launch.completed", json!({})).await;
        emit(&app, Some(PARTNER), "grade.delivered", json!({})).await;
        emit(&app, Some(PARTNER), "grades.other", json!({})).await;
        assert_eq!(rx.wait_for(2, Duration::from_secs(10)).await, 2);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut paths: Vec<String> = rx.received().iter().map(|r| r.path.clone()).collect();
        paths.sort();
        assert_eq!(paths, ["/app", "/grades"]);
    }

    async fn failures_retry_until_a_2xx_and_the_attempt_log_tells_the_story(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let admin = app.admin().await;
        let rx = Receiver::start().await.unwrap();
        rx.script([Reply::Body(500, "boom".into()), Reply::Status(404)]);
        let e = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/h")})).await;
        let ep = e["id"].as_str().unwrap();
        let msg = emit(&app, Some(PARTNER), "grade.failed", json!({"score_id": "s"})).await;
        wait_state(&app, &admin, &msg, ep, "delivered").await;
        let reqs = rx.received();
        assert_eq!(reqs.len(), 3);
        // The same webhook-id every time; a fresh timestamp per attempt.
        assert!(reqs.iter().all(|r| r.header("webhook-id") == Some(msg.as_str())));
        let gap = reqs[1].at - reqs[0].at;
        assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
        let log = attempts(&app, &admin, &msg).await;
        let statuses: Vec<i64> = log.iter().map(|a| a["status"].as_i64().unwrap()).collect();
        assert_eq!(statuses, [500, 404, 200]);
        assert_eq!(log[0]["response_body"], "boom");
        assert_eq!(log[0]["outcome"], "failed");
        assert!(log[0]["next_attempt_at"].is_string());
        assert_eq!(log[2]["outcome"], "succeeded");
        assert!(log[0]["response_headers"]["content-length"].is_string());
    }

    async fn retry_after_is_honoured_and_timeouts_are_failures(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let admin = app.admin().await;
        let rx = Receiver::start().await.unwrap();
        rx.script([Reply::RetryAfter(429, "3".into()), Reply::Delay(Duration::from_secs(3))]);
        let e = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/h")})).await;
        let ep = e["id"].as_str().unwrap();
        let msg = emit(&app, Some(PARTNER), "grade.delivered", json!({})).await;
        wait_state(&app, &admin, &msg, ep, "delivered").await;
        let reqs = rx.received();
        assert_eq!(reqs.len(), 3);
        let gap = reqs[1].at - reqs[0].at;
        assert!(gap >= Duration::from_millis(2900), "Retry-After: 3 but retried after {gap:?}");
        let log = attempts(&app, &admin, &msg).await;
        assert_eq!(log[0]["status"], 429);
        assert_eq!(log[1]["status"], Value::Null);
        assert!(log[1]["error"].as_str().unwrap().contains("timed out"), "{}", log[1]);
    }

    async fn gone_disables_the_endpoint_and_tells_the_partners_other_endpoints(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let admin = app.admin().await;
        let rx = Receiver::start().await.unwrap();
        rx.script([Reply::Status(410)]);
        let gone = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/gone")})).await;
        let gone_id = gone["id"].as_str().unwrap().to_owned();
        let other = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/other"), "event_types": ["webhook.*"]})).await;
        let msg = emit(&app, Some(PARTNER), "grade.delivered", json!({})).await;
        assert_eq!(rx.wait_for(2, Duration::from_secs(10)).await, 2);
        let told = rx.received().into_iter().find(|r| r.path == "/other").unwrap();
        verify(&told, other["secret"].as_str().unwrap()).unwrap();
        let body: Value = serde_json::from_slice(&told.body).unwrap();
        assert_eq!(body["type"], "webhook.endpoint.disabled");
        assert_eq!(body["data"]["endpoint_id"], gone_id.as_str());
        assert_eq!(body["data"]["reason"], "the endpoint answered 410 Gone");
        let (_, e) = get_json(&app, &admin, &format!("/v1/webhooks/endpoints/{gone_id}")).await;
        assert_eq!(e["enabled"], false);
        // The message waits, not lost: enabling the endpoint again delivers it.
        let r = app.client.patch(app.url(&format!("/v1/webhooks/endpoints/{gone_id}"))).bearer_auth(&admin)
            .json(&json!({"enabled": true})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        wait_state(&app, &admin, &msg, &gone_id, "delivered").await;
        let log = attempts(&app, &admin, &msg).await;
        let outcomes: Vec<&str> = log.iter().filter(|a| a["endpoint_id"] == gone_id.as_str()).map(|a| a["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, ["gone", "succeeded"]);
    }

    async fn an_exhausted_message_is_replayed_with_its_webhook_id(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let admin = app.admin().await;
        let rx = Receiver::start().await.unwrap();
        rx.set_default(Some(Reply::Status(503)));
        let e = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/h")})).await;
        let ep = e["id"].as_str().unwrap();
        let since = Utc::now().to_rfc3339();
        let msg = emit(&app, Some(PARTNER), "statement.finalized", json!({"n": 1})).await;
        let m = wait_state(&app, &admin, &msg, ep, "failed").await;
        assert_eq!(m["deliveries"][0]["attempts"], 4, "{m}");
        assert_eq!(rx.count(), 4);
        let (_, failed) = get_json(&app, &admin, &format!("/v1/webhooks/messages?endpoint={ep}&state=failed")).await;
        assert_eq!(failed["data"][0]["id"], msg.as_str());
        // The receiver is fixed: replay everything that failed since then.
        rx.set_default(None);
        let r = app.client.post(app.url(&format!("/v1/webhooks/endpoints/{ep}/replay"))).bearer_auth(&admin)
            .json(&json!({"since": since})).send().await.unwrap();
        assert_eq!(r.status(), 202);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["replayed"], 1);
        wait_state(&app, &admin, &msg, ep, "delivered").await;
        let last = rx.received().pop().unwrap();
        assert_eq!(last.header("webhook-id"), Some(msg.as_str()));
        verify(&last, e["secret"].as_str().unwrap()).unwrap();
        // Replaying one message sends it again with the same id.
        let r = app.client.post(app.url(&format!("/v1/webhooks/messages/{msg}/replay"))).bearer_auth(&admin)
            .send().await.unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(rx.wait_for(6, Duration::from_secs(10)).await, 6);
        assert_eq!(rx.received().pop().unwrap().header("webhook-id"), Some(msg.as_str()));
    }

    // Replaying a message whose delivery waits for a retry sends it now, once: the retry
    // is superseded, not kept beside it (the same webhook-id would arrive again later).
    async fn a_replay_supersedes_the_pending_retry(backend) {
        let config = FAST.replace("retry_schedule_secs = [1, 1, 1]", "retry_schedule_secs = [600, 600]");
        let Some(app) = TestApp::spawn_with(backend, &config, Handlers::new()).await else { return };
        let admin = app.admin().await;
        let rx = Receiver::start().await.unwrap();
        rx.script([Reply::Status(500)]);
        let e = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/h")})).await;
        let ep = e["id"].as_str().unwrap();
        let msg = emit(&app, Some(PARTNER), "statement.finalized", json!({"n": 2})).await;
        assert_eq!(rx.wait_for(1, Duration::from_secs(10)).await, 1);
        let m = wait_state(&app, &admin, &msg, ep, "pending").await;
        assert_eq!(m["deliveries"][0]["attempts"], 1, "{m}");
        let r = app.client.post(app.url(&format!("/v1/webhooks/messages/{msg}/replay"))).bearer_auth(&admin)
            .send().await.unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(r.json::<Value>().await.unwrap()["replayed"], 1);
        let m = wait_state(&app, &admin, &msg, ep, "delivered").await;
        let deliveries: Vec<&Value> = m["deliveries"].as_array().unwrap().iter().filter(|d| d["endpoint_id"] == ep).collect();
        assert_eq!(deliveries.len(), 1, "one delivery, brought forward: {m}");
        assert_eq!(rx.count(), 2, "the failed try and the replay; no retry left to come");
    }

    async fn an_ordered_endpoint_gets_messages_in_creation_order(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let admin = app.admin().await;
        let rx = Receiver::start().await.unwrap();
        rx.script([Reply::Status(500), Reply::Status(500)]);
        let e = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/h"), "ordered": true})).await;
        let ep = e["id"].as_str().unwrap();
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(emit(&app, Some(PARTNER), "grade.delivered", json!({"i": i})).await);
        }
        for id in &ids {
            wait_state(&app, &admin, id, ep, "delivered").await;
        }
        let seen: Vec<String> = rx.received().iter().map(|r| r.header("webhook-id").unwrap().to_owned()).collect();
        // The first is tried three times; nothing overtakes it.
        let mut expected = vec![ids[0].clone(), ids[0].clone(), ids[0].clone()];
        expected.extend(ids[1..].iter().cloned());
        assert_eq!(seen, expected);
    }

    async fn rotation_signs_with_the_old_and_new_secret_during_the_overlap(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let admin = app.admin().await;
        let rx = Receiver::start().await.unwrap();
        let e = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/h")})).await;
        let ep = e["id"].as_str().unwrap();
        let old = e["secret"].as_str().unwrap().to_owned();
        let r = app.client.post(app.url(&format!("/v1/webhooks/endpoints/{ep}/rotate-secret"))).bearer_auth(&admin)
            .send().await.unwrap();
        assert_eq!(r.status(), 200);
        let rotated: Value = r.json().await.unwrap();
        let new = rotated["secret"].as_str().unwrap().to_owned();
        assert_ne!(old, new);
        emit(&app, Some(PARTNER), "grade.delivered", json!({})).await;
        assert_eq!(rx.wait_for(1, Duration::from_secs(10)).await, 1);
        let req = &rx.received()[0];
        assert_eq!(req.header("webhook-signature").unwrap().split(' ').count(), 2);
        verify(req, &old).unwrap();
        verify(req, &new).unwrap();
    }

    async fn the_address_policy_refuses_private_targets_and_redirects_are_not_followed(backend) {
        // Plain http allowed (as in a sandbox), private networks not.
        let extra = "[jobs]\nenabled = false\n[outbound]\nallow_http = true\n";
        let Some(app) = TestApp::spawn_with(backend, extra, Handlers::new()).await else { return };
        let admin = app.admin().await;
        let cases = [
            "http://127.0.0.1:8080/hook",
            "http://10.1.2.3/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/hook",
            "http://localhost/hook",
        ];
        for url in cases {
            let (s, body) = create(&app, &admin, json!({"partner": PARTNER, "url": url})).await;
            assert_eq!(s, 400, "{url}: {body}");
            assert_eq!(body["code"], "url_refused", "{url}: {body}");
            assert!(body["detail"].as_str().unwrap().contains("non-public address"), "{url}: {body}");
        }
        // A host name that resolves to a loopback address (from /etc/hosts).
        if let Some(name) = loopback_name() {
            let (s, body) = create(&app, &admin, json!({"partner": PARTNER, "url": format!("http://{name}/hook")})).await;
            assert_eq!(s, 400, "{name}: {body}");
            assert!(body["detail"].as_str().unwrap().contains("resolves to"), "{body}");
        }
        drop(app);
        // A redirect (here to the metadata address) is a failed attempt, never followed.
        let Some(app) = spawn(backend, "").await else { return };
        let admin = app.admin().await;
        let rx = Receiver::start().await.unwrap();
        rx.script([Reply::Redirect("http://169.254.169.254/latest/meta-data/".into())]);
        let e = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/h")})).await;
        let ep = e["id"].as_str().unwrap();
        let msg = emit(&app, Some(PARTNER), "grade.delivered", json!({})).await;
        wait_state(&app, &admin, &msg, ep, "delivered").await;
        let log = attempts(&app, &admin, &msg).await;
        assert_eq!(log[0]["status"], 302);
        assert!(log[0]["error"].as_str().unwrap().contains("redirects are not followed"));
        assert_eq!(rx.count(), 2);
    }

    async fn two_instances_share_one_rate_limit(backend) {
        let Some(a) = spawn(backend, "").await else { return };
        let b = a.another_instance_with(FAST).await;
        let rx = Receiver::start().await.unwrap();
        let e = endpoint(&a, json!({"partner": PARTNER, "url": rx.url("/h"), "rate_limit": 5})).await;
        let _ = e;
        for i in 0..20 {
            emit(&a, Some(PARTNER), "grade.delivered", json!({"i": i})).await;
        }
        assert_eq!(rx.wait_for(20, Duration::from_secs(20)).await, 20);
        let times: Vec<Instant> = rx.received().iter().map(|r| r.at).collect();
        // Starts are 200 ms apart whoever sends; allow 50 ms of arrival jitter.
        for w in times.windows(6) {
            let span = w[5] - w[0];
            assert!(span >= Duration::from_millis(950), "6 deliveries within {span:?}");
        }
        let total = *times.last().unwrap() - times[0];
        assert!(total >= Duration::from_millis(3700), "20 deliveries at 5/s took {total:?}");
        drop(b);
    }

    async fn purged_messages_cannot_be_replayed(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let admin = app.admin().await;
        let rx = Receiver::start().await.unwrap();
        let e = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/h")})).await;
        let ep = e["id"].as_str().unwrap();
        let msg = emit(&app, Some(PARTNER), "grade.delivered", json!({"x": 1})).await;
        wait_state(&app, &admin, &msg, ep, "delivered").await;
        let later = Utc::now() + chrono::Duration::seconds(1);
        let n = partner_gateway::webhooks::store::purge_before(app.db(), later, Utc::now()).await.unwrap();
        assert_eq!(n, 1);
        let (_, m) = get_json(&app, &admin, &format!("/v1/webhooks/messages/{msg}")).await;
        assert_eq!(m["payload"], Value::Null);
        assert!(m["purged_at"].is_string());
        let r = app.client.post(app.url(&format!("/v1/webhooks/messages/{msg}/replay"))).bearer_auth(&admin)
            .send().await.unwrap();
        assert_eq!(r.status(), 410);
    }

    async fn partners_see_only_their_messages(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let mine = app.partner_key(PARTNER).await;
        let other = app.partner_key("moodle-sandbox").await;
        let msg = emit(&app, Some(PARTNER), "grade.delivered", json!({})).await;
        emit(&app, Some("moodle-sandbox"), "grade.delivered", json!({})).await;
        let (_, list) = get_json(&app, &mine, "/v1/webhooks/messages").await;
        let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [msg.as_str()]);
        assert_eq!(app.get(&other, &format!("/v1/webhooks/messages/{msg}")).await.status(), 404);
        let (s, _) = get_json(&app, &mine, "/v1/webhooks/messages?partner=moodle-sandbox").await;
        assert_eq!(s, 403);
        let (s, cat) = get_json(&app, &mine, "/v1/webhooks/event-types").await;
        assert_eq!(s, 200);
        assert_eq!(cat["data"].as_array().unwrap().len(), 10);
    }

    async fn inbound_billing_webhooks_feed_the_ledger_once(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let secret = b"sandbox-billing-webhook-secret";
        let url = app.url("/webhooks/in/epic-sandbox/billing");
        let invoice = |id: &str, cents: i64| json!({
            "id": id, "type": "invoice.paid", "created": Utc::now().timestamp(),
            "data": {"object": {"customer": "cus_1", "amount_paid": cents, "currency": "usd",
                     "lines": {"data": [{"price": {"product": "prod_ehr"}}]}}}
        }).to_string();
        let post = |body: String, header: Option<String>| {
            let mut r = app.client.post(&url).header("content-type", "application/json").body(body);
            if let Some(h) = header { r = r.header("Billing-Signature", h); }
            r.send()
        };
        let sign = |body: &str, ts: i64| signature::timestamped_hmac_header(secret, ts, body.as_bytes());
        let now = Utc::now().timestamp();

        // Good: one revenue.recognized event in major units.
        let body = invoice("in_1", 129_999);
        let r = post(body.clone(), Some(sign(&body, now))).await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "accepted", "{v}");
        let data: String = partner_gateway::with_db!(app.db(), c => sqlx::query_scalar(
            "SELECT CAST(data AS TEXT) FROM usage_events WHERE event_id = 'in_1'").fetch_one(c).await).unwrap();
        let data: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(data["amount"], "1299.99");
        assert_eq!(data["currency"], "USD");
        // Replayed: acknowledged, not stored twice.
        let r = post(body.clone(), Some(sign(&body, now))).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "duplicate");
        let before = app.ledger_count().await;
        // Tampered, stale, future, unsigned: refused, nothing written.
        let forged = invoice("in_2", 999_999);
        let r = post(forged.clone(), Some(sign(&body, now))).await.unwrap();
        assert_eq!(r.status(), 401);
        let stale = invoice("in_3", 100);
        let r = post(stale.clone(), Some(sign(&stale, now - 600))).await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.text().await.unwrap().contains("older than allowed"));
        let r = post(stale.clone(), Some(sign(&stale, now + 600))).await.unwrap();
        assert_eq!(r.status(), 401);
        let r = post(stale.clone(), None).await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.text().await.unwrap().contains("Billing-Signature"));
        let r = post(stale.clone(), Some("garbage".into())).await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(app.ledger_count().await, before);
        // Unknown source.
        let r = app.client.post(app.url("/webhooks/in/epic-sandbox/nope")).body("{}").send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("no inbound webhook source"));
        // A type with no mapping is acknowledged and ignored.
        let other = json!({"id": "evt_9", "type": "customer.created", "created": now}).to_string();
        let r = post(other.clone(), Some(sign(&other, now))).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "ignored");
        assert_eq!(app.ledger_count().await, before);
    }

    async fn an_endpoint_failing_for_the_whole_window_is_disabled(backend) {
        let Some(app) = spawn(backend, "disable_after_failing_secs = 2\n").await else { return };
        let admin = app.admin().await;
        let rx = Receiver::start().await.unwrap();
        let bad = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/bad"), "event_types": ["grade.*"]})).await;
        let bad_id = bad["id"].as_str().unwrap().to_owned();
        endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/told"), "event_types": ["webhook.endpoint.disabled"]})).await;
        rx.set_default(Some(Reply::Status(500)));
        emit(&app, Some(PARTNER), "grade.delivered", json!({})).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, e) = get_json(&app, &admin, &format!("/v1/webhooks/endpoints/{bad_id}")).await;
            if e["enabled"] == false {
                assert!(e["disabled_reason"].as_str().unwrap().contains("failing continuously since"), "{e}");
                break;
            }
            assert!(Instant::now() < deadline, "never disabled: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The other endpoint is told (the receiver now answers 200).
        rx.set_default(None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !rx.received().iter().any(|r| r.path == "/told") {
            assert!(Instant::now() < deadline, "the partner's other endpoint was not told");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let told = rx.received().into_iter().find(|r| r.path == "/told").unwrap();
        let body: Value = serde_json::from_slice(&told.body).unwrap();
        assert_eq!(body["data"]["endpoint_id"], bad_id.as_str());
    }

    async fn finalizing_a_statement_emits_statement_finalized(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let admin = app.admin().await;
        let finance = app.key(Role::Finance, None).await;
        let rx = Receiver::start().await.unwrap();
        let e = endpoint(&app, json!({"partner": "northwind-consulting", "url": rx.url("/fin"), "event_types": ["statement.*"]})).await;
        let r = app.client.post(app.url("/v1/statements")).bearer_auth(&finance)
            .json(&json!({"partner": "northwind-consulting", "period": "2026-10"})).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let st: Value = r.json().await.unwrap();
        let id = st["id"].as_str().unwrap();
        let r = app.client.post(app.url(&format!("/v1/statements/{id}/finalize"))).bearer_auth(&finance)
            .json(&json!({})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let issued: Value = r.json().await.unwrap();
        assert_eq!(rx.wait_for(1, Duration::from_secs(10)).await, 1);
        let req = &rx.received()[0];
        verify(req, e["secret"].as_str().unwrap()).unwrap();
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["type"], "statement.finalized");
        assert_eq!(body["data"]["statement_id"], id);
        assert_eq!(body["data"]["number"], issued["number"]);
        assert_eq!(body["data"]["hash"], issued["hash"]);
        assert_eq!(body["data"]["period"], "2026-10");
        let (_, list) = get_json(&app, &admin, "/v1/webhooks/messages?type=statement.finalized").await;
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
    }

    async fn emitting_is_part_of_the_callers_transaction(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let rx = Receiver::start().await.unwrap();
        endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/h")})).await;
        let mut tx = app.db().begin().await.unwrap();
        partner_gateway::webhooks::emit(&mut tx, Some(PARTNER), "grade.delivered", &json!({}), Utc::now()).await.unwrap();
        drop(tx); // rolled back: no message, no delivery
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(rx.count(), 0);
        let n: i64 = partner_gateway::with_db!(app.db(), c => sqlx::query_scalar("SELECT COUNT(*) FROM webhook_messages").fetch_one(c).await).unwrap();
        assert_eq!(n, 0);
    }

    // The fan-out filters in SQL; it must pick exactly what `endpoint::filter_matches`
    // (the reference) and the partner/enabled rules pick.
    async fn the_fan_out_picks_exactly_the_endpoints_whose_filter_matches(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let admin = app.admin().await;
        let rx = Receiver::start().await.unwrap();
        let filters: Vec<Vec<&str>> = vec![
            vec![],
            vec!["grade.*"],
            vec!["grade.delivered"],
            vec!["launch.completed", "statement.*"],
            vec!["lti.registration.*"],
            vec!["usage.threshold.crossed"],
        ];
        let mut mine = Vec::new();
        for f in &filters {
            let e = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/p"), "event_types": f})).await;
            mine.push((e["id"].as_str().unwrap().to_owned(), f.clone()));
        }
        let app_ep = endpoint(&app, json!({"app": true, "url": rx.url("/app"), "event_types": ["grade.*"]})).await;
        let other = endpoint(&app, json!({"partner": "moodle-sandbox", "url": rx.url("/m")})).await;
        let off = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/off")})).await;
        let gone = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/gone")})).await;
        let patch = app.client.patch(app.url(&format!("/v1/webhooks/endpoints/{}", off["id"].as_str().unwrap())))
            .bearer_auth(&admin).json(&json!({"enabled": false})).send().await.unwrap();
        assert_eq!(patch.status(), 200);
        let del = app.client.delete(app.url(&format!("/v1/webhooks/endpoints/{}", gone["id"].as_str().unwrap())))
            .bearer_auth(&admin).send().await.unwrap();
        assert!(del.status().is_success());
        let types = [
            "grade.delivered", "grade.failed", "grades.delivered", "grade", "grade.delivered.x",
            "launch.completed", "launch.completed2", "statement.finalized", "statement",
            "lti.registration.pending", "lti.registrationpending", "lti.registration",
            "usage.threshold.crossed", "usage.threshold",
        ];
        for (partner, ty) in types.iter().map(|t| (Some(PARTNER), *t)).chain([(None, "grade.failed")]) {
            let msg = emit(&app, partner, ty, json!({})).await;
            let mut got: Vec<String> = partner_gateway::with_db!(app.db(), pool => {
                sqlx::query_scalar("SELECT endpoint_id FROM webhook_deliveries WHERE message_id = $1")
                    .bind(&msg).fetch_all(pool).await
            }).unwrap();
            got.sort();
            let mut want: Vec<String> = Vec::new();
            if partner.is_some() {
                want.extend(mine.iter()
                    .filter(|(_, f)| partner_gateway::webhooks::endpoint::filter_matches(f, ty))
                    .map(|(id, _)| id.clone()));
            }
            if ty.starts_with("grade.") {
                want.push(app_ep["id"].as_str().unwrap().to_owned());
            }
            want.sort();
            assert_eq!(got, want, "{ty} from {partner:?}");
            assert!(!got.iter().any(|id| id == other["id"].as_str().unwrap()));
        }
    }
}

/// A host name other than `localhost` that /etc/hosts maps to a loopback address.
fn loopback_name() -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        let ip: std::net::IpAddr = parts.next()?.parse().ok()?;
        if !ip.is_loopback() {
            return None;
        }
        parts
            .find(|n| *n != "localhost" && !n.starts_with('#') && !n.ends_with(".localhost"))
            .map(str::to_owned)
    })
}

/// A partner whose system sends Standard Webhooks (`session.ended`) into the ledger.
const STANDARD_SOURCE: &str = r#"
[[partners]]
id = "std-hooks"
name = "A partner sending Standard Webhooks"
kind = "other"
[[partners.webhook_sources]]
id = "sessions"
signing = "standard"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
[[partners.webhook_sources.events]]
when = "session.ended"
event_type = "app.session"
subject = "/data/user"
[partners.webhook_sources.events.data]
customer = "/data/customer"
"#;

async fn stored_event(app: &TestApp, id: &str) -> (Option<String>, Value) {
    let (subject, data): (Option<String>, String) = partner_gateway::with_db!(app.db(), c => sqlx::query_as(
        "SELECT subject, CAST(data AS TEXT) FROM usage_events WHERE event_id = $1").bind(id).fetch_one(c).await).unwrap();
    (subject, serde_json::from_str(&data).unwrap())
}

both_backends! {
    // A verified webhook carrying U+0000 in mapped fields is recorded with U+FFFD: the
    // sender cannot change what it signed, and a paid invoice must not be lost to its
    // retries (PostgreSQL answered 500 before). Standard Webhooks and billing signatures.
    async fn signed_inbound_webhooks_with_nul_are_recorded_with_the_replacement_character(backend) {
        let Some(app) = spawn(backend, STANDARD_SOURCE).await else { return };
        let now = Utc::now().timestamp();
        // Standard Webhooks.
        let key = partner_gateway::webhooks::signature::SigningKey::decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = json!({"type": "session.ended", "data": {"user": "u\u{0}1", "customer": "ac\u{0}me"}}).to_string();
        let r = app.client.post(app.url("/webhooks/in/std-hooks/sessions"))
            .header("content-type", "application/json")
            .header("webhook-id", "msg_nul_1")
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature::signature_header(&[key], "msg_nul_1", now, body.as_bytes()))
            .body(body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "accepted", "{v}");
        let (subject, data) = stored_event(&app, "msg_nul_1").await;
        let pseudonym = app.state.subjects.pseudonym("std-hooks", "u\u{FFFD}1");
        assert_eq!(subject.as_deref(), Some(pseudonym.as_str()));
        assert_eq!(data["customer"], "ac\u{FFFD}me");
        // A billing provider's paid invoice (timestamped HMAC) with a NUL in the customer.
        let invoice = json!({
            "id": "in_nul", "type": "invoice.paid", "created": now,
            "data": {"object": {"customer": "cus_\u{0}1", "amount_paid": 1000, "currency": "usd",
                     "lines": {"data": [{"price": {"product": "prod_ehr"}}]}}}
        }).to_string();
        let header = signature::timestamped_hmac_header(b"sandbox-billing-webhook-secret", now, invoice.as_bytes());
        let r = app.client.post(app.url("/webhooks/in/epic-sandbox/billing"))
            .header("content-type", "application/json").header("Billing-Signature", header)
            .body(invoice).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "accepted", "{v}");
        let (subject, data) = stored_event(&app, "in_nul").await;
        let pseudonym = app.state.subjects.pseudonym("epic-sandbox", "cus_\u{FFFD}1");
        assert_eq!(subject.as_deref(), Some(pseudonym.as_str()));
        assert_eq!(data["customer"], "cus_\u{FFFD}1");
        assert!(data["amount"].is_string(), "{data}");
    }

    // A partner (or the app) may have `webhooks.max_endpoints_per_partner` endpoints; the
    // next is refused with 422 naming the cap, and a deleted one frees its place.
    async fn endpoints_per_partner_are_capped(backend) {
        let Some(app) = spawn(backend, "max_endpoints_per_partner = 2\n").await else { return };
        let key = app.partner_key(PARTNER).await;
        let ep = json!({"url": "http://127.0.0.1:9/hook"});
        let (status, first) = create(&app, &key, ep.clone()).await;
        assert_eq!(status, 201, "{first}");
        let (status, _) = create(&app, &key, ep.clone()).await;
        assert_eq!(status, 201);
        let (status, body) = create(&app, &key, ep.clone()).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["code"], "too_many_endpoints");
        assert!(body["detail"].as_str().unwrap().contains("webhooks.max_endpoints_per_partner"), "{body}");
        // Another partner and the app have their own count.
        let (status, body) = create(&app, &app.admin().await, json!({"partner": "epic-sandbox", "url": "http://127.0.0.1:9/hook"})).await;
        assert_eq!(status, 201, "{body}");
        let app_key = app.key(Role::App, None).await;
        for expect in [201, 201, 422] {
            assert_eq!(create(&app, &app_key, ep.clone()).await.0, expect);
        }
        // Deleting one makes room.
        let id = first["id"].as_str().unwrap();
        let r = app.client.delete(app.url(&format!("/v1/webhooks/endpoints/{id}"))).bearer_auth(&key).send().await.unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(create(&app, &key, ep).await.0, 201);
    }
}

both_backends! {
    // A receiver answering with U+0000 in its body: the attempt is recorded (the body kept
    // with U+FFFD) and the delivery settles, instead of the batch's records failing on
    // PostgreSQL and the delivery going round again.
    async fn a_receiver_answer_with_nul_is_recorded(backend) {
        let Some(app) = spawn(backend, "").await else { return };
        let rx = Receiver::start().await.unwrap();
        rx.set_default(Some(Reply::Body(200, "ok\u{0}done".into())));
        let admin = app.admin().await;
        let ep = endpoint(&app, json!({"partner": PARTNER, "url": rx.url("/nul")})).await;
        let msg = emit(&app, Some(PARTNER), "launch.completed", json!({"launch_id": "l-1"})).await;
        wait_state(&app, &admin, &msg, ep["id"].as_str().unwrap(), "delivered").await;
        let a = attempts(&app, &admin, &msg).await;
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0]["response_body"], "ok\u{FFFD}done");
    }
}
