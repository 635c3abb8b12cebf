//! `-D` / `--property COMMAND IDENTIFIER VALUE` of mosquitto_pub/sub: MQTT 5 properties per
//! packet. Everything mosquitto_pub/sub 2.0.11 checks is checked the same way with the same
//! messages (command, name, packet, value range as `atol` reads it, then each packet's list:
//! forbidden values and duplicates); of what passes, the properties mqlink can send are
//! applied, the others are refused by name, never dropped.
//!
//! Sent: PUBLISH content-type, correlation-data, message-expiry-interval,
//! payload-format-indicator (0 or 1), response-topic, topic-alias, user-property; CONNECT
//! session-expiry-interval, maximum-packet-size, receive-maximum,
//! request-problem-information, request-response-information, topic-alias-maximum,
//! user-property; SUBSCRIBE subscription-identifier, user-property; UNSUBSCRIBE
//! user-property; DISCONNECT session-expiry-interval, reason-string, server-reference,
//! user-property. Properties of a packet the command never sends
//! are accepted and ignored, as mosquitto does (sub: PUBLISH; pub: SUBSCRIBE, UNSUBSCRIBE).
//! WILL: all its properties (ignored without `--will-topic`, as by mosquitto).
//! Everything else (authentication, which needs an AUTH exchange the engine does not
//! speak, and a payload-format-indicator above 1, which the codec keeps as a flag) is
//! refused by name.

use bytes::Bytes;
use mqlink::mqtt::client::MqttOptions;
use mqlink::mqtt::codec::{Protocol, PublishProps};

use crate::cmd::mosquitto_args::{MosqPlain, mosq_usage};

/// How mosquitto reads a property's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Byte,
    Int16,
    Int32,
    VarInt,
    Binary,
    Str,
    Pair,
}

/// Every property name mosquitto knows, its value type and the packets that may carry it
/// (MQTT 5 §2.2.2.2).
const PROPERTIES: &[(&str, Kind, &[&str])] = &[
    ("payload-format-indicator", Kind::Byte, &["PUBLISH", "WILL"]),
    ("message-expiry-interval", Kind::Int32, &["PUBLISH", "WILL"]),
    ("content-type", Kind::Str, &["PUBLISH", "WILL"]),
    ("response-topic", Kind::Str, &["PUBLISH", "WILL"]),
    ("correlation-data", Kind::Binary, &["PUBLISH", "WILL"]),
    (
        "subscription-identifier",
        Kind::VarInt,
        &["PUBLISH", "SUBSCRIBE"],
    ),
    (
        "session-expiry-interval",
        Kind::Int32,
        &["CONNECT", "CONNACK", "DISCONNECT"],
    ),
    ("assigned-client-identifier", Kind::Str, &["CONNACK"]),
    ("server-keep-alive", Kind::Int16, &["CONNACK"]),
    (
        "authentication-method",
        Kind::Str,
        &["CONNECT", "CONNACK", "AUTH"],
    ),
    (
        "authentication-data",
        Kind::Binary,
        &["CONNECT", "CONNACK", "AUTH"],
    ),
    ("request-problem-information", Kind::Byte, &["CONNECT"]),
    ("will-delay-interval", Kind::Int32, &["WILL"]),
    ("request-response-information", Kind::Byte, &["CONNECT"]),
    ("response-information", Kind::Str, &["CONNACK"]),
    ("server-reference", Kind::Str, &["CONNACK", "DISCONNECT"]),
    (
        "reason-string",
        Kind::Str,
        &[
            "CONNACK",
            "PUBACK",
            "PUBREC",
            "PUBREL",
            "PUBCOMP",
            "SUBACK",
            "UNSUBACK",
            "DISCONNECT",
            "AUTH",
        ],
    ),
    ("receive-maximum", Kind::Int16, &["CONNECT", "CONNACK"]),
    ("topic-alias-maximum", Kind::Int16, &["CONNECT", "CONNACK"]),
    ("topic-alias", Kind::Int16, &["PUBLISH"]),
    ("maximum-qos", Kind::Byte, &["CONNACK"]),
    ("retain-available", Kind::Byte, &["CONNACK"]),
    (
        "user-property",
        Kind::Pair,
        &[
            "CONNECT",
            "CONNACK",
            "PUBLISH",
            "PUBACK",
            "PUBREC",
            "PUBREL",
            "PUBCOMP",
            "SUBSCRIBE",
            "SUBACK",
            "UNSUBSCRIBE",
            "UNSUBACK",
            "DISCONNECT",
            "AUTH",
            "WILL",
        ],
    ),
    ("maximum-packet-size", Kind::Int32, &["CONNECT", "CONNACK"]),
    ("wildcard-subscription-available", Kind::Byte, &["CONNACK"]),
    (
        "subscription-identifier-available",
        Kind::Byte,
        &["CONNACK"],
    ),
    ("shared-subscription-available", Kind::Byte, &["CONNACK"]),
];

