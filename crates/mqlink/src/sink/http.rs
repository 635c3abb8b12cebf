//! `http` sink: each batch is one request whose body is a JSON array of the records.
//!
//! A 2xx answer confirms the whole batch. 408, 429, 5xx, timeouts and connection errors
//! are [`SinkError::Retry`] (the connector backs off with `retry` and sends the same batch
//! again, so a server sees each record at least once, in order). Any other status refuses
//! the request, not necessarily every record in it: a refused request of several records
//! is bisected (first half, then the second half alone once the first is taken) until
//! one record is refused on its own. That record is [`SinkError::Reject`] with the
//! server's status and answer; what came before it is confirmed, what comes after is
//! handed back to the connector, which dead-letters the one record and delivers the rest.
//! Records still reach the server in order and a confirmed record is never sent again.
//! The cost is bounded: at most `2 × ⌈log2 n⌉` extra requests per refused record of a
//! request of `n` records (14 for the default `batch_max` of 100). A server that refuses
//! every request (a wrong token) therefore dead-letters record by record, each after
//! those requests.
//!
//! TLS is rustls with the ring provider and the system roots (the engine's own TLS
//! setup), handed to reqwest preconfigured, so no process-wide provider is needed.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::{Batching, Deliver, Driver, OpenEnv, OpenError, Record, SinkError, Spec};
use crate::config::ctx::Ctx;
use crate::config::error::ConfigError;
use crate::config::node::KeyPath;
use crate::config::secret::Secret;
use crate::config::shared::Backoff;
use crate::config::shared::{Ordered, RawBackoff};
use crate::mqtt::tls::{self, TlsOptions};

/// Longest server answer kept for error messages.
const ERROR_BODY_MAX: usize = 200;
/// Bytes of an error body read to find those characters (4 bytes per UTF-8 character at most).
const ERROR_BODY_READ: usize = ERROR_BODY_MAX * 4;

/// Default payload bytes per request: 16 MiB. The body is built in memory (twice: the
/// buffer and reqwest's copy) and many servers refuse large ones (nginx 1 MiB, Vector's
/// own http sink batches 10 MB by default); a JSON record is larger than its payload.
const DEFAULT_BATCH_MAX_BYTES: u64 = 16 << 20;

/// `http: {url, method, headers, batch_max, batch_max_bytes, timeout, retry}` as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    url: String,
    method: Option<String>,
    headers: Option<Ordered<Secret>>,
    batch_max: Option<u32>,
    batch_max_bytes: Option<String>,
    timeout: Option<String>,
    retry: Option<RawBackoff>,
}

/// The `http` sink's settings.
#[derive(Clone, PartialEq)]
pub struct HttpConfig {
    /// `http://` or `https://` URL.
    pub url: url::Url,
    /// Default `POST`.
    pub method: String,
    /// Extra headers in file order.
    pub headers: Vec<(String, Secret)>,
    /// Records per request; default 100, 1..=10000.
    pub batch_max: u32,
    /// MQTT payload bytes per request; default 16 MiB.
    pub batch_max_bytes: u64,
    /// Per-request timeout; default 10s.
    pub timeout: Duration,
    /// Retry backoff; default 1s..60s.
    pub retry: Backoff,
}

crate::config::secret::debug_redacting_url!(HttpConfig {
    method,
    headers,
    batch_max,
    batch_max_bytes,
    timeout,
    retry
});

impl Spec for HttpConfig {
    type Raw = Raw;
    type Sink = HttpSink;

