//! `Packet::encode_to` (feature `bytes`): appends to a socket's write buffer,
//! and leaves it as it was when the packet cannot be encoded or is over the
//! limit.
#![cfg(feature = "bytes")]

use bytes::BytesMut;
use mqtt_codec::{DecodeError, EncodeError, Packet, ProtocolVersion, Publish};

fn publish<'a>(topic: &'a str, payload: &'a [u8]) -> Packet<'a> {
    Packet::Publish(Publish::new(topic, payload))
}

#[test]
fn appends_after_what_the_buffer_holds() {
    let v = ProtocolVersion::V3_1_1;
    let mut out = BytesMut::from(&b"queued"[..]);
    let n = publish("room_temp", b"22.5")
        .encode_to(v, &mut out, usize::MAX)
        .unwrap();
    assert_eq!(n, 17);
    let mut expected = b"queued".to_vec();
    expected.extend_from_slice(&[
        0x30, 0x0f, 0x00, 0x09, b'r', b'o', b'o', b'm', b'_', b't', b'e', b'm', b'p', b'2', b'2',
        b'.', b'5',
    ]);
    assert_eq!(&out[..], &expected[..]);
}

#[test]
fn an_invalid_packet_leaves_the_buffer_unchanged() {
    let v = ProtocolVersion::V3_1_1;
    let mut out = BytesMut::from(&b"queued"[..]);
    // A wildcard is not allowed in a topic name; a NUL in none.
    for topic in [
        "a/+/b",
        "a/#",
        "a\0b",
        "a-long-topic/with/a/NUL\0/in/the/middle",
    ] {
        let got = publish(topic, b"x").encode_to(v, &mut out, usize::MAX);
        assert!(got.is_err(), "{topic:?}");
        assert_eq!(&out[..], b"queued", "{topic:?}");
    }
    // Refused by the length pass, before anything is written.
    let too_long = "t".repeat(70_000);
    assert_eq!(
        publish(&too_long, b"").encode_to(v, &mut out, usize::MAX),
        Err(EncodeError::Invalid(DecodeError::InvalidTopicName))
    );
    assert_eq!(&out[..], b"queued");
}

#[test]
fn a_packet_over_the_limit_is_refused_with_its_size() {
    let v = ProtocolVersion::V3_1_1;
    let mut out = BytesMut::from(&b"queued"[..]);
    let packet = publish("room_temp", b"22.5");
    assert_eq!(
        packet.encode_to(v, &mut out, 16),
        Err(EncodeError::BufferTooSmall { required: 17 })
    );
    assert_eq!(&out[..], b"queued");
    assert_eq!(packet.encode_to(v, &mut out, 17), Ok(17));
    assert_eq!(out.len(), 6 + 17);
}
