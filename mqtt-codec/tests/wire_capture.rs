//! Byte-exact checks against MQTT 3.1.1 packets as they appear on the wire
//! (the exchange of a client that subscribes to `room_temp` and receives a
//! reading), in both directions: the bytes decode to the expected packet and
//! the packet encodes to exactly those bytes.

mod common;

use common::*;
use mqtt_codec::{
    decode, ConnAck, DecodeOptions, List, Packet, Properties, ProtocolVersion, Publish, QoS,
    QosPid, ReasonCode, Status, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions,
};

/// Decodes `wire`, compares with `expected`, and encodes `expected` back.
fn both_directions(wire: &[u8], expected: Packet<'_>, version: ProtocolVersion) {
    let decoded = decode_one(wire, version);
    assert_eq!(decoded, expected);

    let mut buf = [0u8; 64];
    let n = expected.encode(version, &mut buf).unwrap();
    assert_eq!(&buf[..n], wire, "encoding {expected:?}");
    assert_eq!(expected.encoded_len(version), Ok(wire.len()));
}

#[test]
fn publish_qos0_room_temp() {
    let wire = hex("30 0f 00 09 72 6f 6f 6d 5f 74 65 6d 70 32 32 2e 35");
    let expected = Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: "room_temp",
        properties: Properties::EMPTY,
        payload: b"22.5",
    });
    both_directions(&wire, expected, V3_1_1);

    // Field by field, as a subscriber would read it.
    let Packet::Publish(p) = decode_one(&wire, V3_1_1) else {
        panic!("expected a PUBLISH");
    };
    assert_eq!(p.qos_pid.qos(), QoS::AtMostOnce);
    assert_eq!(p.qos_pid.pid(), None);
    assert_eq!(p.topic, "room_temp");
    assert_eq!(p.payload, b"22.5");
    assert!(!p.dup && !p.retain);
    assert!(p.properties.is_empty());
    // The shorthand constructor builds the same packet.
    assert_eq!(
        Packet::Publish(Publish::new("room_temp", b"22.5")),
        expected
    );
}

#[test]
fn subscribe_id_1_room_temp_qos0() {
    let wire = hex("82 0e 00 01 00 09 72 6f 6f 6d 5f 74 65 6d 70 00");
    let filters = [SubscribeFilter {
        filter: "room_temp",
        options: SubscriptionOptions::qos(QoS::AtMostOnce),
    }];
    let expected = Packet::Subscribe(Subscribe {
        pid: pid(1),
        properties: Properties::EMPTY,
        filters: List::from_slice(&filters),
    });
    both_directions(&wire, expected, V3_1_1);

    let Packet::Subscribe(s) = decode_one(&wire, V3_1_1) else {
        panic!("expected a SUBSCRIBE");
    };
    assert_eq!(s.pid.get(), 1);
    assert_eq!(s.filters.len(), 1);
    assert_eq!(s.filters.iter().next(), Some(filters[0]));
}

#[test]
fn connack_accepted() {
    let wire = hex("20 02 00 00");
    let expected = Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::Success,
        properties: Properties::EMPTY,
    });
    both_directions(&wire, expected, V3_1_1);
}

#[test]
fn suback_id_1_granted_qos0() {
    let wire = hex("90 03 00 01 00");
    let codes = [ReasonCode::Success];
    let expected = Packet::SubAck(SubAck {
        pid: pid(1),
        properties: Properties::EMPTY,
        codes: List::from_slice(&codes),
    });
    both_directions(&wire, expected, V3_1_1);

    let Packet::SubAck(s) = decode_one(&wire, V3_1_1) else {
        panic!("expected a SUBACK");
    };
    assert_eq!(
        s.codes.iter().collect::<Vec<_>>(),
        vec![ReasonCode::Success]
    );
}

/// The four packets back to back, as one read from a socket might return
/// them, decode in order and use exactly their bytes.
#[test]
fn the_captured_exchange_decodes_in_sequence() {
    let packets = [
        hex("20 02 00 00"),
        hex("82 0e 00 01 00 09 72 6f 6f 6d 5f 74 65 6d 70 00"),
        hex("90 03 00 01 00"),
        hex("30 0f 00 09 72 6f 6f 6d 5f 74 65 6d 70 32 32 2e 35"),
    ];
    let stream: Vec<u8> = packets.concat();
    let opts = DecodeOptions::new(V3_1_1);
    let mut at = 0;
    let mut kinds = Vec::new();
    while at < stream.len() {
        let Ok(Status::Complete((p, n))) = decode(&stream[at..], &opts) else {
            panic!("at {at}");
        };
        assert_eq!(&stream[at..at + n], packets[kinds.len()].as_slice());
        kinds.push(p.packet_type());
        at += n;
    }
    assert_eq!(kinds.len(), 4);
}

