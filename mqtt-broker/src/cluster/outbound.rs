//! Messages on their way from this node to the cluster.
//!
//! One task hands every message to NATS in the order the connections
//! published them (a connection's messages keep their order across nodes).
//! A message is its MQTT 5 PUBLISH as the store keeps it
//! (`Message::encode_for_store`: topic, QoS, RETAIN, properties, payload),
//! with headers for what the packet does not hold: `Mqtt-Client` (the
//! publisher, for No Local on the receiving node), `Mqtt-Time` (when it
//! arrived, for the Message Expiry Interval) and, for QoS 1/2,
//! `Nats-Msg-Id`, so a retried publish is stored once.
//!
//! QoS 0 goes out as a core NATS publish; QoS 1/2 as a JetStream publish
//! whose acknowledgement releases the publisher's PUBACK / PUBREC
//! (`Cluster::forward`'s receiver). A publish JetStream did not acknowledge
//! is tried again with the same id, with backoff, until `ack_timeout_ms`.
//! A RETAIN message is also written to (or, empty, deleted from) the
//! retained bucket, in the same order, so the last write wins on every node.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use async_nats::HeaderMap;
use bytes::Bytes;
use mqtt_codec::QoS;
use tokio::sync::{mpsc, oneshot};

use super::{subject, Cluster};
use crate::message::Message;

/// Header with the publishing client's id.
pub(super) const CLIENT_HEADER: &str = "Mqtt-Client";
/// Header with the Unix milliseconds the message arrived at.
pub(super) const TIME_HEADER: &str = "Mqtt-Time";

/// One thing for the sender task.
pub(super) enum Outbound {
    Publish {
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
        /// Through JetStream, acknowledged; else a core publish.
        durable: bool,
        ack: Option<Arc<Join>>,
    },
    /// Answers once everything before it has been handed to NATS.
    Flush(oneshot::Sender<()>),
}

/// Answers `true` once every one of its publishes is stored, `false` as
/// soon as one is not.
pub(super) struct Join {
    remaining: AtomicUsize,
    failed: AtomicBool,
    tx: parking_lot::Mutex<Option<oneshot::Sender<bool>>>,
    deadline: Instant,
}

impl Join {
    fn new(parts: usize, deadline: Instant) -> (Arc<Join>, oneshot::Receiver<bool>) {
        let (tx, rx) = oneshot::channel();
        let join = Arc::new(Join {
            remaining: AtomicUsize::new(parts),
            failed: AtomicBool::new(false),
            tx: parking_lot::Mutex::new(Some(tx)),
            deadline,
        });
        (join, rx)
    }

    fn done(&self, ok: bool) {
        if !ok {
            self.failed.store(true, Ordering::Release);
            if let Some(tx) = self.tx.lock().take() {
                let _ = tx.send(false);
            }
            return;
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let ok = !self.failed.load(Ordering::Acquire);
            if let Some(tx) = self.tx.lock().take() {
                let _ = tx.send(ok);
            }
        }
    }
}

/// Logs a dropped or unstored message at most once a second (every one is
/// counted).
fn warn_limited(last: &AtomicU64, what: &str, topic: &str) {
    let now = crate::store::unix_ms();
    let before = last.load(Ordering::Relaxed);
    if now.saturating_sub(before) >= 1000
        && last
            .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(%topic, "cluster: {what} (counted in $SYS/broker/cluster/messages; further ones this second not logged)");
    }
}

static LAST_DROP_LOG: AtomicU64 = AtomicU64::new(0);

/// The headers and payload of `msg` on the wire.
fn encode(msg: &Message) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(TIME_HEADER, msg.received_unix_ms().to_string());
    if let Some(p) = &msg.publisher {
        headers.insert(CLIENT_HEADER, &**p);
    }
    (headers, Bytes::from(msg.encode_for_store()))
}

