//! The simulated network: in-memory byte pipes between the client and the broker, with
//! the faults a hostile proxy makes: a cut after a chosen number of bytes in either
//! direction (FIN or RST, also before CONNACK), a blackhole or a half-open connection
//! (bytes held in both directions or one, not delivered until it heals; writes block once
//! a pipe's buffer is full, as a TCP window does), and a broker that does not listen
//! (connection refused).
//!
//! A connection is a [`Wire`] with two byte queues; each side holds an [`End`], which is
//! an `AsyncRead + AsyncWrite` like a socket. Everything runs on one thread; wakers make
//! the ends behave like sockets to the tasks reading them.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

/// Bytes a pipe buffers before its writer blocks.
const PIPE_CAP: usize = 16 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Broker,
}

impl Side {
    /// Index of the queue this side writes to.
    fn out(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Broker => 1,
        }
    }
    fn inq(self) -> usize {
        1 - self.out()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    Fin,
    Reset,
}

#[derive(Debug, Default)]
struct Pipe {
    bytes: VecDeque<u8>,
    /// Bytes this direction may still carry before the wire is cut.
    budget: Option<u64>,
    /// The writer shut this direction down (FIN).
    shut: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

#[derive(Debug)]
pub(crate) struct Wire {
    pub id: u64,
    /// Index 0: client → broker; 1: broker → client.
    pipes: [Pipe; 2],
    closed: Option<Close>,
    /// How the wire closes when a budget runs out.
    cut_kind: Close,
    net: Arc<Mutex<NetState>>,
}

impl Wire {
    fn wake(&mut self) {
        for p in &mut self.pipes {
            if let Some(w) = p.reader.take() {
                w.wake();
            }
            if let Some(w) = p.writer.take() {
                w.wake();
            }
        }
    }

    pub(crate) fn close(&mut self, how: Close) {
        if self.closed.is_none() {
            self.closed = Some(how);
        }
        if how == Close::Reset {
            for p in &mut self.pipes {
                p.bytes.clear();
            }
        }
        self.wake();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_some()
    }
}

/// What a fault injector can change in the network.
#[derive(Debug, Default)]
pub(crate) struct NetState {
    next_id: u64,
    /// The broker accepts connections.
    pub listening: bool,
    /// Bytes are held, not delivered, per direction (0: to the broker, 1: to the
    /// client); both: a blackhole, one: a half-open connection.
    pub hold: [bool; 2],
    /// Cuts armed for the next connections: (direction index, bytes, how).
    pub cut_next: VecDeque<(usize, u64, Close)>,
    /// Open wires (closed ones are dropped lazily).
    wires: Vec<Arc<Mutex<Wire>>>,
    /// Connections for the broker to serve.
    accept: Option<mpsc::UnboundedSender<End>>,
}

/// The network: cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Net(Arc<Mutex<NetState>>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Net {
    pub(crate) fn new() -> Net {
        Net(Arc::new(Mutex::new(NetState::default())))
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, NetState> {
        lock(&self.0)
    }

    /// The broker starts listening: connections go to the returned receiver.
    pub(crate) fn listen(&self) -> mpsc::UnboundedReceiver<End> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut s = self.state();
        s.accept = Some(tx);
        s.listening = true;
        rx
    }

    /// The broker stops listening and every open connection is reset.
    pub(crate) fn broker_down(&self) {
        let wires = {
            let mut s = self.state();
            s.listening = false;
            s.accept = None;
            std::mem::take(&mut s.wires)
        };
        for w in wires {
            lock(&w).close(Close::Reset);
        }
    }

    /// Open connections (the newest last).
    pub(crate) fn open_wires(&self) -> Vec<Arc<Mutex<Wire>>> {
        let mut s = self.state();
        s.wires.retain(|w| !lock(w).is_closed());
        s.wires.clone()
    }

