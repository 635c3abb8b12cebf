//! The library API against a real Mosquitto: emit is durable and routed, subscriptions fan
//! out to every handler, and are renewed after the broker forgets them; `subscribe` on its
//! own: QoS 1 delivery in order, two handlers on one filter, a filter the broker's ACL
//! refuses, an invalid filter, a stopped link.

use std::time::Duration;

use mqlink::config::{self, Format};
use mqlink::mqtt::client::{self, MqttOptions};
use mqlink::mqtt::codec::QoS;
use mqlink::mqtt::state::Verdict;
use mqlink::mqtt::url::BrokerUrl;
use mqlink::{Link, LinkError};
use mqlink_testkit::{Mosquitto, MosquittoOptions, mosquitto_pub, mosquitto_pub_with_stdin};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_subscribe_fan_out_and_resubscribe_after_a_broker_restart() {
    let mut broker = Mosquitto::start(MosquittoOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "broker: {{url: '{}', reconnect: {{min: 100ms, max: 500ms}}}}\nspool: {{dir: '{}'}}\nroutes:\n  - {{match: ['*'], topic: 'lib/{{event}}'}}\n",
        broker.url(),
        dir.path().join("spool").display()
    );
    let config = config::from_str(&yaml, Format::Yaml, "test").unwrap();
    let (link, tasks) = Link::open(&config).unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(tasks.run(stop.clone()));

    let mut a = link.subscribe("lib/#", QoS::AtLeastOnce).await.unwrap();
    let mut b = link.subscribe("lib/#", QoS::AtLeastOnce).await.unwrap();
    let mut c = link.subscribe("other/+", QoS::AtMostOnce).await.unwrap();
    link.emit("hello", json!({"n": 1})).await.unwrap();
    for rx in [&mut a, &mut b] {
        let m = timeout(T, rx.recv()).await.unwrap().unwrap();
        assert_eq!(
            (&*m.topic, &m.payload[..]),
            ("lib/hello", &br#"{"n":1}"#[..])
        );
    }
    link.emit("other", json!({})).await.unwrap();
    for rx in [&mut a, &mut b] {
        assert_eq!(
            &*timeout(T, rx.recv()).await.unwrap().unwrap().topic,
            "lib/other"
        );
    }
    assert!(c.try_recv().is_err(), "other/+ matches neither message");
    assert!(
        link.emit("x", json!([1])).await.is_err(),
        "fields must be an object"
    );

    // The broker restarts without persistence: it forgets our subscriptions. The engine
    // renews them on the new session, so messages published afterwards still arrive.
    broker.stop();
    broker.restart();
    let mut args = broker.client_args();
    args.extend(["-t", "lib/after", "-m", "again", "-q", "1"].map(String::from));
    let got = timeout(T, async {
        loop {
            assert!(mosquitto_pub(&args).status.success());
            if let Ok(Some(m)) = timeout(Duration::from_millis(300), a.recv()).await {
                return m;
            }
        }
    })
    .await
    .expect("subscription renewed after the restart");
    assert_eq!(&*got.topic, "lib/after");

    stop.cancel();
    running.await.unwrap().unwrap();
}

/// A link to `broker` (spool in `dir`), its tasks running until the token is cancelled.
fn start_link(
    broker: &Mosquitto,
    dir: &std::path::Path,
) -> (Link, CancellationToken, JoinHandle<Result<(), LinkError>>) {
    let yaml = format!(
        "broker: {{url: '{}'}}\nspool: {{dir: '{}'}}\nroutes:\n  - {{match: ['*'], topic: 'lib/{{event}}'}}\n",
        broker.url(),
        dir.join("spool").display()
    );
    let config = config::from_str(&yaml, Format::Yaml, "test").unwrap();
    let (link, tasks) = Link::open(&config).unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(tasks.run(stop.clone()));
    (link, stop, running)
}

/// Publish `lines` on `topic` at QoS 1, one message per line, in order (one connection).
async fn publish_lines(broker: &Mosquitto, topic: &str, lines: &[String]) {
    let mut args = broker.client_args();
    args.extend(["-q", "1", "-t", topic, "-l"].map(String::from));
    let mut input = lines.join("\n");
    input.push('\n');
    let out =
        tokio::task::spawn_blocking(move || mosquitto_pub_with_stdin(&args, input.as_bytes()))
            .await
            .unwrap();
    assert!(out.status.success(), "mosquitto_pub: {out:?}");
}

/// The next `n` payloads `rx` receives, as text, each at QoS 1 on `topic`.
async fn receive(rx: &mut mpsc::Receiver<mqlink::Publish>, n: usize, topic: &str) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let m = timeout(T, rx.recv())
            .await
            .expect("a message in time")
            .expect("open");
        assert_eq!((&*m.topic, m.qos), (topic, QoS::AtLeastOnce));
        got.push(String::from_utf8(m.payload.to_vec()).unwrap());
    }
    got
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_delivers_matching_messages_at_qos_1_in_order() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (link, stop, running) = start_link(&broker, dir.path());
    let mut rx = link.subscribe("ord/+", QoS::AtLeastOnce).await.unwrap();
    // Not matching: a deeper level and another tree.
    publish_lines(&broker, "ord/a/deep", &["no".into()]).await;
    publish_lines(&broker, "other/a", &["no".into()]).await;
    let want = numbered("m", 500);
    publish_lines(&broker, "ord/a", &want).await;
    assert_eq!(receive(&mut rx, 500, "ord/a").await, want);
    assert!(rx.try_recv().is_err(), "nothing else arrived");
    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receivers_on_one_filter_each_get_every_message_once() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (link, stop, running) = start_link(&broker, dir.path());
    let mut a = link.subscribe("two/#", QoS::AtLeastOnce).await.unwrap();
    let mut b = link.subscribe("two/#", QoS::AtLeastOnce).await.unwrap();
    let mut want = numbered("m", 300);
    publish_lines(&broker, "two/x", &want).await;
    // A last message: a duplicate of any earlier one would arrive before it (one
    // connection, in order), so receiving exactly `want` then `end` rules duplicates out.
    publish_lines(&broker, "two/x", &["end".into()]).await;
    want.push("end".into());
    for rx in [&mut a, &mut b] {
        assert_eq!(receive(rx, want.len(), "two/x").await, want);
    }
    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_the_broker_refuses_is_refused_and_the_link_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(MosquittoOptions::refusing_subscriptions(
        dir.path(),
        "secret/#",
    ));
    let (link, stop, running) = start_link(&broker, dir.path());
    match link.subscribe("secret/#", QoS::AtLeastOnce).await {
        Err(LinkError::Refused { filter, code }) => {
            assert_eq!(filter, "secret/#");
            assert!(code >= 0x80, "code 0x{code:02x}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    let mut rx = link.subscribe("open/#", QoS::AtLeastOnce).await.unwrap();
    publish_lines(&broker, "open/1", &["hi".into()]).await;
    assert_eq!(receive(&mut rx, 1, "open/1").await, ["hi"]);
    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_filter_is_a_filter_error_and_a_stopped_link_is_closed() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (link, stop, running) = start_link(&broker, dir.path());
    for bad in ["a/#/b", "a+/b", "", "$share/g"] {
        match link.subscribe(bad, QoS::AtLeastOnce).await {
            Err(e @ LinkError::Filter { .. }) => {
                let LinkError::Filter { filter, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(filter, bad);
                assert!(e.to_string().contains(&format!("'{bad}'")), "{e}");
            }
            other => panic!("'{bad}': expected Filter, got {other:?}"),
        }
    }
    stop.cancel();
    running.await.unwrap().unwrap();
    assert!(matches!(
        link.subscribe("a/b", QoS::AtLeastOnce).await,
        Err(LinkError::Closed)
    ));
}

/// Regression: an application subscribes to a second filter from the task that reads its
/// first subscription, so it reads nothing while `subscribe` awaits the SUBACK. A QoS 0
/// flood on the first filter fills that receiver (1024), the dispatcher waits on it, the
/// engine's delivery buffer (1024) fills behind, and the engine's backlog reaches its
/// 64 MiB bound with the SUBACK still unread behind the flood: `subscribe` never returned.
/// Now it is answered; QoS 0 messages beyond the bound are dropped and counted, the others
/// reach the first receiver in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_subscribe_behind_a_flood_on_the_first_is_answered() {
    const SMALL: usize = 2200;
    const LARGE: usize = 100;
    let broker = Mosquitto::start(MosquittoOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (link, stop, running) = start_link(&broker, dir.path());
    let mut first = link.subscribe("flood", QoS::AtMostOnce).await.unwrap();
    publish_numbered(&broker, "flood", SMALL, LARGE).await;

    let second = timeout(T, link.subscribe("other", QoS::AtMostOnce))
        .await
        .expect("the SUBACK behind the flood is read");
    assert!(second.is_ok(), "{second:?}");

    let stats = link.client().stats().clone();
    let mut got: Vec<u64> = Vec::new();
    while got.len() as u64 + stats.qos0_dropped() < (SMALL + LARGE) as u64 {
        let m = timeout(T, first.recv())
            .await
            .expect("a message or a counted drop for every one published")
            .expect("open");
        got.push(u64::from_be_bytes(m.payload[..8].try_into().unwrap()));
    }
    let dropped = stats.qos0_dropped();
    assert_eq!(got.len() as u64 + dropped, (SMALL + LARGE) as u64);
    assert!(dropped > 0, "more arrived than the link holds");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order, each once");
    assert_eq!(
        got[..SMALL],
        (0..SMALL as u64).collect::<Vec<_>>(),
        "nothing dropped before the bound was reached"
    );
    stop.cancel();
    running.await.unwrap().unwrap();
}

/// Publish `small` 8-byte messages then `large` 1 MiB ones on `topic`, each starting with
/// its number (big-endian u64), at QoS 1 with the engine; returns once the broker
/// acknowledged them all, so all of them are on their way to the subscribers.
async fn publish_numbered(broker: &Mosquitto, topic: &str, small: usize, large: usize) {
    let mut o = MqttOptions::new(BrokerUrl::parse(&broker.url()).unwrap());
    o.client_id = format!("link-publisher-{}", std::process::id());
    let (client, _deliveries, event_loop) = client::new(o).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(event_loop.run(stop.clone()));
    let mut verdicts = Vec::with_capacity(small + large);
    for i in 0..small + large {
        let mut payload = (i as u64).to_be_bytes().to_vec();
        if i >= small {
            payload.resize(1 << 20, b'x');
        }
        let publish = mqlink::Publish::new(topic, payload, QoS::AtLeastOnce);
        verdicts.push(client.publish(publish).await.unwrap());
    }
    for v in verdicts {
        assert_eq!(v.await, Verdict::Acknowledged);
    }
    stop.cancel();
    task.await.unwrap();
}
