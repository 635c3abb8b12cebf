//! The embedded broker side by side with Mosquitto 2: the same MQTT scenario runs against a
//! private Mosquitto and against `mqlink broker`, and both must give the expected outcome.
//!
//! The scenarios live in `conformance/scenarios.py`, a raw-socket MQTT client (no client
//! library, so a scenario decides exactly what is acknowledged and when). Each prints one
//! JSON outcome. Asserting Mosquitto's outcome too keeps the expectation honest: if the
//! reference broker disagrees with it, the scenario is wrong, not the embedded broker.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Daemon, EmbeddedBroker, metrics, sample};
use mqlink_testkit::{Mosquitto, MosquittoOptions, free_port, require_binary};
use serde_json::{Value, json};

/// Run `scenario` against the broker on `port`; its JSON outcome.
fn run(port: u16, scenario: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/scenarios.py");
    let out = Command::new(require_binary("python3", "python3"))
        .arg(script)
        .arg(port.to_string())
        .arg(scenario)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "scenario {scenario} on port {port} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "scenario {scenario}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Both brokers give `expected` for `scenario` (run at the same time: some scenarios wait
/// out an expiry).
fn same_outcome(scenario: &str, expected: Value) {
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let embedded = EmbeddedBroker::start();
    let (reference, ours) = std::thread::scope(|s| {
        let reference = s.spawn(|| run(mosquitto.port(), scenario));
        let ours = s.spawn(|| run(embedded.port, scenario));
        (reference.join().unwrap(), ours.join().unwrap())
    });
    assert_eq!(
        reference, expected,
        "Mosquitto, the reference, gave another outcome for {scenario}: the scenario is wrong"
    );
    assert_eq!(
        ours, expected,
        "the embedded broker differs from Mosquitto on {scenario}"
    );
}

fn queued_while_away() -> Value {
    // QoS 0 (m3) is not queued for an offline client; QoS 1 and 2 are, in order.
    json!({
        "suback": [2],
        "session_present": true,
        "messages": [
            {"topic": "/0", "payload": "m0 q1", "qos": 1},
            {"topic": "/1", "payload": "m1 q1", "qos": 1},
            {"topic": "/2", "payload": "m2 q2", "qos": 2},
            {"topic": "/4", "payload": "m4 q1", "qos": 1},
        ]
    })
}

#[test]
fn persistent_session_queues_while_away_v311() {
    same_outcome("offline_queue_v311", queued_while_away());
}

#[test]
fn persistent_session_queues_while_away_v5() {
    same_outcome("offline_queue_v5", queued_while_away());
}

#[test]
fn persistent_session_queues_while_away_v31() {
    // MQTT 3.1's CONNACK has no session-present flag: the byte is 0 on both brokers.
    let mut expected = queued_while_away();
    expected["session_present"] = json!(false);
    same_outcome("offline_queue_v31", expected);
}

fn redelivered(qos: u8) -> Value {
    let first = json!({"dup": false, "payload": "once", "qos": qos});
    let again = json!({"dup": true, "payload": "once", "qos": qos});
    let mut steps = vec![first, again];
    if qos == 2 {
        // PUBREC sent, PUBCOMP not: the PUBREL is owed again after reconnect.
        steps.push(json!({"packet": 6, "pid": 1}));
        steps.push(json!({"packet": 6, "pid": 1}));
    }
    steps.push(json!({"after_ack": []}));
    json!({"session_present": true, "steps": steps})
}

/// Topics are per run; keep what the brokers must agree on.
fn without_topics(mut v: Value) -> Value {
    if let Some(steps) = v["steps"].as_array_mut() {
        for s in steps {
            if let Some(o) = s.as_object_mut() {
                o.remove("topic");
            }
        }
    }
    v
}

fn same_redelivery(scenario: &str, qos: u8) {
    let mut expected = redelivered(qos);
    if scenario.ends_with("_v31") {
        // MQTT 3.1's CONNACK has no session-present flag.
        expected["session_present"] = json!(false);
    }
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let embedded = EmbeddedBroker::start();
    let reference = without_topics(run(mosquitto.port(), scenario));
    let ours = without_topics(run(embedded.port, scenario));
    assert_eq!(reference, expected, "Mosquitto on {scenario}");
    assert_eq!(ours, expected, "embedded broker on {scenario}");
}

#[test]
fn unacknowledged_qos1_is_redelivered_with_dup_v31() {
    same_redelivery("redelivery_qos1_v31", 1);
}

#[test]
fn unacknowledged_qos2_and_an_owed_pubrel_are_redelivered_v31() {
    same_redelivery("redelivery_qos2_v31", 2);
}

#[test]
fn unacknowledged_qos1_is_redelivered_with_dup_v311() {
    same_redelivery("redelivery_qos1_v311", 1);
}

#[test]
fn unacknowledged_qos1_is_redelivered_with_dup_v5() {
    same_redelivery("redelivery_qos1_v5", 1);
}

#[test]
fn unacknowledged_qos2_and_an_owed_pubrel_are_redelivered_v311() {
    same_redelivery("redelivery_qos2_v311", 2);
}

#[test]
fn unacknowledged_qos2_and_an_owed_pubrel_are_redelivered_v5() {
    same_redelivery("redelivery_qos2_v5", 2);
}

#[test]
fn session_expiry_ends_the_session_and_only_then() {
    same_outcome(
        "session_expiry",
        json!({
            "1": {"session_present": false, "payloads": []},
            "300": {"session_present": true, "payloads": ["while away 300"]},
        }),
    );
}

#[test]
fn queued_messages_expire_and_the_rest_carry_their_remaining_expiry() {
    same_outcome(
        "message_expiry",
        json!({
            "session_present": true,
            "messages": [
                {"payload": "long", "expiry": true},
                {"payload": "forever", "expiry": null},
            ]
        }),
    );
}

#[test]
fn messages_and_retained_messages_keep_exactly_the_properties_they_were_published_with() {
    // Including a publisher's own `x-mqtt-client-id`, which mqtt5 used to overwrite.
    same_outcome(
        "user_properties",
        json!({"live": true, "retained": true, "retain_flag": true}),
    );
}

#[test]
fn a_will_keeps_exactly_its_properties() {
    same_outcome(
        "will_properties",
        json!({
            "payload": "gone",
            "props": [["content_type", "text/plain"], ["user", ["k", "v"]]],
            "expiry_kept": true,
        }),
    );
}

#[test]
fn what_fits_the_client_maximum_packet_size_arrives_and_only_the_rest_is_dropped() {
    same_outcome("max_packet_size", json!({"sizes": [200, 250]}));
}

#[test]
fn a_topic_alias_beyond_the_announced_maximum_is_a_protocol_error() {
    // DISCONNECT 0x94 (Topic Alias invalid), the connection closed, the message not routed.
    same_outcome(
        "topic_alias",
        json!({
            "announced": true,
            "delivered": ["aliased", "by alias"],
            "beyond": 0x94,
            "closed": true,
            "beyond_delivered": [],
        }),
    );
}

#[test]
fn with_persistence_retained_and_queued_messages_survive_a_restart() {
    let expected = json!({
        "retained": [{
            "topic": "persist/retained", "payload": "kept", "retain": true,
            "props": [["user", ["k", "v"]]],
        }],
        "session_present": true,
        "queued": [
            {"topic": "persist/topic/1", "payload": "queued q1", "qos": 1},
            {"topic": "persist/topic/2", "payload": "queued q2", "qos": 2},
        ],
    });

    let mut mosquitto = Mosquitto::start(MosquittoOptions {
        persistence: true,
        ..MosquittoOptions::default()
    });
    run(mosquitto.port(), "persist_before");
    mosquitto.restart();
    assert_eq!(
        run(mosquitto.port(), "persist_after"),
        expected,
        "Mosquitto"
    );

    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--persistence".to_string(),
        dir.path().display().to_string(),
    ];
    let mut embedded = EmbeddedBroker::start_with(&args, &[]);
    run(embedded.port, "persist_before");
    assert!(
        embedded.terminate().success(),
        "mqlink broker did not stop cleanly"
    );
    let embedded = EmbeddedBroker::start_with(&args, &[]);
    assert_eq!(
        run(embedded.port, "persist_after"),
        expected,
        "embedded broker"
    );
}

#[test]
fn with_persistence_an_mqtt5_session_survives_a_restart() {
    // Embedded only: Mosquitto 2.0.11 answered session present 0 here (see
    // `persist_before` in scenarios.py).
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--persistence".to_string(),
        dir.path().display().to_string(),
    ];
    let mut embedded = EmbeddedBroker::start_with(&args, &[]);
    run(embedded.port, "persist5_before");
    assert!(embedded.terminate().success());
    let embedded = EmbeddedBroker::start_with(&args, &[]);
    assert_eq!(
        run(embedded.port, "persist5_after"),
        json!({
            "session_present": true,
            "queued": [{
                "topic": "persist/topic5/1", "payload": "queued v5",
                "props": [["user", ["k", "v"]]],
            }],
        })
    );
}

