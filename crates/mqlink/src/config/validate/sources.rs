//! The `sources` section: the HTTP API's listener and limits, stdin, HTTP polling.

use std::net::SocketAddr;
use std::time::Duration;

use super::R;
use crate::config::ctx::Ctx;
use crate::config::node::KeyPath;
use crate::config::raw::*;
use crate::config::types::*;

pub(super) fn sources(raw: RawSources, ctx: &Ctx<'_>, path: &KeyPath) -> R<Sources> {
    let hp = path.key("http");
    let explicit = raw.http.is_some();
    let h = raw.http.unwrap_or_default();
    // On unless disabled; a build without the HTTP source has it off unless asked for,
    // and then says why it cannot be.
    let on = h.enabled.unwrap_or(explicit || cfg!(feature = "http"));
    if on && !cfg!(feature = "http") {
        return Err(ctx.err(
            &hp,
            "this build of mqlink has no HTTP source (cargo feature `http`)",
        ));
    }
    let http = if on {
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
    let raw_poll = raw.poll.unwrap_or_default();
    if !raw_poll.is_empty() && !cfg!(feature = "poll") {
        return Err(ctx.err(
            &path.key("poll"),
            "this build of mqlink has no poll source (cargo feature `poll`)",
        ));
    }
    let mut poll = Vec::new();
    for (i, p) in raw_poll.into_iter().enumerate() {
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
