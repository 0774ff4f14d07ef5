//! Graceful shutdown: SIGTERM (and SIGINT) make `serve` stop and exit 0 within seconds, even
//! with a client holding an idle keep-alive connection.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Backend, TestEnv, on_both_backends};

on_both_backends!(sigterm_stops_serve_with_exit_status_zero
    => sigterm_stops_serve_with_exit_status_zero_on_sqlite,
       sigterm_stops_serve_with_exit_status_zero_on_postgres);

async fn sigterm_stops_serve_with_exit_status_zero(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let key = env.create_key("app", None).await;

    for signal in ["TERM", "INT"] {
        let mut server = env.serve().await;
        // Some work first, so the pool and the job runner are busy with something; the
        // client keeps its connection open afterwards.
        let resp = server
            .client
            .post(server.url("/v1/usage/events"))
            .bearer_auth(&key)
            .json(&json!({"specversion": "1.0", "id": format!("before-{signal}"), "source": "s", "type": "app.session", "partner": "epic-sandbox"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let resp = server
            .client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            200,
            "{}",
            resp.text().await.unwrap()
        );

        let started = Instant::now();
        server.signal(signal).await;
        let status = server.wait_exit(Duration::from_secs(10)).await;
        let elapsed = started.elapsed();
        let Some(status) = status else {
            panic!(
                "serve did not exit within 10 s of SIG{signal}\n--- serve log ---\n{}",
                server.log()
            );
        };
        assert_eq!(
            status.code(),
            Some(0),
            "SIG{signal}: {status}\n--- serve log ---\n{}",
            server.log()
        );
        assert!(
            elapsed < Duration::from_secs(5),
            "SIG{signal}: stopping took {elapsed:?}"
        );
        // The port is closed.
        assert!(
            server
                .client
                .get(server.url("/healthz"))
                .send()
                .await
                .is_err()
        );
    }

    let store = env.store().await;
    assert_eq!(store.count_events("epic-sandbox").await, 2);
    store.close().await;
}
