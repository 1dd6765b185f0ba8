//! Subscriptions over TCP (MQTT 3.1.1 and 5.0, sections 3.8 to 3.11, 4.7 and
//! 4.8): wildcard matching and the `$` rule, `$` topics refused from
//! clients, overlapping subscriptions, SUBACK and UNSUBACK codes, replacing a
//! subscription, and shared subscriptions. Rules that exist in both versions
//! run for both.

mod common;

use std::collections::BTreeSet;

use common::*;
use mqtt_broker::Config;
use mqtt_codec::{
    LastWill, List, Packet, Property, ProtocolVersion, PubResp, Publish, QoS, ReasonCode,
    SubscribeFilter, SubscriptionOptions, UnsubAck,
};

/// A PUBLISH as the broker forwards it: RETAIN 0, no properties.
fn forwarded<'a>(topic: &'a str, payload: &'a [u8], qos: QoS) -> Publish<'a> {
    publish(topic, payload, qos, 1, false)
}

fn filter(filter: &str, qos: QoS) -> SubscribeFilter<'_> {
    SubscribeFilter {
        filter,
        options: SubscriptionOptions::qos(qos),
    }
}

/// Publishes `topic` at QoS 0 with the topic as payload.
async fn send_topic(publisher: &mut RawClient, topic: &str) {
    publisher
        .send(&Packet::Publish(publish(
            topic,
            topic.as_bytes(),
            QoS::AtMostOnce,
            0,
            false,
        )))
        .await;
}

