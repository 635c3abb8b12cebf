//! Hostile HTTP input against `mqlink run`: oversized bodies (with and without
//! Content-Length), deep JSON, invalid UTF-8, absurd topics, and a flood of slow
//! connections. Every refusal has a JSON error body and the daemon keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use mqlink_testkit::{Mosquitto, MosquittoOptions};

fn config(broker: &Mosquitto, http: &str) -> String {
    format!(
        "broker: {{url: '{}'}}\nroutes:\n  - {{match: [Ping], topic: ping}}\nsources:\n  http:\n{http}",
        broker.url()
    )
}

fn error_code(text: &str) -> String {
    json_body(text)["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {text}"))
        .to_string()
}

fn still_serves(d: &Daemon) {
    assert_eq!(d.post("/v1/events/Ping", "{}").0, 202, "{}", d.log());
}

const TWENTY_MB: usize = 20 << 20;

#[test]
fn a_20mb_body_is_refused_before_it_is_read() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let d = Daemon::start(&config(&broker, "    max_body: 1MiB\n"));

    // With Content-Length: the answer comes after only 64 KiB of the 20 MB were sent.
    let mut s = TcpStream::connect(("127.0.0.1", d.http_port)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(s, "POST /v1/events/Ping HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {TWENTY_MB}\r\nConnection: close\r\n\r\n").unwrap();
    s.write_all(&[b' '; 64 << 10]).unwrap();
    let (status, text) = read_response(&mut s);
    assert_eq!(
        (status, error_code(&text).as_str()),
        (413, "payload_too_large")
    );

    // Chunked, no Content-Length: refused once the limit is crossed, long before 20 MB.
    let mut s = TcpStream::connect(("127.0.0.1", d.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    write!(s, "POST /v1/events/Ping HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    let chunk = [b' '; 64 << 10];
    let mut sent = 0;
    let mut response = Vec::new();
    while sent < TWENTY_MB {
        if write!(s, "{:x}\r\n", chunk.len())
            .and_then(|()| s.write_all(&chunk))
            .and_then(|()| s.write_all(b"\r\n"))
            .is_err()
        {
            break; // the server hung up after answering
        }
        sent += chunk.len();
        let mut buf = [0u8; 4096];
        if let Ok(n) = s.read(&mut buf)
            && n > 0
        {
            response.extend_from_slice(&buf[..n]);
            break;
        }
    }
    s.set_read_timeout(Some(T)).unwrap();
    let _ = s.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(error_code(&text), "payload_too_large");
    assert!(sent < 4 << 20, "answered only after {sent} bytes");
    still_serves(&d);
}

#[test]
fn malformed_bodies_and_absurd_topics_are_refused_with_json() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let d = Daemon::start(&config(&broker, "    max_body: 8MiB\n"));
    let p = d.http_port;
    let json = [("Content-Type", "application/json")];
    let ndjson = [("Content-Type", "application/x-ndjson")];

    let deep = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
    for (path, h) in [
        ("/v1/events", &json),
        ("/v1/events", &ndjson),
        ("/v1/events/Ping", &json),
        ("/v1/publish", &json),
    ] {
        let (s, text) = http(p, "POST", path, h, deep.as_bytes());
        assert_eq!((s, error_code(&text).as_str()), (400, "bad_json"), "{path}");
    }
    for (path, h) in [
        ("/v1/events", &json),
        ("/v1/events", &ndjson),
        ("/v1/events/Ping", &json),
    ] {
        let (s, text) = http(
            p,
            "POST",
            path,
            h,
            b"{\"event\":\"Ping\",\"a\":\"\xc3\x28\"}",
        );
        assert_eq!((s, error_code(&text).as_str()), (400, "bad_json"), "{path}");
    }

    // A 70,000-byte topic level, and a million levels (2 MB).
    let long_level = format!(
        "{{\"topic\":\"a/{}\",\"payload\":\"x\"}}",
        "b".repeat(70_000)
    );
    let million = format!(
        "{{\"topic\":\"{}x\",\"payload\":\"x\"}}",
        "a/".repeat(1_000_000)
    );
    for body in [long_level, million] {
        let (s, text) = http(p, "POST", "/v1/publish", &json, body.as_bytes());
        assert_eq!(s, 422, "{}", &text[..text.len().min(300)]);
        assert!(json_body(&text)["error"]["message"].is_string());
    }
    still_serves(&d);
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn fd_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

#[test]
fn ten_thousand_slow_connections_do_not_lock_out_a_good_request() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let d = Daemon::start(&config(&broker, "    request_timeout: 30s\n"));
    // Sized to what this process may open, keeping headroom for the test itself.
    let n = 10_000.min(fd_limit().saturating_sub(200));
    eprintln!("opening {n} slow connections (fd limit {})", fd_limit());
    let mut slow = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], d.http_port));
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(mut s) => {
                // Half a request line, then nothing.
                let _ = s.write_all(b"POST /v1/events/Ping HTTP/1.1\r\nHost: x\r\n");
                slow.push(s);
            }
            Err(e) => panic!("connect {} failed: {e}", slow.len()),
        }
    }
    eprintln!(
        "{} slow connections open after {:?}",
        slow.len(),
        started.elapsed()
    );
    let fds = open_fds(d.pid());
    assert!(
        fds < mqlink::config::HttpSource::DEFAULT_MAX_CONNECTIONS + 200,
        "daemon holds {fds} descriptors"
    );
    // While they hang, a good request is answered quickly.
    let t = Instant::now();
    still_serves(&d);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "good request took {:?}",
        t.elapsed()
    );
    let (s, text) = http(d.http_port, "GET", "/healthz", &[], b"");
    assert_eq!(s, 200, "{text}");
    drop(slow);
    still_serves(&d);
}

#[test]
fn the_connection_cap_and_header_timeout_are_configurable() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let d = Daemon::start(&config(
        &broker,
        "    request_timeout: 30s\n    max_connections: 8\n    header_timeout: 500ms\n",
    ));
    still_serves(&d);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], d.http_port));
    let before = open_fds(d.pid());

    // One client that never finishes its headers is cut off after header_timeout, long
    // before request_timeout.
    let mut lone = TcpStream::connect(addr).unwrap();
    lone.write_all(b"POST /v1/events/Ping HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    lone.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let closed = lone.read_to_end(&mut buf);
    let waited = t.elapsed();
    // Closed (EOF, or a reset): anything but our own read timeout.
    let timed_out = closed.as_ref().is_err_and(|e| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    });
    assert!(!timed_out, "not closed by the server: {closed:?}");
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(10),
        "closed after {waited:?}"
    );

    // 100 slow clients hold at most 8 connections' worth of descriptors, and a good
    // request still gets through (the oldest idle connection makes room).
    let slow: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            let _ = s.write_all(b"POST /v1/events/Ping HTTP/1.1\r\n");
            s
        })
        .collect();
    still_serves(&d);
    let fds = open_fds(d.pid());
    assert!(
        fds <= before + 8 + 4,
        "daemon holds {fds} descriptors ({before} before the slow clients)"
    );
    drop(slow);
    still_serves(&d);
}
