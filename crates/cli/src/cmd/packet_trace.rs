//! `-d` of `mqlink pub` / `mqlink sub`: libmosquitto's debug packet trace, in its words.
//!
//! The engine hands every packet it sends or receives to an observer
//! (`MqttOptions::packet_observer`); [`PacketTrace`] turns each into the lines libmosquitto
//! 2.0 logs for it (the format strings of `lib/send_*.c` and `lib/handle_*.c`, checked
//! against the strings in Debian's libmosquitto 2.0.11), and mosquitto_pub/sub print those
//! on stdout. It keeps the little state the lines need: the client id (libmosquitto prints
//! `(null)` until the broker assigns one in an MQTT 5 CONNACK) and the last message id
//! (libmosquitto numbers QoS 0 messages too, from the counter packet ids come from).

use std::io::Write;
use std::sync::Mutex;

use mqlink::mqtt::client::{Direction, PacketObserver};
use mqlink::mqtt::codec::Packet;

/// The id libmosquitto prints for a client that has none.
const NULL: &str = "(null)";

/// The trace of one connection's packets, as libmosquitto logs them.
#[derive(Debug, Default)]
pub struct PacketTrace {
    /// The client id, once known (empty means none: the broker assigns it).
    id: Option<String>,
    /// The last message id used on a packet sent.
    last_mid: u16,
    /// mosquitto_sub's line after each SUBACK (its subscribe callback prints it with -d,
    /// unless --quiet).
    subscribed_lines: bool,
    /// MQTT 5: subscription options beyond the QoS exist on the wire (and in the trace).
    v5: bool,
}

impl PacketTrace {
    /// A trace for a client that has not connected yet and will speak MQTT 5 (`v5`) or 3.
    pub fn new(v5: bool) -> PacketTrace {
        PacketTrace {
            v5,
            ..PacketTrace::default()
        }
    }

    /// A trace that also prints mosquitto_sub's `Subscribed (mid: M): Q, ...` after each
    /// SUBACK.
    pub fn with_subscribed_lines(mut self) -> PacketTrace {
        self.subscribed_lines = true;
        self
    }

    fn who(&self) -> &str {
        self.id.as_deref().filter(|i| !i.is_empty()).unwrap_or(NULL)
    }

    /// The next message id, as libmosquitto's generator makes it (1 to 65535, wrapping).
    fn next_mid(&mut self) -> u16 {
        self.last_mid = self.last_mid.checked_add(1).unwrap_or(1);
        self.last_mid
    }

