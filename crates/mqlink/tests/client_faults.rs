//! The MQTT engine's own edges, each a regression: requests it can never send are
//! answered at once, the CONNACK wait honours `connect_timeout`, a broker that drops every
//! connection right after CONNACK is not hammered, and an application that stops taking
//! deliveries does not make the engine declare the broker dead.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mqlink::mqtt::client::{self, LinkState, MqttOptions};
use mqlink::mqtt::codec::{Publish, PublishProps, QoS};
use mqlink::mqtt::state::Verdict;
use mqlink::mqtt::url::BrokerUrl;
use mqlink_testkit::{Mosquitto, MosquittoOptions, mosquitto_pub_with_stdin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn options(url: &str) -> MqttOptions {
    let mut o = MqttOptions::new(BrokerUrl::parse(url).unwrap());
    o.client_id = format!("client-faults-{}", std::process::id());
    o
}

#[tokio::test]
async fn requests_that_can_never_be_sent_are_answered_at_once_even_offline() {
    // Regression: `mqlink sub -t 'a/#/b'` waited forever: the SUBSCRIBE failed to encode
    // and its caller never got an answer; the same for a publish to an invalid topic.
    let mut o = options("mqtt://127.0.0.1:1");
    o.reconnect_min = Duration::from_secs(30);
    let (client, _deliveries, event_loop) = client::new(o).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(event_loop.run(stop.clone()));
    let t = Duration::from_secs(5);
    let codes = tokio::time::timeout(
        t,
        client.subscribe(vec![
            ("a/#/b".into(), QoS::AtLeastOnce),
            ("ok/#".into(), QoS::AtLeastOnce),
        ]),
    )
    .await
    .expect("answered")
    .unwrap();
    assert_eq!(codes, vec![0x8f, 0x80]);
    let handle = client
        .publish(Publish {
            topic: Arc::from("bad/+/topic"),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: false,
            dup: false,
            pid: None,
            props: PublishProps::default(),
        })
        .await
        .unwrap();
    let verdict = tokio::time::timeout(t, handle).await.expect("decided");
    assert!(
        matches!(verdict, Verdict::Rejected { code: 0x90, .. }),
        "{verdict:?}"
    );
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn the_connack_wait_honours_connect_timeout() {
    // Regression: the CONNACK wait was a fixed 10 s whatever `connect_timeout` said.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s); // accept, read nothing, answer nothing
        }
    });
    let mut o = options(&format!("mqtt://127.0.0.1:{port}"));
    o.connect_timeout = Duration::from_millis(300);
    o.reconnect_min = Duration::from_secs(30);
    let (client, _d, event_loop) = client::new(o).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(event_loop.run(stop.clone()));
    let started = Instant::now();
    let mut w = client.link();
    let state = tokio::time::timeout(
        Duration::from_secs(5),
        w.wait_for(|s| matches!(s, LinkState::Down { .. })),
    )
    .await
    .expect("gave up on the CONNACK in time")
    .unwrap()
    .clone();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(format!("{state:?}").contains("300ms"), "{state:?}");
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_broker_that_drops_every_connection_after_connack_is_not_hammered() {
    // Regression: each CONNACK reset the backoff, so a broker that accepted and then
    // dropped us saw a reconnect every ~40 ms (here: about 70 in 3 s).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connects = Arc::new(AtomicUsize::new(0));
    let n = connects.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(&[0x20, 0x03, 0x00, 0x00, 0x00]).await;
            drop(s);
        }
    });
    let mut o = options(&format!("mqtt://127.0.0.1:{port}"));
    o.reconnect_min = Duration::from_millis(50);
    o.reconnect_max = Duration::from_secs(2);
    let (_client, _d, event_loop) = client::new(o).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(event_loop.run(stop.clone()));
    // Counting attempts over a span of time is the point; nothing to await instead.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    task.await.unwrap();
    let n = connects.load(Ordering::SeqCst);
    assert!((3..=15).contains(&n), "{n} connections in 3 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_stops_taking_deliveries_does_not_fail_the_keepalive() {
    // Regression: with deliveries backed up the engine stopped reading, could not see the
    // PINGRESP, and dropped the connection as if the broker were dead (connectors with a
    // stalled sink reconnected every keepalive).
    let broker = Mosquitto::start(MosquittoOptions::default());
    let mut o = options(&broker.url());
    o.keep_alive = Duration::from_secs(1);
    o.delivery_capacity = 1;
    let (client, _deliveries_never_read, event_loop) = client::new(o).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(event_loop.run(stop.clone()));
    let codes = client
        .subscribe(vec![("ka/#".into(), QoS::AtLeastOnce)])
        .await
        .unwrap();
    assert_eq!(codes, vec![1]);
    let mut args = broker.client_args();
    args.extend(["-t", "ka/1", "-q", "1", "-l"].map(String::from));
    let out = mosquitto_pub_with_stdin(&args, "m\n".repeat(50).as_bytes());
    assert!(out.status.success());
    let mut w = client.link();
    w.borrow_and_update();
    // Four keepalive periods with nobody reading: the connection must simply stay.
    let changed = tokio::time::timeout(Duration::from_secs(4), w.changed()).await;
    assert!(changed.is_err(), "link state changed: {:?}", *w.borrow());
    stop.cancel();
    task.await.unwrap();
}

