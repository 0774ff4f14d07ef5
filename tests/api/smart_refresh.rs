//! Refreshing a launch's token against a token endpoint that fails (issue 19): an early
//! refresh (inside `smart.refresh_ahead_secs`, the token still valid) that fails never fails
//! the call, backs off for `smart.refresh_retry_secs` on every instance, and is tried again
//! after; a refresh that is due (expired token, or a 401 from the FHIR server) fails the
//! call as before.

use std::time::Duration;

use partner_sim::ehr::{OutageSpan, RefreshFailure, Vendor};
use reqwest::StatusCode;

use crate::smart_env::{Setup, SmartEnv};

/// The bearer token of the last request the EHR's FHIR server received.
fn last_bearer(env: &SmartEnv) -> String {
    let seen = env.ehr.fhir_requests().pop().unwrap();
    seen.headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone())
        .unwrap()
}

fn refreshes(env: &SmartEnv) -> usize {
    env.ehr
        .token_requests()
        .into_iter()
        .filter(|r| r.grant_type == "refresh_token")
        .count()
}

fn patient_path(env: &SmartEnv) -> String {
    format!("Patient/{}", env.ehr.default_patient())
}

/// Epic (rotating refresh tokens), every call inside the refresh window: tokens live an hour
/// and are refreshed two hours ahead.
fn in_the_window(retry_secs: u64) -> Setup {
    Setup::new(Vendor::Epic, "confidential-symmetric").extra(&format!(
        "[smart]\nrefresh_ahead_secs = 7200\nrefresh_retry_secs = {retry_secs}\n"
    ))
}

