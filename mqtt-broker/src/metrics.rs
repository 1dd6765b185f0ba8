//! Prometheus metrics on their own HTTP listener (`[metrics] bind`):
//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4)
//! and `GET /healthz` for liveness.
//!
//! The values are the broker's own counters (`stats.rs`, sharded per
//! thread) and gauges read at scrape time; there is no second registry to
//! keep in step, which is why no client library is used: `prometheus-client`
//! wants to own its counters, and these already exist. Names follow
//! Prometheus conventions: `mqtt_` prefix, `_total` for counters, base
//! units (`_bytes`, `_seconds`), labels for QoS and drop reason.
//!
//! The HTTP side is deliberately tiny (one request per connection, read
//! with a size and time limit, `Connection: close`): Prometheus scrapes
//! every few seconds, and hyper would add a dependency tree for four
//! responses.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::broker::BrokerState;
use crate::stats::{Counter, SYNC_BUCKETS};

/// Largest request head read; a scrape request is a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests served at once; more connections wait in the accept queue.
const MAX_CONCURRENT: usize = 16;

/// Serves the metrics listener until shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<BrokerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &state).await {
                tracing::debug!(%peer, error = %e, "metrics: request failed");
            }
            drop(permit);
        });
    }
}

/// Reads one request and writes its response.
async fn answer(mut stream: TcpStream, state: &BrokerState) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let head = tokio::time::timeout(REQUEST_TIMEOUT, async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(end);
            }
            if buf.len() >= MAX_REQUEST {
                return Err(std::io::Error::other("request head too large"));
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let request_line = std::str::from_utf8(&buf[..head])
        .ok()
        .and_then(|h| h.lines().next())
        .unwrap_or("");
    let mut words = request_line.split(' ');
    let method = words.next().unwrap_or("");
    let path = words.next().unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(state),
        ),
        ("GET" | "HEAD", "/healthz") => {
            if state.is_shutting_down() {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "shutting down\n".into(),
                )
            } else {
                ("200 OK", "text/plain", "ok\n".into())
            }
        }
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /healthz\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Writes metric families in the text format.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn value(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.value(name, "", value);
    }

    fn by_qos(&mut self, name: &str, help: &str, counters: &[Counter; 3]) {
        self.family(name, "counter", help);
        for (qos, c) in counters.iter().enumerate() {
            self.value(name, &format!("qos=\"{qos}\""), c.get());
        }
    }
}

