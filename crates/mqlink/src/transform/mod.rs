//! Transforms: a connector's `filter` / `map` / `arraymap` steps in the jq language (jaq).
//!
//! Every program is compiled once, during config validation ([`jq::Program`]): a jq
//! syntax error or an undefined name is a config error located at the step's key, with
//! the byte offset in the expression. A [`Chain`] holds a validated `[Transform]` list's
//! programs; per record, [`Chain::apply`] runs the steps in order:
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
//! The size limits that keep jaq's recursion off the stack's edge are in [`jq`].
//!
//! Records enter and leave as [`serde_json::Value`] ([`Chain::apply_json`]) or as jaq values
//! ([`Chain::apply`]); [`to_val`] and [`from_val`] convert between the two.

use std::fmt;

use bytes::Bytes;
use jaq_json::{Num, Rc, Val};
use serde_json::Value;

use crate::config::Transform;

pub(crate) mod jq;

pub(crate) use jq::Program;

/// Which kind of step, as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `filter`
    Filter,
    /// `map`
    Map,
    /// `arraymap`
    ArrayMap,
}

impl Kind {
    /// The config key.
    pub(crate) fn as_str(self) -> &'static str {
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

/// A transform step failed on one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transforms[{index}] ({kind}): {message}")]
pub(crate) struct RuntimeError {
    /// Step index.
    pub index: usize,
    /// Step kind.
    pub kind: Kind,
    /// The jq error.
    pub message: String,
}

#[derive(Clone)]
struct Step {
    kind: Kind,
    program: Program,
}

/// The transform steps of one connector (or one route payload, one poll split), their
/// programs compiled at validation.
#[derive(Default, Clone)]
pub(crate) struct Chain {
    steps: Vec<Step>,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|s| s.kind))
            .finish()
    }
}

impl Chain {
    /// The steps of `transforms`, in order.
    pub(crate) fn new(transforms: &[Transform]) -> Chain {
        let steps = transforms
            .iter()
            .map(|t| {
                let (kind, program) = match t {
                    Transform::Filter(p) => (Kind::Filter, p),
                    Transform::Map(p) => (Kind::Map, p),
                    Transform::ArrayMap(p) => (Kind::ArrayMap, p),
                };
                Step {
                    kind,
                    program: program.clone(),
                }
            })
            .collect();
        Chain { steps }
    }

    /// One step.
    pub(crate) fn single(kind: Kind, program: &Program) -> Chain {
        Chain {
            steps: vec![Step {
                kind,
                program: program.clone(),
            }],
        }
    }

    /// No steps: records pass unchanged.
    pub(crate) fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Run the steps on one record; the result may hold zero, one or many records.
    ///
    /// # Errors
    /// [`RuntimeError`] naming the step that failed.
    pub(crate) fn apply(&self, input: Val) -> Result<Vec<Val>, RuntimeError> {
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
                let Some(out) = step.program.first_output(rec.clone()).map_err(err)? else {
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
    pub(crate) fn apply_json(&self, input: &Value) -> Result<Vec<Value>, RuntimeError> {
        Ok(self.apply(to_val(input))?.iter().map(from_val).collect())
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
pub(crate) fn to_val(v: &Value) -> Val {
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
pub(crate) fn from_val(v: &Val) -> Value {
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
