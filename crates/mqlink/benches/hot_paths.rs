//! Hot paths of the publish and subscribe paths, one group each: route match (a `GlobSet`
//! over 50 routes), topic render (`Template::render` with nested fields), record encode
//! (connector records and the spool record), and the MQTT PUBLISH codec.
//! Whole-system numbers live in `bench/run.py`; these say which step costs what.

#![allow(missing_docs)] // criterion_group! defines an undocumented public function
use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mqlink::internals::OutMessage;
use mqlink::mqtt::codec::{self, Packet, Protocol, Publish, PublishProps, QoS};
use mqlink::record;
use mqlink::topic::{EventGlob, GlobSet, RenderContext, SlashPolicy, Template};
use serde_json::json;

fn route_match(c: &mut Criterion) {
    // 50 routes as a real config mixes them: literal names, prefixes, and catch-alls.
    let lists: Vec<Vec<EventGlob>> = (0..50)
        .map(|i| {
            let p = match i % 5 {
                0 => format!("Job{i}Update"),
                1 => format!("printer.{i}.*"),
                2 => format!("zuul.pipeline{i}.*"),
                3 => format!("Butler{i}*"),
                _ => format!("event{i}"),
            };
            vec![EventGlob::parse(&p).expect("valid glob")]
        })
        .collect();
    let set = GlobSet::new(lists.iter().map(|l| l.iter()));
    let mut out = Vec::new();
    let mut g = c.benchmark_group("route_match");
    g.throughput(Throughput::Elements(1));
    for name in [
        "Job20Update",
        "printer.11.progress",
        "zuul.pipeline47.ok",
        "NoSuchEvent",
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                set.matches_into(black_box(name), &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn topic_render(c: &mut Criterion) {
    let t =
        Template::parse("{tenant}/zuul/{pipeline}/{project.name}/{change.branch}/{change.number}")
            .expect("valid template");
    let fields = json!({
        "tenant": "openstack", "pipeline": "check",
        "project": {"name": "nova", "canonical": "opendev.org/openstack/nova"},
        "change": {"branch": "master", "number": 912_345, "patchset": 7},
        "result": "SUCCESS"
    });
    let ctx = RenderContext {
        event: "buildset",
        fields: &fields,
        hostname: "host",
        prefix: "",
        slash: SlashPolicy::Replace,
    };
    let mut g = c.benchmark_group("topic_render");
    g.throughput(Throughput::Elements(1));
    g.bench_function("zuul_nested", |b| {
        b.iter(|| black_box(t.render(black_box(&ctx)).expect("renders")))
    });
    g.finish();
}

fn publish(payload: Bytes, qos: QoS, pid: Option<u16>) -> Publish {
    Publish {
        topic: Arc::from("octoprint/event/PrintProgress"),
        payload,
        qos,
        retain: false,
        dup: false,
        pid,
        props: PublishProps::default(),
    }
}

fn payload() -> Bytes {
    Bytes::from_static(
        br#"{"_event":"PrintProgress","_timestamp":1700000000,"progress":42,"file":"benchy.gcode"}"#,
    )
}

fn record_encode(c: &mut Criterion) {
    let p = publish(payload(), QoS::AtLeastOnce, Some(1));
    let at = SystemTime::now();
    let out = OutMessage {
        route: 3,
        topic: "octoprint/event/PrintProgress".into(),
        payload: payload(),
        qos: QoS::AtLeastOnce,
        retain: false,
        props: PublishProps::default(),
        accepted_at_ms: 1_700_000_000_000,
    };
    let encoded = out.encode();
    let mut g = c.benchmark_group("record_encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("fluvio", |b| {
        b.iter(|| black_box(serde_json::to_vec(&record::fluvio(black_box(&p))).expect("json")))
    });
    g.bench_function("json_record", |b| {
        b.iter(|| {
            black_box(serde_json::to_vec(&record::json_record(black_box(&p), at)).expect("json"))
        })
    });
    g.bench_function("spool_record_encode", |b| {
        b.iter(|| black_box(black_box(&out).encode()))
    });
    g.bench_function("spool_record_decode", |b| {
        b.iter(|| black_box(OutMessage::decode(black_box(encoded.clone())).expect("decodes")))
    });
    g.finish();
}

fn codec_publish(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec_publish");
    g.throughput(Throughput::Elements(1));
    for (name, protocol) in [("v5", Protocol::V5), ("v311", Protocol::V311)] {
        let packet = Packet::Publish(publish(payload(), QoS::AtLeastOnce, Some(7)));
        let mut wire = BytesMut::new();
        codec::encode(&packet, protocol, &mut wire).expect("encodes");
        let mut buf = BytesMut::with_capacity(256);
        g.bench_function(format!("encode_{name}"), |b| {
            b.iter(|| {
                buf.clear();
                codec::encode(black_box(&packet), protocol, &mut buf).expect("encodes");
                black_box(buf.len())
            })
        });
        g.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| {
                let mut input = wire.clone();
                black_box(codec::decode(&mut input, protocol, 1 << 20).expect("decodes"))
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    route_match,
    topic_render,
    record_encode,
    codec_publish
);
criterion_main!(benches);
