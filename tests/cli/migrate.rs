//! `migrate`: applies the migrations, and running it again is a no-op that succeeds.

use crate::support::{Backend, TestEnv, on_both_backends};

on_both_backends!(migrate_succeeds_twice_in_a_row
    => migrate_succeeds_twice_in_a_row_on_sqlite,
       migrate_succeeds_twice_in_a_row_on_postgres);

async fn migrate_succeeds_twice_in_a_row(backend: Backend) {
    let Some(env) = TestEnv::unmigrated(backend).await else {
        return;
    };
    let name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };

    let first = env.run(&["migrate"]).await;
    assert!(first.status.success(), "{first}");
    assert!(
        first
            .stderr
            .contains(&format!("migrations applied ({name})")),
        "{first}"
    );

    let store = env.store().await;
    let applied = store
        .scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .await;
    assert!(applied >= 1, "no migration recorded");
    assert_eq!(
        store
            .scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE NOT success")
            .await,
        0
    );
    for table in ["partners", "api_keys", "usage_events", "jobs"] {
        assert_eq!(
            store.scalar(&format!("SELECT COUNT(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }

    let second = env.run(&["migrate"]).await;
    assert!(second.status.success(), "{second}");
    assert_eq!(
        store
            .scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
            .await,
        applied,
        "the second run applied something again"
    );
    store.close().await;
}
