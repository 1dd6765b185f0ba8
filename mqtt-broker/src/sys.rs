//! `$SYS/broker/...` statistics, published retained at a configured interval
//! with the topic names Mosquitto uses, so existing dashboards keep working.
//! They describe this run: retained in memory, never written to the store
//! (`BrokerState::keep_if_retained`), so a restart starts from fresh figures.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mqtt_codec::QoS;
use tokio::sync::watch;

use crate::broker::BrokerState;
use crate::message::Message;

/// Publishes the statistics every `sys_interval_secs` until shutdown.
pub(crate) async fn run(broker: Arc<BrokerState>, mut shutdown: watch::Receiver<bool>) {
    let secs = broker.config.sys_interval_secs;
    if secs == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(secs));
    loop {
        tokio::select! {
            _ = tick.tick() => publish_once(&broker),
            _ = shutdown.changed() => return,
        }
    }
}

/// Publishes every statistic once.
pub fn publish_once(broker: &BrokerState) {
    let s = &broker.stats;
    let values: [(&str, String); 19] = [
        (
            "version",
            format!("mqtt-broker {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "uptime",
            format!("{} seconds", broker.started.elapsed().as_secs()),
        ),
        ("clients/connected", s.clients_connected.get().to_string()),
        ("clients/total", broker.session_count().to_string()),
        ("messages/received", s.messages_received.get().to_string()),
        ("messages/sent", s.messages_sent.get().to_string()),
        (
            "publish/messages/received",
            s.publish_received.get().to_string(),
        ),
        ("publish/messages/sent", s.publish_sent.get().to_string()),
        ("publish/messages/dropped", s.dropped_total().to_string()),
        ("load/bytes/received", s.bytes_received.get().to_string()),
        ("load/bytes/sent", s.bytes_sent.get().to_string()),
        ("bytes/received", s.bytes_received.get().to_string()),
        ("bytes/sent", s.bytes_sent.get().to_string()),
        ("subscriptions/count", broker.index.read().len().to_string()),
        (
            "retained messages/count",
            broker.retained.read().len().to_string(),
        ),
        (
            "messages/dropped/queue_full",
            s.dropped_queue_full.get().to_string(),
        ),
        ("clients/auth_failures", s.auth_failures.get().to_string()),
        ("messages/acl_denied", s.acl_denied.get().to_string()),
        (
            "clients/tls_handshake_failures",
            s.tls_handshake_failures.get().to_string(),
        ),
    ];
    let cluster = broker
        .cluster
        .as_ref()
        .map(|c| c.sys_values())
        .unwrap_or_default();
    let values = values.into_iter().chain(cluster);
    for (name, value) in values {
        let topic = format!("$SYS/broker/{name}");
        let msg = Message::new(&topic, Bytes::from(value), QoS::AtMostOnce, true);
        broker.publish(Arc::new(msg));
    }
}
