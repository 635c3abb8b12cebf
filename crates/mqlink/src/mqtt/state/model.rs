//! Model-based property test of [`Session`] against a broker that is sometimes hostile.
//!
//! Random interleavings of publishes (QoS 0/1/2), connects (session resumed or not, any
//! Receive Maximum), connection losses, correct broker answers, stray acks (duplicate,
//! unknown id, wrong kind, failure codes), incoming publishes and application acks. The
//! harness plays the connection task and a broker: it writes what the session sends,
//! remembers what the broker owes for it, and answers in order when asked to.
//!
//! Whatever the interleaving, the module's rules hold:
//! - nothing panics;
//! - a publish gets at most one verdict, and a broker verdict only from an ack that carries
//!   the packet id the message has on the wire at that moment;
//! - no more messages in flight than the window, no packet id shared by two messages in
//!   flight, and a message sent again on a resumed session keeps its id;
//! - once a well-behaved broker has answered everything, every publish has exactly one
//!   verdict and none was given up: nothing is lost.

use std::collections::{HashMap, VecDeque};

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Publish(u8),
    Connect {
        resumed: bool,
        receive_max: Option<u16>,
    },
    Lose,
    /// The broker answers the oldest thing it owes.
    Answer,
    /// A packet the broker should not send now: `kind` picks PUBACK, PUBREC, PUBCOMP,
    /// PUBREL, SUBACK or UNSUBACK.
    Stray {
        kind: u8,
        pid: u16,
        reason: u8,
    },
    Incoming {
        qos: u8,
        pid: u16,
    },
    AppAck(usize),
    Subscribe,
    /// Move the packet id counter to just below its wrap, as if some 65,000 other flows
    /// had completed meanwhile: the next ids are the small ones that may still be in use.
    Wrap,
}

fn op() -> impl Strategy<Value = Op> {
    // Small packet ids, so strays collide with the real ones often.
    let reason = prop::sample::select(vec![0u8, 0x10, 0x80, 0x87, 0x92, 0x97]);
    prop_oneof![
        4 => (0u8..3).prop_map(Op::Publish),
        2 => (any::<bool>(), prop::option::of(1u16..4))
            .prop_map(|(resumed, receive_max)| Op::Connect { resumed, receive_max }),
        1 => Just(Op::Lose),
        6 => Just(Op::Answer),
        2 => (0u8..6, prop_oneof![1u16..12, 65_525u16..=u16::MAX], reason)
            .prop_map(|(kind, pid, reason)| Op::Stray { kind, pid, reason }),
        2 => (0u8..3, 1u16..6).prop_map(|(qos, pid)| Op::Incoming { qos, pid }),
        2 => any::<usize>().prop_map(Op::AppAck),
        1 => Just(Op::Subscribe),
        1 => Just(Op::Wrap),
    ]
}

fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn message(token: Token, qos: QoS) -> Publish {
    // The topic names the token, so the harness can tell which message a packet is.
    super::tests::msg(&token.to_string(), qos)
}

#[derive(Default)]
struct Harness {
    s: Option<Session>,
    connected: bool,
    next_token: Token,
    published: Vec<Token>,
    verdicts: HashMap<Token, Verdict>,
    /// Packet id each message had when last written.
    pid_of: HashMap<Token, u16>,
    qos_of: HashMap<Token, QoS>,
    /// Answers the broker owes, in the order it owes them.
    owed: VecDeque<Packet>,
    deliveries: Vec<AckToken>,
    giving_up: bool,
}

impl Harness {
    fn session(&mut self) -> &mut Session {
        self.s.as_mut().expect("created")
    }

