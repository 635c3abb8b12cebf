//! MQTT topic names and topic filters.
//!
//! Rules (MQTT 3.1.1 §4.7, MQTT 5 §4.7-4.8): names and filters are non-empty UTF-8 of at
//! most 65,535 bytes without NUL; names contain no wildcards; in filters `+` occupies a
//! whole level and `#` a whole, final level; topics starting with `$` are not matched by a
//! filter whose first level is a wildcard. A shared subscription is
//! `$share/{group}/{filter}`.

use std::fmt;

/// Longest topic name or filter MQTT can carry (a UTF-8 string with a 16-bit length).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Why a topic name or filter is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Zero-length topic.
    #[error("topic is empty")]
    Empty,
    /// Longer than [`MAX_TOPIC_LEN`] bytes.
    #[error("topic is {len} bytes long; MQTT allows at most 65535")]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
    /// Contains U+0000.
    #[error("topic contains a NUL character")]
    Nul,
    /// A topic *name* containing `+` or `#`.
    #[error("topic name contains the wildcard '{ch}' (only filters may contain wildcards)")]
    Wildcard {
        /// The wildcard found.
        ch: char,
    },
    /// `+` or `#` sharing a level with other characters, or `#` not last.
    #[error("wildcard '{ch}' at level {level} must {rule}")]
    WildcardPlacement {
        /// The wildcard.
        ch: char,
        /// Zero-based level index.
        level: usize,
        /// What the rule requires.
        rule: &'static str,
    },
    /// A malformed `$share/{group}/{filter}`.
    #[error("shared subscription {reason} (expected $share/<group>/<filter>)")]
    Share {
        /// What is wrong.
        reason: &'static str,
    },
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: s.len() });
    }
    if s.as_bytes().contains(&0) {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// Check that `topic` is a valid MQTT topic *name* (what a PUBLISH carries).
///
/// # Errors
/// [`TopicError`] saying which rule is broken.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    if let Some(b) = topic.bytes().find(|b| *b == b'+' || *b == b'#') {
        return Err(TopicError::Wildcard { ch: char::from(b) });
    }
    Ok(())
}

/// Join a topic prefix and a topic with exactly one `/` between them: trailing slashes of
/// `prefix` and leading slashes of `topic` are dropped at the join. An empty prefix (or one
/// made only of slashes) leaves `topic` unchanged, leading slash included.
pub fn join_prefix(prefix: &str, topic: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return topic.to_string();
    }
    let topic = topic.trim_start_matches('/');
    let mut out = String::with_capacity(prefix.len() + 1 + topic.len());
    out.push_str(prefix);
    out.push('/');
    out.push_str(topic);
    out
}

/// A validated MQTT topic filter, possibly a shared subscription.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter {
    full: String,
    /// Byte offset in `full` where the filter proper starts (0 unless shared).
    filter_start: usize,
    /// The `$share` group, if any.
    group: Option<String>,
}

impl TopicFilter {
    /// Parse and validate a filter such as `a/+/c/#` or `$share/g1/sensors/#`.
    ///
    /// # Errors
    /// [`TopicError`] saying which rule is broken.
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        check_common(s)?;
        let (group, filter_start) = if let Some(rest) = s.strip_prefix("$share/") {
            let Some((group, filter)) = rest.split_once('/') else {
                return Err(TopicError::Share {
                    reason: "has no filter after the group",
                });
            };
            if group.is_empty() {
                return Err(TopicError::Share {
                    reason: "has an empty group name",
                });
            }
            if group.contains(['+', '#']) {
                return Err(TopicError::Share {
                    reason: "group name contains a wildcard",
                });
            }
            if filter.is_empty() {
                return Err(TopicError::Share {
                    reason: "has an empty filter",
                });
            }
            (Some(group.to_string()), "$share/".len() + group.len() + 1)
        } else if s == "$share" {
            return Err(TopicError::Share {
                reason: "has no group",
            });
        } else {
            (None, 0)
        };
        let filter = &s[filter_start..];
        let mut levels = filter.split('/').enumerate().peekable();
        while let Some((i, level)) = levels.next() {
            let last = levels.peek().is_none();
            if level.contains('#') && (level != "#" || !last) {
                return Err(TopicError::WildcardPlacement {
                    ch: '#',
                    level: i,
                    rule: "be the whole and last level",
                });
            }
            if level.contains('+') && level != "+" {
                return Err(TopicError::WildcardPlacement {
                    ch: '+',
                    level: i,
                    rule: "be a whole level",
                });
            }
        }
        Ok(TopicFilter {
            full: s.to_string(),
            filter_start,
            group,
        })
    }

    /// The filter as written, `$share/...` prefix included (what SUBSCRIBE sends).
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The filter without any `$share/{group}/` prefix (what incoming topics match).
    pub fn filter(&self) -> &str {
        &self.full[self.filter_start..]
    }

    /// The shared-subscription group, if this is a `$share` filter.
    pub fn share_group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// Whether `topic` (a topic name) matches this filter under the MQTT rules.
    pub fn matches(&self, topic: &str) -> bool {
        matches_filter(self.filter(), topic)
    }
}

