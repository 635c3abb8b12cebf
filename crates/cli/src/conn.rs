//! Connection flags shared by `pub`, `sub` and `bench`, turned into [`MqttOptions`].

use std::path::PathBuf;
use std::time::Duration;

use mqlink::mqtt::client::MqttOptions;
use mqlink::mqtt::codec::{Protocol, QoS, Will};
use mqlink::mqtt::tls::TlsOptions;
use mqlink::mqtt::url::BrokerUrl;

use crate::exit::usage;

#[derive(clap::Args, Debug, Clone)]
pub struct ConnArgs {
    /// Broker URL: mqtt:// tcp:// mqtts:// ssl:// tls:// ws:// wss:// (user:pass@ allowed).
    #[arg(
        short = 'L',
        long,
        env = "MQLINK_URL",
        default_value = "mqtt://127.0.0.1:1883"
    )]
    pub url: String,
    /// Broker host (overrides the URL's host).
    #[arg(long)]
    pub host: Option<String>,
    /// Broker port (overrides the URL's port).
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// User name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password (prefer the MQLINK_PASSWORD environment variable: arguments are visible to other users).
    #[arg(short = 'P', long, env = "MQLINK_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// CA certificates (PEM) to verify the broker; the system roots when absent.
    #[arg(long)]
    pub cafile: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Do not verify the broker's certificate (dangerous).
    #[arg(long)]
    pub insecure: bool,
    /// TLS server name to verify and send (SNI), instead of the URL's host.
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// Protocol version: 5 (falls back to 3.1.1), 311, 31 (also mqttv5, mqttv311, mqttv31).
    #[arg(short = 'V', long = "protocol-version", default_value = "5")]
    pub protocol: String,
    /// Client id (default: mqlink-{hostname}-{pid} for these tools).
    #[arg(short = 'i', long)]
    pub id: Option<String>,
    /// Keepalive in seconds.
    #[arg(short = 'k', long, default_value_t = 60)]
    pub keepalive: u16,
    /// Will topic: published by the broker if this client disappears without DISCONNECT.
    #[arg(long)]
    pub will_topic: Option<String>,
    /// Will payload.
    #[arg(long, default_value = "")]
    pub will_payload: String,
    /// Will QoS.
    #[arg(long, default_value_t = 0)]
    pub will_qos: u8,
    /// Retain the will.
    #[arg(long)]
    pub will_retain: bool,
    /// Most QoS 1/2 messages unacknowledged at once.
    #[arg(long, default_value_t = 20)]
    pub max_inflight: u16,
}

pub fn parse_protocol(s: &str) -> anyhow::Result<(Protocol, bool)> {
    Ok(match s {
        "5" | "mqttv5" | "v5" => (Protocol::V5, true),
        "311" | "3.1.1" | "mqttv311" | "4" => (Protocol::V311, false),
        "31" | "3.1" | "mqttv31" | "3" => (Protocol::V31, false),
        other => {
            return Err(usage(format!(
                "unknown protocol version '{other}' (use 5, 311 or 31)"
            )));
        }
    })
}

impl ConnArgs {
    pub fn options(&self, tool: &str) -> anyhow::Result<MqttOptions> {
        let mut url = BrokerUrl::parse(&self.url).map_err(|e| usage(e.to_string()))?;
        if let Some(h) = &self.host {
            url.host = h.clone();
        }
        if let Some(p) = self.port {
            url.port = p;
        }
        let mut o = MqttOptions::new(url);
        let (protocol, fallback) = parse_protocol(&self.protocol)?;
        o.protocol = protocol;
        o.fallback_to_311 = fallback;
        o.client_id = match &self.id {
            Some(id) => id.clone(),
            // The tools are often run side by side; a per-process id keeps them from
            // taking each other's sessions. The daemon uses the stable id.
            None => format!(
                "{}-{tool}-{}",
                mqlink::mqtt::client::default_client_id(),
                std::process::id()
            ),
        };
        if self.username.is_some() {
            o.username = self.username.clone();
        }
        if self.password.is_some() {
            o.password = self.password.clone();
        }
        o.keep_alive = Duration::from_secs(u64::from(self.keepalive));
        o.max_inflight = self.max_inflight.max(1);
        o.tls = TlsOptions {
            ca_file: self.cafile.clone(),
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            alpn: Vec::new(),
            insecure_skip_verify: self.insecure,
            server_name: self.tls_server_name.clone(),
            ..TlsOptions::default()
        };
        if let Some(topic) = &self.will_topic {
            let qos =
                QoS::from_u8(self.will_qos).ok_or_else(|| usage("--will-qos must be 0, 1 or 2"))?;
            o.will = Some(Will {
                topic: topic.clone(),
                payload: bytes::Bytes::from(self.will_payload.clone().into_bytes()),
                qos,
                retain: self.will_retain,
            });
        }
        if (self.cert.is_some()) != (self.key.is_some()) {
            return Err(usage("--cert and --key go together"));
        }
        Ok(o)
    }
}
