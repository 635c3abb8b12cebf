//! In-memory bookkeeping shared by appenders, the writer thread and the reader,
//! kept under one mutex: which ids are visible and acknowledged, how many bytes
//! the spool holds, the live segments, the recent-record cache and the queue of
//! work for the writer. Pure: no I/O happens here.

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::SpoolError;

/// A segment file and the ids and bytes it holds.
#[derive(Debug, Clone)]
pub(crate) struct SegMeta {
    /// Id of its first record.
    pub base: u64,
    /// One past the id of its last visible record.
    pub end: u64,
    /// Bytes of valid, visible data (header included).
    pub len: u64,
    pub path: PathBuf,
    /// Damaged byte ranges recovery skipped inside `..len`, in file order;
    /// the reader steps over them. Empty for every segment written since open.
    pub holes: Vec<Hole>,
}

/// Damaged bytes inside a segment that recovery kept the records around.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hole {
    /// First damaged byte.
    pub start: u64,
    /// Where the next intact record starts.
    pub end: u64,
    /// Id of that record.
    pub next_id: u64,
}

/// An append waiting for the writer.
#[derive(Debug)]
pub(crate) struct Job {
    pub payloads: Vec<Bytes>,
    /// On-disk bytes reserved for it.
    pub bytes: u64,
    pub reply: oneshot::Sender<Result<u64, SpoolError>>,
}

/// Work for the writer thread.
#[derive(Debug)]
pub(crate) enum Work {
    Append(Job),
    /// Write the checkpoint and delete fully acknowledged segments now.
    Checkpoint(oneshot::Sender<Result<(), SpoolError>>),
}

/// Monotonic counters reported by `stats`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub appended: u64,
    pub acked: u64,
    pub dropped: u64,
    pub rejected: u64,
    pub blocked: u64,
}

#[derive(Debug)]
pub(crate) struct State {
    /// Every id below this has been written (and synced, per policy) and may be read.
    pub next_visible: u64,
    /// Every id below this is acknowledged (or dropped).
    pub ack_point: u64,
    /// Acknowledged (or dropped) ids at or above `ack_point`.
    pub acked_above: BTreeSet<u64>,
    /// One past the highest id a reader handed out. Unsettled records below
    /// it are leased: the consumer holds them and is about to deliver them,
    /// so `DropOldest` never drops them.
    pub handed_out: u64,
    /// On-disk size of each record in `ack_point..next_visible`.
    sizes: VecDeque<u32>,
    /// Sum of `sizes`: bytes held from the ack point on.
    pub retained_bytes: u64,
    /// Bytes reserved by appends not yet written.
    pub reserved_bytes: u64,
    pub segments: Vec<SegMeta>,
    cache: VecDeque<(u64, Bytes)>,
    cache_bytes: u64,
    memory_limit: u64,
    pub queue: Vec<Work>,
    pub closing: bool,
    pub stopped: bool,
    pub poisoned: Option<String>,
    pub close_error: Option<SpoolError>,
    pub counters: Counters,
    /// Bumped on every acknowledgement or drop; the writer checkpoints when it moved.
    pub ack_gen: u64,
    /// Test hook: stop the writer like a crash, without the final sync and checkpoint.
    pub abandon: bool,
}

impl State {
    pub(crate) fn new(
        ack_point: u64,
        next_visible: u64,
        acked_above: BTreeSet<u64>,
        sizes: VecDeque<u32>,
        segments: Vec<SegMeta>,
        memory_limit: u64,
    ) -> State {
        debug_assert_eq!(sizes.len() as u64, next_visible - ack_point);
        let retained_bytes = sizes.iter().map(|&s| u64::from(s)).sum();
        let mut st = State {
            next_visible,
            ack_point,
            acked_above,
            handed_out: ack_point,
            sizes,
            retained_bytes,
            reserved_bytes: 0,
            segments,
            cache: VecDeque::new(),
            cache_bytes: 0,
            memory_limit,
            queue: Vec::new(),
            closing: false,
            stopped: false,
            poisoned: None,
            close_error: None,
            counters: Counters::default(),
            ack_gen: 0,
            abandon: false,
        };
        st.advance();
        st
    }

    /// Moves the ack point over contiguous acknowledged ids. Returns whether it moved.
    fn advance(&mut self) -> bool {
        let start = self.ack_point;
        while self.acked_above.remove(&self.ack_point) {
            self.pass_ack_point();
        }
        self.ack_point != start
    }

