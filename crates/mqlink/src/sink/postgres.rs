//! `postgres` sink: each batch is one statement inserting every record as a row, in its
//! own (implicit) transaction; the batch is confirmed when PostgreSQL has committed it.
//!
//! The table (default `mqtt_messages`) is created on connect when absent:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS mqtt_messages (
//!     id          bigserial PRIMARY KEY,
//!     dedup_id    text NOT NULL UNIQUE,      -- always present: the de-dup key
//!     topic       text NOT NULL,             -- columns: topic
//!     payload     bytea NOT NULL,            -- columns: payload (bytea | jsonb | text)
//!     qos         smallint NOT NULL,         -- columns: qos (when listed)
//!     retain      boolean NOT NULL,          -- columns: retain (when listed)
//!     received_at timestamptz NOT NULL DEFAULT now()  -- columns: received_at
//! );
//! ```
//!
//! `payload` holds the record exactly as formatted (the `json`/`fluvio` JSON text, or the
//! raw payload); as `jsonb` it must be JSON. `received_at` is filled by PostgreSQL with
//! the inserting transaction's time.
//!
//! One statement inserts the whole batch, whatever its size: `INSERT … SELECT * FROM
//! unnest($1::text[], $2::text[], …) ON CONFLICT (dedup_id) DO NOTHING` (or the same
//! without `ON CONFLICT`, below), prepared once per connection. It runs outside `BEGIN`/`COMMIT`: a single statement is atomic on its
//! own, and PostgreSQL commits it at the protocol's Sync and answers ReadyForQuery only
//! after that commit (after the WAL flush under `synchronous_commit`), which is where
//! tokio-postgres's `execute` returns. So a batch costs one round trip, not three; the
//! explicit transaction cost 2-3× the throughput on a loaded machine (bench/NOTES.md).
//! `dedup_id` is the NATS sink's message id (`{connector}-{128-bit hash of topic, payload
//! and position}`), so a message the MQTT broker redelivers after a commit whose
//! acknowledgement was lost is not stored twice; the same trade-off as there: identical
//! messages (same topic and payload) count once.
//!
//! Two forms of that statement, both prepared per connection ([`Statements`]). A
//! pipelined batch that cannot hold a stored row goes without `ON CONFLICT`, which spares
//! the server a speculative insertion per row (an index probe and a WAL record; ~15 % of
//! the drain rate, docs/BENCHMARKS.md). Such a batch: none of its records carries the
//! broker's DUP flag (a redelivery, [`super::Meta::redelivered`]) or the retain flag (a
//! retained message is sent again on every subscribe), no id is in it twice, and the sink
//! has not met a conflict yet. The fast form is used only when the table has the unique
//! index `ON CONFLICT (dedup_id)` takes as arbiter (looked up on connect,
//! [`DEDUP_INDEX_SQL`]): without it a stored row would not fail the fast form but be
//! stored twice. Retries and the one-at-a-time path always use `ON CONFLICT`. A stored
//! row the fast statement still meets (a message identical to an earlier one, or a
//! redelivery a broker did not mark) fails that batch as a whole (unique violation on
//! that index, nothing stored); the connector delivers it again with `ON CONFLICT` after
//! the batches pipelined behind it (so its rows get higher `id`s than theirs), and from
//! then on every batch of this sink goes with `ON CONFLICT` (logged once as a warning).
//! The batches already on the wire beside it (up to `in_flight`) may fail the same way;
//! so this happens at most once per connector run, for at most `in_flight` batches. A
//! unique violation on another index is the row's own fault, found and dead-lettered by
//! the one-at-a-time path as before.
//!
//! Failures: SQLSTATE classes 22 (bad data, e.g. a non-JSON payload for `jsonb`), 23
//! (constraints other than the de-dup conflict, which is not an error), 42 (undefined
//! table or column, permissions), 54 (program limits, e.g. an index row too large) and P0
//! (a trigger's `RAISE EXCEPTION`) are permanent; an undefined table with `create_table`
//! (the table was dropped under a live connection) is retried on a new connection, which
//! creates it again. The batch transaction then rolls back and
//! the sink inserts row by row under savepoints to find the first refused record: the
//! rows before it are committed, it is dead-lettered with the server's message, the
//! rest is tried again. Anything else (connection refused or lost, timeouts, shutdown,
//! resources) is retried with backoff; the connection is rebuilt on the next delivery.
//!
//! One connection per connector, not a pool: a second connection would only add
//! reordering. Its statements are pipelined (`in_flight`, default 4): up to that many
//! batches' INSERTs are on the connection at once ([`Deliver::start`]), each with its own
//! Sync, so each commits on its own and PostgreSQL runs them in the order sent; a failed
//! one does not stop the next. When one fails, the connector lets the later ones finish,
//! then delivers the failed batch's rest on its own (row by row under savepoints for a
//! permanent error, as above): its rows then get higher `id`s than those of the later
//! batches that committed; `dedup_id` keeps that from duplicating anything. The
//! connection is let go only once every pipelined attempt holding it has finished. The
//! connection's I/O
//! future (tokio-postgres's `Connection`) goes to the sink's driver (`driver::Tasks`),
//! polled by the connector, not spawned: it ends when the sink drops its client (after a
//! Terminate message) or the connector stops. The connection's `application_name` is
//! `mqlink-{connector}` unless the URL sets one.
//!
//! TLS: a `tls:` block (the broker's keys: `ca_file`, `cert_file` + `key_file`,
//! `server_name`) or `sslmode=require` in the URL turns it on, and then it is required
//! (never a silent fall back to plain text). rustls with mqlink's one client
//! configuration (`mqtt::tls::client_config`) through `tokio-postgres-rustls`; the server
//! certificate is always verified, chain and host name (libpq's `verify-full`), against
//! the system's roots or `tls.ca_file`. A certificate that does not verify fails the
//! connection like an outage (retried, acknowledgements held) with rustls's reason.

