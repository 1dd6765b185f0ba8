//! Malformed input: one test per rule of the MQTT 3.1.1 and 5.0 packet
//! formats, each naming the rule and citing the normative statement (or the
//! section, where the text has no numbered statement). Every case must be an
//! error, never a panic and never a packet.

mod common;

use common::*;
use mqtt_codec::{
    check_header, decode, DecodeError, DecodeOptions, EncodeError, Packet, PacketType,
    PropertyContext, PropertyId, ProtocolVersion, ReasonCode, Status, MAX_PACKET_SIZE,
};

const ALL: [ProtocolVersion; 3] = VERSIONS;
const V3: [ProtocolVersion; 2] = [V3_1, V3_1_1];

/// Decoding `bytes` in each of `versions` fails with `expected`.
#[track_caller]
fn rejects(bytes: &[u8], versions: &[ProtocolVersion], expected: DecodeError) {
    for &version in versions {
        assert_eq!(
            decode(bytes, &DecodeOptions::new(version)),
            Err(expected),
            "{bytes:02x?} in {version:?}"
        );
    }
}

/// Decoding `bytes` in each of `versions` gives one packet using all of them.
#[track_caller]
fn accepts(bytes: &[u8], versions: &[ProtocolVersion]) {
    for &version in versions {
        decode_one(bytes, version);
    }
}

/// A CONNECT with the given protocol name, level, flags and payload fields
/// (and, for level 5, an empty property section).
fn connect(name: &[u8], level: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = field(name);
    body.extend_from_slice(&[level, flags, 0x00, 0x3c]);
    if level == 5 {
        body.push(0x00);
    }
    body.extend_from_slice(payload);
    frame(0x10, &body)
}

/// CONNECT for `version` with client id `c` and more payload fields.
fn connect_v(version: ProtocolVersion, flags: u8, more: &[u8]) -> Vec<u8> {
    let mut payload = field(b"c");
    payload.extend_from_slice(more);
    connect(
        version.protocol_name().as_bytes(),
        version.level(),
        flags,
        &payload,
    )
}

/// A QoS 0 PUBLISH with raw topic bytes (3.x form; 5.0 adds properties).
fn publish_topic(topic: &[u8], version: ProtocolVersion) -> Vec<u8> {
    let mut body = field(topic);
    if version.is_v5() {
        body.push(0x00);
    }
    body.extend_from_slice(b"x");
    frame(0x30, &body)
}

/// A SUBSCRIBE with one raw filter and options byte.
fn subscribe(filter: &[u8], options: u8, version: ProtocolVersion) -> Vec<u8> {
    let mut body = vec![0x00, 0x01];
    if version.is_v5() {
        body.push(0x00);
    }
    body.extend_from_slice(&field(filter));
    body.push(options);
    frame(0x82, &body)
}

/// An UNSUBSCRIBE with one raw filter.
fn unsubscribe(filter: &[u8], version: ProtocolVersion) -> Vec<u8> {
    let mut body = vec![0x00, 0x01];
    if version.is_v5() {
        body.push(0x00);
    }
    body.extend_from_slice(&field(filter));
    frame(0xa2, &body)
}

// ---------------------------------------------------------------------------
// Fixed header (MQTT 3.1.1 section 2.2, MQTT 5.0 section 2.1).
// ---------------------------------------------------------------------------

/// [MQTT-3.1.1: 2.2.2-1], [MQTT-3.1.1: 2.2.2-2] and [MQTT-5: 2.1.3-1]: every
/// flag nibble but the required one is refused, from the first byte alone
/// and in a whole packet.
#[track_caller]
fn only_required_flags(valid: &str, version: ProtocolVersion) {
    let valid = hex(valid);
    accepts(&valid, &[version]);
    let required = valid[0] & 0x0f;
    for flags in (0..16).filter(|&f| f != required) {
        let byte = (valid[0] & 0xf0) | flags;
        let expected = DecodeError::InvalidHeaderFlags { byte };
        assert_eq!(check_header(&[byte], MAX_PACKET_SIZE), Err(expected));
        let mut bad = valid.clone();
        bad[0] = byte;
        rejects(&bad, &[version], expected);
        assert_eq!(expected.reason_code(), ReasonCode::MalformedPacket);
    }
}

#[test]
fn connect_with_flags_other_than_0000_is_malformed() {
    only_required_flags("10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 63 31", V3_1_1);
}

#[test]
fn connack_with_flags_other_than_0000_is_malformed() {
    only_required_flags("20 02 00 00", V3_1_1);
}

#[test]
fn puback_with_flags_other_than_0000_is_malformed() {
    only_required_flags("40 02 00 01", V3_1_1);
}

#[test]
fn pubrec_with_flags_other_than_0000_is_malformed() {
    only_required_flags("50 02 00 01", V3_1_1);
}

/// [MQTT-3.1.1/5: 3.6.1-1]: PUBREL's flags are 0010.
#[test]
fn pubrel_with_flags_other_than_0010_is_malformed() {
    only_required_flags("62 02 00 01", V3_1_1);
    only_required_flags("62 02 00 01", V5);
}

/// [MQTT-3.1.1/5: 3.6.1-1]: the common mistake of sending PUBREL as 0x60.
#[test]
fn pubrel_with_flags_0000_is_malformed() {
    rejects(
        &hex("60 02 00 01"),
        &ALL,
        DecodeError::InvalidHeaderFlags { byte: 0x60 },
    );
}

#[test]
fn pubcomp_with_flags_other_than_0000_is_malformed() {
    only_required_flags("70 02 00 01", V3_1_1);
}

/// [MQTT-3.1.1/5: 3.8.1-1]: SUBSCRIBE's flags are 0010.
#[test]
fn subscribe_with_flags_other_than_0010_is_malformed() {
    only_required_flags("82 06 00 01 00 01 61 00", V3_1_1);
}