#[test]
fn without_persistence_a_restart_forgets_sessions_and_retained_messages() {
    // The documented default (in memory); the test above shows the scenario can pass.
    let mut embedded = EmbeddedBroker::start();
    run(embedded.port, "persist_before");
    assert!(embedded.terminate().success());
    let embedded = EmbeddedBroker::start();
    assert_eq!(
        run(embedded.port, "persist_after"),
        json!({"retained": [], "session_present": false, "queued": []})
    );
}

#[test]
fn a_full_client_queue_drops_the_oldest_and_counts_it() {
    // Embedded only: the policies differ. mqtt5 drops the oldest queued message to make
    // room (the newest is what a consumer that catches up wants); Mosquitto drops the
    // newest (with max_queued_messages 3 it keeps m0 m1 m2). Documented in
    // docs/operations.md.
    let port = free_port();
    let d = Daemon::start_with_args(
        "broker: {embedded: {max_queued_messages: 3}}\n",
        &["--embedded-listen", &format!("127.0.0.1:{port}")],
    );
    let out = run(port, "offline_queue_v311");
    // Four QoS 1/2 messages for a queue of three: m0 goes.
    assert_eq!(
        out["messages"],
        json!([
            {"topic": "/1", "payload": "m1 q1", "qos": 1},
            {"topic": "/2", "payload": "m2 q2", "qos": 2},
            {"topic": "/4", "payload": "m4 q1", "qos": 1},
        ]),
        "{out}"
    );
    assert_eq!(
        sample(&metrics(&d), "mqlink_embedded_queue_dropped_total"),
        1.0
    );
}

#[test]
fn an_invalid_subscription_is_refused_with_a_failure_code() {
    // Both brokers refuse; Mosquitto by closing the connection, the embedded broker with
    // the SUBACK failure code (0x80 in 3.1.1, 0x8F Topic Filter invalid in 5), keeping the
    // connection for the client's other subscriptions.
    let mosquitto = Mosquitto::start(MosquittoOptions::default());
    let embedded = EmbeddedBroker::start();
    for (scenario, code) in [
        ("refused_subscription_v311", 0x80),
        ("refused_subscription_v5", 0x8F),
    ] {
        assert_eq!(run(mosquitto.port(), scenario), json!({"closed": true}));
        assert_eq!(
            run(embedded.port, scenario),
            json!({"codes": [code], "then": [1]}),
            "{scenario}"
        );
    }
}
