//! CONNECT and CONNACK (MQTT 3.1.1 and 5.0, sections 3.1 and 3.2): which
//! CONNECT packets are accepted, how the others are refused, and what
//! happens to a socket that never connects.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mqtt_broker::{Config, ListenerConfig};
use mqtt_codec::{Packet, Property, PropertyId, ProtocolVersion, ReasonCode};

/// A CONNECT without properties (3.1 / 3.1.1 layout), keep alive 60.
fn raw_connect(name: &str, level: u8, flags: u8, client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&[level, flags, 0x00, 0x3c]);
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

/// The same CONNECT in the MQTT 5 layout (an empty property list).
fn raw_connect_v5(flags: u8, client_id: &str) -> Vec<u8> {
    let mut body = vec![
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, flags, 0x00, 0x3c, 0x00,
    ];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

#[tokio::test]
async fn v311_connect_is_accepted_with_return_code_0() {
    let broker = broker().await;
    let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V3_1_1).await;
    // CONNECT "MQTT" level 4, clean session, keep alive 60, client id "c1".
    c.send_raw(&[
        0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x02, b'c',
        b'1',
    ])
    .await;
    c.expect_bytes(&[0x20, 0x02, 0x00, 0x00]).await;
    c.expect_nothing_pending().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn v31_connect_with_mqisdp_level_3_is_accepted() {
    let broker = broker().await;
    let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V3_1).await;
    // CONNECT "MQIsdp" level 3, clean session, keep alive 60, client id "c1".
    c.send_raw(&[
        0x10, 0x10, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3c, 0x00,
        0x02, b'c', b'1',
    ])
    .await;
    c.expect_bytes(&[0x20, 0x02, 0x00, 0x00]).await;
    c.expect_nothing_pending().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn v5_connect_is_accepted_with_the_server_limits() {
    let broker = broker().await;
    let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V5).await;
    c.send_raw(&raw_connect_v5(0x02, "c1")).await;
    // CONNACK success with Receive Maximum 1024 and Topic Alias Maximum 64,
    // the defaults of the test configuration.
    c.expect_bytes(&[
        0x20, 0x09, 0x00, 0x00, 0x06, 0x21, 0x04, 0x00, 0x22, 0x00, 0x40,
    ])
    .await;
    c.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// [MQTT-3.1.1/5: 3.1.2-2] an unsupported protocol level gets return code 0x01
/// (Unacceptable protocol version), then the connection closes.
#[tokio::test]
async fn unsupported_protocol_level_gets_return_code_1_then_close() {
    let broker = broker().await;
    for level in [0, 2, 6, 7] {
        let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V3_1_1).await;
        c.send_raw(&raw_connect("MQTT", level, 0x02, "c1")).await;
        c.expect_bytes(&[0x20, 0x02, 0x00, 0x01]).await;
        let rest = c.expect_close().await;
        assert!(rest.is_empty(), "level {level}: {rest:?}");
    }
    assert_still_serving(broker.local_addr(), ProtocolVersion::V3_1_1).await;
    broker.shutdown().await;
}

/// [MQTT-3.1.1/5: 3.1.2-1] a protocol name other than "MQTT" (or 3.1's "MQIsdp"):
/// the server may close without CONNACK, and does.
#[tokio::test]
async fn unknown_protocol_name_is_closed() {
    let broker = broker().await;
    let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V3_1_1).await;
    c.send_raw(&raw_connect("MQTX", 4, 0x02, "c1")).await;
    let got = c.expect_close().await;
    assert!(got.is_empty(), "{got:?}");
    assert_still_serving(broker.local_addr(), ProtocolVersion::V3_1_1).await;
    broker.shutdown().await;
}

/// [MQTT-3.1.1/5: 3.1.0-1] the first packet from a client must be CONNECT.
#[tokio::test]
async fn first_packet_not_connect_is_closed() {
    let broker = broker().await;
    for (version, first) in [
        // PINGREQ
        (ProtocolVersion::V3_1_1, &[0xc0, 0x00][..]),
        // PUBLISH QoS 0 "t" "x"
        (
            ProtocolVersion::V3_1_1,
            &[0x30, 0x04, 0x00, 0x01, b't', b'x'][..],
        ),
        // SUBSCRIBE id 1 "t" QoS 0 (5.0 layout)
        (
            ProtocolVersion::V5,
            &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b't', 0x00][..],
        ),
    ] {
        let mut c = RawClient::open(broker.local_addr(), version).await;
        c.send_raw(first).await;
        let got = c.expect_close().await;
        assert!(got.is_empty(), "{first:02x?}: {got:?}");
    }
    assert_still_serving(broker.local_addr(), ProtocolVersion::V3_1_1).await;
    broker.shutdown().await;
}

