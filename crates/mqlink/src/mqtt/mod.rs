//! The MQTT session engine.
//!
//! - [`url`]: broker URLs (pure).
pub mod client;
pub mod codec;
pub mod state;
pub mod tls;
pub mod transport;
pub mod url;
