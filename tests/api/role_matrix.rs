//! The role matrix, read from the served `/openapi.json`: every operation refuses each key
//! role its security list leaves out with 403 and the JSON error body, called with real
//! objects (so the 403 is not a 404 in disguise); and a partner key never gets another
//! partner's object (403 or 404). The table is the document: a new operation joins it.

use std::collections::HashMap;

use partner_gateway::apikeys::Role;
use partner_gateway::launches::LaunchKind;
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::openapi::{
    document, insert_launch_of, lti_context, op_accepts, operations, send, smart_context,
};

const ROLES: [(Role, &str); 4] = [
    (Role::Admin, "admin_key"),
    (Role::Finance, "finance_key"),
    (Role::Partner, "partner_key"),
    (Role::App, "app_key"),
];

const EPIC: &str = "epic-sandbox";
const CANVAS: &str = "canvas-sandbox";

/// Loopback webhook URLs allowed; nothing is delivered.
const CONFIG: &str = "[jobs]\nenabled = false\n[outbound]\nallow_http = true\nprivate_networks = [\"127.0.0.1\"]\n[webhooks]\ndelivery_enabled = false\n";

/// Real objects of two partners for the path parameters.
struct Objects {
    /// An LTI launch of canvas-sandbox, with AGS so a score can be posted.
    lti: String,
    /// A SMART launch of epic-sandbox.
    smart: String,
    /// canvas-sandbox's score on the LTI launch.
    score: String,
    /// epic-sandbox's webhook endpoint, message and draft statement.
    endpoint: String,
    message: String,
    statement: String,
}