/// [MQTT-3.1.1/5: 3.1.0-1] a first packet that is not CONNECT is refused from its
/// first byte: a client that has not connected cannot make the broker wait
/// for (and buffer) a 256 MB body.
#[tokio::test]
async fn first_packet_not_connect_is_refused_from_its_header() {
    let broker = broker().await;
    let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V3_1_1).await;
    // A PUBLISH announcing 268,435,455 bytes; the body is never sent. The
    // CONNECT timeout (10 s) is longer than the test's timeout.
    c.send_raw(&[0x30, 0xff, 0xff, 0xff, 0x7f]).await;
    let got = c.expect_close().await;
    assert!(got.is_empty(), "{got:?}");
    broker.shutdown().await;
}

/// [MQTT-3.1.1/5: 3.1.0-2] a second CONNECT is a protocol error: the connection is
/// closed (5.0: DISCONNECT 0x82 first).
#[tokio::test]
async fn second_connect_is_a_protocol_error() {
    let broker = broker().await;
    for version in V3_AND_V5 {
        let mut c = RawClient::connect(broker.local_addr(), version, "twice").await;
        c.send(&Packet::Connect(connect_packet(version, "twice", true)))
            .await;
        c.expect_closed_with(ReasonCode::ProtocolError).await;
        assert_still_serving(broker.local_addr(), version).await;
    }
    broker.shutdown().await;
}

/// [MQTT-3.1.1/5: 3.1.2-3] the reserved CONNECT flag must be 0; otherwise the packet
/// is malformed and the connection closes without being accepted (5.0 may
/// say why in a CONNACK, and does: 0x81).
#[tokio::test]
async fn connect_with_reserved_flag_is_malformed() {
    let broker = broker().await;

    let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V3_1_1).await;
    c.send_raw(&raw_connect("MQTT", 4, 0x03, "c1")).await;
    let got = c.expect_close().await;
    assert!(got.is_empty(), "{got:?}");

    let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V5).await;
    c.send_raw(&raw_connect_v5(0x03, "c1")).await;
    c.expect_bytes(&[0x20, 0x03, 0x00, 0x81, 0x00]).await;
    let got = c.expect_close().await;
    assert!(got.is_empty(), "{got:?}");

    assert_still_serving(broker.local_addr(), ProtocolVersion::V3_1_1).await;
    broker.shutdown().await;
}

/// [MQTT-3.1.1: 3.1.3-6/7] a 3.1.1 client may send an empty client identifier with
/// clean session 1; the server assigns one.
#[tokio::test]
async fn v311_empty_client_id_with_clean_session_is_accepted() {
    let broker = broker().await;
    let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V3_1_1).await;
    c.send_raw(&raw_connect("MQTT", 4, 0x02, "")).await;
    c.expect_bytes(&[0x20, 0x02, 0x00, 0x00]).await;
    c.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// [MQTT-3.1.1: 3.1.3-8] an empty client identifier with clean session 0 gets
/// return code 0x02 (Identifier rejected), then the connection closes. MQTT
/// 3.1 does not allow an empty identifier at all.
#[tokio::test]
async fn empty_client_id_without_clean_session_gets_return_code_2() {
    let broker = broker().await;
    for (name, level, flags) in [("MQTT", 4, 0x00), ("MQIsdp", 3, 0x00), ("MQIsdp", 3, 0x02)] {
        let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V3_1_1).await;
        c.send_raw(&raw_connect(name, level, flags, "")).await;
        c.expect_bytes(&[0x20, 0x02, 0x00, 0x02]).await;
        let rest = c.expect_close().await;
        assert!(rest.is_empty(), "{name} {level} {flags:#x}: {rest:?}");
    }
    broker.shutdown().await;
}

