//! `stdout` sink: one record per line on standard output, flushed before confirming.

use tokio::io::AsyncWriteExt;

use super::{Record, SinkError};

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

    /// Write and flush the batch.
    ///
    /// # Errors
    /// [`SinkError::Retry`] when stdout cannot be written (e.g. a closed pipe).
    pub async fn deliver(&mut self, batch: &[Record]) -> Result<(), SinkError> {
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
