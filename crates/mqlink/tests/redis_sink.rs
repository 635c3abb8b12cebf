//! The `redis` sink end to end: a private Mosquitto and a private `redis-server` (free
//! ports, temporary directories), read back with XRANGE.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use mqlink::internals::{ConnectorStats, Record, Sink, SinkError};
use mqlink_testkit::{Mosquitto, MosquittoOptions, Redis, TlsMaterial};
use redis::AsyncCommands as _;
use support::*;
use tokio::net::TcpStream;

/// Every entry of `stream`: (topic field, record field).
async fn entries(redis: &Redis, stream: &str) -> Vec<(String, Vec<u8>)> {
    let client = redis::Client::open(redis.url()).unwrap();
    // A long reply on a loaded machine can outlast redis-rs's default response timeout.
    let cfg =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    let Ok(mut c) = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
    else {
        return Vec::new();
    };
    let reply: redis::streams::StreamRangeReply = match c.xrange_all(stream).await {
        Ok(r) => r,
        Err(_) => return Vec::new(),
    };
    reply
        .ids
        .into_iter()
        .map(|e| {
            let get = |k: &str| match e.map.get(k) {
                Some(redis::Value::BulkString(b)) => b.clone(),
                other => panic!("field {k}: {other:?}"),
            };
            (String::from_utf8(get("topic")).unwrap(), get("record"))
        })
        .collect()
}

