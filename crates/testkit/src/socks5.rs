//! A tiny SOCKS5 proxy for testing clients' `--proxy`: RFC 1928 CONNECT with "no
//! authentication" or RFC 1929 user/password. It records every CONNECT it was asked for (the
//! target as sent, name or address), so a test can prove a connection went through it and
//! that the proxy, not the client, was given the broker's name to resolve.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One CONNECT request the proxy served (or refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socks5Connect {
    /// `host:port` as the client sent it.
    pub target: String,
    /// The client sent a domain name (ATYP 3), leaving resolution to the proxy (socks5h).
    pub by_name: bool,
    /// The user name the client authenticated with, if any.
    pub user: Option<String>,
}

/// A running proxy on 127.0.0.1; stopped (accept thread joined) when dropped.
#[derive(Debug)]
pub struct Socks5Server {
    port: u16,
    seen: Arc<Mutex<Vec<Socks5Connect>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Socks5Server {
    /// Start a proxy; with `auth`, only that user name and password are let through
    /// (method 2), otherwise only method 0 (no authentication) is offered.
    ///
    /// # Panics
    /// If no local port can be bound.
    #[must_use]
    pub fn start(auth: Option<(&str, &str)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind SOCKS5 proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let auth = auth.map(|(u, p)| (u.to_owned(), p.to_owned()));
        let accept = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (seen, auth) = (seen.clone(), auth.clone());
                    // A failed handshake only ends that client's connection.
                    std::thread::spawn(move || {
                        let _ = serve(conn, auth.as_ref(), &seen);
                    });
                }
            })
        };
        Self {
            port,
            seen,
            stop,
            accept: Some(accept),
        }
    }

    /// The proxy's port on 127.0.0.1.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every CONNECT asked for so far, in order.
    ///
    /// # Panics
    /// If a connection thread panicked while holding the record.
    #[must_use]
    pub fn connects(&self) -> Vec<Socks5Connect> {
        self.seen.lock().expect("SOCKS5 record").clone()
    }
}

impl Drop for Socks5Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn read_n(s: &mut TcpStream, n: usize) -> io::Result<Vec<u8>> {
    let mut b = vec![0; n];
    s.read_exact(&mut b)?;
    Ok(b)
}

fn refuse(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

fn serve(
    mut client: TcpStream,
    auth: Option<&(String, String)>,
    seen: &Mutex<Vec<Socks5Connect>>,
) -> io::Result<()> {
    let head = read_n(&mut client, 2)?;
    if head[0] != 5 {
        return Err(refuse("not SOCKS5"));
    }
    let methods = read_n(&mut client, usize::from(head[1]))?;
    let wanted = if auth.is_some() { 2 } else { 0 };
    if !methods.contains(&wanted) {
        client.write_all(&[5, 0xff])?;
        return Err(refuse("no acceptable method"));
    }
    client.write_all(&[5, wanted])?;
    let mut user = None;
    if let Some((u, p)) = auth {
        // RFC 1929: VER=1, ULEN, UNAME, PLEN, PASSWD.
        let v = read_n(&mut client, 2)?;
        let name = read_n(&mut client, usize::from(v[1]))?;
        let plen = read_n(&mut client, 1)?;
        let pass = read_n(&mut client, usize::from(plen[0]))?;
        if name != u.as_bytes() || pass != p.as_bytes() {
            client.write_all(&[1, 1])?;
            return Err(refuse("bad credentials"));
        }
        client.write_all(&[1, 0])?;
        user = Some(u.clone());
    }
    let req = read_n(&mut client, 4)?;
    if req[0] != 5 || req[1] != 1 {
        // Only CONNECT: "command not supported".
        client.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0])?;
        return Err(refuse("not CONNECT"));
    }
    let (host, by_name) = match req[3] {
        1 => {
            let a = read_n(&mut client, 4)?;
            (Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(), false)
        }
        3 => {
            let len = read_n(&mut client, 1)?;
            let name = read_n(&mut client, usize::from(len[0]))?;
            (String::from_utf8_lossy(&name).into_owned(), true)
        }
        4 => {
            let a: [u8; 16] = read_n(&mut client, 16)?.try_into().expect("16 bytes");
            (format!("[{}]", Ipv6Addr::from(a)), false)
        }
        _ => return Err(refuse("bad address type")),
    };
    let p = read_n(&mut client, 2)?;
    let port = u16::from_be_bytes([p[0], p[1]]);
    let target = format!("{host}:{port}");
    seen.lock().expect("SOCKS5 record").push(Socks5Connect {
        target: target.clone(),
        by_name,
        user,
    });
    let upstream = target
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.find_map(|a| TcpStream::connect(a).ok()));
    let Some(upstream) = upstream else {
        // "Connection refused" (reply 5).
        client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0])?;
        return Err(refuse("target unreachable"));
    };
    client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])?;
    let (mut c2, mut u2) = (client.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let (mut upstream, mut client) = (upstream, client);
    let _ = io::copy(&mut upstream, &mut client);
    let _ = client.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}
