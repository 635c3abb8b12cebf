//! The simulated broker: an MQTT 5 / 3.1.1 subset that records every message it accepted,
//! in order. It behaves as Mosquitto does where mqlink's promise depends on it:
//!
//! - CONNECT/CONNACK with limits announced on v5 (Receive Maximum, Maximum Packet Size,
//!   Maximum QoS, Retain Available). A message breaking one ends the connection: v5 with
//!   DISCONNECT (0x95, 0x9B, 0x9A), 3.1.1 by closing it. A 3.1.1-only broker answers a v5
//!   CONNECT with return code 1.
//! - QoS 1 is accepted (recorded) on PUBLISH, QoS 2 stored on PUBLISH and accepted on
//!   PUBREL; a PUBREL for an id it holds nothing under gets PUBCOMP 0x92. A new QoS 2
//!   message under an id still awaiting PUBREL replaces the stored one ("Reused message
//!   ID"); a DUP one is answered PUBREC again. Stored QoS 2 messages count against the
//!   client's quota: beyond Receive Maximum, PUBREC 0x97.
//! - Sessions by client id; a resumed session gets PUBREC again for every stored QoS 2
//!   message. A restart loses all sessions, or with persistence restores them from the
//!   last snapshot, which may be older than what was acknowledged since ("ghosts").
//! - Refusals: `deny/` topics 0x87, `bad/` topics 0x90 (on 3.1.1 and QoS 0 both are
//!   acknowledged and dropped, as Mosquitto does); while the `busy` fault lasts, a share of
//!   QoS 1/2 messages is refused with a transient code: 0x97 in the PUBACK/PUBREC, or 0x89,
//!   0x93, 0x96 in a DISCONNECT (the only packet MQTT 5 allows those codes in).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mqtt_proto::v5 as pv5;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::net::{End, Net};
use super::rng::Rng;
use super::trace::Trace;
use crate::mqtt::codec::{self, Ack, Disconnect, Packet, Protocol, Publish, QoS};

/// Limits and behaviour fixed for a run.
#[derive(Debug, Clone)]
pub(crate) struct BrokerCfg {
    pub v5: bool,
    pub receive_max: u16,
    pub max_packet: Option<u32>,
    pub max_qos: QoS,
    pub retain_available: bool,
    /// Codes the `busy` fault refuses with (0x97 in the ack; the others in a DISCONNECT).
    pub transient_codes: &'static [u8],
}

/// Every transient refusal code.
pub(crate) const TRANSIENT_CODES: &[u8] = &[0x97, 0x89, 0x93, 0x96];

/// One message the broker took (a subscriber saw it).
#[derive(Debug, Clone)]
pub(crate) struct Arrival {
    pub topic: String,
    pub payload: Bytes,
}

/// Why the broker refused or dropped a message without delivering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Acknowledged (3.1.1 or QoS 0) and dropped: denied or bad topic.
    Silently,
    /// A QoS 2 message the broker had answered with PUBREC (taken over) and lost in a
    /// restart without persistence, or from an autosave older than it.
    InRestart,
}

#[derive(Debug, Clone, Default)]
struct Session {
    /// Stored QoS 2 messages awaiting PUBREL.
    stored: BTreeMap<u16, Publish>,
}

#[derive(Debug)]
pub(crate) struct BrokerState {
    pub cfg: BrokerCfg,
    sessions: BTreeMap<String, Session>,
    snapshot: Option<BTreeMap<String, Session>>,
    /// Bumped on each restart: handlers of an earlier incarnation stop.
    incarnation: u64,
    /// Current connection per client id (a new one takes the session over).
    owner: BTreeMap<String, u64>,
    pub arrivals: Vec<Arrival>,
    /// Payloads acknowledged and dropped (denied/bad on 3.1.1 or QoS 0, or lost in a
    /// restart after PUBREC).
    pub dropped: Vec<(Bytes, Dropped)>,
    /// Payloads refused with a transient code by the `busy` fault (may reorder).
    pub transient: Vec<Bytes>,
    /// Payloads of new messages that reused the id of a stored message the client did not
    /// know of (a ghost), after the ghost's PUBREC went out on that connection: the
    /// client may take the ghost's PUBREC for its own and release the new message early.
    pub ghost_reused: Vec<Bytes>,
    /// Per client id: ids whose stored message got a PUBREC at the resume of the current
    /// connection.
    resumed_pubrecs: BTreeMap<String, Vec<u16>>,
    /// Percent of QoS 1/2 messages refused transiently (the `busy` fault).
    pub busy: u64,
    /// Processing delay per packet batch (the `delay` fault).
    pub delay: Duration,
    /// Success acks (PUBACK 0, PUBCOMP 0 or 0x92) sent, by QoS, and QoS 0 messages taken.
    pub acks: [u64; 3],
    rng: Rng,
    trace: Trace,
    start: Instant,
}

