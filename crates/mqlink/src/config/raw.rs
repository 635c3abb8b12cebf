//! The config file as written: serde structs mirroring the schema, every one with
//! `deny_unknown_fields`, nearly every field optional. Durations and byte sizes are kept
//! as text here and parsed during validation so their errors carry a location. Defaults
//! are applied in [`super::validate`] and documented on the validated types.
//!
//! None of them (nor the sinks' `Raw` structs) derives `Debug`: they hold what the user
//! wrote, URLs with `user:password@` included, and what cannot be formatted cannot end up
//! in a log. The validated types format with secrets redacted.

use serde::Deserialize;

use super::secret::Secret;
pub(crate) use super::shared::{Ordered, RawBackoff, RawFsync, RawTls};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub broker: Option<RawBroker>,
    pub topic_prefix: Option<String>,
    pub spool: Option<RawSpool>,
    pub sources: Option<RawSources>,
    pub routes: Option<Vec<RawRoute>>,
    pub connectors: Option<Vec<RawConnector>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBroker {
    pub url: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<String>,
    pub protocol: Option<String>,
    pub keepalive: Option<String>,
    pub session: Option<RawSession>,
    pub session_expiry: Option<String>,
    pub tls: Option<RawTls>,
    pub reconnect: Option<RawBackoff>,
    pub max_packet_size: Option<String>,
    pub max_inflight: Option<u32>,
    pub connect_timeout: Option<String>,
    pub lifecycle: Option<RawLifecycle>,
    pub embedded: Option<RawEmbedded>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawSession {
    Clean,
    Persistent,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLifecycle {
    pub topic: Option<String>,
    pub online: Option<String>,
    pub offline: Option<String>,
    pub retain: Option<bool>,
    pub qos: Option<u8>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEmbedded {
    pub listen: Option<String>,
    pub ws_listen: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<String>,
    pub tls: Option<RawEmbeddedTls>,
    pub allow_anonymous: Option<bool>,
    pub max_queued_messages: Option<u64>,
    pub max_queued_bytes: Option<String>,
    pub persistence: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEmbeddedTls {
    pub listen: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub client_ca_file: Option<String>,
    pub require_client_cert: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSpool {
    pub dir: Option<String>,
    pub max_bytes: Option<String>,
    pub on_full: Option<RawOnFull>,
    pub fsync: Option<RawFsync>,
    pub fsync_interval: Option<String>,
    pub stall_timeout: Option<String>,
    pub on_corruption: Option<RawOnCorruption>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawOnCorruption {
    Fail,
    Discard,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawOnFull {
    Reject,
    Block,
    DropOldest,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSources {
    pub http: Option<RawHttpSource>,
    pub stdin: Option<RawStdin>,
    pub poll: Option<Vec<RawPoll>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpSource {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
    pub tokens: Option<Vec<Secret>>,
    pub max_body: Option<String>,
    pub request_timeout: Option<String>,
    pub max_connections: Option<u32>,
    pub header_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStdin {
    pub enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPoll {
    pub url: String,
    pub every: String,
    pub event: String,
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
    pub split: Option<String>,
    pub headers: Option<Ordered<Secret>>,
    pub timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub match_: Vec<String>,
    pub topic: String,
    pub qos: Option<u8>,
    pub retain: Option<bool>,
    pub enabled: Option<bool>,
    pub slash: Option<RawSlash>,
    pub payload: Option<RawPayload>,
    pub properties: Option<RawProperties>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawSlash {
    Keep,
    Replace,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPayload {
    pub event_field: Option<String>,
    pub timestamp_field: Option<String>,
    pub timestamp: Option<RawTimestamp>,
    pub transform: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawTimestamp {
    Unix,
    UnixMs,
    Rfc3339,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProperties {
    pub content_type: Option<String>,
    pub message_expiry: Option<String>,
    pub user: Option<Ordered<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConnector {
    pub name: String,
    pub subscribe: Vec<String>,
    pub qos: Option<u8>,
    pub session: Option<RawSession>,
    pub client_id: Option<String>,
    pub broker: Option<RawConnectorBroker>,
    pub format: Option<RawFormat>,
    pub transforms: Option<Vec<RawTransform>>,
    pub dead_letter: Option<String>,
    pub sink: crate::sink::RawSink,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConnectorBroker {
    pub url: String,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawFormat {
    Json,
    Fluvio,
    Raw,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum RawTransform {
    Filter(String),
    Map(String),
    Arraymap(String),
}

#[cfg(test)]
mod tests {
    use std::marker::PhantomData;

    use super::*;

    /// `true` when `T: Debug`: the inherent method wins when its bound holds, the
    /// trait's otherwise.
    struct Probe<T>(PhantomData<T>);
    trait NotDebug {
        fn is_debug(&self) -> bool {
            false
        }
    }
    impl<T> NotDebug for Probe<T> {}
    impl<T: std::fmt::Debug> Probe<T> {
        fn is_debug(&self) -> bool {
            true
        }
    }

    #[test]
    fn raw_structs_holding_what_the_user_wrote_cannot_be_formatted() {
        assert!(Probe::<Secret>(PhantomData).is_debug(), "the probe works");
        assert!(!Probe::<RawConfig>(PhantomData).is_debug());
        assert!(!Probe::<RawBroker>(PhantomData).is_debug());
        assert!(!Probe::<RawEmbedded>(PhantomData).is_debug());
        assert!(!Probe::<RawPoll>(PhantomData).is_debug());
        assert!(!Probe::<RawConnector>(PhantomData).is_debug());
        assert!(!Probe::<crate::sink::RawSink>(PhantomData).is_debug());
    }
}
