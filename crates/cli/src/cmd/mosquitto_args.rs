//! Connection options of `mqlink pub` / `mqlink sub`, spelled and defaulted as in
//! mosquitto_pub(1) / mosquitto_sub(1) 2.0, so scripts written for those tools run unchanged:
//! `-h` is the host (help is `--help` only), `-L` is a URL whose path is the topic,
//! `-V` defaults to MQTT 3.1.1, `--cafile`/`--capath` switch to TLS on the given port.
//!
//! [`ConnCore`] holds the options `bench` shares with them (one parser, one builder);
//! [`MosqConnArgs`] adds what only pub/sub take.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use mqlink::mqtt::client::MqttOptions;
use mqlink::mqtt::codec::{Protocol, PublishProps, QoS, Will};
use mqlink::mqtt::tls::TlsOptions;
use mqlink::mqtt::transport::{SocketOptions, Socks5Proxy};
use mqlink::mqtt::url::{BrokerUrl, Transport};

use crate::cmd::properties;

/// An argument error reported the way mosquitto_pub/sub do: `Error: ...`, a pointer to
/// `--help`, exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("Error: {msg}\n\nUse '{tool} --help' to see usage.")]
pub struct MosqUsage {
    /// `mosquitto_pub` or `mosquitto_sub`: the tool whose habits are followed.
    pub tool: &'static str,
    /// What is wrong.
    pub msg: String,
}

/// An argument error that mosquitto reports in its own words, without the `--help` line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MosqPlain(pub String);

/// The first connection failed in the TLS handshake (or its configuration).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsFailed(pub String);

/// The first connection failed in the SOCKS5 handshake (the proxy refused us or the
/// broker); a proxy that cannot be reached at all is an ordinary connection failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProxyFailed(pub String);

pub fn mosq_usage(tool: &'static str, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(MosqUsage {
        tool,
        msg: msg.into(),
    })
}

/// Connection options shared by `pub`, `sub` and `bench`, spelled as in mosquitto_pub/sub.
/// Defaults that differ per command come from [`Defaults`].
#[derive(clap::Args, Debug, Clone)]
pub struct ConnCore {
    /// Broker host [pub/sub: localhost; bench: 127.0.0.1].
    #[arg(short = 'h', long)]
    pub host: Option<String>,
    /// Broker port [default: 1883, 8883 with TLS].
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// mqtt(s)://[user[:password]@]host[:port]/topic; ws:// and wss:// (mqlink extras) keep
    /// the path as the WebSocket path.
    #[arg(short = 'L', long, env = "MQLINK_URL")]
    pub url: Option<String>,
    /// User name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password (MQLINK_PASSWORD keeps it off the command line).
    #[arg(
        short = 'P',
        long,
        alias = "password",
        env = "MQLINK_PASSWORD",
        hide_env_values = true
    )]
    pub pw: Option<String>,
    /// CA certificates (PEM file): turns TLS on.
    #[arg(long)]
    pub cafile: Option<PathBuf>,
    /// Directory of CA certificates (PEM): turns TLS on.
    #[arg(long)]
    pub capath: Option<PathBuf>,
    /// Trust the operating system's CA certificates: turns TLS on.
    #[arg(long)]
    pub tls_use_os_certs: bool,
    /// Client certificate (PEM).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Do not check that the certificate names the host (the chain is still verified).
    #[arg(long)]
    pub insecure: bool,
    /// Offer this ALPN protocol in the TLS handshake.
    #[arg(long)]
    pub tls_alpn: Option<String>,
    /// tlsv1.3 (1.3 only), tlsv1.2 (1.2 and 1.3, the default) or tlsv1.1 (rustls has no
    /// TLS 1.1: as tlsv1.2).
    #[arg(long)]
    pub tls_version: Option<String>,
    /// DANGEROUS (mqlink only): accept any certificate from anyone; the connection is
    /// encrypted but not authenticated.
    #[arg(long)]
    pub tls_skip_all_verification: bool,
    /// TLS server name to verify and send (SNI) instead of the host (mqlink only).
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// mqttv5, mqttv311 or mqttv31 (also 5, 311, 31) [pub/sub: mqttv311; bench: mqttv5,
    /// falling back to 3.1.1 when the broker refuses 5].
    #[arg(short = 'V', long = "protocol-version")]
    pub protocol: Option<String>,
    /// Client id [pub/sub: empty, the broker assigns one, as mosquitto_pub/sub 2.0].
    #[arg(short = 'i', long)]
    pub id: Option<String>,
    /// Keepalive in seconds.
    #[arg(short = 'k', long, default_value_t = 60)]
    pub keepalive: u16,
    /// Will topic.
    #[arg(long)]
    pub will_topic: Option<String>,
    /// Will payload [default: empty].
    #[arg(long)]
    pub will_payload: Option<String>,
    /// Will QoS.
    #[arg(long)]
    pub will_qos: Option<u8>,
    /// Retain the will.
    #[arg(long)]
    pub will_retain: bool,
    /// Most QoS 1/2 messages unacknowledged at once.
    #[arg(short = 'M', long, default_value_t = 20)]
    pub max_inflight: u16,
}

