//! End-to-end tests of the loader: text in, `Config` or a located error out.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::topic::{RenderContext, SlashPolicy};

fn loader() -> Loader {
    Loader::new().hostname("box1").env(|name| match name {
        "MQTT_PASSWORD" => Some("s3cr#t: pw".into()),
        "INGEST_TOKEN" => Some("tok-123".into()),
        "PORT" => Some("8883".into()),
        "HOST" => Some("broker.example".into()),
        _ => None,
    })
}

fn yaml(text: &str) -> Result<Config, ConfigError> {
    loader().from_str(text, Format::Yaml, "mqlink.yaml")
}

fn toml(text: &str) -> Result<Config, ConfigError> {
    loader().from_str(text, Format::Toml, "mqlink.toml")
}

fn yaml_err(text: &str) -> String {
    yaml(text).unwrap_err().to_string()
}

fn render(t: &crate::topic::Template, event: &str, fields: serde_json::Value) -> String {
    t.render(&RenderContext {
        event,
        fields: &fields,
        hostname: "box1",
        prefix: "",
        slash: SlashPolicy::Keep,
    })
    .unwrap()
}

#[cfg(all(feature = "http", feature = "poll", feature = "sink-nats"))]
const PRODUCT_EXAMPLE: &str = r#"
broker:
  url: mqtts://broker.example:8883    # a comment with ${UNSET} is never expanded
  client_id: "mqlink-{hostname}"
  username: svc
  password: ${MQTT_PASSWORD}
  protocol: 5
  keepalive: 60s
  tls: { alpn: [], insecure_skip_verify: false }
  reconnect: { min: 1s, max: 60s }
  max_packet_size: 16MiB
  lifecycle:
    topic: "{prefix}/status"
    online: online
    offline: offline
    retain: true
topic_prefix: flamenco
spool: { dir: ./mqlink-data, max_bytes: 1GiB, on_full: reject }
sources:
  http:  { listen: 127.0.0.1:8080, tokens: ["${INGEST_TOKEN}"], max_body: 1MiB }
  stdin: { enabled: false }
  poll:  [ { url: "http://sense:9031/health", every: 30s, event: health, fields: { server: sense1 } } ]
routes:
  - match: [JobUpdate]
    topic: jobs
    qos: 1
  - match: [TaskUpdate]
    topic: "jobs/{job_id}"
  - match: ["*"]
    topic: "event/{event}"
    payload: { event_field: _event, timestamp_field: _timestamp, timestamp: unix }
    retain: false
connectors:
  - name: hfp
    subscribe: ["/hfp/v2/journey/#"]
    qos: 1
    session: persistent
    format: fluvio
    transforms: [ { filter: '.mqtt_topic | test("/vp/")' }, { map: '.' } ]
    sink: { nats: { url: "nats://127.0.0.1:4222", subject: mqtt.hfp, jetstream: true } }
"#;

// The example uses the HTTP source, a poll source and a NATS sink.
#[cfg(all(feature = "http", feature = "poll", feature = "sink-nats"))]
#[test]
fn the_product_example_loads_with_its_values() {
    let c = yaml(PRODUCT_EXAMPLE).unwrap();
    let BrokerTarget::Remote(url) = &c.broker.target else {
        panic!("expected a remote broker")
    };
    assert_eq!(url.authority(), "broker.example:8883");
    assert_eq!(c.broker.client_id, "mqlink-box1");
    assert_eq!(c.broker.username.as_deref(), Some("svc"));
    // `#` and `: ` inside a substituted secret do not change the document.
    assert_eq!(
        c.broker.password.as_ref().map(Secret::expose),
        Some("s3cr#t: pw")
    );
    assert_eq!(c.broker.protocol, Protocol::V5);
    assert_eq!(c.broker.max_packet_size, 16 << 20);
    assert!(c.broker.tls.is_some());
    let life = c.broker.lifecycle.as_ref().unwrap();
    assert_eq!(life.topic, "flamenco/status");
    assert!(life.retain);
    assert_eq!(c.topic_prefix, "flamenco");
    assert_eq!(c.spool.max_bytes, 1 << 30);
    let http = c.sources.http.as_ref().unwrap();
    assert_eq!(http.tokens[0].expose(), "tok-123");
    assert_eq!(c.sources.poll[0].every, Duration::from_secs(30));
    assert_eq!(c.sources.poll[0].fields["server"], json!("sense1"));
    assert_eq!(c.routes.len(), 3);
    assert_eq!(
        render(&c.routes[0].topic, "JobUpdate", json!({})),
        "flamenco/jobs"
    );
    assert_eq!(
        render(&c.routes[1].topic, "TaskUpdate", json!({"job_id": "j1"})),
        "flamenco/jobs/j1"
    );
    assert_eq!(
        render(&c.routes[2].topic, "PrintDone", json!({})),
        "flamenco/event/PrintDone"
    );
    assert_eq!(
        c.routes[2].payload.timestamp_field,
        Some(("_timestamp".into(), TimestampFormat::Unix))
    );
    let hfp = &c.connectors[0];
    assert_eq!(hfp.client_id, "mqlink-box1-hfp");
    assert_eq!(hfp.format, RecordFormat::Fluvio);
    assert_eq!(hfp.transforms.len(), 2);
    assert!(matches!(
        &hfp.sink,
        Sink::Nats(crate::sink::NatsConfig {
            jetstream: true,
            ..
        })
    ));
    // Nothing secret in Debug output.
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("s3cr#t") && !debug.contains("tok-123"),
        "{debug}"
    );
}

#[test]
fn toml_and_yaml_share_the_schema() {
    let c = toml(
        r#"
topic_prefix = "butler-sos/"
[broker]
url = "mqtt://${HOST}:${PORT}"
protocol = "3.1.1"
keepalive = 30
[[routes]]
match = ["health*"]
topic = "health/{server}"
qos = 0
[[connectors]]
name = "bridge"
subscribe = ["$share/g1/sensors/+/temp"]
sink = { mqtt = { url = "mqtt://other:1883", topic = "bridge/{topic}" } }
"#,
    )
    .unwrap();
    let BrokerTarget::Remote(url) = &c.broker.target else {
        panic!("expected a remote broker")
    };
    assert_eq!(url.authority(), "broker.example:8883");
    assert_eq!(c.broker.protocol, Protocol::V311);
    assert_eq!(c.broker.keepalive, Duration::from_secs(30));
    assert_eq!(
        render(&c.routes[0].topic, "health", json!({"server": "s1"})),
        "butler-sos/health/s1"
    );
    let conn = &c.connectors[0];
    assert_eq!(conn.subscribe[0].share_group(), Some("g1"));
    let Sink::Mqtt(crate::sink::MqttConfig { topic, .. }) = &conn.sink else {
        panic!("expected an mqtt sink")
    };
    assert_eq!(
        render(topic, "", json!({"topic": "sensors/a/temp"})),
        "bridge/sensors/a/temp"
    );
}

