//! Topic templates: parse anything, render parsed ones against fuzzed event fields.
//! Input: `template \n fields-json`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqlink::topic::template::{RenderContext, SlashPolicy, Template};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (source, fields) = text.split_once('\n').unwrap_or((text, "{}"));
    let fields: Value =
        serde_json::from_str(fields).unwrap_or_else(|_| Value::Object(Default::default()));
    for slash in [SlashPolicy::Keep, SlashPolicy::Replace] {
        let ctx = RenderContext {
            event: "ev/ent",
            fields: &fields,
            hostname: "host",
            prefix: "pre/fix",
            slash,
        };
        if let Ok(t) = Template::parse(source) {
            if let Ok(topic) = t.render(&ctx) {
                assert!(
                    !topic.contains(['+', '#', '\0']),
                    "rendered a wildcard: {topic:?}"
                );
            }
            let _ = t.resolve_builtins("host", "pre").render(&ctx);
            let _ = t.with_prefix("p/").render(&ctx);
        }
        if let Ok(t) = Template::parse_text(source) {
            let _ = t.render_text(&ctx);
        }
    }
});
