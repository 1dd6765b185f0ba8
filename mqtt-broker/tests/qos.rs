//! QoS flows over TCP (MQTT 3.1.1 and 5.0, sections 4.3 and 4.6): what the
//! broker answers a publisher at each QoS, how it delivers to a subscriber at
//! each QoS, the downgrade to the subscription's QoS, QoS 2 duplicates, and
//! the order of acknowledgements. Every rule runs for 3.1.1 and 5.0.

mod common;

use common::*;
use mqtt_broker::Config;
use mqtt_codec::{Packet, ProtocolVersion, PubResp, Publish, QoS, ReasonCode};

/// A PUBLISH as the broker forwards it: the publisher's, at `qos`, RETAIN 0.
fn forwarded<'a>(topic: &'a str, payload: &'a [u8], qos: QoS) -> Publish<'a> {
    publish(topic, payload, qos, 1, false)
}

/// A QoS 0 PUBLISH is not acknowledged [MQTT-3.1.1/5: 4.3.1-1].
#[tokio::test]
async fn qos0_publish_is_not_acknowledged() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "t", QoS::AtMostOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;

        publisher
            .send(&Packet::Publish(publish(
                "t",
                b"m",
                QoS::AtMostOnce,
                0,
                false,
            )))
            .await;
        sub.expect_publish(forwarded("t", b"m", QoS::AtMostOnce))
            .await;
        publisher.expect_nothing_pending().await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// A QoS 1 PUBLISH gets a PUBACK with its packet identifier [MQTT-3.1.1: 4.3.2-2].
#[tokio::test]
async fn qos1_publish_gets_puback_with_same_id() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "t", QoS::AtLeastOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;

        publisher
            .send(&Packet::Publish(publish(
                "t",
                b"m",
                QoS::AtLeastOnce,
                0x1234,
                false,
            )))
            .await;
        publisher.expect_exact(&Packet::PubAck(ack(0x1234))).await;
        publisher.expect_nothing_pending().await;
        let got = sub.recv_publish().await;
        sub.ack_delivery(&got.publish()).await;
        broker.shutdown().await;
    }
}

/// A QoS 2 PUBLISH gets PUBREC; PUBREL then gets PUBCOMP, all with its
/// packet identifier [MQTT-5: 4.3.3-2], [MQTT-5: 4.3.3-9], [MQTT-5: 4.3.3-11].
#[tokio::test]
async fn qos2_publish_gets_pubrec_then_pubrel_gets_pubcomp() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "t", QoS::ExactlyOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;

        publisher
            .send(&Packet::Publish(publish(
                "t",
                b"m",
                QoS::ExactlyOnce,
                7,
                false,
            )))
            .await;
        publisher.expect_exact(&Packet::PubRec(ack(7))).await;
        publisher.expect_nothing_pending().await;
        publisher.send(&Packet::PubRel(ack(7))).await;
        publisher.expect_exact(&Packet::PubComp(ack(7))).await;
        publisher.expect_nothing_pending().await;

        let got = sub.recv_publish().await;
        sub.ack_delivery(&got.publish()).await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// A QoS 1 delivery stays in flight until the subscriber's PUBACK: with an
