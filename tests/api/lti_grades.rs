//! Grades whose answer is lost, resends the LMS refuses, and refusals in the LMS's own words
//! (a real Moodle 4.5 showed each): a score the LMS holds is delivered, never failed; one it
//! cannot show back is `unknown`; a real refusal keeps Moodle's status-line reason.

use std::time::Duration;

use partner_sim::lms::{AgsFault, MockUser, Personality};
use serde_json::{Value, json};

use crate::helpers::Backend;
use crate::lti_env::{EnvOpts, LTI11_KEY, LtiEnv, PARTNER, start, start_opts};

fn score(given: f64) -> Value {
    json!({"scoreGiven": given, "scoreMaximum": 10, "activityProgress": "Completed", "gradingProgress": "FullyGraded", "comment": "well done"})
}

/// The outbound timeout is 1 s: an LMS holding its answer 2 s loses it.
fn slow_lms() -> EnvOpts {
    EnvOpts {
        outbound: "timeout_secs = 1",
        ..EnvOpts::default()
    }
}

const LOST_ANSWER: AgsFault = AgsFault::Hold {
    delay: Duration::from_secs(2),
    stored: true,
    count: 1,
};

async fn messages(env: &LtiEnv, event_type: &str) -> i64 {
    partner_gateway::with_db!(env.app.db(), pool => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM webhook_messages WHERE partner_id = $1 AND type = $2")
            .bind(PARTNER).bind(event_type).fetch_one(pool).await
    })
    .unwrap()
}

async fn scores_stored(env: &LtiEnv) -> i64 {
    partner_gateway::with_db!(env.app.db(), pool => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM lti_scores WHERE partner_id = $1")
            .bind(PARTNER).fetch_one(pool).await
    })
    .unwrap()
}

/// An LTI 1.1 launch through the mock's outcome service; returns its launch id.
async fn lti11_launch(env: &LtiEnv, user: &str) -> String {
    let form = env.lms.lti11_launch(
        &format!("{}/lti/11/launch", env.gateway),
        LTI11_KEY,
        MockUser::learner(user),
        "course-11",
        &format!("rl-{user}"),
    );
    let r = env
        .browser
        .post(format!("{}/lti/11/launch", env.gateway))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let code = url::Url::parse(&loc)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let (status, ctx) = env.exchange(&code).await;
    assert_eq!(status, 200, "{ctx}");
    ctx["launch_id"].as_str().unwrap().to_owned()
}

