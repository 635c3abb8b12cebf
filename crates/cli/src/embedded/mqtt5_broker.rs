//! The embedded broker proper: `mqtt5`'s broker with mqlink's settings, stoppable through
//! its shutdown handle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::{Context, anyhow};
use mqtt5::broker::auth::PasswordAuthProvider;
use mqtt5::broker::config::{
    AuthConfig, BrokerConfig, StorageBackend as StorageBackendType, StorageConfig, TlsConfig,
    WebSocketConfig,
};
use mqtt5::broker::{BrokerShutdownHandle, MqttBroker};
use tokio::task::JoinHandle;

use super::EmbeddedOptions;
use crate::exit::usage;
use mqlink::config::Embedded;

/// Topic aliases a client may set per connection (announced in CONNACK).
const TOPIC_ALIAS_MAXIMUM: u16 = 10;

pub struct EmbeddedBroker {
    handle: BrokerShutdownHandle,
    task: JoinHandle<()>,
    queue_dropped: Option<Arc<AtomicU64>>,
    #[allow(dead_code)]
    pub addr: SocketAddr,
    #[allow(dead_code)]
    pub ws_addr: Option<SocketAddr>,
    #[allow(dead_code)]
    pub tls_addr: Option<SocketAddr>,
}

fn check_free(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(anyhow!(
            "embedded broker cannot listen on {addr} ({what}): the address is already in use. \
             Another MQTT broker (Mosquitto?) may be running there: either point mqlink at it \
             (broker.url: mqtt://{addr}) or give the embedded broker another address \
             (`mqlink run --embedded-listen 127.0.0.1:1884`, `mqlink broker --listen 127.0.0.1:1884`, \
             or broker.embedded.listen in the config)"
        )),
        Err(e) => Err(anyhow!(
            "embedded broker cannot listen on {addr} ({what}): {e}"
        )),
    }
}

