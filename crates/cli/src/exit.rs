//! Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.

use std::process::ExitCode;

/// Marks an error as the user's input being wrong (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A finished command that wants a specific exit code without an error message.
#[derive(Debug, thiserror::Error)]
#[error("exit {0}")]
pub struct Quiet(pub u8);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

pub fn code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(q) = e.downcast_ref::<Quiet>() {
                return ExitCode::from(q.0);
            }
            eprintln!("mqlink: {e:#}");
            if e.chain().any(|c| c.is::<UsageError>()) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