    /// The lines libmosquitto logs for `packet`, `sent` by the client or received by it.
    pub fn lines(&mut self, sent: bool, packet: &Packet) -> Vec<String> {
        if let Packet::Connect(c) = packet {
            self.id = Some(c.client_id.clone());
        }
        if let (false, Packet::ConnAck(ack)) = (sent, packet)
            && let Some(assigned) = &ack.assigned_client_id
        {
            // libmosquitto takes the assigned id before logging the CONNACK.
            self.id = Some(assigned.clone());
        }
        let dir = if sent { "sending" } else { "received" };
        let who = self.who().to_string();
        let one = |what: String| vec![format!("Client {who} {dir} {what}")];
        match packet {
            Packet::Connect(_) => one("CONNECT".into()),
            Packet::ConnAck(ack) => one(format!("CONNACK ({})", ack.code)),
            Packet::Publish(p) => {
                let mid = match p.pid {
                    Some(pid) if sent => {
                        self.last_mid = pid;
                        pid
                    }
                    Some(pid) => pid,
                    // libmosquitto gives a QoS 0 message sent a message id too; one
                    // received has none (0).
                    None if sent => self.next_mid(),
                    None => 0,
                };
                let topic: &str = if p.topic.is_empty() { NULL } else { &p.topic };
                one(format!(
                    "PUBLISH (d{}, q{}, r{}, m{mid}, '{topic}', ... ({} bytes))",
                    u8::from(p.dup),
                    p.qos as u8,
                    u8::from(p.retain),
                    p.payload.len()
                ))
            }
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                let name = packet.name();
                let is = |n: &str| name == n;
                one(match sent {
                    true if is("PUBACK") || is("PUBREC") => {
                        format!("{name} (m{}, rc{})", a.pid, a.reason)
                    }
                    true => format!("{name} (m{})", a.pid),
                    false if is("PUBACK") || is("PUBCOMP") => {
                        format!("{name} (Mid: {}, RC:{})", a.pid, a.reason)
                    }
                    false => format!("{name} (Mid: {})", a.pid),
                })
            }
            Packet::Subscribe {
                pid,
                filters,
                options,
            } => {
                self.last_mid = *pid;
                // The option bits above the QoS as sent: Retain-As-Published (0x08) and
                // Retain Handling (bits 4-5) on MQTT 5, none on 3 (libmosquitto prints what
                // it sends).
                let opts: u8 = if self.v5 {
                    u8::from(options.retain_as_published) << 3 | (options.retain_handling & 3) << 4
                } else {
                    0
                };
                filters
                    .iter()
                    .map(|(f, q)| {
                        format!(
                            "Client {who} {dir} SUBSCRIBE (Mid: {pid}, Topic: {f}, QoS: {}, Options: 0x{opts:02x})",
                            *q as u8
                        )
                    })
                    .collect()
            }
            Packet::Unsubscribe { pid, filters, .. } => {
                self.last_mid = *pid;
                filters
                    .iter()
                    .map(|f| format!("Client {who} {dir} UNSUBSCRIBE (Mid: {pid}, Topic: {f})"))
                    .collect()
            }
            Packet::SubAck { pid, codes } => {
                let mut lines = one("SUBACK".into());
                if self.subscribed_lines {
                    let granted: Vec<String> = codes.iter().map(u8::to_string).collect();
                    lines.push(format!("Subscribed (mid: {pid}): {}", granted.join(", ")));
                }
                lines
            }
            Packet::UnsubAck { .. } => one("UNSUBACK".into()),
            Packet::PingReq => one("PINGREQ".into()),
            Packet::PingResp => one("PINGRESP".into()),
            Packet::Disconnect(_) if sent => one("DISCONNECT".into()),
            // libmosquitto logs a DISCONNECT from the broker without the client id.
            Packet::Disconnect(d) => vec![format!("Received DISCONNECT ({})", d.reason)],
            Packet::Auth => one("AUTH".into()),
        }
    }
}