impl EmbeddedBroker {
    pub async fn start(opts: &EmbeddedOptions) -> anyhow::Result<EmbeddedBroker> {
        let e = &opts.embedded;
        if let Some((_, addr)) = e.unauthenticated_exposure() {
            return Err(usage(Embedded::exposure_message(addr)));
        }
        check_free(e.listen, "MQTT")?;
        if let Some(ws) = e.ws_listen {
            check_free(ws, "WebSocket")?;
        }
        if let Some(tls) = &e.tls {
            check_free(tls.listen, "TLS")?;
            // mqtt5 names no file when one is bad; check them here so the error does.
            mqlink::mqtt::tls::check_server_files(
                &tls.cert_file,
                &tls.key_file,
                tls.client_ca_file.as_deref(),
            )
            .map_err(|e| usage(format!("embedded broker TLS listener: {e}")))?;
        }
        // mqtt5's `enable_persistence` is not "write to disk": with it off the broker has no
        // session store at all, so it grants no session expiry, answers session present = 0
        // and queues nothing for offline clients. The store stays on: in memory, or in
        // files under `persistence`.
        let (backend, base_dir) = match &e.persistence {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!(
                        "broker.embedded.persistence: cannot create {}",
                        dir.display()
                    )
                })?;
                (StorageBackendType::File, dir.clone())
            }
            None => (
                StorageBackendType::Memory,
                StorageConfig::default().base_dir,
            ),
        };
        let storage = StorageConfig {
            enable_persistence: true,
            backend,
            base_dir,
            max_queued_messages_per_client: e.max_queued_messages,
            max_queued_bytes_per_client: e.max_queued_bytes,
            ..StorageConfig::default()
        };
        let mut config = BrokerConfig::default()
            .with_bind_address(e.listen)
            .with_max_packet_size(opts.max_packet_size)
            .with_storage(storage)
            .with_sys_topics_enabled(false)
            // Forward messages as published: mqtt5 would add the publisher's client id and
            // user name as user properties (vendor/mqtt5/PATCHES.md), altering every MQTT 5
            // message and telling every subscriber who published it.
            .with_inject_sender_properties(false);
        // Each alias holds a topic for the connection's life: bound them as Mosquitto does
        // (its `max_topic_alias` default).
        config.topic_alias_maximum = TOPIC_ALIAS_MAXIMUM;
        if let Some(ws) = e.ws_listen {
            config =
                config.with_websocket(WebSocketConfig::default().with_bind_addresses(vec![ws]));
        }
        if let Some(tls) = &e.tls {
            let mut t = TlsConfig::new(tls.cert_file.clone(), tls.key_file.clone())
                .with_bind_address(tls.listen)
                .with_require_client_cert(tls.require_client_cert);
            if let Some(ca) = &tls.client_ca_file {
                t = t.with_ca_file(ca.clone());
            }
            config = config.with_tls(t);
        }
        // mqtt5 reads users from a password file (`user:argon2-hash` lines): write one,
        // private to us, for the moment the broker loads it.
        let password_file = match (&e.username, &e.password) {
            (Some(user), Some(password)) => {
                let mut users = vec![(user.as_str(), password.expose())];
                if let Some(own) = &opts.own_login {
                    users.push((own.user.as_str(), own.password.expose()));
                }
                let path = write_password_file(&users)?;
                config = config.with_auth(
                    AuthConfig::new()
                        .with_password_file(path.clone())
                        .with_allow_anonymous(false),
                );
                Some(path)
            }
            _ => None,
        };
        let started = MqttBroker::with_config(config).await;
        if let Some(path) = &password_file {
            let _ = std::fs::remove_file(path);
        }
        let mut broker =
            started.with_context(|| format!("embedded broker cannot start on {}", e.listen))?;
        let addr = broker.local_addr().unwrap_or(e.listen);
        let ws_addr = broker.ws_local_addr();
        let tls_addr = broker.tls_local_addr();
        // mqtt5 only warns when a TLS listener cannot bind and goes on without it; a broker
        // asked for TLS must not quietly serve plain TCP alone.
        if let (Some(tls), None) = (&e.tls, tls_addr) {
            return Err(anyhow!(
                "embedded broker cannot listen for TLS on {}",
                tls.listen
            ));
        }
        let handle = broker.shutdown_handle();
        let queue_dropped = broker.storage().map(|s| s.queue_dropped_counter());
        let task = tokio::spawn(async move {
            if let Err(e) = broker.run().await {
                tracing::error!(error = %e, "embedded broker stopped with an error");
            }
        });
        tracing::info!(
            %addr,
            ws = ?ws_addr,
            tls = ?tls_addr,
            client_certs = e.tls.as_ref().is_some_and(|t| t.require_client_cert),
            auth = e.username.is_some(),
            "embedded broker listening (MQTT 3.1, 3.1.1 and 5)"
        );
        Ok(EmbeddedBroker {
            handle,
            task,
            queue_dropped,
            addr,
            ws_addr,
            tls_addr,
        })
    }

    /// Count of messages dropped from full client queues (the oldest go first), for metrics.
    pub fn queue_dropped(&self) -> Option<Arc<AtomicU64>> {
        self.queue_dropped.clone()
    }

    /// Ask the broker to stop and wait until it has.
    pub async fn stop(self) {
        self.handle.shutdown();
        let _ = self.task.await;
    }

    /// Resolves if the broker task ends on its own (it failed).
    pub async fn failed(&mut self) {
        let _ = (&mut self.task).await;
    }
}

/// A fresh 0600 file in the temp directory holding `user:argon2(password)` lines.
fn write_password_file(users: &[(&str, &str)]) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut lines = String::new();
    for (user, password) in users {
        if user.is_empty() || user.contains([':', '\n', '\r']) {
            return Err(anyhow!(
                "broker.embedded.username must be non-empty without ':' or line breaks"
            ));
        }
        let hash = PasswordAuthProvider::hash_password(password)
            .map_err(|e| anyhow!("cannot hash the embedded broker password: {e}"))?;
        lines.push_str(&format!("{user}:{hash}\n"));
    }
    let path = std::env::temp_dir().join(format!(
        "mqlink-embedded-{}-{:016x}.passwd",
        std::process::id(),
        rand_u64()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(lines.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
