//! Idle connections parked without a task (`park_idle_ms`, issue 20): a
//! parked connection behaves exactly as an active one. It is woken by a
//! packet from its client, by a message for its session, by a takeover, by
//! the server's shutdown, by its socket closing and by its keep alive; it
//! keeps its place under `max_connections`. Time is tokio's paused clock.

mod common;

use std::time::Duration;

use tokio::time::Instant;

use common::*;
use mqtt_broker::{BrokerHandle, Config};
use mqtt_codec::{Connect, LastWill, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

const PARK_MS: u64 = 100;

/// A QoS 0 PUBLISH, as sent and as received.
fn q0<'a>(topic: &'a str, payload: &'a [u8]) -> Packet<'a> {
    Packet::Publish(publish(topic, payload, QoS::AtMostOnce, 0, false))
}

fn parking() -> Config {
    Config {
        park_idle_ms: PARK_MS,
        ..Config::ephemeral()
    }
}

/// Waits until exactly `n` connections are parked.
async fn parked(broker: &BrokerHandle, n: u64) {
    eventually(&format!("{n} connections parked"), || {
        broker.stats().connections_parked.get() == n
    })
    .await;
}

/// A message published to a parked subscriber reaches it, at QoS 0 and at
/// QoS 1 (with its PUBACK read by the resumed connection), and the
/// subscriber parks again afterwards.
#[tokio::test(start_paused = true)]
async fn a_parked_subscriber_receives_messages() {
    let broker = broker_with(parking()).await;
    let addr = broker.local_addr();
    for version in V3_AND_V5 {
        let mut sub = RawClient::connect(addr, version, "sub").await;
        sub.subscribe(1, "park/t", QoS::AtLeastOnce).await;
        parked(&broker, 1).await;
        let mut publisher = RawClient::connect(addr, version, "pub").await;
        publisher.send(&q0("park/t", b"q0")).await;
        sub.expect(&q0("park/t", b"q0")).await;
        // Both idle again: both parked.
        parked(&broker, 2).await;
        publisher
            .send(&Packet::Publish(publish(
                "park/t",
                b"q1",
                QoS::AtLeastOnce,
                7,
                false,
            )))
            .await;
        publisher.expect(&Packet::PubAck(ack(7))).await;
        sub.expect(&Packet::Publish(publish(
            "park/t",
            b"q1",
            QoS::AtLeastOnce,
            1,
            false,
        )))
        .await;
        parked(&broker, 2).await;
        // The PUBACK wakes the subscriber; nothing is sent again.
        sub.send(&Packet::PubAck(ack(1))).await;
        sub.expect_nothing_pending().await;
        sub.disconnect_and_wait().await;
        publisher.disconnect_and_wait().await;
        parked(&broker, 0).await;
    }
    broker.shutdown().await;
}

/// A parked connection answers PINGREQ, and its keep alive still holds:
/// one that keeps pinging stays, one that goes silent is closed 1.5 keep
/// alives after its last packet (5.0: DISCONNECT 0x8D first).
#[tokio::test(start_paused = true)]
async fn keep_alive_holds_while_parked() {
    let broker = broker_with(parking()).await;
    let addr = broker.local_addr();
    for version in V3_AND_V5 {
        let mut connect = connect_packet(version, "pinger", true);
        connect.keep_alive = 1;
        let mut pinger = RawClient::connect_with(addr, connect).await;
        let mut connect = connect_packet(version, "silent", true);
        connect.keep_alive = 1;
        let start = Instant::now();
        let mut silent = RawClient::connect_with(addr, connect).await;
        parked(&broker, 2).await;
        // 2 s of pings, longer than the 1.5 s the broker allows between
        // packets, while the silent one is watched.
        let pinging = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                pinger.expect_nothing_pending().await;
            }
            pinger
        });
        silent
            .expect_closed_with(ReasonCode::KeepAliveTimeout)
            .await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1400) && waited < Duration::from_millis(1700),
            "{version:?}: closed after {waited:?}"
        );
        pinging.await.unwrap().disconnect_and_wait().await;
    }
    broker.shutdown().await;
}

