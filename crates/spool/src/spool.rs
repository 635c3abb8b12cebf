//! The [`Spool`] handle: admission (size bound and full policy), handing
//! appends to the writer thread and awaiting their commit, acknowledgements,
//! statistics and shutdown.

use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

use crate::checkpoint::{self, Checkpoint};
use crate::log_limit::LogLimiter;
use crate::reader::Reader;
use crate::record::record_len;
use crate::recovery::{self, RecoveryReport};
use crate::shared::Shared;
use crate::state::{Job, State, Work};
use crate::storage::{StdStorage, Storage};
use crate::writer::Writer;
use crate::{OnFull, SpoolError, SpoolOptions};

/// The result of an append that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The records are stored (durably, under [`crate::FsyncPolicy::Always`])
    /// with ids `first_id..first_id + count`.
    Appended {
        /// Id of the first record.
        first_id: u64,
        /// Number of records.
        count: u64,
    },
    /// The spool is full and the policy is [`OnFull::Reject`]; nothing was stored.
    Full,
}

/// A snapshot of the spool's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes held from the first unacknowledged record on (headers included).
    pub bytes: u64,
    /// Records stored and not yet acknowledged or dropped.
    pub records: u64,
    /// Records appended since open.
    pub appended: u64,
    /// Records acknowledged since open.
    pub acked: u64,
    /// Records discarded since open (`DropOldest`, or damage skipped at open).
    pub dropped: u64,
    /// Appends refused with [`AppendOutcome::Full`] since open.
    pub rejected: u64,
    /// Appends that had to wait for space (`Block`, or `DropOldest` with
    /// everything still in flight) since open.
    pub blocked: u64,
    /// Id the next append will get.
    pub next_id: u64,
    /// Live segment files.
    pub segments: u64,
    /// Id of the oldest record neither acknowledged nor dropped (`None` when
    /// there is none): if it stays the same while records wait, delivery is
    /// stuck on it.
    pub oldest_unacked_id: Option<u64>,
}

/// Marks the writer stopped however its thread ends (a panic included), so
/// `close` and the reader never wait for a writer that is gone.
struct StopGuard(Arc<Shared>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.lock().stopped = true;
        self.0.wake_all();
    }
}

/// How the writer runs: on its own thread, or (feature `sim`) one turn at a time when
/// the owner calls [`Spool::step`], so a simulation decides when groups commit.
enum Driver {
    Thread(Option<std::thread::JoinHandle<()>>),
    #[cfg(feature = "sim")]
    Stepped(Option<Writer>),
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::Thread(_) => "Thread",
            #[cfg(feature = "sim")]
            Driver::Stepped(_) => "Stepped",
        })
    }
}

impl Driver {
    /// Stops the writer (already told to close) and waits for it.
    fn stop(&mut self) {
        match self {
            Driver::Thread(handle) => {
                if let Some(h) = handle.take() {
                    // The writer drains its queue, syncs and checkpoints; this is short.
                    let _ = h.join();
                }
            }
            #[cfg(feature = "sim")]
            Driver::Stepped(writer) => {
                if let Some(mut w) = writer.take() {
                    w.step(false);
                }
            }
        }
    }
}

fn spawn_writer(shared: &Arc<Shared>, writer: Writer) -> Result<Driver, SpoolError> {
    let guard = StopGuard(shared.clone());
    let thread = std::thread::Builder::new()
        .name("mqlink-spool".into())
        .spawn(move || {
            let _guard = guard;
            writer.run();
        })
        .map_err(|e| SpoolError::io("spawn writer thread for", &shared.dir, e))?;
    Ok(Driver::Thread(Some(thread)))
}

/// Owns the writer; stops it when the last handle goes.
#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    driver: Mutex<Driver>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.begin_close();
        if let Ok(mut d) = self.driver.lock() {
            d.stop();
        }
    }
}

