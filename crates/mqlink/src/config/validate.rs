//! Raw config → validated [`Config`]: defaults, cross-field rules, templates and filters.
//!
//! Pure apart from reading `password_file`s and checking that referenced input files
//! exist. Each check reports the key path it is about; [`Ctx::err`] turns that path into
//! the line and column of the offending value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::mqtt::url::BrokerUrl;
use crate::topic::{Allowed, EventGlob, SlashPolicy, TopicFilter, validate_topic_name};

use super::error::ConfigError;
use super::node::KeyPath;
use super::raw::*;
use super::secret::Secret;
use super::types::*;

type R<T> = Result<T, ConfigError>;

pub(crate) use super::ctx::Ctx;

const DAY: Duration = Duration::from_secs(86_400);
/// MQTT's largest packet: the remaining-length field tops out at 268,435,455.
const MQTT_MAX_PACKET: u64 = 268_435_455;

pub(crate) fn validate(raw: RawConfig, ctx: &Ctx<'_>) -> R<Config> {
    let root = KeyPath::root();
    let prefix = match raw.topic_prefix.as_deref() {
        None => String::new(),
        Some(p) => {
            let trimmed = p.trim_end_matches('/');
            if !trimmed.is_empty() {
                validate_topic_name(trimmed)
                    .map_err(|e| ctx.err(&root.key("topic_prefix"), e.to_string()))?;
            }
            trimmed.to_string()
        }
    };
    let broker = broker(
        raw.broker.unwrap_or_default(),
        ctx,
        &root.key("broker"),
        &prefix,
    )?;
    let spool = spool(raw.spool.unwrap_or_default(), ctx, &root.key("spool"))?;
    let sources = sources(raw.sources.unwrap_or_default(), ctx, &root.key("sources"))?;
    let mut routes_out = Vec::new();
    let rpath = root.key("routes");
    for (i, r) in raw.routes.unwrap_or_default().into_iter().enumerate() {
        let p = rpath.index(i);
        let route = route(r, i, ctx, &p, &prefix, broker.protocol)?;
        if let Some(j) = routes_out.iter().position(|o: &Route| o.name == route.name) {
            return Err(ctx.err(
                &p.key("name"),
                format!("duplicate route name '{}' (also routes[{j}])", route.name),
            ));
        }
        routes_out.push(route);
    }
    let mut connectors_out: Vec<Connector> = Vec::new();
    let cpath = root.key("connectors");
    for (i, c) in raw.connectors.unwrap_or_default().into_iter().enumerate() {
        let p = cpath.index(i);
        let conn = connector(c, ctx, &p, &spool.dir, broker.session_expiry)?;
        if let Some(j) = connectors_out.iter().position(|o| o.name == conn.name) {
            return Err(ctx.err(
                &p.key("name"),
                format!(
                    "duplicate connector name '{}' (also connectors[{j}])",
                    conn.name
                ),
            ));
        }
        let clash = connectors_out
            .iter()
            .position(|o| o.client_id == conn.client_id && o.broker == conn.broker);
        let clash_broker = conn.broker.is_none() && conn.client_id == broker.client_id;
        if clash.is_some() || clash_broker {
            let other = clash.map_or("broker.client_id".to_string(), |j| {
                format!("connectors[{j}]")
            });
            return Err(ctx.err(
                &p.key("client_id"),
                format!(
                    "client id '{}' is also used by {other}; two clients with one id disconnect each other",
                    conn.client_id
                ),
            ));
        }
        connectors_out.push(conn);
    }
    Ok(Config {
        origin: ctx.file.to_string(),
        hostname: ctx.hostname.to_string(),
        broker,
        topic_prefix: prefix,
        spool,
        sources,
        routes: routes_out,
        connectors: connectors_out,
    })
}

fn protocol(s: &str) -> Option<Protocol> {
    Some(match s.trim().trim_start_matches(['v', 'V']) {
        "5" | "5.0" => Protocol::V5,
        "3.1.1" | "311" | "4" => Protocol::V311,
        "3.1" | "31" | "3" => Protocol::V31,
        _ => return None,
    })
}

