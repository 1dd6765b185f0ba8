//! Wills that survive their node (issue 18; the Will Flag and Will Delay
//! Interval: MQTT 5.0 sections 3.1.2.5 and 3.1.3.2.2, 3.1.1 section
//! 3.1.2.5).
//!
//! The `P_wills` bucket holds the will of every connected client (and of
//! every disconnected one whose will waits for its delay): key
//! `<node>.<escaped client id>`, value the owning node, its incarnation
//! (start nonce), the Will Delay and Session Expiry Intervals and the will
//! message in the store's encoding. The key names the node, so a client
//! that reconnects elsewhere before its old node is declared dead never
//! overwrites the will that connection left.
//!
//! - A CONNECT with a will writes it before the CONNACK (`keep`).
//! - The owning node deletes it, compare-and-set on the revision it wrote,
//!   whenever its own rules say the will must not be published any more:
//!   normal DISCONNECT (0x00), the will published by the node itself,
//!   a takeover, the session ended (`gone`, called from `broker.rs` where
//!   the single broker drops its stored will).
//! - A claim of the client id on another node cancels a delayed will of
//!   the old connection ([MQTT-3.1.3-9], `cancel_delayed`); a will without
//!   delay was due when that connection died and stays.
//! - When a node is declared dead (`liveness.rs`), every surviving node
//!   reads the dead incarnation's wills and, for each, waits the Will Delay
//!   Interval (capped by the Session Expiry Interval; 0 expiry: at once)
//!   from the moment it noticed the death, then deletes the key
//!   compare-and-set on the revision it read. Only one node's delete
//!   succeeds, and only that node publishes the will: once in the cluster.
//!   A delayed will is dropped instead if the client's session record has
//!   moved to another node meanwhile.
//!
//! The delete comes before the publish: a node that dies between the two
//! loses that will (at most once, never twice).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, UpdateErrorKind};
use bytes::Bytes;
use tokio::time::Instant;

use super::sessions::SessionRecord;
use super::{subject, Cluster};
use crate::broker::BrokerState;
use crate::message::Message;

const WILL_VERSION: u8 = 1;

/// Attempts at deleting a due will while NATS does not answer, one per
/// heartbeat interval.
const DELETE_ATTEMPTS: usize = 30;

/// A will as the cluster keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillRecord {
    /// The node the client was connected to.
    pub node: String,
    /// That node's incarnation (its start nonce).
    pub nonce: u64,
    /// Will Delay Interval in seconds.
    pub delay_secs: u32,
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry_secs: u32,
    /// The will message (`Message::encode_for_store`).
    pub publish: Vec<u8>,
}

impl WillRecord {
    /// Version, node, nonce, delay, expiry, message.
    pub fn encode(&self) -> Vec<u8> {
        let n = self.node.len().min(255);
        let mut out = Vec::with_capacity(18 + n + self.publish.len());
        out.push(WILL_VERSION);
        out.push(n as u8);
        out.extend_from_slice(&self.node.as_bytes()[..n]);
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out.extend_from_slice(&self.delay_secs.to_be_bytes());
        out.extend_from_slice(&self.expiry_secs.to_be_bytes());
        out.extend_from_slice(&self.publish);
        out
    }

    /// Reads [`WillRecord::encode`]'s bytes; `None` for anything else.
    pub fn decode(b: &[u8]) -> Option<WillRecord> {
        if *b.first()? != WILL_VERSION {
            return None;
        }
        let n = usize::from(*b.get(1)?);
        let node = std::str::from_utf8(b.get(2..2 + n)?).ok()?.to_string();
        let rest = b.get(2 + n..)?;
        Some(WillRecord {
            node,
            nonce: u64::from_be_bytes(rest.get(..8)?.try_into().ok()?),
            delay_secs: u32::from_be_bytes(rest.get(8..12)?.try_into().ok()?),
            expiry_secs: u32::from_be_bytes(rest.get(12..16)?.try_into().ok()?),
            publish: rest[16..].to_vec(),
        })
    }

