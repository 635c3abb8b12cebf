//! A hostile broker: a fake on a free port that, connection by connection, sends malformed,
//! truncated, oversized and out-of-order packets, then finally behaves. The engine must
//! drop each bad connection with a reason, reconnect, never panic, never allocate an
//! advertised length up front, and deliver a publish made during the chaos once the broker
//! behaves.

mod common;
use common::read_packet;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mqlink::mqtt::client::{self, LinkState, MqttOptions};
use mqlink::mqtt::codec::{Protocol, Publish, PublishProps, QoS};
use mqlink::mqtt::state::Verdict;
use mqlink::mqtt::url::BrokerUrl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const CONNACK: &[u8] = &[0x20, 0x02, 0x00, 0x00];
/// The largest remaining length MQTT can express (0xff 0xff 0xff 0x7f = 268,435,455 bytes):
/// 300 MB does not fit in four length bytes, so this is the closest a broker can advertise.
const HUGE_PUBLISH_HEADER: &[u8] = &[0x30, 0xff, 0xff, 0xff, 0x7f];

/// What the fake does on its n-th connection (then behaves).
#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    ConnackTwice,
    /// Five continuation bytes in the remaining length.
    BadRemainingLength,
    /// A PUBACK for a packet id never sent, then a 268 MB PUBLISH header with a few bytes.
    UnknownPubackThenHugeLength,
    GarbageAfterConnack,
    /// Half a PUBLISH, then the socket closes.
    Truncated,
    /// A PUBACK where the CONNACK should be.
    PubackInsteadOfConnack,
    /// Acks for nothing and a SUBACK nobody asked for, then PINGREQ (a client packet).
    OutOfOrder,
}

const SCRIPT: &[Misbehaviour] = &[
    Misbehaviour::ConnackTwice,
    Misbehaviour::BadRemainingLength,
    Misbehaviour::UnknownPubackThenHugeLength,
    Misbehaviour::GarbageAfterConnack,
    Misbehaviour::Truncated,
    Misbehaviour::PubackInsteadOfConnack,
    Misbehaviour::OutOfOrder,
];

/// Read one whole MQTT packet (any size this test sends); `None` on EOF.
/// Whether the peer closes the socket within `within` (reading and discarding meanwhile).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Seen {
    attempts: usize,
    /// Whether the engine hung up promptly after each misbehaviour.
    hung_up: Vec<(Misbehaviour, bool)>,
    rss_growth_kib: Option<i64>,
    acked_pids: Vec<u16>,
}

async fn misbehave(s: &mut TcpStream, m: Misbehaviour, seen: &Mutex<Seen>) {
    let w = match m {
        Misbehaviour::ConnackTwice => [CONNACK, CONNACK].concat(),
        Misbehaviour::BadRemainingLength => {
            [CONNACK, &[0x30, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0]].concat()
        }
        Misbehaviour::UnknownPubackThenHugeLength => [
            CONNACK,
            &[0x40, 0x02, 0x10, 0x92],
            HUGE_PUBLISH_HEADER,
            &[0u8; 1024],
        ]
        .concat(),
        Misbehaviour::GarbageAfterConnack => [CONNACK, &[0x00, 0x03, 0xde, 0xad, 0xbe]].concat(),
        Misbehaviour::Truncated => [CONNACK, &[0x32, 0x10, 0x00, 0x03, b'a']].concat(),
        Misbehaviour::PubackInsteadOfConnack => vec![0x40, 0x02, 0x00, 0x01],
        Misbehaviour::OutOfOrder => [
            CONNACK,
            &[0x70, 0x02, 0x33, 0x33],       // PUBCOMP for nothing
            &[0x90, 0x03, 0x44, 0x44, 0x00], // SUBACK for nothing
            &[0xc0, 0x00],                   // PINGREQ: never from a broker
        ]
        .concat(),
    };
    let before = rss_kib();
    let _ = s.write_all(&w).await;
    if matches!(m, Misbehaviour::Truncated) {
        // Close mid-packet; the engine sees EOF.
        let _ = s.shutdown().await;
    }
    let hung_up = closed_within(s, Duration::from_secs(5)).await;
    let mut seen = seen.lock().unwrap();
    if matches!(m, Misbehaviour::UnknownPubackThenHugeLength) {
        seen.rss_growth_kib = Some(rss_kib() as i64 - before as i64);
    }
    seen.hung_up.push((m, hung_up));
}