/// The broker: cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Broker(Arc<Mutex<BrokerState>>);

fn transient_code(rng: &mut Rng, codes: &[u8]) -> u8 {
    codes[rng.below(codes.len() as u64) as usize]
}

impl Broker {
    pub(crate) fn new(cfg: BrokerCfg, rng: Rng, trace: Trace) -> Broker {
        Broker(Arc::new(Mutex::new(BrokerState {
            cfg,
            sessions: BTreeMap::new(),
            snapshot: None,
            incarnation: 0,
            owner: BTreeMap::new(),
            arrivals: Vec::new(),
            dropped: Vec::new(),
            transient: Vec::new(),
            ghost_reused: Vec::new(),
            resumed_pubrecs: BTreeMap::new(),
            busy: 0,
            delay: Duration::ZERO,
            acks: [0; 3],
            rng,
            trace,
            start: Instant::now(),
        })))
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, BrokerState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Persist the sessions (Mosquitto's autosave).
    pub(crate) fn snapshot(&self) {
        let mut s = self.state();
        s.snapshot = Some(s.sessions.clone());
    }

    /// Stop: every connection is reset, in-memory sessions are gone; with `persistence`
    /// they come back from the last snapshot when the broker starts again.
    pub(crate) fn stop(&self, net: &Net, persistence: bool) {
        net.broker_down();
        let mut s = self.state();
        s.incarnation += 1;
        s.owner.clear();
        let restored = if persistence {
            s.snapshot.clone().unwrap_or_default()
        } else {
            s.snapshot = None;
            BTreeMap::new()
        };
        let kept: Vec<Bytes> = restored
            .values()
            .flat_map(|x| x.stored.values().map(|m| m.payload.clone()))
            .collect();
        let lost: Vec<Bytes> = s
            .sessions
            .values()
            .flat_map(|x| x.stored.values().map(|m| m.payload.clone()))
            .filter(|p| !kept.contains(p))
            .collect();
        let now = s.start.elapsed().as_millis();
        for p in lost {
            s.trace.line(format!(
                "{now} broker: lost stored {} in the restart",
                String::from_utf8_lossy(&p[..p.len().min(8)])
            ));
            s.dropped.push((p, Dropped::InRestart));
        }
        s.sessions = restored;
    }

    /// Listen and serve every connection until the broker stops.
    pub(crate) fn start(&self, net: &Net) {
        let mut accept = net.listen();
        let broker = self.clone();
        let incarnation = self.state().incarnation;
        tokio::spawn(async move {
            while let Some(end) = accept.recv().await {
                tokio::spawn(broker.clone().serve(end, incarnation));
            }
        });
    }

    fn now_ms(&self) -> u64 {
        self.state().start.elapsed().as_millis() as u64
    }

    async fn serve(self, mut end: End, incarnation: u64) {
        let conn = end.id();
        let mut rbuf = BytesMut::new();
        let mut protocol: Option<Protocol> = None;
        let mut client_id = String::new();
        loop {
            match end.read_buf(&mut rbuf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let delay = self.state().delay;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            loop {
                if self.state().incarnation != incarnation {
                    return;
                }
                let frame = match codec::frame_len(&rbuf, 1 << 20) {
                    Ok(Some(n)) => rbuf.split_to(n),
                    Ok(None) => break,
                    Err(_) => return,
                };
                let mut out = BytesMut::new();
                let keep = match protocol {
                    None => {
                        let Some(level) = connect_level(&frame) else {
                            return;
                        };
                        let p = if level == 5 {
                            Protocol::V5
                        } else {
                            Protocol::V311
                        };
                        if p == Protocol::V5 && !self.state().cfg.v5 {
                            let _ = end.write_all(&[0x20, 2, 0, 1]).await;
                            return;
                        }
                        let mut f = frame.clone();
                        let Ok(Some(Packet::Connect(c))) = codec::decode(&mut f, p, 1 << 20) else {
                            return;
                        };
                        protocol = Some(p);
                        client_id = c.client_id.clone();
                        self.connect(conn, &c.client_id, c.clean_start, p, &mut out);
                        true
                    }
                    Some(p) => {
                        if self.state().owner.get(&client_id) != Some(&conn) {
                            // Taken over by a newer connection.
                            return;
                        }
                        let mut f = frame.clone();
                        match codec::decode(&mut f, p, 1 << 20) {
                            Ok(Some(packet)) => {
                                self.handle(&client_id, p, frame.len(), packet, &mut out)
                            }
                            _ => false,
                        }
                    }
                };
                if !out.is_empty() && end.write_all(&out).await.is_err() {
                    return;
                }
                if !keep {
                    return;
                }
            }
        }
    }

    fn connect(&self, conn: u64, client_id: &str, clean: bool, p: Protocol, out: &mut BytesMut) {
        let now = self.now_ms();
        let mut s = self.state();
        s.owner.insert(client_id.to_string(), conn);
        let present = !clean && s.sessions.contains_key(client_id);
        if !present {
            s.sessions.insert(client_id.to_string(), Session::default());
        }
        let cfg = s.cfg.clone();
        s.trace.line(format!(
            "{now} broker: conn {conn} CONNECT {} clean={clean} present={present}",
            p.name()
        ));
        if p == Protocol::V5 {
            let mut ack = pv5::Connack::new(present, pv5::ConnectReasonCode::Success);
            ack.properties.receive_max = Some(cfg.receive_max);
            ack.properties.max_packet_size = cfg.max_packet;
            if cfg.max_qos != QoS::ExactlyOnce {
                ack.properties.max_qos = Some(match cfg.max_qos {
                    QoS::AtMostOnce => mqtt_proto::QoS::Level0,
                    _ => mqtt_proto::QoS::Level1,
                });
            }
            if !cfg.retain_available {
                ack.properties.retain_available = Some(false);
            }
            if let Ok(b) = pv5::Packet::Connack(ack).encode() {
                out.extend_from_slice(b.as_ref());
            }
        } else {
            out.extend_from_slice(&[0x20, 2, u8::from(present), 0]);
        }
        // Mosquitto sends PUBREC again for every stored QoS 2 message of a resumed session.
        let stored: Vec<u16> = s
            .sessions
            .get(client_id)
            .map(|x| x.stored.keys().copied().collect())
            .unwrap_or_default();
        s.resumed_pubrecs
            .insert(client_id.to_string(), stored.clone());
        for pid in stored {
            let _ = codec::encode(&Packet::PubRec(Ack::ok(pid)), p, out);
        }
    }

    /// Handle one packet; false: close the connection.
    fn handle(
        &self,
        client_id: &str,
        p: Protocol,
        size: usize,
        packet: Packet,
        out: &mut BytesMut,
    ) -> bool {
        let now = self.now_ms();
        let mut s = self.state();
        let v5 = p == Protocol::V5;
        let disconnect = |out: &mut BytesMut, reason: u8| {
            if v5 {
                let d = Disconnect {
                    reason,
                    ..Disconnect::default()
                };
                let _ = codec::encode(&Packet::Disconnect(d), p, out);
            }
            false
        };
        match packet {
            Packet::Publish(m) => {
                let cfg = s.cfg.clone();
                if cfg
                    .max_packet
                    .is_some_and(|max| size as u64 > u64::from(max))
                {
                    s.trace.line(format!("{now} broker: too large, closing"));
                    return disconnect(out, 0x95);
                }
                if m.qos > cfg.max_qos {
                    s.trace.line(format!("{now} broker: QoS too high, closing"));
                    return disconnect(out, 0x9b);
                }
                if m.retain && !cfg.retain_available {
                    s.trace
                        .line(format!("{now} broker: retain unavailable, closing"));
                    return disconnect(out, 0x9a);
                }
                let refusal = if m.topic.starts_with("deny/") {
                    Some(0x87)
                } else if m.topic.starts_with("bad/") {
                    Some(0x90)
                } else {
                    None
                };
                let pid = m.pid.unwrap_or(0);
                match m.qos {
                    QoS::AtMostOnce => {
                        s.acks[0] += 1;
                        if refusal.is_some() {
                            s.dropped.push((m.payload.clone(), Dropped::Silently));
                        } else {
                            s.accept(&m, now);
                        }
                    }
                    QoS::AtLeastOnce => {
                        let busy = s.busy;
                        let code = if v5 && busy > 0 && s.rng.chance(busy) {
                            let c = transient_code(&mut s.rng, cfg.transient_codes);
                            s.transient.push(m.payload.clone());
                            s.trace
                                .line(format!("{now} broker: refused pid {pid} with 0x{c:02x}"));
                            if c != 0x97 {
                                return disconnect(out, c);
                            }
                            c
                        } else if let Some(c) = refusal {
                            if v5 {
                                c
                            } else {
                                s.dropped.push((m.payload.clone(), Dropped::Silently));
                                0
                            }
                        } else {
                            s.accept(&m, now);
                            0
                        };
                        if code == 0 {
                            s.acks[1] += 1;
                        }
                        let ack = Ack {
                            pid,
                            reason: code,
                            reason_string: None,
                        };
                        let _ = codec::encode(&Packet::PubAck(ack), p, out);
                    }
                    QoS::ExactlyOnce => {
                        let busy = s.busy;
                        let receive_max = usize::from(cfg.receive_max);
                        let sess = s.sessions.entry(client_id.to_string()).or_default();
                        let known = sess.stored.contains_key(&pid);
                        let full = !known && sess.stored.len() >= receive_max;
                        let code = if known && m.dup {
                            s.trace
                                .line(format!("{now} broker: dup of stored pid {pid}"));
                            0
                        } else if v5 && full {
                            // Not a "busy" refusal: mqlink keeps within Receive Maximum,
                            // so a full quota means stale state (ghosts), which must not
                            // reorder anything (the order check stays on for this route).
                            s.trace
                                .line(format!("{now} broker: quota full for pid {pid}"));
                            0x97
                        } else if v5 && busy > 0 && s.rng.chance(busy) {
                            s.transient.push(m.payload.clone());
                            let c = transient_code(&mut s.rng, cfg.transient_codes);
                            s.trace
                                .line(format!("{now} broker: refused pid {pid} with 0x{c:02x}"));
                            if c != 0x97 {
                                return disconnect(out, c);
                            }
                            c
                        } else if let (Some(c), true) = (refusal, v5) {
                            c
                        } else {
                            s.trace.line(format!(
                                "{now} broker: stored pid {pid} {} dup={} known={known}",
                                String::from_utf8_lossy(&m.payload[..m.payload.len().min(8)]),
                                m.dup
                            ));
                            let ghost_pubrec_sent = s
                                .resumed_pubrecs
                                .get(client_id)
                                .is_some_and(|ids| ids.contains(&pid));
                            if known && !m.dup && ghost_pubrec_sent {
                                s.trace
                                    .line(format!("{now} broker: pid {pid} of a ghost reused"));
                                s.ghost_reused.push(m.payload.clone());
                            }
                            // Stored (a reused id replaces what it held: Mosquitto's
                            // "Reused message ID ... Clearing from storage").
                            s.sessions
                                .entry(client_id.to_string())
                                .or_default()
                                .stored
                                .insert(pid, m.clone());
                            0
                        };
                        let ack = Ack {
                            pid,
                            reason: code,
                            reason_string: None,
                        };
                        let _ = codec::encode(&Packet::PubRec(ack), p, out);
                    }
                }
                true
            }
            Packet::PubRel(a) => {
                let stored = s
                    .sessions
                    .entry(client_id.to_string())
                    .or_default()
                    .stored
                    .remove(&a.pid);
                let reason = match stored {
                    Some(m) => {
                        if m.topic.starts_with("deny/") || m.topic.starts_with("bad/") {
                            s.dropped.push((m.payload.clone(), Dropped::Silently));
                        } else {
                            s.accept(&m, now);
                        }
                        s.acks[2] += 1;
                        0
                    }
                    None if v5 => {
                        s.trace
                            .line(format!("{now} broker: PUBREL for unknown pid {}", a.pid));
                        // The client takes this for "already completed": count it with the
                        // acks, so the counter check compares like with like.
                        s.acks[2] += 1;
                        0x92
                    }
                    None => {
                        // 3.1.1 has no reason codes: a plain PUBCOMP, also read as done.
                        s.trace
                            .line(format!("{now} broker: PUBREL for unknown pid {}", a.pid));
                        s.acks[2] += 1;
                        0
                    }
                };
                let ack = Ack {
                    pid: a.pid,
                    reason,
                    reason_string: None,
                };
                let _ = codec::encode(&Packet::PubComp(ack), p, out);
                true
            }
            Packet::PingReq => {
                let _ = codec::encode(&Packet::PingResp, p, out);
                true
            }
            Packet::Disconnect(_) => false,
            // Acks of messages to the client: the broker sends none in this model.
            _ => true,
        }
    }
}

impl BrokerState {
    fn accept(&mut self, m: &Publish, now: u64) {
        self.trace.line(format!(
            "{now} broker: accepted {} {}",
            m.topic,
            String::from_utf8_lossy(&m.payload[..m.payload.len().min(12)])
        ));
        self.arrivals.push(Arrival {
            topic: m.topic.to_string(),
            payload: m.payload.clone(),
        });
    }
}

/// The protocol level of a CONNECT frame (4: 3.1.1, 5: v5).
fn connect_level(frame: &[u8]) -> Option<u8> {
    if frame.first()? >> 4 != 1 {
        return None;
    }
    let mut i = 1;
    while frame.get(i)? & 0x80 != 0 {
        i += 1;
    }
    // Remaining length, then the protocol name "MQTT" (2 + 4 bytes), then the level.
    frame.get(i + 1 + 6).copied()
}
