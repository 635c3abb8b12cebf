//! The client: a cheap handle ([`Client`]) and the connection task ([`EventLoop`]).
//!
//! ```text
//!  Client::publish ──cmd channel (bounded)──▶ EventLoop ──▶ Session (pure) ──▶ socket
//!  PublishHandle ◀──────── verdict ──────────┘      │
//!  Deliveries    ◀──────── incoming messages ───────┘◀── Client::ack (after the sink)
//! ```
//!
//! The event loop owns the socket and the [`Session`]. It reconnects with exponential
//! backoff and jitter (a connection that dies within [`STABLE_AFTER`] of its CONNACK does not
//! reset the backoff, so a broker that accepts and then drops us is not hammered), and never
//! decides a verdict because a connection was lost. It falls back from MQTT 5 to 3.1.1 only
//! when the broker explicitly refuses 5 (CONNACK 0x84, or a 3.x return code 1), and tries 5
//! again on every later connect: a cut before CONNACK is a network fault, not an answer, and
//! on 3.1.1 a broker's refusal of a message cannot be seen at all.
//!
//! It stops when the shutdown token is cancelled, or when every [`Client`] is dropped and
//! nothing is left to deliver. The library spawns nothing: the caller runs
//! [`EventLoop::run`] where it likes.
//!
//! Messages and filters that cannot be encoded (an invalid topic) are answered at once,
//! without touching the connection: a refused publish gets a `Rejected` verdict (0x90), an
//! invalid filter the code 0x8F. A message whose encoded packet is larger than the broker's
//! Maximum Packet Size is rejected with 0x95 and never sent (the broker would disconnect us
//! for it, again after every reconnect).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
// Tokio's clock, not the OS's: the same in production, and paused or simulated time in
// tests then governs keepalive and the stable-connection rule too.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codec::{
    self, ConnAck, Connect, ConnectExtras, Disconnect, Packet, Protocol, Publish, QoS,
    SubscribeOptions, Will,
};
use super::state::{AckToken, Delivery, Loss, Output, Session, SessionError, Token, Verdict};
use super::tls::TlsOptions;
use super::transport::{BoxIo, Connector, SocketOptions, TransportError};
use super::url::BrokerUrl;

/// Everything needed to connect and keep a session.
#[derive(Clone)]
pub struct MqttOptions {
    /// Broker address.
    pub url: BrokerUrl,
    /// Client identifier. Stable by default (`mqlink-{hostname}`), so the broker keeps
    /// sessions across restarts and devices do not multiply.
    pub client_id: String,
    /// User name.
    pub username: Option<String>,
    /// Password; never logged.
    pub password: Option<String>,
    /// Protocol to try first.
    pub protocol: Protocol,
    /// With `protocol` 5: fall back to 3.1.1 when the broker refuses 5.
    pub fallback_to_311: bool,
    /// Keepalive interval (0 disables).
    pub keep_alive: Duration,
    /// Start a new session (true) or resume the broker's (false).
    pub clean_start: bool,
    /// With `clean_start` false: may this process's first connect resume a session an
    /// earlier process left? True for subscribers (the messages queued meanwhile are the
    /// point). False for a publisher of QoS 1/2 messages: a new process does not know
    /// which packet ids the broker still holds (a stored QoS 2 message awaiting PUBREL), so
    /// it starts a new session once and resumes on every reconnect after that.
    pub resume_at_start: bool,
    /// v5 session expiry for persistent sessions.
    pub session_expiry: Option<Duration>,
    /// Last will.
    pub will: Option<Will>,
    /// Published on every successful (re)connect (the "birth" message).
    pub birth: Option<Publish>,
    /// TLS settings (used for mqtts/wss).
    pub tls: TlsOptions,
    /// How the socket is opened: TCP by default; Unix, bound or through a SOCKS5 proxy.
    pub socket: SocketOptions,
    /// Backoff floor.
    pub reconnect_min: Duration,
    /// Backoff ceiling.
    pub reconnect_max: Duration,
    /// Largest packet we accept (and announce on v5).
    pub max_packet_size: u32,
    /// Cap on unacknowledged QoS 1/2 messages (the broker's Receive Maximum may lower it).
    pub max_inflight: u16,
    /// Timeout for TCP + TLS + WebSocket + CONNACK.
    pub connect_timeout: Duration,
    /// Commands buffered between handles and the loop.
    pub queue_capacity: usize,
    /// Incoming messages buffered for the application.
    pub delivery_capacity: usize,
    /// MQTT 5 Receive Maximum sent in CONNECT: how many QoS 1/2 messages the broker may
    /// have unacknowledged towards us (None: the protocol's default, 65535).
    pub receive_maximum: Option<u16>,
    /// MQTT 5 CONNECT properties asked for by the user (mqlink pub/sub's `-D CONNECT`).
    pub connect_extras: ConnectExtras,
    /// MQTT 5 options and properties sent with every SUBSCRIBE (mqlink sub's
    /// `--retain-as-published` and `-D SUBSCRIBE ...`).
    pub subscribe_options: SubscribeOptions,
}

