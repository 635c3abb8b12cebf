//! Meters: the counters and trackers components update on their hot paths, read later by
//! the observer. A leaf: it imports nothing from the crate but the leaf `encoding`, so
//! every component can use it without depending on what observes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Upper bounds (seconds) of the accept→acknowledge latency buckets.
pub(crate) const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// Counters of one poller (`source::poll`); here so the observer reads them in a build
/// without the poll source too.
#[derive(Debug, Default)]
// Written by the poller, read by `/metrics`: a build with neither has no use for them.
#[cfg_attr(not(any(feature = "poll", feature = "http")), allow(dead_code))]
pub struct PollStats {
    /// Successful polls.
    pub polls: AtomicU64,
    /// Failed polls (request, status, body, split or ingest).
    pub failures: AtomicU64,
    /// Events produced.
    pub events: AtomicU64,
}

/// A fixed-bucket histogram of atomics: observing is two relaxed adds.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    /// Record one latency.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// (sum in seconds, count, cumulative buckets) for the exposition format.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut acc = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| {
                acc += c.load(Ordering::Relaxed);
                (*b, acc)
            })
            .collect();
        let count = self.count.load(Ordering::Relaxed);
        (
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count,
            buckets,
        )
    }
}

/// Direction of a message seen by the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Published by mqlink (acknowledged by the broker).
    Out = 0,
    /// Received by a connector.
    In = 1,
}

/// Most topics the dashboard tracks; further topics are counted under `(other topics)`.
pub(crate) const MAX_TOPICS: usize = 10_000;
const MAX_PAYLOAD_SHOWN: usize = 1024;
const OTHER: &str = "(other topics)";

#[derive(Debug)]
struct TopicEntry {
    count: u64,
    last_payload: String,
    last_at: u64,
    dir: Dir,
    seq: u64,
}

/// Per-topic counts and last payloads for the live topic tree. Counting is always on and
/// allocation-free for known topics; payloads are copied only while someone watches.
#[derive(Debug, Default)]
pub struct TopicTracker {
    viewers: AtomicUsize,
    topics: Mutex<Topics>,
}

#[derive(Debug, Default)]
struct Topics {
    /// Bumped on every record; each viewer asks for what changed since the seq it saw.
    seq: u64,
    /// One map per direction, so a topic mqlink publishes and a connector also receives
    /// is counted once each way.
    maps: [HashMap<String, TopicEntry>; 2],
}

impl Topics {
    fn len(&self) -> usize {
        self.maps[0].len() + self.maps[1].len()
    }
}

/// Keeps a dashboard viewer registered while alive.
#[derive(Debug)]
pub struct Viewer(Arc<TopicTracker>);