async fn records(redis: &Redis, stream: &str) -> Vec<String> {
    entries(redis, stream)
        .await
        .into_iter()
        .map(|(_, r)| String::from_utf8(r).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_sink_stores_records_exactly_as_formatted_in_per_topic_order() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let redis = Redis::start();
    let url = redis.url();
    let fluvio = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: fl, subscribe: ['/hfp/#'], format: fluvio, session: clean, \
             sink: {{redis: {{url: '{url}', stream: 'fluvio'}}}}}}"
        ),
    );
    let raw = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: rw, subscribe: ['raw/#'], format: raw, session: clean, \
             sink: {{redis: {{url: '{url}', stream: 'mqtt:{{topic_level_2}}', batch_max: 64, linger: 5ms}}}}}}"
        ),
    );
    let json = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: js, subscribe: ['js/#'], session: clean, \
             sink: {{redis: {{url: '{url}', stream: 'json', maxlen: 100000}}}}}}"
        ),
    );
    let runs = [
        Running::start(&fluvio).await,
        Running::start(&raw).await,
        Running::start(&json).await,
    ];
    let (a, b) = publish_format_workload(&broker).await;
    let (seed_topic, _) = fluvio_seed();
    for r in &runs {
        let stats = r.stats.clone();
        eventually("all acked", || {
            mqlink::internals::ConnectorStats::get(&stats.acked) >= 1
        })
        .await;
    }
    eventually_async("1000 raw entries", || async {
        entries(&redis, "mqtt:a").await.len() + entries(&redis, "mqtt:b").await.len() >= 1000
    })
    .await;

    // fluvio: the seed record byte for byte, and the topic beside it.
    let fl = entries(&redis, "fluvio").await;
    assert_eq!(fl.len(), 1);
    assert_eq!(fl[0].0, seed_topic);
    assert_eq!(String::from_utf8(fl[0].1.clone()).unwrap(), FLUVIO_SEED);
    // raw: the payloads, each topic's stream in publish order.
    assert_eq!(records(&redis, "mqtt:a").await, a);
    assert_eq!(records(&redis, "mqtt:b").await, b);
    // json: mqlink's JSON record.
    let js = records(&redis, "json").await;
    let v: serde_json::Value = serde_json::from_str(&js[0]).unwrap();
    assert_eq!(v["topic"], "js/x");
    assert_eq!(v["payload"], serde_json::json!({"t": 21.5}));
    assert_eq!(v["qos"], 1);
    for r in runs {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_of_ten_seconds_holds_acks_and_a_killed_connector_loses_nothing() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let mut redis = Redis::start();
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: outage, subscribe: [load/#], format: raw, session: persistent, \
             sink: {{redis: {{url: '{}', stream: 'load', batch_max: 100, timeout: 1s, \
             retry: {{min: 20ms, max: 250ms}}}}}}}}",
            redis.url()
        ),
    );
    let first = Running::start(&cfg).await;
    publish_lines(&broker, "load/1", numbered("a", 0..1000)).await;
    eventually_async("first 1000 stored", || async {
        records(&redis, "load").await.len() >= 1000
    })
    .await;
    let stats = first.stats.clone();
    eventually("first 1000 acked", || {
        mqlink::internals::ConnectorStats::get(&stats.acked) == 1000
    })
    .await;

    // Outage: Redis goes away under load.
    let outage_start = Instant::now();
    redis.stop();
    publish_lines(&broker, "load/1", numbered("b", 0..1000)).await;
    let errors = first.stats.clone();
    eventually("failed deliveries", || {
        mqlink::internals::ConnectorStats::get(&errors.sink_errors) >= 3
    })
    .await;
    assert_eq!(first.acked(), 1000, "acknowledged during the outage");
    // Kill the connector in the middle of the outage; the persistent session keeps
    // everything unacknowledged.
    first.stop().await;
    let second = Running::start(&cfg).await;
    publish_lines(&broker, "load/1", numbered("c", 0..1000)).await;
    let errors = second.stats.clone();
    eventually("failed deliveries after the restart", || {
        mqlink::internals::ConnectorStats::get(&errors.sink_errors) >= 3
    })
    .await;
    assert_eq!(second.acked(), 0, "acknowledged during the outage");
    tokio::time::sleep_until((outage_start + Duration::from_secs(10)).into()).await;
    redis.restart();

    let mut want = numbered("a", 0..1000);
    want.extend(numbered("b", 0..1000));
    want.extend(numbered("c", 0..1000));
    eventually_async("3000 distinct records", || async {
        first_occurrences(&records(&redis, "load").await).len() >= 3000
    })
    .await;
    let got = records(&redis, "load").await;
    assert_eq!(first_occurrences(&got), want, "lost or reordered");
    eprintln!(
        "redis outage: {} entries for 3000 messages ({} duplicates)",
        got.len(),
        got.len() - 3000
    );
    let stats = second.stats.clone();
    eventually("all acked", || {
        mqlink::internals::ConnectorStats::get(&stats.acked) == 2000
    })
    .await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_refused_entries_are_dead_lettered_with_the_reason_and_the_rest_flow() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    // The key for topic level "bad" holds a string: XADD answers WRONGTYPE.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let () = c.set("s:bad", "not a stream").await.unwrap();
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: dl, subscribe: ['#'], format: raw, session: clean, dead_letter: '{}', \
             sink: {{redis: {{url: '{}', stream: 's:{{topic_level_1}}'}}}}}}",
            dead.display(),
            redis.url()
        ),
    );
    let conn = Running::start(&cfg).await;
    // One batch mixing good and refused records: what follows a refused one in the same
    // pipeline is stored once, not twice.
    let mut lines = Vec::new();
    for i in 0..50 {
        lines.push(format!("g{i}"));
    }
    publish_lines(&broker, "good/x", lines[..25].to_vec()).await;
    publish_lines(&broker, "bad/x", vec!["refused".into()]).await;
    publish_lines(&broker, "good/x", lines[25..].to_vec()).await;
    let stats = conn.stats.clone();
    eventually("all acked", || {
        mqlink::internals::ConnectorStats::get(&stats.acked) == 51
    })
    .await;
    assert_eq!(records(&redis, "s:good").await, lines);
    let d = dead_letters(&dead);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["topic"], "bad/x");
    assert_eq!(d[0]["record"], "refused");
    let err = d[0]["error"].as_str().unwrap();
    assert!(err.contains("WRONGTYPE"), "{err}");
    conn.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_entries_stored_after_a_refused_one_are_not_added_again() {
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let () = c.set("s:bad", "not a stream").await.unwrap();
    let mut sink = open_sink_with(&redis.url(), "stream: 's:{topic_level_1}'").await;
    let rec = record;
    let batch = [
        rec("good/1", "g0"),
        rec("bad/1", "refused"),
        rec("good/1", "g1"),
        rec("good/1", "g2"),
    ];
    // One pipeline: g0 stored, the refused one reported, g1 and g2 stored anyway.
    let err = sink.deliver(&batch).await.unwrap_err();
    assert!(
        matches!(&err, mqlink::internals::SinkError::Reject { done: 1, count: 1, reason } if reason.contains("WRONGTYPE")),
        "{err:?}"
    );
    assert_eq!(records(&redis, "s:good").await, ["g0", "g1", "g2"]);
    // The connector offers the rest again: confirmed without a second XADD.
    sink.deliver(&batch[2..]).await.unwrap();
    assert_eq!(records(&redis, "s:good").await, ["g0", "g1", "g2"]);
    // And the memory is spent: new records go in.
    sink.deliver(&[rec("good/1", "g3")]).await.unwrap();
    assert_eq!(records(&redis, "s:good").await, ["g0", "g1", "g2", "g3"]);
}

/// Connections Redis lists under `name` (`CLIENT LIST`, over the plain port, blocking).
/// `CLIENT LIST`, one line per client.
fn client_list(redis: &Redis) -> String {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap()
}

fn clients_named(redis: &Redis, name: &str) -> usize {
    client_list(redis)
        .lines()
        .filter(|l| l.split(' ').any(|f| f == format!("name={name}")))
        .count()
}

