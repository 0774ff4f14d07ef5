//! Meter queries: parameters, folding rows into values (pure).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use serde_json::Map;

use super::meter::{Field, Meter};
use super::window::{Window, WindowSize};
use crate::http::FieldError;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;

use super::meter::Aggregation;
use super::store::{Bucket, RawRow};

/// Fold rows (ordered by window, group, time) into one bucket per (window, group).
pub fn fold(aggregation: Aggregation, rows: Vec<RawRow>) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    let mut acc: Option<(usize, Vec<Option<String>>, Acc)> = None;
    for row in rows {
        if let Some(n) = row.count {
            out.push(Bucket {
                window: row.window,
                group: row.group,
                value: Value::from(n),
            });
            continue;
        }
        let same = matches!(&acc, Some((w, g, _)) if *w == row.window && *g == row.group);
        if !same && let Some((w, g, a)) = acc.take() {
            out.push(Bucket {
                window: w,
                group: g,
                value: a.finish(),
            });
        }
        let entry =
            acc.get_or_insert_with(|| (row.window, row.group.clone(), Acc::new(aggregation)));
        entry.2.add(row.value.as_deref());
    }
    if let Some((w, g, a)) = acc {
        out.push(Bucket {
            window: w,
            group: g,
            value: a.finish(),
        });
    }
    out
}

enum Acc {
    Sum(Decimal),
    Max(Option<Decimal>),
    Latest(Option<String>),
}

impl Acc {
    fn new(a: Aggregation) -> Self {
        match a {
            Aggregation::Max => Acc::Max(None),
            Aggregation::Latest => Acc::Latest(None),
            _ => Acc::Sum(Decimal::ZERO),
        }
    }

    /// Values that are not numbers are ignored by SUM and MAX.
    fn add(&mut self, v: Option<&str>) {
        match self {
            Acc::Sum(total) => {
                if let Some(d) = v.and_then(parse_decimal) {
                    *total = total.checked_add(d).unwrap_or(*total);
                }
            }
            Acc::Max(m) => {
                if let Some(d) = v.and_then(parse_decimal) {
                    *m = Some(m.map_or(d, |cur| cur.max(d)));
                }
            }
            Acc::Latest(l) => {
                if let Some(s) = v {
                    *l = Some(s.to_owned());
                }
            }
        }
    }

    fn finish(self) -> Value {
        match self {
            Acc::Sum(d) => decimal_json(d),
            Acc::Max(m) => m.map_or(Value::Null, decimal_json),
            Acc::Latest(l) => l
                .map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s)))
                .unwrap_or(Value::Null),
        }
    }
}

pub fn parse_decimal(s: &str) -> Option<Decimal> {
    let s = s.trim();
    Decimal::from_str(s)
        .ok()
        .or_else(|| Decimal::from_scientific(s).ok())
}

/// Integers stay exact; fractions become JSON numbers (f64).
pub fn decimal_json(d: Decimal) -> Value {
    let d = d.normalize();
    if d.is_integer()
        && let Some(i) = d.to_i64()
    {
        return Value::from(i);
    }
    d.to_f64()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// The value an empty window has: zero for counts and sums, nothing for MAX and LATEST.
pub fn empty_value(a: Aggregation) -> Value {
    match a {
        Aggregation::Count | Aggregation::UniqueCount | Aggregation::Sum => Value::from(0),
        Aggregation::Max | Aggregation::Latest => Value::Null,
    }
}

/// A validated `GET /v1/usage/query`.
#[derive(Debug)]
pub struct MeterQuery<'m> {
    pub meter: &'m Meter,
    pub partner: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub size: Option<WindowSize>,
    pub tz: Tz,
    pub tz_name: String,
    /// Group-by fields as the client named them (the keys of each row's `group`).
    pub group_names: Vec<String>,
    pub group_fields: Vec<Field>,
}

#[derive(Debug)]
pub enum QueryError {
    /// Each invalid parameter, named.
    Invalid(Vec<FieldError>),
    UnknownMeter(String),
}

/// Most `group_by` fields in one query. Each must be one the meter declares, named once, so
/// this only bites for meters declaring more; it bounds the query's size whatever the
/// config holds.
pub const MAX_GROUP_BY: usize = 8;

