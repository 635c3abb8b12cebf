//! [`Link`]: mqlink as a library, built from the same config as the daemon.
//!
//! ```text
//! app ──emit(name, json)──▶ Ingest ──▶ Spool ──▶ Publisher ──▶ engine ──▶ broker
//! app ◀──Subscription────── Dispatcher ◀──────── engine deliveries ◀──────┘
//! ```
//!
//! [`Link::open`] does the synchronous part (open the spool, load TLS material) and hands
//! back a [`LinkTasks`] future set; the application decides where it runs and stops it with
//! a cancellation token. Nothing is spawned behind its back.
//!
//! `emit` returns once the event is durably in the spool, with the same guarantees as the
//! HTTP API. `subscribe` may be called many times for the same or overlapping filters: each
//! subscription gets every matching message; subscriptions are renewed after every
//! reconnect by the engine.

use std::sync::{Arc, Mutex};

use mqlink_spool::{Spool, SpoolError, SpoolOptions};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::build;
use crate::config::{self, Config};
use crate::dead_letter::DeadLetter;
use crate::event::{Event, Source};
use crate::mqtt::client::{self, Client, ClientError, Deliveries, EventLoop};
use crate::mqtt::codec::{Publish, QoS};
use crate::observe::meter::TopicTracker;
use crate::observe::{Facts, Observer};
use crate::publish::ingest::{Accepted, Ingest, IngestError};
use crate::publish::publisher::{PublishStats, Publisher};
use crate::publish::router::Router;
use crate::topic::TopicFilter;

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The spool directory cannot be opened or recovered.
    #[error("spool at {dir}: {source}")]
    Spool {
        /// Spool directory.
        dir: String,
        /// Why.
        source: SpoolError,
    },
    /// The MQTT client cannot be built (TLS files...).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A subscription filter is invalid.
    #[error("invalid topic filter '{filter}': {reason}")]
    Filter {
        /// The filter.
        filter: String,
        /// Why.
        reason: String,
    },
    /// The broker refused a subscription.
    #[error("broker refused the subscription to '{filter}' (reason 0x{code:02x})")]
    Refused {
        /// The filter.
        filter: String,
        /// Reason code.
        code: u8,
    },
    /// The link has stopped.
    #[error("the link has stopped")]
    Closed,
    /// The publisher failed; nothing more is published.
    #[error("publisher failed: {0}")]
    Publisher(#[from] crate::publish::publisher::PublisherError),
}

/// Spool options from the config section.
pub(crate) fn spool_options(s: &config::Spool) -> SpoolOptions {
    SpoolOptions {
        max_bytes: s.max_bytes,
        on_full: s.on_full,
        fsync: s.fsync,
        on_corruption: s.on_corruption,
        // Acks are checkpointed within 25 ms (only when they moved), so a crash re-sends
        // little more than what was in flight; the spool's 1 s default would re-send up to
        // a second of acknowledged traffic.
        checkpoint_interval: std::time::Duration::from_millis(25),
        ..SpoolOptions::default()
    }
}

type Handlers = Arc<Mutex<Vec<(TopicFilter, mpsc::Sender<Publish>)>>>;

/// A running connection of an application to MQTT. Cheap to clone.
#[derive(Clone)]
pub struct Link {
    ingest: Ingest,
    client: Client,
    handlers: Handlers,
    stats: Arc<PublishStats>,
    dead_letter: Arc<DeadLetter>,
    topics: Arc<TopicTracker>,
}

/// The futures that make a [`Link`] work: the connection, the publisher and the
/// subscription dispatcher. Run them with [`LinkTasks::run`].
pub struct LinkTasks {
    event_loop: EventLoop,
    publisher: Publisher,
    deliveries: Deliveries,
    client: Client,
    handlers: Handlers,
    ingest: Ingest,
}

/// In-flight window between spool and verdicts: enough to keep the engine's own window
/// (Receive Maximum) full while verdicts come back.
const PUBLISH_WINDOW: usize = 4096;

