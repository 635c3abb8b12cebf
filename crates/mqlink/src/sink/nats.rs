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

use std::path::{Path, PathBuf};

use async_nats::HeaderMap;
use async_nats::client::PublishErrorKind as CorePublishErrorKind;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::{self, context::PublishErrorKind};

use super::{
    Deliver, Driver, OpenEnv, OpenError, Record, SinkError, Spec, TOPIC_ONLY, redacted,
    with_topic_context,
};
use crate::config::ctx::Ctx;
use crate::config::error::ConfigError;
use crate::config::node::KeyPath;
use crate::topic::Template;

/// How long a core-NATS flush may take before the batch is retried.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `nats: {url, subject, jetstream, stream, credentials}` as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    url: String,
    subject: String,
    jetstream: Option<bool>,
    stream: Option<String>,
    credentials: Option<String>,
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
}

crate::config::secret::debug_redacting_url!(NatsConfig {
    subject,
    jetstream,
    stream,
    credentials
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
    /// Connect. The client keeps reconnecting by itself; while NATS is away, deliveries
    /// fail with [`SinkError::Retry`].
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
        let js = jetstream.then(|| jetstream::new(client.clone()));
        Ok(NatsSink {
            connector: connector.to_string(),
            url: url.clone(),
            client,
            js,
            subject,
            stream,
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

    async fn core(&self, batch: &[Record], subjects: Vec<String>) -> Result<(), SinkError> {
        let retry = |reason: String| SinkError::Retry { done: 0, reason };
        let mut refused = None;
        for (i, (r, subject)) in batch.iter().zip(subjects).enumerate() {
            let sent = self
                .client
                .publish_with_headers(subject, self.headers(r), r.to_bytes())
                .await;
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
        match tokio::time::timeout(FLUSH_TIMEOUT, self.client.flush()).await {
            Ok(Ok(())) => match refused {
                None => Ok(()),
                Some((done, reason)) => Err(SinkError::Reject {
                    done,
                    count: 1,
                    reason,
                }),
            },
            Ok(Err(e)) => Err(retry(format!("nats {}: flush: {e}", self.url()))),
            Err(_) => Err(retry(format!(
                "nats {}: flush not confirmed within {FLUSH_TIMEOUT:?}",
                self.url()
            ))),
        }
    }

    async fn jetstream(
        &self,
        js: jetstream::Context,
        batch: &[Record],
        subjects: Vec<String>,
    ) -> Result<(), SinkError> {
        let mut acks = Vec::with_capacity(batch.len());
        for (i, (r, subject)) in batch.iter().zip(subjects).enumerate() {
            let sent = js
                .publish_with_headers(subject, self.headers(r), r.to_bytes())
                .await;
            match sent {
                Ok(ack) => acks.push(ack),
                Err(e) => {
                    // Confirm what was already sent before reporting.
                    let done = self.await_acks(acks).await?;
                    debug_assert_eq!(done, i);
                    return Err(self.classify(i, e.kind(), e.to_string()));
                }
            }
        }
        self.await_acks(acks).await.map(|_| ())
    }

    async fn await_acks(
        &self,
        acks: Vec<jetstream::context::PublishAckFuture>,
    ) -> Result<usize, SinkError> {
        let mut done = 0;
        for ack in acks {
            match ack.await {
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
            match &self.js {
                None => self.core(prefix, subjects).await?,
                Some(js) => self.jetstream(js.clone(), prefix, subjects).await?,
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
