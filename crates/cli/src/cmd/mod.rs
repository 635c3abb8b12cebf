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

/// Resolves on ctrl-c or SIGTERM. The handlers are installed when this is called, not
/// when it is first awaited: a daemon that takes the future before it starts its work is
/// told of a signal that comes while it starts, instead of being killed by the signal's
/// default action (a SIGTERM right after `mqlink run` published its birth message ended
/// the process without its drain or its clean-shutdown message).
pub fn terminated() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                // No handler could be installed: only the default actions remain.
                _ => std::future::pending().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