/// [MQTT-3.1.1/5: 3.8.1-1]
#[test]
fn subscribe_with_flags_0000_is_malformed() {
    rejects(
        &hex("80 06 00 01 00 01 61 00"),
        &V3,
        DecodeError::InvalidHeaderFlags { byte: 0x80 },
    );
}

#[test]
fn suback_with_flags_other_than_0000_is_malformed() {
    only_required_flags("90 03 00 01 00", V3_1_1);
}

/// [MQTT-3.1.1/5: 3.10.1-1]: UNSUBSCRIBE's flags are 0010.
#[test]
fn unsubscribe_with_flags_other_than_0010_is_malformed() {
    only_required_flags("a2 05 00 01 00 01 61", V3_1_1);
}

/// [MQTT-3.1.1/5: 3.10.1-1]
#[test]
fn unsubscribe_with_flags_0000_is_malformed() {
    rejects(
        &hex("a0 05 00 01 00 01 61"),
        &V3,
        DecodeError::InvalidHeaderFlags { byte: 0xa0 },
    );
}

#[test]
fn unsuback_with_flags_other_than_0000_is_malformed() {
    only_required_flags("b0 02 00 01", V3_1_1);
}

#[test]
fn pingreq_with_flags_other_than_0000_is_malformed() {
    only_required_flags("c0 00", V3_1_1);
}

#[test]
fn pingresp_with_flags_other_than_0000_is_malformed() {
    only_required_flags("d0 00", V3_1_1);
}

/// [MQTT-5: 3.14.1-1]
#[test]
fn disconnect_with_flags_other_than_0000_is_malformed() {
    only_required_flags("e0 00", V3_1_1);
    only_required_flags("e0 00", V5);
}

/// [MQTT-5: 3.15.1-1]
#[test]
fn auth_with_flags_other_than_0000_is_malformed() {
    only_required_flags("f0 00", V5);
}

/// MQTT 3.1.1 table 2.1 / MQTT 5.0 table 2-1: type 0 is reserved.
#[test]
fn packet_type_0_is_reserved() {
    for byte in 0x00..=0x0f {
        assert_eq!(
            check_header(&[byte], MAX_PACKET_SIZE),
            Err(DecodeError::ReservedPacketType)
        );
        rejects(&[byte, 0x00], &ALL, DecodeError::ReservedPacketType);
    }
}

/// MQTT 3.1.1 table 2.1: type 15 is reserved before MQTT 5 (AUTH).
#[test]
fn auth_in_3_1_1_is_not_in_version() {
    rejects(&hex("f0 00"), &V3, DecodeError::PacketNotInVersion);
    rejects(&hex("f0 02 18 00"), &V3, DecodeError::PacketNotInVersion);
    assert_eq!(
        DecodeError::PacketNotInVersion.reason_code(),
        ReasonCode::ProtocolError
    );
    // Nor can it be encoded for 3.1.1.
    let auth = Packet::Auth(mqtt_codec::Auth {
        reason: ReasonCode::Success,
        properties: Default::default(),
    });
    assert_eq!(
        auth.encode(V3_1_1, &mut [0u8; 8]),
        Err(EncodeError::NotInVersion)
    );
    accepts(&hex("f0 00"), &[V5]);
}

// ---------------------------------------------------------------------------
// PUBLISH (section 3.3).
// ---------------------------------------------------------------------------

/// [MQTT-3.1.1/5: 3.3.1-4]: a PUBLISH must not have both QoS bits set.
#[test]
fn publish_with_qos_3_is_malformed() {
    for first in [0x36, 0x37, 0x3e, 0x3f] {
        assert_eq!(
            check_header(&[first], MAX_PACKET_SIZE),
            Err(DecodeError::InvalidQoS)
        );
        let mut bytes = hex("30 06 00 01 74 00 01 78");
        bytes[0] = first;
        rejects(&bytes, &ALL, DecodeError::InvalidQoS);
    }
}

/// [MQTT-3.1.1/5: 3.3.1-2]: the DUP flag must be 0 for all QoS 0 messages.
#[test]
fn publish_qos0_with_dup_is_malformed() {
    rejects(&hex("38 04 00 01 74 78"), &V3, DecodeError::DupWithQoS0);
    rejects(
        &hex("39 05 00 01 74 00 78"),
        &[V5],
        DecodeError::DupWithQoS0,
    );
    // DUP with QoS 1 is a redelivery.
    accepts(&hex("3a 06 00 01 74 00 05 78"), &V3);
}

/// [MQTT-3.1.1: 2.3.1-1] / [MQTT-5: 2.2.1-3]: QoS 1 and 2 need a
/// non-zero packet identifier.
#[test]
fn publish_qos1_or_2_with_packet_id_0_is_malformed() {
    rejects(
        &hex("32 06 00 01 74 00 00 78"),
        &V3,
        DecodeError::ZeroPacketId,
    );
    rejects(
        &hex("34 06 00 01 74 00 00 78"),
        &V3,
        DecodeError::ZeroPacketId,
    );
    rejects(
        &hex("32 07 00 01 74 00 00 00 78"),
        &[V5],
        DecodeError::ZeroPacketId,
    );
}

/// [MQTT-3.1.1: 2.3.1-1] / [MQTT-5: 2.2.1-3]: SUBSCRIBE and
/// UNSUBSCRIBE need a non-zero packet identifier; the acknowledgements echo
/// it, so theirs is never 0 either ([MQTT-5: 2.2.1-5], [MQTT-5: 2.2.1-6]).
#[test]
fn packet_id_0_is_malformed_wherever_an_identifier_is_carried() {
    for bytes in [
        "82 06 00 00 00 01 61 00",
        "a2 05 00 00 00 01 61",
        "40 02 00 00",
        "50 02 00 00",
        "62 02 00 00",
        "70 02 00 00",
        "90 03 00 00 00",
        "b0 02 00 00",
    ] {
        rejects(&hex(bytes), &V3, DecodeError::ZeroPacketId);
    }
}

