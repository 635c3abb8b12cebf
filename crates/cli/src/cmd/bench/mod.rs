//! `mqlink bench`: a load generator for any MQTT broker, in the spirit of emqtt-bench.
//!
//! ```text
//!  subscribers (connect, subscribe PREFIX/#) ── ready ──▶ publishers (connect, go together)
//!  publisher i ── PREFIX/i, payload {"pub":i,"seq":n,"ts":now} ──▶ broker ──▶ each subscriber
//!  subscriber: Tally (missing, duplicates, latency) ──▶ report (text or --json)
//! ```
//!
//! Subscribers subscribe before any publisher starts, so every message is expected by
//! every subscriber. With `--publishers 0` the command is a counter for another tool's
//! traffic: it prints `ready` on stderr once subscribed and expects `--count` messages from
//! each of `--expect-publishers` publishers (payloads in the format of [`payload`]).
//! The exit code is 1 when anything is missing or was not confirmed.

mod payload;
mod tally;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use mqlink::mqtt::client::{self, MqttOptions, PublishHandle};
use mqlink::mqtt::codec::{Publish, PublishProps, QoS};
use mqlink::mqtt::state::Verdict;
use tokio::sync::{Barrier, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cmd::mosquitto_args::{ConnCore, ConnUsage, Defaults};
use crate::cmd::publish::wait_connected;
use crate::exit::{Quiet, usage};
use payload::Stamp;
use tally::{Percentiles, Tally};

#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Print help (`-h` is the host, as in pub and sub).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(flatten)]
    conn: ConnCore,
    /// Publishing clients, each on its own connection and subtopic PREFIX/N.
    #[arg(long, default_value_t = 1)]
    publishers: u32,
    /// Subscribing clients, each subscribed to PREFIX/#.
    #[arg(long, default_value_t = 1)]
    subscribers: u32,
    /// QoS for publishing and subscribing.
    #[arg(short = 'q', long, default_value_t = 0)]
    qos: u8,
    /// Payload size in bytes (a JSON object padded to this size).
    #[arg(short = 's', long, default_value_t = 100)]
    size: usize,
    /// Messages per publisher (with --publishers 0: expected per publisher).
    #[arg(
        short = 'C',
        long,
        default_value_t = 10_000,
        conflicts_with = "duration"
    )]
    count: u64,
    /// Publish for this many seconds instead of a count.
    #[arg(short = 'd', long)]
    duration: Option<f64>,
    /// Total messages per second across publishers (0: as fast as the broker allows).
    #[arg(short = 'R', long, default_value_t = 0.0)]
    rate: f64,
    /// Topic prefix.
    #[arg(short = 't', long, default_value = "mqlink-bench")]
    topic: String,
    /// With --publishers 0: how many publishers (ids 0..N) the counted traffic comes from.
    #[arg(long, default_value_t = 1)]
    expect_publishers: u32,
    /// Seconds subscribers wait without progress before declaring the rest missing.
    #[arg(short = 'W', long, default_value_t = 10.0)]
    wait: f64,
    /// With --publishers 0: give up after this many seconds in all.
    #[arg(long, default_value_t = 600.0)]
    max_wait: f64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// What one publisher did.
#[derive(Debug, Default)]
struct Sent {
    sent: u64,
    acknowledged: u64,
    failed: u64,
    first_failure: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let qos = QoS::from_u8(args.qos)
        .ok_or_else(|| usage(format!("QoS must be 0, 1 or 2, not {}", args.qos)))?;
    if args.topic.is_empty() || args.topic.contains(['+', '#']) {
        return Err(usage(format!(
            "'{}' is not a valid topic prefix",
            args.topic
        )));
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        return Err(usage("--rate must be a number ≥ 0"));
    }
    if args.publishers == 0 && args.subscribers == 0 {
        return Err(usage("nothing to do: no publishers and no subscribers"));
    }
    if args.publishers == 0 && args.duration.is_some() {
        return Err(usage(
            "--duration needs publishers; a counter (--publishers 0) expects --count",
        ));
    }
    let defaults = Defaults {
        host: "127.0.0.1",
        protocol: mqlink::mqtt::codec::Protocol::V5,
        fallback_to_311: true,
    };
    let (mut opts, _) =
        args.conn
            .build(&defaults)
            .map_err(|e| match e.downcast::<ConnUsage>() {
                Ok(u) => usage(u.0),
                Err(e) => e,
            })?;
    if args.conn.id.is_none() {
        // Runs side by side must not take each other's sessions: one id per process.
        opts.client_id = format!(
            "{}-bench-{}",
            mqlink::mqtt::client::default_client_id(),
            std::process::id()
        );
    }
    let broker = opts.url.to_string();