/// Validate the query parameters; every problem is listed. `own_partner` is the partner of a
/// partner key (the default for `partner`).
pub const KNOWN_PARAMS: [&str; 9] = [
    "meter",
    "partner",
    "from",
    "to",
    "window",
    "tz",
    "group_by",
    "period",
    "agreement",
];

pub fn parse_query<'m>(
    params: &HashMap<String, String>,
    meters: &'m BTreeMap<String, Meter>,
    own_partner: Option<&str>,
    now: DateTime<Utc>,
) -> Result<MeterQuery<'m>, QueryError> {
    const KNOWN: [&str; 9] = KNOWN_PARAMS;
    let mut errors = Vec::new();
    let mut invalid = |field: &str, reason: String| {
        errors.push(FieldError {
            index: None,
            field: field.to_owned(),
            reason,
        })
    };
    for k in params.keys() {
        if !KNOWN.contains(&k.as_str()) {
            invalid(
                k,
                format!("unknown parameter; expected one of {}", KNOWN.join(", ")),
            );
        }
    }
    let meter_name = params.get("meter").map(String::as_str).unwrap_or("");
    let meter = if meter_name.is_empty() {
        invalid("meter", "is required".into());
        None
    } else {
        meters.get(meter_name)
    };
    let partner = match (params.get("partner"), own_partner) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(own)) => Some(own.to_owned()),
        (None, None) => {
            invalid("partner", "is required".into());
            None
        }
    };
    let from = parse_time(params.get("from"), "from", &mut invalid);
    let to = match params.get("to") {
        // The ledger keeps microseconds; so does the default end of the range.
        None => Some(now.trunc_subsecs(6)),
        some => parse_time(some, "to", &mut invalid),
    };
    let size = match params.get("window").map(String::as_str) {
        None | Some("") => Some(None),
        Some(w) => match WindowSize::parse(w) {
            Some(s) => Some(Some(s)),
            None => {
                invalid(
                    "window",
                    format!("{w:?} is not one of hour, day, week, month"),
                );
                None
            }
        },
    };
    let tz_name = params.get("tz").cloned().unwrap_or_else(|| "UTC".into());
    let tz = match tz_name.parse::<Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            invalid(
                "tz",
                format!("{tz_name:?} is not an IANA time zone such as UTC or America/New_York"),
            );
            None
        }
    };
    let group_names: Vec<String> = params
        .get("group_by")
        .map(|g| {
            g.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut group_fields: Vec<Field> = Vec::new();
    if group_names.len() > MAX_GROUP_BY {
        invalid(
            "group_by",
            format!(
                "names {} fields; at most {MAX_GROUP_BY}, each declared by the meter, each once",
                group_names.len()
            ),
        );
    } else if let Some(m) = meter {
        for (i, g) in group_names.iter().enumerate() {
            if group_names[..i].contains(g) {
                invalid("group_by", format!("names {g:?} more than once"));
                continue;
            }
            match m.group_by.iter().find(|(name, _)| name == g) {
                Some((_, f)) => group_fields.push(f.clone()),
                None => {
                    let declared: Vec<&str> = m.group_by.iter().map(|(n, _)| n.as_str()).collect();
                    invalid(
                        "group_by",
                        format!(
                            "meter {:?} cannot group by {g:?}; it declares: {}",
                            m.name,
                            if declared.is_empty() {
                                "none".to_owned()
                            } else {
                                declared.join(", ")
                            }
                        ),
                    );
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(QueryError::Invalid(errors));
    }
    // All present once there are no errors.
    let (Some(partner), Some(from), Some(to), Some(size), Some(tz)) = (partner, from, to, size, tz)
    else {
        return Err(QueryError::Invalid(Vec::new()));
    };
    let Some(meter) = meter else {
        let known: Vec<&str> = meters.keys().map(String::as_str).collect();
        return Err(QueryError::UnknownMeter(format!(
            "unknown meter {meter_name:?}; configured meters: {}",
            known.join(", ")
        )));
    };
    Ok(MeterQuery {
        meter,
        partner,
        from,
        to,
        size,
        tz,
        tz_name,
        group_names,
        group_fields,
    })
}

/// The response body: one row per (window, group); without grouping every window, empty
/// ones included. Times are written in the query's zone.
/// `sandbox`: the partner is a sandbox partner, so every value counts sandbox events only
/// (said in the body, so a saved answer keeps the mark).
pub fn render(
    q: &MeterQuery<'_>,
    windows: &[Window],
    buckets: Vec<Bucket>,
    sandbox: bool,
) -> UsageReport {
    // Windows are local days, weeks... of `tz`; their bounds are written as every instant
    // the API answers is (UTC, `Z`), and the answer names the zone.
    let fmt = crate::time::rfc3339;
    let mut data = Vec::new();
    let mut it = buckets.into_iter().peekable();
    for (i, w) in windows.iter().enumerate() {
        let mut any = false;
        while let Some(b) = it.next_if(|b| b.window == i) {
            any = true;
            let group: Map<String, Value> = q
                .group_names
                .iter()
                .cloned()
                .zip(
                    b.group
                        .into_iter()
                        .map(|v| v.map_or(Value::Null, Value::String)),
                )
                .collect();
            data.push(UsageBucket {
                start: fmt(w.start),
                end: fmt(w.end),
                value: b.value,
                group,
            });
        }
        // Without grouping every window is listed, empty ones included, so a chart has no gaps.
        if !any && q.group_names.is_empty() {
            data.push(UsageBucket {
                start: fmt(w.start),
                end: fmt(w.end),
                value: empty_value(q.meter.aggregation),
                group: Map::new(),
            });
        }
    }
    UsageReport {
        meter: q.meter.name.clone(),
        partner: q.partner.clone(),
        aggregation: q.meter.aggregation.as_str().to_owned(),
        window: q.size.map(|s| s.as_str().to_owned()),
        tz: q.tz_name.clone(),
        from: fmt(q.from),
        to: fmt(q.to),
        sandbox,
        statement_period: None,
        data,
    }
}

/// The answer to `GET /v1/usage/query`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "meter": "active_users", "partner": "epic-sandbox", "aggregation": "UNIQUE_COUNT",
    "window": "day", "tz": "America/New_York",
    "from": "2026-11-01T00:00:00-04:00", "to": "2026-11-03T00:00:00-05:00", "sandbox": false,
    "data": [
        {"start": "2026-11-01T00:00:00-04:00", "end": "2026-11-02T00:00:00-05:00", "value": 12, "group": {}},
        {"start": "2026-11-02T00:00:00-05:00", "end": "2026-11-03T00:00:00-05:00", "value": 9, "group": {}}
    ]
}))]
pub struct UsageReport {
    pub meter: String,
    pub partner: String,
    /// COUNT, SUM, UNIQUE_COUNT, MAX or LATEST.
    pub aggregation: String,
    /// hour, day, week or month; null for one total over the range.
    pub window: Option<String>,
    /// The time zone windows are cut in (IANA name).
    pub tz: String,
    pub from: String,
    pub to: String,
    /// The partner is a sandbox partner: every value counts sandbox events only.
    pub sandbox: bool,
    /// With `period`: the statement period and agreement `from`, `to` and `tz` came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_period: Option<StatementPeriod>,
    pub data: Vec<UsageBucket>,
}