/// [MQTT-3.1.1: 1.5.3-1] / [MQTT-5: 1.5.4-1]: strings are well-formed
/// UTF-8, in particular without encoded surrogates.
#[test]
fn publish_topic_with_invalid_utf8_is_malformed() {
    for topic in [
        &[0xff][..],
        &[b'a', 0xc3, 0x28][..],       // a lead byte without its continuation
        &[0xed, 0xa0, 0x80][..],       // U+D800, a surrogate
        &[0xc0, 0xaf][..],             // an overlong '/'
        &[0xf4, 0x90, 0x80, 0x80][..], // above U+10FFFF
        &[b'a', 0xe2, 0x82][..],       // truncated sequence at the end
    ] {
        for version in ALL {
            rejects(
                &publish_topic(topic, version),
                &[version],
                DecodeError::InvalidUtf8,
            );
        }
    }
    assert_eq!(DecodeError::InvalidUtf8.reason_code().as_u8(), 0x81);
}

/// [MQTT-3.1.1: 1.5.3-2] / [MQTT-5: 1.5.4-2], [MQTT-3.1.1/5: 4.7.3-2]: no U+0000.
#[test]
fn publish_topic_with_u0000_is_malformed() {
    for topic in [&b"\0"[..], &b"a\0b"[..], &b"a/\0"[..]] {
        for version in ALL {
            rejects(
                &publish_topic(topic, version),
                &[version],
                DecodeError::NullCharacter,
            );
        }
    }
}

/// [MQTT-3.1.1: 1.5.3-3] / [MQTT-5: 1.5.4-3]: U+FEFF is kept as it is,
/// not stripped.
#[test]
fn zero_width_no_break_space_in_a_topic_is_kept() {
    let bytes = publish_topic("\u{feff}a".as_bytes(), V3_1_1);
    let Packet::Publish(p) = decode_one(&bytes, V3_1_1) else {
        panic!()
    };
    assert_eq!(p.topic, "\u{feff}a");
}

/// [MQTT-3.1.1/5: 3.3.2-2]: the topic name of a PUBLISH has no wildcards.
#[test]
fn publish_topic_with_wildcard_is_malformed() {
    for topic in ["+", "#", "a/+", "a/#", "a/+/b", "sport+", "a#"] {
        for version in ALL {
            rejects(
                &publish_topic(topic.as_bytes(), version),
                &[version],
                DecodeError::InvalidTopicName,
            );
        }
    }
    assert_eq!(
        DecodeError::InvalidTopicName.reason_code(),
        ReasonCode::TopicNameInvalid
    );
}

/// [MQTT-3.1.1/5: 4.7.3-1]: topic names are at least one character long.
#[test]
fn publish_with_empty_topic_is_malformed_in_3_1_1() {
    rejects(&hex("30 03 00 00 78"), &V3, DecodeError::InvalidTopicName);
    rejects(
        &hex("32 05 00 00 00 01 78"),
        &V3,
        DecodeError::InvalidTopicName,
    );
}

/// MQTT 5.0 section 3.3.2.1: "It is a Protocol Error if the Topic Name is
/// zero length and there is no Topic Alias."
#[test]
fn publish_with_empty_topic_and_no_topic_alias_is_an_error_in_5_0() {
    rejects(
        &hex("30 04 00 00 00 78"),
        &[V5],
        DecodeError::InvalidTopicName,
    );
    // Other properties do not stand in for the alias.
    rejects(
        &hex("30 06 00 00 02 01 01 78"),
        &[V5],
        DecodeError::InvalidTopicName,
    );
    // With a Topic Alias it is valid.
    accepts(&hex("30 07 00 00 03 23 00 01 78"), &[V5]);
}

/// [MQTT-5: 3.3.2-8]: a Topic Alias of 0 is not permitted.
#[test]
fn publish_with_topic_alias_0_is_an_error() {
    rejects(
        &hex("30 08 00 01 74 03 23 00 00 78"),
        &[V5],
        DecodeError::InvalidPropertyValue(PropertyId::TopicAlias),
    );
}

// ---------------------------------------------------------------------------
// SUBSCRIBE and UNSUBSCRIBE (sections 3.8 and 3.10).
// ---------------------------------------------------------------------------

/// [MQTT-3.1.1: 3.8.3-3] / [MQTT-5: 3.8.3-2]: at least one filter; "A
/// SUBSCRIBE packet with no Payload is a Protocol Error" (5.0).
#[test]
fn subscribe_with_no_filters_is_an_error() {
    rejects(&hex("82 02 00 01"), &V3, DecodeError::NoTopicFilters);
    rejects(&hex("82 03 00 01 00"), &[V5], DecodeError::NoTopicFilters);
    assert_eq!(
        DecodeError::NoTopicFilters.reason_code(),
        ReasonCode::ProtocolError
    );
}

/// [MQTT-3.1.1/5: 3.10.3-2]: at least one filter; "An UNSUBSCRIBE packet with no
/// Payload is a Protocol Error" (5.0).
#[test]
fn unsubscribe_with_no_filters_is_an_error() {
    rejects(&hex("a2 02 00 01"), &V3, DecodeError::NoTopicFilters);
    rejects(&hex("a2 03 00 01 00"), &[V5], DecodeError::NoTopicFilters);
}

