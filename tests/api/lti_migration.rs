//! LTI 1.1 → 1.3 migration: the mock LMS sends the signed `lti1p1` claim as Canvas (base64
//! of the MAC) and Moodle (base64 of its hex text) do; a verified claim makes the learner's
//! 1.1 and 1.3 launches one person, metered once; a forged claim, or one for a consumer the
//! platform is not configured with, links nothing.

use partner_gateway::lti::lti11;
use partner_sim::lms::{MockUser, Personality};
use serde_json::Value;

use crate::helpers::Backend;
use crate::lti_env::{
    EnvOpts, LTI11_KEY, LTI11_SECRET, LtiEnv, PARTNER, start_opts, start_opts_with,
};

pub(crate) const CONFIGURED: &str = "lti11_consumer_key = \"legacy-consumer\"";

async fn env(
    backend: Backend,
    personality: Personality,
    secret: &'static str,
    platform: &'static str,
) -> Option<LtiEnv> {
    start_opts(
        backend,
        personality,
        EnvOpts {
            migration_secret: Some(secret),
            platform,
            ..EnvOpts::default()
        },
    )
    .await
}

/// The LMS partner's agreement for the golden statement: 10.00 per active learner, and a
/// share graduated by active learners, 20% up to 3 and 40% above.
pub(crate) const AGREEMENT: &str = r#"
[[agreements]]
id = "test-lms-seats"
partner = "test-lms"
version = 1
valid_from = "2026-01-01"
currency = "USD"
description = "Per-learner licence, share graduated by active learners"
[agreements.revenue]
recorded = false
[[agreements.revenue.prices]]
meter = "active_learners"
model = "per_unit"
unit_price = "10.00"
[agreements.share]
meter = "active_learners"
mode = "graduated"
reset = "period"
tiers = [{ up_to = "3", rate = "20%" }, { rate = "40%" }]
"#;

