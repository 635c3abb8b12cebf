//! `mqlink sub`: subscribe like mosquitto_sub. Each QoS 1/2 message is acknowledged to the
//! broker only after it was written to stdout.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, anyhow};
use mqlink::mqtt::client;
use mqlink::mqtt::codec::{Publish, PublishProps, QoS};
use mqlink::record::{self, Format};
use mqlink::topic::TopicFilter;
use tokio_util::sync::CancellationToken;

use crate::cmd::mosquitto_args::{MosqConnArgs, MosqPlain, finish, mosq_usage};
use crate::cmd::publish::wait_connected;
use crate::cmd::sub_format;
use crate::exit::Quiet;

const TOOL: &str = "mosquitto_sub";

/// mosquitto_sub's exit code when `-W` ran out (with or without `-C`).
const TIMED_OUT: u8 = 27;

#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true, args_override_self = true, after_help = crate::cmd::mosquitto_args::COMPAT_HELP)]
pub struct Args {
    #[command(flatten)]
    pub(crate) conn: MosqConnArgs,
    /// Topic filter(s) to subscribe to (repeatable; `+`, `#`, `$share/group/...`).
    #[arg(short = 't', long = "topic")]
    topics: Vec<String>,
    /// Print the topic before the payload (text format).
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Do not print retained messages (nor count them for -C, as mosquitto_sub).
    #[arg(short = 'R', long = "no-retained")]
    no_retained: bool,
    /// Print each message by this format, as mosquitto_sub(1) says: %t topic, %p payload,
    /// %q QoS, %r retain, %l length, %m message id, %x/%X hex payload, %j/%J JSON
    /// (--pretty), %I ISO 8601 time, %U Unix time, %A %C %D %E %F %P %R %S MQTT 5
    /// properties, %% ; flags -, 0, width and .precision; @X strftime codes (@N
    /// nanoseconds, @@); \n \t \\ \0 \a \e \r \v escapes.
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
    /// Exit once the broker acknowledged the subscriptions.
    #[arg(short = 'E')]
    exit_after_sub: bool,
    /// Do not print (nor count) messages whose topic matches this filter (repeatable).
    #[arg(short = 'T', long = "filter-out")]
    filter_out: Vec<String>,
    /// Unsubscribe from this filter after subscribing (repeatable).
    #[arg(short = 'U', long = "unsubscribe")]
    unsubscribe: Vec<String>,
    /// Indent %j / %J output.
    #[arg(long)]
    pretty: bool,
    /// Print only this percentage of messages (0.1 to 100), chosen at random.
    #[arg(long)]
    random_filter: Option<f64>,
    /// Clear each retained message received (publish an empty retained message), except
    /// on topics filtered out by -T.
    #[arg(long)]
    remove_retained: bool,
    /// Print only retained messages; exit at the first message that is not.
    #[arg(long)]
    retained_only: bool,
    /// Ask the broker for Retain-As-Published (MQTT 5; ignored on 3.x, as by mosquitto):
    /// live messages then keep the publisher's retain flag.
    #[arg(long)]
    retain_as_published: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let quiet = args.conn.quiet;
    finish(subscribe(args).await, quiet)
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
    let conn = args.conn.options(TOOL)?;
    let (mut opts, url_topic) = (conn.opts, conn.url_topic);
    // mosquitto_sub subscribes in command-line order, -L's topic among the -t filters.
    if let Some(t) = url_topic {
        let at = args.conn.positions.topics_before_url.min(args.topics.len());
        args.topics.insert(at, t);
    }
    // Only asked for when given, as mosquitto_sub does (3.x has no such option).
    opts.subscribe_options.retain_as_published = args.retain_as_published;
    // mosquitto_sub -R also asks an MQTT 5 broker not to send retained messages at all
    // (Retain Handling 2); they are still skipped here for MQTT 3.
    if args.no_retained {
        opts.subscribe_options.retain_handling = 2;
    }
    if args.no_retained && args.retained_only {
        // mosquitto_sub's own layout for this one: a blank line first, no --help line.
        return Err(anyhow::Error::new(MosqPlain(
            "\nError: Combining '-R' and '--retained-only' makes no sense.".into(),
        )));
    }
    // mosquitto_sub: only the lower bound is checked; from 100 on every message is printed.
    // (mosquitto_sub 2.0.11 itself prints a tenth of the chance asked for; mqlink does what
    // its man page says.)
    if args.random_filter.is_some_and(|r| r.is_nan() || r < 0.1) {
        return Err(mosq_usage(
            TOOL,
            "--random-filter chance must be between 0.1-100.0\n",
        ));
    }
    let mut filter_out = Vec::with_capacity(args.filter_out.len());
    for t in &args.filter_out {
        filter_out.push(TopicFilter::parse(t).map_err(|_| {
            mosq_usage(
                TOOL,
                format!("Invalid filter topic '{t}', are all '+' and '#' wildcards correct?"),
            )
        })?);
    }
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
        .chain(&args.unsubscribe)
        .find(|t| mqlink::mqtt::codec::check_topic_filter(t).is_err())
    {
        return Err(invalid_filter(bad));
    }
    let broker = crate::cmd::mosquitto_args::broker_label(&opts);
    let (client, mut deliveries, event_loop) = client::new(opts)?;
    let shutdown = CancellationToken::new();
    let loop_task = tokio::spawn(event_loop.run(shutdown.clone()));
    wait_connected(&client, args.conn.retry)
        .await
        .with_context(|| format!("cannot subscribe at {broker}"))?;
    let filters: Vec<(String, QoS)> = args.topics.iter().map(|t| (t.clone(), qos)).collect();
    // mosquitto_sub sends one UNSUBSCRIBE per -U filter right after the SUBSCRIBE, without
    // waiting for the SUBACK: `join` polls the subscription first, so its command is
    // queued (and its packet written) first.
    let unsubscribes = futures_util::future::join_all(
        args.unsubscribe
            .iter()
            .map(|f| client.unsubscribe(vec![f.clone()])),
    );
    let (codes, unsubscribed) =
        futures_util::future::join(client.subscribe(filters), unsubscribes).await;
    let codes = codes?;
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
    for u in unsubscribed {
        u?;
    }
    if args.exit_after_sub {
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(2), loop_task).await;
        shutdown.cancel();
        return Ok(());
    }
    // --remove-retained: the clearing messages' verdicts are checked beside the printing.
    let (clear_tx, mut clear_rx) = tokio::sync::mpsc::channel::<client::PublishHandle>(1024);
    let clear_checker = tokio::spawn(async move {
        let mut failed = 0u64;
        while let Some(h) = clear_rx.recv().await {
            if h.await != mqlink::mqtt::state::Verdict::Acknowledged {
                failed += 1;
            }
        }
        failed
    });
    let deadline = args
        .timeout
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    // Stdout is not held locked: -d's trace prints from the connection task between our
    // flushes.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
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
            let retain = d.publish.retain;
            let topic = &d.publish.topic;
            if args.retained_only && !retain {
                // mosquitto_sub --retained-only: the first live message ends the run,
                // unprinted (and unacknowledged: a persistent session gets it again).
                break 'outer;
            }
            // The order of mosquitto_sub's message callback: -T, then --remove-retained
            // (which -R does not stop), then -R, then printing and -C.
            let filtered = filter_out.iter().any(|f| f.matches(topic));
            if !filtered && args.remove_retained && retain {
                let clear = Publish {
                    topic: d.publish.topic.clone(),
                    payload: bytes::Bytes::new(),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    dup: false,
                    pid: None,
                    props: PublishProps::default(),
                };
                let h = client.publish(clear).await?;
                clear_tx
                    .send(h)
                    .await
                    .map_err(|_| anyhow!("the --remove-retained checker stopped"))?;
            }
            // mosquitto_sub -R: a retained message is neither printed nor counted for -C.
            if !(filtered || (args.no_retained && retain)) {
                // --random-filter skips the printing only: the message still counts for -C.
                let shown = args
                    .random_filter
                    .is_none_or(|pct| rand::random::<f64>() * 100.0 < pct);
                if shown {
                    write_message(&mut out, format, pieces.as_deref(), &args, &d.publish)
                        .context("cannot write to stdout")?;
                }
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
    drop(clear_tx);
    let not_cleared = clear_checker.await?;
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
    if not_cleared > 0 {
        return Err(anyhow!(
            "--remove-retained: the broker did not confirm {not_cleared} clearing messages"
        ));
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
        sub_format::write(out, pieces, args.pretty, p)?;
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