crate::both_backends! {
    async fn a_token_endpoint_down_during_the_window_leaves_calls_on_the_current_token(backend) {
        let Some(env) = in_the_window(3).start(backend).await else { return };
        let id = env.launched().await;
        let path = patient_path(&env);
        // A second instance behind the same load balancer, started before the outage.
        let other = env.app.another_instance_with(&env.config).await;

        env.ehr.fail_refreshes(RefreshFailure::Unavailable, OutageSpan::For(Duration::from_secs(120)));
        let (status, body) = env.fhir_get(&id, &path).await;
        assert_eq!(status, 200, "the token is still valid: {body}");
        assert_eq!(refreshes(&env), 1, "the early refresh was tried once");
        let original = last_bearer(&env);

        // During the back-off neither instance asks the token endpoint again.
        let (status, _) = env.fhir_get(&id, &path).await;
        assert_eq!(status, 200);
        let r = other.client.get(other.url(&format!("/v1/launches/{id}/fhir/{path}")))
            .bearer_auth(&env.app_key).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(refreshes(&env), 1, "the back-off is kept in the store for every instance");
        assert_eq!(last_bearer(&env), original);

        // The endpoint recovers; after the back-off the next call refreshes.
        env.ehr.end_refresh_outage();
        tokio::time::sleep(Duration::from_millis(3200)).await;
        let (status, body) = env.fhir_get(&id, &path).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(refreshes(&env), 2);
        assert_ne!(last_bearer(&env), original, "the call went out with the new token");
        // Every call reached the EHR and counts.
        let events = env.fhir_events().await;
        assert_eq!(events.len(), 4);
        assert!(events.iter().all(|e| e["reached"] == true && e["status"] == 200), "{events:?}");
    }

    async fn a_token_endpoint_that_hangs_during_the_window_leaves_calls_on_the_current_token(backend) {
        let Some(env) = in_the_window(30)
            .outbound("allow_http = true\ntimeout_secs = 1\n")
            .start(backend).await else { return };
        let id = env.launched().await;
        env.ehr.fail_refreshes(RefreshFailure::Hang(Duration::from_secs(4)), OutageSpan::Requests(1));
        let (status, body) = env.fhir_get(&id, &patient_path(&env)).await;
        assert_eq!(status, 200, "the refresh timed out after 1 s; the valid token was used: {body}");
        assert_eq!(refreshes(&env), 1);
    }

    async fn a_refresh_token_refused_early_serves_calls_until_expiry_then_410(backend) {
        // Tokens live 6 s and are always inside the window.
        let Some(env) = Setup::new(Vendor::Epic, "confidential-symmetric")
            .tweak(|o| o.access_token_secs = Some(6))
            .extra("[smart]\nrefresh_ahead_secs = 3600\nrefresh_retry_secs = 1\n")
            .start(backend).await else { return };
        let id = env.launched().await;
        let path = patient_path(&env);
        env.ehr.fail_refreshes(RefreshFailure::InvalidGrant, OutageSpan::For(Duration::from_secs(300)));
        let (status, body) = env.fhir_get(&id, &path).await;
        assert_eq!(status, 200, "not 410 a minute early: {body}");
        assert_eq!(refreshes(&env), 1);
        // A refused refresh token will be refused again: no retry before expiry, even after
        // the ordinary back-off.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let (status, _) = env.fhir_get(&id, &path).await;
        assert_eq!(status, 200);
        assert_eq!(refreshes(&env), 1);
        // Once the token has expired the refresh is due, and its refusal ends the launch.
        tokio::time::sleep(Duration::from_millis(6500)).await;
        let (status, body) = env.fhir_get(&id, &path).await;
        assert_eq!(status, StatusCode::GONE, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("launch again"), "{body}");
        assert_eq!(refreshes(&env), 2);
        let events = env.fhir_events().await;
        let last = events.last().unwrap();
        assert_eq!((last["status"].as_u64(), last["reached"].as_bool()), (Some(410), Some(false)), "{events:?}");
    }

    async fn an_expired_token_whose_refresh_fails_fails_the_call_as_before(backend) {
        // Tokens live 2 s; the default window (60 s) covers them, and a long back-off shows
        // that a due refresh does not wait for it.
        let Some(env) = Setup::new(Vendor::Epic, "confidential-symmetric")
            .tweak(|o| o.access_token_secs = Some(2))
            .extra("[smart]\nrefresh_retry_secs = 600\n")
            .start(backend).await else { return };
        let id = env.launched().await;
        let path = patient_path(&env);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        env.ehr.fail_refreshes(RefreshFailure::Unavailable, OutageSpan::Requests(1));
        let (status, body) = env.fhir_get(&id, &path).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert_eq!(body["code"], "ehr_refresh_failed");
        // The next call refreshes at once (no back-off for a due refresh) and succeeds.
        let (status, body) = env.fhir_get(&id, &path).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(refreshes(&env), 2);
        let events = env.fhir_events().await;
        assert_eq!(events[0]["status"], 502);
        assert_eq!(events[0]["reached"], false, "the gateway answered alone: {events:?}");
        assert_eq!(events[1]["reached"], true);
    }

    async fn a_401_whose_refresh_fails_fails_the_call_as_before(backend) {
        // Default window: the token is fresh; the EHR revoking it forces the refresh.
        let Some(env) = Setup::new(Vendor::Epic, "confidential-symmetric")
            .start(backend).await else { return };
        let id = env.launched().await;
        let path = patient_path(&env);
        env.ehr.expire_access_tokens();
        env.ehr.fail_refreshes(RefreshFailure::Unavailable, OutageSpan::Requests(1));
        let (status, body) = env.fhir_get(&id, &path).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert_eq!(body["code"], "ehr_refresh_failed");
        env.ehr.fail_refreshes(RefreshFailure::InvalidGrant, OutageSpan::Requests(1));
        let (status, body) = env.fhir_get(&id, &path).await;
        assert_eq!(status, StatusCode::GONE, "{body}");
        assert_eq!(refreshes(&env), 2);
        // The FHIR server answered (401) both times: those calls reached it.
        let events = env.fhir_events().await;
        let seen: Vec<(u64, bool)> = events.iter()
            .map(|e| (e["status"].as_u64().unwrap(), e["reached"].as_bool().unwrap())).collect();
        assert_eq!(seen, [(502, true), (410, true)]);
    }
}
