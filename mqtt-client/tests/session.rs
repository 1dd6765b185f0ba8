//! Sessions: a persistent session resumed by a new connection receives what
//! was published while it was away; the client resumes its own half of the
//! session after a reconnection (unacknowledged PUBLISH again with DUP,
//! PUBREL again), or restores its subscriptions when the server lost it.

mod common;

use common::*;
use mqtt_client::{OutgoingMessage, ProtocolVersion, QoS, ReasonCode};
use mqtt_codec::{Packet, Properties, PubResp, QosPid, SubAck};

/// Subscriber disconnects; QoS 1 and 2 messages published meanwhile are
/// received once it reconnects with the same identifier and no clean start.
async fn resume_receives_offline_messages(version: ProtocolVersion) {
    let broker = broker().await;
    let addr = broker.local_addr();
    let persistent = || {
        let mut o = opts(addr, version, "sleepy").clean_start(false);
        if version.is_v5() {
            o = o.session_expiry(300);
        }
        o
    };
    let (sub, _) = connect(persistent()).await;
    sub.subscribe("offline/q1", QoS::AtLeastOnce).await.unwrap();
    sub.subscribe("offline/q2", QoS::ExactlyOnce).await.unwrap();
    sub.disconnect().await.unwrap();

    let (publisher, _) = connect(opts(addr, version, "waker")).await;
    for i in 0..10 {
        for (topic, qos) in [
            ("offline/q1", QoS::AtLeastOnce),
            ("offline/q2", QoS::ExactlyOnce),
        ] {
            let code = publisher
                .publish(topic, format!("{i}"), qos, false)
                .await
                .unwrap();
            // The offline session still counts as a subscriber.
            assert_eq!(code, ReasonCode::Success);
        }
    }
    publisher.disconnect().await.unwrap();

    let (sub, mut messages) = connect(persistent()).await;
    let mut got = Vec::new();
    for _ in 0..20 {
        let m = next(&mut messages).await;
        got.push((m.topic.clone(), m.payload_str().unwrap().to_owned(), m.qos));
    }
    for (topic, qos) in [
        ("offline/q1", QoS::AtLeastOnce),
        ("offline/q2", QoS::ExactlyOnce),
    ] {
        let these: Vec<String> = got
            .iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, p, q)| {
                assert_eq!(*q, qos);
                p.clone()
            })
            .collect();
        let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(these, expected, "{topic} in order, each once");
    }
    // The session kept its subscriptions: live messages flow too.
    let (publisher, _) = connect(opts(addr, version, "waker")).await;
    publisher
        .publish("offline/q1", "live", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(next(&mut messages).await.payload_str(), Some("live"));
    publisher.disconnect().await.unwrap();
    sub.disconnect().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test]
async fn persistent_session_resume_v311() {
    resume_receives_offline_messages(ProtocolVersion::V3_1_1).await;
}

#[tokio::test]
async fn persistent_session_resume_v5() {
    resume_receives_offline_messages(ProtocolVersion::V5).await;
}

fn publish_of(p: Packet<'_>) -> (QosPid, bool, Vec<u8>) {
    match p {
        Packet::Publish(p) => (p.qos_pid, p.dup, p.payload.to_vec()),
        p => panic!("expected PUBLISH, got {p:?}"),
    }
}

/// The connection drops with a QoS 1 PUBLISH unacknowledged and a QoS 2
/// exchange at PUBREL; the server has the session: the client sends the
/// PUBLISH again with DUP and the same identifier, and PUBREL again.
#[tokio::test]
async fn reconnect_resumes_session_with_dup_and_pubrel() {
    let server = FakeServer::start().await;
    let addr = server.addr();
    let client_task = tokio::spawn(async move {
        let mut o = opts(addr, ProtocolVersion::V5, "resumer")
            .clean_start(false)
            .session_expiry(300);
        o.min_backoff = std::time::Duration::from_millis(10);
        connect(o).await
    });
    let (mut conn, _) = server.accept().await;
    conn.connack(false, Properties::EMPTY).await;
    let (client, _m) = client_task.await.unwrap();

    let t1 = client
        .start_publish(OutgoingMessage::new("r/1", "one", QoS::AtLeastOnce, false))
        .await
        .unwrap();
    let t2 = client
        .start_publish(OutgoingMessage::new("r/2", "two", QoS::ExactlyOnce, false))
        .await
        .unwrap();
    let (qp1, dup, _) = conn.recv_with(publish_of).await;
    assert!(!dup);
    let (qp2, _, _) = conn.recv_with(publish_of).await;
    let pid2 = qp2.pid().unwrap();
    conn.send(&Packet::PubRec(PubResp::new(pid2))).await;
    conn.recv_with(|p| assert_eq!(p, Packet::PubRel(PubResp::new(pid2))))
        .await;
    drop(conn);

    let (mut conn, connect_frame) = server.accept().await;
    let c = decode_connect(&connect_frame);
    assert!(
        !c.clean_start,
        "a resumed session reconnects without clean start"
    );
    assert_eq!(c.client_id, "resumer");
    conn.connack(true, Properties::EMPTY).await;
    let (qp, dup, payload) = conn.recv_with(publish_of).await;
    assert_eq!(qp, qp1, "same identifier");
    assert!(dup, "resent with DUP");
    assert_eq!(payload, b"one");
    conn.recv_with(|p| assert_eq!(p, Packet::PubRel(PubResp::new(pid2))))
        .await;
    conn.send(&Packet::PubAck(PubResp::new(qp1.pid().unwrap())))
        .await;
    conn.send(&Packet::PubComp(PubResp::new(pid2))).await;
    assert_eq!(within("QoS 1", t1).await, Ok(ReasonCode::Success));
    assert_eq!(within("QoS 2", t2).await, Ok(ReasonCode::Success));
    client.disconnect().await.unwrap();
}

