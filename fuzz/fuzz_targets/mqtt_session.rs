//! A hostile broker against the session state machine: the bytes are a script. Each step's
//! first byte picks what happens (we publish, the connection comes up or goes down, the
//! application acks a delivery, or the next packet is decoded from the broker's byte
//! stream and handled). Decoding uses MQTT 5 with a small maximum, so malformed,
//! truncated and oversized packets all occur, and whatever decodes is fed to the session,
//! CONNACKs twice and acks for unknown ids included.
//!
//! Checked: no panic, and no publish ever gets two verdicts.
#![no_main]

use std::collections::HashSet;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use mqlink::mqtt::codec::{self, ConnAck, Protocol, Publish, PublishProps, QoS};
use mqlink::mqtt::state::{Output, Session};

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&window, rest)) = data.split_first() else {
        return;
    };
    // Script and broker stream: the first half steers, the second half is the wire.
    let (script, wire) = rest.split_at(rest.len() / 2);
    let mut wire = BytesMut::from(wire);
    let mut s = Session::new(u16::from(window % 8) + 1);
    let mut connected = false;
    let mut token = 0u64;
    let mut decided = HashSet::new();
    let mut acks = Vec::new();

    for &step in script {
        match step % 6 {
            0 | 1 => {
                token += 1;
                let qos = match step / 6 % 3 {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => QoS::ExactlyOnce,
                };
                s.publish(
                    token,
                    Publish {
                        topic: Arc::from("t"),
                        payload: Bytes::new(),
                        qos,
                        retain: false,
                        dup: false,
                        pid: None,
                        props: PublishProps::default(),
                    },
                );
            }
            2 if !connected => {
                connected = true;
                s.connected(&ConnAck {
                    session_present: step & 0x80 != 0,
                    receive_max: (step & 0x40 != 0).then_some(u16::from(step & 3) + 1),
                    ..ConnAck::default()
                });
            }
            2 => {
                connected = false;
                s.disconnected();
            }
            3 => {
                if !acks.is_empty() {
                    let t = acks[usize::from(step) % acks.len()];
                    s.ack(t);
                }
            }
            _ if connected => match codec::decode(&mut wire, Protocol::V5, MAX) {
                Ok(Some(packet)) => {
                    if s.handle(packet).is_err() {
                        connected = false;
                        s.disconnected();
                    }
                }
                Ok(None) => {}
                // A stream that cannot be decoded is where the connection ends.
                Err(_) => {
                    connected = false;
                    s.disconnected();
                    wire.clear();
                }
            },
            _ => {}
        }
        while let Some(out) = s.poll_output() {
            match out {
                Output::Verdict(t, v) => assert!(decided.insert(t), "{t} decided twice ({v:?})"),
                Output::Send {
                    written: Some(t), ..
                } => assert!(decided.insert(t), "QoS 0 {t} written twice"),
                Output::Deliver(d) => acks.extend(d.ack),
                _ => {}
            }
        }
    }
    s.give_up();
    while let Some(out) = s.poll_output() {
        if let Output::Verdict(t, v) = out {
            assert!(decided.insert(t), "{t} decided twice at give-up ({v:?})");
        }
    }
    assert_eq!(decided.len() as u64, token, "a publish got no verdict at all");
});
