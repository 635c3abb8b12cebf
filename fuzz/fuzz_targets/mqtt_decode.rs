//! Hostile bytes from a broker: the first byte picks the protocol, the rest is the stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mqlink::mqtt::codec::{self, Protocol};

/// Small, so oversized length prefixes are exercised constantly.
const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let protocol = match sel % 3 {
        0 => Protocol::V31,
        1 => Protocol::V311,
        _ => Protocol::V5,
    };
    let mut buf = BytesMut::from(stream);
    loop {
        let before = buf.len();
        match codec::decode(&mut buf, protocol, MAX) {
            Ok(Some(packet)) => {
                assert!(buf.len() < before, "a decoded packet must consume bytes");
                // Whatever we accepted must be re-encodable without panicking.
                let mut out = BytesMut::new();
                let _ = codec::encode(&packet, protocol, &mut out);
            }
            Ok(None) => {
                assert_eq!(
                    buf.len(),
                    before,
                    "an incomplete frame must consume nothing"
                );
                break;
            }
            Err(_) => break,
        }
    }
});
