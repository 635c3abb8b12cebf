//! Byte streams to a broker: TCP, TLS, WebSocket and secure WebSocket.
//!
//! The socket under them is TCP by default; [`SocketOptions`] can make it a Unix domain
//! socket (`--unix`), bind its local address first (`-A`) or reach the broker through a
//! SOCKS5 proxy (`--proxy`), as mosquitto_pub/sub 2.0 can.
//!
//! Every transport ends up as one boxed `AsyncRead + AsyncWrite`, so the connection task
//! does not care which one it drives. WebSocket frames are adapted by [`WsIo`]: each MQTT
//! write becomes one binary message, and incoming binary messages are read as a byte stream.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UnixStream};
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
    /// The Unix domain socket could not be connected.
    #[error("cannot reach {}: {source}", path.display())]
    Unix {
        /// The socket's path.
        path: PathBuf,
        /// OS error.
        source: io::Error,
    },
    /// The local address (`-A`) could not be resolved or bound.
    #[error("cannot bind the local address {addr}: {source}")]
    Bind {
        /// The address as given.
        addr: String,
        /// OS error.
        source: io::Error,
    },
    /// The SOCKS5 proxy could not be reached or refused to connect us to the broker.
    #[error("SOCKS5 proxy {proxy} could not connect to {target}: {reason}")]
    Proxy {
        /// host:port of the proxy.
        proxy: String,
        /// host:port of the broker.
        target: String,
        /// What failed (the proxy's reply or the socket error).
        reason: String,
    },
    /// WebSocket upgrade failed.
    #[error("WebSocket upgrade at {url} failed: {reason}")]
    WebSocket {
        /// The ws URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// How the socket under the MQTT stream is opened. The default is a plain TCP connection to
/// the broker URL's host and port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// Connect to this Unix domain socket instead (the URL's host and port are then unused,
    /// as with mosquitto's `--unix`).
    pub unix: Option<PathBuf>,
    /// Bind the outgoing TCP socket to this local address (an IP address or a host name
    /// resolved at connect time; port 0) before connecting: mosquitto's `-A`.
    pub bind: Option<String>,
    /// Reach the broker through this SOCKS5 proxy; the proxy resolves the broker's name.
    pub proxy: Option<Socks5Proxy>,
}

/// A SOCKS5 proxy (`socks5h://[user[:password]@]host[:port]`).
#[derive(Clone, PartialEq, Eq)]
pub struct Socks5Proxy {
    /// Proxy host.
    pub host: String,
    /// Proxy port (1080 by default).
    pub port: u16,
    /// RFC 1929 user name and password; `None` offers "no authentication" only.
    pub auth: Option<(String, String)>,
}

impl std::fmt::Debug for Socks5Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socks5Proxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.auth.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

