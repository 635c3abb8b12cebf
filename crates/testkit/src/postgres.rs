//! A private PostgreSQL server: `initdb` into a temporary directory, `postgres` on a free
//! port, trust authentication for the `postgres` user on 127.0.0.1 only.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the server runs as
//! the `postgres` system user (created by Debian's `postgresql` package), which owns the
//! temporary directory. The server binaries come from `/usr/lib/postgresql/<version>/bin`
//! (Debian keeps them off `PATH`) or from `PATH`.
//!
//! [`Postgres::start_tls`] turns on `ssl` with a test certificate (and, if asked,
//! requires client certificates on TLS connections, with plain ones still trusted).

use std::fs::File;
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::ChildGuard;
use crate::{STARTUP_TIMEOUT, TlsMaterial, free_port, wait_until};

const STOP_GRACE: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 5;

/// A running private PostgreSQL server, killed when dropped.
#[derive(Debug)]
pub struct Postgres {
    // Fields drop in order: kill the server before its directory is removed.
    child: Option<ChildGuard>,
    dir: TempDir,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    port: u16,
    /// `-c name=value` settings beyond the defaults (TLS).
    settings: Vec<String>,
}

impl Postgres {
    /// Runs `initdb` and starts `postgres`, waiting until it accepts connections.
    ///
    /// # Panics
    /// If the PostgreSQL server binaries are not installed (Debian package `postgresql`),
    /// `initdb` fails, or the server does not become ready in time; with its log.
    #[must_use]
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Like [`Postgres::start`], with TLS on (`ssl=on`) presenting `material`'s server
    /// certificate. With `client_certs`, TLS connections must also present a client
    /// certificate signed by `material`'s CA (`hostssl … trust clientcert=verify-ca`);
    /// plain connections are still trusted, for the test's own checks.
    ///
    /// # Panics
    /// As [`Postgres::start`], or if the certificate files cannot be copied.
    #[must_use]
    pub fn start_tls(material: &TlsMaterial, client_certs: bool) -> Self {
        Self::start_inner(Some((material, client_certs)))
    }

    fn start_inner(tls: Option<(&TlsMaterial, bool)>) -> Self {
        let bin = server_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("mqlink-pg-")
            .tempdir()
            .expect("create temporary directory for postgres");
        let owner = if rustix::process::getuid().is_root() {
            let ids = postgres_user()
                .expect("tests run as root need the 'postgres' user (Debian package 'postgresql')");
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .expect("chown the postgres directory");
            Some(ids)
        } else {
            None
        };
        let data = dir.path().join("data");
        let log_path = dir.path().join("initdb.log");
        let log = File::create(&log_path).expect("create initdb log");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&log_path, Some(uid), Some(gid)).expect("chown log");
        }
        let mut cmd = Command::new(bin.join("initdb"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        as_owner(&mut cmd, owner);
        let status = cmd.status().expect("run initdb");
        assert!(
            status.success(),
            "initdb failed ({status}):\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        let settings = tls
            .map(|(material, client_certs)| tls_settings(dir.path(), owner, material, client_certs))
            .unwrap_or_default();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            match spawn(&bin, dir.path(), owner, port, &settings) {
                Ok(child) => {
                    return Self {
                        child: Some(child),
                        dir,
                        bin,
                        owner,
                        port,
                        settings,
                    };
                }
                Err(log) if log.contains("already in use") && attempt < START_ATTEMPTS => {}
                Err(log) => panic!("postgres did not start on port {port}; log:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) one server process, e.g. the backend of a
    /// connection found in `pg_stat_activity`: its client sees a server that hangs.
    ///
    /// # Panics
    /// If the signal cannot be sent (no such process).
    pub fn signal_backend(&self, pid: i32, stop: bool) {
        let pid = rustix::process::Pid::from_raw(pid).expect("a positive pid");
        let signal = if stop {
            rustix::process::Signal::STOP
        } else {
            rustix::process::Signal::CONT
        };
        rustix::process::kill_process(pid, signal)
            .unwrap_or_else(|e| panic!("signal postgres backend {pid:?}: {e}"));
    }

    /// Stops the server (SIGINT, PostgreSQL's fast shutdown), SIGKILL after 20 s.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child.take().map(|mut child| {
            child.signal(rustix::process::Signal::INT);
            child.terminate(STOP_GRACE)
        })
    }

    /// Starts the server again on the same port with the same data.
    ///
    /// # Panics
    /// If it does not come back (e.g. the port was taken meanwhile).
    pub fn restart(&mut self) {
        self.stop();
        match spawn(
            &self.bin,
            self.dir.path(),
            self.owner,
            self.port,
            &self.settings,
        ) {
            Ok(child) => self.child = Some(child),
            Err(log) => panic!(
                "postgres did not restart on port {}; log:\n{log}",
                self.port
            ),
        }
    }

    /// Everything the server logged.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        cmd.gid(gid).uid(uid);
    }
}

