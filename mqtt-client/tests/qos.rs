//! Publish and subscribe at every QoS, over MQTT 3.1.1 and 5.0, against
//! our broker; `publish` completing only when the QoS flow is done, with the
//! server's reason code (checked exactly against a scripted server); the
//! granted QoS of `subscribe`; retained messages; the server's Receive
//! Maximum.

mod common;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use mqtt_broker::Config;
use mqtt_client::{Client, ClientError, OutgoingMessage, ProtocolVersion, QoS, ReasonCode};
use mqtt_codec::{Packet, Pid, Properties, Property, PubResp, Publish, QosPid, SubAck};

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

fn granted(q: QoS) -> ReasonCode {
    match q {
        QoS::AtMostOnce => ReasonCode::Success,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}

/// Polls a future once: whether it has completed already.
fn is_ready<F: Future + Unpin>(f: &mut F) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    matches!(std::pin::Pin::new(f).poll(&mut cx), Poll::Ready(_))
}

/// Every publish QoS against every subscription QoS: delivered once, at the
/// lower of the two, with topic, payload and flags intact.
async fn matrix(version: ProtocolVersion) {
    let broker = broker().await;
    let addr = broker.local_addr();
    let (publisher, _) = connect(opts(addr, version, "pub")).await;
    for sub_qos in QOS {
        let (subscriber, mut messages) = connect(opts(addr, version, "sub")).await;
        let filter = format!("matrix/{}/+", sub_qos.as_u8());
        assert_eq!(
            subscriber
                .subscribe(filter.as_str(), sub_qos)
                .await
                .unwrap(),
            granted(sub_qos)
        );
        for pub_qos in QOS {
            let topic = format!("matrix/{}/{}", sub_qos.as_u8(), pub_qos.as_u8());
            let payload = Bytes::from(vec![pub_qos.as_u8(); 3 + usize::from(sub_qos.as_u8())]);
            let code = publisher
                .publish(topic.as_str(), payload.clone(), pub_qos, false)
                .await
                .unwrap();
            assert_eq!(code, ReasonCode::Success, "{topic}");
            let m = next(&mut messages).await;
            assert_eq!(m.topic, topic);
            assert_eq!(m.payload, payload);
            assert_eq!(m.qos, pub_qos.min(sub_qos), "{topic}");
            assert!(!m.retain && !m.dup);
        }
        subscriber.disconnect().await.unwrap();
        // Exactly one copy of each: the stream ends with nothing left over.
        assert_eq!(messages.recv().await, None);
    }
    publisher.disconnect().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test]
async fn every_qos_pair_v311() {
    matrix(ProtocolVersion::V3_1_1).await;
}

#[tokio::test]
async fn every_qos_pair_v5() {
    matrix(ProtocolVersion::V5).await;
}

/// MQTT 5 tells the publisher that nobody received the message; 3.1.1 has
/// no way to, so it is a plain success.
#[tokio::test]
async fn no_matching_subscribers_reason() {
    let broker = broker().await;
    let addr = broker.local_addr();
    for version in VERSIONS {
        let (c, _) = connect(opts(addr, version, "lonely")).await;
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let code = c.publish("nobody/listens", "x", qos, false).await.unwrap();
            let expected = if version.is_v5() {
                ReasonCode::NoMatchingSubscribers
            } else {
                ReasonCode::Success
            };
            assert_eq!(code, expected, "{version:?} {qos:?}");
        }
        // QoS 0 has no acknowledgement: done once written.
        assert_eq!(
            c.publish("nobody/listens", "x", QoS::AtMostOnce, false)
                .await
                .unwrap(),
            ReasonCode::Success
        );
        c.disconnect().await.unwrap();
    }
    broker.shutdown().await;
}

