//! [`Topology`]: the whole daemon as a library value — what `mqlink run` starts, reloads
//! and stops, for any application that wants the same pipeline.
//!
//! ```text
//!  Topology::new(config)       build every connector from the validated config (no I/O)
//!      │ .start()               spool + connection + publisher (the shared [`Link`] path),
//!      ▼                        pollers, connectors (supervised), HTTP API + ops routes, stdin
//!  Running ── reload(config) ─▶ routes, pollers, connectors replaced in place; a connector
//!      │                        restarts only when its validated config differs *by value*
//!      │ .finished()            resolves when a part ends on its own (stdin done, HTTP or
//!      │                        connection task failed)
//!      ▼ .stop(drain)           the staged shutdown tree (below)
//! ```
//!
//! Shutdown, in order (STYLE rule 9): sources stop accepting (HTTP answers 503) → pollers and
//! connectors stop (connectors acknowledge nothing their sinks do not have) → the spool
//! drains until empty or the drain deadline → the lifecycle offline message → HTTP stops →
//! DISCONNECT (so the broker does not publish the will) → spool checkpoint. What was not
//! published stays in the spool for the next start.
//!
//! What stays with the binary: flags, signals, and the embedded broker (a CLI feature);
//! the binary starts the broker before [`Topology::start`] and stops it after
//! [`Running::stop`].
//!
//! Every task started here is owned by [`Running`] and ends in [`Running::stop`]; a tokio
//! runtime must be current when [`Topology::start`] is called.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::build;
use crate::config::{self, Config, ConfigError};
use crate::connector::Connector;
use crate::link::{Link, LinkError};
use crate::mqtt::client::LinkState;
use crate::mqtt::state::Verdict;
use crate::observe::meter::PollStats;
use crate::observe::meter::TopicTracker;
use crate::observe::{ConnectorView, Facts, Observer};
use crate::publish::router::Router;
#[cfg(feature = "http")]
use crate::source::http;
#[cfg(feature = "poll")]
use crate::source::poll::{PollError, Poller};
use crate::source::stdin;

/// Why a topology could not be built, started or reloaded, or why it stopped by itself.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The config file does not load or validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A poller cannot be built from its config.
    #[cfg(feature = "poll")]
    #[error("{0}")]
    Poll(#[source] PollError),
    /// The spool or the connection cannot be opened.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The HTTP API cannot bind its listener.
    #[error("HTTP API cannot listen on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// The HTTP API server stopped by itself.
    #[error("HTTP API stopped: {0}")]
    HttpStopped(String),
    /// The connection task failed (the publisher could not read the spool).
    #[error("{0}; exiting so that a restart recovers the spool")]
    LinkFailed(#[source] LinkError),
    /// The connection task ended without an error while it should have been running.
    #[error("the MQTT connection task stopped unexpectedly")]
    LinkStopped,
}

impl TopologyError {
    /// True when the error is the configuration's fault (the daemon exits 2 for these);
    /// false for runtime failures (I/O, a failed task).
    pub fn is_config(&self) -> bool {
        match self {
            TopologyError::Config(_) => true,
            #[cfg(feature = "poll")]
            TopologyError::Poll(_) => true,
            _ => false,
        }
    }
}

/// Load the config at `path` (or the built-in default without one): what `mqlink run`
/// and `mqlink check` accept. Validation compiled every jq program and filled every
/// default, so the result is ready to run.
///
/// # Errors
/// [`TopologyError::Config`] located as `file:line:col: key`.
pub fn load(path: Option<&Path>) -> Result<Config, TopologyError> {
    Ok(match path {
        Some(p) => config::load(p)?,
        None => Config::default_run(),
    })
}

/// A checked pipeline, not yet started: every connector is built, so a bad one refuses
/// the start before anything (an embedded broker, the spool) is touched.
pub struct Topology {
    config: Config,
    connectors: Vec<(config::Connector, Connector)>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("origin", &self.config.origin)
            .field("connectors", &self.connectors.len())
            .finish_non_exhaustive()
    }
}

impl Topology {
    /// Build the connectors of a validated `config` (no I/O).
    pub fn new(config: Config) -> Topology {
        let connectors = build_connectors(&config);
        Topology { config, connectors }
    }

