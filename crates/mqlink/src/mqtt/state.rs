//! Session state: the protocol bookkeeping of one MQTT client, with no I/O.
//!
//! The connection task feeds it what happened (a message to publish, a packet from the
//! broker, a connect or a disconnect, an application ack) and drains [`Output`]s: packets to
//! write, verdicts to hand back, messages to deliver. Keeping it free of sockets lets every
//! rule below be tested packet by packet, and all of them at once by a model-based property
//! test against a broker that sends stray, duplicate and wrong acks (`state/model.rs`).
//!
//! Rules it enforces:
//! - A publish gets exactly one [`Verdict`]: acknowledged (PUBACK, or PUBREC then PUBCOMP,
//!   with a success code), rejected (a reason code ≥ 0x80), or given up (only when the owner
//!   cancels everything at shutdown). Losing the connection never decides a verdict: the
//!   message is sent again after the reconnect.
//! - At most `window` QoS 1/2 messages are unacknowledged at once, the smaller of our cap and
//!   the broker's Receive Maximum. A packet id is reused only after its flow completed.
//! - After a reconnect, unacknowledged messages are sent again in their original order: with
//!   DUP (or as PUBREL when PUBREC was already seen) when the broker resumed the session,
//!   as fresh publishes when it did not. On a resumed session they keep their packet ids
//!   even when the new window is smaller than their number: the broker may hold state for
//!   those ids (a QoS 2 message it stored), so the ones beyond the window wait, ids reserved,
//!   and go out as the window frees; a new id would make a QoS 2 message a second message.
//! - Incoming QoS 1/2 messages are acknowledged only when the application says so, and in
//!   the order they arrived (MQTT-4.6.0-2). An application ack that belongs to an earlier
//!   connection is ignored: the broker will send that message again.
//! - A QoS 0 message is decided when the connection task reports it written to the socket
//!   ([`Session::written`]). One still unwritten when the connection drops goes back to the
//!   head of the queue and is sent on the next connection: bytes lost in a write buffer
//!   never leave a message without a verdict.
//! - The broker's CONNACK limits hold for every message sent: a retained message goes out
//!   unretained when the broker has no retain, and a QoS above the broker's Maximum QoS is
//!   lowered to it (each with an [`Output::Anomaly`], so the connection task logs a WARN).
//!   A message larger than the broker's Maximum Packet Size is refused by the connection
//!   task, which measures the encoded packet, through [`Session::refuse`].
//! - MQTT 3.1.1 brokers announce no limits and refuse a message only by closing the
//!   connection (Mosquitto does so for a QoS above its `max_qos`, a retained message
//!   without retain, a packet over its size limit); one such message must not block
//!   everything behind it forever. When the broker closes the connection soon after it was
//!   made with several messages unanswered, the session *probes*: it sends one message at a
//!   time (window 1) until every message that was unanswered at that close has been
//!   answered. A message the broker closes the connection on while it is alone on the wire
//!   gets a strike; at [`POISON_STRIKES`] strikes it is rejected ([`POISON_CODE`]). Alone,
//!   because a broker that refuses a message may drop the acks of the messages before it
//!   that it had not flushed yet: blaming everything unanswered would reject good messages.
//!   A QoS 2 message the broker answered with PUBREC is never blamed (the broker took it).
//!   After such a rejection the next connection starts a new session: the rejected
//!   message's packet id is free again, and the broker must not hold anything under it.
//!   Losses that are not the broker closing (keepalive timeouts, write errors) blame
//!   nobody.
//! - The first CONNECT of a process starts a new session when asked to
//!   ([`Session::clean_start`]): a new process knows nothing of the packet ids an earlier
//!   one left in the broker's session, and reusing one that holds a stored QoS 2 message
//!   makes the broker take a new message for a duplicate of the old one.

use std::collections::{HashMap, HashSet, VecDeque};

use super::codec::{Ack, ConnAck, Packet, Publish, QoS, SubscribeOptions};

/// Caller-chosen identifier of a publish or subscribe request.
pub type Token = u64;

/// The fate of one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The broker acknowledged it (QoS 0: it was written to the socket).
    Acknowledged,
    /// The broker refused it with an MQTT 5 reason code.
    Rejected {
        /// Reason code (≥ 0x80).
        code: u8,
        /// Reason string, when the broker sent one.
        reason: Option<String>,
    },
    /// The owner stopped the client before the broker answered.
    GaveUp,
}

/// Proof that an incoming message was delivered on a given connection; pass it back to ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    epoch: u64,
    pid: u16,
}

/// An incoming message for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The PUBLISH as received.
    pub publish: Publish,
    /// Present for QoS 1/2: the broker is acked only after [`Session::ack`] with it.
    pub ack: Option<AckToken>,
}

/// Something the connection task must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write this packet. `written` names a QoS 0 publish whose verdict is due once written.
    Send {
        /// The packet.
        packet: Packet,
        /// Token of a QoS 0 publish.
        written: Option<Token>,
    },
    /// A publish reached its verdict.
    Verdict(Token, Verdict),
    /// Hand a message to the application.
    Deliver(Delivery),
    /// A SUBSCRIBE request was answered: one code per filter.
    Subscribed(Token, Vec<u8>),
    /// An UNSUBSCRIBE request was answered.
    Unsubscribed(Token),
    /// Something odd but survivable happened (a stray ack); worth a log line.
    Anomaly(String),
}

/// The broker broke the protocol, or ended the connection: the connection must go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A packet that a broker must not send (or not now).
    #[error("protocol violation by broker: {0}")]
    Protocol(String),
    /// The broker refused a message for quota (0x97) on a resumed session while we kept
    /// within its receive maximum: its session counts QoS 2 messages we hold nothing under
    /// (typically a broker restarted from a snapshot older than what it acknowledged). Such
    /// ghosts stay until a new session; the next connect starts one and sends again
    /// everything not yet decided.
    #[error(
        "broker refused packet id {0} for quota on a resumed session that holds messages this client does not know of (a broker restored from an older snapshot?); starting a new session"
    )]
    StaleSession(u16),
    /// The broker sent DISCONNECT.
    #[error("broker sent DISCONNECT (reason 0x{code:02x}{})", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Disconnected {
        /// v5 reason code.
        code: u8,
        /// v5 reason string.
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// What the broker owes us next for an in-flight message.
enum Stage {
    /// PUBACK (QoS 1).
    Ack,
    /// PUBREC (QoS 2, first half).
    Rec,
    /// PUBCOMP (QoS 2, after our PUBREL).
    Comp,
}

#[derive(Debug)]
struct Inflight {
    seq: u64,
    token: Token,
    publish: Publish,
    stage: Stage,
    /// Connections the broker closed while this message was alone on the wire, unanswered.
    strikes: u8,
}

/// Reason code of a message rejected because the broker closed the connection after it
/// [`POISON_STRIKES`] times in a row (0x80, "unspecified error": the broker said nothing).
pub const POISON_CODE: u8 = 0x80;
/// Connections in a row the broker may close right after a message before it is rejected.
pub const POISON_STRIKES: u8 = 3;

/// How a connection ended, as far as the session cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The broker closed the connection (end of stream, reset or DISCONNECT) soon after the
    /// messages in flight were sent: a message may be the cause.
    ClosedByBroker,
    /// Anything else: a timeout, a failed write, a network fault, our own choice.
    Other,
}

#[derive(Debug)]
struct Queued {
    token: Token,
    publish: Publish,
}

#[derive(Debug)]
struct IncomingSlot {
    pid: u16,
    qos: QoS,
    done: bool,
}

#[derive(Debug)]
enum Request {
    Subscribe(Vec<(String, QoS)>),
    Unsubscribe(Vec<String>),
}

/// Protocol state of one client session.
#[derive(Debug)]
pub struct Session {
    max_inflight: u16,
    window: u16,
    connected: bool,
    epoch: u64,
    next_pid: u16,
    next_seq: u64,
    queued: VecDeque<Queued>,
    inflight: HashMap<u16, Inflight>,
    /// Ids of QoS 2 messages the broker answered with a PUBACK: decided, but a broker that
    /// did store them as QoS 2 may still hold them under these ids, so they are not used
    /// again until a new session starts (session present 0). At most [`MAX_HELD_BY_PUBACK`],
    /// oldest released first (`held_order`): RabbitMQ, which does this for every QoS 2
    /// message, holds nothing, and no id space must run out over a long session.
    held_by_puback: HashSet<u16>,
    held_order: VecDeque<u16>,
    /// Packet ids in `inflight` still to be sent again on this (resumed) connection, in
    /// order; they wait for the window like new messages but keep their ids.
    resend: VecDeque<u16>,
    incoming: VecDeque<IncomingSlot>,
    awaiting_pubrel: HashSet<u16>,
    subscriptions: Vec<(String, QoS)>,
    /// Sent with every SUBSCRIBE, renewals included.
    subscribe_options: SubscribeOptions,
    requests_waiting: VecDeque<(Token, Request)>,
    requests_sent: HashMap<u16, (Option<Token>, Request)>,
    out: VecDeque<Output>,
    /// QoS 0 messages handed out to be written and not yet reported written, in order.
    unwritten: VecDeque<Queued>,
    /// Messages still to be answered one at a time (window 1) after a close with several
    /// unanswered; 0: not probing.
    probe_left: usize,
    /// A message was rejected for the broker's closes: the next CONNECT starts a new
    /// session.
    force_new_session: bool,
    /// The broker resumed the session on this connection (CONNACK session present).
    resumed: bool,
    /// The broker's limits from the last CONNACK.
    retain_available: bool,
    max_qos: QoS,
    ever_connected: bool,
}

