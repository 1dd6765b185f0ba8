//! The encoder refuses to write what the decoder would refuse to read, and
//! reports a too-small buffer with the size it needs.

mod common;

use common::*;
use mqtt_codec::{
    Auth, ConnAck, Connect, DecodeError, Disconnect, EncodeError, LastWill, List, Packet,
    Properties, Property, PropertyId, ProtocolVersion, PubResp, Publish, QoS, QosPid, ReasonCode,
    RetainHandling, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe,
};

#[track_caller]
fn refuses(packet: Packet<'_>, versions: &[ProtocolVersion], expected: EncodeError) {
    for &version in versions {
        assert_eq!(packet.encoded_len(version), Err(expected), "{version:?}");
        let mut buf = [0u8; 256];
        assert_eq!(
            packet.encode(version, &mut buf),
            Err(expected),
            "{version:?}"
        );
    }
}

fn invalid(e: DecodeError) -> EncodeError {
    EncodeError::Invalid(e)
}

fn connect<'a>(version: ProtocolVersion) -> Connect<'a> {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 30,
        properties: Properties::EMPTY,
        client_id: "c",
        will: None,
        username: None,
        password: None,
    }
}

#[test]
fn buffer_too_small_reports_the_full_size() {
    for version in VERSIONS {
        for op in sample_packets(version) {
            let len = op.encode(version).len();
            op.with(|p| {
                for size in [0, 1, len / 2, len - 1] {
                    let mut buf = vec![0u8; size];
                    assert_eq!(
                        p.encode(version, &mut buf),
                        Err(EncodeError::BufferTooSmall { required: len })
                    );
                }
            });
        }
    }
}

/// [MQTT-3.1.1/5: 3.3.1-2]
#[test]
fn publish_qos0_with_dup_is_refused() {
    let mut p = Publish::new("t", b"x");
    p.dup = true;
    refuses(
        Packet::Publish(p),
        &VERSIONS,
        invalid(DecodeError::DupWithQoS0),
    );
}

/// [MQTT-3.1.1/5: 3.3.2-2], [MQTT-3.1.1/5: 4.7.3-1], [MQTT-3.1.1/5: 4.7.3-2]
#[test]
fn publish_with_invalid_topic_is_refused() {
    for topic in ["", "a/+", "#", "a\0b"] {
        refuses(
            Packet::Publish(Publish::new(topic, b"x")),
            &VERSIONS,
            invalid(DecodeError::InvalidTopicName),
        );
    }
}

/// A Topic Alias stands in for the topic only in MQTT 5.
#[test]
fn publish_with_empty_topic_and_alias_encodes_only_in_5_0() {
    let props = [Property::TopicAlias(1)];
    let p = Publish {
        properties: Properties::from_slice(&props),
        ..Publish::new("", b"x")
    };
    assert!(Packet::Publish(p).encoded_len(V5).is_ok());
    refuses(
        Packet::Publish(p),
        &[V3_1, V3_1_1],
        invalid(DecodeError::InvalidTopicName),
    );
}

#[test]
fn properties_that_would_not_decode_are_refused() {
    let publish = |props: &'static [Property<'static>]| {
        Packet::Publish(Publish {
            properties: Properties::from_slice(props),
            qos_pid: QosPid::AtLeastOnce(pid(1)),
            ..Publish::new("t", b"x")
        })
    };
    refuses(
        publish(&[Property::SessionExpiryInterval(1)]),
        &[V5],
        invalid(DecodeError::PropertyNotAllowed(
            PropertyId::SessionExpiryInterval,
        )),
    );
    refuses(
        publish(&[Property::ContentType("a"), Property::ContentType("b")]),
        &[V5],
        invalid(DecodeError::DuplicateProperty(PropertyId::ContentType)),
    );
    refuses(
        publish(&[Property::TopicAlias(0)]),
        &[V5],
        invalid(DecodeError::InvalidPropertyValue(PropertyId::TopicAlias)),
    );
    refuses(
        publish(&[Property::SubscriptionIdentifier(0)]),
        &[V5],
        invalid(DecodeError::InvalidPropertyValue(
            PropertyId::SubscriptionIdentifier,
        )),
    );
    refuses(
        publish(&[Property::SubscriptionIdentifier(268_435_456)]),
        &[V5],
        invalid(DecodeError::InvalidPropertyValue(
            PropertyId::SubscriptionIdentifier,
        )),
    );
    refuses(
        publish(&[Property::ContentType("a\0")]),
        &[V5],
        EncodeError::NullCharacter,
    );
    // Subscription Identifier repeats in PUBLISH, not in SUBSCRIBE.
    assert!(publish(&[
        Property::SubscriptionIdentifier(1),
        Property::SubscriptionIdentifier(2)
    ])
    .encoded_len(V5)
    .is_ok());
    let twice = [
        Property::SubscriptionIdentifier(1),
        Property::SubscriptionIdentifier(2),
    ];
    let filters = [SubscribeFilter {
        filter: "a",
        options: SubscriptionOptions::default(),
    }];
    refuses(
        Packet::Subscribe(Subscribe {
            pid: pid(1),
            properties: Properties::from_slice(&twice),
            filters: List::from_slice(&filters),
        }),
        &[V5],
        invalid(DecodeError::DuplicateProperty(
            PropertyId::SubscriptionIdentifier,
        )),
    );
    // Maximum QoS 2 is not a value the property can carry.
    let connack_props = [Property::MaximumQoS(QoS::ExactlyOnce)];
    refuses(
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::Success,
            properties: Properties::from_slice(&connack_props),
        }),
        &[V5],
        invalid(DecodeError::InvalidPropertyValue(PropertyId::MaximumQoS)),
    );
}

