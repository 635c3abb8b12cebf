//! Routes: which events go where, and in what shape.
//!
//! For each event the router finds every enabled route whose globs match the event name
//! (fan-out is normal: Flamenco's last-rendered event goes to two topics), renders the
//! route's topic template from the event, shapes the payload (event-name field, timestamp
//! field) and produces one [`OutMessage`] per route. Nothing here does I/O.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value};

use super::message::{OutMessage, epoch_ms};
use crate::config::{Config, Route, TimestampFormat};
use crate::event::Event;
use crate::mqtt::codec::PublishProps;
use crate::topic::{GlobSet, RenderContext, RenderError};
use crate::transform::{Chain, Kind};

/// Why an event cannot be published (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No enabled route matches the event name.
    #[error("no route matches event '{event}'")]
    NoRoute {
        /// The event name.
        event: String,
    },
    /// A route's topic (or a property) cannot be rendered from this event.
    #[error("route '{route}': {source}")]
    Render {
        /// Route name.
        route: String,
        /// What went wrong.
        source: RenderError,
    },
    /// The route's payload transform failed.
    #[error("route '{route}': payload transform failed: {reason}")]
    Transform {
        /// Route name.
        route: String,
        /// Why.
        reason: String,
    },
}

impl RouteError {
    /// Stable machine-readable code for API errors and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            RouteError::NoRoute { .. } => "no_route",
            RouteError::Render {
                source: RenderError::MissingField { .. },
                ..
            } => "missing_field",
            RouteError::Render {
                source: RenderError::NotScalar { .. },
                ..
            } => "bad_field",
            RouteError::Render { .. } => "invalid_topic",
            RouteError::Transform { .. } => "transform_failed",
        }
    }
}

/// The compiled routing table.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
    transforms: std::sync::Arc<Vec<Option<Chain>>>,
    set: GlobSet,
    hostname: String,
    prefix: String,
}

impl Router {
    /// Build from a validated config (payload transforms compiled at validation).
    pub fn new(config: &Config) -> Router {
        let transforms = config
            .routes
            .iter()
            .map(|r| {
                r.payload
                    .transform
                    .as_ref()
                    .map(|p| Chain::single(Kind::Map, p))
            })
            .collect();
        Router {
            transforms: std::sync::Arc::new(transforms),
            routes: config.routes.clone(),
            set: config.route_set(),
            hostname: config.hostname.clone(),
            prefix: config.topic_prefix.clone(),
        }
    }

