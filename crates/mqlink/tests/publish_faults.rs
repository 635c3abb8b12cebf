//! The publish path under the faults that broke it (issue: "nothing lost, nothing stuck"):
//! broker limits, a cut before CONNACK, a broker that hangs and then dies, a new process
//! against a resumed session, a spool read error, transient refusals, a message a 3.1.1
//! broker closes the connection on, events a transform filters out. Each test fails on
//! the code before its fix.
//!
//! Real Mosquitto where its behaviour is the point; a small scripted fake broker where the
//! test needs a broker to do one exact thing (answer 0x97, close on one topic, record the
//! CONNECT flags).

mod common;
use common::read_packet;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mqlink::IngestError;
use mqlink::config::{self, Format};
use mqlink::mqtt::client::LinkState;
use mqlink::mqtt::codec::Protocol;
use mqlink::{Link, LinkError};
use mqlink_testkit::{Mosquitto, MosquittoOptions, MosquittoSub};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);

struct Running {
    link: Link,
    stop: CancellationToken,
    task: JoinHandle<Result<(), LinkError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// A link from `yaml`, where `{spool}` is replaced by a fresh spool directory.
    fn start(yaml: &str) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let yaml = yaml.replace("{spool}", &spool.display().to_string());
        let config = config::from_str(&yaml, Format::Yaml, "test").unwrap();
        let (link, tasks) = Link::open(&config).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(tasks.run(stop.clone()));
        Running {
            link,
            stop,
            task,
            _dir: dir,
        }
    }

    fn spool_records(&self) -> u64 {
        self.link.ingest().spool().stats().records
    }

    fn dead_letters(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.link.dead_letter().path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Wait until the spool is empty: every accepted message decided. Polled: the spool
    /// publishes no "empty" event, and its counter is the truth the test is about.
    async fn drained(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.spool_records() == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    async fn stop(self) -> Result<(), LinkError> {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

/// Wait for the link to be connected; the protocol it connected with.
async fn connected(link: &Link) -> Protocol {
    let mut w = link.client().link();
    let state = tokio::time::timeout(T, w.wait_for(|s| matches!(s, LinkState::Connected { .. })))
        .await
        .expect("connected in time")
        .unwrap()
        .clone();
    match state {
        LinkState::Connected { protocol, .. } => protocol,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_limits_never_block_the_messages_behind() {
    // Regression: the CONNACK's Maximum Packet Size, Retain Available and Maximum QoS were
    // ignored; Mosquitto disconnected mqlink for the large message, which was sent again
    // after every reconnect, and nothing behind it moved.
    let broker = Mosquitto::start(MosquittoOptions {
        listener_config: vec![
            "max_packet_size 2000".into(),
            "retain_available false".into(),
            "max_qos 1".into(),
        ],
        ..MosquittoOptions::default()
    });
    let sub = MosquittoSub::start_ready(
        &broker.client_args(),
        &["-t", "lim/#", "-v", "-q", "1", "-V", "5"],
        "lim/probe",
    );
    let r = Running::start(&format!(
        "broker: {{url: '{}', reconnect: {{min: 100ms, max: 500ms}}}}\nspool: {{dir: '{{spool}}'}}\nroutes:\n  - {{match: ['*'], topic: 'lim/{{event}}', qos: 2, retain: true}}\n",
        broker.url()
    ));
    assert_eq!(connected(&r.link).await, Protocol::V5);
    r.link.emit("small1", json!({"n": 1})).await.unwrap();
    r.link
        .emit("big", json!({"blob": "x".repeat(5000)}))
        .await
        .unwrap();
    r.link.emit("small2", json!({"n": 2})).await.unwrap();
    assert!(r.drained(T).await, "every message decided");
    let lines = sub.wait_for_lines(2, T);
    assert_eq!(
        lines,
        [r#"lim/small1 {"n":1}"#, r#"lim/small2 {"n":2}"#],
        "the small ones arrive, in order"
    );
    let dead = r.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["topic"], "lim/big");
    assert_eq!(dead[0]["code"], 0x95);
    // (QoS 2 above the listener's `max_qos 1`, or retain with `retain_available false`,
    // would have made Mosquitto disconnect us: their arrival shows both were lowered.)
    // Nothing was retained: a new subscriber sees no stored message.
    let mut late = MosquittoSub::start(
        &[
            broker.client_args(),
            ["-t", "lim/#", "-v", "-W", "1"].map(String::from).to_vec(),
        ]
        .concat(),
    );
    late.wait_for_exit(T);
    assert!(late.lines().is_empty(), "{:?}", late.lines());
    r.stop().await.unwrap();
}

/// A TCP proxy to `upstream` that cuts its first `cuts` connections as soon as the client
/// has sent something (its CONNECT), before any CONNACK can come back.
async fn cutting_proxy(upstream: u16, cuts: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut client, _)) = listener.accept().await {
            n += 1;
            if n <= cuts {
                let mut buf = [0u8; 64];
                let _ = client.read(&mut buf).await;
                drop(client);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    port
}

fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_before_connack_keeps_mqtt5_so_a_denial_is_dead_lettered() {
    // Regression: a connection cut before CONNACK made the engine fall back to MQTT 3.1.1
    // for good; on 3.1.1 Mosquitto's ACL denial is invisible, and the denied message was
    // taken out of the spool as if delivered.
    let acl_dir = tempfile::tempdir().unwrap();
    let acl = write_file(acl_dir.path(), "acl", "topic readwrite ok/#\n");
    let broker = Mosquitto::start(MosquittoOptions {
        extra_config: vec![format!("acl_file {acl}")],
        ..MosquittoOptions::default()
    });
    let proxy = cutting_proxy(broker.port(), 1).await;
    let r = Running::start(&format!(
        "broker: {{url: 'mqtt://127.0.0.1:{proxy}', reconnect: {{min: 50ms, max: 200ms}}}}\nspool: {{dir: '{{spool}}'}}\nroutes:\n  - {{match: ['denied'], topic: 'no/{{event}}', qos: 1}}\n  - {{match: ['*'], topic: 'ok/{{event}}', qos: 1}}\n"
    ));
    assert_eq!(connected(&r.link).await, Protocol::V5);
    r.link.emit("denied", json!({})).await.unwrap();
    r.link.emit("fine", json!({})).await.unwrap();
    assert!(r.drained(T).await);
    let dead = r.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (&dead[0]["topic"], &dead[0]["code"]),
        (&json!("no/denied"), &json!(0x87))
    );
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_messages_pending_when_a_hung_broker_dies_are_all_decided() {
    // Regression: QoS 0 messages still in the write buffer when the connection dropped were
    // never decided; they held publisher slots and stayed in the spool for good.
    let mut broker = Mosquitto::start(MosquittoOptions::default());
    let r = Running::start(&format!(
        "broker: {{url: '{}', keepalive: 2s, reconnect: {{min: 50ms, max: 300ms}}}}\nspool: {{dir: '{{spool}}', fsync: never}}\nroutes:\n  - {{match: ['*'], topic: 'q0/{{event}}', qos: 0}}\n",
        broker.url()
    ));
    connected(&r.link).await;
    broker.pause();
    // 24 MB of QoS 0 messages: far more than the socket buffers take, so some wait in
    // mqlink's write buffer when the broker dies.
    let blob = "y".repeat(64 * 1024);
    for i in 0..384 {
        r.link
            .emit("e", json!({"i": i, "blob": blob}))
            .await
            .unwrap();
    }
    // Wait until the engine has data it cannot write (the broker does not read); a gauge,
    // so polled.
    let deadline = Instant::now() + T;
    while r.link.publish_stats().inflight.load(Ordering::Relaxed) == 0 && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.kill();
    broker.restart();
    assert!(
        r.drained(T).await,
        "{} records still in the spool",
        r.spool_records()
    );
    // The publisher sets its in-flight gauge just after acknowledging the spool: polled.
    let deadline = Instant::now() + T;
    while r.link.publish_stats().inflight.load(Ordering::Relaxed) != 0 && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(r.link.publish_stats().inflight.load(Ordering::Relaxed), 0);
    r.stop().await.unwrap();
}

/// What a scripted fake broker saw.
#[derive(Debug, Default)]
struct Seen {
    /// Clean-start flag of each CONNECT, in order.
    clean_starts: Vec<bool>,
    /// Topic and packet id of each PUBLISH received.
    publishes: Vec<(String, Option<u16>)>,
}

/// How the fake answers a PUBLISH: with these bytes (None: close the connection).
type Answer = Box<dyn Fn(&str, Option<u16>, usize) -> Option<Vec<u8>> + Send + Sync>;

/// A fake broker speaking `protocol` (v5 or 3.1.1): CONNACKs every CONNECT (session
/// present after the first), answers each PUBLISH as `answer` says, and closes a
/// connection after `close_after` CONNECTs if set (to force reconnects).
async fn fake_broker(
    protocol: Protocol,
    answer: Answer,
    close_after_connack: bool,
) -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let answer = Arc::new(answer);
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = s.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut count = 0usize;
                while let Some(p) = read_packet(&mut sock, &mut buf).await {
                    let body = &p[header_len(&p)..];
                    match p[0] >> 4 {
                        1 => {
                            let name_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                            let flags = body[2 + name_len + 1];
                            let first = {
                                let mut g = seen.lock().unwrap();
                                g.clean_starts.push(flags & 2 != 0);
                                g.clean_starts.len() == 1
                            };
                            let present = u8::from(!first && flags & 2 == 0);
                            let connack: &[u8] = match protocol {
                                Protocol::V5 => &[0x20, 0x03, present, 0x00, 0x00],
                                _ => &[0x20, 0x02, present, 0x00],
                            };
                            if sock.write_all(connack).await.is_err() || close_after_connack {
                                return;
                            }
                        }
                        3 => {
                            let qos = (p[0] >> 1) & 3;
                            let tl = usize::from(u16::from_be_bytes([body[0], body[1]]));
                            let topic = String::from_utf8_lossy(&body[2..2 + tl]).to_string();
                            let pid =
                                (qos > 0).then(|| u16::from_be_bytes([body[2 + tl], body[3 + tl]]));
                            seen.lock().unwrap().publishes.push((topic.clone(), pid));
                            count += 1;
                            match answer(&topic, pid, count) {
                                Some(bytes) => {
                                    if sock.write_all(&bytes).await.is_err() {
                                        return;
                                    }
                                }
                                None => return,
                            }
                        }
                        12 => {
                            let _ = sock.write_all(&[0xd0, 0x00]).await;
                        }
                        14 => return,
                        _ => {}
                    }
                }
            });
        }
    });
    (port, seen)
}

