//! One file per subcommand.

pub mod bench;
pub mod broker;
pub mod check;
pub mod mosquitto_args;
pub mod options_file;
pub mod packet_trace;
pub mod properties;
pub mod publish;
pub mod run;
pub mod sub_format;
pub mod subscribe;

/// Resolves on ctrl-c or SIGTERM.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
