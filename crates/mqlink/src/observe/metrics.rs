//! The Prometheus exposition of the [`Observer`]: read at scrape time, nothing stored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Observer;
use crate::connector::ConnectorStats;
use crate::mqtt::client::LinkState;
use crate::observe::meter::PollStats;

/// Reads the [`Observer`] at scrape time; register it with a `prometheus_client` registry.
#[derive(Debug)]
pub(crate) struct MetricsCollector(pub Arc<Observer>);

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter_family(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(Vec<(&'static str, String)>, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in values {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for MetricsCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let o = &self.0;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut e,
            "mqlink_events_accepted",
            "Events accepted into the spool.",
            g(&o.ingest.accepted),
        )?;
        let rejected: Vec<_> = o
            .rejected()
            .iter()
            .map(|(r, n)| (vec![("reason", r.to_string())], *n))
            .collect();
        counter_family(
            &mut e,
            "mqlink_events_rejected",
            "Events refused, by reason.",
            &rejected,
        )?;

        let sp = o.spool.stats();
        gauge(
            &mut e,
            "mqlink_spool_bytes",
            "Bytes held in the spool (unacknowledged).",
            sp.bytes as i64,
        )?;
        gauge(
            &mut e,
            "mqlink_spool_records",
            "Records in the spool not yet acknowledged.",
            sp.records as i64,
        )?;
        counter(
            &mut e,
            "mqlink_spool_dropped",
            "Records dropped by the drop_oldest policy.",
            sp.dropped,
        )?;
        counter(
            &mut e,
            "mqlink_spool_blocked",
            "Appends that waited for space (block policy).",
            sp.blocked,
        )?;

        let p = &o.publish;
        let by_qos = |a: &[AtomicU64; 3]| -> Vec<(Vec<(&'static str, String)>, u64)> {
            (0..3)
                .map(|q| (vec![("qos", q.to_string())], a[q].load(Ordering::Relaxed)))
                .collect()
        };
        counter_family(
            &mut e,
            "mqlink_messages_published",
            "Messages handed to the broker, by QoS.",
            &by_qos(&p.published),
        )?;
        counter_family(
            &mut e,
            "mqlink_messages_acknowledged",
            "Messages the broker acknowledged, by QoS.",
            &by_qos(&p.acknowledged),
        )?;
        let codes: Vec<_> = p
            .rejected_by_code
            .lock()
            .unwrap_or_else(|x| x.into_inner())
            .iter()
            .map(|(code, n)| (vec![("reason_code", format!("0x{code:02x}"))], *n))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        counter_family(
            &mut e,
            "mqlink_broker_rejections",
            "Messages the broker refused, by MQTT 5 reason code (dead-lettered).",
            &codes,
        )?;
        counter(
            &mut e,
            "mqlink_dead_lettered",
            "Messages moved to the dead-letter file.",
            g(&p.rejected) + g(&p.undecodable),
        )?;
        counter(
            &mut e,
            "mqlink_publish_retried",
            "Transient broker refusals (quota, busy, receive maximum, rate); each message is published again after a backoff.",
            g(&p.retried),
        )?;
        gauge(
            &mut e,
            "mqlink_publish_inflight",
            "Messages handed to the broker connection and not yet decided.",
            g(&p.inflight) as i64,
        )?;
        gauge(
            &mut e,
            "mqlink_publish_inflight_bytes",
            "Payload bytes read from the spool ahead of the broker's verdicts.",
            g(&p.inflight_bytes) as i64,
        )?;
        gauge(
            &mut e,
            "mqlink_publisher_healthy",
            "1 while the publisher makes progress; 0 when it failed or is stalled.",
            i64::from(o.publisher_health().is_ok()),
        )?;
        let (sum, count, buckets) = p.latency.snapshot();
        let mut m = e.encode_descriptor(
            "mqlink_publish_latency_seconds",
            "Time from acceptance to the broker's acknowledgement.",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<Vec<(String, String)>>(sum, count, &buckets, None)?;

        let connected = matches!(&*o.link.borrow(), LinkState::Connected { .. });
        gauge(
            &mut e,
            "mqlink_broker_connected",
            "1 while connected to the broker.",
            i64::from(connected),
        )?;
        counter(
            &mut e,
            "mqlink_mqtt_qos0_dropped",
            "Incoming QoS 0 messages the daemon's MQTT connection dropped while a SUBACK was awaited behind more than it holds (64 MiB).",
            g(&o.mqtt.qos0_dropped),
        )?;
        counter(
            &mut e,
            "mqlink_broker_reconnects",
            "Successful connections after the first.",
            g(&o.connects).saturating_sub(1),
        )?;

        let failures: Vec<_> = o
            .connect_failures
            .lock()
            .unwrap_or_else(|x| x.into_inner())
            .iter()
            .map(|(cause, n)| (vec![("cause", cause.to_string())], *n))
            .collect();
        counter_family(
            &mut e,
            "mqlink_broker_link_failures",
            "Failed connection attempts and lost connections, by cause.",
            &failures,
        )?;
        let connectors = o
            .connectors
            .read()
            .unwrap_or_else(|x| x.into_inner())
            .clone();
        type Pick = fn(&ConnectorStats) -> &AtomicU64;
        let per: [(&str, &str, Pick); 8] = [
            (
                "mqlink_connector_records_in",
                "Messages received by a connector.",
                |s| &s.records_in,
            ),
            (
                "mqlink_connector_records_out",
                "Records confirmed by a connector's sink.",
                |s| &s.records_out,
            ),
            (
                "mqlink_connector_filtered",
                "Records dropped by a connector's filter.",
                |s| &s.filtered,
            ),
            (
                "mqlink_connector_dead_lettered",
                "Records a connector dead-lettered.",
                |s| &s.dead_lettered,
            ),
            (
                "mqlink_connector_sink_errors",
                "Failed sink deliveries (retried).",
                |s| &s.sink_errors,
            ),
            (
                "mqlink_connector_acked",
                "Messages a connector acknowledged to the broker.",
                |s| &s.acked,
            ),
            (
                "mqlink_connector_dropped",
                "Records that failed with no dead-letter file: logged and lost.",
                |s| &s.dropped,
            ),
            (
                "mqlink_connector_qos0_dropped",
                "Incoming QoS 0 messages a connector's MQTT engine dropped while it awaited a SUBACK behind more than it holds (64 MiB).",
                |s| &s.mqtt.qos0_dropped,
            ),
        ];
        for (name, help, pick) in per {
            let values: Vec<_> = connectors
                .iter()
                .map(|c| {
                    (
                        vec![
                            ("connector", c.name.clone()),
                            ("sink", c.sink_kind.to_string()),
                        ],
                        pick(&c.stats).load(Ordering::Relaxed),
                    )
                })
                .collect();
            counter_family(&mut e, name, help, &values)?;
        }
        let polls = o.polls.read().unwrap_or_else(|x| x.into_inner()).clone();
        let pv = |f: fn(&PollStats) -> &AtomicU64| -> Vec<(Vec<(&'static str, String)>, u64)> {
            polls
                .iter()
                .enumerate()
                .map(|(i, s)| (vec![("poll", i.to_string())], f(s).load(Ordering::Relaxed)))
                .collect()
        };
        counter_family(
            &mut e,
            "mqlink_poll_requests",
            "Successful polls.",
            &pv(|s| &s.polls),
        )?;
        counter_family(
            &mut e,
            "mqlink_poll_failures",
            "Failed polls.",
            &pv(|s| &s.failures),
        )?;
        counter_family(
            &mut e,
            "mqlink_poll_events",
            "Events a poll produced.",
            &pv(|s| &s.events),
        )?;
        let embedded_dropped = o
            .embedded_queue_dropped
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.load(Ordering::Relaxed));
        if let Some(dropped) = embedded_dropped {
            counter(
                &mut e,
                "mqlink_embedded_queue_dropped",
                "Messages the embedded broker dropped from full client queues (oldest first).",
                dropped,
            )?;
        }
        gauge(
            &mut e,
            "mqlink_uptime_seconds",
            "Seconds since start.",
            o.started.elapsed().as_secs() as i64,
        )?;
        Ok(())
    }
}

/// Render the Prometheus text exposition of `observer`.
pub(crate) fn render_metrics(observer: &Arc<Observer>) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(MetricsCollector(observer.clone())));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use mqlink_spool::{Spool, SpoolOptions};

    use super::*;
    use crate::connector::ConnectorStats;
    use crate::mqtt::client::ClientStats;
    use crate::observe::meter::PollStats;
    use crate::observe::meter::TopicTracker;
    use crate::observe::{ConnectorView, Facts};

    #[test]
    fn connector_and_engine_drops_and_poll_events_are_exported() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
        let (_tx, link) = tokio::sync::watch::channel(LinkState::Connecting);
        let mqtt = Arc::new(ClientStats::default());
        let facts = Facts {
            broker: "mqtt://b".into(),
            spool_dir: "d".into(),
            spool_max_bytes: 1,
            routes: vec![],
        };
        let o = Arc::new(Observer::new(
            facts.clone(),
            link,
            Arc::default(),
            Arc::default(),
            spool,
            Arc::new(TopicTracker::default()),
            mqtt.clone(),
        ));
        let stats = Arc::new(ConnectorStats::default());
        stats.dropped.store(3, Ordering::Relaxed);
        stats.mqtt.qos0_dropped.store(4, Ordering::Relaxed);
        mqtt.qos0_dropped.store(6, Ordering::Relaxed);
        let poll = Arc::new(PollStats::default());
        poll.events.store(5, Ordering::Relaxed);
        let view = ConnectorView {
            name: "c".into(),
            sink: "stdout".into(),
            sink_kind: "stdout",
            stats,
        };
        o.set_parts(facts, vec![view], vec![poll]);
        let text = render_metrics(&o);
        assert!(
            text.contains("mqlink_connector_dropped_total{connector=\"c\",sink=\"stdout\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("mqlink_connector_qos0_dropped_total{connector=\"c\",sink=\"stdout\"} 4"),
            "{text}"
        );
        assert!(text.contains("mqlink_mqtt_qos0_dropped_total 6"), "{text}");
        assert!(
            text.contains("mqlink_poll_events_total{poll=\"0\"} 5"),
            "{text}"
        );
    }
}