/// An observer that prints `trace`'s lines on stdout, as mosquitto_pub/sub print
/// libmosquitto's log (a line at a time, so they interleave whole with the messages).
pub fn observer(trace: PacketTrace) -> PacketObserver {
    let trace = Mutex::new(trace);
    PacketObserver::new(move |dir, packet| {
        let lines = match trace.lock() {
            Ok(mut t) => t.lines(dir == Direction::Sent, packet),
            Err(poisoned) => poisoned.into_inner().lines(dir == Direction::Sent, packet),
        };
        let mut out = std::io::stdout().lock();
        for l in lines {
            // A closed stdout ends the trace, not the connection.
            let _ = writeln!(out, "{l}");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqlink::mqtt::codec::{Ack, ConnAck, Connect, ConnectExtras, Disconnect, Publish, QoS};

    fn connect(id: &str) -> Packet {
        Packet::Connect(Box::new(Connect {
            client_id: id.into(),
            keep_alive: 60,
            clean_start: true,
            session_expiry: None,
            receive_max: None,
            max_packet_size: None,
            will: None,
            username: None,
            password: None,
            extras: ConnectExtras::default(),
        }))
    }

    fn publish(topic: &str, qos: QoS, pid: Option<u16>, len: usize) -> Packet {
        Packet::Publish(Publish {
            topic: topic.into(),
            payload: vec![b'x'; len].into(),
            qos,
            retain: false,
            dup: false,
            pid,
            props: Default::default(),
        })
    }

    fn ack(pid: u16, reason: u8) -> Ack {
        Ack {
            pid,
            reason,
            reason_string: None,
        }
    }

    /// The lines mosquitto_pub 2.0.11 -d printed for `-V 5 -q 2` without -i (the broker
    /// assigned the id) and for `-q 0 --repeat 2`.
    #[test]
    fn a_publish_is_traced_in_libmosquittos_words() {
        let mut t = PacketTrace::new(false);
        let mut lines = Vec::new();
        let connack = ConnAck {
            assigned_client_id: Some("auto-1".into()),
            ..ConnAck::default()
        };
        for (sent, p) in [
            (true, connect("")),
            (false, Packet::ConnAck(connack)),
            (true, publish("a/b", QoS::ExactlyOnce, Some(1), 5)),
            (false, Packet::PubRec(ack(1, 0))),
            (true, Packet::PubRel(ack(1, 0))),
            (false, Packet::PubComp(ack(1, 0))),
            (true, Packet::Disconnect(Disconnect::default())),
        ] {
            lines.extend(t.lines(sent, &p));
        }
        assert_eq!(
            lines,
            [
                "Client (null) sending CONNECT",
                "Client auto-1 received CONNACK (0)",
                "Client auto-1 sending PUBLISH (d0, q2, r0, m1, 'a/b', ... (5 bytes))",
                "Client auto-1 received PUBREC (Mid: 1)",
                "Client auto-1 sending PUBREL (m1)",
                "Client auto-1 received PUBCOMP (Mid: 1, RC:0)",
                "Client auto-1 sending DISCONNECT",
            ]
        );
        let mut t = PacketTrace::new(false);
        t.lines(true, &connect("q"));
        let q0 = publish("a", QoS::AtMostOnce, None, 1);
        assert_eq!(
            [t.lines(true, &q0), t.lines(true, &q0)].concat(),
            [
                "Client q sending PUBLISH (d0, q0, r0, m1, 'a', ... (1 bytes))",
                "Client q sending PUBLISH (d0, q0, r0, m2, 'a', ... (1 bytes))",
            ]
        );
    }

    /// What mosquitto_sub 2.0.11 -d printed for two filters, -U and QoS 1 and 0 messages.
    #[test]
    fn a_subscription_is_traced_in_libmosquittos_words() {
        let mut t = PacketTrace::new(false).with_subscribed_lines();
        t.lines(true, &connect("s"));
        let sub = Packet::Subscribe {
            pid: 1,
            filters: vec![
                ("a/#".into(), QoS::AtLeastOnce),
                ("b".into(), QoS::AtLeastOnce),
            ],
            options: Default::default(),
        };
        let unsub = Packet::Unsubscribe {
            pid: 2,
            filters: vec!["b".into()],
            user: Vec::new(),
        };
        let lines = [
            t.lines(true, &sub),
            t.lines(true, &unsub),
            t.lines(
                false,
                &Packet::SubAck {
                    pid: 1,
                    codes: vec![1, 0x80],
                },
            ),
            t.lines(false, &publish("a/b", QoS::AtLeastOnce, Some(1), 5)),
            t.lines(true, &Packet::PubAck(ack(1, 0))),
            t.lines(false, &publish("a/c", QoS::AtMostOnce, None, 0)),
            t.lines(false, &Packet::PingResp),
        ]
        .concat();
        assert_eq!(
            lines,
            [
                "Client s sending SUBSCRIBE (Mid: 1, Topic: a/#, QoS: 1, Options: 0x00)",
                "Client s sending SUBSCRIBE (Mid: 1, Topic: b, QoS: 1, Options: 0x00)",
                "Client s sending UNSUBSCRIBE (Mid: 2, Topic: b)",
                "Client s received SUBACK",
                "Subscribed (mid: 1): 1, 128",
                "Client s received PUBLISH (d0, q1, r0, m1, 'a/b', ... (5 bytes))",
                "Client s sending PUBACK (m1, rc0)",
                "Client s received PUBLISH (d0, q0, r0, m0, 'a/c', ... (0 bytes))",
                "Client s received PINGRESP",
            ]
        );
    }
}
