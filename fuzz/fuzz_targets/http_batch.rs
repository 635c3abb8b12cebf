//! `POST /v1/events` bodies: the first byte picks JSON or NDJSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqlink::internals::{BodyKind, parse_batch};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let kind = if sel % 2 == 0 {
        BodyKind::Json
    } else {
        BodyKind::Ndjson
    };
    if let Err(e) = parse_batch(body, kind) {
        assert_eq!(e.status().as_u16(), 400, "{e:?}");
    }
});
