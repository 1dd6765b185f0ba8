//! Orderly shutdown: every connected client is told (MQTT 5: DISCONNECT
//! 0x8B, Server shutting down) and closed, and `shutdown` returns once they
//! are gone. Wills of clients closed this way are published, as for any
//! close the client did not ask for.

mod common;

use common::*;
use mqtt_codec::{ProtocolVersion, QoS, ReasonCode};

/// [MQTT-5: 3.14.0] the server may send DISCONNECT before closing; on
/// shutdown it carries 0x8B. A 3.1.1 client's socket is just closed.
#[tokio::test]
async fn shutdown_disconnects_every_client_with_server_shutting_down() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut v5 = RawClient::connect(addr, ProtocolVersion::V5, "v5").await;
    let mut v3 = RawClient::connect(addr, ProtocolVersion::V3_1_1, "v3").await;
    // Both are running (not still in CONNECT) before the shutdown starts.
    v5.expect_nothing_pending().await;
    v3.expect_nothing_pending().await;
    let stopped = tokio::spawn(broker.shutdown());
    v5.expect_closed_with(ReasonCode::ServerShuttingDown).await;
    v3.expect_closed_with(ReasonCode::ServerShuttingDown).await;
    tokio::time::timeout(TIMEOUT, stopped)
        .await
        .expect("shutdown returns once the clients are closed")
        .unwrap();
}

/// A busy subscriber is closed too: shutdown does not wait for its queue.
#[tokio::test]
async fn shutdown_closes_a_subscriber_with_queued_messages() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut sub = RawClient::connect(addr, ProtocolVersion::V5, "sub").await;
    sub.subscribe(1, "t", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect(addr, ProtocolVersion::V5, "pub").await;
    for i in 1..=50 {
        publisher
            .publish_flow(publish("t", b"x", QoS::AtLeastOnce, i, false))
            .await;
    }
    let stopped = tokio::spawn(broker.shutdown());
    // Whatever was already written may arrive first; then the DISCONNECT.
    let before = sub.expect_close().await;
    let last = before.last().expect("a DISCONNECT before the close");
    assert_server_disconnect(last, ReasonCode::ServerShuttingDown);
    tokio::time::timeout(TIMEOUT, stopped)
        .await
        .expect("shutdown returns")
        .unwrap();
}
