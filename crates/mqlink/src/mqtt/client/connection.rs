//! One live connection: from CONNACK to its end ([`ConnEnd`]). `connected` owns the
//! socket halves and the buffers ([`Conn`]) and runs one `select!`, `biased;` so the arms
//! are polled in the order written, which is their priority: shutdown, then writing what
//! is buffered, reading, the application's acks, handing deliveries over, new commands,
//! and last the keepalive. That order is part of the deterministic simulation's trace
//! (`crate::sim`, one seed gives one trace): keep it. Each arm is one method below.
//!
//! Reading pauses while deliveries wait for the application (back-pressure reaches the
//! broker through its own flow control), except while the application awaits a SUBACK or
//! UNSUBACK: that answer may come behind the messages a resumed session gets again, or
//! behind live traffic, so reading goes on into the backlog until it comes, QoS 1/2
//! messages bounded by the broker's flow control and QoS 0 messages beyond a byte bound
//! dropped and counted (see `backlog`). Commands are taken
//! only while the session's queue and the write buffer have room. The keepalive judges
//! the broker only while reading: an unread PINGRESP is no sign of a dead broker.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backlog::Awaiting;
use super::event_loop::{ConnEnd, EventLoop, INTERNAL, MAX_QUEUED, MAX_WBUF, recv_opt};
use super::handle::{Command, LinkState};
use super::observer::{self, Direction, PacketObserver};
use super::reason::reason_name;
use crate::mqtt::codec::{self, ConnAck, Disconnect, Packet, Protocol};
use crate::mqtt::state::{AckToken, Delivery, Loss, SessionError, Token};
use crate::mqtt::transport::BoxIo;

/// One connection's I/O state, apart from the session (which outlives it).
struct Conn {
    rd: ReadHalf<BoxIo>,
    wr: WriteHalf<BoxIo>,
    protocol: Protocol,
    /// The broker's Server Keep Alive if it sent one, else ours.
    keep_alive: Duration,
    /// Largest packet we accept.
    max: usize,
    /// The broker's Maximum Packet Size on this connection.
    limit: Option<u32>,
    /// The most incoming QoS 1/2 messages the broker may have unacknowledged: the Receive
    /// Maximum we announced on MQTT 5, else one per packet id.
    receive_max: u16,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Bytes written so far: a QoS 0 message counts as written once every byte up to its
    /// end (its entry in `qos0`) is.
    written: u64,
    qos0: VecDeque<(u64, Token)>,
    last_write: Instant,
    ping_sent: Option<Instant>,
}

impl Conn {
    /// When to ping (or, with a ping unanswered, to give up): a quarter of the keepalive
    /// before the broker would expect to hear from us.
    fn ping_at(&self) -> Option<Instant> {
        if self.keep_alive.is_zero() {
            None
        } else {
            Some(match self.ping_sent {
                Some(sent) => sent + self.keep_alive,
                None => self.last_write + self.keep_alive.mul_f32(0.75),
            })
        }
    }

    /// Arm 1, shutdown: write what is buffered and a DISCONNECT (so the will is not
    /// published), each within a second.
    async fn on_shutdown(
        &mut self,
        disconnect: &Disconnect,
        observer: Option<&PacketObserver>,
    ) -> ConnEnd {
        if !self.wbuf.is_empty() {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.wr.write_all(&self.wbuf)).await;
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            write_disconnect(&mut self.wr, self.protocol, disconnect, observer),
        )
        .await;
        ConnEnd::Shutdown
    }
}

