//! The metrics listener (`[metrics] bind`): `/metrics` in Prometheus's text
//! format counts what happened on the MQTT side, `/healthz` answers, other
//! paths and methods are refused, a stalled client does not block a scrape.

mod common;

use std::time::Duration;

use common::*;
use mqtt_broker::{Config, MetricsConfig};
use mqtt_codec::{ProtocolVersion, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn metrics_broker(config: Config) -> mqtt_broker::BrokerHandle {
    broker_with(Config {
        metrics: Some(MetricsConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
        }),
        ..config
    })
    .await
}

/// One HTTP request; the whole response (the server closes).
async fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(TIMEOUT, s.read_to_string(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    out
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let r = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
    r.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The value of one sample line (`name{labels}`), or None.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Counters follow what clients did: connections, messages by QoS,
/// payload bytes, subscriptions, retained messages. Every family has HELP
/// and TYPE, counters end in _total.
#[tokio::test]
async fn metrics_count_connections_messages_by_qos_and_bytes() {
    let broker = metrics_broker(Config::ephemeral()).await;
    let m = broker.metrics_addr().expect("metrics listener");
    let addr = broker.local_addr();

    let mut sub = RawClient::connect(addr, ProtocolVersion::V3_1_1, "sub").await;
    sub.subscribe(1, "t/#", QoS::AtLeastOnce).await;
    let mut publ = RawClient::connect(addr, ProtocolVersion::V3_1_1, "pub").await;
    publ.publish_flow(publish("t/1", b"12345", QoS::AtLeastOnce, 1, true))
        .await;
    publ.publish_flow(publish("t/2", b"abc", QoS::AtMostOnce, 0, false))
        .await;
    sub.recv_publish().await;
    sub.recv_publish().await;

    let body = scrape(m).await;
    assert_eq!(sample(&body, "mqtt_connections"), Some(2.0), "{body}");
    assert_eq!(sample(&body, "mqtt_sessions"), Some(2.0));
    assert_eq!(sample(&body, "mqtt_subscriptions"), Some(1.0));
    assert_eq!(sample(&body, "mqtt_retained_messages"), Some(1.0));
    assert_eq!(
        sample(&body, "mqtt_messages_received_total{qos=\"1\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "mqtt_messages_received_total{qos=\"0\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "mqtt_messages_sent_total{qos=\"1\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "mqtt_messages_sent_total{qos=\"0\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "mqtt_message_payload_received_bytes_total{qos=\"1\"}"
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(&body, "mqtt_messages_dropped_total{reason=\"queue_full\"}"),
        Some(0.0)
    );
    assert!(sample(&body, "mqtt_received_bytes_total").unwrap() > 0.0);

    for line in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut w = line.split(' ').skip(2);
        let (name, kind) = (w.next().unwrap(), w.next().unwrap());
        assert!(name.starts_with("mqtt_"), "{line}");
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
        assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
    }
    broker.shutdown().await;
}

/// With a store, commit latency is a histogram with cumulative buckets.
#[tokio::test]
async fn store_sync_latency_is_a_histogram() {
    let dir = std::env::temp_dir().join(format!("mqtt-metrics-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let broker = metrics_broker(Config {
        durability: mqtt_broker::store::Durability::Always,
        data_dir: dir.clone(),
        ..Config::ephemeral()
    })
    .await;
    let mut publ = RawClient::connect(broker.local_addr(), ProtocolVersion::V5, "pub").await;
    // A retained QoS 1 message is written (and synced) before its PUBACK.
    publ.publish_flow(publish("keep", b"x", QoS::AtLeastOnce, 1, true))
        .await;
    let body = scrape(broker.metrics_addr().unwrap()).await;
    let count = sample(&body, "mqtt_store_sync_duration_seconds_count").expect("histogram");
    assert!(count >= 1.0, "{body}");
    assert_eq!(
        sample(
            &body,
            "mqtt_store_sync_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        Some(count)
    );
    assert!(body.contains("# TYPE mqtt_store_sync_duration_seconds histogram"));
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// /healthz answers 200 "ok"; an unknown path is 404, another method 405.
#[tokio::test]
async fn healthz_answers_and_other_requests_are_refused() {
    let broker = metrics_broker(Config::ephemeral()).await;
    let m = broker.metrics_addr().unwrap();
    let r = http(m, "GET /healthz HTTP/1.1\r\n\r\n").await;
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nok\n"),
        "{r}"
    );
    let r = http(m, "GET /nope HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
    let r = http(m, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert!(
        r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET, HEAD"),
        "{r}"
    );
    broker.shutdown().await;
}

/// A client that connects and sends nothing does not hold up a scrape,
/// and is closed after the request timeout.
#[tokio::test]
async fn a_stalled_client_does_not_block_a_scrape() {
    let broker = metrics_broker(Config::ephemeral()).await;
    let m = broker.metrics_addr().unwrap();
    let mut stalled = TcpStream::connect(m).await.unwrap();
    scrape(m).await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf))
        .await
        .expect("closed after the request timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    broker.shutdown().await;
}

/// Waits for `payload` on `topic` (retained connection state of a bridge).
async fn wait_state(c: &mut RawClient, topic: &str, payload: &[u8]) {
    loop {
        let got = c.recv_publish().await;
        let p = got.publish();
        if p.topic == topic && p.payload == payload {
            return;
        }
    }
}

/// A bridge's figures are in `/metrics` with the label `bridge="<name>"`:
/// connected while it is, messages sent, and the queue held while the
/// remote is down (issue 16: "bridge state ... in metrics").
#[tokio::test]
async fn bridge_figures_are_in_metrics() {
    let remote = broker().await;
    let config = Config::from_toml(&format!(
        r#"
listeners = [{{ bind = "127.0.0.1:0", allow_anonymous = true }}]
sys_interval_secs = 0
durability = "none"

[metrics]
bind = "127.0.0.1:0"

[[bridges]]
name = "up"
address = "{}"
remote_clientid = "edge"
restart_timeout = 60
topics = ["s/# out 1"]
"#,
        remote.local_addr()
    ))
    .expect("configuration");
    let local = broker_with(config).await;
    let m = local.metrics_addr().expect("metrics listener");
    const STATE: &str = "$SYS/broker/connection/edge/state";
    let mut watch = RawClient::connect(local.local_addr(), ProtocolVersion::V5, "watch").await;
    watch.subscribe(1, STATE, QoS::AtMostOnce).await;
    wait_state(&mut watch, STATE, b"1").await;

    let mut far = RawClient::connect(remote.local_addr(), ProtocolVersion::V5, "far").await;
    far.subscribe(1, "s/#", QoS::AtLeastOnce).await;
    let mut publ = RawClient::connect(local.local_addr(), ProtocolVersion::V5, "pub").await;
    for pid in 1..=3 {
        publ.publish_flow(publish("s/x", b"m", QoS::AtLeastOnce, pid, false))
            .await;
    }
    for _ in 0..3 {
        let got = far.recv_publish().await;
        far.ack_delivery(&got.publish()).await;
    }
    let body = scrape(m).await;
    assert_eq!(
        sample(&body, "mqtt_bridge_connected{bridge=\"up\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "mqtt_bridge_messages_sent_total{bridge=\"up\"}"),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "mqtt_bridge_connects_total{bridge=\"up\"}"),
        Some(1.0)
    );
    assert!(body.contains("# TYPE mqtt_bridge_queued_messages gauge"));

    // The remote gone: the bridge says so and holds what is published.
    remote.shutdown().await;
    wait_state(&mut watch, STATE, b"0").await;
    for pid in 4..=5 {
        publ.publish_flow(publish("s/y", b"m", QoS::AtLeastOnce, pid, false))
            .await;
    }
    let body = scrape(m).await;
    assert_eq!(
        sample(&body, "mqtt_bridge_connected{bridge=\"up\"}"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "mqtt_bridge_queued_messages{bridge=\"up\"}"),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "mqtt_bridge_messages_dropped_total{bridge=\"up\"}"),
        Some(0.0)
    );
    local.shutdown().await;
}
