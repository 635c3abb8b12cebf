//! The spool record of one outgoing MQTT message.
//!
//! Routing and rendering happen at ingest, so an event that cannot be published is refused
//! while its sender is still there to hear it (HTTP 422), and the spool holds exactly what
//! will go to the broker. One event matching three routes becomes three records, appended
//! together (all or nothing).
//!
//! Layout, version 1 (integers little-endian):
//!
//! ```text
//! u8  version (1)
//! u8  flags: bits 0-1 QoS, bit 2 retain, bit 3 properties present
//! u16 route index (0xFFFF: raw publish)
//! u64 accepted_at, milliseconds since the Unix epoch (for the latency metric)
//! u16 topic length, topic bytes (UTF-8)
//! [properties: u16 len + content type, u32 message expiry + 1 (0: none),
//!              u16 count, then count × (u16 len + name, u16 len + value)]
//! payload: the rest of the record
//! ```
//!
//! The spool checksums every record; decoding still checks every length, so a record from
//! a future version or a damaged one is an error value, never a panic.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::mqtt::codec::{Publish, PublishProps, QoS};

const VERSION: u8 = 1;
/// Route index of messages published with `POST /v1/publish`.
pub(crate) const RAW_ROUTE: u16 = u16::MAX;

/// One message to publish, as stored in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// Index of the route that produced it, or [`RAW_ROUTE`].
    pub route: u16,
    /// Topic (already rendered and validated).
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain.
    pub retain: bool,
    /// MQTT 5 properties.
    pub props: PublishProps,
    /// When the event was accepted, ms since the epoch.
    pub accepted_at_ms: u64,
}

/// A record that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable spool record: {0}")]
pub struct DecodeError(&'static str);

pub(crate) use crate::observe::meter::epoch_ms;

impl OutMessage {
    /// Encode into a spool record.
    pub fn encode(&self) -> Bytes {
        let props = !self.props.is_empty();
        let mut b = BytesMut::with_capacity(16 + self.topic.len() + self.payload.len());
        b.put_u8(VERSION);
        b.put_u8(self.qos as u8 | (u8::from(self.retain) << 2) | (u8::from(props) << 3));
        b.put_u16_le(self.route);
        b.put_u64_le(self.accepted_at_ms);
        put_str(&mut b, &self.topic);
        if props {
            put_str(&mut b, self.props.content_type.as_deref().unwrap_or(""));
            b.put_u32_le(
                self.props
                    .message_expiry
                    .map(|e| e.saturating_add(1))
                    .unwrap_or(0),
            );
            b.put_u16_le(self.props.user.len().min(usize::from(u16::MAX)) as u16);
            for (k, v) in self.props.user.iter().take(usize::from(u16::MAX)) {
                put_str(&mut b, k);
                put_str(&mut b, v);
            }
        }
        b.put_slice(&self.payload);
        b.freeze()
    }

    /// Decode a spool record.
    ///
    /// # Errors
    /// [`DecodeError`] for an unknown version or a length that runs past the end.
    pub fn decode(mut b: Bytes) -> Result<OutMessage, DecodeError> {
        need(&b, 12)?;
        if b.get_u8() != VERSION {
            return Err(DecodeError("unknown record version"));
        }
        let flags = b.get_u8();
        let qos = QoS::from_u8(flags & 3).ok_or(DecodeError("bad QoS"))?;
        let retain = flags & 4 != 0;
        let route = b.get_u16_le();
        let accepted_at_ms = b.get_u64_le();
        let topic = get_str(&mut b)?;
        let mut props = PublishProps::default();
        if flags & 8 != 0 {
            let ct = get_str(&mut b)?;
            props.content_type = (!ct.is_empty()).then_some(ct);
            need(&b, 6)?;
            props.message_expiry = b.get_u32_le().checked_sub(1);
            let n = b.get_u16_le();
            for _ in 0..n {
                let k = get_str(&mut b)?;
                let v = get_str(&mut b)?;
                props.user.push((k, v));
            }
        }
        Ok(OutMessage {
            route,
            topic,
            payload: b,
            qos,
            retain,
            props,
            accepted_at_ms,
        })
    }

    /// The PUBLISH for the engine.
    pub fn to_publish(&self) -> Publish {
        Publish {
            topic: Arc::from(self.topic.as_str()),
            payload: self.payload.clone(),
            qos: self.qos,
            retain: self.retain,
            dup: false,
            pid: None,
            props: self.props.clone(),
        }
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    // Topics are validated to ≤ 65,535 bytes; property strings are cut at that length, on
    // a character boundary: a cut inside a UTF-8 character would make a record that never
    // decodes again.
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = &s.as_bytes()[..end];
    b.put_u16_le(bytes.len() as u16);
    b.put_slice(bytes);
}

fn need(b: &Bytes, n: usize) -> Result<(), DecodeError> {
    if b.remaining() < n {
        Err(DecodeError("truncated"))
    } else {
        Ok(())
    }
}

fn get_str(b: &mut Bytes) -> Result<String, DecodeError> {
    need(b, 2)?;
    let len = usize::from(b.get_u16_le());
    need(b, len)?;
    let s = b.split_to(len);
    String::from_utf8(s.to_vec()).map_err(|_| DecodeError("string is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn qos() -> impl Strategy<Value = QoS> {
        prop_oneof![
            Just(QoS::AtMostOnce),
            Just(QoS::AtLeastOnce),
            Just(QoS::ExactlyOnce)
        ]
    }

    proptest! {
        #[test]
        fn encode_decode_roundtrips(
            route in any::<u16>(), topic in "[a-zA-Z0-9/ _-]{1,60}", payload in proptest::collection::vec(any::<u8>(), 0..500),
            qos in qos(), retain in any::<bool>(), ct in proptest::option::of("[a-z/]{1,20}"),
            exp in proptest::option::of(0u32..u32::MAX), user in proptest::collection::vec(("[a-z]{1,8}", ".{0,8}"), 0..4),
            at in any::<u64>(),
        ) {
            let m = OutMessage { route, topic, payload: Bytes::from(payload), qos, retain,
                props: PublishProps { content_type: ct, message_expiry: exp, user, ..PublishProps::default() }, accepted_at_ms: at };
            prop_assert_eq!(OutMessage::decode(m.encode()).unwrap(), m);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = OutMessage::decode(Bytes::from(bytes));
        }
    }

    #[test]
    fn a_property_cut_at_the_length_limit_keeps_whole_characters() {
        // Regression: the cut at 65,535 bytes split a UTF-8 character and the record could
        // not be decoded (it was dead-lettered as undecodable).
        let long = "é".repeat(40_000); // 80,000 bytes, 2 per character
        let m = OutMessage {
            route: 1,
            topic: "a".into(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: false,
            props: PublishProps {
                user: vec![("k".into(), long)],
                ..PublishProps::default()
            },
            accepted_at_ms: 0,
        };
        let back = OutMessage::decode(m.encode()).expect("decodes");
        assert_eq!(back.props.user[0].1.len(), 65_534);
        assert!(back.props.user[0].1.chars().all(|c| c == 'é'));
    }

    #[test]
    fn truncated_record_is_an_error() {
        let m = OutMessage {
            route: 1,
            topic: "a/b".into(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: false,
            props: PublishProps::default(),
            accepted_at_ms: 0,
        };
        let enc = m.encode();
        assert!(OutMessage::decode(enc.slice(..14)).is_err());
    }
}
