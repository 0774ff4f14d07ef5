use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use partner_gateway::config::JobsConfig;
use partner_gateway::db::Db;
use partner_gateway::jobs::{self, Handlers, JobError, NewJob, Outcome, Runner};
use serde_json::{Value, json};

use crate::both;
use crate::helpers::TestApp;

fn fast(lease_secs: u64) -> JobsConfig {
    JobsConfig {
        enabled: true,
        concurrency: 4,
        poll_interval_ms: 10,
        lease_secs,
        max_attempts: 3,
        backoff_base_ms: 1,
        backoff_max_secs: 1,
        shutdown_grace_secs: 0,
    }
}

async fn enqueue(db: &Db, job: NewJob) -> String {
    let mut tx = db.begin().await.unwrap();
    let id = jobs::enqueue(&mut tx, &job, 3, Utc::now())
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    id
}

async fn state_of(db: &Db, id: &str) -> (String, i32) {
    let j = jobs::get_job(db, id).await.unwrap().unwrap();
    (j.state, j.attempts)
}

/// Run jobs until `id` reaches a final outcome (backoff delays are a few ms here).
async fn drive(runner: &Runner, db: &Db, id: &str) -> String {
    for _ in 0..500 {
        runner.run_next().await.unwrap();
        let (state, _) = state_of(db, id).await;
        if state == "succeeded" || state == "dead" {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("job {id} did not finish");
}

fn counting(kind: &str, runs: Arc<Mutex<Vec<Value>>>) -> Handlers {
    let mut h = Handlers::new();
    h.register(kind, move |ctx| {
        let runs = runs.clone();
        async move {
            runs.lock().unwrap().push(ctx.payload);
            Ok(())
        }
    });
    h
}

both! {
    async fn a_job_enqueued_in_a_rolled_back_transaction_never_exists(app) {
        let mut tx = app.db().begin().await.unwrap();
        jobs::enqueue(&mut tx, &NewJob::new("demo", json!({})), 3, Utc::now()).await.unwrap();
        drop(tx);
        let runs = Arc::new(Mutex::new(Vec::new()));
        let runner = Runner::new(app.db().clone(), counting("demo", runs.clone()), fast(5));
        assert_eq!(runner.run_next().await.unwrap(), Outcome::Idle);
        assert!(runs.lock().unwrap().is_empty());
    }

    async fn a_job_runs_once_with_its_payload(app) {
        let id = enqueue(app.db(), NewJob::new("demo", json!({"n": 7}))).await;
        let runs = Arc::new(Mutex::new(Vec::new()));
        let runner = Runner::new(app.db().clone(), counting("demo", runs.clone()), fast(5));
        assert_eq!(runner.run_next().await.unwrap(), Outcome::Succeeded(id.clone()));
        assert_eq!(runner.run_next().await.unwrap(), Outcome::Idle);
        assert_eq!(*runs.lock().unwrap(), [json!({"n": 7})]);
        assert_eq!(state_of(app.db(), &id).await, ("succeeded".into(), 1));
    }

    async fn a_runner_leaves_kinds_it_has_no_handler_for(app) {
        let id = enqueue(app.db(), NewJob::new("future.kind", json!({}))).await;
        let runner = Runner::new(app.db().clone(), counting("demo", Arc::default()), fast(5));
        assert_eq!(runner.run_next().await.unwrap(), Outcome::Idle);
        assert_eq!(state_of(app.db(), &id).await, ("pending".into(), 0));
    }

    async fn a_dedupe_key_enqueues_once(app) {
        let mut job = NewJob::new("demo", json!({}));
        job.dedupe_key = Some("grade:42".into());
        let mut tx = app.db().begin().await.unwrap();
        assert!(jobs::enqueue(&mut tx, &job, 3, Utc::now()).await.unwrap().is_some());
        assert!(jobs::enqueue(&mut tx, &job, 3, Utc::now()).await.unwrap().is_none());
        tx.commit().await.unwrap();
        // Of its kind: the privacy purge the app schedules at start is a job too.
        assert_eq!(jobs::list_jobs(app.db(), None, Some("demo"), None, 10).await.unwrap().len(), 1);
    }

    async fn a_job_error_quoting_a_nul_is_recorded_and_the_job_still_ends(app) {
        let id = enqueue(app.db(), NewJob::new("nul", json!({}))).await;
        let mut h = Handlers::new();
        h.register("nul", |_ctx| async move {
            Err(JobError::Retry("the partner answered \u{0}oops\u{0}".into()))
        });
        let runner = Runner::new(app.db().clone(), h, fast(5));
        assert_eq!(drive(&runner, app.db(), &id).await, "dead");
        let j = jobs::get_job(app.db(), &id).await.unwrap().unwrap();
        assert_eq!(j.last_error.as_deref(), Some("attempt 3/3: the partner answered \u{fffd}oops\u{fffd}"));
    }

    async fn a_failing_job_is_retried_then_dead_and_reported(app) {
        let id = enqueue(app.db(), NewJob::new("flaky", json!({}))).await;
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let mut h = Handlers::new();
        let seen = attempts.clone();
        h.register("flaky", move |ctx| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(ctx.attempt);
                Err(JobError::Retry(format!("partner said 503 on attempt {}", ctx.attempt)))
            }
        });
        let runner = Runner::new(app.db().clone(), h, fast(5));
        assert_eq!(drive(&runner, app.db(), &id).await, "dead");
        assert_eq!(*attempts.lock().unwrap(), [1, 2, 3]);

        let admin = app.admin().await;
        let body: Value = app.get(&admin, "/v1/jobs?state=dead").await.json().await.unwrap();
        assert_eq!(body["data"].as_array().unwrap().len(), 1);
        assert_eq!(body["data"][0]["id"], id.as_str());
        assert_eq!(body["data"][0]["attempts"], 3);
        assert_eq!(body["data"][0]["last_error"], "attempt 3/3: partner said 503 on attempt 3");
        let one: Value = app.get(&admin, &format!("/v1/jobs/{id}")).await.json().await.unwrap();
        assert_eq!(one["job"]["state"], "dead");
        assert_eq!(one["job"]["id"], id.as_str());
        assert!(one["payload"].is_object(), "{one}");
        assert_eq!(app.get(&admin, "/v1/jobs/no-such-job").await.status(), 404);
        let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("gateway_jobs{state=\"dead\"} 1"), "{metrics}");

        // An admin can put it back in the queue.
        let resp = app.client.post(app.url(&format!("/v1/jobs/{id}/retry"))).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(state_of(app.db(), &id).await, ("pending".into(), 0));
        let resp = app.client.post(app.url(&format!("/v1/jobs/{id}/retry"))).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(resp.status(), 409);
    }

    async fn a_permanent_failure_is_dead_at_once(app) {
        let id = enqueue(app.db(), NewJob::new("bad", json!({}))).await;
        let mut h = Handlers::new();
        h.register("bad", |_ctx| async { Err(JobError::Permanent("the LMS refused the score as invalid".into())) });
        let runner = Runner::new(app.db().clone(), h, fast(5));
        assert_eq!(runner.run_next().await.unwrap(), Outcome::Dead(id.clone()));
        assert_eq!(state_of(app.db(), &id).await, ("dead".into(), 1));
    }

    async fn a_panicking_handler_is_retried(app) {
        let id = enqueue(app.db(), NewJob::new("boom", json!({}))).await;
        let mut h = Handlers::new();
        h.register("boom", |ctx| async move {
            if ctx.attempt == 1 {
                panic!("handler bug");
            }
            Ok(())
        });
        let runner = Runner::new(app.db().clone(), h, fast(5));
        assert_eq!(drive(&runner, app.db(), &id).await, "succeeded");
        assert_eq!(state_of(app.db(), &id).await.1, 2);
    }

    async fn a_job_whose_runner_died_is_taken_again_when_its_lease_lapses(app) {
        let id = enqueue(app.db(), NewJob::new("slow", json!({}))).await;
        let mut h = Handlers::new();
        h.register("slow", |ctx| async move {
            if ctx.attempt == 1 {
                // The first worker hangs here until it is killed.
                std::future::pending::<()>().await;
            }
            Ok(())
        });
        let dying = Runner::new(app.db().clone(), h.clone(), fast(2));
        let task = tokio::spawn(async move { dying.run_next().await });
        while state_of(app.db(), &id).await.0 != "running" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort(); // the worker dies: no completion, no release, no more lease renewals

        let other = Runner::new(app.db().clone(), h, fast(2));
        assert_eq!(other.run_next().await.unwrap(), Outcome::Idle, "the lease still holds");
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert_eq!(other.run_next().await.unwrap(), Outcome::Succeeded(id.clone()));
        assert_eq!(state_of(app.db(), &id).await, ("succeeded".into(), 2));
    }

    async fn shutdown_gives_the_lease_of_an_unfinished_job_back(app) {
        let id = enqueue(app.db(), NewJob::new("slow", json!({}))).await;
        let mut h = Handlers::new();
        h.register("slow", |_ctx| async move {
            std::future::pending::<()>().await;
            Ok(())
        });
        let runner = Runner::new(app.db().clone(), h, fast(30));
        let token = tokio_util::sync::CancellationToken::new();
        let running = tokio::spawn(runner.run(token.clone()));
        while state_of(app.db(), &id).await.0 != "running" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), running).await.unwrap().unwrap();
        // Back in the queue at once, the interrupted attempt not counted.
        assert_eq!(state_of(app.db(), &id).await, ("pending".into(), 0));
    }

    async fn two_runners_never_run_the_same_job_at_once(app) {
        two_runners(app).await;
    }
}