use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Socket, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::driver::{Leased, Tasks};
use super::{
    BatchKeys, Batching, Deliver, Driver, InFlight, OpenEnv, OpenError, RawBatchKeys, Record,
    SinkError, Spec, dedup_id, tls_plan,
};
use crate::config::ctx::Ctx;
use crate::config::error::ConfigError;
use crate::config::node::KeyPath;
use crate::config::secret::Secret;
use crate::config::shared::Backoff;
use crate::config::shared::{Ordered, RawBackoff};
use crate::config::shared::{RawTls, Tls};
use crate::mqtt::tls::{self, TlsOptions};

/// `postgres: {url, password, password_file, tls, table, create_table, columns,
/// batch_max, batch_max_bytes, linger, in_flight, timeout, retry}` as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    url: String,
    password: Option<Secret>,
    password_file: Option<String>,
    tls: Option<RawTls>,
    table: Option<String>,
    create_table: Option<bool>,
    columns: Option<Ordered<String>>,
    batch_max: Option<u32>,
    batch_max_bytes: Option<String>,
    linger: Option<String>,
    in_flight: Option<u32>,
    timeout: Option<String>,
    retry: Option<RawBackoff>,
}

/// How the record is stored in the `payload` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadType {
    /// The record's bytes.
    Bytea,
    /// The record as JSON (must be JSON).
    Jsonb,
    /// The record as text (must be UTF-8).
    Text,
}

/// The optional columns besides `dedup_id` and `payload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    /// `topic text`.
    pub topic: bool,
    /// `payload` type.
    pub payload: PayloadType,
    /// `qos smallint`.
    pub qos: bool,
    /// `retain boolean`.
    pub retain: bool,
    /// `received_at timestamptz DEFAULT now()` (only in the created table).
    pub received_at: bool,
}

/// Default statements in flight (measured in `bench/NOTES.md`).
const DEFAULT_IN_FLIGHT: u32 = 4;

/// Default payload bytes per transaction: 64 MiB, well below PostgreSQL's 1 GB limit on
/// one protocol message and one field, which a count bound alone (500 records of up to
/// 256 MiB) does not keep.
const DEFAULT_BATCH_MAX_BYTES: u64 = 64 << 20;

/// The `postgres` sink's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresConfig {
    /// `postgres://user@host[:port]/db[?options]`, without a password.
    pub url: String,
    /// From `password` or `password_file`.
    pub password: Option<Secret>,
    /// TLS, required when set (a `tls:` block or `sslmode=require`).
    pub tls: Option<Tls>,
    /// Table name, `name` or `schema.name`; default `mqtt_messages`.
    pub table: String,
    /// Create the table when absent; default true.
    pub create_table: bool,
    /// Columns written; default topic, payload (bytea), received_at.
    pub columns: Columns,
    /// Rows per transaction; default 500, 1..=10000.
    pub batch_max: u32,
    /// MQTT payload bytes per transaction; default 64 MiB.
    pub batch_max_bytes: u64,
    /// How long a batch waits to fill; default 0 (what is ready).
    pub linger: Duration,
    /// Batches' statements on the connection at once; default 4, 1..=64.
    pub in_flight: u32,
    /// Connect and per-batch timeout; default 10s.
    pub timeout: Duration,
    /// Retry backoff; default 100ms..10s.
    pub retry: Backoff,
}