#[test]
fn default_run_is_embedded_http_spool_and_one_route() {
    let c = Config::default_run();
    let BrokerTarget::Embedded(e) = &c.broker.target else {
        panic!("expected the embedded broker")
    };
    assert_eq!(e.listen.to_string(), "127.0.0.1:1883");
    if cfg!(feature = "http") {
        assert_eq!(
            c.sources.http.as_ref().unwrap().listen.to_string(),
            "127.0.0.1:8080"
        );
    } else {
        assert!(c.sources.http.is_none());
    }
    assert_eq!(c.spool.dir, std::path::PathBuf::from("./mqlink-data"));
    assert_eq!(c.routes.len(), 1);
    assert_eq!(
        render(&c.routes[0].topic, "JobUpdate", json!({})),
        "events/JobUpdate"
    );
}

#[test]
fn an_empty_file_gets_every_default() {
    let c = yaml("").unwrap();
    assert!(matches!(c.broker.target, BrokerTarget::Embedded(_)));
    assert_eq!(c.broker.client_id, "mqlink-box1");
    assert_eq!(c.broker.keepalive, Duration::from_secs(60));
    assert_eq!(c.broker.session, Session::Clean);
    assert_eq!(c.broker.session_expiry, None);
    assert_eq!(c.broker.max_inflight, 20);
    assert_eq!(c.broker.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.broker.reconnect.min, Duration::from_secs(1));
    assert_eq!(c.broker.reconnect.max, Duration::from_secs(60));
    assert_eq!(c.spool.on_full, OnFull::Reject);
    assert_eq!(c.spool.fsync, Fsync::Always);
    if cfg!(feature = "http") {
        let http = c.sources.http.unwrap();
        assert_eq!(http.max_body, 1 << 20);
        assert_eq!(http.request_timeout, Duration::from_secs(30));
        assert_eq!(http.max_connections, 1024);
        assert_eq!(http.header_timeout, Duration::from_secs(10));
    } else {
        assert!(c.sources.http.is_none());
    }
    assert!(!c.sources.stdin);
    assert!(c.routes.is_empty());
}

#[test]
fn unknown_keys_are_located_at_the_key() {
    let text = "broker:\n  url: embedded\n  pasword: x\n";
    let e = yaml(text).unwrap_err();
    assert_eq!((e.line, e.column), (3, 3), "{e}");
    assert_eq!(e.path, "broker.pasword");
    assert!(e.message.starts_with("unknown field `pasword`"), "{e}");
    assert!(e.message.contains("`password`"), "{e}");

    let e = toml("[spool]\ndir = \"x\"\nmax_byts = 5\n").unwrap_err();
    assert_eq!(e.to_string().split(": ").next(), Some("mqlink.toml:3:1"));
    assert_eq!(e.path, "spool.max_byts");
}

#[test]
fn type_errors_are_located_at_the_value() {
    let e = yaml("routes:\n  - match: [a]\n    topic: t\n    retain: maybe\n").unwrap_err();
    assert_eq!(e.path, "routes[0].retain");
    assert_eq!((e.line, e.column), (4, 13), "{e}");
    let e = yaml("routes:\n  - match: [a]\n").unwrap_err();
    assert_eq!(e.path, "routes[0]");
    assert!(e.message.contains("missing field `topic`"), "{e}");
    assert_eq!(e.line, 2);
    let e = yaml("spool: {on_full: explode}").unwrap_err();
    assert_eq!(e.path, "spool.on_full");
    assert!(e.message.contains("drop_oldest"), "{e}");
}

#[test]
fn spool_recovery_and_stall_settings_have_defaults_and_are_checked() {
    let c = yaml("{}").unwrap();
    assert_eq!(c.spool.on_corruption, OnCorruption::Fail);
    assert_eq!(c.spool.stall_timeout, Duration::from_secs(60));
    let c = yaml("spool: {on_corruption: discard, stall_timeout: 5s}").unwrap();
    assert_eq!(c.spool.on_corruption, OnCorruption::Discard);
    assert_eq!(c.spool.stall_timeout, Duration::from_secs(5));
    let e = yaml("spool: {on_corruption: ignore}").unwrap_err();
    assert_eq!(e.path, "spool.on_corruption");
    assert!(e.message.contains("discard"), "{e}");
    let e = yaml("spool: {stall_timeout: soon}").unwrap_err();
    assert_eq!(e.path, "spool.stall_timeout");
}

#[test]
fn template_errors_name_file_line_column_and_path() {
    let text = "topic_prefix: p\nbroker:\n  lifecycle:\n    topic: \"{prefix}/{jobid}\"\n";
    assert_eq!(
        yaml_err(text),
        "mqlink.yaml:4:12: broker.lifecycle.topic: unknown placeholder {jobid} at byte 9 \
         (this setting may use only: hostname, prefix)"
    );
    let text = "routes:\n  - match: [\"*\"]\n    topic: x\n  - match: [\"*\"]\n    topic: \"jobs/{jobid\"\n";
    assert_eq!(
        yaml_err(text),
        "mqlink.yaml:5:12: routes[1].topic: unclosed '{' at byte 5 (write '{{' for a literal brace)"
    );
    let e = yaml("routes: [{match: [a], topic: \"a/+/b\"}]").unwrap_err();
    assert_eq!(e.path, "routes[0].topic");
    assert!(e.message.contains("wildcards are not allowed"), "{e}");
}

#[test]
fn unset_variables_are_errors_with_location() {
    let e = yaml("broker:\n  url: mqtt://h\n  password: ${NOPE}\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "mqlink.yaml:3:13: broker.password: environment variable NOPE is not set \
         (use ${NOPE:-default} for a fallback)"
    );
    let c = yaml("spool:\n  dir: \"$${literal}-${NOPE:-x}\"\n").unwrap();
    assert_eq!(c.spool.dir, std::path::PathBuf::from("${literal}-x"));
}

#[test]
fn scalars_are_coerced_where_users_expect() {
    // A numeric password is a string; a quoted port is a number.
    let c = yaml("broker:\n  host: h\n  port: \"${PORT}\"\n  password: 123456\n").unwrap();
    assert_eq!(c.broker.password.unwrap().expose(), "123456");
    let BrokerTarget::Remote(url) = c.broker.target else {
        panic!("remote expected")
    };
    assert_eq!(url.port, 8883);
    for (text, want) in [
        ("3.1", Protocol::V31),
        ("311", Protocol::V311),
        ("\"5\"", Protocol::V5),
    ] {
        let c = yaml(&format!("broker: {{protocol: {text}}}")).unwrap();
        assert_eq!(c.broker.protocol, want, "{text}");
    }
    assert!(yaml_err("broker: {protocol: 6}").contains("unknown protocol '6'"));
}

