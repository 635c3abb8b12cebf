//! Topic templates: `jobs/{job_id}`, `{tenant}/zuul/{pipeline}`, `{prefix}/status`.
//!
//! A template is literal text with `{placeholder}` segments. Placeholders are the
//! built-ins `{event}` (the event name), `{hostname}`, `{prefix}` (the configured topic
//! prefix, trailing `/` removed) and event fields: `{field}` or `{a.b.c}` for nested JSON
//! objects (a top-level key that itself contains dots is tried first). `{{` and `}}` write
//! literal braces.
//!
//! Templates are parsed once at config load; [`Template::check`] restricts which
//! placeholders a given setting may use, and [`Template::resolve_builtins`] folds
//! `{hostname}` / `{prefix}` into literal text so rendering per event only looks up fields.
//! [`Template::render`] sanitises every substituted value (`+`, `#`, NUL → `_`, and `/` →
//! `_` under [`SlashPolicy::Replace`]) and validates the finished topic name.

use std::fmt::{self, Write as _};

use serde_json::Value;

use super::filter::{TopicError, join_prefix, validate_topic_name};

/// A placeholder inside a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// `{event}`: the event name.
    Event,
    /// `{hostname}`: this machine's host name.
    Hostname,
    /// `{prefix}`: the configured `topic_prefix` without trailing slashes.
    Prefix,
    /// `{a.b.c}`: a (possibly nested) field of the event's JSON object; the path segments.
    Field(Vec<String>),
}

impl Placeholder {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "event" => Placeholder::Event,
            "hostname" => Placeholder::Hostname,
            "prefix" => Placeholder::Prefix,
            _ => {
                let path: Vec<String> = name.split('.').map(str::to_string).collect();
                if path.iter().any(String::is_empty) {
                    return None;
                }
                Placeholder::Field(path)
            }
        })
    }

    /// The placeholder's name as written between the braces (`job.id`).
    pub fn name(&self) -> String {
        match self {
            Placeholder::Event => "event".into(),
            Placeholder::Hostname => "hostname".into(),
            Placeholder::Prefix => "prefix".into(),
            Placeholder::Field(path) => path.join("."),
        }
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Placeholder { ph: Placeholder, offset: usize },
}

/// Why a template did not parse or is not allowed where it is used. Offsets are byte
/// offsets into the template text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{` without a matching `}`.
    #[error("unclosed '{{' at byte {offset} (write '{{{{' for a literal brace)")]
    Unclosed {
        /// Offset of the `{`.
        offset: usize,
    },
    /// `}` outside a placeholder.
    #[error("unmatched '}}' at byte {offset} (write '}}}}' for a literal brace)")]
    UnmatchedClose {
        /// Offset of the `}`.
        offset: usize,
    },
    /// `{}`.
    #[error("empty placeholder '{{}}' at byte {offset}")]
    Empty {
        /// Offset of the `{`.
        offset: usize,
    },
    /// `{a..b}` or `{.a}`: an empty segment in a field path.
    #[error("placeholder {{{name}}} at byte {offset} has an empty field name between dots")]
    BadField {
        /// The text between the braces.
        name: String,
        /// Offset of the `{`.
        offset: usize,
    },
    /// `+` or `#` written literally in a topic template.
    #[error("'{ch}' at byte {offset}: wildcards are not allowed in a topic")]
    Wildcard {
        /// The wildcard.
        ch: char,
        /// Its offset.
        offset: usize,
    },
    /// A literal NUL.
    #[error("NUL character at byte {offset}")]
    Nul {
        /// Its offset.
        offset: usize,
    },
    /// A placeholder this setting does not support.
    #[error("unknown placeholder {placeholder} at byte {offset} ({allowed})")]
    Unknown {
        /// The placeholder with braces, e.g. `{jobid}`.
        placeholder: String,
        /// Offset of the `{`.
        offset: usize,
        /// What is allowed here, in words.
        allowed: String,
    },
}

/// Which event fields a template may reference.
#[derive(Debug, Clone, Copy)]
pub enum FieldRule<'a> {
    /// Any field (fields come from the event at render time).
    Any,
    /// Only these top-level names.
    Only(&'a [&'a str]),
    /// No fields at all.
    None,
}

