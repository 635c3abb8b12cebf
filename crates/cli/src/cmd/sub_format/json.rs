//! `%j` / `%J` as mosquitto_sub 2.0 prints them: its JSON library's (cJSON) layout, key
//! order and number format, so the bytes are the same.

use mqlink::mqtt::codec::Publish;
use serde_json::Value;

use super::strftime::Tm;

/// A JSON tree of bytes: strings may hold invalid UTF-8 (cJSON prints payload bytes as
/// they are) and objects may repeat keys (user properties do).
enum J {
    /// A number, `null`, `true` or `false`, already printed.
    Raw(String),
    Str(Vec<u8>),
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
    /// An object with keys that are not static (payload objects, user properties).
    Map(Vec<(String, J)>),
}

fn from_value(v: &Value) -> J {
    match v {
        Value::Null => J::Raw("null".into()),
        Value::Bool(b) => J::Raw(b.to_string()),
        Value::Number(n) => J::Raw(number(n)),
        Value::String(s) => J::Str(s.as_bytes().to_vec()),
        Value::Array(a) => J::Arr(a.iter().map(from_value).collect()),
        Value::Object(m) => J::Map(m.iter().map(|(k, v)| (k.clone(), from_value(v))).collect()),
    }
}

/// Print as cJSON does: minified, or with tabs and `"key":\tvalue` when `pretty`.
fn print(j: &J, depth: usize, pretty: bool, out: &mut Vec<u8>) {
    match j {
        J::Raw(r) => out.extend_from_slice(r.as_bytes()),
        J::Str(s) => string(out, s),
        J::Arr(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(if pretty { b", " } else { b"," });
                }
                print(item, depth + 1, pretty, out);
            }
            out.push(b']');
        }
        J::Obj(members) => {
            let members: Vec<(&str, &J)> = members.iter().map(|(k, v)| (*k, v)).collect();
            object(&members, depth, pretty, out);
        }
        J::Map(members) => {
            let members: Vec<(&str, &J)> = members.iter().map(|(k, v)| (k.as_str(), v)).collect();
            object(&members, depth, pretty, out);
        }
    }
}

fn object(members: &[(&str, &J)], depth: usize, pretty: bool, out: &mut Vec<u8>) {
    let indent = |out: &mut Vec<u8>, n: usize| {
        if pretty {
            out.extend(std::iter::repeat_n(b'\t', n));
        }
    };
    out.push(b'{');
    if pretty {
        out.push(b'\n');
    }
    for (i, (key, value)) in members.iter().enumerate() {
        indent(out, depth + 1);
        string(out, key.as_bytes());
        out.push(b':');
        if pretty {
            out.push(b'\t');
        }
        print(value, depth + 1, pretty, out);
        if i + 1 < members.len() {
            out.push(b',');
        }
        if pretty {
            out.push(b'\n');
        }
    }
    indent(out, depth);
    out.push(b'}');
}

/// A JSON string as cJSON escapes it: `"` `\\` and control characters; other bytes
/// (invalid UTF-8 included) as they are.
fn string(buf: &mut Vec<u8>, s: &[u8]) {
    buf.push(b'"');
    for &b in s {
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            0x08 => buf.extend_from_slice(b"\\b"),
            0x0c => buf.extend_from_slice(b"\\f"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b if b < 0x20 => buf.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            b => buf.push(b),
        }
    }
    buf.push(b'"');
}

/// cJSON prints every number as a double with `%1.15g`, or `%1.17g` when 15 digits do
/// not read back as the same double.
fn number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() < (1 << 53)) {
        return i.to_string();
    }
    let d = n.as_f64().unwrap_or(f64::NAN);
    if !d.is_finite() {
        return "null".into();
    }
    let short = format_g(d, 15);
    if short.parse::<f64>().ok() == Some(d) {
        short
    } else {
        format_g(d, 17)
    }
}

/// C's `%.{precision}g`.
fn format_g(d: f64, precision: usize) -> String {
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{:.*e}", precision - 1, d);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= precision as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        let decimals = (precision as i32 - 1 - exp).max(0) as usize;
        trim(&format!("{d:.decimals$}"))
    }
}

