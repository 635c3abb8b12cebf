//! `redis` sink: each record is one `XADD` to a Redis stream, a batch is one pipeline,
//! and the batch is confirmed only when every `XADD` has answered with its entry id.
//!
//! Entry layout: two fields, `topic` (the MQTT topic) and `record` (the record's bytes
//! exactly as formatted: the `json` or `fluvio` JSON text, or the raw payload). The
//! stream key is the `stream` template rendered per record (`{topic}`/`{mqtt_topic}`,
//! `{topic_level_N}`, `{hostname}`); `maxlen` adds `MAXLEN ~ n` (approximate trimming,
//! which Redis does cheaply a whole node at a time).
//!
//! Failures: a reply error for one entry (`WRONGTYPE`: the key holds something other than
//! a stream; any other `ERR`: the command itself is refused) is permanent for that record
//! and dead-letters it with Redis's message; everything else (connection lost, timeouts,
//! `OOM`, `LOADING`, `READONLY`, `NOAUTH`, …) is retried with backoff. A pipeline runs
//! every command even when one fails, so the entries after a refused one are already in
//! their streams: the sink remembers them and counts them as confirmed when the connector
//! hands them over again, instead of adding them twice.
//!
//! Redis has no idempotent XADD: a batch whose replies were lost (the connection broke
//! after Redis executed it) is sent again, so a consumer may see an entry twice after a
//! Redis outage. The `topic` and `record` fields make such duplicates recognisable.
//!
//! The connection is redis-rs's multiplexed connection on Tokio; its I/O task ends when
//! the sink (the last handle) is dropped. After an error the sink drops it and connects
//! afresh on the next delivery.

use std::collections::HashSet;
use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::{
    BatchKeys,
    Batching, Deliver, Driver, OpenEnv, OpenError, Record, SinkError, Spec, TOPIC_LEVELS,
    TopicRenderer, dedup_id, redacted,
};
use crate::config::node::KeyPath;
use crate::config::shared::RawBackoff;
use crate::config::ctx::Ctx;
use crate::config::error::ConfigError;
use crate::config::secret::Secret;
use crate::config::shared::Backoff;
use crate::topic::Template;

/// `redis: {url, stream, maxlen, password, password_file, batch_max, linger, timeout,
/// retry}` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    url: String,
    stream: Option<String>,
    maxlen: Option<u64>,
    password: Option<Secret>,
    password_file: Option<String>,
    batch_max: Option<u32>,
    linger: Option<String>,
    timeout: Option<String>,
    retry: Option<RawBackoff>,
}

/// The `redis` sink's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://[user[:password]@]host[:port][/db]`.
    pub url: url::Url,
    /// Stream key template; default `mqtt:{topic}`.
    pub stream: Template,
    /// Approximate stream length cap (`MAXLEN ~`); default none.
    pub maxlen: Option<u64>,
    /// Password (instead of one in the URL); from `password` or `password_file`.
    pub password: Option<Secret>,
    /// Entries per pipeline; default 500, 1..=10000.
    pub batch_max: u32,
    /// How long a batch waits to fill; default 0 (what is ready).
    pub linger: Duration,
    /// Connect and reply timeout; default 10s.
    pub timeout: Duration,
    /// Retry backoff; default 100ms..10s.
    pub retry: Backoff,
}

impl Spec for RedisConfig {
    type Raw = Raw;
    type Sink = RedisSink;

    fn validate(r: Raw, ctx: &Ctx<'_>, p: &KeyPath) -> Result<RedisConfig, ConfigError> {
        let url = ctx.http_url(&r.url, &p.key("url"), &["redis"])?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ctx.err(&p.key("url"), "needs a host, like redis://127.0.0.1:6379"));
        }
        let password = ctx.password(r.password, r.password_file.as_deref(), p)?;
        if password.is_some() && url.password().is_some() {
            return Err(ctx.err(
                &p.key("password"),
                "the URL already has a password; give it in one place",
            ));
        }
        let stream = ctx.template(
            r.stream.as_deref().unwrap_or("mqtt:{topic}"),
            &p.key("stream"),
            false,
            &TOPIC_LEVELS,
        )?;
        if stream.as_str().trim().is_empty() {
            return Err(ctx.err(&p.key("stream"), "must not be empty"));
        }
        if r.maxlen == Some(0) {
            return Err(ctx.err(&p.key("maxlen"), "must be at least 1"));
        }
        let batch = BatchKeys::validate(
            ctx,
            p,
            (r.batch_max, r.linger.as_deref(), r.timeout.as_deref(), r.retry),
            500,
            Duration::from_secs(10),
        )?;
        Ok(RedisConfig {
            url,
            stream: stream.resolve_builtins(ctx.hostname, ""),
            maxlen: r.maxlen,
            password,
            batch_max: batch.batch_max,
            linger: batch.linger,
            timeout: batch.timeout,
            retry: batch.retry,
        })
    }

    fn describe(&self) -> String {
        format!(
            "redis {} stream {}{}",
            redacted(&self.url),
            self.stream.as_str(),
            self.maxlen
                .map(|n| format!(" maxlen ~{n}"))
                .unwrap_or_default()
        )
    }

    fn batching(&self) -> Batching {
        Batching {
            max: self.batch_max as usize,
            linger: self.linger,
        }
    }

    fn backoff(&self) -> (Duration, Duration) {
        (self.retry.min, self.retry.max)
    }

    async fn open(&self, env: OpenEnv<'_>) -> Result<(RedisSink, Option<Driver>), OpenError> {
        let mut info: redis::ConnectionInfo =
            self.url.as_str().parse().map_err(|e: redis::RedisError| OpenError {
                kind: "redis",
                target: redacted(&self.url),
                reason: e.to_string(),
            })?;
        if let Some(pw) = &self.password {
            let redis = info.redis_settings().clone().set_password(pw.expose());
            info = info.set_redis_settings(redis);
        }
        let client = redis::Client::open(info).map_err(|e| OpenError {
            kind: "redis",
            target: redacted(&self.url),
            reason: e.to_string(),
        })?;
        // No connection yet: a Redis that is down at start is an outage like any other
        // (retried with acknowledgements held), not a reason to stop the connector.
        Ok((
            RedisSink {
                connector: env.connector.to_string(),
                target: redacted(&self.url),
                client,
                conn: None,
                timeout: self.timeout,
                stream: TopicRenderer::new(self.stream.clone()),
                maxlen: self.maxlen,
                stored: HashSet::new(),
            },
            None,
        ))
    }
}

