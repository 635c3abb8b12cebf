//! `stdout` sink: one record per line on standard output, flushed before confirming.

use tokio::io::AsyncWriteExt;

use super::{Deliver, Driver, OpenEnv, OpenError, Record, SinkError, Spec};
use crate::config::ctx::Ctx;
use crate::config::error::ConfigError;
use crate::config::node::KeyPath;

/// `stdout: {}` (or `stdout:` with nothing): no settings.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {}

/// The `stdout` sink's settings: none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdoutConfig {}

impl Spec for StdoutConfig {
    type Raw = Raw;
    type Sink = StdoutSink;

    fn validate(_: Raw, _: &Ctx<'_>, _: &KeyPath) -> Result<StdoutConfig, ConfigError> {
        Ok(StdoutConfig {})
    }

    fn describe(&self) -> String {
        "stdout".into()
    }

    async fn open(&self, _: OpenEnv<'_>) -> Result<(StdoutSink, Option<Driver>), OpenError> {
        Ok((StdoutSink::new(), None))
    }
}

/// Writes JSON lines (or raw payloads, one per line) to stdout.
#[derive(Debug, Default)]
pub struct StdoutSink {
    buf: Vec<u8>,
}

impl StdoutSink {
    /// A sink on the process's stdout.
    pub fn new() -> StdoutSink {
        StdoutSink::default()
    }
}

impl Deliver for StdoutSink {
    /// Write and flush the batch.
    ///
    /// # Errors
    /// [`SinkError::Retry`] when stdout cannot be written (e.g. a closed pipe).
    async fn deliver(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        self.buf.clear();
        for r in batch {
            r.write_to(&mut self.buf);
            self.buf.push(b'\n');
        }
        let mut out = tokio::io::stdout();
        let res = async {
            out.write_all(&self.buf).await?;
            out.flush().await
        }
        .await;
        res.map_err(|e| SinkError::Retry {
            done: 0,
            reason: format!("stdout: {e}"),
        })
    }
}
