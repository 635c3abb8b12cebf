//! What the optional sinks (cargo features `sink-*`: http, nats, redis, postgres, kafka)
//! share: their batching keys ([`BatchKeys`], [`in_flight`]), the topic-level templates
//! ([`TOPIC_LEVELS`], [`TopicRenderer`]), de-dup ids ([`dedup_id`]) and plan-line pieces
//! ([`redacted`], [`tls_plan`]). Re-exported by `sink/mod.rs`, so a sink names them
//! `super::…`. In a build without some of those sinks, some of this is unused: one
//! allowance here instead of one per item.
#![cfg_attr(
    not(all(
        feature = "sink-http",
        feature = "sink-nats",
        feature = "sink-redis",
        feature = "sink-postgres",
        feature = "sink-kafka"
    )),
    allow(dead_code, unused_imports)
)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Record;
use crate::config::ctx::Ctx;
use crate::config::error::ConfigError;
use crate::config::node::KeyPath;
use crate::config::shared::{Backoff, RawBackoff};
use crate::topic::{Allowed, FieldRule};

/// Largest `in_flight` a sink accepts: with `batch_max` it bounds what the connector holds
/// unacknowledged (`in_flight × batch_max` records).
pub(crate) const MAX_IN_FLIGHT: u32 = 64;

/// Validates a pipelining sink's `in_flight` key at `p` (1..=[`MAX_IN_FLIGHT`]).
pub(crate) fn in_flight(
    ctx: &Ctx<'_>,
    p: &KeyPath,
    raw: Option<u32>,
    default: u32,
) -> Result<u32, ConfigError> {
    let n = raw.unwrap_or(default);
    if !(1..=MAX_IN_FLIGHT).contains(&n) {
        return Err(ctx.err(
            &p.key("in_flight"),
            format!("must be between 1 and {MAX_IN_FLIGHT}"),
        ));
    }
    Ok(n)
}

/// `url` for messages and plan lines: a password is replaced by `redacted`.
pub(crate) use crate::config::secret::redacted;

/// `, TLS` and what it trusts, for plan lines (`redis`, `postgres`).
#[cfg(any(feature = "sink-redis", feature = "sink-postgres"))]
pub(crate) fn tls_plan(t: &crate::config::shared::Tls) -> String {
    let mut s = String::from(", TLS");
    if let Some(ca) = &t.ca_file {
        s.push_str(&format!(" ca {}", ca.display()));
    }
    if t.client_auth.is_some() {
        s.push_str(" + client cert");
    }
    if t.insecure_skip_verify {
        s.push_str(" NOT VERIFIED");
    }
    s
}

/// Placeholders the `redis`, `postgres` and `kafka` templates may use: the MQTT topic as
/// `{topic}` or `{mqtt_topic}`, its levels as `{topic_level_1}` … `{topic_level_9}`
/// (empty when the topic has fewer levels), and `{hostname}`.
pub(crate) const TOPIC_LEVELS: Allowed<'static> = Allowed {
    event: false,
    hostname: true,
    prefix: false,
    fields: FieldRule::Only(&[
        "topic",
        "mqtt_topic",
        "topic_level_1",
        "topic_level_2",
        "topic_level_3",
        "topic_level_4",
        "topic_level_5",
        "topic_level_6",
        "topic_level_7",
        "topic_level_8",
        "topic_level_9",
    ]),
};

/// Renders a [`TOPIC_LEVELS`] template per record, remembering the last topic: records
/// of one batch mostly share a few topics, and building the context is the costly part.
#[derive(Debug, Clone)]
pub(crate) struct TopicRenderer {
    template: crate::topic::Template,
    last: Option<(Arc<str>, String)>,
}

impl TopicRenderer {
    pub(crate) fn new(template: crate::topic::Template) -> TopicRenderer {
        TopicRenderer {
            template,
            last: None,
        }
    }

    /// The template as written.
    pub(crate) fn as_str(&self) -> &str {
        self.template.as_str()
    }

    /// The template rendered for `topic` (as text: values inserted verbatim).
    pub(crate) fn render(&mut self, topic: &Arc<str>) -> Result<&str, String> {
        let hit = matches!(&self.last, Some((t, _)) if Arc::ptr_eq(t, topic) || **t == **topic);
        if !hit {
            let mut fields = serde_json::Map::with_capacity(11);
            fields.insert("topic".into(), Value::String(topic.to_string()));
            fields.insert("mqtt_topic".into(), Value::String(topic.to_string()));
            let mut levels = topic.split('/');
            for i in 1..=9 {
                let level = levels.next().unwrap_or("");
                fields.insert(format!("topic_level_{i}"), Value::String(level.into()));
            }
            let fields = Value::Object(fields);
            let text = self
                .template
                .render_text(&crate::topic::RenderContext {
                    event: "",
                    fields: &fields,
                    hostname: "",
                    prefix: "",
                    slash: crate::topic::SlashPolicy::Keep,
                })
                .map_err(|e| format!("template '{}': {e}", self.template.as_str()))?;
            self.last = Some((topic.clone(), text));
        }
        Ok(self
            .last
            .as_ref()
            .map(|(_, s)| s.as_str())
            .unwrap_or_default())
    }
}

