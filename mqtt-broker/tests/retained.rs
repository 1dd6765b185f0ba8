//! Retained messages over TCP (MQTT 3.1.1 and 5.0, section 3.3.1.3, and 5.0
//! Retain As Published and Retain Handling, section 3.8.3.1): stored and sent
//! on subscribe with RETAIN=1, replaced, cleared by an empty payload, the
//! RETAIN flag towards existing subscriptions, and a wildcard subscription
//! that matches thousands of retained messages under small inflight and
//! queue limits.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use mqtt_broker::Config;
use mqtt_codec::{
    Packet, Property, ProtocolVersion, PubResp, QoS, RetainHandling, SubscriptionOptions,
};

/// A retained message is sent to a new matching subscription with RETAIN=1
/// [MQTT-3.1.1: 3.3.1-6], [MQTT-3.1.1: 3.3.1-8], at the lower of its QoS and the
/// subscription's; wildcard filters match it too.
#[tokio::test]
async fn retained_message_is_sent_on_subscribe_with_retain_set() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut publisher = RawClient::connect(addr, v, "pub").await;
        publisher
            .publish_flow(publish("r/1", b"one", QoS::ExactlyOnce, 1, true))
            .await;
        publisher
            .publish_flow(publish("r/2", b"two", QoS::AtMostOnce, 0, true))
            .await;
        eventually("two retained messages", || broker.retained_count() == 2).await;

        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "r/1", QoS::AtLeastOnce).await;
        let pid = sub
            .expect_publish(publish("r/1", b"one", QoS::AtLeastOnce, 1, true))
            .await
            .unwrap();
        sub.send(&Packet::PubAck(PubResp::new(pid))).await;
        sub.subscribe(2, "r/+", QoS::ExactlyOnce).await;
        let received = [sub.recv_publish().await, sub.recv_publish().await];
        let mut got = BTreeSet::new();
        for r in &received {
            let p = r.publish();
            assert!(p.retain, "{r:?}");
            got.insert((p.topic.to_string(), p.payload.to_vec(), p.qos_pid.qos()));
        }
        for r in &received {
            sub.ack_delivery(&r.publish()).await;
        }
        let expected = BTreeSet::from([
            ("r/1".to_string(), b"one".to_vec(), QoS::ExactlyOnce),
            ("r/2".to_string(), b"two".to_vec(), QoS::AtMostOnce),
        ]);
        assert_eq!(got, expected);
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// A topic keeps only its latest retained message, and a PUBLISH without
/// RETAIN does not replace it [MQTT-3.1.1: 3.3.1-5], [MQTT-3.1.1: 3.3.1-12].
#[tokio::test]
async fn newer_retained_message_replaces_older_one() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut publisher = RawClient::connect(addr, v, "pub").await;
        publisher
            .publish_flow(publish("t", b"old", QoS::AtLeastOnce, 1, true))
            .await;
        publisher
            .publish_flow(publish("t", b"new", QoS::AtLeastOnce, 2, true))
            .await;
        publisher
            .publish_flow(publish("t", b"not retained", QoS::AtLeastOnce, 3, false))
            .await;
        assert_eq!(broker.retained_count(), 1);

        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "t", QoS::AtMostOnce).await;
        sub.expect_publish(publish("t", b"new", QoS::AtMostOnce, 0, true))
            .await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// A retained PUBLISH with an empty payload clears the topic's retained
/// message and is itself not stored [MQTT-3.1.1: 3.3.1-10], [MQTT-3.1.1: 3.3.1-11]; it is
/// forwarded to existing subscribers like any message.
#[tokio::test]
async fn empty_retained_payload_clears_the_retained_message() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut existing = RawClient::connect(addr, v, "existing").await;
        existing.subscribe(1, "t", QoS::AtMostOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;
        publisher
            .publish_flow(publish("t", b"x", QoS::AtLeastOnce, 1, true))
            .await;
        existing
            .expect_publish(publish("t", b"x", QoS::AtMostOnce, 0, false))
            .await;
        assert_eq!(broker.retained_count(), 1);

        publisher
            .publish_flow(publish("t", b"", QoS::AtLeastOnce, 2, true))
            .await;
        existing
            .expect_publish(publish("t", b"", QoS::AtMostOnce, 0, false))
            .await;
        assert_eq!(broker.retained_count(), 0);

        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "#", QoS::AtLeastOnce).await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// A retained message forwarded to a subscription that already existed has
