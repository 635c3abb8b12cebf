//! `redis` sink: each record is one `XADD` to a Redis stream, a batch is one pipeline
//! wrapped in `MULTI`/`EXEC`, and the batch is confirmed only when every `XADD` has
//! answered with its entry id.
//!
//! Why the transaction: with `appendfsync always` Redis fsyncs once per event-loop turn
//! in which commands ran, and reads at most 16 KB of a client's commands per turn, so a
//! bare pipeline of ~150-byte `XADD`s cost an fsync per ~100 entries. Queued commands run
//! only at `EXEC`: one write and one fsync per batch, the entries still added by Redis's
//! own `XADD` (a Lua script doing the same was tried: as few fsyncs, but 2-3× the server's
//! CPU per entry). `EXEC` runs every queued command even when one fails, and answers one
//! entry id or error per record, as a bare pipeline does. A transaction Redis refuses as a
//! whole (`EXECABORT`: a command refused while queuing, e.g. `OOM`, `NOPERM`, `READONLY`)
//! stored nothing; it is retried once as a bare pipeline, which shows which record the
//! server refuses. A server or ACL that refuses `MULTI` itself gets bare pipelines from
//! then on (the `XADD`s it then ran are counted as they answered).
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
//! `OOM`, `LOADING`, `READONLY`, `NOAUTH`, …) is retried with backoff; after `READONLY` (a
//! primary turned replica behind the same name, which keeps its clients) on a new
//! connection. A pipeline runs
//! every command even when one fails, so the entries after a refused one are already in
//! their streams: the sink remembers them and counts them as confirmed when the connector
//! hands them over again, instead of adding them twice.
//!
//! Redis has no idempotent XADD: a batch whose replies were lost (the connection broke
//! after Redis executed it) is sent again, so a consumer may see an entry twice after a
//! Redis outage. The `topic` and `record` fields make such duplicates recognisable.
//!
//! The connection is redis-rs's multiplexed connection over a socket the sink opens
//! itself (TCP, or TLS through rustls with mqlink's one client configuration,
//! `mqtt::tls::client_config`, for `rediss://`). Its I/O future goes to the sink's
//! driver (`driver::Tasks`), polled by the connector, not spawned: it ends when the sink
//! drops the handle or the connector stops. The connection names itself
//! `mqlink-{connector}` (`CLIENT SETNAME`, shown by `CLIENT LIST`). After an error the
//! sink drops it and connects afresh on the next delivery.
//!
//! TLS: `rediss://` turns it on, with the system's roots unless a `tls:` block (the
//! broker's keys: `ca_file`, `cert_file` + `key_file` for a server that checks client
//! certificates, `server_name`) says otherwise. A certificate that does not verify fails
//! the connection like an outage (retried, acknowledgements held) with rustls's reason.
//!
//! Pipelining (`in_flight`, default 4): once connected, up to `in_flight` batches' pipelines
//! are on the connection at once ([`Deliver::start`]); Redis executes them in the order
//! they were sent. When one fails, the connector lets the later ones finish and delivers
//! the failed one's rest again on its own: its entries then land after those of the later
//! batches that succeeded (see `docs/sinks.md` for the order this gives).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use super::driver::{Leased, Tasks};
use super::{
    BatchKeys, Batching, Body, Confirmed, Deliver, Driver, InFlight, OpenEnv, OpenError,
    RawBatchKeys, Record, SinkError, Spec, TOPIC_LEVELS, TopicRenderer, dedup_id, redacted,
    tls_plan,
};
use crate::config::ctx::Ctx;
use crate::config::error::ConfigError;
use crate::config::node::KeyPath;
use crate::config::secret::Secret;
use crate::config::shared::Backoff;
use crate::config::shared::RawBackoff;
use crate::config::shared::{RawTls, Tls};
use crate::mqtt::tls::{self, TlsOptions};
use crate::topic::Template;

