//! Privacy (issue 27): the ledger keeps pseudonyms, never ids; a person's records are
//! exported and erased (nothing of them left in any table; meters and issued statements
//! unchanged, `verify` still passing); the retention purge; rows written before pseudonyms
//! converted with issued statements still verifying.

use chrono::{Datelike, TimeZone, Utc};
use partner_gateway::apikeys::Role;
use partner_gateway::db::Db;
use partner_sim::lms::{MockUser, Personality};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp};
use crate::lti_env::{EnvOpts, LTI11_SECRET, LtiEnv, PARTNER, start_opts_with};
use crate::lti_migration::{AGREEMENT, CONFIGURED, launched_11};
use crate::statements::post;

/// Noon on the 15th of last month, and last month as a period.
fn last_month() -> (chrono::DateTime<Utc>, String) {
    let now = Utc::now();
    let (y, m) = if now.month() == 1 {
        (now.year() - 1, 12)
    } else {
        (now.year(), now.month() - 1)
    };
    (
        Utc.with_ymd_and_hms(y, m, 15, 12, 0, 0).unwrap(),
        format!("{y:04}-{m:02}"),
    )
}

/// Every text value in every table, as (table.column or table, value). SQLite's BLOB
/// columns are sealed (AES-GCM) and skipped; PostgreSQL rows are read whole as JSON.
async fn every_cell(db: &Db) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match db {
        Db::Sqlite(pool) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            for t in tables {
                let cols: Vec<(String, String)> =
                    sqlx::query_as(&format!("SELECT name, type FROM pragma_table_info('{t}')"))
                        .fetch_all(pool)
                        .await
                        .unwrap();
                for (c, ty) in cols {
                    if ty.to_uppercase().contains("BLOB") {
                        continue;
                    }
                    let vals: Vec<Option<String>> =
                        sqlx::query_scalar(&format!("SELECT CAST(\"{c}\" AS TEXT) FROM \"{t}\""))
                            .fetch_all(pool)
                            .await
                            .unwrap();
                    out.extend(vals.into_iter().flatten().map(|v| (format!("{t}.{c}"), v)));
                }
            }
        }
        Db::Postgres(pool) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            for t in tables {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT row_to_json(x)::text FROM \"{t}\" x"))
                        .fetch_all(pool)
                        .await
                        .unwrap();
                out.extend(rows.into_iter().map(|r| (t.clone(), r)));
            }
        }
    }
    out
}

