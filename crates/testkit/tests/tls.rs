//! The TLS listener with generated material, verified by the real OpenSSL-based clients.

use std::time::Duration;

use mqlink_testkit::{Mosquitto, MosquittoOptions, MosquittoSub, TlsMaterial, mosquitto_pub};

const WAIT: Duration = Duration::from_secs(10);

fn args(base: &[String], extra: &[&str]) -> Vec<String> {
    let mut all = base.to_vec();
    all.extend(extra.iter().map(|s| (*s).to_owned()));
    all
}

fn tls_broker(require_client_cert: bool) -> Mosquitto {
    Mosquitto::start(MosquittoOptions {
        tcp: false,
        tls: Some(TlsMaterial::generate()),
        require_client_cert,
        ..Default::default()
    })
}

#[test]
fn generated_material_is_pem_on_disk() {
    let tls = TlsMaterial::generate();
    for path in [
        tls.ca_file(),
        tls.server_cert(),
        tls.client_cert(),
        tls.other_ca_file(),
    ] {
        let pem = std::fs::read_to_string(path).unwrap();
        assert!(
            pem.starts_with("-----BEGIN CERTIFICATE-----"),
            "{}",
            path.display()
        );
    }
    for path in [tls.server_key(), tls.client_key()] {
        let pem = std::fs::read_to_string(path).unwrap();
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{}",
            path.display()
        );
    }
    assert_ne!(
        std::fs::read(tls.ca_file()).unwrap(),
        std::fs::read(tls.other_ca_file()).unwrap()
    );
}

#[test]
fn round_trip_with_cafile_to_localhost() {
    let broker = tls_broker(false);
    assert_eq!(
        broker.tls_url(),
        format!("mqtts://localhost:{}", broker.tls_port())
    );
    let sub = MosquittoSub::start_ready(&broker.tls_client_args(), &["-t", "s/#", "-v"], "s/probe");
    let out = mosquitto_pub(&args(
        &broker.tls_client_args(),
        &["-t", "s/1", "-m", "secure"],
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sub.wait_for_lines(1, WAIT), ["s/1 secure"]);
}

#[test]
fn certificate_also_verifies_for_the_ip_address() {
    let broker = tls_broker(false);
    let tls = broker.tls().unwrap();
    let port = broker.tls_port().to_string();
    let out = mosquitto_pub(&[
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "--cafile",
        tls.ca_file().to_str().unwrap(),
        "-t",
        "t",
        "-m",
        "x",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn wrong_ca_is_rejected_by_the_client() {
    let broker = tls_broker(false);
    let tls = broker.tls().unwrap();
    let port = broker.tls_port().to_string();
    let out = mosquitto_pub(&[
        "-h",
        "localhost",
        "-p",
        &port,
        "--cafile",
        tls.other_ca_file().to_str().unwrap(),
        "-t",
        "t",
        "-m",
        "x",
    ]);
    assert!(
        !out.status.success(),
        "publish trusting the wrong CA succeeded"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TLS error"), "{stderr}");
}

#[test]
fn required_client_certificate_round_trip() {
    let broker = tls_broker(true);
    let client_args = broker.tls_client_args();
    assert!(client_args.iter().any(|a| a == "--cert"));
    let sub = MosquittoSub::start_ready(&client_args, &["-t", "c/#"], "c/probe");
    let out = mosquitto_pub(&args(
        &client_args,
        &["-t", "c/1", "-m", "mutual", "-q", "1"],
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sub.wait_for_lines(1, WAIT), ["mutual"]);
}

#[test]
fn missing_or_foreign_client_certificate_is_refused() {
    let broker = tls_broker(true);
    let tls = broker.tls().unwrap();
    let port = broker.tls_port().to_string();
    let ca = tls.ca_file().to_str().unwrap();
    let base = [
        "-h",
        "localhost",
        "-p",
        &port,
        "--cafile",
        ca,
        "-t",
        "t",
        "-m",
        "x",
        "-q",
        "1",
    ];

    let without = mosquitto_pub(&base);
    assert!(
        !without.status.success(),
        "publish without a client certificate succeeded"
    );

    let mut foreign = base.to_vec();
    foreign.extend([
        "--cert",
        tls.other_client_cert().to_str().unwrap(),
        "--key",
        tls.other_client_key().to_str().unwrap(),
    ]);
    let out = mosquitto_pub(&foreign);
    assert!(
        !out.status.success(),
        "publish with a foreign client certificate succeeded"
    );
    // Mosquitto writes its log line after the client has already seen the handshake fail:
    // polled, with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut log = broker.log();
    while !(log.contains("peer did not return a certificate")
        && log.contains("certificate verify failed"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
        log = broker.log();
    }
    assert!(log.contains("peer did not return a certificate"), "{log}");
    assert!(log.contains("certificate verify failed"), "{log}");
}
