//! Sinks: where a connector's records go, one file per sink, dispatched from [`Sink`].
//!
//! ```text
//!  connector ──[Record; n]──▶ Sink::deliver ──▶ stdout | file | http | nats | mqtt
//!            ◀── Ok / SinkError::{Retry, Reject} ──┘
//! ```
//!
//! `Ok(())` from [`Sink::deliver`] means the sink *has* every record of the batch: the
//! file is written (and fsynced per policy), the HTTP server answered 2xx, NATS flushed or
//! JetStream acked each publish, the target MQTT broker acknowledged each message. Only
//! then does the connector acknowledge the source messages to its broker.
//!
//! A failure says how far the batch got ([`SinkError`]): `Retry` for trouble that may pass
//! (connection refused, 5xx, timeouts) — the connector retries the rest with backoff and
//! holds the acknowledgements; `Reject` for records the sink will never take (a 4xx, a
//! topic that cannot be rendered) — the connector dead-letters them and moves on.
//!
//! Sinks that need a background task (the `mqtt` sink's connection) hand it back from
//! [`open`] as a driver future; the connector polls it next to its own loop, so nothing
//! is spawned that cannot be stopped.

mod file;
mod http;
mod mqtt;
mod nats;
mod stdout;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config;

pub use file::FileSink;
pub use http::HttpSink;
pub use mqtt::MqttSink;
pub use nats::NatsSink;
pub use stdout::StdoutSink;

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
            Body::Raw(b) => match std::str::from_utf8(b) {
                Ok(s) => Value::String(s.to_string()),
                Err(_) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
            },
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
pub enum OpenError {
    /// Opening the output file failed.
    #[error("file sink {path}: {source}")]
    File {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Building the HTTP client failed.
    #[error("http sink {url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Connecting to NATS failed.
    #[error("nats sink {url}: {reason}")]
    Nats {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Building the MQTT client failed.
    #[error("mqtt sink {url}: {reason}")]
    Mqtt {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// A background task a sink needs polled (e.g. its MQTT connection); it ends when the
/// token is cancelled.
pub type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every sink, dispatched by variant (each lives in its own file).
#[derive(Debug)]
pub enum Sink {
    /// JSON lines on stdout.
    Stdout(StdoutSink),
    /// JSON lines in a file.
    File(FileSink),
    /// HTTP requests.
    Http(HttpSink),
    /// NATS or JetStream.
    Nats(Box<NatsSink>),
    /// Another MQTT broker.
    Mqtt(MqttSink),
}

/// Open the sink of connector `name` (whose MQTT client id is `client_id`). The driver,
/// if any, must be polled for the sink to make progress; it stops when `shutdown` is
/// cancelled.
///
/// # Errors
/// [`OpenError`] naming the sink and its target.
pub async fn open(
    cfg: &config::Sink,
    name: &str,
    client_id: &str,
    shutdown: CancellationToken,
) -> Result<(Sink, Option<Driver>), OpenError> {
    Ok(match cfg {
        config::Sink::Stdout => (Sink::Stdout(StdoutSink::new()), None),
        config::Sink::File {
            path,
            rotate_bytes,
            fsync,
        } => (
            Sink::File(FileSink::open(path, *rotate_bytes, *fsync).await?),
            None,
        ),
        config::Sink::Http {
            url,
            method,
            headers,
            batch_max,
            timeout,
            retry,
        } => (
            Sink::Http(HttpSink::new(
                url, method, headers, *batch_max, *timeout, retry,
            )?),
            None,
        ),
        config::Sink::Nats {
            url,
            subject,
            jetstream,
            stream,
            credentials,
        } => (
            Sink::Nats(Box::new(
                NatsSink::connect(
                    name,
                    url,
                    subject.clone(),
                    *jetstream,
                    stream.clone(),
                    credentials.as_deref(),
                )
                .await?,
            )),
            None,
        ),
        config::Sink::Mqtt {
            url,
            topic,
            qos,
            retain,
        } => {
            let (sink, driver) =
                MqttSink::new(url, topic.clone(), *qos, *retain, client_id, shutdown)?;
            (Sink::Mqtt(sink), Some(driver))
        }
    })
}

impl Sink {
    /// Deliver `batch`; `Ok` only when the sink has every record (see the module docs).
    ///
    /// # Errors
    /// [`SinkError`] saying how many records are confirmed and what to do with the rest.
    pub async fn deliver(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self {
            Sink::Stdout(s) => s.deliver(batch).await,
            Sink::File(s) => s.deliver(batch).await,
            Sink::Http(s) => s.deliver(batch).await,
            Sink::Nats(s) => s.deliver(batch).await,
            Sink::Mqtt(s) => s.deliver(batch).await,
        }
    }

    /// Largest batch the sink takes at once.
    pub fn batch_max(&self) -> usize {
        match self {
            Sink::Http(s) => s.batch_max(),
            _ => 1024,
        }
    }

    /// Backoff between retries of a failed delivery: (first, largest).
    pub fn backoff(&self) -> (Duration, Duration) {
        match self {
            Sink::Http(s) => s.backoff(),
            _ => (Duration::from_millis(100), Duration::from_secs(10)),
        }
    }

    /// The sink kind and target, for logs.
    pub fn describe(&self) -> String {
        match self {
            Sink::Stdout(_) => "stdout".into(),
            Sink::File(s) => format!("file {}", s.path().display()),
            Sink::Http(s) => format!("http {}", s.url()),
            Sink::Nats(s) => format!("nats {}", s.url()),
            Sink::Mqtt(s) => format!("mqtt {}", s.url()),
        }
    }
}

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