/// [MQTT-3.1.1: 4.7.1-2] / [MQTT-5: 4.7.1-1]: `#` stands alone as the
/// last level; [MQTT-3.1.1: 4.7.1-3] / [MQTT-5: 4.7.1-2]: `+` fills a
/// whole level; [MQTT-3.1.1/5: 4.7.3-1]: at least one character.
#[test]
fn subscribe_with_invalid_filter_is_an_error() {
    for filter in ["a#", "a/#/b", "a+", "#/a", "+a", "a/b+/c", "a/+b", "##", ""] {
        for version in ALL {
            rejects(
                &subscribe(filter.as_bytes(), 0x00, version),
                &[version],
                DecodeError::InvalidTopicFilter,
            );
        }
    }
    assert_eq!(
        DecodeError::InvalidTopicFilter.reason_code(),
        ReasonCode::TopicFilterInvalid
    );
    for filter in ["#", "+", "a/#", "+/+", "/+", "a/+/c", "a//b"] {
        accepts(&subscribe(filter.as_bytes(), 0x00, V3_1_1), &[V3_1_1]);
    }
}

/// The same filter rules in UNSUBSCRIBE.
#[test]
fn unsubscribe_with_invalid_filter_is_an_error() {
    for filter in ["a#", "a/#/b", "a+", ""] {
        for version in ALL {
            rejects(
                &unsubscribe(filter.as_bytes(), version),
                &[version],
                DecodeError::InvalidTopicFilter,
            );
        }
    }
}

/// A bad filter after a good one is still found.
#[test]
fn subscribe_with_a_bad_second_filter_is_an_error() {
    rejects(
        &hex("82 0b 00 01 00 01 61 00 00 02 61 23 00"),
        &V3,
        DecodeError::InvalidTopicFilter,
    );
}

/// [MQTT-5: 4.8.2-1], [MQTT-5: 4.8.2-2]: `$share/{ShareName}/{filter}` with a
/// non-empty share name without wildcards or `/`, and a filter after it.
#[test]
fn subscribe_with_invalid_shared_filter_is_an_error() {
    for filter in [
        "$share/g",
        "$share//a",
        "$share/g+/a",
        "$share/g#/a",
        "$share/g/",
    ] {
        rejects(
            &subscribe(filter.as_bytes(), 0x00, V5),
            &[V5],
            DecodeError::InvalidTopicFilter,
        );
    }
    accepts(&subscribe(b"$share/g/a/#", 0x01, V5), &[V5]);
}

/// [MQTT-3.1.1: 3.8.3-4]: the upper six bits of the requested QoS byte are
/// reserved; [MQTT-5: 3.8.3-5]: bits 6 and 7 of the options are reserved.
#[test]
fn subscription_options_with_reserved_bits_are_malformed() {
    for options in [0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xfc] {
        rejects(
            &subscribe(b"a", options, V3_1_1),
            &V3,
            DecodeError::InvalidSubscriptionOptions,
        );
    }
    for options in [0x40, 0x80, 0xc0] {
        rejects(
            &subscribe(b"a", options, V5),
            &[V5],
            DecodeError::InvalidSubscriptionOptions,
        );
    }
    // In 5.0 bits 2 to 5 are No Local, Retain As Published, Retain Handling.
    accepts(&subscribe(b"a", 0x2e, V5), &[V5]);
}

/// [MQTT-3.1.1: 3.8.3-4]; MQTT 5.0 section 3.8.3.1: "It is a Protocol
/// Error if the Maximum QoS field has the value 3."
#[test]
fn subscription_options_with_qos_3_are_an_error() {
    rejects(&subscribe(b"a", 0x03, V3_1_1), &V3, DecodeError::InvalidQoS);
    rejects(&subscribe(b"a", 0x03, V5), &[V5], DecodeError::InvalidQoS);
}

/// MQTT 5.0 section 3.8.3.1: "It is a Protocol Error to send a Retain
/// Handling value of 3."
#[test]
fn subscription_options_with_retain_handling_3_are_an_error() {
    rejects(
        &subscribe(b"a", 0x30, V5),
        &[V5],
        DecodeError::InvalidRetainHandling,
    );
    assert_eq!(
        DecodeError::InvalidRetainHandling.reason_code(),
        ReasonCode::ProtocolError
    );
    // In 3.1.1 those bits are reserved: Malformed.
    rejects(
        &subscribe(b"a", 0x30, V3_1_1),
        &V3,
        DecodeError::InvalidSubscriptionOptions,
    );
}

/// [MQTT-5: 3.8.3-4]: "It is a Protocol Error to set the No Local bit to 1
/// on a Shared Subscription."
#[test]
fn no_local_on_a_shared_subscription_is_an_error() {
    rejects(
        &subscribe(b"$share/g/a", 0x04, V5),
        &[V5],
        DecodeError::NoLocalOnSharedSubscription,
    );
    assert_eq!(
        DecodeError::NoLocalOnSharedSubscription.reason_code(),
        ReasonCode::ProtocolError
    );
    // No Local on an ordinary filter is fine.
    accepts(&subscribe(b"a", 0x04, V5), &[V5]);
}

// ---------------------------------------------------------------------------
// Properties (MQTT 5.0 section 2.2.2).
// ---------------------------------------------------------------------------

/// MQTT 5.0 section 3.3.2.3: "It is a Protocol Error to include the Message
/// Expiry Interval more than once" (and likewise for every property but User
/// Property, and Subscription Identifier in PUBLISH).
#[test]
fn duplicate_property_is_a_protocol_error() {
    let bytes = hex("30 0f 00 01 74 0a 02 00 00 00 01 02 00 00 00 02 78");
    rejects(
        &bytes,
        &[V5],
        DecodeError::DuplicateProperty(PropertyId::MessageExpiryInterval),
    );
    let err = DecodeError::DuplicateProperty(PropertyId::MessageExpiryInterval);
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    assert_eq!(err.reason_code().as_u8(), 0x82);
}