    /// How long after its connection ended the will is due: its delay,
    /// cut short by the end of the session [MQTT-3.1.3-9]; at once when the
    /// session ends with the connection.
    pub fn due_after(&self) -> Duration {
        let secs = if self.expiry_secs == 0 {
            0
        } else {
            self.delay_secs.min(self.expiry_secs)
        };
        Duration::from_secs(u64::from(secs))
    }
}

/// The key of `client`'s will on `node`.
pub fn key(node: &str, client: &str) -> String {
    format!("{node}.{}", subject::key_token(client))
}

/// The client id of a will key of `node`.
fn client_of(key: &str, node: &str) -> Option<String> {
    let token = key.strip_prefix(node)?.strip_prefix('.')?;
    subject::key_from_token(token).ok()
}

/// A will this node wrote for one of its connections.
pub(super) struct Held {
    generation: u64,
    revision: u64,
    value: Bytes,
}

/// Held wills by client id.
pub(super) type HeldWills = parking_lot::Mutex<HashMap<Arc<str>, Held>>;

/// Will deletes under way, so a node that stops waits for them: a will it
/// published itself as it closed its connections must not be published
/// again by the others when they notice it is gone.
#[derive(Default)]
pub(super) struct WillOps {
    running: std::sync::atomic::AtomicUsize,
    done: tokio::sync::Notify,
}

impl WillOps {
    /// Waits (at most `limit`) until no delete is under way.
    pub(super) async fn settled(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let done = self.done.notified();
                if self.running.load(Ordering::Acquire) == 0 {
                    return;
                }
                done.await;
            }
        })
        .await;
    }
}

