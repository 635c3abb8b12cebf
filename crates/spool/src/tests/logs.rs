//! Captures log events from every thread (the writer is a `std::thread`, so a
//! thread-local subscriber would miss it) for tests that count log lines.
//! Installed once per process as the global subscriber; tests running in
//! parallel in one process each filter by their own spool directory.

use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

static EVENTS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

struct Capture;

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut line = Line(event.metadata().level().to_string());
        event.record(&mut line);
        if let Some(events) = EVENTS.get() {
            events.lock().unwrap().push(line.0);
        }
    }
}

/// Starts capturing (once per process).
pub(crate) fn capture() {
    EVENTS.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(Capture);
        tracing::subscriber::set_global_default(subscriber).unwrap();
        Mutex::new(Vec::new())
    });
}

/// Captured lines containing every one of `needles`.
pub(crate) fn count(needles: &[&str]) -> usize {
    let events = EVENTS.get().expect("capture() first").lock().unwrap();
    events
        .iter()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}
