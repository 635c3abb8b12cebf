//! A private Mosquitto broker: generated config, free ports, log capture, stop/restart.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::peers::{ALLOWED_PREFIX, DENIED_PREFIX, MqttBroker, PeerOptions};
use crate::process::ChildGuard;
use crate::{STARTUP_TIMEOUT, TlsMaterial, free_port, require_binary, wait_until};

/// How long [`Mosquitto::stop`] waits after SIGTERM before sending SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Attempts at a first start when a chosen port was taken in the meantime.
const START_ATTEMPTS: usize = 5;

/// What to configure in a private Mosquitto broker. Build with struct update syntax:
/// `MosquittoOptions { websockets: true, ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct MosquittoOptions {
    /// Plain MQTT listener on 127.0.0.1 (default `true`).
    pub tcp: bool,
    /// MQTT-over-WebSockets listener (`protocol websockets`).
    pub websockets: bool,
    /// A listener on a Unix domain socket ([`Mosquitto::unix_socket_path`]), besides the
    /// others.
    pub unix_socket: bool,
    /// TLS listener using this material's CA, server certificate and key.
    pub tls: Option<TlsMaterial>,
    /// The Unix socket listener speaks TLS too, with [`tls`](Self::tls)'s material (needs
    /// both `unix_socket` and `tls`).
    pub unix_socket_tls: bool,
    /// On the TLS listener, require a client certificate signed by the CA
    /// (`require_certificate true`).
    pub require_client_cert: bool,
    /// `(user, password)`: written with `mosquitto_passwd -b`, and anonymous access is then
    /// refused (`allow_anonymous false`). Without it anonymous access is allowed.
    pub password: Option<(String, String)>,
    /// `max_queued_messages` (default 1 000 000). Mosquitto's own default of 1000 silently
    /// drops QoS 1/2 messages queued for slow subscribers; 0 ("unlimited") made 2.0.11
    /// disconnect QoS 2 publishers.
    pub max_queued_messages: u64,
    /// `max_inflight_messages`; `None` keeps Mosquitto's default (20).
    pub max_inflight_messages: Option<u32>,
    /// `persistence true` with a persistence directory that survives
    /// [`Mosquitto::restart`]. Mosquitto writes it on clean shutdown ([`Mosquitto::stop`])
    /// and every `autosave_interval`; [`Mosquitto::kill`] loses what was not yet saved.
    pub persistence: bool,
    /// The text of an ACL file (`acl_file`), e.g. `"topic readwrite #\n"`; `None` for no
    /// access control.
    pub acl: Option<String>,
    /// Extra configuration lines, written before the listener blocks (so they are global
    /// options).
    pub extra_config: Vec<String>,
    /// Configuration lines for the plain MQTT listener's block: listener options such as
    /// `max_qos 1`, `max_packet_size 2000` or `retain_available false`, which before any
    /// `listener` line would configure a default listener on port 1883 instead.
    pub listener_config: Vec<String>,
}

impl Default for MosquittoOptions {
    fn default() -> Self {
        Self {
            tcp: true,
            websockets: false,
            unix_socket: false,
            tls: None,
            unix_socket_tls: false,
            require_client_cert: false,
            password: None,
            max_queued_messages: 1_000_000,
            max_inflight_messages: None,
            persistence: false,
            acl: None,
            extra_config: Vec::new(),
            listener_config: Vec::new(),
        }
    }
}

impl MosquittoOptions {
    /// A Mosquitto that refuses anonymous subscriptions to `pattern` in its SUBACK (0x87
    /// on MQTT 5, 0x80 on 3.1.1). Its `acl_file` cannot: it only filters deliveries and
    /// grants every subscription (Mosquitto issue 2042), so the refusal comes from the
    /// dynamic security plugin shipped with Mosquitto 2, with a role denying
    /// `subscribePattern` `pattern`. Its JSON goes in `dir`.
    ///
    /// # Panics
    /// When the plugin is not installed or the file cannot be written.
    pub fn refusing_subscriptions(dir: &Path, pattern: &str) -> MosquittoOptions {
        let plugin = std::fs::read_dir("/usr/lib")
            .expect("/usr/lib")
            .filter_map(|e| Some(e.ok()?.path().join("mosquitto_dynamic_security.so")))
            .chain([PathBuf::from("/usr/lib/mosquitto_dynamic_security.so")])
            .find(|p| p.exists())
            .expect("mosquitto_dynamic_security.so (Debian package mosquitto)");
        let json = dir.join("dynamic-security.json");
        // `pattern` is a topic filter: no quote or backslash to escape in it.
        let config = format!(
            r#"{{"defaultACLAccess": {{"publishClientSend": true, "publishClientReceive": true,
                 "subscribe": true, "unsubscribe": true}},
                "clients": [], "anonymousGroup": "anonymous",
                "groups": [{{"groupname": "anonymous", "roles": [{{"rolename": "refused"}}]}}],
                "roles": [{{"rolename": "refused", "acls": [{{"acltype": "subscribePattern",
                 "topic": "{pattern}", "allow": false, "priority": 0}}]}}]}}"#
        );
        std::fs::write(&json, config).expect("write the dynamic security file");
        MosquittoOptions {
            extra_config: vec![
                format!("plugin {}", plugin.display()),
                format!("plugin_opt_config_file {}", json.display()),
            ],
            ..MosquittoOptions::default()
        }
    }
}

