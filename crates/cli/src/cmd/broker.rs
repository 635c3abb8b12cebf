//! `mqlink broker`: the embedded broker alone, until ctrl-c or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::builder::RangedU64ValueParser;
use mqlink::config::{Embedded, EmbeddedTls, Secret};

use crate::embedded::{EmbeddedBroker, EmbeddedOptions};
use crate::exit::usage;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// MQTT (tcp) listen address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    listen: SocketAddr,
    /// WebSocket listen address (path /mqtt).
    #[arg(long)]
    ws: Option<SocketAddr>,
    /// Largest packet accepted, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_packet_size: usize,
    /// Require this user name from every client (with --password-file).
    #[arg(long, requires = "password_file")]
    username: Option<String>,
    /// File holding the password for --username (its first line; kept off the command
    /// line so it does not show in `ps`).
    #[arg(long, requires = "username")]
    password_file: Option<PathBuf>,
    /// MQTT over TLS listen address (with --cert and --key), e.g. 127.0.0.1:8883.
    #[arg(long, requires_all = ["cert", "key"])]
    tls_listen: Option<SocketAddr>,
    /// PEM certificate chain the TLS listener presents.
    #[arg(long, requires = "tls_listen")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, requires = "tls_listen")]
    key: Option<PathBuf>,
    /// PEM CA bundle to verify client certificates against; clients must present one
    /// unless --client-cert-optional.
    #[arg(long, requires = "tls_listen")]
    client_ca: Option<PathBuf>,
    /// With --client-ca: accept clients without a certificate too.
    #[arg(long, requires = "client_ca")]
    client_cert_optional: bool,
    /// Admit unauthenticated clients on a listener other machines can reach (refused
    /// without this flag, as Mosquitto 2 does).
    #[arg(long)]
    allow_anonymous: bool,
    /// Keep sessions, queued messages and retained messages in this directory, across
    /// restarts. Without it the broker keeps them in memory: a restart forgets them.
    #[arg(long)]
    persistence: Option<PathBuf>,
    /// QoS 1/2 messages queued per client session; past it the oldest are dropped.
    #[arg(long, default_value_t = Embedded::DEFAULT_MAX_QUEUED_MESSAGES, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    max_queued_messages: usize,
    /// Bytes queued per client session (each message's memory footprint: payload, topic,
    /// properties); past it the oldest messages are dropped.
    #[arg(long, default_value_t = Embedded::DEFAULT_MAX_QUEUED_BYTES, value_parser = RangedU64ValueParser::<usize>::new().range(1024..))]
    max_queued_bytes: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (username, password) = match (args.username, &args.password_file) {
        (Some(user), Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--password-file {}", file.display()))
                .map_err(|e| usage(format!("{e:#}")))?;
            let password = text.lines().next().unwrap_or_default().to_string();
            if password.is_empty() {
                return Err(usage(format!(
                    "--password-file {}: the first line (the password) is empty",
                    file.display()
                )));
            }
            (Some(user), Some(Secret::new(password)))
        }
        _ => (None, None),
    };
    let tls = match (args.tls_listen, args.cert, args.key) {
        (Some(listen), Some(cert_file), Some(key_file)) => Some(EmbeddedTls {
            listen,
            cert_file,
            key_file,
            require_client_cert: args.client_ca.is_some() && !args.client_cert_optional,
            client_ca_file: args.client_ca,
        }),
        _ => None,
    };
    let mut broker = EmbeddedBroker::start(&EmbeddedOptions {
        embedded: Embedded {
            listen: args.listen,
            ws_listen: args.ws,
            username,
            password,
            tls,
            allow_anonymous: args.allow_anonymous,
            max_queued_messages: args.max_queued_messages,
            max_queued_bytes: args.max_queued_bytes,
            persistence: args.persistence,
        },
        max_packet_size: args.max_packet_size,
        own_login: None,
    })
    .await?;
    tokio::select! {
        _ = crate::cmd::terminated() => {
            tracing::info!("stopping the embedded broker");
            broker.stop().await;
            Ok(())
        }
        _ = broker.failed() => Err(anyhow::anyhow!("the embedded broker stopped unexpectedly")),
    }
}
