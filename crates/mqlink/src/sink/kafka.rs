//! `kafka` sink: records produced to Kafka (or Redpanda, MSK, Event Hubs, tansu, …) by
//! librdkafka's idempotent producer with `acks=all`; a batch is confirmed when every
//! record's delivery report says the partition's in-sync replicas have it.
//!
//! Per record: the topic is the `topic` template rendered with the MQTT topic
//! (`{topic}`/`{mqtt_topic}`, `{topic_level_N}`, `{hostname}`; characters Kafka does not
//! allow in a topic name become `_`), the key is the `key` template (default
//! `{mqtt_topic}`: one MQTT topic → one partition, so per-topic order holds), the value is
//! the record's bytes exactly as formatted, and with `headers: true` (the default) the
//! MQTT 5 user properties travel as headers in order, plus `mqtt_qos` and `mqtt_retain`.
//! The idempotent producer keeps a partition's order across its own retries.
//!
//! Failures: a record the cluster will never take (larger than `message.max.bytes`, an
//! unknown topic when auto-creation is off, an invalid topic name or record) is
//! dead-lettered with librdkafka's reason; everything else (brokers down, timeouts, not
//! enough in-sync replicas) is retried with backoff after `timeout` (librdkafka's
//! `message.timeout.ms`: how long it keeps trying by itself). Records confirmed after a
//! failed one in the same batch are remembered and not produced again when the connector
//! offers them once more.
//!
//! Duplicates still possible: a record whose delivery report was lost (a timeout while
//! the broker had in fact written it, or mqlink stopping between the report and the MQTT
//! acknowledgement) is produced again as a new message. Kafka's idempotence removes the
//! producer's own internal retries, not these.
//!
//! librdkafka is built from source (rdkafka's bundled copy) and linked statically; its
//! threads belong to the producer and stop when the sink is dropped (a drop waits at most
//! half a second for in-flight reports).

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};

use super::{
    BatchKeys, Batching, Confirmed, Deliver, Driver, OpenEnv, OpenError, RawBatchKeys, Record,
    SinkError, Spec, TOPIC_LEVELS, TopicRenderer, dedup_id,
};
use crate::config::ctx::Ctx;
use crate::config::error::ConfigError;
use crate::config::node::KeyPath;
use crate::config::secret::Secret;
use crate::config::shared::Backoff;
use crate::config::shared::{Ordered, RawBackoff};
use crate::topic::Template;

/// `kafka: {...}` as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    brokers: Vec<String>,
    topic: String,
    key: Option<String>,
    headers: Option<bool>,
    compression: Option<String>,
    tls: Option<RawTls>,
    sasl: Option<RawSasl>,
    max_message_bytes: Option<String>,
    options: Option<Ordered<String>>,
    batch_max: Option<u32>,
    batch_max_bytes: Option<String>,
    linger: Option<String>,
    timeout: Option<String>,
    retry: Option<RawBackoff>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSasl {
    mechanism: String,
    username: String,
    password: Option<Secret>,
    password_file: Option<String>,
}

/// TLS to the brokers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaTls {
    /// CA bundle (PEM); default the system's.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert: Option<std::path::PathBuf>,
    /// Its key (PEM).
    pub key: Option<std::path::PathBuf>,
}

