//! Spool → broker: publish records in order with a window in flight, and let each record go
//! only on the broker's verdict for that exact message.
//!
//! # Guarantees
//! - **Safety.** A record leaves the spool only when the broker acknowledged that exact
//!   message, or when the broker definitively refused *that* message and it was written to
//!   the dead-letter file (with its topic, reason code and reason) and counted. Transient
//!   refusals — 0x97 quota exceeded, 0x89 server busy, 0x93 receive maximum exceeded, 0x96
//!   message rate too high — are not verdicts on the message: it is published again after
//!   a backoff (doubling from 100 ms to 30 s), counted in `retried`, never dead-lettered.
//!   Messages go to the engine in spool order, and the engine keeps that order on the wire;
//!   a message refused transiently arrives after the ones that were already in flight
//!   behind it.
//! - **Liveness.** Connection loss decides nothing: the engine resends after reconnecting.
//!   A message the broker cannot take (larger than its Maximum Packet Size, or one it
//!   closes the connection on again and again) is refused by the engine and dead-lettered,
//!   so it never blocks the ones behind it; a retained message on a broker without retain
//!   goes out unretained and a QoS above the broker's maximum is lowered, each with a WARN.
//!   When the dead-letter file cannot be written, the message stays in flight and is tried
//!   again after the backoff.
//! - **Honesty.** [`PublishStats::stalled`] turns true while the connection is up, messages
//!   wait for a verdict and none has come back for the stall timeout; `/readyz` then
//!   reports not ready. If the publisher fails (a spool read error), [`Publisher::run`]
//!   returns the error: the owner stops accepting events and ends (the daemon exits
//!   non-zero), rather than accepting events that nobody publishes.
//! - **Bounds.** What is read ahead of the broker's verdicts is bounded by count (`window`)
//!   and by bytes (`window_bytes`, default [`WINDOW_BYTES`]): a backlog of large events
//!   waiting for an absent broker stays on disk, not in memory.
//!
//! Given up (shutdown): left in the spool for the next start.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::SystemTime;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mqlink_spool::{Record, Spool, SpoolError};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
// Tokio's clock: the stall rule then follows paused or simulated time in tests.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::message::{OutMessage, epoch_ms};
use crate::dead_letter::DeadLetter;
use crate::mqtt::client::{Client, LinkState, backoff, reason_name};
use crate::mqtt::state::Verdict;
use crate::observe::meter::{Dir, LatencyHistogram, TopicTracker};

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
    /// Transient refusals (quota, busy, receive maximum, rate): published again later.
    pub retried: AtomicU64,
    /// Messages handed to the engine and not yet decided.
    pub inflight: AtomicU64,
    /// Bytes of payload read ahead of the broker's verdicts.
    pub inflight_bytes: AtomicU64,
    /// Connected, messages waiting, and no verdict for the stall timeout.
    pub stalled: AtomicBool,
    /// The publisher ended on an error; nothing more is published.
    pub failed: AtomicBool,
    /// Accept → broker acknowledgement latency.
    pub latency: LatencyHistogram,
}

/// Refusal codes that say "not now", not "not this message" (MQTT 5 reason codes).
pub(crate) fn is_transient(code: u8) -> bool {
    matches!(code, 0x97 | 0x89 | 0x93 | 0x96)
}

/// Bytes read ahead of the broker's verdicts, by default.
pub(crate) const WINDOW_BYTES: usize = 8 << 20;

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

fn payload_json(payload: &[u8]) -> (serde_json::Value, Option<&'static str>) {
    let (text, base64) = crate::encoding::utf8_or_base64(payload);
    (json!(text), base64.then_some("base64"))
}

type PendingFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Pending, Verdict)> + Send>>;

/// Reads the spool and publishes.
pub(crate) struct Publisher {
    spool: Spool,
    client: Client,
    dead: Arc<DeadLetter>,
    stats: Arc<PublishStats>,
    window: usize,
    window_bytes: usize,
    stall_timeout: Duration,
    tracker: Option<Arc<TopicTracker>>,
}

