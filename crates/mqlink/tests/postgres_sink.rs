//! The `postgres` sink end to end: a private Mosquitto and a private PostgreSQL (`initdb`
//! into a temporary directory, a free port), read back with tokio-postgres.

mod support;

use std::time::{Duration, Instant};

use mqlink::internals::ConnectorStats;
use mqlink_testkit::{Mosquitto, MosquittoOptions, Postgres, TlsMaterial};
use support::*;

async fn client(pg: &Postgres) -> Option<tokio_postgres::Client> {
    let (c, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(c)
}

/// `sql` → its rows' first column as text (empty when PostgreSQL is away).
async fn texts(pg: &Postgres, sql: &str) -> Vec<String> {
    let Some(c) = client(pg).await else {
        return Vec::new();
    };
    match c.query(sql, &[]).await {
        Ok(rows) => rows.iter().map(|r| r.get::<_, String>(0)).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_sink_stores_records_exactly_as_formatted_in_order() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let pg = Postgres::start();
    let url = pg.url();
    let fluvio = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: fl, subscribe: ['/hfp/#'], format: fluvio, session: clean, \
             sink: {{postgres: {{url: '{url}', table: fluvio, \
             columns: {{topic: text, payload: jsonb, qos: smallint, retain: boolean, received_at: timestamptz}}}}}}}}"
        ),
    );
    let raw = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: rw, subscribe: ['raw/#'], format: raw, session: clean, \
             sink: {{postgres: {{url: '{url}', table: public.raw, batch_max: 100, linger: 5ms}}}}}}"
        ),
    );
    let json = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: js, subscribe: ['js/#'], session: clean, \
             sink: {{postgres: {{url: '{url}', table: js, columns: {{topic: text, payload: text}}}}}}}}"
        ),
    );
    let runs = [
        Running::start(&fluvio).await,
        Running::start(&raw).await,
        Running::start(&json).await,
    ];
    let (a, b) = publish_format_workload(&broker).await;
    let (seed_topic, _) = fluvio_seed();
    eventually_async("all rows", || async {
        texts(&pg, "SELECT count(*)::text FROM raw").await == ["1000"]
            && texts(&pg, "SELECT count(*)::text FROM fluvio").await == ["1"]
            && texts(&pg, "SELECT count(*)::text FROM js").await == ["1"]
    })
    .await;

    // fluvio into jsonb: the same JSON value (jsonb orders keys its own way).
    let fl = texts(&pg, "SELECT payload::text FROM fluvio").await;
    let got: serde_json::Value = serde_json::from_str(&fl[0]).unwrap();
    let want: serde_json::Value = serde_json::from_str(FLUVIO_SEED).unwrap();
    assert_eq!(got, want);
    assert_eq!(
        texts(
            &pg,
            "SELECT topic || ' ' || qos || ' ' || retain FROM fluvio"
        )
        .await,
        [format!("{seed_topic} 1 false")]
    );
    // raw into bytea: the payload bytes, per topic in publish order.
    let raw_of = |t: &str| {
        format!("SELECT convert_from(payload, 'UTF8') FROM raw WHERE topic = '{t}' ORDER BY id")
    };
    assert_eq!(texts(&pg, &raw_of("raw/a")).await, a);
    assert_eq!(texts(&pg, &raw_of("raw/b")).await, b);
    assert_eq!(
        texts(
            &pg,
            "SELECT count(*)::text FROM raw WHERE received_at <= now()"
        )
        .await,
        ["1000"]
    );
    // json into text: mqlink's JSON record, as sent.
    let js = texts(&pg, "SELECT payload FROM js").await;
    let v: serde_json::Value = serde_json::from_str(&js[0]).unwrap();
    assert_eq!(v["topic"], "js/x");
    assert_eq!(v["payload"], serde_json::json!({"t": 21.5}));
    for r in runs {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_outage_of_ten_seconds_holds_acks_and_a_killed_connector_loses_nothing() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let mut pg = Postgres::start();
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: outage, subscribe: [load/#], format: raw, session: persistent, \
             sink: {{postgres: {{url: '{}', batch_max: 100, timeout: 2s, \
             retry: {{min: 20ms, max: 250ms}}}}}}}}",
            pg.url()
        ),
    );
    let all = "SELECT convert_from(payload, 'UTF8') FROM mqtt_messages ORDER BY id";
    let first = Running::start(&cfg).await;
    publish_lines(&broker, "load/1", numbered("a", 0..1000)).await;
    let stats = first.stats.clone();
    eventually("first 1000 acked", || {
        ConnectorStats::get(&stats.acked) == 1000
    })
    .await;

    let outage_start = Instant::now();
    pg.stop();
    publish_lines(&broker, "load/1", numbered("b", 0..1000)).await;
    let errors = first.stats.clone();
    eventually("failed deliveries", || {
        ConnectorStats::get(&errors.sink_errors) >= 3
    })
    .await;
    assert_eq!(first.acked(), 1000, "acknowledged during the outage");
    first.stop().await;
    let second = Running::start(&cfg).await;
    publish_lines(&broker, "load/1", numbered("c", 0..1000)).await;
    let errors = second.stats.clone();
    eventually("failed deliveries after the restart", || {
        ConnectorStats::get(&errors.sink_errors) >= 3
    })
    .await;
    assert_eq!(second.acked(), 0, "acknowledged during the outage");
    tokio::time::sleep_until((outage_start + Duration::from_secs(10)).into()).await;
    pg.restart();

    let stats = second.stats.clone();
    eventually("all acked", || ConnectorStats::get(&stats.acked) == 2000).await;
    let mut want = numbered("a", 0..1000);
    want.extend(numbered("b", 0..1000));
    want.extend(numbered("c", 0..1000));
    // Exactly once: the de-dup id absorbs anything delivered twice.
    assert_eq!(texts(&pg, all).await, want);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_refused_rows_are_dead_lettered_with_the_servers_reason_and_the_rest_flow() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let dead_missing = dir.path().join("dead-missing.jsonl");
    // Raw payloads into a jsonb column: non-JSON is SQLSTATE 22P02, permanent.
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: bad, subscribe: ['j/#'], format: raw, session: clean, dead_letter: '{}', \
             sink: {{postgres: {{url: '{}', table: j, columns: {{payload: jsonb}}}}}}}}",
            dead.display(),
            pg.url()
        ),
    );
    // A table that does not exist and may not be created: SQLSTATE 42P01.
    let missing = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: missing, subscribe: ['m/#'], format: raw, session: clean, dead_letter: '{}', \
             sink: {{postgres: {{url: '{}', table: nowhere, create_table: false}}}}}}",
            dead_missing.display(),
            pg.url()
        ),
    );
    let conn = Running::start(&cfg).await;
    let conn_missing = Running::start(&missing).await;
    let input: Vec<String> = ["1", "{\"a\":2}", "not json", "[3]", "also { not", "4"]
        .map(String::from)
        .to_vec();
    publish_lines(&broker, "j/x", input).await;
    publish_lines(&broker, "m/x", vec!["x".into(), "y".into()]).await;
    let (s1, s2) = (conn.stats.clone(), conn_missing.stats.clone());
    eventually("all acked", || {
        ConnectorStats::get(&s1.acked) == 6 && ConnectorStats::get(&s2.acked) == 2
    })
    .await;
    assert_eq!(
        texts(&pg, "SELECT payload::text FROM j ORDER BY id").await,
        ["1", "{\"a\": 2}", "[3]", "4"]
    );
    let d = dead_letters(&dead);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d[0]["record"], "not json");
    assert_eq!(d[1]["record"], "also { not");
    for x in &d {
        let err = x["error"].as_str().unwrap();
        assert!(err.contains("invalid input syntax for type json"), "{err}");
        assert!(err.contains("22P02"), "{err}");
    }
    let d = dead_letters(&dead_missing);
    assert_eq!(d.len(), 2, "{d:?}");
    let err = d[0]["error"].as_str().unwrap();
    assert!(
        err.contains("\"nowhere\" does not exist") && err.contains("42P01"),
        "{err}"
    );
    conn.stop().await;
    conn_missing.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_dedup_id_stops_a_redelivered_record() {
    let pg = Postgres::start();
    let (cfg, _) = connector_cfg(
        "mqtt://127.0.0.1:1",
        &format!(
            "{{name: dd, subscribe: ['#'], format: raw, sink: {{postgres: {{url: '{}'}}}}}}",
            pg.url()
        ),
    );
    let (mut sink, driver) = mqlink::internals::open(
        &cfg.sink,
        "dd",
        "dd",
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    // The sink's connection I/O runs in its driver, which a connector would poll.
    tokio::spawn(driver.unwrap());
    let rec = mqlink::internals::Record {
        topic: "dup/topic".into(),
        source: bytes::Bytes::from_static(b"same"),
        part: 0,
        body: mqlink::internals::Body::Raw(bytes::Bytes::from_static(b"same")),
        meta: Default::default(),
    };
    // A redelivery after a lost acknowledgement: same topic, payload and position.
    sink.deliver(std::slice::from_ref(&rec)).await.unwrap();
    sink.deliver(std::slice::from_ref(&rec)).await.unwrap();
    assert_eq!(
        texts(&pg, "SELECT count(*)::text FROM mqtt_messages").await,
        ["1"]
    );
    // Another record of the same message (an arraymap's second element) is new.
    let other = mqlink::internals::Record { part: 1, ..rec };
    sink.deliver(&[other]).await.unwrap();
    assert_eq!(
        texts(&pg, "SELECT count(*)::text FROM mqtt_messages").await,
        ["2"]
    );
}

/// `sql` → its rows' first column as text, run on a runtime of the test's own (for tests
/// that keep the connector's runtime free of anything else).
fn texts_on(aux: &tokio::runtime::Runtime, pg: &Postgres, sql: &str) -> Vec<String> {
    let (url, sql) = (pg.url(), sql.to_string());
    aux.block_on(async move {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.query(&sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    })
}

#[test]
fn a_stopped_connector_leaves_no_task_and_closes_its_postgres_connection_even_when_it_hangs() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let pg = Postgres::start();
    let aux = tokio::runtime::Runtime::new().unwrap();
    let backends = "SELECT pid::text FROM pg_stat_activity WHERE application_name = 'mqlink-hang'";
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: hang, subscribe: [hang/#], format: raw, session: clean, \
             sink: {{postgres: {{url: '{}', timeout: 300ms, \
             retry: {{min: 20ms, max: 100ms}}}}}}}}",
            pg.url()
        ),
    );
    let mut frozen = None;
    let rt = run_alone(&cfg, async |stats| {
        publish_lines(&broker, "hang/1", vec!["one".into()]).await;
        eventually("one acked", || ConnectorStats::get(&stats.acked) == 1).await;
        let pids =
            std::thread::scope(|s| s.spawn(|| texts_on(&aux, &pg, backends)).join()).unwrap();
        assert_eq!(pids.len(), 1, "{pids:?}");
        // The backend serving the sink hangs: the next insert is never answered. The sink
        // gives up on that connection (its timeout) and goes on with a new one.
        let pid: i32 = pids[0].parse().unwrap();
        pg.signal_backend(pid, true);
        frozen = Some(pid);
        publish_lines(&broker, "hang/1", vec!["two".into()]).await;
        eventually("two acked", || ConnectorStats::get(&stats.acked) == 2).await;
        assert!(ConnectorStats::get(&stats.sink_errors) >= 1);
    });
    // The connector has returned: nothing of it may still be on its runtime (the
    // connection I/O was polled by the connector, not spawned).
    let left = rt.metrics().num_alive_tasks();
    if let Some(pid) = frozen {
        pg.signal_backend(pid, false);
    }
    assert_eq!(left, 0, "tasks left behind");
    aux.block_on(eventually_async(
        "the connections closed at PostgreSQL",
        || async {
            let (url, sql) = (pg.url(), backends);
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c.query(sql, &[]).await.unwrap().is_empty()
        },
    ));
    drop(rt);
}

