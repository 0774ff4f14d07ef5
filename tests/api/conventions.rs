//! API conventions that hold across areas: another partner's object is 404, exactly as an
//! id that does not exist; a partner named in a filter is 403; a query the framework cannot
//! read is the JSON error body in our words.

use partner_gateway::apikeys::Role;
use partner_gateway::launches::LaunchKind;
use serde_json::Value;

use crate::openapi::{insert_launch_of, lti_context};

crate::both! {
    async fn another_partners_object_is_404_like_an_id_that_does_not_exist(app) {
        let launch = insert_launch_of(&app, Some("canvas-sandbox"), LaunchKind::Lti, 30, lti_context()).await;
        let mine = app.key(Role::Partner, Some("canvas-sandbox")).await;
        let theirs = app.key(Role::Partner, Some("epic-sandbox")).await;
        assert_eq!(app.get(&mine, &format!("/v1/launches/{launch}")).await.status(), 200);
        let other = app.get(&theirs, &format!("/v1/launches/{launch}")).await;
        assert_eq!(other.status(), 404);
        let other: Value = other.json().await.unwrap();
        let missing: Value = app.get(&theirs, "/v1/launches/01a00000-0000-7000-8000-000000000000").await.json().await.unwrap();
        assert_eq!(other["code"], "not_found");
        assert_eq!(other["code"], missing["code"]);
        assert_eq!(other["detail"], format!("no launch {launch:?}"), "no word of whose it is: {other}");
        let fhir = app.get(&theirs, &format!("/v1/launches/{launch}/fhir/Patient/1")).await;
        assert_eq!(fhir.status(), 404);
        // A partner named in a filter is public config: 403 says the key may not.
        let (s, body) = app.query(&theirs, &[("meter", "lti_launches"), ("partner", "canvas-sandbox"), ("from", "2026-11-01T00:00:00Z"), ("to", "2026-12-01T00:00:00Z")]).await;
        assert_eq!(s, 403, "{body}");
    }

    async fn a_query_the_framework_cannot_read_is_said_in_our_words(app) {
        let admin = app.admin().await;
        let r = app.get(&admin, "/v1/statements?limit=many").await;
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "invalid_query");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.starts_with("the query string is invalid: limit"), "{detail}");
        assert!(!detail.contains("Failed to deserialize"), "{detail}");
    }

    // Path and body rejections, like query ones, are the JSON error body with a stable code.
    async fn a_path_or_body_the_framework_cannot_read_is_said_in_our_words(app) {
        let admin = app.admin().await;
        let r = app.get(&admin, "/v1/jobs/%FF%FE").await;
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "invalid_path", "{body}");
        assert!(body["detail"].as_str().unwrap().contains("not UTF-8"), "{body}");
        let finance = app.key(Role::Finance, None).await;
        let r = app
            .client
            .post(app.url("/v1/statements"))
            .bearer_auth(&finance)
            .header("content-type", "application/json")
            .body("{\"partner\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "invalid_body", "{body}");
    }

    // The Idempotency-Key layer keys POST, PUT, PATCH and DELETE only: a method the API does
    // not serve gets its 405 from the router, key or no key.
    async fn a_method_the_api_does_not_serve_is_405_even_with_an_idempotency_key(app) {
        let admin = app.admin().await;
        for _ in 0..2 {
            let r = app
                .client
                .request(reqwest::Method::TRACE, app.url("/v1/partners/epic-sandbox/fhir/Patient"))
                .bearer_auth(&admin)
                .header("Idempotency-Key", "same-key-twice")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 405);
        }
    }

    // An id that names nothing is 404 on the operations acting on one.
    async fn acting_on_nothing_is_404(app) {
        let finance = app.key(Role::Finance, None).await;
        let r = app.client.post(app.url("/v1/statements/stmt_nothing/finalize")).bearer_auth(&finance).json(&serde_json::json!({})).send().await.unwrap();
        assert_eq!(r.status(), 404);
        let admin = app.admin().await;
        let r = app
            .client
            .post(app.url("/v1/webhooks/endpoints"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"url": "https://hooks.example.com/in", "event_types": ["grade.*"], "partner": "nobody"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{}", r.text().await.unwrap());
    }
}
