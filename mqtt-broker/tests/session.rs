//! Sessions (MQTT 3.1.1 sections 3.1.2.4 and 4.4, MQTT 5 sections 3.1.2.4,
//! 3.1.2.11.2 and 4.4): resuming and discarding a session, what is queued
//! for an offline client, what is resent on resume, takeover by a second
//! connection, and the MQTT 5 Session Expiry Interval.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mqtt_codec::{
    Connect, Disconnect, Packet, Properties, Property, ProtocolVersion, PubResp, QoS, ReasonCode,
};

/// Session Expiry Interval for MQTT 5 sessions that must outlive the test.
const LONG_EXPIRY: &[Property<'static>] = &[Property::SessionExpiryInterval(3600)];

/// A CONNECT for a session that outlives its connection: clean session 0
/// (3.1.1), or clean start 0 with a long Session Expiry Interval (5.0).
/// With `clean_start` the old session is discarded first.
fn persistent(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect<'_> {
    let mut c = connect_packet(version, client_id, clean_start);
    if version.is_v5() {
        c.properties = Properties::from_slice(LONG_EXPIRY);
    }
    c
}

/// A 5.0 CONNECT with clean start 0 and the given Session Expiry Interval
/// (`None`: the property is left out, which means 0).
fn v5_with_expiry<'a>(client_id: &'a str, expiry: &'a [Property<'a>]) -> Connect<'a> {
    let mut c = connect_packet(ProtocolVersion::V5, client_id, false);
    c.properties = Properties::from_slice(expiry);
    c
}