/// Regression: with every handle dropped right after acknowledging an incoming QoS 2
/// message, the engine sent its DISCONNECT straight after the PUBREC, leaving the
/// exchange open (the broker keeps it for a resumed session; mosquitto_sub, which prints
/// such a message only at its PUBREL, never leaves one open). A clean end now waits for
/// the PUBREL and answers it: the fake broker must see PUBREC, PUBCOMP, DISCONNECT.
#[tokio::test]
async fn a_clean_end_completes_the_incoming_qos2_exchanges_first() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("mqtt://{}", listener.local_addr().unwrap());
    let broker = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let connect = common::read_packet(&mut s, &mut buf).await.unwrap();
        assert_eq!(connect[0], 0x10);
        // CONNACK (3.1.1), then PUBLISH QoS 2, pid 7, topic "t", payload "x".
        s.write_all(&[0x20, 2, 0, 0, 0x34, 6, 0, 1, b't', 0, 7, b'x'])
            .await
            .unwrap();
        let mut seen = Vec::new();
        while let Some(p) = common::read_packet(&mut s, &mut buf).await {
            seen.push(p[0]);
            if p[0] == 0x50 {
                // PUBREL for the PUBREC.
                s.write_all(&[0x62, 2, 0, 7]).await.unwrap();
            }
            if p[0] == 0xE0 {
                break;
            }
        }
        seen
    });
    let mut o = options(&url);
    o.protocol = mqlink::mqtt::codec::Protocol::V311;
    let (client, mut deliveries, event_loop) = client::new(o).unwrap();
    let run = tokio::spawn(event_loop.run(CancellationToken::new()));
    let d = deliveries.recv().await.unwrap();
    assert_eq!(d.publish.qos, QoS::ExactlyOnce);
    client.ack(d.ack.unwrap());
    drop(client);
    drop(deliveries);
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the loop ends by itself")
        .unwrap();
    let seen = broker.await.unwrap();
    assert_eq!(seen, [0x50, 0x70, 0xE0], "PUBREC, PUBCOMP, DISCONNECT");
}

/// MQTT 5 topic aliases from the broker: a PUBLISH with a topic and an alias sets it, the
/// next one with the alias alone is delivered with that topic (before, with an empty one).
#[tokio::test]
async fn topic_aliases_from_the_broker_are_resolved() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("mqtt://{}", listener.local_addr().unwrap());
    let broker = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let connect = common::read_packet(&mut s, &mut buf).await.unwrap();
        assert_eq!(connect[0], 0x10);
        // CONNACK (v5); PUBLISH QoS 0 "t" with Topic Alias 1 (0x23), payload "x"; then
        // the alias alone, payload "y".
        s.write_all(&[0x20, 3, 0, 0, 0]).await.unwrap();
        s.write_all(&[0x30, 8, 0, 1, b't', 3, 0x23, 0, 1, b'x'])
            .await
            .unwrap();
        s.write_all(&[0x30, 7, 0, 0, 3, 0x23, 0, 1, b'y'])
            .await
            .unwrap();
        // Hold the connection until the client leaves.
        while common::read_packet(&mut s, &mut buf).await.is_some() {}
    });
    let mut o = options(&url);
    o.protocol = mqlink::mqtt::codec::Protocol::V5;
    o.connect_extras.topic_alias_maximum = Some(4);
    let (client, mut deliveries, event_loop) = client::new(o).unwrap();
    let run = tokio::spawn(event_loop.run(CancellationToken::new()));
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = deliveries.recv().await.unwrap();
        got.push((d.publish.topic.to_string(), d.publish.payload.clone()));
    }
    assert_eq!(
        got,
        [
            ("t".to_string(), Bytes::from_static(b"x")),
            ("t".to_string(), Bytes::from_static(b"y"))
        ]
    );
    drop(client);
    drop(deliveries);
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the loop ends by itself")
        .unwrap();
    broker.await.unwrap();
}

