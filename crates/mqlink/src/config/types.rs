//! Validated configuration: what the rest of mqlink builds its runtime objects from.
//! Every value here has been checked; defaults are applied and documented per field.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::mqtt::url::BrokerUrl;
use crate::topic::{EventGlob, GlobSet, SlashPolicy, Template, TopicFilter};
pub use crate::transform::jq::Program;

use super::secret::Secret;
pub use super::shared::Backoff;

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it came from (file path as given, or the origin name); for messages.
    pub origin: String,
    /// The host name `{hostname}` was resolved with.
    pub hostname: String,
    /// The broker to publish to (and that connectors use unless they override it).
    pub broker: Broker,
    /// `topic_prefix` with trailing slashes removed; empty when not set. It is already
    /// joined into every route topic and the lifecycle topic (see [`Route::topic`]).
    pub topic_prefix: String,
    /// The on-disk spool.
    pub spool: Spool,
    /// Event sources.
    pub sources: Sources,
    /// Routes in file order, disabled ones included (check [`Route::enabled`]).
    pub routes: Vec<Route>,
    /// Connectors in file order.
    pub connectors: Vec<Connector>,
}

impl Config {
    /// A matcher over [`Config::routes`]: `matches(event)` yields the indices of the
    /// enabled routes whose `match` list accepts the event name, in file order.
    pub fn route_set(&self) -> GlobSet {
        const NONE: &[EventGlob] = &[];
        GlobSet::new(self.routes.iter().map(|r| {
            if r.enabled {
                r.matches.as_slice()
            } else {
                NONE
            }
        }))
    }
}

/// MQTT protocol version: the engine's own type. In the config `5` (the default; the
/// client may fall back to 3.1.1 when refused), `3.1.1` (`311`, `4`) or `3.1` (`3`).
pub use crate::mqtt::codec::Protocol;

/// Session handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// Clean start: the broker forgets us at disconnect.
    Clean,
    /// Persistent: the broker keeps subscriptions and QoS ≥ 1 messages while we are away
    /// (MQTT 5 session expiry [`Broker::session_expiry`], 3.1.1 `clean_session = false`).
    Persistent,
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerTarget {
    /// `url: embedded` (the default): run the embedded broker and connect to it.
    Embedded(Embedded),
    /// A remote broker.
    Remote(BrokerUrl),
}

/// Settings of the embedded broker (`broker.embedded`).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// TCP listener; default `127.0.0.1:1883`.
    pub listen: SocketAddr,
    /// Optional WebSocket listener.
    pub ws_listen: Option<SocketAddr>,
    /// Required user name for clients, if set (with `password`/`password_file`).
    pub username: Option<String>,
    /// Required password for clients.
    pub password: Option<Secret>,
    /// Optional TLS listener (`broker.embedded.tls`), beside the plain one that mqlink
    /// itself uses on loopback.
    pub tls: Option<EmbeddedTls>,
    /// Let a listener reachable from other machines admit clients that nobody
    /// authenticated (see [`Embedded::unauthenticated_exposure`]). Default false.
    pub allow_anonymous: bool,
    /// QoS 1/2 messages kept per client session beyond its in-flight window (while it is
    /// away or slow); past this the oldest are dropped. Default 1,000,000.
    pub max_queued_messages: usize,
    /// The same bound in bytes per client: each message's memory footprint (payload,
    /// topic, properties and bookkeeping). Default 1 GiB.
    pub max_queued_bytes: usize,
    /// Directory keeping sessions, queued messages and retained messages across restarts;
    /// default none (in memory: a restart of the broker forgets them).
    pub persistence: Option<PathBuf>,
}

impl Default for Embedded {
    fn default() -> Self {
        Embedded {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            ws_listen: None,
            username: None,
            password: None,
            tls: None,
            allow_anonymous: false,
            max_queued_messages: Embedded::DEFAULT_MAX_QUEUED_MESSAGES,
            max_queued_bytes: Embedded::DEFAULT_MAX_QUEUED_BYTES,
            persistence: None,
        }
    }
}

