//! The middleware every route runs under, assembled around the router: request id, tracing
//! span, request metrics, panic catcher, timeout, body limit, U+0000 refusal, idempotency.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use super::{ApiError, error, headers, idempotency, is_api, page, sandbox};
use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wrap the assembled routes in the middleware every request runs under, outermost last:
/// request id, tracing span, panic catcher, timeout, body limit; metrics per matched route.
pub fn with_middleware(router: Router<AppState>, state: AppState) -> Router {
    let timeout = Duration::from_secs(state.config.http.request_timeout_secs);
    let body_limit = state.config.http.body_limit_bytes;
    router
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::layer,
        ))
        .route_layer(middleware::from_fn(note_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(body_limit, refuse_nul))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(sandbox::mark))
        .layer(middleware::from_fn_with_state(timeout, enforce_timeout))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal(anyhow::anyhow!("a handler panicked")).into_response()
        }))
        // Outside the timeout and the panic catcher: those answers are counted too.
        .layer(middleware::from_fn_with_state(
            AccessLog::new(&state.config.telemetry),
            track_requests,
        ))
        .layer(middleware::from_fn(headers::secure))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let request_id = req
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %crate::telemetry::loggable_path(req.uri().path()),
                        request_id,
                        partner_id = tracing::field::Empty,
                        role = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> Response {
    let detail = format!("{} is not allowed on {}", req.method(), req.uri().path());
    let body = serde_json::json!({"code": "method_not_allowed", "detail": detail});
    let mut resp = (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response();
    resp.extensions_mut()
        .insert(error::ErrorCode("method_not_allowed"));
    resp
}

async fn enforce_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Timeout(limit.as_secs()).into_response(),
    }
}

/// The matched route of a request, filled in by [`note_route`] once routing has happened,
/// read by [`track_requests`] outside it.
#[derive(Clone, Default)]
struct RouteSlot(std::sync::Arc<std::sync::OnceLock<String>>);

async fn note_route(req: Request, next: Next) -> Response {
    if let (Some(slot), Some(path)) = (
        req.extensions().get::<RouteSlot>(),
        req.extensions().get::<MatchedPath>(),
    ) {
        let _ = slot.0.set(path.as_str().to_owned());
    }
    next.run(req).await
}

/// Which answers get an access-log line (`telemetry.access_log`).
#[derive(Clone)]
struct AccessLog {
    mode: crate::config::AccessLog,
    /// Log every Nth other answer with `Failures` (0: none).
    every: u64,
    seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl AccessLog {
    fn new(cfg: &crate::config::TelemetryConfig) -> AccessLog {
        let every = if cfg.access_log_sample > 0.0 {
            // Checked by config to be in (0, 1]: a whole number from 1 up.
            (1.0 / cfg.access_log_sample).round().max(1.0) as u64
        } else {
            0
        };
        AccessLog {
            mode: cfg.access_log,
            every,
            seen: Default::default(),
        }
    }

    fn wants(&self, status: StatusCode) -> bool {
        use crate::config::AccessLog as Mode;
        match self.mode {
            Mode::All => true,
            Mode::Off => false,
            Mode::Failures if status.is_client_error() || status.is_server_error() => true,
            Mode::Failures => {
                self.every > 0
                    && self
                        .seen
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        .is_multiple_of(self.every)
            }
        }
    }
}

/// Count every answer by method, matched route (`unmatched` when none) and status, timeouts
/// and panics included, and log those the access log wants (a 4xx from the API with its
/// error `code`).
async fn track_requests(State(access): State<AccessLog>, mut req: Request, next: Next) -> Response {
    let slot = RouteSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let elapsed = started.elapsed().as_secs_f64();
    let route = slot.0.get().cloned().unwrap_or_else(|| "unmatched".into());
    if access.wants(resp.status()) {
        let status = resp.status().as_u16();
        match resp.extensions().get::<error::ErrorCode>() {
            Some(code) if resp.status().is_client_error() => tracing::info!(
                target: "access",
                status,
                code = code.0,
                latency_ms = elapsed * 1000.0,
                "handled"
            ),
            _ => tracing::info!(target: "access", status, latency_ms = elapsed * 1000.0, "handled"),
        }
    }
    let status = resp.status().as_str().to_owned();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status.clone())
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route, "status" => status)
        .record(elapsed);
    resp
}

/// Refuse U+0000 in the path, the query and (browser routes) a form body, before any
/// handler sees it (`crate::text`): a JSON 400 `nul_character` naming the parameter on the
/// API, a readable 400 page elsewhere. JSON bodies are checked by [`Body`].
async fn refuse_nul(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let api = is_api(req.uri().path());
    let refuse = |place: String| -> Response {
        if api {
            ApiError::nul_character(place).into_response()
        } else {
            page::Page::new(
                StatusCode::BAD_REQUEST,
                "This request holds a character the gateway does not accept",
            )
            .line(format!(
                "{} holds a NUL character (U+0000).",
                capitalized(&place)
            ))
            .line("Go back and try again; if a link brought you here, tell whoever sent it.")
            .into_response()
        }
    };
    if let Some(place) = nul_in_path(&req) {
        return refuse(place);
    }
    // axum's path extraction would answer such a path in plain text; the API answers JSON.
    if api && !decodes_to_utf8(req.uri().path()) {
        return ApiError::bad_request(
            "invalid_path",
            "the path is not UTF-8 once percent-decoded (an overlong or broken %-sequence)",
        )
        .into_response();
    }
    if let Some(q) = req.uri().query()
        && let Some(name) = nul_in_pairs(q.as_bytes())
    {
        return refuse(format!("the query parameter {name:?}"));
    }
    let form = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if api || !form {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return page::Page::new(StatusCode::PAYLOAD_TOO_LARGE, "This form is too large")
                .line("The gateway did not accept it. Go back and try again.")
                .into_response();
        }
    };
    if let Some(name) = nul_in_pairs(&bytes) {
        return refuse(format!("the form field {name:?}"));
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// The first name (or the value's name) of `a=b&c=d` pairs holding a NUL once decoded.
fn nul_in_pairs(bytes: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(bytes)
        .find(|(k, v)| crate::text::has_nul(k) || crate::text::has_nul(v))
        .map(|(k, _)| crate::text::printable(&k).into_owned())
}

/// A `%00` in the path, named by the route's parameter where the path matched one.
fn nul_in_path(req: &Request) -> Option<String> {
    let path = req.uri().path();
    let at = path.to_ascii_lowercase().find("%00")?;
    let index = path[..at].matches('/').count();
    let template = req.extensions().get::<MatchedPath>().map(|m| m.as_str());
    let param = template
        .and_then(|t| t.split('/').nth(index))
        .and_then(|seg| seg.strip_prefix('{'))
        .map(|seg| seg.trim_start_matches('*').trim_end_matches('}'));
    // A wildcard swallows the rest of the path: it names the parameter too.
    let param = param.or_else(|| {
        template
            .and_then(|t| t.split('/').find(|s| s.starts_with("{*")))
            .map(|s| s.trim_start_matches("{*").trim_end_matches('}'))
    });
    Some(match param {
        Some(name) => format!("the path parameter {name:?}"),
        None => "the path".to_owned(),
    })
}

/// Whether `path`, percent-decoded, is UTF-8.
fn decodes_to_utf8(path: &str) -> bool {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&out).is_ok()
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