/// Every single-use property twice in every packet that allows it is a
/// Protocol Error; the repeatable ones are accepted.
#[test]
fn every_single_use_property_twice_is_a_protocol_error() {
    for ctx in CONTEXTS {
        for id in PropertyId::ALL
            .iter()
            .copied()
            .filter(|id| id.allowed_in(ctx))
        {
            let one = sample_prop(id).raw();
            let bytes = v5_packet_with_props(ctx, &[one.clone(), one.clone()].concat());
            let result = decode(&bytes, &DecodeOptions::new(V5));
            let repeatable = id == PropertyId::UserProperty
                || (id == PropertyId::SubscriptionIdentifier && ctx == PropertyContext::Publish);
            if repeatable {
                let Ok(Status::Complete((p, _))) = result else {
                    panic!("{id:?} twice in {ctx:?}: {result:?}");
                };
                assert_eq!(decoded_props(&p, ctx).len(), 2);
            } else {
                assert_eq!(
                    result.map(|_| ()),
                    Err(DecodeError::DuplicateProperty(id)),
                    "{id:?} twice in {ctx:?}"
                );
            }
        }
    }
}

/// MQTT 5.0 section 2.2.2.2: "A Control Packet which contains an Identifier
/// which is not valid for its packet type ... is a Malformed Packet."
#[test]
fn property_not_allowed_in_the_packet_is_malformed() {
    // A Topic Alias in CONNECT, a Session Expiry Interval in PUBLISH.
    rejects(
        &v5_packet_with_props(PropertyContext::Connect, &hex("23 00 01")),
        &[V5],
        DecodeError::PropertyNotAllowed(PropertyId::TopicAlias),
    );
    rejects(
        &v5_packet_with_props(PropertyContext::Publish, &hex("11 00 00 00 01")),
        &[V5],
        DecodeError::PropertyNotAllowed(PropertyId::SessionExpiryInterval),
    );
    assert_eq!(
        DecodeError::PropertyNotAllowed(PropertyId::TopicAlias).reason_code(),
        ReasonCode::MalformedPacket
    );
}

/// Every property in every packet: accepted exactly where table 2-4 allows.
#[test]
fn every_property_is_accepted_exactly_where_it_is_allowed() {
    for ctx in CONTEXTS {
        for &id in PropertyId::ALL {
            let bytes = v5_packet_with_props(ctx, &sample_prop(id).raw());
            let result = decode(&bytes, &DecodeOptions::new(V5));
            if spec_contexts(id).contains(&ctx) {
                let Ok(Status::Complete((p, _))) = result else {
                    panic!("{id:?} in {ctx:?}: {result:?}");
                };
                assert_eq!(decoded_props(&p, ctx), vec![sample_prop(id)]);
            } else {
                assert_eq!(
                    result.map(|_| ()),
                    Err(DecodeError::PropertyNotAllowed(id)),
                    "{id:?} in {ctx:?}"
                );
            }
        }
    }
}

/// MQTT 5.0 section 2.2.2.2: identifiers outside table 2-4 are malformed.
#[test]
fn unknown_property_id_is_malformed() {
    for b in 0..=255u8 {
        if PropertyId::from_u8(b).is_some() {
            continue;
        }
        rejects(
            &v5_packet_with_props(PropertyContext::Publish, &[b, 0, 0, 0, 0]),
            &[V5],
            DecodeError::UnknownProperty(b),
        );
    }
    assert_eq!(
        DecodeError::UnknownProperty(0).reason_code(),
        ReasonCode::MalformedPacket
    );
}

/// Values the property definitions rule out: Receive Maximum 0, Maximum
/// Packet Size 0, Subscription Identifier 0, Maximum QoS 2, and booleans
/// other than 0 and 1 (sections 3.1.2.11, 3.2.2.3, 3.8.2.1.2).
#[test]
fn property_value_out_of_range_is_a_protocol_error() {
    for (ctx, raw, id) in [
        (
            PropertyContext::Connect,
            "21 00 00",
            PropertyId::ReceiveMaximum,
        ),
        (
            PropertyContext::ConnAck,
            "21 00 00",
            PropertyId::ReceiveMaximum,
        ),
        (
            PropertyContext::Connect,
            "27 00 00 00 00",
            PropertyId::MaximumPacketSize,
        ),
        (
            PropertyContext::Subscribe,
            "0b 00",
            PropertyId::SubscriptionIdentifier,
        ),
        (
            PropertyContext::Publish,
            "0b 00",
            PropertyId::SubscriptionIdentifier,
        ),
        (PropertyContext::ConnAck, "24 02", PropertyId::MaximumQoS),
        (
            PropertyContext::Publish,
            "01 02",
            PropertyId::PayloadFormatIndicator,
        ),
        (
            PropertyContext::Connect,
            "17 02",
            PropertyId::RequestProblemInformation,
        ),
        (
            PropertyContext::Connect,
            "19 ff",
            PropertyId::RequestResponseInformation,
        ),
        (
            PropertyContext::ConnAck,
            "25 02",
            PropertyId::RetainAvailable,
        ),
        (
            PropertyContext::ConnAck,
            "28 02",
            PropertyId::WildcardSubscriptionAvailable,
        ),
        (
            PropertyContext::ConnAck,
            "29 02",
            PropertyId::SubscriptionIdentifierAvailable,
        ),
        (
            PropertyContext::ConnAck,
            "2a 02",
            PropertyId::SharedSubscriptionAvailable,
        ),
    ] {
        let err = DecodeError::InvalidPropertyValue(id);
        rejects(&v5_packet_with_props(ctx, &hex(raw)), &[V5], err);
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    }
}

/// [MQTT-5: 1.5.5-1]: a Subscription Identifier is a Variable Byte Integer and
/// must be minimally encoded too.
#[test]
fn non_minimal_subscription_identifier_is_malformed() {
    rejects(
        &v5_packet_with_props(PropertyContext::Subscribe, &hex("0b 81 00")),
        &[V5],
        DecodeError::MalformedRemainingLength,
    );
}

