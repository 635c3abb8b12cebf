//! Connectors end to end against real peers: private Mosquitto brokers, a NATS server with
//! JetStream, an axum HTTP server, files in temporary directories. Ports are free ports;
//! waits are on counters and files (polled), never fixed sleeps.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use mqlink::config;
use mqlink::internals::{Body, Deliver as _, NatsSink, Record};
use mqlink::internals::{Connector, ConnectorError, ConnectorStats};
use mqlink::mqtt::client::{self, MqttOptions};
use mqlink::mqtt::codec::{Publish, QoS};
use mqlink::mqtt::state::Verdict;
use mqlink::mqtt::url::BrokerUrl;
use mqlink_testkit::{Mosquitto, MosquittoOptions, MosquittoSub, Nats, mosquitto_pub_with_stdin};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

/// The record of the Fluvio seed (docs: "MQTT Connector", Data Events), verbatim.
const FLUVIO_SEED: &str = r#"{"mqtt_topic":"/hfp/v2/journey/ongoing/vp/bus/0022/01151/2200/1/Espoon keskus/23:02/1160105/4/60;24/29/00/00","payload":[123,34,86,80,34,58,123,34,100,101,115,105,34,58,34,50,48,48,34,44,34,100,105,114,34,58,34,49,34,44,34,111,112,101,114,34,58,50,50,44,34,118,101,104,34,58,49,49,53,49,44,34,116,115,116,34,58,34,50,48,50,49,45,49,49,45,49,56,84,50,49,58,49,51,58,51,50,46,56,56,52,90,34,44,34,116,115,105,34,58,49,54,51,55,50,55,48,48,49,50,44,34,115,112,100,34,58,49,50,46,54,55,44,34,104,100,103,34,58,51,51,55,44,34,108,97,116,34,58,54,48,46,50,48,48,49,53,55,44,34,108,111,110,103,34,58,50,52,46,57,48,48,50,49,53,44,34,97,99,99,34,58,45,48,46,49,49,44,34,100,108,34,58,45,55,53,44,34,111,100,111,34,58,110,117,108,108,44,34,100,114,115,116,34,58,110,117,108,108,44,34,111,100,97,121,34,58,34,50,48,50,49,45,49,49,45,49,56,34,44,34,106,114,110,34,58,49,53,48,44,34,108,105,110,101,34,58,49,48,52,52,44,34,115,116,97,114,116,34,58,34,50,51,58,48,50,34,44,34,108,111,99,34,58,34,71,80,83,34,44,34,115,116,111,112,34,58,110,117,108,108,44,34,114,111,117,116,101,34,58,34,50,50,48,48,34,44,34,111,99,99,117,34,58,48,125,125]}"#;

/// A validated connector (`connector` is a YAML flow mapping) for the broker at `url`.
fn connector_cfg(url: &str, connector: &str) -> (config::Connector, config::Broker) {
    let text = format!("broker: {{url: '{url}'}}\nconnectors:\n  - {connector}\n");
    let cfg = config::from_str(&text, config::Format::Yaml, "test.yaml")
        .unwrap_or_else(|e| panic!("config:\n{text}\n{e}"));
    (cfg.connectors[0].clone(), cfg.broker)
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<(), ConnectorError>>,
    stats: Arc<ConnectorStats>,
}

