//! `mqlink run`: the daemon.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Config file (.yaml, .yml or .toml); without one: embedded broker and defaults.
    #[arg(short = 'c', long)]
    config: Option<PathBuf>,
}

pub async fn run(_args: Args) -> anyhow::Result<()> {
    Err(crate::exit::usage("the daemon is not implemented yet"))
}