/// The month's statement lines as (kind, quantity, amount).
async fn statement(env: &LtiEnv) -> (Vec<(String, String, String)>, String) {
    let key = env
        .app
        .key(partner_gateway::apikeys::Role::Finance, None)
        .await;
    let period = chrono::Utc::now().format("%Y-%m").to_string();
    let r = env
        .app
        .client
        .post(env.app.url("/v1/statements"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"partner": PARTNER, "period": period}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert!(status == 201 || status == 200, "{status} {body}");
    let lines = body["document"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
            (s("kind"), s("quantity"), s("amount"))
        })
        .collect();
    (
        lines,
        body["document"]["total"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// The migration month through the gateway (Ada through both versions, Ben through 1.3,
/// Cyd through 1.1), then the month's statement.
async fn golden_month(
    backend: Backend,
    platform: &'static str,
) -> Option<(Vec<(String, String, String)>, String)> {
    let env = start_opts_with(
        backend,
        Personality::Canvas,
        AGREEMENT,
        EnvOpts {
            migration_secret: Some(LTI11_SECRET),
            platform,
            ..EnvOpts::default()
        },
    )
    .await?;
    launched_11(&env, "ada").await;
    env.launched("ada").await;
    env.launched("ben").await;
    launched_11(&env, "cyd").await;
    Some(statement(&env).await)
}

/// An LTI 1.1 launch of `sub` through the gateway, exchanged: the launch context.
pub(crate) async fn launched_11(env: &LtiEnv, sub: &str) -> Value {
    launched_11_in(env, sub, "course-11", "rl-11").await
}

async fn launched_11_in(env: &LtiEnv, sub: &str, course: &str, link: &str) -> Value {
    let url = format!("{}/lti/11/launch", env.gateway);
    let mut form = env
        .lms
        .lti11_launch(&url, LTI11_KEY, MockUser::learner(sub), course, link);
    // Signed with the consumer's secret, whatever secret the LMS signs its 1.3 claims with
    // (the forged-claim test gives it another).
    form.retain(|(k, _)| k != "oauth_signature");
    let sig = lti11::sign(&lti11::base_string("POST", &url, &form), LTI11_SECRET);
    form.push(("oauth_signature".into(), sig));
    let r = env.browser.post(&url).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
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
    ctx
}

/// `active_learners` (UNIQUE_COUNT of `lti.launch` subjects) over the last and next day.
async fn active_learners(env: &LtiEnv) -> Value {
    let admin = env.app.admin().await;
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::days(1)).to_rfc3339();
    let to = (now + chrono::Duration::days(1)).to_rfc3339();
    let (status, body) = env
        .app
        .query(
            &admin,
            &[
                ("meter", "active_learners"),
                ("partner", PARTNER),
                ("from", &from),
                ("to", &to),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"][0]["value"].clone()
}

fn person(ctx: &Value) -> &str {
    ctx["person"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no person in {ctx}"))
}

/// Ada launches through 1.1 and then 1.3 (a migrated course), Ben only through 1.3, Cyd only
/// through 1.1: three learners, whatever the LMS.
async fn one_month(backend: Backend, personality: Personality) {
    let Some(env) = env(backend, personality, LTI11_SECRET, CONFIGURED).await else {
        return;
    };
    let ada11 = launched_11(&env, "ada").await;
    let ada13 = env.launched("ada").await;
    assert_eq!(person(&ada11), person(&ada13), "{ada11}\n{ada13}");
    // The person keeps the id the 1.1 launches were metered under.
    let legacy = MockUser::learner("ada").lti11_user_id(personality);
    assert_eq!(person(&ada13), legacy);
    // The app sees both platform ids, and the launch's own user id is still the platform's.
    let ids = ada13["person"]["identities"].as_array().unwrap();
    assert_eq!(ids.len(), 2, "{ada13}");
    assert!(ids.iter().any(|i| i["lti_version"] == "1.1"
        && i["user_id"] == legacy.as_str()
        && i["consumer_key"] == LTI11_KEY));
    assert!(
        ids.iter()
            .any(|i| i["lti_version"] == "1.3" && i["sub"] == "ada")
    );
    assert_eq!(ada13["user"]["id"], "ada");
    // Later launches of either version stay with the person.
    assert_eq!(person(&env.launched("ada").await), legacy);
    assert_eq!(person(&launched_11(&env, "ada").await), legacy);

    let ben = env.launched("ben").await;
    let cyd = launched_11(&env, "cyd").await;
    assert_ne!(person(&ben), person(&ada13));
    assert_ne!(person(&cyd), person(&ada13));
    assert_ne!(person(&ben), person(&cyd));
    assert_eq!(active_learners(&env).await, 3);
    assert_eq!(env.usage_count("lti.launch").await, 6);
}

/// The same month without the migration configured on the platform: the claim is not
/// trusted (no secret to verify it with). Canvas gives 1.1 tools an id of its own, so Ada is
/// two people and the meter says four; Moodle gives both versions the same id, which the
/// ledger has always counted as one person, and still does.
async fn one_month_unconfigured(backend: Backend, personality: Personality) {
    let Some(env) = env(backend, personality, LTI11_SECRET, "").await else {
        return;
    };
    let ada11 = launched_11(&env, "ada").await;
    let ada13 = env.launched("ada").await;
    env.launched("ben").await;
    launched_11(&env, "cyd").await;
    if personality == Personality::Canvas {
        assert_ne!(person(&ada11), person(&ada13));
        assert_eq!(active_learners(&env).await, 4);
    } else {
        assert_eq!(person(&ada11), person(&ada13));
        assert_eq!(active_learners(&env).await, 3);
    }
}

fn line(kind: &str, quantity: &str, amount: &str) -> (String, String, String) {
    (kind.into(), quantity.into(), amount.into())
}

crate::both_backends! {
    async fn a_migrated_learners_grade_goes_once_through_the_newest_launch(backend) {
        // Moodle keeps a migrated activity's link id: Ada launched link-1 through 1.1, then
        // through 1.3. The app posts her score on the 1.1 launch, then again on the 1.3 one.
        let Some(env) = env(backend, Personality::Moodle, LTI11_SECRET, CONFIGURED).await else { return };
        let old = launched_11_in(&env, "ada", "course-1", "link-1").await;
        let new = env.launched("ada").await;
        assert_eq!(new["person"]["link"], "link-1");
        let score = serde_json::json!({"scoreGiven": 7, "scoreMaximum": 10, "activityProgress": "Completed", "gradingProgress": "FullyGraded"});
        let (status, first) = env.post_score(old["launch_id"].as_str().unwrap(), score.clone()).await;
        assert_eq!(status, 202, "{first}");
        let id = first["score_id"].as_str().unwrap();
        let done = env.settled(id).await;
        assert_eq!(done["status"], "delivered", "{done}");
        // Through the 1.3 line item, under the 1.3 id; nothing through 1.1 outcomes.
        let book = env.lms.gradebook("course-1");
        assert_eq!(book.len(), 1, "{book:?}");
        assert_eq!(book[0].user_id, "ada");
        assert_eq!(book[0].score_given, Some(7.0));
        assert!(env.lms.lti11_grades().is_empty());
        // The same score posted on the 1.3 launch is the score already accepted.
        let (status, again) = env.post_score(new["launch_id"].as_str().unwrap(), score.clone()).await;
        assert_eq!(status, 202, "{again}");
        assert_eq!(again["score_id"], id);
        assert_eq!(env.usage_count("lti.grade_posted").await, 1);
        // A new score is a new delivery.
        let (_, third) = env.post_score(new["launch_id"].as_str().unwrap(), serde_json::json!({"scoreGiven": 9, "scoreMaximum": 10, "activityProgress": "Completed", "gradingProgress": "FullyGraded"})).await;
        assert_ne!(third["score_id"], id);
        assert_eq!(env.settled(third["score_id"].as_str().unwrap()).await["status"], "delivered");
        // Cyd has only launched through 1.1: her score goes through replaceResult.
        let cyd = launched_11_in(&env, "cyd", "course-1", "link-1").await;
        let (_, c) = env.post_score(cyd["launch_id"].as_str().unwrap(), score).await;
        assert_eq!(env.settled(c["score_id"].as_str().unwrap()).await["status"], "delivered");
        assert_eq!(env.lms.lti11_grades().len(), 1);
    }

    async fn golden_a_migrated_learner_is_billed_once(backend) {
        // Migration configured: three learners, 30.00 of seats, all in the 20% tier.
        let Some((lines, total)) = golden_month(backend, CONFIGURED).await else { return };
        assert_eq!(lines, [line("revenue", "3", "30.00"), line("share", "30.00", "6.00")]);
        assert_eq!(total, "6.00");
        // Not configured (what the gateway did before): Ada counts twice, four learners
        // reach the 40% tier and the partner is paid 10.00.
        let Some((lines, total)) = golden_month(backend, "").await else { return };
        assert_eq!(lines, [line("revenue", "4", "40.00"), line("share", "30.00", "6.00"), line("share", "10.00", "4.00")]);
        assert_eq!(total, "10.00");
    }

    async fn a_moodle_learner_through_both_versions_is_one_person_counted_once(backend) {
        one_month(backend, Personality::Moodle).await;
    }

    async fn a_canvas_learner_through_both_versions_is_one_person_counted_once(backend) {
        one_month(backend, Personality::Canvas).await;
    }

    async fn without_the_consumer_on_the_platform_the_claim_links_nobody(backend) {
        one_month_unconfigured(backend, Personality::Canvas).await;
    }

    async fn without_the_consumer_equal_ids_are_counted_as_the_ledger_always_did(backend) {
        one_month_unconfigured(backend, Personality::Moodle).await;
    }

    async fn a_forged_claim_links_nobody(backend) {
        // The LMS signs with a secret that is not the consumer's.
        let Some(env) = env(backend, Personality::Canvas, "not-the-consumer-secret-0123", CONFIGURED).await else { return };
        let ada11 = launched_11(&env, "ada").await;
        let ada13 = env.launched("ada").await;
        assert_ne!(person(&ada11), person(&ada13));
        assert_eq!(ada13["person"]["identities"].as_array().unwrap().len(), 1, "{ada13}");
        assert_eq!(active_learners(&env).await, 2);
        let metrics = env.app.client.get(env.app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.lines().any(|l| l.starts_with("gateway_lti_migration_claims_ignored_total") && !l.ends_with(" 0")), "{metrics}");
    }

    async fn a_claim_in_the_first_launch_makes_one_person_for_both_ids(backend) {
        // Canvas: the learner's first launch ever is through 1.3, carrying the claim; their
        // later 1.1 launch (a course not migrated yet) is the same person.
        let Some(env) = env(backend, Personality::Canvas, LTI11_SECRET, CONFIGURED).await else { return };
        let ada13 = env.launched("ada").await;
        let ada11 = launched_11(&env, "ada").await;
        assert_eq!(person(&ada13), person(&ada11));
        assert_eq!(active_learners(&env).await, 1);
    }

    async fn a_learner_seen_through_1_3_alone_then_claimed_joins_the_1_1_person(backend) {
        // Canvas: Ada launched through 1.3 before the tool was associated with its 1.1
        // consumer (no signed claim), then through 1.1, then through 1.3 once associated: her
        // 1.3 identity moves to her 1.1 person; the launch metered before keeps its subject.
        let Some(env) = env(backend, Personality::Canvas, LTI11_SECRET, CONFIGURED).await else { return };
        env.lms.set_migrated_from_lti11(false);
        let first = env.launched("ada").await;
        assert_eq!(person(&first), "ada");
        let ada11 = launched_11(&env, "ada").await;
        assert_ne!(person(&first), person(&ada11));
        env.lms.set_migrated_from_lti11(true);
        let ada13 = env.launched("ada").await;
        assert_eq!(person(&ada13), person(&ada11));
        env.lms.set_migrated_from_lti11(false);
        assert_eq!(person(&env.launched("ada").await), person(&ada11));
        // Metered: "ada" (the first launch, before the link) and the person.
        assert_eq!(active_learners(&env).await, 2);
    }
}
