//! A private Redis server on a free port, its data in a temporary directory; optionally
//! with a TLS port beside the plain one (Debian's `redis-server` is built with TLS).

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::ChildGuard;
use crate::{STARTUP_TIMEOUT, TlsMaterial, free_port, require_binary, wait_until};

const STOP_GRACE: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 5;

/// A running private `redis-server`, killed when dropped.
///
/// Listens on 127.0.0.1 only, with no RDB snapshots (`--save ''`) but an append-only file
/// fsynced on every write in its temporary directory, so [`Redis::stop`] and
/// [`Redis::restart`] (an outage) keep what was acknowledged.
#[derive(Debug)]
pub struct Redis {
    // Fields drop in order: kill the server before its directory is removed.
    child: Option<ChildGuard>,
    dir: TempDir,
    port: u16,
    tls: Option<TlsPort>,
}

/// The TLS listener's settings: its port and the `--tls-*` arguments.
#[derive(Debug, Clone)]
struct TlsPort {
    port: u16,
    args: Vec<String>,
}

impl Redis {
    /// Starts `redis-server` and waits until it answers `PING`.
    ///
    /// # Panics
    /// If `redis-server` is not installed or does not become ready within
    /// [`STARTUP_TIMEOUT`](crate::STARTUP_TIMEOUT); the message includes its log.
    #[must_use]
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Like [`Redis::start`], plus a TLS port ([`Redis::tls_url`]) presenting
    /// `material`'s server certificate. With `client_certs`, the TLS port also requires a
    /// client certificate signed by `material`'s CA (Redis's `tls-auth-clients yes`). The
    /// plain port stays open for the test's own checks.
    ///
    /// # Panics
    /// As [`Redis::start`].
    #[must_use]
    pub fn start_tls(material: &TlsMaterial, client_certs: bool) -> Self {
        let path = |p: &Path| p.display().to_string();
        let args = vec![
            "--tls-cert-file".to_owned(),
            path(material.server_cert()),
            "--tls-key-file".to_owned(),
            path(material.server_key()),
            "--tls-ca-cert-file".to_owned(),
            path(material.ca_file()),
            "--tls-auth-clients".to_owned(),
            if client_certs { "yes" } else { "no" }.to_owned(),
        ];
        Self::start_inner(Some(args))
    }

    fn start_inner(tls_args: Option<Vec<String>>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mqlink-redis-")
            .tempdir()
            .expect("create temporary directory for redis-server");
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let tls = tls_args.clone().map(|args| TlsPort {
                port: free_port(),
                args,
            });
            match spawn(dir.path(), port, tls.as_ref()) {
                Ok(child) => {
                    return Self {
                        child: Some(child),
                        dir,
                        port,
                        tls,
                    };
                }
                Err(log) if log.contains("Address already in use") && attempt < START_ATTEMPTS => {}
                Err(log) => panic!("redis-server did not start on port {port}; log:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `redis://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://127.0.0.1:TLS_PORT`.
    ///
    /// # Panics
    /// If the server was not started with [`Redis::start_tls`].
    #[must_use]
    pub fn tls_url(&self) -> String {
        let tls = self.tls.as_ref().expect("started with Redis::start_tls");
        format!("rediss://127.0.0.1:{}", tls.port)
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing is answered, like a
    /// server that hangs.
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

    /// Stops the server (SIGTERM: it finishes its append-only file), SIGKILL after 10 s.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child
            .take()
            .map(|mut child| child.terminate(STOP_GRACE))
    }

    /// Kills the server (SIGKILL, also when paused): what it had not executed and fsynced
    /// is gone, as in a crash; [`Redis::restart`] brings back the append-only file.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.child.take().map(|mut child| child.kill())
    }

    /// Starts the server again on the same port with the same data (after [`Redis::stop`]).
    ///
    /// # Panics
    /// If it does not come back (e.g. the port was taken meanwhile).
    pub fn restart(&mut self) {
        self.stop();
        match spawn(self.dir.path(), self.port, self.tls.as_ref()) {
            Ok(child) => self.child = Some(child),
            Err(log) => panic!(
                "redis-server did not restart on port {}; log:\n{log}",
                self.port
            ),
        }
    }

    /// Everything the server logged.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

fn spawn(dir: &Path, port: u16, tls: Option<&TlsPort>) -> Result<ChildGuard, String> {
    let bin = require_binary("redis-server", "redis-server");
    let log_path = dir.join("redis.log");
    let log = File::create(&log_path).expect("create redis log");
    let mut cmd = Command::new(&bin);
    if let Some(tls) = tls {
        cmd.args(["--tls-port", &tls.port.to_string()])
            .args(&tls.args);
    }
    let child = cmd
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .args(["--daemonize", "no", "--protected-mode", "no", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let mut child = ChildGuard::new("redis-server", child);
    let mut exited = false;
    let ready = wait_until(Instant::now() + STARTUP_TIMEOUT, || {
        if child.try_status().is_some() {
            exited = true;
            return true;
        }
        answers_ping(port)
    });
    if ready && !exited {
        return Ok(child);
    }
    child.kill();
    Err(std::fs::read_to_string(&log_path).unwrap_or_default())
}

/// Sends `PING` and expects `+PONG`: this also tells our server apart from any other
/// process that might have taken the port.
fn answers_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