#[test]
fn a_stopped_connector_leaves_no_task_and_closes_its_redis_connection_even_when_redis_hangs() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let mut redis = Redis::start();
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: hang, subscribe: [hang/#], format: raw, session: clean, \
             sink: {{redis: {{url: '{}', stream: hang, timeout: 300ms, \
             retry: {{min: 20ms, max: 100ms}}}}}}}}",
            redis.url()
        ),
    );
    let rt = run_alone(&cfg, async |stats| {
        publish_lines(&broker, "hang/1", vec!["one".into()]).await;
        eventually("one acked", || ConnectorStats::get(&stats.acked) == 1).await;
        assert_eq!(clients_named(&redis, "mqlink-hang"), 1);
        // Redis hangs while a pipeline larger than the socket buffers is being written:
        // the write can never finish. The sink gives up on that connection (its reply
        // timeout) and on every new one (connect timeout).
        redis.pause();
        let mut args = broker.client_args();
        args.extend(["-q", "1", "-t", "hang/1", "-s"].map(String::from));
        for _ in 0..3 {
            let args = args.clone();
            let out = tokio::task::spawn_blocking(move || {
                mqlink_testkit::mosquitto_pub_with_stdin(&args, &vec![b'x'; 12 << 20])
            })
            .await
            .unwrap();
            assert!(out.status.success(), "mosquitto_pub: {out:?}");
        }
        eventually("failed deliveries", || {
            ConnectorStats::get(&stats.sink_errors) >= 2
        })
        .await;
    });
    // The connector has returned: nothing of it may still be on its runtime (the
    // connection I/O was polled by the connector, not spawned).
    assert_eq!(rt.metrics().num_alive_tasks(), 0, "tasks left behind");
    redis.resume();
    let aux = tokio::runtime::Runtime::new().unwrap();
    aux.block_on(eventually("the connection closed at Redis", || {
        clients_named(&redis, "mqlink-hang") == 0
    }));
    drop(rt);
}

/// A `redis` sink for `url` with `tls` (YAML flow mapping body, may be empty), opened and
/// its driver spawned.
async fn open_sink(url: &str, tls: &str) -> mqlink::internals::Sink {
    let tls = if tls.is_empty() {
        String::new()
    } else {
        format!(", tls: {{{tls}}}")
    };
    open_sink_with(url, &format!("stream: 's', timeout: 5s{tls}")).await
}

