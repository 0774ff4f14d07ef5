//! `db backup FILE`: a consistent copy of the SQLite database taken while `serve` keeps
//! writing; refused (naming pg_dump) on PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::json;

use crate::support::{Backend, TestEnv};

#[tokio::test]
async fn a_backup_taken_under_load_is_whole_and_opens() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let key = env.create_key("app", None).await;
    let server = env.serve().await;
    // Ingest runs the whole time the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (client, url, key) = (
            server.client.clone(),
            server.url("/v1/usage/events"),
            key.clone(),
        );
        let (stop, acked) = (stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let r = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"specversion": "1.0", "id": format!("e-{i}"), "source": "s", "type": "app.session", "partner": "epic-sandbox", "subject": format!("u{}", i % 7)}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 202);
                acked.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let before = acked.load(Ordering::SeqCst);
    let file = env.dir.path().join("backups/gw-backup.db");
    let out = env.run(&["db", "backup", file.to_str().unwrap()]).await;
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("integrity ok"), "{out}");
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    // The copy opens on its own, is whole, and holds every event acknowledged before the
    // backup began (and none twice).
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .read_only(true);
    let copy = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&copy)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_events")
        .fetch_one(&copy)
        .await
        .unwrap();
    let distinct: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT event_id) FROM usage_events")
        .fetch_one(&copy)
        .await
        .unwrap();
    assert!(
        n as u64 >= before,
        "{n} events in the copy, {before} acknowledged before it"
    );
    assert_eq!(n, distinct);
    copy.close().await;
    // No partial file left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty());

    // An existing file is kept unless --force.
    let again = env.run(&["db", "backup", file.to_str().unwrap()]).await;
    assert!(!again.status.success());
    assert!(again.stderr.contains("--force"), "{again}");
    let forced = env
        .run(&["db", "backup", "--force", file.to_str().unwrap()])
        .await;
    assert!(forced.status.success(), "{forced}");
}

#[tokio::test]
async fn a_backup_of_a_database_that_is_not_there_is_refused() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let out = env
        .run_with_env(
            &[
                "db",
                "backup",
                env.dir.path().join("b.db").to_str().unwrap(),
            ],
            &[("GATEWAY__DATABASE__URL", "sqlite://nowhere/gw.db")],
        )
        .await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("no database at"), "{out}");
    assert!(!env.dir.path().join("b.db").exists());
}

#[tokio::test]
#[cfg_attr(
    not(pg_tests),
    ignore = "PostgreSQL only: set TEST_DATABASE_URL (./dev test does when PostgreSQL answers on 127.0.0.1:5432)"
)]
async fn a_postgres_backup_points_to_pg_dump() {
    let Some(env) = TestEnv::new(Backend::Postgres).await else {
        return;
    };
    let out = env.run(&["migrate"]).await;
    assert!(out.status.success(), "{out}");
    let file = env.dir.path().join("b.db");
    let out = env.run(&["db", "backup", file.to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("pg_dump"), "{out}");
    assert!(!file.exists());
}
