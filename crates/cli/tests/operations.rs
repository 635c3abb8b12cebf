//! Operating mqlink: metrics, readiness, secrets kept out of every output, config reload,
//! status and the live stream.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use mqlink_testkit::{Mosquitto, MosquittoOptions, MosquittoSub, wait_until};

fn cfg(broker: &Mosquitto, routes: &str) -> String {
    format!(
        "broker: {{url: '{}', reconnect: {{min: 100ms, max: 500ms}}}}\nroutes:\n{routes}",
        broker.url()
    )
}

const ROUTES: &str = "  - {match: [job], topic: 'jobs/{id}'}\n";

/// The value of a sample line `name{labels} value` in Prometheus text.
fn spool_records(d: &Daemon) -> u64 {
    let (_, text) = http(d.http_port, "GET", "/readyz", &[], b"");
    json_body(&text)["spool"]["records"].as_u64().unwrap()
}

#[test]
fn metrics_move_as_expected_after_a_known_sequence() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let d = Daemon::start(&cfg(&broker, ROUTES));
    for i in 0..3 {
        assert_eq!(d.post("/v1/events/job", &format!("{{\"id\":{i}}}")).0, 202);
    }
    assert_eq!(d.post("/v1/events/other", "{}").0, 422);
    assert_eq!(d.post("/v1/events/job", "{}").0, 422);
    assert!(wait_until(Instant::now() + T, || spool_records(&d) == 0));
    let m = metrics(&d);
    assert!(m.contains("# TYPE mqlink_events_accepted counter"), "{m}");
    assert_eq!(sample(&m, "mqlink_events_accepted_total"), 3.0);
    assert_eq!(
        sample(&m, r#"mqlink_events_rejected_total{reason="no_route"}"#),
        1.0
    );
    assert_eq!(
        sample(&m, r#"mqlink_events_rejected_total{reason="invalid"}"#),
        1.0
    );
    assert_eq!(
        sample(&m, r#"mqlink_messages_published_total{qos="1"}"#),
        3.0
    );
    assert_eq!(
        sample(&m, r#"mqlink_messages_acknowledged_total{qos="1"}"#),
        3.0
    );
    assert_eq!(sample(&m, "mqlink_publish_latency_seconds_count"), 3.0);
    assert_eq!(sample(&m, "mqlink_broker_connected"), 1.0);
    assert_eq!(sample(&m, "mqlink_spool_records"), 0.0);
    assert!(
        m.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
}

#[test]
fn readyz_follows_the_broker() {
    let mut broker = Mosquitto::start(MosquittoOptions::default());
    let d = Daemon::start(&cfg(&broker, ROUTES));
    let ready = |d: &Daemon| http(d.http_port, "GET", "/readyz", &[], b"");
    assert!(wait_until(Instant::now() + T, || ready(&d).0 == 200));
    broker.stop();
    assert!(wait_until(Instant::now() + T, || ready(&d).0 == 503));
    let (_, text) = ready(&d);
    let v = json_body(&text);
    assert_eq!(v["ready"], false);
    assert!(
        v["broker"].as_str().unwrap().starts_with("down") || v["broker"] == "connecting",
        "{v}"
    );
    broker.restart();
    assert!(wait_until(Instant::now() + T, || ready(&d).0 == 200));
    let m = metrics(&d);
    assert!(sample(&m, "mqlink_broker_reconnects_total") >= 1.0, "{m}");
    assert!(
        sample(
            &m,
            r#"mqlink_broker_link_failures_total{cause="connection_lost"}"#
        ) >= 1.0,
        "{m}"
    );
}

#[test]
fn secrets_never_appear_in_logs_errors_metrics_status_or_check() {
    const PASSWORD: &str = "p4ss-Secret-9f3a";
    const TOKEN: &str = "t0ken-Secret-7c1e";
    let broker = Mosquitto::start(MosquittoOptions {
        password: Some(("svc".into(), PASSWORD.into())),
        ..MosquittoOptions::default()
    });
    let yaml = format!(
        "broker: {{url: '{}', username: svc, password: '{PASSWORD}'}}\nsources:\n  http:\n    tokens: ['{TOKEN}']\nroutes:\n{ROUTES}",
        broker.url()
    );
    let d = Daemon::start(&yaml);
    let auth = format!("Bearer {TOKEN}");
    let ct = ("Content-Type", "application/json");
    // Drive errors: wrong token, no route, missing field, a good event.
    let mut outputs = vec![
        http(
            d.http_port,
            "POST",
            "/v1/events/job",
            &[ct, ("Authorization", "Bearer nope")],
            b"{}",
        )
        .1,
        http(
            d.http_port,
            "POST",
            "/v1/events/x",
            &[ct, ("Authorization", &auth)],
            b"{}",
        )
        .1,
        http(
            d.http_port,
            "POST",
            "/v1/events/job",
            &[ct, ("Authorization", &auth)],
            b"{}",
        )
        .1,
        http(
            d.http_port,
            "POST",
            "/v1/events/job",
            &[ct, ("Authorization", &auth)],
            b"{\"id\":1}",
        )
        .1,
    ];
    assert!(
        wait_until(Instant::now() + T, || spool_records(&d) == 0),
        "{}",
        d.log()
    );
    outputs.push(metrics(&d));
    outputs.push(
        http(
            d.http_port,
            "GET",
            "/v1/status",
            &[("Authorization", &auth)],
            b"",
        )
        .1,
    );
    // A wrong broker password is refused (Mosquitto answers "not authorized"): the refusal
    // is logged, without the password.
    let bad = yaml.replace(PASSWORD, "wrong-Secret-0000");
    let mut d2 = Daemon::start(&bad);
    assert!(
        wait_until(Instant::now() + T, || d2
            .log()
            .contains("broker refused the connection: not authorized")),
        "{}",
        d2.log()
    );
    // The refusal is counted by cause in the metrics.
    let m2 = wait_for_sample(
        &d2,
        r#"mqlink_broker_link_failures_total{cause="not_authorized"}"#,
        1.0,
    );
    outputs.push(m2);
    let path = d.dir.path().join("mqlink.yaml");
    let check = mqlink()
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    outputs.push(String::from_utf8_lossy(&check.stdout).into_owned());
    outputs.push(String::from_utf8_lossy(&check.stderr).into_owned());
    outputs.push(d2.log());
    d2.kill();
    let mut d = d;
    assert!(d.terminate().success());
    outputs.push(d.log());
    for (i, out) in outputs.iter().enumerate() {
        for secret in [PASSWORD, TOKEN, "wrong-Secret-0000"] {
            assert!(
                !out.contains(secret),
                "output {i} contains a secret:\n{out}"
            );
        }
    }
}

#[test]
fn sighup_applies_a_valid_config_and_refuses_an_invalid_one_without_losing_spooled_events() {
    let mut broker = Mosquitto::start(MosquittoOptions {
        persistence: true,
        ..MosquittoOptions::default()
    });
    let sub = MosquittoSub::start_ready(
        &broker.client_args(),
        &["-t", "#", "-v", "-q", "1", "-c", "-i", "reload-sub"],
        "probe/x",
    );
    let mut d = Daemon::start(&cfg(&broker, ROUTES));
    // Events spooled while the broker is away must survive both reloads.
    broker.stop();
    for i in 0..5 {
        assert_eq!(
            d.post("/v1/events/job", &format!("{{\"id\":\"s{i}\"}}")).0,
            202
        );
    }
    // 1. Invalid: refused with its location, the old routes stay.
    d.write_config(&cfg(&broker, "  - {match: [job], topic: 'jobs/{id'}\n"));
    d.hangup();
    assert!(
        wait_until(Instant::now() + T, || d
            .log()
            .contains("config reload refused")),
        "{}",
        d.log()
    );
    assert!(
        d.log().contains("mqlink.yaml:3:27: routes[0].topic"),
        "the refusal names file:line: {}",
        d.log()
    );
    assert_eq!(d.post("/v1/events/job", r#"{"id":"after-bad"}"#).0, 202);
    assert_eq!(
        d.post("/v1/events/alert", "{}").0,
        422,
        "no route for alert yet"
    );
    // 2. Valid: a new route publishes.
    d.write_config(&cfg(
        &broker,
        &format!("{ROUTES}  - {{match: [alert], topic: 'alerts/{{level}}'}}\n"),
    ));
    d.hangup();
    assert!(
        wait_until(Instant::now() + T, || d.log().contains("config reloaded")),
        "{}",
        d.log()
    );
    assert_eq!(d.post("/v1/events/alert", r#"{"level":"high"}"#).0, 202);
    broker.restart();
    let mut lines = sub.wait_for_lines(7, T);
    lines.sort();
    let mut want = vec![
        r#"alerts/high {"level":"high"}"#.to_string(),
        r#"jobs/after-bad {"id":"after-bad"}"#.to_string(),
    ];
    want.extend((0..5).map(|i| format!(r#"jobs/s{i} {{"id":"s{i}"}}"#)));
    want.sort();
    assert_eq!(lines, want);
}

#[test]
fn status_and_the_live_stream_show_what_flows() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let d = Daemon::start(&cfg(&broker, ROUTES));
    let mut s = TcpStream::connect(("127.0.0.1", d.http_port)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    while {
        head.clear();
        r.read_line(&mut head).unwrap();
        head != "\r\n"
    } {
        if head.to_ascii_lowercase().starts_with("content-type") {
            assert!(head.contains("text/event-stream"), "{head}");
        }
    }
    assert_eq!(d.post("/v1/events/job", r#"{"id":"seen"}"#).0, 202);
    // Read events until the topic shows up (chunked encoding lines are skipped).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut saw_status, mut saw_topic) = (false, false);
    let mut line = String::new();
    while Instant::now() < deadline && !(saw_status && saw_topic) {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        saw_status |= line.starts_with("event: status");
        saw_topic |= line.starts_with("data: [")
            && line.contains("\"topic\":\"jobs/seen\"")
            && line.contains("\"count\":1");
    }
    assert!(
        saw_status && saw_topic,
        "status: {saw_status}, topic: {saw_topic}"
    );
    let (code, text) = http(d.http_port, "GET", "/v1/status", &[], b"");
    assert_eq!(code, 200);
    let v = json_body(&text);
    assert_eq!(v["broker"]["state"], "connected");
    assert_eq!(v["counters"]["accepted"], 1);
    assert_eq!(v["routes"][0]["topic"], "jobs/{id}");
}