impl Link {
    /// Open the spool and prepare the connection described by `config`.
    ///
    /// # Errors
    /// [`LinkError`] for a spool that cannot be opened or TLS material that cannot be read.
    pub fn open(config: &Config) -> Result<(Link, LinkTasks), LinkError> {
        let router = Router::new(config);
        let dir = config.spool.dir.clone();
        let (spool, report) =
            Spool::open(&dir, spool_options(&config.spool)).map_err(|source| LinkError::Spool {
                dir: dir.display().to_string(),
                source,
            })?;
        tracing::info!(dir = %dir.display(), ?report, "spool opened");
        let (client, deliveries, event_loop) = client::new(build::mqtt_options(&config.broker))?;
        let ingest = Ingest::new(router, spool.clone());
        let ingest_for_tasks = ingest.clone();
        let stats = Arc::new(PublishStats::default());
        let dead_letter = Arc::new(DeadLetter::new(dir.join("dead-letter.jsonl")));
        let topics = Arc::new(TopicTracker::default());
        let publisher = Publisher::new(
            spool,
            client.clone(),
            dead_letter.clone(),
            stats.clone(),
            PUBLISH_WINDOW,
        )
        .with_stall_timeout(config.spool.stall_timeout)
        .with_tracker(topics.clone());
        let handlers: Handlers = Arc::default();
        Ok((
            Link {
                ingest,
                client: client.clone(),
                handlers: handlers.clone(),
                stats,
                dead_letter,
                topics,
            },
            LinkTasks {
                event_loop,
                publisher,
                deliveries,
                client,
                handlers,
                ingest: ingest_for_tasks,
            },
        ))
    }

    /// Publish an event through the routes. Returns once it is durably in the spool.
    ///
    /// # Errors
    /// [`IngestError`]: no route, a missing template field, a full spool, an I/O error.
    pub async fn emit(&self, name: &str, fields: Value) -> Result<Accepted, IngestError> {
        let fields = match fields {
            Value::Object(m) => m,
            other => {
                return Err(IngestError::Invalid(format!(
                    "event fields must be a JSON object, not {other}"
                )));
            }
        };
        self.ingest
            .accept(&[Event::new(name, fields, Source::Api)])
            .await
    }

    /// Subscribe to `filter`; every matching message is sent to the returned receiver. The
    /// broker is acknowledged once every matching subscription has taken the message (a
    /// full receiver slows the connection down). One exception: while a `subscribe` awaits
    /// the broker's answer, the connection reads on towards it, and QoS 0 messages beyond
    /// 64 MiB held for full receivers are dropped and counted
    /// ([`ClientStats`](crate::mqtt::client::ClientStats), from [`Link::client`]); QoS 1/2
    /// messages never are. An application that keeps reading its receivers while it
    /// subscribes meets it only if it falls that far behind.
    ///
    /// Several handlers on the same filter share one broker subscription and each get every
    /// message once. With *overlapping* filters (`a/#` and `a/+`) a broker may send one copy
    /// per matching subscription, and each copy reaches every matching handler: delivery is
    /// at least once, so such handlers can see duplicates (MQTT 5 subscription identifiers
    /// would let mqlink route each copy exactly; not done yet).
    ///
    /// # Errors
    /// An invalid filter, the broker refusing it, the link having stopped. The receiver
    /// is then not registered (nor when this future is dropped before the answer).
    pub async fn subscribe(
        &self,
        filter: &str,
        qos: QoS,
    ) -> Result<mpsc::Receiver<Publish>, LinkError> {
        let parsed = TopicFilter::parse(filter).map_err(|e| LinkError::Filter {
            filter: filter.to_string(),
            reason: e.to_string(),
        })?;
        let (tx, rx) = mpsc::channel(1024);
        // Registered before the SUBACK, so that no message of the new subscription passes
        // the dispatcher unseen; taken out again unless the broker grants it (refused,
        // link stopped, or this future dropped).
        let registered = Registered {
            handlers: &self.handlers,
            tx: Some(tx.clone()),
        };
        {
            let mut handlers = self.handlers.lock().unwrap_or_else(|p| p.into_inner());
            // Handlers whose receiver the application dropped get nothing any more: without
            // this they piled up, one per subscribe, each matched against every message.
            handlers.retain(|(_, tx)| !tx.is_closed());
            handlers.push((parsed, tx));
        }
        let codes = self
            .client
            .subscribe(vec![(filter.to_string(), qos)])
            .await
            .map_err(|_| LinkError::Closed)?;
        if let Some(&code) = codes.first().filter(|c| **c >= 0x80) {
            return Err(LinkError::Refused {
                filter: filter.to_string(),
                code,
            });
        }
        registered.keep();
        Ok(rx)
    }

    /// The ingest handle shared with the sources.
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    /// The MQTT client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Publishing counters.
    pub fn publish_stats(&self) -> &Arc<PublishStats> {
        &self.stats
    }

    /// The dead-letter file.
    pub fn dead_letter(&self) -> &Arc<DeadLetter> {
        &self.dead_letter
    }

    /// Per-topic counts for the dashboard (fed by the publisher; connectors may share it).
    pub fn topics(&self) -> &Arc<TopicTracker> {
        &self.topics
    }

