//! The WebSocket listener. `mosquitto_pub`/`mosquitto_sub` 2.0 cannot speak WebSockets
//! (`-L ws://...` is "unsupported URL scheme"), so this drives the upgrade and one MQTT
//! CONNECT/CONNACK exchange by hand.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use mqlink_testkit::{Mosquitto, MosquittoOptions, MosquittoSub, mosquitto_pub};

/// Sends a WebSocket upgrade for `/mqtt` with subprotocol `mqtt`; returns the stream
/// positioned after the response headers, and the status line.
fn upgrade(port: u16) -> (BufReader<TcpStream>, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header == "\r\n" || header.is_empty() {
            break;
        }
    }
    (reader, status)
}

#[test]
fn websocket_upgrade_is_accepted_and_mqtt_connects_over_it() {
    let broker = Mosquitto::start(MosquittoOptions {
        tcp: false,
        websockets: true,
        ..Default::default()
    });
    assert_eq!(
        broker.ws_url(),
        format!("ws://127.0.0.1:{}/mqtt", broker.ws_port())
    );

    let (mut reader, status) = upgrade(broker.ws_port());
    assert!(status.starts_with("HTTP/1.1 101"), "status: {status:?}");

    // MQTT 3.1.1 CONNECT, clean session, keepalive 60, client id "ws".
    let connect = [
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'w', b's',
    ];
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x82, 0x80 | u8::try_from(connect.len()).unwrap()];
    frame.extend_from_slice(&mask);
    frame.extend(connect.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    reader.get_mut().write_all(&frame).unwrap();

    // A binary frame carrying CONNACK, session present 0, return code 0 (accepted).
    let mut reply = [0u8; 6];
    reader.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [0x82, 4, 0x20, 2, 0, 0]);
}

#[test]
fn websocket_and_tcp_listeners_share_one_broker() {
    let broker = Mosquitto::start(MosquittoOptions {
        websockets: true,
        ..Default::default()
    });
    assert_ne!(broker.port(), broker.ws_port());
    let (_reader, status) = upgrade(broker.ws_port());
    assert!(status.starts_with("HTTP/1.1 101"), "status: {status:?}");

    let sub = MosquittoSub::start_ready(&broker.client_args(), &["-t", "w/#"], "w/probe");
    let out = mosquitto_pub(
        &[
            &broker.client_args()[..],
            &["-t".into(), "w/1".into(), "-m".into(), "x".into()],
        ]
        .concat(),
    );
    assert!(out.status.success());
    assert_eq!(sub.wait_for_lines(1, Duration::from_secs(10)), ["x"]);
}

#[test]
fn mosquitto_pub_2_0_has_no_websocket_urls() {
    let out = mosquitto_pub(&["-L", "ws://127.0.0.1:1/t", "-m", "x"]);
    assert!(!out.status.success());
}