/// A statement period a usage query was asked for.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct StatementPeriod {
    /// e.g. 2026-11 (or 2026-Q4 for a quarterly agreement).
    pub period: String,
    pub agreement: String,
    /// The agreement's zone, which the period's bounds are in.
    pub time_zone: String,
}

/// One window (and group) of a meter.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct UsageBucket {
    pub start: String,
    pub end: String,
    /// A number for COUNT/SUM/UNIQUE_COUNT; MAX and LATEST give the value seen (null when none).
    pub value: Value,
    /// The group-by fields' values (empty without grouping).
    pub group: Map<String, Value>,
}

fn parse_time(
    v: Option<&String>,
    field: &str,
    invalid: &mut impl FnMut(&str, String),
) -> Option<DateTime<Utc>> {
    match v {
        None => {
            invalid(field, "is required (an RFC 3339 timestamp)".into());
            None
        }
        // An unencoded '+' in a query string arrives as a space.
        Some(s) => match DateTime::parse_from_rfc3339(&s.replace(' ', "+")) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                invalid(
                    field,
                    format!("{s:?} is not an RFC 3339 timestamp such as 2026-11-01T00:00:00Z"),
                );
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(w: usize, v: &str) -> RawRow {
        RawRow {
            window: w,
            group: vec![],
            count: None,
            value: Some(v.into()),
        }
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn group_by_names_each_declared_field_once_and_at_most_the_cap() {
        let meter = Meter::compile(&crate::config::MeterConfig {
            name: "m".into(),
            description: String::new(),
            event_types: vec!["t".into()],
            aggregation: "COUNT".into(),
            value: None,
            group_by: vec!["subject".into(), "$.course".into()],
            exclude: Default::default(),
            thresholds: vec![],
        })
        .unwrap();
        let meters = BTreeMap::from([("m".to_owned(), meter)]);
        let ask = |g: &str| {
            parse_query(
                &params(&[
                    ("meter", "m"),
                    ("partner", "p"),
                    ("from", "2026-11-01T00:00:00Z"),
                    ("group_by", g),
                ]),
                &meters,
                None,
                Utc::now(),
            )
        };
        assert_eq!(ask("subject,$.course").unwrap().group_fields.len(), 2);
        let Err(QueryError::Invalid(errors)) = ask("subject,subject") else {
            panic!("a repeated field was accepted")
        };
        assert_eq!(errors.len(), 1);
        assert!(errors[0].reason.contains("more than once"), "{errors:?}");
        let many = vec!["subject"; 5000].join(",");
        let Err(QueryError::Invalid(errors)) = ask(&many) else {
            panic!("5000 fields were accepted")
        };
        assert_eq!(errors.len(), 1, "one problem, not one per field");
        assert!(errors[0].reason.contains("at most 8"), "{errors:?}");
    }

    #[test]
    fn a_partner_key_defaults_the_partner_and_every_problem_is_named() {
        let meter = Meter::compile(&crate::config::MeterConfig {
            name: "m".into(),
            description: String::new(),
            event_types: vec!["t".into()],
            aggregation: "COUNT".into(),
            value: None,
            group_by: vec![],
            exclude: Default::default(),
            thresholds: vec![],
        })
        .unwrap();
        let meters = BTreeMap::from([("m".to_owned(), meter)]);
        let now = Utc::now();
        let q = parse_query(
            &params(&[("meter", "m"), ("from", "2026-11-01T00:00:00Z")]),
            &meters,
            Some("p1"),
            now,
        )
        .unwrap();
        assert_eq!(q.partner, "p1");
        assert_eq!(q.to, now.trunc_subsecs(6));
        let Err(QueryError::Invalid(errors)) = parse_query(
            &params(&[("window", "fortnight"), ("group_by", "$.x")]),
            &meters,
            None,
            now,
        ) else {
            panic!("expected invalid parameters");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["meter", "partner", "from", "window"]);
        assert!(matches!(
            parse_query(
                &params(&[
                    ("meter", "nope"),
                    ("partner", "p"),
                    ("from", "2026-11-01T00:00:00Z")
                ]),
                &meters,
                None,
                now
            ),
            Err(QueryError::UnknownMeter(_))
        ));
    }

    #[test]
    fn sums_are_exact_decimals() {
        let b = fold(
            Aggregation::Sum,
            vec![row(0, "0.1"), row(0, "0.2"), row(1, "5"), row(1, "x")],
        );
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].value, serde_json::json!(0.3));
        assert_eq!(b[1].value, serde_json::json!(5));
    }

    #[test]
    fn latest_is_the_last_row_and_keeps_its_json_type() {
        let b = fold(Aggregation::Latest, vec![row(0, "1"), row(0, "\"b\"")]);
        assert_eq!(b[0].value, serde_json::json!("b"));
    }

    #[test]
    fn max_ignores_non_numbers() {
        let b = fold(
            Aggregation::Max,
            vec![row(0, "3"), row(0, "12"), row(0, "n/a")],
        );
        assert_eq!(b[0].value, serde_json::json!(12));
    }
}
