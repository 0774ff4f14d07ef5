//! The FHIR proxy for the app: `/v1/launches/{launch_id}/fhir/{path}` forwards the request
//! to the launch's FHIR server with the launch's access token and streams the answer back
//! unchanged. The token is refreshed ahead of expiry and once on a 401. Each call records a
//! `fhir.request` usage event with the status the app got and whether the partner's FHIR
//! server answered it (`reached`): calls the gateway answered itself are not the partner's
//! usage, and meters leave them out (`exclude` in `config/meters.toml`).

use std::sync::Arc;
use std::time::Duration;

use crate::http::Path;
use axum::body::Body as AxumBody;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::store::Session;
use crate::http::ApiError;
use crate::http::auth::Caller;
use crate::launches::{Launch, LaunchKind};
use crate::metering::UsageEvent;
use crate::state::AppState;

/// Request headers passed to the FHIR server (everything else, cookies and the caller's
/// Authorization above all, stays here).
const FORWARD_REQUEST: [&str; 10] = [
    "accept",
    "accept-encoding",
    "accept-language",
    "content-type",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-none-exist",
    "prefer",
    "x-request-id",
];

/// Response headers passed back to the app.
const FORWARD_RESPONSE: [&str; 10] = [
    "content-type",
    "content-length",
    "content-encoding",
    "content-location",
    "etag",
    "last-modified",
    "location",
    "retry-after",
    "cache-control",
    "x-request-id",
];

/// Refuse paths that could leave the FHIR base, here or on a FHIR server that reads paths
/// its own way: Tomcat and other Java servers drop `;` path parameters (`..;/` is `..`
/// there), a server or proxy may percent-decode twice (`%252e%252e`), IIS takes backslashes
/// and `%u002e`, Windows drops trailing dots and spaces. Every segment, decoded once, must
/// be made of the characters FHIR paths use (letters, digits, `-`, `.`, `_` and `$`: ids,
/// resource types, `_history`, `$operations`) and not of dots alone; encoded slashes,
/// backslashes, empty segments and URLs of their own are refused.
pub fn check_relative_path(raw: &str) -> Result<(), String> {
    if raw.is_empty() {
        return Err("name a FHIR path after /fhir/, e.g. Patient/123".into());
    }
    if raw.contains("://") || raw.starts_with('/') || raw.contains('\\') {
        return Err("the FHIR path must be relative to the FHIR base, not a URL".into());
    }
    for segment in raw.split('/') {
        if segment.is_empty() {
            return Err("the FHIR path has an empty segment".into());
        }
        let decoded = percent_decode(segment)
            .ok_or_else(|| format!("the path segment {segment:?} is not valid percent-encoding"))?;
        if decoded.chars().all(|c| c == '.') || decoded.contains(['/', '\\']) {
            return Err(format!(
                "the path segment {segment:?} would leave the FHIR base"
            ));
        }
        if decoded.contains(';') {
            return Err(format!(
                "the path segment {segment:?} has a `;` parameter, which servers such as Tomcat drop (`..;` would be `..` there)"
            ));
        }
        if decoded.contains('%') {
            return Err(format!(
                "the path segment {segment:?} is percent-encoded twice; a server decoding it again would read {:?}",
                percent_decode(&decoded).unwrap_or_default()
            ));
        }
        if let Some(c) = decoded.chars().find(|c| !is_fhir_path_char(*c)) {
            return Err(format!(
                "the path segment {segment:?} has {c:?}, which is not a FHIR path character"
            ));
        }
    }
    Ok(())
}

/// The characters of FHIR ids (`[A-Za-z0-9\-\.]{1,64}`), resource types, `_history` and
/// `$operation` names.
fn is_fhir_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '$')
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The raw (still percent-encoded) part of the request path after `/fhir/`.
fn raw_tail<'a>(path: &'a str, marker: &str) -> Option<&'a str> {
    path.find(marker).map(|i| &path[i + marker.len()..])
}

/// The methods the FHIR proxies forward (FHIR's RESTful API uses no others; HEAD is a GET
/// without the body).
pub const FHIR_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE";

/// Refuse a method FHIR does not use (TRACE, CONNECT, OPTIONS, ...) before anything is
/// forwarded.
pub fn check_fhir_method(method: &Method) -> Result<(), ApiError> {
    if matches!(
        *method,
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return Ok(());
    }
    Err(ApiError::MethodNotAllowed {
        detail: format!("the FHIR proxy does not forward {method}; it forwards {FHIR_METHODS}"),
        allow: FHIR_METHODS,
    })
}

