//! The free-standing helpers.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use mqlink_testkit::{free_port, require_binary, wait_until};

#[test]
fn free_port_can_be_bound() {
    let port = free_port();
    assert_ne!(port, 0);
    TcpListener::bind(("127.0.0.1", port)).unwrap();
}

#[test]
#[should_panic(
    expected = "mqlink-no-such-binary not found on PATH: install Debian package 'mqlink-pkg' (scripts/test.sh does this)"
)]
fn missing_binary_fails_naming_binary_and_package() {
    let _ = require_binary("mqlink-no-such-binary", "mqlink-pkg");
}

#[test]
fn peers_are_installed() {
    for (bin, pkg) in [
        ("mosquitto", "mosquitto"),
        ("mosquitto_passwd", "mosquitto"),
        ("mosquitto_sub", "mosquitto-clients"),
        ("mosquitto_pub", "mosquitto-clients"),
        ("nats-server", "nats-server"),
    ] {
        assert!(require_binary(bin, pkg).is_absolute());
    }
}

#[test]
fn wait_until_returns_true_once_the_condition_holds_and_false_at_the_deadline() {
    let mut calls = 0;
    assert!(wait_until(Instant::now() + Duration::from_secs(5), || {
        calls += 1;
        calls == 4
    }));
    assert_eq!(calls, 4);

    let start = Instant::now();
    assert!(!wait_until(start + Duration::from_millis(30), || false));
    assert!(start.elapsed() >= Duration::from_millis(30));
}