fn columns(
    raw: Option<Ordered<String>>,
    ctx: &Ctx<'_>,
    p: &KeyPath,
) -> Result<Columns, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Columns {
            topic: true,
            payload: PayloadType::Bytea,
            qos: false,
            retain: false,
            received_at: true,
        });
    };
    let mut c = Columns {
        topic: false,
        payload: PayloadType::Bytea,
        qos: false,
        retain: false,
        received_at: false,
    };
    let mut payload = false;
    for (name, ty) in raw.0 {
        let kp = p.key(&name);
        let ty = ty.trim().to_ascii_lowercase();
        let want = |expected: &str| {
            if ty == expected {
                Ok(true)
            } else {
                Err(ctx.err(
                    &kp,
                    format!("column '{name}' has type {expected}, not '{ty}'"),
                ))
            }
        };
        match name.as_str() {
            "topic" => c.topic = want("text")?,
            "qos" => c.qos = want("smallint")?,
            "retain" => c.retain = want("boolean")?,
            "received_at" => c.received_at = want("timestamptz")?,
            "payload" => {
                payload = true;
                c.payload = match ty.as_str() {
                    "bytea" => PayloadType::Bytea,
                    "jsonb" => PayloadType::Jsonb,
                    "text" => PayloadType::Text,
                    _ => {
                        return Err(
                            ctx.err(&kp, format!("payload is bytea, jsonb or text, not '{ty}'"))
                        );
                    }
                };
            }
            _ => {
                return Err(ctx.err(
                    &kp,
                    format!(
                        "unknown column '{name}' (use topic, payload, qos, retain, received_at)"
                    ),
                ));
            }
        }
    }
    if !payload {
        return Err(ctx.err(p, "needs a payload column (bytea, jsonb or text)"));
    }
    Ok(c)
}

/// `name` or `schema.name`, each part a plain identifier (quoted in SQL as written).
fn table_name(s: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 2 {
        return Err(format!("'{s}' is not `table` or `schema.table`"));
    }
    for part in &parts {
        let ok = !part.is_empty()
            && part.len() <= 63
            && part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(format!(
                "'{part}' is not an identifier (letters, digits, '_', at most 63)"
            ));
        }
    }
    Ok(parts.into_iter().map(String::from).collect())
}

impl Spec for PostgresConfig {
    type Raw = Raw;
    type Sink = PostgresSink;