impl Socks5Proxy {
    /// Parse mosquitto's `--proxy` syntax: `socks5h://[user[:password]@]host[:port]`. Only
    /// `socks5h` (the proxy resolves the broker's name) exists there, so only it is read.
    ///
    /// # Errors
    /// A message saying what is wrong with `s`.
    pub fn parse(s: &str) -> Result<Socks5Proxy, String> {
        let rest = s
            .strip_prefix("socks5h://")
            .ok_or_else(|| format!("Unsupported proxy protocol: {s}"))?;
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => {
                let (u, p) = a.split_once(':').unwrap_or((a, ""));
                (Some((u.to_string(), p.to_string())), h)
            }
            None => (None, rest),
        };
        let hostport = hostport.strip_suffix('/').unwrap_or(hostport);
        let (host, port) = match hostport.rsplit_once(':') {
            // `[::1]` alone has colons but no port.
            Some((h, p)) if !p.contains(']') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("Invalid proxy port in {s}"))?;
                (h, port)
            }
            _ => (hostport, 1080),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("Invalid proxy host in {s}"));
        }
        Ok(Socks5Proxy {
            host: host.to_string(),
            port,
            auth,
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
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
    socket: SocketOptions,
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
            socket: SocketOptions::default(),
            #[cfg(test)]
            dial: None,
        })
    }

    /// Open the socket under the stream as `socket` says (Unix, bound, via a proxy).
    pub fn with_socket(mut self, socket: SocketOptions) -> Connector {
        self.socket = socket;
        self
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
        let addr = match &self.socket.unix {
            Some(path) => path.display().to_string(),
            None => self.url.authority(),
        };
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
        let stream = self.open_socket(addr).await?;
        if self.insecure {
            tracing::warn!(broker = %self.url, "TLS certificate verification is DISABLED (insecure_skip_verify): anyone on the path can impersonate the broker");
        }
        let stream: BoxIo = match &self.tls {
            Some((config, name)) => {
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| TransportError::Tls {
                        addr: addr.to_string(),
                        reason: tls::explain(&e),
                    })?;
                Box::new(tls)
            }
            None => stream,
        };
        match self.url.transport {
            Transport::Tcp | Transport::Tls => Ok(stream),
            Transport::Ws | Transport::Wss => self.upgrade(stream).await,
        }
    }

    /// The socket under TLS and WebSocket: Unix, or TCP (bound to `-A`'s address if given)
    /// to the broker or to the SOCKS5 proxy, which then connects us to the broker.
    async fn open_socket(&self, addr: &str) -> Result<BoxIo, TransportError> {
        if let Some(path) = &self.socket.unix {
            let unix = UnixStream::connect(path)
                .await
                .map_err(|source| TransportError::Unix {
                    path: path.clone(),
                    source,
                })?;
            return Ok(Box::new(unix));
        }
        let Some(proxy) = &self.socket.proxy else {
            return Ok(Box::new(self.tcp(addr).await?));
        };
        let proxy_addr = proxy.authority();
        let tcp = self.tcp(&proxy_addr).await?;
        let target = (self.url.host.as_str(), self.url.port);
        let proxy_err = |e: tokio_socks::Error| TransportError::Proxy {
            proxy: proxy_addr.clone(),
            target: addr.to_string(),
            reason: e.to_string(),
        };
        // A host name is sent as a name (socks5h): the proxy resolves it, as mosquitto's does.
        let stream = match &proxy.auth {
            None => tokio_socks::tcp::Socks5Stream::connect_with_socket(tcp, target).await,
            Some((user, pass)) => {
                tokio_socks::tcp::Socks5Stream::connect_with_password_and_socket(
                    tcp, target, user, pass,
                )
                .await
            }
        }
        .map_err(proxy_err)?;
        Ok(Box::new(stream))
    }

    /// A TCP connection to `addr`, from the `-A` address when one is set; every address
    /// `addr` resolves to is tried in turn, as `TcpStream::connect` does.
    async fn tcp(&self, addr: &str) -> Result<TcpStream, TransportError> {
        let tcp_err = |source| TransportError::Tcp {
            addr: addr.to_string(),
            source,
        };
        let tcp = match &self.socket.bind {
            None => TcpStream::connect(addr).await.map_err(tcp_err)?,
            Some(local) => {
                let local_ip = resolve_local(local).await?;
                let mut last = None;
                let mut connected = None;
                for remote in tokio::net::lookup_host(addr).await.map_err(tcp_err)? {
                    // Only a remote of the bound address's family can be reached from it.
                    if remote.is_ipv4() != local_ip.is_ipv4() {
                        continue;
                    }
                    let socket = if remote.is_ipv4() {
                        TcpSocket::new_v4()
                    } else {
                        TcpSocket::new_v6()
                    }
                    .map_err(tcp_err)?;
                    socket
                        .bind(SocketAddr::new(local_ip, 0))
                        .map_err(|source| TransportError::Bind {
                            addr: local.clone(),
                            source,
                        })?;
                    match socket.connect(remote).await {
                        Ok(s) => {
                            connected = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                match connected {
                    Some(s) => s,
                    None => {
                        return Err(tcp_err(last.unwrap_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::AddrNotAvailable,
                                format!("no address of the same family as {local_ip}"),
                            )
                        })));
                    }
                }
            }
        };
        // Small acks must not wait for Nagle: measured, this lifts QoS 1/2 rates by ~30 %.
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
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

/// `-A`'s address: an IP address, or a name resolved to its first address.
async fn resolve_local(local: &str) -> Result<IpAddr, TransportError> {
    if let Ok(ip) = local.parse::<IpAddr>() {
        return Ok(ip);
    }
    let bind_err = |source| TransportError::Bind {
        addr: local.to_string(),
        source,
    };
    tokio::net::lookup_host((local, 0))
        .await
        .map_err(bind_err)?
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| {
            bind_err(io::Error::new(
                io::ErrorKind::NotFound,
                "the name has no address",
            ))
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, UnixListener};

    fn connector(url: &str, socket: SocketOptions) -> Connector {
        let url = BrokerUrl::parse(url).unwrap();
        Connector::new(&url, &TlsOptions::default(), Duration::from_secs(10))
            .unwrap()
            .with_socket(socket)
    }

    /// Bytes written by the client arrive at `accepted`, and back: the stream is the one
    /// the listener accepted.
    async fn round_trip(mut client: BoxIo, mut accepted: impl Io) {
        client.write_all(b"ping").await.unwrap();
        let mut b = [0; 4];
        accepted.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        accepted.write_all(b"pong").await.unwrap();
        client.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"pong");
    }

    #[test]
    fn proxy_urls_read_as_mosquitto_writes_them() {
        let p = Socks5Proxy::parse("socks5h://proxy.example").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.auth),
            ("proxy.example", 1080, None)
        );
        let p = Socks5Proxy::parse("socks5h://me:s3:cr@t@[::1]:9050").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 9050));
        assert_eq!(p.auth, Some(("me".into(), "s3:cr@t".into())));
        assert_eq!(p.authority(), "[::1]:9050");
        let p = Socks5Proxy::parse("socks5h://me@h:1").unwrap();
        assert_eq!(p.auth, Some(("me".into(), String::new())));
        assert!(!format!("{p:?}").contains("s3"));
        for bad in [
            "socks5://h",
            "http://h:1",
            "socks5h://h:x",
            "socks5h://:1",
            "h:1",
        ] {
            assert!(Socks5Proxy::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Socks5Proxy::parse("http://x").unwrap_err(),
            "Unsupported proxy protocol: http://x"
        );
    }

    /// `--unix`: the URL's host and port are not used at all (the name cannot resolve).
    #[tokio::test]
    async fn unix_socket_replaces_the_host_and_port() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let c = connector(
            "mqtt://no-such-host.invalid:1",
            SocketOptions {
                unix: Some(path.clone()),
                ..SocketOptions::default()
            },
        );
        let (client, accepted) = tokio::join!(c.connect(), listener.accept());
        round_trip(client.unwrap(), accepted.unwrap().0).await;

        drop(listener);
        std::fs::remove_file(&path).unwrap();
        let err = c.connect().await.err().unwrap();
        assert!(matches!(err, TransportError::Unix { .. }), "{err:?}");
        assert!(err.to_string().contains("broker.sock"), "{err}");
    }

    /// `-A`: the broker sees the connection come from the bound address (127.0.0.2, which
    /// the kernel would never pick by itself for 127.0.0.1).
    #[tokio::test]
    async fn bind_address_is_the_source_of_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let c = connector(
            &format!("mqtt://127.0.0.1:{port}"),
            SocketOptions {
                bind: Some("127.0.0.2".into()),
                ..SocketOptions::default()
            },
        );
        let (client, accepted) = tokio::join!(c.connect(), listener.accept());
        let (accepted, peer) = accepted.unwrap();
        assert_eq!(peer.ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
        round_trip(client.unwrap(), accepted).await;
    }

    #[tokio::test]
    async fn a_bind_address_that_is_not_local_fails_naming_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let c = connector(
            &format!("mqtt://127.0.0.1:{port}"),
            SocketOptions {
                // TEST-NET-1: documentation only, never a local address.
                bind: Some("192.0.2.1".into()),
                ..SocketOptions::default()
            },
        );
        let err = c.connect().await.err().unwrap();
        assert!(matches!(err, TransportError::Bind { .. }), "{err:?}");
        assert!(err.to_string().contains("192.0.2.1"), "{err}");
    }

    /// `--proxy`: the stream goes through the proxy, which is given the broker's name
    /// (socks5h) and, when configured, the user name and password.
    #[tokio::test]
    async fn socks5_proxy_connects_by_name_with_and_without_auth() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        for auth in [None, Some(("me", "pw"))] {
            let proxy = mqlink_testkit::Socks5Server::start(auth);
            let c = connector(
                &format!("mqtt://localhost:{port}"),
                SocketOptions {
                    proxy: Some(Socks5Proxy {
                        host: "127.0.0.1".into(),
                        port: proxy.port(),
                        auth: auth.map(|(u, p)| (u.into(), p.into())),
                    }),
                    ..SocketOptions::default()
                },
            );
            let (client, accepted) = tokio::join!(c.connect(), listener.accept());
            round_trip(client.unwrap(), accepted.unwrap().0).await;
            let seen = proxy.connects();
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert_eq!(seen[0].target, format!("localhost:{port}"));
            assert!(seen[0].by_name);
            assert_eq!(seen[0].user.as_deref(), auth.map(|(u, _)| u));
        }
    }

    #[tokio::test]
    async fn socks5_proxy_refusing_the_password_fails_naming_the_proxy() {
        let proxy = mqlink_testkit::Socks5Server::start(Some(("me", "pw")));
        let c = connector(
            "mqtt://localhost:1",
            SocketOptions {
                proxy: Some(Socks5Proxy {
                    host: "127.0.0.1".into(),
                    port: proxy.port(),
                    auth: Some(("me".into(), "wrong".into())),
                }),
                ..SocketOptions::default()
            },
        );
        let err = c.connect().await.err().unwrap();
        assert!(matches!(err, TransportError::Proxy { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("127.0.0.1:{}", proxy.port())),
            "{err}"
        );
        assert!(proxy.connects().is_empty());
    }
}
