//! Transforms: a connector's `filter` / `map` / `arraymap` steps in the jq language (jaq).
//!
//! A [`Chain`] is compiled once from the validated `[Transform]` list; a jq syntax error or
//! an undefined name is a [`CompileError`] naming the connector, the step index and the
//! byte offset in the expression. Per record, [`Chain::apply`] runs the steps in order:
//!
//! - `filter`: the record stays when the expression's first output is `true`, goes when it
//!   is `false` or there is no output; any other value is an error;
//! - `map`: the record becomes the expression's first output (no output drops it);
//! - `arraymap`: the expression's first output must be an array; each element becomes a
//!   record of its own (one in, many out), like Fluvio's `arraymap`.
//!
//! A runtime error on one record is a [`RuntimeError`] value, never a panic: the connector
//! dead-letters that record and carries on. jq's `halt` is an error too (jaq's helper would
//! exit the process).
//!
//! jaq parses, compiles and runs recursively, so a deeply nested or very long program
//! overflows the stack (found by hand with deep and long inputs). [`check_size`] refuses such
//! programs before jaq sees them: at most [`MAX_JQ_NESTING`] levels of brackets, string
//! interpolations and block keywords, and [`MAX_JQ_OPERATORS`] operators and keywords, which
//! leaves real programs plenty of room and runs safely on a 2 MiB thread stack.
//!
//! Records enter and leave as [`serde_json::Value`] ([`Chain::apply_json`]) or as jaq values
//! ([`Chain::apply`]); [`to_val`] and [`from_val`] convert between the two.

use std::fmt;

use bytes::Bytes;
use jaq_core::compile::Filter;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Native, Vars, data};
use jaq_json::{Num, Rc, Val};
use serde_json::Value;

use crate::config::{self, Transform};

type D = data::JustLut<Val>;

/// Which kind of step, as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `filter`
    Filter,
    /// `map`
    Map,
    /// `arraymap`
    ArrayMap,
}

impl Kind {
    /// The config key.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Filter => "filter",
            Kind::Map => "map",
            Kind::ArrayMap => "arraymap",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transform expression that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}{sep}transforms[{index}] ({kind}): {message}", sep = if location.ends_with(']') { "." } else { " " })]
pub struct CompileError {
    /// Where the connector is, e.g. `connectors[0]` or `connector 'events'`.
    pub location: String,
    /// Step index.
    pub index: usize,
    /// Step kind.
    pub kind: Kind,
    /// What jaq said, with the byte offset in the expression.
    pub message: String,
}

/// A transform step failed on one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transforms[{index}] ({kind}): {message}")]
pub struct RuntimeError {
    /// Step index.
    pub index: usize,
    /// Step kind.
    pub kind: Kind,
    /// The jq error.
    pub message: String,
}

struct Step {
    kind: Kind,
    filter: Filter<Native<D>>,
}

/// Compiled transform steps of one connector.
#[derive(Default)]
pub struct Chain {
    steps: Vec<Step>,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|s| s.kind))
            .finish()
    }
}

/// Compile every connector's transforms of a validated config, so `mqlink check` and the
/// daemon refuse a bad expression at load.
///
/// # Errors
/// The first [`CompileError`], located as `connectors[i].transforms[j] (kind)`.
pub fn check(cfg: &config::Config) -> Result<Vec<Chain>, CompileError> {
    cfg.connectors
        .iter()
        .enumerate()
        .map(|(i, c)| Chain::compile(&format!("connectors[{i}]"), &c.transforms))
        .collect()
}

impl Chain {
    /// Compile `transforms`; `location` names the connector in errors.
    ///
    /// # Errors
    /// [`CompileError`] for the first step that does not parse or uses an undefined name.
    pub fn compile(location: &str, transforms: &[Transform]) -> Result<Chain, CompileError> {
        let mut steps = Vec::with_capacity(transforms.len());
        for (index, t) in transforms.iter().enumerate() {
            let (kind, code) = match t {
                Transform::Filter(c) => (Kind::Filter, c),
                Transform::Map(c) => (Kind::Map, c),
                Transform::ArrayMap(c) => (Kind::ArrayMap, c),
            };
            let filter = compile_one(code).map_err(|message| CompileError {
                location: location.to_string(),
                index,
                kind,
                message,
            })?;
            steps.push(Step { kind, filter });
        }
        Ok(Chain { steps })
    }

