//! [`PacketObserver`]: an optional window on the packets a connection sends and receives,
//! for traces such as `mqlink pub -d` (mosquitto's debug packet trace).
//!
//! The connection calls it with each packet as it is encoded into the write buffer
//! ([`Direction::Sent`]: CONNECT, the session's packets, PINGREQ, DISCONNECT) and as it is
//! decoded, before the session handles it ([`Direction::Received`]), in that order. It runs
//! on the connection task: it must be quick and must not block (no locks another task holds
//! for long). Without one, nothing is done.

use std::sync::Arc;

use crate::mqtt::codec::Packet;

/// Which way a packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From us to the broker.
    Sent,
    /// From the broker to us.
    Received,
}

/// What a [`PacketObserver`] calls.
type ObserveFn = dyn Fn(Direction, &Packet) + Send + Sync;

/// A callback for every packet of every connection of one client.
#[derive(Clone)]
pub struct PacketObserver(Arc<ObserveFn>);

impl PacketObserver {
    /// Observe with `f`.
    pub fn new(f: impl Fn(Direction, &Packet) + Send + Sync + 'static) -> PacketObserver {
        PacketObserver(Arc::new(f))
    }

    pub(super) fn notify(&self, dir: Direction, packet: &Packet) {
        (self.0)(dir, packet);
    }
}

impl std::fmt::Debug for PacketObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PacketObserver")
    }
}

/// Tell `observer`, if any.
pub(super) fn notify(observer: Option<&PacketObserver>, dir: Direction, packet: &Packet) {
    if let Some(o) = observer {
        o.notify(dir, packet);
    }
}
