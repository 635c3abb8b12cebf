//! The connection task, [`EventLoop::run`]: connect (see `handshake`), serve the
//! connection (see `connection`), and on a loss reconnect after a [`backoff`], until the
//! shutdown token is cancelled or every [`Client`](super::Client) is gone with nothing left to send.
//! Between connections it keeps taking commands (up to `MAX_QUEUED`), so publishers wait
//! on back-pressure, not on the network. It also turns commands into session calls and the
//! session's outputs into bytes to write, verdicts, and deliveries.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch};
// Tokio's clock, not the OS's: the same in production, and paused or simulated time in
// tests then governs keepalive and the stable-connection rule too.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::aliases::TopicAliases;
use super::backlog::{Backlog, MAX_BACKLOG_BYTES, Pushed};
use super::handle::{Command, LinkState};
use super::handshake::establish;
use super::observer::{self, Direction};
use super::options::MqttOptions;
use crate::mqtt::codec::{self, Connect, Packet, Protocol};
use crate::mqtt::state::{AckToken, Delivery, Loss, Output, Session, Token, Verdict};
use crate::mqtt::transport::Connector;

/// The connection task. Run it with [`EventLoop::run`].
pub struct EventLoop {
    pub(super) opts: MqttOptions,
    pub(super) connector: Connector,
    pub(super) protocol: Protocol,
    pub(super) session: Session,
    pub(super) cmd_rx: Option<mpsc::Receiver<Command>>,
    pub(super) ack_rx: mpsc::UnboundedReceiver<AckToken>,
    pub(super) deliver_tx: mpsc::Sender<Delivery>,
    pub(super) link_tx: watch::Sender<LinkState>,
    pub(super) next_token: Arc<AtomicU64>,
    pub(super) verdicts: HashMap<Token, oneshot::Sender<Verdict>>,
    pub(super) sub_replies: HashMap<Token, oneshot::Sender<Vec<u8>>>,
    pub(super) unsub_replies: HashMap<Token, oneshot::Sender<()>>,
    /// Deliveries the application has not taken yet.
    pub(super) backlog: Backlog,
    pub(super) early_closes: u32,
    /// The topic aliases of the current connection.
    pub(super) aliases: TopicAliases,
}

/// Tokens with this bit are the loop's own messages (birth); their verdicts are only logged.
pub(super) const INTERNAL: Token = 1 << 63;
/// Queue no more than this many unsent messages inside the session; the bounded command
/// channel holds the rest, so publishers feel back-pressure.
pub(super) const MAX_QUEUED: usize = 4096;
/// Stop accepting commands while this much is waiting to be written.
pub(super) const MAX_WBUF: usize = 1 << 20;
/// A connection that lived this long after CONNACK was a real one: the backoff starts over.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// How a connection ended.
pub(super) enum ConnEnd {
    /// The shutdown token was cancelled; a DISCONNECT was sent.
    Shutdown,
    /// Every client is gone and nothing is left to send; a DISCONNECT was sent.
    Finished,
    /// Lost: why, and whether a message of ours may be the cause.
    Lost(String, Loss),
}

