//! A durable, bounded, append-only on-disk queue with group commit and
//! out-of-order acknowledgement. It knows nothing of MQTT: producers append
//! opaque payloads, one consumer reads them in order and acknowledges each
//! once it is delivered elsewhere.
//!
//! # Data flow
//!
//! ```text
//! append / append_batch ──admission (max_bytes, OnFull)──► queue ──► writer thread
//!     ▲                                                               │ one write + one fsync
//!     └──────────── oneshot reply after the group is durable ◄───────┤ per group
//!                                                                     ▼
//! Reader::next ◄── in-memory cache of recent records ◄── visible ── segment files
//!     │            (or segment files, read on the blocking pool)
//!     └──► consumer ──► Spool::ack(id) ──► ack point ──► checkpoint file ──► delete old segments
//! ```
//!
//! Modules: [`options`](SpoolOptions) (configuration), `record` (byte format),
//! `storage` (the filesystem seam), `recovery` (scan at open), `checkpoint`,
//! `state` (pure bookkeeping under one mutex), `writer` (the writer thread),
//! `spool` (the handle), `reader`, `log_limit` (rate-limited warnings).
//!
//! # Files and record format
//!
//! A spool is a directory (created 0700 on unix) holding segment files named
//! `{first id:020}.seg` and one checkpoint file `ack.checkpoint`.
//!
//! ```text
//! segment header: magic b"MQSPOOL1" | base id u64 LE                  (16 bytes)
//! record:         len u32 LE | crc u32 LE | id u64 LE | payload[len]   (16 + len bytes)
//!                 crc = CRC32 (crc32fast) of len LE ++ id LE ++ payload
//! checkpoint:     magic b"MQCK" | crc32 of the rest | ack point u64 LE | n u32 LE | n × acked id u64 LE
//! ```
//!
//! Ids are a monotonic u64, contiguous within and across segments; the id of
//! every record is stored and checked, so a misplaced record is detected.
//! Ids never go backwards across restarts, even once every segment is deleted
//! (the checkpoint carries the high-water mark).
//! A segment rolls over when the next group would push it past
//! `segment_bytes` (default 64 MiB); a group is never split across segments,
//! so a single oversized group makes one oversized segment.
//!
//! # Group commit and fsync
//!
//! Appends never touch files. They reserve space, push a job onto a queue and
//! await a oneshot reply (so they never block the async runtime, apart from a
//! short mutex). One dedicated writer thread (`std::thread`, stopped by
//! [`Spool::close`] or when the last handle is dropped) loops: take *every*
//! queued job, assign ids, encode all records into one buffer, `write_all` it
//! to the active segment, then per [`FsyncPolicy`]:
//!
//! - `Always` (default): one `fdatasync` for the whole group, *then* the
//!   records become visible to the reader and every appender in the group gets
//!   `Ok`. While the writer is in fsync, new appends pile up and form the next
//!   group, so throughput grows with concurrency: one writer costs one fsync per
//!   record; 64 concurrent writers share one. Survives power loss.
//! - `Interval(d)`: appenders get `Ok` after the write; the writer fsyncs at
//!   most every `d` (and when idle with unsynced data). A process crash loses
//!   nothing (the data is in the page cache); a power loss or kernel crash can
//!   lose up to `d` of acknowledged appends.
//! - `Never`: data is fsynced only at close (not per group, not at segment
//!   roll-over; close syncs every segment this process wrote to); the OS
//!   writes back when it likes. Fastest; survives a process crash, not a
//!   power loss. Data written by a process that crashed is synced by nobody:
//!   a later power loss can still take what the OS had not written back.
//!
//! A new segment's directory entry is made durable (directory fsync) before
//! any record in it is acknowledged. When a segment is retired the writer
//! syncs it first (unless `Never`).
//!
//! # Failures while appending (fsyncgate)
//!
//! - A failed `write` (e.g. `ENOSPC`, or a short write) fails the appends of
//!   that group with [`SpoolError::Io`] naming the file and operation; the
//!   writer cuts the segment back to its length before the group, so earlier
//!   records are untouched and later appends may succeed once space returns.
//!   A full disk fails every append of a burst: the WARN is logged for the
//!   first, then at most once every 10 s with the count of failures
//!   suppressed in between (each append still gets its own error).
//!   If the cut fails too, the spool is poisoned (below).
//! - A failed `fsync` poisons the spool: Linux may have dropped the dirty pages
//!   and a later fsync would report success without them (the 2018 PostgreSQL
//!   "fsyncgate" lesson). Every append waiting on that fsync fails, and every
//!   later append fails with [`SpoolError::Poisoned`] until the spool is
//!   reopened, when recovery re-reads and checksums what is really on disk.
//!   The writer also cuts the segment back to where the failed group began
//!   (everything before was covered by an earlier, successful fsync), so the
//!   refused records are normally not delivered after the reopen; if that cut
//!   fails they may be (a duplicate of an event the caller refused, never a
//!   loss). Records acknowledged by an earlier, successful fsync are not
//!   touched.
//!   The reader and acks keep working while poisoned.
//!
//! # Size bound
//!
//! `max_bytes` bounds the on-disk bytes (headers included) from the ack point
//! on, plus bytes reserved by appends in flight. Records acknowledged out of
//! order above the ack point still count until the ack point passes them:
//! this makes `max_bytes` a true bound on disk use (at most `max_bytes` plus
//! one partly acknowledged segment). A record or batch larger than
//! `max_bytes` fails with [`SpoolError::TooLarge`]. When an append does not
//! fit, [`OnFull`] decides: `Reject` returns [`AppendOutcome::Full`]
//! (counted, WARN logged at most every 10 s); `Block` waits until acks free
//! space (counted, WARN); `DropOldest` drops the oldest records *no reader
//! has handed out yet*, logs the dropped id range at ERROR and counts each
//! one. A record handed out and not yet acknowledged is leased: the consumer
//! holds it (read ahead, or in flight to the broker) and is about to deliver
//! it, so it is never dropped, and a counted drop is always a drop made: the
//! reader checks and leases a record under the same lock the drop takes, so
//! a dropped record, even one already in the reader's buffer, is never handed
//! out, and is not delivered after a restart once the checkpoint passes it.
//! A record dropped above leased ones frees its bytes in the bound at once,
//! though its segment stays on disk until the leased records before it are
//! acknowledged (so disk use may exceed `max_bytes` by the consumer's
//! read-ahead). If only leased records (and appends in flight) fill the
//! spool, `DropOldest` waits like `Block` until acks free space.
//! [`SpoolStats::oldest_unacked_id`] names the record delivery waits on.
//!
//! # Reading
//!
//! Records become visible when their group is committed (after the fsync under
//! `Always`). The reader hands out visible, unsettled records in id order.
//! Recent records (up to `memory_bytes`) are served from an in-memory cache
//! of the appended `Bytes`; otherwise the reader reads the segment file in
//! 256 KiB chunks on tokio's blocking pool, remembering its file position.
//!
//! # Acknowledgement and checkpoint
//!
//! Acks may arrive in any order. The *ack point* is the smallest id not yet
//! acknowledged: every id below it is settled; acks above it are kept in a
//! set until the gap closes. The writer persists the ack point at most every
//! `checkpoint_interval` (default 1 s), at close, and on [`Spool::checkpoint`]:
//! write `ack.checkpoint.tmp` and rename it over `ack.checkpoint`. Only when
//! segments are about to be deleted is the checkpoint made durable first (fsync
//! the file before the rename, fsync the directory after): deletion must never
//! get ahead of a checkpoint that a power loss could take back. It is also
//! made durable at open when recovery settled ids it could not find (lost with
//! a torn tail): records appended after that gap must never be on disk without
//! the checkpoint that explains it, or the next recovery would take the gap for
//! damage. Otherwise the
//! rename alone survives a crash of the process (the page cache outlives it),
//! and a checkpoint lost to a power cut only causes redelivery; skipping those
//! two fsyncs keeps a frequent checkpoint from competing with the group-commit
//! fsync of appends on the same device. The checkpoint holds
//! the ack point *and* the ids acknowledged out of order above it, so after a
//! clean close nothing acknowledged is delivered again. Losing or corrupting
//! the checkpoint (a crash before it is written) only moves the ack point
//! back: records acknowledged since are delivered again, i.e. duplicates,
//! which at-least-once delivery allows. The checkpoint is not written per ack on purpose: acks arrive at
//! publish rate and an fsync each would halve throughput for no gain in safety.
//!
//! # Deleting segments
//!
//! Right after a checkpoint is written, the writer deletes every segment
//! whose last id is below the persisted ack point, except the active one, so
//! a segment is deleted only when every record in it is acknowledged (or
//! dropped) and the checkpoint says so. Recovery deletes such segments too.
//! After a write failed (a full disk), the active segment is deleted as well
//! once all of it is acknowledged, and the next append starts a new one: a
//! segment larger than the free space would otherwise never fill up and roll
//! over, and the space of its acknowledged records would never come back.
//!
//! # Recovery
//!
//! [`Spool::open`] reads the checkpoint (missing or damaged: start from the
//! oldest record, WARN) and scans every segment in id order, checking the
//! header, each record's checksum and that ids are contiguous.
//!
//! A bad record (checksum mismatch, impossible length, wrong id) is followed
//! either by nothing intact or by intact records. To tell which, recovery
//! looks for the next intact record: scanning forward byte by byte (the
//! damaged length field cannot be trusted) for a position where a record
//! decodes with a valid CRC32 and an id at or after the expected one, and
//! no further ahead than the bytes in between can hold (each record takes at
//! least 16 bytes). The id filter makes the scan cost about one comparison
//! per byte, and with the CRC over length, id and payload a false match needs
//! a one-in-2^32 accident. Intact records are never truncated.
//!
//! - **Torn tail** — a bad record of the *last* segment with nothing intact
//!   after it: it and the rest of the file are truncated and reported in
//!   [`RecoveryReport::torn_tail`] (file, offset, bytes). After a crash this
//!   is the normal result of a group whose write or fsync did not finish, so
//!   under `Always` only records whose append never returned `Ok` are cut.
//!   Under `Never`, retired segments are not synced either, so a torn end of
//!   one of them is cut off the same way (reported in
//!   [`RecoveryReport::corrupt`], ERROR: acknowledged records may be lost).
//! - **Torn write before intact records, in data that may be unsynced** (the
//!   last segment; every segment under `Never`, which does not sync retired
//!   segments). Page write-back order is not file order, so a power loss can
//!   leave a torn record *followed by* intact ones. Under `Always` only the
//!   group in flight at the crash was unsynced and none of its appends
//!   returned `Ok`; its unwritten pages read as zeros, so a damaged range
//!   overlapping a 512-byte-aligned block of zeros is taken for that: the
//!   damaged bytes are skipped, the records after them kept, WARN. (Payloads
//!   holding 512 zero bytes in a row weaken this test: media damage to such
//!   a record is skipped as torn instead of refused.) Under `Interval` and
//!   `Never` acknowledged records may be unsynced, so any
//!   damage there is treated as torn: skipped, records after it kept, logged
//!   at ERROR (acknowledged records may be among the lost, as those policies
//!   allow). Either way the range is listed in [`RecoveryReport::corrupt`] and
//!   its ids counted as dropped, whatever `on_corruption` says.
//! - **Damage** — anything else: a bad record with intact records after it in
//!   synced data (under `Always`: not zeros, e.g. flipped bits), a bad record
//!   or header in a non-last segment (except under `Never`), a missing or
//!   overlapping id range. It is
//!   never skipped silently. With [`OnCorruption::Fail`] (default) `open`
//!   returns [`SpoolError::Corrupt`] naming the file and the damaged byte
//!   range, and changes nothing on disk, for an operator to inspect. With
//!   [`OnCorruption::Discard`] only the damaged bytes are skipped (the reader
//!   steps over them; a bad record with nothing intact after it in a non-last
//!   segment loses the rest of that segment), reported in
//!   [`RecoveryReport::corrupt`], logged at ERROR, and the lost ids counted as
//!   dropped. Damage that holds only ids the checkpoint settled (e.g. skipped
//!   by an earlier `Discard` open) costs nothing and only logs a WARN.
//!
//! Recovery then fsyncs every segment it keeps: a crashed process may have
//! left records in the page cache only, and once new segments follow them, a
//! power loss tearing them would look like damage. So after `open`, every
//! record it reports is durable, whatever the fsync policy.
//!
//! After recovery, every record not acknowledged (per the checkpoint) is
//! delivered again, in order, starting at the ack point.
//!
//! # Limits
//!
//! Memory: 4 bytes per record between the ack point and the newest record
//! (record sizes, for the size bound), plus the acknowledged-above set and the
//! cache. A payload must be smaller than 4 GiB. Under `Never` the writer
//! keeps one open file per live segment (to sync them at close).

mod checkpoint;
mod error;
mod log_limit;
mod options;
mod reader;
mod record;
mod recovery;
mod shared;
mod spool;
mod state;
mod storage;
mod writer;

#[cfg(test)]
mod tests;

pub use error::SpoolError;
pub use options::{FsyncPolicy, OnCorruption, OnFull, SpoolOptions};
pub use reader::{Reader, Record};
pub use recovery::{CorruptRange, RecoveryReport, TornTail};
pub use spool::{AppendOutcome, Spool, SpoolStats};
pub use storage::{SegmentFile, StdStorage, Storage};
