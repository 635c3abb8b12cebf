//! Connectors: subscribe → format → transform → sink, acknowledging the broker only after
//! the sink confirmed.
//!
//! ```text
//!  broker ──PUBLISH──▶ engine ──Delivery──▶ batch (what is ready, up to the sink's count
//!                                             │      and payload bytes; one message at least)
//!                                             │ record::{json,fluvio,raw}
//!                                             │ transform::Chain  ── error ──▶ dead letter
//!                                             ▼
//!                                           Sink::deliver ── Reject ──▶ dead letter
//!                                             │ Ok (retry with backoff on Retry)
//!  broker ◀──PUBACK/PUBREC── engine ◀── Client::ack, in arrival order, per message
//! ```
//!
//! A message is acknowledged once every record it produced is confirmed by the sink or
//! written to the dead-letter file (a message a filter dropped has nothing pending and is
//! acknowledged with its batch). While the sink fails, the connector retries the same
//! records with backoff and takes no new deliveries: the engine's delivery buffer fills,
//! the engine stops reading the socket, the broker queues — back-pressure, never drops.
//! On shutdown the connector stops where it is; unacknowledged messages stay with the
//! broker (a persistent session gets them again on restart). The engine renews the
//! subscriptions on every new session.
//!
//! Pipelining: a sink that offers it (`Sink::start`; Redis, PostgreSQL) gets up to its
//! `in_flight` batches on its connection at once, so the next batch is already on the wire
//! while the sink confirms the one before. The batches wait in a queue in arrival order
//! and are finished only from its head, so acknowledgements stay in arrival order and
//! each comes only after the sink confirmed every record of the message. When a pipelined
//! attempt fails, only its `done` prefix counts as confirmed; the connector lets every
//! later attempt finish (keeping their results), delivers the failed batch's rest alone
//! with `Sink::deliver` (retry with backoff, dead-letter what is refused), and starts no
//! new batch until the queue is through. A later batch that succeeded before the failed
//! one is retried is therefore in the sink *before* the failed batch's rest: per-key order
//! can invert across that boundary, but nothing is lost, acknowledged early or sent twice
//! by the pipelining itself. `in_flight: 1` keeps the strict order.
//!
//! [`Connector::run`] polls the MQTT engine and any sink driver next to its own loop, so a
//! connector is one future the caller runs where it likes.

mod dead_letter;
mod stats;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::FutureExt as _;
use jaq_json::Val;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub(crate) use dead_letter::DeadRecord;
pub use stats::ConnectorStats;

use crate::build;
use crate::config::{self, RecordFormat};
use crate::dead_letter::DeadLetter;
use crate::mqtt::client::{self, Client, ClientClosed, ClientError, Deliveries, MqttOptions};
use crate::mqtt::codec::{Publish, QoS};
use crate::mqtt::state::{AckToken, Delivery};
use crate::observe::meter::{Dir, TopicTracker};
use crate::record;
use crate::sink::{self, Body, InFlight, Meta, OpenError, Record, Sink, SinkError};
use crate::transform::{self, Chain};

/// Why a connector could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The MQTT options are unusable.
    #[error("connector '{connector}': {source}")]
    Client {
        /// Connector name.
        connector: String,
        /// The engine's error.
        source: ClientError,
    },
    /// The sink cannot be set up.
    #[error("connector '{connector}': {source}")]
    Sink {
        /// Connector name.
        connector: String,
        /// The sink's error.
        source: OpenError,
    },
    /// The broker refused a subscription.
    #[error(
        "connector '{connector}': broker {broker} refused the subscription to '{filter}' (code 0x{code:02x}: {reason})"
    )]
    Refused {
        /// Connector name.
        connector: String,
        /// Broker URL.
        broker: String,
        /// The filter.
        filter: String,
        /// SUBACK reason code.
        code: u8,
        /// Its name.
        reason: &'static str,
    },
    /// The MQTT engine stopped on its own.
    #[error("connector '{connector}': the MQTT client stopped unexpectedly")]
    Stopped {
        /// Connector name.
        connector: String,
    },
}