    /// The config this topology runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Open the spool and the connection, start pollers, connectors, the HTTP API and
    /// stdin as the config says. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`TopologyError::Link`] (spool, TLS material), [`TopologyError::Listen`],
    /// [`TopologyError::Poll`].
    pub async fn start(self) -> Result<Running, TopologyError> {
        let Topology { config, connectors } = self;
        let (link, tasks) = Link::open(&config)?;
        let stop_link = CancellationToken::new();
        let link_task = tokio::spawn(tasks.run(stop_link.clone()));

        let observer = Arc::new(link.observer(Facts::of(&config)));
        let mut parts = Parts::default();
        let pollers = build_pollers(&config, &link)?;
        parts.apply(&config, connectors, pollers, &link, &observer);
        let watch_task = tokio::spawn(count_connections(
            observer.clone(),
            link.client().link(),
            stop_link.clone(),
        ));

        let stop_sources = CancellationToken::new();
        // The HTTP API outlives the other sources at shutdown: while the spool drains it
        // keeps answering, with 503 for new events and for /readyz.
        let stop_http = CancellationToken::new();
        let (http_task, http_addr) = start_http(&config, &link, &observer, &stop_http).await?;
        let stdin_task = config.sources.stdin.then(|| {
            tokio::spawn(stdin::run(
                BufReader::new(tokio::io::stdin()),
                link.ingest().clone(),
                stop_sources.clone(),
            ))
        });
        tracing::info!(broker = %build::broker_url(&config.broker), spool = %config.spool.dir.display(), routes = config.routes.len(), "mqlink running");
        Ok(Running {
            config,
            link,
            observer,
            parts,
            link_task: Some(link_task),
            stop_link,
            stop_sources,
            stop_http,
            http_task,
            http_addr,
            stdin_task,
            watch_task,
        })
    }
}

/// What a reload changed, by connector name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// New connectors.
    pub started: Vec<String>,
    /// Connectors whose config changed (secrets included), stopped and started again.
    pub restarted: Vec<String>,
    /// Connectors no longer in the config.
    pub stopped: Vec<String>,
    /// Connectors left running as they were.
    pub kept: Vec<String>,
    /// Sections that changed but need a restart (`broker`, `spool`, `sources.http`); the
    /// running values stay.
    pub ignored: Vec<&'static str>,
}

/// A started [`Topology`]. Stop it with [`Running::stop`]; dropping it leaves its tasks
/// running until the runtime ends.
pub struct Running {
    config: Config,
    link: Link,
    observer: Arc<Observer>,
    parts: Parts,
    link_task: Option<JoinHandle<Result<(), LinkError>>>,
    stop_link: CancellationToken,
    stop_sources: CancellationToken,
    stop_http: CancellationToken,
    http_task: Option<JoinHandle<std::io::Result<()>>>,
    http_addr: Option<SocketAddr>,
    stdin_task: Option<JoinHandle<stdin::StdinSummary>>,
    watch_task: JoinHandle<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("origin", &self.config.origin)
            .field("http", &self.http_addr)
            .field("connectors", &self.parts.connectors.len())
            .finish_non_exhaustive()
    }
}

impl Running {
    /// The running config (after reloads: with the sections a reload cannot change kept).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The link: emit events and subscribe as an application would.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// What the ops routes read (metrics, status); the binary adds the embedded broker's
    /// counters here.
    pub fn observer(&self) -> &Arc<Observer> {
        &self.observer
    }

    /// The address the HTTP API listens on (the real port when the config says port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Resolves when a part ends by itself: `Ok` when stdin, the only source, reached its
    /// end (the pipeline should drain and stop); `Err` when the HTTP API or the connection
    /// task failed. Never resolves otherwise. Cancel-safe: use it in a `select!` loop.
    ///
    /// # Errors
    /// [`TopologyError::HttpStopped`], [`TopologyError::LinkFailed`],
    /// [`TopologyError::LinkStopped`].
    pub async fn finished(&mut self) -> Result<(), TopologyError> {
        let only_stdin =
            self.http_task.is_none() && self.stdin_task.is_some() && self.parts.is_empty();
        tokio::select! {
            r = async { self.stdin_task.as_mut().expect("guarded").await }, if only_stdin => {
                self.stdin_task = None;
                if let Ok(s) = r {
                    tracing::info!(accepted = s.accepted, refused = s.refused, "end of stdin; draining");
                }
                Ok(())
            }
            r = async { self.http_task.as_mut().expect("guarded").await }, if self.http_task.is_some() => {
                self.http_task = None;
                Err(TopologyError::HttpStopped(format!("{r:?}")))
            }
            r = async { self.link_task.as_mut().expect("guarded").await }, if self.link_task.is_some() => {
                self.link_task = None;
                Err(match r {
                    Ok(Err(e)) => TopologyError::LinkFailed(e),
                    _ => TopologyError::LinkStopped,
                })
            }
        }
    }