/// A `postgres` sink for `url` with `tls` (YAML flow mapping body), opened and its driver
/// spawned.
async fn open_tls_sink(url: &str, tls: &str) -> mqlink::internals::Sink {
    open_sink_with(url, &format!("timeout: 5s, tls: {{{tls}}}")).await
}

fn raw_record(payload: &'static str) -> mqlink::internals::Record {
    mqlink::internals::Record {
        topic: "t/1".into(),
        source: bytes::Bytes::from_static(payload.as_bytes()),
        part: 0,
        body: mqlink::internals::Body::Raw(bytes::Bytes::from_static(payload.as_bytes())),
        meta: Default::default(),
    }
}

const STORED: &str = "SELECT convert_from(payload, 'UTF8') FROM mqtt_messages ORDER BY id";

#[tokio::test(flavor = "multi_thread")]
async fn postgres_over_tls_verifies_the_server_against_the_configured_ca() {
    let tls = TlsMaterial::generate();
    let pg = Postgres::start_tls(&tls, false);
    let url = pg.url();
    let ca = |f: &std::path::Path| format!("ca_file: '{}'", f.display());

    let mut sink = open_tls_sink(&url, &ca(tls.ca_file())).await;
    sink.deliver(&[raw_record("over tls")]).await.unwrap();
    assert_eq!(texts(&pg, STORED).await, ["over tls"]);
    // The server saw it as a TLS connection.
    assert_eq!(
        texts(
            &pg,
            "SELECT ssl::text FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name = 'mqlink-pg'"
        )
        .await,
        ["true"]
    );

    // A CA that did not sign the server's certificate: refused, nothing stored.
    let mut wrong = open_tls_sink(&url, &ca(tls.other_ca_file())).await;
    let err = wrong
        .deliver(&[raw_record("must not land")])
        .await
        .unwrap_err();
    let mqlink::internals::SinkError::Retry { done: 0, reason } = &err else {
        panic!("{err:?}");
    };
    assert!(
        reason.starts_with(&format!("postgres {url}")) && reason.contains("UnknownIssuer"),
        "{reason}"
    );
    assert!(reason.contains("check tls.ca_file"), "{reason}");
    assert_eq!(texts(&pg, STORED).await, ["over tls"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_over_mutual_tls_presents_the_client_certificate() {
    let tls = TlsMaterial::generate();
    let pg = Postgres::start_tls(&tls, true);
    let url = pg.url();
    let ca = format!("ca_file: '{}'", tls.ca_file().display());

    // Without a client certificate the server refuses the connection.
    let mut anonymous = open_tls_sink(&url, &ca).await;
    let err = anonymous
        .deliver(&[raw_record("anonymous")])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, mqlink::internals::SinkError::Retry { done: 0, reason } if reason.contains("certificate")),
        "{err:?}"
    );

    let mut sink = open_tls_sink(
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
    assert_eq!(texts(&pg, STORED).await, ["with a client certificate"]);
}

/// `SELECT count(*)` of `table` (0 while PostgreSQL is away).
async fn count(pg: &Postgres, table: &str) -> usize {
    texts(pg, &format!("SELECT count(*)::text FROM {table}"))
        .await
        .first()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_with_statements_in_flight_acked_only_what_was_committed() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let mut pg = Postgres::start();
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: crash, client_id: pipe-pg-crash, subscribe: [load/#], format: raw, \
             session: persistent, sink: {{postgres: {{url: '{}', batch_max: 20, in_flight: 8, \
             timeout: 2s, retry: {{min: 20ms, max: 250ms}}}}}}}}",
            pg.url()
        ),
    );
    let in_order = "SELECT convert_from(payload, 'UTF8') FROM mqtt_messages ORDER BY id";
    let all = numbered("m", 0..20_000);
    let first = Running::start(&cfg).await;
    let stats = first.stats.clone();
    let crash = async {
        eventually_async("mid-stream", || async {
            count(&pg, "mqtt_messages").await >= 2_000
        })
        .await;
        // Fast shutdown: the statements on the wire are rolled back or never run.
        pg.stop();
        eventually("a delivery failed", || {
            ConnectorStats::get(&stats.sink_errors) >= 1
        })
        .await;
        ConnectorStats::get(&stats.acked) as usize
    };
    let ((), acked) = tokio::join!(publish_lines(&broker, "load/1", all.clone()), crash);
    first.stop().await;
    assert!(acked < all.len(), "the stream was over before the stop");
    pg.restart();
    let stored = texts(&pg, in_order).await;
    assert!(
        stored.len() >= acked && stored[..acked] == all[..acked],
        "acknowledged {acked} messages but the table has {} rows (first missing: {:?})",
        stored.len(),
        all[..acked].iter().find(|m| !stored.contains(m))
    );

    let second = Running::start(&cfg).await;
    eventually_async("every row", || async {
        count(&pg, "mqtt_messages").await >= all.len()
    })
    .await;
    // Exactly once, and in order: nothing after the stop committed ahead of a failure.
    assert_eq!(texts(&pg, in_order).await, all);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_refusals_in_pipelined_batches_dead_letter_exactly_them_and_acks_stay_in_order() {
    let broker = Mosquitto::start(logging_broker());
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: pipe, client_id: pipe-pg-refusals, subscribe: ['j/#'], format: raw, \
             session: persistent, dead_letter: '{}', \
             sink: {{postgres: {{url: '{}', table: j, columns: {{payload: jsonb}}, \
             batch_max: 10, in_flight: 8}}}}}}",
            dead.display(),
            pg.url()
        ),
    );
    // A backlog, so that several full batches are on the wire at once; a record that is
    // not JSON (SQLSTATE 22P02) every 14, so that many of them have one.
    Running::start(&cfg).await.stop().await;
    let good: Vec<String> = (0..390).map(|i| format!("[{i}]")).collect();
    let bad = numbered("not json ", 0..30);
    for (g, x) in good.chunks(13).zip(&bad) {
        publish_lines(&broker, "j/good", g.to_vec()).await;
        publish_lines(&broker, "j/bad", vec![x.clone()]).await;
    }
    let conn = Running::start(&cfg).await;
    let stats = conn.stats.clone();
    eventually("all acked", || ConnectorStats::get(&stats.acked) == 420).await;
    // Every good row once. A batch with a refused row went in again row by row after the
    // later batches had committed, so `id` order is not arrival order across it.
    let mut rows = texts(&pg, "SELECT payload::text FROM j").await;
    rows.sort();
    let mut want = good.clone();
    want.sort();
    assert_eq!(rows, want);
    let d = dead_letters(&dead);
    let refused: Vec<&str> = d.iter().map(|x| x["record"].as_str().unwrap()).collect();
    assert_eq!(refused, bad);
    assert!(
        d.iter()
            .all(|x| x["error"].as_str().unwrap().contains("22P02"))
    );
    assert_acks_in_arrival_order(&broker, "pipe-pg-refusals", 420).await;
    conn.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_batch_that_fails_while_the_next_commits_holds_every_ack_behind_it() {
    let broker = Mosquitto::start(logging_broker());
    let pg = Postgres::start();
    let admin = client(&pg).await.unwrap();
    // The row 'slow' makes its statement outlive `statement_timeout` (SQLSTATE 57014, a
    // transient error) on its first two tries only: the sequence counts across
    // rollbacks. The statements behind it on the connection then run and commit.
    admin
        .batch_execute(
            "CREATE TABLE mqtt_messages (id bigserial PRIMARY KEY, dedup_id text NOT NULL UNIQUE, \
               topic text NOT NULL, payload bytea NOT NULL, received_at timestamptz NOT NULL DEFAULT now());
             CREATE SEQUENCE slow_tries;
             CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.payload = 'slow'::bytea AND nextval('slow_tries') <= 2 THEN
                 PERFORM pg_sleep(5);
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER slow BEFORE INSERT ON mqtt_messages FOR EACH ROW EXECUTE FUNCTION slow();
             ALTER ROLE postgres SET statement_timeout = '500ms';",
        )
        .await
        .unwrap();
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: pipe, client_id: pipe-pg-order, subscribe: ['o/#'], format: raw, \
             session: persistent, sink: {{postgres: {{url: '{}', batch_max: 10, in_flight: 8, \
             retry: {{min: 2s, max: 2s}}}}}}}}",
            pg.url()
        ),
    );
    Running::start(&cfg).await.stop().await;
    let mut lines = numbered("m", 0..200);
    lines[45] = "slow".into();
    publish_lines(&broker, "o/1", lines.clone()).await;
    let conn = Running::start(&cfg).await;
    let stats = conn.stats.clone();
    // While the batch with 'slow' waits for its retry, batches behind it have committed,
    // and none of their messages may be acknowledged before it.
    eventually_async("a later batch committed", || async {
        texts(
            &pg,
            "SELECT convert_from(payload, 'UTF8') FROM mqtt_messages WHERE payload = 'm60'",
        )
        .await
            == ["m60"]
    })
    .await;
    assert!(
        ConnectorStats::get(&stats.acked) <= 45,
        "acknowledged {} messages while the batch of message 45 was not committed",
        ConnectorStats::get(&stats.acked)
    );
    eventually("all acked", || ConnectorStats::get(&stats.acked) == 200).await;
    assert_acks_in_arrival_order(&broker, "pipe-pg-order", 200).await;
    // Every row once; the failed batch's rows came after rows of later batches.
    let by_id = texts(
        &pg,
        "SELECT convert_from(payload, 'UTF8') FROM mqtt_messages ORDER BY id",
    )
    .await;
    let mut sorted = by_id.clone();
    sorted.sort();
    let mut want = lines.clone();
    want.sort();
    assert_eq!(sorted, want);
    let pos = |m: &str| by_id.iter().position(|x| x == m).unwrap();
    assert!(pos("slow") > pos("m60"), "no inversion: {by_id:?}");
    conn.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_batches_are_stored_and_committed_in_arrival_order() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let pg = Postgres::start();
    let admin = client(&pg).await.unwrap();
    // The row 'slow-commit' makes its transaction's COMMIT take a second (a deferred
    // constraint trigger runs at commit). No batch behind it may commit before it (a
    // second connection that ran the next batch meanwhile did it only by waiting).
    admin
        .batch_execute(
            "CREATE TABLE mqtt_messages (id bigserial PRIMARY KEY, dedup_id text NOT NULL UNIQUE, \
               topic text NOT NULL, payload bytea NOT NULL, received_at timestamptz NOT NULL DEFAULT now());
             CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.payload = 'slow-commit'::bytea THEN
                 PERFORM pg_sleep(1);
               END IF;
               RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON mqtt_messages
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
        )
        .await
        .unwrap();
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: turns, client_id: pipe-pg-turns, subscribe: ['t/#'], format: raw, \
             session: persistent, sink: {{postgres: {{url: '{}', batch_max: 200, in_flight: 8}}}}}}",
            pg.url()
        ),
    );
    Running::start(&cfg).await.stop().await;
    let mut lines = numbered("m", 0..4_000);
    lines[1_010] = "slow-commit".into();
    publish_lines(&broker, "t/1", lines.clone()).await;
    let conn = Running::start(&cfg).await;
    let stats = conn.stats.clone();
    let in_order = "SELECT convert_from(payload, 'UTF8') FROM mqtt_messages ORDER BY id";
    let prefix = |rows: &[String]| rows.len() <= lines.len() && rows == &lines[..rows.len()];
    eventually_async("the slow commit is running", || async {
        texts(
            &pg,
            "SELECT count(*)::text FROM pg_stat_activity WHERE wait_event = 'PgSleep'",
        )
        .await
            == ["1"]
    })
    .await;
    // What another session sees while the slow commit runs: rows in arrival order with
    // no gap, so nothing of a batch behind the slow one before it.
    let mut seen = 0;
    while texts(
        &pg,
        "SELECT count(*)::text FROM pg_stat_activity WHERE wait_event = 'PgSleep'",
    )
    .await
        == ["1"]
    {
        let rows = texts(&pg, in_order).await;
        assert!(
            prefix(&rows),
            "while the batch of message 1010 commits, the table has {} rows, the first out \
             of order at {:?}",
            rows.len(),
            rows.iter().zip(&lines).position(|(a, b)| a != b)
        );
        seen += 1;
    }
    assert!(seen > 0, "no look at the table during the slow commit");
    eventually("all acked", || ConnectorStats::get(&stats.acked) == 4_000).await;
    // Every row once, with ids in arrival order.
    let rows = texts(&pg, in_order).await;
    assert!(
        rows == lines,
        "{} rows, first out of order: {:?}",
        rows.len(),
        rows.iter().zip(&lines).position(|(a, b)| a != b)
    );
    conn.stop().await;
}

