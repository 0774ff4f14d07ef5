//! `usage.threshold.crossed`: meters may carry thresholds in config (`thresholds = [1000,
//! 5000]`); each time a partner's meter reaches one within the current month (UTC) the event
//! is sent once. Checked by the dispatcher every `webhooks.thresholds_interval_secs`; the
//! mark and the event are written in one transaction, and the mark's key makes a second
//! instance checking at the same moment write nothing.

use std::collections::{HashMap, HashSet};

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

/// The thresholds not yet marked this window, as their marks write them.
pub fn unmarked(thresholds: &[Decimal], marked: &HashSet<String>) -> Vec<Decimal> {
    thresholds
        .iter()
        .copied()
        .filter(|t| !marked.contains(&t.to_string()))
        .collect()
}

/// The marks this instance knows were written, per partner and meter, for one window.
/// Marks only accumulate within a window, so what is known here never needs reading again;
/// another instance's marks are read once per window (or found by the insert's conflict).
#[derive(Default)]
pub struct Watch {
    known: HashMap<(String, String), (String, HashSet<String>)>,
}

/// Check every partner's meters that have thresholds; returns the events emitted.
///
/// Per partner and meter: the marks are read from the store once per window, the meter's
/// value only while a threshold is still open, and nothing is written unless one was newly
/// reached. A month whose thresholds are all reached costs nothing, and an idle gateway
/// reads one value per partner and meter with an open threshold, whatever the number of
/// thresholds (re-inserting every reached mark on each check kept a core busy).
pub async fn check(
    state: &AppState,
    now: DateTime<Utc>,
    watch: &mut Watch,
) -> anyhow::Result<usize> {
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
    let start = window
        .start
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut emitted = 0;
    for partner in &state.config.partners {
        for mc in &with_thresholds {
            let Some(meter) = state.meters.get(&mc.name) else {
                continue;
            };
            let key = (partner.id.clone(), mc.name.clone());
            let stale = watch.known.get(&key).is_none_or(|(w, _)| *w != start);
            if stale {
                let marked =
                    super::store::marked_thresholds(&state.db, &partner.id, &mc.name, &start)
                        .await?;
                watch
                    .known
                    .insert(key.clone(), (start.clone(), marked.into_iter().collect()));
            }
            let Some((_, known)) = watch.known.get_mut(&key) else {
                continue;
            };
            let open = unmarked(&mc.thresholds, known);
            if open.is_empty() {
                continue;
            }
            let value = crate::metering::store::meter_value(
                &state.db,
                &partner.id,
                meter,
                window,
                None,
                false,
            )
            .await?;
            let hit = reached(&open, value);
            if hit.is_empty() {
                continue;
            }
            let mut tx = state.db.begin().await?;
            for t in &hit {
                let mark = super::store::ThresholdMark {
                    partner_id: &partner.id,
                    meter: &mc.name,
                    window_start: &start,
                    threshold: &t.to_string(),
                    crossed_at_us: to_micros(now),
                };
                // Another instance may have marked it since this one read the marks: the
                // mark's key makes this a no-op, and the event goes out once.
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
            // Known only once committed: a failed transaction leaves them open for the next
            // check.
            known.extend(hit.iter().map(|t| t.to_string()));
        }
    }
    Ok(emitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unmarked_thresholds_are_checked() {
        let t = [
            Decimal::from(1000),
            Decimal::from(5000),
            Decimal::new(25, 1),
        ];
        let marked = ["1000".to_owned(), "2.5".to_owned()].into();
        assert_eq!(unmarked(&t, &marked), vec![Decimal::from(5000)]);
        assert_eq!(unmarked(&t, &Default::default()), t.to_vec());
    }

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
