//! The outbound address policy end to end (L2): IPv6 spellings that carry an IPv4 loopback
//! or private address (mapped, compatible, NAT64, 6to4, Teredo, ISATAP), the IPv4 spellings a
//! URL parser accepts (`2130706433`, `0x7f.1`, `127.1`, `017700000001`) and the other
//! non-public ranges are refused as a webhook endpoint, as an EHR's FHIR base (discovery),
//! as an LMS's configuration in a dynamic registration, and as a redirect hop, before any
//! connection.

use partner_gateway::apikeys::Role;
use partner_gateway::jobs::Handlers;
use partner_sim::receiver::{Receiver, Reply};
use serde_json::{Value, json};

use crate::helpers::{TestApp, urlencode};

/// Hosts (with a port where it matters) that must never be reached without a configured
/// private network.
const NON_PUBLIC: &[&str] = &[
    "[::127.0.0.1]:8080",
    "[::7f00:1]",
    "[::ffff:127.0.0.1]:8080",
    "[::ffff:0:127.0.0.1]",
    "[::ffff:169.254.169.254]",
    "[64:ff9b::7f00:1]:8080",
    "[64:ff9b::a9fe:a9fe]",
    "[64:ff9b:1::a00:1]",
    "[2002:7f00:1::]:8080",
    "[2002:a9fe:a9fe::1]",
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
    "[2606:2800:220:1:0:5efe:a00:1]",
    "2130706433:8080",
    "0x7f.1",
    "127.1",
    "017700000001",
    "0",
    "[fd00::1]",
    "[fe80::1]",
    "[ff02::1]",
    "[::]",
    "[2001:db8::1]",
    "100.64.0.1",
    "198.18.0.1",
    "192.0.0.8",
    "localhost.",
];

fn is_refusal(detail: &str) -> bool {
    detail.contains("non-public address")
}