/// `redis: {url, stream, maxlen, password, password_file, tls, batch_max, batch_max_bytes,
/// linger, in_flight, timeout, retry}` as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    url: String,
    stream: Option<String>,
    maxlen: Option<u64>,
    password: Option<Secret>,
    password_file: Option<String>,
    tls: Option<RawTls>,
    batch_max: Option<u32>,
    batch_max_bytes: Option<String>,
    linger: Option<String>,
    in_flight: Option<u32>,
    timeout: Option<String>,
    retry: Option<RawBackoff>,
}

/// Default pipelines in flight (measured in `bench/NOTES.md`).
const DEFAULT_IN_FLIGHT: u32 = 4;

/// Default payload bytes per pipeline: 64 MiB, with the default `in_flight` 256 MiB on
/// the connection at most, well below the 1 GiB Redis lets one client's unread commands
/// take (`client-query-buffer-limit`).
const DEFAULT_BATCH_MAX_BYTES: u64 = 64 << 20;

/// The `redis` sink's settings.
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis[s]://[user[:password]@]host[:port][/db]`.
    pub url: url::Url,
    /// Stream key template; default `mqtt:{topic}`.
    pub stream: Template,
    /// Approximate stream length cap (`MAXLEN ~`); default none.
    pub maxlen: Option<u64>,
    /// Password (instead of one in the URL); from `password` or `password_file`.
    pub password: Option<Secret>,
    /// TLS (`rediss://`): the roots and client certificate; `None` for `redis://`.
    pub tls: Option<Tls>,
    /// Entries per pipeline; default 500, 1..=10000.
    pub batch_max: u32,
    /// MQTT payload bytes per pipeline; default 64 MiB.
    pub batch_max_bytes: u64,
    /// How long a batch waits to fill; default 0 (what is ready).
    pub linger: Duration,
    /// Pipelines on the connection at once; default 4, 1..=64.
    pub in_flight: u32,
    /// Connect and reply timeout; default 10s.
    pub timeout: Duration,
    /// Retry backoff; default 100ms..10s.
    pub retry: Backoff,
}

crate::config::secret::debug_redacting_url!(RedisConfig {
    stream,
    maxlen,
    password,
    tls,
    batch_max,
    batch_max_bytes,
    linger,
    in_flight,
    timeout,
    retry
});

impl Spec for RedisConfig {
    type Raw = Raw;
    type Sink = RedisSink;

    fn validate(r: Raw, ctx: &Ctx<'_>, p: &KeyPath) -> Result<RedisConfig, ConfigError> {
        let url = ctx.http_url(&r.url, &p.key("url"), &["redis", "rediss"])?;
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
        let tls = match (url.scheme() == "rediss", r.tls) {
            (true, raw) => Some(ctx.tls(raw.unwrap_or_default(), &p.key("tls"))?),
            (false, None) => None,
            (false, Some(_)) => {
                return Err(ctx.err(
                    &p.key("tls"),
                    "tls is set but the url is redis://; use rediss:// for TLS",
                ));
            }
        };
        let stream = ctx.template(
            r.stream.as_deref().unwrap_or("mqtt:{topic}"),
            &p.key("stream"),
            false,
            &TOPIC_LEVELS,
        )?;
        if stream.as_str().trim().is_empty() {
            return Err(ctx.err(&p.key("stream"), "must not be empty"));
        }
        // Redis takes MAXLEN as a signed 64-bit integer: a larger value would make every
        // XADD fail (and every record dead-lettered) at run time.
        if let Some(n) = r.maxlen
            && !(1..=i64::MAX as u64).contains(&n)
        {
            return Err(ctx.err(
                &p.key("maxlen"),
                format!("must be between 1 and {}", i64::MAX),
            ));
        }
        let batch = BatchKeys::validate(
            ctx,
            p,
            RawBatchKeys {
                batch_max: r.batch_max,
                batch_max_bytes: r.batch_max_bytes.as_deref(),
                linger: r.linger.as_deref(),
                timeout: r.timeout.as_deref(),
                retry: r.retry,
            },
            500,
            DEFAULT_BATCH_MAX_BYTES,
            Duration::from_secs(10),
        )?;
        Ok(RedisConfig {
            url,
            stream: stream.resolve_builtins(ctx.hostname, ""),
            maxlen: r.maxlen,
            password,
            tls,
            batch_max: batch.batch_max,
            batch_max_bytes: batch.batch_max_bytes,
            linger: batch.linger,
            in_flight: super::in_flight(ctx, p, r.in_flight, DEFAULT_IN_FLIGHT)?,
            timeout: batch.timeout,
            retry: batch.retry,
        })
    }

