//! Rate limit for WARN lines on hot paths ("spool full", a failed write during
//! an `ENOSPC` burst): the first line goes out, then at most one per interval,
//! carrying how many were suppressed in between, so a burst of a thousand
//! failures is one line plus a count, not a thousand lines.

use std::time::{Duration, Instant};

/// Interval between two lines of the same kind.
const INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(crate) struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// Returns `Some(suppressed since the last line)` if a line may be logged now.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < INTERVAL)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_passes_then_one_per_interval_with_the_suppressed_count() {
        let mut l = LogLimiter::default();
        let t0 = Instant::now();
        assert_eq!(l.allow_at(t0), Some(0));
        for i in 1..1000 {
            assert_eq!(l.allow_at(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(l.allow_at(t0 + INTERVAL), Some(999));
        assert_eq!(l.allow_at(t0 + INTERVAL + Duration::from_secs(1)), None);
        assert_eq!(l.allow_at(t0 + 3 * INTERVAL), Some(1));
    }
}