/// The server lost the session (CONNACK session present = 0): the client
/// subscribes again to what it had, sends the unacknowledged PUBLISH again,
/// and takes a QoS 2 message at PUBREL as delivered (the server had it).
#[tokio::test]
async fn reconnect_restores_subscriptions_when_session_lost() {
    let server = FakeServer::start().await;
    let addr = server.addr();
    let client_task = tokio::spawn(async move {
        let mut o = opts(addr, ProtocolVersion::V3_1_1, "amnesia");
        o.min_backoff = std::time::Duration::from_millis(10);
        connect(o).await
    });
    let (mut conn, _) = server.accept().await;
    conn.connack(false, Properties::EMPTY).await;
    let (client, mut messages) = client_task.await.unwrap();

    let serve = async {
        let pid = conn
            .recv_with(|p| match p {
                Packet::Subscribe(s) => {
                    let f: Vec<_> = s.filters.iter().collect();
                    assert_eq!(f.len(), 1);
                    assert_eq!(f[0].filter, "keep/+");
                    s.pid
                }
                p => panic!("{p:?}"),
            })
            .await;
        conn.send(&Packet::SubAck(SubAck {
            pid,
            properties: Properties::EMPTY,
            codes: mqtt_codec::List::from_slice(&[ReasonCode::GrantedQoS2]),
        }))
        .await;
    };
    let (sub, ()) = tokio::join!(client.subscribe("keep/+", QoS::ExactlyOnce), serve);
    assert_eq!(sub, Ok(ReasonCode::GrantedQoS2));

    let t1 = client
        .start_publish(OutgoingMessage::new("p/1", "one", QoS::AtLeastOnce, false))
        .await
        .unwrap();
    let t2 = client
        .start_publish(OutgoingMessage::new("p/2", "two", QoS::ExactlyOnce, false))
        .await
        .unwrap();
    let _ = conn.recv_with(publish_of).await;
    let (qp2, _, _) = conn.recv_with(publish_of).await;
    conn.send(&Packet::PubRec(PubResp::new(qp2.pid().unwrap())))
        .await;
    let _ = conn.recv_with(|_| ()).await; // PUBREL
    drop(conn);

    let (mut conn, _) = server.accept().await;
    conn.connack(false, Properties::EMPTY).await;
    // The QoS 2 message reached the server before: done.
    assert_eq!(within("QoS 2 at PUBREL", t2).await, Ok(ReasonCode::Success));
    // Subscriptions first, then the publish again.
    let pid = conn
        .recv_with(|p| match p {
            Packet::Subscribe(s) => {
                let f: Vec<_> = s.filters.iter().collect();
                assert_eq!(f.len(), 1);
                assert_eq!(
                    (f[0].filter, f[0].options.qos),
                    ("keep/+", QoS::ExactlyOnce)
                );
                s.pid
            }
            p => panic!("expected the subscription restored, got {p:?}"),
        })
        .await;
    let (qp, _, payload) = conn.recv_with(publish_of).await;
    assert_eq!(payload, b"one");
    conn.send(&Packet::SubAck(SubAck {
        pid,
        properties: Properties::EMPTY,
        codes: mqtt_codec::List::from_slice(&[ReasonCode::GrantedQoS2]),
    }))
    .await;
    conn.send(&Packet::PubAck(PubResp::new(qp.pid().unwrap())))
        .await;
    assert_eq!(within("QoS 1 resent", t1).await, Ok(ReasonCode::Success));
    // And the restored subscription delivers.
    let mut p = mqtt_codec::Publish::new("keep/x", b"hello");
    p.qos_pid = QosPid::AtLeastOnce(mqtt_codec::Pid::new(7).unwrap());
    conn.send(&Packet::Publish(p)).await;
    let m = next(&mut messages).await;
    assert_eq!(
        (m.topic.as_str(), m.payload_str()),
        ("keep/x", Some("hello"))
    );
    conn.recv_with(|p| {
        assert_eq!(
            p,
            Packet::PubAck(PubResp::new(mqtt_codec::Pid::new(7).unwrap()))
        )
    })
    .await;
}