/// The EHR's FHIR server on a launch's behalf, with the launch's token (refreshed as
/// needed); the app never holds it. `{path}` is the FHIR path (`Patient/123`,
/// `Observation?patient=123&category=vital-signs`) relative to the launch's FHIR base; the
/// EHR's status and body come back as they are.
#[utoipa::path(
    method(get, post, put, patch, delete),
    path = "/v1/launches/{launch_id}/fhir/{path}",
    tag = "smart",
    params(
        ("launch_id" = String, Path, description = "A SMART launch's id"),
        ("path" = String, Path, description = "FHIR path relative to the launch's FHIR base (may contain slashes)", example = "Patient/erXuFYUfucBZaryVksYEcMg3"),
    ),
    security(("app_key" = []), ("partner_key" = [])),
    responses(
        crate::http::openapi::FhirProxyResponses,
        (status = 409, response = crate::http::openapi::WrongLaunch),
        (status = 410, response = crate::http::openapi::Gone),
    )
)]
pub async fn launch_proxy(
    State(state): State<AppState>,
    caller: Caller,
    Path((launch_id, _path)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    check_fhir_method(req.method())?;
    let (launch, session) = launch_session(&state, &caller, &launch_id).await?;
    let raw = raw_tail(req.uri().path(), "/fhir/")
        .unwrap_or("")
        .to_owned();
    check_relative_path(&raw).map_err(|e| ApiError::bad_request("invalid_fhir_path", e))?;
    let query = req.uri().query().map(str::to_owned);
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), state.config.http.body_limit_bytes)
        .await
        .map_err(|_| ApiError::PayloadTooLarge("the request body is over the limit".into()))?;

    let url = target_url(&state, &session.iss, &raw, query.as_deref())?;
    let call = forward(&state, &session, &method, &url, &headers, body).await;
    record_fhir_request(
        &state,
        &launch.partner_id,
        launch.user_id.clone(),
        Some(&launch.id),
        &method,
        &raw,
        &call,
    )
    .await;
    call.result.map(stream_back)
}

/// A proxied FHIR call: the FHIR server's answer or the gateway's own error, and whether
/// the FHIR server answered at all.
pub struct Forwarded {
    pub result: Result<reqwest::Response, ApiError>,
    /// The partner's FHIR server answered (with any status, even one the gateway then
    /// turned into an error, such as a second 401). False when the gateway answered alone:
    /// no token (expired launch, refresh refused or failed, Backend Services token refused),
    /// or the server could not be reached or did not answer in time.
    pub reached: bool,
}

impl Forwarded {
    /// A call that ended before the FHIR server answered.
    pub fn unreached(error: ApiError) -> Forwarded {
        Forwarded {
            result: Err(error),
            reached: false,
        }
    }

    /// The status the app gets.
    pub fn status(&self) -> u16 {
        match &self.result {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.status().as_u16(),
        }
    }
}

impl From<Result<reqwest::Response, ApiError>> for Forwarded {
    /// One send to the FHIR server: an answer reached it, an error did not.
    fn from(result: Result<reqwest::Response, ApiError>) -> Forwarded {
        let reached = result.is_ok();
        Forwarded { result, reached }
    }
}

/// A `fhir.request` usage event for one call (subject: the launch's user, if any), with the
/// status the app got and `reached` (see [`Forwarded`]).
pub async fn record_fhir_request(
    state: &AppState,
    partner_id: &str,
    subject: Option<String>,
    launch_id: Option<&str>,
    method: &Method,
    raw_path: &str,
    call: &Forwarded,
) {
    let resource = raw_path.split('/').next().unwrap_or("");
    state
        .usage
        .record(UsageEvent {
            partner_id: partner_id.to_owned(),
            id: uuid::Uuid::now_v7().to_string(),
            source: "partner-gateway/smart".into(),
            event_type: "fhir.request".into(),
            subject,
            time: chrono::Utc::now(),
            data: Some(json!({
                "launch_id": launch_id,
                "method": method.as_str(),
                "resource_type": resource,
                "status": call.status(),
                "reached": call.reached,
            })),
            extensions: None,
        })
        .await;
}

