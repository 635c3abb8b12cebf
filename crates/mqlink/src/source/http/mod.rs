//! The HTTP API (PRODUCT.md §5), one file per concern:
//!
//! ```text
//!  serve (accept loop: connection bound, idle eviction, header timeout, graceful stop)
//!    └▶ router (routes, 404/405, request timeout) ─▶ auth (bearer token, constant time)
//!         └▶ ingest (content type, body limit, parse, Ingest::accept ─▶ 202)
//! ```
//!
//! This file holds what they share: the options, the JSON error type and its answers.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/events/{event}` (JSON object) | 202 `{"id": n}` |
//! | `POST /v1/events` (JSON array or NDJSON of `{"event": ..}` objects) | 202 `{"accepted": n}`, all or nothing |
//! | `POST /v1/publish` `{"topic","payload","qos","retain"}` | 202 `{"id": n}` |
//! | ops routes (`/healthz`, `/readyz`, `/metrics`, `/v1/status`, `/v1/stream`, dashboard) | see `observe::http` |
//!
//! Every error is `{"error": {"code", "message"}}`: 400 bad JSON, 401 bad token, 404, 405,
//! 408 request timeout, 413 body too large (refused from `Content-Length` before reading,
//! or as soon as the limit is crossed), 415 wrong content type, 422 no route / missing
//! field / invalid topic, 503 spool full (with `Retry-After`) or shutting down.
//! 202 is sent only after the spool has the events.
//!
//! Bounds (configurable; defaults with the validated config): `max_connections`
//! ([`crate::config::HttpSource::DEFAULT_MAX_CONNECTIONS`]) connections (the oldest idle one is dropped to
//! admit a new one, so silent clients cannot lock out good ones), request headers within
//! `header_timeout` ([`crate::config::HttpSource::DEFAULT_HEADER_TIMEOUT`]), the body within `max_body`, the whole request within the request
//! timeout. Body parsing ([`parse_batch`]) is pure and fuzzed (`fuzz/`).

mod auth;
mod ingest;
mod router;
mod serve;

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::publish::ingest::{Ingest, IngestError};

pub use ingest::{BodyKind, parse_batch};
pub(crate) use router::router;
pub(crate) use serve::serve_with;

/// Settings of the HTTP source.
#[derive(Clone)]
pub(crate) struct HttpOptions {
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

/// What the handlers share.
#[derive(Clone)]
struct App {
    ingest: Ingest,
    opts: std::sync::Arc<HttpOptions>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