crate::both_backends! {
    async fn stopping_the_server_releases_the_leases_of_running_jobs(backend) {
        let mut h = Handlers::new();
        h.register("slow", |_ctx| async move {
            std::future::pending::<()>().await;
            Ok(())
        });
        let extra = "[jobs]\nenabled = true\npoll_interval_ms = 10\nshutdown_grace_secs = 0\n";
        let Some(app) = TestApp::spawn_with(backend, extra, h).await else { return };
        let id = enqueue(app.db(), NewJob::new("slow", json!({}))).await;
        while state_of(app.db(), &id).await.0 != "running" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // serve() returns Ok once requests are drained and leases are given back. It closes
        // its pool too, so the job is read through a fresh connection.
        let db = app.connect_again().await;
        app.stop().await;
        assert_eq!(state_of(&db, &id).await, ("pending".into(), 0));
    }
}

/// Two runners (as two instances would) with four workers each drain 60 jobs: every job
/// runs exactly once and never on two workers at the same moment.
async fn two_runners(app: TestApp) {
    let mut ids = HashSet::new();
    for i in 0..60 {
        ids.insert(enqueue(app.db(), NewJob::new("work", json!({ "i": i }))).await);
    }
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let overlaps: Arc<Mutex<u32>> = Arc::default();
    let mut h = Handlers::new();
    {
        let (in_flight, runs, overlaps) = (in_flight.clone(), runs.clone(), overlaps.clone());
        h.register("work", move |ctx| {
            let (in_flight, runs, overlaps) = (in_flight.clone(), runs.clone(), overlaps.clone());
            async move {
                if !in_flight.lock().unwrap().insert(ctx.id.clone()) {
                    *overlaps.lock().unwrap() += 1;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
                *runs.lock().unwrap().entry(ctx.id.clone()).or_default() += 1;
                in_flight.lock().unwrap().remove(&ctx.id);
                Ok(())
            }
        });
    }
    let token = tokio_util::sync::CancellationToken::new();
    let a = tokio::spawn(Runner::new(app.db().clone(), h.clone(), fast(10)).run(token.clone()));
    let b = tokio::spawn(Runner::new(app.db().clone(), h, fast(10)).run(token.clone()));
    for _ in 0..1000 {
        let done = jobs::count_jobs_by_state(app.db()).await.unwrap();
        if done.iter().any(|(s, n)| s == "succeeded" && *n == 60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    token.cancel();
    a.await.unwrap();
    b.await.unwrap();
    assert_eq!(*overlaps.lock().unwrap(), 0);
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 60);
    assert!(runs.values().all(|n| *n == 1), "{runs:?}");
    assert_eq!(runs.keys().cloned().collect::<HashSet<_>>(), ids);
}

both! {
    // Jobs created in the same microsecond page by id, with no repeats and no gaps.
    async fn jobs_page_by_cursor_newest_first(app) {
        let now = Utc::now();
        let mut tx = app.db().begin().await.unwrap();
        let mut ids = Vec::new();
        for i in 0..7 {
            ids.push(jobs::enqueue(&mut tx, &NewJob::new("page", json!({"i": i})), 3, now).await.unwrap().unwrap());
        }
        tx.commit().await.unwrap();
        ids.sort();
        ids.reverse();
        assert!(ids.iter().all(|id| id.starts_with("job_")), "{ids:?}");
        let admin = app.admin().await;
        let paged = crate::statements::all_pages(&app, &admin, "/v1/jobs?kind=page", 3).await;
        let got: Vec<&str> = paged.iter().map(|j| j["id"].as_str().unwrap()).collect();
        assert_eq!(got, ids);
        assert!(paged[0]["created_at"].as_str().unwrap().ends_with('Z'));
        assert!(paged[0].get("created_at_us").is_none(), "{}", paged[0]);
    }
}
