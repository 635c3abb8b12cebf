//! The dead-letter file: where the publisher puts messages the broker refused for good
//! and connectors put records a transform or their sink refused — one JSON line each,
//! fsynced before the caller lets the message go (spool ack, MQTT ack).
//!
//! One writer for both paths, async to its callers: opening, writing and `sync_data` run
//! on tokio's blocking pool, never on a runtime worker thread. Bounded:
//! one append is in flight per file at a time; other callers wait for the file (a FIFO
//! lock), each holding only its own lines, and callers await their append before they
//! take more work. A leaf: imports nothing from the crate.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Mutex;

/// Appends JSON lines to one file, fsynced per append.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    file: Arc<Mutex<Option<std::fs::File>>>,
    /// Write on the caller's task instead of the blocking pool: the deterministic
    /// simulation (`crate::sim`) needs every step on its one thread, in simulated time.
    inline: bool,
}

impl DeadLetter {
    /// Dead letters at `path`; the file is opened (created) on first use.
    pub fn new(path: impl Into<PathBuf>) -> DeadLetter {
        DeadLetter {
            path: path.into(),
            file: Arc::new(Mutex::new(None)),
            inline: false,
        }
    }

    /// Like [`DeadLetter::new`], writing on the caller's task (for the simulation).
    #[cfg(test)]
    pub(crate) fn inline(path: impl Into<PathBuf>) -> DeadLetter {
        DeadLetter {
            inline: true,
            ..DeadLetter::new(path)
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `lines`, one JSON value per line, and fsync them.
    ///
    /// # Errors
    /// I/O errors opening, writing or syncing the file; the caller keeps what it was
    /// about to let go and tries again later. The file is reopened on the next append, so
    /// a half-written line is possible after an error, a lost one is not.
    pub async fn append(&self, lines: &[Value]) -> io::Result<()> {
        let mut buf = Vec::new();
        for line in lines {
            serde_json::to_writer(&mut buf, line)?;
            buf.push(b'\n');
        }
        let mut file = self.file.clone().lock_owned().await;
        let path = self.path.clone();
        if self.inline {
            return write_synced(&mut file, &path, &buf);
        }
        // Open, write and fsync in one trip to the blocking pool: the file never sits
        // created and empty while the runtime goes on, and a caller that stops waiting
        // leaves one bounded write to finish on its own.
        tokio::task::spawn_blocking(move || write_synced(&mut file, &path, &buf))
            .await
            .map_err(io::Error::other)?
    }
}

/// Opens `path` into `file` if needed, appends `buf` and syncs it; forgets the handle after
/// an error, so the next append reopens the file.
fn write_synced(file: &mut Option<std::fs::File>, path: &Path, buf: &[u8]) -> io::Result<()> {
    let res = (|| {
        if file.is_none() {
            *file = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            );
        }
        let Some(f) = file.as_mut() else {
            return Err(io::Error::other("dead-letter file not open"));
        };
        f.write_all(buf)?;
        f.sync_data()
    })();
    if res.is_err() {
        *file = None;
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_lines_and_reopens_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("sub");
        let dl = DeadLetter::new(missing.join("dead.jsonl"));
        assert!(dl.append(&[serde_json::json!({"a": 1})]).await.is_err());
        std::fs::create_dir(&missing).unwrap();
        dl.append(&[serde_json::json!({"a": 1}), serde_json::json!({"b": "ü"})])
            .await
            .unwrap();
        dl.append(&[serde_json::json!(3)]).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(dl.path()).unwrap(),
            "{\"a\":1}\n{\"b\":\"ü\"}\n3\n"
        );
    }
}