    fn validate(h: Raw, ctx: &Ctx<'_>, p: &KeyPath) -> Result<HttpConfig, ConfigError> {
        let method = h
            .method
            .unwrap_or_else(|| "POST".into())
            .to_ascii_uppercase();
        if !matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
            return Err(ctx.err(
                &p.key("method"),
                format!("method '{method}' is not POST, PUT or PATCH"),
            ));
        }
        let batch_max = h.batch_max.unwrap_or(100);
        if !(1..=10_000).contains(&batch_max) {
            return Err(ctx.err(&p.key("batch_max"), "must be between 1 and 10000"));
        }
        Ok(HttpConfig {
            url: ctx.http_url(&h.url, &p.key("url"), &["http", "https"])?,
            method,
            headers: ctx.headers(h.headers, &p.key("headers"))?,
            batch_max,
            batch_max_bytes: super::batch_max_bytes_key(
                ctx,
                p,
                h.batch_max_bytes.as_deref(),
                DEFAULT_BATCH_MAX_BYTES,
            )?,
            timeout: ctx.positive_duration(
                h.timeout.as_deref(),
                &p.key("timeout"),
                Duration::from_secs(10),
            )?,
            retry: ctx.backoff_or(
                h.retry,
                &p.key("retry"),
                Backoff {
                    min: Duration::from_secs(1),
                    max: Duration::from_secs(60),
                },
            )?,
        })
    }

    fn describe(&self) -> String {
        format!("http {}", super::redacted(&self.url))
    }

    fn batching(&self) -> Batching {
        Batching {
            max: self.batch_max.max(1) as usize,
            max_bytes: self.batch_max_bytes,
            linger: Duration::ZERO,
            in_flight: 1,
        }
    }

    fn backoff(&self) -> (Duration, Duration) {
        (self.retry.min, self.retry.max)
    }

    async fn open(&self, _: OpenEnv<'_>) -> Result<(HttpSink, Option<Driver>), OpenError> {
        let sink = HttpSink::new(
            &self.url,
            &self.method,
            &self.headers,
            self.batch_max,
            self.timeout,
        )?;
        Ok((sink, None))
    }
}

/// POSTs (or PUTs/PATCHes) batches of records.
pub struct HttpSink {
    client: reqwest::Client,
    url: url::Url,
    method: reqwest::Method,
    batch_max: usize,
    body: Vec<u8>,
}

crate::config::secret::debug_redacting_url!(HttpSink {
    client,
    method,
    batch_max,
    body
});

impl HttpSink {
    /// Build the client.
    ///
    /// # Errors
    /// [`OpenError`] for an invalid method or header, or a TLS setup failure.
    pub fn new(
        url: &url::Url,
        method: &str,
        headers: &[(String, Secret)],
        batch_max: u32,
        timeout: Duration,
    ) -> Result<HttpSink, OpenError> {
        let err = |reason: String| OpenError {
            kind: "http",
            target: super::redacted(url),
            reason,
        };
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| err(format!("invalid method '{method}'")))?;
        let mut map = HeaderMap::new();
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| err(format!("invalid header name '{name}'")))?;
            let mut v = HeaderValue::from_str(value.expose())
                .map_err(|_| err(format!("invalid value for header '{name}'")))?;
            v.set_sensitive(true);
            map.insert(n, v);
        }
        let tls = tls::client_config(&TlsOptions::default()).map_err(|e| err(e.to_string()))?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .default_headers(map)
            .timeout(timeout)
            .build()
            .map_err(|e| err(e.to_string()))?;
        Ok(HttpSink {
            client,
            url: url.clone(),
            method,
            batch_max: batch_max.max(1) as usize,
            body: Vec::new(),
        })
    }

    async fn send(&mut self, chunk: &[Record]) -> Result<(), SinkError> {
        self.body.clear();
        self.body.push(b'[');
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                self.body.push(b',');
            }
            match &r.body {
                super::Body::Json(_) => r.write_to(&mut self.body),
                // Raw payloads travel as JSON strings (base64 when not UTF-8).
                super::Body::Raw(_) => {
                    let _ = serde_json::to_writer(&mut self.body, &r.to_json());
                }
            }
        }
        self.body.push(b']');
        let retry = |reason: String| SinkError::Retry { done: 0, reason };
        let mut resp = self
            .client
            .request(self.method.clone(), self.url.clone())
            .body(self.body.clone())
            .send()
            .await
            // reqwest's message carries the URL as given, password and query included.
            .map_err(|e| {
                let e = error_chain(&e.without_url());
                retry(format!(
                    "{} {}: {e}",
                    self.method,
                    super::redacted(&self.url)
                ))
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        // Only the start of an error body is kept: read no more than that, whatever the
        // server sends.
        let mut body = Vec::new();
        while body.len() < ERROR_BODY_READ {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    body.extend_from_slice(&c[..c.len().min(ERROR_BODY_READ - body.len())])
                }
                Ok(None) | Err(_) => break,
            }
        }
        let text: String = String::from_utf8_lossy(&body)
            .chars()
            .take(ERROR_BODY_MAX)
            .collect();
        let reason = format!(
            "{} {} answered {status}: {text}",
            self.method,
            super::redacted(&self.url)
        );
        let code = status.as_u16();
        if code == 408 || code == 429 || status.is_server_error() {
            Err(retry(reason))
        } else {
            Err(SinkError::Reject {
                done: 0,
                count: chunk.len(),
                reason,
            })
        }
    }
}

