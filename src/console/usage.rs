//! The usage explorer: a meter's values per day, week or month for one or more partners over
//! a range (90 days by default), optionally beside the range before it, as an SVG chart
//! drawn by the server with the same numbers in a table under it, and as CSV. A partner
//! user sees its own partner and the meters its agreements use, nothing else.

use std::collections::BTreeSet;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use maud::{PreEscaped, html};
use rust_decimal::Decimal;
use serde_json::Value;

use super::auth::Signed;
use super::chart::{self, Chart, Kind, Series};
use super::layout::{self, error, page};
use super::session::Viewer;
use crate::metering::window::{WindowSize, local_midnight, windows};
use crate::state::AppState;

/// What the page was asked for, checked.
struct Ask {
    partners: Vec<String>,
    meter: String,
    size: WindowSize,
    from: NaiveDate,
    /// Exclusive.
    to: NaiveDate,
    tz: Tz,
    compare: bool,
    /// The statement period asked for (its days in the agreement's zone), if any.
    period: Option<String>,
    /// With `period` and `compare`: the period before, `[from, to)`.
    before: Option<(NaiveDate, NaiveDate)>,
}

fn pairs(raw: Option<String>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// The meters `v` may chart: every one for staff; for a partner user, those its
/// agreements read.
fn meters_for(state: &AppState, v: &Viewer) -> Vec<String> {
    match (&v.partner, v.role.is_partner()) {
        (Some(p), true) => {
            let mut used: BTreeSet<String> = BTreeSet::new();
            for versions in state.agreements.for_partner(p) {
                for a in versions {
                    used.extend(a.meters());
                }
            }
            used.into_iter()
                .filter(|m| state.meters.contains_key(m))
                .collect()
        }
        _ => state.meters.keys().cloned().collect(),
    }
}

fn parse(state: &AppState, v: &Viewer, q: &[(String, String)]) -> Result<Ask, String> {
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.trim());
    let allowed = meters_for(state, v);
    let meter = match get("meter").filter(|m| !m.is_empty()) {
        Some(m) if allowed.iter().any(|a| a == m) => m.to_owned(),
        Some(m) => return Err(format!("{m:?} is not a meter you can chart here")),
        None => allowed
            .first()
            .cloned()
            .ok_or_else(|| "no meter is configured".to_owned())?,
    };
    let partners: Vec<String> = if v.role.is_partner() {
        v.partner.iter().cloned().collect()
    } else {
        let mut ps: Vec<String> = q
            .iter()
            .filter(|(n, _)| n == "partner")
            .map(|(_, p)| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        ps.dedup();
        if ps.is_empty() {
            // The first partner, preferring a real one to a sandbox one.
            let mut all: Vec<_> = state.config.partners.iter().collect();
            all.sort_by_key(|p| p.sandbox);
            ps = all.into_iter().take(1).map(|p| p.id.clone()).collect();
        }
        for p in &ps {
            if state.config.partner(p).is_none() {
                return Err(format!("no partner {p:?} is configured"));
            }
        }
        if ps.len() > 8 {
            return Err("compare at most 8 partners at once".into());
        }
        ps
    };
    let size = match get("window").unwrap_or("day") {
        "day" => WindowSize::Day,
        "week" => WindowSize::Week,
        "month" => WindowSize::Month,
        other => return Err(format!("window {other:?} is not one of day, week, month")),
    };
    let date = |k: &str| -> Result<Option<NaiveDate>, String> {
        match get(k).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(Some)
                .map_err(|_| format!("{k} {s:?} is not a date such as 2026-10-01")),
        }
    };
    // A statement period (`2026-10`, `2026-Q4`): its bounds in the first partner's agreement,
    // so the chart adds up to what the statement counted.
    let period = get("period").filter(|p| !p.is_empty()).map(str::to_owned);
    let by_period = match (&period, partners.first()) {
        (Some(label), Some(p)) => {
            let svc = state.statements();
            let (agreement, start, end, tz_name) = svc
                .period_range(p, None, label)
                .map_err(|e| format!("period {label:?}: {e}"))?;
            let tz: Tz = tz_name.parse().unwrap_or(Tz::UTC);
            let days = |t: chrono::DateTime<Utc>| t.with_timezone(&tz).date_naive();
            let before = svc
                .previous_label(&agreement, label)
                .and_then(|prev| svc.period_range(p, Some(&agreement), &prev).ok())
                .map(|(_, s, e, _)| (days(s), days(e)));
            Some((days(start), days(end), tz, before))
        }
        _ => None,
    };
    let today = Utc::now().date_naive();
    // `to` as a person says it: the last day shown, included.
    let to = match &by_period {
        Some((_, end, _, _)) => *end,
        None => date("to")?.unwrap_or(today) + Duration::days(1),
    };
    let from = match &by_period {
        Some((start, _, _, _)) => *start,
        None => date("from")?.unwrap_or(to - Duration::days(90)),
    };
    if from >= to {
        return Err("the range must start before it ends".into());
    }
    if (to - from).num_days() > 3 * 366 {
        return Err("chart at most three years at once".into());
    }
    // The zone of the first partner's agreement (its statements' days), else UTC.
    let tz = match &by_period {
        Some((_, _, tz, _)) => *tz,
        None => partners
            .first()
            .and_then(|p| state.agreements.for_partner(p).into_iter().next())
            .and_then(|v| v.first())
            .map_or(Tz::UTC, |a| a.tz),
    };
    Ok(Ask {
        partners,
        meter,
        size,
        from,
        to,
        tz,
        compare: get("compare") == Some("1"),
        before: by_period.and_then(|(_, _, _, b)| b),
        period,
    })
}

