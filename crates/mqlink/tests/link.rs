//! The library API against a real Mosquitto: emit is durable and routed, subscriptions fan
//! out to every handler, and are renewed after the broker forgets them.

use std::time::Duration;

use mqlink::Link;
use mqlink::config::{self, Format};
use mqlink::mqtt::codec::QoS;
use mqlink_testkit::{Mosquitto, MosquittoOptions, mosquitto_pub};
use serde_json::json;
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
