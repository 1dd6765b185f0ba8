//! Payloads are opaque bytes (MQTT 3.1.1 and 5.0, section 3.3.3): every byte
//! value, an empty payload and a 10 MB payload arrive byte-identical, at
//! every QoS, for 3.1.1 and 5.0.

mod common;

use common::*;
use mqtt_codec::QoS;

/// A payload holding every byte value 0..=255, and an empty one, arrive
/// unchanged at QoS 0, 1 and 2.
#[tokio::test]
async fn binary_payload_with_every_byte_value_arrives_unchanged() {
    let every_byte: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "bin", QoS::ExactlyOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            for payload in [&every_byte[..], &[]] {
                publisher
                    .publish_flow(publish("bin", payload, qos, 1, false))
                    .await;
                let got = sub.recv_publish().await;
                let p = got.publish();
                assert_eq!(p.qos_pid.qos(), qos);
                assert!(p.payload == payload, "payload changed at {qos:?}");
                sub.ack_delivery(&p).await;
            }
        }
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// A 10 MB payload arrives byte for byte.
#[tokio::test]
async fn ten_megabyte_payload_arrives_unchanged() {
    let big: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for v in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub = RawClient::connect(addr, v, "sub").await;
        sub.subscribe(1, "big", QoS::AtLeastOnce).await;
        let mut publisher = RawClient::connect(addr, v, "pub").await;
        publisher
            .publish_flow(publish("big", &big, QoS::AtLeastOnce, 1, false))
            .await;
        let got = sub.recv_publish().await;
        let p = got.publish();
        assert_eq!(p.topic, "big");
        assert_eq!(p.payload.len(), big.len());
        assert!(p.payload == &big[..], "10 MB payload changed");
        sub.ack_delivery(&p).await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}
