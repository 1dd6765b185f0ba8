//! The wire capture of `../shared/notes/wire-capture.md`, end to end: a
//! subscriber receives a QoS 0 PUBLISH byte for byte.

mod common;

use common::*;
use mqtt_codec::{Packet, ProtocolVersion, QoS};

#[tokio::test]
async fn qos0_publish_reaches_subscriber_byte_for_byte() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut sub = RawClient::connect(addr, ProtocolVersion::V3_1_1, "sub").await;
    // SUBSCRIBE id 1 `room_temp` QoS 0, then SUBACK id 1 granted QoS 0.
    sub.send_raw(&[
        0x82, 0x0e, 0x00, 0x01, 0x00, 0x09, b'r', b'o', b'o', b'm', b'_', b't', b'e', b'm', b'p',
        0x00,
    ])
    .await;
    sub.expect_bytes(&[0x90, 0x03, 0x00, 0x01, 0x00]).await;

    let mut publisher = RawClient::connect(addr, ProtocolVersion::V3_1_1, "pub").await;
    publisher
        .send(&Packet::Publish(publish(
            "room_temp",
            b"22.5",
            QoS::AtMostOnce,
            0,
            false,
        )))
        .await;

    sub.expect_bytes(&[
        0x30, 0x0f, 0x00, 0x09, 0x72, 0x6f, 0x6f, 0x6d, 0x5f, 0x74, 0x65, 0x6d, 0x70, 0x32, 0x32,
        0x2e, 0x35,
    ])
    .await;
    sub.expect_nothing_pending().await;
    broker.shutdown().await;
}
