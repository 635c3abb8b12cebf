//! The simulated disk: a [`Storage`] in memory that keeps, per file, the bytes written
//! (the page cache) apart from the bytes made durable by a sync. A process crash keeps
//! the page cache; a power loss ([`SimDisk::power_loss`]) takes every file back to its
//! durable bytes. It can fill up (writes fail with `ENOSPC` after writing what fits) and
//! flip a byte of a durable record ([`SimDisk::flip_record_byte`]).
//!
//! Directory operations (create, rename, remove) are durable at once: the spool syncs the
//! directory where it matters, and this model does not test that. A renamed file carries
//! its durable bytes with it, so a checkpoint renamed without a sync reads back empty
//! after a power loss (as on XFS, or ext4 without `auto_da_alloc`).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use mqlink_spool::{SegmentFile, Storage};

use super::rng::Rng;

#[derive(Debug, Default)]
struct File {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug)]
struct Disk {
    files: BTreeMap<PathBuf, File>,
    /// Bytes of file data the disk holds at most.
    capacity: u64,
}

impl Disk {
    fn used(&self) -> u64 {
        self.files.values().map(|f| f.data.len() as u64).sum()
    }
}

/// Shared handle to the simulated disk.
#[derive(Debug, Clone)]
pub(crate) struct SimDisk(Arc<Mutex<Disk>>);

/// A record whose byte was flipped: the file, and the event in it.
#[derive(Debug, Clone)]
pub(crate) struct Flipped {
    pub path: PathBuf,
    pub spool_id: u64,
    pub payload: Vec<u8>,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

impl SimDisk {
    pub(crate) fn new() -> SimDisk {
        SimDisk(Arc::new(Mutex::new(Disk {
            files: BTreeMap::new(),
            capacity: u64::MAX,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Power loss: every file holds only what was synced.
    pub(crate) fn power_loss(&self) {
        for f in self.lock().files.values_mut() {
            f.data = f.durable.clone();
        }
    }

    /// The disk fills up `headroom` bytes from now (`None`: room again).
    pub(crate) fn fill(&self, headroom: Option<u64>) {
        let mut d = self.lock();
        d.capacity = match headroom {
            Some(h) => d.used() + h,
            None => u64::MAX,
        };
    }

    /// Flip one byte inside a record that is durable in some segment (header and payload
    /// both possible), in the page cache and on the medium alike.
    pub(crate) fn flip_record_byte(&self, rng: &mut Rng) -> Option<Flipped> {
        let mut d = self.lock();
        let mut records = Vec::new();
        for (path, f) in &d.files {
            if path.extension().is_none_or(|x| x != "seg") {
                continue;
            }
            let b = &f.durable;
            let mut at = 16usize;
            while at + 16 <= b.len() {
                let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default()) as usize;
                let end = at + 16 + len;
                if end > b.len() || end > f.data.len() {
                    break;
                }
                let id = u64::from_le_bytes(b[at + 8..at + 16].try_into().unwrap_or_default());
                records.push((path.clone(), at, end, id));
                at = end;
            }
        }
        if records.is_empty() {
            return None;
        }
        let (path, start, end, id) = records[rng.below(records.len() as u64) as usize].clone();
        let f = d.files.get_mut(&path)?;
        let payload = f.durable[start + 16..end].to_vec();
        let at = start + rng.below((end - start) as u64) as usize;
        let bit = 1u8 << rng.below(8);
        f.durable[at] ^= bit;
        f.data[at] ^= bit;
        Some(Flipped {
            path,
            spool_id: id,
            payload,
        })
    }
}

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    path: PathBuf,
}

impl SegmentFile for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut d = self.disk.lock();
        let room = d.capacity.saturating_sub(d.used());
        let f = d
            .files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        if (buf.len() as u64) > room {
            // A short write, as a real full disk gives.
            f.data.extend_from_slice(&buf[..room as usize]);
            return Err(enospc());
        }
        f.data.extend_from_slice(buf);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        let mut d = self.disk.lock();
        let f = d
            .files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        f.durable = f.data.clone();
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut d = self.disk.lock();
        let f = d
            .files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        f.data.truncate(len as usize);
        Ok(())
    }
}

impl Storage for SimDisk {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(self
            .lock()
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect())
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let mut d = self.lock();
        if d.files.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists"));
        }
        d.files.insert(path.to_path_buf(), File::default());
        Ok(Box::new(SimFile {
            disk: self.clone(),
            path: path.to_path_buf(),
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let d = self.lock();
        Ok(d.files
            .get(path)
            .ok_or_else(|| not_found(path))?
            .data
            .clone())
    }
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let d = self.lock();
        let f = d.files.get(path).ok_or_else(|| not_found(path))?;
        let start = (offset as usize).min(f.data.len());
        let end = start.saturating_add(len).min(f.data.len());
        Ok(f.data[start..end].to_vec())
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut d = self.lock();
        let f = d.files.get_mut(path).ok_or_else(|| not_found(path))?;
        f.data.truncate(len as usize);
        f.durable = f.data.clone();
        Ok(())
    }
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut d = self.lock();
        let f = d.files.get_mut(path).ok_or_else(|| not_found(path))?;
        f.durable = f.data.clone();
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut d = self.lock();
        let f = d.files.remove(from).ok_or_else(|| not_found(from))?;
        d.files.insert(to.to_path_buf(), f);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.lock()
            .files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}
