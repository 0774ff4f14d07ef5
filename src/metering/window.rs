//! Query windows: hour, day, week (Monday to Monday) or month boundaries in a named time zone
//! (pure).
//!
//! Day and month windows follow the zone's calendar, so a day that crosses a DST change is
//! 23 or 25 hours long; hour windows step in absolute time from the zone's hour boundary.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// More windows than this in one query is refused, to bound the work a request can ask for.
pub const MAX_WINDOWS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSize {
    Hour,
    Day,
    /// ISO weeks: from local midnight on Monday.
    Week,
    Month,
}

impl WindowSize {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            "month" => Some(Self::Month),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }
}

/// One window, `[start, end)`, clipped to the queried range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("`from` must be before `to`")]
    EmptyRange,
    #[error(
        "the range holds more than {MAX_WINDOWS} windows; use a larger window or a shorter range"
    )]
    TooMany,
}

/// The windows covering `[from, to)`: aligned to `size` in `tz`, the first and last clipped
/// to the range. Without a size the whole range is one window.
pub fn windows(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    size: Option<WindowSize>,
    tz: Tz,
) -> Result<Vec<Window>, WindowError> {
    if from >= to {
        return Err(WindowError::EmptyRange);
    }
    let Some(size) = size else {
        return Ok(vec![Window {
            start: from,
            end: to,
        }]);
    };
    let mut out = Vec::new();
    let mut start = floor(from, size, tz);
    while start < to {
        let next = advance(start, size, tz);
        out.push(Window {
            start: start.max(from),
            end: next.min(to),
        });
        if out.len() > MAX_WINDOWS {
            return Err(WindowError::TooMany);
        }
        start = next;
    }
    Ok(out)
}

fn floor(t: DateTime<Utc>, size: WindowSize, tz: Tz) -> DateTime<Utc> {
    let local = t.with_timezone(&tz);
    match size {
        WindowSize::Hour => {
            t - Duration::minutes(i64::from(local.minute()))
                - Duration::seconds(i64::from(local.second()))
                - Duration::nanoseconds(i64::from(local.nanosecond()))
        }
        WindowSize::Day => local_midnight(local.date_naive(), tz),
        WindowSize::Week => {
            let back = i64::from(local.weekday().num_days_from_monday());
            local_midnight(local.date_naive() - Duration::days(back), tz)
        }
        WindowSize::Month => local_midnight(first_of_month(local.year(), local.month()), tz),
    }
}

fn advance(start: DateTime<Utc>, size: WindowSize, tz: Tz) -> DateTime<Utc> {
    let local = start.with_timezone(&tz);
    match size {
        WindowSize::Hour => start + Duration::hours(1),
        WindowSize::Day => {
            let next_day = local.date_naive().succ_opt().unwrap_or(local.date_naive());
            local_midnight(next_day, tz)
        }
        WindowSize::Week => {
            let monday = local.date_naive()
                - Duration::days(i64::from(local.weekday().num_days_from_monday()));
            local_midnight(monday + Duration::days(7), tz)
        }
        WindowSize::Month => {
            let (y, m) = if local.month() == 12 {
                (local.year() + 1, 1)
            } else {
                (local.year(), local.month() + 1)
            };
            local_midnight(first_of_month(y, m), tz)
        }
    }
}

fn first_of_month(year: i32, month: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MIN)
}

/// The instant a local day starts. Where midnight falls in a DST gap (some zones shift at
/// 00:00), the day starts at the first valid local time after it.
pub fn local_midnight(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let mut naive: NaiveDateTime = date.and_time(chrono::NaiveTime::MIN);
    for _ in 0..4 {
        match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
            LocalResult::None => naive += Duration::minutes(30),
        }
    }
    Utc.from_utc_datetime(&naive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn weeks_run_monday_to_monday_in_the_zone_across_a_dst_change() {
        let tz: Tz = "America/New_York".parse().unwrap();
        // Thursday 2026-10-29 to Wednesday 2026-11-11 (DST ends on Sunday 1 November).
        let w = windows(
            utc("2026-10-29T12:00:00Z"),
            utc("2026-11-11T12:00:00Z"),
            Some(WindowSize::Week),
            tz,
        )
        .unwrap();
        let starts: Vec<String> = w.iter().map(|w| w.start.to_rfc3339()).collect();
        assert_eq!(
            starts,
            [
                "2026-10-29T12:00:00+00:00",
                "2026-11-02T05:00:00+00:00",
                "2026-11-09T05:00:00+00:00"
            ]
        );
        // The first week began on Monday 26 October at local midnight (EDT), clipped.
        assert_eq!(
            floor(utc("2026-10-29T12:00:00Z"), WindowSize::Week, tz).to_rfc3339(),
            "2026-10-26T04:00:00+00:00"
        );
        // A week holding the change is 169 hours long.
        assert_eq!((w[1].start - utc("2026-10-26T04:00:00Z")).num_hours(), 169);
    }

    #[test]
    fn days_in_new_york_follow_the_dst_change() {
        let w = windows(
            utc("2026-11-01T04:00:00Z"),
            utc("2026-11-03T05:00:00Z"),
            Some(WindowSize::Day),
            chrono_tz::America::New_York,
        )
        .unwrap();
        assert_eq!(w.len(), 2);
        // 1 November 2026 is the fall-back day: 25 hours.
        assert_eq!(w[0].end - w[0].start, Duration::hours(25));
        assert_eq!(w[1].start, utc("2026-11-02T05:00:00Z"));
    }

    #[test]
    fn ranges_are_clipped_to_the_query() {
        let w = windows(
            utc("2026-11-01T10:30:00Z"),
            utc("2026-11-01T12:15:00Z"),
            Some(WindowSize::Hour),
            chrono_tz::UTC,
        )
        .unwrap();
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].start, utc("2026-11-01T10:30:00Z"));
        assert_eq!(w[0].end, utc("2026-11-01T11:00:00Z"));
        assert_eq!(w[2].end, utc("2026-11-01T12:15:00Z"));
    }

    #[test]
    fn hours_in_half_hour_zones_start_on_the_local_hour() {
        let w = windows(
            utc("2026-11-01T00:00:00Z"),
            utc("2026-11-01T02:00:00Z"),
            Some(WindowSize::Hour),
            chrono_tz::Asia::Kolkata,
        )
        .unwrap();
        assert_eq!(w[0].end, utc("2026-11-01T00:30:00Z"));
    }

    #[test]
    fn months_are_calendar_months() {
        let w = windows(
            utc("2026-01-01T00:00:00Z"),
            utc("2027-01-01T00:00:00Z"),
            Some(WindowSize::Month),
            chrono_tz::UTC,
        )
        .unwrap();
        assert_eq!(w.len(), 12);
        assert_eq!(w[1].end - w[1].start, Duration::days(28));
    }

    #[test]
    fn too_many_windows_are_refused() {
        let r = windows(
            utc("2000-01-01T00:00:00Z"),
            utc("2026-01-01T00:00:00Z"),
            Some(WindowSize::Hour),
            chrono_tz::UTC,
        );
        assert_eq!(r, Err(WindowError::TooMany));
    }
}
