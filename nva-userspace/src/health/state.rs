//! The detection state machine of one probe, without I/O: time is passed in.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(super) struct Detector {
    detect: Duration,
    hold_down: Duration,
    healthy: bool,
    since: Instant,
    last_success: Instant,
    /// While down: when the first probe of the current run of successful probes was sent.
    streak: Option<Instant>,
}

impl Detector {
    /// A detector that starts up at `now`, as if a probe had just succeeded.
    pub(super) fn new(
        now: Instant,
        interval: Duration,
        multiplier: u32,
        hold_down: Duration,
    ) -> Self {
        Detector {
            detect: interval.saturating_mul(multiplier.max(1)),
            hold_down,
            healthy: true,
            since: now,
            last_success: now,
            streak: None,
        }
    }

    pub(super) fn healthy(&self) -> bool {
        self.healthy
    }

    /// While up: when the target is declared down unless a probe succeeds before.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.healthy.then(|| self.last_success + self.detect)
    }

    /// A probe sent at `sent` succeeded at `now`. Returns the new state on a change (only
    /// ever `true`).
    ///
    /// A run of successes counts from the sending of its first probe, so with a hold-down
    /// of k intervals the target goes up on the reply to the k-th probe after the first
    /// successful one, whatever the round-trip time and timer jitter.
    pub(super) fn success(&mut self, sent: Instant, now: Instant) -> Option<bool> {
        self.last_success = self.last_success.max(now);
        if self.healthy {
            return None;
        }
        let start = *self.streak.get_or_insert(sent.min(now));
        if now.saturating_duration_since(start) >= self.hold_down {
            self.healthy = true;
            self.since = now;
            self.streak = None;
            return Some(true);
        }
        None
    }

    /// A probe failed (lost, refused, not sent): ends a run of successes.
    pub(super) fn failure(&mut self) {
        self.streak = None;
    }

    /// The deadline timer fired at `now`. Returns the new state on a change (only ever
    /// `false`).
    pub(super) fn expire(&mut self, now: Instant) -> Option<bool> {
        if self.healthy && now >= self.last_success + self.detect {
            self.healthy = false;
            self.since = now;
            self.streak = None;
            return Some(false);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn det(t0: Instant, hold_ms: u32) -> Detector {
        Detector::new(t0, 100 * MS, 3, hold_ms * MS)
    }

    #[test]
    fn starts_up_and_goes_down_after_detection_time() {
        let t0 = Instant::now();
        let mut d = det(t0, 0);
        assert!(d.healthy());
        assert_eq!(d.deadline(), Some(t0 + 300 * MS));
        assert_eq!(d.expire(t0 + 299 * MS), None);
        assert_eq!(d.expire(t0 + 300 * MS), Some(false));
        assert_eq!(d.deadline(), None);
        assert_eq!(d.expire(t0 + 400 * MS), None, "reported once");
    }

    #[test]
    fn success_moves_the_deadline() {
        let t0 = Instant::now();
        let mut d = det(t0, 0);
        for i in 1..10 {
            assert_eq!(d.success(t0 + i * 100 * MS, t0 + i * 100 * MS), None);
        }
        assert_eq!(d.deadline(), Some(t0 + 1200 * MS));
        assert_eq!(d.expire(t0 + 1199 * MS), None);
        // Failures alone do not take it down before the deadline.
        d.failure();
        d.failure();
        assert!(d.healthy());
        assert_eq!(d.expire(t0 + 1200 * MS), Some(false));
    }

    #[test]
    fn zero_hold_down_is_up_on_first_success() {
        let t0 = Instant::now();
        let mut d = det(t0, 0);
        d.expire(t0 + 300 * MS);
        assert_eq!(d.success(t0 + 350 * MS, t0 + 350 * MS), Some(true));
        assert_eq!(d.deadline(), Some(t0 + 650 * MS));
    }

    #[test]
    fn hold_down_needs_continuous_success() {
        let t0 = Instant::now();
        let mut d = det(t0, 500);
        d.expire(t0 + 300 * MS);
        let s = t0 + 1000 * MS;
        for i in 0..5 {
            assert_eq!(
                d.success(s + i * 100 * MS, s + i * 100 * MS),
                None,
                "probe {i}"
            );
        }
        assert_eq!(d.success(s + 500 * MS, s + 500 * MS), Some(true));

        // Down again; a failure in the middle restarts the streak.
        let t1 = s + 2000 * MS;
        d.expire(t1);
        assert!(!d.healthy());
        for i in 1..=4 {
            assert_eq!(d.success(t1 + i * 100 * MS, t1 + i * 100 * MS), None);
        }
        d.failure();
        for i in 6..=10 {
            assert_eq!(
                d.success(t1 + i * 100 * MS, t1 + i * 100 * MS),
                None,
                "probe {i}"
            );
        }
        assert_eq!(d.success(t1 + 1100 * MS, t1 + 1100 * MS), Some(true));
    }

    #[test]
    fn streak_counts_from_the_first_probe_sent() {
        let t0 = Instant::now();
        let mut d = det(t0, 500);
        d.expire(t0 + 300 * MS);
        // Probes sent every 100 ms, answered after 30 ms (jittery timers do not matter).
        let s = t0 + 1000 * MS;
        for i in 0..5 {
            assert_eq!(
                d.success(s + i * 100 * MS, s + i * 100 * MS + 30 * MS),
                None,
                "probe {i}"
            );
        }
        // The 5th probe after the first success is answered 500 ms + RTT after the first was
        // sent, even when its timer fired a little early.
        assert_eq!(d.success(s + 499 * MS, s + 529 * MS), Some(true));
    }

    #[test]
    fn streak_is_measured_to_the_reply() {
        let t0 = Instant::now();
        let mut d = det(t0, 500);
        d.expire(t0 + 300 * MS);
        let s = t0 + 1000 * MS;
        assert_eq!(d.success(s, s + 30 * MS), None);
        assert_eq!(d.success(s + 470 * MS, s + 499 * MS), None);
        assert_eq!(d.success(s + 470 * MS, s + 500 * MS), Some(true));
    }

    #[test]
    fn flapping_faster_than_hold_down_stays_down() {
        let t0 = Instant::now();
        let mut d = det(t0, 1000);
        d.expire(t0 + 300 * MS);
        let mut t = t0 + 400 * MS;
        for _ in 0..20 {
            for _ in 0..8 {
                t += 100 * MS;
                assert_eq!(d.success(t, t), None);
            }
            t += 100 * MS;
            d.failure();
        }
        assert!(!d.healthy());
    }
}
