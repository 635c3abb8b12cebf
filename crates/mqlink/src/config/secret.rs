//! [`Secret`]: a string that never prints; [`redacted`] and [`debug_redacting_url!`]: a URL
//! that may hold `user:password@` printed without its password.

use std::fmt;

/// A password, token or other secret. `Debug` and `Display` print `<redacted>`; use
/// [`Secret::expose`] where the value is really needed (and nowhere near a log line).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
        }
        d.deserialize_string(V)
    }
}

/// `url` for messages, plan lines and `Debug`, with what may be a secret replaced by
/// `redacted`: the password; the user of a NATS URL without a password (`nats://TOKEN@host`
/// is NATS's token form); the value of a query parameter whose name says secret
/// (`password`, `token`, `secret`, `key`, `sig`, `auth`, …: libpq takes
/// `?password=`, webhooks take `?token=`). Other query parameters (`sslmode=require`)
/// stay readable.
pub(crate) fn redacted(url: &url::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("redacted"));
    } else if matches!(u.scheme(), "nats" | "tls") && !u.username().is_empty() {
        let _ = u.set_username("redacted");
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_name(&k) {
                    "redacted".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// Does a query parameter's name say it holds a secret?
fn secret_name(name: &str) -> bool {
    const HINTS: [&str; 8] = [
        "pass",
        "pwd",
        "token",
        "secret",
        "key",
        "sig",
        "auth",
        "credential",
    ];
    let name = name.to_ascii_lowercase();
    HINTS.iter().any(|h| name.contains(h))
}

/// A URL's `Debug` through [`redacted`].
pub(crate) struct RedactedUrl<'a>(pub(crate) &'a url::Url);

impl fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&redacted(self.0), f)
    }
}

/// `impl Debug` for a struct with a `url: url::Url` that may hold `user:password@` (a
/// derived `Debug` would print the password): the URL through [`RedactedUrl`], the other
/// fields as derived. The destructuring names every field, so adding one without listing
/// it here fails to build instead of silently vanishing from the output.
macro_rules! debug_redacting_url {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let $ty { url, $($field),* } = self;
                f.debug_struct(stringify!($ty))
                    .field("url", &$crate::config::secret::RedactedUrl(url))
                    $(.field(stringify!($field), $field))*
                    .finish()
            }
        }
    };
}
pub(crate) use debug_redacting_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_print_without_what_may_be_a_secret() {
        let r = |u: &str| redacted(&url::Url::parse(u).unwrap());
        assert_eq!(r("redis://u:pw@h:6379/0"), "redis://u:redacted@h:6379/0");
        assert_eq!(r("nats://s3cr3t@h:4222"), "nats://redacted@h:4222");
        assert_eq!(r("redis://u@h"), "redis://u@h", "a user alone is no secret");
        assert_eq!(
            r("https://h/hook?token=abc&x=1&api_key=k&Signature=s"),
            "https://h/hook?token=redacted&x=1&api_key=redacted&Signature=redacted"
        );
        assert_eq!(
            r("postgres://u@h/db?sslmode=require&password=pw"),
            "postgres://u@h/db?sslmode=require&password=redacted"
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
    }
}
