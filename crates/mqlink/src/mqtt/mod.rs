//! The MQTT session engine.
//!
//! - [`url`]: broker URLs (pure).
pub mod url;