impl Embedded {
    /// Default [`Embedded::max_queued_messages`].
    pub const DEFAULT_MAX_QUEUED_MESSAGES: usize = 1_000_000;
    /// Default [`Embedded::max_queued_bytes`].
    pub const DEFAULT_MAX_QUEUED_BYTES: usize = 1 << 30;

    /// The first listener that other machines can reach and that admits clients nobody
    /// authenticated: a non-loopback TCP or WebSocket listener without a password, or a
    /// non-loopback TLS listener with neither a password nor required client certificates.
    /// Returns its config key and address; `None` when there is none or `allow_anonymous`
    /// is set. Like Mosquitto 2, which refuses anonymous clients unless configured to,
    /// an open broker must be asked for.
    pub fn unauthenticated_exposure(&self) -> Option<(&'static str, SocketAddr)> {
        if self.allow_anonymous || self.username.is_some() {
            return None;
        }
        let exposed = |a: &SocketAddr| !a.ip().is_loopback();
        if exposed(&self.listen) {
            return Some(("listen", self.listen));
        }
        if let Some(ws) = self.ws_listen.filter(exposed) {
            return Some(("ws_listen", ws));
        }
        match &self.tls {
            Some(t) if exposed(&t.listen) && !t.require_client_cert => {
                Some(("tls.listen", t.listen))
            }
            _ => None,
        }
    }

    /// Why [`Embedded::unauthenticated_exposure`] is refused, and the ways out.
    pub fn exposure_message(addr: SocketAddr) -> String {
        format!(
            "{addr} is reachable from other machines and the embedded broker would admit \
             anyone: require a user name and password, or client certificates on the TLS \
             listener, or listen on a loopback address, or allow anonymous clients explicitly \
             (broker.embedded.allow_anonymous: true, mqlink broker --allow-anonymous)"
        )
    }
}

/// The embedded broker's TLS listener (`broker.embedded.tls`). Relative paths are resolved
/// against the config file's directory; the files exist at load.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedTls {
    /// TLS listener; default `127.0.0.1:8883`.
    pub listen: SocketAddr,
    /// PEM server certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key of the certificate.
    pub key_file: PathBuf,
    /// PEM CA bundle that client certificates are verified against.
    pub client_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate signed by `client_ca_file` (mutual TLS).
    /// Default: true when `client_ca_file` is given.
    pub require_client_cert: bool,
}

impl EmbeddedTls {
    /// The default TLS listener address.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8883);
}

pub use super::shared::{ClientAuth, Tls};

/// Birth / will / clean-shutdown messages (`broker.lifecycle`).
#[derive(Debug, Clone, PartialEq)]
pub struct Lifecycle {
    /// The topic, fully resolved: template with `{prefix}` / `{hostname}`, default
    /// `status`; joined under `topic_prefix` unless it uses `{prefix}` itself.
    pub topic: String,
    /// Payload published on every (re)connect; default `online`.
    pub online: String,
    /// Payload of the will and of the clean-shutdown message; default `offline`.
    pub offline: String,
    /// Retain both; default true.
    pub retain: bool,
    /// QoS of both; default 1.
    pub qos: QoS,
}

/// The broker section.
#[derive(Debug, Clone, PartialEq)]
pub struct Broker {
    /// Embedded or remote. Default embedded. `host` + `port` is an alternative to `url`
    /// (`mqtts://` when a `tls` section is present, else `mqtt://`).
    pub target: BrokerTarget,
    /// Client id with `{hostname}` rendered; default `mqlink-{hostname}`.
    pub client_id: String,
    /// User name (from `username`, else from the URL).
    pub username: Option<String>,
    /// Password (`password`, `password_file` with one trailing newline trimmed, or the URL).
    pub password: Option<Secret>,
    /// Default [`Protocol::V5`].
    pub protocol: Protocol,
    /// Default 60s; at most 65535s.
    pub keepalive: Duration,
    /// Default [`Session::Clean`].
    pub session: Session,
    /// MQTT 5 session expiry for persistent sessions; default 1 day with
    /// `session: persistent`, `None` with `clean`.
    pub session_expiry: Option<Duration>,
    /// TLS settings; present only when given.
    pub tls: Option<Tls>,
    /// Reconnect backoff; default 1s..60s.
    pub reconnect: Backoff,
    /// Largest packet we send or accept; default 16MiB, at most 256MiB-1 (MQTT's limit).
    pub max_packet_size: u32,
    /// Unacknowledged QoS ≥ 1 publishes in flight; default 20 (Mosquitto's per-client
    /// default), 1..=65535.
    pub max_inflight: u16,
    /// TCP + TLS + CONNACK deadline; default 10s.
    pub connect_timeout: Duration,
    /// Birth / will messages; `None` unless `lifecycle` is given.
    pub lifecycle: Option<Lifecycle>,
}