    fn describe(&self) -> String {
        format!(
            "redis {} stream {}{}{}",
            redacted(&self.url),
            self.stream.as_str(),
            self.maxlen
                .map(|n| format!(" maxlen ~{n}"))
                .unwrap_or_default(),
            self.tls.as_ref().map(tls_plan).unwrap_or_default()
        )
    }

    fn batching(&self) -> Batching {
        Batching {
            max: self.batch_max as usize,
            max_bytes: self.batch_max_bytes,
            linger: self.linger,
            in_flight: self.in_flight as usize,
        }
    }

    fn backoff(&self) -> (Duration, Duration) {
        (self.retry.min, self.retry.max)
    }

    async fn open(&self, env: OpenEnv<'_>) -> Result<(RedisSink, Option<Driver>), OpenError> {
        let err = |reason: String| OpenError {
            kind: "redis",
            target: redacted(&self.url),
            reason,
        };
        // redis-rs parses the database, user and password; it only knows `rediss://` with
        // its own TLS features, which mqlink does not use (the socket is ours).
        let mut plain = self.url.clone();
        plain
            .set_scheme("redis")
            .map_err(|()| err("cannot read the URL".into()))?;
        let info: redis::ConnectionInfo = plain
            .as_str()
            .parse()
            .map_err(|e: redis::RedisError| err(e.to_string()))?;
        let mut settings = info.redis_settings().clone();
        if let Some(pw) = &self.password {
            settings = settings.set_password(pw.expose());
        }
        let host = match self.url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(err("the URL has no host".into())),
        };
        let port = self.url.port().unwrap_or(6379);
        // Files are read now, so a missing CA or key stops the connector at start with
        // its path, instead of failing every delivery.
        let tls = match &self.tls {
            None => None,
            Some(t) => {
                let opts = TlsOptions::from(t);
                let config = tls::client_config(&opts).map_err(|e| err(e.to_string()))?;
                let name = tls::server_name(&host, &opts).map_err(|e| err(e.to_string()))?;
                Some((TlsConnector::from(config), name))
            }
        };
        let (tasks, driver) = Tasks::new(env.shutdown);
        // No connection yet: a Redis that is down at start is an outage like any other
        // (retried with acknowledgements held), not a reason to stop the connector.
        Ok((
            RedisSink {
                connector: env.connector.to_string(),
                target: redacted(&self.url),
                endpoint: Endpoint {
                    host,
                    port,
                    tls,
                    settings,
                    client_name: client_name(env.connector),
                },
                tasks,
                conn: None,
                timeout: self.timeout,
                stream: TopicRenderer::new(self.stream.clone()),
                maxlen: self.maxlen,
                stored: Memo::default(),
                stale: Arc::new(AtomicBool::new(false)),
                bare: Arc::new(AtomicBool::new(false)),
                bare_next: Arc::new(AtomicUsize::new(0)),
            },
            Some(driver),
        ))
    }
}

/// `mqlink-{connector}`, with what `CLIENT SETNAME` refuses (spaces, control
/// characters) replaced by `_`.
fn client_name(connector: &str) -> String {
    let name: String = connector
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    format!("mqlink-{name}")
}

/// Where and how the sink connects.
struct Endpoint {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    settings: redis::RedisConnectionInfo,
    client_name: String,
}

