//! The private Mosquitto broker and the CLI client helpers, against the real binaries.

use std::net::TcpStream;
use std::time::Duration;

use mqlink_testkit::{Mosquitto, MosquittoOptions, MosquittoSub, mosquitto_pub};

const WAIT: Duration = Duration::from_secs(10);

fn pub_ok(args: &[String], extra: &[&str]) {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    let out = mosquitto_pub(&all);
    assert!(
        out.status.success(),
        "mosquitto_pub {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pub_sub_round_trip_on_a_private_port() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    assert_ne!(broker.port(), 1883, "must not use the system broker's port");
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port()));

    let sub = MosquittoSub::start_ready(
        &broker.client_args(),
        &["-t", "rt/#", "-v", "-q", "1"],
        "rt/probe",
    );
    pub_ok(
        &broker.client_args(),
        &["-t", "rt/a", "-m", "hello", "-q", "1"],
    );
    pub_ok(
        &broker.client_args(),
        &["-t", "rt/b", "-m", "world", "-q", "1"],
    );

    assert_eq!(sub.wait_for_lines(2, WAIT), ["rt/a hello", "rt/b world"]);
    assert!(
        sub.lines().iter().all(|l| !l.contains("probe")),
        "probe lines must be dropped: {:?}",
        sub.lines()
    );
}

#[test]
fn subscriber_with_count_exits_and_keeps_its_lines() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    // Retained messages reach a subscriber whenever it subscribes: no readiness race.
    for i in 0..3 {
        pub_ok(
            &broker.client_args(),
            &["-t", &format!("count/{i}"), "-m", &format!("m{i}"), "-r"],
        );
    }
    let mut args = broker.client_args();
    args.extend(["-t", "count/#", "-C", "3", "-V", "mqttv5"].map(String::from));
    let mut sub = MosquittoSub::start(&args);
    let status = sub.wait_for_exit(WAIT);
    assert!(status.success(), "stderr: {}", sub.stderr());
    let mut lines = sub.lines();
    lines.sort();
    assert_eq!(lines, ["m0", "m1", "m2"]);
}

#[test]
#[should_panic(expected = "expected 1 lines within")]
fn wait_for_lines_panics_with_what_arrived() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let sub = MosquittoSub::start_ready(&broker.client_args(), &["-t", "quiet/#"], "quiet/probe");
    sub.wait_for_lines(1, Duration::from_millis(200));
}

#[test]
fn brokers_started_together_get_distinct_ports() {
    let a = Mosquitto::start(MosquittoOptions::default());
    let b = Mosquitto::start(MosquittoOptions::default());
    assert_ne!(a.port(), b.port());
}

#[test]
fn password_refuses_anonymous_and_accepts_the_user() {
    let broker = Mosquitto::start(MosquittoOptions {
        password: Some(("alice".into(), "s3cret".into())),
        ..Default::default()
    });
    let port = broker.port().to_string();
    let anonymous = mosquitto_pub(&["-h", "127.0.0.1", "-p", &port, "-t", "t", "-m", "x"]);
    assert!(
        !anonymous.status.success(),
        "anonymous publish was accepted"
    );
    let wrong = mosquitto_pub(&[
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-u",
        "alice",
        "-P",
        "nope",
        "-t",
        "t",
        "-m",
        "x",
    ]);
    assert!(!wrong.status.success(), "wrong password was accepted");

    let sub = MosquittoSub::start_ready(&broker.client_args(), &["-t", "pw/#"], "pw/probe");
    pub_ok(&broker.client_args(), &["-t", "pw/1", "-m", "authed"]);
    assert_eq!(sub.wait_for_lines(1, WAIT), ["authed"]);
}

#[test]
fn restart_keeps_ports_and_persistence() {
    let mut broker = Mosquitto::start(MosquittoOptions {
        persistence: true,
        ..Default::default()
    });
    let port = broker.port();
    pub_ok(
        &broker.client_args(),
        &["-t", "keep", "-m", "retained", "-r", "-q", "1"],
    );

    assert!(broker.stop().is_some());
    assert!(!broker.is_running());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port still accepting after stop"
    );

    broker.restart();
    assert_eq!(broker.port(), port);
    assert!(broker.is_running());
    let mut args = broker.client_args();
    args.extend(["-t", "keep", "-C", "1", "-W", "5"].map(String::from));
    let mut sub = MosquittoSub::start(&args);
    assert!(
        sub.wait_for_exit(WAIT).success(),
        "stderr: {}",
        sub.stderr()
    );
    assert_eq!(sub.lines(), ["retained"], "log:\n{}", broker.log());
    assert!(broker.persistence_dir().join("mosquitto.db").exists());
}

#[test]
fn kill_then_restart_accepts_again_on_the_same_port() {
    let mut broker = Mosquitto::start(MosquittoOptions::default());
    let port = broker.port();
    assert!(broker.kill().is_some());
    broker.restart();
    assert_eq!(broker.port(), port);
    let sub = MosquittoSub::start_ready(&broker.client_args(), &["-t", "k/#"], "k/probe");
    pub_ok(&broker.client_args(), &["-t", "k/1", "-m", "again"]);
    assert_eq!(sub.wait_for_lines(1, WAIT), ["again"]);
    assert!(broker.log().contains("mqlink-testkit: restart"));
}

#[test]
fn generated_config_raises_the_queue_limit_and_log_is_readable() {
    let broker = Mosquitto::start(MosquittoOptions {
        max_inflight_messages: Some(7),
        extra_config: vec!["max_keepalive 120".into()],
        ..Default::default()
    });
    let config = std::fs::read_to_string(broker.config_path()).unwrap();
    assert!(config.contains("max_queued_messages 1000000"), "{config}");
    assert!(config.contains("max_inflight_messages 7"), "{config}");
    assert!(config.contains("max_keepalive 120"), "{config}");
    assert!(broker.log().contains("running"), "{}", broker.log());
}

#[test]
fn a_broken_config_fails_with_the_log() {
    let result = std::panic::catch_unwind(|| {
        Mosquitto::start(MosquittoOptions {
            extra_config: vec!["no_such_option 1".into()],
            ..Default::default()
        })
    });
    let message = *result
        .expect_err("start must fail")
        .downcast::<String>()
        .unwrap();
    assert!(message.contains("exited during startup"), "{message}");
    assert!(message.contains("no_such_option"), "{message}");
}
