//! Observability: what `/metrics`, `/v1/status` and the dashboard's `/v1/stream` show.
//!
//! Components keep their own counters (plain atomics, cheap on the hot path):
//! [`IngestStats`], [`PublishStats`], the spool's `SpoolStats`, [`ConnectorStats`],
//! [`PollStats`]. The [`Observer`] holds handles to all of them and reads them when asked:
//! a Prometheus scrape goes through [`MetricsCollector`] (the `prometheus-client` crate does
//! the text format), a status request through [`Observer::status`]. Nothing is counted twice.
//!
//! Labels are low-cardinality only: QoS, rejection reason, MQTT reason code, connector name,
//! poll index. Per-topic counts exist only for the dashboard ([`TopicTracker`]), bounded to
//! [`MAX_TOPICS`] topics.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use mqlink_spool::Spool;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::config::Config;
use crate::connector::ConnectorStats;
use crate::mqtt::client::LinkState;
use crate::publish::ingest::IngestStats;
use crate::publish::message::epoch_ms;
use crate::publish::publisher::PublishStats;
use crate::source::poll::PollStats;

/// Upper bounds (seconds) of the accept→acknowledge latency buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

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
pub const MAX_TOPICS: usize = 10_000;
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
        let watching = self.viewers.load(Ordering::Relaxed) > 0;
        let mut guard = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        guard.seq += 1;
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
        entry.count += 1;
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
        Err(_) => base64::engine::general_purpose::STANDARD.encode(cut),
    }
}

/// A connector as the observer sees it.
#[derive(Debug, Clone)]
pub struct ConnectorView {
    /// Name.
    pub name: String,
    /// Sink description (see [`crate::config::Sink::describe`]).
    pub sink: String,
    /// Sink kind (`file`, `kafka`, …): the metrics' `sink` label.
    pub sink_kind: &'static str,
    /// Counters.
    pub stats: Arc<ConnectorStats>,
}

/// Static facts about the running configuration.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Broker URL (no credentials).
    pub broker: String,
    /// Spool directory.
    pub spool_dir: String,
    /// Spool size bound.
    pub spool_max_bytes: u64,
    /// Routes as shown in status.
    pub routes: Vec<Value>,
}

impl Facts {
    /// Facts of a validated config.
    pub fn of(config: &Config) -> Facts {
        Facts {
            broker: crate::build::broker_url(&config.broker).to_string(),
            spool_dir: config.spool.dir.display().to_string(),
            spool_max_bytes: config.spool.max_bytes,
            routes: config
                .routes
                .iter()
                .map(|r| {
                    json!({
                        "name": r.name,
                        "match": r.matches.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
                        "topic": r.topic.as_str(),
                        "qos": r.qos as u8,
                        "retain": r.retain,
                        "enabled": r.enabled,
                    })
                })
                .collect(),
        }
    }
}

/// Everything the operations endpoints read.
#[derive(Debug)]
pub struct Observer {
    started: Instant,
    facts: RwLock<Facts>,
    link: watch::Receiver<LinkState>,
    ingest: Arc<IngestStats>,
    publish: Arc<PublishStats>,
    spool: Spool,
    connectors: RwLock<Vec<ConnectorView>>,
    polls: RwLock<Vec<Arc<PollStats>>>,
    connects: AtomicU64,
    connect_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Messages the embedded broker dropped from full client queues, when it runs.
    embedded_queue_dropped: RwLock<Option<Arc<AtomicU64>>>,
    /// Per-topic view for the dashboard.
    pub topics: Arc<TopicTracker>,
}

impl Observer {
    /// An observer of the given components.
    pub fn new(
        facts: Facts,
        link: watch::Receiver<LinkState>,
        ingest: Arc<IngestStats>,
        publish: Arc<PublishStats>,
        spool: Spool,
        topics: Arc<TopicTracker>,
    ) -> Observer {
        Observer {
            started: Instant::now(),
            facts: RwLock::new(facts),
            link,
            ingest,
            publish,
            spool,
            connectors: RwLock::default(),
            polls: RwLock::default(),
            connects: AtomicU64::new(0),
            connect_failures: Mutex::default(),
            embedded_queue_dropped: RwLock::default(),
            topics,
        }
    }