    /// An `Observer` of this link's components, for metrics and status.
    pub fn observer(&self, facts: Facts) -> Observer {
        Observer::new(
            facts,
            self.client.link(),
            self.ingest.stats().clone(),
            self.stats.clone(),
            self.ingest.spool().clone(),
            self.topics.clone(),
            self.client.stats().clone(),
        )
    }
}

/// A handler [`Link::subscribe`] registered before the broker answered: removed on drop
/// unless [`keep`](Registered::keep) is called once the subscription is granted.
struct Registered<'a> {
    handlers: &'a Handlers,
    tx: Option<mpsc::Sender<Publish>>,
}

impl Registered<'_> {
    fn keep(mut self) {
        self.tx = None;
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(mine) = self.tx.take() {
            self.handlers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(_, tx)| !tx.same_channel(&mine));
        }
    }
}

impl LinkTasks {
    /// Run the connection, the publisher and the dispatcher until `stop` is cancelled.
    /// On stop the connection sends DISCONNECT (no will); unacknowledged records stay in
    /// the spool.
    ///
    /// # Errors
    /// [`LinkError::Publisher`] when the publisher fails (a spool read error): the link
    /// stops accepting events at once (they would never be published), the connection is
    /// closed, and the error is returned for the owner to act on (the daemon exits
    /// non-zero; a restart recovers the spool).
    pub async fn run(self, stop: CancellationToken) -> Result<(), LinkError> {
        let LinkTasks {
            event_loop,
            publisher,
            mut deliveries,
            client,
            handlers,
            ingest,
        } = self;
        let dispatch = async move {
            while let Some(d) = deliveries.recv().await {
                let targets: Vec<mpsc::Sender<Publish>> = handlers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .filter(|(f, tx)| !tx.is_closed() && f.matches(&d.publish.topic))
                    .map(|(_, tx)| tx.clone())
                    .collect();
                for tx in targets {
                    let _ = tx.send(d.publish.clone()).await;
                }
                if let Some(t) = d.ack {
                    client.ack(t);
                }
            }
        };
        // The connection outlives a failed publisher only long enough to close cleanly.
        let conn_stop = stop.child_token();
        let publisher_stop = stop.clone();
        let publish = async {
            let r = publisher.run(publisher_stop).await;
            if let Err(e) = &r {
                ingest.stop_accepting();
                tracing::error!(error = %e, "publisher failed; no longer accepting events");
                conn_stop.cancel();
            }
            r
        };
        let mut failure = None;
        tokio::select! {
            biased;
            (_, r) = async { tokio::join!(event_loop.run(conn_stop.clone()), publish) } => {
                failure = r.err();
            }
            _ = dispatch => {}
        }
        match failure {
            Some(e) => Err(LinkError::Publisher(e)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use mqlink_testkit::{Mosquitto, MosquittoOptions};

    use super::*;

    fn handlers(link: &Link) -> usize {
        link.handlers.lock().unwrap().len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handler_stays_registered_only_while_its_subscription_stands() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start(MosquittoOptions::refusing_subscriptions(
            dir.path(),
            "secret/#",
        ));
        let yaml = format!(
            "broker: {{url: '{}'}}\nspool: {{dir: '{}'}}\n",
            broker.url(),
            dir.path().join("spool").display()
        );
        let config = config::from_str(&yaml, config::Format::Yaml, "test").unwrap();
        let (link, tasks) = Link::open(&config).unwrap();
        let stop = CancellationToken::new();
        let running = tokio::spawn(tasks.run(stop.clone()));

        let kept = link.subscribe("open/#", QoS::AtLeastOnce).await.unwrap();
        assert_eq!(handlers(&link), 1);
        let refused = link.subscribe("secret/x", QoS::AtLeastOnce).await;
        assert!(
            matches!(refused, Err(LinkError::Refused { .. })),
            "{refused:?}"
        );
        assert_eq!(
            handlers(&link),
            1,
            "the refused subscription's handler is gone"
        );
        // A receiver the application dropped is not kept either.
        drop(link.subscribe("open/a", QoS::AtLeastOnce).await.unwrap());
        let _second = link.subscribe("open/b", QoS::AtLeastOnce).await.unwrap();
        assert_eq!(handlers(&link), 2, "open/# and open/b");

        stop.cancel();
        running.await.unwrap().unwrap();
        let closed = link.subscribe("open/c", QoS::AtLeastOnce).await;
        assert!(matches!(closed, Err(LinkError::Closed)), "{closed:?}");
        assert_eq!(handlers(&link), 2, "the stopped link's handler is gone");
        drop(kept);
    }
}
