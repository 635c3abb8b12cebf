//! Events: what applications hand to mqlink on the publish path.

use std::time::SystemTime;

use serde_json::{Map, Value};

/// Where an event came from (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `POST /v1/events...`.
    Http,
    /// JSON lines on stdin.
    Stdin,
    /// A periodic HTTP poll.
    Poll,
    /// The Rust library API.
    Api,
}

impl Source {
    /// Lower-case name, used as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Source::Http => "http",
            Source::Stdin => "stdin",
            Source::Poll => "poll",
            Source::Api => "api",
        }
    }
}

/// A named JSON object, received at a known time.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event name, matched by routes (`JobUpdate`, `PrintStarted`, ...).
    pub name: String,
    /// The event's fields: always a JSON object.
    pub fields: Value,
    /// Where it came from.
    pub source: Source,
    /// When mqlink received it.
    pub received_at: SystemTime,
}

impl Event {
    /// An event received now.
    pub fn new(name: impl Into<String>, fields: Map<String, Value>, source: Source) -> Event {
        Event {
            name: name.into(),
            fields: Value::Object(fields),
            source,
            received_at: SystemTime::now(),
        }
    }
}
