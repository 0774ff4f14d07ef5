//! SSO over OIDC against the mock IdP (`partner_sim::idp`), each on SQLite and
//! PostgreSQL: home-realm discovery, the redirect, the callback, the launch handed to the
//! app, and every rejection the relying party owes.

use partner_gateway::apikeys::Role;
use partner_sim::idp::{ENTRA_TENANT, IdTokenFault, IdpUser, IdpVendor, MockIdp};
use serde_json::Value;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, urlencode};

const PARTNER: &str = "acme-health";
const CONNECTION: &str = "acme-idp";
const APP_URL: &str = "https://app.example.test/sso";
const SECRET: &str = "s3cret+/=with:odd&chars";

struct Env {
    app: TestApp,
    idp: MockIdp,
    browser: reqwest::Client,
    app_key: String,
    gateway: String,
}

fn ada() -> IdpUser {
    IdpUser {
        sub: "00u1ada".into(),
        email: "ada@acme.example".into(),
        name: "Ada Lovelace".into(),
        groups: vec!["clinicians".into(), "admins".into()],
    }
}

/// What the browser ends on after the callback.
enum Outcome {
    App(String),
    Page(u16, String),
}

impl Env {
    async fn start(backend: Backend, vendor: IdpVendor, extra: &str) -> Option<Env> {
        Self::start_with(backend, vendor, extra, "").await
    }

    /// `extra` goes into the connection's table, `sections` before the partners.
    async fn start_with(
        backend: Backend,
        vendor: IdpVendor,
        extra: &str,
        sections: &str,
    ) -> Option<Env> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = format!("http://{}", listener.local_addr().unwrap());
        let redirect = format!("{gateway}/sso/oidc/callback");
        let idp = MockIdp::start(vendor, "gateway-client", SECRET, &redirect, ada())
            .await
            .unwrap();
        let config = format!(
            r#"[jobs]
enabled = false
[outbound]
allow_http = true
private_networks = ["127.0.0.1"]
[http]
public_url = "{gateway}"
{sections}
[[partners]]
id = "{PARTNER}"
name = "Acme Health"
kind = "idp"
[[partners.sso_connections]]
id = "{CONNECTION}"
protocol = "oidc"
issuer = "{issuer}"
client_id = "gateway-client"
{secret_line}domains = ["acme.example"]
app_url = "{APP_URL}"
{extra}
"#,
            issuer = idp.issuer(),
            secret_line = if extra.contains("private_key_jwt") {
                String::new()
            } else {
                format!("client_secret = \"{SECRET}\"\n")
            },
        );
        let app = TestApp::spawn_on_listener(backend, listener, &config).await?;
        let app_key = app.key(Role::App, None).await;
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .unwrap();
        Some(Env {
            app,
            idp,
            browser,
            app_key,
            gateway,
        })
    }

    async fn get(&self, url: &str) -> reqwest::Response {
        self.browser.get(url).send().await.unwrap()
    }

    /// `/sso/start?...` -> the IdP's authorize URL (checked to be the IdP's).
    async fn start_url(&self, query: &str) -> String {
        let r = self
            .get(&format!("{}/sso/start?{query}", self.gateway))
            .await;
        assert_eq!(r.status(), 302, "{:?}", r.text().await);
        r.headers()["location"].to_str().unwrap().to_owned()
    }

    /// Follow the authorize redirect at the IdP; returns the callback URL it sends to.
    async fn at_idp(&self, authorize: &str) -> String {
        let r = self.get(authorize).await;
        assert_eq!(r.status(), 302, "{:?}", r.text().await);
        r.headers()["location"].to_str().unwrap().to_owned()
    }

    async fn callback(&self, url: &str) -> Outcome {
        let r = self.get(url).await;
        let status = r.status().as_u16();
        if status == 302 {
            let loc = r.headers()["location"].to_str().unwrap().to_owned();
            let u = url::Url::parse(&loc).unwrap();
            assert!(loc.starts_with(APP_URL), "{loc}");
            let code = u
                .query_pairs()
                .find(|(k, _)| k == "code")
                .unwrap()
                .1
                .into_owned();
            return Outcome::App(code);
        }
        Outcome::Page(status, r.text().await.unwrap())
    }

    async fn login(&self) -> Outcome {
        let authorize = self
            .start_url(&format!("email={}", urlencode("Ada@ACME.example")))
            .await;
        let cb = self.at_idp(&authorize).await;
        self.callback(&cb).await
    }

    async fn exchange(&self, code: &str) -> (u16, Value) {
        self.app.exchange(&self.app_key, code).await
    }

    async fn refused(&self, fault: IdTokenFault) -> (u16, String) {
        self.idp.inject(fault);
        match self.login().await {
            Outcome::Page(s, b) => (s, b),
            Outcome::App(c) => panic!("a bad id_token was accepted (code {c})"),
        }
    }

    async fn sso_logins(&self) -> i64 {
        self.app.usage_count("sso.login").await
    }
}