/// `{base}/{raw_path}?{query}`, checked by the outbound policy and still under the base.
pub fn target_url(
    state: &AppState,
    base: &str,
    raw_path: &str,
    query: Option<&str>,
) -> Result<url::Url, ApiError> {
    let base = base.trim_end_matches('/');
    let target = match query {
        Some(q) => format!("{base}/{raw_path}?{q}"),
        None => format!("{base}/{raw_path}"),
    };
    let url = state
        .outbound
        .url(&target)
        .map_err(|e| ApiError::BadGateway {
            code: "ehr_refused",
            detail: e.to_string(),
        })?;
    // Belt and braces: the URL as parsed must still sit under the FHIR base.
    if !url.as_str().starts_with(&format!("{base}/")) {
        return Err(ApiError::bad_request(
            "invalid_fhir_path",
            "the path would leave the FHIR base",
        ));
    }
    Ok(url)
}

/// Send the request with the session's token; on a 401, refresh once and resend.
pub async fn forward(
    state: &AppState,
    session: &Arc<Session>,
    method: &Method,
    url: &url::Url,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Forwarded {
    let session = match super::refresh::ensure_fresh(state, session.clone(), false).await {
        Ok(s) => s,
        Err(e) => return Forwarded::unreached(e),
    };
    let resp = match send(state, &session, method, url, headers, body.clone()).await {
        Ok(r) => r,
        Err(e) => return Forwarded::unreached(e),
    };
    if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
        return Ok(resp).into();
    }
    // The EHR no longer takes the token (revoked, or expired early): one refresh, one retry.
    // It has answered once already, so whatever follows, the call reached it.
    let reached = |result| Forwarded {
        result,
        reached: true,
    };
    let session = match super::refresh::ensure_fresh(state, session, true).await {
        Ok(s) => s,
        Err(e) => return reached(Err(e)),
    };
    let resp = match send(state, &session, method, url, headers, body).await {
        Ok(r) => r,
        Err(e) => return reached(Err(e)),
    };
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        return reached(Err(ApiError::BadGateway {
            code: "ehr_token_rejected",
            detail: "the EHR refused the launch's access token even after a refresh; the user must launch again".into(),
        }));
    }
    reached(Ok(resp))
}