    fn validate(r: Raw, ctx: &Ctx<'_>, p: &KeyPath) -> Result<PostgresConfig, ConfigError> {
        let up = p.key("url");
        let url = r.url.trim().to_string();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ctx.err(&up, "use a postgres:// or postgresql:// URL"));
        }
        let parsed =
            tokio_postgres::Config::from_str(&url).map_err(|e| ctx.err(&up, e.to_string()))?;
        if parsed.get_password().is_some() {
            return Err(ctx.err(
                &up,
                "put the password in password or password_file, not in the URL",
            ));
        }
        let tls = match (parsed.get_ssl_mode(), r.tls) {
            (SslMode::Disable, Some(_)) => {
                return Err(ctx.err(
                    &p.key("tls"),
                    "tls is set but the URL says sslmode=disable; give one or the other",
                ));
            }
            (_, Some(raw)) => Some(ctx.tls(raw, &p.key("tls"))?),
            (SslMode::Require, None) => Some(Tls::default()),
            (_, None) => None,
        };
        if parsed.get_hosts().is_empty() {
            return Err(ctx.err(&up, "needs a host, like postgres://user@127.0.0.1/db"));
        }
        let table = r.table.unwrap_or_else(|| "mqtt_messages".into());
        table_name(&table).map_err(|m| ctx.err(&p.key("table"), m))?;
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
        Ok(PostgresConfig {
            url,
            password: ctx.password(r.password, r.password_file.as_deref(), p)?,
            tls,
            table,
            create_table: r.create_table.unwrap_or(true),
            columns: columns(r.columns, ctx, &p.key("columns"))?,
            batch_max: batch.batch_max,
            batch_max_bytes: batch.batch_max_bytes,
            linger: batch.linger,
            in_flight: super::in_flight(ctx, p, r.in_flight, DEFAULT_IN_FLIGHT)?,
            timeout: batch.timeout,
            retry: batch.retry,
        })
    }

    fn describe(&self) -> String {
        let c = &self.columns;
        let mut cols = vec!["dedup_id"];
        if c.topic {
            cols.push("topic");
        }
        cols.push(match c.payload {
            PayloadType::Bytea => "payload bytea",
            PayloadType::Jsonb => "payload jsonb",
            PayloadType::Text => "payload text",
        });
        if c.qos {
            cols.push("qos");
        }
        if c.retain {
            cols.push("retain");
        }
        if c.received_at {
            cols.push("received_at");
        }
        format!(
            "postgres {} table {} ({}){}{}",
            self.url,
            self.table,
            cols.join(", "),
            if self.create_table {
                ""
            } else {
                " (not created)"
            },
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

    async fn open(&self, env: OpenEnv<'_>) -> Result<(PostgresSink, Option<Driver>), OpenError> {
        let err = |reason: String| OpenError {
            kind: "postgres",
            target: self.url.clone(),
            reason,
        };
        let mut pg = tokio_postgres::Config::from_str(&self.url).map_err(|e| err(e.to_string()))?;
        if let Some(pw) = &self.password {
            pg.password(pw.expose());
        }
        pg.connect_timeout(self.timeout);
        if pg.get_application_name().is_none() {
            pg.application_name(format!("mqlink-{}", env.connector));
        }
        // Files are read now, so a missing CA or key stops the connector at start with
        // its path, instead of failing every delivery.
        let tls = match &self.tls {
            None => None,
            Some(t) => {
                let opts = TlsOptions::from(t);
                let config = tls::client_config(&opts).map_err(|e| err(e.to_string()))?;
                // Required, never a silent fall back to plain text.
                pg.ssl_mode(SslMode::Require);
                Some(PgTls {
                    inner: MakeRustlsConnect::new((*config).clone()),
                    server_name: opts.server_name,
                })
            }
        };
        let (tasks, driver) = Tasks::new(env.shutdown);
        let table = table_name(&self.table)
            .map_err(err)?
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(".");
        // No connection yet: PostgreSQL down at start is an outage like any other.
        Ok((
            PostgresSink {
                connector: env.connector.to_string(),
                target: format!("{} table {}", self.url, self.table),
                pg,
                tls,
                tasks,
                create_table: self.create_table,
                columns: self.columns,
                timeout: self.timeout,
                create_sql: create_sql(&table, &self.columns),
                insert_sql: insert_sql(&table, &self.columns, true),
                fresh_sql: insert_sql(&table, &self.columns, false),
                table_sql: table.clone(),
                conn: None,
                conflicted: Arc::new(AtomicBool::new(false)),
                stale: Arc::new(AtomicBool::new(false)),
            },
            Some(driver),
        ))
    }
}

/// `tokio-postgres-rustls` with `tls.server_name`: the name verified (and sent as SNI)
/// instead of the URL's host when set.
#[derive(Clone)]
struct PgTls {
    inner: MakeRustlsConnect,
    server_name: Option<String>,
}

impl MakeTlsConnect<Socket> for PgTls {
    type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        let name = self.server_name.as_deref().unwrap_or(domain);
        MakeTlsConnect::<Socket>::make_tls_connect(&mut self.inner, name)
    }
}

fn create_sql(table: &str, c: &Columns) -> String {
    let mut cols = vec![
        "id bigserial PRIMARY KEY".to_string(),
        "dedup_id text NOT NULL UNIQUE".to_string(),
    ];
    if c.topic {
        cols.push("topic text NOT NULL".into());
    }
    cols.push(format!(
        "payload {} NOT NULL",
        match c.payload {
            PayloadType::Bytea => "bytea",
            PayloadType::Jsonb => "jsonb",
            PayloadType::Text => "text",
        }
    ));
    if c.qos {
        cols.push("qos smallint NOT NULL".into());
    }
    if c.retain {
        cols.push("retain boolean NOT NULL".into());
    }
    if c.received_at {
        cols.push("received_at timestamptz NOT NULL DEFAULT now()".into());
    }
    format!("CREATE TABLE IF NOT EXISTS {table} ({})", cols.join(", "))
}

/// The batch insert; `on_conflict`: rows whose `dedup_id` is stored already are skipped
/// (`ON CONFLICT (dedup_id) DO NOTHING`), else such a row fails the statement.
fn insert_sql(table: &str, c: &Columns, on_conflict: bool) -> String {
    // (column, array parameter type, select expression)
    let mut cols: Vec<(&str, &str, &str)> = vec![("dedup_id", "text[]", "dedup_id")];
    if c.topic {
        cols.push(("topic", "text[]", "topic"));
    }
    cols.push(match c.payload {
        PayloadType::Bytea => ("payload", "bytea[]", "payload"),
        PayloadType::Jsonb => ("payload", "text[]", "payload::jsonb"),
        PayloadType::Text => ("payload", "text[]", "payload"),
    });
    if c.qos {
        cols.push(("qos", "int2[]", "qos"));
    }
    if c.retain {
        cols.push(("retain", "bool[]", "retain"));
    }
    let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
    let params: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}", i + 1, c.1))
        .collect();
    let select: Vec<&str> = cols.iter().map(|c| c.2).collect();
    format!(
        "INSERT INTO {table} ({names}) SELECT {select} FROM unnest({params}) AS r({names}){}",
        if on_conflict {
            " ON CONFLICT (dedup_id) DO NOTHING"
        } else {
            ""
        },
        names = names.join(", "),
        select = select.join(", "),
        params = params.join(", "),
    )
}

