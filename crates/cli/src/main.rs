//! `mqlink`: the command line. Thin: parsing, logging, exit codes; the work lives in the
//! `mqlink` library and in one file per subcommand under `cmd/`.

mod cmd;
mod conn;
mod embedded;
mod exit;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Link applications to MQTT brokers without losing a message.
#[derive(Parser)]
#[command(name = "mqlink", version, about, long_about = None, disable_version_flag = true)]
struct Cli {
    /// Print the version.
    #[arg(long, action = clap::ArgAction::Version)]
    version: Option<bool>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter, e.g. `info`, `debug`, `mqlink=debug,warn` (overrides RUST_LOG).
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: sources, routes, spool, publisher, connectors, HTTP API.
    Run(cmd::run::Args),
    /// Publish messages, like mosquitto_pub (exit 0 only if every message was confirmed).
    Pub(cmd::publish::Args),
    /// Subscribe and print messages, like mosquitto_sub.
    Sub(cmd::subscribe::Args),
    /// Run the embedded MQTT broker alone.
    Broker(cmd::broker::Args),
    /// Validate a config file and print what it would do, without connecting.
    Check(cmd::check::Args),
    /// Load generator against any broker: messages/s, latency percentiles, missing messages.
    Bench(cmd::bench::Args),
}

fn init_logging(format: LogFormat, level: Option<&str>, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
    };
    use std::io::IsTerminal;
    // Colours only for a terminal: log files and pipes get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Busybox-style: invoked as `mosquitto_pub` / `mosquitto_sub` (a symlink or a copy), the
/// binary is `mqlink pub` / `mqlink sub`, so it can stand in for mosquitto-clients.
fn argv() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".exe").unwrap_or(n).to_string());
    let sub = match invoked.as_deref() {
        Some("mosquitto_pub") => "pub",
        Some("mosquitto_sub") => "sub",
        _ => return args,
    };
    // Usage lines then say `mqlink sub`, the command that runs.
    args[0] = "mqlink".into();
    args.insert(1, sub.into());
    args
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(argv());
    // One crypto provider for the whole process, before anything touches TLS: crates that
    // bring their own would otherwise make the first handshake panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The short-lived tools stay quiet unless something is wrong; the daemon says more.
    // pub/sub say what went wrong once, as mosquitto does, in their final error line: the
    // engine's per-attempt connection warnings would repeat it.
    let default_level = match cli.command {
        Command::Run(_) | Command::Broker(_) => "info",
        Command::Pub(_) | Command::Sub(_) => "warn,mqlink::mqtt::client=error",
        _ => "warn",
    };
    init_logging(cli.log_format, cli.log_level.as_deref(), default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mqlink: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => cmd::run::run(args).await,
            Command::Pub(args) => cmd::publish::run(args).await,
            Command::Sub(args) => cmd::subscribe::run(args).await,
            Command::Broker(args) => cmd::broker::run(args).await,
            Command::Check(args) => cmd::check::run(args).await,
            Command::Bench(args) => cmd::bench::run(args).await,
        }
    });
    // Do not wait for blocking stdin readers and the like.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    exit::code(result)
}