/// See [`Cluster::forward`].
pub(super) fn forward(cluster: &Cluster, msg: &Arc<Message>) -> Option<oneshot::Receiver<bool>> {
    let link = &cluster.link;
    let durable = msg.qos != QoS::AtMostOnce;
    let retained = msg.retain;
    let tokens = subject::topic_tokens(&msg.topic);
    let (headers, payload) = encode(msg);
    let deadline = Instant::now() + Duration::from_millis(cluster.cfg.ack_timeout_ms);
    let parts = 1 + usize::from(retained);
    let (join, rx) = if durable {
        let (j, rx) = Join::new(parts, deadline);
        (Some(j), Some(rx))
    } else {
        (None, None)
    };
    let mut ops = Vec::with_capacity(parts);
    if durable {
        let mut h = headers.clone();
        h.insert(async_nats::header::NATS_MESSAGE_ID, cluster.message_id());
        ops.push(Outbound::Publish {
            subject: format!("{}.{tokens}", link.durable),
            headers: h,
            payload: payload.clone(),
            durable: true,
            ack: join.clone(),
        });
    } else {
        ops.push(Outbound::Publish {
            subject: format!("{}.{tokens}", link.volatile),
            headers: headers.clone(),
            payload: payload.clone(),
            durable: false,
            ack: None,
        });
    }
    if retained {
        // The retained bucket: the arrival time, then the PUBLISH; an empty
        // payload clears the topic (a key-value delete marker).
        let mut h = HeaderMap::new();
        let value = if msg.payload.is_empty() {
            h.insert("KV-Operation", "DEL");
            Bytes::new()
        } else {
            let mut v = Vec::with_capacity(8 + payload.len());
            v.extend_from_slice(&msg.received_unix_ms().to_be_bytes());
            v.extend_from_slice(&payload);
            Bytes::from(v)
        };
        h.insert(async_nats::header::NATS_MESSAGE_ID, cluster.message_id());
        ops.push(Outbound::Publish {
            subject: format!("$KV.{}.{tokens}", link.retained_bucket),
            headers: h,
            payload: value,
            durable: true,
            ack: join.clone(),
        });
    }
    for op in ops {
        if let Err(e) = cluster.out.try_send(op) {
            let op = match e {
                mpsc::error::TrySendError::Full(op) | mpsc::error::TrySendError::Closed(op) => op,
            };
            if let Outbound::Publish { ack: Some(j), .. } = op {
                cluster.stats.not_stored.fetch_add(1, Ordering::Relaxed);
                warn_limited(
                    &LAST_DROP_LOG,
                    "outbound queue full: QoS 1/2 message not acknowledged",
                    &msg.topic,
                );
                j.done(false);
            } else {
                cluster.stats.dropped_qos0.fetch_add(1, Ordering::Relaxed);
                warn_limited(
                    &LAST_DROP_LOG,
                    "outbound queue full: message not sent to other nodes",
                    &msg.topic,
                );
            }
        }
    }
    rx
}

/// Whether a message of about `size` bytes fits NATS's `max_payload`.
pub(super) fn fits(cluster: &Cluster, size: usize) -> bool {
    let max = cluster.link.client.server_info().max_payload;
    // Unknown (not connected yet): NATS's default, 1 MiB.
    let max = if max == 0 { 1024 * 1024 } else { max };
    // Headers and the PUBLISH framing around topic, properties and payload.
    size + 512 <= max
}

/// The sender task: hands messages to NATS in order.
pub(super) async fn run(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<Outbound>) {
    while let Some(op) = rx.recv().await {
        match op {
            Outbound::Flush(tx) => {
                let _ = tx.send(());
            }
            Outbound::Publish {
                subject,
                headers,
                payload,
                durable: false,
                ..
            } => {
                match cluster
                    .link
                    .client
                    .publish_with_headers(subject, headers, payload)
                    .await
                {
                    Ok(()) => {
                        cluster.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        cluster.stats.dropped_qos0.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(error = %e, "cluster: QoS 0 publish failed");
                    }
                }
            }
            Outbound::Publish {
                subject,
                headers,
                payload,
                durable: true,
                ack,
            } => {
                let msg = PublishMessage::build().payload(payload).headers(headers);
                let first = cluster
                    .link
                    .js
                    .send_publish(subject.clone(), msg.clone())
                    .await;
                let c = cluster.clone();
                tokio::spawn(async move {
                    let ok = match first {
                        Ok(fut) => fut.await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    let stored = match ok {
                        Ok(_) => true,
                        Err(e) => retry(&c, &subject, msg, ack.as_deref(), e).await,
                    };
                    if stored {
                        c.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                    c.jetstream_stored(stored);
                    if let Some(j) = ack {
                        j.done(stored);
                    }
                });
            }
        }
    }
}

/// Tries a JetStream publish again (same message id, so it is stored once)
/// until it is acknowledged or its deadline passes.
async fn retry(
    cluster: &Cluster,
    subject: &str,
    msg: PublishMessage,
    join: Option<&Join>,
    first_error: String,
) -> bool {
    let deadline = join.map_or_else(
        || Instant::now() + Duration::from_millis(cluster.cfg.ack_timeout_ms),
        |j| j.deadline,
    );
    tracing::debug!(%subject, error = %first_error, "cluster: JetStream publish not acknowledged; retrying");
    let mut delay = Duration::from_millis(50);
    loop {
        if join.is_some_and(|j| j.failed.load(Ordering::Acquire)) {
            return false;
        }
        let now = Instant::now();
        if now + delay >= deadline {
            break;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
        let attempt = cluster
            .link
            .js
            .send_publish(subject.to_string(), msg.clone())
            .await;
        let ok = match attempt {
            Ok(fut) => fut.await.is_ok(),
            Err(_) => false,
        };
        if ok {
            return true;
        }
    }
    cluster.stats.not_stored.fetch_add(1, Ordering::Relaxed);
    warn_limited(
        &LAST_DROP_LOG,
        "JetStream did not store a message in ack_timeout_ms; its publisher is not acknowledged",
        subject,
    );
    false
}
