//! When to try a request again, and how long to wait first.

use std::time::{Duration, SystemTime};

/// Retries with exponential backoff for connection errors and 5xx answers; a 429 waits for as
/// long as its `Retry-After` asks (capped). Deterministic (no jitter), so it can be tested by
/// value rather than by the clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The wait before the first retry; doubled for each later one.
    pub base_delay: Duration,
    /// No backoff wait is longer than this.
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is cut to it.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// What a failed attempt was, as far as retrying goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection failed, timed out or was cut.
    Transport,
    /// The registry answered with this status.
    Status(u16),
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Whether a status is worth another attempt: 429 and the transient 5xx ones.
    pub fn is_retryable_status(status: u16) -> bool {
        matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
    }

    /// When `failure` is worth another attempt: says so (`what` names the request and the
    /// failure), waits, counts the attempt and returns true. False when the failure is final.
    pub(crate) fn wait_to_retry(
        &self,
        attempt: &mut u32,
        failure: Failure,
        retry_after: Option<Duration>,
        what: impl std::fmt::Display,
    ) -> bool {
        let Some(delay) = self.next_delay(*attempt, failure, retry_after) else {
            return false;
        };
        tracing::info!("{what}; retrying in {delay:?}");
        std::thread::sleep(delay);
        *attempt += 1;
        true
    }

    /// How long to wait before attempt number `attempt + 1` (`attempt` counts from 0 for the
    /// first try), or `None` when the failure is final.
    pub(crate) fn next_delay(
        &self,
        attempt: u32,
        failure: Failure,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if attempt + 1 >= self.max_attempts {
            return None;
        }
        match failure {
            Failure::Status(s) if !Self::is_retryable_status(s) => None,
            Failure::Status(429) if retry_after.is_some() => {
                retry_after.map(|d| d.min(self.max_retry_after))
            }
            _ => Some(self.backoff(attempt)),
        }
    }

    /// The plain exponential backoff after attempt `attempt` (0-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let when = SystemTime::from(when);
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_stops_after_the_last_attempt() {
        let p = RetryPolicy::default();
        let t = Failure::Transport;
        assert_eq!(p.next_delay(0, t, None), Some(Duration::from_millis(250)));
        assert_eq!(p.next_delay(1, t, None), Some(Duration::from_millis(500)));
        assert_eq!(p.next_delay(3, t, None), Some(Duration::from_secs(2)));
        assert_eq!(p.next_delay(4, t, None), None, "5 attempts in all");
        assert_eq!(p.backoff(10), Duration::from_secs(8));
        assert_eq!(p.backoff(40), Duration::from_secs(8));
        assert_eq!(RetryPolicy::none().next_delay(0, t, None), None);
    }

    #[test]
    fn waiting_to_retry_counts_attempts_until_the_last() {
        let p = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::ZERO,
            ..RetryPolicy::default()
        };
        let mut attempt = 0;
        assert!(p.wait_to_retry(&mut attempt, Failure::Transport, None, "x"));
        assert!(p.wait_to_retry(&mut attempt, Failure::Status(503), None, "x"));
        assert_eq!(attempt, 2);
        assert!(!p.wait_to_retry(&mut attempt, Failure::Transport, None, "x"));
        assert_eq!(attempt, 2, "a final failure is not counted");
        let mut fresh = 0;
        assert!(!p.wait_to_retry(&mut fresh, Failure::Status(404), None, "x"));
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        let p = RetryPolicy::default();
        for s in [500, 502, 503, 504, 429] {
            assert!(p.next_delay(0, Failure::Status(s), None).is_some(), "{s}");
        }
        for s in [400, 401, 403, 404, 416, 501] {
            assert_eq!(p.next_delay(0, Failure::Status(s), None), None, "{s}");
        }
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_capped() {
        let p = RetryPolicy::default();
        let ask = Some(Duration::from_secs(7));
        assert_eq!(
            p.next_delay(0, Failure::Status(429), ask),
            Some(Duration::from_secs(7))
        );
        let greedy = Some(Duration::from_secs(3600));
        assert_eq!(
            p.next_delay(0, Failure::Status(429), greedy),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            p.next_delay(0, Failure::Status(429), None),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
