//! Model-based property test: random appends, reads, acks, checkpoints, clean
//! restarts and crashes (writer stopped without its final sync or checkpoint,
//! then the last segment cut at a random byte) against a plain in-memory model.
//!
//! The model is exact: it knows which acks were checkpointed (timed
//! checkpoints are off, so only `Checkpoint`, `Restart` write one) and which
//! records the cut removed, so after every operation the reader must hand out
//! exactly the expected records, in order.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use crate::record::{self, Decoded, SEGMENT_HEADER_LEN};
use crate::{AppendOutcome, FsyncPolicy, Reader, Spool, SpoolOptions};

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Batch(Vec<usize>),
    Read,
    /// Ack the n-th (mod len) record handed out and not yet acked.
    Ack(usize),
    Checkpoint,
    Restart,
    /// Crash, then cut the last segment at this many thousandths of its length.
    Crash(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..300).prop_map(Op::Append),
        1 => prop::collection::vec(0usize..200, 1..5).prop_map(Op::Batch),
        5 => Just(Op::Read),
        4 => any::<usize>().prop_map(Op::Ack),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Restart),
        1 => (0u64..=1000).prop_map(Op::Crash),
    ]
}

#[derive(Debug, Default)]
struct Model {
    /// Records whose append returned Ok and that are not acknowledged.
    live: BTreeMap<u64, Vec<u8>>,
    /// Acknowledged since the last checkpoint: a crash brings them back.
    acked_unpersisted: BTreeMap<u64, Vec<u8>>,
    /// Handed out by the current reader and not yet acknowledged.
    delivered: Vec<u64>,
    /// Last id the current reader handed out.
    last_read: Option<u64>,
    seq: u64,
}

impl Model {
    fn payload(&mut self, len: usize) -> Vec<u8> {
        self.seq += 1;
        let tag = self.seq.to_le_bytes();
        (0..len).map(|i| tag[i % 8] ^ (i as u8)).collect()
    }

    fn expected_next(&self) -> Option<(u64, Vec<u8>)> {
        let from = self.last_read.map_or(0, |id| id + 1);
        self.live
            .range(from..)
            .next()
            .map(|(id, p)| (*id, p.clone()))
    }

    fn new_reader(&mut self) {
        self.delivered.clear();
        self.last_read = None;
    }
}

/// Cuts the last segment file at `thousandths` of its length and returns the
/// ids of the records that were cut off (wholly or partly).
fn cut_last_segment(dir: &Path, thousandths: u64) -> Vec<u64> {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    let Some(last) = segs.pop() else {
        return Vec::new();
    };
    let data = std::fs::read(&last).unwrap();
    let cut = data.len() as u64 * thousandths / 1000;
    let mut lost = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN as usize;
    while let Decoded::Record { id, len, .. } = record::decode(&data[pos..]) {
        pos += len as usize;
        if pos as u64 > cut || cut < SEGMENT_HEADER_LEN {
            lost.push(id);
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(cut)
        .unwrap();
    lost
}

async fn run(ops: Vec<Op>, opts: SpoolOptions) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), opts.clone()).unwrap();
    let mut reader: Reader = spool.reader();
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Append(len) => {
                let p = m.payload(len);
                let out = spool.append(p.clone()).await.unwrap();
                let AppendOutcome::Appended { first_id, count: 1 } = out else {
                    return Err(TestCaseError::fail(format!("append: {out:?}")));
                };
                prop_assert!(!m.live.contains_key(&first_id), "id {} reused", first_id);
                prop_assert!(
                    m.live.keys().all(|&k| k < first_id),
                    "id {} not increasing",
                    first_id
                );
                m.live.insert(first_id, p);
            }
            Op::Batch(lens) => {
                let ps: Vec<Vec<u8>> = lens.iter().map(|&l| m.payload(l)).collect();
                let out = spool
                    .append_batch(ps.iter().cloned().map(Into::into).collect())
                    .await
                    .unwrap();
                let AppendOutcome::Appended { first_id, count } = out else {
                    return Err(TestCaseError::fail(format!("batch: {out:?}")));
                };
                prop_assert_eq!(count, ps.len() as u64);
                prop_assert!(m.live.keys().all(|&k| k < first_id));
                for (i, p) in ps.into_iter().enumerate() {
                    m.live.insert(first_id + i as u64, p);
                }
            }
            Op::Read => {
                if let Some((id, p)) = m.expected_next() {
                    let rec = tokio::time::timeout(Duration::from_secs(10), reader.next())
                        .await
                        .map_err(|_| {
                            TestCaseError::fail(format!("reader hung waiting for id {id}"))
                        })?
                        .unwrap();
                    prop_assert_eq!(rec.id, id);
                    prop_assert_eq!(rec.payload.to_vec(), p);
                    m.delivered.push(id);
                    m.last_read = Some(id);
                }
            }
            Op::Ack(i) => {
                if !m.delivered.is_empty() {
                    let id = m.delivered.remove(i % m.delivered.len());
                    spool.ack(id);
                    let p = m.live.remove(&id).unwrap();
                    m.acked_unpersisted.insert(id, p);
                }
            }
            Op::Checkpoint => {
                spool.checkpoint().await.unwrap();
                m.acked_unpersisted.clear();
            }
            Op::Restart => {
                spool.close().await.unwrap();
                m.acked_unpersisted.clear();
                let (s, report) = Spool::open(dir.path(), opts.clone()).unwrap();
                prop_assert_eq!(report.records, m.live.len() as u64);
                prop_assert_eq!(report.torn_tail, None);
                spool = s;
                reader = spool.reader();
                m.new_reader();
            }
            Op::Crash(thousandths) => {
                spool.crash();
                drop(reader);
                let lost = cut_last_segment(dir.path(), thousandths);
                let back = std::mem::take(&mut m.acked_unpersisted);
                m.live.extend(back);
                for id in lost {
                    m.live.remove(&id);
                }
                let (s, report) = Spool::open(dir.path(), opts.clone()).unwrap();
                prop_assert_eq!(report.records, m.live.len() as u64);
                spool = s;
                reader = spool.reader();
                m.new_reader();
            }
        }
        prop_assert_eq!(spool.stats().records, m.live.len() as u64);
    }
    // Everything still live is delivered, in order.
    let mut r = spool.reader();
    for (&id, p) in &m.live {
        let rec = r.next().await.unwrap();
        prop_assert_eq!(rec.id, id);
        prop_assert_eq!(&rec.payload.to_vec(), p);
    }
    spool.close().await.unwrap();
    Ok(())
}

fn fsync_policy() -> impl Strategy<Value = FsyncPolicy> {
    prop_oneof![Just(FsyncPolicy::Always), Just(FsyncPolicy::Never)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn spool_matches_model(
        ops in prop::collection::vec(op(), 1..80),
        fsync in fsync_policy(),
        memory_bytes in prop_oneof![Just(0u64), Just(700), Just(16 << 20)],
    ) {
        let opts = SpoolOptions {
            fsync,
            memory_bytes,
            segment_bytes: 1024,
            checkpoint_interval: Duration::from_secs(3600),
            ..SpoolOptions::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops, opts))?;
    }
}
