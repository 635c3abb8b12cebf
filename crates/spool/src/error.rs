//! The spool's error type. Expected outcomes ("full") are values in
//! [`crate::AppendOutcome`]; everything here is a failure the caller must act on.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// A failure of the spool. Cheap to clone: one failed fsync fails every append
/// that was waiting on it, and each gets a copy of the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    /// An operating-system call failed.
    #[error("spool: cannot {op} {}: {source}", path.display())]
    Io {
        /// What the spool was doing, e.g. "fsync segment".
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// An earlier fsync (or an unrecoverable write) failed; the spool refuses
    /// further appends until it is reopened, because the kernel may have dropped
    /// dirty pages that a later fsync would not report again.
    #[error("spool {} refuses appends after an earlier failure ({cause}); reopen it to recover", dir.display())]
    Poisoned {
        /// The spool directory.
        dir: PathBuf,
        /// The original failure.
        cause: String,
    },
    /// A segment is damaged somewhere other than its torn tail.
    #[error("spool: corrupt data in {} at bytes {start}..{end}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// First damaged byte.
        start: u64,
        /// End (exclusive) of the damaged range.
        end: u64,
        /// What was wrong.
        reason: String,
    },
    /// A record (or a whole batch) can never fit into the spool.
    #[error("spool: {size} bytes cannot be stored: larger than the spool limit of {limit} bytes")]
    TooLarge {
        /// Bytes the record or batch would occupy on disk.
        size: u64,
        /// The limit it exceeds.
        limit: u64,
    },
    /// `append_batch` was called with no payloads.
    #[error("spool: empty batch")]
    EmptyBatch,
    /// The options passed to `Spool::open` are unusable.
    #[error("spool: invalid options: {0}")]
    InvalidOptions(String),
    /// The spool was closed (or every handle dropped).
    #[error("spool {} is closed", dir.display())]
    Closed {
        /// The spool directory.
        dir: PathBuf,
    },
}

impl SpoolError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SpoolError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}
