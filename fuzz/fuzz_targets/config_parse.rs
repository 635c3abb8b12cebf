//! Config files: the first byte picks YAML or TOML; load, validate and build nothing else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqlink::config::{self, Format};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = if sel % 2 == 0 {
        Format::Yaml
    } else {
        Format::Toml
    };
    if let Ok(cfg) = config::from_str(text, format, "fuzz.yaml") {
        let _ = format!("{cfg:?}");
    }
});