impl std::fmt::Debug for MqttOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttOptions")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("protocol", &self.protocol)
            .field("clean_start", &self.clean_start)
            .field("max_inflight", &self.max_inflight)
            .finish_non_exhaustive()
    }
}

impl MqttOptions {
    /// Defaults for `url`: client id `mqlink-{hostname}`, MQTT 5 with fallback, keepalive
    /// 60 s, clean start, 16 MiB packets, 20 in flight (Mosquitto's per-client default).
    pub fn new(url: BrokerUrl) -> MqttOptions {
        let username = url.username.clone();
        let password = url.password.clone();
        MqttOptions {
            url,
            client_id: default_client_id(),
            username,
            password,
            protocol: Protocol::V5,
            fallback_to_311: true,
            keep_alive: Duration::from_secs(60),
            clean_start: true,
            resume_at_start: true,
            session_expiry: None,
            will: None,
            birth: None,
            tls: TlsOptions::default(),
            socket: SocketOptions::default(),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            max_packet_size: 16 * 1024 * 1024,
            max_inflight: 20,
            connect_timeout: Duration::from_secs(10),
            queue_capacity: 1024,
            delivery_capacity: 1024,
            receive_maximum: None,
            connect_extras: ConnectExtras::default(),
            subscribe_options: SubscribeOptions::default(),
        }
    }
}

/// `mqlink-{hostname}`: stable across restarts, distinct across machines.
pub fn default_client_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("mqlink-{host}")
}

/// Connection state, for readiness checks, logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected yet, or reconnecting.
    Connecting,
    /// CONNACK received.
    Connected {
        /// Protocol in use.
        protocol: Protocol,
        /// Whether the broker resumed a session.
        session_present: bool,
    },
    /// The last attempt or connection failed.
    Down {
        /// Why, in one line.
        reason: String,
        /// The cause as a fixed label (for metrics): `bad_credentials`, `not_authorized`,
        /// `client_id_rejected`, `refused`, `tls`, `unreachable`, `timeout`, `websocket`,
        /// `handshake` or `connection_lost`.
        cause: &'static str,
    },
    /// The loop ended.
    Stopped,
}

/// The loop is gone; nothing more can be sent.
#[derive(Debug, thiserror::Error)]
#[error("the MQTT client has stopped")]
pub struct ClientClosed;

/// A failure that stops the client before it starts.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TLS material or names are wrong.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Options that cannot work.
    #[error("invalid MQTT options: {0}")]
    Invalid(String),
}

enum Command {
    Publish {
        publish: Publish,
        reply: Option<oneshot::Sender<Verdict>>,
    },
    Subscribe {
        filters: Vec<(String, QoS)>,
        reply: oneshot::Sender<Vec<u8>>,
    },
    Unsubscribe {
        filters: Vec<String>,
        reply: oneshot::Sender<()>,
    },
}

