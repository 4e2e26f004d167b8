//! The collector-health state machine: healthy → unhealthy on a failed read, back to healthy on
//! the next good read, with an exponential retry backoff (1, 2, 4 … 30 s) during which the
//! runtime takes no sample at all.
//!
//! Time is the *session clock* (elapsed time since the session started) passed in by the
//! caller. A live tracker passes real elapsed time; the accelerated soak passes the equivalent
//! time of the sample (`index × interval`), so a 1 s backoff skips ten samples at 0.1 s, just as
//! it would in a real 24 h run, instead of a whole second of accelerated samples.

use std::time::Duration;

/// First retry delay after a failure.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Growth factor of the retry delay per consecutive failure.
pub const BACKOFF_FACTOR: u32 = 2;
/// Largest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Collector health status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Full telemetry.
    Healthy,
    /// Partial telemetry (some fields missing); reserved for collectors with partial reads.
    Degraded,
    /// No telemetry: the collector's core read failed; sampling waits for the retry time.
    Unhealthy,
}

impl HealthStatus {
    /// The status as written to records and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// Retry delay after `consecutive_failures` failures in a row: 0 for none, otherwise
/// `min(cap, initial × factor^(n−1))`.
pub fn retry_delay(consecutive_failures: u32) -> Duration {
    if consecutive_failures == 0 {
        return Duration::ZERO;
    }
    let exponent = (consecutive_failures - 1).min(16);
    BACKOFF_INITIAL
        .saturating_mul(BACKOFF_FACTOR.saturating_pow(exponent))
        .min(BACKOFF_CAP)
}

/// A borrowed view of the health state, written into every record's metadata.
#[derive(Debug, Clone, Copy)]
pub struct HealthSnapshot<'a> {
    /// Current status.
    pub status: HealthStatus,
    /// Whether telemetry is partial or paused.
    pub telemetry_partial: bool,
    /// Last collector error, if any.
    pub last_error: Option<&'a str>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Session-clock second at which the next read is tried, while backing off.
    pub next_retry_s: Option<f64>,
}

impl HealthSnapshot<'static> {
    /// The snapshot of a healthy collector.
    pub fn healthy() -> Self {
        HealthSnapshot {
            status: HealthStatus::Healthy,
            telemetry_partial: false,
            last_error: None,
            consecutive_failures: 0,
            next_retry_s: None,
        }
    }
}

/// A transition the caller must record as an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Left healthy: emit `collector_degraded`.
    Degraded {
        /// Status left.
        from: HealthStatus,
        /// The read error.
        reason: String,
        /// Delay before the next read.
        retry_delay: Duration,
    },
    /// Back to healthy: emit `collector_recovered`.
    Recovered {
        /// Status left.
        from: HealthStatus,
        /// The last error before recovery.
        previous_error: String,
        /// Failures in a row before recovery.
        previous_failure_count: u32,
    },
}

/// Health of one collector.
#[derive(Debug, Clone)]
pub struct CollectorHealth {
    status: HealthStatus,
    consecutive_failures: u32,
    last_error: Option<String>,
    next_retry_at: Option<Duration>,
    failure_event_count: u64,
}

impl Default for CollectorHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl CollectorHealth {
    /// A healthy collector.
    pub fn new() -> Self {
        CollectorHealth {
            status: HealthStatus::Healthy,
            consecutive_failures: 0,
            last_error: None,
            next_retry_at: None,
            failure_event_count: 0,
        }
    }

    /// Whether a read may be attempted at session time `now` (false while backing off).
    pub fn may_read(&self, now: Duration) -> bool {
        self.next_retry_at.is_none_or(|at| now >= at)
    }

    /// Records a failed read at `now`; returns the transition to emit when leaving healthy.
    pub fn record_failure(&mut self, now: Duration, error: &str) -> Option<Transition> {
        let from = self.status;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let delay = retry_delay(self.consecutive_failures);
        self.next_retry_at = Some(now + delay);
        self.status = HealthStatus::Unhealthy;
        self.last_error = Some(error.to_owned());
        (from == HealthStatus::Healthy).then(|| {
            self.failure_event_count += 1;
            Transition::Degraded {
                from,
                reason: error.to_owned(),
                retry_delay: delay,
            }
        })
    }

    /// Records a good read; returns the transition to emit when coming back to healthy.
    pub fn record_success(&mut self) -> Option<Transition> {
        let from = self.status;
        let previous_failure_count = self.consecutive_failures;
        self.status = HealthStatus::Healthy;
        self.consecutive_failures = 0;
        self.next_retry_at = None;
        let previous_error = self.last_error.take();
        (from != HealthStatus::Healthy).then(|| {
            self.failure_event_count += 1;
            Transition::Recovered {
                from,
                previous_error: previous_error.unwrap_or_default(),
                previous_failure_count,
            }
        })
    }

    /// Current status.
    pub fn status(&self) -> HealthStatus {
        self.status
    }

    /// Degraded and recovered transitions so far (one outage that recovers counts 2).
    pub fn failure_event_count(&self) -> u64 {
        self.failure_event_count
    }

    /// Failures in a row.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Last error, while unhealthy.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Borrowed view for records and statistics.
    pub fn snapshot(&self) -> HealthSnapshot<'_> {
        HealthSnapshot {
            status: self.status,
            telemetry_partial: self.status != HealthStatus::Healthy,
            last_error: self.last_error.as_deref(),
            consecutive_failures: self.consecutive_failures,
            next_retry_s: self.next_retry_at.map(|d| d.as_secs_f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let delays: Vec<u64> = (0..8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(retry_delay(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn one_outage_counts_two_transitions_and_blocks_reads_while_backing_off() {
        let mut h = CollectorHealth::new();
        let t0 = Duration::from_secs(10);
        assert!(matches!(
            h.record_failure(t0, "EIO"),
            Some(Transition::Degraded {
                from: HealthStatus::Healthy,
                ..
            })
        ));
        assert!(!h.may_read(t0 + Duration::from_millis(999)));
        assert!(h.may_read(t0 + Duration::from_secs(1)));
        // A second failure while unhealthy: no new transition, longer backoff.
        assert_eq!(h.record_failure(t0 + Duration::from_secs(1), "EIO"), None);
        assert!(!h.may_read(t0 + Duration::from_millis(2999)));
        assert!(h.may_read(t0 + Duration::from_secs(3)));
        match h.record_success() {
            Some(Transition::Recovered {
                previous_failure_count,
                previous_error,
                ..
            }) => {
                assert_eq!(previous_failure_count, 2);
                assert_eq!(previous_error, "EIO");
            }
            other => panic!("expected recovery, got {other:?}"),
        }
        assert_eq!(h.failure_event_count(), 2);
        assert_eq!(h.record_success(), None);
        assert_eq!(h.status(), HealthStatus::Healthy);
        assert!(h.snapshot().last_error.is_none());
    }
}
