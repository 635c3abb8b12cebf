//! Wire codec: version-neutral packets over `mqtt-proto`'s v3 (3.1, 3.1.1) and v5 codecs.
//!
//! Framing is ours: [`decode`] reads the fixed header first and refuses a packet larger than
//! the configured maximum *before* buffering or allocating it, so a hostile length prefix
//! costs nothing. Only complete frames are handed to `mqtt-proto`.
//!
//! Hot path: a subscriber's PUBLISH without properties (MQTT 3.x, or MQTT 5 with a zero
//! property length: what Mosquitto sends a plain subscription) and the success
//! acknowledgements it answers with are read and written here directly ([`publish_plain`],
//! [`encode_ack_plain`]): `mqtt-proto` decodes through an async reader and allocates the
//! topic three times per message, which made decoding the largest single cost of a
//! connector draining a backlog. Everything else, and every frame the fast path has any
//! doubt about, goes through `mqtt-proto`, which then judges it; a property test holds
//! the two to the same result.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mqtt_proto::{v3, v5};

/// Protocol level spoken on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1 (`MQIsdp`, level 3).
    V31,
    /// MQTT 3.1.1 (level 4).
    V311,
    /// MQTT 5.0 (level 5).
    V5,
}

impl Protocol {
    /// The name users know it by.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V31 => "3.1",
            Protocol::V311 => "3.1.1",
            Protocol::V5 => "5",
        }
    }
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// At most once.
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// From the numeric level; `None` for anything but 0, 1, 2.
    pub fn from_u8(n: u8) -> Option<QoS> {
        match n {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    fn to_proto(self) -> mqtt_proto::QoS {
        match self {
            QoS::AtMostOnce => mqtt_proto::QoS::Level0,
            QoS::AtLeastOnce => mqtt_proto::QoS::Level1,
            QoS::ExactlyOnce => mqtt_proto::QoS::Level2,
        }
    }

    fn from_proto(q: mqtt_proto::QoS) -> QoS {
        match q {
            mqtt_proto::QoS::Level0 => QoS::AtMostOnce,
            mqtt_proto::QoS::Level1 => QoS::AtLeastOnce,
            mqtt_proto::QoS::Level2 => QoS::ExactlyOnce,
        }
    }
}

/// MQTT 5 publish properties we carry (ignored on 3.x connections).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProps {
    /// Content type.
    pub content_type: Option<String>,
    /// Message expiry interval, seconds.
    pub message_expiry: Option<u32>,
    /// Payload format indicator: `Some(true)` means UTF-8.
    pub payload_utf8: Option<bool>,
    /// User properties, in order.
    pub user: Vec<(String, String)>,
    /// Response topic.
    pub response_topic: Option<String>,
    /// Correlation data.
    pub correlation_data: Option<Bytes>,
    /// The Subscription Identifier a broker attached (received only: never encoded, a
    /// client must not send it).
    pub subscription_id: Option<u32>,
    /// Topic Alias. Sent as given (the connection sends an empty topic once the alias
    /// stands for it on that connection, as libmosquitto does); received, the connection
    /// has put the topic it stands for in [`Publish::topic`].
    pub topic_alias: Option<u16>,
    /// The order the properties came in (received only).
    pub order: PropOrder,
}

/// The order a received PUBLISH carried its properties in, by identifier (user properties
/// once, where the first one was). Kept for tools that print properties as they came
/// (`mqlink sub -F %j`, as mosquitto_sub does); it never changes what is encoded, and two
/// orders always compare equal: in MQTT the order carries no meaning.
#[derive(Debug, Clone, Default)]
pub struct PropOrder(pub Vec<u8>);

impl PartialEq for PropOrder {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PropOrder {}

/// The property identifiers of an MQTT 5 PUBLISH frame in wire order; empty when the frame
/// is not one or cannot be walked (the decoder has already judged it).
fn publish_property_order(frame: &[u8]) -> Vec<u8> {
    fn varint(b: &[u8], at: &mut usize) -> Option<usize> {
        let mut n = 0usize;
        for shift in [0, 7, 14, 21] {
            let byte = *b.get(*at)?;
            *at += 1;
            n |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }
    fn u16_at(b: &[u8], at: usize) -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *b.get(at)?,
            *b.get(at + 1)?,
        ])))
    }
    let walk = || -> Option<Vec<u8>> {
        let head = *frame.first()?;
        if head >> 4 != 3 {
            return None;
        }
        let mut at = 1;
        varint(frame, &mut at)?;
        at += 2 + u16_at(frame, at)?;
        if (head >> 1) & 3 > 0 {
            at += 2;
        }
        let len = varint(frame, &mut at)?;
        let end = at.checked_add(len)?;
        let mut order = Vec::new();
        while at < end {
            let id = *frame.get(at)?;
            at += 1;
            match id {
                0x01 => at += 1,
                0x02 => at += 4,
                0x23 => at += 2,
                0x03 | 0x08 | 0x09 => at += 2 + u16_at(frame, at)?,
                0x0B => {
                    varint(frame, &mut at)?;
                }
                0x26 => {
                    at += 2 + u16_at(frame, at)?;
                    at += 2 + u16_at(frame, at)?;
                }
                _ => return None,
            }
            if !order.contains(&id) {
                order.push(id);
            }
        }
        Some(order)
    };
    walk().unwrap_or_default()
}

impl PublishProps {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self == &PublishProps::default()
    }
}

/// MQTT 5 subscription options and SUBSCRIBE properties beyond the QoS. The default is
/// what MQTT clients send unless asked (mosquitto_sub, paho): Retain-As-Published off, so
/// a live message arrives with retain 0 and a stored one with 1, and no properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Retain-As-Published: live messages keep the publisher's retain flag.
    pub retain_as_published: bool,
    /// Retain Handling: 0 send retained messages at subscribe, 1 only for a new
    /// subscription, 2 never (mosquitto_sub `-R`). Values above 2 are not encodable.
    pub retain_handling: u8,
    /// User properties sent with every UNSUBSCRIBE, in order.
    pub unsubscribe_user: Vec<(String, String)>,
    /// Subscription Identifier property (1..=268435455).
    pub subscription_id: Option<u32>,
    /// User properties, in order.
    pub user: Vec<(String, String)>,
}

