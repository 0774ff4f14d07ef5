//! `lti registration-link`: the URL alone on stdout, only its hash stored, every mistake
//! named.

use sha2::Digest;

use crate::support::{Backend, TestEnv, on_both_backends};

on_both_backends!(a_registration_link_is_printed_once_and_only_its_hash_stored
    => a_registration_link_is_printed_once_and_only_its_hash_stored_on_sqlite,
       a_registration_link_is_printed_once_and_only_its_hash_stored_on_postgres);

async fn a_registration_link_is_printed_once_and_only_its_hash_stored(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let before = chrono::Utc::now().timestamp_micros();
    let out = env
        .run_with_env(
            &[
                "lti",
                "registration-link",
                "--partner",
                "canvas-sandbox",
                "--expires-in",
                "2h",
                "--note",
                "for the Canvas admin",
            ],
            &[("GATEWAY__TELEMETRY__LOG_LEVEL", "info")],
        )
        .await;
    assert!(out.status.success(), "{out}");
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 1, "stdout must hold the URL alone\n{out}");
    let url = lines[0];
    let (base, token) = url.split_once("/lti/register?link=").unwrap();
    assert!(base.starts_with("http"), "{out}");
    assert!(token.len() >= 43, "{out}");
    assert!(
        out.stderr.contains("lrl_") && out.stderr.contains("canvas-sandbox"),
        "{out}"
    );

    let store = env.store().await;
    assert_eq!(
        store
            .scalar("SELECT COUNT(*) FROM lti_registration_links")
            .await,
        1
    );
    let row = store
        .strings(
            "SELECT partner_id || '|' || token_hash || '|' || COALESCE(note, '') || '|' || created_by \
             FROM lti_registration_links",
        )
        .await;
    let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    assert_eq!(
        row,
        [format!("canvas-sandbox|{hash}|for the Canvas admin|cli")]
    );
    let ttl_us = store
        .scalar("SELECT expires_at_us - created_at_us FROM lti_registration_links")
        .await;
    assert_eq!(ttl_us, 2 * 3600 * 1_000_000);
    let created = store
        .scalar("SELECT created_at_us FROM lti_registration_links")
        .await;
    assert!(created >= before, "{created} {before}");

    // Mistakes are named, and nothing is stored for them.
    for (args, says) in [
        (vec!["--partner", "no-such-partner"], "no-such-partner"),
        (vec!["--partner", "epic-sandbox"], "no LTI registration"),
        (
            vec!["--partner", "canvas-sandbox", "--expires-in", "10s"],
            "5 minutes",
        ),
        (
            vec!["--partner", "canvas-sandbox", "--expires-in", "31d"],
            "30 days",
        ),
        (
            vec!["--partner", "canvas-sandbox", "--expires-in", "7x"],
            "30m, 12h or 7d",
        ),
        (vec![], "--partner"),
    ] {
        let mut all = vec!["lti", "registration-link"];
        all.extend(args.iter().copied());
        let out = env.run(&all).await;
        assert!(!out.status.success(), "{args:?}\n{out}");
        assert!(out.stdout.trim().is_empty(), "{args:?}\n{out}");
        assert!(
            out.stderr.contains(says),
            "{args:?}: expected {says:?}\n{out}"
        );
    }
    assert_eq!(
        store
            .scalar("SELECT COUNT(*) FROM lti_registration_links")
            .await,
        1
    );
}
