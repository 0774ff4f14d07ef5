//! Every answer of every API test is checked against the API's conventions as it passes
//! (`app::serve_wrapped`): an instant is written one way (RFC 3339, UTC, `Z`, six fraction
//! digits) and a collection has one shape (`{"data": [...], "next_cursor": ...}`). An answer
//! that breaks one is replaced by a 500 naming the break, so the test that made it fails
//! there, whatever it was checking.
//!
//! Left out: what partners' systems wrote, passed through as they wrote it (the FHIR proxy,
//! the LMS's line items, results, rosters and outcomes).

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub fn wrap(r: Router) -> Router {
    r.layer(axum::middleware::from_fn(check))
}

/// Answers holding what a partner's system wrote.
fn passthrough(path: &str) -> bool {
    path.contains("/fhir/")
        || path.ends_with("/lineitems")
        || path.contains("/lineitems/")
        || path.ends_with("/members")
        || path.ends_with("/outcome")
}

async fn check(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let get = req.method() == axum::http::Method::GET;
    let resp = next.run(req).await;
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !path.starts_with("/v1/") || !json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "answer_check: unreadable body",
        )
            .into_response();
    };
    let mut problems = Vec::new();
    if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
        problems = problems_of(&path, get && parts.status.is_success(), &v);
    }
    if problems.is_empty() {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let detail = format!(
        "{path} answered {} breaking the API conventions: {}",
        parts.status,
        problems.join("; ")
    );
    eprintln!("answer_check: {detail}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(serde_json::json!({"code": "convention_broken", "detail": detail})),
    )
        .into_response()
}

/// What is wrong with an answer to `path` (`list`: a successful GET).
pub fn problems_of(path: &str, list: bool, v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if list && path != "/v1/usage/query" {
        match v {
            Value::Array(_) => {
                out.push("a bare JSON array (collections answer {data, next_cursor})".into())
            }
            Value::Object(o) if o.get("data").is_some_and(Value::is_array) => {
                let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
                keys.sort();
                if keys != ["data", "next_cursor"] {
                    out.push(format!(
                        "a collection with the keys {keys:?}, not [data, next_cursor]"
                    ));
                }
            }
            _ => {}
        }
    }
    if !passthrough(path) {
        times(v, "", &mut out);
    }
    out
}

fn times(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::String(s) if looks_like_instant(s) && !is_api_instant(s) => {
            out.push(format!(
                "{at} = {s:?} (instants are written 2026-11-01T04:00:00.000000Z)"
            ));
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                times(x, &format!("{at}/{i}"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                times(x, &format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

/// `YYYY-MM-DDTHH:MM` at the start: meant as an instant (a date alone, `2026-11`, is a
/// period, not an instant).
fn looks_like_instant(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 16
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
}

/// Exactly `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn is_api_instant(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 27
        && digits(0..4)
        && digits(5..7)
        && digits(8..10)
        && digits(11..13)
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26)
        && b[26] == b'Z'
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

#[test]
fn the_check_tells_the_api_form_from_the_others() {
    assert!(is_api_instant("2026-11-01T04:00:00.000000Z"));
    for other in [
        "2026-11-01T04:00:00Z",
        "2026-11-01T04:00:00.000Z",
        "2026-11-01T04:00:00.000000000Z",
        "2026-11-01T04:00:00.000000+00:00",
        "2026-11-01T00:00:00-04:00",
    ] {
        assert!(
            looks_like_instant(other) && !is_api_instant(other),
            "{other}"
        );
    }
    assert!(!looks_like_instant("2026-11"));
    let bad =
        serde_json::json!({"data": [{"at": "2026-11-01T04:00:00Z"}], "next_cursor": null, "x": 1});
    let p = problems_of("/v1/things", true, &bad);
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(
        problems_of("/v1/things", true, &serde_json::json!([1])).len(),
        1
    );
}