/// Handle used to publish, subscribe and acknowledge. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    cmd: mpsc::Sender<Command>,
    acks: mpsc::UnboundedSender<AckToken>,
    link: watch::Receiver<LinkState>,
}

/// Resolves to the message's [`Verdict`]; `GaveUp` if the client stopped first.
pub struct PublishHandle(oneshot::Receiver<Verdict>);

impl Future for PublishHandle {
    type Output = Verdict;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Verdict> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Verdict::GaveUp))
    }
}

impl Client {
    /// Queue a message; waits while the queue is full (back-pressure).
    ///
    /// # Errors
    /// [`ClientClosed`] when the loop has stopped.
    pub async fn publish(&self, publish: Publish) -> Result<PublishHandle, ClientClosed> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Publish {
                publish,
                reply: Some(tx),
            })
            .await
            .map_err(|_| ClientClosed)?;
        Ok(PublishHandle(rx))
    }

    /// Subscribe and wait for the broker's answer: one code per filter (granted QoS 0-2,
    /// or ≥ 0x80 refused). The subscription is renewed on every new session.
    ///
    /// # Errors
    /// [`ClientClosed`] when the loop has stopped.
    pub async fn subscribe(&self, filters: Vec<(String, QoS)>) -> Result<Vec<u8>, ClientClosed> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Subscribe { filters, reply: tx })
            .await
            .map_err(|_| ClientClosed)?;
        rx.await.map_err(|_| ClientClosed)
    }

    /// Unsubscribe and wait for UNSUBACK.
    ///
    /// # Errors
    /// [`ClientClosed`] when the loop has stopped.
    pub async fn unsubscribe(&self, filters: Vec<String>) -> Result<(), ClientClosed> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Unsubscribe { filters, reply: tx })
            .await
            .map_err(|_| ClientClosed)?;
        rx.await.map_err(|_| ClientClosed)
    }

    /// Acknowledge an incoming QoS 1/2 message once it is safe (e.g. the sink has it).
    pub fn ack(&self, token: AckToken) {
        // A closed loop has no connection to ack on; the broker will redeliver.
        let _ = self.acks.send(token);
    }

    /// Watch the connection state.
    pub fn link(&self) -> watch::Receiver<LinkState> {
        self.link.clone()
    }
}

/// Incoming messages. Ack each QoS 1/2 delivery with [`Client::ack`].
pub type Deliveries = mpsc::Receiver<Delivery>;

/// Build a client whose connections are opened by `dial` instead of TCP (the simulation
/// tests' in-memory network).
#[cfg(test)]
pub(crate) fn new_with_dial(
    opts: MqttOptions,
    dial: super::transport::Dial,
) -> Result<(Client, Deliveries, EventLoop), ClientError> {
    let (client, deliveries, mut event_loop) = new(opts)?;
    event_loop.connector = event_loop.connector.with_dial(dial);
    Ok((client, deliveries, event_loop))
}

