//! `nats` sink: core NATS (confirmed by a flush round trip) or JetStream (confirmed by
//! the stream's publish ack), with a `Nats-Msg-Id` header for de-duplication.
//!
//! The subject is the connector's template rendered with `{topic}` = the MQTT topic, in
//! which whitespace, `*` and `>` become `_` (they would break or widen a NATS subject);
//! `/` is kept (a legal subject character), so `mqtt.{topic}` on `a/b` is `mqtt.a/b`.
//!
//! The message id must be the same when the MQTT broker redelivers a message we delivered
//! but could not acknowledge (a crash or disconnect between the JetStream ack and our
//! PUBACK): then JetStream drops the copy. Packet ids and arrival times change on
//! redelivery, so the id is `{connector}-{hex SHA-256 of topic, payload and the record's
//! position}` (128 bits). The trade-off: two *identical* messages (same topic and payload)
//! published within the stream's duplicate window (2 min by default) count once. Publishers
//! that repeat payloads verbatim and need every copy should include a timestamp or sequence
//! in the payload, or use a stream with a short `duplicate_window`.
//!
//! Refused for good, each alone (the connector dead-letters it with the reason and goes on
//! with the rest): a record whose subject would have an empty token (topics like `a..b`,
//! `x.` or `.x` under `mqtt.{topic}`), and one larger than the server's `max_payload`
//! (1 MiB by default, MQTT allows 256 MiB). The records before it are published and
//! confirmed first.
//!
//! Every network step of a delivery is under one deadline, `timeout` after it starts:
//! each publish (it waits for room in the client's command queue, which a server that
//! stops reading never frees), the core flush, and each JetStream ack. Past it the delivery is [`SinkError::Retry`] with the JetStream acks
//! received so far confirmed; the connector backs off and holds the acknowledgements.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::client::PublishErrorKind as CorePublishErrorKind;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::{self, context::PublishErrorKind};
use tokio::time::{Instant, timeout_at};

use super::{
    Deliver, Driver, OpenEnv, OpenError, Record, SinkError, Spec, TOPIC_ONLY, redacted,
    with_topic_context,
};
use crate::config::ctx::Ctx;
use crate::config::error::ConfigError;
use crate::config::node::KeyPath;
use crate::topic::Template;

/// How long one delivery may take by default before it is retried (the flush alone had
/// this bound before every step shared it).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// `nats: {url, subject, jetstream, stream, credentials, timeout}` as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    url: String,
    subject: String,
    jetstream: Option<bool>,
    stream: Option<String>,
    credentials: Option<String>,
    timeout: Option<String>,
}

/// The `nats` sink's settings.
#[derive(Clone, PartialEq)]
pub struct NatsConfig {
    /// `nats://`, `tls://` or `ws(s)://` URL.
    pub url: url::Url,
    /// Subject template; may use `{topic}` (the MQTT topic) and `{hostname}`.
    pub subject: Template,
    /// Publish through JetStream and wait for its ack; default false.
    pub jetstream: bool,
    /// Expected stream name (JetStream only).
    pub stream: Option<String>,
    /// `.creds` file (exists at load).
    pub credentials: Option<PathBuf>,
    /// How long one delivery (publishes, flush or acks) may take; default 10s.
    pub timeout: Duration,
}

crate::config::secret::debug_redacting_url!(NatsConfig {
    subject,
    jetstream,
    stream,
    credentials,
    timeout
});

impl Spec for NatsConfig {
    type Raw = Raw;
    type Sink = NatsSink;

    fn validate(n: Raw, ctx: &Ctx<'_>, p: &KeyPath) -> Result<NatsConfig, ConfigError> {
        let jetstream = n.jetstream.unwrap_or(false);
        if n.stream.is_some() && !jetstream {
            return Err(ctx.err(&p.key("stream"), "only meaningful with jetstream: true"));
        }
        let subject = ctx.template(&n.subject, &p.key("subject"), false, &TOPIC_ONLY)?;
        if subject.as_str().trim().is_empty() || subject.as_str().contains(char::is_whitespace) {
            return Err(ctx.err(
                &p.key("subject"),
                "a NATS subject must be non-empty without spaces",
            ));
        }
        Ok(NatsConfig {
            url: ctx.http_url(&n.url, &p.key("url"), &["nats", "tls", "ws", "wss"])?,
            subject: subject.resolve_builtins(ctx.hostname, ""),
            jetstream,
            stream: n.stream,
            credentials: match n.credentials.as_deref() {
                Some(c) => Some(ctx.input_file(c, &p.key("credentials"))?),
                None => None,
            },
            timeout: ctx.positive_duration(
                n.timeout.as_deref(),
                &p.key("timeout"),
                DEFAULT_TIMEOUT,
            )?,
        })
    }

