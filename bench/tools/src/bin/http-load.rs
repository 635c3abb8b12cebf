//! HTTP load for `bench/run.py`: POST events to the mqlink daemon over keep-alive
//! connections, as fast as it answers or at a fixed rate, and report what it accepted.
//!
//! `http-load ADDR single|batch|array EVENT COUNT CONNECTIONS BATCH SIZE RATE`
//!
//! `single` posts one event per request to `/v1/events/EVENT`; `batch` posts BATCH events
//! per request as NDJSON to `/v1/events`; `array` posts them as one JSON array (what a
//! Node-RED `http in → split` flow takes, and mqlink too). Each event carries the `mqlink bench` fields
//! (`pub` 0, a unique `seq`, `ts` = send time in ns) padded to about SIZE bytes, so a
//! `mqlink bench --publishers 0` subscriber counts them and measures latency from the
//! moment the request was sent. RATE is events per second in total (0: flat out). A
//! minimal HTTP/1.1 client over raw TCP keeps the load generator cheap next to the
//! daemon on a 2-core machine. Prints one JSON line; exit 1 unless every event got 202.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn usage() -> ! {
    eprintln!("usage: http-load ADDR single|batch|array EVENT COUNT CONNECTIONS BATCH SIZE RATE");
    std::process::exit(2)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Single,
    Ndjson,
    Array,
}

struct Plan {
    addr: String,
    mode: Mode,
    event: String,
    count: u64,
    batch: u64,
    size: usize,
    rate: f64,
}

fn event_json(plan: &Plan, seq: u64, with_name: bool) -> String {
    let head = if with_name {
        format!("{{\"event\":\"{}\",", plan.event)
    } else {
        "{".to_string()
    };
    let mut s = format!(
        "{head}\"pub\":0,\"seq\":{seq},\"ts\":{},\"pad\":\"",
        now_ns()
    );
    let pad = plan.size.saturating_sub(s.len() + 2);
    s.push_str(&"x".repeat(pad));
    s.push_str("\"}");
    s
}

/// Send one request and read the response; returns the status code.
async fn request(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    head: &str,
    body: &[u8],
) -> std::io::Result<u16> {
    let mut req = Vec::with_capacity(head.len() + body.len() + 64);
    req.extend_from_slice(head.as_bytes());
    req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    req.extend_from_slice(body);
    conn.write_all(&req).await?;
    buf.clear();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let headers = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status: u16 = headers
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let len: usize = headers
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 4096];
                let n = conn.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 8 {
        usage();
    }
    let num = |i: usize| -> f64 { a[i].parse().unwrap_or_else(|_| usage()) };
    let plan = Arc::new(Plan {
        addr: a[0].clone(),
        mode: match a[1].as_str() {
            "single" => Mode::Single,
            "batch" => Mode::Ndjson,
            "array" => Mode::Array,
            _ => usage(),
        },
        event: a[2].clone(),
        count: num(3) as u64,
        batch: (num(5) as u64).max(1),
        size: num(6) as usize,
        rate: num(7),
    });
    let connections = (num(4) as u64).max(1);
    let per_request = if plan.mode == Mode::Single {
        1
    } else {
        plan.batch
    };
    let requests = plan.count.div_ceil(per_request);
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (plan, next, accepted) = (plan.clone(), next.clone(), accepted.clone());
        tasks.spawn(async move {
            let mut conn = TcpStream::connect(&plan.addr).await?;
            conn.set_nodelay(true)?;
            let mut buf = Vec::with_capacity(8192);
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            loop {
                let r = next.fetch_add(1, Ordering::Relaxed);
                if r >= requests {
                    break;
                }
                let first = r * per_request;
                let last = (first + per_request).min(plan.count);
                if plan.rate > 0.0 {
                    let due = start + Duration::from_secs_f64(first as f64 / plan.rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let (head, body) = match plan.mode {
                    Mode::Ndjson => {
                        let mut body = String::new();
                        for seq in first..last {
                            body.push_str(&event_json(&plan, seq, true));
                            body.push('\n');
                        }
                        (
                            "POST /v1/events HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-ndjson\r\n"
                                .to_string(),
                            body,
                        )
                    }
                    Mode::Array => {
                        let events: Vec<String> =
                            (first..last).map(|seq| event_json(&plan, seq, true)).collect();
                        (
                            "POST /v1/events HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                                .to_string(),
                            format!("[{}]", events.join(",")),
                        )
                    }
                    Mode::Single => (
                        format!(
                            "POST /v1/events/{} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n",
                            plan.event
                        ),
                        event_json(&plan, first, false),
                    ),
                };
                let t = Instant::now();
                let status = request(&mut conn, &mut buf, &head, body.as_bytes()).await?;
                latencies.push(t.elapsed().as_micros() as u64);
                if status == 202 {
                    accepted.fetch_add(last - first, Ordering::Relaxed);
                } else {
                    failures += 1;
                    if failures == 1 {
                        eprintln!(
                            "http-load: status {status}: {}",
                            String::from_utf8_lossy(&buf[..buf.len().min(300)])
                        );
                    }
                }
            }
            Ok::<_, std::io::Error>((latencies, failures))
        });
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok((l, f))) => {
                latencies.extend(l);
                failures += f;
            }
            Ok(Err(e)) => {
                eprintln!("http-load: {e}");
                failures += 1;
            }
            Err(e) => {
                eprintln!("http-load: task: {e}");
                failures += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |q: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1]
    };
    let ok = accepted.load(Ordering::Relaxed);
    println!(
        "{{\"accepted\":{ok},\"failed_requests\":{failures},\"secs\":{secs},\"rate\":{},\"request_us\":{{\"p50\":{},\"p99\":{},\"max\":{}}}}}",
        ok as f64 / secs,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    if ok < plan.count || failures > 0 {
        std::process::exit(1);
    }
}
