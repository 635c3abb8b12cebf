//! Model-based property test: random appends, reads, acks, checkpoints, clean
//! restarts, process crashes and power cuts against a plain in-memory model.
//!
//! The spool runs on [`PowerLossStorage`], which drops unsynced segment bytes
//! at a power cut, tearing them per sector in any order. A power cut comes
//! either between operations or *during* the fsync of an append (the fsync
//! fails and the machine is off). Every record whose append returned `Ok` and
//! that the fsync policy promises to be durable (under `Always`: all of them;
//! under `Interval` and `Never`: those written before a clean close, or
//! before a crash and found by recovery, which syncs them) must be delivered after
//! the reboot: a spool that acknowledges an append before its fsync fails
//! here. Records the policy does not promise, or whose append failed, may or
//! may not come back, but only with the payload appended under their id.
//!
//! Between crashes the model is exact: it knows which acks were checkpointed
//! (timed checkpoints are off, so only `Checkpoint`, `Restart` write one), so
//! after every operation the reader must hand out exactly the expected
//! records, in order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::power::PowerLossStorage;
use crate::{AppendOutcome, FsyncPolicy, Reader, Spool, SpoolOptions, Storage};

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Batch(Vec<usize>),
    Read,
    /// Ack the n-th (mod len) record handed out and not yet acked.
    Ack(usize),
    Checkpoint,
    Restart,
    /// The process dies (no final sync or checkpoint); the page cache survives.
    Crash,
    /// The power fails between operations; the seed picks the torn sectors.
    PowerCut(u64),
    /// The power fails during the fsync of this append.
    PowerCutInAppend(usize, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..300).prop_map(Op::Append),
        1 => prop::collection::vec(0usize..200, 1..5).prop_map(Op::Batch),
        5 => Just(Op::Read),
        4 => any::<usize>().prop_map(Op::Ack),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
        1 => any::<u64>().prop_map(Op::PowerCut),
        1 => ((0usize..600), any::<u64>()).prop_map(|(l, s)| Op::PowerCutInAppend(l, s)),
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
    /// Ids (live or acked since the checkpoint) the fsync policy promises
    /// survive a power cut.
    durable: BTreeSet<u64>,
    /// Records whose append failed: they may come back after a reboot.
    refused: BTreeMap<u64, Vec<u8>>,
    /// Ids appended since the spool was last opened: a clean close syncs them.
    since_open: BTreeSet<u64>,
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

    /// The spool was opened again: a new process, which will sync only what it writes.
    fn reopened(&mut self) {
        self.new_reader();
        self.since_open.clear();
    }
}

/// Reopens the spool after a power cut and checks what came back against the
/// model: every promised record, nothing that was not appended, in order.
/// The model then holds exactly what came back.
async fn reboot(
    m: &mut Model,
    dir: &std::path::Path,
    opts: &SpoolOptions,
    storage: &Arc<dyn Storage>,
) -> Result<Spool, TestCaseError> {
    let (spool, report) = Spool::open_with_storage(dir, opts.clone(), storage.clone())
        .map_err(|e| TestCaseError::fail(format!("open after power cut: {e}")))?;
    let mut allowed = std::mem::take(&mut m.live);
    allowed.append(&mut m.acked_unpersisted);
    allowed.append(&mut m.refused);
    let mut r = spool.reader();
    let mut back = BTreeMap::new();
    for _ in 0..report.records {
        let rec = tokio::time::timeout(Duration::from_secs(10), r.next())
            .await
            .map_err(|_| TestCaseError::fail("reader hung after power cut"))?
            .unwrap();
        let p = allowed.get(&rec.id);
        prop_assert!(
            p.is_some_and(|p| *p == rec.payload.to_vec()),
            "record {} after power cut was never appended with this payload",
            rec.id
        );
        prop_assert!(back.keys().all(|&k| k < rec.id), "out of order: {}", rec.id);
        back.insert(rec.id, rec.payload.to_vec());
    }
    // Owed: durable and not acknowledged by a checkpoint that survived.
    for id in m.durable.iter().filter(|id| allowed.contains_key(id)) {
        prop_assert!(
            back.contains_key(id),
            "record {} was acknowledged to its appender as durable and is lost after a power cut",
            id
        );
    }
    // After the reboot everything on disk is durable.
    m.durable = back.keys().copied().collect();
    m.live = back;
    m.reopened();
    Ok(spool)
}

async fn run(ops: Vec<Op>, opts: SpoolOptions) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let power = PowerLossStorage::default();
    let storage: Arc<dyn Storage> = Arc::new(power.clone());
    let open =
        |opts: &SpoolOptions| Spool::open_with_storage(dir.path(), opts.clone(), storage.clone());
    let always = opts.fsync == FsyncPolicy::Always;
    let (mut spool, _) = open(&opts).unwrap();
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
                m.since_open.insert(first_id);
                if always {
                    m.durable.insert(first_id);
                }
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
                    m.since_open.insert(first_id + i as u64);
                    if always {
                        m.durable.insert(first_id + i as u64);
                    }
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
                // Close syncs what this process wrote, under every policy.
                m.durable.append(&mut m.since_open);
                let (s, report) = open(&opts).unwrap();
                prop_assert_eq!(report.records, m.live.len() as u64);
                prop_assert_eq!(report.torn_tail, None);
                spool = s;
                reader = spool.reader();
                m.reopened();
            }
            Op::Crash => {
                spool.crash();
                drop(reader);
                let back = std::mem::take(&mut m.acked_unpersisted);
                m.live.extend(back);
                // Recovery syncs what it keeps.
                m.durable = m.live.keys().copied().collect();
                let (s, report) = open(&opts).unwrap();
                prop_assert_eq!(report.records, m.live.len() as u64);
                prop_assert_eq!(report.torn_tail, None);
                spool = s;
                reader = spool.reader();
                m.reopened();
            }
            Op::PowerCut(seed) => {
                spool.crash();
                drop(reader);
                power.power_cut(seed);
                spool = reboot(&mut m, dir.path(), &opts, &storage).await?;
                reader = spool.reader();
            }
            Op::PowerCutInAppend(len, seed) => {
                let p = m.payload(len);
                let id = spool.stats().next_id;
                power.cut_at_next_sync();
                match spool.append(p.clone()).await {
                    Ok(AppendOutcome::Appended { first_id, .. }) => {
                        prop_assert_eq!(first_id, id);
                        m.live.insert(id, p);
                        if always {
                            m.durable.insert(id);
                        }
                    }
                    Ok(AppendOutcome::Full) => {
                        return Err(TestCaseError::fail("spool full"));
                    }
                    Err(_) => {
                        m.refused.insert(id, p);
                    }
                }
                // Joins the writer: the fsync, and so the cut, has happened.
                spool.crash();
                drop(reader);
                power.power_cut(seed);
                spool = reboot(&mut m, dir.path(), &opts, &storage).await?;
                reader = spool.reader();
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
    prop_oneof![
        2 => Just(FsyncPolicy::Always),
        1 => Just(FsyncPolicy::Interval(Duration::from_millis(2))),
        2 => Just(FsyncPolicy::Never),
    ]
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
