//! `mqtt` sink: a broker-to-broker bridge. Records are published to another broker with
//! our engine, on a topic rendered from the sink's template (`{topic}` = the incoming
//! topic, values sanitised), and confirmed by that broker's verdict: PUBACK / PUBCOMP for
//! QoS 1/2, the socket write for QoS 0.
//!
//! The target connection uses client id `{connector client id}-sink` with a clean start:
//! undecided publishes are retransmitted by the engine across reconnects, and the
//! connector holds its own acknowledgements until every verdict is in.

use std::sync::Arc;

use super::{Driver, OpenError, Record, SinkError, with_topic_context};
use crate::build;
use crate::config::QoS;
use crate::mqtt::client::{self, Client, MqttOptions};
use crate::mqtt::codec::{Publish, PublishProps};
use crate::mqtt::state::Verdict;
use crate::mqtt::url::BrokerUrl;
use crate::topic::Template;

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
    /// [`OpenError::Mqtt`] when the engine refuses the options (e.g. TLS files).
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
        let (client, deliveries, event_loop) = client::new(opts).map_err(|e| OpenError::Mqtt {
            url: url.to_string(),
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

    /// Publish the batch (pipelined) and wait for every verdict, in order.
    ///
    /// # Errors
    /// [`SinkError::Reject`] for a topic that cannot be rendered or a message the broker
    /// refused; [`SinkError::Retry`] when the client stopped before deciding.
    pub async fn deliver(&mut self, batch: &[Record]) -> Result<(), SinkError> {
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
                qos: build::qos(self.qos),
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
