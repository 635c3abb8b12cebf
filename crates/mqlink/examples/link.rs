//! mqlink as a library: emit events durably and subscribe, from the same config as the
//! daemon.
//!
//! ```sh
//! cargo run -p mqlink --example link -- mqtt://127.0.0.1:1883
//! ```

use std::error::Error;

use mqlink::Link;
use mqlink::config::{self, Format};
use mqlink::mqtt::codec::QoS;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let spool = std::env::temp_dir().join("mqlink-example-spool");
    let yaml = format!(
        "broker: {{url: '{url}'}}\nspool: {{dir: '{}'}}\nroutes:\n  - {{match: ['*'], topic: 'example/{{event}}'}}\n",
        spool.display()
    );
    let config = config::from_str(&yaml, Format::Yaml, "example")?;

    // Opening does the synchronous part (spool, TLS files); the tasks run where we say.
    let (link, tasks) = Link::open(&config)?;
    let stop = CancellationToken::new();
    let running = tokio::spawn(tasks.run(stop.clone()));

    // Many handlers may watch the same or overlapping filters; each gets every message.
    let mut all = link.subscribe("example/#", QoS::AtLeastOnce).await?;
    let mut greetings = link.subscribe("example/hello", QoS::AtLeastOnce).await?;

    // Returns once the event is on disk; it is published (and retried) from there.
    let accepted = link.emit("hello", json!({"who": "world"})).await?;
    println!("accepted as spool record {}", accepted.first_id);

    for rx in [&mut all, &mut greetings] {
        if let Some(m) = rx.recv().await {
            println!("{} {}", m.topic, String::from_utf8_lossy(&m.payload));
        }
    }
    stop.cancel();
    running.await??;
    Ok(())
}
