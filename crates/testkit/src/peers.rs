//! What the interop suite needs of any broker: [`MqttBroker`], and [`PeerOptions`], the
//! few features every launcher can switch on the same way.

use std::path::Path;
use std::time::Duration;

use crate::server::{Recipe, Server, start_with_retries};
use crate::{TlsMaterial, free_port};

/// The prefix the interop suite publishes under; [`PeerOptions::deny_publish`] allows it.
pub const ALLOWED_PREFIX: &str = "interop";
/// The prefix [`PeerOptions::deny_publish`] refuses publishes to.
pub const DENIED_PREFIX: &str = "denied";

/// Features a launcher enables in its broker's own configuration language.
#[derive(Debug, Clone, Default)]
pub struct PeerOptions {
    /// A TLS listener with this material's server certificate (names `localhost`,
    /// `127.0.0.1`), beside the plain one where the broker allows both.
    pub tls: Option<TlsMaterial>,
    /// The broker's own access control: publishing to `denied/#` is refused, publishing
    /// under `interop/` allowed. (amqtt's publish ACL is an allow-list, so there only
    /// `interop/#` may be published to.)
    pub deny_publish: bool,
}

/// A running private broker the interop suite can drive, whatever its implementation.
pub trait MqttBroker: Send {
    /// Short name used in the interop table ("mosquitto", "nats", ...).
    fn name(&self) -> &'static str;
    /// The broker's product and version as it reports it (e.g. "Mosquitto 2.0.11").
    fn version(&self) -> String;
    /// `mqtt://127.0.0.1:PORT` of the plain listener.
    fn url(&self) -> String;
    /// `mqtts://localhost:PORT` of the TLS listener, if one was configured.
    fn tls_url(&self) -> Option<String>;
    /// `-h 127.0.0.1 -p PORT` for `mosquitto_pub`/`mosquitto_sub`.
    fn client_args(&self) -> Vec<String>;
    /// Stops the broker gracefully and starts it again on the same ports and data.
    fn restart(&mut self);
    /// The broker's log so far.
    fn log(&self) -> String;
}

/// `-h 127.0.0.1 -p PORT`.
pub(crate) fn host_port_args(port: u16) -> Vec<String> {
    vec![
        "-h".to_owned(),
        "127.0.0.1".to_owned(),
        "-p".to_owned(),
        port.to_string(),
    ]
}

/// First line of `program args` output (stdout, else stderr), trimmed; for versions.
pub(crate) fn first_output_line(program: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", program.display()));
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A broker process with a plain listener on loopback and, when asked, a TLS one: what the
/// launchers of brokers with nothing else to configure per test share.
#[derive(Debug)]
pub(crate) struct Listening {
    pub(crate) server: Server,
    pub(crate) port: u16,
    pub(crate) tls_port: Option<u16>,
}

impl Listening {
    /// Picks free ports (a TLS one too when `tls`), builds the recipe for them with
    /// `recipe(port, tls_port)` (its `ports` are set here), and starts it, with fresh ports
    /// when one was taken in the meantime.
    pub(crate) fn start(
        name: &str,
        tls: bool,
        log: &Path,
        mut recipe: impl FnMut(u16, Option<u16>) -> Recipe,
    ) -> Self {
        let mut ports = (0, None);
        let server = start_with_retries(name, || {
            ports = (free_port(), tls.then(free_port));
            let mut r = recipe(ports.0, ports.1);
            r.ports = std::iter::once(ports.0).chain(ports.1).collect();
            Server::new(r, log)
        });
        Self {
            server,
            port: ports.0,
            tls_port: ports.1,
        }
    }
}

/// A launcher built on [`Listening`]: it names its broker and says its version; the rest
/// of [`MqttBroker`] follows from the listeners.
pub(crate) trait Served: Send {
    /// See [`MqttBroker::name`].
    const NAME: &'static str;
    /// See [`MqttBroker::version`].
    fn version(&self) -> String;
    fn listening(&self) -> &Listening;
    fn listening_mut(&mut self) -> &mut Listening;
}

impl<T: Served> MqttBroker for T {
    fn name(&self) -> &'static str {
        T::NAME
    }
    fn version(&self) -> String {
        Served::version(self)
    }
    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.listening().port)
    }
    fn tls_url(&self) -> Option<String> {
        self.listening()
            .tls_port
            .map(|p| format!("mqtts://localhost:{p}"))
    }
    fn client_args(&self) -> Vec<String> {
        host_port_args(self.listening().port)
    }
    fn restart(&mut self) {
        self.listening_mut().server.restart(Duration::from_secs(10));
    }
    fn log(&self) -> String {
        self.listening().server.log()
    }
}
