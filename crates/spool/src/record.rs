//! The on-disk record and segment-header format (pure; no I/O).
//!
//! ```text
//! segment header: magic b"MQSPOOL1" | base id u64 LE                  (16 bytes)
//! record:         len u32 LE | crc u32 LE | id u64 LE | payload[len]   (16 + len bytes)
//!                 crc = CRC32(len LE ++ id LE ++ payload)
//! ```

pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"MQSPOOL1";
pub(crate) const SEGMENT_HEADER_LEN: u64 = 16;
pub(crate) const RECORD_HEADER_LEN: u64 = 16;

/// Bytes a record with this payload occupies on disk.
pub(crate) fn record_len(payload_len: usize) -> u64 {
    RECORD_HEADER_LEN + payload_len as u64
}

pub(crate) fn segment_header(base_id: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..].copy_from_slice(&base_id.to_le_bytes());
    h
}

/// The base id recorded in a segment header, if the header is intact.
pub(crate) fn parse_segment_header(buf: &[u8]) -> Option<u64> {
    if buf.len() < SEGMENT_HEADER_LEN as usize || &buf[..8] != SEGMENT_MAGIC {
        return None;
    }
    Some(u64::from_le_bytes(buf[8..16].try_into().ok()?))
}

fn checksum(len: u32, id: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&id.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends one encoded record to `buf`. The caller guarantees `payload.len()`
/// fits in a u32 (the spool rejects larger records before they get here).
pub(crate) fn encode(buf: &mut Vec<u8>, id: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&checksum(len, id, payload).to_le_bytes());
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Result of decoding the bytes at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A complete, checksummed record occupying `len` bytes.
    Record {
        id: u64,
        payload: &'a [u8],
        len: u64,
    },
    /// The buffer ends before the record does (maybe a torn write).
    Incomplete { needed: u64 },
    /// The bytes are not a valid record.
    Corrupt(&'static str),
}

pub(crate) fn decode(buf: &[u8]) -> Decoded<'_> {
    let h = RECORD_HEADER_LEN as usize;
    if buf.len() < h {
        return Decoded::Incomplete { needed: h as u64 };
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let mut id_bytes = [0u8; 8];
    id_bytes.copy_from_slice(&buf[8..16]);
    let id = u64::from_le_bytes(id_bytes);
    let total = h + len as usize;
    if buf.len() < total {
        return Decoded::Incomplete {
            needed: total as u64,
        };
    }
    let payload = &buf[h..total];
    if checksum(len, id, payload) != crc {
        return Decoded::Corrupt("checksum mismatch");
    }
    Decoded::Record {
        id,
        payload,
        len: total as u64,
    }
}

/// Finds the first intact record after a damaged one: the smallest offset
/// `p > from` in `buf` where a record with a valid checksum and an id `k` with
/// `expected <= k` starts. Returns `(p, k)`.
///
/// Used only in recovery, to resynchronise after a record whose length field
/// may itself be damaged, so every byte offset is a candidate. Two filters keep
/// the cost near a byte comparison per offset and make a false match (bytes
/// inside a payload that happen to form a record) very unlikely: the id must
/// fit, since ids `expected..k` sit in `from..p` and each record takes at
/// least [`RECORD_HEADER_LEN`] bytes, so `k - expected <= (p - from) / 16`;
/// then CRC32 over length, id and payload must match (one chance in 2^32).
pub(crate) fn next_intact(buf: &[u8], from: usize, expected: u64) -> Option<(usize, u64)> {
    let h = RECORD_HEADER_LEN as usize;
    let mut p = from + 1;
    while p + h <= buf.len() {
        let mut id_bytes = [0u8; 8];
        id_bytes.copy_from_slice(&buf[p + 8..p + 16]);
        let id = u64::from_le_bytes(id_bytes);
        let room = ((p - from) / h) as u64;
        if id >= expected
            && id - expected <= room
            && let Decoded::Record { id, .. } = decode(&buf[p..])
        {
            return Some((p, id));
        }
        p += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_record_decodes_to_the_same_id_and_payload() {
        let mut buf = Vec::new();
        encode(&mut buf, 42, b"hello");
        assert_eq!(buf.len() as u64, record_len(5));
        assert_eq!(
            decode(&buf),
            Decoded::Record {
                id: 42,
                payload: b"hello",
                len: 21
            }
        );
    }

    #[test]
    fn flipped_payload_bit_is_a_checksum_mismatch() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, b"hello");
        buf[18] ^= 1;
        assert_eq!(decode(&buf), Decoded::Corrupt("checksum mismatch"));
    }

    #[test]
    fn flipped_id_bit_is_a_checksum_mismatch() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, b"hello");
        buf[8] ^= 2;
        assert_eq!(decode(&buf), Decoded::Corrupt("checksum mismatch"));
    }

    #[test]
    fn truncated_record_is_incomplete() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, b"hello");
        assert_eq!(decode(&buf[..20]), Decoded::Incomplete { needed: 21 });
        assert_eq!(decode(&buf[..3]), Decoded::Incomplete { needed: 16 });
    }

    #[test]
    fn resync_finds_the_next_intact_record_behind_garbage() {
        let mut buf = Vec::new();
        encode(&mut buf, 4, b"damaged");
        buf[20] ^= 1;
        buf.extend_from_slice(&[0xAB; 7]);
        let at = buf.len();
        encode(&mut buf, 5, b"x");
        encode(&mut buf, 6, b"yy");
        assert_eq!(next_intact(&buf, 0, 4), Some((at, 5)));
        // An id too far ahead for the bytes before it is not a match.
        assert_eq!(next_intact(&buf, at - 1, 4), None);
        assert_eq!(next_intact(&buf, at, 5), Some((at + 17, 6)));
        assert_eq!(next_intact(&[0u8; 64], 0, 0), None);
    }
}
