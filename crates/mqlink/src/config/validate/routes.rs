//! One `routes[i]` entry: event globs, topic template, QoS/retain, payload shaping
//! (its jq `transform` compiled here) and MQTT 5 properties.

use std::time::Duration;

use crate::topic::{Allowed, EventGlob, SlashPolicy, validate_topic_name};

use super::R;
use crate::config::ctx::Ctx;
use crate::config::node::KeyPath;
use crate::config::raw::*;
use crate::config::types::*;

pub(super) fn route(
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
