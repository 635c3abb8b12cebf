//! [`ConfigError`]: every config problem with file, line, column and key path.

use std::fmt;

/// A configuration error, located.
///
/// Displays as `file:line:column: key.path: message`, e.g.
/// `mqlink.yaml:12:5: routes[1].topic: unknown placeholder {jobid} at byte 5 (...)`.
/// Errors about the whole file (unreadable, unknown extension) have `line == 0` and
/// display as `file: message`; errors about the whole document have an empty `path`.
/// Messages never contain secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file as given (or the origin name passed to `from_str`).
    pub file: String,
    /// 1-based line; 0 when the error concerns the whole file.
    pub line: usize,
    /// 1-based column in characters; 0 when `line` is 0.
    pub column: usize,
    /// Key path such as `routes[1].topic`; empty for the document root.
    pub path: String,
    /// What is wrong, and where useful what would be right.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}