/// Copies the server certificate and key where the server may read them (its key must
/// be its own and private), and returns the `-c` settings that turn TLS on.
fn tls_settings(
    dir: &Path,
    owner: Option<(u32, u32)>,
    material: &TlsMaterial,
    client_certs: bool,
) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let copy = |from: &Path, name: &str, mode: u32| -> PathBuf {
        let to = dir.join(name);
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", to.display()));
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&to, Some(uid), Some(gid)).expect("chown TLS file");
        }
        to
    };
    let cert = copy(material.server_cert(), "server.pem", 0o644);
    let key = copy(material.server_key(), "server-key.pem", 0o600);
    let mut settings = vec![
        "ssl=on".to_owned(),
        format!("ssl_cert_file={}", cert.display()),
        format!("ssl_key_file={}", key.display()),
    ];
    if client_certs {
        let ca = copy(material.ca_file(), "ca.pem", 0o644);
        let hba = dir.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust
             hostnossl all all 127.0.0.1/32 trust
             hostssl all all 127.0.0.1/32 trust clientcert=verify-ca
",
        )
        .expect("write pg_hba.conf");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&hba, Some(uid), Some(gid)).expect("chown pg_hba.conf");
        }
        settings.push(format!("ssl_ca_file={}", ca.display()));
        settings.push(format!("hba_file={}", hba.display()));
    }
    settings
}

fn spawn(
    bin: &Path,
    dir: &Path,
    owner: Option<(u32, u32)>,
    port: u16,
    settings: &[String],
) -> Result<ChildGuard, String> {
    let log_path = dir.join("postgres.log");
    let log = File::create(&log_path).expect("create postgres log");
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&log_path, Some(uid), Some(gid)).expect("chown log");
    }
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=50",
        ]);
    for setting in settings {
        cmd.arg("-c").arg(setting);
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log);
    as_owner(&mut cmd, owner);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.join("postgres").display()));
    let mut child = ChildGuard::new("postgres", child);
    let mut exited = false;
    let ready = wait_until(Instant::now() + STARTUP_TIMEOUT * 3, || {
        if child.try_status().is_some() {
            exited = true;
            return true;
        }
        std::fs::read_to_string(&log_path)
            .is_ok_and(|l| l.contains("database system is ready to accept connections"))
            && TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    if ready && !exited {
        return Ok(child);
    }
    child.kill();
    Err(std::fs::read_to_string(&log_path).unwrap_or_default())
}

/// The directory with `initdb` and `postgres`: Debian's versioned directory (newest
/// first), else `PATH`.
fn server_bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file() && p.join("postgres").is_file())
        .collect();
    versions.sort();
    if let Some(dir) = versions.pop() {
        return dir;
    }
    let initdb = crate::require_binary("initdb", "postgresql");
    initdb
        .parent()
        .expect("initdb has a directory")
        .to_path_buf()
}

/// The `postgres` user's uid and gid, from `/etc/passwd`.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == "postgres")
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}
