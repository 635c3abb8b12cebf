//! Behaviour tests of the whole spool against real files in temp dirs, with
//! [`FaultyStorage`] for injected I/O failures, and the model-based property test.

mod logs;
mod model;
mod power;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::storage::faulty::FaultyStorage;
use super::*;

/// Small segments, no timed checkpoints (tests call `checkpoint` explicitly).
fn opts() -> SpoolOptions {
    SpoolOptions {
        segment_bytes: 1024,
        checkpoint_interval: Duration::from_secs(3600),
        ..SpoolOptions::default()
    }
}

/// 300-byte payloads take 316 bytes on disk: three fill a 1024-byte spool
/// or segment.
fn full_opts(on_full: OnFull) -> SpoolOptions {
    SpoolOptions {
        max_bytes: 1024,
        on_full,
        ..opts()
    }
}

fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut p = vec![(i % 251) as u8; len];
    if len >= 8 {
        p[..8].copy_from_slice(&i.to_le_bytes());
    }
    p
}

async fn append(s: &Spool, p: Vec<u8>) -> u64 {
    match s.append(p).await.unwrap() {
        AppendOutcome::Appended { first_id, count: 1 } => first_id,
        other => panic!("unexpected {other:?}"),
    }
}

async fn read_n(r: &mut Reader, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(r.next().await.unwrap().id);
    }
    ids
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn appended_records_are_read_back_in_order_with_their_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, report) = Spool::open(dir.path(), opts()).unwrap();
    assert_eq!(report.records, 0);
    let mut r = spool.reader();
    for i in 0..10 {
        assert_eq!(append(&spool, payload(i, 50)).await, i);
    }
    for i in 0..10 {
        let rec = r.next().await.unwrap();
        assert_eq!((rec.id, rec.payload.to_vec()), (i, payload(i, 50)));
    }
    assert_eq!(spool.stats().records, 10);
    spool.close().await.unwrap();
}

#[tokio::test]
async fn batch_gets_contiguous_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), opts()).unwrap();
    append(&spool, payload(0, 10)).await;
    let out = spool
        .append_batch((1..6).map(|i| payload(i, 10).into()).collect())
        .await
        .unwrap();
    assert_eq!(
        out,
        AppendOutcome::Appended {
            first_id: 1,
            count: 5
        }
    );
    assert_eq!(read_n(&mut spool.reader(), 6).await, vec![0, 1, 2, 3, 4, 5]);
    assert!(matches!(
        spool.append_batch(vec![]).await,
        Err(SpoolError::EmptyBatch)
    ));
}

#[tokio::test]
async fn reader_waits_for_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), opts()).unwrap();
    let mut r = spool.reader();
    let waiting = tokio::spawn(async move { r.next().await.unwrap().id });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    append(&spool, payload(0, 10)).await;
    assert_eq!(waiting.await.unwrap(), 0);
}

#[tokio::test]
async fn reader_reads_segment_files_when_records_are_not_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let o = SpoolOptions {
        memory_bytes: 0,
        ..opts()
    };
    let (spool, _) = Spool::open(dir.path(), o).unwrap();
    for i in 0..20 {
        append(&spool, payload(i, 100)).await;
    }
    // Larger than the 256 KiB read chunk and than a segment.
    let big = payload(20, 300 * 1024);
    append(&spool, big.clone()).await;
    append(&spool, payload(21, 100)).await;
    assert!(segment_files(dir.path()).len() > 2);
    let mut r = spool.reader();
    for i in 0..22 {
        let rec = r.next().await.unwrap();
        assert_eq!(rec.id, i);
        let want = if i == 20 {
            big.clone()
        } else {
            payload(i, 100)
        };
        assert_eq!(rec.payload.to_vec(), want);
    }
}

#[tokio::test]
async fn ack_out_of_order_advances_only_over_contiguous_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), opts()).unwrap();
    for i in 0..4 {
        append(&spool, payload(i, 10)).await;
    }
    spool.ack(2);
    spool.ack(1);
    assert_eq!(spool.stats().records, 2);
    // A fresh reader starts at the first unacknowledged id and skips acked ones.
    assert_eq!(read_n(&mut spool.reader(), 2).await, vec![0, 3]);
    spool.ack(0);
    assert_eq!(spool.stats().records, 1);
    assert_eq!(spool.stats().bytes, 26);
}