/// `pub`/`sub`: the shared options plus mosquitto's session, property and client-id-prefix
/// options, and the mosquitto options mqlink refuses.
#[derive(clap::Args, Debug, Clone)]
pub struct MosqConnArgs {
    /// Print help (`-h` is the host, as in mosquitto).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(flatten)]
    pub core: ConnCore,
    /// Client id prefix; the process id is appended.
    #[arg(short = 'I', long)]
    pub id_prefix: Option<String>,
    /// Persistent session: the broker keeps the session (and QoS 1/2 messages) after we
    /// leave; with MQTT 5 it never expires unless -x says otherwise. Needs -i.
    #[arg(short = 'c', long = "disable-clean-session")]
    pub persistent: bool,
    /// MQTT 5 session expiry in seconds: 0-4294967294, or -1, 4294967295 or ∞ for never
    /// [default: -1 with -c, 0 without].
    #[arg(
        short = 'x',
        long = "session-expiry-interval",
        allow_negative_numbers = true
    )]
    pub session_expiry: Option<String>,
    /// MQTT 5 property: -D COMMAND IDENTIFIER VALUE, or -D COMMAND user-property NAME VALUE.
    /// Implies MQTT 5 unless -V says otherwise.
    // A negative number is a value (mosquitto reports it out of range); other words that
    // start with `-` stay options.
    #[arg(short = 'D', long = "property", num_args = 3..=4, allow_negative_numbers = true, value_names = ["COMMAND", "IDENTIFIER", "VALUE"])]
    pub property: Vec<String>,
    /// Print libmosquitto's packet trace on stdout ("Client ID sending CONNECT", ...).
    #[arg(short = 'd', long)]
    pub debug: bool,
    /// Print no runtime errors (argument errors still are).
    #[arg(long)]
    pub quiet: bool,
    /// Disable Nagle's algorithm: mqlink always does, so this changes nothing.
    #[arg(long)]
    pub nodelay: bool,
    /// Keep retrying when the first connection fails (mqlink only).
    #[arg(long)]
    pub retry: bool,
    /// Bind the outgoing socket to this local address (IP address or host name).
    #[arg(short = 'A', value_name = "ADDRESS")]
    pub bind_address: Option<String>,
    /// Connect to the broker's Unix domain socket at PATH. As in mosquitto, it sets the
    /// host to PATH and the port to 0 (a Unix socket): a later -h, -p or -L overrides it.
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,
    /// Reach the broker through a SOCKS5 proxy: socks5h://[user[:password]@]host[:port]
    /// (port 1080 by default; the proxy resolves the broker's host name).
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    // mosquitto options mqlink cannot honour: accepted by the parser so the refusal names
    // the option and says why (see `refuse_unsupported`), never silently ignored.
    #[arg(long, hide = true)]
    psk: Option<String>,
    #[arg(long, hide = true)]
    psk_identity: Option<String>,
    #[arg(long, hide = true)]
    ciphers: Option<String>,
    #[arg(long, hide = true)]
    tls_engine: Option<String>,
    #[arg(long, hide = true)]
    keyform: Option<String>,
    #[arg(long, hide = true)]
    tls_engine_kpass_sha1: Option<String>,
    /// Where -h, -p, -L and --unix stand on the command line (filled in by `main`).
    #[arg(skip)]
    pub positions: Positions,
}

