//! Deliveries decoded from the socket but not yet taken by the application, and the rule
//! for reading more ([`Backlog::may_read`]). Pure: the connection task asks, and reads or
//! not.
//!
//! Normally the connection reads only while the backlog is empty, so an application that
//! does not take its deliveries holds the broker back through the broker's own flow
//! control, and memory stays at one read's worth. One case needs more: while the
//! application awaits the answer to a SUBSCRIBE or UNSUBSCRIBE, the answer may sit behind
//! messages (a resumed session gets its unacknowledged messages again right after
//! CONNACK, before the SUBACK), and an application that takes deliveries only once
//! subscribed would wait forever. Then reading goes on into the backlog up to
//! [`MAX_BACKLOG_BYTES`].

use std::collections::VecDeque;

use crate::mqtt::state::Delivery;

/// Most bytes of deliveries held while a reply is awaited; beyond it reading stops as
/// usual. QoS 1/2 messages ahead of a SUBACK are bounded in number by the broker's flow
/// control (at most 65,535 packet ids, fewer with a Receive Maximum on MQTT 5), but not in
/// bytes, and QoS 0 messages are not bounded at all: memory needs its own bound. 64 MiB
/// holds Mosquitto's whole `max_inflight_messages 10000` of 6 KiB messages, or 65,535 of
/// 1 KiB.
pub(super) const MAX_BACKLOG_BYTES: usize = 64 << 20;

/// The deliveries waiting for the application, in arrival order, and their size.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    items: VecDeque<Delivery>,
    /// [`held_bytes`] of every item.
    bytes: usize,
    /// Reading stopped at the bound while a reply was awaited, and the backlog has not been
    /// seen empty since ([`Backlog::hit_bound`]).
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

    pub(super) fn push_back(&mut self, d: Delivery) {
        self.bytes += held_bytes(&d);
        self.items.push_back(d);
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

    /// Whether the connection may read more: when nothing waits for the application, or,
    /// while the application awaits a SUBACK or UNSUBACK (`reply_awaited`), until
    /// [`MAX_BACKLOG_BYTES`] are held.
    pub(super) fn may_read(&self, reply_awaited: bool) -> bool {
        self.items.is_empty() || (reply_awaited && self.bytes < MAX_BACKLOG_BYTES)
    }

    /// True the first time the bound holds reading back while a reply is awaited, until
    /// the backlog is next seen empty: the moment to tell the operator, since the
    /// application may be waiting for a reply it cannot get until it takes deliveries.
    /// Called once per turn of the connection's loop.
    pub(super) fn hit_bound(&mut self, reply_awaited: bool) -> bool {
        if self.items.is_empty() {
            self.warned = false;
        }
        if reply_awaited && !self.may_read(true) && !self.warned {
            self.warned = true;
            return true;
        }
        false
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
    use crate::mqtt::codec::{Publish, PublishProps, QoS};

    fn delivery(payload: usize) -> Delivery {
        Delivery {
            publish: Publish {
                topic: Arc::from("t"),
                payload: Bytes::from(vec![0u8; payload]),
                qos: QoS::AtMostOnce,
                retain: false,
                dup: false,
                pid: None,
                props: PublishProps::default(),
            },
            ack: None,
        }
    }

    #[test]
    fn without_an_awaited_reply_reading_waits_for_an_empty_backlog() {
        let mut b = Backlog::default();
        assert!(b.may_read(false));
        b.push_back(delivery(1));
        assert!(!b.may_read(false));
        b.pop_front();
        assert!(b.may_read(false));
    }

    #[test]
    fn an_awaited_reply_keeps_reading_until_the_byte_bound() {
        let mut b = Backlog::default();
        let chunk = 1 << 20;
        while b.bytes() < MAX_BACKLOG_BYTES {
            assert!(b.may_read(true), "stopped at {} bytes", b.bytes());
            assert!(!b.hit_bound(true));
            b.push_back(delivery(chunk));
        }
        assert!(!b.may_read(true));
        // Told once, not on every turn of the loop.
        assert!(b.hit_bound(true));
        assert!(!b.hit_bound(true));
        let first = b.pop_front().unwrap();
        assert!(b.may_read(true));
        b.push_front(first);
        assert!(!b.may_read(true));
        assert!(!b.hit_bound(true));
        while b.pop_front().is_some() {}
        assert_eq!((b.len(), b.bytes()), (0, 0));
        assert!(!b.hit_bound(true));
        // Once seen empty, the next time is told again.
        while b.may_read(true) {
            b.push_back(delivery(chunk));
        }
        assert!(b.hit_bound(true));
    }

    #[test]
    fn the_bound_counts_topics_and_properties_too() {
        let mut d = delivery(0);
        d.publish.topic = Arc::from("x".repeat(1000));
        d.publish.props.user = vec![("k".repeat(500), "v".repeat(500))];
        let mut b = Backlog::default();
        b.push_back(d);
        assert!(b.bytes() > 2000, "{}", b.bytes());
    }
}