/// [MQTT-5: 3.1.3-6] an empty client identifier is accepted and the
/// CONNACK carries the Assigned Client Identifier, which names a real
/// session the client can resume [MQTT-5: 3.2.2-16].
#[tokio::test]
async fn v5_empty_client_id_gets_an_assigned_client_identifier() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let props = [Property::SessionExpiryInterval(60)];
    let mut connect = connect_packet(ProtocolVersion::V5, "", false);
    connect.properties = mqtt_codec::Properties::from_slice(&props);

    let mut first = RawClient::open(addr, ProtocolVersion::V5).await;
    first.send(&Packet::Connect(connect)).await;
    let ack = first.recv().await;
    let Packet::ConnAck(a) = ack.packet() else {
        panic!("expected CONNACK, got {ack:?}");
    };
    assert_eq!(a.reason, ReasonCode::Success);
    assert!(!a.session_present);
    let Some(Property::AssignedClientIdentifier(id)) =
        a.properties.get(PropertyId::AssignedClientIdentifier)
    else {
        panic!("no Assigned Client Identifier: {a:?}");
    };
    assert!(!id.is_empty());
    let id = id.to_owned();
    first
        .subscribe(1, "assigned/t", mqtt_codec::QoS::AtMostOnce)
        .await;
    first.disconnect_and_wait().await;

    // A second client with an empty identifier gets another one.
    let mut second = RawClient::open(addr, ProtocolVersion::V5).await;
    second.send(&Packet::Connect(connect)).await;
    let ack = second.recv().await;
    let Packet::ConnAck(a) = ack.packet() else {
        panic!("expected CONNACK, got {ack:?}");
    };
    match a.properties.get(PropertyId::AssignedClientIdentifier) {
        Some(Property::AssignedClientIdentifier(other)) => assert_ne!(other, id),
        p => panic!("no Assigned Client Identifier: {p:?}"),
    }

    // The assigned identifier resumes the first session.
    let mut again = connect_packet(ProtocolVersion::V5, &id, false);
    again.properties = mqtt_codec::Properties::from_slice(&props);
    let mut resumed = RawClient::connect_session(addr, again, true).await;
    resumed.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// A socket that never sends CONNECT is closed after the CONNECT timeout.
#[tokio::test]
async fn silent_socket_is_closed_after_the_connect_timeout() {
    let broker = broker_with(Config {
        connect_timeout_secs: 1,
        ..Config::ephemeral()
    })
    .await;
    let start = Instant::now();
    let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V3_1_1).await;
    let got = c.expect_close().await;
    assert!(got.is_empty(), "{got:?}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );

    // Half a CONNECT does not stop the clock either.
    let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V3_1_1).await;
    c.send_raw(&raw_connect("MQTT", 4, 0x02, "c1")[..5]).await;
    let got = c.expect_close().await;
    assert!(got.is_empty(), "{got:?}");
    broker.shutdown().await;
}

/// (5.0) CONNECT with an Authentication Method the server does not support
/// gets CONNACK 0x8C (Bad authentication method), then the connection
/// closes (section 4.12).
#[tokio::test]
async fn v5_connect_with_unknown_authentication_method_gets_0x8c() {
    let broker = broker().await;
    let props = [Property::AuthenticationMethod("SCRAM-SHA-1")];
    let mut connect = connect_packet(ProtocolVersion::V5, "auth", true);
    connect.properties = mqtt_codec::Properties::from_slice(&props);
    let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V5).await;
    c.send(&Packet::Connect(connect)).await;
    let got = c.recv().await;
    assert_refusal(&got.bytes, ProtocolVersion::V5, 0, 0x8c);
    let rest = c.expect_close().await;
    assert!(rest.is_empty(), "{rest:?}");
    broker.shutdown().await;
}

/// A listener with `allow_anonymous = false` refuses a CONNECT without a
/// user name: 3.1.1 return code 0x05 (Not authorized), 5.0 reason 0x87.
#[tokio::test]
async fn anonymous_client_is_refused_when_the_listener_requires_a_user() {
    let broker = broker_with(Config {
        listeners: vec![ListenerConfig {
            allow_anonymous: Some(false),
            ..ListenerConfig::new(([127, 0, 0, 1], 0).into())
        }],
        ..Config::ephemeral()
    })
    .await;
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut c = RawClient::open(broker.local_addr(), version).await;
        c.send(&Packet::Connect(connect_packet(version, "anon", true)))
            .await;
        let got = c.recv().await;
        assert_refusal(&got.bytes, version, 0x05, 0x87);
        let rest = c.expect_close().await;
        assert!(rest.is_empty(), "{version:?}: {rest:?}");
    }
    assert_eq!(broker.stats().auth_failures.get(), 2);
    broker.shutdown().await;
}