    /// Apply `next`: routes, pollers and connectors change in place; spooled and
    /// in-flight messages are untouched. A connector restarts only when its validated
    /// config differs by value from the running one (a changed secret counts). Changes to
    /// `broker`, `spool` and `sources.http` need a restart: they are ignored, listed in
    /// [`Reloaded::ignored`] and logged. Nothing changes when an error is returned.
    ///
    /// # Errors
    /// [`TopologyError::Poll`] when a poller's HTTP client cannot be built.
    pub fn reload(&mut self, mut next: Config) -> Result<Reloaded, TopologyError> {
        let mut ignored = Vec::new();
        if next.broker != self.config.broker {
            ignored.push("broker");
        }
        if next.spool != self.config.spool {
            ignored.push("spool");
        }
        if next.sources.http != self.config.sources.http {
            ignored.push("sources.http");
        }
        if !ignored.is_empty() {
            tracing::warn!(
                sections = ?ignored,
                "changes to broker, spool or sources.http need a restart; they are ignored by this reload"
            );
        }
        next.broker = self.config.broker.clone();
        next.spool = self.config.spool.clone();
        next.sources.http = self.config.sources.http.clone();
        // Build everything before changing anything, so a refused reload changes nothing.
        let router = Router::new(&next);
        let built = build_connectors(&next);
        let pollers = build_pollers(&next, &self.link)?;
        self.link.ingest().set_router(router);
        let mut report = self
            .parts
            .apply(&next, built, pollers, &self.link, &self.observer);
        report.ignored = ignored;
        tracing::info!(
            routes = next.routes.len(),
            connectors = next.connectors.len(),
            polls = next.sources.poll.len(),
            restarted = ?report.restarted,
            "config reloaded"
        );
        self.config = next;
        Ok(report)
    }

    /// The staged shutdown (see the module doc): the spool drains for at most `drain`.
    pub async fn stop(self, drain: Duration) {
        let Running {
            config,
            link,
            observer,
            mut parts,
            mut link_task,
            stop_link,
            stop_sources,
            stop_http,
            http_task,
            http_addr: _,
            stdin_task,
            watch_task,
        } = self;
        let link_finished = |t: &Option<JoinHandle<_>>| t.as_ref().is_none_or(|t| t.is_finished());
        // 1. Sources stop accepting (HTTP answers 503 from here on).
        link.ingest().stop_accepting();
        stop_sources.cancel();
        if let Some(t) = stdin_task {
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        }
        // Pollers stop; connectors stop without acknowledging what their sinks do not have.
        parts.stop_all().await;
        // 2. Drain the spool until empty or the deadline. Polling the spool's counter is the
        //    simplest honest signal here; 20 ms costs nothing at shutdown.
        let deadline = tokio::time::Instant::now() + drain;
        let spool = link.ingest().spool().clone();
        while spool.stats().records > 0
            && tokio::time::Instant::now() < deadline
            && !link_finished(&link_task)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = spool.stats().records;
        if left > 0 {
            tracing::warn!(records = left, dir = %config.spool.dir.display(), "shutdown deadline reached; unpublished records stay in the spool for the next start");
        }
        // 3. Offline lifecycle message, while the connection is still up.
        if let Some(l) = &config.broker.lifecycle
            && !link_finished(&link_task)
        {
            let offline = build::lifecycle_message(l, &l.offline);
            if let Ok(h) = link.client().publish(offline).await {
                match tokio::time::timeout(Duration::from_secs(5), h).await {
                    Ok(Verdict::Acknowledged) => {
                        tracing::info!(topic = %l.topic, "offline message published")
                    }
                    other => {
                        tracing::warn!(topic = %l.topic, ?other, "offline message not confirmed")
                    }
                }
            }
        }
        // 4. Stop HTTP, disconnect, checkpoint.
        stop_http.cancel();
        if let Some(t) = http_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        stop_link.cancel();
        if let Some(t) = link_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let _ = watch_task.await;
        drop(observer);
        drop(link);
        if let Err(e) = spool.close().await {
            tracing::error!(error = %e, "spool close failed");
        }
    }
}