/// A PUBLISH in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Topic name.
    pub topic: Arc<str>,
    /// Payload bytes.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// DUP flag.
    pub dup: bool,
    /// Packet id (QoS 1/2 only).
    pub pid: Option<u16>,
    /// v5 properties.
    pub props: PublishProps,
}

impl Publish {
    /// A message to publish: `payload` on `topic` at `qos`, not retained, without
    /// properties (the session assigns the packet id and the DUP flag).
    pub fn new(topic: impl Into<Arc<str>>, payload: impl Into<Bytes>, qos: QoS) -> Publish {
        Publish {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain: false,
            dup: false,
            pid: None,
            props: PublishProps::default(),
        }
    }
}

/// PUBACK / PUBREC / PUBREL / PUBCOMP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Packet id.
    pub pid: u16,
    /// v5 reason code (0 on 3.x).
    pub reason: u8,
    /// v5 reason string.
    pub reason_string: Option<String>,
}

impl Ack {
    /// A success ack for `pid`.
    pub fn ok(pid: u16) -> Ack {
        Ack {
            pid,
            reason: 0,
            reason_string: None,
        }
    }
}

/// The will message registered with CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain.
    pub retain: bool,
    /// v5 will properties: those of a PUBLISH (subscription identifier and order unused).
    pub props: PublishProps,
    /// v5 Will Delay Interval, seconds.
    pub delay: Option<u32>,
}

/// CONNECT.
#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    /// Client identifier.
    pub client_id: String,
    /// Keep alive, seconds.
    pub keep_alive: u16,
    /// Clean start (v5) / clean session (3.x).
    pub clean_start: bool,
    /// v5 session expiry interval (seconds).
    pub session_expiry: Option<u32>,
    /// v5 receive maximum we accept.
    pub receive_max: Option<u16>,
    /// v5 maximum packet size we accept.
    pub max_packet_size: Option<u32>,
    /// Will.
    pub will: Option<Will>,
    /// User name.
    pub username: Option<String>,
    /// Password (never printed).
    pub password: Option<Bytes>,
    /// v5 properties asked for by the user.
    pub extras: ConnectExtras,
}

/// MQTT 5 CONNECT properties mqlink itself never needs, sent when asked for (mqlink pub /
/// sub's `-D CONNECT ...`); 3.x sends none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectExtras {
    /// Request Problem Information.
    pub request_problem_info: Option<bool>,
    /// Request Response Information.
    pub request_response_info: Option<bool>,
    /// User properties, in order.
    pub user: Vec<(String, String)>,
    /// Topic Alias Maximum: how many topic aliases the broker may use towards us.
    pub topic_alias_maximum: Option<u16>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("client_id", &self.client_id)
            .field("keep_alive", &self.keep_alive)
            .field("clean_start", &self.clean_start)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// CONNACK, normalised: `code` is the 3.x return code or the v5 reason code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// Session present flag.
    pub session_present: bool,
    /// 0 is success; 3.x return codes 1-5; v5 reason codes ≥ 0x80 are failures.
    pub code: u8,
    /// v5 reason string.
    pub reason_string: Option<String>,
    /// v5 receive maximum of the broker.
    pub receive_max: Option<u16>,
    /// v5 maximum packet size of the broker.
    pub max_packet_size: Option<u32>,
    /// v5 assigned client identifier.
    pub assigned_client_id: Option<String>,
    /// v5 server keep alive.
    pub server_keep_alive: Option<u16>,
    /// v5 maximum QoS.
    pub max_qos: Option<QoS>,
    /// v5 retain available.
    pub retain_available: Option<bool>,
}

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// v5 reason code.
    pub reason: u8,
    /// v5 reason string.
    pub reason_string: Option<String>,
    /// v5 session expiry interval (seconds), changing the one given in CONNECT.
    pub session_expiry: Option<u32>,
    /// v5 server reference.
    pub server_reference: Option<String>,
    /// v5 user properties, in order.
    pub user: Vec<(String, String)>,
}

/// A control packet, independent of protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT.
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(Ack),
    /// PUBREC.
    PubRec(Ack),
    /// PUBREL.
    PubRel(Ack),
    /// PUBCOMP.
    PubComp(Ack),
    /// SUBSCRIBE.
    Subscribe {
        /// Packet id.
        pid: u16,
        /// Filters with requested maximum QoS.
        filters: Vec<(String, QoS)>,
        /// MQTT 5 options and properties, the same for every filter (3.x sends none).
        options: SubscribeOptions,
    },
    /// SUBACK: one code per filter (granted QoS 0-2, or ≥ 0x80 failure).
    SubAck {
        /// Packet id.
        pid: u16,
        /// Codes.
        codes: Vec<u8>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet id.
        pid: u16,
        /// Filters.
        filters: Vec<String>,
        /// v5 user properties, in order.
        user: Vec<(String, String)>,
    },
    /// UNSUBACK.
    UnsubAck {
        /// Packet id.
        pid: u16,
    },
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (v5), not used by mqlink; decoded so it can be reported.
    Auth,
}

impl Packet {
    /// Short packet name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe { .. } => "SUBSCRIBE",
            Packet::SubAck { .. } => "SUBACK",
            Packet::Unsubscribe { .. } => "UNSUBSCRIBE",
            Packet::UnsubAck { .. } => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth => "AUTH",
        }
    }
}

/// Why bytes could not be turned into a packet or back.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The fixed header announces more than we accept.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    TooLarge {
        /// Announced total size.
        size: usize,
        /// Our limit.
        max: usize,
    },
    /// The remaining-length field is not a valid variable byte integer.
    #[error("malformed remaining length in fixed header")]
    BadLength,
    /// `mqtt-proto` refused the bytes.
    #[error("malformed {protocol} packet: {reason}")]
    Malformed {
        /// Protocol name.
        protocol: &'static str,
        /// Decoder message.
        reason: String,
    },
    /// A packet that cannot be encoded (bad topic, bad packet id).
    #[error("cannot encode {packet}: {reason}")]
    Encode {
        /// Packet name.
        packet: &'static str,
        /// Why.
        reason: String,
    },
}

