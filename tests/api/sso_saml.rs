//! SSO over SAML 2.0 against the mock IdP (`partner_sim::saml_idp`), each on
//! SQLite and PostgreSQL: SP metadata, the SP-initiated redirect, the POST to the ACS,
//! IdP-initiated responses (with and without `InResponseTo=""`), encrypted assertions,
//! SP key rollovers, the launch handed to the app and how the ledger counts its person,
//! and every rejection the service provider owes (unsigned, wrapped, tampered, wrong
//! audience, destination or request, expired, replayed).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use partner_gateway::apikeys::Role;
use partner_gateway::sso::store::{Rollover, RolloverProblem};
use partner_sim::saml_idp::{MockSamlIdp, ResponseSpec, SamlIdpUser, SamlIdpVendor, Signing};
use serde_json::Value;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, urlencode};

const PARTNER: &str = "state-uni";
const CONNECTION: &str = "state-uni-saml";
/// A second connection of the same partner (`Env::start`'s `extra` can add it: the text
/// IDP_METADATA_URL there becomes the mock IdP's metadata URL).
const STAFF: &str = "state-uni-staff";
const APP_URL: &str = "https://app.example.test/sso";

struct Env {
    app: TestApp,
    idp: MockSamlIdp,
    browser: reqwest::Client,
    app_key: String,
    gateway: String,
}

fn grace() -> SamlIdpUser {
    SamlIdpUser {
        persistent_id: "AAdzZWNyZXQxxH8kXNwz0Xm7Ru2Zt5w=".into(),
        principal_name: "ghopper@uni.example".into(),
        email: "grace.hopper@uni.example".into(),
        name: "Grace Hopper".into(),
        affiliations: vec!["faculty@uni.example".into(), "member@uni.example".into()],
        groups: vec!["cs-faculty".into(), "course-admins".into()],
    }
}

/// What the browser ends on after posting to the ACS.
#[derive(Debug)]
enum Outcome {
    App(String),
    Page(u16, String),
}

fn form_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&quot;", "\"")
            .replace("&amp;", "&"),
    )
}