impl Running {
    async fn start(cfg: &(config::Connector, config::Broker)) -> Running {
        let c = Connector::new(&cfg.0, &cfg.1);
        let stats = c.stats();
        let stop = CancellationToken::new();
        let task = tokio::spawn(c.run(stop.clone()));
        let r = Running { stop, task, stats };
        let stats = r.stats.clone();
        eventually("subscribed", || stats.is_subscribed()).await;
        r
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Poll `cond` (state of real peers offers no event to await) until it holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Publish `lines` as QoS 1 messages on `topic` (mosquitto_pub -l), in chunks.
async fn publish_lines(broker: &Mosquitto, topic: &str, lines: Vec<String>) {
    let mut args = broker.client_args();
    args.extend(["-q", "1", "-t", topic, "-l"].map(String::from));
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

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// HTTP test server: records every accepted record; fails on demand.

#[derive(Default)]
struct HttpState {
    /// Answer 503 to this many requests first.
    fail_first: AtomicUsize,
    /// Answer 503 while set.
    failing: AtomicBool,
    failures: AtomicUsize,
    accepted: Mutex<Vec<Value>>,
    /// The payload lengths of each accepted request's records, request by request.
    requests: Mutex<Vec<Vec<usize>>>,
    /// Answer 400 to a request with a record whose payload contains this.
    refuse_marker: Mutex<Option<String>>,
    /// The number of records in each request refused for the marker.
    refused: Mutex<Vec<usize>>,
    /// 1: after the next refusal, accept one request and answer 503 to the one after
    /// (a retryable answer in the middle of the sink's search); 0 once that happened.
    unavailable_in_search: AtomicUsize,
}

impl HttpState {
    fn payloads(&self) -> Vec<String> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|r| match &r["payload"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    }
    fn accepted(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

async fn ingest(State(s): State<Arc<HttpState>>, body: Bytes) -> (StatusCode, &'static str) {
    let fail_first = s
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if fail_first || s.failing.load(Ordering::SeqCst) {
        s.failures.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "");
    }
    let Ok(Value::Array(records)) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not a JSON array");
    };
    if let Some(marker) = s.refuse_marker.lock().unwrap().as_deref()
        && records
            .iter()
            .any(|r| r["payload"].as_str().is_some_and(|p| p.contains(marker)))
    {
        s.refused.lock().unwrap().push(records.len());
        let _ = s
            .unavailable_in_search
            .compare_exchange(1, 2, Ordering::SeqCst, Ordering::SeqCst);
        return (StatusCode::BAD_REQUEST, "a record is marked bad");
    }
    if s.unavailable_in_search
        .compare_exchange(2, 0, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        s.fail_first.fetch_add(1, Ordering::SeqCst);
    }
    let lens = records
        .iter()
        .map(|r| r["payload"].as_str().map_or(0, str::len))
        .collect();
    s.requests.lock().unwrap().push(lens);
    s.accepted.lock().unwrap().extend(records);
    (StatusCode::NO_CONTENT, "")
}

async fn http_server(state: Arc<HttpState>) -> String {
    let app = Router::new()
        .route("/ingest", post(ingest))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/ingest")
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn file_sink_writes_the_fluvio_seed_record_byte_for_byte() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: fluvio, subscribe: ['/hfp/#', 'plain/#'], format: fluvio, session: clean, \
             sink: {{file: {{path: '{}'}}}}}}",
            out.display()
        ),
    );
    let seed: Value = serde_json::from_str(FLUVIO_SEED).unwrap();
    let topic = seed["mqtt_topic"].as_str().unwrap().to_string();
    let payload: Vec<u8> = seed["payload"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    let payload = String::from_utf8(payload).unwrap();

    let conn = Running::start(&cfg).await;
    publish_lines(&broker, &topic, vec![payload]).await;
    publish_lines(&broker, "plain/x", vec!["hi".into()]).await;
    eventually("two lines", || count_lines(&out) == 2).await;
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("{FLUVIO_SEED}\n{{\"mqtt_topic\":\"plain/x\",\"payload\":[104,105]}}\n")
    );
    let stats = conn.stats.clone();
    eventually("both acked", || ConnectorStats::get(&stats.acked) == 2).await;
    conn.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_sink_retries_503s_and_loses_nothing_in_order() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let state = Arc::new(HttpState::default());
    state.fail_first.store(3, Ordering::SeqCst);
    let url = http_server(state.clone()).await;
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: web, subscribe: [web/#], session: clean, \
             sink: {{http: {{url: '{url}', batch_max: 25, retry: {{min: 20ms, max: 200ms}}}}}}}}"
        ),
    );
    let conn = Running::start(&cfg).await;
    let want = numbered("m", 0..300);
    publish_lines(&broker, "web/a", want.clone()).await;
    eventually("300 records", || state.accepted() >= 300).await;
    assert_eq!(state.payloads(), want);
    assert_eq!(state.failures.load(Ordering::SeqCst), 3);
    assert_eq!(ConnectorStats::get(&conn.stats.sink_errors), 3);
    let first = state.accepted.lock().unwrap()[0].clone();
    assert_eq!(first["topic"], "web/a");
    assert_eq!(first["qos"], 1);
    conn.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_sink_requests_stay_within_batch_max_bytes_of_payloads() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let state = Arc::new(HttpState::default());
    // Down while the backlog is published, so the connector's buffer holds far more than
    // one batch when it comes back and batches are as full as the bounds let them be.
    state.failing.store(true, Ordering::SeqCst);
    let url = http_server(state.clone()).await;
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: bytes, subscribe: [big/#], session: clean, \
             sink: {{http: {{url: '{url}', batch_max_bytes: 1KiB, retry: {{min: 20ms, max: 100ms}}}}}}}}"
        ),
    );
    let conn = Running::start(&cfg).await;
    // 300-byte payloads: three fit in 1 KiB, a fourth does not; `batch_max` (100) would
    // take a hundred.
    let want: Vec<String> = (0..300)
        .map(|i| format!("{i:04}{}", "x".repeat(296)))
        .collect();
    publish_lines(&broker, "big/a", want.clone()).await;
    let s = state.clone();
    eventually("a failed request", || {
        s.failures.load(Ordering::SeqCst) >= 1
    })
    .await;
    state.failing.store(false, Ordering::SeqCst);
    eventually("300 records", || state.accepted() >= 300).await;
    assert_eq!(state.payloads(), want, "each record once, in order");
    let requests = state.requests.lock().unwrap().clone();
    for (i, r) in requests.iter().enumerate() {
        assert!(!r.is_empty(), "request {i} is empty");
        let bytes: usize = r.iter().sum();
        assert!(
            bytes <= 1024,
            "request {i} carries {bytes} payload bytes: {r:?}"
        );
    }
    // The bound was reached, not just respected: a backlog fills batches to three.
    assert!(requests.iter().any(|r| r.len() == 3), "{requests:?}");
    conn.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_sink_dead_letters_only_the_records_the_server_refuses() {
    http_sink_bisection(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_sink_search_interrupted_by_a_503_resends_no_confirmed_record() {
    http_sink_bisection(true).await;
}

/// 50 records, 2 marked, against a server refusing (400) any request with a marked
/// record; with `unavailable`, a 503 interrupts the sink's search after its first
/// confirmed half.
async fn http_sink_bisection(unavailable: bool) {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let state = Arc::new(HttpState::default());
    *state.refuse_marker.lock().unwrap() = Some("BAD".into());
    state
        .unavailable_in_search
        .store(usize::from(unavailable), Ordering::SeqCst);
    // Down while the backlog is published, so batches are full when it comes back.
    state.failing.store(true, Ordering::SeqCst);
    let url = http_server(state.clone()).await;
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: bisect, subscribe: [bis/#], session: clean, dead_letter: '{}', \
             sink: {{http: {{url: '{url}', batch_max: 50, retry: {{min: 20ms, max: 100ms}}}}}}}}",
            dead.display()
        ),
    );
    let conn = Running::start(&cfg).await;
    let mut input = numbered("m", 0..50);
    input[23] = "BAD23".into();
    input[37] = "BAD37".into();
    publish_lines(&broker, "bis/a", input.clone()).await;
    let s = state.clone();
    eventually("a failed request", || {
        s.failures.load(Ordering::SeqCst) >= 1
    })
    .await;
    state.failing.store(false, Ordering::SeqCst);
    let stats = conn.stats.clone();
    eventually("all handled", || ConnectorStats::get(&stats.acked) == 50).await;

    let good: Vec<String> = input
        .iter()
        .filter(|p| !p.contains("BAD"))
        .cloned()
        .collect();
    assert_eq!(state.payloads(), good, "every good record once, in order");
    let dead: Vec<Value> = lines_of(&dead)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dead_payloads: Vec<&Value> = dead.iter().map(|d| &d["record"]["payload"]).collect();
    assert_eq!(dead_payloads, ["BAD23", "BAD37"]);
    for d in &dead {
        let err = d["error"].as_str().unwrap();
        assert!(
            err.contains("answered 400 Bad Request: a record is marked bad"),
            "{err}"
        );
    }
    assert_eq!(ConnectorStats::get(&stats.dead_lettered), 2);
    assert_eq!(ConnectorStats::get(&stats.records_out), 48);
    // The search was a search: refused requests of several records, and few of them
    // (each refused record costs at most 2 × ⌈log2 50⌉ = 12 requests, plus its batch's).
    let refused = state.refused.lock().unwrap().clone();
    assert!(refused.iter().any(|&n| n > 1), "{refused:?}");
    if unavailable {
        assert_eq!(
            state.unavailable_in_search.load(Ordering::SeqCst),
            0,
            "no 503 in the search"
        );
    } else {
        assert!(refused.len() <= 2 * 13, "{refused:?}");
    }
    conn.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_jetstream_sink_stores_each_record_once() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "MQTT".into(),
            subjects: vec!["mqtt.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: js, subscribe: [sensors/#], format: raw, session: clean, \
             sink: {{nats: {{url: '{}', subject: 'mqtt.{{topic}}', jetstream: true, stream: MQTT}}}}}}",
            nats.url()
        ),
    );
    let conn = Running::start(&cfg).await;
    let n = 500;
    publish_lines(&broker, "sensors/room 1", numbered("r", 0..n)).await;
    let stats = conn.stats.clone();
    eventually("all acked", || {
        ConnectorStats::get(&stats.acked) == n as u64
    })
    .await;
    assert_eq!(stream.info().await.unwrap().state.messages, n as u64);
    // Whitespace in the topic is replaced in the subject; the payload is the raw bytes.
    let m = stream
        .get_last_raw_message_by_subject("mqtt.sensors/room_1")
        .await
        .unwrap();
    assert_eq!(&m.payload[..], format!("r{}", n - 1).as_bytes());
    conn.stop().await;

    // A redelivered message (same topic, payload, position) carries the same
    // Nats-Msg-Id, so JetStream stores it once.
    let (sink_cfg, _) = connector_cfg(
        "mqtt://127.0.0.1:1",
        &format!(
            "{{name: js, subscribe: [x], sink: {{nats: {{url: '{}', subject: 'mqtt.{{topic}}', jetstream: true}}}}}}",
            nats.url()
        ),
    );
    let config::Sink::Nats(mqlink::config::NatsConfig { url, subject, .. }) = &sink_cfg.sink else {
        unreachable!()
    };
    let mut sink = NatsSink::connect(
        "js",
        url,
        subject.clone(),
        true,
        None,
        None,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let rec = Record {
        topic: Arc::from("dup/topic"),
        source: bytes::Bytes::from_static(b"same"),
        part: 0,
        body: Body::Raw(bytes::Bytes::from_static(b"same")),
        meta: Default::default(),
    };
    sink.deliver(std::slice::from_ref(&rec)).await.unwrap();
    sink.deliver(std::slice::from_ref(&rec)).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, n as u64 + 1);
    let other = Record { part: 1, ..rec };
    sink.deliver(&[other]).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, n as u64 + 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_core_sink_publishes_to_the_rendered_subject() {
    use futures_util::StreamExt as _;
    let broker = Mosquitto::start(MosquittoOptions::default());
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = client.subscribe("core.>").await.unwrap();
    client.flush().await.unwrap();
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: core, subscribe: [c/#], format: raw, session: clean, \
             sink: {{nats: {{url: '{}', subject: 'core.{{topic}}'}}}}}}",
            nats.url()
        ),
    );
    let conn = Running::start(&cfg).await;
    publish_lines(&broker, "c/1", numbered("x", 0..50)).await;
    for i in 0..50 {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.subject.as_str(), "core.c/1");
        assert_eq!(&m.payload[..], format!("x{i}").as_bytes());
        assert!(m.headers.unwrap().get("Nats-Msg-Id").is_some());
    }
    conn.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_sink_bridges_to_another_broker_with_a_rewritten_topic() {
    let source = Mosquitto::start(MosquittoOptions::default());
    let target = Mosquitto::start(MosquittoOptions::default());
    let sub = MosquittoSub::start_ready(
        &target.client_args(),
        &["-t", "bridged/#", "-v", "-q", "1"],
        "bridged/probe",
    );
    let cfg = connector_cfg(
        &source.url(),
        &format!(
            "{{name: bridge, subscribe: [plant/#], format: raw, session: clean, \
             sink: {{mqtt: {{url: '{}', topic: 'bridged/{{topic}}', qos: 1}}}}}}",
            target.url()
        ),
    );
    let conn = Running::start(&cfg).await;
    let want = numbered("v", 0..200);
    publish_lines(&source, "plant/line 1", want.clone()).await;
    let got = tokio::task::spawn_blocking(move || sub.wait_for_lines(200, WAIT))
        .await
        .unwrap();
    let expected: Vec<String> = want
        .iter()
        .map(|v| format!("bridged/plant/line 1 {v}"))
        .collect();
    assert_eq!(got, expected);
    conn.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_session_delivers_everything_published_while_stopped() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: durable, subscribe: [q/#], format: raw, session: persistent, \
             sink: {{file: {{path: '{}'}}}}}}",
            out.display()
        ),
    );
    // Connect and subscribe once, so the broker has the session, then stop.
    Running::start(&cfg).await.stop().await;
    let n = 10_000;
    let want = numbered("p", 0..n);
    publish_lines(&broker, "q/1", want.clone()).await;

    let started = Instant::now();
    let conn = Running::start(&cfg).await;
    eventually("10,000 lines", || count_lines(&out) >= n).await;
    let elapsed = started.elapsed();
    assert_eq!(lines_of(&out), want);
    eprintln!(
        "persistent session: {n} queued QoS 1 messages to file (fsync always) in {elapsed:?} \
         ({:.0} msg/s)",
        n as f64 / elapsed.as_secs_f64()
    );
    // The file is written before the acknowledgements go out: wait for them.
    let stats = conn.stats.clone();
    eventually("all acked", || {
        ConnectorStats::get(&stats.acked) == n as u64
    })
    .await;
    conn.stop().await;
}

