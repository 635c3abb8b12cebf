//! Opening a connection: the transport (TCP | TLS | WebSocket, see `mqtt::transport`) and
//! CONNECT/CONNACK within the connect timeout (the CONNECT packet itself is the event
//! loop's: it depends on the session). A refusal is a [`ConnectError::Refused`] with the broker's code in
//! words; only an explicit refusal of MQTT 5 falls back to 3.1.1.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::observer::{self, Direction, PacketObserver};
use super::reason::refusal;
use crate::mqtt::codec::{self, ConnAck, Packet, Protocol};
use crate::mqtt::transport::{BoxIo, Connector, TransportError};

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Transport-level failure.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The broker answered CONNECT with a refusal.
    #[error("broker refused the connection: {explanation} (code 0x{code:02x}, MQTT {protocol}){}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Refused {
        /// Return/reason code.
        code: u8,
        /// Protocol used.
        protocol: &'static str,
        /// Human words for the code.
        explanation: &'static str,
        /// v5 reason string.
        reason: Option<String>,
    },
    /// The broker closed or broke the handshake.
    #[error("handshake failed: {0}")]
    Handshake(String),
}

impl ConnectError {
    /// A fixed label for the failure, for metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            ConnectError::Refused { code: 4 | 0x86, .. } => "bad_credentials",
            ConnectError::Refused { code: 5 | 0x87, .. } => "not_authorized",
            ConnectError::Refused { code: 2 | 0x85, .. } => "client_id_rejected",
            ConnectError::Refused { .. } => "refused",
            ConnectError::Transport(TransportError::Tls { .. } | TransportError::TlsConfig(_)) => {
                "tls"
            }
            ConnectError::Transport(TransportError::Tcp { .. } | TransportError::Unix { .. }) => {
                "unreachable"
            }
            ConnectError::Transport(TransportError::Bind { .. }) => "bind",
            ConnectError::Transport(TransportError::Proxy { .. }) => "proxy",
            ConnectError::Transport(TransportError::Timeout(..)) => "timeout",
            ConnectError::Transport(TransportError::WebSocket { .. }) => "websocket",
            ConnectError::Handshake(_) => "handshake",
        }
    }
}

pub(super) async fn establish(
    connector: Connector,
    connect: Packet,
    protocol: Protocol,
    fallback: bool,
    max: usize,
    timeout: Duration,
    observer: Option<PacketObserver>,
) -> Result<(BoxIo, BytesMut, ConnAck, Protocol), ConnectError> {
    let observer = observer.as_ref();
    // Only an explicit refusal of MQTT 5 is a reason to try 3.1.1: a connection cut before
    // CONNACK says nothing about the protocol.
    match handshake(&connector, &connect, protocol, max, timeout, observer).await {
        Err(ConnectError::Refused { code: 0x84, .. }) if protocol == Protocol::V5 && fallback => {
            handshake(&connector, &connect, Protocol::V311, max, timeout, observer).await
        }
        Err(ConnectError::Refused {
            code: 0x01,
            protocol: p,
            ..
        }) if p == Protocol::V5.name() && fallback => {
            handshake(&connector, &connect, Protocol::V311, max, timeout, observer).await
        }
        other => other,
    }
}

async fn handshake(
    connector: &Connector,
    connect: &Packet,
    protocol: Protocol,
    max: usize,
    timeout: Duration,
    observer: Option<&PacketObserver>,
) -> Result<(BoxIo, BytesMut, ConnAck, Protocol), ConnectError> {
    let mut io = connector.connect().await?;
    let mut buf = BytesMut::new();
    codec::encode(connect, protocol, &mut buf)
        .map_err(|e| ConnectError::Handshake(e.to_string()))?;
    observer::notify(observer, Direction::Sent, connect);
    let result = tokio::time::timeout(timeout, async {
        io.write_all(&buf).await?;
        io.flush().await?;
        let mut rbuf = BytesMut::with_capacity(4096);
        loop {
            // A refusal can come as a v3 CONNACK to a v5 CONNECT; look at the raw code first.
            if protocol == Protocol::V5
                && rbuf.len() >= 4
                && rbuf[0] == 0x20
                && rbuf[1] == 2
                && rbuf[3] != 0
                && rbuf[3] < 0x80
            {
                return Ok::<_, std::io::Error>(Err(ConnectError::Refused {
                    code: rbuf[3],
                    protocol: protocol.name(),
                    explanation: refusal(Protocol::V311, rbuf[3]),
                    reason: None,
                }));
            }
            match codec::decode(&mut rbuf, protocol, max) {
                Ok(Some(Packet::ConnAck(ack))) => {
                    observer::notify(observer, Direction::Received, &Packet::ConnAck(ack.clone()));
                    return Ok(Ok((rbuf, ack)));
                }
                Ok(Some(other)) => {
                    return Ok(Err(ConnectError::Handshake(format!(
                        "expected CONNACK, got {}",
                        other.name()
                    ))));
                }
                Ok(None) => {}
                Err(e) => return Ok(Err(ConnectError::Handshake(e.to_string()))),
            }
            if io.read_buf(&mut rbuf).await? == 0 {
                return Ok(Err(ConnectError::Handshake(
                    "broker closed the connection before CONNACK".into(),
                )));
            }
        }
    })
    .await;
    let (rbuf, ack) = match result {
        Err(_) => {
            return Err(ConnectError::Handshake(format!(
                "no CONNACK within {timeout:?}"
            )));
        }
        Ok(Err(e)) => return Err(ConnectError::Handshake(format!("I/O error: {e}"))),
        Ok(Ok(Err(e))) => return Err(e),
        Ok(Ok(Ok(v))) => v,
    };
    if ack.code != 0 {
        return Err(ConnectError::Refused {
            code: ack.code,
            protocol: protocol.name(),
            explanation: refusal(protocol, ack.code),
            reason: ack.reason_string,
        });
    }
    Ok((io, rbuf, ack, protocol))
}
