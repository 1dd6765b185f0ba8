//! The Remaining Length field (MQTT 3.1.1 section 2.2.3, MQTT 5.0 sections
//! 1.5.5 and 2.1.4): packets at every encoding-length boundary encode to the
//! expected header and decode back; malformed and oversize lengths are refused
//! from the header alone.

mod common;

use common::*;
use mqtt_codec::{
    check_header, decode, varint_len, DecodeError, DecodeOptions, EncodeError, Needed, Packet,
    PacketType, ProtocolVersion, Publish, ReasonCode, Status, MAX_PACKET_SIZE, MAX_VARINT,
};

/// The largest Remaining Length, and the largest packet it allows.
#[test]
fn limits() {
    assert_eq!(MAX_VARINT, 268_435_455);
    assert_eq!(MAX_PACKET_SIZE, 268_435_455 + 5);
    assert_eq!(DecodeOptions::new(V3_1_1).max_packet_size, MAX_PACKET_SIZE);
    for (v, n) in [
        (0, 1),
        (127, 1),
        (128, 2),
        (16_383, 2),
        (16_384, 3),
        (2_097_151, 3),
        (2_097_152, 4),
        (268_435_455, 4),
    ] {
        assert_eq!(varint_len(v), n, "{v}");
    }
}

#[test]
fn remaining_length_0() {
    for (op, first) in [
        (OPacket::PingReq, 0xc0),
        (OPacket::PingResp, 0xd0),
        (
            OPacket::Disconnect {
                reason: ReasonCode::Success,
                props: Vec::new(),
            },
            0xe0,
        ),
    ] {
        let scratch = op.scratch();
        for version in VERSIONS {
            let packet = op.packet(&scratch);
            let bytes = encode_packet(&packet, version);
            assert_eq!(bytes, [first, 0x00]);
            assert_eq!(decode_one(&bytes, version), packet);
        }
    }
    // A QoS 0 PUBLISH can never be empty: its topic needs at least 3 bytes.
    assert_eq!(
        decode(&[0x30, 0x00], &DecodeOptions::new(V3_1_1)),
        Err(DecodeError::UnexpectedEnd)
    );
}

/// A QoS 0 PUBLISH to `t` whose Remaining Length is exactly `remaining`:
/// checks the encoded header, the header-only and body-less views, and the
/// round trip.
fn publish_with_remaining_length(remaining: u32, header: &[u8], version: ProtocolVersion) {
    // Topic `t` (3 bytes), in 5.0 an empty property section (1 byte).
    let overhead = if version.is_v5() { 4 } else { 3 };
    // Zeroes for the 256 MB case: `vec![0; n]` maps untouched zero pages, so
    // only the encode buffer takes real memory.
    let fill = if remaining > 1 << 24 { 0 } else { 0x5a };
    let payload = vec![fill; remaining as usize - overhead];
    let packet = Packet::Publish(Publish::new("t", &payload));
    let total = 1 + header.len() + remaining as usize;
    assert_eq!(packet.encoded_len(version), Ok(total));

    let mut buf = vec![0u8; total];
    assert_eq!(packet.encode(version, &mut buf), Ok(total));
    assert_eq!(buf[0], 0x30);
    assert_eq!(&buf[1..1 + header.len()], header, "header of {remaining}");

    // The header alone is enough to know the size...
    let Ok(Status::Complete(h)) = check_header(&buf[..1 + header.len()], MAX_PACKET_SIZE) else {
        panic!("header of {remaining}");
    };
    assert_eq!(h.packet_type, PacketType::Publish);
    assert_eq!(h.remaining_len, remaining);
    assert_eq!(h.header_len, 1 + header.len());
    assert_eq!(h.packet_len(), total);

    // ...and decoding it asks for exactly the body.
    let opts = DecodeOptions {
        version,
        max_packet_size: MAX_PACKET_SIZE,
    };
    assert_eq!(
        decode(&buf[..1 + header.len()], &opts),
        Ok(Status::Partial(Needed::Bytes(remaining as usize)))
    );
    assert_eq!(
        decode(&buf[..total - 1], &opts),
        Ok(Status::Partial(Needed::Bytes(1)))
    );

    let Ok(Status::Complete((decoded, used))) = decode(&buf, &opts) else {
        panic!("decoding {remaining}");
    };
    assert_eq!(used, total);
    let Packet::Publish(p) = decoded else {
        panic!("not a PUBLISH")
    };
    assert_eq!(p.topic, "t");
    assert_eq!(p.payload.len(), payload.len());
    assert!(p.payload == payload.as_slice());
}

#[test]
fn remaining_length_127_is_one_byte() {
    for version in VERSIONS {
        publish_with_remaining_length(127, &[0x7f], version);
    }
}

#[test]
fn remaining_length_128_is_two_bytes() {
    for version in VERSIONS {
        publish_with_remaining_length(128, &[0x80, 0x01], version);
    }
}

#[test]
fn remaining_length_16383_is_two_bytes() {
    for version in VERSIONS {
        publish_with_remaining_length(16_383, &[0xff, 0x7f], version);
    }
}

#[test]
fn remaining_length_16384_is_three_bytes() {
    for version in VERSIONS {
        publish_with_remaining_length(16_384, &[0x80, 0x80, 0x01], version);
    }
}

#[test]
fn remaining_length_2097151_is_three_bytes() {
    publish_with_remaining_length(2_097_151, &[0xff, 0xff, 0x7f], V3_1_1);
    publish_with_remaining_length(2_097_151, &[0xff, 0xff, 0x7f], V5);
}

