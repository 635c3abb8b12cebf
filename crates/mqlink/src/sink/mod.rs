//! Sinks: where a connector's records go, one file per sink, registered in one place.
//!
//! ```text
//!  config  sink: {kafka: {...}} ──RawSink──▶ <Config as Spec>::validate ──▶ SinkConfig
//!  connector ──open──▶ Sink ──[Record; n]──▶ Deliver::deliver ──▶ stdout | file | http | …
//!            ◀── Ok / SinkError::{Retry, Reject} ──┘
//! ```
//!
//! `Ok(())` from [`Deliver::deliver`] means the sink *has* every record of the batch: the
//! file is written (and fsynced per policy), the HTTP server answered 2xx, NATS flushed or
//! JetStream acked each publish, the target MQTT broker acknowledged each message, Redis
//! answered every XADD, PostgreSQL committed the transaction, Kafka's in-sync replicas
//! acknowledged every record. Only then does the connector acknowledge the source
//! messages to its broker.
//!
//! A failure says how far the batch got ([`SinkError`]): `Retry` for trouble that may pass
//! (connection refused, 5xx, timeouts) — the connector retries the rest with backoff and
//! holds the acknowledgements; `Reject` for records the sink will never take (a 4xx, a
//! topic that cannot be rendered) — the connector dead-letters them and moves on.
//!
//! Sinks that need a background task (the `mqtt` sink's connection; the `redis` and
//! `postgres` sinks' connection I/O, one per reconnect, gathered by `driver::Tasks`) hand
//! it back from [`open`] as a driver future; the connector polls it next to its own
//! loop, so nothing is spawned that cannot be stopped.
//!
//! Pipelining: a sink whose client can have several requests on one connection (Redis's
//! multiplexed connection, tokio-postgres) also offers [`Deliver::start`], a first attempt
//! that owns what it needs, so the connector can have up to `in_flight` batches on the
//! wire at once (see `connector` for what a failure then means). Retries always go
//! through [`Deliver::deliver`], one batch at a time.
//!
//! # Adding a sink
//! One new file `sink/<key>.rs` and one line in the `sinks!` list below. The file
//! defines the validated config (`<Kind>Config`, implementing `Spec`: its raw serde
//! struct, its validation with file:line:key errors, its plan line, its batching and its
//! `open`) and the runtime sink (`<Kind>Sink`, implementing [`Deliver`]). The list
//! generates the module, the `sink:` config enum, its validation and description
//! dispatch, the runtime enum and [`open`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::ctx::Ctx;
use crate::config::error::ConfigError;
use crate::config::node::KeyPath;
use crate::topic::{Allowed, FieldRule};

