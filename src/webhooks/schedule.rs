//! What an attempt's result means for the delivery: done, retry when, or give up; and what
//! it means for the endpoint. Pure (the spec's "Deliverability and reliability" and
//! "Delivery success and failure" sections).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How an attempt ended, as far as the next step is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// An HTTP status came back, with the `Retry-After` header if any.
    Status {
        code: u16,
        retry_after: Option<String>,
    },
    /// No status: connection refused, reset, timeout, or refused by the address policy.
    NoResponse,
}

/// What to do with the delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Try again at this instant.
    Retry(DateTime<Utc>),
    /// The schedule is spent: the delivery failed for good (a replay can try again).
    GiveUp,
    /// 410 Gone: the endpoint asked to hear no more; it is disabled, the delivery waits for
    /// it to be re-enabled.
    EndpointGone,
}

/// The retry policy from config.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Delays after the 1st, 2nd, ... failed attempt; its length + 1 is the attempt limit.
    pub delays: Vec<Duration>,
    /// Each delay is moved by up to this fraction either way (0.2: 80% to 120%).
    pub jitter: f64,
    /// Upper bound on a receiver's `Retry-After`.
    pub retry_after_max: Duration,
}

impl Policy {
    pub fn max_attempts(&self) -> i32 {
        i32::try_from(self.delays.len() + 1).unwrap_or(i32::MAX)
    }

    /// The next step after attempt number `attempt` (1-based) ended with `response`.
    /// `unit` in [0, 1) is the random draw for the jitter.
    pub fn next(&self, attempt: i32, response: &Response, now: DateTime<Utc>, unit: f64) -> Next {
        let retry_after = match response {
            Response::Status { code, .. } if (200..300).contains(code) => return Next::Delivered,
            Response::Status { code: 410, .. } => return Next::EndpointGone,
            Response::Status {
                code: 429 | 503,
                retry_after: Some(v),
            } => parse_retry_after(v, now),
            _ => None,
        };
        if attempt >= self.max_attempts() {
            return Next::GiveUp;
        }
        let delay = match retry_after {
            // The receiver said when; bounded so a huge value cannot park a delivery.
            Some(d) => d.min(self.retry_after_max),
            None => {
                let idx = usize::try_from(attempt.max(1) - 1).unwrap_or(0);
                let base = self.delays.get(idx).copied().unwrap_or_default();
                let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
                base.mul_f64(factor.max(0.0))
            }
        };
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
        Next::Retry(now + delay)
    }
}

/// `Retry-After`: delay-seconds, or an HTTP date (RFC 9110 section 10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or_default())
}

/// Whether a failure keeps counting towards disabling the endpoint: any attempt that did
/// not succeed. A success resets the clock.
pub fn should_disable(failing_since: DateTime<Utc>, now: DateTime<Utc>, window: Duration) -> bool {
    (now - failing_since)
        .to_std()
        .is_ok_and(|failing| failing >= window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy() -> Policy {
        Policy {
            delays: [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            jitter: 0.2,
            retry_after_max: Duration::from_secs(3600),
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
    }

    fn status(code: u16) -> Response {
        Response::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn only_2xx_is_delivered() {
        let p = policy();
        assert_eq!(p.next(1, &status(200), now(), 0.5), Next::Delivered);
        assert_eq!(p.next(1, &status(204), now(), 0.5), Next::Delivered);
        for code in [301, 302, 400, 404, 500, 502] {
            assert!(
                matches!(p.next(1, &status(code), now(), 0.5), Next::Retry(_)),
                "{code}"
            );
        }
        assert!(matches!(
            p.next(1, &Response::NoResponse, now(), 0.5),
            Next::Retry(_)
        ));
    }

    #[test]
    fn the_schedule_spans_the_documented_delays_with_bounded_jitter() {
        let p = policy();
        assert_eq!(p.max_attempts(), 10);
        let mid = |attempt| match p.next(attempt, &status(500), now(), 0.5) {
            Next::Retry(at) => (at - now()).num_seconds(),
            other => panic!("{other:?}"),
        };
        let delays: Vec<i64> = (1..=9).map(mid).collect();
        assert_eq!(
            delays,
            [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
        );
        let low = p.next(2, &status(500), now(), 0.0);
        let high = p.next(2, &status(500), now(), 0.999_999);
        assert_eq!(low, Next::Retry(now() + chrono::Duration::seconds(240)));
        assert!(matches!(high, Next::Retry(at) if (at - now()).num_seconds() == 359));
        assert_eq!(p.next(10, &status(500), now(), 0.5), Next::GiveUp);
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_and_bounded() {
        let p = policy();
        let r = |code, v: &str| Response::Status {
            code,
            retry_after: Some(v.into()),
        };
        assert_eq!(
            p.next(1, &r(429, "7"), now(), 0.5),
            Next::Retry(now() + chrono::Duration::seconds(7))
        );
        assert_eq!(
            p.next(1, &r(503, "Tue, 01 Dec 2026 12:00:30 GMT"), now(), 0.5),
            Next::Retry(now() + chrono::Duration::seconds(30))
        );
        assert_eq!(
            p.next(1, &r(429, "999999"), now(), 0.5),
            Next::Retry(now() + chrono::Duration::seconds(3600))
        );
        // Elsewhere the header is not a promise: the schedule applies.
        assert_eq!(
            p.next(1, &r(500, "7"), now(), 0.5),
            Next::Retry(now() + chrono::Duration::seconds(5))
        );
        // A garbled value falls back to the schedule.
        assert_eq!(
            p.next(1, &r(429, "soon"), now(), 0.5),
            Next::Retry(now() + chrono::Duration::seconds(5))
        );
    }

    #[test]
    fn gone_disables_at_once_whatever_the_attempt() {
        assert_eq!(
            policy().next(1, &status(410), now(), 0.5),
            Next::EndpointGone
        );
        assert_eq!(
            policy().next(10, &status(410), now(), 0.5),
            Next::EndpointGone
        );
    }

    #[test]
    fn an_endpoint_is_disabled_after_failing_for_the_whole_window() {
        let w = Duration::from_secs(5 * 86400);
        assert!(!should_disable(now(), now() + chrono::Duration::days(4), w));
        assert!(should_disable(now(), now() + chrono::Duration::days(5), w));
    }
}
