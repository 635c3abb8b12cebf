//! Validated configuration → runtime objects. The one place that knows how config
//! sections become engine options, so the publisher, connectors and tools connect alike.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::{self, BrokerTarget, Session};
use crate::mqtt::client::MqttOptions;
use crate::mqtt::codec::{Protocol, Publish, PublishProps, Will};
use crate::mqtt::tls::TlsOptions;
use crate::mqtt::url::BrokerUrl;

/// The URL a client uses to reach the embedded broker listening on `listen`.
pub(crate) fn embedded_url(listen: SocketAddr) -> BrokerUrl {
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        listen.ip().to_string()
    };
    BrokerUrl::parse(&format!(
        "mqtt://{}",
        SocketAddr::new(host.parse().unwrap_or(listen.ip()), listen.port())
    ))
    .unwrap_or_else(|_| unreachable_url(listen))
}

fn unreachable_url(listen: SocketAddr) -> BrokerUrl {
    // A socket address always formats as a valid host:port; keep a total function anyway.
    BrokerUrl {
        transport: crate::mqtt::url::Transport::Tcp,
        host: listen.ip().to_string(),
        port: listen.port(),
        path: "/mqtt".into(),
        username: None,
        password: None,
    }
}

/// The broker URL of a `broker` section.
pub(crate) fn broker_url(broker: &config::Broker) -> BrokerUrl {
    match &broker.target {
        BrokerTarget::Embedded(e) => embedded_url(e.listen),
        BrokerTarget::Remote(url) => url.clone(),
    }
}

/// Engine options for the daemon's publishing connection.
pub(crate) fn mqtt_options(broker: &config::Broker) -> MqttOptions {
    let mut o = MqttOptions::new(broker_url(broker));
    o.client_id = broker.client_id.clone();
    if broker.username.is_some() {
        o.username = broker.username.clone();
    }
    if let Some(p) = &broker.password {
        o.password = Some(p.expose().to_string());
    }
    if let BrokerTarget::Embedded(e) = &broker.target {
        o.username = e.username.clone();
        o.password = e.password.as_ref().map(|p| p.expose().to_string());
    }
    // `5` is the default and may fall back; a version asked for by name is kept.
    o.protocol = broker.protocol;
    o.fallback_to_311 = broker.protocol == Protocol::V5;
    o.keep_alive = broker.keepalive;
    o.clean_start = broker.session == Session::Clean;
    // This connection publishes QoS 1/2 from the spool: a new process must not resume the
    // session of an earlier one, whose packet ids it does not know (the spool sends again
    // whatever was not acknowledged).
    o.resume_at_start = false;
    o.session_expiry = broker.session_expiry;
    if let Some(t) = &broker.tls {
        o.tls = TlsOptions::from(t);
    }
    o.reconnect_min = broker.reconnect.min;
    o.reconnect_max = broker.reconnect.max;
    o.max_packet_size = broker.max_packet_size;
    o.max_inflight = broker.max_inflight;
    o.connect_timeout = broker.connect_timeout;
    if let Some(l) = &broker.lifecycle {
        o.will = Some(Will {
            topic: l.topic.clone(),
            payload: Bytes::from(l.offline.clone().into_bytes()),
            qos: l.qos,
            retain: l.retain,
            props: PublishProps::default(),
            delay: None,
        });
        o.birth = Some(lifecycle_message(l, &l.online));
    }
    o
}

/// The lifecycle message carrying `payload` (online or offline).
pub(crate) fn lifecycle_message(l: &config::Lifecycle, payload: &str) -> Publish {
    Publish {
        topic: Arc::from(l.topic.as_str()),
        payload: Bytes::from(payload.to_string().into_bytes()),
        qos: l.qos,
        retain: l.retain,
        dup: false,
        pid: None,
        props: PublishProps::default(),
    }
}

