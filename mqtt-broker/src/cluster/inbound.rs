//! What arrives from the other nodes: messages (routed through this node's
//! subscription index, as a local publish would be), retained messages
//! (kept in this node's retained store, so a SUBSCRIBE is answered
//! locally) and session records (a client id taken over elsewhere closes
//! its connection here).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::outbound::{CLIENT_HEADER, TIME_HEADER};
use super::sessions::SessionRecord;
use super::{subject, Cluster};
use crate::broker::BrokerState;
use crate::message::Message;

/// How many recent QoS 1/2 message ids are remembered: a publish retried
/// after a lost acknowledgement reaches the nodes twice, but is routed once.
const SEEN_IDS: usize = 16 * 1024;

/// Receives every message published on other nodes and routes it here.
pub(super) async fn run_messages(
    cluster: Arc<Cluster>,
    broker: Arc<BrokerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    // One subscription for both kinds, so a publisher's QoS 0 and QoS 1/2
    // messages keep their relative order. The client subscribes again
    // after every reconnection by itself.
    let prefix = cluster.cfg.subject_prefix.clone();
    let mut sub = loop {
        match cluster.link.client.subscribe(format!("{prefix}.*.>")).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot subscribe to messages; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    let mut seen: HashSet<String> = HashSet::new();
    let mut seen_order: VecDeque<String> = VecDeque::new();
    loop {
        let m = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => return },
            _ = shutdown.changed() => return,
        };
        let kind = m
            .subject
            .strip_prefix(prefix.as_str())
            .and_then(|s| s.get(..3));
        if !matches!(kind, Some(".v.") | Some(".d.")) {
            continue;
        }
        if kind == Some(".d.") {
            if let Some(id) = m
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            {
                let id = id.as_str().to_string();
                if !seen.insert(id.clone()) {
                    continue;
                }
                seen_order.push_back(id);
                if seen_order.len() > SEEN_IDS {
                    if let Some(old) = seen_order.pop_front() {
                        seen.remove(&old);
                    }
                }
            }
        }
        let header = |name: &str| {
            m.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        let received_ms = header(TIME_HEADER)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(crate::store::unix_ms);
        let publisher = header(CLIENT_HEADER).map(|c| Arc::<str>::from(c.as_str()));
        let Some(mut msg) = Message::from_stored_bytes(m.payload.clone(), received_ms) else {
            cluster.stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(subject = %m.subject, "cluster: message that is not an MQTT PUBLISH ignored");
            continue;
        };
        msg.publisher = publisher;
        cluster.stats.received.fetch_add(1, Ordering::Relaxed);
        broker.deliver_from_cluster(Arc::new(msg));
    }
}

/// Waits until the link is ready and `cell` holds its bucket.
async fn bucket<'a>(
    cluster: &'a Cluster,
    cell: &'a tokio::sync::OnceCell<Store>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<&'a Store> {
    loop {
        if cluster.link.is_ready() {
            if let Some(s) = cell.get() {
                return Some(s);
            }
        }
        tokio::select! {
            _ = cluster.link.wait_ready(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return None,
        }
    }
}

/// Keeps this node's retained store equal to the cluster's bucket: every
/// key's last value at start, then every change, in the bucket's order.
pub(super) async fn run_retained(
    cluster: Arc<Cluster>,
    broker: Arc<BrokerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let Some(kv) = bucket(&cluster, &cluster.link.retained, &mut shutdown).await else {
            return;
        };
        let empty = match kv.status().await {
            Ok(s) => s.info.state.messages == 0,
            Err(_) => false,
        };
        if empty {
            cluster.retained_loaded.store(true, Ordering::Release);
        }
        let mut watch = match kv.watch_with_history(">").await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot watch retained messages; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        loop {
            let entry = tokio::select! {
                e = watch.next() => e,
                _ = shutdown.changed() => return,
            };
            let entry = match entry {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "cluster: retained watch interrupted; starting again");
                    break;
                }
                None => break,
            };
            let Ok(topic) = subject::tokens_to_topic(&entry.key) else {
                cluster.stats.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            match entry.operation {
                Operation::Put => {
                    let v = &entry.value;
                    let msg = (v.len() > 8)
                        .then(|| {
                            let ms = u64::from_be_bytes(v[..8].try_into().unwrap_or_default());
                            Message::from_stored_bytes(v.slice(8..), ms)
                        })
                        .flatten();
                    match msg {
                        Some(m) if *m.topic == *topic => broker.retained.write().set(Arc::new(m)),
                        _ => {
                            cluster.stats.malformed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Operation::Delete | Operation::Purge => broker.retained.write().remove(&topic),
            }
            if entry.delta == 0 {
                cluster.retained_loaded.store(true, Ordering::Release);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Watches the session records: a record another node wrote for a client id
/// this node owns means the client connected there.
pub(super) async fn run_sessions(
    cluster: Arc<Cluster>,
    broker: Arc<BrokerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut from = 0u64;
    loop {
        let Some(kv) = bucket(&cluster, &cluster.link.sessions, &mut shutdown).await else {
            return;
        };
        let watch = if from == 0 {
            kv.watch_all().await
        } else {
            kv.watch_all_from_revision(from).await
        };
        let mut watch = match watch {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot watch session records; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        loop {
            let entry = tokio::select! {
                e = watch.next() => e,
                _ = shutdown.changed() => return,
            };
            let entry = match entry {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "cluster: session watch interrupted; starting again");
                    break;
                }
                None => break,
            };
            from = entry.revision + 1;
            // Only an owner deletes its record, and a node that lost the
            // client id cannot (its write is refused): deletes say nothing
            // about who owns the id.
            if entry.operation != Operation::Put {
                continue;
            }
            let Some(record) = SessionRecord::decode(&entry.value) else {
                continue;
            };
            if record.node == cluster.cfg.node {
                continue;
            }
            let Ok(client) = subject::key_from_token(&entry.key) else {
                continue;
            };
            let client: Arc<str> = client.into();
            let ours = {
                let mut owned = cluster.owned.lock();
                match owned.get(&client) {
                    Some(&rev) if rev < entry.revision => {
                        owned.remove(&client);
                        true
                    }
                    _ => false,
                }
            };
            if ours {
                tracing::info!(%client, to = %record.node, "cluster: client connected on another node; closing it here");
                cluster.stats.handed_over.fetch_add(1, Ordering::Relaxed);
                broker.hand_over(&client);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
