//! `check-config`: OK on the sample config; every problem listed with its file and field.

use crate::support::{Backend, TestEnv};

#[tokio::test]
async fn check_config_accepts_the_sample_config() {
    let env = TestEnv::unmigrated(Backend::Sqlite).await.unwrap();
    let out = env.run(&["check-config"]).await;
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.starts_with("configuration OK"), "{out}");
    assert!(
        out.stdout
            .contains("6 partner(s), 9 meter(s), 5 agreement version(s)"),
        "{out}"
    );
    // Checking the config does not touch the database.
    assert!(
        !env.sqlite_path().exists(),
        "check-config created the database\n{out}"
    );
}

/// The sample's `[sso]` section says "Defaults shown": it must stay the defaults.
#[test]
fn the_sample_sso_section_shows_the_defaults() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/gateway.toml"))
        .unwrap();
    let table: toml::Table = text.parse().unwrap();
    let sso: partner_gateway::config::SsoConfig = table["sso"].clone().try_into().unwrap();
    let d = partner_gateway::config::SsoConfig::default();
    assert_eq!(
        (
            sso.discovery_ttl_secs,
            sso.jwks_min_refetch_secs,
            sso.state_ttl_secs,
            sso.saml_metadata_refresh_secs,
            sso.saml_clock_skew_secs,
            sso.saml_max_response_age_secs,
        ),
        (
            d.discovery_ttl_secs,
            d.jwks_min_refetch_secs,
            d.state_ttl_secs,
            d.saml_metadata_refresh_secs,
            d.saml_clock_skew_secs,
            d.saml_max_response_age_secs,
        )
    );
}

#[tokio::test]
async fn check_config_lists_every_problem_with_its_file_and_field() {
    let env = TestEnv::new(Backend::Sqlite).await.unwrap();
    let dir = &env.config_dir;
    std::fs::write(
        dir.join("gateway.toml"),
        "[http]\naddr = \"localhost-ish:eighty\"\n\n[database]\nmigrate_on_start = true\n\n[jobs]\nenabled = false\n",
    )
    .unwrap();
    // The sample agreements name partners and meters this test replaces; without the file
    // only the four problems under test remain.
    std::fs::remove_file(dir.join("agreements.toml")).unwrap();
    std::fs::write(
        dir.join("partners.toml"),
        r#"
[[partners]]
id = "epic-sandbox"
name = "Epic on FHIR sandbox"
kind = "ehr"

[[partners]]
id = "starship"
name = "Not a real partner"
kind = "spaceship"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("meters.toml"),
        r#"
[[meters]]
name = "smart_launches"
event_types = ["smart.launch"]
aggregation = "COUNT"

[[meters]]
name = "session_minutes"
event_types = ["app.session"]
aggregation = "SUM"
"#,
    )
    .unwrap();

    let out = env
        .run_with_env(
            &["check-config"],
            &[("GATEWAY__DATABASE__URL", "mysql://x")],
        )
        .await;
    assert!(!out.status.success(), "{out}");
    assert!(!out.stdout.contains("configuration OK"), "{out}");

    let all = format!("{}\n{}", out.stdout, out.stderr);
    let gateway = dir.join("gateway.toml").display().to_string();
    let partners = dir.join("partners.toml").display().to_string();
    let meters = dir.join("meters.toml").display().to_string();
    let expected = [
        format!("{gateway}: http.addr: "),
        format!("{partners}: partners[id = \"starship\"].kind: "),
        format!("{meters}: meters[name = \"session_minutes\"].value: "),
        "environment variable GATEWAY__DATABASE__URL: database.url: ".to_owned(),
    ];
    let problem_lines: Vec<&str> = all
        .lines()
        .map(str::trim)
        .filter(|l| expected.iter().any(|e| l.starts_with(e.as_str())))
        .collect();
    for e in &expected {
        let n = problem_lines
            .iter()
            .filter(|l| l.starts_with(e.as_str()))
            .count();
        assert_eq!(n, 1, "expected exactly one line starting with {e:?}\n{out}");
    }
    // The messages say what is wrong, not just where.
    assert!(all.contains("spaceship"), "{out}");
    assert!(all.contains("SUM needs a value"), "{out}");
    assert!(
        all.contains("must start with sqlite:, postgres://"),
        "{out}"
    );
    // Nothing else is reported: the header counts exactly these four.
    assert!(all.contains("configuration has 4 problem(s)"), "{out}");
}