/// A connector ready to run.
pub struct Connector {
    cfg: config::Connector,
    opts: MqttOptions,
    chain: Chain,
    stats: Arc<ConnectorStats>,
    tracker: Option<Arc<TopicTracker>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("name", &self.cfg.name)
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Prepare the MQTT options and the transform chain (compiled at validation).
    pub fn new(cfg: &config::Connector, broker: &config::Broker) -> Connector {
        let stats = Arc::new(ConnectorStats::default());
        let mut opts = build::connector_options(cfg, broker);
        // The engine counts into the connector's stats, which the metrics already hold.
        opts.stats = stats.mqtt.clone();
        Connector {
            cfg: cfg.clone(),
            opts,
            chain: Chain::new(&cfg.transforms),
            stats,
            tracker: None,
        }
    }

    /// Also count received messages per topic (for the dashboard).
    pub fn with_tracker(mut self, tracker: Arc<TopicTracker>) -> Connector {
        self.tracker = Some(tracker);
        self
    }

    /// The connector's counters.
    pub fn stats(&self) -> Arc<ConnectorStats> {
        self.stats.clone()
    }

    /// Open the sink, connect, subscribe, and move messages until `shutdown`.
    ///
    /// # Errors
    /// [`ConnectorError`] when the sink cannot be opened, the broker refuses a
    /// subscription, or the engine stops by itself. Sink outages and transform errors are
    /// not errors here: they are retried and dead-lettered.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ConnectorError> {
        let name = self.cfg.name.clone();
        let (client, deliveries, event_loop) =
            client::new(self.opts.clone()).map_err(|source| ConnectorError::Client {
                connector: name.clone(),
                source,
            })?;
        // The engine and the sink's driver stop when this token is cancelled: after the
        // worker has stopped, so nothing is acknowledged behind its back.
        let io_stop = CancellationToken::new();
        let (sink, driver) =
            sink::open(&self.cfg.sink, &name, &self.opts.client_id, io_stop.clone())
                .await
                .map_err(|source| ConnectorError::Sink {
                    connector: name.clone(),
                    source,
                })?;
        info!(connector = %name, broker = %self.opts.url, sink = %self.cfg.sink.describe(), "connector starting");
        let dead_letter = DeadLetter::new(&self.cfg.dead_letter);
        let worker = Worker {
            cfg: &self.cfg,
            chain: &self.chain,
            stats: &self.stats,
            client,
            sink,
            dead_letter,
            broker_url: self.opts.url.to_string(),
            shutdown: shutdown.clone(),
            tracker: self.tracker.clone(),
        };
        let work = async {
            let res = worker.work(deliveries).await;
            io_stop.cancel();
            res
        };
        let driver = async {
            if let Some(d) = driver {
                d.await;
            }
        };
        let (res, (), ()) = tokio::join!(work, event_loop.run(io_stop.clone()), driver);
        info!(connector = %name, "connector stopped");
        res
    }
}

/// A batch handed to the sink: its records, the messages they came from, and how far the
/// sink's pipelined first attempt got.
struct Batch {
    records: Arc<[Record]>,
    pending: Vec<Pending>,
    attempt: Attempt,
}

/// The state of a batch's first attempt.
enum Attempt {
    /// On the wire; its future resolves when the sink answered.
    Pending(InFlight),
    /// Answered (or nothing to send).
    Done(Result<(), SinkError>),
    /// The sink offered no pipelined attempt: delivered alone when it is the head.
    Alone,
}