#[tokio::test]
async fn restart_redelivers_unacked_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), opts()).unwrap();
    for i in 0..5 {
        append(&spool, payload(i, 300)).await;
    }
    for id in [3, 0, 1] {
        spool.ack(id);
    }
    spool.close().await.unwrap();

    let (spool, report) = Spool::open(dir.path(), opts()).unwrap();
    assert_eq!(report.records, 2);
    assert_eq!(report.first_unacked_id, 2);
    assert_eq!(report.next_id, 5);
    let mut r = spool.reader();
    let a = r.next().await.unwrap();
    assert_eq!((a.id, a.payload.to_vec()), (2, payload(2, 300)));
    assert_eq!(r.next().await.unwrap().id, 4);
    assert_eq!(append(&spool, payload(5, 10)).await, 5);

    // An ack not yet checkpointed is lost in a crash: redelivery, not loss.
    spool.ack(2);
    spool.crash();
    let (spool, report) = Spool::open(dir.path(), opts()).unwrap();
    assert_eq!(report.records, 3);
    assert_eq!(read_n(&mut spool.reader(), 3).await, vec![2, 4, 5]);
}

#[tokio::test]
async fn ids_keep_growing_after_every_segment_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), opts()).unwrap();
    for i in 0..4 {
        append(&spool, payload(i, 300)).await;
        spool.ack(i);
    }
    spool.close().await.unwrap();
    let (spool, report) = Spool::open(dir.path(), opts()).unwrap();
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!((report.records, report.next_id), (0, 4));
    assert_eq!(append(&spool, payload(4, 10)).await, 4);
    assert_eq!(read_n(&mut spool.reader(), 1).await, vec![4]);
}

#[tokio::test]
async fn segment_deleted_only_when_fully_acked() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), opts()).unwrap();
    // Three 316-byte records per 1024-byte segment: [0,1,2] [3,4,5] [6].
    for i in 0..7 {
        append(&spool, payload(i, 300)).await;
    }
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 3);
    spool.ack(1);
    spool.ack(2);
    spool.checkpoint().await.unwrap();
    assert_eq!(segment_files(dir.path()), files);
    spool.ack(0);
    spool.checkpoint().await.unwrap();
    assert_eq!(segment_files(dir.path()), files[1..]);
    spool.ack(3);
    spool.ack(4);
    spool.checkpoint().await.unwrap();
    assert_eq!(segment_files(dir.path()), files[1..]);
    spool.ack(5);
    spool.ack(6);
    spool.checkpoint().await.unwrap();
    // The active segment stays until the spool reopens.
    assert_eq!(segment_files(dir.path()), files[2..]);
    spool.close().await.unwrap();
    let (_spool, report) = Spool::open(dir.path(), opts()).unwrap();
    assert_eq!(report.records, 0);
    assert!(segment_files(dir.path()).is_empty());
}

#[tokio::test]
async fn torn_tail_is_truncated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), opts()).unwrap();
    for i in 0..3 {
        append(&spool, payload(i, 100)).await;
    }
    spool.close().await.unwrap();
    let seg = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    assert_eq!(len, 16 + 3 * 116);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    let (spool, report) = Spool::open(dir.path(), opts()).unwrap();
    let tail = report.torn_tail.expect("torn tail reported");
    assert_eq!(tail.path, seg);
    assert_eq!(tail.offset, 16 + 2 * 116);
    assert_eq!(tail.bytes_discarded, 106);
    assert_eq!(tail.records_discarded, 1);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 16 + 2 * 116);
    assert_eq!(report.records, 2);
    assert_eq!(append(&spool, payload(2, 10)).await, 2);
    assert_eq!(read_n(&mut spool.reader(), 3).await, vec![0, 1, 2]);
}

#[tokio::test]
async fn garbage_after_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), opts()).unwrap();
    append(&spool, payload(0, 100)).await;
    spool.close().await.unwrap();
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    data.extend_from_slice(&[0xFF; 40]);
    std::fs::write(&seg, &data).unwrap();
    let (_spool, report) = Spool::open(dir.path(), opts()).unwrap();
    let tail = report.torn_tail.unwrap();
    assert_eq!((tail.offset, tail.bytes_discarded), (132, 40));
    assert_eq!(report.records, 1);
}

/// Seven 300-byte records in segments [0,1,2] [3,4,5] [6], with a bit
/// flipped in record 1.
async fn spool_with_damaged_first_segment(dir: &Path) -> PathBuf {
    let (spool, _) = Spool::open(dir, opts()).unwrap();
    for i in 0..7 {
        append(&spool, payload(i, 300)).await;
    }
    spool.close().await.unwrap();
    let first = segment_files(dir)[0].clone();
    let mut data = std::fs::read(&first).unwrap();
    data[16 + 316 + 100] ^= 0x10;
    std::fs::write(&first, &data).unwrap();
    first
}

