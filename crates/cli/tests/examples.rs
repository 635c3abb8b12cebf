//! The example configs in `examples/`, each run as it is (only `${MQTT_URL}` pointed at a
//! private Mosquitto) with the event shapes of the system it imitates posted over HTTP,
//! checking the exact topics, QoS, retained flags and payload fields that system publishes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use mqlink_testkit::{Mosquitto, MosquittoOptions, MosquittoSub, free_port};
use serde_json::{Value, json};

fn example_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(file)
}

/// The example file's text, unchanged.
fn example(file: &str) -> String {
    let path = example_path(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// One message as printed by `mosquitto_sub -F '%q %t %p'`.
#[derive(Debug)]
struct Msg {
    qos: u8,
    topic: String,
    payload: String,
}

impl Msg {
    fn parse(line: &str) -> Msg {
        let mut parts = line.splitn(3, ' ');
        let (Some(qos), Some(topic), Some(payload)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("not a 'qos topic payload' line: {line:?}");
        };
        Msg {
            qos: qos
                .parse()
                .unwrap_or_else(|_| panic!("bad qos in {line:?}")),
            topic: topic.to_string(),
            payload: payload.to_string(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload of {} is not JSON ({e}): {}",
                self.topic, self.payload
            )
        })
    }
}

/// A subscriber at QoS 2 on `filter` (plus `probe`), printing "QOS TOPIC PAYLOAD" so the
/// QoS each message was published with is visible (a QoS 2 subscription gets it as sent).
fn subscribe(broker: &Mosquitto, filter: &str, probe: &str) -> MosquittoSub {
    MosquittoSub::start_ready(
        &broker.client_args(),
        &["-t", filter, "-t", probe, "-q", "2", "-F", "%q %t %p"],
        probe,
    )
}

/// Messages keyed by topic; panics on a topic seen twice.
fn by_topic(lines: &[String]) -> BTreeMap<String, Msg> {
    let mut out = BTreeMap::new();
    for line in lines {
        let m = Msg::parse(line);
        if let Some(old) = out.insert(m.topic.clone(), m) {
            panic!("topic {} published twice: {lines:#?}", old.topic);
        }
    }
    out
}

/// What a new subscriber to `topic` gets at once: the retained message, as
/// "RETAINFLAG QOS PAYLOAD".
fn retained(broker: &Mosquitto, topic: &str) -> String {
    let mut args = broker.client_args();
    args.extend(
        [
            "-t", topic, "-q", "2", "-C", "1", "-W", "10", "-F", "%r %q %p",
        ]
        .map(String::from),
    );
    let mut sub = MosquittoSub::start(&args);
    let status = sub.wait_for_exit(T);
    assert!(
        status.success(),
        "no retained message on {topic}: {}",
        sub.stderr()
    );
    sub.lines()[0].clone()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `fields` of `posted` plus `extra`, as the payload should read.
fn with(posted: &Value, extra: Value) -> Value {
    let mut obj = posted.as_object().expect("object").clone();
    obj.extend(extra.as_object().expect("object").clone());
    Value::Object(obj)
}

/// Remove `key` from `payload`, asserting it is an integer unix time in `[from, to]`.
fn take_unix_timestamp(payload: &mut Value, key: &str, from: u64, to: u64) {
    let v = payload
        .as_object_mut()
        .expect("object")
        .remove(key)
        .unwrap_or_else(|| panic!("no {key} in {payload}"));
    let t = v
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an integer: {v}"));
    assert!(from <= t && t <= to, "{key} {t} not in [{from}, {to}]");
}

/// Exact JSON equality: payloads keep every number exactly (serde_json `float_roundtrip`).
fn assert_json_eq(got: &Value, want: &Value, what: &str) {
    assert_eq!(got, want, "{what}");
}

fn post_ok(d: &Daemon, event: &str, body: &Value) {
    let (s, v) = d.post(&format!("/v1/events/{event}"), &body.to_string());
    assert_eq!(s, 202, "POST {event}: {v}\n{}", d.log());
}

#[test]
fn every_example_validates_with_check() {
    for (file, expect) in [
        (
            "flamenco.yaml",
            &[
                "flamenco/lifecycle = '{\"type\":\"manager-startup\"}' on connect",
                "[LastRenderedUpdate] → flamenco/last-rendered",
                "[LastRenderedUpdate] → flamenco/jobs/{job_id}/last-rendered",
            ][..],
        ),
        (
            "octoprint.yaml",
            &[
                "octoPrint/mqtt = 'connected' on connect, 'disconnected' as will",
                "[PrintProgress] → octoPrint/progress/printing (qos 0, retain true)",
            ][..],
        ),
        (
            "zuul.yaml",
            &["→ {tenant}/zuul/{pipeline}/{project}/{branch}/{change} (qos 2, retain false)"][..],
        ),
        (
            "butler-sos.yaml",
            &[
                "engine/healthcheck/ every 30s as event 'health'",
                "[health] → butler-sos/health/{server}",
                "log-events (disabled)",
            ][..],
        ),
        (
            "kafka.yaml",
            &[
                "→ kafka 127.0.0.1:9092 topic mqtt.{topic_level_1} key {mqtt_topic} (acks=all, idempotent, lz4)",
            ][..],
        ),
        (
            "postgres.yaml",
            &[
                "→ postgres postgres://mqlink@127.0.0.1:5432/telemetry table mqtt_messages (dedup_id, topic, payload jsonb, qos, retain, received_at)",
            ][..],
        ),
        (
            "redis.yaml",
            &["→ redis redis://127.0.0.1:6379/0 stream mqtt:{topic_level_1} maxlen ~1000000"][..],
        ),
    ] {
        let path = example_path(file);
        let out = mqlink()
            .args(["check", "-c", path.to_str().unwrap()])
            .env_remove("MQTT_URL")
            .env_remove("SENSE_HEALTH_URL")
            .env_remove("KAFKA_BROKER")
            .env_remove("PG_URL")
            .env_remove("REDIS_URL")
            .output()
            .unwrap();
        assert_ok(&out, &format!("mqlink check {file}"));
        let plan = String::from_utf8_lossy(&out.stdout);
        assert!(
            plan.contains("broker: mqtt://127.0.0.1:1883"),
            "{file}: default broker URL: {plan}"
        );
        for e in expect {
            assert!(plan.contains(e), "{file}: plan lacks {e:?}:\n{plan}");
        }
    }
}

#[test]
fn flamenco_topic_tree_payloads_and_lifecycle() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let sub = subscribe(&broker, "flamenco/#", "flamenco-probe");
    let mut d = Daemon::start_with_env(&example("flamenco.yaml"), &[("MQTT_URL", &broker.url())]);
    assert_eq!(
        sub.wait_for_lines(1, T),
        [r#"1 flamenco/lifecycle {"type":"manager-startup"}"#]
    );

    let job = "3f7d8a1c-5b2e-4c2f-9d3a-6e1b2c4d5e6f";
    let events = [
        ("FarmStatus", json!({"status": "active"})),
        (
            "JobUpdate",
            json!({"id": job, "name": "Shot 010 lighting", "updated": "2024-05-14T10:22:31.123456+02:00",
                   "status": "active", "previous_status": "queued", "type": "simple-blender-render",
                   "priority": 50, "refresh_tasks": false}),
        ),
        (
            "TaskUpdate",
            json!({"id": "b1c2d3e4-0000-4a5b-8c9d-0e1f2a3b4c5d", "job_id": job, "name": "render-1-10",
                   "updated": "2024-05-14T10:22:32.5+02:00", "status": "active",
                   "previous_status": "queued", "activity": "Rendering frames 1-10"}),
        ),
        (
            "WorkerUpdate",
            json!({"id": "e2a9c7b0-1111-4d2e-a3f4-5b6c7d8e9f00", "name": "render-node-01",
                   "updated": "2024-05-14T10:22:30+02:00", "status": "awake", "previous_status": "asleep",
                   "version": "3.5", "can_restart": false, "last_seen": "2024-05-14T10:22:30+02:00"}),
        ),
        (
            "WorkerTagUpdate",
            json!({"tag": {"id": "7a6b5c4d-2222-4e3f-8a9b-0c1d2e3f4a5b", "name": "GPU",
                           "description": "Workers with a GPU"}}),
        ),
        (
            "LastRenderedUpdate",
            json!({"job_id": job, "thumbnail": {"base": format!("/job-files/3f/{job}/last-rendered"),
                   "suffixes": ["last-rendered.jpg", "last-rendered-small.jpg", "last-rendered-tiny.jpg"]}}),
        ),
    ];
    for (event, body) in &events {
        post_ok(&d, event, body);
    }

    // Seven messages: LastRenderedUpdate fans out to two topics.
    let lines = sub.wait_for_lines(8, T);
    let got = by_topic(&lines[1..]);
    let want = [
        ("flamenco/status".to_string(), &events[0].1),
        ("flamenco/jobs".to_string(), &events[1].1),
        (format!("flamenco/jobs/{job}"), &events[2].1),
        ("flamenco/workers".to_string(), &events[3].1),
        ("flamenco/workertags".to_string(), &events[4].1),
        ("flamenco/last-rendered".to_string(), &events[5].1),
        (format!("flamenco/jobs/{job}/last-rendered"), &events[5].1),
    ];
    let want_topics: BTreeSet<&str> = want.iter().map(|(t, _)| t.as_str()).collect();
    let got_topics: BTreeSet<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(got_topics, want_topics, "{lines:#?}");
    for (topic, body) in want {
        let m = &got[&topic];
        // Flamenco publishes the event's JSON as is, at QoS 1.
        assert_eq!((m.qos, &m.json()), (1, body), "{topic}");
    }

    let code = d.terminate();
    assert!(code.success(), "SIGTERM exits 0: {code:?}\n{}", d.log());
    assert_eq!(
        sub.wait_for_lines(9, T)[8],
        r#"1 flamenco/lifecycle {"type":"manager-shutdown"}"#
    );
    // Retained, so a late subscriber learns the manager is gone.
    assert_eq!(
        retained(&broker, "flamenco/lifecycle"),
        r#"1 1 {"type":"manager-shutdown"}"#
    );
}

#[test]
fn octoprint_events_progress_temperature_and_will() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let sub = subscribe(&broker, "octoPrint/#", "octoPrint-probe");
    let mut d = Daemon::start_with_env(&example("octoprint.yaml"), &[("MQTT_URL", &broker.url())]);
    assert_eq!(sub.wait_for_lines(1, T), ["1 octoPrint/mqtt connected"]);
    assert_eq!(retained(&broker, "octoPrint/mqtt"), "1 1 connected");

    let t0 = now_s();
    let events = [
        ("ClientOpened", json!({"remoteAddress": "127.0.0.1"})),
        ("Connected", json!({"baudrate": 250000, "port": "VIRTUAL"})),
        (
            "PrintStarted",
            json!({"name": "case_bp_3.6.v1.0.gco", "path": "case_bp_3.6.v1.0.gco", "origin": "local",
                   "size": 1_234_567, "owner": "pi", "user": "pi",
                   "file": "/home/pi/.octoprint/uploads/case_bp_3.6.v1.0.gco",
                   "filename": "case_bp_3.6.v1.0.gco"}),
        ),
        ("ZChange", json!({"new": 0.3, "old": 0.2})),
        (
            "plugin_firmware_check_warning",
            json!({"warning_type": "unsafe", "meta": {"name": "Anet A8"}}),
        ),
        (
            "PrintProgress",
            json!({"location": "local", "path": "case_bp_3.6.v1.0.gco", "progress": 23}),
        ),
        ("tool0", json!({"actual": 210.3, "target": 210.0})),
        ("bed", json!({"actual": 59.8, "target": 60.0})),
    ];
    for (event, body) in &events {
        post_ok(&d, event, body);
    }
    // Not an OctoPrint event and no route for it: refused, nothing published.
    let (s, v) = d.post("/v1/events/SomethingElse", "{}");
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("no_route")),
        "{v}"
    );

    let lines = sub.wait_for_lines(1 + events.len(), T);
    let t1 = now_s();
    let got = by_topic(&lines[1..]);
    assert_eq!(got.len(), events.len(), "{lines:#?}");
    for (event, body) in &events {
        let (topic, extra) = match *event {
            "PrintProgress" => ("octoPrint/progress/printing".to_string(), json!({})),
            "tool0" | "bed" => (format!("octoPrint/temperature/{event}"), json!({})),
            _ => (format!("octoPrint/event/{event}"), json!({"_event": event})),
        };
        let m = got
            .get(&topic)
            .unwrap_or_else(|| panic!("nothing on {topic}: {lines:#?}"));
        assert_eq!(m.qos, 0, "OctoPrint publishes at QoS 0: {topic}");
        let mut payload = m.json();
        take_unix_timestamp(&mut payload, "_timestamp", t0, t1);
        assert_eq!(payload, with(body, extra), "{topic}");
    }

    // Progress and temperatures are retained (and ZChange, as in the plugin); other events
    // are not.
    for (topic, body, event_field) in [
        ("octoPrint/progress/printing", &events[5].1, json!({})),
        ("octoPrint/temperature/tool0", &events[6].1, json!({})),
        (
            "octoPrint/event/ZChange",
            &events[3].1,
            json!({"_event": "ZChange"}),
        ),
    ] {
        let line = retained(&broker, topic);
        let (flags, payload) = line.split_at(4);
        assert_eq!(flags, "1 0 ", "retained at QoS 0 on {topic}: {line}");
        let mut payload: Value = serde_json::from_str(payload).unwrap();
        take_unix_timestamp(&mut payload, "_timestamp", t0, t1);
        assert_eq!(payload, with(body, event_field), "{topic}");
    }
    let mut args = broker.client_args();
    args.extend(["-t", "octoPrint/event/PrintStarted", "-C", "1", "-W", "2"].map(String::from));
    let mut none = MosquittoSub::start(&args);
    none.wait_for_exit(T);
    assert!(
        none.lines().is_empty(),
        "PrintStarted retained: {:?}",
        none.lines()
    );

    let code = d.terminate();
    assert!(code.success(), "SIGTERM exits 0: {code:?}\n{}", d.log());
    assert_eq!(
        sub.wait_for_lines(2 + events.len(), T)[1 + events.len()],
        "1 octoPrint/mqtt disconnected"
    );
    assert_eq!(retained(&broker, "octoPrint/mqtt"), "1 1 disconnected");
}

