//! `mqlink broker`, the embedded broker run as its own process, as users run it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::free_port;
use crate::peers::{MqttBroker, PeerOptions, first_output_line, host_port_args};
use crate::server::{Recipe, Server, path_text, start_with_retries};

/// A running `mqlink broker` with persistence in a temporary directory, killed when dropped.
#[derive(Debug)]
pub struct MqlinkBroker {
    // Fields drop in order: kill the broker before its directory is removed.
    server: Server,
    _dir: TempDir,
    bin: PathBuf,
    port: u16,
    tls_port: Option<u16>,
}

impl MqlinkBroker {
    /// Starts `BIN broker --listen 127.0.0.1:PORT --persistence DIR` (plus a TLS listener
    /// with [`PeerOptions::tls`]) and waits until every listener accepts. `bin` is the
    /// `mqlink` binary under test (`env!("CARGO_BIN_EXE_mqlink")` in the cli's tests).
    ///
    /// The embedded broker has no access control: [`PeerOptions::deny_publish`] is refused.
    ///
    /// # Panics
    /// If `deny_publish` is set, or the broker does not start.
    #[must_use]
    pub fn start(bin: &Path, options: &PeerOptions) -> Self {
        assert!(
            !options.deny_publish,
            "mqlink broker has no access control lists (PeerOptions::deny_publish)"
        );
        let dir = tempfile::Builder::new()
            .prefix("mqlink-broker-")
            .tempdir()
            .expect("create temporary directory for mqlink broker");
        let persistence = dir.path().join("persistence");
        let log = dir.path().join("broker.log");
        let mut ports = (0, None);
        let server = start_with_retries("mqlink broker", || {
            ports = (free_port(), options.tls.as_ref().map(|_| free_port()));
            let mut args = vec![
                "broker".to_owned(),
                "--listen".to_owned(),
                format!("127.0.0.1:{}", ports.0),
                "--persistence".to_owned(),
                path_text(&persistence),
            ];
            if let (Some(p), Some(tls)) = (ports.1, &options.tls) {
                args.extend([
                    "--tls-listen".to_owned(),
                    format!("127.0.0.1:{p}"),
                    "--cert".to_owned(),
                    path_text(tls.server_cert()),
                    "--key".to_owned(),
                    path_text(tls.server_key()),
                ]);
            }
            let bin = bin.to_path_buf();
            let mut recipe_ports = vec![ports.0];
            recipe_ports.extend(ports.1);
            Server::new(
                Recipe {
                    name: "mqlink broker",
                    command: Box::new(move || {
                        let mut c = Command::new(&bin);
                        c.args(&args).env("RUST_LOG", "info");
                        c
                    }),
                    ports: recipe_ports,
                    ready_line: None,
                    timeout: Duration::from_secs(20),
                    port_taken: &["Address already in use", "address in use"],
                },
                &log,
            )
        });
        Self {
            server,
            _dir: dir,
            bin: bin.to_path_buf(),
            port: ports.0,
            tls_port: ports.1,
        }
    }
}

impl MqttBroker for MqlinkBroker {
    fn name(&self) -> &'static str {
        "mqlink"
    }
    fn version(&self) -> String {
        // "mqlink 0.x.y"
        let line = first_output_line(&self.bin, &["--version"]);
        format!("mqlink broker {}", line.rsplit(' ').next().unwrap_or(&line))
    }
    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
    fn tls_url(&self) -> Option<String> {
        self.tls_port.map(|p| format!("mqtts://localhost:{p}"))
    }
    fn client_args(&self) -> Vec<String> {
        host_port_args(self.port)
    }
    fn restart(&mut self) {
        self.server.restart(Duration::from_secs(10));
    }
    fn log(&self) -> String {
        self.server.log()
    }
}