impl EventLoop {
    /// Run until `shutdown` is cancelled or every [`Client`](super::Client) is gone and all work is done.
    /// On shutdown, a DISCONNECT is sent (so the will is not published) and undecided
    /// publishes resolve to [`Verdict::GaveUp`].
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut attempt: u32 = 0;
        loop {
            if self.finished() {
                break;
            }
            let _ = self.link_tx.send(LinkState::Connecting);
            // Every attempt starts from the configured protocol: an earlier fallback to
            // 3.1.1 is not kept (see the module doc).
            let connect = establish(
                self.connector.clone(),
                self.connect_packet(),
                self.opts.protocol,
                self.opts.fallback_to_311,
                self.opts.max_packet_size as usize,
                self.opts.connect_timeout,
                self.opts.packet_observer.clone(),
            );
            tokio::pin!(connect);
            let result = loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break None,
                    r = &mut connect => break Some(r),
                    cmd = recv_opt(&mut self.cmd_rx), if self.session.queued_len() < MAX_QUEUED => self.on_command(cmd),
                }
            };
            let Some(result) = result else { break };
            match result {
                Ok((io, leftover, connack, protocol)) => {
                    if protocol != self.protocol {
                        if protocol == self.opts.protocol {
                            tracing::info!(broker = %self.opts.url, protocol = protocol.name(), "broker accepted MQTT {} again", protocol.name());
                        } else {
                            tracing::warn!(broker = %self.opts.url, "broker refused MQTT 5; using MQTT 3.1.1 on this connection (broker refusals of single messages cannot be seen on 3.1.1)");
                        }
                        self.protocol = protocol;
                    }
                    let started = Instant::now();
                    match self.connected(io, leftover, connack, &shutdown).await {
                        ConnEnd::Shutdown => break,
                        ConnEnd::Finished => break,
                        ConnEnd::Lost(reason, loss) => {
                            let lived = started.elapsed();
                            if lived >= STABLE_AFTER {
                                attempt = 0;
                            }
                            // Only a close right after sending can be a message's fault.
                            let loss = if lived < STABLE_AFTER {
                                loss
                            } else {
                                Loss::Other
                            };
                            if self.session.disconnected(loss) {
                                // The message the broker kept closing on is gone: the next
                                // connection is expected to live.
                                attempt = 0;
                            }
                            self.note_early_close(lived);
                            tracing::warn!(broker = %self.opts.url, %reason, queued = self.session.queued_len(), inflight = self.session.inflight_len(), "connection lost; reconnecting");
                            let _ = self.link_tx.send(LinkState::Down {
                                reason,
                                cause: "connection_lost",
                            });
                        }
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    tracing::warn!(broker = %self.opts.url, client_id = %self.opts.client_id, %reason, "cannot connect");
                    let _ = self.link_tx.send(LinkState::Down {
                        reason,
                        cause: e.cause(),
                    });
                }
            }
            let delay = backoff(attempt, self.opts.reconnect_min, self.opts.reconnect_max);
            attempt = attempt.saturating_add(1);
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            let stop = loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break true,
                    _ = &mut sleep => break false,
                    cmd = recv_opt(&mut self.cmd_rx), if self.session.queued_len() < MAX_QUEUED => self.on_command(cmd),
                }
            };
            if stop {
                break;
            }
        }
        self.session.give_up();
        self.drain_outputs(&mut BytesMut::new(), &mut VecDeque::new(), 0, None);
        let _ = self.link_tx.send(LinkState::Stopped);
    }

    pub(super) fn finished(&self) -> bool {
        self.cmd_rx.is_none() && self.session.queued_len() == 0 && self.session.inflight_len() == 0
    }

    fn note_early_close(&mut self, lived: Duration) {
        if lived < Duration::from_secs(5) {
            self.early_closes += 1;
            if self.early_closes >= 2 {
                tracing::warn!(client_id = %self.opts.client_id, "the broker keeps closing the connection right after it is made: a message it refuses (too large, not allowed) or another client using the same client id (each connection takes the session from the other) are the usual causes");
            }
        } else {
            self.early_closes = 0;
        }
    }

    /// The CONNECT for the next attempt: whether it resumes a session is the session's
    /// call (see `Session::clean_start`).
    pub(super) fn connect_packet(&self) -> Packet {
        Packet::Connect(Box::new(Connect {
            client_id: self.opts.client_id.clone(),
            keep_alive: u16::try_from(self.opts.keep_alive.as_secs()).unwrap_or(u16::MAX),
            clean_start: self
                .session
                .clean_start(!self.opts.clean_start, self.opts.resume_at_start),
            session_expiry: self
                .opts
                .session_expiry
                .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
            receive_max: self.opts.receive_maximum,
            max_packet_size: Some(self.opts.max_packet_size),
            will: self.opts.will.clone(),
            username: self.opts.username.clone(),
            password: self
                .opts
                .password
                .as_ref()
                .map(|p| Bytes::from(p.clone().into_bytes())),
            extras: self.opts.connect_extras.clone(),
        }))
    }

    pub(super) fn on_command(&mut self, cmd: Option<Command>) {
        let Some(cmd) = cmd else {
            // Every Client is gone: finish what was queued, then stop.
            self.cmd_rx = None;
            return;
        };
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        match cmd {
            Command::Publish { publish, reply } => {
                // The same cheap check ingest makes (no allocation): this runs per publish.
                if let Err(e) = crate::topic::validate_topic_name(&publish.topic) {
                    let reason = format!("invalid topic '{}': {e}", publish.topic);
                    // Refused here: it could never be encoded, so it must not enter the
                    // session (it would wait there for a verdict that never comes).
                    if let Some(reply) = reply {
                        let _ = reply.send(Verdict::Rejected {
                            code: 0x90,
                            reason: Some(reason),
                        });
                    }
                    return;
                }
                if let Some(reply) = reply {
                    self.verdicts.insert(token, reply);
                }
                self.session.publish(token, publish);
            }
            Command::Subscribe { filters, reply } => {
                let codes: Vec<u8> = filters
                    .iter()
                    .map(|(f, _)| {
                        if codec::check_topic_filter(f).is_err() {
                            0x8f
                        } else {
                            0
                        }
                    })
                    .collect();
                if filters.is_empty() || codes.contains(&0x8f) {
                    // Nothing is sent: one invalid filter would make the broker drop the
                    // connection. Valid filters of the request answer 0x80 (not tried).
                    let _ = reply.send(
                        codes
                            .into_iter()
                            .map(|c| if c == 0 { 0x80 } else { c })
                            .collect(),
                    );
                    return;
                }
                self.sub_replies.insert(token, reply);
                self.session.subscribe(token, filters);
            }
            Command::Unsubscribe { filters, reply } => {
                self.unsub_replies.insert(token, reply);
                self.session.unsubscribe(token, filters);
            }
        }
    }

    /// Move session outputs to the write buffer, the verdict senders and the backlog.
    /// `limit`: the broker's Maximum Packet Size on this connection.
    pub(super) fn drain_outputs(
        &mut self,
        wbuf: &mut BytesMut,
        qos0: &mut VecDeque<(u64, Token)>,
        base: u64,
        limit: Option<u32>,
    ) {
        while let Some(out) = self.session.poll_output() {
            match out {
                Output::Send {
                    mut packet,
                    written,
                } => {
                    // A topic alias already set on this connection goes without its topic.
                    if let Packet::Publish(p) = &packet
                        && let Some(short) = self.aliases.outgoing(p)
                    {
                        packet = Packet::Publish(short);
                    }
                    let before = wbuf.len();
                    let refused = match codec::encode(&packet, self.protocol, wbuf) {
                        Err(e) => Some((0x90, e.to_string())),
                        Ok(()) => match limit {
                            Some(max) if (wbuf.len() - before) as u64 > u64::from(max) => Some((
                                0x95,
                                format!(
                                    "the packet is {} bytes, more than the broker's maximum packet size of {max}",
                                    wbuf.len() - before
                                ),
                            )),
                            _ => None,
                        },
                    };
                    if let Some((code, reason)) = refused {
                        wbuf.truncate(before);
                        match &packet {
                            // A message we were handed: refuse it instead of poisoning the
                            // connection; what waits behind it goes on.
                            Packet::Publish(p) => {
                                self.aliases.not_sent(p);
                                self.session.refuse(p.pid, written, code, reason);
                            }
                            other => {
                                tracing::error!(packet = other.name(), %reason, "cannot send packet");
                            }
                        }
                        continue;
                    }
                    observer::notify(self.opts.packet_observer.as_ref(), Direction::Sent, &packet);
                    if let Some(t) = written {
                        qos0.push_back((base + wbuf.len() as u64, t));
                    }
                }
                Output::Verdict(t, v) => self.resolve(t, v),
                Output::Deliver(d) => self.hold(d),
                Output::Subscribed(t, codes) => {
                    if let Some(r) = self.sub_replies.remove(&t) {
                        let _ = r.send(codes);
                    }
                }
                Output::Unsubscribed(t) => {
                    if let Some(r) = self.unsub_replies.remove(&t) {
                        let _ = r.send(());
                    }
                }
                Output::Anomaly(msg) => tracing::warn!(broker = %self.opts.url, "{msg}"),
            }
        }
    }

    /// Hold a delivery for the application, or count and report a QoS 0 message the
    /// backlog had no room for (see `backlog`).
    fn hold(&mut self, d: Delivery) {
        if let Pushed::Dropped { first } = self.backlog.push_back(d) {
            self.opts.stats.qos0_dropped.fetch_add(1, Ordering::Relaxed);
            if first {
                tracing::error!(broker = %self.opts.url, held = self.backlog.len(), bytes = self.backlog.bytes(), bound = MAX_BACKLOG_BYTES, "dropping incoming QoS 0 messages: the application has not taken the deliveries held, and the broker's answer to a SUBSCRIBE or UNSUBSCRIBE is behind more (QoS 1/2 messages are kept; every drop is counted)");
            }
        }
    }

    fn resolve(&mut self, token: Token, verdict: Verdict) {
        if token & INTERNAL != 0 {
            if let Verdict::Rejected { code, reason } = &verdict {
                tracing::warn!(
                    code,
                    reason = reason.as_deref().unwrap_or(""),
                    "broker rejected the birth message"
                );
            }
            return;
        }
        if let Some(tx) = self.verdicts.remove(&token) {
            let _ = tx.send(verdict);
        }
    }
}

