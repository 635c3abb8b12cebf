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
//!   verdict and none was given up: nothing is lost;
//! - against a broker that answers in order, subscribers first see each QoS's messages in
//!   publish order (the broker releases a QoS 1 message on PUBLISH and a QoS 2 one on
//!   PUBREL), whatever the losses, restarts and window changes in between.
//!
//! The world is hostile in more ways: QoS 0 messages handed to the socket may be lost
//! unwritten when the connection drops (they must go out again, and be decided once, when
//! written); the broker may announce a Maximum QoS and no retain (nothing sent may exceed
//! them); it may close the connection right after a message (only a message it closed on
//! [`POISON_STRIKES`] times in a row may be rejected for it, at that moment); and the process
//! may restart, its messages re-read from the spool into a new session, against a broker
//! that still holds the previous process's stored QoS 2 messages (a new PUBLISH must never
//! reuse a packet id the broker holds one under: a strict broker would drop it as a
//! duplicate).

use std::collections::{HashMap, HashSet, VecDeque};

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Publish(u8),
    Connect {
        resumed: bool,
        receive_max: Option<u16>,
        /// 0 or 1: the broker's Maximum QoS; 2: none announced.
        max_qos: u8,
        retain_available: bool,
    },
    /// The connection drops; `by_broker`: the broker closed it.
    Lose {
        by_broker: bool,
    },
    /// The connection task writes what it was handed (QoS 0 messages are decided).
    Flush,
    /// The process restarts: a new session, the undecided messages read again from the
    /// spool in order.
    Restart,
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
    prop_oneof![
        27 => in_order_op(0),
        2 => stray(),
    ]
}

/// A stray ack: small packet ids, so strays collide with the real ones often.
fn stray() -> impl Strategy<Value = Op> {
    let reason = prop::sample::select(vec![0u8, 0x10, 0x80, 0x87, 0x92, 0x97]);
    (0u8..6, prop_oneof![1u16..12, 65_525u16..=u16::MAX], reason)
        .prop_map(|(kind, pid, reason)| Op::Stray { kind, pid, reason })
}

