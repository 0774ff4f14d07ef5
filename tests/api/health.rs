use crate::both;

both! {
    async fn healthz_answers_with_a_request_id(app) {
        let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let id = resp.headers().get("x-request-id").unwrap().to_str().unwrap();
        assert_eq!(id.len(), 36, "a generated uuid: {id}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        let commit = body["commit"].as_str().unwrap();
        assert!(commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()), "{body}");
    }

    async fn an_incoming_request_id_is_kept(app) {
        let resp = app.client.get(app.url("/healthz")).header("x-request-id", "abc-123").send().await.unwrap();
        assert_eq!(resp.headers()["x-request-id"], "abc-123");
    }

    async fn readyz_reports_the_database_and_current_migrations(app) {
        let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["migrations"], "current");
        assert_eq!(body["database"], "ok");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        assert!(body["commit"].is_string(), "{body}");
    }

    async fn metrics_expose_requests_usage_and_job_depth(app) {
        let key = app.partner_key(crate::helpers::REPORTER).await;
        let ev = crate::helpers::event("m1", "app.launch", "u1", "2026-11-01T00:00:00Z");
        assert_eq!(app.post_json(&key, &ev).await.status(), 202);
        let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(text.contains(r#"http_requests_total{method="POST",route="/v1/usage/events",status="202"}"#), "{text}");
        assert!(text.contains("http_request_duration_seconds_bucket"), "{text}");
        assert!(text.contains(r#"gateway_usage_events_total{outcome="accepted"}"#), "{text}");
        assert!(text.contains(r#"gateway_usage_events_total{outcome="rejected"}"#), "{text}");
        assert!(text.contains(r#"gateway_jobs{state="dead"}"#), "{text}");
    }

    async fn an_unknown_route_is_a_json_404(app) {
        let resp = app.client.get(app.url("/nope")).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "not_found");
        assert!(body["detail"].as_str().unwrap().contains("/nope"));
    }

    async fn a_wrong_method_is_a_json_405(app) {
        let resp = app.client.delete(app.url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 405);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "method_not_allowed");
    }

    async fn a_malformed_query_is_a_json_400(app) {
        let resp = app.get(&app.admin().await, "/v1/jobs?limit=lots").await;
        assert_eq!(resp.status(), 400);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "invalid_query");
        assert!(body["detail"].as_str().unwrap().contains("limit"), "{body}");
    }
}
