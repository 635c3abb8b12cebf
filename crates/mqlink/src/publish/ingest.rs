//! Accepting events: route, append to the spool, answer only once the records are durable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use mqlink_spool::{AppendOutcome, Spool, SpoolError};

use super::message::{OutMessage, RAW_ROUTE, epoch_ms};
use super::router::{RouteError, Router};
use crate::event::Event;
use crate::mqtt::codec::{PublishProps, QoS};
use crate::topic::validate_topic_name;

/// Why events were not accepted. Nothing of a refused batch is stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// An event cannot be routed or rendered (422).
    #[error("{source}")]
    Route {
        /// Index of the offending event in the batch.
        index: usize,
        /// Why.
        source: RouteError,
    },
    /// A raw publish request is not valid (422).
    #[error("{0}")]
    Invalid(String),
    /// The spool is full and the policy is `reject` (503).
    #[error("the spool is full; retry later")]
    Full,
    /// mqlink is shutting down (503).
    #[error("mqlink is shutting down")]
    Stopping,
    /// The spool could not store the records (503); nothing was accepted.
    #[error("cannot store events: {0}")]
    Spool(#[from] SpoolError),
}

impl IngestError {
    /// Stable code for API errors and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Route { source, .. } => source.code(),
            IngestError::Invalid(_) => "invalid_request",
            IngestError::Full => "spool_full",
            IngestError::Stopping => "shutting_down",
            IngestError::Spool(_) => "spool_error",
        }
    }
}

/// What was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Spool id of the first message (an event's id in API answers); 0 and meaningless
    /// when `messages` is 0.
    pub first_id: u64,
    /// Messages stored (events × matching routes).
    pub messages: u64,
    /// Events accepted.
    pub events: usize,
}

/// Counters of the ingest side.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Events accepted.
    pub accepted: AtomicU64,
    /// Refused: no route.
    pub rejected_no_route: AtomicU64,
    /// Refused: template field missing or not scalar, invalid topic, transform.
    pub rejected_invalid: AtomicU64,
    /// Refused: spool full.
    pub rejected_full: AtomicU64,
    /// Refused: spool I/O error.
    pub rejected_spool_error: AtomicU64,
    /// Refused: shutting down.
    pub rejected_stopping: AtomicU64,
}

struct Inner {
    router: RwLock<Arc<Router>>,
    spool: Spool,
    accepting: AtomicBool,
    stats: Arc<IngestStats>,
}

/// Shared entry point of all sources. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

impl Ingest {
    /// Accept into `spool` with `router`.
    pub fn new(router: Router, spool: Spool) -> Ingest {
        Ingest {
            inner: Arc::new(Inner {
                router: RwLock::new(Arc::new(router)),
                spool,
                accepting: AtomicBool::new(true),
                stats: Arc::default(),
            }),
        }
    }

    /// Replace the routing table (config reload). Events already accepted are unaffected.
    pub fn set_router(&self, router: Router) {
        let mut guard = self.inner.router.write().unwrap_or_else(|p| p.into_inner());
        *guard = Arc::new(router);
    }

    /// The current routing table.
    pub fn router(&self) -> Arc<Router> {
        self.inner
            .router
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Refuse everything from now on (shutdown).
    pub fn stop_accepting(&self) {
        self.inner.accepting.store(false, Ordering::SeqCst);
    }

    /// Whether events are being accepted.
    pub fn is_accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::SeqCst)
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.inner.stats
    }

    /// The spool behind this ingest.
    pub fn spool(&self) -> &Spool {
        &self.inner.spool
    }

    /// Route and store a batch, all or nothing. Returns once the records are durable
    /// (per the spool's fsync policy).
    ///
    /// # Errors
    /// [`IngestError`]; nothing of the batch was stored.
    pub async fn accept(&self, events: &[Event]) -> Result<Accepted, IngestError> {
        let result = self.accept_inner(events).await;
        let s = &self.inner.stats;
        match &result {
            Ok(a) => {
                s.accepted.fetch_add(a.events as u64, Ordering::Relaxed);
            }
            Err(e) => {
                let counter = match e {
                    IngestError::Route {
                        source: RouteError::NoRoute { .. },
                        ..
                    } => &s.rejected_no_route,
                    IngestError::Route { .. } | IngestError::Invalid(_) => &s.rejected_invalid,
                    IngestError::Full => &s.rejected_full,
                    IngestError::Stopping => &s.rejected_stopping,
                    IngestError::Spool(_) => &s.rejected_spool_error,
                };
                counter.fetch_add(events.len().max(1) as u64, Ordering::Relaxed);
            }
        }
        result
    }

    async fn accept_inner(&self, events: &[Event]) -> Result<Accepted, IngestError> {
        if !self.is_accepting() {
            return Err(IngestError::Stopping);
        }
        let router = self.router();
        let mut messages = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            router
                .route(event, &mut messages)
                .map_err(|source| IngestError::Route { index, source })?;
        }
        self.store(messages, events.len()).await
    }

    /// Store one message for an explicit topic (`POST /v1/publish`), bypassing routes.
    ///
    /// # Errors
    /// An invalid topic or QoS, a full spool, an I/O error.
    pub async fn publish_raw(
        &self,
        topic: &str,
        payload: Bytes,
        qos: u8,
        retain: bool,
    ) -> Result<Accepted, IngestError> {
        if !self.is_accepting() {
            return Err(IngestError::Stopping);
        }
        validate_topic_name(topic)
            .map_err(|e| IngestError::Invalid(format!("invalid topic '{topic}': {e}")))?;
        let qos = QoS::from_u8(qos)
            .ok_or_else(|| IngestError::Invalid(format!("qos must be 0, 1 or 2, not {qos}")))?;
        let m = OutMessage {
            route: RAW_ROUTE,
            topic: topic.to_string(),
            payload,
            qos,
            retain,
            props: PublishProps::default(),
            accepted_at_ms: epoch_ms(SystemTime::now()),
        };
        let r = self.store(vec![m], 1).await;
        if r.is_ok() {
            self.inner.stats.accepted.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    async fn store(
        &self,
        messages: Vec<OutMessage>,
        events: usize,
    ) -> Result<Accepted, IngestError> {
        if messages.is_empty() {
            // Every message was filtered out by a route's payload transform: the event is
            // accepted and there is nothing to publish. (Not an error: a client told
            // "unavailable" would retry an event that will never produce a message.)
            return Ok(Accepted {
                first_id: 0,
                messages: 0,
                events,
            });
        }
        let records: Vec<Bytes> = messages.iter().map(OutMessage::encode).collect();
        let n = records.len() as u64;
        match self.inner.spool.append_batch(records).await? {
            AppendOutcome::Appended { first_id, count } => Ok(Accepted {
                first_id,
                messages: count.max(n),
                events,
            }),
            AppendOutcome::Full => Err(IngestError::Full),
        }
    }
}
