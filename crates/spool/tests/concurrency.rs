//! Many concurrent appenders sharing group commits: every id is unique and
//! contiguous, and every record is readable, with its payload, after reopen.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use mqlink_spool::{AppendOutcome, Spool, SpoolOptions};

const TASKS: u64 = 64;
const PER_TASK: u64 = 40;

fn payload(task: u64, seq: u64) -> Bytes {
    Bytes::from(format!(
        "task {task} record {seq} {}",
        "x".repeat((seq % 7) as usize * 20)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_appenders_get_unique_contiguous_ids_all_readable_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SpoolOptions {
        segment_bytes: 64 * 1024,
        checkpoint_interval: Duration::from_secs(3600),
        ..SpoolOptions::default()
    };
    let (spool, _) = Spool::open(dir.path(), opts.clone()).unwrap();

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let mut seq = 0;
            while seq < PER_TASK {
                // Every fifth task appends in batches of four.
                if task % 5 == 0 {
                    let batch: Vec<Bytes> = (seq..seq + 4).map(|s| payload(task, s)).collect();
                    let AppendOutcome::Appended { first_id, count: 4 } =
                        spool.append_batch(batch).await.unwrap()
                    else {
                        panic!("batch not appended");
                    };
                    for i in 0..4 {
                        got.push((first_id + i, payload(task, seq + i)));
                    }
                    seq += 4;
                } else {
                    let AppendOutcome::Appended { first_id, count: 1 } =
                        spool.append(payload(task, seq)).await.unwrap()
                    else {
                        panic!("record not appended");
                    };
                    got.push((first_id, payload(task, seq)));
                    seq += 1;
                }
            }
            got
        }));
    }
    let mut by_id = BTreeMap::new();
    for t in tasks {
        for (id, p) in t.await.unwrap() {
            assert!(by_id.insert(id, p).is_none(), "id {id} handed out twice");
        }
    }
    let total = TASKS * PER_TASK;
    assert_eq!(by_id.len() as u64, total);
    assert_eq!(
        by_id.keys().copied().collect::<Vec<_>>(),
        (0..total).collect::<Vec<_>>()
    );
    assert_eq!(spool.stats().appended, total);
    spool.close().await.unwrap();

    let (spool, report) = Spool::open(dir.path(), opts).unwrap();
    assert_eq!(report.records, total);
    assert_eq!(report.torn_tail, None);
    let mut reader = spool.reader();
    for (id, p) in by_id {
        let rec = reader.next().await.unwrap();
        assert_eq!(rec.id, id);
        assert_eq!(rec.payload, p);
    }
    spool.close().await.unwrap();
}
