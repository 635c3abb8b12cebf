//! JSON lines on stdin: `{"event": "name", ...fields}` per line.
//!
//! A bad line is logged with its line number and skipped; the lines around it are not
//! affected. Each line is accepted (durable) before the next is read, so a producer piping
//! into mqlink is slowed to the spool's pace rather than buffered without bound.

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio_util::sync::CancellationToken;

use crate::event::{Event, Source};
use crate::publish::ingest::Ingest;

/// Counts of one stdin run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StdinSummary {
    /// Lines accepted.
    pub accepted: u64,
    /// Lines refused (logged).
    pub refused: u64,
}

/// Read events until EOF or `stop`.
pub(crate) async fn run(
    input: impl AsyncBufRead + Unpin,
    ingest: Ingest,
    stop: CancellationToken,
) -> StdinSummary {
    let mut lines = input.lines();
    let mut n = 0u64;
    let mut summary = StdinSummary::default();
    loop {
        let line = tokio::select! {
            _ = stop.cancelled() => break,
            l = lines.next_line() => l,
        };
        let line = match line {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "cannot read stdin");
                break;
            }
        };
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        match parse(&line) {
            Ok(event) => match ingest.accept(&[event]).await {
                Ok(_) => summary.accepted += 1,
                Err(e) => {
                    summary.refused += 1;
                    tracing::error!(line = n, code = e.code(), error = %e, "stdin: event refused");
                }
            },
            Err(why) => {
                summary.refused += 1;
                tracing::error!(line = n, error = %why, "stdin: bad line");
            }
        }
    }
    summary
}

fn parse(line: &str) -> Result<Event, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(mut m) = v else {
        return Err("each line must be a JSON object".into());
    };
    match m.remove("event") {
        Some(Value::String(name)) if !name.is_empty() => Ok(Event::new(name, m, Source::Stdin)),
        _ => Err("missing \"event\" (a non-empty string)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_need_an_event_name() {
        assert!(parse(r#"{"event":"a","x":1}"#).is_ok());
        assert!(parse(r#"{"x":1}"#).unwrap_err().contains("event"));
        assert!(parse("[1]").is_err());
        assert!(parse("{").unwrap_err().contains("JSON"));
    }
}
