//! What the tools say while they run, through the client's event hook:
//! `-d` prints every packet sent and received in mosquitto's own wording
//! (libmosquitto's debug log lines, on standard output as mosquitto_pub /
//! mosquitto_sub print them), and a lost and regained link is told on
//! standard error.

use std::io::Write;

use mqtt_client::{ClientEvent, EventHook, Packet, ProtocolVersion};

/// The hook for a client called `id`: packet lines when `debug`, link
/// lines unless `quiet`.
pub fn hook(
    id: String,
    version: ProtocolVersion,
    debug: bool,
    quiet: bool,
    reconnect: bool,
) -> EventHook {
    EventHook::new(move |event| match event {
        ClientEvent::Sent(p) if debug => packet_lines(&id, version, "sending", p),
        ClientEvent::Received(p) if debug => packet_lines(&id, version, "received", p),
        ClientEvent::ConnectionLost(e) if !quiet => {
            if reconnect {
                eprintln!(
                    "Connection lost: {e}; reconnecting (--exit-on-disconnect to stop instead)"
                )
            } else {
                eprintln!("Connection lost: {e}")
            }
        }
        ClientEvent::ReconnectFailed(e) if !quiet => eprintln!("Reconnect failed: {e}"),
        ClientEvent::Reconnected { session_present } if !quiet => eprintln!(
            "Reconnected ({})",
            if *session_present {
                "session resumed"
            } else {
                "new session, subscriptions restored"
            }
        ),
        _ => {}
    })
}

/// The line(s) libmosquitto logs for `p`.
pub fn describe(id: &str, version: ProtocolVersion, dir: &str, p: &Packet<'_>) -> Vec<String> {
    let c = format!("Client {id} {dir}");
    let sending = dir == "sending";
    match p {
        Packet::Connect(_) => vec![format!("{c} CONNECT")],
        Packet::ConnAck(a) => {
            let code = if version.is_v5() {
                a.reason.as_u8()
            } else {
                a.reason.to_v3_connack().unwrap_or(a.reason.as_u8())
            };
            vec![format!("{c} CONNACK ({code})")]
        }
        Packet::Publish(p) => vec![format!(
            "{c} PUBLISH (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(p.dup),
            p.qos_pid.qos().as_u8(),
            u8::from(p.retain),
            p.qos_pid.pid().map_or(0, |m| m.get()),
            p.topic,
            p.payload.len()
        )],
        Packet::PubAck(r) if sending => {
            vec![format!(
                "{c} PUBACK (m{}, rc{})",
                r.pid.get(),
                r.reason.as_u8()
            )]
        }
        Packet::PubRec(r) if sending => {
            vec![format!(
                "{c} PUBREC (m{}, rc{})",
                r.pid.get(),
                r.reason.as_u8()
            )]
        }
        Packet::PubRel(r) if sending => vec![format!("{c} PUBREL (m{})", r.pid.get())],
        Packet::PubComp(r) if sending => vec![format!("{c} PUBCOMP (m{})", r.pid.get())],
        Packet::PubAck(r) => vec![format!(
            "{c} PUBACK (Mid: {}, RC:{})",
            r.pid.get(),
            r.reason.as_u8()
        )],
        Packet::PubComp(r) => vec![format!(
            "{c} PUBCOMP (Mid: {}, RC:{})",
            r.pid.get(),
            r.reason.as_u8()
        )],
        Packet::PubRec(r) => vec![format!("{c} PUBREC (Mid: {})", r.pid.get())],
        Packet::PubRel(r) => vec![format!("{c} PUBREL (Mid: {})", r.pid.get())],
        Packet::Subscribe(s) => s
            .filters
            .iter()
            .map(|f| {
                format!(
                    "{c} SUBSCRIBE (Mid: {}, Topic: {}, QoS: {}, Options: 0x{:02x})",
                    s.pid.get(),
                    f.filter,
                    f.options.qos.as_u8(),
                    f.options.to_byte() & 0xfc
                )
            })
            .collect(),
        Packet::SubAck(s) => {
            // mosquitto_sub's own line after its SUBACK.
            let codes: Vec<String> = s.codes.iter().map(|r| r.as_u8().to_string()).collect();
            vec![
                format!("{c} SUBACK"),
                format!("Subscribed (mid: {}): {}", s.pid.get(), codes.join(", ")),
            ]
        }
        Packet::Unsubscribe(u) => u
            .filters
            .iter()
            .map(|f| format!("{c} UNSUBSCRIBE (Mid: {}, Topic: {f})", u.pid.get()))
            .collect(),
        Packet::UnsubAck(_) => vec![format!("{c} UNSUBACK")],
        Packet::PingReq => vec![format!("{c} PINGREQ")],
        Packet::PingResp => vec![format!("{c} PINGRESP")],
        Packet::Disconnect(_) if sending => vec![format!("{c} DISCONNECT")],
        Packet::Disconnect(d) => vec![format!("Received DISCONNECT ({})", d.reason.as_u8())],
        Packet::Auth(_) => vec![format!("{c} AUTH")],
    }
}

fn packet_lines(id: &str, version: ProtocolVersion, dir: &str, p: &Packet<'_>) {
    let mut out = std::io::stdout().lock();
    for line in describe(id, version, dir, p) {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}
