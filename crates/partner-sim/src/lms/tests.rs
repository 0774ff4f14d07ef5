//! End-to-end tests of the mock LMS over loopback HTTP, driven as the gateway (the tool)
//! and a browser would drive it.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use reqwest::StatusCode;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use url::Url;

use super::*;
use crate::testkeys::{Alg, generate_key};

const CLIENT: &str = "gateway-client";
const DEPLOYMENT: &str = "dep-1";
const COURSE: &str = "course-1";
const STATE: &str = "st-123";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// An RSA signing key of the test tool.
struct ToolKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn rs256_key() -> ToolKey {
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let public = key.to_public_key();
    let kid = format!("tool-{}", &random_token()[..8]);
    ToolKey {
        jwk: json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        }),
        kid,
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes()),
    }
}

fn rs384_key() -> ToolKey {
    let key = generate_key(Alg::Rs384).unwrap();
    ToolKey {
        kid: key.kid.clone(),
        alg: Algorithm::RS384,
        encoding: EncodingKey::from_rsa_der(&key.private_der),
        jwk: key.public_jwk,
    }
}

fn sign(key: &ToolKey, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// A tiny tool: it serves a JWKS (whose keys a test can change) at
/// `/.well-known/jwks.json`; its other URLs are never requested by the platform.
struct TestTool {
    base: String,
    key: ToolKey,
    keys: Arc<Mutex<Vec<Value>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl TestTool {
    async fn start() -> TestTool {
        let key = rs256_key();
        let keys = Arc::new(Mutex::new(vec![key.jwk.clone()]));
        let served = keys.clone();
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let keys = served.lock().unwrap().clone();
                async move { axum::Json(json!({ "keys": keys })) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestTool {
            base,
            key,
            keys,
            _server: server,
        }
    }

    fn registration(&self, client_id: &str) -> MockTool {
        MockTool::gateway(client_id, DEPLOYMENT, &self.base)
    }

    fn redirect_uri(&self) -> String {
        format!("{}/lti/launch", self.base)
    }
}

async fn start(personality: Personality, tool: &TestTool) -> MockLms {
    let mut registration = tool.registration(CLIENT);
    registration.lti11 = Some(("consumer-key".into(), "consumer-secret".into()));
    MockLms::start(MockLmsOptions::new(personality, vec![registration]))
        .await
        .unwrap()
}

fn learner_launch(user: &str) -> LaunchSpec {
    LaunchSpec::resource_link(
        CLIENT,
        DEPLOYMENT,
        MockUser::learner(user),
        COURSE,
        "link-1",
    )
}

/// The tool's authentication request for a login initiation, with sound defaults;
/// `overrides` replace or (with an empty value) remove parameters.
async fn auth_request(
    mock: &MockLms,
    tool: &TestTool,
    init: &LoginInitiation,
    overrides: &[(&str, &str)],
) -> reqwest::Response {
    let redirect = tool.redirect_uri();
    let mut params: Vec<(&str, &str)> = vec![
        ("scope", "openid"),
        ("response_type", "id_token"),
        ("response_mode", "form_post"),
        ("prompt", "none"),
        ("client_id", init.param("client_id").unwrap()),
        ("redirect_uri", redirect.as_str()),
        ("login_hint", init.param("login_hint").unwrap()),
        ("lti_message_hint", init.param("lti_message_hint").unwrap()),
        ("state", STATE),
        ("nonce", "nonce-1"),
    ];
    for (name, value) in overrides {
        params.retain(|(n, _)| n != name);
        if !value.is_empty() {
            params.push((name, value));
        }
    }
    let url = Url::parse_with_params(&mock.auth_url(), &params).unwrap();
    http().get(url).send().await.unwrap()
}

async fn form_of(response: reqwest::Response) -> AutoPostForm {
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    parse_auto_post_form(&html).unwrap_or_else(|| panic!("no form in {html}"))
}

/// Run a launch to its auto-post form.
async fn launch_form(mock: &MockLms, tool: &TestTool, spec: LaunchSpec) -> AutoPostForm {
    let init = mock.login_initiation(spec);
    form_of(auth_request(mock, tool, &init, &[]).await).await
}

fn jwt_header(jwt: &str) -> Value {
    let segment = jwt.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

fn jwt_claims(jwt: &str) -> Value {
    let segment = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

/// Verify an id_token the way a tool does: the key from the platform's JWKS by `kid`,
/// RS256, `iss` and `aud`.
async fn verify_id_token(mock: &MockLms, jwt: &str) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwks: jsonwebtoken::jwk::JwkSet = http()
        .get(mock.jwks_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = jwks.find(&kid).ok_or("unknown kid")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[CLIENT]);
    validation.set_issuer(&[mock.issuer()]);
    validation.leeway = 0;
    jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

fn assertion_claims(mock: &MockLms, client_id: &str) -> Value {
    let now = now_secs();
    json!({
        "iss": client_id, "sub": client_id, "aud": mock.token_audience(),
        "iat": now, "exp": now + 300, "jti": random_token(),
    })
}

async fn post_token(mock: &MockLms, assertion: &str, scope: &str) -> (StatusCode, Value) {
    let response = http()
        .post(mock.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", token::JWT_BEARER),
            ("client_assertion", assertion),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn access_token(mock: &MockLms, tool: &TestTool, scope: &str) -> String {
    let assertion = sign(&tool.key, &assertion_claims(mock, CLIENT));
    let (status, body) = post_token(mock, &assertion, scope).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

fn all_ags_scopes() -> String {
    [
        claim::SCOPE_LINEITEM,
        claim::SCOPE_LINEITEM_READONLY,
        claim::SCOPE_RESULT_READONLY,
        claim::SCOPE_SCORE,
    ]
    .join(" ")
}

fn score(user: &str, given: f64, timestamp: &str, grading: &str) -> Value {
    json!({
        "userId": user, "scoreGiven": given, "scoreMaximum": 10.0,
        "activityProgress": "Completed", "gradingProgress": grading,
        "timestamp": timestamp, "comment": "well done",
    })
}

async fn post_score(mock_token: &str, url: &str, body: &Value) -> reqwest::Response {
    http()
        .post(url)
        .bearer_auth(mock_token)
        .header(reqwest::header::CONTENT_TYPE, media_type::SCORE)
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap()
}

/// `{lineitem}/{suffix}` with the path extended before the query, as AGS requires.
fn sub_url(lineitem: &str, suffix: &str) -> String {
    let mut url = Url::parse(lineitem).unwrap();
    let path = format!("{}/{suffix}", url.path());
    url.set_path(&path);
    url.into()
}

async fn create_lineitem(mock: &MockLms, token: &str, body: &Value) -> Value {
    let response = http()
        .post(mock.context_lineitems_url(COURSE))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, media_type::LINEITEM)
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        response.headers()[reqwest::header::CONTENT_TYPE],
        media_type::LINEITEM
    );
    response.json().await.unwrap()
}

#[tokio::test]
async fn auth_endpoint_refuses_an_unregistered_redirect_uri_or_client_with_a_page() {
    let tool = TestTool::start().await;
    let mock = start(Personality::Generic, &tool).await;
    let init = mock.login_initiation(learner_launch("u1"));

    let response = auth_request(
        &mock,
        &tool,
        &init,
        &[("redirect_uri", "https://evil.example/launch")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.unwrap();
    assert!(parse_auto_post_form(&html).is_none(), "{html}");
    assert!(html.contains("redirect_uri"));

    // A prefix of a registered URI is not it.
    let prefix = format!("{}/lti/launch/extra", tool.base);
    let response = auth_request(&mock, &tool, &init, &[("redirect_uri", &prefix)]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response = auth_request(&mock, &tool, &init, &[("client_id", "someone-else")]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // None of that used the launch up.
    let form = form_of(auth_request(&mock, &tool, &init, &[]).await).await;
    assert!(form.field("id_token").is_some());
}

#[tokio::test]
async fn auth_endpoint_errors_go_back_by_form_post_with_the_state() {
    let tool = TestTool::start().await;
    let mock = start(Personality::Generic, &tool).await;
    let init = mock.login_initiation(learner_launch("u1"));

    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("lti_message_hint", "not-a-hint")], "invalid_request"),
        (&[("login_hint", "someone-else")], "login_required"),
        (&[("scope", "profile")], "invalid_scope"),
        (&[("response_type", "code")], "unsupported_response_type"),
        (&[("response_mode", "query")], "invalid_request"),
        (&[("prompt", "login")], "invalid_request"),
        (&[("nonce", "")], "invalid_request"),
    ];
    for (overrides, error) in cases {
        let form = form_of(auth_request(&mock, &tool, &init, overrides).await).await;
        assert_eq!(form.action, tool.redirect_uri(), "{overrides:?}");
        assert_eq!(form.field("error"), Some(*error), "{overrides:?}");
        assert_eq!(form.field("state"), Some(STATE));
        assert!(form.field("id_token").is_none());
    }

    // The hint works once, then is spent.
    let form = form_of(auth_request(&mock, &tool, &init, &[]).await).await;
    assert!(form.field("id_token").is_some());
    let again = form_of(auth_request(&mock, &tool, &init, &[]).await).await;
    assert_eq!(again.field("error"), Some("invalid_request"));
}

#[tokio::test]
async fn a_launch_answers_an_auto_post_form_with_a_verifiable_id_token_for_each_personality() {
    let tool = TestTool::start().await;
    for personality in Personality::ALL {
        let mock = start(personality, &tool).await;
        let linked = mock.create_lineitem(COURSE, "Quiz 1", 10.0, Some("link-1"));
        let mut spec = learner_launch("u1");
        spec.custom.insert("topic".into(), json!("fractions"));
        let init = mock.login_initiation(spec);

        assert_eq!(init.url, format!("{}/lti/login", tool.base));
        assert_eq!(init.param("iss"), Some(mock.issuer().as_str()));
        assert_eq!(init.param("login_hint"), Some("u1"));
        assert_eq!(init.param("client_id"), Some(CLIENT));
        assert_eq!(init.param("lti_deployment_id"), Some(DEPLOYMENT));
        assert_eq!(
            init.param("target_link_uri"),
            Some(tool.redirect_uri().as_str())
        );
        assert!(init.param("lti_message_hint").is_some());
        let canvas = personality == Personality::Canvas;
        assert_eq!(init.param("lti_storage_target").is_some(), canvas);
        assert_eq!(
            init.post,
            matches!(personality, Personality::Canvas | Personality::Moodle)
        );
        if !init.post {
            assert!(init.get_url().contains("lti_message_hint="));
        }

        // The auth endpoint takes the request as a form POST too.
        let redirect = tool.redirect_uri();
        let response = http()
            .post(mock.auth_url())
            .form(&[
                ("scope", "openid"),
                ("response_type", "id_token"),
                ("response_mode", "form_post"),
                ("prompt", "none"),
                ("client_id", CLIENT),
                ("redirect_uri", redirect.as_str()),
                ("login_hint", "u1"),
                ("lti_message_hint", init.param("lti_message_hint").unwrap()),
                ("state", "a&b\"<c>"),
                ("nonce", "nonce-1"),
            ])
            .send()
            .await
            .unwrap();
        let form = form_of(response).await;
        assert_eq!(form.action, redirect);
        assert_eq!(form.field("state"), Some("a&b\"<c>"));
        let jwt = form.field("id_token").unwrap();
        assert_eq!(jwt_header(jwt)["alg"], "RS256");
        assert_eq!(jwt_header(jwt)["kid"], json!(mock.signing_kid()));
        let c = verify_id_token(&mock, jwt).await.unwrap();

        assert_eq!(c["iss"], json!(mock.issuer()));
        if personality == Personality::Generic {
            assert_eq!(c["aud"], json!([CLIENT]));
            assert_eq!(c["azp"], CLIENT);
        } else {
            assert_eq!(c["aud"], CLIENT);
        }
        let lifetime = c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap();
        let expected = if personality == Personality::Moodle {
            60
        } else {
            3600
        };
        assert_eq!(lifetime, expected);
        assert_eq!(c["sub"], "u1");
        assert_eq!(c["nonce"], "nonce-1");
        assert_eq!(c["name"], "Student u1");
        assert_eq!(c["given_name"], "Student");
        assert_eq!(c["family_name"], "u1");
        assert_eq!(c["email"], "u1@example.edu");
        assert_eq!(c[claim::MESSAGE_TYPE], "LtiResourceLinkRequest");
        assert_eq!(c[claim::VERSION], "1.3.0");
        assert_eq!(c[claim::DEPLOYMENT_ID], DEPLOYMENT);
        assert_eq!(c[claim::TARGET_LINK_URI], json!(tool.redirect_uri()));
        let roles = c[claim::ROLES].as_array().unwrap();
        assert!(roles.contains(&json!(ROLE_LEARNER)));
        assert_eq!(
            roles.contains(&json!(
                "http://purl.imsglobal.org/vocab/lis/v2/system/person#User"
            )),
            canvas
        );
        assert_eq!(c[claim::CONTEXT]["id"], COURSE);
        assert_eq!(
            c[claim::CONTEXT]["type"],
            json!(["http://purl.imsglobal.org/vocab/lis/v2/course#CourseOffering"])
        );
        assert_eq!(c[claim::RESOURCE_LINK]["id"], "link-1");
        assert_eq!(c[claim::RESOURCE_LINK]["title"], "Activity link-1");
        assert_eq!(c[claim::CUSTOM]["topic"], "fractions");
        assert_eq!(c[claim::LAUNCH_PRESENTATION]["document_target"], "iframe");
        assert_eq!(
            c[claim::TOOL_PLATFORM]["product_family_code"],
            personality.product_family_code()
        );
        let ags = &c[claim::AGS_ENDPOINT];
        assert_eq!(ags["scope"].as_array().unwrap().len(), 4);
        assert_eq!(ags["lineitems"], json!(mock.context_lineitems_url(COURSE)));
        assert_eq!(ags["lineitem"], json!(linked));
        assert_eq!(
            c[claim::NRPS]["context_memberships_url"],
            json!(mock.memberships_url(COURSE))
        );
        assert!(
            c[claim::NRPS]["service_versions"]
                .as_array()
                .unwrap()
                .contains(&json!("2.0"))
        );
        assert_eq!(c.get(claim::CANVAS_PLACEMENT).is_some(), canvas);
        assert!(c.get(claim::DL_SETTINGS).is_none());

        match personality {
            Personality::Canvas => {
                assert_eq!(mock.issuer(), "https://canvas.instructure.com");
                assert_eq!(init.param("deployment_id"), Some(DEPLOYMENT));
            }
            Personality::Blackboard => assert_eq!(mock.issuer(), "https://blackboard.com"),
            Personality::Moodle => {
                assert_eq!(mock.issuer(), mock.base_url());
                assert!(linked.ends_with("/lineitem?type_id=1"), "{linked}");
                assert!(
                    mock.context_lineitems_url(COURSE)
                        .ends_with("/lineitems?type_id=1")
                );
            }
            Personality::D2l => {
                assert_eq!(
                    mock.token_audience(),
                    "https://api.brightspace.com/auth/token"
                );
                assert!(linked.contains(&format!("/deployment/{DEPLOYMENT}/orgunit/")));
            }
            Personality::Generic => assert_eq!(mock.token_audience(), mock.token_url()),
        }
        // The launch enrolled its user.
        assert_eq!(mock.lineitems(COURSE).len(), 1);
    }
}

#[tokio::test]
async fn each_launch_fault_produces_its_defect_once() {
    let tool = TestTool::start().await;
    let mock = start(Personality::Canvas, &tool).await;
    let faults = [
        LaunchFault::NoKid,
        LaunchFault::UnknownKid,
        LaunchFault::WrongVersion,
        LaunchFault::MissingMessageType,
        LaunchFault::MissingRoles,
        LaunchFault::MissingDeploymentId,
        LaunchFault::MissingResourceLink,
        LaunchFault::MissingSub,
        LaunchFault::ExpiredIat,
        LaunchFault::FutureIat,
        LaunchFault::WrongAud,
        LaunchFault::AlgNone,
        LaunchFault::UnregisteredDeployment,
        LaunchFault::BadSignature,
    ];
    let kids: Vec<Value> = mock.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    for fault in faults {
        mock.inject_launch(fault);
        let form = launch_form(&mock, &tool, learner_launch("u1")).await;
        let jwt = form.field("id_token").unwrap();
        let header = jwt_header(jwt);
        let c = jwt_claims(jwt);
        let verified = verify_id_token(&mock, jwt).await;
        let now = now_secs();
        match fault {
            LaunchFault::NoKid => assert!(header.get("kid").is_none()),
            LaunchFault::UnknownKid => {
                assert!(!kids.contains(&header["kid"]));
                assert_eq!(verified.as_ref().unwrap_err(), "unknown kid");
            }
            LaunchFault::WrongVersion => assert_eq!(c[claim::VERSION], "1.2.0"),
            LaunchFault::MissingMessageType => assert!(c.get(claim::MESSAGE_TYPE).is_none()),
            LaunchFault::MissingRoles => assert!(c.get(claim::ROLES).is_none()),
            LaunchFault::MissingDeploymentId => assert!(c.get(claim::DEPLOYMENT_ID).is_none()),
            LaunchFault::MissingResourceLink => assert!(c.get(claim::RESOURCE_LINK).is_none()),
            LaunchFault::MissingSub => assert!(c.get("sub").is_none()),
            LaunchFault::ExpiredIat => {
                assert!(c["exp"].as_u64().unwrap() < now);
                assert!(verified.as_ref().unwrap_err().contains("Expired"));
            }
            LaunchFault::FutureIat => assert!(c["iat"].as_u64().unwrap() > now + 60),
            LaunchFault::WrongAud => {
                assert_eq!(c["aud"], json!(format!("not-{CLIENT}")));
                assert!(verified.as_ref().unwrap_err().contains("Audience"));
            }
            LaunchFault::AlgNone => {
                assert_eq!(header["alg"], "none");
                assert!(jwt.ends_with('.'));
                assert!(verified.is_err());
            }
            LaunchFault::UnregisteredDeployment => {
                assert_ne!(c[claim::DEPLOYMENT_ID], DEPLOYMENT);
                assert!(c[claim::DEPLOYMENT_ID].is_string());
            }
            LaunchFault::BadSignature => {
                assert_eq!(header["kid"], json!(mock.signing_kid()));
                assert!(verified.as_ref().unwrap_err().contains("Signature"));
            }
        }
        // Faults that leave the signature sound verify: the defect is the only one.
        if matches!(
            fault,
            LaunchFault::WrongVersion
                | LaunchFault::MissingMessageType
                | LaunchFault::MissingRoles
                | LaunchFault::MissingDeploymentId
                | LaunchFault::MissingResourceLink
                | LaunchFault::UnregisteredDeployment
        ) {
            verified.unwrap();
        }
    }
    // The queue is empty: the next launch is sound.
    let form = launch_form(&mock, &tool, learner_launch("u1")).await;
    let c = verify_id_token(&mock, form.field("id_token").unwrap())
        .await
        .unwrap();
    assert_eq!(c[claim::DEPLOYMENT_ID], DEPLOYMENT);
}

#[tokio::test]
async fn key_rotation_publishes_the_new_kid_beside_the_old() {
    let tool = TestTool::start().await;
    let mock = start(Personality::Moodle, &tool).await;
    let old = mock.signing_kid();
    let new = mock.rotate_key().await.unwrap();
    assert_ne!(old, new);
    let jwks: Value = http()
        .get(mock.jwks_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [new.as_str(), old.as_str()]);
    let form = launch_form(&mock, &tool, learner_launch("u1")).await;
    let jwt = form.field("id_token").unwrap();
    assert_eq!(jwt_header(jwt)["kid"], json!(new));
    verify_id_token(&mock, jwt).await.unwrap();
}

#[tokio::test]
async fn token_endpoint_grants_a_sound_assertion_and_refuses_a_replayed_jti() {
    let tool = TestTool::start().await;
    let mock = start(Personality::Canvas, &tool).await;
    let assertion = sign(&tool.key, &assertion_claims(&mock, CLIENT));
    let scope = format!("{} {}", claim::SCOPE_SCORE, claim::SCOPE_NRPS);
    let (status, body) = post_token(&mock, &assertion, &scope).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], json!(scope));
    assert!(body["access_token"].as_str().unwrap().len() > 20);

    let (status, body) = post_token(&mock, &assertion, &scope).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("replay")
    );

    // Canvas refuses a scope its developer key does not carry.
    let fresh = sign(&tool.key, &assertion_claims(&mock, CLIENT));
    let (status, body) = post_token(&mock, &fresh, "https://example.com/scope/other").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_scope");

    let log = mock.token_requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].grant_type, "client_credentials");
    assert_eq!(log[0].scope.as_deref(), Some(scope.as_str()));
    assert_eq!(
        log[0].assertion_header.as_ref().unwrap()["kid"],
        json!(tool.key.kid)
    );
    assert_eq!(log[0].assertion_claims.as_ref().unwrap()["iss"], CLIENT);
}

#[tokio::test]
async fn d2l_token_endpoint_wants_its_own_audience() {
    let tool = TestTool::start().await;
    let mock = start(Personality::D2l, &tool).await;
    let mut claims = assertion_claims(&mock, CLIENT);
    claims["aud"] = json!(mock.token_url());
    let (status, body) = post_token(&mock, &sign(&tool.key, &claims), claim::SCOPE_SCORE).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("https://api.brightspace.com/auth/token")
    );
    // An array holding the audience is as good as the string.
    claims["aud"] = json!([mock.token_audience(), "other"]);
    claims["jti"] = json!(random_token());
    let (status, body) = post_token(&mock, &sign(&tool.key, &claims), claim::SCOPE_SCORE).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn token_endpoint_refuses_alg_none_bad_claims_and_algorithms_the_vendor_does_not_take() {
    let tool = TestTool::start().await;
    let canvas = start(Personality::Canvas, &tool).await;

    let claims = assertion_claims(&canvas, CLIENT);
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, tool.key.kid)),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );
    let (status, body) = post_token(&canvas, &none, claim::SCOPE_SCORE).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");

    let refused = |mut claims: Value, name: &str, value: Value| {
        claims[name] = value;
        claims
    };
    let now = now_secs();
    for claims in [
        refused(claims.clone(), "sub", json!("someone-else")),
        refused(claims.clone(), "exp", json!(now - 60)),
        refused(claims.clone(), "iat", json!(now + 600)),
        refused(claims.clone(), "jti", Value::Null),
    ] {
        let (status, body) =
            post_token(&canvas, &sign(&tool.key, &claims), claim::SCOPE_SCORE).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{claims} {body}");
    }

    // RS384 is refused by Canvas and taken by the generic platform.
    let rs384 = rs384_key();
    tool.keys.lock().unwrap().push(rs384.jwk.clone());
    let (status, body) = post_token(
        &canvas,
        &sign(&rs384, &assertion_claims(&canvas, CLIENT)),
        claim::SCOPE_SCORE,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("RS384")
    );
    let generic = start(Personality::Generic, &tool).await;
    let (status, body) = post_token(
        &generic,
        &sign(&rs384, &assertion_claims(&generic, CLIENT)),
        claim::SCOPE_SCORE,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn token_endpoint_refetches_the_tool_jwks_once_for_an_unknown_kid() {
    let tool = TestTool::start().await;
    let mock = start(Personality::Moodle, &tool).await;
    access_token(&mock, &tool, claim::SCOPE_SCORE).await;
    // The tool rotates: the cached JWKS lacks the new kid until refetched.
    let new = rs256_key();
    *tool.keys.lock().unwrap() = vec![new.jwk.clone()];
    let (status, body) = post_token(
        &mock,
        &sign(&new, &assertion_claims(&mock, CLIENT)),
        claim::SCOPE_SCORE,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A kid the tool never published fails after the one refetch.
    let stranger = rs256_key();
    let (status, _) = post_token(
        &mock,
        &sign(&stranger, &assertion_claims(&mock, CLIENT)),
        claim::SCOPE_SCORE,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn ags_line_items_scores_and_results_round_trip() {
    let tool = TestTool::start().await;
    for personality in [
        Personality::Generic,
        Personality::Canvas,
        Personality::Blackboard,
    ] {
        let mock = start(personality, &tool).await;
        mock.add_member(COURSE, MockUser::learner("u1"));
        let token = access_token(&mock, &tool, &all_ags_scopes()).await;

        let mut body = json!({
            "label": "Essay", "scoreMaximum": 10, "resourceId": "essay-1", "tag": "grade",
            "resourceLinkId": "link-9",
        });
        body["https://canvas.instructure.com/lti/submission_type"] =
            json!({ "type": "external_tool", "external_tool_url": "https://tool.example/essay" });
        let item = create_lineitem(&mock, &token, &body).await;
        let id = item["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with(&mock.base_url()));
        assert_eq!(item["label"], "Essay");
        assert_eq!(
            item.get("https://canvas.instructure.com/lti/submission_type")
                .is_some(),
            personality == Personality::Canvas
        );
        create_lineitem(
            &mock,
            &token,
            &json!({ "label": "Other", "scoreMaximum": 5 }),
        )
        .await;

        // The container filters and pages.
        let response = http()
            .get(mock.context_lineitems_url(COURSE))
            .query(&[("resource_link_id", "link-9")])
            .bearer_auth(&token)
            .header(reqwest::header::ACCEPT, media_type::LINEITEM_CONTAINER)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()[reqwest::header::CONTENT_TYPE],
            media_type::LINEITEM_CONTAINER
        );
        let found: Vec<Value> = response.json().await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["id"], json!(id));
        let response = http()
            .get(mock.context_lineitems_url(COURSE))
            .query(&[("limit", "1")])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let link = response.headers()[reqwest::header::LINK]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(link.ends_with(">; rel=\"next\""), "{link}");
        assert!(link.contains("page=2"));

        // Wrong media type, then a sound score.
        let stamp = "2024-05-01T10:00:00.123Z";
        let response = http()
            .post(sub_url(&id, "scores"))
            .bearer_auth(&token)
            .json(&score("u1", 7.0, stamp, "FullyGraded"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let response = post_score(
            &token,
            &sub_url(&id, "scores"),
            &score("u1", 7.0, stamp, "FullyGraded"),
        )
        .await;
        assert!(response.status().is_success(), "{}", response.status());
        if personality == Personality::Canvas {
            let body: Value = response.json().await.unwrap();
            assert!(body["resultUrl"].as_str().unwrap().contains("/results"));
        }
        // A timestamp without a fraction is refused.
        let response = post_score(
            &token,
            &sub_url(&id, "scores"),
            &score("u1", 8.0, "2024-05-01T11:00:00Z", "FullyGraded"),
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);

        let response = http()
            .get(sub_url(&id, "results"))
            .bearer_auth(&token)
            .header(reqwest::header::ACCEPT, media_type::RESULT_CONTAINER)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()[reqwest::header::CONTENT_TYPE],
            media_type::RESULT_CONTAINER
        );
        let results: Vec<Value> = response.json().await.unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0]["userId"], "u1");
        assert_eq!(results[0]["resultScore"], 7.0);
        assert_eq!(results[0]["resultMaximum"], 10.0);
        assert_eq!(results[0]["scoreOf"], json!(id));

        let book = mock.gradebook(COURSE);
        assert_eq!(book.len(), 1);
        assert_eq!(book[0].line_item, id);
        assert_eq!(book[0].score_given, Some(7.0));
        assert_eq!(book[0].timestamp, stamp);
        assert_eq!(book[0].comment.as_deref(), Some("well done"));

        // PUT replaces, DELETE removes.
        let response = http()
            .put(&id)
            .bearer_auth(&token)
            .header(reqwest::header::CONTENT_TYPE, media_type::LINEITEM)
            .body(
                serde_json::to_vec(&json!({ "id": id, "label": "Essay 2", "scoreMaximum": 20 }))
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let item: Value = response.json().await.unwrap();
        assert_eq!(item["label"], "Essay 2");
        let response = http().delete(&id).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let response = http().get(&id).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(mock.lineitems(COURSE).len(), 1);
    }
}

#[tokio::test]
async fn ags_checks_the_token_and_its_scope() {
    let tool = TestTool::start().await;
    let mock = start(Personality::Generic, &tool).await;
    mock.add_member(COURSE, MockUser::learner("u1"));
    let url = mock.create_lineitem(COURSE, "Quiz", 1.0, None);

    let response = http().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response
            .headers()
            .contains_key(reqwest::header::WWW_AUTHENTICATE)
    );
    let response = http()
        .get(&url)
        .bearer_auth("made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let readonly = access_token(&mock, &tool, claim::SCOPE_LINEITEM_READONLY).await;
    let response = http()
        .get(&url)
        .bearer_auth(&readonly)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = post_score(
        &readonly,
        &sub_url(&url, "scores"),
        &score("u1", 1.0, "2024-05-01T10:00:00.5Z", "FullyGraded"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // An unknown course is a 404, not an empty list.
    let response = http()
        .get(mock.context_lineitems_url("no-such-course"))
        .bearer_auth(&readonly)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn moodle_scores_go_before_the_type_id_query_and_must_be_newer_by_a_second() {
    let tool = TestTool::start().await;
    let mock = start(Personality::Moodle, &tool).await;
    mock.add_member(COURSE, MockUser::learner("u1"));
    mock.add_member(COURSE, MockUser::instructor("t1"));
    let token = access_token(&mock, &tool, &all_ags_scopes()).await;
    let item = create_lineitem(
        &mock,
        &token,
        &json!({ "label": "Quiz", "scoreMaximum": 10 }),
    )
    .await;
    let id = item["id"].as_str().unwrap().to_owned();
    assert!(id.ends_with("/lineitem?type_id=1"), "{id}");
    assert_eq!(item["resourceId"], "");
    assert_eq!(item["tag"], "");

    // The path appended after the query finds nothing.
    let wrong = format!("{id}/scores");
    let response = post_score(
        &token,
        &wrong,
        &score("u1", 5.0, "2024-05-01T10:00:00.100Z", "FullyGraded"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let scores_url = sub_url(&id, "scores");
    assert!(
        scores_url.ends_with("/lineitem/scores?type_id=1"),
        "{scores_url}"
    );
    let response = post_score(
        &token,
        &scores_url,
        &score("u1", 5.0, "2024-05-01T10:00:00.100Z", "FullyGraded"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    // Later by 0.8 s but within the same second: refused, as an earlier one is.
    for stamp in ["2024-05-01T10:00:00.900Z", "2024-05-01T09:00:00.000Z"] {
        let response =
            post_score(&token, &scores_url, &score("u1", 6.0, stamp, "FullyGraded")).await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "{stamp}");
        // Moodle's reason is in the status line; the body is `[]`.
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .unwrap_or_default();
        assert!(
            reason.starts_with("Refusing score with an earlier timestamp"),
            "{reason}"
        );
        assert_eq!(response.text().await.unwrap(), "[]");
    }
    let response = post_score(
        &token,
        &scores_url,
        &score("u1", 6.0, "2024-05-01T10:00:01.000Z", "FullyGraded"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    // Not fully graded: Moodle keeps it with the grade cleared, and the stamp stays.
    let response = post_score(
        &token,
        &scores_url,
        &score("u1", 9.0, "2024-05-01T10:00:05.000Z", "Pending"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = post_score(
        &token,
        &scores_url,
        &score("u1", 9.0, "2024-05-01T10:00:02.000Z", "FullyGraded"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    let book = mock.gradebook(COURSE);
    let given: Vec<Option<f64>> = book.iter().map(|s| s.score_given).collect();
    assert_eq!(given, [Some(5.0), Some(6.0), None, Some(9.0)]);
    assert_eq!(book[2].grading_progress, "Pending");

    // A teacher cannot be graded: Moodle answers 400.
    let response = post_score(
        &token,
        &scores_url,
        &score("t1", 1.0, "2024-05-01T11:00:00.000Z", "FullyGraded"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // scoreGiven without scoreMaximum is refused.
    let mut partial = score("u1", 1.0, "2024-05-01T12:00:00.000Z", "FullyGraded");
    partial.as_object_mut().unwrap().remove("scoreMaximum");
    let response = post_score(&token, &scores_url, &partial).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn canvas_refuses_an_older_score_and_the_generic_platform_ignores_it() {
    let tool = TestTool::start().await;
    for personality in [Personality::Canvas, Personality::Generic] {
        let mock = start(personality, &tool).await;
        mock.add_member(COURSE, MockUser::learner("u1"));
        let token = access_token(&mock, &tool, &all_ags_scopes()).await;
        let url = sub_url(&mock.create_lineitem(COURSE, "Quiz", 10.0, None), "scores");
        let response = post_score(
            &token,
            &url,
            &score("u1", 5.0, "2024-05-01T10:00:00.500Z", "FullyGraded"),
        )
        .await;
        assert!(response.status().is_success());
        // The same instant is fine for both.
        let response = post_score(
            &token,
            &url,
            &score("u1", 6.0, "2024-05-01T10:00:00.500Z", "FullyGraded"),
        )
        .await;
        assert!(response.status().is_success());
        let response = post_score(
            &token,
            &url,
            &score("u1", 7.0, "2024-05-01T10:00:00.400Z", "FullyGraded"),
        )
        .await;
        match personality {
            Personality::Canvas => {
                assert_eq!(response.status(), StatusCode::BAD_REQUEST);
                assert!(
                    response
                        .text()
                        .await
                        .unwrap()
                        .contains("before last updated timestamp")
                );
            }
            _ => assert_eq!(response.status(), StatusCode::NO_CONTENT),
        }
        let kept: Vec<Option<f64>> = mock
            .gradebook(COURSE)
            .iter()
            .map(|s| s.score_given)
            .collect();
        assert_eq!(kept, [Some(5.0), Some(6.0)]);
    }
}

#[tokio::test]
async fn d2l_answers_422_for_ungradable_users_and_429_with_retry_after_when_injected() {
    let tool = TestTool::start().await;
    let mock = start(Personality::D2l, &tool).await;
    mock.add_member(COURSE, MockUser::learner("u1"));
    mock.add_member(COURSE, MockUser::instructor("t1"));
    let token = access_token(&mock, &tool, &all_ags_scopes()).await;
    let url = sub_url(&mock.create_lineitem(COURSE, "Quiz", 10.0, None), "scores");
    assert!(url.contains(&format!(
        "/d2l/api/lti/ags/2.0/deployment/{DEPLOYMENT}/orgunit/{COURSE}/lineitems/"
    )));

    let response = post_score(
        &token,
        &url,
        &score("t1", 5.0, "2024-05-01T10:00:00.1Z", "FullyGraded"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let response = post_score(
        &token,
        &url,
        &score("stranger", 5.0, "2024-05-01T10:00:00.1Z", "FullyGraded"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);

    mock.inject_ags(AgsFault::NotGradable);
    let response = post_score(
        &token,
        &url,
        &score("u1", 5.0, "2024-05-01T10:00:00.1Z", "FullyGraded"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);

    mock.inject_ags(AgsFault::Status {
        status: 429,
        retry_after: Some(7),
        count: 2,
    });
    for _ in 0..2 {
        let response = post_score(
            &token,
            &url,
            &score("u1", 5.0, "2024-05-01T10:00:00.2Z", "FullyGraded"),
        )
        .await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[reqwest::header::RETRY_AFTER], "7");
    }
    let response = post_score(
        &token,
        &url,
        &score("u1", 5.0, "2024-05-01T10:00:00.3Z", "FullyGraded"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(mock.gradebook(COURSE).len(), 1);
}

#[tokio::test]
async fn nrps_pages_members_with_link_headers() {
    let tool = TestTool::start().await;
    let mock = start(Personality::Canvas, &tool).await;
    for i in 0..4 {
        mock.add_member(COURSE, MockUser::learner(&format!("s{i}")));
    }
    mock.add_member(COURSE, MockUser::instructor("t1"));

    let no_scope = access_token(&mock, &tool, claim::SCOPE_SCORE).await;
    let response = http()
        .get(mock.memberships_url(COURSE))
        .bearer_auth(&no_scope)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let token = access_token(&mock, &tool, claim::SCOPE_NRPS).await;
    let mut next = Some(mock.memberships_url(COURSE));
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(url) = next.take() {
        let response = http()
            .get(&url)
            .bearer_auth(&token)
            .header(reqwest::header::ACCEPT, media_type::MEMBERSHIP_CONTAINER)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[reqwest::header::CONTENT_TYPE],
            media_type::MEMBERSHIP_CONTAINER
        );
        next = response.headers().get(reqwest::header::LINK).map(|l| {
            let l = l.to_str().unwrap();
            assert!(l.ends_with(">; rel=\"next\""), "{l}");
            l[1..l.find('>').unwrap()].to_owned()
        });
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["context"]["id"], COURSE);
        assert_eq!(body["id"], json!(mock.memberships_url(COURSE)));
        let members = body["members"].as_array().unwrap();
        assert!(members.len() <= 2);
        for m in members {
            assert_eq!(m["status"], "Active");
            assert!(m["roles"].is_array());
            seen.push(m["user_id"].as_str().unwrap().to_owned());
        }
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["s0", "s1", "s2", "s3", "t1"]);

    let response = http()
        .get(mock.memberships_url(COURSE))
        .query(&[("role", "Instructor"), ("limit", "10")])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["members"].as_array().unwrap().len(), 1);
    assert_eq!(body["members"][0]["email"], "t1@example.edu");

    let response = http()
        .get(mock.memberships_url(COURSE))
        .bearer_auth(&token)
        .header(reqwest::header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
}

fn deep_link_response(mock: &MockLms, settings: &Value, data: Option<&str>, items: Value) -> Value {
    let now = now_secs();
    let mut claims = json!({
        "iss": CLIENT, "aud": mock.issuer(), "iat": now, "exp": now + 300,
        "nonce": random_token(),
        (claim::MESSAGE_TYPE): "LtiDeepLinkingResponse",
        (claim::VERSION): "1.3.0",
        (claim::DEPLOYMENT_ID): DEPLOYMENT,
        (claim::DL_CONTENT_ITEMS): items,
    });
    if let Some(data) = data {
        claims[claim::DL_DATA] = json!(data);
    }
    assert!(settings["deep_link_return_url"].is_string());
    claims
}

async fn post_deep_link(url: &str, jwt: &str) -> reqwest::Response {
    http().post(url).form(&[("JWT", jwt)]).send().await.unwrap()
}

#[tokio::test]
async fn deep_link_return_accepts_a_sound_response_once_and_refuses_altered_data() {
    let tool = TestTool::start().await;
    let mock = start(Personality::Moodle, &tool).await;
    let spec = LaunchSpec::deep_linking(
        CLIENT,
        DEPLOYMENT,
        MockUser::instructor("t1"),
        COURSE,
        Some("opaque-data-1"),
    );
    let form = launch_form(&mock, &tool, spec).await;
    let c = verify_id_token(&mock, form.field("id_token").unwrap())
        .await
        .unwrap();
    assert_eq!(c[claim::MESSAGE_TYPE], "LtiDeepLinkingRequest");
    assert!(c.get(claim::RESOURCE_LINK).is_none());
    let settings = c[claim::DL_SETTINGS].clone();
    assert_eq!(settings["data"], "opaque-data-1");
    assert_eq!(settings["accept_types"], json!(["ltiResourceLink"]));
    assert_eq!(settings["accept_multiple"], true);
    let url = settings["deep_link_return_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(url.starts_with(&mock.base_url()));

    let items = json!([{
        "type": "ltiResourceLink", "title": "Chapter 1", "url": format!("{}/lti/launch", tool.base),
        "lineItem": { "scoreMaximum": 25, "label": "Chapter 1 quiz", "tag": "quiz" },
    }]);
    let altered = deep_link_response(&mock, &settings, Some("opaque-data-2"), items.clone());
    let response = post_deep_link(&url, &sign(&tool.key, &altered)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("data"));

    let missing = deep_link_response(&mock, &settings, None, items.clone());
    let response = post_deep_link(&url, &sign(&tool.key, &missing)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let wrong_type = deep_link_response(
        &mock,
        &settings,
        Some("opaque-data-1"),
        json!([{ "type": "html", "html": "<p>x</p>" }]),
    );
    let response = post_deep_link(&url, &sign(&tool.key, &wrong_type)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let mut wrong_aud = deep_link_response(&mock, &settings, Some("opaque-data-1"), items.clone());
    wrong_aud["aud"] = json!(CLIENT);
    let response = post_deep_link(&url, &sign(&tool.key, &wrong_aud)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let stranger = rs256_key();
    let good = deep_link_response(&mock, &settings, Some("opaque-data-1"), items.clone());
    let response = post_deep_link(&url, &sign(&stranger, &good)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    assert!(mock.deep_link_responses().is_empty());
    let response = post_deep_link(&url, &sign(&tool.key, &good)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let accepted = mock.deep_link_responses();
    assert_eq!(accepted.len(), 1);
    assert_eq!(
        accepted[0][claim::DL_CONTENT_ITEMS][0]["title"],
        "Chapter 1"
    );
    let items_now = mock.lineitems(COURSE);
    assert_eq!(items_now.len(), 1);
    assert_eq!(items_now[0]["label"], "Chapter 1 quiz");
    assert_eq!(items_now[0]["scoreMaximum"], 25.0);

    // The return URL is spent.
    let again = deep_link_response(&mock, &settings, Some("opaque-data-1"), items);
    let response = post_deep_link(&url, &sign(&tool.key, &again)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

fn registration_metadata(tool: &TestTool) -> Value {
    json!({
        "application_type": "web",
        "grant_types": ["implicit", "client_credentials"],
        "response_types": ["id_token"],
        "redirect_uris": [tool.redirect_uri()],
        "initiate_login_uri": format!("{}/lti/login", tool.base),
        "client_name": "Partner Gateway",
        "jwks_uri": format!("{}/.well-known/jwks.json", tool.base),
        "token_endpoint_auth_method": "private_key_jwt",
        "scope": format!("{} {}", claim::SCOPE_SCORE, claim::SCOPE_NRPS),
        (claim::TOOL_CONFIGURATION): {
            // host:port, as Moodle compares it with target_link_uri's.
            "domain": Url::parse(&tool.base).unwrap()[url::Position::BeforeHost..url::Position::AfterPort],
            "target_link_uri": tool.redirect_uri(),
            "claims": ["iss", "sub", "name", "email"],
            "messages": [{ "type": "LtiDeepLinkingRequest" }],
        },
    })
}

#[tokio::test]
async fn moodle_replaces_registration_parameters_the_tool_url_already_has() {
    let mock = MockLms::start(MockLmsOptions::new(Personality::Moodle, Vec::new()))
        .await
        .unwrap();
    let url = mock.dynamic_registration_url(
        "https://tool.example/lti/register?link=abc&registration_token=stale&b=2",
    );
    let url = Url::parse(&url).unwrap();
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["link", "b", "openid_configuration", "registration_token"]
    );
    assert_eq!(pairs[0].1, "abc");
    assert_ne!(pairs[3].1, "stale");
    // Another LMS appends to the URL as it is.
    let d2l = MockLms::start(MockLmsOptions::new(Personality::D2l, Vec::new()))
        .await
        .unwrap();
    let url = d2l.dynamic_registration_url("https://tool.example/lti/register?link=abc");
    assert!(url.starts_with("https://tool.example/lti/register?link=abc&openid_configuration="));
}

#[tokio::test]
async fn dynamic_registration_round_trip_with_a_single_use_token() {
    let tool = TestTool::start().await;
    for personality in [Personality::Moodle, Personality::D2l] {
        let mock = MockLms::start(MockLmsOptions::new(personality, Vec::new()))
            .await
            .unwrap();
        let url = mock.dynamic_registration_url(&format!("{}/lti/register?x=1", tool.base));
        let url = Url::parse(&url).unwrap();
        assert_eq!(url.path(), "/lti/register");
        let params: std::collections::HashMap<String, String> =
            url.query_pairs().into_owned().collect();
        assert_eq!(params["x"], "1");
        let config_url = &params["openid_configuration"];
        let token = &params["registration_token"];
        assert!(config_url.starts_with(&mock.issuer()));

        let config: Value = http()
            .get(config_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(config["issuer"], json!(mock.issuer()));
        assert_eq!(config["authorization_endpoint"], json!(mock.auth_url()));
        assert_eq!(config["token_endpoint"], json!(mock.token_url()));
        assert_eq!(config["jwks_uri"], json!(mock.jwks_url()));
        assert_eq!(
            config["token_endpoint_auth_methods_supported"],
            json!(["private_key_jwt"])
        );
        assert_eq!(
            config["token_endpoint_auth_signing_alg_values_supported"],
            json!(["RS256"])
        );
        assert_eq!(
            config["id_token_signing_alg_values_supported"],
            json!(["RS256"])
        );
        assert_eq!(config["response_types_supported"], json!(["id_token"]));
        assert_eq!(
            config[claim::PLATFORM_CONFIGURATION]["product_family_code"],
            personality.product_family_code()
        );
        assert_eq!(
            config.get("authorization_server").is_some(),
            personality == Personality::D2l
        );
        let endpoint = config["registration_endpoint"].as_str().unwrap();

        let register = |metadata: Value, bearer: Option<String>| {
            let mut request = http().post(endpoint).json(&metadata);
            if let Some(bearer) = bearer {
                request = request.bearer_auth(bearer);
            }
            request.send()
        };
        let response = register(registration_metadata(&tool), None).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let mut bad = registration_metadata(&tool);
        bad["token_endpoint_auth_method"] = json!("client_secret_basic");
        let response = register(bad, Some(token.clone())).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client_metadata");

        let response = register(registration_metadata(&tool), Some(token.clone()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let answer: Value = response.json().await.unwrap();
        let client_id = answer["client_id"].as_str().unwrap().to_owned();
        let deployment = answer[claim::TOOL_CONFIGURATION]["deployment_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(answer["client_name"], "Partner Gateway");
        assert_eq!(answer["redirect_uris"], json!([tool.redirect_uri()]));
        assert_eq!(mock.registrations(), vec![registration_metadata(&tool)]);

        let response = register(registration_metadata(&tool), Some(token.clone()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        // The new registration launches and gets tokens.
        let tools = mock.tools();
        assert_eq!(tools.len(), 1);
        assert_eq!(tools[0].client_id, client_id);
        let init = mock.login_initiation(LaunchSpec::resource_link(
            &client_id,
            &deployment,
            MockUser::learner("u1"),
            COURSE,
            "link-1",
        ));
        assert_eq!(init.url, format!("{}/lti/login", tool.base));
        let form = form_of(auth_request(&mock, &tool, &init, &[]).await).await;
        let jwt = form.field("id_token").unwrap();
        assert_eq!(jwt_claims(jwt)["aud"], json!(client_id));
        assert_eq!(jwt_claims(jwt)[claim::DEPLOYMENT_ID], json!(deployment));
        let assertion = sign(&tool.key, &assertion_claims(&mock, &client_id));
        let (status, body) = post_token(&mock, &assertion, claim::SCOPE_SCORE).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// RFC 5849 signing written out again, independently of the module's: the test's own
/// encoder and base string.
fn independent_signature(
    method: &str,
    url: &str,
    params: &[(String, String)],
    secret: &str,
) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    let mut pairs: Vec<String> = params
        .iter()
        .filter(|(k, _)| k != "oauth_signature")
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    pairs.sort();
    let base = format!("{method}&{}&{}", enc(url), enc(&pairs.join("&")));
    let mut mac = <hmac::Hmac<sha1::Sha1> as hmac::Mac>::new_from_slice(
        format!("{}&", enc(secret)).as_bytes(),
    )
    .unwrap();
    hmac::Mac::update(&mut mac, base.as_bytes());
    STANDARD.encode(hmac::Mac::finalize(mac).into_bytes())
}

#[tokio::test]
async fn lti11_launch_is_signed_with_hmac_sha1() {
    let tool = TestTool::start().await;
    let mock = start(Personality::Moodle, &tool).await;
    let tool_url = format!("{}/lti/11/launch", tool.base);
    let user = MockUser::new(
        "u 1+",
        "Ada Lovelace",
        &[ROLE_LEARNER, ROLE_INSTITUTION_ADMIN],
    );
    let form = mock.lti11_launch(&tool_url, "consumer-key", user, COURSE, "rl-1");
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(get("lti_message_type"), "basic-lti-launch-request");
    assert_eq!(get("lti_version"), "LTI-1p0");
    assert_eq!(get("resource_link_id"), "rl-1");
    assert_eq!(get("user_id"), "u 1+");
    assert_eq!(
        get("roles"),
        "Learner,urn:lti:instrole:ims/lis/Administrator"
    );
    assert_eq!(get("context_id"), COURSE);
    assert_eq!(get("lis_person_name_full"), "Ada Lovelace");
    assert_eq!(get("lis_person_contact_email_primary"), "u1@example.edu");
    assert_eq!(get("lis_outcome_service_url"), mock.lti11_outcomes_url());
    assert!(!get("lis_result_sourcedid").is_empty());
    assert_eq!(get("oauth_signature_method"), "HMAC-SHA1");
    assert_eq!(get("oauth_version"), "1.0");
    assert!(
        get("oauth_timestamp")
            .parse::<u64>()
            .unwrap()
            .abs_diff(now_secs())
            < 5
    );
    assert_eq!(
        get("oauth_signature"),
        independent_signature("POST", &tool_url, &form, "consumer-secret")
    );
    // Fresh nonce every time.
    let other = mock.lti11_launch(
        &tool_url,
        "consumer-key",
        MockUser::learner("u2"),
        COURSE,
        "rl-1",
    );
    let nonce = |f: &[(String, String)]| {
        f.iter()
            .find(|(k, _)| k == "oauth_nonce")
            .unwrap()
            .1
            .clone()
    };
    assert_ne!(nonce(&form), nonce(&other));
}

fn pox(operation: &str, sourcedid: &str, score: Option<&str>) -> String {
    let result = score
        .map(|s| format!("<result><resultScore><language>en</language><textString>{s}</textString></resultScore></result>"))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <imsx_POXEnvelopeRequest xmlns=\"http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0\">\
         <imsx_POXHeader><imsx_POXRequestHeaderInfo><imsx_version>V1.0</imsx_version>\
         <imsx_messageIdentifier>msg-42</imsx_messageIdentifier></imsx_POXRequestHeaderInfo></imsx_POXHeader>\
         <imsx_POXBody><{operation}><resultRecord><sourcedGUID><sourcedId>{sourcedid}</sourcedId></sourcedGUID>\
         {result}</resultRecord></{operation}></imsx_POXBody></imsx_POXEnvelopeRequest>"
    )
}

/// An outcomes request signed as a tool signs it: body hash, then HMAC-SHA1 over the
/// `oauth_*` parameters.
async fn post_outcome(
    url: &str,
    body: &str,
    secret: &str,
    tweak: impl Fn(&mut Vec<(String, String)>),
) -> (StatusCode, String) {
    let body_hash = STANDARD.encode(<sha1::Sha1 as sha1::Digest>::digest(body.as_bytes()));
    let mut params: Vec<(String, String)> = vec![
        ("oauth_consumer_key".into(), "consumer-key".into()),
        ("oauth_signature_method".into(), "HMAC-SHA1".into()),
        ("oauth_timestamp".into(), now_secs().to_string()),
        ("oauth_nonce".into(), random_token()),
        ("oauth_version".into(), "1.0".into()),
        ("oauth_body_hash".into(), body_hash),
    ];
    tweak(&mut params);
    let signature = independent_signature("POST", url, &params, secret);
    params.push(("oauth_signature".into(), signature));
    let header = params
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", lti11::percent_encode(v)))
        .collect::<Vec<_>>()
        .join(", ");
    let response = http()
        .post(url)
        .header(
            reqwest::header::AUTHORIZATION,
            format!("OAuth realm=\"\", {header}"),
        )
        .header(reqwest::header::CONTENT_TYPE, "application/xml")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

fn code_major(xml: &str) -> &str {
    let start = xml.find("<imsx_codeMajor>").unwrap() + "<imsx_codeMajor>".len();
    &xml[start..start + xml[start..].find('<').unwrap()]
}

#[tokio::test]
async fn lti11_outcomes_take_signed_pox_and_refuse_bad_signatures_stale_timestamps_and_reused_nonces()
 {
    let tool = TestTool::start().await;
    let mock = start(Personality::Canvas, &tool).await;
    let form = mock.lti11_launch(
        &format!("{}/lti/11/launch", tool.base),
        "consumer-key",
        MockUser::learner("u1"),
        COURSE,
        "rl-1",
    );
    let sourcedid = form
        .iter()
        .find(|(k, _)| k == "lis_result_sourcedid")
        .unwrap()
        .1
        .clone();
    let url = mock.lti11_outcomes_url();

    let (status, xml) = post_outcome(
        &url,
        &pox("replaceResultRequest", &sourcedid, Some("0.85")),
        "consumer-secret",
        |_| {},
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    assert_eq!(code_major(&xml), "success");
    assert!(xml.contains("<imsx_messageRefIdentifier>msg-42</imsx_messageRefIdentifier>"));
    assert!(
        xml.contains("<imsx_operationRefIdentifier>replaceResult</imsx_operationRefIdentifier>")
    );
    assert!(xml.contains("<replaceResultResponse/>"));
    assert_eq!(mock.lti11_grades(), vec![(sourcedid.clone(), Some(0.85))]);

    let (_, xml) = post_outcome(
        &url,
        &pox("readResultRequest", &sourcedid, None),
        "consumer-secret",
        |_| {},
    )
    .await;
    assert_eq!(code_major(&xml), "success");
    assert!(xml.contains("<textString>0.85</textString>"), "{xml}");

    // Out of range, unknown sourcedid, unsupported operation.
    let (status, xml) = post_outcome(
        &url,
        &pox("replaceResultRequest", &sourcedid, Some("1.5")),
        "consumer-secret",
        |_| {},
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(code_major(&xml), "failure");
    let (_, xml) = post_outcome(
        &url,
        &pox("replaceResultRequest", "nope", Some("0.5")),
        "consumer-secret",
        |_| {},
    )
    .await;
    assert_eq!(code_major(&xml), "failure");
    let (_, xml) = post_outcome(
        &url,
        &pox("readMembershipRequest", &sourcedid, None),
        "consumer-secret",
        |_| {},
    )
    .await;
    assert_eq!(code_major(&xml), "unsupported");

    // Bad signature, altered body, stale timestamp, reused nonce.
    let (status, xml) = post_outcome(
        &url,
        &pox("replaceResultRequest", &sourcedid, Some("0.1")),
        "wrong-secret",
        |_| {},
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code_major(&xml), "failure");
    let (status, _) = post_outcome(
        &url,
        &pox("replaceResultRequest", &sourcedid, Some("0.1")),
        "consumer-secret",
        |p| {
            p.retain(|(k, _)| k != "oauth_body_hash");
            p.push(("oauth_body_hash".into(), STANDARD.encode([0u8; 20])));
        },
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post_outcome(
        &url,
        &pox("replaceResultRequest", &sourcedid, Some("0.1")),
        "consumer-secret",
        |p| {
            p.retain(|(k, _)| k != "oauth_timestamp");
            p.push(("oauth_timestamp".into(), (now_secs() - 600).to_string()));
        },
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let fixed = |p: &mut Vec<(String, String)>| {
        p.retain(|(k, _)| k != "oauth_nonce");
        p.push(("oauth_nonce".into(), "the-same-nonce".into()));
    };
    let (status, _) = post_outcome(
        &url,
        &pox("replaceResultRequest", &sourcedid, Some("0.2")),
        "consumer-secret",
        fixed,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, xml) = post_outcome(
        &url,
        &pox("replaceResultRequest", &sourcedid, Some("0.3")),
        "consumer-secret",
        fixed,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(xml.contains("nonce"));
    assert_eq!(mock.lti11_grades(), vec![(sourcedid.clone(), Some(0.2))]);

    let (_, xml) = post_outcome(
        &url,
        &pox("deleteResultRequest", &sourcedid, None),
        "consumer-secret",
        |_| {},
    )
    .await;
    assert_eq!(code_major(&xml), "success");
    assert_eq!(mock.lti11_grades(), vec![(sourcedid, None)]);
}

#[test]
fn auto_post_forms_parse_and_odd_pages_do_not_panic() {
    let page = "<form method=\"post\" action=\"https://t.example/x?a=1&amp;b=2\">\
                <input type=\"hidden\" name=\"id_token\" value=\"a&quot;b&lt;\">\
                <input type=\"hidden\" name=\"state\" value=\"\"></form>";
    let form = parse_auto_post_form(page).unwrap();
    assert_eq!(form.action, "https://t.example/x?a=1&b=2");
    assert_eq!(form.field("id_token"), Some("a\"b<"));
    assert_eq!(form.field("state"), Some(""));
    // A '>' inside the action ends the tag early: no action, no form, no panic.
    assert!(parse_auto_post_form("<form action=\"</form>\"><input name=\"x\"").is_none());
    let unclosed = parse_auto_post_form("<form action=\"/a\"><input name=\"x\"").unwrap();
    assert_eq!(unclosed.fields, [("x".to_owned(), String::new())]);
    assert!(parse_auto_post_form("<form").is_none());
    assert!(parse_auto_post_form("no form here").is_none());
}
