//! `${VAR}` / `${VAR:-default}` substitution in string values.
//!
//! Substitution runs on the parsed tree, value by value, not on the raw text: a secret
//! containing `#`, `:` or quotes cannot change the document's structure, comments are never
//! expanded, and every error keeps the exact line and column of the value. `$${` writes a
//! literal `${`. `${VAR:-default}` uses the default when `VAR` is unset or empty (as in the
//! shell). Names are `[A-Za-z_][A-Za-z0-9_]*`.

use super::node::{KeyPath, Kind, Loc, Node};

/// Why substitution failed; `path` and `loc` point at the value.
#[derive(Debug)]
pub(crate) struct EnvError {
    pub msg: String,
    pub loc: Loc,
    pub path: KeyPath,
}

/// Substitute in every string value of the tree (map keys are left alone).
pub(crate) fn substitute(
    node: &mut Node,
    path: &KeyPath,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), EnvError> {
    let loc = node.loc;
    match &mut node.kind {
        Kind::Str(s) | Kind::Plain(s) => {
            if s.contains('$') {
                *s = expand(s, lookup).map_err(|msg| EnvError {
                    msg,
                    loc,
                    path: path.clone(),
                })?;
            }
        }
        Kind::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &path.index(i), lookup)?;
            }
        }
        Kind::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                substitute(value, &path.key(&key.name), lookup)?;
            }
        }
        Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) => {}
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expand one string. Error messages name the variable, never a value.
pub(crate) fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                return Err("unclosed '${' (write '$${' for a literal '${')".into());
            };
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if !valid_name(name) {
                return Err(format!(
                    "'${{{inner}}}' is not a valid variable reference (names are letters, digits and _)"
                ));
            }
            match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (use ${{{name}:-default}} for a fallback)"
                    ));
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("broker".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_defaults_escapes_and_plain_dollars() {
        assert_eq!(
            expand("mqtt://${HOST}:1883", &env).unwrap(),
            "mqtt://broker:1883"
        );
        assert_eq!(expand("${NOPE:-x}", &env).unwrap(), "x");
        assert_eq!(expand("${EMPTY:-x}", &env).unwrap(), "x");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand("$${HOST} $5 a$", &env).unwrap(), "${HOST} $5 a$");
        assert_eq!(expand("${NOPE:-}", &env).unwrap(), "");
    }

    #[test]
    fn unset_variables_and_bad_syntax_are_errors_naming_the_variable() {
        let e = expand("${MQTT_PASSWORD}", &env).unwrap_err();
        assert!(e.contains("MQTT_PASSWORD is not set"), "{e}");
        assert!(expand("${HOST", &env).unwrap_err().contains("unclosed"));
        assert!(expand("${1X}", &env).unwrap_err().contains("not a valid"));
    }
}