/// Regression: a connector resuming its session awaits its SUBACK before it takes
/// deliveries, and the broker sends the session's queued messages first. On MQTT 3.1.1
/// nothing but the broker's own window limits them (here Mosquitto with
/// `max_inflight_messages 10000`): more than the connector's delivery buffer (2048 for
/// the file sink) and, behind it, more than the engine's 64 MiB backlog bound. The engine
/// stopped reading at that bound with the SUBACK unread, and the connector never
/// subscribed. QoS 1 messages are now read on while the SUBACK is awaited (the broker's
/// flow control bounds them), and every one reaches the sink, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_session_beyond_the_backlog_bound_does_not_stall_the_connector() {
    let broker = Mosquitto::start(MosquittoOptions {
        max_inflight_messages: Some(10_000),
        ..MosquittoOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let text = format!(
        "broker: {{url: '{}', protocol: '3.1.1'}}\nconnectors:\n  - {{name: resumed, \
         subscribe: [q/#], format: raw, session: persistent, sink: {{file: {{path: '{}'}}}}}}\n",
        broker.url(),
        out.display()
    );
    let cfg = config::from_str(&text, config::Format::Yaml, "test.yaml").unwrap();
    let cfg = (cfg.connectors[0].clone(), cfg.broker);
    Running::start(&cfg).await.stop().await;
    // While it is away: small messages to fill its delivery buffer, then 70 MiB.
    let mut want = numbered("s", 0..2100);
    let pad = "x".repeat(1 << 20);
    want.extend((0..70).map(|i| format!("b{i}{pad}")));
    publish_qos1(&broker.url(), "q/1", &want).await;

    let conn = Running::start(&cfg).await;
    eventually("every line", || count_lines(&out) >= want.len()).await;
    assert!(
        lines_of(&out) == want,
        "the sink got other lines or another order"
    );
    assert_eq!(conn.stats.mqtt.qos0_dropped(), 0);
    let stats = conn.stats.clone();
    eventually("all acked", || {
        ConnectorStats::get(&stats.acked) == want.len() as u64
    })
    .await;
    conn.stop().await;
}

/// Publish `payloads` at QoS 1 with the engine (its lines may be longer than
/// `mosquitto_pub -l` takes), each acknowledged by the broker before this returns.
async fn publish_qos1(url: &str, topic: &str, payloads: &[String]) {
    let mut o = MqttOptions::new(BrokerUrl::parse(url).unwrap());
    o.client_id = format!("connectors-publisher-{}", std::process::id());
    let (client, _deliveries, event_loop) = client::new(o).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(event_loop.run(stop.clone()));
    let mut verdicts = Vec::with_capacity(payloads.len());
    for p in payloads {
        let publish = Publish::new(topic, p.clone(), QoS::AtLeastOnce);
        verdicts.push(client.publish(publish).await.unwrap());
    }
    for v in verdicts {
        assert_eq!(v.await, Verdict::Acknowledged);
    }
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_outage_holds_acknowledgements_and_loses_nothing() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let state = Arc::new(HttpState::default());
    state.failing.store(true, Ordering::SeqCst);
    let url = http_server(state.clone()).await;
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: outage, subscribe: [load/#], session: persistent, \
             sink: {{http: {{url: '{url}', batch_max: 50, retry: {{min: 20ms, max: 250ms}}}}}}}}"
        ),
    );
    let outage_start = Instant::now();
    let first = Running::start(&cfg).await;
    publish_lines(&broker, "load/1", numbered("a", 0..1000)).await;
    let s = state.clone();
    eventually("failed requests", || s.failures.load(Ordering::SeqCst) >= 5).await;
    assert_eq!(state.accepted(), 0);
    assert_eq!(ConnectorStats::get(&first.stats.acked), 0, "acked early");
    // Kill the connector in the middle of the outage: nothing was acknowledged, so the
    // broker keeps everything for the persistent session.
    first.stop().await;

    let second = Running::start(&cfg).await;
    // More load while the sink is still down.
    publish_lines(&broker, "load/1", numbered("b", 0..1000)).await;
    let before = state.failures.load(Ordering::SeqCst);
    let s = state.clone();
    eventually("retries after restart", || {
        s.failures.load(Ordering::SeqCst) >= before + 5
    })
    .await;
    assert_eq!(ConnectorStats::get(&second.stats.acked), 0, "acked early");
    // Keep the outage up for 10 s in total (the issue's figure), then recover.
    tokio::time::sleep_until((outage_start + Duration::from_secs(10)).into()).await;
    assert_eq!(state.accepted(), 0);
    state.failing.store(false, Ordering::SeqCst);

    let s = state.clone();
    eventually("2000 records", || s.accepted() >= 2000).await;
    let mut want = numbered("a", 0..1000);
    want.extend(numbered("b", 0..1000));
    assert_eq!(state.payloads(), want);
    let stats = second.stats.clone();
    eventually("all acked", || ConnectorStats::get(&stats.acked) == 2000).await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_subscription_splits_the_load_and_delivers_each_message_once() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let outs = [dir.path().join("a.txt"), dir.path().join("b.txt")];
    let mut conns = Vec::new();
    for (i, out) in outs.iter().enumerate() {
        let cfg = connector_cfg(
            &broker.url(),
            &format!(
                "{{name: member{i}, subscribe: ['$share/g/jobs/#'], format: raw, session: clean, \
                 sink: {{file: {{path: '{}'}}}}}}",
                out.display()
            ),
        );
        conns.push(Running::start(&cfg).await);
    }
    let n = 2000;
    publish_lines(&broker, "jobs/1", numbered("j", 0..n)).await;
    eventually("all delivered", || {
        count_lines(&outs[0]) + count_lines(&outs[1]) >= n
    })
    .await;
    let (a, b) = (lines_of(&outs[0]), lines_of(&outs[1]));
    assert!(
        !a.is_empty() && !b.is_empty(),
        "split {}/{}",
        a.len(),
        b.len()
    );
    let mut all: Vec<String> = a.iter().chain(&b).cloned().collect();
    all.sort();
    let mut want = numbered("j", 0..n);
    want.sort();
    assert_eq!(all, want, "every message exactly once");
    for c in conns {
        c.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transform_errors_are_dead_lettered_and_the_connector_keeps_going() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let dead = dir.path().join("dead.jsonl");
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: tx, subscribe: [t/#], session: clean, dead_letter: '{}', \
             transforms: [{{filter: '.payload != \"skip\"'}}, {{map: '{{v: (.payload.v + 1)}}'}}], \
             sink: {{file: {{path: '{}'}}}}}}",
            dead.display(),
            out.display()
        ),
    );
    let conn = Running::start(&cfg).await;
    let input = [
        r#"{"v":1}"#,
        "not json",
        "skip",
        r#"{"v":2}"#,
        r#"{"v":"x"}"#,
        r#"{"v":3}"#,
    ];
    publish_lines(
        &broker,
        "t/in",
        input.iter().map(|s| s.to_string()).collect(),
    )
    .await;
    let stats = conn.stats.clone();
    eventually("all handled", || ConnectorStats::get(&stats.acked) == 6).await;
    assert_eq!(lines_of(&out), [r#"{"v":2}"#, r#"{"v":3}"#, r#"{"v":4}"#]);
    let dead: Vec<Value> = lines_of(&dead)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 2);
    for (d, payload) in dead
        .iter()
        .zip([Value::from("not json"), serde_json::json!({"v": "x"})])
    {
        assert_eq!(d["connector"], "tx");
        assert_eq!(d["topic"], "t/in");
        assert_eq!(d["record"]["payload"], payload);
        let err = d["error"].as_str().unwrap();
        assert!(err.starts_with("transforms[1] (map): "), "{err}");
    }
    assert_eq!(ConnectorStats::get(&stats.dead_lettered), 2);
    assert_eq!(ConnectorStats::get(&stats.filtered), 1);
    assert_eq!(ConnectorStats::get(&stats.records_out), 3);
    conn.stop().await;
}