/// See [`Cluster::keep_will`].
pub(super) async fn keep(
    cluster: &Cluster,
    client: &Arc<str>,
    generation: u64,
    msg: &Message,
    delay_secs: u32,
    expiry_secs: u32,
) -> bool {
    let Some(kv) = cluster.link.wills.get() else {
        return false;
    };
    let value = Bytes::from(
        WillRecord {
            node: cluster.cfg.node.clone(),
            nonce: cluster.nonce,
            delay_secs,
            expiry_secs,
            publish: msg.encode_for_store(),
        }
        .encode(),
    );
    let limit = Duration::from_millis(cluster.cfg.ack_timeout_ms);
    let k = key(&cluster.cfg.node, client);
    match tokio::time::timeout(limit, kv.put(&k, value.clone())).await {
        Ok(Ok(revision)) => {
            cluster.wills.lock().insert(
                client.clone(),
                Held {
                    generation,
                    revision,
                    value,
                },
            );
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(%client, error = %e, "cluster: will not written; it holds on this node only");
            cluster
                .stats
                .wills_not_written
                .fetch_add(1, Ordering::Relaxed);
            false
        }
        Err(_) => {
            tracing::warn!(%client, "cluster: will not written in time; it holds on this node only");
            cluster
                .stats
                .wills_not_written
                .fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// See [`Cluster::will_gone`].
pub(super) fn gone(cluster: &Cluster, client: &str, generation: u64) {
    let held = {
        let mut wills = cluster.wills.lock();
        match wills.get(client) {
            Some(h) if h.generation == generation => wills.remove(client),
            _ => None,
        }
    };
    let (Some(held), Some(kv)) = (held, cluster.link.wills.get()) else {
        return;
    };
    let kv = kv.clone();
    let k = key(&cluster.cfg.node, client);
    let limit = Duration::from_millis(cluster.cfg.ack_timeout_ms);
    let client = client.to_string();
    cluster.will_ops.running.fetch_add(1, Ordering::AcqRel);
    let ops = cluster.will_ops.clone();
    tokio::spawn(async move {
        // Refused when the key moved on: a newer will of this node, or a
        // dead-node handling elsewhere that took it. Either way not ours.
        match tokio::time::timeout(limit, kv.delete_expect_revision(&k, Some(held.revision))).await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
            Ok(Err(e)) => {
                tracing::warn!(%client, error = %e, "cluster: will not deleted; another node may publish it if this one is declared dead")
            }
            Err(_) => {
                tracing::warn!(%client, "cluster: will not deleted in time; another node may publish it if this one is declared dead")
            }
        }
        ops.running.fetch_sub(1, Ordering::AcqRel);
        ops.done.notify_waiters();
    });
}

/// Writes every will this node holds again (after it was cut off for
/// long enough to be declared dead: the others may have published and
/// deleted them, but the clients are still connected here).
pub(super) async fn reassert(cluster: &Cluster) {
    let Some(kv) = cluster.link.wills.get() else {
        return;
    };
    let held: Vec<(Arc<str>, u64, Bytes)> = cluster
        .wills
        .lock()
        .iter()
        .map(|(c, h)| (c.clone(), h.generation, h.value.clone()))
        .collect();
    for (client, generation, value) in held {
        let k = key(&cluster.cfg.node, &client);
        match kv.put(&k, value).await {
            Ok(revision) => {
                if let Some(h) = cluster.wills.lock().get_mut(&client) {
                    if h.generation == generation {
                        h.revision = revision;
                    }
                }
            }
            Err(e) => tracing::warn!(%client, error = %e, "cluster: will not written again"),
        }
    }
}

/// A connection of `client` on another node (or another incarnation of
/// a node) ended, and this node claimed the client id: that connection's
/// will, if it has a delay, is cancelled by the reconnection
/// [MQTT-3.1.3-9]. Called by the claim, before the CONNACK.
pub(super) async fn cancel_delayed(cluster: &Cluster, previous_node: &str, client: &str) {
    let Some(kv) = cluster.link.wills.get() else {
        return;
    };
    let k = key(previous_node, client);
    let Ok(Some(entry)) = kv.entry(k.clone()).await else {
        return;
    };
    if entry.operation != Operation::Put {
        return;
    }
    let Some(will) = WillRecord::decode(&entry.value) else {
        return;
    };
    let ours = will.node == cluster.cfg.node && will.nonce == cluster.nonce;
    if ours || will.delay_secs == 0 {
        return;
    }
    if kv
        .delete_expect_revision(&k, Some(entry.revision))
        .await
        .is_ok()
    {
        cluster
            .stats
            .wills_cancelled
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(%client, node = %will.node, "cluster: delayed will of the previous connection cancelled by the reconnection");
    }
}

/// Incarnation `nonce` of `node` is dead (`None`: this node just started,
/// and wills of its own earlier runs are left over): schedules each of its
/// wills, then marks its session records disconnected.
pub(super) async fn after_death(
    cluster: Arc<Cluster>,
    broker: Arc<BrokerState>,
    node: String,
    nonce: Option<u64>,
    detected: Instant,
) {
    let Some(kv) = cluster.link.wills.get() else {
        return;
    };
    let keys = match super::link::list_keys(kv, &format!("{node}.>")).await {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(%node, error = %e, "cluster: wills of a dead node not readable");
            Vec::new()
        }
    };
    let mut scheduled = 0usize;
    for k in keys {
        let Some(client) = client_of(&k, &node) else {
            continue;
        };
        let entry = match kv.entry(k.clone()).await {
            Ok(Some(e)) if e.operation == Operation::Put => e,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(%node, %client, error = %e, "cluster: will of a dead node not readable");
                continue;
            }
        };
        let Some(will) = WillRecord::decode(&entry.value) else {
            continue;
        };
        let dead = match nonce {
            Some(n) => will.nonce == n,
            None => will.nonce != cluster.nonce,
        };
        if !dead || will.node != node {
            continue;
        }
        scheduled += 1;
        tokio::spawn(due(
            cluster.clone(),
            broker.clone(),
            k,
            entry.revision,
            will,
            client,
            detected,
        ));
    }
    if scheduled > 0 {
        tracing::info!(%node, wills = scheduled, "cluster: wills of a dead node scheduled");
    }
    super::expiry::sweep_node(&cluster, &node, nonce.is_none()).await;
}

