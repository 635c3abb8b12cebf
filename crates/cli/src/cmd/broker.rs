//! `mqlink broker`: the embedded broker alone, until ctrl-c or SIGTERM.

use std::net::SocketAddr;

use crate::embedded::{EmbeddedBroker, EmbeddedOptions};

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
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut broker = EmbeddedBroker::start(&EmbeddedOptions {
        listen: args.listen,
        ws_listen: args.ws,
        max_packet_size: args.max_packet_size,
        credentials: None,
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
