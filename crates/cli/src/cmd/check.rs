//! `mqlink check -c FILE`: validate a config and print the resolved plan, without
//! connecting anywhere. Secrets are never printed.

use std::fmt::Write as _;
use std::path::PathBuf;

use mqlink::config::{BrokerTarget, Config, Fsync, Session, Transform};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Config file (.yaml, .yml or .toml).
    #[arg(short = 'c', long)]
    config: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = mqlink::topology::load(Some(&args.config))
        .map_err(|e| crate::exit::usage(e.to_string()))?;
    print!("{}", plan(&config));
    Ok(())
}

fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (u, size) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {u}", n / size);
        }
    }
    format!("{n} B")
}

pub fn plan(c: &Config) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}: OK", c.origin);
    let b = &c.broker;
    match &b.target {
        BrokerTarget::Embedded(e) => {
            let _ = writeln!(
                s,
                "broker: embedded, listening on {}{}{}{}",
                e.listen,
                e.ws_listen
                    .map(|w| format!(" and ws://{w}/mqtt"))
                    .unwrap_or_default(),
                e.tls
                    .as_ref()
                    .map(|t| format!(
                        " and mqtts://{}{}",
                        t.listen,
                        if t.require_client_cert {
                            " (client certificates required)"
                        } else {
                            ""
                        }
                    ))
                    .unwrap_or_default(),
                if e.username.is_some() {
                    ", password required"
                } else {
                    ""
                }
            );
        }
        BrokerTarget::Remote(url) => {
            let _ = writeln!(s, "broker: {url}");
        }
    }
    let _ = writeln!(
        s,
        "  client id {}, MQTT {:?}, {} session, keepalive {:?}, {} in flight, max packet {}{}",
        b.client_id,
        b.protocol,
        if b.session == Session::Clean {
            "clean"
        } else {
            "persistent"
        },
        b.keepalive,
        b.max_inflight,
        bytes(u64::from(b.max_packet_size)),
        if b.password.is_some() {
            ", password set"
        } else {
            ""
        }
    );
    if let Some(t) = &b.tls {
        let _ = writeln!(
            s,
            "  TLS: CA {}, client certificate {}{}",
            t.ca_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "system roots".into()),
            if t.client_auth.is_some() { "yes" } else { "no" },
            if t.insecure_skip_verify {
                ", VERIFICATION DISABLED"
            } else {
                ""
            }
        );
    }
    if let Some(l) = &b.lifecycle {
        let _ = writeln!(
            s,
            "  lifecycle: {} = '{}' on connect, '{}' as will and on shutdown (qos {}, retain {})",
            l.topic, l.online, l.offline, l.qos as u8, l.retain
        );
    }
    let sp = &c.spool;
    let fsync = match sp.fsync {
        Fsync::Always => "always".to_string(),
        Fsync::Interval(d) => format!("every {d:?}"),
        Fsync::Never => "never".to_string(),
    };
    let _ = writeln!(
        s,
        "spool: {} (max {}, when full: {:?}, fsync {fsync})",
        sp.dir.display(),
        bytes(sp.max_bytes),
        sp.on_full
    );
    let _ = writeln!(s, "sources:");
    match &c.sources.http {
        Some(h) => {
            let _ = writeln!(
                s,
                "  http: {} ({} token(s), max body {}, timeout {:?}, headers within {:?}, {} connections)",
                h.listen,
                h.tokens.len(),
                bytes(h.max_body),
                h.request_timeout,
                h.header_timeout,
                h.max_connections
            );
        }
        None => {
            let _ = writeln!(s, "  http: off");
        }
    }
    let _ = writeln!(s, "  stdin: {}", if c.sources.stdin { "on" } else { "off" });
    for p in &c.sources.poll {
        let _ = writeln!(
            s,
            "  poll: {} every {:?} as event '{}'",
            p.url, p.every, p.event
        );
    }
    let _ = writeln!(s, "routes:");
    for r in &c.routes {
        let globs: Vec<&str> = r.matches.iter().map(|g| g.as_str()).collect();
        let mut extras = Vec::new();
        if let Some(f) = &r.payload.event_field {
            extras.push(format!("event name in '{f}'"));
        }
        if let Some((f, _)) = &r.payload.timestamp_field {
            extras.push(format!("timestamp in '{f}'"));
        }
        let _ = writeln!(
            s,
            "  {}{}: [{}] → {} (qos {}, retain {}){}",
            r.name,
            if r.enabled { "" } else { " (disabled)" },
            globs.join(", "),
            r.topic.as_str(),
            r.qos as u8,
            r.retain,
            if extras.is_empty() {
                String::new()
            } else {
                format!("; {}", extras.join(", "))
            }
        );
    }
    if !c.connectors.is_empty() {
        let _ = writeln!(s, "connectors:");
    }
    for k in &c.connectors {
        let filters: Vec<&str> = k.subscribe.iter().map(|f| f.as_str()).collect();
        let sink = k.sink.describe();
        let transforms: Vec<String> = k
            .transforms
            .iter()
            .map(|t| match t {
                Transform::Filter(e) => format!("filter {}", e.code()),
                Transform::Map(e) => format!("map {}", e.code()),
                Transform::ArrayMap(e) => format!("arraymap {}", e.code()),
            })
            .collect();
        let _ = writeln!(
            s,
            "  {}: [{}] qos {} {:?} session as {} → {:?} records{} → {sink}",
            k.name,
            filters.join(", "),
            k.qos as u8,
            k.session,
            k.client_id,
            k.format,
            if transforms.is_empty() {
                String::new()
            } else {
                format!(" → {}", transforms.join(" | "))
            }
        );
    }
    s
}
