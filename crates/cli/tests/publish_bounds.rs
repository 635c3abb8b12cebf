//! The daemon's honesty and bounds while the broker is away or stuck: memory stays bounded
//! by bytes while a large backlog waits for an absent broker, and `/readyz` stops saying
//! "ready" while a connected broker answers nothing.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;
use mqlink_testkit::{free_port, wait_until};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn memory_stays_bounded_while_200_mb_of_64_kib_events_wait_for_an_absent_broker() {
    // Regression: the read-ahead was bounded by count (4,096 records), not bytes: with
    // 64 KiB events RSS grew to the size of the spool.
    let nobody = free_port();
    let d = Daemon::start(&format!(
        "broker: {{url: 'mqtt://127.0.0.1:{nobody}', reconnect: {{min: 1s, max: 2s}}}}\n\
         spool: {{fsync: never}}\n\
         sources: {{http: {{max_body: 2MiB}}}}\n\
         routes:\n  - {{match: ['*'], topic: 'big/{{event}}', qos: 1}}\n"
    ));
    let blob = "z".repeat(64 * 1024 - 64);
    let batch: Vec<String> = (0..16)
        .map(|i| format!("{{\"event\":\"e\",\"i\":{i},\"blob\":\"{blob}\"}}"))
        .collect();
    let body = format!("[{}]", batch.join(","));
    let mut peak = 0;
    for _ in 0..200 {
        let (s, v) = d.post("/v1/events", &body);
        assert_eq!(s, 202, "{v}");
        peak = peak.max(rss_kib(d.pid()));
    }
    // The publisher reads ahead as soon as records are visible; let it go as far as it
    // will (its gauge stops moving), sampling meanwhile.
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle {
        peak = peak.max(rss_kib(d.pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = metrics(&d);
    let read_ahead = sample(&m, "mqlink_publish_inflight_bytes");
    let spooled = sample(&m, "mqlink_spool_bytes");
    eprintln!(
        "200 MB waiting: spool {:.0} MiB, read ahead {:.1} MiB, peak RSS {} MiB",
        spooled / 1048576.0,
        read_ahead / 1048576.0,
        peak / 1024
    );
    assert!(spooled > 200e6, "the backlog is on disk: {spooled}");
    assert!(read_ahead <= (8 << 20) as f64, "read ahead {read_ahead}");
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB");
}

/// A broker that accepts the connection (CONNACK) and then never answers a PUBLISH.
fn swallowing_broker() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let mut connacked = false;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            // Answer the CONNECT and PINGREQs, nothing else.
                            if !connacked {
                                connacked = true;
                                let _ = s.write_all(&[0x20, 0x03, 0x00, 0x00, 0x00]);
                            } else if buf[..n] == [0xc0, 0x00] {
                                let _ = s.write_all(&[0xd0, 0x00]);
                            }
                        }
                    }
                }
            });
        }
    });
    port
}

#[test]
fn readyz_reports_a_publisher_that_gets_no_verdicts() {
    // Regression: /readyz said ready while every accepted event sat in flight forever.
    let port = swallowing_broker();
    let d = Daemon::start(&format!(
        "broker: {{url: 'mqtt://127.0.0.1:{port}'}}\n\
         spool: {{stall_timeout: 1s}}\n\
         routes:\n  - {{match: ['*'], topic: 's/{{event}}', qos: 1}}\n"
    ));
    let ready = wait_until(Instant::now() + Duration::from_secs(10), || {
        http(d.http_port, "GET", "/readyz", &[], b"").0 == 200
    });
    assert!(ready, "ready once connected: {}", d.log());
    let (s, v) = d.post("/v1/events/x", "{}");
    assert_eq!(s, 202, "{v}");
    let stalled = wait_until(Instant::now() + Duration::from_secs(10), || {
        http(d.http_port, "GET", "/readyz", &[], b"").0 == 503
    });
    let (status, text) = http(d.http_port, "GET", "/readyz", &[], b"");
    assert!(stalled, "{status} {text}");
    let body = json_body(&text);
    assert!(
        body["publisher"].as_str().unwrap().starts_with("stalled"),
        "{body}"
    );
    assert_eq!(body["broker"], "connected (MQTT 5)");
    assert!(metrics(&d).contains("mqlink_publisher_healthy 0"));
}

#[test]
fn damaged_spool_records_stop_the_start_or_are_skipped_alone() {
    // Regression: recovery took a checksum error in the middle of the last segment for a
    // torn tail and truncated every record after it, although they were fsynced and
    // acknowledged to the clients.
    let nobody = free_port();
    let cfg = |policy: &str| {
        format!(
            "broker: {{url: 'mqtt://127.0.0.1:{nobody}', reconnect: {{min: 1s, max: 1s}}}}\n\
             spool: {{on_corruption: {policy}}}\n\
             routes:\n  - {{match: ['*'], topic: 'm/{{event}}', qos: 1}}\n"
        )
    };
    let mut d = Daemon::start(&cfg("fail"));
    for i in 0..100 {
        let (s, v) = d.post("/v1/events/e", &format!("{{\"i\":{i}}}"));
        assert_eq!(s, 202, "{v}");
    }
    d.kill();
    let spool = d.dir.path().join("spool");
    let seg = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment");
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8] {
        *b ^= 0x5a;
    }
    std::fs::write(&seg, &bytes).unwrap();

    // on_corruption: fail → the daemon refuses to start and names the file and the bytes.
    let out = mqlink()
        .args(["run", "-c"])
        .arg(d.dir.path().join("mqlink.yaml"))
        .args(["--spool-dir", spool.to_str().unwrap()])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(seg.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "nothing on disk changed"
    );

    // on_corruption: discard → it starts; only the damaged record is lost.
    d.write_config(&cfg("discard"));
    d.crash_and_restart();
    let m = metrics(&d);
    let records = sample(&m, "mqlink_spool_records");
    assert!(
        (98.0..=99.0).contains(&records),
        "{records} records kept of 100\n{}",
        d.log()
    );
}
