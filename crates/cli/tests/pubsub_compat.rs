//! `mqlink pub` / `mqlink sub` as drop-ins for mosquitto_pub / mosquitto_sub 2.0: the same
//! argument lists run through the reference client and through mqlink against one private
//! Mosquitto, and stdout bytes and exit codes must be equal. Rows are written from
//! mosquitto_sub(1) and mosquitto_pub(1); where mosquitto surprises, a comment says so.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use common::*;
use mqlink_testkit::{Mosquitto, MosquittoOptions, mosquitto_pub, require_binary, wait_until};

fn mqlink_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mqlink"))
}

/// How a client is run: the reference binary, or mqlink (as `mqlink sub|pub`).
#[derive(Clone, Copy, Debug)]
enum Impl {
    Mosquitto,
    Mqlink,
}

fn command(which: Impl, tool: &str) -> Command {
    match which {
        Impl::Mosquitto => Command::new(require_binary(tool, "mosquitto-clients")),
        Impl::Mqlink => {
            let mut c = mqlink();
            c.arg(if tool == "mosquitto_pub" {
                "pub"
            } else {
                "sub"
            });
            c
        }
    }
}

/// Wait until the broker logged the subscription of `client_id` to `filter` (Mosquitto's
/// `log_type subscribe` line: `ID QOS FILTER`).
fn wait_subscribed(broker: &Mosquitto, client_id: &str, filter: &str) {
    let needle = format!(" {client_id} ");
    let ok = wait_until(Instant::now() + T, || {
        broker
            .log()
            .lines()
            .any(|l| l.contains(&needle) && l.ends_with(filter))
    });
    assert!(
        ok,
        "{client_id} never subscribed to {filter}:\n{}",
        broker.log()
    );
}

fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn client")
}

fn wait_output(child: Child, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(T) {
        Ok(out) => out.expect("wait client"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("{what} did not exit within {T:?}");
        }
    }
}

/// One mosquitto_sub row: arguments after the connection flags, messages published (with
/// mosquitto_pub) before the subscription and after it.
struct SubRow {
    name: &'static str,
    args: Vec<String>,
    /// Filter to wait for in the broker log; None when the client is expected to fail
    /// before subscribing.
    filter: Option<String>,
    before: Vec<Vec<String>>,
    after: Vec<Vec<String>>,
    compare_stderr: bool,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_string()).collect()
}

fn run_sub_row(broker: &Mosquitto, row: &SubRow, n: usize) -> [(Output, Impl); 2] {
    let conn = broker.client_args();
    for p in &row.before {
        let out = mosquitto_pub(&[conn.clone(), p.clone()].concat());
        assert!(out.status.success(), "{}: setup publish failed", row.name);
    }
    let mut children = Vec::new();
    for which in [Impl::Mosquitto, Impl::Mqlink] {
        let id = format!("compat-{n}-{which:?}");
        let mut c = command(which, "mosquitto_sub");
        c.args(&conn).args(["-i", &id]).args(&row.args);
        children.push((spawn(c), which, id));
    }
    if let Some(f) = &row.filter {
        for (_, _, id) in &children {
            wait_subscribed(broker, id, f);
        }
    }
    for p in &row.after {
        let out = mosquitto_pub(&[conn.clone(), p.clone()].concat());
        assert!(out.status.success(), "{}: publish failed", row.name);
    }
    let mut outs = children
        .into_iter()
        .map(|(c, which, _)| (wait_output(c, row.name), which));
    [outs.next().unwrap(), outs.next().unwrap()]
}

