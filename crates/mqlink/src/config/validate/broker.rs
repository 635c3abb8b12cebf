//! The `broker` section: URL or embedded broker, identity, protocol, session, TLS,
//! reconnect, limits and the lifecycle (birth/will) messages.

use std::path::PathBuf;

use crate::mqtt::client::MqttOptions;
use crate::mqtt::url::BrokerUrl;
use crate::topic::{Allowed, validate_topic_name};

use super::{DAY, MQTT_MAX_PACKET, R};
use crate::config::ctx::Ctx;
use crate::config::node::KeyPath;
use crate::config::raw::*;
use crate::config::secret::Secret;
use crate::config::types::*;

pub(super) fn protocol(s: &str) -> Option<Protocol> {
    Some(match s.trim().trim_start_matches(['v', 'V']) {
        "5" | "5.0" => Protocol::V5,
        "3.1.1" | "311" | "4" => Protocol::V311,
        "3.1" | "31" | "3" => Protocol::V31,
        _ => return None,
    })
}

pub(super) fn broker(raw: RawBroker, ctx: &Ctx<'_>, path: &KeyPath, prefix: &str) -> R<Broker> {
    let url_is_embedded = raw
        .url
        .as_deref()
        .is_none_or(|u| u.trim().eq_ignore_ascii_case("embedded"));
    if raw.url.is_some() && (raw.host.is_some() || raw.port.is_some()) {
        let p = if raw.host.is_some() { "host" } else { "port" };
        return Err(ctx.err(&path.key(p), "give either url or host/port, not both"));
    }
    let has_embedded = raw.embedded.is_some();
    let target = if let Some(host) = raw.host.as_deref() {
        ctx.non_empty(host, &path.key("host"))?;
        let scheme = if raw.tls.is_some() { "mqtts" } else { "mqtt" };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let url = match raw.port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        };
        BrokerTarget::Remote(
            BrokerUrl::parse(&url).map_err(|e| ctx.err(&path.key("host"), e.to_string()))?,
        )
    } else if raw.port.is_some() {
        return Err(ctx.err(&path.key("port"), "port needs host"));
    } else if url_is_embedded {
        let e = raw.embedded.unwrap_or_default();
        let ep = path.key("embedded");
        let defaults = Embedded::default();
        let listen = match e.listen.as_deref() {
            Some(s) => ctx.socket_addr(s, &ep.key("listen"))?,
            None => defaults.listen,
        };
        let ws_listen = match e.ws_listen.as_deref() {
            Some(s) => Some(ctx.socket_addr(s, &ep.key("ws_listen"))?),
            None => None,
        };
        let password = ctx.password(e.password, e.password_file.as_deref(), &ep)?;
        if e.username.is_some() != password.is_some() {
            let p = if e.username.is_some() {
                "password"
            } else {
                "username"
            };
            return Err(ctx.err(&ep.key(p), "username and password go together"));
        }
        if raw.tls.is_some() {
            return Err(ctx.err(
                &path.key("tls"),
                "the embedded broker is reached over plain TCP on loopback; tls needs a remote url",
            ));
        }
        let tls = match e.tls {
            Some(t) => Some(embedded_tls(t, ctx, &ep.key("tls"))?),
            None => None,
        };
        let max_queued_messages = match e.max_queued_messages {
            None => defaults.max_queued_messages,
            Some(0) => {
                return Err(ctx.err(&ep.key("max_queued_messages"), "must be at least 1"));
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let max_queued_bytes = ctx.bytes(
            e.max_queued_bytes.as_deref(),
            &ep.key("max_queued_bytes"),
            defaults.max_queued_bytes as u64,
            1024,
        )?;
        let persistence = match e.persistence.as_deref() {
            Some(d) => {
                ctx.non_empty(d, &ep.key("persistence"))?;
                Some(ctx.resolve(d))
            }
            None => None,
        };
        let embedded = Embedded {
            listen,
            ws_listen,
            username: e.username,
            password,
            tls,
            allow_anonymous: e.allow_anonymous.unwrap_or(false),
            max_queued_messages,
            max_queued_bytes: usize::try_from(max_queued_bytes).unwrap_or(usize::MAX),
            persistence,
        };
        if let Some((key, addr)) = embedded.unauthenticated_exposure() {
            let at = key.split('.').fold(ep.clone(), |p, k| p.key(k));
            return Err(ctx.err(&at, Embedded::exposure_message(addr)));
        }
        BrokerTarget::Embedded(embedded)
    } else {
        let u = raw.url.as_deref().unwrap_or_default();
        BrokerTarget::Remote(
            BrokerUrl::parse(u).map_err(|e| ctx.err(&path.key("url"), e.to_string()))?,
        )
    };
    if has_embedded && matches!(target, BrokerTarget::Remote(_)) {
        return Err(ctx.err(
            &path.key("embedded"),
            "only used with url: embedded (the url points at a remote broker)",
        ));
    }

    // Credentials: explicit keys, or from the URL, not both.
    let (url_user, url_pass) = match &target {
        BrokerTarget::Remote(u) => (u.username.clone(), u.password.clone().map(Secret::new)),
        BrokerTarget::Embedded(_) => (None, None),
    };
    let password = ctx.password(raw.password, raw.password_file.as_deref(), path)?;
    if (raw.username.is_some() || password.is_some()) && (url_user.is_some() || url_pass.is_some())
    {
        return Err(ctx.err(
            &path.key("url"),
            "credentials are given both in the url and as username/password; keep one",
        ));
    }
    let username = raw.username.or(url_user);
    let password = password.or(url_pass);

    let client_id = ctx.literal_template(
        raw.client_id.as_deref().unwrap_or("mqlink-{hostname}"),
        &path.key("client_id"),
        &Allowed::HOSTNAME,
        prefix,
    )?;
    let protocol = match raw.protocol.as_deref() {
        None => MqttOptions::DEFAULT_PROTOCOL,
        Some(s) => protocol(s).ok_or_else(|| {
            ctx.err(
                &path.key("protocol"),
                format!("unknown protocol '{s}' (use 5, 3.1.1 or 3.1)"),
            )
        })?,
    };
    let kp = path.key("keepalive");
    let keepalive = ctx.duration(
        raw.keepalive.as_deref(),
        &kp,
        MqttOptions::DEFAULT_KEEP_ALIVE,
    )?;
    let keepalive = ctx.whole_seconds(keepalive, &kp, u64::from(u16::MAX))?;

    let session = match raw.session {
        None | Some(RawSession::Clean) => Session::Clean,
        Some(RawSession::Persistent) => Session::Persistent,
    };
    let sp = path.key("session_expiry");
    let session_expiry = match (session, raw.session_expiry.as_deref()) {
        (Session::Clean, Some(_)) => {
            return Err(ctx.err(&sp, "only meaningful with session: persistent"));
        }
        (Session::Clean, None) => None,
        (Session::Persistent, Some(_)) if protocol != Protocol::V5 => {
            return Err(ctx.err(&sp, "session expiry needs MQTT 5 (broker.protocol)"));
        }
        (Session::Persistent, v) => {
            let d = ctx.positive_duration(v, &sp, DAY)?;
            Some(ctx.whole_seconds(d, &sp, u64::from(u32::MAX))?)
        }
    };

    let tls = tls(raw.tls, &target, ctx, &path.key("tls"))?;
    let reconnect = ctx.backoff_or(
        raw.reconnect,
        &path.key("reconnect"),
        Backoff {
            min: MqttOptions::DEFAULT_RECONNECT_MIN,
            max: MqttOptions::DEFAULT_RECONNECT_MAX,
        },
    )?;
    let mp = path.key("max_packet_size");
    let max_packet_size = ctx.bytes(
        raw.max_packet_size.as_deref(),
        &mp,
        u64::from(MqttOptions::DEFAULT_MAX_PACKET_SIZE),
        128,
    )?;
    if max_packet_size > MQTT_MAX_PACKET {
        return Err(ctx.err(&mp, format!("MQTT allows at most {MQTT_MAX_PACKET} bytes")));
    }
    let max_inflight = match raw.max_inflight {
        None => MqttOptions::DEFAULT_MAX_INFLIGHT,
        Some(n) => u16::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ctx.err(&path.key("max_inflight"), "must be between 1 and 65535"))?,
    };
    let connect_timeout = ctx.positive_duration(
        raw.connect_timeout.as_deref(),
        &path.key("connect_timeout"),
        MqttOptions::DEFAULT_CONNECT_TIMEOUT,
    )?;
    let lifecycle = match raw.lifecycle {
        None => None,
        Some(l) => Some(lifecycle(l, ctx, &path.key("lifecycle"), prefix)?),
    };
    Ok(Broker {
        target,
        client_id,
        username,
        password,
        protocol,
        keepalive,
        session,
        session_expiry,
        tls,
        reconnect,
        max_packet_size: u32::try_from(max_packet_size).unwrap_or(u32::MAX),
        max_inflight,
        connect_timeout,
        lifecycle,
    })
}