/// A durable on-disk queue. Cheap to clone; all clones share one writer thread,
/// which stops on [`Spool::close`] or when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, recovers it and starts
    /// its writer thread.
    ///
    /// # Errors
    /// [`SpoolError::InvalidOptions`], I/O errors while creating or scanning
    /// the directory, and [`SpoolError::Corrupt`] for damage that is not a
    /// torn tail when `on_corruption` is [`crate::OnCorruption::Fail`].
    pub fn open(
        dir: impl AsRef<Path>,
        opts: SpoolOptions,
    ) -> Result<(Spool, RecoveryReport), SpoolError> {
        Self::open_with_storage(dir, opts, Arc::new(StdStorage))
    }

    /// Like [`Spool::open`], doing all file I/O through `storage`.
    ///
    /// # Errors
    /// As [`Spool::open`].
    pub fn open_with_storage(
        dir: impl AsRef<Path>,
        opts: SpoolOptions,
        storage: Arc<dyn Storage>,
    ) -> Result<(Spool, RecoveryReport), SpoolError> {
        Self::open_inner(dir.as_ref(), opts, storage, false)
    }

    /// Like [`Spool::open_with_storage`], but deterministic, for simulation tests: no
    /// writer thread (appends wait until the owner calls [`Spool::step`]) and segment
    /// reads run inline instead of on tokio's blocking pool. Only for a storage that
    /// never blocks (in memory), and for [`crate::FsyncPolicy::Always`] (the `Interval`
    /// policy still reads the wall clock).
    ///
    /// # Errors
    /// As [`Spool::open`].
    #[cfg(feature = "sim")]
    pub fn open_stepped(
        dir: impl AsRef<Path>,
        opts: SpoolOptions,
        storage: Arc<dyn Storage>,
    ) -> Result<(Spool, RecoveryReport), SpoolError> {
        Self::open_inner(dir.as_ref(), opts, storage, true)
    }

    /// A stepped spool ([`Spool::open_stepped`]): commit every append queued now as
    /// one group, then write the checkpoint if `checkpoint` (and delete the segments
    /// it settles). Does nothing on a threaded spool. True when appends were waiting.
    #[cfg(feature = "sim")]
    pub fn step(&self, checkpoint: bool) -> bool {
        let waiting = !self.shared().lock().queue.is_empty();
        let mut driver = self
            .inner
            .driver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Driver::Stepped(slot) = &mut *driver
            && let Some(w) = slot.as_mut()
            && w.step(checkpoint)
        {
            *slot = None;
        }
        waiting
    }

    fn open_inner(
        dir: &Path,
        opts: SpoolOptions,
        storage: Arc<dyn Storage>,
        stepped: bool,
    ) -> Result<(Spool, RecoveryReport), SpoolError> {
        opts.validate()?;
        let dir = dir.to_path_buf();
        storage
            .create_dir_all(&dir)
            .map_err(|e| SpoolError::io("create spool directory", &dir, e))?;
        let rec = recovery::recover(&*storage, &dir, opts.on_corruption, opts.fsync)?;
        let mut state = State::new(
            rec.ack_point,
            rec.next_id,
            rec.acked_above,
            rec.sizes,
            rec.segments,
            opts.memory_bytes,
        );
        state.counters.dropped = rec.lost;
        let mut report = rec.report;
        report.records = state.unacked_records();
        report.bytes = state.retained_bytes;
        report.first_unacked_id = state.next_unsettled(state.ack_point);
        // Ids recovery settled (lost with a torn tail, or skipped damage) leave a gap in
        // the ids on disk. Record them before anything is appended after the gap: were the
        // next crash to come before a checkpoint, recovery could not tell that gap from
        // damage and would refuse the spool.
        if rec.lost > 0 {
            let settled = Checkpoint {
                ack_point: state.ack_point,
                acked: state.acked_above.iter().copied().collect(),
            };
            checkpoint::store(&*storage, &dir, &settled, true)?;
        }
        // Write a checkpoint soon if there is none.
        let checkpointed_gen = if report.checkpoint_found || rec.lost > 0 {
            0
        } else {
            u64::MAX
        };
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            opts,
            storage,
            state: Mutex::new(state),
            work_cv: Condvar::new(),
            readers: Notify::new(),
            space: Notify::new(),
            stopped: Notify::new(),
            full_log: Mutex::new(LogLimiter::default()),
            inline_reads: stepped,
        });
        let writer = Writer::new(shared.clone(), rec.next_id, checkpointed_gen);
        #[cfg(feature = "sim")]
        let driver = if stepped {
            Driver::Stepped(Some(writer))
        } else {
            spawn_writer(&shared, writer)?
        };
        #[cfg(not(feature = "sim"))]
        let driver = spawn_writer(&shared, writer)?;
        tracing::info!(dir = %dir.display(), records = report.records, bytes = report.bytes,
            first_id = report.first_unacked_id, next_id = report.next_id, "spool opened");
        let inner = Arc::new(Inner {
            shared,
            driver: Mutex::new(driver),
        });
        Ok((Spool { inner }, report))
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Appends one record. On `Ok(Appended)` the record is stored per the
    /// fsync policy (durable under `Always`).
    ///
    /// Cancel safety: if the future is dropped after the record was handed to
    /// the writer, the record may still be appended (and delivered).
    ///
    /// # Errors
    /// [`SpoolError::TooLarge`] if the record can never fit, I/O errors from
    /// the write or fsync covering it, [`SpoolError::Poisoned`] after an
    /// earlier fsync failure, [`SpoolError::Closed`] after close.
    pub async fn append(&self, payload: impl Into<Bytes>) -> Result<AppendOutcome, SpoolError> {
        self.append_batch(vec![payload.into()]).await
    }

    /// Appends records atomically with respect to admission and errors: either
    /// all get contiguous ids and are stored, or none is.
    ///
    /// # Errors
    /// As [`Spool::append`], plus [`SpoolError::EmptyBatch`].
    pub async fn append_batch(&self, payloads: Vec<Bytes>) -> Result<AppendOutcome, SpoolError> {
        if payloads.is_empty() {
            return Err(SpoolError::EmptyBatch);
        }
        let shared = self.shared();
        let max = shared.opts.max_bytes;
        let mut size = 0u64;
        for p in &payloads {
            let rlen = record_len(p.len());
            if p.len() > (u32::MAX as usize) - 64 {
                return Err(SpoolError::TooLarge {
                    size: rlen,
                    limit: u64::from(u32::MAX),
                });
            }
            size += rlen;
        }
        if size > max {
            return Err(SpoolError::TooLarge { size, limit: max });
        }
        if !self.reserve(size).await? {
            return Ok(AppendOutcome::Full);
        }
        let count = payloads.len() as u64;
        let (tx, rx) = oneshot::channel();
        {
            let mut st = shared.lock();
            if st.closing {
                st.reserved_bytes -= size;
                return Err(shared.closed());
            }
            st.queue.push(Work::Append(Job {
                payloads,
                bytes: size,
                reply: tx,
            }));
        }
        shared.work_cv.notify_one();
        let first_id = rx.await.map_err(|_| shared.closed())??;
        Ok(AppendOutcome::Appended { first_id, count })
    }

    /// Reserves `size` bytes under `max_bytes`, applying the full policy.
    /// Returns false for a rejection.
    async fn reserve(&self, size: u64) -> Result<bool, SpoolError> {
        let shared = self.shared();
        let max = shared.opts.max_bytes;
        let mut counted_block = false;
        loop {
            let mut notified = pin!(shared.space.notified());
            notified.as_mut().enable();
            {
                let mut st = shared.lock();
                if st.closing {
                    return Err(shared.closed());
                }
                if let Some(cause) = st.poisoned.clone() {
                    return Err(SpoolError::Poisoned {
                        dir: shared.dir.clone(),
                        cause,
                    });
                }
                if st.used_bytes() + size > max {
                    match shared.opts.on_full {
                        OnFull::Reject => {
                            st.counters.rejected += 1;
                            drop(st);
                            shared.warn_full("spool full: rejecting append", size);
                            return Ok(false);
                        }
                        OnFull::DropOldest => {
                            if let Some((first, last, count)) = st.drop_oldest(size, max) {
                                tracing::error!(dir = %shared.dir.display(), first_id = first, last_id = last,
                                    count, "spool full: dropped oldest records not yet handed to the consumer");
                            }
                        }
                        OnFull::Block => {}
                    }
                }
                if st.used_bytes() + size <= max {
                    st.reserved_bytes += size;
                    return Ok(true);
                }
                if !counted_block {
                    counted_block = true;
                    st.counters.blocked += 1;
                    drop(st);
                    shared.warn_full("spool full: append waits for acknowledgements", size);
                }
            }
            notified.await;
        }
    }

    /// Starts reading at the first unacknowledged record. Intended for one
    /// logical consumer; several readers each see every record.
    pub fn reader(&self) -> Reader {
        Reader::new(self.shared().clone())
    }

    /// Acknowledges record `id`: it will not be delivered again (unless the
    /// process crashes before the checkpoint covering it is written). Acks may
    /// come in any order; unknown or repeated ids are ignored.
    pub fn ack(&self, id: u64) {
        let shared = self.shared();
        let freed = shared.lock().ack(id);
        if freed {
            shared.space.notify_waiters();
        }
    }

    /// Writes the ack checkpoint now and deletes fully acknowledged segments
    /// (normally the writer does this every `checkpoint_interval`).
    ///
    /// # Errors
    /// I/O errors writing the checkpoint; [`SpoolError::Closed`].
    pub async fn checkpoint(&self) -> Result<(), SpoolError> {
        let shared = self.shared();
        let (tx, rx) = oneshot::channel();
        {
            let mut st = shared.lock();
            if st.closing {
                return Err(shared.closed());
            }
            st.queue.push(Work::Checkpoint(tx));
        }
        shared.work_cv.notify_one();
        rx.await.map_err(|_| shared.closed())?
    }

    /// A snapshot of sizes and counters.
    pub fn stats(&self) -> SpoolStats {
        let st = self.shared().lock();
        SpoolStats {
            bytes: st.retained_bytes,
            records: st.unacked_records(),
            appended: st.counters.appended,
            acked: st.counters.acked,
            dropped: st.counters.dropped,
            rejected: st.counters.rejected,
            blocked: st.counters.blocked,
            next_id: st.next_visible,
            segments: st.segments.len() as u64,
            oldest_unacked_id: st.oldest_unacked(),
        }
    }

    #[cfg(test)]
    pub(crate) fn inner_shared(&self) -> &Arc<Shared> {
        self.shared()
    }

    /// Test hook: stop the writer as a crash would, without the final fsync
    /// and checkpoint. Data already written stays in the page cache (what a power
    /// loss takes is the storage's business).
    #[cfg(any(test, feature = "sim"))]
    pub fn crash(self) {
        self.shared().lock().abandon = true;
        self.shared().begin_close();
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.shared().dir
    }

    /// Stops accepting appends, lets the writer finish queued ones, syncs,
    /// writes the checkpoint and stops the writer thread. Other clones of this
    /// handle see [`SpoolError::Closed`] afterwards.
    ///
    /// # Errors
    /// The final fsync or checkpoint failed.
    pub async fn close(self) -> Result<(), SpoolError> {
        let shared = self.shared().clone();
        shared.begin_close();
        #[cfg(feature = "sim")]
        if let Ok(mut d) = self.inner.driver.lock()
            && matches!(*d, Driver::Stepped(_))
        {
            d.stop();
        }
        loop {
            let mut notified = pin!(shared.stopped.notified());
            notified.as_mut().enable();
            if shared.lock().stopped {
                break;
            }
            notified.await;
        }
        // The writer has already finished its work; this returns at once.
        if let Ok(mut d) = self.inner.driver.lock() {
            d.stop();
        }
        tracing::info!(dir = %shared.dir.display(), "spool closed");
        let err = shared.lock().close_error.take();
        err.map_or(Ok(()), Err)
    }
}