/// Inserts records into a PostgreSQL table.
pub struct PostgresSink {
    connector: String,
    target: String,
    pg: tokio_postgres::Config,
    tls: Option<PgTls>,
    tasks: Tasks,
    create_table: bool,
    columns: Columns,
    timeout: Duration,
    create_sql: String,
    insert_sql: String,
    fresh_sql: String,
    // The table as quoted in SQL (`"schema"."name"`), for looking up its de-dup index.
    table_sql: String,
    // Shared with the pipelined attempts on it; let go once none holds it.
    conn: Option<(Arc<Leased<Client>>, Statements)>,
    // Set for good once a batch on the fast path met a row already stored (see
    // `Statements::fresh`): from then on every batch goes with `ON CONFLICT`.
    conflicted: Arc<AtomicBool>,
    // Set by a pipelined attempt that failed in a way that leaves the connection in doubt
    // (a timeout, a transient error): the next delivery connects afresh.
    stale: Arc<AtomicBool>,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// A failed database step: permanent for the record(s), or worth retrying.
enum DbError {
    Permanent(String),
    Transient(String),
}

fn classify(e: &tokio_postgres::Error) -> DbError {
    let text = match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(c) = src {
                s.push_str(": ");
                s.push_str(&c.to_string());
                src = c.source();
            }
            s
        }
    };
    match e.code().map(|c| c.code()) {
        Some(code)
            if PERMANENT_CLASSES.iter().any(|c| code.starts_with(c))
                || PERMANENT_CODES.contains(&code) =>
        {
            DbError::Permanent(text)
        }
        _ => DbError::Transient(text),
    }
}

/// SQLSTATE classes that a row gets again however often it is sent: 22 data exception
/// (bad JSON for `jsonb`), 23 integrity constraint, 42 syntax error or access rule
/// (undefined table or column, permissions), 54 program limit exceeded (an index row too
/// large for a user's index on `topic`), P0 PL/pgSQL (a trigger's `RAISE EXCEPTION`).
/// The rest (connection, resources, serialization failures, read-only, internal) may pass.
const PERMANENT_CLASSES: [&str; 5] = ["22", "23", "42", "54", "P0"];

/// Single SQLSTATEs outside those classes that are as permanent: 55000 object not in
/// prerequisite state, which an insert gets for a deferrable unique constraint on
/// `dedup_id` (`ON CONFLICT` cannot use one as arbiter). Retried, it held every
/// acknowledgement forever; the rest of class 55 (55P03 lock not available, 55006 object
/// in use) may pass.
const PERMANENT_CODES: [&str; 1] = ["55000"];

/// `f` within `limit`; past it, a transient error (the caller drops the connection).
async fn timed<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, DbError> {
    timed_db(limit, async { f.await.map_err(|e| classify(&e)) }).await
}

/// [`timed`] for a step that classifies its own errors.
async fn timed_db<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(DbError::Transient(format!("no answer within {limit:?}"))))
}

/// Whether `classify`'s text is about a table that does not exist (42P01).
fn undefined_table(text: &str) -> bool {
    text.ends_with("(SQLSTATE 42P01)")
}

/// The statement's parameters: `a`'s arrays for the columns `c` lists, in order.
fn params(c: Columns, a: &Arrays) -> Vec<&(dyn ToSql + Sync)> {
    let mut p: Vec<&(dyn ToSql + Sync)> = vec![&a.dedup];
    if c.topic {
        p.push(&a.topic);
    }
    match c.payload {
        PayloadType::Bytea => p.push(&a.bytes),
        _ => p.push(&a.text),
    }
    if c.qos {
        p.push(&a.qos);
    }
    if c.retain {
        p.push(&a.retain);
    }
    p
}