#[test]
fn fields_over_65535_bytes_are_refused() {
    let long = "a".repeat(65_536);
    let mut c = connect(V3_1_1);
    c.client_id = &long;
    refuses(Packet::Connect(c), &[V3_1_1], EncodeError::FieldTooLong);
    let big = vec![0u8; 65_536];
    let mut c = connect(V5);
    c.password = Some(&big);
    refuses(Packet::Connect(c), &[V5], EncodeError::FieldTooLong);
    // Exactly 65535 is fine.
    let max = "a".repeat(65_535);
    let mut c = connect(V3_1_1);
    c.client_id = &max;
    assert_eq!(
        Packet::Connect(c).encoded_len(V3_1_1),
        Ok(2 + 12 + 2 + 65_535)
    );
}

/// [MQTT-3.1.1: 1.5.3-2] / [MQTT-5: 1.5.4-2]
#[test]
fn strings_with_u0000_are_refused() {
    let mut c = connect(V3_1_1);
    c.client_id = "a\0";
    refuses(Packet::Connect(c), &[V3_1_1], EncodeError::NullCharacter);
    let mut c = connect(V3_1_1);
    c.username = Some("\0");
    refuses(Packet::Connect(c), &[V3_1_1], EncodeError::NullCharacter);
}

/// [MQTT-3.1.1: 3.1.2-22]; allowed in 5.0.
#[test]
fn connect_password_without_username_is_refused_before_5_0() {
    let mut c = connect(V3_1_1);
    c.password = Some(b"pw");
    refuses(
        Packet::Connect(c),
        &[V3_1_1],
        invalid(DecodeError::InvalidConnectFlags),
    );
    let mut c = connect(V3_1);
    c.password = Some(b"pw");
    refuses(
        Packet::Connect(c),
        &[V3_1],
        invalid(DecodeError::InvalidConnectFlags),
    );
    let mut c = connect(V5);
    c.password = Some(b"pw");
    assert!(Packet::Connect(c).encoded_len(V5).is_ok());
}

#[test]
fn connect_with_invalid_will_topic_is_refused() {
    let mut c = connect(V3_1_1);
    c.will = Some(LastWill {
        topic: "a/#",
        payload: b"",
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::EMPTY,
    });
    refuses(
        Packet::Connect(c),
        &[V3_1_1],
        invalid(DecodeError::InvalidTopicName),
    );
}

/// [MQTT-3.1.1: 3.2.2-4] / [MQTT-5: 3.2.2-6]
#[test]
fn connack_refusal_with_session_present_is_refused() {
    refuses(
        Packet::ConnAck(ConnAck {
            session_present: true,
            reason: ReasonCode::NotAuthorized,
            properties: Properties::EMPTY,
        }),
        &VERSIONS,
        invalid(DecodeError::InvalidConnectFlags),
    );
}

#[test]
fn reason_codes_of_other_packets_are_refused() {
    let resp = PubResp {
        reason: ReasonCode::PacketIdentifierNotFound,
        ..PubResp::new(pid(1))
    };
    refuses(
        Packet::PubAck(resp),
        &[V5],
        invalid(DecodeError::InvalidReasonCode(0x92)),
    );
    assert!(Packet::PubRel(resp).encoded_len(V5).is_ok());
    refuses(
        Packet::Disconnect(Disconnect::new(ReasonCode::GrantedQoS1)),
        &[V5],
        invalid(DecodeError::InvalidReasonCode(0x01)),
    );
    refuses(
        Packet::Auth(Auth {
            reason: ReasonCode::UnspecifiedError,
            properties: Properties::EMPTY,
        }),
        &[V5],
        invalid(DecodeError::InvalidReasonCode(0x80)),
    );
    refuses(
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::GrantedQoS1,
            properties: Properties::EMPTY,
        }),
        &[V5],
        invalid(DecodeError::InvalidReasonCode(0x01)),
    );
    let codes = [ReasonCode::NoSubscriptionExisted];
    refuses(
        Packet::SubAck(SubAck {
            pid: pid(1),
            properties: Properties::EMPTY,
            codes: List::from_slice(&codes),
        }),
        &VERSIONS,
        invalid(DecodeError::InvalidReasonCode(0x11)),
    );
    let codes = [ReasonCode::GrantedQoS1];
    refuses(
        Packet::UnsubAck(UnsubAck {
            pid: pid(1),
            properties: Properties::EMPTY,
            codes: List::from_slice(&codes),
        }),
        &[V5],
        invalid(DecodeError::InvalidReasonCode(0x01)),
    );
}

