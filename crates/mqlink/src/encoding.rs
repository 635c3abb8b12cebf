//! Bytes shown as text: the one rule for payloads that records, dead letters, sinks and
//! the dashboard write into JSON — the string itself when the bytes are UTF-8, else their
//! standard base64 (and the writer says so, e.g. `"payload_encoding": "base64"`). A leaf:
//! imports nothing from the crate.

use base64::Engine as _;

/// `bytes` as a string, and whether it is base64 (the bytes were not UTF-8).
pub(crate) fn utf8_or_base64(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stays_text_and_anything_else_is_base64() {
        assert_eq!(utf8_or_base64("ü".as_bytes()), ("ü".to_string(), false));
        assert_eq!(utf8_or_base64(&[0xff, 0x00]), ("/wA=".to_string(), true));
    }
}