/// [MQTT-3.1.1: 3.1.2-4] / [MQTT-5: 3.2.2-2] a client that reconnects
/// without clean start resumes its session: Session Present 1, and its
/// subscriptions still deliver.
#[tokio::test]
async fn persistent_session_is_resumed_with_session_present() {
    for version in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub =
            RawClient::connect_session(addr, persistent(version, "sub", false), false).await;
        sub.subscribe(1, "s/t", QoS::AtLeastOnce).await;
        sub.disconnect_and_wait().await;

        let mut sub =
            RawClient::connect_session(addr, persistent(version, "sub", false), true).await;
        let mut publisher = RawClient::connect(addr, version, "pub").await;
        let reason = publisher
            .publish_flow(publish("s/t", b"hello", QoS::AtLeastOnce, 1, false))
            .await;
        assert_eq!(reason, ReasonCode::Success, "{version:?}");
        sub.expect(&Packet::Publish(publish(
            "s/t",
            b"hello",
            QoS::AtLeastOnce,
            1,
            false,
        )))
        .await;
        sub.send(&Packet::PubAck(ack(1))).await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// [MQTT-3.1.1: 3.1.2-6] / [MQTT-5: 3.1.2-4] clean start discards the
/// old session: Session Present 0, nothing queued is delivered, and the old
/// subscriptions are gone.
#[tokio::test]
async fn clean_start_discards_the_session() {
    for version in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub =
            RawClient::connect_session(addr, persistent(version, "sub", false), false).await;
        sub.subscribe(1, "s/t", QoS::AtLeastOnce).await;
        sub.disconnect_and_wait().await;
        // Queued for the offline session.
        let mut publisher = RawClient::connect(addr, version, "pub").await;
        let reason = publisher
            .publish_flow(publish("s/t", b"queued", QoS::AtLeastOnce, 1, false))
            .await;
        assert_eq!(reason, ReasonCode::Success, "{version:?}");

        let mut sub =
            RawClient::connect_session(addr, persistent(version, "sub", true), false).await;
        sub.expect_nothing_pending().await;
        let reason = publisher
            .publish_flow(publish("s/t", b"after", QoS::AtLeastOnce, 2, false))
            .await;
        if version.is_v5() {
            assert_eq!(reason, ReasonCode::NoMatchingSubscribers);
        }
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// [MQTT-3.1.1: 3.1.2-6] a clean session ends with its connection: a
/// later connection without clean session starts a new one.
#[tokio::test]
async fn v311_clean_session_ends_on_disconnect() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut c = RawClient::connect(addr, ProtocolVersion::V3_1_1, "c").await;
    c.subscribe(1, "s/t", QoS::AtMostOnce).await;
    c.disconnect_and_wait().await;
    eventually("session ended", || broker.session_count() == 0).await;
    let mut c = RawClient::connect_session(
        addr,
        connect_packet(ProtocolVersion::V3_1_1, "c", false),
        false,
    )
    .await;
    c.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// QoS 1 and QoS 2 messages that match a subscription of an offline
/// persistent session are queued and delivered when it reconnects
/// [MQTT-3.1.1: 3.1.2-5] / section 3.1.2.4 (5.0).
#[tokio::test]
async fn qos1_and_qos2_published_while_offline_are_delivered_on_reconnect() {
    for version in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub =
            RawClient::connect_session(addr, persistent(version, "sub", false), false).await;
        sub.subscribe(1, "q/#", QoS::ExactlyOnce).await;
        sub.disconnect_and_wait().await;

        let mut publisher = RawClient::connect(addr, version, "pub").await;
        for p in [
            publish("q/1", b"one", QoS::AtLeastOnce, 1, false),
            publish("q/2", b"two", QoS::ExactlyOnce, 2, false),
        ] {
            let reason = publisher.publish_flow(p).await;
            assert_eq!(reason, ReasonCode::Success, "{version:?}");
        }

        let mut sub =
            RawClient::connect_session(addr, persistent(version, "sub", false), true).await;
        let one = publish("q/1", b"one", QoS::AtLeastOnce, 1, false);
        let two = publish("q/2", b"two", QoS::ExactlyOnce, 2, false);
        sub.expect(&Packet::Publish(one)).await;
        sub.expect(&Packet::Publish(two)).await;
        sub.ack_delivery(&one).await;
        sub.ack_delivery(&two).await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// QoS 0 messages are not queued for an offline session (Mosquitto's
/// default; `queue_qos0_messages` turns it on).
#[tokio::test]
async fn qos0_published_while_offline_is_not_queued() {
    for version in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub =
            RawClient::connect_session(addr, persistent(version, "sub", false), false).await;
        sub.subscribe(1, "q/#", QoS::ExactlyOnce).await;
        sub.disconnect_and_wait().await;

        let mut publisher = RawClient::connect(addr, version, "pub").await;
        publisher
            .send(&Packet::Publish(publish(
                "q/0",
                b"zero",
                QoS::AtMostOnce,
                0,
                false,
            )))
            .await;
        // The PUBACK proves the QoS 0 message before it was routed too.
        let reason = publisher
            .publish_flow(publish("q/1", b"one", QoS::AtLeastOnce, 1, false))
            .await;
        assert_eq!(reason, ReasonCode::Success, "{version:?}");

        let mut sub =
            RawClient::connect_session(addr, persistent(version, "sub", false), true).await;
        let one = publish("q/1", b"one", QoS::AtLeastOnce, 1, false);
        sub.expect(&Packet::Publish(one)).await;
        sub.ack_delivery(&one).await;
        sub.expect_nothing_pending().await;
        assert_eq!(broker.stats().dropped_offline_qos0.get(), 1, "{version:?}");
        broker.shutdown().await;
    }
}

/// [MQTT-3.1.1/5: 4.4.0-1] on resume, every unacknowledged PUBLISH is sent again
/// with its original packet identifier and DUP set [MQTT-3.1.1/5: 3.3.1-1].
#[tokio::test]
async fn unacknowledged_publish_is_resent_with_dup_on_resume() {
    for version in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub =
            RawClient::connect_session(addr, persistent(version, "sub", false), false).await;
        sub.subscribe(1, "r/#", QoS::ExactlyOnce).await;
        let mut publisher = RawClient::connect(addr, version, "pub").await;
        publisher
            .publish_flow(publish("r/1", b"one", QoS::AtLeastOnce, 1, false))
            .await;
        publisher
            .publish_flow(publish("r/2", b"two", QoS::ExactlyOnce, 2, false))
            .await;
        let mut one = publish("r/1", b"one", QoS::AtLeastOnce, 1, false);
        let mut two = publish("r/2", b"two", QoS::ExactlyOnce, 2, false);
        sub.expect(&Packet::Publish(one)).await;
        sub.expect(&Packet::Publish(two)).await;
        // Neither is acknowledged: the network connection just ends.
        drop(sub);

        let mut sub =
            RawClient::connect_session(addr, persistent(version, "sub", false), true).await;
        one.dup = true;
        two.dup = true;
        sub.expect(&Packet::Publish(one)).await;
        sub.expect(&Packet::Publish(two)).await;
        sub.ack_delivery(&one).await;
        sub.ack_delivery(&two).await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// [MQTT-3.1.1/5: 4.4.0-1] on resume, a PUBREL whose PUBCOMP never came is sent
/// again (not the PUBLISH: its PUBREC already arrived).
#[tokio::test]
async fn unacknowledged_pubrel_is_resent_on_resume() {
    for version in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut sub =
            RawClient::connect_session(addr, persistent(version, "sub", false), false).await;
        sub.subscribe(1, "r/#", QoS::ExactlyOnce).await;
        let mut publisher = RawClient::connect(addr, version, "pub").await;
        publisher
            .publish_flow(publish("r/2", b"two", QoS::ExactlyOnce, 9, false))
            .await;
        sub.expect(&Packet::Publish(publish(
            "r/2",
            b"two",
            QoS::ExactlyOnce,
            1,
            false,
        )))
        .await;
        sub.send(&Packet::PubRec(ack(1))).await;
        sub.expect_bytes(&[0x62, 0x02, 0x00, 0x01]).await;
        // No PUBCOMP: the network connection just ends.
        drop(sub);

        let mut sub =
            RawClient::connect_session(addr, persistent(version, "sub", false), true).await;
        sub.expect_bytes(&[0x62, 0x02, 0x00, 0x01]).await;
        sub.send(&Packet::PubComp(PubResp::new(pid_(1)))).await;
        sub.expect_nothing_pending().await;
        broker.shutdown().await;
    }
}

/// [MQTT-3.1.1: 3.1.4-2] / [MQTT-5: 3.1.4-3] a second connection with
/// the same client identifier takes the session over: the first is closed
/// (5.0: DISCONNECT 0x8E, Session taken over first) and the second keeps
/// the session.
#[tokio::test]
async fn second_connection_with_the_same_client_id_takes_over() {
    for version in V3_AND_V5 {
        let broker = broker().await;
        let addr = broker.local_addr();
        let mut first =
            RawClient::connect_session(addr, persistent(version, "same", false), false).await;
        first.subscribe(1, "take/t", QoS::AtMostOnce).await;

        let mut second =
            RawClient::connect_session(addr, persistent(version, "same", false), true).await;
        first.expect_closed_with(ReasonCode::SessionTakenOver).await;

        let mut publisher = RawClient::connect(addr, version, "pub").await;
        publisher
            .send(&Packet::Publish(publish(
                "take/t",
                b"x",
                QoS::AtMostOnce,
                0,
                false,
            )))
            .await;
        second
            .expect(&Packet::Publish(publish(
                "take/t",
                b"x",
                QoS::AtMostOnce,
                0,
                false,
            )))
            .await;
        second.expect_nothing_pending().await;
        assert_eq!(broker.session_count(), 2);
        broker.shutdown().await;
    }
}

/// (5.0, section 3.1.2.11.2) with Session Expiry Interval 0 (absent) the
/// session ends when the network connection closes, even without clean
/// start.
#[tokio::test]
async fn v5_session_with_expiry_0_ends_on_disconnect() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut c = RawClient::connect_session(addr, v5_with_expiry("e", &[]), false).await;
    c.subscribe(1, "e/t", QoS::AtLeastOnce).await;
    c.disconnect_and_wait().await;
    eventually("session ended", || broker.session_count() == 0).await;

    let mut c = RawClient::connect_session(addr, v5_with_expiry("e", &[]), false).await;
    let mut publisher = RawClient::connect(addr, ProtocolVersion::V5, "pub").await;
    let reason = publisher
        .publish_flow(publish("e/t", b"x", QoS::AtLeastOnce, 1, false))
        .await;
    assert_eq!(reason, ReasonCode::NoMatchingSubscribers);
    c.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// (5.0) a session with a Session Expiry Interval survives a reconnection
/// within that time.
#[tokio::test]
async fn v5_session_survives_a_reconnect_within_its_expiry() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let expiry = [Property::SessionExpiryInterval(2)];
    let mut c = RawClient::connect_session(addr, v5_with_expiry("e", &expiry), false).await;
    c.subscribe(1, "e/t", QoS::AtMostOnce).await;
    c.disconnect_and_wait().await;

    let mut c = RawClient::connect_session(addr, v5_with_expiry("e", &expiry), true).await;
    let mut publisher = RawClient::connect(addr, ProtocolVersion::V5, "pub").await;
    publisher
        .send(&Packet::Publish(publish(
            "e/t",
            b"x",
            QoS::AtMostOnce,
            0,
            false,
        )))
        .await;
    c.expect(&Packet::Publish(publish(
        "e/t",
        b"x",
        QoS::AtMostOnce,
        0,
        false,
    )))
    .await;
    broker.shutdown().await;
}

/// (5.0) once the Session Expiry Interval has passed without a
/// reconnection, the session is gone: Session Present 0.
#[tokio::test]
async fn v5_session_ends_when_its_expiry_runs_out() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let expiry = [Property::SessionExpiryInterval(1)];
    let mut c = RawClient::connect_session(addr, v5_with_expiry("e", &expiry), false).await;
    c.subscribe(1, "e/t", QoS::AtMostOnce).await;
    let start = Instant::now();
    c.disconnect_and_wait().await;
    eventually("session expired", || broker.session_count() == 0).await;
    let lived = start.elapsed();
    assert!(
        lived >= Duration::from_millis(900),
        "session ended after {lived:?}"
    );

    let mut c = RawClient::connect_session(addr, v5_with_expiry("e", &expiry), false).await;
    c.expect_nothing_pending().await;
    broker.shutdown().await;
}