/// Everything but stray acks: the broker answers what it owes, in order, or drops the
/// connection; the process may restart. The broker's Maximum QoS is at least `min_max_qos`
/// (2: none announced).
fn in_order_op(min_max_qos: u8) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3).prop_map(Op::Publish),
        2 => (any::<bool>(), prop::option::of(1u16..4), prop_oneof![4 => Just(2u8), 1 => min_max_qos..=2], prop::bool::weighted(0.8))
            .prop_map(|(resumed, receive_max, max_qos, retain_available)| Op::Connect { resumed, receive_max, max_qos, retain_available }),
        1 => any::<bool>().prop_map(|by_broker| Op::Lose { by_broker }),
        3 => Just(Op::Flush),
        1 => Just(Op::Restart),
        6 => Just(Op::Answer),
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
    let mut m = super::tests::msg(&token.to_string(), qos);
    m.retain = token.is_multiple_of(3);
    m
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
    /// QoS each message was last sent with (the broker's Maximum QoS may lower it).
    sent_qos: HashMap<Token, QoS>,
    /// Answers the broker owes, in the order it owes them.
    owed: VecDeque<Packet>,
    deliveries: Vec<AckToken>,
    giving_up: bool,
    /// QoS 0 messages handed to the socket and not written yet.
    unwritten: Vec<Token>,
    /// The broker's limits on this connection.
    max_qos: u8,
    retain_available: bool,
    /// Packet ids under which the broker stores a QoS 2 message until PUBREL; kept across
    /// connections and processes until a new session.
    held: HashSet<u16>,
    /// A loss just happened with the broker closing the connection.
    closing: bool,
    /// The message the broker stores under each packet id until PUBREL (QoS 2).
    stored: HashMap<u16, Token>,
    /// Messages in the order the broker first released them to subscribers (a QoS 1
    /// message on its PUBLISH, a QoS 2 one on its PUBREL, as Mosquitto does), with the QoS
    /// they were released at.
    released: Vec<(Token, QoS)>,
    released_set: HashSet<Token>,
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
                    } else if ack == Some(("WRITTEN", 0)) {
                        assert_eq!(v, Verdict::Acknowledged);
                    } else if self.closing {
                        assert!(
                            matches!(
                                v,
                                Verdict::Rejected {
                                    code: POISON_CODE,
                                    ..
                                }
                            ),
                            "{token} decided {v:?} by a connection loss"
                        );
                    } else {
                        let pid = self.pid_of.get(&token).copied();
                        let qos = self.sent_qos[&token];
                        // QoS 1: PUBACK. QoS 2: PUBCOMP, or a PUBREC refusing it, or a
                        // PUBACK while it awaits its PUBREC (a broker without QoS 2
                        // answering it as QoS 1, as RabbitMQ 3.10 does).
                        let kind_fits = match (qos, ack) {
                            (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(("PUBACK", _))) => true,
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

    /// The broker hands `token` to its subscribers (the first time only counts).
    fn release(&mut self, token: Token, qos: QoS) {
        if self.released_set.insert(token) {
            self.released.push((token, qos));
        }
    }

    /// Per QoS, subscribers first see the messages in the order they were published
    /// (MQTT-4.6.0: a broker keeps the order of each publisher's messages at one QoS). A
    /// message the broker's Maximum QoS lowered is released by the other QoS's rule (on
    /// PUBLISH, not PUBREL), so only messages released at the QoS they were published with
    /// are compared.
    fn assert_release_order(&self) {
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let order: Vec<Token> = self
                .released
                .iter()
                .filter(|(t, q)| *q == qos && self.qos_of[t] == qos)
                .map(|(t, _)| *t)
                .collect();
            assert!(
                order.is_sorted(),
                "{qos:?} messages first released out of publish order: {order:?}"
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
                assert!(
                    !p.retain || self.retain_available,
                    "{token} retained against the broker's limits"
                );
                self.sent_qos.insert(token, p.qos);
                match p.pid {
                    None => {
                        assert_eq!(p.qos, QoS::AtMostOnce, "QoS 1/2 PUBLISH without id");
                        assert_eq!(written, Some(token));
                        // Decided once the connection task reports it written.
                        self.unwritten.push(token);
                    }
                    Some(pid) => {
                        // A resumed session finishes a flow the broker may already hold at its QoS.
                        assert!(
                            p.dup || p.qos as u8 <= self.max_qos,
                            "{token} sent above the Maximum QoS"
                        );
                        if p.qos == QoS::ExactlyOnce && !p.dup {
                            assert!(
                                self.held.insert(pid),
                                "{token} reuses packet id {pid}, under which the broker holds a stored QoS 2 message"
                            );
                        }
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
                        match p.qos {
                            QoS::ExactlyOnce => {
                                self.stored.insert(pid, token);
                            }
                            _ => self.release(token, p.qos),
                        }
                        self.owed.push_back(match p.qos {
                            QoS::ExactlyOnce => Packet::PubRec(Ack::ok(pid)),
                            _ => Packet::PubAck(Ack::ok(pid)),
                        });
                    }
                }
            }
            Packet::PubRel(a) => {
                self.held.remove(&a.pid);
                if let Some(token) = self.stored.remove(&a.pid) {
                    self.release(token, QoS::ExactlyOnce);
                }
                self.owed.push_back(Packet::PubComp(Ack::ok(a.pid)));
            }
            Packet::PubRec(a) => self.owed.push_back(Packet::PubRel(Ack::ok(a.pid))),
            Packet::Subscribe { pid, filters, .. } => self.owed.push_back(Packet::SubAck {
                pid,
                codes: vec![1; filters.len()],
            }),
            Packet::Unsubscribe { pid, .. } => self.owed.push_back(Packet::UnsubAck { pid }),
            Packet::PubAck(_) | Packet::PubComp(_) => {}
            other => panic!("session wrote {}", other.name()),
        }
    }

    fn handle(&mut self, packet: Packet) {
        match &packet {
            // A broker that refuses with PUBREC, or completes with PUBCOMP, holds nothing
            // under that id any more (whether the packet was owed or stray).
            Packet::PubRec(a) if a.reason >= 0x80 => {
                self.held.remove(&a.pid);
                self.stored.remove(&a.pid);
            }
            Packet::PubComp(a) => {
                self.held.remove(&a.pid);
                self.stored.remove(&a.pid);
            }
            _ => {}
        }
        let ack = match &packet {
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubComp(a) => {
                Some((packet.name(), a.pid))
            }
            _ => None,
        };
        let result = self.session().handle(packet);
        self.drain(ack);
        if result.is_err() {
            self.lose(false);
        }
    }

    fn lose(&mut self, by_broker: bool) {
        if self.connected {
            let loss = if by_broker {
                Loss::ClosedByBroker
            } else {
                Loss::Other
            };
            let _ = self.session().disconnected(loss);
            self.connected = false;
            // Whatever the broker still owed, and whatever was not written yet, went down
            // with the connection.
            self.owed.clear();
            self.unwritten.clear();
            self.closing = by_broker;
            self.drain(None);
            self.closing = false;
        }
    }

    fn flush(&mut self) {
        for token in std::mem::take(&mut self.unwritten) {
            self.session().written(token);
            self.drain(Some(("WRITTEN", 0)));
        }
    }

    fn connect(&mut self, resumed: bool, receive_max: Option<u16>, max_qos: u8, retain: bool) {
        if !self.connected {
            self.connected = true;
            // What the client asks for, as the connection task asks it: a publishing
            // process with a persistent session.
            let resumed = resumed && !self.session().clean_start(true, false);
            if !resumed {
                // A new session: the broker knows no ids; messages get theirs again as
                // they are sent.
                let decided = &self.verdicts;
                self.pid_of.retain(|t, _| decided.contains_key(t));
                self.held.clear();
                self.stored.clear();
            }
            self.max_qos = max_qos;
            self.retain_available = retain;
            self.session().connected(&ConnAck {
                session_present: resumed,
                receive_max,
                max_qos: (max_qos < 2).then(|| qos(max_qos)),
                retain_available: (!retain).then_some(false),
                ..ConnAck::default()
            });
            self.drain(None);
        }
    }

    /// The process dies and starts again: its session is gone; the spool hands the
    /// undecided messages, in order, to a new one. The broker keeps what it holds.
    fn restart(&mut self, max_inflight: u16) {
        self.connected = false;
        self.owed.clear();
        self.unwritten.clear();
        self.deliveries.clear();
        // The new process knows no ids; what the broker holds is checked through `held`.
        let decided = &self.verdicts;
        self.pid_of.retain(|t, _| decided.contains_key(t));
        let mut s = Session::new(max_inflight);
        for &token in &self.published {
            if !self.verdicts.contains_key(&token) {
                s.publish(token, message(token, self.qos_of[&token]));
            }
        }
        self.s = Some(s);
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
                max_qos,
                retain_available,
            } => self.connect(resumed, receive_max, max_qos, retain_available),
            Op::Lose { by_broker } => self.lose(by_broker),
            Op::Flush => self.flush(),
            Op::Restart => {
                let max = self.session().max_inflight;
                self.restart(max);
            }
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
        self.connect(true, None, 2, true);
        let mut steps = 0;
        self.flush();
        while let Some(p) = self.owed.pop_front() {
            self.handle(p);
            self.flush();
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
            max_qos: 2,
            retain_available: true,
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

    /// Against a broker that answers in order (however often the connection drops, the
    /// broker closes it, the process restarts, or the window and limits change), the
    /// subscribers' first arrivals keep the publish order at each QoS: what is resent on a
    /// resumed session (PUBLISH with DUP, or PUBREL) goes out in the original order.
    /// (A Maximum QoS of 0 is left out: the harness lets a QoS 1 PUBLISH reach the broker
    /// before a QoS 0 one handed to the socket earlier, which a real socket cannot do.)
    #[test]
    fn first_releases_keep_publish_order(
        max_inflight in 1u16..5,
        ops in prop::collection::vec(in_order_op(1), 0..150),
    ) {
        let mut h = Harness {
            s: Some(Session::new(max_inflight)),
            max_qos: 2,
            retain_available: true,
            ..Harness::default()
        };
        for op in ops {
            h.apply(op);
        }
        h.settle();
        h.assert_release_order();
    }
}