/// RETAIN=0 [MQTT-3.1.1: 3.3.1-9] (in 5.0: when Retain As Published is 0,
/// [MQTT-5: 3.3.1-12]).
#[tokio::test]
async fn retain_flag_is_cleared_towards_existing_subscriptions() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "t", QoS::AtMostOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;
        publisher
            .publish_flow(publish("t", b"r", QoS::AtMostOnce, 0, true))
            .await;
        sub.expect_publish(publish("t", b"r", QoS::AtMostOnce, 0, false))
            .await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// MQTT 5 Retain As Published: the RETAIN flag is forwarded as published
/// [MQTT-5: 3.3.1-13]; a subscription without it on the same client still gets
/// RETAIN=0 on its own copy when it is the only match.
#[tokio::test]
async fn retain_as_published_keeps_the_retain_flag() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let v = ProtocolVersion::V5;
    let mut sub = RawClient::connect(addr, v, "sub").await;
    let rap = SubscriptionOptions {
        retain_as_published: true,
        ..SubscriptionOptions::qos(QoS::AtMostOnce)
    };
    sub.subscribe_opts(1, "rap", rap, None).await;
    sub.subscribe_opts(2, "plain", SubscriptionOptions::qos(QoS::AtMostOnce), None)
        .await;
    let mut publisher = RawClient::connect(addr, v, "pub").await;
    publisher
        .publish_flow(publish("rap", b"1", QoS::AtMostOnce, 0, true))
        .await;
    sub.expect_publish(publish("rap", b"1", QoS::AtMostOnce, 0, true))
        .await;
    publisher
        .publish_flow(publish("rap", b"2", QoS::AtMostOnce, 0, false))
        .await;
    sub.expect_publish(publish("rap", b"2", QoS::AtMostOnce, 0, false))
        .await;
    publisher
        .publish_flow(publish("plain", b"3", QoS::AtMostOnce, 0, true))
        .await;
    sub.expect_publish(publish("plain", b"3", QoS::AtMostOnce, 0, false))
        .await;
    sub.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// Subscribing again to an existing filter sends the retained messages again
/// [MQTT-3.1.1: 3.8.4-3] (5.0: Retain Handling 0, [MQTT-5: 3.3.1-9]).
#[tokio::test]
async fn resubscribing_sends_retained_messages_again() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut publisher = RawClient::connect(addr, v, "pub").await;
        publisher
            .publish_flow(publish("t", b"r", QoS::AtLeastOnce, 1, true))
            .await;
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "t", QoS::AtMostOnce).await;
        sub.expect_publish(publish("t", b"r", QoS::AtMostOnce, 0, true))
            .await;
        sub.subscribe(2, "t", QoS::AtMostOnce).await;
        sub.expect_publish(publish("t", b"r", QoS::AtMostOnce, 0, true))
            .await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// MQTT 5 Retain Handling: 0 sends retained messages on every SUBSCRIBE,
/// 1 only when the subscription did not exist, 2 never [MQTT-5: 3.3.1-9..11].
#[tokio::test]
async fn retain_handling_0_1_2() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let v = ProtocolVersion::V5;
    let mut publisher = RawClient::connect(addr, v, "pub").await;
    publisher
        .publish_flow(publish("t", b"r", QoS::AtMostOnce, 0, true))
        .await;
    let retained = publish("t", b"r", QoS::AtMostOnce, 0, true);
    let opts = |h| SubscriptionOptions {
        retain_handling: h,
        ..SubscriptionOptions::qos(QoS::AtMostOnce)
    };

    let mut c0 = RawClient::connect(addr, v, "c0").await;
    c0.subscribe_opts(1, "t", opts(RetainHandling::SendOnSubscribe), None)
        .await;
    c0.expect_publish(retained).await;
    c0.subscribe_opts(2, "t", opts(RetainHandling::SendOnSubscribe), None)
        .await;
    c0.expect_publish(retained).await;
    c0.expect_nothing_pending().await;

    let mut c1 = RawClient::connect(addr, v, "c1").await;
    c1.subscribe_opts(1, "t", opts(RetainHandling::SendIfNew), None)
        .await;
    c1.expect_publish(retained).await;
    c1.subscribe_opts(2, "t", opts(RetainHandling::SendIfNew), None)
        .await;
    c1.expect_nothing_pending().await;

    let mut c2 = RawClient::connect(addr, v, "c2").await;
    c2.subscribe_opts(1, "t", opts(RetainHandling::DoNotSend), None)
        .await;
    c2.expect_nothing_pending().await;
    // The subscription exists all the same.
    publisher
        .publish_flow(publish("t", b"live", QoS::AtMostOnce, 0, false))
        .await;
    c2.expect_publish(publish("t", b"live", QoS::AtMostOnce, 0, false))
        .await;
    broker.shutdown().await;
}