impl Drop for Viewer {
    fn drop(&mut self) {
        self.0.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TopicTracker {
    /// Count a message.
    pub fn record(&self, dir: Dir, topic: &str, payload: &[u8]) {
        self.record_run(dir, topic, payload, 1);
    }

    /// Count `n` messages in a row on `topic`, the last of which carried `payload`: what
    /// `n` calls of [`TopicTracker::record`] do, under one lock (a connector counts its
    /// batch this way, one call per run of one topic).
    pub fn record_run(&self, dir: Dir, topic: &str, payload: &[u8], n: u64) {
        let watching = self.viewers.load(Ordering::Relaxed) > 0;
        let mut guard = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        guard.seq += n;
        let seq = guard.seq;
        let total = guard.len();
        let map = &mut guard.maps[dir as usize];
        let key = if map.contains_key(topic) || total < MAX_TOPICS {
            topic
        } else {
            OTHER
        };
        let entry = match map.get_mut(key) {
            Some(e) => e,
            None => map.entry(key.to_string()).or_insert(TopicEntry {
                count: 0,
                last_payload: String::new(),
                last_at: 0,
                dir,
                seq,
            }),
        };
        entry.count += n;
        entry.dir = dir;
        entry.seq = seq;
        if watching {
            entry.last_at = epoch_ms(SystemTime::now());
            entry.last_payload = shown(payload);
        }
    }

    /// Register a viewer (payloads are kept while at least one exists).
    pub fn viewer(self: &Arc<Self>) -> Viewer {
        self.viewers.fetch_add(1, Ordering::Relaxed);
        Viewer(self.clone())
    }

    /// Topics changed after `since` (0: all), and the sequence number to ask from next.
    pub fn changes_since(&self, since: u64) -> (Vec<Value>, u64) {
        let guard = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (topic, e) in guard.maps.iter().flat_map(|m| m.iter()) {
            if e.seq > since {
                out.push(json!({
                    "topic": topic,
                    "count": e.count,
                    "last_payload": e.last_payload,
                    "last_at": e.last_at,
                    "dir": if e.dir == Dir::Out { "out" } else { "in" },
                }));
            }
        }
        (out, guard.seq)
    }
}

fn shown(payload: &[u8]) -> String {
    let cut = &payload[..payload.len().min(MAX_PAYLOAD_SHOWN)];
    match std::str::from_utf8(cut) {
        Ok(s) => s.to_string(),
        // A cut in the middle of a UTF-8 character is still text.
        Err(e) if e.error_len().is_none() => {
            String::from_utf8_lossy(&cut[..e.valid_up_to()]).into_owned()
        }
        Err(_) => crate::encoding::utf8_or_base64(cut).0,
    }
}

/// Milliseconds since the epoch for `t`.
pub(crate) fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(100));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!(sum > 100.0);
        assert_eq!(buckets[0], (0.001, 1));
        assert_eq!(buckets.iter().find(|(b, _)| *b == 0.05).unwrap().1, 2);
        assert_eq!(
            buckets.last().unwrap().1,
            2,
            "100 s is above every bucket (only +Inf has it)"
        );
    }

    #[test]
    fn tracker_is_bounded_and_reports_changes_once() {
        let t = Arc::new(TopicTracker::default());
        let _v = t.viewer();
        for i in 0..MAX_TOPICS + 5 {
            t.record(Dir::Out, &format!("t/{i}"), b"x");
        }
        let (all, seq) = t.changes_since(0);
        assert_eq!(
            all.len(),
            MAX_TOPICS + 1,
            "the overflow is one '(other topics)' entry"
        );
        assert!(t.changes_since(seq).0.is_empty(), "nothing changed since");
        t.record(Dir::Out, "t/1", b"y");
        let (c, _) = t.changes_since(seq);
        assert_eq!(
            (c.len(), &c[0]["topic"], &c[0]["count"]),
            (1, &json!("t/1"), &json!(2))
        );
        assert_eq!(
            t.changes_since(0).0.len(),
            MAX_TOPICS + 1,
            "another viewer still sees everything"
        );
    }

    #[test]
    fn a_run_counts_as_its_messages_one_by_one() {
        let (one, run) = (
            Arc::new(TopicTracker::default()),
            Arc::new(TopicTracker::default()),
        );
        let (_v1, _v2) = (one.viewer(), run.viewer());
        for p in [&b"1"[..], b"2", b"3"] {
            one.record(Dir::In, "a", p);
        }
        one.record(Dir::In, "b", b"4");
        run.record_run(Dir::In, "a", b"3", 3);
        run.record_run(Dir::In, "b", b"4", 1);
        let seen = |t: &TopicTracker, since| {
            let (mut c, seq) = t.changes_since(since);
            for v in &mut c {
                v["last_at"] = json!(0);
            }
            c.sort_by_key(|v| v["topic"].as_str().unwrap().to_string());
            (c, seq)
        };
        assert_eq!(seen(&one, 0), seen(&run, 0));
        assert_eq!(
            seen(&one, 3),
            seen(&run, 3),
            "the run's last message is its seq"
        );
        assert_eq!(seen(&run, 0).0[0]["count"], json!(3));
    }

    #[test]
    fn published_and_received_are_counted_apart_and_payloads_are_cut() {
        let t = Arc::new(TopicTracker::default());
        t.record(Dir::Out, "a", b"before anyone watched");
        let _v = t.viewer();
        t.record(Dir::Out, "a", b"out");
        t.record(Dir::In, "a", "é".repeat(600).as_bytes());
        let (mut c, _) = t.changes_since(0);
        c.sort_by_key(|v| v["dir"].as_str().unwrap().to_string());
        assert_eq!((&c[0]["dir"], &c[0]["count"]), (&json!("in"), &json!(1)));
        assert_eq!(
            (&c[1]["dir"], &c[1]["count"], &c[1]["last_payload"]),
            (&json!("out"), &json!(2), &json!("out"))
        );
        let shown = c[0]["last_payload"].as_str().unwrap();
        assert!(
            shown.len() <= MAX_PAYLOAD_SHOWN && shown.starts_with('é'),
            "cut on a character boundary"
        );
    }
}
