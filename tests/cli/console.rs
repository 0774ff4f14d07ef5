//! `console link | invite`: a single-use sign-in link on stdout alone, its hash in the
//! store, the creation in the audit log; bad roles, partners and addresses refused.

use crate::support::{Backend, TestEnv, on_both_backends};

on_both_backends!(console_links_and_invitations
    => console_links_and_invitations_on_sqlite,
       console_links_and_invitations_on_postgres);

async fn console_links_and_invitations(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let out = env.run(&["console", "link", "--role", "admin"]).await;
    assert!(out.status.success(), "{out}");
    let url = out.stdout.trim();
    assert!(url.contains("/console/redeem?token="), "{out}");
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    assert!(out.stderr.contains("single use, valid until"), "{out}");
    let out = env
        .run(&[
            "console",
            "invite",
            "--partner",
            "canvas-sandbox",
            "--email",
            "ana@state.example",
            "--role",
            "partner-admin",
        ])
        .await;
    assert!(out.status.success(), "{out}");
    let token = out.stdout.trim().rsplit('=').next().unwrap().to_owned();
    // Only hashes are kept; both creations are audited as the command line's.
    let store = env.store().await;
    let stored = store.strings("SELECT token_hash FROM console_links").await;
    assert_eq!(stored.len(), 2);
    assert!(!stored.iter().any(|h| h == &token));
    let actions = store
        .strings("SELECT action || ' ' || actor FROM audit_log ORDER BY at_us")
        .await;
    assert_eq!(
        actions,
        ["console.link.create cli", "console.invitation.create cli"]
    );
    for (args, why) in [
        (
            vec!["console", "link", "--role", "partner-admin"],
            "is not one of admin",
        ),
        (
            vec![
                "console",
                "invite",
                "--partner",
                "nope",
                "--email",
                "a@b.example",
            ],
            "unknown partner",
        ),
        (
            vec![
                "console",
                "invite",
                "--partner",
                "canvas-sandbox",
                "--email",
                "not-an-address",
            ],
            "is not an email address",
        ),
        (
            vec![
                "console",
                "invite",
                "--partner",
                "canvas-sandbox",
                "--email",
                "a@b.example",
                "--role",
                "admin",
            ],
            "is not one of partner-viewer",
        ),
    ] {
        let out = env.run(&args).await;
        assert!(
            !out.status.success() && out.stderr.contains(why),
            "{args:?}: {out}"
        );
    }
}
