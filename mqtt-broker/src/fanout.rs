//! Fan-out encoded once: a message routed to several subscribers has the
//! part of its PUBLISH that is the same for all of them (topic and MQTT 5
//! properties, checked and encoded by the codec) encoded once, on the
//! publisher's task; each subscriber's connection then copies those bytes
//! around the few that are its own (MQTT 5.0 section 3.3, 3.1.1 section 3.3):
//!
//! ```text
//! first byte      DUP, QoS, RETAIN: per delivery (RETAIN As Published, QoS
//!                 downgraded to the subscription's)
//! Remaining Length  per delivery (a packet identifier adds 2 bytes; 3.x
//!                 clients get no property section)
//! topic           shared
//! packet id       per delivery (QoS 1 / 2 only)
//! properties      shared (MQTT 5 clients only)
//! payload         the message's own bytes: copied into the write buffer, or
//!                 written from the message when large (`splice`)
//! ```
//!
//! What differs per subscriber in other ways is not shared and takes the
//! ordinary encoder: Subscription Identifiers (per subscription), topic
//! aliases (per connection), and the Message Expiry Interval (the remaining
//! time at delivery [MQTT-5: 3.3.2-6]; a message with an expiry interval gets
//! no shared head at all). The client's Maximum Packet Size is checked per
//! delivery, on the size of the packet that subscriber would get.

use bytes::{BufMut, Bytes, BytesMut};
use mqtt_codec::{Packet, Pid, ProtocolVersion, Publish, QosPid};

use crate::message::Message;
use crate::splice::{Spliced, SPLICE_MIN};

/// The largest Remaining Length [MQTT-5: 1.5.5].
const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// The shared part of `msg`'s PUBLISH: the topic (2-byte length and bytes)
/// followed by the MQTT 5 property section (its length and properties).
/// `None` if the message has an expiry interval (not shareable) or does not
/// encode (the ordinary path then reports it).
pub(crate) fn encode_head(msg: &Message) -> Option<Box<[u8]>> {
    if msg
        .props
        .as_ref()
        .is_some_and(|p| p.message_expiry.is_some())
    {
        return None;
    }
    let mut props = Vec::new();
    // No expiry (checked above), so the time does not matter.
    msg.push_properties(msg.received, &mut props);
    let headless = Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: &msg.topic,
        properties: mqtt_codec::Properties::from_slice(&props),
        payload: &[],
    });
    let mut buf = BytesMut::new();
    headless
        .encode_to(ProtocolVersion::V5, &mut buf, usize::MAX)
        .ok()?;
    // Skip the fixed header: one byte and the Remaining Length.
    let rl_len = buf[1..].iter().position(|b| b & 0x80 == 0)? + 1;
    Some(buf[1 + rl_len..].into())
}

/// One delivery's own bits.
pub(crate) struct Delivery<'a> {
    pub version: ProtocolVersion,
    pub dup: bool,
    pub qos_pid: QosPid,
    pub retain: bool,
    pub topic_len: usize,
    pub payload: &'a Bytes,
}

/// Appends the PUBLISH of `d` built from the shared `head` to `out`, or
/// queues a large payload in `spliced` after it (when given: `out` is the
/// write buffer itself). Returns false, writing nothing, when the packet
/// would exceed `limit` (the client's Maximum Packet Size).
pub(crate) fn write(
    out: &mut BytesMut,
    head: &[u8],
    d: &Delivery<'_>,
    limit: usize,
    spliced: Option<&mut Spliced>,
) -> bool {
    let topic_part = 2 + d.topic_len;
    let Some((topic, props)) = head.split_at_checked(topic_part) else {
        return false;
    };
    let pid: Option<Pid> = d.qos_pid.pid();
    let body = topic.len()
        + if pid.is_some() { 2 } else { 0 }
        + if d.version.is_v5() { props.len() } else { 0 }
        + d.payload.len();
    if body > MAX_REMAINING_LENGTH {
        return false;
    }
    let mut varint = [0u8; 4];
    let rl_len = put_varint(&mut varint, body);
    if 1 + rl_len + body > limit {
        return false;
    }
    let first = 0x30 | (u8::from(d.dup) << 3) | (d.qos_pid.qos().as_u8() << 1) | u8::from(d.retain);
    let splice = spliced.filter(|_| d.payload.len() >= SPLICE_MIN);
    let copied = if splice.is_some() { 0 } else { d.payload.len() };
    out.reserve(1 + rl_len + body - d.payload.len() + copied);
    out.put_u8(first);
    out.put_slice(&varint[..rl_len]);
    out.put_slice(topic);
    if let Some(pid) = pid {
        out.put_u16(pid.get());
    }
    if d.version.is_v5() {
        out.put_slice(props);
    }
    match splice {
        Some(s) => s.push(out.len(), d.payload.clone()),
        None => out.put_slice(d.payload),
    }
    true
}

