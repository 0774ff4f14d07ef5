use partner_gateway::apikeys::{self, Role};

use partner_gateway::jobs::Handlers;

use crate::both;
use crate::helpers::TestApp;

both! {
    async fn a_request_without_a_key_is_401(app) {
        let resp = app.client.get(app.url("/v1/partners")).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
    }

    async fn an_unknown_key_is_401(app) {
        let resp = app.get("pgw_0000000000000000000000000000000000000000000000", "/v1/partners").await;
        assert_eq!(resp.status(), 401);
        let resp = app.client.get(app.url("/v1/partners")).header("authorization", "Basic abc").send().await.unwrap();
        assert_eq!(resp.status(), 401);
    }

    async fn only_a_hash_of_the_key_is_stored(app) {
        let secret = app.admin().await;
        let hashes: Vec<String> = partner_gateway::with_db!(app.db(), pool => {
            sqlx::query_scalar("SELECT key_hash || prefix || COALESCE(name, '') FROM api_keys").fetch_all(pool).await
        }).unwrap();
        assert!(hashes.iter().all(|h| !h.contains(&secret)));
    }

    async fn a_finance_key_may_not_record_usage(app) {
        let key = app.key(Role::Finance, None).await;
        let resp = app.post_json(&key, &crate::helpers::event("f1", "smart.launch", "u", "2026-11-01T00:00:00Z")).await;
        assert_eq!(resp.status(), 403);
        assert_eq!(app.ledger_count().await, 0);
    }

    async fn only_admin_keys_see_the_job_queue(app) {
        for role in [Role::Finance, Role::App] {
            let key = app.key(role, None).await;
            assert_eq!(app.get(&key, "/v1/jobs").await.status(), 403);
        }
        let key = app.partner_key("epic-sandbox").await;
        assert_eq!(app.get(&key, "/v1/jobs").await.status(), 403);
        assert_eq!(app.get(&app.admin().await, "/v1/jobs").await.status(), 200);
    }
}

crate::both_backends! {
    // Keys are cached after first use; a revocation made elsewhere (here straight in the
    // store, as the CLI or another instance does) must reach this instance within the lag.
    async fn a_revoked_key_is_refused_within_the_cache_lag(backend) {
        let extra = "[jobs]\nenabled = false\n[http]\napi_key_cache_ms = 300\n";
        let Some(app) = TestApp::spawn_with(backend, extra, Handlers::new()).await else { return };
        let other = app.another_instance_with(extra).await;
        let (record, secret) = apikeys::create_api_key(app.db(), Role::Admin, None, None).await.unwrap();
        let (_, kept) = apikeys::create_api_key(app.db(), Role::Admin, None, None).await.unwrap();
        for a in [&app, &other] {
            assert_eq!(a.get(&secret, "/v1/partners").await.status(), 200);
            assert_eq!(a.get(&kept, "/v1/partners").await.status(), 200);
        }
        assert!(apikeys::revoke_api_key(app.db(), &record.id).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(350)).await;
        for a in [&app, &other] {
            let resp = a.get(&secret, "/v1/partners").await;
            assert_eq!(resp.status(), 401);
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["detail"], "unknown or revoked API key");
            // The other keys keep working (read again from the store after the clear).
            assert_eq!(a.get(&kept, "/v1/partners").await.status(), 200);
        }
        other.stop().await;
        app.stop().await;
    }

    async fn with_the_cache_off_a_revocation_is_immediate(backend) {
        let extra = "[jobs]\nenabled = false\n[http]\napi_key_cache_ms = 0\n";
        let Some(app) = TestApp::spawn_with(backend, extra, Handlers::new()).await else { return };
        let (record, secret) = apikeys::create_api_key(app.db(), Role::Admin, None, None).await.unwrap();
        assert_eq!(app.get(&secret, "/v1/partners").await.status(), 200);
        assert!(apikeys::revoke_api_key(app.db(), &record.id).await.unwrap());
        assert_eq!(app.get(&secret, "/v1/partners").await.status(), 401);
        app.stop().await;
    }

    // A key created after the cache filled works at once (misses go to the store).
    async fn a_new_key_works_at_once_with_the_cache_on(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let first = app.admin().await;
        assert_eq!(app.get(&first, "/v1/partners").await.status(), 200);
        let (_, second) = apikeys::create_api_key(app.db(), Role::Admin, None, None).await.unwrap();
        assert_eq!(app.get(&second, "/v1/partners").await.status(), 200);
        assert_eq!(app.get("pgw_nope", "/v1/partners").await.status(), 401);
        app.stop().await;
    }
}