/// Length of the complete frame at the start of `buf`, if it is all there.
///
/// # Errors
/// [`CodecError::TooLarge`] as soon as the header is readable and announces more than
/// `max`, [`CodecError::BadLength`] for an invalid variable byte integer.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let mut remaining: usize = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let total = 1 + (i + 1) + remaining;
            if total > max {
                return Err(CodecError::TooLarge { size: total, max });
            }
            return Ok((buf.len() >= total).then_some(total));
        }
    }
    Err(CodecError::BadLength)
}

/// Take one packet off the front of `buf` when a whole one is there.
///
/// # Errors
/// Oversized or malformed input; the connection should be dropped.
pub fn decode(
    buf: &mut BytesMut,
    protocol: Protocol,
    max: usize,
) -> Result<Option<Packet>, CodecError> {
    let Some(len) = frame_len(buf, max)? else {
        return Ok(None);
    };
    let frame = buf.split_to(len);
    if let Some(p) = publish_plain(&frame, protocol) {
        return Ok(Some(Packet::Publish(p)));
    }
    decode_proto(&frame, protocol).map(Some)
}

/// One whole frame through `mqtt-proto`.
fn decode_proto(frame: &[u8], protocol: Protocol) -> Result<Packet, CodecError> {
    let malformed = |reason: String| CodecError::Malformed {
        protocol: protocol.name(),
        reason,
    };
    let packet = match protocol {
        Protocol::V5 => match v5::Packet::decode(frame) {
            Ok(Some(p)) => {
                let mut packet = from_v5(p);
                if let Packet::Publish(publish) = &mut packet {
                    publish.props.order = PropOrder(publish_property_order(frame));
                }
                packet
            }
            Ok(None) => return Err(malformed("truncated packet".into())),
            Err(e) => return Err(malformed(e.to_string())),
        },
        Protocol::V31 | Protocol::V311 => match v3::Packet::decode(frame) {
            Ok(Some(p)) => from_v3(p),
            Ok(None) => return Err(malformed("truncated packet".into())),
            Err(e) => return Err(malformed(e.to_string())),
        },
    };
    Ok(packet)
}

/// A PUBLISH without properties, read straight from its frame; `None` for any other frame
/// and for anything `mqtt-proto` might judge differently (a bad QoS, packet id 0, a topic
/// it refuses, a truncated frame, properties), which then goes through `mqtt-proto`.
fn publish_plain(frame: &[u8], protocol: Protocol) -> Option<Publish> {
    let head = *frame.first()?;
    if head >> 4 != 3 {
        return None;
    }
    let qos = match (head >> 1) & 3 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => return None,
    };
    // The remaining length was read by `frame_len`: skip it.
    let mut at = 1;
    while *frame.get(at)? & 0x80 != 0 {
        at += 1;
    }
    at += 1;
    let topic_len = usize::from(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    at += 2;
    let topic = std::str::from_utf8(frame.get(at..at + topic_len)?).ok()?;
    if mqtt_proto::TopicName::is_invalid(topic) {
        return None;
    }
    at += topic_len;
    let pid = if qos == QoS::AtMostOnce {
        None
    } else {
        let pid = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
        at += 2;
        Some(pid).filter(|&p| p != 0)?;
        Some(pid)
    };
    if protocol == Protocol::V5 {
        // A property length of zero, in its one-byte form.
        if *frame.get(at)? != 0 {
            return None;
        }
        at += 1;
    }
    Some(Publish {
        topic: Arc::from(topic),
        // A copy, not a slice of the frame: a slice would keep the whole read buffer it
        // came from alive for as long as the payload lives (in a batch, a memo, the
        // dashboard), which the backlog's byte bound does not count.
        payload: Bytes::copy_from_slice(frame.get(at..)?),
        qos,
        retain: head & 1 == 1,
        dup: head & 0b1000 != 0,
        pid,
        props: PublishProps::default(),
    })
}

/// Append a success PUBACK / PUBREC / PUBREL / PUBCOMP without reason string in the bytes
/// `mqtt-proto` writes for it (type, length 2, packet id: MQTT 5 lets a success code with
/// no properties be left out); `false` for anything else, which goes through `mqtt-proto`.
fn encode_ack_plain(packet: &Packet, out: &mut BytesMut) -> bool {
    let (head, a) = match packet {
        Packet::PubAck(a) => (0x40, a),
        Packet::PubRec(a) => (0x50, a),
        Packet::PubRel(a) => (0x62, a),
        Packet::PubComp(a) => (0x70, a),
        _ => return false,
    };
    if a.pid == 0 || a.reason != 0 || a.reason_string.is_some() {
        return false;
    }
    let [hi, lo] = a.pid.to_be_bytes();
    out.extend_from_slice(&[head, 2, hi, lo]);
    true
}

/// Append the encoding of `packet` to `out`.
///
/// # Errors
/// A packet the protocol cannot express (invalid topic, zero packet id).
pub fn encode(packet: &Packet, protocol: Protocol, out: &mut BytesMut) -> Result<(), CodecError> {
    if encode_ack_plain(packet, out) {
        return Ok(());
    }
    encode_proto(packet, protocol, out)
}

/// `packet` through `mqtt-proto`.
fn encode_proto(packet: &Packet, protocol: Protocol, out: &mut BytesMut) -> Result<(), CodecError> {
    let name = packet.name();
    let err = |reason: String| CodecError::Encode {
        packet: name,
        reason,
    };
    match protocol {
        Protocol::V5 => {
            let p = to_v5(packet).map_err(err)?;
            let bytes = p.encode().map_err(|e| err(e.to_string()))?;
            out.extend_from_slice(bytes.as_ref());
        }
        Protocol::V31 | Protocol::V311 => {
            let p = to_v3(packet, protocol).map_err(err)?;
            let bytes = p.encode().map_err(|e| err(e.to_string()))?;
            out.extend_from_slice(bytes.as_ref());
        }
    }
    Ok(())
}