/// With a scripted server: a QoS 1 publish is not done before PUBACK and
/// then gives PUBACK's reason code; QoS 2 is not done at PUBREC, only at
/// PUBCOMP; an error code becomes `Rejected`.
#[tokio::test]
async fn publish_completes_on_the_final_acknowledgement() {
    let server = FakeServer::start().await;
    let client_task = tokio::spawn({
        let addr = server.addr();
        async move { connect(opts(addr, ProtocolVersion::V5, "exact")).await }
    });
    let (mut conn, _) = server.accept().await;
    conn.connack(false, Properties::EMPTY).await;
    let (client, _messages) = client_task.await.unwrap();

    // QoS 1.
    let mut done = pin!(client.publish("a/b", "one", QoS::AtLeastOnce, false));
    let pid = tokio::select! {
        _ = &mut done => panic!("QoS 1 publish done before PUBACK"),
        pid = conn.recv_with(|p| match p {
            Packet::Publish(p) => { assert_eq!(p.payload, b"one"); p.qos_pid.pid().unwrap() }
            p => panic!("{p:?}"),
        }) => pid,
    };
    assert!(!is_ready(&mut done), "QoS 1 publish done before PUBACK");
    let mut ack = PubResp::new(pid);
    ack.reason = ReasonCode::NoMatchingSubscribers;
    conn.send(&Packet::PubAck(ack)).await;
    assert_eq!(
        within("QoS 1 publish", done).await,
        Ok(ReasonCode::NoMatchingSubscribers)
    );

    // QoS 2.
    let mut done = pin!(client.publish("a/b", "two", QoS::ExactlyOnce, false));
    let pid = tokio::select! {
        _ = &mut done => panic!("QoS 2 publish done before PUBREC"),
        pid = conn.recv_with(|p| match p {
            Packet::Publish(p) => p.qos_pid.pid().unwrap(),
            p => panic!("{p:?}"),
        }) => pid,
    };
    conn.send(&Packet::PubRec(PubResp::new(pid))).await;
    let rel = tokio::select! {
        _ = &mut done => panic!("QoS 2 publish done at PUBREC"),
        rel = conn.recv_with(|p| match p {
            Packet::PubRel(r) => r.pid,
            p => panic!("{p:?}"),
        }) => rel,
    };
    assert_eq!(rel, pid);
    assert!(!is_ready(&mut done), "QoS 2 publish done before PUBCOMP");
    conn.send(&Packet::PubComp(PubResp::new(pid))).await;
    assert_eq!(within("QoS 2 publish", done).await, Ok(ReasonCode::Success));

    // A refusal.
    let done = client.publish("a/b", "three", QoS::AtLeastOnce, false);
    let serve = async {
        let pid = conn
            .recv_with(|p| match p {
                Packet::Publish(p) => p.qos_pid.pid().unwrap(),
                p => panic!("{p:?}"),
            })
            .await;
        let mut ack = PubResp::new(pid);
        ack.reason = ReasonCode::NotAuthorized;
        conn.send(&Packet::PubAck(ack)).await;
    };
    let (result, ()) = tokio::join!(done, serve);
    assert_eq!(
        result,
        Err(ClientError::Rejected(ReasonCode::NotAuthorized))
    );
}

#[tokio::test]
async fn subscribe_returns_granted_qos() {
    let mut config = Config::ephemeral();
    config.max_qos = 1;
    let capped = broker_with(config).await;
    let full = broker().await;
    for version in VERSIONS {
        let (c, _) = connect(opts(full.local_addr(), version, "granted")).await;
        for q in QOS {
            assert_eq!(c.subscribe("g/#", q).await.unwrap(), granted(q));
        }
        c.disconnect().await.unwrap();
        let (c, _) = connect(opts(capped.local_addr(), version, "capped")).await;
        assert_eq!(
            c.subscribe("g/#", QoS::ExactlyOnce).await.unwrap(),
            ReasonCode::GrantedQoS1
        );
        assert_eq!(
            c.subscribe("g/0", QoS::AtMostOnce).await.unwrap(),
            ReasonCode::Success
        );
        c.disconnect().await.unwrap();
    }
    capped.shutdown().await;
    full.shutdown().await;
}

/// A failure code in SUBACK is an error, in both versions (3.1.1 has only
/// 0x80).
#[tokio::test]
async fn subscribe_refusal_is_an_error() {
    for version in VERSIONS {
        let server = FakeServer::start().await;
        let addr = server.addr();
        let client_task = tokio::spawn(async move { connect(opts(addr, version, "r")).await });
        let (mut conn, _) = server.accept().await;
        conn.connack(false, Properties::EMPTY).await;
        let (client, _m) = client_task.await.unwrap();
        let serve = async {
            let pid = conn
                .recv_with(|p| match p {
                    Packet::Subscribe(s) => s.pid,
                    p => panic!("{p:?}"),
                })
                .await;
            let code = if version.is_v5() {
                ReasonCode::NotAuthorized
            } else {
                ReasonCode::UnspecifiedError
            };
            conn.send(&Packet::SubAck(SubAck {
                pid,
                properties: Properties::EMPTY,
                codes: mqtt_codec::List::from_slice(&[code]),
            }))
            .await;
            code
        };
        let (result, code) = tokio::join!(client.subscribe("secret/#", QoS::AtLeastOnce), serve);
        assert_eq!(result, Err(ClientError::Rejected(code)), "{version:?}");
    }
}

