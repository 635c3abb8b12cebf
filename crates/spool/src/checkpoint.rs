//! The ack checkpoint: one small file holding the ack point (every id below
//! it is settled) and the ids acknowledged out of order above it.
//!
//! ```text
//! magic b"MQCK" | crc32 of the rest u32 LE | ack point u64 LE | n u32 LE | n × id u64 LE
//! ```
//!
//! Written as temp file + fsync + rename + directory fsync; a missing or damaged checkpoint only
//! means acknowledged records are delivered again (duplicates, never loss).

use std::path::Path;

use crate::SpoolError;
use crate::storage::Storage;

pub(crate) const CHECKPOINT_FILE: &str = "ack.checkpoint";
const CHECKPOINT_TMP: &str = "ack.checkpoint.tmp";
const MAGIC: &[u8; 4] = b"MQCK";

/// The persisted acknowledgement state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub ack_point: u64,
    /// Acknowledged ids above `ack_point`, ascending.
    pub acked: Vec<u64>,
}

/// Outcome of reading the checkpoint at open.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Loaded {
    Missing,
    Damaged,
    Found(Checkpoint),
}

pub(crate) fn encode(c: &Checkpoint) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + 8 * c.acked.len());
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&c.ack_point.to_le_bytes());
    b.extend_from_slice(
        &u32::try_from(c.acked.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for id in c.acked.iter().take(u32::MAX as usize) {
        b.extend_from_slice(&id.to_le_bytes());
    }
    let crc = crc32fast::hash(&b[8..]);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

pub(crate) fn decode(b: &[u8]) -> Option<Checkpoint> {
    if b.len() < 20 || &b[..4] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(b[4..8].try_into().ok()?);
    if crc32fast::hash(&b[8..]) != crc {
        return None;
    }
    let ack_point = u64::from_le_bytes(b[8..16].try_into().ok()?);
    let n = u32::from_le_bytes(b[16..20].try_into().ok()?) as usize;
    if b.len() != 20 + 8 * n {
        return None;
    }
    let acked = b[20..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    Some(Checkpoint { ack_point, acked })
}

pub(crate) fn load(storage: &dyn Storage, dir: &Path) -> Result<Loaded, SpoolError> {
    let path = dir.join(CHECKPOINT_FILE);
    match storage.read(&path) {
        Ok(b) => Ok(decode(&b).map_or(Loaded::Damaged, Loaded::Found)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Loaded::Missing),
        Err(e) => Err(SpoolError::io("read checkpoint", path, e)),
    }
}

/// Write the checkpoint atomically (temp file + rename). With `durable`, also fsync the
/// file and the directory, as required before deleting segments it covers.
pub(crate) fn store(
    storage: &dyn Storage,
    dir: &Path,
    c: &Checkpoint,
    durable: bool,
) -> Result<(), SpoolError> {
    let tmp = dir.join(CHECKPOINT_TMP);
    let path = dir.join(CHECKPOINT_FILE);
    match storage.remove(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SpoolError::io("remove stale checkpoint", tmp, e)),
    }
    let mut f = storage
        .create_new(&tmp)
        .map_err(|e| SpoolError::io("create checkpoint", &tmp, e))?;
    f.write_all(&encode(c))
        .map_err(|e| SpoolError::io("write checkpoint", &tmp, e))?;
    if durable {
        f.sync()
            .map_err(|e| SpoolError::io("fsync checkpoint", &tmp, e))?;
    }
    storage
        .rename(&tmp, &path)
        .map_err(|e| SpoolError::io("rename checkpoint", &path, e))?;
    if !durable {
        return Ok(());
    }
    // Make the rename durable before the caller deletes segments it covers:
    // the checkpoint also carries the id high-water mark once they are gone.
    storage
        .sync_dir(dir)
        .map_err(|e| SpoolError::io("fsync spool directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_rejects_damage() {
        let c = Checkpoint {
            ack_point: 123_456,
            acked: vec![123_458, 123_460],
        };
        let b = encode(&c);
        assert_eq!(decode(&b), Some(c));
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 1;
            assert_eq!(decode(&bad), None, "flipped byte {i}");
        }
        assert_eq!(decode(&b[..b.len() - 1]), None);
    }
}
