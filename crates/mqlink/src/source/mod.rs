//! Sources: where events come from. Each turns its input into [`crate::event::Event`]s
//! and hands them to [`crate::publish::ingest::Ingest`], answering its sender only after
//! the spool has them.
//!
//! - [`http`]: the HTTP API (webhooks, batches, raw publish, health).
//! - [`stdin`]: JSON lines on standard input.
//! - [`poll`]: periodic HTTP GET of a JSON endpoint.

#[cfg(feature = "http")]
pub(crate) mod http;
#[cfg(feature = "poll")]
pub(crate) mod poll;
pub(crate) mod stdin;
