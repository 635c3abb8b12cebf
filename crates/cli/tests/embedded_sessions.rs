//! The quick start keeps everything: `mqlink run` with no `broker` config (so the embedded
//! broker) and a connector with `session: persistent` to a file sink; the connector is
//! restarted (config reload) while 10,000 QoS 1 messages are published to the embedded
//! broker, and every message reaches the file byte for byte.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mqlink_testkit::{free_port, mosquitto_pub, require_binary, wait_until};

const N: usize = 10_000;

fn config(sink: &str, dead_letter: &str) -> String {
    format!(
        r#"connectors:
  - name: load
    subscribe: ["load/data"]
    qos: 1
    session: persistent
    format: raw
    dead_letter: "{dead_letter}"
    sink: {{file: {{path: "{sink}"}}}}
"#
    )
}

/// Lines of the sink file that are not probes.
fn records(sink: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(sink)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("probe"))
        .map(String::from)
        .collect()
}

#[test]
fn a_persistent_connector_restarted_mid_stream_gets_all_10000_messages() {
    let _ = require_binary("mosquitto_pub", "mosquitto-clients");
    let work = tempfile::tempdir().unwrap();
    let sink = work.path().join("sink.txt");
    let dl = |n| {
        work.path()
            .join(format!("dead-{n}.jsonl"))
            .display()
            .to_string()
    };
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut d = Daemon::start_with_args(
        &config(&sink.display().to_string(), &dl(1)),
        &["--embedded-listen", &listen],
    );
    let conn = ["-h", "127.0.0.1", "-p", &port.to_string()];

    // The session exists once a probe reaches the sink (before it, nothing is queued for it).
    let mut probe = 0;
    let subscribed = wait_until(Instant::now() + T, || {
        probe += 1;
        let mut args = conn.to_vec();
        let payload = format!("probe-{probe}");
        args.extend(["-t", "load/data", "-q", "1", "-m", &payload]);
        mosquitto_pub(&args);
        std::fs::read_to_string(&sink).is_ok_and(|s| s.contains("probe"))
    });
    assert!(subscribed, "connector never subscribed: {}", d.log());

    // Distinct payloads of varied length and bytes (tabs, quotes, backslashes, UTF-8).
    let sent: Vec<String> = (0..N)
        .map(|i| format!("m{i:05}\t\"{}\\ é {}", "x".repeat(i % 97), i * 7919))
        .collect();
    let mut publisher = Command::new("mosquitto_pub")
        .args(conn)
        .args(["-t", "load/data", "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mosquitto_pub");
    let mut stdin = publisher.stdin.take().unwrap();
    let (first, rest) = sent.split_at(N / 2);
    for line in first {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
    // Restart the connector once it is busy with the first half, then publish the second
    // half while it comes back: those messages wait in its session.
    assert!(
        wait_until(Instant::now() + T, || records(&sink).len() >= 1000),
        "the connector is not receiving: {}",
        d.log()
    );
    d.write_config(&config(&sink.display().to_string(), &dl(2)));
    d.hangup();
    for line in rest {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let restarted = wait_until(Instant::now() + T, || {
        d.log().contains("connector changed; restarting it")
    });
    assert!(restarted, "the connector was not restarted: {}", d.log());
    let at_restart = records(&sink).len();
    assert!(at_restart < N, "all messages arrived before the restart");

    let out = publisher.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = wait_until(Instant::now() + Duration::from_secs(60), || {
        let got = records(&sink);
        let mut seen = std::collections::HashSet::new();
        got.iter().filter(|l| seen.insert(l.as_str())).count() >= N
    });
    let got = records(&sink);
    // At-least-once: a message in flight at the restart may come twice; keep first copies.
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<&String> = got.iter().filter(|l| seen.insert(l.as_str())).collect();
    let missing = sent.iter().filter(|l| !seen.contains(l.as_str())).count();
    assert!(
        all && missing == 0,
        "{missing} of {N} messages missing ({} lines in the sink, {at_restart} at the restart): {}",
        got.len(),
        d.log()
    );
    assert_eq!(unique.len(), N, "lines in the sink that were never sent");
    assert!(
        unique.iter().zip(&sent).all(|(a, b)| *a == b),
        "messages reordered or altered"
    );
    eprintln!(
        "{N} messages, {} lines in the sink ({} duplicates), {at_restart} before the restart",
        got.len(),
        got.len() - N
    );
}

/// A QoS 1 publisher over a raw MQTT 3.1.1 socket that keeps up to `WINDOW` messages in
/// flight and records which sequence numbers the broker acknowledged (PUBACK). It publishes
/// until the connection ends, so it is mid-stream whenever the broker stops.
struct Flood {
    writer: std::thread::JoinHandle<()>,
    reader: std::thread::JoinHandle<()>,
    acked: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Flood {
    const WINDOW: usize = 500;

    fn start(port: u16, topic: &str, first_seq: u64) -> Flood {
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex, mpsc};

        use bytes::{Bytes, BytesMut};
        use mqlink::mqtt::codec::{
            self, Connect, ConnectExtras, Packet, Protocol, Publish, PublishProps, QoS,
        };

        const V311: Protocol = Protocol::V311;
        fn send(s: &mut TcpStream, packet: &Packet) -> std::io::Result<()> {
            let mut out = BytesMut::new();
            codec::encode(packet, V311, &mut out).expect("encodable packet");
            s.write_all(&out)
        }
        // One whole packet, or None at the end of the stream.
        fn read_packet(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Packet> {
            use std::io::Read;
            loop {
                if let Some(p) = codec::decode(buf, V311, 1 << 20).expect("well-formed packet") {
                    return Some(p);
                }
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }

        let mut sock = TcpStream::connect(("127.0.0.1", port)).expect("connect to the broker");
        sock.set_nodelay(true).unwrap();
        let connect = Connect {
            client_id: format!("flood-{first_seq}"),
            keep_alive: 60,
            clean_start: true,
            session_expiry: None,
            receive_max: None,
            max_packet_size: None,
            will: None,
            username: None,
            password: None,
            extras: ConnectExtras::default(),
        };
        send(&mut sock, &Packet::Connect(Box::new(connect))).unwrap();
        let mut rbuf = BytesMut::new();
        match read_packet(&mut sock, &mut rbuf) {
            Some(Packet::ConnAck(a)) => assert_eq!(a.code, 0, "CONNACK refused: {a:?}"),
            other => panic!("expected CONNACK, got {other:?}"),
        }

        let in_flight: Arc<Mutex<HashMap<u16, u64>>> = Arc::default();
        let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
        let (credit_tx, credit_rx) = mpsc::channel::<()>();
        let mut rsock = sock.try_clone().unwrap();
        let reader = {
            let (in_flight, acked) = (Arc::clone(&in_flight), Arc::clone(&acked));
            std::thread::spawn(move || {
                while let Some(p) = read_packet(&mut rsock, &mut rbuf) {
                    if let Packet::PubAck(ack) = p {
                        let seq = in_flight.lock().unwrap().remove(&ack.pid);
                        if let Some(seq) = seq {
                            acked.lock().unwrap().push(seq);
                            let _ = credit_tx.send(());
                        }
                    }
                }
                // Dropping credit_tx stops the writer.
            })
        };
        let topic = topic.to_owned();
        let writer = std::thread::spawn(move || {
            let mut credits = Self::WINDOW;
            for seq in first_seq.. {
                if credits == 0 {
                    match credit_rx.recv() {
                        Ok(()) => credits += 1,
                        Err(_) => return,
                    }
                }
                credits += credit_rx.try_iter().count();
                credits -= 1;
                // In flight < WINDOW, far below 65,535: an id is free again by the time it
                // comes round.
                let pid = (seq % 65_535 + 1) as u16;
                in_flight.lock().unwrap().insert(pid, seq);
                let publish = Packet::Publish(Publish {
                    topic: Arc::from(topic.as_str()),
                    payload: Bytes::from(seq.to_string()),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    dup: false,
                    pid: Some(pid),
                    props: PublishProps::default(),
                });
                if send(&mut sock, &publish).is_err() {
                    return;
                }
            }
        });
        Flood {
            writer,
            reader,
            acked,
        }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits for the connection to end; the sequence numbers the broker acknowledged.
    fn join(self) -> Vec<u64> {
        self.reader.join().unwrap();
        self.writer.join().unwrap();
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

/// Regression (found by issue 15's interop run: 1 of 3,000 acknowledged messages missing
/// after a restart of `mqlink broker`, in one run of five). The broker writes queued messages
/// to disk behind its acknowledgements, one file each; on a loaded machine that writer fell
/// seconds behind a QoS 1 stream. A graceful stop waited at most 5 s for it, then the process
/// exited and the rest of the batch failed ("background task failed"): every acknowledged
/// message still unwritten was lost. Here a persistent subscriber is offline while a publisher
/// floods QoS 1 messages and the broker is stopped gracefully (SIGTERM) three times; every
/// message the broker acknowledged must come out of the subscriber's session after the last
/// restart. Before the fix it lost thousands in 2 runs of 2.
#[test]
fn every_message_acknowledged_before_a_graceful_stop_survives_the_restart() {
    let _ = mqlink_testkit::require_binary("mosquitto_sub", "mosquitto-clients");
    let work = tempfile::tempdir().unwrap();
    let persistence = work.path().join("persistence").display().to_string();
    let args = ["--persistence".to_owned(), persistence];
    let topic = "stop/flood";
    let sub_args = |port: u16| -> Vec<String> {
        ["-h", "127.0.0.1", "-p", &port.to_string()]
            .iter()
            .chain(&["-i", "stop-sub", "-c", "-q", "1", "-t", topic])
            .map(|s| s.to_string())
            .collect()
    };

    let mut acked = Vec::new();
    for round in 0..3u64 {
        let mut broker = EmbeddedBroker::start_with(&args, &[]);
        if round == 0 {
            // Create the subscriber's session, then leave it offline: -E exits once
            // subscribed.
            let mut a = sub_args(broker.port);
            a.push("-E".into());
            let out = Command::new("mosquitto_sub").args(&a).output().unwrap();
            assert!(out.status.success(), "mosquitto_sub -E: {out:?}");
        }
        let flood = Flood::start(broker.port, topic, round * 1_000_000);
        assert!(
            wait_until(Instant::now() + T, || flood.acked_count() >= 8000),
            "the flood is not being acknowledged"
        );
        let status = broker.terminate();
        assert!(status.success(), "mqlink broker stopped with {status}");
        acked.extend(flood.join());
    }

    let broker = EmbeddedBroker::start_with(&args, &[]);
    let sub = mqlink_testkit::MosquittoSub::start(&sub_args(broker.port));
    let expected: std::collections::HashSet<String> = acked.iter().map(u64::to_string).collect();
    let got = || -> std::collections::HashSet<String> { sub.lines().into_iter().collect() };
    let _ = wait_until(Instant::now() + Duration::from_secs(60), || {
        got().is_superset(&expected)
    });
    let got = got();
    let mut missing: Vec<&String> = expected.difference(&got).collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost across graceful restarts (e.g. {:?})",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(10)]
    );
    eprintln!(
        "{} acknowledged messages, all {} delivered after three graceful restarts",
        expected.len(),
        got.len()
    );
}
