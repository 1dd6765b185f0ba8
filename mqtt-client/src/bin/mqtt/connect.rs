//! From flags to [`ConnectOptions`]: version, QoS, TLS, will, reconnection
//! and the `-D` MQTT 5 properties (mosquitto's forms: `-D COMMAND NAME
//! VALUE`, `-D COMMAND user-property KEY VALUE`).

use std::time::Duration;

use bytes::Bytes;
use mqtt_client::{
    ClientError, ConnectOptions, ProtocolVersion, PublishProperties, QoS, TlsOptions, Will,
};

use crate::args::Common;

pub fn parse_qos(q: u8) -> Result<QoS, ClientError> {
    QoS::from_u8(q).map_err(|_| ClientError::Invalid(format!("QoS must be 0, 1 or 2, not {q}")))
}

/// The protocol version: `-V` as mosquitto spells it; `-D` alone implies 5,
/// as in mosquitto.
pub fn version(c: &Common) -> Result<ProtocolVersion, ClientError> {
    let explicit = c.version.as_str();
    if !c.properties.is_empty() && explicit == "311" {
        return Ok(ProtocolVersion::V5);
    }
    parse_version(explicit)
}

pub fn parse_version(v: &str) -> Result<ProtocolVersion, ClientError> {
    match v {
        "5" | "mqttv5" => Ok(ProtocolVersion::V5),
        "311" | "mqttv311" => Ok(ProtocolVersion::V3_1_1),
        "31" | "mqttv31" => Ok(ProtocolVersion::V3_1),
        other => Err(ClientError::Invalid(format!(
            "unsupported protocol version {other:?} (use mqttv5, mqttv311 or mqttv31)"
        ))),
    }
}

/// `-x`: seconds, or -1 / 4294967295 / ∞ for never.
fn parse_expiry(s: &str) -> Result<u32, ClientError> {
    match s {
        "-1" | "∞" => Ok(u32::MAX),
        s => s.parse().map_err(|_| {
            ClientError::Invalid(format!(
                "session expiry interval must be 0 to 4294967295, -1 or ∞, not {s:?}"
            ))
        }),
    }
}

/// One `-D` property.
pub struct Prop<'a> {
    pub command: &'a str,
    pub name: &'a str,
    pub values: Vec<&'a str>,
}

/// Every `-D` given, split back into its groups.
pub fn all_properties(raw: &[String]) -> Result<Vec<Prop<'_>>, ClientError> {
    // clap appends the values of every -D in order; split them back into
    // groups: COMMAND NAME VALUE [VALUE] where only user-property has two.
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let command = raw[i].as_str();
        let name = raw.get(i + 1).map_or("", String::as_str);
        let n = if name == "user-property" { 2 } else { 1 };
        let values: Vec<&str> = raw
            .get(i + 2..i + 2 + n)
            .ok_or_else(|| ClientError::Invalid(format!("-D {command} {name} needs {n} value(s)")))?
            .iter()
            .map(String::as_str)
            .collect();
        const COMMANDS: [&str; 3] = ["connect", "publish", "will"];
        if !COMMANDS.iter().any(|c| c.eq_ignore_ascii_case(command)) {
            return Err(ClientError::Invalid(format!(
                "-D {command}: mqtt takes properties for connect, publish and will"
            )));
        }
        out.push(Prop {
            command,
            name,
            values,
        });
        i += 2 + n;
    }
    Ok(out)
}

fn number<T: std::str::FromStr>(p: &Prop<'_>) -> Result<T, ClientError> {
    p.values[0].parse().map_err(|_| {
        ClientError::Invalid(format!(
            "-D {} {}: {:?} is not a valid number",
            p.command, p.name, p.values[0]
        ))
    })
}

fn unsupported(p: &Prop<'_>) -> ClientError {
    ClientError::Invalid(format!(
        "-D {} {}: not a property mqtt can set on {}",
        p.command, p.name, p.command
    ))
}

/// The publish (or will) properties among `-D` for `command`.
fn message_properties(raw: &[String], command: &str) -> Result<PublishProperties, ClientError> {
    let mut out = PublishProperties::default();
    for p in all_properties(raw)?
        .into_iter()
        .filter(|p| p.command.eq_ignore_ascii_case(command))
    {
        let v = p.values[0];
        match p.name {
            "user-property" => out
                .user_properties
                .push((v.to_owned(), p.values[1].to_owned())),
            "content-type" => out.content_type = Some(v.to_owned()),
            "response-topic" => out.response_topic = Some(v.to_owned()),
            "correlation-data" => out.correlation_data = Some(Bytes::from(v.to_owned())),
            "message-expiry-interval" => out.message_expiry_secs = Some(number(&p)?),
            "payload-format-indicator" => out.payload_format_utf8 = Some(number::<u8>(&p)? != 0),
            // Will Delay is a will property the caller reads itself.
            "will-delay-interval" if command == "will" => {}
            _ => return Err(unsupported(&p)),
        }
    }
    Ok(out)
}

pub fn publish_properties(raw: &[String]) -> Result<PublishProperties, ClientError> {
    message_properties(raw, "publish")
}