/// Appends records to Redis streams.
pub struct RedisSink {
    connector: String,
    target: String,
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
    timeout: Duration,
    stream: TopicRenderer,
    maxlen: Option<u64>,
    // De-dup ids of records Redis stored after a failed one in the same pipeline: the
    // connector offers them again and they must not be added twice.
    stored: HashSet<String>,
}

impl std::fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSink")
            .field("url", &self.target)
            .field("stream", &self.stream.as_str())
            .finish_non_exhaustive()
    }
}

impl RedisSink {
    async fn connection(&mut self) -> Result<MultiplexedConnection, String> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| format!("redis {}: connect: {e}", self.target))?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }
}

/// Whether a reply error refuses the record for good.
fn permanent(code: &str) -> bool {
    matches!(code, "WRONGTYPE" | "ERR")
}

/// What became of one record of a batch.
enum Outcome {
    Stored,
    Failed { permanent: bool, reason: String },
    Untried,
}

impl Deliver for RedisSink {
    /// One pipeline of `XADD`s; `Ok` when every one answered with an entry id.
    ///
    /// # Errors
    /// [`SinkError::Reject`] for a stream key that cannot be rendered or an entry Redis
    /// refused (with its message); [`SinkError::Retry`] for connection trouble and
    /// transient server states.
    async fn deliver(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        // Records an earlier pipeline stored after a failed one come back first in the
        // connector's next call; they count as stored without a second XADD.
        let memo = std::mem::take(&mut self.stored);
        let mut outcome: Vec<Outcome> = Vec::with_capacity(batch.len());
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut sent = Vec::with_capacity(batch.len());
        for (i, r) in batch.iter().enumerate() {
            if !memo.is_empty() && memo.contains(&dedup_id(&self.connector, r)) {
                outcome.push(Outcome::Stored);
                continue;
            }
            let key = match self.stream.render(&r.topic) {
                Ok(k) if !k.is_empty() => k,
                Ok(_) => {
                    outcome.push(Outcome::Failed {
                        permanent: true,
                        reason: format!(
                            "stream key '{}' renders empty for topic '{}'",
                            self.stream.as_str(),
                            r.topic
                        ),
                    });
                    break;
                }
                Err(reason) => {
                    outcome.push(Outcome::Failed {
                        permanent: true,
                        reason,
                    });
                    break;
                }
            };
            let cmd = pipe.cmd("XADD").arg(key);
            if let Some(n) = self.maxlen {
                cmd.arg("MAXLEN").arg("~").arg(n);
            }
            let mut bytes = Vec::new();
            r.write_to(&mut bytes);
            cmd.arg("*")
                .arg("topic")
                .arg(r.topic.as_bytes())
                .arg("record")
                .arg(bytes);
            outcome.push(Outcome::Untried);
            sent.push(i);
        }
        outcome.resize_with(batch.len(), || Outcome::Untried);
        if !sent.is_empty() {
            let conn = self.connection().await;
            let replies: Result<Vec<Value>, String> = match conn {
                Ok(mut c) => pipe
                    .query_async(&mut c)
                    .await
                    .map_err(|e| format!("redis {}: {e}", self.target)),
                Err(e) => Err(e),
            };
            match replies {
                Ok(replies) if replies.len() == sent.len() => {
                    for (&i, v) in sent.iter().zip(replies) {
                        outcome[i] = match v {
                            Value::ServerError(e) => Outcome::Failed {
                                permanent: permanent(e.code()),
                                reason: format!(
                                    "XADD refused: {} {}",
                                    e.code(),
                                    e.details().unwrap_or_default()
                                ),
                            },
                            _ => Outcome::Stored,
                        };
                    }
                }
                Ok(replies) => {
                    self.conn = None;
                    let reason = format!("{} replies to {} XADDs", replies.len(), sent.len());
                    for &i in &sent {
                        outcome[i] = Outcome::Failed {
                            permanent: false,
                            reason: reason.clone(),
                        };
                    }
                }
                Err(reason) => {
                    // Unknown how far Redis got: everything sent is retried.
                    self.conn = None;
                    return Err(SinkError::Retry {
                        done: outcome
                            .iter()
                            .take_while(|o| matches!(o, Outcome::Stored))
                            .count(),
                        reason,
                    });
                }
            }
        }
        let done = outcome
            .iter()
            .take_while(|o| matches!(o, Outcome::Stored))
            .count();
        let Some(Outcome::Failed { permanent, reason }) = outcome.get(done) else {
            return Ok(());
        };
        for (r, o) in batch.iter().zip(&outcome).skip(done + 1) {
            if matches!(o, Outcome::Stored) {
                self.stored.insert(dedup_id(&self.connector, r));
            }
        }
        let reason = format!("redis {}: {reason}", self.target);
        Err(if *permanent {
            SinkError::Reject {
                done,
                count: 1,
                reason,
            }
        } else {
            SinkError::Retry { done, reason }
        })
    }
}