impl Session {
    /// A session allowing at most `max_inflight` unacknowledged QoS 1/2 messages.
    pub fn new(max_inflight: u16) -> Session {
        let max_inflight = max_inflight.max(1);
        Session {
            max_inflight,
            window: max_inflight,
            connected: false,
            epoch: 0,
            next_pid: 0,
            next_seq: 0,
            queued: VecDeque::new(),
            inflight: HashMap::new(),
            held_by_puback: HashSet::new(),
            held_order: VecDeque::new(),
            resend: VecDeque::new(),
            incoming: VecDeque::new(),
            awaiting_pubrel: HashSet::new(),
            subscriptions: Vec::new(),
            subscribe_options: SubscribeOptions::default(),
            requests_waiting: VecDeque::new(),
            requests_sent: HashMap::new(),
            out: VecDeque::new(),
            unwritten: VecDeque::new(),
            probe_left: 0,
            force_new_session: false,
            resumed: false,
            retain_available: true,
            max_qos: QoS::ExactlyOnce,
            ever_connected: false,
        }
    }

    /// Whether the next CONNECT should ask for a new session. `persistent`: the owner
    /// wants the broker to keep the session across connections. `resume_at_start`: a session
    /// an earlier process left may be resumed on this process's first connect; say false
    /// when this process publishes QoS 1/2 (its packet ids would collide with the earlier
    /// process's) and true when it only subscribes (the queued messages are the point).
    pub fn clean_start(&self, persistent: bool, resume_at_start: bool) -> bool {
        !persistent || (!self.ever_connected && !resume_at_start) || self.force_new_session
    }

    /// The window in force: 1 while probing for a message the broker closes on.
    fn effective_window(&self) -> usize {
        if self.probe_left > 0 {
            1
        } else {
            usize::from(self.window)
        }
    }

    /// Next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Messages not yet sent (waiting for the window or a connection), and QoS 0 messages
    /// not yet written.
    pub fn queued_len(&self) -> usize {
        self.queued.len() + self.unwritten.len()
    }

    /// QoS 1/2 messages sent and not yet acknowledged (including those waiting to be sent
    /// again after a reconnect).
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Incoming QoS 2 messages answered with PUBREC whose PUBREL has not come yet.
    pub fn awaiting_pubrel_len(&self) -> usize {
        self.awaiting_pubrel.len()
    }

    /// Whether the application waits for the broker's answer to a SUBSCRIBE or
    /// UNSUBSCRIBE sent on this connection. A resumed session may get its unacknowledged
    /// messages (Mosquitto: up to `max_inflight_messages` of them) before that answer, and
    /// an application that awaits it before taking deliveries only sees it if the
    /// connection task keeps reading meanwhile. Renewals after a reconnect are not counted:
    /// nobody awaits them.
    pub fn awaiting_reply(&self) -> bool {
        self.requests_sent
            .values()
            .any(|(token, _)| token.is_some())
    }

    /// Incoming QoS 1/2 messages of this connection that the broker counts against the
    /// Receive Maximum we announced, as far as we know: delivered and not yet acknowledged
    /// by the application, and QoS 2 messages answered with PUBREC whose PUBREL has not
    /// come. The broker's own count is never lower (our acks may still be on their way), so
    /// one above our Receive Maximum is a broker beyond its flow control.
    pub fn unacked_incoming(&self) -> usize {
        self.incoming.len() + self.awaiting_pubrel.len()
    }

    /// QoS 1/2 messages sent on this connection and not yet acknowledged: what the window
    /// bounds.
    fn on_wire(&self) -> usize {
        self.inflight.len() - self.resend.len()
    }

    /// Current window (our cap, limited by the broker's Receive Maximum).
    pub fn window(&self) -> u16 {
        self.window
    }

    /// True between [`Session::connected`] and [`Session::disconnected`].
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Queue a message. `publish.pid` and `dup` are ignored: the session assigns them.
    pub fn publish(&mut self, token: Token, mut publish: Publish) {
        publish.pid = None;
        publish.dup = false;
        self.queued.push_back(Queued { token, publish });
        self.pump();
    }

    /// The MQTT 5 options and properties of every SUBSCRIBE from now on.
    pub fn set_subscribe_options(&mut self, options: SubscribeOptions) {
        self.subscribe_options = options;
    }

    /// Ask for a subscription; it is remembered and renewed on every new session, unless
    /// the broker refuses it in its answer to this request.
    pub fn subscribe(&mut self, token: Token, filters: Vec<(String, QoS)>) {
        for (f, q) in &filters {
            match self.subscriptions.iter_mut().find(|(g, _)| g == f) {
                Some(existing) => existing.1 = *q,
                None => self.subscriptions.push((f.clone(), *q)),
            }
        }
        self.requests_waiting
            .push_back((token, Request::Subscribe(filters)));
        self.pump();
    }

    /// Drop subscriptions.
    pub fn unsubscribe(&mut self, token: Token, filters: Vec<String>) {
        self.subscriptions.retain(|(f, _)| !filters.contains(f));
        self.requests_waiting
            .push_back((token, Request::Unsubscribe(filters)));
        self.pump();
    }

    /// The broker accepted our CONNECT.
    pub fn connected(&mut self, connack: &ConnAck) {
        self.connected = true;
        self.ever_connected = true;
        self.force_new_session = false;
        self.resumed = connack.session_present;
        self.epoch += 1;
        self.incoming.clear();
        self.retain_available = connack.retain_available.unwrap_or(true);
        self.max_qos = connack.max_qos.unwrap_or(QoS::ExactlyOnce);
        if !connack.session_present {
            self.awaiting_pubrel.clear();
            self.held_by_puback.clear();
            self.held_order.clear();
        }
        let broker_max = connack.receive_max.unwrap_or(u16::MAX).max(1);
        self.window = self.max_inflight.min(broker_max);

        // Replay in original order.
        let mut replay: Vec<Inflight> = self.inflight.drain().map(|(_, v)| v).collect();
        replay.sort_by_key(|m| m.seq);
        self.resend.clear();
        // A resumed session keeps every id: the window only paces the resending (`pump`).
        let keep = if connack.session_present {
            replay.len()
        } else {
            self.effective_window().min(replay.len())
        };
        let overflow = replay.split_off(keep);
        // Messages beyond a shrunken window go back to the head of the queue, in order.
        for m in overflow.into_iter().rev() {
            let mut publish = m.publish;
            publish.pid = None;
            publish.dup = false;
            self.queued.push_front(Queued {
                token: m.token,
                publish,
            });
        }
        for mut m in replay {
            let pid = m.publish.pid.unwrap_or_default();
            if connack.session_present {
                // Sent by `pump`, as the window allows.
                self.resend.push_back(pid);
            } else {
                m.stage = initial_stage(m.publish.qos);
                m.publish.dup = false;
                // A new session may come with new limits.
                if let Some(note) = self.fit_limits(&mut m.publish) {
                    self.out.push_back(Output::Anomaly(note));
                }
                if m.publish.qos == QoS::AtMostOnce {
                    // Lowered to QoS 0 by the broker's Maximum QoS: no id, decided when written.
                    m.publish.pid = None;
                    self.out.push_back(Output::Send {
                        packet: Packet::Publish(m.publish.clone()),
                        written: Some(m.token),
                    });
                    self.unwritten.push_back(Queued {
                        token: m.token,
                        publish: m.publish,
                    });
                    continue;
                }
                m.stage = initial_stage(m.publish.qos);
                self.out.push_back(send(Packet::Publish(m.publish.clone())));
            }
            self.inflight.insert(pid, m);
        }

        // Requests sent on the old connection and never answered are asked again.
        let mut unanswered: Vec<(u16, (Option<Token>, Request))> =
            self.requests_sent.drain().collect();
        unanswered.sort_by_key(|(pid, _)| *pid);
        for (_, (token, req)) in unanswered.into_iter().rev() {
            if let Some(token) = token {
                self.requests_waiting.push_front((token, req));
            }
        }
        // Filters about to be requested anyway are left out of the renewal.
        let requested: HashSet<&str> = self
            .requests_waiting
            .iter()
            .filter_map(|(_, r)| match r {
                Request::Subscribe(f) => Some(f.iter().map(|(f, _)| f.as_str())),
                Request::Unsubscribe(_) => None,
            })
            .flatten()
            .collect();
        let renew: Vec<(String, QoS)> = self
            .subscriptions
            .iter()
            .filter(|(f, _)| !requested.contains(f.as_str()))
            .cloned()
            .collect();
        if !connack.session_present && !renew.is_empty() {
            let pid = self.alloc_pid();
            let filters = renew;
            self.requests_sent
                .insert(pid, (None, Request::Subscribe(filters.clone())));
            self.out.push_back(send(Packet::Subscribe {
                pid,
                filters,
                options: self.subscribe_options.clone(),
            }));
        }
        self.pump();
    }

    /// The connection is gone. Nothing is decided by the loss itself: unacknowledged
    /// messages wait for the next connection, QoS 0 messages not yet written go back to the
    /// head of the queue, application acks of this connection become void. The one
    /// exception: the oldest message on the wire when the broker closed the connection
    /// [`POISON_STRIKES`] times in a row, with no answer in between, is rejected.
    ///
    /// Returns true when a message was rejected for this loss: the cause of the broker's
    /// closes is gone, and the owner may reconnect without waiting out a long backoff.
    pub fn disconnected(&mut self, loss: Loss) -> bool {
        if !self.connected {
            return false;
        }
        self.connected = false;
        self.incoming.clear();
        // Anything not yet written is rebuilt from state on the next connect.
        self.out.retain(|o| !matches!(o, Output::Send { .. }));
        while let Some(q) = self.unwritten.pop_back() {
            self.queued.push_front(q);
        }
        self.strike(loss)
    }

