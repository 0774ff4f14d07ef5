use serde_json::{Value, json};

use crate::both;
use crate::helpers::{TestApp, event};

/// Write events into `partner`'s ledger through ingest's validation, as the gateway itself
/// records its launches, sign-ins and FHIR calls (no key may send those types).
async fn send(app: &TestApp, partner: &str, events: Vec<Value>) {
    use partner_gateway::metering::authority::Recorder;
    use partner_gateway::metering::ingest::{Attribution, Writer, ingest_batch};
    let writer = Writer {
        attribution: Attribution::Fixed(partner),
        recorder: &Recorder::Gateway,
        rules: &app.state.ledger_rules,
    };
    let config = app.state.config.clone();
    let n = events.len() as u64;
    let done = ingest_batch(
        app.db(),
        &app.state.subjects,
        events,
        writer,
        |p| config.partner(p).is_some(),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(done.accepted, n);
}

fn with_data(mut e: Value, data: Value) -> Value {
    e["data"] = data;
    e
}

fn values(body: &Value) -> Vec<Value> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].clone())
        .collect()
}

both! {
    async fn active_users_by_day_counts_distinct_subjects_exactly(app) {
        send(&app, "epic-sandbox", vec![
            event("1", "smart.launch", "alice", "2026-11-01T08:00:00Z"),
            event("2", "smart.launch", "alice", "2026-11-01T09:00:00Z"),
            event("3", "sso.login", "bob", "2026-11-01T10:00:00Z"),
            event("4", "lti.launch", "alice", "2026-11-02T10:00:00Z"),
            event("5", "fhir.request", "carol", "2026-11-02T10:00:00Z"),
            event("6", "smart.launch", "dave", "2026-11-03T23:59:59Z"),
        ]).await;
        // Another partner's users are not counted.
        send(&app, "canvas-sandbox", vec![event("1", "lti.launch", "zed", "2026-11-01T08:00:00Z")]).await;
        let key = app.key(partner_gateway::apikeys::Role::Finance, None).await;
        let (status, body) = app.query(&key, &[
            ("meter", "active_users"), ("partner", "epic-sandbox"),
            ("from", "2026-11-01T00:00:00Z"), ("to", "2026-11-04T00:00:00Z"), ("window", "day"),
        ]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(values(&body), [json!(2), json!(1), json!(1)]);
        assert_eq!(body["data"][0]["start"], "2026-11-01T00:00:00.000000Z");
        assert_eq!(body["data"][0]["end"], "2026-11-02T00:00:00.000000Z");
        assert_eq!(body["meter"], "active_users");
        assert_eq!(body["partner"], "epic-sandbox");
        assert_eq!(body["window"], "day");
        // Over the whole range (no window): 3 distinct users, not 2 + 1 + 1.
        let (_, body) = app.query(&key, &[
            ("meter", "active_users"), ("partner", "epic-sandbox"),
            ("from", "2026-11-01T00:00:00Z"), ("to", "2026-11-04T00:00:00Z"),
        ]).await;
        assert_eq!(values(&body), [json!(3)]);
    }

    async fn day_windows_follow_the_requested_time_zone(app) {
        send(&app, "epic-sandbox", vec![
            // 03:30 UTC on 2 November is still 1 November in New York (UTC-5 after the DST change).
            event("1", "smart.launch", "a", "2026-11-02T03:30:00Z"),
            event("2", "smart.launch", "b", "2026-11-02T06:00:00Z"),
        ]).await;
        let key = app.admin().await;
        let (status, body) = app.query(&key, &[
            ("meter", "smart_launches"), ("partner", "epic-sandbox"),
            ("from", "2026-11-01T00:00:00-04:00"), ("to", "2026-11-03T00:00:00-05:00"),
            ("window", "day"), ("tz", "America/New_York"),
        ]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(values(&body), [json!(1), json!(1)]);
        // Local days of the zone, written in UTC: New York midnight is 04:00Z, then 05:00Z
        // once DST ends on 1 November.
        assert_eq!(body["data"][0]["start"], "2026-11-01T04:00:00.000000Z");
        assert_eq!(body["data"][0]["end"], "2026-11-02T05:00:00.000000Z");
        assert_eq!(body["tz"], "America/New_York");
        let (_, utc) = app.query(&key, &[
            ("meter", "smart_launches"), ("partner", "epic-sandbox"),
            ("from", "2026-11-01T00:00:00Z"), ("to", "2026-11-03T00:00:00Z"), ("window", "day"),
        ]).await;
        assert_eq!(values(&utc), [json!(0), json!(2)]);
    }

    async fn group_by_gives_one_row_per_group(app) {
        send(&app, "canvas-sandbox", vec![
            with_data(event("1", "lti.launch", "s1", "2026-11-01T08:00:00Z"), json!({"context_id": "math"})),
            with_data(event("2", "lti.launch", "s2", "2026-11-01T09:00:00Z"), json!({"context_id": "math"})),
            with_data(event("3", "lti.launch", "s3", "2026-11-01T09:30:00Z"), json!({"context_id": "art"})),
            event("4", "lti.launch", "s4", "2026-11-01T10:00:00Z"),
        ]).await;
        let key = app.partner_key("canvas-sandbox").await;
        let (status, body) = app.query(&key, &[
            ("meter", "lti_launches"), ("from", "2026-11-01T00:00:00Z"), ("to", "2026-11-02T00:00:00Z"),
            ("window", "day"), ("group_by", "$.context_id"),
        ]).await;
        assert_eq!(status, 200, "{body}");
        let mut rows: Vec<(Value, Value)> = body["data"].as_array().unwrap().iter()
            .map(|r| (r["group"]["$.context_id"].clone(), r["value"].clone())).collect();
        rows.sort_by_key(|(g, _)| g.to_string());
        assert_eq!(rows, [(json!("art"), json!(1)), (json!("math"), json!(2)), (Value::Null, json!(1))]);
    }

    async fn sum_max_and_latest_fold_data_values(app) {
        send(&app, "moodle-sandbox", vec![
            with_data(event("1", "app.session", "s1", "2026-11-01T08:00:00Z"), json!({"minutes": 10.5, "course": "c1", "score": 7})),
            with_data(event("2", "app.session", "s1", "2026-11-01T09:00:00Z"), json!({"minutes": 0.25, "course": "c1", "score": 91})),
            with_data(event("3", "app.session", "s2", "2026-11-01T09:00:00Z"), json!({"minutes": 4, "course": "c2"})),
            with_data(event("4", "app.plan", "org", "2026-11-01T07:00:00Z"), json!({"plan": "basic", "score": 3})),
            with_data(event("5", "app.plan", "org", "2026-11-01T12:00:00Z"), json!({"plan": "pro"})),
        ]).await;
        let key = app.admin().await;
        let q = |meter: &'static str| [
            ("meter", meter), ("partner", "moodle-sandbox"),
            ("from", "2026-11-01T00:00:00Z"), ("to", "2026-11-02T00:00:00Z"),
        ];
        let (_, sum) = app.query(&key, &q("session_minutes")).await;
        assert_eq!(values(&sum), [json!(14.75)]);
        let (_, max) = app.query(&key, &q("peak_score")).await;
        assert_eq!(values(&max), [json!(91)]);
        let (_, latest) = app.query(&key, &q("last_plan")).await;
        assert_eq!(values(&latest), [json!("pro")]);
        let mut grouped = q("session_minutes").to_vec();
        grouped.push(("group_by", "$.course,subject"));
        let (status, body) = app.query(&key, &grouped).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"].as_array().unwrap().len(), 2);
        // Grouped by subject, the ledger's pseudonym is what a group is named by.
        let s1 = app.state.subjects.pseudonym("moodle-sandbox", "s1");
        assert_eq!(body["data"][0]["group"], json!({"$.course": "c1", "subject": s1}));
        assert_eq!(body["data"][0]["value"], json!(10.75));
    }

    async fn empty_windows_are_listed_with_zero(app) {
        let key = app.admin().await;
        let (status, body) = app.query(&key, &[
            ("meter", "grades_posted"), ("partner", "canvas-sandbox"),
            ("from", "2026-01-01T00:00:00Z"), ("to", "2026-04-01T00:00:00Z"), ("window", "month"),
        ]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(values(&body), [json!(0), json!(0), json!(0)]);
    }

    async fn a_partner_key_cannot_query_another_partner(app) {
        let key = app.partner_key("epic-sandbox").await;
        let (status, body) = app.query(&key, &[
            ("meter", "smart_launches"), ("partner", "canvas-sandbox"), ("from", "2026-11-01T00:00:00Z"),
        ]).await;
        assert_eq!(status, 403, "{body}");
    }

    async fn unknown_or_missing_meters_and_partners_are_named(app) {
        let key = app.admin().await;
        let (status, body) = app.query(&key, &[("meter", "nope"), ("partner", "epic-sandbox"), ("from", "2026-11-01T00:00:00Z")]).await;
        assert_eq!(status, 404);
        assert!(body["detail"].as_str().unwrap().contains("\"nope\""), "{body}");
        let (status, body) = app.query(&key, &[("meter", "smart_launches"), ("partner", "acme"), ("from", "2026-11-01T00:00:00Z")]).await;
        assert_eq!(status, 404);
        assert!(body["detail"].as_str().unwrap().contains("\"acme\""), "{body}");
        let (status, body) = app.query(&key, &[("from", "2026-11-01T00:00:00Z")]).await;
        assert_eq!(status, 400);
        let fields: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["meter", "partner"]);
    }

    async fn bad_query_parameters_are_each_reported(app) {
        let key = app.admin().await;
        let (status, body) = app.query(&key, &[
            ("meter", "smart_launches"), ("partner", "epic-sandbox"), ("from", "yesterday"),
            ("window", "fortnight"), ("tz", "Mars/Olympus"), ("group_by", "$.nope"), ("colour", "blue"),
        ]).await;
        assert_eq!(status, 400);
        let mut fields: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["colour", "from", "group_by", "tz", "window"]);
        let (status, body) = app.query(&key, &[
            ("meter", "smart_launches"), ("partner", "epic-sandbox"),
            ("from", "2026-11-02T00:00:00Z"), ("to", "2026-11-01T00:00:00Z"),
        ]).await;
        assert_eq!(status, 400);
        assert_eq!(body["code"], "invalid_range");
    }

    async fn many_windows_are_answered_in_order_with_each_windows_own_value(app) {
        // 48 hourly windows: enough to be split across connections.
        let mut events = Vec::new();
        for h in 0..48u32 {
            for u in 0..(h % 5) {
                let t = format!("2026-11-{:02}T{:02}:15:00Z", 1 + h / 24, h % 24);
                events.push(event(&format!("{h}-{u}"), "sso.login", &format!("user-{u}"), &t));
                events.push(event(&format!("{h}-{u}-again"), "smart.launch", &format!("user-{u}"), &t));
            }
        }
        send(&app, "oracle-health-sandbox", events).await;
        let key = app.admin().await;
        let (status, body) = app.query(&key, &[
            ("meter", "active_users"), ("partner", "oracle-health-sandbox"),
            ("from", "2026-11-01T00:00:00Z"), ("to", "2026-11-03T00:00:00Z"), ("window", "hour"),
        ]).await;
        assert_eq!(status, 200, "{body}");
        let expected: Vec<Value> = (0..48).map(|h| json!(h % 5)).collect();
        assert_eq!(values(&body), expected);
        assert_eq!(body["data"][47]["start"], "2026-11-02T23:00:00.000000Z");
        let (_, body) = app.query(&key, &[
            ("meter", "peak_score"), ("partner", "oracle-health-sandbox"),
            ("from", "2026-11-01T00:00:00Z"), ("to", "2026-11-03T00:00:00Z"), ("window", "hour"),
        ]).await;
        assert_eq!(body["data"].as_array().unwrap().len(), 48);
        assert!(values(&body).iter().all(Value::is_null));
    }

    // November 2026 in New York (the canvas agreement's zone) starts at 04:00 UTC (EDT) and
    // ends at 05:00 UTC (EST): the caller names the period, the gateway does the offsets.
    async fn usage_is_asked_for_by_statement_period_in_the_agreements_zone(app) {
        send(&app, "canvas-sandbox", vec![
            event("p1", "app.session", "u1", "2026-11-01T03:59:59Z"), // Oct 31, 23:59 local
            event("p2", "app.session", "u1", "2026-11-01T04:00:00Z"),
            event("p3", "app.session", "u2", "2026-11-15T12:00:00Z"),
            event("p4", "app.session", "u3", "2026-12-01T04:30:00Z"), // Nov 30, 23:30 local
            event("p5", "app.session", "u3", "2026-12-01T05:00:00Z"), // Dec 1 local
        ]).await;
        let admin = app.admin().await;
        let (s, body) = app.query(&admin, &[("meter", "app_sessions"), ("partner", "canvas-sandbox"), ("period", "2026-11")]).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(values(&body), [json!(3)], "{body}");
        assert_eq!(body["tz"], "America/New_York");
        assert_eq!(body["statement_period"], json!({"period": "2026-11", "agreement": "canvas-lms-partnership", "time_zone": "America/New_York"}));
        assert_eq!(body["from"], "2026-11-01T04:00:00.000000Z", "{body}");
        // A partner key: its own agreement by default.
        let mine = app.partner_key("canvas-sandbox").await;
        let (s, own) = app.query(&mine, &[("meter", "app_sessions"), ("period", "2026-11"), ("window", "day")]).await;
        assert_eq!(s, 200, "{own}");
        assert_eq!(own["data"].as_array().unwrap().len(), 30, "November's days, local");
        // Bad combinations are named.
        let (s, bad) = app.query(&admin, &[("meter", "app_sessions"), ("partner", "canvas-sandbox"), ("period", "2026-11"), ("from", "2026-11-01T00:00:00Z")]).await;
        assert_eq!(s, 400, "{bad}");
        assert_eq!(bad["errors"][0]["field"], "from");
        let (s, bad) = app.query(&admin, &[("meter", "app_sessions"), ("partner", "canvas-sandbox"), ("agreement", "canvas-lms-partnership"), ("from", "2026-11-01T00:00:00Z")]).await;
        assert_eq!(s, 400, "{bad}");
        assert_eq!(bad["errors"][0]["field"], "agreement");
        let (s, bad) = app.query(&admin, &[("meter", "app_sessions"), ("partner", "canvas-sandbox"), ("period", "2026-11"), ("agreement", "marketplace-fee")]).await;
        assert_eq!(s, 404, "{bad}");
        let (s, bad) = app.query(&admin, &[("meter", "app_sessions"), ("partner", "canvas-sandbox"), ("period", "November")]).await;
        assert_eq!(s, 400, "{bad}");
    }
}
