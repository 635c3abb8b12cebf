//! The event trace of a run: lines stamped with simulated milliseconds, hashed for the
//! determinism test and printed (the tail) when a seed fails.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Lines {
    lines: Vec<String>,
    hash: u64,
}

/// Shared trace; cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Trace(Arc<Mutex<Lines>>);

impl Trace {
    pub(crate) fn line(&self, line: String) {
        let mut t = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // FNV-style chaining over a fixed hasher: `DefaultHasher::new()` has fixed keys.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        t.hash.hash(&mut h);
        line.hash(&mut h);
        t.hash = h.finish();
        t.lines.push(line);
    }

    pub(crate) fn hash(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .hash
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .lines
            .clone()
    }
}