/// Where on the command line -h, -p, -L and --unix were last given (clap's argument
/// indices; a value from the environment counts as given before the command line).
///
/// mosquitto_pub/sub read their options in order into two slots, the host and the port:
/// -h writes the host, -p the port, -L both (the port from the URL, or its scheme's
/// default), --unix both (its path, and port 0, which libmosquitto takes to mean "a Unix
/// socket at the host"). The last writer of each slot wins, so `--unix P -h H` connects to
/// the Unix socket `H` and `--unix P -p 1883` to TCP host `P` (a lookup failure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Positions {
    /// `-h`.
    pub host: Option<usize>,
    /// `-p`.
    pub port: Option<usize>,
    /// `-L`.
    pub url: Option<usize>,
    /// `--unix`.
    pub unix: Option<usize>,
    /// `pub -t`: with -L, whichever comes last names the topic, as in mosquitto_pub.
    pub topic: Option<usize>,
    /// `sub`: how many -t filters come before -L, whose topic mosquitto_sub subscribes to
    /// in its place among them.
    pub topics_before_url: usize,
}

impl Positions {
    /// The positions in the matches of a `pub` or `sub` command line.
    pub fn from_matches(m: &clap::ArgMatches) -> Positions {
        let at = |id: &str| {
            // `sub` has no `topic` (its -t is `topics`, where -L's topic is added).
            if m.try_contains_id(id).is_err() {
                return None;
            }
            if m.value_source(id)? != clap::parser::ValueSource::CommandLine {
                return Some(0);
            }
            // Index 0 is the command's name: every option given comes after it.
            m.indices_of(id).and_then(Iterator::max)
        };
        let url = at("url");
        let topics_before_url = match (m.try_contains_id("topics"), url) {
            (Ok(_), Some(u)) => m
                .indices_of("topics")
                .map_or(0, |i| i.filter(|&i| i < u).count()),
            _ => 0,
        };
        Positions {
            topics_before_url,
            host: at("host"),
            port: at("port"),
            url,
            unix: at("unix"),
            topic: at("topic"),
        }
    }
}

/// Which option last wrote a slot (see [`Positions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Flag,
    Url,
    Unix,
}

/// The option that wrote a slot last: `flag` (-h or -p), -L or --unix, each with its
/// position and whether it was given. An option given without a known position (arguments
/// not parsed by `main`) counts as first, and ties go to --unix, then -h/-p, then -L.
fn last_writer(
    flag: (Option<usize>, bool),
    url: (Option<usize>, bool),
    unix: (Option<usize>, bool),
) -> Option<Writer> {
    [
        (url, Writer::Url),
        (flag, Writer::Flag),
        (unix, Writer::Unix),
    ]
    .into_iter()
    .filter_map(|((at, given), w)| at.or(given.then_some(0)).map(|at| (at, w)))
    // max_by_key returns the last of equal elements: the tie order above.
    .max_by_key(|(at, _)| *at)
    .map(|(_, w)| w)
}

/// The port `-L` writes, when the URL names none: its scheme's default, as mosquitto sets
/// it (`--cafile -L mqtt://host/topic` is TLS on 1883). None for an explicit port (the URL
/// carries it) and for mqlink's ws:// and wss:// URLs (their own defaults).
fn url_default_port(url: &str) -> Option<u16> {
    if has_port(url) {
        return None;
    }
    let scheme = url
        .trim()
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("mqtt") => Some(1883),
        Some("mqtts") => Some(8883),
        _ => None,
    }
}

/// What the connection options produced besides the [`MqttOptions`].
pub struct Conn {
    /// Options for the client.
    pub opts: MqttOptions,
    /// The topic from the path of `-L mqtt://host/topic`.
    pub url_topic: Option<String>,
    /// `-D PUBLISH ...` properties, for every message `pub` sends.
    pub publish_props: PublishProps,
}

