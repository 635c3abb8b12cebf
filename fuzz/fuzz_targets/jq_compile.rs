//! jq programs as written in a config file (compile only: running arbitrary jq may not end).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqlink::config::Program;

fuzz_target!(|data: &[u8]| {
    let Ok(code) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Program::compile(code);
});
