//! What the interop suite needs of any broker: [`MqttBroker`], and [`PeerOptions`], the
//! few features every launcher can switch on the same way.

use crate::TlsMaterial;

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
