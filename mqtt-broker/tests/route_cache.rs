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

/// Receives `n` PUBLISHes (acknowledging QoS 1) and returns their payloads.
async fn payloads(c: &mut RawClient, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while got.len() < n {
        let r = c.recv().await;
        let Packet::Publish(p) = r.packet() else {
            panic!("expected PUBLISH, got {:?}", r.packet());
        };
        if let Some(pid) = p.qos_pid.pid() {
            c.send(&Packet::PubAck(ack(pid.get()))).await;
        }
        got.push(p.payload.to_vec());
    }
    got
}

/// QoS 0 messages to the connection's last topic are queued together once
/// the read is handled (`RouteCache::held`); a QoS 1 message, a retained
/// one or another topic between them must not overtake them: one
/// publisher's messages arrive in the order sent [MQTT-5: 4.6.0-6].
#[tokio::test]
async fn held_qos0_messages_keep_their_order_among_others() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut sub = RawClient::connect(addr, V5, "sub").await;
    sub.subscribe(1, "#", QoS::AtLeastOnce).await;
    let mut other = RawClient::connect(addr, V5, "other").await;
    other.subscribe(1, "t", QoS::AtMostOnce).await;
    let mut publisher = RawClient::connect(addr, V5, "pub").await;

    let names: Vec<String> = (1..=13).map(|i| i.to_string()).collect();
    let p = |i: usize, topic, qos, retain| {
        Packet::Publish(publish(
            topic,
            names[i - 1].as_bytes(),
            qos,
            i as u16,
            retain,
        ))
    };
    let q0 = QoS::AtMostOnce;
    let burst = [
        p(1, "t", q0, false),
        p(2, "t", q0, false),
        p(3, "t", QoS::AtLeastOnce, false),
        p(4, "t", q0, false),
        p(5, "u", q0, false),
        p(6, "t", q0, false),
        p(7, "t", q0, false),
        p(8, "t", q0, true),
        p(9, "t", q0, false),
        p(10, "t", QoS::ExactlyOnce, false),
        p(11, "t", q0, false),
        p(12, "t", q0, false),
        p(13, "t", q0, false),
    ];
    publisher.send_burst(&burst).await;

    let got = payloads(&mut sub, 13).await;
    let want: Vec<Vec<u8>> = names.iter().map(|n| n.clone().into_bytes()).collect();
    assert_eq!(got, want);
    // The other subscriber (only `t`) gets all but `u`, in order too.
    let got = payloads(&mut other, 12).await;
    let want: Vec<Vec<u8>> = want.into_iter().filter(|p| p != b"5").collect();
    assert_eq!(got, want);
    sub.expect_nothing_pending().await;
    other.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// A read that ends with DISCONNECT (with the will, MQTT 5) still
/// delivers the QoS 0 messages before it, and they come before the will.
#[tokio::test]
async fn held_messages_go_before_a_disconnect_and_its_will() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut sub = RawClient::connect(addr, V5, "sub").await;
    sub.subscribe(1, "#", QoS::AtMostOnce).await;
    let connect = mqtt_codec::Connect {
        will: Some(mqtt_codec::LastWill {
            topic: "will",
            payload: b"gone",
            qos: QoS::AtMostOnce,
            retain: false,
            properties: mqtt_codec::Properties::EMPTY,
        }),
        ..connect_packet(V5, "pub", true)
    };
    let mut publisher = RawClient::connect_with(addr, connect).await;
    let names: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    let mut packets: Vec<Packet<'_>> = names
        .iter()
        .map(|n| Packet::Publish(publish("t", n.as_bytes(), QoS::AtMostOnce, 0, false)))
        .collect();
    packets.push(Packet::Disconnect(mqtt_codec::Disconnect::new(
        ReasonCode::DisconnectWithWillMessage,
    )));
    publisher.send_burst(&packets).await;

    let got = payloads(&mut sub, 21).await;
    let mut want: Vec<Vec<u8>> = names.iter().map(|n| n.clone().into_bytes()).collect();
    want.push(b"gone".to_vec());
    assert_eq!(got, want);
    sub.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// A publisher subscribed to its own topic: QoS 0 messages it sent before
/// a SUBSCRIBE, in the same write, reach it before that subscription's
/// retained message; those before its UNSUBSCRIBE reach it, the one after
/// does not.
#[tokio::test]
async fn held_messages_go_before_the_packet_after_them() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut retainer = RawClient::connect(addr, V5, "retainer").await;
    retainer
        .publish_flow(publish("r", b"R", QoS::AtLeastOnce, 1, true))
        .await;
    let mut c = RawClient::connect(addr, V5, "self").await;
    c.subscribe(1, "t", QoS::AtMostOnce).await;
    let q0 = QoS::AtMostOnce;
    let filters = [mqtt_codec::SubscribeFilter {
        filter: "r",
        options: mqtt_codec::SubscriptionOptions::qos(q0),
    }];
    let sub_r = mqtt_codec::Subscribe {
        pid: pid_(2),
        properties: mqtt_codec::Properties::EMPTY,
        filters: mqtt_codec::List::from_slice(&filters),
    };
    c.send_burst(&[
        Packet::Publish(publish("t", b"1", q0, 0, false)),
        Packet::Publish(publish("t", b"2", q0, 0, false)),
        Packet::Subscribe(sub_r),
        Packet::Publish(publish("t", b"3", q0, 0, false)),
        Packet::Unsubscribe(unsubscribe(3, &["t"])),
        Packet::Publish(publish("t", b"4", q0, 0, false)),
    ])
    .await;
    let mut got = Vec::new();
    let mut acks = 0;
    while got.len() < 4 || acks < 2 {
        match c.recv().await.packet() {
            Packet::Publish(p) => got.push(p.payload.to_vec()),
            Packet::SubAck(_) | Packet::UnsubAck(_) => acks += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let want: Vec<&[u8]> = vec![b"1", b"2", b"R", b"3"];
    assert_eq!(got, want);
    c.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// Many more QoS 0 messages in a burst than are held at once
/// (`MAX_HELD`, 256): all of them arrive, in order, with reads of up to
/// 64 KiB.
#[tokio::test]
async fn a_long_burst_of_qos0_messages_arrives_whole_and_in_order() {
    let config = mqtt_broker::Config {
        max_queued_messages: 100_000,
        ..mqtt_broker::Config::default()
    };
    let broker = broker_with(config).await;
    let addr = broker.local_addr();
    let mut sub = RawClient::connect(addr, V5, "sub").await;
    sub.subscribe(1, "t", QoS::AtMostOnce).await;
    let mut publisher = RawClient::connect(addr, V5, "pub").await;
    const N: u32 = 20_000;
    let payloads: Vec<[u8; 4]> = (0..N).map(u32::to_be_bytes).collect();
    let packets: Vec<Packet<'_>> = payloads
        .iter()
        .map(|b| Packet::Publish(publish("t", b, QoS::AtMostOnce, 0, false)))
        .collect();
    publisher.send_burst(&packets).await;
    for i in 0..N {
        let r = sub.recv().await;
        let Packet::Publish(p) = r.packet() else {
            panic!("expected PUBLISH, got {:?}", r.packet());
        };
        assert_eq!(p.payload, i.to_be_bytes(), "message {i}");
    }
    sub.expect_nothing_pending().await;
    broker.shutdown().await;
}
