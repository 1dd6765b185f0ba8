//! One readable line per packet for `-v`, in the spirit of Mosquitto's
//! verbose log: the type and the fields that matter, never the payload bytes.

use mqtt_codec::Packet;

/// A one-line summary of a packet.
pub fn describe(packet: &Packet<'_>) -> String {
    match packet {
        Packet::Connect(c) => format!(
            "CONNECT (v{}, c{}, k{}, id '{}'{}{})",
            c.protocol.level(),
            u8::from(c.clean_start),
            c.keep_alive,
            c.client_id,
            c.will
                .map(|w| format!(
                    ", will q{} r{} '{}'",
                    w.qos.as_u8(),
                    u8::from(w.retain),
                    w.topic
                ))
                .unwrap_or_default(),
            c.username.map(|u| format!(", u '{u}'")).unwrap_or_default(),
        ),
        Packet::ConnAck(a) => format!(
            "CONNACK (sp{}, {:?})",
            u8::from(a.session_present),
            a.reason
        ),
        Packet::Publish(p) => format!(
            "PUBLISH (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(p.dup),
            p.qos_pid.qos().as_u8(),
            u8::from(p.retain),
            p.qos_pid.pid().map_or(0, |p| p.get()),
            p.topic,
            p.payload.len()
        ),
        Packet::PubAck(r) => format!("PUBACK (m{}, {:?})", r.pid.get(), r.reason),
        Packet::PubRec(r) => format!("PUBREC (m{}, {:?})", r.pid.get(), r.reason),
        Packet::PubRel(r) => format!("PUBREL (m{}, {:?})", r.pid.get(), r.reason),
        Packet::PubComp(r) => format!("PUBCOMP (m{}, {:?})", r.pid.get(), r.reason),
        Packet::Subscribe(s) => {
            let filters: Vec<String> = s
                .filters
                .iter()
                .map(|f| format!("'{}' q{}", f.filter, f.options.qos.as_u8()))
                .collect();
            format!("SUBSCRIBE (m{}, {})", s.pid.get(), filters.join(", "))
        }
        Packet::SubAck(s) => {
            let codes: Vec<String> = s
                .codes
                .iter()
                .map(|c| format!("{:#04x}", c.as_u8()))
                .collect();
            format!("SUBACK (m{}, [{}])", s.pid.get(), codes.join(", "))
        }
        Packet::Unsubscribe(u) => {
            let filters: Vec<String> = u.filters.iter().map(|f| format!("'{f}'")).collect();
            format!("UNSUBSCRIBE (m{}, {})", u.pid.get(), filters.join(", "))
        }
        Packet::UnsubAck(u) => format!("UNSUBACK (m{})", u.pid.get()),
        Packet::PingReq => "PINGREQ".to_string(),
        Packet::PingResp => "PINGRESP".to_string(),
        Packet::Disconnect(d) => format!("DISCONNECT ({:?})", d.reason),
        Packet::Auth(a) => format!("AUTH ({:?})", a.reason),
    }
}
