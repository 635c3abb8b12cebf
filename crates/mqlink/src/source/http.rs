//! The HTTP API (PRODUCT.md §5).
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/events/{event}` (JSON object) | 202 `{"id": n}` |
//! | `POST /v1/events` (JSON array or NDJSON of `{"event": ..}` objects) | 202 `{"accepted": n}`, all or nothing |
//! | `POST /v1/publish` `{"topic","payload","qos","retain"}` | 202 `{"id": n}` |
//! | ops routes (`/healthz`, `/readyz`, `/metrics`, `/v1/status`, `/v1/stream`, dashboard) | see [`crate::observe::http`] |
//!
//! Every error is `{"error": {"code", "message"}}`: 400 bad JSON, 401 bad token, 404, 405,
//! 408 request timeout, 413 body too large (refused from `Content-Length` before reading,
//! or as soon as the limit is crossed), 415 wrong content type, 422 no route / missing
//! field / invalid topic, 503 spool full (with `Retry-After`) or shutting down.
//! 202 is sent only after the spool has the events.
//!
//! Bounds (configurable; defaults below): [`MAX_CONNECTIONS`] connections (the oldest idle
//! one is dropped to admit a new one, so silent clients cannot lock out good ones), request
//! headers within [`MAX_HEADER_READ`], the body within `max_body`, the whole request within the request
//! timeout. Body parsing ([`parse_batch`]) is pure and fuzzed (`fuzz/`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::HttpSource;
use crate::event::{Event, Source};
use crate::observe::http::OpsRoutes;
use crate::publish::ingest::{Ingest, IngestError};

/// Settings of the HTTP source.
#[derive(Clone)]
pub struct HttpOptions {
    /// Accepted bearer tokens; empty means no authentication (loopback only, enforced by config).
    pub tokens: Vec<String>,
    /// Largest request body.
    pub max_body: u64,
    /// Time allowed for a whole request, body included.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("tokens", &format!("<{} redacted>", self.tokens.len()))
            .field("max_body", &self.max_body)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

#[derive(Clone)]
struct App {
    ingest: Ingest,
    opts: Arc<HttpOptions>,
}

/// A JSON API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable error code (`bad_json`, `payload_too_large`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut r = (self.status, body).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

struct Json(Value);

impl IntoResponse for Json {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> ApiError {
        let status = match &e {
            IngestError::Route { .. } | IngestError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            IngestError::Full | IngestError::Stopping | IngestError::Spool(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let message = match &e {
            IngestError::Route { index, source } => format!("event {index}: {source}"),
            other => other.to_string(),
        };
        ApiError::new(status, e.code(), message)
    }
}

/// Build the router: the ingest routes, and the ops routes `ops` (see
/// [`crate::observe::http::routes`]) with their protected part behind the same token check.
pub fn router(ingest: Ingest, opts: HttpOptions, ops: OpsRoutes) -> Router {
    let timeout = opts.request_timeout;
    let app = App {
        ingest,
        opts: Arc::new(opts),
    };
    let api = Router::new()
        .route("/v1/events/{event}", post(post_event))
        .route("/v1/events", post(post_events))
        .route("/v1/publish", post(post_publish))
        .with_state(app.clone())
        .merge(ops.protected)
        .route_layer(middleware::from_fn_with_state(app, auth));
    Router::new()
        .merge(api)
        .merge(ops.open)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed for this endpoint",
            )
        })
        .layer(middleware::from_fn(
            move |req: Request, next: Next| async move {
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(r) => r,
                    Err(_) => ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        format!("request not completed within {timeout:?}"),
                    )
                    .into_response(),
                }
            },
        ))
}

/// Default for the most connections served at once (`sources.http.max_connections`);
/// defined with the validated config, where its default is applied.
pub const MAX_CONNECTIONS: usize = HttpSource::DEFAULT_MAX_CONNECTIONS;

/// Default for the longest time a client may take to send its request headers
/// (`sources.http.header_timeout`).
pub const MAX_HEADER_READ: Duration = HttpSource::DEFAULT_HEADER_TIMEOUT;

/// One accepted connection, as the accept loop sees it.
struct Slot {
    /// Requests in progress on the connection.
    busy: AtomicUsize,
    /// Cancelled to evict the connection.
    evict: CancellationToken,
}

/// Serve on `listener` until `shutdown` is cancelled; in-flight requests finish.
///
/// At most `max_connections` connections (the oldest idle one is dropped to admit a new
/// one); request headers must arrive within `header_read_timeout`; a whole request within
/// the request timeout (see [`router`]).
///
/// # Errors
/// I/O errors of the server.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    max_connections: usize,
    header_read_timeout: Duration,
) -> std::io::Result<()> {
    let max_connections = max_connections.max(1);
    let mut conns = tokio::task::JoinSet::new();
    // Accepted connections, oldest first; entries whose task ended are skipped lazily.
    let mut slots: std::collections::VecDeque<Arc<Slot>> = std::collections::VecDeque::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    loop {
        while conns.try_join_next().is_some() {}
        if slots.len() > max_connections {
            slots.retain(|s| !s.evict.is_cancelled() && Arc::strong_count(s) > 1);
        }
        if conns.len() >= max_connections {
            slots.retain(|s| !s.evict.is_cancelled() && Arc::strong_count(s) > 1);
            let idle = slots
                .iter()
                .position(|s| s.busy.load(Ordering::Acquire) == 0);
            if let Some(i) = idle.and_then(|i| slots.remove(i)) {
                tracing::debug!("connection limit reached; dropping the oldest idle connection");
                i.evict.cancel();
                let _ = conns.join_next().await;
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = conns.join_next() => continue,
            }
        }
        let (stream, _peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = Arc::new(Slot {
            busy: AtomicUsize::new(0),
            evict: CancellationToken::new(),
        });
        slots.push_back(slot.clone());
        let svc_slot = slot.clone();
        let router = router.clone();
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let slot = svc_slot.clone();
            slot.busy.fetch_add(1, Ordering::AcqRel);
            let mut router = router.clone();
            async move {
                let r = tower_service::Service::call(&mut router, req.map(Body::new)).await;
                slot.busy.fetch_sub(1, Ordering::AcqRel);
                r
            }
        });
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = slot.evict.cancelled() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    // In-flight requests finish (the daemon's shutdown deadline bounds this).
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Constant-time comparison, so response timing does not reveal how much of a token
/// matched (only whether the lengths differ). `subtle` is made for this: its comparison is
/// kept out of the optimizer's reach, which a hand-written loop is not.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

async fn auth(State(app): State<App>, req: Request, next: Next) -> Response {
    if app.opts.tokens.is_empty() {
        return next.run(req).await;
    }
    // EventSource cannot send headers, so `?token=` is accepted too (for /v1/stream).
    let from_query = req
        .uri()
        .query()
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token"))
        .map(|(_, v)| v.into_owned());
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .or(from_query);
    let ok = presented.as_deref().is_some_and(|p| {
        // Check every token, so timing does not reveal which one matched.
        app.opts
            .tokens
            .iter()
            .fold(false, |acc, t| acc | ct_eq(p.as_bytes(), t.as_bytes()))
    });
    if ok {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid bearer token (Authorization: Bearer <token>)",
        )
        .into_response()
    }
}

/// How a batch body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// One JSON document: an array of events or a single event object.
    Json,
    /// Newline-delimited JSON, one event object per line.
    Ndjson,
}

fn content_kind(headers: &HeaderMap, allow_ndjson: bool) -> Result<BodyKind, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Ok(BodyKind::Json),
        m if m.starts_with("application/") && m.ends_with("+json") => Ok(BodyKind::Json),
        "application/x-ndjson"
        | "application/jsonl"
        | "application/jsonlines"
        | "application/x-jsonlines"
            if allow_ndjson =>
        {
            Ok(BodyKind::Ndjson)
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            if allow_ndjson {
                format!(
                    "content type '{ct}' is not accepted: use application/json or application/x-ndjson"
                )
            } else {
                format!("content type '{ct}' is not accepted: use application/json")
            },
        )),
    }
}

/// Read the body within the limit: refused from Content-Length before reading a byte, or
/// as soon as the limit is crossed.
async fn read_body(app: &App, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let max = app.opts.max_body;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds {max} bytes"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max
    {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, usize::try_from(max).unwrap_or(usize::MAX)).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let limit = std::error::Error::source(&e)
                .map(|s| s.is::<http_body_util::LengthLimitError>())
                .unwrap_or(false)
                || e.to_string().contains("length limit");
            if limit {
                Err(too_large())
            } else {
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("cannot read request body: {e}"),
                ))
            }
        }
    }
}

fn parse_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("{what} must be a JSON object, not {}", kind(&other)),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("{what} is not valid JSON: {e}"),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_event_name(name: &str, what: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_event_name",
            format!("{what}: event name must be 1 to 256 characters without control characters"),
        ));
    }
    Ok(())
}

fn accepted(body: Value) -> Response {
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

async fn post_event(
    State(app): State<App>,
    Path(event): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    content_kind(&headers, false)?;
    check_event_name(&event, "path")?;
    let bytes = read_body(&app, &headers, body).await?;
    let fields = parse_object(&bytes, "body")?;
    let a = app
        .ingest
        .accept(&[Event::new(event, fields, Source::Http)])
        .await?;
    // No id when a transform filtered every message out: nothing was stored.
    let id = (a.messages > 0).then_some(a.first_id);
    Ok(accepted(json!({"id": id, "messages": a.messages})))
}

fn batch_item(v: Value, at: &str) -> Result<Event, ApiError> {
    let Value::Object(mut m) = v else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("{at}: each event must be a JSON object, not {}", kind(&v)),
        ));
    };
    let name = match m.remove("event") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_event_name",
                format!("{at}: \"event\" must be a string, not {}", kind(&other)),
            ));
        }
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_event",
                format!("{at}: missing \"event\" (the event name)"),
            ));
        }
    };
    check_event_name(&name, at)?;
    Ok(Event::new(name, m, Source::Http))
}

/// Parse a `POST /v1/events` body: a JSON array of event objects (or one object), or NDJSON.
/// Pure, so it can be fuzzed and tested without a server.
///
/// # Errors
/// An [`ApiError`] (400) naming the item or line that is not an event.
pub fn parse_batch(bytes: &[u8], kind: BodyKind) -> Result<Vec<Event>, ApiError> {
    let mut events = Vec::new();
    match kind {
        BodyKind::Json => match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Array(items)) => {
                for (i, v) in items.into_iter().enumerate() {
                    events.push(batch_item(v, &format!("item {i}"))?);
                }
            }
            Ok(v @ Value::Object(_)) => events.push(batch_item(v, "body")?),
            Ok(other) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    format!(
                        "body must be a JSON array of events, not {}",
                        self::kind(&other)
                    ),
                ));
            }
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    format!("body is not valid JSON: {e}"),
                ));
            }
        },
        BodyKind::Ndjson => {
            for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let v = serde_json::from_slice::<Value>(line).map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_json",
                        format!("line {}: not valid JSON: {e}", i + 1),
                    )
                })?;
                events.push(batch_item(v, &format!("line {}", i + 1))?);
            }
        }
    }
    if events.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_batch",
            "the batch contains no events",
        ));
    }
    Ok(events)
}

async fn post_events(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let kind = content_kind(&headers, true)?;
    let bytes = read_body(&app, &headers, body).await?;
    let events = parse_batch(&bytes, kind)?;
    let a = app.ingest.accept(&events).await?;
    Ok(accepted(
        json!({"accepted": a.events, "messages": a.messages}),
    ))
}

async fn post_publish(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    content_kind(&headers, false)?;
    let bytes = read_body(&app, &headers, body).await?;
    let mut m = parse_object(&bytes, "body")?;
    let bad = |msg: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg);
    let topic = match m.remove("topic") {
        Some(Value::String(t)) => t,
        _ => return Err(bad("\"topic\" (a string) is required".into())),
    };
    let payload = match m.remove("payload") {
        Some(Value::String(s)) => Bytes::from(s.into_bytes()),
        None | Some(Value::Null) => Bytes::new(),
        Some(other) => Bytes::from(serde_json::to_vec(&other).unwrap_or_default()),
    };
    let qos = match m.remove("qos") {
        None => 1,
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u8::try_from(n).ok()).unwrap_or(255),
        Some(_) => return Err(bad("\"qos\" must be 0, 1 or 2".into())),
    };
    let retain = match m.remove("retain") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(bad("\"retain\" must be a boolean".into())),
    };
    if let Some(k) = m.keys().next() {
        return Err(bad(format!(
            "unknown field \"{k}\" (topic, payload, qos, retain)"
        )));
    }
    let a = app.ingest.publish_raw(&topic, payload, qos, retain).await?;
    Ok(accepted(json!({"id": a.first_id})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare_is_a_compare() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secret2"));
    }

    #[test]
    fn parse_batch_reads_json_arrays_objects_and_ndjson() {
        let events =
            parse_batch(br#"[{"event":"a","x":1},{"event":"b"}]"#, BodyKind::Json).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            parse_batch(br#"{"event":"a"}"#, BodyKind::Json)
                .unwrap()
                .len(),
            1
        );
        let nd = parse_batch(
            b"{\"event\":\"a\"}\r\n\n{\"event\":\"b\"}\n",
            BodyKind::Ndjson,
        )
        .unwrap();
        assert_eq!(nd.len(), 2);
    }

    #[test]
    fn parse_batch_refuses_hostile_bodies_with_400() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let cases: Vec<(Vec<u8>, BodyKind)> = vec![
            (deep.clone().into_bytes(), BodyKind::Json),
            (deep.into_bytes(), BodyKind::Ndjson),
            (b"[{\"event\":\"a\xff\"}]".to_vec(), BodyKind::Json),
            (b"\xff\xfe".to_vec(), BodyKind::Ndjson),
            (b"[]".to_vec(), BodyKind::Json),
            (b"\n\n".to_vec(), BodyKind::Ndjson),
            (br#"[1]"#.to_vec(), BodyKind::Json),
            (br#"{"event":""}"#.to_vec(), BodyKind::Json),
            (br#"{"event":7}"#.to_vec(), BodyKind::Ndjson),
        ];
        for (body, kind) in cases {
            let e = parse_batch(&body, kind).expect_err("hostile body accepted");
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e:?}");
        }
    }

    #[test]
    fn options_debug_hides_tokens() {
        let o = HttpOptions {
            tokens: vec!["hunter2".into()],
            max_body: 1,
            request_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{o:?}").contains("hunter2"));
    }
}
