//! Two `serve` processes on one PostgreSQL database behind nginx work as one service:
//!
//! - both start at once on an empty schema (both migrate);
//! - a SMART launch and LTI launches that start on one instance finish on the other;
//! - usage ingest through nginx goes on while one instance is SIGKILLed and restarted, and
//!   every acknowledged event is stored exactly once (clients retry the same event ids after
//!   an error, which ingest's idempotency makes safe);
//! - score deliveries (LTI AGS to a failing mock LMS) and webhook deliveries (to a slow,
//!   failing receiver) queued before the kill are all delivered after it, and no job or
//!   delivery ran on both instances at once (triggers log every lease change of `jobs` and
//!   `webhook_deliveries` with the PostgreSQL session's `application_name`, which names the
//!   process; the receiver logs every request's start and end per `webhook-id`).
//!
//! It prints the figures docs/PERFORMANCE.md quotes ("Several instances on PostgreSQL"):
//! events/s through nginx with one instance and with two, client errors and retries during
//! the kill, and the time to recover. PostgreSQL only; skipped without `TEST_DATABASE_URL`,
//! and it fails (does not skip) when nginx is missing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use chrono::{SecondsFormat, Utc};
use partner_sim::ehr::{LaunchContext, MockClient, MockEhr, MockEhrOptions, Vendor};
use partner_sim::lms::{
    AgsFault, LaunchSpec, MockLms, MockLmsOptions, MockTool, MockUser, Personality,
    parse_auto_post_form,
};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::support::{Server, Store, TestEnv, encode};

const EHR_PARTNER: &str = "mi-ehr";
const EHR_CLIENT: &str = "mi-app";
const LMS_PARTNER: &str = "mi-lms";
const LMS_CLIENT: &str = "mi-client";
const DEPLOYMENT: &str = "mi-deployment";
const COURSE: &str = "mi-course";
const APP_URL: &str = "https://app.example.test/launch";

/// The ingest load: partner, source, concurrent clients, events per request.
const LOAD_PARTNER: &str = "epic-sandbox";
const LOAD_SOURCE: &str = "https://gateway.example.com/multi-instance";
const CLIENTS: usize = 8;
const BATCH: usize = 50;
/// Each throughput window: warm-up, then the measured time; one instance, two, one, two.
const WARM_UP: Duration = Duration::from_millis(500);
const MEASURE: Duration = Duration::from_secs(2);
/// The kill phase: steady load before the kill, time the instance stays dead, load after
/// the restarted instance answers.
const BEFORE_KILL: Duration = Duration::from_millis(1500);
const DEAD_FOR: Duration = Duration::from_millis(1500);
const AFTER_RESTART: Duration = Duration::from_secs(3);