#[test]
fn units_are_validated_with_location() {
    let e = yaml("broker:\n  keepalive: 10 parsecs\n").unwrap_err();
    assert_eq!(e.path, "broker.keepalive");
    assert_eq!((e.line, e.column), (2, 14));
    assert!(e.message.contains("not a duration"), "{e}");
    let e = yaml("broker: {keepalive: 500ms}").unwrap_err();
    assert!(e.message.contains("whole seconds"), "{e}");
    let e = yaml("spool: {max_bytes: 10KiB}").unwrap_err();
    assert!(e.message.contains("at least 1048576"), "{e}");
    let e = yaml("broker: {max_packet_size: 1GiB}").unwrap_err();
    assert!(e.message.contains("268435455"), "{e}");
    let e = yaml("broker: {reconnect: {min: 10s, max: 1s}}").unwrap_err();
    assert_eq!(e.path, "broker.reconnect.max");
    if cfg!(feature = "poll") {
        let e = yaml("sources: {poll: [{url: 'http://x', every: 0s, event: e}]}").unwrap_err();
        assert_eq!(e.path, "sources.poll[0].every");
    }
}

#[cfg(feature = "http")]
#[test]
fn http_source_refuses_the_network_without_tokens() {
    let e = yaml("sources:\n  http:\n    listen: 0.0.0.0:8080\n").unwrap_err();
    assert_eq!(e.path, "sources.http.listen");
    assert!(e.message.contains("not a loopback address"), "{e}");
    let c = yaml("sources:\n  http:\n    listen: 0.0.0.0:8080\n    tokens: [abc]\n").unwrap();
    assert_eq!(c.sources.http.unwrap().tokens.len(), 1);
    let e = yaml("sources: {http: {listen: 0.0.0.0:8080, tokens: ['${NOPE:-}']}}").unwrap_err();
    assert_eq!(e.path, "sources.http.tokens[0]");
    let c = yaml("sources: {http: {enabled: false}, stdin: {enabled: true}}").unwrap();
    assert!(c.sources.http.is_none() && c.sources.stdin);
}

#[cfg(feature = "http")]
#[test]
fn http_connection_limits_are_configurable_and_checked() {
    let c = yaml("sources: {http: {max_connections: 64, header_timeout: 2s}}").unwrap();
    let h = c.sources.http.unwrap();
    assert_eq!(
        (h.max_connections, h.header_timeout),
        (64, Duration::from_secs(2))
    );
    // Headers never get longer than the whole request.
    let c = yaml("sources: {http: {request_timeout: 1s, header_timeout: 5s}}").unwrap();
    assert_eq!(
        c.sources.http.unwrap().header_timeout,
        Duration::from_secs(1)
    );
    let e = yaml("sources: {http: {max_connections: 0}}").unwrap_err();
    assert_eq!(e.path, "sources.http.max_connections");
    let e = yaml("sources: {http: {header_timeout: 0s}}").unwrap_err();
    assert_eq!(e.path, "sources.http.header_timeout");
}

#[test]
fn embedded_queue_bounds_and_persistence() {
    let BrokerTarget::Embedded(e) = yaml("broker: {embedded: {}}").unwrap().broker.target else {
        panic!("embedded")
    };
    assert_eq!(
        (e.max_queued_messages, e.max_queued_bytes, e.persistence),
        (1_000_000, 1 << 30, None),
        "in memory by default"
    );
    let c = yaml(
        "broker: {embedded: {max_queued_messages: 500, max_queued_bytes: 2MiB, persistence: state}}",
    )
    .unwrap();
    let BrokerTarget::Embedded(e) = c.broker.target else {
        panic!("embedded")
    };
    assert_eq!((e.max_queued_messages, e.max_queued_bytes), (500, 2 << 20));
    let dir = e.persistence.unwrap();
    assert!(dir.ends_with("state"), "{}", dir.display());
    let e = yaml("broker: {embedded: {max_queued_messages: 0}}").unwrap_err();
    assert_eq!(e.path, "broker.embedded.max_queued_messages", "{e}");
    let e = yaml("broker: {embedded: {max_queued_bytes: 10}}").unwrap_err();
    assert_eq!(e.path, "broker.embedded.max_queued_bytes", "{e}");
    let e = yaml("broker: {embedded: {persistence: ''}}").unwrap_err();
    assert_eq!(e.path, "broker.embedded.persistence", "{e}");
}

#[test]
fn embedded_tls_needs_a_certificate_and_key() {
    let e = yaml("broker: {embedded: {tls: {key_file: k.pem}}}").unwrap_err();
    assert_eq!(e.path, "broker.embedded.tls");
    assert!(e.message.contains("cert_file is required"), "{e}");
    let e = yaml("broker: {embedded: {tls: {cert_file: c.pem, key_file: k.pem}}}").unwrap_err();
    assert_eq!(e.path, "broker.embedded.tls.cert_file");
    let e = yaml("broker: {embedded: {tls: {listen: 'nope'}}}").unwrap_err();
    assert_eq!(e.path, "broker.embedded.tls.listen", "{e}");
}

#[test]
fn an_embedded_listener_open_to_the_network_needs_authentication() {
    let e = yaml("broker:\n  embedded:\n    listen: 0.0.0.0:1883\n").unwrap_err();
    assert_eq!(
        (e.path.as_str(), e.line),
        ("broker.embedded.listen", 3),
        "{e}"
    );
    assert!(e.message.contains("would admit anyone"), "{e}");
    let e = yaml("broker: {embedded: {ws_listen: '[::]:8081'}}").unwrap_err();
    assert_eq!(e.path, "broker.embedded.ws_listen", "{e}");
    // A password, or an explicit opt-in, makes it acceptable.
    yaml("broker: {embedded: {listen: 0.0.0.0:1883, username: u, password: p}}").unwrap();
    let c = yaml("broker: {embedded: {listen: 0.0.0.0:1883, allow_anonymous: true}}").unwrap();
    let BrokerTarget::Embedded(e) = c.broker.target else {
        panic!("embedded")
    };
    assert!(e.allow_anonymous && e.unauthenticated_exposure().is_none());
    // Loopback is never exposed.
    yaml("broker: {embedded: {listen: '[::1]:1883', ws_listen: 127.0.0.2:8081}}").unwrap();
}

#[test]
fn embedded_tls_exposure_is_judged_by_client_certificates() {
    let tls = |require_client_cert: bool| EmbeddedTls {
        listen: "0.0.0.0:8883".parse().unwrap(),
        cert_file: "c.pem".into(),
        key_file: "k.pem".into(),
        client_ca_file: require_client_cert.then(|| "ca.pem".into()),
        require_client_cert,
    };
    let mut e = Embedded {
        tls: Some(tls(true)),
        ..Embedded::default()
    };
    assert_eq!(e.unauthenticated_exposure(), None);
    e.tls = Some(tls(false));
    assert_eq!(
        e.unauthenticated_exposure(),
        Some(("tls.listen", "0.0.0.0:8883".parse().unwrap()))
    );
}