/// The ports of each enabled listener; fixed for the broker's lifetime, across restarts.
#[derive(Debug, Clone, Copy)]
struct Ports {
    tcp: Option<u16>,
    ws: Option<u16>,
    tls: Option<u16>,
}

impl Ports {
    fn all(self) -> impl Iterator<Item = u16> {
        [self.tcp, self.ws, self.tls].into_iter().flatten()
    }
}

/// A running private `mosquitto`, killed when dropped.
///
/// Every listener binds 127.0.0.1 on its own free port (but see the note on
/// [`ws_url`](Self::ws_url)). Config, password file, log and persistence directory live in
/// a temporary directory owned by this value.
#[derive(Debug)]
pub struct Mosquitto {
    // Fields drop in order: kill the broker before its directory is removed.
    child: Option<ChildGuard>,
    dir: TempDir,
    options: MosquittoOptions,
    bin: PathBuf,
    ports: Ports,
}

/// Why a start attempt failed.
enum StartError {
    /// A port was taken between choosing it and Mosquitto binding it.
    PortTaken,
    /// Anything else; the message carries the log.
    Failed(String),
}

impl Mosquitto {
    /// Starts a broker and waits until every listener accepts TCP connections.
    ///
    /// # Panics
    /// If `mosquitto` (or `mosquitto_passwd` when a password is set) is not installed, if no
    /// listener is enabled, or if the broker does not accept within
    /// [`STARTUP_TIMEOUT`](crate::STARTUP_TIMEOUT); the panic message includes its log.
    #[must_use]
    pub fn start(options: MosquittoOptions) -> Self {
        let bin = require_binary("mosquitto", "mosquitto");
        assert!(
            options.tcp || options.websockets || options.tls.is_some() || options.unix_socket,
            "MosquittoOptions enables no listener (tcp, websockets, tls and unix_socket are off)"
        );
        assert!(
            !options.require_client_cert || options.tls.is_some(),
            "MosquittoOptions::require_client_cert needs MosquittoOptions::tls"
        );
        assert!(
            !options.unix_socket_tls || (options.tls.is_some() && options.unix_socket),
            "MosquittoOptions::unix_socket_tls needs MosquittoOptions::tls and unix_socket"
        );
        let dir = tempfile::Builder::new()
            .prefix("mqlink-mosquitto-")
            .tempdir()
            .expect("create temporary directory for mosquitto");
        if let Some((user, pass)) = &options.password {
            write_password_file(&dir.path().join("passwd"), user, pass);
        }
        std::fs::create_dir(dir.path().join("persistence")).expect("create persistence dir");

        let mut broker = Self {
            options,
            bin,
            dir,
            ports: Ports {
                tcp: None,
                ws: None,
                tls: None,
            },
            child: None,
        };
        for attempt in 1..=START_ATTEMPTS {
            broker.ports = Ports {
                tcp: broker.options.tcp.then(free_port),
                ws: broker.options.websockets.then(free_port),
                tls: broker.options.tls.is_some().then(free_port),
            };
            broker.write_config();
            match broker.spawn_and_wait() {
                Ok(()) => return broker,
                Err(StartError::PortTaken) if attempt < START_ATTEMPTS => {}
                Err(StartError::PortTaken) => panic!(
                    "mosquitto: ports taken on {START_ATTEMPTS} attempts; log:\n{}",
                    broker.log()
                ),
                Err(StartError::Failed(msg)) => panic!("{msg}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `mqtt://127.0.0.1:PORT` of the plain listener.
    ///
    /// # Panics
    /// If the plain listener is disabled.
    #[must_use]
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port())
    }

    /// `ws://127.0.0.1:PORT/mqtt` of the WebSocket listener.
    ///
    /// Mosquitto 2.0.11 (libwebsockets) ignores the bind address for WebSocket listeners and
    /// listens on all interfaces; tests should still only connect to 127.0.0.1.
    ///
    /// # Panics
    /// If the WebSocket listener is disabled.
    #[must_use]
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/mqtt", self.ws_port())
    }

    /// `mqtts://localhost:PORT` of the TLS listener; the server certificate names
    /// `localhost` and `127.0.0.1`.
    ///
    /// # Panics
    /// If the TLS listener is disabled.
    #[must_use]
    pub fn tls_url(&self) -> String {
        format!("mqtts://localhost:{}", self.tls_port())
    }

    /// Path of the Unix domain socket listener.
    ///
    /// # Panics
    /// If the Unix socket listener is disabled.
    #[must_use]
    pub fn unix_socket_path(&self) -> PathBuf {
        assert!(
            self.options.unix_socket,
            "the Unix socket listener is disabled (MosquittoOptions::unix_socket)"
        );
        self.dir.path().join("mosquitto.sock")
    }

    /// Port of the plain MQTT listener.
    ///
    /// # Panics
    /// If the plain listener is disabled.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.ports
            .tcp
            .expect("the plain MQTT listener is disabled (MosquittoOptions::tcp)")
    }

