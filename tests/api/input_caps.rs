//! What the API accepts as input, read from the served `/openapi.json`: U+0000 in any
//! string of any JSON body, in any path parameter or query parameter is refused with a 400
//! `nul_character` naming where (never a 500, on either backend); lists are capped. The
//! 413 for oversized bodies is `openapi::every_operation_with_a_body_refuses_an_oversized_one_with_413`.
//! Also: the browser routes' forms and queries, a signed LTI launch carrying NUL (scrubbed,
//! it works), and the slow-header timeout.

use std::time::{Duration, Instant};

use partner_gateway::apikeys::Role;
use partner_sim::lms::{MockUser, Personality};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::TestApp;
use crate::openapi::{document, op_accepts, operations, send};

/// The example body of an operation (or a small object when it documents none).
fn example_body(doc: &Value, op: &Value) -> Option<Value> {
    let content = op.get("requestBody")?.get("content")?.as_object()?;
    let (_, media) = content.iter().next()?;
    let schema = &media["schema"];
    let example = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => doc["components"]["schemas"][r.rsplit('/').next().unwrap()]["example"].clone(),
        None => schema.get("example").cloned().unwrap_or(Value::Null),
    };
    Some(if example.is_object() || example.is_array() {
        example
    } else {
        json!({"note": "x"})
    })
}

/// JSON pointers of every string value in `v`.
fn string_pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::String(_) => out.push(at.to_owned()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                string_pointers(item, &format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                string_pointers(
                    item,
                    &format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        _ => {}
    }
}

fn key_for<'a>(
    op: &Value,
    admin: &'a str,
    app_key: &'a str,
    finance: &'a str,
    partner: &'a str,
) -> &'a str {
    if op_accepts(op, "admin_key") {
        admin
    } else if op_accepts(op, "app_key") {
        app_key
    } else if op_accepts(op, "finance_key") {
        finance
    } else {
        partner
    }
}

fn is_nul_refusal(status: u16, body: &Value, place: &str) -> bool {
    status == 400
        && body["code"] == "nul_character"
        && body["detail"].as_str().is_some_and(|d| d.contains(place))
}

crate::both! {
    // Every string of every documented body, every path parameter, a query parameter: a NUL
    // there is a 400 naming it, before the handler (so never a 500 from PostgreSQL).
    async fn a_nul_anywhere_in_an_api_request_is_refused_naming_where(app) {
        let doc = document(&app).await;
        let admin = app.admin().await;
        let app_key = app.key(Role::App, None).await;
        let finance = app.key(Role::Finance, None).await;
        let partner = app.partner_key("epic-sandbox").await;
        let mut bodies = 0;
        for (method, path, op) in operations(&doc) {
            let key = key_for(&op, &admin, &app_key, &finance, &partner);
            let url = path.replace("{path}", "Patient/123").replace(['{', '}'], "");
            // The FHIR proxies pass bodies through to the EHR unread.
            if let Some(example) = example_body(&doc, &op).filter(|_| !path.contains("/fhir/")) {
                let mut pointers = Vec::new();
                string_pointers(&example, "", &mut pointers);
                for pointer in &pointers {
                    let mut body = example.clone();
                    let s = body.pointer_mut(pointer).unwrap();
                    *s = json!(format!("{}\u{0}", s.as_str().unwrap()));
                    let (status, resp) = send(&app, &method, &url, key, Some(body.to_string().into_bytes())).await;
                    assert!(is_nul_refusal(status, &resp, pointer), "{method} {path} with NUL at {pointer}: {status} {resp}");
                    bodies += 1;
                }
                // In a key too.
                let mut body = example.clone();
                if let Some(obj) = body.as_object_mut() {
                    obj.insert("k\u{0}".into(), json!(1));
                    let (status, resp) = send(&app, &method, &url, key, Some(body.to_string().into_bytes())).await;
                    assert!(is_nul_refusal(status, &resp, "/k\\u0000"), "{method} {path} with NUL in a key: {status} {resp}");
                }
            }
            // Each path parameter.
            let names: Vec<&str> = path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();
            for name in names {
                let url = path
                    .replace(&format!("{{{name}}}"), "x%00y")
                    .replace("{path}", "Patient/123")
                    .replace(['{', '}'], "");
                let (status, resp) = send(&app, &method, &url, key, None).await;
                assert!(is_nul_refusal(status, &resp, &format!("\"{name}\"")), "{method} {url}: {status} {resp}");
            }
            // A query parameter, documented or not.
            let (status, resp) = send(&app, &method, &format!("{url}?partner=a%00b"), key, None).await;
            assert!(is_nul_refusal(status, &resp, "\"partner\""), "{method} {path}?partner=NUL: {status} {resp}");
        }
        assert!(bodies >= 30, "{bodies}");
        // Nothing reached the ledger or the endpoints table.
        assert_eq!(app.ledger_count().await, 0);
    }

    // Lists the API reads are capped, with a 400 that names the cap.
    async fn lists_over_their_cap_are_refused_with_400(app) {
        let admin = app.admin().await;
        // group_by: 5000 fields (a 500 on both backends before), repeats, and the cap.
        let many = vec!["subject"; 5000].join(",");
        for group_by in [many.as_str(), "subject,subject"] {
            let (status, body) = app.query(&admin, &[("meter", "session_minutes"), ("partner", "epic-sandbox"), ("from", "2026-11-01T00:00:00Z"), ("group_by", group_by)]).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["errors"][0]["field"], "group_by", "{body}");
        }
        let (status, body) = app.query(&admin, &[("meter", "session_minutes"), ("partner", "epic-sandbox"), ("from", "2026-11-01T00:00:00Z"), ("group_by", "subject,$.course")]).await;
        assert_eq!(status, 200, "{body}");
        // A batch of 1001 events.
        let events: Vec<Value> = (0..1001)
            .map(|i| json!({"specversion": "1.0", "id": format!("e{i}"), "source": "/t", "type": "app.session", "partner": "epic-sandbox"}))
            .collect();
        let r = app.post_json(&admin, &Value::Array(events)).await;
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "batch_too_large");
        // An endpoint's event-type filter of 101 entries.
        let types: Vec<String> = (0..101).map(|i| format!("t.n{i}")).collect();
        let (status, body) = send(&app, "post", "/v1/webhooks/endpoints", &admin,
            Some(json!({"partner": "epic-sandbox", "url": "https://hooks.example/x", "event_types": types}).to_string().into_bytes())).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errors"][0]["field"], "event_types", "{body}");
        // A Deep Linking answer of 101 content items.
        let mut ctx = crate::openapi::lti_context();
        ctx.insert("message_type".into(), json!("LtiDeepLinkingRequest"));
        let launch = crate::openapi::insert_launch_of(&app, None, partner_gateway::launches::LaunchKind::Lti, 60, ctx).await;
        let app_key = app.key(Role::App, None).await;
        let items: Vec<Value> = (0..101).map(|i| json!({"type": "link", "url": format!("https://app.example/{i}")})).collect();
        let (status, body) = send(&app, "post", &format!("/v1/launches/{launch}/deep-link"), &app_key,
            Some(json!({"content_items": items}).to_string().into_bytes())).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], "too_many_items", "{body}");
        // Statement statuses: repeats fold into one filter.
        let finance = app.key(Role::Finance, None).await;
        let statuses = vec!["draft"; 2000].join(",");
        let r = app.get(&finance, &format!("/v1/statements?status={statuses}")).await;
        assert_eq!(r.status(), 200);
    }

    // The browser routes read forms and queries: a NUL there gets a readable page.
    async fn a_nul_in_a_browser_form_or_query_gets_a_400_page(app) {
        for (method, path, body) in [
            ("get", "/smart/launch?iss=https%3A%2F%2Fehr.example&launch=a%00b", None),
            ("get", "/lti/login?iss=x&login_hint=a%00b", None),
            ("post", "/lti/login", Some("iss=x&login_hint=a%00b")),
            ("post", "/lti/launch", Some("state=s&id_token=a%00b")),
            ("get", "/sso/start?email=a%00%40acme.example", None),
        ] {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut req = app.client.request(m, app.url(path));
            if let Some(b) = body {
                req = req.header("content-type", "application/x-www-form-urlencoded").body(b);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 400, "{method} {path}");
            assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{method} {path}");
            let page = r.text().await.unwrap();
            assert!(page.contains("NUL character (U+0000)"), "{method} {path}: {page}");
        }
    }
}

