//! Broker addresses: `mqtt://`, `tcp://`, `mqtts://`, `ssl://`, `tls://`, `ws://`, `wss://`.
//!
//! Parsing is pure and happens at config load, so a bad URL is a config error that names
//! the URL, never a connect-time surprise.

use std::fmt;

/// How bytes reach the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP (`mqtt://`, `tcp://`), default port 1883.
    Tcp,
    /// TLS over TCP (`mqtts://`, `ssl://`, `tls://`), default port 8883.
    Tls,
    /// WebSocket (`ws://`), default port 80, path `/mqtt`.
    Ws,
    /// WebSocket over TLS (`wss://`), default port 443, path `/mqtt`.
    Wss,
}

impl Transport {
    /// True when the transport is encrypted.
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    fn default_port(self) -> u16 {
        match self {
            Transport::Tcp => 1883,
            Transport::Tls => 8883,
            Transport::Ws => 80,
            Transport::Wss => 443,
        }
    }
}

/// A parsed broker URL. Credentials found in the URL are split out so they are never
/// printed with it.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Transport chosen by the scheme.
    pub transport: Transport,
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
    /// WebSocket path (only meaningful for ws/wss), default `/mqtt`.
    pub path: String,
    /// `user` from `user:pass@host`.
    pub username: Option<String>,
    /// `pass` from `user:pass@host`; never shown by `Display` or `Debug`.
    pub password: Option<String>,
}

/// Why a broker URL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    /// Not parseable as a URL at all.
    #[error("'{url}' is not a valid broker URL: {reason}")]
    Malformed {
        /// The URL as given (credentials removed).
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// A scheme we do not speak.
    #[error(
        "unsupported scheme '{scheme}' in broker URL (use mqtt://, tcp://, mqtts://, ssl://, tls://, ws:// or wss://)"
    )]
    Scheme {
        /// The scheme found.
        scheme: String,
    },
    /// No host part.
    #[error("broker URL '{url}' has no host")]
    NoHost {
        /// The URL as given (credentials removed).
        url: String,
    },
}

impl BrokerUrl {
    /// Parse a broker URL. A bare `host:port` or `host` is taken as `mqtt://`.
    ///
    /// # Errors
    /// [`UrlError`] naming the URL (without its password) and what is wrong.
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        let input = input.trim();
        let with_scheme = if input.contains("://") {
            input.to_string()
        } else {
            format!("mqtt://{input}")
        };
        let parsed = url::Url::parse(&with_scheme).map_err(|e| UrlError::Malformed {
            url: redact(&with_scheme),
            reason: e.to_string(),
        })?;
        let transport = match parsed.scheme() {
            "mqtt" | "tcp" => Transport::Tcp,
            "mqtts" | "ssl" | "tls" => Transport::Tls,
            "ws" => Transport::Ws,
            "wss" => Transport::Wss,
            other => {
                return Err(UrlError::Scheme {
                    scheme: other.to_string(),
                });
            }
        };
        let host = match parsed.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
            _ => {
                return Err(UrlError::NoHost {
                    url: redact(&with_scheme),
                });
            }
        };
        let port = parsed.port().unwrap_or_else(|| transport.default_port());
        let path = match parsed.path() {
            "" | "/" => "/mqtt".to_string(),
            p => p.to_string(),
        };
        let username = (!parsed.username().is_empty()).then(|| decode(parsed.username()));
        let password = parsed.password().map(decode);
        Ok(BrokerUrl {
            transport,
            host,
            port,
            path,
            username,
            password,
        })
    }

    /// `host:port` suitable for connecting (IPv6 literals bracketed).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// Remove `user:pass@` from a URL-looking string before it goes into a message.
fn redact(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(i), Some(j)) if j > i => format!("{}***@{}", &s[..i + 3], &s[j + 1..]),
        _ => s.to_string(),
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.transport {
            Transport::Tcp => "mqtt",
            Transport::Tls => "mqtts",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        };
        write!(f, "{scheme}://{}", self.authority())?;
        if matches!(self.transport, Transport::Ws | Transport::Wss) {
            f.write_str(&self.path)?;
        }
        Ok(())
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerUrl")
            .field("url", &self.to_string())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_pick_transport_and_default_port() {
        for (u, t, p) in [
            ("mqtt://h", Transport::Tcp, 1883),
            ("tcp://h", Transport::Tcp, 1883),
            ("mqtts://h", Transport::Tls, 8883),
            ("ssl://h", Transport::Tls, 8883),
            ("tls://h", Transport::Tls, 8883),
            ("ws://h", Transport::Ws, 80),
            ("wss://h", Transport::Wss, 443),
            ("h:1999", Transport::Tcp, 1999),
        ] {
            let b = BrokerUrl::parse(u).unwrap();
            assert_eq!((b.transport, b.port), (t, p), "{u}");
        }
    }

    #[test]
    fn credentials_are_split_out_and_never_displayed() {
        let b = BrokerUrl::parse("mqtt://svc:s%40cret@broker:1884").unwrap();
        assert_eq!(b.username.as_deref(), Some("svc"));
        assert_eq!(b.password.as_deref(), Some("s@cret"));
        assert_eq!(b.to_string(), "mqtt://broker:1884");
        assert!(!format!("{b:?}").contains("cret"));
    }

    #[test]
    fn websocket_path_defaults_to_mqtt() {
        assert_eq!(BrokerUrl::parse("ws://h").unwrap().path, "/mqtt");
        assert_eq!(BrokerUrl::parse("wss://h/x").unwrap().path, "/x");
    }

    #[test]
    fn unknown_scheme_is_named() {
        let e = BrokerUrl::parse("http://h").unwrap_err();
        assert!(e.to_string().contains("'http'"), "{e}");
    }

    #[test]
    fn malformed_url_never_leaks_password() {
        let e = BrokerUrl::parse("mqtt://u:secret@:99999").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
