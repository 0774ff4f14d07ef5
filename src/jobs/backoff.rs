//! Retry delays (pure).

use std::time::Duration;

/// Delay before retry number `attempt` (1 = after the first failure): `base * 2^(attempt-1)`
/// capped at `max`, then "equal jitter": half fixed, half random (`jitter` in `[0, 1)`), so
/// retries from many jobs spread out but still grow.
pub fn retry_delay(attempt: i32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempt.clamp(1, 31) - 1;
    let raw = base.saturating_mul(1u32 << exp.min(30));
    let capped = raw.min(max);
    let half = capped / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_and_are_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(retry_delay(1, base, max, 0.0), Duration::from_millis(500));
        assert_eq!(retry_delay(3, base, max, 0.0), Duration::from_secs(2));
        assert_eq!(
            retry_delay(3, base, max, 0.999_999),
            Duration::from_micros(3_999_998)
        );
        assert_eq!(retry_delay(30, base, max, 0.0), Duration::from_secs(30));
        assert!(retry_delay(100, base, max, 1.0) <= max);
    }
}
