//! The embedded broker's TLS listener, client certificates and password, exercised with
//! real clients (`mosquitto_pub` / `mosquitto_sub`) against `mqlink broker` and
//! `mqlink run`.

mod common;

use std::path::Path;
use std::time::Instant;

use common::*;
use mqlink_testkit::{MosquittoSub, TlsMaterial, free_port, mosquitto_pub, wait_until};

fn arg(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_string()
}

/// `mqlink broker` arguments for a TLS listener on `port` with the test server certificate.
fn tls_listener(tls: &TlsMaterial, port: u16) -> Vec<String> {
    vec![
        "--tls-listen".into(),
        format!("127.0.0.1:{port}"),
        "--cert".into(),
        arg(tls.server_cert()),
        "--key".into(),
        arg(tls.server_key()),
    ]
}

/// mosquitto client arguments for a TLS connection to `port` trusting `ca`.
fn tls_client(port: u16, ca: &Path) -> Vec<String> {
    vec![
        "-h".into(),
        "localhost".into(),
        "-p".into(),
        port.to_string(),
        "--cafile".into(),
        arg(ca),
    ]
}

/// Publish one QoS 1 message; true when the broker acknowledged it.
fn published(conn: &[String], extra: &[&str]) -> bool {
    let mut args = conn.to_vec();
    args.extend(["-t", "secure/x", "-m", "m", "-q", "1"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = mosquitto_pub(&args);
    out.status.success()
}

#[test]
fn tls_listener_serves_clients_that_trust_its_ca_and_only_them() {
    let tls = TlsMaterial::generate();
    let tls_port = free_port();
    let broker = EmbeddedBroker::start_with(&tls_listener(&tls, tls_port), &[tls_port]);
    let conn = tls_client(tls_port, tls.ca_file());

    // A subscriber over TLS receives what a plain-TCP client publishes.
    let sub =
        MosquittoSub::start_ready(&conn, &["-t", "secure/#", "-v", "-q", "1"], "secure/probe");
    mpub(
        &broker.client_args(),
        &["-t", "secure/a", "-m", "over tls", "-q", "1"],
    );
    assert_eq!(sub.wait_for_lines(1, T), ["secure/a over tls"]);

    // The certificate does not verify against another CA: the handshake fails.
    assert!(!published(&tls_client(tls_port, tls.other_ca_file()), &[]));
    // Plain MQTT on the TLS port is not served.
    assert!(!published(
        &["-h", "127.0.0.1", "-p", &tls_port.to_string()].map(String::from),
        &[]
    ));
    // And the trusting client is still served after those failures.
    assert!(published(&conn, &[]));
}

#[test]
fn client_ca_requires_a_certificate_it_signed() {
    let tls = TlsMaterial::generate();
    let tls_port = free_port();
    let mut args = tls_listener(&tls, tls_port);
    args.extend(["--client-ca".into(), arg(tls.ca_file())]);
    let _broker = EmbeddedBroker::start_with(&args, &[tls_port]);
    let conn = tls_client(tls_port, tls.ca_file());

    assert!(
        !published(&conn, &[]),
        "a client without a certificate got in"
    );
    let (other_cert, other_key) = (arg(tls.other_client_cert()), arg(tls.other_client_key()));
    assert!(
        !published(&conn, &["--cert", &other_cert, "--key", &other_key]),
        "a certificate from another CA got in"
    );
    let (cert, key) = (arg(tls.client_cert()), arg(tls.client_key()));
    assert!(published(&conn, &["--cert", &cert, "--key", &key]));
}

#[test]
fn broker_command_requires_the_password_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "s3cret-broker\n").unwrap();
    let broker = EmbeddedBroker::start_with(
        &[
            "--username".into(),
            "ops".into(),
            "--password-file".into(),
            arg(&file),
        ],
        &[],
    );
    let conn = broker.client_args();
    assert!(!published(&conn, &[]), "anonymous client accepted");
    assert!(!published(&conn, &["-u", "ops", "-P", "wrong"]));
    assert!(published(&conn, &["-u", "ops", "-P", "s3cret-broker"]));
}

