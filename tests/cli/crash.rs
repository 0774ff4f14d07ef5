//! Crash durability: a 202 means the batch is committed. Kill `serve` with SIGKILL while
//! clients are posting, restart it on the same database, and every acknowledged event is
//! there exactly once; a client that retries everything (acknowledged or not) ends with each
//! event stored once.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::support::{Backend, Server, TestEnv, bucket_values, on_both_backends};

on_both_backends!(acknowledged_events_survive_a_crash
    => acknowledged_events_survive_a_crash_on_sqlite,
       acknowledged_events_survive_a_crash_on_postgres);

const CLIENTS: usize = 4;
const BATCH: usize = 50;
const SOURCE: &str = "https://gateway.example.com/crash-test";
/// Kill once both hold: this long since the clients started, and this many batches acked.
const RUN_AT_LEAST: Duration = Duration::from_millis(1500);
const ACKED_AT_LEAST: usize = 10;

/// One batch a client sent, and whether the server acknowledged it (202).
struct Sent {
    ids: Vec<String>,
    body: String,
    acked: bool,
}

/// What one client saw: its batches, and anything that should not have happened.
#[derive(Default)]
struct ClientLog {
    sent: Vec<Sent>,
    unexpected: Vec<String>,
    /// Requests that failed after the connection was made (in flight at the kill).
    cut_off: usize,
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .timeout(Duration::from_secs(20))
        .send()
        .await
}

/// Post unique batches until a request fails (the server is gone).
async fn client_loop(
    client_no: usize,
    server_url: String,
    key: String,
    time: String,
    killing: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> ClientLog {
    let client = reqwest::Client::new();
    let mut log = ClientLog::default();
    for batch_no in 0..100_000 {
        let ids: Vec<String> = (0..BATCH)
            .map(|i| format!("c{client_no}-b{batch_no:05}-e{i:02}"))
            .collect();
        let events: Vec<Value> = ids
            .iter()
            .map(|id| {
                json!({
                    "specversion": "1.0",
                    "id": id,
                    "source": SOURCE,
                    "type": "app.session",
                    "partner": "epic-sandbox",
                    "subject": format!("user-{client_no}"),
                    "time": time,
                    "data": {"batch": batch_no},
                })
            })
            .collect();
        let body = Value::Array(events).to_string();
        let result = post(&client, &server_url, &key, &body).await;
        let mut sent = Sent {
            ids,
            body,
            acked: false,
        };
        match result {
            Ok(resp) if resp.status().as_u16() == 202 => {
                // The server answers 202 only after the commit, so the status alone is the ack.
                sent.acked = true;
                acked.fetch_add(1, Ordering::SeqCst);
                if let Ok(v) = resp.json::<Value>().await
                    && (v["accepted"] != json!(BATCH) || v["duplicates"] != json!(0))
                {
                    log.unexpected.push(format!("a new batch was answered {v}"));
                }
                log.sent.push(sent);
            }
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                log.unexpected
                    .push(format!("batch {batch_no}: {status} {text}"));
                log.sent.push(sent);
            }
            Err(e) => {
                if !killing.load(Ordering::SeqCst) {
                    log.unexpected
                        .push(format!("batch {batch_no} failed before the kill: {e}"));
                }
                if !e.is_connect() {
                    log.cut_off += 1;
                }
                log.sent.push(sent);
                break;
            }
        }
    }
    log
}

async fn count_meter(server: &Server, admin: &str, from: &str, to: &str) -> i64 {
    let body = server
        .query(
            admin,
            &[
                ("meter", "app_sessions"),
                ("partner", "epic-sandbox"),
                ("from", from),
                ("to", to),
            ],
        )
        .await;
    let values = bucket_values(&body);
    assert_eq!(values.len(), 1, "{body}");
    values[0]
}

