//! Retry delays: exponential backoff with jitter.

use std::time::Duration;

/// First retry delay.
pub(crate) const BASE: Duration = Duration::from_millis(250);
/// Longest retry delay.
pub(crate) const CAP: Duration = Duration::from_secs(30);

/// The delay before retry number `attempt` (0 = first): `250 ms * 2^attempt`
/// capped at 30 s, then a random point in its upper half ("equal jitter"),
/// so that clients that failed together do not retry together.
pub(crate) fn backoff_delay(attempt: u32) -> Duration {
    let ceiling = BASE.saturating_mul(1u32 << attempt.min(16)).min(CAP);
    let half = ceiling / 2;
    half + half.mul_f64(random_unit())
}

/// A uniform number in `[0, 1)` from the operating system's generator
/// (the middle of the range if it cannot answer: jitter is then lost for
/// one retry, nothing else).
fn random_unit() -> f64 {
    getrandom::u64().map_or(0.5, |r| (r >> 11) as f64 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_from_250ms_to_30s_with_jitter() {
        for _ in 0..50 {
            let first = backoff_delay(0);
            assert!(
                first >= Duration::from_millis(125) && first <= BASE,
                "{first:?}"
            );
            let later = backoff_delay(3);
            assert!(later >= Duration::from_secs(1) && later <= Duration::from_secs(2));
            let capped = backoff_delay(40);
            assert!(
                capped >= Duration::from_secs(15) && capped <= CAP,
                "{capped:?}"
            );
        }
        let spread: std::collections::HashSet<_> = (0..20).map(|_| backoff_delay(5)).collect();
        assert!(spread.len() > 1, "jitter varies the delay");
    }
}