#[test]
fn run_serves_events_to_a_mutual_tls_subscriber() {
    let tls = TlsMaterial::generate();
    let (port, tls_port) = (free_port(), free_port());
    let config = format!(
        "broker:\n  url: embedded\n  embedded:\n    listen: '127.0.0.1:{port}'\n    \
         username: app\n    password: app-pw\n    tls:\n      listen: '127.0.0.1:{tls_port}'\n      \
         cert_file: '{}'\n      key_file: '{}'\n      client_ca_file: '{}'\n\
         routes:\n  - {{match: [Ping], topic: 'ping/{{event}}'}}\n",
        arg(tls.server_cert()),
        arg(tls.server_key()),
        arg(tls.ca_file()),
    );
    let d = Daemon::start(&config);
    let ready = wait_until(Instant::now() + T, || {
        http(d.http_port, "GET", "/readyz", &[], b"").0 == 200
    });
    assert!(ready, "{}", d.log());

    let mut conn = tls_client(tls_port, tls.ca_file());
    conn.extend(
        [
            "--cert",
            &arg(tls.client_cert()),
            "--key",
            &arg(tls.client_key()),
            "-u",
            "app",
            "-P",
            "app-pw",
        ]
        .map(String::from),
    );
    let sub = MosquittoSub::start_ready(&conn, &["-t", "ping/#", "-v", "-q", "1"], "ping/probe");
    let (status, body) = d.post("/v1/events/Ping", r#"{"n":1}"#);
    assert_eq!(status, 202, "{body}");
    let line = &sub.wait_for_lines(1, T)[0];
    assert!(line.starts_with("ping/Ping {"), "{line}");
    assert!(!d.log().contains("app-pw"), "the password was logged");

    // `mqlink check` shows the TLS listener in the plan.
    let path = d.dir.path().join("mqlink.yaml");
    let out = mqlink().args(["check", "-c"]).arg(path).output().unwrap();
    assert_ok(&out, "mqlink check");
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains(&format!(
            "and mqtts://127.0.0.1:{tls_port} (client certificates required), password required"
        )),
        "{plan}"
    );
}

#[test]
fn a_key_that_does_not_fit_the_certificate_is_refused_with_its_path() {
    let tls = TlsMaterial::generate();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mqlink.yaml");
    std::fs::write(
        &file,
        format!(
            "broker:\n  url: embedded\n  embedded:\n    tls:\n      cert_file: '{}'\n      key_file: '{}'\n",
            arg(tls.server_cert()),
            arg(tls.client_key()),
        ),
    )
    .unwrap();
    let out = mqlink().args(["check", "-c"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mqlink.yaml:6:"), "{err}");
    assert!(err.contains("broker.embedded.tls.key_file"), "{err}");
    assert!(err.contains(&arg(tls.client_key())), "{err}");

    // The same mistake on the command line, before anything listens.
    let tls_port = free_port();
    let out = mqlink()
        .args(["broker", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--tls-listen", &format!("127.0.0.1:{tls_port}")])
        .args([
            "--cert",
            &arg(tls.server_cert()),
            "--key",
            &arg(tls.client_key()),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not fit the certificate"), "{err}");
}

#[test]
fn a_network_listener_without_authentication_is_refused() {
    // Refused before anything binds (tests only ever listen on loopback).
    let out = mqlink()
        .args(["broker", "--listen", "0.0.0.0:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0.0.0.0:1 is reachable from other machines"),
        "{err}"
    );
    assert!(err.contains("--allow-anonymous"), "{err}");

    // The same through `mqlink run --embedded-listen`, which overrides the config.
    let dir = tempfile::tempdir().unwrap();
    let out = mqlink()
        .current_dir(dir.path())
        .args([
            "run",
            "--embedded-listen",
            "0.0.0.0:1",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("would admit anyone"), "{err}");
}

#[test]
fn guessing_the_configured_password_does_not_lock_mqlink_out_of_its_own_broker() {
    let port = free_port();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("seen.jsonl");
    let base = format!(
        "broker:\n  url: embedded\n  embedded: {{listen: '127.0.0.1:{port}', username: app, password: app-pw}}\n\
         routes:\n  - {{match: [Ping], topic: 'ping/{{event}}'}}\n"
    );
    let mut d = Daemon::start(&base);
    let ready = wait_until(Instant::now() + T, || {
        http(d.http_port, "GET", "/readyz", &[], b"").0 == 200
    });
    assert!(ready, "{}", d.log());

    // Someone on another address guesses app's password until the broker locks the name
    // (mqtt5: 5 failures within 60 s lock a user name and an address for 5 minutes).
    let login = |from: &str, password: &str| {
        let port = port.to_string();
        let args = [
            "-A",
            from,
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "app",
            "-P",
            password,
        ];
        mosquitto_pub(&[&args[..], &["-t", "x", "-m", "y", "-q", "1"]].concat())
            .status
            .success()
    };
    for _ in 0..6 {
        assert!(!login("127.0.0.2", "wrong"));
    }
    assert!(
        !login("127.0.0.3", "app-pw"),
        "the broker did not lock the user name; this test proves nothing then"
    );

    // A connector added now opens new connections, and they get in: mqlink logs in to its
    // own broker as a private user, not as `app`.
    d.write_config(&format!(
        "{base}connectors:\n  - name: seen\n    subscribe: ['ping/#']\n    sink: {{file: {{path: '{}'}}}}\n",
        file.display()
    ));
    d.hangup();
    let delivered = wait_until(Instant::now() + T, || {
        assert_eq!(d.post("/v1/events/Ping", "{}").0, 202);
        std::fs::read_to_string(&file).is_ok_and(|s| s.contains("ping/Ping"))
    });
    assert!(delivered, "the connector never delivered:\n{}", d.log());
    assert!(!d.log().contains("app-pw"));
}
