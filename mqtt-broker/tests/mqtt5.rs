//! MQTT 5 message features over TCP (5.0 sections 3.3.2, 3.3.4, 3.8.3 and
//! 4.9): message expiry, No Local, Subscription Identifiers, topic aliases in
//! both directions, the client's Receive Maximum and Maximum Packet Size,
//! properties passed through, the Payload Format Indicator, and PUBACK
//! reason codes.

mod common;

use std::time::Duration;

use common::*;
use mqtt_broker::Config;
use mqtt_codec::{
    ConnAck, Packet, Property, ProtocolVersion, PubResp, Publish, QoS, ReasonCode,
    SubscriptionOptions,
};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Connects a 5.0 client whose session outlives the connection by 300 s.
async fn persistent(addr: std::net::SocketAddr, id: &str, clean_start: bool) -> RawClient {
    RawClient::connect_props(
        addr,
        V5,
        id,
        clean_start,
        &[Property::SessionExpiryInterval(300)],
    )
    .await
}

/// The Message Expiry Interval forwarded is what is left of it, not the
/// original [MQTT-5: 3.3.2-6]: 60 straight away to an online subscriber, at most
/// 59 after the message waited more than a second for an offline one.
#[tokio::test(start_paused = true)]
async fn message_expiry_is_forwarded_as_the_remaining_interval() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut online = RawClient::connect(addr, V5, "online").await;
    online.subscribe(1, "t", QoS::AtLeastOnce).await;
    let mut offline = persistent(addr, "offline", true).await;
    offline.subscribe(1, "t", QoS::AtLeastOnce).await;
    offline.disconnect().await;

    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    let expiry = [Property::MessageExpiryInterval(60)];
    let reason = publisher
        .publish_flow(publish_props(
            "t",
            b"m",
            QoS::AtLeastOnce,
            1,
            false,
            &expiry,
        ))
        .await;
    assert_eq!(reason, ReasonCode::Success);
    let pid = online
        .expect_publish(publish_props(
            "t",
            b"m",
            QoS::AtLeastOnce,
            1,
            false,
            &expiry,
        ))
        .await;
    online
        .send(&Packet::PubAck(PubResp::new(pid.unwrap())))
        .await;

    // Let part of the interval the rule is about pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut back = persistent(addr, "offline", false).await;
    let got = back.recv_publish().await;
    let p = got.publish();
    assert_eq!((p.topic, p.payload), ("t", &b"m"[..]));
    let left = match p
        .properties
        .get(mqtt_codec::PropertyId::MessageExpiryInterval)
    {
        Some(Property::MessageExpiryInterval(s)) => s,
        other => panic!("no Message Expiry Interval: {other:?} in {got:?}"),
    };
    assert!((50..=59).contains(&left), "forwarded expiry {left}");
    back.ack_delivery(&p).await;
    back.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// A queued message whose Message Expiry Interval runs out while its
/// subscriber is offline is not delivered [MQTT-5: 3.3.2-5], and is counted.
#[tokio::test(start_paused = true)]
async fn expired_queued_message_is_not_delivered() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut sub = persistent(addr, "sub", true).await;
    sub.subscribe(1, "t", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    let expiry = [Property::MessageExpiryInterval(1)];
    publisher
        .publish_flow(publish_props(
            "t",
            b"short",
            QoS::AtLeastOnce,
            1,
            false,
            &expiry,
        ))
        .await;
    publisher
        .publish_flow(publish("t", b"forever", QoS::AtLeastOnce, 2, false))
        .await;
    // Let the interval the rule is about run out.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let mut sub = persistent(addr, "sub", false).await;
    let pid = sub
        .expect_publish(publish("t", b"forever", QoS::AtLeastOnce, 1, false))
        .await;
    sub.send(&Packet::PubAck(PubResp::new(pid.unwrap()))).await;
    sub.expect_nothing_pending().await;
    assert_eq!(broker.stats().dropped_expired.get(), 1);
    broker.shutdown().await;
}