/// Count connections and failures for the metrics, until `stop`.
async fn count_connections(
    observer: Arc<Observer>,
    mut watch: tokio::sync::watch::Receiver<LinkState>,
    stop: CancellationToken,
) {
    loop {
        match &*watch.borrow_and_update() {
            LinkState::Connected { .. } => observer.connected(),
            LinkState::Down { cause, .. } => observer.link_down(cause),
            _ => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = watch.changed() => if r.is_err() { return },
        }
    }
}

/// Bind and serve the HTTP API (`sources.http`) with the ops routes: the task and the
/// address it listens on.
#[cfg(feature = "http")]
async fn start_http(
    config: &Config,
    link: &Link,
    observer: &Arc<Observer>,
    stop_http: &CancellationToken,
) -> Result<(Option<JoinHandle<std::io::Result<()>>>, Option<SocketAddr>), TopologyError> {
    let Some(h) = &config.sources.http else {
        return Ok((None, None));
    };
    let listener = tokio::net::TcpListener::bind(h.listen)
        .await
        .map_err(|source| TopologyError::Listen {
            addr: h.listen,
            source,
        })?;
    let http_addr = listener.local_addr().ok();
    let ops =
        crate::observe::http::routes(link.ingest().clone(), observer.clone(), stop_http.clone());
    let router = http::router(
        link.ingest().clone(),
        http::HttpOptions {
            tokens: h.tokens.iter().map(|t| t.expose().to_string()).collect(),
            max_body: h.max_body,
            request_timeout: h.request_timeout,
        },
        ops,
    );
    tracing::info!(listen = %h.listen, auth = !h.tokens.is_empty(), "HTTP API listening");
    let http_task = tokio::spawn(http::serve_with(
        listener,
        router,
        stop_http.clone(),
        h.max_connections,
        h.header_timeout,
    ));
    Ok((Some(http_task), http_addr))
}

/// Without the `http` feature validation refuses `sources.http`: nothing to serve.
#[cfg(not(feature = "http"))]
async fn start_http(
    _: &Config,
    _: &Link,
    _: &Arc<Observer>,
    _: &CancellationToken,
) -> Result<(Option<JoinHandle<std::io::Result<()>>>, Option<SocketAddr>), TopologyError> {
    Ok((None, None))
}

fn build_connectors(config: &Config) -> Vec<(config::Connector, Connector)> {
    config
        .connectors
        .iter()
        .map(|c| (c.clone(), Connector::new(c, &config.broker)))
        .collect()
}

#[cfg(feature = "poll")]
fn build_pollers(config: &Config, link: &Link) -> Result<Vec<Poller>, TopologyError> {
    config
        .sources
        .poll
        .iter()
        .enumerate()
        .map(|(i, p)| Poller::new(i, p, link.ingest().clone()).map_err(TopologyError::Poll))
        .collect()
}

/// A build without the `poll` feature has no pollers: validation refuses `sources.poll`
/// there, so the list is always empty.
#[cfg(not(feature = "poll"))]
fn build_pollers(_config: &Config, _link: &Link) -> Result<Vec<Poller>, TopologyError> {
    Ok(Vec::new())
}

/// No value of it exists: it stands for the poller in a build without the `poll` feature,
/// so the reload and shutdown code is the same in both builds.
#[cfg(not(feature = "poll"))]
enum Poller {}

#[cfg(not(feature = "poll"))]
impl Poller {
    fn stats(&self) -> Arc<PollStats> {
        match *self {}
    }

    async fn run(self, _stop: CancellationToken) {
        match self {}
    }
}

/// A task a reload may replace.
struct Part {
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// The validated config it was started from (connectors only): a reload compares it by
    /// value, so any change, a secret included, restarts the connector.
    cfg: Option<config::Connector>,
    view: Option<ConnectorView>,
}