    // Subscribers first: every message published below is expected by each of them.
    let progress: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.subscribers).map(|_| AtomicU64::new(0)).collect());
    let stop_subs = CancellationToken::new();
    let mut subs = JoinSet::new();
    let (ready_tx, mut ready_rx) = mpsc::channel::<anyhow::Result<()>>(1);
    for i in 0..args.subscribers {
        let mut o = opts.clone();
        o.client_id = format!("{}-s{i}", opts.client_id);
        o.delivery_capacity = 4096;
        subs.spawn(subscriber(
            o,
            format!("{}/#", args.topic),
            qos,
            ready_tx.clone(),
            progress.clone(),
            i as usize,
            stop_subs.clone(),
        ));
    }
    drop(ready_tx);
    for _ in 0..args.subscribers {
        match tokio::time::timeout(Duration::from_secs(30), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => {
                stop_subs.cancel();
                return Err(e.context(format!("cannot subscribe at {broker}")));
            }
            Ok(None) | Err(_) => {
                stop_subs.cancel();
                return Err(anyhow!("subscribers at {broker} not ready within 30 s"));
            }
        }
    }
    if args.subscribers > 0 {
        eprintln!("ready");
    }

    let started = Instant::now();
    let sent: Vec<Sent> = if args.publishers > 0 {
        publish_all(&args, &opts, qos).await?
    } else {
        Vec::new()
    };
    let published = started.elapsed();

    let per_publisher: Vec<u64> = if args.publishers > 0 {
        sent.iter().map(|s| s.sent).collect()
    } else {
        vec![args.count; args.expect_publishers as usize]
    };
    let expected: u64 = per_publisher.iter().sum();
    if args.subscribers > 0 {
        let overall = (args.publishers == 0).then(|| Duration::from_secs_f64(args.max_wait));
        wait_for(
            &progress,
            expected,
            Duration::from_secs_f64(args.wait),
            overall,
        )
        .await;
    }
    stop_subs.cancel();
    let mut tallies = Vec::new();
    while let Some(t) = subs.join_next().await {
        tallies.push(t.context("subscriber task")??);
    }

    let report = Report::new(&args, &sent, published, &per_publisher, tallies);
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if report.failed > 0 || report.missing > 0 {
        return Err(anyhow::Error::new(Quiet(1)));
    }
    Ok(())
}

/// Connect every publisher, start them together, and wait for every verdict.
async fn publish_all(args: &Args, opts: &MqttOptions, qos: QoS) -> anyhow::Result<Vec<Sent>> {
    let n = args.publishers;
    let barrier = Arc::new(Barrier::new(n as usize));
    let per_rate = if args.rate > 0.0 {
        Some(args.rate / f64::from(n))
    } else {
        None
    };
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let mut o = opts.clone();
        o.client_id = format!("{}-p{i}", opts.client_id);
        let plan = Plan {
            index: i,
            topic: Arc::from(format!("{}/{i}", args.topic)),
            qos,
            size: args.size,
            count: args.duration.map_or(Some(args.count), |_| None),
            duration: args.duration.map(Duration::from_secs_f64),
            rate: per_rate,
        };
        tasks.spawn(publisher(o, plan, barrier.clone()));
    }
    let mut out: Vec<(u32, Sent)> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.context("publisher task")??);
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, s)| s).collect())
}

struct Plan {
    index: u32,
    topic: Arc<str>,
    qos: QoS,
    size: usize,
    count: Option<u64>,
    duration: Option<Duration>,
    rate: Option<f64>,
}

