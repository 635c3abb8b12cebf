//! `mqtt` sink: a broker-to-broker bridge. Records are published to another broker with
//! our engine, on a topic rendered from the sink's template (`{topic}` = the incoming
//! topic, values sanitised), and confirmed by that broker's verdict: PUBACK / PUBCOMP for
//! QoS 1/2, the socket write for QoS 0.
//!
//! The target connection uses client id `{connector client id}-sink` with a clean start:
//! undecided publishes are retransmitted by the engine across reconnects, and the
//! connector holds its own acknowledgements until every verdict is in.

use std::sync::Arc;

use super::with_topic_context;
use super::{Deliver, Driver, OpenEnv, OpenError, Record, SinkError, Spec, TOPIC_ONLY};
use crate::config::ctx::Ctx;
use crate::config::error::ConfigError;
use crate::config::node::KeyPath;
use crate::mqtt::client::{self, Client, MqttOptions};
use crate::mqtt::codec::QoS;
use crate::mqtt::codec::{Publish, PublishProps};
use crate::mqtt::state::Verdict;
use crate::mqtt::url::BrokerUrl;
use crate::topic::Template;

/// `mqtt: {url, topic, qos, retain}` as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    url: String,
    topic: Option<String>,
    qos: Option<u8>,
    retain: Option<bool>,
}

/// The `mqtt` sink's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// The target broker.
    pub url: BrokerUrl,
    /// Topic template; may use `{topic}` (the incoming topic) and `{hostname}`;
    /// default `{topic}`.
    pub topic: Template,
    /// Default QoS 1.
    pub qos: QoS,
    /// Default false.
    pub retain: bool,
}

impl Spec for MqttConfig {
    type Raw = Raw;
    type Sink = MqttSink;

    fn validate(m: Raw, ctx: &Ctx<'_>, p: &KeyPath) -> Result<MqttConfig, ConfigError> {
        let topic = ctx.template(
            m.topic.as_deref().unwrap_or("{topic}"),
            &p.key("topic"),
            true,
            &TOPIC_ONLY,
        )?;
        Ok(MqttConfig {
            url: BrokerUrl::parse(&m.url).map_err(|e| ctx.err(&p.key("url"), e.to_string()))?,
            topic: topic.resolve_builtins(ctx.hostname, ""),
            qos: ctx.qos(m.qos, &p.key("qos"), QoS::AtLeastOnce)?,
            retain: m.retain.unwrap_or(false),
        })
    }

    fn describe(&self) -> String {
        format!("mqtt {} topic {}", self.url, self.topic.as_str())
    }

    async fn open(&self, env: OpenEnv<'_>) -> Result<(MqttSink, Option<Driver>), OpenError> {
        let (sink, driver) = MqttSink::new(
            &self.url,
            self.topic.clone(),
            self.qos,
            self.retain,
            env.client_id,
            env.shutdown,
        )?;
        Ok((sink, Some(driver)))
    }
}

/// Publishes records to another MQTT broker.
pub struct MqttSink {
    client: Client,
    // Kept so the engine always has somewhere to put (unexpected) incoming messages.
    _deliveries: client::Deliveries,
    url: BrokerUrl,
    topic: Template,
    qos: QoS,
    retain: bool,
}

impl std::fmt::Debug for MqttSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSink")
            .field("url", &self.url.to_string())
            .field("topic", &self.topic.as_str())
            .finish_non_exhaustive()
    }
}

impl MqttSink {
    /// Build the client; the returned driver runs its connection until `shutdown`.
    ///
    /// # Errors
    /// [`OpenError`] when the engine refuses the options (e.g. TLS files).
    pub fn new(
        url: &BrokerUrl,
        topic: Template,
        qos: QoS,
        retain: bool,
        client_id: &str,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<(MqttSink, Driver), OpenError> {
        let mut opts = MqttOptions::new(url.clone());
        opts.client_id = format!("{client_id}-sink");
        let (client, deliveries, event_loop) = client::new(opts).map_err(|e| OpenError {
            kind: "mqtt",
            target: url.to_string(),
            reason: e.to_string(),
        })?;
        let driver: Driver = Box::pin(event_loop.run(shutdown));
        Ok((
            MqttSink {
                client,
                _deliveries: deliveries,
                url: url.clone(),
                topic,
                qos,
                retain,
            },
            driver,
        ))
    }

    /// The target broker.
    pub fn url(&self) -> String {
        self.url.to_string()
    }

    fn render(&self, topic: &str) -> Result<String, String> {
        with_topic_context(topic, |ctx| self.topic.render(ctx))
            .map_err(|e| format!("topic '{}': {e}", self.topic.as_str()))
    }
}

impl Deliver for MqttSink {
    /// Publish the batch (pipelined) and wait for every verdict, in order.
    ///
    /// # Errors
    /// [`SinkError::Reject`] for a topic that cannot be rendered or a message the broker
    /// refused; [`SinkError::Retry`] when the client stopped before deciding.
    async fn deliver(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        let mut handles = Vec::with_capacity(batch.len());
        let mut stop: Option<SinkError> = None;
        for (i, r) in batch.iter().enumerate() {
            let topic = match self.render(&r.topic) {
                Ok(t) => t,
                Err(reason) => {
                    stop = Some(SinkError::Reject {
                        done: i,
                        count: 1,
                        reason: format!("mqtt {}: {reason}", self.url()),
                    });
                    break;
                }
            };
            let publish = Publish {
                topic: Arc::from(topic.as_str()),
                payload: r.to_bytes(),
                qos: self.qos,
                retain: self.retain,
                dup: false,
                pid: None,
                props: PublishProps::default(),
            };
            match self.client.publish(publish).await {
                Ok(h) => handles.push(h),
                Err(e) => {
                    stop = Some(SinkError::Retry {
                        done: i,
                        reason: format!("mqtt {}: {e}", self.url()),
                    });
                    break;
                }
            }
        }
        for (i, h) in handles.into_iter().enumerate() {
            match h.await {
                Verdict::Acknowledged => {}
                Verdict::Rejected { code, reason } => {
                    return Err(SinkError::Reject {
                        done: i,
                        count: 1,
                        reason: format!(
                            "mqtt {}: refused with {} (0x{code:02x}){}",
                            self.url(),
                            client::reason_name(code),
                            reason.map(|r| format!(": {r}")).unwrap_or_default()
                        ),
                    });
                }
                Verdict::GaveUp => {
                    return Err(SinkError::Retry {
                        done: i,
                        reason: format!("mqtt {}: client stopped", self.url()),
                    });
                }
            }
        }
        stop.map_or(Ok(()), Err)
    }
}
