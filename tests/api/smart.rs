//! SMART on FHIR end to end against the mock EHR: EHR and standalone launches for each
//! client type, the handoff, the FHIR proxy with refresh, the patient summary, Backend
//! Services, and every rejection the issue lists.

use partner_sim::ehr::{DiscoveryMode, Fault, IdTokenFault, Vendor};
use reqwest::Method;
use serde_json::Value;

use crate::helpers::urlencode;
use crate::smart_env::{PARTNER, Setup, SmartEnv, default_context};

async fn env(
    backend: crate::helpers::Backend,
    vendor: Vendor,
    client_type: &'static str,
) -> Option<SmartEnv> {
    Setup::new(vendor, client_type).start(backend).await
}

crate::both_backends! {
    async fn an_ehr_launch_with_a_public_client_hands_the_app_its_context(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let code = env.ehr_launch(default_context(&env.ehr)).await.code();
        let (status, ctx) = env.exchange(&code).await;
        assert_eq!(status, 200, "{ctx}");
        assert_eq!(ctx["kind"], "smart");
        assert_eq!(ctx["partner"], PARTNER);
        assert_eq!(ctx["patient"], env.ehr.default_patient());
        assert_eq!(ctx["encounter"], "enc-1");
        assert_eq!(ctx["fhirContext"][0]["reference"], "DiagnosticReport/dr-1");
        assert_eq!(ctx["need_patient_banner"], true);
        assert_eq!(ctx["smart_style_url"], "https://ehr.example.test/style.json");
        assert_eq!(ctx["intent"], "reconcile-medications");
        assert_eq!(ctx["iss"], env.ehr.iss());
        // Epic's fhirUser is absolute already.
        let fhir_user = format!("{}/Practitioner/{}", env.ehr.iss(), env.ehr.default_practitioner());
        assert_eq!(ctx["user"]["fhirUser"], fhir_user);
        assert_eq!(ctx["user"]["id"], fhir_user);
        assert!(ctx["scopes"].as_array().unwrap().iter().any(|s| s == "patient/Patient.rs"));
        assert!(ctx["expires_at"].is_string());
        // Unknown token response fields reach the app; tokens never do.
        assert!(ctx["extra"].as_object().unwrap().keys().any(|k| k.starts_with("__epic")), "{ctx}");
        let text = ctx.to_string();
        assert!(!text.contains("access_token") && !text.contains("refresh_token"), "{text}");
        // The public client authenticated with client_id only, with PKCE.
        let req = env.ehr.token_requests().into_iter().find(|r| r.grant_type == "authorization_code").unwrap();
        assert_eq!(req.client_auth, "none");
        assert!(req.form.contains_key("code_verifier"));
        // One smart.launch event with the user as subject, in the launch's transaction.
        assert_eq!(env.usage_count("smart.launch").await, 1);
        let subject: Option<String> = partner_gateway::with_db!(env.app.db(), pool => {
            sqlx::query_scalar("SELECT subject FROM usage_events WHERE type = 'smart.launch'").fetch_one(pool).await
        }).unwrap();
        // Stored as its pseudonym (PRIVACY.md), never the id itself.
        let pseudonym = env.app.state.subjects.pseudonym(PARTNER, &fhir_user);
        assert_eq!(subject.as_deref(), Some(pseudonym.as_str()));
        assert!(!pseudonym.contains(fhir_user.as_str()));
    }

    async fn the_authorization_request_carries_every_smart_parameter(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let launch = env.ehr.launch(default_context(&env.ehr));
        let authorize = env.open_from_ehr(&launch).await;
        let url = url::Url::parse(&authorize).unwrap();
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "app-public");
        assert_eq!(q["redirect_uri"], format!("{}/smart/callback", env.gateway));
        assert_eq!(q["launch"], launch);
        assert_eq!(q["aud"], env.ehr.iss());
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"].len(), 43);
        assert!(q["state"].len() >= 22, "state carries at least 128 bits");
        assert!(q["scope"].split(' ').any(|s| s == "launch"));
    }

    async fn a_symmetric_client_authenticates_with_http_basic(backend) {
        let Some(env) = env(backend, Vendor::Epic, "confidential-symmetric").await else { return };
        let id = env.launched().await;
        assert!(!id.is_empty());
        let req = env.ehr.token_requests().into_iter().find(|r| r.grant_type == "authorization_code").unwrap();
        assert_eq!(req.client_auth, "client_secret_basic");
        assert!(!req.form.contains_key("client_secret"));
    }

    async fn an_asymmetric_client_signs_a_short_lived_single_use_assertion(backend) {
        let Some(env) = env(backend, Vendor::Epic, "confidential-asymmetric").await else { return };
        env.launched().await;
        env.launched().await;
        let reqs: Vec<_> = env.ehr.token_requests().into_iter().filter(|r| r.grant_type == "authorization_code").collect();
        assert_eq!(reqs.len(), 2);
        let mut jtis = Vec::new();
        for r in &reqs {
            assert_eq!(r.client_auth, "private_key_jwt");
            let header = r.assertion_header.as_ref().unwrap();
            assert_eq!(header["alg"], "RS384");
            assert!(header["kid"].is_string());
            let claims = r.assertion_claims.as_ref().unwrap();
            assert_eq!(claims["aud"], env.ehr.token_url());
            assert_eq!(claims["iss"], "app-asym");
            assert_eq!(claims["sub"], "app-asym");
            let life = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
            assert!(life > 0 && life <= 300, "exp is within five minutes: {life}");
            jtis.push(claims["jti"].as_str().unwrap().to_owned());
        }
        assert_ne!(jtis[0], jtis[1]);
    }

    async fn a_standalone_launch_at_oracle_keeps_the_tenant_and_the_granted_scopes(backend) {
        let Some(env) = Setup::new(Vendor::Oracle, "confidential-asymmetric")
            .scopes(&["openid", "fhirUser", "offline_access", "patient/Patient.read", "patient/Patient.rs"])
            .tweak(|o| o.clients[0].v2_scopes = true)
            .start(backend).await else { return };
        let code = env.standalone_launch().await.code();
        let (status, ctx) = env.exchange(&code).await;
        assert_eq!(status, 200, "{ctx}");
        assert_eq!(ctx["tenant"], env.ehr.tenant().unwrap());
        assert_eq!(ctx["patient"], env.ehr.default_patient());
        assert_eq!(ctx["launch_type"], "standalone");
        // Oracle's fhirUser is relative; the app gets it absolute.
        assert_eq!(ctx["user"]["fhirUser"], format!("{}/Practitioner/{}", env.ehr.iss(), env.ehr.default_practitioner()));
        // The v1 scope was dropped for this v2 registration: the granted list says so.
        let scopes: Vec<&str> = ctx["scopes"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert!(scopes.contains(&"patient/Patient.rs"), "{scopes:?}");
        assert!(!scopes.contains(&"patient/Patient.read"), "{scopes:?}");
        let auth = env.ehr.token_requests()[0].form.get("scope").cloned();
        assert!(auth.is_none(), "scope is not sent with the code");
    }

    // Issue 19: a registration listing `launch/encounter` but not `launch/patient` sent no
    // patient scope on a standalone launch, and the launch completed with `patient: null`.
    async fn a_standalone_launch_for_an_encounter_asks_for_the_patient_too(backend) {
        let Some(env) = Setup::new(Vendor::Epic, "public")
            .scopes(&["launch/encounter", "openid", "fhirUser", "patient/Patient.rs"])
            .start(backend).await else { return };
        let (status, location, body) = env.visit(&format!("{}/smart/{PARTNER}/start", env.gateway)).await;
        assert_eq!(status, 302, "{body}");
        let authorize = location.unwrap();
        let scope = url::Url::parse(&authorize).unwrap().query_pairs()
            .find(|(k, _)| k == "scope").map(|(_, v)| v.into_owned()).unwrap();
        assert_eq!(scope, "launch/patient launch/encounter openid fhirUser patient/Patient.rs");
        let code = env.callback(&env.authorize(&authorize).await).await.code();
        let (status, ctx) = env.exchange(&code).await;
        assert_eq!(status, 200, "{ctx}");
        assert_eq!(ctx["launch_type"], "standalone");
        assert_eq!(ctx["patient"], env.ehr.default_patient(), "{ctx}");
        let id = ctx["launch_id"].as_str().unwrap();
        let r = env.app.get(&env.app_key, &format!("/v1/launches/{id}/patient")).await;
        assert_eq!(r.status(), 200, "the patient summary works for the launch");
        // The same registration's EHR launch sends `launch` alone.
        let launch = env.ehr.launch(default_context(&env.ehr));
        let authorize = env.open_from_ehr(&launch).await;
        let scope = url::Url::parse(&authorize).unwrap().query_pairs()
            .find(|(k, _)| k == "scope").map(|(_, v)| v.into_owned()).unwrap();
        assert_eq!(scope, "launch openid fhirUser patient/Patient.rs");
    }

    async fn discovery_falls_back_to_the_capability_statement(backend) {
        let Some(env) = Setup::new(Vendor::Generic, "public")
            .tweak(|o| o.discovery = DiscoveryMode::MetadataOnly)
            .scopes(&["patient/Patient.rs"])
            .start(backend).await else { return };
        let id = env.launched().await;
        let (status, body) = env.fhir_get(&id, &format!("Patient/{}", env.ehr.default_patient())).await;
        assert_eq!(status, 200, "{body}");
    }

    async fn the_proxy_streams_fhir_calls_with_the_launch_token(backend) {
        let Some(env) = env(backend, Vendor::Epic, "confidential-asymmetric").await else { return };
        let id = env.launched().await;
        let patient = env.ehr.default_patient();
        let r = env.fhir(Method::GET, &id, &format!("Observation?patient={patient}&category=vital-signs"))
            .header("accept", "application/fhir+json")
            .header("prefer", "handling=strict")
            .header("cookie", "session=leak")
            .send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/fhir+json"));
        let bundle: Value = r.json().await.unwrap();
        assert_eq!(bundle["resourceType"], "Bundle");
        let seen = env.ehr.fhir_requests().pop().unwrap();
        assert_eq!(seen.path, "Observation");
        assert_eq!(seen.query.as_deref(), Some(format!("patient={patient}&category=vital-signs").as_str()));
        let header = |n: &str| seen.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(header("prefer").as_deref(), Some("handling=strict"));
        assert!(header("cookie").is_none(), "the caller's cookies stay at the gateway");
        let bearer = header("authorization").unwrap();
        assert!(bearer.starts_with("Bearer ") && !bearer.contains("pgw_"), "the EHR's token, not the API key");
        // Writes pass their body through and their Location back.
        let obs = serde_json::json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "heart rate"}, "subject": {"reference": format!("Patient/{patient}")}});
        let r = env.fhir(Method::POST, &id, "Observation")
            .header("content-type", "application/fhir+json")
            .body(obs.to_string()).send().await.unwrap();
        assert_eq!(r.status(), 201);
        assert!(r.headers().contains_key("location"));
        assert_eq!(env.ehr.fhir_requests().pop().unwrap().body, obs.to_string().into_bytes());
        // Large bodies stream through byte for byte.
        let r = env.fhir(Method::GET, &id, "Binary/large").send().await.unwrap();
        let bytes = r.bytes().await.unwrap();
        assert_eq!(bytes.len(), 4 * 1024 * 1024);
        assert!(bytes.iter().enumerate().all(|(i, b)| *b as usize == i % 251));
        // Each call is a fhir.request usage event.
        assert_eq!(env.usage_count("fhir.request").await, 3);
        // The access token is sealed at rest.
        let token = bearer.trim_start_matches("Bearer ").to_owned();
        let rows: Vec<Vec<u8>> = partner_gateway::with_db!(env.app.db(), pool => {
            sqlx::query_scalar("SELECT sealed_access_token FROM smart_sessions").fetch_all(pool).await
        }).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(!rows[0].windows(token.len()).any(|w| w == token.as_bytes()));
    }

    async fn an_expired_token_is_refreshed_once_and_the_call_succeeds(backend) {
        let Some(env) = env(backend, Vendor::Epic, "confidential-symmetric").await else { return };
        let id = env.launched().await;
        let path = format!("Patient/{}", env.ehr.default_patient());
        env.ehr.expire_access_tokens();
        let (status, body) = env.fhir_get(&id, &path).await;
        assert_eq!(status, 200, "{body}");
        let refreshes = env.ehr.token_requests().into_iter().filter(|r| r.grant_type == "refresh_token").count();
        assert_eq!(refreshes, 1);
        // Epic rotated the refresh token; the next refresh uses the new one.
        env.ehr.expire_access_tokens();
        let (status, _) = env.fhir_get(&id, &path).await;
        assert_eq!(status, 200);
        let refreshes: Vec<_> = env.ehr.token_requests().into_iter().filter(|r| r.grant_type == "refresh_token").collect();
        assert_eq!(refreshes.len(), 2);
        assert_ne!(refreshes[0].form["refresh_token"], refreshes[1].form["refresh_token"]);
    }

    async fn oracle_tokens_are_refreshed_ahead_of_expiry_and_the_refresh_token_is_kept(backend) {
        // Oracle's tokens live 570 s; with refresh_ahead_secs = 600 every call is "due".
        let Some(env) = Setup::new(Vendor::Oracle, "confidential-asymmetric")
            .extra("[smart]\nrefresh_ahead_secs = 600\n")
            .start(backend).await else { return };
        let id = env.launched().await;
        let path = format!("Patient/{}", env.ehr.default_patient());
        for _ in 0..2 {
            let (status, body) = env.fhir_get(&id, &path).await;
            assert_eq!(status, 200, "{body}");
        }
        let refreshes: Vec<_> = env.ehr.token_requests().into_iter().filter(|r| r.grant_type == "refresh_token").collect();
        assert_eq!(refreshes.len(), 2);
        // Oracle returns no new refresh token: the original is used again.
        assert_eq!(refreshes[0].form["refresh_token"], refreshes[1].form["refresh_token"]);
    }

    async fn the_patient_summary_reads_the_launch_patient_with_typed_models(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let id = env.launched().await;
        let r = env.app.get(&env.app_key, &format!("/v1/launches/{id}/patient")).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let p = &body["patient"];
        assert_eq!(p["id"], env.ehr.default_patient());
        assert_eq!(p["parsed_with"], "typed");
        assert!(p["name"].as_str().unwrap().contains("Lopez"), "{p}");
        assert!(p["birth_date"].is_string() && p["gender"].is_string());
        assert!(!p["identifiers"].as_array().unwrap().is_empty());
        let seen = env.ehr.fhir_requests().pop().unwrap();
        let accept = seen.headers.iter().find(|(k, _)| k == "accept").unwrap().1.clone();
        assert!(accept.contains("fhirVersion=4.0"), "{accept}");
    }

    async fn backend_services_tokens_are_cached_and_serve_admin_fhir_calls(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let admin = env.app.admin().await;
        let path = format!("/v1/partners/{PARTNER}/fhir/Patient/{}", env.ehr.default_patient());
        for _ in 0..2 {
            let r = env.app.get(&admin, &path).await;
            assert_eq!(r.status(), 200);
        }
        let grants: Vec<_> = env.ehr.token_requests().into_iter().filter(|r| r.grant_type == "client_credentials").collect();
        assert_eq!(grants.len(), 1, "the token is reused until shortly before expiry");
        assert_eq!(grants[0].client_auth, "private_key_jwt");
        assert_eq!(grants[0].form["scope"], "system/Patient.rs system/Observation.rs");
        let partner_key = env.app.partner_key(PARTNER).await;
        assert_eq!(env.app.get(&partner_key, &path).await.status(), 403);
    }

    async fn backend_services_writes_go_through_with_every_method(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let admin = env.app.admin().await;
        let base = format!("/v1/partners/{PARTNER}/fhir");
        let patient = env.ehr.default_patient();
        let obs = serde_json::json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "weight"}, "subject": {"reference": format!("Patient/{patient}")}});
        let send = |m: Method, path: String, ct: &'static str, body: String| {
            env.app.client.request(m, env.app.url(&path)).bearer_auth(&admin).header("content-type", ct).body(body).send()
        };
        let r = send(Method::POST, format!("{base}/Observation"), "application/fhir+json", obs.to_string()).await.unwrap();
        assert_eq!(r.status(), 201);
        let mut put = obs.clone();
        put["id"] = "o-9".into();
        let r = send(Method::PUT, format!("{base}/Observation/o-9"), "application/fhir+json", put.to_string()).await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let r = send(Method::PATCH, format!("{base}/Observation/o-9"), "application/json-patch+json",
            r#"[{"op":"replace","path":"/status","value":"amended"}]"#.into()).await.unwrap();
        assert_eq!(r.status(), 200);
        let r = send(Method::DELETE, format!("{base}/Observation/o-9"), "application/fhir+json", String::new()).await.unwrap();
        assert_eq!(r.status(), 204);
        let seen: Vec<String> = env.ehr.fhir_requests().into_iter().map(|r| r.method).collect();
        assert_eq!(seen, ["POST", "PUT", "PATCH", "DELETE"]);
    }
}

