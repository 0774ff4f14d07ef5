//! Statement periods (months or quarters in the agreement's time zone) and agreement years
//! (pure).

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::metering::window::local_midnight;

/// How long an agreement's statement period is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    #[default]
    Monthly,
    Quarterly,
}

impl PeriodKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Monthly => "monthly",
            Self::Quarterly => "quarterly",
        }
    }
    fn months(self) -> u32 {
        match self {
            Self::Monthly => 1,
            Self::Quarterly => 3,
        }
    }
    /// Periods in an agreement year.
    pub fn per_year(self) -> u32 {
        12 / self.months()
    }
    /// Whether `date` is the first day of a period of this kind.
    pub fn is_boundary(self, date: NaiveDate) -> bool {
        date.day() == 1 && (date.month() - 1).is_multiple_of(self.months())
    }
    /// What a period label looks like, for error messages.
    pub fn example(self) -> &'static str {
        match self {
            Self::Monthly => "2026-10",
            Self::Quarterly => "2026-Q4",
        }
    }
}

/// One period: a calendar month (`2026-10`) or quarter (`2026-Q4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    /// First day of the period (a local date in the agreement's zone).
    start: NaiveDate,
    kind: PeriodKind,
}

impl Period {
    /// Parse a label of the agreement's kind.
    pub fn parse(label: &str, kind: PeriodKind) -> Result<Period, String> {
        let bad = || {
            format!(
                "{label:?} is not a {} period: write it like {}",
                kind.as_str(),
                kind.example()
            )
        };
        let (year, rest) = label.split_once('-').ok_or_else(bad)?;
        if year.len() != 4 {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        let month = match kind {
            PeriodKind::Monthly => {
                if rest.len() != 2 {
                    return Err(bad());
                }
                rest.parse::<u32>().map_err(|_| bad())?
            }
            PeriodKind::Quarterly => {
                let q = rest
                    .strip_prefix('Q')
                    .and_then(|q| q.parse::<u32>().ok())
                    .filter(|q| (1..=4).contains(q))
                    .ok_or_else(bad)?;
                (q - 1) * 3 + 1
            }
        };
        let start = NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(bad)?;
        Ok(Period { start, kind })
    }

    /// The period of `kind` that contains `date`.
    pub fn containing(date: NaiveDate, kind: PeriodKind) -> Period {
        let month0 = (date.month() - 1) / kind.months() * kind.months();
        let start = NaiveDate::from_ymd_opt(date.year(), month0 + 1, 1).unwrap_or(date);
        Period { start, kind }
    }

    pub fn kind(self) -> PeriodKind {
        self.kind
    }
    pub fn start_date(self) -> NaiveDate {
        self.start
    }
    /// First day after the period.
    pub fn end_date(self) -> NaiveDate {
        add_months(self.start, self.kind.months())
    }
    pub fn next(self) -> Period {
        Period {
            start: self.end_date(),
            kind: self.kind,
        }
    }
    pub fn prev(self) -> Period {
        let day_before = self.start.pred_opt().unwrap_or(self.start);
        Period::containing(day_before, self.kind)
    }

    pub fn label(self) -> String {
        match self.kind {
            PeriodKind::Monthly => format!("{}-{:02}", self.start.year(), self.start.month()),
            PeriodKind::Quarterly => {
                format!(
                    "{}-Q{}",
                    self.start.year(),
                    (self.start.month() - 1) / 3 + 1
                )
            }
        }
    }

    /// `[start, end)` as instants: local midnights in `tz`.
    pub fn bounds(self, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        (
            local_midnight(self.start, tz),
            local_midnight(self.end_date(), tz),
        )
    }
}

/// `date` (a first of month) plus `months`.
pub fn add_months(date: NaiveDate, months: u32) -> NaiveDate {
    let total = date.month0() + months;
    let year = date.year() + i32::try_from(total / 12).unwrap_or(0);
    NaiveDate::from_ymd_opt(year, total % 12 + 1, 1).unwrap_or(date)
}

/// An agreement year: twelve months from an anniversary of the agreement's year start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgreementYear {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

impl AgreementYear {
    /// The agreement year (anchored at `anchor`, a period boundary) that holds `period`.
    pub fn of(period: Period, anchor: NaiveDate) -> AgreementYear {
        let p = period.start_date();
        let mut start = NaiveDate::from_ymd_opt(p.year(), anchor.month(), 1).unwrap_or(anchor);
        if start > p {
            start = NaiveDate::from_ymd_opt(p.year() - 1, anchor.month(), 1).unwrap_or(anchor);
        }
        AgreementYear {
            start,
            end: add_months(start, 12),
        }
    }

    /// Every period of the year, in order.
    pub fn periods(self, kind: PeriodKind) -> Vec<Period> {
        let mut out = Vec::new();
        let mut p = Period::containing(self.start, kind);
        while p.start_date() < self.end {
            out.push(p);
            p = p.next();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn months_and_quarters_parse_and_print() {
        let p = Period::parse("2026-10", PeriodKind::Monthly).unwrap();
        assert_eq!(p.start_date(), date("2026-10-01"));
        assert_eq!(p.end_date(), date("2026-11-01"));
        assert_eq!(p.label(), "2026-10");
        assert_eq!(p.next().label(), "2026-11");
        assert_eq!(p.prev().label(), "2026-09");
        let dec = Period::parse("2026-12", PeriodKind::Monthly).unwrap();
        assert_eq!(dec.next().label(), "2027-01");
        assert_eq!(dec.next().prev(), dec);
        let q = Period::parse("2026-Q4", PeriodKind::Quarterly).unwrap();
        assert_eq!(q.start_date(), date("2026-10-01"));
        assert_eq!(q.end_date(), date("2027-01-01"));
        assert_eq!(q.next().label(), "2027-Q1");
        assert_eq!(q.next().prev(), q);
        assert_eq!(
            Period::parse("2026-Q1", PeriodKind::Quarterly)
                .unwrap()
                .prev()
                .label(),
            "2025-Q4"
        );
    }

    #[test]
    fn bad_period_labels_are_refused_with_the_expected_form() {
        for bad in ["2026-13", "2026-1", "26-10", "2026/10", "2026-Q4", ""] {
            let e = Period::parse(bad, PeriodKind::Monthly).unwrap_err();
            assert!(e.contains("2026-10"), "{e}");
        }
        for bad in ["2026-Q5", "2026-10", "2026-Q0"] {
            assert!(Period::parse(bad, PeriodKind::Quarterly).is_err());
        }
    }

    #[test]
    fn a_month_in_new_york_starts_at_local_midnight() {
        let p = Period::parse("2026-11", PeriodKind::Monthly).unwrap();
        let (s, e) = p.bounds(chrono_tz::America::New_York);
        assert_eq!(s.to_rfc3339(), "2026-11-01T04:00:00+00:00");
        assert_eq!(e.to_rfc3339(), "2026-12-01T05:00:00+00:00");
    }

    #[test]
    fn agreement_years_run_from_the_anchor_month() {
        let anchor = date("2025-04-01");
        let y = AgreementYear::of(
            Period::parse("2026-02", PeriodKind::Monthly).unwrap(),
            anchor,
        );
        assert_eq!((y.start, y.end), (date("2025-04-01"), date("2026-04-01")));
        let y = AgreementYear::of(
            Period::parse("2026-04", PeriodKind::Monthly).unwrap(),
            anchor,
        );
        assert_eq!(y.start, date("2026-04-01"));
        assert_eq!(y.periods(PeriodKind::Monthly).len(), 12);
        assert_eq!(y.periods(PeriodKind::Quarterly).len(), 4);
    }
}