/// The registry: `key: Variant(Config, Sink)`, one line per sink (see the module docs).
macro_rules! sinks {
    ($(
        $(#[doc = $doc:expr])*
        $(#[cfg($cfg:meta)])?
        $key:ident: $Variant:ident($Config:ident, $Sink:ident),
    )*) => {
        $( $(#[cfg($cfg)])? pub(crate) mod $key; )*
        $( $(#[cfg($cfg)])? pub(crate) use self::$key::{$Config, $Sink}; )*

        /// The sinks' validated configs, re-exported by `config` next to [`SinkConfig`]
        /// so that an embedder can name what `config::Sink` holds.
        pub(crate) mod configs {
            $( $(#[cfg($cfg)])? pub use super::$key::$Config; )*
        }

        /// Where a connector delivers: the validated config of one sink.
        #[derive(Debug, Clone, PartialEq)]
        pub enum SinkConfig {
            $( $(#[doc = $doc])* $(#[cfg($cfg)])? $Variant($Config), )*
        }

        /// The `sink:` section as written: exactly one key naming the sink.
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        pub(crate) enum RawSink {
            $( $(#[cfg($cfg)])? $Variant(<$Config as Spec>::Raw), )*
        }

        impl SinkConfig {
            /// Validate the `sink:` section at `path` (errors name file:line:key).
            pub(crate) fn validate(
                raw: RawSink,
                ctx: &Ctx<'_>,
                path: &KeyPath,
            ) -> Result<SinkConfig, ConfigError> {
                Ok(match raw {
                    $( $(#[cfg($cfg)])? RawSink::$Variant(r) => SinkConfig::$Variant(
                        <$Config as Spec>::validate(r, ctx, &path.key(stringify!($key)))?,
                    ), )*
                })
            }

            /// The sink's config key (`stdout`, `kafka`, …): the metrics' `sink` label.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( $(#[cfg($cfg)])? SinkConfig::$Variant(_) => stringify!($key), )*
                }
            }

            /// One line for `mqlink check`, logs and `/v1/status`: kind, target and the
            /// settings that decide where records land (credentials redacted).
            pub fn describe(&self) -> String {
                match self {
                    $( $(#[cfg($cfg)])? SinkConfig::$Variant(c) => c.describe(), )*
                }
            }

            /// How the connector batches records for this sink.
            pub fn batching(&self) -> Batching {
                match self {
                    $( $(#[cfg($cfg)])? SinkConfig::$Variant(c) => c.batching(), )*
                }
            }

            /// Backoff between retries of a failed delivery: (first, largest).
            pub fn backoff(&self) -> (Duration, Duration) {
                match self {
                    $( $(#[cfg($cfg)])? SinkConfig::$Variant(c) => c.backoff(), )*
                }
            }
        }

        /// An open sink, dispatched by variant (each lives in its own file).
        #[derive(Debug)]
        pub enum Sink {
            $( $(#[doc = $doc])* $(#[cfg($cfg)])? $Variant(Box<$Sink>), )*
        }

        /// Open the sink of connector `name` (whose MQTT client id is `client_id`). The
        /// driver, if any, must be polled for the sink to make progress; it stops when
        /// `shutdown` is cancelled.
        ///
        /// # Errors
        /// [`OpenError`] naming the sink and its target.
        pub async fn open(
            cfg: &SinkConfig,
            name: &str,
            client_id: &str,
            shutdown: CancellationToken,
        ) -> Result<(Sink, Option<Driver>), OpenError> {
            let env = OpenEnv {
                connector: name,
                client_id,
                shutdown,
            };
            Ok(match cfg {
                $( $(#[cfg($cfg)])? SinkConfig::$Variant(c) => {
                    let (s, d) = c.open(env).await?;
                    (Sink::$Variant(Box::new(s)), d)
                } )*
            })
        }

        impl Sink {
            /// Start a pipelined first attempt at `batch` (see [`Deliver::start`]); `None`
            /// when the sink takes batches one at a time (or cannot right now).
            pub fn start(&mut self, batch: &Arc<[Record]>) -> Option<InFlight> {
                if batch.is_empty() {
                    return None;
                }
                match self {
                    $( $(#[cfg($cfg)])? Sink::$Variant(s) => s.start(batch), )*
                }
            }

            /// Deliver `batch`; `Ok` only when the sink has every record (see the module
            /// docs).
            ///
            /// # Errors
            /// [`SinkError`] saying how many records are confirmed and what to do with the
            /// rest.
            pub async fn deliver(&mut self, batch: &[Record]) -> Result<(), SinkError> {
                if batch.is_empty() {
                    return Ok(());
                }
                match self {
                    $( $(#[cfg($cfg)])? Sink::$Variant(s) => s.deliver(batch).await, )*
                }
            }
        }
    };
}

mod common;
#[cfg(any(feature = "sink-redis", feature = "sink-postgres"))]
mod driver;

#[cfg(any(feature = "sink-redis", feature = "sink-postgres"))]
pub(crate) use common::tls_plan;
#[cfg_attr(
    not(all(
        feature = "sink-http",
        feature = "sink-nats",
        feature = "sink-redis",
        feature = "sink-postgres"
    )),
    allow(unused_imports)
)]
pub(crate) use common::{
    BatchKeys, Confirmed, RawBatchKeys, TOPIC_LEVELS, TopicRenderer, batch_max_bytes_key, dedup_id,
    in_flight, redacted,
};

sinks! {
    /// JSON lines on stdout.
    stdout: Stdout(StdoutConfig, StdoutSink),
    /// JSON lines in a file.
    file: File(FileConfig, FileSink),
    /// HTTP requests.
    #[cfg(feature = "sink-http")]
    http: Http(HttpConfig, HttpSink),
    /// NATS or JetStream.
    #[cfg(feature = "sink-nats")]
    nats: Nats(NatsConfig, NatsSink),
    /// Another MQTT broker.
    mqtt: Mqtt(MqttConfig, MqttSink),
    /// Redis Streams (XADD).
    #[cfg(feature = "sink-redis")]
    redis: Redis(RedisConfig, RedisSink),
    /// PostgreSQL (one transaction per batch).
    #[cfg(feature = "sink-postgres")]
    postgres: Postgres(PostgresConfig, PostgresSink),
    /// Kafka (acks=all, idempotent producer).
    #[cfg(feature = "sink-kafka")]
    kafka: Kafka(KafkaConfig, KafkaSink),
}

/// What a sink's validated config provides to the registry.
pub(crate) trait Spec: Sized {
    /// The sink's section as written (serde, `deny_unknown_fields`).
    type Raw: serde::de::DeserializeOwned;
    /// The open sink.
    type Sink: Deliver;

    /// Defaults and checks; errors name the key through `ctx.err(path…)`.
    fn validate(raw: Self::Raw, ctx: &Ctx<'_>, path: &KeyPath) -> Result<Self, ConfigError>;

    /// See [`SinkConfig::describe`].
    fn describe(&self) -> String;

    /// See [`SinkConfig::batching`].
    fn batching(&self) -> Batching {
        Batching::DEFAULT
    }

    /// See [`SinkConfig::backoff`].
    fn backoff(&self) -> (Duration, Duration) {
        (Duration::from_millis(100), Duration::from_secs(10))
    }

    /// Connect or open; a driver future when the sink needs one polled.
    fn open(
        &self,
        env: OpenEnv<'_>,
    ) -> impl Future<Output = Result<(Self::Sink, Option<Driver>), OpenError>> + Send;
}

/// What a sink's open needs besides its config.
#[derive(Debug)]
pub(crate) struct OpenEnv<'a> {
    /// The connector's name (de-dup ids, client names).
    #[cfg_attr(
        not(all(
            feature = "sink-http",
            feature = "sink-nats",
            feature = "sink-redis",
            feature = "sink-postgres"
        )),
        allow(dead_code)
    )]
    pub connector: &'a str,
    /// The connector's MQTT client id.
    pub client_id: &'a str,
    /// Stops the sink's driver.
    pub shutdown: CancellationToken,
}

/// An open sink: takes batches and says how far each got.
pub trait Deliver: Send {
    /// Deliver `batch`; `Ok` only when the sink has every record (see the module docs).
    ///
    /// # Errors
    /// [`SinkError`] saying how many records are confirmed and what to do with the rest.
    fn deliver(&mut self, batch: &[Record]) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// A first attempt at `batch` that borrows nothing from the sink, sent on its
    /// connection as soon as the future is first polled, so several can be in flight:
    /// requests go out, and are executed, in the order their futures were first polled.
    /// `Ok` has the meaning of [`Deliver::deliver`]'s; an error only says how many records
    /// at the front are confirmed (`done`): the connector then delivers the rest again
    /// with [`Deliver::deliver`], alone, which decides between retrying and
    /// dead-lettering. `None` (the default): the sink takes one batch at a time, or has
    /// no connection to pipeline on yet; the connector calls [`Deliver::deliver`].
    fn start(&mut self, batch: &Arc<[Record]>) -> Option<InFlight> {
        let _ = batch;
        None
    }
}

/// A pipelined first attempt at a batch (see [`Deliver::start`]).
pub(crate) type InFlight = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send>>;

/// How the connector gathers records before a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Largest batch handed to the sink at once.
    pub max: usize,
    /// Most MQTT payload bytes the connector gathers into one batch (what it knows before
    /// formatting; the records the sink writes may be larger). A batch always takes its
    /// first message, however large: one message larger than this is a batch alone.
    pub max_bytes: u64,
    /// How long to wait for more records once one is there (zero: take what is ready).
    pub linger: Duration,
    /// Batches on the wire at once (pipelined first attempts, see [`Deliver::start`]);
    /// 1 for sinks that take one batch at a time.
    pub in_flight: usize,
}

impl Batching {
    /// What is ready, up to 1024 records and 64 MiB of payloads, one batch
    /// at a time.
    pub const DEFAULT: Batching = Batching {
        max: 1024,
        max_bytes: DEFAULT_MAX_BYTES,
        linger: Duration::ZERO,
        in_flight: 1,
    };
}

/// Payload bytes per batch for sinks without their own default: 64 MiB, so a batch of
/// MQTT's largest payloads (256 MiB) is one message, and of NATS's largest (its
/// `max_payload` cannot exceed 64 MiB) still fits one whole.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// Placeholders a sink's subject/topic template may use: the MQTT topic only.
pub(crate) const TOPIC_ONLY: Allowed<'static> = Allowed {
    event: false,
    hostname: true,
    prefix: false,
    fields: FieldRule::Only(&["topic"]),
};

/// What a record carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A JSON record (`json` and `fluvio` formats, and anything a transform made).
    Json(Value),
    /// Payload bytes (`raw` format).
    Raw(Bytes),
}

/// One record on its way to a sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The MQTT topic the source message arrived on (for subject and topic templates).
    pub topic: Arc<str>,
    /// The source message's payload: with `topic` and `part`, the record's identity for
    /// de-duplication (stable across redeliveries, unlike the packet id or arrival time).
    pub source: Bytes,
    /// Position among the records one message produced (an `arraymap` makes several).
    pub part: u32,
    /// The record.
    pub body: Body,
    /// What else the source message carried (QoS, retain, user properties), shared by
    /// the records it produced: for sinks that store it beside the record (Kafka
    /// headers, a PostgreSQL `qos` column).
    pub meta: Arc<Meta>,
}

/// The source message's delivery details.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// QoS it arrived with (0..=2).
    pub qos: u8,
    /// Its retain flag.
    pub retain: bool,
    /// Its MQTT 5 user properties, in order.
    pub user_properties: Vec<(String, String)>,
    /// The broker marked it a redelivery (the PUBLISH's DUP flag): it may be a message a
    /// sink stored before the acknowledgement was lost. Sinks that take a faster path for
    /// records that cannot be stored yet (PostgreSQL) leave it for these.
    pub redelivered: bool,
}

impl Record {
    /// Append the record's bytes: compact JSON, or the raw payload.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match &self.body {
            Body::Json(v) => {
                // Writing a Value to a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, v);
            }
            Body::Raw(b) => out.extend_from_slice(b),
        }
    }

    /// The record's bytes.
    pub fn to_bytes(&self) -> Bytes {
        match &self.body {
            Body::Raw(b) => b.clone(),
            Body::Json(_) => {
                let mut v = Vec::new();
                self.write_to(&mut v);
                Bytes::from(v)
            }
        }
    }

    /// The record as a JSON value: raw bytes as a string when UTF-8, else base64.
    pub fn to_json(&self) -> Value {
        match &self.body {
            Body::Json(v) => v.clone(),
            Body::Raw(b) => Value::String(crate::encoding::utf8_or_base64(b).0),
        }
    }
}

/// Why a batch was not (entirely) delivered. Records before `done` are confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Trouble that may pass; records from `done` on must be retried.
    #[error("{reason}")]
    Retry {
        /// Records at the front of the batch the sink confirmed.
        done: usize,
        /// What went wrong, with the peer named.
        reason: String,
    },
    /// Records `done..done + count` will never be accepted (dead-letter them); those
    /// after are untried.
    #[error("{reason}")]
    Reject {
        /// Records at the front of the batch the sink confirmed.
        done: usize,
        /// How many records the sink refused.
        count: usize,
        /// Why, with the peer named.
        reason: String,
    },
}

/// A sink that cannot be set up.
#[derive(Debug, thiserror::Error)]
#[error("{kind} sink {target}: {reason}")]
pub struct OpenError {
    /// The sink kind (`file`, `nats`, …).
    pub kind: &'static str,
    /// What it was opening (a path or URL, credentials redacted).
    pub target: String,
    /// Why.
    pub reason: String,
}

/// A background task a sink needs polled (e.g. its MQTT connection); it ends when the
/// token is cancelled.
pub(crate) type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Run `f` with the context a connector's subject/topic templates are rendered against:
/// `{topic}` is the incoming topic (built-ins like `{hostname}` were resolved at load).
pub(crate) fn with_topic_context<T>(
    topic: &str,
    f: impl FnOnce(&crate::topic::RenderContext<'_>) -> T,
) -> T {
    let fields: Value = serde_json::json!({ "topic": topic });
    f(&crate::topic::RenderContext {
        event: "",
        fields: &fields,
        hostname: "",
        prefix: "",
        slash: crate::topic::SlashPolicy::Keep,
    })
}