/// A `redis` sink (connector `tls`) for `url` with more `keys` (YAML flow mapping
/// entries), opened and its driver spawned, as a connector would poll it.
async fn open_sink_with(url: &str, keys: &str) -> mqlink::internals::Sink {
    let (cfg, _) = connector_cfg(
        "mqtt://127.0.0.1:1",
        &format!(
            "{{name: tls, subscribe: ['#'], format: raw, \
             sink: {{redis: {{url: '{url}', {keys}}}}}}}"
        ),
    );
    let (sink, driver) = mqlink::internals::open(
        &cfg.sink,
        "tls",
        "tls",
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    tokio::spawn(driver.unwrap());
    sink
}

fn raw_record(payload: &'static str) -> mqlink::internals::Record {
    record("t/1", payload)
}

/// A raw record of `payload` from `topic`.
fn record(topic: &str, payload: impl Into<String>) -> mqlink::internals::Record {
    let payload = bytes::Bytes::from(payload.into());
    mqlink::internals::Record {
        topic: topic.into(),
        source: payload.clone(),
        part: 0,
        body: mqlink::internals::Body::Raw(payload),
        meta: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_over_tls_verifies_the_server_against_the_configured_ca() {
    let tls = TlsMaterial::generate();
    let redis = Redis::start_tls(&tls, false);
    let url = redis.tls_url();
    let ca = |f: &std::path::Path| format!("ca_file: '{}'", f.display());

    let mut sink = open_sink(&url, &ca(tls.ca_file())).await;
    sink.deliver(&[raw_record("over tls")]).await.unwrap();
    assert_eq!(records(&redis, "s").await, ["over tls"]);

    // A CA that did not sign the server's certificate: refused, nothing stored.
    let mut wrong = open_sink(&url, &ca(tls.other_ca_file())).await;
    let err = wrong
        .deliver(&[raw_record("must not land")])
        .await
        .unwrap_err();
    let mqlink::internals::SinkError::Retry { done: 0, reason } = &err else {
        panic!("{err:?}");
    };
    assert!(
        reason.starts_with(&format!("redis {url}")) && reason.contains("UnknownIssuer"),
        "{reason}"
    );
    assert!(reason.contains("check tls.ca_file"), "{reason}");
    assert_eq!(records(&redis, "s").await, ["over tls"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_over_mutual_tls_presents_the_client_certificate() {
    let tls = TlsMaterial::generate();
    let redis = Redis::start_tls(&tls, true);
    let url = redis.tls_url();
    let ca = format!("ca_file: '{}'", tls.ca_file().display());

    // Without a client certificate the server ends the handshake.
    let mut anonymous = open_sink(&url, &ca).await;
    let err = anonymous
        .deliver(&[raw_record("anonymous")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, mqlink::internals::SinkError::Retry { done: 0, .. }),
        "{err:?}"
    );

    let mut sink = open_sink(
        &url,
        &format!(
            "{ca}, cert_file: '{}', key_file: '{}'",
            tls.client_cert().display(),
            tls.client_key().display()
        ),
    )
    .await;
    sink.deliver(&[raw_record("with a client certificate")])
        .await
        .unwrap();
    assert_eq!(records(&redis, "s").await, ["with a client certificate"]);
}

/// XLEN of `stream` (0 while Redis is away).
async fn xlen(redis: &Redis, stream: &str) -> usize {
    let client = redis::Client::open(redis.url()).unwrap();
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return 0;
    };
    c.xlen(stream).await.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_crash_with_pipelines_in_flight_acked_only_what_was_stored_and_loses_nothing() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let mut redis = Redis::start();
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: crash, client_id: pipe-crash, subscribe: [load/#], format: raw, \
             session: persistent, sink: {{redis: {{url: '{}', stream: 'load', batch_max: 20, \
             in_flight: 8, timeout: 1s, retry: {{min: 20ms, max: 250ms}}}}}}}}",
            redis.url()
        ),
    );
    let all = numbered("m", 0..20_000);
    let first = Running::start(&cfg).await;
    let stats = first.stats.clone();
    let crash = async {
        eventually_async("mid-stream", || async {
            xlen(&redis, "load").await >= 2_000
        })
        .await;
        // Frozen: the pipelines on the wire get no answer; they time out, which is the
        // sign that some were in flight, and nothing can be confirmed from here on.
        redis.pause();
        eventually("a pipelined delivery timed out", || {
            ConnectorStats::get(&stats.sink_errors) >= 1
        })
        .await;
        let acked = ConnectorStats::get(&stats.acked) as usize;
        // A crash: what Redis had not executed and fsynced is gone.
        redis.kill();
        acked
    };
    let ((), acked) = tokio::join!(publish_lines(&broker, "load/1", all.clone()), crash);
    first.stop().await;
    assert!(acked < all.len(), "the stream was over before the crash");
    redis.restart();
    let stored = first_occurrences(&records(&redis, "load").await);
    assert!(
        stored.len() >= acked && stored[..acked] == all[..acked],
        "acknowledged {acked} messages but Redis has {} of them (first missing: {:?})",
        stored.len(),
        all[..acked].iter().find(|m| !stored.contains(m))
    );

    // The persistent session gives back everything not acknowledged.
    let second = Running::start(&cfg).await;
    eventually_async("every record", || async {
        xlen(&redis, "load").await >= all.len()
            && first_occurrences(&records(&redis, "load").await).len() >= all.len()
    })
    .await;
    let got = records(&redis, "load").await;
    let firsts = first_occurrences(&got);
    if let Some(i) = (0..all.len()).find(|&i| firsts.get(i) != Some(&all[i])) {
        panic!(
            "lost or reordered from #{i} (acked {acked} before the crash, {} entries, {} stored then): got {:?}, want {:?}",
            got.len(),
            stored.len(),
            &firsts[i.saturating_sub(3)..firsts.len().min(i + 12)],
            &all[i.saturating_sub(3)..all.len().min(i + 12)]
        );
    }
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_refusals_in_pipelined_batches_dead_letter_exactly_them_and_acks_stay_in_order() {
    let broker = Mosquitto::start(logging_broker());
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let () = c.set("s:bad", "not a stream").await.unwrap();
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: pipe, client_id: pipe-refusals, subscribe: ['good/#', 'bad/#'], format: raw, \
             session: persistent, dead_letter: '{}', \
             sink: {{redis: {{url: '{}', stream: 's:{{topic_level_1}}', batch_max: 10, in_flight: 8}}}}}}",
            dead.display(),
            redis.url()
        ),
    );
    // A backlog, so that batches are full and several are on the wire at once when the
    // connector comes back; a refused record every 14, so that many batches on the wire
    // together have one, with stored entries after it.
    Running::start(&cfg).await.stop().await;
    let good = numbered("g", 0..390);
    let bad = numbered("x", 0..30);
    for (g, x) in good.chunks(13).zip(&bad) {
        publish_lines(&broker, "good/1", g.to_vec()).await;
        publish_lines(&broker, "bad/1", vec![x.clone()]).await;
    }
    let conn = Running::start(&cfg).await;
    let stats = conn.stats.clone();
    eventually("all acked", || ConnectorStats::get(&stats.acked) == 420).await;
    // Every good record once, in order: the entries stored after a refused one in the
    // same pipeline are not added again when its batch is delivered again.
    assert_eq!(records(&redis, "s:good").await, good);
    let d = dead_letters(&dead);
    let refused: Vec<&str> = d.iter().map(|x| x["record"].as_str().unwrap()).collect();
    assert_eq!(refused, bad);
    assert!(
        d.iter()
            .all(|x| x["error"].as_str().unwrap().contains("WRONGTYPE"))
    );
    assert_acks_in_arrival_order(&broker, "pipe-refusals", 420).await;
    conn.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_sent_before_the_suback_is_drained_not_stalled_on() {
    // Mosquitto sends a resumed session up to `max_inflight_messages` of its queue before
    // it answers the SUBSCRIBE: far more than the connector's delivery buffer. MQTT 3.1.1
    // has no Receive Maximum to stop it.
    let broker = Mosquitto::start(MosquittoOptions {
        max_inflight_messages: Some(10_000),
        ..MosquittoOptions::default()
    });
    let redis = Redis::start();
    let cfg = connector_cfg(
        &format!("{}', protocol: '3.1.1", broker.url()),
        &format!(
            "{{name: backlog, client_id: pipe-backlog, subscribe: [b/#], format: raw, \
             session: persistent, sink: {{redis: {{url: '{}', stream: 'b'}}}}}}",
            redis.url()
        ),
    );
    Running::start(&cfg).await.stop().await;
    let all = numbered("m", 0..5_000);
    publish_lines(&broker, "b/1", all.clone()).await;
    let conn = Running::start(&cfg).await;
    eventually_async("the backlog drained", || async {
        xlen(&redis, "b").await >= all.len()
    })
    .await;
    assert_eq!(first_occurrences(&records(&redis, "b").await), all);
    conn.stop().await;
}