pub(super) async fn recv_opt(rx: &mut Option<mpsc::Receiver<Command>>) -> Option<Command> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Exponential backoff with jitter: the n-th retry waits between half and all of
/// `min * 2^n`, capped at `max`.
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let base = min.saturating_mul(1u32 << attempt.min(20)).min(max);
    let half = base / 2;
    let jitter = jitter_up_to(half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

/// A source of backoff jitter: a uniform draw from `0..=max`.
#[cfg(test)]
pub(crate) type JitterSource = Box<dyn FnMut(u64) -> u64>;

#[cfg(test)]
thread_local! {
    /// The simulation tests' seeded stand-in for the jitter source (`crate::sim`): one
    /// seed must give one run.
    pub(crate) static JITTER: std::cell::RefCell<Option<JitterSource>> =
        const { std::cell::RefCell::new(None) };
}

/// A uniform draw from `0..=max`.
fn jitter_up_to(max: u64) -> u64 {
    #[cfg(test)]
    if let Some(j) = JITTER.with(|j| j.borrow_mut().as_mut().map(|f| f(max))) {
        return j;
    }
    rand::rng().random_range(0..=max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for _ in 0..100 {
            let d0 = backoff(0, min, max);
            assert!(d0 >= Duration::from_millis(50) && d0 <= min);
            let d10 = backoff(10, min, max);
            assert!(d10 >= Duration::from_secs(1) && d10 <= max);
        }
    }
}