/// A property section longer than the packet, or a property running past the
/// end of its section.
#[test]
fn property_running_past_its_section_is_malformed() {
    // Section length 9 in a 5-byte DISCONNECT body.
    rejects(
        &hex("e0 05 00 09 11 00 00"),
        &[V5],
        DecodeError::UnexpectedEnd,
    );
    // Section of 3 holding a 5-byte Session Expiry Interval, then 2 more bytes.
    rejects(
        &hex("e0 07 00 03 11 00 00 00 01"),
        &[V5],
        DecodeError::UnexpectedEnd,
    );
}

/// [MQTT-5: 1.5.7-1]: both strings of a User Property are UTF-8 strings.
#[test]
fn user_property_with_invalid_utf8_is_malformed() {
    rejects(
        &v5_packet_with_props(PropertyContext::Disconnect, &hex("26 00 01 ff 00 00")),
        &[V5],
        DecodeError::InvalidUtf8,
    );
    rejects(
        &v5_packet_with_props(PropertyContext::Disconnect, &hex("26 00 00 00 01 00")),
        &[V5],
        DecodeError::NullCharacter,
    );
}

// ---------------------------------------------------------------------------
// CONNECT and CONNACK (sections 3.1 and 3.2).
// ---------------------------------------------------------------------------

/// [MQTT-3.1.1/5: 3.1.2-3]: the reserved bit of the connect flags is 0.
#[test]
fn connect_with_reserved_flag_set_is_malformed() {
    for version in ALL {
        let bytes = connect_v(version, 0x03, &[]);
        rejects(&bytes, &[version], DecodeError::InvalidConnectFlags);
        accepts(&connect_v(version, 0x02, &[]), &[version]);
    }
}

/// [MQTT-3.1.1: 3.1.2-11], [MQTT-3.1.1: 3.1.2-13]: without a will, Will QoS is 0.
#[test]
fn connect_with_will_qos_but_no_will_flag_is_malformed() {
    for version in ALL {
        for flags in [0x0a, 0x12] {
            rejects(
                &connect_v(version, flags, &[]),
                &[version],
                DecodeError::InvalidConnectFlags,
            );
        }
    }
}

/// [MQTT-3.1.1: 3.1.2-11], [MQTT-3.1.1: 3.1.2-15]: without a will, Will Retain is 0.
#[test]
fn connect_with_will_retain_but_no_will_flag_is_malformed() {
    for version in ALL {
        rejects(
            &connect_v(version, 0x22, &[]),
            &[version],
            DecodeError::InvalidConnectFlags,
        );
    }
}

/// [MQTT-3.1.1: 3.1.2-14]: Will QoS is 0, 1 or 2, never 3.
#[test]
fn connect_with_will_qos_3_is_malformed() {
    for version in ALL {
        // In 5.0 the will properties come first (here an empty section).
        let props: &[u8] = if version.is_v5() { &[0x00] } else { &[] };
        let will = [props.to_vec(), field(b"w"), field(b"bye")].concat();
        rejects(
            &connect_v(version, 0x1e, &will),
            &[version],
            DecodeError::InvalidQoS,
        );
        accepts(&connect_v(version, 0x16, &will), &[version]);
    }
}

/// [MQTT-3.1.1: 3.1.2-22]: "If the User Name Flag is set to 0, the Password
/// Flag MUST be set to 0." MQTT 3.1 has the same rule.
#[test]
fn connect_with_password_but_no_username_is_malformed_in_3_1_1() {
    for version in V3 {
        rejects(
            &connect_v(version, 0x42, &field(b"pw")),
            &[version],
            DecodeError::InvalidConnectFlags,
        );
        let both = [field(b"user"), field(b"pw")].concat();
        accepts(&connect_v(version, 0xc2, &both), &[version]);
    }
}

/// MQTT 5.0 section 3.1.2.9: a password without a user name is allowed.
#[test]
fn connect_with_password_but_no_username_is_allowed_in_5_0() {
    let bytes = connect_v(V5, 0x42, &field(b"pw"));
    let Packet::Connect(c) = decode_one(&bytes, V5) else {
        panic!()
    };
    assert_eq!((c.username, c.password), (None, Some(&b"pw"[..])));
}

/// [MQTT-3.1.1/5: 3.1.2-1]: the protocol name is `MQTT` (`MQIsdp` in 3.1).
#[test]
fn connect_with_unknown_protocol_name_is_malformed() {
    for name in [
        &b"MQTX"[..],
        b"mqtt",
        b"MQTTT",
        b"",
        b"MQIsdp3",
        "MQTT\u{feff}".as_bytes(),
    ] {
        rejects(
            &connect(name, 4, 0x02, &field(b"c")),
            &ALL,
            DecodeError::InvalidProtocolName,
        );
    }
}

/// [MQTT-3.1.1/5: 3.1.2-2]: an unsupported protocol level is refused with its value,
/// for which the server answers CONNACK 0x01 (3.1.1) or 0x84 (5.0).
#[test]
fn connect_with_unsupported_protocol_level_is_refused() {
    for (name, level) in [
        (&b"MQTT"[..], 6),
        (b"MQTT", 3),
        (b"MQTT", 0),
        (b"MQTT", 0xff),
        (b"MQIsdp", 4),
        (b"MQIsdp", 5),
    ] {
        let err = DecodeError::UnsupportedProtocolVersion(level);
        rejects(&connect(name, level, 0x02, &field(b"c")), &ALL, err);
        assert_eq!(err.reason_code(), ReasonCode::UnsupportedProtocolVersion);
        assert_eq!(err.reason_code().to_v3_connack(), Some(0x01));
    }
}

/// [MQTT-3.1.1/5: 4.7.3-1], [MQTT-3.1.1/5: 3.3.2-2] via [MQTT-3.1.1: 3.1.3-10] / [MQTT-5: 3.1.3-11]: the will topic is a
/// topic name.
#[test]
fn connect_with_invalid_will_topic_is_malformed() {
    for topic in [&b""[..], b"a/#", b"+"] {
        let will = [field(topic), field(b"bye")].concat();
        rejects(
            &connect_v(V3_1_1, 0x06, &will),
            &[V3_1_1],
            DecodeError::InvalidTopicName,
        );
    }
}