/// The insert statements prepared on a connection.
struct Statements {
    /// `INSERT … ON CONFLICT (dedup_id) DO NOTHING`: for batches that may hold a record
    /// stored before (a redelivery, a retry).
    insert: Statement,
    /// The same without `ON CONFLICT`, for the pipelined batches that cannot: a row
    /// already stored fails it (unique violation on `dedup_id`). PostgreSQL's speculative
    /// insertion for `ON CONFLICT` (an index probe and a confirmation WAL record per row)
    /// costs ~15 % of the connector's drain rate (docs/BENCHMARKS.md). `None` when the
    /// table has no index that `ON CONFLICT (dedup_id)` could use.
    fresh: Option<Fresh>,
}

/// The fast insert and the unique index that makes a stored row fail it.
struct Fresh {
    statement: Statement,
    /// Its name: a unique violation names it when the row was stored before; another
    /// unique index's violation is the row's own fault.
    index: Arc<str>,
}

/// The name of the table's index that `ON CONFLICT (dedup_id)` takes as its arbiter: unique,
/// on `dedup_id` alone, valid, not partial, not on an expression, checked immediately (a
/// deferrable one makes `ON CONFLICT` fail). `$1`: the table as quoted in SQL.
const DEDUP_INDEX_SQL: &str = "SELECT c.relname::text FROM pg_index i \
     JOIN pg_class c ON c.oid = i.indexrelid \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
     WHERE i.indrelid = $1::text::regclass AND i.indisunique AND i.indisvalid \
       AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL \
       AND i.indnkeyatts = 1 AND a.attname = 'dedup_id' \
     LIMIT 1";

/// Whether no id appears twice in `ids` (two identical messages in one batch).
fn distinct(ids: &[String]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.iter().all(|id| seen.insert(id.as_str()))
}

/// The batch's columns as arrays, in the insert statement's parameter order.
struct Arrays {
    dedup: Vec<String>,
    topic: Vec<String>,
    bytes: Vec<Vec<u8>>,
    text: Vec<String>,
    qos: Vec<i16>,
    retain: Vec<bool>,
}

impl PostgresSink {
    async fn connect(&mut self) -> Result<(), DbError> {
        if self.stale.swap(false, Ordering::Relaxed) {
            self.conn = None;
        }
        if self.conn.as_ref().is_some_and(|(c, _)| !c.is_closed()) {
            return Ok(());
        }
        self.conn = None;
        let connect_err = |e: tokio_postgres::Error| match classify(&e) {
            DbError::Permanent(m) | DbError::Transient(m) => {
                DbError::Transient(format!("connect: {m}{}", tls::hint(&m)))
            }
        };
        // The connection's I/O; it ends when `client` is dropped (or the server goes).
        let (client, io): (Client, Driver) = match &self.tls {
            None => {
                let (client, conn) = self.pg.connect(NoTls).await.map_err(connect_err)?;
                (client, Box::pin(conn.map(|_| ())))
            }
            Some(t) => {
                let (client, conn) = self.pg.connect(t.clone()).await.map_err(connect_err)?;
                (client, Box::pin(conn.map(|_| ())))
            }
        };
        let lease = self
            .tasks
            .run(io)
            .await
            .map_err(|e| DbError::Transient(e.to_string()))?;
        let client = Leased::new(client, lease);
        if self.create_table {
            // A refused CREATE (e.g. no permission) needs an operator: retried, logged.
            client
                .batch_execute(&self.create_sql)
                .await
                .map_err(|e| match classify(&e) {
                    DbError::Permanent(m) | DbError::Transient(m) => {
                        DbError::Transient(format!("creating the table: {m}"))
                    }
                })?;
        }
        // An undefined table or column is permanent: every record would be refused.
        let insert = client
            .prepare(&self.insert_sql)
            .await
            .map_err(|e| classify(&e))?;
        // The fast form only where `ON CONFLICT (dedup_id)` would have an arbiter: without
        // one, a stored row would not fail it but be stored twice (the conflict-skipping
        // form instead refuses every batch, SQLSTATE 42P10, as before the fast form).
        let index = client
            .query_opt(DEDUP_INDEX_SQL, &[&self.table_sql])
            .await
            .map_err(|e| classify(&e))?
            .map(|row| row.get::<_, String>(0));
        let fresh = match index {
            Some(index) => Some(Fresh {
                statement: client
                    .prepare(&self.fresh_sql)
                    .await
                    .map_err(|e| classify(&e))?,
                index: index.into(),
            }),
            None => None,
        };
        self.conn = Some((Arc::new(client), Statements { insert, fresh }));
        Ok(())
    }

