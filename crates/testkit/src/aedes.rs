//! A private Aedes broker (npm `aedes`, Node.js; MQTT 3.1.1, state in memory), run by
//! `tests/interop/aedes-server.mjs` from the packages `npm ci` installed next to it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::peers::{DENIED_PREFIX, MqttBroker, PeerOptions, host_port_args};
use crate::server::{Recipe, Server, path_text, start_with_retries};
use crate::{free_port, require_binary};

/// A running Aedes server, killed when dropped.
#[derive(Debug)]
pub struct Aedes {
    // Fields drop in order: kill the broker before its directory is removed.
    server: Server,
    _dir: TempDir,
    port: u16,
    tls_port: Option<u16>,
}

/// `tests/interop` in the workspace: the server script and its `node_modules`.
fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

impl Aedes {
    /// Starts Aedes on free ports and waits until it reports every listener bound.
    ///
    /// # Panics
    /// If `node` or the `aedes` package is missing (`npm ci` in `tests/interop`;
    /// scripts/test.sh does this), or the broker does not become ready in time.
    #[must_use]
    pub fn start(options: &PeerOptions) -> Self {
        let node = require_binary("node", "nodejs");
        let dir = interop_dir();
        assert!(
            dir.join("node_modules/aedes/package.json").is_file(),
            "aedes is not installed in {}: run `npm ci` there (scripts/test.sh does this)",
            dir.display()
        );
        let tmp = tempfile::Builder::new()
            .prefix("mqlink-aedes-")
            .tempdir()
            .expect("create temporary directory for aedes");
        let log = tmp.path().join("aedes.log");
        let mut ports = (0, None);
        let server = start_with_retries("aedes", || {
            ports = (free_port(), options.tls.as_ref().map(|_| free_port()));
            let mut args = vec![
                path_text(&dir.join("aedes-server.mjs")),
                "--port".to_owned(),
                ports.0.to_string(),
            ];
            if let (Some(p), Some(tls)) = (ports.1, &options.tls) {
                args.extend([
                    "--tls-port".to_owned(),
                    p.to_string(),
                    "--cert".to_owned(),
                    path_text(tls.server_cert()),
                    "--key".to_owned(),
                    path_text(tls.server_key()),
                ]);
            }
            if options.deny_publish {
                args.extend(["--deny-publish".to_owned(), DENIED_PREFIX.to_owned()]);
            }
            let node = node.clone();
            let mut recipe_ports = vec![ports.0];
            recipe_ports.extend(ports.1);
            Server::new(
                Recipe {
                    name: "aedes",
                    command: Box::new(move || {
                        let mut c = Command::new(&node);
                        c.args(&args);
                        c
                    }),
                    ports: recipe_ports,
                    ready_line: Some("aedes ready"),
                    timeout: Duration::from_secs(20),
                    port_taken: &["EADDRINUSE"],
                },
                &log,
            )
        });
        Self {
            server,
            _dir: tmp,
            port: ports.0,
            tls_port: ports.1,
        }
    }
}

impl MqttBroker for Aedes {
    fn name(&self) -> &'static str {
        "aedes"
    }
    fn version(&self) -> String {
        // The server prints "aedes ready (version X)".
        let log = self.server.log();
        let version = log
            .lines()
            .find_map(|l| l.strip_prefix("aedes ready (version "))
            .and_then(|v| v.strip_suffix(')'))
            .unwrap_or("unknown");
        format!("Aedes {version}")
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