    /// The publisher's health for readiness: `Err` with the reason while it is failed or
    /// stalled.
    ///
    /// # Errors
    /// The reason the publisher is not making progress.
    pub fn publisher_health(&self) -> Result<(), &'static str> {
        if self.publish.failed.load(Ordering::Relaxed) {
            Err("failed (see the log); nothing is published")
        } else if self.publish.stalled.load(Ordering::Relaxed) {
            Err(
                "stalled: connected, messages waiting, and no verdict from the broker within spool.stall_timeout",
            )
        } else {
            Ok(())
        }
    }

    /// Replace facts, connectors and pollers (after a reload).
    pub fn set_parts(
        &self,
        facts: Facts,
        connectors: Vec<ConnectorView>,
        polls: Vec<Arc<PollStats>>,
    ) {
        *self.facts.write().unwrap_or_else(|p| p.into_inner()) = facts;
        *self.connectors.write().unwrap_or_else(|p| p.into_inner()) = connectors;
        *self.polls.write().unwrap_or_else(|p| p.into_inner()) = polls;
    }

    /// Report the embedded broker's count of messages dropped from full client queues
    /// (`broker.embedded.max_queued_messages` / `max_queued_bytes`).
    pub fn set_embedded_queue_dropped(&self, counter: Arc<AtomicU64>) {
        *self
            .embedded_queue_dropped
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(counter);
    }

    /// Count a successful connection (the binary watches the link state).
    pub fn connected(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a failed connection attempt or a lost connection, by cause.
    pub fn link_down(&self, cause: &'static str) {
        *self
            .connect_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(cause)
            .or_default() += 1;
    }

    /// The link state watch.
    pub fn link(&self) -> watch::Receiver<LinkState> {
        self.link.clone()
    }

    fn rejected(&self) -> [(&'static str, u64); 5] {
        let s = &self.ingest;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("no_route", g(&s.rejected_no_route)),
            ("invalid", g(&s.rejected_invalid)),
            ("spool_full", g(&s.rejected_full)),
            ("spool_error", g(&s.rejected_spool_error)),
            ("shutting_down", g(&s.rejected_stopping)),
        ]
    }

    /// The `/v1/status` document.
    pub fn status(&self, accepting: bool) -> Value {
        let facts = self.facts.read().unwrap_or_else(|p| p.into_inner()).clone();
        let (state, detail) = match &*self.link.borrow() {
            LinkState::Connected { protocol, .. } => {
                ("connected", format!("connected (MQTT {})", protocol.name()))
            }
            LinkState::Connecting => ("connecting", "connecting".to_string()),
            LinkState::Down { reason, .. } => ("down", reason.clone()),
            LinkState::Stopped => ("stopped", "stopped".to_string()),
        };
        let sp = self.spool.stats();
        let p = &self.publish;
        let sum = |a: &[AtomicU64; 3]| a.iter().map(|x| x.load(Ordering::Relaxed)).sum::<u64>();
        let dead = p.rejected.load(Ordering::Relaxed) + p.undecodable.load(Ordering::Relaxed);
        let connectors: Vec<Value> = self
            .connectors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|c| {
                let s = &c.stats;
                let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
                json!({
                    "name": c.name,
                    "sink": c.sink,
                    "subscribed": s.subscribed.load(Ordering::Relaxed),
                    "records_in": g(&s.records_in),
                    "records_out": g(&s.records_out),
                    "filtered": g(&s.filtered),
                    "dead_lettered": g(&s.dead_lettered),
                    "sink_errors": g(&s.sink_errors),
                })
            })
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.started.elapsed().as_secs(),
            "broker": {"url": facts.broker, "state": state, "detail": detail},
            "accepting": accepting,
            "spool": {"dir": facts.spool_dir, "records": sp.records, "bytes": sp.bytes, "max_bytes": facts.spool_max_bytes},
            "counters": {
                "accepted": self.ingest.accepted.load(Ordering::Relaxed),
                "rejected": self.rejected().iter().map(|(_, n)| n).sum::<u64>(),
                "published": sum(&p.published),
                "acknowledged": sum(&p.acknowledged),
                "dead_lettered": dead,
            },
            "connectors": connectors,
            "routes": facts.routes,
        })
    }
}

