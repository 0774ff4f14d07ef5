//! `usage.threshold.crossed`: meters may carry thresholds in config (`thresholds = [1000,
//! 5000]`); each time a partner's meter reaches one within the current month (UTC) the event
//! is sent once. Checked by the dispatcher every `webhooks.thresholds_interval_secs`; the
//! mark and the event are written in one transaction, and the mark's key makes a second
//! instance checking at the same moment write nothing.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::json;

use crate::metering::window::Window;
use crate::state::AppState;
use crate::time::to_micros;

/// The calendar month (UTC) holding `now`.
pub fn month_of(now: DateTime<Utc>) -> Window {
    let start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    let (y, m) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    let end = Utc
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    Window { start, end }
}

/// The thresholds `value` has reached.
pub fn reached(thresholds: &[Decimal], value: Decimal) -> Vec<Decimal> {
    thresholds.iter().copied().filter(|t| value >= *t).collect()
}

/// Check every partner's meters that have thresholds; returns the events emitted.
pub async fn check(state: &AppState, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let with_thresholds: Vec<_> = state
        .config
        .meters
        .iter()
        .filter(|m| !m.thresholds.is_empty())
        .collect();
    if with_thresholds.is_empty() {
        return Ok(0);
    }
    let window = month_of(now);
    let mut emitted = 0;
    for partner in &state.config.partners {
        for mc in &with_thresholds {
            let Some(meter) = state.meters.get(&mc.name) else {
                continue;
            };
            let value = crate::metering::store::meter_value(
                &state.db,
                &partner.id,
                meter,
                window,
                None,
                false,
            )
            .await?;
            let hit = reached(&mc.thresholds, value);
            if hit.is_empty() {
                continue;
            }
            let mut tx = state.db.begin().await?;
            for t in hit {
                let start = window
                    .start
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let mark = super::store::ThresholdMark {
                    partner_id: &partner.id,
                    meter: &mc.name,
                    window_start: &start,
                    threshold: &t.to_string(),
                    crossed_at_us: to_micros(now),
                };
                let first = super::store::mark_threshold(&mut tx, &mark).await?;
                if first {
                    let data = json!({
                        "partner": partner.id,
                        "meter": mc.name,
                        "threshold": t.to_string(),
                        "value": value.to_string(),
                        "window_start": crate::time::rfc3339(window.start),
                        "window_end": crate::time::rfc3339(window.end),
                    });
                    super::emit(
                        &mut tx,
                        Some(&partner.id),
                        super::events::THRESHOLD_CROSSED,
                        &data,
                        now,
                    )
                    .await?;
                    emitted += 1;
                }
            }
            tx.commit().await?;
        }
    }
    Ok(emitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_wrap_the_year() {
        let w = month_of(Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap());
        assert_eq!(w.start, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(w.end, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
    }

    #[test]
    fn a_threshold_is_reached_at_equality() {
        let t = [Decimal::from(10), Decimal::from(100)];
        assert_eq!(reached(&t, Decimal::from(9)), Vec::<Decimal>::new());
        assert_eq!(reached(&t, Decimal::from(10)), vec![Decimal::from(10)]);
        assert_eq!(reached(&t, Decimal::from(1000)).len(), 2);
    }
}
