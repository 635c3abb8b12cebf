//! Shared helpers for the end-to-end tests: run the real `mqlink` binary next to real peers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use mqlink_testkit::{free_port, mosquitto_pub, wait_until};

pub const T: Duration = Duration::from_secs(20);

/// The `mqlink` binary under test.
pub fn mqlink() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mqlink"));
    c.env_remove("MQLINK_URL").env_remove("MQLINK_PASSWORD");
    c
}

/// Run `mqlink pub` with `stdin` piped in.
pub fn mqlink_pub(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = mqlink()
        .arg("pub")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mqlink pub");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait mqlink pub");
    let _ = writer.join();
    out
}

/// Assert a command succeeded, showing its stderr if not.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `mqlink sub` whose stdout lines are collected.
pub struct MqlinkSub {
    child: Child,
    rx: Receiver<String>,
    pub lines: Vec<String>,
}

impl MqlinkSub {
    /// Start `mqlink sub ARGS` and return once it provably receives: `probe` is called
    /// (e.g. publishing to a probe topic) until a line containing "probe" arrives.
    pub fn start_ready(args: &[&str], mut probe: impl FnMut()) -> MqlinkSub {
        let mut child = mqlink()
            .arg("sub")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mqlink sub");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + T;
        loop {
            assert!(
                Instant::now() < deadline,
                "mqlink sub never received a probe"
            );
            probe();
            match rx.recv_timeout(Duration::from_millis(300)) {
                Ok(line) if line.contains("probe") => break,
                Ok(other) => panic!("unexpected line before probe: {other}"),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("mqlink sub exited: {:?}", child.wait())
                }
            }
        }
        MqlinkSub {
            child,
            rx,
            lines: Vec::new(),
        }
    }

    /// Wait for `n` lines that are not probes.
    pub fn wait_for(&mut self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        while self.lines.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) if l.contains("probe") => {}
                Ok(l) => self.lines.push(l),
                Err(_) => panic!("got {} of {n} lines: {:?}", self.lines.len(), self.lines),
            }
        }
        self.lines.clone()
    }
}

impl Drop for MqlinkSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mqlink broker` on free ports (tcp and WebSocket), killed on drop.
pub struct EmbeddedBroker {
    child: Child,
    pub port: u16,
    pub ws_port: u16,
}

impl EmbeddedBroker {
    pub fn start() -> EmbeddedBroker {
        Self::start_with(&[], &[])
    }

    /// Like [`Self::start`] with more `mqlink broker` arguments; also waits until the
    /// `extra_ports` (e.g. a TLS listener's) accept connections.
    pub fn start_with(extra_args: &[String], extra_ports: &[u16]) -> EmbeddedBroker {
        let port = free_port();
        let ws_port = free_port();
        let mut child = mqlink()
            .args([
                "broker",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--ws",
                &format!("127.0.0.1:{ws_port}"),
            ])
            .args(extra_args)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mqlink broker");
        let up = wait_until(Instant::now() + T, || {
            assert!(
                child.try_wait().ok().flatten().is_none(),
                "mqlink broker {extra_args:?} exited"
            );
            [port, ws_port]
                .iter()
                .chain(extra_ports)
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        });
        assert!(up, "embedded broker did not start listening");
        EmbeddedBroker {
            child,
            port,
            ws_port,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/mqtt", self.ws_port)
    }

    /// Arguments for mosquitto_pub/mosquitto_sub.
    pub fn client_args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
        ]
    }
}

impl EmbeddedBroker {
    /// SIGTERM (a graceful stop) and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for mqlink broker")
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publish one message with mosquitto_pub.
pub fn mpub(client_args: &[String], extra: &[&str]) {
    let mut args = client_args.to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = mosquitto_pub(&args);
    assert_ok(&out, "mosquitto_pub");
}

/// A minimal HTTP/1.1 client over a raw socket, so tests control every byte (oversized
/// bodies, slow clients) and need no HTTP client dependency.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to HTTP API");
    s.set_read_timeout(Some(T)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(&mut s)
}

/// Read a whole `Connection: close` response: (status, headers + body text).
pub fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(s, &mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    (status, text)
}

/// The JSON body of a response text.
pub fn json_body(text: &str) -> serde_json::Value {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}

/// POST JSON.
pub fn post_json(port: u16, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = http(
        port,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    (status, json_body(&text))
}

/// `mqlink run -c` on a config written to a temp dir, with the HTTP API on a free port.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    config: String,
    /// More `mqlink run` arguments, kept across restarts.
    args: Vec<String>,
}

impl Daemon {
    /// `config` is YAML without `sources.http.listen` and `spool.dir` (filled in here).
    pub fn start(config: &str) -> Daemon {
        Self::start_with_env(config, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables for the `mqlink run`
    /// process (e.g. the `${MQTT_URL}` an example config reads). The variables apply to
    /// this first start only: [`Daemon::crash_and_restart`] restarts without them.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_full(config, env, &[])
    }

    /// Like [`Daemon::start`], with more `mqlink run` arguments (kept across restarts),
    /// e.g. `--embedded-listen` for a config without `broker`.
    pub fn start_with_args(config: &str, args: &[&str]) -> Daemon {
        Self::start_full(config, &[], args)
    }

    fn start_full(config: &str, env: &[(&str, &str)], args: &[&str]) -> Daemon {
        let mut d = Daemon {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            http_port: free_port(),
            config: config.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        d.spawn_with(env);
        d
    }

    fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    fn spawn_with(&mut self, env: &[(&str, &str)]) {
        let path = self.dir.path().join("mqlink.yaml");
        std::fs::write(&path, &self.config).unwrap();
        let child = mqlink()
            .args([
                "run",
                "-c",
                path.to_str().unwrap(),
                "--http-listen",
                &format!("127.0.0.1:{}", self.http_port),
            ])
            .args([
                "--spool-dir",
                self.dir.path().join("spool").to_str().unwrap(),
            ])
            .args(&self.args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("mqlink.log")).unwrap())
            .spawn()
            .expect("spawn mqlink run");
        self.child = Some(child);
        let port = self.http_port;
        let up = wait_until(Instant::now() + T, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "mqlink run did not start: {}", self.log());
    }

    /// Process id of the running daemon.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mqlink.log")).unwrap_or_default()
    }

    /// SIGKILL, then start again on the same spool and port.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Start the daemon again (after [`Self::kill`] or [`Self::terminate`]) on the same
    /// config, spool and port.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Send SIGHUP (reload the config file, which the test may have rewritten).
    pub fn hangup(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let _ = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status();
    }

    /// Replace the config file (for a reload).
    pub fn write_config(&mut self, config: &str) {
        self.config = config.to_string();
        std::fs::write(self.dir.path().join("mqlink.yaml"), config).unwrap();
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().unwrap()
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        post_json(self.http_port, path, body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of one series (name with labels, exactly as exposed) in a metrics text.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// `GET /metrics` of a daemon.
pub fn metrics(d: &Daemon) -> String {
    let (s, text) = http(d.http_port, "GET", "/metrics", &[], b"");
    assert_eq!(s, 200);
    text
}

/// Poll `/metrics` until `series` is at least `min` (the log line or `/readyz` can show an
/// event a moment before the counter does); return that metrics text.
pub fn wait_for_sample(d: &Daemon, series: &str, min: f64) -> String {
    let mut last = String::new();
    let ok = wait_until(Instant::now() + T, || {
        last = metrics(d);
        last.lines().any(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|v| v >= min)
        })
    });
    assert!(ok, "{series} never reached {min}:\n{last}");
    last
}