// ---- rejections ----

crate::both_backends! {
    async fn a_launch_from_an_unregistered_iss_gets_a_page_naming_it(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let iss = "https://rogue.example.com/fhir";
        let (status, _, body) = env.visit(&format!("{}/smart/launch?iss={}&launch=x", env.gateway, urlencode(iss))).await;
        assert_eq!(status, 400);
        assert!(body.contains("not registered") && body.contains(iss), "{body}");
        assert!(env.ehr.token_requests().is_empty());
    }

    async fn a_callback_without_state_is_refused(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let (status, _, body) = env.visit(&format!("{}/smart/callback?code=abc", env.gateway)).await;
        assert_eq!(status, 400);
        assert!(body.contains("no state"), "{body}");
    }

    async fn a_callback_with_an_unknown_state_is_refused(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let (status, _, body) = env.visit(&format!("{}/smart/callback?code=abc&state=forged", env.gateway)).await;
        assert_eq!(status, 400);
        assert!(body.contains("not one the gateway started"), "{body}");
        assert!(env.ehr.token_requests().is_empty(), "no code exchange for a forged state");
    }

    async fn a_reused_callback_is_refused(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let launch = env.ehr.launch(default_context(&env.ehr));
        let callback = env.authorize(&env.open_from_ehr(&launch).await).await;
        env.callback(&callback).await.code();
        let (status, body) = env.callback(&callback).await.page();
        assert_eq!(status, 400);
        assert!(body.contains("already used"), "{body}");
    }

    // Login CSRF (issue 17, M2): an attacker stops its own launch at the callback and sends
    // the link. The browser that follows it did not start that launch: refused, and the
    // state is left for the browser that did.
    async fn a_callback_from_another_browser_is_refused_and_the_launch_can_still_finish(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let launch = env.ehr.launch(default_context(&env.ehr));
        let r = env.browser.get(format!("{}/smart/launch?iss={}&launch={}", env.gateway, urlencode(&env.ehr.iss()), urlencode(&launch)))
            .send().await.unwrap();
        assert_eq!(r.status(), 302);
        let set: Vec<String> = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert_eq!(set.len(), 1, "{set:?}");
        let cookie = &set[0];
        assert!(cookie.starts_with("pgw_smart_"), "{cookie}");
        // Over plain HTTP (this test) Lax, on /smart only, not readable by script.
        for attr in ["Path=/smart", "HttpOnly", "SameSite=Lax", "Max-Age=600"] {
            assert!(cookie.contains(attr), "{attr} missing: {cookie}");
        }
        let name = cookie.split('=').next().unwrap().to_owned();
        let authorize = r.headers()["location"].to_str().unwrap().to_owned();
        let callback = env.authorize(&authorize).await;
        let other = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        for forged in [None, Some(format!("{name}=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))] {
            let mut req = other.get(&callback);
            if let Some(c) = &forged {
                req = req.header("cookie", c);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 400, "{forged:?}");
            assert!(r.headers().get("location").is_none());
            let body = r.text().await.unwrap();
            assert!(body.contains("started in another browser"), "{body}");
        }
        assert!(env.ehr.token_requests().is_empty(), "no code exchange for the wrong browser");
        // The browser that started it finishes, once.
        let code = env.callback(&callback).await.code();
        assert_eq!(env.exchange(&code).await.0, 200);
        let (status, body) = env.callback(&callback).await.page();
        assert_eq!(status, 400);
        assert!(body.contains("already used"), "{body}");
        assert_eq!(env.usage_count("smart.launch").await, 1);
    }

    async fn a_standalone_launch_is_bound_to_its_browser_too(backend) {
        let Some(env) = env(backend, Vendor::Generic, "public").await else { return };
        let (status, location, _) = env.visit(&format!("{}/smart/{PARTNER}/start", env.gateway)).await;
        assert_eq!(status, 302);
        let callback = env.authorize(&location.unwrap()).await;
        let other = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let r = other.get(&callback).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("started in another browser"));
        env.callback(&callback).await.code();
    }

    async fn an_expired_state_is_refused(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let launch = env.ehr.launch(default_context(&env.ehr));
        let callback = env.authorize(&env.open_from_ehr(&launch).await).await;
        env.exec("UPDATE smart_states SET expires_at_us = 0").await;
        let (status, body) = env.callback(&callback).await.page();
        assert_eq!(status, 400);
        assert!(body.contains("expired"), "{body}");
    }

    async fn an_error_from_the_ehr_is_shown_to_the_user(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        env.ehr.inject(Fault::DenyAuthorize);
        let launch = env.ehr.launch(default_context(&env.ehr));
        let callback = env.authorize(&env.open_from_ehr(&launch).await).await;
        let (status, body) = env.callback(&callback).await.page();
        assert_eq!(status, 400);
        assert!(body.contains("access_denied") && body.contains("did not authorize"), "{body}");
    }

    async fn a_failed_code_exchange_is_reported(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        env.ehr.inject(Fault::TokenError { status: 400, error: "invalid_grant".into() });
        let (status, body) = env.ehr_launch(default_context(&env.ehr)).await.page();
        assert_eq!(status, 502);
        assert!(body.contains("invalid_grant"), "{body}");
        assert_eq!(env.usage_count("smart.launch").await, 0, "no launch is recorded");
    }

    async fn id_tokens_that_cannot_be_trusted_are_refused(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        for (fault, expect) in [
            (IdTokenFault::BadSignature, "signature does not verify"),
            (IdTokenFault::WrongAudience, "audience"),
            (IdTokenFault::Expired, "expired"),
            (IdTokenFault::AlgNone, "algorithm none"),
            (IdTokenFault::Hs256WithPublicKey, "algorithm HS256"),
            (IdTokenFault::WrongIssuer, "issuer"),
        ] {
            env.ehr.inject(Fault::IdToken(fault));
            let (status, body) = env.ehr_launch(default_context(&env.ehr)).await.page();
            assert_eq!(status, 502, "{fault:?}");
            assert!(body.contains("could not be trusted") && body.contains(expect), "{fault:?}: {body}");
        }
        assert_eq!(env.usage_count("smart.launch").await, 0);
    }

    async fn a_handoff_code_works_once_and_only_while_fresh(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let code = env.ehr_launch(default_context(&env.ehr)).await.code();
        assert_eq!(env.exchange(&code).await.0, 200);
        let (status, body) = env.exchange(&code).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("code_used")), "{body}");
        let code = env.ehr_launch(default_context(&env.ehr)).await.code();
        env.exec("UPDATE launch_handoffs SET expires_at_us = 0 WHERE used_at_us IS NULL").await;
        let (status, body) = env.exchange(&code).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("code_expired")), "{body}");
        let (status, body) = env.exchange("never-issued").await;
        assert_eq!((status, body["code"].as_str()), (400, Some("unknown_code")), "{body}");
    }

    async fn only_app_keys_exchange_codes(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let code = env.ehr_launch(default_context(&env.ehr)).await.code();
        let partner_key = env.app.partner_key(PARTNER).await;
        assert_eq!(env.exchange_with(&partner_key, &code).await.0, 403);
        assert_eq!(env.exchange(&code).await.0, 200, "the refused attempt did not spend the code");
    }

    async fn proxy_paths_that_leave_the_fhir_base_are_refused(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let id = env.launched().await;
        let before = env.ehr.fhir_requests().len();
        for path in [
            "Patient/%2e%2e/%2e%2e/oauth2/token",
            "Patient/../../oauth2/token",
            "Patient%2F..%2F..%2Fx",
            "http://evil.example.com/x",
            "http:%2F%2Fevil.example.com/x",
            "Patient/..%5Cx",
            "Patient//1",
        ] {
            let (status, body) = env.raw_get(&env.app_key, &format!("/v1/launches/{id}/fhir/{path}")).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body.contains("invalid_fhir_path"), "{path}: {body}");
        }
        assert_eq!(env.ehr.fhir_requests().len(), before, "nothing reached the EHR");
    }

    // L7: what a Java (Tomcat, Jetty), IIS or double-decoding FHIR server would read as a
    // way out of the FHIR base is refused by both proxies before anything is forwarded.
    async fn proxy_paths_a_java_or_iis_server_would_read_as_a_traversal_are_refused_on_both_proxies(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let id = env.launched().await;
        let admin = env.app.admin().await;
        let before = env.ehr.fhir_requests().len();
        for path in [
            "Patient/..;/..;/oauth2/token",
            "Patient/..;jsessionid=x/..;/admin",
            "Patient;x=1/1",
            "Patient/1;a=b",
            "Patient/%252e%252e/%252e%252e/oauth2/token",
            "Patient/%25%32%65%25%32%65/x",
            "Patient/%252f..%252f..%252fadmin",
            "Patient/..%3b/x",
            "Patient/.%2e/x",
            "Patient/%u002e%u002e/x",
            "Patient/%ef%bc%8e%ef%bc%8e/x",
            "Patient/...",
            "Patient/a%2fb",
            "Patient/a%5Cb",
            "Patient/1%3Fx=1",
            "Patient/1%00",
        ] {
            for (key, url) in [
                (&env.app_key, format!("/v1/launches/{id}/fhir/{path}")),
                (&admin, format!("/v1/partners/{PARTNER}/fhir/{path}")),
            ] {
                let (status, body) = env.raw_get(key, &url).await;
                assert_eq!(status, 400, "{url}: {body}");
                // A NUL is refused earlier, by the check every `/v1` request passes.
                let code = if path.ends_with("%00") { "nul_character" } else { "invalid_fhir_path" };
                assert!(body.contains(code), "{url}: {body}");
            }
        }
        // Overlong UTF-8 (`%c0%ae` for `.`) is not UTF-8: refused (JSON 400) before the
        // proxy sees it.
        for url in [
            format!("/v1/launches/{id}/fhir/Patient/%c0%ae%c0%ae/x"),
            format!("/v1/partners/{PARTNER}/fhir/Patient/%c0%ae%c0%ae/x"),
        ] {
            let key = if url.contains("/partners/") { &admin } else { &env.app_key };
            let (status, body) = env.raw_get(key, &url).await;
            assert_eq!(status, 400, "{url}");
            assert!(body.contains("\"code\":\"invalid_path\""), "{url}: {body}");
        }
        assert_eq!(env.ehr.fhir_requests().len(), before, "nothing reached the EHR");
        // FHIR's own paths still go through both.
        let patient = env.ehr.default_patient();
        let (status, body) = env.raw_get(&env.app_key, &format!("/v1/launches/{id}/fhir/Patient/{patient}")).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = env.raw_get(&admin, &format!("/v1/partners/{PARTNER}/fhir/Patient/{patient}")).await;
        assert_eq!(status, 200, "{body}");
    }

    async fn a_launch_is_refused_to_another_partners_key(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let id = env.launched().await;
        let other = env.app.partner_key("epic-sandbox").await;
        let r = env.app.get(&other, &format!("/v1/launches/{id}/fhir/Patient/{}", env.ehr.default_patient())).await;
        assert_eq!(r.status(), 404, "another partner's launch is as good as none");
        let own = env.app.partner_key(PARTNER).await;
        let r = env.app.get(&own, &format!("/v1/launches/{id}")).await;
        assert_eq!(r.status(), 200);
        let r = env.app.get(&env.app_key, "/v1/launches/00000000-0000-0000-0000-000000000000/fhir/Patient/x").await;
        assert_eq!(r.status(), 404);
    }

    async fn an_expired_launch_is_gone(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let id = env.launched().await;
        env.exec("UPDATE launches SET expires_at_us = 0").await;
        let r = env.app.get(&env.app_key, &format!("/v1/launches/{id}")).await;
        assert_eq!(r.status(), 410);
    }
}