/// The same captures are byte-identical in MQTT 3.1 (only CONNECT differs
/// between 3.1 and 3.1.1).
#[test]
fn the_captures_are_identical_in_mqtt_3_1() {
    for wire in [
        hex("30 0f 00 09 72 6f 6f 6d 5f 74 65 6d 70 32 32 2e 35"),
        hex("82 0e 00 01 00 09 72 6f 6f 6d 5f 74 65 6d 70 00"),
        hex("20 02 00 00"),
        hex("90 03 00 01 00"),
    ] {
        let p = decode_one(&wire, V3_1);
        assert_eq!(encode_packet(&p, V3_1), wire);
    }
}

/// A 3.1.1 CONNECT (client `c1`, clean session, keep alive 60) and the
/// 3.1 form with protocol name `MQIsdp`, level 3.
#[test]
fn connect_3_1_1_and_3_1() {
    let v311 = hex("10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 63 31");
    let v31 = hex("10 10 00 06 4d 51 49 73 64 70 03 02 00 3c 00 02 63 31");
    for (wire, version) in [(v311, V3_1_1), (v31, V3_1)] {
        let expected = OPacket::Connect {
            protocol: version,
            clean_start: true,
            keep_alive: 60,
            props: Vec::new(),
            client_id: "c1".into(),
            will: None,
            username: None,
            password: None,
        };
        // CONNECT carries its own version: decoding does not depend on the
        // connection's.
        for opts_version in VERSIONS {
            assert_eq!(
                OPacket::from_packet(&decode_one(&wire, opts_version)),
                expected
            );
        }
        assert_eq!(expected.encode(version), wire);
    }
}

/// MQTT 5.0 forms of the same exchange: PUBLISH and SUBSCRIBE gain an empty
/// property section, CONNACK gains one too, SUBACK one before its codes.
#[test]
fn mqtt5_forms_of_the_capture() {
    let cases = [
        (
            hex("30 10 00 09 72 6f 6f 6d 5f 74 65 6d 70 00 32 32 2e 35"),
            OPacket::Publish {
                dup: false,
                qos_pid: QosPid::AtMostOnce,
                retain: false,
                topic: "room_temp".into(),
                props: Vec::new(),
                payload: b"22.5".to_vec(),
            },
        ),
        (
            hex("82 0f 00 01 00 00 09 72 6f 6f 6d 5f 74 65 6d 70 00"),
            OPacket::Subscribe {
                pid: pid(1),
                props: Vec::new(),
                filters: vec![(
                    "room_temp".into(),
                    SubscriptionOptions::qos(QoS::AtMostOnce),
                )],
            },
        ),
        (
            hex("20 03 00 00 00"),
            OPacket::ConnAck {
                session_present: false,
                reason: ReasonCode::Success,
                props: Vec::new(),
            },
        ),
        (
            hex("90 04 00 01 00 00"),
            OPacket::SubAck {
                pid: pid(1),
                props: Vec::new(),
                codes: vec![ReasonCode::Success],
            },
        ),
        // A normal DISCONNECT and a successful PUBACK may omit everything
        // after the packet identifier (sections 3.14.2.1 and 3.4.2.1).
        (
            hex("e0 00"),
            OPacket::Disconnect {
                reason: ReasonCode::Success,
                props: Vec::new(),
            },
        ),
        (
            hex("40 02 00 07"),
            OPacket::PubResp {
                kind: mqtt_codec::PacketType::PubAck,
                pid: pid(7),
                reason: ReasonCode::Success,
                props: Vec::new(),
            },
        ),
    ];
    for (wire, expected) in cases {
        assert_eq!(OPacket::from_packet(&decode_one(&wire, V5)), expected);
        assert_eq!(expected.encode(V5), wire);
    }
}

/// The expected packet can be a `'static` constant: packets are covariant in
/// their lifetime, so one built from statics compares with one borrowing a
/// short-lived read buffer.
#[test]
fn a_static_packet_compares_with_a_decoded_one() {
    const PID_1: mqtt_codec::Pid = match mqtt_codec::Pid::new(1) {
        Some(p) => p,
        None => panic!(),
    };
    static FILTERS: [SubscribeFilter<'static>; 1] = [SubscribeFilter {
        filter: "room_temp",
        options: SubscriptionOptions {
            qos: QoS::AtMostOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: mqtt_codec::RetainHandling::SendOnSubscribe,
        },
    }];
    static CODES: [ReasonCode; 1] = [ReasonCode::Success];
    const SUBSCRIBE: Packet<'static> = Packet::Subscribe(Subscribe {
        pid: PID_1,
        properties: Properties::EMPTY,
        filters: List::from_slice(&FILTERS),
    });
    const SUBACK: Packet<'static> = Packet::SubAck(SubAck {
        pid: PID_1,
        properties: Properties::EMPTY,
        codes: List::from_slice(&CODES),
    });

    fn shorten<'a>(p: Packet<'static>) -> Packet<'a> {
        p
    }

    for (wire, expected) in [
        ("82 0e 00 01 00 09 72 6f 6f 6d 5f 74 65 6d 70 00", SUBSCRIBE),
        ("90 03 00 01 00", SUBACK),
    ] {
        let bytes = hex(wire);
        let decoded = decode_one(&bytes, V3_1_1);
        assert_eq!(decoded, expected);
        assert_eq!(decoded, shorten(expected));
    }
}
