//! Library throughput for `bench/run.py`: `Link::emit` COUNT events from CONCURRENCY tasks,
//! each returning only once its event is durably in the spool, then wait until the broker
//! acknowledged all of them. Payload fields follow the `mqlink bench` format so a
//! `mqlink bench --publishers 0` subscriber can count them end to end.
//!
//! `cargo run --release -p mqlink --example emit_bench -- CONFIG EVENT COUNT [CONCURRENCY] [SIZE]`

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mqlink::Link;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 3 {
        eprintln!("usage: emit_bench CONFIG EVENT COUNT [CONCURRENCY] [SIZE]");
        std::process::exit(2);
    }
    let config = mqlink::config::load(std::path::Path::new(&a[0]))?;
    let event: Arc<str> = Arc::from(a[1].as_str());
    let count: u64 = a[2].parse()?;
    let concurrency: u64 = a.get(3).map_or(Ok(64), |s| s.parse())?;
    let size: usize = a.get(4).map_or(Ok(100), |s| s.parse())?;

    let (link, tasks) = Link::open(&config)?;
    let stop = CancellationToken::new();
    let running = tokio::spawn(tasks.run(stop.clone()));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (link, event) = (link.clone(), event.clone());
        workers.spawn(async move {
            let mut seq = w;
            while seq < count {
                // The pad brings the serialized event near SIZE bytes.
                let pad = "x".repeat(size.saturating_sub(60));
                let fields = json!({"pub": 0, "seq": seq, "ts": now_ns(), "pad": pad});
                link.emit(&event, fields).await?;
                seq += concurrency;
            }
            Ok::<(), mqlink::IngestError>(())
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    let accepted = start.elapsed().as_secs_f64();
    let stats = link.publish_stats().clone();
    let acked = || {
        stats
            .acknowledged
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    // The publish counters are plain atomics with nothing to await; a 2 ms poll bounds the
    // measured end time's error to 2 ms.
    while acked() < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let done = start.elapsed().as_secs_f64();
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
    println!(
        "{}",
        json!({"accepted": count, "accept_secs": accepted, "accept_rate": count as f64 / accepted,
               "acknowledged": acked(), "ack_secs": done, "ack_rate": acked() as f64 / done})
    );
    if acked() < count {
        std::process::exit(1);
    }
    Ok(())
}