    /// Play the connection task: write what the session sends (the broker now owes an
    /// answer), hand out verdicts and deliveries. `ack`: the kind and packet id of the ack
    /// just handled, if that is what ran.
    fn drain(&mut self, ack: Option<(&'static str, u16)>) {
        while let Some(out) = self.session().poll_output() {
            match out {
                Output::Send { packet, written } => {
                    assert!(self.connected, "{packet:?} sent while disconnected");
                    self.sent(packet, written);
                }
                Output::Verdict(token, v) => {
                    if v == Verdict::GaveUp {
                        assert!(self.giving_up, "{token} given up before shutdown");
                    } else {
                        let pid = self.pid_of.get(&token).copied();
                        let qos = self.qos_of[&token];
                        // QoS 1: PUBACK. QoS 2: PUBCOMP, or a PUBREC refusing it.
                        let kind_fits = match (qos, ack) {
                            (QoS::AtLeastOnce, Some(("PUBACK", _))) => true,
                            (QoS::ExactlyOnce, Some(("PUBCOMP", _))) => true,
                            (QoS::ExactlyOnce, Some(("PUBREC", _))) => v != Verdict::Acknowledged,
                            _ => false,
                        };
                        assert!(
                            kind_fits && pid.is_some() && ack.map(|a| a.1) == pid,
                            "{token} ({qos:?}, pid {pid:?}) decided {v:?} by {ack:?}"
                        );
                    }
                    self.verdict(token, v);
                }
                Output::Deliver(d) => self.deliveries.extend(d.ack),
                Output::Subscribed(..) | Output::Unsubscribed(_) | Output::Anomaly(_) => {}
            }
        }
        let s = self.session();
        if s.is_connected() {
            assert!(
                s.on_wire() <= usize::from(s.window()),
                "{} in flight, window {}",
                s.on_wire(),
                s.window()
            );
        }
    }

    fn verdict(&mut self, token: Token, v: Verdict) {
        if let Some(first) = self.verdicts.insert(token, v.clone()) {
            panic!("{token} decided twice: {first:?}, then {v:?}");
        }
    }

    fn sent(&mut self, packet: Packet, written: Option<Token>) {
        match packet {
            Packet::Publish(p) => {
                let token: Token = p.topic.parse().expect("harness topic");
                match p.pid {
                    None => {
                        assert_eq!(p.qos, QoS::AtMostOnce, "QoS 1/2 PUBLISH without id");
                        assert_eq!(written, Some(token));
                        // Written to the socket: that is a QoS 0 verdict.
                        self.verdict(token, Verdict::Acknowledged);
                    }
                    Some(pid) => {
                        // Once written, a message keeps its id until a new session (the
                        // broker may hold state for it, e.g. a stored QoS 2 message).
                        if let Some(old) = self.pid_of.get(&token) {
                            assert_eq!(*old, pid, "{token} sent again with a new id");
                        } else {
                            assert!(!p.dup, "first send of {token} marked DUP");
                        }
                        let holder = self.pid_of.iter().find(|(t, p)| {
                            **p == pid && **t != token && !self.verdicts.contains_key(*t)
                        });
                        assert!(
                            holder.is_none(),
                            "pid {pid} given to {token} while {holder:?} is in flight"
                        );
                        self.pid_of.insert(token, pid);
                        self.owed.push_back(match p.qos {
                            QoS::ExactlyOnce => Packet::PubRec(Ack::ok(pid)),
                            _ => Packet::PubAck(Ack::ok(pid)),
                        });
                    }
                }
            }
            Packet::PubRel(a) => self.owed.push_back(Packet::PubComp(Ack::ok(a.pid))),
            Packet::PubRec(a) => self.owed.push_back(Packet::PubRel(Ack::ok(a.pid))),
            Packet::Subscribe { pid, filters } => self.owed.push_back(Packet::SubAck {
                pid,
                codes: vec![1; filters.len()],
            }),
            Packet::Unsubscribe { pid, .. } => self.owed.push_back(Packet::UnsubAck { pid }),
            Packet::PubAck(_) | Packet::PubComp(_) => {}
            other => panic!("session wrote {}", other.name()),
        }
    }

    fn handle(&mut self, packet: Packet) {
        let ack = match &packet {
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubComp(a) => {
                Some((packet.name(), a.pid))
            }
            _ => None,
        };
        let result = self.session().handle(packet);
        self.drain(ack);
        if result.is_err() {
            self.lose();
        }
    }

    fn lose(&mut self) {
        if self.connected {
            self.session().disconnected();
            self.connected = false;
            // Whatever the broker still owed went down with the connection.
            self.owed.clear();
            self.drain(None);
        }
    }

    fn connect(&mut self, resumed: bool, receive_max: Option<u16>) {
        if !self.connected {
            self.connected = true;
            if !resumed {
                // A new session: the broker knows no ids; messages get theirs again as
                // they are sent.
                let decided = &self.verdicts;
                self.pid_of.retain(|t, _| decided.contains_key(t));
            }
            self.session().connected(&ConnAck {
                session_present: resumed,
                receive_max,
                ..ConnAck::default()
            });
            self.drain(None);
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Publish(q) => {
                self.next_token += 1;
                let token = self.next_token;
                self.published.push(token);
                self.qos_of.insert(token, qos(q));
                self.session().publish(token, message(token, qos(q)));
                self.drain(None);
            }
            Op::Connect {
                resumed,
                receive_max,
            } => self.connect(resumed, receive_max),
            Op::Lose => self.lose(),
            Op::Answer => {
                if let Some(p) = self.owed.pop_front() {
                    self.handle(p);
                }
            }
            Op::Stray { kind, pid, reason } if self.connected => {
                let ack = Ack {
                    pid,
                    reason,
                    reason_string: None,
                };
                self.handle(match kind {
                    0 => Packet::PubAck(ack),
                    1 => Packet::PubRec(ack),
                    2 => Packet::PubComp(ack),
                    3 => Packet::PubRel(ack),
                    4 => Packet::SubAck {
                        pid,
                        codes: vec![reason],
                    },
                    _ => Packet::UnsubAck { pid },
                });
            }
            Op::Incoming { qos: q, pid } if self.connected => {
                let mut p = message(0, qos(q));
                p.pid = (q > 0).then_some(pid);
                self.handle(Packet::Publish(p));
            }
            Op::AppAck(i) => {
                if !self.deliveries.is_empty() {
                    let token = self.deliveries[i % self.deliveries.len()];
                    self.session().ack(token);
                    self.drain(None);
                }
            }
            Op::Subscribe => {
                self.session()
                    .subscribe(0, vec![("t/#".into(), QoS::AtLeastOnce)]);
                self.drain(None);
            }
            Op::Wrap => self.session().next_pid = u16::MAX - 1,
            Op::Stray { .. } | Op::Incoming { .. } => {}
        }
    }

    /// A well-behaved broker from now on: connect (resuming the session) and answer
    /// everything until nothing is owed.
    fn settle(&mut self) {
        self.connect(true, None);
        let mut steps = 0;
        while let Some(p) = self.owed.pop_front() {
            self.handle(p);
            steps += 1;
            assert!(steps < 100_000, "the exchange never settles");
        }
        let s = self.session();
        assert_eq!((s.queued_len(), s.inflight_len()), (0, 0), "work left over");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn session_rules_hold_against_a_hostile_broker(
        max_inflight in 1u16..5,
        ops in prop::collection::vec(op(), 0..120),
    ) {
        let mut h = Harness {
            s: Some(Session::new(max_inflight)),
            ..Harness::default()
        };
        for op in ops {
            h.apply(op);
        }
        h.settle();
        h.giving_up = true;
        h.session().give_up();
        h.drain(None);
        for token in &h.published {
            match h.verdicts.get(token) {
                Some(Verdict::Acknowledged | Verdict::Rejected { .. }) => {}
                other => panic!("{token} ended with {other:?}"),
            }
        }
    }
}