/// Set, received with the RETAIN flag by a later subscriber, cleared by an
/// empty retained message.
#[tokio::test]
async fn retained_set_received_cleared() {
    let broker = broker().await;
    let addr = broker.local_addr();
    for version in VERSIONS {
        let topic = format!("retained/{}", version.level());
        let (publisher, _) = connect(opts(addr, version, "retainer")).await;
        publisher
            .publish(topic.as_str(), "21.5", QoS::AtLeastOnce, true)
            .await
            .unwrap();

        let (late, mut messages) = connect(opts(addr, version, "late")).await;
        late.subscribe(topic.as_str(), QoS::AtLeastOnce)
            .await
            .unwrap();
        let m = next(&mut messages).await;
        assert_eq!(
            (m.topic.as_str(), m.payload_str()),
            (topic.as_str(), Some("21.5"))
        );
        assert!(
            m.retain,
            "a retained message sent on subscribe has RETAIN set"
        );
        late.disconnect().await.unwrap();

        // Cleared: an empty retained payload.
        publisher
            .publish(topic.as_str(), Bytes::new(), QoS::AtLeastOnce, true)
            .await
            .unwrap();
        let (later, mut messages) = connect(opts(addr, version, "later")).await;
        later
            .subscribe(topic.as_str(), QoS::AtLeastOnce)
            .await
            .unwrap();
        // Anything retained would have been queued before this live message.
        publisher
            .publish(topic.as_str(), "live", QoS::AtLeastOnce, false)
            .await
            .unwrap();
        let m = next(&mut messages).await;
        assert_eq!(
            m.payload_str(),
            Some("live"),
            "retained message not cleared"
        );
        assert!(!m.retain);
        later.disconnect().await.unwrap();
        publisher.disconnect().await.unwrap();
    }
    assert_eq!(broker.retained_count(), 0);
    broker.shutdown().await;
}

/// Our broker closes a connection that exceeds its Receive Maximum with QoS
/// 2 messages; a pipelined stream larger than the window goes through.
#[tokio::test]
async fn server_receive_maximum_respected_by_pipelining() {
    let mut config = Config::ephemeral();
    config.receive_maximum = 3;
    let broker = broker_with(config).await;
    let (c, _) = connect(opts(broker.local_addr(), ProtocolVersion::V5, "rm")).await;
    let mut tokens = Vec::new();
    for i in 0..300 {
        let qos = if i % 2 == 0 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        let msg = OutgoingMessage::new("rm/x", format!("{i}"), qos, false);
        tokens.push(c.start_publish(msg).await.unwrap());
    }
    within("pipelined publishes", async {
        for t in tokens {
            assert!(!t.await.unwrap().is_error());
        }
    })
    .await;
    assert_eq!(broker.stats().protocol_errors.get(), 0);
    c.disconnect().await.unwrap();
    broker.shutdown().await;
}

/// Exactly: never more unacknowledged QoS 1/2 messages than the server's
/// Receive Maximum, and the next one goes as soon as one is acknowledged.
#[tokio::test]
async fn server_receive_maximum_exact_window() {
    let server = FakeServer::start().await;
    let addr = server.addr();
    let client_task = tokio::spawn(async move {
        let mut o = opts(addr, ProtocolVersion::V5, "window");
        o.max_inflight = 100;
        connect(o).await
    });
    let (mut conn, _) = server.accept().await;
    conn.connack(
        false,
        Properties::from_slice(&[Property::ReceiveMaximum(3)]),
    )
    .await;
    let (client, _m) = client_task.await.unwrap();
    let mut tokens = Vec::new();
    for i in 0..6 {
        let msg = OutgoingMessage::new("w", format!("{i}"), QoS::AtLeastOnce, false);
        tokens.push(client.start_publish(msg).await.unwrap());
    }
    let publish_pid = |p: Packet<'_>| match p {
        Packet::Publish(p) => p.qos_pid.pid().unwrap(),
        p => panic!("{p:?}"),
    };
    let mut pids = Vec::new();
    for _ in 0..3 {
        pids.push(conn.recv_with(publish_pid).await);
    }
    // A fourth would be a violation; a correct client sends nothing now.
    let more = tokio::time::timeout(Duration::from_millis(200), conn.recv_frame()).await;
    assert!(more.is_err(), "a fourth PUBLISH beyond Receive Maximum 3");
    for i in 0..3 {
        conn.send(&Packet::PubAck(PubResp::new(pids[i]))).await;
        pids.push(conn.recv_with(publish_pid).await);
    }
    for pid in &pids[3..] {
        conn.send(&Packet::PubAck(PubResp::new(*pid))).await;
    }
    for t in tokens {
        assert_eq!(within("ack", t).await, Ok(ReasonCode::Success));
    }
}

