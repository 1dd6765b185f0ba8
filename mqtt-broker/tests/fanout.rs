//! Fan-out: a message routed to several subscribers has the part of its
//! PUBLISH they share encoded once (`fanout.rs`). What each subscriber gets
//! must still be exactly its own packet: its protocol version, its QoS, its
//! RETAIN flag, its packet identifier, its Subscription Identifiers, its
//! topic alias, its Maximum Packet Size, and the Message Expiry Interval left
//! at delivery. Every test here has several subscribers on one topic, so the
//! shared encoding is what they receive.

mod common;

use common::*;
use mqtt_codec::{
    Packet, Property, ProtocolVersion, PubResp, Publish, QoS, RetainHandling, SubscriptionOptions,
};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V3_1_1;

fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: RetainHandling::SendOnSubscribe,
    }
}

/// Each subscriber of one message gets it in its own protocol version and
/// at the lower of the message's and its subscription's QoS
/// [MQTT-3.8.4-6 / MQTT-5: 3.8.4-8], with its own packet identifier; a 3.1.1
/// subscriber gets no properties.
#[tokio::test]
async fn each_subscriber_gets_its_version_and_qos() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut subs = Vec::new();
    for (i, (v, q)) in [
        (V3, QoS::AtMostOnce),
        (V5, QoS::AtMostOnce),
        (V3, QoS::AtLeastOnce),
        (V5, QoS::AtLeastOnce),
        (V3, QoS::ExactlyOnce),
        (V5, QoS::ExactlyOnce),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = RawClient::connect(addr, v, &format!("sub{i}")).await;
        s.subscribe(1, "fan/t", q).await;
        subs.push((s, q));
    }
    let props = [
        Property::ContentType("text/plain"),
        Property::UserProperty("k", "v"),
    ];
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    publisher
        .publish_flow(publish_props(
            "fan/t",
            b"hello",
            QoS::ExactlyOnce,
            9,
            false,
            &props,
        ))
        .await;
    for (s, q) in &mut subs {
        let no_props = [];
        let expect_props: &[Property<'_>] = if s.version == V5 { &props } else { &no_props };
        let pid = s
            .expect_publish(publish_props("fan/t", b"hello", *q, 1, false, expect_props))
            .await;
        assert_eq!(pid.is_some(), *q != QoS::AtMostOnce);
    }
    broker.shutdown().await;
}

/// RETAIN is set only towards the subscription that asked for Retain As
/// Published [MQTT-5: 3.3.1-12/13], when the same message goes to others too.
#[tokio::test]
async fn retain_as_published_per_subscriber() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut plain = RawClient::connect(addr, V5, "plain").await;
    plain
        .subscribe_opts(1, "fan/r", opts(QoS::AtMostOnce), None)
        .await;
    let mut rap = RawClient::connect(addr, V5, "rap").await;
    let rap_opts = SubscriptionOptions {
        retain_as_published: true,
        ..opts(QoS::AtMostOnce)
    };
    rap.subscribe_opts(1, "fan/r", rap_opts, None).await;
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    publisher
        .publish_flow(publish("fan/r", b"x", QoS::AtMostOnce, 0, true))
        .await;
    plain
        .expect_publish(publish("fan/r", b"x", QoS::AtMostOnce, 0, false))
        .await;
    rap.expect_publish(publish("fan/r", b"x", QoS::AtMostOnce, 0, true))
        .await;
    broker.shutdown().await;
}

/// A subscriber with a Subscription Identifier gets it, the others do not
/// [MQTT-5: 3.3.4-3].
#[tokio::test]
async fn subscription_identifier_only_to_its_subscriber() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut with_id = RawClient::connect(addr, V5, "with-id").await;
    with_id
        .subscribe_opts(1, "fan/s", opts(QoS::AtMostOnce), Some(42))
        .await;
    let mut without = RawClient::connect(addr, V5, "without").await;
    without
        .subscribe_opts(1, "fan/s", opts(QoS::AtMostOnce), None)
        .await;
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    publisher
        .publish_flow(publish("fan/s", b"x", QoS::AtMostOnce, 0, false))
        .await;
    with_id
        .expect_publish(publish_props(
            "fan/s",
            b"x",
            QoS::AtMostOnce,
            0,
            false,
            &[Property::SubscriptionIdentifier(42)],
        ))
        .await;
    without
        .expect_publish(publish("fan/s", b"x", QoS::AtMostOnce, 0, false))
        .await;
    broker.shutdown().await;
}

