//! Mosquitto stopped and restarted in the middle of 50,000 QoS 1 publishes: every message is
//! confirmed to `mqlink pub` and reaches the subscriber; none is lost.
//!
//! The broker is stopped with SIGTERM so that it saves the subscriber's persistent session
//! (a broker killed with SIGKILL loses whatever it had acknowledged but not yet delivered,
//! which no client can prevent). What is under test is the publisher: messages queued while
//! the broker is down and messages in flight at the stop must all arrive after the restart.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use mqlink_testkit::{Mosquitto, MosquittoOptions, MosquittoSub, wait_until};

#[test]
fn broker_restart_mid_stream_loses_nothing() {
    const N: usize = 50_000;
    let mut broker = Mosquitto::start(MosquittoOptions {
        persistence: true,
        ..MosquittoOptions::default()
    });
    let args = broker.client_args();
    let sub = MosquittoSub::start_ready(
        &args,
        &["-t", "load/#", "-q", "1", "-c", "-i", "restart-sub"],
        "load/probe",
    );
    let mut publisher = mqlink()
        .args([
            "pub",
            "--url",
            &broker.url(),
            "-t",
            "load/x",
            "-q",
            "1",
            "-l",
            "-i",
            "restart-pub",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = publisher.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for i in 0..N {
            writeln!(buf, "msg-{i}").unwrap();
        }
        stdin.write_all(&buf).unwrap();
    });

    assert!(
        wait_until(Instant::now() + Duration::from_secs(60), || sub
            .lines()
            .len()
            >= N / 5),
        "subscriber saw only {} messages before the restart",
        sub.lines().len()
    );
    broker.stop();
    broker.restart();
    feeder.join().unwrap();

    let out = publisher.wait_with_output().unwrap();
    assert_ok(&out, "mqlink pub across a broker restart");

    let complete = wait_until(Instant::now() + Duration::from_secs(60), || {
        sub.lines().iter().collect::<HashSet<_>>().len() >= N
    });
    let lines = sub.lines();
    let unique: HashSet<&String> = lines.iter().collect();
    assert!(
        complete,
        "subscriber has {} of {N} distinct messages",
        unique.len()
    );
    for i in 0..N {
        assert!(
            unique.contains(&format!("msg-{i}")),
            "msg-{i} never arrived"
        );
    }
    eprintln!(
        "{} deliveries for {N} messages ({} duplicates)",
        lines.len(),
        lines.len() - unique.len()
    );
}
