//! `-D` / `--property COMMAND IDENTIFIER VALUE` of mosquitto_pub/sub: MQTT 5 properties per
//! packet. Names and commands are checked as mosquitto checks them (same messages); the
//! properties mqlink can send are applied, the others are refused by name, never dropped.
//!
//! Sent: PUBLISH content-type, correlation-data, message-expiry-interval,
//! payload-format-indicator, response-topic, user-property; CONNECT session-expiry-interval,
//! maximum-packet-size; SUBSCRIBE subscription-identifier, user-property. Properties of a
//! packet the command never sends are accepted and ignored, as mosquitto does (sub:
//! PUBLISH; pub: SUBSCRIBE, UNSUBSCRIBE). Everything else the engine has no field for
//! (topic aliases, will properties, user properties on CONNECT/UNSUBSCRIBE/DISCONNECT, ...)
//! is refused by name.

use bytes::Bytes;
use mqlink::mqtt::client::MqttOptions;
use mqlink::mqtt::codec::{Protocol, PublishProps};

use crate::cmd::mosquitto_args::{MosqPlain, mosq_usage};

/// Every property name mosquitto knows, with the packets that may carry it (MQTT 5 §2.2.2.2).
const PROPERTIES: &[(&str, &[&str])] = &[
    ("payload-format-indicator", &["PUBLISH", "WILL"]),
    ("message-expiry-interval", &["PUBLISH", "WILL"]),
    ("content-type", &["PUBLISH", "WILL"]),
    ("response-topic", &["PUBLISH", "WILL"]),
    ("correlation-data", &["PUBLISH", "WILL"]),
    ("subscription-identifier", &["PUBLISH", "SUBSCRIBE"]),
    ("session-expiry-interval", &["CONNECT", "DISCONNECT"]),
    ("assigned-client-identifier", &[]),
    ("server-keep-alive", &[]),
    ("authentication-method", &["CONNECT", "AUTH"]),
    ("authentication-data", &["CONNECT", "AUTH"]),
    ("request-problem-information", &["CONNECT"]),
    ("will-delay-interval", &["WILL"]),
    ("request-response-information", &["CONNECT"]),
    ("response-information", &[]),
    ("server-reference", &["DISCONNECT"]),
    (
        "reason-string",
        &[
            "PUBACK",
            "PUBREC",
            "PUBREL",
            "PUBCOMP",
            "DISCONNECT",
            "AUTH",
        ],
    ),
    ("receive-maximum", &["CONNECT"]),
    ("topic-alias-maximum", &["CONNECT"]),
    ("topic-alias", &["PUBLISH"]),
    ("maximum-qos", &[]),
    ("retain-available", &[]),
    (
        "user-property",
        &[
            "CONNECT",
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
        ],
    ),
    ("maximum-packet-size", &["CONNECT"]),
    ("wildcard-subscription-available", &[]),
    ("subscription-identifier-available", &[]),
    ("shared-subscription-available", &[]),
];