#[tokio::test]
async fn corruption_in_a_middle_segment_fails_open_with_file_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let first = spool_with_damaged_first_segment(dir.path()).await;
    match Spool::open(dir.path(), opts()) {
        Err(SpoolError::Corrupt {
            path, start, end, ..
        }) => {
            assert_eq!(path, first);
            // Only the damaged record: record 2 after it is intact.
            assert_eq!((start, end), (16 + 316, 16 + 2 * 316));
        }
        other => panic!("expected corruption error, got {other:?}"),
    }
}

#[tokio::test]
async fn corruption_in_a_middle_segment_is_skipped_and_reported_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let first = spool_with_damaged_first_segment(dir.path()).await;
    let o = SpoolOptions {
        on_corruption: OnCorruption::Discard,
        ..opts()
    };
    let (spool, report) = Spool::open(dir.path(), o).unwrap();
    assert_eq!(report.corrupt.len(), 1, "{:?}", report.corrupt);
    let c = &report.corrupt[0];
    assert_eq!((&c.path, c.start, c.end, c.lost_ids), (&first, 332, 648, 1));
    assert_eq!(report.records, 6);
    assert_eq!(spool.stats().dropped, 1);
    let mut r = spool.reader();
    for i in [0, 2, 3, 4, 5, 6] {
        let rec = r.next().await.unwrap();
        assert_eq!((rec.id, rec.payload.to_vec()), (i, payload(i, 300)));
    }
}

#[tokio::test]
async fn segment_with_damaged_header_is_skipped_then_deleted_once_passed() {
    let dir = tempfile::tempdir().unwrap();
    let first = spool_with_damaged_first_segment(dir.path()).await;
    let mut data = std::fs::read(&first).unwrap();
    data[0] ^= 0xFF;
    std::fs::write(&first, &data).unwrap();
    let o = SpoolOptions {
        on_corruption: OnCorruption::Discard,
        ..opts()
    };
    let (spool, report) = Spool::open(dir.path(), o).unwrap();
    let c = &report.corrupt[0];
    assert_eq!((&c.path, c.start, c.lost_ids), (&first, 0, 3));
    let ids = read_n(&mut spool.reader(), 4).await;
    assert_eq!(ids, vec![3, 4, 5, 6]);
    for id in ids {
        spool.ack(id);
    }
    spool.checkpoint().await.unwrap();
    assert!(!first.exists());
}

#[tokio::test]
async fn record_larger_than_max_bytes_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), full_opts(OnFull::Reject)).unwrap();
    let res = spool.append(vec![0u8; 1020]).await;
    assert!(
        matches!(
            res,
            Err(SpoolError::TooLarge {
                size: 1036,
                limit: 1024
            })
        ),
        "{res:?}"
    );
}

#[tokio::test]
async fn reject_policy_returns_full_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), full_opts(OnFull::Reject)).unwrap();
    for i in 0..3 {
        append(&spool, payload(i, 300)).await;
    }
    assert_eq!(
        spool.append(payload(3, 300)).await.unwrap(),
        AppendOutcome::Full
    );
    assert_eq!(
        spool.append(payload(3, 300)).await.unwrap(),
        AppendOutcome::Full
    );
    let st = spool.stats();
    assert_eq!((st.rejected, st.appended, st.records), (2, 3, 3));
    spool.ack(0);
    assert_eq!(append(&spool, payload(3, 300)).await, 3);
}

#[tokio::test]
async fn block_policy_resumes_after_ack() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), full_opts(OnFull::Block)).unwrap();
    for i in 0..3 {
        append(&spool, payload(i, 300)).await;
    }
    let s2 = spool.clone();
    let blocked = tokio::spawn(async move { s2.append(payload(3, 300)).await });
    while spool.stats().blocked == 0 {
        tokio::task::yield_now().await;
    }
    assert!(!blocked.is_finished());
    // Acking a record above the ack point frees nothing yet.
    spool.ack(1);
    tokio::task::yield_now().await;
    assert!(!blocked.is_finished());
    spool.ack(0);
    let out = blocked.await.unwrap().unwrap();
    assert_eq!(
        out,
        AppendOutcome::Appended {
            first_id: 3,
            count: 1
        }
    );
    assert_eq!(spool.stats().blocked, 1);
}

