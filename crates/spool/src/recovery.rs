//! Recovery at open: read the checkpoint, scan every segment in id order,
//! verify checksums and id continuity, truncate a torn tail of the last
//! segment, skip torn writes of unsynced data that intact records follow, and
//! refuse (or, if asked, skip and report) damage anywhere else. Intact records
//! are never truncated (crate docs, "Recovery", say how they are found).

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use crate::checkpoint::{self, Checkpoint, Loaded};
use crate::record::{self, Decoded, SEGMENT_HEADER_LEN};
use crate::state::{Hole, SegMeta};
use crate::storage::Storage;
use crate::{FsyncPolicy, OnCorruption, SpoolError};

/// What `open` found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files kept.
    pub segments: usize,
    /// Unacknowledged records that will be delivered again.
    pub records: u64,
    /// Bytes held from the first unacknowledged record on.
    pub bytes: u64,
    /// Id the reader starts at.
    pub first_unacked_id: u64,
    /// Id the next append gets.
    pub next_id: u64,
    /// Whether a valid checkpoint was found (if not, every record on disk is
    /// delivered again).
    pub checkpoint_found: bool,
    /// The torn tail cut off the last segment, if any.
    pub torn_tail: Option<TornTail>,
    /// Damaged ranges skipped: damage under [`OnCorruption::Discard`], and
    /// torn writes of unsynced data followed by intact records (see the crate
    /// docs, "Recovery").
    pub corrupt: Vec<CorruptRange>,
}

/// A damaged end of the last segment, truncated at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub path: PathBuf,
    /// Where the valid data ended; the file now has this length (or was
    /// removed if nothing valid remained).
    pub offset: u64,
    /// Bytes cut off.
    pub bytes_discarded: u64,
    /// Records cut off: the partial record (1). Nothing after it decodes as
    /// an intact record; a bad record followed by intact ones is not a torn
    /// tail and is reported in [`RecoveryReport::corrupt`] or refused.
    pub records_discarded: u64,
}

/// Damage skipped in the middle of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRange {
    /// The damaged file.
    pub path: PathBuf,
    /// First damaged byte.
    pub start: u64,
    /// End (exclusive) of the damaged range.
    pub end: u64,
    /// What was wrong.
    pub reason: String,
    /// Ids lost with it (counted as dropped).
    pub lost_ids: u64,
}

pub(crate) struct Recovered {
    pub segments: Vec<SegMeta>,
    pub ack_point: u64,
    pub next_id: u64,
    pub acked_above: BTreeSet<u64>,
    pub sizes: VecDeque<u32>,
    pub lost: u64,
    pub report: RecoveryReport,
}

pub(crate) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

fn list_segments(storage: &dyn Storage, dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let mut out = Vec::new();
    for path in storage
        .list(dir)
        .map_err(|e| SpoolError::io("list spool directory", dir, e))?
    {
        if path.extension().and_then(|e| e.to_str()) != Some("seg") {
            continue;
        }
        match path.file_stem().and_then(|s| s.to_str()).map(str::parse) {
            Some(Ok(base)) => out.push((base, path)),
            _ => {
                tracing::warn!(path = %path.display(), "ignoring file with a segment extension but no id name")
            }
        }
    }
    out.sort();
    Ok(out)
}

struct Scanner<'a> {
    storage: &'a dyn Storage,
    on_corruption: OnCorruption,
    fsync: FsyncPolicy,
    report: RecoveryReport,
    segments: Vec<SegMeta>,
    /// (id, on-disk size) of every record at or above the checkpoint.
    sizes: Vec<(u64, u32)>,
    /// Ids acknowledged above `floor` per the checkpoint.
    ckpt_acked: BTreeSet<u64>,
    floor: u64,
    /// One past the last id seen so far.
    expected: Option<u64>,
}

