//! The pieces both the config tree and each sink's own config use: raw forms parsed
//! during validation and the validated values they become. A leaf of `config`: it
//! imports nothing from the crate, so `sink/*.rs` can use it while `config::{raw, types}`
//! hold the sink registry's `sink:` enum without an import cycle.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A map kept in file order (user properties and headers may be order-sensitive).
#[derive(Debug)]
pub(crate) struct Ordered<V>(pub Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackoff {
    pub min: Option<String>,
    pub max: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawFsync {
    Always,
    Interval,
    Never,
}

/// Exponential backoff bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub min: Duration,
    /// Largest delay; `max >= min`.
    pub max: Duration,
}

/// A `tls:` block as written (the broker's, and the `redis` and `postgres` sinks').
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub alpn: Option<Vec<String>>,
    pub insecure_skip_verify: Option<bool>,
    pub server_name: Option<String>,
}

/// Client certificate and key for mutual TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientAuth {
    /// PEM certificate chain (file exists at load).
    pub cert_file: PathBuf,
    /// PEM private key (file exists at load).
    pub key_file: PathBuf,
}

/// TLS settings (`broker.tls`, and the `redis` and `postgres` sinks' `tls`). Relative
/// paths are resolved against the config file's directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tls {
    /// CA bundle; `None` = the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (both or neither).
    pub client_auth: Option<ClientAuth>,
    /// ALPN protocols, in preference order; default none.
    pub alpn: Vec<String>,
    /// Skip server certificate verification (testing only); default false.
    pub insecure_skip_verify: bool,
    /// SNI / verification name override; default the URL's host.
    pub server_name: Option<String>,
}
