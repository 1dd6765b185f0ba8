//! Malformed packets and protocol errors after CONNECT (MQTT 3.1.1 sections
//! 2 and 4.8, MQTT 5 sections 1.5, 2 and 4.13): the broker closes the
//! connection (5.0: DISCONNECT with the reason code first), and keeps
//! serving everyone else.
//!
//! Each case is sent byte for byte, in the 3.1.1 layout and in the 5.0
//! layout (which adds a property length after the variable header).

mod common;

use common::*;
use mqtt_broker::Config;
use mqtt_codec::{ProtocolVersion, ReasonCode};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Connects a client with `config`, sends `bad`, checks the close (5.0:
/// DISCONNECT `reason` first), then checks a well-behaved client is still
/// served.
async fn refused_with(config: Config, version: ProtocolVersion, bad: &[u8], reason: ReasonCode) {
    let broker = broker_with(config).await;
    let addr = broker.local_addr();
    let mut c = RawClient::connect(addr, version, "bad").await;
    c.send_raw(bad).await;
    c.expect_closed_with(reason).await;
    assert_still_serving(addr, version).await;
    assert!(broker.stats().protocol_errors.get() >= 1);
    broker.shutdown().await;
}

async fn refused(version: ProtocolVersion, bad: &[u8], reason: ReasonCode) {
    refused_with(Config::ephemeral(), version, bad, reason).await;
}

/// [MQTT-3.1.1/5: 3.3.1-4] a PUBLISH with both QoS bits set (QoS 3) is malformed.
#[tokio::test]
async fn publish_with_qos_3_is_malformed() {
    // Topic "t", packet id 1, payload "x".
    refused(
        V3,
        &[0x36, 0x06, 0x00, 0x01, b't', 0x00, 0x01, b'x'],
        ReasonCode::MalformedPacket,
    )
    .await;
    refused(
        V5,
        &[0x36, 0x07, 0x00, 0x01, b't', 0x00, 0x01, 0x00, b'x'],
        ReasonCode::MalformedPacket,
    )
    .await;
}

/// [MQTT-3.1.1/5: 3.6.1-1] PUBREL must carry the fixed-header flags 0010.
#[tokio::test]
async fn pubrel_with_flags_0000_is_malformed() {
    for version in V3_AND_V5 {
        refused(
            version,
            &[0x60, 0x02, 0x00, 0x01],
            ReasonCode::MalformedPacket,
        )
        .await;
    }
}

/// [MQTT-3.1.1/5: 3.8.1-1] SUBSCRIBE must carry the fixed-header flags 0010.
#[tokio::test]
async fn subscribe_with_flags_0000_is_malformed() {
    refused(
        V3,
        &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x00],
        ReasonCode::MalformedPacket,
    )
    .await;
    refused(
        V5,
        &[0x80, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b't', 0x00],
        ReasonCode::MalformedPacket,
    )
    .await;
}

/// [MQTT-3.1.1: 2.2.2-2] wrong fixed-header flags are refused as soon as the first
/// byte arrives: nothing else is sent.
#[tokio::test]
async fn wrong_header_flags_are_refused_from_the_first_byte() {
    for version in V3_AND_V5 {
        // PUBREL 0000, UNSUBSCRIBE 0000, PINGREQ 0001, reserved type 0.
        for first in [0x60, 0xa0, 0xc1, 0x00] {
            refused(version, &[first], ReasonCode::MalformedPacket).await;
        }
    }
}

/// [MQTT-5: 1.5.5-1] / section 2.2.3 (3.1.1) the Remaining Length has at
/// most four bytes: a fifth is malformed.
#[tokio::test]
async fn remaining_length_of_five_bytes_is_malformed() {
    for version in V3_AND_V5 {
        refused(
            version,
            &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
            ReasonCode::MalformedPacket,
        )
        .await;
    }
}

/// [MQTT-5: 1.5.5-1] the Remaining Length uses the fewest bytes: `80 00`
/// for 0 is malformed.
#[tokio::test]
async fn v5_remaining_length_not_minimal_is_malformed() {
    refused(V5, &[0xc0, 0x80, 0x00], ReasonCode::MalformedPacket).await;
}