#[test]
fn zuul_reports_at_qos_2_with_project_levels_and_sanitised_branch() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let sub = subscribe(&broker, "+/zuul/#", "zuul-probe");
    let d = Daemon::start_with_env(&example("zuul.yaml"), &[("MQTT_URL", &broker.url())]);

    let start = json!({
        "tenant": "openstack.org", "pipeline": "check", "project": "sf-jobs", "branch": "master",
        "change_url": "https://gerrit.example.com/r/3", "message": "Starting check jobs.",
        "trigger_time": 1_524_801_056.2545338, "enqueue_time": 1_524_801_093.5689101,
        "change": "3", "patchset": "1", "commit_id": "2db20c7fb26adf9ac9936a9e750ced9b4854a964",
        "owner": {"name": "Alice", "email": "alice@example.com", "username": "alice"},
        "ref": "refs/changes/03/3/1", "zuul_ref": "Zf8b3d7cd34f54cb396b488226589db8f",
        "zuul_event_id": "e4a7c3b1d2f04a5e9c8b7a6d5e4f3a2b",
        "buildset": {"uuid": "f8b3d7cd34f54cb396b488226589db8f",
                     "builds": [{"job_name": "linters", "voting": true}]}
    });
    let success = json!({
        "tenant": "openstack.org", "pipeline": "gate", "project": "openstack/nova",
        "branch": "c++-test", "change_url": "https://review.opendev.org/c/openstack/nova/+/12345",
        "message": "Build succeeded.", "change": "12345", "patchset": "7",
        "ref": "refs/changes/45/12345/7", "zuul_ref": "Z0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "zuul_event_id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "buildset": {"uuid": "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "result": "SUCCESS",
                     "builds": [{"job_name": "nova-tox-py311", "voting": true,
                                 "uuid": "16e3e55aca984c6c9a50cc3c5b21bb83",
                                 "execute_time": 1_524_801_120.0, "start_time": 1_524_801_179.8557224,
                                 "end_time": 1_524_801_208.928095,
                                 "log_url": "https://logs.example.com/logs/45/12345/7/gate/nova-tox-py311/16e3e55/",
                                 "result": "SUCCESS"}]}
    });
    post_ok(&d, "start", &start);
    post_ok(&d, "success", &success);

    let lines = sub.wait_for_lines(2, T);
    let got = by_topic(&lines);
    // `openstack/nova` adds a level; `c++-test` is published as `c__-test` in the topic
    // while the payload keeps the real branch name.
    let want = [
        ("openstack.org/zuul/check/sf-jobs/master/3", start, "start"),
        (
            "openstack.org/zuul/gate/openstack/nova/c__-test/12345",
            success,
            "success",
        ),
    ];
    assert_eq!(
        got.keys().map(String::as_str).collect::<Vec<_>>(),
        want.iter().map(|w| w.0).collect::<Vec<_>>()
    );
    for (topic, body, action) in want {
        let m = &got[topic];
        assert_eq!(m.qos, 2, "Zuul's reporter here uses QoS 2: {topic}");
        assert_json_eq(&m.json(), &with(&body, json!({"action": action})), topic);
    }
}