/// SASL authentication.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: &'static str,
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// The `kafka` sink's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topic template.
    pub topic: Template,
    /// Key template; default `{mqtt_topic}`.
    pub key: Template,
    /// User properties, QoS and retain as headers; default true.
    pub headers: bool,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`; default `none`.
    pub compression: &'static str,
    /// TLS, when given.
    pub tls: Option<KafkaTls>,
    /// SASL, when given.
    pub sasl: Option<KafkaSasl>,
    /// Largest record (librdkafka's `message.max.bytes`); default 1 MB.
    pub max_message_bytes: u64,
    /// Further librdkafka producer properties, in order. The values print as `<redacted>`
    /// in `Debug`: some hold secrets (`sasl.password`, `ssl.key.password`, …).
    pub options: Vec<(String, Secret)>,
    /// Records per batch; default 1000, 1..=10000.
    pub batch_max: u32,
    /// MQTT payload bytes per batch; default 64 MiB.
    pub batch_max_bytes: u64,
    /// How long a batch waits to fill; default 0 (what is ready).
    pub linger: Duration,
    /// How long librdkafka keeps trying a record before the batch is retried; default 30s.
    pub timeout: Duration,
    /// Retry backoff; default 100ms..10s.
    pub retry: Backoff,
}

/// Default payload bytes per batch: 64 MiB. The batch is in memory twice (our records,
/// librdkafka's queue) until every record is acknowledged; librdkafka splits it into
/// produce requests itself.
const DEFAULT_BATCH_MAX_BYTES: u64 = 64 << 20;

/// Producer properties mqlink sets for its promise; `options` may not change them.
const FIXED: &[&str] = &[
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "bootstrap.servers",
    "metadata.broker.list",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
];

impl Spec for KafkaConfig {
    type Raw = Raw;
    type Sink = KafkaSink;

    fn validate(r: Raw, ctx: &Ctx<'_>, p: &KeyPath) -> Result<KafkaConfig, ConfigError> {
        let bp = p.key("brokers");
        if r.brokers.is_empty() {
            return Err(ctx.err(&bp, "needs at least one broker, like 127.0.0.1:9092"));
        }
        for (i, b) in r.brokers.iter().enumerate() {
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0));
            if !ok || b.contains([',', ' ']) {
                return Err(ctx.err(&bp.index(i), format!("'{b}' is not host:port")));
            }
        }
        let topic = ctx.template(&r.topic, &p.key("topic"), false, &TOPIC_LEVELS)?;
        if topic.as_str().trim().is_empty() {
            return Err(ctx.err(&p.key("topic"), "must not be empty"));
        }
        let key = ctx.template(
            r.key.as_deref().unwrap_or("{mqtt_topic}"),
            &p.key("key"),
            false,
            &TOPIC_LEVELS,
        )?;
        let compression = match r.compression.as_deref().unwrap_or("none") {
            "none" => "none",
            "gzip" => "gzip",
            "snappy" => "snappy",
            "lz4" => "lz4",
            "zstd" => "zstd",
            other => {
                return Err(ctx.err(
                    &p.key("compression"),
                    format!("'{other}' is not none, gzip, snappy, lz4 or zstd"),
                ));
            }
        };
        let tls = match r.tls {
            None => None,
            Some(t) => {
                let tp = p.key("tls");
                let file = |v: Option<String>, k: &str| -> Result<_, ConfigError> {
                    v.map(|f| ctx.input_file(&f, &tp.key(k))).transpose()
                };
                let tls = KafkaTls {
                    ca: file(t.ca, "ca")?,
                    cert: file(t.cert, "cert")?,
                    key: file(t.key, "key")?,
                };
                if tls.cert.is_some() != tls.key.is_some() {
                    return Err(ctx.err(&tp, "cert and key go together"));
                }
                Some(tls)
            }
        };
        let sasl = match r.sasl {
            None => None,
            Some(s) => {
                let sp = p.key("sasl");
                let mechanism = match s.mechanism.to_ascii_lowercase().as_str() {
                    "plain" => "PLAIN",
                    "scram-sha-256" => "SCRAM-SHA-256",
                    "scram-sha-512" => "SCRAM-SHA-512",
                    _ => {
                        return Err(ctx.err(
                            &sp.key("mechanism"),
                            format!(
                                "'{}' is not plain, scram-sha-256 or scram-sha-512",
                                s.mechanism
                            ),
                        ));
                    }
                };
                ctx.non_empty(&s.username, &sp.key("username"))?;
                let password = ctx
                    .password(s.password, s.password_file.as_deref(), &sp)?
                    .ok_or_else(|| ctx.err(&sp, "needs password or password_file"))?;
                Some(KafkaSasl {
                    mechanism,
                    username: s.username,
                    password,
                })
            }
        };
        let mut options = Vec::new();
        for (k, v) in r.options.map(|o| o.0).unwrap_or_default() {
            if FIXED.contains(&k.as_str()) {
                return Err(ctx.err(
                    &p.key("options").key(&k),
                    "set by mqlink (acks=all, idempotence, brokers); not an option here",
                ));
            }
            options.push((k, Secret::new(v)));
        }
        let max_message_bytes = ctx.bytes(
            r.max_message_bytes.as_deref(),
            &p.key("max_message_bytes"),
            1_000_000,
            1000,
        )?;
        if max_message_bytes > 1_000_000_000 {
            return Err(ctx.err(&p.key("max_message_bytes"), "must be at most 1000000000"));
        }
        let batch = BatchKeys::validate(
            ctx,
            p,
            RawBatchKeys {
                batch_max: r.batch_max,
                batch_max_bytes: r.batch_max_bytes.as_deref(),
                linger: r.linger.as_deref(),
                timeout: r.timeout.as_deref(),
                retry: r.retry,
            },
            1000,
            DEFAULT_BATCH_MAX_BYTES,
            Duration::from_secs(30),
        )?;
        Ok(KafkaConfig {
            brokers: r.brokers,
            topic: topic.resolve_builtins(ctx.hostname, ""),
            key: key.resolve_builtins(ctx.hostname, ""),
            headers: r.headers.unwrap_or(true),
            compression,
            tls,
            sasl,
            max_message_bytes,
            options,
            batch_max: batch.batch_max,
            batch_max_bytes: batch.batch_max_bytes,
            linger: batch.linger,
            timeout: batch.timeout,
            retry: batch.retry,
        })
    }

    fn describe(&self) -> String {
        format!(
            "kafka {} topic {} key {} (acks=all, idempotent{}{}{})",
            self.brokers.join(","),
            self.topic.as_str(),
            self.key.as_str(),
            if self.compression == "none" {
                String::new()
            } else {
                format!(", {}", self.compression)
            },
            if self.tls.is_some() { ", TLS" } else { "" },
            self.sasl
                .as_ref()
                .map(|s| format!(", SASL {}", s.mechanism))
                .unwrap_or_default(),
        )
    }

    fn batching(&self) -> Batching {
        Batching {
            max: self.batch_max as usize,
            max_bytes: self.batch_max_bytes,
            linger: self.linger,
            in_flight: 1,
        }
    }

    fn backoff(&self) -> (Duration, Duration) {
        (self.retry.min, self.retry.max)
    }

    async fn open(&self, env: OpenEnv<'_>) -> Result<(KafkaSink, Option<Driver>), OpenError> {
        let client = self.client_config(env.connector);
        let producer = create(&client).map_err(|reason| OpenError {
            kind: "kafka",
            target: self.brokers.join(","),
            reason,
        })?;
        Ok((
            KafkaSink {
                connector: env.connector.to_string(),
                target: self.brokers.join(","),
                client,
                producer,
                topic: TopicRenderer::new(self.topic.clone()),
                key: TopicRenderer::new(self.key.clone()),
                headers: self.headers,
                delivered: Confirmed::default(),
            },
            None,
        ))
    }
}

impl KafkaConfig {
    fn client_config(&self, connector: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", format!("mqlink-{connector}"))
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", self.compression)
            .set("message.max.bytes", self.max_message_bytes.to_string())
            .set("message.timeout.ms", self.timeout.as_millis().to_string())
            // The connector hands over whole batches (its own `batch_max` and `linger`)
            // and waits for every report before the next one, so librdkafka's wait for
            // more records (5 ms by default) would only delay each batch: it bounded the
            // sink at about batch_max / 5 ms (bench/NOTES.md). `options` may set it.
            .set("linger.ms", "0");
        let protocol = match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        if let Some(t) = &self.tls {
            for (k, v) in [
                ("ssl.ca.location", &t.ca),
                ("ssl.certificate.location", &t.cert),
                ("ssl.key.location", &t.key),
            ] {
                if let Some(path) = v {
                    c.set(k, path.display().to_string());
                }
            }
        }
        if let Some(s) = &self.sasl {
            c.set("sasl.mechanisms", s.mechanism)
                .set("sasl.username", &s.username)
                .set("sasl.password", s.password.expose());
        }
        for (k, v) in &self.options {
            c.set(k, v.expose());
        }
        c
    }
}

fn create(client: &ClientConfig) -> Result<FutureProducer, String> {
    client.create().map_err(|e: KafkaError| e.to_string())
}

/// Produces records to Kafka.
pub struct KafkaSink {
    connector: String,
    target: String,
    client: ClientConfig,
    producer: FutureProducer,
    topic: TopicRenderer,
    key: TopicRenderer,
    headers: bool,
    /// Records delivered behind a failed one of the same batch: the connector offers them
    /// again and they must not be produced twice.
    delivered: Confirmed,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("brokers", &self.target)
            .field("topic", &self.topic.as_str())
            .finish_non_exhaustive()
    }
}

/// Whether the cluster will never take the record.
fn permanent(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::MessageBatchTooLarge
                | C::UnknownTopicOrPartition
                | C::UnknownTopic
                | C::InvalidTopic
                | C::InvalidRecord
                | C::InvalidMessage
                | C::BadMessage
        )
    )
}

/// Kafka topic names: `[A-Za-z0-9._-]`, at most 249 characters.
fn kafka_topic(s: &str) -> Result<String, String> {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() || t == "." || t == ".." || t.len() > 249 {
        return Err(format!("'{s}' does not make a Kafka topic name"));
    }
    Ok(t)
}

/// What became of one record of a batch.
enum Outcome {
    Delivered,
    Failed { permanent: bool, reason: String },
    Untried,
}

impl KafkaSink {
    fn headers(r: &Record) -> OwnedHeaders {
        let m = &r.meta;
        let mut h = OwnedHeaders::new_with_capacity(m.user_properties.len() + 2);
        for (k, v) in &m.user_properties {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let qos = [b'0' + m.qos.min(2)];
        h = h.insert(Header {
            key: "mqtt_qos",
            value: Some(&qos[..]),
        });
        h.insert(Header {
            key: "mqtt_retain",
            value: Some(if m.retain {
                &b"true"[..]
            } else {
                &b"false"[..]
            }),
        })
    }
}

impl Deliver for KafkaSink {
    /// Produce the batch; `Ok` when every delivery report is a success.
    ///
    /// # Errors
    /// [`SinkError::Reject`] for the first record the cluster refuses for good (with
    /// librdkafka's reason); [`SinkError::Retry`] for everything that may pass.
    async fn deliver(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        let mut outcome: Vec<Outcome> = Vec::with_capacity(batch.len());
        let mut reports = Vec::with_capacity(batch.len());
        for (i, r) in batch.iter().enumerate() {
            // One confirmation per record: identical records share an id. Entries for
            // records behind a `break` below stay for the next attempt.
            if !self.delivered.is_empty() && self.delivered.take(&dedup_id(&self.connector, r)) {
                outcome.push(Outcome::Delivered);
                continue;
            }
            let names = self
                .topic
                .render(&r.topic)
                .and_then(kafka_topic)
                .and_then(|t| self.key.render(&r.topic).map(|k| (t, k.to_string())));
            let (topic, key) = match names {
                Ok(n) => n,
                Err(reason) => {
                    outcome.push(Outcome::Failed {
                        permanent: true,
                        reason,
                    });
                    break;
                }
            };
            let mut value = Vec::new();
            r.write_to(&mut value);
            let mut rec = FutureRecord::to(&topic).key(key.as_bytes()).payload(&value);
            if self.headers {
                rec = rec.headers(Self::headers(r));
            }
            match self.producer.send_result(rec) {
                Ok(report) => {
                    outcome.push(Outcome::Untried);
                    reports.push((i, report));
                }
                Err((e, _)) => {
                    outcome.push(Outcome::Failed {
                        permanent: permanent(&e),
                        reason: e.to_string(),
                    });
                    break;
                }
            }
        }
        outcome.resize_with(batch.len(), || Outcome::Untried);
        for (i, report) in reports {
            outcome[i] = match report.await {
                Ok(Ok(_)) => Outcome::Delivered,
                Ok(Err((e, _))) => Outcome::Failed {
                    permanent: permanent(&e),
                    reason: e.to_string(),
                },
                Err(_) => Outcome::Failed {
                    permanent: false,
                    reason: "producer dropped the delivery report".into(),
                },
            };
        }
        let done = outcome
            .iter()
            .take_while(|o| matches!(o, Outcome::Delivered))
            .count();
        let Some(Outcome::Failed { permanent, reason }) = outcome.get(done) else {
            // Everything is confirmed: nothing left to remember for this batch.
            self.delivered.clear();
            return Ok(());
        };
        for (r, o) in batch.iter().zip(&outcome).skip(done + 1) {
            if matches!(o, Outcome::Delivered) {
                self.delivered.add(dedup_id(&self.connector, r));
            }
        }
        // An idempotent producer can hit a fatal error (e.g. the cluster lost its
        // state): it is then unusable and a new one takes over.
        if let Some((code, msg)) = self.producer.client().fatal_error() {
            tracing::warn!(connector = %self.connector, "kafka producer fatal error {code:?}: {msg}; recreating it");
            if let Ok(p) = create(&self.client) {
                self.producer = p;
            }
        }
        let reason = format!("kafka {}: {reason}", self.target);
        Err(if *permanent {
            SinkError::Reject {
                done,
                count: 1,
                reason,
            }
        } else {
            SinkError::Retry { done, reason }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sink: &str) -> KafkaConfig {
        let text =
            format!("connectors:\n  - {{name: k, subscribe: [a], sink: {{kafka: {sink}}}}}\n");
        let cfg = crate::config::from_str(&text, crate::config::Format::Yaml, "t.yaml").unwrap();
        match &cfg.connectors[0].sink {
            crate::config::Sink::Kafka(k) => k.clone(),
            other => panic!("kafka sink expected, got {other:?}"),
        }
    }

    #[test]
    fn the_producer_always_waits_for_all_replicas_and_is_idempotent() {
        let c = config(
            "{brokers: ['k:9092'], topic: t, compression: zstd, timeout: 5s, \
             sasl: {mechanism: plain, username: u, password: p}, options: {linger.ms: '7'}}",
        )
        .client_config("conn");
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("compression.type"), Some("zstd"));
        assert_eq!(c.get("message.timeout.ms"), Some("5000"));
        assert_eq!(c.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(c.get("sasl.mechanisms"), Some("PLAIN"));
        assert_eq!(c.get("linger.ms"), Some("7"));
        assert_eq!(c.get("client.id"), Some("mqlink-conn"));
    }

    #[test]
    fn batches_are_bounded_by_payload_bytes_64_mib_unless_set() {
        let c = config("{brokers: ['k:9092'], topic: t}");
        assert_eq!(c.batching().max_bytes, 64 << 20);
        let c = config("{brokers: ['k:9092'], topic: t, batch_max_bytes: 4MiB}");
        assert_eq!(c.batching().max_bytes, 4 << 20);
    }

    #[test]
    fn librdkafka_sends_each_batch_at_once_unless_options_say_otherwise() {
        let c = config("{brokers: ['k:9092'], topic: t}").client_config("conn");
        assert_eq!(c.get("linger.ms"), Some("0"));
    }

    #[test]
    fn debug_hides_option_values_which_may_be_secrets() {
        let k = config(
            "{brokers: ['k:9092'], topic: t, \
             options: {ssl.key.password: hunter2, sasl.oauthbearer.client.secret: s3cr3t}}",
        );
        for text in [format!("{k:?}"), format!("{k:#?}")] {
            assert!(
                !text.contains("hunter2") && !text.contains("s3cr3t"),
                "{text}"
            );
            assert!(text.contains("ssl.key.password"), "{text}");
        }
        // The producer still gets the values.
        let c = k.client_config("conn");
        assert_eq!(c.get("ssl.key.password"), Some("hunter2"));
    }

    #[test]
    fn topic_names_keep_only_what_kafka_allows() {
        assert_eq!(kafka_topic("mqtt.a/b c").unwrap(), "mqtt.a_b_c");
        assert!(kafka_topic("").is_err());
        assert!(kafka_topic("..").is_err());
        assert!(kafka_topic(&"x".repeat(250)).is_err());
    }
}
