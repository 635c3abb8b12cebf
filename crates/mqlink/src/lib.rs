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
//! - `build`: validated config → runtime options (engine options, lifecycle messages).
//! - `event`: what applications hand in: a name and a JSON object.
//! - [`topic`]: topic templates (render + sanitise), topic filters, event-name globs.
//! - `publish`: routes, the spool record of a message, ingest (durable before it
//!   answers), the publisher (spool → broker, acknowledged per broker verdict).
//! - `source`: HTTP API, stdin JSON lines, HTTP polling.
//! - [`mqtt`]: our MQTT engine: codec over `mqtt-proto`, the pure session state machine,
//!   transports (TCP, TLS, WebSocket), and the connection task with per-message verdicts.
//! - `connector`, `transform`, `sink`, [`record`]: the subscribe path: subscribe,
//!   shape records (fluvio/json/raw), jq filter/map/arraymap, deliver, then acknowledge.
//! - `observe`: metrics, status and the dashboard's live topic view.
//! - `link`: the library API ([`Link`]): the same pipeline for Rust applications.
//! - [`topology`]: the whole daemon ([`Topology`]): link, sources, supervised
//!   connectors, the HTTP API and ops routes, reload and the staged shutdown.
//!
//! # Public API
//! What an embedding application uses, re-exported here:
//! - [`Link`] (with [`LinkTasks`], [`LinkError`]): the publish and subscribe paths for a
//!   Rust application — `emit(event, json)` durable like the daemon's HTTP 202
//!   ([`Accepted`], [`IngestError`]), `subscribe(filter, qos)` a stream of [`Publish`].
//! - [`Topology`] (with [`Running`], [`Reloaded`], [`TopologyError`]): the whole daemon,
//!   started from a config in a few lines (`examples/topology.rs`).
//! - [`Config`], [`ConfigError`], [`load_config`]: a YAML/TOML file → a validated config
//!   (jq compiled, defaults filled), every error located as `file:line:col: key`; the
//!   schema's types are in [`config`] ([`config::Loader`] for environment and host name;
//!   [`config::Sink`] and one config struct per sink, like `config::RedisConfig`).
//! - [`Event`], [`QoS`], [`Protocol`], [`Publish`], [`DeadLetter`].
//! - [`mqtt`]: mqlink's MQTT engine (client with per-message verdicts, codec, URLs, TLS),
//!   which `mqlink pub`, `sub` and `bench` are built on; [`record`]: the record formats
//!   (fluvio, json, raw); [`topic`]: topic templates and filters.
//!
//! The other modules are the daemon's internals and private (`unreachable_pub` is on).
//! Reachable but hidden from the docs, not API, changing freely: `internals`, the few
//! items this repository's benches, fuzz targets and integration tests need from outside
//! the crate: the spool record (`OutMessage`, `DecodeError`), the HTTP source's body
//! parser (`parse_batch`, `BodyKind`, `ApiError`), and one connector (`Connector`,
//! `ConnectorStats`, `ConnectorError`) and the sinks (`open`, `OpenError`, `Sink`,
//! `Record`, `Body`, `Deliver`, `SinkError`, `NatsSink`) that `tests/connectors.rs` and
//! `tests/*_sink.rs` drive directly against real NATS, Redis, PostgreSQL and Kafka.
//!
//! Durability lives in the separate `mqlink-spool` crate, which knows nothing of MQTT.
//! Below [`topology`] the library spawns nothing: long-running work is handed back as
//! futures ([`mqtt::client::EventLoop::run`], [`LinkTasks::run`], the connectors' `run`)
//! that stop when their cancellation token is cancelled. [`Running`] owns the tasks it
//! spawns and ends them in [`Running::stop`].

#![warn(unreachable_pub)]

mod build;
pub mod config;
mod connector;
mod dead_letter;
mod encoding;
mod event;
mod link;
pub mod mqtt;
mod observe;
mod publish;
pub mod record;
mod sink;
mod source;
pub mod topic;
pub mod topology;
mod transform;

#[cfg(test)]
mod sim;

/// Not API: what this repository's benches and fuzz targets reach from outside the crate.
/// Changes freely.
#[doc(hidden)]
pub mod internals {
    /// One connector and each sink, driven directly against real NATS, Redis, PostgreSQL
    /// and Kafka by `tests/connectors.rs` and `tests/*_sink.rs`.
    pub use crate::connector::{Connector, ConnectorError, ConnectorStats};
    /// The spool record of a message: `benches/hot_paths.rs` measures its encode/decode.
    pub use crate::publish::message::{DecodeError, OutMessage};
    #[cfg(feature = "sink-nats")]
    pub use crate::sink::nats::NatsSink;
    pub use crate::sink::{Body, Deliver, Meta, OpenError, Record, Sink, SinkError, open};
    /// The HTTP source's body parser: `fuzz/fuzz_targets/http_batch.rs` fuzzes it.
    #[cfg(feature = "http")]
    pub use crate::source::http::{ApiError, BodyKind, parse_batch};
}

pub use config::{Config, ConfigError, load as load_config};
pub use dead_letter::DeadLetter;
pub use event::{Event, Source};
pub use link::{Link, LinkError, LinkTasks};
pub use mqtt::codec::{Protocol, Publish, QoS};
pub use publish::ingest::{Accepted, IngestError};
pub use topology::{Reloaded, Running, Topology, TopologyError};
