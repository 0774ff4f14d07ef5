//! The API contract: `/openapi.json` and `/docs`, and the error statuses the document
//! promises on every operation of a kind (an oversized body, an expired launch, a launch of
//! the wrong kind, an unreachable partner), reached here once per operation.

use chrono::{Duration, Utc};
use partner_gateway::apikeys::Role;
use partner_gateway::launches::{Launch, LaunchKind};
use serde_json::{Map, Value, json};

use crate::helpers::TestApp;

/// The document's operations: (method, path template, operation).
pub(crate) fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                out.push((method.clone(), path.clone(), op.clone()));
            }
        }
    }
    out
}

/// A concrete path: every `{param}` replaced by `value`.
fn fill(template: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let j = rest[i..].find('}').unwrap() + i;
        let name = &rest[i + 1..j];
        out.push_str(if name == "path" { "Patient/123" } else { value });
        rest = &rest[j + 1..];
    }
    out.push_str(rest);
    out
}

pub(crate) fn documents(op: &Value, status: u16) -> bool {
    op["responses"].get(status.to_string()).is_some()
}

pub(crate) async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut req = app.client.request(m, app.url(path)).bearer_auth(key);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

pub(crate) async fn document(app: &TestApp) -> Value {
    let resp = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// An LMS that does not answer: its token and service URLs are a closed loopback port.
const LMS_DOWN: &str = r#"
[outbound]
allow_http = true
private_networks = ["127.0.0.1"]
[[partners]]
id = "lms-down"
name = "An LMS that does not answer"
kind = "lms"
[partners.lti]
app_url = "http://127.0.0.1:3000/lti"
[[partners.lti.platforms]]
vendor = "moodle"
issuer = "https://lms-down.example"
client_id = "down"
deployment_ids = ["1"]
auth_url = "http://127.0.0.1:9/auth"
token_url = "http://127.0.0.1:9/token"
jwks_url = "http://127.0.0.1:9/jwks"
[[partners.lti.lti11]]
consumer_key = "down-key"
shared_secret = "down-secret-of-16+"
[[partners]]
id = "ehr-down"
name = "An EHR that does not answer"
kind = "ehr"
[partners.smart]
vendor = "epic"
issuers = ["http://127.0.0.1:9/fhir"]
client_id = "down"
client_type = "public"
scopes = ["openid", "fhirUser", "launch"]
app_url = "http://127.0.0.1:3000/launch"
[partners.smart.backend]
client_id = "backend-down"
scopes = ["system/Patient.rs"]
"#;

crate::both_backends! {
    // A live SMART launch whose FHIR server does not answer: 502 naming it, on every FHIR
    // operation (the proxy and the patient summary).
    async fn fhir_operations_answer_502_when_the_ehr_does_not_answer(backend) {
        let Some(app) = TestApp::spawn_with(backend, LMS_DOWN, partner_gateway::jobs::Handlers::new()).await else { return };
        let doc = document(&app).await;
        let app_key = app.key(Role::App, None).await;
        let smart = insert_launch(&app, LaunchKind::Smart, 60, smart_context("http://127.0.0.1:9/fhir")).await;
        let mut checked = 0;
        for (method, path, op) in operations(&doc) {
            let fhir = path.starts_with("/v1/launches/{launch_id}/fhir/") || path == "/v1/launches/{launch_id}/patient";
            if !fhir || !documents(&op, 502) {
                continue;
            }
            let body = (method != "get" && method != "delete").then(|| b"{}".to_vec());
            let (status, body) = send(&app, &method, &fill(&path, &smart), &app_key, body.clone()).await;
            assert_eq!(status, 502, "{method} {path}: {body}");
            checked += 1;
            if path.contains("/fhir/") {
                // A path that would leave the FHIR base is refused before any call.
                let bad = fill(&path, &smart).replace("Patient/123", "Patient%2F..%2Fadmin");
                let (status, body) = send(&app, &method, &bad, &app_key, None).await;
                assert_eq!(status, 400, "{method} {bad}: {body}");
                assert_eq!(body["code"], "invalid_fhir_path");
            }
        }
        assert_eq!(checked, 6);
        // Methods FHIR does not use are refused with 405 and Allow, before any call.
        let admin = app.admin().await;
        for (path, key) in [(format!("/v1/launches/{smart}/fhir/Patient/123"), &app_key), ("/v1/partners/ehr-down/fhir/Patient/123".to_owned(), &admin)] {
            for method in ["TRACE", "OPTIONS"] {
                let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                let r = app.client.request(m, app.url(&path)).bearer_auth(key).send().await.unwrap();
                assert_eq!(r.status(), 405, "{method} {path}");
                assert_eq!(r.headers()["allow"], "GET, HEAD, POST, PUT, PATCH, DELETE");
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["code"], "method_not_allowed");
            }
        }
        // Backend Services of an EHR that does not answer: 502 on every method.
        for method in ["get", "post", "put", "patch", "delete"] {
            let body = (method != "get" && method != "delete").then(|| b"{}".to_vec());
            let (status, body) = send(&app, method, "/v1/partners/ehr-down/fhir/Patient/123", &admin, body).await;
            assert_eq!(status, 502, "{method}: {body}");
        }
    }

    // LTI operations on a live launch whose LMS does not answer: bad input is refused
    // before any call (400), and the unreachable LMS is a 502 naming it.
    async fn lti_operations_refuse_bad_input_and_answer_502_when_the_lms_does_not_answer(backend) {
        let Some(app) = TestApp::spawn_with(backend, LMS_DOWN, partner_gateway::jobs::Handlers::new()).await else { return };
        let app_key = app.key(Role::App, None).await;
        let ags = json!({
            "scope": [
                "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
                "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly",
                "https://purl.imsglobal.org/spec/lti-ags/scope/score"
            ],
            "lineitems": "http://127.0.0.1:9/course-1/lineitems",
            "lineitem": "http://127.0.0.1:9/course-1/lineitems/1"
        });
        let mut ctx = lti_context();
        ctx.insert("iss".into(), json!("https://lms-down.example"));
        ctx.insert("client_id".into(), json!("down"));
        ctx.insert("deployment_id".into(), json!("1"));
        ctx.insert("ags".into(), ags);
        ctx.insert("nrps".into(), json!({"context_memberships_url": "http://127.0.0.1:9/course-1/members", "service_versions": ["2.0"]}));
        let id = insert_launch_of(&app, Some("lms-down"), LaunchKind::Lti, 60, ctx).await;
        let item = format!("/v1/launches/{id}/lineitems/item?id={}", crate::helpers::urlencode("http://127.0.0.1:9/course-1/lineitems/1"));
        // 400s, before any call.
        for (method, path, body, code) in [
            ("get", format!("/v1/launches/{id}/lineitems/item"), None, "missing_id"),
            ("put", item.clone(), Some(b"not json".to_vec()), "invalid_body"),
            ("post", format!("/v1/launches/{id}/lineitems"), Some(br#"{"label": ""}"#.to_vec()), "invalid_line_item"),
        ] {
            let (status, body) = send(&app, method, &path, &app_key, body).await;
            assert_eq!(status, 400, "{method} {path}: {body}");
            assert_eq!(body["code"], code, "{method} {path}");
        }
        // 502s: the token request fails.
        let line_item = serde_json::to_vec(&json!({"label": "Quiz", "scoreMaximum": 10})).unwrap();
        for (method, path, body) in [
            ("get", format!("/v1/launches/{id}/lineitems"), None),
            ("post", format!("/v1/launches/{id}/lineitems"), Some(line_item.clone())),
            ("get", item.clone(), None),
            ("put", item.clone(), Some(line_item.clone())),
            ("delete", item.clone(), None),
            ("get", format!("/v1/launches/{id}/members"), None),
        ] {
            let (status, body) = send(&app, method, &path, &app_key, body).await;
            assert_eq!(status, 502, "{method} {path}: {body}");
            assert!(body["code"].as_str().unwrap().starts_with("lms_"), "{method} {path}: {body}");
        }
        // LTI 1.1 outcomes whose service does not answer.
        let legacy = json!({
            "lti_version": "1.1",
            "consumer_key": "down-key",
            "outcome": {"service_url": "http://127.0.0.1:9/outcomes", "sourcedid": "s-1"}
        });
        let legacy = insert_launch_of(&app, Some("lms-down"), LaunchKind::Lti, 60, legacy.as_object().cloned().unwrap()).await;
        for method in ["get", "delete"] {
            let (status, body) = send(&app, method, &format!("/v1/launches/{legacy}/outcome"), &app_key, None).await;
            assert_eq!(status, 502, "{method} outcome: {body}");
            assert_eq!(body["code"], "lms_unreachable", "{body}");
        }
    }
}

crate::both! {
    async fn the_document_is_openapi_3_1_with_roles_errors_and_examples(app) {
        let doc = document(&app).await;
        assert_eq!(doc["openapi"], "3.1.0");
        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        for role in ["admin_key", "finance_key", "partner_key", "app_key"] {
            assert_eq!(schemes[role]["type"], "http", "{role}");
            assert_eq!(schemes[role]["scheme"], "bearer", "{role}");
        }
        let error = &doc["components"]["schemas"]["ErrorBody"];
        assert_eq!(error["required"], json!(["code", "detail"]));
        let ops = operations(&doc);
        assert!(ops.len() >= 50, "{}", ops.len());
        for (method, path, op) in &ops {
            assert!(path.starts_with("/v1/"), "{path}");
            assert!(op["security"].as_array().is_some_and(|s| !s.is_empty()), "{method} {path}");
            assert!(documents(op, 401), "{method} {path} does not document 401");
            assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()), "{method} {path}");
        }
        // Examples a partner engineer starts from.
        let schemas = &doc["components"]["schemas"];
        for name in ["LaunchView", "UsageReport", "Partner", "NewEndpoint", "GenerateRequest"] {
            assert!(schemas[name]["example"].is_object(), "{name} has no example");
        }
        // The same document on every request (it is built once, from the code).
        assert_eq!(document(&app).await, doc);
    }

    // Every operation refuses a request without a key, or with an unknown one, with 401 and
    // `WWW-Authenticate: Bearer`.
    async fn every_operation_needs_a_key(app) {
        let doc = document(&app).await;
        for (method, path, _) in operations(&doc) {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let url = app.url(&fill(&path, "x"));
            let resp = app.client.request(m.clone(), &url).send().await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer", "{method} {path}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["code"], "unauthorized", "{method} {path}");
            let resp = app.client.request(m, &url).bearer_auth("pgw_not_a_key").send().await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} with an unknown key");
        }
    }

    async fn docs_page_renders_the_document_from_the_gateways_own_assets(app) {
        let resp = app.client.get(app.url("/docs/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let page = resp.text().await.unwrap();
        assert!(page.contains("swagger-ui"), "{page}");
        assert!(!page.contains("https://") && !page.contains("http://"), "external asset in {page}");
        for asset in ["swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"] {
            let r = app.client.get(app.url(&format!("/docs/{asset}"))).send().await.unwrap();
            assert_eq!(r.status(), 200, "{asset}");
            assert!(r.bytes().await.unwrap().len() > 1000, "{asset}");
        }
        let init = app.client.get(app.url("/docs/swagger-initializer.js")).send().await.unwrap();
        assert!(init.text().await.unwrap().contains("/openapi.json"));
    }

    // Every operation that reads a body refuses one over `http.body_limit_bytes` with the
    // JSON 413, before anything else is done with it.
    async fn every_operation_with_a_body_refuses_an_oversized_one_with_413(app) {
        let doc = document(&app).await;
        let admin = app.admin().await;
        let app_key = app.key(Role::App, None).await;
        let big = vec![b' '; 1024 * 1024 + 1];
        let mut checked = 0;
        for (method, path, op) in operations(&doc) {
            if op.get("requestBody").is_none() || !documents(&op, 413) {
                continue;
            }
            let key = if op_accepts(&op, "admin_key") { &admin } else { &app_key };
            let (status, body) = send(&app, &method, &fill(&path, "x"), key, Some(big.clone())).await;
            assert_eq!(status, 413, "{method} {path}: {body}");
            assert_eq!(body["code"], "payload_too_large", "{method} {path}");
            checked += 1;
        }
        assert!(checked >= 14, "{checked}");
    }

    // Every operation on a launch answers 410 once the launch has expired (SMART and LTI).
    async fn every_launch_operation_answers_410_for_an_expired_launch(app) {
        let doc = document(&app).await;
        let app_key = app.key(Role::App, None).await;
        let lti = insert_launch(&app, LaunchKind::Lti, -1, lti_context()).await;
        let smart = insert_launch(&app, LaunchKind::Smart, -1, smart_context("http://127.0.0.1:9")).await;
        let mut checked = 0;
        for (method, path, op) in operations(&doc) {
            if !path.starts_with("/v1/launches/{launch_id}") || !documents(&op, 410) {
                continue;
            }
            let id = if path.contains("/fhir/") || path.ends_with("/patient") { &smart } else { &lti };
            let body = (method != "get" && method != "delete").then(|| b"{}".to_vec());
            let (status, body) = send(&app, &method, &fill(&path, id), &app_key, body).await;
            assert_eq!(status, 410, "{method} {path}: {body}");
            assert_eq!(body["code"], "gone", "{method} {path}");
            checked += 1;
        }
        assert!(checked >= 15, "{checked}");
    }

    // A launch of the wrong kind is a 409 that says so: LTI operations on a SMART launch,
    // FHIR on an LTI launch, LTI 1.1 outcomes on an LTI 1.3 launch, deep linking on a
    // resource-link launch.
    async fn operations_on_a_launch_of_the_wrong_kind_answer_409(app) {
        let doc = document(&app).await;
        let app_key = app.key(Role::App, None).await;
        let lti = insert_launch(&app, LaunchKind::Lti, 60, lti_context()).await;
        let smart = insert_launch(&app, LaunchKind::Smart, 60, smart_context("http://127.0.0.1:9")).await;
        let mut checked = 0;
        for (method, path, op) in operations(&doc) {
            if !path.starts_with("/v1/launches/{launch_id}") || !documents(&op, 409) {
                continue;
            }
            let fhir = path.contains("/fhir/") || path.ends_with("/patient");
            let id = if fhir { &lti } else { &smart };
            let body = match (method.as_str(), path.rsplit('/').next()) {
                ("post", Some("scores")) => Some(serde_json::to_vec(&json!({"scoreGiven": 1, "scoreMaximum": 2, "activityProgress": "Completed", "gradingProgress": "FullyGraded"})).unwrap()),
                ("post", Some("lineitems")) => Some(serde_json::to_vec(&json!({"label": "Quiz", "scoreMaximum": 10})).unwrap()),
                ("put", _) => Some(serde_json::to_vec(&json!({"label": "Quiz", "scoreMaximum": 10})).unwrap()),
                ("post", _) | ("patch", _) => Some(serde_json::to_vec(&json!({"content_items": [{"type": "link", "url": "https://app.example/x"}]})).unwrap()),
                _ => None,
            };
            let url = if path.ends_with("/item") { format!("{}?id=https://lms.example/li/1", fill(&path, id)) } else { fill(&path, id) };
            let (status, body) = send(&app, &method, &url, &app_key, body).await;
            assert_eq!(status, 409, "{method} {path}: {body}");
            assert_eq!(body["code"], "conflict", "{method} {path}");
            checked += 1;
        }
        // LTI 1.1 outcomes on an LTI 1.3 launch.
        for method in ["get", "delete"] {
            let (status, body) = send(&app, method, &format!("/v1/launches/{lti}/outcome"), &app_key, None).await;
            assert_eq!(status, 409, "{method} outcome: {body}");
            assert!(body["detail"].as_str().unwrap().contains("LTI 1.1"), "{body}");
        }
        assert!(checked >= 15, "{checked}");
    }

}

pub(crate) fn op_accepts(op: &Value, scheme: &str) -> bool {
    op["security"]
        .as_array()
        .is_some_and(|s| s.iter().any(|r| r.get(scheme).is_some()))
}

pub(crate) fn lti_context() -> Map<String, Value> {
    json!({
        "lti_version": "1.3.0",
        "message_type": "LtiResourceLinkRequest",
        "iss": "https://canvas.instructure.com",
        "client_id": "10000000000001",
        "deployment_id": "1:abc",
        "context": {"id": "course-1", "title": "Biology 101"},
        "resource_link": {"id": "rl-1"},
        "roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"],
    })
    .as_object()
    .cloned()
    .unwrap()
}