#[test]
fn bad_jq_is_a_config_error_located_at_the_connector_and_the_step() {
    let err = config::from_str(
        "broker: {url: 'mqtt://127.0.0.1:1'}\nconnectors:\n  - {name: ok, subscribe: [a], sink: {stdout: {}}}\n  - {name: bad, subscribe: [a], transforms: [{arraymap: 'nosuch'}], sink: {stdout: {}}}\n",
        config::Format::Yaml,
        "t.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("t.yaml:4:") && err.contains(": connectors[1].transforms[0].arraymap: "),
        "{err}"
    );
    assert!(err.contains("nosuch"), "{err}");
}

/// A sink straight on `nats` (core, or JetStream when `js`), for batch-level checks.
async fn nats_sink(nats: &Nats, js: bool) -> NatsSink {
    let (sink_cfg, _) = connector_cfg(
        "mqtt://127.0.0.1:1",
        &format!(
            "{{name: n, subscribe: [x], sink: {{nats: {{url: '{}', subject: 'mqtt.{{topic}}', jetstream: {js}}}}}}}",
            nats.url()
        ),
    );
    let config::Sink::Nats(mqlink::config::NatsConfig {
        url,
        subject,
        timeout,
        ..
    }) = &sink_cfg.sink
    else {
        unreachable!()
    };
    NatsSink::connect("n", url, subject.clone(), js, None, None, *timeout)
        .await
        .unwrap()
}

