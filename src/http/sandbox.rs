//! The sandbox mark on responses: `X-Gateway-Sandbox: true` on every response made by a
//! sandbox partner's key or for a sandbox partner's launch (or partner data asked for by
//! name), so a partner engineer can never mistake sandbox answers for production ones.
//!
//! Whatever code identifies the partner of a request (the API-key extractor, the launch
//! lookups, handlers naming a partner) calls [`note`]; the middleware [`mark`] sets the
//! header on the way out. A task-local carries the flag between them, so no handler has to
//! thread it through its return type; outside a request (jobs, the CLI) `note` does nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::Config;

/// The response header.
pub const HEADER: HeaderName = HeaderName::from_static("x-gateway-sandbox");

tokio::task_local! {
    static MARK: Arc<AtomicBool>;
}

/// Middleware: run the request with a fresh mark; set the header when something noted a
/// sandbox partner.
pub async fn mark(req: Request, next: Next) -> Response {
    let flag = Arc::new(AtomicBool::new(false));
    let mut resp = MARK.scope(flag.clone(), next.run(req)).await;
    if flag.load(Ordering::Relaxed) {
        resp.headers_mut()
            .insert(HEADER, HeaderValue::from_static("true"));
    }
    resp
}

/// Note that the current request acts by or for a sandbox partner (when `sandbox`).
pub fn note(sandbox: bool) {
    if sandbox {
        let _ = MARK.try_with(|m| m.store(true, Ordering::Relaxed));
    }
}

/// Whether `partner` is a sandbox partner; notes it for the response header.
pub fn partner(config: &Config, partner: &str) -> bool {
    let sandbox = config.is_sandbox(partner);
    note(sandbox);
    sandbox
}