/// Reads the [`Observer`] at scrape time; register it with a `prometheus_client` registry.
#[derive(Debug)]
pub struct MetricsCollector(pub Arc<Observer>);

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter_family(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(Vec<(&'static str, String)>, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in values {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for MetricsCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let o = &self.0;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut e,
            "mqlink_events_accepted",
            "Events accepted into the spool.",
            g(&o.ingest.accepted),
        )?;
        let rejected: Vec<_> = o
            .rejected()
            .iter()
            .map(|(r, n)| (vec![("reason", r.to_string())], *n))
            .collect();
        counter_family(
            &mut e,
            "mqlink_events_rejected",
            "Events refused, by reason.",
            &rejected,
        )?;

        let sp = o.spool.stats();
        gauge(
            &mut e,
            "mqlink_spool_bytes",
            "Bytes held in the spool (unacknowledged).",
            sp.bytes as i64,
        )?;
        gauge(
            &mut e,
            "mqlink_spool_records",
            "Records in the spool not yet acknowledged.",
            sp.records as i64,
        )?;
        counter(
            &mut e,
            "mqlink_spool_dropped",
            "Records dropped by the drop_oldest policy.",
            sp.dropped,
        )?;
        counter(
            &mut e,
            "mqlink_spool_blocked",
            "Appends that waited for space (block policy).",
            sp.blocked,
        )?;

        let p = &o.publish;
        let by_qos = |a: &[AtomicU64; 3]| -> Vec<(Vec<(&'static str, String)>, u64)> {
            (0..3)
                .map(|q| (vec![("qos", q.to_string())], a[q].load(Ordering::Relaxed)))
                .collect()
        };
        counter_family(
            &mut e,
            "mqlink_messages_published",
            "Messages handed to the broker, by QoS.",
            &by_qos(&p.published),
        )?;
        counter_family(
            &mut e,
            "mqlink_messages_acknowledged",
            "Messages the broker acknowledged, by QoS.",
            &by_qos(&p.acknowledged),
        )?;
        let codes: Vec<_> = p
            .rejected_by_code
            .lock()
            .unwrap_or_else(|x| x.into_inner())
            .iter()
            .map(|(code, n)| (vec![("reason_code", format!("0x{code:02x}"))], *n))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        counter_family(
            &mut e,
            "mqlink_broker_rejections",
            "Messages the broker refused, by MQTT 5 reason code (dead-lettered).",
            &codes,
        )?;
        counter(
            &mut e,
            "mqlink_dead_lettered",
            "Messages moved to the dead-letter file.",
            g(&p.rejected) + g(&p.undecodable),
        )?;
        counter(
            &mut e,
            "mqlink_publish_retried",
            "Transient broker refusals (quota, busy, receive maximum, rate); each message is published again after a backoff.",
            g(&p.retried),
        )?;
        gauge(
            &mut e,
            "mqlink_publish_inflight",
            "Messages handed to the broker connection and not yet decided.",
            g(&p.inflight) as i64,
        )?;
        gauge(
            &mut e,
            "mqlink_publish_inflight_bytes",
            "Payload bytes read from the spool ahead of the broker's verdicts.",
            g(&p.inflight_bytes) as i64,
        )?;
        gauge(
            &mut e,
            "mqlink_publisher_healthy",
            "1 while the publisher makes progress; 0 when it failed or is stalled.",
            i64::from(o.publisher_health().is_ok()),
        )?;
        let (sum, count, buckets) = p.latency.snapshot();
        let mut m = e.encode_descriptor(
            "mqlink_publish_latency_seconds",
            "Time from acceptance to the broker's acknowledgement.",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<Vec<(String, String)>>(sum, count, &buckets, None)?;

        let connected = matches!(&*o.link.borrow(), LinkState::Connected { .. });
        gauge(
            &mut e,
            "mqlink_broker_connected",
            "1 while connected to the broker.",
            i64::from(connected),
        )?;
        counter(
            &mut e,
            "mqlink_broker_reconnects",
            "Successful connections after the first.",
            g(&o.connects).saturating_sub(1),
        )?;

        let failures: Vec<_> = o
            .connect_failures
            .lock()
            .unwrap_or_else(|x| x.into_inner())
            .iter()
            .map(|(cause, n)| (vec![("cause", cause.to_string())], *n))
            .collect();
        counter_family(
            &mut e,
            "mqlink_broker_link_failures",
            "Failed connection attempts and lost connections, by cause.",
            &failures,
        )?;
        let connectors = o
            .connectors
            .read()
            .unwrap_or_else(|x| x.into_inner())
            .clone();
        type Pick = fn(&ConnectorStats) -> &AtomicU64;
        let per: [(&str, &str, Pick); 6] = [
            (
                "mqlink_connector_records_in",
                "Messages received by a connector.",
                |s| &s.records_in,
            ),
            (
                "mqlink_connector_records_out",
                "Records confirmed by a connector's sink.",
                |s| &s.records_out,
            ),
            (
                "mqlink_connector_filtered",
                "Records dropped by a connector's filter.",
                |s| &s.filtered,
            ),
            (
                "mqlink_connector_dead_lettered",
                "Records a connector dead-lettered.",
                |s| &s.dead_lettered,
            ),
            (
                "mqlink_connector_sink_errors",
                "Failed sink deliveries (retried).",
                |s| &s.sink_errors,
            ),
            (
                "mqlink_connector_acked",
                "Messages a connector acknowledged to the broker.",
                |s| &s.acked,
            ),
        ];
        for (name, help, pick) in per {
            let values: Vec<_> = connectors
                .iter()
                .map(|c| {
                    (
                        vec![
                            ("connector", c.name.clone()),
                            ("sink", c.sink_kind.to_string()),
                        ],
                        pick(&c.stats).load(Ordering::Relaxed),
                    )
                })
                .collect();
            counter_family(&mut e, name, help, &values)?;
        }
        let polls = o.polls.read().unwrap_or_else(|x| x.into_inner()).clone();
        let pv = |f: fn(&PollStats) -> &AtomicU64| -> Vec<(Vec<(&'static str, String)>, u64)> {
            polls
                .iter()
                .enumerate()
                .map(|(i, s)| (vec![("poll", i.to_string())], f(s).load(Ordering::Relaxed)))
                .collect()
        };
        counter_family(
            &mut e,
            "mqlink_poll_requests",
            "Successful polls.",
            &pv(|s| &s.polls),
        )?;
        counter_family(
            &mut e,
            "mqlink_poll_failures",
            "Failed polls.",
            &pv(|s| &s.failures),
        )?;
        let embedded_dropped = o
            .embedded_queue_dropped
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.load(Ordering::Relaxed));
        if let Some(dropped) = embedded_dropped {
            counter(
                &mut e,
                "mqlink_embedded_queue_dropped",
                "Messages the embedded broker dropped from full client queues (oldest first).",
                dropped,
            )?;
        }
        gauge(
            &mut e,
            "mqlink_uptime_seconds",
            "Seconds since start.",
            o.started.elapsed().as_secs() as i64,
        )?;
        Ok(())
    }
}

/// Render the Prometheus text exposition of `observer`.
pub fn render_metrics(observer: &Arc<Observer>) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(MetricsCollector(observer.clone())));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
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