fn number(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => crate::metering::query::parse_decimal(&n.to_string()),
        Value::String(s) => crate::metering::query::parse_decimal(s),
        _ => None,
    }
}

/// One partner's values per window of `[from, to)`, in order.
async fn values(
    state: &AppState,
    partner: &str,
    meter: &crate::metering::Meter,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    a: &Ask,
) -> anyhow::Result<(Vec<crate::metering::window::Window>, Vec<Option<Decimal>>)> {
    let wins = windows(from, to, Some(a.size), a.tz)?;
    let buckets =
        crate::metering::store::query_meter(&state.db, partner, meter, &wins, &[], None).await?;
    let mut out = vec![None; wins.len()];
    for b in buckets {
        if let Some(slot) = out.get_mut(b.window) {
            *slot = number(&b.value);
        }
    }
    // COUNT-like meters: an empty window is zero, not a gap.
    use crate::metering::meter::Aggregation as A;
    if matches!(meter.aggregation, A::Count | A::Sum | A::UniqueCount) {
        for v in &mut out {
            v.get_or_insert(Decimal::ZERO);
        }
    }
    Ok((wins, out))
}

struct Drawn {
    labels: Vec<String>,
    series: Vec<Series>,
}

async fn draw(state: &AppState, a: &Ask) -> anyhow::Result<Drawn> {
    let meter = state
        .meters
        .get(&a.meter)
        .ok_or_else(|| anyhow::anyhow!("meter {:?} is gone", a.meter))?;
    let from = local_midnight(a.from, a.tz);
    let to = local_midnight(a.to, a.tz);
    let mut labels = Vec::new();
    let mut series = Vec::new();
    for p in &a.partners {
        let (wins, vals) = values(state, p, meter, from, to, a).await?;
        if labels.is_empty() {
            labels = wins
                .iter()
                .map(|w| {
                    let d = w.start.with_timezone(&a.tz).date_naive();
                    match a.size {
                        WindowSize::Month => d.format("%Y-%m").to_string(),
                        _ => d.format("%Y-%m-%d").to_string(),
                    }
                })
                .collect();
        }
        let name = if a.compare {
            format!("{p} ({} to {})", a.from, a.to - Duration::days(1))
        } else {
            p.clone()
        };
        series.push(Series { name, values: vals });
        if a.compare {
            // The statement period before, or the same number of days before the range.
            let len = a.to - a.from;
            let (pf, pt) = a.before.unwrap_or((a.from - len, a.from));
            let (_, mut before) = values(
                state,
                p,
                meter,
                local_midnight(pf, a.tz),
                local_midnight(pt, a.tz),
                a,
            )
            .await?;
            // Aligned by position: the nth window of each range.
            before.resize(labels.len(), None);
            series.push(Series {
                name: format!("{p} ({pf} to {})", pt - Duration::days(1)),
                values: before,
            });
        }
    }
    Ok(Drawn { labels, series })
}

