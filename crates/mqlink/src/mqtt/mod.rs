//! The MQTT engine: mqlink's own client, because its promise needs what general-purpose
//! clients do not give: a verdict per message from the broker's ack for *that* message
//! (not "queued in the client"), acks of incoming messages only when the application says
//! so, no decision ever made by a lost connection, and every broker limit and refusal
//! surfaced instead of retried blindly.
//!
//! ```text
//!  url ─▶ transport (TCP | TLS | WebSocket) ─▶ client::EventLoop ◀─▶ state::Session (pure)
//!                                                   │  codec (mqtt-proto, 3.1/3.1.1/5)
//!  client::Client handles ◀── verdicts, deliveries ─┘
//! ```
//!
//! - [`url`]: broker URLs (pure).
//! - [`codec`]: our packet types over `mqtt-proto`, for MQTT 3.1, 3.1.1 and 5.
//! - [`state`]: the session state machine (windows, packet ids, verdicts, replay, limits),
//!   no I/O, tested packet by packet and by a model against a hostile broker.
//! - [`transport`]: TCP, TLS and WebSocket connections with a timeout, over TCP (bound to a
//!   local address or through a SOCKS5 proxy if asked) or a Unix domain socket.
//! - [`tls`]: rustls client and server configuration from files.
//! - [`client`]: the cheap [`client::Client`] handle and the connection task, one concern
//!   per file: `handle`, `options`, `event_loop` (reconnect with backoff, commands, session
//!   outputs), `handshake` (CONNECT/CONNACK, fallback to 3.1.1), `connection` (one biased
//!   `select!`, one method per arm: shutdown, write, read, acks, deliveries, commands,
//!   keepalive), `reason` (reason codes in words) and `observer` (an optional callback
//!   told of every packet sent and received, for traces).
pub mod client;
pub mod codec;
pub mod state;
pub mod tls;
pub mod transport;
pub mod url;
