//! How `mqtt sub` prints a message: payload only, `-v` (topic and payload),
//! or a `-F` format string with mosquitto_sub's sequences (its man page,
//! "OUTPUT FORMAT"): `%` message fields with flags (`-`, `0`), field width
//! and maximum width, `@` strftime sequences, `\` escapes, and `%j` / `%J`
//! JSON (compact, or `--pretty` in cJSON's tab-indented layout).

use std::io::Write;

use chrono::{DateTime, Local};
use mqtt_client::Message;
use serde_json::{Map, Value};

/// How to print each message.
pub struct Output {
    pub format: Option<String>,
    pub verbose: bool,
    pub no_newline: bool,
    pub pretty: bool,
}

impl Output {
    /// The bytes printed for `msg` (and a warning on stderr for a `%J`
    /// payload that is not JSON, as mosquitto_sub).
    pub fn render(&self, msg: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.format {
            Some(f) => format_message(f, msg, self.pretty, Local::now(), &mut out),
            None => {
                if self.verbose {
                    out.extend_from_slice(msg.topic.as_bytes());
                    out.push(b' ');
                }
                out.extend_from_slice(&msg.payload);
            }
        }
        if !self.no_newline {
            out.push(b'\n');
        }
        out
    }
}

/// Flags, width and maximum width of one `%` sequence.
#[derive(Default)]
struct Spec {
    left: bool,
    zero: bool,
    width: usize,
    max: Option<usize>,
}

impl Spec {
    /// Pads (and, if `cut`, truncates) `value` as the sequence asks.
    fn apply(&self, value: &[u8], zero_ok: bool, cut: bool, out: &mut Vec<u8>) {
        let value = match self.max {
            Some(m) if cut && value.len() > m => &value[..m],
            _ => value,
        };
        let pad = self.width.saturating_sub(value.len());
        if self.left {
            out.extend_from_slice(value);
            out.extend(std::iter::repeat_n(b' ', pad));
        } else {
            let fill = if self.zero && zero_ok { b'0' } else { b' ' };
            out.extend(std::iter::repeat_n(fill, pad));
            out.extend_from_slice(value);
        }
    }
}

fn hex(bytes: &[u8], upper: bool) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
            .into_bytes()
        })
        .collect()
}

