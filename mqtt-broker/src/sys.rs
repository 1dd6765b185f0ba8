//! `$SYS/broker/...` statistics, published retained every
//! `sys_interval_secs` with the topic names of Mosquitto 2's `$SYS` tree
//! (mosquitto(8), "BROKER STATUS"), so existing dashboards keep working.
//! The README's table lists the few that differ. They describe this run:
//! retained in memory, never written to the store
//! (`BrokerState::keep_if_retained`), so a restart starts from fresh figures.
//!
//! The `load/.../1min`, `5min` and `15min` topics are Mosquitto's moving
//! averages of a rate per minute: at each update, for a window of W
//! seconds and dt seconds since the last update,
//! `load = rate + exp(-dt / W) * (load - rate)`, where `rate` is the
//! increase of the counter over dt, scaled to a minute.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mqtt_codec::QoS;
use tokio::sync::watch;

use crate::broker::BrokerState;
use crate::message::Message;

/// The averaging windows of the load topics, in seconds, and their names.
const WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

/// The counters that have load averages, by their `load/` topic.
const LOAD_TOPICS: [&str; 9] = [
    "messages/received",
    "messages/sent",
    "publish/received",
    "publish/sent",
    "publish/dropped",
    "bytes/received",
    "bytes/sent",
    "connections",
    "sockets",
];

/// One step of Mosquitto's load average: `current` moved towards `rate`
/// (per minute) by the share of the window that `dt_secs` is.
pub fn load_step(current: f64, rate_per_min: f64, dt_secs: f64, window_secs: f64) -> f64 {
    let exponent = (-dt_secs / window_secs).exp();
    rate_per_min + exponent * (current - rate_per_min)
}

/// The moving averages between updates.
struct Loads {
    last: [u64; LOAD_TOPICS.len()],
    averages: [[f64; WINDOWS.len()]; LOAD_TOPICS.len()],
    at: Instant,
}

impl Loads {
    fn new(broker: &BrokerState) -> Loads {
        Loads {
            last: counters(broker),
            averages: [[0.0; WINDOWS.len()]; LOAD_TOPICS.len()],
            at: Instant::now(),
        }
    }

    /// Moves every average by the time since the last update.
    fn update(&mut self, broker: &BrokerState) {
        let now = Instant::now();
        let dt = now.duration_since(self.at).as_secs_f64();
        if dt <= 0.0 {
            return;
        }
        let values = counters(broker);
        for (i, v) in values.iter().enumerate() {
            let rate = v.wrapping_sub(self.last[i]) as f64 * 60.0 / dt;
            for (j, (window, _)) in WINDOWS.iter().enumerate() {
                self.averages[i][j] = load_step(self.averages[i][j], rate, dt, *window);
            }
        }
        self.last = values;
        self.at = now;
    }
}

/// The current values of the counters in [`LOAD_TOPICS`] order.
fn counters(broker: &BrokerState) -> [u64; LOAD_TOPICS.len()] {
    let s = &broker.stats;
    [
        s.messages_received.get(),
        s.messages_sent.get(),
        s.publish_received.get(),
        s.publish_sent.get(),
        s.dropped_total(),
        s.bytes_received.get(),
        s.bytes_sent.get(),
        s.connections_total.get(),
        s.connections_total.get(),
    ]
}

/// Publishes the statistics every `sys_interval_secs` until shutdown.
pub(crate) async fn run(broker: Arc<BrokerState>, mut shutdown: watch::Receiver<bool>) {
    let secs = broker.config.sys_interval_secs;
    if secs == 0 {
        return;
    }
    let mut loads = Loads::new(&broker);
    let mut tick = tokio::time::interval(Duration::from_secs(secs));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                loads.update(&broker);
                publish_once(&broker, &loads);
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Publishes every statistic once.
fn publish_once(broker: &BrokerState, loads: &Loads) {
    let s = &broker.stats;
    let connected = s.clients_connected.get();
    let sessions = broker.session_count() as u64;
    let disconnected = sessions.saturating_sub(connected);
    let (stored_count, stored_bytes) = broker.queued_totals();
    let sum = |c: &[crate::stats::Counter; 3]| c.iter().map(|c| c.get()).sum::<u64>();
    // Each lock on its own statement: a guard made inside the array below
    // would live to the end of the statement, holding the index while the
    // retained store is locked, the reverse of `publish`'s order.
    let subscriptions = broker.index.read().len();
    let retained = broker.retained.read().len();
    let mut values: Vec<(String, String)> = [
        (
            "version",
            format!("mqtt-broker {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "uptime",
            format!("{} seconds", broker.started.elapsed().as_secs()),
        ),
        ("clients/connected", connected.to_string()),
        ("clients/active", connected.to_string()),
        ("clients/disconnected", disconnected.to_string()),
        ("clients/inactive", disconnected.to_string()),
        ("clients/total", sessions.to_string()),
        ("clients/expired", s.sessions_expired.get().to_string()),
        (
            "clients/maximum",
            s.clients_maximum
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_string(),
        ),
        ("messages/received", s.messages_received.get().to_string()),
        ("messages/sent", s.messages_sent.get().to_string()),
        ("messages/stored", stored_count.to_string()),
        ("store/messages/count", stored_count.to_string()),
        ("store/messages/bytes", stored_bytes.to_string()),
        (
            "publish/messages/received",
            s.publish_received.get().to_string(),
        ),
        ("publish/messages/sent", s.publish_sent.get().to_string()),
        ("publish/messages/dropped", s.dropped_total().to_string()),
        (
            "publish/bytes/received",
            sum(&s.publish_bytes_received_by_qos).to_string(),
        ),
        (
            "publish/bytes/sent",
            sum(&s.publish_bytes_sent_by_qos).to_string(),
        ),
        ("bytes/received", s.bytes_received.get().to_string()),
        ("bytes/sent", s.bytes_sent.get().to_string()),
        ("subscriptions/count", subscriptions.to_string()),
        ("retained messages/count", retained.to_string()),
        // Ours, beyond Mosquitto's tree.
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
        (
            "clients/websocket_errors",
            s.websocket_errors.get().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (i, topic) in LOAD_TOPICS.iter().enumerate() {
        for (j, (_, window)) in WINDOWS.iter().enumerate() {
            values.push((
                format!("load/{topic}/{window}"),
                format!("{:.2}", loads.averages[i][j]),
            ));
        }
    }
    if let Some(cluster) = &broker.cluster {
        values.extend(
            cluster
                .sys_values()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
        );
    }
    for (name, value) in values {
        let topic = format!("$SYS/broker/{name}");
        let msg = Message::new(&topic, Bytes::from(value), QoS::AtMostOnce, true);
        broker.publish(Arc::new(msg));
    }
}

#[cfg(test)]
mod tests {
    use super::load_step;

    /// A steady rate is approached and then held; the 1-minute average
    /// moves faster than the 15-minute one, as Mosquitto's do.
    #[test]
    fn load_averages_approach_a_steady_rate() {
        let (mut one, mut fifteen) = (0.0, 0.0);
        for _ in 0..6 {
            one = load_step(one, 600.0, 10.0, 60.0);
            fifteen = load_step(fifteen, 600.0, 10.0, 900.0);
        }
        // After one minute: 1 - e^-1 of the way for the 1-minute average.
        assert!(
            (one - 600.0 * (1.0 - (-1.0f64).exp())).abs() < 1e-6,
            "{one}"
        );
        assert!(fifteen < one / 5.0, "{fifteen}");
        let held = load_step(600.0, 600.0, 10.0, 60.0);
        assert!((held - 600.0).abs() < 1e-9);
    }
}
