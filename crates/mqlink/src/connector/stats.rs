//! Counters of one connector, shared with whoever reports metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::mqtt::client::ClientStats;

/// Plain counters, updated by the connector and read by the daemon (metrics, tests).
#[derive(Debug, Default)]
pub struct ConnectorStats {
    /// Set once the broker granted every subscription.
    pub subscribed: AtomicBool,
    /// Messages taken off MQTT.
    pub records_in: AtomicU64,
    /// Records the sink confirmed.
    pub records_out: AtomicU64,
    /// Messages that produced no record (a filter said no, a map yielded nothing).
    pub filtered: AtomicU64,
    /// Records written to the dead-letter file (transform errors, sink rejections).
    pub dead_lettered: AtomicU64,
    /// Records that failed with no dead-letter file: since validation gives every
    /// connector one (next to the spool by default) this stays 0; kept so the exported
    /// metric does not disappear.
    pub dropped: AtomicU64,
    /// Failed sink deliveries (each retry counts).
    pub sink_errors: AtomicU64,
    /// QoS 1/2 messages whose acknowledgement was handed to the engine (it sends the
    /// PUBACK/PUBREC on the current connection, in arrival order).
    pub acked: AtomicU64,
    /// The connector's MQTT engine's own counters (QoS 0 messages it dropped while the
    /// connector awaited its SUBACK behind more than the engine holds).
    pub mqtt: Arc<ClientStats>,
}

impl ConnectorStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Read a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Whether the subscriptions are in place.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }
}
