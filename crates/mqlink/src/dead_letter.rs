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
    /// about to let go and tries again later. The file is reopened on the next append; a
    /// half-written line left by an error is cut off or ends on its own line, so the
    /// retried line is whole (see `write_synced`).
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
///
/// A failed write (a full disk) may leave part of a line behind. It is cut off again when
/// possible, and a file found on opening not to end in a newline gets one first: the
/// retried line must stand whole on its own line, or its only copy would be unreadable
/// while its message is let go.
fn write_synced(file: &mut Option<std::fs::File>, path: &Path, buf: &[u8]) -> io::Result<()> {
    let mut start = None;
    let res = (|| {
        if file.is_none() {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(path)?;
            if !ends_with_newline(&mut f)? {
                f.write_all(b"\n")?;
            }
            *file = Some(f);
        }
        let Some(f) = file.as_mut() else {
            return Err(io::Error::other("dead-letter file not open"));
        };
        start = Some(f.metadata()?.len());
        f.write_all(buf)?;
        f.sync_data()
    })();
    if res.is_err() {
        if let (Some(f), Some(len)) = (file.as_ref(), start) {
            let _ = f.set_len(len);
        }
        *file = None;
    }
    res
}

/// Whether `f` is empty or its last byte is a newline.
fn ends_with_newline(f: &mut std::fs::File) -> io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if f.metadata()?.len() == 0 {
        return Ok(true);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
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

    /// A file left with a partial last line (a write cut by a full disk, here written by
    /// hand): the next line goes on a line of its own, whole. It used to be glued to the
    /// fragment, so its only copy did not parse.
    #[tokio::test]
    async fn a_partial_last_line_does_not_swallow_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"half\":").unwrap();
        let dl = DeadLetter::new(&path);
        dl.append(&[serde_json::json!({"b": 2})]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().last(), Some("{\"b\":2}"), "{text:?}");
        assert!(text.ends_with('\n'));
    }
}
