//! Property-based round trips: for every packet type of every protocol
//! version, a generated valid packet encodes to exactly `encoded_len` bytes
//! and decodes back to an equal packet. Plus the property and reason-code
//! tables checked against the MQTT 5.0 text, and every property round-tripped
//! in every context that allows it.

mod common;

use common::*;
use mqtt_codec::{
    check_header, decode, DecodeOptions, EncodeError, Packet, PacketType, PropertyContext,
    PropertyId, ProtocolVersion, ReasonCode, Status,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

/// Encodes `op` for `version`, decodes it, and checks every way the two can
/// disagree.
fn check_round_trip(op: &OPacket, version: ProtocolVersion) {
    let scratch = op.scratch();
    let packet = op.packet(&scratch);
    let bytes = encode_packet(&packet, version);
    let len = bytes.len();

    // A buffer one byte short is refused with the exact size needed.
    let mut short = vec![0u8; len - 1];
    assert_eq!(
        packet.encode(version, &mut short),
        Err(EncodeError::BufferTooSmall { required: len })
    );

    // The fixed header describes the frame.
    let Ok(Status::Complete(header)) = check_header(&bytes, u32::MAX) else {
        panic!("bad header in {bytes:02x?}");
    };
    assert_eq!(header.packet_type, op.kind());
    assert_eq!(header.packet_len(), len);

    let decoded = decode_one(&bytes, version);
    assert_eq!(decoded, packet, "decoded packet differs from the original");
    assert_eq!(&OPacket::from_packet(&decoded), op);

    // Re-encoding the decoded view (whose lists are wire views, not slices)
    // gives the same bytes.
    assert_eq!(encode_packet(&decoded, version), bytes);

    // Bytes after the packet are left for the next decode.
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0xe0, 0x00]);
    match decode(&longer, &DecodeOptions::new(version)) {
        Ok(Status::Complete((p, n))) => {
            assert_eq!(n, len);
            assert_eq!(p, packet);
        }
        other => panic!("{other:?}"),
    }
}

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

fn arb_for(kind: PacketType) -> BoxedStrategy<(ProtocolVersion, OPacket)> {
    let versions: Vec<ProtocolVersion> = if kind == PacketType::Auth {
        vec![V5]
    } else {
        VERSIONS.to_vec()
    };
    prop::sample::select(versions)
        .prop_flat_map(move |v| arb_packet_of(kind, v).prop_map(move |p| (v, p)))
        .boxed()
}

macro_rules! round_trip_tests {
    ($($name:ident => $kind:ident,)*) => {
        proptest! {
            #![proptest_config(config())]
            $(
                #[test]
                fn $name((version, op) in arb_for(PacketType::$kind)) {
                    check_round_trip(&op, version);
                }
            )*
        }
    };
}

round_trip_tests! {
    connect_round_trips => Connect,
    connack_round_trips => ConnAck,
    publish_round_trips => Publish,
    puback_round_trips => PubAck,
    pubrec_round_trips => PubRec,
    pubrel_round_trips => PubRel,
    pubcomp_round_trips => PubComp,
    subscribe_round_trips => Subscribe,
    suback_round_trips => SubAck,
    unsubscribe_round_trips => Unsubscribe,
    unsuback_round_trips => UnsubAck,
    pingreq_round_trips => PingReq,
    pingresp_round_trips => PingResp,
    disconnect_round_trips => Disconnect,
    auth_round_trips => Auth,
}

proptest! {
    #![proptest_config(config())]

    /// Any packet of any version, chosen uniformly over the types.
    #[test]
    fn any_packet_of_any_version_round_trips((version, op) in arb_versioned_packet()) {
        check_round_trip(&op, version);
    }
}

#[test]
fn every_packet_type_of_every_version_is_generated() {
    let mut runner = TestRunner::deterministic();
    for version in VERSIONS {
        for kind in types_in(version) {
            let op = arb_packet_of(kind, version)
                .new_tree(&mut runner)
                .unwrap()
                .current();
            assert_eq!(op.kind(), kind);
            check_round_trip(&op, version);
        }
    }
}

/// The generators reach every one of the 27 properties in every context that
/// allows it, so the round trips above exercise them all.
#[test]
fn strategies_generate_every_property_in_every_allowed_context() {
    let mut runner = TestRunner::deterministic();
    for ctx in CONTEXTS {
        let strategy = arb_props(ctx, V5);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let props = strategy.new_tree(&mut runner).unwrap().current();
            seen.extend(props.iter().map(OProp::id));
        }
        for id in PropertyId::ALL {
            assert_eq!(
                seen.contains(id),
                spec_contexts(*id).contains(&ctx),
                "{id:?} in {ctx:?}"
            );
        }
    }
}

/// MQTT 5.0 table 2-4: where each property may appear.
#[test]
fn property_placement_matches_the_specification() {
    assert_eq!(PropertyId::ALL.len(), 27);
    for id in PropertyId::ALL {
        for ctx in CONTEXTS {
            assert_eq!(
                id.allowed_in(ctx),
                spec_contexts(*id).contains(&ctx),
                "{id:?} in {ctx:?}"
            );
        }
    }
}

/// The reason codes each packet may carry (MQTT 5.0 section 2.4 and the
/// per-packet tables).
#[test]
fn reason_code_tables_match_the_specification() {
    for kind in PACKET_TYPES {
        for b in 0..=255u8 {
            let allowed = ReasonCode::from_u8(b).is_some_and(|c| c.allowed_in(kind));
            assert_eq!(
                allowed,
                spec_reason_codes(kind).contains(&b),
                "{b:#04x} in {kind:?}"
            );
        }
    }
}

