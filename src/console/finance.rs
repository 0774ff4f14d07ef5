//! Finance's pages: the month-end page (every partner's statement for a period, run the
//! period) and a statement's page (lines, adjustments, finalize, void, downloads, verify).
//! Every change goes through the statements service, which writes the audit entry in the
//! change's own transaction.

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, Utc};
use maud::{Markup, html};
use rust_decimal::Decimal;

use super::auth::{self, Posted, Signed};
use super::layout::{self, csrf, error, page, see_other};
use super::session::Viewer;
use crate::http::Path;
use crate::state::AppState;
use crate::statements::model::{Statement, Status};
use crate::statements::service::StatementError;
use crate::statements::store::{self, ListFilter, Span};

/// `1234567.5` as `1,234,567.50 USD`: grouped thousands, the amount's own scale.
pub fn money(amount: Decimal, currency: &str) -> String {
    format!("{} {currency}", group(&amount.to_string()))
}

fn group(number: &str) -> String {
    let (sign, digits) = match number.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", number),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

/// The month before today's, the period month-end is usually about.
fn last_month() -> String {
    let today = Utc::now().date_naive();
    let (y, m) = if today.month() == 1 {
        (today.year() - 1, 12)
    } else {
        (today.year(), today.month() - 1)
    };
    format!("{y:04}-{m:02}")
}

fn status_badge(status: Option<Status>) -> Markup {
    let (class, text) = match status {
        None => ("status status-none", "none"),
        Some(Status::Draft) => ("status status-draft", "draft"),
        Some(Status::Finalized) => ("status status-finalized", "finalized"),
        Some(Status::Void) => ("status status-void", "void"),
    };
    html! { span class=(class) { (text) } }
}

fn payable(st: &Statement) -> Decimal {
    st.document
        .settlement
        .as_ref()
        .map_or(st.document.total, |s| s.amount_payable)
}

/// One row of the month-end page.
struct Row {
    partner: String,
    partner_name: String,
    agreement: String,
    statement: Option<Statement>,
    previous: Option<Statement>,
    /// Events dated in the period that arrived after the statement's cut-off.
    after_cut_off: i64,
}

/// The statement that stands for (agreement, period) among `all`: the draft or finalized
/// one, else the newest void.
fn standing<'a>(all: &'a [Statement], agreement: &str, period: &str) -> Option<&'a Statement> {
    let mine = all
        .iter()
        .filter(|s| s.document.agreement_id == agreement && s.document.period == period);
    let mut void = None;
    for s in mine {
        match s.status {
            Status::Draft | Status::Finalized => return Some(s),
            Status::Void => {
                if void.is_none_or(|v: &Statement| v.computed_at < s.computed_at) {
                    void = Some(s);
                }
            }
        }
    }
    void
}

/// An event is late, for `count_after_cut_off` and the partial index `usage_events_late`
/// (migration 0024), when the ledger received it more than an hour after its time. The
/// number is written into the SQL below as it is in the index's condition: the planners use
/// a partial index only for a query that repeats its condition.
const LATE_US: i64 = 3_600_000_000;

/// The events dated in `span` that the ledger received after its cut-off (`as_of`): the
/// count `store::count_arrived_after` gives, without reading everything the partner sent
/// since the cut-off (a month of events for last month's statements, more the later one
/// looks). Such an event either arrived more than an hour after its time, and is in the
/// small partial index `usage_events_late`, or is dated within the hour before the cut-off,
/// a short range of the (partner, time) index. `span.exclude_self_reported` is not read
/// (the month-end page counts every event).
pub async fn count_after_cut_off(db: &crate::db::Db, span: Span<'_>) -> anyhow::Result<i64> {
    use crate::time::to_micros;
    let (start, end, as_of) = (
        to_micros(span.start),
        to_micros(span.end),
        to_micros(span.as_of),
    );
    // `+received_at_us`: keeps both off the (partner, received) index, whose range would be
    // everything received since the cut-off.
    const LATE: &str = "SELECT COUNT(*) FROM usage_events WHERE partner_id = $1 \
        AND time_us >= $2 AND time_us < $3 AND received_at_us > time_us + 3600000000 \
        AND +received_at_us > $4";
    const RECENT: &str = "SELECT COUNT(*) FROM usage_events WHERE partner_id = $1 \
        AND time_us >= $2 AND time_us < $3 AND NOT (received_at_us > time_us + 3600000000) \
        AND +received_at_us > $4";
    let mut n: i64 = crate::with_db!(db, c => sqlx::query_scalar(LATE)
        .bind(span.partner_id)
        .bind(start)
        .bind(end)
        .bind(as_of)
        .fetch_one(c)
        .await)?;
    // Not late and received after the cut-off: dated after `as_of - LATE_US`.
    let recent_from = start.max(as_of - LATE_US + 1);
    if recent_from < end {
        let recent: i64 = crate::with_db!(db, c => sqlx::query_scalar(RECENT)
            .bind(span.partner_id)
            .bind(recent_from)
            .bind(end)
            .bind(as_of)
            .fetch_one(c)
            .await)?;
        n += recent;
    }
    Ok(n)
}

