//! Spool → broker: publish records in order with a window in flight, and let each record go
//! only on the broker's verdict for that exact message.
//!
//! - Acknowledged: the spool record is acknowledged (the spool deletes segments whose
//!   records are all acknowledged).
//! - Rejected (an MQTT 5 reason code): logged with the topic and reason, counted, written to
//!   the dead-letter file, then acknowledged, so one bad message cannot block the rest
//!   forever and nothing disappears silently.
//! - Given up (shutdown): left in the spool for the next start.
//!
//! Connection loss decides nothing: the engine resends after reconnecting, in order.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::SystemTime;

use base64::Engine as _;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mqlink_spool::{Record, Spool, SpoolError};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::message::{OutMessage, epoch_ms};
use crate::mqtt::client::{Client, reason_name};
use crate::mqtt::state::Verdict;
use crate::observe::{Dir, LatencyHistogram, TopicTracker};

/// Counters of the publishing side.
#[derive(Debug, Default)]
pub struct PublishStats {
    /// Messages handed to the engine, by QoS.
    pub published: [AtomicU64; 3],
    /// Messages the broker acknowledged, by QoS.
    pub acknowledged: [AtomicU64; 3],
    /// Messages the broker rejected (dead-lettered).
    pub rejected: AtomicU64,
    /// Spool records that could not be decoded (dead-lettered).
    pub undecodable: AtomicU64,
    /// Messages the broker refused, by MQTT 5 reason code.
    pub rejected_by_code: Mutex<BTreeMap<u8, u64>>,
    /// Accept → broker acknowledgement latency.
    pub latency: LatencyHistogram,
}

/// Why the publisher stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    /// The spool failed (I/O or corruption).
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The MQTT client stopped.
    #[error("the MQTT client stopped")]
    ClientClosed,
}

/// Where refused messages go: one JSON line each, fsynced.
pub struct DeadLetter {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl DeadLetter {
    /// Dead letters at `path` (opened on first use).
    pub fn new(path: impl AsRef<Path>) -> DeadLetter {
        DeadLetter {
            path: path.as_ref().to_path_buf(),
            file: Mutex::new(None),
        }
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one entry.
    ///
    /// # Errors
    /// I/O errors opening, writing or syncing the file.
    pub fn write(&self, entry: &serde_json::Value) -> std::io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let file = guard.as_mut().expect("opened above");
        let mut line = serde_json::to_vec(entry).unwrap_or_default();
        line.push(b'\n');
        file.write_all(&line)?;
        file.sync_data()
    }
}

fn payload_json(payload: &[u8]) -> (serde_json::Value, Option<&'static str>) {
    match std::str::from_utf8(payload) {
        Ok(s) => (json!(s), None),
        Err(_) => (
            json!(base64::engine::general_purpose::STANDARD.encode(payload)),
            Some("base64"),
        ),
    }
}

/// Reads the spool and publishes.
pub struct Publisher {
    spool: Spool,
    client: Client,
    dead: Arc<DeadLetter>,
    stats: Arc<PublishStats>,
    window: usize,
    tracker: Option<Arc<TopicTracker>>,
}

impl Publisher {
    /// A publisher keeping up to `window` messages between the spool and a verdict.
    pub fn new(
        spool: Spool,
        client: Client,
        dead: Arc<DeadLetter>,
        stats: Arc<PublishStats>,
        window: usize,
    ) -> Publisher {
        Publisher {
            spool,
            client,
            dead,
            stats,
            window: window.max(1),
            tracker: None,
        }
    }

    /// Also count acknowledged messages per topic (for the dashboard).
    pub fn with_tracker(mut self, tracker: Arc<TopicTracker>) -> Publisher {
        self.tracker = Some(tracker);
        self
    }

