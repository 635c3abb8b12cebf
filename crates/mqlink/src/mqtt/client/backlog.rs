//! Deliveries decoded from the socket but not yet taken by the application, the rule for
//! reading more ([`Backlog::may_read`]) and the rule for keeping what was read
//! ([`Backlog::push_back`]). Pure: the connection task asks, and reads or not, counts and
//! logs.
//!
//! Normally the connection reads only while the backlog is empty, so an application that
//! does not take its deliveries holds the broker back through the broker's own flow
//! control, and memory stays at one read's worth. One case needs more: while the
//! application awaits the answer to a SUBSCRIBE or UNSUBSCRIBE, the answer may sit behind
//! messages (a resumed session gets its unacknowledged and queued messages right after
//! CONNACK, before the SUBACK; the subscriptions already in place keep bringing live
//! traffic), and an application that takes deliveries only once answered would wait
//! forever if reading stopped. The connector, `mqlink sub` and a `Link` whose earlier
//! handler is not being read all await their SUBACK first. So while an answer is awaited,
//! reading goes on until it comes, and memory is bounded by QoS:
//!
//! - QoS 1/2 messages are all kept: they are not ours to drop (the application acks them
//!   once it has them). The broker's flow control bounds them: it may have no more than
//!   the Receive Maximum we announce (MQTT 5) unacknowledged, none larger than our
//!   Maximum Packet Size. On 3.x only the broker's own window limits them (Mosquitto's
//!   `max_inflight_messages`, 20 unless configured), and one packet id each, 65,535 at
//!   most. A broker can go beyond the limit as we count it
//!   ([`Awaiting::within_flow_control`]): with Mosquitto 2.0.11 resuming a connector's
//!   session of 20,000 queued messages, the test
//!   `postgres_stopped_with_statements_in_flight_acked_only_what_was_committed` stalled
//!   when reading stopped there. Reading goes on then too, bounded by the
//!   packet ids only, and the connection task warns once ([`Backlog::beyond_flow_control`]).
//! - QoS 0 messages are kept while the backlog holds less than [`MAX_BACKLOG_BYTES`];
//!   one that finds it at the bound is dropped ([`Pushed::Dropped`]). At most once allows
//!   it (Mosquitto drops QoS 0 messages for a client whose queue is full, too); the
//!   connection task counts every drop in [`ClientStats`](super::ClientStats) and logs
//!   the first and the total of each episode ([`Backlog::drops_ended`]). An application
//!   that keeps taking deliveries during the wait drains the backlog and loses nothing
//!   unless the broker sends faster than it takes.
//!
//! Once the answer has come, reading waits for an empty backlog again.

use std::collections::VecDeque;

use crate::mqtt::codec::QoS;
use crate::mqtt::state::Delivery;

/// Most bytes of deliveries held before a QoS 0 message is dropped instead (only reachable
/// while an answer is awaited: otherwise reading stops at the first delivery held). 64 MiB
/// holds Mosquitto's whole `max_inflight_messages 10000` of 6 KiB messages, or 65,535 of
/// 1 KiB. QoS 1/2 messages are kept beyond it (see the module doc).
pub(super) const MAX_BACKLOG_BYTES: usize = 64 << 20;

/// What became of a delivery offered to the backlog: an expected outcome, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Held for the application.
    Held,
    /// A QoS 0 message that found the backlog at [`MAX_BACKLOG_BYTES`]: dropped. `first`:
    /// the first drop since the backlog was last empty, the moment to tell the operator.
    Dropped {
        /// The first of this episode.
        first: bool,
    },
}

/// QoS 0 messages dropped since the backlog was last empty.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Drops {
    /// How many.
    pub(super) messages: u64,
    /// Their size, as [`MAX_BACKLOG_BYTES`] counts it.
    pub(super) bytes: u64,
}

/// An answer to a SUBSCRIBE or UNSUBSCRIBE is awaited, and how far the broker's flow
/// control lets it go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Awaiting {
    /// QoS 1/2 messages of this connection the broker counts against our Receive Maximum,
    /// as far as we know: delivered and not acknowledged, and QoS 2 awaiting PUBREL.
    pub(super) unacked: usize,
    /// The most it may have: the Receive Maximum we announced (MQTT 5), else 65,535 (one
    /// packet id each).
    pub(super) receive_max: u16,
}

impl Awaiting {
    /// Whether the broker kept within `receive_max`. Exactly at it is fine: the broker may
    /// send no more QoS 1/2 messages, but the answer and QoS 0 messages still come.
    pub(super) fn within_flow_control(&self) -> bool {
        self.unacked <= usize::from(self.receive_max)
    }
}