/// A plain `postgres` sink for `url` (default table), opened and its driver spawned.
async fn open_sink(url: &str) -> mqlink::internals::Sink {
    open_sink_with(url, "timeout: 5s").await
}

/// [`open_sink`] with `keys` (YAML flow mapping entries) for the sink.
async fn open_sink_with(url: &str, keys: &str) -> mqlink::internals::Sink {
    let (cfg, _) = connector_cfg(
        "mqtt://127.0.0.1:1",
        &format!(
            "{{name: pg, subscribe: ['#'], format: raw, \
             sink: {{postgres: {{url: '{url}', {keys}}}}}}}"
        ),
    );
    if keys.contains("tls:") {
        let plan = cfg.sink.describe();
        assert!(plan.contains(", TLS"), "{plan}");
    }
    let (sink, driver) = mqlink::internals::open(
        &cfg.sink,
        "pg",
        "pg",
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    tokio::spawn(driver.unwrap());
    sink
}

/// A trigger that raises (SQLSTATE P0001) for a record whose payload is `bad`.
const REFUSE_BAD: &str = "CREATE FUNCTION no_bad() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
       IF convert_from(NEW.payload, 'UTF8') = 'bad' THEN RAISE EXCEPTION 'bad payload'; END IF; \
       RETURN NEW; END $$; \
     CREATE TRIGGER no_bad BEFORE INSERT ON mqtt_messages FOR EACH ROW EXECUTE FUNCTION no_bad();";

/// A trigger that raises for one record (SQLSTATE P0001) refuses that record for good:
/// it is refused alone and the rows before it are committed. It was classed as
/// transient, so the batch was retried forever and every ack behind it held.
#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_raising_for_one_record_refuses_only_that_record() {
    use mqlink::internals::SinkError;
    let pg = Postgres::start();
    let mut sink = open_sink(&pg.url()).await;
    sink.deliver(&[raw_record("first")]).await.unwrap();
    let c = client(&pg).await.unwrap();
    c.batch_execute(REFUSE_BAD).await.unwrap();
    let batch = [raw_record("ok-1"), raw_record("bad"), raw_record("ok-2")];
    match sink.deliver(&batch).await {
        Err(SinkError::Reject {
            done,
            count,
            reason,
        }) => {
            assert_eq!((done, count), (1, 1), "{reason}");
            assert!(reason.contains("bad payload"), "{reason}");
        }
        other => panic!("expected the bad record refused alone, got {other:?}"),
    }
    sink.deliver(&batch[2..]).await.unwrap();
    assert_eq!(texts(&pg, STORED).await, ["first", "ok-1", "ok-2"]);
}

