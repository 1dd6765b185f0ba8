//! The limits that protect the broker from hostile or broken clients, over
//! TCP: subscriptions per client, topic depth and length, the publish rate,
//! the CONNECT timeout, the number of sockets waiting to CONNECT, and — the
//! one that matters most — thousands of sockets that never send CONNECT do
//! not keep a well-behaved client out.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mqtt_broker::Config;
use mqtt_codec::{Packet, ProtocolVersion, QoS, ReasonCode, SubscribeFilter, SubscriptionOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn filters<'a>(list: &[&'a str]) -> Vec<SubscribeFilter<'a>> {
    list.iter()
        .map(|&filter| SubscribeFilter {
            filter,
            options: SubscriptionOptions::qos(QoS::AtMostOnce),
        })
        .collect()
}

/// The SUBACK failure as a client of `v` sees it: the MQTT 5 code, or 0x80
/// (Unspecified error) for 3.1.1, which has only the one.
fn failure(v: ProtocolVersion, v5: ReasonCode) -> ReasonCode {
    if v.is_v5() {
        v5
    } else {
        ReasonCode::UnspecifiedError
    }
}

/// The encoding of `packet` in `v`.
fn encode(v: ProtocolVersion, packet: &Packet<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; packet.encoded_len(v).unwrap()];
    packet.encode(v, &mut buf).unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_beyond_the_per_client_limit_are_refused() {
    let broker = broker_with(Config {
        max_subscriptions_per_client: 2,
        ..Config::ephemeral()
    })
    .await;
    let addr = broker.local_addr();
    for v in V3_AND_V5 {
        let quota = failure(v, ReasonCode::QuotaExceeded);
        let ok = ReasonCode::Success;
        let mut c = RawClient::connect(addr, v, "subs").await;
        let codes = c.subscribe_many(1, &filters(&["a", "b", "c"]), &[]).await;
        assert_eq!(codes, [ok, ok, quota], "{v:?}");
        // Subscribing again to a filter held replaces it: no new one.
        let codes = c.subscribe_many(2, &filters(&["a"]), &[]).await;
        assert_eq!(codes, [ok]);
        let codes = c.subscribe_many(3, &filters(&["d"]), &[]).await;
        assert_eq!(codes, [quota]);
        assert_eq!(broker.subscription_count(), 2);
        // Room again after an UNSUBSCRIBE.
        c.send(&Packet::Unsubscribe(unsubscribe(4, &["a"]))).await;
        c.recv().await;
        let codes = c.subscribe_many(5, &filters(&["d"]), &[]).await;
        assert_eq!(codes, [ok]);
        // The exact SUBACK of a refusal: 0x97 in 5.0, 0x80 in 3.1.1.
        c.send(&Packet::Subscribe(mqtt_codec::Subscribe {
            pid: pid_(6),
            properties: mqtt_codec::Properties::EMPTY,
            filters: mqtt_codec::List::from_slice(&filters(&["e"])),
        }))
        .await;
        if v.is_v5() {
            c.expect_bytes(&[0x90, 0x04, 0x00, 0x06, 0x00, 0x97]).await;
        } else {
            c.expect_bytes(&[0x90, 0x03, 0x00, 0x06, 0x80]).await;
        }
        c.disconnect_and_wait().await;
        eventually("subscriptions of a clean session removed", || {
            broker.subscription_count() == 0
        })
        .await;
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_filters_beyond_the_depth_and_length_limits_are_refused() {
    let broker = broker_with(Config {
        max_topic_levels: 3,
        max_topic_length: 16,
        ..Config::ephemeral()
    })
    .await;
    let addr = broker.local_addr();
    let mut obs = RawClient::connect(addr, ProtocolVersion::V5, "observer").await;
    obs.subscribe(1, "#", QoS::AtMostOnce).await;
    for v in V3_AND_V5 {
        let mut c = RawClient::connect(addr, v, "topics").await;
        for (pid, topic, fits) in [
            (1, "a/b/c/d", false),
            (2, "a/b/c", true),
            (3, "abcdefghijklmnopq", false),
            (4, "abcdefghijklmnop", true),
            (5, "a//b/", false),
        ] {
            let r = c
                .publish_flow(publish(topic, b"p", QoS::AtLeastOnce, pid, false))
                .await;
            // 5.0: PUBACK 0x90 Topic Name invalid. 3.1.1 cannot say so: a
            // plain PUBACK, and the message is dropped.
            if v.is_v5() {
                let want = if fits {
                    ReasonCode::Success
                } else {
                    ReasonCode::TopicNameInvalid
                };
                assert_eq!(r, want, "{topic}");
            } else {
                assert_eq!(r, ReasonCode::Success, "{topic}");
            }
            if fits {
                obs.expect_publish(publish(topic, b"p", QoS::AtMostOnce, 0, false))
                    .await;
            }
        }
        obs.expect_nothing_pending().await;

        let codes = c
            .subscribe_many(
                1,
                &filters(&["a/b/c/d", "a/+/+/+", "a/b/#", "abcdefghijklmnopq", "x/#"]),
                &[],
            )
            .await;
        let no = failure(v, ReasonCode::TopicFilterInvalid);
        let ok = ReasonCode::Success;
        assert_eq!(codes, [no, no, ok, no, ok], "{v:?}");
        if v.is_v5() {
            c.send(&Packet::Subscribe(mqtt_codec::Subscribe {
                pid: pid_(2),
                properties: mqtt_codec::Properties::EMPTY,
                filters: mqtt_codec::List::from_slice(&filters(&["+/+/+/#"])),
            }))
            .await;
            c.expect_bytes(&[0x90, 0x04, 0x00, 0x02, 0x00, 0x8f]).await;
        }
        c.disconnect_and_wait().await;
    }
    broker.shutdown().await;
}

/// A client over `max_publish_rate` is slowed down, not disconnected: a
/// flood written at once is handled at the configured rate, in order, and
/// completely. Meanwhile another client is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_rate_limit_slows_a_flood_without_disconnecting_or_starving_others() {
    const RATE: u32 = 20;
    const FLOOD: usize = 60;
    let broker = broker_with(Config {
        max_publish_rate: RATE,
        ..Config::ephemeral()
    })
    .await;
    let addr = broker.local_addr();
    for v in V3_AND_V5 {
        let mut sub = RawClient::connect(addr, ProtocolVersion::V5, "sub").await;
        sub.subscribe(1, "flood", QoS::AtMostOnce).await;
        let mut other = RawClient::connect(addr, v, "other").await;
        other.subscribe(1, "other", QoS::AtMostOnce).await;
        let mut flooder = RawClient::connect(addr, v, "flooder").await;

        // Sixty PUBLISH packets in one write.
        let mut flood = Vec::new();
        for i in 0..FLOOD {
            let payload = [i as u8];
            let p = publish("flood", &payload, QoS::AtMostOnce, 0, false);
            flood.extend(encode(v, &Packet::Publish(p)));
        }
        flooder.send_raw(&flood).await;

        let mut arrivals = Vec::with_capacity(FLOOD);
        let first = sub.recv_publish().await;
        assert_eq!(first.publish().payload, [0]);
        arrivals.push(Instant::now());

        // While the flood is being held back, another client's round trip
        // is not.
        let t = Instant::now();
        let r = other
            .publish_flow(publish("other", b"o", QoS::AtLeastOnce, 1, false))
            .await;
        assert_eq!(r, ReasonCode::Success);
        other
            .expect_publish(publish("other", b"o", QoS::AtMostOnce, 0, false))
            .await;
        let round_trip = t.elapsed();
        assert!(
            round_trip < Duration::from_millis(500),
            "{v:?}: another client waited {round_trip:?}"
        );

        for i in 1..FLOOD {
            let got = sub.recv_publish().await;
            assert_eq!(got.publish().payload, [i as u8], "{v:?}: order");
            arrivals.push(Instant::now());
        }
        // Every RATE messages, a new one-second window: message k * RATE
        // cannot arrive before k seconds after the first (less what the
        // first one's delivery took).
        for k in 1..FLOOD / RATE as usize {
            let gap = arrivals[k * RATE as usize] - arrivals[0];
            assert!(
                gap >= Duration::from_millis(800) * k as u32,
                "{v:?}: message {} arrived {gap:?} after the first",
                k * RATE as usize
            );
        }
        let total = arrivals[FLOOD - 1] - arrivals[0];
        assert!(
            total < Duration::from_secs(5),
            "{v:?}: flood took {total:?}"
        );
        // Still connected.
        flooder.expect_nothing_pending().await;
        sub.expect_nothing_pending().await;
        for c in [flooder, other, sub] {
            c.disconnect_and_wait().await;
        }
    }
    broker.shutdown().await;
}

/// A socket that does not complete CONNECT within `connect_timeout_secs`
/// is closed, whether it sent nothing or half a CONNECT; a client that did
/// connect meanwhile stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_without_connect_are_closed_after_the_connect_timeout() {
    let broker = broker_with(Config {
        connect_timeout_secs: 1,
        ..Config::ephemeral()
    })
    .await;
    let addr = broker.local_addr();
    let start = Instant::now();
    let mut silent = RawClient::open(addr, ProtocolVersion::V5).await;
    let mut partial = RawClient::open(addr, ProtocolVersion::V5).await;
    // The first bytes of a CONNECT, and no more.
    partial
        .send_raw(&[0x10, 0x10, 0x00, 0x04, b'M', b'Q'])
        .await;
    let mut good = RawClient::connect(addr, ProtocolVersion::V5, "good").await;
    for c in [&mut silent, &mut partial] {
        let before = c.expect_close().await;
        assert!(before.is_empty(), "no CONNACK to a socket that timed out");
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before the timeout"
    );
    good.expect_nothing_pending().await;
    good.disconnect_and_wait().await;
    broker.shutdown().await;
}