/// [MQTT-3.1.1/5: 3.1.2-9]: with the will flag, will topic and message are present.
#[test]
fn connect_with_will_flag_but_no_will_is_malformed() {
    rejects(
        &connect_v(V3_1_1, 0x06, &[]),
        &[V3_1_1],
        DecodeError::UnexpectedEnd,
    );
}

/// [MQTT-5: 3.2.2-1]: bits 7 to 1 of the acknowledge flags are reserved.
#[test]
fn connack_with_reserved_flags_is_malformed() {
    rejects(&hex("20 02 02 00"), &V3, DecodeError::InvalidConnectFlags);
    rejects(
        &hex("20 03 80 00 00"),
        &[V5],
        DecodeError::InvalidConnectFlags,
    );
}

/// [MQTT-3.1.1: 3.2.2-4] / [MQTT-5: 3.2.2-6]: a refusal never has Session
/// Present set.
#[test]
fn connack_refusal_with_session_present_is_malformed() {
    rejects(&hex("20 02 01 05"), &V3, DecodeError::InvalidConnectFlags);
    rejects(
        &hex("20 03 01 87 00"),
        &[V5],
        DecodeError::InvalidConnectFlags,
    );
    accepts(&hex("20 02 01 00"), &V3);
}

// ---------------------------------------------------------------------------
// Reason codes (MQTT 5.0 section 2.4 and each packet's table).
// ---------------------------------------------------------------------------

/// [MQTT-5: 3.2.2-8], [MQTT-5: 3.4.2-1], [MQTT-5: 3.5.2-1], [MQTT-5: 3.6.2-1],
/// [MQTT-5: 3.7.2-1], [MQTT-5: 3.9.3-2], [MQTT-5: 3.11.3-2], [MQTT-5: 3.14.2-1],
/// [MQTT-5: 3.15.2-1]: each packet uses only its own reason codes.
#[test]
fn reason_code_not_allowed_for_the_packet_is_malformed() {
    for (bytes, code) in [
        ("20 03 00 04 00", 0x04),    // CONNACK: Disconnect with Will Message
        ("40 03 00 01 92", 0x92),    // PUBACK: Packet Identifier not found
        ("50 03 00 01 92", 0x92),    // PUBREC: Packet Identifier not found
        ("62 03 00 01 10", 0x10),    // PUBREL: No matching subscribers
        ("70 03 00 01 80", 0x80),    // PUBCOMP: Unspecified error
        ("90 04 00 01 00 11", 0x11), // SUBACK: No subscription existed
        ("b0 04 00 01 00 01", 0x01), // UNSUBACK: Granted QoS 1
        ("e0 01 01", 0x01),          // DISCONNECT: Granted QoS 1
        ("f0 01 04", 0x04),          // AUTH: Disconnect with Will Message
        ("e0 01 03", 0x03),          // DISCONNECT: undefined
    ] {
        rejects(&hex(bytes), &[V5], DecodeError::InvalidReasonCode(code));
    }
    assert_eq!(
        DecodeError::InvalidReasonCode(0x04).reason_code(),
        ReasonCode::MalformedPacket
    );
}

/// Every byte as the reason code of every MQTT 5 packet that has one.
#[test]
fn every_reason_code_byte_is_accepted_exactly_where_allowed() {
    for (kind, prefix, suffix) in [
        (PacketType::ConnAck, "00", "00"),
        (PacketType::PubAck, "00 01", ""),
        (PacketType::PubRec, "00 01", ""),
        (PacketType::PubRel, "00 01", ""),
        (PacketType::PubComp, "00 01", ""),
        (PacketType::SubAck, "00 01 00", ""),
        (PacketType::UnsubAck, "00 01 00", ""),
        (PacketType::Disconnect, "", ""),
        (PacketType::Auth, "", ""),
    ] {
        for code in 0..=255u8 {
            let body = [hex(prefix), vec![code], hex(suffix)].concat();
            let bytes = frame(kind.first_byte(), &body);
            let result = decode(&bytes, &DecodeOptions::new(V5));
            if spec_reason_codes(kind).contains(&code) {
                assert!(result.is_ok(), "{code:#04x} in {kind:?}: {result:?}");
            } else {
                assert_eq!(
                    result.map(|_| ()),
                    Err(DecodeError::InvalidReasonCode(code)),
                    "{code:#04x} in {kind:?}"
                );
            }
        }
    }
}

/// MQTT 3.1.1 table 3.1: CONNACK return codes 0 to 5; section 3.9.3: SUBACK
/// return codes 0x00, 0x01, 0x02 and 0x80.
#[test]
fn v3_return_codes_outside_the_tables_are_malformed() {
    for code in 6..=255u8 {
        rejects(
            &[0x20, 0x02, 0x00, code],
            &V3,
            DecodeError::InvalidReasonCode(code),
        );
    }
    for code in 0..=255u8 {
        let bytes = [0x90, 0x03, 0x00, 0x01, code];
        if matches!(code, 0x00..=0x02 | 0x80) {
            accepts(&bytes, &V3);
        } else {
            rejects(&bytes, &V3, DecodeError::InvalidReasonCode(code));
        }
    }
}

/// SUBACK and UNSUBACK (5.0) carry one code per filter, so at least one.
#[test]
fn suback_and_unsuback_without_codes_are_errors() {
    rejects(&hex("90 02 00 01"), &V3, DecodeError::NoTopicFilters);
    rejects(&hex("90 03 00 01 00"), &[V5], DecodeError::NoTopicFilters);
    rejects(&hex("b0 03 00 01 00"), &[V5], DecodeError::NoTopicFilters);
}

// ---------------------------------------------------------------------------
// Frame boundaries.
// ---------------------------------------------------------------------------