/// One packet per context carrying every property allowed there, two of
/// those that may repeat.
fn everything_in(ctx: PropertyContext) -> OPacket {
    let mut props = Vec::new();
    for id in PropertyId::ALL
        .iter()
        .copied()
        .filter(|id| id.allowed_in(ctx))
    {
        props.push(sample_prop(id));
        if id.may_repeat(ctx) {
            props.push(match id {
                PropertyId::UserProperty => OProp::UserProperty("k".into(), "second".into()),
                _ => OProp::SubscriptionIdentifier(1),
            });
        }
    }
    let pid = pid(0x1234);
    match ctx {
        PropertyContext::Connect | PropertyContext::Will => {
            let (props, will_props) = if ctx == PropertyContext::Will {
                (Vec::new(), props)
            } else {
                (props, Vec::new())
            };
            OPacket::Connect {
                protocol: V5,
                clean_start: true,
                keep_alive: 10,
                props,
                client_id: "c".into(),
                will: Some(OWill {
                    topic: "w".into(),
                    payload: b"bye".to_vec(),
                    qos: QoS::ExactlyOnce,
                    retain: false,
                    props: will_props,
                }),
                username: None,
                password: Some(b"pw".to_vec()),
            }
        }
        PropertyContext::ConnAck => OPacket::ConnAck {
            session_present: true,
            reason: ReasonCode::Success,
            props,
        },
        PropertyContext::Publish => OPacket::Publish {
            dup: false,
            qos_pid: mqtt_codec::QosPid::AtLeastOnce(pid),
            retain: true,
            topic: String::new(), // allowed: a Topic Alias is present
            props,
            payload: b"x".to_vec(),
        },
        PropertyContext::PubResp => OPacket::PubResp {
            kind: PacketType::PubRec,
            pid,
            reason: ReasonCode::Success,
            props,
        },
        PropertyContext::Subscribe => OPacket::Subscribe {
            pid,
            props,
            filters: vec![("a/+".into(), Default::default())],
        },
        PropertyContext::SubAck => OPacket::SubAck {
            pid,
            props,
            codes: vec![ReasonCode::GrantedQoS1],
        },
        PropertyContext::Unsubscribe => OPacket::Unsubscribe {
            pid,
            props,
            filters: vec!["a/#".into()],
        },
        PropertyContext::UnsubAck => OPacket::UnsubAck {
            pid,
            props,
            codes: vec![ReasonCode::Success],
        },
        PropertyContext::Disconnect => OPacket::Disconnect {
            reason: ReasonCode::Success,
            props,
        },
        PropertyContext::Auth => OPacket::Auth {
            reason: ReasonCode::ReAuthenticate,
            props,
        },
    }
}

use mqtt_codec::QoS;

#[test]
fn every_property_round_trips_in_every_allowed_context() {
    for ctx in CONTEXTS {
        let op = everything_in(ctx);
        check_round_trip(&op, V5);
        // The wire bytes of the properties are the independently encoded ones.
        let bytes = op.encode(V5);
        let expected: Vec<u8> = match &op {
            OPacket::Connect { will: Some(w), .. } if ctx == PropertyContext::Will => {
                w.props.iter().flat_map(OProp::raw).collect()
            }
            OPacket::Connect { props, .. }
            | OPacket::ConnAck { props, .. }
            | OPacket::Publish { props, .. }
            | OPacket::PubResp { props, .. }
            | OPacket::Subscribe { props, .. }
            | OPacket::SubAck { props, .. }
            | OPacket::Unsubscribe { props, .. }
            | OPacket::UnsubAck { props, .. }
            | OPacket::Disconnect { props, .. }
            | OPacket::Auth { props, .. } => props.iter().flat_map(OProp::raw).collect(),
            other => panic!("{other:?}"),
        };
        let section = prop_section(&expected);
        assert!(
            bytes.windows(section.len()).any(|w| w == section),
            "{ctx:?}: property bytes {section:02x?} not found in {bytes:02x?}"
        );
        let decoded = decode_one(&bytes, V5);
        assert_eq!(decoded_props(&decoded, ctx).len(), expected_count(&op, ctx));
    }
}

fn expected_count(op: &OPacket, ctx: PropertyContext) -> usize {
    match op {
        OPacket::Connect { will: Some(w), .. } if ctx == PropertyContext::Will => w.props.len(),
        OPacket::Connect { props, .. }
        | OPacket::ConnAck { props, .. }
        | OPacket::Publish { props, .. }
        | OPacket::PubResp { props, .. }
        | OPacket::Subscribe { props, .. }
        | OPacket::SubAck { props, .. }
        | OPacket::Unsubscribe { props, .. }
        | OPacket::UnsubAck { props, .. }
        | OPacket::Disconnect { props, .. }
        | OPacket::Auth { props, .. } => props.len(),
        _ => 0,
    }
}

/// Properties compare by content: a decoded view equals the slice it was
/// encoded from.
#[test]
fn decoded_properties_equal_the_slice_they_came_from() {
    let op = everything_in(PropertyContext::ConnAck);
    let bytes = op.encode(V5);
    let decoded = decode_one(&bytes, V5);
    let scratch = op.scratch();
    let (Packet::ConnAck(a), Packet::ConnAck(b)) = (decoded, op.packet(&scratch)) else {
        panic!()
    };
    assert!(a.properties.as_encoded().is_some());
    assert!(b.properties.as_encoded().is_none());
    assert_eq!(a.properties, b.properties);
    assert_eq!(
        a.properties.user_properties().collect::<Vec<_>>(),
        vec![("k", "v"), ("k", "second")]
    );
}

/// The sample packets used by the streaming tests round-trip too.
#[test]
fn sample_packets_round_trip() {
    for version in VERSIONS {
        for op in sample_packets(version) {
            check_round_trip(&op, version);
        }
    }
}