    fn arrays(&self, batch: &[Record]) -> Result<Arrays, (usize, String)> {
        let c = &self.columns;
        let mut a = Arrays {
            dedup: Vec::with_capacity(batch.len()),
            topic: Vec::new(),
            bytes: Vec::new(),
            text: Vec::new(),
            qos: Vec::new(),
            retain: Vec::new(),
        };
        for (i, r) in batch.iter().enumerate() {
            a.dedup.push(dedup_id(&self.connector, r));
            if c.topic {
                a.topic.push(r.topic.to_string());
            }
            let mut bytes = Vec::new();
            r.write_to(&mut bytes);
            match c.payload {
                PayloadType::Bytea => a.bytes.push(bytes),
                PayloadType::Jsonb | PayloadType::Text => match String::from_utf8(bytes) {
                    Ok(s) => a.text.push(s),
                    Err(_) => return Err((i, "payload is not UTF-8 text".into())),
                },
            }
            if c.qos {
                a.qos.push(i16::from(r.meta.qos));
            }
            if c.retain {
                a.retain.push(r.meta.retain);
            }
        }
        Ok(a)
    }

    fn params<'a>(&self, a: &'a Arrays) -> Vec<&'a (dyn ToSql + Sync)> {
        params(self.columns, a)
    }

    /// The whole batch as one statement, committed on its own (see the module doc).
    async fn insert_batch(&mut self, batch: &[Record]) -> Result<(), DbError> {
        let a = self.arrays(batch).map_err(|(_, m)| DbError::Permanent(m))?;
        let params = self.params(&a);
        let (client, stmts) = self
            .conn
            .as_mut()
            .ok_or_else(|| DbError::Transient("no connection".into()))?;
        client
            .execute(&stmts.insert, &params)
            .await
            .map(drop)
            .map_err(|e| classify(&e))
    }

    /// Row by row under savepoints: the committed prefix and the first refused row.
    async fn insert_rows(&mut self, batch: &[Record]) -> Result<(usize, Option<String>), DbError> {
        let mut rows = Vec::with_capacity(batch.len());
        for (i, r) in batch.iter().enumerate() {
            match self.arrays(std::slice::from_ref(r)) {
                Ok(a) => rows.push(a),
                Err((_, m)) => {
                    debug_assert_eq!(rows.len(), i);
                    return self.commit_rows(rows, Some(m)).await;
                }
            }
        }
        self.commit_rows(rows, None).await
    }

    async fn commit_rows(
        &mut self,
        rows: Vec<Arrays>,
        mut refused: Option<String>,
    ) -> Result<(usize, Option<String>), DbError> {
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = rows.iter().map(|a| self.params(a)).collect();
        let (client, stmts) = self
            .conn
            .as_mut()
            .ok_or_else(|| DbError::Transient("no connection".into()))?;
        let stmt = &stmts.insert;
        // The connector runs this path only once no pipelined attempt is left, so the
        // client is not shared; a transaction must not take in another batch's statement.
        let client = Arc::get_mut(client).ok_or_else(|| {
            DbError::Transient("connection still shared with a pipelined batch".into())
        })?;
        // Each statement has the sink's `timeout`, not the whole walk: a batch of
        // thousands of rows takes three round trips a row here, and a deadline for all of
        // them would roll the walk back and start it again forever on a distant server.
        let limit = self.timeout;
        let mut tx = timed(limit, client.transaction()).await?;
        let mut done = 0;
        for p in &params {
            let sp = timed(limit, tx.savepoint("mqlink_row")).await?;
            match timed(limit, sp.execute(stmt, p)).await {
                Ok(_) => {
                    timed(limit, sp.commit()).await?;
                    done += 1;
                }
                Err(DbError::Permanent(m)) => {
                    timed(limit, sp.rollback()).await?;
                    refused = Some(m);
                    break;
                }
                Err(t @ DbError::Transient(_)) => return Err(t),
            }
        }
        timed(limit, tx.commit()).await?;
        Ok((done, refused))
    }

    async fn deliver_inner(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        let target = self.target.clone();
        let retry = |m: String| SinkError::Retry {
            done: 0,
            reason: format!("postgres {target}: {m}"),
        };
        let reject = |done: usize, m: String| SinkError::Reject {
            done,
            count: 1,
            reason: format!("postgres {target}: {m}"),
        };
        let limit = self.timeout;
        match timed_db(limit, self.connect()).await {
            Ok(()) => {}
            Err(DbError::Transient(m)) => return Err(retry(m)),
            // The insert cannot even be prepared: the first record is refused with the
            // server's reason (the next one tries again, in case the table came back).
            Err(DbError::Permanent(m)) => return Err(reject(0, m)),
        }
        match timed_db(limit, self.insert_batch(batch)).await {
            Ok(()) => Ok(()),
            Err(DbError::Transient(m)) => {
                self.conn = None;
                Err(retry(m))
            }
            // The table went away under a live connection (a retention job, a migration)
            // and the sink creates it: connect again, which creates it, instead of
            // refusing every record one by one.
            Err(DbError::Permanent(m)) if self.create_table && undefined_table(&m) => {
                self.conn = None;
                Err(retry(format!(
                    "{m}; the table is created again on the next try"
                )))
            }
            Err(DbError::Permanent(_)) => match self.insert_rows(batch).await {
                Ok((done, None)) if done == batch.len() => Ok(()),
                Ok((done, None)) => Err(SinkError::Retry {
                    done,
                    reason: format!("postgres {}: rows went in one by one", self.target),
                }),
                Ok((done, Some(m))) => Err(reject(done, m)),
                Err(DbError::Transient(m) | DbError::Permanent(m)) => {
                    self.conn = None;
                    Err(retry(m))
                }
            },
        }
    }
}

