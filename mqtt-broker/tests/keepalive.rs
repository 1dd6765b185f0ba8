//! Keep alive (MQTT 3.1.1 section 3.1.2.10, MQTT 5 section 3.1.2.10): a
//! client that sends something within 1.5 times its keep alive stays
//! connected, one that does not is closed, and keep alive 0 turns the
//! timeout off.

mod common;

use std::time::Duration;

// Tokio's clock: virtual in the tests that run on paused time.
use tokio::time::Instant;

use common::*;
use mqtt_broker::Config;
use mqtt_codec::{Packet, Property, PropertyId, ProtocolVersion, QoS, ReasonCode};

/// A connected client with the given keep alive, in seconds.
async fn connect_keep_alive(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
    keep_alive: u16,
) -> RawClient {
    let mut connect = connect_packet(version, client_id, true);
    connect.keep_alive = keep_alive;
    RawClient::connect_with(addr, connect).await
}

/// [MQTT-3.1.1: 3.1.2-23] a client that sends PINGREQ within its keep alive stays
/// connected past 1.5 times the keep alive.
#[tokio::test(start_paused = true)]
async fn pingreq_within_keep_alive_keeps_the_connection_open() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut v3 = connect_keep_alive(addr, ProtocolVersion::V3_1_1, "v3", 1).await;
    let mut v5 = connect_keep_alive(addr, ProtocolVersion::V5, "v5", 1).await;
    // 2 s in all, longer than the 1.5 s the broker allows between packets.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        v3.expect_nothing_pending().await;
        v5.expect_nothing_pending().await;
    }
    broker.shutdown().await;
}

/// Any control packet counts as activity, not only PINGREQ.
#[tokio::test(start_paused = true)]
async fn any_packet_within_keep_alive_keeps_the_connection_open() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut v3 = connect_keep_alive(addr, ProtocolVersion::V3_1_1, "v3", 1).await;
    let mut v5 = connect_keep_alive(addr, ProtocolVersion::V5, "v5", 1).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for c in [&mut v3, &mut v5] {
            c.send(&Packet::Publish(publish(
                "ka/t",
                b"x",
                QoS::AtMostOnce,
                0,
                false,
            )))
            .await;
        }
    }
    v3.expect_nothing_pending().await;
    v5.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// [MQTT-3.1.1: 3.1.2-24] a client silent for 1.5 times its keep alive is
/// disconnected (5.0: DISCONNECT 0x8D, Keep Alive timeout, first).
#[tokio::test(start_paused = true)]
async fn silent_client_is_closed_after_one_and_a_half_keep_alives() {
    let broker = broker().await;
    let addr = broker.local_addr();
    for version in V3_AND_V5 {
        let start = Instant::now();
        let mut c = connect_keep_alive(addr, version, "silent", 1).await;
        c.expect_closed_with(ReasonCode::KeepAliveTimeout).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
            "{version:?}: closed after {waited:?}"
        );
    }
    broker.shutdown().await;
}

/// (Section 3.1.2.10) keep alive 0 turns the keep alive mechanism off:
/// a silent client is not disconnected.
#[tokio::test(start_paused = true)]
async fn keep_alive_0_disables_the_timeout() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut v3 = connect_keep_alive(addr, ProtocolVersion::V3_1_1, "v3", 0).await;
    let mut v5 = connect_keep_alive(addr, ProtocolVersion::V5, "v5", 0).await;
    // Longer than 1.5 times the shortest keep alive a client can ask for.
    tokio::time::sleep(Duration::from_secs(2)).await;
    v3.expect_nothing_pending().await;
    v5.expect_nothing_pending().await;
    broker.shutdown().await;
}

fn max_keepalive_1() -> Config {
    Config {
        max_keepalive: 1,
        ..Config::ephemeral()
    }
}

/// (5.0, section 3.2.2.3.14) a server with a lower keep alive limit tells
/// the client in Server Keep Alive, and holds it to that value
/// [MQTT-5: 3.2.2-21].
#[tokio::test(start_paused = true)]
async fn v5_server_keep_alive_replaces_a_longer_keep_alive() {
    let broker = broker_with(max_keepalive_1()).await;
    for asked in [60, 0] {
        let start = Instant::now();
        let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
        connect.keep_alive = asked;
        let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V5).await;
        c.send(&Packet::Connect(connect)).await;
        let got = c.recv().await;
        let Packet::ConnAck(ack) = got.packet() else {
            panic!("expected CONNACK, got {got:?}");
        };
        assert_eq!(ack.reason, ReasonCode::Success);
        assert_eq!(
            ack.properties.get(PropertyId::ServerKeepAlive),
            Some(Property::ServerKeepAlive(1)),
            "keep alive {asked}: {ack:?}"
        );
        c.expect_closed_with(ReasonCode::KeepAliveTimeout).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1400),
            "closed after {waited:?}"
        );
    }
    broker.shutdown().await;
}

/// A 3.1.1 client cannot be told a shorter keep alive, and closing it
/// before 1.5 times its own would break [MQTT-3.1.1: 3.1.2-24]: one asking for
/// more than the server's maximum (or for 0) is refused with return code
/// 0x02, as Mosquitto does; one within the maximum is accepted.
#[tokio::test(start_paused = true)]
async fn v311_keep_alive_above_the_server_maximum_is_refused() {
    let broker = broker_with(max_keepalive_1()).await;
    for asked in [60, 0] {
        let mut connect = connect_packet(ProtocolVersion::V3_1_1, "c", true);
        connect.keep_alive = asked;
        let mut c = RawClient::open(broker.local_addr(), ProtocolVersion::V3_1_1).await;
        c.send(&Packet::Connect(connect)).await;
        c.expect_bytes(&[0x20, 0x02, 0x00, 0x02]).await;
        let rest = c.expect_close().await;
        assert!(rest.is_empty(), "keep alive {asked}: {rest:?}");
    }
    let mut c = connect_keep_alive(broker.local_addr(), ProtocolVersion::V3_1_1, "ok", 1).await;
    c.expect_nothing_pending().await;
    broker.shutdown().await;
}