/// Packets a client sends right behind its CONNECT, in the same segment,
/// are handled in order after the CONNACK; and a PINGRESP comes after
/// every message already queued for the client (here its own PUBLISH), so
/// PINGREQ/PINGRESP proves nothing else is pending, as with Mosquitto.
#[tokio::test]
async fn packets_pipelined_after_connect_are_handled() {
    let broker = broker().await;
    let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V3_1_1).await;
    let mut burst = raw_connect("MQTT", 4, 0x02, "c1");
    // SUBSCRIBE id 1 "t" QoS 0, PUBLISH QoS 0 "t" "x", PINGREQ.
    burst.extend_from_slice(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x00]);
    burst.extend_from_slice(&[0x30, 0x04, 0x00, 0x01, b't', b'x']);
    burst.extend_from_slice(&[0xc0, 0x00]);
    c.send_raw(&burst).await;
    c.expect_bytes(&[0x20, 0x02, 0x00, 0x00]).await;
    c.expect_bytes(&[0x90, 0x03, 0x00, 0x01, 0x00]).await;
    c.expect_bytes(&[0x30, 0x04, 0x00, 0x01, b't', b'x']).await;
    c.expect_bytes(&[0xd0, 0x00]).await;
    broker.shutdown().await;
}

/// A refused CONNECT does not take over the session of its client
/// identifier: the connected client stays connected.
#[tokio::test]
async fn refused_connect_does_not_take_over_the_session() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut first = RawClient::connect(addr, ProtocolVersion::V5, "same").await;
    let props = [Property::AuthenticationMethod("SCRAM-SHA-1")];
    let mut connect = connect_packet(ProtocolVersion::V5, "same", true);
    connect.properties = mqtt_codec::Properties::from_slice(&props);
    let mut second = RawClient::open(addr, ProtocolVersion::V5).await;
    second.send(&Packet::Connect(connect)).await;
    let got = second.recv().await;
    assert_refusal(&got.bytes, ProtocolVersion::V5, 0, 0x8c);
    second.expect_close().await;
    first.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// A refusing CONNACK tells an MQTT 5 client why in a Reason String (like
/// the server's DISCONNECTs), for a refusal by the listener, by the
/// password check and by the CONNECT's own content.
#[tokio::test]
async fn v5_connack_refusals_carry_a_reason_string() {
    let broker = broker_with(Config {
        listeners: vec![ListenerConfig {
            allow_anonymous: Some(false),
            ..ListenerConfig::local_only(0)
        }],
        ..Config::ephemeral()
    })
    .await;
    let got = RawClient::connect_refused(
        broker.local_addr(),
        connect_packet(ProtocolVersion::V5, "anon", true),
    )
    .await;
    assert_refusal(&got, ProtocolVersion::V5, 0x05, 0x87);
    broker.shutdown().await;
}

/// A client that sets Request Problem Information to 0 gets the reason
/// code alone [MQTT-5: 3.1.2-29 allows either; it asked for less].
#[tokio::test]
async fn v5_connack_refusal_has_no_reason_string_without_problem_information() {
    let broker = broker_with(Config {
        listeners: vec![ListenerConfig {
            allow_anonymous: Some(false),
            ..ListenerConfig::local_only(0)
        }],
        ..Config::ephemeral()
    })
    .await;
    let props = [Property::RequestProblemInformation(false)];
    let mut connect = connect_packet(ProtocolVersion::V5, "anon", true);
    connect.properties = mqtt_codec::Properties::from_slice(&props);
    let got = RawClient::connect_refused(broker.local_addr(), connect).await;
    assert_eq!(got, [0x20, 0x03, 0x00, 0x87, 0x00]);
    broker.shutdown().await;
}

/// The Reason String is left out when it would take the CONNACK over the
/// client's Maximum Packet Size [MQTT-5: 3.2.2-19].
#[tokio::test]
async fn v5_connack_refusal_leaves_out_a_reason_string_too_large_for_the_client() {
    let broker = broker_with(Config {
        listeners: vec![ListenerConfig {
            allow_anonymous: Some(false),
            ..ListenerConfig::local_only(0)
        }],
        ..Config::ephemeral()
    })
    .await;
    let props = [Property::MaximumPacketSize(16)];
    let mut connect = connect_packet(ProtocolVersion::V5, "anon", true);
    connect.properties = mqtt_codec::Properties::from_slice(&props);
    let got = RawClient::connect_refused(broker.local_addr(), connect).await;
    assert_eq!(got, [0x20, 0x03, 0x00, 0x87, 0x00]);
    broker.shutdown().await;
}
