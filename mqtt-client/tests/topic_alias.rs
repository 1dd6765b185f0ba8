//! MQTT 5 topic aliases in both directions, checked on the wire: each
//! client talks to the broker through a recording proxy of the test's own,
//! and the test decodes the recorded bytes. The publisher uses the aliases
//! the broker allows (Topic Alias Maximum in CONNACK), sending a topic once
//! and then only its alias; the subscriber announces its own maximum and
//! resolves the aliases the broker sends; every message arrives with its
//! full topic. A scripted server sends an alias above the client's maximum:
//! the client disconnects with 0x94.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use mqtt_client::{ProtocolVersion, QoS, ReasonCode};
use mqtt_codec::{
    check_header, decode_body, Packet, Properties, Property, Publish, QosPid, Status,
    MAX_PACKET_SIZE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes a proxy saw: client to broker, and broker to client.
#[derive(Default)]
struct Recorded {
    to_broker: Vec<u8>,
    to_client: Vec<u8>,
}

/// A proxy for one connection to `broker`, recording both directions.
/// Returns the address clients connect to.
async fn recording_proxy(broker: SocketAddr) -> (SocketAddr, Arc<Mutex<Recorded>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let rec = recorded.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let upstream = TcpStream::connect(broker).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        let r1 = rec.clone();
        let up = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = cr.read(&mut buf).await {
                r1.lock().unwrap().to_broker.extend_from_slice(&buf[..n]);
                if uw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = uw.shutdown().await;
        });
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = ur.read(&mut buf).await {
            rec.lock().unwrap().to_client.extend_from_slice(&buf[..n]);
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
        let _ = up.await;
    });
    (addr, recorded)
}

/// The PUBLISH packets in a recorded MQTT 5 byte stream: (topic as sent,
/// Topic Alias).
fn publishes(bytes: &[u8]) -> Vec<(String, Option<u16>)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Ok(Status::Complete(h)) = check_header(rest, MAX_PACKET_SIZE) {
        if rest.len() < h.packet_len() {
            break;
        }
        let body = &rest[h.header_len..h.packet_len()];
        if let Ok(Packet::Publish(p)) =
            decode_body(h.packet_type, h.flags, body, ProtocolVersion::V5)
        {
            let alias = p.properties.iter().find_map(|x| match x {
                Property::TopicAlias(a) => Some(a),
                _ => None,
            });
            out.push((p.topic.to_string(), alias));
        }
        rest = &rest[h.packet_len()..];
    }
    out
}

#[tokio::test]
async fn aliases_are_used_and_resolved_both_ways() {
    let broker = broker().await;
    let (sub_addr, sub_wire) = recording_proxy(broker.local_addr()).await;
    let (pub_addr, pub_wire) = recording_proxy(broker.local_addr()).await;
    let mut so = opts(sub_addr, ProtocolVersion::V5, "alias-sub");
    so.topic_alias_maximum = 4;
    let (sub, mut messages) = connect(so).await;
    sub.subscribe("alias/#", QoS::AtLeastOnce).await.unwrap();

    let (publisher, _) = connect(opts(pub_addr, ProtocolVersion::V5, "alias-pub")).await;
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

    // The publisher, allowed 64 aliases by the broker: each topic is sent
    // once in full with its alias, then as the alias alone.
    let sent = publishes(&pub_wire.lock().unwrap().to_broker);
    assert_eq!(sent.len(), 12, "{sent:?}");
    for (i, t) in topics.iter().enumerate() {
        let alias = Some(i as u16 + 1);
        assert_eq!(sent[i], (t.clone(), alias), "first use of {t}");
        assert_eq!(sent[6 + i], (String::new(), alias), "second use of {t}");
    }
    // The subscriber, which allows 4: the broker used aliases within that
    // maximum, and some messages came with the alias alone, which the
    // client resolved (every message above arrived with its topic).
    let got = publishes(&sub_wire.lock().unwrap().to_client);
    assert_eq!(got.len(), 12, "{got:?}");
    assert!(
        got.iter()
            .all(|(_, a)| a.is_none_or(|a| (1..=4).contains(&a))),
        "alias beyond the subscriber's maximum: {got:?}"
    );
    assert!(
        got.iter().any(|(t, a)| t.is_empty() && a.is_some()),
        "the broker never sent an alias alone: {got:?}"
    );
    broker.shutdown().await;
}

/// An incoming Topic Alias above the Topic Alias Maximum the client
/// announced is a protocol error: the client sends DISCONNECT 0x94 (Topic
/// Alias invalid) and closes, and the message is not delivered
/// [MQTT-5: 3.3.2-10].
#[tokio::test]
async fn an_alias_above_the_clients_maximum_is_refused_with_0x94() {
    let server = FakeServer::start().await;
    let client_task = tokio::spawn({
        let addr = server.addr();
        async move {
            let mut o = opts(addr, ProtocolVersion::V5, "alias-max");
            o.topic_alias_maximum = 2;
            connect(o).await
        }
    });
    let (mut conn, _) = server.accept().await;
    conn.connack(false, Properties::EMPTY).await;
    let (_client, mut messages) = client_task.await.unwrap();

    let props = [Property::TopicAlias(3)];
    conn.send(&Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::AtMostOnce,
        retain: false,
        topic: "t",
        properties: Properties::from_slice(&props),
        payload: b"x",
    }))
    .await;
    let reason = conn
        .recv_with(|p| match p {
            Packet::Disconnect(d) => d.reason,
            p => panic!("expected DISCONNECT, got {p:?}"),
        })
        .await;
    assert_eq!(reason, ReasonCode::TopicAliasInvalid);
    conn.expect_close().await;
    assert!(messages.try_recv().is_none(), "the message was delivered");
}
