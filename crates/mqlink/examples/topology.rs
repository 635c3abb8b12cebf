//! Embed the whole mqlink daemon in an application: start a [`Topology`] from a config
//! file, run until ctrl-c, then stop with the same staged shutdown as `mqlink run`.
//!
//! ```text
//! cargo run -p mqlink --example topology -- examples/octoprint.yaml
//! ```
//!
//! The config must name a remote broker (`broker.url: mqtt://...`): the embedded broker
//! belongs to the `mqlink` binary.

use std::time::Duration;

use mqlink::topology::{self, Topology};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os().nth(1).ok_or("usage: topology CONFIG")?;
    let config = topology::load(Some(path.as_ref()))?;
    let mut running = Topology::new(config).start().await?;
    println!("running; HTTP API on {:?}", running.http_addr());
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        r = running.finished() => r?,
    }
    running.stop(Duration::from_secs(10)).await;
    Ok(())
}
