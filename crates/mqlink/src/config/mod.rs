//! Configuration: a YAML or TOML file → a validated [`Config`].
//!
//! The pipeline, one file per step:
//! 1. `yaml_tree` / `toml_tree`: parse the text (format by file extension) into a
//!    spanned `node` tree in which every value and key knows its line and column;
//! 2. `env`: `${VAR}` / `${VAR:-default}` substitution inside string values;
//! 3. `de` + `raw`: deserialize the tree into serde structs with
//!    `deny_unknown_fields` (unknown keys are errors), tracking the key path with
//!    `serde_path_to_error`;
//! 4. `validate`: defaults and cross-field rules into the `types` callers use; reads
//!    `password_file`s and checks referenced input files exist, nothing else.
//!
//! The sink registry's `sink:` enum lives in `raw` and `types`, and each sink validates
//! its own section; so what sinks need from here sits in leaves that import no sink:
//! `ctx` (the shared checks, `Ctx`), `shared` (backoff, fsync, ordered maps), `error`,
//! `node`, `secret`. A sink imports those files, never this module's re-exports.
//!
//! Every error is a [`ConfigError`] naming file, line, column and key path:
//! `mqlink.yaml:12:5: routes[1].topic: unclosed '{' at byte 5 ...`. Secrets live in
//! [`Secret`], which never prints. [`Config::default_run`] is what `mqlink run` uses
//! without a file.

pub(crate) mod ctx;
mod de;
mod env;
pub(crate) mod error;
pub(crate) mod node;
pub(crate) mod raw;
pub(crate) mod secret;
pub(crate) mod shared;
mod toml_tree;
mod types;
mod units;
pub(crate) mod validate;
mod yaml_tree;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use error::ConfigError;
pub use secret::Secret;
pub use types::*;
pub use units::{parse_bytes, parse_duration};

use node::{KeyPath, Node, Seg};

/// Config file syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML 1.2 (`.yaml`, `.yml`).
    Yaml,
    /// TOML (`.toml`).
    Toml,
}

impl Format {
    /// The format for a file name's extension, if it is one we read.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }
}

type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Loads configs; the knobs exist for tests and embedding (environment, host name, base
/// directory). [`load`] and [`from_str`] use the defaults.
pub struct Loader {
    env: EnvLookup,
    hostname: Option<String>,
    base_dir: Option<PathBuf>,
}

impl Default for Loader {
    fn default() -> Self {
        Loader {
            env: Box::new(|name| std::env::var(name).ok()),
            hostname: None,
            base_dir: None,
        }
    }
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("hostname", &self.hostname)
            .field("base_dir", &self.base_dir)
            .finish_non_exhaustive()
    }
}

impl Loader {
    /// Process environment, this machine's host name, paths relative to the config file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Look variables up with `f` instead of the process environment.
    pub fn env(mut self, f: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        self.env = Box::new(f);
        self
    }