pub fn format_message(
    f: &str,
    msg: &Message,
    pretty: bool,
    now: DateTime<Local>,
    out: &mut Vec<u8>,
) {
    let p = &msg.properties;
    let mut chars = f.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let mut spec = Spec::default();
                while let Some(&flag) = chars.peek() {
                    match flag {
                        '-' => spec.left = true,
                        '0' => spec.zero = true,
                        _ => break,
                    }
                    chars.next();
                }
                let number = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
                    let mut n = 0usize;
                    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                        n = n.saturating_mul(10).saturating_add(d as usize);
                        chars.next();
                    }
                    n
                };
                spec.width = number(&mut chars);
                if chars.peek() == Some(&'.') {
                    chars.next();
                    spec.max = Some(number(&mut chars));
                }
                let Some(conv) = chars.next() else {
                    out.push(b'%');
                    break;
                };
                let opt_num = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_default();
                match conv {
                    '%' => out.push(b'%'),
                    // Topic aliases are resolved by the client before the
                    // message reaches the tool, so there is none to show.
                    'A' => spec.apply(b"", true, false, out),
                    'C' => spec.apply(
                        p.content_type.as_deref().unwrap_or("").as_bytes(),
                        false,
                        true,
                        out,
                    ),
                    'D' => out.extend_from_slice(p.correlation_data.as_deref().unwrap_or(b"")),
                    'E' => spec.apply(opt_num(p.message_expiry_secs).as_bytes(), true, false, out),
                    'F' => spec.apply(
                        opt_num(p.payload_format_utf8.map(u32::from)).as_bytes(),
                        true,
                        false,
                        out,
                    ),
                    'l' => spec.apply(msg.payload.len().to_string().as_bytes(), true, false, out),
                    'm' => spec.apply(msg.packet_id.to_string().as_bytes(), true, false, out),
                    'P' => {
                        let pairs: Vec<String> = p
                            .user_properties
                            .iter()
                            .map(|(k, v)| format!("{k}:{v}"))
                            .collect();
                        out.extend_from_slice(pairs.join(" ").as_bytes());
                    }
                    'p' => spec.apply(&msg.payload, false, false, out),
                    'q' => out.push(b'0' + msg.qos.as_u8()),
                    'R' => spec.apply(
                        p.response_topic.as_deref().unwrap_or("").as_bytes(),
                        false,
                        true,
                        out,
                    ),
                    'r' => out.push(if msg.retain { b'1' } else { b'0' }),
                    'S' => spec.apply(
                        opt_num(p.subscription_identifiers.first().copied()).as_bytes(),
                        true,
                        false,
                        out,
                    ),
                    't' => spec.apply(msg.topic.as_bytes(), false, true, out),
                    'x' => spec.apply(&hex(&msg.payload, false), true, false, out),
                    'X' => spec.apply(&hex(&msg.payload, true), true, false, out),
                    'I' => spec.apply(
                        now.format("%Y-%m-%dT%H:%M:%S%z").to_string().as_bytes(),
                        false,
                        true,
                        out,
                    ),
                    'U' => {
                        let _ = write!(
                            out,
                            "{}.{:09}",
                            now.timestamp(),
                            now.timestamp_subsec_nanos()
                        );
                    }
                    'j' | 'J' => match json(msg, conv == 'J', pretty, now) {
                        Some(s) => out.extend_from_slice(s.as_bytes()),
                        None => eprintln!(
                            "Error: Message payload is not valid JSON on topic {}.",
                            msg.topic
                        ),
                    },
                    other => {
                        // Unknown: printed as written, as mosquitto_sub.
                        out.push(b'%');
                        let mut b = [0u8; 4];
                        out.extend_from_slice(other.encode_utf8(&mut b).as_bytes());
                    }
                }
            }
            '@' => match chars.next() {
                Some('@') => out.push(b'@'),
                Some('N') => {
                    let _ = write!(out, "{:09}", now.timestamp_subsec_nanos());
                }
                Some(x) => {
                    // One strftime conversion; chrono rejects those it does
                    // not know, which then print nothing.
                    let spec = format!("%{x}");
                    let items = chrono::format::StrftimeItems::new(&spec);
                    let mut s = String::new();
                    if std::fmt::Write::write_fmt(
                        &mut s,
                        format_args!("{}", now.format_with_items(items)),
                    )
                    .is_ok()
                    {
                        out.extend_from_slice(s.as_bytes());
                    }
                }
                None => out.push(b'@'),
            },
            '\\' => match chars.next() {
                Some('\\') => out.push(b'\\'),
                Some('0') => out.push(0),
                Some('a') => out.push(0x07),
                Some('e') => out.push(0x1b),
                Some('n') => out.push(b'\n'),
                Some('r') => out.push(b'\r'),
                Some('t') => out.push(b'\t'),
                Some('v') => out.push(0x0b),
                Some(other) => {
                    out.push(b'\\');
                    let mut b = [0u8; 4];
                    out.extend_from_slice(other.encode_utf8(&mut b).as_bytes());
                }
                None => out.push(b'\\'),
            },
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

