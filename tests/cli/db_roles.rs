//! PostgreSQL with two roles (docs/OPERATIONS.md, "Database roles"): `migrate` as the tables'
//! owner, every other command as a runtime role with data rights only. The gateway works
//! (keys, ingest, a statement issued) and the runtime role can neither TRUNCATE the
//! statements nor drop their guards (issue 17, M5).

use serde_json::{Value, json};

use crate::support::{Backend, TestEnv, free_port};

#[tokio::test]
#[cfg_attr(
    not(pg_tests),
    ignore = "PostgreSQL only: set TEST_DATABASE_URL (./dev test does when PostgreSQL answers on 127.0.0.1:5432)"
)]
async fn a_runtime_role_without_ddl_rights_runs_the_gateway_and_cannot_drop_the_guards() {
    let Some(env) = TestEnv::unmigrated(Backend::Postgres).await else {
        return;
    };
    let out = env.run(&["migrate"]).await;
    assert!(out.status.success(), "{out}");

    // The env's schema, and a role of this test's own with data rights on it.
    let schema = env
        .db_url
        .rsplit("search_path%3D")
        .next()
        .unwrap()
        .to_owned();
    let role = format!("gwrt_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let base = std::env::var("TEST_DATABASE_URL").unwrap();
    let owner = sqlx::PgPool::connect(&env.db_url).await.unwrap();
    for sql in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"),
    ] {
        sqlx::query(&sql).execute(&owner).await.unwrap();
    }
    let (user_start, user_end) = (base.find("//").unwrap() + 2, base.find('@').unwrap());
    let runtime_base = format!("{}{role}{}", &base[..user_start], &base[user_end..]);
    let sep = if runtime_base.contains('?') { '&' } else { '?' };
    let runtime = format!("{runtime_base}{sep}options=-c%20search_path%3D{schema}");
    let as_runtime = [
        ("GATEWAY__DATABASE__URL", runtime.as_str()),
        ("GATEWAY__DATABASE__MIGRATE_ON_START", "false"),
        ("GATEWAY__STATEMENTS__SETTLE_SECS", "0"),
    ];

    let key = |role: &'static str| {
        let env = &env;
        let as_runtime = &as_runtime;
        async move {
            let out = env
                .run_with_env(&["api-keys", "create", "--role", role], as_runtime)
                .await;
            assert!(out.status.success(), "{out}");
            out.stdout.trim().to_owned()
        }
    };
    let (admin, finance) = (key("admin").await, key("finance").await);
    let server = env.serve_at(free_port(), &as_runtime).await;
    let r = server
        .client
        .post(server.url("/v1/usage/events"))
        .bearer_auth(&admin)
        .json(&json!({"specversion": "1.0", "id": "r1", "source": "/billing", "type": "revenue.recognized",
                      "partner": "epic-sandbox", "time": "2026-10-11T12:00:00Z",
                      "data": {"amount": "100.00", "currency": "USD", "product": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let st: Value = server
        .client
        .post(server.url("/v1/statements"))
        .bearer_auth(&finance)
        .json(&json!({"partner": "epic-sandbox", "period": "2026-10"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = st["id"].as_str().unwrap();
    let r = server
        .client
        .post(server.url(&format!("/v1/statements/{id}/finalize")))
        .bearer_auth(&finance)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let rt = sqlx::PgPool::connect(&runtime).await.unwrap();
    let e = sqlx::query("TRUNCATE statements CASCADE")
        .execute(&rt)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("permission denied"), "{e}");
    let e = sqlx::query("DROP TRIGGER statements_issued_are_immutable ON statements")
        .execute(&rt)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("must be owner"), "{e}");
    rt.close().await;
    drop(server);

    for sql in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::query(&sql).execute(&owner).await.unwrap();
    }
    owner.close().await;
}