/// `GET /console/usage?partner=&meter=&window=&from=&to=&compare=1[&format=csv]`.
pub async fn explorer(
    State(state): State<AppState>,
    s: Signed,
    RawQuery(raw): RawQuery,
) -> Response {
    let v = &s.viewer;
    if !(v.role.reads_finance() || v.role.is_partner()) {
        return error(StatusCode::FORBIDDEN, "You do not have access to this", "");
    }
    let q = pairs(raw);
    let ask = match parse(&state, v, &q) {
        Ok(a) => a,
        Err(why) => return error(StatusCode::BAD_REQUEST, "That chart cannot be drawn", &why),
    };
    let drawn = match draw(&state, &ask).await {
        Ok(d) => d,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "That chart cannot be drawn",
                &format!("{e:#}"),
            );
        }
    };
    let unit = ask.meter.replace('_', " ");
    if q.iter().any(|(k, v)| k == "format" && v == "csv") {
        let mut out = String::from("window_start");
        for s in &drawn.series {
            out.push(',');
            out.push_str(&crate::audit::csv_cell(&s.name));
        }
        out.push_str("\r\n");
        for (i, label) in drawn.labels.iter().enumerate() {
            out.push_str(label);
            for s in &drawn.series {
                out.push(',');
                if let Some(Some(d)) = s.values.get(i) {
                    out.push_str(&d.to_string());
                }
            }
            out.push_str("\r\n");
        }
        let mut r = out.into_response();
        let h = r.headers_mut();
        layout::secure_headers(h);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"usage-{}-{}-{}.csv\"",
            ask.meter,
            ask.from,
            ask.to - Duration::days(1)
        )) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        return r;
    }
    let per = match ask.size {
        WindowSize::Week => "week",
        WindowSize::Month => "month",
        _ => "day",
    };
    let svg = chart::render(&Chart {
        title: format!("{} per {per}", ask.meter),
        unit: unit.clone(),
        x_labels: drawn.labels.clone(),
        series: drawn.series.clone(),
        kind: if drawn.labels.len() <= 24 && drawn.series.len() <= 3 {
            Kind::Bars
        } else {
            Kind::Line
        },
    });
    let meters = meters_for(&state, v);
    let csv_link = {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, val) in &q {
            if k != "format" {
                ser.append_pair(k, val);
            }
        }
        ser.append_pair("format", "csv");
        ser.finish()
    };
    let last_day = ask.to - Duration::days(1);
    let body = html! {
        h1 { "Usage" }
        form.toolbar method="get" action="/console/usage" {
            @if !v.role.is_partner() {
                div {
                    label for="u-partner" { "Partners" } br;
                    select #u-partner name="partner" multiple size="4" {
                        @for p in state.config.partners.iter() {
                            @if ask.partners.contains(&p.id) { option value=(p.id) selected { (p.name) } }
                            @else { option value=(p.id) { (p.name) } }
                        }
                    }
                }
            }
            div {
                label for="u-meter" { "Meter" } br;
                select #u-meter name="meter" {
                    @for m in &meters {
                        @if *m == ask.meter { option value=(m) selected { (m) } } @else { option value=(m) { (m) } }
                    }
                }
            }
            div {
                label for="u-window" { "Per" } br;
                select #u-window name="window" {
                    @for (val, label) in [("day", "day"), ("week", "week"), ("month", "month")] {
                        @if val == per { option value=(val) selected { (label) } } @else { option value=(val) { (label) } }
                    }
                }
            }
            div { label for="u-from" { "From" } br; input #u-from type="date" name="from" value=(ask.from); }
            div { label for="u-to" { "To (included)" } br; input #u-to type="date" name="to" value=(last_day); }
            div {
                label for="u-period" { "or statement period" } br;
                input #u-period type="text" name="period" value=(ask.period.clone().unwrap_or_default()) placeholder="2026-10" size="8" aria-describedby="u-period-help";
            }
            div {
                @if ask.compare { input #u-compare type="checkbox" name="compare" value="1" checked; }
                @else { input #u-compare type="checkbox" name="compare" value="1"; }
                " " label for="u-compare" { "Compare with the period before" }
            }
            button type="submit" { "Show" }
        }
        p #u-period-help .muted { "A statement period (2026-10, or 2026-Q4 for a quarterly agreement) charts exactly the days the first partner's statement counts, and compares with the period before. " }
        p.muted { "Days in " (ask.tz.name()) ". " a href={ "/console/usage?" (csv_link) } { "Download CSV" } }
        figure {
            (PreEscaped(svg))
            figcaption.muted { "The same numbers are in the table below." }
        }
        table {
            caption { (ask.meter) " per " (per) }
            thead { tr {
                th scope="col" { "From" }
                @for s in &drawn.series { th.num scope="col" { (s.name) } }
            } }
            tbody {
                @for (i, label) in drawn.labels.iter().enumerate() {
                    tr {
                        th scope="row" { (label) }
                        @for s in &drawn.series {
                            td.num { @if let Some(Some(d)) = s.values.get(i) { (d) } @else { span.muted { "no data" } } }
                        }
                    }
                }
            }
        }
    };
    page(Some(v), "Usage", "/console/usage", body)
}
