//! The ingest handlers: content type, body limit, parsing (pure, fuzzed:
//! [`parse_batch`]) and handing events to [`Ingest`], answering 202 only after the spool
//! has them.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{ApiError, App, Json};
use crate::event::{Event, Source};

/// How a batch body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// One JSON document: an array of events or a single event object.
    Json,
    /// Newline-delimited JSON, one event object per line.
    Ndjson,
}

fn content_kind(headers: &HeaderMap, allow_ndjson: bool) -> Result<BodyKind, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Ok(BodyKind::Json),
        m if m.starts_with("application/") && m.ends_with("+json") => Ok(BodyKind::Json),
        "application/x-ndjson"
        | "application/jsonl"
        | "application/jsonlines"
        | "application/x-jsonlines"
            if allow_ndjson =>
        {
            Ok(BodyKind::Ndjson)
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            if allow_ndjson {
                format!(
                    "content type '{ct}' is not accepted: use application/json or application/x-ndjson"
                )
            } else {
                format!("content type '{ct}' is not accepted: use application/json")
            },
        )),
    }
}

/// Read the body within the limit: refused from Content-Length before reading a byte, or
/// as soon as the limit is crossed.
async fn read_body(app: &App, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let max = app.opts.max_body;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds {max} bytes"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max
    {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, usize::try_from(max).unwrap_or(usize::MAX)).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let limit = std::error::Error::source(&e)
                .map(|s| s.is::<http_body_util::LengthLimitError>())
                .unwrap_or(false)
                || e.to_string().contains("length limit");
            if limit {
                Err(too_large())
            } else {
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("cannot read request body: {e}"),
                ))
            }
        }
    }
}

fn parse_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("{what} must be a JSON object, not {}", kind(&other)),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("{what} is not valid JSON: {e}"),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_event_name(name: &str, what: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_event_name",
            format!("{what}: event name must be 1 to 256 characters without control characters"),
        ));
    }
    Ok(())
}

fn accepted(body: Value) -> Response {
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

pub(super) async fn post_event(
    State(app): State<App>,
    Path(event): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    content_kind(&headers, false)?;
    check_event_name(&event, "path")?;
    let bytes = read_body(&app, &headers, body).await?;
    let fields = parse_object(&bytes, "body")?;
    let a = app
        .ingest
        .accept(&[Event::new(event, fields, Source::Http)])
        .await?;
    // No id when a transform filtered every message out: nothing was stored.
    let id = (a.messages > 0).then_some(a.first_id);
    Ok(accepted(json!({"id": id, "messages": a.messages})))
}

fn batch_item(v: Value, at: &str) -> Result<Event, ApiError> {
    let Value::Object(mut m) = v else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("{at}: each event must be a JSON object, not {}", kind(&v)),
        ));
    };
    let name = match m.remove("event") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_event_name",
                format!("{at}: \"event\" must be a string, not {}", kind(&other)),
            ));
        }
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_event",
                format!("{at}: missing \"event\" (the event name)"),
            ));
        }
    };
    check_event_name(&name, at)?;
    Ok(Event::new(name, m, Source::Http))
}

/// Parse a `POST /v1/events` body: a JSON array of event objects (or one object), or NDJSON.
/// Pure, so it can be fuzzed and tested without a server.
///
/// # Errors
/// An [`ApiError`] (400) naming the item or line that is not an event.
pub fn parse_batch(bytes: &[u8], kind: BodyKind) -> Result<Vec<Event>, ApiError> {
    let mut events = Vec::new();
    match kind {
        BodyKind::Json => match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Array(items)) => {
                for (i, v) in items.into_iter().enumerate() {
                    events.push(batch_item(v, &format!("item {i}"))?);
                }
            }
            Ok(v @ Value::Object(_)) => events.push(batch_item(v, "body")?),
            Ok(other) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    format!(
                        "body must be a JSON array of events, not {}",
                        self::kind(&other)
                    ),
                ));
            }
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    format!("body is not valid JSON: {e}"),
                ));
            }
        },
        BodyKind::Ndjson => {
            for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let v = serde_json::from_slice::<Value>(line).map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_json",
                        format!("line {}: not valid JSON: {e}", i + 1),
                    )
                })?;
                events.push(batch_item(v, &format!("line {}", i + 1))?);
            }
        }
    }
    if events.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_batch",
            "the batch contains no events",
        ));
    }
    Ok(events)
}

pub(super) async fn post_events(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let kind = content_kind(&headers, true)?;
    let bytes = read_body(&app, &headers, body).await?;
    let events = parse_batch(&bytes, kind)?;
    let a = app.ingest.accept(&events).await?;
    Ok(accepted(
        json!({"accepted": a.events, "messages": a.messages}),
    ))
}

pub(super) async fn post_publish(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    content_kind(&headers, false)?;
    let bytes = read_body(&app, &headers, body).await?;
    let mut m = parse_object(&bytes, "body")?;
    let bad = |msg: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg);
    let topic = match m.remove("topic") {
        Some(Value::String(t)) => t,
        _ => return Err(bad("\"topic\" (a string) is required".into())),
    };
    let payload = match m.remove("payload") {
        Some(Value::String(s)) => Bytes::from(s.into_bytes()),
        None | Some(Value::Null) => Bytes::new(),
        Some(other) => Bytes::from(serde_json::to_vec(&other).unwrap_or_default()),
    };
    let qos = match m.remove("qos") {
        None => 1,
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u8::try_from(n).ok()).unwrap_or(255),
        Some(_) => return Err(bad("\"qos\" must be 0, 1 or 2".into())),
    };
    let retain = match m.remove("retain") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(bad("\"retain\" must be a boolean".into())),
    };
    if let Some(k) = m.keys().next() {
        return Err(bad(format!(
            "unknown field \"{k}\" (topic, payload, qos, retain)"
        )));
    }
    let a = app.ingest.publish_raw(&topic, payload, qos, retain).await?;
    Ok(accepted(json!({"id": a.first_id})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_batch_reads_json_arrays_objects_and_ndjson() {
        let events =
            parse_batch(br#"[{"event":"a","x":1},{"event":"b"}]"#, BodyKind::Json).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            parse_batch(br#"{"event":"a"}"#, BodyKind::Json)
                .unwrap()
                .len(),
            1
        );
        let nd = parse_batch(
            b"{\"event\":\"a\"}\r\n\n{\"event\":\"b\"}\n",
            BodyKind::Ndjson,
        )
        .unwrap();
        assert_eq!(nd.len(), 2);
    }

    #[test]
    fn parse_batch_refuses_hostile_bodies_with_400() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let cases: Vec<(Vec<u8>, BodyKind)> = vec![
            (deep.clone().into_bytes(), BodyKind::Json),
            (deep.into_bytes(), BodyKind::Ndjson),
            (b"[{\"event\":\"a\xff\"}]".to_vec(), BodyKind::Json),
            (b"\xff\xfe".to_vec(), BodyKind::Ndjson),
            (b"[]".to_vec(), BodyKind::Json),
            (b"\n\n".to_vec(), BodyKind::Ndjson),
            (br#"[1]"#.to_vec(), BodyKind::Json),
            (br#"{"event":""}"#.to_vec(), BodyKind::Json),
            (br#"{"event":7}"#.to_vec(), BodyKind::Ndjson),
        ];
        for (body, kind) in cases {
            let e = parse_batch(&body, kind).expect_err("hostile body accepted");
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e:?}");
        }
    }
}
