//! The ops routes: `/healthz`, `/readyz`, `/metrics`, `/v1/status`, `/v1/stream` and the
//! [`super::dashboard`] page. Served by the HTTP source beside its ingest routes
//! ([`crate::source::http::router`]): the `/v1` ones behind its token check, the rest open.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 when the broker is connected, the publisher makes progress (not failed, not stalled) and events are accepted, else 503 with the reason |
//! | `GET /metrics` | the Prometheus exposition |
//! | `GET /v1/status` | the status document |
//! | `GET /v1/stream` | server-sent events for the dashboard, until the client leaves or the server stops |

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Observer;
use super::meter::Viewer;
use crate::mqtt::client::LinkState;
use crate::publish::ingest::Ingest;

#[derive(Clone)]
struct Ops {
    ingest: Ingest,
    observer: Arc<Observer>,
    /// Ends open `/v1/stream` responses, so a watching dashboard does not hold the
    /// server's graceful shutdown until its deadline.
    shutdown: CancellationToken,
}

/// The ops routes, in two parts: `protected` (`/v1/status`, `/v1/stream`) go behind the
/// HTTP source's token check; `open` (health, readiness, metrics, the dashboard page) do
/// not. `shutdown` ends open streams.
#[derive(Debug)]
pub(crate) struct OpsRoutes {
    /// Routes that require a token when tokens are configured.
    pub protected: Router,
    /// Routes served without a token.
    pub open: Router,
}

/// Build the ops routes over `observer` and `ingest`.
pub(crate) fn routes(
    ingest: Ingest,
    observer: Arc<Observer>,
    shutdown: CancellationToken,
) -> OpsRoutes {
    let ops = Ops {
        ingest,
        observer,
        shutdown,
    };
    let protected = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/stream", get(stream))
        .with_state(ops.clone());
    let open = Router::new()
        .route(
            "/healthz",
            get(|| async { json_response(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ops)
        // The page loads without a token; its API calls carry one when tokens are set.
        .merge(dashboard());
    OpsRoutes { protected, open }
}

fn json_response(v: Value) -> Response {
    let body = serde_json::to_vec(&v).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The dashboard page, or nothing in a build without the `dashboard` feature.
fn dashboard() -> Router {
    #[cfg(feature = "dashboard")]
    let page = super::dashboard::router();
    #[cfg(not(feature = "dashboard"))]
    let page = Router::new();
    page
}

async fn metrics(State(ops): State<Ops>) -> Response {
    let body = super::metrics::render_metrics(&ops.observer);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn status(State(ops): State<Ops>) -> Response {
    json_response(ops.observer.status(ops.ingest.is_accepting()))
}

/// Server-sent events for the dashboard: `status` every second, `topics` (what changed)
/// every 500 ms. A viewer is registered while the stream is open; the stream ends when
/// the server shuts down.
async fn stream(State(ops): State<Ops>) -> Response {
    use axum::response::sse::{Event as Sse, KeepAlive};
    use futures_util::StreamExt;
    struct St {
        tick: u64,
        seen: u64,
        _viewer: Viewer,
    }
    let st = St {
        tick: 0,
        seen: 0,
        _viewer: ops.observer.topics.viewer(),
    };
    let s = futures_util::stream::unfold((st, ops), |(mut st, ops)| async move {
        if st.tick > 0 {
            // The stream is a fixed-rate sample for the dashboard (status every second,
            // changed topics every 500 ms), not a feed of events: a timer is its clock.
            tokio::select! {
                _ = ops.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        let mut events = Vec::with_capacity(2);
        if st.tick % 2 == 0 {
            let status = ops.observer.status(ops.ingest.is_accepting());
            events.push(Sse::default().event("status").data(status.to_string()));
        }
        let (changed, seq) = ops.observer.topics.changes_since(st.seen);
        if st.tick == 0 || !changed.is_empty() {
            events.push(
                Sse::default()
                    .event("topics")
                    .data(Value::Array(changed).to_string()),
            );
        }
        st.seen = seq;
        st.tick += 1;
        Some((events, (st, ops)))
    })
    .flat_map(|events| {
        futures_util::stream::iter(events.into_iter().map(Ok::<_, std::convert::Infallible>))
    });
    axum::response::sse::Sse::new(s)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn readyz(State(ops): State<Ops>) -> Response {
    let link = ops.observer.link().borrow().clone();
    let (ok, broker) = match &link {
        LinkState::Connected { protocol, .. } => {
            (true, format!("connected (MQTT {})", protocol.name()))
        }
        LinkState::Connecting => (false, "connecting".to_string()),
        LinkState::Down { reason, .. } => (false, format!("down: {reason}")),
        LinkState::Stopped => (false, "stopped".to_string()),
    };
    let accepting = ops.ingest.is_accepting();
    let publisher = ops.observer.publisher_health();
    let stats = ops.ingest.spool().stats();
    let ready = ok && accepting && publisher.is_ok();
    let body = json!({
        "ready": ready,
        "broker": broker,
        "accepting": accepting,
        "publisher": publisher.err().unwrap_or("ok"),
        "spool": {"records": stats.records, "bytes": stats.bytes},
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, json_response(body)).into_response()
}
