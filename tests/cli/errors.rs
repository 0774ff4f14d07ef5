//! Errors that say what to do: each mistake an operator makes in the first week gets a
//! message naming the place and the fix, asserted here word for word where it matters.

use std::time::{Duration, Instant};

use crate::support::{Backend, TestEnv, on_both_backends};

#[tokio::test]
async fn a_toml_syntax_error_names_file_line_and_column() {
    let env = TestEnv::unmigrated(Backend::Sqlite).await.unwrap();
    let file = env.config_dir.join("gateway.toml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    // The unterminated string is on the third line appended.
    let line = text.lines().count() + 3;
    text.push_str("\n[extra]\nvalue = \"unterminated\n");
    std::fs::write(&file, text).unwrap();
    let out = env.run(&["check-config"]).await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    let want = format!("{}:{line}:", file.display());
    assert!(out.stderr.contains(&want), "missing {want:?}\n{out}");
    assert!(out.stderr.contains("not valid TOML"), "{out}");
    assert!(!out.stderr.contains("(file)"), "{out}");
}

#[tokio::test]
async fn a_wrong_database_port_is_named_at_once() {
    let env = TestEnv::unmigrated(Backend::Sqlite).await.unwrap();
    let started = Instant::now();
    let out = env
        .run_with_env(
            &["api-keys", "list"],
            &[(
                "GATEWAY__DATABASE__URL",
                "postgres://postgres@127.0.0.1:1/postgres",
            )],
        )
        .await;
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("cannot connect to PostgreSQL at 127.0.0.1:1: connection refused"),
        "{out}"
    );
    assert!(!out.stderr.contains("pool timed out"), "{out}");
    // The pool's acquire timeout is 10 s by default: the answer comes well before it.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

async fn a_fresh_database_without_migrate_says_to_run_migrate(backend: Backend) {
    let env = TestEnv::unmigrated(backend).await.unwrap();
    for args in [&["api-keys", "list"][..], &["statements", "list"][..]] {
        let out = env.run(args).await;
        assert!(!out.status.success(), "{out}");
        assert!(
            out.stderr
                .contains("the database has no schema: run `partner-gateway migrate`"),
            "{out}"
        );
        assert!(!out.stderr.contains("does not exist"), "{out}");
    }
    // serve with migrate_on_start off says the same, instead of failing on a missing table.
    let out = env
        .run_with_env(
            &["serve"],
            &[("GATEWAY__DATABASE__MIGRATE_ON_START", "false")],
        )
        .await;
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("the database has no schema"), "{out}");
    // `migrate` is quiet but for its one line: no PostgreSQL NOTICE on a second run.
    for _ in 0..2 {
        let out = env
            .run_with_env(&["migrate"], &[("GATEWAY__TELEMETRY__LOG_LEVEL", "info")])
            .await;
        assert!(out.status.success(), "{out}");
        assert!(
            !out.stderr.contains("NOTICE") && !out.stderr.contains("notice"),
            "{out}"
        );
        assert!(!out.stderr.contains("already exists"), "{out}");
    }
    let out = env.run(&["api-keys", "list"]).await;
    assert!(out.status.success(), "{out}");
}
on_both_backends!(a_fresh_database_without_migrate_says_to_run_migrate =>
    a_fresh_database_without_migrate_says_to_run_migrate_on_sqlite,
    a_fresh_database_without_migrate_says_to_run_migrate_on_postgres);

#[tokio::test]
async fn a_command_refuses_a_database_behind_its_binary_and_leaves_it_alone() {
    let env = TestEnv::new(Backend::Sqlite).await.unwrap();
    let db = env.sqlite_path();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let latest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(latest)
        .execute(&pool)
        .await
        .unwrap();
    let out = env.run(&["api-keys", "list"]).await;
    assert!(!out.status.success(), "{out}");
    let want = format!(
        "the database is 1 migration(s) behind this binary (versions [{latest}]): run `partner-gateway migrate` first"
    );
    assert!(out.stderr.contains(&want), "missing {want:?}\n{out}");
    let still: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE version = $1")
        .bind(latest)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(still, 0, "the command migrated the database");
}

