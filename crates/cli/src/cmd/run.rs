//! `mqlink run`: the daemon.
//!
//! Start order: config → embedded broker (if `broker.url: embedded`) → spool + connection +
//! publisher ([`Link`]) → HTTP API and stdin sources.
//!
//! Shutdown (ctrl-c, SIGTERM, or end of stdin when stdin is the only source): sources stop
//! accepting (HTTP answers 503) → the spool drains until empty or `--shutdown-timeout` →
//! the lifecycle offline message goes out → DISCONNECT (so the broker does not publish the
//! will) → spool checkpoint → embedded broker stops → exit 0. Whatever was not published
//! stays in the spool for the next start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use mqlink::build;
use mqlink::config::{self, BrokerTarget, Config};
use mqlink::connector::Connector;
use mqlink::link::Link;
use mqlink::mqtt::client::LinkState;
use mqlink::mqtt::state::Verdict;
use mqlink::observe::{ConnectorView, Facts, Observer};
use mqlink::publish::router::Router;
use mqlink::source::poll::Poller;
use mqlink::source::{http, stdin};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::BufReader;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::embedded::{EmbeddedBroker, EmbeddedOptions, OwnLogin};
use crate::exit::usage;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Config file (.yaml, .yml or .toml). Without one: embedded broker on 127.0.0.1:1883,
    /// HTTP API on 127.0.0.1:8080, spool in ./mqlink-data, one route `events/{event}`.
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
    /// Listen address of the embedded broker (overrides broker.embedded.listen). The
    /// embedded broker keeps sessions, queued and retained messages in memory, so a restart
    /// forgets them, unless broker.embedded.persistence names a directory.
    #[arg(long)]
    pub embedded_listen: Option<SocketAddr>,
    /// Listen address of the HTTP API (overrides sources.http.listen).
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// Spool directory (overrides spool.dir).
    #[arg(long)]
    pub spool_dir: Option<PathBuf>,
    /// How long to keep publishing the spool after a stop signal before exiting.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::parse_duration(s).map_err(|e| e.to_string())
}

