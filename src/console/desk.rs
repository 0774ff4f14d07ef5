//! The admin's desk: partners at a glance, API keys (created, shown once; revoked), dead
//! jobs (retried), pending LTI dynamic registrations (approved or rejected), SSO connections
//! (listed, added at runtime, deleted). Each change goes through the function the API or
//! CLI uses, with the admin's `Who`, so its audit entry is in its own transaction.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use maud::html;

use super::auth::{self, Posted, Signed};
use super::layout::{csrf, error, page, see_other, settled};
use crate::http::{ApiError, Path};
use crate::state::AppState;

fn admin_only(v: &super::session::Viewer) -> Result<(), Response> {
    auth::require(v, v.role.administers(), "the admin pages")
}

fn failed(e: impl std::fmt::Display) -> Response {
    super::layout::failure(e)
}

fn api_failed(e: ApiError) -> Response {
    super::layout::api_error(e)
}

/// What needs looking at, in words.
fn problems_of(f: &super::store::PartnerFacts) -> Vec<String> {
    let mut out = Vec::new();
    if f.failing_endpoints > 0 {
        out.push(format!(
            "{} failing webhook endpoint(s)",
            f.failing_endpoints
        ));
    }
    if f.disabled_endpoints > 0 {
        out.push(format!(
            "{} disabled webhook endpoint(s)",
            f.disabled_endpoints
        ));
    }
    if f.pending_registrations > 0 {
        out.push(format!(
            "{} LTI registration(s) waiting",
            f.pending_registrations
        ));
    }
    if f.failed_scores > 0 {
        out.push(format!("{} grade(s) the LMS refused", f.failed_scores));
    }
    out
}

/// `GET /console/admin/partners`: every partner, its kind, last launch and event, and what
/// needs looking at.
pub async fn partners(State(state): State<AppState>, s: Signed) -> Response {
    let v = &s.viewer;
    if let Err(r) = admin_only(v) {
        return r;
    }
    let mut rows = Vec::with_capacity(state.config.partners.len());
    for p in &state.config.partners {
        match super::store::partner_facts(&state.db, &p.id).await {
            Ok(f) => rows.push((p, f)),
            Err(e) => return failed(format!("{e:#}")),
        }
    }
    let body = html! {
        h1 { "Partners" }
        table {
            caption.muted { "From config; facts from the store" }
            thead { tr {
                th scope="col" { "Partner" } th scope="col" { "Kind" } th scope="col" { "Last launch" }
                th scope="col" { "Last event" } th scope="col" { "Open problems" }
            } }
            tbody {
                @for (p, f) in &rows {
                    tr {
                        th scope="row" { (p.name) br; span.muted.mono { (p.id) } @if p.sandbox { " " span class="status status-none" { "sandbox" } } }
                        td { (format!("{:?}", p.kind).to_lowercase()) }
                        td { @if let Some(t) = f.last_launch_us { (super::layout::when(t)) } @else { span.muted { "never" } } }
                        td { @if let Some(t) = f.last_event_us { (super::layout::when(t)) } @else { span.muted { "never" } } }
                        td {
                            @let problems = problems_of(f);
                            @if problems.is_empty() { span.muted { "none" } } @else { ul { @for pr in &problems { li { (pr) } } } }
                        }
                    }
                }
            }
        }
    };
    page(Some(v), "Partners", "/console/admin/partners", body)
}

