//! The embedded broker: `mqtt5`'s broker, configured for mqlink and stoppable.
//!
//! Chosen over rumqttd because it serves MQTT 3.1.1 and 5 on one listener (rumqttd needs a
//! listener per protocol), speaks WebSocket, and has a shutdown handle, so it stops with
//! our shutdown tree instead of living in a thread nobody can stop. Kept after issue 17
//! (sessions lost, messages altered) because the causes were mqlink's configuration (the
//! session store switched off) and three small defects fixed in a vendored copy
//! (`vendor/mqtt5/PATCHES.md`: injected sender properties, no DISCONNECT for a bad topic
//! alias, uncounted queue drops) plus MQTT 3.1 support, rather than its design: it bounds
//! each session's queue by messages and bytes, and the side-by-side tests against Mosquitto
//! (`tests/broker_conformance.rs`) pass.
//!
//! Sessions, queued and retained messages live in memory, or with
//! `broker.embedded.persistence` in files that survive a restart. Beside the plain
//! listener (which `mqlink run` itself connects to on loopback) it can serve TLS, with or
//! without client certificates, and require a user name and password.
//!
//! The broker itself (`mqtt5`) is the cargo feature `embedded-broker` (on by default); a
//! build without it keeps the options and refuses to start one, with a usage error.

#[cfg(feature = "embedded-broker")]
mod mqtt5_broker;
#[cfg(feature = "embedded-broker")]
pub use mqtt5_broker::EmbeddedBroker;

#[cfg(not(feature = "embedded-broker"))]
mod absent;
#[cfg(not(feature = "embedded-broker"))]
pub use absent::EmbeddedBroker;

use anyhow::anyhow;
use mqlink::config::{BrokerTarget, Config, Embedded, Secret};

/// How the embedded broker is set up: listeners, logins, TLS, packet size.
// Read only by the broker itself, absent without the `embedded-broker` feature.
#[cfg_attr(not(feature = "embedded-broker"), allow(dead_code))]
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Listeners, credentials, TLS: `broker.embedded`, or the `mqlink broker` flags.
    pub embedded: Embedded,
    pub max_packet_size: usize,
    /// mqlink's own login, accepted beside `embedded.username` (see [`OwnLogin`]).
    pub own_login: Option<OwnLogin>,
}

/// mqlink's own login to its embedded broker when clients must log in: a user name and
/// password drawn at random for this process, known to nobody else.
///
/// The broker locks a user name out for 5 minutes after 5 failed logins (mqtt5's brute-force
/// protection). Were mqlink to log in as the configured user, anyone guessing that user's
/// password could keep mqlink's own connections from reconnecting; nobody can guess at a
/// name they do not know.
#[derive(Debug, Clone)]
pub struct OwnLogin {
    user: String,
    password: Secret,
}

impl OwnLogin {
    /// A fresh login when `config` runs the embedded broker with a password.
    pub fn for_config(config: &Config) -> anyhow::Result<Option<OwnLogin>> {
        match &config.broker.target {
            BrokerTarget::Embedded(e) if e.username.is_some() => {
                let mut bytes = [0u8; 24];
                rustls::crypto::ring::default_provider()
                    .secure_random
                    .fill(&mut bytes)
                    .map_err(|_| {
                        anyhow!("no secure random numbers for the embedded broker login")
                    })?;
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                Ok(Some(OwnLogin {
                    user: format!("mqlink-self-{}", &hex[..16]),
                    password: Secret::new(&hex[16..]),
                }))
            }
            _ => Ok(None),
        }
    }

    /// Make the daemon's own connections (publisher, connectors) log in as this user.
    pub fn apply(&self, config: &mut Config) {
        if let BrokerTarget::Embedded(e) = &mut config.broker.target {
            e.username = Some(self.user.clone());
            e.password = Some(self.password.clone());
        }
    }
}