#[test]
fn butler_sos_base_topic_features_and_disabled_route() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let sub = subscribe(&broker, "butler-sos/#", "butler-probe");
    // Polling is not exercised here: its URL points at a closed local port, and health
    // events are posted over HTTP the way the poll source would emit them.
    let health_url = format!("http://127.0.0.1:{}/engine/healthcheck/", free_port());
    let d = Daemon::start_with_env(
        &example("butler-sos.yaml"),
        &[
            ("MQTT_URL", &broker.url()),
            ("SENSE_HEALTH_URL", &health_url),
        ],
    );

    // The Qlik Sense engine healthcheck response plus the poll's static `server` field.
    let health = json!({
        "version": "12.1477.2", "started": "20240115T081500.000Z",
        "mem": {"committed": 8_589_934_592_u64, "allocated": 6_442_450_944_u64, "free": 2_147_483_648_u64},
        "cpu": {"total": 15},
        "session": {"active": 3, "total": 5},
        "apps": {"active_docs": ["e0b3a1c2-9d8e-4f7a-b6c5-d4e3f2a1b0c9"],
                 "in_memory_docs": ["e0b3a1c2-9d8e-4f7a-b6c5-d4e3f2a1b0c9"],
                 "loaded_docs": ["e0b3a1c2-9d8e-4f7a-b6c5-d4e3f2a1b0c9"],
                 "calls": 1234, "selections": 56},
        "users": {"active": 2, "total": 4},
        "cache": {"hits": 10, "lookups": 20, "added": 5, "replaced": 0, "bytes_added": 1024},
        "saturated": false,
        "server": "sense1"
    });
    let user_event = json!({
        "event_type": "session_start", "host": "sense1.mycompany.com", "command": "Start session",
        "user_directory": "LAB", "user_id": "goran", "origin": "AppAccess",
        "context": "/app/e0b3a1c2-9d8e-4f7a-b6c5-d4e3f2a1b0c9", "message": "Start session for user LAB\\goran"
    });
    post_ok(&d, "health", &health);
    post_ok(&d, "userevent", &user_event);
    // The log-events feature is switched off (`enabled: false`): no route.
    let (s, v) = d.post(
        "/v1/events/logevent",
        r#"{"source":"qseow-proxy","level":"WARN","host":"sense1","message":"x"}"#,
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("no_route")),
        "{v}"
    );

    let lines = sub.wait_for_lines(2, T);
    let got = by_topic(&lines);
    // `butler-sos/` + `health/...`: exactly one slash.
    assert_eq!(
        got.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "butler-sos/health/sense1",
            "butler-sos/userevent/session_start"
        ],
        "{lines:#?}"
    );
    let m = &got["butler-sos/health/sense1"];
    let mut payload = m.json();
    let ts = payload
        .as_object_mut()
        .unwrap()
        .remove("timestamp")
        .expect("timestamp field");
    let ts = ts.as_str().expect("RFC 3339 text");
    let b = ts.as_bytes();
    assert!(
        ts.len() >= 20
            && ts.ends_with('Z')
            && ts[..4].parse::<u32>().is_ok_and(|y| y >= 2024)
            && (b[4], b[7], b[10], b[13], b[16]) == (b'-', b'-', b'T', b':', b':'),
        "not RFC 3339 UTC: {ts}"
    );
    assert_eq!((m.qos, payload), (1, health));
    let m = &got["butler-sos/userevent/session_start"];
    assert_eq!((m.qos, m.json()), (1, user_event));
}
