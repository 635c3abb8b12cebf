//! A reference Kafka producer for bench/run.py in Rust: librdkafka through rdkafka (the
//! same client library and version as mqlink's Kafka sink), with the sink's durability
//! settings (`acks=all`, `enable.idempotence=true`), so a row shows what the client and
//! broker allow without the Python per-record cost of the confluent-kafka reference.
//!
//! ```text
//! kafka-produce BROKERS TOPIC FILE KEY   one record per line of FILE (without the
//!                                        newline), key KEY; waits for every delivery
//!                                        report; exit 1 unless all succeeded
//! ```

use std::io::BufRead as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};

/// Counts failed delivery reports.
struct Reports {
    failed: AtomicU64,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, topic, path, key] = &args[..] else {
        eprintln!("usage: kafka-produce BROKERS TOPIC FILE KEY");
        return ExitCode::from(2);
    };
    match run(brokers, topic, path, key) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("kafka-produce: {failed} delivery reports failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kafka-produce: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(brokers: &str, topic: &str, path: &str, key: &str) -> Result<u64, String> {
    let producer: BaseProducer<Reports> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create_with_context(Reports {
            failed: AtomicU64::new(0),
        })
        .map_err(|e| e.to_string())?;
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    for line in std::io::BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| format!("{path}: {e}"))?;
        loop {
            match producer.send(BaseRecord::to(topic).payload(&line).key(key)) {
                Ok(()) => break,
                // The local queue is full: serve delivery reports until there is room.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.to_string()),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| format!("flush: {e}"))?;
    Ok(producer.context().failed.load(Ordering::Relaxed))
}