/// No Local: a client's own messages are not sent back to it on that
/// subscription [MQTT-5: 3.8.3-3]; other clients' messages are, and other
/// clients get its messages.
#[tokio::test]
async fn no_local_does_not_deliver_own_messages() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut me = RawClient::connect(addr, V5, "me").await;
    let no_local = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::qos(QoS::AtMostOnce)
    };
    me.subscribe_opts(1, "t", no_local, None).await;
    let mut other = RawClient::connect(addr, V5, "other").await;
    other.subscribe(1, "t", QoS::AtMostOnce).await;

    me.publish_flow(publish("t", b"mine", QoS::AtMostOnce, 0, false))
        .await;
    other
        .expect_publish(publish("t", b"mine", QoS::AtMostOnce, 0, false))
        .await;
    me.expect_nothing_pending().await;

    other
        .publish_flow(publish("t", b"theirs", QoS::AtMostOnce, 0, false))
        .await;
    me.expect_publish(publish("t", b"theirs", QoS::AtMostOnce, 0, false))
        .await;
    other
        .expect_publish(publish("t", b"theirs", QoS::AtMostOnce, 0, false))
        .await;
    me.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// A PUBLISH delivered through a subscription made with a Subscription
/// Identifier carries it [MQTT-5: 3.3.4-3], up to the largest value 268,435,455;
/// one made without has none.
#[tokio::test]
async fn subscription_identifier_is_delivered() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut sub = RawClient::connect(addr, V5, "sub").await;
    sub.subscribe_opts(1, "a", SubscriptionOptions::qos(QoS::AtMostOnce), Some(1))
        .await;
    sub.subscribe_opts(
        2,
        "b",
        SubscriptionOptions::qos(QoS::AtMostOnce),
        Some(268_435_455),
    )
    .await;
    sub.subscribe_opts(3, "c", SubscriptionOptions::qos(QoS::AtMostOnce), None)
        .await;
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    for topic in ["a", "b", "c"] {
        publisher
            .publish_flow(publish(topic, b"x", QoS::AtMostOnce, 0, false))
            .await;
    }
    let one = [Property::SubscriptionIdentifier(1)];
    let max = [Property::SubscriptionIdentifier(268_435_455)];
    sub.expect_publish(publish_props("a", b"x", QoS::AtMostOnce, 0, false, &one))
        .await;
    sub.expect_publish(publish_props("b", b"x", QoS::AtMostOnce, 0, false, &max))
        .await;
    sub.expect_publish(publish("c", b"x", QoS::AtMostOnce, 0, false))
        .await;
    sub.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// A client may not send a Subscription Identifier in PUBLISH
/// [MQTT-5: 3.3.4-6]: DISCONNECT 0x82 Protocol Error.
#[tokio::test]
async fn subscription_identifier_from_a_client_is_a_protocol_error() {
    let broker = broker().await;
    let mut c = RawClient::connect(broker.local_addr(), V5, "c").await;
    let props = [Property::SubscriptionIdentifier(3)];
    c.send(&Packet::Publish(publish_props(
        "t",
        b"x",
        QoS::AtMostOnce,
        0,
        false,
        &props,
    )))
    .await;
    c.expect_disconnect(ReasonCode::ProtocolError).await;
    c.expect_close().await;
    broker.shutdown().await;
}

/// A topic alias set by the client (topic and alias), then used alone
/// (empty topic and alias): both messages reach subscribers with the full
/// topic [MQTT-5: 3.3.2-10..12]; the alias can be remapped.
#[tokio::test]
async fn topic_alias_from_client_is_resolved() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut sub5 = RawClient::connect(addr, V5, "sub5").await;
    sub5.subscribe(1, "t/#", QoS::AtMostOnce).await;
    let mut sub3 = RawClient::connect(addr, ProtocolVersion::V3_1_1, "sub3").await;
    sub3.subscribe(1, "t/#", QoS::AtMostOnce).await;
    let mut publisher = RawClient::connect(addr, V5, "pub").await;

    let alias = [Property::TopicAlias(1)];
    publisher
        .publish_flow(publish_props(
            "t/a",
            b"1",
            QoS::AtMostOnce,
            0,
            false,
            &alias,
        ))
        .await;
    publisher
        .publish_flow(publish_props("", b"2", QoS::AtLeastOnce, 1, false, &alias))
        .await;
    publisher
        .publish_flow(publish_props(
            "t/b",
            b"3",
            QoS::AtMostOnce,
            0,
            false,
            &alias,
        ))
        .await;
    publisher
        .publish_flow(publish_props("", b"4", QoS::AtMostOnce, 0, false, &alias))
        .await;
    for sub in [&mut sub5, &mut sub3] {
        for (topic, payload) in [("t/a", b"1"), ("t/a", b"2"), ("t/b", b"3"), ("t/b", b"4")] {
            sub.expect_publish(publish(topic, payload, QoS::AtMostOnce, 0, false))
                .await;
        }
        sub.expect_nothing_pending().await;
    }
    broker.shutdown().await;
}