#[tokio::test]
async fn drop_oldest_never_hands_dropped_record_to_reader() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), full_opts(OnFull::DropOldest)).unwrap();
    let mut r = spool.reader();
    for i in 0..3 {
        append(&spool, payload(i, 300)).await;
    }
    assert_eq!(append(&spool, payload(3, 300)).await, 3);
    assert_eq!(spool.stats().dropped, 1);
    let rec = r.next().await.unwrap();
    assert_eq!((rec.id, rec.payload.to_vec()), (1, payload(1, 300)));
    // A two-record batch needs two more slots.
    let out = spool
        .append_batch(vec![payload(4, 300).into(), payload(5, 300).into()])
        .await
        .unwrap();
    assert_eq!(
        out,
        AppendOutcome::Appended {
            first_id: 4,
            count: 2
        }
    );
    // Record 1 is handed out (leased), so 2 and 3 go instead.
    assert_eq!(spool.stats().dropped, 3);
    assert_eq!(read_n(&mut r, 2).await, vec![4, 5]);
    spool.close().await.unwrap();
    let (spool, report) = Spool::open(dir.path(), full_opts(OnFull::DropOldest)).unwrap();
    assert_eq!(report.first_unacked_id, 1);
    assert_eq!(read_n(&mut spool.reader(), 3).await, vec![1, 4, 5]);
}

fn faulty() -> (FaultyStorage, Arc<dyn Storage>) {
    let f = FaultyStorage::default();
    let s: Arc<dyn Storage> = Arc::new(f.clone());
    (f, s)
}

#[tokio::test]
async fn fsync_failure_fails_waiting_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (f, storage) = faulty();
    let (spool, _) = Spool::open_with_storage(dir.path(), opts(), storage).unwrap();
    append(&spool, payload(0, 10)).await;
    f.faults.fail_next_sync.store(true, Ordering::SeqCst);
    let batch = spool
        .append_batch((1..5).map(|i| payload(i, 10).into()).collect())
        .await;
    match batch {
        Err(SpoolError::Poisoned { cause, .. }) => {
            assert!(cause.contains("fsync segment"), "{cause}")
        }
        other => panic!("expected poisoned, got {other:?}"),
    }
    // Later appends are refused too: a later fsync would not cover the lost pages.
    let mut tasks = Vec::new();
    for i in 5..13 {
        let s = spool.clone();
        tasks.push(tokio::spawn(async move { s.append(payload(i, 10)).await }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Err(SpoolError::Poisoned { .. })));
    }
    // What was durable before stays readable and survives a reopen.
    assert_eq!(read_n(&mut spool.reader(), 1).await, vec![0]);
    assert_eq!(spool.stats().records, 1);
    drop(spool);
    let (spool, report) = Spool::open(dir.path(), opts()).unwrap();
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.records, 1);
    assert_eq!(append(&spool, payload(1, 10)).await, 1);
}

#[tokio::test]
async fn appends_queued_behind_a_write_share_one_group_and_all_fail_with_its_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (f, storage) = faulty();
    let (spool, _) = Spool::open_with_storage(dir.path(), opts(), storage).unwrap();
    append(&spool, payload(0, 10)).await;

    // Hold the writer inside the write of record 1's group...
    f.faults.hold_writes.close();
    let before = f.faults.writes_started.load(Ordering::SeqCst);
    let s = spool.clone();
    let first = tokio::spawn(async move { s.append(payload(1, 10)).await });
    while f.faults.writes_started.load(Ordering::SeqCst) == before {
        tokio::task::yield_now().await;
    }
    // ...while ten more appends queue up behind it.
    let mut waiting = Vec::new();
    for i in 2..12 {
        let s = spool.clone();
        waiting.push(tokio::spawn(async move { s.append(payload(i, 10)).await }));
    }
    while spool.inner_shared().lock().queue.len() < 10 {
        tokio::task::yield_now().await;
    }
    // Record 1's fsync succeeds; the next one, shared by the ten, fails.
    f.faults.fail_sync_countdown.store(2, Ordering::SeqCst);
    f.faults.hold_writes.open();

    assert!(matches!(
        first.await.unwrap(),
        Ok(AppendOutcome::Appended { first_id: 1, .. })
    ));
    let mut causes = Vec::new();
    for t in waiting {
        match t.await.unwrap() {
            Err(SpoolError::Poisoned { cause, .. }) => causes.push(cause),
            other => panic!("expected poisoned, got {other:?}"),
        }
    }
    assert!(
        causes
            .iter()
            .all(|c| c == &causes[0] && c.contains("fsync segment")),
        "{causes:?}"
    );
    // One write for record 1's group, one for the ten: group commit.
    assert_eq!(f.faults.writes_started.load(Ordering::SeqCst), before + 2);
    drop(spool);

    let (spool, report) = Spool::open(dir.path(), opts()).unwrap();
    assert_eq!((report.records, report.torn_tail), (2, None));
    assert_eq!(read_n(&mut spool.reader(), 2).await, vec![0, 1]);
}