const COMMANDS: &[&str] = &[
    "CONNECT",
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

/// Check every `-D`, apply the CONNECT ones to `opts`, and return the PUBLISH ones.
///
/// # Errors
/// mosquitto's message for a bad command, name or place; a refusal naming the property for
/// one mqlink cannot send; `-D` with `-V` 3.x.
pub fn apply(
    tool: &'static str,
    flat: &[String],
    protocol: Protocol,
    opts: &mut MqttOptions,
) -> anyhow::Result<PublishProps> {
    let mut props = PublishProps::default();
    let given = group(tool, flat)?;
    if given.is_empty() {
        return Ok(props);
    }
    if protocol != Protocol::V5 {
        // mosquitto lets whichever of -D and -V comes last win; mqlink refuses the mix.
        return Err(mosq_usage(
            tool,
            "-D/--property needs MQTT 5: drop -V or use -V mqttv5.",
        ));
    }
    for d in &given {
        let (command, name) = (d[0].to_ascii_uppercase(), d[1].as_str());
        // mosquitto prints one more blank line after these messages than after others.
        if !COMMANDS.contains(&command.as_str()) {
            return Err(mosq_usage(
                tool,
                "Invalid command given in --property argument.\n",
            ));
        }
        let Some((_, allowed)) = PROPERTIES.iter().find(|(n, _)| *n == name) else {
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
        let value = d[d.len() - 1].clone();
        let number = |max: u64| -> anyhow::Result<u64> {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| {
                    mosq_usage(
                        tool,
                        format!("-D {} {name}: '{value}' is not a number up to {max}.", d[0]),
                    )
                })
        };
        match (command.as_str(), name) {
            // mosquitto_sub never publishes and ignores -D PUBLISH; mosquitto_pub never
            // subscribes and ignores -D SUBSCRIBE / UNSUBSCRIBE; so does mqlink.
            ("PUBLISH", _) if tool == "mosquitto_sub" => {}
            ("SUBSCRIBE" | "UNSUBSCRIBE", _) if tool == "mosquitto_pub" => {}
            ("SUBSCRIBE", "subscription-identifier") => {
                if opts.subscribe_options.subscription_id.is_some() {
                    return Err(anyhow::Error::new(MosqPlain(format!(
                        "Error in SUBSCRIBE properties: Duplicate property in property list\n\n\
                         Use '{tool} --help' to see usage."
                    ))));
                }
                // mosquitto sends 0 (and a word it cannot read, as 0) although MQTT 5
                // forbids it; mqlink refuses it before connecting.
                let id = number(268_435_455)?;
                if id == 0 {
                    return Err(mosq_usage(
                        tool,
                        "-D SUBSCRIBE subscription-identifier: 0 is not allowed by MQTT 5 \
                         (1 to 268435455).",
                    ));
                }
                opts.subscribe_options.subscription_id = Some(id as u32);
            }
            ("SUBSCRIBE", "user-property") => {
                opts.subscribe_options.user.push((d[2].clone(), value));
            }
            ("PUBLISH", "content-type") => props.content_type = Some(value),
            ("PUBLISH", "response-topic") => props.response_topic = Some(value),
            ("PUBLISH", "correlation-data") => {
                props.correlation_data = Some(Bytes::from(value.into_bytes()));
            }
            ("PUBLISH", "message-expiry-interval") => {
                props.message_expiry = Some(number(u64::from(u32::MAX))? as u32);
            }
            ("PUBLISH", "payload-format-indicator") => {
                props.payload_utf8 = Some(number(1)? == 1);
            }
            ("PUBLISH", "user-property") => props.user.push((d[2].clone(), value)),
            ("CONNECT", "session-expiry-interval") => {
                let secs = number(u64::from(u32::MAX))?;
                opts.session_expiry = (secs > 0).then(|| std::time::Duration::from_secs(secs));
            }
            ("CONNECT", "maximum-packet-size") => {
                // The engine needs room for a CONNACK and small PUBLISHes.
                let n = number(u64::from(u32::MAX))?;
                if n < 64 {
                    return Err(mosq_usage(
                        tool,
                        "-D CONNECT maximum-packet-size: mqlink needs at least 64 bytes.",
                    ));
                }
                opts.max_packet_size = n as u32;
            }
            _ => {
                return Err(mosq_usage(
                    tool,
                    format!(
                        "-D {} {name} is not supported: mqlink cannot send this property.",
                        d[0]
                    ),
                ));
            }
        }
    }
    Ok(props)
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
        assert!(e(&["PUBLISH", "topic-alias", "3"]).contains("topic-alias is not supported"));
        assert!(e(&["CONNECT", "user-property", "a"]).contains("not enough arguments"));
        assert!(e(&["DISCONNECT", "session-expiry-interval", "5"]).contains("not supported"));
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