/// The `id` of the one client named `name` (`CLIENT LIST`).
fn client_id(redis: &Redis, name: &str) -> Option<String> {
    client_list(redis)
        .lines()
        .find(|l| l.split(' ').any(|f| f == format!("name={name}")))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_string)
}

/// A primary that turns replica (a failover behind the same DNS name) keeps its clients
/// and answers writes with READONLY: the sink retries on a new connection, not forever on
/// the old one. It kept the old connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_readonly_answer_makes_the_sink_connect_again() {
    use mqlink::internals::SinkError;
    let redis = Redis::start();
    let mut sink = open_sink(&redis.url(), "").await;
    sink.deliver(&[raw_record("before")]).await.unwrap();
    let first = client_id(&redis, "mqlink-tls").expect("the sink's connection");
    let admin = redis::Client::open(redis.url()).unwrap();
    let mut a = admin.get_multiplexed_async_connection().await.unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(dead_port)
        .query_async(&mut a)
        .await
        .unwrap();
    match sink.deliver(&[raw_record("during")]).await {
        Err(SinkError::Retry { reason, .. }) => assert!(reason.contains("READONLY"), "{reason}"),
        other => panic!("expected a retry on READONLY, got {other:?}"),
    }
    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut a)
        .await
        .unwrap();
    sink.deliver(&[raw_record("after")]).await.unwrap();
    let second = client_id(&redis, "mqlink-tls").expect("the sink's connection");
    assert_ne!(first, second, "the sink kept its connection after READONLY");
    assert_eq!(records(&redis, "s").await, ["before", "after"]);
}

/// `INFO commandstats`' call count of `command` (lower case; 0 when never called).
async fn calls(redis: &Redis, command: &str) -> u64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// `ACL SETUSER name on >secret` with `rules`, on `redis`.
async fn acl_user(redis: &Redis, name: &str, rules: &[&str]) {
    let admin = redis::Client::open(redis.url()).unwrap();
    let mut a = admin.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(name)
        .arg("on")
        .arg(">secret")
        .arg(rules)
        .query_async(&mut a)
        .await
        .unwrap();
}

/// A batch is one MULTI/EXEC: under `appendfsync always` one fsync per batch, not one per
/// 16 KB of XADDs.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_one_transaction() {
    let redis = Redis::start();
    let mut sink = open_sink(&redis.url(), "").await;
    sink.deliver(&[raw_record("a"), raw_record("b"), raw_record("c")])
        .await
        .unwrap();
    assert_eq!(records(&redis, "s").await, ["a", "b", "c"]);
    assert_eq!(calls(&redis, "exec").await, 1);
    assert_eq!(calls(&redis, "xadd").await, 3);
}

/// A transaction Redis refuses as a whole (a command refused while queuing: here NOPERM
/// for a key the user may not write) stored nothing; the next try is a bare pipeline, which
/// stores the records before the refused one and points at it.
#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_refused_as_a_whole_is_retried_as_a_bare_pipeline() {
    use mqlink::internals::SinkError;
    let redis = Redis::start();
    acl_user(&redis, "limited", &["~s:ok*", "&*", "+@all"]).await;
    let url = format!("redis://limited:secret@127.0.0.1:{}", redis.port());
    let mut sink = open_sink_with(&url, "stream: 's:{topic_level_1}'").await;
    let rec = record;
    let batch = [rec("ok/1", "o0"), rec("no/1", "refused"), rec("ok/1", "o1")];
    match sink.deliver(&batch).await {
        Err(SinkError::Retry { done: 0, reason }) => {
            assert!(reason.contains("transaction refused: NOPERM"), "{reason}");
        }
        other => panic!("expected the transaction refused, got {other:?}"),
    }
    assert!(records(&redis, "s:ok").await.is_empty(), "nothing ran");
    // The record the ACL refuses is refused for good (dead-lettered by a connector), not
    // retried forever with every message behind it waiting.
    match sink.deliver(&batch).await {
        Err(SinkError::Reject {
            done: 1,
            count: 1,
            reason,
        }) => assert!(reason.contains("NOPERM"), "{reason}"),
        other => panic!("expected the bare pipeline to refuse record 1, got {other:?}"),
    }
    assert_eq!(records(&redis, "s:ok").await, ["o0", "o1"]);
    // o1 went in behind the refused record: remembered, not added again.
    sink.deliver(&batch[2..]).await.unwrap();
    assert_eq!(records(&redis, "s:ok").await, ["o0", "o1"]);
}

