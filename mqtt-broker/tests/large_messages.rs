//! Queue limits bound a backlog, never a single message: an empty queue
//! always takes the next message, whatever its size, so a message within
//! `max_packet_size` reaches an online subscriber that accepts its size
//! (issue 14). The packet size limits are what bound one message
//! [MQTT-3.1.2-24/25]. Runs for 3.1.1 and 5.0 over TCP.

mod common;

use std::net::SocketAddr;

use common::*;
use mqtt_broker::{Config, QueuePolicy};
use mqtt_codec::{Packet, Property, ProtocolVersion, PubResp, QoS, ReasonCode};

/// Connects `id` with a session that outlives the connection.
async fn persistent(addr: SocketAddr, v: ProtocolVersion, id: &str) -> RawClient {
    let props: &[Property<'_>] = if v.is_v5() {
        &[Property::SessionExpiryInterval(300)]
    } else {
        &[]
    };
    RawClient::connect_props(addr, v, id, false, props).await
}

/// Publishes each payload to `t` at QoS 1 and checks every one is accepted.
async fn publish_all(addr: SocketAddr, v: ProtocolVersion, payloads: &[&[u8]]) {
    let mut publisher = RawClient::connect(addr, v, "pub").await;
    for (i, p) in payloads.iter().enumerate() {
        let reason = publisher
            .publish_flow(publish("t", p, QoS::AtLeastOnce, i as u16 + 1, false))
            .await;
        assert_eq!(reason, ReasonCode::Success, "message {i}");
    }
    publisher.disconnect().await;
}

/// Reconnects the offline subscriber "sub" and checks it receives exactly
/// `payloads`, in order.
async fn expect_queued(addr: SocketAddr, v: ProtocolVersion, payloads: &[&[u8]]) {
    let mut sub = persistent(addr, v, "sub").await;
    for p in payloads {
        let pid = sub
            .expect_publish(publish("t", p, QoS::AtLeastOnce, 1, false))
            .await;
        sub.send(&Packet::PubAck(PubResp::new(pid.expect("QoS 1 has a pid"))))
            .await;
    }
    sub.expect_nothing_pending().await;
}

/// A message bigger than `max_queued_bytes` is queued when the queue is
/// empty; the next one, which would make a backlog over the limit, is
/// dropped and counted.
#[tokio::test]
async fn empty_queue_takes_a_message_larger_than_the_byte_limit() {
    for v in V3_AND_V5 {
        let broker = broker_with(Config {
            max_queued_bytes: 10,
            ..Config::ephemeral()
        })
        .await;
        let addr = broker.local_addr();
        let mut sub = persistent(addr, v, "sub").await;
        sub.subscribe(1, "t", QoS::AtLeastOnce).await;
        sub.disconnect().await;
        let big = vec![7u8; 1000];
        publish_all(addr, v, &[&big, b"x"]).await;
        assert_eq!(broker.stats().dropped_queue_full.get(), 1);
        expect_queued(addr, v, &[&big]).await;
        broker.shutdown().await;
    }
}

/// With `drop_oldest`, a large message empties the queue to fit and is then
/// taken by the empty queue; every message dropped for it is counted.
#[tokio::test]
async fn drop_oldest_makes_room_down_to_an_empty_queue() {
    for v in V3_AND_V5 {
        let broker = broker_with(Config {
            max_queued_bytes: 10,
            queue_policy: QueuePolicy::DropOldest,
            ..Config::ephemeral()
        })
        .await;
        let addr = broker.local_addr();
        let mut sub = persistent(addr, v, "sub").await;
        sub.subscribe(1, "t", QoS::AtLeastOnce).await;
        sub.disconnect().await;
        let big = vec![9u8; 500];
        publish_all(addr, v, &[b"a", b"b", b"c", &big]).await;
        assert_eq!(broker.stats().dropped_queue_full.get(), 3);
        expect_queued(addr, v, &[&big]).await;
        broker.shutdown().await;
    }
}

