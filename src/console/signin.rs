//! Signing in and out: the sign-in page, SSO through a connection marked for the console,
//! single-use links (invitations, break-glass), sign-out here or everywhere.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use chrono::Utc;
use maud::html;
use serde_json::Value;

use super::auth::{self, Posted};
use super::layout::{self, error, page, see_other};
use super::role::Audience;
use super::session::{self, LinkProblem, Person};
use crate::http::page::Page;
use crate::sso::Found;
use crate::sso::login::Identity;
use crate::state::AppState;

/// `GET /console/signin`: the company's SSO buttons, and an email field that finds a
/// partner's own IdP (its connection must sign in to the console).
pub async fn signin_page(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let q = super::auth::query(raw);
    let conns = match crate::sso::lookup::all_connections(&state).await {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The sign-in page is unavailable",
                &format!("{e:#}"),
            );
        }
    };
    let staff: Vec<&Found> = conns
        .iter()
        .filter(|f| {
            f.conn
                .console
                .as_ref()
                .is_some_and(|c| c.audience == Audience::Staff)
        })
        .collect();
    let status = match q.get("why").map(String::as_str) {
        Some("signed-out") => Some("You are signed out."),
        Some("signed-out-everywhere") => Some("You are signed out on every device."),
        _ if q.contains_key("expired") => {
            Some("Your session ended after a time without use. Sign in again to continue.")
        }
        _ => None,
    };
    let problem = q.get("problem").map(String::as_str).map(|p| match p {
        "no-connection" => "No organisation with console access signs in with that address. Ask your administrator for an invitation.",
        _ => "The sign-in did not complete. Try again.",
    });
    let body = html! {
        div.signin {
            h1 { "Sign in to the console" }
            (layout::notice(status))
            @if let Some(p) = problem { p.problem role="alert" { (p) } }
            @if !staff.is_empty() {
                h2 { "Company staff" }
                ul {
                    @for f in &staff {
                        li { a.button href={ "/console/signin/sso/" (urlencode(&f.conn.id)) } {
                            "Sign in with " (f.organisation())
                        } }
                    }
                }
            }
            h2 { "Partners" }
            form.stack method="get" action="/console/signin/email" {
                label for="email" { "Your work email" }
                input #email type="email" name="email" autocomplete="email" required;
                button type="submit" { "Continue" }
            }
            p.muted { "Invited by email? Open the link in your invitation: it signs you in once." }
        }
    };
    page(None, "Sign in", "", body)
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `GET /console/signin/email?email=`: the partner connection for that address's domain.
pub async fn signin_email(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let q = super::auth::query(raw);
    let email = q.get("email").map(|e| e.trim()).unwrap_or("");
    let found = match crate::sso::lookup::connection_for_email(&state, email).await {
        Ok(f) => f.filter(|f| f.conn.console.is_some()),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The sign-in page is unavailable",
                &format!("{e:#}"),
            );
        }
    };
    match found {
        Some(f) => see_other(&format!("/console/signin/sso/{}", urlencode(&f.conn.id))),
        None => see_other("/console/signin?problem=no-connection"),
    }
}

/// `GET /console/signin/sso/{connection}`: off to the IdP, the state bound to this browser.
pub async fn signin_sso(
    State(state): State<AppState>,
    crate::http::Path(id): crate::http::Path<String>,
    headers: HeaderMap,
) -> Response {
    let found = match crate::sso::lookup::connection(&state, &id).await {
        Ok(Some(f)) if f.conn.console.is_some() => f,
        Ok(_) => {
            return error(
                StatusCode::NOT_FOUND,
                "Unknown sign-in connection",
                "No connection of that name signs in to the console.",
            );
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The sign-in page is unavailable",
                &format!("{e:#}"),
            );
        }
    };
    let cookie = crate::sso::routes::browser_cookie(&state);
    let browser = cookie
        .read(&headers)
        .filter(|v| crate::launches::binding::is_secret(v))
        .unwrap_or_else(crate::launches::binding::new_secret);
    match crate::sso::login::begin(&state, &found, &browser, true).await {
        Ok(url) => {
            let mut r = crate::http::page::redirect(&url);
            if let Some(v) = cookie.set(&browser) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            layout::secure_headers(r.headers_mut());
            r
        }
        Err(p) => axum::response::IntoResponse::into_response(p),
    }
}