    fn describe(&self) -> String {
        format!(
            "nats {} subject {}{}",
            redacted(&self.url),
            self.subject.as_str(),
            if self.jetstream { " (JetStream)" } else { "" }
        )
    }

    async fn open(&self, env: OpenEnv<'_>) -> Result<(NatsSink, Option<Driver>), OpenError> {
        let sink = NatsSink::connect(
            env.connector,
            &self.url,
            self.subject.clone(),
            self.jetstream,
            self.stream.clone(),
            self.credentials.as_deref(),
            self.timeout,
        )
        .await?;
        Ok((sink, None))
    }
}

/// Publishes records to NATS.
pub struct NatsSink {
    connector: String,
    url: url::Url,
    client: async_nats::Client,
    js: Option<jetstream::Context>,
    subject: Template,
    stream: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("url", &redacted(&self.url))
            .field("subject", &self.subject.as_str())
            .field("jetstream", &self.js.is_some())
            .finish_non_exhaustive()
    }
}

impl NatsSink {
    /// Connect. The client keeps reconnecting by itself; while NATS is away or does not
    /// answer, deliveries fail with [`SinkError::Retry`] within `timeout`.
    ///
    /// # Errors
    /// [`OpenError`] when the credentials file cannot be read or the first connection
    /// fails.
    pub async fn connect(
        connector: &str,
        url: &url::Url,
        subject: Template,
        jetstream: bool,
        stream: Option<String>,
        credentials: Option<&Path>,
        timeout: Duration,
    ) -> Result<NatsSink, OpenError> {
        let err = |reason: String| OpenError {
            kind: "nats",
            target: redacted(url),
            reason,
        };
        let opts = match credentials {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| err(format!("credentials {}: {e}", path.display())))?,
            None => async_nats::ConnectOptions::new(),
        };
        let client = opts
            .name(format!("mqlink-{connector}"))
            .connect(url.as_str())
            .await
            .map_err(|e| err(e.to_string()))?;
        // The context's own bound on a publish and its ack, in case it is shorter than
        // what is left of the delivery's deadline.
        let js = jetstream.then(|| {
            let mut js = jetstream::new(client.clone());
            js.set_timeout(timeout);
            js
        });
        Ok(NatsSink {
            connector: connector.to_string(),
            url: url.clone(),
            client,
            js,
            subject,
            stream,
            timeout,
        })
    }

    /// The server URL, without credentials.
    pub fn url(&self) -> String {
        redacted(&self.url)
    }

    /// The de-duplication id of `record` (see the module docs).
    pub fn message_id(connector: &str, record: &Record) -> String {
        super::dedup_id(connector, record)
    }

    fn subject(&self, topic: &str) -> Result<String, String> {
        let clean: String = topic
            .chars()
            .map(|c| {
                if c.is_whitespace() || c == '*' || c == '>' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let s = with_topic_context(&clean, |ctx| self.subject.render_text(ctx))
            .map_err(|e| format!("subject '{}': {e}", self.subject.as_str()))?;
        if s.is_empty() || s.split('.').any(str::is_empty) {
            return Err(format!("subject '{s}' has an empty token"));
        }
        Ok(s)
    }

    fn headers(&self, r: &Record) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            NATS_MESSAGE_ID,
            Self::message_id(&self.connector, r).as_str(),
        );
        h
    }

    /// Why a step did not finish by the delivery's deadline.
    fn late(&self, step: &str) -> String {
        format!(
            "nats {}: {step} not done within the timeout ({:?}); is the server answering?",
            self.url(),
            self.timeout
        )
    }

    async fn core(
        &self,
        batch: &[Record],
        subjects: Vec<String>,
        deadline: Instant,
    ) -> Result<(), SinkError> {
        let retry = |reason: String| SinkError::Retry { done: 0, reason };
        let mut refused = None;
        for (i, (r, subject)) in batch.iter().zip(subjects).enumerate() {
            // A server that stops reading fills the client's command queue, and a publish
            // then waits for room for ever: nothing is confirmed until the flush anyway.
            let publish = self
                .client
                .publish_with_headers(subject, self.headers(r), r.to_bytes());
            let Ok(sent) = timeout_at(deadline, publish).await else {
                return Err(retry(self.late("publish")));
            };
            match sent {
                Ok(()) => {}
                // Checked by the client before anything is sent, against the server's
                // `max_payload`: retrying cannot help. Flush what went before it, then
                // refuse it alone.
                Err(e)
                    if matches!(
                        e.kind(),
                        CorePublishErrorKind::MaxPayloadExceeded
                            | CorePublishErrorKind::InvalidSubject
                    ) =>
                {
                    refused = Some((i, format!("nats {}: publish: {e}", self.url())));
                    break;
                }
                Err(e) => return Err(retry(format!("nats {}: publish: {e}", self.url()))),
            }
        }
        // While disconnected the client buffers and a flush waits for the reconnect:
        // bound it, so an outage shows up as retries.
        match timeout_at(deadline, self.client.flush()).await {
            Ok(Ok(())) => match refused {
                None => Ok(()),
                Some((done, reason)) => Err(SinkError::Reject {
                    done,
                    count: 1,
                    reason,
                }),
            },
            Ok(Err(e)) => Err(retry(format!("nats {}: flush: {e}", self.url()))),
            Err(_) => Err(retry(self.late("flush"))),
        }
    }

    async fn jetstream(
        &self,
        js: jetstream::Context,
        batch: &[Record],
        subjects: Vec<String>,
        deadline: Instant,
    ) -> Result<(), SinkError> {
        let mut acks = Vec::with_capacity(batch.len());
        for (i, (r, subject)) in batch.iter().zip(subjects).enumerate() {
            let publish = js.publish_with_headers(subject, self.headers(r), r.to_bytes());
            let failed = match timeout_at(deadline, publish).await {
                Ok(Ok(ack)) => {
                    acks.push(ack);
                    continue;
                }
                Ok(Err(e)) => self.classify(i, e.kind(), e.to_string()),
                Err(_) => SinkError::Retry {
                    done: i,
                    reason: self.late("publish"),
                },
            };
            // Confirm what was already sent before reporting.
            let done = self.await_acks(acks, deadline).await?;
            debug_assert_eq!(done, i);
            return Err(failed);
        }
        self.await_acks(acks, deadline).await.map(|_| ())
    }

    async fn await_acks(
        &self,
        acks: Vec<jetstream::context::PublishAckFuture>,
        deadline: Instant,
    ) -> Result<usize, SinkError> {
        let mut done = 0;
        for ack in acks {
            let Ok(acked) = timeout_at(deadline, ack.into_future()).await else {
                return Err(SinkError::Retry {
                    done,
                    reason: self.late("JetStream ack"),
                });
            };
            match acked {
                Ok(a) => {
                    if let Some(want) = &self.stream
                        && &a.stream != want
                    {
                        return Err(SinkError::Reject {
                            done,
                            count: 1,
                            reason: format!(
                                "nats {}: stored in stream '{}', expected '{want}'",
                                self.url(),
                                a.stream
                            ),
                        });
                    }
                    done += 1;
                }
                Err(e) => return Err(self.classify(done, e.kind(), e.to_string())),
            }
        }
        Ok(done)
    }

    fn classify(&self, done: usize, kind: PublishErrorKind, msg: String) -> SinkError {
        let reason = format!("nats {}: jetstream publish: {msg}", self.url());
        match kind {
            PublishErrorKind::MaxPayloadExceeded => SinkError::Reject {
                done,
                count: 1,
                reason,
            },
            _ => SinkError::Retry { done, reason },
        }
    }
}