#[tokio::test]
async fn enospc_fails_append_and_keeps_earlier_records() {
    let dir = tempfile::tempdir().unwrap();
    let (f, storage) = faulty();
    let (spool, _) = Spool::open_with_storage(dir.path(), opts(), storage).unwrap();
    append(&spool, payload(0, 10)).await;
    f.faults.enospc_next_write.store(true, Ordering::SeqCst);
    let err = spool.append(payload(1, 10)).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("write segment") && msg.contains(".seg"),
        "{msg}"
    );
    // Space is back: the spool goes on, and the failed record left no trace.
    assert_eq!(append(&spool, payload(1, 10)).await, 1);
    assert_eq!(read_n(&mut spool.reader(), 2).await, vec![0, 1]);
    spool.close().await.unwrap();
    let (spool, report) = Spool::open(dir.path(), opts()).unwrap();
    assert_eq!((report.records, report.torn_tail), (2, None));
    let mut r = spool.reader();
    assert_eq!(r.next().await.unwrap().payload.to_vec(), payload(0, 10));
    assert_eq!(r.next().await.unwrap().payload.to_vec(), payload(1, 10));
}

#[tokio::test]
async fn after_a_failed_write_the_acknowledged_active_segment_gives_its_space_back() {
    // Regression (fault campaign, spool on a 4 MiB filesystem): segments larger than the
    // free space never filled up and rolled over, so the space of acknowledged records was
    // never freed and every append failed long after the publisher had caught up.
    let dir = tempfile::tempdir().unwrap();
    let (f, storage) = faulty();
    let (spool, _) = Spool::open_with_storage(dir.path(), opts(), storage).unwrap();
    append(&spool, payload(0, 10)).await;
    append(&spool, payload(1, 10)).await;
    f.faults.enospc_next_write.store(true, Ordering::SeqCst);
    assert!(spool.append(payload(2, 10)).await.is_err());
    let segments = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count()
    };
    assert_eq!(segments(), 1);
    assert_eq!(read_n(&mut spool.reader(), 2).await, vec![0, 1]);
    spool.ack(0);
    spool.ack(1);
    spool.checkpoint().await.unwrap();
    assert_eq!(segments(), 0, "the acknowledged segment is deleted");
    assert_eq!(append(&spool, payload(2, 10)).await, 2);
    assert_eq!(segments(), 1);
    spool.close().await.unwrap();
    let (spool, report) = Spool::open(dir.path(), opts()).unwrap();
    assert_eq!(report.records, 1);
    let r = spool.reader().next().await.unwrap();
    assert_eq!((r.id, r.payload.to_vec()), (2, payload(2, 10)));
}

#[tokio::test]
async fn a_restart_on_a_full_disk_gets_the_space_of_acknowledged_records_back() {
    // Regression (fault campaign, 4 MiB filesystem, mqlink killed while the disk was full):
    // after the restart no append got as far as a segment write (creating the segment
    // failed), the checkpoint could not be written either, and the acknowledged segments
    // were kept until the checkpoint was written: the spool answered "full" for good.
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), opts()).unwrap();
    for i in 0..5 {
        append(&spool, payload(i, 100)).await;
    }
    spool.close().await.unwrap();

    let (f, storage) = faulty();
    let (spool, report) = Spool::open_with_storage(dir.path(), opts(), storage).unwrap();
    assert_eq!(report.records, 5);
    f.faults.disk_full.store(true, Ordering::SeqCst);
    assert!(
        spool.append(payload(5, 100)).await.is_err(),
        "the disk is full"
    );
    assert_eq!(read_n(&mut spool.reader(), 5).await, vec![0, 1, 2, 3, 4]);
    for i in 0..5 {
        spool.ack(i);
    }
    // The checkpoint is written once the acknowledged segments have given their space back.
    spool.checkpoint().await.unwrap();
    assert!(
        segment_files(dir.path()).is_empty(),
        "acknowledged segments are deleted"
    );
    assert_eq!(append(&spool, payload(5, 100)).await, 5);
    spool.close().await.unwrap();

    let (spool, report) = Spool::open(dir.path(), opts()).unwrap();
    assert_eq!(report.records, 1, "{report:?}");
    let r = spool.reader().next().await.unwrap();
    assert_eq!((r.id, r.payload.to_vec()), (5, payload(5, 100)));
}

