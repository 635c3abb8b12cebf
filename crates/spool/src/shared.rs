//! [`Shared`]: the state every spool handle, the reader and the writer thread hold. Its
//! own module so that `spool`, `reader` and `writer` all depend on it and not on each
//! other (the handle owns the reader and the writer; they must not reach back).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::log_limit::LogLimiter;
use crate::state::State;
use crate::storage::Storage;
use crate::{SpoolError, SpoolOptions};

/// State shared by every handle, the reader and the writer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub opts: SpoolOptions,
    pub storage: Arc<dyn Storage>,
    pub state: Mutex<State>,
    /// Wakes the writer thread.
    pub work_cv: Condvar,
    /// Wakes the reader when records become visible or the spool stops.
    pub readers: Notify,
    /// Wakes appenders waiting for space.
    pub space: Notify,
    /// Wakes `close` when the writer has stopped.
    pub stopped: Notify,
    pub full_log: Mutex<LogLimiter>,
    /// Read segments on the caller's task instead of the blocking pool (a stepped
    /// spool over an in-memory storage, for deterministic simulation).
    pub inline_reads: bool,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough counters; keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn closed(&self) -> SpoolError {
        SpoolError::Closed {
            dir: self.dir.clone(),
        }
    }

    pub(crate) fn wake_all(&self) {
        self.readers.notify_waiters();
        self.space.notify_waiters();
        self.stopped.notify_waiters();
    }

    pub(crate) fn warn_full(&self, msg: &'static str, size: u64) {
        let allowed = self
            .full_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allow();
        if let Some(suppressed) = allowed {
            tracing::warn!(dir = %self.dir.display(), size, max_bytes = self.opts.max_bytes,
                suppressed, policy = ?self.opts.on_full, "{msg}");
        }
    }

    pub(crate) fn begin_close(&self) {
        let mut st = self.lock();
        st.closing = true;
        drop(st);
        self.work_cv.notify_one();
        self.wake_all();
    }
}