/// The deliveries waiting for the application, in arrival order, and their size.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    items: VecDeque<Delivery>,
    /// [`held_bytes`] of every item.
    bytes: usize,
    /// Dropped since the backlog was last seen empty ([`Backlog::drops_ended`]).
    drops: Drops,
    /// Reading stopped for a broker beyond its flow control while an answer was awaited,
    /// and the backlog has not been seen empty since ([`Backlog::beyond_flow_control`]).
    warned: bool,
}

/// What a delivery holds in memory: the struct, its topic, payload and properties.
fn held_bytes(d: &Delivery) -> usize {
    let p = &d.publish;
    let props = &p.props;
    std::mem::size_of::<Delivery>()
        + p.topic.len()
        + p.payload.len()
        + props.content_type.as_ref().map_or(0, String::len)
        + props.response_topic.as_ref().map_or(0, String::len)
        + props.correlation_data.as_ref().map_or(0, |c| c.len())
        + props
            .user
            .iter()
            .map(|(k, v)| k.len() + v.len() + std::mem::size_of::<(String, String)>())
            .sum::<usize>()
        + props.order.0.len()
}

impl Backlog {
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Hold a delivery just decoded, unless it is a QoS 0 message and the backlog is at
    /// [`MAX_BACKLOG_BYTES`]. QoS 1/2 messages are always held (see the module doc).
    pub(super) fn push_back(&mut self, d: Delivery) -> Pushed {
        let size = held_bytes(&d);
        if d.publish.qos == QoS::AtMostOnce && self.bytes >= MAX_BACKLOG_BYTES {
            let first = self.drops.messages == 0;
            self.drops.messages += 1;
            self.drops.bytes += size as u64;
            return Pushed::Dropped { first };
        }
        self.bytes += size;
        self.items.push_back(d);
        Pushed::Held
    }

    /// Put back the delivery [`pop_front`](Self::pop_front) gave (the channel was full).
    pub(super) fn push_front(&mut self, d: Delivery) {
        self.bytes += held_bytes(&d);
        self.items.push_front(d);
    }

    pub(super) fn pop_front(&mut self) -> Option<Delivery> {
        let d = self.items.pop_front()?;
        self.bytes -= held_bytes(&d);
        Some(d)
    }

    /// Whether the connection may read more: when nothing waits for the application, or
    /// while an answer is `awaiting`, whatever the broker's flow control: stopping there
    /// for a broker that sends more than our Receive Maximum (Mosquitto 2.0 does, resuming
    /// a session whose backlog is larger than the window) stalled the application that
    /// awaits the answer for good. The broker's packet ids still bound those messages.
    pub(super) fn may_read(&self, awaiting: Option<Awaiting>) -> bool {
        self.items.is_empty() || awaiting.is_some()
    }

    /// True the first time the broker is seen beyond its flow control while an answer is
    /// awaited and deliveries are held, until the backlog is next seen empty: the moment
    /// to tell the operator that memory is bounded by the broker's packet ids only.
    /// Called once per turn of the connection's loop.
    pub(super) fn beyond_flow_control(&mut self, awaiting: Option<Awaiting>) -> bool {
        if self.items.is_empty() {
            self.warned = false;
        }
        let beyond = awaiting.is_some_and(|a| !a.within_flow_control());
        if beyond && !self.items.is_empty() && !self.warned {
            self.warned = true;
            return true;
        }
        false
    }

    /// The QoS 0 messages dropped since the backlog was last empty, once it is empty again
    /// (the application took everything held): the episode's total, for the log. Called
    /// once per turn of the connection's loop.
    pub(super) fn drops_ended(&mut self) -> Option<Drops> {
        if self.items.is_empty() && self.drops.messages > 0 {
            return Some(std::mem::take(&mut self.drops));
        }
        None
    }

    /// Deliveries held.
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    /// Bytes held, as [`MAX_BACKLOG_BYTES`] counts them.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::mqtt::codec::{Publish, PublishProps};

    fn delivery(qos: QoS, payload: usize) -> Delivery {
        Delivery {
            publish: Publish {
                topic: Arc::from("t"),
                payload: Bytes::from(vec![0u8; payload]),
                qos,
                retain: false,
                dup: false,
                pid: None,
                props: PublishProps::default(),
            },
            ack: None,
        }
    }

    const AWAITING: Option<Awaiting> = Some(Awaiting {
        unacked: 0,
        receive_max: 20,
    });

    /// Fill `b` with 1 MiB QoS 0 messages up to the byte bound.
    fn fill_to_the_bound(b: &mut Backlog) {
        while b.bytes() < MAX_BACKLOG_BYTES {
            assert_eq!(
                b.push_back(delivery(QoS::AtMostOnce, 1 << 20)),
                Pushed::Held
            );
        }
    }

