//! Flow control towards the application: a slow consumer makes the client
//! stop reading (nothing is dropped), and publishing from the message
//! handler never stalls, even when the handler's queue is tiny and full.

mod common;

use std::time::Duration;

use common::*;
use mqtt_broker::Config;
use mqtt_client::{OutgoingMessage, ProtocolVersion, QoS, ReasonCode};

const N: usize = 5000;

/// A responder that answers every request from inside its message loop,
/// awaiting each reply's acknowledgement, while a requester floods it.
async fn responder_at_full_rate(version: ProtocolVersion, req_qos: QoS, reply_qos: QoS) {
    let mut config = Config::ephemeral();
    // The broker must not drop requests while the responder is slow.
    config.max_queued_messages = 2 * N;
    let broker = broker_with(config).await;
    let addr = broker.local_addr();

    let mut o = opts(addr, version, "responder");
    o.incoming_capacity = 2;
    let (responder, mut requests) = connect(o).await;
    assert!(!responder
        .subscribe("req/#", req_qos)
        .await
        .unwrap()
        .is_error());

    let (requester, mut replies) = connect(opts(addr, version, "requester")).await;
    requester
        .subscribe("resp/#", QoS::AtLeastOnce)
        .await
        .unwrap();

    let handler = tokio::spawn(async move {
        for _ in 0..N {
            let m = requests.recv().await.expect("request");
            let id = m.topic.strip_prefix("req/").unwrap().to_owned();
            // Awaited: completes only once the server acknowledged it.
            let r = responder
                .publish(format!("resp/{id}"), m.payload, reply_qos, false)
                .await
                .expect("reply published");
            assert!(!r.is_error());
        }
        responder.disconnect().await.unwrap();
    });

    let flood = async {
        let mut tokens = Vec::with_capacity(N);
        for i in 0..N {
            let msg = OutgoingMessage::new(format!("req/{i}"), format!("{i}"), req_qos, false);
            tokens.push(requester.start_publish(msg).await.unwrap());
        }
        for t in tokens {
            let r = t.await.unwrap();
            assert!(r == ReasonCode::Success, "{r:?}");
        }
    };
    let collect = async {
        let mut seen = vec![false; N];
        for _ in 0..N {
            let m = replies.recv().await.expect("reply");
            let i: usize = m.topic.strip_prefix("resp/").unwrap().parse().unwrap();
            assert_eq!(m.payload_str(), Some(i.to_string().as_str()));
            assert!(!seen[i], "reply {i} twice");
            seen[i] = true;
        }
    };
    within_for(
        Duration::from_secs(60),
        "requests answered from the message handler",
        async {
            tokio::join!(flood, collect);
            handler.await.unwrap();
        },
    )
    .await;
    assert_eq!(broker.stats().dropped_total(), 0);
    requester.disconnect().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_from_handler_qos1_v311() {
    responder_at_full_rate(ProtocolVersion::V3_1_1, QoS::AtLeastOnce, QoS::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_from_handler_qos2_v5() {
    responder_at_full_rate(ProtocolVersion::V5, QoS::ExactlyOnce, QoS::ExactlyOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_from_handler_qos0_requests_qos1_replies() {
    responder_at_full_rate(ProtocolVersion::V5, QoS::AtMostOnce, QoS::AtLeastOnce).await;
}

fn publish_packet(pid: u16, payload: &[u8]) -> mqtt_codec::Publish<'_> {
    let mut p = mqtt_codec::Publish::new("slow/x", payload);
    if pid > 0 {
        p.qos_pid = mqtt_codec::QosPid::AtLeastOnce(mqtt_codec::Pid::new(pid).unwrap());
    }
    p
}

/// A QoS 1 message that has to wait for the application is acknowledged
/// only when the application takes it: the server's inflight window, not
/// the client's memory, absorbs a slow consumer.
#[tokio::test]
async fn slow_consumer_acknowledges_what_it_takes() {
    use mqtt_codec::{Packet, Pid, Properties, PubResp};
    let server = FakeServer::start().await;
    let addr = server.addr();
    let client_task = tokio::spawn(async move {
        let mut o = opts(addr, ProtocolVersion::V5, "slow");
        o.incoming_capacity = 2;
        connect(o).await
    });
    let (mut conn, _) = server.accept().await;
    conn.connack(false, Properties::EMPTY).await;
    let (_client, mut messages) = client_task.await.unwrap();
    for pid in 1..=6u16 {
        conn.send(&Packet::Publish(publish_packet(pid, &[pid as u8])))
            .await;
    }
    let puback = |pid: u16| Packet::PubAck(PubResp::new(Pid::new(pid).unwrap()));
    // Two fit the application's channel; the rest wait unacknowledged.
    for pid in 1..=2 {
        conn.recv_with(|p| assert_eq!(p, puback(pid))).await;
    }
    let more = tokio::time::timeout(Duration::from_millis(200), conn.recv_frame()).await;
    assert!(more.is_err(), "acknowledged before the application took it");
    // Each message taken lets one more in, and acknowledges it.
    for pid in 1..=6u16 {
        let m = next(&mut messages).await;
        assert_eq!(&m.payload[..], &[pid as u8]);
        if pid + 2 <= 6 {
            conn.recv_with(|p| assert_eq!(p, puback(pid + 2))).await;
        }
    }
}

/// While the application's queue is full, the client still reads the
/// server's PINGRESP: a slow consumer is not mistaken for a dead connection.
#[tokio::test]
async fn keep_alive_survives_a_full_queue() {
    use mqtt_codec::{Packet, Properties};
    let server = FakeServer::start().await;
    let addr = server.addr();
    let client_task = tokio::spawn(async move {
        let mut o = opts(addr, ProtocolVersion::V3_1_1, "busy");
        o.incoming_capacity = 1;
        o.keep_alive = Duration::from_secs(1);
        connect(o).await
    });
    let (mut conn, _) = server.accept().await;
    conn.connack(false, Properties::EMPTY).await;
    let (client, mut messages) = client_task.await.unwrap();
    for i in 0..4u8 {
        conn.send(&Packet::Publish(publish_packet(0, &[i]))).await;
    }
    // Keep alive is the timer under test: three rounds of it.
    for _ in 0..3 {
        conn.recv_with(|p| assert_eq!(p, Packet::PingReq)).await;
        conn.send(&Packet::PingResp).await;
    }
    assert!(client.is_connected());
    for i in 0..4u8 {
        assert_eq!(&next(&mut messages).await.payload[..], &[i]);
    }
}