/// A mosquitto option mqlink does not implement: the refusal says which and why.
fn refuse_unsupported(args: &MosqConnArgs, tool: &'static str) -> anyhow::Result<()> {
    let refusals: [(bool, &str); 4] = [
        (
            args.psk.is_some() || args.psk_identity.is_some(),
            "--psk/--psk-identity are not supported: rustls, mqlink's TLS library, has no \
             TLS-PSK.",
        ),
        (
            args.ciphers.is_some(),
            "--ciphers is not supported: it takes an OpenSSL cipher list; rustls offers only \
             its own safe cipher suites.",
        ),
        (
            args.tls_engine.is_some() || args.tls_engine_kpass_sha1.is_some(),
            "--tls-engine/--tls-engine-kpass-sha1 are not supported: OpenSSL engines do not \
             exist in rustls.",
        ),
        (
            args.keyform.as_deref().is_some_and(|k| k != "pem"),
            "--keyform engine is not supported: OpenSSL engines do not exist in rustls.",
        ),
    ];
    match refusals.iter().find(|(given, _)| *given) {
        Some((_, why)) => Err(mosq_usage(tool, *why)),
        None => Ok(()),
    }
}

/// `-x` as mosquitto reads it: seconds, with -1, 4294967295 and ∞ meaning never.
fn parse_expiry(tool: &'static str, s: &str) -> anyhow::Result<u32> {
    if s == "∞" {
        return Ok(u32::MAX);
    }
    match s.parse::<i64>() {
        Ok(-1) => Ok(u32::MAX),
        Ok(n) => u32::try_from(n)
            .map_err(|_| mosq_usage(tool, "session-expiry-interval not a number.\n")),
        Err(_) => Err(mosq_usage(tool, "session-expiry-interval not a number.\n")),
    }
}

/// What `--help` says about mosquitto compatibility (the README has the same table).
pub const COMPAT_HELP: &str = "\
mosquitto_pub/mosquitto_sub 2.0 options supported with the same meaning:
  -h -p -L -u -P -i -I -k -M -V (mqttv5|mqttv311|mqttv31, default mqttv311) -c -x --quiet
  -A --unix --proxy (socks5h://, no auth or user/password) --nodelay --cafile --capath
  (-h -p -L --unix are read in order, the last one wins, as in mosquitto)
  --tls-use-os-certs --cert --key --insecure (host name only)
  --tls-alpn --tls-version --will-topic --will-payload --will-qos --will-retain --help
  pub: -t -m -f -l -s -n -q -r --repeat --repeat-delay
  sub: -t -v -q -C -W (exit 27) -R -N -E -T -U --retained-only --remove-retained
       --retain-as-published --random-filter --pretty
       -F: every % field (%A %C %D %E %F %I %j %J %l %m %P %p %q %R %r %S %t %U %x %X %%)
       with - and 0 flags, width and .precision; @ strftime codes (@N, @@); \\ escapes
  -D: PUBLISH content-type correlation-data message-expiry-interval payload-format-indicator
      response-topic topic-alias user-property; CONNECT session-expiry-interval
      maximum-packet-size receive-maximum request-problem-information
      request-response-information topic-alias-maximum user-property; SUBSCRIBE
      subscription-identifier user-property; UNSUBSCRIBE user-property; DISCONNECT
      session-expiry-interval reason-string server-reference user-property; WILL all
  The options file $XDG_CONFIG_HOME/mosquitto_pub|_sub (or ~/.config/...) is read first.
  -d: libmosquitto's packet trace on stdout (sub: a message's acknowledgement is traced
      after its output, as mqlink acknowledges only what it printed)
Refused, naming why: --psk --psk-identity --ciphers --tls-engine
  --keyform engine, -D authentication-method/-data (no AUTH exchange) and
  payload-format-indicator 2-255 (kept as a flag by the codec).
Run as mosquitto_pub / mosquitto_sub (a symlink to mqlink), it is this command.";

/// `-V` as mosquitto spells it, plus the bare numbers.
///
/// # Errors
/// [`ConnUsage`] with mosquitto's message.
pub fn parse_protocol(s: &str) -> anyhow::Result<Protocol> {
    Ok(match s {
        "mqttv5" | "5" => Protocol::V5,
        "mqttv311" | "311" => Protocol::V311,
        "mqttv31" | "31" => Protocol::V31,
        // mosquitto_sub/pub print one more blank line after this message than after others.
        _ => return Err(conn_usage("Invalid protocol version argument given.\n")),
    })
}

