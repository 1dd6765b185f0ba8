//! On session resume the broker resends what the session owes, but never
//! more than the reconnected client's Receive Maximum at once
//! [MQTT-5: 3.3.4-9]; the rest follows as acknowledgements free the window.

mod common;

use common::*;
use mqtt_codec::{Packet, Property, ProtocolVersion, QoS};

#[tokio::test]
async fn resend_on_resume_respects_the_new_receive_maximum() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let v5 = ProtocolVersion::V5;
    let persistent = [
        Property::SessionExpiryInterval(300),
        Property::ReceiveMaximum(10),
    ];
    let mut sub = RawClient::connect_props(addr, v5, "window", true, &persistent).await;
    sub.subscribe(1, "w/#", QoS::AtLeastOnce).await;

    let mut publisher = RawClient::connect(addr, v5, "pub").await;
    for i in 1..=5u16 {
        let payload = [i as u8];
        publisher
            .send(&Packet::Publish(publish(
                "w/x",
                &payload,
                QoS::AtLeastOnce,
                i,
                false,
            )))
            .await;
    }
    // All five arrive; none is acknowledged.
    for _ in 0..5 {
        let p = sub.recv_publish().await;
        assert!(!p.publish().dup);
    }
    drop(sub);

    // Back with a window of 2: two resent with DUP, then nothing more.
    let resume = [
        Property::SessionExpiryInterval(300),
        Property::ReceiveMaximum(2),
    ];
    let mut c = connect_packet(v5, "window", false);
    c.properties = mqtt_codec::Properties::from_slice(&resume);
    let mut sub = RawClient::connect_session(addr, c, true).await;
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    assert!(first.publish().dup && second.publish().dup);
    assert_eq!(
        (first.publish().payload, second.publish().payload),
        (&[1u8][..], &[2u8][..])
    );
    sub.expect_nothing_pending().await;

    // Each acknowledgement lets exactly one more through.
    let pid = first.publish().qos_pid.pid().expect("QoS 1 has an id");
    sub.send(&Packet::PubAck(mqtt_codec::PubResp::new(pid)))
        .await;
    let third = sub.recv_publish().await;
    assert_eq!(third.publish().payload, &[3u8][..]);
    assert!(third.publish().dup);
    sub.expect_nothing_pending().await;
    broker.shutdown().await;
}
