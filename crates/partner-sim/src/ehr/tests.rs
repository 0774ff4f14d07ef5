//! End-to-end tests of the mock EHR over loopback HTTP, as the gateway will drive it.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use super::*;
use crate::testkeys::{Alg, GeneratedKey, generate_key};

const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn pkce() -> (String, String) {
    let verifier = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

async fn start(vendor: Vendor, clients: Vec<MockClient>) -> MockEhr {
    MockEhr::start(MockEhrOptions::new(vendor, clients))
        .await
        .unwrap()
}

fn public_client() -> MockClient {
    MockClient::public("public-app", REDIRECT)
}

/// The query parameters of a redirect's Location.
fn location_params(response: &reqwest::Response) -> BTreeMap<String, String> {
    assert_eq!(response.status(), StatusCode::FOUND, "expected a redirect");
    let location = response.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// An authorize request with sound defaults; `overrides` replace or (with an empty value)
/// remove parameters.
async fn authorize(
    mock: &MockEhr,
    client_id: &str,
    scope: &str,
    challenge: &str,
    overrides: &[(&str, &str)],
) -> reqwest::Response {
    let iss = mock.iss();
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", "st-123"),
        ("aud", iss.as_str()),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    for (name, value) in overrides {
        params.retain(|(n, _)| n != name);
        if !value.is_empty() {
            params.push((name, value));
        }
    }
    let url = Url::parse_with_params(&mock.authorize_url(), &params).unwrap();
    http().get(url).send().await.unwrap()
}

/// Authorize and return the code.
async fn code(
    mock: &MockEhr,
    client_id: &str,
    scope: &str,
    challenge: &str,
    extra: &[(&str, &str)],
) -> String {
    let response = authorize(mock, client_id, scope, challenge, extra).await;
    let params = location_params(&response);
    assert_eq!(params.get("state").map(String::as_str), Some("st-123"));
    params
        .get("code")
        .cloned()
        .unwrap_or_else(|| panic!("no code: {params:?}"))
}

async fn post_token(
    mock: &MockEhr,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (StatusCode, Value) {
    let mut request = http().post(mock.token_url()).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    if status.is_success() {
        assert_eq!(
            response.headers()[reqwest::header::CACHE_CONTROL],
            "no-store"
        );
    }
    (status, response.json().await.unwrap())
}

/// A complete public-client code flow; returns the token response.
async fn public_flow(mock: &MockEhr, scope: &str, extra: &[(&str, &str)]) -> Value {
    let (verifier, challenge) = pkce();
    let code = code(mock, "public-app", scope, &challenge, extra).await;
    let (status, body) = post_token(
        mock,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "public-app"),
            ("code_verifier", &verifier),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn fhir_get(mock: &MockEhr, token: &str, path: &str) -> reqwest::Response {
    http()
        .get(format!("{}/{path}", mock.iss()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn access_token(body: &Value) -> String {
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn discovery_is_served_for_each_vendor() {
    for vendor in [Vendor::Epic, Vendor::Oracle, Vendor::Generic] {
        let mock = start(vendor, vec![public_client()]).await;
        let base = mock.base_url();
        match vendor {
            Vendor::Epic => {
                assert_eq!(mock.iss(), format!("{base}/api/FHIR/R4"));
                assert_eq!(mock.authorize_url(), format!("{base}/oauth2/authorize"));
                assert_eq!(mock.token_url(), format!("{base}/oauth2/token"));
                assert_eq!(mock.tenant(), None);
            }
            Vendor::Oracle => {
                let tenant = mock.tenant().unwrap();
                assert_eq!(tenant, ORACLE_SANDBOX_TENANT);
                assert_eq!(mock.iss(), format!("{base}/r4/{tenant}"));
                assert_eq!(
                    mock.authorize_url(),
                    format!(
                        "{base}/tenants/{tenant}/protocols/oauth2/profiles/smart-v1/personas/provider/authorize"
                    )
                );
                assert_eq!(
                    mock.token_url(),
                    format!("{base}/tenants/{tenant}/protocols/oauth2/profiles/smart-v1/token")
                );
            }
            Vendor::Generic => assert_eq!(mock.iss(), format!("{base}/fhir")),
        }
        assert!(!mock.iss().ends_with('/'));

        let response = http()
            .get(format!("{}/.well-known/smart-configuration", mock.iss()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[reqwest::header::CONTENT_TYPE],
            "application/json"
        );
        let doc: Value = response.json().await.unwrap();
        assert_eq!(doc["issuer"], json!(mock.iss()));
        assert_eq!(doc["authorization_endpoint"], json!(mock.authorize_url()));
        assert_eq!(doc["token_endpoint"], json!(mock.token_url()));
        assert_eq!(doc["jwks_uri"], json!(mock.jwks_url()));
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(doc["response_types_supported"], json!(["code"]));
        let algs = doc["token_endpoint_auth_signing_alg_values_supported"]
            .as_array()
            .unwrap();
        assert!(algs.contains(&json!("RS384")) && algs.contains(&json!("ES384")));
        let methods = doc["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap();
        assert!(
            methods.contains(&json!("private_key_jwt"))
                && methods.contains(&json!("client_secret_basic"))
        );
        let capabilities = doc["capabilities"].as_array().unwrap();
        for capability in [
            "launch-ehr",
            "launch-standalone",
            "client-public",
            "client-confidential-symmetric",
            "client-confidential-asymmetric",
            "context-ehr-patient",
            "sso-openid-connect",
            "permission-offline",
            "permission-v1",
            "permission-v2",
        ] {
            assert!(
                capabilities.contains(&json!(capability)),
                "{vendor:?} lacks {capability}"
            );
        }
        assert!(
            doc["x_mock_ehr"].is_object(),
            "the unknown member clients must tolerate"
        );
        assert!(
            doc["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("client_credentials"))
        );
        if vendor == Vendor::Oracle {
            // Oracle's quirk: refresh works but is not advertised.
            assert!(
                !doc["grant_types_supported"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("refresh_token"))
            );
            assert!(
                doc["management_endpoint"].is_string() && doc["revocation_endpoint"].is_string()
            );
        }

        let response = http()
            .get(format!("{}/metadata", mock.iss()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[reqwest::header::CONTENT_TYPE],
            "application/fhir+json"
        );
        let statement: Value = response.json().await.unwrap();
        assert_eq!(statement["resourceType"], "CapabilityStatement");
        let oauth = oauth_uris(&statement);
        assert_eq!(oauth["authorize"], mock.authorize_url());
        assert_eq!(oauth["token"], mock.token_url());

        let jwks: Value = http()
            .get(mock.jwks_url())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = &jwks["keys"][0];
        assert_eq!(
            (
                key["kty"].as_str(),
                key["alg"].as_str(),
                key["use"].as_str()
            ),
            (Some("RSA"), Some("RS256"), Some("sig"))
        );
        assert_eq!(key["kid"], mock.signing_jwk()["kid"]);
    }
}

fn oauth_uris(statement: &Value) -> BTreeMap<String, String> {
    let extension = statement["rest"][0]["security"]["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
        })
        .unwrap();
    extension["extension"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["url"].as_str().unwrap().to_owned(),
                e["valueUri"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn metadata_only_mode_hides_the_well_known_document() {
    let mut opts = MockEhrOptions::new(Vendor::Oracle, vec![public_client()]);
    opts.discovery = DiscoveryMode::MetadataOnly;
    let mock = MockEhr::start(opts).await.unwrap();
    let response = http()
        .get(format!("{}/.well-known/smart-configuration", mock.iss()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let statement: Value = http()
        .get(format!("{}/metadata", mock.iss()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let oauth = oauth_uris(&statement);
    assert_eq!(oauth["authorize"], mock.authorize_url());
    assert_eq!(oauth["token"], mock.token_url());
    assert!(
        oauth.contains_key("revoke")
            && oauth.contains_key("introspect")
            && oauth.contains_key("manage")
    );
}

#[tokio::test]
async fn authorize_refuses_bad_clients_and_redirects_without_redirecting() {
    let mock = start(Vendor::Epic, vec![public_client()]).await;
    let (_, challenge) = pkce();
    for overrides in [
        vec![("redirect_uri", "http://127.0.0.1:9/elsewhere")],
        vec![("redirect_uri", "http://127.0.0.1:9/callback/")],
        vec![("redirect_uri", "")],
        vec![("client_id", "nobody")],
    ] {
        let response = authorize(&mock, "public-app", "openid", &challenge, &overrides).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{overrides:?}");
        assert!(response.headers().get(reqwest::header::LOCATION).is_none());
        assert!(response.text().await.unwrap().contains("<html"));
    }
}

#[tokio::test]
async fn authorize_errors_go_back_to_the_client_with_state() {
    let mock = start(Vendor::Epic, vec![public_client()]).await;
    let (_, challenge) = pkce();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (vec![("aud", "")], "invalid_request"),
        (
            vec![("aud", "https://elsewhere.example/fhir")],
            "invalid_request",
        ),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![("launch", "no-such-launch")], "invalid_request"),
        (vec![("scope", "system/Patient.read")], "invalid_scope"),
    ];
    for (overrides, error) in cases {
        let response = authorize(
            &mock,
            "public-app",
            "openid launch/patient",
            &challenge,
            &overrides,
        )
        .await;
        let params = location_params(&response);
        assert_eq!(
            params.get("error").map(String::as_str),
            Some(error),
            "{overrides:?}"
        );
        assert!(params.contains_key("error_description"));
        assert_eq!(params.get("state").map(String::as_str), Some("st-123"));
        assert!(!params.contains_key("code"));
    }
    // The aud must match exactly: a trailing slash is another URL.
    let with_slash = format!("{}/", mock.iss());
    let response = authorize(
        &mock,
        "public-app",
        "openid",
        &challenge,
        &[("aud", &with_slash)],
    )
    .await;
    assert_eq!(location_params(&response)["error"], "invalid_request");
    // No state: the error still comes back, without one.
    let response = authorize(&mock, "public-app", "openid", &challenge, &[("state", "")]).await;
    let params = location_params(&response);
    assert_eq!(params["error"], "invalid_request");
    assert!(!params.contains_key("state"));

    mock.inject(Fault::DenyAuthorize);
    let response = authorize(&mock, "public-app", "openid", &challenge, &[]).await;
    let params = location_params(&response);
    assert_eq!(params["error"], "access_denied");
    assert_eq!(params["state"], "st-123");
    // The fault was consumed.
    let response = authorize(&mock, "public-app", "openid", &challenge, &[]).await;
    assert!(location_params(&response).contains_key("code"));
}

#[tokio::test]
async fn public_client_code_flow_with_pkce() {
    let mock = start(Vendor::Generic, vec![public_client()]).await;
    let (verifier, challenge) = pkce();
    let scope = "launch/patient openid fhirUser offline_access patient/*.read unknown.scope";
    let code = code(&mock, "public-app", scope, &challenge, &[]).await;
    let form = |verifier: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.clone()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("client_id", "public-app".to_owned()),
            ("code_verifier", verifier.to_owned()),
        ]
    };
    let as_refs = |f: &[(&'static str, String)]| -> Vec<(&'static str, String)> { f.to_vec() };
    let wrong = as_refs(&form(&pkce().0));
    let wrong: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body) = post_token(&mock, &wrong, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    let right = form(&verifier);
    let right: Vec<(&str, &str)> = right.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body) = post_token(&mock, &right, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(
        body["scope"],
        "launch/patient openid fhirUser offline_access patient/*.read"
    );
    assert_eq!(body["patient"], json!(mock.default_patient()));
    assert_eq!(body["need_patient_banner"], json!(true));
    assert!(body["refresh_token"].is_string() && body["id_token"].is_string());
    let token = access_token(&body);

    let response = fhir_get(
        &mock,
        &token,
        &format!("Patient/{}", mock.default_patient()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[reqwest::header::CONTENT_TYPE],
        "application/fhir+json"
    );
    let patient: Value = response.json().await.unwrap();
    assert_eq!(patient["id"], json!(mock.default_patient()));

    // Replaying the code fails and revokes what it was exchanged for.
    let (status, body) = post_token(&mock, &right, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(
        fhir_get(&mock, &token, "Patient/x").await.status(),
        StatusCode::UNAUTHORIZED
    );

    let recorded = mock.token_requests();
    assert_eq!(recorded.len(), 3);
    assert!(
        recorded
            .iter()
            .all(|r| r.grant_type == "authorization_code" && r.client_auth == "none")
    );
    assert_eq!(recorded[1].form["code_verifier"], verifier);
}

#[tokio::test]
async fn ehr_launch_carries_the_context_epic_style() {
    let mock = start(Vendor::Epic, vec![public_client()]).await;
    let launch = mock.launch(LaunchContext {
        patient: Some("erXuFYUfucBZaryVksYEcMg3".into()),
        encounter: Some("enc-1".into()),
        user: "doc-7".into(),
        fhir_context: vec![json!({ "reference": "Appointment/appt-1" })],
        intent: Some("reconcile-medications".into()),
        need_patient_banner: false,
        smart_style_url: None,
    });
    let body = public_flow(
        &mock,
        "launch openid fhirUser patient/Patient.read",
        &[("launch", &launch)],
    )
    .await;
    assert_eq!(body["patient"], "erXuFYUfucBZaryVksYEcMg3");
    assert_eq!(body["encounter"], "enc-1");
    assert_eq!(
        body["fhirContext"],
        json!([{ "reference": "Appointment/appt-1" }])
    );
    assert_eq!(body["intent"], "reconcile-medications");
    // Epic's dialect: the banner flag as a string, the state echoed, the DSTU2 patient id.
    assert_eq!(body["need_patient_banner"], "false");
    assert_eq!(body["state"], "st-123");
    assert!(body["__epic.dstu2.patient"].is_string());
    let style = body["smart_style_url"].as_str().unwrap();
    let style: Value = http()
        .get(style)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(style["color_background"].is_string());
    assert!(body.get("refresh_token").is_none());
    let claims = claims_of(body["id_token"].as_str().unwrap());
    assert_eq!(
        claims["fhirUser"],
        format!("{}/Practitioner/doc-7", mock.iss())
    );
    assert_eq!(claims["sub"], "doc-7");
    // The launch's user can be read back.
    let response = fhir_get(&mock, &access_token(&body), "Practitioner/doc-7").await;
    assert_eq!(response.status(), StatusCode::OK);

    // A launch is single use.
    let (_, challenge) = pkce();
    let response = authorize(
        &mock,
        "public-app",
        "launch openid",
        &challenge,
        &[("launch", &launch)],
    )
    .await;
    assert_eq!(location_params(&response)["error"], "invalid_request");
}

fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn header_of(jwt: &str) -> Value {
    let header = jwt.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

#[tokio::test]
async fn symmetric_client_authenticates_with_basic_or_post() {
    let mock = start(
        Vendor::Epic,
        vec![MockClient::symmetric("conf-app", "s3cr:et", REDIRECT)],
    )
    .await;
    let exchange = |code: String, verifier: String| async move {
        vec![
            ("grant_type".to_owned(), "authorization_code".to_owned()),
            ("code".to_owned(), code),
            ("redirect_uri".to_owned(), REDIRECT.to_owned()),
            ("code_verifier".to_owned(), verifier),
        ]
    };
    let refs = |f: &[(String, String)]| -> Vec<(String, String)> { f.to_vec() };

    // client_secret_basic, with the id and secret form-encoded inside as RFC 6749 asks.
    let (verifier, challenge) = pkce();
    let c = code(
        &mock,
        "conf-app",
        "openid offline_access user/Patient.read",
        &challenge,
        &[],
    )
    .await;
    let form = refs(&exchange(c, verifier).await);
    let form_refs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, body) = post_token(&mock, &form_refs, Some(("conf-app", "s3cr%3Aet"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["refresh_token"].is_string());

    // client_secret_post.
    let (verifier, challenge) = pkce();
    let c = code(&mock, "conf-app", "openid", &challenge, &[]).await;
    let mut form = refs(&exchange(c, verifier).await);
    form.push(("client_id".into(), "conf-app".into()));
    form.push(("client_secret".into(), "s3cr:et".into()));
    let form_refs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, body) = post_token(&mock, &form_refs, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Wrong secret, and no authentication at all, are invalid_client with a challenge.
    let (verifier, challenge) = pkce();
    let c = code(&mock, "conf-app", "openid", &challenge, &[]).await;
    let form = refs(&exchange(c, verifier).await);
    let form_refs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let response = http()
        .post(mock.token_url())
        .form(&form_refs)
        .basic_auth("conf-app", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response
            .headers()
            .contains_key(reqwest::header::WWW_AUTHENTICATE)
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    let mut unauthenticated = form_refs.clone();
    unauthenticated.push(("client_id", "conf-app"));
    let (status, body) = post_token(&mock, &unauthenticated, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );

    let methods: Vec<String> = mock
        .token_requests()
        .into_iter()
        .map(|r| r.client_auth)
        .collect();
    assert_eq!(
        methods,
        [
            "client_secret_basic",
            "client_secret_post",
            "client_secret_basic",
            "none"
        ]
    );
    assert!(mock.token_requests()[1].form.contains_key("client_secret"));
}

/// A client's JWKS endpoint: the keys it serves can change mid-test.
struct ClientJwks {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    _server: tokio::task::JoinHandle<()>,
}

async fn client_jwks(keys: Vec<Value>) -> ClientJwks {
    let keys = Arc::new(Mutex::new(keys));
    let served = keys.clone();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let keys = served.lock().unwrap().clone();
            async move { axum::Json(json!({ "keys": keys })) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    ClientJwks {
        url,
        keys,
        _server: server,
    }
}

fn sign(key: &GeneratedKey, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(key.alg.jwt());
    header.kid = Some(key.kid.clone());
    header.typ = Some("JWT".into());
    let encoding = match key.alg {
        Alg::Rs384 => jsonwebtoken::EncodingKey::from_rsa_der(&key.private_der),
        Alg::Es384 => jsonwebtoken::EncodingKey::from_ec_der(&key.private_der),
    };
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

fn assertion_claims(mock: &MockEhr, client_id: &str, exp_in: u64) -> Value {
    let now = now_secs();
    json!({
        "iss": client_id, "sub": client_id, "aud": mock.token_url(),
        "exp": now + exp_in, "iat": now, "jti": random_token(),
    })
}

async fn client_credentials(mock: &MockEhr, assertion: &str, scope: &str) -> (StatusCode, Value) {
    post_token(
        mock,
        &[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ],
        None,
    )
    .await
}

#[tokio::test]
async fn asymmetric_client_authenticates_with_a_signed_assertion() {
    let rs384 = generate_key(Alg::Rs384).unwrap();
    let jwks = client_jwks(vec![rs384.public_jwk.clone()]).await;
    let mock = start(
        Vendor::Epic,
        vec![
            MockClient::asymmetric("backend-app", &jwks.url, vec![REDIRECT.to_owned()]),
            MockClient::symmetric("conf-app", "secret", REDIRECT),
        ],
    )
    .await;

    let assertion = sign(&rs384, &assertion_claims(&mock, "backend-app", 240));
    let (status, body) = client_credentials(
        &mock,
        &assertion,
        "system/Observation.rs system/Patient.read",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "system/Observation.rs system/Patient.read");
    assert!(body.get("refresh_token").is_none() && body.get("patient").is_none());
    // Backend tokens are not confined to a patient.
    let response = fhir_get(
        &mock,
        &access_token(&body),
        "Patient/eq081-VQEgP8drUUqCWzHfw3",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    // The same jti again is a replay.
    let (status, body) = client_credentials(&mock, &assertion, "system/Patient.read").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );

    // aud must be the token URL exactly.
    let mut claims = assertion_claims(&mock, "backend-app", 240);
    claims["aud"] = json!(format!("{}/", mock.token_url()));
    let (status, _) =
        client_credentials(&mock, &sign(&rs384, &claims), "system/Patient.read").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // exp more than five minutes ahead.
    let claims = assertion_claims(&mock, "backend-app", 600);
    let (status, body) =
        client_credentials(&mock, &sign(&rs384, &claims), "system/Patient.read").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // iss/sub must be the client.
    let mut claims = assertion_claims(&mock, "backend-app", 240);
    claims["sub"] = json!("someone-else");
    let (status, _) =
        client_credentials(&mock, &sign(&rs384, &claims), "system/Patient.read").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // HS256 (keyed with anything) is refused outright.
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some(rs384.kid.clone());
    let hs = jsonwebtoken::encode(
        &header,
        &assertion_claims(&mock, "backend-app", 240),
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    let (status, _) = client_credentials(&mock, &hs, "system/Patient.read").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Backend Services grant system scopes only.
    let assertion = sign(&rs384, &assertion_claims(&mock, "backend-app", 240));
    let (status, body) = client_credentials(&mock, &assertion, "user/Patient.read").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );

    // A key added after the JWKS was cached is found by refetching once.
    let es384 = generate_key(Alg::Es384).unwrap();
    jwks.keys.lock().unwrap().push(es384.public_jwk.clone());
    let assertion = sign(&es384, &assertion_claims(&mock, "backend-app", 240));
    let (status, body) = client_credentials(&mock, &assertion, "system/Patient.read").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A symmetric client cannot use client_credentials, nor an assertion.
    let (status, body) = post_token(
        &mock,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "system/Patient.read"),
        ],
        Some(("conf-app", "secret")),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );

    // An asymmetric client in the code flow.
    let (verifier, challenge) = pkce();
    let c = code(
        &mock,
        "backend-app",
        "openid user/Patient.read",
        &challenge,
        &[],
    )
    .await;
    let assertion = sign(&rs384, &assertion_claims(&mock, "backend-app", 240));
    let (status, body) = post_token(
        &mock,
        &[
            ("grant_type", "authorization_code"),
            ("code", &c),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let recorded = mock.token_requests();
    let first = &recorded[0];
    assert_eq!(first.client_auth, "private_key_jwt");
    assert_eq!(first.assertion_header.as_ref().unwrap()["alg"], "RS384");
    assert_eq!(
        first.assertion_claims.as_ref().unwrap()["iss"],
        "backend-app"
    );
}

async fn refresh(mock: &MockEhr, refresh_token: &str, scope: Option<&str>) -> (StatusCode, Value) {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", "public-app"),
    ];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    post_token(mock, &form, None).await
}

#[tokio::test]
async fn refresh_rotates_on_epic_but_not_on_oracle() {
    let epic = start(Vendor::Epic, vec![public_client()]).await;
    let body = public_flow(
        &epic,
        "openid offline_access patient/Patient.read launch/patient",
        &[],
    )
    .await;
    let first = body["refresh_token"].as_str().unwrap().to_owned();
    let old_access = access_token(&body);
    let (status, body) = refresh(&epic, &first, Some("patient/Patient.read")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "patient/Patient.read");
    assert_eq!(body["patient"], json!(epic.default_patient()));
    let second = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let (status, body) = refresh(&epic, &first, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // The rotated token keeps the original grant, not the narrowed one.
    let (status, body) = refresh(&epic, &second, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["scope"],
        "openid offline_access patient/Patient.read launch/patient"
    );
    // A wider scope than granted is refused.
    let third = body["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = refresh(&epic, &third, Some("patient/Observation.read")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    // The old access token works until it expires.
    let response = fhir_get(
        &epic,
        &old_access,
        &format!("Patient/{}", epic.default_patient()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    let oracle = start(Vendor::Oracle, vec![public_client()]).await;
    let body = public_flow(
        &oracle,
        "openid online_access patient/Patient.read launch/patient",
        &[],
    )
    .await;
    assert_eq!(body["expires_in"], 570);
    let original = body["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (status, body) = refresh(&oracle, &original, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.get("refresh_token").is_none(),
            "Oracle does not return a refresh token"
        );
        assert_eq!(body["tenant"], ORACLE_SANDBOX_TENANT);
    }
}

/// A refresh during an outage, raw: (status, Retry-After, body).
async fn refresh_raw(mock: &MockEhr, refresh_token: &str) -> (StatusCode, Option<String>, String) {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", "public-app"),
    ];
    let response = http()
        .post(mock.token_url())
        .form(&form)
        .send()
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    (
        response.status(),
        retry_after,
        response.text().await.unwrap(),
    )
}

#[tokio::test]
async fn a_refresh_outage_fails_refreshes_only_and_ends_by_count_or_time() {
    let mock = start(Vendor::Oracle, vec![public_client()]).await;
    let body = public_flow(
        &mock,
        "offline_access patient/Patient.read launch/patient",
        &[],
    )
    .await;
    let refresh_token = body["refresh_token"].as_str().unwrap().to_owned();
    let access = access_token(&body);
    let patient = format!("Patient/{}", mock.default_patient());

    // Down for two refresh requests: 503 with Retry-After, then it recovers.
    mock.fail_refreshes(RefreshFailure::Unavailable, OutageSpan::Requests(2));
    for _ in 0..2 {
        let (status, retry_after, _) = refresh_raw(&mock, &refresh_token).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("5"));
    }
    // Other grants and the FHIR API are not affected, and access tokens stay good.
    let fresh = public_flow(&mock, "patient/Patient.read launch/patient", &[]).await;
    assert!(fresh["access_token"].is_string(), "{fresh}");
    assert_eq!(
        fhir_get(&mock, &access, &patient).await.status(),
        StatusCode::OK
    );
    let (status, body) = refresh(&mock, &refresh_token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Refusing the refresh token for a while, then accepting it again (the token was not
    // spent by the refused requests).
    mock.fail_refreshes(
        RefreshFailure::InvalidGrant,
        OutageSpan::For(std::time::Duration::from_millis(300)),
    );
    let (status, body) = refresh(&mock, &refresh_token, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (status, body) = refresh(&mock, &refresh_token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Hanging: no answer before the wait, then 504; a client with a shorter timeout gives up.
    mock.fail_refreshes(
        RefreshFailure::Hang(std::time::Duration::from_millis(1500)),
        OutageSpan::Requests(1),
    );
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.as_str()),
        ("client_id", "public-app"),
    ];
    let err = impatient
        .post(mock.token_url())
        .form(&form)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // Ended by hand: the next refresh works.
    mock.fail_refreshes(RefreshFailure::Unavailable, OutageSpan::Requests(5));
    mock.end_refresh_outage();
    let (status, _) = refresh(&mock, &refresh_token, None).await;
    assert_eq!(status, StatusCode::OK);
    let refreshes = mock
        .token_requests()
        .into_iter()
        .filter(|r| r.grant_type == "refresh_token")
        .count();
    assert_eq!(refreshes, 7, "failed refresh requests are recorded too");
}

#[tokio::test]
async fn oracle_drops_v1_scopes_for_a_v2_client() {
    let mut v2 = public_client();
    v2.v2_scopes = true;
    let mut v1 = MockClient::public("v1-app", REDIRECT);
    v1.v2_scopes = false;
    let oracle = start(Vendor::Oracle, vec![v2, v1]).await;
    let scope = "launch/patient openid fhirUser patient/Patient.read patient/Observation.rs user/Encounter.write patient/*.read";
    let body = public_flow(&oracle, scope, &[]).await;
    assert_eq!(
        body["scope"],
        "launch/patient openid fhirUser patient/Observation.rs"
    );
    assert_eq!(body["user"], json!(oracle.default_practitioner()));
    assert_eq!(body["need_patient_banner"], json!(true));
    let claims = claims_of(body["id_token"].as_str().unwrap());
    assert_eq!(
        claims["fhirUser"],
        format!("Practitioner/{}", oracle.default_practitioner())
    );
    assert!(
        claims["name"].is_string()
            && claims["given_name"].is_string()
            && claims["family_name"].is_string()
    );

    // The same request from a v1 client keeps everything.
    let (verifier, challenge) = pkce();
    let c = code(&oracle, "v1-app", scope, &challenge, &[]).await;
    let (status, body) = post_token(
        &oracle,
        &[
            ("grant_type", "authorization_code"),
            ("code", &c),
            ("redirect_uri", REDIRECT),
            ("client_id", "v1-app"),
            ("code_verifier", &verifier),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["scope"], scope);

    // Epic does not drop anything for a v2 client.
    let mut v2 = public_client();
    v2.v2_scopes = true;
    let epic = start(Vendor::Epic, vec![v2]).await;
    assert_eq!(public_flow(&epic, scope, &[]).await["scope"], scope);
}

async fn verify_id_token(
    mock: &MockEhr,
    id_token: &str,
) -> Result<Value, jsonwebtoken::errors::Error> {
    let jwks: jsonwebtoken::jwk::JwkSet = http()
        .get(mock.jwks_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(id_token)?;
    let jwk = jwks
        .find(header.kid.as_deref().unwrap_or_default())
        .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["public-app"]);
    validation.set_issuer(&[mock.iss()]);
    validation.leeway = 0;
    jsonwebtoken::decode::<Value>(id_token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .map(|d| d.claims)
}

#[tokio::test]
async fn id_tokens_verify_and_each_fault_shows() {
    use jsonwebtoken::errors::ErrorKind;
    let mock = start(Vendor::Generic, vec![public_client()]).await;
    let scope = "openid fhirUser profile";
    let body = public_flow(&mock, scope, &[("nonce", "n-0S6")]).await;
    let id_token = body["id_token"].as_str().unwrap();
    let claims = verify_id_token(&mock, id_token).await.unwrap();
    assert_eq!(claims["sub"], json!(mock.default_practitioner()));
    assert_eq!(claims["nonce"], "n-0S6");
    assert_eq!(
        claims["fhirUser"],
        format!(
            "{}/Practitioner/{}",
            mock.iss(),
            mock.default_practitioner()
        )
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );
    assert_eq!(header_of(id_token)["kid"], mock.signing_jwk()["kid"]);

    let defective = |fault| {
        mock.inject(Fault::IdToken(fault));
        async {
            public_flow(&mock, scope, &[]).await["id_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let kind = |r: Result<Value, jsonwebtoken::errors::Error>| r.unwrap_err().into_kind();

    let token = defective(IdTokenFault::BadSignature).await;
    assert_eq!(header_of(&token)["kid"], mock.signing_jwk()["kid"]);
    assert!(matches!(
        kind(verify_id_token(&mock, &token).await),
        ErrorKind::InvalidSignature
    ));

    let token = defective(IdTokenFault::WrongAudience).await;
    assert!(matches!(
        kind(verify_id_token(&mock, &token).await),
        ErrorKind::InvalidAudience
    ));

    let token = defective(IdTokenFault::Expired).await;
    assert!(matches!(
        kind(verify_id_token(&mock, &token).await),
        ErrorKind::ExpiredSignature
    ));
    assert!(claims_of(&token)["exp"].as_u64().unwrap() + 590 <= now_secs());

    let token = defective(IdTokenFault::WrongIssuer).await;
    assert!(matches!(
        kind(verify_id_token(&mock, &token).await),
        ErrorKind::InvalidIssuer
    ));

    let token = defective(IdTokenFault::AlgNone).await;
    assert_eq!(header_of(&token)["alg"], "none");
    assert!(token.ends_with('.'));
    assert!(verify_id_token(&mock, &token).await.is_err());

    let token = defective(IdTokenFault::Hs256WithPublicKey).await;
    assert_eq!(header_of(&token)["alg"], "HS256");
    assert!(matches!(
        kind(verify_id_token(&mock, &token).await),
        ErrorKind::InvalidAlgorithm
    ));
    // It is a genuine HMAC over the public key's PEM: a verifier that lets the token pick
    // the algorithm would accept it.
    let pem = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(
            &URL_SAFE_NO_PAD
                .decode(mock.signing_jwk()["n"].as_str().unwrap())
                .unwrap(),
        ),
        rsa::BigUint::from_bytes_be(
            &URL_SAFE_NO_PAD
                .decode(mock.signing_jwk()["e"].as_str().unwrap())
                .unwrap(),
        ),
    )
    .unwrap()
    .to_public_key_pem(LineEnding::LF)
    .unwrap();
    let mut hs = Validation::new(Algorithm::HS256);
    hs.set_audience(&["public-app"]);
    assert!(
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_secret(pem.as_bytes()), &hs)
            .is_ok()
    );

    // Faults are one-shot.
    let token = public_flow(&mock, scope, &[]).await["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(verify_id_token(&mock, &token).await.is_ok());
}

#[tokio::test]
async fn token_error_fault_answers_the_next_token_request() {
    let mock = start(Vendor::Generic, vec![public_client()]).await;
    mock.inject(Fault::TokenError {
        status: 503,
        error: "temporarily_unavailable".into(),
    });
    let (verifier, challenge) = pkce();
    let c = code(&mock, "public-app", "openid", &challenge, &[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", c.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", "public-app"),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, body) = post_token(&mock, &form, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("temporarily_unavailable")
        )
    );
    // The code was not consumed by the failed request.
    let (status, _) = post_token(&mock, &form, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mock.token_requests().len(), 2);
}

#[tokio::test]
async fn a_server_error_fault_answers_the_next_authorized_fhir_request() {
    let mock = start(Vendor::Epic, vec![public_client()]).await;
    let token = access_token(&public_flow(&mock, "launch/patient patient/*.read", &[]).await);
    let path = format!("Patient/{}", mock.default_patient());
    mock.inject(Fault::FhirServerError);
    // A request without a valid token is refused first and leaves the fault queued.
    let no_token = fhir_get(&mock, "made-up", &path).await;
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    let response = fhir_get(&mock, &token, &path).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(outcome["issue"][0]["code"], "exception");
    assert_eq!(
        fhir_get(&mock, &token, &path).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn expired_access_tokens_answer_401() {
    let mock = start(Vendor::Epic, vec![public_client()]).await;
    let token = access_token(&public_flow(&mock, "launch/patient patient/*.read", &[]).await);
    let path = format!("Patient/{}", mock.default_patient());
    assert_eq!(
        fhir_get(&mock, &token, &path).await.status(),
        StatusCode::OK
    );
    mock.expire_access_tokens();
    let response = fhir_get(&mock, &token, &path).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()[reqwest::header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with(r#"Bearer error="invalid_token""#),
        "{challenge}"
    );
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    // No token, or a made-up one, is 401 too.
    let response = http()
        .get(format!("{}/{path}", mock.iss()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        fhir_get(&mock, "made-up", &path).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Tokens issued afterwards work.
    let token = access_token(&public_flow(&mock, "launch/patient patient/*.read", &[]).await);
    assert_eq!(
        fhir_get(&mock, &token, &path).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn fhir_reads_searches_negotiation_and_compartment() {
    let mock = start(Vendor::Oracle, vec![public_client()]).await;
    let body = public_flow(
        &mock,
        "launch/patient patient/Patient.read patient/Observation.crus",
        &[],
    )
    .await;
    let token = access_token(&body);
    let patient = mock.default_patient();
    assert_eq!(patient, "12724066");

    let nancy: Value = fhir_get(&mock, &token, "Patient/12724066")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(nancy["name"][0]["family"], "SMART");
    assert_eq!(nancy["name"][1]["use"], "nickname");
    assert!(nancy["identifier"].as_array().unwrap().len() >= 3);
    assert!(nancy["birthDate"].is_string() && nancy["gender"] == "female");

    // The patient compartment: another patient is off limits to a patient-scoped token.
    assert_eq!(
        fhir_get(&mock, &token, "Patient/12724065").await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        fhir_get(&mock, &token, "Observation?patient=12724065")
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        fhir_get(&mock, &token, "Patient/nobody").await.status(),
        StatusCode::FORBIDDEN
    );

    let bundle: Value = fhir_get(
        &mock,
        &token,
        "Observation?patient=12724066&category=vital-signs",
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(bundle["total"], 2);
    assert_eq!(
        bundle["link"][0]["url"],
        format!(
            "{}/Observation?patient=12724066&category=vital-signs",
            mock.iss()
        )
    );
    assert!(
        bundle["entry"][0]["fullUrl"]
            .as_str()
            .unwrap()
            .starts_with(&mock.iss())
    );
    let bundle: Value = fhir_get(&mock, &token, "Patient?_id=12724066")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bundle["total"], 1);

    // fhirVersion negotiation.
    let accept = |value: &'static str| {
        let url = format!("{}/Patient/12724066", mock.iss());
        let token = token.clone();
        async move {
            http()
                .get(url)
                .bearer_auth(token)
                .header(reqwest::header::ACCEPT, value)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        accept("application/fhir+json; fhirVersion=4.0").await,
        StatusCode::OK
    );
    assert_eq!(
        accept("application/fhir+json;fhirVersion=4.0.1").await,
        StatusCode::OK
    );
    assert_eq!(
        accept("application/fhir+json; fhirVersion=4.3").await,
        StatusCode::NOT_ACCEPTABLE
    );
    assert_eq!(
        accept("application/fhir+json; fhirVersion=3.0").await,
        StatusCode::NOT_ACCEPTABLE
    );
    assert_eq!(accept("application/fhir+json").await, StatusCode::OK);

    // A user-scoped token (a clinician) may read any patient; an unknown one is 404.
    let body = public_flow(&mock, "openid user/Patient.read", &[]).await;
    let clinician = access_token(&body);
    assert_eq!(
        fhir_get(&mock, &clinician, "Patient/12724065")
            .await
            .status(),
        StatusCode::OK
    );
    let response = fhir_get(&mock, &clinician, "Patient/nobody").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.json::<Value>().await.unwrap()["resourceType"],
        "OperationOutcome"
    );
    let response = fhir_get(
        &mock,
        &clinician,
        &format!("Practitioner/{}", mock.default_practitioner()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    let recorded = mock.fhir_requests();
    assert!(
        recorded
            .iter()
            .any(|r| r.method == "GET" && r.path == "Patient/12724066")
    );
    let search = recorded.iter().find(|r| r.path == "Observation").unwrap();
    assert_eq!(search.query.as_deref(), Some("patient=12724065"));
    assert!(
        search
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && v.starts_with("Bearer "))
    );
}

#[tokio::test]
async fn observations_can_be_created_updated_patched_and_deleted() {
    let mock = start(Vendor::Epic, vec![public_client()]).await;
    let token =
        access_token(&public_flow(&mock, "launch/patient patient/Observation.cruds", &[]).await);
    let patient = mock.default_patient();
    let observation = json!({
        "resourceType": "Observation",
        "status": "preliminary",
        "code": { "text": "Pain score" },
        "subject": { "reference": format!("Patient/{patient}") },
        "valueInteger": 3
    });
    let send =
        |method: reqwest::Method, path: String, content_type: &'static str, body: Vec<u8>| {
            let url = format!("{}/{path}", mock.iss());
            let token = token.clone();
            async move {
                http()
                    .request(method, url)
                    .bearer_auth(token)
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
            }
        };
    let response = send(
        reqwest::Method::POST,
        "Observation".into(),
        "application/fhir+json",
        observation.to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!("{}/Observation/{id}/_history/1", mock.iss())
    );
    assert_eq!(created["valueInteger"], 3);

    let mut updated = created.clone();
    updated["status"] = json!("final");
    let response = send(
        reqwest::Method::PUT,
        format!("Observation/{id}"),
        "application/fhir+json",
        updated.to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap()["meta"]["versionId"],
        "2"
    );
    let response = send(
        reqwest::Method::PUT,
        "Observation/client-chosen".into(),
        "application/fhir+json",
        observation.to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);

    let patch = json!([{ "op": "replace", "path": "/valueInteger", "value": 5 }]);
    let response = send(
        reqwest::Method::PATCH,
        format!("Observation/{id}"),
        "application/json-patch+json",
        patch.to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let patched: Value = response.json().await.unwrap();
    assert_eq!(
        (patched["valueInteger"].as_i64(), patched["status"].as_str()),
        (Some(5), Some("final"))
    );

    let bundle: Value = fhir_get(&mock, &token, &format!("Observation?patient={patient}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["resource"]["id"] == json!(id))
    );

    let response = send(
        reqwest::Method::DELETE,
        format!("Observation/{id}"),
        "application/fhir+json",
        Vec::new(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        fhir_get(&mock, &token, &format!("Observation/{id}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // Writing into another patient's compartment is refused.
    let mut other = observation.clone();
    other["subject"]["reference"] = json!("Patient/eq081-VQEgP8drUUqCWzHfw3");
    let response = send(
        reqwest::Method::POST,
        "Observation".into(),
        "application/fhir+json",
        other.to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let recorded = mock.fhir_requests();
    assert!(
        recorded
            .iter()
            .any(|r| r.method == "PATCH" && r.body == patch.to_string().into_bytes())
    );
}

#[tokio::test]
async fn binary_large_streams_four_mebibytes() {
    let mock = start(Vendor::Generic, vec![public_client()]).await;
    let token = access_token(&public_flow(&mock, "user/Binary.read", &[]).await);
    let response = fhir_get(&mock, &token, "Binary/large").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[reqwest::header::CONTENT_TYPE],
        "application/octet-stream"
    );
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len(), 4 * 1024 * 1024);
    assert!(bytes.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

#[tokio::test]
async fn revocation_and_introspection() {
    let mock = start(
        Vendor::Generic,
        vec![MockClient::symmetric("conf-app", "secret", REDIRECT)],
    )
    .await;
    let (verifier, challenge) = pkce();
    let c = code(
        &mock,
        "conf-app",
        "launch/patient patient/*.read offline_access fhirUser",
        &challenge,
        &[],
    )
    .await;
    let (status, body) = post_token(
        &mock,
        &[
            ("grant_type", "authorization_code"),
            ("code", &c),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
        Some(("conf-app", "secret")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let token = access_token(&body);
    let refresh_token = body["refresh_token"].as_str().unwrap().to_owned();
    let base = mock.base_url();

    let introspect = |token: String| {
        let url = format!("{base}/auth/introspect");
        async move {
            http()
                .post(url)
                .basic_auth("conf-app", Some("secret"))
                .form(&[("token", token)])
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let info = introspect(token.clone()).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["client_id"], "conf-app");
    assert_eq!(info["patient"], json!(mock.default_patient()));
    assert!(info["exp"].is_u64() && info["scope"].is_string());

    for revoked in [&token, &refresh_token] {
        let response = http()
            .post(format!("{base}/auth/revoke"))
            .basic_auth("conf-app", Some("secret"))
            .form(&[("token", revoked.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(introspect(token.clone()).await, json!({ "active": false }));
    assert_eq!(
        fhir_get(&mock, &token, "Patient/x").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = post_token(
        &mock,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
        ],
        Some(("conf-app", "secret")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_fhir_request_log_is_capped() {
    let mock = start(Vendor::Generic, vec![public_client()]).await;
    let client = http();
    for i in 0..FHIR_LOG_CAP + 5 {
        let status = client
            .get(format!("{}/Patient/p{i}", mock.iss()))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let recorded = mock.fhir_requests();
    assert_eq!(recorded.len(), FHIR_LOG_CAP);
    assert_eq!(recorded[0].path, "Patient/p5");
}

#[test]
fn scope_parsing_tells_v1_from_v2() {
    use super::authorize::ClinicalScope;
    let v1 = ClinicalScope::parse("patient/*.read").unwrap();
    assert!(v1.v1 && v1.read && v1.resource == "*");
    let v2 = ClinicalScope::parse("user/Observation.rs?category=laboratory").unwrap();
    assert!(!v2.v1 && v2.read && v2.context == "user");
    assert!(
        ClinicalScope::parse("patient/Observation.sr").is_none(),
        "v2 letters are ordered"
    );
    assert!(ClinicalScope::parse("patient/Observation.").is_none());
    assert!(ClinicalScope::parse("openid").is_none());
    assert!(ClinicalScope::parse("group/Patient.read").is_none());
}

/// The served documents keep the member sets of the vendors' published ones
/// (`fixtures/smart/`), plus only the members the mock adds on purpose.
#[tokio::test]
async fn served_discovery_documents_match_the_vendor_fixtures() {
    let fixtures = [
        (
            Vendor::Epic,
            include_str!("../../../../fixtures/smart/epic-smart-configuration.json"),
            vec![
                "x_mock_ehr",
                "token_endpoint_auth_signing_alg_values_supported",
                "introspection_endpoint",
            ],
        ),
        (
            Vendor::Oracle,
            include_str!("../../../../fixtures/smart/oracle-smart-configuration.json"),
            vec!["x_mock_ehr"],
        ),
    ];
    for (vendor, fixture, added) in fixtures {
        let published: Value = serde_json::from_str(fixture).unwrap();
        let mock = start(vendor, vec![public_client()]).await;
        let served: Value = http()
            .get(format!("{}/.well-known/smart-configuration", mock.iss()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let keys = |v: &Value| -> std::collections::BTreeSet<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        let mut expected = keys(&published);
        expected.extend(added.iter().map(|k| (*k).to_owned()));
        assert_eq!(keys(&served), expected, "{vendor:?}");
        for member in [
            "capabilities",
            "grant_types_supported",
            "token_endpoint_auth_methods_supported",
            "code_challenge_methods_supported",
            "response_types_supported",
        ] {
            assert_eq!(served[member], published[member], "{vendor:?} {member}");
        }
        if vendor == Vendor::Epic {
            assert_eq!(served["scopes_supported"], published["scopes_supported"]);
        }
    }

    // Oracle lists its oauth-uris in this order.
    let published: Value = serde_json::from_str(include_str!(
        "../../../../fixtures/smart/oracle-metadata.json"
    ))
    .unwrap();
    let names = |statement: &Value| -> Vec<String> {
        statement["rest"][0]["security"]["extension"][0]["extension"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["url"].as_str().unwrap().to_owned())
            .collect()
    };
    let mock = start(Vendor::Oracle, vec![public_client()]).await;
    let served: Value = http()
        .get(format!("{}/metadata", mock.iss()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(names(&served), names(&published));
    assert_eq!(
        served["rest"][0]["security"]["service"],
        published["rest"][0]["security"]["service"]
    );
}

#[tokio::test]
async fn authorize_accepts_a_form_post() {
    let mock = start(Vendor::Oracle, vec![public_client()]).await;
    let (_, challenge) = pkce();
    let iss = mock.iss();
    let response = http()
        .post(mock.authorize_url())
        .form(&[
            ("response_type", "code"),
            ("client_id", "public-app"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid fhirUser"),
            ("state", "st-123"),
            ("aud", iss.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert!(location_params(&response).contains_key("code"));
}

#[tokio::test]
async fn fhir_answers_can_come_chunked() {
    let mut opts = MockEhrOptions::new(Vendor::Generic, vec![public_client()]);
    opts.fhir_chunked = true;
    let mock = MockEhr::start(opts).await.unwrap();
    let token = access_token(&public_flow(&mock, "launch/patient patient/*.read", &[]).await);
    let patient = mock.default_patient();
    let resp = fhir_get(&mock, &token, &format!("Patient/{patient}")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get(reqwest::header::TRANSFER_ENCODING)
            .unwrap(),
        "chunked"
    );
    assert!(
        resp.headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .is_none()
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["resourceType"], "Patient");
}
