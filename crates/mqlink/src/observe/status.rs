//! The `/v1/status` document: the observer's counters and facts as one JSON value.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::Observer;
use crate::mqtt::client::LinkState;

impl Observer {
    pub(super) fn rejected(&self) -> [(&'static str, u64); 5] {
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
                    "qos0_dropped": s.mqtt.qos0_dropped(),
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
                "qos0_dropped": self.mqtt.qos0_dropped(),
            },
            "connectors": connectors,
            "routes": facts.routes,
        })
    }
}
