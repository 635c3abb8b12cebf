//! The quick start keeps everything: `mqlink run` with no `broker` config (so the embedded
//! broker) and a connector with `session: persistent` to a file sink; the connector is
//! restarted (config reload) while 10,000 QoS 1 messages are published to the embedded
//! broker, and every message reaches the file byte for byte.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mqlink_testkit::{free_port, mosquitto_pub, require_binary, wait_until};

const N: usize = 10_000;

fn config(sink: &str, dead_letter: &str) -> String {
    format!(
        r#"connectors:
  - name: load
    subscribe: ["load/data"]
    qos: 1
    session: persistent
    format: raw
    dead_letter: "{dead_letter}"
    sink: {{file: {{path: "{sink}"}}}}
"#
    )
}

/// Lines of the sink file that are not probes.
fn records(sink: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(sink)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("probe"))
        .map(String::from)
        .collect()
}

#[test]
fn a_persistent_connector_restarted_mid_stream_gets_all_10000_messages() {
    let _ = require_binary("mosquitto_pub", "mosquitto-clients");
    let work = tempfile::tempdir().unwrap();
    let sink = work.path().join("sink.txt");
    let dl = |n| {
        work.path()
            .join(format!("dead-{n}.jsonl"))
            .display()
            .to_string()
    };
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut d = Daemon::start_with_args(
        &config(&sink.display().to_string(), &dl(1)),
        &["--embedded-listen", &listen],
    );
    let conn = ["-h", "127.0.0.1", "-p", &port.to_string()];

    // The session exists once a probe reaches the sink (before it, nothing is queued for it).
    let mut probe = 0;
    let subscribed = wait_until(Instant::now() + T, || {
        probe += 1;
        let mut args = conn.to_vec();
        let payload = format!("probe-{probe}");
        args.extend(["-t", "load/data", "-q", "1", "-m", &payload]);
        mosquitto_pub(&args);
        std::fs::read_to_string(&sink).is_ok_and(|s| s.contains("probe"))
    });
    assert!(subscribed, "connector never subscribed: {}", d.log());

    // Distinct payloads of varied length and bytes (tabs, quotes, backslashes, UTF-8).
    let sent: Vec<String> = (0..N)
        .map(|i| format!("m{i:05}\t\"{}\\ é {}", "x".repeat(i % 97), i * 7919))
        .collect();
    let mut publisher = Command::new("mosquitto_pub")
        .args(conn)
        .args(["-t", "load/data", "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mosquitto_pub");
    let mut stdin = publisher.stdin.take().unwrap();
    let (first, rest) = sent.split_at(N / 2);
    for line in first {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
    // Restart the connector once it is busy with the first half, then publish the second
    // half while it comes back: those messages wait in its session.
    assert!(
        wait_until(Instant::now() + T, || records(&sink).len() >= 1000),
        "the connector is not receiving: {}",
        d.log()
    );
    d.write_config(&config(&sink.display().to_string(), &dl(2)));
    d.hangup();
    for line in rest {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let restarted = wait_until(Instant::now() + T, || {
        d.log().contains("connector changed; restarting it")
    });
    assert!(restarted, "the connector was not restarted: {}", d.log());
    let at_restart = records(&sink).len();
    assert!(at_restart < N, "all messages arrived before the restart");

    let out = publisher.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = wait_until(Instant::now() + Duration::from_secs(60), || {
        let got = records(&sink);
        let mut seen = std::collections::HashSet::new();
        got.iter().filter(|l| seen.insert(l.as_str())).count() >= N
    });
    let got = records(&sink);
    // At-least-once: a message in flight at the restart may come twice; keep first copies.
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<&String> = got.iter().filter(|l| seen.insert(l.as_str())).collect();
    let missing = sent.iter().filter(|l| !seen.contains(l.as_str())).count();
    assert!(
        all && missing == 0,
        "{missing} of {N} messages missing ({} lines in the sink, {at_restart} at the restart): {}",
        got.len(),
        d.log()
    );
    assert_eq!(unique.len(), N, "lines in the sink that were never sent");
    assert!(
        unique.iter().zip(&sent).all(|(a, b)| *a == b),
        "messages reordered or altered"
    );
    eprintln!(
        "{N} messages, {} lines in the sink ({} duplicates), {at_restart} before the restart",
        got.len(),
        got.len() - N
    );
}
