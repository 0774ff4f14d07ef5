//! `statements generate | run | list | finalize | export | verify | void` on the binary,
//! with usage imported by `usage import` as the billing system would send it.

use std::fmt::Write as _;

use serde_json::json;

use crate::support::{Backend, TestEnv, on_both_backends};

on_both_backends!(finance_runs_finalizes_exports_and_verifies_a_month
    => finance_runs_finalizes_exports_and_verifies_a_month_on_sqlite,
       finance_runs_finalizes_exports_and_verifies_a_month_on_postgres);

on_both_backends!(a_statement_inside_the_settle_window_says_so_and_waits
    => a_statement_inside_the_settle_window_says_so_and_waits_on_sqlite,
       a_statement_inside_the_settle_window_says_so_and_waits_on_postgres);

/// Finance imports the month and generates at once: the draft cannot count what the
/// ledger received inside `statements.settle_secs`. It says how many events it leaves out
/// and until when; by default the CLI waits and computes again with everything.
async fn a_statement_inside_the_settle_window_says_so_and_waits(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let e = json!({
        "specversion": "1.0", "id": "inv-settle", "source": "/billing", "partner": "cloud-marketplace",
        "type": "revenue.recognized", "time": "2026-10-12T10:00:00Z",
        "data": {"amount": "1000.00", "currency": "USD", "product": "private-offer", "customer": "Gamma"},
    });
    let file = env.dir.path().join("revenue.ndjson");
    std::fs::write(&file, format!("{e}\n")).unwrap();
    let import = env.run(&["usage", "import", file.to_str().unwrap()]).await;
    assert!(import.status.success(), "{import}");
    let settle = &[("GATEWAY__STATEMENTS__SETTLE_SECS", "3")];
    let args = [
        "statements",
        "generate",
        "--partner",
        "cloud-marketplace",
        "--period",
        "2026-10",
    ];
    let mut no_wait = args.to_vec();
    no_wait.push("--no-wait");
    let quick = env.run_with_env(&no_wait, settle).await;
    assert!(quick.status.success(), "{quick}");
    assert!(
        quick.stdout.contains("\t0.00 USD"),
        "not counted yet: {quick}"
    );
    assert!(
        quick
            .stderr
            .contains("1 event(s) of the period arrived after the ledger cut-off")
            && quick.stderr.contains("generate again after"),
        "{quick}"
    );
    let waited = env.run_with_env(&args, settle).await;
    assert!(waited.status.success(), "{waited}");
    assert!(waited.stderr.contains("waiting"), "{waited}");
    // 1000.00 x 20%.
    assert!(
        waited.stdout.contains("\t200.00 USD"),
        "counted after the wait: {waited}"
    );
}

/// Events received a moment ago count at once (the default waits 60 s for stragglers).
const NOW: &[(&str, &str)] = &[("GATEWAY__STATEMENTS__SETTLE_SECS", "0")];