/// MQTT quality of service: the engine's own type, so config and wire cannot drift.
pub use crate::mqtt::codec::QoS;

/// What the spool does when it reaches `max_bytes` (`reject` answers HTTP 503, `block`
/// makes producers wait, `drop_oldest` discards the oldest records, each counted and logged),
/// and when data reaches the disk (`always`: fsync before accepting, group-committed;
/// `interval`: at most every `fsync_interval`; `never`: the OS decides). The spool's own
/// types, so the config and the spool cannot drift apart.
pub use mqlink_spool::{FsyncPolicy as Fsync, OnCorruption, OnFull};

/// The spool section.
#[derive(Debug, Clone, PartialEq)]
pub struct Spool {
    /// Directory; default `./mqlink-data` (relative to the working directory).
    pub dir: PathBuf,
    /// Size bound; default 1GiB, at least 1MiB.
    pub max_bytes: u64,
    /// Default [`OnFull::Reject`].
    pub on_full: OnFull,
    /// Default [`Fsync::Always`].
    pub fsync: Fsync,
    /// What recovery does with damaged records followed by intact ones: refuse to start
    /// naming the file and byte range ([`OnCorruption::Fail`], default), or skip only the
    /// damaged records, report and count them ([`OnCorruption::Discard`]).
    pub on_corruption: OnCorruption,
    /// How long messages may wait for the broker's verdict on a live connection, with no
    /// verdict at all coming back, before `/readyz` reports the publisher stalled; default
    /// 60s.
    pub stall_timeout: Duration,
}

/// The HTTP ingest source.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSource {
    /// Default `127.0.0.1:8080`; a non-loopback address requires `tokens`.
    pub listen: SocketAddr,
    /// Accepted bearer tokens; empty = no authentication (loopback only).
    pub tokens: Vec<Secret>,
    /// Request body limit; default 1MiB.
    pub max_body: u64,
    /// Whole-request deadline; default 30s.
    pub request_timeout: Duration,
    /// Connections served at once; default 1024. When all are taken the oldest idle one
    /// is dropped for a new one.
    pub max_connections: usize,
    /// Longest time a client may take to send its request headers; default 10s (never
    /// longer than `request_timeout`).
    pub header_timeout: Duration,
}

impl HttpSource {
    /// Default [`HttpSource::max_connections`] (STYLE rule 10). When all are taken, the
    /// oldest *idle* connection (no request in progress: still sending headers, or
    /// keep-alive) is dropped to make room, so a flood of slow or silent clients cannot lock
    /// out a good one; when every connection is busy with a request, accepting waits.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
    /// Default [`HttpSource::header_timeout`].
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
}

/// A polled HTTP endpoint.
#[derive(Clone, PartialEq)]
pub struct Poll {
    /// `http://` or `https://` URL.
    pub url: url::Url,
    /// Interval; must be non-zero.
    pub every: Duration,
    /// Event name given to what the poll produces.
    pub event: String,
    /// Static fields merged into each event.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// jq program turning one response into many events (run as an `arraymap`).
    pub split: Option<Program>,
    /// Request headers, in file order (values may be credentials).
    pub headers: Vec<(String, Secret)>,
    /// Request timeout; default 10s.
    pub timeout: Duration,
}

