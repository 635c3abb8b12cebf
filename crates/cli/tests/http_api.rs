//! The HTTP API of `mqlink run`: every status of the error table with its JSON body, tokens,
//! limits, and events reaching a real Mosquitto with exact topics and payloads.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::*;
use mqlink_testkit::{Mosquitto, MosquittoOptions, MosquittoSub};

fn config(broker: &Mosquitto, extra: &str) -> String {
    format!(
        "broker: {{url: '{}'}}\ntopic_prefix: t\nroutes:\n  - {{name: jobs, match: [JobUpdate], topic: 'jobs/{{job_id}}'}}\n  - {{match: [Ping], topic: ping}}\n{extra}",
        broker.url()
    )
}

fn error_code(v: &serde_json::Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {v}"))
}

#[test]
fn events_reach_mosquitto_with_exact_topics_and_payloads() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let sub = MosquittoSub::start_ready(
        &broker.client_args(),
        &["-t", "t/#", "-v", "-q", "1"],
        "t/probe",
    );
    let d = Daemon::start(&config(&broker, ""));
    let (s, v) = d.post(
        "/v1/events/JobUpdate",
        r#"{"job_id":"j-1","status":"active"}"#,
    );
    assert_eq!((s, v["messages"].as_u64()), (202, Some(1)), "{v}");
    let (s, v) = d.post(
        "/v1/events",
        r#"[{"event":"Ping","n":1},{"event":"JobUpdate","job_id":"j/2"}]"#,
    );
    assert_eq!((s, v["accepted"].as_u64()), (202, Some(2)), "{v}");
    let (s, text) = http(
        d.http_port,
        "POST",
        "/v1/events",
        &[("Content-Type", "application/x-ndjson")],
        b"{\"event\":\"Ping\",\"n\":2}\n\n{\"event\":\"Ping\",\"n\":3}\n",
    );
    assert_eq!(s, 202, "{text}");
    let (s, v) = d.post(
        "/v1/publish",
        r#"{"topic":"t/raw","payload":"hello","qos":2,"retain":false}"#,
    );
    assert_eq!(s, 202, "{v}");
    let lines = sub.wait_for_lines(6, T);
    assert_eq!(
        lines,
        [
            r#"t/jobs/j-1 {"job_id":"j-1","status":"active"}"#,
            r#"t/ping {"n":1}"#,
            r#"t/jobs/j/2 {"job_id":"j/2"}"#,
            r#"t/ping {"n":2}"#,
            r#"t/ping {"n":3}"#,
            "t/raw hello",
        ]
    );
}