/// inflight window of one, the next message waits for it [MQTT-3.1.1: 4.3.2-1].
#[tokio::test]
async fn qos1_delivery_awaits_puback() {
    for v in V3_AND_V5 {
        let broker = broker_with(Config {
            max_inflight: 1,
            ..Config::ephemeral()
        })
        .await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "t", QoS::AtLeastOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;
        publisher
            .publish_flow(publish("t", b"one", QoS::AtLeastOnce, 1, false))
            .await;
        publisher
            .publish_flow(publish("t", b"two", QoS::AtLeastOnce, 2, false))
            .await;

        let first = sub
            .expect_publish(forwarded("t", b"one", QoS::AtLeastOnce))
            .await
            .unwrap();
        sub.expect_nothing_pending().await;
        sub.send(&Packet::PubAck(PubResp::new(first))).await;
        let second = sub
            .expect_publish(forwarded("t", b"two", QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_ne!(first, second, "a packet id in use was reused");
        sub.send(&Packet::PubAck(PubResp::new(second))).await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// A QoS 2 delivery: PUBLISH, PUBREC from the subscriber, PUBREL from the
/// broker, PUBCOMP from the subscriber; the message counts against the
/// inflight window until PUBCOMP [MQTT-5: 4.3.3-1..6].
#[tokio::test]
async fn qos2_delivery_publish_pubrec_pubrel_pubcomp() {
    for v in V3_AND_V5 {
        let broker = broker_with(Config {
            max_inflight: 1,
            ..Config::ephemeral()
        })
        .await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "t", QoS::ExactlyOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;
        publisher
            .publish_flow(publish("t", b"one", QoS::ExactlyOnce, 1, false))
            .await;
        publisher
            .publish_flow(publish("t", b"two", QoS::ExactlyOnce, 2, false))
            .await;

        let pid = sub
            .expect_publish(forwarded("t", b"one", QoS::ExactlyOnce))
            .await
            .unwrap();
        sub.expect_nothing_pending().await;
        sub.send(&Packet::PubRec(PubResp::new(pid))).await;
        sub.expect_exact(&Packet::PubRel(PubResp::new(pid))).await;
        sub.expect_nothing_pending().await;
        sub.send(&Packet::PubComp(PubResp::new(pid))).await;
        let pid = sub
            .expect_publish(forwarded("t", b"two", QoS::ExactlyOnce))
            .await
            .unwrap();
        sub.send(&Packet::PubRec(PubResp::new(pid))).await;
        sub.expect_exact(&Packet::PubRel(PubResp::new(pid))).await;
        sub.send(&Packet::PubComp(PubResp::new(pid))).await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// A message is delivered at the lower of its QoS and the subscription's
/// [MQTT-5: 3.8.4-8]: QoS 2 to a QoS 1 subscription arrives at QoS 1, QoS 1 to
/// a QoS 0 subscription at QoS 0, QoS 0 to a QoS 2 subscription at QoS 0.
#[tokio::test]
async fn qos_is_downgraded_to_the_subscription_maximum() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "q1", QoS::AtLeastOnce).await;
        sub.subscribe(2, "q0", QoS::AtMostOnce).await;
        sub.subscribe(3, "q2", QoS::ExactlyOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;

        publisher
            .publish_flow(publish("q1", b"2to1", QoS::ExactlyOnce, 1, false))
            .await;
        let pid = sub
            .expect_publish(forwarded("q1", b"2to1", QoS::AtLeastOnce))
            .await
            .unwrap();
        sub.send(&Packet::PubAck(PubResp::new(pid))).await;

        publisher
            .publish_flow(publish("q0", b"1to0", QoS::AtLeastOnce, 2, false))
            .await;
        sub.expect_publish(forwarded("q0", b"1to0", QoS::AtMostOnce))
            .await;

        publisher
            .publish_flow(publish("q2", b"0to0", QoS::AtMostOnce, 0, false))
            .await;
        sub.expect_publish(forwarded("q2", b"0to0", QoS::AtMostOnce))
            .await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// A QoS 2 PUBLISH repeated with DUP=1 before PUBREL gets another PUBREC and
/// is not delivered again [MQTT-5: 4.3.3-10]. After PUBCOMP the identifier is
/// free: the same identifier starts a new message.
#[tokio::test]
async fn qos2_duplicate_before_pubrel_is_not_redelivered() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "t", QoS::AtMostOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;

        let first = publish("t", b"once", QoS::ExactlyOnce, 5, false);
        publisher.send(&Packet::Publish(first)).await;
        publisher.expect_exact(&Packet::PubRec(ack(5))).await;
        sub.expect_publish(forwarded("t", b"once", QoS::AtMostOnce))
            .await;

        let dup = Publish { dup: true, ..first };
        publisher.send(&Packet::Publish(dup)).await;
        publisher.expect_exact(&Packet::PubRec(ack(5))).await;
        sub.expect_nothing_pending().await;

        publisher.send(&Packet::PubRel(ack(5))).await;
        publisher.expect_exact(&Packet::PubComp(ack(5))).await;
        sub.expect_nothing_pending().await;

        publisher
            .publish_flow(publish("t", b"again", QoS::ExactlyOnce, 5, false))
            .await;
        sub.expect_publish(forwarded("t", b"again", QoS::AtMostOnce))
            .await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// Ten QoS 1 PUBLISH packets in one write are acknowledged in the order they
/// arrived [MQTT-3.1.1/5: 4.6.0-2].
#[tokio::test]
async fn pubacks_follow_publish_order() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "t", QoS::AtMostOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;

        let mut burst = Vec::new();
        for pid in 1..=10u16 {
            let payload = [pid as u8];
            let p = Packet::Publish(publish("t", &payload, QoS::AtLeastOnce, pid, false));
            let start = burst.len();
            burst.resize(start + p.encoded_len(v).unwrap(), 0);
            p.encode(v, &mut burst[start..]).unwrap();
        }
        publisher.send_raw(&burst).await;
        for pid in 1..=10u16 {
            publisher.expect_exact(&Packet::PubAck(ack(pid))).await;
        }
        publisher.expect_nothing_pending().await;
        for n in 1..=10u8 {
            sub.expect_publish(forwarded("t", &[n], QoS::AtMostOnce))
                .await;
        }
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// Mixed QoS 1 and QoS 2 PUBLISH packets in one write get PUBACK and PUBREC in
/// arrival order, and PUBRELs in one write get PUBCOMPs in order
/// [MQTT-3.1.1/5: 4.6.0-2], [MQTT-3.1.1/5: 4.6.0-3].
#[tokio::test]
async fn mixed_acknowledgements_follow_arrival_order() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "t", QoS::AtMostOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;

        let encode_all = |packets: &[Packet<'_>]| {
            let mut out = Vec::new();
            for p in packets {
                let start = out.len();
                out.resize(start + p.encoded_len(v).unwrap(), 0);
                p.encode(v, &mut out[start..]).unwrap();
            }
            out
        };
        let qos = |pid: u16| {
            if pid.is_multiple_of(2) {
                QoS::ExactlyOnce
            } else {
                QoS::AtLeastOnce
            }
        };
        let publishes: Vec<Packet<'_>> = (1..=8u16)
            .map(|pid| Packet::Publish(publish("t", b"x", qos(pid), pid, false)))
            .collect();
        publisher.send_raw(&encode_all(&publishes)).await;
        for pid in 1..=8u16 {
            let expected = match qos(pid) {
                QoS::ExactlyOnce => Packet::PubRec(ack(pid)),
                _ => Packet::PubAck(ack(pid)),
            };
            publisher.expect_exact(&expected).await;
        }
        let rels: Vec<Packet<'_>> = [8u16, 2, 6, 4]
            .iter()
            .map(|&pid| Packet::PubRel(ack(pid)))
            .collect();
        publisher.send_raw(&encode_all(&rels)).await;
        for pid in [8u16, 2, 6, 4] {
            publisher.expect_exact(&Packet::PubComp(ack(pid))).await;
        }
        publisher.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// A PUBREL for an identifier the broker does not know is still answered
/// with PUBCOMP; in 5.0 with reason 0x92 Packet Identifier not found.
#[tokio::test]
async fn pubrel_for_unknown_id_gets_pubcomp() {
    for v in V3_AND_V5 {
        let broker = broker().await;
        let mut c = RawClient::connect(broker.local_addr(), v, "c").await;
        c.send(&Packet::PubRel(ack(42))).await;
        let comp = match v {
            ProtocolVersion::V5 => PubResp {
                reason: ReasonCode::PacketIdentifierNotFound,
                ..ack(42)
            },
            _ => ack(42),
        };
        c.expect_exact(&Packet::PubComp(comp)).await;
        c.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}