#[tokio::test]
async fn short_write_is_cut_back_so_the_segment_stays_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (f, storage) = faulty();
    let (spool, _) = Spool::open_with_storage(dir.path(), opts(), storage).unwrap();
    append(&spool, payload(0, 100)).await;
    f.faults.short_next_write.store(true, Ordering::SeqCst);
    assert!(matches!(
        spool.append(payload(1, 100)).await,
        Err(SpoolError::Io { .. })
    ));
    assert_eq!(append(&spool, payload(1, 100)).await, 1);
    spool.close().await.unwrap();
    let (_spool, report) = Spool::open(dir.path(), opts()).unwrap();
    assert_eq!((report.records, report.torn_tail), (2, None));
}

#[tokio::test]
async fn close_stops_appends_and_ends_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), opts()).unwrap();
    let other = spool.clone();
    let mut r = spool.reader();
    append(&spool, payload(0, 10)).await;
    spool.close().await.unwrap();
    assert!(matches!(
        other.append(payload(1, 10)).await,
        Err(SpoolError::Closed { .. })
    ));
    assert_eq!(r.next().await.unwrap().id, 0);
    assert!(matches!(r.next().await, Err(SpoolError::Closed { .. })));
}

#[tokio::test]
async fn interval_and_never_policies_store_records_too() {
    for fsync in [
        FsyncPolicy::Interval(Duration::from_millis(5)),
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let o = SpoolOptions { fsync, ..opts() };
        let (spool, _) = Spool::open(dir.path(), o.clone()).unwrap();
        for i in 0..10 {
            append(&spool, payload(i, 200)).await;
        }
        spool.close().await.unwrap();
        let (_spool, report) = Spool::open(dir.path(), o).unwrap();
        assert_eq!(report.records, 10, "{fsync:?}");
    }
}

#[test]
fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = SpoolOptions {
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        ..opts()
    };
    assert!(matches!(
        Spool::open(dir.path(), o),
        Err(SpoolError::InvalidOptions(_))
    ));
}

#[cfg(unix)]
#[test]
fn spool_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    let _ = Spool::open(&path, opts()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

/// Twenty acknowledged 100-byte records written with `fsync: always` into one
/// segment, then a byte of record 10 flipped: media damage in the middle of
/// the last segment, with intact, acknowledged records after it.
async fn always_spool_with_damaged_middle_record(dir: &Path) -> PathBuf {
    let o = SpoolOptions {
        segment_bytes: 64 * 1024,
        ..opts()
    };
    let (spool, _) = Spool::open(dir, o).unwrap();
    for i in 0..20 {
        assert_eq!(append(&spool, payload(i, 100)).await, i);
    }
    spool.close().await.unwrap();
    let segs = segment_files(dir);
    assert_eq!(segs.len(), 1);
    let mut data = std::fs::read(&segs[0]).unwrap();
    data[16 + 10 * 116 + 40] ^= 0x10;
    std::fs::write(&segs[0], &data).unwrap();
    segs[0].clone()
}

fn dir_snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn damaged_record_before_intact_ones_in_the_last_segment_fails_open_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let seg = always_spool_with_damaged_middle_record(dir.path()).await;
    let before = dir_snapshot(dir.path());
    match Spool::open(dir.path(), opts()) {
        Err(SpoolError::Corrupt {
            path, start, end, ..
        }) => {
            assert_eq!(path, seg);
            assert_eq!((start, end), (16 + 10 * 116, 16 + 11 * 116));
        }
        other => panic!("expected corruption error, got {other:?}"),
    }
    assert_eq!(dir_snapshot(dir.path()), before, "open changed the spool");
}

#[tokio::test]
async fn damaged_record_before_intact_ones_is_the_only_one_lost_under_discard() {
    let dir = tempfile::tempdir().unwrap();
    let seg = always_spool_with_damaged_middle_record(dir.path()).await;
    let o = SpoolOptions {
        on_corruption: OnCorruption::Discard,
        ..opts()
    };
    let (spool, report) = Spool::open(dir.path(), o.clone()).unwrap();
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.corrupt.len(), 1, "{:?}", report.corrupt);
    let c = &report.corrupt[0];
    assert_eq!(
        (&c.path, c.start, c.end, c.lost_ids),
        (&seg, 16 + 10 * 116, 16 + 11 * 116, 1)
    );
    assert_eq!((report.records, spool.stats().dropped), (19, 1));
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 16 + 20 * 116);
    let mut r = spool.reader();
    for i in (0..20).filter(|&i| i != 10) {
        let rec = r.next().await.unwrap();
        assert_eq!((rec.id, rec.payload.to_vec()), (i, payload(i, 100)));
    }
    // Appends go on after the kept records, and everything survives a restart.
    assert_eq!(append(&spool, payload(20, 100)).await, 20);
    spool.close().await.unwrap();
    let (spool, report) = Spool::open(dir.path(), o).unwrap();
    assert_eq!(report.records, 20);
    let ids = read_n(&mut spool.reader(), 20).await;
    assert_eq!(ids, (0..21).filter(|&i| i != 10).collect::<Vec<_>>());
    spool.close().await.unwrap();
    // The checkpoint settled the lost id, so the damage costs nothing now:
    // the default `Fail` opens the spool again.
    let (_spool, report) = Spool::open(dir.path(), opts()).unwrap();
    assert_eq!(report.records, 20);
}

