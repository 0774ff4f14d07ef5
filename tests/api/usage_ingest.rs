use partner_gateway::apikeys::Role;
use serde_json::{Value, json};

use crate::both;
use crate::helpers::{REPORTER, REPORTER_2, event};

fn batch(prefix: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                event(
                    &format!("{prefix}-{i}"),
                    "app.launch",
                    &format!("u{i}"),
                    "2026-11-02T10:00:00Z",
                )
            })
            .collect(),
    )
}

async fn error_body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

both! {
    async fn concurrent_writers_sharing_writes_each_get_their_own_counts(app) {
        // 60 requests at once (on PostgreSQL they share grouped statements): events posted
        // by two requests count once, for one of them; a request's own repeat is a duplicate.
        let key = app.partner_key(REPORTER).await;
        let mut tasks = Vec::new();
        for i in 0..60u64 {
            let mut events = vec![event(&format!("shared-{}", i % 30), "app.launch", "u", "2026-11-02T10:00:00Z")];
            events.push(event(&format!("own-{i}"), "app.launch", "u", "2026-11-02T10:00:00Z"));
            events.push(event(&format!("own-{i}"), "app.launch", "u", "2026-11-02T10:00:00Z"));
            let req = app.client.post(app.url("/v1/usage/events")).bearer_auth(&key).json(&Value::Array(events));
            tasks.push(tokio::spawn(async move {
                let r = req.send().await.unwrap();
                assert_eq!(r.status(), 202);
                r.json::<Value>().await.unwrap()
            }));
        }
        let (mut accepted, mut duplicates) = (0, 0);
        for t in tasks {
            let body = t.await.unwrap();
            let (a, d) = (body["accepted"].as_u64().unwrap(), body["duplicates"].as_u64().unwrap());
            assert_eq!(a + d, 3, "{body}");
            assert!((1..=2).contains(&a), "{body}");
            accepted += a;
            duplicates += d;
        }
        assert_eq!(accepted, 90);
        assert_eq!(duplicates, 90);
        assert_eq!(app.ledger_count().await, 90);
    }

    async fn a_single_event_is_accepted_with_202(app) {
        let key = app.partner_key(REPORTER).await;
        let resp = app.post_events(&key, "application/cloudevents+json", event("e1", "app.launch", "u1", "2026-11-02T10:00:00Z").to_string()).await;
        assert_eq!(resp.status(), 202);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"accepted": 1, "duplicates": 0}));
        assert_eq!(app.ledger_count().await, 1);
        // No data and no extensions are stored as SQL NULL, not as the JSON text null.
        let nulls: i64 = partner_gateway::with_db!(app.db(), pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM usage_events WHERE data IS NULL AND extensions IS NULL")
                .fetch_one(pool)
                .await
        })
        .unwrap();
        assert_eq!(nulls, 1);
    }

    async fn clients_hanging_up_mid_write_do_not_wedge_the_ledger(app) {
        let key = app.partner_key(REPORTER).await;
        // Requests abandoned at every point of their life: before, during and after the write.
        let mut tasks = Vec::new();
        for i in 0..150u64 {
            let events: Vec<Value> = (0..50)
                .map(|j| event(&format!("hang-{i}-{j}"), "app.launch", &format!("batch-{i}"), "2026-11-02T10:00:00Z"))
                .collect();
            let req = app
                .client
                .post(app.url("/v1/usage/events"))
                .bearer_auth(&key)
                .timeout(std::time::Duration::from_micros(300 + (i * 97) % 4000))
                .json(&Value::Array(events));
            tasks.push(tokio::spawn(async move {
                let _ = req.send().await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Writes still go through, promptly, on every pooled connection.
        for i in 0..10 {
            let resp = app
                .client
                .post(app.url("/v1/usage/events"))
                .bearer_auth(&key)
                .timeout(std::time::Duration::from_secs(10))
                .json(&event(&format!("after-{i}"), "app.launch", "u", "2026-11-02T10:00:00Z"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 202);
        }
        // Every abandoned batch was written whole or not at all.
        let partial: i64 = partner_gateway::with_db!(app.db(), pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM (SELECT subject, COUNT(*) AS n FROM usage_events \
                 WHERE subject LIKE 'batch-%' GROUP BY subject) AS t WHERE n <> 50",
            )
            .fetch_one(pool)
            .await
        })
        .unwrap();
        assert_eq!(partial, 0);
    }

    async fn a_batch_content_type_takes_an_array(app) {
        let key = app.partner_key(REPORTER).await;
        let resp = app.post_events(&key, "application/cloudevents-batch+json; charset=utf-8", batch("b", 10).to_string()).await;
        assert_eq!(resp.status(), 202);
        assert_eq!(resp.json::<Value>().await.unwrap()["accepted"], 10);
        // The batch type with a single object is refused.
        let resp = app.post_events(&key, "application/cloudevents-batch+json", event("x", "t", "u", "2026-11-02T10:00:00Z").to_string()).await;
        assert_eq!(resp.status(), 400);
    }

    async fn a_repeated_event_is_a_duplicate_and_never_counted_twice(app) {
        let key = app.partner_key(REPORTER).await;
        let first = app.post_json(&key, &batch("d", 5)).await;
        assert_eq!(first.json::<Value>().await.unwrap(), json!({"accepted": 5, "duplicates": 0}));
        // The same five again, plus one new, plus a repeat inside the batch.
        let mut again = batch("d", 5).as_array().unwrap().clone();
        again.push(event("d-new", "app.launch", "u", "2026-11-02T10:00:00Z"));
        again.push(event("d-new", "app.launch", "u", "2026-11-02T10:00:00Z"));
        let resp = app.post_json(&key, &Value::Array(again)).await;
        assert_eq!(resp.json::<Value>().await.unwrap(), json!({"accepted": 1, "duplicates": 6}));
        assert_eq!(app.ledger_count().await, 6);
    }

    async fn the_same_id_from_another_source_or_partner_is_a_different_event(app) {
        let epic = app.partner_key(REPORTER).await;
        let canvas = app.partner_key(REPORTER_2).await;
        let mut other_source = event("same", "app.launch", "u", "2026-11-02T10:00:00Z");
        other_source["source"] = json!("/elsewhere");
        app.post_json(&epic, &event("same", "app.launch", "u", "2026-11-02T10:00:00Z")).await;
        app.post_json(&epic, &other_source).await;
        app.post_json(&canvas, &event("same", "app.visit", "u", "2026-11-02T10:00:00Z")).await;
        assert_eq!(app.ledger_count().await, 3);
    }

    async fn one_invalid_event_rejects_the_whole_batch_and_lists_each_problem(app) {
        let key = app.partner_key(REPORTER).await;
        let mut events = batch("v", 4).as_array().unwrap().clone();
        events[1].as_object_mut().unwrap().remove("id");
        events[3]["time"] = json!("last tuesday");
        let (status, body) = error_body(app.post_json(&key, &Value::Array(events)).await).await;
        assert_eq!(status, 400);
        assert_eq!(body["code"], "validation_failed");
        assert_eq!(body["errors"], json!([
            {"index": 1, "field": "id", "reason": "is required"},
            {"index": 3, "field": "time", "reason": "\"last tuesday\" is not an RFC 3339 timestamp such as 2026-11-23T10:00:00Z"},
        ]));
        assert_eq!(app.ledger_count().await, 0);
    }

    async fn malformed_json_is_400_and_writes_nothing(app) {
        let key = app.partner_key(REPORTER).await;
        let (status, body) = error_body(app.post_events(&key, "application/json", "[{\"specversion\": \"1.0\",").await).await;
        assert_eq!(status, 400);
        assert_eq!(body["code"], "malformed_json");
        assert_eq!(app.ledger_count().await, 0);
    }

    async fn a_wrong_content_type_is_415(app) {
        let key = app.partner_key(REPORTER).await;
        let (status, body) = error_body(app.post_events(&key, "text/plain", batch("c", 1).to_string()).await).await;
        assert_eq!(status, 415);
        assert!(body["detail"].as_str().unwrap().contains("text/plain"));
        let (status, _) = error_body(app.post_events(&key, "", batch("c", 1).to_string()).await).await;
        assert_eq!(status, 415);
        assert_eq!(app.ledger_count().await, 0);
    }

    async fn an_oversized_body_is_413(app) {
        let key = app.partner_key(REPORTER).await;
        let mut ev = event("big", "app.launch", "u", "2026-11-02T10:00:00Z");
        ev["data"] = json!({"blob": "x".repeat(1_100_000)});
        let (status, body) = error_body(app.post_json(&key, &ev).await).await;
        assert_eq!(status, 413);
        assert_eq!(body["code"], "payload_too_large");
        assert_eq!(app.ledger_count().await, 0);
    }

    async fn more_than_1000_events_is_400(app) {
        let key = app.partner_key(REPORTER).await;
        let mut events = Vec::new();
        for i in 0..1001 {
            events.push(json!({"specversion":"1.0","id":format!("{i}"),"source":"s","type":"t"}));
        }
        let (status, body) = error_body(app.post_json(&key, &Value::Array(events)).await).await;
        assert_eq!(status, 400);
        assert_eq!(body["code"], "batch_too_large");
        assert!(body["detail"].as_str().unwrap().contains("1001"));
        assert_eq!(app.ledger_count().await, 0);
        let (status, body) = error_body(app.post_json(&key, &json!([])).await).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("empty_batch")));
    }

    async fn an_unknown_partner_is_rejected_and_nothing_written(app) {
        let key = app.admin().await;
        let mut good = event("p1", "app.launch", "u", "2026-11-02T10:00:00Z");
        good["partner"] = json!("epic-sandbox");
        let mut bad = event("p2", "app.launch", "u", "2026-11-02T10:00:00Z");
        bad["partner"] = json!("acme");
        let (status, body) = error_body(app.post_json(&key, &json!([good, bad])).await).await;
        assert_eq!(status, 400);
        assert_eq!(body["errors"], json!([{"index": 1, "field": "partner", "reason": "unknown partner \"acme\""}]));
        assert_eq!(app.ledger_count().await, 0);
    }

    async fn an_admin_or_app_key_names_the_partner(app) {
        for role in [Role::Admin, Role::App] {
            let key = app.key(role, None).await;
            let (status, body) = error_body(app.post_json(&key, &event("n1", "app.launch", "u", "2026-11-02T10:00:00Z")).await).await;
            assert_eq!(status, 400);
            assert_eq!(body["errors"][0]["field"], "partner");
            let mut ev = event(&format!("n-{}", role.as_str()), "app.launch", "u", "2026-11-02T10:00:00Z");
            ev["partner"] = json!("oracle-health-sandbox");
            assert_eq!(app.post_json(&key, &ev).await.status(), 202);
        }
        assert_eq!(app.ledger_count().await, 2);
    }

    async fn a_partner_key_may_not_record_for_another_partner(app) {
        let key = app.partner_key(REPORTER).await;
        let mut own = event("o1", "app.launch", "u", "2026-11-02T10:00:00Z");
        own["partner"] = json!(REPORTER);
        let mut other = event("o2", "app.launch", "u", "2026-11-02T10:00:00Z");
        other["partner"] = json!(REPORTER_2);
        let (status, body) = error_body(app.post_json(&key, &json!([own, other])).await).await;
        assert_eq!(status, 403);
        assert!(body["detail"].as_str().unwrap().contains(REPORTER_2));
        assert_eq!(app.ledger_count().await, 0);
    }

    async fn a_missing_time_defaults_to_now(app) {
        let key = app.partner_key(REPORTER).await;
        let ev = json!({"specversion":"1.0","id":"now1","source":"s","type":"app.launch","subject":"u"});
        assert_eq!(app.post_json(&key, &ev).await.status(), 202);
        let from = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
        let (status, body) = app.query(&key, &[("meter", "app_events"), ("from", &from)]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"][0]["value"], 1);
    }

    async fn an_event_recorded_in_a_rolled_back_transaction_is_not_in_the_ledger(app) {
        use partner_gateway::metering::{UsageEvent, record_usage_event};
        let ev = UsageEvent {
            partner_id: "canvas-sandbox".into(),
            id: "tx-1".into(),
            source: "/gateway/lti".into(),
            event_type: "lti.launch".into(),
            subject: Some("student-1".into()),
            time: chrono::Utc::now(),
            data: None,
            extensions: None,
        };
        let mut tx = app.db().begin().await.unwrap();
        assert!(record_usage_event(&mut tx, &app.state.subjects, ev.clone()).await.unwrap());
        drop(tx);
        assert_eq!(app.ledger_count().await, 0);
        let mut tx = app.db().begin().await.unwrap();
        assert!(record_usage_event(&mut tx, &app.state.subjects, ev.clone()).await.unwrap());
        tx.commit().await.unwrap();
        let mut tx = app.db().begin().await.unwrap();
        assert!(!record_usage_event(&mut tx, &app.state.subjects, ev.clone()).await.unwrap(), "the second recording is a duplicate");
        tx.commit().await.unwrap();
        assert_eq!(app.ledger_count().await, 1);
    }
}

crate::both_backends! {
    async fn duplicates_are_caught_across_instances_sharing_a_database(backend) {
        let Some(one) = crate::helpers::TestApp::spawn(backend).await else { return };
        let two = one.another_instance().await;
        let key = one.partner_key(REPORTER).await;
        // The same 200 events through both instances at once, in batches of 20.
        let mut sends = Vec::new();
        for app in [&one, &two] {
            for chunk in 0..10 {
                let events: Vec<Value> = (chunk * 20..chunk * 20 + 20)
                    .map(|i| event(&format!("x-{i}"), "app.launch", "u", "2026-11-02T10:00:00Z"))
                    .collect();
                let req = app
                    .client
                    .post(app.url("/v1/usage/events"))
                    .bearer_auth(&key)
                    .json(&Value::Array(events));
                sends.push(async move { req.send().await.unwrap() });
            }
        }
        let mut accepted = 0;
        let mut duplicates = 0;
        for resp in futures_join(sends).await {
            assert_eq!(resp.status(), 202);
            let body: Value = resp.json().await.unwrap();
            accepted += body["accepted"].as_u64().unwrap();
            duplicates += body["duplicates"].as_u64().unwrap();
        }
        assert_eq!((accepted, duplicates), (200, 200));
        assert_eq!(one.ledger_count().await, 200);
    }
}

/// Await futures concurrently, in order.
async fn futures_join<F>(futs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

both! {
    // U+0000 in an event's id, subject, a data key or a data value: a 400 naming the field
    // by its JSON pointer, nothing written (PostgreSQL answered 500 before; SQLite stored it).
    async fn a_nul_in_an_event_is_refused_naming_the_field(app) {
        let admin = app.admin().await;
        let ok = json!({"specversion": "1.0", "id": "n-1", "source": "/app", "type": "app.session",
                        "subject": "u1", "partner": "epic-sandbox", "data": {"customer": "acme", "minutes": 5}});
        let mut cases = Vec::new();
        let mut e = ok.clone();
        e["id"] = json!("n\u{0}1");
        cases.push((e, "/1/id"));
        let mut e = ok.clone();
        e["subject"] = json!("u\u{0}1");
        cases.push((e, "/1/subject"));
        let mut e = ok.clone();
        e["data"]["customer"] = json!("ac\u{0}me");
        cases.push((e, "/1/data/customer"));
        let mut e = ok.clone();
        e["data"] = json!({"cust\u{0}omer": "acme"});
        cases.push((e, "/1/data/cust\\u0000omer"));
        for (bad, pointer) in cases {
            let mut first = ok.clone();
            first["id"] = json!("n-0");
            let (status, body) = error_body(app.post_json(&admin, &json!([first, bad])).await).await;
            assert_eq!(status, 400, "{pointer}: {body}");
            assert_eq!(body["code"], "nul_character", "{body}");
            assert!(body["detail"].as_str().unwrap().contains(pointer), "{pointer}: {body}");
        }
        assert_eq!(app.ledger_count().await, 0);
        // The escaped backslash is not a NUL: `\\u0000` is six characters of text.
        let mut e = ok.clone();
        e["data"]["customer"] = json!("\\u0000");
        let (status, body) = error_body(app.post_json(&admin, &e).await).await;
        assert_eq!(status, 202, "{body}");
    }

    // An event's `data` over `usage.max_data_bytes` (64 KiB by default) is refused with a 400
    // naming the cap; the batch is not written.
    async fn event_data_over_the_size_cap_is_refused(app) {
        let admin = app.admin().await;
        let event = |id: &str, len: usize| json!({"specversion": "1.0", "id": id, "source": "/app", "type": "app.session",
                                                  "partner": "epic-sandbox", "data": {"blob": "x".repeat(len)}});
        // {"blob":"..."} is 11 bytes around the text.
        let fits = event("fits", 64 * 1024 - 11);
        let over = event("over", 64 * 1024 - 10);
        let (status, body) = error_body(app.post_json(&admin, &json!([fits.clone(), over])).await).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errors"][0]["index"], 1, "{body}");
        assert_eq!(body["errors"][0]["field"], "data", "{body}");
        assert!(body["errors"][0]["reason"].as_str().unwrap().contains("usage.max_data_bytes"), "{body}");
        assert_eq!(app.ledger_count().await, 0);
        let (status, body) = error_body(app.post_json(&admin, &fits).await).await;
        assert_eq!(status, 202, "{body}");
    }
}
