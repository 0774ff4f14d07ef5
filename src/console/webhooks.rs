//! The partner portal's webhook endpoints, like Svix's App Portal: add an endpoint, edit
//! its URL, description and event filter (checked against the catalogue), rotate its
//! secret (shown once), disable and enable it, send a test message, read the delivery log
//! with every attempt (status, duration, the start of the answer), replay one message or
//! everything that failed since a time. Partner administrators change; partner viewers
//! read. Every change goes through `webhooks::manage`, which writes the audit entry.
//! An endpoint of another partner reads as not found.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{Markup, html};

use super::auth::{self, Posted, Signed};
use super::layout::{csrf, error, page, see_other};
use super::session::Viewer;
use crate::http::{ApiError, Path};
use crate::state::AppState;
use crate::webhooks::endpoint::{EndpointPatch, NewEndpoint};
use crate::webhooks::events::CATALOGUE;
use crate::webhooks::manage;
use crate::webhooks::signature::Scheme;
use crate::webhooks::store::{self, EndpointRow, MessageFilter, Owner};

const HERE: &str = "/console/partner/webhooks";

fn failed(e: ApiError) -> Response {
    super::layout::api_error(e)
}

/// The endpoint, if it is `v`'s partner's; else not found.
async fn owned(state: &AppState, v: &Viewer, id: &str) -> Result<EndpointRow, Response> {
    let partner = auth::partner_of(v)?;
    match store::get_endpoint(&state.db, id).await {
        Ok(Some(e)) if e.partner_id.as_deref() == Some(partner.as_str()) => Ok(e),
        Ok(_) => Err(error(
            StatusCode::NOT_FOUND,
            "No such endpoint",
            "There is no webhook endpoint with that id among yours.",
        )),
        Err(e) => Err(failed(ApiError::Internal(e.into()))),
    }
}

fn filters_of(e: &EndpointRow) -> Vec<String> {
    store::event_types(&e.event_types)
}

/// The event type checkboxes: every type of the catalogue (none ticked: every event).
fn filter_boxes(ticked: &[String]) -> Markup {
    html! {
        fieldset {
            legend { "Events to send (none ticked: all of them)" }
            @for (i, t) in CATALOGUE.iter().enumerate() {
                div {
                    @let id = format!("type-{i}");
                    @if ticked.iter().any(|x| x == t.name) {
                        input id=(id) type="checkbox" name="event_type" value=(t.name) checked;
                    } @else {
                        input id=(id) type="checkbox" name="event_type" value=(t.name);
                    }
                    " "
                    label for=(id) { code { (t.name) } }
                    " "
                    span.muted { (t.description) }
                }
            }
        }
    }
}

fn state_badge(e: &EndpointRow) -> Markup {
    if !e.enabled {
        html! { span class="status status-void" { "disabled" } }
    } else if e.failing_since_us.is_some() {
        html! { span class="status status-draft" { "failing" } }
    } else {
        html! { span class="status status-finalized" { "enabled" } }
    }
}

/// `GET /console/partner/webhooks`.
pub async fn list(State(state): State<AppState>, s: Signed) -> Response {
    let v = &s.viewer;
    let partner = match auth::partner_of(v) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let rows = match store::list_endpoints(&state.db, Owner::Partner(&partner)).await {
        Ok(r) => r,
        Err(e) => return failed(ApiError::Internal(e.into())),
    };
    let body = html! {
        h1 { "Webhook endpoints" }
        p { "The gateway signs every message with Standard Webhooks signatures, retries failures with backoff, and keeps a log of every attempt." }
        @if rows.is_empty() {
            p { "No endpoint yet." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "URL" } th scope="col" { "Events" } th scope="col" { "State" } th scope="col" { "Created" }
                } }
                tbody {
                    @for e in &rows {
                        tr {
                            th scope="row" { a href={ (HERE) "/" (e.id) } { (e.url) } @if !e.description.is_empty() { br; span.muted { (e.description) } } }
                            td { @let f = filters_of(e); @if f.is_empty() { "all" } @else { (f.join(", ")) } }
                            td { (state_badge(e)) }
                            td { (super::layout::when(e.created_at_us)) }
                        }
                    }
                }
            }
        }
        @if v.role.writes_partner() {
            h2 { "Add an endpoint" }
            form.stack method="post" action=(HERE) {
                (csrf(v))
                label for="url" { "URL (https)" }
                input #url type="url" name="url" required placeholder="https://hooks.example.com/partner-gateway";
                label for="description" { "Description" }
                input #description type="text" name="description" maxlength="200";
                label for="scheme" { "Signature" }
                select #scheme name="scheme" {
                    option value="v1" { "v1: HMAC-SHA256 with a shared secret" }
                    option value="v1a" { "v1a: ed25519 (you need only our public key)" }
                }
                (filter_boxes(&[]))
                button type="submit" { "Add endpoint" }
            }
        }
    };
    page(Some(v), "Webhook endpoints", HERE, body)
}

