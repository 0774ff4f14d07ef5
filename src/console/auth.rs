//! The console's session cookie, the signed-in viewer of a request, and the CSRF check of
//! every form it posts.
//!
//! The cookie is `HttpOnly; SameSite=Lax; Path=/`, and over HTTPS `Secure` with the
//! `__Host-` prefix (no subdomain can set or shadow it). Every state-changing form carries
//! the session's CSRF token, compared in constant time; a browser's `Origin`, when it
//! sends one, must be this gateway.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::Utc;

use super::session::{self, Lapsed, Viewer};
use crate::state::AppState;

/// The session cookie's name: `__Host-` prefixed over HTTPS.
pub fn cookie_name(state: &AppState) -> &'static str {
    if secure(state) {
        "__Host-pgw_console"
    } else {
        "pgw_console"
    }
}

fn secure(state: &AppState) -> bool {
    state.config.http.public_base().starts_with("https://")
}

/// `Set-Cookie` for a new session's secret.
pub fn set_cookie(state: &AppState, secret: &str) -> Option<HeaderValue> {
    cookie_header(state, secret, state.config.console.absolute_timeout_secs)
}

/// `Set-Cookie` removing the session cookie.
pub fn clear_cookie(state: &AppState) -> Option<HeaderValue> {
    cookie_header(state, "", 0)
}

fn cookie_header(state: &AppState, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = if secure(state) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        cookie_name(state)
    ))
    .ok()
}

/// A cookie's value from the request's `Cookie` headers.
pub fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Where a request came from, for the audit log: the peer's address (and what a proxy in
/// front says it forwarded for, as claimed), and the request id.
pub fn origin(parts: &axum::http::request::Parts) -> String {
    let headers = &parts.headers;
    let request = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let addr = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "-".to_owned(), |c| c.0.ip().to_string());
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(|f| format!(" (for {})", f.chars().take(100).collect::<String>()))
        .unwrap_or_default();
    format!("console {addr}{forwarded} {request}")
}

/// The signed-in viewer, or the answer sending the browser to sign in (with `next` so it
/// comes back here, and a word on why when its session lapsed).
pub async fn viewer(state: &AppState, headers: &HeaderMap, path: &str) -> Result<Viewer, Response> {
    let lapsed = match read_cookie(headers, cookie_name(state)) {
        None => Lapsed::Unknown,
        Some(secret) => {
            match session::open(&state.db, &state.config.console, &secret, Utc::now()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(l)) => l,
                Err(e) => {
                    return Err(super::layout::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "The console could not read your session",
                        &format!("{e:#}"),
                    ));
                }
            }
        }
    };
    let mut target = url::form_urlencoded::Serializer::new(String::new());
    if local_path(path) {
        target.append_pair("next", path);
    }
    if lapsed == Lapsed::Expired {
        target.append_pair("expired", "1");
    }
    let q = target.finish();
    let to = if q.is_empty() {
        "/console/signin".to_owned()
    } else {
        format!("/console/signin?{q}")
    };
    let mut r = super::layout::see_other(&to);
    if lapsed != Lapsed::Unknown
        && let Some(v) = clear_cookie(state)
    {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    Err(r)
}

/// A path inside the console that `next` may send the browser back to: never another
/// site (`//evil.example`, `/\evil.example`), never a scheme.
pub fn local_path(p: &str) -> bool {
    (p == "/console" || p.starts_with("/console/"))
        && !p.contains("//")
        && !p.contains('\\')
        && p.chars().all(|c| c.is_ascii_graphic())
}

/// A query string as name → value (the last of repeated names wins).
pub fn query(raw: Option<String>) -> HashMap<String, String> {
    form(raw.unwrap_or_default().as_bytes())
}

/// A form body as name → value (the last of repeated names wins).
pub fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// Refuse a state-changing request whose CSRF token is missing or wrong, or whose
/// `Origin` is another site.
pub fn check_csrf(
    v: &Viewer,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(), Response> {
    // Fetch metadata, where the browser sends it, says plainly whether a form came from
    // another site; `Origin: null` (a privacy-restricted context) is judged by it alone.
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site" | "same-site")) {
        return Err(refused("The form was sent from another site."));
    }
    let null_origin = headers
        .get(header::ORIGIN)
        .is_some_and(|o| o.as_bytes() == b"null");
    if null_origin {
        if fetch_site != Some("same-origin") {
            return Err(refused("The form was sent from another site."));
        }
    } else if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let same = origin
            .to_str()
            .ok()
            .and_then(|o| url::Url::parse(o).ok())
            .and_then(|u| {
                let h = u.host_str()?.to_owned();
                Some(match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h,
                })
            })
            .is_some_and(|o| Some(o.as_str()) == host);
        if !same {
            return Err(refused("The form was sent from another site."));
        }
    }
    let sent = form.get("csrf").map(String::as_str).unwrap_or("");
    if sent.is_empty() || !constant_time_eq(sent.as_bytes(), v.csrf.as_bytes()) {
        return Err(refused(
            "The form's security token is missing or out of date (it may come from an earlier sign-in).",
        ));
    }
    Ok(())
}