/// Regression: a broker resuming a session sends its unacknowledged messages right after
/// CONNACK, before the SUBACK. An application that awaits `subscribe` before it takes
/// deliveries (the natural order) waited forever once they outnumbered the delivery
/// buffer: the engine stopped reading with the SUBACK unread behind them. It now keeps
/// reading (bounded in bytes) while a SUBACK is awaited.
#[tokio::test]
async fn subscribe_is_answered_behind_a_resent_backlog_larger_than_the_delivery_buffer() {
    const RESENT: u16 = 5_000;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("mqtt://{}", listener.local_addr().unwrap());
    let broker = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let connect = common::read_packet(&mut s, &mut buf).await.unwrap();
        assert_eq!(connect[0], 0x10);
        // CONNACK (3.1.1) with session present, then the session's QoS 1 messages: topic
        // "t", payload the packet id, as the broker resends them before reading anything.
        let mut out = vec![0x20, 2, 1, 0];
        for pid in 1..=RESENT {
            let [hi, lo] = pid.to_be_bytes();
            out.extend_from_slice(&[0x32, 7, 0, 1, b't', hi, lo, hi, lo]);
        }
        s.write_all(&out).await.unwrap();
        let mut pubacks = 0;
        while let Some(p) = common::read_packet(&mut s, &mut buf).await {
            match p[0] {
                // SUBSCRIBE: granted QoS 1.
                0x82 => s.write_all(&[0x90, 3, p[2], p[3], 1]).await.unwrap(),
                0x40 => pubacks += 1,
                0xE0 => break,
                _ => {}
            }
        }
        pubacks
    });
    let mut o = options(&url);
    o.protocol = mqlink::mqtt::codec::Protocol::V311;
    o.clean_start = false;
    o.delivery_capacity = 16;
    let (client, mut deliveries, event_loop) = client::new(o).unwrap();
    let run = tokio::spawn(event_loop.run(CancellationToken::new()));
    let codes = tokio::time::timeout(
        Duration::from_secs(10),
        client.subscribe(vec![("t".into(), QoS::AtLeastOnce)]),
    )
    .await
    .expect("the SUBACK behind the resent messages is read")
    .unwrap();
    assert_eq!(codes, vec![1]);
    for pid in 1..=RESENT {
        let d = deliveries.recv().await.unwrap();
        assert_eq!(&d.publish.payload[..], pid.to_be_bytes(), "in order");
        client.ack(d.ack.unwrap());
    }
    drop(client);
    drop(deliveries);
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the loop ends by itself")
        .unwrap();
    assert_eq!(broker.await.unwrap(), usize::from(RESENT));
}

/// While the engine reads on behind undelivered messages (a SUBACK is awaited), the
/// keepalive still judges the broker: one that answers neither the SUBSCRIBE nor a PINGREQ
/// is dropped as dead. (Only while reading is paused may a PINGRESP sit unread.)
#[tokio::test]
async fn a_silent_broker_is_dropped_while_a_suback_is_awaited_behind_a_backlog() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("mqtt://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        common::read_packet(&mut s, &mut buf).await.unwrap();
        let mut out = vec![0x20, 2, 1, 0];
        for pid in 1..=100u16 {
            let [hi, lo] = pid.to_be_bytes();
            out.extend_from_slice(&[0x32, 5, 0, 1, b't', hi, lo]);
        }
        s.write_all(&out).await.unwrap();
        // Read everything, answer nothing.
        while common::read_packet(&mut s, &mut buf).await.is_some() {}
    });
    let mut o = options(&url);
    o.protocol = mqlink::mqtt::codec::Protocol::V311;
    o.clean_start = false;
    o.keep_alive = Duration::from_secs(1);
    o.delivery_capacity = 1;
    o.reconnect_min = Duration::from_secs(30);
    let (client, _deliveries_not_taken, event_loop) = client::new(o).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(event_loop.run(stop.clone()));
    let subscribe = client.subscribe(vec![("t".into(), QoS::AtLeastOnce)]);
    let mut w = client.link();
    let down = async {
        w.wait_for(|s| matches!(s, LinkState::Down { .. }))
            .await
            .unwrap()
            .clone()
    };
    let state = tokio::select! {
        _ = subscribe => panic!("the broker never answered the SUBSCRIBE"),
        r = tokio::time::timeout(Duration::from_secs(10), down) => r.expect("dropped the silent broker"),
    };
    assert!(format!("{state:?}").contains("keepalive"), "{state:?}");
    stop.cancel();
    task.await.unwrap();
}

