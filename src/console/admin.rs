//! The admin's pages: invitations (create, shown once; revoke) and the audit log (filter,
//! page back, CSV).

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use maud::html;

use super::auth::{self, Posted, Signed};
use super::layout::{self, csrf, error, page, see_other};
use super::role::Role;
use super::session::{self, LinkKind};
use crate::audit::store::{Filter, Record};
use crate::http::Path;
use crate::state::AppState;
use crate::time::to_micros;

/// The URL a sign-in link's token opens.
pub fn link_url(state: &AppState, token: &str) -> String {
    format!(
        "{}/console/redeem?token={token}",
        state.config.http.public_base()
    )
}

/// `GET /console/admin/invitations`.
pub async fn invitations(State(state): State<AppState>, s: Signed) -> Response {
    let v = &s.viewer;
    if let Err(r) = auth::require(v, v.role.administers(), "managing invitations") {
        return r;
    }
    let list = match super::store::invitations(&state.db, None, 200).await {
        Ok(l) => l,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Invitations could not be read",
                &format!("{e:#}"),
            );
        }
    };
    let now = to_micros(Utc::now());
    let body = html! {
        h1 { "Invitations" }
        p { "An invitation is a link that signs one partner user in once, within "
            (state.config.console.invitation_ttl_hours) " hours. Send it to them yourself: it is shown once." }
        h2 { "Invite a partner user" }
        form.stack method="post" action="/console/admin/invitations" {
            (csrf(v))
            label for="partner" { "Partner" }
            select #partner name="partner" required {
                @for p in state.config.partners.iter() {
                    option value=(p.id) { (p.name) " (" (p.id) ")" }
                }
            }
            label for="email" { "Their email" }
            input #email type="email" name="email" required autocomplete="off";
            label for="role" { "Role" }
            select #role name="role" {
                option value="partner-viewer" { "Partner viewer: reads statements and usage" }
                option value="partner-admin" { "Partner administrator: also manages webhook endpoints" }
            }
            button type="submit" { "Create invitation" }
        }
        h2 { "Recent invitations" }
        table {
            thead { tr {
                th scope="col" { "Partner" } th scope="col" { "Email" } th scope="col" { "Role" }
                th scope="col" { "Created" } th scope="col" { "State" } th scope="col" { span.muted { "Action" } }
            } }
            tbody {
                @for l in &list {
                    tr {
                        td.mono { (l.partner_id.as_deref().unwrap_or("")) }
                        td { (l.email.as_deref().unwrap_or("")) }
                        td { (l.role) }
                        td { (super::layout::when(l.created_at_us)) br; span.muted { "by " (l.created_by) } }
                        td {
                            @if let Some(u) = l.used_at_us { "used " (super::layout::when(u)) }
                            @else if let Some(r) = l.revoked_at_us { "revoked " (super::layout::when(r)) }
                            @else if l.expires_at_us <= now { "expired" }
                            @else { "open until " (super::layout::when(l.expires_at_us)) }
                        }
                        td {
                            @if l.used_at_us.is_none() && l.revoked_at_us.is_none() && l.expires_at_us > now {
                                form.inline method="post" action={ "/console/admin/invitations/" (l.id) "/revoke" } {
                                    (csrf(v))
                                    button.secondary type="submit" aria-label={ "Revoke the invitation of " (l.email.as_deref().unwrap_or("")) } { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(Some(v), "Invitations", "/console/admin/invitations", body)
}

/// `POST /console/admin/invitations`: the link, shown once.
pub async fn invite(State(state): State<AppState>, p: Posted) -> Response {
    let v = &p.viewer;
    if let Err(r) = auth::require(v, v.role.administers(), "managing invitations") {
        return r;
    }
    let partner = p.field("partner");
    let email = p.field("email");
    let Some(partner_cfg) = state.config.partner(partner) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Unknown partner",
            &format!("No partner {partner:?} is configured."),
        );
    };
    if !valid_email(email) {
        return error(
            StatusCode::BAD_REQUEST,
            "That is not an email address",
            "Give the invited person's email address, such as ana@partner.example.",
        );
    }
    let role = match Role::parse(p.field("role")) {
        Some(r) if r.is_partner() => r,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "Unknown role",
                "An invitation is for partner-viewer or partner-admin.",
            );
        }
    };
    let link = match session::create_link(
        &state.db,
        &state.config.console,
        LinkKind::Invitation,
        role,
        Some(partner),
        Some(email),
        &p.who(),
        Utc::now(),
    )
    .await
    {
        Ok(l) => l,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The invitation was not created",
                &format!("{e:#}"),
            );
        }
    };
    let url = link_url(&state, &link.token);
    let body = html! {
        h1 { "Invitation created" }
        p { "Send this link to " strong { (email) } " (" (role.label()) " for " (partner_cfg.name) "). "
            "It signs them in once, until " (link.expires_at.format("%Y-%m-%d %H:%M UTC")) ". "
            strong { "It is shown only now." } }
        p { label for="link" { "Invitation link" } br;
            input #link type="text" readonly value=(url) size="80"; }
        p { a href="/console/admin/invitations" { "Back to invitations" } }
    };
    page(
        Some(v),
        "Invitation created",
        "/console/admin/invitations",
        body,
    )
}

/// A plausible address: one `@`, something either side, no spaces or angle brackets.
pub fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.contains('@')
        && e.len() <= 254
        && !e
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>\"".contains(c))
}