/// Which placeholders a setting accepts; see [`Template::check`].
#[derive(Debug, Clone, Copy)]
pub struct Allowed<'a> {
    /// `{event}` allowed.
    pub event: bool,
    /// `{hostname}` allowed.
    pub hostname: bool,
    /// `{prefix}` allowed.
    pub prefix: bool,
    /// Which fields are allowed.
    pub fields: FieldRule<'a>,
}

impl Allowed<'static> {
    /// Route topics and user properties: everything.
    pub const EVENT: Allowed<'static> = Allowed {
        event: true,
        hostname: true,
        prefix: true,
        fields: FieldRule::Any,
    };
    /// Settings resolved once at load (lifecycle topic): `{hostname}` and `{prefix}`.
    pub const BUILTINS: Allowed<'static> = Allowed {
        event: false,
        hostname: true,
        prefix: true,
        fields: FieldRule::None,
    };
    /// Client ids: `{hostname}` only.
    pub const HOSTNAME: Allowed<'static> = Allowed {
        event: false,
        hostname: true,
        prefix: false,
        fields: FieldRule::None,
    };
}

impl Allowed<'_> {
    fn permits(&self, ph: &Placeholder) -> bool {
        match ph {
            Placeholder::Event => self.event,
            Placeholder::Hostname => self.hostname,
            Placeholder::Prefix => self.prefix,
            Placeholder::Field(path) => match self.fields {
                FieldRule::Any => true,
                FieldRule::Only(names) => path.len() == 1 && names.contains(&path[0].as_str()),
                FieldRule::None => false,
            },
        }
    }

    fn describe(&self) -> String {
        let mut builtins: Vec<&str> = Vec::new();
        if self.event {
            builtins.push("event");
        }
        if self.hostname {
            builtins.push("hostname");
        }
        if self.prefix {
            builtins.push("prefix");
        }
        match self.fields {
            FieldRule::Any => format!(
                "fields come from the event; known built-ins: {}",
                builtins.join(", ")
            ),
            FieldRule::Only(names) => {
                let all: Vec<&str> = builtins.iter().chain(names.iter()).copied().collect();
                format!("this setting may use only: {}", all.join(", "))
            }
            FieldRule::None if builtins.is_empty() => "this setting takes no placeholders".into(),
            FieldRule::None => format!("this setting may use only: {}", builtins.join(", ")),
        }
    }
}

/// Whether `/` inside a substituted value is kept (adding topic levels) or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlashPolicy {
    /// Keep `/` (Zuul's `org/project` becomes two levels).
    #[default]
    Keep,
    /// Replace `/` in values with `_`.
    Replace,
}

/// What a template is rendered against.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext<'a> {
    /// The event name, for `{event}`.
    pub event: &'a str,
    /// The event's JSON object, for field placeholders.
    pub fields: &'a Value,
    /// For `{hostname}` (unless already resolved at load).
    pub hostname: &'a str,
    /// For `{prefix}` (unless already resolved at load).
    pub prefix: &'a str,
    /// What to do with `/` in substituted values.
    pub slash: SlashPolicy,
}

/// Why rendering a template for one event failed (HTTP 422 territory).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The event has no such field.
    #[error("event has no field '{field}' (needed by the topic template)")]
    MissingField {
        /// The field path, dotted.
        field: String,
    },
    /// The field is null, an object or an array.
    #[error("field '{field}' is {kind}; a topic template needs a string, number or boolean")]
    NotScalar {
        /// The field path, dotted.
        field: String,
        /// `null`, `an object` or `an array`.
        kind: &'static str,
    },
    /// The rendered topic is not a valid topic name.
    #[error("rendered topic is invalid: {reason}")]
    InvalidTopic {
        /// Which rule it broke.
        reason: TopicError,
    },
}

/// A parsed template.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
    literal_len: usize,
}

