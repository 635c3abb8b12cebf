//! The reference MQTT command-line clients: `mosquitto_sub` with collected output lines,
//! and `mosquitto_pub` run to completion.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::process::{Pid, Signal, kill_process};

use crate::process::ChildGuard;
use crate::{STARTUP_TIMEOUT, require_binary, wait_until};

/// How long [`mosquitto_pub`] may run before it is killed and the test fails.
const PUB_TIMEOUT: Duration = Duration::from_secs(30);

/// Output of a running `mosquitto_sub`, shared with the reader thread.
#[derive(Debug, Default)]
struct State {
    lines: Vec<String>,
    /// stdout reached end of file: the process exited or closed it.
    eof: bool,
    /// Lines containing this marker are probe messages: counted, never collected.
    probe_marker: Option<String>,
    probe_seen: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the output from the next assertion.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running `mosquitto_sub` whose stdout lines are collected on a background thread.
///
/// Killed when dropped. Each stdout line (payload newlines split messages into several
/// lines; invalid UTF-8 is replaced) becomes one entry; waiters are woken through a
/// condition variable as lines arrive, so waiting costs no polling.
#[derive(Debug)]
pub struct MosquittoSub {
    args: Vec<String>,
    child: ChildGuard,
    shared: Arc<Shared>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl MosquittoSub {
    /// Spawns `mosquitto_sub` with `args` (e.g. `-h 127.0.0.1 -p PORT -t a/# -v -q 1`).
    ///
    /// Returns once the process is spawned, which is *before* it has subscribed: messages
    /// published right away may be missed. Use [`start_ready`](Self::start_ready) when that
    /// matters.
    ///
    /// # Panics
    /// If `mosquitto_sub` is not installed or cannot be spawned.
    #[must_use]
    pub fn start<S: AsRef<OsStr>>(args: &[S]) -> Self {
        Self::spawn(args, None)
    }

    /// Spawns `mosquitto_sub` with `connection_args` followed by `sub_args`, and returns
    /// only once its subscription is active.
    ///
    /// Mosquitto_sub prints nothing when it has subscribed, so this publishes probe messages
    /// to `probe_topic` with `mosquitto_pub` (using `connection_args`) until one shows up in
    /// the output. `probe_topic` must match one of the `-t` filters in `sub_args`, and the
    /// output format must print payloads verbatim (the default, or `-v`). Probe lines, even
    /// late duplicates, are never collected.
    ///
    /// # Panics
    /// If `sub_args` contains `-C` (probes would count towards it), if `mosquitto_sub` exits,
    /// or if no probe arrives within [`STARTUP_TIMEOUT`](crate::STARTUP_TIMEOUT).
    #[must_use]
    pub fn start_ready<S: AsRef<OsStr>, T: AsRef<OsStr>>(
        connection_args: &[S],
        sub_args: &[T],
        probe_topic: &str,
    ) -> Self {
        assert!(
            !sub_args.iter().any(|a| a.as_ref() == "-C"),
            "MosquittoSub::start_ready: -C would count probe messages; use start() and \
             publish after another readiness signal"
        );
        let marker = probe_marker();
        let args: Vec<&OsStr> = connection_args
            .iter()
            .map(AsRef::as_ref)
            .chain(sub_args.iter().map(AsRef::as_ref))
            .collect();
        let sub = Self::spawn(&args, Some(marker.clone()));

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut pause = Duration::from_millis(10);
        loop {
            let mut pub_args: Vec<&OsStr> = connection_args.iter().map(AsRef::as_ref).collect();
            pub_args.extend(["-t", probe_topic, "-m", &marker].map(OsStr::new));
            let last_pub = mosquitto_pub(&pub_args);

            let (seen, eof) = {
                let state = sub.shared.lock();
                let (state, _) = sub
                    .shared
                    .changed
                    .wait_timeout_while(state, pause, |s| !s.probe_seen && !s.eof)
                    .unwrap_or_else(|e| e.into_inner());
                (state.probe_seen, state.eof)
            };
            if seen {
                return sub;
            }
            if eof || Instant::now() >= deadline {
                let last_pub = format!(
                    "{}; stderr: {}",
                    last_pub.status,
                    String::from_utf8_lossy(&last_pub.stderr)
                );
                panic!(
                    "mosquitto_sub {} never received a probe on '{probe_topic}' ({}); \
                     last mosquitto_pub: {last_pub}; mosquitto_sub stderr: {}",
                    sub.args.join(" "),
                    if eof { "it exited" } else { "timed out" },
                    sub.stderr()
                );
            }
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    fn spawn<S: AsRef<OsStr>>(args: &[S], probe_marker: Option<String>) -> Self {
        let bin = require_binary("mosquitto_sub", "mosquitto-clients");
        let mut child = Command::new(&bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");

        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                probe_marker,
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));

        let reader_shared = Arc::clone(&shared);
        std::thread::spawn(move || read_lines(stdout, &reader_shared));
        let stderr_sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut buf) {
                stderr_sink
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });

        Self {
            args: args
                .iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect(),
            child: ChildGuard::new("mosquitto_sub", child),
            shared,
            stderr,
        }
    }