fn pid(n: u16) -> Result<mqtt_proto::Pid, String> {
    mqtt_proto::Pid::try_from(n).map_err(|_| "packet id 0 is not allowed".to_string())
}

fn qos_pid(qos: QoS, p: Option<u16>) -> Result<mqtt_proto::QosPid, String> {
    Ok(match qos {
        QoS::AtMostOnce => mqtt_proto::QosPid::Level0,
        QoS::AtLeastOnce => mqtt_proto::QosPid::Level1(pid(p.ok_or("QoS 1 without packet id")?)?),
        QoS::ExactlyOnce => mqtt_proto::QosPid::Level2(pid(p.ok_or("QoS 2 without packet id")?)?),
    })
}

fn split_qos_pid(q: mqtt_proto::QosPid) -> (QoS, Option<u16>) {
    match q {
        mqtt_proto::QosPid::Level0 => (QoS::AtMostOnce, None),
        mqtt_proto::QosPid::Level1(p) => (QoS::AtLeastOnce, Some(p.value())),
        mqtt_proto::QosPid::Level2(p) => (QoS::ExactlyOnce, Some(p.value())),
    }
}

/// Whether `t` can be sent as a SUBSCRIBE topic filter.
///
/// # Errors
/// Why not, in words that name the filter.
pub fn check_topic_filter(t: &str) -> Result<(), String> {
    topic_filter(t).map(drop)
}

fn topic_name(t: &str) -> Result<mqtt_proto::TopicName, String> {
    mqtt_proto::TopicName::try_from(t).map_err(|e| format!("invalid topic '{t}': {e}"))
}

fn topic_filter(t: &str) -> Result<mqtt_proto::TopicFilter, String> {
    mqtt_proto::TopicFilter::try_from(t).map_err(|e| format!("invalid topic filter '{t}': {e}"))
}

fn user_properties(pairs: &[(String, String)]) -> Vec<v5::UserProperty> {
    pairs
        .iter()
        .map(|(k, v)| v5::UserProperty {
            name: arc(k),
            value: arc(v),
        })
        .collect()
}

fn pairs(props: &[v5::UserProperty]) -> Vec<(String, String)> {
    props
        .iter()
        .map(|u| (u.name.to_string(), u.value.to_string()))
        .collect()
}

fn arc(s: &str) -> Arc<str> {
    Arc::from(s)
}

