//! A connection remembers where its last topic's messages went, and reuses
//! that while the subscriptions are unchanged. These tests publish the same
//! topic again and again from one connection while subscriptions change
//! under it: every change must take effect from the next message on.

mod common;

use common::*;
use mqtt_codec::{Packet, ProtocolVersion, QoS, ReasonCode, UnsubAck};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// A subscription made after a topic was first published to
/// receives the next message; after UNSUBSCRIBE it receives none, and an
/// MQTT 5 publisher is told No matching subscribers (0x10) again.
#[tokio::test]
async fn subscribe_and_unsubscribe_take_effect_between_two_publishes() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    let msg = |pid| publish("room/temp", b"21", QoS::AtLeastOnce, pid, false);

    assert_eq!(
        publisher.publish_flow(msg(1)).await,
        ReasonCode::NoMatchingSubscribers
    );

    let mut sub = RawClient::connect(addr, V5, "sub").await;
    sub.subscribe(1, "room/+", QoS::AtLeastOnce).await;
    assert_eq!(publisher.publish_flow(msg(2)).await, ReasonCode::Success);
    let pid = sub.expect_publish(msg(1)).await.unwrap();
    sub.send(&Packet::PubAck(ack(pid.get()))).await;

    // A second, overlapping subscription of the same session: still one
    // copy [MQTT-5: 3.3.4-2].
    sub.subscribe(2, "room/temp", QoS::AtLeastOnce).await;
    assert_eq!(publisher.publish_flow(msg(3)).await, ReasonCode::Success);
    let pid = sub.expect_publish(msg(1)).await.unwrap();
    sub.send(&Packet::PubAck(ack(pid.get()))).await;
    sub.expect_nothing_pending().await;

    sub.send(&Packet::Unsubscribe(unsubscribe(
        3,
        &["room/+", "room/temp"],
    )))
    .await;
    sub.expect_exact(&Packet::UnsubAck(UnsubAck {
        pid: pid_(3),
        properties: mqtt_codec::Properties::EMPTY,
        codes: mqtt_codec::List::from_slice(&[ReasonCode::Success, ReasonCode::Success]),
    }))
    .await;
    assert_eq!(
        publisher.publish_flow(msg(4)).await,
        ReasonCode::NoMatchingSubscribers
    );
    sub.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// A session that ends (clean session, disconnect) is not delivered to,
/// and a new connection with the same client id gets the messages once it
/// subscribes again.
#[tokio::test]
async fn an_ended_session_is_not_delivered_to() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    let msg = |pid| publish("t", b"x", QoS::AtLeastOnce, pid, false);

    let mut sub = RawClient::connect(addr, ProtocolVersion::V3_1_1, "sub").await;
    sub.subscribe(1, "t", QoS::AtMostOnce).await;
    assert_eq!(publisher.publish_flow(msg(1)).await, ReasonCode::Success);
    sub.recv_publish().await;
    sub.disconnect_and_wait().await;

    assert_eq!(
        publisher.publish_flow(msg(2)).await,
        ReasonCode::NoMatchingSubscribers
    );

    let mut again = RawClient::connect(addr, ProtocolVersion::V3_1_1, "sub").await;
    again.subscribe(1, "t", QoS::AtMostOnce).await;
    assert_eq!(publisher.publish_flow(msg(3)).await, ReasonCode::Success);
    again.recv_publish().await;
    again.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// A shared subscription's member is chosen per message (round robin), so
/// repeated publishes to one topic alternate between the members.
#[tokio::test]
async fn shared_subscription_members_alternate_for_one_publisher() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut a = RawClient::connect(addr, V5, "a").await;
    let mut b = RawClient::connect(addr, V5, "b").await;
    a.subscribe(1, "$share/g/t", QoS::AtMostOnce).await;
    b.subscribe(1, "$share/g/t", QoS::AtMostOnce).await;
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    for i in 1..=6 {
        publisher
            .publish_flow(publish("t", b"x", QoS::AtLeastOnce, i, false))
            .await;
    }
    for c in [&mut a, &mut b] {
        for _ in 0..3 {
            c.recv_publish().await;
        }
        c.expect_nothing_pending().await;
    }
    broker.shutdown().await;
}