/// Appends records to Redis streams.
pub struct RedisSink {
    connector: String,
    target: String,
    endpoint: Endpoint,
    tasks: Tasks,
    conn: Option<Leased<MultiplexedConnection>>,
    timeout: Duration,
    stream: TopicRenderer,
    maxlen: Option<u64>,
    stored: Memo,
    // Set when a reply could not be trusted (possibly by a pipelined attempt): the next
    // delivery connects afresh.
    stale: Arc<AtomicBool>,
    // How the next batches go (see the module doc): `bare` for good once MULTI was refused,
    // `bare_next` for as many next pipelines that send anything as transactions were
    // refused as a whole (each such batch is delivered again, and that try goes bare).
    bare: Arc<AtomicBool>,
    bare_next: Arc<AtomicUsize>,
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
        if self.stale.swap(false, Ordering::Relaxed) {
            self.conn = None;
        }
        if let Some(c) = &self.conn {
            return Ok(MultiplexedConnection::clone(c));
        }
        let conn = tokio::time::timeout(self.timeout, self.connect())
            .await
            .map_err(|_| format!("no connection within {:?}", self.timeout))
            .and_then(|r| r)
            .map_err(|e| format!("redis {}: connect: {e}", self.target))?;
        let handle = MultiplexedConnection::clone(&conn);
        self.conn = Some(conn);
        Ok(handle)
    }

    /// A TCP (or TLS) socket, the Redis handshake (AUTH, SELECT) on it, its I/O future
    /// handed to the driver, and the connection named.
    async fn connect(&self) -> Result<Leased<MultiplexedConnection>, String> {
        let e = &self.endpoint;
        let tcp = TcpStream::connect((e.host.as_str(), e.port))
            .await
            .map_err(|err| err.to_string())?;
        // Pipelines are written whole; Nagle would only hold back their last segment.
        let _ = tcp.set_nodelay(true);
        // The connection's request channel holds more than `in_flight` pipelines: when it
        // is full, a waiting sender that gets a slot sends only when next polled, and a
        // later batch polled first would overtake it (redis-rs's default is 50).
        let cfg = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(self.timeout))
            .set_pipeline_buffer_size(super::common::MAX_IN_FLIGHT as usize + 8);
        let (mut conn, io): (MultiplexedConnection, Driver) = match &e.tls {
            None => {
                let (c, io) = MultiplexedConnection::new_with_config(&e.settings, tcp, cfg)
                    .await
                    .map_err(|err| err.to_string())?;
                (c, Box::pin(io))
            }
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|err| format!("TLS handshake: {}", tls::explain(&err)))?;
                let (c, io) = MultiplexedConnection::new_with_config(&e.settings, stream, cfg)
                    .await
                    .map_err(|err| err.to_string())?;
                (c, Box::pin(io))
            }
        };
        let lease = self.tasks.run(io).await.map_err(|err| err.to_string())?;
        // Lets an operator (and the shutdown test) find this connection in CLIENT LIST;
        // a server that refuses the name (an ACL) still takes the XADDs.
        let named: Result<(), _> = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(&e.client_name)
            .query_async(&mut conn)
            .await;
        if let Err(err) = named {
            tracing::debug!(sink = %self.target, error = %err, "redis CLIENT SETNAME refused");
        }
        Ok(Leased::new(conn, lease))
    }
}

/// Whether a reply error refuses the record for good: `WRONGTYPE`, `ERR`, and `NOPERM`
/// (the user's ACL does not allow the record's stream key, as PostgreSQL's permission
/// errors are for the postgres sink: retrying it stalled every message behind it).
fn permanent(code: &str) -> bool {
    matches!(code, "WRONGTYPE" | "ERR" | "NOPERM")
}

/// What became of one record of a batch.
enum Outcome {
    Stored,
    Failed { permanent: bool, reason: String },
    Untried,
}

/// A batch turned into one pipeline: what is already decided per record, and which
/// records the pipeline's commands are for.
struct Plan {
    outcome: Vec<Outcome>,
    pipe: redis::Pipeline,
    sent: Vec<usize>,
    /// The `XADD`s are wrapped in `MULTI`/`EXEC` (the replies are `OK`, a `QUEUED` per
    /// command, then `EXEC`'s array of the real ones).
    tx: bool,
}