#[test]
fn tls_and_secret_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
    std::fs::write(dir.path().join("c.pem"), "x").unwrap();
    std::fs::write(dir.path().join("pw"), "hunter2\n").unwrap();
    let l = loader().base_dir(dir.path());
    let c = l
        .from_str(
            "broker:\n  url: mqtts://h\n  password_file: pw\n  tls: {ca_file: ca.pem}\n",
            Format::Yaml,
            "m.yaml",
        )
        .unwrap();
    assert_eq!(c.broker.password.unwrap().expose(), "hunter2");
    assert_eq!(
        c.broker.tls.unwrap().ca_file.unwrap(),
        dir.path().join("ca.pem")
    );

    let e = l
        .from_str(
            "broker:\n  url: mqtts://h\n  tls:\n    cert_file: c.pem\n",
            Format::Yaml,
            "m.yaml",
        )
        .unwrap_err();
    assert_eq!(e.path, "broker.tls.cert_file");
    assert!(e.message.contains("needs key_file"), "{e}");
    let e = l
        .from_str(
            "broker: {url: mqtts://h, tls: {ca_file: nope.pem}}",
            Format::Yaml,
            "m.yaml",
        )
        .unwrap_err();
    assert_eq!(e.path, "broker.tls.ca_file");
    let e = yaml("broker: {url: mqtt://h, tls: {}}").unwrap_err();
    assert!(e.message.contains("not a TLS url"), "{e}");
    let e = yaml("broker: {url: mqtt://h, password: a, password_file: b}").unwrap_err();
    assert_eq!(e.path, "broker.password_file");
}

#[test]
fn no_error_message_contains_a_secret() {
    let texts = [
        "broker: {url: 'mqtt://u:hunter2@h', username: x}",
        "broker: {url: 'mqtt://u:hunter2@h:notaport'}",
        "broker: {url: mqtt://h, password: hunter2, password_file: f}",
        "sources: {http: {tokens: [hunter2], listen: nope}}",
        "broker: {url: mqtt://h, password: [hunter2]}",
        "sources: {http: {tokens: hunter2}}",
        "broker: {url: mqtt://h, max_inflight: hunter2}",
        "sources: {poll: [{url: 'http://x', every: 1s, event: e, headers: {X-Key: [hunter2]}}]}",
    ];
    for t in texts {
        let e = yaml(t).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{t} -> {e}");
    }
}

#[cfg(feature = "sink-http")]
#[test]
fn connectors_validate_filters_sinks_and_names() {
    let base = |sink: &str| {
        format!("connectors:\n  - name: c1\n    subscribe: [\"a/#\"]\n    sink: {sink}\n")
    };
    let c = yaml(&base("{stdout: {}}")).unwrap();
    assert!(matches!(c.connectors[0].sink, Sink::Stdout(_)));
    assert_eq!(c.connectors[0].session, Session::Persistent);
    let c = yaml(&base("{stdout: }")).unwrap();
    assert!(matches!(c.connectors[0].sink, Sink::Stdout(_)));
    let c = yaml(&base(
        "{file: {path: out.jsonl, rotate_bytes: 10MiB, fsync: never}}",
    ))
    .unwrap();
    assert!(matches!(
        &c.connectors[0].sink,
        Sink::File(crate::sink::FileConfig {
            rotate_bytes: Some(10_485_760),
            fsync: Fsync::Never,
            ..
        })
    ));
    let c = yaml(&base(
        "{http: {url: 'https://x/ingest', headers: {Authorization: Bearer t}, retry: {min: 100ms}}}",
    ))
    .unwrap();
    let Sink::Http(crate::sink::HttpConfig {
        method,
        batch_max,
        retry,
        headers,
        ..
    }) = &c.connectors[0].sink
    else {
        panic!("http sink expected")
    };
    assert_eq!((method.as_str(), *batch_max), ("POST", 100));
    assert_eq!(retry.min, Duration::from_millis(100));
    assert_eq!(headers[0].0, "Authorization");

    let e = yaml(&base("{stdout: {}, file: {path: x}}")).unwrap_err();
    assert_eq!(e.path, "connectors[0].sink");
    assert!(
        e.message
            .contains("exactly one of: stdout, file, http, nats, mqtt, redis, postgres"),
        "{e}"
    );
    let e = yaml(&base("{amqp: {}}")).unwrap_err();
    assert!(e.message.contains("unknown variant `amqp`"), "{e}");
    let e = yaml(&base("{nats: {url: 'nats://x', subject: s, stream: S}}")).unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.nats.stream");
    let e = yaml(&base("{mqtt: {url: 'mqtt://x', topic: 'b/{event}'}}")).unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.mqtt.topic");
    assert!(e.message.contains("unknown placeholder {event}"), "{e}");
    let e = yaml(&base("{file: {path: x, colour: red}}")).unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.file.colour");

    let e = yaml("connectors:\n  - name: c1\n    subscribe: [\"a/#/b\"]\n    sink: {stdout: {}}\n")
        .unwrap_err();
    assert_eq!(e.path, "connectors[0].subscribe[0]");
    assert_eq!((e.line, e.column), (3, 17));
    let two = "connectors:\n  - {name: c, subscribe: [a], sink: {stdout: {}}}\n  - {name: c, subscribe: [b], sink: {stdout: {}}}\n";
    let e = yaml(two).unwrap_err();
    assert_eq!(e.path, "connectors[1].name");
    assert!(e.message.contains("duplicate connector name"), "{e}");
    let e = yaml(
        "connectors: [{name: c, subscribe: [a], sink: {stdout: {}}, transforms: [{grep: x}]}]",
    )
    .unwrap_err();
    assert!(e.message.contains("unknown variant `grep`"), "{e}");
    let e = yaml("broker: {client_id: same}\nconnectors: [{name: c, client_id: same, subscribe: [a], sink: {stdout: {}}}]")
        .unwrap_err();
    assert_eq!(e.path, "connectors[0].client_id");
}