/// Every metric, as one scrape's response body.
pub(crate) fn render(state: &BrokerState) -> String {
    let s = &state.stats;
    let mut o = Out(String::with_capacity(4096));
    o.family("mqtt_broker_info", "gauge", "The broker's version.");
    o.value(
        "mqtt_broker_info",
        &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        1,
    );
    o.one(
        "mqtt_uptime_seconds",
        "gauge",
        "Seconds since the broker started.",
        state.started.elapsed().as_secs(),
    );
    o.one(
        "mqtt_connections",
        "gauge",
        "Clients connected now.",
        s.clients_connected.get(),
    );
    o.one(
        "mqtt_connections_parked",
        "gauge",
        "Of the clients connected, idle ones parked without a task (park_idle_ms).",
        s.connections_parked.get(),
    );
    o.one(
        "mqtt_connections_maximum",
        "gauge",
        "Most clients connected at once since start.",
        s.clients_maximum.load(std::sync::atomic::Ordering::Relaxed),
    );
    o.one(
        "mqtt_connections_total",
        "counter",
        "Client connections accepted (CONNECT completed) since start.",
        s.connections_total.get(),
    );
    o.one(
        "mqtt_sessions",
        "gauge",
        "Sessions, connected or not.",
        state.session_count(),
    );
    o.one(
        "mqtt_sessions_expired_total",
        "counter",
        "Sessions ended by their expiry interval.",
        s.sessions_expired.get(),
    );
    o.one(
        "mqtt_subscriptions",
        "gauge",
        "Subscriptions of all sessions.",
        state.index.read().len(),
    );
    o.one(
        "mqtt_retained_messages",
        "gauge",
        "Retained messages held.",
        state.retained.read().len(),
    );
    o.one(
        "mqtt_packets_received_total",
        "counter",
        "Control packets received.",
        s.messages_received.get(),
    );
    o.one(
        "mqtt_packets_sent_total",
        "counter",
        "Control packets sent.",
        s.messages_sent.get(),
    );
    o.one(
        "mqtt_received_bytes_total",
        "counter",
        "Bytes received from clients, all packets.",
        s.bytes_received.get(),
    );
    o.one(
        "mqtt_sent_bytes_total",
        "counter",
        "Bytes sent to clients, all packets.",
        s.bytes_sent.get(),
    );
    o.by_qos(
        "mqtt_messages_received_total",
        "PUBLISH packets received from clients, by QoS.",
        &s.publish_received_by_qos,
    );
    o.by_qos(
        "mqtt_messages_sent_total",
        "PUBLISH packets sent to clients, by QoS.",
        &s.publish_sent_by_qos,
    );
    o.by_qos(
        "mqtt_message_payload_received_bytes_total",
        "Payload bytes of PUBLISH packets received, by QoS.",
        &s.publish_bytes_received_by_qos,
    );
    o.by_qos(
        "mqtt_message_payload_sent_bytes_total",
        "Payload bytes of PUBLISH packets sent, by QoS.",
        &s.publish_bytes_sent_by_qos,
    );
    o.family(
        "mqtt_messages_dropped_total",
        "counter",
        "Messages not delivered to a subscriber, by reason.",
    );
    for (reason, c) in [
        ("queue_full", &s.dropped_queue_full),
        ("offline_qos0", &s.dropped_offline_qos0),
        ("expired", &s.dropped_expired),
        ("too_large", &s.dropped_too_large),
        ("acl_denied", &s.acl_denied),
    ] {
        o.value(
            "mqtt_messages_dropped_total",
            &format!("reason=\"{reason}\""),
            c.get(),
        );
    }
    o.one(
        "mqtt_auth_failures_total",
        "counter",
        "Connections refused for a bad user name or password, or no right.",
        s.auth_failures.get(),
    );
    o.one(
        "mqtt_protocol_errors_total",
        "counter",
        "Connections closed for a protocol violation or malformed packet.",
        s.protocol_errors.get(),
    );
    o.one(
        "mqtt_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed or timed out.",
        s.tls_handshake_failures.get(),
    );
    o.one(
        "mqtt_websocket_errors_total",
        "counter",
        "WebSocket upgrades refused and WebSocket connections closed for a framing violation.",
        s.websocket_errors.get(),
    );
    bridges(&mut o, state);
    if let Some(cluster) = &state.cluster {
        cluster_figures(&mut o, &cluster.sys_values());
    }
    if let Some(store) = &state.store {
        let name = "mqtt_store_sync_duration_seconds";
        o.family(
            name,
            "histogram",
            "Time of each store commit (synced to disk with durability = always).",
        );
        let (buckets, count, sum) = store.sync_latency().snapshot();
        for (bound, n) in SYNC_BUCKETS.iter().zip(buckets) {
            o.value(&format!("{name}_bucket"), &format!("le=\"{bound}\""), n);
        }
        o.value(&format!("{name}_bucket"), "le=\"+Inf\"", count);
        o.value(&format!("{name}_sum"), "", sum);
        o.value(&format!("{name}_count"), "", count);
    }
    o.0
}

