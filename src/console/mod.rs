//! The console at `/console`: finance's month-end, the partner portal and the admin's desk,
//! in the browser, signed in through SSO or a single-use link.
//!
//! - `role.rs`: who may do what; `session.rs` + `store.rs`: server-side sessions and
//!   sign-in links (any instance serves any request); `auth.rs`: the cookie, the viewer of
//!   a request, the CSRF check every form passes (`Posted`).
//! - `layout.rs`: the one page layout and the headers (strict CSP, no framing, no caching).
//! - `signin.rs`, `finance.rs`, `partner.rs`, `webhooks.rs`, `integration.rs`, `admin.rs`
//!   (invitations, audit log), `desk.rs` (partners, keys, jobs, registrations, SSO): thin handlers over the same
//!   services the API uses; every change writes its audit entry in its own transaction.
//! - `usage.rs`: the usage explorer; `chart.rs`: server-rendered SVG charts.

// A refusal here is the page to show (`Response`), returned early from helpers that check
// a role or a form; boxing it would only add noise at every handler.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod auth;
pub mod chart;
pub mod desk;
pub mod finance;
pub mod integration;
pub mod layout;
pub mod partner;
pub mod role;
pub mod session;
pub mod signin;
pub mod store;
pub mod usage;
pub mod webhooks;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::state::AppState;

/// Every console route.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/assets/console.css", get(stylesheet))
        .route("/console/assets/console.js", get(script))
        .route("/console/signin", get(signin::signin_page))
        .route("/console/signin/email", get(signin::signin_email))
        .route("/console/signin/sso/{connection}", get(signin::signin_sso))
        .route(
            "/console/redeem",
            get(signin::redeem_page).post(signin::redeem),
        )
        .route("/console/signout", post(signin::signout))
        .route("/console/finance", get(finance::month_end))
        .route("/console/finance/run", post(finance::run))
        .route("/console/statements/{id}", get(finance::statement))
        .route("/console/statements/{id}/download", get(finance::download))
        .route("/console/statements/{id}/verify", get(finance::verify))
        .route(
            "/console/statements/{id}/adjustments",
            post(finance::adjust),
        )
        .route(
            "/console/statements/{id}/adjustments/{adjustment}/delete",
            post(finance::remove_adjustment),
        )
        .route("/console/statements/{id}/finalize", post(finance::finalize))
        .route("/console/statements/{id}/void", post(finance::void))
        .route("/console/partner", get(partner::home))
        .route("/console/usage", get(usage::explorer))
        .route("/console/partner/integration", get(integration::page_view))
        .route(
            "/console/partner/integration/test/{connection}",
            post(integration::test),
        )
        .route(
            "/console/partner/webhooks",
            get(webhooks::list).post(webhooks::create),
        )
        .route(
            "/console/partner/webhooks/{id}",
            get(webhooks::detail).post(webhooks::update),
        )
        .route(
            "/console/partner/webhooks/{id}/enabled",
            post(webhooks::set_enabled),
        )
        .route(
            "/console/partner/webhooks/{id}/rotate",
            post(webhooks::rotate),
        )
        .route("/console/partner/webhooks/{id}/test", post(webhooks::test))
        .route(
            "/console/partner/webhooks/{id}/replay",
            post(webhooks::replay),
        )
        .route(
            "/console/partner/webhooks/{id}/messages/{message}/replay",
            post(webhooks::replay_message),
        )
        .route(
            "/console/partner/webhooks/{id}/delete",
            post(webhooks::delete),
        )
        .route(
            "/console/admin/invitations",
            get(admin::invitations).post(admin::invite),
        )
        .route(
            "/console/admin/invitations/{id}/revoke",
            post(admin::revoke),
        )
        .route("/console/admin/partners", get(desk::partners))
        .route(
            "/console/admin/keys",
            get(desk::keys).post(desk::create_key),
        )
        .route("/console/admin/keys/{id}/revoke", post(desk::revoke_key))
        .route("/console/admin/jobs", get(desk::jobs))
        .route("/console/admin/jobs/{id}/retry", post(desk::retry_job))
        .route("/console/admin/registrations", get(desk::registrations))
        .route(
            "/console/admin/registrations/{id}/{decision}",
            post(desk::decide),
        )
        .route("/console/admin/sso", get(desk::sso).post(desk::add_sso))
        .route("/console/admin/sso/{id}/delete", post(desk::delete_sso))
        .route("/console/admin/audit", get(admin::audit))
        .route("/console/admin/audit.csv", get(admin::audit_csv))
}

/// `GET /console`: each role's first page.
async fn home(s: auth::Signed) -> Response {
    let to = if s.viewer.role.is_partner() {
        "/console/partner"
    } else {
        "/console/finance"
    };
    layout::see_other(to)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", layout::STYLESHEET)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", layout::SCRIPT)
}