/// The client's own Receive Maximum is announced in CONNECT, and our broker
/// keeps to it while the client still gets every message.
#[tokio::test]
async fn client_receive_maximum_announced_and_honoured() {
    let server = FakeServer::start().await;
    let addr = server.addr();
    let client_task = tokio::spawn(async move {
        let mut o = opts(addr, ProtocolVersion::V5, "rmax");
        o.receive_maximum = Some(5);
        Client::connect(o).await
    });
    let (mut conn, frame) = server.accept().await;
    let c = common::decode_connect(&frame);
    assert!(
        c.properties
            .iter()
            .any(|p| p == Property::ReceiveMaximum(5)),
        "{:?}",
        c.properties
    );
    conn.connack(false, Properties::EMPTY).await;
    drop(client_task.await.unwrap());

    let broker = broker().await;
    let bound = broker.local_addr();
    let mut o = opts(bound, ProtocolVersion::V5, "rmax");
    o.receive_maximum = Some(2);
    o.incoming_capacity = 1;
    let (sub, mut messages) = connect(o).await;
    sub.subscribe("rmax/#", QoS::ExactlyOnce).await.unwrap();
    let (publisher, _) = connect(opts(bound, ProtocolVersion::V5, "rmax-pub")).await;
    for i in 0..200 {
        let msg = OutgoingMessage::new("rmax/x", format!("{i}"), QoS::ExactlyOnce, false);
        drop(publisher.start_publish(msg).await.unwrap());
    }
    for i in 0..200 {
        assert_eq!(
            next(&mut messages).await.payload_str(),
            Some(i.to_string().as_str())
        );
    }
    publisher.disconnect().await.unwrap();
    sub.disconnect().await.unwrap();
    broker.shutdown().await;
}

/// A PUBLISH over the server's Maximum Packet Size (from its 5.0 CONNACK)
/// is refused by the client with `PacketTooLarge` and never sent; the
/// connection carries on.
#[tokio::test]
async fn publish_over_the_server_maximum_packet_size_is_refused() {
    let mut config = Config::ephemeral();
    config.max_packet_size = 64;
    let broker = broker_with(config).await;
    let (c, mut messages) = connect(opts(broker.local_addr(), ProtocolVersion::V5, "big")).await;
    c.subscribe("size/#", QoS::AtLeastOnce).await.unwrap();
    let big = vec![b'x'; 100];
    for q in QOS {
        assert_eq!(
            c.publish("size/big", big.clone(), q, false).await,
            Err(ClientError::Rejected(ReasonCode::PacketTooLarge)),
            "{q:?}"
        );
    }
    assert_eq!(
        c.publish("size/small", "fits", QoS::AtLeastOnce, false)
            .await,
        Ok(ReasonCode::Success)
    );
    // The first message to arrive is the small one: the big ones were not sent.
    let m = next(&mut messages).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("size/small", &b"fits"[..])
    );
    c.disconnect().await.unwrap();
}

/// Connects a 5.0 client to a fresh scripted server.
async fn scripted(id: &str) -> (FakeServer, RawConn, Client) {
    let server = FakeServer::start().await;
    let client_task = tokio::spawn({
        let addr = server.addr();
        let id = id.to_string();
        async move { connect(opts(addr, ProtocolVersion::V5, &id)).await }
    });
    let (mut conn, _) = server.accept().await;
    conn.connack(false, Properties::EMPTY).await;
    let (client, _messages) = client_task.await.unwrap();
    (server, conn, client)
}