/// `a/#` matches `a` itself and every level below it, nothing else
/// [MQTT-3.1.1: 4.7.1-2].
#[tokio::test]
async fn multi_level_wildcard_matches_parent_and_children() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "a/#", QoS::AtMostOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;

        for topic in ["b", "ab", "a", "b/a", "a/b", "/a", "a/b/c", "a/"] {
            send_topic(&mut publisher, topic).await;
        }
        for topic in ["a", "a/b", "a/b/c", "a/"] {
            sub.expect_publish(forwarded(topic, topic.as_bytes(), QoS::AtMostOnce))
                .await;
        }
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// `+` fills exactly one level, which may be empty: `+/+` matches `/x` and
/// `a/b`, not `a` or `a/b/c`; `a/+` matches `a/` [MQTT-3.1.1: 4.7.1-3].
#[tokio::test]
async fn single_level_wildcard_matches_exactly_one_level() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "+/+", QoS::AtMostOnce).await;
        let mut sub2 = RawClient::connect(addr, v, "sub2").await;
        sub2.subscribe(1, "a/+", QoS::AtMostOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;

        for topic in ["a", "/x", "a/b/c", "a/b", "a/", "/"] {
            send_topic(&mut publisher, topic).await;
        }
        for topic in ["/x", "a/b", "a/", "/"] {
            sub.expect_publish(forwarded(topic, topic.as_bytes(), QoS::AtMostOnce))
                .await;
        }
        sub.expect_nothing_pending().await;
        for topic in ["a/b", "a/"] {
            sub2.expect_publish(forwarded(topic, topic.as_bytes(), QoS::AtMostOnce))
                .await;
        }
        sub2.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// Filters starting with a wildcard do not match topics starting with `$`
/// [MQTT-3.1.1/5: 4.7.2-1], neither for retained nor for live messages. The broker's
/// own `$SYS` messages are the `$` topics (clients may not publish any).
#[tokio::test]
async fn wildcards_at_the_start_do_not_match_dollar_topics() {
    for v in V3_AND_V5 {
        let broker = broker_with(Config {
            sys_interval_secs: 1,
            ..Config::ephemeral()
        })
        .await;
        let addr = broker.local_addr();
        // The first `$SYS` round is published when the broker starts.
        eventually("$SYS messages retained", || broker.retained_count() > 0).await;

        let mut wild = RawClient::connect(addr, v, "wild").await;
        let filters = [
            filter("#", QoS::AtMostOnce),
            filter("+/broker/uptime", QoS::AtMostOnce),
            filter("+/+/+", QoS::AtMostOnce),
            filter("+/#", QoS::AtMostOnce),
        ];
        let codes = wild.subscribe_many(1, &filters, &[]).await;
        assert_eq!(codes, [ReasonCode::Success; 4]);
        // No retained `$SYS` message was sent for those filters.
        wild.expect_nothing_pending().await;

        // An explicit `$SYS` filter gets the retained copy, then live ones.
        let mut sys = RawClient::connect(addr, v, "sys").await;
        sys.subscribe(1, "$SYS/broker/uptime", QoS::AtMostOnce)
            .await;
        loop {
            let got = sys.recv_publish().await;
            assert_eq!(got.publish().topic, "$SYS/broker/uptime");
            if !got.publish().retain {
                break;
            }
        }

        // By then the wildcard subscriber would have had its copy queued.
        wild.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// Clients may not publish into `$` topics: the message is not delivered, not
/// even to a `$foo/#` subscriber; a 5.0 client's PUBACK says 0x87 Not
/// authorized, a 3.1.1 client (which has no way to hear a refusal) gets a
/// plain PUBACK.
#[tokio::test]
async fn clients_cannot_publish_to_dollar_topics() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        let filters = [
            filter("$foo/#", QoS::AtLeastOnce),
            filter("$SYS/#", QoS::AtLeastOnce),
        ];
        let codes = sub.subscribe_many(1, &filters, &[]).await;
        assert_eq!(codes, [ReasonCode::GrantedQoS1; 2]);
        let mut publisher = RawClient::connect(addr, v, "pub").await;

        let refused = match v {
            ProtocolVersion::V5 => ReasonCode::NotAuthorized,
            _ => ReasonCode::Success,
        };
        for (pid, topic) in [(1, "$foo/x"), (2, "$SYS/broker/uptime")] {
            publisher
                .send(&Packet::Publish(publish(
                    topic,
                    b"fake",
                    QoS::AtLeastOnce,
                    pid,
                    false,
                )))
                .await;
            publisher
                .expect_exact(&Packet::PubAck(PubResp {
                    reason: refused,
                    ..ack(pid)
                }))
                .await;
        }
        // QoS 2 is refused at PUBREC.
        let reason = publisher
            .publish_flow(publish("$foo/y", b"fake", QoS::ExactlyOnce, 3, false))
            .await;
        assert_eq!(reason, refused);
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// A will is a message the client publishes too: a CONNECT whose will topic
/// starts with `$` is refused with Not authorized (CONNACK 0x05 in 3.1.1,
/// 0x87 in 5.0), as Mosquitto refuses a will to `$SYS`.
#[tokio::test]
async fn will_to_a_dollar_topic_is_refused() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut c = RawClient::open(addr, v).await;
        let mut connect = connect_packet(v, "c", true);
        connect.will = Some(LastWill {
            topic: "$SYS/broker/uptime",
            payload: b"fake",
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Default::default(),
        });
        c.send(&Packet::Connect(connect)).await;
        let got = c.recv().await;
        assert_refusal(&got.bytes, v, 0x05, 0x87);
        c.expect_close().await;
        assert_eq!(broker.retained_count(), 0);
        broker.shutdown().await;
    }
}

/// Two subscriptions of one client that match one message: it is delivered
/// once, with the higher of the two QoS (5.0 [MQTT-5: 3.3.4-2]; Mosquitto does
/// the same for 3.1.1).
#[tokio::test]
async fn overlapping_subscriptions_deliver_once_with_highest_qos() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "a/#", QoS::AtLeastOnce).await;
        sub.subscribe(2, "a/b", QoS::AtMostOnce).await;
        sub.subscribe(3, "c/+", QoS::AtMostOnce).await;
        sub.subscribe(4, "c/d", QoS::ExactlyOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;

        publisher
            .publish_flow(publish("a/b", b"ab", QoS::ExactlyOnce, 1, false))
            .await;
        let pid = sub
            .expect_publish(forwarded("a/b", b"ab", QoS::AtLeastOnce))
            .await
            .unwrap();
        sub.send(&Packet::PubAck(PubResp::new(pid))).await;
        sub.expect_nothing_pending().await;

        publisher
            .publish_flow(publish("c/d", b"cd", QoS::ExactlyOnce, 2, false))
            .await;
        let got = sub.recv_publish().await;
        let expected = forwarded("c/d", b"cd", QoS::ExactlyOnce);
        assert_eq!(
            got.publish(),
            Publish {
                qos_pid: got.publish().qos_pid,
                ..expected
            }
        );
        assert_eq!(got.publish().qos_pid.qos(), QoS::ExactlyOnce);
        sub.ack_delivery(&got.publish()).await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// MQTT 5: the single copy for overlapping subscriptions carries the
/// Subscription Identifier of each of them, in any order (5.0 section 3.3.4).
#[tokio::test]
async fn overlapping_subscriptions_carry_every_subscription_identifier() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let v = ProtocolVersion::V5;
    let mut sub = RawClient::connect(addr, v, "sub").await;
    sub.subscribe_opts(
        1,
        "a/#",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
        Some(1),
    )
    .await;
    sub.subscribe_opts(2, "a/b", SubscriptionOptions::qos(QoS::AtMostOnce), Some(2))
        .await;
    sub.subscribe_opts(3, "+/b", SubscriptionOptions::qos(QoS::AtMostOnce), None)
        .await;
    let mut publisher = RawClient::connect(addr, v, "pub").await;

    publisher
        .publish_flow(publish("a/b", b"x", QoS::AtLeastOnce, 1, false))
        .await;
    let got = sub.recv_publish().await;
    let p = got.publish();
    assert_eq!(p.qos_pid.qos(), QoS::AtLeastOnce);
    let ids: BTreeSet<u32> = p.properties.subscription_identifiers().collect();
    assert_eq!(ids, BTreeSet::from([1, 2]), "{got:?}");
    assert_eq!(p.properties.iter().count(), 2, "{got:?}");
    sub.ack_delivery(&p).await;
    sub.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// SUBACK has one code per filter, in order, granting what was asked up to
/// the broker's maximum QoS [MQTT-5: 3.8.4-5..7], [MQTT-5: 3.9.3-1].
#[tokio::test]
async fn suback_grants_each_filter_in_order() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let mut sub = RawClient::connect(broker.local_addr(), v, "sub").await;
        let filters = [
            filter("q2", QoS::ExactlyOnce),
            filter("q0", QoS::AtMostOnce),
            filter("q1/#", QoS::AtLeastOnce),
            filter("$share/g/q", QoS::ExactlyOnce),
        ];
        let codes = sub.subscribe_many(9, &filters, &[]).await;
        assert_eq!(
            codes,
            [
                ReasonCode::GrantedQoS2,
                ReasonCode::Success,
                ReasonCode::GrantedQoS1,
                ReasonCode::GrantedQoS2
            ]
        );
        broker.shutdown().await;

        let broker = broker_with(Config {
            max_qos: 1,
            ..Config::ephemeral()
        })
        .await;
        let mut sub = RawClient::connect(broker.local_addr(), v, "sub").await;
        let codes = sub.subscribe_many(9, &filters, &[]).await;
        assert_eq!(
            codes,
            [
                ReasonCode::GrantedQoS1,
                ReasonCode::Success,
                ReasonCode::GrantedQoS1,
                ReasonCode::GrantedQoS1
            ]
        );
        broker.shutdown().await;
    }
}