#[tokio::test]
async fn zeroed_sector_before_intact_records_under_always_is_a_torn_write_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let seg = always_spool_with_damaged_middle_record(dir.path()).await;
    // What a power cut during the last group's write can leave: an unwritten
    // sector (zeros) with later pages of the same group written back.
    let mut data = std::fs::read(&seg).unwrap();
    data[1024..1536].fill(0);
    std::fs::write(&seg, &data).unwrap();
    // Records 8 (944..1060) to 13 (1524..1640) overlap the zeros; 10 also had its flipped byte.
    let (spool, report) = Spool::open(dir.path(), opts()).unwrap();
    assert_eq!(report.corrupt.len(), 1, "{:?}", report.corrupt);
    let c = &report.corrupt[0];
    assert_eq!((c.start, c.end, c.lost_ids), (944, 1640, 6), "{c:?}");
    assert!(c.reason.starts_with("torn write"), "{}", c.reason);
    let want: Vec<u64> = (0..8).chain(14..20).collect();
    assert_eq!(read_n(&mut spool.reader(), want.len()).await, want);
}

#[tokio::test]
async fn damage_before_intact_records_under_never_is_skipped_at_error() {
    let dir = tempfile::tempdir().unwrap();
    let seg = always_spool_with_damaged_middle_record(dir.path()).await;
    let o = SpoolOptions {
        fsync: FsyncPolicy::Never,
        ..opts()
    };
    let (spool, report) = Spool::open(dir.path(), o).unwrap();
    let c = &report.corrupt[0];
    assert_eq!((&c.path, c.start, c.lost_ids), (&seg, 16 + 10 * 116, 1));
    let want: Vec<u64> = (0..20).filter(|&i| i != 10).collect();
    assert_eq!(read_n(&mut spool.reader(), 19).await, want);
}

#[tokio::test]
async fn a_burst_of_enospc_failures_logs_one_warning() {
    logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let (f, storage) = faulty();
    let (spool, _) = Spool::open_with_storage(dir.path(), opts(), storage).unwrap();
    append(&spool, payload(0, 10)).await;
    for i in 1..=50 {
        f.faults.enospc_next_write.store(true, Ordering::SeqCst);
        assert!(spool.append(payload(i, 10)).await.is_err());
    }
    let d = dir.path().display().to_string();
    assert_eq!(logs::count(&["WARN", "append failed", &d]), 1);
    // Every append of the burst still failed on its own; space is back now.
    assert_eq!(append(&spool, payload(1, 10)).await, 1);
}

#[tokio::test]
async fn drop_oldest_drops_only_records_not_yet_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), full_opts(OnFull::DropOldest)).unwrap();
    let mut r = spool.reader();
    for i in 0..3 {
        append(&spool, payload(i, 300)).await;
    }
    // The consumer holds 0 and 1 (in flight to the broker, not acknowledged).
    assert_eq!(read_n(&mut r, 2).await, vec![0, 1]);
    assert_eq!(append(&spool, payload(3, 300)).await, 3);
    assert_eq!(append(&spool, payload(4, 300)).await, 4);
    // 2 and 3 were never handed out: those are the drops, and counted.
    assert_eq!(spool.stats().dropped, 2);
    let rec = r.next().await.unwrap();
    assert_eq!((rec.id, rec.payload.to_vec()), (4, payload(4, 300)));
    // Everything handed out is delivered and its ack counts.
    for id in [0, 1, 4] {
        spool.ack(id);
    }
    let st = spool.stats();
    assert_eq!((st.acked, st.dropped, st.records), (3, 2, 0));
    spool.close().await.unwrap();
    let (_spool, report) = Spool::open(dir.path(), full_opts(OnFull::DropOldest)).unwrap();
    assert_eq!(report.records, 0);
}