/// Usage problems found by [`ConnCore::build`]; each command reports them its own way
/// (pub/sub as mosquitto does, bench as mqlink's other commands).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnUsage(pub String);

fn conn_usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(ConnUsage(msg.into()))
}

/// What differs between the commands that share [`ConnCore`].
pub struct Defaults {
    /// Host when neither `-h` nor `-L` gives one.
    pub host: &'static str,
    /// Protocol when `-V` is not given.
    pub protocol: Protocol,
    /// Fall back to 3.1.1 when the broker refuses 5 and `-V` was not given.
    pub fallback_to_311: bool,
}

impl ConnCore {
    /// Connection options (client id only when `-i` gave one) and the topic from `-L`'s
    /// path.
    ///
    /// # Errors
    /// [`ConnUsage`] for a bad argument; an unreadable `--capath`.
    pub fn build(&self, d: &Defaults) -> anyhow::Result<(MqttOptions, Option<String>)> {
        if self
            .tls_version
            .as_deref()
            .is_some_and(|v| !matches!(v, "tlsv1.3" | "tlsv1.2" | "tlsv1.1"))
        {
            return Err(conn_usage(
                "--tls-version must be tlsv1.3, tlsv1.2 or tlsv1.1.",
            ));
        }
        let (mut url, url_topic) = match &self.url {
            Some(u) => {
                let mut parsed = BrokerUrl::parse(u).map_err(|e| conn_usage(e.to_string()))?;
                // mosquitto: the path of mqtt:// and mqtts:// is the topic. ws:// and wss://
                // (an mqlink extra: mosquitto_pub/sub 2.0 have no WebSocket URLs) keep the
                // path as the WebSocket path.
                let topic = if matches!(parsed.transport, Transport::Ws | Transport::Wss) {
                    None
                } else {
                    let t = url_path(u);
                    parsed.path = "/mqtt".into();
                    (!t.is_empty()).then(|| t.to_string())
                };
                (parsed, topic)
            }
            None => (
                BrokerUrl::parse(&format!("mqtt://{}", d.host)).map_err(|e| anyhow!("{e}"))?,
                None,
            ),
        };
        if let Some(h) = &self.host {
            url.host = h.clone();
        }
        let tls_wanted = self.cafile.is_some() || self.capath.is_some() || self.tls_use_os_certs;
        if tls_wanted {
            url.transport = match url.transport {
                Transport::Ws | Transport::Wss => Transport::Wss,
                _ => Transport::Tls,
            };
            // mosquitto: 8883 is the default port once TLS is on.
            if self.url.as_deref().is_none_or(|u| !has_port(u)) {
                url.port = if url.transport == Transport::Wss {
                    443
                } else {
                    8883
                };
            }
        }
        if let Some(p) = self.port {
            url.port = p;
        }
        let mut o = MqttOptions::new(url);
        match &self.protocol {
            Some(p) => {
                o.protocol = parse_protocol(p)?;
                // mosquitto never falls back: what -V says is what is sent.
                o.fallback_to_311 = false;
            }
            None => {
                o.protocol = d.protocol;
                o.fallback_to_311 = d.fallback_to_311;
            }
        }
        if let Some(id) = &self.id {
            o.client_id = id.clone();
        }
        if self.username.is_some() {
            o.username = self.username.clone();
        }
        if self.pw.is_some() {
            o.password = self.pw.clone();
        }
        o.keep_alive = Duration::from_secs(u64::from(self.keepalive));
        o.max_inflight = self.max_inflight.max(1);
        if self.cert.is_some() != self.key.is_some() {
            return Err(conn_usage(
                "Both certfile and keyfile must be provided if one of them is set.",
            ));
        }
        let ca_file = match (&self.cafile, &self.capath) {
            (Some(f), _) => Some(f.clone()),
            (None, Some(dir)) => Some(capath_bundle(dir)?),
            (None, None) => None,
        };
        o.tls = TlsOptions {
            ca_file,
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            alpn: self.tls_alpn.iter().cloned().collect(),
            // The transport warns loudly at every connect when verification is off.
            insecure_skip_verify: self.tls_skip_all_verification,
            server_name: self.tls_server_name.clone(),
            skip_hostname_check: self.insecure,
            tls13_only: self.tls_version.as_deref() == Some("tlsv1.3"),
        };
        if let Some(topic) = &self.will_topic {
            let q = self.will_qos.unwrap_or(0);
            let qos =
                QoS::from_u8(q).ok_or_else(|| conn_usage(format!("Invalid will QoS {q}.")))?;
            o.will = Some(Will {
                topic: topic.clone(),
                payload: bytes::Bytes::from(self.will_payload.clone().unwrap_or_default()),
                qos,
                retain: self.will_retain,
                props: PublishProps::default(),
                delay: None,
            });
        } else if self.will_payload.is_some() || self.will_retain || self.will_qos.is_some() {
            return Err(conn_usage(
                "Will payload, QoS or retain given, but no will topic given.",
            ));
        }
        Ok((o, url_topic))
    }
}