/// Records Redis stored after a failed one in the same pipeline ([`Confirmed`]), shared
/// with pipelined attempts, which record into it when they finish.
type Memo = Arc<Mutex<Confirmed>>;

impl RedisSink {
    /// The pipeline for `batch`, skipping records an earlier pipeline stored (the memo).
    fn plan(&mut self, batch: &[Record]) -> Plan {
        let mut outcome: Vec<Outcome> = Vec::with_capacity(batch.len());
        let mut pipe = redis::Pipeline::with_capacity(batch.len() + 2);
        pipe.ignore_errors();
        // Transaction or bare, decided at the first XADD: a plan that sends nothing (its
        // records all in the memo) must not spend a bare try owed to a refused
        // transaction. It did, and the next refused batch had its transaction refused
        // again before going bare.
        let mut tx = None;
        let mut sent = Vec::with_capacity(batch.len());
        let mut memo = self
            .stored
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, r) in batch.iter().enumerate() {
            if !memo.is_empty() && memo.take(&dedup_id(&self.connector, r)) {
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
            if tx.is_none() {
                let t = !self.bare.load(Ordering::Relaxed) && !take_one(&self.bare_next);
                if t {
                    pipe.add_command(redis::cmd("MULTI"));
                }
                tx = Some(t);
            }
            // Sized up front, so building the command costs two allocations, not a
            // dozen regrowths (this ran at ~3,000 instructions a record).
            let record_len = match &r.body {
                Body::Raw(b) => b.len(),
                Body::Json(_) => r.source.len() + 64,
            };
            let mut cmd =
                redis::Cmd::with_capacity(10, 32 + key.len() + r.topic.len() + record_len);
            cmd.arg("XADD").arg(key);
            if let Some(n) = self.maxlen {
                cmd.arg("MAXLEN").arg("~").arg(n);
            }
            cmd.arg("*")
                .arg("topic")
                .arg(r.topic.as_bytes())
                .arg("record")
                .arg(RecordArg(r));
            pipe.add_command(cmd);
            outcome.push(Outcome::Untried);
            sent.push(i);
        }
        drop(memo);
        outcome.resize_with(batch.len(), || Outcome::Untried);
        let tx = tx.unwrap_or(false);
        if tx {
            pipe.add_command(redis::cmd("EXEC"));
        }
        Plan {
            outcome,
            pipe,
            sent,
            tx,
        }
    }
}

/// A record's bytes (see [`Record::write_to`]) as one command argument, written straight
/// into the command's buffer instead of through a `Vec` of its own.
struct RecordArg<'a>(&'a Record);

impl redis::ToRedisArgs for RecordArg<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        match &self.0.body {
            Body::Raw(b) => out.write_arg(b),
            Body::Json(v) => {
                // Writing a Value into the command's buffer cannot fail.
                let _ = serde_json::to_writer(out.writer_for_next_arg(), v);
            }
        }
    }
}