fn tls(c: &Common) -> Option<TlsOptions> {
    (c.cafile.is_some()
        || c.capath.is_some()
        || c.tls_use_os_certs
        || c.insecure
        || c.cert.is_some()
        || !c.tls_alpn.is_empty())
    .then(|| TlsOptions {
        ca_file: c.cafile.clone(),
        ca_dir: c.capath.clone(),
        alpn: c.tls_alpn.clone(),
        cert_file: c.cert.clone(),
        key_file: c.key.clone(),
        insecure: c.insecure,
        server_name: None,
    })
}

/// The client identifier: `-i`, or `-I` prefix (or ours) and the process id.
pub fn client_id(c: &Common, default_prefix: &str) -> String {
    match (&c.id, &c.id_prefix) {
        (Some(id), _) => id.clone(),
        (None, Some(prefix)) => format!("{prefix}{}", std::process::id()),
        (None, None) => format!("{default_prefix}-{}", std::process::id()),
    }
}

/// `-L URL`, like mosquitto_pub -L: fills host, port, credentials, TLS and
/// topic as -h -p -u -P -t would. `mqtt(s)://host[:port]/topic`; for
/// `ws(s)://host[:port]/path/topic` the first path segment is the WebSocket
/// request path (`ws://host:9001/mqtt/room_temp`: path `/mqtt`, topic
/// `room_temp`), since brokers other than ours and Mosquitto want one.
/// A topic in the URL is added to `topics`.
pub fn apply_url(c: &mut Common, topics: &mut Vec<String>) -> Result<(), ClientError> {
    let Some(url) = c.url.clone() else {
        return Ok(());
    };
    let u = mqtt_client::BrokerUrl::parse(&url)?;
    let path = u.path.strip_prefix('/').unwrap_or(&u.path);
    let topic = if u.websocket {
        let (segment, topic) = path.split_once('/').unwrap_or((path, ""));
        c.ws_path = Some(format!("/{segment}"));
        topic
    } else {
        path
    };
    if !topic.is_empty() {
        topics.push(topic.to_string());
    }
    c.host = u.host;
    c.port = Some(u.port);
    if u.username.is_some() {
        c.username = u.username;
        c.pw = u.password;
    }
    // mqtts:// and wss:// mean TLS: with no CA given, the system's roots.
    if u.tls && c.cafile.is_none() && c.capath.is_none() && !c.insecure && c.cert.is_none() {
        c.tls_use_os_certs = true;
    }
    Ok(())
}

pub fn options(c: &Common, default_prefix: &str) -> Result<ConnectOptions, ClientError> {
    let version = version(c)?;
    if !c.properties.is_empty() && !version.is_v5() {
        return Err(ClientError::Invalid(format!(
            "-D sets MQTT 5 properties; it cannot be used with -V {}",
            c.version
        )));
    }
    if c.pw.is_some() && c.username.is_none() && !version.is_v5() {
        // MQTT 3.1.1 section 3.1.2.9 [MQTT-3.1.2-22]: no password without
        // a user name. Say so before the broker refuses a malformed CONNECT.
        return Err(ClientError::Invalid(
            "a password (-P) needs a user name (-u) in MQTT 3.1.1 and 3.1; give -u, or use -V 5"
                .into(),
        ));
    }
    let tls = tls(c);
    let port = c.port.unwrap_or(if tls.is_some() { 8883 } else { 1883 });
    let mut o = ConnectOptions::new(c.host.clone(), port).version(version);
    o.client_id = client_id(c, default_prefix);
    o.clean_start = !c.no_clean;
    o.session_expiry_secs = match &c.session_expiry {
        Some(s) => parse_expiry(s)?,
        None if c.no_clean => u32::MAX,
        None => 0,
    };
    o.keep_alive = Duration::from_secs(u64::from(c.keepalive));
    o.username = c.username.clone();
    o.password = c.pw.clone().map(Bytes::from);
    o.tls = tls;
    o.websocket = c
        .ws_path
        .clone()
        .map(|path| mqtt_client::WebSocketOptions { path });
    o.bind_address = c.bind_address;
    o.max_inflight = c.max_inflight.max(1);
    // Reconnect with backoff (as mosquitto_sub does), unless asked not to.
    o.reconnect = !c.exit_on_disconnect;
    o.max_backoff = Duration::from_secs(5);
    let mut will_delay = None;
    for p in all_properties(&c.properties)? {
        if p.command.eq_ignore_ascii_case("connect") {
            match p.name {
                "user-property" => o
                    .user_properties
                    .push((p.values[0].to_owned(), p.values[1].to_owned())),
                "session-expiry-interval" => o.session_expiry_secs = number(&p)?,
                "receive-maximum" => o.receive_maximum = Some(number(&p)?),
                "maximum-packet-size" => o.max_packet_size = Some(number(&p)?),
                "topic-alias-maximum" => o.topic_alias_maximum = number(&p)?,
                _ => return Err(unsupported(&p)),
            }
        } else if p.command.eq_ignore_ascii_case("will") && p.name == "will-delay-interval" {
            will_delay = Some(number(&p)?);
        }
    }
    if let Some(topic) = &c.will_topic {
        o.will = Some(Will {
            topic: topic.clone(),
            payload: Bytes::from(c.will_payload.clone().unwrap_or_default()),
            qos: parse_qos(c.will_qos)?,
            retain: c.will_retain,
            delay_secs: will_delay,
            properties: message_properties(&c.properties, "will")?,
        });
    }
    Ok(o)
}
