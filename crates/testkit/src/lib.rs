//! Test support for mqlink: real peers, started privately per test.
//!
//! Every test that needs a broker starts its own: [`Mosquitto`] and [`Nats`] run the real
//! `mosquitto` and `nats-server` binaries (and [`Redis`] and [`Postgres`] the sinks'
//! `redis-server` and PostgreSQL, with their data in temporary directories) with a generated configuration in a temporary
//! directory, listening on ports picked by [`free_port`], so tests run in parallel and never
//! touch a system-wide broker. [`TlsMaterial`] writes a throwaway CA, server and client
//! certificates for the TLS listener. [`MosquittoSub`] and [`mosquitto_pub`] drive the
//! reference MQTT command-line clients against those brokers; `MosquittoSub` collects
//! output lines on a background thread and wakes waiters through a condition variable.
//!
//! Data flows: a test builds [`MosquittoOptions`] → [`Mosquitto::start`] writes
//! `mosquitto.conf`, spawns the broker and waits until every listener accepts → the test
//! points mqlink and/or the CLI clients at [`Mosquitto::url`] (or `ws_url`/`tls_url`) →
//! dropping the handles kills the children and removes the temporary directories.
//!
//! For the interop suite, the same [`MqttBroker`] interface fronts six brokers, each started
//! privately with [`PeerOptions`] (TLS listener, publish ACL) in its own configuration
//! language: [`MqlinkBroker`] (`mqlink broker`), [`Mosquitto`], [`NatsMqtt`] (NATS's MQTT
//! listener), [`RabbitMq`] (a private node with the MQTT plugin), [`Amqtt`] and [`Aedes`].
//! The non-Mosquitto launchers share one process recipe (`server.rs`): spawn in a process
//! group, wait for a log line and the ports, stop/kill/restart on the same ports and data.
//!
//! A missing peer binary is a test failure, never a skip: [`require_binary`] panics naming
//! the binary and the Debian package that provides it (`scripts/test.sh` installs them).
//!
//! ```
//! use std::time::Duration;
//! use mqlink_testkit::{Mosquitto, MosquittoOptions, MosquittoSub, mosquitto_pub};
//!
//! let broker = Mosquitto::start(MosquittoOptions::default());
//! let sub = MosquittoSub::start_ready(&broker.client_args(), &["-t", "demo/#", "-v"], "demo/probe");
//! let mut args = broker.client_args();
//! args.extend(["-t", "demo/1", "-m", "hi"].map(String::from));
//! assert!(mosquitto_pub(&args).status.success());
//! assert_eq!(sub.wait_for_lines(1, Duration::from_secs(10)), ["demo/1 hi"]);
//! ```
//!
//! [`Socks5Server`] is a tiny in-process SOCKS5 proxy that records what it was asked to
//! connect to, for clients' `--proxy`.
//!
//! Everything here is synchronous and panics on failure with the peer's log attached:
//! these are test helpers, and a panic with context is the most useful failure report.

mod aedes;
mod amqtt;
mod clients;
mod mosquitto;
mod mqlink_broker;
mod nats;
mod nats_mqtt;
mod peers;
mod postgres;
mod process;
mod rabbitmq;
mod redis;
mod server;
mod socks5;
mod tls;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use aedes::Aedes;
pub use amqtt::Amqtt;
pub use clients::{MosquittoSub, mosquitto_pub, mosquitto_pub_with_stdin};
pub use mosquitto::{Mosquitto, MosquittoOptions};
pub use mqlink_broker::MqlinkBroker;
pub use nats::Nats;
pub use nats_mqtt::NatsMqtt;
pub use peers::{ALLOWED_PREFIX, DENIED_PREFIX, MqttBroker, PeerOptions};
pub use postgres::Postgres;
pub use rabbitmq::RabbitMq;
pub use redis::Redis;
pub use socks5::{Socks5Connect, Socks5Server};
pub use tls::{CLIENT_COMMON_NAME, TlsMaterial};

/// How long a peer may take to start accepting connections before the test fails.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// Binds `127.0.0.1:0`, reads the port the kernel chose and releases it. Another process
/// can take the port before the caller binds it; [`Mosquitto::start`] and [`Nats::start`]
/// detect "address in use" at startup and retry on fresh ports.
///
/// # Panics
/// If no socket can be bound on 127.0.0.1.
#[must_use]
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a bound socket")
        .port()
}

/// Directories searched after `PATH`: Debian installs `mosquitto` and `nats-server` in
/// `/usr/sbin`, which is not on an ordinary user's `PATH`.
const SBIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Finds the executable `name` on `PATH` (then in the sbin directories) and returns its path.
///
/// # Panics
/// If it is not found, with a message naming the binary and the Debian package to install,
/// e.g. `mosquitto not found on PATH: install Debian package 'mosquitto' (scripts/test.sh
/// does this)`. Tests must fail loudly rather than skip when a peer is missing.
#[must_use]
pub fn require_binary(name: &str, debian_package: &str) -> PathBuf {
    find_binary(name).unwrap_or_else(|| {
        panic!(
            "{name} not found on PATH: install Debian package '{debian_package}' \
             (scripts/test.sh does this)"
        )
    })
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Polls `condition` until it returns true or `deadline` passes; returns whether it held.
///
/// Backs off exponentially from 1 ms to 50 ms between calls. This is for polling
/// **external state that offers no event to wait on** (a port starting to accept, a file
/// appearing, a child process exiting). Where an event exists — a line from
/// [`MosquittoSub`], a message on a channel — wait on that event instead.
#[must_use]
pub fn wait_until(deadline: Instant, mut condition: impl FnMut() -> bool) -> bool {
    let mut pause = Duration::from_millis(1);
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