async fn objects(app: &TestApp) -> Objects {
    let mut ctx = lti_context();
    ctx.insert("ags".into(), json!({
        "scope": ["https://purl.imsglobal.org/spec/lti-ags/scope/score", "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem"],
        "lineitem": "http://127.0.0.1:9/course-1/lineitems/1"
    }));
    let lti = insert_launch_of(app, Some(CANVAS), LaunchKind::Lti, 60, ctx).await;
    let smart = insert_launch_of(
        app,
        Some(EPIC),
        LaunchKind::Smart,
        60,
        smart_context("http://127.0.0.1:9/fhir"),
    )
    .await;
    let app_key = app.key(Role::App, None).await;
    let admin = app.admin().await;
    let score = json!({"scoreGiven": 1, "scoreMaximum": 2, "activityProgress": "Completed", "gradingProgress": "FullyGraded"});
    let (status, body) = send(
        app,
        "post",
        &format!("/v1/launches/{lti}/scores"),
        &app_key,
        Some(score.to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let score = body["score_id"].as_str().unwrap().to_owned();
    let ep = json!({"partner": EPIC, "url": "http://127.0.0.1:9/hook"});
    let (status, body) = send(
        app,
        "post",
        "/v1/webhooks/endpoints",
        &admin,
        Some(ep.to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let endpoint = body["id"].as_str().unwrap().to_owned();
    let mut tx = app.db().begin().await.unwrap();
    let message = partner_gateway::webhooks::emit(
        &mut tx,
        Some(EPIC),
        "launch.completed",
        &json!({"launch_id": smart}),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let finance = app.key(Role::Finance, None).await;
    let st = json!({"partner": EPIC, "period": "2026-10"});
    let (status, body) = send(
        app,
        "post",
        "/v1/statements",
        &finance,
        Some(st.to_string().into_bytes()),
    )
    .await;
    assert!(status == 201 || status == 200, "{status} {body}");
    let statement = body["id"].as_str().unwrap().to_owned();
    Objects {
        lti,
        smart,
        score,
        endpoint,
        message,
        statement,
    }
}

/// The path with real objects in its parameters, and the partner owning what it names.
fn concrete(path: &str, o: &Objects) -> (String, &'static str) {
    let mut owner = EPIC;
    let mut out = String::new();
    let mut rest = path;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let j = rest[i..].find('}').unwrap() + i;
        let value = match &rest[i + 1..j] {
            "launch_id" if path.contains("/fhir/") || path.ends_with("/patient") => o.smart.clone(),
            "launch_id" => {
                owner = CANVAS;
                o.lti.clone()
            }
            "score_id" => {
                owner = CANVAS;
                o.score.clone()
            }
            "id" if path.starts_with("/v1/webhooks/endpoints") => o.endpoint.clone(),
            "id" if path.starts_with("/v1/webhooks/messages") => o.message.clone(),
            "id" if path.starts_with("/v1/statements") => o.statement.clone(),
            "id" | "partner" if path.starts_with("/v1/partners") => EPIC.to_owned(),
            "path" => "Patient/123".to_owned(),
            // Admin-only objects: the role is refused before any lookup.
            other => format!("no-such-{other}"),
        };
        out.push_str(&value);
        rest = &rest[j + 1..];
    }
    out.push_str(rest);
    if path.ends_with("/lineitems/item") {
        out.push_str("?id=http://127.0.0.1:9/course-1/lineitems/1");
    }
    (out, owner)
}

/// A body the operation would accept: its documented example (with `partner` set to
/// `owner` where it names one), else `{}`.
fn body_for(doc: &Value, op: &Value, owner: &str) -> Option<Vec<u8>> {
    let content = op.get("requestBody")?.get("content")?.as_object()?;
    let (_, media) = content.iter().next()?;
    let schema = &media["schema"];
    let example = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => doc["components"]["schemas"][r.rsplit('/').next().unwrap()]["example"].clone(),
        None => schema.get("example").cloned().unwrap_or(Value::Null),
    };
    let mut body = if example.is_null() {
        json!({})
    } else {
        example
    };
    if let Some(obj) = body.as_object_mut()
        && (obj.contains_key("partner") || op["operationId"] == "ingest_usage_events")
    {
        obj.insert("partner".into(), json!(owner));
    }
    Some(body.to_string().into_bytes())
}

fn accepts_partner_param(op: &Value) -> bool {
    op["parameters"].as_array().is_some_and(|ps| {
        ps.iter()
            .any(|p| p["name"] == "partner" && p["in"] == "query")
    })
}

/// A key of each role; partner keys for each partner, so the key refused is the object's
/// own partner's and only the role check can refuse it.
async fn keys(app: &TestApp) -> HashMap<(&'static str, &'static str), String> {
    let mut keys = HashMap::new();
    for (role, scheme) in ROLES {
        for owner in [EPIC, CANVAS] {
            let partner = (role == Role::Partner).then_some(owner);
            keys.insert((scheme, owner), app.key(role, partner).await);
        }
    }
    keys
}

crate::both_backends! {
    async fn every_operation_refuses_the_roles_its_security_leaves_out(backend) {
        let Some(app) = TestApp::spawn_with(backend, CONFIG, partner_gateway::jobs::Handlers::new()).await else { return };
        let doc = document(&app).await;
        let o = objects(&app).await;
        let keys = keys(&app).await;
        let mut refused = 0;
        for (method, path, op) in operations(&doc) {
            let (url, owner) = concrete(&path, &o);
            let body = body_for(&doc, &op, owner);
            for (_, scheme) in ROLES {
                if op_accepts(&op, scheme) {
                    continue;
                }
                let (status, resp) = send(&app, &method, &url, &keys[&(scheme, owner)], body.clone()).await;
                assert_eq!(status, 403, "{method} {path} with a {scheme}: {resp}");
                assert_eq!(resp["code"], "forbidden", "{method} {path} with a {scheme}: {resp}");
                assert!(resp["detail"].as_str().is_some_and(|d| !d.is_empty()), "{method} {path}: {resp}");
                refused += 1;
            }
        }
        // Every operation has at least one role it refuses but the shared ones (usage
        // meters and query, partners), so the matrix is not empty by accident.
        assert!(refused >= 100, "{refused}");
    }

    async fn a_partner_key_never_reaches_another_partners_object(backend) {
        let Some(app) = TestApp::spawn_with(backend, CONFIG, partner_gateway::jobs::Handlers::new()).await else { return };
        let doc = document(&app).await;
        let o = objects(&app).await;
        let other = HashMap::from([
            (EPIC, app.partner_key(CANVAS).await),
            (CANVAS, app.partner_key(EPIC).await),
        ]);
        let mut checked = 0;
        for (method, path, op) in operations(&doc) {
            if !op_accepts(&op, "partner_key") {
                continue;
            }
            let (mut url, owner) = concrete(&path, &o);
            let body = body_for(&doc, &op, owner);
            let names_partner = body.as_ref().is_some_and(|b| String::from_utf8_lossy(b).contains("\"partner\""));
            if accepts_partner_param(&op) {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str(&format!("partner={owner}"));
            } else if !path.contains('{') && !names_partner {
                // Nothing of a partner's is named (the meters, the event catalogue, the
                // list of partners, which shows a partner key its own only).
                continue;
            }
            if path == "/v1/usage/query" {
                url.push_str("&meter=smart_launches&from=2026-11-01T00:00:00Z");
            }
            let (status, resp) = send(&app, &method, &url, &other[owner], body).await;
            assert!(status == 403 || status == 404, "{method} {path} with another partner's key: {status} {resp}");
            assert!(resp["code"] == "forbidden" || resp["code"] == "not_found", "{method} {path}: {resp}");
            checked += 1;
        }
        assert!(checked >= 20, "{checked}");
    }
}

/// The README's HTTP API table: (method, path with `{}` for every parameter) → the roles
/// its "who" column names.
fn readme_roles() -> HashMap<(String, String), Vec<&'static str>> {
    let readme = include_str!("../../README.md");
    let mut out = HashMap::new();
    for line in readme
        .lines()
        .filter(|l| l.starts_with("| `") && l.contains("/v1/"))
    {
        let cells: Vec<&str> = line.split(" | ").collect();
        let (routes, who) = (cells[0].trim_start_matches("| "), cells[1].to_lowercase());
        let words: Vec<&str> = who.split(|c: char| !c.is_ascii_alphanumeric()).collect();
        let roles: Vec<&'static str> = if who.contains("all roles") {
            vec!["admin", "finance", "partner", "app"]
        } else {
            ["admin", "finance", "partner", "app"]
                .into_iter()
                .filter(|r| words.contains(r))
                .collect()
        };
        for route in routes.split('`').skip(1).step_by(2) {
            let Some((methods, path)) = route.split_once(' ') else {
                continue;
            };
            for path in expand(path) {
                for m in methods.split("\\|") {
                    out.insert((m.to_lowercase(), path.clone()), roles.clone());
                }
            }
        }
    }
    out
}

/// `/v1/x/{id}[/attempts]`, `/v1/r/{id}/approve\|reject`, `/v1/s/{id}[?format=...]`,
/// `/v1/jobs?state=` → every concrete path, parameters as `{}`.
fn expand(path: &str) -> Vec<String> {
    let mut path = path.to_owned();
    if let Some(i) = path.find("[?") {
        path.truncate(i);
    }
    if let Some(i) = path.find('?') {
        path.truncate(i);
    }
    let mut variants = match (path.find('['), path.find(']')) {
        (Some(a), Some(b)) => vec![
            format!("{}{}", &path[..a], &path[b + 1..]),
            format!("{}{}", &path[..a], &path[a + 1..b]),
        ],
        _ => vec![path],
    };
    variants = variants
        .into_iter()
        .flat_map(|p| match p.rsplit_once('/') {
            Some((head, last)) if last.contains("\\|") => {
                last.split("\\|").map(|l| format!("{head}/{l}")).collect()
            }
            _ => vec![p],
        })
        .collect();
    variants.iter().map(|p| normalized(p)).collect()
}

fn normalized(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

crate::both! {
    // The README's table of routes names, for every operation, the roles the document's
    // security list (and so the handler, by the tests above) accepts.
    async fn the_readme_names_the_roles_of_every_operation(app) {
        let doc = document(&app).await;
        let readme = readme_roles();
        for (method, path, op) in operations(&doc) {
            let Some(roles) = readme.get(&(method.clone(), normalized(&path))) else {
                panic!("README's HTTP API table has no row for {method} {path}");
            };
            let documented: Vec<&str> = ROLES
                .iter()
                .filter(|(_, scheme)| op_accepts(&op, scheme))
                .map(|(_, scheme)| scheme.trim_end_matches("_key"))
                .collect();
            let mut roles = roles.clone();
            roles.sort_unstable();
            let mut documented = documented;
            documented.sort_unstable();
            assert_eq!(roles, documented, "{method} {path}: README vs /openapi.json");
        }
    }
}