/// A body with bytes after its last field is malformed.
#[test]
fn trailing_bytes_after_the_last_field_are_malformed() {
    for (bytes, versions) in [
        ("c0 01 00", &ALL[..]),              // PINGREQ with a body
        ("d0 01 00", &ALL[..]),              // PINGRESP with a body
        ("40 03 00 01 00", &V3[..]),         // 3.1.1 PUBACK with 3 bytes
        ("62 03 00 01 00", &V3[..]),         // 3.1.1 PUBREL with 3 bytes
        ("b0 03 00 01 00", &V3[..]),         // 3.1.1 UNSUBACK with a payload
        ("e0 01 00", &V3[..]),               // 3.1.1 DISCONNECT with a body
        ("20 03 00 00 00", &V3[..]),         // 3.1.1 CONNACK with 3 bytes
        ("40 05 00 01 00 00 00", &[V5][..]), // PUBACK: byte after the properties
        ("e0 03 00 00 00", &[V5][..]),       // DISCONNECT: byte after the properties
        ("f0 03 18 00 00", &[V5][..]),       // AUTH: byte after the properties
        ("20 04 00 00 00 00", &[V5][..]),    // CONNACK: byte after the properties
        (
            "10 0f 00 04 4d 51 54 54 04 02 00 3c 00 02 63 31 00",
            &V3[..],
        ), // CONNECT
    ] {
        rejects(&hex(bytes), versions, DecodeError::TrailingBytes);
    }
    assert_eq!(
        DecodeError::TrailingBytes.reason_code(),
        ReasonCode::MalformedPacket
    );
}

/// A field that claims more bytes than the frame holds is an error, never a
/// panic, and never a read into the next packet.
#[test]
fn field_running_past_the_frame_end_is_malformed() {
    for (bytes, versions) in [
        ("40 00", &ALL[..]),                      // PUBACK without its identifier
        ("40 01 00", &ALL[..]),                   // ... with half of it
        ("20 01 00", &ALL[..]),                   // CONNACK without its code
        ("30 02 00 05", &ALL[..]),                // topic longer than the body
        ("32 03 00 01 74", &ALL[..]),             // QoS 1 without its identifier
        ("30 03 00 01 74", &[V5][..]),            // no property length
        ("82 03 00 01 00", &V3[..]),              // filter length cut
        ("82 05 00 01 00 01 61", &V3[..]),        // filter without its options
        ("a2 04 00 01 00 05", &V3[..]),           // filter longer than the body
        ("10 02 00 04", &ALL[..]),                // protocol name cut
        ("10 07 00 04 4d 51 54 54 04", &ALL[..]), // no connect flags
        ("10 0c 00 04 4d 51 54 54 04 c2 00 3c 00 00 00 01", &V3[..]), // no password
        ("e0 02 00 05", &[V5][..]),               // property section past the end
        ("90 03 00 01 01", &[V5][..]),            // SUBACK: property section past the end
    ] {
        rejects(&hex(bytes), versions, DecodeError::UnexpectedEnd);
    }
    assert_eq!(
        DecodeError::UnexpectedEnd.reason_code(),
        ReasonCode::MalformedPacket
    );
}

/// The next packet's bytes are not borrowed to complete a short field.
#[test]
fn field_running_past_the_frame_end_does_not_read_the_next_packet() {
    // PUBACK with 1 of its 2 identifier bytes, then a whole PUBACK.
    rejects(
        &hex("40 01 00 40 02 00 01"),
        &ALL,
        DecodeError::UnexpectedEnd,
    );
    // A topic length of 5 in a 4-byte body, then a PINGREQ.
    rejects(
        &hex("30 04 00 05 61 62 c0 00"),
        &V3,
        DecodeError::UnexpectedEnd,
    );
}

/// `DecodeError::reason_code` names the MQTT 5 code a server closes with.
#[test]
fn decode_errors_map_to_their_reason_codes() {
    use DecodeError as E;
    for (err, code) in [
        (E::ReservedPacketType, 0x81),
        (E::InvalidHeaderFlags { byte: 0x60 }, 0x81),
        (E::MalformedRemainingLength, 0x81),
        (E::UnexpectedEnd, 0x81),
        (E::TrailingBytes, 0x81),
        (E::InvalidUtf8, 0x81),
        (E::NullCharacter, 0x81),
        (E::InvalidProtocolName, 0x81),
        (E::InvalidConnectFlags, 0x81),
        (E::InvalidQoS, 0x81),
        (E::DupWithQoS0, 0x81),
        (E::ZeroPacketId, 0x81),
        (E::InvalidSubscriptionOptions, 0x81),
        (E::UnknownProperty(0x04), 0x81),
        (E::PropertyNotAllowed(PropertyId::TopicAlias), 0x81),
        (E::InvalidReasonCode(0x03), 0x81),
        (E::DuplicateProperty(PropertyId::ContentType), 0x82),
        (E::InvalidPropertyValue(PropertyId::ReceiveMaximum), 0x82),
        (E::NoTopicFilters, 0x82),
        (E::InvalidRetainHandling, 0x82),
        (E::NoLocalOnSharedSubscription, 0x82),
        (E::PacketNotInVersion, 0x82),
        (E::UnsupportedProtocolVersion(6), 0x84),
        (E::InvalidTopicFilter, 0x8f),
        (E::InvalidTopicName, 0x90),
        (E::PacketTooLarge { size: 10, max: 5 }, 0x95),
    ] {
        assert_eq!(err.reason_code().as_u8(), code, "{err:?}");
        // Every code is one a DISCONNECT (or, for CONNECT errors, a
        // CONNACK) may carry.
        let rc = err.reason_code();
        assert!(rc.allowed_in(PacketType::Disconnect) || rc.allowed_in(PacketType::ConnAck));
        assert!(!err.as_str().is_empty());
    }
}
