//! A private NATS server with JetStream, on a free port with its own store directory.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::ChildGuard;
use crate::{STARTUP_TIMEOUT, free_port, require_binary, wait_until};

const STOP_GRACE: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 5;

/// A running private `nats-server -js`, killed when dropped.
///
/// Listens on 127.0.0.1 only; JetStream stores in a temporary directory owned by this value.
#[derive(Debug)]
pub struct Nats {
    // Fields drop in order: kill the server before its directory is removed.
    child: Option<ChildGuard>,
    dir: TempDir,
    port: u16,
}

impl Nats {
    /// Starts `nats-server -js -a 127.0.0.1 -p PORT -sd DIR` and waits until it greets a
    /// client with an `INFO` line announcing JetStream.
    ///
    /// # Panics
    /// If `nats-server` is not installed or does not become ready within
    /// [`STARTUP_TIMEOUT`](crate::STARTUP_TIMEOUT); the message includes its log.
    #[must_use]
    pub fn start() -> Self {
        let bin = require_binary("nats-server", "nats-server");
        let dir = tempfile::Builder::new()
            .prefix("mqlink-nats-")
            .tempdir()
            .expect("create temporary directory for nats-server");
        let store = dir.path().join("jetstream");
        let log_path = dir.path().join("nats.log");

        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let log = File::create(&log_path).expect("create nats log");
            let child = Command::new(&bin)
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                .arg(&store)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let mut child = ChildGuard::new("nats-server", child);

            let mut exited = None;
            let ready = wait_until(Instant::now() + STARTUP_TIMEOUT, || {
                if let Some(status) = child.try_status() {
                    exited = Some(status);
                    return true;
                }
                greets_with_jetstream(port)
            });
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            match (exited, ready) {
                (None, true) => {
                    return Self {
                        dir,
                        port,
                        child: Some(child),
                    };
                }
                (Some(_), _)
                    if log.contains("address already in use") && attempt < START_ATTEMPTS => {}
                (Some(status), _) => {
                    panic!("nats-server exited during startup ({status}); log:\n{log}")
                }
                (None, false) => panic!(
                    "nats-server did not accept on port {port} within {STARTUP_TIMEOUT:?}; \
                     log:\n{log}"
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `nats://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory.
    #[must_use]
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// Everything the server logged.
    #[must_use]
    pub fn log(&self) -> String {
        let path = self.dir.path().join("nats.log");
        std::fs::read(&path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing is read or
    /// answered, like a server that hangs.
    pub fn pause(&mut self) {
        if let Some(child) = &mut self.child {
            child.signal(rustix::process::Signal::STOP);
        }
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&mut self) {
        if let Some(child) = &mut self.child {
            child.signal(rustix::process::Signal::CONT);
        }
    }

    /// Stops the server: SIGTERM, then SIGKILL after 10 s. A no-op if already stopped.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child
            .take()
            .map(|mut child| child.terminate(STOP_GRACE))
    }

    /// Kills the server with SIGKILL. A no-op if already stopped.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.child.take().map(|mut child| child.kill())
    }

    /// The directory holding the log and the store.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Connects and reads the server's first line: a NATS server with JetStream sends
/// `INFO {..."jetstream":true...}` on connect. This also tells our server apart from any
/// other process that might have taken the port.
fn greets_with_jetstream(port: u16) -> bool {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .is_err()
    {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok()
        && line.starts_with("INFO ")
        && line.contains("\"jetstream\":true")
}
