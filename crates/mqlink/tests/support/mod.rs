//! Shared by the sink tests: a validated connector from YAML, a running connector with its
//! counters, polling for peer state, publishing QoS 1 lines with `mosquitto_pub`.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqlink::config;
use mqlink::internals::{Connector, ConnectorError, ConnectorStats};
use mqlink_testkit::{Mosquitto, MosquittoOptions, mosquitto_pub_with_stdin};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(90);

/// The record of the Fluvio seed (docs: "MQTT Connector", Data Events), verbatim.
pub const FLUVIO_SEED: &str = r#"{"mqtt_topic":"/hfp/v2/journey/ongoing/vp/bus/0022/01151/2200/1/Espoon keskus/23:02/1160105/4/60;24/29/00/00","payload":[123,34,86,80,34,58,123,34,100,101,115,105,34,58,34,50,48,48,34,44,34,100,105,114,34,58,34,49,34,44,34,111,112,101,114,34,58,50,50,44,34,118,101,104,34,58,49,49,53,49,44,34,116,115,116,34,58,34,50,48,50,49,45,49,49,45,49,56,84,50,49,58,49,51,58,51,50,46,56,56,52,90,34,44,34,116,115,105,34,58,49,54,51,55,50,55,48,48,49,50,44,34,115,112,100,34,58,49,50,46,54,55,44,34,104,100,103,34,58,51,51,55,44,34,108,97,116,34,58,54,48,46,50,48,48,49,53,55,44,34,108,111,110,103,34,58,50,52,46,57,48,48,50,49,53,44,34,97,99,99,34,58,45,48,46,49,49,44,34,100,108,34,58,45,55,53,44,34,111,100,111,34,58,110,117,108,108,44,34,100,114,115,116,34,58,110,117,108,108,44,34,111,100,97,121,34,58,34,50,48,50,49,45,49,49,45,49,56,34,44,34,106,114,110,34,58,49,53,48,44,34,108,105,110,101,34,58,49,48,52,52,44,34,115,116,97,114,116,34,58,34,50,51,58,48,50,34,44,34,108,111,99,34,58,34,71,80,83,34,44,34,115,116,111,112,34,58,110,117,108,108,44,34,114,111,117,116,101,34,58,34,50,50,48,48,34,44,34,111,99,99,117,34,58,48,125,125]}"#;