/// The commands mosquitto_pub/sub 2.0.11 know by name (not SUBACK nor UNSUBACK).
const COMMANDS: &[&str] = &[
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "DISCONNECT",
    "AUTH",
    "WILL",
];

/// The packets whose property lists mosquitto checks after reading the command line, in
/// its order.
const CHECKED: &[&str] = &[
    "CONNECT",
    "PUBLISH",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "DISCONNECT",
    "WILL",
];

/// One `-D` that mosquitto accepted.
#[derive(Debug)]
struct Given<'a> {
    /// Upper case.
    command: String,
    /// As typed.
    command_given: &'a str,
    name: &'static str,
    kind: Kind,
    /// Numbers as C's `atol` read them.
    number: i64,
    key: &'a str,
    value: &'a str,
}

/// C's `atol`: leading blanks, a sign, digits up to the first other character; 0 when
/// there are none; saturated like glibc's `strtol`.
fn atol(s: &str) -> i64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut n: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg { n.saturating_neg() } else { n }
}

/// mosquitto's checks of one `-D` while it reads the command line (`cfg_parse_property`),
/// with its messages.
fn check_one<'a>(tool: &'static str, d: &'a [String]) -> anyhow::Result<Given<'a>> {
    let command = d[0].to_ascii_uppercase();
    // mosquitto prints one more blank line after these messages than after others.
    if !COMMANDS.contains(&command.as_str()) {
        return Err(mosq_usage(
            tool,
            "Invalid command given in --property argument.\n",
        ));
    }
    let Some(&(name, kind, allowed)) = PROPERTIES.iter().find(|(n, ..)| *n == d[1]) else {
        return Err(mosq_usage(
            tool,
            "Invalid property name given in --property argument.\n",
        ));
    };
    if !allowed.contains(&command.as_str()) {
        return Err(mosq_usage(
            tool,
            format!(
                "{name} property not allowed for {} in --property argument.\n",
                d[0]
            ),
        ));
    }
    let not_supported = || {
        mosq_usage(
            tool,
            format!(
                "{name} property not supported for {} in --property argument.\n",
                d[0]
            ),
        )
    };
    match command.as_str() {
        "PUBLISH" if name == "subscription-identifier" => return Err(not_supported()),
        "PUBACK" | "PUBREC" | "PUBREL" | "PUBCOMP" | "AUTH" => return Err(not_supported()),
        // mosquitto 2.0.11 knows CONNACK but has no list for it: it stops with only the
        // pointer to --help.
        "CONNACK" => {
            return Err(anyhow::Error::new(MosqPlain(format!(
                "\nUse '{tool} --help' to see usage."
            ))));
        }
        _ => {}
    }
    let value = d[d.len() - 1].as_str();
    let number = atol(value);
    let max = match kind {
        Kind::Byte => i64::from(u8::MAX),
        Kind::Int16 => i64::from(u16::MAX),
        Kind::Int32 | Kind::VarInt => i64::from(u32::MAX),
        Kind::Binary | Kind::Str | Kind::Pair => i64::MAX,
    };
    if !(0..=max).contains(&number) && !matches!(kind, Kind::Binary | Kind::Str | Kind::Pair) {
        return Err(mosq_usage(
            tool,
            format!("Property value ({number}) out of range for property {name}.\n"),
        ));
    }
    if kind == Kind::VarInt && number > 268_435_455 {
        // libmosquitto refuses to add it; mosquitto prints the property type's number.
        return Err(anyhow::Error::new(MosqPlain(format!(
            "Error adding property {name} 4\n\nUse '{tool} --help' to see usage."
        ))));
    }
    Ok(Given {
        command,
        command_given: &d[0],
        name,
        kind,
        number,
        key: if kind == Kind::Pair { &d[2] } else { "" },
        value,
    })
}

