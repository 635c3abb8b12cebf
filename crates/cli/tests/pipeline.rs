//! `mqlink run` with a poll source and a connector in one config: polled JSON is split into
//! events, routed to MQTT, picked up by a connector, transformed with jq and written to a file.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;
use mqlink_testkit::{Mosquitto, MosquittoOptions, wait_until};

/// A tiny HTTP server answering every request with the same JSON body.
fn json_server(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn poll_to_mqtt_to_connector_to_file() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let port =
        json_server(r#"{"services":[{"name":"engine","ok":true},{"name":"proxy","ok":false}]}"#);
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("health.jsonl");
    let d = Daemon::start(&format!(
        r#"broker: {{url: '{url}'}}
topic_prefix: "butler-sos/"
sources:
  poll:
    - {{url: "http://127.0.0.1:{port}/health", every: 200ms, event: health, fields: {{server: sense1}}, split: ".services"}}
routes:
  - {{match: [health], topic: "{{server}}/health/{{name}}"}}
connectors:
  - name: tofile
    subscribe: ["butler-sos/#"]
    transforms: [{{filter: ".payload.ok"}}, {{map: "{{topic, server: .payload.server}}"}}]
    sink: {{file: {{path: "{file}"}}}}
"#,
        url = broker.url(),
        file = file.display()
    ));
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        wait_until(Instant::now() + Duration::from_secs(20), || read()
            .lines()
            .count()
            >= 2),
        "file: {}\nlog: {}",
        read(),
        d.log()
    );
    for line in read().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"topic": "butler-sos/sense1/health/engine", "server": "sense1"})
        );
    }
}

#[test]
fn a_bad_jq_expression_is_a_config_error_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "broker: {url: 'mqtt://127.0.0.1:1'}\nroutes:\n  - {match: ['*'], topic: t, payload: {transform: '{a:'}}\n",
    )
    .unwrap();
    let out = mqlink()
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.yaml") && err.contains("routes[0].payload"),
        "{err}"
    );
}

#[test]
fn stdin_json_lines_are_published_bad_lines_named_and_eof_drains_and_exits_0() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let sub = mqlink_testkit::MosquittoSub::start_ready(
        &broker.client_args(),
        &["-t", "in/#", "-v", "-q", "1"],
        "in/probe",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stdin.yaml");
    std::fs::write(
        &path,
        format!(
            "broker: {{url: '{}'}}\nspool: {{dir: '{}'}}\nsources:\n  http: {{enabled: false}}\n  stdin: {{enabled: true}}\nroutes:\n  - {{match: ['*'], topic: 'in/{{event}}'}}\n",
            broker.url(),
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let mut child = mqlink()
        .args(["run", "-c", path.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"event\":\"a\",\"n\":1}\nnot json\n{\"n\":2}\n\n{\"event\":\"b\",\"n\":3}\n")
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        sub.wait_for_lines(2, T),
        [r#"in/a {"n":1}"#, r#"in/b {"n":3}"#]
    );
    assert!(
        log.contains("line=2") && log.contains("not valid JSON"),
        "{log}"
    );
    assert!(
        log.contains("line=3") && log.contains("missing \"event\""),
        "{log}"
    );
}