crate::config::secret::debug_redacting_url!(Poll {
    every,
    event,
    fields,
    split,
    headers,
    timeout
});

/// The sources section.
#[derive(Debug, Clone, PartialEq)]
pub struct Sources {
    /// HTTP API; on by default, `None` when `enabled: false`.
    pub http: Option<HttpSource>,
    /// Read JSON lines from stdin; default false.
    pub stdin: bool,
    /// Polled endpoints; default none.
    pub poll: Vec<Poll>,
}

/// Timestamp encoding for [`Payload::timestamp_field`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampFormat {
    /// Seconds since the epoch (integer); the default.
    Unix,
    /// Milliseconds since the epoch.
    UnixMs,
    /// RFC 3339 text.
    Rfc3339,
}

/// Payload shaping of a route.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    /// Add the event name under this key (OctoPrint's `_event`); default none.
    pub event_field: Option<String>,
    /// Add the received time under this key (OctoPrint's `_timestamp`); default none.
    pub timestamp_field: Option<(String, TimestampFormat)>,
    /// jq program applied to the payload (run as a `map`); default none.
    pub transform: Option<Program>,
}

/// MQTT 5 properties of a route.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    /// Content type; default none.
    pub content_type: Option<String>,
    /// Message expiry; default none (never expires). Whole seconds, ≤ u32::MAX.
    pub message_expiry: Option<Duration>,
    /// User properties in file order; values are templates rendered per event with
    /// [`Template::render_text`].
    pub user: Vec<(String, Template)>,
}

/// A route: which events go to which topic, how.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `name`, default `route-<index>` (0-based).
    pub name: String,
    /// Event-name globs; the route matches when any does.
    pub matches: Vec<EventGlob>,
    /// The topic template with `topic_prefix` joined in front (unless the template uses
    /// `{prefix}`) and `{hostname}` / `{prefix}` resolved: render it per event.
    pub topic: Template,
    /// Default QoS 1.
    pub qos: QoS,
    /// Default false.
    pub retain: bool,
    /// Default true.
    pub enabled: bool,
    /// `/` in substituted values: default keep.
    pub slash: SlashPolicy,
    /// Payload shaping; default: the event's fields as they are.
    pub payload: Payload,
    /// MQTT 5 properties; default none.
    pub properties: Properties,
}

/// Record format handed to transforms and sinks (the record module's own type).
pub use crate::record::RecordFormat;

/// One jq transform step, compiled during validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    /// Keep records where the expression is true.
    Filter(Program),
    /// Replace the record with the expression's value.
    Map(Program),
    /// Expand one record into the elements of the array the expression yields.
    ArrayMap(Program),
}

/// Where a connector delivers: one variant per sink, each with its own config struct
/// (registered in the `sink` module).
pub use crate::sink::SinkConfig as Sink;
/// Each sink's config struct (`RedisConfig`, `NatsConfig`, …), one per [`Sink`] variant.
pub use crate::sink::configs::*;

/// A connector: subscribe → transforms → sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Connector {
    /// Unique name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Filters, `$share/...` allowed; at least one.
    pub subscribe: Vec<TopicFilter>,
    /// Subscription QoS; default 1.
    pub qos: QoS,
    /// Default [`Session::Persistent`] so nothing is lost while mqlink is down.
    pub session: Session,
    /// MQTT 5 session expiry: with a persistent session [`Broker::session_expiry`], or
    /// 1 day when that is not set; `None` with a clean one.
    pub session_expiry: Option<Duration>,
    /// Default `mqlink-{hostname}-{name}`, `{hostname}` rendered.
    pub client_id: String,
    /// A different broker than `broker`; default none (use the top-level broker).
    pub broker: Option<BrokerUrl>,
    /// Default [`RecordFormat::Json`].
    pub format: RecordFormat,
    /// Transforms in order; default none.
    pub transforms: Vec<Transform>,
    /// JSON-lines file receiving records a transform or the sink refused; default
    /// `dead-letter-{name}.jsonl` in the spool directory.
    pub dead_letter: PathBuf,
    /// Where records go.
    pub sink: Sink,
}