async fn month_rows(state: &AppState, period: &str) -> anyhow::Result<Vec<Row>> {
    let svc = state.statements();
    let covering = svc.covering(period);
    let all = |period: String| ListFilter {
        partner: None,
        period: Some(period),
        statuses: Vec::new(),
        agreement: None,
    };
    let this = store::list_statements(&state.db, &all(period.to_owned()), None, 10_000).await?;
    let mut previous_by_label: HashMap<String, Vec<Statement>> = HashMap::new();
    let mut rows = Vec::with_capacity(covering.len());
    for (partner, agreement) in covering {
        let statement = standing(&this, &agreement, period).cloned();
        let previous = match svc.previous_label(&agreement, period) {
            Some(label) => {
                if !previous_by_label.contains_key(&label) {
                    let list = store::list_statements(&state.db, &all(label.clone()), None, 10_000)
                        .await?;
                    previous_by_label.insert(label.clone(), list);
                }
                previous_by_label
                    .get(&label)
                    .and_then(|l| standing(l, &agreement, &label))
                    .filter(|s| s.status == Status::Finalized)
                    .cloned()
            }
            None => None,
        };
        let after_cut_off = match &statement {
            Some(st) if st.status != Status::Void => {
                count_after_cut_off(
                    &state.db,
                    Span {
                        partner_id: &partner,
                        start: st.document.period_start,
                        end: st.document.period_end,
                        as_of: st.document.ledger_as_of,
                        exclude_self_reported: false,
                    },
                )
                .await?
            }
            _ => 0,
        };
        let partner_name = state
            .config
            .partner(&partner)
            .map_or_else(|| partner.clone(), |p| p.name.clone());
        rows.push(Row {
            partner,
            partner_name,
            agreement,
            statement,
            previous,
            after_cut_off,
        });
    }
    Ok(rows)
}

fn change(now: &Statement, before: Option<&Statement>) -> Markup {
    match before {
        Some(b) if b.document.currency == now.document.currency => {
            let d = payable(now) - payable(b);
            let sign = if d.is_sign_positive() && !d.is_zero() {
                "+"
            } else {
                ""
            };
            html! { (sign) (money(d, &now.document.currency)) }
        }
        Some(_) => html! { span.muted { "other currency" } },
        None => html! { span.muted { "no earlier statement" } },
    }
}

fn valid_period(p: &str) -> bool {
    let b = p.as_bytes();
    let month = b.len() == 7
        && b[4] == b'-'
        && p[..4].chars().all(|c| c.is_ascii_digit())
        && p[5..].parse::<u32>().is_ok_and(|m| (1..=12).contains(&m));
    let quarter = b.len() == 7
        && &p[4..6] == "-Q"
        && p[..4].chars().all(|c| c.is_ascii_digit())
        && matches!(b[6], b'1'..=b'4');
    month || quarter
}