/// How far `batch` got, from its plan and the pipeline's replies. Records stored after
/// the first failed one go into `memo`; an answer that cannot be trusted marks the
/// connection `stale` (rebuilt on the next delivery).
fn conclude(
    batch: &[Record],
    plan: Plan,
    replies: Option<Result<Vec<Value>, String>>,
    ctx: &Shared,
) -> Result<(), SinkError> {
    let Plan {
        mut outcome,
        sent,
        tx,
        ..
    } = plan;
    let replies = match replies {
        Some(Ok(all)) if tx => Some(unwrap_exec(all, sent.len(), ctx)),
        other => other,
    };
    match replies {
        None => {}
        Some(Ok(replies)) if replies.len() == sent.len() => {
            for (&i, v) in sent.iter().zip(replies) {
                outcome[i] = match v {
                    Value::ServerError(e) => {
                        // A primary turned replica (a failover behind the same name)
                        // keeps its clients: connect again, to whatever the name is now.
                        if e.code() == "READONLY" {
                            ctx.stale.store(true, Ordering::Relaxed);
                        }
                        Outcome::Failed {
                            permanent: permanent(e.code()),
                            reason: format!(
                                "XADD refused: {} {}",
                                e.code(),
                                e.details().unwrap_or_default()
                            ),
                        }
                    }
                    _ => Outcome::Stored,
                };
            }
        }
        Some(Ok(replies)) => {
            ctx.stale.store(true, Ordering::Relaxed);
            let reason = format!("{} replies to {} XADDs", replies.len(), sent.len());
            for &i in &sent {
                outcome[i] = Outcome::Failed {
                    permanent: false,
                    reason: reason.clone(),
                };
            }
        }
        Some(Err(reason)) => {
            // Unknown how far Redis got: everything sent is retried. Records the plan
            // found in the memo (taken out of it) are stored: back into the memo with
            // those behind the retry point, or they would be added again.
            ctx.stale.store(true, Ordering::Relaxed);
            let done = stored_prefix(&outcome);
            remember_after(batch, &outcome, done, ctx);
            return Err(SinkError::Retry { done, reason });
        }
    }
    let done = stored_prefix(&outcome);
    let Some(Outcome::Failed { permanent, reason }) = outcome.get(done) else {
        return Ok(());
    };
    remember_after(batch, &outcome, done, ctx);
    let reason = format!("redis {}: {reason}", ctx.target);
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

/// The per-record replies inside a `MULTI`, `XADD`…, `EXEC` pipeline's `all` (for `n`
/// records); `Err` when the transaction stored nothing (refused as a whole) or its answer
/// cannot be read, which the caller retries like a lost connection.
fn unwrap_exec(mut all: Vec<Value>, n: usize, ctx: &Shared) -> Result<Vec<Value>, String> {
    if all.len() != n + 2 {
        // The caller's count check reports it.
        return Ok(all);
    }
    let err_text =
        |e: &redis::ServerError| format!("{} {}", e.code(), e.details().unwrap_or_default());
    if let Value::ServerError(e) = &all[0] {
        // MULTI refused (an ACL without @transaction): the XADDs ran one by one and their
        // replies are the real ones; bare pipelines from now on.
        tracing::info!(sink = %ctx.target, error = %err_text(e), "redis refused MULTI; batches go as bare pipelines");
        ctx.bare.store(true, Ordering::Relaxed);
        all.truncate(n + 1);
        all.remove(0);
        return Ok(all);
    }
    let refused = all[1..=n].iter().find_map(|v| match v {
        Value::ServerError(e) => Some(e.clone()),
        _ => None,
    });
    match (all.pop(), refused) {
        (Some(Value::Array(each)), None) if each.len() == n => Ok(each),
        (_, Some(e)) => {
            // Refused while queuing: nothing ran. The next try is a bare pipeline, which
            // finds the record (or, for READONLY, a new connection).
            ctx.bare_next.fetch_add(1, Ordering::Relaxed);
            Err(format!(
                "redis {}: transaction refused: {}",
                ctx.target,
                err_text(&e)
            ))
        }
        (Some(Value::ServerError(e)), None) => {
            // Every command queued, EXEC itself refused (an ACL without EXEC): bare
            // pipelines from now on.
            tracing::info!(sink = %ctx.target, error = %err_text(&e), "redis refused EXEC; batches go as bare pipelines");
            ctx.bare.store(true, Ordering::Relaxed);
            Err(format!(
                "redis {}: transaction refused: {}",
                ctx.target,
                err_text(&e)
            ))
        }
        (other, None) => Err(format!(
            "redis {}: unexpected EXEC reply {other:?}",
            ctx.target
        )),
    }
}

/// Takes one from `n` if it is not zero; whether it did.
fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
        .is_ok()
}

/// Records at the front of a batch known stored.
fn stored_prefix(outcome: &[Outcome]) -> usize {
    outcome
        .iter()
        .take_while(|o| matches!(o, Outcome::Stored))
        .count()
}

