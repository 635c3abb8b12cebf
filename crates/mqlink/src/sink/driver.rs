//! Connection tasks of sinks that reconnect by themselves (`redis`, `postgres`), polled by
//! the sink's [`Driver`] instead of being spawned.
//!
//! ```text
//!  sink ──connect──▶ (client handle, connection future) ──Tasks::run──▶ channel
//!   keeps Leased { handle, Lease }                                         │
//!  connector polls Driver: FuturesUnordered ◀──────────────────────────────┘
//!      each connection: runs until it ends, or CLOSE_GRACE after its Lease drops;
//!      the driver ends when the sink is gone and every connection has ended,
//!      or CLOSE_GRACE after the connector's io token is cancelled
//! ```
//!
//! A client library's connection future (tokio-postgres's `Connection`, redis-rs's
//! multiplexed pipeline driver) does the socket I/O for the handle the sink keeps. The
//! libraries' own `connect` helpers `tokio::spawn` it, outside the connector's shutdown
//! tree; here the sink hands it to [`Tasks::run`] and the connector polls it next to its
//! own loop, so a stopped connector leaves no task and no socket behind.
//!
//! Why the lease: both libraries' connection futures, once the handle is dropped, still
//! wait for the answers to requests in flight before they close. A server that hangs
//! (stopped, or gone without a reset) never answers, and a spawned connection task would
//! hold its socket forever. Here, once the sink lets go of a connection (an error, a
//! timeout, the sink dropped), the connection gets [`CLOSE_GRACE`] to finish and is then
//! dropped, which closes the socket.
//!
//! Bounded: at most [`MAX_LIVE`] connection futures at once. A new connection waits while
//! older ones are still closing (at most [`CLOSE_GRACE`] each), and that wait is covered
//! by the sink's own timeout.

use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Driver;

/// Connection futures polled at once: the live one plus a few that are closing.
pub(crate) const MAX_LIVE: usize = 4;

/// Once a connection is let go (or the connector stops), how long it may take to finish
/// requests in flight and say goodbye (PostgreSQL's Terminate message) before its socket
/// is simply closed.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The sink's side: hands connection futures to the driver.
#[derive(Debug, Clone)]
pub(crate) struct Tasks {
    tx: mpsc::Sender<Driver>,
}

/// The driver stopped (the connector is shutting down): no connection can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connector is stopping")]
pub(crate) struct Stopping;

impl Tasks {
    /// A task set and the driver that polls it until `shutdown`.
    pub(crate) fn new(shutdown: CancellationToken) -> (Tasks, Driver) {
        // One slot: the driver takes each future as soon as it has room for it.
        let (tx, rx) = mpsc::channel(1);
        (Tasks { tx }, Box::pin(drive(rx, shutdown)))
    }

    /// Have the driver poll `connection` until it ends, or until [`CLOSE_GRACE`] after
    /// the returned lease is dropped (keep it beside the connection's handle).
    ///
    /// # Errors
    /// [`Stopping`] when the driver has stopped.
    pub(crate) async fn run(&self, connection: Driver) -> Result<Lease, Stopping> {
        let (release, released) = oneshot::channel::<()>();
        let watched: Driver = Box::pin(async move {
            let mut connection = connection;
            tokio::select! {
                () = &mut connection => return,
                // The sender never sends: this fires when the lease is dropped.
                _ = released => {}
            }
            let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
        });
        self.tx.send(watched).await.map_err(|_| Stopping)?;
        Ok(Lease { _release: release })
    }
}

/// Held beside a connection's handle: dropping it starts the connection's
/// [`CLOSE_GRACE`].
#[derive(Debug)]
pub(crate) struct Lease {
    _release: oneshot::Sender<()>,
}

/// A connection handle with its lease, used as the handle (`Deref`): dropping it lets the
/// connection go.
#[derive(Debug)]
pub(crate) struct Leased<T> {
    handle: T,
    _lease: Lease,
}

impl<T> Leased<T> {
    pub(crate) fn new(handle: T, lease: Lease) -> Leased<T> {
        Leased {
            handle,
            _lease: lease,
        }
    }
}

impl<T> std::ops::Deref for Leased<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.handle
    }
}

impl<T> std::ops::DerefMut for Leased<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.handle
    }
}

async fn drive(mut rx: mpsc::Receiver<Driver>, shutdown: CancellationToken) {
    let mut live: FuturesUnordered<Driver> = FuturesUnordered::new();
    let mut open = true;
    loop {
        if !open && live.is_empty() {
            // The sink is gone and every connection has closed.
            return;
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            next = rx.recv(), if open && live.len() < MAX_LIVE => match next {
                Some(conn) => live.push(conn),
                None => open = false,
            },
            Some(()) = live.next(), if !live.is_empty() => {}
        }
    }
    // The connector drops the sink before it cancels the token, so the handles are gone
    // and each connection is closing: let them finish, within a deadline.
    drop(rx);
    let _ = tokio::time::timeout(CLOSE_GRACE, async { while live.next().await.is_some() {} }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_driver_drops_connections_that_outlive_the_grace_after_shutdown() {
        let stop = CancellationToken::new();
        let (tasks, driver) = Tasks::new(stop.clone());
        let driver = tokio::spawn(driver);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let _lease = tasks
            .run(Box::pin(async move {
                // Holds `tx` until dropped: a connection that never ends by itself.
                std::future::pending::<()>().await;
                drop(tx);
            }))
            .await
            .unwrap();
        stop.cancel();
        // The future was dropped (its sender with it) and the driver ended.
        assert!(rx.await.is_err());
        driver.await.unwrap();
        assert!(matches!(tasks.run(Box::pin(async {})).await, Err(Stopping)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_driver_ends_when_the_sink_is_gone_and_its_connections_closed() {
        let (tasks, driver) = Tasks::new(CancellationToken::new());
        let driver = tokio::spawn(driver);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let lease = tasks
            .run(Box::pin(async move {
                let _ = rx.await;
            }))
            .await
            .unwrap();
        drop(tasks);
        // Still polling the open connection.
        tokio::task::yield_now().await;
        assert!(!driver.is_finished());
        tx.send(()).unwrap();
        driver.await.unwrap();
        drop(lease);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_let_go_is_dropped_after_the_grace_even_if_it_hangs() {
        let (tasks, driver) = Tasks::new(CancellationToken::new());
        let driver = tokio::spawn(driver);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let lease = tasks
            .run(Box::pin(async move {
                // A connection waiting for an answer that never comes.
                std::future::pending::<()>().await;
                drop(tx);
            }))
            .await
            .unwrap();
        let start = tokio::time::Instant::now();
        drop(lease);
        assert!(rx.await.is_err(), "the connection future was dropped");
        assert!(start.elapsed() >= CLOSE_GRACE);
        drop(tasks);
        driver.await.unwrap();
    }
}
