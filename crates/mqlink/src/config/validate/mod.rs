//! Raw config → validated [`Config`]: defaults, cross-field rules, templates, filters and
//! jq programs, one file per section (`broker`, `spool`, `sources`, `routes`,
//! `connectors`); the checks they share are [`Ctx`]'s.
//!
//! Pure apart from reading `password_file`s and checking that referenced input files
//! exist. Each check reports the key path it is about; [`Ctx::err`] turns that path into
//! the line and column of the offending value.

mod broker;
mod connectors;
mod routes;
mod sources;
mod spool;

use std::time::Duration;

use crate::topic::validate_topic_name;

use super::error::ConfigError;
use super::node::KeyPath;
use super::raw::*;
use super::types::*;

pub(super) type R<T> = Result<T, ConfigError>;

pub(crate) use super::ctx::Ctx;

pub(super) const DAY: Duration = Duration::from_secs(86_400);
/// MQTT's largest packet: the remaining-length field tops out at 268,435,455.
pub(super) const MQTT_MAX_PACKET: u64 = 268_435_455;

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
    let broker = broker::broker(
        raw.broker.unwrap_or_default(),
        ctx,
        &root.key("broker"),
        &prefix,
    )?;
    let spool = spool::spool(raw.spool.unwrap_or_default(), ctx, &root.key("spool"))?;
    let sources = sources::sources(raw.sources.unwrap_or_default(), ctx, &root.key("sources"))?;
    let mut routes_out = Vec::new();
    let rpath = root.key("routes");
    for (i, r) in raw.routes.unwrap_or_default().into_iter().enumerate() {
        let p = rpath.index(i);
        let route = routes::route(r, i, ctx, &p, &prefix, broker.protocol)?;
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
        let conn = connectors::connector(c, ctx, &p, &spool.dir, broker.session_expiry)?;
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