/// Build a client. Nothing runs until [`EventLoop::run`] is polled.
///
/// # Errors
/// TLS files that cannot be loaded, impossible options.
pub fn new(opts: MqttOptions) -> Result<(Client, Deliveries, EventLoop), ClientError> {
    if opts.client_id.is_empty() && !opts.clean_start {
        return Err(ClientError::Invalid(
            "a persistent session needs a client id".into(),
        ));
    }
    if opts.max_packet_size < 64 {
        return Err(ClientError::Invalid(
            "max_packet_size must be at least 64 bytes".into(),
        ));
    }
    let connector = Connector::new(&opts.url, &opts.tls, opts.connect_timeout)?
        .with_socket(opts.socket.clone());
    let (cmd_tx, cmd_rx) = mpsc::channel(opts.queue_capacity.max(1));
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let (del_tx, del_rx) = mpsc::channel(opts.delivery_capacity.max(1));
    let (link_tx, link_rx) = watch::channel(LinkState::Connecting);
    let mut session = Session::new(opts.max_inflight);
    session.set_subscribe_options(opts.subscribe_options.clone());
    let protocol = opts.protocol;
    Ok((
        Client {
            cmd: cmd_tx,
            acks: ack_tx,
            link: link_rx,
        },
        del_rx,
        EventLoop {
            opts,
            connector,
            protocol,
            session,
            cmd_rx: Some(cmd_rx),
            ack_rx,
            deliver_tx: del_tx,
            link_tx,
            next_token: Arc::new(AtomicU64::new(1)),
            verdicts: HashMap::new(),
            sub_replies: HashMap::new(),
            unsub_replies: HashMap::new(),
            backlog: VecDeque::new(),
            early_closes: 0,
        },
    ))
}

/// The connection task. Run it with [`EventLoop::run`].
pub struct EventLoop {
    opts: MqttOptions,
    connector: Connector,
    protocol: Protocol,
    session: Session,
    cmd_rx: Option<mpsc::Receiver<Command>>,
    ack_rx: mpsc::UnboundedReceiver<AckToken>,
    deliver_tx: mpsc::Sender<Delivery>,
    link_tx: watch::Sender<LinkState>,
    next_token: Arc<AtomicU64>,
    verdicts: HashMap<Token, oneshot::Sender<Verdict>>,
    sub_replies: HashMap<Token, oneshot::Sender<Vec<u8>>>,
    unsub_replies: HashMap<Token, oneshot::Sender<()>>,
    backlog: VecDeque<Delivery>,
    early_closes: u32,
}

/// Tokens with this bit are the loop's own messages (birth); their verdicts are only logged.
const INTERNAL: Token = 1 << 63;
/// Queue no more than this many unsent messages inside the session; the bounded command
/// channel holds the rest, so publishers feel back-pressure.
const MAX_QUEUED: usize = 4096;
/// Stop accepting commands while this much is waiting to be written.
const MAX_WBUF: usize = 1 << 20;
/// A connection that lived this long after CONNACK was a real one: the backoff starts over.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

enum ConnEnd {
    Shutdown,
    Finished,
    Lost(String, Loss),
}

impl EventLoop {
    /// Run until `shutdown` is cancelled or every [`Client`] is gone and all work is done.
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