crate::both_backends! {
    async fn a_launch_started_on_one_instance_finishes_on_another(backend) {
        let Some(env) = env(backend, Vendor::Epic, "confidential-asymmetric").await else { return };
        let other = env.app.another_instance_with(&env.config).await;
        let launch = env.ehr.launch(default_context(&env.ehr));
        let callback = env.authorize(&env.open_from_ehr(&launch).await).await;
        // The load balancer sends the callback to the other instance.
        let on_other = callback.replacen(&env.gateway, &other.address, 1);
        let (status, location, body) = env.visit(&on_other).await;
        assert_eq!(status, 302, "{body}");
        let code = url::Url::parse(&location.unwrap()).unwrap().query_pairs()
            .find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()).unwrap();
        // And the exchange and the proxy back to the first.
        let (status, ctx) = env.exchange(&code).await;
        assert_eq!(status, 200, "{ctx}");
        let id = ctx["launch_id"].as_str().unwrap();
        let (status, _) = env.fhir_get(id, &format!("Patient/{}", env.ehr.default_patient())).await;
        assert_eq!(status, 200);
    }

    async fn concurrent_calls_after_expiry_spend_the_refresh_token_once(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let id = env.launched().await;
        env.ehr.expire_access_tokens();
        let path = format!("Patient/{}", env.ehr.default_patient());
        let calls = (0..6).map(|_| env.fhir_get(&id, &path));
        for (status, body) in futures_util::future::join_all(calls).await {
            assert_eq!(status, 200, "{body}");
        }
        let refreshes = env.ehr.token_requests().into_iter().filter(|r| r.grant_type == "refresh_token").count();
        assert_eq!(refreshes, 1, "Epic rotates refresh tokens: a second refresh would fail");
    }

    async fn every_write_method_is_proxied(backend) {
        let Some(env) = env(backend, Vendor::Epic, "public").await else { return };
        let id = env.launched().await;
        let patient = env.ehr.default_patient();
        let obs = serde_json::json!({"resourceType": "Observation", "id": "o-1", "status": "final",
            "code": {"text": "weight"}, "subject": {"reference": format!("Patient/{patient}")}});
        let r = env.fhir(Method::PUT, &id, "Observation/o-1")
            .header("content-type", "application/fhir+json").header("if-match", "W/\"1\"")
            .body(obs.to_string()).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let seen = env.ehr.fhir_requests().pop().unwrap();
        assert_eq!((seen.method.as_str(), seen.path.as_str()), ("PUT", "Observation/o-1"));
        assert!(seen.headers.iter().any(|(k, v)| k == "if-match" && v == "W/\"1\""));
        let r = env.fhir(Method::PATCH, &id, "Observation/o-1")
            .header("content-type", "application/json-patch+json")
            .body(r#"[{"op":"replace","path":"/status","value":"amended"}]"#).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "amended");
        let r = env.fhir(Method::DELETE, &id, "Observation/o-1").send().await.unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(env.ehr.fhir_requests().pop().unwrap().method, "DELETE");
    }

    async fn the_patient_summary_falls_back_to_raw_json_when_fhir_version_is_refused(backend) {
        let Some(env) = env(backend, Vendor::Oracle, "public").await else { return };
        let id = env.launched().await;
        env.ehr.inject(Fault::RefuseFhirVersion);
        let r = env.app.get(&env.app_key, &format!("/v1/launches/{id}/patient")).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["patient"]["id"], env.ehr.default_patient());
        let accepts: Vec<String> = env.ehr.fhir_requests().iter().rev().take(2)
            .map(|r| r.headers.iter().find(|(k, _)| k == "accept").unwrap().1.clone()).collect();
        assert_eq!(accepts[0], "application/fhir+json", "the retry drops the parameter");
        assert!(accepts[1].contains("fhirVersion"));
    }

    async fn a_partner_with_several_issuers_asks_which_one(backend) {
        let Some(env) = Setup::new(Vendor::Epic, "public")
            .more_issuers(&["https://other-hospital.example.com/fhir"])
            .start(backend).await else { return };
        let (status, _, body) = env.visit(&format!("{}/smart/{PARTNER}/start", env.gateway)).await;
        assert_eq!(status, 400);
        assert!(body.contains(&env.ehr.iss()) && body.contains("other-hospital.example.com"), "{body}");
        let (status, _, _) = env.visit(&format!("{}/smart/{PARTNER}/start?iss={}", env.gateway, urlencode(&env.ehr.iss()))).await;
        assert_eq!(status, 302);
        let (status, _, body) = env.visit(&format!("{}/smart/{PARTNER}/start?iss={}", env.gateway, urlencode("https://rogue.example.com/fhir"))).await;
        assert_eq!(status, 400);
        assert!(body.contains("not one of"), "{body}");
    }

    async fn an_ehr_on_a_private_address_is_refused_unless_its_network_is_allowed(backend) {
        let Some(env) = Setup::new(Vendor::Epic, "public")
            .private_networks(&[])
            .start(backend).await else { return };
        let launch = env.ehr.launch(default_context(&env.ehr));
        let url = format!("{}/smart/launch?iss={}&launch={launch}", env.gateway, urlencode(&env.ehr.iss()));
        let (status, _, body) = env.visit(&url).await;
        assert_eq!(status, 502);
        assert!(body.contains("non-public address"), "{body}");
    }

    async fn plain_http_ehrs_are_refused_unless_allowed(backend) {
        let Some(env) = Setup::new(Vendor::Epic, "public")
            .outbound("allow_http = false\n")
            .start(backend).await else { return };
        let launch = env.ehr.launch(default_context(&env.ehr));
        let url = format!("{}/smart/launch?iss={}&launch={launch}", env.gateway, urlencode(&env.ehr.iss()));
        let (status, _, body) = env.visit(&url).await;
        assert_eq!(status, 502);
        assert!(body.contains("only https"), "{body}");
    }
}