/// The table dropped under a live connection (a retention job, a migration) is created
/// again, with `create_table` (the default), and the record goes in; it was dead-lettered
/// with "relation does not exist", as was every record after it while the connection
/// lived.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_dropped_under_the_sink_is_created_again() {
    use mqlink::internals::SinkError;
    let pg = Postgres::start();
    let mut sink = open_sink(&pg.url()).await;
    sink.deliver(&[raw_record("before")]).await.unwrap();
    let c = client(&pg).await.unwrap();
    c.batch_execute("DROP TABLE mqtt_messages").await.unwrap();
    let batch = [raw_record("after")];
    let mut tries = 0;
    loop {
        tries += 1;
        match sink.deliver(&batch).await {
            Ok(()) => break,
            Err(SinkError::Retry { reason, .. }) if tries < 3 => {
                assert!(reason.contains("42P01"), "{reason}");
            }
            other => panic!("try {tries}: expected the table back, got {other:?}"),
        }
    }
    assert_eq!(texts(&pg, STORED).await, ["after"]);
}

/// One refused record at the end of a large batch: the walk row by row (three round trips
/// a row) takes longer than the sink's `timeout`, but each statement is far inside it.
/// The deadline covered the whole walk, so it rolled back and started again forever.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_by_row_walk_longer_than_the_timeout_still_ends() {
    use mqlink::internals::SinkError;
    const ROWS: usize = 8000;
    let pg = Postgres::start();
    let mut sink = open_sink_with(&pg.url(), "timeout: 2s, batch_max: 10000").await;
    sink.deliver(&[raw_record("first")]).await.unwrap();
    let c = client(&pg).await.unwrap();
    c.batch_execute(REFUSE_BAD).await.unwrap();
    let mut batch: Vec<_> = (0..ROWS)
        .map(|i| {
            let mut r = raw_record("ok");
            r.part = i as u32;
            r
        })
        .collect();
    batch.push(raw_record("bad"));
    let started = Instant::now();
    match sink.deliver(&batch).await {
        Err(SinkError::Reject {
            done,
            count,
            reason,
        }) => {
            assert_eq!((done, count), (ROWS, 1), "{reason}");
        }
        other => panic!("expected the last record refused, got {other:?}"),
    }
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the walk took {:?}: not longer than the timeout, so this proves nothing",
        started.elapsed()
    );
    assert_eq!(count(&pg, "mqtt_messages").await, ROWS + 1);
}

