//! Event-name globs for route `match` lists: `*` matches any run of characters
//! (including none), `?` exactly one character, everything else itself. Hand-written
//! because the language is this small; [`GlobSet`] answers "which routes match this
//! event" with a hash lookup for literal names and a scan of the few real patterns.

use std::collections::HashMap;
use std::fmt;

/// Why a glob was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// The empty string matches no event name.
    #[error("event pattern is empty")]
    Empty,
}

/// A compiled event-name pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct EventGlob {
    pattern: String,
    kind: Kind,
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    /// No wildcards: string equality.
    Literal,
    /// Only `*`s: matches everything.
    Any,
    /// Mixed: chars of the pattern, matched by backtracking.
    Pattern(Vec<char>),
}

impl EventGlob {
    /// Compile a pattern.
    ///
    /// # Errors
    /// [`GlobError::Empty`] for an empty pattern.
    pub fn parse(pattern: &str) -> Result<Self, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        let kind = if !pattern.contains(['*', '?']) {
            Kind::Literal
        } else if pattern.chars().all(|c| c == '*') {
            Kind::Any
        } else {
            Kind::Pattern(pattern.chars().collect())
        };
        Ok(EventGlob {
            pattern: pattern.to_string(),
            kind,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// True when the pattern has no wildcards.
    pub fn is_literal(&self) -> bool {
        matches!(self.kind, Kind::Literal)
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match &self.kind {
            Kind::Literal => self.pattern == name,
            Kind::Any => true,
            Kind::Pattern(p) => wildcard_match(p, name),
        }
    }
}

/// Classic linear-time wildcard matching with a single backtrack point for the last `*`.
fn wildcard_match(pattern: &[char], name: &str) -> bool {
    let text: Vec<char> = name.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || (pattern[p] != '*' && pattern[p] == text[t]))
        {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

impl fmt::Debug for EventGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventGlob({:?})", self.pattern)
    }
}

impl fmt::Display for EventGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// A set of pattern lists, one per route, answering which lists match a name.
#[derive(Debug, Clone, Default)]
pub struct GlobSet {
    literal: HashMap<String, Vec<usize>>,
    patterns: Vec<(usize, EventGlob)>,
    len: usize,
}

impl GlobSet {
    /// Build from one pattern list per entry (entry `i` is route `i`).
    pub fn new<'a, I, L>(lists: I) -> Self
    where
        I: IntoIterator<Item = L>,
        L: IntoIterator<Item = &'a EventGlob>,
    {
        let mut set = GlobSet::default();
        for (i, list) in lists.into_iter().enumerate() {
            set.len = i + 1;
            for glob in list {
                if glob.is_literal() {
                    let v = set.literal.entry(glob.as_str().to_string()).or_default();
                    if v.last() != Some(&i) {
                        v.push(i);
                    }
                } else {
                    set.patterns.push((i, glob.clone()));
                }
            }
        }
        set
    }

    /// Number of entries (routes) the set was built from.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when built from no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Write the indices of every entry with a pattern matching `name` into `out`, in
    /// ascending order without duplicates (`out` is cleared first, so it can be reused).
    pub fn matches_into(&self, name: &str, out: &mut Vec<usize>) {
        out.clear();
        if let Some(v) = self.literal.get(name) {
            out.extend_from_slice(v);
        }
        let literal_hits = out.len();
        for (i, glob) in &self.patterns {
            if glob.matches(name) {
                out.push(*i);
            }
        }
        // Each half is ascending on its own; only a mix needs sorting.
        if literal_hits > 0 && out.len() > literal_hits {
            out.sort_unstable();
        }
        out.dedup();
    }

    /// The indices of every entry matching `name`, ascending.
    pub fn matches(&self, name: &str) -> Vec<usize> {
        let mut out = Vec::new();
        self.matches_into(name, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn g(p: &str) -> EventGlob {
        EventGlob::parse(p).unwrap()
    }

    #[test]
    fn globs_match_star_question_and_literals() {
        assert!(g("*").matches(""));
        assert!(g("*").matches("JobUpdate"));
        assert!(g("Job*").matches("JobUpdate"));
        assert!(g("Job*").matches("Job"));
        assert!(!g("Job*").matches("TaskUpdate"));
        assert!(g("*Update").matches("TaskUpdate"));
        assert!(g("?obUpdate").matches("JobUpdate"));
        assert!(!g("?obUpdate").matches("obUpdate"));
        assert!(g("a*b*c").matches("aXXbYYc"));
        assert!(!g("a*b*c").matches("aXXbYY"));
        assert!(g("Print?*").matches("PrintDone"));
        assert!(g("é?").matches("éü"));
        assert!(g("JobUpdate").matches("JobUpdate"));
        assert!(!g("JobUpdate").matches("JobUpdate2"));
        assert_eq!(EventGlob::parse(""), Err(GlobError::Empty));
    }

    #[test]
    fn glob_set_returns_every_matching_route_in_order() {
        let routes = [
            vec![g("JobUpdate")],
            vec![g("Task*"), g("JobUpdate")],
            vec![g("*")],
            vec![g("LastRendered")],
        ];
        let set = GlobSet::new(routes.iter());
        assert_eq!(set.len(), 4);
        assert_eq!(set.matches("JobUpdate"), vec![0, 1, 2]);
        assert_eq!(set.matches("TaskUpdate"), vec![1, 2]);
        assert_eq!(set.matches("Other"), vec![2]);
        let mut out = vec![99];
        set.matches_into("LastRendered", &mut out);
        assert_eq!(out, vec![2, 3]);
    }

    fn naive(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => naive(&p[1..], t) || (!t.is_empty() && naive(p, &t[1..])),
            Some('?') => !t.is_empty() && naive(&p[1..], &t[1..]),
            Some(c) => t.first() == Some(c) && naive(&p[1..], &t[1..]),
        }
    }

    proptest! {
        #[test]
        fn glob_agrees_with_a_recursive_reference(p in "[ab*?]{1,6}", t in "[ab]{0,8}") {
            let pc: Vec<char> = p.chars().collect();
            let tc: Vec<char> = t.chars().collect();
            prop_assert_eq!(g(&p).matches(&t), naive(&pc, &tc));
        }
    }
}