fn opt_string(s: &Option<Arc<str>>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

fn to_v3(packet: &Packet, protocol: Protocol) -> Result<v3::Packet, String> {
    Ok(match packet {
        Packet::Connect(c) => {
            let mut connect = v3::Connect::new(arc(&c.client_id), c.keep_alive);
            connect.protocol = if protocol == Protocol::V31 {
                mqtt_proto::Protocol::V310
            } else {
                mqtt_proto::Protocol::V311
            };
            connect.clean_session = c.clean_start;
            connect.username = c.username.as_deref().map(arc);
            connect.password = c.password.clone();
            connect.last_will = match &c.will {
                Some(w) => {
                    let mut lw = v3::LastWill::new(
                        w.qos.to_proto(),
                        topic_name(&w.topic)?,
                        w.payload.clone(),
                    );
                    lw.retain = w.retain;
                    Some(lw)
                }
                None => None,
            };
            v3::Packet::Connect(connect)
        }
        Packet::Publish(p) => v3::Packet::Publish(v3::Publish {
            dup: p.dup,
            retain: p.retain,
            qos_pid: qos_pid(p.qos, p.pid)?,
            topic_name: topic_name(&p.topic)?,
            payload: p.payload.clone(),
        }),
        Packet::PubAck(a) => v3::Packet::Puback(pid(a.pid)?),
        Packet::PubRec(a) => v3::Packet::Pubrec(pid(a.pid)?),
        Packet::PubRel(a) => v3::Packet::Pubrel(pid(a.pid)?),
        Packet::PubComp(a) => v3::Packet::Pubcomp(pid(a.pid)?),
        Packet::Subscribe {
            pid: p, filters, ..
        } => v3::Packet::Subscribe(v3::Subscribe::new(
            pid(*p)?,
            filters
                .iter()
                .map(|(f, q)| Ok((topic_filter(f)?, q.to_proto())))
                .collect::<Result<_, String>>()?,
        )),
        Packet::Unsubscribe {
            pid: p, filters, ..
        } => v3::Packet::Unsubscribe(v3::Unsubscribe::new(
            pid(*p)?,
            filters
                .iter()
                .map(|f| topic_filter(f))
                .collect::<Result<_, _>>()?,
        )),
        Packet::PingReq => v3::Packet::Pingreq,
        Packet::PingResp => v3::Packet::Pingresp,
        Packet::Disconnect(_) => v3::Packet::Disconnect,
        Packet::ConnAck(c) => v3::Packet::Connack(v3::Connack::new(
            c.session_present,
            v3::ConnectReturnCode::from_u8(c.code).map_err(|e| e.to_string())?,
        )),
        Packet::SubAck { pid: p, codes } => v3::Packet::Suback(v3::Suback::new(
            pid(*p)?,
            codes
                .iter()
                .map(|c| v3::SubscribeReturnCode::from_u8(*c).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?,
        )),
        Packet::UnsubAck { pid: p } => v3::Packet::Unsuback(pid(*p)?),
        Packet::Auth => return Err("AUTH does not exist in MQTT 3.x".into()),
    })
}

fn from_v3(p: v3::Packet) -> Packet {
    match p {
        v3::Packet::Connect(c) => Packet::Connect(Box::new(Connect {
            client_id: c.client_id.to_string(),
            keep_alive: c.keep_alive,
            clean_start: c.clean_session,
            session_expiry: None,
            receive_max: None,
            max_packet_size: None,
            will: c.last_will.map(|w| Will {
                topic: w.topic_name.to_string(),
                payload: w.message,
                qos: QoS::from_proto(w.qos),
                retain: w.retain,
                props: PublishProps::default(),
                delay: None,
            }),
            username: c.username.map(|u| u.to_string()),
            password: c.password,
            extras: ConnectExtras::default(),
        })),
        v3::Packet::Connack(c) => Packet::ConnAck(ConnAck {
            session_present: c.session_present,
            code: c.code as u8,
            ..ConnAck::default()
        }),
        v3::Packet::Publish(p) => {
            let (qos, pid) = split_qos_pid(p.qos_pid);
            Packet::Publish(Publish {
                topic: arc(&p.topic_name),
                payload: p.payload,
                qos,
                retain: p.retain,
                dup: p.dup,
                pid,
                props: PublishProps::default(),
            })
        }
        v3::Packet::Puback(p) => Packet::PubAck(Ack::ok(p.value())),
        v3::Packet::Pubrec(p) => Packet::PubRec(Ack::ok(p.value())),
        v3::Packet::Pubrel(p) => Packet::PubRel(Ack::ok(p.value())),
        v3::Packet::Pubcomp(p) => Packet::PubComp(Ack::ok(p.value())),
        v3::Packet::Subscribe(s) => Packet::Subscribe {
            pid: s.pid.value(),
            filters: s
                .topics
                .into_iter()
                .map(|(f, q)| (f.to_string(), QoS::from_proto(q)))
                .collect(),
            options: SubscribeOptions::default(),
        },
        v3::Packet::Suback(s) => Packet::SubAck {
            pid: s.pid.value(),
            codes: s
                .topics
                .into_iter()
                .map(|c| match c {
                    v3::SubscribeReturnCode::MaxLevel0 => 0,
                    v3::SubscribeReturnCode::MaxLevel1 => 1,
                    v3::SubscribeReturnCode::MaxLevel2 => 2,
                    v3::SubscribeReturnCode::Failure => 0x80,
                })
                .collect(),
        },
        v3::Packet::Unsubscribe(u) => Packet::Unsubscribe {
            pid: u.pid.value(),
            filters: u.topics.into_iter().map(|f| f.to_string()).collect(),
            user: Vec::new(),
        },
        v3::Packet::Unsuback(p) => Packet::UnsubAck { pid: p.value() },
        v3::Packet::Pingreq => Packet::PingReq,
        v3::Packet::Pingresp => Packet::PingResp,
        v3::Packet::Disconnect => Packet::Disconnect(Disconnect::default()),
    }
}

fn to_v5(packet: &Packet) -> Result<v5::Packet, String> {
    Ok(match packet {
        Packet::Connect(c) => {
            let mut connect = v5::Connect::new(arc(&c.client_id), c.keep_alive);
            connect.clean_start = c.clean_start;
            connect.username = c.username.as_deref().map(arc);
            connect.password = c.password.clone();
            connect.properties.session_expiry_interval = c.session_expiry;
            connect.properties.receive_max = c.receive_max;
            connect.properties.request_problem_info = c.extras.request_problem_info;
            connect.properties.request_response_info = c.extras.request_response_info;
            connect.properties.topic_alias_max = c.extras.topic_alias_maximum;
            connect.properties.user_properties = c
                .extras
                .user
                .iter()
                .map(|(k, v)| v5::UserProperty {
                    name: arc(k),
                    value: arc(v),
                })
                .collect();
            connect.properties.max_packet_size = c.max_packet_size;
            connect.last_will = match &c.will {
                Some(w) => {
                    let mut lw = v5::LastWill::new(
                        w.qos.to_proto(),
                        topic_name(&w.topic)?,
                        w.payload.clone(),
                    );
                    lw.retain = w.retain;
                    let wp = &mut lw.properties;
                    wp.delay_interval = w.delay;
                    wp.payload_is_utf8 = w.props.payload_utf8;
                    wp.message_expiry_interval = w.props.message_expiry;
                    wp.content_type = w.props.content_type.as_deref().map(arc);
                    wp.response_topic = match &w.props.response_topic {
                        Some(t) => Some(topic_name(t)?),
                        None => None,
                    };
                    wp.correlation_data = w.props.correlation_data.clone();
                    wp.user_properties = w
                        .props
                        .user
                        .iter()
                        .map(|(k, v)| v5::UserProperty {
                            name: arc(k),
                            value: arc(v),
                        })
                        .collect();
                    Some(lw)
                }
                None => None,
            };
            v5::Packet::Connect(connect)
        }
        Packet::Publish(p) => {
            let mut publish = v5::Publish::new(
                qos_pid(p.qos, p.pid)?,
                topic_name(&p.topic)?,
                p.payload.clone(),
            );
            publish.dup = p.dup;
            publish.retain = p.retain;
            let props = &mut publish.properties;
            props.content_type = p.props.content_type.as_deref().map(arc);
            props.message_expiry_interval = p.props.message_expiry;
            props.payload_is_utf8 = p.props.payload_utf8;
            props.topic_alias = p.props.topic_alias;
            props.response_topic = match &p.props.response_topic {
                Some(t) => Some(topic_name(t)?),
                None => None,
            };
            props.correlation_data = p.props.correlation_data.clone();
            props.user_properties = p
                .props
                .user
                .iter()
                .map(|(k, v)| v5::UserProperty {
                    name: arc(k),
                    value: arc(v),
                })
                .collect();
            v5::Packet::Publish(publish)
        }
        Packet::PubAck(a) => v5::Packet::Puback(v5::Puback::new(
            pid(a.pid)?,
            v5::PubackReasonCode::from_u8(a.reason).ok_or("bad PUBACK reason")?,
        )),
        Packet::PubRec(a) => v5::Packet::Pubrec(v5::Pubrec::new(
            pid(a.pid)?,
            v5::PubrecReasonCode::from_u8(a.reason).ok_or("bad PUBREC reason")?,
        )),
        Packet::PubRel(a) => v5::Packet::Pubrel(v5::Pubrel::new(
            pid(a.pid)?,
            v5::PubrelReasonCode::from_u8(a.reason).ok_or("bad PUBREL reason")?,
        )),
        Packet::PubComp(a) => v5::Packet::Pubcomp(v5::Pubcomp::new(
            pid(a.pid)?,
            v5::PubcompReasonCode::from_u8(a.reason).ok_or("bad PUBCOMP reason")?,
        )),
        Packet::Subscribe {
            pid: p,
            filters,
            options,
        } => {
            let mut subscribe = v5::Subscribe::new(
                pid(*p)?,
                filters
                    .iter()
                    .map(|(f, q)| {
                        let mut o = v5::SubscriptionOptions::new(q.to_proto());
                        o.retain_as_published = options.retain_as_published;
                        o.retain_handling = v5::RetainHandling::from_u8(options.retain_handling)
                            .ok_or("bad retain handling")?;
                        Ok((topic_filter(f)?, o))
                    })
                    .collect::<Result<_, String>>()?,
            );
            subscribe.properties.subscription_id = match options.subscription_id {
                Some(id) => Some(
                    v5::VarByteInt::try_from(id)
                        .map_err(|_| format!("subscription identifier {id} is out of range"))?,
                ),
                None => None,
            };
            subscribe.properties.user_properties = options
                .user
                .iter()
                .map(|(k, v)| v5::UserProperty {
                    name: arc(k),
                    value: arc(v),
                })
                .collect();
            v5::Packet::Subscribe(subscribe)
        }
        Packet::Unsubscribe {
            pid: p,
            filters,
            user,
        } => {
            let mut unsubscribe = v5::Unsubscribe::new(
                pid(*p)?,
                filters
                    .iter()
                    .map(|f| topic_filter(f))
                    .collect::<Result<_, _>>()?,
            );
            unsubscribe.properties.user_properties = user_properties(user);
            v5::Packet::Unsubscribe(unsubscribe)
        }
        Packet::PingReq => v5::Packet::Pingreq,
        Packet::PingResp => v5::Packet::Pingresp,
        Packet::Disconnect(d) => {
            let mut disconnect = v5::Disconnect::new(
                v5::DisconnectReasonCode::from_u8(d.reason).ok_or("bad DISCONNECT reason")?,
            );
            let props = &mut disconnect.properties;
            props.session_expiry_interval = d.session_expiry;
            props.reason_string = d.reason_string.as_deref().map(arc);
            props.server_reference = d.server_reference.as_deref().map(arc);
            props.user_properties = user_properties(&d.user);
            v5::Packet::Disconnect(disconnect)
        }
        Packet::ConnAck(c) => v5::Packet::Connack(v5::Connack::new(
            c.session_present,
            v5::ConnectReasonCode::from_u8(c.code).ok_or("bad CONNACK reason")?,
        )),
        Packet::SubAck { pid: p, codes } => v5::Packet::Suback(v5::Suback::new(
            pid(*p)?,
            codes
                .iter()
                .map(|c| v5::SubscribeReasonCode::from_u8(*c).ok_or("bad SUBACK reason"))
                .collect::<Result<_, _>>()?,
        )),
        Packet::UnsubAck { pid: p } => {
            v5::Packet::Unsuback(v5::Unsuback::new(pid(*p)?, Vec::new()))
        }
        Packet::Auth => v5::Packet::Auth(v5::Auth::new_success()),
    })
}

fn from_v5(p: v5::Packet) -> Packet {
    match p {
        v5::Packet::Connect(c) => Packet::Connect(Box::new(Connect {
            client_id: c.client_id.to_string(),
            keep_alive: c.keep_alive,
            clean_start: c.clean_start,
            session_expiry: c.properties.session_expiry_interval,
            receive_max: c.properties.receive_max,
            max_packet_size: c.properties.max_packet_size,
            will: c.last_will.map(|w| Will {
                topic: w.topic_name.to_string(),
                qos: QoS::from_proto(w.qos),
                retain: w.retain,
                props: PublishProps {
                    content_type: opt_string(&w.properties.content_type),
                    message_expiry: w.properties.message_expiry_interval,
                    payload_utf8: w.properties.payload_is_utf8,
                    user: w
                        .properties
                        .user_properties
                        .iter()
                        .map(|u| (u.name.to_string(), u.value.to_string()))
                        .collect(),
                    response_topic: w.properties.response_topic.map(|t| t.to_string()),
                    correlation_data: w.properties.correlation_data,
                    ..PublishProps::default()
                },
                delay: w.properties.delay_interval,
                payload: w.payload,
            }),
            username: c.username.map(|u| u.to_string()),
            password: c.password,
            extras: ConnectExtras {
                request_problem_info: c.properties.request_problem_info,
                request_response_info: c.properties.request_response_info,
                topic_alias_maximum: c.properties.topic_alias_max,
                user: c
                    .properties
                    .user_properties
                    .iter()
                    .map(|u| (u.name.to_string(), u.value.to_string()))
                    .collect(),
            },
        })),
        v5::Packet::Connack(c) => Packet::ConnAck(ConnAck {
            session_present: c.session_present,
            code: c.reason_code as u8,
            reason_string: opt_string(&c.properties.reason_string),
            receive_max: c.properties.receive_max,
            max_packet_size: c.properties.max_packet_size,
            assigned_client_id: opt_string(&c.properties.assigned_client_id),
            server_keep_alive: c.properties.server_keep_alive,
            max_qos: c.properties.max_qos.map(QoS::from_proto),
            retain_available: c.properties.retain_available,
        }),
        v5::Packet::Publish(p) => {
            let (qos, pid) = split_qos_pid(p.qos_pid);
            let props = p.properties;
            Packet::Publish(Publish {
                topic: arc(&p.topic_name),
                payload: p.payload,
                qos,
                retain: p.retain,
                dup: p.dup,
                pid,
                props: PublishProps {
                    content_type: opt_string(&props.content_type),
                    message_expiry: props.message_expiry_interval,
                    payload_utf8: props.payload_is_utf8,
                    user: props
                        .user_properties
                        .iter()
                        .map(|u| (u.name.to_string(), u.value.to_string()))
                        .collect(),
                    response_topic: props.response_topic.map(|t| t.to_string()),
                    correlation_data: props.correlation_data,
                    subscription_id: props.subscription_id.map(|i| i.value()),
                    topic_alias: props.topic_alias,
                    order: PropOrder::default(),
                },
            })
        }
        v5::Packet::Puback(a) => Packet::PubAck(Ack {
            pid: a.pid.value(),
            reason: a.reason_code as u8,
            reason_string: opt_string(&a.properties.reason_string),
        }),
        v5::Packet::Pubrec(a) => Packet::PubRec(Ack {
            pid: a.pid.value(),
            reason: a.reason_code as u8,
            reason_string: opt_string(&a.properties.reason_string),
        }),
        v5::Packet::Pubrel(a) => Packet::PubRel(Ack {
            pid: a.pid.value(),
            reason: a.reason_code as u8,
            reason_string: opt_string(&a.properties.reason_string),
        }),
        v5::Packet::Pubcomp(a) => Packet::PubComp(Ack {
            pid: a.pid.value(),
            reason: a.reason_code as u8,
            reason_string: opt_string(&a.properties.reason_string),
        }),
        v5::Packet::Subscribe(s) => Packet::Subscribe {
            pid: s.pid.value(),
            options: SubscribeOptions {
                retain_as_published: s.topics.first().is_some_and(|(_, o)| o.retain_as_published),
                retain_handling: s.topics.first().map_or(0, |(_, o)| o.retain_handling as u8),
                subscription_id: s.properties.subscription_id.map(|i| i.value()),
                user: s
                    .properties
                    .user_properties
                    .iter()
                    .map(|u| (u.name.to_string(), u.value.to_string()))
                    .collect(),
                unsubscribe_user: Vec::new(),
            },
            filters: s
                .topics
                .into_iter()
                .map(|(f, o)| (f.to_string(), QoS::from_proto(o.max_qos)))
                .collect(),
        },
        v5::Packet::Suback(s) => Packet::SubAck {
            pid: s.pid.value(),
            codes: s.topics.into_iter().map(|c| c as u8).collect(),
        },
        v5::Packet::Unsubscribe(u) => Packet::Unsubscribe {
            pid: u.pid.value(),
            filters: u.topics.into_iter().map(|f| f.to_string()).collect(),
            user: pairs(&u.properties.user_properties),
        },
        v5::Packet::Unsuback(u) => Packet::UnsubAck { pid: u.pid.value() },
        v5::Packet::Pingreq => Packet::PingReq,
        v5::Packet::Pingresp => Packet::PingResp,
        v5::Packet::Disconnect(d) => Packet::Disconnect(Disconnect {
            reason: d.reason_code as u8,
            reason_string: opt_string(&d.properties.reason_string),
            session_expiry: d.properties.session_expiry_interval,
            server_reference: opt_string(&d.properties.server_reference),
            user: pairs(&d.properties.user_properties),
        }),
        v5::Packet::Auth(_) => Packet::Auth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(p: &Packet, proto: Protocol) -> Packet {
        let mut buf = BytesMut::new();
        encode(p, proto, &mut buf).unwrap();
        let got = decode(&mut buf, proto, 1 << 20).unwrap().unwrap();
        assert!(buf.is_empty());
        got
    }

    #[test]
    fn oversized_length_prefix_is_refused_before_buffering() {
        // A PUBLISH announcing 268,435,455 bytes (the maximum remaining length): only the
        // header is present, and it must be refused without waiting for the body.
        let header = [0x30, 0xff, 0xff, 0xff, 0x7f];
        let err = frame_len(&header, 16 << 20).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { size, .. } if size > 200_000_000));
    }

    #[test]
    fn five_byte_remaining_length_is_malformed() {
        let header = [0x30, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(matches!(
            frame_len(&header, usize::MAX),
            Err(CodecError::BadLength)
        ));
    }

    #[test]
    fn partial_frame_waits_for_more() {
        let mut buf = BytesMut::new();
        let p = Packet::PubAck(Ack::ok(7));
        encode(&p, Protocol::V311, &mut buf).unwrap();
        let mut half = BytesMut::from(&buf[..buf.len() - 1]);
        assert!(decode(&mut half, Protocol::V311, 1024).unwrap().is_none());
        assert_eq!(half.len(), buf.len() - 1, "nothing consumed");
    }

    #[test]
    fn v5_puback_keeps_reason_code_and_string() {
        let p = Packet::PubAck(Ack {
            pid: 9,
            reason: 0x87,
            reason_string: None,
        });
        assert_eq!(roundtrip(&p, Protocol::V5), p);
    }

    #[test]
    fn connect_v31_uses_mqisdp() {
        let c = Packet::Connect(Box::new(Connect {
            client_id: "c".into(),
            keep_alive: 30,
            clean_start: true,
            session_expiry: None,
            receive_max: None,
            max_packet_size: None,
            will: None,
            username: None,
            password: None,
            extras: ConnectExtras::default(),
        }));
        let mut buf = BytesMut::new();
        encode(&c, Protocol::V31, &mut buf).unwrap();
        assert_eq!(&buf[4..10], b"MQIsdp");
    }

    fn qos() -> impl Strategy<Value = QoS> {
        prop_oneof![
            Just(QoS::AtMostOnce),
            Just(QoS::AtLeastOnce),
            Just(QoS::ExactlyOnce)
        ]
    }

    fn publish() -> impl Strategy<Value = Publish> {
        (
            "[a-z0-9/ _-]{1,40}",
            proptest::collection::vec(any::<u8>(), 0..300),
            qos(),
            any::<bool>(),
            any::<bool>(),
            1u16..,
            proptest::option::of("[a-z/]{1,10}"),
            proptest::option::of(any::<u32>()),
            proptest::collection::vec(("[a-z]{1,5}", "[a-z0-9]{0,5}"), 0..3),
        )
            .prop_map(
                |(topic, payload, qos, retain, dup, pid, ct, exp, user)| Publish {
                    topic: Arc::from(topic.as_str()),
                    payload: Bytes::from(payload),
                    qos,
                    retain,
                    dup: dup && qos != QoS::AtMostOnce,
                    pid: (qos != QoS::AtMostOnce).then_some(pid),
                    props: PublishProps {
                        content_type: ct,
                        message_expiry: exp,
                        user,
                        ..PublishProps::default()
                    },
                },
            )
    }

    #[test]
    fn received_publish_properties_keep_their_wire_order() {
        let mut frame = BytesMut::from(
            &[
                0x30, 29, 0, 1, b't', 24, // header, topic, properties length
                0x26, 0, 1, b'k', 0, 1, b'v', // user property
                0x03, 0, 2, b'c', b't', // content type
                0x26, 0, 1, b'a', 0, 1, b'b', // user property
                0x02, 0, 0, 0, 5, // message expiry
                b'x',
            ][..],
        );
        let Some(Packet::Publish(p)) = decode(&mut frame, Protocol::V5, 1 << 20).unwrap() else {
            panic!("not a PUBLISH");
        };
        assert_eq!(p.props.order.0, vec![0x26, 0x03, 0x02]);
        assert_eq!(p.props.user.len(), 2);
        assert_eq!(p.props.message_expiry, Some(5));
    }

    proptest! {
        #[test]
        fn publish_roundtrips_v5(p in publish()) {
            let packet = Packet::Publish(p);
            prop_assert_eq!(roundtrip(&packet, Protocol::V5), packet);
        }

        #[test]
        fn publish_roundtrips_v311_without_properties(mut p in publish()) {
            p.props = PublishProps::default();
            let packet = Packet::Publish(p);
            prop_assert_eq!(roundtrip(&packet, Protocol::V311), packet);
        }

        #[test]
        fn acks_roundtrip(pid in 1u16.., kind in 0..4u8, proto in prop_oneof![Just(Protocol::V311), Just(Protocol::V5)]) {
            let a = Ack::ok(pid);
            let p = match kind { 0 => Packet::PubAck(a), 1 => Packet::PubRec(a), 2 => Packet::PubRel(a), _ => Packet::PubComp(a) };
            prop_assert_eq!(roundtrip(&p, proto), p);
        }

        #[test]
        fn plain_publish_decodes_as_mqtt_proto_does(mut p in publish(), plain in any::<bool>(), proto in prop_oneof![Just(Protocol::V31), Just(Protocol::V311), Just(Protocol::V5)]) {
            if plain || proto != Protocol::V5 {
                p.props = PublishProps::default();
            }
            let mut frame = BytesMut::new();
            encode(&Packet::Publish(p.clone()), proto, &mut frame).unwrap();
            let fast = publish_plain(&frame, proto);
            prop_assert_eq!(fast.is_some(), p.props == PublishProps::default(), "the fast path takes every PUBLISH without properties");
            if let Some(fast) = fast {
                prop_assert_eq!(&fast, &p);
                let Ok(Packet::Publish(slow)) = decode_proto(&frame, proto) else { panic!("mqtt-proto refused it") };
                prop_assert_eq!(&fast, &slow);
                prop_assert_eq!(fast.props.order.0, slow.props.order.0);
            }
        }

        #[test]
        fn plain_publish_accepts_nothing_mqtt_proto_refuses(body in proptest::collection::vec(any::<u8>(), 0..40), head in 0x30u8..0x40, proto in prop_oneof![Just(Protocol::V311), Just(Protocol::V5)]) {
            // Mostly well-framed PUBLISHes with arbitrary contents: a short topic length
            // first, so topics, packet ids and property lengths all get exercised.
            let mut frame = vec![head, body.len() as u8];
            frame.extend_from_slice(&body);
            if frame.len() > 3 {
                frame[2] = 0;
                frame[3] %= 8;
            }
            if let Some(fast) = publish_plain(&frame, proto) {
                let slow = decode_proto(&frame, proto);
                prop_assert!(matches!(&slow, Ok(Packet::Publish(s)) if *s == fast && s.props.order.0 == fast.props.order.0), "fast {fast:?}, mqtt-proto {slow:?}");
            }
        }

        #[test]
        fn plain_acks_are_the_bytes_mqtt_proto_writes(pid in 0u16.., kind in 0..4u8, reason in prop_oneof![Just(0u8), Just(0x10u8), Just(0x80u8)], proto in prop_oneof![Just(Protocol::V311), Just(Protocol::V5)]) {
            let a = Ack { pid, reason, reason_string: None };
            let p = match kind { 0 => Packet::PubAck(a), 1 => Packet::PubRec(a), 2 => Packet::PubRel(a), _ => Packet::PubComp(a) };
            let (mut fast, mut slow) = (BytesMut::new(), BytesMut::new());
            let f = encode(&p, proto, &mut fast).map_err(|e| e.to_string());
            let s = encode_proto(&p, proto, &mut slow).map_err(|e| e.to_string());
            prop_assert_eq!(f, s);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            for proto in [Protocol::V31, Protocol::V311, Protocol::V5] {
                let mut buf = BytesMut::from(&bytes[..]);
                // Drain until incomplete or error; must terminate and never panic.
                while let Ok(Some(_)) = decode(&mut buf, proto, 1024) {}
            }
        }

        #[test]
        fn subscribe_roundtrips(pid in 1u16.., filters in proptest::collection::vec(("[a-z]{1,8}(/([a-z]{1,4}|\\+)){0,3}(/#)?", qos()), 1..4), proto in prop_oneof![Just(Protocol::V311), Just(Protocol::V5)]) {
            let p = Packet::Subscribe { pid, filters, options: SubscribeOptions::default() };
            prop_assert_eq!(roundtrip(&p, proto), p);
        }
    }
}