fn raw_record(topic: &str, payload: Vec<u8>) -> Record {
    let payload = bytes::Bytes::from(payload);
    Record {
        topic: Arc::from(topic),
        source: payload.clone(),
        part: 0,
        body: Body::Raw(payload),
        meta: Default::default(),
    }
}

/// A topic whose subject has an empty token, in the middle of a batch: the records
/// before it are confirmed, it is refused alone, and the sink does not claim the ones
/// after it (it used to answer `Ok` for the whole batch having sent only the prefix, so
/// the connector acknowledged messages that went nowhere).
#[tokio::test(flavor = "multi_thread")]
async fn nats_sink_refuses_a_subject_with_an_empty_token_alone() {
    use async_nats::jetstream::stream::Config;
    use mqlink::internals::SinkError;
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js
        .create_stream(Config {
            name: "MQTT".into(),
            subjects: vec!["mqtt.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut sink = nats_sink(&nats, true).await;
    let batch = [
        raw_record("a/1", b"one".to_vec()),
        raw_record("a..b", b"bad".to_vec()),
        raw_record("a/2", b"two".to_vec()),
    ];
    match sink.deliver(&batch).await {
        Err(SinkError::Reject {
            done,
            count,
            reason,
        }) => {
            assert_eq!((done, count), (1, 1), "{reason}");
            assert!(reason.contains("empty token"), "{reason}");
        }
        other => panic!("expected the second record refused alone, got {other:?}"),
    }
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    sink.deliver(&batch[2..]).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
}

/// A payload over the server's `max_payload` (1 MiB by default) on core NATS: the client
/// refuses it before sending, so retrying cannot help. It is refused alone, after the
/// records before it are flushed (it was retried forever, holding every ack behind it).
#[tokio::test(flavor = "multi_thread")]
async fn nats_core_sink_refuses_a_payload_over_max_payload_alone() {
    use futures_util::StreamExt as _;
    use mqlink::internals::SinkError;
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = client.subscribe("mqtt.>").await.unwrap();
    client.flush().await.unwrap();
    let mut sink = nats_sink(&nats, false).await;
    let batch = [
        raw_record("big/1", b"small".to_vec()),
        raw_record("big/2", vec![b'x'; 2 << 20]),
        raw_record("big/3", b"after".to_vec()),
    ];
    match sink.deliver(&batch).await {
        Err(SinkError::Reject {
            done,
            count,
            reason,
        }) => {
            assert_eq!((done, count), (1, 1), "{reason}");
        }
        other => panic!("expected the big record refused alone, got {other:?}"),
    }
    sink.deliver(&batch[2..]).await.unwrap();
    for want in ["small", "after"] {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&m.payload[..], want.as_bytes());
    }
}

/// A NATS server that stops answering (SIGSTOP: the connection stays open, nothing is
/// read): a delivery ends within the sink's `timeout` as a retry, core and JetStream
/// alike, and delivers once the server is back. A core publish waited for room in the
/// client's command queue with no deadline: once the queue was full (the server not
/// reading), it never returned, and the connector hung without a retry or a warning; a
/// JetStream batch took the client's own 5 s per step.
#[tokio::test(flavor = "multi_thread")]
async fn nats_sink_delivery_to_a_frozen_server_ends_within_its_timeout() {
    use async_nats::jetstream::stream::Config;
    use mqlink::internals::SinkError;
    let mut nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    async_nats::jetstream::new(client.clone())
        .create_stream(Config {
            name: "MQTT".into(),
            subjects: vec!["mqtt.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let timeout = Duration::from_millis(500);
    let (cfg, _) = connector_cfg(
        "mqtt://127.0.0.1:1",
        &format!(
            "{{name: n, subscribe: [x], sink: {{nats: {{url: '{}', subject: 'mqtt.{{topic}}', timeout: 500ms}}}}}}",
            nats.url()
        ),
    );
    let config::Sink::Nats(mqlink::config::NatsConfig { url, subject, .. }) = &cfg.sink else {
        unreachable!()
    };
    let mut sinks = Vec::new();
    for js in [false, true] {
        sinks.push(
            NatsSink::connect("n", url, subject.clone(), js, None, None, timeout)
                .await
                .unwrap(),
        );
    }
    // 40 MiB in 5,000 publishes: more than the sockets hold (a few MiB) plus the client's
    // queue of 2,048 commands, so a publish must wait for a server that does not read.
    let payload = bytes::Bytes::from(vec![b'x'; 8 << 10]);
    let batch: Vec<Record> = (0..5000u32)
        .map(|i| Record {
            topic: Arc::from("frozen/a"),
            source: payload.clone(),
            part: i,
            body: Body::Raw(payload.clone()),
            meta: Default::default(),
        })
        .collect();
    nats.pause();
    for (sink, kind) in sinks.iter_mut().zip(["core", "JetStream"]) {
        let started = Instant::now();
        let res = tokio::time::timeout(WAIT, sink.deliver(&batch))
            .await
            .unwrap_or_else(|_| panic!("{kind}: the delivery did not end within {WAIT:?}"));
        let took = started.elapsed();
        match res {
            Err(SinkError::Retry { done: 0, reason }) => {
                assert!(
                    reason.contains("not done within the timeout"),
                    "{kind}: {reason}"
                );
            }
            other => panic!("{kind}: expected a retry, got {other:?}"),
        }
        assert!(
            took < timeout * 4,
            "{kind}: the delivery took {took:?}, its timeout is {timeout:?}"
        );
    }
    nats.resume();
    // Back: what the clients queued drains, and a delivery is confirmed again.
    for (sink, kind) in sinks.iter_mut().zip(["core", "JetStream"]) {
        let deadline = Instant::now() + WAIT;
        while let Err(e) = sink.deliver(&batch[..1]).await {
            assert!(Instant::now() < deadline, "{kind}: still failing: {e}");
        }
    }
}

/// What the HTTP sink says about a refusal or a failure (dead-letter `error`s, warnings)
/// names the endpoint without the URL's password or secret query values, and reads only
/// the start of an error body however much the server sends. Both held the raw URL
/// (reqwest's own message too).
#[tokio::test(flavor = "multi_thread")]
async fn http_sink_errors_name_the_endpoint_without_its_secrets() {
    use mqlink::internals::SinkError;
    async fn refuse() -> (StatusCode, String) {
        (StatusCode::BAD_REQUEST, "no. ".repeat(1 << 20))
    }
    let app = Router::new().route("/hook", post(refuse));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    for (url, want) in [
        (
            format!("http://bob:pw-s3cret@{addr}/hook?token=tok-s3cret&v=1"),
            "answered 400 Bad Request: no. no.",
        ),
        (
            format!("http://bob:pw-s3cret@127.0.0.1:{closed_port}/hook?token=tok-s3cret"),
            "POST http://bob:redacted@127.0.0.1",
        ),
    ] {
        let (cfg, _) = connector_cfg(
            "mqtt://127.0.0.1:1",
            &format!("{{name: h, subscribe: [x], sink: {{http: {{url: '{url}'}}}}}}"),
        );
        let (mut sink, _) = mqlink::internals::open(&cfg.sink, "h", "h", CancellationToken::new())
            .await
            .unwrap();
        let err = sink
            .deliver(&[raw_record("t", b"x".to_vec())])
            .await
            .unwrap_err();
        let (SinkError::Reject { reason, .. } | SinkError::Retry { reason, .. }) = &err;
        assert!(reason.contains(want), "{reason}");
        assert!(!reason.contains("s3cret"), "a secret in: {reason}");
        assert!(
            reason.len() < 1000,
            "the whole error body was kept: {} bytes",
            reason.len()
        );
    }
}
