//! LTI end to end against the mock LMS in each personality: login, launch, handoff, scores
//! to the gradebook, Deep Linking, rosters, Dynamic Registration, LTI 1.1; and the
//! certification's bad payloads, each with its rejection.

use partner_sim::lms::{
    AgsFault, LaunchFault, LaunchSpec, MockUser, Personality, parse_auto_post_form,
};
use serde_json::{Value, json};

use partner_gateway::lti::lti11;

use crate::helpers::Backend;
use crate::lti_env::{CLIENT, DEPLOYMENT, LTI11_KEY, LtiEnv, PARTNER, start, start_with};

fn score(given: f64) -> Value {
    json!({"scoreGiven": given, "scoreMaximum": 10, "activityProgress": "Completed", "gradingProgress": "FullyGraded", "comment": "well done"})
}

/// Launch, exchange, post a score, see it in the gradebook.
async fn round_trip(backend: Backend, personality: Personality) {
    let Some(env) = start(backend, personality).await else {
        return;
    };
    let ctx = env.launched("student-1").await;
    assert_eq!(ctx["kind"], "lti");
    assert_eq!(ctx["partner"], PARTNER);
    assert_eq!(ctx["user"]["id"], "student-1");
    assert!(ctx["user"]["name"].as_str().unwrap().contains("student-1"));
    assert_eq!(ctx["roles"], json!(["learner"]));
    assert!(
        ctx["roles_original"][0]
            .as_str()
            .unwrap()
            .ends_with("#Learner")
    );
    assert_eq!(ctx["context"]["id"], "course-1");
    assert_eq!(ctx["resource_link"]["id"], "link-1");
    assert_eq!(ctx["deployment_id"], DEPLOYMENT);
    assert_eq!(ctx["grade_passback"], true, "{ctx}");
    assert_eq!(ctx["roster"], true);
    assert_eq!(env.usage_count("lti.launch").await, 1);
    let id = ctx["launch_id"].as_str().unwrap();
    let (status, body) = env.post_score(id, score(8.5)).await;
    assert_eq!(status, 202, "{body}");
    let done = env.settled(body["score_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "delivered", "{done}");
    let book = env.lms.gradebook("course-1");
    assert_eq!(book.len(), 1, "{book:?}");
    assert_eq!(book[0].user_id, "student-1");
    assert_eq!(book[0].score_given, Some(8.5));
    assert_eq!(book[0].comment.as_deref(), Some("well done"));
    assert_eq!(env.usage_count("lti.grade_posted").await, 1);
    // The token came from client_credentials with an RS256 assertion for the right audience.
    let t = env
        .lms
        .token_requests()
        .into_iter()
        .find(|t| t.grant_type == "client_credentials")
        .unwrap();
    assert_eq!(t.assertion_header.as_ref().unwrap()["alg"], "RS256");
    let aud = &t.assertion_claims.as_ref().unwrap()["aud"];
    assert!(
        aud == &json!(env.lms.token_audience())
            || aud
                .as_array()
                .is_some_and(|a| a.contains(&json!(env.lms.token_audience()))),
        "{aud}"
    );
}

crate::both_backends! {
    async fn a_moodle_launch_reaches_the_app_and_its_score_the_gradebook(backend) {
        round_trip(backend, Personality::Moodle).await;
    }
    async fn a_canvas_launch_reaches_the_app_and_its_score_the_gradebook(backend) {
        round_trip(backend, Personality::Canvas).await;
    }
    async fn a_blackboard_launch_reaches_the_app_and_its_score_the_gradebook(backend) {
        round_trip(backend, Personality::Blackboard).await;
    }
    async fn a_d2l_launch_reaches_the_app_and_its_score_the_gradebook(backend) {
        round_trip(backend, Personality::D2l).await;
    }

    async fn scores_for_one_user_arrive_in_order_with_increasing_timestamps(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let ctx = env.launched("student-2").await;
        let id = ctx["launch_id"].as_str().unwrap();
        let mut ids = Vec::new();
        for g in [3.0, 6.0, 9.0] {
            let (status, body) = env.post_score(id, score(g)).await;
            assert_eq!(status, 202);
            ids.push(body["score_id"].as_str().unwrap().to_owned());
        }
        for s in &ids {
            assert_eq!(env.settled(s).await["status"], "delivered");
        }
        let book = env.lms.gradebook("course-1");
        let last = book.iter().rfind(|s| s.user_id == "student-2").unwrap();
        assert_eq!(last.score_given, Some(9.0), "the last score wins: {book:?}");
    }

    async fn a_failing_platform_gets_the_score_once_it_recovers(backend) {
        let Some(env) = start(backend, Personality::D2l).await else { return };
        let ctx = env.launched("student-3").await;
        env.lms.inject_ags(AgsFault::Status { status: 503, retry_after: None, count: 2 });
        let (_, body) = env.post_score(ctx["launch_id"].as_str().unwrap(), score(7.0)).await;
        let done = env.settled(body["score_id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "delivered", "{done}");
        assert_eq!(done["attempts"], 3);
        env.lms.inject_ags(AgsFault::Status { status: 429, retry_after: Some(1), count: 1 });
        let (_, body) = env.post_score(ctx["launch_id"].as_str().unwrap(), score(8.0)).await;
        let done = env.settled(body["score_id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "delivered", "{done}");
        assert_eq!(done["attempts"], 2);
        assert_eq!(env.lms.gradebook("course-1").iter().filter(|s| s.user_id == "student-3").count(), 2);
    }

    async fn a_score_the_platform_refuses_is_kept_with_its_reason_and_not_retried(backend) {
        let Some(env) = start(backend, Personality::D2l).await else { return };
        let ctx = env.launched("student-4").await;
        env.lms.inject_ags(AgsFault::NotGradable);
        let (_, body) = env.post_score(ctx["launch_id"].as_str().unwrap(), score(5.0)).await;
        let done = env.settled(body["score_id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "failed", "{done}");
        assert_eq!(done["last_status"], 422);
        assert_eq!(done["attempts"], 1);
        assert!(done["last_error"].as_str().is_some_and(|e| !e.is_empty()));
        assert_eq!(env.usage_count("lti.grade_posted").await, 0);
    }

    async fn a_bad_score_is_refused_with_every_problem_named(backend) {
        let Some(env) = start(backend, Personality::Generic).await else { return };
        let ctx = env.launched("student-5").await;
        let (status, body) = env.post_score(ctx["launch_id"].as_str().unwrap(), json!({"scoreGiven": -2, "activityProgress": "Done"})).await;
        assert_eq!(status, 400, "{body}");
        let fields: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert!(fields.contains(&"scoreGiven") && fields.contains(&"activityProgress") && fields.contains(&"gradingProgress"), "{fields:?}");
    }

    async fn the_roster_is_read_across_pages(backend) {
        let Some(env) = start(backend, Personality::Canvas).await else { return };
        for i in 0..5 {
            env.lms.add_member("course-1", MockUser::learner(&format!("member-{i}")));
        }
        let ctx = env.launched("student-6").await;
        let r = env.app.get(&env.app_key, &format!("/v1/launches/{}/members", ctx["launch_id"].as_str().unwrap())).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let members = body["data"].as_array().unwrap();
        assert!(members.len() >= 5, "{body}");
        assert!(members.iter().any(|m| m["user_id"] == "member-4"));
    }

    async fn line_items_are_listed_created_and_deleted(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let ctx = env.launched("student-7").await;
        let id = ctx["launch_id"].as_str().unwrap();
        let r = env.app.client.post(env.app.url(&format!("/v1/launches/{id}/lineitems"))).bearer_auth(&env.app_key)
            .json(&json!({"label": "Essay", "scoreMaximum": 20, "tag": "essay"})).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let created: Value = r.json().await.unwrap();
        let li = created["id"].as_str().unwrap().to_owned();
        let r = env.app.get(&env.app_key, &format!("/v1/launches/{id}/lineitems?tag=essay")).await;
        let list: Value = r.json().await.unwrap();
        assert!(list["data"].as_array().unwrap().iter().any(|i| i["id"] == li.as_str()), "{list}");
        // Paging is checked before the LMS is asked.
        for path in ["lineitems?limit=0", "members?limit=many", "members?cursor=x"] {
            let r = env.app.get(&env.app_key, &format!("/v1/launches/{id}/{path}")).await;
            assert_eq!(r.status(), 400, "{path}");
        }
        env.lms.add_member("course-1", MockUser::learner("member-a"));
        env.lms.add_member("course-1", MockUser::learner("member-b"));
        let page: Value = env.app.get(&env.app_key, &format!("/v1/launches/{id}/members?limit=1")).await.json().await.unwrap();
        assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
        let next = page["next_cursor"].as_str().unwrap();
        let rest: Value = env.app.get(&env.app_key, &format!("/v1/launches/{id}/members?cursor={next}")).await.json().await.unwrap();
        assert_ne!(rest["data"][0], page["data"][0], "{rest}");
        // A score for that line item lands in its column.
        let mut s = score(15.0);
        s["scoreMaximum"] = json!(20);
        s["lineItem"] = json!(li);
        let (_, body) = env.post_score(id, s).await;
        assert_eq!(env.settled(body["score_id"].as_str().unwrap()).await["status"], "delivered");
        assert!(env.lms.gradebook("course-1").iter().any(|g| g.line_item == li));
        let one = format!("/v1/launches/{id}/lineitems/item?id={}", crate::helpers::urlencode(&li));
        let got: Value = env.app.get(&env.app_key, &one).await.json().await.unwrap();
        assert_eq!(got["label"], "Essay");
        let mut changed = got.clone();
        changed["label"] = json!("Essay (revised)");
        let r = env.app.client.put(env.app.url(&one)).bearer_auth(&env.app_key).json(&changed).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let got: Value = env.app.get(&env.app_key, &one).await.json().await.unwrap();
        assert_eq!(got["label"], "Essay (revised)");
        let r = env.app.client.delete(env.app.url(&format!("/v1/launches/{id}/lineitems/item?id={}", crate::helpers::urlencode(&li))))
            .bearer_auth(&env.app_key).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        // A line item of another host is refused before any call.
        let r = env.app.client.delete(env.app.url(&format!("/v1/launches/{id}/lineitems/item?id={}", crate::helpers::urlencode("https://evil.example.com/li/1"))))
            .bearer_auth(&env.app_key).send().await.unwrap();
        assert_eq!(r.status(), 400);
    }

    async fn deep_linking_returns_a_signed_choice_to_the_platform(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let spec = LaunchSpec::deep_linking(CLIENT, DEPLOYMENT, MockUser::instructor("teacher-1"), "course-1", Some("opaque-data-42"));
        let (auth, jar) = env.login(spec).await;
        let fields = env.authenticate(&auth).await;
        let (status, _, page) = env.post_launch(&fields, &jar).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("Unit 1 quiz"), "{page}");
        // Moodle accepts resource links only: the plain link is not offered.
        assert!(!page.contains("Reading"), "{page}");
        let action_at = page.find("action=\"").unwrap() + 8;
        let action = &page[action_at..action_at + page[action_at..].find('"').unwrap()];
        let r = env.browser.post(format!("{}{action}", env.gateway)).form(&[("item", "0")]).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let form = parse_auto_post_form(&r.text().await.unwrap()).unwrap();
        let jwt = form.field("JWT").unwrap().to_owned();
        let r = env.browser.post(&form.action).form(&[("JWT", jwt.as_str())]).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let got = env.lms.deep_link_responses();
        assert_eq!(got.len(), 1);
        let items = &got[0]["https://purl.imsglobal.org/spec/lti-dl/claim/content_items"];
        assert_eq!(items[0]["title"], "Unit 1 quiz");
        assert_eq!(items[0]["lineItem"]["scoreMaximum"], 10.0);
        assert_eq!(got[0]["https://purl.imsglobal.org/spec/lti-dl/claim/data"], "opaque-data-42");
        // The choice is single use.
        let r = env.browser.post(format!("{}{action}", env.gateway)).form(&[("item", "0")]).send().await.unwrap();
        assert_eq!(r.status(), 400);
    }

    // Issue 17, L3: the return URL is where the gateway's page (or the app) posts the
    // answer; one that is not https (or loopback http) is refused before anything is shown.
    async fn a_deep_linking_request_whose_return_url_is_not_https_is_refused(backend) {
        for app_picks in [false, true] {
            let env = if app_picks {
                crate::lti_env::start_app_picks(backend, Personality::Moodle).await
            } else {
                start(backend, Personality::Moodle).await
            };
            let Some(env) = env else { return };
            for bad in ["javascript:alert(document.domain)", "data:text/html,<script>alert(1)</script>", "http://lms.example.com/return"] {
                let mut spec = LaunchSpec::deep_linking(CLIENT, DEPLOYMENT, MockUser::instructor("teacher-1"), "course-1", None);
                spec.message = partner_sim::lms::Message::DeepLinking { return_url: Some(bad.into()), data: None };
                let (status, body) = env.launch(spec).await.page();
                assert_eq!(status, 400, "{bad}: {body}");
                assert!(body.contains("deep_link_return_url"), "{body}");
                assert!(!body.contains("<form"), "{body}");
            }
            assert_eq!(env.usage_count("lti.launch").await, 0);
        }
    }

    async fn without_configured_items_the_app_answers_a_deep_linking_request(backend) {
        let Some(env) = crate::lti_env::start_app_picks(backend, Personality::Canvas).await else { return };
        let spec = LaunchSpec::deep_linking(CLIENT, DEPLOYMENT, MockUser::instructor("teacher-1"), "course-1", Some("opaque-data-7"));
        let code = env.launch(spec).await.code();
        let (status, ctx) = env.exchange(&code).await;
        assert_eq!(status, 200, "{ctx}");
        assert_eq!(ctx["message_type"], "LtiDeepLinkingRequest");
        let id = ctx["launch_id"].as_str().unwrap().to_owned();
        let url = env.app.url(&format!("/v1/launches/{id}/deep-link"));
        // Bad answers are refused with what is wrong, and nothing is signed.
        let r = env.app.client.post(&url).bearer_auth(&env.app_key).body("not json").send().await.unwrap();
        assert_eq!(r.status(), 400);
        let r = env.app.client.post(&url).bearer_auth(&env.app_key).json(&json!({"content_items": [{"title": "no type"}]})).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["field"], "type", "{body}");
        // A partner key of another partner may not answer for this launch.
        let other = env.app.partner_key("epic-sandbox").await;
        let r = env.app.client.post(&url).bearer_auth(&other).json(&json!({"content_items": []})).send().await.unwrap();
        assert_eq!(r.status(), 403);
        let items = json!({"content_items": [{"type": "ltiResourceLink", "title": "Chapter 5 quiz", "url": "https://app.example.test/quiz/5", "lineItem": {"scoreMaximum": 10, "label": "Chapter 5 quiz"}}]});
        let r = env.app.client.post(&url).bearer_auth(&env.app_key).json(&items).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let answer: Value = r.json().await.unwrap();
        let return_url = answer["return_url"].as_str().unwrap();
        assert!(return_url.starts_with(&env.lms.base_url()), "{answer}");
        let jwt = answer["jwt"].as_str().unwrap();
        // The browser posts it to the platform, which verifies it against the gateway's JWKS.
        let r = env.browser.post(return_url).form(&[("JWT", jwt)]).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let got = env.lms.deep_link_responses();
        assert_eq!(got.len(), 1);
        let chosen = &got[0]["https://purl.imsglobal.org/spec/lti-dl/claim/content_items"];
        assert_eq!(chosen[0]["title"], "Chapter 5 quiz");
        assert_eq!(chosen[0]["lineItem"]["scoreMaximum"], 10);
        assert_eq!(got[0]["https://purl.imsglobal.org/spec/lti-dl/claim/data"], "opaque-data-7");
    }

    async fn an_lti_1_1_launch_hands_off_and_its_score_goes_through_outcomes(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let form = env.lms.lti11_launch(&format!("{}/lti/11/launch", env.gateway), LTI11_KEY, MockUser::learner("legacy-1"), "course-11", "rl-11");
        let r = env.browser.post(format!("{}/lti/11/launch", env.gateway)).form(&form).send().await.unwrap();
        assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        let code = url::Url::parse(&loc).unwrap().query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
        let (status, ctx) = env.exchange(&code).await;
        assert_eq!(status, 200, "{ctx}");
        assert_eq!(ctx["lti_version"], "1.1");
        assert_eq!(ctx["grade_passback"], true);
        let id = ctx["launch_id"].as_str().unwrap();
        let (status, body) = env.post_score(id, score(9.0)).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(env.settled(body["score_id"].as_str().unwrap()).await["status"], "delivered");
        let grades = env.lms.lti11_grades();
        assert_eq!(grades.len(), 1);
        assert_eq!(grades[0].1, Some(0.9));
        let read: Value = env.app.get(&env.app_key, &format!("/v1/launches/{id}/outcome")).await.json().await.unwrap();
        assert_eq!(read["score"], 0.9);
        let r = env.app.client.delete(env.app.url(&format!("/v1/launches/{id}/outcome"))).bearer_auth(&env.app_key).send().await.unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(env.lms.lti11_grades()[0].1, None);
    }
}

// ---- rejections (LTI Advantage certification's bad payloads) ----

async fn refused(env: &LtiEnv, fault: LaunchFault, expect: &str) {
    env.lms.inject_launch(fault);
    let (status, body) = env.launch(env.learner_launch("s-bad")).await.page();
    assert_eq!(status, 400, "{fault:?}: {body}");
    assert!(
        body.contains(expect),
        "{fault:?}: expected {expect:?} in {body}"
    );
}

crate::both_backends! {
    async fn every_bad_id_token_is_refused_with_its_reason(backend) {
        let Some(env) = start(backend, Personality::Generic).await else { return };
        refused(&env, LaunchFault::NoKid, "no kid").await;
        refused(&env, LaunchFault::UnknownKid, "not in the platform").await;
        refused(&env, LaunchFault::WrongVersion, "not 1.3.0").await;
        refused(&env, LaunchFault::MissingMessageType, "message_type").await;
        refused(&env, LaunchFault::MissingRoles, "roles").await;
        refused(&env, LaunchFault::MissingDeploymentId, "deployment_id").await;
        refused(&env, LaunchFault::MissingResourceLink, "resource_link").await;
        refused(&env, LaunchFault::MissingSub, "sub").await;
        refused(&env, LaunchFault::ExpiredIat, "expired").await;
        refused(&env, LaunchFault::FutureIat, "in the future").await;
        refused(&env, LaunchFault::WrongAud, "not for this tool").await;
        refused(&env, LaunchFault::AlgNone, "RS256").await;
        refused(&env, LaunchFault::BadSignature, "signature does not verify").await;
        refused(&env, LaunchFault::UnregisteredDeployment, "not registered").await;
        assert_eq!(env.usage_count("lti.launch").await, 0);
    }

    async fn a_launch_posted_twice_is_refused(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let (auth, jar) = env.login(env.learner_launch("s-replay")).await;
        let fields = env.authenticate(&auth).await;
        let (s, l, b) = env.post_launch(&fields, &jar).await;
        LtiEnv::outcome(s, l, b).code();
        let (status, _, body) = env.post_launch(&fields, &jar).await;
        assert_eq!(status, 400);
        assert!(body.contains("already used"), "{body}");
    }

    async fn a_state_from_another_browser_is_refused(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let (auth, jar) = env.login(env.learner_launch("s-csrf")).await;
        let fields = env.authenticate(&auth).await;
        let forged: Vec<String> = jar.iter().map(|c| format!("{}=forged", c.split('=').next().unwrap())).collect();
        let (status, _, body) = env.post_launch(&fields, &forged).await;
        assert_eq!(status, 400);
        assert!(body.contains("another browser"), "{body}");
        let (status, _, body) = env.post_launch(&[("state".into(), "unknown".into()), ("id_token".into(), "x.y.z".into())], &jar).await;
        assert_eq!(status, 400);
        assert!(body.contains("does not match any launch"), "{body}");
    }

    // Issue 17, M1: lti_storage_target went into the login page's script unescaped, so a
    // GET link could close the script and put any markup on the gateway's origin.
    async fn an_lti_storage_target_that_is_not_a_frame_name_is_refused(backend) {
        let Some(env) = start(backend, Personality::Canvas).await else { return };
        let payload = "</script><meta http-equiv=refresh content='0;url=https://evil.example/'><form action=https://evil.example/><input name=password></form>";
        let mut init = env.lms.login_initiation(env.learner_launch("s-inject"));
        init.post = false;
        for (k, v) in init.params.iter_mut() {
            if k == "lti_storage_target" {
                *v = payload.to_owned();
            }
        }
        let r = env.browser.get(init.get_url()).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(!body.contains("<meta http-equiv") && !body.contains("<form action=https://evil"), "{body}");
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("lti_storage_target"), "{body}");
    }

    // Issue 17, M1: the id_token of the no-cookie page broke out of its script the same way.
    async fn the_no_cookie_page_keeps_a_hostile_id_token_inert(backend) {
        let Some(env) = start(backend, Personality::Canvas).await else { return };
        let (auth, _jar) = env.login(env.learner_launch("s-inject-token")).await;
        let mut fields = env.authenticate(&auth).await;
        let payload = "</script><script>alert(document.domain)</script>\u{2028}<!--";
        for (k, v) in fields.iter_mut() {
            if k == "id_token" {
                *v = payload.to_owned();
            }
        }
        let (status, _, page) = env.post_launch(&fields, &[]).await;
        assert_eq!(status, 200, "{page}");
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains('\u{2028}') && !page.contains("<!--"), "{page}");
        // The page's one script is fixed and allowed by its hash; the token is data.
        let csp = {
            let r = env.browser.post(format!("{}/lti/launch", env.gateway)).form(&fields).send().await.unwrap();
            r.headers()["content-security-policy"].to_str().unwrap().to_owned()
        };
        assert!(csp.contains("script-src 'sha256-") && !csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("form-action 'self'") && csp.contains("base-uri 'none'"), "{csp}");
        let data: Value = serde_json::from_str(&data_block(&page)).unwrap();
        assert_eq!(data["id_token"], payload);
    }

    async fn a_launch_from_another_browser_leaves_the_state_to_the_right_one(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let (auth, jar) = env.login(env.learner_launch("s-wrong-first")).await;
        let fields = env.authenticate(&auth).await;
        let forged: Vec<String> = jar.iter().map(|c| format!("{}=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", c.split('=').next().unwrap())).collect();
        let (status, _, body) = env.post_launch(&fields, &forged).await;
        assert_eq!(status, 400);
        assert!(body.contains("another browser"), "{body}");
        let mut with_storage = fields.clone();
        with_storage.push(("lti_storage_binding".into(), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()));
        let (status, _, body) = env.post_launch(&with_storage, &[]).await;
        assert_eq!(status, 400);
        assert!(body.contains("another browser"), "{body}");
        let (s, l, b) = env.post_launch(&fields, &jar).await;
        let code = LtiEnv::outcome(s, l, b).code();
        assert_eq!(env.exchange(&code).await.0, 200);
    }

    async fn a_blocked_cookie_never_ends_in_a_bare_error(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let (auth, _jar) = env.login(env.learner_launch("s-nocookie")).await;
        let fields = env.authenticate(&auth).await;
        let (status, _, body) = env.post_launch(&fields, &[]).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("new window") && body.contains("/lti/login?"), "{body}");
        // Canvas offers platform storage: the page asks it for the binding instead.
        let Some(env) = start(backend, Personality::Canvas).await else { return };
        let (auth, _jar) = env.login(env.learner_launch("s-storage")).await;
        let fields = env.authenticate(&auth).await;
        let (status, _, body) = env.post_launch(&fields, &[]).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("lti.get_data"), "{body}");
    }

    async fn a_login_from_an_unknown_platform_or_to_a_foreign_target_is_refused(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let r = env.browser.get(format!("{}/lti/login?iss=https://rogue.example.com&login_hint=x&target_link_uri={}/lti/launch", env.gateway, env.gateway)).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("not registered"));
        let iss = crate::helpers::urlencode(&env.lms.issuer());
        let r = env.browser.get(format!("{}/lti/login?iss={iss}&client_id={CLIENT}&login_hint=x&target_link_uri=https://evil.example.com/", env.gateway)).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("not an address of this tool"));
    }

    async fn bad_lti_1_1_launches_are_refused(backend) {
        let Some(env) = start_with(backend, Personality::Moodle, "").await else { return };
        let url = format!("{}/lti/11/launch", env.gateway);
        let post = |form: Vec<(String, String)>| {
            let b = env.browser.clone();
            let u = url.clone();
            async move {
                let r = b.post(u).form(&form).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        let good = env.lms.lti11_launch(&url, LTI11_KEY, MockUser::learner("l1"), "c", "r");
        // A changed parameter breaks the signature.
        let mut tampered = good.clone();
        for (k, v) in tampered.iter_mut() {
            if k == "user_id" {
                *v = "someone-else".into();
            }
        }
        let (s, b) = post(tampered).await;
        assert_eq!(s, 400);
        assert!(b.contains("signature does not verify"), "{b}");
        // A correctly signed launch from an hour ago.
        let mut stale = env.lms.lti11_launch(&url, LTI11_KEY, MockUser::learner("l2"), "c", "r");
        stale.retain(|(k, _)| k != "oauth_signature");
        for (k, v) in stale.iter_mut() {
            if k == "oauth_timestamp" {
                *v = (chrono::Utc::now().timestamp() - 3600).to_string();
            }
        }
        let sig = lti11::sign(&lti11::base_string("POST", &url, &stale), crate::lti_env::LTI11_SECRET);
        stale.push(("oauth_signature".into(), sig));
        let (s, b) = post(stale).await;
        assert_eq!(s, 400);
        assert!(b.contains("too old"), "{b}");
        // Replayed nonce.
        assert_eq!(post(good.clone()).await.0, 302);
        let (s, b) = post(good).await;
        assert_eq!(s, 400);
        assert!(b.contains("nonce was seen before"), "{b}");
    }
}

crate::both_backends! {
    async fn a_platform_key_rotation_is_followed_by_refetching_its_jwks(backend) {
        let Some(env) = start(backend, Personality::Canvas).await else { return };
        env.launched("before-rotation").await;
        let new_kid = env.lms.rotate_key().await.unwrap();
        assert_eq!(env.lms.signing_kid(), new_kid);
        // The cached JWKS lacks the new kid: the gateway fetches it again and the launch passes.
        let ctx = env.launched("after-rotation").await;
        assert_eq!(ctx["user"]["id"], "after-rotation");
    }

    async fn the_canvas_developer_key_json_names_the_tool_endpoints(backend) {
        let Some(env) = start(backend, Personality::Canvas).await else { return };
        let body: Value = env.browser.get(format!("{}/lti/config/canvas.json", env.gateway)).send().await.unwrap().json().await.unwrap();
        assert_eq!(body["oidc_initiation_url"], format!("{}/lti/login", env.gateway));
        assert_eq!(body["target_link_uri"], format!("{}/lti/launch", env.gateway));
        assert_eq!(body["public_jwk_url"], format!("{}/.well-known/jwks.json", env.gateway));
        assert!(body["scopes"].as_array().unwrap().iter().any(|s| s.as_str().unwrap().ends_with("/scope/score")));
        // The JWKS it points at has an RS256 key for LTI.
        let jwks: Value = env.browser.get(format!("{}/.well-known/jwks.json", env.gateway)).send().await.unwrap().json().await.unwrap();
        assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["alg"] == "RS256"));
    }
}

