//! A Kafka-protocol broker for bench/run.py's Kafka rows when no real one is built:
//! librdkafka's mock cluster (`rdkafka::mocking::MockCluster`, the one librdkafka's own
//! tests use), in memory, inside this process.
//!
//! ```text
//! kafka-mock [BROKERS]   start BROKERS (default 1) mock brokers on free loopback ports,
//!                        print their bootstrap list on one line, then serve stdin:
//!   create TOPIC         a topic with one partition (the mock has no CreateTopics API);
//!                        answers `ok` or `error: …` on one line
//!   (end of input)       stop
//! ```
//!
//! The connector and the reference producer both write to it over TCP. It is not a
//! durable Kafka: records live in this process's memory, nothing is replicated or
//! written to disk, so its figures compare clients, not brokers.

use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

fn main() -> ExitCode {
    let brokers: i32 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 1,
        Some(Ok(n)) if (1..=16).contains(&n) => n,
        Some(_) => {
            eprintln!("usage: kafka-mock [BROKERS 1..=16]");
            return ExitCode::from(2);
        }
    };
    let mock: MockCluster<'static, DefaultProducerContext> = match MockCluster::new(brokers) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("kafka-mock: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    if writeln!(out, "{}", mock.bootstrap_servers())
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    // The parent closes stdin (or exits) to stop the cluster.
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["create", topic] => match mock.create_topic(topic, 1, brokers.min(3)) {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("error: {e}"),
            },
            _ => format!("error: unknown command '{line}' (create TOPIC)"),
        };
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    drop(mock);
    ExitCode::SUCCESS
}