/// The whole `%j`/`%J` object; `None` for `%J` with a payload that is not JSON.
pub fn message(p: &Publish, quoted: bool, pretty: bool, now: &Tm) -> Option<Vec<u8>> {
    let payload = if p.payload.is_empty() {
        J::Raw("null".into())
    } else if quoted {
        // A C string to mosquitto: it stops at the first NUL.
        let end = p.payload.iter().position(|&b| b == 0);
        J::Str(p.payload[..end.unwrap_or(p.payload.len())].to_vec())
    } else {
        from_value(&serde_json::from_slice(&p.payload).ok()?)
    };
    // mosquitto's own layout: microseconds, a literal Z, then the UTC offset.
    let tst = format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z{}",
        now.year,
        now.month,
        now.day,
        now.hour,
        now.minute,
        now.second,
        now.nanos / 1000,
        now.numeric_zone()
    );
    let mut members = vec![
        ("tst", J::Str(tst.into_bytes())),
        ("topic", J::Str(p.topic.as_bytes().to_vec())),
        ("qos", J::Raw((p.qos as u8).to_string())),
        ("retain", J::Raw(u8::from(p.retain).to_string())),
        ("payloadlen", J::Raw(p.payload.len().to_string())),
    ];
    if let Some(mid) = p.pid {
        members.push(("mid", J::Raw(mid.to_string())));
    }
    if !p.props.is_empty() {
        members.push(("properties", properties(p)));
    }
    members.push(("payload", payload));
    let mut out = Vec::with_capacity(p.payload.len() + 160);
    print(&J::Obj(members), 0, pretty, &mut out);
    Some(out)
}

/// The v5 properties, named as mosquitto names them, in the order they came in (as
/// mosquitto_sub prints them; Mosquitto the broker puts a subscription identifier first,
/// then the publisher's order, the message expiry last). A property missing from the
/// received order (a message built here) goes after the others, by identifier.
fn properties(p: &Publish) -> J {
    let pr = &p.props;
    let text = |s: &Option<String>| s.as_ref().map(|s| J::Str(s.as_bytes().to_vec()));
    let user = (!pr.user.is_empty()).then(|| {
        J::Map(
            pr.user
                .iter()
                .map(|(k, v)| (k.clone(), J::Str(v.as_bytes().to_vec())))
                .collect(),
        )
    });
    let all = [
        (
            0x01,
            "payload-format-indicator",
            pr.payload_utf8.map(|u| J::Raw(u8::from(u).to_string())),
        ),
        (
            0x02,
            "message-expiry-interval",
            pr.message_expiry.map(|e| J::Raw(e.to_string())),
        ),
        (0x03, "content-type", text(&pr.content_type)),
        (0x08, "response-topic", text(&pr.response_topic)),
        (
            0x09,
            "correlation-data",
            // mosquitto hands cJSON the binary value as a C string: it ends at a NUL.
            pr.correlation_data
                .as_ref()
                .map(|c| J::Str(c.split(|&b| b == 0).next().unwrap_or_default().to_vec())),
        ),
        (
            0x0B,
            "subscription-identifier",
            pr.subscription_id.map(|i| J::Raw(i.to_string())),
        ),
        (0x26, "user-properties", user),
    ];
    let rank = |id: u8| {
        pr.order
            .0
            .iter()
            .position(|&o| o == id)
            .unwrap_or(usize::MAX)
    };
    let mut present: Vec<(u8, &'static str, J)> = all
        .into_iter()
        .filter_map(|(id, k, v)| Some((id, k, v?)))
        .collect();
    present.sort_by_key(|(id, ..)| (rank(*id), *id));
    J::Obj(present.into_iter().map(|(_, k, v)| (k, v)).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_print_as_cjson_prints_them() {
        let v: serde_json::Value =
            serde_json::from_str("[1, 2.5, 27.0, 1e20, -0.0, 123456789012, 0.1, 1e-5]").unwrap();
        let got: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|n| super::number(n.as_number().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                "1",
                "2.5",
                "27",
                "1e+20",
                "-0",
                "123456789012",
                "0.1",
                "1e-05"
            ]
        );
    }
}