/// UNSUBSCRIBE stops delivery and is answered with UNSUBACK; in 5.0 with one
/// code per filter: Success, or 0x11 No subscription existed [MQTT-3.1.1/5: 3.10.4-1..6].
#[tokio::test]
async fn unsubscribe_stops_delivery() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "t", QoS::AtLeastOnce).await;
        sub.subscribe(2, "keep", QoS::AtMostOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;
        send_topic(&mut publisher, "t").await;
        sub.expect_publish(forwarded("t", b"t", QoS::AtMostOnce))
            .await;

        sub.send(&Packet::Unsubscribe(unsubscribe(3, &["t", "never"])))
            .await;
        let codes = [ReasonCode::Success, ReasonCode::NoSubscriptionExisted];
        let codes: &[ReasonCode] = if v.is_v5() { &codes } else { &[] };
        sub.expect_exact(&Packet::UnsubAck(UnsubAck {
            pid: pid_(3),
            properties: Default::default(),
            codes: List::from_slice(codes),
        }))
        .await;
        assert_eq!(broker.subscription_count(), 1);

        send_topic(&mut publisher, "t").await;
        send_topic(&mut publisher, "keep").await;
        sub.expect_publish(forwarded("keep", b"keep", QoS::AtMostOnce))
            .await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// Subscribing again to the same filter replaces the subscription and its
/// options instead of adding a second one [MQTT-3.1.1/5: 3.8.4-3]: one copy per
/// message, at the new QoS; in 5.0 with the new Subscription Identifier.
#[tokio::test]
async fn resubscribing_replaces_the_subscription() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;
        let (first_id, second_id) = if v.is_v5() {
            (Some(1), Some(2))
        } else {
            (None, None)
        };
        sub.subscribe_opts(1, "t", SubscriptionOptions::qos(QoS::ExactlyOnce), first_id)
            .await;
        sub.subscribe_opts(2, "t", SubscriptionOptions::qos(QoS::AtMostOnce), second_id)
            .await;
        assert_eq!(broker.subscription_count(), 1);

        publisher
            .publish_flow(publish("t", b"x", QoS::ExactlyOnce, 1, false))
            .await;
        let props: Vec<Property<'_>> = second_id
            .map(Property::SubscriptionIdentifier)
            .into_iter()
            .collect();
        sub.expect_publish(publish_props("t", b"x", QoS::AtMostOnce, 0, false, &props))
            .await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// Reads PUBLISH packets from two clients until `n` have arrived in total,
/// acknowledging each; returns the payloads each one got.
async fn collect_from_two(
    a: &mut RawClient,
    b: &mut RawClient,
    n: usize,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while got_a.len() + got_b.len() < n {
        tokio::select! {
            r = a.recv() => {
                let p = r.publish();
                got_a.push(p.payload.to_vec());
                a.ack_delivery(&p).await;
            }
            r = b.recv() => {
                let p = r.publish();
                got_b.push(p.payload.to_vec());
                b.ack_delivery(&p).await;
            }
        }
    }
    (got_a, got_b)
}

/// A shared subscription `$share/g/t` with two members: each message goes to
/// exactly one of them, both get a share, and a plain subscriber to `t`
/// still gets every message (5.0 section 4.8.2).
#[tokio::test]
async fn shared_subscription_delivers_each_message_once_across_the_group() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut m1 = RawClient::connect(addr, v, "m1").await;
        m1.subscribe(1, "$share/g/t", QoS::AtLeastOnce).await;
        let mut m2 = RawClient::connect(addr, v, "m2").await;
        m2.subscribe(1, "$share/g/t", QoS::AtLeastOnce).await;
        let mut plain = RawClient::connect(addr, v, "plain").await;
        plain.subscribe(1, "t", QoS::AtMostOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;

        const N: u8 = 20;
        for n in 0..N {
            let reason = publisher
                .publish_flow(publish("t", &[n], QoS::AtLeastOnce, 1, false))
                .await;
            assert_eq!(reason, ReasonCode::Success);
        }
        let (a, b) = collect_from_two(&mut m1, &mut m2, N as usize).await;
        assert!(
            !a.is_empty() && !b.is_empty(),
            "one member got nothing: {a:?} {b:?}"
        );
        let mut all: Vec<Vec<u8>> = a.into_iter().chain(b).collect();
        all.sort();
        assert_eq!(all, (0..N).map(|n| vec![n]).collect::<Vec<_>>());
        m1.expect_nothing_pending().await;
        m2.expect_nothing_pending().await;
        for n in 0..N {
            plain
                .expect_publish(forwarded("t", &[n], QoS::AtMostOnce))
                .await;
        }
        plain.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// Two share groups on one filter each get every message once.
#[tokio::test]
async fn each_share_group_gets_its_own_copy() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut g1 = RawClient::connect(addr, v, "g1").await;
        g1.subscribe(1, "$share/one/t/+", QoS::AtMostOnce).await;
        let mut g2 = RawClient::connect(addr, v, "g2").await;
        g2.subscribe(1, "$share/two/t/+", QoS::AtMostOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;
        send_topic(&mut publisher, "t/x").await;
        g1.expect_publish(forwarded("t/x", b"t/x", QoS::AtMostOnce))
            .await;
        g2.expect_publish(forwarded("t/x", b"t/x", QoS::AtMostOnce))
            .await;
        g1.expect_nothing_pending().await;
        g2.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// Retained messages are not sent when a shared subscription is made
/// (5.0 section 4.8.2).
#[tokio::test]
async fn shared_subscription_gets_no_retained_messages() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut publisher = RawClient::connect(addr, v, "pub").await;
        publisher
            .publish_flow(publish("t", b"kept", QoS::AtLeastOnce, 1, true))
            .await;
        assert_eq!(broker.retained_count(), 1);
        let mut member = RawClient::connect(addr, v, "member").await;
        member.subscribe(1, "$share/g/t", QoS::AtLeastOnce).await;
        member.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}
