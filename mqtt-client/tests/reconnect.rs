//! Reconnection: a broker restarted on the same port in the middle of a
//! pipelined QoS 1 / QoS 2 stream; subscriptions restored when the server
//! lost the session; the offline queue's limit reported, not silent.
//!
//! With an in-memory broker, what the old broker acknowledged and had not
//! yet passed on is gone with it: those tests tell exactly which messages
//! that was, and fail on any other loss. With a durable broker
//! (`durability = "always"`) and persistent sessions on both clients, every
//! message is delivered, QoS 2 exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::*;
use mqtt_client::{ClientError, OutgoingMessage, ProtocolVersion, PublishToken, QoS, ReasonCode};
use tokio::sync::watch;

enum Slot {
    Pending(PublishToken),
    Done(Result<ReasonCode, ClientError>),
}

/// Settles a slot if its token has completed, without waiting.
fn settle(slot: &mut Slot) -> bool {
    if let Slot::Pending(t) = slot {
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(r) = std::pin::Pin::new(t).poll(&mut cx) {
            *slot = Slot::Done(r);
        }
    }
    matches!(slot, Slot::Done(_))
}

const N: usize = 3000;
const MAX_INFLIGHT: u16 = 20;

/// A durable broker configuration in a fresh data directory.
fn durable_config(tag: &str) -> mqtt_broker::Config {
    let dir =
        std::env::temp_dir().join(format!("mqtt-client-restart-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = mqtt_broker::Config::ephemeral();
    config.durability = mqtt_broker::store::Durability::Always;
    config.data_dir = dir;
    config
}

async fn restart_mid_stream(qos: QoS) {
    restart(qos, None).await
}

async fn restart(qos: QoS, durable: Option<mqtt_broker::Config>) {
    let version = ProtocolVersion::V5;
    let old = match &durable {
        Some(c) => broker_with(c.clone()).await,
        None => broker().await,
    };
    let addr = old.local_addr();
    let topic = format!("stream/{}", qos.as_u8());

    // The subscriber reconnects quickly, the publisher less so, so that the
    // subscription is normally back before the stream resumes (MQTT 5 tells
    // the publisher otherwise: No Matching Subscribers).
    let mut so = opts(addr, version, "stream-sub");
    if durable.is_some() {
        so = so.clean_start(false).session_expiry(300);
    }
    so.min_backoff = Duration::from_millis(20);
    so.max_backoff = Duration::from_millis(40);
    let (sub, mut messages) = connect(so).await;
    assert!(!sub.subscribe(topic.as_str(), qos).await.unwrap().is_error());

    let mut po = opts(addr, version, "stream-pub");
    if durable.is_some() {
        // The broker keeps the publisher's QoS 2 state too, so a PUBLISH
        // resent after the restart is recognised, not delivered twice.
        po = po.clean_start(false).session_expiry(300);
    }
    po.min_backoff = Duration::from_millis(300);
    po.max_backoff = Duration::from_millis(300);
    po.max_inflight = MAX_INFLIGHT;
    let (publisher, _) = connect(po).await;

    // Everything received, in order; the count is watched.
    let (count_tx, mut count_rx) = watch::channel(0usize);
    let receiver = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(m) = messages.recv().await {
            if m.payload_str() == Some("end") {
                return got;
            }
            got.push(m.payload_str().unwrap().parse::<usize>().unwrap());
            count_tx.send_replace(got.len());
        }
        panic!("subscriber stopped");
    });

    // Pipelined publishing; the tokens are kept to see who acknowledged.
    let slots = Arc::new(Mutex::new(Vec::<Slot>::with_capacity(N)));
    let producer = tokio::spawn({
        let publisher = publisher.clone();
        let slots = slots.clone();
        let topic = topic.clone();
        async move {
            for i in 0..N {
                let msg = OutgoingMessage::new(topic.as_str(), i.to_string(), qos, false);
                let t = publisher.start_publish(msg).await.expect("accepted");
                slots.lock().unwrap().push(Slot::Pending(t));
            }
        }
    });

    within(
        "part of the stream delivered",
        count_rx.wait_for(|c| *c >= N / 4),
    )
    .await
    .unwrap();
    old.shutdown().await;
    until("both clients notice", || {
        !publisher.is_connected() && !sub.is_connected()
    })
    .await;
    // Nothing can acknowledge anything now: what has completed was
    // acknowledged by the old broker.
    // (Unconstrained: tokio's cooperative budget would otherwise make a
    // completed token look pending after a hundred or so polls.)
    let acked_by_old: BTreeSet<usize> = tokio::task::unconstrained(async {
        let mut s = slots.lock().unwrap();
        (0..s.len()).filter(|&i| settle(&mut s[i])).collect()
    })
    .await;
    let produced_before = slots.lock().unwrap().len();
    assert!(
        !acked_by_old.is_empty() && acked_by_old.len() < N,
        "the restart is in the middle of the stream"
    );

    let new = match &durable {
        Some(c) => broker_on_with(addr, c.clone()).await,
        None => broker_on(addr).await,
    };
    within("producer", producer).await.unwrap();
    let mut results = BTreeMap::new();
    let pending: Vec<(usize, PublishToken)> = {
        let mut s = slots.lock().unwrap();
        std::mem::take(&mut *s)
            .into_iter()
            .enumerate()
            .filter_map(|(i, slot)| match slot {
                Slot::Done(r) => {
                    results.insert(i, r);
                    None
                }
                Slot::Pending(t) => Some((i, t)),
            })
            .collect()
    };
    within_for(Duration::from_secs(30), "the stream completes", async {
        for (i, t) in pending {
            results.insert(i, t.await);
        }
    })
    .await;
    // A last message, once the subscription is back, closes the stream:
    // everything routed to the subscriber before it arrives before it.
    within("end of stream", async {
        while publisher
            .publish(topic.as_str(), "end", QoS::AtLeastOnce, false)
            .await
            .unwrap()
            == ReasonCode::NoMatchingSubscribers
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let got = within("receiver", receiver).await.unwrap();

    let mut times = vec![0usize; N];
    for &i in &got {
        times[i] += 1;
    }
    let mut unrouted = Vec::new();
    let mut lost_acked_by_old = Vec::new();
    let mut lost_completed_on_resume = Vec::new();
    let mut lost_otherwise = Vec::new();
    for (&i, r) in &results {
        match r {
            Ok(ReasonCode::Success) if times[i] == 0 => {
                if acked_by_old.contains(&i) {
                    lost_acked_by_old.push(i);
                } else if qos == QoS::ExactlyOnce && i < produced_before {
                    // PUBREC from the old broker, PUBCOMP never came: the
                    // new broker has no session, so the client rightly
                    // counts it delivered to the old one, which lost it.
                    lost_completed_on_resume.push(i);
                } else {
                    lost_otherwise.push(i);
                }
            }
            Ok(ReasonCode::Success) => {}
            Ok(ReasonCode::NoMatchingSubscribers) => unrouted.push(i),
            other => panic!("message {i}: {other:?}"),
        }
    }
    let duplicates: Vec<usize> = (0..N).filter(|&i| times[i] > 1).collect();
    eprintln!(
        "QoS {} restart: {} published, {} acknowledged by the old broker before it stopped, \
         {} received ({} distinct); lost in the old broker's memory after its acknowledgement: \
         {:?}; QoS 2 lost after the old broker's PUBREC: {:?}; duplicates: {:?}; \
         reported No Matching Subscribers: {:?}",
        qos.as_u8(),
        N,
        acked_by_old.len(),
        got.len(),
        times.iter().filter(|&&t| t > 0).count(),
        lost_acked_by_old,
        lost_completed_on_resume,
        duplicates,
        unrouted,
    );
    assert!(
        lost_otherwise.is_empty(),
        "lost although never acknowledged by the old broker: {lost_otherwise:?}"
    );
    if durable.is_some() {
        // Nothing acknowledged is lost, and QoS 2 is exactly once.
        assert!(
            lost_acked_by_old.is_empty(),
            "acknowledged and lost: {lost_acked_by_old:?}"
        );
        assert!(
            lost_completed_on_resume.is_empty(),
            "QoS 2 lost: {lost_completed_on_resume:?}"
        );
        assert!(unrouted.is_empty(), "subscription not kept: {unrouted:?}");
        if qos == QoS::ExactlyOnce {
            assert!(
                duplicates.is_empty(),
                "QoS 2 delivered twice: {duplicates:?}"
            );
        }
    }
    assert!(
        lost_completed_on_resume.len() <= usize::from(MAX_INFLIGHT),
        "more QoS 2 messages at PUBREL than can be in flight: {lost_completed_on_resume:?}"
    );
    if qos == QoS::ExactlyOnce {
        // A duplicate is possible only for a message the old broker took but
        // whose PUBREC never reached the client: the new broker cannot know.
        for i in &duplicates {
            assert!(
                !acked_by_old.contains(i),
                "QoS 2 message {i} acknowledged by the old broker and delivered twice"
            );
            assert_eq!(times[*i], 2, "message {i}");
        }
    }
    // Order: each broker passes the publisher's messages on in order.
    let mut runs = 1;
    for w in got.windows(2) {
        if w[1] <= w[0] {
            runs += 1;
        }
    }
    // A durable broker first resends what it had in flight and queued, then
    // passes on the publisher's resends and the rest: one run more.
    let max_runs = if durable.is_some() { 3 } else { 2 };
    assert!(
        runs <= max_runs,
        "received out of order beyond the restart: {runs} runs"
    );

    publisher.disconnect().await.unwrap();
    sub.disconnect().await.unwrap();
    new.shutdown().await;
    if let Some(c) = durable {
        let _ = std::fs::remove_dir_all(&c.data_dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_broker_restart_mid_stream_delivers_every_qos1_message() {
    restart(QoS::AtLeastOnce, Some(durable_config("q1"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_broker_restart_mid_stream_delivers_qos2_exactly_once() {
    restart(QoS::ExactlyOnce, Some(durable_config("q2"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_qos1() {
    restart_mid_stream(QoS::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_qos2() {
    restart_mid_stream(QoS::ExactlyOnce).await;
}

/// The new broker knows nothing of the subscriber: the client subscribes
/// again by itself.
#[tokio::test]
async fn subscriptions_restored_after_server_lost_session() {
    for version in VERSIONS {
        let old = broker().await;
        let addr = old.local_addr();
        let mut o = opts(addr, version, "forgotten");
        o.min_backoff = Duration::from_millis(10);
        o.max_backoff = Duration::from_millis(50);
        let (sub, mut messages) = connect(o).await;
        sub.subscribe("restore/+", QoS::AtLeastOnce).await.unwrap();
        sub.subscribe("other/#", QoS::ExactlyOnce).await.unwrap();
        old.shutdown().await;
        until("the subscriber notices", || !sub.is_connected()).await;

        let new = broker_on(addr).await;
        // Retained, so the subscriber gets it whether it subscribes again
        // before or after it is published.
        let (publisher, _) = connect(opts(addr, version, "teller")).await;
        publisher
            .publish("restore/a", "back", QoS::AtLeastOnce, true)
            .await
            .unwrap();
        publisher
            .publish("other/b/c", "too", QoS::ExactlyOnce, true)
            .await
            .unwrap();
        let mut got = [next(&mut messages).await, next(&mut messages).await];
        got.sort_by(|a, b| a.topic.cmp(&b.topic));
        assert_eq!(got[0].topic, "other/b/c");
        assert_eq!(got[0].qos, QoS::ExactlyOnce);
        assert_eq!(got[1].topic, "restore/a");
        assert_eq!(got[1].payload_str(), Some("back"));
        until("reconnected", || sub.is_connected()).await;
        assert_eq!(new.subscription_count(), 2, "{version:?}");
        publisher.disconnect().await.unwrap();
        sub.disconnect().await.unwrap();
        new.shutdown().await;
    }
}

/// While disconnected, publishes wait in the offline queue; once it is full
/// the next is refused with `QueueFull` instead of vanishing. The queued
/// ones go out after the reconnection.
#[tokio::test]
async fn offline_queue_full_is_reported() {
    let old = broker().await;
    let addr = old.local_addr();
    let mut o = opts(addr, ProtocolVersion::V5, "queued");
    o.offline_queue = 3;
    o.min_backoff = Duration::from_millis(10);
    o.max_backoff = Duration::from_millis(50);
    let (client, _m) = connect(o).await;
    old.shutdown().await;
    until("the client notices", || !client.is_connected()).await;

    let mut tokens = Vec::new();
    for i in 0..3 {
        let msg = OutgoingMessage::new("q/x", format!("{i}"), QoS::AtLeastOnce, false);
        tokens.push(client.start_publish(msg).await.expect("queued"));
    }
    let msg = OutgoingMessage::new("q/x", "overflow", QoS::AtLeastOnce, false);
    assert!(matches!(
        client.start_publish(msg).await,
        Err(ClientError::QueueFull)
    ));
    assert_eq!(
        client.publish("q/x", "more", QoS::AtMostOnce, false).await,
        Err(ClientError::QueueFull)
    );
    assert_eq!(
        client.subscribe("q/#", QoS::AtLeastOnce).await,
        Err(ClientError::QueueFull)
    );

    let new = broker_on(addr).await;
    for t in tokens {
        assert_eq!(
            within("queued publish", t).await,
            Ok(ReasonCode::NoMatchingSubscribers)
        );
    }
    client.disconnect().await.unwrap();
    new.shutdown().await;
}

/// `ConnectOptions::on_event` sees the packets of a connection in order, the
/// loss of the connection and the reconnection (with whether the server kept
/// the session).
#[tokio::test]
async fn event_hook_sees_packets_loss_and_reconnection() {
    let old = broker().await;
    let addr = old.local_addr();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let mut o = opts(addr, ProtocolVersion::V5, "watched");
    o.min_backoff = Duration::from_millis(10);
    o.max_backoff = Duration::from_millis(50);
    o.on_event = Some(mqtt_client::EventHook::new(move |e| {
        use mqtt_client::{ClientEvent, Packet};
        let line = match e {
            ClientEvent::Sent(Packet::Connect(_)) => "sent CONNECT",
            ClientEvent::Received(Packet::ConnAck(_)) => "received CONNACK",
            ClientEvent::Sent(Packet::Subscribe(_)) => "sent SUBSCRIBE",
            ClientEvent::Received(Packet::SubAck(_)) => "received SUBACK",
            ClientEvent::ConnectionLost(_) => "lost",
            ClientEvent::Reconnected {
                session_present: false,
            } => "reconnected, new session",
            _ => return,
        };
        log.lock().unwrap().push(line.to_owned());
    }));
    let (client, _messages) = connect(o).await;
    client
        .subscribe("watched/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    old.shutdown().await;
    until("the client notices", || !client.is_connected()).await;
    let new = broker_on(addr).await;
    until("the restored subscription's SUBACK", || {
        seen.lock().unwrap().len() >= 10
    })
    .await;
    client.disconnect().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "sent CONNECT",
            "received CONNACK",
            "sent SUBSCRIBE",
            "received SUBACK",
            "lost",
            "sent CONNECT",
            "received CONNACK",
            "reconnected, new session",
            "sent SUBSCRIBE",
            "received SUBACK",
        ]
    );
    new.shutdown().await;
}