both_backends! {
    async fn an_oidc_login_hands_the_user_to_the_app(backend) {
        let Some(env) = Env::start(backend, IdpVendor::Okta, "").await else { return };
        let authorize = env.start_url(&format!("email={}", urlencode("ada@acme.example"))).await;
        // The authorization request carries what OIDC and PKCE require.
        let u = url::Url::parse(&authorize).unwrap();
        let q: std::collections::HashMap<String, String> = u.query_pairs().into_owned().collect();
        assert!(authorize.starts_with(&env.idp.issuer()));
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "gateway-client");
        assert_eq!(q["redirect_uri"], format!("{}/sso/oidc/callback", env.gateway));
        assert_eq!(q["code_challenge_method"], "S256");
        assert!(q["scope"].split(' ').any(|s| s == "openid"));
        assert!(q["state"].len() >= 22 && q["nonce"].len() >= 22);
        let cb = env.at_idp(&authorize).await;
        let Outcome::App(code) = env.callback(&cb).await else { panic!("no app redirect") };
        let (status, launch) = env.exchange(&code).await;
        assert_eq!(status, 200, "{launch}");
        assert_eq!(launch["kind"], "sso");
        assert_eq!(launch["partner"], PARTNER);
        assert_eq!(launch["user"]["id"], "00u1ada");
        assert_eq!(launch["user"]["name"], "Ada Lovelace");
        assert_eq!(launch["email"], "ada@acme.example");
        assert_eq!(launch["groups"], serde_json::json!(["clinicians", "admins"]));
        assert_eq!(launch["connection"], CONNECTION);
        assert_eq!(launch["organisation"], "Acme Health");
        assert_eq!(env.sso_logins().await, 1);
        // The code works once.
        assert_ne!(env.exchange(&code).await.0, 200);
        // The callback works once: replaying it is refused.
        match env.callback(&cb).await {
            Outcome::Page(400, body) => assert!(body.contains("already used"), "{body}"),
            _ => panic!("a replayed callback was accepted"),
        }
        assert_eq!(env.sso_logins().await, 1);
    }

    async fn entra_and_google_claims_reach_the_app(backend) {
        let Some(env) = Env::start(backend, IdpVendor::Entra, "").await else { return };
        assert!(env.idp.issuer().ends_with(&format!("/{ENTRA_TENANT}/v2.0")));
        let Outcome::App(code) = env.login().await else { panic!("no app redirect") };
        let (_, launch) = env.exchange(&code).await;
        assert_eq!(launch["claims"]["tid"], ENTRA_TENANT);
        let Some(env) = Env::start(backend, IdpVendor::Google, "userinfo = true").await else { return };
        let Outcome::App(code) = env.login().await else { panic!("no app redirect") };
        let (_, launch) = env.exchange(&code).await;
        assert_eq!(launch["claims"]["hd"], "acme.example");
        assert_eq!(launch["user"]["id"], "00u1ada");
    }

    async fn admins_see_each_connection_with_its_redirect_uri(backend) {
        let Some(env) = Env::start(backend, IdpVendor::Generic, "").await else { return };
        let admin = env.app.admin().await;
        let r = env.app.get(&admin, "/v1/sso/connections").await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let c = &body["data"][0];
        assert_eq!(c["id"], CONNECTION);
        assert_eq!(c["redirect_uri"], format!("{}/sso/oidc/callback", env.gateway));
        assert_eq!(c["start_url"], format!("{}/sso/start?organisation={CONNECTION}", env.gateway));
        assert!(c.get("client_secret").is_none());
        assert_eq!(env.app.get(&env.app_key, "/v1/sso/connections").await.status(), 403);
    }

    async fn home_realm_discovery_picks_by_domain_or_organisation(backend) {
        let Some(env) = Env::start(backend, IdpVendor::Generic, "").await else { return };
        // Neither: a page asking for the email.
        let r = env.get(&format!("{}/sso/start", env.gateway)).await;
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("type=\"email\""));
        // An unknown domain: the same page, saying so.
        let r = env.get(&format!("{}/sso/start?email=bob%40elsewhere.example", env.gateway)).await;
        assert!(r.text().await.unwrap().contains("elsewhere.example"));
        // By connection id and by partner id.
        for org in [CONNECTION, PARTNER] {
            let to = env.start_url(&format!("organisation={org}")).await;
            assert!(to.starts_with(&env.idp.issuer()), "{to}");
        }
        let r = env.get(&format!("{}/sso/start?organisation=nobody", env.gateway)).await;
        assert_eq!(r.status(), 404);
    }

    async fn state_problems_are_refused_with_their_own_page(backend) {
        let Some(env) = Env::start(backend, IdpVendor::Generic, "").await else { return };
        let authorize = env.start_url("organisation=acme-idp").await;
        let cb = env.at_idp(&authorize).await;
        let u = url::Url::parse(&cb).unwrap();
        let code = u.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
        let base = format!("{}/sso/oidc/callback", env.gateway);
        // Missing state.
        let Outcome::Page(400, body) = env.callback(&format!("{base}?code={code}")).await else { panic!() };
        assert!(body.contains("no state"), "{body}");
        // A state the gateway never issued.
        let Outcome::Page(400, body) = env.callback(&format!("{base}?code={code}&state=forged")).await else { panic!() };
        assert!(body.contains("not one the gateway started"), "{body}");
        // An error from the IdP is shown.
        let authorize = env.start_url("organisation=acme-idp").await;
        let st = url::Url::parse(&authorize).unwrap().query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
        let Outcome::Page(400, body) = env.callback(&format!("{base}?error=access_denied&error_description=no&state={st}")).await else { panic!() };
        assert!(body.contains("access_denied"), "{body}");
        // Login CSRF: a valid callback finished in another browser (no cookie from the
        // start, or another browser's cookie) is refused.
        for cookie in [None, Some("pgw_sso=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")] {
            let authorize = env.start_url("organisation=acme-idp").await;
            let cb = env.at_idp(&authorize).await;
            let other = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
            let mut req = other.get(&cb);
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 400);
            let body = r.text().await.unwrap();
            assert!(body.contains("started in another browser"), "{body}");
        }
        assert_eq!(env.sso_logins().await, 0);
    }

    // Issue 17: a wrong-browser callback used to spend the rightful browser's sign-in,
    // which then read "already used". Refused without spending it now.
    async fn a_callback_from_another_browser_leaves_the_sign_in_to_the_right_one(backend) {
        let Some(env) = Env::start(backend, IdpVendor::Okta, "").await else { return };
        let authorize = env.start_url("organisation=acme-idp").await;
        let cb = env.at_idp(&authorize).await;
        let other = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        for cookie in [None, Some("pgw_sso=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")] {
            let mut req = other.get(&cb);
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 400);
            assert!(r.text().await.unwrap().contains("started in another browser"));
        }
        let Outcome::App(code) = env.callback(&cb).await else { panic!("the right browser could not finish") };
        assert_eq!(env.exchange(&code).await.0, 200);
        assert_eq!(env.sso_logins().await, 1);
    }

    async fn the_sign_in_pages_cannot_be_framed(backend) {
        let Some(env) = Env::start(backend, IdpVendor::Generic, "").await else { return };
        for query in ["", "?organisation=acme-idp", "?organisation=nobody"] {
            let r = env.get(&format!("{}/sso/start{query}", env.gateway)).await;
            assert_eq!(r.headers()["x-frame-options"], "DENY", "{query}");
            let csp = r.headers()["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("frame-ancestors 'none'"), "{query}: {csp}");
            assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{query}");
        }
    }

    // L3: a runtime connection's app_url is where the sign-in sends the browser with the
    // code: only https (http for loopback development).
    async fn a_runtime_connection_with_an_app_url_that_is_not_https_is_refused(backend) {
        let Some(env) = Env::start(backend, IdpVendor::Generic, "").await else { return };
        let admin = env.app.admin().await;
        for bad in ["javascript:alert(document.cookie)", "data:text/html,<script>alert(1)</script>", "ftp://files.example/x", "http://app.example.test/sso"] {
            let r = env.app.client.post(env.app.url("/v1/sso/connections")).bearer_auth(&admin)
                .json(&serde_json::json!({
                    "partner": PARTNER, "id": "runtime-x", "protocol": "oidc", "issuer": env.idp.issuer(),
                    "client_id": "gateway-client", "client_secret": SECRET, "domains": ["x.example"], "app_url": bad,
                }))
                .send().await.unwrap();
            assert_eq!(r.status(), 400, "{bad}");
            let body: Value = r.json().await.unwrap();
            assert!(body.to_string().contains("app_url"), "{bad}: {body}");
        }
        let r = env.app.get(&admin, "/v1/sso/connections").await;
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["data"].as_array().unwrap().len(), 1, "nothing was saved");
    }

    async fn bad_id_tokens_are_refused(backend) {
        let Some(env) = Env::start(backend, IdpVendor::Generic, "").await else { return };
        for (fault, words) in [
            (IdTokenFault::AlgNone, "no signature"),
            (IdTokenFault::WrongAudience, "aud"),
            (IdTokenFault::Expired, "xpire"),
            (IdTokenFault::UnknownKid, "key"),
            (IdTokenFault::BadSignature, "ignature"),
            (IdTokenFault::WrongNonce, "once"),
            (IdTokenFault::WrongIssuer, "ssuer"),
        ] {
            let (status, body) = env.refused(fault.clone()).await;
            assert_eq!(status, 502, "{fault:?}: {body}");
            assert!(body.contains("was refused"), "{fault:?}: {body}");
            assert!(body.to_lowercase().contains(&words.to_lowercase()), "{fault:?} should name {words:?}: {body}");
        }
        assert_eq!(env.sso_logins().await, 0);
        // And a good one still works after all that.
        assert!(matches!(env.login().await, Outcome::App(_)));
    }

    async fn a_private_key_jwt_client_signs_in(backend) {
        let Some(env) = Env::start_with(backend, IdpVendor::Okta, "client_auth = \"private_key_jwt\"\nclient_assertion_alg = \"RS384\"", "").await else { return };
        env.idp.require_private_key_jwt(&format!("{}/.well-known/jwks.json", env.gateway));
        let Outcome::App(code) = env.login().await else { panic!("no app redirect") };
        assert_eq!(env.exchange(&code).await.0, 200);
    }

    // An IdP rolling its keys: the new kid is unknown to the cached JWKS, so the gateway
    // fetches the keys again (at most every `sso.jwks_min_refetch_secs`).
    async fn a_key_rotation_at_the_idp_is_picked_up(backend) {
        let Some(env) = Env::start(backend, IdpVendor::Okta, "").await else { return };
        assert!(matches!(env.login().await, Outcome::App(_)));
        env.idp.rotate_key().await.unwrap();
        // Within the refetch interval (10 s by default, just fetched): refused, no fetch.
        match env.login().await {
            Outcome::Page(502, body) => assert!(body.contains("No matching key"), "{body}"),
            _ => panic!("an id_token with a kid fetched too recently was accepted"),
        }
        let Some(env) = Env::start_with(backend, IdpVendor::Okta, "", "[sso]\njwks_min_refetch_secs = 1\n").await else { return };
        assert!(matches!(env.login().await, Outcome::App(_)));
        env.idp.rotate_key().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert!(matches!(env.login().await, Outcome::App(_)), "the rotated key was not picked up");
        assert_eq!(env.sso_logins().await, 2);
    }
}

