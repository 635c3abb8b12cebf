//! The spanned document tree both YAML and TOML are parsed into.
//!
//! Every value and every map key carries its [`Loc`] (1-based line and column), so any
//! error can be reported at the exact place: deserialization errors through [`super::de`],
//! validation errors by looking up their [`KeyPath`] with [`Node::locate`].

use std::fmt;

/// A 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Loc {
    pub line: usize,
    pub col: usize,
}

/// A value in the document.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: Kind,
    pub loc: Loc,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A string that is a string by syntax (TOML string, quoted or block YAML scalar).
    Str(String),
    /// An unquoted YAML scalar, typed by the YAML 1.2 core schema on demand.
    Plain(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub name: String,
    pub loc: Loc,
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A path from the document root, printed like `routes[1].payload.event_field`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub(crate) fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// This path extended by a map key.
    pub(crate) fn key(&self, k: &str) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_string()));
        KeyPath(v)
    }

    /// This path extended by a sequence index.
    pub(crate) fn index(&self, i: usize) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        KeyPath(v)
    }
}

fn is_bare_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) if !is_bare_key(k) => write!(f, "[{k:?}]")?,
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
            }
        }
        Ok(())
    }
}

impl Node {
    pub(crate) fn new(kind: Kind, loc: Loc) -> Self {
        Node { kind, loc }
    }

    /// Location of the value at `path`, or of its deepest existing ancestor (a missing
    /// key is reported at the map that lacks it).
    pub(crate) fn locate(&self, path: &KeyPath) -> Loc {
        let mut cur = self;
        for seg in &path.0 {
            let next = match (seg, &cur.kind) {
                (Seg::Key(k), Kind::Map(entries)) => entries
                    .iter()
                    .find(|(name, _)| name.name == *k)
                    .map(|(_, v)| v),
                (Seg::Index(i), Kind::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(v) => cur = v,
                None => break,
            }
        }
        cur.loc
    }

    /// Text of a scalar as written (numbers and booleans in canonical form).
    pub(crate) fn scalar_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Str(s) | Kind::Plain(s) => Some(s.clone()),
            Kind::Int(i) => Some(i.to_string()),
            Kind::Float(f) => Some(f.to_string()),
            Kind::Bool(b) => Some(b.to_string()),
            Kind::Seq(_) | Kind::Map(_) => None,
        }
    }
}

/// A YAML plain scalar typed by the YAML 1.2 core schema.
pub(crate) enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str,
}

pub(crate) fn resolve_plain(s: &str) -> Resolved {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = s.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).map_or(Resolved::Str, Resolved::Int);
    }
    if let Some(oct) = s.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).map_or(Resolved::Str, Resolved::Int);
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().map_or(Resolved::Str, Resolved::Int);
    }
    let float_chars = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    let starts_ok = digits
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.');
    if float_chars && starts_ok && digits.bytes().any(|b| b.is_ascii_digit()) {
        // "3.1.1" fails to parse and stays a string, as a version number should.
        if let Ok(f) = s.parse::<f64>() {
            return Resolved::Float(f);
        }
    }
    Resolved::Str
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_print_like_the_docs() {
        let p = KeyPath::root()
            .key("routes")
            .index(1)
            .key("properties")
            .key("user")
            .key("a.b");
        assert_eq!(p.to_string(), "routes[1].properties.user[\"a.b\"]");
        assert_eq!(KeyPath::root().to_string(), "");
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        assert!(matches!(resolve_plain("~"), Resolved::Null));
        assert!(matches!(resolve_plain("true"), Resolved::Bool(true)));
        assert!(matches!(resolve_plain("yes"), Resolved::Str));
        assert!(matches!(resolve_plain("1883"), Resolved::Int(1883)));
        assert!(matches!(resolve_plain("-5"), Resolved::Int(-5)));
        assert!(matches!(resolve_plain("0x1F"), Resolved::Int(31)));
        assert!(matches!(resolve_plain("3.1"), Resolved::Float(_)));
        assert!(matches!(resolve_plain("1e3"), Resolved::Float(_)));
        assert!(matches!(resolve_plain("3.1.1"), Resolved::Str));
        assert!(matches!(resolve_plain("30s"), Resolved::Str));
        assert!(matches!(resolve_plain("inf"), Resolved::Str));
        assert!(matches!(resolve_plain("16MiB"), Resolved::Str));
    }
}