/// Regression: an application takes its deliveries in the same task that calls
/// `subscribe`, so while it awaits a SUBACK it takes none. The broker sends the SUBACK
/// behind everything it had for the subscription already in place: here a QoS 0 flood of
/// more than the delivery buffer (1024) and, behind it, more than the engine's 64 MiB
/// backlog bound. The engine stopped reading at the bound with the SUBACK unread, and
/// `subscribe` never returned. It now reads on; the QoS 0 messages beyond the bound are
/// dropped and counted, the others delivered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_behind_a_qos0_flood_is_answered_and_what_overflowed_is_counted() {
    const SMALL: usize = 1100;
    const LARGE: usize = 100;
    let broker = Mosquitto::start(MosquittoOptions::default());
    let stop = CancellationToken::new();
    let (client, mut deliveries, event_loop) = client::new(options(&broker.url())).unwrap();
    let task = tokio::spawn(event_loop.run(stop.clone()));
    let codes = client
        .subscribe(vec![("flood".into(), QoS::AtMostOnce)])
        .await
        .unwrap();
    assert_eq!(codes, vec![0]);

    // The flood, each message numbered: acknowledged (QoS 1) by the broker, so all of it
    // is on its way to the subscriber, at QoS 0, before the next SUBSCRIBE arrives.
    let mut po = options(&broker.url());
    po.client_id.push_str("-publisher");
    let (publisher, _none, publisher_loop) = client::new(po).unwrap();
    let publisher_task = tokio::spawn(publisher_loop.run(stop.clone()));
    let mut verdicts = Vec::new();
    for i in 0..SMALL + LARGE {
        let mut payload = (i as u64).to_be_bytes().to_vec();
        if i >= SMALL {
            payload.resize(1 << 20, b'x');
        }
        let handle = publisher
            .publish(Publish::new("flood", payload, QoS::AtLeastOnce))
            .await
            .unwrap();
        verdicts.push(handle);
    }
    for v in verdicts {
        assert_eq!(v.await, Verdict::Acknowledged);
    }

    let codes = tokio::time::timeout(
        Duration::from_secs(30),
        client.subscribe(vec![("other".into(), QoS::AtMostOnce)]),
    )
    .await
    .expect("the SUBACK behind the flood is read")
    .unwrap();
    assert_eq!(codes, vec![0]);

    // Everything not dropped is delivered: take deliveries until the two add up.
    let stats = client.stats().clone();
    let mut got: Vec<u64> = Vec::new();
    while got.len() as u64 + stats.qos0_dropped() < (SMALL + LARGE) as u64 {
        let d = tokio::time::timeout(Duration::from_secs(10), deliveries.recv())
            .await
            .expect("a delivery or a counted drop for every message")
            .unwrap();
        got.push(u64::from_be_bytes(
            d.publish.payload[..8].try_into().unwrap(),
        ));
    }
    let dropped = stats.qos0_dropped();
    eprintln!("delivered {}, dropped {dropped}", got.len());
    assert_eq!(got.len() as u64 + dropped, (SMALL + LARGE) as u64);
    assert!(dropped > 0, "more arrived than the engine holds");
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "delivered in order, each once"
    );
    assert_eq!(
        got[..SMALL],
        (0..SMALL as u64).collect::<Vec<_>>(),
        "nothing dropped before the bound was reached"
    );
    // Held: the delivery buffer's 1024, then up to the backlog's 64 MiB bound (one large
    // message may cross it).
    let large_held = got.len() - SMALL;
    assert!(large_held <= 65, "{large_held} MiB held behind the buffer");
    stop.cancel();
    task.await.unwrap();
    publisher_task.await.unwrap();
}