/// Engine options for a connector: the broker section, with the connector's own client
/// id, session and (optionally) URL. No lifecycle messages: those belong to the daemon's
/// publishing connection.
pub(crate) fn connector_options(c: &config::Connector, broker: &config::Broker) -> MqttOptions {
    let mut o = mqtt_options(broker);
    if let Some(url) = &c.broker {
        o.url = url.clone();
        if url.username.is_some() {
            o.username = url.username.clone();
            o.password = url.password.clone();
        }
    }
    o.client_id = c.client_id.clone();
    o.clean_start = c.session == Session::Clean;
    // A connector only subscribes: what the broker queued while it was away is the point
    // of its persistent session, so a new process resumes it.
    o.resume_at_start = true;
    o.session_expiry = c.session_expiry;
    o.will = None;
    o.birth = None;
    let window = connector_window(&c.sink.batching());
    o.receive_maximum = Some(window);
    o.delivery_capacity = usize::from(window);
    o
}

/// The connector's receive window: its MQTT 5 Receive Maximum (how many QoS 1/2 messages
/// the broker may have unacknowledged with it) and the size of its delivery buffer, the
/// same number.
///
/// Without a Receive Maximum, MQTT 5 means 65,535, and the broker decides what it sends:
/// Mosquitto 2.0.11 was seen sending 10,000 (its `max_inflight_messages`) and resending
/// 5,140 to a reconnecting connector before the SUBACK, more than the delivery buffer
/// (the engine keeps reading while a SUBACK is awaited, see `mqtt::client::backlog`, so
/// this no longer stalls it). With the window equal to the buffer, a broker that honours it never sends
/// more than the connector can hold. It covers the sink's pipeline (`in_flight`
/// batches plus the one being gathered) so batches stay full, with at least 1024, at
/// most 65,535 (the field's range).
pub(crate) fn connector_window(b: &crate::sink::Batching) -> u16 {
    let want = b
        .max
        .max(1)
        .saturating_mul(b.in_flight.max(1).saturating_add(1));
    u16::try_from(want.clamp(1024, usize::from(u16::MAX))).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_section_left_empty_gives_the_engines_own_defaults() {
        let cfg = config::from_str(
            "broker:\n  url: mqtt://b:1883\n",
            config::Format::Yaml,
            "t.yaml",
        )
        .unwrap();
        let daemon = mqtt_options(&cfg.broker);
        let engine = MqttOptions::new(broker_url(&cfg.broker));
        let limits = |o: &MqttOptions| {
            (
                o.protocol,
                o.fallback_to_311,
                o.keep_alive,
                o.reconnect_min,
                o.reconnect_max,
                o.max_packet_size,
                o.max_inflight,
                o.connect_timeout,
            )
        };
        assert_eq!(limits(&daemon), limits(&engine));
    }

    #[test]
    fn embedded_on_all_interfaces_is_reached_on_loopback() {
        let u = embedded_url("0.0.0.0:1999".parse().unwrap());
        assert_eq!(u.to_string(), "mqtt://127.0.0.1:1999");
    }

    #[test]
    fn lifecycle_becomes_will_and_birth() {
        let cfg = config::from_str(
            "broker:\n  url: mqtt://b:1883\n  lifecycle: {}\ntopic_prefix: octoPrint\n",
            config::Format::Yaml,
            "t.yaml",
        )
        .unwrap();
        let o = mqtt_options(&cfg.broker);
        let will = o.will.unwrap();
        assert_eq!(
            (will.topic.as_str(), &will.payload[..], will.retain),
            ("octoPrint/status", &b"offline"[..], true)
        );
        assert_eq!(&o.birth.unwrap().payload[..], b"online");
    }

    #[test]
    fn the_publishing_connection_never_resumes_an_earlier_process_session() {
        let c = crate::config::from_str(
            "broker: {url: 'mqtt://h', session: persistent}\n",
            crate::config::Format::Yaml,
            "t",
        )
        .unwrap();
        let o = mqtt_options(&c.broker);
        assert!(!o.clean_start && !o.resume_at_start);
    }

    #[test]
    fn persistent_connector_gets_its_own_id_and_session_expiry() {
        let cfg = config::from_str(
            "broker: {url: 'mqtt://b:1883'}\nconnectors:\n  - name: c1\n    subscribe: [a/#]\n    sink: {stdout: {}}\n",
            config::Format::Yaml,
            "t.yaml",
        )
        .unwrap();
        let o = connector_options(&cfg.connectors[0], &cfg.broker);
        assert!(o.client_id.ends_with("-c1"), "{}", o.client_id);
        assert!(!o.clean_start);
        assert!(
            o.resume_at_start,
            "a subscriber resumes its session in a new process"
        );
        assert!(o.session_expiry.is_some());
    }
}