/// The page's script: the gateway's pages run one fixed script, with no attributes.
fn inline_script(html: &str) -> String {
    let start = html.find("<script>").unwrap() + "<script>".len();
    let end = start + html[start..].find("</script>").unwrap();
    html[start..end].to_owned()
}

/// The text of the page's JSON data block (what the fixed script reads).
fn data_block(html: &str) -> String {
    let marker = "<script type=\"application/json\" id=\"pgw-data\">";
    let start = html.find(marker).unwrap() + marker.len();
    let end = start + html[start..].find("</script>").unwrap();
    html[start..end].to_owned()
}

/// Run a page's script in `tests/js/platform_storage.js` (node) against a simulated LMS
/// frame, with the page's data block.
fn run_in_frame(page: &str, origin: &str, store: &Value, wrong_origin_first: bool) -> Value {
    let (script, data) = (inline_script(page), data_block(page));
    use std::io::Write;
    let mut child = std::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/js/platform_storage.js"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node (Node.js) runs the page scripts; install it (Debian: nodejs)");
    let input = json!({"script": script, "data": data, "origin": origin, "store": store, "wrongOriginFirst": wrong_origin_first});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

crate::both_backends! {
    async fn platform_storage_carries_the_state_when_the_cookie_is_blocked(backend) {
        // Canvas offers platform storage (lti_storage_target): the login page stores the
        // binding there before going on, and a launch without the cookie gets it back.
        let Some(env) = start(backend, Personality::Canvas).await else { return };
        let init = env.lms.login_initiation(env.learner_launch("s-storage-js"));
        assert!(init.param("lti_storage_target").is_some());
        let r = if init.post {
            env.browser.post(&init.url).form(&init.params).send().await.unwrap()
        } else {
            env.browser.get(init.get_url()).send().await.unwrap()
        };
        assert_eq!(r.status(), 200);
        let page = r.text().await.unwrap();
        let origin = url::Url::parse(&env.lms.auth_url()).unwrap().origin().ascii_serialization();
        let login = run_in_frame(&page, &origin, &json!({}), true);
        let put = &login["posted"][0];
        assert_eq!(put["targetOrigin"], origin.as_str(), "messages go to the platform's origin only");
        assert_eq!(put["msg"]["subject"], "lti.put_data");
        let auth_url = login["navigated"].as_str().expect("the page goes on once the platform stored the value").to_owned();
        assert!(auth_url.starts_with(&env.lms.auth_url()), "{auth_url}");
        // The browser blocks the cookie: the launch comes without it.
        let fields = env.authenticate(&auth_url).await;
        let (status, _, page) = env.post_launch(&fields, &[]).await;
        assert_eq!(status, 200, "{page}");
        // A platform that kept nothing: no re-post; the page shows its way out instead.
        let empty = run_in_frame(&page, &origin, &json!({}), false);
        assert!(empty["submitted"].is_null(), "{empty}");
        assert_eq!(empty["shown"]["r"]["hidden"], false, "{empty}");
        assert!(page.contains("id=\"r\" hidden href=\"") && page.contains("/lti/login?"), "{page}");
        let recovered = run_in_frame(&page, &origin, &login["store"], true);
        let form = recovered["submitted"].as_object().expect("the page re-posts the launch with the stored value");
        assert_eq!(form["action"], format!("{}/lti/launch", env.gateway));
        let fields: Vec<(String, String)> = form["fields"].as_array().unwrap().iter()
            .map(|f| (f[0].as_str().unwrap().to_owned(), f[1].as_str().unwrap().to_owned())).collect();
        // A forged answer from another origin was ignored: the binding is the stored one.
        let binding = fields.iter().find(|(k, _)| k == "lti_storage_binding").unwrap().1.clone();
        assert_ne!(binding, "forged");
        let (s, l, b) = env.post_launch(&fields, &[]).await;
        let code = LtiEnv::outcome(s, l, b).code();
        assert_eq!(env.exchange(&code).await.0, 200);
    }
}