crate::both_backends! {
    // A platform signed a NUL into the user's `sub` and `name`: the launch works, the NUL
    // stored as U+FFFD (PostgreSQL refused the launch with a 500 before).
    async fn a_signed_lti_launch_with_nul_in_sub_and_name_goes_through(backend) {
        let Some(env) = crate::lti_env::start(backend, Personality::Canvas).await else { return };
        let mut spec = env.learner_launch("ignored");
        spec.user = MockUser::new("stu\u{0}dent-1", "Ada\u{0} Lovelace", &[partner_sim::lms::ROLE_LEARNER]);
        spec.login_hint = Some("opaque-hint-1".into());
        let code = env.launch(spec).await.code();
        let (status, ctx) = env.exchange(&code).await;
        assert_eq!(status, 200, "{ctx}");
        assert_eq!(ctx["user"]["id"], "stu\u{FFFD}dent-1", "{ctx}");
        assert_eq!(ctx["user"]["name"], "Ada\u{FFFD} Lovelace", "{ctx}");
        assert_eq!(env.usage_count("lti.launch").await, 1);
    }

    // A client sending its headers a byte a second is cut off after
    // `http.header_read_timeout_secs`, not held open for ever.
    async fn a_connection_sending_headers_slowly_is_closed(backend) {
        let Some(app) = TestApp::spawn_with(backend, "[jobs]\nenabled = false\n[http]\nheader_read_timeout_secs = 2\n", partner_gateway::jobs::Handlers::new()).await else { return };
        let addr = app.address.trim_start_matches("http://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let started = Instant::now();
        let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut closed = false;
        for b in request.iter() {
            if stream.write_all(&[*b]).await.is_err() {
                closed = true;
                break;
            }
            // Closed by the server: a read returns 0 (or an error) at once.
            let mut buf = [0u8; 512];
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(n)) => {
                    // An answer (408) before closing is fine too; then the close.
                    assert!(!String::from_utf8_lossy(&buf[..n]).contains("200 OK"), "the slow request was served");
                }
                Err(_) => {}
            }
        }
        assert!(closed, "the connection stayed open for {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        // A normal request still works.
        let r = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}