/// Level-by-level match of a (valid) filter against a topic name.
fn matches_filter(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicFilter({:?})", self.full)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn topic_names_reject_wildcards_nul_and_empty() {
        assert!(validate_topic_name("a/b/c").is_ok());
        assert!(validate_topic_name("/").is_ok());
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(
            validate_topic_name("a/+/b"),
            Err(TopicError::Wildcard { ch: '+' })
        );
        assert_eq!(
            validate_topic_name("a/#"),
            Err(TopicError::Wildcard { ch: '#' })
        );
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::Nul));
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(
            validate_topic_name(&long),
            Err(TopicError::TooLong {
                len: MAX_TOPIC_LEN + 1
            })
        );
        assert!(validate_topic_name(&long[1..]).is_ok());
    }

    #[test]
    fn filters_check_wildcard_placement() {
        for ok in [
            "#",
            "+",
            "a/#",
            "a/+/b",
            "+/+",
            "/",
            "a//b",
            "sport/tennis/+/#",
        ] {
            TopicFilter::parse(ok).unwrap();
        }
        for bad in ["a#", "a/#/b", "a+/b", "a/b+", "#/a", "++"] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shared_subscriptions_split_group_and_filter() {
        let f = TopicFilter::parse("$share/workers/hfp/v2/#").unwrap();
        assert_eq!(f.share_group(), Some("workers"));
        assert_eq!(f.filter(), "hfp/v2/#");
        assert_eq!(f.as_str(), "$share/workers/hfp/v2/#");
        assert!(f.matches("hfp/v2/x"));
        for bad in [
            "$share",
            "$share/",
            "$share/g",
            "$share//a",
            "$share/g/",
            "$share/g+/a",
        ] {
            assert!(
                matches!(TopicFilter::parse(bad), Err(TopicError::Share { .. })),
                "{bad}"
            );
        }
        assert!(TopicFilter::parse("$share/g/a#").is_err());
        let plain = TopicFilter::parse("$SYS/#").unwrap();
        assert_eq!(plain.share_group(), None);
    }

    #[test]
    fn matching_follows_the_mqtt_rules() {
        let m = |f: &str, t: &str| TopicFilter::parse(f).unwrap().matches(t);
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
        assert!(m("sport/#", "sport"));
        assert!(m("#", "a/b"));
        assert!(m("+/+", "/finance"));
        assert!(m("/+", "/finance"));
        assert!(!m("+", "/finance"));
        assert!(m("sport/+", "sport/"));
        assert!(!m("sport/+", "sport"));
        assert!(!m("#", "$SYS/x"));
        assert!(!m("+/monitor", "$SYS/monitor"));
        assert!(m("$SYS/#", "$SYS/monitor"));
        assert!(m("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(m(
            "/hfp/v2/journey/#",
            "/hfp/v2/journey/ongoing/vp/bus/0022/01151/2200/1/Espoon keskus/23:02/1160105/4/60;24/29/00/00"
        ));
    }

    #[test]
    fn join_prefix_uses_exactly_one_slash() {
        assert_eq!(join_prefix("flamenco", "jobs"), "flamenco/jobs");
        assert_eq!(join_prefix("butler-sos/", "health"), "butler-sos/health");
        assert_eq!(join_prefix("a//", "//b"), "a/b");
        assert_eq!(join_prefix("", "/hfp/x"), "/hfp/x");
        assert_eq!(join_prefix("/", "x"), "x");
    }

    /// The reference: recursive definition straight from the spec text.
    fn naive(filter: &[&str], topic: &[&str]) -> bool {
        match (filter.first(), topic.first()) {
            (Some(&"#"), _) => true,
            (Some(&"+"), Some(_)) => naive(&filter[1..], &topic[1..]),
            (Some(f), Some(t)) => f == t && naive(&filter[1..], &topic[1..]),
            (None, None) => true,
            _ => false,
        }
    }

    fn reference(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && matches!(filter.as_bytes().first(), Some(b'+' | b'#')) {
            return false;
        }
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        naive(&f, &t)
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("a".to_string()),
            Just("b".to_string()),
            Just("$s".to_string()),
        ]
    }

    fn filter_level() -> impl Strategy<Value = String> {
        prop_oneof![level(), Just("+".to_string())]
    }

    proptest! {
        #[test]
        fn matching_agrees_with_the_reference(
            f in prop::collection::vec(filter_level(), 1..5),
            hash in any::<bool>(),
            t in prop::collection::vec(level(), 1..6),
        ) {
            let mut f = f;
            if hash { f.push("#".to_string()); }
            let filter = f.join("/");
            let topic = t.join("/");
            prop_assume!(!topic.is_empty() && !filter.is_empty());
            let parsed = TopicFilter::parse(&filter).unwrap();
            prop_assert_eq!(parsed.matches(&topic), reference(&filter, &topic));
        }

        #[test]
        fn join_never_doubles_the_slash(p in "[a/]{0,5}", t in "[b/]{0,5}") {
            let joined = join_prefix(&p, &t);
            let p_trim = p.trim_end_matches('/');
            if p_trim.is_empty() {
                prop_assert_eq!(joined, t);
            } else {
                let rest = &joined[p_trim.len()..];
                prop_assert!(rest.starts_with('/'));
                prop_assert!(!rest[1..].starts_with('/'));
            }
        }
    }
}