/// Load the config named by `path`, or the defaults, and compile every jq expression in
/// it (routes, poll splits, connector transforms): config errors are usage errors (exit 2).
pub fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(p) => config::load(p).map_err(|e| usage(e.to_string()))?,
        None => Config::default_run(),
    };
    let jq = |e: mqlink::transform::CompileError| usage(format!("{}: {e}", config.origin));
    Router::new(&config).map_err(jq)?;
    mqlink::transform::check(&config).map_err(jq)?;
    for (i, p) in config.sources.poll.iter().enumerate() {
        mqlink::source::poll::compile_split(i, p).map_err(jq)?;
    }
    // A connector's dead letters must go somewhere: by default next to the spool.
    let dir = config.spool.dir.clone();
    for c in &mut config.connectors {
        if c.dead_letter.is_none() {
            c.dead_letter = Some(dir.join(format!("dead-letter-{}.jsonl", c.name)));
        }
    }
    Ok(config)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = load(args.config.as_ref())?;
    if let Some(l) = args.embedded_listen {
        match &mut config.broker.target {
            BrokerTarget::Embedded(e) => e.listen = l,
            BrokerTarget::Remote(_) => {
                return Err(usage("--embedded-listen needs broker.url: embedded"));
            }
        }
    }
    if let Some(h) = args.http_listen {
        match &mut config.sources.http {
            // The flag must not bypass the rule the config enforces.
            Some(http) if !h.ip().is_loopback() && http.tokens.is_empty() => {
                return Err(usage(format!(
                    "--http-listen {h}: not a loopback address; set sources.http.tokens to accept events from the network"
                )));
            }
            Some(http) => http.listen = h,
            None => {
                return Err(usage(
                    "--http-listen: the HTTP source is disabled in the config",
                ));
            }
        }
    }
    if let Some(d) = args.spool_dir {
        for c in &mut config.connectors {
            if let Some(dl) = &c.dead_letter
                && dl.starts_with(&config.spool.dir)
                && let Ok(rest) = dl.strip_prefix(&config.spool.dir)
            {
                c.dead_letter = Some(d.join(rest));
            }
        }
        config.spool.dir = d;
    }
    // With a password on the embedded broker, the daemon's own connections log in as a
    // private user (see `OwnLogin`); the broker accepts it beside the configured one.
    let embedded_settings = match &config.broker.target {
        BrokerTarget::Embedded(e) => Some(e.clone()),
        BrokerTarget::Remote(_) => None,
    };
    let own_login = OwnLogin::for_config(&config)?;
    if let Some(own) = &own_login {
        own.apply(&mut config);
    }
    // Build every connector before starting anything, so a bad one stops the start.
    let connectors = config
        .connectors
        .iter()
        .map(|c| Connector::new(c, &config.broker).map(|k| (c.clone(), k)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| usage(e.to_string()))?;

    let embedded = match embedded_settings {
        Some(e) => Some(
            EmbeddedBroker::start(&EmbeddedOptions {
                embedded: e,
                max_packet_size: config.broker.max_packet_size as usize,
                own_login: own_login.clone(),
            })
            .await?,
        ),
        None => None,
    };

    let (link, tasks) = Link::open(&config)?;
    let stop_link = CancellationToken::new();
    let mut link_task = tokio::spawn(tasks.run(stop_link.clone()));

    let observer = Arc::new(link.observer(Facts::of(&config)));
    if let Some(counter) = embedded.as_ref().and_then(EmbeddedBroker::queue_dropped) {
        observer.set_embedded_queue_dropped(counter);
    }
    let mut parts = Parts::default();
    parts.apply(&config, connectors, &link, &observer)?;
    // Count connections for the reconnects metric.
    {
        let observer = observer.clone();
        let mut watch = link.client().link();
        tokio::spawn(async move {
            loop {
                match &*watch.borrow_and_update() {
                    LinkState::Connected { .. } => observer.connected(),
                    LinkState::Down { cause, .. } => observer.link_down(cause),
                    _ => {}
                }
                if watch.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    let stop_sources = CancellationToken::new();
    // The HTTP API outlives the other sources at shutdown: while the spool drains it keeps
    // answering, with 503 for new events and for /readyz.
    let stop_http = CancellationToken::new();
    let mut http_task = None;
    if let Some(h) = &config.sources.http {
        let listener = tokio::net::TcpListener::bind(h.listen)
            .await
            .with_context(|| format!("HTTP API cannot listen on {}", h.listen))?;
        let router = http::router(
            link.ingest().clone(),
            observer.clone(),
            http::HttpOptions {
                tokens: h.tokens.iter().map(|t| t.expose().to_string()).collect(),
                max_body: h.max_body,
                request_timeout: h.request_timeout,
            },
        );
        tracing::info!(listen = %h.listen, auth = !h.tokens.is_empty(), "HTTP API listening");
        // A client gets no longer for its headers than for a whole request.
        http_task = Some(tokio::spawn(http::serve_with(
            listener,
            router,
            stop_http.clone(),
            h.max_connections,
            h.header_timeout,
        )));
    }
    let mut stdin_task = config.sources.stdin.then(|| {
        tokio::spawn(stdin::run(
            BufReader::new(tokio::io::stdin()),
            link.ingest().clone(),
            stop_sources.clone(),
        ))
    });
    let only_stdin = http_task.is_none() && stdin_task.is_some() && parts.is_empty();
    tracing::info!(broker = %build::broker_url(&config.broker), spool = %config.spool.dir.display(), routes = config.routes.len(), "mqlink running");

    let mut failure = None;
    let mut hangups = hangups();
    loop {
        tokio::select! {
            _ = crate::cmd::terminated() => { tracing::info!("stop requested; draining"); break; }
            _ = hangups.recv() => {
                reload(args.config.as_ref(), own_login.as_ref(), &mut config, &mut parts, &link, &observer);
                continue;
            }
            r = async { stdin_task.as_mut().expect("guarded").await }, if only_stdin => {
                stdin_task = None;
                if let Ok(s) = r {
                    tracing::info!(accepted = s.accepted, refused = s.refused, "end of stdin; draining");
                }
                break;
            }
            r = async { http_task.as_mut().expect("guarded").await }, if http_task.is_some() => {
                http_task = None;
                failure = Some(anyhow!("HTTP API stopped: {r:?}"));
                break;
            }
            r = &mut link_task => {
                failure = Some(match r {
                    Ok(Err(e)) => anyhow!("{e}; exiting so that a restart recovers the spool"),
                    _ => anyhow!("the MQTT connection task stopped unexpectedly"),
                });
                break;
            }
        }
    }

    // 1. Sources stop accepting (HTTP answers 503 from here on).
    link.ingest().stop_accepting();
    stop_sources.cancel();
    if let Some(t) = stdin_task {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
    // Pollers stop; connectors stop without acknowledging what their sinks do not have yet.
    parts.stop_all().await;
    // 2. Drain the spool until empty or the deadline. Polling the spool's counter is the
    //    simplest honest signal here; 20 ms costs nothing at shutdown.
    let deadline = tokio::time::Instant::now() + args.shutdown_timeout;
    let spool = link.ingest().spool().clone();
    while spool.stats().records > 0
        && tokio::time::Instant::now() < deadline
        && !link_task.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = spool.stats().records;
    if left > 0 {
        tracing::warn!(records = left, dir = %config.spool.dir.display(), "shutdown deadline reached; unpublished records stay in the spool for the next start");
    }
    // 3. Offline lifecycle message, while the connection is still up.
    if let Some(l) = &config.broker.lifecycle
        && !link_task.is_finished()
    {
        let offline = build::lifecycle_message(l, &l.offline);
        if let Ok(h) = link.client().publish(offline).await {
            match tokio::time::timeout(Duration::from_secs(5), h).await {
                Ok(Verdict::Acknowledged) => {
                    tracing::info!(topic = %l.topic, "offline message published")
                }
                other => tracing::warn!(topic = %l.topic, ?other, "offline message not confirmed"),
            }
        }
    }
    // 4. Stop HTTP, disconnect, checkpoint, stop the broker.
    stop_http.cancel();
    if let Some(t) = http_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    stop_link.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), link_task).await;
    drop(link);
    if let Err(e) = spool.close().await {
        tracing::error!(error = %e, "spool close failed");
    }
    if let Some(b) = embedded {
        b.stop().await;
    }
    tracing::info!("stopped");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// SIGHUP as a stream of signals (never fires where there is no SIGHUP).
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let _ = tx.try_send(());
                }
            });
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
    fingerprint: String,
    view: Option<ConnectorView>,
}

