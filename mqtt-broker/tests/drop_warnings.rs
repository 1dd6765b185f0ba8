//! Every dropped message writes a warning naming the client, the topic and
//! the reason, rate-limited per reason so a flood cannot fill the disk; the
//! `$SYS` counters count every drop either way (issue 14).
//!
//! The log is captured with a tracing subscriber set for the test's thread;
//! the tests run on a current-thread runtime, so the broker's tasks log
//! there too.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use mqtt_broker::Config;
use mqtt_codec::{Property, ProtocolVersion, QoS, ReasonCode};

/// Log lines written while the guard lives.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
        let c = Captured::default();
        let writer = c.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .finish();
        (c, tracing::subscriber::set_default(subscriber))
    }

    fn lines(&self, containing: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(containing))
            .map(str::to_owned)
            .collect()
    }
}

/// A persistent session "sub" subscribed to `filter` at `qos`, then offline.
async fn offline_subscriber(addr: SocketAddr, filter: &str, qos: QoS) {
    let v = ProtocolVersion::V5;
    let props = [Property::SessionExpiryInterval(300)];
    let mut sub = RawClient::connect_props(addr, v, "sub", false, &props).await;
    sub.subscribe(1, filter, qos).await;
    sub.disconnect().await;
}

async fn publish_n(addr: SocketAddr, topic: &str, qos: QoS, n: u16) {
    let mut p = RawClient::connect(addr, ProtocolVersion::V5, "pub").await;
    for i in 1..=n {
        let reason = p.publish_flow(publish(topic, b"x", qos, i, false)).await;
        assert_eq!(reason, ReasonCode::Success);
    }
    // PINGRESP follows every PUBLISH handled before it.
    p.expect_nothing_pending().await;
    p.disconnect().await;
}

/// A message dropped because the queue is full is logged with the client
/// id, the topic and the reason.
#[tokio::test]
async fn queue_full_drop_is_logged_with_client_topic_and_reason() {
    let (log, _guard) = Captured::start();
    let broker = broker_with(Config {
        max_queued_messages: 1,
        ..Config::ephemeral()
    })
    .await;
    let addr = broker.local_addr();
    offline_subscriber(addr, "room/#", QoS::AtLeastOnce).await;
    publish_n(addr, "room/kitchen", QoS::AtLeastOnce, 2).await;
    assert_eq!(broker.stats().dropped_queue_full.get(), 1);
    let lines = log.lines("message dropped");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(lines[0].contains("client=\"sub\"") || lines[0].contains("client=sub"));
    assert!(lines[0].contains("room/kitchen"), "{}", lines[0]);
    assert!(lines[0].contains("queue full"), "{}", lines[0]);
    broker.shutdown().await;
}

/// A QoS 0 message for an offline session (not queued by default) is a
/// drop too, and is logged as one.
#[tokio::test]
async fn offline_qos0_drop_is_logged() {
    let (log, _guard) = Captured::start();
    let broker = broker().await;
    let addr = broker.local_addr();
    offline_subscriber(addr, "t", QoS::AtMostOnce).await;
    publish_n(addr, "t", QoS::AtMostOnce, 1).await;
    assert_eq!(broker.stats().dropped_offline_qos0.get(), 1);
    let lines = log.lines("offline session");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("message dropped"), "{}", lines[0]);
    broker.shutdown().await;
}

/// A flood of drops logs only `drop_warnings_per_interval` lines per
/// interval; the counter counts them all.
#[tokio::test]
async fn drop_warnings_are_rate_limited() {
    let (log, _guard) = Captured::start();
    let broker = broker_with(Config {
        max_queued_messages: 1,
        drop_warnings_per_interval: 3,
        drop_warning_interval_secs: 3600,
        ..Config::ephemeral()
    })
    .await;
    let addr = broker.local_addr();
    offline_subscriber(addr, "t", QoS::AtLeastOnce).await;
    publish_n(addr, "t", QoS::AtLeastOnce, 21).await;
    assert_eq!(broker.stats().dropped_queue_full.get(), 20);
    assert_eq!(log.lines("message dropped").len(), 3);
    assert!(log.lines("more drops").is_empty());
    broker.shutdown().await;
}

/// The drops left out are reported in summary lines once their interval
/// ends, even when no further drop comes: the lines logged one by one and
/// the numbers in the summaries add up to every drop.
#[tokio::test]
async fn suppressed_drops_are_reported_in_a_summary() {
    let (log, _guard) = Captured::start();
    let broker = broker_with(Config {
        max_queued_messages: 1,
        drop_warnings_per_interval: 3,
        drop_warning_interval_secs: 1,
        ..Config::ephemeral()
    })
    .await;
    let addr = broker.local_addr();
    offline_subscriber(addr, "t", QoS::AtLeastOnce).await;
    publish_n(addr, "t", QoS::AtLeastOnce, 21).await;
    assert_eq!(broker.stats().dropped_queue_full.get(), 20);
    let reported = || {
        let summarised: u64 = log
            .lines("more drops (queue full)")
            .iter()
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let at = words.iter().position(|w| *w == "more")?;
                words.get(at.checked_sub(1)?)?.parse::<u64>().ok()
            })
            .sum();
        log.lines("message dropped").len() as u64 + summarised
    };
    eventually("every drop logged or summarised", || reported() == 20).await;
    assert!(!log.lines("more drops").is_empty());
    broker.shutdown().await;
}
