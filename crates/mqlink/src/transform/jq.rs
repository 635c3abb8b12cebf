//! A jq program compiled once, at validation: [`Program`] is what the validated config
//! holds for every `filter`, `map`, `arraymap`, route payload `transform` and poll
//! `split`, so a program that does not compile is a located config error and nothing
//! compiles jq again at run time. A leaf: imports nothing from the crate, so the config
//! types can hold programs while [`super::Chain`] runs them.
//!
//! jaq parses, compiles and runs recursively, so a deeply nested or very long program
//! overflows the stack (found by hand with deep and long inputs). [`check_size`] refuses such
//! programs before jaq sees them: at most [`MAX_JQ_NESTING`] levels of brackets, string
//! interpolations and block keywords, and [`MAX_JQ_OPERATORS`] operators and keywords, which
//! leaves real programs plenty of room and runs safely on a 2 MiB thread stack.

use std::fmt;
use std::sync::Arc;

use jaq_core::compile::Filter;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Native, Vars, data};
use jaq_json::Val;

type D = data::JustLut<Val>;

/// A compiled jq program with its source text. Cloning shares the compiled form; two
/// programs are equal when their text is (what a reload compares).
#[derive(Clone)]
pub struct Program {
    code: Arc<str>,
    filter: Arc<Filter<Native<D>>>,
}

// Connectors and routers run programs from any runtime thread.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Program>()
};

impl Program {
    /// Compile `code`.
    ///
    /// # Errors
    /// What jaq (or `check_size`) says, with the byte offset in `code`.
    pub fn compile(code: &str) -> Result<Program, String> {
        Ok(Program {
            code: code.into(),
            filter: Arc::new(compile_one(code)?),
        })
    }

    /// The program as written.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// First output on `input`; `None` when it yields nothing.
    pub(crate) fn first_output(&self, input: Val) -> Result<Option<Val>, String> {
        first_output(&self.filter, input)
    }
}

impl PartialEq for Program {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code
    }
}

impl Eq for Program {}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.code, f)
    }
}

/// Deepest nesting of `(`, `[`, `{`, `\\(` and block keywords accepted in a jq program.
pub(crate) const MAX_JQ_NESTING: usize = 64;
/// Most operators and keywords accepted in one jq program.
pub(crate) const MAX_JQ_OPERATORS: usize = 128;
/// Longest jq program accepted, in bytes.
pub(crate) const MAX_JQ_LEN: usize = 16 * 1024;

/// Refuse programs whose nesting or length would overflow jaq's recursive parser,
/// compiler or interpreter. A conservative scan, not a parser: it counts what recursion
/// follows (brackets, interpolations, operators, keywords), skipping strings and comments.
///
/// # Errors
/// Which limit the program exceeds.
pub(crate) fn check_size(code: &str) -> Result<(), String> {
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