/// MQTT 5: a retained message sent on subscribe carries the subscription's
/// identifier.
#[tokio::test]
async fn retained_message_carries_the_subscription_identifier() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let v = ProtocolVersion::V5;
    let mut publisher = RawClient::connect(addr, v, "pub").await;
    publisher
        .publish_flow(publish("t", b"r", QoS::AtMostOnce, 0, true))
        .await;
    let mut sub = RawClient::connect(addr, v, "sub").await;
    sub.subscribe_opts(1, "t", SubscriptionOptions::qos(QoS::AtMostOnce), Some(77))
        .await;
    let props = [Property::SubscriptionIdentifier(77)];
    sub.expect_publish(publish_props("t", b"r", QoS::AtMostOnce, 0, true, &props))
        .await;
    sub.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// MQTT 5: a retained message whose Message Expiry Interval has passed is no
/// longer sent to new subscriptions [MQTT-5: 3.3.2-5].
#[tokio::test(start_paused = true)]
async fn expired_retained_message_is_not_sent() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let v = ProtocolVersion::V5;
    let mut publisher = RawClient::connect(addr, v, "pub").await;
    let expiring = [Property::MessageExpiryInterval(1)];
    publisher
        .publish_flow(publish_props(
            "short",
            b"s",
            QoS::AtMostOnce,
            0,
            true,
            &expiring,
        ))
        .await;
    publisher
        .publish_flow(publish("long", b"l", QoS::AtMostOnce, 0, true))
        .await;
    eventually("two retained messages", || broker.retained_count() == 2).await;
    // Let the interval the rule is about run out.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let mut sub = RawClient::connect(addr, v, "sub").await;
    sub.subscribe(1, "#", QoS::AtMostOnce).await;
    sub.expect_publish(publish("long", b"l", QoS::AtMostOnce, 0, true))
        .await;
    sub.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// A `#` subscription matching 2,000 retained messages receives every one of
/// them at QoS 1, paced by the inflight window, even though the window is 10
/// and the session queue holds 100: the limits pace the delivery, they do not
/// cut it short.
#[tokio::test]
async fn wildcard_subscribe_receives_all_2000_retained_messages() {
    const N: u16 = 2000;
    for v in V3_AND_V5 {
        let broker = broker_with(Config {
            max_inflight: 10,
            max_queued_messages: 100,
            ..Config::ephemeral()
        })
        .await;
        let addr = broker.local_addr();
        let mut publisher = RawClient::connect(addr, v, "pub").await;
        let mut burst = Vec::new();
        for n in 1..=N {
            let topic = format!("retained/{}/{n}", n % 10);
            let p = Packet::Publish(publish(&topic, topic.as_bytes(), QoS::AtLeastOnce, n, true));
            let start = burst.len();
            burst.resize(start + p.encoded_len(v).unwrap(), 0);
            p.encode(v, &mut burst[start..]).unwrap();
        }
        publisher.send_raw(&burst).await;
        for n in 1..=N {
            match publisher.recv().await.packet() {
                Packet::PubAck(a) => assert_eq!(a.pid, pid_(n)),
                p => panic!("expected PUBACK {n}, got {p:?}"),
            }
        }
        assert_eq!(broker.retained_count(), usize::from(N));

        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "#", QoS::AtLeastOnce).await;
        let mut topics = BTreeSet::new();
        for _ in 0..N {
            let r = sub.recv_publish().await;
            let p = r.publish();
            assert!(p.retain && p.qos_pid.qos() == QoS::AtLeastOnce, "{r:?}");
            assert_eq!(p.payload, p.topic.as_bytes());
            assert!(topics.insert(p.topic.to_string()), "{} twice", p.topic);
            sub.ack_delivery(&p).await;
        }
        sub.expect_nothing_pending().await;
        assert_eq!(topics.len(), usize::from(N));
        assert_eq!(broker.stats().dropped_total(), 0);
        broker.shutdown().await;
    }
}