impl Deliver for HttpSink {
    /// Send the batch (in requests of at most `batch_max` records); a refused request of
    /// several records is narrowed down to the first record the server refuses alone
    /// (see `HttpSink::narrow`).
    ///
    /// # Errors
    /// [`SinkError`] with the records confirmed so far.
    async fn deliver(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        let mut done = 0;
        while done < batch.len() {
            let end = batch.len().min(done + self.batch_max);
            match self.send(&batch[done..end]).await {
                Ok(()) => done = end,
                Err(SinkError::Retry { reason, .. }) => {
                    return Err(SinkError::Retry { done, reason });
                }
                Err(SinkError::Reject { reason, .. }) => {
                    done = self.narrow(batch, done, end, reason).await?;
                }
            }
        }
        Ok(())
    }
}

impl HttpSink {
    /// `batch[lo..hi]`, refused as one request with `reason`, is bisected to find the
    /// record the server refuses: the first half is sent; a 2xx confirms it and the
    /// second half is sent alone, a refusal narrows to that half. Everything before `lo`
    /// is confirmed; nothing after `hi` is sent. Requests stay in record order and a
    /// confirmed record is never sent again.
    ///
    /// Each step halves the range with at most two requests, so finding one refused
    /// record costs at most `2 × ⌈log2(hi - lo)⌉` requests (28 for the largest batch of
    /// 10000).
    ///
    /// Returns how far the batch is confirmed when the refusal does not reproduce (both
    /// halves taken: the server refused the request, not a record, e.g. for its size).
    ///
    /// # Errors
    /// [`SinkError::Reject`] for the one record refused alone, with the server's status
    /// and answer to that request; [`SinkError::Retry`] for a retryable status or a
    /// transport error on the way; both count what was confirmed in `done`.
    async fn narrow(
        &mut self,
        batch: &[Record],
        mut lo: usize,
        mut hi: usize,
        mut reason: String,
    ) -> Result<usize, SinkError> {
        loop {
            if hi - lo == 1 {
                return Err(SinkError::Reject {
                    done: lo,
                    count: 1,
                    reason,
                });
            }
            let mid = lo + (hi - lo) / 2;
            match self.send(&batch[lo..mid]).await {
                Ok(()) => lo = mid,
                Err(SinkError::Reject { reason: r, .. }) => {
                    (hi, reason) = (mid, r);
                    continue;
                }
                Err(SinkError::Retry { reason, .. }) => {
                    return Err(SinkError::Retry { done: lo, reason });
                }
            }
            match self.send(&batch[lo..hi]).await {
                Ok(()) => return Ok(hi),
                Err(SinkError::Reject { reason: r, .. }) => reason = r,
                Err(SinkError::Retry { reason, .. }) => {
                    return Err(SinkError::Retry { done: lo, reason });
                }
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}