impl Template {
    /// Parse a *topic* template: literal `+`, `#` and NUL are refused.
    ///
    /// # Errors
    /// [`TemplateError`] with the byte offset of the problem.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        Self::parse_inner(source, true)
    }

    /// Parse a template for free text (e.g. an MQTT user-property value): any literal
    /// characters are allowed.
    ///
    /// # Errors
    /// [`TemplateError`] for malformed braces.
    pub fn parse_text(source: &str) -> Result<Self, TemplateError> {
        Self::parse_inner(source, false)
    }

    fn parse_inner(source: &str, topic: bool) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let bytes = source.as_bytes();
        let mut i = 0;
        let mut lit_start = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'{' if bytes.get(i + 1) == Some(&b'{') => {
                    lit.push_str(&source[lit_start..i + 1]);
                    i += 2;
                    lit_start = i;
                }
                b'}' if bytes.get(i + 1) == Some(&b'}') => {
                    lit.push_str(&source[lit_start..i + 1]);
                    i += 2;
                    lit_start = i;
                }
                b'}' => return Err(TemplateError::UnmatchedClose { offset: i }),
                b'{' => {
                    lit.push_str(&source[lit_start..i]);
                    let rest = &source[i + 1..];
                    let close = match rest.find(['}', '{']) {
                        Some(n) if rest.as_bytes()[n] == b'}' => n,
                        _ => return Err(TemplateError::Unclosed { offset: i }),
                    };
                    let name = &rest[..close];
                    if name.is_empty() {
                        return Err(TemplateError::Empty { offset: i });
                    }
                    let ph =
                        Placeholder::from_name(name).ok_or_else(|| TemplateError::BadField {
                            name: name.to_string(),
                            offset: i,
                        })?;
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Placeholder { ph, offset: i });
                    i += close + 2;
                    lit_start = i;
                }
                b'+' | b'#' if topic => {
                    return Err(TemplateError::Wildcard {
                        ch: char::from(bytes[i]),
                        offset: i,
                    });
                }
                0 if topic => return Err(TemplateError::Nul { offset: i }),
                _ => i += 1,
            }
        }
        lit.push_str(&source[lit_start..]);
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(Self::from_parts(source.to_string(), parts))
    }

    fn from_parts(source: String, parts: Vec<Part>) -> Self {
        let literal_len = parts
            .iter()
            .map(|p| match p {
                Part::Literal(s) => s.len(),
                Part::Placeholder { .. } => 0,
            })
            .sum();
        Template {
            source,
            parts,
            literal_len,
        }
    }

    /// The template text as written in the config.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The placeholders used, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|p| match p {
            Part::Placeholder { ph, .. } => Some(ph),
            Part::Literal(_) => None,
        })
    }

    /// True when the template has no placeholders left: it renders to [`Self::literal`].
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The literal text when [`Self::is_literal`], else `None`.
    pub fn literal(&self) -> Option<String> {
        self.is_literal().then(|| {
            self.parts
                .iter()
                .map(|p| match p {
                    Part::Literal(s) => s.as_str(),
                    Part::Placeholder { .. } => "",
                })
                .collect()
        })
    }

    /// True when `{prefix}` appears.
    pub fn uses_prefix(&self) -> bool {
        self.placeholders().any(|p| *p == Placeholder::Prefix)
    }

    /// Refuse placeholders that `allowed` does not permit.
    ///
    /// # Errors
    /// [`TemplateError::Unknown`] for the first placeholder not permitted.
    pub fn check(&self, allowed: &Allowed<'_>) -> Result<(), TemplateError> {
        for part in &self.parts {
            if let Part::Placeholder { ph, offset } = part
                && !allowed.permits(ph)
            {
                return Err(TemplateError::Unknown {
                    placeholder: ph.to_string(),
                    offset: *offset,
                    allowed: allowed.describe(),
                });
            }
        }
        Ok(())
    }

    /// Replace `{hostname}` and `{prefix}` with literal text (hostname sanitised like any
    /// value with `/` kept; prefix without trailing slashes), so per-event rendering only
    /// looks up fields. [`Self::as_str`] keeps the original text.
    pub fn resolve_builtins(&self, hostname: &str, prefix: &str) -> Template {
        let prefix = prefix.trim_end_matches('/');
        let mut parts: Vec<Part> = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            let text = match part {
                Part::Placeholder {
                    ph: Placeholder::Hostname,
                    ..
                } => {
                    let mut s = String::new();
                    push_sanitized(&mut s, hostname, SlashPolicy::Keep);
                    s
                }
                Part::Placeholder {
                    ph: Placeholder::Prefix,
                    ..
                } => prefix.to_string(),
                other => {
                    parts.push(other.clone());
                    continue;
                }
            };
            match parts.last_mut() {
                Some(Part::Literal(prev)) => prev.push_str(&text),
                _ if text.is_empty() => {}
                _ => parts.push(Part::Literal(text)),
            }
        }
        merge_literals(&mut parts);
        Self::from_parts(self.source.clone(), parts)
    }

    /// Put `prefix` in front with exactly one `/` at the join (see
    /// [`join_prefix`](super::join_prefix)); an empty prefix changes nothing.
    pub fn with_prefix(&self, prefix: &str) -> Template {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return self.clone();
        }
        let mut parts = self.parts.clone();
        match parts.first_mut() {
            Some(Part::Literal(first)) => *first = join_prefix(prefix, first),
            _ => parts.insert(0, Part::Literal(format!("{prefix}/"))),
        }
        Self::from_parts(join_prefix(prefix, &self.source), parts)
    }

    /// Render a topic for one event: substitute, sanitise values, validate the result.
    ///
    /// # Errors
    /// [`RenderError::MissingField`] / [`RenderError::NotScalar`] naming the field, or
    /// [`RenderError::InvalidTopic`] when the result is empty or too long.
    pub fn render(&self, ctx: &RenderContext<'_>) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.literal_len + 32);
        self.render_into(ctx, &mut out, true)?;
        validate_topic_name(&out).map_err(|reason| RenderError::InvalidTopic { reason })?;
        Ok(out)
    }

    /// Render free text (e.g. a user-property value): values are inserted verbatim and the
    /// result is not checked as a topic.
    ///
    /// # Errors
    /// [`RenderError::MissingField`] / [`RenderError::NotScalar`] naming the field.
    pub fn render_text(&self, ctx: &RenderContext<'_>) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.literal_len + 32);
        self.render_into(ctx, &mut out, false)?;
        Ok(out)
    }

    fn render_into(
        &self,
        ctx: &RenderContext<'_>,
        out: &mut String,
        sanitize: bool,
    ) -> Result<(), RenderError> {
        let push = |out: &mut String, s: &str, slash: SlashPolicy| {
            if sanitize {
                push_sanitized(out, s, slash);
            } else {
                out.push_str(s);
            }
        };
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Placeholder { ph, .. } => match ph {
                    Placeholder::Event => push(out, ctx.event, ctx.slash),
                    Placeholder::Hostname => push(out, ctx.hostname, ctx.slash),
                    Placeholder::Prefix => {
                        push(out, ctx.prefix.trim_end_matches('/'), SlashPolicy::Keep);
                    }
                    Placeholder::Field(path) => match lookup(ctx.fields, path) {
                        Some(Value::String(s)) => push(out, s, ctx.slash),
                        Some(Value::Number(n)) => {
                            // Display of a JSON number never contains '+', '#' or '/'.
                            let _ = write!(out, "{n}");
                        }
                        Some(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
                        Some(other) => {
                            return Err(RenderError::NotScalar {
                                field: path.join("."),
                                kind: match other {
                                    Value::Null => "null",
                                    Value::Array(_) => "an array",
                                    _ => "an object",
                                },
                            });
                        }
                        None => {
                            return Err(RenderError::MissingField {
                                field: path.join("."),
                            });
                        }
                    },
                },
            }
        }
        Ok(())
    }
}