impl EventLoop {
    /// Serve one connection until shutdown, the end of the work, or its loss.
    pub(super) async fn connected(
        &mut self,
        io: BoxIo,
        leftover: BytesMut,
        connack: ConnAck,
        shutdown: &CancellationToken,
    ) -> ConnEnd {
        let protocol = self.protocol;
        tracing::info!(broker = %self.opts.url, client_id = %self.opts.client_id, protocol = protocol.name(), session_present = connack.session_present, "connected");
        let _ = self.link_tx.send(LinkState::Connected {
            protocol,
            session_present: connack.session_present,
        });
        self.session.connected(&connack);
        self.aliases
            .reset(self.opts.connect_extras.topic_alias_maximum.unwrap_or(0));
        if let Some(birth) = self.opts.birth.clone() {
            let token = INTERNAL | self.next_token.fetch_add(1, Ordering::Relaxed);
            self.session.publish(token, birth);
        }
        let keep_alive = match connack.server_keep_alive {
            Some(s) => Duration::from_secs(u64::from(s)),
            None => self.opts.keep_alive,
        };
        let (rd, wr) = tokio::io::split(io);
        let mut rbuf = leftover;
        rbuf.reserve(64 * 1024);
        let mut c = Conn {
            rd,
            wr,
            protocol,
            keep_alive,
            max: self.opts.max_packet_size as usize,
            limit: connack.max_packet_size,
            receive_max: match protocol {
                Protocol::V5 => self.opts.receive_maximum.unwrap_or(u16::MAX),
                Protocol::V311 | Protocol::V31 => u16::MAX,
            },
            rbuf,
            wbuf: BytesMut::with_capacity(64 * 1024),
            written: 0,
            qos0: VecDeque::new(),
            last_write: Instant::now(),
            ping_sent: None,
        };
        // A clone, so a reserved permit does not borrow `self` across the select.
        let deliver_tx = self.deliver_tx.clone();

        // Packets that arrived with the CONNACK.
        if let Err((e, loss)) = self.decode_all(&mut c.rbuf, c.max) {
            return ConnEnd::Lost(e, loss);
        }
        loop {
            self.drain_outputs(&mut c.wbuf, &mut c.qos0, c.written, c.limit);
            self.offer_backlog();
            // A clean end also completes the QoS 2 exchanges the broker started (its
            // PUBRELs are on their way): leaving earlier makes it keep them for a resumed
            // session, and mosquitto_sub, which prints a QoS 2 message only at its PUBREL,
            // never leaves one open. A lost connection does not wait for them.
            if self.finished() && self.session.awaiting_pubrel_len() == 0 && c.wbuf.is_empty() {
                let _ = write_disconnect(
                    &mut c.wr,
                    c.protocol,
                    &self.opts.disconnect,
                    self.opts.packet_observer.as_ref(),
                )
                .await;
                return ConnEnd::Finished;
            }
            let ping_at = c.ping_at();
            let accept = self.session.queued_len() < MAX_QUEUED && c.wbuf.len() < MAX_WBUF;
            // Only a backlog makes the answer matter: skip the session's scan otherwise
            // (this runs once per turn of the loop).
            let awaiting =
                (!self.backlog.is_empty() && self.session.awaiting_reply()).then(|| Awaiting {
                    unacked: self.session.unacked_incoming(),
                    receive_max: c.receive_max,
                });
            let read = self.backlog.may_read(awaiting);
            if self.backlog.beyond_flow_control(awaiting) {
                tracing::warn!(broker = %self.opts.url, held = self.backlog.len(), bytes = self.backlog.bytes(), unacked = self.session.unacked_incoming(), receive_maximum = c.receive_max, "the broker sent more unacknowledged QoS 1/2 messages than the Receive Maximum announced before answering a SUBSCRIBE or UNSUBSCRIBE: reading goes on towards the answer and keeps them, bounded only by the broker's packet ids");
            }
            if let Some(d) = self.backlog.drops_ended() {
                tracing::error!(broker = %self.opts.url, dropped = d.messages, bytes = d.bytes, "dropped {} incoming QoS 0 messages while the broker's answer to a SUBSCRIBE or UNSUBSCRIBE was awaited and the application did not take its deliveries; the application has taken everything held now", d.messages);
            }
            // Biased: the arms' order is their priority and the simulation's trace.
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => ControlFlow::Break(c.on_shutdown(&self.opts.disconnect, self.opts.packet_observer.as_ref()).await),
                r = c.wr.write_buf(&mut c.wbuf), if !c.wbuf.is_empty() => self.on_written(&mut c, r).await,
                r = c.rd.read_buf(&mut c.rbuf), if read => self.on_read(&mut c, r),
                Some(t) = self.ack_rx.recv() => {
                    self.on_acks(t);
                    ControlFlow::Continue(())
                }
                permit = deliver_tx.reserve(), if !self.backlog.is_empty() => {
                    self.on_deliver_permit(permit);
                    ControlFlow::Continue(())
                }
                cmd = recv_opt(&mut self.cmd_rx), if accept => {
                    self.on_commands(cmd);
                    ControlFlow::Continue(())
                }
                _ = sleep_until_opt(ping_at) => self.on_keepalive(&mut c, read),
            };
            if let ControlFlow::Break(end) = step {
                return end;
            }
        }
    }

    /// Hand waiting deliveries to the application while its channel has room.
    fn offer_backlog(&mut self) {
        while let Some(d) = self.backlog.pop_front() {
            match self.deliver_tx.try_send(d) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(d)) => {
                    self.backlog.push_front(d);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    // Nobody listens: ack so the broker does not stall on us.
                    if let Some(t) = d.ack {
                        self.session.ack(t);
                    }
                }
            }
        }
    }

    /// Arm 2, bytes written: count them, mark the QoS 0 messages now fully written, and
    /// flush once the buffer is empty.
    async fn on_written(
        &mut self,
        c: &mut Conn,
        r: std::io::Result<usize>,
    ) -> ControlFlow<ConnEnd> {
        match r {
            Ok(0) => {
                return ControlFlow::Break(ConnEnd::Lost(
                    "socket closed while writing".into(),
                    Loss::ClosedByBroker,
                ));
            }
            Ok(n) => {
                c.written += n as u64;
                c.last_write = Instant::now();
                while c.qos0.front().is_some_and(|(end, _)| *end <= c.written) {
                    let (_, t) = c.qos0.pop_front().expect("front exists");
                    self.session.written(t);
                }
                if c.wbuf.is_empty()
                    && let Err(e) = c.wr.flush().await
                {
                    return ControlFlow::Break(ConnEnd::Lost(
                        format!("write failed: {e}"),
                        loss_of(&e),
                    ));
                }
            }
            Err(e) => {
                return ControlFlow::Break(ConnEnd::Lost(
                    format!("write failed: {e}"),
                    loss_of(&e),
                ));
            }
        }
        ControlFlow::Continue(())
    }

    /// Arm 3, bytes read: any byte answers a pending ping; decode and handle the packets.
    fn on_read(&mut self, c: &mut Conn, r: std::io::Result<usize>) -> ControlFlow<ConnEnd> {
        match r {
            Ok(0) => ControlFlow::Break(ConnEnd::Lost(
                "broker closed the connection".into(),
                Loss::ClosedByBroker,
            )),
            Ok(_) => {
                c.ping_sent = None;
                match self.decode_all(&mut c.rbuf, c.max) {
                    Err((e, loss)) => ControlFlow::Break(ConnEnd::Lost(e, loss)),
                    Ok(()) => ControlFlow::Continue(()),
                }
            }
            Err(e) => ControlFlow::Break(ConnEnd::Lost(format!("read failed: {e}"), loss_of(&e))),
        }
    }

    /// Arm 4, the application acknowledged deliveries: this one and any others waiting.
    fn on_acks(&mut self, first: AckToken) {
        self.session.ack(first);
        while let Ok(t) = self.ack_rx.try_recv() {
            self.session.ack(t);
        }
    }

    /// Arm 5, the application's channel has room for the next delivery.
    fn on_deliver_permit(
        &mut self,
        permit: Result<mpsc::Permit<'_, Delivery>, mpsc::error::SendError<()>>,
    ) {
        if let (Ok(permit), Some(d)) = (permit, self.backlog.pop_front()) {
            permit.send(d);
        }
    }

    /// Arm 6, a command: it and what else is waiting, so one write carries many publishes.
    fn on_commands(&mut self, first: Option<Command>) {
        self.on_command(first);
        for _ in 0..256 {
            match self.cmd_rx.as_mut().map(|rx| rx.try_recv()) {
                Some(Ok(c)) => self.on_command(Some(c)),
                Some(Err(mpsc::error::TryRecvError::Disconnected)) => {
                    self.on_command(None);
                    break;
                }
                _ => break,
            }
        }
    }

    /// Arm 7, keepalive time: give up on a broker that did not answer the last ping while
    /// we were reading (`reading`), or send one.
    fn on_keepalive(&mut self, c: &mut Conn, reading: bool) -> ControlFlow<ConnEnd> {
        if c.ping_sent.is_some() && reading {
            return ControlFlow::Break(ConnEnd::Lost(
                format!(
                    "no answer from the broker within the keepalive of {:?}",
                    c.keep_alive
                ),
                Loss::Other,
            ));
        }
        // While the application is not taking deliveries we do not read (beyond the
        // backlog's bound when a reply is awaited), so the broker's PINGRESP may be waiting
        // unread: that is no sign of a dead broker. Keep pinging (the broker needs to hear
        // from us) and judge the broker again once reading resumes. While we read, a
        // backlog does not excuse a silent broker.
        if let Err(e) = codec::encode(&Packet::PingReq, c.protocol, &mut c.wbuf) {
            return ControlFlow::Break(ConnEnd::Lost(e.to_string(), Loss::Other));
        }
        observer::notify(
            self.opts.packet_observer.as_ref(),
            Direction::Sent,
            &Packet::PingReq,
        );
        c.ping_sent = Some(Instant::now());
        ControlFlow::Continue(())
    }

    /// Decode and handle what arrived. On an error: why the connection must go, and
    /// whether a message of ours may be the cause (a DISCONNECT from the broker may answer
    /// one; a broker breaking the protocol is its own fault).
    fn decode_all(&mut self, rbuf: &mut BytesMut, max: usize) -> Result<(), (String, Loss)> {
        loop {
            match codec::decode(rbuf, self.protocol, max) {
                Ok(Some(mut packet)) => {
                    if let Packet::Publish(p) = &mut packet
                        && let Err(e) = self.aliases.incoming(p)
                    {
                        return Err((format!("bad packet from broker: {e}"), Loss::Other));
                    }
                    observer::notify(
                        self.opts.packet_observer.as_ref(),
                        Direction::Received,
                        &packet,
                    );
                    if let Err(e) = self.session.handle(packet) {
                        return Err(match e {
                            SessionError::Disconnected { code: 0x8e, .. } => {
                                tracing::error!(client_id = %self.opts.client_id, "session taken over: another client connected with the same client id; give each instance its own client_id");
                                (e.to_string(), Loss::Other)
                            }
                            // "Busy", "receive maximum exceeded", "rate too high", "quota
                            // exceeded": the broker's state, not the message's fault. Blaming
                            // the message alone on the wire would dead-letter it after three
                            // such closes (found by the simulation, seed 20787000473).
                            SessionError::Disconnected {
                                code: 0x89 | 0x93 | 0x96 | 0x97,
                                ..
                            } => (e.to_string(), Loss::Other),
                            SessionError::Disconnected { code, ref reason } => (
                                format!(
                                    "broker disconnected us: {} (0x{code:02x}){}",
                                    reason_name(code),
                                    reason
                                        .as_deref()
                                        .map(|r| format!(": {r}"))
                                        .unwrap_or_default()
                                ),
                                Loss::ClosedByBroker,
                            ),
                            other => (other.to_string(), Loss::Other),
                        });
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err((format!("bad packet from broker: {e}"), Loss::Other)),
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn write_disconnect<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    protocol: Protocol,
    disconnect: &Disconnect,
    observer: Option<&PacketObserver>,
) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    let disconnect = Packet::Disconnect(disconnect.clone());
    if codec::encode(&disconnect, protocol, &mut buf).is_ok() {
        observer::notify(observer, Direction::Sent, &disconnect);
    }
    wr.write_all(&buf).await?;
    wr.flush().await?;
    wr.shutdown().await
}

/// The connection was lost on a read or write error: a reset is the broker's (or a
/// middlebox's) doing, anything else is not attributed to a message.
fn loss_of(e: &std::io::Error) -> Loss {
    match e.kind() {
        std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::UnexpectedEof => Loss::ClosedByBroker,
        _ => Loss::Other,
    }
}