/// The sink's default table, created by the test with `dedup` as the constraint on
/// `dedup_id` (`""` for none).
async fn create_table(pg: &Postgres, dedup: &str) {
    client(pg)
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE TABLE mqtt_messages (id bigserial PRIMARY KEY, \
               dedup_id text NOT NULL {dedup}, topic text NOT NULL, payload bytea NOT NULL, \
               received_at timestamptz NOT NULL DEFAULT now())"
        ))
        .await
        .unwrap();
}

/// `payloads` as records of topic `t/1`, shared for a pipelined attempt; those named in
/// `redelivered` carry the broker's DUP flag.
fn batch_of(
    payloads: &[&'static str],
    redelivered: &[&str],
) -> std::sync::Arc<[mqlink::internals::Record]> {
    payloads
        .iter()
        .map(|p| {
            let mut r = raw_record(p);
            if redelivered.contains(p) {
                r.meta = std::sync::Arc::new(mqlink::internals::Meta {
                    redelivered: true,
                    ..Default::default()
                });
            }
            r
        })
        .collect()
}

/// A pipelined attempt at `batch` (the sink must be connected), to its end.
async fn pipelined(
    sink: &mut mqlink::internals::Sink,
    batch: &std::sync::Arc<[mqlink::internals::Record]>,
) -> Result<(), mqlink::internals::SinkError> {
    sink.start(batch)
        .expect("a connected sink pipelines the batch")
        .await
}

/// The pipelined path inserts without `ON CONFLICT` (cheaper for the server). A row
/// stored before (an identical earlier message) fails that batch as a whole; the
/// one-at-a-time retry stores the rest once, and from then on every batch takes the
/// `ON CONFLICT` statement: the same conflict does not fail a batch again.
#[tokio::test(flavor = "multi_thread")]
async fn a_pipelined_batch_meeting_a_stored_row_goes_again_with_on_conflict_for_good() {
    let pg = Postgres::start();
    let mut sink = open_sink(&pg.url()).await;
    sink.deliver(&batch_of(&["a"], &[])).await.unwrap();
    let met = batch_of(&["b", "a", "c"], &[]);
    let first = pipelined(&mut sink, &met).await;
    assert!(
        matches!(&first, Err(mqlink::internals::SinkError::Retry { done: 0, reason })
            if reason.contains("stored before")),
        "the fast path skipped the stored row: {first:?}"
    );
    assert_eq!(
        texts(&pg, STORED).await,
        ["a"],
        "a failed statement stored rows"
    );
    sink.deliver(&met).await.unwrap();
    assert_eq!(texts(&pg, STORED).await, ["a", "b", "c"]);
    // The next identical message finds the ON CONFLICT statement.
    pipelined(&mut sink, &batch_of(&["d", "b"], &[]))
        .await
        .expect("a conflict after the first goes with ON CONFLICT");
    assert_eq!(texts(&pg, STORED).await, ["a", "b", "c", "d"]);
}

/// A batch holding a record the broker redelivered (DUP), a retained message (sent again
/// on every subscribe), or the same message twice, goes with `ON CONFLICT` at once:
/// after a restart the stored part of a resumed session's backlog does not fail
/// batches, nor switch the fast path off.
#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_or_repeated_record_takes_the_on_conflict_statement_at_once() {
    let pg = Postgres::start();
    let mut sink = open_sink(&pg.url()).await;
    sink.deliver(&batch_of(&["a"], &[])).await.unwrap();
    pipelined(&mut sink, &batch_of(&["a", "b"], &["a"]))
        .await
        .expect("a redelivered stored record is skipped");
    pipelined(&mut sink, &batch_of(&["c", "c", "d"], &[]))
        .await
        .expect("a message twice in one batch is stored once");
    let mut retained = batch_of(&["b"], &[]).to_vec();
    retained[0].meta = std::sync::Arc::new(mqlink::internals::Meta {
        retain: true,
        ..Default::default()
    });
    pipelined(&mut sink, &retained.into())
        .await
        .expect("a retained message sent again is skipped");
    assert_eq!(texts(&pg, STORED).await, ["a", "b", "c", "d"]);
    // None switched the fast path off: a stored row that nothing announced still fails
    // the plain statement.
    let unannounced = pipelined(&mut sink, &batch_of(&["e", "a"], &[])).await;
    assert!(
        matches!(&unannounced, Err(mqlink::internals::SinkError::Retry { reason, .. })
            if reason.contains("stored before")),
        "the fast path is off: {unannounced:?}"
    );
    assert_eq!(texts(&pg, STORED).await, ["a", "b", "c", "d"]);
}

