//! `mqlink pub`: publish like mosquitto_pub, but exit 0 only when the broker confirmed
//! every message at the requested QoS.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use mqlink::mqtt::client::{self, Client, LinkState, PublishHandle};
use mqlink::mqtt::codec::{Publish, QoS};
use mqlink::mqtt::state::Verdict;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cmd::mosquitto_args::{MosqConnArgs, ProxyFailed, TlsFailed, finish, mosq_usage};

const TOOL: &str = "mosquitto_pub";

#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true, args_override_self = true, after_help = crate::cmd::mosquitto_args::COMPAT_HELP)]
#[command(group(clap::ArgGroup::new("source").required(true)))]
pub struct Args {
    #[command(flatten)]
    pub(crate) conn: MosqConnArgs,
    /// Topic to publish to (or the path of -L).
    #[arg(short = 't', long)]
    topic: Option<String>,
    /// The message.
    #[arg(short = 'm', long, group = "source")]
    message: Option<String>,
    /// Send a file's contents as one message.
    #[arg(short = 'f', long, group = "source")]
    file: Option<PathBuf>,
    /// One message per line of stdin (a blank line is an empty message, as in mosquitto).
    #[arg(short = 'l', long = "stdin-line", group = "source")]
    lines: bool,
    /// All of stdin as one message.
    #[arg(short = 's', long = "stdin-file", group = "source")]
    stdin_file: bool,
    /// An empty message.
    #[arg(short = 'n', long = "null-message", group = "source")]
    null: bool,
    /// QoS 0, 1 or 2.
    #[arg(short = 'q', long, default_value_t = 0)]
    qos: u8,
    /// Retain the message.
    #[arg(short = 'r', long)]
    retain: bool,
    /// With -m, -f, -s or -n: publish the message this many times.
    #[arg(long, default_value_t = 1)]
    repeat: u64,
    /// Seconds (fractions allowed) between repeated messages.
    #[arg(long, default_value_t = 0.0)]
    repeat_delay: f64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let quiet = args.conn.quiet;
    finish(publish(args).await, quiet)
}

async fn publish(args: Args) -> anyhow::Result<()> {
    let qos = QoS::from_u8(args.qos)
        .ok_or_else(|| mosq_usage(TOOL, format!("Invalid QoS given: {}", args.qos)))?;
    if args.repeat == 0 {
        return Err(mosq_usage(TOOL, "--repeat argument must be >0.\n"));
    }
    if !(args.repeat_delay.is_finite() && args.repeat_delay >= 0.0) {
        return Err(mosq_usage(
            TOOL,
            "--repeat-delay argument must be a number of seconds >= 0.",
        ));
    }
    let conn = args.conn.options(TOOL)?;
    let (mut opts, url_topic, props) = (conn.opts, conn.url_topic, conn.publish_props);
    // -c with QoS 1/2: a new process does not know which packet ids the resumed session
    // holds (a QoS 2 message awaiting PUBREL would swallow ours with the same id), so the
    // first connect starts a new session; mosquitto_pub resumes it. QoS 0 uses no packet
    // ids: resuming is safe, and done as mosquitto does.
    opts.resume_at_start = qos == QoS::AtMostOnce;
    let positions = args.conn.positions;
    let topic = match (args.topic.clone(), url_topic) {
        // mosquitto_pub keeps one topic: the last of -t and -L's path.
        (Some(t), Some(u)) => {
            if positions.topic > positions.url {
                t
            } else {
                u
            }
        }
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => {
            return Err(mosq_usage(TOOL, "Both topic and message must be supplied."));
        }
    };
    if topic.is_empty() || topic.contains(['+', '#']) {
        return Err(mosq_usage(
            TOOL,
            format!("Invalid publish topic '{topic}', does it contain '+' or '#'?"),
        ));
    }
    let broker = crate::cmd::mosquitto_args::broker_label(&opts);
    let (client, _deliveries, event_loop) = client::new(opts)?;
    let shutdown = CancellationToken::new();
    let loop_task = tokio::spawn(event_loop.run(shutdown.clone()));
    wait_connected(&client, args.conn.retry)
        .await
        .with_context(|| format!("cannot publish to {broker}"))?;

    let topic: Arc<str> = Arc::from(topic.as_str());
    let make = |payload: Bytes| Publish {
        topic: topic.clone(),
        payload,
        qos,
        retain: args.retain,
        dup: false,
        pid: None,
        props: props.clone(),
    };
    // Verdicts are awaited in order by a second task while publishing goes on.
    let (htx, mut hrx) = mpsc::channel::<PublishHandle>(65_536);
    let checker = tokio::spawn(async move {
        let (mut ok, mut failed, mut first_failure) = (0u64, 0u64, None::<String>);
        while let Some(h) = hrx.recv().await {
            match h.await {
                Verdict::Acknowledged => ok += 1,
                other => {
                    failed += 1;
                    if first_failure.is_none() {
                        first_failure = Some(describe(&other));
                    }
                }
            }
        }
        (ok, failed, first_failure)
    });

    let sent = publish_all(&args, &client, &htx, make).await;
    drop(htx);
    drop(client);
    let (ok, failed, first_failure) = checker.await?;
    // The loop ends by itself once every handle is gone and nothing is in flight.
    let _ = loop_task.await;
    let sent = sent?;
    if failed > 0 || ok != sent {
        return Err(anyhow!(
            "{} of {sent} messages were not confirmed by the broker{}",
            sent - ok,
            first_failure
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default()
        ));
    }
    Ok(())
}

