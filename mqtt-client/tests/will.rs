//! The will: published when a client vanishes without DISCONNECT, not
//! published after `disconnect()`.

mod common;

use bytes::Bytes;
use common::*;
use mqtt_client::{PublishProperties, QoS, Will};
use mqtt_codec::{Connect, LastWill, Packet, Properties};

fn will(topic: &str, payload: &'static str) -> Will {
    Will {
        topic: topic.into(),
        payload: Bytes::from_static(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        delay_secs: None,
        properties: PublishProperties::default(),
    }
}

/// A client whose TCP connection just dies: a raw socket sends CONNECT with
/// a will, reads CONNACK, and is dropped.
#[tokio::test]
async fn will_published_after_connection_dies() {
    let broker = broker().await;
    let addr = broker.local_addr();
    for version in VERSIONS {
        let (watcher, mut messages) = connect(opts(addr, version, "watcher")).await;
        watcher
            .subscribe("status/+", QoS::AtLeastOnce)
            .await
            .unwrap();

        let mut raw = RawConn::open(addr, version).await;
        raw.send(&Packet::Connect(Connect {
            protocol: version,
            clean_start: true,
            keep_alive: 60,
            properties: Properties::EMPTY,
            client_id: "doomed",
            will: Some(LastWill {
                topic: "status/doomed",
                payload: b"offline",
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties::EMPTY,
            }),
            username: None,
            password: None,
        }))
        .await;
        raw.recv_with(|p| match p {
            Packet::ConnAck(a) => assert!(!a.reason.is_error(), "{a:?}"),
            p => panic!("{p:?}"),
        })
        .await;
        drop(raw);

        let m = next(&mut messages).await;
        assert_eq!(m.topic, "status/doomed");
        assert_eq!(m.payload_str(), Some("offline"));
        assert_eq!(m.qos, QoS::AtLeastOnce);
        watcher.disconnect().await.unwrap();
    }
    broker.shutdown().await;
}

/// Our client's will reaches the broker intact: a connection the broker
/// drops (taken over by a raw connection with the same identifier) makes
/// the broker publish it.
#[tokio::test]
async fn client_will_published_when_its_connection_is_lost() {
    let broker = broker().await;
    let addr = broker.local_addr();
    for version in VERSIONS {
        let (watcher, mut messages) = connect(opts(addr, version, "watcher2")).await;
        watcher
            .subscribe("status/+", QoS::AtLeastOnce)
            .await
            .unwrap();
        let mut o = opts(addr, version, "victim").will(will("status/victim", "gone"));
        o.reconnect = false;
        let (victim, _m) = connect(o).await;
        // Same client identifier: the broker closes the victim's connection
        // without a DISCONNECT from it, so its will is due.
        let thief = RawConn::open(addr, version).await;
        let mut thief = thief;
        thief
            .send(&Packet::Connect(Connect {
                protocol: version,
                clean_start: true,
                keep_alive: 60,
                properties: Properties::EMPTY,
                client_id: "victim",
                will: None,
                username: None,
                password: None,
            }))
            .await;
        let m = next(&mut messages).await;
        assert_eq!(m.topic, "status/victim");
        assert_eq!(m.payload_str(), Some("gone"));
        until("the victim notices", || !victim.is_connected()).await;
        drop(thief);
        watcher.disconnect().await.unwrap();
    }
    broker.shutdown().await;
}

/// `disconnect()` sends DISCONNECT: no will.
#[tokio::test]
async fn no_will_after_disconnect() {
    let broker = broker().await;
    let addr = broker.local_addr();
    for version in VERSIONS {
        let (watcher, mut messages) = connect(opts(addr, version, "watcher3")).await;
        watcher
            .subscribe("status/+", QoS::AtLeastOnce)
            .await
            .unwrap();
        let (polite, _m) =
            connect(opts(addr, version, "polite").will(will("status/polite", "gone"))).await;
        polite.disconnect().await.unwrap();
        // The broker ended the polite session (only the watcher's is left),
        // which is where a will would have been published; a message
        // published after that arrives after any will.
        until("the broker ends the session", || {
            broker.session_count() == 1
        })
        .await;
        watcher
            .publish("status/sentinel", "x", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        let m = next(&mut messages).await;
        assert_eq!(
            m.topic, "status/sentinel",
            "a will was published after DISCONNECT"
        );
        watcher.disconnect().await.unwrap();
    }
    broker.shutdown().await;
}