    #[test]
    fn without_an_awaited_answer_reading_waits_for_an_empty_backlog() {
        let mut b = Backlog::default();
        assert!(b.may_read(None));
        b.push_back(delivery(QoS::AtMostOnce, 1));
        assert!(!b.may_read(None));
        b.pop_front();
        assert!(b.may_read(None));
    }

    #[test]
    fn an_awaited_answer_keeps_reading_past_the_byte_bound() {
        let mut b = Backlog::default();
        fill_to_the_bound(&mut b);
        // The answer is behind whatever comes next: reading must go on, or an application
        // that awaits it before taking deliveries waits forever.
        assert!(b.may_read(AWAITING));
        assert!(!b.beyond_flow_control(AWAITING));
        assert!(!b.may_read(None), "without an answer awaited, it waits");
    }

    #[test]
    fn beyond_the_bound_qos0_is_dropped_and_qos1_and_2_are_kept() {
        let mut b = Backlog::default();
        fill_to_the_bound(&mut b);
        let (len, bytes) = (b.len(), b.bytes());
        assert_eq!(
            b.push_back(delivery(QoS::AtMostOnce, 10)),
            Pushed::Dropped { first: true }
        );
        assert_eq!(
            b.push_back(delivery(QoS::AtMostOnce, 10)),
            Pushed::Dropped { first: false }
        );
        assert_eq!((b.len(), b.bytes()), (len, bytes), "nothing held for them");
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            assert_eq!(b.push_back(delivery(qos, 1 << 20)), Pushed::Held);
        }
        assert_eq!(b.len(), len + 2);
        // Below the bound again, QoS 0 is held again: the bound is on the backlog, not a
        // ban for the rest of the episode.
        while b.bytes() >= MAX_BACKLOG_BYTES {
            b.pop_front();
        }
        assert_eq!(b.push_back(delivery(QoS::AtMostOnce, 10)), Pushed::Held);
    }

    #[test]
    fn the_drops_of_an_episode_are_totalled_once_the_backlog_is_empty() {
        let mut b = Backlog::default();
        assert_eq!(b.drops_ended(), None);
        fill_to_the_bound(&mut b);
        b.push_back(delivery(QoS::AtMostOnce, 10));
        b.push_back(delivery(QoS::AtMostOnce, 20));
        assert_eq!(b.drops_ended(), None, "still held: the episode goes on");
        while b.pop_front().is_some() {}
        let size = std::mem::size_of::<Delivery>() as u64 + 1;
        assert_eq!(
            b.drops_ended(),
            Some(Drops {
                messages: 2,
                bytes: 2 * size + 30
            })
        );
        assert_eq!(b.drops_ended(), None, "told once");
        // The next episode starts over: its first drop is first again.
        fill_to_the_bound(&mut b);
        assert_eq!(
            b.push_back(delivery(QoS::AtMostOnce, 10)),
            Pushed::Dropped { first: true }
        );
    }

    #[test]
    fn a_broker_beyond_our_receive_maximum_is_read_on_with_one_warning() {
        let mut b = Backlog::default();
        b.push_back(delivery(QoS::AtLeastOnce, 1));
        let at = |unacked| {
            Some(Awaiting {
                unacked,
                receive_max: 20,
            })
        };
        assert!(b.may_read(at(20)), "a full window is within the rules");
        assert!(!b.beyond_flow_control(at(20)));
        assert!(b.may_read(at(21)), "reading on: the answer may be behind");
        // Told once, not on every turn of the loop.
        assert!(b.beyond_flow_control(at(21)));
        assert!(!b.beyond_flow_control(at(21)));
        while b.pop_front().is_some() {}
        assert!(b.may_read(at(21)), "an empty backlog always reads");
        assert!(!b.beyond_flow_control(at(21)));
        // Once seen empty, the next time is told again.
        b.push_back(delivery(QoS::AtLeastOnce, 1));
        assert!(b.beyond_flow_control(at(21)));
    }

    #[test]
    fn put_back_deliveries_count_as_held() {
        let mut b = Backlog::default();
        b.push_back(delivery(QoS::AtMostOnce, 100));
        let bytes = b.bytes();
        let d = b.pop_front().unwrap();
        assert_eq!((b.len(), b.bytes()), (0, 0));
        b.push_front(d);
        assert_eq!((b.len(), b.bytes()), (1, bytes));
    }

    #[test]
    fn the_bound_counts_topics_and_properties_too() {
        let mut d = delivery(QoS::AtMostOnce, 0);
        d.publish.topic = Arc::from("x".repeat(1000));
        d.publish.props.user = vec![("k".repeat(500), "v".repeat(500))];
        let mut b = Backlog::default();
        b.push_back(d);
        assert!(b.bytes() > 2000, "{}", b.bytes());
    }
}