    /// The broker closed the connection: probe, or strike the message that was alone on
    /// the wire; reject it at the last strike. True when a message was rejected.
    fn strike(&mut self, loss: Loss) -> bool {
        if loss != Loss::ClosedByBroker {
            return false;
        }
        let resend = &self.resend;
        let unanswered: Vec<u16> = self
            .inflight
            .iter()
            .filter(|(pid, m)| !resend.contains(pid) && m.stage != Stage::Comp)
            .map(|(pid, _)| *pid)
            .collect();
        match unanswered.as_slice() {
            [] => false,
            [pid] => {
                let pid = *pid;
                let Some(m) = self.inflight.get_mut(&pid) else {
                    return false;
                };
                m.strikes = m.strikes.saturating_add(1);
                if m.strikes < POISON_STRIKES {
                    self.probe_left = self.probe_left.max(1);
                    return false;
                }
                let m = self.finish(pid);
                self.force_new_session = true;
                self.out.push_back(Output::Verdict(
                    m.token,
                    Verdict::Rejected {
                        code: POISON_CODE,
                        reason: Some(format!(
                            "the broker closed the connection while this message was alone on the wire and unanswered, {POISON_STRIKES} times (too large, not allowed, or otherwise refused)"
                        )),
                    },
                ));
                true
            }
            several => {
                self.probe_left = self.probe_left.max(several.len());
                false
            }
        }
    }

    /// A QoS 0 message ([`Output::Send`] with `written`) is now in the socket: that is its
    /// verdict.
    pub fn written(&mut self, token: Token) {
        if let Some(i) = self.unwritten.iter().position(|q| q.token == token) {
            self.unwritten.remove(i);
            self.out
                .push_back(Output::Verdict(token, Verdict::Acknowledged));
        }
    }

    /// The connection task cannot send the message it was handed (its encoded packet is
    /// larger than the broker's Maximum Packet Size, or cannot be encoded at all): reject
    /// it. `pid` names a QoS 1/2 message, `written` a QoS 0 one, as in the [`Output::Send`].
    pub fn refuse(&mut self, pid: Option<u16>, written: Option<Token>, code: u8, reason: String) {
        let token = match (pid, written) {
            (_, Some(t)) => {
                let Some(i) = self.unwritten.iter().position(|q| q.token == t) else {
                    return;
                };
                self.unwritten.remove(i);
                t
            }
            (Some(pid), None) if self.inflight.contains_key(&pid) => self.finish(pid).token,
            _ => return,
        };
        self.out.push_back(Output::Verdict(
            token,
            Verdict::Rejected {
                code,
                reason: Some(reason),
            },
        ));
        self.pump();
    }

    /// Lower a message to the broker's limits; a note for the log when something changed.
    fn fit_limits(&self, p: &mut Publish) -> Option<String> {
        let mut notes = Vec::new();
        if p.retain && !self.retain_available {
            p.retain = false;
            notes.push(
                "sent without retain: the broker does not support retained messages".to_string(),
            );
        }
        if p.qos > self.max_qos {
            notes.push(format!(
                "sent at QoS {} instead of {}: the broker's Maximum QoS",
                self.max_qos as u8, p.qos as u8
            ));
            p.qos = self.max_qos;
        }
        (!notes.is_empty()).then(|| format!("message to '{}' {}", p.topic, notes.join("; ")))
    }

    /// Give up on everything not yet decided (the owner is stopping).
    pub fn give_up(&mut self) {
        self.resend.clear();
        while let Some(q) = self.unwritten.pop_back() {
            self.queued.push_front(q);
        }
        let mut all: Vec<(u64, Token)> = self
            .inflight
            .drain()
            .map(|(_, m)| (m.seq, m.token))
            .collect();
        all.sort();
        for (_, token) in all {
            self.out.push_back(Output::Verdict(token, Verdict::GaveUp));
        }
        for q in self.queued.drain(..) {
            self.out
                .push_back(Output::Verdict(q.token, Verdict::GaveUp));
        }
    }

    /// The application is done with an incoming message.
    pub fn ack(&mut self, token: AckToken) {
        if token.epoch != self.epoch || !self.connected {
            return;
        }
        if let Some(slot) = self
            .incoming
            .iter_mut()
            .find(|s| s.pid == token.pid && !s.done)
        {
            slot.done = true;
        }
        while self.incoming.front().is_some_and(|s| s.done) {
            let Some(slot) = self.incoming.pop_front() else {
                break;
            };
            match slot.qos {
                QoS::AtLeastOnce => self.out.push_back(send(Packet::PubAck(Ack::ok(slot.pid)))),
                QoS::ExactlyOnce => {
                    self.awaiting_pubrel.insert(slot.pid);
                    self.out.push_back(send(Packet::PubRec(Ack::ok(slot.pid))));
                }
                QoS::AtMostOnce => {}
            }
        }
    }

    /// A packet arrived from the broker.
    ///
    /// # Errors
    /// [`SessionError`] when the connection must be dropped.
    pub fn handle(&mut self, packet: Packet) -> Result<(), SessionError> {
        match packet {
            Packet::PubAck(a) => self.on_puback(a)?,
            Packet::PubRec(a) => self.on_pubrec(a)?,
            Packet::PubComp(a) => self.on_pubcomp(a),
            Packet::PubRel(a) => {
                self.awaiting_pubrel.remove(&a.pid);
                self.out.push_back(send(Packet::PubComp(Ack::ok(a.pid))));
            }
            Packet::Publish(p) => self.on_publish(p)?,
            Packet::SubAck { pid, codes } => match self.requests_sent.remove(&pid) {
                Some((Some(token), req)) => {
                    // A filter refused in answer to the application's own request is
                    // forgotten: the application is told, and renewing it on every new
                    // session would only be refused (and warned about) again. A refused
                    // renewal (below) is kept: the application was told it was granted.
                    if let Request::Subscribe(filters) = &req {
                        for ((f, _), c) in filters.iter().zip(&codes) {
                            if *c >= 0x80 {
                                self.subscriptions.retain(|(g, _)| g != f);
                            }
                        }
                    }
                    self.out.push_back(Output::Subscribed(token, codes));
                }
                Some((None, Request::Subscribe(filters))) => {
                    for ((f, _), c) in filters.iter().zip(&codes) {
                        if *c >= 0x80 {
                            self.out.push_back(Output::Anomaly(format!(
                                "broker refused resubscription to '{f}' (reason 0x{c:02x})"
                            )));
                        }
                    }
                }
                _ => self.out.push_back(Output::Anomaly(format!(
                    "SUBACK for unknown packet id {pid}"
                ))),
            },
            Packet::UnsubAck { pid } => match self.requests_sent.remove(&pid) {
                Some((Some(token), _)) => self.out.push_back(Output::Unsubscribed(token)),
                _ => self.out.push_back(Output::Anomaly(format!(
                    "UNSUBACK for unknown packet id {pid}"
                ))),
            },
            Packet::PingResp => {}
            Packet::Disconnect(d) => {
                return Err(SessionError::Disconnected {
                    code: d.reason,
                    reason: d.reason_string,
                });
            }
            other => {
                return Err(SessionError::Protocol(format!(
                    "unexpected {} from broker",
                    other.name()
                )));
            }
        }
        self.pump();
        Ok(())
    }

    /// A quota refusal (0x97) on a resumed session, while we keep within the broker's
    /// receive maximum, says the broker counts messages we do not know of: start a new
    /// session rather than retry into the same full quota (see [`SessionError::StaleSession`]).
    /// The refused message stays in flight and goes out again in order.
    fn stale_session(&mut self, a: &Ack) -> Result<(), SessionError> {
        if a.reason == 0x97 && self.resumed && self.on_wire() <= usize::from(self.window) {
            self.force_new_session = true;
            return Err(SessionError::StaleSession(a.pid));
        }
        Ok(())
    }

    fn on_puback(&mut self, a: Ack) -> Result<(), SessionError> {
        match self.inflight.get(&a.pid) {
            Some(m) if m.stage == Stage::Ack => {
                self.stale_session(&a)?;
                let m = self.finish(a.pid);
                self.out.push_back(Output::Verdict(m.token, verdict(a)));
            }
            // A broker without QoS 2 that answers it as QoS 1 (RabbitMQ before 3.12 does):
            // the broker's QoS 1 flow for this id is complete, so the message is decided as
            // delivered at QoS 1 (at least once), as a QoS above a v5 broker's Maximum QoS
            // is. Waiting for a PUBREC that never comes would hold the message (and, once
            // the window fills, every message behind it) forever, resent on each reconnect.
            Some(m) if m.stage == Stage::Rec => {
                let m = self.finish(a.pid);
                if self.held_by_puback.insert(a.pid) {
                    self.held_order.push_back(a.pid);
                    if self.held_order.len() > MAX_HELD_BY_PUBACK
                        && let Some(old) = self.held_order.pop_front()
                    {
                        self.held_by_puback.remove(&old);
                    }
                }
                self.out.push_back(Output::Anomaly(format!(
                    "broker answered the QoS 2 publish with packet id {} with a PUBACK: it \
                     has no QoS 2; the message counts as delivered at QoS 1 (at least once)",
                    a.pid
                )));
                self.out.push_back(Output::Verdict(m.token, verdict(a)));
            }
            _ => self.out.push_back(Output::Anomaly(format!(
                "PUBACK for packet id {} that is not awaiting one",
                a.pid
            ))),
        }
        Ok(())
    }

