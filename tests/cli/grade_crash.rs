//! Grade delivery survives a crash: a score accepted (202) by a gateway that is SIGKILLed
//! before the failing LMS took it, or while the LMS that took it had not answered yet,
//! reaches the gradebook exactly once after the restart and is reported delivered.

use std::time::Duration;

use partner_sim::lms::{
    AgsFault, LaunchSpec, MockLms, MockLmsOptions, MockTool, MockUser, Personality,
    parse_auto_post_form,
};
use serde_json::{Value, json};

use crate::support::{Backend, TestEnv, free_port, on_both_backends};

on_both_backends!(an_accepted_score_survives_a_crash_and_is_delivered_once
    => an_accepted_score_survives_a_crash_and_is_delivered_once_on_sqlite,
       an_accepted_score_survives_a_crash_and_is_delivered_once_on_postgres);
on_both_backends!(a_score_the_lms_stored_before_the_crash_is_delivered_not_failed
    => a_score_the_lms_stored_before_the_crash_is_delivered_not_failed_on_sqlite,
       a_score_the_lms_stored_before_the_crash_is_delivered_not_failed_on_postgres);

async fn an_accepted_score_survives_a_crash_and_is_delivered_once(backend: Backend) {
    crash_while_delivering(backend, false).await;
}

/// Moodle kept the score but the gateway died waiting for its answer: the resend after the
/// restart is refused (409, same timestamp), the result read back shows the score, and it
/// is delivered, counted once.
async fn a_score_the_lms_stored_before_the_crash_is_delivered_not_failed(backend: Backend) {
    crash_while_delivering(backend, true).await;
}

const CLIENT: &str = "crash-client";
const DEPLOYMENT: &str = "crash-deployment";

async fn crash_while_delivering(backend: Backend, answer_lost: bool) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let port = free_port();
    let gateway = format!("http://127.0.0.1:{port}");
    let lms = MockLms::start(MockLmsOptions::new(
        Personality::Moodle,
        vec![MockTool::gateway(CLIENT, DEPLOYMENT, &gateway)],
    ))
    .await
    .unwrap();
    std::fs::write(
        env.config_dir.join("test-lms.toml"),
        format!(
            r#"[[partners]]
id = "crash-lms"
name = "Crash test LMS"
kind = "lms"
[partners.lti]
app_url = "https://app.example.test/lti"
[[partners.lti.platforms]]
vendor = "moodle"
issuer = "{}"
client_id = "{CLIENT}"
deployment_ids = ["{DEPLOYMENT}"]
auth_url = "{}"
token_url = "{}"
jwks_url = "{}"
"#,
            lms.issuer(),
            lms.auth_url(),
            lms.token_url(),
            lms.jwks_url()
        ),
    )
    .unwrap();
    let settings = [
        ("GATEWAY__HTTP__PUBLIC_URL", gateway.as_str()),
        ("GATEWAY__OUTBOUND__ALLOW_HTTP", "true"),
        ("GATEWAY__OUTBOUND__PRIVATE_NETWORKS", "127.0.0.1"),
        ("GATEWAY__JOBS__POLL_INTERVAL_MS", "20"),
        ("GATEWAY__JOBS__LEASE_SECS", "2"),
        ("GATEWAY__JOBS__BACKOFF_BASE_MS", "300"),
        ("GATEWAY__JOBS__BACKOFF_MAX_SECS", "2"),
    ];
    let mut server = env.serve_at(port, &settings).await;
    let app_key = env.create_key("app", None).await;

    // A learner launches (the browser steps by hand).
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let init = lms.login_initiation(LaunchSpec::resource_link(
        CLIENT,
        DEPLOYMENT,
        MockUser::learner("crash-student"),
        "crash-course",
        "crash-link",
    ));
    let r = if init.post {
        browser
            .post(&init.url)
            .form(&init.params)
            .send()
            .await
            .unwrap()
    } else {
        browser.get(init.get_url()).send().await.unwrap()
    };
    assert_eq!(r.status(), 302, "{}", server.log());
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let auth = r.headers()["location"].to_str().unwrap().to_owned();
    let page = browser
        .get(&auth)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = parse_auto_post_form(&page).unwrap();
    let r = browser
        .post(&form.action)
        .header("cookie", cookie)
        .form(&form.fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    let app = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let code = app
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let ctx: Value = server
        .client
        .post(server.url("/v1/launches/exchange"))
        .bearer_auth(&app_key)
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let launch_id = ctx["launch_id"].as_str().unwrap().to_owned();

    if answer_lost {
        // The LMS keeps the score and holds its answer past the kill.
        lms.inject_ags(AgsFault::Hold {
            delay: Duration::from_secs(60),
            stored: true,
            count: 1,
        });
    } else {
        // The LMS is down for the next three score posts; the score is accepted meanwhile.
        lms.inject_ags(AgsFault::Status {
            status: 503,
            retry_after: None,
            count: 3,
        });
    }
    let r = server
        .client
        .post(server.url(&format!("/v1/launches/{launch_id}/scores")))
        .bearer_auth(&app_key)
        .json(&json!({"scoreGiven": 7, "scoreMaximum": 10, "activityProgress": "Completed", "gradingProgress": "FullyGraded"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let score_id = r.json::<Value>().await.unwrap()["score_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let store = env.store().await;
    let attempts = format!("SELECT attempts FROM lti_scores WHERE id = '{score_id}'");
    let mut waited = 0;
    while store.scalar(&attempts).await < 1
        || (answer_lost && lms.gradebook("crash-course").is_empty())
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
        assert!(
            waited < 2000,
            "the first delivery attempt never happened\n{}",
            server.log()
        );
    }
    server.sigkill().await;
    let status = store
        .strings(&format!(
            "SELECT status FROM lti_scores WHERE id = '{score_id}'"
        ))
        .await;
    assert_eq!(
        status,
        ["pending"],
        "the score must still be on its way at the kill"
    );
    assert_eq!(
        lms.gradebook("crash-course").len(),
        usize::from(answer_lost)
    );

    // Restarted at the same address (the LMS fetches the tool's keys from it) on the same
    // store, the gateway delivers it.
    let server = env.serve_at(port, &settings).await;
    let mut delivered = Value::Null;
    for _ in 0..600 {
        let v: Value = server
            .get(&app_key, &format!("/v1/scores/{score_id}"))
            .await
            .json()
            .await
            .unwrap();
        if v["status"] != "pending" {
            delivered = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        delivered["status"],
        "delivered",
        "{delivered}\n{}",
        server.log()
    );
    if answer_lost {
        assert_eq!(delivered["last_status"], 409, "{delivered}");
        assert!(
            delivered["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("already holds this score")),
            "{delivered}"
        );
    }
    let book = lms.gradebook("crash-course");
    assert_eq!(book.len(), 1, "delivered exactly once: {book:?}");
    assert_eq!(book[0].score_given, Some(7.0));
    assert_eq!(
        store
            .scalar("SELECT COUNT(*) FROM usage_events WHERE type = 'lti.grade_posted'")
            .await,
        1
    );
}
