//! The accept loop: at most `max_connections` connections (the oldest idle one is evicted
//! to admit a new one, so silent clients cannot lock out good ones), request headers within
//! the header timeout, in-flight requests finish on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One accepted connection, as the accept loop sees it.
struct Slot {
    /// Requests in progress on the connection.
    busy: AtomicUsize,
    /// Cancelled to evict the connection.
    evict: CancellationToken,
}

/// Serve on `listener` until `shutdown` is cancelled; in-flight requests finish.
///
/// At most `max_connections` connections (the oldest idle one is dropped to admit a new
/// one); request headers must arrive within `header_read_timeout`; a whole request within
/// the request timeout (see `router`).
///
/// # Errors
/// I/O errors of the server.
pub(crate) async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    max_connections: usize,
    header_read_timeout: Duration,
) -> std::io::Result<()> {
    let max_connections = max_connections.max(1);
    let mut conns = tokio::task::JoinSet::new();
    // Accepted connections, oldest first; entries whose task ended are skipped lazily.
    let mut slots: std::collections::VecDeque<Arc<Slot>> = std::collections::VecDeque::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    loop {
        while conns.try_join_next().is_some() {}
        if slots.len() > max_connections {
            slots.retain(|s| !s.evict.is_cancelled() && Arc::strong_count(s) > 1);
        }
        if conns.len() >= max_connections {
            slots.retain(|s| !s.evict.is_cancelled() && Arc::strong_count(s) > 1);
            let idle = slots
                .iter()
                .position(|s| s.busy.load(Ordering::Acquire) == 0);
            if let Some(i) = idle.and_then(|i| slots.remove(i)) {
                tracing::debug!("connection limit reached; dropping the oldest idle connection");
                i.evict.cancel();
                let _ = conns.join_next().await;
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = conns.join_next() => continue,
            }
        }
        let (stream, _peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = Arc::new(Slot {
            busy: AtomicUsize::new(0),
            evict: CancellationToken::new(),
        });
        slots.push_back(slot.clone());
        let svc_slot = slot.clone();
        let router = router.clone();
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let slot = svc_slot.clone();
            slot.busy.fetch_add(1, Ordering::AcqRel);
            let mut router = router.clone();
            async move {
                let r = tower_service::Service::call(&mut router, req.map(Body::new)).await;
                slot.busy.fetch_sub(1, Ordering::AcqRel);
                r
            }
        });
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = slot.evict.cancelled() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    // In-flight requests finish (the daemon's shutdown deadline bounds this).
    while conns.join_next().await.is_some() {}
    Ok(())
}