/// A subscriber that allows topic aliases gets one (the topic, then the
/// alias alone), the others get the topic every time [MQTT-5: 3.3.2-12].
#[tokio::test]
async fn topic_alias_only_to_its_subscriber() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut aliased =
        RawClient::connect_props(addr, V5, "aliased", true, &[Property::TopicAliasMaximum(4)])
            .await;
    aliased.subscribe(1, "fan/a", QoS::AtMostOnce).await;
    let mut plain = RawClient::connect(addr, V5, "plain").await;
    plain.subscribe(1, "fan/a", QoS::AtMostOnce).await;
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    for payload in [b"1", b"2"] {
        publisher
            .publish_flow(publish("fan/a", payload, QoS::AtMostOnce, 0, false))
            .await;
    }
    aliased
        .expect_publish(publish_props(
            "fan/a",
            b"1",
            QoS::AtMostOnce,
            0,
            false,
            &[Property::TopicAlias(1)],
        ))
        .await;
    aliased
        .expect_publish(publish_props(
            "",
            b"2",
            QoS::AtMostOnce,
            0,
            false,
            &[Property::TopicAlias(1)],
        ))
        .await;
    for payload in [b"1", b"2"] {
        plain
            .expect_publish(publish("fan/a", payload, QoS::AtMostOnce, 0, false))
            .await;
    }
    broker.shutdown().await;
}

/// A message larger than one subscriber's Maximum Packet Size is dropped for
/// that subscriber only, and counted [MQTT-5: 3.1.2-24]; the others get it.
#[tokio::test]
async fn too_large_for_one_subscriber_is_dropped_for_that_one_only() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut small =
        RawClient::connect_props(addr, V5, "small", true, &[Property::MaximumPacketSize(50)]).await;
    small.subscribe(1, "fan/m", QoS::AtLeastOnce).await;
    let mut big = RawClient::connect(addr, V5, "big").await;
    big.subscribe(1, "fan/m", QoS::AtLeastOnce).await;
    let mut v3 = RawClient::connect(addr, V3, "v3").await;
    v3.subscribe(1, "fan/m", QoS::AtMostOnce).await;
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    publisher
        .publish_flow(publish("fan/m", &[1u8; 100], QoS::AtLeastOnce, 1, false))
        .await;
    publisher
        .publish_flow(publish("fan/m", &[2u8; 10], QoS::AtLeastOnce, 2, false))
        .await;
    for payload in [&[1u8; 100][..], &[2u8; 10]] {
        let pid = big
            .expect_publish(publish("fan/m", payload, QoS::AtLeastOnce, 1, false))
            .await;
        big.send(&Packet::PubAck(PubResp::new(pid.unwrap()))).await;
        v3.expect_publish(publish("fan/m", payload, QoS::AtMostOnce, 0, false))
            .await;
    }
    let pid = small
        .expect_publish(publish("fan/m", &[2u8; 10], QoS::AtLeastOnce, 1, false))
        .await;
    small
        .send(&Packet::PubAck(PubResp::new(pid.unwrap())))
        .await;
    small.expect_nothing_pending().await;
    assert_eq!(broker.stats().dropped_too_large.get(), 1);
    broker.shutdown().await;
}

/// No Local keeps the message from its publisher's own subscription while
/// the other subscribers get it [MQTT-5: 3.8.3-3].
#[tokio::test]
async fn no_local_leaves_out_the_publisher_only() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    let no_local = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::AtMostOnce)
    };
    publisher.subscribe_opts(1, "fan/n", no_local, None).await;
    let mut others = Vec::new();
    for i in 0..3 {
        let mut s = RawClient::connect(addr, V5, &format!("sub{i}")).await;
        s.subscribe(1, "fan/n", QoS::AtMostOnce).await;
        others.push(s);
    }
    publisher
        .publish_flow(publish("fan/n", b"x", QoS::AtMostOnce, 0, false))
        .await;
    for s in &mut others {
        s.expect_publish(publish("fan/n", b"x", QoS::AtMostOnce, 0, false))
            .await;
    }
    publisher.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// A message with a Message Expiry Interval reaches every MQTT 5 subscriber
/// with the interval left at its delivery [MQTT-5: 3.3.2-6] (here, delivered
/// at once, all of it), and a 3.1.1 subscriber without it.
#[tokio::test]
async fn message_expiry_is_given_per_delivery() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut subs = Vec::new();
    for i in 0..2 {
        let mut s = RawClient::connect(addr, V5, &format!("sub{i}")).await;
        s.subscribe(1, "fan/e", QoS::AtMostOnce).await;
        subs.push(s);
    }
    let mut v3 = RawClient::connect(addr, V3, "v3").await;
    v3.subscribe(1, "fan/e", QoS::AtMostOnce).await;
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    let expiry = [Property::MessageExpiryInterval(3600)];
    publisher
        .publish_flow(publish_props(
            "fan/e",
            b"x",
            QoS::AtMostOnce,
            0,
            false,
            &expiry,
        ))
        .await;
    for s in &mut subs {
        let got = s.recv_publish().await;
        let p: Publish<'_> = got.publish();
        let left = p.properties.iter().find_map(|p| match p {
            Property::MessageExpiryInterval(v) => Some(v),
            _ => None,
        });
        // 3600 unless the delivery crossed a second boundary.
        assert!(matches!(left, Some(3599 | 3600)), "expiry left: {left:?}");
    }
    v3.expect_publish(publish("fan/e", b"x", QoS::AtMostOnce, 0, false))
        .await;
    broker.shutdown().await;
}