#[cfg(all(feature = "sink-redis", feature = "sink-postgres"))]
#[test]
fn redis_postgres_and_kafka_sinks_validate_with_defaults_and_located_errors() {
    let base = |sink: &str| {
        format!("connectors:\n  - name: c1\n    subscribe: [\"a/#\"]\n    sink: {sink}\n")
    };
    let c = yaml(&base("{redis: {url: 'redis://127.0.0.1:6379/2'}}")).unwrap();
    let Sink::Redis(r) = &c.connectors[0].sink else {
        panic!("redis sink expected")
    };
    assert_eq!(r.stream.as_str(), "mqtt:{topic}");
    assert_eq!((r.batch_max, r.maxlen), (500, None));
    assert_eq!(
        c.connectors[0].sink.describe(),
        "redis redis://127.0.0.1:6379/2 stream mqtt:{topic}"
    );
    assert_eq!(c.connectors[0].sink.kind(), "redis");
    let c = yaml(&base(
        "{redis: {url: 'redis://u:pw@h', stream: 'm:{topic_level_2}', maxlen: 10, linger: 5ms}}",
    ))
    .unwrap();
    assert_eq!(
        c.connectors[0].sink.describe(),
        "redis redis://u:redacted@h stream m:{topic_level_2} maxlen ~10"
    );
    assert_eq!(
        c.connectors[0].sink.batching().linger,
        Duration::from_millis(5)
    );
    let e = yaml(&base("{redis: {url: 'unix:///run/redis.sock'}}")).unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.redis.url");
    let e = yaml(&base("{redis: {url: 'redis://h', stream: 'x:{event}'}}")).unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.redis.stream");
    let e = yaml(&base("{redis: {url: 'redis://h', maxlen: 0}}")).unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.redis.maxlen");
    // Redis reads MAXLEN as a signed 64-bit number: past it every XADD would fail.
    let e = yaml(&base(
        "{redis: {url: 'redis://h', maxlen: 9223372036854775808}}",
    ))
    .unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.redis.maxlen");
    // A `retry:` with one bound takes the other from the sink's defaults (100ms to 10s),
    // not the broker's reconnect defaults (1s to 60s).
    let c = yaml(&base("{redis: {url: 'redis://h', retry: {min: 50ms}}}")).unwrap();
    let Sink::Redis(r) = &c.connectors[0].sink else {
        panic!("redis sink expected")
    };
    assert_eq!(
        (r.retry.min, r.retry.max),
        (Duration::from_millis(50), Duration::from_secs(10))
    );

    let c = yaml(&base("{postgres: {url: 'postgres://u@127.0.0.1/db'}}")).unwrap();
    assert_eq!(
        c.connectors[0].sink.describe(),
        "postgres postgres://u@127.0.0.1/db table mqtt_messages (dedup_id, topic, payload bytea, received_at)"
    );
    let e = yaml(&base("{postgres: {url: 'postgres://u:pw@h/db'}}")).unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.postgres.url");
    assert!(e.message.contains("password_file"), "{e}");
    let e = yaml(&base(
        "{postgres: {url: 'postgres://u@h/db', table: 'a;drop'}}",
    ))
    .unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.postgres.table");
    let e = yaml(&base(
        "{postgres: {url: 'postgres://u@h/db', columns: {payload: xml}}}",
    ))
    .unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.postgres.columns.payload");
    let e = yaml(&base(
        "{postgres: {url: 'postgres://u@h/db', columns: {topic: text}}}",
    ))
    .unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.postgres.columns");
    assert!(e.message.contains("payload"), "{e}");
    let e = yaml(&base(
        "{postgres: {url: 'postgres://u@h/db', columns: {qos: int}}}",
    ))
    .unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.postgres.columns.qos");
}

#[cfg(all(feature = "sink-redis", feature = "sink-postgres"))]
#[test]
fn pipelining_sinks_take_in_flight_and_the_connector_window_covers_it() {
    let base = |sink: &str| {
        format!("connectors:\n  - name: c1\n    subscribe: [\"a/#\"]\n    sink: {sink}\n")
    };
    for (sink, key) in [
        ("redis: {url: 'redis://h'", "redis"),
        ("postgres: {url: 'postgres://u@h/db'", "postgres"),
    ] {
        let c = yaml(&base(&format!("{{{sink}}}}}"))).unwrap();
        assert_eq!(
            c.connectors[0].sink.batching().in_flight,
            4,
            "{key} default"
        );
        let c = yaml(&base(&format!(
            "{{{sink}, in_flight: 64, batch_max: 2000}}}}"
        )))
        .unwrap();
        let b = c.connectors[0].sink.batching();
        assert_eq!((b.in_flight, b.max), (64, 2000));
        // 65 batches' worth is more than MQTT allows: the window stops at 65,535.
        assert_eq!(crate::build::connector_window(&b), u16::MAX);
        for bad in [0, 65] {
            let e = yaml(&base(&format!("{{{sink}, in_flight: {bad}}}}}"))).unwrap_err();
            assert_eq!(e.path, format!("connectors[0].sink.{key}.in_flight"));
            assert!(e.message.contains("between 1 and 64"), "{e}");
        }
    }
    // The default pipeline (4 × 500, plus the batch being gathered) fits the window.
    let c = yaml(&base("{redis: {url: 'redis://h'}}")).unwrap();
    assert_eq!(
        crate::build::connector_window(&c.connectors[0].sink.batching()),
        2500
    );
    // Sinks that take one batch at a time have no such key, and a window of 1024 or more.
    let e = yaml(&base("{file: {path: out.jsonl, in_flight: 2}}")).unwrap_err();
    assert!(e.message.contains("in_flight"), "{e}");
    let c = yaml(&base("{stdout: {}}")).unwrap();
    assert_eq!(c.connectors[0].sink.batching().in_flight, 1);
    assert_eq!(
        crate::build::connector_window(&c.connectors[0].sink.batching()),
        2048
    );
}

#[cfg(feature = "sink-nats")]
#[test]
fn nats_timeout_defaults_to_10s_and_a_bad_one_is_located() {
    let base = |sink: &str| {
        format!("connectors:\n  - name: c1\n    subscribe: [\"a/#\"]\n    sink: {sink}\n")
    };
    let timeout = |sink: &str| match &yaml(&base(sink)).unwrap().connectors[0].sink {
        Sink::Nats(n) => n.timeout,
        other => panic!("nats sink expected, got {other:?}"),
    };
    assert_eq!(
        timeout("{nats: {url: 'nats://h', subject: s}}"),
        Duration::from_secs(10)
    );
    assert_eq!(
        timeout("{nats: {url: 'nats://h', subject: s, timeout: 2s}}"),
        Duration::from_secs(2)
    );
    for bad in ["0s", "soon"] {
        let e = yaml(&base(&format!(
            "{{nats: {{url: 'nats://h', subject: s, timeout: {bad}}}}}"
        )))
        .unwrap_err();
        assert_eq!(e.path, "connectors[0].sink.nats.timeout");
        assert_eq!(e.line, 4);
    }
}

#[test]
fn file_rotate_keep_defaults_to_10_needs_rotate_bytes_and_shows_in_the_plan() {
    let base = |sink: &str| {
        format!("connectors:\n  - name: c1\n    subscribe: [\"a/#\"]\n    sink: {sink}\n")
    };
    let c = yaml(&base("{file: {path: out.jsonl, rotate_bytes: 10MiB}}")).unwrap();
    let Sink::File(f) = &c.connectors[0].sink else {
        panic!("file sink expected")
    };
    assert_eq!(f.rotate_keep, 10);
    assert_eq!(
        c.connectors[0].sink.describe(),
        "file out.jsonl rotated past 10485760 bytes, 10 rotated kept"
    );
    let c = yaml(&base(
        "{file: {path: out.jsonl, rotate_bytes: 1MiB, rotate_keep: 3}}",
    ))
    .unwrap();
    assert_eq!(
        c.connectors[0].sink.describe(),
        "file out.jsonl rotated past 1048576 bytes, 3 rotated kept"
    );
    let c = yaml(&base("{file: {path: out.jsonl}}")).unwrap();
    assert_eq!(c.connectors[0].sink.describe(), "file out.jsonl");
    let e = yaml(&base("{file: {path: out.jsonl, rotate_keep: 3}}")).unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.file.rotate_keep");
    assert_eq!(e.line, 4);
    assert!(
        e.message.contains("only meaningful with rotate_bytes"),
        "{e}"
    );
    for bad in [0, 10_001] {
        let e = yaml(&base(&format!(
            "{{file: {{path: out.jsonl, rotate_bytes: 1MiB, rotate_keep: {bad}}}}}"
        )))
        .unwrap_err();
        assert_eq!(e.path, "connectors[0].sink.file.rotate_keep");
        assert!(e.message.contains("between 1 and 10000"), "{e}");
    }
}