async fn send(
    state: &AppState,
    session: &Session,
    method: &Method,
    url: &url::Url,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<reqwest::Response, ApiError> {
    send_fhir(state, &session.access_token, method, url, headers, body).await
}

/// One request to a FHIR server with `token`, passing the allowed headers.
pub async fn send_fhir(
    state: &AppState,
    token: &str,
    method: &Method,
    url: &url::Url,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<reqwest::Response, ApiError> {
    let mut req = state
        .outbound
        .client()
        .request(method.clone(), url.clone())
        .bearer_auth(token);
    let mut has_accept = false;
    for name in FORWARD_REQUEST {
        for value in headers.get_all(name) {
            has_accept |= name == "accept";
            req = req.header(name, value);
        }
    }
    if !has_accept {
        // Some servers (Epic among them) answer XML unless JSON is asked for.
        req = req.header("accept", "application/fhir+json");
    }
    if !body.is_empty() {
        req = req.body(body);
    }
    req.send().await.map_err(|e| ApiError::BadGateway {
        code: "ehr_unreachable",
        detail: format!(
            "the FHIR server did not answer: {}",
            super::discovery::error_chain(&e.without_url())
        ),
    })
}

/// The EHR's status, selected headers and body bytes, streamed as they arrive.
pub fn stream_back(resp: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = Response::builder().status(status);
    if let Some(h) = out.headers_mut() {
        for name in FORWARD_RESPONSE {
            for value in resp.headers().get_all(name) {
                if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                    h.append(n, value.clone());
                }
            }
        }
    }
    out.body(AxumBody::from_stream(resp.bytes_stream()))
        .unwrap_or_else(|_| Response::new(AxumBody::empty()))
}

/// How long a launch and its decrypted session are reused from memory before the store
/// is read again (a refresh on this instance updates the cache at once).
const SESSION_CACHE: Duration = Duration::from_secs(30);

/// The launch (checked against the caller) and its session.
pub async fn launch_session(
    state: &AppState,
    caller: &Caller,
    launch_id: &str,
) -> Result<(Arc<Launch>, Arc<Session>), ApiError> {
    caller.require(&[crate::apikeys::Role::App, crate::apikeys::Role::Partner])?;
    let (launch, session) = match state.smart.cached(launch_id, SESSION_CACHE) {
        Some(hit) => hit,
        None => {
            let launch = crate::launches::find_launch(&state.db, launch_id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no launch {launch_id:?}")))?;
            // Whose it is before what it is: another partner learns nothing of it.
            caller.check_owner(&launch.partner_id, || format!("no launch {launch_id:?}"))?;
            if launch.kind != LaunchKind::Smart {
                return Err(ApiError::Conflict(format!(
                    "launch {launch_id} is a {} launch; only SMART launches have a FHIR server",
                    launch.kind.as_str()
                )));
            }
            let session = super::store::load_session(&state.db, &state.master_key, launch_id)
                .await?
                .ok_or_else(|| {
                    ApiError::NotFound(format!("launch {launch_id:?} has no SMART session"))
                })?;
            let pair = (Arc::new(launch), Arc::new(session));
            state.smart.remember(pair.0.clone(), pair.1.clone());
            pair
        }
    };
    crate::http::sandbox::note(launch.sandbox);
    caller.check_owner(&launch.partner_id, || format!("no launch {launch_id:?}"))?;
    if !launch.is_live(chrono::Utc::now()) {
        return Err(ApiError::Gone(format!(
            "launch {launch_id} expired at {}; the user must launch again",
            crate::time::rfc3339(launch.expires_at)
        )));
    }
    Ok((launch, session))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path a Java (Tomcat, Jetty), IIS or plain server could read as leaving the FHIR
    /// base, or as something else than what the gateway checked, is refused; FHIR's own
    /// paths pass.
    #[test]
    fn paths_that_leave_the_fhir_base_are_refused() {
        for (bad, why) in [
            ("", "empty"),
            ("../admin", "parent"),
            ("Patient/../../x", "parent"),
            ("Patient/./1", "current"),
            ("Patient/.", "current"),
            ("Patient/...", "Windows trailing dots"),
            ("Patient/%2e%2e/x", "encoded parent"),
            ("Patient/%2E%2E", "encoded parent"),
            ("Patient/.%2e/x", "half-encoded parent"),
            ("Patient/%2e./x", "half-encoded parent"),
            ("Patient/%252e%252e/x", "double-encoded parent"),
            ("Patient/%252E%252E/x", "double-encoded parent"),
            (
                "Patient/%25%32%65%25%32%65/x",
                "double-encoded parent, every byte",
            ),
            ("Patient/%252f..%252fx", "double-encoded slash"),
            ("Patient/..;/x", "Tomcat path parameter"),
            ("Patient/..;jsessionid=1/x", "Tomcat path parameter"),
            ("Patient/.;/x", "Tomcat path parameter"),
            ("Patient;x=1/1", "path parameter"),
            ("Patient/1;a", "path parameter"),
            ("Patient/..%3b/x", "encoded path parameter"),
            ("Patient/%2e%2e%3b/x", "encoded path parameter"),
            ("Patient%2F..%2Fx", "encoded slash"),
            ("Patient/a%2fb", "encoded slash in a segment"),
            ("Patient/a%5cb", "encoded backslash"),
            ("Patient/..%5cx", "encoded backslash"),
            ("a\\b", "backslash"),
            ("Patient\\..\\x", "backslash"),
            ("Patient/%u002e%u002e/x", "IIS %u escape"),
            ("Patient/%c0%ae%c0%ae/x", "overlong UTF-8"),
            ("Patient/%e0%80%ae/x", "overlong UTF-8"),
            ("Patient/\u{ff0e}\u{ff0e}/x", "full-width dots"),
            ("Patient/%ef%bc%8e%ef%bc%8e/x", "encoded full-width dots"),
            ("Patient/%00", "NUL"),
            ("Patient/%0d%0aX:1", "CRLF"),
            ("Patient/a b", "space"),
            ("Patient/1%3Fx=1", "encoded query"),
            ("Patient/1%23x", "encoded fragment"),
            ("http://evil.example.com/x", "absolute URL"),
            ("https:%2F%2Fevil", "absolute URL, encoded"),
            ("Patient/http:evil", "scheme-like segment"),
            ("/etc/passwd", "absolute path"),
            ("Patient//1", "empty segment"),
            ("Patient/", "empty segment"),
            ("Patient/%zz", "bad escape"),
            ("Patient/%2", "truncated escape"),
        ] {
            assert!(
                check_relative_path(bad).is_err(),
                "{bad:?} ({why}) should be refused"
            );
        }
        for ok in [
            "Patient/123",
            "Observation",
            "Patient/1/$everything",
            "metadata",
            "Patient/1/_history/2",
            "Observation/_search",
            "Group/123/$export",
            "Patient/eM5CWtq15N0WJeuCet5bJlQ3",
            "Patient/a.b-c_d",
            "Patient/%41bc",
        ] {
            assert!(check_relative_path(ok).is_ok(), "{ok:?}");
        }
    }
}
