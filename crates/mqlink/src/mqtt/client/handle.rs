//! What the application holds: the [`Client`] handle (publish, subscribe, unsubscribe,
//! ack), the [`PublishHandle`] that resolves to a message's verdict, the [`Deliveries`]
//! stream, and the [`LinkState`] it can watch. Each call is a [`Command`] on the bounded
//! channel the event loop reads; acks go on their own channel so they never wait behind
//! publishes. [`ClientStats`] are the engine's counters, shared with whoever reports them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot, watch};

use crate::mqtt::codec::{Protocol, Publish, QoS};
use crate::mqtt::state::{AckToken, Delivery, Verdict};

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

/// One request from a [`Client`] to the event loop.
pub(super) enum Command {
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

/// What the engine counts, for metrics and tests. It lives in
/// [`MqttOptions::stats`](super::MqttOptions::stats), so the owner of the options can hand
/// it to its metrics before the client exists.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Incoming QoS 0 messages dropped because the application had not taken the
    /// deliveries already held (64 MiB of them) while the connection read on towards the
    /// broker's answer to a SUBSCRIBE or UNSUBSCRIBE (see the `backlog` module).
    pub qos0_dropped: AtomicU64,
}

impl ClientStats {
    /// Incoming QoS 0 messages dropped so far (see [`ClientStats::qos0_dropped`]).
    pub fn qos0_dropped(&self) -> u64 {
        self.qos0_dropped.load(Ordering::Relaxed)
    }
}

/// Handle used to publish, subscribe and acknowledge. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(super) cmd: mpsc::Sender<Command>,
    pub(super) acks: mpsc::UnboundedSender<AckToken>,
    pub(super) link: watch::Receiver<LinkState>,
    pub(super) stats: Arc<ClientStats>,
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
    /// or ≥ 0x80 refused). A granted subscription is renewed on every new session; a
    /// refused one is forgotten.
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

    /// The engine's counters.
    pub fn stats(&self) -> &Arc<ClientStats> {
        &self.stats
    }
}

/// Incoming messages. Ack each QoS 1/2 delivery with [`Client::ack`].
pub type Deliveries = mpsc::Receiver<Delivery>;