impl Env {
    async fn start(backend: Backend, vendor: SamlIdpVendor, extra: &str) -> Option<Env> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = format!("http://{}", listener.local_addr().unwrap());
        let idp = MockSamlIdp::start(vendor, grace()).await.unwrap();
        let config = format!(
            r#"[jobs]
enabled = false
[outbound]
allow_http = true
private_networks = ["127.0.0.1"]
[http]
public_url = "{gateway}"
[[partners]]
id = "{PARTNER}"
name = "State University"
kind = "idp"
[[partners.sso_connections]]
id = "{CONNECTION}"
protocol = "saml"
idp_metadata_url = "{metadata}"
domains = ["uni.example"]
app_url = "{APP_URL}"
{extra}
"#,
            metadata = idp.metadata_url(),
            extra = extra.replace("IDP_METADATA_URL", &idp.metadata_url()),
        );
        let app = TestApp::spawn_on_listener(backend, listener, &config).await?;
        let app_key = app.key(Role::App, None).await;
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .unwrap();
        let env = Env {
            app,
            idp,
            browser,
            app_key,
            gateway,
        };
        // What the IdP administrator does: load the SP metadata.
        let md = env.sp_metadata().await;
        env.idp.register_sp(&md).unwrap();
        Some(env)
    }

    async fn sp_metadata(&self) -> String {
        let r = self
            .browser
            .get(format!("{}/sso/saml/{CONNECTION}/metadata", self.gateway))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/samlmetadata+xml");
        r.text().await.unwrap()
    }

    fn acs(&self) -> String {
        self.acs_of(CONNECTION)
    }

    fn acs_of(&self, connection: &str) -> String {
        format!("{}/sso/saml/{connection}/acs", self.gateway)
    }

    fn entity_id(&self) -> String {
        self.entity_id_of(CONNECTION)
    }

    fn entity_id_of(&self, connection: &str) -> String {
        format!("{}/sso/saml/{connection}/metadata", self.gateway)
    }

    async fn sp_metadata_of(&self, connection: &str) -> String {
        let r = self
            .browser
            .get(format!("{}/sso/saml/{connection}/metadata", self.gateway))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// A whole SP-initiated sign-in at `connection` (started by its organisation link).
    async fn login_at(&self, connection: &str) -> Outcome {
        let r = self
            .browser
            .get(format!(
                "{}/sso/start?organisation={connection}",
                self.gateway
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{:?}", r.text().await);
        let url = r.headers()["location"].to_str().unwrap().to_owned();
        let (response, relay) = self.at_idp_for(&url, connection).await;
        self.post_to(connection, &response, relay.as_deref()).await
    }

    /// Follow an IdP page (the unsolicited endpoint) to its auto-posting form and post it.
    async fn through_idp_page(&self, url: &str, connection: &str) -> Outcome {
        let (response, relay) = self.at_idp_for(url, connection).await;
        self.post_to(connection, &response, relay.as_deref()).await
    }

    /// The active_users meter for the partner over the last day (usage API).
    async fn active_users(&self) -> i64 {
        let key = self.app.key(Role::Finance, None).await;
        let from = (chrono::Utc::now() - chrono::Duration::days(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let (status, body) = self
            .app
            .query(
                &key,
                &[
                    ("meter", "active_users"),
                    ("partner", PARTNER),
                    ("from", &from),
                ],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"][0]["value"].as_i64().unwrap()
    }

    /// `/sso/start` -> the IdP's SSO URL with the AuthnRequest.
    async fn start_url(&self) -> String {
        let r = self
            .browser
            .get(format!(
                "{}/sso/start?email={}",
                self.gateway,
                urlencode("grace.hopper@UNI.example")
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{:?}", r.text().await);
        r.headers()["location"].to_str().unwrap().to_owned()
    }

    /// Follow the redirect to the IdP: the auto-posting form's SAMLResponse and RelayState.
    async fn at_idp(&self, url: &str) -> (String, Option<String>) {
        let r = self.browser.get(url).send().await.unwrap();
        let status = r.status();
        let html = r.text().await.unwrap();
        assert_eq!(status, 200, "{html}");
        assert!(
            html.contains(&format!("action=\"{}\"", self.acs())),
            "{html}"
        );
        (
            form_value(&html, "SAMLResponse").unwrap(),
            form_value(&html, "RelayState"),
        )
    }

    /// The IdP's form for another connection's ACS.
    async fn at_idp_for(&self, url: &str, connection: &str) -> (String, Option<String>) {
        let r = self.browser.get(url).send().await.unwrap();
        let html = r.text().await.unwrap();
        assert!(
            html.contains(&format!("/sso/saml/{connection}/acs")),
            "{html}"
        );
        (
            form_value(&html, "SAMLResponse").unwrap(),
            form_value(&html, "RelayState"),
        )
    }

    /// Start a sign-in and stop at the IdP: (AuthnRequest ID, RelayState).
    async fn begin(&self) -> (String, String) {
        let url = self.start_url().await;
        let (_, relay) = self.at_idp(&url).await;
        let id = self.idp.requests().last().unwrap().clone();
        (id, relay.unwrap())
    }

    async fn post(&self, response: &str, relay: Option<&str>) -> Outcome {
        self.post_to(CONNECTION, response, relay).await
    }

    async fn post_to(&self, connection: &str, response: &str, relay: Option<&str>) -> Outcome {
        let mut form = vec![("SAMLResponse", response.to_owned())];
        if let Some(r) = relay {
            form.push(("RelayState", r.to_owned()));
        }
        let r = self
            .browser
            .post(self.acs_of(connection))
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status == 302 || status == 303 {
            let loc = r.headers()["location"].to_str().unwrap().to_owned();
            assert!(loc.starts_with(APP_URL), "{loc}");
            let u = url::Url::parse(&loc).unwrap();
            let code = u.query_pairs().find(|(k, _)| k == "code").unwrap().1;
            return Outcome::App(code.into_owned());
        }
        Outcome::Page(status, r.text().await.unwrap())
    }

    async fn login(&self) -> Outcome {
        let url = self.start_url().await;
        let (response, relay) = self.at_idp(&url).await;
        self.post(&response, relay.as_deref()).await
    }

    async fn exchange(&self, code: &str) -> (u16, Value) {
        self.app.exchange(&self.app_key, code).await
    }

    /// A response answering a fresh request, built from `change`d spec, posted with the
    /// request's RelayState: the page the gateway answers with (it must refuse).
    async fn refused(&self, change: impl FnOnce(&mut ResponseSpec)) -> String {
        let (id, relay) = self.begin().await;
        let mut spec = self.idp.spec(Some(&id)).unwrap();
        change(&mut spec);
        let response = self.idp.response(&spec).unwrap();
        self.refused_raw(&response, Some(&relay)).await
    }

    async fn refused_raw(&self, response: &str, relay: Option<&str>) -> String {
        match self.post(response, relay).await {
            Outcome::Page(s, body) => {
                assert!((400..500).contains(&s), "{s} {body}");
                body
            }
            Outcome::App(c) => panic!("a bad response was accepted (code {c})"),
        }
    }

    /// A response XML answering a fresh request, and that request's RelayState.
    async fn signed_xml(&self, signing: Signing) -> (String, String, ResponseSpec) {
        let (id, relay) = self.begin().await;
        let mut spec = self.idp.spec(Some(&id)).unwrap();
        spec.signing = signing;
        (self.idp.response_xml(&spec).unwrap(), relay, spec)
    }

    async fn sso_logins(&self) -> i64 {
        self.app.usage_count("sso.login").await
    }
}

fn b64(xml: &str) -> String {
    STANDARD.encode(xml)
}

/// (signing, encryption) KeyDescriptors in SP metadata.
fn key_uses(md: &str) -> (usize, usize) {
    (
        md.matches("<md:KeyDescriptor use=\"signing\">").count(),
        md.matches("<md:KeyDescriptor use=\"encryption\">").count(),
    )
}

/// The certificates (base64) SP metadata publishes for `usage`, in order.
fn certs(md: &str, usage: &str) -> Vec<String> {
    md.split(&format!("<md:KeyDescriptor use=\"{usage}\">"))
        .skip(1)
        .filter_map(|kd| {
            let start = kd.find("<ds:X509Certificate>")? + "<ds:X509Certificate>".len();
            let end = kd.find("</ds:X509Certificate>")?;
            Some(kd[start..end].to_owned())
        })
        .collect()
}

/// Which of the SP's certificates (base64) an encrypted response's key is wrapped for:
/// the one whose private key unwraps it.
async fn encrypted_to(env: &Env, response: &str) -> String {
    let xml = String::from_utf8(STANDARD.decode(response).unwrap()).unwrap();
    let marker = "<xenc:EncryptedKey>";
    let at = xml.find(marker).expect("an encrypted assertion");
    let cv = "<xenc:CipherValue>";
    let start = xml[at..].find(cv).unwrap() + at + cv.len();
    let end = xml[start..].find("</xenc:CipherValue>").unwrap() + start;
    let wrapped = STANDARD.decode(&xml[start..end]).unwrap();
    let keys = partner_gateway::sso::store::sp_keys(
        env.app.db(),
        &env.app.state.master_key,
        "x",
        partner_gateway::time::now_micros(),
    )
    .await
    .unwrap();
    keys.iter()
        .find(|k| {
            let rsa = k.key.rsa().unwrap();
            let mut out = vec![0u8; rsa.size() as usize];
            rsa.private_decrypt(&wrapped, &mut out, openssl::rsa::Padding::PKCS1_OAEP)
                .is_ok()
        })
        .map(|k| STANDARD.encode(&k.cert_der))
        .expect("the key is wrapped for none of the SP's keys")
}

/// One step of an SP key rollover, then what every instance reads picked up at once.
async fn rotate(env: &Env, step: Rollover) -> Result<String, RolloverProblem> {
    let done = partner_gateway::sso::store::rotate_sp_key(
        env.app.db(),
        &env.app.state.master_key,
        "rollover",
        partner_gateway::time::now_micros(),
        3_600_000_000,
        step,
    )
    .await
    .unwrap();
    // Instances re-read the keys within a minute; this one at once.
    env.app.state.sso.forget_sp_keys().await;
    done
}

fn assert_refusal(body: &str, fragment: &str) {
    assert!(
        body.contains(fragment),
        "expected the refusal to say {fragment:?}:\n{body}"
    );
}

both_backends! {
    async fn a_shibboleth_sp_initiated_login_hands_the_user_to_the_app(backend) {
        let Some(env) = Env::start(backend, SamlIdpVendor::Shibboleth, "").await else { return };
        // The SP metadata has what an IdP administrator registers.
        let md = env.sp_metadata().await;
        assert!(md.contains(&format!("entityID=\"{}\"", env.entity_id())), "{md}");
        assert!(md.contains(&format!("Location=\"{}\"", env.acs())));
        assert!(md.contains("use=\"signing\"") && md.contains("use=\"encryption\""));
        assert!(md.contains("WantAssertionsSigned=\"true\""));
        // The redirect carries a deflated AuthnRequest and a RelayState.
        let url = env.start_url().await;
        let u = url::Url::parse(&url).unwrap();
        let q: std::collections::HashMap<String, String> = u.query_pairs().into_owned().collect();
        assert!(url.contains("/idp/profile/SAML2/Redirect/SSO?"), "{url}");
        assert!(q.contains_key("SAMLRequest") && q["RelayState"].len() >= 40);
        assert!(!q.contains_key("Signature"));
        let (response, relay) = env.at_idp(&url).await;
        let Outcome::App(code) = env.post(&response, relay.as_deref()).await else { panic!("no app redirect") };
        let (status, launch) = env.exchange(&code).await;
        assert_eq!(status, 200, "{launch}");
        assert_eq!(launch["kind"], "sso");
        assert_eq!(launch["partner"], PARTNER);
        assert_eq!(launch["protocol"], "saml");
        assert_eq!(launch["user"]["id"], "AAdzZWNyZXQxxH8kXNwz0Xm7Ru2Zt5w=");
        assert_eq!(launch["user"]["name"], "Grace Hopper");
        assert_eq!(launch["email"], "grace.hopper@uni.example");
        assert_eq!(launch["groups"], serde_json::json!(["cs-faculty", "course-admins"]));
        assert_eq!(launch["connection"], CONNECTION);
        assert_eq!(launch["organisation"], "State University");
        assert_eq!(launch["issuer"], env.idp.entity_id());
        let attrs = &launch["claims"]["attributes"];
        assert_eq!(attrs["eduPersonPrincipalName"], serde_json::json!(["ghopper@uni.example"]));
        assert_eq!(attrs["urn:oid:1.3.6.1.4.1.5923.1.1.1.9"], serde_json::json!(["faculty@uni.example", "member@uni.example"]));
        assert_eq!(launch["claims"]["name_id_format"], "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent");
        assert_eq!(env.sso_logins().await, 1);
        // The same response again: its RelayState is spent.
        let body = env.refused_raw(&response, relay.as_deref()).await;
        assert_refusal(&body, "already used");
        assert_eq!(env.sso_logins().await, 1);
    }

    async fn encrypted_assertions_are_decrypted_and_can_be_required(backend) {
        let Some(env) = Env::start(backend, SamlIdpVendor::Shibboleth, "require_encrypted_assertions = true").await else { return };
        // In clear: refused.
        let body = env.refused(|_| {}).await;
        assert_refusal(&body, "requires encrypted assertions");
        // Encrypted to the certificate in the SP metadata: accepted.
        env.idp.set_encrypt(true);
        let url = env.start_url().await;
        let (response, relay) = env.at_idp(&url).await;
        let xml = String::from_utf8(STANDARD.decode(&response).unwrap()).unwrap();
        assert!(xml.contains("EncryptedAssertion") && !xml.contains("Grace Hopper"));
        let Outcome::App(code) = env.post(&response, relay.as_deref()).await else { panic!("no app redirect") };
        let (_, launch) = env.exchange(&code).await;
        assert_eq!(launch["user"]["name"], "Grace Hopper");
        assert_eq!(launch["email"], "grace.hopper@uni.example");
    }

    async fn adfs_encrypted_assertions_signed_inside_or_with_the_response(backend) {
        let Some(env) = Env::start(backend, SamlIdpVendor::Adfs, "require_encrypted_assertions = true").await else { return };
        env.idp.set_encrypt(true);
        // ADFS's default: the assertion signed, then encrypted; the Response unsigned. The
        // gateway decrypts first, then checks the assertion's own signature.
        let Outcome::App(code) = env.login().await else { panic!("no app redirect") };
        let (_, launch) = env.exchange(&code).await;
        assert_eq!(launch["user"]["name"], "Grace Hopper");
        // Both signed (and KeyInfo in the default namespace, as .NET writes it).
        env.idp.set_signing(Signing::Both);
        let Outcome::App(code) = env.login().await else { panic!("no app redirect") };
        assert_eq!(env.exchange(&code).await.0, 200);
        // Anyone can encrypt to the SP's certificate: an unsigned assertion inside the
        // encryption is refused, and so is a ciphertext that was tampered with.
        let body = env.refused(|s| s.signing = Signing::None).await;
        assert_refusal(&body, "could not be decrypted and verified");
        // AES-256 in CBC (ADFS's usual choice) and GCM, signed inside or on the Response.
        for (signing, alg) in [
            (Signing::Assertion, "http://www.w3.org/2001/04/xmlenc#aes256-cbc"),
            (Signing::Response, "http://www.w3.org/2009/xmlenc11#aes256-gcm"),
            (Signing::Assertion, "http://www.w3.org/2001/04/xmlenc#aes128-cbc"),
        ] {
            let (id, relay) = env.begin().await;
            let mut spec = env.idp.spec(Some(&id)).unwrap();
            spec.signing = signing;
            spec.encrypt_alg = alg.into();
            let Outcome::App(code) = env.post(&env.idp.response(&spec).unwrap(), Some(&relay)).await else { panic!("{alg} refused") };
            assert_eq!(env.exchange(&code).await.0, 200);
        }
        // An algorithm the gateway does not decrypt is named.
        let body = env.refused(|s| s.encrypt_alg = "http://www.w3.org/2001/04/xmlenc#tripledes-cbc".into()).await;
        assert_refusal(&body, "tripledes-cbc");
        let (id, relay) = env.begin().await;
        let mut spec = env.idp.spec(Some(&id)).unwrap();
        spec.signing = Signing::Assertion;
        let xml = env.idp.response_xml(&spec).unwrap();
        let marker = "<xenc:CipherData><xenc:CipherValue>";
        let at = xml.rfind(marker).unwrap() + marker.len() + 40;
        let flipped = if &xml[at..at + 1] == "A" { "B" } else { "A" };
        let tampered = format!("{}{flipped}{}", &xml[..at], &xml[at + 1..]);
        assert_refusal(&env.refused_raw(&b64(&tampered), Some(&relay)).await, "could not be decrypted");
    }

    async fn an_adfs_login_with_signed_requests_and_claim_uris(backend) {
        let Some(env) = Env::start(backend, SamlIdpVendor::Adfs, "sign_authn_requests = true").await else { return };
        assert!(env.sp_metadata().await.contains("AuthnRequestsSigned=\"true\""));
        let url = env.start_url().await;
        assert!(url.contains("&SigAlg=") && url.contains("&Signature="), "{url}");
        // The mock IdP checks the request's signature with the SP metadata's certificate.
        let Outcome::App(code) = env.login().await else { panic!("no app redirect") };
        let (_, launch) = env.exchange(&code).await;
        assert_eq!(launch["user"]["name"], "Grace Hopper");
        assert_eq!(launch["email"], "grace.hopper@uni.example");
        assert_eq!(launch["groups"], serde_json::json!(["cs-faculty", "course-admins"]));
        // A request whose signature was tampered with is refused by the IdP.
        let url = env.start_url().await.replace("RelayState=", "RelayState=x");
        assert_eq!(env.browser.get(&url).send().await.unwrap().status(), 400);
    }

    async fn idp_initiated_responses_only_where_allowed_and_once(backend) {
        // Not allowed: refused.
        let Some(env) = Env::start(backend, SamlIdpVendor::Shibboleth, "").await else { return };
        let r = env.idp.response(&env.idp.spec(None).unwrap()).unwrap();
        assert_refusal(&env.refused_raw(&r, None).await, "does not accept sign-ins started at the identity provider");
        // Allowed: accepted once, with the portal's own RelayState ignored.
        let Some(env) = Env::start(backend, SamlIdpVendor::Shibboleth, "allow_idp_initiated = true").await else { return };
        let r = env.idp.response(&env.idp.spec(None).unwrap()).unwrap();
        let Outcome::App(code) = env.post(&r, Some("https://portal.uni.example/apps")).await else { panic!("no app redirect") };
        assert_eq!(env.exchange(&code).await.0, 200);
        // The same assertion again: its id was used.
        assert_refusal(&env.refused_raw(&r, None).await, "already used");
        // An unsolicited response claiming to answer a request the gateway never sent.
        let r = env.idp.response(&env.idp.spec(Some("_not-ours")).unwrap()).unwrap();
        assert_refusal(&env.refused_raw(&r, None).await, "did not send");
        assert_eq!(env.sso_logins().await, 1);
    }

    async fn saml_responses_the_sp_must_refuse(backend) {
        let Some(env) = Env::start(backend, SamlIdpVendor::Shibboleth, "").await else { return };
        let other_acs = "https://evil.example/acs".to_owned();

        // Unsigned.
        assert_refusal(&env.refused(|s| s.signing = Signing::None).await, "signature does not verify");
        // Audience: another SP's, or none at all.
        assert_refusal(&env.refused(|s| s.audience = Some("https://other-sp.example".into())).await, "another audience");
        assert_refusal(&env.refused(|s| s.audience = None).await, "another audience");
        // Destination and Recipient elsewhere.
        assert_refusal(&env.refused(|s| s.destination = Some(other_acs.clone())).await, "Destination");
        let acs = other_acs.clone();
        assert_refusal(&env.refused(move |s| s.recipient = acs).await, "Recipient");
        // Expired, and not yet valid.
        assert_refusal(&env.refused(|s| {
            s.issue_instant -= chrono::Duration::minutes(20);
            s.not_before -= chrono::Duration::minutes(20);
            s.not_on_or_after = chrono::Utc::now() - chrono::Duration::minutes(10);
        }).await, "expired");
        assert_refusal(&env.refused(|s| s.not_before = chrono::Utc::now() + chrono::Duration::minutes(10)).await, "not valid yet");
        // Answering a request the gateway did not send.
        assert_refusal(&env.refused(|s| s.in_response_to = Some("_forged".into())).await, "did not send");
        // Another issuer (signed with the right key, claiming another IdP).
        assert_refusal(&env.refused(|s| s.issuer = "https://other-idp.example/idp".into()).await, "another IdP");
        // The IdP said no.
        assert_refusal(&env.refused(|s| s.status = "urn:oasis:names:tc:SAML:2.0:status:Responder".into()).await, "did not sign you in");

        // Login CSRF: a valid response posted from another browser is refused, and the
        // sign-in is left to the browser that started it (issue 17: it used to be spent).
        let url = env.start_url().await;
        let (response, relay) = env.at_idp(&url).await;
        let relay = relay.unwrap();
        let other = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let r = other.post(env.acs()).form(&[("SAMLResponse", response.as_str()), ("RelayState", relay.as_str())]).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert_refusal(&r.text().await.unwrap(), "started in another browser");
        match env.post(&response, Some(&relay)).await {
            Outcome::App(_) => {}
            Outcome::Page(s, body) => panic!("the right browser could not finish: {s} {body}"),
        }

        // An attribute changed after signing.
        let (xml, relay, _) = env.signed_xml(Signing::Response).await;
        let tampered = xml.replace("grace.hopper@uni.example", "admin@uni.example");
        assert_ne!(tampered, xml);
        assert_refusal(&env.refused_raw(&b64(&tampered), Some(&relay)).await, "signature does not verify");

        // A comment inside the NameID (it would not change the signed canonical form).
        let (xml, relay, spec) = env.signed_xml(Signing::Response).await;
        let split = spec.name_id.replacen("zZW", "zZ<!---->W", 1);
        let commented = xml.replace(&spec.name_id, &split);
        assert_ne!(commented, xml);
        assert_refusal(&env.refused_raw(&b64(&commented), Some(&relay)).await, "comment");

        // A replayed assertion id inside a fresh, validly signed response.
        let Outcome::App(_) = env.login().await else { panic!("the baseline login failed") };
        let used = env.idp.requests().len();
        assert!(used > 0);
        let (id, relay) = env.begin().await;
        let first = env.idp.spec(Some(&id)).unwrap();
        let Outcome::App(_) = env.post(&env.idp.response(&first).unwrap(), Some(&relay)).await else { panic!("login failed") };
        let (id2, relay2) = env.begin().await;
        let mut again = env.idp.spec(Some(&id2)).unwrap();
        again.assertion_id = first.assertion_id.clone();
        assert_refusal(&env.refused_raw(&env.idp.response(&again).unwrap(), Some(&relay2)).await, "already used");
    }

    async fn signature_wrapping_variants_are_refused(backend) {
        let Some(env) = Env::start(backend, SamlIdpVendor::Shibboleth, "").await else { return };
        let evil_assertion = |spec: &ResponseSpec| {
            format!(
                "<saml:Assertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_evil\" IssueInstant=\"{t}\" Version=\"2.0\"><saml:Issuer>{iss}</saml:Issuer><saml:Subject><saml:NameID>admin</saml:NameID><saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\"><saml:SubjectConfirmationData InResponseTo=\"{irt}\" NotOnOrAfter=\"{exp}\" Recipient=\"{acs}\"/></saml:SubjectConfirmation></saml:Subject><saml:Conditions><saml:AudienceRestriction><saml:Audience>{aud}</saml:Audience></saml:AudienceRestriction></saml:Conditions></saml:Assertion>",
                t = spec.issue_instant.format("%Y-%m-%dT%H:%M:%SZ"),
                exp = spec.not_on_or_after.format("%Y-%m-%dT%H:%M:%SZ"),
                iss = spec.issuer,
                irt = spec.in_response_to.clone().unwrap_or_default(),
                acs = spec.recipient,
                aud = spec.audience.clone().unwrap_or_default(),
            )
        };
        let cut = |xml: &str, from: &str, to: &str| -> String {
            let a = xml.find(from).unwrap();
            let b = xml.rfind(to).unwrap() + to.len();
            xml[a..b].to_owned()
        };

        // XSW1/2: a forged Response around the signed one, hidden in Extensions.
        let (xml, relay, spec) = env.signed_xml(Signing::Response).await;
        let signed = cut(&xml, "<samlp:Response", "</samlp:Response>");
        let forged = format!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_evilresp\" Version=\"2.0\" IssueInstant=\"{t}\" Destination=\"{acs}\" InResponseTo=\"{irt}\"><saml:Issuer xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\">{iss}</saml:Issuer><samlp:Extensions>{signed}</samlp:Extensions><samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status>{evil}</samlp:Response>",
            t = spec.issue_instant.format("%Y-%m-%dT%H:%M:%SZ"),
            acs = env.acs(),
            irt = spec.in_response_to.clone().unwrap(),
            iss = spec.issuer,
            evil = evil_assertion(&spec),
        );
        assert_refusal(&env.refused_raw(&b64(&forged), Some(&relay)).await, "wrapping");

        // XSW3: a forged assertion beside the signed one.
        let (xml, relay, spec) = env.signed_xml(Signing::Assertion).await;
        let forged = xml.replacen("<saml:Assertion", &format!("{}<saml:Assertion", evil_assertion(&spec)), 1);
        assert_refusal(&env.refused_raw(&b64(&forged), Some(&relay)).await, "wrapping");

        // XSW4: the signed assertion moved inside the forged one.
        let (xml, relay, spec) = env.signed_xml(Signing::Assertion).await;
        let signed = cut(&xml, "<saml:Assertion", "</saml:Assertion>");
        let evil = evil_assertion(&spec).replace("</saml:Assertion>", &format!("{signed}</saml:Assertion>"));
        let forged = xml.replace(&signed, &evil);
        assert_refusal(&env.refused_raw(&b64(&forged), Some(&relay)).await, "wrapping");

        // XSW7/8-like: the signature's digest covers another element (an Extensions the
        // attacker had signed), and the assertion beside it is unsigned.
        let (_, relay, spec) = env.signed_xml(Signing::None).await;
        let template = env.idp.signature_template("_ext");
        let doc = format!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_r\" Version=\"2.0\" IssueInstant=\"{t}\" Destination=\"{acs}\" InResponseTo=\"{irt}\"><saml:Issuer xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\">{iss}</saml:Issuer>{template}<samlp:Extensions ID=\"_ext\"><x xmlns=\"urn:x\">harmless</x></samlp:Extensions><samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status>{evil}</samlp:Response>",
            t = spec.issue_instant.format("%Y-%m-%dT%H:%M:%SZ"),
            acs = env.acs(),
            irt = spec.in_response_to.clone().unwrap(),
            iss = spec.issuer,
            evil = evil_assertion(&spec),
        );
        let signed_other = env.idp.sign(&doc).unwrap();
        assert_refusal(&env.refused_raw(&b64(&signed_other), Some(&relay)).await, "points elsewhere");

        // A DOCTYPE (entity expansion) is refused outright.
        let (xml, relay, _) = env.signed_xml(Signing::Response).await;
        let body = xml.split_once("?>").map(|(_, r)| r).unwrap_or(&xml);
        let with_dtd = format!("<!DOCTYPE r [<!ENTITY a \"aaaa\">]>{body}");
        assert_refusal(&env.refused_raw(&b64(&with_dtd), Some(&relay)).await, "DOCTYPE");
        assert_eq!(env.sso_logins().await, 0);
    }

    async fn saml_connections_are_listed_for_admins(backend) {
        let Some(env) = Env::start(backend, SamlIdpVendor::Shibboleth, "").await else { return };
        let admin = env.app.admin().await;
        let body: Value = env.app.get(&admin, "/v1/sso/connections").await.json().await.unwrap();
        let c = &body["data"][0];
        assert_eq!(c["protocol"], "saml");
        assert_eq!(c["sp_metadata_url"], env.entity_id());
        assert_eq!(c["acs_url"], env.acs());
        assert_eq!(c["idp_metadata_url"], env.idp.metadata_url());
        // An unknown or non-SAML connection has no metadata.
        let r = env.browser.get(format!("{}/sso/saml/nope/metadata", env.gateway)).send().await.unwrap();
        assert_eq!(r.status(), 404);
        // An empty post names what is missing.
        let r = env.browser.post(env.acs()).form(&[("RelayState", "x")]).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("SAMLResponse"));
    }

    async fn an_idp_without_an_http_redirect_sso_service_is_named(backend) {
        let Some(env) = Env::start(backend, SamlIdpVendor::Shibboleth, "").await else { return };
        env.idp.set_redirect_binding(false);
        // A config connection: the sign-in page says what the IdP must offer.
        let r = env.browser.get(format!("{}/sso/start?email=grace%40uni.example", env.gateway)).send().await.unwrap();
        assert_eq!(r.status(), 502);
        let body = r.text().await.unwrap();
        assert!(body.contains("HTTP-Redirect") && body.contains("it offers HTTP-POST"), "{body}");
        // A runtime connection: 422 naming it, nothing saved.
        let admin = env.app.admin().await;
        let r = env.app.client.post(env.app.url("/v1/sso/connections")).bearer_auth(&admin)
            .json(&serde_json::json!({
                "partner": PARTNER, "id": "uni-post-only", "protocol": "saml",
                "idp_metadata_url": env.idp.metadata_url(), "domains": ["post.uni.example"], "app_url": APP_URL,
            }))
            .send().await.unwrap();
        assert_eq!(r.status(), 422);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["code"], "idp_metadata_invalid", "{b}");
        assert!(b["detail"].as_str().unwrap().contains("SingleSignOnService for the HTTP-Redirect binding"), "{b}");
        let list: Value = env.app.get(&admin, "/v1/sso/connections").await.json().await.unwrap();
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
    }

    async fn admins_create_and_delete_connections_at_runtime(backend) {
        let Some(env) = Env::start(backend, SamlIdpVendor::Shibboleth, "").await else { return };
        let admin = env.app.admin().await;
        let post = |body: Value| {
            let req = env.app.client.post(env.app.url("/v1/sso/connections")).bearer_auth(&admin).json(&body);
            async move {
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let good = serde_json::json!({
            "partner": PARTNER,
            "id": "uni-runtime",
            "protocol": "saml",
            "idp_metadata_url": env.idp.metadata_url(),
            "domains": ["runtime.uni.example"],
            "app_url": APP_URL,
            "allow_idp_initiated": true,
        });
        // Field problems, each named, and nothing saved.
        let (s, b) = post(serde_json::json!({"id": "x", "protocol": "saml", "app_url": APP_URL})).await;
        assert_eq!(s, 400, "{b}");
        assert!(b["errors"].to_string().contains("partner"), "{b}");
        let mut bad = good.clone();
        bad["idp_metadata_url"] = Value::Null;
        bad["idp_metadata_file"] = "/etc/passwd".into();
        let (s, b) = post(bad).await;
        assert_eq!(s, 400);
        assert!(b["errors"].to_string().contains("idp_metadata_file"), "{b}");
        let mut bad = good.clone();
        bad["protocol"] = "saml2".into();
        assert_eq!(post(bad).await.0, 400);
        let mut bad = good.clone();
        bad["domains"] = serde_json::json!(["uni.example"]);
        let (s, b) = post(bad).await;
        assert_eq!(s, 409, "{b}");
        // The IdP is asked before anything is saved: metadata that is not there, and an
        // OIDC issuer with no discovery, are refused.
        let mut bad = good.clone();
        bad["idp_metadata_url"] = format!("{}/nothing-here", env.gateway).into();
        let (s, b) = post(bad).await;
        assert_eq!(s, 422, "{b}");
        assert!(b["detail"].as_str().unwrap().contains("metadata"), "{b}");
        let (s, b) = post(serde_json::json!({
            "partner": PARTNER, "id": "oidc-runtime", "protocol": "oidc",
            "issuer": format!("{}/no-oidc", env.gateway), "client_id": "c", "client_secret": "s",
            "app_url": APP_URL,
        })).await;
        assert_eq!(s, 422, "{b}");
        let body: Value = env.app.get(&admin, "/v1/sso/connections").await.json().await.unwrap();
        assert_eq!(body["data"].as_array().unwrap().len(), 1, "{body}");
        // Only admins.
        let r = env.app.client.post(env.app.url("/v1/sso/connections")).bearer_auth(&env.app_key).json(&good).send().await.unwrap();
        assert_eq!(r.status(), 403);

        // Created: listed, with SP metadata, and people sign in through it.
        let (s, b) = post(good.clone()).await;
        assert_eq!(s, 201, "{b}");
        assert_eq!(b["sp_metadata_url"], format!("{}/sso/saml/uni-runtime/metadata", env.gateway));
        assert_eq!(post(good.clone()).await.0, 409);
        let md = env.browser.get(b["sp_metadata_url"].as_str().unwrap()).send().await.unwrap().text().await.unwrap();
        env.idp.register_sp(&md).unwrap();
        let r = env.browser.get(format!("{}/sso/start?email=grace%40runtime.uni.example", env.gateway)).send().await.unwrap();
        assert_eq!(r.status(), 302);
        let (response, relay) = env.at_idp_for(r.headers()["location"].to_str().unwrap(), "uni-runtime").await;
        let r = env.browser.post(format!("{}/sso/saml/uni-runtime/acs", env.gateway))
            .form(&[("SAMLResponse", response), ("RelayState", relay.unwrap())]).send().await.unwrap();
        assert_eq!(r.status(), 302, "{:?}", r.text().await);
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        let code = url::Url::parse(&loc).unwrap().query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
        let (status, launch) = env.exchange(&code).await;
        assert_eq!(status, 200);
        assert_eq!(launch["connection"], "uni-runtime");
        assert_eq!(launch["organisation"], "State University");

        // Deleted: gone from the list and from sign-in; config connections stay.
        let del = |id: &str| env.app.client.delete(env.app.url(&format!("/v1/sso/connections/{id}"))).bearer_auth(&admin).send();
        assert_eq!(del("uni-runtime").await.unwrap().status(), 204);
        assert_eq!(del("uni-runtime").await.unwrap().status(), 404);
        assert_eq!(del(CONNECTION).await.unwrap().status(), 409);
        let r = env.browser.get(format!("{}/sso/start?organisation=uni-runtime", env.gateway)).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }

    async fn an_sp_key_rollover_publishes_the_new_certificate_and_keeps_decrypting(backend) {
        let Some(env) = Env::start(backend, SamlIdpVendor::Shibboleth, "sign_authn_requests = true").await else { return };
        env.idp.set_encrypt(true);
        let Outcome::App(_) = env.login().await else { panic!("baseline login") };
        assert_eq!(key_uses(&env.sp_metadata().await), (1, 1));
        // One step (the default): both certificates for both uses during the overlap.
        rotate(&env, Rollover::Both).await.unwrap();
        let md = env.sp_metadata().await;
        assert_eq!(key_uses(&md), (2, 2), "{md}");
        // An IdP still on the old metadata (encrypting to the old key, checking signatures
        // with the old certificate) keeps working; so does one that loaded the new one.
        let Outcome::App(_) = env.login().await else { panic!("old metadata") };
        env.idp.register_sp(&md).unwrap();
        let Outcome::App(_) = env.login().await else { panic!("new metadata") };
    }

    async fn a_staged_sp_key_rollover_keeps_one_encryption_certificate_and_signs_in_at_each_stage(backend) {
        let Some(env) = Env::start(backend, SamlIdpVendor::Shibboleth, "sign_authn_requests = true").await else { return };
        env.idp.set_encrypt(true);
        let Outcome::App(_) = env.login().await else { panic!("baseline login") };
        let before = env.sp_metadata().await;
        assert_eq!(key_uses(&before), (1, 1));
        let old_cert = certs(&before, "encryption");
        // Nothing to promote yet.
        assert_eq!(rotate(&env, Rollover::Promote).await, Err(RolloverProblem::NothingStaged));

        // Stage 1: the new certificate for signature checks only; the old one is still the
        // only encryption certificate, and still signs.
        let staged = rotate(&env, Rollover::SigningOnly).await.unwrap();
        let md = env.sp_metadata().await;
        assert_eq!(key_uses(&md), (2, 1), "{md}");
        assert_eq!(certs(&md, "encryption"), old_cert);
        let signing = certs(&md, "signing");
        assert!(signing.contains(&old_cert[0]) && signing.len() == 2);
        let new_cert: Vec<String> = signing.into_iter().filter(|c| *c != old_cert[0]).collect();
        // samael (what the mock IdP loads SP metadata with) reads it.
        env.idp.register_sp(&md).unwrap();
        // Signed in: the AuthnRequest signed with the old key, the assertion encrypted to
        // the one encryption certificate published.
        let url = env.start_url().await;
        assert!(url.contains("&Signature="));
        let (response, relay) = env.at_idp(&url).await;
        assert_eq!(encrypted_to(&env, &response).await, old_cert[0]);
        let Outcome::App(code) = env.post(&response, relay.as_deref()).await else { panic!("stage 1 sign-in") };
        assert_eq!(env.exchange(&code).await.0, 200);
        // Only one key is staged at a time, and a one-step rollover waits for it too.
        assert_eq!(rotate(&env, Rollover::SigningOnly).await, Err(RolloverProblem::Staged(staged.clone())));
        assert_eq!(rotate(&env, Rollover::Both).await, Err(RolloverProblem::Staged(staged.clone())));

        // Stage 2: promoted. The new certificate is the only one published and signs; the
        // old key is unpublished but still decrypts.
        assert_eq!(rotate(&env, Rollover::Promote).await, Ok(staged.clone()));
        let promoted = env.sp_metadata().await;
        assert_eq!(key_uses(&promoted), (1, 1), "{promoted}");
        assert_eq!(certs(&promoted, "encryption"), new_cert);
        assert_eq!(certs(&promoted, "signing"), new_cert);
        // An IdP still on the stage-1 metadata verifies the new signature (it knows the
        // staged certificate) and encrypts to the old key, which still decrypts.
        let url = env.start_url().await;
        let (response, relay) = env.at_idp(&url).await;
        assert_eq!(encrypted_to(&env, &response).await, old_cert[0]);
        let Outcome::App(_) = env.post(&response, relay.as_deref()).await else { panic!("stage-1 metadata after promotion") };
        // One that loaded the promoted metadata encrypts to the new certificate.
        env.idp.register_sp(&promoted).unwrap();
        let url = env.start_url().await;
        let (response, relay) = env.at_idp(&url).await;
        assert_eq!(encrypted_to(&env, &response).await, new_cert[0]);
        let Outcome::App(_) = env.post(&response, relay.as_deref()).await else { panic!("promoted metadata") };
        // An IdP that never loaded the staged metadata refuses the new signature: why the
        // signing-only stage comes first.
        env.idp.register_sp(&before).unwrap();
        let url = env.start_url().await;
        assert_eq!(env.browser.get(&url).send().await.unwrap().status(), 400);
        // Nothing left to promote; after the overlap the old key is gone.
        assert_eq!(rotate(&env, Rollover::Promote).await, Err(RolloverProblem::NothingStaged));
        let later = partner_gateway::time::now_micros() + 3_600_000_000 + 1;
        let keys = partner_gateway::sso::store::sp_keys(env.app.db(), &env.app.state.master_key, "x", later).await.unwrap();
        assert_eq!(keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), [staged.as_str()]);
    }

    async fn an_empty_in_response_to_is_absent_where_idp_initiated_sign_in_is_allowed(backend) {
        // Allowed: the IdP portal's response with InResponseTo="" signs in, through the
        // IdP's unsolicited endpoint, on the Response and in the SubjectConfirmationData.
        let Some(env) = Env::start(backend, SamlIdpVendor::Shibboleth, "allow_idp_initiated = true").await else { return };
        env.idp.set_empty_in_response_to(true);
        let url = env.idp.unsolicited_url(&env.entity_id(), Some("https://portal.uni.example/apps"));
        let (response, relay) = env.at_idp_for(&url, CONNECTION).await;
        let xml = String::from_utf8(STANDARD.decode(&response).unwrap()).unwrap();
        assert_eq!(xml.matches("InResponseTo=\"\"").count(), 2, "{xml}");
        assert_eq!(relay.as_deref(), Some("https://portal.uni.example/apps"));
        let Outcome::App(code) = env.post(&response, relay.as_deref()).await else { panic!("InResponseTo=\"\" refused") };
        let (status, launch) = env.exchange(&code).await;
        assert_eq!(status, 200, "{launch}");
        assert_eq!(launch["user"]["id"], "AAdzZWNyZXQxxH8kXNwz0Xm7Ru2Zt5w=");
        // Encrypted too (the SubjectConfirmationData is inside the encryption).
        env.idp.set_encrypt(true);
        let Outcome::App(_) = env.through_idp_page(&env.idp.unsolicited_url(&env.entity_id(), None), CONNECTION).await else { panic!("encrypted, InResponseTo=\"\"") };
        env.idp.set_encrypt(false);
        // A non-empty value the gateway never sent is still refused: on both elements, on
        // the Response alone (the assertion signed and silent), or in the assertion alone.
        assert_refusal(&env.refused_raw(&env.idp.response(&env.idp.spec(Some("_not-ours")).unwrap()).unwrap(), None).await, "did not send");
        env.idp.set_signing(Signing::Assertion);
        let mut spec = env.idp.spec(None).unwrap();
        assert_eq!(spec.in_response_to.as_deref(), Some(""));
        spec.in_response_to = None;
        let xml = env.idp.response_xml(&spec).unwrap();
        let response_only = xml.replacen("<samlp:Response ", "<samlp:Response InResponseTo=\"_not-ours\" ", 1);
        assert_ne!(response_only, xml);
        assert_refusal(&env.refused_raw(&b64(&response_only), None).await, "did not send");
        let mut spec = env.idp.spec(None).unwrap();
        spec.in_response_to = Some("_not-ours".into());
        let xml = env.idp.response_xml(&spec).unwrap();
        // The Response's (unsigned) attribute comes first; the assertion's stays signed.
        let assertion_only = xml.replacen(" InResponseTo=\"_not-ours\"", "", 1);
        assert!(assertion_only.contains("<saml:SubjectConfirmationData InResponseTo=\"_not-ours\""), "{assertion_only}");
        assert_refusal(&env.refused_raw(&b64(&assertion_only), None).await, "did not send");
        // Signed only in the assertion, InResponseTo="" on both: accepted.
        let Outcome::App(_) = env.post(&env.idp.response(&env.idp.spec(None).unwrap()).unwrap(), None).await else { panic!("assertion signed, InResponseTo=\"\"") };
        assert_eq!(env.sso_logins().await, 3);

        // Not allowed: InResponseTo="" is refused as before, without a RelayState (not
        // started here) and with one of the gateway's (it answers no request it sent).
        let Some(env) = Env::start(backend, SamlIdpVendor::Shibboleth, "").await else { return };
        env.idp.set_empty_in_response_to(true);
        let url = env.idp.unsolicited_url(&env.entity_id(), None);
        let (response, relay) = env.at_idp_for(&url, CONNECTION).await;
        assert!(relay.is_none());
        assert_refusal(&env.refused_raw(&response, None).await, "does not accept sign-ins started at the identity provider");
        assert_refusal(&env.refused(|s| s.in_response_to = Some(String::new())).await, "did not send");
        assert_eq!(env.sso_logins().await, 0);
    }

    async fn active_users_counts_two_people_with_one_subject_at_two_connections_once_each(backend) {
        let staff = format!(
            "\n[[partners.sso_connections]]\nid = \"{STAFF}\"\nprotocol = \"saml\"\nidp_metadata_url = \"IDP_METADATA_URL\"\napp_url = \"{APP_URL}\"\n"
        );
        let Some(env) = Env::start(backend, SamlIdpVendor::Shibboleth, &staff).await else { return };
        // The IdP serves both connections (two SPs); its persistent NameIDs are pairwise,
        // so each SP may be sent `1` for a different person.
        env.idp.register_sp(&env.sp_metadata_of(STAFF).await).unwrap();
        let person = |id: &str, name: &str| SamlIdpUser { persistent_id: id.into(), name: name.into(), ..grace() };
        env.idp.set_user(person("1", "Grace Hopper"));
        let Outcome::App(code) = env.login_at(CONNECTION).await else { panic!("grace") };
        let (_, grace_launch) = env.exchange(&code).await;
        env.idp.set_user(person("1", "Alan Turing"));
        let Outcome::App(code) = env.login_at(STAFF).await else { panic!("alan") };
        let (_, alan_launch) = env.exchange(&code).await;
        // The app still sees the IdP's own subject, and the ledger's name for the person.
        assert_eq!((&grace_launch["user"]["id"], &alan_launch["user"]["id"]), (&Value::from("1"), &Value::from("1")));
        assert_eq!(grace_launch["subject"], format!("{CONNECTION}:1"));
        assert_eq!(alan_launch["subject"], format!("{STAFF}:1"));
        assert_eq!(env.active_users().await, 2);
        // The same person twice at one connection is one active user.
        env.idp.set_user(person("1", "Grace Hopper"));
        let Outcome::App(_) = env.login_at(CONNECTION).await else { panic!("grace again") };
        assert_eq!(env.sso_logins().await, 3);
        assert_eq!(env.active_users().await, 2);
        // Admins see how each connection's people are named.
        let admin = env.app.admin().await;
        let list: Value = env.app.get(&admin, "/v1/sso/connections").await.json().await.unwrap();
        let namespaces: Vec<&str> = list["data"].as_array().unwrap().iter().map(|c| c["subject_namespace"].as_str().unwrap()).collect();
        assert_eq!(namespaces, [CONNECTION, STAFF]);
    }

    async fn connections_sharing_a_subject_namespace_count_a_subject_once(backend) {
        // An organisation that wants one person counted once across its connections gives
        // them one namespace (here: the same IdP releasing the same, non-pairwise, id).
        let staff = format!(
            "subject_namespace = \"state-uni-people\"\n\n[[partners.sso_connections]]\nid = \"{STAFF}\"\nprotocol = \"saml\"\nidp_metadata_url = \"IDP_METADATA_URL\"\napp_url = \"{APP_URL}\"\nsubject_namespace = \"state-uni-people\"\n"
        );
        let Some(env) = Env::start(backend, SamlIdpVendor::Shibboleth, &staff).await else { return };
        env.idp.register_sp(&env.sp_metadata_of(STAFF).await).unwrap();
        let Outcome::App(code) = env.login_at(CONNECTION).await else { panic!("first") };
        assert_eq!(env.exchange(&code).await.1["subject"], "state-uni-people:AAdzZWNyZXQxxH8kXNwz0Xm7Ru2Zt5w=");
        let Outcome::App(_) = env.login_at(STAFF).await else { panic!("second") };
        assert_eq!(env.sso_logins().await, 2);
        assert_eq!(env.active_users().await, 1);
    }
}
