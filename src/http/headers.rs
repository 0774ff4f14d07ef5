//! Security headers every response gets, whatever route made it: `X-Content-Type-Options:
//! nosniff` (a JSON body echoing input is never sniffed into HTML), a strict
//! Content-Security-Policy on any HTML response that came without one (pages should come
//! from `http::page`, which sets theirs; this catches one that does not), and
//! `X-Frame-Options: DENY` where the policy forbids framing (for browsers that predate
//! `frame-ancestors`).

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The policy of an HTML response that set none: nothing loads, runs, posts or frames it.
const FALLBACK_CSP: &str =
    "default-src 'none'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The middleware (`middleware::from_fn(headers::secure)`).
pub async fn secure(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"));
    if html && !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(FALLBACK_CSP),
        );
    }
    let unframed = h
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|csp| csp.contains("frame-ancestors 'none'"));
    if unframed && !h.contains_key(header::X_FRAME_OPTIONS) {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    resp
}
