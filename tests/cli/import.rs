//! `usage import FILE`: a report of what was accepted, what was a duplicate and which lines
//! were rejected (and why); idempotent; the imported events are what the meters count.

use std::fmt::Write as _;

use serde_json::json;

use crate::support::{Backend, TestEnv, bucket_values, fixture, number, on_both_backends};

on_both_backends!(import_reports_bad_lines_and_is_idempotent
    => import_reports_bad_lines_and_is_idempotent_on_sqlite,
       import_reports_bad_lines_and_is_idempotent_on_postgres);

on_both_backends!(imported_sample_matches_the_meter_queries
    => imported_sample_matches_the_meter_queries_on_sqlite,
       imported_sample_matches_the_meter_queries_on_postgres);

on_both_backends!(import_of_more_than_one_batch_stores_every_line
    => import_of_more_than_one_batch_stores_every_line_on_sqlite,
       import_of_more_than_one_batch_stores_every_line_on_postgres);

/// fixtures/usage-with-errors.ndjson: 7 valid events, 2 blank lines, 5 bad lines (the last a
/// gateway type, which an import may not write).
async fn import_reports_bad_lines_and_is_idempotent(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let file = fixture("usage-with-errors.ndjson");
    let file = file.to_str().unwrap();

    let first = env.run(&["usage", "import", file]).await;
    assert_eq!(
        first.status.code(),
        Some(3),
        "rejected lines make the import exit 3\n{first}"
    );
    assert_eq!(first.counter("accepted"), 7, "{first}");
    assert_eq!(first.counter("duplicates"), 0, "{first}");
    assert_eq!(first.counter("rejected"), 5, "{first}");
    let rejected: Vec<&str> = first
        .stdout
        .lines()
        .filter(|l| l.starts_with("line "))
        .collect();
    assert_eq!(
        rejected.len(),
        5,
        "one `line N: reason` per bad line, blank lines skipped\n{first}"
    );
    assert!(rejected[0].starts_with("line 4: "), "{first}");
    assert!(rejected[0].contains("JSON"), "{first}");
    assert!(rejected[1].starts_with("line 6: "), "{first}");
    assert!(rejected[1].contains("id is required"), "{first}");
    assert!(rejected[2].starts_with("line 8: time "), "{first}");
    assert!(rejected[2].contains("2026-11-06 25:00"), "{first}");
    assert!(rejected[3].starts_with("line 10: partner "), "{first}");
    assert!(rejected[3].contains("no-such-partner"), "{first}");
    assert!(rejected[4].starts_with("line 14: "), "{first}");
    assert!(
        rejected[4].contains("\"smart.launch\" is recorded only by the gateway"),
        "{first}"
    );
    // The report is the whole of stdout; progress goes to stderr.
    assert_eq!(first.stdout_lines().len(), 3 + 5, "{first}");

    let second = env.run(&["usage", "import", file]).await;
    assert_eq!(second.status.code(), Some(3), "{second}");
    assert_eq!(second.counter("accepted"), 0, "{second}");
    assert_eq!(second.counter("duplicates"), 7, "{second}");
    assert_eq!(second.counter("rejected"), 5, "{second}");
    assert_eq!(
        second
            .stdout
            .lines()
            .filter(|l| l.starts_with("line "))
            .collect::<Vec<_>>(),
        rejected,
        "the same lines are rejected for the same reasons"
    );

    let store = env.store().await;
    assert_eq!(store.count_events("epic-sandbox").await, 5);
    assert_eq!(store.count_events("canvas-sandbox").await, 2);
    assert_eq!(store.scalar("SELECT COUNT(*) FROM usage_events").await, 7);
    // Each says it was imported by an operator, from which file.
    assert_eq!(
        store
            .scalar("SELECT COUNT(*) FROM usage_events WHERE recorded_by = 'import' AND recorded_ref = 'usage-with-errors.ndjson'")
            .await,
        7
    );
    assert!(store.duplicated_keys().await.is_empty());
    store.close().await;

    let admin = env.create_key("admin", None).await;
    let server = env.serve().await;
    let day = |meter: &'static str, partner: &'static str| {
        [
            ("meter", meter),
            ("partner", partner),
            ("from", "2026-11-05T00:00:00Z"),
            ("to", "2026-11-07T00:00:00Z"),
            ("window", "day"),
        ]
    };
    let body = server
        .query(&admin, &day("app_sessions", "epic-sandbox"))
        .await;
    assert_eq!(bucket_values(&body), [2, 3], "{body}");
    let body = server
        .query(&admin, &day("app_modules_completed", "canvas-sandbox"))
        .await;
    assert_eq!(bucket_values(&body), [1, 1], "{body}");
}