#[cfg(all(
    feature = "sink-http",
    feature = "sink-redis",
    feature = "sink-postgres"
))]
#[test]
fn batch_max_bytes_is_a_size_with_a_default_per_sink_and_located_errors() {
    let base = |sink: &str| {
        format!("connectors:\n  - name: c1\n    subscribe: [\"a/#\"]\n    sink: {sink}\n")
    };
    let max_bytes = |sink: &str| {
        yaml(&base(sink)).unwrap().connectors[0]
            .sink
            .batching()
            .max_bytes
    };
    assert_eq!(max_bytes("{http: {url: 'http://h/x'}}"), 16 << 20);
    assert_eq!(max_bytes("{redis: {url: 'redis://h'}}"), 64 << 20);
    assert_eq!(
        max_bytes("{postgres: {url: 'postgres://u@h/db'}}"),
        64 << 20
    );
    assert_eq!(max_bytes("{stdout: {}}"), 64 << 20);
    assert_eq!(max_bytes("{nats: {url: 'nats://h', subject: s}}"), 64 << 20);
    assert_eq!(
        max_bytes("{http: {url: 'http://h/x', batch_max_bytes: 1KiB}}"),
        1024
    );
    assert_eq!(
        max_bytes("{redis: {url: 'redis://h', batch_max_bytes: 2MB}}"),
        2_000_000
    );
    assert_eq!(
        max_bytes("{postgres: {url: 'postgres://u@h/db', batch_max_bytes: 512}}"),
        512
    );
    for (sink, key) in [
        ("http: {url: 'http://h/x'", "http"),
        ("redis: {url: 'redis://h'", "redis"),
        ("postgres: {url: 'postgres://u@h/db'", "postgres"),
    ] {
        let e = yaml(&base(&format!("{{{sink}, batch_max_bytes: 16 parsecs}}}}"))).unwrap_err();
        assert_eq!(e.path, format!("connectors[0].sink.{key}.batch_max_bytes"));
        assert_eq!((e.file.as_str(), e.line), ("mqlink.yaml", 4));
        assert!(e.message.contains("not a byte size"), "{e}");
        let e = yaml(&base(&format!("{{{sink}, batch_max_bytes: 0}}}}"))).unwrap_err();
        assert_eq!(e.path, format!("connectors[0].sink.{key}.batch_max_bytes"));
        assert!(e.message.contains("at least 1"), "{e}");
        let e = yaml(&base(&format!("{{{sink}, batch_max_bytes: 1GiB}}}}"))).unwrap_err();
        assert_eq!(e.path, format!("connectors[0].sink.{key}.batch_max_bytes"));
        assert!(e.message.contains("at most 512MiB"), "{e}");
    }
    // The file sink's batches are bounded by the generic default; it has no such key.
    let e = yaml(&base("{file: {path: x, batch_max_bytes: 1MiB}}")).unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.file.batch_max_bytes");
}

#[cfg(all(feature = "sink-redis", feature = "sink-postgres"))]
#[test]
fn redis_and_postgres_tls_is_validated_and_shown_in_the_plan_without_secrets() {
    let base = |sink: &str| {
        format!("connectors:\n  - name: c1\n    subscribe: [\"a/#\"]\n    sink: {sink}\n")
    };
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    // rediss:// alone: TLS with the system's roots.
    let c = yaml(&base("{redis: {url: 'rediss://u:s3cret@h:6380'}}")).unwrap();
    let plan = c.connectors[0].sink.describe();
    assert_eq!(
        plan,
        "redis rediss://u:redacted@h:6380 stream mqtt:{topic}, TLS"
    );
    let c = yaml(&base(&format!(
        "{{redis: {{url: 'rediss://h', tls: {{ca_file: '{file}', cert_file: '{file}', key_file: '{file}'}}}}}}"
    )))
    .unwrap();
    assert_eq!(
        c.connectors[0].sink.describe(),
        format!("redis rediss://h stream mqtt:{{topic}}, TLS ca {file} + client cert")
    );
    let e = yaml(&base(&format!(
        "{{redis: {{url: 'redis://h', tls: {{ca_file: '{file}'}}}}}}"
    )))
    .unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.redis.tls");
    assert!(e.message.contains("rediss://"), "{e}");
    let e = yaml(&base(
        "{redis: {url: 'rediss://h', tls: {ca_file: '/nonexistent/ca.pem'}}}",
    ))
    .unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.redis.tls.ca_file");
    let e = yaml(&base(&format!(
        "{{redis: {{url: 'rediss://h', tls: {{cert_file: '{file}'}}}}}}"
    )))
    .unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.redis.tls.cert_file");

    // postgres: a tls: block or sslmode=require turns TLS on (and requires it).
    let c = yaml(&base(
        "{postgres: {url: 'postgres://u@h/db?sslmode=require'}}",
    ))
    .unwrap();
    assert!(
        c.connectors[0]
            .sink
            .describe()
            .ends_with("received_at), TLS"),
        "{}",
        c.connectors[0].sink.describe()
    );
    let c = yaml(&base(&format!(
        "{{postgres: {{url: 'postgres://u@h/db', password: s3cret, tls: {{ca_file: '{file}'}}}}}}"
    )))
    .unwrap();
    let plan = c.connectors[0].sink.describe();
    assert!(plan.ends_with(&format!(", TLS ca {file}")), "{plan}");
    assert!(!plan.contains("s3cret"), "{plan}");
    let e = yaml(&base(&format!(
        "{{postgres: {{url: 'postgres://u@h/db?sslmode=disable', tls: {{ca_file: '{file}'}}}}}}"
    )))
    .unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.postgres.tls");
    let c = yaml(&base(
        "{postgres: {url: 'postgres://u@h/db?sslmode=prefer'}}",
    ))
    .unwrap();
    assert!(!c.connectors[0].sink.describe().contains("TLS"));
}

#[cfg(not(feature = "poll"))]
#[test]
fn a_build_without_the_poll_feature_refuses_poll_sources_where_they_are() {
    let e = yaml(
        "sources:\n  poll:\n    - {url: 'http://x.example/', every: 10s, event: E}\n\
         routes:\n  - {match: ['*'], topic: t}\n",
    )
    .unwrap_err();
    assert_eq!(e.path, "sources.poll", "{e}");
    assert!(e.message.contains("cargo feature `poll`"), "{e}");
}

#[cfg(not(feature = "http"))]
#[test]
fn a_build_without_the_http_feature_refuses_an_http_source_where_it_is() {
    let e = yaml("sources:\n  http:\n    listen: 127.0.0.1:8080\n").unwrap_err();
    assert_eq!(e.path, "sources.http", "{e}");
    assert!(e.message.contains("cargo feature `http`"), "{e}");
    let c = yaml("sources: {http: {enabled: false}, stdin: {enabled: true}}").unwrap();
    assert!(c.sources.http.is_none() && c.sources.stdin);
}