async fn publish_all(
    args: &Args,
    client: &Client,
    htx: &mpsc::Sender<PublishHandle>,
    make: impl Fn(Bytes) -> Publish,
) -> anyhow::Result<u64> {
    let mut sent = 0u64;
    let mut one = |payload: Bytes| {
        sent += 1;
        make(payload)
    };
    let send = |p: Publish| async move {
        let h = client.publish(p).await?;
        htx.send(h)
            .await
            .map_err(|_| anyhow!("verdict checker stopped"))
    };
    let single = if let Some(m) = &args.message {
        Some(Bytes::from(m.clone().into_bytes()))
    } else if let Some(f) = &args.file {
        let data = tokio::fs::read(f)
            .await
            .with_context(|| format!("cannot read {}", f.display()))?;
        Some(Bytes::from(data))
    } else if args.null {
        Some(Bytes::new())
    } else if args.stdin_file {
        let mut data = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut data).await?;
        Some(Bytes::from(data))
    } else {
        None
    };
    if let Some(payload) = single {
        let delay = std::time::Duration::from_secs_f64(args.repeat_delay);
        for i in 0..args.repeat {
            if i > 0 && !delay.is_zero() {
                // The delay is what --repeat-delay asks for, not a wait for an event.
                tokio::time::sleep(delay).await;
            }
            send(one(payload.clone())).await?;
        }
    } else if args.lines {
        let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, tokio::io::stdin());
        let mut line = Vec::with_capacity(1024);
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).await? == 0 {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            send(one(Bytes::copy_from_slice(&line))).await?;
        }
    }
    Ok(sent)
}

fn describe(v: &Verdict) -> String {
    match v {
        Verdict::Acknowledged => "acknowledged".into(),
        Verdict::Rejected { code, reason } => format!(
            "rejected: {} (0x{code:02x}){}",
            client::reason_name(*code),
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        Verdict::GaveUp => "the client stopped before the broker answered".into(),
    }
}

/// Wait for the first connection. Without `retry`, the first failure is final, the way
/// mosquitto_pub and mosquitto_sub behave; after that, the engine reconnects on its own.
pub async fn wait_connected(client: &Client, retry: bool) -> anyhow::Result<()> {
    let mut link = client.link();
    loop {
        match &*link.borrow_and_update() {
            LinkState::Connected { .. } => return Ok(()),
            LinkState::Down { reason, cause } if !retry => {
                return Err(match *cause {
                    "tls" => anyhow::Error::new(TlsFailed(reason.clone())),
                    "proxy" => anyhow::Error::new(ProxyFailed(reason.clone())),
                    _ => anyhow!("{reason}"),
                });
            }
            LinkState::Stopped => return Err(anyhow!("client stopped")),
            _ => {}
        }
        link.changed()
            .await
            .map_err(|_| anyhow!("client stopped"))?;
    }
}