/// A PUBREC for the packet identifier of a QoS 1 message (which awaits
/// PUBACK, not PUBREC) is not taken for the PUBREC of a QoS 2 flow: the
/// client answers PUBREL 0x92 (Packet Identifier not found), as the broker
/// does (MQTT 5.0 section 4.3.3), and the QoS 1 message still completes on its
/// PUBACK.
#[tokio::test]
async fn a_pubrec_for_a_qos1_packet_id_leaves_the_qos1_message_awaiting_puback() {
    let (_server, mut conn, client) = scripted("pubrec-qos1").await;
    let mut done = pin!(client.publish("a/b", "one", QoS::AtLeastOnce, false));
    let pid = tokio::select! {
        _ = &mut done => panic!("QoS 1 publish done before PUBACK"),
        pid = conn.recv_with(|p| match p {
            Packet::Publish(p) => p.qos_pid.pid().unwrap(),
            p => panic!("{p:?}"),
        }) => pid,
    };
    conn.send(&Packet::PubRec(PubResp::new(pid))).await;
    let rel = tokio::select! {
        _ = &mut done => panic!("QoS 1 publish done at a PUBREC"),
        rel = conn.recv_with(|p| match p {
            Packet::PubRel(r) => (r.pid, r.reason),
            p => panic!("{p:?}"),
        }) => rel,
    };
    assert_eq!(rel, (pid, ReasonCode::PacketIdentifierNotFound));
    conn.send(&Packet::PubAck(PubResp::new(pid))).await;
    assert_eq!(within("QoS 1 publish", done).await, Ok(ReasonCode::Success));
}

/// A second PUBREC for a QoS 2 message that already awaits PUBCOMP is not
/// a fresh PUBREC: the client sends PUBREL again, and the outcome the first
/// PUBREC gave stands (here Success, not the second one's 0x10).
#[tokio::test]
async fn a_repeated_pubrec_does_not_replace_the_first_one() {
    let (_server, mut conn, client) = scripted("pubrec-again").await;
    let mut done = pin!(client.publish("a/b", "two", QoS::ExactlyOnce, false));
    let pid = tokio::select! {
        _ = &mut done => panic!("QoS 2 publish done before PUBREC"),
        pid = conn.recv_with(|p| match p {
            Packet::Publish(p) => p.qos_pid.pid().unwrap(),
            p => panic!("{p:?}"),
        }) => pid,
    };
    conn.send(&Packet::PubRec(PubResp::new(pid))).await;
    let mut again = PubResp::new(pid);
    again.reason = ReasonCode::NoMatchingSubscribers;
    conn.send(&Packet::PubRec(again)).await;
    for _ in 0..2 {
        let rel = tokio::select! {
            _ = &mut done => panic!("QoS 2 publish done before PUBCOMP"),
            rel = conn.recv_with(|p| match p {
                Packet::PubRel(r) => (r.pid, r.reason),
                p => panic!("{p:?}"),
            }) => rel,
        };
        assert_eq!(rel, (pid, ReasonCode::Success));
    }
    conn.send(&Packet::PubComp(PubResp::new(pid))).await;
    assert_eq!(within("QoS 2 publish", done).await, Ok(ReasonCode::Success));
}

/// More QoS 2 messages awaiting PUBREL than the Receive Maximum the client
/// announced is a protocol violation: the client disconnects with 0x93
/// Receive Maximum exceeded [MQTT-5: 3.3.4-8], as the broker does (the rule
/// is `mqtt_proto::IncomingQos2`'s for both).
#[tokio::test]
async fn qos2_beyond_the_clients_receive_maximum_disconnects_with_0x93() {
    let server = FakeServer::start().await;
    let client_task = tokio::spawn({
        let addr = server.addr();
        async move {
            let mut o = opts(addr, ProtocolVersion::V5, "receive-max");
            o.receive_maximum = Some(1);
            o.reconnect = false;
            connect(o).await
        }
    });
    let (mut conn, _) = server.accept().await;
    conn.connack(false, Properties::EMPTY).await;
    let (_client, _messages) = client_task.await.unwrap();
    for pid in [1, 2] {
        conn.send(&Packet::Publish(Publish {
            dup: false,
            qos_pid: QosPid::ExactlyOnce(Pid::new(pid).unwrap()),
            retain: false,
            topic: "t",
            properties: Properties::EMPTY,
            payload: b"x",
        }))
        .await;
    }
    // The first may be answered with PUBREC before the second is read.
    let reason = loop {
        let got = conn
            .recv_with(|p| match p {
                Packet::PubRec(_) => None,
                Packet::Disconnect(d) => Some(d.reason),
                p => panic!("expected PUBREC or DISCONNECT, got {p:?}"),
            })
            .await;
        if let Some(reason) = got {
            break reason;
        }
    };
    assert_eq!(reason, ReasonCode::ReceiveMaximumExceeded);
}