/// Writes `v` as a Variable Byte Integer; returns its length.
fn put_varint(buf: &mut [u8; 4], mut v: usize) -> usize {
    let mut n = 0;
    loop {
        let mut byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            byte |= 0x80;
        }
        buf[n] = byte;
        n += 1;
        if v == 0 || n == 4 {
            return n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageProps;
    use mqtt_codec::{QoS, MAX_PACKET_SIZE};
    use std::sync::Arc;

    fn message(props: Option<MessageProps>, payload: &[u8]) -> Message {
        let mut m = Message::new(
            "a/topic",
            Bytes::copy_from_slice(payload),
            QoS::ExactlyOnce,
            true,
        );
        m.props = props.map(Box::new);
        m.publisher = Some(Arc::from("p"));
        m
    }

    /// What the ordinary encoder writes for the same delivery.
    fn ordinary(m: &Message, d: &Delivery<'_>) -> Vec<u8> {
        let mut props = Vec::new();
        if d.version.is_v5() {
            m.push_properties(m.received, &mut props);
        }
        let mut out = BytesMut::new();
        Packet::Publish(Publish {
            dup: d.dup,
            qos_pid: d.qos_pid,
            retain: d.retain,
            topic: &m.topic,
            properties: mqtt_codec::Properties::from_slice(&props),
            payload: &m.payload,
        })
        .encode_to(d.version, &mut out, usize::MAX)
        .unwrap();
        out.to_vec()
    }

    /// Every combination of version, QoS, DUP and RETAIN gives the bytes
    /// the codec would have encoded for that subscriber.
    #[test]
    fn same_bytes_as_the_encoder() {
        let props = MessageProps {
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            ..Default::default()
        };
        // 200 bytes makes the Remaining Length two bytes long.
        for m in [message(None, b"hello"), message(Some(props), &[7; 200])] {
            let head = encode_head(&m).unwrap();
            for version in [
                ProtocolVersion::V3_1,
                ProtocolVersion::V3_1_1,
                ProtocolVersion::V5,
            ] {
                for qos_pid in [
                    QosPid::AtMostOnce,
                    QosPid::from_qos(QoS::AtLeastOnce, Pid::new(0x1234).unwrap()),
                    QosPid::from_qos(QoS::ExactlyOnce, Pid::new(7).unwrap()),
                ] {
                    for (dup, retain) in [(false, false), (true, true), (false, true)] {
                        let d = Delivery {
                            version,
                            dup: dup && qos_pid.pid().is_some(),
                            qos_pid,
                            retain,
                            topic_len: m.topic.len(),
                            payload: &m.payload,
                        };
                        let mut out = BytesMut::from(&b"before"[..]);
                        assert!(write(&mut out, &head, &d, MAX_PACKET_SIZE as usize, None));
                        assert_eq!(&out[..6], b"before");
                        assert_eq!(&out[6..], &ordinary(&m, &d)[..]);
                    }
                }
            }
        }
    }

    /// A message with an expiry interval is encoded per delivery, with the
    /// time left [MQTT-5: 3.3.2-6].
    #[test]
    fn expiry_is_not_shared() {
        let props = MessageProps {
            message_expiry: Some(60),
            ..Default::default()
        };
        assert!(encode_head(&message(Some(props), b"x")).is_none());
    }

    /// Over the client's Maximum Packet Size: nothing is written
    /// [MQTT-5: 3.1.2-25]; at exactly the size it is sent.
    #[test]
    fn maximum_packet_size_per_delivery() {
        let m = message(None, b"hello");
        let head = encode_head(&m).unwrap();
        let d = Delivery {
            version: ProtocolVersion::V5,
            dup: false,
            qos_pid: QosPid::AtMostOnce,
            retain: false,
            topic_len: m.topic.len(),
            payload: &m.payload,
        };
        let size = ordinary(&m, &d).len();
        let mut out = BytesMut::new();
        assert!(!write(&mut out, &head, &d, size - 1, None));
        assert!(out.is_empty());
        assert!(write(&mut out, &head, &d, size, None));
        assert_eq!(out.len(), size);
    }

    /// A large payload is queued to be written from the message, after
    /// its header, not copied.
    #[test]
    fn large_payload_is_spliced() {
        let m = message(None, &vec![1u8; SPLICE_MIN]);
        let head = encode_head(&m).unwrap();
        let d = Delivery {
            version: ProtocolVersion::V3_1_1,
            dup: false,
            qos_pid: QosPid::AtMostOnce,
            retain: false,
            topic_len: m.topic.len(),
            payload: &m.payload,
        };
        let mut out = BytesMut::new();
        let mut spliced = Spliced::default();
        assert!(write(&mut out, &head, &d, usize::MAX, Some(&mut spliced)));
        assert_eq!(spliced.pending(), SPLICE_MIN);
        let mut written = Vec::new();
        while spliced.has_output(&out) {
            let n = spliced.next(&out).len();
            written.extend_from_slice(spliced.next(&out));
            spliced.advance(&mut out, n);
        }
        assert_eq!(written, ordinary(&m, &d));
    }
}