/// The parts a reload may replace: connectors and pollers. Routes live in the ingest's
/// router; the broker connection, spool and HTTP listener need a restart.
#[derive(Default)]
struct Parts {
    connectors: HashMap<String, Part>,
    pollers: Vec<Part>,
    poll_stats: Vec<Arc<PollStats>>,
}

impl Parts {
    fn is_empty(&self) -> bool {
        self.connectors.is_empty() && self.pollers.is_empty()
    }

    /// Start what `config` describes; keep connectors whose config did not change.
    fn apply(
        &mut self,
        config: &Config,
        built: Vec<(config::Connector, Connector)>,
        pollers: Vec<Poller>,
        link: &Link,
        observer: &Arc<Observer>,
    ) -> Reloaded {
        let mut report = Reloaded::default();
        // Pollers are cheap to restart: replace them all.
        let mut started = Vec::new();
        let mut poll_stats = Vec::new();
        for poller in pollers {
            poll_stats.push(poller.stats());
            let stop = CancellationToken::new();
            let task = tokio::spawn(poller.run(stop.clone()));
            started.push(Part {
                stop,
                task,
                cfg: None,
                view: None,
            });
        }
        for old in std::mem::replace(&mut self.pollers, started) {
            old.stop.cancel();
        }
        self.poll_stats = poll_stats;

        let mut next = HashMap::new();
        for (cfg, connector) in built {
            if let Some(old) = self.connectors.remove(&cfg.name) {
                if old.cfg.as_ref() == Some(&cfg) && !old.task.is_finished() {
                    report.kept.push(cfg.name.clone());
                    next.insert(cfg.name.clone(), old);
                    continue;
                }
                tracing::info!(connector = %cfg.name, "connector changed; restarting it");
                report.restarted.push(cfg.name.clone());
                old.stop.cancel();
            } else {
                report.started.push(cfg.name.clone());
            }
            let connector = connector.with_tracker(link.topics().clone());
            let view = ConnectorView {
                name: cfg.name.clone(),
                sink: cfg.sink.describe(),
                sink_kind: cfg.sink.kind(),
                stats: connector.stats(),
            };
            let stop = CancellationToken::new();
            let task = tokio::spawn(supervise(
                cfg.clone(),
                config.broker.clone(),
                connector,
                link.topics().clone(),
                stop.clone(),
            ));
            next.insert(
                cfg.name.clone(),
                Part {
                    stop,
                    task,
                    cfg: Some(cfg),
                    view: Some(view),
                },
            );
        }
        for (name, old) in self.connectors.drain() {
            tracing::info!(connector = %name, "connector removed; stopping it");
            report.stopped.push(name);
            old.stop.cancel();
        }
        self.connectors = next;
        let views = self
            .connectors
            .values()
            .filter_map(|r| r.view.clone())
            .collect();
        observer.set_parts(Facts::of(config), views, self.poll_stats.clone());
        for list in [
            &mut report.started,
            &mut report.restarted,
            &mut report.stopped,
            &mut report.kept,
        ] {
            list.sort();
        }
        report
    }

    async fn stop_all(&mut self) {
        for r in self.pollers.iter().chain(self.connectors.values()) {
            r.stop.cancel();
        }
        for r in self
            .pollers
            .drain(..)
            .chain(self.connectors.drain().map(|(_, r)| r))
        {
            let _ = tokio::time::timeout(Duration::from_secs(5), r.task).await;
        }
    }
}

/// Run a connector; when it stops on an error (a sink that cannot be opened yet, a refused
/// subscription), rebuild and restart it with backoff until `stop`.
async fn supervise(
    cfg: config::Connector,
    broker: config::Broker,
    first: Connector,
    topics: Arc<TopicTracker>,
    stop: CancellationToken,
) {
    let mut next = Some(first);
    let mut attempt = 0u32;
    loop {
        let connector = match next.take() {
            Some(c) => c,
            None => Connector::new(&cfg, &broker).with_tracker(topics.clone()),
        };
        match connector.run(stop.clone()).await {
            Ok(()) => return,
            Err(e) => {
                let delay = crate::mqtt::client::backoff(
                    attempt,
                    Duration::from_secs(1),
                    Duration::from_secs(60),
                );
                attempt = attempt.saturating_add(1);
                tracing::error!(connector = %cfg.name, error = %e, retry_in = ?delay, "connector stopped; restarting");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