/// End to end: two messages identical to earlier ones (same topic and payload) in a
/// backlog drained by pipelined batches. The first fails its batch's fast-path INSERT
/// once; that batch is stored again without it, the connector acknowledges everything,
/// and the second finds the `ON CONFLICT` statement (no second failed delivery).
#[tokio::test(flavor = "multi_thread")]
async fn identical_messages_in_a_pipelined_backlog_are_stored_once_and_fail_one_attempt() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let pg = Postgres::start();
    let cfg = connector_cfg(
        &broker.url(),
        &format!(
            "{{name: same, client_id: pipe-pg-same, subscribe: ['t/#'], format: raw, \
             session: persistent, sink: {{postgres: {{url: '{}', batch_max: 100, in_flight: 4, \
             retry: {{min: 10ms, max: 100ms}}}}}}}}",
            pg.url()
        ),
    );
    Running::start(&cfg).await.stop().await;
    let mut lines = numbered("m", 0..3_000);
    lines[1_500] = "m100".into();
    lines[2_500] = "m200".into();
    publish_lines(&broker, "t/1", lines.clone()).await;
    let conn = Running::start(&cfg).await;
    let stats = conn.stats.clone();
    eventually("all acked", || ConnectorStats::get(&stats.acked) == 3_000).await;
    let mut stored = texts(&pg, STORED).await;
    stored.sort();
    let mut want: Vec<String> = numbered("m", 0..3_000);
    want.retain(|m| m != "m1500" && m != "m2500");
    want.sort();
    assert_eq!(stored, want, "every distinct message once");
    assert_eq!(ConnectorStats::get(&stats.dead_lettered), 0);
    assert_eq!(
        ConnectorStats::get(&stats.sink_errors),
        1,
        "only the first identical message fails a fast-path batch"
    );
    conn.stop().await;
}