/// A user whose ACL refuses transactions still gets its entries, as bare pipelines.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_without_transactions_gets_its_entries_as_a_bare_pipeline() {
    let redis = Redis::start();
    acl_user(&redis, "notx", &["~*", "&*", "+@all", "-@transaction"]).await;
    let url = format!("redis://notx:secret@127.0.0.1:{}", redis.port());
    let mut sink = open_sink(&url, "").await;
    sink.deliver(&[raw_record("x"), raw_record("y")])
        .await
        .unwrap();
    sink.deliver(&[raw_record("z")]).await.unwrap();
    assert_eq!(records(&redis, "s").await, ["x", "y", "z"]);
    assert_eq!(calls(&redis, "exec").await, 0);
    assert_eq!(calls(&redis, "xadd").await, 3);
}

/// `EXEC` and `MULTI` as redis-rs writes them (a RESP array of one bulk string).
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";
const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";

/// A TCP proxy (127.0.0.1, port 0) in front of the Redis at `127.0.0.1:upstream` that cuts
/// its first connection inside a transaction: it forwards the client's bytes up to, not
/// including, the `skip + 1`-th `EXEC`, then closes both sides. Later connections pass
/// untouched.
struct ExecCutter {
    port: u16,
    cuts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ExecCutter {
    async fn start(upstream: u16, skip: usize) -> ExecCutter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cuts = Arc::new(AtomicUsize::new(0));
        let counted = cuts.clone();
        let task = tokio::spawn(async move {
            let mut first = true;
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                if std::mem::take(&mut first) {
                    tokio::spawn(cut_before_exec(client, server, skip, counted.clone()));
                } else {
                    tokio::spawn(async move {
                        let (mut client, mut server) = (client, server);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                }
            }
        });
        ExecCutter { port, cuts, task }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Connections cut with a transaction open (a `MULTI` forwarded since the last
    /// `EXEC`).
    fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for ExecCutter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards `client`'s bytes to `server` up to the `skip + 1`-th `EXEC` (found however
/// the reads split it), keeps that one back and closes both connections; `server`'s
/// answers flow back meanwhile.
async fn cut_before_exec(
    client: TcpStream,
    server: TcpStream,
    skip: usize,
    cuts: Arc<AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
    });
    // Read from the client, not yet forwarded; forwarded since the last EXEC.
    let (mut held, mut since_exec) = (Vec::new(), Vec::new());
    let mut execs = 0;
    let mut chunk = vec![0; 64 << 10];
    loop {
        let n = match from_client.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        held.extend_from_slice(&chunk[..n]);
        loop {
            let (upto, at_exec) = match find(&held, EXEC) {
                Some(i) if execs == skip => {
                    let out: Vec<u8> = held.drain(..i).collect();
                    let _ = to_server.write_all(&out).await;
                    since_exec.extend_from_slice(&out);
                    if find(&since_exec, MULTI).is_some() {
                        cuts.fetch_add(1, Ordering::SeqCst);
                    }
                    // Dropping the halves closes both connections.
                    back.abort();
                    return;
                }
                Some(i) => (i + EXEC.len(), true),
                // All but a tail that may be the start of an EXEC split across reads.
                None => (held.len() - partial_suffix(&held, EXEC), false),
            };
            let out: Vec<u8> = held.drain(..upto).collect();
            if to_server.write_all(&out).await.is_err() {
                back.abort();
                return;
            }
            since_exec.extend_from_slice(&out);
            if !at_exec {
                break;
            }
            execs += 1;
            since_exec.clear();
        }
    }
    back.abort();
}

/// Where `pat` first occurs in `buf`.
fn find(buf: &[u8], pat: &[u8]) -> Option<usize> {
    buf.windows(pat.len()).position(|w| w == pat)
}

/// The length of the longest end of `buf` that begins `pat` (shorter than `pat`).
fn partial_suffix(buf: &[u8], pat: &[u8]) -> usize {
    (1..pat.len())
        .rev()
        .find(|&k| buf.ends_with(&pat[..k]))
        .unwrap_or(0)
}

/// A pipelined attempt at each of `batches`, started in order and each polled once, as a
/// connector does (that puts its pipeline on the connection).
fn start_all(sink: &mut Sink, batches: &[Arc<[Record]>]) -> Vec<Attempt> {
    batches
        .iter()
        .map(|b| {
            let mut f = sink.start(b).expect("a connection to pipeline on");
            match (&mut f).now_or_never() {
                Some(r) => Box::pin(std::future::ready(r)) as Attempt,
                None => f,
            }
        })
        .collect()
}

type Attempt = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send>>;

/// The payloads of `batches`, in order.
fn payloads(batches: &[Arc<[Record]>]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| b.iter())
        .map(|r| String::from_utf8(r.source.to_vec()).unwrap())
        .collect()
}

/// Redis discards a transaction whose client goes before `EXEC`: a connection cut there
/// stored nothing, so the sink confirms none of the batch, and the retry (on a new
/// connection) stores each record once, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_cut_between_multi_and_exec_confirms_nothing_and_the_retry_stores_each_record_once()
 {
    let redis = Redis::start();
    let proxy = ExecCutter::start(redis.port(), 0).await;
    let mut sink = open_sink(&proxy.url(), "").await;
    let batch = [raw_record("a"), raw_record("b"), raw_record("c")];
    match sink.deliver(&batch).await {
        Err(SinkError::Retry { done: 0, .. }) => {}
        other => panic!("expected nothing confirmed, got {other:?}"),
    }
    assert_eq!(
        proxy.cuts(),
        1,
        "no connection was cut inside a transaction"
    );
    sink.deliver(&batch).await.unwrap();
    assert_eq!(records(&redis, "s").await, ["a", "b", "c"]);
    // Redis began both transactions and ran one: the cut one's XADDs were queued, never run.
    eventually_async("both MULTIs counted", || async {
        calls(&redis, "multi").await >= 2
    })
    .await;
    assert_eq!(calls(&redis, "multi").await, 2);
    assert_eq!(calls(&redis, "exec").await, 1);
    assert_eq!(calls(&redis, "xadd").await, 3);
}

/// The same cut with transactions pipelined behind the cut one: every attempt on that
/// connection fails with nothing confirmed (the first was discarded, the others never
/// reached Redis), and delivering each batch again, as the connector does, stores every
/// record once, in order.
///
/// A current-thread runtime: the connection's I/O and the proxy run only when this test
/// awaits, so all three attempts are on the connection before it is cut (on more threads
/// the cut could come first, and the sink then starts no attempt on the dead connection).
#[tokio::test]
async fn a_connection_cut_with_transactions_in_flight_confirms_none_of_them() {
    let redis = Redis::start();
    // The first EXEC, of the delivery that opens the connection, goes through.
    let proxy = ExecCutter::start(redis.port(), 1).await;
    let mut sink = open_sink_with(&proxy.url(), "stream: 's', timeout: 5s, in_flight: 4").await;
    sink.deliver(&[raw_record("w")]).await.unwrap();
    let batches: Vec<Arc<[Record]>> = (0..3)
        .map(|b| (0..3).map(|i| record("t/1", format!("b{b}.{i}"))).collect())
        .collect();
    let results = futures_util::future::join_all(start_all(&mut sink, &batches)).await;
    for (i, r) in results.iter().enumerate() {
        assert!(
            matches!(r, Err(SinkError::Retry { done: 0, .. })),
            "attempt {i}: {r:?}"
        );
    }
    assert_eq!(
        proxy.cuts(),
        1,
        "no connection was cut inside a transaction"
    );
    for b in &batches {
        sink.deliver(b).await.unwrap();
    }
    let mut want = vec!["w".to_string()];
    want.extend(payloads(&batches));
    assert_eq!(records(&redis, "s").await, want);
    // One MULTI of the cut connection reached Redis (the others were behind its EXEC).
    eventually_async("five MULTIs counted", || async {
        calls(&redis, "multi").await >= 5
    })
    .await;
    assert_eq!(calls(&redis, "multi").await, 5);
    assert_eq!(calls(&redis, "exec").await, 4);
    assert_eq!(calls(&redis, "xadd").await, 10);
}

/// A connector pipelining into a connection that is cut inside a transaction: every
/// message ends up in the stream once, in order, and the broker gets its acknowledgements
/// in arrival order, each after the sink confirmed the message.
#[tokio::test(flavor = "multi_thread")]
async fn a_connector_whose_redis_connection_is_cut_inside_a_transaction_loses_nothing() {
    let broker = Mosquitto::start(logging_broker());
    let redis = Redis::start();
    // The first batch goes alone (no connection to pipeline on yet) and its EXEC goes
    // through; the cut comes before the second batch's, pipelined with those behind it.
    let proxy = ExecCutter::start(redis.port(), 1).await;
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: cut, client_id: redis-cut, subscribe: [cut/#], format: raw, \
             session: persistent, sink: {{redis: {{url: '{}', stream: 'cut', batch_max: 10, \
             in_flight: 4, retry: {{min: 10ms, max: 100ms}}}}}}}}",
            proxy.url()
        ),
    );
    // A backlog, so that full batches are pipelined when the connector comes back.
    Running::start(&cfg).await.stop().await;
    let all = numbered("m", 0..200);
    publish_lines(&broker, "cut/1", all.clone()).await;
    let conn = Running::start(&cfg).await;
    let stats = conn.stats.clone();
    eventually("all acked", || ConnectorStats::get(&stats.acked) == 200).await;
    assert_eq!(
        proxy.cuts(),
        1,
        "no connection was cut inside a transaction"
    );
    assert!(ConnectorStats::get(&stats.sink_errors) >= 1);
    assert_eq!(records(&redis, "cut").await, all);
    assert_acks_in_arrival_order(&broker, "redis-cut", 200).await;
    conn.stop().await;
}