    fn pass_ack_point(&mut self) {
        if let Some(s) = self.sizes.pop_front() {
            self.retained_bytes -= u64::from(s);
        }
        self.ack_point += 1;
        while let Some(&(id, ref b)) = self.cache.front() {
            if id >= self.ack_point {
                break;
            }
            self.cache_bytes -= b.len() as u64;
            self.cache.pop_front();
        }
    }

    /// Records an acknowledgement. Returns whether the ack point moved (space freed).
    /// Ids already acknowledged, dropped, or never handed out are ignored.
    pub(crate) fn ack(&mut self, id: u64) -> bool {
        if id < self.ack_point || id >= self.next_visible || !self.acked_above.insert(id) {
            return false;
        }
        self.counters.acked += 1;
        self.ack_gen += 1;
        self.advance()
    }

    /// True if the reader must not hand out `id` (acknowledged or dropped).
    pub(crate) fn is_settled(&self, id: u64) -> bool {
        id < self.ack_point || self.acked_above.contains(&id)
    }

    /// The first id at or after `from` that still awaits delivery (may be `next_visible`).
    pub(crate) fn next_unsettled(&self, from: u64) -> u64 {
        let mut id = from.max(self.ack_point);
        for &a in self.acked_above.range(id..) {
            if a != id {
                break;
            }
            id += 1;
        }
        id
    }

    pub(crate) fn used_bytes(&self) -> u64 {
        self.retained_bytes + self.reserved_bytes
    }

    /// Unacknowledged records that are visible.
    pub(crate) fn unacked_records(&self) -> u64 {
        self.next_visible - self.ack_point - self.acked_above.len() as u64
    }

    /// A reader hands `id` out: from now on it is leased (see `handed_out`).
    pub(crate) fn hand_out(&mut self, id: u64) {
        self.handed_out = self.handed_out.max(id + 1);
    }

    /// The oldest record neither acknowledged nor dropped, if any.
    pub(crate) fn oldest_unacked(&self) -> Option<u64> {
        // The ack point is never in `acked_above` (it would have moved past it).
        (self.ack_point < self.next_visible).then_some(self.ack_point)
    }

    /// Drops the oldest unsettled records that no reader has handed out, until
    /// `need` more bytes fit under `max` or none is left. Returns the first and
    /// last id dropped and how many were dropped (every one a record that will
    /// never be handed out: a counted drop is a drop made).
    ///
    /// A record dropped above the ack point (leased records before it) frees
    /// its bytes in the bound at once, although its segment stays on disk
    /// until the ack point passes it: the consumer's leases are bounded by its
    /// read-ahead and free their space on ack.
    pub(crate) fn drop_oldest(&mut self, need: u64, max: u64) -> Option<(u64, u64, u64)> {
        let mut id = self.next_unsettled(self.handed_out);
        let mut first = None;
        let mut last = id;
        let mut count = 0;
        while self.used_bytes() + need > max && id < self.next_visible {
            if id == self.ack_point {
                self.pass_ack_point();
                self.advance();
            } else {
                let idx = usize::try_from(id - self.ack_point).unwrap_or(usize::MAX);
                if let Some(size) = self.sizes.get_mut(idx) {
                    self.retained_bytes -= u64::from(std::mem::take(size));
                }
                self.acked_above.insert(id);
            }
            first.get_or_insert(id);
            last = id;
            count += 1;
            id = self.next_unsettled(id + 1);
        }
        self.counters.dropped += count;
        if count > 0 {
            self.ack_gen += 1;
        }
        first.map(|first| (first, last, count))
    }

    /// Makes records `first..first + payloads.len()` visible after the writer
    /// wrote (and synced) them.
    pub(crate) fn commit(&mut self, first: u64, payloads: &[Bytes], reserved: u64) {
        debug_assert_eq!(first, self.next_visible);
        self.reserved_bytes -= reserved;
        for (i, p) in payloads.iter().enumerate() {
            let size = crate::record::record_len(p.len());
            self.sizes
                .push_back(u32::try_from(size).unwrap_or(u32::MAX));
            self.retained_bytes += size;
            if p.len() as u64 <= self.memory_limit {
                self.cache.push_back((first + i as u64, p.clone()));
                self.cache_bytes += p.len() as u64;
            } else {
                self.cache.clear();
                self.cache_bytes = 0;
            }
        }
        self.next_visible = first + payloads.len() as u64;
        self.counters.appended += payloads.len() as u64;
        while self.cache_bytes > self.memory_limit {
            if let Some((_, b)) = self.cache.pop_front() {
                self.cache_bytes -= b.len() as u64;
            }
        }
    }

