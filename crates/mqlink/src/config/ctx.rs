//! [`Ctx`]: what validation needs besides the raw config (the located tree, the file's
//! name and directory, the host name), and the checks every section shares: durations,
//! sizes, QoS, files, secrets, templates, URLs, headers, backoff, fsync. Each returns a
//! [`ConfigError`] located at the key it checked. Imports no module that holds the sink
//! registry, so sinks validate their own sections with it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mqlink_spool::FsyncPolicy as Fsync;

use crate::mqtt::codec::QoS;
use crate::topic::{Allowed, Template};
use crate::transform::jq::Program;

use super::error::ConfigError;
use super::node::{KeyPath, Node};
use super::secret::Secret;
use super::shared::{Backoff, ClientAuth, Ordered, RawBackoff, RawFsync, RawTls, Tls};
use super::units::{parse_bytes, parse_duration};

type R<T> = Result<T, ConfigError>;

/// Everything validation needs besides the raw config.
pub(crate) struct Ctx<'a> {
    pub tree: &'a Node,
    pub file: &'a str,
    pub base_dir: &'a Path,
    pub hostname: &'a str,
}

impl Ctx<'_> {
    pub(crate) fn err(&self, path: &KeyPath, msg: impl Into<String>) -> ConfigError {
        let at = self.tree.locate(path);
        ConfigError {
            file: self.file.to_string(),
            line: at.line,
            column: at.col,
            path: path.to_string(),
            message: msg.into(),
        }
    }

    pub(crate) fn duration(
        &self,
        v: Option<&str>,
        path: &KeyPath,
        default: Duration,
    ) -> R<Duration> {
        match v {
            None => Ok(default),
            Some(s) => parse_duration(s).map_err(|m| self.err(path, m)),
        }
    }

    pub(crate) fn positive_duration(
        &self,
        v: Option<&str>,
        path: &KeyPath,
        default: Duration,
    ) -> R<Duration> {
        let d = self.duration(v, path, default)?;
        if d.is_zero() {
            return Err(self.err(path, "must be greater than zero"));
        }
        Ok(d)
    }

    pub(crate) fn whole_seconds(&self, d: Duration, path: &KeyPath, max: u64) -> R<Duration> {
        if d.subsec_nanos() != 0 {
            return Err(self.err(path, "must be whole seconds (MQTT counts seconds)"));
        }
        if d.as_secs() > max {
            return Err(self.err(path, format!("must be at most {max}s")));
        }
        Ok(d)
    }

    pub(crate) fn bytes(&self, v: Option<&str>, path: &KeyPath, default: u64, min: u64) -> R<u64> {
        let n = match v {
            None => default,
            Some(s) => parse_bytes(s).map_err(|m| self.err(path, m))?,
        };
        if n < min {
            return Err(self.err(path, format!("must be at least {min} bytes")));
        }
        Ok(n)
    }

    pub(crate) fn qos(&self, v: Option<u8>, path: &KeyPath, default: QoS) -> R<QoS> {
        match v {
            None => Ok(default),
            Some(0) => Ok(QoS::AtMostOnce),
            Some(1) => Ok(QoS::AtLeastOnce),
            Some(2) => Ok(QoS::ExactlyOnce),
            Some(n) => Err(self.err(path, format!("QoS must be 0, 1 or 2, not {n}"))),
        }
    }

    pub(crate) fn non_empty(&self, s: &str, path: &KeyPath) -> R<()> {
        if s.trim().is_empty() {
            return Err(self.err(path, "must not be empty"));
        }
        Ok(())
    }

    pub(crate) fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// A `tls:` block (`ca_file`, `cert_file` + `key_file`, `alpn`, `server_name`,
    /// `insecure_skip_verify`), as the broker and the TLS-capable sinks take it: files
    /// exist, client certificate and key come together, names are not empty.
    pub(crate) fn tls(&self, raw: RawTls, path: &KeyPath) -> R<Tls> {
        let ca_file = match raw.ca_file.as_deref() {
            Some(f) => Some(self.input_file(f, &path.key("ca_file"))?),
            None => None,
        };
        let client_auth = match (raw.cert_file.as_deref(), raw.key_file.as_deref()) {
            (Some(c), Some(k)) => Some(ClientAuth {
                cert_file: self.input_file(c, &path.key("cert_file"))?,
                key_file: self.input_file(k, &path.key("key_file"))?,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(self.err(&path.key("cert_file"), "cert_file needs key_file too"));
            }
            (None, Some(_)) => {
                return Err(self.err(&path.key("key_file"), "key_file needs cert_file too"));
            }
        };
        let alpn = raw.alpn.unwrap_or_default();
        for (i, a) in alpn.iter().enumerate() {
            self.non_empty(a, &path.key("alpn").index(i))?;
        }
        if let Some(s) = raw.server_name.as_deref() {
            self.non_empty(s, &path.key("server_name"))?;
        }
        Ok(Tls {
            ca_file,
            client_auth,
            alpn,
            insecure_skip_verify: raw.insecure_skip_verify.unwrap_or(false),
            server_name: raw.server_name,
        })
    }

    /// An input file: resolved against the config's directory and required to exist.
    pub(crate) fn input_file(&self, p: &str, path: &KeyPath) -> R<PathBuf> {
        self.non_empty(p, path)?;
        let full = self.resolve(p);
        if !full.is_file() {
            return Err(self.err(
                path,
                format!("file '{}' does not exist or is not a file", full.display()),
            ));
        }
        Ok(full)
    }

    pub(crate) fn secret_file(&self, p: &str, path: &KeyPath) -> R<Secret> {
        self.non_empty(p, path)?;
        let full = self.resolve(p);
        let text = std::fs::read_to_string(&full)
            .map_err(|e| self.err(path, format!("cannot read '{}': {e}", full.display())))?;
        let value = text
            .strip_suffix('\n')
            .map(|s| s.strip_suffix('\r').unwrap_or(s))
            .unwrap_or(&text);
        if value.is_empty() {
            return Err(self.err(path, format!("'{}' is empty", full.display())));
        }
        Ok(Secret::new(value))
    }

    /// `password` xor `password_file`.
    pub(crate) fn password(
        &self,
        password: Option<Secret>,
        file: Option<&str>,
        path: &KeyPath,
    ) -> R<Option<Secret>> {
        match (password, file) {
            (Some(_), Some(_)) => Err(self.err(
                &path.key("password_file"),
                "give either password or password_file, not both",
            )),
            (Some(p), None) => Ok(Some(p)),
            (None, Some(f)) => self.secret_file(f, &path.key("password_file")).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// A jq program, compiled here so that a bad one is a located config error and
    /// nothing compiles jq after validation.
    pub(crate) fn jq(&self, code: &str, path: &KeyPath) -> R<Program> {
        self.non_empty(code, path)?;
        Program::compile(code).map_err(|m| self.err(path, m))
    }

    pub(crate) fn socket_addr(&self, s: &str, path: &KeyPath) -> R<SocketAddr> {
        s.trim().parse().map_err(|_| {
            self.err(
                path,
                format!("'{s}' is not an IP address with port, like 127.0.0.1:8080 or [::1]:8080"),
            )
        })
    }

    pub(crate) fn template(
        &self,
        s: &str,
        path: &KeyPath,
        topic: bool,
        allowed: &Allowed<'_>,
    ) -> R<Template> {
        let t = if topic {
            Template::parse(s)
        } else {
            Template::parse_text(s)
        };
        let t = t.map_err(|e| self.err(path, e.to_string()))?;
        t.check(allowed)
            .map_err(|e| self.err(path, e.to_string()))?;
        Ok(t)
    }

    /// A template resolved completely at load (`{hostname}` and maybe `{prefix}`).
    pub(crate) fn literal_template(
        &self,
        s: &str,
        path: &KeyPath,
        allowed: &Allowed<'_>,
        prefix: &str,
    ) -> R<String> {
        let t = self.template(s, path, false, allowed)?;
        let text = t
            .resolve_builtins(self.hostname, prefix)
            .literal()
            .unwrap_or_default();
        if text.is_empty() {
            return Err(self.err(path, "must not be empty"));
        }
        Ok(text)
    }

    pub(crate) fn http_url(&self, s: &str, path: &KeyPath, schemes: &[&str]) -> R<url::Url> {
        let u = url::Url::parse(s.trim())
            .map_err(|e| self.err(path, format!("not a valid URL: {e}")))?;
        if !schemes.contains(&u.scheme()) {
            return Err(self.err(
                path,
                format!(
                    "unsupported scheme '{}' (use {})",
                    u.scheme(),
                    schemes
                        .iter()
                        .map(|s| format!("{s}://"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(u)
    }

    pub(crate) fn headers(
        &self,
        raw: Option<Ordered<Secret>>,
        path: &KeyPath,
    ) -> R<Vec<(String, Secret)>> {
        let mut out = Vec::new();
        for (name, value) in raw.map(|o| o.0).unwrap_or_default() {
            let p = path.key(&name);
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(token) {
                return Err(self.err(&p, format!("'{name}' is not a valid HTTP header name")));
            }
            if value.expose().contains(['\r', '\n', '\0']) {
                return Err(self.err(&p, "header value contains a line break or NUL"));
            }
            out.push((name, value));
        }
        Ok(out)
    }

    /// A backoff whose unset bounds come from `default` (the broker's reconnect takes the
    /// engine's, each sink its own).
    pub(crate) fn backoff_or(
        &self,
        raw: Option<RawBackoff>,
        path: &KeyPath,
        default: Backoff,
    ) -> R<Backoff> {
        let raw = raw.unwrap_or_default();
        let min = self.positive_duration(raw.min.as_deref(), &path.key("min"), default.min)?;
        let max = self.positive_duration(raw.max.as_deref(), &path.key("max"), default.max)?;
        if max < min {
            return Err(self.err(&path.key("max"), "must not be smaller than min"));
        }
        Ok(Backoff { min, max })
    }

    pub(crate) fn fsync(
        &self,
        mode: Option<RawFsync>,
        interval: Option<&str>,
        path: &KeyPath,
    ) -> R<Fsync> {
        let ipath = path.key("fsync_interval");
        match mode.unwrap_or(RawFsync::Always) {
            RawFsync::Interval => Ok(Fsync::Interval(self.positive_duration(
                interval,
                &ipath,
                Duration::from_secs(1),
            )?)),
            _ if interval.is_some() => {
                Err(self.err(&ipath, "only meaningful with fsync: interval"))
            }
            RawFsync::Always => Ok(Fsync::Always),
            RawFsync::Never => Ok(Fsync::Never),
        }
    }
}
