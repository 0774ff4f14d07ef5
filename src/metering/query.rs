//! Meter queries: parameters, folding rows into values (pure).

use std::str::FromStr;

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
