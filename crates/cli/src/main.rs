//! `mqlink`: the command line. Thin: parsing, logging, exit codes; the work lives in the
//! `mqlink` library and in one file per subcommand under `cmd/`.

mod cmd;
mod embedded;
mod exit;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

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
/// binary is `mqlink pub` / `mqlink sub`, so it can stand in for mosquitto-clients. For pub
/// and sub, however invoked, the options file of mosquitto_pub/sub goes before the command
/// line's options. Returns the arguments and, for pub/sub, the mosquitto tool followed.
fn argv() -> (Vec<std::ffi::OsString>, Option<&'static str>) {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".exe").unwrap_or(n).to_string());
    let sub = match invoked.as_deref() {
        Some("mosquitto_pub") => Some("pub"),
        Some("mosquitto_sub") => Some("sub"),
        _ => None,
    };
    let at = if let Some(sub) = sub {
        // Usage lines then say `mqlink sub`, the command that runs.
        args[0] = "mqlink".into();
        args.insert(1, sub.into());
        1
    } else {
        // Skip the global options to find the subcommand.
        let mut i = 1;
        while let Some(a) = args.get(i).and_then(|a| a.to_str()) {
            match a {
                "--log-format" | "--log-level" => i += 2,
                a if a.starts_with("--log-") => i += 1,
                _ => break,
            }
        }
        i
    };
    let tool = match args.get(at).and_then(|a| a.to_str()) {
        Some("pub") => "mosquitto_pub",
        Some("sub") => "mosquitto_sub",
        _ => return (args, None),
    };
    let defaults = cmd::options_file::args(tool);
    let rest = args.split_off(at + 1);
    args.extend(defaults);
    args.extend(rest);
    (args, Some(tool))
}

/// A command-line error. pub and sub exit 1 as mosquitto_pub/sub do (also as `mqlink
/// pub`/`mqlink sub`: one habit for both spellings), with mosquitto's message for an
/// unknown option; the other commands keep clap's exit code 2.
fn usage_error(e: clap::Error, tool: Option<&'static str>) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let Some(tool) = tool.filter(|_| {
        !matches!(
            e.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        )
    }) else {
        e.exit()
    };
    match (e.kind(), e.get(ContextKind::InvalidArg)) {
        (ErrorKind::UnknownArgument, Some(ContextValue::String(arg))) => {
            eprintln!("Error: Unknown option '{arg}'.\n\nUse '{tool} --help' to see usage.");
        }
        _ => {
            let _ = e.print();
        }
    }
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let (args, tool) = argv();
    let matches = match Cli::command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => return usage_error(e, tool),
    };
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e.format(&mut Cli::command()), tool),
    };
    // pub/sub read -h, -p, -L and --unix in order, as mosquitto does: the derived
    // arguments lose the order, the matches keep it.
    if let Some((_, m)) = matches.subcommand() {
        match &mut cli.command {
            Command::Pub(a) => a.conn.positions = cmd::mosquitto_args::Positions::from_matches(m),
            Command::Sub(a) => a.conn.positions = cmd::mosquitto_args::Positions::from_matches(m),
            _ => {}
        }
    }
    // One crypto provider for the whole process, before anything touches TLS: crates that
    // bring their own would otherwise make the first handshake panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The short-lived tools stay quiet unless something is wrong; the daemon says more.
    // pub/sub say what went wrong once, as mosquitto does, in their final error line: the
    // engine's per-attempt connection warnings would repeat it.
    let default_level = match &cli.command {
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