both_backends! {
    // Two IdPs of one partner each call a different person `1`: the ledger counts two
    // active users (it qualifies the subject with the connection), the app still sees `1`.
    async fn active_users_counts_two_people_with_one_subject_at_two_idps_once_each(backend) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = format!("http://{}", listener.local_addr().unwrap());
        let redirect = format!("{gateway}/sso/oidc/callback");
        let person = |name: &str, email: &str| IdpUser { sub: "1".into(), name: name.into(), email: email.into(), groups: Vec::new() };
        let okta = MockIdp::start(IdpVendor::Okta, "gateway-client", SECRET, &redirect, person("Ada Lovelace", "ada@acme.example")).await.unwrap();
        let entra = MockIdp::start(IdpVendor::Entra, "gateway-client", SECRET, &redirect, person("Bob Babbage", "bob@clinic.example")).await.unwrap();
        let connection = |id: &str, issuer: String, domain: &str| format!(
            "[[partners.sso_connections]]\nid = \"{id}\"\nprotocol = \"oidc\"\nissuer = \"{issuer}\"\nclient_id = \"gateway-client\"\nclient_secret = \"{SECRET}\"\ndomains = [\"{domain}\"]\napp_url = \"{APP_URL}\"\n"
        );
        let config = format!(
            "[jobs]\nenabled = false\n[outbound]\nallow_http = true\nprivate_networks = [\"127.0.0.1\"]\n[http]\npublic_url = \"{gateway}\"\n[[partners]]\nid = \"{PARTNER}\"\nname = \"Acme Health\"\nkind = \"idp\"\n{}{}",
            connection(CONNECTION, okta.issuer(), "acme.example"),
            connection("acme-clinic", entra.issuer(), "clinic.example"),
        );
        let Some(app) = TestApp::spawn_on_listener(backend, listener, &config).await else { return };
        let app_key = app.key(Role::App, None).await;
        let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).cookie_store(true).build().unwrap();
        let env = Env { app, idp: okta, browser, app_key, gateway };
        let sign_in = |email: &'static str| {
            let env = &env;
            async move {
                let authorize = env.start_url(&format!("email={}", urlencode(email))).await;
                let cb = env.at_idp(&authorize).await;
                let Outcome::App(code) = env.callback(&cb).await else { panic!("{email} was refused") };
                let (status, launch) = env.exchange(&code).await;
                assert_eq!(status, 200, "{launch}");
                launch
            }
        };
        let ada = sign_in("ada@acme.example").await;
        let bob = sign_in("bob@clinic.example").await;
        assert_eq!((&ada["user"]["id"], &bob["user"]["id"]), (&Value::from("1"), &Value::from("1")));
        assert_eq!((&ada["connection"], &bob["connection"]), (&Value::from(CONNECTION), &Value::from("acme-clinic")));
        assert_eq!(ada["subject"], format!("{CONNECTION}:1"));
        assert_eq!(bob["subject"], "acme-clinic:1");
        let finance = env.app.key(Role::Finance, None).await;
        let from = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let active = || {
            let (env, finance, from) = (&env, &finance, &from);
            async move {
                let (status, body) = env.app.query(finance, &[("meter", "active_users"), ("partner", PARTNER), ("from", from)]).await;
                assert_eq!(status, 200, "{body}");
                body["data"][0]["value"].as_i64().unwrap()
            }
        };
        assert_eq!(active().await, 2);
        // Ada again: still two people.
        sign_in("ada@acme.example").await;
        assert_eq!(env.sso_logins().await, 3);
        assert_eq!(active().await, 2);
        // Erasing Ada (by email) takes her sign-ins and her ledger rows, never Bob's: he is
        // `1` too, at his own IdP.
        let admin = env.app.admin().await;
        let (status, erased) = crate::statements::post(&env.app, &admin, "/v1/privacy/erasures", serde_json::json!({"partner": PARTNER, "email": "ada@acme.example"})).await;
        assert_eq!(status, 200, "{erased}");
        assert_eq!(erased["erased"]["launches"], 2, "{erased}");
        assert_eq!(erased["erased"]["ledger_events"], 2, "{erased}");
        assert_eq!(erased["erased"]["webhook_messages"], 2, "{erased}");
        let s = &env.app.state.subjects;
        let ada_ids = vec!["ada@acme.example".to_owned(), "Ada Lovelace".to_owned(), s.pseudonym(PARTNER, &format!("{CONNECTION}:1"))];
        let left = crate::privacy::traces(env.app.db(), &ada_ids).await;
        assert!(left.is_empty(), "{left:?}");
        let bob_ids = vec!["bob@clinic.example".to_owned(), "Bob Babbage".to_owned(), s.pseudonym(PARTNER, "acme-clinic:1")];
        let bob_left = crate::privacy::traces(env.app.db(), &bob_ids).await;
        for id in &bob_ids {
            assert!(bob_left.iter().any(|(_, i)| i == id), "{id}: {bob_left:?}");
        }
        assert_eq!(active().await, 2);
        drop(entra);
    }

    // The IdP signed a NUL into the user's `sub` and `name`: the sign-in works, the NUL
    // becomes U+FFFD (PostgreSQL refused the launch with a 500 before).
    async fn an_id_token_with_nul_in_its_claims_signs_in_with_the_replacement_character(backend) {
        let Some(env) = Env::start(backend, IdpVendor::Okta, "").await else { return };
        env.idp.set_user(IdpUser { sub: "00u1\u{0}ada".into(), name: "Ada\u{0} Lovelace".into(), ..ada() });
        let Outcome::App(code) = env.login().await else { panic!("no app redirect") };
        let (status, launch) = env.exchange(&code).await;
        assert_eq!(status, 200, "{launch}");
        assert_eq!(launch["user"]["id"], "00u1\u{FFFD}ada");
        assert_eq!(launch["user"]["name"], "Ada\u{FFFD} Lovelace");
        assert_eq!(env.sso_logins().await, 1);
    }
}
