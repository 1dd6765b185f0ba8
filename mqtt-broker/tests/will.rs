//! The will message (MQTT 3.1.1 section 3.1.2.5, MQTT 5 sections 3.1.2.5
//! and 3.1.3.2): when it is published, when it is not, its retain flag and
//! properties, and the MQTT 5 Will Delay Interval.

mod common;

use std::time::Duration;

// Tokio's clock: virtual in the tests that run on paused time.
use tokio::time::Instant;

use common::*;
use mqtt_codec::{
    Connect, Disconnect, LastWill, Packet, Properties, Property, ProtocolVersion, QoS, ReasonCode,
};

/// A will on `will/<client id>` with payload `gone`, QoS 0, and MQTT 5
/// will properties `props`.
fn will_connect<'a>(
    version: ProtocolVersion,
    client_id: &'a str,
    topic: &'a str,
    props: &'a [Property<'a>],
) -> Connect<'a> {
    Connect {
        will: Some(LastWill {
            topic,
            payload: b"gone",
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::from_slice(props),
        }),
        ..connect_packet(version, client_id, true)
    }
}

/// The will as a subscriber with a QoS 0 subscription receives it.
fn will_publish(topic: &str) -> Packet<'_> {
    Packet::Publish(publish(topic, b"gone", QoS::AtMostOnce, 0, false))
}

/// A client subscribed to `will/#` at QoS 0.
async fn watcher(addr: std::net::SocketAddr, version: ProtocolVersion) -> RawClient {
    let mut w = RawClient::connect(addr, version, "watcher").await;
    w.subscribe(1, "will/#", QoS::AtMostOnce).await;
    w
}

/// Proves that no will reached `watcher` before now: a marker message
/// published now must be the next packet it gets, since both would travel
/// through its session queue in order.
async fn expect_marker_next(addr: std::net::SocketAddr, watcher: &mut RawClient) {
    let mut m = RawClient::connect(addr, watcher.version, "marker").await;
    m.send(&Packet::Publish(publish(
        "will/marker",
        b"-",
        QoS::AtMostOnce,
        0,
        false,
    )))
    .await;
    m.disconnect_and_wait().await;
    watcher
        .expect(&Packet::Publish(publish(
            "will/marker",
            b"-",
            QoS::AtMostOnce,
            0,
            false,
        )))
        .await;
}

/// A 5.0 CONNECT with CONNECT properties `session` (its Session Expiry
/// Interval) and a will on `will/w` with `will_props` (its delay).
fn delayed_will_connect<'a>(
    client_id: &'a str,
    session: &'a [Property<'a>],
    will_props: &'a [Property<'a>],
) -> Connect<'a> {
    Connect {
        properties: Properties::from_slice(session),
        ..will_connect(ProtocolVersion::V5, client_id, "will/w", will_props)
    }
}

/// [MQTT-3.1.1/5: 3.1.2-8] the will is published when the network connection
/// closes without DISCONNECT.
#[tokio::test]
async fn will_is_published_when_the_network_connection_drops() {
    for version in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut watcher = watcher(addr, version).await;
        let w = RawClient::connect_with(addr, will_connect(version, "w", "will/w", &[])).await;
        drop(w);
        watcher.expect(&will_publish("will/w")).await;
        watcher.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// [MQTT-3.1.1/5: 3.1.2-8, MQTT-3.1.1: 3.1.2-24] the server closes a client that is silent
/// for 1.5 times its keep alive (5.0: DISCONNECT 0x8D first), and publishes
/// its will.
#[tokio::test(start_paused = true)]
async fn will_is_published_on_keep_alive_timeout() {
    for version in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut watcher = watcher(addr, version).await;
        let start = Instant::now();
        let mut connect = will_connect(version, "w", "will/w", &[]);
        connect.keep_alive = 1;
        let mut w = RawClient::connect_with(addr, connect).await;
        w.expect_closed_with(ReasonCode::KeepAliveTimeout).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1400),
            "closed after {waited:?}"
        );
        watcher.expect(&will_publish("will/w")).await;
        watcher.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// [MQTT-3.1.1/5: 3.1.2-8] a protocol error closes the connection and publishes the
/// will (here a PUBLISH with QoS 3, which is malformed).
#[tokio::test]
async fn will_is_published_on_protocol_error() {
    for version in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut watcher = watcher(addr, version).await;
        let mut w = RawClient::connect_with(addr, will_connect(version, "w", "will/w", &[])).await;
        w.send_raw(&[0x36, 0x06, 0x00, 0x01, b't', 0x00, 0x01, 0x00])
            .await;
        w.expect_closed_with(ReasonCode::MalformedPacket).await;
        watcher.expect(&will_publish("will/w")).await;
        watcher.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// [MQTT-3.1.1: 3.1.4-2] a connection taken over by another with the same client
/// identifier is closed by the server, so its will is published (5.0: no
/// Will Delay Interval here).
#[tokio::test]
async fn will_is_published_on_takeover() {
    for version in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut watcher = watcher(addr, version).await;
        let mut w = RawClient::connect_with(addr, will_connect(version, "w", "will/w", &[])).await;
        let second = RawClient::connect(addr, version, "w").await;
        w.expect_closed_with(ReasonCode::SessionTakenOver).await;
        watcher.expect(&will_publish("will/w")).await;
        watcher.expect_nothing_pending().await;
        // The new connection's own session has no will.
        second.disconnect_and_wait().await;
        expect_marker_next(addr, &mut watcher).await;
        broker.shutdown().await;
    }
}