#[cfg(feature = "sink-kafka")]
#[test]
fn kafka_sink_validates_with_defaults_and_located_errors() {
    let base = |sink: &str| {
        format!("connectors:\n  - name: c1\n    subscribe: [\"a/#\"]\n    sink: {sink}\n")
    };
    let c = yaml(&base(
        "{kafka: {brokers: ['k1:9092', 'k2:9092'], topic: 'mqtt.{topic_level_1}'}}",
    ))
    .unwrap();
    assert_eq!(
        c.connectors[0].sink.describe(),
        "kafka k1:9092,k2:9092 topic mqtt.{topic_level_1} key {mqtt_topic} (acks=all, idempotent)"
    );
    let e = yaml(&base("{kafka: {brokers: [], topic: t}}")).unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.kafka.brokers");
    let e = yaml(&base("{kafka: {brokers: ['k1'], topic: t}}")).unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.kafka.brokers[0]");
    let e = yaml(&base(
        "{kafka: {brokers: ['k:1'], topic: t, compression: brotli}}",
    ))
    .unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.kafka.compression");
    let e = yaml(&base(
        "{kafka: {brokers: ['k:1'], topic: t, options: {acks: '1'}}}",
    ))
    .unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.kafka.options.acks");
    let e = yaml(&base(
        "{kafka: {brokers: ['k:1'], topic: t, sasl: {mechanism: gssapi, username: u, password: p}}}",
    ))
    .unwrap_err();
    assert_eq!(e.path, "connectors[0].sink.kafka.sasl.mechanism");
    let c = yaml(&base(
        "{kafka: {brokers: ['k:1'], topic: t, compression: zstd, sasl: {mechanism: SCRAM-SHA-512, username: u, password: p}}}",
    ))
    .unwrap();
    assert!(
        c.connectors[0]
            .sink
            .describe()
            .ends_with("(acks=all, idempotent, zstd, SASL SCRAM-SHA-512)"),
        "{}",
        c.connectors[0].sink.describe()
    );
    assert!(!format!("{c:?}").contains("password: p"));
}

#[test]
fn routes_apply_defaults_and_check_cross_field_rules() {
    let c = yaml(
        "routes:\n  - name: zuul\n    match: ['*']\n    topic: '{tenant}/zuul/{project}'\n    slash: replace\n    properties: {content_type: application/json, message_expiry: 1h, user: {z: '{event}', a: x}}\n",
    )
    .unwrap();
    let r = &c.routes[0];
    assert_eq!(r.qos, QoS::AtLeastOnce);
    assert!(r.enabled && !r.retain);
    assert_eq!(r.slash, SlashPolicy::Replace);
    assert_eq!(r.properties.message_expiry, Some(Duration::from_secs(3600)));
    // User properties keep file order.
    let names: Vec<&str> = r.properties.user.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["z", "a"]);
    let e = yaml("routes: [{match: [], topic: t}]").unwrap_err();
    assert_eq!(e.path, "routes[0].match");
    let e = yaml("routes: [{match: [a], topic: t, payload: {timestamp: unix}}]").unwrap_err();
    assert_eq!(e.path, "routes[0].payload.timestamp");
    let e = yaml("routes: [{match: [a], topic: t, qos: 3}]").unwrap_err();
    assert_eq!(e.path, "routes[0].qos");
    let e = yaml("broker: {protocol: 3.1.1}\nroutes: [{match: [a], topic: t, properties: {content_type: x}}]")
        .unwrap_err();
    assert_eq!(e.path, "routes[0].properties");
    let e = yaml("routes: [{name: r, match: [a], topic: t}, {name: r, match: [b], topic: u}]")
        .unwrap_err();
    assert_eq!(e.path, "routes[1].name");
}

#[test]
fn yaml_syntax_errors_duplicates_and_anchors() {
    let e = yaml("broker:\n  url: [unclosed\n").unwrap_err();
    assert!(e.line >= 2 && e.path.is_empty(), "{e}");
    let e = yaml("broker:\n  url: a\n  url: b\n").unwrap_err();
    assert_eq!((e.line, e.column), (3, 3));
    assert!(e.message.contains("duplicate key 'url'"), "{e}");
    let c = yaml("routes:\n  - &r {match: [a], topic: t, qos: 2}\n  - *r\n").unwrap();
    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.routes[1].qos, QoS::ExactlyOnce);
    let e = yaml("---\na: 1\n---\nb: 2\n").unwrap_err();
    assert!(e.message.contains("only one YAML document"), "{e}");
}

#[test]
fn load_picks_the_format_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let y = dir.path().join("m.yml");
    std::fs::write(&y, "topic_prefix: x\n").unwrap();
    assert_eq!(Loader::new().load(&y).unwrap().topic_prefix, "x");
    let t = dir.path().join("m.TOML");
    std::fs::write(&t, "topic_prefix = \"y/\"\n").unwrap();
    assert_eq!(Loader::new().load(&t).unwrap().topic_prefix, "y");
    let j = dir.path().join("m.json");
    std::fs::write(&j, "{}").unwrap();
    let e = Loader::new().load(&j).unwrap_err();
    assert_eq!(e.line, 0);
    assert!(
        e.to_string()
            .ends_with("m.json: unknown config format: use a .yaml, .yml or .toml file")
    );
    let e = Loader::new()
        .load(&dir.path().join("missing.yaml"))
        .unwrap_err();
    assert!(e.message.starts_with("cannot read"), "{e}");
}

#[test]
fn toml_errors_are_located_too() {
    let e = toml("[broker\nurl = 1\n").unwrap_err();
    assert_eq!(e.line, 1, "{e}");
    let e = toml("[[routes]]\nmatch = [\"a\"]\ntopic = \"x/{y\"\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "mqlink.toml:3:9: routes[0].topic: unclosed '{' at byte 2 (write '{{' for a literal brace)"
    );
}

#[test]
fn route_set_finds_enabled_routes_only() {
    let c = yaml(
        "routes:\n  - {match: [Job*], topic: a}\n  - {match: [JobUpdate], topic: b, enabled: false}\n  - {match: ['*'], topic: c}\n",
    )
    .unwrap();
    let set = c.route_set();
    assert_eq!(set.matches("JobUpdate"), vec![0, 2]);
    assert_eq!(set.matches("Other"), vec![2]);
}