/// The end of an SSO sign-in to the console (called by `sso::login` once the IdP's answer
/// is verified): the role from the person's groups, a session, home.
pub async fn from_sso(state: &AppState, found: &Found, id: Identity) -> Result<Response, Page> {
    let Some(access) = &found.conn.console else {
        return Err(Page::new(
            StatusCode::FORBIDDEN,
            "This connection does not sign in to the console",
        ));
    };
    let groups: Vec<String> = id
        .groups
        .iter()
        .filter_map(|g| match g {
            Value::String(s) => Some(s.clone()),
            other => other.as_str().map(str::to_owned),
        })
        .collect();
    let Some(role) = access.role_for(&groups) else {
        tracing::warn!(connection = %found.conn.id, "console sign-in refused: no role for the person's groups");
        return Err(Page::new(StatusCode::FORBIDDEN, "You have no access to the console").line(
            format!(
                "{} signed you in, but you are in none of the groups that give access to the console. Ask your administrator to add you to one.",
                found.organisation()
            ),
        ));
    };
    let partner = match access.audience {
        Audience::Staff => None,
        Audience::Partner => Some(found.partner_id.clone()),
    };
    let person = Person {
        key: format!("sso:{}:{}", found.conn.id, id.subject),
        name: id
            .name
            .clone()
            .or_else(|| id.email.clone())
            .unwrap_or_else(|| id.subject.clone()),
        email: id.email.clone(),
        role,
        partner,
        via: format!("sso {}", found.conn.id),
    };
    let origin = format!("console sso {}", found.conn.id);
    let secret = session::start(
        &state.db,
        &state.config.console,
        &person,
        &origin,
        Utc::now(),
    )
    .await
    .map_err(|e| crate::http::page::internal(format!("opening the console session: {e:#}")))?;
    let mut r = see_other("/console");
    if let Some(v) = auth::set_cookie(state, &secret) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(r)
}

fn link_problem(p: LinkProblem) -> Response {
    let (title, line) = match p {
        LinkProblem::Unknown => (
            "This sign-in link is not valid",
            "Check that the whole link was copied, or ask for a new one.",
        ),
        LinkProblem::Used => (
            "This sign-in link was already used",
            "Each link signs in once. Ask whoever sent it for a new one.",
        ),
        LinkProblem::Expired => (
            "This sign-in link has expired",
            "Ask whoever sent it for a new one.",
        ),
        LinkProblem::Revoked => (
            "This sign-in link was withdrawn",
            "Ask whoever sent it for a new one.",
        ),
    };
    error(StatusCode::BAD_REQUEST, title, line)
}

/// The cookie pairing a redeem page with its form (double submit): a cross-site form post
/// carries no `SameSite=Lax` cookie, so nobody can sign a victim's browser in to their own
/// account by posting their link from elsewhere.
const PRE: &str = "pgw_console_pre";

/// `GET /console/redeem?token=`: what the link signs in as, and a button. Opening the link
/// spends nothing (mail scanners and link previews follow links); the button does.
pub async fn redeem_page(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let q = super::auth::query(raw);
    let token = q.get("token").map(String::as_str).unwrap_or("");
    let row = match session::peek_link(&state.db, token, Utc::now()).await {
        Ok(Ok(row)) => row,
        Ok(Err(p)) => return link_problem(p),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The link could not be read",
                &format!("{e:#}"),
            );
        }
    };
    let pre = crate::random::token(24);
    let partner_name = row
        .partner_id
        .as_deref()
        .and_then(|p| state.config.partner(p))
        .map(|p| p.name.clone());
    let role = super::role::Role::parse(&row.role).map_or("", |r| r.label());
    let body = html! {
        div.signin {
            h1 { "Sign in to the console" }
            p {
                "This link signs you in as " strong { (role) }
                @if let Some(n) = &partner_name { " for " strong { (n) } }
                @if let Some(e) = &row.email { " (" (e) ")" }
                ". It works once."
            }
            form method="post" action="/console/redeem" {
                input type="hidden" name="token" value=(token);
                input type="hidden" name="pre" value=(pre);
                button type="submit" { "Sign in" }
            }
        }
    };
    let mut r = page(None, "Sign in", "", body);
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!(
        "{PRE}={pre}; Path=/console/redeem; Max-Age=900; HttpOnly; SameSite=Lax{}",
        if state.config.http.public_base().starts_with("https://") {
            "; Secure"
        } else {
            ""
        }
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `POST /console/redeem`: spend the link and open the session.
pub async fn redeem(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large", "");
    };
    let form = auth::form(&bytes);
    let pre = form.get("pre").map(String::as_str).unwrap_or("");
    let cookie = auth::read_cookie(&parts.headers, PRE);
    if pre.is_empty() || cookie.as_deref() != Some(pre) {
        return error(
            StatusCode::FORBIDDEN,
            "The console refused this sign-in",
            "Open the sign-in link itself in this browser (with cookies on), then press Sign in.",
        );
    }
    let token = form.get("token").map(String::as_str).unwrap_or("");
    let origin = auth::origin(&parts);
    match session::redeem(&state.db, &state.config.console, token, &origin, Utc::now()).await {
        Ok(Ok((secret, _))) => {
            let mut r = see_other("/console");
            if let Some(v) = auth::set_cookie(&state, &secret) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Ok(Err(p)) => link_problem(p),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The sign-in failed",
            &format!("{e:#}"),
        ),
    }
}

/// `POST /console/signout` (`everywhere=1`: every session of this person).
pub async fn signout(State(state): State<AppState>, p: Posted) -> Response {
    let everywhere = p.field("everywhere") == "1";
    if let Err(e) = session::end(&state.db, &p.viewer, everywhere, &p.origin, Utc::now()).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Signing out failed",
            &format!("{e:#}"),
        );
    }
    let why = if everywhere {
        "signed-out-everywhere"
    } else {
        "signed-out"
    };
    let mut r = see_other(&format!("/console/signin?why={why}"));
    if let Some(v) = auth::clear_cookie(&state) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}