async fn acknowledged_events_survive_a_crash(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    // The app's key: it records its own sessions (no key may send the gateway's types).
    let partner = env.create_key("app", None).await;
    let admin = env.create_key("admin", None).await;

    let now = Utc::now();
    let time = (now - chrono::Duration::minutes(10)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let from = (now - chrono::Duration::days(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let to = (now + chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);

    let mut server = env.serve().await;
    let killing = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let mut clients = JoinSet::new();
    for c in 0..CLIENTS {
        clients.spawn(client_loop(
            c,
            server.url("/v1/usage/events"),
            partner.clone(),
            time.clone(),
            killing.clone(),
            acked.clone(),
        ));
    }

    let started = Instant::now();
    while started.elapsed() < RUN_AT_LEAST || acked.load(Ordering::SeqCst) < ACKED_AT_LEAST {
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        acked.load(Ordering::SeqCst) >= 1,
        "no batch was acknowledged before the kill\n--- serve log ---\n{}",
        server.log()
    );
    killing.store(true, Ordering::SeqCst);
    let status = server.sigkill().await;
    assert_eq!(
        status.signal(),
        Some(9),
        "serve was not killed but exited: {status}"
    );
    let first_log = server.log();
    drop(server);

    let mut logs = Vec::new();
    let joined = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(r) = clients.join_next().await {
            logs.push(r.unwrap());
        }
    })
    .await;
    assert!(joined.is_ok(), "clients did not stop after the kill");
    let unexpected: Vec<&String> = logs.iter().flat_map(|l| &l.unexpected).collect();
    assert!(
        unexpected.is_empty(),
        "{unexpected:#?}\n--- serve log ---\n{first_log}"
    );

    let batches: Vec<&Sent> = logs.iter().flat_map(|l| &l.sent).collect();
    let acked_ids: BTreeSet<String> = batches
        .iter()
        .filter(|b| b.acked)
        .flat_map(|b| b.ids.iter().map(|id| format!("{SOURCE}\t{id}")))
        .collect();
    let sent_ids: BTreeSet<String> = batches
        .iter()
        .flat_map(|b| b.ids.iter().map(|id| format!("{SOURCE}\t{id}")))
        .collect();
    let n_acked = batches.iter().filter(|b| b.acked).count();
    let cut_off: usize = logs.iter().map(|l| l.cut_off).sum();
    eprintln!(
        "{backend:?}: {} batches sent, {n_acked} acknowledged, {cut_off} cut off in flight by the kill",
        batches.len()
    );
    assert_eq!(
        sent_ids.len(),
        batches.len() * BATCH,
        "ids must be unique across batches"
    );
    assert_eq!(acked_ids.len(), n_acked * BATCH);

    // Restart on the same database: every acknowledged event is there, exactly once.
    let server = env.serve().await;
    let store = env.store().await;
    let dups = store.duplicated_keys().await;
    assert!(dups.is_empty(), "events stored more than once: {dups:?}");
    let stored = store.event_keys("epic-sandbox").await;
    let lost: Vec<&String> = acked_ids.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events were lost, e.g. {:?}\n--- serve log ---\n{first_log}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let phantom: Vec<&String> = stored.difference(&sent_ids).collect();
    assert!(phantom.is_empty(), "stored events nobody sent: {phantom:?}");
    let stored_before = stored.len();
    assert_eq!(
        store.count_events("epic-sandbox").await,
        stored_before as i64
    );
    // A batch is written whole or not at all, even when the process dies mid-request.
    for b in batches.iter().filter(|b| !b.acked) {
        let present = b
            .ids
            .iter()
            .filter(|id| stored.contains(&format!("{SOURCE}\t{id}")))
            .count();
        assert!(
            present == 0 || present == BATCH,
            "a batch was half written: {present} of {BATCH}"
        );
    }
    assert_eq!(
        count_meter(&server, &partner, &from, &to).await,
        stored_before as i64
    );
    assert_eq!(
        count_meter(&server, &admin, &from, &to).await,
        stored_before as i64
    );

    // A client retries everything it sent, acknowledged or not.
    let mut retries = JoinSet::new();
    let bodies: Vec<(String, bool)> = batches.iter().map(|b| (b.body.clone(), b.acked)).collect();
    let per_task = bodies.len().div_ceil(CLIENTS);
    for chunk in bodies.chunks(per_task.max(1)) {
        let chunk = chunk.to_vec();
        let url = server.url("/v1/usage/events");
        let key = partner.clone();
        retries.spawn(async move {
            let client = reqwest::Client::new();
            let mut totals = (0u64, 0u64);
            for (body, was_acked) in chunk {
                let resp = post(&client, &url, &key, &body).await.unwrap();
                let status = resp.status().as_u16();
                let v: Value = resp.json().await.unwrap();
                assert_eq!(status, 202, "{v}");
                let accepted = v["accepted"].as_u64().unwrap();
                let duplicates = v["duplicates"].as_u64().unwrap();
                assert_eq!(accepted + duplicates, BATCH as u64, "{v}");
                if was_acked {
                    assert_eq!(
                        duplicates, BATCH as u64,
                        "an acknowledged batch was not all there: {v}"
                    );
                }
                totals.0 += accepted;
                totals.1 += duplicates;
            }
            totals
        });
    }
    let (mut accepted, mut duplicates) = (0u64, 0u64);
    while let Some(r) = retries.join_next().await {
        let (a, d) = r.unwrap();
        accepted += a;
        duplicates += d;
    }
    assert_eq!(accepted + duplicates, sent_ids.len() as u64);
    assert_eq!(
        duplicates, stored_before as u64,
        "the retry's duplicates are what survived the crash"
    );
    assert_eq!(accepted, (sent_ids.len() - stored_before) as u64);

    assert!(store.duplicated_keys().await.is_empty());
    assert_eq!(store.event_keys("epic-sandbox").await, sent_ids);
    assert_eq!(
        store.scalar("SELECT COUNT(*) FROM usage_events").await,
        sent_ids.len() as i64
    );
    assert_eq!(
        count_meter(&server, &admin, &from, &to).await,
        sent_ids.len() as i64
    );
    store.close().await;
}
