//! The dashboard in a real browser: Debian's `chromium`, headless, driven by Playwright
//! (`tests/browser/dashboard.mjs`, `playwright-core` from npm, never a downloaded browser)
//! against `mqlink run` and a private Mosquitto.
//!
//! The page loads from the daemon, an event POSTed over HTTP appears in the topic tree
//! within a few seconds, the publish form shows the server's JSON error for a bad topic and
//! publishes a good message (seen in the tree, pretty-printed when selected, and received by
//! a Mosquitto subscriber), a level of the tree collapses and expands, and when the daemon
//! dies the page says "disconnected from mqlink". A full-page screenshot is written to
//! `$CARGO_TARGET_TMPDIR/dashboard.png` (path printed); with `MQLINK_DOCS_SCREENSHOT=1` it
//! is also copied to `docs/dashboard.png`.
//!
//! Needs `node`, `npm` and `/usr/bin/chromium` (`scripts/test.sh` installs them); runs
//! `npm ci` in `tests/browser` when `node_modules` is missing. Missing tools fail the test.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use mqlink_testkit::{Mosquitto, MosquittoOptions, MosquittoSub};

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn require(bin: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{bin}` is not installed (Debian package `{package}`); scripts/test.sh installs it"
    );
}

/// `npm ci` (from the committed lock file) when `playwright-core` is not installed yet.
fn ensure_playwright(dir: &Path) {
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .output()
        .expect("run npm ci");
    assert!(
        out.status.success(),
        "npm ci in {} failed: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dashboard_in_headless_chromium() {
    require("node", "nodejs");
    require("npm", "npm");
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing (Debian package `chromium`); scripts/test.sh installs it"
    );
    let dir = browser_dir();
    ensure_playwright(&dir);

    let broker = Mosquitto::start(MosquittoOptions::default());
    let sub = MosquittoSub::start_ready(
        &broker.client_args(),
        &["-t", "dash/#", "-v", "-q", "1"],
        "dash/probe",
    );
    let work = tempfile::tempdir().unwrap();
    let sink = work.path().join("jobs.jsonl");
    let mut d = Daemon::start(&format!(
        r#"broker: {{url: '{url}'}}
routes:
  - {{name: hello, match: [DashHello], topic: 'dash/hello/{{who}}'}}
  - {{name: jobs, match: [JobUpdate], topic: 'dash/jobs/{{job_id}}'}}
  - {{name: temperature, match: [Temperature], topic: 'dash/printer/{{printer}}/temperature'}}
connectors:
  - name: jobs-to-file
    subscribe: ["dash/jobs/#"]
    sink: {{file: {{path: "{sink}"}}}}
"#,
        url = broker.url(),
        sink = sink.display()
    ));

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let form_payload = r#"{"hello":"from the dashboard","n":1}"#;
    let opts = serde_json::json!({
        "base": format!("http://127.0.0.1:{}", d.http_port),
        "event": "DashHello",
        "event_body": {"who": "world"},
        "event_topic": "dash/hello/world",
        "form_topic": "dash/test/from-form",
        "form_payload": form_payload,
        "warmup_s": 8,
        "warmup_events": [
            ["JobUpdate", {"job_id": "j-1", "status": "active", "progress": 40}],
            ["JobUpdate", {"job_id": "j-2", "status": "queued"}],
            ["Temperature", {"printer": "prusa", "bed": 60.1, "tool0": 210.4}],
            ["JobUpdate", {"job_id": "j-3", "status": "completed", "progress": 100}],
            ["DashHello", {"who": "operator"}],
        ],
        "screenshot": screenshot,
        "kill_step": true,
        "chromium": CHROMIUM,
    });

    let mut node = Command::new("node")
        .arg(dir.join("dashboard.mjs"))
        .arg(opts.to_string())
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn node");
    let mut stdin = node.stdin.take().unwrap();
    let stdout = node.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut result = None;
    let mut killed = false;
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                println!("{line}");
                if line == "KILL_DAEMON" {
                    // Everything the page published reached the broker before we stop mqlink.
                    for want in [
                        r#"dash/hello/world {"who":"world"}"#.to_string(),
                        format!("dash/test/from-form {form_payload}"),
                    ] {
                        assert!(
                            wait_for_line(&sub, &want),
                            "{want:?} never reached Mosquitto: {:?}",
                            sub.lines()
                        );
                    }
                    d.kill();
                    killed = true;
                    writeln!(stdin, "killed").unwrap();
                } else if let Some(json) = line.strip_prefix("RESULT ") {
                    result = Some(serde_json::from_str::<serde_json::Value>(json).unwrap());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = node.kill();
                panic!("the browser driver stalled; mqlink log:\n{}", d.log());
            }
        }
    }
    let status = node.wait().unwrap();
    let result = result.unwrap_or_else(|| panic!("no RESULT line; mqlink log:\n{}", d.log()));
    assert!(
        status.success() && result["ok"] == true,
        "browser test failed: {result:#}\nmqlink log:\n{}",
        d.log()
    );
    assert!(killed, "the driver never reached the disconnect step");
    assert!(
        result["event_visible_ms"].as_u64().unwrap() < 5000,
        "{result}"
    );
    assert!(
        result["form_visible_ms"].as_u64().unwrap() < 5000,
        "{result}"
    );
    assert!(
        result["disconnected_banner"]
            .as_str()
            .is_some_and(|b| b.starts_with("disconnected from mqlink")),
        "{result}"
    );

    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "not a screenshot"
    );
    println!("dashboard screenshot: {}", screenshot.display());
    if std::env::var_os("MQLINK_DOCS_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png");
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::copy(&screenshot, &docs).unwrap();
        println!("copied to {}", docs.display());
    }
}

/// Whether `sub` has received `line` within [`T`].
fn wait_for_line(sub: &MosquittoSub, line: &str) -> bool {
    mqlink_testkit::wait_until(std::time::Instant::now() + T, || {
        sub.lines().iter().any(|l| l == line)
    })
}
