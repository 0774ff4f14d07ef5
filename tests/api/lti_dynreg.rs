//! LTI Dynamic Registration behind registration links: the admin's link API, the
//! registration through the mock LMS, and every way a registration is refused (no link, a
//! spent one, an issuer on another origin, an address outside the partner's networks) with
//! a generic page for the browser and the reason kept for the admin.

use partner_sim::lms::{LaunchSpec, MockUser, Personality, RegistrationFault};
use serde_json::{Value, json};

use crate::lti_env::{DEPLOYMENT, LTI11_KEY, LTI11_SECRET, LtiEnv, PARTNER, start, start_with};

/// An LMS partner whose systems are on no private network: its registrations may reach
/// public addresses only, although the test partner's loopback is allowed.
const CAMPUS: &str = r#"
[[partners]]
id = "campus-lms"
name = "A campus LMS on the internet"
kind = "lms"
[partners.lti]
app_url = "https://app.example.test/lti"
"#;

async fn admin_post_link(env: &LtiEnv, admin: &str, body: Value) -> (u16, Value) {
    let r = env
        .app
        .client
        .post(env.app.url("/v1/lti/registration-links"))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// A new link for `partner`: (id, URL).
async fn new_link(env: &LtiEnv, admin: &str, partner: &str) -> (String, String) {
    let (status, body) = admin_post_link(env, admin, json!({"partner": partner})).await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().to_owned(),
        body["url"].as_str().unwrap().to_owned(),
    )
}

/// The link's record as `GET /v1/lti/registration-links` shows it.
async fn link_record(env: &LtiEnv, admin: &str, id: &str) -> Value {
    let r = env.app.get(admin, "/v1/lti/registration-links").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no link {id} in {body}"))
}

/// The browser opens `url` as the LMS sends it there: status and page.
async fn open(env: &LtiEnv, url: &str) -> (u16, String) {
    let r = env.browser.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn registrations(env: &LtiEnv, admin: &str) -> Vec<Value> {
    let list: Value = env
        .app
        .get(admin, "/v1/lti/registrations")
        .await
        .json()
        .await
        .unwrap();
    list["data"].as_array().unwrap().clone()
}

async fn pending_messages(env: &LtiEnv) -> i64 {
    partner_gateway::with_db!(env.app.db(), pool => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM webhook_messages WHERE type = 'lti.registration.pending'")
            .fetch_one(pool).await
    })
    .unwrap()
}

