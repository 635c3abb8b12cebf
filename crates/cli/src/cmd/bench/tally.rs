//! What a subscriber counts: which sequence numbers arrived (to find missing and
//! duplicate messages), end-to-end latencies, and the receive window.

use std::time::Instant;

use super::payload::{Stamp, now_ns};

/// One subscriber's count. Pure bookkeeping, no I/O.
#[derive(Debug, Default)]
pub struct Tally {
    /// One bit per (publisher, seq) seen.
    seen: Vec<Vec<u64>>,
    /// Distinct bench messages received.
    pub distinct: u64,
    /// Bench messages received again.
    pub duplicates: u64,
    /// Messages without a bench stamp.
    pub foreign: u64,
    /// Latencies in microseconds, for stamped messages.
    pub latencies_us: Vec<u64>,
    /// First and last receipt.
    pub first: Option<Instant>,
    /// Last receipt.
    pub last: Option<Instant>,
    /// Wall-clock time of the first and last receipt (ns since the Unix epoch).
    pub first_ns: u64,
    /// See `first_ns`.
    pub last_ns: u64,
}

impl Tally {
    /// Count one payload (or a foreign message when `stamp` is `None`).
    pub fn record(&mut self, stamp: Option<Stamp>) {
        let now = Instant::now();
        let now_ns = now_ns();
        if self.first.is_none() {
            self.first = Some(now);
            self.first_ns = now_ns;
        }
        self.last = Some(now);
        self.last_ns = now_ns;
        let Some(s) = stamp else {
            self.foreign += 1;
            return;
        };
        let p = s.publisher as usize;
        if self.seen.len() <= p {
            self.seen.resize_with(p + 1, Vec::new);
        }
        let words = &mut self.seen[p];
        let (w, bit) = ((s.seq / 64) as usize, 1u64 << (s.seq % 64));
        if words.len() <= w {
            words.resize(w + 1, 0);
        }
        if words[w] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        words[w] |= bit;
        self.distinct += 1;
        if s.sent_ns > 0 {
            self.latencies_us
                .push(now_ns.saturating_sub(s.sent_ns) / 1_000);
        }
    }

    /// How many of `0..sent[p]` for each publisher `p` never arrived.
    pub fn missing(&self, sent: &[u64]) -> u64 {
        sent.iter()
            .enumerate()
            .map(|(p, &n)| n - self.seen_below(p, n))
            .sum()
    }

    /// Distinct sequence numbers below `n` seen from publisher `p`.
    fn seen_below(&self, p: usize, n: u64) -> u64 {
        let Some(words) = self.seen.get(p) else {
            return 0;
        };
        let full = (n / 64) as usize;
        let mut count: u64 = words
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        if !n.is_multiple_of(64)
            && let Some(w) = words.get(full)
        {
            count += u64::from((w & ((1u64 << (n % 64)) - 1)).count_ones());
        }
        count
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (sorted in place); `None` when empty.
    pub fn of(samples: &mut [u64]) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = (q * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        Some(Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: samples[samples.len() - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(publisher: u32, seq: u64) -> Option<Stamp> {
        Some(Stamp {
            publisher,
            seq,
            sent_ns: 0,
        })
    }

    #[test]
    fn missing_and_duplicate_messages_are_counted_per_publisher() {
        let mut t = Tally::default();
        for seq in [0, 1, 2, 2, 5, 64, 65] {
            t.record(stamp(0, seq));
        }
        t.record(stamp(1, 0));
        t.record(None);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.foreign, 1);
        assert_eq!(t.distinct, 7);
        // Publisher 0 sent 0..66: 3, 4 and 6..=63 are missing; publisher 1 sent 0..2.
        assert_eq!(t.missing(&[66, 2]), 2 + 58 + 1);
        // Messages beyond what was sent do not hide missing ones.
        assert_eq!(t.missing(&[3]), 0);
        assert_eq!(t.missing(&[0, 0, 4]), 4);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let p = Percentiles::of(&mut v).unwrap();
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50, 90, 99, 100));
        assert!(Percentiles::of(&mut []).is_none());
    }
}
