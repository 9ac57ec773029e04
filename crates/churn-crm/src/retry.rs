//! Retry policy: which responses are retried, and how long to wait between attempts.
//!
//! - 2xx → delivered.
//! - 408, 429 and 5xx, connect errors, timeouts and broken connections → retried with
//!   exponential backoff and jitter; a `Retry-After: <seconds>` header raises the wait to at least
//!   that long, but never above [`Backoff::max_retry_after`] (`crm.max_retry_after_ms`), so an
//!   absurd value (`18446744073709551615`, or more digits than fit in a `u64`) can neither
//!   overflow the time arithmetic nor park a lane for years.
//! - Any other status (3xx — redirects are not followed — and 4xx) → permanent failure: the
//!   alert is dead-lettered at once.
//!
//! Retries stop after `max_attempts` attempts, or when the next attempt would start later than
//! `max_elapsed` after the first one; the alert is then dead-lettered. Either limit can be off
//! (`crm.max_attempts = 0`, `crm.max_elapsed_ms = 0`); with both off a retriable failure is
//! retried until it is delivered or the forwarder stops (permanent failures are still
//! dead-lettered at once).

use std::time::Duration;

/// What to do after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: done.
    Delivered,
    /// Transient: try again, waiting at least `after` when the server said so (`Retry-After`).
    Retry { after: Option<Duration> },
    /// The CRM refused the alert; retrying will not help.
    Permanent,
}

/// Classify an HTTP status (and its `Retry-After` header value, if any).
pub fn classify_status(status: u16, retry_after: Option<&str>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry {
            after: retry_after.and_then(parse_retry_after),
        },
        _ => Verdict::Permanent,
    }
}

/// Transport failures (connect refused/reset, DNS, timeout, connection closed mid-response) are
/// always retried: the request may not have reached the CRM, and `ce-id` makes a repeat safe.
pub fn classify_transport_error() -> Verdict {
    Verdict::Retry { after: None }
}

/// `Retry-After` in delay-seconds form (`1*DIGIT`). A value too large for a `u64` saturates to
/// [`Duration::MAX`] ("very long"; [`Backoff::next`] caps it). The HTTP-date form is not used by
/// webhooks in practice and is ignored (the backoff applies), as is anything else that is not
/// digits.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().map_or(Duration::MAX, Duration::from_secs))
}

/// Exponential backoff with "equal jitter": before retry `n` (1 = the first retry) the base is
/// `min(max, initial × 2^(n−1))` and the wait is uniform in `[base/2, base]`, so concurrent
/// forwarders spread out but never retry immediately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// The longest wait a `Retry-After` header can ask for (`crm.max_retry_after_ms`); longer
    /// values are cut to this. `Duration::ZERO` = `Retry-After` never raises the backoff.
    pub max_retry_after: Duration,
}

impl Backoff {
    /// The un-jittered wait before retry `retry` (1-based).
    pub fn base(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let factor = 1u32 << exp;
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry `retry` for a uniform random `jitter` in `[0, 1)`.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let base = self.base(retry);
        let half = base / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// [`Backoff::delay`] with a random jitter, raised to `retry_after` (cut to
    /// `max_retry_after`) when given.
    pub fn next(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let d = self.delay(retry, rand::random::<f64>());
        retry_after.map_or(d, |r| r.min(self.max_retry_after).max(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn status_classification() {
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(classify_status(s, None), Verdict::Delivered, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(
                classify_status(s, None),
                Verdict::Retry { after: None },
                "{s}"
            );
        }
        for s in [100, 301, 302, 304, 400, 401, 403, 404, 409, 410, 413, 422] {
            assert_eq!(classify_status(s, None), Verdict::Permanent, "{s}");
        }
        assert_eq!(
            classify_status(429, Some(" 7 ")),
            Verdict::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify_status(503, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Verdict::Retry { after: None }
        );
        // Retry-After on a permanent failure does not make it retryable.
        assert_eq!(classify_status(400, Some("1")), Verdict::Permanent);
        assert_eq!(classify_transport_error(), Verdict::Retry { after: None });
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("1.5"), None);
        assert_eq!(parse_retry_after(""), None);
        assert_eq!(
            parse_retry_after("+5"),
            None,
            "delay-seconds is digits only"
        );
        assert_eq!(
            parse_retry_after("18446744073709551615"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999"),
            Some(Duration::MAX),
            "past u64::MAX saturates instead of being ignored"
        );
    }

    #[test]
    fn huge_retry_after_is_cut_to_max_retry_after() {
        let b = Backoff {
            initial: MS(100),
            max: MS(1000),
            max_retry_after: MS(5000),
        };
        for v in ["18446744073709551615", "99999999999999999999999", "3600"] {
            assert_eq!(b.next(1, parse_retry_after(v)), MS(5000), "{v}");
        }
        // Below the cap Retry-After applies as is; a zero cap leaves the backoff alone.
        assert_eq!(b.next(1, Some(MS(4000))), MS(4000));
        let zero = Backoff {
            max_retry_after: Duration::ZERO,
            ..b
        };
        let d = zero.next(1, Some(Duration::MAX));
        assert!(d >= MS(50) && d <= MS(100), "{d:?}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            initial: MS(500),
            max: MS(30_000),
            max_retry_after: MS(600_000),
        };
        let bases: Vec<u64> = (1..=9).map(|n| b.base(n).as_millis() as u64).collect();
        assert_eq!(
            bases,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        // No overflow for absurd retry numbers.
        assert_eq!(b.base(u32::MAX), MS(30_000));
        assert_eq!(b.base(0), MS(500));
    }

    #[test]
    fn jitter_stays_within_half_to_full_base() {
        let b = Backoff {
            initial: MS(100),
            max: MS(1000),
            max_retry_after: MS(600_000),
        };
        assert_eq!(b.delay(1, 0.0), MS(50));
        assert_eq!(b.delay(1, 1.0), MS(100));
        assert_eq!(b.delay(3, 0.5), MS(300));
        assert_eq!(b.delay(10, 0.0), MS(500));
        assert_eq!(b.delay(10, 7.0), MS(1000), "jitter is clamped");
        for n in 1..12 {
            for _ in 0..50 {
                let d = b.next(n, None);
                assert!(d >= b.base(n) / 2 && d <= b.base(n), "{n}: {d:?}");
            }
        }
    }

    #[test]
    fn retry_after_raises_the_wait_but_never_lowers_it() {
        let b = Backoff {
            initial: MS(100),
            max: MS(1000),
            max_retry_after: MS(600_000),
        };
        assert_eq!(
            b.next(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        let d = b.next(4, Some(Duration::ZERO));
        assert!(d >= MS(400), "{d:?}");
    }
}