    fn on_pubrec(&mut self, a: Ack) -> Result<(), SessionError> {
        let stage = self.inflight.get(&a.pid).map(|m| m.stage);
        match stage {
            Some(Stage::Rec) if a.reason >= 0x80 => {
                self.stale_session(&a)?;
                let m = self.finish(a.pid);
                self.out.push_back(Output::Verdict(m.token, verdict(a)));
            }
            Some(Stage::Rec) | Some(Stage::Comp) => {
                if let Some(m) = self.inflight.get_mut(&a.pid) {
                    m.stage = Stage::Comp;
                }
                // An id still waiting to be sent again gets its PUBREL when the window
                // lets it (`pump`), not beyond the window now.
                if !self.resend.contains(&a.pid) {
                    self.out.push_back(send(Packet::PubRel(Ack::ok(a.pid))));
                }
            }
            None if a.reason < 0x80 => {
                // The broker holds a QoS 2 message under an id we hold nothing under: one
                // this session already finished, brought back by a broker that restarted
                // from an older snapshot (Mosquitto sends PUBREC again for every message it
                // restored awaiting PUBREL). Until released it counts against our receive
                // quota: Mosquitto refuses new publishes with 0x97 once such ghosts fill it,
                // for as long as the session lives. Release it (MQTT 5: PUBREL with 0x92,
                // packet identifier not found); at worst the broker delivers that message
                // once more, which at-least-once allows.
                self.out.push_back(send(Packet::PubRel(Ack {
                    pid: a.pid,
                    reason: 0x92,
                    reason_string: None,
                })));
                self.out.push_back(Output::Anomaly(format!(
                    "PUBREC for packet id {} that is not awaiting one; released it",
                    a.pid
                )));
            }
            _ => self.out.push_back(Output::Anomaly(format!(
                "PUBREC for packet id {} that is not awaiting one",
                a.pid
            ))),
        }
        Ok(())
    }

    fn on_pubcomp(&mut self, a: Ack) {
        match self.inflight.get(&a.pid) {
            Some(m) if m.stage == Stage::Comp => {
                let m = self.finish(a.pid);
                // 0x92 (packet id not found) after a resumed session means the broker had
                // already completed the flow: the message was received (PUBREC came first).
                let v = if a.reason == 0x92 {
                    Verdict::Acknowledged
                } else {
                    verdict(a)
                };
                self.out.push_back(Output::Verdict(m.token, v));
            }
            _ => self.out.push_back(Output::Anomaly(format!(
                "PUBCOMP for packet id {} that is not awaiting one",
                a.pid
            ))),
        }
    }

    fn on_publish(&mut self, p: Publish) -> Result<(), SessionError> {
        match (p.qos, p.pid) {
            (QoS::AtMostOnce, _) => self.out.push_back(Output::Deliver(Delivery {
                publish: p,
                ack: None,
            })),
            (_, None) => {
                return Err(SessionError::Protocol(
                    "QoS 1/2 PUBLISH without packet id".into(),
                ));
            }
            (QoS::AtLeastOnce, Some(pid)) => {
                self.incoming.push_back(IncomingSlot {
                    pid,
                    qos: QoS::AtLeastOnce,
                    done: false,
                });
                let ack = Some(AckToken {
                    epoch: self.epoch,
                    pid,
                });
                self.out
                    .push_back(Output::Deliver(Delivery { publish: p, ack }));
            }
            (QoS::ExactlyOnce, Some(pid)) => {
                if self.awaiting_pubrel.contains(&pid) {
                    // Already delivered and PUBREC sent; the broker did not see it.
                    self.out.push_back(send(Packet::PubRec(Ack::ok(pid))));
                } else if self.incoming.iter().any(|s| s.pid == pid) {
                    // A duplicate of a message the application still holds.
                } else {
                    self.incoming.push_back(IncomingSlot {
                        pid,
                        qos: QoS::ExactlyOnce,
                        done: false,
                    });
                    let ack = Some(AckToken {
                        epoch: self.epoch,
                        pid,
                    });
                    self.out
                        .push_back(Output::Deliver(Delivery { publish: p, ack }));
                }
            }
        }
        Ok(())
    }

    /// Move queued work onto the wire as far as the window allows.
    fn pump(&mut self) {
        if !self.connected {
            return;
        }
        while let Some((token, req)) = self.requests_waiting.pop_front() {
            let pid = self.alloc_pid();
            let packet = match &req {
                Request::Subscribe(filters) => Packet::Subscribe {
                    pid,
                    filters: filters.clone(),
                    options: self.subscribe_options.clone(),
                },
                Request::Unsubscribe(filters) => Packet::Unsubscribe {
                    pid,
                    filters: filters.clone(),
                    user: self.subscribe_options.unsubscribe_user.clone(),
                },
            };
            self.requests_sent.insert(pid, (Some(token), req));
            self.out.push_back(send(packet));
        }
        // Messages of a resumed session first, with their ids, as the window allows.
        while self.on_wire() < self.effective_window() {
            let Some(pid) = self.resend.pop_front() else {
                break;
            };
            if let Some(m) = self.inflight.get_mut(&pid) {
                if m.stage == Stage::Comp {
                    self.out.push_back(send(Packet::PubRel(Ack::ok(pid))));
                } else {
                    m.publish.dup = true;
                    // Its QoS stays (the broker may hold the flow at that QoS); retain can go.
                    if m.publish.retain && !self.retain_available {
                        m.publish.retain = false;
                    }
                    self.out.push_back(send(Packet::Publish(m.publish.clone())));
                }
            }
        }
        while let Some(front) = self.queued.front() {
            let qos = front.publish.qos.min(self.max_qos);
            if qos != QoS::AtMostOnce && self.inflight.len() >= self.effective_window() {
                break;
            }
            let mut q = self.queued.pop_front().expect("front exists");
            if let Some(note) = self.fit_limits(&mut q.publish) {
                self.out.push_back(Output::Anomaly(note));
            }
            if qos == QoS::AtMostOnce {
                self.out.push_back(Output::Send {
                    packet: Packet::Publish(q.publish.clone()),
                    written: Some(q.token),
                });
                self.unwritten.push_back(q);
                continue;
            }
            let pid = self.alloc_pid();
            let mut publish = q.publish;
            publish.pid = Some(pid);
            self.next_seq += 1;
            self.out.push_back(send(Packet::Publish(publish.clone())));
            self.inflight.insert(
                pid,
                Inflight {
                    seq: self.next_seq,
                    token: q.token,
                    stage: initial_stage(publish.qos),
                    publish,
                    strikes: 0,
                },
            );
        }
    }

    /// Take a message whose flow ended out of flight. Only called for ids in `inflight`.
    fn finish(&mut self, pid: u16) -> Inflight {
        // Usually empty; an id still waiting to be resent was answered early.
        self.resend.retain(|p| *p != pid);
        self.probe_left = self.probe_left.saturating_sub(1);
        self.inflight
            .remove(&pid)
            .expect("present: checked by the caller")
    }

    fn alloc_pid(&mut self) -> u16 {
        // Terminates: fewer than 65,535 ids are ever in use (window ≤ u16::MAX and
        // subscribe requests are few).
        loop {
            self.next_pid = self.next_pid % u16::MAX + 1;
            let pid = self.next_pid;
            if !self.inflight.contains_key(&pid)
                && !self.requests_sent.contains_key(&pid)
                && !self.held_by_puback.contains(&pid)
            {
                return pid;
            }
        }
    }
}

/// How many ids of PUBACK-answered QoS 2 messages stay out of use (see `held_by_puback`).
const MAX_HELD_BY_PUBACK: usize = 1024;

fn send(packet: Packet) -> Output {
    Output::Send {
        packet,
        written: None,
    }
}

fn initial_stage(qos: QoS) -> Stage {
    match qos {
        QoS::ExactlyOnce => Stage::Rec,
        _ => Stage::Ack,
    }
}

fn verdict(a: Ack) -> Verdict {
    if a.reason < 0x80 {
        Verdict::Acknowledged
    } else {
        Verdict::Rejected {
            code: a.reason,
            reason: a.reason_string,
        }
    }
}

