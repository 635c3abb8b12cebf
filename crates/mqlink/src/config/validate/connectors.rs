//! One `connectors[i]` entry: filters, session, client id, record format, jq transforms
//! (compiled here), dead-letter file (next to the spool by default) and the sink (each
//! sink validates its own section, see `crate::sink`).

use std::path::PathBuf;
use std::time::Duration;

use crate::mqtt::url::BrokerUrl;
use crate::topic::{Allowed, TopicFilter};

use super::{DAY, R};
use crate::config::ctx::Ctx;
use crate::config::node::KeyPath;
use crate::config::raw::*;
use crate::config::types::*;

pub(super) fn connector(
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
