//! Broker refusals are explained: `mqlink run` against a broker that refuses it reports the
//! cause in its log and in `/readyz` (503), and keeps retrying with backoff.

mod common;

use std::time::Instant;

use common::*;
use mqlink_testkit::{
    Mosquitto, MosquittoOptions, TlsMaterial, free_port, mosquitto_pub, wait_until,
};

/// Wait until `/readyz` answers 503 with a broker reason containing `needle` (lower case);
/// return it.
fn readyz_reason(d: &Daemon, needle: &str) -> String {
    let mut last = String::new();
    let ok = wait_until(Instant::now() + T, || {
        let (s, text) = http(d.http_port, "GET", "/readyz", &[], b"");
        let v = json_body(&text);
        last = format!("{s} {}", v["broker"].as_str().unwrap_or_default());
        s == 503 && last.to_lowercase().contains(needle)
    });
    assert!(
        ok,
        "readyz never named {needle:?}; last: {last}\nlog:\n{}",
        d.log()
    );
    last
}

fn config(url: &str, broker_extra: &str) -> String {
    format!(
        "broker:\n  url: '{url}'\n  reconnect: {{min: 100ms, max: 500ms}}\n{broker_extra}routes:\n  - {{match: [Ping], topic: ping}}\n"
    )
}

#[test]
fn bad_credentials_are_named_in_the_log_and_readyz() {
    let broker = Mosquitto::start(MosquittoOptions {
        password: Some(("alice".into(), "right".into())),
        ..MosquittoOptions::default()
    });
    let d = Daemon::start(&config(
        &broker.url(),
        "  username: alice\n  password: wrong-pw\n",
    ));
    // Mosquitto 2 answers a wrong password on MQTT 5 with 0x87 "not authorized" (0x86
    // "bad user name or password" is what we print when a broker sends that code).
    readyz_reason(
        &d,
        "broker refused the connection: not authorized (code 0x87",
    );
    // Retried with backoff, one line per attempt, and the password never logged.
    let ok = wait_until(Instant::now() + T, || {
        d.log().matches("not authorized (code 0x87").count() >= 2
    });
    assert!(ok, "{}", d.log());
    assert!(!d.log().contains("wrong-pw"));
}

#[test]
fn tls_failures_are_named_in_readyz() {
    let broker = Mosquitto::start(MosquittoOptions {
        tls: Some(TlsMaterial::generate()),
        ..MosquittoOptions::default()
    });
    let tls = broker.tls().unwrap();
    let ca = tls.ca_file().to_str().unwrap().to_string();
    let other_ca = tls.other_ca_file().to_str().unwrap().to_string();

    let unknown_ca = Daemon::start(&config(
        &broker.tls_url(),
        &format!("  tls: {{ca_file: '{other_ca}'}}\n"),
    ));
    let r = readyz_reason(
        &unknown_ca,
        "unknownissuer (the server certificate is not signed by a trusted ca",
    );
    eprintln!("unknown CA: {r}");

    let wrong_host = Daemon::start(&config(
        &broker.tls_url(),
        &format!("  tls: {{ca_file: '{ca}', server_name: wrong.example}}\n"),
    ));
    let r = readyz_reason(
        &wrong_host,
        "certificate not valid for name \"wrong.example\"",
    );
    eprintln!("wrong host: {r}");

    // Both are counted as TLS failures.
    for d in [&unknown_ca, &wrong_host] {
        wait_for_sample(d, r#"mqlink_broker_link_failures_total{cause="tls"}"#, 1.0);
    }
}

#[test]
fn embedded_broker_requires_its_username_and_password() {
    let port = free_port();
    let d = Daemon::start(&format!(
        "broker:\n  url: embedded\n  embedded: {{listen: '127.0.0.1:{port}', username: emb, password: emb-pw}}\n\
         routes:\n  - {{match: [Ping], topic: ping}}\n"
    ));
    // The daemon itself logs in with them and becomes ready.
    let ok = wait_until(Instant::now() + T, || {
        http(d.http_port, "GET", "/readyz", &[], b"").0 == 200
    });
    assert!(ok, "{}", d.log());
    let base = [
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-t",
        "x",
        "-m",
        "y",
        "-q",
        "1",
    ]
    .map(String::from)
    .to_vec();
    let anonymous = mosquitto_pub(&base);
    assert!(!anonymous.status.success(), "anonymous client accepted");
    let wrong = mosquitto_pub(
        &[
            base.clone(),
            ["-u", "emb", "-P", "nope"].map(String::from).to_vec(),
        ]
        .concat(),
    );
    assert!(!wrong.status.success(), "wrong password accepted");
    let right = mosquitto_pub(
        &[
            base,
            ["-u", "emb", "-P", "emb-pw"].map(String::from).to_vec(),
        ]
        .concat(),
    );
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    assert!(!d.log().contains("emb-pw"));
}

#[test]
fn an_expired_broker_certificate_is_named_in_readyz() {
    let broker = Mosquitto::start(MosquittoOptions {
        tls: Some(TlsMaterial::generate_expired_server()),
        ..MosquittoOptions::default()
    });
    let ca = broker
        .tls()
        .unwrap()
        .ca_file()
        .to_str()
        .unwrap()
        .to_string();
    let d = Daemon::start(&config(
        &broker.tls_url(),
        &format!("  tls: {{ca_file: '{ca}'}}\n"),
    ));
    let r = readyz_reason(&d, "invalid peer certificate: certificate expired");
    eprintln!("expired: {r}");
    wait_for_sample(&d, r#"mqlink_broker_link_failures_total{cause="tls"}"#, 1.0);
}

#[test]
fn disabled_verification_warns_at_every_connect() {
    // A TCP peer that hangs up at once: every attempt is a new connect.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let d = Daemon::start(&config(
        &format!("mqtts://127.0.0.1:{port}"),
        "  tls: {insecure_skip_verify: true}\n",
    ));
    let ok = wait_until(Instant::now() + T, || {
        d.log()
            .matches("TLS certificate verification is DISABLED")
            .count()
            >= 3
    });
    assert!(ok, "{}", d.log());
    assert!(d.log().contains("WARN"));
}
