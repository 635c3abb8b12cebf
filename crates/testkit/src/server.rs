//! A broker process started from a fixed recipe: spawn, wait until it is ready, stop, kill,
//! start again on the same ports and data. The typed launchers ([`crate::Amqtt`],
//! [`crate::Aedes`], [`crate::RabbitMq`], [`crate::NatsMqtt`], [`crate::MqlinkBroker`])
//! build on it; each owns the temporary directory the recipe points into.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::process::ChildGuard;
use crate::wait_until;

/// Attempts at a first start when a chosen port was taken in the meantime.
pub(crate) const START_ATTEMPTS: usize = 5;

/// How a broker is started and how its readiness shows.
pub(crate) struct Recipe {
    /// Name for messages ("amqtt", "rabbitmq", ...).
    pub name: &'static str,
    /// Builds the command; stdin/stdout/stderr are set by [`Server`].
    pub command: Box<dyn Fn() -> Command + Send + Sync>,
    /// Every port that must accept TCP connections.
    pub ports: Vec<u16>,
    /// A line of the log (new since this start) that must contain this text, so that a
    /// connect to a port another process grabbed is not taken for readiness.
    pub ready_line: Option<&'static str>,
    /// How long the broker may take to become ready.
    pub timeout: Duration,
    /// Texts in the log of a broker that exited at startup meaning "port taken".
    pub port_taken: &'static [&'static str],
}

/// Why a start failed.
pub(crate) enum StartError {
    /// A port was taken between choosing it and the broker binding it.
    PortTaken,
    /// Anything else; the message carries the log.
    Failed(String),
}

/// A running (or stopped) broker process with its log file.
pub(crate) struct Server {
    pub recipe: Recipe,
    child: Option<ChildGuard>,
    log_path: PathBuf,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.recipe.name)
            .field("ports", &self.recipe.ports)
            .field("running", &self.child.is_some())
            .finish()
    }
}

impl Server {
    pub(crate) fn new(recipe: Recipe, log_path: &Path) -> Self {
        Self {
            recipe,
            child: None,
            log_path: log_path.to_path_buf(),
        }
    }

    /// Spawns the recipe's command and waits until it is ready.
    pub(crate) fn start(&mut self) -> Result<(), StartError> {
        let log_start = std::fs::metadata(&self.log_path).map_or(0, |m| m.len());
        let log = self.open_log();
        let mut command = (self.recipe.command)();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            // Its own process group: a wrapper script's forked server dies with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.recipe.name));
        let mut child = ChildGuard::new_group(self.recipe.name, child);
        let new_log = || {
            let log = self.log();
            log.get(usize::try_from(log_start).unwrap_or(0)..)
                .unwrap_or_default()
                .to_owned()
        };
        let mut exited = None;
        let ready = wait_until(Instant::now() + self.recipe.timeout, || {
            if let Some(status) = child.try_status() {
                exited = Some(status);
                return true;
            }
            self.recipe
                .ready_line
                .is_none_or(|marker| new_log().contains(marker))
                && self
                    .recipe
                    .ports
                    .iter()
                    .all(|port| TcpStream::connect(("127.0.0.1", *port)).is_ok())
        });
        if let Some(status) = exited {
            let log = new_log();
            if self.recipe.port_taken.iter().any(|t| log.contains(t)) {
                return Err(StartError::PortTaken);
            }
            return Err(StartError::Failed(format!(
                "{} exited during startup ({status}); log:\n{}",
                self.recipe.name,
                self.log()
            )));
        }
        if !ready {
            child.kill();
            return Err(StartError::Failed(format!(
                "{} was not ready on ports {:?} within {:?}; log:\n{}",
                self.recipe.name,
                self.recipe.ports,
                self.recipe.timeout,
                self.log()
            )));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Starts again on the same ports, panicking with the log if that fails.
    pub(crate) fn restart(&mut self, grace: Duration) {
        self.stop(grace);
        self.append_log(&format!(
            "---- mqlink-testkit: restart {} ----\n",
            self.recipe.name
        ));
        match self.start() {
            Ok(()) => {}
            Err(StartError::PortTaken) => panic!(
                "{} restart: a port of {:?} was taken by another process; log:\n{}",
                self.recipe.name,
                self.recipe.ports,
                self.log()
            ),
            Err(StartError::Failed(msg)) => panic!("{msg}"),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`. A no-op if stopped.
    pub(crate) fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.child.take().map(|mut c| c.terminate(grace))
    }

    /// Everything the process wrote, across restarts.
    pub(crate) fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path.display()))
    }

    fn append_log(&self, text: &str) {
        self.open_log()
            .write_all(text.as_bytes())
            .expect("append to broker log");
    }

    fn open_log(&self) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open broker log")
    }
}

/// Starts a broker whose recipe depends on freshly chosen ports, retrying on fresh ports
/// when one was taken in the meantime. `make` gets the attempt number and returns the
/// server to try.
pub(crate) fn start_with_retries(name: &str, mut make: impl FnMut() -> Server) -> Server {
    for attempt in 1..=START_ATTEMPTS {
        let mut server = make();
        match server.start() {
            Ok(()) => return server,
            Err(StartError::PortTaken) if attempt < START_ATTEMPTS => {}
            Err(StartError::PortTaken) => {
                panic!(
                    "{name}: ports taken on {START_ATTEMPTS} attempts; log:\n{}",
                    server.log()
                )
            }
            Err(StartError::Failed(msg)) => panic!("{msg}"),
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// Text of a path for a config file or an argument list.
pub(crate) fn path_text(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()))
        .to_owned()
}
