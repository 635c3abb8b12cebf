//! The writer thread: the only code that appends to segment files. It takes
//! every queued append at once (group commit), encodes them into one buffer,
//! writes it with one `write_all`, syncs once per the fsync policy, then makes
//! the records visible and answers every waiting appender. It also writes the
//! ack checkpoint and deletes fully acknowledged segments.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::{self, Checkpoint};
use crate::log_limit::LogLimiter;
use crate::record::{self, SEGMENT_HEADER_LEN};
use crate::recovery::segment_path;
use crate::shared::Shared;
use crate::state::{Job, SegMeta, Work};
use crate::storage::SegmentFile;
use crate::{FsyncPolicy, SpoolError};

struct Active {
    file: Box<dyn SegmentFile>,
    base: u64,
    len: u64,
    path: PathBuf,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    active: Option<Active>,
    /// Under `Never`, segments retired without a sync: close syncs them too.
    /// Dropped when the segment is deleted, so at most the live segments.
    retired: Vec<Active>,
    next_id: u64,
    buf: Vec<u8>,
    unsynced: bool,
    last_sync: Instant,
    checkpointed_gen: u64,
    last_checkpoint: Instant,
    /// A full disk fails every append of a burst; one WARN line per interval.
    write_fail_log: LogLimiter,
    checkpoint_fail_log: LogLimiter,
    /// A write failed (e.g. the disk is full): once every record of the active segment is
    /// acknowledged, retire and delete it instead of waiting for it to fill up and roll.
    reclaim_active: bool,
    /// Segments were deleted ahead of a checkpoint the full disk refused: no new segment
    /// until it is written.
    checkpoint_owed: bool,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, next_id: u64, checkpointed_gen: u64) -> Writer {
        Writer {
            shared,
            active: None,
            retired: Vec::new(),
            next_id,
            buf: Vec::new(),
            unsynced: false,
            last_sync: Instant::now(),
            checkpointed_gen,
            last_checkpoint: Instant::now(),
            write_fail_log: LogLimiter::default(),
            checkpoint_fail_log: LogLimiter::default(),
            reclaim_active: false,
            checkpoint_owed: false,
        }
    }

    /// Runs until the spool is closed or every handle is dropped.
    pub(crate) fn run(mut self) {
        let opts = self.shared.opts.clone();
        loop {
            let (work, closing) = {
                let mut st = self.shared.lock();
                while st.queue.is_empty() && !st.closing {
                    let wait = self.idle_wait(&opts);
                    let (guard, timeout) = self
                        .shared
                        .work_cv
                        .wait_timeout(st, wait)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    st = guard;
                    if timeout.timed_out() {
                        break;
                    }
                }
                (std::mem::take(&mut st.queue), st.closing)
            };
            let due = self.last_checkpoint.elapsed() >= opts.checkpoint_interval;
            if self.turn(work, closing, due) {
                return;
            }
        }
    }

    /// One turn of the writer without waiting: whatever is queued now, then the
    /// checkpoint if `checkpoint_due`. True once the writer has stopped (closing).
    /// The simulation tests (feature `sim`) call this in place of the thread, so
    /// that when a group commits is decided by the test, not by the OS scheduler.
    #[cfg(feature = "sim")]
    pub(crate) fn step(&mut self, checkpoint_due: bool) -> bool {
        let (mut work, closing) = {
            let mut st = self.shared.lock();
            (std::mem::take(&mut st.queue), st.closing)
        };
        if closing && self.shared.lock().abandon {
            // A crash: what was queued never reached the disk.
            work.clear();
        }
        self.turn(work, closing, checkpoint_due)
    }

    /// Commits `work` as one group, syncs and checkpoints as due; finishes when `closing`.
    fn turn(&mut self, work: Vec<Work>, closing: bool, due: bool) -> bool {
        let fsync = self.shared.opts.fsync;
        let mut appends = Vec::new();
        let mut checkpoint_waiters = Vec::new();
        for w in work {
            match w {
                Work::Append(job) => appends.push(job),
                Work::Checkpoint(tx) => checkpoint_waiters.push(tx),
            }
        }
        if !appends.is_empty() {
            self.commit(appends);
        }
        if self.unsynced
            && let FsyncPolicy::Interval(d) = fsync
            && self.last_sync.elapsed() >= d
        {
            self.sync_or_poison();
        }
        let abandon = closing && self.shared.lock().abandon;
        if !abandon && (due || closing || !checkpoint_waiters.is_empty()) {
            let res = self.checkpoint();
            for tx in checkpoint_waiters {
                let _ = tx.send(res.clone());
            }
        }
        if closing {
            self.finish();
        }
        closing
    }

    fn idle_wait(&self, opts: &crate::SpoolOptions) -> Duration {
        let mut wait = opts
            .checkpoint_interval
            .saturating_sub(self.last_checkpoint.elapsed());
        if let (true, FsyncPolicy::Interval(d)) = (self.unsynced, opts.fsync) {
            wait = wait.min(d.saturating_sub(self.last_sync.elapsed()));
        }
        wait.max(Duration::from_millis(1))
    }

    fn finish(&mut self) {
        let mut err = None;
        let abandon = self.shared.lock().abandon;
        if abandon {
            self.active = None;
            self.shared.lock().stopped = true;
            self.shared.wake_all();
            return;
        }
        if self.shared.lock().poisoned.is_none() {
            let active = self.active.as_mut().filter(|_| self.unsynced);
            for a in self.retired.iter_mut().chain(active) {
                if let Err(e) = a.file.sync() {
                    err.get_or_insert(SpoolError::io("fsync segment", &a.path, e));
                }
            }
        }
        if let Err(e) = self.checkpoint() {
            err.get_or_insert(e);
        }
        self.active = None;
        self.retired.clear();
        let mut st = self.shared.lock();
        st.stopped = true;
        st.close_error = err;
        for w in std::mem::take(&mut st.queue) {
            match w {
                Work::Append(job) => {
                    let _ = job.reply.send(Err(self.shared.closed()));
                }
                Work::Checkpoint(tx) => {
                    let _ = tx.send(Err(self.shared.closed()));
                }
            }
        }
        drop(st);
        tracing::info!(dir = %self.shared.dir.display(), "spool writer stopped");
        self.shared.wake_all();
    }

    fn fail(&self, jobs: Vec<Job>, err: &SpoolError) {
        let mut st = self.shared.lock();
        for job in &jobs {
            st.reserved_bytes -= job.bytes;
        }
        drop(st);
        self.shared.space.notify_waiters();
        for job in jobs {
            let _ = job.reply.send(Err(err.clone()));
        }
    }

    /// The poison cause, if any. (A helper, so no lock guard outlives the
    /// expression: `if let` on `lock()` would hold it through the block.)
    fn poisoned(&self) -> Option<String> {
        self.shared.lock().poisoned.clone()
    }

    fn poison(&self, err: &SpoolError) {
        tracing::error!(dir = %self.shared.dir.display(), error = %err,
            "spool: I/O failure may have lost unsynced data; refusing appends until reopened");
        self.shared.lock().poisoned = Some(err.to_string());
        self.shared.wake_all();
    }

    fn sync_or_poison(&mut self) {
        if let Some(a) = self.active.as_mut()
            && let Err(e) = a.file.sync()
        {
            let err = SpoolError::io("fsync segment", &a.path, e);
            self.poison(&err);
            return;
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
    }

    fn commit(&mut self, jobs: Vec<Job>) {
        if let Some(cause) = self.poisoned() {
            let err = SpoolError::Poisoned {
                dir: self.shared.dir.clone(),
                cause,
            };
            return self.fail(jobs, &err);
        }
        if self.checkpoint_owed
            && let Err(err) = self.checkpoint()
        {
            return self.fail(jobs, &err);
        }
        let first = self.next_id;
        self.buf.clear();
        let mut id = first;
        for job in &jobs {
            for p in &job.payloads {
                record::encode(&mut self.buf, id, p);
                id += 1;
            }
        }
        let before = match self.write_group(first) {
            Ok(before) => before,
            Err(err) => return self.fail(jobs, &err),
        };
        let policy = self.shared.opts.fsync;
        if policy == FsyncPolicy::Always {
            self.sync_or_poison();
            if let Some(cause) = self.poisoned() {
                // Do not pretend a later fsync covers these records: fail them all,
                // and try to cut them off so they are not delivered after a reopen.
                // Everything before `before` was synced by an earlier, successful fsync.
                if let Some(a) = self.active.as_mut() {
                    match a.file.truncate(before) {
                        Ok(()) => a.len = before,
                        Err(e) => tracing::warn!(path = %a.path.display(), error = %e,
                            "spool: cannot cut off records whose fsync failed; they may be delivered after reopen"),
                    }
                }
                let err = SpoolError::Poisoned {
                    dir: self.shared.dir.clone(),
                    cause,
                };
                return self.fail(jobs, &err);
            }
        }
        self.next_id = id;
        let active = self
            .active
            .as_ref()
            .map(|a| (a.base, a.len, a.path.clone()));
        let mut st = self.shared.lock();
        if let Some((base, len, path)) = active {
            match st.segments.last_mut() {
                Some(seg) if seg.base == base => {
                    seg.end = id;
                    seg.len = len;
                }
                _ => st.segments.push(SegMeta {
                    base,
                    end: id,
                    len,
                    path,
                    holes: Vec::new(),
                }),
            }
        }
        let mut next = first;
        for job in &jobs {
            st.commit(next, &job.payloads, job.bytes);
            next += job.payloads.len() as u64;
        }
        drop(st);
        self.shared.readers.notify_waiters();
        self.shared.space.notify_waiters();
        let mut next = first;
        for job in jobs {
            let n = job.payloads.len() as u64;
            let _ = job.reply.send(Ok(next));
            next += n;
        }
    }

    /// Writes `self.buf` (records starting at `first`) to the active segment,
    /// rolling first if needed. On a write error the segment is cut back to its
    /// previous length so the next group starts clean; if that fails too the
    /// spool is poisoned.
    /// Returns the segment length before the write.
    fn write_group(&mut self, first: u64) -> Result<u64, SpoolError> {
        let limit = self.shared.opts.segment_bytes;
        let roll = self
            .active
            .as_ref()
            .is_some_and(|a| a.len > SEGMENT_HEADER_LEN && a.len + self.buf.len() as u64 > limit);
        if roll {
            if self.unsynced && self.shared.opts.fsync != FsyncPolicy::Never {
                self.sync_or_poison();
                if let Some(cause) = self.poisoned() {
                    return Err(SpoolError::Poisoned {
                        dir: self.shared.dir.clone(),
                        cause,
                    });
                }
            }
            let old = self.active.take();
            if self.shared.opts.fsync == FsyncPolicy::Never {
                self.retired.extend(old);
            }
        }
        if self.active.is_none() {
            self.active = Some(self.create_segment(first)?);
        }
        let a = self.active.as_mut().ok_or_else(|| self.shared.closed())?;
        if let Err(e) = a.file.write_all(&self.buf) {
            self.reclaim_active = true;
            let err = SpoolError::io("write segment", &a.path, e);
            if let Err(te) = a.file.truncate(a.len) {
                let terr = SpoolError::io("truncate segment after failed write", &a.path, te);
                self.poison(&terr);
            } else if let Some(suppressed) = self.write_fail_log.allow() {
                tracing::warn!(error = %err, suppressed,
                    "spool: append failed; segment cut back, earlier records intact");
            }
            return Err(err);
        }
        let before = a.len;
        a.len += self.buf.len() as u64;
        self.unsynced = true;
        Ok(before)
    }

    fn create_segment(&mut self, base: u64) -> Result<Active, SpoolError> {
        let path = segment_path(&self.shared.dir, base);
        let storage = &self.shared.storage;
        let mut file = storage
            .create_new(&path)
            .map_err(|e| SpoolError::io("create segment", &path, e))?;
        let header = record::segment_header(base);
        if let Err(e) = file.write_all(&header) {
            let _ = storage.remove(&path);
            return Err(SpoolError::io("write segment header", &path, e));
        }
        storage
            .sync_dir(&self.shared.dir)
            .map_err(|e| SpoolError::io("fsync spool directory", &self.shared.dir, e))?;
        tracing::debug!(path = %path.display(), "spool: new segment");
        Ok(Active {
            file,
            base,
            len: SEGMENT_HEADER_LEN,
            path,
        })
    }

    /// Persists the ack point if it moved, then deletes segments it passed.
    fn checkpoint(&mut self) -> Result<(), SpoolError> {
        self.last_checkpoint = Instant::now();
        let (generation, ckpt) = {
            let st = self.shared.lock();
            if st.ack_gen == self.checkpointed_gen && !self.reclaim_active && !self.checkpoint_owed
            {
                return Ok(());
            }
            let acked = st.acked_above.iter().copied().collect();
            (
                st.ack_gen,
                Checkpoint {
                    ack_point: st.ack_point,
                    acked,
                },
            )
        };
        let ack_point = ckpt.ack_point;
        let mut active_base = self.active.as_ref().map(|a| a.base);
        // After a failed write (a full disk), the active segment is deleted as soon as all
        // of it is acknowledged: with segments larger than the free space it would never
        // fill up and roll over, and the space its acknowledged records hold would never
        // come back. The next append starts a new segment.
        let mut reclaim = self.reclaim_active
            && self
                .shared
                .lock()
                .segments
                .iter()
                .any(|s| Some(s.base) == active_base && s.end <= ack_point);
        if reclaim {
            active_base = None;
        }
        // Durable only when it licenses deleting segments (see the crate docs).
        let deleting = self
            .shared
            .lock()
            .segments
            .iter()
            .any(|s| s.end <= ack_point && Some(s.base) != active_base);
        let stored = checkpoint::store(&*self.shared.storage, &self.shared.dir, &ckpt, deleting);
        if let Err(e) = &stored
            && !reclaim
        {
            // A disk too full for the checkpoint may be full of acknowledged records (e.g.
            // after a restart on a full disk: no append got as far as a segment write, so
            // `reclaim_active` was never set). When every record is acknowledged, every
            // segment may go first, as in a reclaim; otherwise nothing frees the space.
            let everything_acked = self
                .shared
                .lock()
                .segments
                .iter()
                .all(|s| s.end <= ack_point);
            if !everything_acked {
                if let Some(suppressed) = self.checkpoint_fail_log.allow() {
                    tracing::warn!(error = %e, suppressed, "spool: cannot write ack checkpoint; will retry (a crash now only causes redelivery)");
                }
                return stored;
            }
            reclaim = true;
            active_base = None;
        }
        let doomed: Vec<SegMeta> = {
            let mut st = self.shared.lock();
            let (doomed, keep) = std::mem::take(&mut st.segments)
                .into_iter()
                .partition(|s| s.end <= ack_point && Some(s.base) != active_base);
            st.segments = keep;
            doomed
        };
        if reclaim {
            // Closed before its file goes; the next append creates a new segment.
            self.active = None;
            self.reclaim_active = false;
        }
        self.retired
            .retain(|a| !doomed.iter().any(|d| d.base == a.base));
        for seg in doomed {
            match self.shared.storage.remove(&seg.path) {
                Ok(()) => {
                    tracing::debug!(path = %seg.path.display(), "spool: removed acknowledged segment")
                }
                Err(e) => {
                    tracing::warn!(path = %seg.path.display(), error = %e, "spool: cannot remove acknowledged segment")
                }
            }
        }
        if stored.is_err() {
            // The disk was too full to write even the checkpoint. Every segment was
            // acknowledged, so they went first (a crash now leaves no segment and an older
            // checkpoint: nothing is redelivered, ids may start lower). Write it now that
            // there is room; until it is written no new segment may be created, or a
            // crash would leave a gap between the old ack point and the new segment that
            // recovery takes for damage.
            if let Err(e) = checkpoint::store(&*self.shared.storage, &self.shared.dir, &ckpt, true)
            {
                self.checkpoint_owed = true;
                if let Some(suppressed) = self.checkpoint_fail_log.allow() {
                    tracing::warn!(error = %e, suppressed, "spool: cannot write ack checkpoint after freeing space; appends wait for it");
                }
                return Err(e);
            }
        }
        self.checkpoint_owed = false;
        self.checkpointed_gen = generation;
        Ok(())
    }
}