    /// No steps: records pass unchanged.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Run the steps on one record; the result may hold zero, one or many records.
    ///
    /// # Errors
    /// [`RuntimeError`] naming the step that failed.
    pub fn apply(&self, input: Val) -> Result<Vec<Val>, RuntimeError> {
        let mut records = vec![input];
        for (index, step) in self.steps.iter().enumerate() {
            let err = |message: String| RuntimeError {
                index,
                kind: step.kind,
                message,
            };
            let mut next = Vec::with_capacity(records.len());
            for rec in records {
                // Cloning a jaq value is cheap: arrays, objects and strings are shared.
                let Some(out) = first_output(&step.filter, rec.clone()).map_err(err)? else {
                    continue;
                };
                match step.kind {
                    Kind::Filter => match out {
                        Val::Bool(true) => next.push(rec),
                        Val::Bool(false) => {}
                        other => {
                            return Err(err(format!(
                                "a filter must yield a boolean, not {}",
                                kind_of(&other)
                            )));
                        }
                    },
                    Kind::Map => next.push(out),
                    Kind::ArrayMap => match out {
                        Val::Arr(items) => next.extend(items.iter().cloned()),
                        other => {
                            return Err(err(format!(
                                "an arraymap must yield an array, not {}",
                                kind_of(&other)
                            )));
                        }
                    },
                }
            }
            records = next;
        }
        Ok(records)
    }

    /// [`Self::apply`] on JSON values.
    ///
    /// # Errors
    /// [`RuntimeError`] naming the step that failed.
    pub fn apply_json(&self, input: &Value) -> Result<Vec<Value>, RuntimeError> {
        Ok(self.apply(to_val(input))?.iter().map(from_val).collect())
    }
}

/// Deepest nesting of `(`, `[`, `{`, `\\(` and block keywords accepted in a jq program.
pub const MAX_JQ_NESTING: usize = 64;
/// Most operators and keywords accepted in one jq program.
pub const MAX_JQ_OPERATORS: usize = 128;
/// Longest jq program accepted, in bytes.
pub const MAX_JQ_LEN: usize = 16 * 1024;

/// Refuse programs whose nesting or length would overflow jaq's recursive parser,
/// compiler or interpreter. A conservative scan, not a parser: it counts what recursion
/// follows (brackets, interpolations, operators, keywords), skipping strings and comments.
///
/// # Errors
/// Which limit the program exceeds.
pub fn check_size(code: &str) -> Result<(), String> {
    if code.len() > MAX_JQ_LEN {
        return Err(format!(
            "program is {} bytes; at most {MAX_JQ_LEN} are accepted",
            code.len()
        ));
    }
    const KEYWORDS: &[&str] = &[
        "and", "or", "as", "if", "then", "elif", "else", "reduce", "foreach", "try", "catch",
        "def", "label",
    ];
    // Open brackets; b'"' marks a string, b'i' an interpolation inside one.
    let mut stack: Vec<u8> = Vec::new();
    let mut depth = 0usize;
    let mut ops = 0usize;
    let b = code.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if stack.last() == Some(&b'"') {
            match c {
                b'\\' if b.get(i + 1) == Some(&b'(') => {
                    stack.push(b'i');
                    i += 1;
                }
                b'\\' => i += 1,
                b'"' => {
                    stack.pop();
                }
                _ => {}
            }
            i += 1;
        } else {
            match c {
                b'#' => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                b'"' | b'(' | b'[' | b'{' => stack.push(c),
                b')' | b']' | b'}' => {
                    stack.pop();
                }
                b'|' | b',' | b'+' | b'-' | b'*' | b'/' | b'%' | b'<' | b'>' | b'=' | b'?' => {
                    ops += 1
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let start = i;
                    while i + 1 < b.len() && (b[i + 1].is_ascii_alphanumeric() || b[i + 1] == b'_')
                    {
                        i += 1;
                    }
                    let word = &code[start..=i];
                    if word == "end" {
                        depth = depth.saturating_sub(1);
                    }
                    if KEYWORDS.contains(&word) {
                        ops += 1;
                        // Block keywords nest like brackets.
                        if matches!(word, "if" | "reduce" | "foreach" | "try" | "def" | "label") {
                            depth += 1;
                        }
                    }
                }
                _ => {}
            }
            i += 1;
        }
        let nesting = stack.iter().filter(|&&o| o != b'"').count() + depth.min(MAX_JQ_NESTING + 1);
        if nesting > MAX_JQ_NESTING {
            return Err(format!(
                "program is nested more than {MAX_JQ_NESTING} levels deep"
            ));
        }
        if ops > MAX_JQ_OPERATORS {
            return Err(format!(
                "program has more than {MAX_JQ_OPERATORS} operators and keywords; split it into steps"
            ));
        }
    }
    Ok(())
}

