//! The MQTT session engine.
//!
//! - [`url`]: broker URLs (pure).
pub mod url;
pub mod codec;
pub mod state;