/// Publishes one will of a dead node when it is due, if this node wins it.
async fn due(
    cluster: Arc<Cluster>,
    broker: Arc<BrokerState>,
    k: String,
    revision: u64,
    will: WillRecord,
    client: String,
    detected: Instant,
) {
    let mut shutdown = cluster.shutdown.subscribe();
    tokio::select! {
        _ = tokio::time::sleep_until(detected + will.due_after()) => {}
        _ = shutdown.changed() => return,
    }
    let Some(kv) = cluster.link.wills.get() else {
        return;
    };
    if will.delay_secs > 0 && will.expiry_secs > 0 {
        // A reconnection elsewhere cancels a delayed will [MQTT-3.1.3-9].
        if let Some(sessions) = cluster.link.sessions.get() {
            if let Ok(Some(e)) = sessions.entry(subject::key_token(&client)).await {
                let moved = e.operation == Operation::Put
                    && SessionRecord::decode(&e.value, e.revision)
                        .is_some_and(|r| r.node != will.node);
                if moved {
                    if kv.delete_expect_revision(&k, Some(revision)).await.is_ok() {
                        cluster
                            .stats
                            .wills_cancelled
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!(%client, node = %will.node, "cluster: will of a dead node's client cancelled: the client reconnected elsewhere");
                    }
                    return;
                }
            }
        }
    }
    let beat = Duration::from_millis(cluster.cfg.heartbeat_ms);
    for _ in 0..DELETE_ATTEMPTS {
        match kv.delete_expect_revision(&k, Some(revision)).await {
            Ok(()) => {
                let Some(msg) = Message::from_stored(&will.publish, crate::store::unix_ms()) else {
                    tracing::warn!(%client, "cluster: unreadable will of a dead node dropped");
                    return;
                };
                tracing::info!(%client, node = %will.node, topic = %msg.topic, "cluster: publishing the will of a dead node's client");
                cluster
                    .stats
                    .wills_published
                    .fetch_add(1, Ordering::Relaxed);
                broker.publish(Arc::new(msg));
                return;
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                // Another node won it, or its client's node wrote it again.
                tracing::debug!(%client, "cluster: will of a dead node taken elsewhere");
                return;
            }
            Err(e) => {
                tracing::warn!(%client, error = %e, "cluster: will of a dead node not claimed yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(beat) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
    tracing::warn!(%client, "cluster: will of a dead node given up: NATS did not answer");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn will(delay_secs: u32, expiry_secs: u32) -> WillRecord {
        WillRecord {
            node: "node-a".into(),
            nonce: 0x1234_5678_9abc,
            delay_secs,
            expiry_secs,
            publish: vec![0x30, 3, 0, 1, b't'],
        }
    }

    #[test]
    fn will_record_round_trip() {
        let w = will(5, 60);
        assert_eq!(WillRecord::decode(&w.encode()), Some(w.clone()));
        assert_eq!(WillRecord::decode(&[]), None);
        assert_eq!(WillRecord::decode(&[2, 0]), None);
        assert_eq!(WillRecord::decode(&w.encode()[..10]), None);
    }

    // MQTT 5.0 3.1.3.2.2: the will is published when the delay passes or
    // the session ends, whichever is first; a session that ends with the
    // connection (expiry 0) publishes it at once.
    #[test]
    fn a_will_is_due_after_its_delay_capped_by_the_session() {
        assert_eq!(will(0, 60).due_after(), Duration::ZERO);
        assert_eq!(will(5, 60).due_after(), Duration::from_secs(5));
        assert_eq!(will(90, 60).due_after(), Duration::from_secs(60));
        assert_eq!(will(90, 0).due_after(), Duration::ZERO);
        assert_eq!(will(7, u32::MAX).due_after(), Duration::from_secs(7));
    }

    #[test]
    fn will_keys_name_the_node_and_round_trip_the_client() {
        let k = key("node-a", "a/b.c d");
        assert!(k.starts_with("node-a."));
        assert_eq!(client_of(&k, "node-a").as_deref(), Some("a/b.c d"));
        assert_eq!(client_of(&k, "node-b"), None);
        // A node whose name starts like another's is not it.
        assert_eq!(client_of(&key("node-ab", "x"), "node-a"), None);
    }
}