/// `GET /console/finance?period=2026-10`: the month-end page.
pub async fn month_end(
    State(state): State<AppState>,
    s: Signed,
    RawQuery(raw): RawQuery,
) -> Response {
    let v = &s.viewer;
    if let Err(r) = auth::require(v, v.role.reads_finance(), "finance pages") {
        return r;
    }
    let q = super::auth::query(raw);
    let period = q.get("period").cloned().unwrap_or_else(last_month);
    if !valid_period(&period) {
        return error(
            StatusCode::BAD_REQUEST,
            "That is not a period",
            "A period is a month such as 2026-10, or a quarter such as 2026-Q4.",
        );
    }
    let rows = match month_rows(&state, &period).await {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The month-end page could not be read",
                &format!("{e:#}"),
            );
        }
    };
    let now_us = crate::time::to_micros(Utc::now());
    let last_run = match super::store::latest_run(&state.db, &period).await {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The month-end page could not be read",
                &format!("{e:#}"),
            );
        }
    };
    let refresh = last_run.as_ref().is_some_and(|r| running(r, now_us));
    let settle = state.statements().settle_window().num_seconds();
    let body = html! {
        h1 { "Month-end " (period) }
        @if let Some(r) = &last_run { (run_status(r, now_us)) }
        div.toolbar {
            form method="get" action="/console/finance" {
                div {
                    label for="period" { "Period" }
                    br;
                    input #period type="text" name="period" value=(period) pattern="[0-9]{4}-(0[1-9]|1[0-2]|Q[1-4])" aria-describedby="period-help";
                }
                button.secondary type="submit" { "Show" }
            }
            @if v.role.writes_finance() {
                form method="post" action="/console/finance/run" data-confirm="Compute (or recompute) the drafts of every partner for this period?" {
                    (csrf(v))
                    input type="hidden" name="period" value=(period);
                    button type="submit" { "Run " (period) }
                }
            }
        }
        p #period-help .muted { "A month (2026-10) or, for quarterly agreements, a quarter (2026-Q4). Events received in the last "
            (settle) " seconds are still settling and are not counted yet." }
        @if rows.is_empty() {
            p { "No agreement covers " (period) "." }
        } @else {
            table {
                caption { "Statements for " (period) ", one row per partner agreement" }
                thead { tr {
                    th scope="col" { "Partner" }
                    th scope="col" { "Agreement" }
                    th scope="col" { "Status" }
                    th scope="col" { "Number" }
                    th.num scope="col" { "Amount payable" }
                    th.num scope="col" { "Change from previous period" }
                    th.num scope="col" { "Events after cut-off" }
                } }
                tbody {
                    @for r in &rows {
                        tr {
                            th scope="row" { (r.partner_name) br; span.muted.mono { (r.partner) } }
                            td.mono { (r.agreement) }
                            td { (status_badge(r.statement.as_ref().map(|s| s.status))) }
                            td {
                                @if let Some(st) = &r.statement {
                                    a href={ "/console/statements/" (st.id) } {
                                        (st.number_display.clone().unwrap_or_else(|| "open draft".into()))
                                    }
                                } @else { span.muted { "not run" } }
                            }
                            td.num {
                                @if let Some(st) = &r.statement { (money(payable(st), &st.document.currency)) }
                            }
                            td.num {
                                @if let Some(st) = &r.statement { (change(st, r.previous.as_ref())) }
                            }
                            td.num {
                                @match &r.statement {
                                    Some(st) if st.status == Status::Finalized && r.after_cut_off > 0 => {
                                        strong { (r.after_cut_off) } " late: counted next period"
                                    }
                                    Some(st) if st.status == Status::Draft && r.after_cut_off > 0 => {
                                        (r.after_cut_off) " not yet counted: run again"
                                    }
                                    Some(_) => { "0" }
                                    None => { "" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let title = format!("Month-end {period}");
    if refresh {
        layout::page_refreshing(Some(v), &title, "/console/finance", body, 2)
    } else {
        page(Some(v), &title, "/console/finance", body)
    }
}

/// A run that has not moved for this long stopped (its instance went away): it may be
/// started again (every draft is computed or recomputed, so nothing is counted twice).
const RUN_STALE_US: i64 = 120 * 1_000_000;

/// How long the form waits for a run to finish before showing its progress instead.
const RUN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn running(r: &super::store::RunRow, now_us: i64) -> bool {
    r.finished_at_us.is_none() && now_us - r.updated_at_us < RUN_STALE_US
}

/// `POST /console/finance/run`: compute every partner's draft for the period, in a task of
/// its own whose progress is kept in the store (any instance shows it); the answer waits
/// a moment, then sends the browser to the month-end page, which shows the progress until
/// the run ends, then what failed.
pub async fn run(State(state): State<AppState>, p: Posted) -> Response {
    let v = &p.viewer;
    if let Err(r) = auth::require(v, v.role.writes_finance(), "running a period") {
        return r;
    }
    let period = p.field("period").to_owned();
    if !valid_period(&period) {
        return error(
            StatusCode::BAD_REQUEST,
            "That is not a period",
            "A period is a month such as 2026-10, or a quarter such as 2026-Q4.",
        );
    }
    let now = Utc::now();
    let now_us = crate::time::to_micros(now);
    let back = format!("/console/finance?period={period}");
    match super::store::latest_run(&state.db, &period).await {
        Ok(Some(r)) if running(&r, now_us) => return see_other(&back),
        Ok(_) => {}
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The run did not start",
                &format!("{e:#}"),
            );
        }
    }
    let row = super::store::RunRow {
        id: crate::ids::new("run"),
        period: period.clone(),
        started_by: v.name.clone(),
        started_at_us: now_us,
        done: 0,
        total: state.statements().covering(&period).len() as i64,
        updated_at_us: now_us,
        finished_at_us: None,
        failures: None,
    };
    if let Err(e) = super::store::insert_run(&state.db, &row).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The run did not start",
            &format!("{e:#}"),
        );
    }
    let who = p.who();
    let task = tokio::spawn(run_in_background(state.clone(), row, who));
    // Most runs take a moment: wait for it, so the page shows the outcome at once.
    let _ = tokio::time::timeout(RUN_WAIT, task).await;
    see_other(&back)
}

/// The run itself, its progress written every half second while it goes.
async fn run_in_background(state: AppState, row: super::store::RunRow, who: crate::audit::Who) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    let svc = state.statements();
    let work = svc.run(&row.period, Utc::now(), &who, move |d, _| {
        counter.store(d, Ordering::Relaxed);
    });
    tokio::pin!(work);
    let items = loop {
        tokio::select! {
            items = &mut work => break items,
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                let n = done.load(Ordering::Relaxed) as i64;
                let at = crate::time::to_micros(Utc::now());
                if let Err(e) = super::store::run_progress(&state.db, &row.id, n, at).await {
                    tracing::warn!(run = %row.id, error = %format!("{e:#}"), "recording a run's progress failed");
                }
            }
        }
    };
    let failures: Vec<serde_json::Value> = items
        .iter()
        .filter_map(|i| {
            i.outcome.as_ref().err().map(|e| {
                serde_json::json!({"partner": i.partner, "agreement": i.agreement, "error": e.to_string()})
            })
        })
        .collect();
    let failures = serde_json::Value::Array(failures).to_string();
    let at = crate::time::to_micros(Utc::now());
    if let Err(e) =
        super::store::finish_run(&state.db, &row.id, items.len() as i64, &failures, at).await
    {
        tracing::error!(run = %row.id, error = %format!("{e:#}"), "recording a run's end failed");
    }
}

/// What the month-end page says of the period's newest run.
fn run_status(r: &super::store::RunRow, now_us: i64) -> Markup {
    let failures: Vec<serde_json::Value> = r
        .failures
        .as_deref()
        .and_then(|f| serde_json::from_str(f).ok())
        .unwrap_or_default();
    let at = crate::time::from_micros(r.finished_at_us.unwrap_or(r.updated_at_us))
        .format("%Y-%m-%d %H:%M UTC")
        .to_string();
    html! {
        @if running(r, now_us) {
            div.notice role="status" {
                p { strong { "Running " (r.period) ": " (r.done) " of " (r.total) " statements computed." }
                    " Started by " (r.started_by) ". This page refreshes until it ends." }
                progress max=(r.total.max(1)) value=(r.done) aria-label="Run progress" { (r.done) " of " (r.total) }
            }
        } @else if r.finished_at_us.is_none() {
            p.warning role="status" { "The run started by " (r.started_by) " stopped at " (r.done) " of " (r.total)
                " (its instance went away). Run the period again: drafts already computed are recomputed, nothing counts twice." }
        } @else if failures.is_empty() {
            p.notice role="status" { "Last run " (at) " by " (r.started_by) ": " (r.done) " statements computed." }
        } @else {
            div.problem role="alert" {
                p { strong { "Last run " (at) " by " (r.started_by) ": " (failures.len()) " of " (r.done) " could not be computed." } }
                ul {
                    @for f in &failures {
                        li { strong { (f["partner"].as_str().unwrap_or("")) " / " (f["agreement"].as_str().unwrap_or("")) } ": " (f["error"].as_str().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// A statement `v` may read: staff any; a partner user its own partner's issued ones.
/// Anything else reads as not found, so ids reveal nothing.
async fn readable(state: &AppState, v: &Viewer, id: &str) -> Result<Statement, Response> {
    let missing = || {
        error(
            StatusCode::NOT_FOUND,
            "No such statement",
            "There is no statement with that id, or it is not yours to see.",
        )
    };
    let st = match state.statements().get(id).await {
        Ok(st) => st,
        Err(StatementError::NotFound(_)) => return Err(missing()),
        Err(e) => {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The statement could not be read",
                &e.to_string(),
            ));
        }
    };
    let ok = if v.role.is_partner() {
        v.may_see(&st.document.partner_id) && st.status != Status::Draft
    } else {
        v.role.reads_finance()
    };
    if ok { Ok(st) } else { Err(missing()) }
}

/// A refusal from the statements service, in words, with the status the API would give.
fn outcome_error(e: StatementError) -> Response {
    layout::api_error(crate::http::ApiError::from(e))
}

/// `GET /console/statements/{id}`.
pub async fn statement(
    State(state): State<AppState>,
    s: Signed,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let v = &s.viewer;
    let st = match readable(&state, v, &id).await {
        Ok(st) => st,
        Err(r) => return r,
    };
    let q = super::auth::query(raw);
    let notice = match q.get("done").map(String::as_str) {
        Some("adjusted") => Some("The adjustment was added."),
        Some("removed") => Some("The adjustment was removed."),
        Some("finalized") => Some("The statement is finalized and numbered."),
        Some("voided") => Some("The statement is void. Run the period again for its replacement."),
        _ => None,
    };
    let doc = &st.document;
    let cur = &doc.currency;
    let next_number = if st.status == Status::Draft && v.role.writes_finance() {
        store::peek_next_number(&state.db, &doc.partner_id)
            .await
            .ok()
            .map(|n| crate::statements::model::number_display(&doc.partner_id, n))
    } else {
        None
    };
    let title = st
        .number_display
        .clone()
        .unwrap_or_else(|| format!("Draft {}", st.id));
    let here = if v.role.is_partner() {
        "/console/partner"
    } else {
        "/console/finance"
    };
    let body = html! {
        p { a href={ (here) @if !v.role.is_partner() { "?period=" (doc.period) } } { "← Back" } }
        h1 { (title) " " (status_badge(Some(st.status))) }
        (layout::notice(notice))
        dl.facts {
            dt { "Partner" } dd { (doc.partner_name) " (" span.mono { (doc.partner_id) } ")" }
            dt { "Agreement" } dd.mono { (doc.agreement_id) " v" (doc.agreement_version) }
            dt { "Period" } dd { (doc.period) " (" (doc.time_zone) ")" }
            dt { "Ledger counted up to" } dd { (doc.ledger_as_of.to_rfc3339()) }
            dt { "Total owed" } dd { (money(doc.total, cur)) }
            @if let Some(set) = &doc.settlement {
                dt { "Amount payable" } dd { strong { (money(set.amount_payable, cur)) } }
                @if let Some(d) = set.due_date { dt { "Due" } dd { (d) } }
            }
            @if let Some(by) = &st.finalized_by { dt { "Finalized by" } dd { (by) } }
            @if let Some(h) = &st.hash { dt { "SHA-256" } dd.mono { (h) } }
            @if let Some(r) = &st.void_reason { dt { "Void because" } dd { (r) } }
        }
        p {
            a href={ "/console/statements/" (st.id) "/download?format=pdf" } { "Download PDF" }
            " · "
            a href={ "/console/statements/" (st.id) "/download?format=csv" } { "Download CSV" }
            @if st.status != Status::Draft && v.role.reads_finance() {
                " · " a href={ "/console/statements/" (st.id) "/verify" } { "Verify" }
            }
        }
        h2 { "Lines" }
        table {
            caption.muted { "Amounts in " (cur) ", rounded per line (" (doc.rounding) ")" }
            thead { tr {
                th scope="col" { "Kind" }
                th scope="col" { "Description" }
                th.num scope="col" { "Quantity" }
                th.num scope="col" { "Amount" }
                @if st.status == Status::Draft && v.role.writes_finance() { th scope="col" { span.muted { "Action" } } }
            } }
            tbody {
                @for l in &doc.lines {
                    tr {
                        td { (l.kind.as_str()) }
                        td { (l.description) @if let Some(a) = &l.author { br; span.muted { "by " (a) } } }
                        td.num { @if let Some(q) = l.quantity { (group(&q.to_string())) } }
                        td.num { (money(l.amount, cur)) }
                        @if st.status == Status::Draft && v.role.writes_finance() {
                            td {
                                @if let (crate::statements::model::LineKind::Adjustment, Some(r)) = (l.kind, &l.reference) {
                                    form.inline method="post" action={ "/console/statements/" (st.id) "/adjustments/" (r) "/delete" } data-confirm="Remove this adjustment from the draft?" {
                                        (csrf(v))
                                        button.secondary type="submit" aria-label={ "Remove adjustment " (r) } { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            tfoot { tr {
                th scope="row" colspan="3" { "Total" }
                td.num { strong { (money(doc.total, cur)) } }
                @if st.status == Status::Draft && v.role.writes_finance() { td {} }
            } }
        }
        @if st.status == Status::Draft && v.role.writes_finance() {
            h2 { "Add an adjustment" }
            form.stack method="post" action={ "/console/statements/" (st.id) "/adjustments" } {
                (csrf(v))
                label for="amount" { "Amount (" (cur) "; negative to take off)" }
                input #amount type="text" name="amount" inputmode="decimal" required placeholder="-125.00";
                label for="reason" { "Reason (shown on the statement)" }
                textarea #reason name="reason" required maxlength="500" rows="2" {}
                button type="submit" { "Add adjustment" }
            }
            h2 { "Finalize" }
            form.stack method="post" action={ "/console/statements/" (st.id) "/finalize" } data-confirm="Finalize this statement? It cannot be changed afterwards." {
                (csrf(v))
                @if let Some(n) = &next_number {
                    input type="hidden" name="number" value=(n);
                    p { "Finalizing issues this statement as " strong { (n) } ". An issued statement never changes: a correction is an adjustment in a later period, or a void and a replacement." }
                }
                div {
                    input #confirm type="checkbox" name="confirm" value="yes" required;
                    " "
                    label for="confirm" { "I have checked the lines and the amount payable" }
                }
                button type="submit" { "Finalize" }
            }
        }
        @if st.status == Status::Finalized && v.role.writes_finance() {
            h2 { "Void" }
            form.stack method="post" action={ "/console/statements/" (st.id) "/void" } data-confirm="Void this statement? The partner is notified." {
                (csrf(v))
                label for="void-reason" { "Reason (required; the partner sees it)" }
                textarea #void-reason name="reason" required maxlength="500" rows="2" {}
                button.danger type="submit" { "Void statement" }
            }
        }
    };
    page(Some(v), &title, here, body)
}

fn back_to(id: &str, done: &str) -> Response {
    see_other(&format!("/console/statements/{id}?done={done}"))
}

fn writes(p: &Posted) -> Result<(), Response> {
    auth::require(
        &p.viewer,
        p.viewer.role.writes_finance(),
        "changing statements",
    )
}

/// `POST /console/statements/{id}/adjustments`.
pub async fn adjust(State(state): State<AppState>, Path(id): Path<String>, p: Posted) -> Response {
    if let Err(r) = writes(&p) {
        return r;
    }
    let Ok(amount) = p.field("amount").parse::<Decimal>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "The amount is not a number",
            &format!(
                "{:?} is not a decimal amount such as -125.00 (use a point for decimals, no thousands separators).",
                p.field("amount")
            ),
        );
    };
    let author = p.viewer.name.clone();
    match state
        .statements()
        .adjust(
            &id,
            amount,
            p.field("reason"),
            &author,
            Utc::now(),
            &p.who(),
        )
        .await
    {
        Ok(_) => back_to(&id, "adjusted"),
        Err(e) => outcome_error(e),
    }
}

/// `POST /console/statements/{id}/adjustments/{adjustment}/delete`.
pub async fn remove_adjustment(
    State(state): State<AppState>,
    Path((id, adj)): Path<(String, String)>,
    p: Posted,
) -> Response {
    if let Err(r) = writes(&p) {
        return r;
    }
    match state
        .statements()
        .remove_adjustment(&id, &adj, Utc::now(), &p.who())
        .await
    {
        Ok(_) => back_to(&id, "removed"),
        Err(e) => outcome_error(e),
    }
}

/// `POST /console/statements/{id}/finalize`: needs the box ticked, and the number shown
/// must still be the one it takes (someone else finalized meanwhile: look again).
pub async fn finalize(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: Posted,
) -> Response {
    if let Err(r) = writes(&p) {
        return r;
    }
    if p.field("confirm") != "yes" {
        return error(
            StatusCode::BAD_REQUEST,
            "Not finalized",
            "Tick the box to confirm you have checked the statement.",
        );
    }
    let svc = state.statements();
    let st = match svc.get(&id).await {
        Ok(st) => st,
        Err(e) => return outcome_error(e),
    };
    let expected = p.field("number");
    if !expected.is_empty() {
        let next = match store::peek_next_number(&state.db, &st.document.partner_id).await {
            Ok(n) => crate::statements::model::number_display(&st.document.partner_id, n),
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Not finalized",
                    &format!("{e:#}"),
                );
            }
        };
        if next != expected {
            return error(
                StatusCode::CONFLICT,
                "Not finalized: the number changed",
                &format!(
                    "You confirmed number {expected}, but another statement of this partner was finalized meanwhile and this one would be {next}. Look at the statement again."
                ),
            );
        }
    }
    match svc
        .finalize(&id, &p.viewer.name, Utc::now(), &p.who())
        .await
    {
        Ok(_) => back_to(&id, "finalized"),
        Err(e) => outcome_error(e),
    }
}

/// `POST /console/statements/{id}/void`.
pub async fn void(State(state): State<AppState>, Path(id): Path<String>, p: Posted) -> Response {
    if let Err(r) = writes(&p) {
        return r;
    }
    match state
        .statements()
        .void(&id, p.field("reason"), &p.viewer.name, Utc::now(), &p.who())
        .await
    {
        Ok(_) => back_to(&id, "voided"),
        Err(e) => outcome_error(e),
    }
}

/// `GET /console/statements/{id}/download?format=pdf|csv`.
pub async fn download(
    State(state): State<AppState>,
    s: Signed,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let st = match readable(&state, &s.viewer, &id).await {
        Ok(st) => st,
        Err(r) => return r,
    };
    let q = super::auth::query(raw);
    let format = match q.get("format").map(String::as_str) {
        Some("pdf") | None => "pdf",
        Some("csv") => "csv",
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Unknown format",
                "A statement downloads as pdf or csv.",
            );
        }
    };
    let stem = crate::statements::routes::file_stem(&st);
    let (kind, bytes) = if format == "csv" {
        (
            "text/csv; charset=utf-8",
            crate::statements::export::csv(&st).into_bytes(),
        )
    } else {
        let state2 = state.clone();
        match tokio::task::spawn_blocking(move || {
            crate::statements::pdf::render(&st, &state2.letterhead(&st.document))
        })
        .await
        {
            Ok(pdf) => ("application/pdf", pdf),
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The PDF could not be drawn",
                    &e.to_string(),
                );
            }
        }
    };
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    layout::secure_headers(h);
    if let Ok(v) = axum::http::HeaderValue::from_str(kind) {
        h.insert(axum::http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) =
        axum::http::HeaderValue::from_str(&format!("attachment; filename=\"{stem}.{format}\""))
    {
        h.insert(axum::http::header::CONTENT_DISPOSITION, v);
    }
    r
}

/// `GET /console/statements/{id}/verify`: recompute from the ledger and check the hash.
pub async fn verify(State(state): State<AppState>, s: Signed, Path(id): Path<String>) -> Response {
    let v = &s.viewer;
    if let Err(r) = auth::require(v, v.role.reads_finance(), "verifying statements") {
        return r;
    }
    let st = match readable(&state, v, &id).await {
        Ok(st) => st,
        Err(r) => return r,
    };
    let result = match state.statements().verify(&id).await {
        Ok(r) => r,
        Err(e) => return outcome_error(e),
    };
    let title = format!(
        "Verify {}",
        st.number_display.clone().unwrap_or_else(|| st.id.clone())
    );
    let body = html! {
        p { a href={ "/console/statements/" (st.id) } { "← Back to the statement" } }
        h1 { (title) }
        @if result.ok() {
            p.notice role="status" { "Verified: the stored content matches its hash, and recomputing it from the ledger gives the same statement." }
        } @else {
            div.problem role="alert" {
                p { strong { "The statement does not verify." } }
                ul { @for d in &result.differences { li { (d) } } }
                @if !result.hash_matches { p { "The stored content does not match its hash." } }
            }
        }
    };
    page(Some(v), &title, "/console/finance", body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::time::from_micros;

    // The month-end page's count of events after a statement's cut-off is the one
    // `store::count_arrived_after` gives, for events received before, at and after every
    // boundary (the cut-off, the hour that makes an event late, the period's ends).
    #[tokio::test]
    async fn count_after_cut_off_is_count_arrived_after() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::DatabaseConfig {
            url: crate::config::Secret::new(format!("sqlite://{}/t.db", dir.path().display())),
            ..Default::default()
        };
        let db = crate::db::Db::connect(&cfg).await.unwrap();
        db.migrate().await.unwrap();
        let (m, h) = (60_000_000_i64, LATE_US);
        let base = 1_790_000_000_000_000_i64;
        let lateness = [-m, 0, 1, m, h - 1, h, h + 1, 2 * h, 24 * h, 40 * 24 * h];
        let crate::db::Db::Sqlite(pool) = &db else {
            unreachable!()
        };
        let mut tx = pool.begin().await.unwrap();
        let mut n = 0;
        for minute in (0..600).step_by(7) {
            for late in lateness {
                let time = base + minute * m;
                sqlx::query(
                    "INSERT INTO usage_events (partner_id, source, event_id, type, time_us, \
                     received_at_us) VALUES ('p', '/s', $1, 'x.y', $2, $3)",
                )
                .bind(format!("e{n}"))
                .bind(time)
                .bind(time + late)
                .execute(&mut *tx)
                .await
                .unwrap();
                n += 1;
            }
        }
        tx.commit().await.unwrap();
        let mut compared = 0;
        for (start, end) in [(base, base + 300 * m), (base + 100 * m, base + 600 * m)] {
            for as_of in [
                start - h,
                start + 10 * m,
                end - 2 * h,
                end - h - 1,
                end - h,
                end - h + 1,
                end - 1,
                end,
                end + m,
                end + h - 1,
                end + h,
                end + h + 1,
                end + 5 * h,
                end + 40 * 24 * h,
            ] {
                let span = Span {
                    partner_id: "p",
                    start: from_micros(start),
                    end: from_micros(end),
                    as_of: from_micros(as_of),
                    exclude_self_reported: false,
                };
                let want = store::count_arrived_after(&db, span).await.unwrap();
                let got = count_after_cut_off(&db, span).await.unwrap();
                assert_eq!(got, want, "period {start}..{end}, cut-off {as_of}");
                compared += i64::from(want > 0);
            }
        }
        assert!(
            compared > 10,
            "too few spans had anything after the cut-off"
        );
        db.close().await;
    }
}