// The config shows secrets in the HTTP source's tokens and a poll source's headers.
#[cfg(all(feature = "http", feature = "poll"))]
#[test]
fn debug_output_of_a_loaded_config_never_shows_a_secret() {
    let cfg = yaml(
        "broker:\n  url: mqtt://alice:url-pw-1@broker.example:1883\n\
         sources:\n  http:\n    listen: 0.0.0.0:8080\n    tokens: ['${INGEST_TOKEN}', literal-tok-2]\n\
         \x20 poll:\n    - {url: 'http://x.example/', every: 10s, event: E, headers: {Authorization: 'Bearer poll-hdr-3'}}\n\
         routes:\n  - {match: ['*'], topic: t}\n",
    )
    .unwrap();
    let embedded = yaml(
        "broker:\n  url: embedded\n  embedded:\n    username: u\n    password: emb-pw-4\n\
         routes:\n  - {match: ['*'], topic: t}\n",
    )
    .unwrap();
    let env_pw = yaml(
        "broker:\n  url: mqtt://broker.example\n  username: bob\n  password: ${MQTT_PASSWORD}\n\
         routes:\n  - {match: ['*'], topic: t}\n",
    )
    .unwrap();
    let printed = format!(
        "{cfg:?}\n{cfg:#?}\n{embedded:?}\n{env_pw:?}\n{:?}\n{:?}\n{:?}",
        crate::build::mqtt_options(&cfg.broker),
        crate::build::broker_url(&cfg.broker),
        crate::build::mqtt_options(&env_pw.broker),
    );
    for secret in [
        "url-pw-1",
        "s3cr#t: pw",
        "tok-123",
        "literal-tok-2",
        "poll-hdr-3",
        "emb-pw-4",
    ] {
        assert!(
            !printed.contains(secret),
            "{secret:?} printed in:\n{printed}"
        );
    }
    assert!(printed.contains("redacted"));
}

/// Issue 14: validation returns a runnable config — every jq program compiled (a bad one
/// is a located config error wherever it is) and the defaults that depend on other
/// sections filled (no `unwrap_or(default)` after validation).
// A poll source's `split` is one of the programs.
#[cfg(feature = "poll")]
#[test]
fn validation_compiles_every_jq_program_and_fills_cross_section_defaults() {
    let c = yaml(
        "spool: {dir: /var/lib/mqlink}\n\
         broker: {url: 'mqtt://b', session: persistent, session_expiry: 2h}\n\
         sources: {poll: [{url: 'http://s/h', every: 1s, event: e, split: '.items'}]}\n\
         routes: [{match: ['*'], topic: t, payload: {transform: '.a'}}]\n\
         connectors:\n\
         \x20 - {name: p, subscribe: [a], transforms: [{map: '.'}], sink: {stdout: {}}}\n\
         \x20 - {name: c, subscribe: [a], session: clean, dead_letter: d.jsonl, sink: {stdout: {}}}\n",
    )
    .unwrap();
    assert_eq!(c.sources.poll[0].split.as_ref().unwrap().code(), ".items");
    assert_eq!(c.routes[0].payload.transform.as_ref().unwrap().code(), ".a");
    assert!(matches!(&c.connectors[0].transforms[..], [Transform::Map(p)] if p.code() == "."));
    assert_eq!(
        c.connectors[0].dead_letter,
        std::path::Path::new("/var/lib/mqlink/dead-letter-p.jsonl")
    );
    assert_eq!(
        c.connectors[0].session_expiry,
        Some(Duration::from_secs(7200))
    );
    assert_eq!(c.connectors[1].dead_letter, std::path::Path::new("d.jsonl"));
    assert_eq!(c.connectors[1].session_expiry, None);
    let day = yaml("connectors: [{name: p, subscribe: [a], sink: {stdout: {}}}]\n").unwrap();
    assert_eq!(
        day.connectors[0].session_expiry,
        Some(Duration::from_secs(86_400))
    );

    for (text, at) in [
        (
            "sources: {poll: [{url: 'http://s/h', every: 1s, event: e, split: '.a |'}]}\n",
            "mqlink.yaml:1:66: sources.poll[0].split: ",
        ),
        (
            "routes: [{match: ['*'], topic: t, payload: {transform: 'nosuch'}}]\n",
            "mqlink.yaml:1:56: routes[0].payload.transform: ",
        ),
        (
            "connectors: [{name: p, subscribe: [a], transforms: [{filter: '('}], sink: {stdout: {}}}]\n",
            "mqlink.yaml:1:62: connectors[0].transforms[0].filter: ",
        ),
    ] {
        let e = yaml_err(text);
        assert!(e.starts_with(at), "{e}");
    }
}

/// A connector with `sink`, loaded; its `{:?}` and `{:#?}` must not contain `secret`.
#[cfg(any(feature = "sink-http", feature = "sink-nats", feature = "sink-redis"))]
fn sink_debug_hides(sink: &str, secret: &str) -> String {
    let c = yaml(&format!(
        "connectors:\n  - name: c1\n    subscribe: [\"a/#\"]\n    sink: {sink}\n"
    ))
    .unwrap();
    let printed = match &c.connectors[0].sink {
        #[cfg(feature = "sink-redis")]
        Sink::Redis(r) => format!("{r:?}\n{r:#?}"),
        #[cfg(feature = "sink-http")]
        Sink::Http(h) => format!("{h:?}\n{h:#?}"),
        #[cfg(feature = "sink-nats")]
        Sink::Nats(n) => format!("{n:?}\n{n:#?}"),
        other => panic!("unexpected sink {}", other.kind()),
    };
    assert!(
        !printed.contains(secret),
        "{secret:?} printed in:\n{printed}"
    );
    assert!(printed.contains("u:redacted@"), "{printed}");
    printed
}

// Issue 14: a derived `Debug` printed `user:password@` of these URLs.
#[cfg(feature = "sink-redis")]
#[test]
fn redis_config_debug_hides_the_url_password() {
    let printed = sink_debug_hides(
        "{redis: {url: 'redis://u:redis-pw-1@h:6379/2'}}",
        "redis-pw-1",
    );
    assert!(
        printed.contains("batch_max: 500"),
        "other fields still shown: {printed}"
    );
}

#[cfg(feature = "sink-http")]
#[test]
fn http_config_and_sink_debug_hide_the_url_password() {
    sink_debug_hides("{http: {url: 'https://u:http-pw-2@h/in'}}", "http-pw-2");
    let url = url::Url::parse("https://u:http-pw-2@h/in").unwrap();
    let sink = crate::sink::HttpSink::new(&url, "POST", &[], 10, Duration::from_secs(1)).unwrap();
    let printed = format!("{sink:?}");
    assert!(!printed.contains("http-pw-2"), "{printed}");
}

#[cfg(feature = "sink-nats")]
#[test]
fn nats_config_debug_hides_the_url_password() {
    sink_debug_hides(
        "{nats: {url: 'nats://u:nats-pw-3@h:4222', subject: s}}",
        "nats-pw-3",
    );
}

#[cfg(feature = "poll")]
#[test]
fn poll_config_debug_hides_the_url_password() {
    let c = yaml("sources: {poll: [{url: 'http://u:poll-pw-4@x.example/', every: 10s, event: E}]}")
        .unwrap();
    let p = &c.sources.poll[0];
    let printed = format!("{p:?}\n{p:#?}");
    assert!(!printed.contains("poll-pw-4"), "{printed}");
    assert!(printed.contains("u:redacted@x.example"), "{printed}");
}
