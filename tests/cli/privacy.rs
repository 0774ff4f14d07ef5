//! `privacy export | erase | purge`: a person's ledger events found by their id (the ledger
//! holds only pseudonyms), erased only with `--yes`, and the purge run at once.

use serde_json::Value;

use crate::support::{Backend, TestEnv, on_both_backends};

on_both_backends!(privacy_commands_export_erase_and_purge
    => privacy_commands_export_erase_and_purge_on_sqlite,
       privacy_commands_export_erase_and_purge_on_postgres);

async fn privacy_commands_export_erase_and_purge(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let file = env.dir.path().join("events.ndjson");
    let lines: Vec<String> = (0..6)
        .map(|i| {
            format!(
                r#"{{"specversion":"1.0","id":"e{i}","source":"/app","type":"app.session","partner":"epic-sandbox","subject":"learner-{}","time":"2026-11-02T10:00:00Z"}}"#,
                i % 2
            )
        })
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = env.run(&["usage", "import", file.to_str().unwrap()]).await;
    assert!(out.status.success(), "{out}");

    let person = ["--partner", "epic-sandbox", "--user-id", "learner-0"];
    let out = env
        .run(&[&["privacy", "export"][..], &person].concat())
        .await;
    assert!(out.status.success(), "{out}");
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["ledger_events"].as_array().unwrap().len(), 3, "{doc}");
    let pseudonym = doc["identifiers"]["ledger_pseudonyms"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        pseudonym.starts_with("ps1_") && !out.stdout.contains("\"subject\": \"learner-0\""),
        "{out}"
    );

    // Without --yes: what would go, and nothing erased (exit 2).
    let out = env
        .run(&[&["privacy", "erase"][..], &person].concat())
        .await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(out.stderr.contains("3 ledger events"), "{out}");
    let out = env
        .run(&[&["privacy", "erase"][..], &person, &["--yes"]].concat())
        .await;
    assert!(out.status.success(), "{out}");
    let done: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(done["erased"]["ledger_events"], 3, "{done}");
    assert!(
        done["audit_id"].as_str().unwrap().starts_with("aud_"),
        "{done}"
    );
    // Found no more; the other learner's events are still theirs.
    let out = env
        .run(&[&["privacy", "export"][..], &person].concat())
        .await;
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["ledger_events"], serde_json::json!([]), "{doc}");
    let out = env
        .run(&[
            "privacy",
            "export",
            "--partner",
            "epic-sandbox",
            "--user-id",
            "learner-1",
        ])
        .await;
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["ledger_events"].as_array().unwrap().len(), 3, "{doc}");

    // A request that names nobody, or an unknown partner, is refused before anything runs.
    let out = env
        .run(&["privacy", "export", "--partner", "epic-sandbox"])
        .await;
    assert!(!out.status.success(), "{out}");
    let out = env
        .run(&[
            "privacy",
            "erase",
            "--partner",
            "nope",
            "--user-id",
            "x",
            "--yes",
        ])
        .await;
    assert!(
        !out.status.success() && out.stderr.contains("unknown partner"),
        "{out}"
    );

    let out = env.run(&["privacy", "purge"]).await;
    assert!(out.status.success(), "{out}");
    let purged: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(purged["launches"], 0, "{purged}");
}