crate::both_backends! {
    async fn webhook_endpoints_at_any_spelling_of_a_non_public_address_are_refused(backend) {
        let extra = "[jobs]\nenabled = false\n[outbound]\nallow_http = true\n";
        let Some(app) = TestApp::spawn_with(backend, extra, Handlers::new()).await else { return };
        let admin = app.admin().await;
        for host in NON_PUBLIC {
            let url = format!("http://{host}/hook");
            let r = app.client.post(app.url("/v1/webhooks/endpoints")).bearer_auth(&admin)
                .json(&json!({"partner": "canvas-sandbox", "url": url})).send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            assert_eq!(status, 400, "{url}: {body}");
            assert_eq!(body["code"], "url_refused", "{url}: {body}");
            assert!(is_refusal(body["detail"].as_str().unwrap()), "{url}: {body}");
        }
        let list: Value = app.get(&admin, "/v1/webhooks/endpoints").await.json().await.unwrap();
        assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");
    }

    // An EHR whose FHIR base is an embedded-IPv4 spelling: discovery is refused, not tried.
    async fn an_ehr_at_an_embedded_ipv4_spelling_is_refused_before_discovery(backend) {
        let hosts = ["[::127.0.0.1]:9", "[64:ff9b::7f00:1]:9", "[2002:7f00:1::]:9", "[::ffff:0:10.0.0.1]", "0x7f.1:9", "[2001:0:4136:e378:8000:63bf:80ff:fffe]"];
        let mut toml = String::from("[jobs]\nenabled = false\n[outbound]\nallow_http = true\n");
        for (i, host) in hosts.iter().enumerate() {
            toml.push_str(&format!(
                "[[partners]]\nid = \"ehr-{i}\"\nname = \"EHR {i}\"\nkind = \"ehr\"\n[partners.smart]\nvendor = \"epic\"\nissuers = [\"http://{host}/fhir\"]\nclient_id = \"c\"\nclient_type = \"public\"\nscopes = [\"openid\"]\napp_url = \"https://app.example.test/launch\"\n[partners.smart.backend]\nclient_id = \"b\"\nscopes = [\"system/Patient.rs\"]\n"
            ));
        }
        let Some(app) = TestApp::spawn_with(backend, &toml, Handlers::new()).await else { return };
        let admin = app.admin().await;
        for (i, host) in hosts.iter().enumerate() {
            let r = app.get(&admin, &format!("/v1/partners/ehr-{i}/fhir/Patient/1")).await;
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            assert_eq!(status, 502, "{host}: {body}");
            assert_eq!(body["code"], "ehr_discovery_failed", "{host}: {body}");
            assert!(is_refusal(body["detail"].as_str().unwrap()), "{host}: {body}");
        }
    }

    // The LMS's configuration URL of a dynamic registration, for a partner whose loopback
    // is allowed: none of the embedded spellings is taken for it.
    async fn a_dynamic_registration_at_an_embedded_ipv4_spelling_is_refused(backend) {
        let extra = "[jobs]\nenabled = false\n[outbound]\nallow_http = true\n\
            [[partners]]\nid = \"lms-local\"\nname = \"An LMS on this machine\"\nkind = \"lms\"\nprivate_networks = [\"127.0.0.1\"]\n\
            [partners.lti]\napp_url = \"https://app.example.test/lti\"\n";
        let Some(app) = TestApp::spawn_with(backend, extra, Handlers::new()).await else { return };
        let admin = app.admin().await;
        let r = app.client.post(app.url("/v1/lti/registration-links")).bearer_auth(&admin)
            .json(&json!({"partner": "lms-local"})).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let link: Value = r.json().await.unwrap();
        let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        for host in ["[::127.0.0.1]:8080", "[64:ff9b::7f00:1]:8080", "[2002:7f00:1::]:8080", "[::ffff:127.0.0.2]:8080", "2130706434:8080", "0x7f.2", "169.254.169.254"] {
            let config = format!("http://{host}/mod/lti/openid-configuration.php");
            // The link as the LMS opens it (this app has no public_url: its own address).
            let query = link["url"].as_str().unwrap().split_once('?').unwrap().1;
            let url = app.url(&format!("/lti/register?{query}&openid_configuration={}&registration_token=t", urlencode(&config)));
            let r = browser.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 502, "{host}");
            let list: Value = app.get(&admin, "/v1/lti/registration-links").await.json().await.unwrap();
            let last = list["data"][0]["last_error"].as_str().unwrap().to_owned();
            assert!(is_refusal(&last), "{host}: {last}");
        }
    }

    // A redirect hop is checked like the first URL: an EHR on an allowed loopback address
    // redirecting discovery to an embedded spelling (or another loopback address) is
    // refused at the hop.
    async fn a_redirect_to_an_embedded_ipv4_spelling_is_refused(backend) {
        let targets = ["http://[::127.0.0.1]:8080/x", "http://[64:ff9b::7f00:1]/x", "http://[2002:7f00:1::]/x", "http://2130706434/x", "http://[::ffff:169.254.169.254]/latest"];
        let mut receivers = Vec::new();
        let mut toml = String::from("[jobs]\nenabled = false\n[outbound]\nallow_http = true\n");
        for (i, target) in targets.iter().enumerate() {
            let rx = Receiver::start().await.unwrap();
            rx.set_default(Some(Reply::Redirect((*target).to_owned())));
            toml.push_str(&format!(
                "[[partners]]\nid = \"ehr-{i}\"\nname = \"EHR {i}\"\nkind = \"ehr\"\nprivate_networks = [\"127.0.0.1\"]\n[partners.smart]\nvendor = \"epic\"\nissuers = [\"{}\"]\nclient_id = \"c\"\nclient_type = \"public\"\nscopes = [\"openid\"]\napp_url = \"https://app.example.test/launch\"\n[partners.smart.backend]\nclient_id = \"b\"\nscopes = [\"system/Patient.rs\"]\n",
                rx.url("/fhir")
            ));
            receivers.push(rx);
        }
        let Some(app) = TestApp::spawn_with(backend, &toml, Handlers::new()).await else { return };
        let admin = app.key(Role::Admin, None).await;
        for (i, target) in targets.iter().enumerate() {
            let r = app.get(&admin, &format!("/v1/partners/ehr-{i}/fhir/Patient/1")).await;
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            assert_eq!(status, 502, "{target}: {body}");
            assert!(is_refusal(body["detail"].as_str().unwrap()), "{target}: {body}");
            assert!(receivers[i].count() >= 1, "the first hop was allowed");
        }
    }

    // A partner's private network is its own: another partner's key (or the app) cannot
    // point webhook deliveries into it.
    async fn a_webhook_endpoint_reaches_only_its_owners_private_networks(backend) {
        let extra = "[jobs]\nenabled = false\n[outbound]\nallow_http = true\n\
            [[partners]]\nid = \"lan-a\"\nname = \"A partner on this machine\"\nkind = \"other\"\nprivate_networks = [\"127.0.0.1\"]\n\
            [[partners]]\nid = \"lan-b\"\nname = \"Another partner\"\nkind = \"other\"\n";
        let Some(app) = TestApp::spawn_with(backend, extra, Handlers::new()).await else { return };
        let rx = Receiver::start().await.unwrap();
        let create = |key: String, body: Value| {
            let req = app.client.post(app.url("/v1/webhooks/endpoints")).bearer_auth(key).json(&body);
            async move {
                let r = req.send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };
        let (s, b) = create(app.key(Role::Partner, Some("lan-b")).await, json!({"url": rx.url("/b")})).await;
        assert_eq!((s, b["code"].as_str()), (400, Some("url_refused")), "{b}");
        let admin = app.key(Role::Admin, None).await;
        let (s, b) = create(admin.clone(), json!({"app": true, "url": rx.url("/app")})).await;
        assert_eq!((s, b["code"].as_str()), (400, Some("url_refused")), "{b}");
        let (s, b) = create(admin.clone(), json!({"partner": "lan-b", "url": rx.url("/b2")})).await;
        assert_eq!((s, b["code"].as_str()), (400, Some("url_refused")), "{b}");
        let (s, b) = create(app.key(Role::Partner, Some("lan-a")).await, json!({"url": rx.url("/a")})).await;
        assert_eq!(s, 201, "{b}");
    }
}