/// A table of the user's without a unique index on `dedup_id` alone: no fast path, so a
/// stored row is never stored twice; every batch is refused (SQLSTATE 42P10: `ON
/// CONFLICT` has no arbiter) as before the fast path. The fast form took such a table's
/// rows, duplicates included.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_without_a_dedup_index_gets_no_duplicates_from_the_fast_path() {
    let pg = Postgres::start();
    create_table(&pg, "").await;
    let mut sink = open_sink(&pg.url()).await;
    let refused = sink.deliver(&batch_of(&["a"], &[])).await;
    assert!(
        matches!(&refused, Err(mqlink::internals::SinkError::Reject { reason, .. })
            if reason.contains("42P10")),
        "{refused:?}"
    );
    for _ in 0..2 {
        // The sink is connected (the refusal came from the statement), so it pipelines.
        let r = pipelined(&mut sink, &batch_of(&["a", "b"], &[])).await;
        assert!(r.is_err(), "stored without a de-dup index: {r:?}");
    }
    assert_eq!(texts(&pg, STORED).await, Vec::<String>::new());
}

/// A unique violation on another index of the user's is the row's own fault: it is not
/// taken for a de-dup hit (the fast path stays on) and the row is refused with the
/// server's reason.
#[tokio::test(flavor = "multi_thread")]
async fn a_unique_violation_on_another_index_is_the_rows_own_fault() {
    let pg = Postgres::start();
    let mut sink = open_sink(&pg.url()).await;
    sink.deliver(&batch_of(&["a"], &[])).await.unwrap();
    client(&pg)
        .await
        .unwrap()
        .batch_execute("CREATE UNIQUE INDEX own_payload ON mqtt_messages (payload)")
        .await
        .unwrap();
    // A new message (other topic) with a stored payload.
    let mut same_payload = batch_of(&["a"], &[]).to_vec();
    same_payload[0].topic = "t/2".into();
    let batch: std::sync::Arc<[_]> = same_payload.into();
    let r = pipelined(&mut sink, &batch).await;
    assert!(
        matches!(&r, Err(mqlink::internals::SinkError::Retry { reason, .. })
            if reason.contains("own_payload") && !reason.contains("stored before")),
        "{r:?}"
    );
    let refused = sink.deliver(&batch).await;
    assert!(
        matches!(&refused, Err(mqlink::internals::SinkError::Reject { done: 0, reason, .. })
            if reason.contains("own_payload")),
        "{refused:?}"
    );
    // Still on: a stored row nothing announced fails the plain statement.
    let r = pipelined(&mut sink, &batch_of(&["c", "a"], &[])).await;
    assert!(
        matches!(&r, Err(mqlink::internals::SinkError::Retry { reason, .. })
            if reason.contains("stored before")),
        "the fast path went off: {r:?}"
    );
}