async fn finance_runs_finalizes_exports_and_verifies_a_month(backend: Backend) {
    let Some(env) = TestEnv::new(backend).await else {
        return;
    };
    let mut ndjson = String::new();
    for (i, (amount, customer)) in [
        ("1200.00", "Gamma"),
        ("-200.00", "Gamma"),
        ("499.99", "Delta"),
    ]
    .iter()
    .enumerate()
    {
        let e = json!({
            "specversion": "1.0", "id": format!("inv-{i}"), "source": "/billing", "partner": "cloud-marketplace",
            "type": "revenue.recognized", "time": "2026-10-12T10:00:00Z",
            "data": {"amount": amount, "currency": "USD", "product": "private-offer", "customer": customer},
        });
        writeln!(ndjson, "{e}").unwrap();
    }
    let file = env.dir.path().join("revenue.ndjson");
    std::fs::write(&file, ndjson).unwrap();
    let import = env.run(&["usage", "import", file.to_str().unwrap()]).await;
    assert!(import.status.success(), "{import}");

    let generated = env
        .run_with_env(
            &[
                "statements",
                "generate",
                "--partner",
                "cloud-marketplace",
                "--period",
                "2026-10",
            ],
            NOW,
        )
        .await;
    assert!(generated.status.success(), "{generated}");
    // 1,499.99 x 20% = 299.998 -> 300.00.
    assert!(
        generated
            .stdout
            .contains("\tdraft\t-\tcloud-marketplace\tmarketplace-fee v1\t2026-10\t300.00 USD"),
        "{generated}"
    );
    let id = generated.stdout.split('\t').next().unwrap().to_owned();
    assert!(id.starts_with("stmt_"), "{generated}");

    // Every partner's agreement for the month, in one go.
    let run = env
        .run_with_env(&["statements", "run", "--period", "2026-10"], NOW)
        .await;
    assert!(run.status.success(), "{run}");
    assert!(run.stdout.contains("4 statement(s), 0 failed"), "{run}");
    assert!(
        run.stdout.contains(&id),
        "the draft is recomputed, not duplicated\n{run}"
    );

    let finalized = env
        .run_with_env(
            &["statements", "finalize", &id, "--author", "Jane Finance"],
            NOW,
        )
        .await;
    assert!(finalized.status.success(), "{finalized}");
    assert!(
        finalized
            .stdout
            .contains("\tfinalized\tCLOUD-MARKETPLACE-00001\t"),
        "{finalized}"
    );
    let hash_line = finalized
        .stdout
        .lines()
        .find(|l| l.starts_with("sha256 "))
        .unwrap();
    let hash = hash_line.trim_start_matches("sha256 ").to_owned();
    assert_eq!(hash.len(), 64);

    let listed = env
        .run(&["statements", "list", "--status", "finalized"])
        .await;
    assert_eq!(listed.stdout_lines().len(), 1, "{listed}");

    for format in ["json", "csv", "pdf"] {
        let out = env.dir.path().join(format!("statement.{format}"));
        let export = env
            .run(&[
                "statements",
                "export",
                &id,
                "--format",
                format,
                "--out",
                out.to_str().unwrap(),
            ])
            .await;
        assert!(export.status.success(), "{export}");
        let bytes = std::fs::read(&out).unwrap();
        match format {
            "json" => {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(v["hash"], hash.as_str());
                assert_eq!(v["document"]["total"], "300.00");
            }
            "csv" => {
                let text = String::from_utf8(bytes).unwrap();
                assert!(text.contains("CLOUD-MARKETPLACE-00001"), "{text}");
                assert!(text.contains("total,,,Total owed"), "{text}");
            }
            _ => {
                // Read back by an independent PDF parser (poppler's pdftotext).
                let text = std::process::Command::new("pdftotext")
                    .args(["-layout", out.to_str().unwrap(), "-"])
                    .output()
                    .expect("pdftotext (Debian poppler-utils) reads the exported PDF");
                let text = String::from_utf8_lossy(&text.stdout);
                for needle in [
                    "CLOUD-MARKETPLACE-00001",
                    // Addressed by its legal name, as config/partners.toml gives it.
                    "東京クラウドマーケットプレイス株式会社",
                    "Amount payable (USD)",
                    "marketplace-fee",
                    "2026-10",
                    "300.00",
                    &hash[..16],
                ] {
                    assert!(
                        text.contains(needle),
                        "{needle} not in the PDF text:\n{text}"
                    );
                }
            }
        }
    }

    let verify = env.run(&["statements", "verify", &id]).await;
    assert!(verify.status.success(), "{verify}");
    assert!(verify.stdout.contains("verified"), "{verify}");

    // The agreement edited after the statement was issued: verification says so.
    let path = env.config_dir.join("agreements.toml");
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace("share = { rate = \"20%\" }", "share = { rate = \"25%\" }");
    std::fs::write(&path, edited).unwrap();
    let verify = env.run(&["statements", "verify", &id]).await;
    assert_eq!(verify.status.code(), Some(4), "{verify}");
    assert!(
        verify
            .stdout
            .contains("recomputed from the ledger: DOES NOT MATCH"),
        "{verify}"
    );
    assert!(
        verify.stdout.contains("hash over stored content: matches"),
        "{verify}"
    );

    let bad = env
        .run(&[
            "statements",
            "generate",
            "--partner",
            "nobody",
            "--period",
            "2026-10",
        ])
        .await;
    assert_eq!(bad.status.code(), Some(1), "{bad}");
    assert!(bad.stderr.contains("unknown partner \"nobody\""), "{bad}");

    let void = env
        .run(&[
            "statements",
            "void",
            &id,
            "--reason",
            "Issued against the wrong rate",
        ])
        .await;
    assert!(void.status.success(), "{void}");
    assert!(
        void.stdout.contains("\tvoid\tCLOUD-MARKETPLACE-00001\t"),
        "{void}"
    );
}

#[tokio::test]
async fn statements_refuse_a_sandbox_partner_and_a_run_skips_it() {
    let env = TestEnv::new(Backend::Sqlite).await.unwrap();
    let path = env.config_dir.join("partners.toml");
    let mut partners = std::fs::read_to_string(&path).unwrap();
    partners.push_str(
        "\n[[partners]]\nid = \"sbx-tryout\"\nname = \"Trying flows out\"\nkind = \"other\"\nsandbox = true\n",
    );
    std::fs::write(&path, partners).unwrap();
    let out = env
        .run(&[
            "statements",
            "generate",
            "--partner",
            "sbx-tryout",
            "--period",
            "2026-10",
        ])
        .await;
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("partner \"sbx-tryout\" is a sandbox partner"),
        "{out}"
    );
    let run = env.run(&["statements", "run", "--period", "2026-10"]).await;
    assert!(run.status.success(), "{run}");
    assert!(!run.stdout.contains("sbx-tryout"), "{run}");
}