/// A topic alias above the Topic Alias Maximum the broker announced is
/// answered with DISCONNECT 0x94 Topic Alias invalid [MQTT-5: 3.3.2-9]; with a
/// maximum of 0, any alias is.
#[tokio::test]
async fn topic_alias_above_the_maximum_is_disconnected() {
    for max in [5u16, 0] {
        let broker = broker_with(Config {
            topic_alias_maximum: max,
            ..Config::ephemeral()
        })
        .await;
        let mut c = RawClient::open(broker.local_addr(), V5).await;
        c.send(&Packet::Connect(connect_packet(V5, "c", true)))
            .await;
        let announced: &[Property<'_>] = if max > 0 {
            &[Property::TopicAliasMaximum(5)]
        } else {
            &[]
        };
        c.expect_exact(&Packet::ConnAck(ConnAck {
            properties: mqtt_codec::Properties::from_slice(
                &[
                    &[Property::ReceiveMaximum(Config::default().receive_maximum)][..],
                    announced,
                ]
                .concat(),
            ),
            ..connack(false)
        }))
        .await;
        let alias = [Property::TopicAlias(max + 1)];
        c.send(&Packet::Publish(publish_props(
            "t",
            b"x",
            QoS::AtMostOnce,
            0,
            false,
            &alias,
        )))
        .await;
        c.expect_disconnect(ReasonCode::TopicAliasInvalid).await;
        c.expect_close().await;
        broker.shutdown().await;
    }
}

/// An empty topic with an alias the client never set is a Protocol Error
/// (5.0 section 3.3.2.3.4): DISCONNECT 0x82.
#[tokio::test]
async fn unknown_topic_alias_is_a_protocol_error() {
    let broker = broker().await;
    let mut c = RawClient::connect(broker.local_addr(), V5, "c").await;
    let alias = [Property::TopicAlias(3)];
    c.send(&Packet::Publish(publish_props(
        "",
        b"x",
        QoS::AtMostOnce,
        0,
        false,
        &alias,
    )))
    .await;
    c.expect_disconnect(ReasonCode::ProtocolError).await;
    c.expect_close().await;
    broker.shutdown().await;
}

