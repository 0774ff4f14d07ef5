//! Transactions keep their all-or-nothing meaning under concurrency. On SQLite, concurrent
//! writers share commits (a savepoint per caller inside one transaction): a caller's
//! rollback, error, drop or cancellation must undo exactly its own writes, and a commit that
//! returned must be durable and visible to a fresh connection.

use std::time::Duration;

use partner_gateway::db::Db;
use partner_gateway::{with_db, with_tx};

use crate::helpers::TestApp;

async fn probe_table(db: &Db) {
    with_db!(db, pool => {
        sqlx::query("CREATE TABLE tx_probe (id TEXT PRIMARY KEY, n BIGINT NOT NULL)")
            .execute(pool).await.map(|_| ())
    })
    .unwrap();
}

async fn insert(tx: &mut partner_gateway::db::Tx, id: &str, n: i64) -> Result<(), sqlx::Error> {
    with_tx!(tx, c => {
        sqlx::query("INSERT INTO tx_probe (id, n) VALUES ($1, $2)")
            .bind(id)
            .bind(n)
            .execute(c).await.map(|_| ())
    })
}

async fn ids(db: &Db) -> Vec<String> {
    with_db!(db, pool => {
        sqlx::query_scalar("SELECT id FROM tx_probe ORDER BY id").fetch_all(pool).await
    })
    .unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Fate {
    Commit,
    Drop,
    FailThenDrop,
    Cancel,
}

crate::both_backends! {
    async fn concurrent_transactions_commit_or_vanish_whole(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        probe_table(app.db()).await;
        let before = app.db().sqlite_commit_stats();
        let fates = [Fate::Commit, Fate::Drop, Fate::Commit, Fate::FailThenDrop, Fate::Commit, Fate::Cancel];
        let mut tasks = Vec::new();
        for i in 0..96 {
            let db = app.db().clone();
            let fate = fates[i % fates.len()];
            tasks.push(tokio::spawn(async move {
                let id = format!("t{i:03}");
                let work = async {
                    let mut tx = db.begin().await.unwrap();
                    insert(&mut tx, &format!("{id}-a"), 1).await.unwrap();
                    tokio::task::yield_now().await;
                    insert(&mut tx, &format!("{id}-b"), 2).await.unwrap();
                    match fate {
                        Fate::Commit => tx.commit().await.map(|_| true),
                        Fate::Drop => Ok(false),
                        Fate::FailThenDrop => {
                            // A failed statement (a duplicate key) in the middle, then the
                            // caller gives up: the error path drops the transaction.
                            let err = insert(&mut tx, &format!("{id}-a"), 3).await.unwrap_err();
                            assert!(partner_gateway::db::is_unique_violation(&err), "{err}");
                            Ok(false)
                        }
                        Fate::Cancel => {
                            std::future::pending::<()>().await;
                            Ok(false)
                        }
                    }
                };
                match fate {
                    Fate::Cancel => {
                        let r = tokio::time::timeout(Duration::from_millis(20), work).await;
                        assert!(r.is_err(), "a pending transaction ended by itself");
                        (id, false)
                    }
                    _ => {
                        let committed = work.await.unwrap();
                        (id, committed)
                    }
                }
            }));
        }
        let mut expected = Vec::new();
        for t in tasks {
            let (id, committed) = t.await.unwrap();
            if committed {
                expected.push(format!("{id}-a"));
                expected.push(format!("{id}-b"));
            }
        }
        expected.sort();
        assert_eq!(expected.len(), 96);
        if let (Some(before), Some(after)) = (before, app.db().sqlite_commit_stats()) {
            // 48 committed callers (and whatever the app's background tasks wrote); with 96
            // writers queued at once, commits were shared.
            let callers = after.callers - before.callers;
            let commits = after.commits - before.commits;
            assert!(callers >= 48, "{before:?} -> {after:?}");
            assert!(commits < callers, "{before:?} -> {after:?}");
        }
        // What a fresh connection sees: every committed transaction whole, nothing else. A
        // dropped or cancelled caller's undo runs in the background, so give it a moment
        // before the final check of the writer's own pool too.
        let fresh = app.connect_again().await;
        assert_eq!(ids(&fresh).await, expected);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(ids(app.db()).await, expected);
        // The store still takes writes (no turn or transaction left behind).
        let mut tx = app.db().begin().await.unwrap();
        insert(&mut tx, "zz-last", 9).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(ids(&fresh).await.len(), 97);
        fresh.close().await;
        app.stop().await;
    }

    async fn a_commit_is_visible_to_another_connection_when_it_returns(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        probe_table(app.db()).await;
        let fresh = app.connect_again().await;
        let mut tasks = Vec::new();
        for i in 0..32 {
            let db = app.db().clone();
            let fresh = fresh.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("v{i:02}");
                let mut tx = db.begin().await.unwrap();
                insert(&mut tx, &id, i).await.unwrap();
                tx.commit().await.unwrap();
                let seen: Option<i64> = with_db!(&fresh, pool => {
                    sqlx::query_scalar("SELECT n FROM tx_probe WHERE id = $1").bind(&id).fetch_optional(pool).await
                })
                .unwrap();
                assert_eq!(seen, Some(i), "{id} was not visible after its commit returned");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        fresh.close().await;
        app.stop().await;
    }
}

/// A managed PostgreSQL that requires TLS: `sslmode=require` in `database.url` connects
/// over TLS (the server here has Debian's snakeoil certificate; `require` encrypts without
/// verifying, `verify-full` with `sslrootcert=` checks the server too).
#[tokio::test]
#[cfg_attr(
    not(pg_tests),
    ignore = "PostgreSQL only: set TEST_DATABASE_URL (./dev test does when PostgreSQL answers on 127.0.0.1:5432)"
)]
async fn postgres_connects_over_tls_when_the_url_asks() {
    let Ok(base) = std::env::var("TEST_DATABASE_URL") else {
        panic!("TEST_DATABASE_URL is not set");
    };
    if base.is_empty() {
        return;
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    let cfg = partner_gateway::config::DatabaseConfig {
        url: partner_gateway::config::Secret::new(format!("{base}{sep}sslmode=require")),
        ..Default::default()
    };
    let db = partner_gateway::db::Db::connect(&cfg).await.unwrap();
    let partner_gateway::db::Db::Postgres(pool) = &db else {
        panic!("not PostgreSQL")
    };
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(ssl, "the connection is not encrypted");
    db.close().await;
}

// Instances starting together on an empty database create one signing key per algorithm
// between them, not one each.
crate::both_backends! {
    async fn concurrent_starts_create_one_signing_key_per_algorithm(backend) {
        let Some(app) = TestApp::spawn(backend).await else { return };
        let db = app.db().clone();
        partner_gateway::with_db!(&db, pool => sqlx::query("DELETE FROM signing_keys").execute(pool).await.map(|_| ())).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (db, master) = (db.clone(), app.state.master_key.clone());
            tasks.push(tokio::spawn(async move {
                partner_gateway::keys::ensure_signing_keys(&db, &master, partner_gateway::time::now_micros()).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let sql = "SELECT COUNT(*) FROM signing_keys WHERE retire_at_us IS NULL";
        let n: i64 = partner_gateway::with_db!(&db, pool => sqlx::query_scalar(sql).fetch_one(pool).await).unwrap();
        assert_eq!(n, 3, "one current key for each of RS256, RS384 and ES384");
    }
}
