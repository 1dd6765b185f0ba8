//! Session expiry for the sessions of dead nodes (issue 18; Session
//! Expiry Interval, MQTT 5.0 section 3.1.2.11.2).
//!
//! A live node ends its own sessions when they expire and deletes their
//! records (`sessions.rs`). A dead node cannot: so when a node is declared
//! dead (`liveness.rs`), the node that noticed marks each of its records
//! still saying "connected" as disconnected at that moment, and every live
//! node, every `sweep_interval_ms`, deletes the records of dead nodes whose
//! expiry has passed. Both are compare-and-set on the revision just read:
//! two nodes sweeping at once make one write, and a client that claims its
//! id at the same moment wins over both (its write moves the revision).
//! A record that a claim moved to a live node is that node's again.
//!
//! The disconnection time in a record is Unix time, written by one node and
//! read by another: session expiry across nodes is as exact as their
//! clocks agree (liveness itself never compares clocks).

use std::sync::atomic::Ordering;

use async_nats::jetstream::kv::Operation;
use bytes::Bytes;

use super::sessions::SessionRecord;
use super::{subject, Cluster};

/// Marks and deletes the records of every node this one knows to be dead.
pub(super) async fn sweep(cluster: std::sync::Arc<Cluster>) {
    run(&cluster, None, false).await;
}

/// Marks and deletes the records of `node` (just declared dead). With
/// `own_stale`, `node` is this node and the records to mark are those an
/// earlier run of it left: the ones this run does not own.
pub(super) async fn sweep_node(cluster: &Cluster, node: &str, own_stale: bool) {
    run(cluster, Some(node), own_stale).await;
}

async fn run(cluster: &Cluster, only: Option<&str>, own_stale: bool) {
    let Some(kv) = cluster.link.sessions.get() else {
        return;
    };
    let keys = match super::link::list_keys(kv, ">").await {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(error = %e, "cluster: session records not listed; sweeping later");
            return;
        }
    };
    let me = cluster.cfg.node.as_str();
    let (mut marked, mut deleted) = (0u64, 0u64);
    for k in keys {
        let Ok(Some(entry)) = kv.entry(k.clone()).await else {
            continue;
        };
        if entry.operation != Operation::Put {
            continue;
        }
        let Some(mut record) = SessionRecord::decode(&entry.value, entry.revision) else {
            continue;
        };
        if only.is_some_and(|n| n != record.node) {
            continue;
        }
        let sweepable = if record.node == me {
            // This run's own records are kept by its sessions; a record
            // naming this node that no session here owns is left over.
            let owned = subject::key_from_token(&k)
                .map(|c| cluster.owned.lock().contains_key(c.as_str()))
                .unwrap_or(true);
            !owned && (own_stale || record.disconnected_at_ms.is_some())
        } else {
            cluster.liveness.lock().is_dead(&record.node)
        };
        if !sweepable {
            continue;
        }
        let now = crate::store::unix_ms();
        let mut revision = entry.revision;
        if record.disconnected_at_ms.is_none() {
            record.disconnected_at_ms = Some(now);
            match kv.update(&k, Bytes::from(record.encode()), revision).await {
                Ok(r) => {
                    marked += 1;
                    revision = r;
                }
                // Claimed meanwhile, or swept by another node.
                Err(_) => continue,
            }
        }
        if !record.is_live(now) && kv.delete_expect_revision(&k, Some(revision)).await.is_ok() {
            deleted += 1;
            // The session ended: its queue in the cluster goes too.
            if let Ok(client) = subject::key_from_token(&k) {
                super::journal::purge(cluster, &std::sync::Arc::from(client.as_str()));
            }
        }
    }
    let s = &cluster.stats;
    s.records_marked.fetch_add(marked, Ordering::Relaxed);
    s.records_expired.fetch_add(deleted, Ordering::Relaxed);
    if marked + deleted > 0 {
        tracing::info!(
            node = only.unwrap_or("(dead nodes)"),
            marked_disconnected = marked,
            expired = deleted,
            "cluster: session records of dead nodes swept"
        );
    }
}
