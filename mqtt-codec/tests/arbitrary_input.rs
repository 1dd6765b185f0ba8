//! Arbitrary and mutated input never makes the decoder panic, and whatever it
//! does accept is consistent: it re-encodes, to a packet that decodes equal.

mod common;

use common::*;
use mqtt_codec::{
    check_header, decode, decode_body, DecodeOptions, Needed, Packet, PacketType, ProtocolVersion,
    Status,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// Decodes `bytes` and checks everything that must hold for any input.
fn decode_anything(bytes: &[u8], version: ProtocolVersion, max: u32) {
    let opts = DecodeOptions {
        version,
        max_packet_size: max,
    };
    match decode(bytes, &opts) {
        Ok(Status::Complete((packet, used))) => {
            assert!(used <= bytes.len());
            assert!(used as u64 <= u64::from(max));
            let Ok(Status::Complete(header)) = check_header(bytes, max) else {
                panic!("decode accepted what check_header refuses");
            };
            assert_eq!(header.packet_len(), used);
            assert_eq!(header.packet_type, packet.packet_type());
            consistent(&packet, version);
        }
        Ok(Status::Partial(Needed::Bytes(n))) => {
            assert!(n > 0);
            let Ok(Status::Complete(header)) = check_header(bytes, max) else {
                panic!("a known size without a header");
            };
            assert_eq!(bytes.len() + n, header.packet_len());
        }
        Ok(Status::Partial(Needed::Unknown)) => assert!(bytes.len() < 5),
        Err(e) => {
            // Errors describe themselves without panicking.
            let _ = e.to_string();
            let _ = e.reason_code();
        }
    }
}

/// A decoded packet can be encoded again, to exactly `encoded_len` bytes
/// that decode to an equal packet. (Not necessarily the same bytes: MQTT 5
/// allows e.g. a PUBACK's Success code to be written or left out.)
fn consistent(packet: &Packet<'_>, version: ProtocolVersion) {
    let bytes = encode_packet(packet, version);
    let again = decode_one(&bytes, version);
    assert_eq!(OPacket::from_packet(&again), OPacket::from_packet(packet));
    // Nothing is lost either: the lists iterate to the end.
    let _ = format!("{packet:?}");
}

/// A first byte whose flags are the ones its type requires (any for PUBLISH).
fn arb_first_byte() -> impl Strategy<Value = u8> {
    (1u8..=15, 0u8..16).prop_map(|(t, flags)| {
        let t = PacketType::from_first_byte(t << 4).unwrap_or(PacketType::Publish);
        match t {
            PacketType::Publish => 0x30 | flags,
            other => other.first_byte(),
        }
    })
}

/// Random mutations of a byte string: overwrite, insert, delete, truncate.
#[derive(Debug, Clone)]
enum Mutation {
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        2 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => any::<prop::sample::Index>().prop_map(Mutation::Delete),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Set(i, b) => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Mutation::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
        Mutation::Delete(i) => {
            bytes.remove(i.index(bytes.len()));
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes, every version, any maximum packet size.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..96),
        max in prop_oneof![Just(u32::MAX), Just(mqtt_codec::MAX_PACKET_SIZE), 0u32..200],
    ) {
        for version in VERSIONS {
            decode_anything(&bytes, version, max);
        }
    }

    /// An arbitrary body behind a well-formed fixed header, so the body
    /// parsers see the input rather than the header check.
    #[test]
    fn arbitrary_bodies_never_panic(first in arb_first_byte(), body in vec(any::<u8>(), 0..96)) {
        let bytes = frame(first, &body);
        for version in VERSIONS {
            decode_anything(&bytes, version, u32::MAX);
        }
    }

    /// Bodies made of plausible pieces: short lengths, property identifiers,
    /// reason codes and text, which reach deeper than uniform bytes.
    #[test]
    fn structured_garbage_never_panics(
        first in arb_first_byte(),
        pieces in vec(prop_oneof![
            any::<u8>().prop_map(|b| vec![b]),
            (0u8..8).prop_map(|n| vec![0, n]),
            prop::sample::select(vec![0x00u8, 0x01, 0x02, 0x0b, 0x11, 0x23, 0x26, 0x80, 0x87, 0xff]).prop_map(|b| vec![b]),
            Just(b"\x00\x04MQTT\x05".to_vec()),
            Just(b"\x00\x04MQTT\x04".to_vec()),
            Just(b"\x00\x06MQIsdp\x03".to_vec()),
            Just(b"\x00\x01a".to_vec()),
        ], 0..16),
    ) {
        let bytes = frame(first, &pieces.concat());
        for version in VERSIONS {
            decode_anything(&bytes, version, u32::MAX);
        }
    }

    /// Valid packets with a few random mutations.
    #[test]
    fn mutated_packets_never_panic(
        (version, op) in arb_versioned_packet(),
        mutations in vec(arb_mutation(), 1..4),
        other_version in arb_version(),
    ) {
        let mut bytes = op.encode(version);
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        decode_anything(&bytes, version, u32::MAX);
        // And read as another version than it was written for.
        decode_anything(&bytes, other_version, u32::MAX);
    }

    /// `decode_body` with any type, flags and body.
    #[test]
    fn decode_body_never_panics(
        t in 1u8..=15,
        flags in 0u8..16,
        body in vec(any::<u8>(), 0..64),
        version in arb_version(),
    ) {
        if let Ok(packet_type) = PacketType::from_first_byte(t << 4) {
            if let Ok(packet) = decode_body(packet_type, flags, &body, version) {
                let _ = format!("{packet:?}");
            }
        }
    }
}
