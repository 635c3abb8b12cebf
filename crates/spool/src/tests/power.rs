//! A [`Storage`] that models power loss: it remembers how much of each segment
//! file was fsynced, and [`PowerLossStorage::power_cut`] throws away what was
//! not, the way a power cut loses the page cache. Unsynced bytes are torn per
//! 512-byte sector, in any order: each sector of the unsynced range is kept or
//! lost (reads back as zeros) at random, and the file length after the cut is
//! the synced length, the written length or the end of the last kept sector.
//!
//! It can also cut the power *during* the next segment fsync: that fsync fails
//! and from then on every write, sync, truncate, create, rename and remove
//! fails without touching the disk (the machine is off), until `power_cut`
//! has produced the disk image the next boot sees.
//!
//! Data goes through real files (via [`StdStorage`]); real fsyncs are skipped,
//! since durability is what this type decides. Only segment files are torn:
//! the checkpoint and directory entries are taken as written (losing the
//! checkpoint would only cause redelivery, never loss, and the model test
//! checks loss).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::storage::{SegmentFile, StdStorage, Storage};

#[derive(Debug, Default)]
struct Disk {
    /// Written and fsynced length of every segment file created through us.
    files: HashMap<PathBuf, (u64, u64)>,
    /// The power is off: every mutating call fails.
    off: bool,
    /// The next segment fsync cuts the power instead of syncing.
    cut_at_next_sync: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct PowerLossStorage {
    disk: Arc<Mutex<Disk>>,
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "seg")
}

fn power_off() -> io::Error {
    io::Error::other("power is off")
}

impl PowerLossStorage {
    /// The next segment fsync cuts the power (and fails).
    pub(crate) fn cut_at_next_sync(&self) {
        self.disk.lock().unwrap().cut_at_next_sync = true;
    }

    /// Cuts the power now (if it is still on) and leaves on disk what a
    /// reboot would find: synced bytes, plus unsynced sectors chosen by
    /// `seed`. The power is back on afterwards. Call it only once the spool's
    /// writer thread has stopped.
    pub(crate) fn power_cut(&self, seed: u64) {
        let mut disk = self.disk.lock().unwrap();
        let mut rng = XorShift(seed | 1);
        for (path, (written, synced)) in &mut disk.files {
            if *written <= *synced {
                continue;
            }
            let mut data = std::fs::read(path).unwrap();
            assert_eq!(data.len() as u64, *written, "{}", path.display());
            let mut last_kept = *synced;
            let mut sector = *synced / 512 * 512;
            while sector < *written {
                let from = sector.max(*synced) as usize;
                let to = (sector + 512).min(*written) as usize;
                if rng.next() & 1 == 0 {
                    last_kept = to as u64;
                } else {
                    data[from..to].fill(0);
                }
                sector += 512;
            }
            let len = match rng.next() % 3 {
                0 => *synced,
                1 => *written,
                _ => last_kept,
            };
            data.truncate(len as usize);
            std::fs::write(path, &data).unwrap();
            *written = len;
            *synced = len;
        }
        disk.off = false;
        disk.cut_at_next_sync = false;
    }

    fn on<T>(&self, f: impl FnOnce(&mut Disk) -> io::Result<T>) -> io::Result<T> {
        let mut disk = self.disk.lock().unwrap();
        if disk.off {
            return Err(power_off());
        }
        f(&mut disk)
    }
}

#[derive(Debug)]
struct SimFile {
    inner: Box<dyn SegmentFile>,
    path: PathBuf,
    storage: PowerLossStorage,
}

impl SegmentFile for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.storage.on(|disk| {
            self.inner.write_all(buf)?;
            if let Some(f) = disk.files.get_mut(&self.path) {
                f.0 += buf.len() as u64;
            }
            Ok(())
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        self.storage.on(|disk| {
            let Some(f) = disk.files.get_mut(&self.path) else {
                return Ok(());
            };
            if disk.cut_at_next_sync {
                disk.off = true;
                return Err(io::Error::from_raw_os_error(5));
            }
            f.1 = f.0;
            Ok(())
        })
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.storage.on(|disk| {
            self.inner.truncate(len)?;
            if let Some(f) = disk.files.get_mut(&self.path) {
                f.0 = len;
                f.1 = f.1.min(len);
            }
            Ok(())
        })
    }
}

impl Storage for PowerLossStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.on(|_| StdStorage.create_dir_all(dir))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        StdStorage.list(dir)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        self.on(|disk| {
            let inner = StdStorage.create_new(path)?;
            if is_segment(path) {
                disk.files.insert(path.to_owned(), (0, 0));
            }
            Ok(Box::new(SimFile {
                inner,
                path: path.to_owned(),
                storage: self.clone(),
            }) as Box<dyn SegmentFile>)
        })
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        StdStorage.read(path)
    }
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        StdStorage.read_at(path, offset, len)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.on(|disk| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(len)?;
            // Storage::truncate syncs.
            if let Some(f) = disk.files.get_mut(path) {
                *f = (len, len);
            }
            Ok(())
        })
    }
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        self.on(|disk| {
            if let Some(f) = disk.files.get_mut(path) {
                f.1 = f.0;
            }
            Ok(())
        })
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.on(|_| StdStorage.rename(from, to))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.on(|disk| {
            StdStorage.remove(path)?;
            disk.files.remove(path);
            Ok(())
        })
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        self.on(|_| Ok(()))
    }
}

/// Deterministic pseudo-random numbers from a proptest-chosen seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