fn small_packets() -> Config {
    Config {
        max_packet_size: 64,
        ..Config::ephemeral()
    }
}

/// A packet larger than the configured maximum packet size is refused
/// (5.0: DISCONNECT 0x95, Packet too large; section 3.2.2.3.6).
#[tokio::test]
async fn packet_larger_than_max_packet_size_is_refused() {
    // A QoS 0 PUBLISH to "t" with a 100-byte payload: 105 bytes (106 in 5.0).
    let mut v3 = vec![0x30, 103, 0x00, 0x01, b't'];
    v3.extend_from_slice(&[b'x'; 100]);
    refused_with(small_packets(), V3, &v3, ReasonCode::PacketTooLarge).await;
    let mut v5 = vec![0x30, 104, 0x00, 0x01, b't', 0x00];
    v5.extend_from_slice(&[b'x'; 100]);
    refused_with(small_packets(), V5, &v5, ReasonCode::PacketTooLarge).await;
}

/// An oversize packet is refused from its fixed header: the broker does not
/// wait for (or buffer) a 256 MB body that is never sent.
#[tokio::test]
async fn oversize_packet_is_refused_from_its_header() {
    for version in V3_AND_V5 {
        refused_with(
            small_packets(),
            version,
            &[0x30, 0xff, 0xff, 0xff, 0x7f],
            ReasonCode::PacketTooLarge,
        )
        .await;
    }
}

/// (5.0) the CONNACK tells the client the server's Maximum Packet Size
/// (section 3.2.2.3.6).
#[tokio::test]
async fn v5_connack_announces_the_maximum_packet_size() {
    let broker = broker_with(small_packets()).await;
    let mut c = RawClient::open(broker.local_addr(), V5).await;
    c.send(&mqtt_codec::Packet::Connect(connect_packet(V5, "c", true)))
        .await;
    // Receive Maximum 1024, Maximum Packet Size 64, Topic Alias Maximum 64.
    c.expect_bytes(&[
        0x20, 0x0e, 0x00, 0x00, 0x0b, 0x21, 0x04, 0x00, 0x27, 0x00, 0x00, 0x00, 0x40, 0x22, 0x00,
        0x40,
    ])
    .await;
    broker.shutdown().await;
}

/// [MQTT-3.1.1/5: 3.3.2-2] a topic name contains no wildcards (5.0: 0x90, Topic Name
/// invalid).
#[tokio::test]
async fn publish_topic_with_wildcard_is_refused() {
    for wildcard in [b'#', b'+'] {
        // Topic "a/#" or "a/+", payload "x".
        refused(
            V3,
            &[0x30, 0x06, 0x00, 0x03, b'a', b'/', wildcard, b'x'],
            ReasonCode::TopicNameInvalid,
        )
        .await;
        refused(
            V5,
            &[0x30, 0x07, 0x00, 0x03, b'a', b'/', wildcard, 0x00, b'x'],
            ReasonCode::TopicNameInvalid,
        )
        .await;
    }
}

/// [MQTT-3.1.1: 1.5.3-1] / [MQTT-5: 1.5.4-1] a topic that is not
/// well-formed UTF-8 is malformed.
#[tokio::test]
async fn publish_topic_with_invalid_utf8_is_malformed() {
    refused(
        V3,
        &[0x30, 0x06, 0x00, 0x03, b'a', 0xff, b'b', b'x'],
        ReasonCode::MalformedPacket,
    )
    .await;
    refused(
        V5,
        &[0x30, 0x07, 0x00, 0x03, b'a', 0xff, b'b', 0x00, b'x'],
        ReasonCode::MalformedPacket,
    )
    .await;
}

/// [MQTT-3.1.1: 1.5.3-2] / [MQTT-5: 1.5.4-2] a string holding U+0000 is
/// malformed.
#[tokio::test]
async fn publish_topic_with_null_character_is_malformed() {
    refused(
        V3,
        &[0x30, 0x06, 0x00, 0x03, b'a', 0x00, b'b', b'x'],
        ReasonCode::MalformedPacket,
    )
    .await;
    refused(
        V5,
        &[0x30, 0x07, 0x00, 0x03, b'a', 0x00, b'b', 0x00, b'x'],
        ReasonCode::MalformedPacket,
    )
    .await;
}