/// A message handed to the engine, with what it holds of the read-ahead budget.
struct Pending {
    id: u64,
    msg: OutMessage,
    attempt: u32,
    _budget: OwnedSemaphorePermit,
}

/// Backoff of a message refused transiently: from 100 ms, doubling, at most 30 s.
fn retry_delay(attempt: u32) -> Duration {
    backoff(attempt, Duration::from_millis(100), Duration::from_secs(30))
}

impl Publisher {
    /// A publisher keeping up to `window` messages between the spool and a verdict.
    pub(crate) fn new(
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
            window_bytes: WINDOW_BYTES,
            stall_timeout: Duration::from_secs(60),
            tracker: None,
        }
    }

    /// How long a live connection may go with messages waiting and no verdict before the
    /// publisher counts as stalled.
    pub(crate) fn with_stall_timeout(mut self, timeout: Duration) -> Publisher {
        self.stall_timeout = timeout;
        self
    }

    /// Also count acknowledged messages per topic (for the dashboard).
    pub(crate) fn with_tracker(mut self, tracker: Arc<TopicTracker>) -> Publisher {
        self.tracker = Some(tracker);
        self
    }

    /// Run until `stop` is cancelled. Records without a verdict stay in the spool.
    ///
    /// # Errors
    /// A spool failure, or the client stopping underneath. [`PublishStats::failed`] is set
    /// first, so readiness turns false before the caller sees the error.
    pub(crate) async fn run(self, stop: CancellationToken) -> Result<(), PublisherError> {
        let r = self.run_inner(stop).await;
        if r.is_err() {
            self.stats.failed.store(true, Ordering::Relaxed);
            self.stats.stalled.store(false, Ordering::Relaxed);
        }
        r
    }

    async fn run_inner(&self, stop: CancellationToken) -> Result<(), PublisherError> {
        // The reader runs in its own future feeding a channel, so the main loop selects only
        // on cancel-safe operations. It takes a share of the byte budget before each record
        // and the share goes back with the record's verdict: count and bytes both bound what
        // is read ahead.
        let (tx, mut rx) = mpsc::channel::<(Record, OwnedSemaphorePermit)>(self.window);
        let mut reader = self.spool.reader();
        let budget = Arc::new(Semaphore::new(self.window_bytes));
        let max_share = u32::try_from(self.window_bytes).unwrap_or(u32::MAX);
        let stats = self.stats.clone();
        let feed = async move {
            loop {
                let record = reader.next().await?;
                // A record larger than the budget takes all of it and goes alone.
                let share = u32::try_from(record.payload.len())
                    .unwrap_or(u32::MAX)
                    .clamp(1, max_share);
                let Ok(permit) = budget.clone().acquire_many_owned(share).await else {
                    return Ok(());
                };
                stats
                    .inflight_bytes
                    .fetch_add(u64::from(share), Ordering::Relaxed);
                if tx.send((record, permit)).await.is_err() {
                    return Ok::<(), SpoolError>(());
                }
            }
        };
        let main = async {
            let mut inflight = FuturesUnordered::new();
            let link = self.client.link();
            // The last moment the publisher was not waiting on a live connection.
            let mut calm_since = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return Ok(()),
                    Some((pending, verdict)) = inflight.next(), if !inflight.is_empty() => {
                        calm_since = Instant::now();
                        self.stats.stalled.store(false, Ordering::Relaxed);
                        // A refusal is written to the dead-letter file first (fsync on the
                        // blocking pool); a stop meanwhile leaves the message in the spool.
                        let retry = tokio::select! {
                            biased;
                            _ = stop.cancelled() => return Ok(()),
                            r = self.on_verdict(pending, verdict) => r,
                        };
                        if let Some(retry) = retry {
                            inflight.push(self.resend(retry));
                        }
                        self.stats.inflight.store(inflight.len() as u64, Ordering::Relaxed);
                    }
                    record = rx.recv(), if inflight.len() < self.window => {
                        let Some((record, permit)) = record else { return Ok(()) };
                        let msg = match OutMessage::decode(record.payload.clone()) {
                            Ok(m) => m,
                            Err(e) => {
                                self.release(&permit);
                                let why = e.to_string();
                                tokio::select! {
                                    biased;
                                    _ = stop.cancelled() => return Ok(()),
                                    () = self.undecodable(record, &why) => {}
                                }
                                continue;
                            }
                        };
                        let handle = tokio::select! {
                            biased;
                            _ = stop.cancelled() => return Ok(()),
                            h = self.client.publish(msg.to_publish()) => h.map_err(|_| PublisherError::ClientClosed)?,
                        };
                        self.stats.published[msg.qos as usize].fetch_add(1, Ordering::Relaxed);
                        let pending = Pending { id: record.id, msg, attempt: 0, _budget: permit };
                        if inflight.is_empty() {
                            calm_since = Instant::now();
                        }
                        inflight.push(Box::pin(async move { let v = handle.await; (pending, v) }) as PendingFuture);
                        self.stats.inflight.store(inflight.len() as u64, Ordering::Relaxed);
                    }
                    _ = tick.tick() => {
                        let connected = matches!(*link.borrow(), LinkState::Connected { .. });
                        if !connected || inflight.is_empty() {
                            calm_since = Instant::now();
                        }
                        let stalled = calm_since.elapsed() >= self.stall_timeout;
                        if stalled && !self.stats.stalled.swap(true, Ordering::Relaxed) {
                            tracing::error!(inflight = inflight.len(), timeout = ?self.stall_timeout, "publisher stalled: connected, messages waiting, and no verdict from the broker");
                        }
                    }
                }
            }
        };
        // Biased: the feed first, then the main loop, in the same order on every wake,
        // so a run is the same run each time (the deterministic simulation replays seeds;
        // tokio's default picks a random order).
        tokio::select! {
            biased;
            r = feed => r.map_err(PublisherError::from),
            r = main => r,
        }
    }

    /// Publish a transiently refused message again after its backoff.
    fn resend(&self, mut p: Pending) -> PendingFuture {
        let client = self.client.clone();
        let delay = retry_delay(p.attempt);
        p.attempt = p.attempt.saturating_add(1);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let verdict = match client.publish(p.msg.to_publish()).await {
                Ok(h) => h.await,
                Err(_) => Verdict::GaveUp,
            };
            (p, verdict)
        })
    }

    fn release(&self, permit: &OwnedSemaphorePermit) {
        self.stats
            .inflight_bytes
            .fetch_sub(permit.num_permits() as u64, Ordering::Relaxed);
    }

    /// Settle a message by its verdict; a message to publish again comes back.
    async fn on_verdict(&self, p: Pending, verdict: Verdict) -> Option<Pending> {
        let (id, msg) = (p.id, &p.msg);
        match verdict {
            Verdict::Rejected { code, reason } if is_transient(code) => {
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %msg.topic, code, reason = reason_name(code), detail = reason.as_deref().unwrap_or(""), attempt = p.attempt + 1, "broker refused a message for now; publishing it again after a backoff");
                return Some(p);
            }
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
                match self.dead.append(std::slice::from_ref(&entry)).await {
                    Ok(()) => {
                        tracing::warn!(topic = %msg.topic, code, reason = reason_name(code), detail = reason.as_deref().unwrap_or(""), dead_letter = %self.dead.path().display(), "broker rejected a message; moved to the dead-letter file");
                        self.spool.ack(id);
                    }
                    Err(e) => {
                        // Keep it rather than lose it: publish it again after the backoff
                        // (the broker will refuse it again, and the file may be writable
                        // by then).
                        tracing::error!(topic = %msg.topic, code, error = %e, "broker rejected a message and the dead-letter file cannot be written; keeping it and trying again");
                        return Some(p);
                    }
                }
            }
            Verdict::GaveUp => {}
        }
        self.release(&p._budget);
        None
    }

    async fn undecodable(&self, record: Record, why: &str) {
        self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
        let (payload, encoding) = payload_json(&record.payload);
        let entry = json!({
            "at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "spool_id": record.id,
            "error": why,
            "payload": payload,
            "payload_encoding": encoding,
        });
        match self.dead.append(std::slice::from_ref(&entry)).await {
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