/// Two transactions refused as a whole (NOPERM while queuing) while pipelined with a good
/// one: each refused batch's next try is a bare pipeline, which finds the refused record,
/// and the batches after them are transactions again.
///
/// A current-thread runtime: all three attempts are on the connection before any answer
/// is read.
#[tokio::test]
async fn pipelined_transactions_refused_as_a_whole_each_get_one_bare_retry() {
    let redis = Redis::start();
    acl_user(&redis, "limited", &["~s:ok*", "&*", "+@all"]).await;
    let url = format!("redis://limited:secret@127.0.0.1:{}", redis.port());
    let mut sink = open_sink_with(&url, "stream: 's:{topic_level_1}', in_flight: 8").await;
    sink.deliver(&[record("ok/1", "o0")]).await.unwrap();
    let a: Arc<[Record]> = [
        record("ok/1", "o1"),
        record("no/1", "x1"),
        record("ok/1", "o2"),
    ]
    .into();
    let b: Arc<[Record]> = [
        record("ok/1", "o3"),
        record("no/1", "x2"),
        record("ok/1", "o4"),
    ]
    .into();
    let c: Arc<[Record]> = [record("ok/1", "o5"), record("ok/1", "o6")].into();
    let started = start_all(&mut sink, &[a.clone(), b.clone(), c.clone()]);
    let results = futures_util::future::join_all(started).await;
    for r in &results[..2] {
        assert!(
            matches!(r, Err(SinkError::Retry { done: 0, reason }) if reason.contains("transaction refused: NOPERM")),
            "{r:?}"
        );
    }
    assert_eq!(results[2], Ok(()));
    assert_eq!(records(&redis, "s:ok").await, ["o0", "o5", "o6"]);
    let multi = calls(&redis, "multi").await;

    // As the connector goes on: each refused batch alone, in order, and what is left of
    // it after the refused record.
    for (batch, refused) in [(&a, "x1"), (&b, "x2")] {
        match sink.deliver(batch).await {
            Err(SinkError::Reject {
                done: 1,
                count: 1,
                reason,
            }) => assert!(reason.contains("NOPERM"), "{reason}"),
            other => panic!("expected a bare pipeline to refuse {refused}, got {other:?}"),
        }
        sink.deliver(&batch[2..]).await.unwrap();
    }
    assert_eq!(
        calls(&redis, "multi").await,
        multi,
        "a retry went as a transaction"
    );
    assert_eq!(
        records(&redis, "s:ok").await,
        ["o0", "o5", "o6", "o1", "o2", "o3", "o4"]
    );

    // Then transactions again.
    let exec = calls(&redis, "exec").await;
    sink.deliver(&[record("ok/1", "o7"), record("ok/1", "o8")])
        .await
        .unwrap();
    sink.deliver(&[record("ok/1", "o9")]).await.unwrap();
    assert_eq!(calls(&redis, "exec").await, exec + 2);
    assert_eq!(calls(&redis, "multi").await, multi + 2);
    assert_eq!(
        records(&redis, "s:ok").await,
        ["o0", "o5", "o6", "o1", "o2", "o3", "o4", "o7", "o8", "o9"]
    );
}