fn ticked(p: &Posted) -> Vec<String> {
    p.pairs
        .iter()
        .filter(|(k, _)| k == "event_type")
        .map(|(_, v)| v.clone())
        .collect()
}

fn writes(p: &Posted) -> Result<String, Response> {
    let partner = auth::partner_of(&p.viewer)?;
    auth::require(
        &p.viewer,
        p.viewer.role.writes_partner(),
        "changing webhook endpoints",
    )?;
    Ok(partner)
}

/// The key shown once after creating or rotating.
fn shown_once(
    v: &Viewer,
    e: &EndpointRow,
    title: &str,
    scheme: Scheme,
    key: &crate::webhooks::signature::SigningKey,
) -> Response {
    let body = html! {
        h1 { (title) }
        @match (scheme, key.public_key()) {
            (Scheme::V1a, Some(pk)) => {
                p { "Verify messages with this public key (ed25519). The private key never leaves the gateway." }
                p { label for="key" { "Public key" } br; input #key type="text" readonly value=(pk) size="70"; }
            }
            _ => {
                p { strong { "Copy this secret now: it is shown only once." } " Verify each message's " code { "webhook-signature" } " with it." }
                p { label for="key" { "Signing secret" } br; input #key type="text" readonly value=(key.encode()) size="70"; }
            }
        }
        p { a href={ (HERE) "/" (e.id) } { "Go to the endpoint" } }
    };
    page(Some(v), title, HERE, body)
}

/// `POST /console/partner/webhooks`.
pub async fn create(State(state): State<AppState>, p: Posted) -> Response {
    let partner = match writes(&p) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let scheme = match p.field("scheme") {
        "v1a" => Scheme::V1a,
        _ => Scheme::V1,
    };
    let req = NewEndpoint {
        partner: Some(partner.clone()),
        app: false,
        url: p.field("url").to_owned(),
        description: p.field("description").to_owned(),
        event_types: ticked(&p),
        enabled: true,
        rate_limit: None,
        ordered: false,
        scheme,
    };
    match manage::create(&state, Some(partner), req, &p.who()).await {
        Ok(c) => shown_once(&p.viewer, &c.row, "Endpoint added", scheme, &c.key),
        Err(e) => failed(e),
    }
}

/// `GET /console/partner/webhooks/{id}`: the endpoint, its settings and its delivery log.
pub async fn detail(State(state): State<AppState>, s: Signed, Path(id): Path<String>) -> Response {
    let v = &s.viewer;
    let e = match owned(&state, v, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let filter = MessageFilter {
        partner: e.partner_id.clone(),
        endpoint: Some(e.id.clone()),
        limit: 50,
        ..Default::default()
    };
    let messages = match store::list_messages(&state.db, &filter).await {
        Ok(m) => m,
        Err(err) => return failed(ApiError::Internal(err.into())),
    };
    let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    let deliveries = match store::deliveries_of(&state.db, &ids).await {
        Ok(d) => d,
        Err(err) => return failed(ApiError::Internal(err.into())),
    };
    let mut attempts = Vec::with_capacity(messages.len());
    for m in &messages {
        match store::attempts_of(&state.db, &m.id).await {
            Ok(a) => attempts.push(
                a.into_iter()
                    .filter(|a| a.endpoint_id == e.id)
                    .collect::<Vec<_>>(),
            ),
            Err(err) => return failed(ApiError::Internal(err.into())),
        }
    }
    let w = v.role.writes_partner();
    let filters = filters_of(&e);
    let base = format!("{HERE}/{}", e.id);
    let body = html! {
        p { a href=(HERE) { "← All endpoints" } }
        h1 { "Endpoint " (state_badge(&e)) }
        dl.facts {
            dt { "URL" } dd.mono { (e.url) }
            dt { "Id" } dd.mono { (e.id) }
            dt { "Signature" } dd { (e.scheme) }
            dt { "Events" } dd { @if filters.is_empty() { "all" } @else { (filters.join(", ")) } }
            @if let Some(r) = &e.disabled_reason { dt { "Disabled because" } dd { (r) } }
            @if let Some(f) = e.failing_since_us { dt { "Failing since" } dd { (super::layout::when(f)) } }
        }
        @if w {
            div.toolbar {
                form method="post" action={ (base) "/test" } { (csrf(v)) button type="submit" { "Send a test event" } }
                @if e.enabled {
                    form method="post" action={ (base) "/enabled" } data-confirm="Stop sending to this endpoint?" { (csrf(v)) input type="hidden" name="enabled" value="0"; button.secondary type="submit" { "Disable" } }
                } @else {
                    form method="post" action={ (base) "/enabled" } { (csrf(v)) input type="hidden" name="enabled" value="1"; button type="submit" { "Enable" } }
                }
                form method="post" action={ (base) "/rotate" } data-confirm="Make a new secret? The old one keeps signing beside it for a while." { (csrf(v)) button.secondary type="submit" { "Rotate secret" } }
                form method="post" action={ (base) "/delete" } data-confirm="Delete this endpoint? Waiting messages are cancelled." { (csrf(v)) button.danger type="submit" { "Delete" } }
            }
            h2 { "Replay failed messages" }
            form.toolbar method="post" action={ (base) "/replay" } {
                (csrf(v))
                div { label for="since" { "Failed since (UTC)" } br; input #since type="datetime-local" name="since" required; }
                button type="submit" { "Replay" }
            }
            h2 { "Settings" }
            form.stack method="post" action=(base) {
                (csrf(v))
                label for="url" { "URL" }
                input #url type="url" name="url" required value=(e.url);
                label for="description" { "Description" }
                input #description type="text" name="description" maxlength="200" value=(e.description);
                (filter_boxes(&filters))
                button type="submit" { "Save" }
            }
        }
        h2 { "Delivery log" }
        @if messages.is_empty() {
            p { "Nothing sent to this endpoint yet." }
        } @else {
            table {
                caption.muted { "The 50 newest messages to this endpoint, with every attempt" }
                thead { tr {
                    th scope="col" { "Message" } th scope="col" { "Event" } th scope="col" { "State" }
                    th scope="col" { "Attempts" } @if w { th scope="col" { span.muted { "Action" } } }
                } }
                tbody {
                    @for (m, tries) in messages.iter().zip(&attempts) {
                        @let d = deliveries.iter().filter(|d| d.message_id == m.id && d.endpoint_id == e.id).max_by_key(|d| d.id);
                        tr {
                            th scope="row" { span.mono { (m.id) } br; span.muted { (super::layout::when(m.created_at_us)) } }
                            td.mono { (m.event_type) }
                            td { @if let Some(d) = d { (d.state) @if let Some(st) = d.last_status { " (" (st) ")" } } }
                            td {
                                @if tries.is_empty() { span.muted { "none yet" } }
                                @else {
                                    details {
                                        summary { (tries.len()) " attempt(s)" }
                                        ul {
                                            @for a in tries {
                                                li {
                                                    (super::layout::when(a.started_at_us)) ": "
                                                    @if let Some(st) = a.status { "HTTP " (st) } @else { "no answer" }
                                                    ", " (format!("{:.1}", a.duration_us as f64 / 1000.0)) " ms, " (a.outcome)
                                                    @if let Some(err) = &a.error { br; span.muted { (err) } }
                                                    @if let Some(b) = &a.response_body { br; code { (b.chars().take(200).collect::<String>()) } }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                            @if w {
                                td {
                                    @if m.payload.is_some() {
                                        form.inline method="post" action={ (base) "/messages/" (m.id) "/replay" } {
                                            (csrf(v))
                                            button.secondary type="submit" aria-label={ "Replay message " (m.id) } { "Replay" }
                                        }
                                    } @else { span.muted { "purged" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(Some(v), "Webhook endpoint", HERE, body)
}

/// An endpoint `p`'s viewer may change: a partner administrator's own.
async fn changing(state: &AppState, p: &Posted, id: &str) -> Result<EndpointRow, Response> {
    writes(p)?;
    owned(state, &p.viewer, id).await
}

fn back(id: &str) -> Response {
    see_other(&format!("{HERE}/{id}"))
}

/// `POST /console/partner/webhooks/{id}`: URL, description, filter.
pub async fn update(State(state): State<AppState>, Path(id): Path<String>, p: Posted) -> Response {
    let e = match changing(&state, &p, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let patch = EndpointPatch {
        url: Some(p.field("url").to_owned()).filter(|u| *u != e.url),
        description: Some(p.field("description").to_owned()),
        event_types: Some(ticked(&p)),
        ..Default::default()
    };
    match manage::update(&state, e, patch, &p.who()).await {
        Ok(_) => back(&id),
        Err(err) => failed(err),
    }
}

/// `POST /console/partner/webhooks/{id}/enabled` (`enabled=1|0`).
pub async fn set_enabled(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Posted,
) -> Response {
    let e = match changing(&state, &p, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let patch = EndpointPatch {
        enabled: Some(p.field("enabled") == "1"),
        ..Default::default()
    };
    match manage::update(&state, e, patch, &p.who()).await {
        Ok(_) => back(&id),
        Err(err) => failed(err),
    }
}

/// `POST /console/partner/webhooks/{id}/rotate`: the new secret, shown once.
pub async fn rotate(State(state): State<AppState>, Path(id): Path<String>, p: Posted) -> Response {
    let e = match changing(&state, &p, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    match manage::rotate(&state, &e, &p.who()).await {
        Ok(r) => shown_once(&p.viewer, &e, "Secret rotated", r.scheme, &r.key),
        Err(err) => failed(err),
    }
}

/// `POST /console/partner/webhooks/{id}/test`.
pub async fn test(State(state): State<AppState>, Path(id): Path<String>, p: Posted) -> Response {
    let e = match changing(&state, &p, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    match manage::send_test(&state, &e, &p.who()).await {
        Ok(_) => back(&id),
        Err(err) => failed(err),
    }
}

/// `POST /console/partner/webhooks/{id}/replay` (`since`, a UTC date and time).
pub async fn replay(State(state): State<AppState>, Path(id): Path<String>, p: Posted) -> Response {
    let e = match changing(&state, &p, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let since = p.field("since");
    let parsed = NaiveDateTime::parse_from_str(since, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(since, "%Y-%m-%dT%H:%M:%S"))
        .map(|t| t.and_utc())
        .or_else(|_| DateTime::parse_from_rfc3339(since).map(|t| t.with_timezone(&Utc)));
    let Ok(since) = parsed else {
        return error(
            StatusCode::BAD_REQUEST,
            "That is not a time",
            &format!("{since:?} is not a date and time such as 2026-11-02T09:00."),
        );
    };
    match manage::replay_failed(&state, &e, since, &p.who()).await {
        Ok(_) => back(&id),
        Err(err) => failed(err),
    }
}

/// `POST /console/partner/webhooks/{id}/messages/{message}/replay`.
pub async fn replay_message(
    State(state): State<AppState>,
    Path((id, message)): Path<(String, String)>,
    p: Posted,
) -> Response {
    let e = match changing(&state, &p, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let m = match store::get_message(&state.db, &message).await {
        Ok(Some(m)) if m.partner_id == e.partner_id => m,
        Ok(_) => {
            return error(
                StatusCode::NOT_FOUND,
                "No such message",
                "There is no such message among yours.",
            );
        }
        Err(err) => return failed(ApiError::Internal(err.into())),
    };
    if m.payload.is_none() {
        return error(
            StatusCode::GONE,
            "This message cannot be replayed",
            "Its payload was removed after the retention period.",
        );
    }
    let who = p.who();
    match manage::replay_message(
        &state,
        &m.id,
        m.partner_id.as_deref(),
        std::slice::from_ref(&e.id),
        &who,
    )
    .await
    {
        Ok(_) => back(&id),
        Err(err) => failed(err),
    }
}

/// `POST /console/partner/webhooks/{id}/delete`.
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>, p: Posted) -> Response {
    let e = match changing(&state, &p, &id).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    match manage::delete(&state, &e, &p.who()).await {
        Ok(()) => see_other(HERE),
        Err(err) => failed(err),
    }
}