fn header_len(p: &[u8]) -> usize {
    let mut i = 1;
    while p[i] & 0x80 != 0 {
        i += 1;
    }
    i + 1
}

fn puback(pid: Option<u16>, reason: u8) -> Vec<u8> {
    let [hi, lo] = pid.unwrap_or(0).to_be_bytes();
    vec![0x40, 0x03, hi, lo, reason]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publishing_process_starts_a_new_session_then_resumes_it() {
    // Regression: with `session: persistent` a new process resumed the broker's session and
    // reused packet ids the broker still held QoS 2 state for.
    let (port, seen) = fake_broker(
        Protocol::V5,
        Box::new(|_, pid, _| Some(puback(pid, 0))),
        true,
    )
    .await;
    let r = Running::start(&format!(
        "broker: {{url: 'mqtt://127.0.0.1:{port}', session: persistent, reconnect: {{min: 20ms, max: 50ms}}}}\nspool: {{dir: '{{spool}}'}}\nroutes:\n  - {{match: ['*'], topic: 's/{{event}}', qos: 1}}\n"
    ));
    // The fake broker's record is shared state, polled with a deadline.
    let deadline = Instant::now() + T;
    while seen.lock().unwrap().clean_starts.len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let starts = seen.lock().unwrap().clean_starts.clone();
    assert_eq!(
        starts[..3],
        [true, false, false],
        "fresh session once per process, then resumed"
    );
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_refusals_are_published_again_not_dead_lettered() {
    // Regression: PUBACK 0x97 (quota exceeded) was taken as a final refusal and the
    // accepted event was dead-lettered.
    let (port, seen) = fake_broker(
        Protocol::V5,
        Box::new(|_, pid, n| Some(puback(pid, if n <= 2 { 0x97 } else { 0 }))),
        false,
    )
    .await;
    let r = Running::start(&format!(
        "broker: {{url: 'mqtt://127.0.0.1:{port}'}}\nspool: {{dir: '{{spool}}'}}\nroutes:\n  - {{match: ['*'], topic: 't/{{event}}', qos: 1}}\n"
    ));
    r.link.emit("once", json!({})).await.unwrap();
    assert!(r.drained(T).await);
    assert!(r.dead_letters().is_empty());
    assert_eq!(r.link.publish_stats().retried.load(Ordering::Relaxed), 2);
    assert_eq!(seen.lock().unwrap().publishes.len(), 3);
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_a_311_broker_keeps_closing_on_is_dead_lettered_and_the_rest_flow() {
    // Regression: a 3.1.1 broker refuses a message only by closing the connection; the
    // engine sent it again after every reconnect, forever, and nothing behind it moved.
    let (port, seen) = fake_broker(
        Protocol::V311,
        Box::new(|topic, pid, _| {
            if topic == "p/poison" {
                None
            } else {
                Some(vec![
                    0x40,
                    0x02,
                    (pid.unwrap() >> 8) as u8,
                    pid.unwrap() as u8,
                ])
            }
        }),
        false,
    )
    .await;
    let r = Running::start(&format!(
        "broker: {{url: 'mqtt://127.0.0.1:{port}', protocol: '3.1.1', reconnect: {{min: 20ms, max: 50ms}}}}\nspool: {{dir: '{{spool}}'}}\nroutes:\n  - {{match: ['*'], topic: 'p/{{event}}', qos: 1}}\n"
    ));
    r.link.emit("poison", json!({})).await.unwrap();
    r.link.emit("fine", json!({})).await.unwrap();
    assert!(r.drained(T).await);
    let dead = r.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["topic"], "p/poison");
    let published = seen.lock().unwrap().publishes.clone();
    assert!(published.iter().any(|(t, _)| t == "p/fine"));
    let tries = published.iter().filter(|(t, _)| t == "p/poison").count();
    // Alone on the wire once per strike, plus once with the one behind it if that was
    // already sent when the broker closed (timing).
    let strikes = usize::from(mqlink::mqtt::state::POISON_STRIKES);
    assert!((strikes..=strikes + 1).contains(&tries), "{published:?}");
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_its_route_filters_out_is_accepted_with_no_message() {
    // Regression: an empty batch reached the spool, which refused it; the client got 503
    // and retried forever.
    let r = Running::start(
        "broker: {url: 'mqtt://127.0.0.1:1', reconnect: {min: 1s, max: 1s}}\nspool: {dir: '{spool}'}\nroutes:\n  - {match: ['*'], topic: 'f/{event}', payload: {transform: 'select(.keep)'}}\n",
    );
    let a = r.link.emit("drop", json!({"keep": false})).await.unwrap();
    assert_eq!((a.messages, a.events), (0, 1));
    let a = r.link.emit("keep", json!({"keep": true})).await.unwrap();
    assert_eq!(a.messages, 1);
    assert_eq!(r.spool_records(), 1);
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_read_error_stops_accepting_and_ends_the_link_with_the_error() {
    // Regression: the publisher stopped on a spool read error while ingest kept accepting
    // events (202) that were never published.
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let yaml = format!(
        "broker: {{url: 'mqtt://127.0.0.1:1', reconnect: {{min: 1s, max: 1s}}}}\nspool: {{dir: '{}'}}\nroutes:\n  - {{match: ['*'], topic: 'r/{{event}}', qos: 1}}\n",
        spool.display()
    );
    let config = config::from_str(&yaml, Format::Yaml, "test").unwrap();
    // A first run leaves records on disk (the broker is unreachable).
    {
        let (link, tasks) = Link::open(&config).unwrap();
        for i in 0..10 {
            link.emit("e", json!({"i": i})).await.unwrap();
        }
        let stop = CancellationToken::new();
        stop.cancel();
        tasks.run(stop).await.unwrap();
        link.ingest().spool().clone().close().await.unwrap();
    }
    // The second run recovers them (checksums fine), then the medium goes bad under it
    // before the reader gets there.
    let (link, tasks) = Link::open(&config).unwrap();
    let seg = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    for b in &mut bytes[40..60] {
        *b ^= 0xff;
    }
    std::fs::write(&seg, bytes).unwrap();
    let result = tokio::time::timeout(T, tasks.run(CancellationToken::new()))
        .await
        .expect("the tasks end on their own");
    assert!(matches!(result, Err(LinkError::Publisher(_))), "{result:?}");
    assert!(link.publish_stats().failed.load(Ordering::Relaxed));
    assert!(matches!(
        link.emit("after", json!({})).await,
        Err(IngestError::Stopping)
    ));
}