    /// Use this host name for `{hostname}`.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Resolve relative input-file paths (`ca_file`, `password_file`, ...) against `dir`
    /// (default: the config file's directory; for [`Loader::from_str`], the working
    /// directory).
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Read, parse and validate a config file; the format comes from the extension.
    ///
    /// # Errors
    /// [`ConfigError`] for an unknown extension, an unreadable file, or any problem in it.
    pub fn load(&self, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let whole_file = |message: String| ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            path: String::new(),
            message,
        };
        let format = Format::from_path(path).ok_or_else(|| {
            whole_file("unknown config format: use a .yaml, .yml or .toml file".into())
        })?;
        let text =
            std::fs::read_to_string(path).map_err(|e| whole_file(format!("cannot read: {e}")))?;
        let base = match &self.base_dir {
            Some(d) => d.clone(),
            None => match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            },
        };
        self.parse(&text, format, &file, &base)
    }

    /// Parse and validate config text; `origin_name` is used as the file name in errors.
    ///
    /// # Errors
    /// [`ConfigError`] for any problem in the text.
    pub fn from_str(
        &self,
        text: &str,
        format: Format,
        origin_name: &str,
    ) -> Result<Config, ConfigError> {
        let base = self.base_dir.clone().unwrap_or_else(|| PathBuf::from("."));
        self.parse(text, format, origin_name, &base)
    }

    fn parse(
        &self,
        text: &str,
        format: Format,
        file: &str,
        base_dir: &Path,
    ) -> Result<Config, ConfigError> {
        let mut tree = match format {
            Format::Yaml => yaml_tree::parse(text),
            Format::Toml => toml_tree::parse(text),
        }
        .map_err(|e| ConfigError {
            file: file.to_string(),
            line: e.loc.line,
            column: e.loc.col,
            path: String::new(),
            message: e.msg,
        })?;
        env::substitute(&mut tree, &KeyPath::root(), &*self.env).map_err(|e| ConfigError {
            file: file.to_string(),
            line: e.loc.line,
            column: e.loc.col,
            path: e.path.to_string(),
            message: e.msg,
        })?;
        let raw: raw::RawConfig = deserialize(&tree, file)?;
        let hostname = self.hostname.clone().unwrap_or_else(local_hostname);
        let ctx = validate::Ctx {
            tree: &tree,
            file,
            base_dir,
            hostname: &hostname,
        };
        validate::validate(raw, &ctx)
    }
}

fn local_hostname() -> String {
    let h = gethostname::gethostname().to_string_lossy().into_owned();
    if h.is_empty() { "localhost".into() } else { h }
}

fn deserialize(tree: &Node, file: &str) -> Result<raw::RawConfig, ConfigError> {
    serde_path_to_error::deserialize(de::De(tree)).map_err(|e| {
        let path = KeyPath(
            e.path()
                .iter()
                .filter_map(|seg| match seg {
                    serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                    serde_path_to_error::Segment::Enum { variant } => {
                        Some(Seg::Key(variant.clone()))
                    }
                    serde_path_to_error::Segment::Unknown => None,
                })
                .collect(),
        );
        let inner = e.into_inner();
        let loc = inner.loc.unwrap_or_else(|| tree.locate(&path));
        ConfigError {
            file: file.to_string(),
            line: loc.line,
            column: loc.col,
            path: path.to_string(),
            message: inner.msg,
        }
    })
}

/// Load a config file with the process environment and this host's name.
///
/// # Errors
/// [`ConfigError`] naming file, line, column and key path.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    Loader::new().load(path)
}

/// Parse config text (`origin_name` stands in for the file name in errors).
///
/// # Errors
/// [`ConfigError`] naming origin, line, column and key path.
pub fn from_str(text: &str, format: Format, origin_name: &str) -> Result<Config, ConfigError> {
    Loader::new().from_str(text, format, origin_name)
}

/// The configuration `mqlink run` uses without `-c`.
#[cfg(feature = "http")]
pub const DEFAULT_RUN_YAML: &str = r#"# mqlink's built-in default
broker:
  url: embedded
sources:
  http:
    listen: 127.0.0.1:8080
spool:
  dir: ./mqlink-data
routes:
  - name: default
    match: ["*"]
    topic: "events/{event}"
"#;

/// The configuration `mqlink run` uses without `-c` (a build without the HTTP source).
#[cfg(not(feature = "http"))]
pub const DEFAULT_RUN_YAML: &str = r#"# mqlink's built-in default
broker:
  url: embedded
spool:
  dir: ./mqlink-data
routes:
  - name: default
    match: ["*"]
    topic: "events/{event}"
"#;

impl Config {
    /// Embedded broker, HTTP API on 127.0.0.1:8080, spool in `./mqlink-data`, one route
    /// sending every event to `events/{event}` ([`DEFAULT_RUN_YAML`]).
    ///
    /// # Panics
    /// Never in practice: the text is a constant covered by a unit test.
    pub fn default_run() -> Config {
        Loader::default()
            .env(|_| None)
            .from_str(DEFAULT_RUN_YAML, Format::Yaml, "<default>")
            .expect("the built-in default config is valid")
    }
}