#[test]
fn every_error_status_has_a_json_body() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let d = Daemon::start(&config(&broker, "sources:\n  http:\n    max_body: 1KiB\n"));
    let p = d.http_port;

    let (s, v) = d.post("/v1/events/JobUpdate", "{not json");
    assert_eq!((s, error_code(&v)), (400, "bad_json"));
    let (s, v) = d.post("/v1/events/JobUpdate", "[1,2]");
    assert_eq!((s, error_code(&v)), (400, "bad_json"));
    // Invalid UTF-8 inside a JSON string.
    let (s, text) = http(
        p,
        "POST",
        "/v1/events/JobUpdate",
        &[("Content-Type", "application/json")],
        b"{\"a\":\"\xff\"}",
    );
    assert_eq!((s, error_code(&json_body(&text))), (400, "bad_json"));
    // Deep nesting is refused, not a stack overflow.
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let (s, text) = http(
        p,
        "POST",
        "/v1/events/JobUpdate",
        &[("Content-Type", "application/json")],
        deep.as_bytes(),
    );
    assert!(s == 400 || s == 413, "{s} {text}");

    let (s, v) = d.post("/v1/nothing", "{}");
    assert_eq!((s, error_code(&v)), (404, "not_found"));
    let (s, text) = http(p, "GET", "/v1/events", &[], b"");
    assert_eq!(
        (s, error_code(&json_body(&text))),
        (405, "method_not_allowed")
    );

    // 413 from Content-Length alone: the body is never sent.
    let mut sock = TcpStream::connect(("127.0.0.1", p)).unwrap();
    sock.write_all(b"POST /v1/events/Ping HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20000000\r\nConnection: close\r\n\r\n").unwrap();
    let (s, text) = read_response(&mut sock);
    assert_eq!(
        (s, error_code(&json_body(&text))),
        (413, "payload_too_large")
    );

    let (s, text) = http(
        p,
        "POST",
        "/v1/events/Ping",
        &[("Content-Type", "text/plain")],
        b"{}",
    );
    assert_eq!(
        (s, error_code(&json_body(&text))),
        (415, "unsupported_media_type")
    );

    let (s, v) = d.post("/v1/events/Nope", "{}");
    assert_eq!((s, error_code(&v)), (422, "no_route"));
    let (s, v) = d.post("/v1/events/JobUpdate", r#"{"status":"x"}"#);
    assert_eq!((s, error_code(&v)), (422, "missing_field"));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("job_id"),
        "{v}"
    );
    let (s, v) = d.post("/v1/publish", r#"{"topic":"a/+/b","payload":"x"}"#);
    assert_eq!((s, error_code(&v)), (422, "invalid_request"));
    // A batch with one bad event stores nothing and names the event.
    let (s, v) = d.post("/v1/events", r#"[{"event":"Ping"},{"event":"JobUpdate"}]"#);
    assert_eq!((s, error_code(&v)), (422, "missing_field"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("event 1"),
        "{v}"
    );
    let (s, text) = http(p, "GET", "/readyz", &[], b"");
    assert_eq!(s, 200, "{text}");
    assert_eq!(
        json_body(&text)["spool"]["records"],
        0,
        "nothing of the refused batch was stored"
    );
}

#[test]
fn tokens_are_required_when_configured() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let d = Daemon::start(&config(
        &broker,
        "sources:\n  http:\n    tokens: [s3cret-token]\n",
    ));
    let p = d.http_port;
    let ct = ("Content-Type", "application/json");
    let (s, text) = http(p, "POST", "/v1/events/Ping", &[ct], b"{}");
    assert_eq!((s, error_code(&json_body(&text))), (401, "unauthorized"));
    let (s, _) = http(
        p,
        "POST",
        "/v1/events/Ping",
        &[ct, ("Authorization", "Bearer wrong")],
        b"{}",
    );
    assert_eq!(s, 401);
    let (s, text) = http(
        p,
        "POST",
        "/v1/events/Ping",
        &[ct, ("Authorization", "Bearer s3cret-token")],
        b"{}",
    );
    assert_eq!(s, 202, "{text}");
    // Health endpoints stay open for probes.
    assert_eq!(http(p, "GET", "/healthz", &[], b"").0, 200);
    assert!(
        !d.log().contains("s3cret-token"),
        "the token must never be logged"
    );
}

#[test]
fn a_slow_client_times_out_with_408() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let d = Daemon::start(&config(
        &broker,
        "sources:\n  http:\n    request_timeout: 1s\n",
    ));
    let mut sock = TcpStream::connect(("127.0.0.1", d.http_port)).unwrap();
    sock.write_all(b"POST /v1/events/Ping HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"a\":").unwrap();
    let (s, text) = read_response(&mut sock);
    assert_eq!((s, error_code(&json_body(&text))), (408, "request_timeout"));
    // The daemon still serves.
    assert_eq!(d.post("/v1/events/Ping", "{}").0, 202);
}

#[test]
fn a_full_spool_answers_503_with_retry_after() {
    // The broker is stopped, so nothing leaves the 1 MiB spool.
    let mut broker = Mosquitto::start(MosquittoOptions::default());
    broker.stop();
    let d = Daemon::start(&config(&broker, "spool:\n  max_bytes: 1MiB\n"));
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(100_000));
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let (s, text) = http(
            d.http_port,
            "POST",
            "/v1/events/Ping",
            &[("Content-Type", "application/json")],
            big.as_bytes(),
        );
        if s == 503 {
            assert_eq!(error_code(&json_body(&text)), "spool_full");
            assert!(
                text.to_ascii_lowercase().contains("retry-after: 1"),
                "{text}"
            );
        }
        statuses.push(s);
    }
    assert!(statuses.starts_with(&[202, 202, 202]), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
}

#[test]
fn http_listen_flag_cannot_open_the_network_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mqlink.yaml");
    std::fs::write(
        &path,
        "broker: {url: 'mqtt://127.0.0.1:1'}\nroutes:\n  - {match: [Ping], topic: ping}\n",
    )
    .unwrap();
    let out = mqlink()
        .args([
            "run",
            "-c",
            path.to_str().unwrap(),
            "--http-listen",
            "0.0.0.0:0",
        ])
        .args(["--spool-dir", dir.path().join("spool").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}
