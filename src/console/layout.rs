//! The one layout of every console page, and the headers every console answer carries.
//!
//! Pages are maud templates: checked at compile time, every interpolated value escaped.
//! The policy allows no inline script or style at all: the stylesheet and the one small
//! script (progressive enhancement only; every page works without it) are files the
//! gateway serves. The console is never framed (`frame-ancestors 'none'`, and
//! `X-Frame-Options: DENY` from `http::headers`), unlike LTI and SMART pages.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::role::Role;
use super::session::Viewer;

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The stylesheet and script, served from `/console/assets/`.
pub const STYLESHEET: &str = include_str!("../../assets/console/console.css");
pub const SCRIPT: &str = include_str!("../../assets/console/console.js");

/// The navigation a role sees: (path, label).
fn nav(role: Role) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if role.reads_finance() {
        out.push(("/console/finance", "Month-end"));
    }
    if role.is_partner() {
        out.push(("/console/partner", "Statements"));
        out.push(("/console/partner/webhooks", "Webhooks"));
        out.push(("/console/partner/integration", "Integration"));
    }
    out.push(("/console/usage", "Usage"));
    if role.administers() {
        out.push(("/console/admin/partners", "Admin"));
    }
    out
}

/// The admin pages, shown as a second row of navigation on each of them.
const ADMIN: [(&str, &str); 7] = [
    ("/console/admin/partners", "Partners"),
    ("/console/admin/keys", "API keys"),
    ("/console/admin/jobs", "Dead jobs"),
    ("/console/admin/registrations", "LTI registrations"),
    ("/console/admin/sso", "SSO connections"),
    ("/console/admin/invitations", "Invitations"),
    ("/console/admin/audit", "Audit log"),
];

/// Whether nav entry `path` is the section of page `here` (every admin page is "Admin").
fn current(path: &str, here: &str) -> bool {
    path == here || (path.starts_with("/console/admin/") && here.starts_with("/console/admin/"))
}

/// A whole page for `v` (or for nobody, on the sign-in pages); `here` is the nav path of
/// the section it belongs to.
pub fn page(v: Option<&Viewer>, title: &str, here: &str, body: Markup) -> Response {
    page_with(StatusCode::OK, v, title, here, body)
}

pub fn page_with(
    status: StatusCode,
    v: Option<&Viewer>,
    title: &str,
    here: &str,
    body: Markup,
) -> Response {
    document(status, v, title, here, body, None)
}

/// A page that reloads itself every `secs` (a run's progress), with no script.
pub fn page_refreshing(
    v: Option<&Viewer>,
    title: &str,
    here: &str,
    body: Markup,
    secs: u32,
) -> Response {
    document(StatusCode::OK, v, title, here, body, Some(secs))
}

fn document(
    status: StatusCode,
    v: Option<&Viewer>,
    title: &str,
    here: &str,
    body: Markup,
    refresh: Option<u32>,
) -> Response {
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(s) = refresh { meta http-equiv="refresh" content=(s); }
                title { (title) " · partner-gateway console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "partner-gateway" }
                    @if let Some(v) = v {
                        nav aria-label="Console" {
                            ul {
                                @for (path, label) in nav(v.role) {
                                    li {
                                        @if current(path, here) {
                                            a href=(path) aria-current="page" { (label) }
                                        } @else {
                                            a href=(path) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        div.who {
                            span { (v.name) " · " (v.role.label())
                                @if let Some(p) = &v.partner { " · " (p) } }
                            form method="post" action="/console/signout" {
                                input type="hidden" name="csrf" value=(v.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                @if v.is_some_and(|v| v.role.administers()) && here.starts_with("/console/admin/") {
                    nav.subnav aria-label="Admin" {
                        ul {
                            @for (path, label) in ADMIN {
                                li {
                                    @if path == here {
                                        a href=(path) aria-current="page" { (label) }
                                    } @else {
                                        a href=(path) { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    };
    respond(status, doc.into_string())
}

/// An HTML answer with the console's headers.
pub fn respond(status: StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    r
}

/// What every console answer carries: its policy, no caching (pages hold money and
/// personal data), a referrer to the console itself only (a sign-in link's token is in its
/// query; `no-referrer` would also make browsers send `Origin: null` with the console's own
/// forms, which the CSRF check could then not tell from another site's).
pub fn secure_headers(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// An instant as the console shows it: UTC, to the second.
pub fn when(us: i64) -> String {
    crate::time::from_micros(us)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

/// A page saying what went wrong, for a person.
pub fn error(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = html! {
        h1 { (title) }
        p { (detail) }
        p { a href="/console" { "Back to the console" } }
    };
    page_with(status, None, title, "", body)
}

/// A refusal from a service the API shares (`ApiError`), as a page: its status and words,
/// each invalid field named; a server failure logged and not shown.
pub fn api_error(e: crate::http::ApiError) -> Response {
    let status = e.status();
    if status.is_server_error() {
        return failure(e);
    }
    let mut detail = e.to_string();
    if let crate::http::ApiError::Validation { errors, .. } = &e {
        let parts: Vec<String> = errors
            .iter()
            .map(|f| format!("{}: {}", f.field, f.reason))
            .collect();
        detail = format!("{detail}: {}", parts.join("; "));
    }
    error(status, "That could not be done", &detail)
}

/// The gateway failed: logged with the request, a plain page for the person.
pub fn failure(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console action failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "That could not be done",
        "The gateway failed; the error is in its log. Nothing was changed.",
    )
}

/// The answer to a change that either happened (back to `to`) or found nothing to change
/// (409 with `why`: done already, or unknown).
pub fn settled<E: std::fmt::Display>(
    outcome: Result<bool, E>,
    to: &str,
    title: &str,
    why: &str,
) -> Response {
    match outcome {
        Ok(true) => see_other(to),
        Ok(false) => error(StatusCode::CONFLICT, title, why),
        Err(e) => failure(e),
    }
}

/// 303 See Other to a path of the console (after a form, so reload does not resend it).
pub fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure_headers(r.headers_mut());
    r
}

/// The hidden CSRF field of a form.
pub fn csrf(v: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(v.csrf); }
}

/// A notice from the query string (`?done=` after an action), shown at the top of a page.
pub fn notice(text: Option<&str>) -> Markup {
    html! {
        @if let Some(t) = text.filter(|t| !t.is_empty()) {
            p.notice role="status" { (t) }
        }
    }
}