/// Learners who launch and get scores; scores each.
const LEARNERS: usize = 5;
const SCORES_EACH: usize = 2;
/// `usage.threshold.crossed` messages (one meter, thresholds 1..=6).
const THRESHOLDS: usize = 6;
/// How long the webhook receiver holds each request (so overlapping sends would show).
const HOOK_HOLD: Duration = Duration::from_millis(150);
const HOOK_EVENTS: [&str; 3] = [
    "usage.threshold.crossed",
    "launch.completed",
    "grade.delivered",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pg_tests),
    ignore = "PostgreSQL only: set TEST_DATABASE_URL (./dev test does when PostgreSQL answers on 127.0.0.1:5432)"
)]
async fn two_instances_behind_nginx_work_as_one_service() {
    let nginx_bin = find_nginx();
    let Some(env) = TestEnv::new(crate::support::Backend::Postgres).await else {
        return;
    };
    let started = Instant::now();

    // Ports first: nginx, and the public URL both instances advertise, name them.
    let [port_one, port_two, port_a, port_b] = distinct_ports();
    let public = format!("http://127.0.0.1:{port_two}");
    let (addr_a, addr_b) = (format!("127.0.0.1:{port_a}"), format!("127.0.0.1:{port_b}"));

    // The partners' mocks; the EHR and the LMS reach the gateway (its JWKS) through nginx.
    let ehr = MockEhr::start(MockEhrOptions::new(
        Vendor::Epic,
        vec![MockClient::asymmetric(
            EHR_CLIENT,
            &format!("{public}/.well-known/jwks.json"),
            vec![format!("{public}/smart/callback")],
        )],
    ))
    .await
    .unwrap();
    let lms = Arc::new(
        MockLms::start(MockLmsOptions::new(
            Personality::Generic,
            vec![MockTool::gateway(LMS_CLIENT, DEPLOYMENT, &public)],
        ))
        .await
        .unwrap(),
    );
    let hooks = Hooks::start().await;
    write_config(&env.config_dir, &ehr, &lms);

    let nginx = Nginx::start(&nginx_bin, port_one, port_two, &addr_a, &addr_b);
    let master_key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let settings_owned: Vec<(&str, String)> = vec![
        ("GATEWAY__HTTP__PUBLIC_URL", public.clone()),
        ("GATEWAY__DATABASE__MIGRATE_ON_START", "true".into()),
        // Every instance must share the master key (a file per host would not be shared).
        ("GATEWAY__KEYS__MASTER_KEY", master_key),
        ("GATEWAY__OUTBOUND__ALLOW_HTTP", "true".into()),
        ("GATEWAY__OUTBOUND__PRIVATE_NETWORKS", "127.0.0.1".into()),
        ("GATEWAY__JOBS__POLL_INTERVAL_MS", "50".into()),
        ("GATEWAY__JOBS__LEASE_SECS", "3".into()),
        ("GATEWAY__JOBS__BACKOFF_BASE_MS", "300".into()),
        ("GATEWAY__JOBS__BACKOFF_MAX_SECS", "1".into()),
        ("GATEWAY__JOBS__MAX_ATTEMPTS", "200".into()),
    ];
    let settings: Vec<(&str, &str)> = settings_owned
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    // Each process names its PostgreSQL sessions, so the audit triggers know who did what.
    let named = |name: &str| format!("{}&application_name={name}", env.db_url);
    let (url_a, url_b, url_a2) = (named("gw-a"), named("gw-b"), named("gw-a2"));

    // 1. Both instances start at once on the empty schema: both run the migrations.
    let t = Instant::now();
    let (settings_a, settings_b) = (with_db(&settings, &url_a), with_db(&settings, &url_b));
    let (mut a, mut b) = tokio::join!(
        env.serve_at(port_a, &settings_a),
        env.serve_at(port_b, &settings_b)
    );
    let both_up = t.elapsed();
    let store = env.store().await;
    let applied = store
        .scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .await;
    let failed = store
        .scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE NOT success")
        .await;
    let migration_files =
        std::fs::read_dir(crate::support::manifest_dir().join("migrations/postgres"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
            })
            .count() as i64;
    assert_eq!(
        (applied, failed),
        (migration_files, 0),
        "two instances migrating at once\n--- A ---\n{}\n--- B ---\n{}",
        a.log(),
        b.log()
    );
    let current_keys = store
        .strings("SELECT alg || ':' || COUNT(*) FROM signing_keys WHERE retire_at_us IS NULL GROUP BY alg ORDER BY alg")
        .await;
    eprintln!(
        "multi_instance: both instances healthy {both_up:.1?} after a simultaneous start; {applied} migrations applied once; current signing keys per alg {current_keys:?}"
    );
    install_audit(&store).await;

    let app_key = create_key(&env, &settings, &["--role", "app"]).await;
    let admin_key = create_key(&env, &settings, &["--role", "admin"]).await;
    // The app records its own sessions (no key may send the gateway's types).
    let load_key = create_key(&env, &settings, &["--role", "app"]).await;
    // Keeps cookies, as a browser does: a SMART launch is bound to it by one.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();

    // 2. Launches that start on one instance and finish on the other.
    smart_launch_across(&browser, &ehr, &public, &a, &b, &app_key).await;
    let first = lti_launch_across(&browser, &lms, &public, &a, &b, &app_key, "mi-first").await;
    eprintln!(
        "multi_instance: SMART launch A -> B -> A and LTI launch A -> B -> A completed ({first})"
    );

    // 4 (set up before the load). Webhook deliveries to a failing receiver, scores to a
    // failing LMS: queued before the kill.
    let r = a
        .client
        .post(a.url("/v1/webhooks/endpoints"))
        .bearer_auth(&app_key)
        .json(&json!({"app": true, "url": hooks.url("/hooks"), "event_types": HOOK_EVENTS}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let lms_recovered = Arc::new(AtomicBool::new(false));
    let faults = tokio::spawn(keep_lms_failing(
        lms.clone(),
        env.store().await,
        lms_recovered.clone(),
    ));
    let mut learners = Vec::new();
    for i in 0..LEARNERS {
        // Alternate the direction: A -> B and B -> A.
        let (x, y) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let id = lti_launch_across(
            &browser,
            &lms,
            &public,
            x,
            y,
            &app_key,
            &format!("mi-learner-{i}"),
        )
        .await;
        learners.push(id);
    }
    let pings: Vec<Value> = (0..THRESHOLDS)
        .map(|i| {
            json!({"specversion": "1.0", "id": format!("ping-{i}"), "source": "/multi-instance",
                        "type": "mi.ping", "partner": LMS_PARTNER})
        })
        .collect();
    let r = reqwest::Client::new()
        .post(format!("{public}/v1/usage/events"))
        .bearer_auth(&admin_key)
        .json(&pings)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let mut score_ids = Vec::new();
    for round in 0..SCORES_EACH {
        for (i, launch) in learners.iter().enumerate() {
            let on = if (i + round) % 2 == 0 { &a } else { &b };
            let r = on
                .client
                .post(on.url(&format!("/v1/launches/{launch}/scores")))
                .bearer_auth(&app_key)
                .json(&json!({"scoreGiven": 5 + round, "scoreMaximum": 10,
                              "activityProgress": "Completed", "gradingProgress": "FullyGraded"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
            score_ids.push(
                r.json::<Value>().await.unwrap()["score_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    // Queued: every message has been tried (and failed) once, and the first score of every
    // learner has been tried (a learner's later score waits for the earlier one).
    let want_messages = (LEARNERS + THRESHOLDS) as i64;
    let t = Instant::now();
    loop {
        let messages = store
            .strings("SELECT message_id FROM webhook_deliveries")
            .await;
        let tried = hooks.ids();
        let scores_tried = store
            .scalar("SELECT COUNT(*) FROM lti_scores WHERE attempts > 0")
            .await;
        if messages.len() as i64 >= want_messages
            && messages.iter().all(|m| tried.contains(m))
            && scores_tried >= LEARNERS as i64
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "deliveries were not tried: {} messages, {} tried by the receiver, {scores_tried} scores tried\n--- A ---\n{}\n--- B ---\n{}",
            messages.len(),
            tried.len(),
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(lms.gradebook(COURSE).is_empty());
    eprintln!(
        "multi_instance: queued {} webhook messages and {} scores, all failing so far",
        want_messages,
        score_ids.len()
    );

    // 3a. Throughput through nginx: one instance upstream, then both, twice over.
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let event_time =
        (Utc::now() - chrono::Duration::minutes(10)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut all_logs: Vec<LoadLog> = Vec::new();
    // (events, seconds) with one instance and with two.
    let mut totals = [(0usize, 0f64); 2];
    for (window, (phase, url)) in [
        ("one", &nginx.one),
        ("two", &nginx.two),
        ("one", &nginx.one),
        ("two", &nginx.two),
    ]
    .into_iter()
    .enumerate()
    {
        let tag = format!("{run_id}-w{window}");
        let load = Load::start(url, &load_key, &tag, &event_time);
        tokio::time::sleep(WARM_UP).await;
        let pids = [("gateway A", a.pid()), ("gateway B", b.pid())];
        let (c0, t0, cpu0) = (
            load.acked.load(Ordering::SeqCst),
            Instant::now(),
            Cpu::take(&pids),
        );
        tokio::time::sleep(MEASURE).await;
        let (c1, t1, cpu1) = (
            load.acked.load(Ordering::SeqCst),
            Instant::now(),
            Cpu::take(&pids),
        );
        let logs = load.stop().await;
        let rate = ((c1 - c0) * BATCH) as f64 / (t1 - t0).as_secs_f64();
        let spread = upstream_share(&logs, &addr_a, &addr_b);
        let failures: usize = logs.iter().map(|l| l.failures.len()).sum();
        eprintln!(
            "multi_instance: {phase} instance(s) through nginx: {rate:.0} events/s ({:.0} requests/s of {BATCH}); served by A/B {spread:?}; {failures} failed requests; CPU {}",
            rate / BATCH as f64,
            cpu1.since(&cpu0)
        );
        assert_eq!(
            failures,
            0,
            "errors with every instance up: {:?}",
            first_failures(&logs)
        );
        let k = usize::from(phase == "two");
        totals[k].0 += (c1 - c0) * BATCH;
        totals[k].1 += (t1 - t0).as_secs_f64();
        all_logs.extend(logs);
    }
    let rates = totals.map(|(n, secs)| n as f64 / secs);

    // 3b + 4. Under load through nginx (both instances), SIGKILL A; restart it on the same
    // port; the receiver and the LMS recover at the kill.
    let load = Load::start(
        &nginx.two,
        &load_key,
        &format!("{run_id}-kill"),
        &event_time,
    );
    tokio::time::sleep(BEFORE_KILL).await;
    // Kill A while it runs a score job and sends a webhook if that happens within a few
    // seconds (a job run lasts milliseconds, a send HOOK_HOLD), else while it does either,
    // so leases of the dead process are taken over.
    let a_jobs = "SELECT COUNT(*) FROM jobs WHERE state = 'running' AND lease_owner IN \
                  (SELECT new_owner FROM mi_audit WHERE tbl = 'jobs' AND app = 'gw-a')";
    let a_sends = "SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'sending' AND lease_owner IN \
                   (SELECT new_owner FROM mi_audit WHERE tbl = 'webhook_deliveries' AND app = 'gw-a')";
    let kill_wait = Instant::now();
    let t = kill_wait;
    while t.elapsed() < Duration::from_secs(6) {
        let (jobs, sends) = (store.scalar(a_jobs).await, store.scalar(a_sends).await);
        if (jobs > 0 && sends > 0) || (t.elapsed() > Duration::from_secs(4) && jobs + sends > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let killed_at = Instant::now();
    a.sigkill().await;
    let kill_us = store
        .scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT")
        .await;
    hooks.healthy.store(true, Ordering::SeqCst);
    lms_recovered.store(true, Ordering::SeqCst);
    let killed_log = a.log();
    let pending_scores = store
        .scalar("SELECT COUNT(*) FROM lti_scores WHERE status = 'pending'")
        .await;
    let (jobs_held, sends_held) = (store.scalar(a_jobs).await, store.scalar(a_sends).await);
    let open_deliveries = store
        .scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE state IN ('pending', 'sending')")
        .await;
    assert_eq!(
        pending_scores,
        score_ids.len() as i64,
        "every score must still be queued at the kill"
    );
    assert_eq!(
        open_deliveries, want_messages,
        "every message must still be queued at the kill"
    );
    tokio::time::sleep(DEAD_FOR).await;
    let restart_at = Instant::now();
    let mut a2 = env.serve_at(port_a, &with_db(&settings, &url_a2)).await;
    let healthy_at = Instant::now();
    tokio::time::sleep(AFTER_RESTART).await;
    let kill_logs = load.stop().await;
    let load_end = Instant::now();

    // Every acknowledged event is stored exactly once.
    all_logs.extend(kill_logs.iter().cloned());
    let unexpected: Vec<&String> = all_logs.iter().flat_map(|l| &l.unexpected).collect();
    assert!(
        unexpected.is_empty(),
        "{unexpected:#?}\n--- A ---\n{killed_log}\n--- B ---\n{}",
        b.log()
    );
    let acked: BTreeSet<String> = all_logs
        .iter()
        .flat_map(|l| &l.batches)
        .flat_map(|b| b.ids.iter().map(|id| format!("{LOAD_SOURCE}\t{id}")))
        .collect();
    let n_batches: usize = all_logs.iter().map(|l| l.batches.len()).sum();
    assert_eq!(
        acked.len(),
        n_batches * BATCH,
        "event ids are unique across batches"
    );
    let dups = store.duplicated_keys().await;
    assert!(dups.is_empty(), "events stored more than once: {dups:?}");
    let stored = store.event_keys(LOAD_PARTNER).await;
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let phantom: Vec<&String> = stored.difference(&acked).collect();
    assert!(
        phantom.is_empty(),
        "stored events no client was acknowledged for: {:?}",
        &phantom[..phantom.len().min(5)]
    );

    // The kill as the clients saw it.
    let failures: Vec<(Instant, String)> =
        kill_logs.iter().flat_map(|l| l.failures.clone()).collect();
    let retried_batches = kill_logs
        .iter()
        .flat_map(|l| &l.batches)
        .filter(|b| b.tries > 1)
        .count();
    let committed_before_error = kill_logs
        .iter()
        .flat_map(|l| &l.batches)
        .filter(|b| b.duplicates_on_ack > 0)
        .count();
    let nginx_retried = kill_logs
        .iter()
        .flat_map(|l| &l.batches)
        .filter(|b| b.upstream.contains(','))
        .count();
    let last_failure = failures.iter().map(|(t, _)| *t).max();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for (_, k) in &failures {
        *kinds.entry(k.clone()).or_default() += 1;
    }
    let back_in_rotation = kill_logs
        .iter()
        .flat_map(|l| &l.batches)
        .filter(|b| b.acked_at > restart_at && b.served_by() == addr_a)
        .map(|b| b.acked_at)
        .min();
    let steady = rate_between(&kill_logs, killed_at - Duration::from_secs(1), killed_at);
    let dead = rate_between(&kill_logs, killed_at, restart_at);
    let after = rate_between(&kill_logs, healthy_at, load_end);
    let first_second = rate_between(&kill_logs, killed_at, killed_at + Duration::from_secs(1));
    let gap = longest_gap(&kill_logs, killed_at - Duration::from_secs(1), load_end);
    eprintln!(
        "multi_instance: kill of A under load: {} failed requests {kinds:?}, {retried_batches} batches retried by clients ({committed_before_error} of them had been committed before the error: answered as duplicates), {nginx_retried} requests moved to the other upstream by nginx",
        failures.len()
    );
    eprintln!(
        "multi_instance: events/s: 1 s before the kill {steady:.0}, first second after {first_second:.0}, while A was dead {dead:.0}, after A's restart {after:.0}; longest time without an acknowledgement {gap:.2?}"
    );
    eprintln!(
        "multi_instance: last client error {:?} after the kill; A restarted in {:.2?} (spawn to /healthz); nginx sent A its first request {:?} after it answered /healthz",
        last_failure.map(|t| t.saturating_duration_since(killed_at)),
        healthy_at - restart_at,
        back_in_rotation.map(|t| t.saturating_duration_since(healthy_at)),
    );
    eprintln!(
        "multi_instance: at the kill {pending_scores} scores pending ({jobs_held} score jobs running on A; waited {:.1?} for A to hold work), {open_deliveries} webhook deliveries open ({sends_held} being sent by A)",
        killed_at - kill_wait
    );

    // 4. Everything queued before the kill is delivered after it.
    let t = Instant::now();
    let (mut scores_done, mut hooks_done) = (false, false);
    while t.elapsed() < Duration::from_secs(40) {
        scores_done = store
            .scalar("SELECT COUNT(*) FROM lti_scores WHERE status <> 'delivered'")
            .await
            == 0;
        let open = store
            .scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE state <> 'delivered'")
            .await;
        hooks_done = scores_done && open == 0;
        if hooks_done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered_after = killed_at.elapsed();
    faults.abort();
    assert!(
        scores_done && hooks_done,
        "not everything was delivered: scores {:?}, deliveries {:?}\n--- B ---\n{}\n--- A restarted ---\n{}",
        store.strings("SELECT id || ' ' || status || ' ' || attempts FROM lti_scores").await,
        store.strings("SELECT message_id || ' ' || state || ' ' || attempts FROM webhook_deliveries WHERE state <> 'delivered'").await,
        b.log(),
        a2.log()
    );

    // Scores: each reached the gradebook (repeats carry the same timestamp; the gateway
    // sends it to the millisecond).
    let book = lms.gradebook(COURSE);
    let stamps: Vec<(String, String)> = store
        .strings(
            "SELECT user_id || '\t' || (timestamp_us / 1000) FROM lti_scores ORDER BY user_id, seq",
        )
        .await
        .into_iter()
        .map(|s| {
            let (u, t) = s.split_once('\t').unwrap();
            (u.to_owned(), t.to_owned())
        })
        .collect();
    let mut per_score: HashMap<(String, String), usize> = HashMap::new();
    for s in &book {
        let at = chrono::DateTime::parse_from_rfc3339(&s.timestamp).unwrap();
        *per_score
            .entry((s.user_id.clone(), at.timestamp_millis().to_string()))
            .or_default() += 1;
    }
    for key in &stamps {
        assert!(
            per_score.contains_key(key),
            "score {key:?} is not in the gradebook: {book:?}"
        );
    }
    assert_eq!(
        per_score.len(),
        stamps.len(),
        "the gradebook has scores nobody sent: {book:?}"
    );
    let score_repeats = book.len() - stamps.len();

    // Webhooks: every message reached the receiver with a 2xx; no message was in flight
    // twice at once.
    let messages: BTreeSet<String> = store
        .strings("SELECT message_id FROM webhook_deliveries")
        .await
        .into_iter()
        .collect();
    let calls = hooks.calls();
    let ok: BTreeSet<String> = calls
        .iter()
        .filter(|c| c.ok)
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(ok, messages, "every message answered 2xx once at least");
    let hook_repeats = calls.iter().filter(|c| c.ok).count() - ok.len();
    let overlaps = hooks.overlaps();
    assert!(
        overlaps.is_empty(),
        "a message was in flight twice at once: {overlaps:#?}"
    );
    let thresholds = store
        .scalar("SELECT COUNT(*) FROM webhook_messages WHERE type = 'usage.threshold.crossed'")
        .await;
    assert_eq!(
        thresholds, THRESHOLDS as i64,
        "each threshold is announced once, by one instance"
    );

    // Jobs and deliveries: no lease was taken from a live holder, so nothing ran twice at
    // once; and who did the work.
    let (job_runs, job_done, job_takeovers) = check_runs(
        "job",
        &audit(&store, "jobs").await,
        "running",
        "succeeded",
        "gw-a",
        kill_us,
    );
    let (sends, sent, send_takeovers) = check_runs(
        "delivery",
        &audit(&store, "webhook_deliveries").await,
        "sending",
        "delivered",
        "gw-a",
        kill_us,
    );
    assert!(
        !job_done.contains_key("gw-a") && !sent.contains_key("gw-a"),
        "nothing succeeded before the kill"
    );
    let dead_jobs = store
        .scalar("SELECT COUNT(*) FROM jobs WHERE state = 'dead'")
        .await;
    assert_eq!(dead_jobs, 0);

    eprintln!(
        "multi_instance: delivered everything {delivered_after:.1?} after the kill: {} scores ({score_repeats} repeated), {} webhook messages in {} requests ({hook_repeats} repeated after a 2xx); no message in flight twice",
        stamps.len(),
        messages.len(),
        calls.len()
    );
    eprintln!(
        "multi_instance: score job runs by process {job_runs:?}, succeeded {job_done:?}, {job_takeovers} taken over from A after the kill; webhook sends {sends:?}, delivered {sent:?}, {send_takeovers} taken over from A after the kill"
    );
    eprintln!(
        "multi_instance: SUMMARY events/s through nginx: one instance {:.0}, two {:.0} (two/one {:.2}); kill: {} client errors, {retried_batches} retried batches, last error {:?} after the kill, A back in rotation {:?} after its restart answered; wall time {:.1?}",
        rates[0],
        rates[1],
        rates[1] / rates[0],
        failures.len(),
        last_failure.map(|t| t.saturating_duration_since(killed_at)),
        back_in_rotation.map(|t| t.saturating_duration_since(healthy_at)),
        started.elapsed()
    );

    a2.sigkill().await;
    b.sigkill().await;
    drop(nginx);
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// nginx

/// The nginx binary; a panic, not a skip, when it is missing (TEST_DATABASE_URL is set).
fn find_nginx() -> PathBuf {
    for candidate in ["nginx", "/usr/sbin/nginx"] {
        if std::process::Command::new(candidate)
            .arg("-v")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "TEST_DATABASE_URL is set but nginx is not installed: the multi-instance test needs it \
         (Debian: apt-get install nginx; .ci/run installs it)"
    );
}

/// nginx as a child process (not the system service): `one` proxies to A alone, `two`
/// round-robins A and B (no stickiness), retrying a request on the other one when the
/// connection fails or times out. Stopped (SIGTERM, then SIGKILL) when dropped.
struct Nginx {
    child: std::process::Child,
    dir: tempfile::TempDir,
    one: String,
    two: String,
}

impl Nginx {
    fn start(bin: &Path, port_one: u16, port_two: u16, a: &str, b: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        // Workers run as `nobody` when the master is root: they must reach the prefix.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = dir.path().display();
        let proxy = "proxy_http_version 1.1;\n\
                     proxy_set_header Connection \"\";\n\
                     proxy_set_header Host $http_host;\n\
                     proxy_next_upstream error timeout;\n\
                     proxy_connect_timeout 2s;\n\
                     proxy_read_timeout 30s;\n\
                     add_header X-Upstream $upstream_addr always;";
        let conf = format!(
            "worker_processes 2;\n\
             pid {p}/nginx.pid;\n\
             error_log {p}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {p}/client_body;\n\
               client_body_buffer_size 1m;\n\
               client_max_body_size 8m;\n\
               proxy_temp_path {p}/proxy;\n\
               fastcgi_temp_path {p}/fastcgi;\n\
               uwsgi_temp_path {p}/uwsgi;\n\
               scgi_temp_path {p}/scgi;\n\
               upstream one {{ server {a} max_fails=1 fail_timeout=1s; keepalive 32; }}\n\
               upstream two {{ server {a} max_fails=1 fail_timeout=1s; server {b} max_fails=1 fail_timeout=1s; keepalive 32; }}\n\
               server {{ listen 127.0.0.1:{port_one}; location / {{ proxy_pass http://one; {proxy} }} }}\n\
               server {{ listen 127.0.0.1:{port_two}; location / {{ proxy_pass http://two; {proxy} }} }}\n\
             }}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = std::process::Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut nginx = Nginx {
            child,
            dir,
            one: format!("http://127.0.0.1:{port_one}"),
            two: format!("http://127.0.0.1:{port_two}"),
        };
        let t = Instant::now();
        loop {
            if let Some(status) = nginx.child.try_wait().unwrap() {
                panic!("nginx exited: {status}\n{}", nginx.error_log());
            }
            let up = |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if up(port_one) && up(port_two) {
                return nginx;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "nginx is not listening\n{}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (SIGKILL would leave them behind).
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Config and launches

/// Free loopback ports, all different (held together while they are picked).
fn distinct_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

fn write_config(dir: &Path, ehr: &MockEhr, lms: &MockLms) {
    let schedule = vec!["1"; 60].join(", ");
    let thresholds: Vec<String> = (1..=THRESHOLDS).map(|i| i.to_string()).collect();
    std::fs::write(
        dir.join("multi-instance.toml"),
        format!(
            r#"[webhooks]
poll_interval_ms = 50
thresholds_interval_secs = 1
timeout_secs = 2
retry_schedule_secs = [{schedule}]
retry_jitter_percent = 0

[[meters]]
name = "mi_pings"
event_types = ["mi.ping"]
aggregation = "COUNT"
thresholds = [{thresholds}]

[[partners]]
id = "{EHR_PARTNER}"
name = "Multi-instance EHR"
kind = "ehr"
[partners.smart]
vendor = "epic"
issuers = ["{iss}"]
client_id = "{EHR_CLIENT}"
client_type = "confidential-asymmetric"
scopes = ["openid", "fhirUser", "offline_access", "patient/Patient.rs"]
app_url = "{APP_URL}"

[[partners]]
id = "{LMS_PARTNER}"
name = "Multi-instance LMS"
kind = "lms"
[partners.lti]
app_url = "{APP_URL}"
[[partners.lti.platforms]]
vendor = "generic"
issuer = "{issuer}"
client_id = "{LMS_CLIENT}"
deployment_ids = ["{DEPLOYMENT}"]
auth_url = "{auth}"
token_url = "{token}"
jwks_url = "{jwks}"
"#,
            thresholds = thresholds.join(", "),
            iss = ehr.iss(),
            issuer = lms.issuer(),
            auth = lms.auth_url(),
            token = lms.token_url(),
            jwks = lms.jwks_url(),
        ),
    )
    .unwrap();
}

/// `settings` and the database URL.
fn with_db<'a>(settings: &[(&'a str, &'a str)], url: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut all = settings.to_vec();
    all.push(("GATEWAY__DATABASE__URL", url));
    all
}

/// `api-keys create` with the instances' settings (the CLI needs the shared master key too).
async fn create_key(env: &TestEnv, settings: &[(&str, &str)], args: &[&str]) -> String {
    let mut all = vec!["api-keys", "create"];
    all.extend(args);
    let out = env.run_with_env(&all, settings).await;
    assert!(out.status.success(), "{out}");
    out.stdout.trim().to_owned()
}

/// `url` (on the public address) moved to `server`.
fn on(server: &Server, public: &str, url: &str) -> String {
    assert!(url.starts_with(public), "{url} is not under {public}");
    url.replacen(public, &server.base, 1)
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

fn code_of(app_redirect: &str) -> String {
    assert!(app_redirect.starts_with(APP_URL), "{app_redirect}");
    url::Url::parse(app_redirect)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned()
}

async fn exchange(on: &Server, app_key: &str, code: &str) -> String {
    let r = on
        .client
        .post(on.url("/v1/launches/exchange"))
        .bearer_auth(app_key)
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["launch_id"].as_str().unwrap().to_owned()
}

/// The EHR opens the app on A, the EHR's redirect back lands on B, the app exchanges its
/// code on A and reads FHIR through B.
async fn smart_launch_across(
    browser: &reqwest::Client,
    ehr: &MockEhr,
    public: &str,
    a: &Server,
    b: &Server,
    app_key: &str,
) {
    let patient = ehr.default_patient();
    let launch = ehr.launch(LaunchContext {
        patient: Some(patient.clone()),
        user: ehr.default_practitioner(),
        ..LaunchContext::default()
    });
    let r = browser
        .get(a.url(&format!(
            "/smart/launch?iss={}&launch={}",
            encode(&ehr.iss()),
            encode(&launch)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    let r = browser.get(location(&r)).send().await.unwrap();
    assert_eq!(
        r.status(),
        302,
        "the EHR's authorize: {}",
        r.text().await.unwrap()
    );
    let callback = location(&r);
    let r = browser.get(on(b, public, &callback)).send().await.unwrap();
    assert_eq!(
        r.status(),
        302,
        "callback on B: {}\n{}",
        r.text().await.unwrap(),
        b.log()
    );
    let id = exchange(a, app_key, &code_of(&location(&r))).await;
    let r = b
        .client
        .get(b.url(&format!("/v1/launches/{id}/fhir/Patient/{patient}")))
        .bearer_auth(app_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "FHIR through B: {}",
        r.text().await.unwrap()
    );
}

/// OIDC login initiation on `x`, the platform's id_token post on `y`, the code exchange on
/// `x`. Returns the launch id.
async fn lti_launch_across(
    browser: &reqwest::Client,
    lms: &MockLms,
    public: &str,
    x: &Server,
    y: &Server,
    app_key: &str,
    learner: &str,
) -> String {
    let init = lms.login_initiation(LaunchSpec::resource_link(
        LMS_CLIENT,
        DEPLOYMENT,
        MockUser::learner(learner),
        COURSE,
        "mi-link",
    ));
    let r = if init.post {
        browser
            .post(on(x, public, &init.url))
            .form(&init.params)
            .send()
            .await
            .unwrap()
    } else {
        browser
            .get(on(x, public, &init.get_url()))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(r.status(), 302, "login initiation: {}", x.log());
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with("pgw_lti_"))
        .expect("the login initiation binds the state to the browser");
    let page = browser
        .get(location(&r))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = parse_auto_post_form(&page).unwrap();
    let r = browser
        .post(on(y, public, &form.action))
        .header("cookie", cookie)
        .form(&form.fields)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        302,
        "id_token post: {}",
        r.text().await.unwrap()
    );
    exchange(x, app_key, &code_of(&location(&r))).await
}

// ---------------------------------------------------------------------------------------
// The ingest load

/// One batch, acknowledged (202).
#[derive(Clone)]
struct Batch {
    ids: Vec<String>,
    acked_at: Instant,
    /// nginx's `$upstream_addr`: the instances tried, comma-separated.
    upstream: String,
    /// Requests it took (1 unless an error came first).
    tries: u32,
    /// Duplicates in the acknowledgement: a retry of a batch committed before the error.
    duplicates_on_ack: u64,
}

impl Batch {
    fn served_by(&self) -> &str {
        self.upstream.rsplit(", ").next().unwrap_or("").trim()
    }
}

#[derive(Clone, Default)]
struct LoadLog {
    batches: Vec<Batch>,
    /// Requests that failed (connection errors, 502/503/504), retried.
    failures: Vec<(Instant, String)>,
    unexpected: Vec<String>,
}

struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    tasks: JoinSet<LoadLog>,
}

impl Load {
    fn start(url: &str, key: &str, tag: &str, time: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        for c in 0..CLIENTS {
            tasks.spawn(load_client(
                format!("{url}/v1/usage/events"),
                key.to_owned(),
                format!("{tag}-c{c}"),
                time.to_owned(),
                stop.clone(),
                acked.clone(),
            ));
        }
        Load { stop, acked, tasks }
    }

    /// Stop sending new batches; every batch started is retried until acknowledged.
    async fn stop(mut self) -> Vec<LoadLog> {
        self.stop.store(true, Ordering::SeqCst);
        let mut logs = Vec::new();
        let joined = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(r) = self.tasks.join_next().await {
                logs.push(r.unwrap());
            }
        })
        .await;
        assert!(joined.is_ok(), "load clients did not finish");
        logs
    }
}

async fn load_client(
    url: String,
    key: String,
    tag: String,
    time: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> LoadLog {
    let client = reqwest::Client::new();
    let mut log = LoadLog::default();
    let mut batch_no = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let ids: Vec<String> = (0..BATCH)
            .map(|i| format!("{tag}-b{batch_no:05}-e{i:02}"))
            .collect();
        let body = Value::Array(
            ids.iter()
                .map(|id| {
                    json!({"specversion": "1.0", "id": id, "source": LOAD_SOURCE, "type": "app.session",
                           "partner": LOAD_PARTNER, "subject": format!("user-{}", batch_no % 97), "time": time})
                })
                .collect(),
        )
        .to_string();
        batch_no += 1;
        let mut tries = 0u32;
        // The same ids until acknowledged: ingest is idempotent on (partner, source, id).
        loop {
            tries += 1;
            let sent = client
                .post(&url)
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body(body.clone())
                .timeout(Duration::from_secs(20))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().as_u16() == 202 => {
                    let upstream = r
                        .headers()
                        .get("x-upstream")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    let (accepted, duplicates) = (
                        v["accepted"].as_u64().unwrap_or(0),
                        v["duplicates"].as_u64().unwrap_or(0),
                    );
                    if accepted + duplicates != BATCH as u64
                        || (tries == 1 && duplicates != 0)
                        || (duplicates != 0 && duplicates != BATCH as u64)
                    {
                        log.unexpected
                            .push(format!("{tag} batch {batch_no} (try {tries}): {v}"));
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                    log.batches.push(Batch {
                        ids,
                        acked_at: Instant::now(),
                        upstream,
                        tries,
                        duplicates_on_ack: duplicates,
                    });
                    break;
                }
                Ok(r) if matches!(r.status().as_u16(), 502..=504) => {
                    log.failures
                        .push((Instant::now(), r.status().as_u16().to_string()));
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    log.unexpected
                        .push(format!("{tag} batch {batch_no}: {status} {text}"));
                    break;
                }
                Err(e) => {
                    let kind = if e.is_connect() {
                        "connect"
                    } else if e.is_timeout() {
                        "timeout"
                    } else {
                        "cut off"
                    };
                    log.failures.push((Instant::now(), kind.to_owned()));
                }
            }
            if tries >= 200 {
                log.unexpected.push(format!(
                    "{tag} batch {batch_no}: gave up after {tries} tries"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    log
}

/// Requests served by (A, B), from nginx's `X-Upstream`.
fn upstream_share(logs: &[LoadLog], a: &str, b: &str) -> (usize, usize) {
    let all = logs.iter().flat_map(|l| &l.batches);
    let (mut na, mut nb) = (0, 0);
    for batch in all {
        let s = batch.served_by();
        if s == a {
            na += 1;
        } else if s == b {
            nb += 1;
        }
    }
    (na, nb)
}

fn first_failures(logs: &[LoadLog]) -> Vec<String> {
    logs.iter()
        .flat_map(|l| l.failures.iter().map(|(_, k)| k.clone()))
        .take(5)
        .collect()
}

/// Events/s acknowledged between `from` and `to`.
fn rate_between(logs: &[LoadLog], from: Instant, to: Instant) -> f64 {
    let n = logs
        .iter()
        .flat_map(|l| &l.batches)
        .filter(|b| b.acked_at >= from && b.acked_at < to)
        .count();
    (n * BATCH) as f64 / (to - from).as_secs_f64().max(1e-3)
}

/// The longest time between two acknowledgements (any client) between `from` and `to`.
fn longest_gap(logs: &[LoadLog], from: Instant, to: Instant) -> Duration {
    let mut at: Vec<Instant> = logs
        .iter()
        .flat_map(|l| &l.batches)
        .map(|b| b.acked_at)
        .filter(|t| *t >= from && *t <= to)
        .collect();
    at.push(from);
    at.push(to);
    at.sort();
    at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Where the two cores went during a window, from /proc (clock ticks).

struct Cpu {
    /// (busy, total) of the machine.
    machine: (u64, u64),
    by: BTreeMap<String, u64>,
}

impl Cpu {
    fn take(pids: &[(&str, u32)]) -> Cpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = f.iter().take(8).sum();
        let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
        let mut by = BTreeMap::new();
        let ticks = |pid: u32| -> Option<(String, u64)> {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let comm = s[s.find('(')? + 1..s.rfind(')')?].to_owned();
            let rest: Vec<&str> = s[s.rfind(')')? + 2..].split(' ').collect();
            // utime and stime are fields 14 and 15; `rest` starts at field 3.
            Some((
                comm,
                rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?,
            ))
        };
        for (label, pid) in pids {
            if let Some((_, t)) = ticks(*pid) {
                by.insert((*label).to_owned(), t);
            }
        }
        if let Some((_, t)) = ticks(std::process::id()) {
            by.insert("test process".to_owned(), t);
        }
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((comm, t)) = ticks(pid)
                && (comm == "postgres" || comm == "nginx")
            {
                *by.entry(comm).or_default() += t;
            }
        }
        Cpu {
            machine: (total - idle, total),
            by,
        }
    }

    /// "busy N% of 2 cores; label X cores, ..."
    fn since(&self, before: &Cpu) -> String {
        let total = self.machine.1.saturating_sub(before.machine.1).max(1) as f64;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let busy = self.machine.0.saturating_sub(before.machine.0) as f64 / total;
        let parts: Vec<String> = self
            .by
            .iter()
            .map(|(k, v)| {
                let d = v.saturating_sub(before.by.get(k).copied().unwrap_or(0)) as f64;
                format!("{k} {:.2}", d / total * cores)
            })
            .collect();
        format!(
            "busy {:.0}% of {cores} cores; cores used: {}",
            busy * 100.0,
            parts.join(", ")
        )
    }
}

// ---------------------------------------------------------------------------------------
// The failing LMS

/// Keep enough 500s queued at the mock LMS's score endpoint that every score post fails,
/// until `recovered`; then at most a few are left, and the posts after them succeed.
async fn keep_lms_failing(lms: Arc<MockLms>, store: Store, recovered: Arc<AtomicBool>) {
    const AHEAD: i64 = 10;
    let injected = AtomicI64::new(0);
    while !recovered.load(Ordering::SeqCst) {
        // Each run bumps `attempts` before it posts: posts made <= this sum.
        let posts = store
            .scalar("SELECT COALESCE(SUM(attempts), 0)::BIGINT FROM lti_scores")
            .await;
        let have = injected.load(Ordering::SeqCst);
        if have < posts + AHEAD {
            lms.inject_ags(AgsFault::Status {
                status: 500,
                retry_after: None,
                count: usize::try_from(posts + AHEAD - have).unwrap(),
            });
            injected.store(posts + AHEAD, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// The webhook receiver: fails (500) until `healthy`, holds every request `HOOK_HOLD`, and
// logs when each request began and ended (ended includes the sender hanging up).

struct HookCall {
    id: String,
    start: Instant,
    end: Option<Instant>,
    ok: bool,
}

#[derive(Clone)]
struct Hooks {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<HookCall>>>,
}

/// Marks the end of a call when the handler finishes or is dropped.
struct CallEnd {
    hooks: Hooks,
    index: usize,
    ok: bool,
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        let mut calls = self.hooks.calls.lock().unwrap();
        calls[self.index].end = Some(Instant::now());
        calls[self.index].ok = self.ok;
    }
}

impl Hooks {
    async fn start() -> Hooks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hooks = Hooks {
            addr: listener.local_addr().unwrap(),
            healthy: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(Mutex::new(Vec::new())),
        };
        let app = axum::Router::new().fallback(hook).with_state(hooks.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        hooks
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn calls(&self) -> Vec<HookCall> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| HookCall {
                id: c.id.clone(),
                start: c.start,
                end: c.end,
                ok: c.ok,
            })
            .collect()
    }

    /// Message ids the receiver has seen.
    fn ids(&self) -> BTreeSet<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.id.clone())
            .collect()
    }

    /// Pairs of requests for one message that were in flight at the same time.
    fn overlaps(&self) -> Vec<String> {
        let mut by_id: BTreeMap<String, Vec<(Instant, Instant)>> = BTreeMap::new();
        for c in self.calls() {
            let end = c.end.unwrap_or_else(Instant::now);
            by_id.entry(c.id).or_default().push((c.start, end));
        }
        let mut out = Vec::new();
        for (id, mut spans) in by_id {
            spans.sort();
            for w in spans.windows(2) {
                if w[1].0 < w[0].1 {
                    out.push(format!(
                        "{id}: {:?} overlaps the previous request by {:?}",
                        w[1].0,
                        w[0].1 - w[1].0
                    ));
                }
            }
        }
        out
    }
}

async fn hook(State(hooks): State<Hooks>, headers: HeaderMap) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let index = {
        let mut calls = hooks.calls.lock().unwrap();
        calls.push(HookCall {
            id,
            start: Instant::now(),
            end: None,
            ok: false,
        });
        calls.len() - 1
    };
    let mut end = CallEnd {
        hooks: hooks.clone(),
        index,
        ok: false,
    };
    // Whether to succeed is decided when the request comes: a request in flight at the kill
    // fails (and its sender is gone anyway).
    let healthy = hooks.healthy.load(Ordering::SeqCst);
    tokio::time::sleep(HOOK_HOLD).await;
    if healthy {
        end.ok = true;
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

// ---------------------------------------------------------------------------------------
// Job runs, from a trigger on `jobs`

async fn install_audit(store: &Store) {
    let Store::Postgres(pool) = store else {
        unreachable!("PostgreSQL only")
    };
    // Every change of state or lease holder of a job or a webhook delivery, with the
    // session's application_name (which process) and the time.
    sqlx::raw_sql(
        "CREATE TABLE mi_audit (seq BIGSERIAL PRIMARY KEY, tbl TEXT NOT NULL, row_id TEXT NOT NULL, \
           old_state TEXT, new_state TEXT, old_owner TEXT, new_owner TEXT, app TEXT NOT NULL, \
           at_us BIGINT NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT);
         CREATE FUNCTION mi_audit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.state IS DISTINCT FROM OLD.state OR NEW.lease_owner IS DISTINCT FROM OLD.lease_owner THEN
             INSERT INTO mi_audit (tbl, row_id, old_state, new_state, old_owner, new_owner, app)
               VALUES (TG_TABLE_NAME, NEW.id::TEXT, OLD.state, NEW.state, OLD.lease_owner, NEW.lease_owner,
                       current_setting('application_name'));
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER mi_audit AFTER UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION mi_audit();
         CREATE TRIGGER mi_audit AFTER UPDATE ON webhook_deliveries FOR EACH ROW EXECUTE FUNCTION mi_audit();",
    )
    .execute(pool)
    .await
    .unwrap();
}

struct AuditRow {
    row_id: String,
    old_state: Option<String>,
    new_state: Option<String>,
    old_owner: Option<String>,
    new_owner: Option<String>,
    app: String,
    at_us: i64,
}

type AuditTuple = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    i64,
);

async fn audit(store: &Store, table: &str) -> Vec<AuditRow> {
    let Store::Postgres(pool) = store else {
        unreachable!("PostgreSQL only")
    };
    let rows: Vec<AuditTuple> = sqlx::query_as(
        "SELECT row_id, old_state, new_state, old_owner, new_owner, app, at_us FROM mi_audit \
         WHERE tbl = $1 ORDER BY seq",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(
            |(row_id, old_state, new_state, old_owner, new_owner, app, at_us)| AuditRow {
                row_id,
                old_state,
                new_state,
                old_owner,
                new_owner,
                app,
                at_us,
            },
        )
        .collect()
}

/// Runs of jobs (`running`) or sends of deliveries (`sending`) from the audit: a run begins
/// when a process takes the lease and ends when the holder gives it up (done, failed,
/// rescheduled) or, for the killed process, at the kill. Two runs of one row must not
/// overlap: a lease may only be taken over from the killed process, after the kill.
/// Returns (runs by process, successes by process, takeovers).
fn check_runs(
    what: &str,
    rows: &[AuditRow],
    leased: &str,
    success: &str,
    killed: &str,
    kill_us: i64,
) -> (BTreeMap<String, usize>, BTreeMap<String, usize>, usize) {
    // Which process holds each owner string (the one whose session took the lease).
    let mut holder: HashMap<&str, &str> = HashMap::new();
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    let mut successes: BTreeMap<String, usize> = BTreeMap::new();
    let mut takeovers = 0;
    // Open runs per row: (owner, process, start).
    let mut open: HashMap<&str, (&str, &str, i64)> = HashMap::new();
    for r in rows {
        let took = r.new_state.as_deref() == Some(leased)
            && r.new_owner.is_some()
            && r.new_owner != r.old_owner;
        if let Some(old) = r.old_owner.as_deref()
            && r.old_owner != r.new_owner
        {
            let old_holder = holder.get(old).copied().unwrap_or("?");
            if let Some((owner, process, _)) = open.remove(r.row_id.as_str()) {
                assert_eq!(owner, old, "{what} {}: audit out of order", r.row_id);
                if r.app != process {
                    // Someone else moved the lease: only a takeover of the killed process's.
                    assert!(
                        took && r.old_state.as_deref() == Some(leased)
                            && process == killed
                            && r.at_us >= kill_us,
                        "{what} {} was taken from {old} ({process}, alive) by {} ({}): two runs at once",
                        r.row_id,
                        r.new_owner.as_deref().unwrap_or("-"),
                        r.app
                    );
                    takeovers += 1;
                }
            }
            if r.new_state.as_deref() == Some(success) {
                *successes.entry(old_holder.to_owned()).or_default() += 1;
            }
        }
        if took {
            let owner = r.new_owner.as_deref().unwrap_or("");
            assert!(
                !open.contains_key(r.row_id.as_str()),
                "{what} {} taken while another run is open",
                r.row_id
            );
            holder.insert(owner, r.app.as_str());
            open.insert(r.row_id.as_str(), (owner, r.app.as_str(), r.at_us));
            *runs.entry(r.app.clone()).or_default() += 1;
        }
    }
    // What is still open at the end was the killed process's (and never taken over: the
    // row finished by other means would have closed it).
    for (row, (_, process, start)) in &open {
        assert!(
            *process == killed && *start < kill_us,
            "{what} {row}: a run by {process} never ended"
        );
    }
    (runs, successes, takeovers)
}