/// A new connection with the client id of a parked one takes the session
/// over: the parked one is closed (5.0: DISCONNECT 0x8E), the new one finds
/// the session and its subscription.
#[tokio::test(start_paused = true)]
async fn a_parked_connection_is_taken_over() {
    let broker = broker_with(parking()).await;
    let addr = broker.local_addr();
    for version in V3_AND_V5 {
        let mut old = RawClient::connect_with(addr, connect_packet(version, "same", false)).await;
        old.subscribe(1, "take/t", QoS::AtLeastOnce).await;
        parked(&broker, 1).await;
        let mut new =
            RawClient::connect_session(addr, connect_packet(version, "same", false), true).await;
        old.expect_closed_with(ReasonCode::SessionTakenOver).await;
        let mut publisher = RawClient::connect(addr, version, "pub").await;
        publisher.send(&q0("take/t", b"x")).await;
        new.expect(&q0("take/t", b"x")).await;
        // Clean up the session for the next version.
        new.disconnect_and_wait().await;
        RawClient::connect(addr, version, "same")
            .await
            .disconnect_and_wait()
            .await;
        publisher.disconnect_and_wait().await;
    }
    broker.shutdown().await;
}

/// A parked client whose network connection drops has its will published.
#[tokio::test(start_paused = true)]
async fn a_parked_connection_that_drops_publishes_its_will() {
    let broker = broker_with(parking()).await;
    let addr = broker.local_addr();
    for version in V3_AND_V5 {
        let mut watcher = RawClient::connect(addr, version, "watcher").await;
        watcher.subscribe(1, "will/#", QoS::AtMostOnce).await;
        let connect = Connect {
            will: Some(LastWill {
                topic: "will/w",
                payload: b"gone",
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Properties::EMPTY,
            }),
            ..connect_packet(version, "w", true)
        };
        let w = RawClient::connect_with(addr, connect).await;
        parked(&broker, 2).await;
        drop(w);
        watcher.expect(&q0("will/w", b"gone")).await;
        watcher.disconnect_and_wait().await;
        parked(&broker, 0).await;
    }
    broker.shutdown().await;
}

/// Shutting down closes parked connections too (5.0: DISCONNECT 0x8B), and
/// waits for them.
#[tokio::test(start_paused = true)]
async fn shutdown_closes_parked_connections() {
    let broker = broker_with(parking()).await;
    let addr = broker.local_addr();
    let mut v3 = RawClient::connect(addr, ProtocolVersion::V3_1_1, "v3").await;
    let mut v5 = RawClient::connect(addr, ProtocolVersion::V5, "v5").await;
    parked(&broker, 2).await;
    let closing = tokio::spawn(broker.shutdown());
    v3.expect_closed_with(ReasonCode::ServerShuttingDown).await;
    v5.expect_closed_with(ReasonCode::ServerShuttingDown).await;
    tokio::time::timeout(TIMEOUT, closing)
        .await
        .expect("shutdown waits for parked connections, then ends")
        .unwrap();
}

/// A parked connection keeps its place under `max_connections`.
#[tokio::test(start_paused = true)]
async fn a_parked_connection_counts_towards_max_connections() {
    let broker = broker_with(Config {
        max_connections: 1,
        ..parking()
    })
    .await;
    let addr = broker.local_addr();
    let first = RawClient::connect(addr, ProtocolVersion::V5, "first").await;
    parked(&broker, 1).await;
    let mut second = RawClient::open(addr, ProtocolVersion::V5).await;
    second
        .send(&Packet::Connect(connect_packet(
            ProtocolVersion::V5,
            "second",
            true,
        )))
        .await;
    assert!(
        second.expect_close().await.is_empty(),
        "the second connection is closed without a CONNACK"
    );
    first.disconnect_and_wait().await;
    // Its place is free once it has gone.
    RawClient::connect(addr, ProtocolVersion::V5, "third")
        .await
        .disconnect_and_wait()
        .await;
    broker.shutdown().await;
}

/// `park_idle_ms = 0` keeps every connection a task; the default parks
/// after 100 ms of idleness, not before.
#[tokio::test(start_paused = true)]
async fn park_idle_ms_sets_when_connections_park() {
    let broker = broker_with(Config {
        park_idle_ms: 0,
        ..Config::ephemeral()
    })
    .await;
    let mut c = RawClient::connect(broker.local_addr(), ProtocolVersion::V5, "c").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.expect_nothing_pending().await;
    assert_eq!(broker.stats().connections_parked.get(), 0);
    broker.shutdown().await;

    let broker = common::broker().await;
    let mut c = RawClient::connect(broker.local_addr(), ProtocolVersion::V5, "c").await;
    let start = Instant::now();
    c.expect_nothing_pending().await;
    tokio::time::sleep(Duration::from_millis(90)).await;
    assert_eq!(broker.stats().connections_parked.get(), 0);
    parked(&broker, 1).await;
    assert!(start.elapsed() >= Duration::from_millis(100));
    c.expect_nothing_pending().await;
    broker.shutdown().await;
}