#[tokio::test]
async fn drop_oldest_waits_when_every_record_is_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), full_opts(OnFull::DropOldest)).unwrap();
    let mut r = spool.reader();
    for i in 0..3 {
        append(&spool, payload(i, 300)).await;
    }
    assert_eq!(read_n(&mut r, 3).await, vec![0, 1, 2]);
    let s2 = spool.clone();
    let waiting = tokio::spawn(async move { s2.append(payload(3, 300)).await });
    // Bounded, so dropping instead of waiting fails the test rather than hanging it.
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while spool.stats().blocked == 0 && !waiting.is_finished() {
            tokio::task::yield_now().await;
        }
    });
    waited.await.unwrap();
    assert!(!waiting.is_finished(), "append dropped a handed-out record");
    assert_eq!(spool.stats().dropped, 0);
    spool.ack(0);
    let out = waiting.await.unwrap().unwrap();
    assert_eq!(
        out,
        AppendOutcome::Appended {
            first_id: 3,
            count: 1
        }
    );
    assert_eq!(spool.stats().dropped, 0);
    assert_eq!(r.next().await.unwrap().id, 3);
}

#[tokio::test]
async fn ids_missing_inside_a_segment_are_damage_and_the_reader_steps_over_them() {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join(format!("{:020}.seg", 0));
    let mut data = crate::record::segment_header(0).to_vec();
    for id in [0, 1, 3, 4] {
        crate::record::encode(&mut data, id, &payload(id, 20));
    }
    std::fs::write(&seg, &data).unwrap();
    match Spool::open(dir.path(), opts()) {
        Err(SpoolError::Corrupt { start, end, .. }) => assert_eq!((start, end), (88, 88)),
        other => panic!("expected corruption error, got {other:?}"),
    }
    let o = SpoolOptions {
        on_corruption: OnCorruption::Discard,
        ..opts()
    };
    let (spool, report) = Spool::open(dir.path(), o).unwrap();
    assert_eq!(report.corrupt[0].lost_ids, 1);
    let mut r = spool.reader();
    let read = tokio::time::timeout(Duration::from_secs(10), read_n(&mut r, 4));
    assert_eq!(read.await.unwrap(), vec![0, 1, 3, 4]);
}

#[tokio::test]
async fn record_dropped_while_in_the_readers_buffer_is_not_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let o = SpoolOptions {
        memory_bytes: 0,
        ..full_opts(OnFull::DropOldest)
    };
    let (spool, _) = Spool::open(dir.path(), o).unwrap();
    for i in 0..3 {
        append(&spool, payload(i, 300)).await;
    }
    let mut r = spool.reader();
    // Reads the file: 0 is handed out, 1 and 2 wait in the reader's buffer.
    assert_eq!(r.next().await.unwrap().id, 0);
    assert_eq!(append(&spool, payload(3, 300)).await, 3);
    assert_eq!(spool.stats().dropped, 1);
    let rec = r.next().await.unwrap();
    assert_eq!((rec.id, rec.payload.to_vec()), (2, payload(2, 300)));
    assert_eq!(append(&spool, payload(4, 300)).await, 4);
    assert_eq!(r.next().await.unwrap().id, 4);
    assert_eq!(spool.stats().dropped, 2);
}

/// The stepped mode (feature `sim`): an append waits for the owner's step, then is
/// durable and readable; a crash drops what was queued and never stepped.
#[cfg(feature = "sim")]
#[tokio::test]
async fn a_stepped_spool_commits_only_when_stepped() {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(StdStorage);
    let (spool, _) = Spool::open_stepped(dir.path(), opts(), storage.clone()).unwrap();
    let s = spool.clone();
    let mut pending = tokio::spawn(async move { s.append(b"one".to_vec()).await });
    // Nothing commits without a step, however long the task runs.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(futures_poll_once(&mut pending).await.is_none());
    spool.step(true);
    let first = pending.await.unwrap().unwrap();
    assert!(matches!(first, AppendOutcome::Appended { first_id: 0, .. }));
    let mut r = spool.reader();
    assert_eq!(&r.next().await.unwrap().payload[..], b"one");
    // Queued, never stepped, then a crash: not on disk after a reopen.
    let s = spool.clone();
    let lost = tokio::spawn(async move { s.append(b"two".to_vec()).await });
    tokio::task::yield_now().await;
    drop(r);
    lost.abort();
    spool.crash();
    let (_, report) = Spool::open_stepped(dir.path(), opts(), storage).unwrap();
    assert_eq!(report.records, 1);
}

/// The output of a task if it has finished, without waiting.
#[cfg(feature = "sim")]
async fn futures_poll_once<T>(h: &mut tokio::task::JoinHandle<T>) -> Option<T> {
    tokio::select! {
        biased;
        r = h => Some(r.unwrap()),
        () = std::future::ready(()) => None,
    }
}