    fn finished(&self) -> bool {
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

    fn connect_packet(&self) -> Packet {
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

    fn on_command(&mut self, cmd: Option<Command>) {
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
    fn drain_outputs(
        &mut self,
        wbuf: &mut BytesMut,
        qos0: &mut VecDeque<(u64, Token)>,
        base: u64,
        limit: Option<u32>,
    ) {
        while let Some(out) = self.session.poll_output() {
            match out {
                Output::Send { packet, written } => {
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
                                self.session.refuse(p.pid, written, code, reason);
                            }
                            other => {
                                tracing::error!(packet = other.name(), %reason, "cannot send packet");
                            }
                        }
                        continue;
                    }
                    if let Some(t) = written {
                        qos0.push_back((base + wbuf.len() as u64, t));
                    }
                }
                Output::Verdict(t, v) => self.resolve(t, v),
                Output::Deliver(d) => self.backlog.push_back(d),
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

    async fn connected(
        &mut self,
        io: BoxIo,
        leftover: BytesMut,
        connack: ConnAck,
        shutdown: &CancellationToken,
    ) -> ConnEnd {
        let protocol = self.protocol;
        tracing::info!(broker = %self.opts.url, client_id = %self.opts.client_id, protocol = protocol.name(), session_present = connack.session_present, "connected");
        let _ = self.link_tx.send(LinkState::Connected {
            protocol,
            session_present: connack.session_present,
        });
        self.session.connected(&connack);
        if let Some(birth) = self.opts.birth.clone() {
            let token = INTERNAL | self.next_token.fetch_add(1, Ordering::Relaxed);
            self.session.publish(token, birth);
        }
        let keep_alive = match connack.server_keep_alive {
            Some(s) => Duration::from_secs(u64::from(s)),
            None => self.opts.keep_alive,
        };
        let max = self.opts.max_packet_size as usize;
        let limit = connack.max_packet_size;
        let (mut rd, mut wr) = tokio::io::split(io);
        let mut rbuf = leftover;
        rbuf.reserve(64 * 1024);
        let mut wbuf = BytesMut::with_capacity(64 * 1024);
        let mut written: u64 = 0;
        let mut qos0: VecDeque<(u64, Token)> = VecDeque::new();
        let mut last_write = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        // A clone, so a reserved permit does not borrow `self` across the select.
        let deliver_tx = self.deliver_tx.clone();

        // Packets that arrived with the CONNACK.
        if let Err((e, loss)) = self.decode_all(&mut rbuf, max) {
            return ConnEnd::Lost(e, loss);
        }
        loop {
            self.drain_outputs(&mut wbuf, &mut qos0, written, limit);
            while let Some(d) = self.backlog.pop_front() {
                match self.deliver_tx.try_send(d) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(d)) => {
                        self.backlog.push_front(d);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(d)) => {
                        // Nobody listens: ack so the broker does not stall on us.
                        if let Some(t) = d.ack {
                            self.session.ack(t);
                        }
                    }
                }
            }
            if self.finished() && wbuf.is_empty() {
                let _ = write_disconnect(&mut wr, protocol).await;
                return ConnEnd::Finished;
            }
            let ping_at = if keep_alive.is_zero() {
                None
            } else {
                Some(match ping_sent {
                    Some(sent) => sent + keep_alive,
                    None => last_write + keep_alive.mul_f32(0.75),
                })
            };
            let accept = self.session.queued_len() < MAX_QUEUED && wbuf.len() < MAX_WBUF;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    if !wbuf.is_empty() {
                        let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&wbuf)).await;
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(1), write_disconnect(&mut wr, protocol)).await;
                    return ConnEnd::Shutdown;
                }
                r = wr.write_buf(&mut wbuf), if !wbuf.is_empty() => {
                    match r {
                        Ok(0) => return ConnEnd::Lost("socket closed while writing".into(), Loss::ClosedByBroker),
                        Ok(n) => {
                            written += n as u64;
                            last_write = Instant::now();
                            while qos0.front().is_some_and(|(end, _)| *end <= written) {
                                let (_, t) = qos0.pop_front().expect("front exists");
                                self.session.written(t);
                            }
                            if wbuf.is_empty() && let Err(e) = wr.flush().await {
                                return ConnEnd::Lost(format!("write failed: {e}"), loss_of(&e));
                            }
                        }
                        Err(e) => return ConnEnd::Lost(format!("write failed: {e}"), loss_of(&e)),
                    }
                }
                r = rd.read_buf(&mut rbuf), if self.backlog.is_empty() => {
                    match r {
                        Ok(0) => return ConnEnd::Lost("broker closed the connection".into(), Loss::ClosedByBroker),
                        Ok(_) => {
                            ping_sent = None;
                            if let Err((e, loss)) = self.decode_all(&mut rbuf, max) {
                                return ConnEnd::Lost(e, loss);
                            }
                        }
                        Err(e) => return ConnEnd::Lost(format!("read failed: {e}"), loss_of(&e)),
                    }
                }
                Some(t) = self.ack_rx.recv() => {
                    self.session.ack(t);
                    while let Ok(t) = self.ack_rx.try_recv() {
                        self.session.ack(t);
                    }
                }
                permit = deliver_tx.reserve(), if !self.backlog.is_empty() => {
                    if let (Ok(permit), Some(d)) = (permit, self.backlog.pop_front()) {
                        permit.send(d);
                    }
                }
                cmd = recv_opt(&mut self.cmd_rx), if accept => {
                    self.on_command(cmd);
                    // Take what else is waiting, so one write carries many publishes.
                    for _ in 0..256 {
                        match self.cmd_rx.as_mut().map(|rx| rx.try_recv()) {
                            Some(Ok(c)) => self.on_command(Some(c)),
                            Some(Err(mpsc::error::TryRecvError::Disconnected)) => { self.on_command(None); break; }
                            _ => break,
                        }
                    }
                }
                _ = sleep_until_opt(ping_at) => {
                    if ping_sent.is_some() && self.backlog.is_empty() {
                        return ConnEnd::Lost(format!("no answer from the broker within the keepalive of {keep_alive:?}"), Loss::Other);
                    }
                    // While the application is not taking deliveries we do not read, so
                    // the broker's PINGRESP may be waiting unread: that is no sign of a
                    // dead broker. Keep pinging (the broker needs to hear from us) and
                    // judge the broker again once reading resumes.
                    if let Err(e) = codec::encode(&Packet::PingReq, protocol, &mut wbuf) {
                        return ConnEnd::Lost(e.to_string(), Loss::Other);
                    }
                    ping_sent = Some(Instant::now());
                }
            }
        }
    }

    /// Decode and handle what arrived. On an error: why the connection must go, and
    /// whether a message of ours may be the cause (a DISCONNECT from the broker may answer
    /// one; a broker breaking the protocol is its own fault).
    fn decode_all(&mut self, rbuf: &mut BytesMut, max: usize) -> Result<(), (String, Loss)> {
        loop {
            match codec::decode(rbuf, self.protocol, max) {
                Ok(Some(packet)) => {
                    if let Err(e) = self.session.handle(packet) {
                        return Err(match e {
                            SessionError::Disconnected { code: 0x8e, .. } => {
                                tracing::error!(client_id = %self.opts.client_id, "session taken over: another client connected with the same client id; give each instance its own client_id");
                                (e.to_string(), Loss::Other)
                            }
                            // "Busy", "receive maximum exceeded", "rate too high", "quota
                            // exceeded": the broker's state, not the message's fault. Blaming
                            // the message alone on the wire would dead-letter it after three
                            // such closes (found by the simulation, seed 20787000473).
                            SessionError::Disconnected {
                                code: 0x89 | 0x93 | 0x96 | 0x97,
                                ..
                            } => (e.to_string(), Loss::Other),
                            SessionError::Disconnected { code, ref reason } => (
                                format!(
                                    "broker disconnected us: {} (0x{code:02x}){}",
                                    reason_name(code),
                                    reason
                                        .as_deref()
                                        .map(|r| format!(": {r}"))
                                        .unwrap_or_default()
                                ),
                                Loss::ClosedByBroker,
                            ),
                            other => (other.to_string(), Loss::Other),
                        });
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err((format!("bad packet from broker: {e}"), Loss::Other)),
            }
        }
    }
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<Command>>) -> Option<Command> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn write_disconnect<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    protocol: Protocol,
) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    let _ = codec::encode(
        &Packet::Disconnect(Disconnect::default()),
        protocol,
        &mut buf,
    );
    wr.write_all(&buf).await?;
    wr.flush().await?;
    wr.shutdown().await
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Transport-level failure.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The broker answered CONNECT with a refusal.
    #[error("broker refused the connection: {explanation} (code 0x{code:02x}, MQTT {protocol}){}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Refused {
        /// Return/reason code.
        code: u8,
        /// Protocol used.
        protocol: &'static str,
        /// Human words for the code.
        explanation: &'static str,
        /// v5 reason string.
        reason: Option<String>,
    },
    /// The broker closed or broke the handshake.
    #[error("handshake failed: {0}")]
    Handshake(String),
}