/// Poll every batch's pending attempt, not only the head's, and settle those that
/// answered; resolves once one did (never when none is pending: the caller disables the
/// branch then). An attempt is a future like any other: one that is not polled does not
/// run past its first step, so a sink whose attempt has more than one step (or must take
/// its answer off a shared connection) is not held up behind the head.
async fn settle(queue: &mut VecDeque<Batch>) {
    std::future::poll_fn(|cx| {
        let mut any = false;
        for b in queue.iter_mut() {
            if let Attempt::Pending(f) = &mut b.attempt
                && let Poll::Ready(r) = f.as_mut().poll(cx)
            {
                b.attempt = Attempt::Done(r);
                any = true;
            }
        }
        if any { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
}

/// The batch being gathered: deliveries taken, bounded by count (`max`) and by their MQTT
/// payload bytes (`max_bytes`, what is known before formatting). The first delivery is
/// always taken, however large.
struct Gather {
    taken: Vec<Delivery>,
    bytes: u64,
    max: usize,
    max_bytes: u64,
    /// A delivery was turned away: the batch is closed.
    closed: bool,
}

impl Gather {
    fn new(max: usize, max_bytes: u64) -> Gather {
        Gather {
            taken: Vec::with_capacity(max),
            bytes: 0,
            max: max.max(1),
            max_bytes,
            closed: false,
        }
    }

    /// Open a new batch with `first`.
    fn start(&mut self, first: Delivery) {
        self.taken.clear();
        self.bytes = first.publish.payload.len() as u64;
        self.closed = false;
        self.taken.push(first);
    }

    /// Whether no further delivery may join.
    fn full(&self) -> bool {
        self.closed || self.taken.len() >= self.max || self.bytes >= self.max_bytes
    }

    /// Take `d` if it fits in the byte bound; if not, close the batch and hand `d` back
    /// (it opens the next one).
    fn offer(&mut self, d: Delivery) -> Option<Delivery> {
        let bytes = self.bytes.saturating_add(d.publish.payload.len() as u64);
        if bytes > self.max_bytes {
            self.closed = true;
            return Some(d);
        }
        self.bytes = bytes;
        self.taken.push(d);
        None
    }
}

/// Work on one message: its ack token and where its records end in the batch.
struct Pending {
    ack: Option<AckToken>,
    end: usize,
    dead: Vec<DeadRecord>,
}

struct Worker<'a> {
    cfg: &'a config::Connector,
    chain: &'a Chain,
    stats: &'a ConnectorStats,
    client: Client,
    sink: Sink,
    dead_letter: DeadLetter,
    broker_url: String,
    shutdown: CancellationToken,
    tracker: Option<Arc<TopicTracker>>,
}

/// Shutdown was requested while work was pending.
struct Stop;

impl Worker<'_> {
    async fn work(mut self, mut deliveries: Deliveries) -> Result<(), ConnectorError> {
        let name = self.cfg.name.clone();
        let filters: Vec<(String, _)> = self
            .cfg
            .subscribe
            .iter()
            .map(|f| (f.as_str().to_string(), self.cfg.qos))
            .collect();
        // A resumed session may get its unacknowledged and queued messages before the
        // SUBACK, more than the delivery buffer holds: the engine keeps reading until the
        // SUBACK comes (see `mqtt::client::backlog`; QoS 1/2 messages are kept, QoS 0 ones
        // beyond its byte bound dropped and counted), so awaiting it first is safe.
        let codes = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => return Ok(()),
            codes = self.client.subscribe(filters.clone()) => codes,
        };
        self.subscribed(&filters, codes)?;
        let batching = self.cfg.sink.batching();
        let max = batching.max.max(1);
        let depth = batching.in_flight.max(1);
        let mut queue: VecDeque<Batch> = VecDeque::with_capacity(depth);
        let mut gather = Gather::new(max, batching.max_bytes);
        // The delivery that did not fit the last batch (by payload bytes): it opens the
        // next one. The channel has no peek, so it waits here, unacknowledged like the rest.
        let mut carry: Option<Delivery> = None;
        loop {
            // The head is settled (or the sink takes it one at a time): finish it, acks
            // included, before anything behind it.
            while queue
                .front()
                .is_some_and(|b| !matches!(b.attempt, Attempt::Pending(_)))
            {
                let Some(b) = queue.pop_front() else { break };
                if self.finish(b, &mut queue).await.is_err() {
                    return Ok(());
                }
            }
            // Another batch may go out while every batch ahead of it is on the wire or
            // done: never behind one that failed or that the sink takes alone.
            let room = queue.len() < depth
                && queue
                    .iter()
                    .all(|b| matches!(b.attempt, Attempt::Pending(_) | Attempt::Done(Ok(()))));
            let pending = queue
                .iter()
                .any(|b| matches!(b.attempt, Attempt::Pending(_)));
            let first = if room && carry.is_some() {
                // Not past a shutdown: no new batch goes out once it is asked for.
                if self.shutdown.is_cancelled() {
                    return Ok(());
                }
                carry.take()
            } else {
                tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => return Ok(()),
                    () = settle(&mut queue), if pending => continue,
                    d = deliveries.recv(), if room => d,
                }
            };
            let Some(first) = first else {
                return if self.shutdown.is_cancelled() {
                    Ok(())
                } else {
                    Err(ConnectorError::Stopped { connector: name })
                };
            };
            gather.start(first);
            while !gather.full() {
                match deliveries.try_recv() {
                    Ok(d) => carry = gather.offer(d),
                    Err(_) => break,
                }
            }
            // A linger trades latency for fuller batches (one transaction, one pipeline)
            // when messages trickle in; a backlog fills the batch without waiting.
            if !gather.full() && !batching.linger.is_zero() {
                let deadline = tokio::time::Instant::now() + batching.linger;
                while !gather.full() {
                    tokio::select! {
                        biased;
                        () = self.shutdown.cancelled() => return Ok(()),
                        d = deliveries.recv() => match d {
                            Some(d) => carry = gather.offer(d),
                            None => break,
                        },
                        () = tokio::time::sleep_until(deadline) => break,
                    }
                }
            }
            match self.prepare(&mut gather.taken).await {
                Ok(b) => queue.push_back(b),
                Err(Stop) => return Ok(()),
            }
        }
    }

    /// Check the SUBACK's codes for `filters`: a refused filter stops the connector.
    fn subscribed(
        &self,
        filters: &[(String, QoS)],
        codes: Result<Vec<u8>, ClientClosed>,
    ) -> Result<(), ConnectorError> {
        let name = &self.cfg.name;
        let codes = codes.map_err(|ClientClosed| ConnectorError::Stopped {
            connector: name.clone(),
        })?;
        for ((filter, _), code) in filters.iter().zip(&codes) {
            if *code >= 0x80 {
                return Err(ConnectorError::Refused {
                    connector: name.clone(),
                    broker: self.broker_url.clone(),
                    filter: filter.clone(),
                    code: *code,
                    reason: client::reason_name(*code),
                });
            }
        }
        self.stats.subscribed.store(true, Ordering::Release);
        info!(connector = %name, filters = ?self.cfg.subscribe.iter().map(|f| f.as_str()).collect::<Vec<_>>(), granted = ?codes, "subscribed");
        Ok(())
    }

    /// Format and transform one batch of messages, dead-letter what failed there, and
    /// start the sink's pipelined attempt at the records when it offers one.
    async fn prepare(&mut self, taken: &mut Vec<Delivery>) -> Result<Batch, Stop> {
        ConnectorStats::add(&self.stats.records_in, taken.len() as u64);
        if let Some(t) = &self.tracker {
            // One lock and one lookup per run of one topic, not per message.
            for run in taken.chunk_by(|a, b| a.publish.topic == b.publish.topic) {
                let last = &run[run.len() - 1].publish;
                t.record_run(Dir::In, &last.topic, &last.payload, run.len() as u64);
            }
        }
        let mut records: Vec<Record> = Vec::with_capacity(taken.len());
        let mut pending: Vec<Pending> = Vec::with_capacity(taken.len());
        let mut meta = None;
        for d in taken.drain(..) {
            let mut dead = Vec::new();
            match self.records_of(&d.publish, &mut meta) {
                Ok(recs) => {
                    if recs.is_empty() {
                        ConnectorStats::add(&self.stats.filtered, 1);
                    }
                    records.extend(recs);
                }
                Err((e, input)) => {
                    dead.push(DeadRecord {
                        topic: d.publish.topic.to_string(),
                        error: e.to_string(),
                        record: input,
                    });
                }
            }
            pending.push(Pending {
                ack: d.ack,
                end: records.len(),
                dead,
            });
        }

        // Transform failures first: they are written before anything is acknowledged.
        let dead: Vec<DeadRecord> = pending
            .iter_mut()
            .flat_map(|p| std::mem::take(&mut p.dead))
            .collect();
        self.dead_letter(dead).await?;

        let records: Arc<[Record]> = records.into();
        let attempt = if records.is_empty() {
            Attempt::Done(Ok(()))
        } else {
            match self.sink.start(&records) {
                Some(mut f) => {
                    // Poll once now: that puts the request on the wire, in batch order,
                    // while earlier batches are still being answered.
                    match (&mut f).now_or_never() {
                        Some(r) => Attempt::Done(r),
                        None => Attempt::Pending(f),
                    }
                }
                None => Attempt::Alone,
            }
        };
        debug!(connector = %self.cfg.name, messages = pending.len(), records = records.len(), pipelined = !matches!(attempt, Attempt::Alone), "batch");
        Ok(Batch {
            records,
            pending,
            attempt,
        })
    }

    /// Finish the head batch `b`: take its pipelined attempt's result, deliver whatever
    /// is left one batch at a time (retrying, dead-lettering), and acknowledge its
    /// messages in arrival order. `later` are the batches behind it.
    async fn finish(&mut self, mut b: Batch, later: &mut VecDeque<Batch>) -> Result<(), Stop> {
        let mut confirmed = 0;
        match std::mem::replace(&mut b.attempt, Attempt::Alone) {
            Attempt::Done(Ok(())) => {
                ConnectorStats::add(&self.stats.records_out, b.records.len() as u64);
                confirmed = b.records.len();
            }
            Attempt::Done(Err(e)) => {
                let done = match &e {
                    SinkError::Retry { done, .. } | SinkError::Reject { done, .. } => *done,
                }
                .min(b.records.len());
                ConnectorStats::add(&self.stats.records_out, done as u64);
                ConnectorStats::add(&self.stats.sink_errors, 1);
                confirmed = done;
                warn!(
                    connector = %self.cfg.name,
                    pending = b.records.len() - confirmed,
                    behind = later.len(),
                    "pipelined delivery failed, delivering its rest alone: {e}"
                );
                // What is left of this batch goes alone: the later attempts finish first
                // (their outcomes are kept), and none starts until the queue is through.
                for l in later.iter_mut() {
                    if let Attempt::Pending(f) = &mut l.attempt {
                        let r = tokio::select! {
                            biased;
                            () = self.shutdown.cancelled() => return Err(Stop),
                            r = f => r,
                        };
                        l.attempt = Attempt::Done(r);
                    }
                }
            }
            Attempt::Pending(_) | Attempt::Alone => {}
        }
        self.deliver_rest(&b.records, &mut b.pending, confirmed)
            .await
    }

    /// Deliver `records[confirmed..]` one attempt at a time until the sink has all of
    /// them or dead-lettered what it refused, acknowledging each message, in arrival
    /// order, once every record it produced is done.
    async fn deliver_rest(
        &mut self,
        records: &[Record],
        pending: &mut [Pending],
        mut confirmed: usize,
    ) -> Result<(), Stop> {
        let mut next_ack = 0;
        let mut attempt: u32 = 0;
        loop {
            // Acknowledge, in arrival order, every message whose records are all done.
            while next_ack < pending.len() && pending[next_ack].end <= confirmed {
                if let Some(t) = pending[next_ack].ack.take() {
                    self.client.ack(t);
                    ConnectorStats::add(&self.stats.acked, 1);
                }
                next_ack += 1;
            }
            if confirmed == records.len() {
                return Ok(());
            }
            let rest = &records[confirmed..];
            let res = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Err(Stop),
                r = self.sink.deliver(rest) => r,
            };
            match res {
                Ok(()) => {
                    ConnectorStats::add(&self.stats.records_out, rest.len() as u64);
                    confirmed = records.len();
                    attempt = 0;
                }
                Err(SinkError::Reject {
                    done,
                    count,
                    reason,
                }) => {
                    // A sink's counts are clamped to the batch: a wrong one must not panic.
                    let done = done.min(rest.len());
                    ConnectorStats::add(&self.stats.records_out, done as u64);
                    ConnectorStats::add(&self.stats.sink_errors, 1);
                    let count = count.max(1).min(rest.len() - done);
                    let refused = rest[done..done + count]
                        .iter()
                        .map(|r| DeadRecord {
                            topic: r.topic.to_string(),
                            error: format!("sink refused: {reason}"),
                            record: r.to_json(),
                        })
                        .collect();
                    self.dead_letter(refused).await?;
                    confirmed += done + count;
                    attempt = 0;
                }
                Err(SinkError::Retry { done, reason }) => {
                    let done = done.min(rest.len());
                    ConnectorStats::add(&self.stats.records_out, done as u64);
                    ConnectorStats::add(&self.stats.sink_errors, 1);
                    confirmed += done;
                    if done > 0 {
                        attempt = 0;
                    }
                    let (min, max) = self.cfg.sink.backoff();
                    let delay = client::backoff(attempt, min, max);
                    attempt = attempt.saturating_add(1);
                    warn!(
                        connector = %self.cfg.name,
                        pending = records.len() - confirmed,
                        attempt,
                        retry_in = ?delay,
                        "sink failed, holding acknowledgements: {reason}"
                    );
                    tokio::select! {
                        biased;
                        () = self.shutdown.cancelled() => return Err(Stop),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Write records to the dead-letter file, retrying until it works.
    async fn dead_letter(&mut self, dead: Vec<DeadRecord>) -> Result<(), Stop> {
        if dead.is_empty() {
            return Ok(());
        }
        let dl = &self.dead_letter;
        let lines = dead_letter::lines(&self.cfg.name, &dead);
        let mut attempt = 0;
        loop {
            let res = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Err(Stop),
                r = dl.append(&lines) => r,
            };
            match res {
                Ok(()) => {
                    for d in &dead {
                        error!(connector = %self.cfg.name, topic = %d.topic, file = %dl.path().display(), "record dead-lettered: {}", d.error);
                    }
                    ConnectorStats::add(&self.stats.dead_lettered, dead.len() as u64);
                    return Ok(());
                }
                Err(e) => {
                    let delay = client::backoff(
                        attempt,
                        std::time::Duration::from_millis(100),
                        std::time::Duration::from_secs(10),
                    );
                    attempt += 1;
                    warn!(connector = %self.cfg.name, file = %dl.path().display(), retry_in = ?delay, "dead-letter write failed, holding acknowledgements: {e}");
                    tokio::select! {
                        biased;
                        () = self.shutdown.cancelled() => return Err(Stop),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// The records one message becomes; on a transform error, the error and the record
    /// that failed (as JSON, for the dead-letter file). `last_meta`: the previous
    /// message's [`Meta`], shared when this one's is the same (it mostly is in a batch).
    fn records_of(
        &self,
        p: &Publish,
        last_meta: &mut Option<Arc<Meta>>,
    ) -> Result<Vec<Record>, (transform::RuntimeError, serde_json::Value)> {
        let body = match self.cfg.format {
            RecordFormat::Json => Body::Json(record::json_record(p, SystemTime::now())),
            RecordFormat::Fluvio => Body::Json(record::fluvio(p)),
            RecordFormat::Raw => Body::Raw(p.payload.clone()),
        };
        let meta = match last_meta {
            Some(m)
                if m.qos == p.qos as u8
                    && m.retain == p.retain
                    && m.redelivered == p.dup
                    && m.user_properties == p.props.user =>
            {
                m.clone()
            }
            _ => {
                let m = Arc::new(Meta {
                    qos: p.qos as u8,
                    retain: p.retain,
                    user_properties: p.props.user.clone(),
                    redelivered: p.dup,
                });
                *last_meta = Some(m.clone());
                m
            }
        };
        let make = |part: usize, body: Body| Record {
            topic: p.topic.clone(),
            source: p.payload.clone(),
            part: part as u32,
            body,
            meta: meta.clone(),
        };
        if self.chain.is_empty() {
            return Ok(vec![make(0, body)]);
        }
        let input = match &body {
            Body::Json(v) => transform::to_val(v),
            Body::Raw(b) => Val::utf8_str(b.clone()),
        };
        let raw = self.cfg.format == RecordFormat::Raw;
        match self.chain.apply(input) {
            Ok(outs) => Ok(outs
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    let body = match v {
                        // A raw record a transform left (or made) a string stays bytes.
                        Val::TStr(b) | Val::BStr(b) if raw => Body::Raw(Bytes::clone(&b)),
                        other => Body::Json(transform::from_val(&other)),
                    };
                    make(i, body)
                })
                .collect()),
            Err(e) => Err((e, make(0, body).to_json())),
        }
    }
}
