//! Observability: what `/metrics`, `/v1/status` and the dashboard's `/v1/stream` show.
//!
//! - [`meter`]: the counters components update on their hot paths ([`meter::TopicTracker`],
//!   [`meter::LatencyHistogram`], [`meter::Dir`]); a leaf that imports nothing from the crate.
//! - this module: the [`Observer`], holding handles to every component's counters
//!   ([`IngestStats`], [`PublishStats`], the spool's `SpoolStats`, [`ConnectorStats`],
//!   the MQTT engine's [`ClientStats`], [`PollStats`]) and reading them when asked.
//!   Nothing is counted twice.
//! - [`status`]: the `/v1/status` document.
//! - [`metrics`]: the Prometheus exposition (the `prometheus-client` crate does the text
//!   format).
//! - [`http`]: the ops routes (`/healthz`, `/readyz`, `/metrics`, `/v1/status`,
//!   `/v1/stream`) and the [`dashboard`] page; the HTTP source serves them beside its own.
//!
//! Components depend on [`meter`] only; this module depends on the components. Keep it so
//! (`tests/import_cycles.rs` checks).
//!
//! Labels are low-cardinality only: QoS, rejection reason, MQTT reason code, connector name,
//! poll index. Per-topic counts exist only for the dashboard ([`meter::TopicTracker`]),
//! bounded to [`meter::MAX_TOPICS`] topics.

#[cfg(feature = "dashboard")]
pub(crate) mod dashboard;
#[cfg(feature = "http")]
pub(crate) mod http;
pub(crate) mod meter;
#[cfg(feature = "http")]
pub(crate) mod metrics;
pub(crate) mod status;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use mqlink_spool::Spool;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::config::Config;
use crate::connector::ConnectorStats;
use crate::mqtt::client::{ClientStats, LinkState};
use crate::observe::meter::PollStats;
use crate::publish::ingest::IngestStats;
use crate::publish::publisher::PublishStats;

use meter::TopicTracker;

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
    /// The daemon's MQTT connection's own counters.
    mqtt: Arc<ClientStats>,
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
        mqtt: Arc<ClientStats>,
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
            mqtt,
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
}
