//! Options for [`crate::Spool::open`]: size bounds, the full-spool policy and
//! the fsync policy.

use std::time::Duration;

use crate::SpoolError;

/// When appended records are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// An append returns only after an fsync covering its record (group commit:
    /// concurrent appends share one fsync). Survives power loss.
    Always,
    /// An append returns after the write reached the OS; the writer fsyncs at
    /// most once per interval (and when idle with unsynced data). Survives a
    /// process crash; a power loss may lose the last interval.
    Interval(Duration),
    /// Never fsync data (the OS writes back when it likes); only close syncs.
    /// Survives a process crash; a power loss may lose anything not yet written back.
    Never,
}

/// What an append does when the spool holds `max_bytes` already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Return [`crate::AppendOutcome::Full`] at once; the caller refuses the event.
    Reject,
    /// Wait until acknowledgements free enough space.
    Block,
    /// Discard the oldest unacknowledged records (logged at ERROR, counted).
    DropOldest,
}

/// What `open` does when it finds damage that is not a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCorruption {
    /// Refuse to open: return [`SpoolError::Corrupt`] naming the file and byte range.
    Fail,
    /// Open anyway: skip the damaged range, report it in
    /// [`crate::RecoveryReport::corrupt`], log at ERROR, count the ids as dropped.
    Discard,
}

/// Configuration of a spool.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Upper bound on the bytes (record headers included) held from the first
    /// unacknowledged record onwards. Default 1 GiB.
    pub max_bytes: u64,
    /// Policy when an append would exceed `max_bytes`. Default [`OnFull::Reject`].
    pub on_full: OnFull,
    /// Fsync policy. Default [`FsyncPolicy::Always`].
    pub fsync: FsyncPolicy,
    /// A segment file rolls over once it would exceed this size. Default 64 MiB.
    pub segment_bytes: u64,
    /// Recently appended records kept in memory so the reader need not touch
    /// the disk. Default 16 MiB.
    pub memory_bytes: u64,
    /// How often (at most) the ack checkpoint is written. Default 1 s.
    pub checkpoint_interval: Duration,
    /// What to do with damage in the middle of the log. Default [`OnCorruption::Fail`].
    pub on_corruption: OnCorruption,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            max_bytes: 1 << 30,
            on_full: OnFull::Reject,
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 << 20,
            memory_bytes: 16 << 20,
            checkpoint_interval: Duration::from_secs(1),
            on_corruption: OnCorruption::Fail,
        }
    }
}

impl SpoolOptions {
    pub(crate) fn validate(&self) -> Result<(), SpoolError> {
        if self.max_bytes < 1024 {
            return Err(SpoolError::InvalidOptions(format!(
                "max_bytes is {}, must be at least 1024",
                self.max_bytes
            )));
        }
        if self.segment_bytes < 1024 {
            return Err(SpoolError::InvalidOptions(format!(
                "segment_bytes is {}, must be at least 1024",
                self.segment_bytes
            )));
        }
        if let FsyncPolicy::Interval(d) = self.fsync
            && d.is_zero()
        {
            return Err(SpoolError::InvalidOptions(
                "fsync interval must be greater than zero (use Always)".into(),
            ));
        }
        if self.checkpoint_interval.is_zero() {
            return Err(SpoolError::InvalidOptions(
                "checkpoint_interval must be greater than zero".into(),
            ));
        }
        Ok(())
    }
}