#[tokio::test]
async fn check_config_names_each_problem_of_a_smart_registration() {
    let env = TestEnv::new(Backend::Sqlite).await.unwrap();
    std::fs::write(
        env.config_dir.join("partners.toml"),
        r#"
[[partners]]
id = "hospital"
name = "A hospital"
kind = "ehr"
[partners.smart]
issuers = ["https://ehr.example.com/fhir?tenant=1"]
client_id = "app"
client_type = "confidential-symmetric"
signing_alg = "HS256"
scopes = ["openid", "patient/Patient.sr"]
app_url = "not a url"

[[partners]]
id = "lms"
name = "An LMS"
kind = "lms"
[partners.smart]
issuers = ["https://ehr.example.com/fhir?tenant=1"]
client_id = "x"
client_type = "public"
scopes = ["openid"]
app_url = "https://app.example.com/"
"#,
    )
    .unwrap();
    let out = env.run(&["check-config"]).await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    for expected in [
        "partners[id = \"hospital\"].smart.issuers[0]: \"https://ehr.example.com/fhir?tenant=1\" must not have a query string",
        "partners[id = \"hospital\"].smart.client_secret: a confidential-symmetric client needs client_secret",
        "partners[id = \"hospital\"].smart.signing_alg: must be RS384 or ES384",
        "partners[id = \"hospital\"].smart.scopes[1]: \"patient/Patient.sr\": permissions must be",
        "partners[id = \"hospital\"].smart.app_url:",
        "partners[id = \"lms\"].smart.(section): a SMART registration belongs to a partner of kind \"ehr\"",
        "partners[id = \"lms\"].smart.issuers: issuer \"https://ehr.example.com/fhir?tenant=1\" is also registered by partner \"hospital\"",
    ] {
        assert!(out.stderr.contains(expected), "missing {expected:?}\n{out}");
    }
    assert!(out.stderr.contains("partners.toml: "), "{out}");
}

/// The parties and terms a statement is sent with are checked: each problem named with
/// its file and field.
#[tokio::test]
async fn check_config_names_problems_of_parties_and_payment_terms() {
    let env = TestEnv::new(Backend::Sqlite).await.unwrap();
    let edit = |file: &str, from: &str, to: &str| {
        let path = env.config_dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    };
    edit(
        "partners.toml",
        "locale = \"pl-PL\"",
        "locale = \"polish please\"",
    );
    edit(
        "partners.toml",
        "payment_details = \"ACH to the account on file ending 4821\"",
        "payment_details = \"Account 0012345678901\"",
    );
    edit(
        "partners.toml",
        "legal_name = \"Lernwerk Bildungstechnologie GmbH\"",
        "legal_name = \" \"",
    );
    edit(
        "gateway.toml",
        "company_logo = \"logo.png\"",
        "company_logo = \"missing.svg\"",
    );
    edit(
        "agreements.toml",
        "tax = { name = \"VAT\", rate = \"23%\" }",
        "tax = { name = \"VAT\" }",
    );
    let out = env.run(&["check-config"]).await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    for expected in [
        "billing.locale: \"polish please\" is not a BCP 47 locale tag",
        "billing.payment_details: looks like a full account number",
        "billing.legal_name: must not be empty",
        "statements.company_logo: cannot read",
        "tax.rate: is required unless reverse_charge = true",
    ] {
        assert!(out.stderr.contains(expected), "{expected}\n{out}");
    }
    assert!(
        out.stderr.contains("configuration has 5 problem(s)"),
        "{out}"
    );
}

#[tokio::test]
async fn check_config_refuses_a_sandbox_partner_with_an_agreement() {
    let env = TestEnv::new(Backend::Sqlite).await.unwrap();
    let path = env.config_dir.join("partners.toml");
    let partners = std::fs::read_to_string(&path).unwrap().replacen(
        "id = \"canvas-sandbox\"\n",
        "id = \"canvas-sandbox\"\nsandbox = true\n",
        1,
    );
    std::fs::write(&path, partners).unwrap();
    let out = env.run(&["check-config"]).await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    let agreements = env.config_dir.join("agreements.toml").display().to_string();
    let line = out
        .stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("{agreements}: agreements[")))
        .unwrap_or_else(|| panic!("no agreements problem\n{out}"));
    assert!(line.contains("].partner: "), "{line}");
    assert!(
        line.contains("\"canvas-sandbox\" is a sandbox partner"),
        "{line}"
    );
    assert!(line.contains(".sandbox = false"), "{line}");
    assert!(
        out.stderr.contains("configuration has 1 problem(s)"),
        "{out}"
    );
}