/// `Deliver::start`'s promise: pipelines go out in the order their attempts were first
/// polled, however they are polled after, for as many as a connector may have in flight
/// (`in_flight` up to 64). That holds while redis-rs's request channel has room (50 by
/// default; the sink sizes it above 64): a first poll that finds it full only queues for
/// room, and the pipeline goes out at the attempt's next poll, in the order of those polls.
///
/// A current-thread runtime: the connection's I/O task runs only when this test awaits,
/// so the 64 first polls happen with nothing taken off the channel.
#[tokio::test]
async fn sixty_four_pipelined_attempts_go_out_in_the_order_they_were_first_polled() {
    let redis = Redis::start();
    let mut sink = open_sink_with(&redis.url(), "stream: 's', in_flight: 64").await;
    sink.deliver(&[raw_record("first")]).await.unwrap();
    let batches: Vec<Arc<[Record]>> = (0..64)
        .map(|i| [record("t/1", format!("p{i}"))].into())
        .collect();
    // A fresh cooperative budget: a first poll that exhausted it would send nothing.
    tokio::task::yield_now().await;
    let mut attempts: Vec<Option<Attempt>> = start_all(&mut sink, &batches)
        .into_iter()
        .map(Some)
        .collect();
    // Polled last to first from here on.
    let results = std::future::poll_fn(|cx| {
        for a in attempts.iter_mut().rev() {
            if let Some(f) = a
                && let Poll::Ready(r) = f.as_mut().poll(cx)
            {
                r.unwrap();
                *a = None;
            }
        }
        if attempts.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    tokio::time::timeout(Duration::from_secs(10), results)
        .await
        .expect("every attempt answered");
    let mut want = vec!["first".to_string()];
    want.extend(payloads(&batches));
    assert_eq!(records(&redis, "s").await, want);
}
