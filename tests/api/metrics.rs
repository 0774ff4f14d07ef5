//! `/metrics` after real traffic: every name in `deploy/metrics.txt` (what the dashboard and
//! the alert rules may use) is exported with a `# HELP` line, nothing exported is missing
//! from that list, launches are counted by protocol and partner, and answers the handlers
//! never produced (a timeout, a panic, no route) are counted too.

use std::collections::BTreeSet;

use axum::routing::get;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

const CONFIG: &str = "[outbound]\nallow_http = true\nprivate_networks = [\"127.0.0.1\"]\n\
[http]\nrequest_timeout_secs = 1\n";

async fn scrape(app: &TestApp) -> String {
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The value of one series (exact label text), or 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn listed() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/metrics.txt");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

both_backends! {
    async fn every_listed_metric_is_exported_with_help_and_nothing_else_is(backend) {
        let Some(app) = TestApp::spawn_with(backend, CONFIG, partner_gateway::jobs::Handlers::new()).await else { return };
        // Traffic: an accepted event, a refused one, an unknown route, a webhook endpoint
        // (its backlog gauge), refused launches of each protocol.
        let key = app.partner_key(crate::helpers::REPORTER).await;
        let ev = crate::helpers::event("m1", "app.launch", "u1", "2026-11-01T00:00:00Z");
        assert_eq!(app.post_json(&key, &ev).await.status(), 202);
        assert_eq!(app.post_json(&key, &json!({"nope": 1})).await.status(), 400);
        assert_eq!(app.client.get(app.url("/no/such/route")).send().await.unwrap().status(), 404);
        let admin = app.admin().await;
        let r = app.client.post(app.url("/v1/webhooks/endpoints")).bearer_auth(&admin)
            .json(&json!({"partner": "canvas-sandbox", "url": "http://127.0.0.1:9/hook"}))
            .send().await.unwrap();
        assert_eq!(r.status(), 201);
        let endpoint = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let r = app.client.get(app.url("/smart/callback?state=never-issued&code=x")).send().await.unwrap();
        assert_eq!(r.status(), 400);

        let text = scrape(&app).await;
        let exported: BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        let listed = listed();
        let missing: Vec<_> = listed.difference(&exported).collect();
        assert!(missing.is_empty(), "listed in deploy/metrics.txt but not exported: {missing:?}\n{text}");
        let unlisted: Vec<_> = exported.difference(&listed).collect();
        assert!(unlisted.is_empty(), "exported but not in deploy/metrics.txt: {unlisted:?}");
        for name in &listed {
            assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name}");
            let sampled = text.lines().any(|l| {
                l.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with(['{', ' ', '_']))
            });
            assert!(sampled, "no sample of {name}");
        }
        // Series that exist before their first event: rates and alerts have a baseline.
        for series in [
            r#"gateway_launches_total{protocol="lti",partner="canvas-sandbox",outcome="failed"}"#,
            r#"gateway_launches_total{protocol="smart",partner="epic-sandbox",outcome="completed"}"#,
            r#"gateway_sso_logins_total{protocol="saml",partner="canvas-sandbox",outcome="refused"}"#,
            r#"gateway_usage_events_total{outcome="dropped"}"#,
            r#"gateway_webhook_attempts_total{outcome="failed"}"#,
        ] {
            assert!(text.lines().any(|l| l.starts_with(series)), "{series} missing\n{text}");
        }
        assert!(value(&text, r#"gateway_launches_total{protocol="smart",partner="unknown",outcome="refused"}"#) >= 1.0);
        assert!(value(&text, r#"http_requests_total{method="GET",route="unmatched",status="404"}"#) >= 1.0);
        let backlog = format!(r#"gateway_webhook_deliveries{{partner="canvas-sandbox",endpoint="{endpoint}",state="pending"}}"#);
        assert!(text.contains(&backlog), "{backlog} missing\n{text}");
        let build = format!(
            r#"gateway_build_info{{version="{}",commit=""#,
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{text}");
        assert!(value(&text, "process_resident_memory_bytes") > 0.0);
        assert!(value(&text, "process_open_fds") > 0.0);
        assert!(value(&text, r#"gateway_db_pool_max_connections"#) > 0.0);
    }

    async fn a_timeout_and_a_panic_are_counted_under_their_route(backend) {
        let Some(app) = TestApp::spawn_with(backend, CONFIG, partner_gateway::jobs::Handlers::new()).await else { return };
        let slow = format!("/test-{}/slow", backend_name(backend));
        let boom = format!("/test-{}/boom", backend_name(backend));
        let routes = axum::Router::new()
            .route(&slow, get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                "late"
            }))
            .route(&boom, get(|| async {
                #[allow(clippy::panic)]
                if true { panic!("a handler bug") }
                "never"
            }));
        let router = partner_gateway::http::middleware::with_middleware(routes, app.state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let r = app.client.get(format!("{base}{slow}")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "request_timeout");
        let r = app.client.get(format!("{base}{boom}")).send().await.unwrap();
        assert_eq!(r.status(), 500);

        let text = scrape(&app).await;
        let timed_out = format!(r#"http_requests_total{{method="GET",route="{slow}",status="503"}}"#);
        let panicked = format!(r#"http_requests_total{{method="GET",route="{boom}",status="500"}}"#);
        assert_eq!(value(&text, &timed_out), 1.0, "{text}");
        assert_eq!(value(&text, &panicked), 1.0, "{text}");
        let duration = format!(r#"http_request_duration_seconds_count{{method="GET",route="{slow}",status="503"}}"#);
        assert_eq!(value(&text, &duration), 1.0, "{text}");
    }
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}