/// With the default configuration (64 MiB `max_queued_bytes`), a 70 MiB
/// message reaches a connected subscriber byte for byte; nothing is dropped.
#[tokio::test]
async fn message_over_the_default_queue_limit_reaches_an_online_subscriber() {
    let broker = broker().await;
    assert!(Config::default().max_queued_bytes < 70 << 20);
    let addr = broker.local_addr();
    let v = ProtocolVersion::V5;
    let mut sub = RawClient::connect(addr, v, "sub").await;
    sub.subscribe(1, "big", QoS::AtLeastOnce).await;
    let payload: Vec<u8> = (0..70u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    let mut publisher = RawClient::connect(addr, v, "pub").await;
    publisher
        .send(&Packet::Publish(publish(
            "big",
            &payload,
            QoS::AtLeastOnce,
            1,
            false,
        )))
        .await;
    let got = sub.recv().await;
    match got.packet() {
        Packet::Publish(p) => {
            assert_eq!(p.topic, "big");
            assert!(p.payload == payload.as_slice(), "payload differs");
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    assert_eq!(broker.stats().dropped_total(), 0);
    broker.shutdown().await;
}

/// A payload of `n` bytes that differs from any other length's.
fn payload_of(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + n) as u8).collect()
}

/// Large payloads are written from the message rather than copied into the
/// write buffer (`splice.rs`); the bytes on the wire are the same: a mix
/// of large and small messages, QoS 0 and 1, with MQTT 5 topic aliases,
/// arrives complete and in order [MQTT-4.6.0-5].
#[tokio::test]
async fn large_and_small_messages_arrive_whole_and_in_order() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let props: &[Property<'_>] = if v.is_v5() {
            &[Property::TopicAliasMaximum(5)]
        } else {
            &[]
        };
        let mut sub = RawClient::connect_props(addr, v, "sub", true, props).await;
        sub.subscribe(1, "t", QoS::AtLeastOnce).await;
        let sizes = [300_000, 10, 65_536, 70_000, 0, 1 << 20, 5];
        let mut publisher = RawClient::connect(addr, v, "pub").await;
        for (i, n) in sizes.iter().enumerate() {
            let qos = if i % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            let p = payload_of(*n);
            publisher
                .send(&Packet::Publish(publish("t", &p, qos, i as u16 + 1, false)))
                .await;
        }
        for (i, n) in sizes.iter().enumerate() {
            let got = sub.recv().await;
            let Packet::Publish(p) = got.packet() else {
                panic!("expected PUBLISH {i}, got {:?}", got.packet());
            };
            assert_eq!(p.payload.len(), *n, "message {i}");
            assert!(
                p.payload == payload_of(*n).as_slice(),
                "message {i} differs"
            );
            if let Some(pid) = p.qos_pid.pid() {
                sub.send(&Packet::PubAck(PubResp::new(pid))).await;
            }
        }
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// A large message over the receiving client's Maximum Packet Size is
/// dropped and counted, and the messages around it still arrive
/// [MQTT-3.1.2-25].
#[tokio::test]
async fn large_message_over_the_client_maximum_packet_size_is_dropped() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let v = ProtocolVersion::V5;
    let mut sub = RawClient::connect_props(
        addr,
        v,
        "sub",
        true,
        &[Property::MaximumPacketSize(100_000)],
    )
    .await;
    sub.subscribe(1, "t", QoS::AtMostOnce).await;
    let fits = payload_of(90_000);
    let too_big = payload_of(100_000);
    let mut publisher = RawClient::connect(addr, v, "pub").await;
    for (i, p) in [&fits, &too_big, &fits].iter().enumerate() {
        publisher
            .send(&Packet::Publish(publish(
                "t",
                p,
                QoS::AtMostOnce,
                i as u16 + 1,
                false,
            )))
            .await;
    }
    for _ in 0..2 {
        let got = sub.recv().await;
        let Packet::Publish(p) = got.packet() else {
            panic!("expected PUBLISH, got {:?}", got.packet());
        };
        assert!(p.payload == fits.as_slice());
    }
    sub.expect_nothing_pending().await;
    assert_eq!(broker.stats().dropped_too_large.get(), 1);
    broker.shutdown().await;
}
