//! The daemon's topology as a library value, against a real Mosquitto and a real HTTP
//! peer: an embedder starts everything from a config, events flow through the HTTP API to
//! the broker and back through a connector, a reload notices a changed secret, and stop
//! drains the spool.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use mqlink::config::{self, Format};
use mqlink::topology::{Reloaded, Topology};
use mqlink_testkit::{Mosquitto, MosquittoOptions};

const WAIT: Duration = Duration::from_secs(30);

/// The `Authorization` header of every request the HTTP peer received, in order.
type Seen = Arc<Mutex<Vec<String>>>;

async fn http_peer() -> (String, Seen) {
    async fn ingest(State(seen): State<Seen>, headers: HeaderMap) -> StatusCode {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        seen.lock().unwrap().push(auth);
        StatusCode::NO_CONTENT
    }
    let seen = Seen::default();
    let app = Router::new()
        .route("/ingest", post(ingest))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/ingest"), seen)
}

fn config_with(
    broker: &Mosquitto,
    spool: &std::path::Path,
    sink_url: &str,
    secret: &str,
) -> config::Config {
    let yaml = format!(
        "broker: {{url: '{}', reconnect: {{min: 100ms, max: 500ms}}}}\n\
         spool: {{dir: '{}'}}\n\
         sources: {{http: {{listen: '127.0.0.1:0'}}}}\n\
         routes:\n  - {{match: ['*'], topic: 'app/{{event}}'}}\n\
         connectors:\n\
         \x20 - {{name: web, subscribe: [app/#], session: clean, \
                 sink: {{http: {{url: '{sink_url}', headers: {{Authorization: '{secret}'}}}}}}}}\n\
         \x20 - {{name: keep, subscribe: [other/#], session: clean, sink: {{stdout: {{}}}}}}\n",
        broker.url(),
        spool.display(),
    );
    config::from_str(&yaml, Format::Yaml, "topology-test").unwrap()
}

/// POST an event to the HTTP API (plain HTTP/1.1 over TCP: the answer is all we need).
async fn post_event(addr: std::net::SocketAddr, name: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /v1/events/{name} HTTP/1.1\r\nHost: mqlink\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedder_runs_the_whole_pipeline_and_a_reload_notices_a_changed_secret() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let (sink_url, seen) = http_peer().await;

    let mut running = Topology::new(config_with(&broker, &spool, &sink_url, "Bearer one"))
        .start()
        .await
        .unwrap();
    let http = running.http_addr().expect("the HTTP API listens");

    // HTTP API → spool → broker → connector → HTTP sink, with the configured secret. The
    // connector subscribes after start, so post until the first record comes through.
    let deadline = Instant::now() + WAIT;
    while seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no record reached the sink");
        post_event(http, "first").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.lock().unwrap()[0], "Bearer one");

    // Only the secret changes. `Debug` prints secrets as <redacted>, so a fingerprint of
    // the printed config would keep the old connector (and the old token) running.
    let report = running
        .reload(config_with(&broker, &spool, &sink_url, "Bearer two"))
        .unwrap();
    assert_eq!(
        report,
        Reloaded {
            restarted: vec!["web".into()],
            kept: vec!["keep".into()],
            ..Reloaded::default()
        }
    );
    let before = seen.lock().unwrap().len();
    let deadline = Instant::now() + WAIT;
    loop {
        post_event(http, "second").await;
        let last = seen.lock().unwrap().last().cloned().unwrap_or_default();
        if seen.lock().unwrap().len() > before && last == "Bearer two" {
            break;
        }
        assert!(Instant::now() < deadline, "the new secret was never used");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Stop drains the spool: nothing is left for the next start.
    let spool_handle = running.link().ingest().spool().clone();
    running.stop(Duration::from_secs(10)).await;
    assert_eq!(spool_handle.stats().records, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jq_never_reaches_a_reload_and_a_reload_keeps_what_did_not_change() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let (sink_url, _seen) = http_peer().await;
    let mut running = Topology::new(config_with(&broker, &spool, &sink_url, "x"))
        .start()
        .await
        .unwrap();
    // A jq syntax error is a config error, located: a config holding it cannot exist, so
    // no reload can half-apply it (SIGHUP reloads only what validates).
    let e = config::from_str(
        "connectors:\n  - {name: c, subscribe: [a], transforms: [{map: '{{'}], sink: {stdout: {}}}\n",
        Format::Yaml,
        "topology-test",
    )
    .expect_err("a jq syntax error is refused");
    assert!(
        e.to_string()
            .starts_with("topology-test:2:50: connectors[0].transforms[0].map: "),
        "{e}"
    );
    // The running connector is the one from the first config.
    let same = running
        .reload(config_with(&broker, &spool, &sink_url, "x"))
        .unwrap();
    assert_eq!(same.kept, vec!["keep".to_string(), "web".to_string()]);
    // A broker change needs a restart: reported, not applied.
    let mut moved = config_with(&broker, &spool, &sink_url, "x");
    moved.broker.client_id = "someone-else".into();
    let r = running.reload(moved).unwrap();
    assert_eq!(r.ignored, vec!["broker"]);
    assert_ne!(running.config().broker.client_id, "someone-else");
    running.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_dashboard_stream_does_not_delay_the_stop() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = Mosquitto::start(MosquittoOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (sink_url, _seen) = http_peer().await;
    let running = Topology::new(config_with(
        &broker,
        &dir.path().join("spool"),
        &sink_url,
        "x",
    ))
    .start()
    .await
    .unwrap();
    let mut sse = tokio::net::TcpStream::connect(running.http_addr().unwrap())
        .await
        .unwrap();
    sse.write_all(b"GET /v1/stream HTTP/1.1\r\nHost: mqlink\r\n\r\n")
        .await
        .unwrap();
    // The stream is open once its first event arrives.
    let mut first = vec![0; 4096];
    let n = sse.read(&mut first).await.unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).contains("200 OK"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );
    // With nothing to drain, stopping is quick unless the stream holds the HTTP server's
    // graceful shutdown until its 5 s deadline.
    let began = Instant::now();
    running.stop(Duration::from_secs(10)).await;
    let took = began.elapsed();
    assert!(took < Duration::from_secs(3), "stop took {took:?}");
    // The server ended the stream.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, sse.read_to_end(&mut rest)).await;
}