impl Scanner<'_> {
    /// How many ids in `from..to` are neither below the checkpoint's ack point
    /// nor acknowledged above it: ids whose loss would matter.
    fn unsettled(&self, from: u64, to: u64) -> u64 {
        let from = from.max(self.floor);
        if to <= from {
            return 0;
        }
        (to - from) - self.ckpt_acked.range(from..to).count() as u64
    }

    fn corrupt(
        &mut self,
        path: &Path,
        start: u64,
        end: u64,
        reason: String,
        lost_ids: u64,
    ) -> Result<(), SpoolError> {
        if self.on_corruption == OnCorruption::Fail {
            return Err(SpoolError::Corrupt {
                path: path.to_owned(),
                start,
                end,
                reason,
            });
        }
        tracing::error!(path = %path.display(), start, end, %reason, lost_ids, "spool: skipping corrupt data; records lost");
        self.report.corrupt.push(CorruptRange {
            path: path.to_owned(),
            start,
            end,
            reason,
            lost_ids,
        });
        Ok(())
    }

    /// Whether data in this segment may never have been fsynced, so a power
    /// loss may have torn it anywhere, not only at its end: the last segment
    /// (its newest group may have been in flight), and every segment under
    /// `Never` (segments are not synced when they are retired).
    fn may_be_unsynced(&self, last: bool) -> bool {
        last || self.fsync == FsyncPolicy::Never
    }

    /// Damaged bytes `start..end` with an intact record (id `next_id`) after
    /// them; `id` is the id the damaged record should have had. Decides
    /// between a torn write of unsynced data (skipped, reported) and media
    /// damage (per `on_corruption`). Never truncates the intact records.
    #[allow(clippy::too_many_arguments)]
    fn damaged(
        &mut self,
        path: &Path,
        data: &[u8],
        start: u64,
        end: u64,
        why: &str,
        id: u64,
        next_id: u64,
        last: bool,
    ) -> Result<(), SpoolError> {
        let lost = self.unsettled(id, next_id);
        let range = format!("ids {id}..{next_id}");
        if self.may_be_unsynced(last) {
            match self.fsync {
                // Only the group in flight when the power failed was unsynced,
                // and none of its appends returned Ok. Its unwritten pages read
                // as zeros; anything else is damage to synced data.
                FsyncPolicy::Always if zero_block_overlaps(data, start, end) => {
                    tracing::warn!(path = %path.display(), start, end, lost_ids = lost,
                        "spool: skipping a torn write of the group in flight at a crash (never acknowledged); keeping the records after it");
                    return self.skipped(
                        path,
                        start,
                        end,
                        format!("torn write ({why}; {range})"),
                        lost,
                    );
                }
                FsyncPolicy::Always => {}
                // Write-back order is not file order: a power loss can leave a torn
                // record before intact ones. Keep those; the torn ones may have been
                // acknowledged, which these policies allow to be lost.
                FsyncPolicy::Interval(_) | FsyncPolicy::Never => {
                    tracing::error!(path = %path.display(), start, end, lost_ids = lost,
                        "spool: skipping damaged records of unsynced data (fsync policy is not always); acknowledged records may be lost; keeping the records after them");
                    return self.skipped(
                        path,
                        start,
                        end,
                        format!("unsynced data torn or damaged ({why}; {range})"),
                        lost,
                    );
                }
            }
        }
        if lost == 0 {
            // Every id in the damaged range is acknowledged per the checkpoint
            // (e.g. skipped by an earlier open under `Discard`): nothing is lost.
            tracing::warn!(path = %path.display(), start, end, %why,
                "spool: damaged bytes hold only acknowledged records; skipping them");
            return Ok(());
        }
        self.corrupt(
            path,
            start,
            end,
            format!("{why} ({range} damaged, intact records follow)"),
            lost,
        )
    }

    /// A bad header, or a bad record with nothing intact after it, in a
    /// segment that is not the last: the rest of it is lost. Damage, unless
    /// the policy is `Never`, which does not sync retired segments, so a
    /// power loss may have torn it.
    /// Under `Never` the torn end is cut off (the file removed if its header
    /// is torn), like the last segment's torn tail, so a later open does not
    /// meet it again; returns whether the file was removed.
    fn lost_rest(
        &mut self,
        path: &Path,
        start: u64,
        end: u64,
        why: &str,
        lost: u64,
    ) -> Result<bool, SpoolError> {
        if !self.may_be_unsynced(false) {
            self.corrupt(path, start, end, why.to_string(), lost)?;
            return Ok(false);
        }
        tracing::error!(path = %path.display(), start, end, lost_ids = lost,
            "spool: cutting off torn unsynced data in a retired segment (fsync policy never); acknowledged records may be lost");
        let reason = format!("unsynced data torn or damaged ({why})");
        self.skipped(path, start, end, reason, lost)?;
        if start == 0 {
            self.storage
                .remove(path)
                .map_err(|e| SpoolError::io("remove torn segment", path, e))?;
            return Ok(true);
        }
        self.storage
            .truncate(path, start)
            .map_err(|e| SpoolError::io("truncate torn segment", path, e))?;
        Ok(false)
    }

    fn skipped(
        &mut self,
        path: &Path,
        start: u64,
        end: u64,
        reason: String,
        lost_ids: u64,
    ) -> Result<(), SpoolError> {
        self.report.corrupt.push(CorruptRange {
            path: path.to_owned(),
            start,
            end,
            reason,
            lost_ids,
        });
        Ok(())
    }

    fn scan(
        &mut self,
        base: u64,
        path: &Path,
        last: bool,
        next_base: Option<u64>,
    ) -> Result<(), SpoolError> {
        let data = self
            .storage
            .read(path)
            .map_err(|e| SpoolError::io("read segment", path, e))?;
        let len = data.len() as u64;
        if let Some(prev_end) = self.expected {
            if base < prev_end {
                return self.corrupt(
                    path,
                    0,
                    len,
                    format!("segment starts at id {base}, overlapping ids before {prev_end}"),
                    0,
                );
            }
            let missing = self.unsettled(prev_end, base);
            if missing > 0 {
                let reason = format!("ids {prev_end}..{base} are missing before this segment");
                self.corrupt(path, 0, 0, reason, missing)?;
            }
        }
        if record::parse_segment_header(&data) != Some(base) {
            if last {
                return self.torn(path, base, 0, len, base, Vec::new());
            }
            let end = next_base.unwrap_or(base);
            let lost = self.unsettled(base, end);
            let removed = self.lost_rest(path, 0, len, "bad segment header", lost)?;
            // The gap up to the next segment is reported here, not again there.
            self.expected = Some(end.max(self.expected.unwrap_or(0)));
            if removed {
                return Ok(());
            }
            // Keep it listed (holding no readable record) so it is deleted
            // once the ack point passes its settled ids.
            self.segments.push(SegMeta {
                base,
                end: base,
                len: SEGMENT_HEADER_LEN,
                path: path.to_owned(),
                holes: Vec::new(),
            });
            return Ok(());
        }
        enum Stop {
            End,
            Bad(&'static str),
            /// An intact record whose id is ahead of the expected one.
            Ahead(u64),
        }
        let mut pos = SEGMENT_HEADER_LEN;
        let mut id = base;
        let mut holes = Vec::new();
        let bad: Option<&'static str> = loop {
            let stop = loop {
                match record::decode(&data[pos as usize..]) {
                    Decoded::Record {
                        id: got, len: rlen, ..
                    } if got == id => {
                        if id >= self.floor {
                            self.sizes
                                .push((id, u32::try_from(rlen).unwrap_or(u32::MAX)));
                        }
                        id += 1;
                        pos += rlen;
                    }
                    Decoded::Record { id: got, .. } if got > id => break Stop::Ahead(got),
                    Decoded::Record { .. } => break Stop::Bad("record id out of sequence"),
                    Decoded::Incomplete { .. } if pos == len => break Stop::End,
                    Decoded::Incomplete { .. } => {
                        break Stop::Bad("record extends past end of file");
                    }
                    Decoded::Corrupt(why) => break Stop::Bad(why),
                }
            };
            let (why, resume) = match stop {
                Stop::End => break None,
                Stop::Ahead(k) => ("ids missing inside the segment", Some((pos, k))),
                Stop::Bad(why) => (
                    why,
                    record::next_intact(&data, pos as usize, id).map(|(p, k)| (p as u64, k)),
                ),
            };
            let Some((next_pos, next_id)) = resume else {
                break Some(why);
            };
            self.damaged(path, &data, pos, next_pos, why, id, next_id, last)?;
            holes.push(Hole {
                start: pos,
                end: next_pos,
                next_id,
            });
            pos = next_pos;
            id = next_id;
        };
        self.expected = Some(id);
        if let Some(why) = bad {
            if last {
                // Nothing intact after it: a torn tail.
                return self.torn(path, base, pos, len, id, holes);
            }
            let end = next_base.unwrap_or(id).max(id);
            let lost = self.unsettled(id, end);
            self.lost_rest(path, pos, len, why, lost)?;
            self.expected = Some(end);
        }
        if last && id == base {
            // Header only: remove it so the writer can create a fresh segment with this base.
            self.storage
                .remove(path)
                .map_err(|e| SpoolError::io("remove empty segment", path, e))?;
            return Ok(());
        }
        self.segments.push(SegMeta {
            base,
            end: id,
            len: pos,
            path: path.to_owned(),
            holes,
        });
        Ok(())
    }

    /// Cuts the last segment at `offset`, where a damaged record starts that
    /// no intact record follows; `end` is the id it should have had.
    fn torn(
        &mut self,
        path: &Path,
        base: u64,
        offset: u64,
        len: u64,
        end: u64,
        holes: Vec<Hole>,
    ) -> Result<(), SpoolError> {
        let tail = TornTail {
            path: path.to_owned(),
            offset,
            bytes_discarded: len - offset,
            records_discarded: 1,
        };
        tracing::warn!(path = %path.display(), offset, bytes = len - offset, "spool: truncating torn tail of last segment");
        self.report.torn_tail = Some(tail);
        if end == base {
            self.storage
                .remove(path)
                .map_err(|e| SpoolError::io("remove torn segment", path, e))?;
        } else {
            self.storage
                .truncate(path, offset)
                .map_err(|e| SpoolError::io("truncate torn segment", path, e))?;
            self.segments.push(SegMeta {
                base,
                end,
                len: offset,
                path: path.to_owned(),
                holes,
            });
        }
        Ok(())
    }
}