impl Deliver for PostgresSink {
    /// Insert the batch in one transaction; `Ok` after the commit.
    ///
    /// # Errors
    /// [`SinkError::Reject`] for the first record PostgreSQL refuses for good (with its
    /// message and SQLSTATE), the rows before it committed; [`SinkError::Retry`] for
    /// connection trouble and anything else that may pass.
    async fn deliver(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        if self.stale.swap(false, Ordering::Relaxed) {
            self.conn = None;
        }
        // Each step has its own deadline (`timed`); one that passes it is transient and
        // drops the connection: unknown whether the commit happened, and redelivery is
        // de-duplicated.
        self.deliver_inner(batch).await
    }

    /// The batch's INSERT on the open connection, pipelined behind those before it;
    /// `None` until a connection is up (or when a record cannot be converted: the
    /// one-at-a-time path finds and refuses it).
    fn start(&mut self, batch: &Arc<[Record]>) -> Option<InFlight> {
        if self.stale.load(Ordering::Relaxed) {
            return None;
        }
        let (client, stmts) = self.conn.as_ref().filter(|(c, _)| !c.is_closed())?;
        let arrays = self.arrays(batch).ok()?;
        // A retained message is sent again on every subscribe (without DUP): its row may
        // be stored from the last run.
        let fast = stmts.fresh.as_ref().filter(|_| {
            !self.conflicted.load(Ordering::Relaxed)
                && !batch.iter().any(|r| r.meta.redelivered || r.meta.retain)
                && distinct(&arrays.dedup)
        });
        let fresh = fast.is_some();
        let dedup_index = fast.map(|f| f.index.clone());
        let stmt = fast.map_or(&stmts.insert, |f| &f.statement);
        let (client, stmt) = (client.clone(), stmt.clone());
        let columns = self.columns;
        let stale = self.stale.clone();
        let conflicted = self.conflicted.clone();
        let target = self.target.clone();
        let timeout = self.timeout;
        // The deadline runs from now, like the one-at-a-time path's.
        let insert = tokio::time::timeout(timeout, async move {
            let params = params(columns, &arrays);
            client.execute(&stmt, &params).await
        });
        Some(Box::pin(async move {
            let reason = match insert.await {
                Ok(Ok(_)) => return Ok(()),
                // A row was stored already, though nothing said so (see
                // `Statements::fresh`): nothing of the batch is; the connector delivers
                // it again once the batches behind it are done, one at a time and so
                // with `ON CONFLICT`, as every batch from now on.
                Ok(Err(e))
                    if fresh
                        && e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                        && e.as_db_error().and_then(|d| d.constraint())
                            == dedup_index.as_deref() =>
                {
                    if !conflicted.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            sink = %target,
                            "a batch met a row stored before (an identical earlier message, \
                             or a redelivery the broker did not mark as one); it goes again \
                             with ON CONFLICT after the batches sent behind it (its rows get \
                             later ids), and so does every batch from now on: {}",
                            match classify(&e) {
                                DbError::Permanent(m) | DbError::Transient(m) => m,
                            }
                        );
                    }
                    "a row was stored before; the batch goes again with ON CONFLICT".into()
                }
                Ok(Err(e)) => match classify(&e) {
                    // The statement was refused: the connection is fine; the
                    // one-at-a-time path finds the record and dead-letters it.
                    DbError::Permanent(m) => m,
                    DbError::Transient(m) => {
                        stale.store(true, Ordering::Relaxed);
                        m
                    }
                },
                Err(_) => {
                    stale.store(true, Ordering::Relaxed);
                    format!("no answer within {timeout:?}")
                }
            };
            Err(SinkError::Retry {
                done: 0,
                reason: format!("postgres {target}: {reason}"),
            })
        }))
    }
}