/// The de-duplication id of `record` for connector `connector`: `{connector}-{hex of the
/// first 128 bits of SHA-256(topic, payload, part)}`. Stable across redeliveries of the
/// same message (unlike packet ids or arrival times); see `nats.rs` for the trade-off.
pub(crate) fn dedup_id(connector: &str, record: &Record) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [record.topic.as_bytes(), b"\0", &record.source, b"\0"] {
        ctx.update(part);
    }
    ctx.update(&record.part.to_be_bytes());
    let digest = ctx.finish();
    let mut id = String::with_capacity(connector.len() + 33);
    id.push_str(connector);
    id.push('-');
    for b in &digest.as_ref()[..16] {
        use std::fmt::Write as _;
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// `batch_max`, `batch_max_bytes`, `linger`, `timeout` and `retry` as the batching engine
/// sinks (Kafka, PostgreSQL, Redis) take them: validated alike, each sink giving its own
/// defaults.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BatchKeys {
    /// Records per batch, 1..=10000.
    pub(crate) batch_max: u32,
    /// MQTT payload bytes per batch (see [`super::Batching::max_bytes`]), at least 1.
    pub(crate) batch_max_bytes: u64,
    /// How long a batch may wait to fill up; default none.
    pub(crate) linger: Duration,
    /// How long one batch may take.
    pub(crate) timeout: Duration,
    /// Backoff between retries; default 100 ms to 10 s.
    pub(crate) retry: Backoff,
}

impl BatchKeys {
    /// Validates the five keys under `p`; `batch_max`, `batch_max_bytes` and `timeout`
    /// default as given.
    pub(crate) fn validate(
        ctx: &Ctx,
        p: &KeyPath,
        raw: RawBatchKeys<'_>,
        default_batch_max: u32,
        default_batch_max_bytes: u64,
        default_timeout: Duration,
    ) -> Result<BatchKeys, ConfigError> {
        let RawBatchKeys {
            batch_max,
            batch_max_bytes,
            linger,
            timeout,
            retry,
        } = raw;
        let batch_max = batch_max.unwrap_or(default_batch_max);
        if !(1..=10_000).contains(&batch_max) {
            return Err(ctx.err(&p.key("batch_max"), "must be between 1 and 10000"));
        }
        let batch_max_bytes =
            batch_max_bytes_key(ctx, p, batch_max_bytes, default_batch_max_bytes)?;
        // A `retry:` block that sets one bound takes the other from these defaults, not
        // from the broker's reconnect defaults.
        let retry = ctx.backoff_or(
            retry,
            &p.key("retry"),
            Backoff {
                min: Duration::from_millis(100),
                max: Duration::from_secs(10),
            },
        )?;
        Ok(BatchKeys {
            batch_max,
            batch_max_bytes,
            linger: ctx.duration(linger, &p.key("linger"), Duration::ZERO)?,
            timeout: ctx.positive_duration(timeout, &p.key("timeout"), default_timeout)?,
            retry,
        })
    }
}

/// The batching keys as written, for [`BatchKeys::validate`].
pub(crate) struct RawBatchKeys<'a> {
    pub(crate) batch_max: Option<u32>,
    pub(crate) batch_max_bytes: Option<&'a str>,
    pub(crate) linger: Option<&'a str>,
    pub(crate) timeout: Option<&'a str>,
    pub(crate) retry: Option<RawBackoff>,
}

/// Validates a sink's `batch_max_bytes` key under `p`: a byte size (`16MiB`), at least 1.
pub(crate) fn batch_max_bytes_key(
    ctx: &Ctx<'_>,
    p: &KeyPath,
    raw: Option<&str>,
    default: u64,
) -> Result<u64, ConfigError> {
    let key = p.key("batch_max_bytes");
    let n = ctx.bytes(raw, &key, default, 1)?;
    // A batch is one request, statement or transaction, held in memory until confirmed;
    // PostgreSQL refuses a protocol message of 1 GiB or more, and Redis's default query
    // buffer limit is 1 GiB.
    if n > MAX_BATCH_BYTES {
        return Err(ctx.err(&key, "must be at most 512MiB"));
    }
    Ok(n)
}

/// The largest `batch_max_bytes`: 512 MiB.
const MAX_BATCH_BYTES: u64 = 512 << 20;

/// De-dup ids of records a sink confirmed behind a failed one of the same batch, with how
/// many times each (identical messages share an id): the connector offers them again with
/// the rest, and each is then counted as confirmed once instead of written again. Bounded:
/// only a failed batch adds to it, at most its own records, and the connector offers them
/// all again before it takes new messages.
#[derive(Debug, Default)]
pub(crate) struct Confirmed(std::collections::HashMap<String, usize>);

impl Confirmed {
    /// Whether the memo holds `id`; if so, one confirmation of it is used up.
    pub(crate) fn take(&mut self, id: &str) -> bool {
        match self.0.get_mut(id) {
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    self.0.remove(id);
                }
                true
            }
            None => false,
        }
    }

    /// Remember one more confirmation of `id`.
    pub(crate) fn add(&mut self, id: String) {
        *self.0.entry(id).or_insert(0) += 1;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_confirmation_is_used_once() {
        let mut m = Confirmed::default();
        m.add("a".into());
        m.add("a".into());
        assert!(m.take("a"));
        assert!(m.take("a"), "two identical records, two confirmations");
        assert!(!m.take("a"));
        assert!(m.is_empty());
    }
}