/// A minimal well-behaved MQTT 3.1.1 broker: CONNACK, PUBACK for QoS 1, PINGRESP.
async fn behave(s: &mut TcpStream, mut buf: Vec<u8>, seen: &Mutex<Seen>) {
    let _ = s.write_all(CONNACK).await;
    while let Some(p) = read_packet(s, &mut buf).await {
        match p[0] >> 4 {
            3 if p[0] & 0x06 == 0x02 => {
                // Fixed header length, then topic (2 + n), then the packet id.
                let hdr = 1 + p[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
                let tlen = usize::from(u16::from_be_bytes([p[hdr], p[hdr + 1]]));
                let pid = [p[hdr + 2 + tlen], p[hdr + 3 + tlen]];
                seen.lock()
                    .unwrap()
                    .acked_pids
                    .push(u16::from_be_bytes(pid));
                let _ = s.write_all(&[0x40, 0x02, pid[0], pid[1]]).await;
            }
            12 => {
                let _ = s.write_all(&[0xd0, 0x00]).await;
            }
            14 => return,
            _ => {}
        }
    }
}

async fn fake_broker(listener: TcpListener, seen: Arc<Mutex<Seen>>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let n = {
            let mut g = seen.lock().unwrap();
            g.attempts += 1;
            g.attempts - 1
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let Some(connect) = read_packet(&mut s, &mut buf).await else {
                return;
            };
            assert_eq!(connect[0], 0x10, "first packet must be CONNECT");
            match SCRIPT.get(n) {
                Some(m) => misbehave(&mut s, *m, &seen).await,
                None => behave(&mut s, buf, &seen).await,
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_broker_is_survived_and_the_publish_lands_once_it_behaves() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let broker = tokio::spawn(fake_broker(listener, seen.clone()));

    let mut opts = MqttOptions::new(BrokerUrl::parse(&format!("mqtt://127.0.0.1:{port}")).unwrap());
    opts.client_id = "hostile-test".into();
    opts.protocol = Protocol::V311;
    opts.fallback_to_311 = false;
    opts.reconnect_min = Duration::from_millis(10);
    opts.reconnect_max = Duration::from_millis(50);
    opts.max_packet_size = 1024 * 1024;
    let (client, _deliveries, event_loop) = client::new(opts).unwrap();

    // Every reason the link went down, in order.
    let reasons = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut link = client.link();
    let r = reasons.clone();
    tokio::spawn(async move {
        while link.changed().await.is_ok() {
            if let LinkState::Down { reason, .. } = link.borrow_and_update().clone() {
                r.lock().unwrap().push(reason);
            }
        }
    });

    let handle = client
        .publish(Publish {
            topic: "hostile/t".into(),
            payload: Bytes::from_static(b"survived"),
            qos: QoS::AtLeastOnce,
            retain: false,
            dup: false,
            pid: None,
            props: PublishProps::default(),
        })
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let engine = tokio::spawn(event_loop.run(shutdown.clone()));

    let verdict = tokio::time::timeout(Duration::from_secs(60), handle)
        .await
        .expect("publish acknowledged once the broker behaves");
    assert_eq!(verdict, Verdict::Acknowledged);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), engine)
        .await
        .expect("engine stops")
        .expect("engine never panics");
    broker.abort();

    let seen = seen.lock().unwrap();
    let reasons = reasons.lock().unwrap().clone();
    assert!(
        seen.attempts > SCRIPT.len(),
        "reconnected after each misbehaviour: {}",
        seen.attempts
    );
    for (m, hung_up) in &seen.hung_up {
        assert!(
            hung_up,
            "engine did not drop the connection after {m:?}; reasons {reasons:#?}"
        );
    }
    assert_eq!(seen.hung_up.len(), SCRIPT.len());
    let growth = seen.rss_growth_kib.expect("huge length case ran");
    assert!(
        growth < 32 * 1024,
        "RSS grew by {growth} KiB after a 268 MB length prefix"
    );
    // The stray PUBACK (id 0x1092) must not have released our message: the good broker acked it.
    assert!(!seen.acked_pids.is_empty());
    for expected in [
        "unexpected connack",
        "malformed remaining length",
        "268435460 bytes exceeds the maximum packet size",
        "invalid header",
        "broker closed the connection",
        "expected connack, got puback",
        "unexpected pingreq",
    ] {
        assert!(
            reasons.iter().any(|r| r.to_lowercase().contains(expected)),
            "no down reason mentions {expected:?}: {reasons:#?}"
        );
    }
    let started = Instant::now();
    drop(client);
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// A broker that answers every CONNECT with the MQTT 3.1.1 return code `code`; the time of
/// each connection attempt goes to `attempts`.
async fn refusing_broker(
    listener: TcpListener,
    code: u8,
    attempts: tokio::sync::mpsc::UnboundedSender<Instant>,
) {
    while let Ok((mut s, _)) = listener.accept().await {
        let _ = attempts.send(Instant::now());
        let mut buf = Vec::new();
        if read_packet(&mut s, &mut buf).await.is_some() {
            let _ = s.write_all(&[0x20, 0x02, 0x00, code]).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_refusals_are_named_and_retried_with_backoff() {
    for (code, words) in [
        (2, "client identifier rejected"),
        (4, "bad user name or password"),
        (5, "not authorized"),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (attempts_tx, mut attempts) = tokio::sync::mpsc::unbounded_channel();
        let broker = tokio::spawn(refusing_broker(listener, code, attempts_tx));
        let mut opts =
            MqttOptions::new(BrokerUrl::parse(&format!("mqtt://127.0.0.1:{port}")).unwrap());
        opts.protocol = Protocol::V311;
        opts.fallback_to_311 = false;
        opts.reconnect_min = Duration::from_millis(100);
        opts.reconnect_max = Duration::from_millis(400);
        let (client, _deliveries, event_loop) = client::new(opts).unwrap();
        let mut link = client.link();
        let shutdown = CancellationToken::new();
        let engine = tokio::spawn(event_loop.run(shutdown.clone()));
        let reason = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                link.changed().await.unwrap();
                if let LinkState::Down { reason, .. } = link.borrow_and_update().clone() {
                    return reason;
                }
            }
        })
        .await
        .expect("link goes down with a reason");
        assert!(
            reason.contains(&format!(
                "broker refused the connection: {words} (code 0x0{code}"
            )),
            "{reason}"
        );
        // Retried, but not in a tight loop: await four attempts from the fake broker.
        let mut at = Vec::new();
        while at.len() < 4 {
            let next = tokio::time::timeout(Duration::from_secs(20), attempts.recv()).await;
            match next {
                Ok(Some(t)) => at.push(t),
                _ => panic!("only {} connection attempts", at.len()),
            }
        }
        shutdown.cancel();
        engine.await.expect("engine never panics");
        broker.abort();
        for w in at.windows(2) {
            // Backoff has jitter; the floor is well above a tight reconnect loop.
            assert!(w[1] - w[0] >= Duration::from_millis(40), "attempts {at:?}");
        }
    }
}