#[test]
fn sub_rows_match_mosquitto_sub() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("binary");
    std::fs::write(&binary, [0u8, 1, 2, 0xff, 0xfe, b'\n', 0x80, b'x']).unwrap();
    let binary = binary.to_str().unwrap().to_string();
    let url_topic = format!("mqtt://127.0.0.1:{}/c/url", broker.port());

    let rows = vec![
        SubRow {
            name: "-v text",
            args: s(&["-t", "c/text", "-v", "-C", "2"]),
            filter: Some("c/text".into()),
            before: vec![],
            after: vec![
                s(&["-t", "c/text", "-m", "hello"]),
                s(&["-t", "c/text", "-m", "two words"]),
            ],
            compare_stderr: false,
        },
        // mosquitto_sub prints `topic (null)` for an empty payload with -v ...
        SubRow {
            name: "-v empty",
            args: s(&["-t", "c/empty", "-v", "-C", "2"]),
            filter: Some("c/empty".into()),
            before: vec![],
            after: vec![
                s(&["-t", "c/empty", "-n"]),
                s(&["-t", "c/empty", "-m", "x"]),
            ],
            compare_stderr: false,
        },
        // ... and nothing at all, not even the end of line, without it.
        SubRow {
            name: "empty without -v",
            args: s(&["-t", "c/empty2", "-C", "2"]),
            filter: Some("c/empty2".into()),
            before: vec![],
            after: vec![
                s(&["-t", "c/empty2", "-n"]),
                s(&["-t", "c/empty2", "-m", "x"]),
            ],
            compare_stderr: false,
        },
        SubRow {
            name: "-v binary",
            args: s(&["-t", "c/bin", "-v", "-C", "1"]),
            filter: Some("c/bin".into()),
            before: vec![],
            after: vec![s(&["-t", "c/bin", "-f", &binary])],
            compare_stderr: false,
        },
        SubRow {
            name: "-v unicode topic",
            args: s(&["-t", "c/ü/ℵ/#", "-v", "-C", "1"]),
            filter: Some("c/ü/ℵ/#".into()),
            before: vec![],
            after: vec![s(&["-t", "c/ü/ℵ/😀", "-m", "grüße"])],
            compare_stderr: false,
        },
        SubRow {
            name: "retained then live, -v",
            args: s(&["-t", "c/ret/#", "-v", "-C", "2"]),
            filter: Some("c/ret/#".into()),
            before: vec![s(&["-t", "c/ret/a", "-r", "-m", "stored"])],
            after: vec![s(&["-t", "c/ret/b", "-m", "live"])],
            compare_stderr: false,
        },
        // -R: retained messages are not printed and (mosquitto) do not count for -C.
        SubRow {
            name: "-R",
            args: s(&["-t", "c/noret/#", "-v", "-R", "-C", "1"]),
            filter: Some("c/noret/#".into()),
            before: vec![s(&["-t", "c/noret/a", "-r", "-m", "stored"])],
            after: vec![s(&["-t", "c/noret/b", "-m", "live"])],
            compare_stderr: false,
        },
        SubRow {
            name: "-N",
            args: s(&["-t", "c/noeol", "-N", "-C", "2"]),
            filter: Some("c/noeol".into()),
            before: vec![],
            after: vec![
                s(&["-t", "c/noeol", "-m", "a"]),
                s(&["-t", "c/noeol", "-m", "b"]),
            ],
            compare_stderr: false,
        },
        // -W: exit code 27 when the time runs out, -C given or not.
        SubRow {
            name: "-W without messages",
            args: s(&["-t", "c/quiet", "-W", "1"]),
            filter: Some("c/quiet".into()),
            before: vec![],
            after: vec![],
            compare_stderr: true,
        },
        SubRow {
            name: "-W before -C is reached",
            args: s(&["-t", "c/few", "-v", "-W", "2", "-C", "5"]),
            filter: Some("c/few".into()),
            before: vec![],
            after: vec![s(&["-t", "c/few", "-m", "only one"])],
            compare_stderr: true,
        },
        SubRow {
            name: "-V mqttv31",
            args: s(&["-t", "c/v31", "-v", "-C", "1", "-V", "mqttv31"]),
            filter: Some("c/v31".into()),
            before: vec![],
            after: vec![s(&["-t", "c/v31", "-m", "old"])],
            compare_stderr: false,
        },
        SubRow {
            name: "-V mqttv5",
            args: s(&["-t", "c/v5", "-v", "-C", "1", "-V", "mqttv5"]),
            filter: Some("c/v5".into()),
            before: vec![],
            after: vec![s(&["-t", "c/v5", "-m", "new"])],
            compare_stderr: false,
        },
        SubRow {
            name: "-L path is the topic",
            args: s(&["-L", &url_topic, "-v", "-C", "1"]),
            filter: Some("c/url".into()),
            before: vec![],
            after: vec![s(&["-t", "c/url", "-m", "via url"])],
            compare_stderr: false,
        },
        // -F %r: a consumer can tell stored state (1) from live updates (0).
        SubRow {
            name: "-F retained vs live",
            args: s(&["-t", "c/fmt/#", "-F", "%r %t %p", "-C", "2"]),
            filter: Some("c/fmt/#".into()),
            before: vec![s(&["-t", "c/fmt/a", "-r", "-m", "stored"])],
            after: vec![s(&["-t", "c/fmt/b", "-r", "-m", "live"])],
            compare_stderr: false,
        },
        // The same over MQTT 5: Retain-As-Published is off, as in mosquitto_sub.
        SubRow {
            name: "-F retained vs live, MQTT 5",
            args: s(&[
                "-t", "c/fmt5/#", "-F", "%r %t %p", "-C", "2", "-V", "mqttv5",
            ]),
            filter: Some("c/fmt5/#".into()),
            before: vec![s(&["-t", "c/fmt5/a", "-r", "-m", "stored"])],
            after: vec![s(&["-t", "c/fmt5/b", "-r", "-m", "live"])],
            compare_stderr: false,
        },
        SubRow {
            name: "-F fields and escapes",
            args: s(&[
                "-t",
                "c/fmt2",
                "-q",
                "1",
                "-F",
                "%q %l %x %X %m\\t|%%|\\\\",
                "-C",
                "2",
            ]),
            filter: Some("c/fmt2".into()),
            before: vec![],
            after: vec![
                s(&["-t", "c/fmt2", "-q", "1", "-m", "Az\u{7f}"]),
                s(&["-t", "c/fmt2", "-n"]),
            ],
            compare_stderr: false,
        },
        SubRow {
            name: "invalid filter",
            args: s(&["-t", "a/#/b"]),
            filter: None,
            before: vec![],
            after: vec![],
            compare_stderr: true,
        },
        SubRow {
            name: "invalid -V",
            args: s(&["-t", "a", "-V", "4"]),
            filter: None,
            before: vec![],
            after: vec![],
            compare_stderr: true,
        },
    ];
    let mut failures = Vec::new();
    for (n, row) in rows.iter().enumerate() {
        let [(want, _), (got, _)] = run_sub_row(&broker, row, n);
        if want.stdout != got.stdout || want.status.code() != got.status.code() {
            failures.push(format!(
                "{}: mosquitto_sub {:?} {:?}, mqlink {:?} {:?} (stderr {:?})",
                row.name,
                want.status.code(),
                String::from_utf8_lossy(&want.stdout),
                got.status.code(),
                String::from_utf8_lossy(&got.stdout),
                String::from_utf8_lossy(&got.stderr),
            ));
        } else if row.compare_stderr && want.stderr != got.stderr {
            failures.push(format!(
                "{}: stderr {:?} vs {:?}",
                row.name,
                String::from_utf8_lossy(&want.stderr),
                String::from_utf8_lossy(&got.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One mosquitto_pub row: the same arguments (and stdin) through mosquitto_pub and mqlink
/// pub; a mosquitto_sub observer prints what arrived, with the retain flag and QoS.
struct PubRow {
    name: &'static str,
    args: Vec<String>,
    stdin: &'static [u8],
    messages: usize,
}

fn run_pub(which: Impl, conn: &[String], row: &PubRow) -> Output {
    let mut c = command(which, "mosquitto_pub");
    c.args(conn)
        .args(&row.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn pub");
    let mut input = child.stdin.take().unwrap();
    input.write_all(row.stdin).unwrap();
    drop(input);
    wait_output(child, row.name)
}

fn observe(broker: &Mosquitto, id: &str, filter: &str, n: usize) -> Child {
    let mut c = Command::new(require_binary("mosquitto_sub", "mosquitto-clients"));
    c.args(broker.client_args())
        .args([
            "-i",
            id,
            "-t",
            filter,
            "-q",
            "2",
            "-V",
            "mqttv5",
            "-F",
            "%t %q %r %l %x",
        ])
        .args(["-C", &n.to_string(), "-W", "10"]);
    let child = spawn(c);
    wait_subscribed(broker, id, filter);
    child
}

#[test]
fn pub_rows_match_mosquitto_pub() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let conn = broker.client_args();
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("binary");
    std::fs::write(&binary, [0u8, 1, 2, 0xff, b'\n', 0x80]).unwrap();
    let binary = binary.to_str().unwrap().to_string();
    let url = format!("mqtt://127.0.0.1:{}/p/url", broker.port());
    let rows = vec![
        PubRow {
            name: "-m",
            args: s(&["-t", "p/m", "-m", "hi"]),
            stdin: b"",
            messages: 1,
        },
        PubRow {
            name: "-n",
            args: s(&["-t", "p/n", "-n"]),
            stdin: b"",
            messages: 1,
        },
        PubRow {
            name: "-q 1",
            args: s(&["-t", "p/q1", "-q", "1", "-m", "x"]),
            stdin: b"",
            messages: 1,
        },
        PubRow {
            name: "-q 2",
            args: s(&["-t", "p/q2", "-q", "2", "-m", "x"]),
            stdin: b"",
            messages: 1,
        },
        // -l: a blank line is an empty message; a last line without newline is sent too.
        PubRow {
            name: "-l",
            args: s(&["-t", "p/l", "-l"]),
            stdin: b"a\n\nb\nlast",
            messages: 4,
        },
        PubRow {
            name: "-s",
            args: s(&["-t", "p/s", "-s"]),
            stdin: b"all\nof\x00it",
            messages: 1,
        },
        PubRow {
            name: "-f",
            args: s(&["-t", "p/f", "-f", &binary]),
            stdin: b"",
            messages: 1,
        },
        PubRow {
            name: "-V mqttv31",
            args: s(&["-t", "p/v31", "-V", "mqttv31", "-m", "x"]),
            stdin: b"",
            messages: 1,
        },
        PubRow {
            name: "-V 5",
            args: s(&["-t", "p/v5", "-V", "5", "-m", "x"]),
            stdin: b"",
            messages: 1,
        },
        PubRow {
            name: "-L",
            args: s(&["-L", &url, "-m", "x"]),
            stdin: b"",
            messages: 1,
        },
    ];
    let mut failures = Vec::new();
    for (n, row) in rows.iter().enumerate() {
        let topic = row
            .args
            .windows(2)
            .find(|w| w[0] == "-t")
            .map(|w| w[1].clone())
            .unwrap_or_else(|| "p/url".into());
        let mut outs = Vec::new();
        for which in [Impl::Mosquitto, Impl::Mqlink] {
            let obs = observe(&broker, &format!("obs-{n}-{which:?}"), &topic, row.messages);
            // -L carries host and port itself.
            let conn: &[String] = if row.args[0] == "-L" { &[] } else { &conn };
            let out = run_pub(which, conn, row);
            let seen = wait_output(obs, row.name);
            outs.push((out, seen));
        }
        let (want, got) = (&outs[0], &outs[1]);
        if want.0.status.code() != got.0.status.code() || want.1.stdout != got.1.stdout {
            failures.push(format!(
                "{}: mosquitto_pub {:?} saw {:?}; mqlink {:?} saw {:?} (stderr {:?})",
                row.name,
                want.0.status.code(),
                String::from_utf8_lossy(&want.1.stdout),
                got.0.status.code(),
                String::from_utf8_lossy(&got.1.stdout),
                String::from_utf8_lossy(&got.0.stderr)
            ));
        }
    }
    // -r: a retained message is there for a subscriber that comes later.
    for which in [Impl::Mosquitto, Impl::Mqlink] {
        let topic = format!("p/r/{which:?}");
        let row = PubRow {
            name: "-r",
            args: s(&["-t", &topic, "-r", "-m", "kept"]),
            stdin: b"",
            messages: 1,
        };
        assert!(run_pub(which, &conn, &row).status.success());
        let mut c = Command::new(require_binary("mosquitto_sub", "mosquitto-clients"));
        c.args(&conn)
            .args(["-t", &topic, "-F", "%r %p", "-C", "1", "-W", "5"]);
        let out = wait_output(spawn(c), "-r observer");
        if out.stdout != b"1 kept\n" {
            failures.push(format!(
                "-r {which:?}: {:?}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Busybox style: the binary run through a symlink named mosquitto_pub / mosquitto_sub is
/// `mqlink pub` / `mqlink sub`, flags and all.
#[test]
fn symlinks_named_mosquitto_pub_and_sub_are_pub_and_sub() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let link = |name: &str| -> PathBuf {
        let p = dir.path().join(name);
        std::os::unix::fs::symlink(mqlink_bin(), &p).unwrap();
        p
    };
    let (pub_link, sub_link) = (link("mosquitto_pub"), link("mosquitto_sub"));
    let conn = broker.client_args();
    let out = Command::new(&pub_link)
        .args(&conn)
        .args(["-t", "sym/a", "-r", "-m", "via symlink"])
        .output()
        .unwrap();
    assert_ok(&out, "mosquitto_pub symlink");
    let out = Command::new(&sub_link)
        .args(&conn)
        .args(["-t", "sym/#", "-v", "-C", "1", "-W", "5"])
        .output()
        .unwrap();
    assert_ok(&out, "mosquitto_sub symlink");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sym/a via symlink\n");
    let help = Command::new(Path::new(&sub_link))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("mqlink sub"));
}

/// `--cafile` turns TLS on (port and all) as in mosquitto; a certificate from a foreign CA is
/// refused by both, `--insecure` included (mosquitto's skips only the host name check, so it
/// must never accept a foreign CA); the failure is one line that names the flag.
#[test]
fn cafile_turns_tls_on_and_insecure_never_accepts_a_foreign_ca() {
    let broker = Mosquitto::start(MosquittoOptions {
        tls: Some(mqlink_testkit::TlsMaterial::generate()),
        ..MosquittoOptions::default()
    });
    let tls_args = broker.tls_client_args();
    let other_ca = broker
        .tls()
        .unwrap()
        .other_ca_file()
        .to_str()
        .unwrap()
        .to_string();
    for which in [Impl::Mosquitto, Impl::Mqlink] {
        let topic = format!("tls/{which:?}");
        let obs = observe(&broker, &format!("tls-obs-{which:?}"), &topic, 1);
        let row = PubRow {
            name: "--cafile",
            args: s(&["-t", &topic, "-m", "secret"]),
            stdin: b"",
            messages: 1,
        };
        let out = run_pub(which, &tls_args, &row);
        assert_ok(&out, &format!("{which:?} pub with --cafile"));
        let seen = wait_output(obs, "tls observer");
        assert_eq!(
            String::from_utf8_lossy(&seen.stdout),
            format!("{topic} 0 0 6 736563726574\n")
        );
    }
    let port = broker.tls_port().to_string();
    for extra in [&[][..], &["--insecure"][..]] {
        let mut args = s(&["-h", "localhost", "-p", &port, "--cafile", &other_ca]);
        args.extend(s(extra));
        args.extend(s(&["-t", "tls/foreign", "-m", "x"]));
        let row = PubRow {
            name: "foreign CA",
            args,
            stdin: b"",
            messages: 0,
        };
        let want = run_pub(Impl::Mosquitto, &[], &row);
        let got = run_pub(Impl::Mqlink, &[], &row);
        // mosquitto_pub exits 8 (libmosquitto's MOSQ_ERR_TLS) when the handshake fails
        // inside mosquitto_connect and 1 when it is only noticed in the network loop: which
        // one is a race (both seen here). mqlink always exits 8.
        assert!(
            matches!(want.status.code(), Some(1 | 8)),
            "mosquitto_pub {extra:?}: {:?}",
            want.status
        );
        let err = String::from_utf8_lossy(&got.stderr);
        if !extra.is_empty() {
            // mqlink cannot skip only the host name check yet and refuses --insecure (exit
            // 1) rather than accept any certificate, as it used to.
            assert_eq!(got.status.code(), Some(1), "mqlink pub --insecure: {err}");
        } else {
            assert_eq!(got.status.code(), Some(8), "mqlink pub: {err}");
            assert_eq!(err.lines().count(), 1, "one error line: {err}");
            assert!(err.contains("--cafile") && !err.contains("tls."), "{err}");
        }
    }
}
