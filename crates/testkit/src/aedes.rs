//! A private Aedes broker (npm `aedes`, Node.js; MQTT 3.1.1, state in memory), run by
//! `tests/interop/aedes-server.mjs` from the packages `npm ci` installed next to it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::peers::{DENIED_PREFIX, Listening, PeerOptions, Served};
use crate::require_binary;
use crate::server::{Recipe, path_text};

/// A running Aedes server, killed when dropped.
#[derive(Debug)]
pub struct Aedes {
    // Fields drop in order: kill the broker before its directory is removed.
    listening: Listening,
    _dir: TempDir,
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
        let listening = Listening::start("aedes", options.tls.is_some(), &log, |port, tls_port| {
            let mut args = vec![
                path_text(&dir.join("aedes-server.mjs")),
                "--port".to_owned(),
                port.to_string(),
            ];
            if let (Some(p), Some(tls)) = (tls_port, &options.tls) {
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
            Recipe {
                name: "aedes",
                command: Box::new(move || {
                    let mut c = Command::new(&node);
                    c.args(&args);
                    c
                }),
                ports: Vec::new(),
                ready_line: Some("aedes ready"),
                timeout: Duration::from_secs(20),
                port_taken: &["EADDRINUSE"],
            }
        });
        Self {
            listening,
            _dir: tmp,
        }
    }
}

impl Served for Aedes {
    const NAME: &'static str = "aedes";
    fn version(&self) -> String {
        // The server prints "aedes ready (version X)".
        let log = self.listening.server.log();
        let version = log
            .lines()
            .find_map(|l| l.strip_prefix("aedes ready (version "))
            .and_then(|v| v.strip_suffix(')'))
            .unwrap_or("unknown");
        format!("Aedes {version}")
    }
    fn listening(&self) -> &Listening {
        &self.listening
    }
    fn listening_mut(&mut self) -> &mut Listening {
        &mut self.listening
    }
}