pub(crate) fn smart_context(iss: &str) -> Map<String, Value> {
    json!({"iss": iss, "patient": "123"})
        .as_object()
        .cloned()
        .unwrap()
}

/// A launch straight into the store (with a SMART session for SMART launches), ending
/// `minutes` from now (negative: already expired).
async fn insert_launch(
    app: &TestApp,
    kind: LaunchKind,
    minutes: i64,
    context: Map<String, Value>,
) -> String {
    insert_launch_of(app, None, kind, minutes, context).await
}

pub(crate) async fn insert_launch_of(
    app: &TestApp,
    partner: Option<&str>,
    kind: LaunchKind,
    minutes: i64,
    context: Map<String, Value>,
) -> String {
    let now = Utc::now();
    let partner = partner.unwrap_or(match kind {
        LaunchKind::Smart => "epic-sandbox",
        _ => "canvas-sandbox",
    });
    let launch = Launch {
        id: format!("lch_{}", uuid::Uuid::now_v7().simple()),
        partner_id: partner.into(),
        kind,
        user_id: Some("user-1".into()),
        user_name: Some("Ada".into()),
        scopes: vec![],
        created_at: now - Duration::hours(2),
        expires_at: now + Duration::minutes(minutes),
        context: context.clone(),
        sandbox: false,
    };
    let mut tx = app.db().begin().await.unwrap();
    partner_gateway::launches::store::insert_launch(&mut tx, &launch)
        .await
        .unwrap();
    if kind == LaunchKind::Smart {
        let iss = context["iss"].as_str().unwrap().to_owned();
        let session = partner_gateway::smart::store::Session {
            launch_id: launch.id.clone(),
            partner_id: partner.into(),
            iss,
            token_endpoint: "http://127.0.0.1:9/token".into(),
            access_token: "at".into(),
            refresh_token: None,
            access_expires_at_us: partner_gateway::time::to_micros(now + Duration::hours(1)),
            version: 1,
            launch_expires_at_us: partner_gateway::time::to_micros(launch.expires_at),
        };
        partner_gateway::smart::store::insert_session(
            &mut tx,
            &app.state.master_key,
            &session,
            partner_gateway::time::to_micros(now),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    launch.id
}

crate::both! {
    // /docs showed one example (a jobs listing's) for every error of every operation.
    async fn each_error_response_has_an_example_of_its_own_status(app) {
        let doc = document(&app).await;
        let responses = doc["components"]["responses"].as_object().unwrap();
        let mut codes = std::collections::HashSet::new();
        for (name, r) in responses {
            let Some(example) = r.pointer("/content/application~1json/example") else { continue };
            let code = example["code"].as_str().unwrap_or_else(|| panic!("{name}: {example}"));
            assert!(!example["detail"].as_str().unwrap_or("").is_empty(), "{name}");
            codes.insert(code.to_owned());
        }
        assert!(codes.len() >= 8, "distinct examples: {codes:?}");
        assert!(codes.contains("not_found") && codes.contains("validation_failed") && codes.contains("forbidden"));
    }
}

/// The schema a `$ref` points at (or the schema itself).
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling {r}")),
        None => schema,
    }
}

