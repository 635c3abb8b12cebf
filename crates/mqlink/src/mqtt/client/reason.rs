//! Words for MQTT's numeric answers: CONNACK refusals per protocol ([`refusal`]) and MQTT 5
//! reason codes ([`reason_name`]), for errors, logs and `mqlink pub`/`sub` output.

use crate::mqtt::codec::Protocol;

/// Words for a CONNACK refusal code.
pub fn refusal(protocol: Protocol, code: u8) -> &'static str {
    match (protocol, code) {
        (Protocol::V31 | Protocol::V311, 1) => "unacceptable protocol version",
        (Protocol::V31 | Protocol::V311, 2) => "client identifier rejected",
        (Protocol::V31 | Protocol::V311, 3) => "server unavailable",
        (Protocol::V31 | Protocol::V311, 4) => "bad user name or password",
        (Protocol::V31 | Protocol::V311, 5) => "not authorized",
        (_, c) => reason_name(c),
    }
}

/// Words for an MQTT 5 reason code.
pub fn reason_name(code: u8) -> &'static str {
    match code {
        0x00 => "success",
        0x04 => "disconnect with will message",
        0x10 => "no matching subscribers",
        0x80 => "unspecified error",
        0x81 => "malformed packet",
        0x82 => "protocol error",
        0x83 => "implementation specific error",
        0x84 => "unsupported protocol version",
        0x85 => "client identifier not valid",
        0x86 => "bad user name or password",
        0x87 => "not authorized",
        0x88 => "server unavailable",
        0x89 => "server busy",
        0x8a => "banned",
        0x8b => "server shutting down",
        0x8c => "bad authentication method",
        0x8d => "keep alive timeout",
        0x8e => "session taken over",
        0x8f => "topic filter invalid",
        0x90 => "topic name invalid",
        0x93 => "receive maximum exceeded",
        0x94 => "topic alias invalid",
        0x95 => "packet too large",
        0x96 => "message rate too high",
        0x97 => "quota exceeded",
        0x98 => "administrative action",
        0x99 => "payload format invalid",
        0x9a => "retain not supported",
        0x9b => "QoS not supported",
        0x9c => "use another server",
        0x9d => "server moved",
        0x9e => "shared subscriptions not supported",
        0x9f => "connection rate exceeded",
        0xa0 => "maximum connect time",
        0xa1 => "subscription identifiers not supported",
        0xa2 => "wildcard subscriptions not supported",
        _ => "unknown reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_explained_per_protocol() {
        assert_eq!(refusal(Protocol::V311, 4), "bad user name or password");
        assert_eq!(refusal(Protocol::V5, 0x86), "bad user name or password");
        assert_eq!(refusal(Protocol::V5, 0x87), "not authorized");
        assert_eq!(refusal(Protocol::V311, 2), "client identifier rejected");
    }
}