impl MosqConnArgs {
    /// Connection options, the topic from `-L`'s path and the `-D PUBLISH` properties.
    pub fn options(&self, tool: &'static str) -> anyhow::Result<Conn> {
        refuse_unsupported(self, tool)?;
        let defaults = Defaults {
            host: "localhost",
            // mosquitto: -D makes the client an MQTT 5 client.
            protocol: if self.property.is_empty() {
                Protocol::V311
            } else {
                Protocol::V5
            },
            fallback_to_311: false,
        };
        // The host and port slots as mosquitto fills them (see `Positions`).
        let mut core = self.core.clone();
        let p = &self.positions;
        let url = (p.url, self.core.url.is_some());
        let unix = (p.unix, self.unix.is_some());
        match last_writer((p.host, self.core.host.is_some()), url, unix) {
            Some(Writer::Url) => core.host = None,
            Some(Writer::Unix) => {
                core.host = self.unix.as_ref().map(|u| u.to_string_lossy().into_owned());
            }
            Some(Writer::Flag) | None => {}
        }
        match last_writer((p.port, self.core.port.is_some()), url, unix) {
            Some(Writer::Url) => core.port = self.core.url.as_deref().and_then(url_default_port),
            Some(Writer::Unix) => core.port = Some(0),
            Some(Writer::Flag) | None => {}
        }
        let (mut o, url_topic) =
            core.build(&defaults)
                .map_err(|e| match e.downcast::<ConnUsage>() {
                    Ok(u) => mosq_usage(tool, u.0),
                    Err(e) => e,
                })?;
        let protocol = o.protocol;
        let id = &self.core.id;
        o.client_id = match (id, &self.id_prefix) {
            (Some(_), Some(_)) => {
                return Err(mosq_usage(
                    tool,
                    "-i and -I argument cannot be used together.",
                ));
            }
            (Some(id), None) => id.clone(),
            (None, Some(p)) => format!("{p}{}", std::process::id()),
            // mosquitto_pub/sub 2.0 send an empty client id (the broker assigns one), but
            // MQTT 3.1 forbids that: libmosquitto then makes up `mosq-` and 18 letters
            // and digits.
            (None, None) if protocol == Protocol::V31 => {
                use rand::Rng;
                let tail: String = rand::rng()
                    .sample_iter(rand::distr::Alphanumeric)
                    .take(18)
                    .map(char::from)
                    .collect();
                format!("mosq-{tail}")
            }
            (None, None) => String::new(),
        };
        // -c and -x as in mosquitto: -c alone means a session that never expires (MQTT 5);
        // -x alone sets the expiry of a clean-start session; 0 sends no property.
        let expiry = match &self.session_expiry {
            Some(x) => parse_expiry(tool, x)?,
            None if self.persistent => u32::MAX,
            None => 0,
        };
        if self.persistent && (id.is_none() || self.id_prefix.is_some()) {
            return Err(mosq_usage(
                tool,
                "You must provide a client id if you are using the -c option.",
            ));
        }
        if protocol == Protocol::V5
            && expiry == u32::MAX
            && (id.is_none() || self.id_prefix.is_some())
        {
            return Err(mosq_usage(
                tool,
                "You must provide a client id if you are using an infinite session expiry \
                 interval.",
            ));
        }
        // libmosquitto: port 0 means a Unix socket whose path is the host (`--unix`, and
        // also `-p 0` or a URL with port 0), unless a SOCKS5 proxy is set: the proxy is
        // then asked for that host and port 0, as libmosquitto asks it.
        let unix = (o.url.port == 0 && self.proxy.is_none()).then(|| PathBuf::from(&o.url.host));
        if unix.is_some() {
            // The host is not a name over a Unix socket: libmosquitto verifies the broker's
            // certificate chain there but no host name, and so does mqlink (the name below
            // is only what TLS sends as SNI).
            o.url.host = "localhost".into();
            o.tls.skip_hostname_check = true;
        }
        o.socket = SocketOptions {
            unix,
            bind: self.bind_address.clone(),
            proxy: match &self.proxy {
                Some(p) => Some(Socks5Proxy::parse(p).map_err(|m| mosq_usage(tool, m))?),
                None => None,
            },
        };
        o.clean_start = !self.persistent;
        o.session_expiry = (expiry > 0).then(|| Duration::from_secs(u64::from(expiry)));
        // mosquitto_pub/sub announce libmosquitto's MQTT 5 Receive Maximum, 20, whatever
        // -M says (-M only limits what they send); -D CONNECT receive-maximum overrides it.
        o.receive_maximum = Some(20);
        if self.debug {
            let trace = crate::cmd::packet_trace::PacketTrace::new(protocol == Protocol::V5);
            o.packet_observer = Some(crate::cmd::packet_trace::observer(
                if tool == "mosquitto_sub" && !self.quiet {
                    trace.with_subscribed_lines()
                } else {
                    trace
                },
            ));
        }
        let publish_props = properties::apply(tool, &self.property, protocol, &mut o)?;
        Ok(Conn {
            opts: o,
            url_topic,
            publish_props,
        })
    }
}

