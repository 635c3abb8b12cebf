//! `file` sink: JSON lines appended to a file, rotated by size, fsynced per policy.
//!
//! Rotation: before a record would push the file past `rotate_bytes`, `path.N` becomes
//! `path.N+1` (highest first), `path` becomes `path.1` and a new `path` is started, so
//! `path` is always the newest. A record larger than the limit still goes in whole.
//! `rotate_keep` rotated files are kept (`path.1` … `path.{keep}`): the one that would
//! become `path.{keep+1}` is deleted first, with any numbered beyond it (left by an
//! earlier run with a larger `rotate_keep`), so the disk holds at most `keep + 1` files of
//! about `rotate_bytes` each.
//!
//! Confirmation: with `fsync: always` the batch is confirmed after `fdatasync` (and the
//! directory is synced after a rotation); `interval` syncs when the last sync is older
//! than the interval; `never` leaves it to the OS. A failed write is rolled back by
//! truncating to the length before the batch, so a retry never leaves half a line.
//! The blocking file work runs on Tokio's blocking pool.
//!
//! With the `raw` format a line is the payload as is: a payload containing a newline spans
//! several lines (use `json` or `fluvio` when payloads may hold newlines).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Deliver, Driver, OpenEnv, OpenError, Record, SinkError, Spec};
use crate::config::ctx::Ctx;
use crate::config::error::ConfigError;
use crate::config::node::KeyPath;
use crate::config::shared::RawFsync;
use mqlink_spool::FsyncPolicy as Fsync;

/// Rotated files kept by default (Telegraf's `rotation_max_archives` has no default;
/// logrotate's `rotate` is commonly 7 to 14).
const DEFAULT_ROTATE_KEEP: u32 = 10;
/// Most rotated files one may keep: each rotation looks for them one by one.
const MAX_ROTATE_KEEP: u32 = 10_000;

/// `file: {path, rotate_bytes, rotate_keep, fsync, fsync_interval}` as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    path: String,
    rotate_bytes: Option<String>,
    rotate_keep: Option<u32>,
    fsync: Option<RawFsync>,
    fsync_interval: Option<String>,
}

/// The `file` sink's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// Output path (as written, relative to the working directory).
    pub path: PathBuf,
    /// Rotate when the file exceeds this size; default never.
    pub rotate_bytes: Option<u64>,
    /// Rotated files kept (with `rotate_bytes`); default 10, 1..=10000.
    pub rotate_keep: u32,
    /// Default [`Fsync::Always`] (the sink confirms after fsync).
    pub fsync: Fsync,
}

impl Spec for FileConfig {
    type Raw = Raw;
    type Sink = FileSink;

    fn validate(f: Raw, ctx: &Ctx<'_>, p: &KeyPath) -> Result<FileConfig, ConfigError> {
        ctx.non_empty(&f.path, &p.key("path"))?;
        let rotate_keep = match (f.rotate_keep, &f.rotate_bytes) {
            (Some(_), None) => {
                return Err(ctx.err(
                    &p.key("rotate_keep"),
                    "only meaningful with rotate_bytes (without it the file is never rotated)",
                ));
            }
            (Some(n), Some(_)) if !(1..=MAX_ROTATE_KEEP).contains(&n) => {
                return Err(ctx.err(
                    &p.key("rotate_keep"),
                    format!("must be between 1 and {MAX_ROTATE_KEEP}"),
                ));
            }
            (n, _) => n.unwrap_or(DEFAULT_ROTATE_KEEP),
        };
        Ok(FileConfig {
            path: PathBuf::from(f.path),
            rotate_bytes: match f.rotate_bytes.as_deref() {
                Some(s) => Some(ctx.bytes(Some(s), &p.key("rotate_bytes"), 0, 1024)?),
                None => None,
            },
            rotate_keep,
            fsync: ctx.fsync(f.fsync, f.fsync_interval.as_deref(), p)?,
        })
    }

    fn describe(&self) -> String {
        match self.rotate_bytes {
            None => format!("file {}", self.path.display()),
            Some(n) => format!(
                "file {} rotated past {n} bytes, {} rotated kept",
                self.path.display(),
                self.rotate_keep
            ),
        }
    }

    async fn open(&self, _: OpenEnv<'_>) -> Result<(FileSink, Option<Driver>), OpenError> {
        let sink =
            FileSink::open(&self.path, self.rotate_bytes, self.rotate_keep, self.fsync).await?;
        Ok((sink, None))
    }
}