async fn publisher(
    opts: MqttOptions,
    plan: Plan,
    barrier: Arc<Barrier>,
) -> anyhow::Result<(u32, Sent)> {
    let (client, _deliveries, event_loop) = client::new(opts)?;
    let shutdown = CancellationToken::new();
    let loop_task = tokio::spawn(event_loop.run(shutdown.clone()));
    let connected = wait_connected(&client, false).await;
    // Everyone reaches the barrier, connected or not, so no publisher waits forever.
    barrier.wait().await;
    connected.context("publisher cannot connect")?;

    // Verdicts are awaited in order by a second task while publishing goes on.
    let (htx, mut hrx) = mpsc::channel::<PublishHandle>(65_536);
    let checker = tokio::spawn(async move {
        let mut s = Sent::default();
        while let Some(h) = hrx.recv().await {
            match h.await {
                Verdict::Acknowledged => s.acknowledged += 1,
                other => {
                    s.failed += 1;
                    if s.first_failure.is_none() {
                        s.first_failure = Some(format!("{other:?}"));
                    }
                }
            }
        }
        s
    });

    let start = Instant::now();
    let mut buf = Vec::with_capacity(plan.size.max(64));
    let mut seq = 0u64;
    loop {
        if plan.count.is_some_and(|c| seq >= c)
            || plan.duration.is_some_and(|d| start.elapsed() >= d)
        {
            break;
        }
        if let Some(rate) = plan.rate {
            // Message `seq` is due at start + seq/rate; catch up in bursts after a late wake.
            let due = start + Duration::from_secs_f64(seq as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let stamp = Stamp {
            publisher: plan.index,
            seq,
            sent_ns: payload::now_ns(),
        };
        payload::encode(stamp, plan.size, &mut buf);
        let p = Publish {
            topic: plan.topic.clone(),
            payload: Bytes::copy_from_slice(&buf),
            qos: plan.qos,
            retain: false,
            dup: false,
            pid: None,
            props: PublishProps::default(),
        };
        let h = client.publish(p).await?;
        if htx.send(h).await.is_err() {
            break;
        }
        seq += 1;
    }
    drop(htx);
    drop(client);
    let mut s = checker.await?;
    s.sent = seq;
    // The loop ends by itself once the handles are gone and nothing is in flight.
    if tokio::time::timeout(Duration::from_secs(10), loop_task)
        .await
        .is_err()
    {
        shutdown.cancel();
    }
    Ok((plan.index, s))
}

async fn subscriber(
    opts: MqttOptions,
    filter: String,
    qos: QoS,
    ready: mpsc::Sender<anyhow::Result<()>>,
    progress: Arc<Vec<AtomicU64>>,
    index: usize,
    stop: CancellationToken,
) -> anyhow::Result<Tally> {
    let (client, mut deliveries, event_loop) = client::new(opts)?;
    let shutdown = CancellationToken::new();
    let loop_task = tokio::spawn(event_loop.run(shutdown.clone()));
    let subscribed = async {
        wait_connected(&client, false).await?;
        let codes = client.subscribe(vec![(filter.clone(), qos)]).await?;
        match codes.first() {
            Some(c) if *c < 0x80 => Ok(()),
            Some(c) => Err(anyhow!(
                "broker refused the subscription to '{filter}': {} (0x{c:02x})",
                client::reason_name(*c)
            )),
            None => Err(anyhow!("broker answered no code for '{filter}'")),
        }
    }
    .await;
    let failed = subscribed.is_err();
    let _ = ready.send(subscribed).await;
    let mut tally = Tally::default();
    if !failed {
        loop {
            let d = tokio::select! {
                d = deliveries.recv() => d,
                _ = stop.cancelled() => None,
            };
            let Some(d) = d else { break };
            tally.record(payload::decode(&d.publish.payload));
            if let Some(t) = d.ack {
                client.ack(t);
            }
            progress[index].store(tally.distinct, Ordering::Relaxed);
        }
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), loop_task).await;
    Ok(tally)
}

/// Until every subscriber has `expected` distinct messages, no progress for `idle`, or
/// `overall` has passed.
async fn wait_for(
    progress: &[AtomicU64],
    expected: u64,
    idle: Duration,
    overall: Option<Duration>,
) {
    let start = Instant::now();
    let total = || {
        progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let want = expected * progress.len() as u64;
    let (mut last, mut last_change) = (total(), Instant::now());
    loop {
        let now = total();
        if now >= want {
            return;
        }
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
        // A counter waits for the first message however long; then idleness ends it.
        let idle_counts = now > 0 || overall.is_none();
        if (idle_counts && last_change.elapsed() >= idle)
            || overall.is_some_and(|o| start.elapsed() >= o)
        {
            return;
        }
        // Idleness is a span of time with no new message, so it can only be seen by a
        // clock; rates use the receipt timestamps, so the 5 ms poll only delays the return.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The summary printed at the end.
struct Report {
    publishers: u32,
    subscribers: u32,
    qos: u8,
    size: usize,
    sent: u64,
    acknowledged: u64,
    failed: u64,
    first_failure: Option<String>,
    publish_secs: f64,
    expected_per_subscriber: u64,
    received: u64,
    duplicates: u64,
    missing: u64,
    foreign: u64,
    receive_secs: f64,
    first_receipt_ns: u64,
    last_receipt_ns: u64,
    latency: Option<Percentiles>,
}

impl Report {
    fn new(
        args: &Args,
        sent: &[Sent],
        published: Duration,
        per_publisher: &[u64],
        tallies: Vec<Tally>,
    ) -> Report {
        let first = tallies.iter().filter_map(|t| t.first).min();
        let last = tallies.iter().filter_map(|t| t.last).max();
        let mut latencies: Vec<u64> = Vec::new();
        for t in &tallies {
            latencies.extend_from_slice(&t.latencies_us);
        }
        Report {
            publishers: args.publishers,
            subscribers: args.subscribers,
            qos: args.qos,
            size: args.size,
            sent: sent.iter().map(|s| s.sent).sum(),
            acknowledged: sent.iter().map(|s| s.acknowledged).sum(),
            failed: sent
                .iter()
                .map(|s| s.failed + (s.sent - s.acknowledged - s.failed))
                .sum(),
            first_failure: sent.iter().find_map(|s| s.first_failure.clone()),
            publish_secs: published.as_secs_f64(),
            expected_per_subscriber: per_publisher.iter().sum(),
            received: tallies.iter().map(|t| t.distinct).sum(),
            duplicates: tallies.iter().map(|t| t.duplicates).sum(),
            missing: tallies.iter().map(|t| t.missing(per_publisher)).sum(),
            foreign: tallies.iter().map(|t| t.foreign).sum(),
            receive_secs: match (first, last) {
                (Some(f), Some(l)) => (l - f).as_secs_f64(),
                _ => 0.0,
            },
            first_receipt_ns: tallies
                .iter()
                .map(|t| t.first_ns)
                .filter(|n| *n > 0)
                .min()
                .unwrap_or(0),
            last_receipt_ns: tallies.iter().map(|t| t.last_ns).max().unwrap_or(0),
            latency: Percentiles::of(&mut latencies),
        }
    }

    fn rate(n: u64, secs: f64) -> f64 {
        if secs > 0.0 { n as f64 / secs } else { 0.0 }
    }

    fn json(&self) -> serde_json::Value {
        let latency = self
            .latency
            .map(|l| serde_json::json!({"p50": l.p50, "p90": l.p90, "p99": l.p99, "max": l.max}));
        serde_json::json!({
            "publishers": self.publishers,
            "subscribers": self.subscribers,
            "qos": self.qos,
            "size": self.size,
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "failed": self.failed,
            "first_failure": self.first_failure,
            "publish_secs": self.publish_secs,
            "publish_rate": Self::rate(self.acknowledged, self.publish_secs),
            "expected_per_subscriber": self.expected_per_subscriber,
            "received": self.received,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "foreign": self.foreign,
            "receive_secs": self.receive_secs,
            "receive_rate": Self::rate(self.received, self.receive_secs),
            "first_receipt_ns": self.first_receipt_ns,
            "last_receipt_ns": self.last_receipt_ns,
            "latency_us": latency,
        })
    }

    fn text(&self) -> String {
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        if self.publishers > 0 {
            line(format!(
                "published  {} of {} confirmed at QoS {} by {} publisher(s) in {:.3} s: {:.0} msg/s",
                self.acknowledged,
                self.sent,
                self.qos,
                self.publishers,
                self.publish_secs,
                Self::rate(self.acknowledged, self.publish_secs)
            ));
        }
        if let Some(f) = &self.first_failure {
            line(format!("failed     {} (first: {f})", self.failed));
        }
        if self.subscribers > 0 {
            line(format!(
                "received   {} of {} by {} subscriber(s) in {:.3} s: {:.0} msg/s",
                self.received,
                self.expected_per_subscriber * u64::from(self.subscribers),
                self.subscribers,
                self.receive_secs,
                Self::rate(self.received, self.receive_secs)
            ));
            line(format!(
                "missing    {}   duplicates {}   foreign {}",
                self.missing, self.duplicates, self.foreign
            ));
            if let Some(l) = self.latency {
                line(format!(
                    "latency    p50 {}   p90 {}   p99 {}   max {}",
                    us(l.p50),
                    us(l.p90),
                    us(l.p99),
                    us(l.max)
                ));
            }
        }
        s
    }
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} ms", v as f64 / 1000.0)
    } else {
        format!("{v} µs")
    }
}
