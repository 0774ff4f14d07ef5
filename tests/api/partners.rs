use partner_gateway::apikeys::Role;
use serde_json::Value;

use crate::both;

both! {
    async fn admin_finance_and_app_keys_see_every_configured_partner(app) {
        for role in [Role::Admin, Role::Finance, Role::App] {
            let key = app.key(role, None).await;
            let body: Value = app.get(&key, "/v1/partners").await.json().await.unwrap();
            let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
            assert_eq!(ids, ["canvas-sandbox", "cloud-marketplace", "epic-sandbox", "moodle-sandbox", "northwind-consulting", "oracle-health-sandbox", "self-reporter", "self-reporter-2"]);
        }
    }

    async fn a_partner_key_sees_only_its_own_partner(app) {
        let key = app.partner_key("canvas-sandbox").await;
        let body: Value = app.get(&key, "/v1/partners").await.json().await.unwrap();
        assert_eq!(body["data"].as_array().unwrap().len(), 1);
        assert_eq!(body["data"][0]["kind"], "lms");
        assert_eq!(app.get(&key, "/v1/partners/canvas-sandbox").await.status(), 200);
        let resp = app.get(&key, "/v1/partners/epic-sandbox").await;
        assert_eq!(resp.status(), 403);
    }

    async fn an_unknown_partner_is_404(app) {
        let resp = app.get(&app.admin().await, "/v1/partners/nobody").await;
        assert_eq!(resp.status(), 404);
        let body: Value = resp.json().await.unwrap();
        assert!(body["detail"].as_str().unwrap().contains("nobody"));
    }

    async fn a_partner_dropped_from_config_becomes_inactive(app) {
        let fewer: Vec<_> = app.state.config.partners.iter().filter(|p| p.id != "moodle-sandbox").cloned().collect();
        partner_gateway::partners::sync_partners(app.db(), &fewer).await.unwrap();
        let body: Value = app.get(&app.admin().await, "/v1/partners").await.json().await.unwrap();
        assert_eq!(body["data"].as_array().unwrap().len(), 7);
        // Syncing the full list again brings it back.
        partner_gateway::partners::sync_partners(app.db(), &app.state.config.partners).await.unwrap();
        let body: Value = app.get(&app.admin().await, "/v1/partners").await.json().await.unwrap();
        assert_eq!(body["data"].as_array().unwrap().len(), 8);
    }
}

both! {
    // A collection held in memory pages the same way as one read from the store.
    async fn partners_page_by_cursor(app) {
        let admin = app.admin().await;
        let paged = crate::statements::all_pages(&app, &admin, "/v1/partners", 3).await;
        let ids: Vec<&str> = paged.iter().map(|p| p["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 8);
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        // The cursor of one list is refused by another.
        let page: Value = app.get(&admin, "/v1/partners?limit=1").await.json().await.unwrap();
        let c = page["next_cursor"].as_str().unwrap();
        let r = app.get(&admin, &format!("/v1/usage/meters?cursor={c}")).await;
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.unwrap();
        assert!(body["detail"].as_str().unwrap().contains("another list"), "{body}");
    }
}
