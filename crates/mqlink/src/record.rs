//! Record formats for messages taken off MQTT: `text`, `json`, `fluvio`, `raw`.
//!
//! Used by `mqlink sub --format` and by connectors, so both write the same bytes.
//! - `fluvio` is byte-for-byte the record of Fluvio's MQTT source connector:
//!   `{"mqtt_topic":"…","payload":[bytes…]}`.
//! - `json` is `{"topic","payload","qos","retain","properties","received_at"}`, where the
//!   payload is embedded as JSON when it parses as JSON, else as a string when it is UTF-8,
//!   else as base64 with `"payload_encoding":"base64"`.

use std::io::Write;
use std::time::SystemTime;

use serde_json::{Map, Value, json};

use crate::encoding::utf8_or_base64;
use crate::mqtt::codec::Publish;

/// A message as a record: a connector's `format:` (the one record-format type; the
/// config holds it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    /// `{"topic", "payload", "qos", "retain", "properties", "received_at"}`; a connector's
    /// default.
    Json,
    /// Fluvio's MQTT source record `{"mqtt_topic", "payload": [bytes]}`.
    Fluvio,
    /// The payload bytes.
    Raw,
}

/// How `mqlink sub` writes a message out: mosquitto_sub's text, or a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Payload bytes (with `topic ` in front when verbose), like `mosquitto_sub`.
    Text,
    /// One record per message: JSON and Fluvio one per line, raw bytes with no separator.
    Record(RecordFormat),
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Record(RecordFormat::Json)),
            "fluvio" => Ok(Format::Record(RecordFormat::Fluvio)),
            "raw" => Ok(Format::Record(RecordFormat::Raw)),
            other => Err(format!(
                "unknown format '{other}' (text, json, fluvio, raw)"
            )),
        }
    }
}

/// Write one message in `format` to `out`, with a trailing newline except for `raw`.
///
/// # Errors
/// Whatever `out` returns.
pub fn write(
    out: &mut impl Write,
    format: Format,
    verbose: bool,
    p: &Publish,
) -> std::io::Result<()> {
    match format {
        Format::Text => {
            if verbose {
                out.write_all(p.topic.as_bytes())?;
                out.write_all(b" ")?;
            }
            out.write_all(&p.payload)?;
            out.write_all(b"\n")
        }
        Format::Record(RecordFormat::Raw) => out.write_all(&p.payload),
        Format::Record(RecordFormat::Fluvio) => {
            serde_json::to_writer(&mut *out, &fluvio(p))?;
            out.write_all(b"\n")
        }
        Format::Record(RecordFormat::Json) => {
            serde_json::to_writer(&mut *out, &json_record(p, SystemTime::now()))?;
            out.write_all(b"\n")
        }
    }
}

/// The Fluvio record of a message.
pub fn fluvio(p: &Publish) -> Value {
    json!({ "mqtt_topic": &*p.topic, "payload": p.payload.as_ref() })
}

/// The `json` record of a message received at `at`.
pub fn json_record(p: &Publish, at: SystemTime) -> Value {
    let mut rec = Map::new();
    rec.insert("topic".into(), Value::String(p.topic.to_string()));
    match serde_json::from_slice::<Value>(&p.payload) {
        Ok(v) => {
            rec.insert("payload".into(), v);
        }
        Err(_) => {
            let (text, base64) = utf8_or_base64(&p.payload);
            rec.insert("payload".into(), Value::String(text));
            if base64 {
                rec.insert("payload_encoding".into(), Value::String("base64".into()));
            }
        }
    }
    rec.insert("qos".into(), json!(p.qos as u8));
    rec.insert("retain".into(), json!(p.retain));
    let mut props = Map::new();
    if let Some(ct) = &p.props.content_type {
        props.insert("content_type".into(), json!(ct));
    }
    if let Some(e) = p.props.message_expiry {
        props.insert("message_expiry".into(), json!(e));
    }
    if !p.props.user.is_empty() {
        let user: Map<String, Value> = p
            .props
            .user
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        props.insert("user".into(), Value::Object(user));
    }
    rec.insert("properties".into(), Value::Object(props));
    rec.insert(
        "received_at".into(),
        Value::String(humantime::format_rfc3339_millis(at).to_string()),
    );
    Value::Object(rec)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::mqtt::codec::{PublishProps, QoS};

    fn publish(topic: &str, payload: &[u8]) -> Publish {
        Publish {
            topic: Arc::from(topic),
            payload: Bytes::copy_from_slice(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            dup: false,
            pid: None,
            props: PublishProps::default(),
        }
    }

    #[test]
    fn fluvio_seed_record_is_byte_exact() {
        let topic = "/hfp/v2/journey/ongoing/vp/bus/0022/01151/2200/1/Espoon keskus/23:02/1160105/4/60;24/29/00/00";
        let mut out = Vec::new();
        write(
            &mut out,
            Format::Record(RecordFormat::Fluvio),
            false,
            &publish(topic, b"{\"VP\":1}"),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{{\"mqtt_topic\":\"{topic}\",\"payload\":[123,34,86,80,34,58,49,125]}}\n")
        );
    }

    #[test]
    fn json_embeds_json_payloads_and_base64s_binary() {
        let v = json_record(&publish("t", b"{\"a\":1}"), SystemTime::UNIX_EPOCH);
        assert_eq!(v["payload"], json!({"a": 1}));
        assert_eq!(v["received_at"], "1970-01-01T00:00:00.000Z");
        let v = json_record(&publish("t", b"plain"), SystemTime::UNIX_EPOCH);
        assert_eq!(v["payload"], "plain");
        let v = json_record(&publish("t", &[0xff, 0x00]), SystemTime::UNIX_EPOCH);
        assert_eq!(v["payload"], "/wA=");
        assert_eq!(v["payload_encoding"], "base64");
    }

    #[test]
    fn text_verbose_matches_mosquitto_sub() {
        let mut out = Vec::new();
        write(
            &mut out,
            Format::Text,
            true,
            &publish("a/b", b"hello world"),
        )
        .unwrap();
        assert_eq!(out, b"a/b hello world\n");
    }
}