fn broker(raw: RawBroker, ctx: &Ctx<'_>, path: &KeyPath, prefix: &str) -> R<Broker> {
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
        None => Protocol::V5,
        Some(s) => protocol(s).ok_or_else(|| {
            ctx.err(
                &path.key("protocol"),
                format!("unknown protocol '{s}' (use 5, 3.1.1 or 3.1)"),
            )
        })?,
    };
    let kp = path.key("keepalive");
    let keepalive = ctx.duration(raw.keepalive.as_deref(), &kp, Duration::from_secs(60))?;
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
    let reconnect = ctx.backoff(raw.reconnect, &path.key("reconnect"))?;
    let mp = path.key("max_packet_size");
    let max_packet_size = ctx.bytes(raw.max_packet_size.as_deref(), &mp, 16 << 20, 128)?;
    if max_packet_size > MQTT_MAX_PACKET {
        return Err(ctx.err(&mp, format!("MQTT allows at most {MQTT_MAX_PACKET} bytes")));
    }
    let max_inflight = match raw.max_inflight {
        None => 20,
        Some(n) => u16::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ctx.err(&path.key("max_inflight"), "must be between 1 and 65535"))?,
    };
    let connect_timeout = ctx.positive_duration(
        raw.connect_timeout.as_deref(),
        &path.key("connect_timeout"),
        Duration::from_secs(10),
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

fn tls(
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
    let ca_file = match raw.ca_file.as_deref() {
        Some(f) => Some(ctx.input_file(f, &path.key("ca_file"))?),
        None => None,
    };
    let client_auth = match (raw.cert_file.as_deref(), raw.key_file.as_deref()) {
        (Some(c), Some(k)) => Some(ClientAuth {
            cert_file: ctx.input_file(c, &path.key("cert_file"))?,
            key_file: ctx.input_file(k, &path.key("key_file"))?,
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ctx.err(&path.key("cert_file"), "cert_file needs key_file too"));
        }
        (None, Some(_)) => {
            return Err(ctx.err(&path.key("key_file"), "key_file needs cert_file too"));
        }
    };
    let alpn = raw.alpn.unwrap_or_default();
    for (i, a) in alpn.iter().enumerate() {
        ctx.non_empty(a, &path.key("alpn").index(i))?;
    }
    if let Some(s) = raw.server_name.as_deref() {
        ctx.non_empty(s, &path.key("server_name"))?;
    }
    Ok(Some(Tls {
        ca_file,
        client_auth,
        alpn,
        insecure_skip_verify: raw.insecure_skip_verify.unwrap_or(false),
        server_name: raw.server_name,
    }))
}

/// `broker.embedded.tls`: a server certificate and key are required; a client CA turns on
/// client-certificate checks, required unless `require_client_cert: false`.
fn embedded_tls(raw: RawEmbeddedTls, ctx: &Ctx<'_>, path: &KeyPath) -> R<EmbeddedTls> {
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

fn lifecycle(raw: RawLifecycle, ctx: &Ctx<'_>, path: &KeyPath, prefix: &str) -> R<Lifecycle> {
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

fn spool(raw: RawSpool, ctx: &Ctx<'_>, path: &KeyPath) -> R<Spool> {
    let dir = raw.dir.unwrap_or_else(|| "./mqlink-data".into());
    ctx.non_empty(&dir, &path.key("dir"))?;
    Ok(Spool {
        dir: PathBuf::from(dir),
        max_bytes: ctx.bytes(
            raw.max_bytes.as_deref(),
            &path.key("max_bytes"),
            1 << 30,
            1 << 20,
        )?,
        on_full: match raw.on_full {
            None | Some(RawOnFull::Reject) => OnFull::Reject,
            Some(RawOnFull::Block) => OnFull::Block,
            Some(RawOnFull::DropOldest) => OnFull::DropOldest,
        },
        fsync: ctx.fsync(raw.fsync, raw.fsync_interval.as_deref(), path)?,
        on_corruption: match raw.on_corruption {
            None | Some(RawOnCorruption::Fail) => OnCorruption::Fail,
            Some(RawOnCorruption::Discard) => OnCorruption::Discard,
        },
        stall_timeout: ctx.duration(
            raw.stall_timeout.as_deref(),
            &path.key("stall_timeout"),
            Duration::from_secs(60),
        )?,
    })
}

fn sources(raw: RawSources, ctx: &Ctx<'_>, path: &KeyPath) -> R<Sources> {
    let hp = path.key("http");
    let h = raw.http.unwrap_or_default();
    let http = if h.enabled.unwrap_or(true) {
        let listen = match h.listen.as_deref() {
            Some(s) => ctx.socket_addr(s, &hp.key("listen"))?,
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let tokens = h.tokens.unwrap_or_default();
        for (i, t) in tokens.iter().enumerate() {
            if t.expose().trim().is_empty() {
                return Err(ctx.err(&hp.key("tokens").index(i), "token is empty"));
            }
        }
        if !listen.ip().is_loopback() && tokens.is_empty() {
            return Err(ctx.err(
                &hp.key("listen"),
                format!("{listen} is not a loopback address; set sources.http.tokens to accept events from the network"),
            ));
        }
        let max_body = ctx.bytes(h.max_body.as_deref(), &hp.key("max_body"), 1 << 20, 1)?;
        let request_timeout = ctx.positive_duration(
            h.request_timeout.as_deref(),
            &hp.key("request_timeout"),
            Duration::from_secs(30),
        )?;
        let max_connections = match h.max_connections {
            None => HttpSource::DEFAULT_MAX_CONNECTIONS,
            Some(0) => {
                return Err(ctx.err(&hp.key("max_connections"), "must be at least 1"));
            }
            Some(n) => n as usize,
        };
        let header_timeout = ctx.positive_duration(
            h.header_timeout.as_deref(),
            &hp.key("header_timeout"),
            HttpSource::DEFAULT_HEADER_TIMEOUT,
        )?;
        Some(HttpSource {
            listen,
            tokens,
            max_body,
            request_timeout,
            max_connections,
            header_timeout: header_timeout.min(request_timeout),
        })
    } else {
        None
    };
    let mut poll = Vec::new();
    for (i, p) in raw.poll.unwrap_or_default().into_iter().enumerate() {
        let pp = path.key("poll").index(i);
        ctx.non_empty(&p.event, &pp.key("event"))?;
        poll.push(Poll {
            url: ctx.http_url(&p.url, &pp.key("url"), &["http", "https"])?,
            every: ctx.positive_duration(Some(&p.every), &pp.key("every"), Duration::ZERO)?,
            event: p.event,
            fields: p.fields.unwrap_or_default(),
            split: p.split.map(|s| ctx.jq(&s, &pp.key("split"))).transpose()?,
            headers: ctx.headers(p.headers, &pp.key("headers"))?,
            timeout: ctx.positive_duration(
                p.timeout.as_deref(),
                &pp.key("timeout"),
                Duration::from_secs(10),
            )?,
        });
    }
    Ok(Sources {
        http,
        stdin: raw.stdin.and_then(|s| s.enabled).unwrap_or(false),
        poll,
    })
}

fn route(
    raw: RawRoute,
    index: usize,
    ctx: &Ctx<'_>,
    path: &KeyPath,
    prefix: &str,
    protocol: Protocol,
) -> R<Route> {
    let name = match raw.name {
        Some(n) => {
            ctx.non_empty(&n, &path.key("name"))?;
            n
        }
        None => format!("route-{index}"),
    };
    let mp = path.key("match");
    if raw.match_.is_empty() {
        return Err(ctx.err(
            &mp,
            "needs at least one event name or pattern (\"*\" for all)",
        ));
    }
    let mut matches = Vec::with_capacity(raw.match_.len());
    for (i, m) in raw.match_.iter().enumerate() {
        matches.push(EventGlob::parse(m).map_err(|e| ctx.err(&mp.index(i), e.to_string()))?);
    }
    let tp = path.key("topic");
    let t = ctx.template(&raw.topic, &tp, true, &Allowed::EVENT)?;
    let t = if t.uses_prefix() {
        t
    } else {
        t.with_prefix(prefix)
    };
    let topic = t.resolve_builtins(ctx.hostname, prefix);
    if let Some(text) = topic.literal() {
        validate_topic_name(&text).map_err(|e| ctx.err(&tp, e.to_string()))?;
    }

    let pp = path.key("payload");
    let p = raw.payload.unwrap_or_default();
    if let Some(f) = p.event_field.as_deref() {
        ctx.non_empty(f, &pp.key("event_field"))?;
    }
    let timestamp_field = match (p.timestamp_field, p.timestamp) {
        (Some(f), fmt) => {
            ctx.non_empty(&f, &pp.key("timestamp_field"))?;
            let fmt = match fmt {
                None | Some(RawTimestamp::Unix) => TimestampFormat::Unix,
                Some(RawTimestamp::UnixMs) => TimestampFormat::UnixMs,
                Some(RawTimestamp::Rfc3339) => TimestampFormat::Rfc3339,
            };
            Some((f, fmt))
        }
        (None, Some(_)) => {
            return Err(ctx.err(
                &pp.key("timestamp"),
                "needs timestamp_field (the key to write it under)",
            ));
        }
        (None, None) => None,
    };
    let transform = p
        .transform
        .map(|t| ctx.jq(&t, &pp.key("transform")))
        .transpose()?;

    let prp = path.key("properties");
    let properties = match raw.properties {
        None => Properties::default(),
        Some(_) if protocol != Protocol::V5 => {
            return Err(ctx.err(&prp, "MQTT properties need protocol 5 (broker.protocol)"));
        }
        Some(props) => {
            let ep = prp.key("message_expiry");
            let message_expiry = match props.message_expiry.as_deref() {
                None => None,
                Some(v) => {
                    let d = ctx.positive_duration(Some(v), &ep, Duration::ZERO)?;
                    Some(ctx.whole_seconds(d, &ep, u64::from(u32::MAX))?)
                }
            };
            if let Some(ct) = props.content_type.as_deref() {
                ctx.non_empty(ct, &prp.key("content_type"))?;
            }
            let mut user = Vec::new();
            for (k, v) in props.user.map(|o| o.0).unwrap_or_default() {
                let up = prp.key("user").key(&k);
                if k.is_empty() {
                    return Err(ctx.err(&up, "user property name must not be empty"));
                }
                let t = ctx.template(&v, &up, false, &Allowed::EVENT)?;
                user.push((k, t.resolve_builtins(ctx.hostname, prefix)));
            }
            Properties {
                content_type: props.content_type,
                message_expiry,
                user,
            }
        }
    };
    Ok(Route {
        name,
        matches,
        topic,
        qos: ctx.qos(raw.qos, &path.key("qos"), QoS::AtLeastOnce)?,
        retain: raw.retain.unwrap_or(false),
        enabled: raw.enabled.unwrap_or(true),
        slash: match raw.slash {
            None | Some(RawSlash::Keep) => SlashPolicy::Keep,
            Some(RawSlash::Replace) => SlashPolicy::Replace,
        },
        payload: Payload {
            event_field: p.event_field,
            timestamp_field,
            transform,
        },
        properties,
    })
}

fn connector(
    raw: RawConnector,
    ctx: &Ctx<'_>,
    path: &KeyPath,
    spool_dir: &std::path::Path,
    broker_expiry: Option<Duration>,
) -> R<Connector> {
    let session = match raw.session {
        None | Some(RawSession::Persistent) => Session::Persistent,
        Some(RawSession::Clean) => Session::Clean,
    };
    // What the broker keeps of a persistent connector while mqlink is away: the broker
    // section's expiry, a day unless given.
    let session_expiry = match session {
        Session::Persistent => Some(broker_expiry.unwrap_or(DAY)),
        Session::Clean => None,
    };
    let np = path.key("name");
    let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if raw.name.is_empty() || !raw.name.chars().all(name_ok) {
        return Err(ctx.err(&np, "connector names use letters, digits, '-', '_' and '.'"));
    }
    let sp = path.key("subscribe");
    if raw.subscribe.is_empty() {
        return Err(ctx.err(&sp, "needs at least one topic filter"));
    }
    let mut subscribe = Vec::new();
    for (i, f) in raw.subscribe.iter().enumerate() {
        subscribe.push(TopicFilter::parse(f).map_err(|e| ctx.err(&sp.index(i), e.to_string()))?);
    }
    let default_id = format!("mqlink-{{hostname}}-{}", raw.name);
    let client_id = ctx.literal_template(
        raw.client_id.as_deref().unwrap_or(&default_id),
        &path.key("client_id"),
        &Allowed::HOSTNAME,
        "",
    )?;
    let broker = match raw.broker {
        None => None,
        Some(b) => Some(
            BrokerUrl::parse(&b.url)
                .map_err(|e| ctx.err(&path.key("broker").key("url"), e.to_string()))?,
        ),
    };
    let mut transforms = Vec::new();
    for (i, t) in raw.transforms.unwrap_or_default().into_iter().enumerate() {
        let tp = path.key("transforms").index(i);
        transforms.push(match t {
            RawTransform::Filter(e) => Transform::Filter(ctx.jq(&e, &tp.key("filter"))?),
            RawTransform::Map(e) => Transform::Map(ctx.jq(&e, &tp.key("map"))?),
            RawTransform::Arraymap(e) => Transform::ArrayMap(ctx.jq(&e, &tp.key("arraymap"))?),
        });
    }
    // Next to the spool unless configured (the spool directory is on a disk mqlink may
    // write to).
    let dead_letter = match raw.dead_letter {
        Some(d) => {
            ctx.non_empty(&d, &path.key("dead_letter"))?;
            PathBuf::from(d)
        }
        None => spool_dir.join(format!("dead-letter-{}.jsonl", raw.name)),
    };
    Ok(Connector {
        name: raw.name,
        subscribe,
        qos: ctx.qos(raw.qos, &path.key("qos"), QoS::AtLeastOnce)?,
        session,
        session_expiry,
        client_id,
        broker,
        format: match raw.format {
            None | Some(RawFormat::Json) => RecordFormat::Json,
            Some(RawFormat::Fluvio) => RecordFormat::Fluvio,
            Some(RawFormat::Raw) => RecordFormat::Raw,
        },
        transforms,
        dead_letter,
        sink: Sink::validate(raw.sink, ctx, &path.key("sink"))?,
    })
}
