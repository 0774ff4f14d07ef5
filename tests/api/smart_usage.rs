//! What `fhir.request` records and what the `fhir_requests` meter counts (issue 19): the
//! status the app got and whether the partner's FHIR server answered (`reached`); the sample
//! meter counts only calls that reached it, and events recorded before `reached` existed.

use std::time::Duration;

use chrono::Utc;
use partner_gateway::metering::UsageEvent;
use partner_sim::ehr::{Fault, Vendor};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::smart_env::{PARTNER, Setup, SmartEnv};

/// The `fhir_requests` figure for the test partner over the last hour, through the usage
/// API, grouped by resource type when `grouped`.
async fn fhir_requests(env: &SmartEnv, grouped: bool) -> Value {
    env.app.state.usage.flush().await;
    let admin = env.app.admin().await;
    let from = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let mut params = vec![
        ("meter", "fhir_requests"),
        ("partner", PARTNER),
        ("from", from.as_str()),
    ];
    if grouped {
        params.push(("group_by", "$.resource_type"));
    }
    let (status, body) = env.app.query(&admin, &params).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn fhir_request_count(env: &SmartEnv) -> i64 {
    let body = fhir_requests(env, false).await;
    body["data"][0]["value"].as_i64().unwrap()
}

/// A `fhir.request` event as the gateway recorded it before `reached` existed.
async fn legacy_event(env: &SmartEnv, status: u16) {
    let event = UsageEvent {
        partner_id: PARTNER.into(),
        id: uuid::Uuid::now_v7().to_string(),
        source: "partner-gateway/smart".into(),
        event_type: "fhir.request".into(),
        subject: None,
        time: Utc::now(),
        data: Some(
            json!({"launch_id": null, "method": "GET", "resource_type": "Patient", "status": status}),
        ),
        extensions: None,
    };
    let mut tx = env.app.db().begin().await.unwrap();
    assert!(
        partner_gateway::metering::record_usage_event(&mut tx, &env.app.state.subjects, event)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
}

crate::both_backends! {
    async fn calls_the_gateway_answered_itself_are_recorded_as_such_and_not_counted(backend) {
        // No offline_access: no refresh token. Tokens live 3 s.
        let Some(env) = Setup::new(Vendor::Epic, "public")
            .scopes(&["openid", "fhirUser", "patient/Patient.rs", "patient/Observation.rs"])
            .tweak(|o| o.access_token_secs = Some(3))
            .start(backend).await else { return };
        let id = env.launched().await;
        let path = format!("Patient/{}", env.ehr.default_patient());
        let (status, _) = env.fhir_get(&id, &path).await;
        assert_eq!(status, 200);
        // The EHR failing is still a call that reached it.
        env.ehr.inject(Fault::FhirServerError);
        let (status, _) = env.fhir_get(&id, "Observation?category=vital-signs").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(fhir_request_count(&env).await, 2);

        // The token expires and there is nothing to refresh it with: the gateway answers 410.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let before = env.ehr.fhir_requests().len();
        let (status, body) = env.fhir_get(&id, &path).await;
        assert_eq!(status, StatusCode::GONE, "{body}");
        assert_eq!(env.ehr.fhir_requests().len(), before, "nothing went to the EHR");

        let events = env.fhir_events().await;
        let seen: Vec<(u64, bool)> = events.iter()
            .map(|e| (e["status"].as_u64().unwrap(), e["reached"].as_bool().unwrap())).collect();
        assert_eq!(seen, [(200, true), (500, true), (410, false)], "the status the app got, not 502");
        assert_eq!(fhir_request_count(&env).await, 2, "the 410 is not the partner's usage");
        let grouped = fhir_requests(&env, true).await;
        let mut by_type: Vec<(String, i64)> = grouped["data"].as_array().unwrap().iter()
            .map(|b| (b["group"]["$.resource_type"].as_str().unwrap().to_owned(), b["value"].as_i64().unwrap()))
            .collect();
        by_type.sort();
        assert_eq!(by_type, [("Observation".to_owned(), 1), ("Patient".to_owned(), 1)]);

        // Events recorded before `reached` existed count as they always did, whatever
        // their status: the figures of statements issued from them do not change.
        legacy_event(&env, 502).await;
        legacy_event(&env, 200).await;
        assert_eq!(fhir_request_count(&env).await, 4);

        // The meter listing says what is left out.
        let r = env.app.get(&env.app.admin().await, "/v1/usage/meters").await;
        let meters: Value = r.json().await.unwrap();
        let meter = meters["data"].as_array().unwrap().iter().find(|m| m["name"] == "fhir_requests").unwrap();
        assert_eq!(meter["exclude"], json!({"$.reached": false}), "{meter}");
    }

    async fn backend_services_calls_without_a_token_are_not_counted(backend) {
        let Some(env) = Setup::new(Vendor::Epic, "public").start(backend).await else { return };
        let admin = env.app.admin().await;
        let path = format!("/v1/partners/{PARTNER}/fhir/Patient/{}", env.ehr.default_patient());
        // The EHR refuses the client_credentials grant: the gateway answers 502 alone.
        env.ehr.inject(Fault::TokenError { status: 400, error: "invalid_client".into() });
        let r = env.app.get(&admin, &path).await;
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "ehr_token_failed");
        // Then a token, and a call the FHIR server answers.
        let r = env.app.get(&admin, &path).await;
        assert_eq!(r.status(), 200);
        // A token the FHIR server refuses, and a new one refused at the token endpoint: the
        // server answered the first try, so the call reached it.
        env.ehr.expire_access_tokens();
        env.ehr.inject(Fault::TokenError { status: 503, error: "temporarily_unavailable".into() });
        let r = env.app.get(&admin, &path).await;
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);

        let events = env.fhir_events().await;
        let seen: Vec<(u64, bool)> = events.iter()
            .map(|e| (e["status"].as_u64().unwrap(), e["reached"].as_bool().unwrap())).collect();
        assert_eq!(seen, [(502, false), (200, true), (502, true)]);
        assert_eq!(fhir_request_count(&env).await, 2);
    }
}