/// Canvas takes a resend with the same timestamp; Blackboard and D2L ignore one that is not
/// newer (AGS §3.4.2): either way a 2xx, and the score is delivered and counted once.
async fn lost_answer_elsewhere(backend: Backend, personality: Personality) {
    let Some(env) = start_opts(backend, personality, slow_lms()).await else {
        return;
    };
    let ctx = env.launched("slow-x").await;
    env.lms.inject_ags(LOST_ANSWER);
    let (_, body) = env
        .post_score(ctx["launch_id"].as_str().unwrap(), score(4.0))
        .await;
    let done = env.settled(body["score_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "delivered", "{personality:?}: {done}");
    assert_eq!(done["attempts"], 2, "{personality:?}: {done}");
    // The LMS took the resend as the same score again (same timestamp): one result.
    let book: Vec<_> = env
        .lms
        .gradebook("course-1")
        .into_iter()
        .filter(|s| s.user_id == "slow-x")
        .collect();
    assert!(
        !book.is_empty() && book.iter().all(|s| *s == book[0]),
        "{personality:?}: {book:?}"
    );
    assert_eq!(book[0].score_given, Some(4.0));
    assert_eq!(env.usage_count("lti.grade_posted").await, 1, "counted once");
}

crate::both_backends! {
    async fn a_score_canvas_stored_but_answered_too_late_is_delivered_once(backend) {
        lost_answer_elsewhere(backend, Personality::Canvas).await;
    }
    async fn a_score_blackboard_stored_but_answered_too_late_is_delivered_once(backend) {
        lost_answer_elsewhere(backend, Personality::Blackboard).await;
    }
    async fn a_score_d2l_stored_but_answered_too_late_is_delivered_once(backend) {
        lost_answer_elsewhere(backend, Personality::D2l).await;
    }

    async fn a_score_moodle_stored_but_answered_too_late_is_delivered_once(backend) {
        let Some(env) = start_opts(backend, Personality::Moodle, slow_lms()).await else { return };
        let ctx = env.launched("slow-1").await;
        env.lms.inject_ags(LOST_ANSWER);
        let (status, body) = env.post_score(ctx["launch_id"].as_str().unwrap(), score(8.0)).await;
        assert_eq!(status, 202, "{body}");
        let done = env.settled(body["score_id"].as_str().unwrap()).await;
        // The resend carried the same timestamp; Moodle refused it with 409, and its result
        // for the user showed the score was there.
        assert_eq!(done["status"], "delivered", "{done}");
        assert_eq!(done["attempts"], 2, "{done}");
        assert_eq!(done["last_status"], 409, "{done}");
        let why = done["last_error"].as_str().unwrap();
        assert!(why.contains("Refusing score with an earlier timestamp"), "{why}");
        assert!(why.contains("already holds this score"), "{why}");
        let book: Vec<_> = env.lms.gradebook("course-1").into_iter().filter(|s| s.user_id == "slow-1").collect();
        assert_eq!(book.len(), 1, "in the gradebook exactly once: {book:?}");
        assert_eq!(env.usage_count("lti.grade_posted").await, 1);
        assert_eq!(messages(&env, "grade.delivered").await, 1);
        assert_eq!(messages(&env, "grade.failed").await, 0);
    }

    async fn a_refused_resend_the_lms_cannot_show_back_is_unknown_not_failed(backend) {
        let opts = EnvOpts { no_results_service: true, ..slow_lms() };
        let Some(env) = start_opts(backend, Personality::Moodle, opts).await else { return };
        let ctx = env.launched("slow-2").await;
        assert!(!ctx.to_string().contains("result.readonly"));
        env.lms.inject_ags(LOST_ANSWER);
        let (_, body) = env.post_score(ctx["launch_id"].as_str().unwrap(), score(6.0)).await;
        let done = env.settled(body["score_id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "unknown", "{done}");
        assert_eq!(done["last_status"], 409);
        let why = done["last_error"].as_str().unwrap();
        assert!(why.starts_with("delivered or refused: unknown"), "{why}");
        assert!(why.contains("result.readonly"), "{why}");
        assert!(done["next_attempt_at"].is_null(), "settled: {done}");
        // Not counted (not known to be posted), not reported failed.
        assert_eq!(env.usage_count("lti.grade_posted").await, 0);
        assert_eq!(messages(&env, "grade.unconfirmed").await, 1);
        assert_eq!(messages(&env, "grade.failed").await, 0);
        // A later score for the same user still goes (an unknown one does not block it).
        let (_, body) = env.post_score(ctx["launch_id"].as_str().unwrap(), score(7.0)).await;
        assert_eq!(env.settled(body["score_id"].as_str().unwrap()).await["status"], "delivered");
    }

    async fn a_refused_resend_the_lms_does_not_hold_is_failed(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let ctx = env.launched("slow-3").await;
        // The first send fails (nothing kept); the resend is refused for real.
        env.lms.inject_ags(AgsFault::Status { status: 503, retry_after: Some(0), count: 1 });
        env.lms.inject_ags(AgsFault::NotGradable);
        let (_, body) = env.post_score(ctx["launch_id"].as_str().unwrap(), score(5.0)).await;
        let done = env.settled(body["score_id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "failed", "{done}");
        assert_eq!(done["attempts"], 2);
        assert_eq!(done["last_status"], 400);
        assert!(env.lms.gradebook("course-1").iter().all(|s| s.user_id != "slow-3"));
        assert_eq!(messages(&env, "grade.failed").await, 1);
    }

    async fn moodle_s_refusal_reason_from_the_status_line_is_kept(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let ctx = env.launched("refused-1").await;
        env.lms.inject_ags(AgsFault::NotGradable);
        let (_, body) = env.post_score(ctx["launch_id"].as_str().unwrap(), score(5.0)).await;
        let done = env.settled(body["score_id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "failed", "{done}");
        assert_eq!(done["last_status"], 400);
        assert_eq!(
            done["last_error"],
            "the platform refused the score with 400: Incorrect score received",
            "{done}"
        );
    }

    async fn a_score_waiting_for_an_unreachable_lms_shows_why_and_when_next(backend) {
        let opts = EnvOpts { backoff: Some("backoff_base_ms = 1500"), ..slow_lms() };
        let Some(env) = start_opts(backend, Personality::Moodle, opts).await else { return };
        let ctx = env.launched("slow-4").await;
        env.lms.inject_ags(AgsFault::Hold { delay: Duration::from_secs(2), stored: false, count: 1 });
        let (_, body) = env.post_score(ctx["launch_id"].as_str().unwrap(), score(9.0)).await;
        let id = body["score_id"].as_str().unwrap();
        let mut seen = None;
        for _ in 0..100 {
            let v: Value = env.app.get(&env.app_key, &format!("/v1/scores/{id}")).await.json().await.unwrap();
            if v["status"] == "pending" && v["last_error"].is_string() && v["next_attempt_at"].is_string() {
                seen = Some(v);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let v = seen.expect("a pending score with its error and next attempt");
        assert_eq!(v["attempts"], 1, "{v}");
        assert!(v["last_status"].is_null(), "the LMS never answered: {v}");
        let why = v["last_error"].as_str().unwrap();
        assert!(why.starts_with("posting the score:") && why.contains("timed out"), "{why}");
        let next = chrono::DateTime::parse_from_rfc3339(v["next_attempt_at"].as_str().unwrap()).unwrap();
        assert!(next > chrono::Utc::now() - chrono::Duration::seconds(5), "{v}");
        let done = env.settled(id).await;
        assert_eq!(done["status"], "delivered", "{done}");
        assert!(done["next_attempt_at"].is_null());
    }

    async fn an_lti_1_1_score_without_a_score_is_refused_at_once(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let id = lti11_launch(&env, "legacy-2").await;
        let (status, body) = env
            .post_score(&id, json!({"activityProgress": "Completed", "gradingProgress": "Pending"}))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errors"][0]["field"], "scoreGiven", "{body}");
        assert!(body["detail"].as_str().unwrap().contains("LTI 1.1"), "{body}");
        assert_eq!(scores_stored(&env).await, 0, "nothing stored");
    }

    async fn an_lti_1_1_score_stored_but_answered_too_late_is_delivered(backend) {
        let Some(env) = start_opts(backend, Personality::Moodle, slow_lms()).await else { return };
        let id = lti11_launch(&env, "legacy-3").await;
        // Kept but answered late; then the resend is refused: readResult shows it is there.
        env.lms.inject_ags(LOST_ANSWER);
        env.lms.inject_ags(AgsFault::NotGradable);
        let (_, body) = env.post_score(&id, score(7.0)).await;
        let done = env.settled(body["score_id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "delivered", "{done}");
        assert_eq!(done["attempts"], 2);
        assert!(done["last_error"].as_str().unwrap().contains("already holds"), "{done}");
        assert_eq!(env.lms.lti11_grades().len(), 1);
        assert_eq!(env.usage_count("lti.grade_posted").await, 1);
    }

    async fn an_lti_1_1_resend_refused_with_another_result_is_failed(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let id = lti11_launch(&env, "legacy-4").await;
        env.lms.inject_ags(AgsFault::Hold { delay: Duration::ZERO, stored: false, count: 1 });
        env.lms.inject_ags(AgsFault::NotGradable);
        let (_, body) = env.post_score(&id, score(7.0)).await;
        let done = env.settled(body["score_id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "failed", "{done}");
        assert_eq!(done["attempts"], 2);
        assert!(done["last_error"].as_str().unwrap().contains("not gradable"), "{done}");
    }
}
