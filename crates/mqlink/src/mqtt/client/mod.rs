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
//!
//! The files, in the order a connection meets them:
//! - `options`: [`MqttOptions`] and their defaults.
//! - `handle`: what the application holds: [`Client`], [`PublishHandle`], [`Deliveries`],
//!   [`LinkState`]; commands go to the loop over a bounded channel.
//! - `event_loop`: [`EventLoop::run`]: connect, reconnect with [`backoff`], shutdown; the
//!   CONNECT packet, the commands and the session's outputs (verdicts, deliveries, packets
//!   to write).
//! - `handshake`: TCP/TLS/WebSocket + CONNECT/CONNACK within the connect timeout, the
//!   fallback to 3.1.1 ([`ConnectError`]).
//! - `connection`: one live connection: a biased `select!` whose arms (shutdown, write,
//!   read, acks, deliveries, commands, keepalive) are one method each; their order is
//!   their priority and part of the deterministic simulation's trace (`crate::sim`).
//! - `backlog`: deliveries the application has not taken yet, and when to read more:
//!   only when there are none, or, while the application awaits a SUBACK or UNSUBACK
//!   (which a resumed session's resent messages or live traffic may come before), until
//!   it comes: QoS 1/2 messages kept within the broker's flow control, QoS 0 messages
//!   beyond a byte bound dropped and counted ([`ClientStats`]).
//! - `reason`: words for CONNACK and MQTT 5 reason codes ([`refusal`], [`reason_name`]).
//! - `observer`: [`PacketObserver`], told of every packet sent and received (traces).
//! - `aliases`: the MQTT 5 topic aliases of one connection, both ways.
//!
//! The files import downwards only (`tests/import_cycles.rs`): `connection` uses
//! `event_loop`, which uses `handshake`, `handle`, `options` and `backlog`; `reason`,
//! `observer`, `aliases` and `backlog` are leaves.

mod aliases;
mod backlog;
mod connection;
mod event_loop;
mod handle;
mod handshake;
mod observer;
mod options;
mod reason;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::{mpsc, watch};

use super::state::Session;
use super::transport::{Connector, TransportError};

#[cfg(test)]
pub(crate) use event_loop::JITTER;
pub use event_loop::{EventLoop, STABLE_AFTER, backoff};
pub use handle::{Client, ClientClosed, ClientStats, Deliveries, LinkState, PublishHandle};
pub use handshake::ConnectError;
pub use observer::{Direction, PacketObserver};
pub use options::{MqttOptions, default_client_id};
pub use reason::{reason_name, refusal};

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
            stats: opts.stats.clone(),
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
            backlog: backlog::Backlog::default(),
            early_closes: 0,
            aliases: aliases::TopicAliases::default(),
        },
    ))
}
