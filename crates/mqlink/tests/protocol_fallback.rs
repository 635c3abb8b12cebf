//! Brokers without MQTT 5 that do not say so (found by the interop matrix,
//! `crates/cli/tests/interop.rs`): RabbitMQ 3.10 closes the connection on an MQTT 5
//! CONNECT, amqtt 0.12 never answers one that carries properties. Before the fix mqlink
//! took both for network faults and retried MQTT 5 forever: it never connected.
//!
//! A proxy in front of a real Mosquitto plays the broker's part for MQTT 5 CONNECTs only
//! (closes, or holds the connection unanswered) and passes 3.1.1 through. The rule that a
//! single cut does not cost MQTT 5 stays covered by `publish_faults.rs`
//! (`a_cut_before_connack_keeps_mqtt5_so_a_denial_is_dead_lettered`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mqlink::config::{self, Format};
use mqlink::link::{Link, LinkError};
use mqlink::mqtt::client::LinkState;
use mqlink::mqtt::codec::Protocol;
use mqlink_testkit::{Mosquitto, MosquittoOptions, MosquittoSub};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);

/// What the proxy does with an MQTT 5 CONNECT.
#[derive(Clone, Copy)]
enum OnV5 {
    /// Close the connection (RabbitMQ before 3.13).
    Close,
    /// Keep the connection open and never answer (amqtt 0.12).
    Ignore,
}

/// A proxy to `upstream` that treats MQTT 5 CONNECTs as `on_v5`; returns its port and the
/// count of MQTT 5 CONNECTs it saw.
async fn v5_blind_proxy(upstream: u16, on_v5: OnV5) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let v5_seen = Arc::new(AtomicUsize::new(0));
    let seen = v5_seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                // The CONNECT's protocol level follows the "MQTT" protocol name.
                let mut head = vec![0u8; 256];
                let mut n = 0;
                let level = loop {
                    match client.read(&mut head[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                    if let Some(at) = head[..n].windows(4).position(|w| w == b"MQTT")
                        && n > at + 4
                    {
                        break head[at + 4];
                    }
                    if n == head.len() {
                        return;
                    }
                };
                if level == 5 {
                    seen.fetch_add(1, Ordering::SeqCst);
                    match on_v5 {
                        OnV5::Close => drop(client),
                        OnV5::Ignore => {
                            // Hold the connection until the client gives up on it.
                            let mut sink = [0u8; 64];
                            while matches!(client.read(&mut sink).await, Ok(k) if k > 0) {}
                        }
                    }
                    return;
                }
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                if server.write_all(&head[..n]).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (port, v5_seen)
}

struct Running {
    link: Link,
    stop: CancellationToken,
    task: JoinHandle<Result<(), LinkError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(port: u16, extra: &str) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "broker: {{url: 'mqtt://127.0.0.1:{port}', reconnect: {{min: 50ms, max: 200ms}}{extra}}}\nspool: {{dir: '{}'}}\nroutes:\n  - {{match: ['*'], topic: 'fb/{{event}}', qos: 1}}\n",
            dir.path().join("spool").display()
        );
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

    async fn stop(self) -> Result<(), LinkError> {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

/// Waits for a connection; the protocol it uses.
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
async fn a_broker_that_closes_every_mqtt5_connect_is_reached_over_311() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let sub = MosquittoSub::start_ready(
        &broker.client_args(),
        &["-t", "fb/#", "-q", "1"],
        "fb/probe",
    );
    let (port, v5_seen) = v5_blind_proxy(broker.port(), OnV5::Close).await;
    let r = Running::start(port, "");
    assert_eq!(connected(&r.link).await, Protocol::V311);
    // Two closes, not one: a single cut is a network fault and keeps MQTT 5.
    assert_eq!(v5_seen.load(Ordering::SeqCst), 2);
    r.link.emit("e", json!({"n": 1})).await.unwrap();
    assert_eq!(sub.wait_for_lines(1, T), ["{\"n\":1}"]);
    r.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_never_answers_mqtt5_is_reached_over_311_for_the_rest_of_the_process() {
    let mut broker = Mosquitto::start(MosquittoOptions::default());
    let sub = MosquittoSub::start_ready(
        &broker.client_args(),
        &["-t", "fb/#", "-q", "1"],
        "fb/probe",
    );
    let (port, v5_seen) = v5_blind_proxy(broker.port(), OnV5::Ignore).await;
    let r = Running::start(port, ", connect_timeout: 300ms");
    assert_eq!(connected(&r.link).await, Protocol::V311);
    assert_eq!(v5_seen.load(Ordering::SeqCst), 2);
    r.link.emit("e", json!({"n": 1})).await.unwrap();
    assert_eq!(sub.wait_for_lines(1, T), ["{\"n\":1}"]);
    // A reconnect goes straight to 3.1.1: retrying 5 would cost two timeouts each time.
    let mut w = r.link.client().link();
    broker.restart();
    tokio::time::timeout(T, w.wait_for(|s| !matches!(s, LinkState::Connected { .. })))
        .await
        .expect("the restart ends the connection")
        .unwrap();
    assert_eq!(connected(&r.link).await, Protocol::V311);
    assert_eq!(v5_seen.load(Ordering::SeqCst), 2, "MQTT 5 was tried again");
    r.stop().await.unwrap();
}