fn compile_one(code: &str) -> Result<Filter<Native<D>>, String> {
    check_size(code)?;
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs());
    let arena = Arena::default();
    let modules = Loader::new(defs)
        .load(&arena, File { code, path: () })
        .map_err(|errs| load_message(code, errs))?;
    Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errs| {
            let mut msgs = Vec::new();
            for (_, es) in errs {
                for (name, undef) in es {
                    let at = span_start(code, name);
                    msgs.push(match at {
                        Some(at) => format!("undefined {} '{name}' at byte {at}", undef.as_str()),
                        None => format!("undefined {} '{name}'", undef.as_str()),
                    });
                }
            }
            join(msgs, "does not compile")
        })
}

fn load_message(code: &str, errs: jaq_core::load::Errors<&str, ()>) -> String {
    use jaq_core::load::{Error, lex};
    let mut msgs = Vec::new();
    for (_, e) in errs {
        match e {
            Error::Io(v) => msgs.extend(v.into_iter().map(|(p, m)| format!("module {p}: {m}"))),
            Error::Lex(v) => {
                for (expect, rest) in v {
                    let what = match expect {
                        lex::Expect::Delim(d) => format!("a closing match for '{d}'"),
                        other => other.as_str().to_string(),
                    };
                    msgs.push(at(code, rest, &format!("expected {what}")));
                }
            }
            Error::Parse(v) => {
                for (expect, found) in v {
                    let found_txt = if found.is_empty() {
                        "end of input".to_string()
                    } else {
                        format!("'{}'", found.chars().take(20).collect::<String>())
                    };
                    msgs.push(at(
                        code,
                        found,
                        &format!("expected {}, found {found_txt}", expect.as_str()),
                    ));
                }
            }
        }
    }
    join(msgs, "does not parse")
}

fn at(code: &str, part: &str, msg: &str) -> String {
    match span_start(code, part) {
        Some(at) => format!("{msg} at byte {at}"),
        None => msg.to_string(),
    }
}

/// Byte offset of `part` in `code`, when `part` is a slice of it.
fn span_start(code: &str, part: &str) -> Option<usize> {
    let (c, p) = (code.as_ptr() as usize, part.as_ptr() as usize);
    (p >= c && p + part.len() <= c + code.len()).then(|| p - c)
}

fn join(msgs: Vec<String>, fallback: &str) -> String {
    if msgs.is_empty() {
        fallback.to_string()
    } else {
        msgs.join("; ")
    }
}

/// First output of `filter` on `input`; `None` when it yields nothing.
fn first_output(filter: &Filter<Native<D>>, input: Val) -> Result<Option<Val>, String> {
    let ctx = Ctx::<D>::new(&filter.lut, Vars::new([]));
    let mut outputs = filter.id.run((ctx, input));
    match outputs.next() {
        None => Ok(None),
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(exn)) => Err(match exn.get_err() {
            Ok(e) => e.to_string(),
            Err(exn) => match exn.get_halt() {
                Ok(code) => format!("halt (exit code {code}) is not allowed in a transform"),
                Err(_) => "uncaught break".to_string(),
            },
        }),
    }
}

fn kind_of(v: &Val) -> &'static str {
    match v {
        Val::Null => "null",
        Val::Bool(_) => "a boolean",
        Val::Num(_) => "a number",
        Val::TStr(_) | Val::BStr(_) => "a string",
        Val::Arr(_) => "an array",
        Val::Obj(_) => "an object",
    }
}

/// A JSON value as a jaq value.
pub fn to_val(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Val::Num(Num::from_integral(i)),
            (None, Some(u)) => Val::Num(Num::from_integral(u)),
            _ => Val::Num(Num::Float(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => Val::utf8_str(Bytes::from(s.clone().into_bytes())),
        Value::Array(a) => Val::Arr(Rc::new(a.iter().map(to_val).collect())),
        Value::Object(o) => {
            let mut m = jaq_json::Map::default();
            for (k, v) in o {
                m.insert(
                    Val::utf8_str(Bytes::from(k.clone().into_bytes())),
                    to_val(v),
                );
            }
            Val::obj(m)
        }
    }
}

/// A jaq value as JSON: byte strings become (lossy) UTF-8 strings, non-finite numbers
/// `null` (as jq prints them), non-string object keys their JSON text.
pub fn from_val(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => num_to_json(n),
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(a) => Value::Array(a.iter().map(from_val).collect()),
        Val::Obj(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                        other => from_val(other).to_string(),
                    };
                    (key, from_val(v))
                })
                .collect(),
        ),
    }
}

fn num_to_json(n: &Num) -> Value {
    match n {
        Num::Int(i) => Value::from(*i as i64),
        Num::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        // Big integers and decimal literals: let serde_json read jaq's exact text.
        other => serde_json::from_str::<serde_json::Number>(&other.to_string())
            .map_or(Value::Null, Value::Number),
    }
}

#[cfg(test)]
mod tests;