/// With `max_pending_connects` sockets waiting for CONNECT, the next socket
/// is closed at accept, before it can send anything; once one of them goes,
/// there is room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_beyond_max_pending_connects_are_closed_at_accept() {
    const PENDING: usize = 3;
    let broker = broker_with(Config {
        max_pending_connects: PENDING,
        connect_timeout_secs: 60,
        ..Config::ephemeral()
    })
    .await;
    let addr = broker.local_addr();
    let v = ProtocolVersion::V5;
    let mut idle = Vec::new();
    for _ in 0..PENDING {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let connect = encode(v, &Packet::Connect(connect_packet(v, "probe", true)));

    /// Opens a socket and sends CONNECT: `Some` with the client when a
    /// CONNACK comes back, `None` when the broker closes it instead.
    async fn probe(addr: std::net::SocketAddr, connect: &[u8]) -> Option<RawClient> {
        let mut c = RawClient::open(addr, ProtocolVersion::V5).await;
        // The broker may have closed it already: a failed write is a close.
        let _ = c.stream.write_all(connect).await;
        let got = tokio::time::timeout(TIMEOUT, c.try_recv())
            .await
            .expect("neither CONNACK nor close");
        got.map(|ack| {
            assert!(matches!(ack.packet(), Packet::ConnAck(a) if a.reason == ReasonCode::Success));
            c
        })
    }

    // The idle sockets were accepted first (the listen queue is FIFO) and
    // took their places at accept, before their tasks ran: the very first
    // probe is refused, and again and again while they wait.
    for _ in 0..4 {
        assert!(
            probe(addr, &connect).await.is_none(),
            "served over the limit"
        );
    }
    // One idle socket closes: a CONNECT gets through again.
    drop(idle.pop());
    let deadline = Instant::now() + TIMEOUT;
    let c = loop {
        if let Some(c) = probe(addr, &connect).await {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "no room after a pending socket closed"
        );
        tokio::task::yield_now().await;
    };
    c.disconnect_and_wait().await;
    drop(idle);
    broker.shutdown().await;
}

