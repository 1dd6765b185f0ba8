//! How `mqtt sub` prints a message: plain, `-v`, or a `-F` format string
//! (mosquitto_sub's specifiers), and `%j` JSON.

use std::time::{SystemTime, UNIX_EPOCH};

use mqtt_client::Message;

use crate::args::SubArgs;

pub fn render(a: &SubArgs, msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    match &a.format {
        Some(f) => format_message(f, msg, &mut out),
        None => {
            if a.verbose {
                out.extend_from_slice(msg.topic.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(&msg.payload);
        }
    }
    if !a.no_newline {
        out.push(b'\n');
    }
    out
}

fn format_message(f: &str, msg: &Message, out: &mut Vec<u8>) {
    let mut chars = f.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some('t') => out.extend_from_slice(msg.topic.as_bytes()),
                Some('p') => out.extend_from_slice(&msg.payload),
                Some('q') => out.extend_from_slice(msg.qos.as_u8().to_string().as_bytes()),
                Some('r') => out.push(if msg.retain { b'1' } else { b'0' }),
                Some('l') => out.extend_from_slice(msg.payload.len().to_string().as_bytes()),
                Some('x') => out.extend(
                    msg.payload
                        .iter()
                        .flat_map(|b| format!("{b:02x}").into_bytes()),
                ),
                Some('X') => out.extend(
                    msg.payload
                        .iter()
                        .flat_map(|b| format!("{b:02X}").into_bytes()),
                ),
                Some('U') => out.extend_from_slice(unix_time().as_bytes()),
                Some('I') => out.extend_from_slice(iso_time().as_bytes()),
                Some('j') => out.extend_from_slice(json(msg).as_bytes()),
                Some('%') => out.push(b'%'),
                Some(other) => {
                    out.push(b'%');
                    out.extend_from_slice(other.to_string().as_bytes());
                }
                None => out.push(b'%'),
            },
            '\\' => match chars.next() {
                Some('n') => out.push(b'\n'),
                Some('t') => out.push(b'\t'),
                Some('\\') => out.push(b'\\'),
                Some(other) => {
                    out.push(b'\\');
                    out.extend_from_slice(other.to_string().as_bytes());
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

fn unix_time() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// UTC time as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, computed without a date crate.
fn iso_time() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One JSON object per message, as mosquitto_sub's `%j`: a UTF-8 payload as
/// a string, any other payload as hex in `payloadhex`.
fn json(msg: &Message) -> String {
    let payload = match msg.payload_str() {
        Some(s) => format!("\"payload\":{}", json_str(s)),
        None => format!(
            "\"payloadhex\":\"{}\"",
            msg.payload
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
    };
    let mut props = String::new();
    if !msg.properties.user_properties.is_empty() {
        let list: Vec<String> = msg
            .properties
            .user_properties
            .iter()
            .map(|(k, v)| format!("{{{}:{}}}", json_str(k), json_str(v)))
            .collect();
        props = format!(",\"user-properties\":[{}]", list.join(","));
    }
    format!(
        "{{\"tst\":\"{}\",\"topic\":{},\"qos\":{},\"retain\":{},\"payloadlen\":{},{}{}}}",
        iso_time(),
        json_str(&msg.topic),
        msg.qos.as_u8(),
        u8::from(msg.retain),
        msg.payload.len(),
        payload,
        props
    )
}