impl ConnectError {
    /// A fixed label for the failure, for metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            ConnectError::Refused { code: 4 | 0x86, .. } => "bad_credentials",
            ConnectError::Refused { code: 5 | 0x87, .. } => "not_authorized",
            ConnectError::Refused { code: 2 | 0x85, .. } => "client_id_rejected",
            ConnectError::Refused { .. } => "refused",
            ConnectError::Transport(TransportError::Tls { .. } | TransportError::TlsConfig(_)) => {
                "tls"
            }
            ConnectError::Transport(TransportError::Tcp { .. } | TransportError::Unix { .. }) => {
                "unreachable"
            }
            ConnectError::Transport(TransportError::Bind { .. }) => "bind",
            ConnectError::Transport(TransportError::Proxy { .. }) => "proxy",
            ConnectError::Transport(TransportError::Timeout(..)) => "timeout",
            ConnectError::Transport(TransportError::WebSocket { .. }) => "websocket",
            ConnectError::Handshake(_) => "handshake",
        }
    }
}

/// The connection was lost on a read or write error: a reset is the broker's (or a
/// middlebox's) doing, anything else is not attributed to a message.
fn loss_of(e: &std::io::Error) -> Loss {
    match e.kind() {
        std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::UnexpectedEof => Loss::ClosedByBroker,
        _ => Loss::Other,
    }
}

