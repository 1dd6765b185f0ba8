//! MQTT 5 topic aliases in both directions: the publisher uses the aliases
//! the broker allows (Topic Alias Maximum in CONNACK), the subscriber
//! announces its own maximum and resolves the aliases the broker sends; every
//! message arrives with its full topic.

mod common;

use common::*;
use mqtt_client::{ProtocolVersion, QoS};

#[tokio::test]
async fn aliases_are_used_and_resolved_both_ways() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut so = opts(addr, ProtocolVersion::V5, "alias-sub");
    so.topic_alias_maximum = 4;
    let (sub, mut messages) = connect(so).await;
    sub.subscribe("alias/#", QoS::AtLeastOnce).await.unwrap();

    let (publisher, _) = connect(opts(addr, ProtocolVersion::V5, "alias-pub")).await;
    // More topics than the subscriber allows aliases for, each used twice.
    let topics: Vec<String> = (0..6).map(|i| format!("alias/t{i}")).collect();
    for round in 0..2 {
        for t in &topics {
            publisher
                .publish(t.as_str(), format!("{t} {round}"), QoS::AtLeastOnce, false)
                .await
                .unwrap();
        }
    }
    for round in 0..2 {
        for t in &topics {
            let m = within("aliased message", messages.recv()).await.unwrap();
            assert_eq!(m.topic, *t);
            assert_eq!(m.payload_str(), Some(format!("{t} {round}").as_str()));
        }
    }
    publisher.disconnect().await.unwrap();
    sub.disconnect().await.unwrap();
    broker.shutdown().await;
}
