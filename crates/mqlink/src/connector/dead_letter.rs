//! The dead-letter file: one JSON line per record that could not be transformed or that
//! the sink refused, `{"at","connector","topic","error","record"}`, fsynced before the
//! source message is acknowledged.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// One record for the dead-letter file.
#[derive(Debug, Clone)]
pub struct DeadRecord {
    /// Source topic.
    pub topic: String,
    /// Why it could not be delivered.
    pub error: String,
    /// The record (before the failing transform, or as offered to the sink).
    pub record: Value,
}

/// Appends dead records to a file.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    connector: String,
    file: Option<tokio::fs::File>,
}

impl DeadLetter {
    /// A writer for `path`; the file is opened (created) on first use.
    pub fn new(path: &Path, connector: &str) -> DeadLetter {
        DeadLetter {
            path: path.to_path_buf(),
            connector: connector.to_string(),
            file: None,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append and fsync `records`.
    ///
    /// # Errors
    /// The I/O error; the caller retries, holding the acknowledgements.
    pub async fn write(&mut self, records: &[DeadRecord]) -> std::io::Result<()> {
        let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let mut buf = Vec::new();
        for r in records {
            let line = json!({
                "at": at,
                "connector": self.connector,
                "topic": r.topic,
                "error": r.error,
                "record": r.record,
            });
            serde_json::to_writer(&mut buf, &line)?;
            buf.push(b'\n');
        }
        if self.file.is_none() {
            self.file = Some(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .await?,
            );
        }
        let Some(f) = self.file.as_mut() else {
            return Err(std::io::Error::other("dead-letter file not open"));
        };
        let res = async {
            f.write_all(&buf).await?;
            f.flush().await?;
            f.sync_data().await
        }
        .await;
        if res.is_err() {
            // Reopen next time; a half-written line is possible, a lost one is not.
            self.file = None;
        }
        res
    }
}