/// Towards a client that announced a Topic Alias Maximum, the broker may use
/// aliases up to it [MQTT-5: 3.3.2-8]: the first message on a topic carries the
/// topic and an alias, later ones only the alias; when all aliases are in use
/// the topic is sent in full.
#[tokio::test]
async fn topic_alias_towards_a_client_that_allows_them() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut sub =
        RawClient::connect_props(addr, V5, "sub", true, &[Property::TopicAliasMaximum(2)]).await;
    sub.subscribe(1, "#", QoS::AtMostOnce).await;
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    for (topic, payload) in [
        ("a", b"1"),
        ("a", b"2"),
        ("b", b"3"),
        ("c", b"4"),
        ("b", b"5"),
        ("c", b"6"),
    ] {
        publisher
            .publish_flow(publish(topic, payload, QoS::AtMostOnce, 0, false))
            .await;
    }
    let msg = |topic, payload, alias: &'static [Property<'static>]| {
        publish_props(topic, payload, QoS::AtMostOnce, 0, false, alias)
    };
    const A1: &[Property<'static>] = &[Property::TopicAlias(1)];
    const A2: &[Property<'static>] = &[Property::TopicAlias(2)];
    sub.expect_publish(msg("a", b"1", A1)).await;
    sub.expect_publish(msg("", b"2", A1)).await;
    sub.expect_publish(msg("b", b"3", A2)).await;
    sub.expect_publish(msg("c", b"4", &[])).await;
    sub.expect_publish(msg("", b"5", A2)).await;
    sub.expect_publish(msg("c", b"6", &[])).await;
    sub.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// A message too large for the client is not sent, so it must not set up a
/// topic alias either: the next message on that topic carries the topic in
/// full, since the client never learnt the alias [MQTT-5: 3.3.2-12].
#[tokio::test]
async fn dropped_oversize_message_does_not_consume_a_topic_alias() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let props = [
        Property::TopicAliasMaximum(4),
        Property::MaximumPacketSize(64),
    ];
    let mut sub = RawClient::connect_props(addr, V5, "sub", true, &props).await;
    sub.subscribe(1, "t", QoS::AtMostOnce).await;
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    publisher
        .publish_flow(publish("t", &[0u8; 100], QoS::AtMostOnce, 0, false))
        .await;
    publisher
        .publish_flow(publish("t", b"small", QoS::AtMostOnce, 0, false))
        .await;
    publisher
        .publish_flow(publish("t", b"again", QoS::AtMostOnce, 0, false))
        .await;
    let alias = [Property::TopicAlias(1)];
    sub.expect_publish(publish_props(
        "t",
        b"small",
        QoS::AtMostOnce,
        0,
        false,
        &alias,
    ))
    .await;
    sub.expect_publish(publish_props(
        "",
        b"again",
        QoS::AtMostOnce,
        0,
        false,
        &alias,
    ))
    .await;
    sub.expect_nothing_pending().await;
    assert_eq!(broker.stats().dropped_too_large.get(), 1);
    broker.shutdown().await;
}

/// A client announcing Receive Maximum 2 never has more than two QoS 1 or 2
/// deliveries unacknowledged [MQTT-5: 3.3.4-9]; each acknowledgement lets one
/// more through. For QoS 2 a message counts until PUBCOMP.
#[tokio::test]
async fn receive_maximum_limits_unacknowledged_deliveries() {
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub =
            RawClient::connect_props(addr, V5, "sub", true, &[Property::ReceiveMaximum(2)]).await;
        sub.subscribe(1, "t", qos).await;
        let mut publisher = RawClient::connect(addr, V5, "pub").await;
        for n in 1..=5u8 {
            publisher
                .publish_flow(publish("t", &[n], qos, u16::from(n), false))
                .await;
        }
        let first = sub
            .expect_publish(publish("t", &[1], qos, 1, false))
            .await
            .unwrap();
        let second = sub
            .expect_publish(publish("t", &[2], qos, 1, false))
            .await
            .unwrap();
        sub.expect_nothing_pending().await;
        let mut unacked = vec![first, second];
        for n in 3..=5u8 {
            let oldest = unacked.remove(0);
            if qos == QoS::ExactlyOnce {
                // PUBREC alone does not free the slot.
                sub.send(&Packet::PubRec(PubResp::new(oldest))).await;
                sub.expect_exact(&Packet::PubRel(PubResp::new(oldest)))
                    .await;
                sub.expect_nothing_pending().await;
                sub.send(&Packet::PubComp(PubResp::new(oldest))).await;
            } else {
                sub.send(&Packet::PubAck(PubResp::new(oldest))).await;
            }
            unacked.push(
                sub.expect_publish(publish("t", &[n], qos, 1, false))
                    .await
                    .unwrap(),
            );
            sub.expect_nothing_pending().await;
        }
        broker.shutdown().await;
    }
}

/// A message larger than the Maximum Packet Size the client announced is not
/// sent to it [MQTT-5: 3.1.2-24] and is counted; a smaller one is, and the
/// dropped one holds no inflight slot.
#[tokio::test]
async fn message_larger_than_client_maximum_packet_size_is_not_sent() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let props = [
        Property::MaximumPacketSize(100),
        Property::ReceiveMaximum(1),
    ];
    let mut sub = RawClient::connect_props(addr, V5, "sub", true, &props).await;
    sub.subscribe(1, "t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    publisher
        .publish_flow(publish("t", &[7u8; 200], QoS::AtLeastOnce, 1, false))
        .await;
    publisher
        .publish_flow(publish("t", &[8u8; 50], QoS::AtLeastOnce, 2, false))
        .await;
    let pid = sub
        .expect_publish(publish("t", &[8u8; 50], QoS::AtLeastOnce, 1, false))
        .await;
    sub.send(&Packet::PubAck(PubResp::new(pid.unwrap()))).await;
    sub.expect_nothing_pending().await;
    assert_eq!(broker.stats().dropped_too_large.get(), 1);
    broker.shutdown().await;
}

