//! Periodic HTTP polling: GET a JSON endpoint every interval and turn the answer into
//! events (Butler SOS polls Qlik Sense's health endpoint this way).
//!
//! The response becomes one event, or one per element when `split` (a jq expression that
//! yields an array) is set. Static `fields` are merged into each event (they win over
//! fields of the same name). A failed poll (unreachable, non-2xx, not JSON) is logged and
//! counted; the next tick tries again. Ticks that fall behind are delayed, never bunched.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::event::{Event, Source};
use crate::mqtt::tls::{TlsOptions, client_config};
use crate::observe::meter::PollStats;
use crate::publish::ingest::Ingest;
use crate::transform::{Chain, Kind};

/// Why a poller cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The HTTP client cannot be built.
    #[error("sources.poll[{index}]: cannot build the HTTP client: {reason}")]
    Client {
        /// Index in `sources.poll`.
        index: usize,
        /// Why.
        reason: String,
    },
}

/// One polled endpoint.
pub(crate) struct Poller {
    index: usize,
    cfg: config::Poll,
    client: reqwest::Client,
    split: Option<Chain>,
    ingest: Ingest,
    stats: Arc<PollStats>,
}

impl Poller {
    /// Prepare polling `cfg` (the `index`-th poll source).
    ///
    /// # Errors
    /// [`PollError`] when the HTTP client cannot be built.
    pub(crate) fn new(
        index: usize,
        cfg: &config::Poll,
        ingest: Ingest,
    ) -> Result<Poller, PollError> {
        let split = cfg.split.as_ref().map(|s| Chain::single(Kind::ArrayMap, s));
        let mut builder = reqwest::Client::builder().timeout(cfg.timeout);
        // HTTPS endpoints are verified against the system roots; plain HTTP needs none.
        if cfg.url.scheme() == "https" {
            let tls = client_config(&TlsOptions::default()).map_err(|e| PollError::Client {
                index,
                reason: e.to_string(),
            })?;
            builder = builder.tls_backend_preconfigured((*tls).clone());
        }
        let client = builder.build().map_err(|e| PollError::Client {
            index,
            reason: e.to_string(),
        })?;
        Ok(Poller {
            index,
            cfg: cfg.clone(),
            client,
            split,
            ingest,
            stats: Arc::default(),
        })
    }

    /// The poller's counters.
    pub(crate) fn stats(&self) -> Arc<PollStats> {
        self.stats.clone()
    }

    /// Poll until `stop`.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(self.cfg.every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.poll_once() => r,
            };
            match result {
                Ok(n) => {
                    self.stats.polls.fetch_add(1, Ordering::Relaxed);
                    self.stats.events.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(why) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(poll = self.index, url = %self.cfg.url, error = %why, "poll failed; retrying at the next interval");
                }
            }
        }
    }

    async fn poll_once(&self) -> Result<usize, String> {
        let mut req = self.client.get(self.cfg.url.clone());
        for (name, value) in &self.cfg.headers {
            req = req.header(name.as_str(), value.expose());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("cannot read response: {e}"))?;
        let body: Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("response is not JSON: {e}"))?;
        let values = match &self.split {
            Some(chain) => chain.apply_json(&body).map_err(|e| format!("split: {e}"))?,
            None => vec![body],
        };
        let events: Vec<Event> = values.into_iter().map(|v| self.event(v)).collect();
        if events.is_empty() {
            return Ok(0);
        }
        self.ingest
            .accept(&events)
            .await
            .map_err(|e| format!("events refused: {e}"))?;
        Ok(events.len())
    }

    fn event(&self, v: Value) -> Event {
        let mut fields = match v {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        for (k, v) in &self.cfg.fields {
            fields.insert(k.clone(), v.clone());
        }
        Event::new(self.cfg.event.clone(), fields, Source::Poll)
    }
}
