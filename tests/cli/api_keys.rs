//! `api-keys create`: the key alone on stdout, usable at once, stored only as a hash.

use crate::support::{Backend, TestEnv, on_both_backends, sqlite_files};

on_both_backends!(created_keys_work_and_only_their_hash_is_stored
    => created_keys_work_and_only_their_hash_is_stored_on_sqlite,
       created_keys_work_and_only_their_hash_is_stored_on_postgres);

async fn created_keys_work_and_only_their_hash_is_stored(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };

    // At the default (info) level logs are on: they must go to stderr, not next to the key.
    let out = env
        .run_with_env(
            &[
                "api-keys",
                "create",
                "--role",
                "admin",
                "--name",
                "ops laptop",
            ],
            &[("GATEWAY__TELEMETRY__LOG_LEVEL", "info")],
        )
        .await;
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.ends_with('\n'), "{out}");
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 1, "stdout must hold the key alone\n{out}");
    let admin = lines[0].to_owned();
    assert!(admin.starts_with("pgw_"), "{out}");
    assert_eq!(admin.trim(), admin, "{out}");
    assert!(
        admin.len() >= 40,
        "a key this short cannot carry enough randomness: {admin}"
    );

    let partner = env.create_key("partner", Some("epic-sandbox")).await;
    assert_ne!(partner, admin);

    let failed = env.run(&["api-keys", "create", "--role", "partner"]).await;
    assert!(
        !failed.status.success(),
        "a partner key needs --partner\n{failed}"
    );
    assert!(failed.stdout.trim().is_empty(), "{failed}");
    assert!(failed.stderr.contains("--partner"), "{failed}");

    let failed = env
        .run(&[
            "api-keys",
            "create",
            "--role",
            "partner",
            "--partner",
            "no-such-partner",
        ])
        .await;
    assert!(
        !failed.status.success(),
        "an unknown partner must be refused\n{failed}"
    );
    assert!(failed.stdout.trim().is_empty(), "{failed}");
    assert!(failed.stderr.contains("no-such-partner"), "{failed}");

    // Only the two good keys were stored.
    let store = env.store().await;
    assert_eq!(store.scalar("SELECT COUNT(*) FROM api_keys").await, 2);
    let rows = store
        .strings(
            "SELECT id || '|' || key_hash || '|' || prefix || '|' || role || '|' \
             || COALESCE(partner_id, '') || '|' || COALESCE(name, '') FROM api_keys",
        )
        .await;
    for secret in [&admin, &partner] {
        for row in &rows {
            assert!(
                !row.contains(secret.as_str()),
                "api_keys holds a secret: {row}"
            );
            // Nor a large piece of it (the stored prefix is short, for recognising keys).
            assert!(
                !row.contains(&secret[secret.len() - 24..]),
                "api_keys holds part of a secret: {row}"
            );
        }
    }
    let hashes = store.strings("SELECT key_hash FROM api_keys").await;
    for h in &hashes {
        assert!(
            h.len() >= 32 && h.bytes().all(|b| b.is_ascii_hexdigit()),
            "not a hash: {h}"
        );
    }
    let prefixes = store.strings("SELECT prefix FROM api_keys").await;
    assert!(
        prefixes
            .iter()
            .any(|p| admin.starts_with(p.as_str()) && p.len() < admin.len() / 2)
    );
    store.close().await;
    if backend == Backend::Sqlite {
        for (path, bytes) in sqlite_files(&env.sqlite_path()) {
            for secret in [&admin, &partner] {
                let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                assert!(!found, "{} contains a key in clear", path.display());
            }
        }
    }

    // The keys work against a running server.
    let server = env.serve().await;
    let resp = server.get(&admin, "/v1/partners").await;
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    let text = body.to_string();
    assert!(
        text.contains("epic-sandbox") && text.contains("canvas-sandbox"),
        "{text}"
    );

    let resp = server.get(&partner, "/v1/partners/epic-sandbox").await;
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );

    let forged = format!("pgw_{}", "0".repeat(admin.len() - 4));
    let resp = server.get(&forged, "/v1/partners").await;
    assert_eq!(resp.status().as_u16(), 401);
}
