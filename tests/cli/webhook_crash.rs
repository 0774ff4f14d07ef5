//! Webhook delivery survives a crash: a gateway SIGKILLed with deliveries in flight (the
//! receiver holding the requests open) sends every message at least once after a restart,
//! an ordered endpoint still in creation order, and the attempt log tells what happened.

use std::time::Duration;

use partner_sim::receiver::{Receiver, Reply};
use serde_json::{Value, json};

use crate::support::{Backend, TestEnv, free_port, on_both_backends};

on_both_backends!(webhooks_in_flight_at_a_crash_are_delivered_after_the_restart
    => webhooks_in_flight_at_a_crash_are_delivered_after_the_restart_on_sqlite,
       webhooks_in_flight_at_a_crash_are_delivered_after_the_restart_on_postgres);

const MESSAGES: usize = 6;

async fn webhooks_in_flight_at_a_crash_are_delivered_after_the_restart(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    // A meter whose six thresholds make the gateway emit six messages, in order, from one
    // ingested batch (the real emission path of the binary).
    let thresholds: Vec<String> = (1..=MESSAGES).map(|i| i.to_string()).collect();
    std::fs::write(
        env.config_dir.join("webhook-crash.toml"),
        format!(
            "[webhooks]\npoll_interval_ms = 20\nthresholds_interval_secs = 1\ntimeout_secs = 2\n\
             retry_schedule_secs = [1, 1, 1, 1, 1]\nretry_jitter_percent = 0\n\n\
             [[meters]]\nname = \"crash_pings\"\nevent_types = [\"crash.ping\"]\naggregation = \"COUNT\"\n\
             thresholds = [{}]\n",
            thresholds.join(", ")
        ),
    )
    .unwrap();
    let settings = [
        ("GATEWAY__OUTBOUND__ALLOW_HTTP", "true"),
        ("GATEWAY__OUTBOUND__PRIVATE_NETWORKS", "127.0.0.1"),
    ];
    let port = free_port();
    let mut server = env.serve_at(port, &settings).await;
    let admin = env.create_key("admin", None).await;
    let rx = Receiver::start().await.unwrap();
    // Every request hangs until the kill: deliveries are in flight when it comes.
    rx.set_default(Some(Reply::Delay(Duration::from_secs(30))));
    let mut endpoints = Vec::new();
    for (path, ordered) in [("/plain", false), ("/ordered", true)] {
        let r = server
            .client
            .post(server.url("/v1/webhooks/endpoints"))
            .bearer_auth(&admin)
            .json(
                &json!({"partner": "canvas-sandbox", "url": rx.url(path), "ordered": ordered,
                          "event_types": ["usage.threshold.crossed"]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        endpoints.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let events: Vec<Value> = (0..MESSAGES)
        .map(|i| {
            json!({"specversion": "1.0", "id": format!("p{i}"), "source": "/crash",
                        "type": "crash.ping", "partner": "canvas-sandbox"})
        })
        .collect();
    let r = server
        .client
        .post(server.url("/v1/usage/events"))
        .bearer_auth(&admin)
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Requests to both endpoints are hanging: kill the gateway with them in flight.
    let both_in_flight = || {
        let got = rx.received();
        got.iter().any(|r| r.path == "/plain") && got.iter().any(|r| r.path == "/ordered")
    };
    for _ in 0..400 {
        if both_in_flight() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(both_in_flight(), "{}", server.log());
    server.sigkill().await;
    let before = rx.count();
    // The receiver recovers; the restarted gateway's attempts are answered 200.
    rx.set_default(None);

    let server = env.serve_at(port, &settings).await;
    // The lease lapses (timeout + 11 s), then everything goes out.
    let want = MESSAGES * 2;
    let mut distinct = 0;
    for _ in 0..900 {
        let mut seen: Vec<(String, String)> = rx
            .received()
            .iter()
            .map(|r| {
                (
                    r.path.clone(),
                    r.header("webhook-id").unwrap_or("").to_owned(),
                )
            })
            .collect();
        seen.sort();
        seen.dedup();
        distinct = seen.len();
        if distinct >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        distinct,
        want,
        "every message to both endpoints\n{}",
        server.log()
    );
    assert!(rx.count() > before);

    // The ordered endpoint saw the messages in creation order (a message sent again after
    // the crash comes again before the next one, never after it).
    let list: Value = server
        .get(
            &admin,
            "/v1/webhooks/messages?type=usage.threshold.crossed&limit=100",
        )
        .await
        .json()
        .await
        .unwrap();
    let mut created: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    created.reverse(); // the list is newest first
    assert_eq!(created.len(), MESSAGES);
    let mut ordered: Vec<String> = rx
        .received()
        .iter()
        .filter(|r| r.path == "/ordered")
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    ordered.dedup();
    assert_eq!(ordered, created);

    // The attempt log: the attempt that was in flight at the kill left no record, so the
    // first message's delivery to the ordered endpoint succeeded as attempt 2.
    let attempts: Value = server
        .get(
            &admin,
            &format!("/v1/webhooks/messages/{}/attempts", created[0]),
        )
        .await
        .json()
        .await
        .unwrap();
    let to_ordered: Vec<&Value> = attempts["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["endpoint_id"] == endpoints[1].as_str())
        .collect();
    assert_eq!(to_ordered.len(), 1, "{attempts}");
    assert_eq!(to_ordered[0]["attempt"], 2);
    assert_eq!(to_ordered[0]["outcome"], "succeeded");
    let m: Value = server
        .get(&admin, &format!("/v1/webhooks/messages/{}", created[0]))
        .await
        .json()
        .await
        .unwrap();
    for d in m["deliveries"].as_array().unwrap() {
        assert_eq!(d["state"], "delivered", "{m}");
    }
}