/// The broker as errors name it: the Unix socket's path with `--unix` (the URL's host and
/// port are not used then), the URL otherwise.
pub fn broker_label(o: &MqttOptions) -> String {
    match &o.socket.unix {
        Some(path) => format!("unix socket {}", path.display()),
        None => o.url.to_string(),
    }
}

/// The path of a URL as typed, without its leading `/` (BrokerUrl replaces an empty path
/// with the WebSocket default).
fn url_path(url: &str) -> &str {
    let rest = url.trim().split_once("://").map_or(url, |(_, r)| r);
    rest.split_once('/').map_or("", |(_, p)| p)
}

fn has_port(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && !p.contains(']'))
}

/// rustls takes one CA bundle; `--capath` is a directory of them (OpenSSL style), so its
/// PEM files are joined into one bundle in the temp directory, removed at exit by nobody
/// (it holds only public certificates).
fn capath_bundle(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let mut bundle = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| anyhow!("--capath '{}': {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        // Unreadable files and non-certificates (OpenSSL's directories hold both) are
        // skipped, as OpenSSL's lookup does.
        let Ok(data) = std::fs::read(&p) else {
            continue;
        };
        if data
            .windows(27)
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            bundle.extend_from_slice(&data);
            bundle.push(b'\n');
        }
    }
    if bundle.is_empty() {
        return Err(anyhow!(
            "--capath '{}': no PEM certificate found in the directory",
            dir.display()
        ));
    }
    let out = std::env::temp_dir().join(format!("mqlink-capath-{}.pem", std::process::id()));
    std::fs::write(&out, bundle)
        .map_err(|e| anyhow!("--capath: cannot write {}: {e}", out.display()))?;
    Ok(out)
}

/// Engine errors name config keys (`tls.ca_file`); on the command line the flag is what the
/// user typed.
pub fn flag_names(msg: &str) -> String {
    msg.replace("set tls.ca_file", "use --cafile")
        .replace("tls.ca_file", "--cafile")
        .replace("tls.cert_file", "--cert")
        .replace("tls.key_file", "--key")
        .replace("cert_file and key_file", "--cert and --key")
}