async fn establish(
    connector: Connector,
    connect: Packet,
    protocol: Protocol,
    fallback: bool,
    max: usize,
    timeout: Duration,
) -> Result<(BoxIo, BytesMut, ConnAck, Protocol), ConnectError> {
    // Only an explicit refusal of MQTT 5 is a reason to try 3.1.1: a connection cut before
    // CONNACK says nothing about the protocol.
    match handshake(&connector, &connect, protocol, max, timeout).await {
        Err(ConnectError::Refused { code: 0x84, .. }) if protocol == Protocol::V5 && fallback => {
            handshake(&connector, &connect, Protocol::V311, max, timeout).await
        }
        Err(ConnectError::Refused {
            code: 0x01,
            protocol: p,
            ..
        }) if p == Protocol::V5.name() && fallback => {
            handshake(&connector, &connect, Protocol::V311, max, timeout).await
        }
        other => other,
    }
}

async fn handshake(
    connector: &Connector,
    connect: &Packet,
    protocol: Protocol,
    max: usize,
    timeout: Duration,
) -> Result<(BoxIo, BytesMut, ConnAck, Protocol), ConnectError> {
    let mut io = connector.connect().await?;
    let mut buf = BytesMut::new();
    codec::encode(connect, protocol, &mut buf)
        .map_err(|e| ConnectError::Handshake(e.to_string()))?;
    let result = tokio::time::timeout(timeout, async {
        io.write_all(&buf).await?;
        io.flush().await?;
        let mut rbuf = BytesMut::with_capacity(4096);
        loop {
            // A refusal can come as a v3 CONNACK to a v5 CONNECT; look at the raw code first.
            if protocol == Protocol::V5
                && rbuf.len() >= 4
                && rbuf[0] == 0x20
                && rbuf[1] == 2
                && rbuf[3] != 0
                && rbuf[3] < 0x80
            {
                return Ok::<_, std::io::Error>(Err(ConnectError::Refused {
                    code: rbuf[3],
                    protocol: protocol.name(),
                    explanation: refusal(Protocol::V311, rbuf[3]),
                    reason: None,
                }));
            }
            match codec::decode(&mut rbuf, protocol, max) {
                Ok(Some(Packet::ConnAck(ack))) => return Ok(Ok((rbuf, ack))),
                Ok(Some(other)) => {
                    return Ok(Err(ConnectError::Handshake(format!(
                        "expected CONNACK, got {}",
                        other.name()
                    ))));
                }
                Ok(None) => {}
                Err(e) => return Ok(Err(ConnectError::Handshake(e.to_string()))),
            }
            if io.read_buf(&mut rbuf).await? == 0 {
                return Ok(Err(ConnectError::Handshake(
                    "broker closed the connection before CONNACK".into(),
                )));
            }
        }
    })
    .await;
    let (rbuf, ack) = match result {
        Err(_) => {
            return Err(ConnectError::Handshake(format!(
                "no CONNACK within {timeout:?}"
            )));
        }
        Ok(Err(e)) => return Err(ConnectError::Handshake(format!("I/O error: {e}"))),
        Ok(Ok(Err(e))) => return Err(e),
        Ok(Ok(Ok(v))) => v,
    };
    if ack.code != 0 {
        return Err(ConnectError::Refused {
            code: ack.code,
            protocol: protocol.name(),
            explanation: refusal(protocol, ack.code),
            reason: ack.reason_string,
        });
    }
    Ok((io, rbuf, ack, protocol))
}

