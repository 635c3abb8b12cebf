//! A build without the `embedded-broker` feature: `broker.url: embedded` and `mqlink
//! broker` are refused with a usage error (exit 2) naming the feature.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::EmbeddedOptions;
use crate::exit::usage;

/// Never constructed: [`EmbeddedBroker::start`] always refuses.
pub enum EmbeddedBroker {}

impl EmbeddedBroker {
    pub async fn start(_: &EmbeddedOptions) -> anyhow::Result<EmbeddedBroker> {
        Err(usage(
            "this mqlink was built without the embedded broker (cargo feature `embedded-broker`)",
        ))
    }

    pub fn queue_dropped(&self) -> Option<Arc<AtomicU64>> {
        match *self {}
    }

    pub async fn stop(self) {
        match self {}
    }

    pub async fn failed(&mut self) {
        match *self {}
    }
}