/// `POST /console/admin/invitations/{id}/revoke`.
pub async fn revoke(State(state): State<AppState>, Path(id): Path<String>, p: Posted) -> Response {
    let v = &p.viewer;
    if let Err(r) = auth::require(v, v.role.administers(), "managing invitations") {
        return r;
    }
    let now = Utc::now();
    let outcome = async {
        let mut tx = state.db.begin().await?;
        let done = super::store::revoke_link(&mut tx, &id, None, to_micros(now)).await?;
        if done {
            let detail = serde_json::json!({});
            let who = p.who();
            let entry = who.entry("console.invitation.revoke", None, Some(&id), &detail);
            crate::audit::store::insert(&mut tx, &entry, to_micros(now)).await?;
        }
        tx.commit().await?;
        Ok::<bool, anyhow::Error>(done)
    }
    .await;
    match outcome {
        Ok(true) => see_other("/console/admin/invitations"),
        Ok(false) => error(
            StatusCode::CONFLICT,
            "Not revoked",
            "That invitation is already used, revoked or unknown.",
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Not revoked",
            &format!("{e:#}"),
        ),
    }
}

const PAGE: i64 = 100;

fn filter_of(q: &HashMap<String, String>) -> Filter {
    let nonempty = |k: &str| {
        q.get(k)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    Filter {
        partner: nonempty("partner"),
        action: nonempty("action"),
        since_us: None,
        until_us: None,
    }
}

fn cursor(q: &HashMap<String, String>) -> Option<(i64, String)> {
    let (at, id) = q
        .get("before")?
        .split_once('_')
        .map(|(a, b)| (a.to_owned(), b))?;
    Some((at.parse().ok()?, id.to_owned()))
}

/// `GET /console/admin/audit`: newest first, `?partner=&action=` (an action or a prefix
/// ending in `.`), `?before=` to page back.
pub async fn audit(State(state): State<AppState>, s: Signed, RawQuery(raw): RawQuery) -> Response {
    let v = &s.viewer;
    if let Err(r) = auth::require(v, v.role.administers(), "reading the audit log") {
        return r;
    }
    let q = super::auth::query(raw);
    let f = filter_of(&q);
    let rows: Vec<Record> = match crate::audit::store::list(&state.db, &f, cursor(&q), PAGE).await {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The audit log could not be read",
                &format!("{e:#}"),
            );
        }
    };
    let keep = |extra: &str| {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        if let Some(p) = &f.partner {
            ser.append_pair("partner", p);
        }
        if let Some(a) = &f.action {
            ser.append_pair("action", a);
        }
        let base = ser.finish();
        match (base.is_empty(), extra.is_empty()) {
            (true, _) => extra.to_owned(),
            (false, true) => base,
            (false, false) => format!("{base}&{extra}"),
        }
    };
    let older = rows
        .last()
        .filter(|_| rows.len() as i64 == PAGE)
        .map(|r| keep(&format!("before={}_{}", r.at_us, r.id)));
    let body = html! {
        h1 { "Audit log" }
        p.muted { "Every console action, statement change and privacy request: who, when, what and from where. Kept "
            (state.config.privacy.retention.audit_log_days) " days." }
        form.toolbar method="get" action="/console/admin/audit" {
            div { label for="f-partner" { "Partner" } br; input #f-partner type="text" name="partner" value=(f.partner.clone().unwrap_or_default()); }
            div { label for="f-action" { "Action (or prefix such as statement.)" } br; input #f-action type="text" name="action" value=(f.action.clone().unwrap_or_default()); }
            button.secondary type="submit" { "Filter" }
            a href={ "/console/admin/audit.csv?" (keep("")) } { "Download CSV" }
        }
        table {
            caption.muted { "Newest first" }
            thead { tr {
                th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Action" }
                th scope="col" { "Partner" } th scope="col" { "Subject" } th scope="col" { "From" } th scope="col" { "Detail" }
            } }
            tbody {
                @for r in &rows {
                    tr {
                        td { (super::layout::when(r.at_us)) }
                        td { (r.actor) br; span.muted { (r.actor_role) @if let Some(p) = &r.actor_partner { " at " (p) } } }
                        td.mono { (r.action) }
                        td.mono { (r.partner_id.as_deref().unwrap_or("")) }
                        td.mono { (r.subject_ref.as_deref().unwrap_or("")) }
                        td { (r.origin) }
                        td {
                            details {
                                summary { "Detail" }
                                code { (r.detail) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(o) = older { p { a href={ "/console/admin/audit?" (o) } { "Older entries" } } }
    };
    page(Some(v), "Audit log", "/console/admin/audit", body)
}

/// `GET /console/admin/audit.csv`: the filtered log, whole, as CSV.
pub async fn audit_csv(
    State(state): State<AppState>,
    s: Signed,
    RawQuery(raw): RawQuery,
) -> Response {
    let v = &s.viewer;
    if let Err(r) = auth::require(v, v.role.administers(), "reading the audit log") {
        return r;
    }
    let f = filter_of(&super::auth::query(raw));
    let mut all = Vec::new();
    let mut after = None;
    loop {
        match crate::audit::store::list(&state.db, &f, after.clone(), 5000).await {
            Ok(rows) => {
                let full = rows.len() == 5000;
                after = rows.last().map(|r| (r.at_us, r.id.clone()));
                all.extend(rows);
                if !full {
                    break;
                }
            }
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The audit log could not be read",
                    &format!("{e:#}"),
                );
            }
        }
    }
    let mut r = crate::audit::csv(&all).into_response();
    let h = r.headers_mut();
    layout::secure_headers(h);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"audit-log.csv\""),
    );
    r
}