/// Puts the records stored behind the retry point `done` into the memo: the connector
/// offers them again with the rest.
fn remember_after(batch: &[Record], outcome: &[Outcome], done: usize, ctx: &Shared) {
    let mut memo = ctx
        .stored
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (r, o) in batch.iter().zip(outcome).skip(done + 1) {
        if matches!(o, Outcome::Stored) {
            memo.add(dedup_id(&ctx.connector, r));
        }
    }
}

/// What a delivery's conclusion needs, shared by the sink and its pipelined attempts.
struct Shared {
    connector: String,
    target: String,
    stored: Memo,
    stale: Arc<AtomicBool>,
    bare: Arc<AtomicBool>,
    bare_next: Arc<AtomicUsize>,
}

impl RedisSink {
    fn shared(&self) -> Shared {
        Shared {
            connector: self.connector.clone(),
            target: self.target.clone(),
            stored: self.stored.clone(),
            stale: self.stale.clone(),
            bare: self.bare.clone(),
            bare_next: self.bare_next.clone(),
        }
    }
}

impl Deliver for RedisSink {
    /// One pipeline of `XADD`s; `Ok` when every one answered with an entry id.
    ///
    /// # Errors
    /// [`SinkError::Reject`] for a stream key that cannot be rendered or an entry Redis
    /// refused (with its message); [`SinkError::Retry`] for connection trouble and
    /// transient server states.
    async fn deliver(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        let plan = self.plan(batch);
        let replies = if plan.sent.is_empty() {
            None
        } else {
            Some(match self.connection().await {
                Ok(mut c) => plan
                    .pipe
                    .query_async(&mut c)
                    .await
                    .map_err(|e| format!("redis {}: {e}", self.target)),
                Err(e) => Err(e),
            })
        };
        conclude(batch, plan, replies, &self.shared())
    }

    /// The same pipeline on the open multiplexed connection, which keeps the order in
    /// which pipelines are handed to it; `None` until a connection is up.
    fn start(&mut self, batch: &Arc<[Record]>) -> Option<InFlight> {
        if self.stale.load(Ordering::Relaxed) {
            return None;
        }
        let mut conn = self
            .conn
            .as_ref()
            .map(|c| MultiplexedConnection::clone(c))?;
        let plan = self.plan(batch);
        let ctx = self.shared();
        let batch = batch.clone();
        Some(Box::pin(async move {
            let replies = if plan.sent.is_empty() {
                None
            } else {
                Some(
                    plan.pipe
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| format!("redis {}: {e}", ctx.target)),
                )
            };
            conclude(&batch, plan, replies, &ctx)
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::sink::Body;

    fn rec(payload: &'static [u8]) -> Record {
        Record {
            topic: Arc::from("t"),
            source: Bytes::from_static(payload),
            part: 0,
            body: Body::Raw(Bytes::from_static(payload)),
            meta: Default::default(),
        }
    }

    /// A retry finds record 1 in the memo (stored after a refused record 0 earlier) and
    /// sends only record 0; the connection fails. Record 1 must stay remembered, or the
    /// next retry adds it a second time. It was dropped from the memo on that path.
    #[test]
    fn a_lost_connection_keeps_the_memo_of_records_already_stored() {
        let batch = [rec(b"zero"), rec(b"one")];
        let ctx = Shared {
            connector: "c".into(),
            target: "redis://h".into(),
            stored: Memo::default(),
            stale: Arc::new(AtomicBool::new(false)),
            bare: Arc::new(AtomicBool::new(false)),
            bare_next: Arc::new(AtomicUsize::new(0)),
        };
        let plan = Plan {
            outcome: vec![Outcome::Untried, Outcome::Stored],
            pipe: redis::pipe(),
            sent: vec![0],
            tx: true,
        };
        let err = conclude(&batch, plan, Some(Err("connection lost".into())), &ctx);
        assert!(
            matches!(err, Err(SinkError::Retry { done: 0, .. })),
            "{err:?}"
        );
        let mut memo = ctx.stored.lock().unwrap();
        assert!(memo.take(&dedup_id("c", &batch[1])), "{memo:?}");
        assert!(memo.is_empty(), "{memo:?}");
        assert!(ctx.stale.load(Ordering::Relaxed));
    }
}
