//! Per-session queue limits over TCP: a persistent session whose client is
//! offline queues at most `max_queued_messages` messages (and
//! `max_queued_bytes` bytes); what does not fit is dropped by the configured
//! policy and counted, never lost silently. QoS 0 messages are queued for an
//! offline session only when configured. Runs for 3.1.1 and 5.0.

mod common;

use std::net::SocketAddr;

use common::*;
use mqtt_broker::{BrokerHandle, Config, QueuePolicy};
use mqtt_codec::{
    LastWill, Packet, Properties, Property, ProtocolVersion, PubResp, QoS, ReasonCode,
};

/// Connects `id` with a session that outlives the connection: Clean Session
/// 0 in 3.1.1, Session Expiry Interval 300 in 5.0.
async fn persistent(
    addr: SocketAddr,
    v: ProtocolVersion,
    id: &str,
    clean_start: bool,
) -> RawClient {
    let props: &[Property<'_>] = if v.is_v5() {
        &[Property::SessionExpiryInterval(300)]
    } else {
        &[]
    };
    RawClient::connect_props(addr, v, id, clean_start, props).await
}

/// Subscribes a persistent session to `t` at `qos`, then takes it offline.
async fn offline_subscriber(addr: SocketAddr, v: ProtocolVersion, qos: QoS) {
    let mut sub = persistent(addr, v, "sub", false).await;
    sub.subscribe(1, "t", qos).await;
    sub.disconnect().await;
}

/// Publishes one-byte payloads `0..n` to `t` at `qos` and completes each flow;
/// every one is accepted, whether or not it fits the subscriber's queue.
async fn publish_numbered(addr: SocketAddr, v: ProtocolVersion, qos: QoS, n: u8) {
    let mut publisher = RawClient::connect(addr, v, "pub").await;
    for i in 0..n {
        let reason = publisher
            .publish_flow(publish("t", &[i], qos, u16::from(i) + 1, false))
            .await;
        assert_eq!(reason, ReasonCode::Success, "message {i}");
    }
    // Packets are handled in order: once PINGRESP is back, every PUBLISH
    // (QoS 0 too) has been routed.
    publisher.expect_nothing_pending().await;
    publisher.disconnect().await;
}

/// Reconnects the offline subscriber and checks it receives exactly
/// `payloads`, in order, at `qos`, and nothing else.
async fn expect_queued(addr: SocketAddr, v: ProtocolVersion, qos: QoS, payloads: &[u8]) {
    let mut sub = persistent(addr, v, "sub", false).await;
    for &n in payloads {
        let pid = sub.expect_publish(publish("t", &[n], qos, 1, false)).await;
        if let Some(pid) = pid {
            sub.send(&Packet::PubAck(PubResp::new(pid))).await;
        }
    }
    sub.expect_nothing_pending().await;
}

async fn broker_with_queue(max_queued_messages: usize, queue_policy: QueuePolicy) -> BrokerHandle {
    broker_with(Config {
        max_queued_messages,
        queue_policy,
        ..Config::ephemeral()
    })
    .await
}

/// With the default policy, messages beyond `max_queued_messages` for an
/// offline session are dropped and counted: exactly the first five of eight
/// arrive on reconnection.
#[tokio::test]
async fn full_queue_drops_new_messages_and_counts_them() {
    for v in V3_AND_V5 {
        let broker = broker_with_queue(5, QueuePolicy::DropNew).await;
        let addr = broker.local_addr();
        offline_subscriber(addr, v, QoS::AtLeastOnce).await;
        publish_numbered(addr, v, QoS::AtLeastOnce, 8).await;
        assert_eq!(broker.stats().dropped_queue_full.get(), 3);
        expect_queued(addr, v, QoS::AtLeastOnce, &[0, 1, 2, 3, 4]).await;
        broker.shutdown().await;
    }
}

/// With `QueuePolicy::DropOldest`, the oldest queued messages make room: the
/// newest five of eight arrive on reconnection, and three drops are counted.
#[tokio::test]
async fn full_queue_with_drop_oldest_keeps_the_newest() {
    for v in V3_AND_V5 {
        let broker = broker_with_queue(5, QueuePolicy::DropOldest).await;
        let addr = broker.local_addr();
        offline_subscriber(addr, v, QoS::AtLeastOnce).await;
        publish_numbered(addr, v, QoS::AtLeastOnce, 8).await;
        assert_eq!(broker.stats().dropped_queue_full.get(), 3);
        expect_queued(addr, v, QoS::AtLeastOnce, &[3, 4, 5, 6, 7]).await;
        broker.shutdown().await;
    }
}

