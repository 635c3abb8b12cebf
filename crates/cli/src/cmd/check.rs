//! `mqlink check -c FILE`: validate a config and print the plan, without connecting.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Config file (.yaml, .yml or .toml).
    #[arg(short = 'c', long)]
    config: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    Err(crate::exit::usage(format!(
        "{}: config files are not supported yet",
        args.config.display()
    )))
}