    /// Run until `stop` is cancelled. Records without a verdict stay in the spool.
    ///
    /// # Errors
    /// A spool failure, or the client stopping underneath.
    pub async fn run(self, stop: CancellationToken) -> Result<(), PublisherError> {
        // The reader runs in its own future feeding a channel, so the main loop selects only
        // on cancel-safe operations.
        let (tx, mut rx) = mpsc::channel::<Record>(self.window);
        let mut reader = self.spool.reader();
        let feed = async move {
            loop {
                let record = reader.next().await?;
                if tx.send(record).await.is_err() {
                    return Ok::<(), SpoolError>(());
                }
            }
        };
        let main = async {
            let mut inflight = FuturesUnordered::new();
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return Ok(()),
                    Some((id, msg, verdict)) = inflight.next(), if !inflight.is_empty() => {
                        self.on_verdict(id, &msg, verdict);
                    }
                    record = rx.recv(), if inflight.len() < self.window => {
                        let Some(record) = record else { return Ok(()) };
                        let msg = match OutMessage::decode(record.payload.clone()) {
                            Ok(m) => m,
                            Err(e) => {
                                self.undecodable(record, &e.to_string());
                                continue;
                            }
                        };
                        let handle = tokio::select! {
                            _ = stop.cancelled() => return Ok(()),
                            h = self.client.publish(msg.to_publish()) => h.map_err(|_| PublisherError::ClientClosed)?,
                        };
                        self.stats.published[msg.qos as usize].fetch_add(1, Ordering::Relaxed);
                        let id = record.id;
                        inflight.push(async move { (id, msg, handle.await) });
                    }
                }
            }
        };
        tokio::select! {
            r = feed => r.map_err(PublisherError::from),
            r = main => r,
        }
    }

    fn on_verdict(&self, id: u64, msg: &OutMessage, verdict: Verdict) {
        match verdict {
            Verdict::Acknowledged => {
                self.spool.ack(id);
                self.stats.acknowledged[msg.qos as usize].fetch_add(1, Ordering::Relaxed);
                let now = epoch_ms(SystemTime::now());
                self.stats.latency.observe(Duration::from_millis(
                    now.saturating_sub(msg.accepted_at_ms),
                ));
                if let Some(t) = &self.tracker {
                    t.record(Dir::Out, &msg.topic, &msg.payload);
                }
            }
            Verdict::Rejected { code, reason } => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                *self
                    .stats
                    .rejected_by_code
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(code)
                    .or_default() += 1;
                let (payload, encoding) = payload_json(&msg.payload);
                let entry = json!({
                    "at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                    "topic": msg.topic,
                    "code": code,
                    "reason": reason_name(code),
                    "reason_string": reason,
                    "payload": payload,
                    "payload_encoding": encoding,
                });
                match self.dead.write(&entry) {
                    Ok(()) => {
                        tracing::warn!(topic = %msg.topic, code, reason = reason_name(code), detail = reason.as_deref().unwrap_or(""), dead_letter = %self.dead.path().display(), "broker rejected a message; moved to the dead-letter file");
                        self.spool.ack(id);
                    }
                    Err(e) => {
                        // Keep it in the spool rather than lose it; it will be tried again
                        // after a restart.
                        tracing::error!(topic = %msg.topic, code, error = %e, "broker rejected a message and the dead-letter file cannot be written; keeping it in the spool");
                    }
                }
            }
            Verdict::GaveUp => {}
        }
    }

    fn undecodable(&self, record: Record, why: &str) {
        self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
        let (payload, encoding) = payload_json(&record.payload);
        let entry = json!({
            "at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "spool_id": record.id,
            "error": why,
            "payload": payload,
            "payload_encoding": encoding,
        });
        match self.dead.write(&entry) {
            Ok(()) => {
                tracing::error!(
                    id = record.id,
                    error = why,
                    "undecodable spool record moved to the dead-letter file"
                );
                self.spool.ack(record.id);
            }
            Err(e) => {
                tracing::error!(id = record.id, error = %e, "undecodable spool record; dead-letter file not writable")
            }
        }
    }
}