/// [MQTT-3.1.1: 3.8.3-3] / [MQTT-5: 3.8.3-2], [MQTT-3.1.1/5: 3.10.3-2]
#[test]
fn empty_lists_are_refused() {
    let empty: [SubscribeFilter<'_>; 0] = [];
    refuses(
        Packet::Subscribe(Subscribe {
            pid: pid(1),
            properties: Properties::EMPTY,
            filters: List::from_slice(&empty),
        }),
        &VERSIONS,
        invalid(DecodeError::NoTopicFilters),
    );
    refuses(
        Packet::Unsubscribe(Unsubscribe {
            pid: pid(1),
            properties: Properties::EMPTY,
            filters: List::from_slice(&[]),
        }),
        &VERSIONS,
        invalid(DecodeError::NoTopicFilters),
    );
    refuses(
        Packet::SubAck(SubAck {
            pid: pid(1),
            properties: Properties::EMPTY,
            codes: List::from_slice(&[]),
        }),
        &VERSIONS,
        invalid(DecodeError::NoTopicFilters),
    );
    refuses(
        Packet::UnsubAck(UnsubAck {
            pid: pid(1),
            properties: Properties::EMPTY,
            codes: List::from_slice(&[]),
        }),
        &[V5],
        invalid(DecodeError::NoTopicFilters),
    );
}

#[test]
fn invalid_filters_and_options_are_refused() {
    for filter in ["a#", "a/#/b", "a+", "", "$share/g"] {
        let f = [SubscribeFilter {
            filter,
            options: SubscriptionOptions::default(),
        }];
        refuses(
            Packet::Subscribe(Subscribe {
                pid: pid(1),
                properties: Properties::EMPTY,
                filters: List::from_slice(&f),
            }),
            &VERSIONS,
            invalid(DecodeError::InvalidTopicFilter),
        );
        let u = [filter];
        refuses(
            Packet::Unsubscribe(Unsubscribe {
                pid: pid(1),
                properties: Properties::EMPTY,
                filters: List::from_slice(&u),
            }),
            &VERSIONS,
            invalid(DecodeError::InvalidTopicFilter),
        );
    }
    // [MQTT-5: 3.8.3-4]: No Local on a shared subscription.
    let shared = [SubscribeFilter {
        filter: "$share/g/a",
        options: SubscriptionOptions {
            no_local: true,
            ..Default::default()
        },
    }];
    refuses(
        Packet::Subscribe(Subscribe {
            pid: pid(1),
            properties: Properties::EMPTY,
            filters: List::from_slice(&shared),
        }),
        &[V5],
        invalid(DecodeError::NoLocalOnSharedSubscription),
    );
    // 3.1.1 has no field for the MQTT 5 options.
    for options in [
        SubscriptionOptions {
            no_local: true,
            ..Default::default()
        },
        SubscriptionOptions {
            retain_as_published: true,
            ..Default::default()
        },
        SubscriptionOptions {
            retain_handling: RetainHandling::DoNotSend,
            ..Default::default()
        },
    ] {
        let f = [SubscribeFilter {
            filter: "a",
            options,
        }];
        refuses(
            Packet::Subscribe(Subscribe {
                pid: pid(1),
                properties: Properties::EMPTY,
                filters: List::from_slice(&f),
            }),
            &[V3_1, V3_1_1],
            EncodeError::NotInVersion,
        );
    }
}

#[test]
fn auth_is_refused_before_5_0() {
    refuses(
        Packet::Auth(Auth {
            reason: ReasonCode::Success,
            properties: Properties::EMPTY,
        }),
        &[V3_1, V3_1_1],
        EncodeError::NotInVersion,
    );
}

/// What 3.1.1 has no field for is left out, as documented: properties,
/// acknowledgement reason codes and UNSUBACK codes.
#[test]
fn mqtt5_only_fields_are_left_out_of_3_1_1() {
    let props = [Property::ReasonString("why")];
    let resp = PubResp {
        pid: pid(5),
        reason: ReasonCode::NoMatchingSubscribers,
        properties: Properties::from_slice(&props),
    };
    assert_eq!(
        encode_packet(&Packet::PubAck(resp), V3_1_1),
        hex("40 02 00 05")
    );
    let d = Disconnect {
        reason: ReasonCode::ServerShuttingDown,
        properties: Properties::from_slice(&props),
    };
    assert_eq!(encode_packet(&Packet::Disconnect(d), V3_1_1), hex("e0 00"));
    let codes = [ReasonCode::Success];
    let u = UnsubAck {
        pid: pid(5),
        properties: Properties::EMPTY,
        codes: List::from_slice(&codes),
    };
    assert_eq!(
        encode_packet(&Packet::UnsubAck(u), V3_1_1),
        hex("b0 02 00 05")
    );
    // A 3.1.1 SUBACK sends every failure as 0x80.
    let codes = [ReasonCode::GrantedQoS1, ReasonCode::NotAuthorized];
    let s = SubAck {
        pid: pid(5),
        properties: Properties::EMPTY,
        codes: List::from_slice(&codes),
    };
    assert_eq!(
        encode_packet(&Packet::SubAck(s), V3_1_1),
        hex("90 04 00 05 01 80")
    );
    // And a 3.1.1 CONNACK maps a refusal to the nearest return code.
    let c = ConnAck {
        session_present: false,
        reason: ReasonCode::Banned,
        properties: Properties::EMPTY,
    };
    assert_eq!(
        encode_packet(&Packet::ConnAck(c), V3_1_1),
        hex("20 02 00 05")
    );
}

/// `encode` checks strings as it copies them, where `encoded_len` checks them
/// in its length pass: for every string in every place it can be, both give
/// the same answer, and an `encode` that fails leaves none of the packet in
/// the buffer (only what was there before, or zeros).
#[test]
fn strings_checked_while_copying_agree_with_encoded_len_and_leave_nothing() {
    let strings = [
        "a",
        "a/b",
        "a\0",
        "\0",
        "+",
        "a/+",
        "a/+/b",
        "#",
        "a/#",
        "a#",
        "a/#/b",
        "+a",
        "sport/tennis/player1/#",
        "sport/tennis\0/player1",
        "a/b/c/d/e/f/g/h/+/#",
        "a/b/c/d/e/f/g/h/i/j/k/l/m+",
        "$share/g/a/+",
        "$share/g+/a",
        "$share/g",
        "0123456789abcdef0123456789abcdef\0",
    ];
    let user_props: Vec<[Property<'_>; 1]> = strings
        .iter()
        .map(|s| [Property::UserProperty("k", s)])
        .collect();
    for (i, &s) in strings.iter().enumerate() {
        let props = Properties::from_slice(&user_props[i]);
        // One bad string per packet: with two, the two passes may find
        // them in different orders.
        let will = LastWill {
            topic: s,
            payload: b"x",
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::EMPTY,
        };
        let will_props = LastWill {
            topic: "t",
            properties: props,
            ..will
        };
        let filters = [
            SubscribeFilter {
                filter: "ok/+",
                options: SubscriptionOptions::default(),
            },
            SubscribeFilter {
                filter: s,
                options: SubscriptionOptions::default(),
            },
        ];
        let unsub = ["ok/#", s];
        let mut packets = vec![
            Packet::Connect(Connect {
                client_id: s,
                ..connect(V3_1_1)
            }),
            Packet::Connect(Connect {
                username: Some(s),
                password: Some(b"pw"),
                ..connect(V3_1_1)
            }),
            Packet::Connect(Connect {
                will: Some(will),
                ..connect(V5)
            }),
            Packet::Connect(Connect {
                will: Some(will_props),
                ..connect(V5)
            }),
            Packet::Connect(Connect {
                properties: props,
                ..connect(V5)
            }),
            Packet::Publish(Publish::new(s, b"payload")),
            Packet::Publish(Publish {
                properties: props,
                ..Publish::new("t", b"payload")
            }),
            Packet::Subscribe(Subscribe {
                pid: pid(1),
                properties: Properties::EMPTY,
                filters: List::from_slice(&filters),
            }),
            Packet::Unsubscribe(Unsubscribe {
                pid: pid(1),
                properties: Properties::EMPTY,
                filters: List::from_slice(&unsub),
            }),
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::Success,
                properties: props,
            }),
        ];
        packets.push(Packet::SubAck(SubAck {
            pid: pid(1),
            properties: props,
            codes: List::from_slice(&[ReasonCode::Success]),
        }));
        for packet in packets {
            for version in VERSIONS {
                let expected = packet.encoded_len(version);
                let mut buf = [0xaa_u8; 512];
                let got = packet.encode(version, &mut buf);
                assert_eq!(got, expected, "{s:?} {version:?} {packet:?}");
                if got.is_err() {
                    assert!(
                        buf.iter().all(|&b| b == 0xaa || b == 0),
                        "{s:?} {version:?} left bytes behind"
                    );
                }
            }
        }
    }
}