crate::both! {
    // Six envelopes (`data`, `statements`, `messages` + `next_before`, `endpoints`,
    // `connections`, `registrations`) became one, each with the same paging parameters.
    async fn every_list_operation_has_one_envelope_and_cursor_paging(app) {
        let doc = document(&app).await;
        let mut lists = Vec::new();
        for (method, path, op) in operations(&doc) {
            if method != "get" || path == "/v1/usage/query" || path.contains("/fhir/") {
                continue;
            }
            let Some(schema) = op.pointer("/responses/200/content/application~1json/schema") else { continue };
            let schema = resolve(&doc, schema);
            assert_ne!(schema["type"], "array", "{path} answers a bare array");
            // A list: named so (`list_...`), or answering a `data` array.
            let Some(props) = schema["properties"].as_object() else { continue };
            let named = op["operationId"].as_str().is_some_and(|id| id.starts_with("list_"));
            if !named && !props.contains_key("data") {
                continue;
            }
            let mut keys: Vec<&str> = props.keys().map(String::as_str).collect();
            keys.sort();
            assert_eq!(keys, ["data", "next_cursor"], "{path}: its list envelope");
            let params: Vec<&str> = op["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter(|p| p["in"] == "query").filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            assert!(params.contains(&"limit") && params.contains(&"cursor"), "{path}: paging parameters {params:?}");
            lists.push(path);
        }
        assert!(lists.len() >= 13, "list operations found: {lists:?}");
    }

    async fn every_changing_operation_documents_the_idempotency_key(app) {
        let doc = document(&app).await;
        for (method, path, op) in operations(&doc) {
            let header = op["parameters"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == "Idempotency-Key"));
            if method == "get" {
                assert!(header.is_none(), "{path}");
                continue;
            }
            let header = header.unwrap_or_else(|| panic!("{method} {path} has no Idempotency-Key"));
            assert_eq!(header["in"], "header");
            for status in ["400", "409", "422"] {
                assert!(op["responses"].get(status).is_some(), "{method} {path}: {status}");
            }
        }
    }
}
