//! `mqlink sub`: subscribe like mosquitto_sub. Each QoS 1/2 message is acknowledged to the
//! broker only after it was written to stdout.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, anyhow};
use mqlink::mqtt::client;
use mqlink::mqtt::codec::QoS;
use mqlink::record::{self, Format};
use tokio_util::sync::CancellationToken;

use crate::cmd::publish::wait_connected;
use crate::conn::ConnArgs;
use crate::exit::{Quiet, usage};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic filter(s) to subscribe to (repeatable; `+`, `#`, `$share/group/...`).
    #[arg(short = 't', long = "topic", required = true)]
    topics: Vec<String>,
    /// Print the topic before the payload (text format).
    #[arg(short = 'v', long)]
    verbose: bool,
    /// QoS to subscribe with.
    #[arg(short = 'q', long, default_value_t = 0)]
    qos: u8,
    /// Exit after this many messages.
    #[arg(short = 'C', long)]
    count: Option<u64>,
    /// Exit after this many seconds (exit code 1 when -C was given and not reached).
    #[arg(short = 'W', long)]
    timeout: Option<u64>,
    /// Output format: text, json, fluvio, raw.
    #[arg(long, default_value = "text")]
    format: String,
    /// Persistent session (clean start off): the broker keeps QoS 1/2 messages while we are away.
    #[arg(short = 'c', long = "persistent")]
    persistent: bool,
    /// Session expiry in seconds for a persistent MQTT 5 session.
    #[arg(short = 'x', long, default_value_t = 86_400)]
    session_expiry: u64,
    /// Keep retrying when the first connection fails.
    #[arg(long)]
    retry: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let qos = QoS::from_u8(args.qos)
        .ok_or_else(|| usage(format!("QoS must be 0, 1 or 2, not {}", args.qos)))?;
    let format: Format = args.format.parse().map_err(usage)?;
    let mut opts = args.conn.options("sub")?;
    if args.persistent {
        if args.conn.id.is_none() {
            return Err(usage(
                "a persistent session (-c) needs a stable client id (-i)",
            ));
        }
        opts.clean_start = false;
        opts.session_expiry = Some(Duration::from_secs(args.session_expiry));
    }
    let broker = opts.url.to_string();
    let (client, mut deliveries, event_loop) = client::new(opts)?;
    let shutdown = CancellationToken::new();
    let loop_task = tokio::spawn(event_loop.run(shutdown.clone()));
    wait_connected(&client, args.retry)
        .await
        .with_context(|| format!("cannot subscribe at {broker}"))?;
    let filters: Vec<(String, QoS)> = args.topics.iter().map(|t| (t.clone(), qos)).collect();
    let codes = client.subscribe(filters).await?;
    for (t, c) in args.topics.iter().zip(&codes) {
        if *c >= 0x80 {
            shutdown.cancel();
            return Err(anyhow!(
                "broker refused the subscription to '{t}': {} (0x{c:02x})",
                client::reason_name(*c)
            ));
        }
    }
    let deadline = args
        .timeout
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut received = 0u64;
    let mut timed_out = false;
    let mut pending_acks = Vec::new();
    'outer: loop {
        let next = tokio::select! {
            d = deliveries.recv() => d,
            _ = sleep_until_opt(deadline) => { timed_out = true; None }
            _ = crate::cmd::terminated() => None,
        };
        let Some(mut d) = next else { break };
        loop {
            record::write(&mut out, format, args.verbose, &d.publish)
                .context("cannot write to stdout")?;
            received += 1;
            if let Some(t) = d.ack {
                pending_acks.push(t);
            }
            if args.count.is_some_and(|c| received >= c) {
                break 'outer;
            }
            // Batch the flush (and the acks behind it) over what is already waiting.
            match deliveries.try_recv() {
                Ok(more) if pending_acks.len() < 256 => d = more,
                Ok(more) => {
                    flush_and_ack(&mut out, &client, &mut pending_acks)?;
                    d = more;
                }
                Err(_) => break,
            }
        }
        flush_and_ack(&mut out, &client, &mut pending_acks)?;
    }
    flush_and_ack(&mut out, &client, &mut pending_acks)?;
    drop(client);
    // Messages that arrive from here on stay unacknowledged: a persistent session gets them again.
    let stop = tokio::time::timeout(Duration::from_secs(2), loop_task).await;
    if stop.is_err() {
        shutdown.cancel();
    }
    drop(deliveries);
    if timed_out && args.count.is_some_and(|c| received < c) {
        eprintln!(
            "mqlink: timed out after {}s with {received} of {} messages",
            args.timeout.unwrap_or_default(),
            args.count.unwrap_or_default()
        );
        return Err(anyhow::Error::new(Quiet(1)));
    }
    Ok(())
}

fn flush_and_ack(
    out: &mut impl Write,
    client: &client::Client,
    acks: &mut Vec<mqlink::mqtt::state::AckToken>,
) -> anyhow::Result<()> {
    out.flush().context("cannot write to stdout")?;
    for t in acks.drain(..) {
        client.ack(t);
    }
    Ok(())
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