/// Words for a CONNACK refusal code.
pub fn refusal(protocol: Protocol, code: u8) -> &'static str {
    match (protocol, code) {
        (Protocol::V31 | Protocol::V311, 1) => "unacceptable protocol version",
        (Protocol::V31 | Protocol::V311, 2) => "client identifier rejected",
        (Protocol::V31 | Protocol::V311, 3) => "server unavailable",
        (Protocol::V31 | Protocol::V311, 4) => "bad user name or password",
        (Protocol::V31 | Protocol::V311, 5) => "not authorized",
        (_, c) => reason_name(c),
    }
}

/// Words for an MQTT 5 reason code.
pub fn reason_name(code: u8) -> &'static str {
    match code {
        0x00 => "success",
        0x04 => "disconnect with will message",
        0x10 => "no matching subscribers",
        0x80 => "unspecified error",
        0x81 => "malformed packet",
        0x82 => "protocol error",
        0x83 => "implementation specific error",
        0x84 => "unsupported protocol version",
        0x85 => "client identifier not valid",
        0x86 => "bad user name or password",
        0x87 => "not authorized",
        0x88 => "server unavailable",
        0x89 => "server busy",
        0x8a => "banned",
        0x8b => "server shutting down",
        0x8c => "bad authentication method",
        0x8d => "keep alive timeout",
        0x8e => "session taken over",
        0x8f => "topic filter invalid",
        0x90 => "topic name invalid",
        0x93 => "receive maximum exceeded",
        0x94 => "topic alias invalid",
        0x95 => "packet too large",
        0x96 => "message rate too high",
        0x97 => "quota exceeded",
        0x98 => "administrative action",
        0x99 => "payload format invalid",
        0x9a => "retain not supported",
        0x9b => "QoS not supported",
        0x9c => "use another server",
        0x9d => "server moved",
        0x9e => "shared subscriptions not supported",
        0x9f => "connection rate exceeded",
        0xa0 => "maximum connect time",
        0xa1 => "subscription identifiers not supported",
        0xa2 => "wildcard subscriptions not supported",
        _ => "unknown reason",
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

    #[test]
    fn refusals_are_explained_per_protocol() {
        assert_eq!(refusal(Protocol::V311, 4), "bad user name or password");
        assert_eq!(refusal(Protocol::V5, 0x86), "bad user name or password");
        assert_eq!(refusal(Protocol::V5, 0x87), "not authorized");
        assert_eq!(refusal(Protocol::V311, 2), "client identifier rejected");
    }

    #[test]
    fn default_client_id_is_stable() {
        assert_eq!(default_client_id(), default_client_id());
        assert!(default_client_id().starts_with("mqlink-"));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let mut o = MqttOptions::new(BrokerUrl::parse("mqtt://u:hunter2@h").unwrap());
        o.password = Some("hunter2".into());
        assert!(!format!("{o:?}").contains("hunter2"));
    }
}