    /// Port of the WebSocket listener.
    ///
    /// # Panics
    /// If the WebSocket listener is disabled.
    #[must_use]
    pub fn ws_port(&self) -> u16 {
        self.ports
            .ws
            .expect("the WebSocket listener is disabled (MosquittoOptions::websockets)")
    }

    /// Port of the TLS listener.
    ///
    /// # Panics
    /// If the TLS listener is disabled.
    #[must_use]
    pub fn tls_port(&self) -> u16 {
        self.ports
            .tls
            .expect("the TLS listener is disabled (MosquittoOptions::tls)")
    }

    /// The TLS material the broker was started with, if any.
    #[must_use]
    pub fn tls(&self) -> Option<&TlsMaterial> {
        self.options.tls.as_ref()
    }

    /// Connection arguments for `mosquitto_sub`/`mosquitto_pub` against the plain listener:
    /// `-h 127.0.0.1 -p PORT`, plus `-u USER -P PASS` when a password is configured.
    ///
    /// # Panics
    /// If the plain listener is disabled.
    #[must_use]
    pub fn client_args(&self) -> Vec<String> {
        let mut args = vec![
            "-h".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            self.port().to_string(),
        ];
        self.push_credentials(&mut args);
        args
    }

    /// Connection arguments for the CLI clients against the TLS listener:
    /// `-h localhost -p PORT --cafile CA`, plus `--cert`/`--key` when client certificates
    /// are required and `-u`/`-P` when a password is configured.
    ///
    /// # Panics
    /// If the TLS listener is disabled.
    #[must_use]
    pub fn tls_client_args(&self) -> Vec<String> {
        let tls = self.options.tls.as_ref().expect("TLS listener is disabled");
        let mut args = vec![
            "-h".to_owned(),
            "localhost".to_owned(),
            "-p".to_owned(),
            self.tls_port().to_string(),
            "--cafile".to_owned(),
            path_arg(tls.ca_file()),
        ];
        if self.options.require_client_cert {
            args.extend([
                "--cert".to_owned(),
                path_arg(tls.client_cert()),
                "--key".to_owned(),
                path_arg(tls.client_key()),
            ]);
        }
        self.push_credentials(&mut args);
        args
    }

    fn push_credentials(&self, args: &mut Vec<String>) {
        if let Some((user, pass)) = &self.options.password {
            args.extend(["-u".to_owned(), user.clone(), "-P".to_owned(), pass.clone()]);
        }
    }