/// Sector size assumed for torn writes: storage persists whole sectors.
const SECTOR: u64 = 512;

/// Whether a sector-aligned block of all zero bytes overlaps `start..end`. A
/// page of an appended file that was never written back reads as zeros; media
/// damage (flipped bits, garbage) does not look like that.
fn zero_block_overlaps(data: &[u8], start: u64, end: u64) -> bool {
    let mut block = start / SECTOR * SECTOR;
    while block < end {
        let b = block as usize;
        let e = (block + SECTOR).min(data.len() as u64) as usize;
        if b < e && data[b..e].iter().all(|&x| x == 0) {
            return true;
        }
        block += SECTOR;
    }
    false
}

pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    on_corruption: OnCorruption,
    fsync: FsyncPolicy,
) -> Result<Recovered, SpoolError> {
    let (ckpt, checkpoint_found) = match checkpoint::load(storage, dir)? {
        Loaded::Found(c) => (c, true),
        Loaded::Missing => (Checkpoint::default(), false),
        Loaded::Damaged => {
            tracing::warn!(dir = %dir.display(), "spool: ack checkpoint is damaged; redelivering every record on disk");
            (Checkpoint::default(), false)
        }
    };
    let floor = ckpt.ack_point;
    let ckpt_acked: BTreeSet<u64> = ckpt.acked.into_iter().filter(|&id| id >= floor).collect();
    let files = list_segments(storage, dir)?;
    let mut sc = Scanner {
        storage,
        on_corruption,
        fsync,
        report: RecoveryReport {
            checkpoint_found,
            ..RecoveryReport::default()
        },
        segments: Vec::new(),
        sizes: Vec::new(),
        ckpt_acked,
        floor,
        expected: None,
    };
    for (i, (base, path)) in files.iter().enumerate() {
        let next_base = files.get(i + 1).map(|(b, _)| *b);
        sc.scan(*base, path, i + 1 == files.len(), next_base)?;
    }
    // Ids never go backwards, even if the checkpoint is ahead of the data.
    // Ids never go backwards, not even past records lost with a torn tail that
    // the consumer had already acknowledged: a reused id would count as acked.
    let top_acked = sc.ckpt_acked.last().map_or(0, |&id| id + 1);
    let next_id = sc.expected.unwrap_or(0).max(floor).max(top_acked);
    let first_base = sc.segments.first().map_or(next_id, |s| s.base);
    let ack_point = floor.max(first_base).min(next_id);

    let mut sizes = VecDeque::with_capacity((next_id - ack_point) as usize);
    let mut known = sc
        .sizes
        .iter()
        .filter(|(id, _)| *id >= ack_point)
        .peekable();
    let mut acked_above: BTreeSet<u64> = sc.ckpt_acked.range(ack_point..next_id).copied().collect();
    let mut lost = 0;
    for id in ack_point..next_id {
        match known.peek() {
            Some(&&(kid, size)) if kid == id => {
                sizes.push_back(size);
                known.next();
            }
            _ => {
                // No record with this id (skipped damage, or acknowledged and
                // lost with a torn tail): settle it so the ack point passes it.
                sizes.push_back(0);
                if acked_above.insert(id) {
                    lost += 1;
                }
            }
        }
    }

    // Segments entirely below the ack point are fully acknowledged.
    let mut segments = Vec::new();
    for seg in sc.segments {
        if seg.end <= ack_point {
            storage
                .remove(&seg.path)
                .map_err(|e| SpoolError::io("remove acknowledged segment", &seg.path, e))?;
        } else {
            // What a crashed process wrote may still be only in the page cache.
            // Make what recovery accepted durable before anything is appended
            // after it: torn by a later power loss, a segment that is no longer
            // the last would look like damage.
            storage
                .sync_file(&seg.path)
                .map_err(|e| SpoolError::io("fsync recovered segment", &seg.path, e))?;
            segments.push(seg);
        }
    }
    let mut report = sc.report;
    report.segments = segments.len();
    report.first_unacked_id = ack_point;
    report.next_id = next_id;
    Ok(Recovered {
        segments,
        ack_point,
        next_id,
        acked_above,
        sizes,
        lost,
        report,
    })
}
