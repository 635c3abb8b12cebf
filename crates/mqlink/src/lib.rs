//! mqlink: link applications to MQTT brokers without losing a message.
#![allow(missing_docs)]
pub mod build;
pub mod config;
pub mod mqtt;
pub mod record;
pub mod topic;
