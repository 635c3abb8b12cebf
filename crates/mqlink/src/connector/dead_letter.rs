//! A connector's dead-letter lines: one per record that could not be transformed or that
//! the sink refused, `{"at","connector","topic","error","record"}`, written through the
//! shared [`crate::dead_letter::DeadLetter`] and fsynced before the source message is
//! acknowledged.

use std::time::SystemTime;

use serde_json::{Value, json};

/// One record for the dead-letter file.
#[derive(Debug, Clone)]
pub(crate) struct DeadRecord {
    /// Source topic.
    pub topic: String,
    /// Why it could not be delivered.
    pub error: String,
    /// The record (before the failing transform, or as offered to the sink).
    pub record: Value,
}

/// The dead-letter lines of `records` refused in connector `connector`.
pub(crate) fn lines(connector: &str, records: &[DeadRecord]) -> Vec<Value> {
    let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    records
        .iter()
        .map(|r| {
            json!({
                "at": at,
                "connector": connector,
                "topic": r.topic,
                "error": r.error,
                "record": r.record,
            })
        })
        .collect()
}