    /// Cut the newest open connection after `bytes` more bytes in direction `dir`.
    pub(crate) fn cut_after(&self, dir: usize, bytes: u64, how: Close) -> bool {
        let Some(w) = self.open_wires().pop() else {
            return false;
        };
        let mut w = lock(&w);
        w.cut_kind = how;
        w.pipes[dir].budget = Some(bytes);
        if bytes == 0 {
            w.close(how);
        }
        true
    }

    /// Hold the bytes of direction `dir` (or let held bytes flow again).
    pub(crate) fn hold(&self, dir: usize, on: bool) {
        self.state().hold[dir] = on;
        if !on {
            for w in self.open_wires() {
                lock(&w).wake();
            }
        }
    }

    /// The client's dialer: a connection, or refused while the broker does not listen.
    pub(crate) fn dial(&self) -> io::Result<End> {
        let mut s = self.state();
        let Some(accept) = s.accept.clone().filter(|_| s.listening) else {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "simulated broker is down",
            ));
        };
        s.next_id += 1;
        let mut wire = Wire {
            id: s.next_id,
            pipes: [Pipe::default(), Pipe::default()],
            closed: None,
            cut_kind: Close::Fin,
            net: self.0.clone(),
        };
        if let Some((dir, bytes, how)) = s.cut_next.pop_front() {
            wire.pipes[dir].budget = Some(bytes);
            wire.cut_kind = how;
        }
        let wire = Arc::new(Mutex::new(wire));
        s.wires.push(wire.clone());
        drop(s);
        let _ = accept.send(End {
            wire: wire.clone(),
            side: Side::Broker,
        });
        Ok(End {
            wire,
            side: Side::Client,
        })
    }
}

/// One side of a connection.
#[derive(Debug)]
pub(crate) struct End {
    pub wire: Arc<Mutex<Wire>>,
    side: Side,
}

impl End {
    pub(crate) fn id(&self) -> u64 {
        lock(&self.wire).id
    }
}

impl Drop for End {
    fn drop(&mut self) {
        // A dropped socket closes the connection (the process or the broker let go of it).
        lock(&self.wire).close(Close::Fin);
    }
}

impl AsyncRead for End {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut w = lock(&self.wire);
        if w.closed == Some(Close::Reset) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        let q = self.side.inq();
        let blackhole = lock(&w.net).hold[q];
        let pipe = &mut w.pipes[q];
        if !blackhole && !pipe.bytes.is_empty() {
            let n = pipe.bytes.len().min(buf.remaining());
            let (a, b) = pipe.bytes.as_slices();
            let from_a = n.min(a.len());
            buf.put_slice(&a[..from_a]);
            buf.put_slice(&b[..n - from_a]);
            pipe.bytes.drain(..n);
            if let Some(wk) = pipe.writer.take() {
                wk.wake();
            }
            return Poll::Ready(Ok(()));
        }
        if (w.closed.is_some() || w.pipes[q].shut) && !blackhole {
            return Poll::Ready(Ok(()));
        }
        w.pipes[q].reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for End {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut w = lock(&self.wire);
        match w.closed {
            Some(Close::Reset) => return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
            Some(Close::Fin) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            None => {}
        }
        let o = self.side.out();
        let room = PIPE_CAP.saturating_sub(w.pipes[o].bytes.len());
        if room == 0 {
            w.pipes[o].writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = buf.len().min(room);
        let mut cut = false;
        if let Some(budget) = w.pipes[o].budget.as_mut() {
            if (n as u64) >= *budget {
                n = *budget as usize;
                cut = true;
            }
            *budget -= n as u64;
        }
        w.pipes[o].bytes.extend(&buf[..n]);
        if let Some(wk) = w.pipes[o].reader.take() {
            wk.wake();
        }
        if cut {
            let how = w.cut_kind;
            w.close(how);
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut w = lock(&self.wire);
        let o = self.side.out();
        w.pipes[o].shut = true;
        if let Some(wk) = w.pipes[o].reader.take() {
            wk.wake();
        }
        Poll::Ready(Ok(()))
    }
}