/// Response Topic, Correlation Data, Content Type, Payload Format Indicator
/// and User Properties reach the subscriber unchanged, User Properties in
/// their order [MQTT-5: 3.3.2-15..20]; a 3.1.1 subscriber gets the message
/// without them.
#[tokio::test]
async fn publish_properties_are_passed_through() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut sub = RawClient::connect(addr, V5, "sub").await;
    sub.subscribe(1, "req", QoS::AtLeastOnce).await;
    let mut sub3 = RawClient::connect(addr, ProtocolVersion::V3_1_1, "sub3").await;
    sub3.subscribe(1, "req", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    let props = [
        Property::UserProperty("z", "first"),
        Property::ResponseTopic("resp/1"),
        Property::CorrelationData(&[0, 1, 2, 0xff]),
        Property::UserProperty("a", "second"),
        Property::ContentType("text/plain; charset=utf-8"),
        Property::PayloadFormatIndicator(true),
        Property::UserProperty("z", "third"),
    ];
    let sent = publish_props(
        "req",
        "héllo".as_bytes(),
        QoS::AtLeastOnce,
        1,
        false,
        &props,
    );
    publisher.publish_flow(sent).await;

    let got = sub.recv_publish().await;
    let p = got.publish();
    assert_eq!(
        Publish {
            properties: sent.properties,
            qos_pid: p.qos_pid,
            ..p
        },
        Publish {
            qos_pid: p.qos_pid,
            ..sent
        }
    );
    assert_eq!(
        props_by_id(p.properties),
        props_by_id(sent.properties),
        "{got:?}"
    );
    let users: Vec<_> = p.properties.user_properties().collect();
    assert_eq!(users, [("z", "first"), ("a", "second"), ("z", "third")]);
    sub.ack_delivery(&p).await;
    sub.expect_nothing_pending().await;

    sub3.expect_publish(publish(
        "req",
        "héllo".as_bytes(),
        QoS::AtLeastOnce,
        1,
        false,
    ))
    .await;
    broker.shutdown().await;
}

/// A PUBLISH whose Payload Format Indicator says UTF-8 but whose payload is
/// not is refused: PUBACK or PUBREC 0x99 Payload format invalid
/// [MQTT-5: 3.3.2-4], and not delivered.
#[tokio::test]
async fn invalid_utf8_payload_with_format_indicator_is_refused() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut sub = RawClient::connect(addr, V5, "sub").await;
    sub.subscribe(1, "t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    let utf8 = [Property::PayloadFormatIndicator(true)];
    let bad: &[u8] = &[0x66, 0xff, 0xfe];
    publisher
        .send(&Packet::Publish(publish_props(
            "t",
            bad,
            QoS::AtLeastOnce,
            1,
            false,
            &utf8,
        )))
        .await;
    publisher
        .expect_exact(&Packet::PubAck(PubResp {
            reason: ReasonCode::PayloadFormatInvalid,
            ..ack(1)
        }))
        .await;
    let reason = publisher
        .publish_flow(publish_props("t", bad, QoS::ExactlyOnce, 2, false, &utf8))
        .await;
    assert_eq!(reason, ReasonCode::PayloadFormatInvalid);
    publisher
        .publish_flow(publish_props("t", bad, QoS::AtMostOnce, 0, false, &utf8))
        .await;
    // The same bytes without the indicator are fine: payloads are opaque.
    publisher
        .publish_flow(publish("t", bad, QoS::AtMostOnce, 0, false))
        .await;
    sub.expect_publish(publish("t", bad, QoS::AtMostOnce, 0, false))
        .await;
    sub.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// A QoS 1 or 2 message with no matching subscriber is acknowledged with
/// 0x10 No matching subscribers; with one, Success.
#[tokio::test]
async fn puback_says_when_there_are_no_subscribers() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let reason = publisher
            .publish_flow(publish("nobody", b"x", qos, 1, false))
            .await;
        assert_eq!(reason, ReasonCode::NoMatchingSubscribers);
    }
    let mut sub = RawClient::connect(addr, V5, "sub").await;
    sub.subscribe(1, "nobody", QoS::AtMostOnce).await;
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let reason = publisher
            .publish_flow(publish("nobody", b"x", qos, 1, false))
            .await;
        assert_eq!(reason, ReasonCode::Success);
    }
    broker.shutdown().await;
}
