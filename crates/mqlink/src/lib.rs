//! mqlink: link applications to MQTT brokers without losing a message.
#![allow(missing_docs)]
pub mod build;
pub mod config;
pub mod connector;
pub mod event;
pub mod link;
pub mod mqtt;
pub mod observe;
pub mod publish;
pub mod record;
pub mod sink;
pub mod source;
pub mod topic;
pub mod transform;