/// The seed's MQTT topic and payload.
pub fn fluvio_seed() -> (String, String) {
    let seed: Value = serde_json::from_str(FLUVIO_SEED).unwrap();
    let topic = seed["mqtt_topic"].as_str().unwrap().to_string();
    let payload: Vec<u8> = seed["payload"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    (topic, String::from_utf8(payload).unwrap())
}

/// A validated connector (`connector` is a YAML flow mapping) for the broker at `url`.
pub fn connector_cfg(url: &str, connector: &str) -> (config::Connector, config::Broker) {
    let text = format!("broker: {{url: '{url}'}}\nconnectors:\n  - {connector}\n");
    let cfg = config::from_str(&text, config::Format::Yaml, "test.yaml")
        .unwrap_or_else(|e| panic!("config:\n{text}\n{e}"));
    (cfg.connectors[0].clone(), cfg.broker)
}

pub struct Running {
    pub stop: CancellationToken,
    pub task: JoinHandle<Result<(), ConnectorError>>,
    pub stats: Arc<ConnectorStats>,
}

impl Running {
    pub async fn start(cfg: &(config::Connector, config::Broker)) -> Running {
        let c = Connector::new(&cfg.0, &cfg.1);
        let stats = c.stats();
        let stop = CancellationToken::new();
        let task = tokio::spawn(c.run(stop.clone()));
        let r = Running { stop, task, stats };
        let stats = r.stats.clone();
        eventually("subscribed", || stats.is_subscribed()).await;
        r
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }

    pub fn acked(&self) -> u64 {
        ConnectorStats::get(&self.stats.acked)
    }
}

/// Poll `cond` (state of real peers offers no event to await) until it holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Like [`eventually`] for an async probe of a peer.
pub async fn eventually_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publish `lines` as QoS 1 messages on `topic` (mosquitto_pub -l), in chunks.
pub async fn publish_lines(broker: &Mosquitto, topic: &str, lines: Vec<String>) {
    publish_lines_with(broker, topic, lines, &[]).await;
}

/// [`publish_lines`] with extra `mosquitto_pub` arguments (e.g. `-D publish user-property`).
pub async fn publish_lines_with(
    broker: &Mosquitto,
    topic: &str,
    lines: Vec<String>,
    extra: &[&str],
) {
    let mut args = broker.client_args();
    args.extend(["-q", "1", "-t", topic, "-l"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    for chunk in lines.chunks(50_000) {
        let mut input = chunk.join("\n");
        input.push('\n');
        let args = args.clone();
        let out =
            tokio::task::spawn_blocking(move || mosquitto_pub_with_stdin(&args, input.as_bytes()))
                .await
                .unwrap();
        assert!(out.status.success(), "mosquitto_pub: {out:?}");
    }
}

/// The records-as-formatted workload of the sink tests: the Fluvio seed's message on its
/// topic, 500 numbered lines on each of `raw/a` and `raw/b` published concurrently (per-topic
/// order is what the sinks must keep), and one JSON record on `js/x`. Returns the two
/// numbered lists, in publish order.
pub async fn publish_format_workload(broker: &Mosquitto) -> (Vec<String>, Vec<String>) {
    let (seed_topic, seed_payload) = fluvio_seed();
    publish_lines(broker, &seed_topic, vec![seed_payload]).await;
    let a = numbered("a", 0..500);
    let b = numbered("b", 0..500);
    tokio::join!(
        publish_lines(broker, "raw/a", a.clone()),
        publish_lines(broker, "raw/b", b.clone())
    );
    publish_lines(broker, "js/x", vec![r#"{"t":21.5}"#.into()]).await;
    (a, b)
}

pub fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

/// `items` with repeats removed, first occurrences in order (what "lost nothing, in order,
/// maybe duplicated" is checked against).
pub fn first_occurrences(items: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .iter()
        .filter(|i| seen.insert(i.to_string()))
        .cloned()
        .collect()
}

/// The JSON lines of a dead-letter file.
pub fn dead_letters(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `cfg`'s connector on a current-thread runtime of its own while `script` runs
/// beside it (given the connector's counters), then stops the connector and waits for its
/// `run` to return. Returns that runtime: whatever the connector left on it is still
/// there, neither polled nor dropped, for the test to count
/// (`metrics().num_alive_tasks()`) and to find still open at its peers.
pub fn run_alone<S>(cfg: &(config::Connector, config::Broker), script: S) -> tokio::runtime::Runtime
where
    S: AsyncFnOnce(Arc<ConnectorStats>),
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = Connector::new(&cfg.0, &cfg.1);
    let stats = c.stats();
    let stop = CancellationToken::new();
    rt.block_on(async {
        let run = c.run(stop.clone());
        let script = async {
            eventually("subscribed", || stats.is_subscribed()).await;
            script(stats.clone()).await;
            stop.cancel();
        };
        let (res, ()) = tokio::join!(run, script);
        res.unwrap();
    });
    rt
}

/// Mosquitto options whose log shows every PUBLISH sent and PUBACK received (`log_type
/// all`), for [`assert_acks_in_arrival_order`].
pub fn logging_broker() -> MosquittoOptions {
    MosquittoOptions {
        extra_config: vec!["log_type all".into()],
        ..MosquittoOptions::default()
    }
}

/// From Mosquitto's `log_type all` log: the packet ids of the first deliveries it sent
/// to `client` (`Sending PUBLISH to ID (d0, q1, r0, mN, …`) and of the PUBACKs it
/// received from it (`Received PUBACK from ID (Mid: N, …`), each in log order.
pub fn publishes_and_pubacks(log: &str, client: &str) -> (Vec<u16>, Vec<u16>) {
    let sent_tag = format!("Sending PUBLISH to {client} (d0, ");
    let ack_tag = format!("Received PUBACK from {client} (Mid: ");
    let number = |s: &str| -> u16 {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("no packet id in: {s}"))
    };
    let (mut sent, mut acked) = (Vec::new(), Vec::new());
    for line in log.lines() {
        if let Some(i) = line.find(&sent_tag) {
            // `q1, r0, m12, 'topic', …`: the third field.
            let rest = &line[i + sent_tag.len()..];
            let m = rest.split(", ").nth(2).and_then(|f| f.strip_prefix('m'));
            sent.push(number(
                m.unwrap_or_else(|| panic!("unexpected line: {line}")),
            ));
        } else if let Some(i) = line.find(&ack_tag) {
            acked.push(number(&line[i + ack_tag.len()..]));
        }
    }
    (sent, acked)
}

/// Every PUBACK `client` sent answers the oldest unacknowledged message the broker sent
/// it: acknowledgements in arrival order (packet ids are not reused within `sent`).
pub async fn assert_acks_in_arrival_order(broker: &Mosquitto, client: &str, at_least: usize) {
    // The connector counts an acknowledgement when it hands it to its MQTT engine; the
    // broker logs it when the PUBACK arrived.
    eventually(
        &format!("{at_least} PUBACKs from {client} in the broker's log"),
        || publishes_and_pubacks(&broker.log(), client).1.len() >= at_least,
    )
    .await;
    let (sent, acked) = publishes_and_pubacks(&broker.log(), client);
    assert!(acked.len() <= sent.len(), "more PUBACKs than PUBLISHes");
    if let Some(i) = (0..acked.len()).find(|&i| acked[i] != sent[i]) {
        panic!(
            "PUBACK #{i} from {client} is for packet {} but the oldest unacknowledged is {} \
             (sent {:?}…, acked {:?}…)",
            acked[i],
            sent[i],
            &sent[i..sent.len().min(i + 10)],
            &acked[i..acked.len().min(i + 10)]
        );
    }
}
