//! [`TopicAliases`]: the MQTT 5 topic aliases of one connection, both ways (pure state; the
//! connection calls it as it encodes and decodes PUBLISH packets, and resets it on every
//! new connection, since aliases do not outlive one).
//!
//! Sent: a message whose properties carry a Topic Alias sets the alias with its first
//! PUBLISH on the connection; later PUBLISHes with the same alias and topic go with an
//! empty topic, as libmosquitto sends them (mosquitto_pub `-D PUBLISH topic-alias N`).
//! Received: a PUBLISH with a topic and an alias sets the alias; one with an empty topic
//! gets the topic its alias stands for, and an alias never set is a protocol error (a
//! PUBLISH without an alias is left as it came).
//! Received aliases must lie in 1..=the Topic Alias Maximum mqlink announced (MQTT 5
//! §3.3.2.3.4; none announced: 0, no alias allowed): anything else is a protocol error, so
//! a broker cannot make the map grow past what was announced. Sent aliases come from the
//! application's own messages; aliases are 16-bit numbers, so that map holds at most
//! 65,535 topics.

use std::collections::HashMap;
use std::sync::Arc;

use crate::mqtt::codec::Publish;

/// The aliases set on one connection.
#[derive(Debug, Default)]
pub(super) struct TopicAliases {
    sent: HashMap<u16, Arc<str>>,
    received: HashMap<u16, Arc<str>>,
    /// The Topic Alias Maximum announced on this connection's CONNECT.
    max_received: u16,
}

impl TopicAliases {
    /// A new connection, on whose CONNECT mqlink announced `max_received` (its Topic Alias
    /// Maximum; 0 when none): no alias stands for anything.
    pub(super) fn reset(&mut self, max_received: u16) {
        self.sent.clear();
        self.received.clear();
        self.max_received = max_received;
    }

    /// The PUBLISH to write for `p`: with an empty topic when its alias already stands for
    /// its topic on this connection. `None`: write `p` as it is (and the alias, if any, now
    /// stands for its topic).
    pub(super) fn outgoing(&mut self, p: &Publish) -> Option<Publish> {
        let alias = p.props.topic_alias?;
        if p.topic.is_empty() {
            return None;
        }
        if self.sent.get(&alias) == Some(&p.topic) {
            let mut short = p.clone();
            short.topic = Arc::from("");
            return Some(short);
        }
        self.sent.insert(alias, p.topic.clone());
        None
    }

    /// `p` was not written after all: its alias stands for nothing yet.
    pub(super) fn not_sent(&mut self, p: &Publish) {
        if let Some(a) = p.props.topic_alias
            && !p.topic.is_empty()
        {
            self.sent.remove(&a);
        }
    }

    /// Resolve the alias of a PUBLISH received.
    ///
    /// # Errors
    /// An alias outside 1..=the announced maximum, or an empty topic with an alias never
    /// set on this connection.
    pub(super) fn incoming(&mut self, p: &mut Publish) -> Result<(), String> {
        match (p.props.topic_alias, p.topic.is_empty()) {
            (None, _) => Ok(()),
            (Some(a), _) if a == 0 || a > self.max_received => Err(format!(
                "PUBLISH with topic alias {a}, outside 1..={} (the Topic Alias Maximum announced)",
                self.max_received
            )),
            (Some(a), false) => {
                self.received.insert(a, p.topic.clone());
                Ok(())
            }
            (Some(a), true) => match self.received.get(&a) {
                Some(t) => {
                    p.topic = t.clone();
                    Ok(())
                }
                None => Err(format!("PUBLISH with topic alias {a}, which was never set")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::codec::{PublishProps, QoS};

    fn publish(topic: &str, alias: Option<u16>) -> Publish {
        Publish {
            topic: topic.into(),
            payload: bytes::Bytes::from_static(b"x"),
            qos: QoS::AtMostOnce,
            retain: false,
            dup: false,
            pid: None,
            props: PublishProps {
                topic_alias: alias,
                ..PublishProps::default()
            },
        }
    }

    #[test]
    fn an_alias_is_set_once_then_sent_alone_until_the_next_connection() {
        let mut a = TopicAliases::default();
        let p = publish("t/1", Some(3));
        assert_eq!(a.outgoing(&p), None);
        let short = a.outgoing(&p).expect("the alias stands for t/1");
        assert_eq!((&*short.topic, short.props.topic_alias), ("", Some(3)));
        // The same alias for another topic sets it again.
        assert_eq!(a.outgoing(&publish("t/2", Some(3))), None);
        assert!(a.outgoing(&publish("t/2", Some(3))).is_some());
        assert_eq!(a.outgoing(&publish("t/2", None)), None);
        a.reset(0);
        assert_eq!(a.outgoing(&p), None);
    }

    #[test]
    fn received_aliases_are_resolved_and_unknown_ones_refused() {
        let mut a = TopicAliases::default();
        a.reset(8);
        let mut p = publish("", Some(5));
        assert!(a.incoming(&mut p).is_err());
        a.incoming(&mut publish("x/y", Some(5))).unwrap();
        a.incoming(&mut p).unwrap();
        assert_eq!(&*p.topic, "x/y");
        a.reset(8);
        assert!(a.incoming(&mut publish("", Some(5))).is_err());
    }

    #[test]
    fn received_aliases_beyond_the_announced_maximum_are_refused() {
        let mut a = TopicAliases::default();
        // None announced: no alias at all, so a broker cannot fill the map.
        a.reset(0);
        assert!(a.incoming(&mut publish("x/y", Some(1))).is_err());
        a.reset(4);
        assert!(a.incoming(&mut publish("x/y", Some(0))).is_err());
        assert!(a.incoming(&mut publish("x/y", Some(5))).is_err());
        assert!(a.incoming(&mut publish("x/y", Some(4))).is_ok());
    }
}