#[tokio::test]
async fn check_config_refuses_allow_private_networks_and_names_what_replaces_it() {
    let env = TestEnv::new(Backend::Sqlite).await.unwrap();
    let out = env
        .run_with_env(
            &["check-config"],
            &[("GATEWAY__OUTBOUND__ALLOW_PRIVATE_NETWORKS", "true")],
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains(
            "environment variable GATEWAY__OUTBOUND__ALLOW_PRIVATE_NETWORKS: outbound.allow_private_networks: is no longer supported"
        ),
        "{out}"
    );
    assert!(
        out.stderr.contains("private_networks = [\"10.20.0.0/16\"]"),
        "{out}"
    );

    // `false` changes nothing: a note says to remove it.
    let out = env
        .run_with_env(
            &["check-config"],
            &[("GATEWAY__OUTBOUND__ALLOW_PRIVATE_NETWORKS", "false")],
        )
        .await;
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.starts_with("configuration OK"), "{out}");
    assert!(
        out.stderr
            .contains("outbound.allow_private_networks is deprecated and has no effect"),
        "{out}"
    );

    // The networks themselves are checked, with the field named.
    let out = env
        .run_with_env(
            &["check-config"],
            &[(
                "GATEWAY__OUTBOUND__PRIVATE_NETWORKS",
                "127.0.0.1, 0.0.0.0/0",
            )],
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(out.stderr.contains("outbound.private_networks"), "{out}");
    assert!(out.stderr.contains("wider than /8"), "{out}");
}

// Issue 17, L3: an app URL is where a launch or sign-in sends the browser with its one-time
// code; `javascript:`, `data:`, `ftp:` or plain http to a real host are refused, each named.
#[tokio::test]
async fn check_config_refuses_app_urls_a_browser_must_not_be_sent_to() {
    let env = TestEnv::new(Backend::Sqlite).await.unwrap();
    std::fs::write(
        env.config_dir.join("partners.toml"),
        r#"
[[partners]]
id = "hospital"
name = "A hospital"
kind = "ehr"
[partners.smart]
issuers = ["https://ehr.example.com/fhir"]
client_id = "app"
client_type = "public"
scopes = ["openid"]
app_url = "javascript:alert(document.cookie)"

[[partners]]
id = "school"
name = "A school"
kind = "lms"
[partners.lti]
app_url = "data:text/html,<script>alert(1)</script>"

[[partners]]
id = "org"
name = "An organisation"
kind = "idp"
[[partners.sso_connections]]
id = "org-idp"
protocol = "oidc"
issuer = "https://idp.example.com"
client_id = "gw"
client_secret = "s"
app_url = "ftp://files.example.com/sso"

[[partners]]
id = "dev"
name = "Development"
kind = "ehr"
[partners.smart]
issuers = ["https://ehr.example.org/fhir"]
client_id = "app"
client_type = "public"
scopes = ["openid"]
app_url = "http://app.example.com/launch"
"#,
    )
    .unwrap();
    let out = env.run(&["check-config"]).await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    for expected in [
        "partners[id = \"hospital\"].smart.app_url: \"javascript:alert(document.cookie)\" must be an https URL",
        "partners[id = \"school\"].lti.app_url: \"data:text/html,<script>alert(1)</script>\" must be an https URL",
        ".app_url: \"ftp://files.example.com/sso\" must be an https URL",
        "partners[id = \"dev\"].smart.app_url: \"http://app.example.com/launch\" must be https (plain http only for a loopback host in development)",
    ] {
        assert!(out.stderr.contains(expected), "missing {expected:?}\n{out}");
    }
}

#[tokio::test]
async fn check_config_refuses_a_migration_consumer_that_is_not_declared() {
    let env = TestEnv::new(Backend::Sqlite).await.unwrap();
    std::fs::write(
        env.config_dir.join("partners.toml"),
        r#"
[[partners]]
id = "school"
name = "A school"
kind = "lms"
[partners.lti]
app_url = "https://app.example.com/lti"
[[partners.lti.platforms]]
issuer = "https://moodle.school.example"
client_id = "tool"
deployment_ids = ["1"]
auth_url = "https://moodle.school.example/mod/lti/auth.php"
token_url = "https://moodle.school.example/mod/lti/token.php"
jwks_url = "https://moodle.school.example/mod/lti/certs.php"
lti11_consumer_key = "school-1p1"
[[partners.lti.lti11]]
consumer_key = "other-1p1"
shared_secret = "a-shared-secret-of-16+"
"#,
    )
    .unwrap();
    let out = env.run(&["check-config"]).await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    let expected = "partners[id = \"school\"].lti.platforms[0].lti11_consumer_key: \"school-1p1\" is not one of this partner's [[partners.lti.lti11]] consumers";
    assert!(out.stderr.contains(expected), "missing {expected:?}\n{out}");
}