/// The parts a reload may replace: connectors and pollers. Routes live in the ingest's
/// router; the broker connection, spool and HTTP listener need a restart.
#[derive(Default)]
struct Parts {
    connectors: HashMap<String, Running>,
    pollers: Vec<Running>,
    poll_stats: Vec<Arc<mqlink::source::poll::PollStats>>,
}

impl Parts {
    fn is_empty(&self) -> bool {
        self.connectors.is_empty() && self.pollers.is_empty()
    }

    /// Start what `config` describes; keep connectors whose config did not change.
    fn apply(
        &mut self,
        config: &Config,
        built: Vec<(mqlink::config::Connector, Connector)>,
        link: &Link,
        observer: &Arc<Observer>,
    ) -> anyhow::Result<()> {
        // Pollers are cheap to restart: replace them all.
        let mut pollers = Vec::new();
        let mut poll_stats = Vec::new();
        for (i, p) in config.sources.poll.iter().enumerate() {
            let poller =
                Poller::new(i, p, link.ingest().clone()).map_err(|e| usage(e.to_string()))?;
            poll_stats.push(poller.stats());
            let stop = CancellationToken::new();
            let task = tokio::spawn(poller.run(stop.clone()));
            pollers.push(Running {
                stop,
                task,
                fingerprint: String::new(),
                view: None,
            });
        }
        for old in std::mem::replace(&mut self.pollers, pollers) {
            old.stop.cancel();
        }
        self.poll_stats = poll_stats;

        let mut next = HashMap::new();
        for (cfg, connector) in built {
            // Debug output is a stable fingerprint of the validated section (secrets
            // print as <redacted>, so a changed secret alone is not noticed: documented).
            let fingerprint = format!("{cfg:?}");
            if let Some(old) = self.connectors.remove(&cfg.name) {
                if old.fingerprint == fingerprint && !old.task.is_finished() {
                    next.insert(cfg.name.clone(), old);
                    continue;
                }
                tracing::info!(connector = %cfg.name, "connector changed; restarting it");
                old.stop.cancel();
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
                Running {
                    stop,
                    task,
                    fingerprint,
                    view: Some(view),
                },
            );
        }
        for (name, old) in self.connectors.drain() {
            tracing::info!(connector = %name, "connector removed; stopping it");
            old.stop.cancel();
        }
        self.connectors = next;
        let views = self
            .connectors
            .values()
            .filter_map(|r| r.view.clone())
            .collect();
        observer.set_parts(Facts::of(config), views, self.poll_stats.clone());
        Ok(())
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
    cfg: mqlink::config::Connector,
    broker: mqlink::config::Broker,
    first: Connector,
    topics: Arc<mqlink::observe::TopicTracker>,
    stop: CancellationToken,
) {
    let mut next = Some(first);
    let mut attempt = 0u32;
    loop {
        let connector = match next.take() {
            Some(c) => c,
            None => match Connector::new(&cfg, &broker) {
                Ok(c) => c.with_tracker(topics.clone()),
                Err(e) => {
                    tracing::error!(connector = %cfg.name, error = %e, "connector cannot be rebuilt");
                    return;
                }
            },
        };
        match connector.run(stop.clone()).await {
            Ok(()) => return,
            Err(e) => {
                let delay = mqlink::mqtt::client::backoff(
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

/// SIGHUP: load the file again; apply it only if it validates. Routes, pollers and
/// connectors change in place; spooled and in-flight messages are untouched.
fn reload(
    path: Option<&PathBuf>,
    own_login: Option<&OwnLogin>,
    current: &mut Config,
    parts: &mut Parts,
    link: &Link,
    observer: &Arc<Observer>,
) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP ignored: mqlink runs without a config file");
        return;
    };
    let mut next = match load(Some(path)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "config reload refused; the running config stays");
            return;
        }
    };
    if let Some(own) = own_login {
        own.apply(&mut next);
    }
    // Keep what a reload cannot change, and say so.
    if format!("{:?}", next.broker) != format!("{:?}", current.broker)
        || next.spool.dir != current.spool.dir
        || format!("{:?}", next.sources.http) != format!("{:?}", current.sources.http)
    {
        tracing::warn!(
            "changes to broker, spool or sources.http need a restart; they are ignored by this reload"
        );
    }
    next.broker = current.broker.clone();
    next.spool = current.spool.clone();
    next.sources.http = current.sources.http.clone();
    let router = match Router::new(&next) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "config reload refused; the running config stays");
            return;
        }
    };
    let built = match next
        .connectors
        .iter()
        .map(|c| Connector::new(c, &next.broker).map(|k| (c.clone(), k)))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "config reload refused; the running config stays");
            return;
        }
    };
    link.ingest().set_router(router);
    if let Err(e) = parts.apply(&next, built, link, observer) {
        tracing::error!(error = %e, "config reload: sources could not be restarted");
    }
    tracing::info!(
        routes = next.routes.len(),
        connectors = next.connectors.len(),
        polls = next.sources.poll.len(),
        "config reloaded"
    );
    *current = next;
}