pub(super) fn tls(
    raw: Option<RawTls>,
    target: &BrokerTarget,
    ctx: &Ctx<'_>,
    path: &KeyPath,
) -> R<Option<Tls>> {
    let is_tls = matches!(target, BrokerTarget::Remote(u) if u.transport.is_tls());
    let Some(raw) = raw else {
        return Ok(is_tls.then(Tls::default));
    };
    if !is_tls {
        return Err(ctx.err(
            path,
            "tls is set but the broker url is not a TLS url (use mqtts:// or wss://)",
        ));
    }
    ctx.tls(raw, path).map(Some)
}

/// `broker.embedded.tls`: a server certificate and key are required; a client CA turns on
/// client-certificate checks, required unless `require_client_cert: false`.
pub(super) fn embedded_tls(raw: RawEmbeddedTls, ctx: &Ctx<'_>, path: &KeyPath) -> R<EmbeddedTls> {
    let listen = match raw.listen.as_deref() {
        Some(s) => ctx.socket_addr(s, &path.key("listen"))?,
        None => EmbeddedTls::DEFAULT_LISTEN,
    };
    let required = |v: Option<&str>, key: &str| -> R<PathBuf> {
        match v {
            Some(f) => ctx.input_file(f, &path.key(key)),
            None => Err(ctx.err(
                path,
                format!("{key} is required: the PEM file the TLS listener presents"),
            )),
        }
    };
    let cert_file = required(raw.cert_file.as_deref(), "cert_file")?;
    let key_file = required(raw.key_file.as_deref(), "key_file")?;
    let client_ca_file = match raw.client_ca_file.as_deref() {
        Some(f) => Some(ctx.input_file(f, &path.key("client_ca_file"))?),
        None => None,
    };
    let require_client_cert = match (raw.require_client_cert, &client_ca_file) {
        (Some(true), None) => {
            return Err(ctx.err(
                &path.key("require_client_cert"),
                "needs client_ca_file: the CA that client certificates are checked against",
            ));
        }
        (Some(v), _) => v,
        (None, ca) => ca.is_some(),
    };
    // Parse them now, so `mqlink check` catches a key that does not fit its certificate.
    crate::mqtt::tls::check_server_files(&cert_file, &key_file, client_ca_file.as_deref())
        .map_err(|e| {
            // Point at the file that is wrong.
            let at = match &e {
                crate::mqtt::tls::TlsError::File { what, .. } => what
                    .rsplit(' ')
                    .next()
                    .map_or_else(|| path.clone(), |k| path.key(k)),
                _ => path.clone(),
            };
            ctx.err(&at, e.to_string())
        })?;
    Ok(EmbeddedTls {
        listen,
        cert_file,
        key_file,
        client_ca_file,
        require_client_cert,
    })
}

pub(super) fn lifecycle(
    raw: RawLifecycle,
    ctx: &Ctx<'_>,
    path: &KeyPath,
    prefix: &str,
) -> R<Lifecycle> {
    let tp = path.key("topic");
    let t = ctx.template(
        raw.topic.as_deref().unwrap_or("status"),
        &tp,
        true,
        &Allowed::BUILTINS,
    )?;
    let t = if t.uses_prefix() {
        t
    } else {
        t.with_prefix(prefix)
    };
    let topic = t
        .resolve_builtins(ctx.hostname, prefix)
        .literal()
        .unwrap_or_default();
    validate_topic_name(&topic).map_err(|e| ctx.err(&tp, e.to_string()))?;
    Ok(Lifecycle {
        topic,
        online: raw.online.unwrap_or_else(|| "online".into()),
        offline: raw.offline.unwrap_or_else(|| "offline".into()),
        retain: raw.retain.unwrap_or(true),
        qos: ctx.qos(raw.qos, &path.key("qos"), QoS::AtLeastOnce)?,
    })
}