#[cfg(test)]
mod model;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::mqtt::codec::PublishProps;

    /// A one-byte message to `topic` (also used by the model test).
    pub(super) fn msg(topic: &str, qos: QoS) -> Publish {
        Publish {
            topic: Arc::from(topic),
            payload: Bytes::from_static(b"x"),
            qos,
            retain: false,
            dup: false,
            pid: None,
            props: PublishProps::default(),
        }
    }

    fn connack(session_present: bool, receive_max: Option<u16>) -> ConnAck {
        ConnAck {
            session_present,
            receive_max,
            ..ConnAck::default()
        }
    }

    fn drain(s: &mut Session) -> Vec<Output> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    fn sent_publishes(out: &[Output]) -> Vec<(u16, String, bool)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send {
                    packet: Packet::Publish(p),
                    ..
                } => Some((p.pid.unwrap_or(0), p.topic.to_string(), p.dup)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn nothing_is_sent_before_the_first_connack() {
        let mut s = Session::new(10);
        s.publish(1, msg("a", QoS::AtLeastOnce));
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.queued_len(), 1);
        s.connected(&connack(false, None));
        assert_eq!(sent_publishes(&drain(&mut s)), vec![(1, "a".into(), false)]);
    }

    #[test]
    fn puback_releases_exactly_that_message() {
        let mut s = Session::new(10);
        s.connected(&connack(false, None));
        for (t, topic) in [(10, "a"), (11, "b"), (12, "c")] {
            s.publish(t, msg(topic, QoS::AtLeastOnce));
        }
        drain(&mut s);
        s.handle(Packet::PubAck(Ack::ok(2))).unwrap();
        assert_eq!(
            drain(&mut s),
            vec![Output::Verdict(11, Verdict::Acknowledged)]
        );
        assert_eq!(s.inflight_len(), 2);
    }

    #[test]
    fn out_of_order_acks_each_resolve_their_own_message() {
        let mut s = Session::new(10);
        s.connected(&connack(false, None));
        for t in 1..=4 {
            s.publish(t, msg("t", QoS::AtLeastOnce));
        }
        drain(&mut s);
        for pid in [3, 1, 4, 2] {
            s.handle(Packet::PubAck(Ack::ok(pid))).unwrap();
            assert_eq!(
                drain(&mut s),
                vec![Output::Verdict(u64::from(pid), Verdict::Acknowledged)]
            );
        }
    }

    #[test]
    fn qos2_is_acknowledged_only_after_pubcomp() {
        let mut s = Session::new(10);
        s.connected(&connack(false, None));
        s.publish(7, msg("t", QoS::ExactlyOnce));
        drain(&mut s);
        s.handle(Packet::PubRec(Ack::ok(1))).unwrap();
        assert_eq!(
            drain(&mut s),
            vec![Output::Send {
                packet: Packet::PubRel(Ack::ok(1)),
                written: None
            }]
        );
        s.handle(Packet::PubComp(Ack::ok(1))).unwrap();
        assert_eq!(
            drain(&mut s),
            vec![Output::Verdict(7, Verdict::Acknowledged)]
        );
    }

    #[test]
    fn a_puback_to_a_qos2_publish_decides_it_as_delivered_at_qos1() {
        // RabbitMQ 3.10 answers QoS 2 with PUBACK; the message must not wait forever for
        // a PUBREC, and the id must be free again.
        let mut s = Session::new(1);
        s.connected(&connack(false, None));
        s.publish(7, msg("a", QoS::ExactlyOnce));
        s.publish(8, msg("b", QoS::ExactlyOnce));
        drain(&mut s);
        s.handle(Packet::PubAck(Ack::ok(1))).unwrap();
        let out = drain(&mut s);
        assert!(
            matches!(&out[0], Output::Anomaly(m) if m.contains("PUBACK")),
            "{out:?}"
        );
        assert_eq!(out[1], Output::Verdict(7, Verdict::Acknowledged));
        // The window of 1 moved on to the next message.
        assert_eq!(sent_publishes(&out).len(), 1, "{out:?}");
    }

    #[test]
    fn v5_failure_reason_code_rejects_with_reason() {
        let mut s = Session::new(10);
        s.connected(&connack(false, None));
        s.publish(1, msg("t", QoS::AtLeastOnce));
        s.publish(2, msg("t", QoS::ExactlyOnce));
        drain(&mut s);
        s.handle(Packet::PubAck(Ack {
            pid: 1,
            reason: 0x87,
            reason_string: Some("not authorized".into()),
        }))
        .unwrap();
        s.handle(Packet::PubRec(Ack {
            pid: 2,
            reason: 0x97,
            reason_string: None,
        }))
        .unwrap();
        assert_eq!(
            drain(&mut s),
            vec![
                Output::Verdict(
                    1,
                    Verdict::Rejected {
                        code: 0x87,
                        reason: Some("not authorized".into())
                    }
                ),
                Output::Verdict(
                    2,
                    Verdict::Rejected {
                        code: 0x97,
                        reason: None
                    }
                ),
            ]
        );
    }

    #[test]
    fn no_matching_subscribers_is_still_success() {
        let mut s = Session::new(10);
        s.connected(&connack(false, None));
        s.publish(1, msg("t", QoS::AtLeastOnce));
        drain(&mut s);
        s.handle(Packet::PubAck(Ack {
            pid: 1,
            reason: 0x10,
            reason_string: None,
        }))
        .unwrap();
        assert_eq!(
            drain(&mut s),
            vec![Output::Verdict(1, Verdict::Acknowledged)]
        );
    }

    #[test]
    fn window_is_the_smaller_of_cap_and_receive_maximum() {
        let mut s = Session::new(20);
        s.connected(&connack(false, Some(3)));
        for t in 0..10 {
            s.publish(t, msg("t", QoS::AtLeastOnce));
        }
        assert_eq!(sent_publishes(&drain(&mut s)).len(), 3);
        assert_eq!(s.queued_len(), 7);
        s.handle(Packet::PubAck(Ack::ok(2))).unwrap();
        let out = drain(&mut s);
        assert_eq!(sent_publishes(&out), vec![(4, "t".into(), false)]);
    }

    #[test]
    fn packet_id_is_not_reused_while_in_flight() {
        let mut s = Session::new(3);
        s.connected(&connack(false, None));
        for t in 0..3 {
            s.publish(t, msg("t", QoS::AtLeastOnce));
        }
        drain(&mut s);
        // Free id 2 only; ids keep advancing and skip ids still in use after wrapping.
        s.next_pid = u16::MAX - 1;
        s.handle(Packet::PubAck(Ack::ok(2))).unwrap();
        s.publish(9, msg("t", QoS::AtLeastOnce));
        let out = drain(&mut s);
        let pids: Vec<u16> = sent_publishes(&out).iter().map(|p| p.0).collect();
        assert_eq!(pids, vec![u16::MAX]);
        s.handle(Packet::PubAck(Ack::ok(u16::MAX))).unwrap();
        s.publish(10, msg("t", QoS::AtLeastOnce));
        let pids: Vec<u16> = sent_publishes(&drain(&mut s)).iter().map(|p| p.0).collect();
        // 1 and 3 are in flight; 2 is free again.
        assert_eq!(pids, vec![2]);
    }

    #[test]
    fn connection_loss_decides_nothing_and_resumed_session_replays_with_dup_in_order() {
        let mut s = Session::new(10);
        s.connected(&connack(false, None));
        for (t, topic) in [(1, "a"), (2, "b"), (3, "c")] {
            s.publish(t, msg(topic, QoS::AtLeastOnce));
        }
        s.publish(4, msg("d", QoS::ExactlyOnce));
        drain(&mut s);
        s.handle(Packet::PubRec(Ack::ok(4))).unwrap();
        drain(&mut s);
        s.disconnected(Loss::Other);
        assert!(
            drain(&mut s)
                .iter()
                .all(|o| !matches!(o, Output::Verdict(..)))
        );
        s.publish(5, msg("e", QoS::AtLeastOnce));
        s.connected(&connack(true, None));
        let out = drain(&mut s);
        assert_eq!(
            sent_publishes(&out),
            vec![
                (1, "a".into(), true),
                (2, "b".into(), true),
                (3, "c".into(), true),
                (5, "e".into(), false)
            ]
        );
        assert!(out.contains(&Output::Send {
            packet: Packet::PubRel(Ack::ok(4)),
            written: None
        }));
    }

    #[test]
    fn new_session_replays_as_fresh_publishes() {
        let mut s = Session::new(10);
        s.connected(&connack(false, None));
        s.publish(1, msg("a", QoS::AtLeastOnce));
        s.publish(2, msg("b", QoS::ExactlyOnce));
        drain(&mut s);
        s.handle(Packet::PubRec(Ack::ok(2))).unwrap();
        drain(&mut s);
        s.disconnected(Loss::Other);
        s.connected(&connack(false, None));
        let out = drain(&mut s);
        assert_eq!(
            sent_publishes(&out),
            vec![(1, "a".into(), false), (2, "b".into(), false)]
        );
        // The QoS 2 flow starts over: PUBREC, then PUBCOMP completes it.
        s.handle(Packet::PubRec(Ack::ok(2))).unwrap();
        s.handle(Packet::PubComp(Ack::ok(2))).unwrap();
        assert!(drain(&mut s).contains(&Output::Verdict(2, Verdict::Acknowledged)));
    }

    #[test]
    fn replay_respects_a_smaller_window_after_reconnect() {
        let mut s = Session::new(10);
        s.connected(&connack(false, None));
        for t in 1..=5 {
            s.publish(t, msg(&format!("m{t}"), QoS::AtLeastOnce));
        }
        drain(&mut s);
        s.disconnected(Loss::Other);
        // A new session: the broker knows none of the ids, so those beyond the window
        // go back to the queue and get fresh ids later.
        s.connected(&connack(false, Some(2)));
        assert_eq!(
            sent_publishes(&drain(&mut s)),
            vec![(1, "m1".into(), false), (2, "m2".into(), false)]
        );
        assert_eq!((s.queued_len(), s.inflight_len()), (3, 2));
        s.handle(Packet::PubAck(Ack::ok(1))).unwrap();
        assert_eq!(
            sent_publishes(&drain(&mut s)),
            vec![(6, "m3".into(), false)]
        );
    }

    #[test]
    fn a_resumed_session_keeps_every_id_and_paces_the_resend_by_the_window() {
        let mut s = Session::new(10);
        s.connected(&connack(false, None));
        for t in 1..=4 {
            s.publish(t, msg(&format!("m{t}"), QoS::ExactlyOnce));
        }
        drain(&mut s);
        // The broker stored m1 and m3 (PUBREC) before the connection dropped.
        s.handle(Packet::PubRec(Ack::ok(1))).unwrap();
        s.handle(Packet::PubRec(Ack::ok(3))).unwrap();
        drain(&mut s);
        s.disconnected(Loss::Other);
        s.connected(&connack(true, Some(2)));
        let out = drain(&mut s);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0], send(Packet::PubRel(Ack::ok(1))));
        assert_eq!(sent_publishes(&out[1..]), vec![(2, "m2".into(), true)]);
        assert_eq!((s.queued_len(), s.inflight_len()), (0, 4));
        // As the window frees, the rest go out with their own ids: m3 as PUBREL (a new id
        // would make it a second message), then m4 as a DUP.
        s.handle(Packet::PubComp(Ack::ok(1))).unwrap();
        let out = drain(&mut s);
        assert_eq!(
            out,
            vec![
                Output::Verdict(1, Verdict::Acknowledged),
                send(Packet::PubRel(Ack::ok(3)))
            ]
        );
        s.handle(Packet::PubRec(Ack::ok(2))).unwrap();
        s.handle(Packet::PubComp(Ack::ok(2))).unwrap();
        let out = drain(&mut s);
        assert_eq!(sent_publishes(&out), vec![(4, "m4".into(), true)]);
    }

    #[test]
    fn qos0_verdict_waits_for_the_write() {
        let mut s = Session::new(1);
        s.connected(&connack(false, None));
        s.publish(1, msg("t", QoS::AtMostOnce));
        let out = drain(&mut s);
        assert!(matches!(
            out.as_slice(),
            [Output::Send {
                written: Some(1),
                ..
            }]
        ));
    }

    #[test]
    fn qos0_unwritten_at_disconnect_is_sent_again_and_decided_once() {
        // Regression: QoS 0 messages still in the write buffer when the connection dropped
        // lost their verdict senders and held publisher slots forever.
        let mut s = Session::new(1);
        s.connected(&connack(false, None));
        s.publish(1, msg("a", QoS::AtMostOnce));
        s.publish(2, msg("b", QoS::AtMostOnce));
        drain(&mut s);
        s.written(1);
        assert_eq!(
            drain(&mut s),
            vec![Output::Verdict(1, Verdict::Acknowledged)]
        );
        s.disconnected(Loss::Other);
        assert_eq!(s.queued_len(), 1, "the unwritten one waits");
        s.connected(&connack(false, None));
        let out = drain(&mut s);
        assert!(
            matches!(
                out.as_slice(),
                [Output::Send {
                    written: Some(2),
                    ..
                }]
            ),
            "{out:?}"
        );
        s.written(2);
        s.written(2);
        assert_eq!(
            drain(&mut s),
            vec![Output::Verdict(2, Verdict::Acknowledged)]
        );
        assert_eq!(s.queued_len(), 0);
    }

    #[test]
    fn broker_limits_lower_qos_and_drop_retain_with_a_note() {
        let mut s = Session::new(10);
        s.connected(&ConnAck {
            max_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            ..ConnAck::default()
        });
        let mut m = msg("a", QoS::ExactlyOnce);
        m.retain = true;
        s.publish(1, m);
        let out = drain(&mut s);
        assert!(
            matches!(&out[0], Output::Anomaly(n) if n.contains("QoS 1") && n.contains("retain")),
            "{out:?}"
        );
        let Output::Send {
            packet: Packet::Publish(p),
            ..
        } = &out[1]
        else {
            panic!("{out:?}")
        };
        assert_eq!((p.qos, p.retain), (QoS::AtLeastOnce, false));
        s.handle(Packet::PubAck(Ack::ok(p.pid.unwrap()))).unwrap();
        assert_eq!(
            drain(&mut s),
            vec![Output::Verdict(1, Verdict::Acknowledged)]
        );
    }

    #[test]
    fn maximum_qos_zero_sends_without_id_and_decides_when_written() {
        let mut s = Session::new(10);
        s.connected(&ConnAck {
            max_qos: Some(QoS::AtMostOnce),
            ..ConnAck::default()
        });
        s.publish(1, msg("a", QoS::AtLeastOnce));
        let out = drain(&mut s);
        assert!(
            matches!(&out[1], Output::Send { packet: Packet::Publish(p), written: Some(1) } if p.pid.is_none()),
            "{out:?}"
        );
        s.written(1);
        assert_eq!(
            drain(&mut s),
            vec![Output::Verdict(1, Verdict::Acknowledged)]
        );
    }

    /// One connection to a broker that acknowledges every message until it reads
    /// `poison`, then closes the connection; with `lose_acks`, the acks of the messages
    /// sent with the poison are lost (not flushed when it closed).
    fn connection_closed_on(s: &mut Session, poison: &str, lose_acks: bool) -> Vec<Output> {
        s.connected(&connack(false, None));
        let mut out = Vec::new();
        loop {
            let o = drain(s);
            let sent = sent_publishes(&o);
            out.extend(o);
            if sent.is_empty() {
                return out;
            }
            let poisoned = sent.iter().any(|p| p.1 == poison);
            for (pid, topic, _) in &sent {
                if topic == poison || (poisoned && lose_acks) {
                    break;
                }
                s.handle(Packet::PubAck(Ack::ok(*pid))).unwrap();
            }
            if poisoned {
                out.extend(drain(s));
                s.disconnected(Loss::ClosedByBroker);
                out.extend(drain(s));
                return out;
            }
        }
    }

    fn rejected(out: &[Output]) -> Vec<Token> {
        out.iter()
            .filter_map(|o| match o {
                Output::Verdict(
                    t,
                    Verdict::Rejected {
                        code: POISON_CODE, ..
                    },
                ) => Some(*t),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_message_the_broker_keeps_closing_on_is_found_alone_and_rejected() {
        // Regression: one such message was sent again after every reconnect, forever, and
        // nothing behind it moved (3.1.1 brokers refuse only by closing the connection).
        let mut s = Session::new(10);
        s.publish(1, msg("good-before", QoS::AtLeastOnce));
        s.publish(2, msg("poison", QoS::AtLeastOnce));
        s.publish(3, msg("good-after", QoS::AtLeastOnce));
        let mut closes = 0;
        let mut out = Vec::new();
        while rejected(&out).is_empty() {
            // The broker drops the acks it had not flushed: nothing gets through on the
            // first connection, so nothing can be blamed there.
            out = connection_closed_on(&mut s, "poison", closes == 0);
            closes += 1;
            assert!(closes <= 10, "never rejected");
        }
        assert_eq!(rejected(&out), vec![2]);
        assert_eq!(
            closes,
            1 + usize::from(POISON_STRIKES),
            "one close to learn, then alone"
        );
        // The next connection starts a new session (the rejected id must be free) and the
        // one behind goes out.
        assert!(s.clean_start(true, true));
        s.connected(&connack(false, None));
        let sent = sent_publishes(&drain(&mut s));
        assert_eq!(
            sent.iter().map(|p| p.1.as_str()).collect::<Vec<_>>(),
            ["good-after"]
        );
    }

    /// Closes it takes a 3.1.1 broker that refuses some messages only by closing the
    /// connection to have every message decided, with the session persistent as 3.1.1 keeps
    /// it: a CONNECT with clean session 0 finds the session the previous such connection
    /// left; one with clean session 1 (after a rejection) leaves none behind. With
    /// `lose_acks` the broker drops the acks of the messages it read with the poison.
    fn closes_to_decide(
        qos: QoS,
        poison_every: usize,
        n: usize,
        lose_acks: bool,
    ) -> (usize, Vec<Token>) {
        let mut s = Session::new(20);
        for t in 0..n {
            let topic = if t % poison_every == poison_every - 1 {
                format!("poison-{t}")
            } else {
                format!("good-{t}")
            };
            s.publish(t as Token, msg(&topic, qos));
        }
        let (mut has_session, mut closes, mut rejections) = (false, 0, Vec::new());
        let mut decided = 0;
        let mut count = |out: &[Output], rejections: &mut Vec<Token>| {
            for o in out {
                if let Output::Verdict(t, v) = o {
                    decided += 1;
                    if matches!(v, Verdict::Rejected { .. }) {
                        rejections.push(*t);
                    }
                }
            }
            decided
        };
        let mut done = 0;
        while done < n {
            assert!(closes < 10 * n, "never decided: {done} of {n}");
            let clean = s.clean_start(true, true);
            s.connected(&connack(!clean && has_session, None));
            has_session = !clean;
            loop {
                let out = drain(&mut s);
                count(&out, &mut rejections);
                let packets: Vec<Packet> = out
                    .into_iter()
                    .filter_map(|o| match o {
                        Output::Send { packet, .. } => Some(packet),
                        _ => None,
                    })
                    .collect();
                if packets.is_empty() {
                    break;
                }
                let poisoned = packets
                    .iter()
                    .any(|p| matches!(p, Packet::Publish(p) if p.topic.starts_with("poison")));
                let mut answers = Vec::new();
                for p in &packets {
                    match p {
                        Packet::Publish(p) if p.topic.starts_with("poison") => break,
                        _ if poisoned && lose_acks => break,
                        Packet::Publish(p) if p.qos == QoS::AtLeastOnce => {
                            answers.push(Packet::PubAck(Ack::ok(p.pid.unwrap())));
                        }
                        Packet::Publish(p) => answers.push(Packet::PubRec(Ack::ok(p.pid.unwrap()))),
                        Packet::PubRel(a) => answers.push(Packet::PubComp(Ack::ok(a.pid))),
                        _ => {}
                    }
                }
                for a in answers {
                    s.handle(a).unwrap();
                }
                if poisoned {
                    let out = drain(&mut s);
                    count(&out, &mut rejections);
                    s.disconnected(Loss::ClosedByBroker);
                    closes += 1;
                    break;
                }
            }
            let out = drain(&mut s);
            done = count(&out, &mut rejections);
        }
        (closes, rejections)
    }

    #[test]
    fn each_message_a_311_broker_closes_on_costs_at_most_one_close_to_find_and_the_strikes() {
        for (qos, every, n, lose_acks) in [
            (QoS::AtLeastOnce, 10, 60, false),
            (QoS::AtLeastOnce, 10, 60, true),
            (QoS::AtLeastOnce, 3, 30, true),
            (QoS::AtLeastOnce, 7, 140, false),
            (QoS::ExactlyOnce, 10, 60, false),
            (QoS::ExactlyOnce, 10, 60, true),
            (QoS::ExactlyOnce, 3, 30, true),
            (QoS::ExactlyOnce, 7, 140, false),
        ] {
            let (closes, rejected) = closes_to_decide(qos, every, n, lose_acks);
            let poisons = n / every;
            let mut want: Vec<Token> = (0..n as Token)
                .filter(|t| *t as usize % every == every - 1)
                .collect();
            want.sort_unstable();
            let mut got = rejected.clone();
            got.sort_unstable();
            assert_eq!(
                got, want,
                "every {every} lose_acks {lose_acks}: rejected {rejected:?}"
            );
            assert!(
                closes <= poisons * (1 + usize::from(POISON_STRIKES)),
                "lose_acks {lose_acks}: {closes} closes for {poisons} messages the broker refuses"
            );
        }
    }

    #[test]
    fn good_messages_whose_acks_the_broker_dropped_are_never_rejected() {
        // A broker that refuses one message drops the acks of the ones before it that it
        // had not flushed: they are unanswered at every close too.
        let mut s = Session::new(10);
        for (t, topic) in [(1, "a"), (2, "b"), (3, "c"), (4, "poison"), (5, "d")] {
            s.publish(t, msg(topic, QoS::AtLeastOnce));
        }
        let mut all = Vec::new();
        for _ in 0..20 {
            all.extend(connection_closed_on(&mut s, "poison", true));
            if !rejected(&all).is_empty() {
                break;
            }
        }
        assert_eq!(rejected(&all), vec![4]);
    }

    #[test]
    fn a_qos2_message_the_broker_answered_is_never_blamed() {
        let mut s = Session::new(1);
        s.publish(1, msg("a", QoS::ExactlyOnce));
        s.connected(&connack(false, None));
        let pid = sent_publishes(&drain(&mut s))[0].0;
        s.handle(Packet::PubRec(Ack::ok(pid))).unwrap();
        drain(&mut s);
        for _ in 0..5 {
            s.disconnected(Loss::ClosedByBroker);
            assert!(
                drain(&mut s)
                    .iter()
                    .all(|o| !matches!(o, Output::Verdict(..)))
            );
            s.connected(&connack(true, None));
            drain(&mut s);
        }
        assert_eq!(s.inflight_len(), 1);
    }

    #[test]
    fn timeouts_blame_no_message() {
        let mut s = Session::new(10);
        s.publish(1, msg("a", QoS::AtLeastOnce));
        for _ in 0..10 {
            s.connected(&connack(false, None));
            drain(&mut s);
            s.disconnected(Loss::Other);
            assert!(drain(&mut s).is_empty());
        }
        assert_eq!(s.inflight_len(), 1);
    }

    #[test]
    fn refused_messages_are_rejected_and_free_the_window() {
        let mut s = Session::new(1);
        s.connected(&connack(false, None));
        s.publish(1, msg("big", QoS::AtLeastOnce));
        s.publish(2, msg("small", QoS::AtLeastOnce));
        let out = drain(&mut s);
        assert_eq!(sent_publishes(&out).len(), 1);
        s.refuse(Some(1), None, 0x95, "too large".into());
        let out = drain(&mut s);
        assert!(matches!(
            &out[0],
            Output::Verdict(1, Verdict::Rejected { code: 0x95, .. })
        ));
        assert_eq!(sent_publishes(&out), vec![(2, "small".into(), false)]);
    }

    #[test]
    fn a_new_process_starts_a_new_session_only_when_it_must() {
        let mut s = Session::new(1);
        assert!(s.clean_start(false, false));
        assert!(
            s.clean_start(true, false),
            "first connect of a publishing process"
        );
        assert!(
            !s.clean_start(true, true),
            "a subscriber resumes its session"
        );
        s.connected(&connack(false, None));
        assert!(!s.clean_start(true, false), "reconnects resume");
    }

    #[test]
    fn incoming_acks_go_out_in_arrival_order() {
        let mut s = Session::new(10);
        s.connected(&connack(false, None));
        let mut tokens = vec![];
        for pid in [5, 6, 7] {
            let mut p = msg("in", QoS::AtLeastOnce);
            p.pid = Some(pid);
            s.handle(Packet::Publish(p)).unwrap();
            for o in drain(&mut s) {
                if let Output::Deliver(d) = o {
                    tokens.push(d.ack.unwrap());
                }
            }
        }
        s.ack(tokens[2]);
        s.ack(tokens[1]);
        assert!(
            drain(&mut s).is_empty(),
            "nothing acked before the first message is done"
        );
        s.ack(tokens[0]);
        let acks: Vec<Packet> = drain(&mut s)
            .into_iter()
            .map(|o| match o {
                Output::Send { packet, .. } => packet,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            acks,
            vec![
                Packet::PubAck(Ack::ok(5)),
                Packet::PubAck(Ack::ok(6)),
                Packet::PubAck(Ack::ok(7))
            ]
        );
    }

    #[test]
    fn an_ack_never_crosses_into_a_later_connection() {
        let mut s = Session::new(10);
        s.connected(&connack(false, None));
        let mut p = msg("in", QoS::AtLeastOnce);
        p.pid = Some(5);
        s.handle(Packet::Publish(p.clone())).unwrap();
        let Some(Output::Deliver(d)) = s.poll_output() else {
            panic!("no delivery")
        };
        s.disconnected(Loss::Other);
        s.connected(&connack(true, None));
        drain(&mut s);
        s.ack(d.ack.unwrap());
        assert!(
            drain(&mut s).is_empty(),
            "stale ack must not reach the new connection"
        );
        // The broker redelivers with the same id; the new token works.
        p.dup = true;
        s.handle(Packet::Publish(p)).unwrap();
        let Some(Output::Deliver(d2)) = s.poll_output() else {
            panic!("no redelivery")
        };
        s.ack(d2.ack.unwrap());
        assert_eq!(
            drain(&mut s),
            vec![Output::Send {
                packet: Packet::PubAck(Ack::ok(5)),
                written: None
            }]
        );
    }

    #[test]
    fn incoming_qos2_is_delivered_once_and_completed_on_pubrel() {
        let mut s = Session::new(10);
        s.connected(&connack(false, None));
        let mut p = msg("in", QoS::ExactlyOnce);
        p.pid = Some(9);
        s.handle(Packet::Publish(p.clone())).unwrap();
        let Some(Output::Deliver(d)) = s.poll_output() else {
            panic!("no delivery")
        };
        s.handle(Packet::Publish(p.clone())).unwrap();
        assert!(
            drain(&mut s).is_empty(),
            "duplicate while held is not delivered again"
        );
        s.ack(d.ack.unwrap());
        assert_eq!(
            drain(&mut s),
            vec![Output::Send {
                packet: Packet::PubRec(Ack::ok(9)),
                written: None
            }]
        );
        s.handle(Packet::Publish(p)).unwrap();
        assert_eq!(
            drain(&mut s),
            vec![Output::Send {
                packet: Packet::PubRec(Ack::ok(9)),
                written: None
            }],
            "after PUBREC a duplicate only repeats PUBREC"
        );
        s.handle(Packet::PubRel(Ack::ok(9))).unwrap();
        assert_eq!(
            drain(&mut s),
            vec![Output::Send {
                packet: Packet::PubComp(Ack::ok(9)),
                written: None
            }]
        );
    }

    #[test]
    fn unacked_incoming_counts_what_the_broker_holds_against_our_receive_maximum() {
        let mut s = Session::new(10);
        s.connected(&connack(false, None));
        let incoming = |qos, pid| {
            let mut p = msg("in", qos);
            p.pid = Some(pid);
            p.qos = qos;
            Packet::Publish(p)
        };
        s.handle(incoming(QoS::AtMostOnce, 0)).unwrap();
        s.handle(incoming(QoS::AtLeastOnce, 1)).unwrap();
        s.handle(incoming(QoS::ExactlyOnce, 2)).unwrap();
        let acks: Vec<AckToken> = drain(&mut s)
            .into_iter()
            .filter_map(|o| match o {
                Output::Deliver(d) => d.ack,
                _ => None,
            })
            .collect();
        assert_eq!(s.unacked_incoming(), 2, "QoS 0 is not counted");
        for t in acks {
            s.ack(t);
        }
        // The QoS 1 message is done once PUBACKed; the QoS 2 one until PUBREL comes.
        assert_eq!(s.unacked_incoming(), 1);
        s.handle(Packet::PubRel(Ack::ok(2))).unwrap();
        assert_eq!(s.unacked_incoming(), 0);
        // A new connection starts the count over for what the application still holds:
        // the broker sends those again and counts them again.
        s.handle(incoming(QoS::AtLeastOnce, 3)).unwrap();
        s.disconnected(Loss::Other);
        s.connected(&connack(true, None));
        assert_eq!(s.unacked_incoming(), 0);
    }

    #[test]
    fn a_filter_the_broker_refused_is_not_renewed_on_a_new_session() {
        let mut s = Session::new(10);
        s.subscribe(
            1,
            vec![
                ("ok/#".into(), QoS::AtLeastOnce),
                ("secret/#".into(), QoS::AtLeastOnce),
            ],
        );
        s.connected(&connack(false, None));
        let sent = drain(&mut s);
        let [
            Output::Send {
                packet: Packet::Subscribe { pid, .. },
                ..
            },
        ] = &sent[..]
        else {
            panic!("{sent:?}");
        };
        s.handle(Packet::SubAck {
            pid: *pid,
            codes: vec![1, 0x87],
        })
        .unwrap();
        assert_eq!(drain(&mut s), vec![Output::Subscribed(1, vec![1, 0x87])]);
        s.disconnected(Loss::Other);
        s.connected(&connack(false, None));
        let out = drain(&mut s);
        assert!(
            matches!(&out[..], [Output::Send { packet: Packet::Subscribe { filters, .. }, .. }] if filters == &vec![("ok/#".to_string(), QoS::AtLeastOnce)]),
            "{out:?}"
        );
    }

    #[test]
    fn subscriptions_are_renewed_when_the_session_is_new_but_not_when_resumed() {
        let mut s = Session::new(10);
        s.subscribe(1, vec![("a/#".into(), QoS::AtLeastOnce)]);
        s.connected(&connack(false, None));
        let out = drain(&mut s);
        assert!(matches!(
            &out[..],
            [Output::Send {
                packet: Packet::Subscribe { .. },
                ..
            }]
        ));
        let Output::Send {
            packet: Packet::Subscribe { pid, .. },
            ..
        } = &out[0]
        else {
            unreachable!()
        };
        s.handle(Packet::SubAck {
            pid: *pid,
            codes: vec![1],
        })
        .unwrap();
        assert_eq!(drain(&mut s), vec![Output::Subscribed(1, vec![1])]);
        s.disconnected(Loss::Other);
        s.connected(&connack(true, None));
        assert!(drain(&mut s).is_empty());
        s.disconnected(Loss::Other);
        s.connected(&connack(false, None));
        let out = drain(&mut s);
        assert!(
            matches!(&out[..], [Output::Send { packet: Packet::Subscribe { filters, .. }, .. }] if filters == &vec![("a/#".to_string(), QoS::AtLeastOnce)])
        );
    }

    #[test]
    fn a_reply_is_awaited_from_the_request_sent_until_its_answer_but_not_for_renewals() {
        let mut s = Session::new(10);
        s.subscribe(1, vec![("a/#".into(), QoS::AtLeastOnce)]);
        // Not sent yet: nothing to read for.
        assert!(!s.awaiting_reply());
        s.connected(&connack(true, None));
        let sent = drain(&mut s);
        let [
            Output::Send {
                packet: Packet::Subscribe { pid, .. },
                ..
            },
        ] = &sent[..]
        else {
            panic!("{sent:?}");
        };
        assert!(s.awaiting_reply());
        s.handle(Packet::SubAck {
            pid: *pid,
            codes: vec![1],
        })
        .unwrap();
        assert!(!s.awaiting_reply());
        assert_eq!(drain(&mut s), vec![Output::Subscribed(1, vec![1])]);
        s.unsubscribe(2, vec!["a/#".into()]);
        assert!(s.awaiting_reply());
        let sent = drain(&mut s);
        let [
            Output::Send {
                packet: Packet::Unsubscribe { pid, .. },
                ..
            },
        ] = &sent[..]
        else {
            panic!("{sent:?}");
        };
        s.handle(Packet::UnsubAck { pid: *pid }).unwrap();
        assert!(!s.awaiting_reply());
        assert_eq!(drain(&mut s), vec![Output::Unsubscribed(2)]);
        // A renewal on a new session is the engine's own: nobody waits for its SUBACK.
        s.subscribe(3, vec![("b/#".into(), QoS::AtLeastOnce)]);
        let sent = drain(&mut s);
        let [
            Output::Send {
                packet: Packet::Subscribe { pid, .. },
                ..
            },
        ] = &sent[..]
        else {
            panic!("{sent:?}");
        };
        s.handle(Packet::SubAck {
            pid: *pid,
            codes: vec![1],
        })
        .unwrap();
        assert_eq!(drain(&mut s), vec![Output::Subscribed(3, vec![1])]);
        s.disconnected(Loss::Other);
        s.connected(&connack(false, None));
        assert!(matches!(
            &drain(&mut s)[..],
            [Output::Send {
                packet: Packet::Subscribe { .. },
                ..
            }]
        ));
        assert!(!s.awaiting_reply());
    }

    #[test]
    fn stray_acks_are_anomalies_not_verdicts() {
        let mut s = Session::new(10);
        s.connected(&connack(false, None));
        s.handle(Packet::PubAck(Ack::ok(77))).unwrap();
        assert!(matches!(drain(&mut s).as_slice(), [Output::Anomaly(_)]));
    }

    #[test]
    fn a_pubrec_for_an_id_held_by_nothing_is_released() {
        // Regression (campaign, Mosquitto SIGKILLed with persistence, QoS 2 persistent v5):
        // a broker restored from an older snapshot holds QoS 2 messages this session already
        // finished and sends PUBREC for them again on reconnect. Ignored, they filled the
        // broker's receive quota and every new publish was refused with 0x97, for good.
        let mut s = Session::new(10);
        s.connected(&connack(true, None));
        s.publish(1, msg("a", QoS::ExactlyOnce));
        let sent = drain(&mut s);
        let Some(Output::Send {
            packet: Packet::Publish(Publish {
                pid: Some(live), ..
            }),
            ..
        }) = sent.first()
        else {
            panic!("{sent:?}");
        };
        let ghost = live.wrapping_add(100);
        s.handle(Packet::PubRec(Ack::ok(ghost))).unwrap();
        let out = drain(&mut s);
        assert!(
            out.iter().any(|o| matches!(o, Output::Send { packet: Packet::PubRel(Ack { pid, reason: 0x92, .. }), .. } if *pid == ghost)),
            "{out:?}"
        );
        assert!(
            out.iter().any(|o| matches!(o, Output::Anomaly(_))),
            "{out:?}"
        );
        // The live flow is untouched: its PUBREC still moves it on, its PUBCOMP decides it.
        s.handle(Packet::PubRec(Ack::ok(*live))).unwrap();
        s.handle(Packet::PubComp(Ack::ok(*live))).unwrap();
        assert!(drain(&mut s).contains(&Output::Verdict(1, Verdict::Acknowledged)));
        // A refusing PUBREC for an unknown id releases nothing: the broker holds nothing.
        s.handle(Packet::PubRec(Ack {
            pid: ghost,
            reason: 0x80,
            reason_string: None,
        }))
        .unwrap();
        assert!(matches!(drain(&mut s).as_slice(), [Output::Anomaly(_)]));
    }

    #[test]
    fn a_quota_refusal_on_a_resumed_session_starts_a_new_one() {
        // Regression (campaign, Mosquitto SIGKILLed with persistence, QoS 2 persistent v5):
        // restored from an older snapshot, the broker counted QoS 2 messages this session had
        // finished against its receive maximum and refused new ones with 0x97; retried one
        // by one, they arrived out of order, and the quota never came back.
        let mut s = Session::new(10);
        s.connected(&connack(true, None));
        s.publish(1, msg("a", QoS::ExactlyOnce));
        s.publish(2, msg("b", QoS::ExactlyOnce));
        drain(&mut s);
        let refuse = |pid| {
            Packet::PubRec(Ack {
                pid,
                reason: 0x97,
                reason_string: None,
            })
        };
        let err = s.handle(refuse(1)).unwrap_err();
        assert_eq!(err, SessionError::StaleSession(1));
        assert!(
            !drain(&mut s)
                .iter()
                .any(|o| matches!(o, Output::Verdict(..))),
            "no verdict: the message goes out again"
        );
        s.disconnected(Loss::Other);
        assert!(
            s.clean_start(true, true),
            "the next connect starts a new session"
        );
        s.connected(&connack(false, None));
        let resent: Vec<(Option<u16>, bool)> = drain(&mut s)
            .into_iter()
            .filter_map(|o| match o {
                Output::Send {
                    packet: Packet::Publish(p),
                    ..
                } => Some((p.pid, p.dup)),
                _ => None,
            })
            .collect();
        assert_eq!(
            resent,
            vec![(Some(1), false), (Some(2), false)],
            "both again, in order"
        );
        // On a new session a quota refusal is the broker's word on that message: transient.
        assert!(!s.clean_start(true, true));
        s.handle(refuse(1)).unwrap();
        assert!(
            drain(&mut s)
                .iter()
                .any(|o| matches!(o, Output::Verdict(1, Verdict::Rejected { code: 0x97, .. })))
        );
    }

    #[test]
    fn broker_sending_connect_is_a_protocol_violation() {
        let mut s = Session::new(10);
        s.connected(&connack(false, None));
        assert!(s.handle(Packet::PingReq).is_err());
    }

    #[test]
    fn give_up_resolves_everything_once() {
        let mut s = Session::new(1);
        s.connected(&connack(false, None));
        s.publish(1, msg("a", QoS::AtLeastOnce));
        s.publish(2, msg("b", QoS::AtLeastOnce));
        drain(&mut s);
        s.give_up();
        assert_eq!(
            drain(&mut s),
            vec![
                Output::Verdict(1, Verdict::GaveUp),
                Output::Verdict(2, Verdict::GaveUp)
            ]
        );
        s.give_up();
        assert!(drain(&mut s).is_empty());
    }
}