/// End a pub/sub run as mosquitto does: one line on stderr, exit 1 (argument errors
/// included: mosquitto_pub/sub exit 1 for those too). Codes chosen by the command pass
/// through.
///
/// `quiet` (`--quiet`) silences runtime errors; argument errors are still printed.
pub fn finish(result: anyhow::Result<()>, quiet: bool) -> anyhow::Result<()> {
    let Err(e) = result else { return Ok(()) };
    if e.downcast_ref::<crate::exit::Quiet>().is_some() {
        return Err(e);
    }
    match e.downcast_ref::<MosqUsage>() {
        Some(u) => eprintln!("{u}"),
        None if e.is::<MosqPlain>() => eprintln!("{e}"),
        None if quiet => {}
        None => eprintln!("Error: {}", flag_names(&format!("{e:#}"))),
    }
    // mosquitto_pub/sub exit with libmosquitto's error number for a failed TLS handshake
    // (MOSQ_ERR_TLS, 8) or SOCKS5 handshake (MOSQ_ERR_PROXY, 16) and 1 for the other
    // failures seen here.
    let code = if e.chain().any(|c| c.is::<TlsFailed>()) {
        8
    } else if e.chain().any(|c| c.is::<ProxyFailed>()) {
        16
    } else {
        1
    };
    Err(anyhow::Error::new(crate::exit::Quiet(code)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    #[command(disable_help_flag = true)]
    struct Line {
        #[command(flatten)]
        conn: MosqConnArgs,
    }

    /// The options from a command line, positions filled in as `main` does.
    fn conn(args: &[&str]) -> Conn {
        let m =
            Line::command().get_matches_from(std::iter::once("mqlink").chain(args.iter().copied()));
        let mut line = Line::from_arg_matches(&m).unwrap();
        line.conn.positions = Positions::from_matches(&m);
        line.conn.options("mosquitto_pub").unwrap()
    }

    fn endpoint(args: &[&str]) -> (Transport, String, u16, Option<PathBuf>) {
        let o = conn(args).opts;
        (o.url.transport, o.url.host, o.url.port, o.socket.unix)
    }

    /// What strace showed mosquitto_pub 2.0.11 connect to for these lines (ports 1883 and
    /// 8883 cannot be used by the comparison suite: Debian's broker may hold them).
    #[test]
    fn the_url_writes_the_port_of_its_scheme_as_mosquitto_does() {
        let tcp = |host: &str, port| (Transport::Tcp, host.to_string(), port, None);
        let tls = |host: &str, port| (Transport::Tls, host.to_string(), port, None);
        assert_eq!(endpoint(&["-p", "5", "-L", "mqtt://h/t"]), tcp("h", 1883));
        assert_eq!(endpoint(&["-L", "mqtt://h/t", "-p", "5"]), tcp("h", 5));
        assert_eq!(endpoint(&["-L", "mqtt://h:7/t"]), tcp("h", 7));
        assert_eq!(
            endpoint(&["--cafile", "/ca.pem", "-L", "mqtt://h/t"]),
            tls("h", 1883)
        );
        assert_eq!(
            endpoint(&["--cafile", "/ca.pem", "-h", "h"]),
            tls("h", 8883)
        );
        assert_eq!(endpoint(&["-p", "5", "-L", "mqtts://h/t"]).2, 8883);
    }

    #[test]
    fn unix_writes_the_host_and_port_zero_and_the_last_writer_wins() {
        let unix = |p: &str| {
            (
                Transport::Tcp,
                "localhost".to_string(),
                0,
                Some(PathBuf::from(p)),
            )
        };
        assert_eq!(endpoint(&["--unix", "/s", "-h", "/t"]), unix("/t"));
        assert_eq!(
            endpoint(&["-h", "h", "-p", "5", "--unix", "/s"]),
            unix("/s")
        );
        assert_eq!(endpoint(&["-p", "0"]), unix("localhost"));
        assert_eq!(
            endpoint(&["--unix", "/s", "-p", "5"]),
            (Transport::Tcp, "/s".to_string(), 5, None)
        );
        // Over the socket the certificate's host name is not checked, as in libmosquitto.
        let o = conn(&["--cafile", "/ca.pem", "--unix", "/s"]).opts;
        assert!(o.tls.skip_hostname_check);
        assert_eq!(o.socket.unix, Some(PathBuf::from("/s")));
        // With a proxy, the proxy is asked for the path and port 0, as by libmosquitto.
        let o = conn(&["--proxy", "socks5h://p", "--unix", "/s"]).opts;
        assert_eq!(
            (o.url.host.as_str(), o.url.port, o.socket.unix),
            ("/s", 0, None)
        );
    }
}
