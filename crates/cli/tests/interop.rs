//! The interop matrix: the same end-to-end scenarios against six brokers.
//!
//! One test function per broker starts that broker privately (testkit's [`MqttBroker`]
//! launchers: free ports, temporary data, killed on drop) and runs every [`Scenario`]
//! against it in turn, each with its own topics and client ids. A scenario drives the real
//! `mqlink run` daemon (HTTP events in), `mqlink sub` or a connector, checks what arrived
//! with the reference `mosquitto_sub`, and returns the [`Outcome`] it observed. Every
//! scenario × broker cell has a fixed expected outcome in [`expected`]: pass, degraded
//! (how) or not supported by the broker (why). A deviation fails the test, after every
//! scenario ran, with the whole row in the message.
//!
//! Each test writes its row to `$CARGO_TARGET_TMPDIR/interop/<broker>.json`;
//! `scripts/interop-table.py` renders them (with the broker versions) into
//! `docs/INTEROP.md`, and `scripts/test.sh` fails when the committed file differs.

mod common;

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use mqlink_testkit::{
    Aedes, Amqtt, DENIED_PREFIX, Mosquitto, MosquittoSub, MqlinkBroker, MqttBroker, NatsMqtt,
    PeerOptions, RabbitMq, TlsMaterial, mosquitto_pub_with_stdin, wait_until,
};

/// The brokers of the matrix, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mqlink,
    Mosquitto,
    Nats,
    RabbitMq,
    Amqtt,
    Aedes,
}

impl Kind {
    fn start(self, options: &PeerOptions) -> Box<dyn MqttBroker> {
        match self {
            Kind::Mqlink => Box::new(MqlinkBroker::start(
                Path::new(env!("CARGO_BIN_EXE_mqlink")),
                options,
            )),
            Kind::Mosquitto => Box::new(Mosquitto::start_peer(options)),
            Kind::Nats => Box::new(NatsMqtt::start(options)),
            Kind::RabbitMq => Box::new(RabbitMq::start(options)),
            Kind::Amqtt => Box::new(Amqtt::start(options)),
            Kind::Aedes => Box::new(Aedes::start(options)),
        }
    }

    /// The `broker.protocol` the suite configures: brokers that neither speak MQTT 5 nor
    /// refuse it (RabbitMQ 3.10 closes the connection, amqtt 0.12 never answers) need
    /// 3.1.1, or mqlink keeps trying 5 and never connects (see `connect`).
    fn protocol(self) -> &'static str {
        match self {
            Kind::RabbitMq | Kind::Amqtt => "3.1.1",
            _ => "5",
        }
    }

    /// Whether the broker keeps sessions and queued messages across its own restart.
    fn keeps_state_across_restart(self) -> bool {
        !matches!(self, Kind::Amqtt | Kind::Aedes)
    }
}

/// The scenarios, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Connect,
    QosRoundTrip,
    RetainedAndClear,
    WillOnKill,
    Lifecycle,
    SessionResume,
    SharedSubscription,
    BrokerRestart,
    DeniedPublish,
    Tls,
    ConnectorAckAfterSink,
}

const SCENARIOS: [Scenario; 11] = [
    Scenario::Connect,
    Scenario::QosRoundTrip,
    Scenario::RetainedAndClear,
    Scenario::WillOnKill,
    Scenario::Lifecycle,
    Scenario::SessionResume,
    Scenario::SharedSubscription,
    Scenario::BrokerRestart,
    Scenario::DeniedPublish,
    Scenario::Tls,
    Scenario::ConnectorAckAfterSink,
];

impl Scenario {
    fn title(self) -> &'static str {
        match self {
            Scenario::Connect => "connect: MQTT 5, else 3.1.1",
            Scenario::QosRoundTrip => "QoS 0/1/2 round trip",
            Scenario::RetainedAndClear => "retained message, then cleared",
            Scenario::WillOnKill => "will on kill -9",
            Scenario::Lifecycle => "birth / clean-shutdown lifecycle",
            Scenario::SessionResume => "persistent session: messages queued while away",
            Scenario::SharedSubscription => "shared subscription ($share)",
            Scenario::BrokerRestart => "broker restart mid-stream",
            Scenario::DeniedPublish => "denied publish (broker ACL)",
            Scenario::Tls => "TLS",
            Scenario::ConnectorAckAfterSink => "connector: ack after the sink, kill -9",
        }
    }

    fn slug(self) -> String {
        format!("{self:?}").to_lowercase()
    }
}