#[tokio::test]
async fn a_secret_in_a_form_the_loader_does_not_take_lists_the_forms() {
    let env = TestEnv::unmigrated(Backend::Sqlite).await.unwrap();
    let out = env
        .run_with_env(
            &["check-config"],
            &[("GATEWAY__KEYS__MASTER_KEY__PATH", "/run/secrets/key")],
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains("environment variable GATEWAY__KEYS__MASTER_KEY__PATH: keys.master_key: a secret is written as a string, { env = \"VARIABLE\" } or { file = \"/path/to/file\" }"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("GATEWAY__SECTION__KEY__FILE=/path/to/file"),
        "{out}"
    );
    assert!(!out.stderr.contains("untagged enum"), "{out}");
    // The file form works, and a missing file is named.
    let out = env
        .run_with_env(
            &["check-config"],
            &[("GATEWAY__KEYS__MASTER_KEY__FILE", "/nonexistent/key")],
        )
        .await;
    assert!(out.stderr.contains("environment variable GATEWAY__KEYS__MASTER_KEY__FILE: keys.master_key: cannot read secret file /nonexistent/key"), "{out}");
}

#[tokio::test]
async fn check_config_validates_the_master_key_as_serve_does() {
    let env = TestEnv::unmigrated(Backend::Sqlite).await.unwrap();
    for (key, want) in [
        (
            "not base64!",
            "keys.master_key: the master key is not base64",
        ),
        (
            "aGVsbG8=",
            "the master key must be 32 bytes (base64 of 32 random bytes), not 5 bytes",
        ),
    ] {
        let out = env
            .run_with_env(&["check-config"], &[("GATEWAY__KEYS__MASTER_KEY", key)])
            .await;
        assert_eq!(out.status.code(), Some(2), "{out}");
        assert!(out.stderr.contains(want), "missing {want:?}\n{out}");
        assert!(!out.stdout.contains("configuration OK"), "{out}");
        // serve refuses the same key.
        let served = env
            .run_with_env(&["serve"], &[("GATEWAY__KEYS__MASTER_KEY", key)])
            .await;
        assert!(!served.status.success(), "{served}");
    }
    let good = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let out = env
        .run_with_env(&["check-config"], &[("GATEWAY__KEYS__MASTER_KEY", good)])
        .await;
    assert!(out.status.success(), "{out}");
}

#[tokio::test]
async fn config_problems_name_items_by_id_suggest_names_and_speak_plainly() {
    let env = TestEnv::unmigrated(Backend::Sqlite).await.unwrap();
    let agreements = env.config_dir.join("agreements.toml");
    let text = std::fs::read_to_string(&agreements)
        .unwrap()
        .replacen("partner = \"epic-sandbox\"", "partner = \"epic-sandbx\"", 1)
        .replacen(
            "meter = \"active_learners\"",
            "meter = \"active_lerners\"",
            1,
        );
    std::fs::write(&agreements, text).unwrap();
    let partners = env.config_dir.join("partners.toml");
    let text = std::fs::read_to_string(&partners).unwrap().replacen(
        "kind = \"lms\"",
        "kind = \"lmss\"",
        1,
    );
    std::fs::write(&partners, text).unwrap();
    let out = env
        .run_with_env(
            &["check-config"],
            &[("GATEWAY__HTTP__BODY_LIMIT_BYTES", "-5")],
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    for want in [
        "agreements[id = \"epic-revenue-share\", version = 1].partner: no partner \"epic-sandbx\" is configured; did you mean \"epic-sandbox\"?",
        "agreements[id = \"canvas-lms-partnership\", version = 1].revenue.prices[0].meter: no meter \"active_lerners\" is configured; did you mean \"active_learners\"?",
        "partners[id = \"canvas-sandbox\"].kind: unknown variant `lmss`, expected one of",
        "did you mean \"lms\"?",
        "http.body_limit_bytes: invalid value: integer `-5`, expected a whole number (0 or more)",
    ] {
        assert!(out.stderr.contains(want), "missing {want:?}\n{out}");
    }
    // The partner whose kind is wrong is reported once, not again by every agreement of it.
    assert!(
        !out.stderr.contains("no partner \"canvas-sandbox\""),
        "{out}"
    );
    assert!(!out.stderr.contains("usize"), "{out}");
    assert!(
        !out.stderr.contains("agreements[0]") && !out.stderr.contains("partners[2]"),
        "{out}"
    );
}

#[tokio::test]
async fn variables_that_look_like_the_gateways_but_are_not_read_are_named() {
    let env = TestEnv::unmigrated(Backend::Sqlite).await.unwrap();
    let out = env
        .run_with_env(
            &["check-config"],
            &[
                ("GATEWAY_HTTP_ADDR", "0.0.0.0:9000"),
                ("GATEWAY_MASTER_KEY", "x"),
            ],
        )
        .await;
    assert!(out.status.success(), "{out}");
    assert!(out.stderr.contains("warning: environment variable GATEWAY_HTTP_ADDR is not read by the gateway (overrides are GATEWAY__SECTION__KEY, with double underscores: GATEWAY__HTTP__ADDR?)"), "{out}");
    // Not read by this config either: the sample names GATEWAY_MASTER_KEY only in a comment.
    assert!(
        out.stderr.contains("GATEWAY_MASTER_KEY is not read"),
        "{out}"
    );
    // A variable a secret reads is not warned about.
    let gateway = env.config_dir.join("gateway.toml");
    let text = std::fs::read_to_string(&gateway).unwrap().replace(
        "master_key_file = \"data/master.key\"",
        "master_key = { env = \"GATEWAY_MASTER_KEY\" }",
    );
    std::fs::write(&gateway, text).unwrap();
    let good = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let out = env
        .run_with_env(&["check-config"], &[("GATEWAY_MASTER_KEY", good)])
        .await;
    assert!(out.status.success(), "{out}");
    assert!(!out.stderr.contains("warning"), "{out}");
    // A misspelt key of a known section is refused with the nearest name.
    let out = env
        .run_with_env(
            &["check-config"],
            &[("GATEWAY__HTTP__ADRR", "0.0.0.0:9000")],
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains("http.adrr: unknown field `adrr`"),
        "{out}"
    );
    assert!(out.stderr.contains("did you mean \"addr\"?"), "{out}");
}

#[tokio::test]
async fn a_4xx_log_line_carries_the_error_code() {
    let env = TestEnv::new(Backend::Sqlite).await.unwrap();
    let server = env
        .serve_with_env(&[("GATEWAY__TELEMETRY__LOG_LEVEL", "info")])
        .await;
    let r = server
        .client
        .post(format!("{}/v1/usage/events", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = server
        .client
        .get(format!("{}/no/such/page", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.log();
    let line = |code: &str| {
        log.lines().any(|l| {
            l.contains("handled") && l.contains(&format!("code=\"{code}\""))
                || l.contains(&format!("\"code\":\"{code}\""))
        })
    };
    assert!(line("unauthorized"), "{log}");
    assert!(line("not_found"), "{log}");
}
