//! [`MqttOptions`]: everything needed to connect and keep a session, with the engine's
//! defaults, and the stable default client id.

use std::sync::Arc;
use std::time::Duration;

use super::handle::ClientStats;
use super::observer::PacketObserver;
use crate::mqtt::codec::{ConnectExtras, Disconnect, Protocol, Publish, SubscribeOptions, Will};
use crate::mqtt::tls::TlsOptions;
use crate::mqtt::transport::SocketOptions;
use crate::mqtt::url::BrokerUrl;

/// Everything needed to connect and keep a session.
#[derive(Clone)]
pub struct MqttOptions {
    /// Broker address.
    pub url: BrokerUrl,
    /// Client identifier. Stable by default (`mqlink-{hostname}`), so the broker keeps
    /// sessions across restarts and devices do not multiply.
    pub client_id: String,
    /// User name.
    pub username: Option<String>,
    /// Password; never logged.
    pub password: Option<String>,
    /// Protocol to try first.
    pub protocol: Protocol,
    /// With `protocol` 5: fall back to 3.1.1 when the broker refuses 5.
    pub fallback_to_311: bool,
    /// Keepalive interval (0 disables).
    pub keep_alive: Duration,
    /// Start a new session (true) or resume the broker's (false).
    pub clean_start: bool,
    /// With `clean_start` false: may this process's first connect resume a session an
    /// earlier process left? True for subscribers (the messages queued meanwhile are the
    /// point). False for a publisher of QoS 1/2 messages: a new process does not know
    /// which packet ids the broker still holds (a stored QoS 2 message awaiting PUBREL), so
    /// it starts a new session once and resumes on every reconnect after that.
    pub resume_at_start: bool,
    /// v5 session expiry for persistent sessions.
    pub session_expiry: Option<Duration>,
    /// Last will.
    pub will: Option<Will>,
    /// Published on every successful (re)connect (the "birth" message).
    pub birth: Option<Publish>,
    /// TLS settings (used for mqtts/wss).
    pub tls: TlsOptions,
    /// How the socket is opened: TCP by default; Unix, bound or through a SOCKS5 proxy.
    pub socket: SocketOptions,
    /// Backoff floor.
    pub reconnect_min: Duration,
    /// Backoff ceiling.
    pub reconnect_max: Duration,
    /// Largest packet we accept (and announce on v5).
    pub max_packet_size: u32,
    /// Cap on unacknowledged QoS 1/2 messages (the broker's Receive Maximum may lower it).
    pub max_inflight: u16,
    /// Timeout for TCP + TLS + WebSocket + CONNACK.
    pub connect_timeout: Duration,
    /// Commands buffered between handles and the loop.
    pub queue_capacity: usize,
    /// Incoming messages buffered for the application.
    pub delivery_capacity: usize,
    /// MQTT 5 Receive Maximum sent in CONNECT: how many QoS 1/2 messages the broker may
    /// have unacknowledged towards us (None: the protocol's default, 65535).
    pub receive_maximum: Option<u16>,
    /// MQTT 5 CONNECT properties asked for by the user (mqlink pub/sub's `-D CONNECT`).
    pub connect_extras: ConnectExtras,
    /// MQTT 5 options and properties sent with every SUBSCRIBE (mqlink sub's
    /// `--retain-as-published` and `-D SUBSCRIBE ...`).
    pub subscribe_options: SubscribeOptions,
    /// Told of every packet sent and received, in order (mqlink pub/sub's `-d` trace).
    pub packet_observer: Option<PacketObserver>,
    /// The DISCONNECT sent when the client ends cleanly: its MQTT 5 properties (mqlink
    /// pub/sub's `-D DISCONNECT ...`); 3.x sends a bare DISCONNECT.
    pub disconnect: Disconnect,
    /// Where the engine counts what it did (metrics, tests); every client built from a
    /// clone of these options counts into the same.
    pub stats: Arc<ClientStats>,
}

impl std::fmt::Debug for MqttOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttOptions")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("protocol", &self.protocol)
            .field("clean_start", &self.clean_start)
            .field("max_inflight", &self.max_inflight)
            .finish_non_exhaustive()
    }
}

impl MqttOptions {
    /// The protocol tried first unless set (falling back to 3.1.1 on an explicit refusal).
    pub const DEFAULT_PROTOCOL: Protocol = Protocol::V5;
    /// Keepalive unless set.
    pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(60);
    /// Reconnect backoff floor unless set.
    pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_secs(1);
    /// Reconnect backoff ceiling unless set.
    pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(60);
    /// Largest packet unless set: 16 MiB.
    pub const DEFAULT_MAX_PACKET_SIZE: u32 = 16 * 1024 * 1024;
    /// Unacknowledged QoS 1/2 messages unless set: Mosquitto's per-client default.
    pub const DEFAULT_MAX_INFLIGHT: u16 = 20;
    /// Deadline for TCP + TLS + WebSocket + CONNACK unless set.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Defaults for `url`: client id `mqlink-{hostname}`, MQTT 5 with fallback, keepalive
    /// 60 s, clean start, 16 MiB packets, 20 in flight (Mosquitto's per-client default).
    pub fn new(url: BrokerUrl) -> MqttOptions {
        let username = url.username.clone();
        let password = url.password.clone();
        MqttOptions {
            url,
            client_id: default_client_id(),
            username,
            password,
            protocol: MqttOptions::DEFAULT_PROTOCOL,
            fallback_to_311: true,
            keep_alive: MqttOptions::DEFAULT_KEEP_ALIVE,
            clean_start: true,
            resume_at_start: true,
            session_expiry: None,
            will: None,
            birth: None,
            tls: TlsOptions::default(),
            socket: SocketOptions::default(),
            reconnect_min: MqttOptions::DEFAULT_RECONNECT_MIN,
            reconnect_max: MqttOptions::DEFAULT_RECONNECT_MAX,
            max_packet_size: MqttOptions::DEFAULT_MAX_PACKET_SIZE,
            max_inflight: MqttOptions::DEFAULT_MAX_INFLIGHT,
            connect_timeout: MqttOptions::DEFAULT_CONNECT_TIMEOUT,
            queue_capacity: 1024,
            delivery_capacity: 1024,
            receive_maximum: None,
            connect_extras: ConnectExtras::default(),
            subscribe_options: SubscribeOptions::default(),
            packet_observer: None,
            disconnect: Disconnect::default(),
            stats: Arc::default(),
        }
    }
}

/// `mqlink-{hostname}`: stable across restarts, distinct across machines.
pub fn default_client_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("mqlink-{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_client_id_is_stable() {
        assert_eq!(default_client_id(), default_client_id());
        assert!(default_client_id().starts_with("mqlink-"));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let mut o = MqttOptions::new(BrokerUrl::parse("mqtt://u:hunter2@h").unwrap());
        o.password = Some("hunter2".into());
        assert!(!format!("{o:?}").contains("hunter2"));
    }
}