/// Five thousand sockets that never send CONNECT (every fifth has sent the
/// first bytes of one) with the default configuration: a well-behaved
/// client still connects, subscribes, publishes and receives, promptly, in
/// 3.1.1 and 5.0, and the idle sockets are still held open by the broker
/// (they are not shed to make room).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_sockets_that_never_connect_do_not_keep_a_client_out() {
    const IDLE: usize = 5000;
    let broker = broker().await;
    let addr = broker.local_addr();
    let start = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut s = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("socket {i}: {e}"));
        if i % 5 == 0 {
            // A CONNECT announcing a 64 KiB body that never comes.
            s.write_all(&[0x10, 0xff, 0xff, 0x03, 0x00, 0x04])
                .await
                .unwrap();
        }
        idle.push(s);
    }
    let opened = start.elapsed();
    // Bounded as a whole, not only per packet.
    tokio::time::timeout(Duration::from_secs(5), async {
        for v in V3_AND_V5 {
            assert_still_serving(addr, v).await;
        }
    })
    .await
    .expect("a well-behaved client was kept waiting");
    // The broker accepted them all (it accepts in order, and accepted the
    // client after them) and still holds them: none is closed.
    let elapsed = start.elapsed();
    assert!(
        elapsed < Config::default().connect_timeout(),
        "too slow to tell: {elapsed:?} (opening took {opened:?})"
    );
    let mut byte = [0u8; 1];
    for (i, s) in idle.iter().enumerate() {
        match s.try_read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("idle socket {i} is not open and silent: {other:?}"),
        }
    }
    assert_eq!(broker.stats().clients_connected.get(), 0);
    drop(idle);
    broker.shutdown().await;
}