/// The URL the LMS opens for `link_url`, with its configuration replaced by `config_url`.
fn with_configuration(initiation: &str, config_url: &str) -> String {
    let mut url = url::Url::parse(initiation).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "openid_configuration" {
                (k, config_url.to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    url.set_query(None);
    url.query_pairs_mut().extend_pairs(pairs);
    url.into()
}

crate::both_backends! {
    async fn a_registration_link_carries_the_lti11_consumer_its_platform_replaces(backend) {
        // Moodle: a 1.3 tool registered through the link replaces the 1.1 consumer, and only
        // the link says so. Ada's 1.1 id came from an earlier system, so only the verified
        // claim can tie it to her 1.3 id.
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let admin = env.app.admin().await;
        let (status, body) = admin_post_link(&env, &admin, json!({"partner": PARTNER, "lti11_consumer_key": "not-a-consumer"})).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("not one of partner"), "{body}");
        let (status, body) = admin_post_link(&env, &admin, json!({"partner": PARTNER, "lti11_consumer_key": LTI11_KEY})).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["lti11_consumer_key"], LTI11_KEY);
        let link = body["url"].as_str().unwrap().to_owned();
        assert_eq!(link_record(&env, &admin, body["id"].as_str().unwrap()).await["lti11_consumer_key"], LTI11_KEY);
        let (status, page) = open(&env, &env.lms.dynamic_registration_url(&link)).await;
        assert_eq!(status, 200, "{page}");
        let pending = registrations(&env, &admin).await;
        let id = pending[0]["id"].as_str().unwrap();
        let r = env.app.client.post(env.app.url(&format!("/v1/lti/registrations/{id}/approve"))).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(r.status(), 200);
        env.lms.associate_lti11(LTI11_KEY, LTI11_SECRET);

        // Ada's 1.1 launch, then her 1.3 launch through the registered client: one person.
        let url = format!("{}/lti/11/launch", env.gateway);
        let form = env.lms.lti11_launch(&url, LTI11_KEY, MockUser::learner("ada").with_lti11_id("ada-1p1"), "course-9", "link-9");
        let r = env.browser.post(&url).form(&form).send().await.unwrap();
        assert_eq!(r.status(), 302);
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        let code = url::Url::parse(&loc).unwrap().query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
        let (_, old) = env.exchange(&code).await;
        let client = pending[0]["client_id"].as_str().unwrap();
        let deployment = pending[0]["deployment_id"].as_str().unwrap();
        let deployment = if deployment == "*" { DEPLOYMENT } else { deployment };
        let spec = LaunchSpec::resource_link(client, deployment, MockUser::learner("ada").with_lti11_id("ada-1p1"), "course-9", "link-9");
        let code = env.launch(spec).await.code();
        let (status, new) = env.exchange(&code).await;
        assert_eq!(old["person"]["id"], "ada-1p1", "{old}");
        assert_eq!(status, 200, "{new}");
        assert_eq!(new["person"]["id"], old["person"]["id"], "{new}");
        assert_eq!(new["person"]["identities"].as_array().unwrap().len(), 2, "{new}");
        // The configured platform names no consumer: its launches' claims are not trusted.
        let spec = LaunchSpec::resource_link(crate::lti_env::CLIENT, DEPLOYMENT, MockUser::learner("ben").with_lti11_id("ben-1p1"), "course-1", "link-1");
        let code = env.launch(spec).await.code();
        let (_, ctx) = env.exchange(&code).await;
        assert_eq!(ctx["person"]["id"], "ben", "{ctx}");
    }

    async fn a_registration_through_an_admins_link_waits_for_approval_and_spends_the_link(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let admin = env.app.admin().await;
        let (link_id, link) = new_link(&env, &admin, PARTNER).await;
        assert!(link.starts_with(&format!("{}/lti/register?link=", env.gateway)), "{link}");
        // Moodle adds openid_configuration and registration_token to the tool URL.
        let (status, page) = open(&env, &env.lms.dynamic_registration_url(&link)).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("org.imsglobal.lti.close"), "{page}");
        let regs = env.lms.registrations();
        assert_eq!(regs.len(), 1);
        assert_eq!(regs[0]["initiate_login_uri"], format!("{}/lti/login", env.gateway));
        let pending = registrations(&env, &admin).await;
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0]["partner"], PARTNER);
        assert_eq!(pending[0]["status"], "pending");
        assert_eq!(pending[0]["link_id"], link_id);
        assert_eq!(pending_messages(&env).await, 1);
        let record = link_record(&env, &admin, &link_id).await;
        assert_eq!(record["status"], "used", "{record}");
        assert_eq!(record["registration_id"], pending[0]["id"]);
        assert!(record["used_at"].is_string());

        // A second use of the link is refused before anything is fetched.
        let reads = env.lms.registration_requests();
        let (status, page) = open(&env, &env.lms.dynamic_registration_url(&link)).await;
        assert_eq!(status, 403, "{page}");
        assert!(page.contains("not valid"), "{page}");
        assert_eq!(env.lms.registration_requests(), reads, "nothing fetched");
        assert_eq!(registrations(&env, &admin).await.len(), 1);

        // Approved, the new client launches.
        let id = pending[0]["id"].as_str().unwrap();
        let r = env.app.client.post(env.app.url(&format!("/v1/lti/registrations/{id}/approve"))).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = env.app.client.post(env.app.url(&format!("/v1/lti/registrations/{id}/approve"))).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(r.status(), 409, "decided once");
        let client = pending[0]["client_id"].as_str().unwrap();
        let deployment = pending[0]["deployment_id"].as_str().unwrap();
        let deployment = if deployment == "*" { DEPLOYMENT } else { deployment };
        let spec = LaunchSpec::resource_link(client, deployment, MockUser::learner("s-dyn"), "course-9", "link-9");
        let code = env.launch(spec).await.code();
        assert_eq!(env.exchange(&code).await.0, 200);

        // A second registration, through a new link, rejected.
        let (_, link) = new_link(&env, &admin, PARTNER).await;
        let (status, _) = open(&env, &env.lms.dynamic_registration_url(&link)).await;
        assert_eq!(status, 200);
        let list: Value = env.app.get(&admin, "/v1/lti/registrations?status=pending").await.json().await.unwrap();
        let id = list["data"][0]["id"].as_str().unwrap();
        let r = env.app.client.post(env.app.url(&format!("/v1/lti/registrations/{id}/reject"))).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "rejected");
        let list: Value = env.app.get(&admin, "/v1/lti/registrations?status=rejected").await.json().await.unwrap();
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    }

    // M3: an anonymous request (no link, or one that is unknown, expired, revoked or
    // spent) gets a page saying only that the link is not valid, and nothing is fetched,
    // registered or announced.
    async fn a_registration_without_a_usable_link_fetches_nothing(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let admin = env.app.admin().await;
        let register = format!("{}/lti/register", env.gateway);
        let (expired_id, expired) = new_link(&env, &admin, PARTNER).await;
        partner_gateway::with_db!(env.app.db(), pool => {
            sqlx::query("UPDATE lti_registration_links SET expires_at_us = 1 WHERE id = $1").bind(&expired_id).execute(pool).await.map(|_| ())
        }).unwrap();
        let (revoked_id, revoked) = new_link(&env, &admin, PARTNER).await;
        let r = env.app.client.delete(env.app.url(&format!("/v1/lti/registration-links/{revoked_id}"))).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(r.status(), 204);
        let (_, spent) = new_link(&env, &admin, PARTNER).await;
        let guessed = format!("{register}?link={}", "A".repeat(43));
        for tool_url in [
            // What today's docs told LMS admins to paste.
            format!("{register}?partner={PARTNER}"),
            register.clone(),
            guessed,
            expired,
            revoked,
        ] {
            let url = env.lms.dynamic_registration_url(&tool_url);
            let (status, page) = open(&env, &url).await;
            assert_eq!(status, 403, "{tool_url}: {page}");
            assert!(page.contains("This registration link is not valid"), "{page}");
            assert!(!page.contains("127.0.0.1"), "{page}");
        }
        // Parameters given twice (an LMS appending to a URL that had them) are refused.
        let (_, fresh) = new_link(&env, &admin, PARTNER).await;
        let config = env.lms.openid_configuration_url();
        let twice = format!("{fresh}&openid_configuration={config}&openid_configuration={config}");
        let (status, page) = open(&env, &twice).await;
        assert_eq!(status, 400, "{page}");
        assert!(page.contains("malformed"), "{page}");
        assert_eq!(env.lms.registration_requests(), (0, 0), "the LMS was never contacted");
        assert!(registrations(&env, &admin).await.is_empty());
        assert_eq!(pending_messages(&env).await, 0);
        // The spent one: used once, refused the second time.
        assert_eq!(open(&env, &env.lms.dynamic_registration_url(&spent)).await.0, 200);
        assert_eq!(open(&env, &env.lms.dynamic_registration_url(&spent)).await.0, 403);
        assert_eq!(env.lms.registration_requests(), (1, 1));
        // Refusals of a known link are in its record.
        let record = link_record(&env, &admin, &expired_id).await;
        assert_eq!(record["status"], "expired");
        assert!(record["last_error"].as_str().unwrap().contains("expired"), "{record}");
        assert_eq!(record["attempts"], 0);
    }

    // Two LMS windows racing with one link: one registration, the other refused.
    async fn a_link_makes_one_registration_when_two_race(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let admin = env.app.admin().await;
        let (_, link) = new_link(&env, &admin, PARTNER).await;
        let (a, b) = (env.lms.dynamic_registration_url(&link), env.lms.dynamic_registration_url(&link));
        let ((sa, _), (sb, _)) = tokio::join!(open(&env, &a), open(&env, &b));
        let mut statuses = [sa, sb];
        statuses.sort();
        assert_eq!(statuses, [200, 403]);
        assert_eq!(registrations(&env, &admin).await.len(), 1);
        assert_eq!(pending_messages(&env).await, 1);
    }

    // M3: whatever fails once the link is accepted (a closed port, an HTTP error, a body
    // that is not JSON) the browser gets the same page, telling nothing about the network;
    // the reason is in the link's record and the link stays usable.
    async fn registration_failures_show_one_generic_page_and_keep_the_reason_for_the_admin(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let admin = env.app.admin().await;
        let (link_id, link) = new_link(&env, &admin, PARTNER).await;
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            drop(l);
            port
        };
        let mut pages = Vec::new();
        for (config_url, reason) in [
            (format!("http://127.0.0.1:{closed}/mod/lti/openid-configuration.php"), "reading the LMS configuration"),
            (format!("{}/no-such-page", env.lms.base_url()), "answered HTTP 404"),
            (env.lms.jwks_url(), "has no issuer"),
        ] {
            let url = with_configuration(&env.lms.dynamic_registration_url(&link), &config_url);
            let (status, page) = open(&env, &url).await;
            assert_eq!(status, 502, "{config_url}: {page}");
            let text = page.replace(&link_id, "LINK");
            for leak in ["refused", "404", "JSON", "issuer", "127.0.0.1", "connect"] {
                assert!(!text.contains(leak), "{config_url}: the page says {leak:?}: {page}");
            }
            pages.push(page);
            let record = link_record(&env, &admin, &link_id).await;
            let last = record["last_error"].as_str().unwrap();
            assert!(last.contains(reason), "{config_url}: {last}");
            assert!(record["last_error_at"].is_string());
        }
        assert!(pages.windows(2).all(|w| w[0] == w[1]), "one page for every failure: {pages:?}");
        let record = link_record(&env, &admin, &link_id).await;
        assert_eq!(record["attempts"], 3, "{record}");
        assert_eq!(record["status"], "active");
        assert!(registrations(&env, &admin).await.is_empty());
        // Fixed on the LMS's side, the same link registers.
        assert_eq!(open(&env, &env.lms.dynamic_registration_url(&link)).await.0, 200);
        assert_eq!(link_record(&env, &admin, &link_id).await["status"], "used");
    }

    // M3: the configuration must come from its issuer's origin. A string-prefix check let
    // `http://lms.example.edu@127.0.0.1:port/` (whose host is 127.0.0.1) and
    // `http://127.0.0.1:port/` (for the issuer `http://127.0.0.1`) claim another issuer.
    // Moodle compares the tool configuration's domain with target_link_uri's host:port; the
    // gateway's public URL here has a port. Its refusals come as HTML: kept readable.
    async fn moodle_registers_a_gateway_on_a_non_default_port_and_its_refusals_read_as_text(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        assert!(url::Url::parse(&env.gateway).unwrap().port().is_some());
        let admin = env.app.admin().await;
        let (link_id, link) = new_link(&env, &admin, PARTNER).await;
        env.lms.set_registration_fault(Some(RegistrationFault::Refuse("invalid_scope".into())));
        let (status, page) = open(&env, &env.lms.dynamic_registration_url(&link)).await;
        assert_eq!(status, 502, "{page}");
        let last = link_record(&env, &admin, &link_id).await["last_error"].as_str().unwrap().to_owned();
        assert!(last.contains("(HTTP 400): Class \\mod_lti"), "{last}");
        assert!(last.ends_with("call to debugging() invalid_scope"), "{last}");
        assert!(!last.contains('<') && !last.contains("null"), "{last}");
        env.lms.set_registration_fault(None);
        assert_eq!(open(&env, &env.lms.dynamic_registration_url(&link)).await.0, 200);
        let regs = registrations(&env, &admin).await;
        assert_eq!(regs.len(), 1, "{regs:?}");
        let accepted = env.lms.registrations();
        let domain = &accepted.last().unwrap()["https://purl.imsglobal.org/spec/lti-tool-configuration"]["domain"];
        assert_eq!(domain, env.gateway.trim_start_matches("http://"), "host:port");
    }

    async fn a_configuration_naming_an_issuer_of_another_origin_is_refused(backend) {
        let Some(env) = start(backend, Personality::Moodle).await else { return };
        let admin = env.app.admin().await;
        let (link_id, link) = new_link(&env, &admin, PARTNER).await;
        let config = url::Url::parse(&env.lms.openid_configuration_url()).unwrap();
        let port = config.port().unwrap();
        let with_userinfo = config.as_str().replacen("http://", "http://lms.example.edu@", 1);
        let localhost = format!("http://localhost:{port}");
        for (issuer, config_url, reason) in [
            ("http://lms.example.edu", with_userinfo.clone(), "user info"),
            ("http://lms.example.edu/", with_userinfo, "user info"),
            ("http://127.0.0.1", config.to_string(), "origins"),
            ("http://127.0.0.1:1", config.to_string(), "origins"),
            (localhost.as_str(), config.to_string(), "origins"),
        ] {
            env.lms.set_registration_fault(Some(RegistrationFault::Issuer(issuer.to_owned())));
            let url = with_configuration(&env.lms.dynamic_registration_url(&link), &config_url);
            let (status, page) = open(&env, &url).await;
            assert_eq!(status, 502, "{issuer} at {config_url}: {page}");
            let last = link_record(&env, &admin, &link_id).await["last_error"].as_str().unwrap().to_owned();
            assert!(last.contains(reason), "{issuer} at {config_url}: {last}");
        }
        assert_eq!(env.lms.registration_requests().1, 0, "the tool never registered");
        assert!(registrations(&env, &admin).await.is_empty());
        // The platform's own issuer registers.
        env.lms.set_registration_fault(None);
        assert_eq!(open(&env, &env.lms.dynamic_registration_url(&link)).await.0, 200);
        let regs = registrations(&env, &admin).await;
        assert_eq!(regs[0]["issuer"], env.lms.issuer());
    }

    // M3: a registration reaches a non-public address only inside the link's partner's
    // own private_networks, even when another partner's allow loopback.
    async fn a_registration_reaches_only_the_private_networks_of_the_links_partner(backend) {
        let Some(env) = start_with(backend, Personality::Moodle, CAMPUS).await else { return };
        let admin = env.app.admin().await;
        let (campus_id, campus) = new_link(&env, &admin, "campus-lms").await;
        let (status, page) = open(&env, &env.lms.dynamic_registration_url(&campus)).await;
        assert_eq!(status, 502, "{page}");
        assert_eq!(env.lms.registration_requests(), (0, 0), "nothing fetched");
        let last = link_record(&env, &admin, &campus_id).await["last_error"].as_str().unwrap().to_owned();
        assert!(last.contains("non-public address"), "{last}");
        // The test partner's LMS is on loopback, allowed; its configuration may not send the
        // tool's registration (and the LMS's bearer token) elsewhere on the network.
        let (own_id, own) = new_link(&env, &admin, PARTNER).await;
        for endpoint in ["http://10.1.2.3/register", "http://169.254.169.254/latest", "http://[::ffff:192.168.0.1]/r"] {
            env.lms.set_registration_fault(Some(RegistrationFault::RegistrationEndpoint(endpoint.into())));
            let (status, _) = open(&env, &env.lms.dynamic_registration_url(&own)).await;
            assert_eq!(status, 502);
            let last = link_record(&env, &admin, &own_id).await["last_error"].as_str().unwrap().to_owned();
            assert!(last.contains("registration_endpoint refused") && last.contains("non-public"), "{last}");
        }
        assert_eq!(env.lms.registration_requests().1, 0);
        env.lms.set_registration_fault(None);
        assert_eq!(open(&env, &env.lms.dynamic_registration_url(&own)).await.0, 200);
        let regs = registrations(&env, &admin).await;
        assert_eq!(regs.len(), 1);
        assert_eq!(regs[0]["partner"], PARTNER);
    }

    // The link API: admin keys only, each mistake named, the secret shown once and stored
    // only as its SHA-256, list filters, revocation.
    async fn registration_links_are_created_listed_and_revoked_by_admins(backend) {
        let Some(env) = start_with(backend, Personality::Moodle, CAMPUS).await else { return };
        let admin = env.app.admin().await;
        let partner_key = env.app.partner_key(PARTNER).await;
        for key in [&env.app_key, &partner_key] {
            let (status, body) = admin_post_link(&env, key, json!({"partner": PARTNER})).await;
            assert_eq!(status, 403, "{body}");
            assert_eq!(env.app.get(key, "/v1/lti/registration-links").await.status(), 403);
        }
        for (body, status, says) in [
            (json!({"partner": "no-such-partner"}), 404, "no-such-partner"),
            (json!({"partner": "epic-sandbox"}), 422, "no LTI registration"),
            (json!({"partner": PARTNER, "expires_in_secs": 60}), 400, "300 s"),
            (json!({"partner": PARTNER, "expires_in_secs": 31 * 86_400}), 400, "30 days"),
            (json!({"partner": PARTNER, "note": "x".repeat(501)}), 400, "500 characters"),
            (json!({"partner": PARTNER, "note": "two\nlines"}), 400, "one line"),
            (json!({"partner": PARTNER, "expires": 600}), 400, "unknown field"),
            (json!({"expires_in_secs": 600}), 400, "partner"),
            (json!([PARTNER]), 400, "expected"),
        ] {
            let (got, answer) = admin_post_link(&env, &admin, body.clone()).await;
            assert_eq!(got, status, "{body}: {answer}");
            assert!(answer["detail"].as_str().unwrap().contains(says), "{body}: {answer}");
        }
        let r = env.app.client.post(env.app.url("/v1/lti/registration-links")).bearer_auth(&admin)
            .header("content-type", "application/json").body("{not json").send().await.unwrap();
        assert_eq!(r.status(), 400);

        let before = chrono::Utc::now();
        let (status, created) = admin_post_link(&env, &admin, json!({"partner": PARTNER, "expires_in_secs": 3600, "note": "for the Moodle admin"})).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["partner"], PARTNER);
        assert_eq!(created["status"], "active");
        assert_eq!(created["note"], "for the Moodle admin");
        let expires = chrono::DateTime::parse_from_rfc3339(created["expires_at"].as_str().unwrap()).unwrap();
        let ttl = (expires.with_timezone(&chrono::Utc) - before).num_seconds();
        assert!((3595..=3605).contains(&ttl), "{ttl}");
        let url = created["url"].as_str().unwrap();
        let token = url.split("link=").nth(1).unwrap();
        assert!(token.len() >= 43, "256 bits: {token}");
        let id = created["id"].as_str().unwrap().to_owned();
        // Only the hash is stored.
        let stored: Vec<(String, String)> = partner_gateway::with_db!(env.app.db(), pool => {
            sqlx::query_as("SELECT token_hash, COALESCE(note, '') FROM lti_registration_links").fetch_all(pool).await
        }).unwrap();
        assert_eq!(stored.len(), 1);
        use sha2::Digest;
        assert_eq!(stored[0].0, hex::encode(sha2::Sha256::digest(token.as_bytes())));
        assert!(!stored.iter().any(|(h, n)| h.contains(token) || n.contains(token)));
        let (other_id, _) = new_link(&env, &admin, "campus-lms").await;

        // Listed newest first, never with the secret; filtered by partner and status.
        let r = env.app.get(&admin, "/v1/lti/registration-links").await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(!text.contains(token), "{text}");
        let all: Value = serde_json::from_str(&text).unwrap();
        let ids: Vec<&str> = all["data"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [other_id.as_str(), id.as_str()]);
        let mine: Value = env.app.get(&admin, &format!("/v1/lti/registration-links?partner={PARTNER}")).await.json().await.unwrap();
        assert_eq!(mine["data"].as_array().unwrap().len(), 1);
        assert_eq!(mine["data"][0]["created_by"].as_str().map(|s| !s.is_empty()), Some(true));
        let r = env.app.get(&admin, "/v1/lti/registration-links?status=lost").await;
        assert_eq!(r.status(), 400);
        let r = env.app.get(&admin, "/v1/lti/registration-links?colour=red").await;
        assert_eq!(r.status(), 400);

        // Revoked once; a revoked or used link cannot be revoked (409), an unknown one 404.
        let delete = |id: String, key: String| {
            let req = env.app.client.delete(env.app.url(&format!("/v1/lti/registration-links/{id}"))).bearer_auth(key);
            async move { req.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(delete(id.clone(), env.app_key.clone()).await, 403);
        assert_eq!(delete("lrl_nope".into(), admin.clone()).await, 404);
        assert_eq!(delete(id.clone(), admin.clone()).await, 204);
        assert_eq!(delete(id.clone(), admin.clone()).await, 409);
        let revoked: Value = env.app.get(&admin, "/v1/lti/registration-links?status=revoked").await.json().await.unwrap();
        assert_eq!(revoked["data"][0]["id"], id);
        assert!(revoked["data"][0]["revoked_at"].is_string());
        let (used_id, used) = new_link(&env, &admin, PARTNER).await;
        assert_eq!(open(&env, &env.lms.dynamic_registration_url(&used)).await.0, 200);
        assert_eq!(delete(used_id, admin.clone()).await, 409);
        let active: Value = env.app.get(&admin, "/v1/lti/registration-links?status=active").await.json().await.unwrap();
        assert_eq!(active["data"].as_array().unwrap().len(), 1, "{active}");
        assert_eq!(active["data"][0]["id"], other_id);
    }
}
