//! The bare-client baseline of `bench/run.py`: what a Rust developer writes without mqlink.
//! One rumqttc `AsyncClient` publishes `COUNT` payloads in a loop (the `mqlink bench`
//! format: `{"pub":0,"seq":N,"ts":NANOS,"pad":"x…"}`) while the event loop is polled on
//! the same runtime; it exits once the broker acknowledged every message (QoS 0: once
//! every PUBLISH was written), then disconnects. No spool, no durability.
//!
//! `baseline-rumqttc HOST PORT QOS COUNT SIZE TOPIC [nodelay|delay] [INFLIGHT]`

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

fn usage() -> ! {
    eprintln!("usage: baseline-rumqttc HOST PORT QOS COUNT SIZE TOPIC [nodelay|delay] [INFLIGHT]");
    std::process::exit(2)
}

fn payload(seq: u64, size: usize) -> Vec<u8> {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut p = format!("{{\"pub\":0,\"seq\":{seq},\"ts\":{ts},\"pad\":\"").into_bytes();
    let pad = size.saturating_sub(p.len() + 2);
    p.resize(p.len() + pad, b'x');
    p.extend_from_slice(b"\"}");
    p
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 6 {
        usage();
    }
    let parse = |i: usize| -> u64 { a[i].parse().unwrap_or_else(|_| usage()) };
    let (host, port) = (a[0].clone(), parse(1) as u16);
    let qos = match parse(2) {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => usage(),
    };
    let (count, size, topic) = (parse(3), parse(4) as usize, a[5].clone());
    let nodelay = a.get(6).is_none_or(|s| s == "nodelay");
    let inflight = a
        .get(7)
        .map_or(100, |s| s.parse().unwrap_or_else(|_| usage()));

    let mut opts = MqttOptions::new(format!("baseline-{}", std::process::id()), host, port);
    opts.set_keep_alive(Duration::from_secs(60));
    opts.set_inflight(inflight);
    opts.set_request_channel_capacity(1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(nodelay);
    eventloop.set_network_options(net);

    let publisher = tokio::spawn(async move {
        for seq in 0..count {
            if client
                .publish(topic.as_str(), qos, false, payload(seq, size))
                .await
                .is_err()
            {
                break;
            }
        }
        client
    });
    let start = Instant::now();
    let mut done = 0u64;
    while done < count {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => done += 1,
            Ok(Event::Incoming(Packet::PubComp(_))) if qos == QoS::ExactlyOnce => done += 1,
            Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => done += 1,
            Ok(_) => {}
            Err(e) => {
                eprintln!("baseline-rumqttc: {e} after {done} of {count}");
                std::process::exit(1);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let Ok(client) = publisher.await else {
        std::process::exit(1)
    };
    // Flush the last writes and say goodbye; bounded so the harness never hangs here.
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    println!(
        "{{\"sent\":{count},\"secs\":{secs},\"rate\":{}}}",
        count as f64 / secs
    );
}