/// `GET /console/admin/keys`.
pub async fn keys(State(state): State<AppState>, s: Signed) -> Response {
    let v = &s.viewer;
    if let Err(r) = admin_only(v) {
        return r;
    }
    let keys = match crate::apikeys::list_api_keys(&state.db).await {
        Ok(k) => k,
        Err(e) => return failed(format!("{e:#}")),
    };
    let body = html! {
        h1 { "API keys" }
        p { "Only a key's SHA-256 is stored: a new key is shown once. A revoked key is refused by every instance within " (state.config.http.api_key_cache_ms) " ms." }
        h2 { "Create a key" }
        form.stack method="post" action="/console/admin/keys" {
            (csrf(v))
            label for="k-role" { "Role" }
            select #k-role name="role" {
                option value="partner" { "partner: one partner's own data" }
                option value="app" { "app: the company's product back end" }
                option value="finance" { "finance: statements" }
                option value="admin" { "admin: everything" }
            }
            label for="k-partner" { "Partner (partner keys only)" }
            select #k-partner name="partner" {
                option value="" { "(none)" }
                @for p in state.config.partners.iter() { option value=(p.id) { (p.name) " (" (p.id) ")" } }
            }
            label for="k-name" { "Name (what it is for)" }
            input #k-name type="text" name="name" maxlength="100";
            button type="submit" { "Create key" }
        }
        h2 { "Keys" }
        table {
            thead { tr {
                th scope="col" { "Prefix" } th scope="col" { "Role" } th scope="col" { "Partner" } th scope="col" { "Name" }
                th scope="col" { "Created" } th scope="col" { "State" } th scope="col" { span.muted { "Action" } }
            } }
            tbody {
                @for k in &keys {
                    tr {
                        td.mono { (k.prefix) } td { (k.role.as_str()) } td.mono { (k.partner_id.as_deref().unwrap_or("")) }
                        td { (k.name.as_deref().unwrap_or("")) } td { (super::layout::when(k.created_at_us)) }
                        td { @if let Some(r) = k.revoked_at_us { "revoked " (super::layout::when(r)) } @else { "live" } }
                        td {
                            @if k.revoked_at_us.is_none() {
                                form.inline method="post" action={ "/console/admin/keys/" (k.id) "/revoke" } data-confirm="Revoke this key? Whatever uses it stops working." {
                                    (csrf(v))
                                    button.danger type="submit" aria-label={ "Revoke key " (k.prefix) } { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(Some(v), "API keys", "/console/admin/keys", body)
}

/// `POST /console/admin/keys`: the new key, shown once.
pub async fn create_key(State(state): State<AppState>, p: Posted) -> Response {
    let v = &p.viewer;
    if let Err(r) = admin_only(v) {
        return r;
    }
    let Some(role) = crate::apikeys::Role::parse(p.field("role")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Unknown role",
            "A key is admin, finance, partner or app.",
        );
    };
    let partner = Some(p.field("partner")).filter(|s| !s.is_empty());
    if let Some(id) = partner
        && state.config.partner(id).is_none()
    {
        return error(
            StatusCode::BAD_REQUEST,
            "Unknown partner",
            &format!("No partner {id:?} is configured."),
        );
    }
    let name = Some(p.field("name")).filter(|s| !s.is_empty());
    let who = p.who();
    match crate::apikeys::create_api_key_by(&state.db, role, partner, name, Some(&who)).await {
        Ok((k, secret)) => {
            let body = html! {
                h1 { "Key created" }
                p { strong { "Copy the key now: it is shown only once." } " Role " (k.role.as_str())
                    @if let Some(pid) = &k.partner_id { ", partner " (pid) } "." }
                p { label for="key" { "API key" } br; input #key type="text" readonly value=(secret) size="70"; }
                p { a href="/console/admin/keys" { "Back to API keys" } }
            };
            page(Some(v), "Key created", "/console/admin/keys", body)
        }
        // The store's refusal says which combination is wrong (a partner key needs a partner).
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            "The key was not created",
            &format!("{e:#}"),
        ),
    }
}

/// `POST /console/admin/keys/{id}/revoke`.
pub async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Posted,
) -> Response {
    if let Err(r) = admin_only(&p.viewer) {
        return r;
    }
    let who = p.who();
    settled(
        crate::apikeys::revoke_api_key_by(&state.db, &id, Some(&who)).await,
        "/console/admin/keys",
        "Not revoked",
        "That key is already revoked, or unknown.",
    )
}

/// `GET /console/admin/jobs`: dead jobs (out of attempts), newest first.
pub async fn jobs(State(state): State<AppState>, s: Signed) -> Response {
    let v = &s.viewer;
    if let Err(r) = admin_only(v) {
        return r;
    }
    let dead = match crate::jobs::list_jobs(&state.db, Some("dead"), None, None, 200).await {
        Ok(j) => j,
        Err(e) => return failed(e),
    };
    let body = html! {
        h1 { "Dead jobs" }
        p { "Jobs that used up their attempts. Retrying gives one a fresh set of attempts." }
        @if dead.is_empty() { p { "None." } } @else {
            table {
                thead { tr {
                    th scope="col" { "Job" } th scope="col" { "Kind" } th scope="col" { "Partner" } th scope="col" { "Attempts" }
                    th scope="col" { "Last error" } th scope="col" { "Died" } th scope="col" { span.muted { "Action" } }
                } }
                tbody {
                    @for j in &dead {
                        tr {
                            td.mono { (j.id) } td.mono { (j.kind) } td.mono { (j.partner_id.as_deref().unwrap_or("")) }
                            td { (j.attempts) " / " (j.max_attempts) }
                            td { (j.last_error.as_deref().unwrap_or("").chars().take(300).collect::<String>()) }
                            td { @if let Some(f) = j.finished_at_us { (super::layout::when(f)) } }
                            td {
                                form.inline method="post" action={ "/console/admin/jobs/" (j.id) "/retry" } {
                                    (csrf(v))
                                    button type="submit" aria-label={ "Retry job " (j.id) } { "Retry" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(Some(v), "Dead jobs", "/console/admin/jobs", body)
}

/// `POST /console/admin/jobs/{id}/retry`.
pub async fn retry_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Posted,
) -> Response {
    if let Err(r) = admin_only(&p.viewer) {
        return r;
    }
    let now = crate::time::to_micros(Utc::now());
    settled(
        crate::jobs::retry_dead_job(&state.db, &id, now, &p.who()).await,
        "/console/admin/jobs",
        "Not retried",
        "That job is not dead (it was retried already), or unknown.",
    )
}

/// `GET /console/admin/registrations`: LTI Dynamic Registrations waiting for a decision.
pub async fn registrations(State(state): State<AppState>, s: Signed) -> Response {
    let v = &s.viewer;
    if let Err(r) = admin_only(v) {
        return r;
    }
    let pending = match crate::lti::dynreg::list(&state, Some("pending")).await {
        Ok(p) => p,
        Err(e) => return failed(format!("{e:#}")),
    };
    let body = html! {
        h1 { "LTI registrations" }
        p { "An LMS administrator registered the tool through a registration link. Until approved, its launches are refused." }
        @if pending.is_empty() { p { "None waiting." } } @else {
            table {
                thead { tr {
                    th scope="col" { "Partner" } th scope="col" { "LMS" } th scope="col" { "Issuer" } th scope="col" { "Client id" }
                    th scope="col" { "Deployment" } th scope="col" { "Registered" } th scope="col" { span.muted { "Decision" } }
                } }
                tbody {
                    @for r in &pending {
                        tr {
                            td.mono { (r.partner) } td { (r.lms) } td.mono { (r.issuer) } td.mono { (r.client_id) }
                            td.mono { (r.deployment_id) } td { (r.created_at) }
                            td {
                                form.inline method="post" action={ "/console/admin/registrations/" (r.id) "/approve" } {
                                    (csrf(v)) button type="submit" aria-label={ "Approve " (r.issuer) } { "Approve" }
                                }
                                " "
                                form.inline method="post" action={ "/console/admin/registrations/" (r.id) "/reject" } data-confirm="Reject this registration?" {
                                    (csrf(v)) button.danger type="submit" aria-label={ "Reject " (r.issuer) } { "Reject" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(
        Some(v),
        "LTI registrations",
        "/console/admin/registrations",
        body,
    )
}

/// `POST /console/admin/registrations/{id}/{approve|reject}`.
pub async fn decide(
    State(state): State<AppState>,
    Path((id, decision)): Path<(String, String)>,
    p: Posted,
) -> Response {
    if let Err(r) = admin_only(&p.viewer) {
        return r;
    }
    let approve = match decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "No such decision",
                "Approve or reject.",
            );
        }
    };
    settled(
        crate::lti::dynreg::decide(&state, &id, approve, &p.who()).await,
        "/console/admin/registrations",
        "Not decided",
        "That registration was decided already, or does not exist.",
    )
}

/// `GET /console/admin/sso`: every connection; runtime ones can be deleted, and added here.
pub async fn sso(State(state): State<AppState>, s: Signed) -> Response {
    let v = &s.viewer;
    if let Err(r) = admin_only(v) {
        return r;
    }
    let all = match crate::sso::lookup::all_connections(&state).await {
        Ok(a) => a,
        Err(e) => return failed(format!("{e:#}")),
    };
    let in_config = |id: &str| {
        state
            .config
            .partners
            .iter()
            .any(|p| p.sso_connections.iter().any(|c| c.id == id))
    };
    let body = html! {
        h1 { "SSO connections" }
        table {
            thead { tr {
                th scope="col" { "Connection" } th scope="col" { "Partner" } th scope="col" { "Protocol" }
                th scope="col" { "Domains" } th scope="col" { "Console" } th scope="col" { "From" } th scope="col" { span.muted { "Action" } }
            } }
            tbody {
                @for f in &all {
                    tr {
                        th scope="row" { (f.organisation()) br; span.muted.mono { (f.conn.id) } }
                        td.mono { (f.partner_id) } td { (f.conn.protocol.as_str()) } td { (f.conn.domains.join(", ")) }
                        td { @if let Some(c) = &f.conn.console { (format!("{:?}", c.audience).to_lowercase()) } @else { span.muted { "no" } } }
                        td { @if in_config(&f.conn.id) { "config" } @else { "added at runtime" } }
                        td {
                            @if !in_config(&f.conn.id) {
                                form.inline method="post" action={ "/console/admin/sso/" (f.conn.id) "/delete" } data-confirm="Delete this connection? Its people can no longer sign in." {
                                    (csrf(v)) button.danger type="submit" aria-label={ "Delete connection " (f.conn.id) } { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Add a connection" }
        p { "A connection as it would be in config (JSON), for the partner chosen. It is checked field by field and against the IdP (discovery or metadata) before it is saved. Secrets are values here, never env or file references. Staff console access is for config files only." }
        form.stack method="post" action="/console/admin/sso" {
            (csrf(v))
            label for="c-partner" { "Partner" }
            select #c-partner name="partner" required {
                @for p in state.config.partners.iter() { option value=(p.id) { (p.name) " (" (p.id) ")" } }
            }
            label for="c-json" { "Connection (JSON)" }
            textarea #c-json name="definition" rows="10" required placeholder=r#"{"id": "state-university", "protocol": "saml", "idp_metadata_url": "https://idp.state.edu/idp/shibboleth", "domains": ["state.edu"], "app_url": "https://app.example/sso"}"# {}
            button type="submit" { "Add connection" }
        }
    };
    page(Some(v), "SSO connections", "/console/admin/sso", body)
}

/// `POST /console/admin/sso`.
pub async fn add_sso(State(state): State<AppState>, p: Posted) -> Response {
    if let Err(r) = admin_only(&p.viewer) {
        return r;
    }
    let mut def: serde_json::Value = match serde_json::from_str(p.field("definition")) {
        Ok(serde_json::Value::Object(o)) => serde_json::Value::Object(o),
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Not a connection",
                "The connection must be a JSON object.",
            );
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Not JSON",
                &format!("The connection is not JSON: {e}"),
            );
        }
    };
    if let Some(o) = def.as_object_mut() {
        o.insert(
            "partner".into(),
            serde_json::Value::String(p.field("partner").to_owned()),
        );
    }
    match crate::sso::admin::create(&state, def, &p.who()).await {
        Ok(_) => see_other("/console/admin/sso"),
        Err(e) => api_failed(e),
    }
}

/// `POST /console/admin/sso/{id}/delete`.
pub async fn delete_sso(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Posted,
) -> Response {
    if let Err(r) = admin_only(&p.viewer) {
        return r;
    }
    match crate::sso::admin::delete(&state, &id, &p.who()).await {
        Ok(()) => see_other("/console/admin/sso"),
        Err(e) => api_failed(e),
    }
}