/// Whether `cell` holds `id` as a whole token (not inside a longer word: `ada` is not in
/// `metadata`).
fn holds(cell: &str, id: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    cell.match_indices(id).any(|(i, _)| {
        let before = cell[..i].chars().next_back();
        let after = cell[i + id.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// Where any of `ids` is still held: (table/column, id).
pub(crate) async fn traces(db: &Db, ids: &[String]) -> Vec<(String, String)> {
    let cells = every_cell(db).await;
    let mut found = Vec::new();
    for (place, cell) in &cells {
        for id in ids {
            if holds(cell, id) && !found.contains(&(place.clone(), id.clone())) {
                found.push((place.clone(), id.clone()));
            }
        }
    }
    found
}

async fn active_learners(app: &TestApp, period: &str) -> Value {
    let admin = app.admin().await;
    let (status, body) = app
        .query(
            &admin,
            &[
                ("meter", "active_learners"),
                ("partner", PARTNER),
                ("period", period),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"][0]["value"].clone()
}

async fn env(backend: Backend) -> Option<LtiEnv> {
    start_opts_with(
        backend,
        Personality::Canvas,
        AGREEMENT,
        EnvOpts {
            migration_secret: Some(LTI11_SECRET),
            platform: CONFIGURED,
            ..EnvOpts::default()
        },
    )
    .await
}

both_backends! {
    // Ada launches through LTI 1.1 and 1.3 (one migrated person), gets a grade; Ben
    // launches too. Last month's statement is finalized. Ada is exported, then erased:
    // nothing of hers is left in any table, Ben's records are all there, the meter and the
    // statement are unchanged, and the statement still verifies.
    async fn an_erased_person_leaves_no_trace_and_statements_still_verify(backend) {
        let Some(env) = env(backend).await else { return };
        let app = &env.app;
        let ada11 = launched_11(&env, "ada").await;
        let ada13 = env.launched("ada").await;
        assert_eq!(ada11["person"]["id"], ada13["person"]["id"]);
        let ben = env.launched("ben").await;
        let launch = ada13["launch_id"].as_str().or(ada13["id"].as_str()).unwrap().to_owned();
        // Sent with an Idempotency-Key: the answer kept for a retry names her launch.
        let r = app.client.post(app.url(&format!("/v1/launches/{launch}/scores")))
            .bearer_auth(&env.app_key).header("Idempotency-Key", "grade-ada-1")
            .json(&json!({"scoreGiven": 9, "scoreMaximum": 10, "activityProgress": "Completed", "gradingProgress": "FullyGraded", "comment": "Ada's essay on Lovelace"}))
            .send().await.unwrap();
        assert_eq!(r.status(), 202);
        let score: Value = r.json().await.unwrap();
        let settled = env.settled(score["score_id"].as_str().unwrap()).await;
        assert_eq!(settled["status"], "delivered", "{settled}");

        // The ledger holds pseudonyms only.
        let legacy = MockUser::learner("ada").lti11_user_id(Personality::Canvas);
        let subjects: Vec<Option<String>> = partner_gateway::with_db!(app.db(), c => sqlx::query_scalar(
            "SELECT subject FROM usage_events WHERE partner_id = $1").bind(PARTNER).fetch_all(c).await).unwrap();
        assert!(!subjects.is_empty());
        for s in subjects.iter().flatten() {
            assert!(s.starts_with("ps1_") && s.len() == 28, "{s}");
        }
        assert!(subjects.contains(&Some(app.state.subjects.pseudonym(PARTNER, &legacy))));

        // Last month, so its statement can be finalized.
        let (at, period) = last_month();
        partner_gateway::with_db!(app.db(), c => sqlx::query(
            "UPDATE usage_events SET time_us = $1, received_at_us = $1 WHERE partner_id = $2")
            .bind(partner_gateway::time::to_micros(at)).bind(PARTNER).execute(c).await.map(|_| ())).unwrap();
        assert_eq!(active_learners(app, &period).await, 2);
        let finance = app.key(Role::Finance, None).await;
        let (status, st) = post(app, &finance, "/v1/statements", json!({"partner": PARTNER, "period": period})).await;
        assert!(status == 201 || status == 200, "{status} {st}");
        let id = st["id"].as_str().unwrap().to_owned();
        let (status, fin) = post(app, &finance, &format!("/v1/statements/{id}/finalize"), json!({})).await;
        assert_eq!(status, 200, "{fin}");

        // Export: by email, everything of hers across both LTI versions.
        let admin = app.admin().await;
        let (status, doc) = post(app, &admin, "/v1/privacy/exports", json!({"partner": PARTNER, "email": "ADA@example.edu"})).await;
        assert_eq!(status, 200, "{doc}");
        assert_eq!(doc["launches"].as_array().unwrap().len(), 2, "{doc}");
        assert_eq!(doc["lti_identities"].as_array().unwrap().len(), 2, "{doc}");
        assert_eq!(doc["scores"].as_array().unwrap().len(), 1, "{doc}");
        assert_eq!(doc["scores"][0]["score"]["comment"], "Ada's essay on Lovelace");
        assert!(doc["ledger_events"].as_array().unwrap().len() >= 3, "{doc}");
        assert!(!doc["webhook_messages"].as_array().unwrap().is_empty(), "{doc}");
        let mut ids: Vec<String> = vec![
            "ada".into(),
            legacy.clone(),
            "ada@example.edu".into(),
            "Student ada".into(),
            "Ada's essay on Lovelace".into(),
        ];
        ids.extend(doc["identifiers"]["ledger_pseudonyms"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()));
        assert!(ids.len() >= 7, "{ids:?}");
        // The scan sees them before (it would find them if they were left).
        let before = traces(app.db(), &ids).await;
        for table in ["launches", "lti_identities", "lti_scores", "usage_events", "webhook_messages"] {
            assert!(before.iter().any(|(place, _)| place.starts_with(table)), "{table}: {before:?}");
        }
        let ben_before = traces(app.db(), &["ben".to_owned()]).await;

        // Erase by her 1.3 id: the 1.1 identity comes with her person.
        let (status, erased) = post(app, &admin, "/v1/privacy/erasures", json!({"partner": PARTNER, "user_id": "ada"})).await;
        assert_eq!(status, 200, "{erased}");
        assert_eq!(erased["erased"]["launches"], 2, "{erased}");
        assert_eq!(erased["erased"]["scores"], 1, "{erased}");
        assert_eq!(erased["erased"]["lti_identities"], 4, "two identities, a person link for each version's link: {erased}");
        assert!(erased["erased"]["ledger_events"].as_u64().unwrap() >= 3, "{erased}");
        let left = traces(app.db(), &ids).await;
        assert!(left.is_empty(), "personal data left after erasure: {left:?}");
        let kept: i64 = partner_gateway::with_db!(app.db(), c => sqlx::query_scalar(
            "SELECT COUNT(*) FROM idempotency_keys").fetch_one(c).await).unwrap();
        assert_eq!(kept, 0, "the answer kept for a retry about her launch is gone");
        // Ben is untouched.
        assert_eq!(traces(app.db(), &["ben".to_owned()]).await, ben_before);
        let (_, ben_doc) = post(app, &admin, "/v1/privacy/exports", json!({"partner": PARTNER, "user_id": "ben"})).await;
        assert_eq!(ben_doc["launches"][0]["id"], ben["launch_id"].as_str().or(ben["id"].as_str()).unwrap());

        // Meters and the issued statement are unchanged, and it verifies.
        assert_eq!(active_learners(app, &period).await, 2);
        let v: Value = app.get(&finance, &format!("/v1/statements/{id}/verify")).await.json().await.unwrap();
        assert_eq!(v["ok"], true, "{v}");
        let again: Value = app.get(&finance, &format!("/v1/statements/{id}")).await.json().await.unwrap();
        assert_eq!(again["document"], fin["document"]);

        // Both requests are in the audit log, naming her by a keyed hash only.
        let audit: Vec<(String, String, Option<String>, String)> = partner_gateway::with_db!(app.db(), c => sqlx::query_as(
            "SELECT action, actor, subject_ref, origin FROM audit_log WHERE action LIKE 'privacy.%' ORDER BY at_us").fetch_all(c).await).unwrap();
        let actions: Vec<&str> = audit.iter().map(|a| a.0.as_str()).collect();
        assert_eq!(actions, ["privacy.export", "privacy.erase", "privacy.export"]);
        assert!(audit.iter().all(|a| a.2.as_deref().is_some_and(|r| r.starts_with("ps1_")) && a.3.starts_with("api ")));

        // Erasing again finds nothing; a new launch is a new person.
        let (status, twice) = post(app, &admin, "/v1/privacy/erasures", json!({"partner": PARTNER, "user_id": "ada"})).await;
        assert_eq!(status, 200);
        assert_eq!(twice["erased"], json!({"launches": 0, "scores": 0, "lti_identities": 0, "webhook_messages": 0, "ledger_events": 0}));
    }

    // The purge removes what retention no longer keeps, in batches, once: launches lose
    // their user, context, tokens and codes; settled scores, finished jobs and forgotten
    // LTI people go. Two purges at once do it once between them.
    async fn the_purge_removes_what_retention_no_longer_keeps(backend) {
        let Some(env) = env(backend).await else { return };
        let app = &env.app;
        let ada = env.launched("ada").await;
        launched_11(&env, "cyd").await;
        let launch = ada["launch_id"].as_str().or(ada["id"].as_str()).unwrap().to_owned();
        let (_, score) = env.post_score(&launch, json!({"scoreGiven": 1, "scoreMaximum": 2, "activityProgress": "Completed", "gradingProgress": "FullyGraded"})).await;
        env.settled(score["score_id"].as_str().unwrap()).await;
        let count = |sql: &'static str| async move {
            partner_gateway::with_db!(app.db(), c => sqlx::query_scalar::<_, i64>(sql).fetch_one(c).await).unwrap()
        };
        let mut cfg = (*app.state.config).clone();
        cfg.privacy.purge_batch = 1;
        // Now: nothing is old enough.
        let now = Utc::now();
        let none = partner_gateway::privacy::purge::purge(app.db(), &app.state.subjects, &cfg, now).await.unwrap();
        assert_eq!(none.total(), 0, "{none:?}");
        // Past every retention but the audit log's.
        let later = now + chrono::Duration::days(500);
        let (a, b) = tokio::join!(
            partner_gateway::privacy::purge::purge(app.db(), &app.state.subjects, &cfg, later),
            partner_gateway::privacy::purge::purge(app.db(), &app.state.subjects, &cfg, later),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.launches + b.launches, 2, "{a:?} {b:?}");
        assert_eq!(a.scores + b.scores, 1, "{a:?} {b:?}");
        assert!(a.finished_jobs + b.finished_jobs >= 1, "{a:?} {b:?}");
        assert!(a.lti_people + b.lti_people >= 2, "{a:?} {b:?}");
        assert_eq!(count("SELECT COUNT(*) FROM launches WHERE personal_purged_at_us IS NULL").await, 0);
        assert_eq!(count("SELECT COUNT(*) FROM launches WHERE user_id IS NOT NULL OR user_name IS NOT NULL OR context <> '{}'").await, 0);
        assert_eq!(count("SELECT COUNT(*) FROM launch_handoffs").await, 0);
        assert_eq!(count("SELECT COUNT(*) FROM lti_scores").await, 0);
        assert_eq!(count("SELECT COUNT(*) FROM lti_identities").await, 0);
        assert_eq!(count("SELECT COUNT(*) FROM lti_person_links").await, 0);
        assert_eq!(count("SELECT COUNT(*) FROM jobs WHERE kind = 'lti.score'").await, 0);
        // The ledger is kept (pseudonymous), and so are the launch rows it refers to.
        assert_eq!(count("SELECT COUNT(*) FROM launches").await, 2);
        assert!(count("SELECT COUNT(*) FROM usage_events").await >= 3);
        // What the app would read of the launch holds no one (the purge ran as if 500 days
        // later; in real time the launch is still live).
        let r = app.get(&env.app_key, &format!("/v1/launches/{launch}")).await;
        let view: Value = r.json().await.unwrap();
        assert!(traces(app.db(), &["ada".into(), "ada@example.edu".into(), "Student ada".into()]).await.is_empty(), "{view}");
        assert!(!holds(&view.to_string(), "ada"), "{view}");
        assert_eq!(view["user"], json!({"id": null, "name": null}), "{view}");
        // Nothing is left to do.
        let again = partner_gateway::privacy::purge::purge(app.db(), &app.state.subjects, &cfg, later).await.unwrap();
        assert_eq!(again.total(), 0, "{again:?}");
    }

    // Rows written before pseudonyms (ids as subjects, a SMART launch's patient id) are
    // converted; a statement issued from them before still verifies, with the same figures.
    async fn rows_written_before_pseudonyms_are_converted_and_statements_still_verify(backend) {
        let Some(app) = TestApp::spawn_with(backend, AGREEMENT_EHR, Default::default()).await else { return };
        let (at, period) = last_month();
        let at_us = partner_gateway::time::to_micros(at);
        let rows = [
            ("e1", "smart.launch", Some("Practitioner/1"), Some(json!({"patient": "pat-1"}))),
            ("e2", "smart.launch", Some("Practitioner/1"), Some(json!({"patient": "pat-2"}))),
            ("e3", "smart.launch", Some("Practitioner/2"), None),
            ("e4", "smart.launch", None, Some(json!({"patient": "pat-1"}))),
        ];
        // As the gateway wrote them before: the ids themselves, `subject_form` 0.
        let data_param = if matches!(backend, Backend::Postgres) { "$6::jsonb" } else { "$6" };
        let insert = format!(
            "INSERT INTO usage_events (partner_id, source, event_id, type, subject, time_us, data, \
             received_at_us, recorded_by, subject_form) VALUES ($1, 's', $2, $3, $4, $5, {data_param}, $5, 'gateway', 0)");
        for (id, ty, subject, data) in rows {
            partner_gateway::with_db!(app.db(), c => sqlx::query(&insert)
                .bind(EHR).bind(id).bind(ty).bind(subject).bind(at_us)
                .bind(data.map(|d| d.to_string()))
                .execute(c).await.map(|_| ())).unwrap();
        }
        let finance = app.key(Role::Finance, None).await;
        let (status, st) = post(&app, &finance, "/v1/statements", json!({"partner": EHR, "period": period})).await;
        assert!(status == 201 || status == 200, "{status} {st}");
        let id = st["id"].as_str().unwrap().to_owned();
        let (status, fin) = post(&app, &finance, &format!("/v1/statements/{id}/finalize"), json!({})).await;
        assert_eq!(status, 200, "{fin}");
        let users = |st: &Value| st["document"]["lines"].as_array().unwrap().iter()
            .find(|l| l["meter"] == "ehr_users").map(|l| l["quantity"].clone());
        assert_eq!(users(&fin), Some(json!("2")), "{fin}");

        let n = partner_gateway::metering::store::pseudonymize_legacy(app.db(), &app.state.subjects, 2).await.unwrap();
        assert_eq!(n, 4);
        let stored: Vec<(Option<String>, Option<String>, i64)> = partner_gateway::with_db!(app.db(), c => sqlx::query_as(
            "SELECT subject, CAST(data AS TEXT), CAST(subject_form AS BIGINT) FROM usage_events WHERE partner_id = 'oracle-health-sandbox' ORDER BY event_id")
            .fetch_all(c).await).unwrap();
        let s = &app.state.subjects;
        assert_eq!(stored[0].0.as_deref(), Some(s.pseudonym(EHR, "Practitioner/1").as_str()));
        assert_eq!(stored[0].0, stored[1].0);
        assert!(stored.iter().all(|r| r.2 == 1));
        let patient = |r: &(Option<String>, Option<String>, i64)| r.1.as_deref().map(|d| serde_json::from_str::<Value>(d).unwrap()["patient"].clone());
        assert_eq!(patient(&stored[0]), Some(json!(s.patient(EHR, "pat-1"))));
        assert_eq!(patient(&stored[3]), patient(&stored[0]));
        assert_eq!(patient(&stored[2]), None);
        assert!(traces(app.db(), &["pat-1".into(), "pat-2".into(), "Practitioner/1".into()]).await.is_empty());
        // Converting again converts nothing.
        assert_eq!(partner_gateway::metering::store::pseudonymize_legacy(app.db(), &app.state.subjects, 2).await.unwrap(), 0);
        let v: Value = app.get(&finance, &format!("/v1/statements/{id}/verify")).await.json().await.unwrap();
        assert_eq!(v["ok"], true, "{v}");
    }

    // The API: admin keys only; the person named properly; a partner that exists.
    async fn privacy_requests_are_checked(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let admin = app.admin().await;
        for path in ["/v1/privacy/exports", "/v1/privacy/erasures"] {
            for role in [Role::Finance, Role::App] {
                let key = app.key(role, None).await;
                let (status, body) = post(&app, &key, path, json!({"partner": "epic-sandbox", "user_id": "u"})).await;
                assert_eq!(status, 403, "{role:?} {body}");
            }
            let partner = app.partner_key("epic-sandbox").await;
            assert_eq!(post(&app, &partner, path, json!({"partner": "epic-sandbox", "user_id": "u"})).await.0, 403);
            let (status, body) = post(&app, &admin, path, json!({"partner": "epic-sandbox"})).await;
            assert_eq!(status, 400, "{body}");
            assert!(body["detail"].as_str().unwrap().contains("user_id or email"), "{body}");
            assert_eq!(post(&app, &admin, path, json!({"partner": "epic-sandbox", "email": "nobody"})).await.0, 400);
            assert_eq!(post(&app, &admin, path, json!({"partner": "epic-sandbox", "user_id": "u", "name": "x"})).await.0, 400);
            let (status, body) = post(&app, &admin, path, json!({"partner": "nope", "user_id": "u"})).await;
            assert_eq!(status, 404, "{body}");
            // Nobody by that id: an empty answer, still audited.
            let (status, body) = post(&app, &admin, path, json!({"partner": "epic-sandbox", "user_id": "nobody"})).await;
            assert_eq!(status, 200, "{body}");
        }
        let n: i64 = partner_gateway::with_db!(app.db(), c => sqlx::query_scalar("SELECT COUNT(*) FROM audit_log").fetch_one(c).await).unwrap();
        assert_eq!(n, 2, "the refused requests are not audited; the two answered are");
    }
}

/// An EHR partner of the sample config without an agreement of its own.
const EHR: &str = "oracle-health-sandbox";

/// An EHR agreement pricing distinct users of SMART launches.
const AGREEMENT_EHR: &str = r#"
[[meters]]
name = "ehr_users"
event_types = ["smart.launch"]
aggregation = "UNIQUE_COUNT"
value = "subject"

[[agreements]]
id = "oracle-users"
partner = "oracle-health-sandbox"
version = 1
valid_from = "2026-01-01"
currency = "USD"
[agreements.revenue]
recorded = false
[[agreements.revenue.prices]]
meter = "ehr_users"
model = "per_unit"
unit_price = "5.00"
[agreements.share]
rate = "10%"
"#;