/// mosquitto's checks of each packet's whole list once the command line is read
/// (`mosquitto_property_check_all`): values MQTT 5 forbids, then duplicates.
fn check_all(tool: &'static str, given: &[Given<'_>]) -> anyhow::Result<()> {
    for command in CHECKED {
        let list: Vec<&Given<'_>> = given.iter().filter(|g| g.command == *command).collect();
        for (i, g) in list.iter().enumerate() {
            let forbidden = match g.name {
                "request-problem-information" | "request-response-information" => g.number > 1,
                "maximum-packet-size" | "receive-maximum" | "topic-alias" => g.number == 0,
                _ => false,
            };
            let problem = if forbidden {
                "A network protocol error occurred when communicating with the broker."
            } else if g.kind != Kind::Pair && list[i + 1..].iter().any(|h| h.name == g.name) {
                "Duplicate property in property list"
            } else {
                continue;
            };
            let what = if *command == "WILL" {
                "Will".to_string()
            } else {
                (*command).to_string()
            };
            return Err(anyhow::Error::new(MosqPlain(format!(
                "Error in {what} properties: {problem}\n\nUse '{tool} --help' to see usage."
            ))));
        }
    }
    Ok(())
}

/// Check every `-D` as mosquitto does, apply the CONNECT and SUBSCRIBE ones to `opts`, and
/// return the PUBLISH ones.
///
/// # Errors
/// mosquitto's message for what mosquitto refuses; then a refusal naming the property for
/// one mosquitto accepts and mqlink cannot send; `-D` with `-V` 3.x.
pub fn apply(
    tool: &'static str,
    flat: &[String],
    protocol: Protocol,
    opts: &mut MqttOptions,
) -> anyhow::Result<PublishProps> {
    let mut props = PublishProps::default();
    let grouped = group(tool, flat)?;
    if grouped.is_empty() {
        return Ok(props);
    }
    let given = grouped
        .iter()
        .map(|d| check_one(tool, d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    check_all(tool, &given)?;
    if protocol != Protocol::V5 {
        // mosquitto lets whichever of -D and -V comes last win; mqlink refuses the mix.
        return Err(mosq_usage(
            tool,
            "-D/--property needs MQTT 5: drop -V or use -V mqttv5.",
        ));
    }
    for g in &given {
        let (name, value) = (g.name, g.value);
        let number = g.number as u64;
        match (g.command.as_str(), name) {
            // mosquitto_sub never publishes and ignores -D PUBLISH; mosquitto_pub never
            // subscribes and ignores -D SUBSCRIBE / UNSUBSCRIBE; so does mqlink.
            ("PUBLISH", _) if tool == "mosquitto_sub" => {}
            ("SUBSCRIBE" | "UNSUBSCRIBE", _) if tool == "mosquitto_pub" => {}
            ("PUBLISH", _) => {
                if !publish_property(&mut props, name, g.key, value, number) {
                    return Err(not_sendable(tool, g));
                }
            }
            // Without --will-topic there is no will: mosquitto drops its properties too.
            ("WILL", _) if opts.will.is_none() => {}
            ("WILL", "will-delay-interval") => {
                if let Some(w) = opts.will.as_mut() {
                    w.delay = Some(number as u32);
                }
            }
            ("WILL", _) => {
                if let Some(w) = opts.will.as_mut()
                    && !publish_property(&mut w.props, name, g.key, value, number)
                {
                    return Err(not_sendable(tool, g));
                }
            }
            ("CONNECT", "session-expiry-interval") => {
                opts.session_expiry = (number > 0).then(|| std::time::Duration::from_secs(number));
            }
            // check_all has refused 0.
            ("CONNECT", "receive-maximum") => opts.receive_maximum = Some(number as u16),
            // check_all has refused values above 1.
            ("CONNECT", "request-problem-information") => {
                opts.connect_extras.request_problem_info = Some(number == 1);
            }
            ("CONNECT", "request-response-information") => {
                opts.connect_extras.request_response_info = Some(number == 1);
            }
            ("CONNECT", "user-property") => {
                opts.connect_extras
                    .user
                    .push((g.key.to_string(), value.to_string()));
            }
            ("CONNECT", "topic-alias-maximum") => {
                opts.connect_extras.topic_alias_maximum = Some(number as u16);
            }
            ("CONNECT", "maximum-packet-size") => {
                // The engine needs room for a CONNACK and small PUBLISHes.
                if number < 64 {
                    return Err(mosq_usage(
                        tool,
                        "-D CONNECT maximum-packet-size: mqlink needs at least 64 bytes.",
                    ));
                }
                opts.max_packet_size = number as u32;
            }
            ("SUBSCRIBE", "subscription-identifier") => {
                // mosquitto sends 0 (and a word, read as 0) although MQTT 5 forbids it;
                // mqlink refuses it before connecting.
                if number == 0 {
                    return Err(mosq_usage(
                        tool,
                        "-D SUBSCRIBE subscription-identifier: 0 is not allowed by MQTT 5 \
                         (1 to 268435455).",
                    ));
                }
                opts.subscribe_options.subscription_id = Some(number as u32);
            }
            ("UNSUBSCRIBE", "user-property") => {
                opts.subscribe_options
                    .unsubscribe_user
                    .push((g.key.to_string(), value.to_string()));
            }
            ("DISCONNECT", "session-expiry-interval") => {
                opts.disconnect.session_expiry = Some(number as u32);
            }
            ("DISCONNECT", "reason-string") => {
                opts.disconnect.reason_string = Some(value.to_string());
            }
            ("DISCONNECT", "server-reference") => {
                opts.disconnect.server_reference = Some(value.to_string());
            }
            ("DISCONNECT", "user-property") => {
                opts.disconnect
                    .user
                    .push((g.key.to_string(), value.to_string()));
            }
            ("SUBSCRIBE", "user-property") => {
                opts.subscribe_options
                    .user
                    .push((g.key.to_string(), value.to_string()));
            }
            _ => return Err(not_sendable(tool, g)),
        }
    }
    Ok(props)
}

/// Set a PUBLISH (or will) property; false when the codec cannot carry it.
fn publish_property(
    props: &mut PublishProps,
    name: &str,
    key: &str,
    value: &str,
    number: u64,
) -> bool {
    match name {
        "content-type" => props.content_type = Some(value.to_string()),
        "response-topic" => props.response_topic = Some(value.to_string()),
        "correlation-data" => props.correlation_data = Some(Bytes::from(value.as_bytes().to_vec())),
        "message-expiry-interval" => props.message_expiry = Some(number as u32),
        // check_all has refused 0; WILL has no topic alias (check_one refused it there).
        "topic-alias" => props.topic_alias = Some(number as u16),
        // mosquitto sends any byte; MQTT 5 defines 0 and 1, the codec carries a flag.
        "payload-format-indicator" if number <= 1 => props.payload_utf8 = Some(number == 1),
        "user-property" => props.user.push((key.to_string(), value.to_string())),
        _ => return false,
    }
    true
}

fn not_sendable(tool: &'static str, g: &Given<'_>) -> anyhow::Error {
    mosq_usage(
        tool,
        format!(
            "-D {} {} is not supported: mqlink cannot send this property.",
            g.command_given, g.name
        ),
    )
}

/// clap hands the values of every `-D` as one list; split it back as mosquitto reads each:
/// command, identifier, then one value (two for user-property).
fn group(tool: &'static str, flat: &[String]) -> anyhow::Result<Vec<Vec<String>>> {
    let mut out = Vec::new();
    let mut rest = flat;
    while !rest.is_empty() {
        let n = if rest.get(1).is_some_and(|i| i == "user-property") {
            4
        } else {
            3
        };
        if rest.len() < n {
            return Err(mosq_usage(
                tool,
                "--property argument given but not enough arguments specified.\n",
            ));
        }
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqlink::mqtt::url::BrokerUrl;

    fn run(d: &[&[&str]]) -> anyhow::Result<(PublishProps, MqttOptions)> {
        let mut o = MqttOptions::new(BrokerUrl::parse("mqtt://localhost").unwrap());
        let given: Vec<String> = d
            .iter()
            .flat_map(|v| v.iter().map(|s| (*s).to_string()))
            .collect();
        apply("mosquitto_pub", &given, Protocol::V5, &mut o).map(|p| (p, o))
    }

    #[test]
    fn publish_properties_are_carried() {
        let (p, _) = run(&[
            &["PUBLISH", "content-type", "text/plain"],
            &["publish", "user-property", "k", "v"],
            &["PUBLISH", "message-expiry-interval", "30"],
            &["PUBLISH", "payload-format-indicator", "1"],
        ])
        .unwrap();
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        assert_eq!(p.user, vec![("k".into(), "v".into())]);
        assert_eq!(p.message_expiry, Some(30));
        assert_eq!(p.payload_utf8, Some(true));
    }

    #[test]
    fn bad_and_unsupported_properties_are_refused_by_name() {
        let e = |d: &[&str]| format!("{}", run(&[d]).unwrap_err());
        assert!(e(&["PUBLISH", "session-expiry-interval", "5"]).contains("not allowed for"));
        assert!(e(&["BOGUS", "content-type", "x"]).contains("Invalid command"));
        assert!(e(&["PUBLISH", "bogus", "x"]).contains("Invalid property name"));
        assert!(e(&["PUBLISH", "topic-alias", "0"]).contains("protocol error"));
        assert!(e(&["PUBLISH", "payload-format-indicator", "2"]).contains("is not supported"));
        assert!(e(&["PUBLISH", "subscription-identifier", "2"]).contains("not supported for"));
        assert!(e(&["PUBLISH", "message-expiry-interval", "-1"]).contains("out of range"));
        assert!(e(&["CONNECT", "user-property", "a"]).contains("not enough arguments"));
        assert!(e(&["CONNECT", "authentication-method", "x"]).contains("is not supported"));
    }

    #[test]
    fn subscribe_properties_go_to_the_subscribe_options() {
        let mut o = MqttOptions::new(BrokerUrl::parse("mqtt://localhost").unwrap());
        let given: Vec<String> = [
            "SUBSCRIBE",
            "subscription-identifier",
            "7",
            "subscribe",
            "user-property",
            "k",
            "v",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        apply("mosquitto_sub", &given, Protocol::V5, &mut o).unwrap();
        assert_eq!(o.subscribe_options.subscription_id, Some(7));
        assert_eq!(o.subscribe_options.user, vec![("k".into(), "v".into())]);
        // mosquitto_pub accepts them and never subscribes.
        let mut o = MqttOptions::new(BrokerUrl::parse("mqtt://localhost").unwrap());
        apply("mosquitto_pub", &given, Protocol::V5, &mut o).unwrap();
        assert_eq!(o.subscribe_options, Default::default());
    }
}