    /// Whether the broker process is currently running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_status().is_none())
    }

    /// Stops the broker gracefully: SIGTERM (Mosquitto then saves persistence), waiting up
    /// to 10 s before SIGKILL. Returns the exit status; a no-op if already stopped.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child
            .take()
            .map(|mut child| child.terminate(STOP_GRACE))
    }

    /// Freezes the broker (SIGSTOP): connections stay open and nothing is answered, as
    /// when a broker hangs.
    pub fn pause(&mut self) {
        if let Some(c) = self.child.as_mut() {
            c.signal(rustix::process::Signal::STOP);
        }
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&mut self) {
        if let Some(c) = self.child.as_mut() {
            c.signal(rustix::process::Signal::CONT);
        }
    }

    /// Kills the broker with SIGKILL (no persistence save, connections drop without a
    /// DISCONNECT). Returns the exit status; a no-op if already stopped.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.child.take().map(|mut child| child.kill())
    }

    /// Starts the broker again on the same ports, with the same configuration and
    /// persistence directory, and waits until it accepts. Stops it first (gracefully) if
    /// it is running.
    ///
    /// # Panics
    /// If the broker does not accept within [`STARTUP_TIMEOUT`](crate::STARTUP_TIMEOUT),
    /// e.g. because another process took one of its ports meanwhile.
    pub fn restart(&mut self) {
        self.stop();
        self.append_log("---- mqlink-testkit: restart ----\n");
        match self.spawn_and_wait() {
            Ok(()) => {}
            Err(StartError::PortTaken) => panic!(
                "mosquitto restart: a port of {:?} was taken by another process; log:\n{}",
                self.ports,
                self.log()
            ),
            Err(StartError::Failed(msg)) => panic!("{msg}"),
        }
    }

    /// Everything the broker wrote to stdout/stderr (its log), across restarts.
    ///
    /// Startup readiness probes show up as short connections (on the TLS listener as
    /// "Client connection from 127.0.0.1 failed ... unexpected eof").
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path().display()))
    }

    /// The generated `mosquitto.conf`.
    #[must_use]
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    /// The persistence directory (kept across [`restart`](Self::restart)).
    #[must_use]
    pub fn persistence_dir(&self) -> PathBuf {
        self.dir.path().join("persistence")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    fn append_log(&self, text: &str) {
        let mut log = self.open_log();
        log.write_all(text.as_bytes())
            .expect("append to mosquitto log");
    }

    fn open_log(&self) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open mosquitto log")
    }

    fn write_config(&self) {
        let o = &self.options;
        let mut c = String::from("# generated by mqlink-testkit\n");
        if rustix::process::geteuid().is_root() {
            // As root, Mosquitto would switch to user `mosquitto`, which cannot read the
            // keys or write the persistence directory in our temporary directory.
            c.push_str("user root\n");
        }
        c.push_str("log_dest stderr\n");
        for kind in ["error", "warning", "notice", "information", "subscribe"] {
            c.push_str(&format!("log_type {kind}\n"));
        }
        c.push_str("connection_messages true\n");
        c.push_str("per_listener_settings false\n");
        match &o.password {
            Some(_) => {
                c.push_str("allow_anonymous false\n");
                c.push_str(&format!(
                    "password_file {}\n",
                    path_arg(&self.dir.path().join("passwd"))
                ));
            }
            None => c.push_str("allow_anonymous true\n"),
        }
        c.push_str(&format!("max_queued_messages {}\n", o.max_queued_messages));
        if let Some(n) = o.max_inflight_messages {
            c.push_str(&format!("max_inflight_messages {n}\n"));
        }
        if o.persistence {
            c.push_str("persistence true\n");
            // Mosquitto concatenates location and file name: keep the trailing slash.
            c.push_str(&format!(
                "persistence_location {}/\n",
                path_arg(&self.persistence_dir())
            ));
        }
        if let Some(acl) = &o.acl {
            let path = self.dir.path().join("acl");
            std::fs::write(&path, acl).expect("write mosquitto acl file");
            c.push_str(&format!("acl_file {}\n", path_arg(&path)));
        }
        for line in &o.extra_config {
            c.push_str(line);
            c.push('\n');
        }
        // `listener 0` would be a Unix socket in Mosquitto 2.0, so ports are chosen by us.
        if let Some(port) = self.ports.tcp {
            c.push_str(&format!("\nlistener {port} 127.0.0.1\nprotocol mqtt\n"));
            for line in &o.listener_config {
                c.push_str(line);
                c.push('\n');
            }
        }
        if let Some(port) = self.ports.ws {
            c.push_str(&format!(
                "\nlistener {port} 127.0.0.1\nprotocol websockets\n"
            ));
        }
        if o.unix_socket || (self.ports.tcp.is_none() && self.ports.tls.is_none()) {
            // Mosquitto 2.0.11 exits with "Unable to start any listening sockets" when only
            // WebSocket listeners are configured; a Unix socket (port 0) satisfies it
            // without taking a TCP port. It is also the listener `unix_socket` asks for.
            c.push_str(&format!(
                "\nlistener 0 {}\n",
                path_arg(&self.dir.path().join("mosquitto.sock"))
            ));
            if let (true, Some(tls)) = (o.unix_socket_tls, &o.tls) {
                c.push_str(&format!(
                    "cafile {}\ncertfile {}\nkeyfile {}\n",
                    path_arg(tls.ca_file()),
                    path_arg(tls.server_cert()),
                    path_arg(tls.server_key()),
                ));
            }
        }
        if let (Some(port), Some(tls)) = (self.ports.tls, &o.tls) {
            c.push_str(&format!(
                "\nlistener {port} 127.0.0.1\nprotocol mqtt\ncafile {}\ncertfile {}\nkeyfile {}\n\
                 require_certificate {}\n",
                path_arg(tls.ca_file()),
                path_arg(tls.server_cert()),
                path_arg(tls.server_key()),
                o.require_client_cert,
            ));
        }
        std::fs::write(self.config_path(), c).expect("write mosquitto.conf");
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let log_start = std::fs::metadata(self.log_path()).map_or(0, |m| m.len());
        let log = self.open_log();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let mut child = ChildGuard::new("mosquitto", child);

        let ports = self.ports;
        let new_log = || {
            let log = self.log();
            log.get(usize::try_from(log_start).unwrap_or(0)..)
                .unwrap_or_default()
                .to_owned()
        };
        let mut exited = None;
        // "running" is logged once every listener is bound; a TCP connect alone could
        // reach another process that grabbed the port.
        let ready = wait_until(Instant::now() + STARTUP_TIMEOUT, || {
            if let Some(status) = child.try_status() {
                exited = Some(status);
                return true;
            }
            new_log()
                .lines()
                .any(|l| l.contains("mosquitto version") && l.ends_with(" running"))
                && ports
                    .all()
                    .all(|port| TcpStream::connect(("127.0.0.1", port)).is_ok())
        });
        if let Some(status) = exited {
            let log = new_log();
            if log.contains("Address already in use")
                || log.contains("Unable to create websockets listener")
            {
                return Err(StartError::PortTaken);
            }
            return Err(StartError::Failed(format!(
                "mosquitto exited during startup ({status}); config {}:\n{}\nlog:\n{}",
                self.config_path().display(),
                std::fs::read_to_string(self.config_path()).unwrap_or_default(),
                self.log()
            )));
        }
        if !ready {
            child.kill();
            return Err(StartError::Failed(format!(
                "mosquitto did not accept on ports {ports:?} within {STARTUP_TIMEOUT:?}; log:\n{}",
                self.log()
            )));
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Mosquitto {
    /// Starts a broker for the interop suite: persistence on (so a restart keeps sessions
    /// and retained messages, as a production Mosquitto does), plus [`PeerOptions`].
    #[must_use]
    pub fn start_peer(options: &PeerOptions) -> Self {
        Self::start(MosquittoOptions {
            persistence: true,
            tls: options.tls.clone(),
            acl: options.deny_publish.then(|| {
                // Anonymous clients get the rules before any `user` line; `deny` wins.
                format!(
                    "topic readwrite {ALLOWED_PREFIX}/#\ntopic readwrite $SYS/#\ntopic deny {DENIED_PREFIX}/#\n"
                )
            }),
            ..MosquittoOptions::default()
        })
    }
}

impl MqttBroker for Mosquitto {
    fn name(&self) -> &'static str {
        "mosquitto"
    }
    fn version(&self) -> String {
        // "1700000000: mosquitto version 2.0.11 starting"
        let log = Mosquitto::log(self);
        let version = log
            .lines()
            .find_map(|l| l.split("mosquitto version ").nth(1))
            .map(|v| v.split_whitespace().next().unwrap_or(v).to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        format!("Mosquitto {version}")
    }
    fn url(&self) -> String {
        Mosquitto::url(self)
    }
    fn tls_url(&self) -> Option<String> {
        self.options.tls.is_some().then(|| Mosquitto::tls_url(self))
    }
    fn client_args(&self) -> Vec<String> {
        Mosquitto::client_args(self)
    }
    fn restart(&mut self) {
        Mosquitto::restart(self);
    }
    fn log(&self) -> String {
        Mosquitto::log(self)
    }
}

fn write_password_file(path: &Path, user: &str, pass: &str) {
    let bin = require_binary("mosquitto_passwd", "mosquitto");
    let out = Command::new(&bin)
        .args(["-c", "-b"])
        .arg(path)
        .args([user, pass])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "mosquitto_passwd -c -b failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Paths go into config files and argument lists as text; temp dirs are always UTF-8 here,
/// but fail clearly if one is not.
fn path_arg(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()))
        .to_owned()
}