impl Deliver for NatsSink {
    /// Publish the batch and wait for the confirmation (flush, or every JetStream ack).
    ///
    /// # Errors
    /// [`SinkError::Reject`] for a record whose subject cannot be rendered or that is
    /// larger than the server allows, or an ack from an unexpected stream;
    /// [`SinkError::Retry`] for everything else (no connection, no stream, timeouts).
    async fn deliver(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        let mut subjects = Vec::with_capacity(batch.len());
        let mut bad = None;
        for r in batch {
            match self.subject(&r.topic) {
                Ok(s) => subjects.push(s),
                Err(reason) => {
                    bad = Some(format!("nats {}: {reason}", self.url()));
                    break;
                }
            }
        }
        // The good prefix first; then the record without a subject is refused (the
        // connector dead-letters it and hands over the rest). Its `Ok` must not stand
        // for the records it never sent.
        let done = subjects.len();
        let prefix = &batch[..done];
        if !prefix.is_empty() {
            let deadline = Instant::now() + self.timeout;
            match &self.js {
                None => self.core(prefix, subjects, deadline).await?,
                Some(js) => {
                    self.jetstream(js.clone(), prefix, subjects, deadline)
                        .await?
                }
            }
        }
        match bad {
            None => Ok(()),
            Some(reason) => Err(SinkError::Reject {
                done,
                count: 1,
                reason,
            }),
        }
    }
}
