//! The [`Reader`]: hands out records in id order from the first
//! unacknowledged one. Recent records come from the in-memory cache; older
//! ones (after a restart, or when the consumer is far behind) are read from
//! segment files in chunks on the blocking thread pool.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::SpoolError;
use crate::record::{self, Decoded, SEGMENT_HEADER_LEN};
use crate::shared::Shared;
use crate::state::Hole;
use crate::storage::Storage;

/// Bytes read from a segment file per blocking read.
const READ_CHUNK: usize = 256 * 1024;

/// A record handed out by the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's id; pass it to [`crate::Spool::ack`] once it is delivered.
    pub id: u64,
    /// The payload as appended.
    pub payload: Bytes,
}

/// Where in a segment file the record with id `id` starts.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    base: u64,
    offset: u64,
    id: u64,
}

/// Reads records in id order, waiting for new appends. Acknowledged and
/// dropped records are never handed out.
#[derive(Debug)]
pub struct Reader {
    shared: Arc<Shared>,
    next_id: u64,
    buf: VecDeque<Record>,
    cursor: Option<Cursor>,
}

enum Step {
    Ready(Record),
    File {
        path: PathBuf,
        base: u64,
        len: u64,
        holes: Vec<Hole>,
    },
    Wait,
    Closed,
}

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>) -> Reader {
        let next_id = shared.lock().ack_point;
        Reader {
            shared,
            next_id,
            buf: VecDeque::new(),
            cursor: None,
        }
    }

    /// The next unacknowledged record, waiting until one is appended.
    ///
    /// # Errors
    /// [`SpoolError::Closed`] once the spool is closed and everything visible
    /// was read; I/O errors or [`SpoolError::Corrupt`] reading a segment file.
    pub async fn next(&mut self) -> Result<Record, SpoolError> {
        loop {
            while let Some(rec) = self.buf.pop_front() {
                // Settled-check and lease under one lock: a drop either happened
                // before (skip it) or will leave this record alone.
                let mut st = self.shared.lock();
                if st.is_settled(rec.id) {
                    continue;
                }
                st.hand_out(rec.id);
                drop(st);
                self.next_id = rec.id + 1;
                return Ok(rec);
            }
            let shared = self.shared.clone();
            let mut notified = pin!(shared.readers.notified());
            notified.as_mut().enable();
            let step = {
                let mut st = shared.lock();
                let id = st.next_unsettled(self.next_id);
                self.next_id = id;
                if id < st.next_visible {
                    if let Some(payload) = st.cached(id) {
                        st.hand_out(id);
                        Step::Ready(Record { id, payload })
                    } else if let Some(seg) = st.segment_for(id) {
                        Step::File {
                            path: seg.path.clone(),
                            base: seg.base,
                            len: seg.len,
                            holes: seg.holes.clone(),
                        }
                    } else {
                        return Err(SpoolError::Corrupt {
                            path: self.shared.dir.clone(),
                            start: 0,
                            end: 0,
                            reason: format!("record {id} is in no live segment"),
                        });
                    }
                } else if st.stopped {
                    Step::Closed
                } else {
                    Step::Wait
                }
            };
            match step {
                Step::Ready(rec) => {
                    self.next_id = rec.id + 1;
                    return Ok(rec);
                }
                Step::File {
                    path,
                    base,
                    len,
                    holes,
                } => self.fill(path, base, len, holes).await?,
                Step::Wait => notified.await,
                Step::Closed => return Err(self.shared.closed()),
            }
        }
    }

    /// Reads the next chunk of records at or after `self.next_id` from a segment.
    async fn fill(
        &mut self,
        path: PathBuf,
        base: u64,
        len: u64,
        holes: Vec<Hole>,
    ) -> Result<(), SpoolError> {
        let want = self.next_id;
        let start = match self.cursor {
            Some(c) if c.base == base && c.id <= want => c,
            _ => Cursor {
                base,
                offset: SEGMENT_HEADER_LEN,
                id: base,
            },
        };
        let storage = self.shared.storage.clone();
        let p = path.clone();
        let res = if self.shared.inline_reads {
            read_chunk(&*storage, &p, start, len, &holes, want)
        } else {
            tokio::task::spawn_blocking(move || read_chunk(&*storage, &p, start, len, &holes, want))
                .await
                .map_err(|e| SpoolError::io("read segment", &path, std::io::Error::other(e)))?
        };
        match res {
            Ok((records, cursor)) => {
                self.cursor = Some(cursor);
                self.buf.extend(records);
                Ok(())
            }
            Err(SpoolError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound
                    && !self.shared.lock().segments.iter().any(|s| s.base == base) =>
            {
                // Deleted while we looked: fully acknowledged, so nothing to read there.
                self.cursor = None;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

fn read_chunk(
    storage: &dyn Storage,
    path: &Path,
    mut at: Cursor,
    seg_len: u64,
    holes: &[Hole],
    want: u64,
) -> Result<(Vec<Record>, Cursor), SpoolError> {
    let mut out = Vec::new();
    let mut size = READ_CHUNK as u64;
    while at.offset < seg_len && out.is_empty() {
        // (A hole may be empty: ids missing with no bytes damaged; the id test
        // makes each hole stepped over once.)
        if let Some(h) = holes
            .iter()
            .find(|h| h.start == at.offset && at.id < h.next_id)
        {
            // Damaged bytes recovery skipped; their ids are settled.
            at.offset = h.end;
            at.id = h.next_id;
            continue;
        }
        let remaining = seg_len - at.offset;
        let n = usize::try_from(remaining.min(size)).unwrap_or(usize::MAX);
        let data = Bytes::from(
            storage
                .read_at(path, at.offset, n)
                .map_err(|e| SpoolError::io("read segment", path, e))?,
        );
        if data.len() < n {
            return Err(corrupt(
                path,
                at.offset,
                seg_len,
                "segment is shorter than its recorded length",
            ));
        }
        let mut pos = 0usize;
        while pos < data.len() {
            let here = at.offset + pos as u64;
            if here != at.offset && holes.iter().any(|h| h.start == here) {
                // Let the outer loop step over it.
                break;
            }
            match record::decode(&data[pos..]) {
                Decoded::Record { id, payload, len } if id == at.id => {
                    if id >= want {
                        let start = pos + record::RECORD_HEADER_LEN as usize;
                        out.push(Record {
                            id,
                            payload: data.slice(start..start + payload.len()),
                        });
                    }
                    pos += len as usize;
                    at.id += 1;
                }
                Decoded::Record { .. } => {
                    return Err(corrupt(path, here, seg_len, "record id out of sequence"));
                }
                Decoded::Corrupt(why) => return Err(corrupt(path, here, seg_len, why)),
                Decoded::Incomplete { needed } => {
                    if pos == 0 {
                        if needed > remaining {
                            return Err(corrupt(
                                path,
                                here,
                                seg_len,
                                "record extends past the valid data",
                            ));
                        }
                        // One record larger than the chunk: read it whole next time round.
                        size = needed;
                    }
                    break;
                }
            }
        }
        at.offset += pos as u64;
    }
    Ok((out, at))
}

fn corrupt(path: &Path, start: u64, end: u64, reason: &str) -> SpoolError {
    SpoolError::Corrupt {
        path: path.to_owned(),
        start,
        end,
        reason: reason.to_string(),
    }
}
