//! `mqlink broker`, the embedded broker run as its own process, as users run it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::peers::{Listening, PeerOptions, Served, first_output_line};
use crate::server::{Recipe, path_text};

/// A running `mqlink broker` with persistence in a temporary directory, killed when dropped.
#[derive(Debug)]
pub struct MqlinkBroker {
    // Fields drop in order: kill the broker before its directory is removed.
    listening: Listening,
    _dir: TempDir,
    bin: PathBuf,
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
        let listening = Listening::start(
            "mqlink broker",
            options.tls.is_some(),
            &log,
            |port, tls_port| {
                let mut args = vec![
                    "broker".to_owned(),
                    "--listen".to_owned(),
                    format!("127.0.0.1:{port}"),
                    "--persistence".to_owned(),
                    path_text(&persistence),
                ];
                if let (Some(p), Some(tls)) = (tls_port, &options.tls) {
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
                Recipe {
                    name: "mqlink broker",
                    command: Box::new(move || {
                        let mut c = Command::new(&bin);
                        c.args(&args).env("RUST_LOG", "info");
                        c
                    }),
                    ports: Vec::new(),
                    ready_line: None,
                    timeout: Duration::from_secs(20),
                    port_taken: &["Address already in use", "address in use"],
                }
            },
        );
        Self {
            listening,
            _dir: dir,
            bin: bin.to_path_buf(),
        }
    }
}

impl Served for MqlinkBroker {
    const NAME: &'static str = "mqlink";
    fn version(&self) -> String {
        // "mqlink 0.x.y"
        let line = first_output_line(&self.bin, &["--version"]);
        format!("mqlink broker {}", line.rsplit(' ').next().unwrap_or(&line))
    }
    fn listening(&self) -> &Listening {
        &self.listening
    }
    fn listening_mut(&mut self) -> &mut Listening {
        &mut self.listening
    }
}