/// The sink's `dedup_id` for a raw message on `topic` (SHA-256 of topic, payload and
/// position, the first 128 bits in hex, after the connector's name).
fn dedup_id(connector: &str, topic: &str, payload: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [topic.as_bytes(), b"\0", payload.as_bytes(), b"\0"] {
        ctx.update(part);
    }
    ctx.update(&0u32.to_be_bytes());
    let hex: String = ctx.finish().as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{connector}-{hex}")
}

/// End to end with Mosquitto's DUP flag: messages a first run received but could not
/// store (its sink pointed nowhere) come again marked DUP in the resumed session; their
/// rows are in the table already (as after a commit whose acknowledgement was lost).
/// The batch holding them takes `ON CONFLICT`: no failed delivery, every row once and in
/// order. Without the flag reaching the sink, that batch failed on the fast path.
#[tokio::test(flavor = "multi_thread")]
async fn messages_the_broker_redelivers_as_dup_take_the_on_conflict_statement() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let pg = Postgres::start();
    // The second run's first batch goes one at a time (the sink connects on it), always
    // with ON CONFLICT; small batches put the other stored rows in pipelined ones.
    let cfg_for = |url: &str, batch_max: u32| {
        connector_cfg(
            &broker.url(),
            &format!(
                "{{name: dupc, client_id: pipe-pg-dup, subscribe: ['t/#'], format: raw, \
                 session: persistent, sink: {{postgres: {{url: '{url}', \
                 batch_max: {batch_max}, timeout: 1s, retry: {{min: 10ms, max: 100ms}}}}}}}}"
            ),
        )
    };
    let all = numbered("m", 0..500);
    let nowhere = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        mqlink_testkit::free_port()
    );
    // The session and its subscription first, then the backlog, so the first run's first
    // batch is a full one.
    Running::start(&cfg_for(&nowhere, 50)).await.stop().await;
    publish_lines(&broker, "t/1", all.clone()).await;
    let first = Running::start(&cfg_for(&nowhere, 50)).await;
    let stats = first.stats.clone();
    eventually("the first run takes a batch", || {
        ConnectorStats::get(&stats.records_in) >= 10
    })
    .await;
    first.stop().await;
    assert_eq!(ConnectorStats::get(&stats.acked), 0, "acked without a sink");
    // Taken, so received and unacknowledged: the broker sends them again marked DUP.
    let taken = ConnectorStats::get(&stats.records_in) as usize;
    // Their rows, as a commit whose acknowledgement was lost would have left them.
    create_table(&pg, "UNIQUE").await;
    let admin = client(&pg).await.unwrap();
    for m in &all[..taken] {
        admin
            .execute(
                "INSERT INTO mqtt_messages (dedup_id, topic, payload) VALUES ($1, 't/1', $2)",
                &[&dedup_id("dupc", "t/1", m), &m.as_bytes()],
            )
            .await
            .unwrap();
    }
    let second = Running::start(&cfg_for(&pg.url(), 5)).await;
    let stats = second.stats.clone();
    eventually("all acked", || ConnectorStats::get(&stats.acked) == 500).await;
    assert_eq!(texts(&pg, STORED).await, all, "every row once, in order");
    assert_eq!(
        ConnectorStats::get(&stats.sink_errors),
        0,
        "a batch of redelivered messages failed on the fast path"
    );
    second.stop().await;
}

/// A deferrable unique constraint on `dedup_id`: `ON CONFLICT` cannot take it as arbiter
/// (SQLSTATE 55000), for every batch. The record is refused with the server's reason, not
/// retried forever with every acknowledgement behind it held.
#[tokio::test(flavor = "multi_thread")]
async fn a_deferrable_dedup_constraint_is_refused_not_retried_forever() {
    let pg = Postgres::start();
    create_table(&pg, "UNIQUE DEFERRABLE INITIALLY IMMEDIATE").await;
    let mut sink = open_sink(&pg.url()).await;
    let refused = sink.deliver(&batch_of(&["a"], &[])).await;
    assert!(
        matches!(&refused, Err(mqlink::internals::SinkError::Reject { reason, .. })
            if reason.contains("55000")),
        "{refused:?}"
    );
    // Connected now: a pipelined batch does not take the fast path either.
    let r = pipelined(&mut sink, &batch_of(&["a", "b"], &[])).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(texts(&pg, STORED).await, Vec::<String>::new());
}