    /// The routes, by index.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Append one message per matching route to `out`. On error nothing is appended.
    ///
    /// # Errors
    /// [`RouteError`] naming the route and the field or rule at fault.
    pub fn route(&self, event: &Event, out: &mut Vec<OutMessage>) -> Result<(), RouteError> {
        let mut matched = Vec::new();
        self.set.matches_into(&event.name, &mut matched);
        if matched.is_empty() {
            return Err(RouteError::NoRoute {
                event: event.name.clone(),
            });
        }
        let start = out.len();
        for idx in matched {
            match self.render(idx, event) {
                Ok(Some(m)) => out.push(m),
                // The route's transform chose not to publish this event.
                Ok(None) => {}
                Err(e) => {
                    out.truncate(start);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn render(&self, idx: usize, event: &Event) -> Result<Option<OutMessage>, RouteError> {
        let route = &self.routes[idx];
        let ctx = RenderContext {
            event: &event.name,
            fields: &event.fields,
            hostname: &self.hostname,
            prefix: &self.prefix,
            slash: route.slash,
        };
        let render_err = |source| RouteError::Render {
            route: route.name.clone(),
            source,
        };
        let topic = route.topic.render(&ctx).map_err(render_err)?;
        let mut props = PublishProps {
            content_type: route.properties.content_type.clone(),
            message_expiry: route
                .properties
                .message_expiry
                .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
            ..PublishProps::default()
        };
        for (name, template) in &route.properties.user {
            props.user.push((
                name.clone(),
                template.render_text(&ctx).map_err(render_err)?,
            ));
        }
        let payload = match &self.transforms[idx] {
            None => Bytes::from(serde_json::to_vec(&shape(route, event)).unwrap_or_default()),
            Some(chain) => {
                let out =
                    chain
                        .apply_json(&shape(route, event))
                        .map_err(|e| RouteError::Transform {
                            route: route.name.clone(),
                            reason: e.to_string(),
                        })?;
                match out.into_iter().next() {
                    None => return Ok(None),
                    Some(Value::String(s)) => Bytes::from(s.into_bytes()),
                    Some(v) => Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
                }
            }
        };
        Ok(Some(OutMessage {
            route: u16::try_from(idx).unwrap_or(u16::MAX - 1),
            topic,
            payload,
            qos: route.qos,
            retain: route.retain,
            props,
            accepted_at_ms: epoch_ms(SystemTime::now()),
        }))
    }
}

/// The payload of `event` for `route`: its fields, plus the event-name and timestamp
/// fields the route asks for. A route's transform sees this shaped object.
fn shape(route: &Route, event: &Event) -> Value {
    let p = &route.payload;
    if p.event_field.is_none() && p.timestamp_field.is_none() {
        return event.fields.clone();
    }
    let mut obj: Map<String, Value> = match &event.fields {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    if let Some(f) = &p.event_field {
        obj.insert(f.clone(), Value::String(event.name.clone()));
    }
    if let Some((f, format)) = &p.timestamp_field {
        obj.insert(f.clone(), timestamp(event.received_at, *format));
    }
    Value::Object(obj)
}

fn timestamp(t: SystemTime, format: TimestampFormat) -> Value {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    match format {
        TimestampFormat::Unix => Value::from(d.as_secs()),
        TimestampFormat::UnixMs => Value::from(d.as_millis() as u64),
        TimestampFormat::Rfc3339 => Value::String(humantime::format_rfc3339_millis(t).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::{Format, from_str};
    use crate::event::Source;
    use crate::mqtt::codec::QoS;

    fn router(yaml: &str) -> Router {
        Router::new(&from_str(yaml, Format::Yaml, "t.yaml").unwrap())
    }

    fn event(name: &str, fields: Value) -> Event {
        let Value::Object(m) = fields else {
            panic!("object")
        };
        Event::new(name, m, Source::Api)
    }

    #[test]
    fn fan_out_sends_one_message_per_matching_route() {
        let r = router(
            "topic_prefix: flamenco\nroutes:\n  - {match: [LastRendered], topic: 'jobs/{job_id}/last-rendered'}\n  - {match: [LastRendered], topic: last-rendered}\n",
        );
        let mut out = vec![];
        r.route(&event("LastRendered", json!({"job_id": "j1"})), &mut out)
            .unwrap();
        let topics: Vec<&str> = out.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(
            topics,
            ["flamenco/jobs/j1/last-rendered", "flamenco/last-rendered"]
        );
    }

    #[test]
    fn octoprint_shape_adds_event_and_timestamp_fields() {
        let r = router(
            "topic_prefix: octoPrint\nroutes:\n  - match: ['*']\n    topic: 'event/{event}'\n    qos: 0\n    payload: {event_field: _event, timestamp_field: _timestamp, timestamp: unix}\n",
        );
        let mut out = vec![];
        r.route(&event("PrintStarted", json!({"name": "x.gcode"})), &mut out)
            .unwrap();
        assert_eq!(out[0].topic, "octoPrint/event/PrintStarted");
        assert_eq!(out[0].qos, QoS::AtMostOnce);
        let v: Value = serde_json::from_slice(&out[0].payload).unwrap();
        assert_eq!(v["_event"], "PrintStarted");
        assert_eq!(v["name"], "x.gcode");
        assert!(v["_timestamp"].as_u64().unwrap() > 1_700_000_000);
    }

    #[test]
    fn zuul_branch_with_plus_is_sanitised_and_slashes_add_levels() {
        let r = router(
            "routes:\n  - {match: ['*'], topic: '{tenant}/zuul/{pipeline}/{project}/{branch}', qos: 2}\n",
        );
        let mut out = vec![];
        r.route(
            &event("buildset", json!({"tenant": "t", "pipeline": "check", "project": "org/proj", "branch": "c++-test"})),
            &mut out,
        )
        .unwrap();
        assert_eq!(out[0].topic, "t/zuul/check/org/proj/c__-test");
    }

    #[test]
    fn missing_field_names_route_and_field() {
        let r = router("routes:\n  - {name: tasks, match: [TaskUpdate], topic: 'jobs/{job_id}'}\n");
        let err = r
            .route(&event("TaskUpdate", json!({})), &mut vec![])
            .unwrap_err();
        assert_eq!(err.code(), "missing_field");
        assert!(
            err.to_string().contains("tasks") && err.to_string().contains("job_id"),
            "{err}"
        );
    }

    #[test]
    fn a_route_transform_reshapes_the_payload_or_skips_the_event() {
        let r = router(
            "routes:\n  - match: ['*']\n    topic: t\n    payload: {event_field: ev, transform: 'if .skip then empty else {e: .ev, v: (.n + 21)} end'}\n",
        );
        let mut out = vec![];
        r.route(&event("E", json!({"n": 21, "skip": false})), &mut out)
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&out[0].payload).unwrap(),
            json!({"e": "E", "v": 42})
        );
        out.clear();
        r.route(&event("E", json!({"n": 1, "skip": true})), &mut out)
            .unwrap();
        assert!(out.is_empty());
        let err = r
            .route(&event("E", json!({"n": "x", "skip": false})), &mut out)
            .unwrap_err();
        assert_eq!(err.code(), "transform_failed");
    }

    #[test]
    fn a_bad_route_transform_is_refused_at_load() {
        let e = from_str(
            "routes:\n  - {match: ['*'], topic: t, payload: {transform: '.a |'}}\n",
            Format::Yaml,
            "t.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("t.yaml:2:"), "{e}");
        assert!(e.contains("routes[0].payload.transform"), "{e}");
    }

    #[test]
    fn payload_keeps_field_order_and_exact_numbers() {
        let r = router(
            "routes:\n  - {match: ['*'], topic: t}\n  - {match: ['*'], topic: u, payload: {event_field: e}}\n",
        );
        let Value::Object(m) =
            serde_json::from_str(r#"{"z":1,"a":1524801093.5689101,"m":[3,2]}"#).unwrap()
        else {
            panic!()
        };
        let mut out = vec![];
        r.route(&Event::new("x", m, Source::Api), &mut out).unwrap();
        assert_eq!(
            &out[0].payload[..],
            br#"{"z":1,"a":1524801093.5689101,"m":[3,2]}"#
        );
        assert_eq!(
            &out[1].payload[..],
            br#"{"z":1,"a":1524801093.5689101,"m":[3,2],"e":"x"}"#
        );
    }

    #[test]
    fn unmatched_event_is_no_route() {
        let r = router("routes:\n  - {match: [A], topic: a}\n");
        assert_eq!(
            r.route(&event("B", json!({})), &mut vec![])
                .unwrap_err()
                .code(),
            "no_route"
        );
    }

    #[test]
    fn a_failing_route_appends_nothing() {
        let r = router(
            "routes:\n  - {match: ['*'], topic: ok}\n  - {match: ['*'], topic: '{missing}'}\n",
        );
        let mut out = vec![];
        assert!(r.route(&event("e", json!({})), &mut out).is_err());
        assert!(out.is_empty());
    }
}