/// Appends records as lines to a file.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    // `None` only while a blocking write owns it.
    inner: Option<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    rotate_bytes: Option<u64>,
    rotate_keep: u32,
    fsync: Fsync,
    file: Option<File>,
    size: u64,
    last_sync: Instant,
    lines: Vec<Vec<u8>>,
    /// Tests only: bytes that may still be written before writes fail as on a full disk
    /// (the last one partially).
    #[cfg(test)]
    room: Option<u64>,
}

impl FileSink {
    /// Open (create or append to) `path`, rotated past `rotate_bytes` with `rotate_keep`
    /// rotated files kept (at least 1).
    ///
    /// # Errors
    /// [`OpenError`] when the file cannot be opened.
    pub async fn open(
        path: &Path,
        rotate_bytes: Option<u64>,
        rotate_keep: u32,
        fsync: Fsync,
    ) -> Result<FileSink, OpenError> {
        let mut inner = Inner {
            path: path.to_path_buf(),
            rotate_bytes,
            rotate_keep: rotate_keep.max(1),
            fsync,
            file: None,
            size: 0,
            last_sync: Instant::now(),
            lines: Vec::new(),
            #[cfg(test)]
            room: None,
        };
        inner.ensure_open().map_err(|e| OpenError {
            kind: "file",
            target: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(FileSink {
            path: path.to_path_buf(),
            inner: Some(inner),
        })
    }
}

impl Deliver for FileSink {
    /// Append the batch; confirmed per the fsync policy.
    ///
    /// # Errors
    /// [`SinkError::Retry`] on any I/O error (the batch is rolled back first).
    async fn deliver(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        let mut inner = match self.inner.take() {
            Some(i) => i,
            None => {
                return Err(SinkError::Retry {
                    done: 0,
                    reason: format!("file {}: writer lost", self.path.display()),
                });
            }
        };
        inner.lines.clear();
        for r in batch {
            let mut line = Vec::with_capacity(128);
            r.write_to(&mut line);
            line.push(b'\n');
            inner.lines.push(line);
        }
        let joined = tokio::task::spawn_blocking(move || {
            let res = inner.write_lines();
            (inner, res)
        })
        .await;
        match joined {
            Ok((inner, res)) => {
                self.inner = Some(inner);
                res.map_err(|(done, e)| SinkError::Retry {
                    done,
                    reason: format!("file {}: {e}", self.path.display()),
                })
            }
            Err(e) => Err(SinkError::Retry {
                done: 0,
                reason: format!("file {}: writer task failed: {e}", self.path.display()),
            }),
        }
    }
}

impl Inner {
    fn ensure_open(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        Ok(())
    }

    fn write_lines(&mut self) -> Result<(), (usize, std::io::Error)> {
        let lines = std::mem::take(&mut self.lines);
        let res = self.write_all_lines(&lines);
        self.lines = lines;
        res
    }

    /// Append `lines`, rotating when a line would pass `rotate_bytes`. On an error, the
    /// count of lines already in files rotated away (written, and synced per the policy
    /// before the rename): they are confirmed, and only the rest is tried again, so a
    /// batch that spans a rotation is not written twice.
    fn write_all_lines(&mut self, lines: &[Vec<u8>]) -> Result<(), (usize, std::io::Error)> {
        self.ensure_open().map_err(|e| (0, e))?;
        // Where a failed append is cut back to: the current file's size before this
        // batch, and 0 in each file a rotation starts.
        let mut rollback = self.size;
        let mut done = 0;
        let mut in_buf = 0;
        let mut buf: Vec<u8> = Vec::new();
        let mut rotated = false;
        for line in lines {
            if let Some(limit) = self.rotate_bytes {
                let pending = self.size + buf.len() as u64;
                if pending > 0 && pending + line.len() as u64 > limit {
                    self.append(&buf, rollback).map_err(|e| (done, e))?;
                    buf.clear();
                    if let Err((moved, e)) = self.rotate() {
                        if moved {
                            // The file went to `path.1`, synced first: its lines are kept.
                            done += in_buf;
                        } else {
                            // Still `path`: take this batch's lines out again, or the
                            // retry would write them a second time.
                            let _ = OpenOptions::new()
                                .write(true)
                                .open(&self.path)
                                .and_then(|f| f.set_len(rollback));
                            self.size = rollback;
                        }
                        return Err((done, e));
                    }
                    done += in_buf;
                    in_buf = 0;
                    rollback = 0;
                    rotated = true;
                }
            }
            buf.extend_from_slice(line);
            in_buf += 1;
        }
        self.append(&buf, rollback).map_err(|e| (done, e))?;
        let due = match self.fsync {
            Fsync::Always => true,
            Fsync::Interval(d) => self.last_sync.elapsed() >= d,
            Fsync::Never => false,
        };
        if due && let Some(f) = &self.file {
            f.sync_data().map_err(|e| (done, e))?;
            self.last_sync = Instant::now();
        }
        if rotated && self.fsync == Fsync::Always {
            sync_dir(&self.path).map_err(|e| (done, e))?;
        }
        Ok(())
    }

    /// Append `buf`; on failure, truncate back to `rollback` and drop the handle so the
    /// next attempt reopens.
    fn append(&mut self, buf: &[u8], rollback: u64) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let Some(f) = self.file.as_mut() else {
            return Err(std::io::Error::other("file not open"));
        };
        #[cfg(test)]
        let written = match self.room {
            Some(room) if (buf.len() as u64) > room => {
                self.room = Some(0);
                f.write_all(&buf[..room as usize])
                    .and(Err(std::io::Error::from(std::io::ErrorKind::StorageFull)))
            }
            room => {
                self.room = room.map(|r| r - buf.len() as u64);
                f.write_all(buf)
            }
        };
        #[cfg(not(test))]
        let written = f.write_all(buf);
        match written {
            Ok(()) => {
                self.size += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = f.set_len(rollback);
                self.file = None;
                Err(e)
            }
        }
    }

    /// Rotate; on an error, whether `path` had already become `path.1`.
    fn rotate(&mut self) -> Result<(), (bool, std::io::Error)> {
        self.rotate_files().map_err(|e| (false, e))?;
        self.ensure_open().map_err(|e| (true, e))
    }

    /// Delete what `rotate_keep` no longer keeps, shift the numbered files, and move
    /// `path` to `path.1`; `path` is untouched unless this succeeds.
    fn rotate_files(&mut self) -> std::io::Result<()> {
        if let Some(f) = self.file.take()
            && self.fsync != Fsync::Never
        {
            f.sync_data()?;
        }
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        let mut highest = 0;
        while numbered(highest + 1).exists() {
            highest += 1;
        }
        // `path.{keep}` would become `path.{keep+1}`: delete it, and any beyond it, oldest
        // first, before anything moves (a crash in between loses only what was to go).
        let keep = self.rotate_keep.max(1);
        for n in (keep..=highest).rev() {
            match fs::remove_file(numbered(n)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        for n in (1..=highest.min(keep - 1)).rev() {
            fs::rename(numbered(n), numbered(n + 1))?;
        }
        fs::rename(&self.path, numbered(1))
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::sink::Body;

    fn rec(v: serde_json::Value) -> Record {
        Record {
            topic: Arc::from("t"),
            source: Bytes::new(),
            part: 0,
            body: Body::Json(v),
            meta: Default::default(),
        }
    }

    #[tokio::test]
    async fn lines_are_appended_and_rotated_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut s = FileSink::open(&path, Some(20), 10, Fsync::Always)
            .await
            .unwrap();
        // Each line is 10 bytes: {"n":100}\n
        s.deliver(&[rec(json!({"n": 100})), rec(json!({"n": 101}))])
            .await
            .unwrap();
        s.deliver(&[rec(json!({"n": 102}))]).await.unwrap();
        s.deliver(&[rec(json!({"n": 103})), rec(json!({"n": 104}))])
            .await
            .unwrap();
        let read = |p: &Path| fs::read_to_string(p).unwrap();
        assert_eq!(read(&path), "{\"n\":104}\n");
        assert_eq!(
            read(&dir.path().join("out.jsonl.1")),
            "{\"n\":102}\n{\"n\":103}\n"
        );
        assert_eq!(
            read(&dir.path().join("out.jsonl.2")),
            "{\"n\":100}\n{\"n\":101}\n"
        );
    }

    /// The disk fills in the second file of a batch that rotates twice: the first file's
    /// lines are confirmed (they are in `out.jsonl.1`), the cut file is rolled back to
    /// empty, and delivering the rest afterwards leaves every line exactly once, none
    /// broken. The rollback used the first file's offset in the new file (padding it
    /// with NUL bytes) and the whole batch was tried again (writing the rotated lines
    /// twice).
    #[tokio::test]
    async fn a_full_disk_after_a_rotation_loses_and_repeats_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut s = FileSink::open(&path, Some(30), 10, Fsync::Always)
            .await
            .unwrap();
        s.deliver(&[rec(json!({"n": 100}))]).await.unwrap();
        // Three lines per file; the disk fills 15 bytes into the batch's second file.
        s.inner.as_mut().unwrap().room = Some(20 + 15);
        let batch: Vec<Record> = (101..109).map(|n| rec(json!({ "n": n }))).collect();
        let done = match s.deliver(&batch).await {
            Err(SinkError::Retry { done, .. }) => done,
            other => panic!("expected a retry, got {other:?}"),
        };
        assert_eq!(done, 2, "the lines of the file rotated away are confirmed");
        s.inner.as_mut().unwrap().room = None;
        s.deliver(&batch[done..]).await.unwrap();
        let mut all = Vec::new();
        for p in ["out.jsonl.2", "out.jsonl.1", "out.jsonl"] {
            let text = fs::read_to_string(dir.path().join(p)).unwrap_or_default();
            assert!(!text.contains('\0'), "{p}: {text:?}");
            for line in text.lines() {
                all.push(serde_json::from_str::<serde_json::Value>(line).unwrap()["n"].clone());
            }
        }
        let want: Vec<serde_json::Value> = (100..109).map(|n| json!(n)).collect();
        assert_eq!(all, want);
    }

    /// Rotations past `rotate_keep` delete the oldest file: after 25 rotations with 3
    /// kept, `out.1` … `out.3` hold the three files before the current one, newest first,
    /// and nothing else is left (before, all 25 stayed: `out.1` … `out.25`).
    #[tokio::test]
    async fn rotation_keeps_only_rotate_keep_files_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        // Each line is 10 bytes ({"n":100}\n), one per file: every record rotates.
        let mut s = FileSink::open(&path, Some(10), 3, Fsync::Never)
            .await
            .unwrap();
        for n in 100..126 {
            s.deliver(&[rec(json!({ "n": n }))]).await.unwrap();
        }
        let read = |name: &str| fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("out"), "{\"n\":125}\n");
        assert_eq!(read("out.1"), "{\"n\":124}\n");
        assert_eq!(read("out.2"), "{\"n\":123}\n");
        assert_eq!(read("out.3"), "{\"n\":122}\n");
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["out", "out.1", "out.2", "out.3"]);
    }

    /// A rotation that fails after part of the batch went into the file (here the rotated
    /// file to delete is a directory) takes those lines out again: the retry, once the
    /// obstacle is gone, writes each line once. They were written twice.
    #[tokio::test]
    async fn a_failed_rotation_leaves_no_line_to_be_written_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        fs::write(dir.path().join("out.1"), "old\n").unwrap();
        fs::create_dir_all(dir.path().join("out.2").join("x")).unwrap();
        let mut s = FileSink::open(&path, Some(10), 2, Fsync::Never)
            .await
            .unwrap();
        let batch = [rec(json!({ "n": 100 })), rec(json!({ "n": 101 }))];
        let err = s.deliver(&batch).await.unwrap_err();
        assert!(matches!(err, SinkError::Retry { done: 0, .. }), "{err:?}");
        fs::remove_dir_all(dir.path().join("out.2")).unwrap();
        s.deliver(&batch).await.unwrap();
        let all: String = ["out", "out.1", "out.2"]
            .iter()
            .map(|n| fs::read_to_string(dir.path().join(n)).unwrap())
            .collect();
        assert_eq!(all.matches("{\"n\":100}").count(), 1, "{all}");
        assert_eq!(all.matches("{\"n\":101}").count(), 1, "{all}");
    }

    /// A smaller `rotate_keep` than an earlier run's: the next rotation deletes what the
    /// earlier run left past it, and keeps the newest.
    #[tokio::test]
    async fn a_lowered_rotate_keep_deletes_older_files_at_the_next_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut s = FileSink::open(&path, Some(10), 10, Fsync::Never)
            .await
            .unwrap();
        for n in 100..106 {
            s.deliver(&[rec(json!({ "n": n }))]).await.unwrap();
        }
        assert!(dir.path().join("out.5").exists());
        drop(s);
        let mut s = FileSink::open(&path, Some(10), 2, Fsync::Never)
            .await
            .unwrap();
        s.deliver(&[rec(json!({ "n": 106 }))]).await.unwrap();
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["out", "out.1", "out.2"]);
        let read = |name: &str| fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("out.1"), "{\"n\":105}\n");
        assert_eq!(read("out.2"), "{\"n\":104}\n");
    }

    #[tokio::test]
    async fn raw_records_are_written_as_lines_of_payload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw");
        let mut s = FileSink::open(&path, None, 10, Fsync::Never).await.unwrap();
        let mut r = rec(json!(null));
        r.body = Body::Raw(Bytes::from_static(b"a b"));
        s.deliver(&[r.clone(), r]).await.unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"a b\na b\n");
    }
}