    /// Waits until at least `n` lines have arrived and returns the first `n`.
    ///
    /// Returns as soon as the `n`th line arrives (condition variable, no polling).
    ///
    /// # Panics
    /// If `timeout` passes or `mosquitto_sub` exits first; the message lists the lines that
    /// did arrive and the process's stderr.
    pub fn wait_for_lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        let state = self.shared.lock();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| s.lines.len() < n && !s.eof)
            .unwrap_or_else(|e| e.into_inner());
        if state.lines.len() >= n {
            return state.lines[..n].to_vec();
        }
        let why = if state.eof { "it exited" } else { "timed out" };
        let got = state.lines.clone();
        drop(state);
        panic!(
            "mosquitto_sub {}: expected {n} lines within {timeout:?}, {why} after {} lines: \
             {got:#?}\nstderr: {}",
            self.args.join(" "),
            got.len(),
            self.stderr()
        );
    }

    /// A snapshot of all lines collected so far.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.shared.lock().lines.clone()
    }

    /// Everything `mosquitto_sub` wrote to stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Waits for `mosquitto_sub` to exit on its own (e.g. `-C count` or `-W secs`) and for
    /// all its output to be collected, and returns its exit status.
    ///
    /// # Panics
    /// If it is still running after `timeout`.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        // Process exit has no std event with a timeout: poll it.
        let exited = wait_until(deadline, || self.child.try_status().is_some());
        assert!(
            exited,
            "mosquitto_sub {} still running after {timeout:?}; lines: {:#?}\nstderr: {}",
            self.args.join(" "),
            self.lines(),
            self.stderr()
        );
        // The reader thread sees EOF once the exited process's pipe drains.
        let state = self.shared.lock();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, remaining.max(Duration::from_secs(1)), |s| !s.eof)
            .unwrap_or_else(|e| e.into_inner());
        drop(state);
        self.child.try_status().expect("exited above")
    }

    /// Kills `mosquitto_sub` (SIGKILL); it is also killed on drop.
    pub fn kill(&mut self) -> ExitStatus {
        self.child.kill()
    }
}

fn read_lines(stdout: impl Read, shared: &Shared) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                let line = String::from_utf8_lossy(&buf).into_owned();
                let mut state = shared.lock();
                if state
                    .probe_marker
                    .as_deref()
                    .is_some_and(|m| line.contains(m))
                {
                    state.probe_seen = true;
                } else {
                    state.lines.push(line);
                }
                drop(state);
                shared.changed.notify_all();
            }
        }
    }
    shared.lock().eof = true;
    shared.changed.notify_all();
}

/// A payload no test will publish by accident.
fn probe_marker() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "mqlink-testkit-probe-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `mosquitto_pub` with `args` to completion and returns its output (check `status`).
///
/// # Panics
/// If `mosquitto_pub` is not installed, cannot be spawned, or runs longer than 30 s (then
/// it is killed).
pub fn mosquitto_pub<S: AsRef<OsStr>>(args: &[S]) -> Output {
    run_pub(args, None)
}

/// Runs `mosquitto_pub` with `args`, writing `stdin` to its standard input (for `-l` or
/// `-s`), and returns its output.
///
/// # Panics
/// As [`mosquitto_pub`].
pub fn mosquitto_pub_with_stdin<S: AsRef<OsStr>>(args: &[S], stdin: &[u8]) -> Output {
    run_pub(args, Some(stdin))
}

fn run_pub<S: AsRef<OsStr>>(args: &[S], input: Option<&[u8]>) -> Output {
    let bin = require_binary("mosquitto_pub", "mosquitto-clients");
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
        let input = input.to_vec();
        // A separate writer avoids a pipe deadlock with the output readers.
        std::thread::spawn(move || pipe.write_all(&input));
    }
    let pid = Pid::from_child(&child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(PUB_TIMEOUT) {
        Ok(output) => output,
        Err(_) => {
            // Not reaped yet (wait_with_output has not returned), so the pid is still ours.
            let _ = kill_process(pid, Signal::KILL);
            let output = rx.recv().expect("waiter thread result");
            panic!(
                "mosquitto_pub {} ran longer than {PUB_TIMEOUT:?}; killed. output: {output:?}",
                args.iter()
                    .map(|a| a.as_ref().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    };
    output.unwrap_or_else(|e| panic!("wait for mosquitto_pub: {e}"))
}