/// fixtures/usage-sample.ndjson (see fixtures/README.md for the counts).
async fn imported_sample_matches_the_meter_queries(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let file = fixture("usage-sample.ndjson");
    let lines = std::fs::read_to_string(&file).unwrap().lines().count();
    assert_eq!(
        lines, 20,
        "fixtures/usage-sample.ndjson changed: update this test"
    );

    let out = env.run(&["usage", "import", file.to_str().unwrap()]).await;
    assert!(out.status.success(), "{out}");
    assert_eq!(
        out.stdout, "accepted: 20\nduplicates: 0\nrejected: 0\n",
        "{out}"
    );

    let admin = env.create_key("admin", None).await;
    let canvas = env.create_key("partner", Some("canvas-sandbox")).await;
    let server = env.serve().await;
    let days = |meter: &'static str, partner: &'static str| {
        [
            ("meter", meter),
            ("partner", partner),
            ("from", "2026-11-02T00:00:00Z"),
            ("to", "2026-11-05T00:00:00Z"),
            ("window", "day"),
        ]
    };
    let body = server
        .query(&admin, &days("app_sessions", "epic-sandbox"))
        .await;
    assert_eq!(bucket_values(&body), [4, 3, 5], "{body}");
    let body = server
        .query(&admin, &days("app_modules_completed", "canvas-sandbox"))
        .await;
    assert_eq!(bucket_values(&body), [2, 3, 3], "{body}");
    let body = server
        .query(&admin, &days("app_active_users", "epic-sandbox"))
        .await;
    assert_eq!(bucket_values(&body), [3, 2, 5], "{body}");
    let body = server
        .query(&admin, &days("app_active_users", "canvas-sandbox"))
        .await;
    assert_eq!(bucket_values(&body), [2, 2, 3], "{body}");

    // Whole range, one window.
    let whole = |meter: &'static str, partner: &'static str| {
        [
            ("meter", meter),
            ("partner", partner),
            ("from", "2026-11-01T00:00:00Z"),
            ("to", "2026-11-10T00:00:00Z"),
        ]
    };
    let body = server
        .query(&admin, &whole("app_sessions", "epic-sandbox"))
        .await;
    assert_eq!(bucket_values(&body), [12], "{body}");
    let body = server
        .query(&admin, &whole("app_active_users", "epic-sandbox"))
        .await;
    assert_eq!(bucket_values(&body), [5], "{body}");
    let body = server
        .query(&admin, &whole("app_sessions", "canvas-sandbox"))
        .await;
    assert_eq!(bucket_values(&body), [0], "{body}");

    // A partner key reads its own usage, grouped.
    let mut params = whole("app_modules_completed", "canvas-sandbox").to_vec();
    params.push(("group_by", "$.context_id"));
    let body = server.query(&canvas, &params).await;
    let mut groups: Vec<(String, i64)> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["group"]["$.context_id"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned(),
                number(&b["value"]),
            )
        })
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        [("course-a".to_owned(), 3), ("course-b".to_owned(), 5)],
        "{body}"
    );
}

/// 2500 lines: more than two batches of 1000, all stored; lines without a `partner` go to
/// `--partner`.
async fn import_of_more_than_one_batch_stores_every_line(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    const N: usize = 2500;
    let mut text = String::new();
    for i in 0..N {
        let event = json!({
            "specversion": "1.0",
            "id": format!("bulk-{i:05}"),
            "source": "https://lms.example.com/bulk",
            "type": "app.module_completed",
            "subject": format!("learner-{}", i % 97),
            "time": format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + i % 10, i % 24, i % 60),
            "data": {"context_id": format!("course-{}", i % 3)},
        });
        writeln!(text, "{event}").unwrap();
    }
    let path = env.dir.path().join("bulk.ndjson");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap();

    let refused = env
        .run(&["usage", "import", path, "--partner", "no-such-partner"])
        .await;
    assert!(!refused.status.success(), "{refused}");
    assert!(refused.stderr.contains("no-such-partner"), "{refused}");
    let missing = env.dir.path().join("missing.ndjson");
    let refused = env
        .run(&["usage", "import", missing.to_str().unwrap()])
        .await;
    assert!(!refused.status.success(), "{refused}");
    assert!(refused.stderr.contains("missing.ndjson"), "{refused}");

    let out = env
        .run(&["usage", "import", path, "--partner", "canvas-sandbox"])
        .await;
    assert!(out.status.success(), "{out}");
    assert_eq!(
        out.stdout,
        format!("accepted: {N}\nduplicates: 0\nrejected: 0\n"),
        "{out}"
    );

    let store = env.store().await;
    assert_eq!(store.count_events("canvas-sandbox").await, N as i64);
    assert_eq!(
        store.scalar("SELECT COUNT(*) FROM usage_events").await,
        N as i64
    );
    let keys = store.event_keys("canvas-sandbox").await;
    for i in [0, 999, 1000, 1999, 2000, N - 1] {
        let key = format!("https://lms.example.com/bulk\tbulk-{i:05}");
        assert!(keys.contains(&key), "{key} was not stored");
    }
    store.close().await;

    let again = env
        .run(&["usage", "import", path, "--partner", "canvas-sandbox"])
        .await;
    assert!(again.status.success(), "{again}");
    assert_eq!(
        again.stdout,
        format!("accepted: 0\nduplicates: {N}\nrejected: 0\n"),
        "{again}"
    );
}

/// A line that is not UTF-8 is a bad line like any other: reported and skipped.
#[tokio::test]
async fn a_line_that_is_not_utf8_is_rejected_not_fatal() {
    let env = TestEnv::new(Backend::Sqlite).await.unwrap();
    let sample = std::fs::read_to_string(fixture("usage-sample.ndjson")).unwrap();
    let lines: Vec<&str> = sample.lines().collect();
    // A byte-order mark at the start is tolerated.
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    for l in &lines[..2] {
        bytes.extend_from_slice(l.as_bytes());
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(b"{\"id\":\"latin-1 \xe9t\xe9\"}\n");
    for l in &lines[2..4] {
        bytes.extend_from_slice(l.as_bytes());
        bytes.push(b'\n');
    }
    let path = env.dir.path().join("mixed.ndjson");
    std::fs::write(&path, bytes).unwrap();

    let out = env.run(&["usage", "import", path.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(3), "{out}");
    assert_eq!(out.counter("accepted"), 4, "{out}");
    assert_eq!(out.counter("rejected"), 1, "{out}");
    assert!(out.stdout.contains("line 3: not valid UTF-8"), "{out}");
}
