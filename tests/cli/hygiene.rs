//! What the binary leaves on disk and in its log: database files and backups readable by
//! their owner only, text logs that a request value cannot forge a line in, and `usage
//! import` refusing lines with U+0000 or oversized `data` by line number.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::{Backend, TestEnv, on_both_backends};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

// The SQLite database, its -wal and -shm files and a backup hold sealed keys, launch
// contexts and the ledger: 0600, whatever the umask (the tests run with 022).
#[tokio::test]
async fn database_files_and_backups_are_readable_by_their_owner_only() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let key = env.create_key("admin", None).await;
    let server = env.serve().await;
    let r = server
        .client
        .post(server.url("/v1/usage/events"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"specversion": "1.0", "id": "e1", "source": "s", "type": "app.session", "partner": "epic-sandbox"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let db = env.sqlite_path();
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let backup = env.dir.path().join("backups/copy.db");
    let out = env.run(&["db", "backup", backup.to_str().unwrap()]).await;
    assert!(out.status.success(), "{out}");
    assert_eq!(mode(&backup), 0o600);
    // The master key file, as before.
    let master = env.dir.path().join("data/master.key");
    if master.exists() {
        assert_eq!(mode(&master), 0o600);
    }
}

// A database file left world-readable by an earlier version is tightened at start.
#[tokio::test]
async fn an_existing_database_file_is_tightened_at_start() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let out = env.run(&["migrate"]).await;
    assert!(out.status.success(), "{out}");
    let db = env.sqlite_path();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.run(&["migrate"]).await;
    assert!(out.status.success(), "{out}");
    assert_eq!(mode(&db), 0o600);
}

// Text logs: a request value carrying a newline and an escape sequence is written escaped,
// on the one line of its event; no forged line, nothing for the terminal.
#[tokio::test]
async fn a_request_value_cannot_forge_a_line_in_the_text_log() {
    let Some(env) = TestEnv::new(Backend::Sqlite).await else {
        return;
    };
    let server = env
        .serve_at(
            crate::support::free_port(),
            &[("GATEWAY__TELEMETRY__LOG_FORMAT", "text")],
        )
        .await;
    let r = server
        .client
        .get(server.url("/smart/launch?iss=x%0AFORGED%20admin%20logged%20in%1b[2J%0D&launch=abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.log();
    assert!(
        log.contains("x\\nFORGED admin logged in\\x1b[2J\\r"),
        "{log}"
    );
    assert!(!log.lines().any(|l| l.starts_with("FORGED")), "{log}");
    assert!(!log.contains('\x1b') && !log.contains('\r'), "{log:?}");
}

on_both_backends!(import_refuses_lines_with_nul_or_oversized_data
    => import_refuses_lines_with_nul_or_oversized_data_on_sqlite,
       import_refuses_lines_with_nul_or_oversized_data_on_postgres);

/// Line 2: NUL in the subject; line 3: in a data key; line 4: data over the cap (set to 64
/// bytes here). Each is refused with its line number and the field; the rest is imported.
async fn import_refuses_lines_with_nul_or_oversized_data(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let line = |id: &str, extra: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/imp","type":"app.session","partner":"epic-sandbox"{extra}}}"#
        )
    };
    let text = [
        line("ok-1", r#","subject":"u1""#),
        line("nul-subject", r#","subject":"u\u00001""#),
        line("nul-key", r#","data":{"cu\u0000st":1}"#),
        line(
            "big",
            &format!(r#","data":{{"blob":"{}"}}"#, "x".repeat(100)),
        ),
        line("ok-2", r#","data":{"k":"\\u0000 is text"}"#),
    ]
    .join("\n");
    let file = env.dir.path().join("nul.ndjson");
    std::fs::write(&file, text).unwrap();
    let out = env
        .run_with_env(
            &["usage", "import", file.to_str().unwrap()],
            &[("GATEWAY__USAGE__MAX_DATA_BYTES", "64")],
        )
        .await;
    assert_eq!(out.status.code(), Some(3), "{out}");
    assert_eq!(out.counter("accepted"), 2, "{out}");
    assert_eq!(out.counter("rejected"), 3, "{out}");
    let rejected: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("line "))
        .collect();
    assert!(
        rejected[0].starts_with("line 2: /subject ") && rejected[0].contains("NUL"),
        "{out}"
    );
    assert!(
        rejected[1].starts_with("line 3: /data/cu\\u0000st ") && rejected[1].contains("NUL"),
        "{out}"
    );
    assert!(
        rejected[2].starts_with("line 4: data ") && rejected[2].contains("usage.max_data_bytes"),
        "{out}"
    );
}
