//! `mqlink sub`: subscribe like mosquitto_sub. Each QoS 1/2 message is acknowledged to the
//! broker only after it was written to stdout.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, anyhow};
use mqlink::mqtt::client;
use mqlink::mqtt::codec::QoS;
use mqlink::record::{self, Format};
use tokio_util::sync::CancellationToken;

use crate::cmd::mosquitto_args::{MosqConnArgs, finish, mosq_usage};
use crate::cmd::publish::wait_connected;
use crate::cmd::sub_format;
use crate::exit::Quiet;

const TOOL: &str = "mosquitto_sub";

/// mosquitto_sub's exit code when `-W` ran out (with or without `-C`).
const TIMED_OUT: u8 = 27;

#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true, after_help = crate::cmd::mosquitto_args::COMPAT_HELP)]
pub struct Args {
    #[command(flatten)]
    conn: MosqConnArgs,
    /// Topic filter(s) to subscribe to (repeatable; `+`, `#`, `$share/group/...`).
    #[arg(short = 't', long = "topic")]
    topics: Vec<String>,
    /// Print the topic before the payload (text format).
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Do not print retained messages (nor count them for -C, as mosquitto_sub).
    #[arg(short = 'R', long = "no-retained")]
    no_retained: bool,
    /// Print each message by this format: %t topic, %p payload, %q QoS, %r retain, %l
    /// length, %m message id, %x/%X hex payload, %%, and \n \t \\ \0 \a \e \r \v escapes
    /// (other mosquitto fields are refused: not supported yet).
    #[arg(short = 'F')]
    format_string: Option<String>,
    /// No end of line after each message.
    #[arg(short = 'N')]
    no_eol: bool,
    /// QoS to subscribe with.
    #[arg(short = 'q', long, default_value_t = 0)]
    qos: u8,
    /// Exit after this many messages.
    #[arg(short = 'C', long)]
    count: Option<u64>,
    /// Exit after this many seconds with code 27 (mosquitto_sub's), -C reached or not.
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
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    finish(subscribe(args).await)
}

fn invalid_filter(t: &str) -> anyhow::Error {
    mosq_usage(
        TOOL,
        format!("Invalid subscription topic '{t}', are all '+' and '#' wildcards correct?"),
    )
}

async fn subscribe(mut args: Args) -> anyhow::Result<()> {
    let qos = QoS::from_u8(args.qos)
        .ok_or_else(|| mosq_usage(TOOL, format!("Invalid QoS given: {}", args.qos)))?;
    let format: Format = args.format.parse().map_err(|e| mosq_usage(TOOL, e))?;
    let pieces = match &args.format_string {
        Some(f) => Some(sub_format::parse(f).map_err(|e| mosq_usage(TOOL, e))?),
        None => None,
    };
    let (mut opts, url_topic) = args.conn.options(TOOL, |q| q <= 2)?;
    args.topics.extend(url_topic);
    if args.topics.is_empty() {
        return Err(mosq_usage(
            TOOL,
            "You must specify a topic to subscribe to.",
        ));
    }
    // mosquitto_sub checks filters before connecting.
    if let Some(bad) = args
        .topics
        .iter()
        .find(|t| mqlink::mqtt::codec::check_topic_filter(t).is_err())
    {
        return Err(invalid_filter(bad));
    }
    if args.persistent {
        if args.conn.id.is_none() {
            return Err(mosq_usage(
                TOOL,
                "You must provide a client id if you are using the -c option.",
            ));
        }
        opts.clean_start = false;
        opts.session_expiry = Some(Duration::from_secs(args.session_expiry));
    }
    let broker = opts.url.to_string();
    let (client, mut deliveries, event_loop) = client::new(opts)?;
    let shutdown = CancellationToken::new();
    let loop_task = tokio::spawn(event_loop.run(shutdown.clone()));
    wait_connected(&client, args.conn.retry)
        .await
        .with_context(|| format!("cannot subscribe at {broker}"))?;
    let filters: Vec<(String, QoS)> = args.topics.iter().map(|t| (t.clone(), qos)).collect();
    let codes = client.subscribe(filters).await?;
    for (t, c) in args.topics.iter().zip(&codes) {
        if *c == 0x8F {
            shutdown.cancel();
            return Err(invalid_filter(t));
        }
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
            // mosquitto_sub -R: a retained message is neither printed nor counted for -C.
            if !(args.no_retained && d.publish.retain) {
                write_message(&mut out, format, pieces.as_deref(), &args, &d.publish)
                    .context("cannot write to stdout")?;
                received += 1;
            }
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
    if timed_out {
        eprintln!("Timed out");
        return Err(anyhow::Error::new(Quiet(TIMED_OUT)));
    }
    Ok(())
}

/// One message as mosquitto_sub prints it (text), or in one of mqlink's record formats.
fn write_message(
    out: &mut impl Write,
    format: Format,
    pieces: Option<&[sub_format::Piece]>,
    args: &Args,
    p: &mqlink::mqtt::codec::Publish,
) -> std::io::Result<()> {
    let eol: &[u8] = if args.no_eol { b"" } else { b"\n" };
    if let Some(pieces) = pieces {
        sub_format::write(out, pieces, p)?;
        return out.write_all(eol);
    }
    if format != Format::Text {
        return record::write(out, format, args.verbose, p);
    }
    // mosquitto_sub 2.0: an empty payload prints `topic (null)` with -v and nothing at
    // all (not even the end of line) without.
    if args.verbose {
        out.write_all(p.topic.as_bytes())?;
        if p.payload.is_empty() {
            out.write_all(b" (null)")?;
        } else {
            out.write_all(b" ")?;
            out.write_all(&p.payload)?;
        }
        out.write_all(eol)
    } else if p.payload.is_empty() {
        Ok(())
    } else {
        out.write_all(&p.payload)?;
        out.write_all(eol)
    }
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