/// `max_queued_bytes` limits the queue by size too (topic and payload bytes).
#[tokio::test]
async fn queue_byte_limit_drops_and_counts() {
    for v in V3_AND_V5 {
        let broker = broker_with(Config {
            // Each message counts 2 bytes ("t" and one payload byte).
            max_queued_bytes: 6,
            ..Config::ephemeral()
        })
        .await;
        let addr = broker.local_addr();
        offline_subscriber(addr, v, QoS::AtLeastOnce).await;
        publish_numbered(addr, v, QoS::AtLeastOnce, 5).await;
        assert_eq!(broker.stats().dropped_queue_full.get(), 2);
        expect_queued(addr, v, QoS::AtLeastOnce, &[0, 1, 2]).await;
        broker.shutdown().await;
    }
}

/// Like `offline_subscriber`, but the connection drops without DISCONNECT
/// and this returns only once the will has been published, which the broker
/// does after it has marked the session offline: what is published next
/// meets an offline session for sure.
async fn offline_subscriber_confirmed(addr: SocketAddr, v: ProtocolVersion, qos: QoS) {
    let mut watcher = RawClient::connect(addr, v, "watcher").await;
    watcher.subscribe(1, "gone", QoS::AtMostOnce).await;
    let mut connect = connect_packet(v, "sub", false);
    if v.is_v5() {
        connect.properties = Properties::from_slice(&[Property::SessionExpiryInterval(300)]);
    }
    connect.will = Some(LastWill {
        topic: "gone",
        payload: b"sub",
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::EMPTY,
    });
    let mut sub = RawClient::connect_with(addr, connect).await;
    sub.subscribe(1, "t", qos).await;
    drop(sub);
    watcher
        .expect_publish(publish("gone", b"sub", QoS::AtMostOnce, 0, false))
        .await;
    watcher.disconnect().await;
}

/// QoS 0 messages are not queued for an offline session unless
/// `queue_qos0_messages` is set (as in Mosquitto); the ones left out are
/// counted.
#[tokio::test]
async fn qos0_messages_for_offline_sessions_are_queued_only_when_configured() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        offline_subscriber_confirmed(addr, v, QoS::AtMostOnce).await;
        publish_numbered(addr, v, QoS::AtMostOnce, 3).await;
        assert_eq!(broker.stats().dropped_offline_qos0.get(), 3);
        expect_queued(addr, v, QoS::AtMostOnce, &[]).await;
        broker.shutdown().await;

        let broker = broker_with(Config {
            queue_qos0_messages: true,
            ..Config::ephemeral()
        })
        .await;
        let addr = broker.local_addr();
        offline_subscriber_confirmed(addr, v, QoS::AtMostOnce).await;
        publish_numbered(addr, v, QoS::AtMostOnce, 3).await;
        expect_queued(addr, v, QoS::AtMostOnce, &[0, 1, 2]).await;
        assert_eq!(broker.stats().dropped_offline_qos0.get(), 0);
        broker.shutdown().await;
    }
}

/// A burst of QoS 0 messages in one write reaches an offline session's
/// queue together (one publisher read, `RouteCache::held`); the queue
/// limit still applies message by message, with each policy, and every
/// message left out is counted.
#[tokio::test]
async fn a_burst_of_qos0_messages_meets_the_queue_limit_one_by_one() {
    for (policy, kept) in [
        (QueuePolicy::DropNew, [0u8, 1, 2, 3, 4]),
        (QueuePolicy::DropOldest, [15u8, 16, 17, 18, 19]),
    ] {
        for v in V3_AND_V5 {
            let broker = broker_with(Config {
                max_queued_messages: 5,
                queue_policy: policy,
                queue_qos0_messages: true,
                ..Config::ephemeral()
            })
            .await;
            let addr = broker.local_addr();
            offline_subscriber_confirmed(addr, v, QoS::AtMostOnce).await;
            let mut publisher = RawClient::connect(addr, v, "pub").await;
            let payloads: Vec<[u8; 1]> = (0..20u8).map(|i| [i]).collect();
            let burst: Vec<Packet<'_>> = payloads
                .iter()
                .map(|p| Packet::Publish(publish("t", p, QoS::AtMostOnce, 0, false)))
                .collect();
            publisher.send_burst(&burst).await;
            // Handled in order: once PINGRESP is back, the burst is queued.
            publisher.expect_nothing_pending().await;
            publisher.disconnect().await;
            assert_eq!(
                broker.stats().dropped_queue_full.get(),
                15,
                "{policy:?} {v:?}"
            );
            expect_queued(addr, v, QoS::AtMostOnce, &kept).await;
            broker.shutdown().await;
        }
    }
}
