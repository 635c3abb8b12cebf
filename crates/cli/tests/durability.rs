//! The publish path's promise: an accepted event (HTTP 202) is on disk and leaves the spool
//! only when the broker acknowledged it — before the first connection, through a broker
//! outage, and across `kill -9` of mqlink.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use mqlink_testkit::{Mosquitto, MosquittoOptions, MosquittoSub, wait_until};

fn yaml(broker: &Mosquitto, extra: &str) -> String {
    format!(
        "broker: {{url: '{}', reconnect: {{min: 100ms, max: 1s}}}}\nroutes:\n  - {{match: ['*'], topic: 'd/{{event}}', qos: 1}}\n{extra}",
        broker.url()
    )
}

fn persistent_sub(broker: &Mosquitto, id: &str) -> MosquittoSub {
    MosquittoSub::start_ready(
        &broker.client_args(),
        &["-t", "d/#", "-q", "1", "-c", "-i", id],
        "d/probe",
    )
}

#[test]
fn events_accepted_before_the_first_connection_are_delivered() {
    let mut broker = Mosquitto::start(MosquittoOptions {
        persistence: true,
        ..MosquittoOptions::default()
    });
    // Register the subscriber's persistent session, then take the broker away.
    drop(persistent_sub(&broker, "early-sub"));
    broker.stop();
    let d = Daemon::start(&yaml(&broker, ""));
    for i in 0..50 {
        let (s, v) = d.post("/v1/events/early", &format!("{{\"n\":{i}}}"));
        assert_eq!(s, 202, "{v}");
    }
    // The first failed connect is logged by its own task: wait for it, do not race it.
    assert!(
        wait_until(Instant::now() + T, || d.log().contains("cannot connect")),
        "the broker really was down: {}",
        d.log()
    );
    broker.restart();
    let sub = MosquittoSub::start(&{
        let mut a = broker.client_args();
        a.extend(["-t", "d/#", "-q", "1", "-c", "-i", "early-sub"].map(String::from));
        a
    });
    let lines = sub.wait_for_lines(50, T);
    let want: Vec<String> = (0..50).map(|i| format!("{{\"n\":{i}}}")).collect();
    assert_eq!(lines, want, "all 50, in order");
}

#[test]
fn a_ten_second_broker_outage_during_a_stream_loses_nothing_and_keeps_order() {
    const N: usize = 20_000;
    let mut broker = Mosquitto::start(MosquittoOptions {
        persistence: true,
        ..MosquittoOptions::default()
    });
    let sub = persistent_sub(&broker, "outage-sub");
    let d = Daemon::start(&yaml(&broker, ""));
    let port = d.http_port;
    let sender = std::thread::spawn(move || {
        for batch in 0..N / 100 {
            let body: String = (0..100)
                .map(|i| format!("{{\"event\":\"s\",\"n\":{}}}\n", batch * 100 + i))
                .collect();
            let (s, text) = http(
                port,
                "POST",
                "/v1/events",
                &[("Content-Type", "application/x-ndjson")],
                body.as_bytes(),
            );
            assert_eq!(s, 202, "{text}");
        }
    });
    assert!(wait_until(Instant::now() + T, || sub.lines().len() >= N / 10));
    broker.stop();
    // The outage itself is the thing under test: a fixed 10 s with the broker gone.
    std::thread::sleep(Duration::from_secs(10));
    broker.restart();
    sender.join().unwrap();
    let done = wait_until(Instant::now() + Duration::from_secs(60), || {
        sub.lines().iter().collect::<HashSet<_>>().len() >= N
    });
    let lines = sub.lines();
    let seen: Vec<usize> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["n"].as_u64().unwrap() as usize
        })
        .collect();
    let unique: HashSet<usize> = seen.iter().copied().collect();
    assert!(done, "{} of {N} arrived", unique.len());
    // In order: the first arrival of each message is in publishing order.
    let mut first = Vec::new();
    let mut had = HashSet::new();
    for n in &seen {
        if had.insert(*n) {
            first.push(*n);
        }
    }
    assert_eq!(
        first,
        (0..N).collect::<Vec<_>>(),
        "first arrivals out of order"
    );
    eprintln!("{} deliveries, {} duplicates", seen.len(), seen.len() - N);
}

#[test]
fn kill_9_twenty_times_under_load_loses_no_accepted_event() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let sub =
        MosquittoSub::start_ready(&broker.client_args(), &["-t", "d/#", "-q", "1"], "d/probe");
    let mut d = Daemon::start(&yaml(&broker, ""));
    let port = d.http_port;
    let running = Arc::new(AtomicBool::new(true));
    let r = running.clone();
    // Posts numbered events as fast as it can; records which ones were confirmed (202).
    let loader = std::thread::spawn(move || {
        let mut confirmed = Vec::new();
        let mut n = 0u64;
        while r.load(Ordering::Relaxed) {
            let body = format!("{{\"n\":{n},\"check\":\"payload-{n}\"}}");
            let ok = std::panic::catch_unwind(|| {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                let req = format!(
                    "POST /v1/events/c HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                std::io::Write::write_all(&mut s, req.as_bytes()).ok()?;
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut s, &mut buf).ok()?;
                Some(buf.starts_with(b"HTTP/1.1 202"))
            });
            if let Ok(Some(true)) = ok {
                confirmed.push(n);
            }
            n += 1;
        }
        confirmed
    });
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20 {
        // A pseudo-random moment: 50-300 ms of load between kills.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(50 + rng % 250));
        d.crash_and_restart();
    }
    running.store(false, Ordering::Relaxed);
    let confirmed = loader.join().unwrap();
    assert!(
        confirmed.len() > 100,
        "the load ran: {} confirmed",
        confirmed.len()
    );
    let want: HashSet<String> = confirmed
        .iter()
        // Payloads keep the posted field order.
        .map(|n| format!("{{\"n\":{n},\"check\":\"payload-{n}\"}}"))
        .collect();
    let complete = wait_until(Instant::now() + Duration::from_secs(60), || {
        let got: HashSet<String> = sub.lines().into_iter().collect();
        want.iter().all(|w| got.contains(w))
    });
    let lines = sub.lines();
    let got: HashSet<&String> = lines.iter().collect();
    let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).take(5).collect();
    assert!(
        complete,
        "confirmed events missing after 20 kills: {missing:?} ({} confirmed)",
        want.len()
    );
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for l in &lines {
        *counts.entry(l).or_default() += 1;
    }
    let dups = counts.values().filter(|c| **c > 1).count();
    // Duplicates come only from messages in flight at a kill: the broker window (20) plus
    // what was acknowledged within the last ack-checkpoint interval (25 ms) — a few dozen
    // per kill at this load, never a re-send of everything.
    assert!(dups <= 20 * 50, "{dups} duplicated messages for 20 kills");
    eprintln!(
        "{} confirmed, {} delivered lines, {dups} duplicated messages",
        confirmed.len(),
        lines.len()
    );
}