/// mosquitto_sub's `%j` (payload as a string) / `%J` (payload as JSON; `None`
/// when it is not JSON). Field names and order as mosquitto_sub 2.0. A
/// payload that is not UTF-8 goes in `payloadhex` (mosquitto prints the raw
/// bytes, which is not valid JSON).
fn json(
    msg: &Message,
    payload_is_json: bool,
    pretty: bool,
    now: DateTime<Local>,
) -> Option<String> {
    let mut o = Map::new();
    // mosquitto's own layout: microseconds, then "Z", then the offset.
    let tst = format!(
        "{}.{:06}Z{}",
        now.format("%Y-%m-%dT%H:%M:%S"),
        now.timestamp_subsec_micros(),
        now.format("%z")
    );
    o.insert("tst".into(), tst.into());
    o.insert("topic".into(), msg.topic.clone().into());
    o.insert("qos".into(), msg.qos.as_u8().into());
    o.insert("retain".into(), u8::from(msg.retain).into());
    o.insert("payloadlen".into(), msg.payload.len().into());
    if msg.qos.as_u8() > 0 {
        o.insert("mid".into(), msg.packet_id.into());
    }
    // mosquitto_sub lists the properties in the order of the packet; the
    // client keeps them by name, so they come in the order our client and
    // broker send them (which is what mosquitto_sub prints against our
    // broker).
    let p = &msg.properties;
    let mut props = Map::new();
    if let Some(f) = p.payload_format_utf8 {
        props.insert("payload-format-indicator".into(), u8::from(f).into());
    }
    if let Some(e) = p.message_expiry_secs {
        props.insert("message-expiry-interval".into(), e.into());
    }
    if let Some(ct) = &p.content_type {
        props.insert("content-type".into(), ct.clone().into());
    }
    if let Some(rt) = &p.response_topic {
        props.insert("response-topic".into(), rt.clone().into());
    }
    if let Some(cd) = &p.correlation_data {
        props.insert(
            "correlation-data".into(),
            String::from_utf8_lossy(cd).into_owned().into(),
        );
    }
    if !p.user_properties.is_empty() {
        let mut up = Map::new();
        for (k, v) in &p.user_properties {
            up.insert(k.clone(), v.clone().into());
        }
        props.insert("user-properties".into(), Value::Object(up));
    }
    if let Some(id) = p.subscription_identifiers.first() {
        props.insert("subscription-identifier".into(), (*id).into());
    }
    if !props.is_empty() {
        o.insert("properties".into(), Value::Object(props));
    }
    if payload_is_json {
        let v: Value = serde_json::from_slice(&msg.payload).ok()?;
        o.insert("payload".into(), v);
    } else {
        match msg.payload_str() {
            Some(s) => o.insert("payload".into(), s.into()),
            None => o.insert(
                "payloadhex".into(),
                String::from_utf8(hex(&msg.payload, false))
                    .unwrap_or_default()
                    .into(),
            ),
        };
    }
    let v = Value::Object(o);
    Some(if pretty {
        let mut s = String::new();
        pretty_cjson(&v, 0, &mut s);
        s
    } else {
        v.to_string()
    })
}

/// cJSON's formatted layout, which mosquitto_sub `--pretty` prints: tabs for
/// indentation and after each `:`, one member per line.
fn pretty_cjson(v: &Value, depth: usize, s: &mut String) {
    let indent = |s: &mut String, n: usize| s.extend(std::iter::repeat_n('\t', n));
    match v {
        Value::Object(m) if !m.is_empty() => {
            s.push_str("{\n");
            for (i, (k, v)) in m.iter().enumerate() {
                indent(s, depth + 1);
                s.push_str(&Value::String(k.clone()).to_string());
                s.push_str(":\t");
                pretty_cjson(v, depth + 1, s);
                if i + 1 < m.len() {
                    s.push(',');
                }
                s.push('\n');
            }
            indent(s, depth);
            s.push('}');
        }
        Value::Array(a) if !a.is_empty() => {
            s.push('[');
            for (i, v) in a.iter().enumerate() {
                pretty_cjson(v, depth + 1, s);
                if i + 1 < a.len() {
                    s.push_str(", ");
                }
            }
            s.push(']');
        }
        other => s.push_str(&other.to_string()),
    }
}