fn refused(why: &str) -> Response {
    super::layout::error(
        StatusCode::FORBIDDEN,
        "The console refused this form",
        &format!("{why} Go back, reload the page and try again; nothing was changed."),
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The partner of a partner user (the portal's pages are theirs only); staff are refused.
pub fn partner_of(v: &Viewer) -> Result<String, Response> {
    match (&v.partner, v.role.is_partner()) {
        (Some(p), true) => Ok(p.clone()),
        _ => Err(super::layout::error(
            StatusCode::FORBIDDEN,
            "This page is for partner users",
            "A partner's own pages (webhook endpoints, integration details) are used by its people, in its portal.",
        )),
    }
}

/// Refuse a viewer whose role lacks `allowed`.
pub fn require(v: &Viewer, allowed: bool, what: &str) -> Result<(), Response> {
    if allowed {
        Ok(())
    } else {
        Err(super::layout::error(
            StatusCode::FORBIDDEN,
            "You do not have access to this",
            &format!(
                "Your role ({}) does not allow {what}. Ask an administrator if you need it.",
                v.role.label()
            ),
        ))
    }
}

/// A request from a signed-in viewer (any method); the extractor sends anyone else to
/// sign in.
pub struct Signed {
    pub viewer: Viewer,
    /// Where it came from, for the audit log.
    pub origin: String,
}

impl Signed {
    pub fn who(&self) -> crate::audit::Who {
        self.viewer.who(&self.origin)
    }
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Back to the page asked for after signing in: GETs only (a form's POST cannot be
        // replayed by a redirect).
        let back = if parts.method == axum::http::Method::GET {
            parts
                .uri
                .path_and_query()
                .map_or("/console", |p| p.as_str())
        } else {
            ""
        };
        let viewer = viewer(state, &parts.headers, back).await?;
        Ok(Signed {
            viewer,
            origin: origin(parts),
        })
    }
}

/// A form posted by a signed-in viewer with the right CSRF token: every state-changing
/// console route takes this, so none can forget the check.
pub struct Posted {
    pub viewer: Viewer,
    pub origin: String,
    pub form: HashMap<String, String>,
    /// Every field in order, repeated names included (checkbox lists).
    pub pairs: Vec<(String, String)>,
}

impl Posted {
    pub fn who(&self) -> crate::audit::Who {
        self.viewer.who(&self.origin)
    }

    /// A field, trimmed; empty when missing.
    pub fn field(&self, name: &str) -> &str {
        self.form.get(name).map_or("", |s| s.trim())
    }
}

impl axum::extract::FromRequest<AppState> for Posted {
    type Rejection = Response;

    async fn from_request(
        req: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let signed = Signed::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, 256 * 1024).await.map_err(|_| {
            super::layout::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The form is too large",
                "The console takes forms of up to 256 KiB.",
            )
        })?;
        let form = form(&bytes);
        check_csrf(&signed.viewer, &form, &parts.headers)?;
        Ok(Posted {
            viewer: signed.viewer,
            origin: signed.origin,
            form,
            pairs: url::form_urlencoded::parse(&bytes).into_owned().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_inside_the_console() {
        assert!(local_path("/console/finance?period=2026-10"));
        assert!(local_path("/console"));
        for bad in [
            "//evil.example/console/",
            "/console//evil.example",
            "/console/\\evil.example",
            "https://evil.example/console/",
            "/consoleevil",
            "/console/a b",
            "javascript:alert(1)",
        ] {
            assert!(!local_path(bad), "{bad}");
        }
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("xpgw_console=a; pgw_console=b"),
        );
        assert_eq!(read_cookie(&h, "pgw_console").as_deref(), Some("b"));
        assert_eq!(read_cookie(&h, "other"), None);
    }
}