    /// The payload of `id` if it is still in the recent-record cache.
    pub(crate) fn cached(&self, id: u64) -> Option<Bytes> {
        let &(front, _) = self.cache.front()?;
        let idx = usize::try_from(id.checked_sub(front)?).ok()?;
        self.cache.get(idx).map(|(cid, b)| {
            debug_assert_eq!(*cid, id);
            b.clone()
        })
    }

    /// The live segment holding `id`, if any.
    pub(crate) fn segment_for(&self, id: u64) -> Option<&SegMeta> {
        let i = self.segments.partition_point(|s| s.base <= id);
        let seg = self.segments.get(i.checked_sub(1)?)?;
        (id < seg.end).then_some(seg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(n: u64) -> State {
        let mut st = State::new(0, 0, BTreeSet::new(), VecDeque::new(), vec![], 1 << 20);
        let payloads: Vec<Bytes> = (0..n).map(|_| Bytes::from_static(b"0123")).collect();
        st.reserved_bytes = 20 * n;
        st.commit(0, &payloads, 20 * n);
        st
    }

    #[test]
    fn ack_out_of_order_advances_only_over_contiguous_ids() {
        let mut st = state_with(5);
        assert!(!st.ack(2));
        assert!(!st.ack(1));
        assert_eq!(st.ack_point, 0);
        assert!(st.ack(0));
        assert_eq!(st.ack_point, 3);
        assert_eq!(st.retained_bytes, 40);
        assert!(!st.ack(4));
        assert_eq!(st.ack_point, 3);
        assert_eq!(st.unacked_records(), 1);
        assert!(st.ack(3));
        assert_eq!(st.ack_point, 5);
        assert_eq!(st.retained_bytes, 0);
        assert_eq!(st.counters.acked, 5);
    }

    #[test]
    fn duplicate_and_unknown_acks_are_ignored() {
        let mut st = state_with(3);
        st.ack(1);
        st.ack(1);
        st.ack(7);
        assert_eq!(st.counters.acked, 1);
        assert_eq!(st.unacked_records(), 2);
    }

    #[test]
    fn drop_oldest_skips_already_acked_records() {
        let mut st = state_with(4);
        st.ack(1);
        // Need room for 20 more bytes under a 60-byte cap: 80 held, 1 acked.
        // Dropping id 0 lets the ack point pass the acked id 1 too: 40 bytes left.
        let dropped = st.drop_oldest(20, 60);
        assert_eq!(dropped, Some((0, 0, 1)));
        assert_eq!(st.ack_point, 2);
        assert_eq!(st.counters.dropped, 1);
        assert!(st.is_settled(1));
        assert!(!st.is_settled(2));
        assert_eq!(st.drop_oldest(40, 60), Some((2, 2, 1)));
        assert_eq!(st.used_bytes(), 20);
    }

    #[test]
    fn drop_oldest_leaves_leased_records_and_frees_the_bytes_of_later_ones() {
        let mut st = state_with(4);
        st.hand_out(0);
        st.hand_out(1);
        assert_eq!(st.oldest_unacked(), Some(0));
        // 80 held; room for 20 under 60 means 40 must go: ids 2 and 3.
        assert_eq!(st.drop_oldest(20, 60), Some((2, 3, 2)));
        assert_eq!((st.used_bytes(), st.ack_point), (40, 0));
        assert!(st.is_settled(2) && st.is_settled(3));
        // Only leased records are left: nothing more to drop.
        assert_eq!(st.drop_oldest(40, 60), None);
        st.ack(0);
        st.ack(1);
        assert_eq!(
            (st.ack_point, st.used_bytes(), st.oldest_unacked()),
            (4, 0, None)
        );
        assert_eq!((st.counters.dropped, st.counters.acked), (2, 2));
    }

    #[test]
    fn cache_serves_recent_records_and_forgets_acked_ones() {
        let mut st = state_with(3);
        assert!(st.cached(2).is_some());
        st.ack(0);
        assert!(st.cached(0).is_none());
        assert!(st.cached(1).is_some());
        assert!(st.cached(3).is_none());
    }
}