#[test]
fn remaining_length_2097152_is_four_bytes() {
    publish_with_remaining_length(2_097_152, &[0x80, 0x80, 0x80, 0x01], V3_1_1);
    publish_with_remaining_length(2_097_152, &[0x80, 0x80, 0x80, 0x01], V5);
}

/// The largest packet MQTT allows: 256 MB of body.
#[test]
fn remaining_length_268435455_is_four_bytes() {
    publish_with_remaining_length(268_435_455, &[0xff, 0xff, 0xff, 0x7f], V3_1_1);
}

/// One byte more cannot be encoded.
#[test]
fn remaining_length_268435456_does_not_encode() {
    let payload = vec![0u8; 268_435_456 - 3];
    let packet = Packet::Publish(Publish::new("t", &payload));
    assert_eq!(packet.encoded_len(V3_1_1), Err(EncodeError::PacketTooLarge));
    assert_eq!(
        packet.encode(V3_1_1, &mut [0u8; 16]),
        Err(EncodeError::PacketTooLarge)
    );
}

/// [MQTT-5: 1.5.5-1] / section 2.2.3 (3.1.1): at most four bytes. A fifth
/// length byte is refused as soon as the fourth shows a continuation bit,
/// without waiting for more input.
#[test]
fn five_byte_remaining_length_is_malformed() {
    for bytes in [
        &[0x30, 0xff, 0xff, 0xff, 0xff, 0x7f][..],
        &[0x30, 0x80, 0x80, 0x80, 0x80, 0x01][..],
        &[0x30, 0x80, 0x80, 0x80, 0x80][..],
        &[0xc0, 0xff, 0xff, 0xff, 0xff][..],
    ] {
        assert_eq!(
            check_header(bytes, MAX_PACKET_SIZE),
            Err(DecodeError::MalformedRemainingLength),
            "{bytes:02x?}"
        );
        for version in VERSIONS {
            assert_eq!(
                decode(bytes, &DecodeOptions::new(version)),
                Err(DecodeError::MalformedRemainingLength)
            );
        }
    }
    assert_eq!(
        DecodeError::MalformedRemainingLength.reason_code(),
        ReasonCode::MalformedPacket
    );
}

/// Three continuation bytes may still be followed by a valid fourth.
#[test]
fn incomplete_remaining_length_is_partial() {
    for bytes in [
        &[0x30][..],
        &[0x30, 0x80][..],
        &[0x30, 0x80, 0x80][..],
        &[0x30, 0xff, 0xff, 0xff][..],
    ] {
        assert_eq!(
            check_header(bytes, MAX_PACKET_SIZE),
            Ok(Status::Partial(Needed::Unknown))
        );
        assert_eq!(
            decode(bytes, &DecodeOptions::new(V5)),
            Ok(Status::Partial(Needed::Unknown))
        );
    }
    assert_eq!(
        decode(&[], &DecodeOptions::new(V5)),
        Ok(Status::Partial(Needed::Unknown))
    );
}

/// [MQTT-5: 1.5.5-1]: "The encoded value MUST use the minimum number of bytes
/// necessary to represent the value."
#[test]
fn non_minimal_remaining_length_is_malformed() {
    for bytes in [
        &[0x30, 0x80, 0x00][..],             // 0 in two bytes
        &[0x30, 0xff, 0x00][..],             // 127 in two bytes
        &[0x30, 0x81, 0x80, 0x00][..],       // 1 in three bytes
        &[0x30, 0xff, 0xff, 0x00][..],       // 16383 in three bytes
        &[0x30, 0x80, 0x80, 0x80, 0x00][..], // 0 in four bytes
        &[0x30, 0xff, 0xff, 0xff, 0x00][..], // 2097151 in four bytes
        &[0xc0, 0x80, 0x00][..],             // a PINGREQ
    ] {
        assert_eq!(
            check_header(bytes, MAX_PACKET_SIZE),
            Err(DecodeError::MalformedRemainingLength),
            "{bytes:02x?}"
        );
        assert_eq!(
            decode(bytes, &DecodeOptions::new(V3_1_1)),
            Err(DecodeError::MalformedRemainingLength)
        );
    }
}

/// A packet over the caller's maximum is refused from its first bytes,
/// before any of the body has arrived; one of exactly the maximum is not.
#[test]
fn remaining_length_over_the_callers_maximum_is_refused_from_the_header() {
    // 128 bytes of body: 131 bytes in all.
    let header = [0x30, 0x80, 0x01];
    assert!(matches!(
        check_header(&header, 131),
        Ok(Status::Complete(h)) if h.packet_len() == 131
    ));
    assert_eq!(
        check_header(&header, 130),
        Err(DecodeError::PacketTooLarge {
            size: 131,
            max: 130
        })
    );
    let opts = DecodeOptions {
        version: V3_1_1,
        max_packet_size: 130,
    };
    assert_eq!(
        decode(&header, &opts),
        Err(DecodeError::PacketTooLarge {
            size: 131,
            max: 130
        })
    );

    // 256 MB announced in five bytes against a 1 KiB limit.
    let huge = [0x30, 0xff, 0xff, 0xff, 0x7f];
    let err = check_header(&huge, 1024).unwrap_err();
    assert_eq!(
        err,
        DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: 1024
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
    assert_eq!(err.reason_code().as_u8(), 0x95);

    // The limit counts the fixed header: a two-byte PINGREQ needs 2.
    assert!(check_header(&[0xc0, 0x00], 2).is_ok());
    assert_eq!(
        check_header(&[0xc0, 0x00], 1),
        Err(DecodeError::PacketTooLarge { size: 2, max: 1 })
    );

    // With only the first byte the size is not known yet.
    assert_eq!(
        check_header(&[0x30], 1),
        Ok(Status::Partial(Needed::Unknown))
    );
}