/// [MQTT-3.1.1/5: 3.1.2-10] after a normal DISCONNECT the will is discarded, not
/// published.
#[tokio::test]
async fn will_is_not_published_after_disconnect() {
    for version in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut watcher = watcher(addr, version).await;
        let w = RawClient::connect_with(addr, will_connect(version, "w", "will/w", &[])).await;
        w.disconnect_and_wait().await;
        expect_marker_next(addr, &mut watcher).await;
        watcher.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// (5.0, section 3.14.2.1) DISCONNECT with reason 0x04 (Disconnect with
/// Will Message) publishes the will.
#[tokio::test]
async fn v5_disconnect_with_will_message_publishes_the_will() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut watcher = watcher(addr, ProtocolVersion::V5).await;
    let mut w =
        RawClient::connect_with(addr, will_connect(ProtocolVersion::V5, "w", "will/w", &[])).await;
    w.send(&Packet::Disconnect(Disconnect::new(
        ReasonCode::DisconnectWithWillMessage,
    )))
    .await;
    let got = w.expect_close().await;
    assert!(got.is_empty(), "{got:?}");
    watcher.expect(&will_publish("will/w")).await;
    watcher.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// [MQTT-3.1.1: 3.1.2-17] / [MQTT-5: 3.1.2-15] a will with the retain
/// flag is published as a retained message: an existing subscriber gets
/// it with RETAIN 0 [MQTT-3.1.1: 3.3.1-9], a later one with RETAIN 1.
#[tokio::test]
async fn will_with_retain_flag_is_stored_as_retained() {
    for version in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut watcher = watcher(addr, version).await;
        let mut connect = will_connect(version, "w", "will/w", &[]);
        if let Some(will) = connect.will.as_mut() {
            will.retain = true;
        }
        let w = RawClient::connect_with(addr, connect).await;
        drop(w);
        watcher.expect(&will_publish("will/w")).await;
        assert_eq!(broker.retained_count(), 1, "{version:?}");

        let mut late = RawClient::connect(addr, version, "late").await;
        late.subscribe(1, "will/w", QoS::AtMostOnce).await;
        late.expect(&Packet::Publish(publish(
            "will/w",
            b"gone",
            QoS::AtMostOnce,
            0,
            true,
        )))
        .await;
        late.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// (5.0, section 3.1.3.2.2) with a Will Delay Interval the will is
/// published when the delay has passed, not when the connection drops.
#[tokio::test(start_paused = true)]
async fn v5_will_is_published_after_its_delay() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut watcher = watcher(addr, ProtocolVersion::V5).await;
    let session = [Property::SessionExpiryInterval(3600)];
    let will_props = [Property::WillDelayInterval(2)];
    let w = RawClient::connect_with(addr, delayed_will_connect("w", &session, &will_props)).await;
    let start = Instant::now();
    drop(w);
    expect_marker_next(addr, &mut watcher).await;
    watcher.expect(&will_publish("will/w")).await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "will after {waited:?}"
    );
    watcher.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// [MQTT-5: 3.1.3-9] a reconnection to the session before the Will
/// Delay Interval has passed cancels the will.
#[tokio::test(start_paused = true)]
async fn v5_reconnect_within_the_will_delay_cancels_the_will() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut watcher = watcher(addr, ProtocolVersion::V5).await;
    let session = [Property::SessionExpiryInterval(3600)];
    let will_props = [Property::WillDelayInterval(1)];
    let w = RawClient::connect_with(addr, delayed_will_connect("w", &session, &will_props)).await;
    drop(w);
    let mut again = connect_packet(ProtocolVersion::V5, "w", false);
    again.properties = Properties::from_slice(&session);
    let mut w = RawClient::connect_session(addr, again, true).await;
    // Let the will delay run out; the will must not follow.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    expect_marker_next(addr, &mut watcher).await;
    watcher.expect_nothing_pending().await;
    w.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// (5.0, section 3.1.3.2.2) the will is published when the session ends,
/// if that comes before the end of the Will Delay Interval.
#[tokio::test(start_paused = true)]
async fn v5_will_is_published_when_the_session_ends_before_the_delay() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut watcher = watcher(addr, ProtocolVersion::V5).await;
    let session = [Property::SessionExpiryInterval(1)];
    let will_props = [Property::WillDelayInterval(3600)];
    let w = RawClient::connect_with(addr, delayed_will_connect("w", &session, &will_props)).await;
    let start = Instant::now();
    drop(w);
    watcher.expect(&will_publish("will/w")).await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "will after {waited:?}"
    );
    assert_eq!(
        broker.session_count(),
        1,
        "only the watcher's session is left"
    );
    watcher.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// (5.0, section 3.1.3.2) will properties travel with the will to the
/// subscriber (Payload Format Indicator, Content Type, User Property, in
/// order); the Will Delay Interval is the server's and is not forwarded.
#[tokio::test]
async fn v5_will_properties_reach_the_subscriber() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut watcher = watcher(addr, ProtocolVersion::V5).await;
    let will_props = [
        Property::WillDelayInterval(0),
        Property::PayloadFormatIndicator(true),
        Property::ContentType("text/plain"),
        Property::UserProperty("k", "v1"),
        Property::UserProperty("k", "v2"),
    ];
    let w = RawClient::connect_with(
        addr,
        will_connect(ProtocolVersion::V5, "w", "will/w", &will_props),
    )
    .await;
    drop(w);
    let got = watcher.recv().await;
    let p = got.publish();
    assert_eq!(
        (p.topic, p.payload, p.qos_pid.qos()),
        ("will/w", &b"gone"[..], QoS::AtMostOnce)
    );
    let want = [
        Property::PayloadFormatIndicator(true),
        Property::ContentType("text/plain"),
        Property::UserProperty("k", "v1"),
        Property::UserProperty("k", "v2"),
    ];
    assert_eq!(
        props_by_id(p.properties),
        props_by_id(Properties::from_slice(&want))
    );
    watcher.expect_nothing_pending().await;
    broker.shutdown().await;
}
