//! The bench payload: a small JSON object any tool can produce, padded to a size.
//!
//! `{"pub":P,"seq":N,"ts":NANOS,"pad":"xxx…"}`: `pub` names the publisher, `seq` counts
//! from 0 per publisher, `ts` is the send time in nanoseconds since the Unix epoch (0 when
//! unknown, e.g. lines generated ahead of time for another tool). Subscribers find the
//! three fields by name anywhere in a JSON object, so the same counter works behind the
//! daemon (whose routes may add fields) and behind other publishers (`json.dumps` spacing).

use std::time::{SystemTime, UNIX_EPOCH};

/// What a subscriber reads back from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Publisher index.
    pub publisher: u32,
    /// Sequence number within that publisher.
    pub seq: u64,
    /// Send time, nanoseconds since the Unix epoch; 0 when the sender did not stamp it.
    pub sent_ns: u64,
}

/// Nanoseconds since the Unix epoch (the clock both ends of a local bench share).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Write the payload for `stamp` into `out`, padded with `x` to at least `size` bytes.
pub fn encode(stamp: Stamp, size: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "{{\"pub\":{},\"seq\":{},\"ts\":{},\"pad\":\"",
        stamp.publisher, stamp.seq, stamp.sent_ns
    );
    let closing = 2;
    let pad = size.saturating_sub(out.len() + closing);
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(b"\"}");
}

/// Read the stamp back; `None` when `pub` or `seq` is missing (not a bench message).
pub fn decode(payload: &[u8]) -> Option<Stamp> {
    Some(Stamp {
        publisher: u32::try_from(field(payload, b"\"pub\"")?).ok()?,
        seq: field(payload, b"\"seq\"")?,
        sent_ns: field(payload, b"\"ts\"").unwrap_or(0),
    })
}

/// The unsigned integer after `"name"`, optional spaces, `:` and optional spaces.
fn field(payload: &[u8], name: &[u8]) -> Option<u64> {
    let at = payload.windows(name.len()).position(|w| w == name)?;
    let mut rest = payload[at + name.len()..].iter().copied().peekable();
    let skip_spaces = |r: &mut std::iter::Peekable<_>| {
        while r.next_if(|b: &u8| b.is_ascii_whitespace()).is_some() {}
    };
    skip_spaces(&mut rest);
    rest.next_if_eq(&b':')?;
    skip_spaces(&mut rest);
    let mut n: u64 = 0;
    let mut digits = 0;
    while let Some(d) = rest.next_if(u8::is_ascii_digit) {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_round_trips_at_the_requested_size() {
        let s = Stamp {
            publisher: 3,
            seq: 123_456,
            sent_ns: 1_700_000_000_000_000_000,
        };
        let mut buf = Vec::new();
        encode(s, 100, &mut buf);
        assert_eq!(buf.len(), 100);
        assert!(serde_json::from_slice::<serde_json::Value>(&buf).is_ok());
        assert_eq!(decode(&buf), Some(s));
    }

    #[test]
    fn a_payload_never_shrinks_below_its_fields() {
        let mut buf = Vec::new();
        encode(
            Stamp {
                publisher: 0,
                seq: 1,
                sent_ns: 2,
            },
            1,
            &mut buf,
        );
        assert_eq!(decode(&buf).map(|s| s.seq), Some(1));
    }

    #[test]
    fn fields_are_found_with_spaces_and_other_fields_around_them() {
        let p = br#"{"_event": "bench", "pad": "x", "ts": 5, "seq": 42, "pub": 1}"#;
        assert_eq!(
            decode(p),
            Some(Stamp {
                publisher: 1,
                seq: 42,
                sent_ns: 5
            })
        );
        assert_eq!(decode(br#"{"seq": 1}"#), None);
        assert_eq!(decode(br#"{"pub": 1, "seq": "x"}"#), None);
    }
}