#[test]
fn lifecycle_will_on_kill_birth_on_restart_offline_on_sigterm() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let status = MosquittoSub::start_ready(
        &broker.client_args(),
        &["-t", "op/status", "-t", "op/probe", "-v"],
        "op/probe",
    );
    let mut d = Daemon::start(&format!(
        "broker: {{url: '{}', lifecycle: {{}}}}\ntopic_prefix: op\nroutes:\n  - {{match: ['*'], topic: 'e/{{event}}'}}\n",
        broker.url()
    ));
    assert_eq!(status.wait_for_lines(1, T), ["op/status online"]);
    d.crash_and_restart();
    assert_eq!(
        status.wait_for_lines(3, T)[1..],
        ["op/status offline", "op/status online"]
    );
    let code = d.terminate();
    assert!(code.success(), "SIGTERM exits 0: {code:?}\n{}", d.log());
    assert_eq!(status.wait_for_lines(4, T)[3], "op/status offline");
}

#[test]
fn bad_config_exits_2_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown.yaml",
            "broker:\n  url: mqtt://h\n  colour: blue\n",
            "unknown.yaml:3:3: broker.colour",
        ),
        (
            "url.yaml",
            "broker:\n  url: http://h\n",
            "url.yaml:2:8: broker.url",
        ),
        (
            "cert.yaml",
            "broker:\n  url: mqtts://h\n  tls:\n    cert_file: /etc/hostname\n",
            "cert.yaml:4:16: broker.tls.cert_file",
        ),
        (
            "bad.toml",
            "[broker]\nurl = 'mqtt://h'\nkeepalive = 'soon'\n",
            "bad.toml:3:13: broker.keepalive",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        for cmd in ["check", "run"] {
            let out = mqlink()
                .args([cmd, "-c", path.to_str().unwrap()])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} {name}: {err}");
            assert!(
                err.contains(want),
                "{cmd} {name}: expected '{want}' in: {err}"
            );
        }
    }
}

#[test]
fn a_broker_rejection_is_dead_lettered_counted_and_does_not_block_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite ok/#\n").unwrap();
    let broker = Mosquitto::start(MosquittoOptions {
        extra_config: vec![format!("acl_file {}", acl.display())],
        ..MosquittoOptions::default()
    });
    let sub = MosquittoSub::start_ready(&broker.client_args(), &["-t", "ok/#", "-v"], "ok/probe");
    let d = Daemon::start(&format!(
        "broker: {{url: '{}'}}\nroutes:\n  - {{match: ['*'], topic: '{{zone}}/{{event}}'}}\n",
        broker.url()
    ));
    assert_eq!(d.post("/v1/events/e1", r#"{"zone":"denied","n":1}"#).0, 202);
    assert_eq!(d.post("/v1/events/e2", r#"{"zone":"ok","n":2}"#).0, 202);
    assert_eq!(sub.wait_for_lines(1, T), [r#"ok/e2 {"zone":"ok","n":2}"#]);
    let dead = d.dir.path().join("spool").join("dead-letter.jsonl");
    // A whole line, not just the file: it is created a moment before the line lands.
    assert!(
        wait_until(Instant::now() + T, || std::fs::read_to_string(&dead)
            .is_ok_and(|s| s.contains('\n'))),
        "{}",
        d.log()
    );
    let entry: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&dead)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(entry["topic"], "denied/e1");
    assert_eq!(entry["code"], 0x87);
    assert_eq!(entry["reason"], "not authorized");
    assert_eq!(entry["payload"], r#"{"zone":"denied","n":1}"#);
    let (_, metrics) = http(d.http_port, "GET", "/metrics", &[], b"");
    assert!(
        metrics.contains(r#"mqlink_broker_rejections_total{reason_code="0x87"} 1"#),
        "{metrics}"
    );
    // The warning is written after the dead-letter line is fsynced, so the line can be
    // seen a moment before the log has it: wait for it.
    assert!(
        wait_until(Instant::now() + T, || d
            .log()
            .contains("broker rejected a message")),
        "logged with topic and reason: {}",
        d.log()
    );
    // The record leaves the spool right after its dead-letter line is fsynced (never
    // before): wait for it rather than race it.
    assert!(
        wait_until(Instant::now() + T, || {
            let (_, ready) = http(d.http_port, "GET", "/readyz", &[], b"");
            json_body(&ready)["spool"]["records"] == 0
        }),
        "nothing stuck in the spool"
    );
}
