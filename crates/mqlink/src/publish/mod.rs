//! The publish path: events → routes → spool → broker.
//!
//! ```text
//! source ──Event──▶ Ingest ──Router──▶ OutMessage records ──append_batch──▶ Spool (disk)
//!                                                                          │ reader
//!                          broker ◀── engine (window) ◀── Publisher ◀──────┘
//!                                         │ verdict
//!                                         └──▶ Spool::ack (or dead letter on rejection)
//! ```
//!
//! - [`router`]: route matching, topic rendering, payload shaping (pure).
//! - [`message`]: the spool record of one outgoing message.
//! - [`ingest`]: accept events: route them, append to the spool, answer only once durable.
//! - [`publisher`]: read the spool in order, publish with a window in flight, acknowledge
//!   the spool per broker verdict.

pub(crate) mod ingest;
pub(crate) mod message;
pub(crate) mod publisher;
pub(crate) mod router;