fn merge_literals(parts: &mut Vec<Part>) {
    let mut merged: Vec<Part> = Vec::with_capacity(parts.len());
    for part in parts.drain(..) {
        match (merged.last_mut(), part) {
            (Some(Part::Literal(prev)), Part::Literal(s)) => prev.push_str(&s),
            (_, Part::Literal(s)) if s.is_empty() => {}
            (_, p) => merged.push(p),
        }
    }
    *parts = merged;
}

/// Find a field: a top-level key equal to the whole dotted name first, then the nested path.
fn lookup<'v>(fields: &'v Value, path: &[String]) -> Option<&'v Value> {
    let obj = fields.as_object()?;
    if path.len() > 1
        && let Some(v) = obj.get(&path.join("."))
    {
        return Some(v);
    }
    let mut cur = obj.get(&path[0])?;
    for seg in &path[1..] {
        cur = cur.as_object()?.get(seg)?;
    }
    Some(cur)
}

fn needs_sanitizing(b: u8, slash: SlashPolicy) -> bool {
    matches!(b, b'+' | b'#' | 0) || (b == b'/' && slash == SlashPolicy::Replace)
}

/// Append `value` with `+`, `#`, NUL (and `/` under [`SlashPolicy::Replace`]) turned into `_`.
fn push_sanitized(out: &mut String, value: &str, slash: SlashPolicy) {
    if !value.bytes().any(|b| needs_sanitizing(b, slash)) {
        out.push_str(value);
        return;
    }
    // All replaced characters are ASCII, so byte-wise replacement keeps UTF-8 intact.
    out.extend(value.chars().map(|c| {
        if c.is_ascii() && needs_sanitizing(c as u8, slash) {
            '_'
        } else {
            c
        }
    }));
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ctx<'a>(event: &'a str, fields: &'a Value) -> RenderContext<'a> {
        RenderContext {
            event,
            fields,
            hostname: "host1",
            prefix: "flamenco",
            slash: SlashPolicy::Keep,
        }
    }

    #[test]
    fn renders_fields_nested_fields_and_builtins() {
        let t = Template::parse("{prefix}/jobs/{job.id}/{event}/{hostname}/{n}/{ok}").unwrap();
        let f = json!({"job": {"id": "j-1"}, "n": 42, "ok": true});
        assert_eq!(
            t.render(&ctx("TaskUpdate", &f)).unwrap(),
            "flamenco/jobs/j-1/TaskUpdate/host1/42/true"
        );
    }

    #[test]
    fn zuul_topic_keeps_slashes_and_sanitises_wildcards() {
        let t = Template::parse("{tenant}/zuul/{pipeline}/{project}/{branch}/{change}").unwrap();
        let f = json!({"tenant": "t", "pipeline": "check", "project": "org/project",
                       "branch": "c++-test#1", "change": 123});
        assert_eq!(
            t.render(&ctx("x", &f)).unwrap(),
            "t/zuul/check/org/project/c__-test_1/123"
        );
        let replace = RenderContext {
            slash: SlashPolicy::Replace,
            ..ctx("x", &f)
        };
        assert_eq!(
            t.render(&replace).unwrap(),
            "t/zuul/check/org_project/c__-test_1/123"
        );
    }

    #[test]
    fn missing_and_non_scalar_fields_are_named() {
        let t = Template::parse("jobs/{job_id}").unwrap();
        assert_eq!(
            t.render(&ctx("e", &json!({}))),
            Err(RenderError::MissingField {
                field: "job_id".into()
            })
        );
        let t = Template::parse("jobs/{a.b}").unwrap();
        assert_eq!(
            t.render(&ctx("e", &json!({"a": {"c": 1}}))),
            Err(RenderError::MissingField {
                field: "a.b".into()
            })
        );
        assert_eq!(
            t.render(&ctx("e", &json!({"a": {"b": [1]}}))),
            Err(RenderError::NotScalar {
                field: "a.b".into(),
                kind: "an array"
            })
        );
        assert_eq!(
            t.render(&ctx("e", &json!({"a": {"b": null}}))),
            Err(RenderError::NotScalar {
                field: "a.b".into(),
                kind: "null"
            })
        );
        // A top-level key containing a dot wins over the nested path.
        assert_eq!(
            t.render(&ctx("e", &json!({"a.b": "flat", "a": {"b": "nested"}})))
                .unwrap(),
            "jobs/flat"
        );
    }

    #[test]
    fn rendered_topic_is_validated() {
        let t = Template::parse("{x}").unwrap();
        assert!(matches!(
            t.render(&ctx("e", &json!({"x": ""}))),
            Err(RenderError::InvalidTopic {
                reason: TopicError::Empty
            })
        ));
        let long = "a".repeat(70_000);
        assert!(matches!(
            t.render(&ctx("e", &json!({ "x": long }))),
            Err(RenderError::InvalidTopic {
                reason: TopicError::TooLong { .. }
            })
        ));
        assert_eq!(t.render(&ctx("e", &json!({"x": "a\0b"}))).unwrap(), "a_b");
    }

    #[test]
    fn braces_escape_and_malformed_templates_report_offsets() {
        let t = Template::parse_text("{{literal}} {x}").unwrap();
        assert_eq!(
            t.render_text(&ctx("e", &json!({"x": "+"}))).unwrap(),
            "{literal} +"
        );
        assert_eq!(
            Template::parse("a/{b"),
            Err(TemplateError::Unclosed { offset: 2 })
        );
        assert_eq!(
            Template::parse("a/{b{c}"),
            Err(TemplateError::Unclosed { offset: 2 })
        );
        assert_eq!(
            Template::parse("a/{}"),
            Err(TemplateError::Empty { offset: 2 })
        );
        assert_eq!(
            Template::parse("a}"),
            Err(TemplateError::UnmatchedClose { offset: 1 })
        );
        assert_eq!(
            Template::parse("a/+/b"),
            Err(TemplateError::Wildcard { ch: '+', offset: 2 })
        );
        assert_eq!(
            Template::parse("a/#"),
            Err(TemplateError::Wildcard { ch: '#', offset: 2 })
        );
        assert!(matches!(
            Template::parse("{a..b}"),
            Err(TemplateError::BadField { offset: 0, .. })
        ));
        assert!(Template::parse_text("a+b#").is_ok());
    }

    #[test]
    fn check_rejects_placeholders_the_setting_does_not_know() {
        let t = Template::parse("{prefix}/{jobid}").unwrap();
        let err = t.check(&Allowed::BUILTINS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown placeholder {jobid} at byte 9 (this setting may use only: hostname, prefix)"
        );
        assert!(t.check(&Allowed::EVENT).is_ok());
        let only = Allowed {
            event: false,
            hostname: true,
            prefix: false,
            fields: FieldRule::Only(&["topic"]),
        };
        assert!(
            Template::parse("bridge/{topic}")
                .unwrap()
                .check(&only)
                .is_ok()
        );
        assert!(
            Template::parse("bridge/{event}")
                .unwrap()
                .check(&only)
                .is_err()
        );
    }

    #[test]
    fn builtins_resolve_at_load_and_prefix_joins_once() {
        let t = Template::parse("{prefix}/status/{hostname}").unwrap();
        let r = t.resolve_builtins("h+1", "butler-sos/");
        assert!(r.is_literal());
        assert_eq!(r.literal().unwrap(), "butler-sos/status/h_1");
        let t = Template::parse("/jobs/{job}")
            .unwrap()
            .with_prefix("flamenco/");
        let f = json!({"job": "j"});
        assert_eq!(t.render(&ctx("e", &f)).unwrap(), "flamenco/jobs/j");
        let t = Template::parse("{job}").unwrap().with_prefix("p");
        assert_eq!(t.render(&ctx("e", &f)).unwrap(), "p/j");
        let t = Template::parse("x").unwrap().with_prefix("");
        assert_eq!(t.render(&ctx("e", &f)).unwrap(), "x");
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<String>().prop_map(Value::String),
            "[a-z/+#\\x00]{0,8}".prop_map(Value::String),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::Bool),
        ]
    }

    proptest! {
        #[test]
        fn render_never_yields_wildcards_or_nul(
            a in scalar(), b in scalar(), event in any::<String>(),
            lit in "[a-z/]{0,6}", replace in any::<bool>(),
        ) {
            let t = Template::parse(&format!("{lit}{{a}}/{{event}}/{{b}}{lit}")).unwrap();
            let fields = json!({"a": a, "b": b});
            let c = RenderContext {
                slash: if replace { SlashPolicy::Replace } else { SlashPolicy::Keep },
                ..ctx(&event, &fields)
            };
            if let Ok(topic) = t.render(&c) {
                prop_assert!(!topic.contains(['+', '#', '\0']));
                prop_assert!(validate_topic_name(&topic).is_ok());
            }
        }

        #[test]
        fn parse_never_panics_and_literal_round_trips(s in "[a-z{}/+.]{0,12}") {
            if let Ok(t) = Template::parse(&s) {
                prop_assert_eq!(t.as_str(), s.as_str());
            }
        }
    }
}
