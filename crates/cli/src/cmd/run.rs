//! `mqlink run`: the daemon.
//!
//! This file keeps what belongs to the binary: flags, signals and the embedded broker. The
//! pipeline itself is [`mqlink::topology`]: it starts, reloads (SIGHUP) and stops
//! everything else.
//!
//! Start order: config (validated: jq compiled, defaults filled) → flags applied →
//! connectors built ([`Topology::new`]) → embedded broker (if `broker.url: embedded`) →
//! [`Topology::start`].
//!
//! Shutdown (ctrl-c, SIGTERM, or end of stdin when stdin is the only source):
//! [`Running::stop`] (sources stop accepting, the spool drains until empty or
//! `--shutdown-timeout`, offline message, DISCONNECT, spool checkpoint) → embedded broker
//! stops → exit 0. Whatever was not published stays in the spool for the next start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mqlink::config::{self, BrokerTarget, Config};
use mqlink::topology::{self, Running, Topology, TopologyError};

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

/// Load the config named by `path`, or the defaults (validation compiles every jq
/// program): config errors are usage errors (exit 2).
pub fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    topology::load(path.map(PathBuf::as_path)).map_err(|e| usage(e.to_string()))
}

/// A topology error as the binary reports it: configuration faults exit 2.
fn exit_error(e: TopologyError) -> anyhow::Error {
    if e.is_config() {
        usage(e.to_string())
    } else {
        anyhow::Error::new(e)
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    // Taken first, so a SIGTERM while the daemon starts is a request to stop once it has
    // started (drained, with its clean-shutdown message), not a kill by the default action.
    let stop_requested = crate::cmd::terminated();
    tokio::pin!(stop_requested);
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
            // Dead letters defaulted next to the spool move with it.
            if let Ok(rest) = c.dead_letter.strip_prefix(&config.spool.dir) {
                c.dead_letter = d.join(rest);
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
    let topology = Topology::new(config);

    let embedded = match embedded_settings {
        Some(e) => Some(
            EmbeddedBroker::start(&EmbeddedOptions {
                embedded: e,
                max_packet_size: topology.config().broker.max_packet_size as usize,
                own_login: own_login.clone(),
            })
            .await?,
        ),
        None => None,
    };

    let mut running = topology.start().await.map_err(exit_error)?;
    if let Some(counter) = embedded.as_ref().and_then(EmbeddedBroker::queue_dropped) {
        running.observer().set_embedded_queue_dropped(counter);
    }

    let mut failure = None;
    let mut hangups = hangups();
    loop {
        tokio::select! {
            _ = &mut stop_requested => { tracing::info!("stop requested; draining"); break; }
            _ = hangups.recv() => reload(args.config.as_ref(), own_login.as_ref(), &mut running),
            r = running.finished() => {
                failure = r.err().map(anyhow::Error::new);
                break;
            }
        }
    }
    running.stop(args.shutdown_timeout).await;
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

/// SIGHUP: load the file again; apply it only if it validates. Routes, pollers and
/// connectors change in place; spooled and in-flight messages are untouched.
fn reload(path: Option<&PathBuf>, own_login: Option<&OwnLogin>, running: &mut Running) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP ignored: mqlink runs without a config file");
        return;
    };
    let mut next = match topology::load(Some(path)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "config reload refused; the running config stays");
            return;
        }
    };
    if let Some(own) = own_login {
        own.apply(&mut next);
    }
    if let Err(e) = running.reload(next) {
        tracing::error!(error = %e, "config reload refused; the running config stays");
    }
}
