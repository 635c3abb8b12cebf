//! The filesystem seam. The spool does all file I/O through [`Storage`] and
//! [`SegmentFile`], so tests can inject short writes, `ENOSPC` and fsync
//! failures; [`StdStorage`] is the real implementation over `std::fs`.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};

/// A file opened for appending records.
pub trait SegmentFile: Send + Debug {
    /// Writes the whole buffer at the end of the file.
    ///
    /// # Errors
    /// Any I/O error; part of the buffer may have been written.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Forces written data to stable storage (`fdatasync`).
    ///
    /// # Errors
    /// Any I/O error. After a failure the file's contents are unknown.
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes (used to undo a failed write).
    ///
    /// # Errors
    /// Any I/O error.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// Directory and file operations the spool needs.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Creates `dir` (and parents) if missing; owner-only (0700) on unix.
    ///
    /// # Errors
    /// Any I/O error.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Lists the paths of the regular files in `dir`.
    ///
    /// # Errors
    /// Any I/O error.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Creates a new file (failing if it exists) for appending.
    ///
    /// # Errors
    /// Any I/O error, `AlreadyExists` included.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Reads a whole file.
    ///
    /// # Errors
    /// Any I/O error.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Reads up to `len` bytes at `offset` (fewer at end of file).
    ///
    /// # Errors
    /// Any I/O error.
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Cuts an existing file to `len` bytes and syncs it.
    ///
    /// # Errors
    /// Any I/O error.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Forces an existing file's data to stable storage (`fdatasync`).
    ///
    /// # Errors
    /// Any I/O error.
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`.
    ///
    /// # Errors
    /// Any I/O error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    ///
    /// # Errors
    /// Any I/O error, `NotFound` included.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Syncs a directory so created, renamed and removed entries are durable.
    ///
    /// # Errors
    /// Any I/O error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// [`Storage`] over `std::fs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdStorage;

#[derive(Debug)]
struct StdSegmentFile(std::fs::File);

impl SegmentFile for StdSegmentFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        io::Write::write_all(&mut self.0, buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        // The file is opened in append mode, so the next write lands at the new end.
        self.0.set_len(len)
    }
}

impl Storage for StdStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                out.push(entry.path());
            }
        }
        Ok(out)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(StdSegmentFile(f)))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(len);
        f.take(len as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .sync_data()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            std::fs::File::open(dir)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            let _ = dir;
            Ok(())
        }
    }
}

#[cfg(test)]
pub(crate) mod faulty {
    //! A [`Storage`] that injects failures into the next segment write or sync.

    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    /// Switches shared between the test and the files it hands out.
    #[derive(Debug, Default)]
    pub(crate) struct Faults {
        /// The next segment write fails with ENOSPC after writing nothing.
        pub enospc_next_write: AtomicBool,
        /// The next segment write writes half its buffer, then fails with ENOSPC.
        pub short_next_write: AtomicBool,
        /// The next segment sync fails with EIO.
        pub fail_next_sync: AtomicBool,
        /// Counts down on each segment sync; the sync that brings it from 1 to 0 fails.
        pub fail_sync_countdown: AtomicU64,
        /// Segment writes started (segment headers included).
        pub writes_started: AtomicU64,
        /// While closed, segment writes wait (lets a test queue appends behind one).
        pub hold_writes: Gate,
        /// A full disk: every write (segments and checkpoint) fails with ENOSPC after
        /// writing nothing, until a file is removed (which gives space back).
        pub disk_full: AtomicBool,
    }

    /// A gate writer threads wait at while a test holds it closed.
    #[derive(Debug, Default)]
    pub(crate) struct Gate {
        closed: std::sync::Mutex<bool>,
        opened: std::sync::Condvar,
    }

    impl Gate {
        pub fn close(&self) {
            *self.closed.lock().unwrap() = true;
        }

        pub fn open(&self) {
            *self.closed.lock().unwrap() = false;
            self.opened.notify_all();
        }

        fn pass(&self) {
            let closed = self.closed.lock().unwrap();
            drop(self.opened.wait_while(closed, |c| *c).unwrap());
        }
    }

    #[derive(Debug, Clone, Default)]
    pub(crate) struct FaultyStorage {
        pub faults: Arc<Faults>,
    }

    #[derive(Debug)]
    struct FaultyFile {
        inner: Box<dyn SegmentFile>,
        faults: Arc<Faults>,
    }

    fn enospc() -> io::Error {
        io::Error::from_raw_os_error(28)
    }

    impl SegmentFile for FaultyFile {
        fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
            self.faults.writes_started.fetch_add(1, Ordering::SeqCst);
            self.faults.hold_writes.pass();
            if self.faults.disk_full.load(Ordering::SeqCst) {
                return Err(enospc());
            }
            if self.faults.enospc_next_write.swap(false, Ordering::SeqCst) {
                return Err(enospc());
            }
            if self.faults.short_next_write.swap(false, Ordering::SeqCst) {
                self.inner.write_all(&buf[..buf.len() / 2])?;
                return Err(enospc());
            }
            self.inner.write_all(buf)
        }
        fn sync(&mut self) -> io::Result<()> {
            let countdown = self.faults.fail_sync_countdown.fetch_update(
                Ordering::SeqCst,
                Ordering::SeqCst,
                |n| n.checked_sub(1),
            );
            if self.faults.fail_next_sync.swap(false, Ordering::SeqCst) || countdown == Ok(1) {
                return Err(io::Error::from_raw_os_error(5));
            }
            self.inner.sync()
        }
        fn truncate(&mut self, len: u64) -> io::Result<()> {
            self.inner.truncate(len)
        }
    }

    impl Storage for FaultyStorage {
        fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
            StdStorage.create_dir_all(dir)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
            StdStorage.list(dir)
        }
        fn create_new(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
            Ok(Box::new(FaultyFile {
                inner: StdStorage.create_new(path)?,
                faults: self.faults.clone(),
            }))
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            StdStorage.read(path)
        }
        fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
            StdStorage.read_at(path, offset, len)
        }
        fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
            StdStorage.truncate(path, len)
        }
        fn sync_file(&self, path: &Path) -> io::Result<()> {
            StdStorage.sync_file(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            StdStorage.rename(from, to)
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            StdStorage.remove(path)?;
            // Removing a segment with records in it frees space; an empty file (a segment
            // whose header could not be written, a checkpoint tmp) frees none.
            if path.extension().is_some_and(|x| x == "seg") && len > 0 {
                self.faults.disk_full.store(false, Ordering::SeqCst);
            }
            Ok(())
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            StdStorage.sync_dir(dir)
        }
    }
}