/// A label value in the text format: backslash, double quote and line feed
/// escaped (a bridge name comes from the configuration).
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One series per bridge (label `bridge`, its `name`): the figures of
/// `$SYS/broker/bridges/<name>/`, read at scrape time.
fn bridges(o: &mut Out, state: &BrokerState) {
    use std::sync::atomic::Ordering::{Acquire, Relaxed};
    let bridges = state.bridges.lock().clone();
    if bridges.is_empty() {
        return;
    }
    let rows: Vec<_> = bridges
        .iter()
        .map(|(name, st)| {
            let (queued, inflight, dropped) = st.depth();
            (
                format!("bridge=\"{}\"", label(name)),
                st,
                queued,
                inflight,
                dropped,
            )
        })
        .collect();
    type Figure = fn(
        &(
            String,
            &std::sync::Arc<crate::bridge::LinkStatus>,
            usize,
            usize,
            u64,
        ),
    ) -> u64;
    let families: [(&str, &str, &str, Figure); 8] = [
        (
            "mqtt_bridge_connected",
            "gauge",
            "1 while the bridge is connected to its remote, else 0.",
            |r| u64::from(r.1.connected.load(Acquire)),
        ),
        (
            "mqtt_bridge_queued_messages",
            "gauge",
            "Messages waiting to be sent to the remote.",
            |r| r.2 as u64,
        ),
        (
            "mqtt_bridge_inflight_messages",
            "gauge",
            "Messages sent to the remote and not yet acknowledged.",
            |r| r.3 as u64,
        ),
        (
            "mqtt_bridge_messages_dropped_total",
            "counter",
            "Messages for the remote dropped by the bridge's queue limit.",
            |r| r.4,
        ),
        (
            "mqtt_bridge_messages_sent_total",
            "counter",
            "Messages sent to the remote.",
            |r| r.1.sent.load(Relaxed),
        ),
        (
            "mqtt_bridge_messages_received_total",
            "counter",
            "Messages received from the remote and published here.",
            |r| r.1.received.load(Relaxed),
        ),
        (
            "mqtt_bridge_echoes_dropped_total",
            "counter",
            "Our own messages sent back by a 3.1.1 remote and not published again.",
            |r| r.1.echoes_dropped.load(Relaxed),
        ),
        (
            "mqtt_bridge_connects_total",
            "counter",
            "Successful connections to the remote.",
            |r| r.1.connects.load(Relaxed),
        ),
    ];
    for (name, kind, help, figure) in families {
        o.family(name, kind, help);
        for r in &rows {
            o.value(name, &r.0, figure(r));
        }
    }
}

/// The cluster's figures (`$SYS/broker/cluster/`): node and state as an
/// info series and a 0/1 gauge, the counters as `_total`.
fn cluster_figures(o: &mut Out, values: &[(&'static str, String)]) {
    let get = |key: &str| {
        values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let (node, state) = (get("cluster/node"), get("cluster/state"));
    o.family(
        "mqtt_cluster_info",
        "gauge",
        "This node's name and its cluster state (up, degraded: JetStream does not store, down: no NATS).",
    );
    o.value(
        "mqtt_cluster_info",
        &format!("node=\"{}\",state=\"{}\"", label(node), label(state)),
        1,
    );
    o.one(
        "mqtt_cluster_nodes_alive",
        "gauge",
        "Nodes of the cluster alive as this node sees them, itself included.",
        get("cluster/nodes/alive").parse::<u64>().unwrap_or(0),
    );
    o.one(
        "mqtt_cluster_nodes_dead",
        "gauge",
        "Nodes this node has declared dead and not heard since.",
        get("cluster/nodes/dead")
            .split(',')
            .filter(|n| !n.is_empty())
            .count() as u64,
    );
    o.one(
        "mqtt_cluster_up",
        "gauge",
        "1 while NATS and JetStream work for this node, else 0.",
        u64::from(state == "up"),
    );
    for (key, help) in [
        ("cluster/messages/forwarded", "Messages handed to NATS for the other nodes."),
        ("cluster/messages/received", "Messages received from other nodes."),
        ("cluster/messages/dropped_qos0", "QoS 0 messages not sent to other nodes (queue full or too large)."),
        ("cluster/messages/not_stored", "QoS 1/2 messages JetStream did not store in time (publisher disconnected unacknowledged)."),
        ("cluster/messages/malformed", "Messages from NATS that could not be read."),
        ("cluster/clients/claims_refused", "CONNECTs refused because the client id could not be claimed."),
        ("cluster/clients/handed_over", "Sessions handed to another node that took their client id over."),
        ("cluster/nodes/declared_dead", "Times another node was declared dead (not heard for node_timeout_ms, or restarted)."),
        ("cluster/nodes/back", "Times a node declared dead was heard again."),
        ("cluster/nodes/reasserted", "Times this node wrote its records and wills again after being cut off for half of node_timeout_ms or longer."),
        ("cluster/wills/published", "Wills of dead nodes' clients this node published."),
        ("cluster/wills/cancelled", "Delayed wills of dead nodes' clients dropped because the client reconnected."),
        ("cluster/wills/not_written", "Wills that could not be written to the cluster (kept on this node only)."),
        ("cluster/sessions/marked_disconnected", "Session records of dead nodes marked disconnected."),
        ("cluster/sessions/expired", "Session records of dead nodes deleted after their expiry."),
    ] {
        let name = format!("mqtt_{}_total", key.replace('/', "_"));
        o.one(&name, "counter", help, get(key).parse::<u64>().unwrap_or(0));
    }
}