/// [MQTT-5: 3.14.2-2] a DISCONNECT may not give a session expiry to a
/// session that was to end with its connection (CONNECT had 0): Protocol
/// Error, DISCONNECT 0x82, and the session still ends.
#[tokio::test]
async fn v5_disconnect_setting_expiry_after_0_is_a_protocol_error() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut c = RawClient::connect_session(addr, v5_with_expiry("d", &[]), false).await;
    let props = [Property::SessionExpiryInterval(60)];
    c.send(&Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties: Properties::from_slice(&props),
    }))
    .await;
    c.expect_closed_with(ReasonCode::ProtocolError).await;
    eventually("session ended", || broker.session_count() == 0).await;
    assert_still_serving(addr, ProtocolVersion::V5).await;
    broker.shutdown().await;
}

/// (5.0, section 3.14.2.2.2) DISCONNECT may shorten the Session Expiry
/// Interval: 0 ends the session with the connection.
#[tokio::test]
async fn v5_disconnect_with_expiry_0_ends_the_session() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut c = RawClient::connect_session(addr, v5_with_expiry("d", LONG_EXPIRY), false).await;
    c.subscribe(1, "d/t", QoS::AtMostOnce).await;
    let props = [Property::SessionExpiryInterval(0)];
    c.send(&Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties: Properties::from_slice(&props),
    }))
    .await;
    let got = c.expect_close().await;
    assert!(got.is_empty(), "{got:?}");
    eventually("session ended", || broker.session_count() == 0).await;
    let mut c = RawClient::connect_session(addr, v5_with_expiry("d", LONG_EXPIRY), false).await;
    c.expect_nothing_pending().await;
    broker.shutdown().await;
}
