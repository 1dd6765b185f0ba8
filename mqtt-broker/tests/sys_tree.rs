//! `$SYS/broker/...` has the topics of Mosquitto 2's tree that monitoring
//! tools read (mosquitto(8), "BROKER STATUS"), with values that follow
//! what clients do.

mod common;

use std::collections::HashMap;

use common::*;
use mqtt_broker::Config;
use mqtt_codec::{ProtocolVersion, QoS};

/// Mosquitto 2's `$SYS/broker/` topics that this broker publishes too
/// (the README's table lists the rest).
const MOSQUITTO_TOPICS: &[&str] = &[
    "version",
    "uptime",
    "clients/connected",
    "clients/active",
    "clients/disconnected",
    "clients/inactive",
    "clients/total",
    "clients/maximum",
    "clients/expired",
    "messages/received",
    "messages/sent",
    "messages/stored",
    "store/messages/count",
    "store/messages/bytes",
    "publish/messages/received",
    "publish/messages/sent",
    "publish/messages/dropped",
    "publish/bytes/received",
    "publish/bytes/sent",
    "bytes/received",
    "bytes/sent",
    "subscriptions/count",
    "retained messages/count",
    "load/messages/received/1min",
    "load/messages/received/5min",
    "load/messages/received/15min",
    "load/messages/sent/1min",
    "load/publish/received/1min",
    "load/publish/sent/15min",
    "load/publish/dropped/5min",
    "load/bytes/received/1min",
    "load/bytes/sent/1min",
    "load/connections/1min",
    "load/sockets/15min",
];

async fn sys_broker() -> mqtt_broker::BrokerHandle {
    broker_with(Config {
        sys_interval_secs: 1,
        ..Config::ephemeral()
    })
    .await
}

/// Reads `$SYS` publishes until `done` says the values seen are enough.
async fn watch_sys(
    client: &mut RawClient,
    mut done: impl FnMut(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let mut seen = HashMap::new();
    while !done(&seen) {
        let got = client.recv_publish().await;
        let p = got.publish();
        let name = p.topic.strip_prefix("$SYS/broker/").unwrap_or(p.topic);
        seen.insert(
            name.to_string(),
            String::from_utf8_lossy(p.payload).into_owned(),
        );
    }
    seen
}

/// Every topic of the list is published, load averages as numbers with two
/// decimals, uptime in Mosquitto's "N seconds".
#[tokio::test]
async fn sys_has_mosquittos_topics() {
    let broker = sys_broker().await;
    let mut c = RawClient::connect(broker.local_addr(), ProtocolVersion::V3_1_1, "mon").await;
    c.subscribe(1, "$SYS/broker/#", QoS::AtMostOnce).await;
    let seen = watch_sys(&mut c, |s| {
        MOSQUITTO_TOPICS.iter().all(|t| s.contains_key(*t))
    })
    .await;
    assert!(seen["uptime"].ends_with(" seconds"), "{}", seen["uptime"]);
    let load = &seen["load/messages/received/1min"];
    assert!(
        load.parse::<f64>().is_ok() && load.split('.').nth(1).map(str::len) == Some(2),
        "{load}"
    );
    broker.shutdown().await;
}

/// Messages queued for an offline persistent session are counted in
/// store/messages/count and bytes, and the session in clients/disconnected
/// (clients/inactive).
#[tokio::test]
async fn store_messages_and_disconnected_clients_are_counted() {
    let broker = sys_broker().await;
    let addr = broker.local_addr();
    let mut away =
        RawClient::connect_with(addr, connect_packet(ProtocolVersion::V3_1_1, "away", false)).await;
    away.subscribe(1, "q/#", QoS::AtLeastOnce).await;
    away.disconnect().await;
    let mut publ = RawClient::connect(addr, ProtocolVersion::V3_1_1, "pub").await;
    publ.publish_flow(publish("q/1", b"1234", QoS::AtLeastOnce, 1, false))
        .await;
    publ.publish_flow(publish("q/2", b"567890", QoS::AtLeastOnce, 2, false))
        .await;

    let mut mon = RawClient::connect(addr, ProtocolVersion::V3_1_1, "mon").await;
    mon.subscribe(1, "$SYS/broker/#", QoS::AtMostOnce).await;
    // Values of one update arrive one by one: wait until all three agree
    // (the receive fails the test after its timeout if they never do).
    watch_sys(&mut mon, |s| {
        s.get("store/messages/count").map(String::as_str) == Some("2")
            && s.get("store/messages/bytes").map(String::as_str) == Some("10")
            && s.get("clients/disconnected").map(String::as_str) == Some("1")
    })
    .await;
    broker.shutdown().await;
}

/// A session whose expiry interval runs out is counted in clients/expired.
/// [MQTT-3.1.2-23]
#[tokio::test]
async fn an_expired_session_is_counted() {
    let broker = sys_broker().await;
    let addr = broker.local_addr();
    let c = RawClient::connect_props(
        addr,
        ProtocolVersion::V5,
        "brief",
        false,
        &[mqtt_codec::Property::SessionExpiryInterval(1)],
    )
    .await;
    c.disconnect().await;
    let mut mon = RawClient::connect(addr, ProtocolVersion::V3_1_1, "mon").await;
    mon.subscribe(1, "$SYS/broker/clients/expired", QoS::AtMostOnce)
        .await;
    // The session ends one second after its client left; the next update
    // says so (the receive fails the test after its timeout otherwise).
    watch_sys(&mut mon, |s| {
        s.get("clients/expired").map(String::as_str) == Some("1")
    })
    .await;
    broker.shutdown().await;
}
