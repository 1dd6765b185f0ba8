//! From flags to [`ConnectOptions`]: version, QoS, TLS, will and `-D` properties.

use std::time::Duration;

use bytes::Bytes;
use mqtt_client::{
    ClientError, ConnectOptions, ProtocolVersion, PublishProperties, QoS, TlsOptions, Will,
};

use crate::args::Common;

pub fn parse_qos(q: u8) -> Result<QoS, ClientError> {
    QoS::from_u8(q).map_err(|_| ClientError::Invalid(format!("QoS must be 0, 1 or 2, not {q}")))
}

pub fn parse_version(v: &str) -> Result<ProtocolVersion, ClientError> {
    match v {
        "5" | "mqttv5" => Ok(ProtocolVersion::V5),
        "311" | "mqttv311" => Ok(ProtocolVersion::V3_1_1),
        other => Err(ClientError::Invalid(format!(
            "unsupported protocol version {other:?} (use 5 or 311)"
        ))),
    }
}

/// Properties given with -D for `command` (connect, publish, subscribe...).
pub fn properties_for<'a>(
    raw: &'a [String],
    command: &str,
) -> Result<Vec<(&'a str, Vec<&'a str>)>, ClientError> {
    // clap appends the values of every -D in order; split them back into
    // groups: COMMAND NAME VALUE [VALUE] where only user-property has two.
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let cmd = raw[i].as_str();
        let name = raw.get(i + 1).map_or("", String::as_str);
        let n = if name == "user-property" { 2 } else { 1 };
        let values: Vec<&str> = raw
            .get(i + 2..i + 2 + n)
            .ok_or_else(|| ClientError::Invalid(format!("-D {cmd} {name} needs {n} value(s)")))?
            .iter()
            .map(String::as_str)
            .collect();
        if cmd.eq_ignore_ascii_case(command) {
            out.push((name, values));
        }
        i += 2 + n;
    }
    Ok(out)
}

pub fn publish_properties(raw: &[String]) -> Result<PublishProperties, ClientError> {
    let mut p = PublishProperties::default();
    for (name, v) in properties_for(raw, "publish")? {
        match name {
            "user-property" => p.user_properties.push((v[0].to_owned(), v[1].to_owned())),
            "content-type" => p.content_type = Some(v[0].to_owned()),
            "response-topic" => p.response_topic = Some(v[0].to_owned()),
            "correlation-data" => p.correlation_data = Some(Bytes::from(v[0].to_owned())),
            "message-expiry-interval" => {
                p.message_expiry_secs = Some(v[0].parse().map_err(|_| {
                    ClientError::Invalid("message-expiry-interval needs a number".into())
                })?)
            }
            "payload-format-indicator" => p.payload_format_utf8 = Some(v[0] != "0"),
            other => {
                return Err(ClientError::Invalid(format!(
                    "unsupported publish property {other}"
                )))
            }
        }
    }
    Ok(p)
}

pub fn options(c: &Common, default_prefix: &str) -> Result<ConnectOptions, ClientError> {
    let version = parse_version(&c.version)?;
    let tls =
        (c.cafile.is_some() || c.tls_use_os_certs || c.insecure || c.cert.is_some()).then(|| {
            TlsOptions {
                ca_file: c.cafile.clone(),
                cert_file: c.cert.clone(),
                key_file: c.key.clone(),
                insecure: c.insecure,
                server_name: None,
            }
        });
    let port = c.port.unwrap_or(if tls.is_some() { 8883 } else { 1883 });
    let mut o = ConnectOptions::new(c.host.clone(), port).version(version);
    o.client_id = match &c.id {
        Some(id) => id.clone(),
        None => format!("{default_prefix}-{}", std::process::id()),
    };
    o.clean_start = !c.no_clean;
    o.session_expiry_secs = c
        .session_expiry
        .unwrap_or(if c.no_clean { u32::MAX } else { 0 });
    o.keep_alive = Duration::from_secs(u64::from(c.keepalive));
    o.username = c.username.clone();
    o.password = c.pw.clone().map(Bytes::from);
    o.tls = tls;
    // A command-line tool reports a lost connection instead of retrying.
    o.reconnect = false;
    for (name, v) in properties_for(&c.properties, "connect")? {
        if name == "user-property" {
            o.user_properties.push((v[0].to_owned(), v[1].to_owned()));
        }
    }
    if let Some(topic) = &c.will_topic {
        o.will = Some(Will {
            topic: topic.clone(),
            payload: Bytes::from(c.will_payload.clone().unwrap_or_default()),
            qos: parse_qos(c.will_qos)?,
            retain: c.will_retain,
            delay_secs: None,
            properties: PublishProperties::default(),
        });
    }
    Ok(o)
}
