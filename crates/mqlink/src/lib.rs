//! mqlink: link applications to MQTT brokers, in both directions, without losing a message.
//!
//! ```text
//!  publish path
//!  source::{http, stdin, poll}, Link::emit ──Event──▶ publish::ingest ──router──▶ spool (disk)
//!                                                                                 │
//!  broker ◀── mqtt::client (engine: window, verdicts, reconnect) ◀── publish::publisher
//!
//!  subscribe path
//!  broker ──▶ mqtt::client ──Delivery──▶ connector ──transform (jq)──▶ sink ──ack──▶ broker
//! ```
//!
//! Modules, in the order data meets them:
//! - [`config`]: YAML/TOML → validated types, every error located as `file:line:col: key`.
//! - [`build`]: validated config → runtime options (engine options, lifecycle messages).
//! - [`event`]: what applications hand in: a name and a JSON object.
//! - [`topic`]: topic templates (render + sanitise), topic filters, event-name globs.
//! - [`publish`]: routes, the spool record of a message, ingest (durable before it
//!   answers), the publisher (spool → broker, acknowledged per broker verdict).
//! - [`source`]: HTTP API, stdin JSON lines, HTTP polling.
//! - [`mqtt`]: our MQTT engine: codec over `mqtt-proto`, the pure session state machine,
//!   transports (TCP, TLS, WebSocket), and the connection task with per-message verdicts.
//! - [`connector`], [`transform`], [`sink`], [`record`]: the subscribe path: subscribe,
//!   shape records (fluvio/json/raw), jq filter/map/arraymap, deliver, then acknowledge.
//! - [`observe`]: metrics, status and the dashboard's live topic view.
//! - [`link`]: the library API ([`link::Link`]): the same pipeline for Rust applications.
//! - [`topology`]: the whole daemon ([`topology::Topology`]): link, sources, supervised
//!   connectors, the HTTP API and ops routes, reload and the staged shutdown.
//!
//! Durability lives in the separate `mqlink-spool` crate, which knows nothing of MQTT.
//! Below [`topology`] the library spawns nothing: long-running work is handed back as
//! futures ([`mqtt::client::EventLoop::run`], [`link::LinkTasks::run`],
//! [`connector::Connector::run`]) that stop when their cancellation token is cancelled.
//! [`topology::Running`] owns the tasks it spawns and ends them in
//! [`topology::Running::stop`].

pub mod build;
pub mod config;
pub mod connector;
pub mod dead_letter;
pub(crate) mod encoding;
pub mod event;
pub mod link;
pub mod mqtt;
pub mod observe;
pub mod publish;
pub mod record;
pub mod sink;
pub mod source;
pub mod topic;
pub mod topology;
pub mod transform;
