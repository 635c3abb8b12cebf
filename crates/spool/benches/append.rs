//! Append throughput with group commit under `FsyncPolicy::Always`: 100 B and
//! 4 KiB records from 1 and 64 concurrent writers, plus 100-record batches.
//! Each measured batch of appends is acknowledged afterwards (outside the
//! timing) so the spool never fills. Also read + ack throughput, from the
//! in-memory cache and from segment files.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use mqlink_spool::{AppendOutcome, FsyncPolicy, Spool, SpoolOptions};

fn options() -> SpoolOptions {
    SpoolOptions {
        fsync: FsyncPolicy::Always,
        max_bytes: 4 << 30,
        segment_bytes: 64 << 20,
        ..SpoolOptions::default()
    }
}

/// Appends `iters` records of `size` bytes from `writers` tasks, each
/// appending `batch` records per call; returns the time taken.
async fn run(spool: &Spool, size: usize, writers: u64, batch: u64, iters: u64) -> Duration {
    let payload = Bytes::from(vec![0xAB; size]);
    let calls = iters.div_ceil(batch);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let n = calls / writers + u64::from(w < calls % writers);
        let spool = spool.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity((n * batch) as usize);
            for _ in 0..n {
                let records = (0..batch).map(|_| payload.clone()).collect();
                match spool.append_batch(records).await.expect("append failed") {
                    AppendOutcome::Appended { first_id, count } => {
                        ids.extend(first_id..first_id + count)
                    }
                    AppendOutcome::Full => panic!("spool full"),
                }
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.expect("writer task panicked"));
    }
    let elapsed = start.elapsed();
    for id in ids {
        spool.ack(id);
    }
    elapsed
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("append_fsync_always");
    group.throughput(Throughput::Elements(1));
    let cases: [(usize, u64, u64); 5] = [
        (100, 1, 1),
        (100, 64, 1),
        (4096, 1, 1),
        (4096, 64, 1),
        (100, 1, 100),
    ];
    for (size, writers, batch) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let (spool, _) = Spool::open(dir.path(), options()).expect("open spool");
        let name = if batch == 1 {
            format!("{size}B")
        } else {
            format!("{size}B_batch{batch}")
        };
        group.bench_function(BenchmarkId::new(name, format!("{writers}_writers")), |b| {
            b.iter_custom(|iters| rt.block_on(run(&spool, size, writers, batch, iters)));
        });
        rt.block_on(spool.close()).expect("close spool");
    }
    group.finish();
}

/// Reads and acknowledges `iters` records that were appended (untimed) just
/// before: the publisher's path. From memory, or from segment files when
/// `memory_bytes` is 0.
async fn read_ack(spool: &Spool, size: usize, iters: u64) -> Duration {
    let payload = Bytes::from(vec![0xCD; size]);
    let mut left = iters;
    while left > 0 {
        let n = left.min(1000);
        let batch = (0..n).map(|_| payload.clone()).collect();
        spool.append_batch(batch).await.expect("append failed");
        left -= n;
    }
    let mut reader = spool.reader();
    let start = Instant::now();
    for _ in 0..iters {
        let rec = reader.next().await.expect("read failed");
        spool.ack(rec.id);
    }
    start.elapsed()
}

fn read(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("read_ack");
    group.throughput(Throughput::Elements(1));
    for (from, memory_bytes) in [("memory", 64 << 20), ("disk", 0)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = SpoolOptions {
            memory_bytes,
            ..options()
        };
        let (spool, _) = Spool::open(dir.path(), opts).expect("open spool");
        group.bench_function(BenchmarkId::new("100B", from), |b| {
            b.iter_custom(|iters| rt.block_on(read_ack(&spool, 100, iters)));
        });
        rt.block_on(spool.close()).expect("close spool");
    }
    group.finish();
}

mod harness {
    // `criterion_group!` defines an undocumented `pub fn`.
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::append, super::read);
}
criterion_main!(harness::benches);