/// [MQTT-3.1.1: 2.3.1-1] a QoS 1 PUBLISH needs a non-zero packet identifier.
#[tokio::test]
async fn publish_qos1_with_packet_id_0_is_malformed() {
    refused(
        V3,
        &[0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x00, b'x'],
        ReasonCode::MalformedPacket,
    )
    .await;
    refused(
        V5,
        &[0x32, 0x07, 0x00, 0x01, b't', 0x00, 0x00, 0x00, b'x'],
        ReasonCode::MalformedPacket,
    )
    .await;
}

/// [MQTT-3.1.1/5: 3.3.1-2] a QoS 0 PUBLISH must not have DUP set.
#[tokio::test]
async fn publish_qos0_with_dup_is_malformed() {
    refused(
        V3,
        &[0x38, 0x04, 0x00, 0x01, b't', b'x'],
        ReasonCode::MalformedPacket,
    )
    .await;
    refused(
        V5,
        &[0x38, 0x05, 0x00, 0x01, b't', 0x00, b'x'],
        ReasonCode::MalformedPacket,
    )
    .await;
}

/// [MQTT-3.1.1: 3.8.3-3] / [MQTT-5: 3.8.3-2] a SUBSCRIBE with no topic
/// filter is a protocol violation (5.0: "a Protocol Error", 0x82).
#[tokio::test]
async fn subscribe_without_filters_is_a_protocol_error() {
    refused(V3, &[0x82, 0x02, 0x00, 0x01], ReasonCode::ProtocolError).await;
    refused(
        V5,
        &[0x82, 0x03, 0x00, 0x01, 0x00],
        ReasonCode::ProtocolError,
    )
    .await;
}

/// [MQTT-3.1.1/5: 3.10.3-2] an UNSUBSCRIBE with no topic filter is a protocol
/// violation (5.0: "a Protocol Error", 0x82).
#[tokio::test]
async fn unsubscribe_without_filters_is_a_protocol_error() {
    refused(V3, &[0xa2, 0x02, 0x00, 0x01], ReasonCode::ProtocolError).await;
    refused(
        V5,
        &[0xa2, 0x03, 0x00, 0x01, 0x00],
        ReasonCode::ProtocolError,
    )
    .await;
}

/// (3.1.1, section 2.2.1) packet type 15 is reserved before MQTT 5: an AUTH
/// from a 3.1.1 client closes the connection.
#[tokio::test]
async fn v311_auth_packet_is_refused() {
    refused(V3, &[0xf0, 0x00], ReasonCode::MalformedPacket).await;
}

/// (5.0, section 4.12) AUTH from a client that did not ask
/// for enhanced authentication in CONNECT is a Protocol Error.
#[tokio::test]
async fn v5_auth_without_authentication_method_is_a_protocol_error() {
    refused(V5, &[0xf0, 0x00], ReasonCode::ProtocolError).await;
}

/// Packets only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP) are a
/// protocol violation from a client (5.0: 0x82).
#[tokio::test]
async fn server_only_packets_from_a_client_are_refused() {
    for (v3, v5) in [
        // CONNACK
        (
            &[0x20, 0x02, 0x00, 0x00][..],
            &[0x20, 0x03, 0x00, 0x00, 0x00][..],
        ),
        // SUBACK id 1 granted QoS 0
        (
            &[0x90, 0x03, 0x00, 0x01, 0x00][..],
            &[0x90, 0x04, 0x00, 0x01, 0x00, 0x00][..],
        ),
        // UNSUBACK id 1 (5.0: success)
        (
            &[0xb0, 0x02, 0x00, 0x01][..],
            &[0xb0, 0x04, 0x00, 0x01, 0x00, 0x00][..],
        ),
        // PINGRESP
        (&[0xd0, 0x00][..], &[0xd0, 0x00][..]),
    ] {
        refused(V3, v3, ReasonCode::ProtocolError).await;
        refused(V5, v5, ReasonCode::ProtocolError).await;
    }
}