/// What a scenario observed; compared with [`expected`] as a whole, texts included.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Pass,
    Degraded(&'static str),
    Unsupported(&'static str),
    /// Expected only: the run either passes or shows this degradation (a race the suite
    /// cannot pin down, e.g. which messages a broker had in flight when it stopped). The
    /// table shows this expectation, not the run's draw, so it stays the same run to run.
    Intermittent(&'static str),
    /// Something the suite has no expectation for (a panic, a timeout): always a deviation.
    Failed(String),
}

const V311_ONLY: &str = "MQTT 3.1.1: the broker refuses MQTT 5 and mqlink falls back (refusals of single messages cannot be seen)";
const NEEDS_311: &str = "needs `protocol: 3.1.1`: the broker neither speaks MQTT 5 nor refuses it (broker at fault: RabbitMQ 3.10 closes the connection, amqtt 0.12 never answers a CONNECT with properties), so with the default mqlink keeps trying 5 and never connects";
const QOS2_AS_QOS1: &str = "QoS 2 is acknowledged as QoS 1 (PUBACK): delivered, at least once";
const QOS2_REFUSED: &str = "the broker closes the connection on a QoS 2 publish; mqlink dead-letters it after 3 closes, the rest flow";
const IN_MEMORY: &str = "the broker keeps no state across its restart: what it had queued for the offline subscriber is lost in the broker; mqlink had every event acknowledged after the restart";
const DENIED_SILENT: &str = "the broker acknowledges the denied message and drops it (3.1.1 has no refusal code): mqlink counts it delivered";
const DENIED_BY_CLOSE: &str = "the broker closes the connection on the denied message (3.1.1); mqlink dead-letters it after 3 closes, the rest flow";
const RESTART_LOSS: &str = "broker at fault: in some runs it loses QoS 1 messages it had acknowledged (PUBACK) to mqlink: its persistent subscriber never gets them after the broker's restart (NATS v2.9: about 5% of 3,000). mqlink had every event acknowledged and dead-lettered none";
const NO_OFFLINE_QUEUE: &str = "the broker keeps no messages for a persistent session while its client is away (amqtt 0.12 queues nothing for offline sessions)";
const NO_OFFLINE_QUEUE_CRASH: &str = "broker at fault: it keeps no messages for a persistent session while its client is away, so what it had in flight to the crashed connector and what was published meanwhile is lost in the broker; live messages flow again after the restart";
const NO_ACL: &str = "no access control in the broker";
const NO_SHARED: &str = "no shared subscriptions: `$share/...` is taken as an ordinary filter";

/// The fixed expectation for every cell.
fn expected(kind: Kind, scenario: Scenario) -> Outcome {
    use Kind::*;
    use Outcome::*;
    use Scenario::*;
    match (scenario, kind) {
        (Connect, Nats | Aedes) => Degraded(V311_ONLY),
        (Connect, RabbitMq | Amqtt) => Degraded(NEEDS_311),
        (QosRoundTrip, RabbitMq) => Degraded(QOS2_AS_QOS1),
        (QosRoundTrip, Nats) => Degraded(QOS2_REFUSED),
        (SharedSubscription, Nats | RabbitMq | Amqtt | Aedes) => Unsupported(NO_SHARED),
        (BrokerRestart, Amqtt | Aedes) => Degraded(IN_MEMORY),
        // mqlink broker lost a few in early runs: its writer fell behind and a graceful stop
        // did not wait for it (vendor/mqtt5/PATCHES.md, patch 5); now it must pass.
        (BrokerRestart, Nats) => Intermittent(RESTART_LOSS),
        (SessionResume, Amqtt) => Unsupported(NO_OFFLINE_QUEUE),
        (ConnectorAckAfterSink, Amqtt) => Degraded(NO_OFFLINE_QUEUE_CRASH),
        (DeniedPublish, Mqlink) => Unsupported(NO_ACL),
        (DeniedPublish, Amqtt | Nats) => Degraded(DENIED_SILENT),
        (DeniedPublish, Aedes | RabbitMq) => Degraded(DENIED_BY_CLOSE),
        _ => Pass,
    }
}

/// A scenario's own names: topics under `interop/<broker>/<scenario>/`, client ids
/// `interop-<broker>-<scenario>-...`, so that scenarios never see each other's traffic.
struct Ctx<'a> {
    kind: Kind,
    broker: &'a mut dyn MqttBroker,
    prefix: String,
    id: String,
}

impl Ctx<'_> {
    fn topic(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    fn client_id(&self, role: &str) -> String {
        format!("{}-{role}", self.id)
    }

    /// `mosquitto_sub` (MQTT 3.1.1, spoken by every broker here) on `filter`, ready once it
    /// received a probe on `filter`'s probe topic.
    fn watch(&self, filter: &str, extra: &[&str]) -> MosquittoSub {
        let probe = self.topic("probe");
        let mut args: Vec<String> = vec!["-t".into(), filter.into(), "-t".into(), probe.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        MosquittoSub::start_ready(&self.broker.client_args(), &args, &probe)
    }

    /// The daemon's config: this broker, its protocol ([`Kind::protocol`]), fast reconnects,
    /// a 3 s connect timeout, `routes` and `extra` YAML.
    fn daemon_yaml(&self, url: &str, routes: &str, extra: &str) -> String {
        format!(
            "broker:\n  url: '{url}'\n  client_id: '{}'\n  protocol: '{}'\n  connect_timeout: 3s\n  reconnect: {{min: 100ms, max: 1s}}\n{extra}routes:\n{routes}",
            self.client_id("daemon"),
            self.kind.protocol()
        )
    }
}

/// Lines of a subscriber that are not probes.
fn payloads(sub: &MosquittoSub) -> Vec<String> {
    sub.lines()
        .into_iter()
        .filter(|l| !l.contains("probe"))
        .collect()
}

/// Sum of every series of a metric family (all label values).
fn metric_total(d: &Daemon, name: &str) -> f64 {
    metrics(d)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn spool_records(d: &Daemon) -> u64 {
    let (_, text) = http(d.http_port, "GET", "/readyz", &[], b"");
    json_body(&text)["spool"]["records"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// Waits until the daemon's spool is empty: every message acknowledged or dead-lettered.
fn drained(d: &Daemon, timeout: Duration) -> bool {
    wait_until(Instant::now() + timeout, || spool_records(d) == 0)
}

fn post_events(d: &Daemon, event: &str, n: usize) {
    for i in 0..n {
        let (s, v) = d.post(&format!("/v1/events/{event}"), &format!("{{\"n\":{i}}}"));
        assert_eq!(s, 202, "{v}");
    }
}

/// What the daemon logged about the protocol it ended up with.
fn fell_back(d: &Daemon) -> bool {
    d.log().contains("using MQTT 3.1.1")
}

fn connect(c: &mut Ctx) -> Outcome {
    let sub = c.watch(&c.topic("#"), &["-q", "1"]);
    let routes = format!(
        "  - {{match: ['*'], topic: '{}/{{event}}', qos: 1}}\n",
        c.prefix
    );
    // mqlink's default first: MQTT 5, falling back to 3.1.1 when the broker refuses it.
    let default_yaml = c
        .daemon_yaml(&c.broker.url(), &routes, "")
        .replace(&format!("  protocol: '{}'\n", c.kind.protocol()), "");
    let mut d = Daemon::start(&default_yaml);
    let ready = || http(d.http_port, "GET", "/readyz", &[], b"").0 == 200;
    let needs_311 = !wait_until(Instant::now() + Duration::from_secs(12), ready);
    if needs_311 {
        assert!(d.log().contains("cannot connect"), "{}", d.log());
        d.kill();
        d = Daemon::start(&c.daemon_yaml(&c.broker.url(), &routes, ""));
    }
    post_events(&d, "hello", 3);
    // Probes are not lines: three events, three lines.
    let got = sub.wait_for_lines(3, T + T);
    assert_eq!(got.len(), 3, "{got:?}\n{}", d.log());
    if needs_311 {
        Outcome::Degraded(NEEDS_311)
    } else if fell_back(&d) {
        Outcome::Degraded(V311_ONLY)
    } else {
        Outcome::Pass
    }
}

fn qos_round_trip(c: &mut Ctx) -> Outcome {
    const N: usize = 5;
    let sub = c.watch(&c.topic("#"), &["-q", "2", "-v"]);
    let routes = format!(
        "  - {{match: [q0], topic: '{p}/q0', qos: 0}}\n  - {{match: [q1], topic: '{p}/q1', qos: 1}}\n  - {{match: [q2], topic: '{p}/q2', qos: 2}}\n",
        p = c.prefix
    );
    let d = Daemon::start(&c.daemon_yaml(&c.broker.url(), &routes, ""));
    for q in ["q0", "q1", "q2"] {
        post_events(&d, q, N);
    }
    // Bounded: a broker that refuses QoS 2 by closing costs a few reconnects per message.
    assert!(
        drained(&d, Duration::from_secs(90)),
        "spool never drained (looping?):\n{}",
        d.log()
    );
    let dead = metric_total(&d, "mqlink_dead_lettered_total");
    let want = if dead > 0.0 { 2 * N } else { 3 * N };
    let ok = wait_until(Instant::now() + T, || payloads(&sub).len() >= want);
    let got = payloads(&sub);
    assert!(ok, "{} of {want} arrived: {got:?}\n{}", got.len(), d.log());
    let per = |q: &str| got.iter().filter(|l| l.contains(&format!("/{q} "))).count();
    assert_eq!((per("q0"), per("q1")), (N, N), "{got:?}");
    if dead > 0.0 {
        assert_eq!(
            dead, N as f64,
            "only the QoS 2 messages may be dead-lettered"
        );
        assert_eq!(per("q2"), 0);
        return Outcome::Degraded(QOS2_REFUSED);
    }
    assert!(per("q2") >= N, "{got:?}");
    if d.log().contains("with a PUBACK: it has no QoS 2") {
        // RabbitMQ 3.10 answers a QoS 2 PUBLISH with a PUBACK: the message is delivered,
        // with QoS 1's at-least-once, and mqlink says so in a WARN.
        return Outcome::Degraded(QOS2_AS_QOS1);
    }
    Outcome::Pass
}

fn retained_and_clear(c: &mut Ctx) -> Outcome {
    let topic = c.topic("kept");
    let routes = format!(
        "  - {{match: ['*'], topic: '{}/{{event}}', qos: 1}}\n",
        c.prefix
    );
    let d = Daemon::start(&c.daemon_yaml(&c.broker.url(), &routes, ""));
    let publish = |payload: &str| {
        let body =
            serde_json::json!({"topic": topic, "payload": payload, "qos": 1, "retain": true});
        let (s, v) = d.post("/v1/publish", &body.to_string());
        assert_eq!(s, 202, "{v}");
        assert!(drained(&d, T), "not acknowledged:\n{}", d.log());
    };
    publish("kept");
    // A subscriber arriving later gets it.
    let later = c.watch(&topic, &["-q", "1"]);
    assert_eq!(later.wait_for_lines(1, T), ["kept"]);
    // An empty retained message clears it: a new subscriber sees only its probe.
    publish("");
    let after = c.watch(&topic, &["-q", "1"]);
    // The retained message would have come before the probe, which is not a line.
    let lines = after.lines();
    assert!(lines.is_empty(), "retained message not cleared: {lines:?}");
    Outcome::Pass
}

/// How long a birth message may take. The first connect to NATS's MQTT gateway creates
/// JetStream streams and consumers for the session; on a loaded 2-core machine that once
/// took longer than the common 20 s (`T`) while the same test passed alone. A deadline, not
/// a sleep: the wait ends when the message arrives.
const BIRTH: Duration = Duration::from_secs(60);

fn lifecycle_yaml(c: &Ctx) -> String {
    let routes = format!(
        "  - {{match: ['*'], topic: '{}/{{event}}', qos: 1}}\n",
        c.prefix
    );
    let extra = format!(
        "  lifecycle: {{topic: '{}', online: online, offline: offline, retain: true}}\n",
        c.topic("status")
    );
    c.daemon_yaml(&c.broker.url(), &routes, &extra)
}

fn will_on_kill(c: &mut Ctx) -> Outcome {
    let sub = c.watch(&c.topic("status"), &["-q", "1"]);
    let mut d = Daemon::start(&lifecycle_yaml(c));
    let ok = wait_until(Instant::now() + BIRTH, || {
        payloads(&sub).last().map(String::as_str) == Some("online")
    });
    assert!(ok, "no birth message: {:?}\n{}", sub.lines(), d.log());
    d.kill();
    let ok = wait_until(Instant::now() + T + Duration::from_secs(60), || {
        payloads(&sub).last().map(String::as_str) == Some("offline")
    });
    assert!(ok, "no will after kill -9: {:?}", sub.lines());
    Outcome::Pass
}

fn lifecycle(c: &mut Ctx) -> Outcome {
    let sub = c.watch(&c.topic("status"), &["-q", "1"]);
    let mut d = Daemon::start(&lifecycle_yaml(c));
    let ok = wait_until(Instant::now() + BIRTH, || {
        payloads(&sub).last().map(String::as_str) == Some("online")
    });
    assert!(ok, "no birth message: {:?}\n{}", sub.lines(), d.log());
    assert!(d.terminate().success(), "{}", d.log());
    let ok = wait_until(Instant::now() + T, || {
        payloads(&sub).last().map(String::as_str) == Some("offline")
    });
    assert!(ok, "no clean-shutdown message: {:?}", sub.lines());
    // The retained status is "offline" for whoever looks now.
    let late = MosquittoSub::start(&{
        let mut a = c.broker.client_args();
        a.extend([
            "-t".to_owned(),
            c.topic("status"),
            "-C".into(),
            "1".into(),
            "-W".into(),
            "10".into(),
        ]);
        a
    });
    assert_eq!(late.wait_for_lines(1, T), ["offline"]);
    Outcome::Pass
}

/// A connector with a persistent session writing JSON lines to `file`.
fn connector_yaml(c: &Ctx, file: &Path) -> String {
    let routes = format!(
        "  - {{match: ['*'], topic: '{}/ev/{{event}}', qos: 1}}\n",
        c.prefix
    );
    let mut y = c.daemon_yaml(&c.broker.url(), &routes, "");
    y.push_str(&format!(
        "connectors:\n  - name: tofile\n    subscribe: ['{}']\n    qos: 1\n    session: persistent\n    client_id: '{}'\n    format: json\n    sink: {{file: {{path: '{}'}}}}\n",
        c.topic("in/#"),
        c.client_id("connector"),
        file.display()
    ));
    y
}

/// Payloads in a connector's output file.
fn file_payloads(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| match &v["payload"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// Publishes `lines` at QoS 1 with `mosquitto_pub -l`.
fn publish_lines(c: &Ctx, topic: &str, lines: &[String]) {
    let mut args = c.broker.client_args();
    args.extend([
        "-t".to_owned(),
        topic.to_owned(),
        "-q".into(),
        "1".into(),
        "-l".into(),
    ]);
    let input = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let out = mosquitto_pub_with_stdin(&args, input.as_bytes());
    assert_ok(&out, "mosquitto_pub -l");
}

/// Starts the connector daemon and waits until its subscription provably works.
fn connector_ready(c: &Ctx, file: &Path) -> Daemon {
    let d = Daemon::start(&connector_yaml(c, file));
    let probe_topic = c.topic("in/probe");
    let ok = wait_until(Instant::now() + T, || {
        publish_lines(c, &probe_topic, &["probe".to_owned()]);
        file_payloads(file).iter().any(|p| p == "probe")
    });
    assert!(ok, "connector never received a probe:\n{}", d.log());
    d
}

fn session_resume(c: &mut Ctx) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.jsonl");
    let mut d = connector_ready(c, &file);
    assert!(d.terminate().success(), "{}", d.log());
    let want: Vec<String> = (0..20).map(|i| format!("away-{i}")).collect();
    publish_lines(c, &c.topic("in/away"), &want);
    d.start_again();
    let ok = wait_until(Instant::now() + T, || {
        let got: HashSet<String> = file_payloads(&file).into_iter().collect();
        want.iter().all(|w| got.contains(w))
    });
    if ok {
        return Outcome::Pass;
    }
    let got: HashSet<String> = file_payloads(&file).into_iter().collect();
    assert!(
        want.iter().all(|w| !got.contains(w)) && live_again(c, &file),
        "some queued messages missing: {got:?}\n{}",
        d.log()
    );
    Outcome::Unsupported(NO_OFFLINE_QUEUE)
}

/// Whether a message published now reaches the connector's file.
fn live_again(c: &Ctx, file: &Path) -> bool {
    let topic = c.topic("in/live");
    wait_until(Instant::now() + T, || {
        publish_lines(c, &topic, &["live-again".to_owned()]);
        file_payloads(file).iter().any(|p| p == "live-again")
    })
}

fn connector_ack_after_sink(c: &mut Ctx) -> Outcome {
    const N: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.jsonl");
    let mut d = connector_ready(c, &file);
    let want: Vec<String> = (0..N).map(|i| format!("m-{i}")).collect();
    publish_lines(c, &c.topic("in/a"), &want[..N / 2]);
    // Crash while the first half is being written.
    let _ = wait_until(Instant::now() + T, || file_payloads(&file).len() > 20);
    d.kill();
    publish_lines(c, &c.topic("in/a"), &want[N / 2..]);
    d.start_again();
    let ok = wait_until(Instant::now() + Duration::from_secs(60), || {
        let got: HashSet<String> = file_payloads(&file).into_iter().collect();
        want.iter().all(|w| got.contains(w))
    });
    if ok {
        return Outcome::Pass;
    }
    let got: HashSet<String> = file_payloads(&file).into_iter().collect();
    let missing: Vec<_> = want.iter().filter(|w| !got.contains(*w)).collect();
    assert!(
        live_again(c, &file),
        "{} missing after kill -9 and the connector is not live again: {:?}\n{}",
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>(),
        d.log()
    );
    eprintln!(
        "{} of {N} missing after kill -9 (live again): the broker lost them",
        missing.len()
    );
    Outcome::Degraded(NO_OFFLINE_QUEUE_CRASH)
}

fn shared_subscription(c: &mut Ctx) -> Outcome {
    const N: usize = 20;
    let filter = format!("$share/g{}/{}", c.id.replace('-', ""), c.topic("work/#"));
    let url = c.broker.url();
    let mut members: Vec<MqlinkSub> = (0..2)
        .map(|m| {
            let probe = c.topic(&format!("probe{m}"));
            let args = c.broker.client_args();
            MqlinkSub::start_ready(
                &[
                    "--url", &url, "-t", &filter, "-t", &probe, "-q", "1", "-V", "311",
                ],
                || mpub(&args, &["-t", &probe, "-m", "probe"]),
            )
        })
        .collect();
    let want: Vec<String> = (0..N).map(|i| format!("job-{i}")).collect();
    publish_lines(c, &c.topic("work/x"), &want);
    // Each member takes what the broker gives it, line by line, until 3 s pass without
    // the total being reached.
    let mut counts = Vec::new();
    for m in &mut members {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut n = 0;
        while n < N {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero()
                || std::panic::catch_unwind(AssertUnwindSafe(|| m.wait_for(n + 1, left))).is_err()
            {
                break;
            }
            n += 1;
        }
        counts.push(n);
    }
    match counts.as_slice() {
        [a, b] if a + b == N && *a > 0 && *b > 0 => Outcome::Pass,
        [0, 0] => Outcome::Unsupported(NO_SHARED),
        other => Outcome::Failed(format!("members received {other:?} of {N}")),
    }
}

fn broker_restart(c: &mut Ctx) -> Outcome {
    const N: usize = 3000;
    let filter = c.topic("#");
    let sub_id = c.client_id("sub");
    let sub = c.watch(&filter, &["-q", "1", "-c", "-i", &sub_id]);
    let routes = format!(
        "  - {{match: ['*'], topic: '{}/s/{{event}}', qos: 1}}\n",
        c.prefix
    );
    let d = Daemon::start(&c.daemon_yaml(&c.broker.url(), &routes, ""));
    let port = d.http_port;
    let sender = std::thread::spawn(move || {
        for batch in 0..N / 100 {
            let body: String = (0..100)
                .map(|i| format!("{{\"event\":\"s\",\"n\":{}}}\n", batch * 100 + i))
                .collect();
            let (s, text) = http(
                port,
                "POST",
                "/v1/events",
                &[("Content-Type", "application/x-ndjson")],
                body.as_bytes(),
            );
            assert_eq!(s, 202, "{text}");
        }
    });
    assert!(
        wait_until(Instant::now() + T, || payloads(&sub).len() >= N / 10),
        "stream did not start:\n{}",
        d.log()
    );
    c.broker.restart();
    sender.join().unwrap();
    assert!(
        drained(&d, Duration::from_secs(60)),
        "spool never drained:\n{}",
        d.log()
    );
    assert_eq!(metric_total(&d, "mqlink_dead_lettered_total"), 0.0);
    if !c.kind.keeps_state_across_restart() {
        return Outcome::Degraded(IN_MEMORY);
    }
    let unique = || {
        payloads(&sub)
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["n"].as_u64())
            .collect::<HashSet<u64>>()
    };
    let ok = wait_until(Instant::now() + Duration::from_secs(30), || {
        unique().len() >= N
    });
    if ok {
        return Outcome::Pass;
    }
    // mqlink had all N acknowledged (drained, nothing dead-lettered): the broker lost them.
    eprintln!("{} of {N} arrived after the broker restart", unique().len());
    Outcome::Degraded(RESTART_LOSS)
}

fn denied_publish(c: &mut Ctx) -> Outcome {
    if c.kind == Kind::Mqlink {
        return Outcome::Unsupported(NO_ACL);
    }
    let mut acl_broker = c.kind.start(&PeerOptions {
        deny_publish: true,
        ..PeerOptions::default()
    });
    let mut own = Ctx {
        kind: c.kind,
        broker: acl_broker.as_mut(),
        prefix: c.prefix.clone(),
        id: c.id.clone(),
    };
    let c = &mut own;
    let sub = c.watch(&c.topic("#"), &["-q", "1"]);
    // Whoever may read the denied topic must not see the message.
    let denied_topic = format!("{DENIED_PREFIX}/{}", c.id);
    let spy = MosquittoSub::start(&{
        let mut a = c.broker.client_args();
        a.extend([
            "-t".to_owned(),
            denied_topic.clone(),
            "-q".into(),
            "1".into(),
        ]);
        a
    });
    let routes = format!(
        "  - {{match: [bad], topic: '{DENIED_PREFIX}/{}', qos: 1}}\n  - {{match: [good], topic: '{}/ok', qos: 1}}\n",
        c.id, c.prefix
    );
    let d = Daemon::start(&c.daemon_yaml(&c.broker.url(), &routes, ""));
    post_events(&d, "bad", 1);
    post_events(&d, "good", 3);
    assert!(
        drained(&d, Duration::from_secs(60)),
        "spool never drained:\n{}",
        d.log()
    );
    let ok = wait_until(Instant::now() + T, || payloads(&sub).len() >= 3);
    assert!(
        ok,
        "allowed messages missing: {:?}\n{}",
        sub.lines(),
        d.log()
    );
    assert!(
        spy.lines().is_empty(),
        "the denied message got through: {:?}",
        spy.lines()
    );
    let m = metrics(&d);
    let dead = metric_total(&d, "mqlink_dead_lettered_total");
    if dead == 0.0 {
        Outcome::Degraded(DENIED_SILENT)
    } else if m.contains("reason_code=\"0x87\"") {
        Outcome::Pass
    } else {
        Outcome::Degraded(DENIED_BY_CLOSE)
    }
}

fn tls(c: &mut Ctx) -> Outcome {
    let material = TlsMaterial::generate();
    let broker = c.kind.start(&PeerOptions {
        tls: Some(material.clone()),
        ..PeerOptions::default()
    });
    let url = broker.tls_url().expect("a TLS listener was configured");
    let port = url.rsplit(':').next().unwrap().to_owned();
    let tls_args = vec![
        "-h".to_owned(),
        "localhost".into(),
        "-p".into(),
        port,
        "--cafile".into(),
        material.ca_file().display().to_string(),
    ];
    let probe = c.topic("probe");
    let sub = MosquittoSub::start_ready(&tls_args, &["-t", &c.topic("#"), "-q", "1"], &probe);
    let routes = format!(
        "  - {{match: ['*'], topic: '{}/{{event}}', qos: 1}}\n",
        c.prefix
    );
    let extra = format!("  tls: {{ca_file: '{}'}}\n", material.ca_file().display());
    let d = Daemon::start(&c.daemon_yaml(&url, &routes, &extra));
    post_events(&d, "secure", 3);
    let ok = wait_until(Instant::now() + T, || payloads(&sub).len() >= 3);
    assert!(ok, "{:?}\n{}\n{}", sub.lines(), d.log(), broker.log());
    drop((d, sub, broker));
    Outcome::Pass
}

fn run_scenario(c: &mut Ctx, scenario: Scenario) -> Outcome {
    match scenario {
        Scenario::Connect => connect(c),
        Scenario::QosRoundTrip => qos_round_trip(c),
        Scenario::RetainedAndClear => retained_and_clear(c),
        Scenario::WillOnKill => will_on_kill(c),
        Scenario::Lifecycle => lifecycle(c),
        Scenario::SessionResume => session_resume(c),
        Scenario::SharedSubscription => shared_subscription(c),
        Scenario::BrokerRestart => broker_restart(c),
        Scenario::DeniedPublish => denied_publish(c),
        Scenario::Tls => tls(c),
        Scenario::ConnectorAckAfterSink => connector_ack_after_sink(c),
    }
}

/// Runs every scenario against one broker, writes its row, and fails on any deviation.
fn matrix_row(kind: Kind) {
    let mut broker = kind.start(&PeerOptions::default());
    let version = broker.version();
    let name = broker.name();
    let mut cells = Vec::new();
    let mut deviations = Vec::new();
    for scenario in SCENARIOS {
        let started = Instant::now();
        let mut c = Ctx {
            kind,
            broker: broker.as_mut(),
            prefix: format!("interop/{name}/{}", scenario.slug()),
            id: format!("interop-{name}-{}", scenario.slug()),
        };
        let observed =
            std::panic::catch_unwind(AssertUnwindSafe(|| run_scenario(&mut c, scenario)))
                .unwrap_or_else(|panic| {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".to_owned());
                    Outcome::Failed(msg)
                });
        let want = expected(kind, scenario);
        eprintln!(
            "interop {name} {:?}: {observed:?} in {:.1?}",
            scenario,
            started.elapsed()
        );
        let matched = match want {
            Outcome::Intermittent(how) => {
                observed == Outcome::Pass || observed == Outcome::Degraded(how)
            }
            ref other => *other == observed,
        };
        if !matched {
            deviations.push(format!(
                "{scenario:?}: expected {want:?}, observed {observed:?}"
            ));
        }
        let shown = if matched { &want } else { &observed };
        let (result, how) = match shown {
            Outcome::Pass => ("pass", String::new()),
            Outcome::Degraded(how) => ("degraded", (*how).to_owned()),
            Outcome::Unsupported(why) => ("not supported by the broker", (*why).to_owned()),
            Outcome::Intermittent(how) => ("pass, or degraded in some runs", (*how).to_owned()),
            Outcome::Failed(msg) => ("FAILED", msg.lines().next().unwrap_or("").to_owned()),
        };
        cells.push(serde_json::json!({
            "scenario": scenario.title(),
            "result": result,
            "how": how,
        }));
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop");
    std::fs::create_dir_all(&dir).unwrap();
    let row = serde_json::json!({"broker": name, "version": version, "cells": cells});
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&row).unwrap(),
    )
    .unwrap();
    assert!(
        deviations.is_empty(),
        "{name} ({version}) deviates from the expected matrix:\n{}\nbroker log tail:\n{}",
        deviations.join("\n"),
        tail(&broker.log(), 40)
    );
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn interop_mqlink_broker() {
    matrix_row(Kind::Mqlink);
}

#[test]
fn interop_mosquitto() {
    matrix_row(Kind::Mosquitto);
}

#[test]
fn interop_nats() {
    matrix_row(Kind::Nats);
}

#[test]
fn interop_rabbitmq() {
    matrix_row(Kind::RabbitMq);
}

#[test]
fn interop_amqtt() {
    matrix_row(Kind::Amqtt);
}

#[test]
fn interop_aedes() {
    matrix_row(Kind::Aedes);
}
