//! Which node owns a client identifier, and the session that goes with it
//! (MQTT 5.0 section 3.1.4: a new connection with a client id in use takes
//! the session over, [MQTT-3.1.4-3]; across nodes here).
//!
//! The `P_sessions` bucket holds one record per client id: the owning node,
//! the session expiry, when the client disconnected (if it did) and its
//! subscriptions. Every write is a compare-and-set on the record's revision
//! (JetStream `Nats-Expected-Last-Subject-Sequence`):
//!
//! - a CONNECT reads the record and writes its own with the revision it
//!   read. Of two nodes claiming the same id at once, exactly one write
//!   succeeds; the other reads again and claims over the winner (a later
//!   connection takes the session over, and the winner's node closes its
//!   connection), so only one connection survives. After three refused
//!   writes in a row the CONNECT is refused (CONNACK 0x89 Server busy, 3.1.1:
//!   3 Server unavailable);
//! - every node watches the bucket: a record written by another node for a
//!   client id this node owns means the client moved, so this node closes
//!   its connection (DISCONNECT 0x8E Session taken over) and forgets the
//!   session; the new node took its subscriptions from the record;
//! - the owner rewrites the record on SUBSCRIBE, UNSUBSCRIBE and disconnect,
//!   and deletes it when the session ends. A write refused because the
//!   revision moved means another node owns the id now.
//!
//! The compare-and-set is not enough on its own: up to nats-server 2.9.20
//! (Debian 12 ships 2.9.10), a clustered stream checks the expected
//! revision before the write is replicated, not as part of it, so two
//! writes racing with the same expected revision can both be stored
//! (nats-server issue 4320). A record therefore carries its *epoch*: the
//! revision of the claim it belongs to (a claim's own revision; the
//! claim's for every later save of that owner). The claim with the highest
//! epoch owns the client id, and every node sees the same revisions in the
//! same order, so all agree on who that is. A write that slipped past the
//! check for a node that had lost meanwhile carries an older epoch: the
//! owner ignores it and writes its record over it.
//!
//! All record work of one node runs on one task, in order, so a node never
//! races with itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{UpdateError, UpdateErrorKind};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{subject, Cluster};
use crate::broker::BrokerState;

/// Version 2 added the epoch; a version 1 record reads as a claim.
const RECORD_VERSION: u8 = 2;

/// Reads and compare-and-set writes a claim tries before giving up.
const CLAIM_ATTEMPTS: usize = 3;

/// A session as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The node that owns the client id.
    pub node: String,
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry_secs: u32,
    /// When the client disconnected (Unix ms), `None` while connected.
    pub disconnected_at_ms: Option<u64>,
    /// Subscriptions, in the store's encoding
    /// (`SessionState::encode_subscriptions`).
    pub subscriptions: Vec<u8>,
    /// The revision of the claim this record belongs to (see the module
    /// comment). Encoded as 0 in a claim, which does not know its own
    /// revision before it is written; [`SessionRecord::decode`] gives it
    /// the revision it was stored at.
    pub epoch: u64,
}

/// A node's hold on a client id it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Owned {
    /// The revision of its claim.
    pub epoch: u64,
    /// The revision of its last write, expected by the next one.
    pub revision: u64,
}

impl SessionRecord {
    /// The record's bytes: version, node, epoch (0: this is a claim),
    /// expiry, disconnection time (0: connected), subscriptions.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.node.len() + self.subscriptions.len());
        out.push(RECORD_VERSION);
        out.push(self.node.len().min(255) as u8);
        out.extend_from_slice(&self.node.as_bytes()[..self.node.len().min(255)]);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.expiry_secs.to_be_bytes());
        out.extend_from_slice(&self.disconnected_at_ms.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&self.subscriptions);
        out
    }

    /// Reads [`SessionRecord::encode`]'s bytes, stored at `revision` (a
    /// claim's epoch); `None` for anything else.
    pub fn decode(b: &[u8], revision: u64) -> Option<SessionRecord> {
        let version = *b.first()?;
        if version != 1 && version != RECORD_VERSION {
            return None;
        }
        let n = usize::from(*b.get(1)?);
        let node = std::str::from_utf8(b.get(2..2 + n)?).ok()?.to_string();
        let mut rest = b.get(2 + n..)?;
        let mut epoch = 0;
        if version == RECORD_VERSION {
            epoch = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
            rest = &rest[8..];
        }
        let expiry_secs = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        let at = u64::from_be_bytes(rest.get(4..12)?.try_into().ok()?);
        Some(SessionRecord {
            node,
            expiry_secs,
            disconnected_at_ms: (at != 0).then_some(at),
            subscriptions: rest[12..].to_vec(),
            epoch: if epoch == 0 { revision } else { epoch },
        })
    }

    /// Whether the session still exists at `now_ms`: it has an expiry and
    /// the client is connected or left less than that long ago.
    pub fn is_live(&self, now_ms: u64) -> bool {
        match (self.expiry_secs, self.disconnected_at_ms) {
            (0, _) => false,
            (_, None) | (u32::MAX, _) => true,
            (secs, Some(at)) => now_ms.saturating_sub(at) < u64::from(secs) * 1000,
        }
    }
}

/// Why a client id could not be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    /// Another node claimed it at the same moment and won.
    Lost,
    /// NATS or JetStream did not answer in time.
    Unavailable,
}

pub(super) enum RecordOp {
    Claim {
        client: Arc<str>,
        clean_start: bool,
        reply: oneshot::Sender<Result<Option<SessionRecord>, ClaimError>>,
    },
    Save {
        client: Arc<str>,
        record: SessionRecord,
    },
    Delete {
        client: Arc<str>,
    },
    /// Answers once everything before it is done.
    Flush(oneshot::Sender<bool>),
    /// This node was cut off long enough to be declared dead: learn the
    /// records' revisions again (another node may have marked them
    /// disconnected) and hand over the clients that moved meanwhile.
    Reassert,
}

/// See [`RecordOp::Reassert`]; the broker then saves its online sessions
/// again (`BrokerState::resave_online_sessions`), queued behind this.
pub(super) fn reassert(cluster: &Cluster) {
    if cluster.records.try_send(RecordOp::Reassert).is_err() {
        tracing::warn!("cluster: session record queue full; records not written again");
    }
}

/// See [`Cluster::claim`].
pub(super) async fn claim(
    cluster: &Cluster,
    client: &Arc<str>,
    clean_start: bool,
) -> Result<Option<SessionRecord>, ClaimError> {
    let limit = Duration::from_millis(cluster.cfg.ack_timeout_ms);
    let (reply, rx) = oneshot::channel();
    let op = RecordOp::Claim {
        client: client.clone(),
        clean_start,
        reply,
    };
    let result = tokio::time::timeout(limit, async {
        cluster
            .records
            .send(op)
            .await
            .map_err(|_| ClaimError::Unavailable)?;
        rx.await.map_err(|_| ClaimError::Unavailable)?
    })
    .await
    .unwrap_or(Err(ClaimError::Unavailable));
    if result.is_err() {
        cluster.stats.claims_refused.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// See [`Cluster::save_session`].
pub(super) fn save(
    cluster: &Cluster,
    client: &Arc<str>,
    expiry_secs: u32,
    disconnected_at_ms: Option<u64>,
    subscriptions: Vec<u8>,
) {
    let record = SessionRecord {
        node: cluster.cfg.node.clone(),
        expiry_secs,
        disconnected_at_ms,
        subscriptions,
        // The record task sets the owner's epoch.
        epoch: 0,
    };
    let op = RecordOp::Save {
        client: client.clone(),
        record,
    };
    if cluster.records.try_send(op).is_err() {
        tracing::warn!(client = %client, "cluster: session record queue full; record not updated");
    }
}

/// See [`Cluster::session_ended`].
pub(super) fn ended(cluster: &Cluster, client: &Arc<str>) {
    let op = RecordOp::Delete {
        client: client.clone(),
    };
    if cluster.records.try_send(op).is_err() {
        tracing::warn!(client = %client, "cluster: session record queue full; record not deleted");
    }
}

/// The record task.
pub(super) async fn run(
    cluster: Arc<Cluster>,
    broker: Arc<BrokerState>,
    mut rx: mpsc::Receiver<RecordOp>,
) {
    while let Some(op) = rx.recv().await {
        match op {
            RecordOp::Flush(tx) => {
                let _ = tx.send(true);
            }
            RecordOp::Claim {
                client,
                clean_start,
                reply,
            } => {
                if reply.is_closed() {
                    continue;
                }
                let r = do_claim(&cluster, &client, clean_start).await;
                if let Err(e) = &r {
                    tracing::info!(%client, error = ?e, "cluster: client id not claimed");
                }
                let _ = reply.send(r);
            }
            RecordOp::Save { client, mut record } => {
                let Some(held) = cluster.owned.lock().get(&client).copied() else {
                    continue;
                };
                let Some(kv) = cluster.link.sessions.get() else {
                    continue;
                };
                let key = subject::key_token(&client);
                record.epoch = held.epoch;
                let value = Bytes::from(record.encode());
                let mut result = kv.update(&key, value.clone(), held.revision).await;
                if let Err(e) = &result {
                    // Another node marked this node's record disconnected
                    // (it declared this node dead), or a loser's write
                    // slipped in: still ours.
                    if let Some(fresh) = still_ours(&cluster, kv, &key, held, e).await {
                        result = kv.update(&key, value, fresh).await;
                    }
                }
                match result {
                    Ok(new) => {
                        tracing::debug!(%client, read = held.revision, written = new, epoch = held.epoch, "cluster: session record saved");
                        let mut owned = cluster.owned.lock();
                        if let Some(r) = owned.get_mut(&client) {
                            r.revision = new;
                        }
                    }
                    Err(e) => lost_or_failed(&cluster, &broker, &client, held, &e),
                }
            }
            RecordOp::Reassert => {
                let Some(kv) = cluster.link.sessions.get() else {
                    continue;
                };
                let clients: Vec<Arc<str>> = cluster.owned.lock().keys().cloned().collect();
                for client in clients {
                    let key = subject::key_token(&client);
                    let Ok(entry) = kv.entry(&key).await else {
                        continue;
                    };
                    let Some(held) = cluster.owned.lock().get(&client).copied() else {
                        continue;
                    };
                    let moved = entry.as_ref().is_some_and(|e| {
                        e.operation == async_nats::jetstream::kv::Operation::Put
                            && SessionRecord::decode(&e.value, e.revision)
                                .is_some_and(|r| r.node != cluster.cfg.node && r.epoch > held.epoch)
                    });
                    if moved {
                        if cluster.owned.lock().remove(&client).is_some() {
                            tracing::info!(%client, "cluster: client connected on another node while this one was cut off; closing it here");
                            cluster.stats.handed_over.fetch_add(1, Ordering::Relaxed);
                            broker.hand_over(&client);
                        }
                    } else if let Some(r) = cluster.owned.lock().get_mut(&client) {
                        // Ours, marked disconnected or swept meanwhile: the
                        // next save writes over that revision.
                        r.revision = entry.map_or(0, |e| e.revision);
                    }
                }
            }
            RecordOp::Delete { client } => {
                let Some(held) = cluster.owned.lock().get(&client).copied() else {
                    continue;
                };
                let Some(kv) = cluster.link.sessions.get() else {
                    continue;
                };
                let key = subject::key_token(&client);
                let mut result = kv.delete_expect_revision(&key, Some(held.revision)).await;
                if let Err(e) = &result {
                    if let Some(fresh) = still_ours(&cluster, kv, &key, held, e).await {
                        result = kv.delete_expect_revision(&key, Some(fresh)).await;
                    }
                }
                match result {
                    Ok(()) => {
                        cluster.owned.lock().remove(&client);
                    }
                    Err(e) => lost_or_failed(&cluster, &broker, &client, held, &e),
                }
            }
        }
    }
}

/// A write was refused for a wrong revision, but the record still names
/// this node (another node marked it disconnected after declaring this one
/// dead, or swept it), or was written for a claim older than this node's
/// (see the module comment): the revision to write over.
async fn still_ours(
    cluster: &Cluster,
    kv: &async_nats::jetstream::kv::Store,
    key: &str,
    held: Owned,
    error: &UpdateError,
) -> Option<u64> {
    if error.kind() != UpdateErrorKind::WrongLastRevision {
        return None;
    }
    let entry = kv.entry(key).await.ok()??;
    let ours = match entry.operation {
        async_nats::jetstream::kv::Operation::Put => {
            SessionRecord::decode(&entry.value, entry.revision)
                .is_some_and(|r| r.node == cluster.cfg.node || r.epoch < held.epoch)
        }
        // Swept after it was marked: nobody else claimed it.
        _ => true,
    };
    ours.then_some(entry.revision)
}

/// A record write was refused: if the record moved on, another node owns
/// the client now; if NATS failed, the record stays as it was.
fn lost_or_failed(
    cluster: &Cluster,
    broker: &Arc<BrokerState>,
    client: &Arc<str>,
    held: Owned,
    error: &UpdateError,
) {
    if error.kind() == UpdateErrorKind::WrongLastRevision {
        let mut owned = cluster.owned.lock();
        if owned.get(client) == Some(&held) {
            owned.remove(client);
            drop(owned);
            tracing::info!(%client, "cluster: client id taken by another node");
            cluster.stats.handed_over.fetch_add(1, Ordering::Relaxed);
            broker.hand_over(client);
        }
    } else {
        tracing::warn!(%client, %error, "cluster: session record not written");
    }
}

async fn do_claim(
    cluster: &Cluster,
    client: &Arc<str>,
    clean_start: bool,
) -> Result<Option<SessionRecord>, ClaimError> {
    if !cluster
        .link
        .wait_ready(Duration::from_millis(cluster.cfg.ack_timeout_ms))
        .await
    {
        return Err(ClaimError::Unavailable);
    }
    let kv = cluster.link.sessions.get().ok_or(ClaimError::Unavailable)?;
    let key = subject::key_token(client);
    // A write between our read and our write (the previous owner saving the
    // session as it disconnects, or another node's claim) fails ours; read
    // again and claim over it, as a later connection takes a session over.
    // Only repeated conflicts refuse the connection.
    let mut attempt = 0;
    let held_before = cluster.owned.lock().contains_key(client);
    let (previous, previous_node) = loop {
        attempt += 1;
        let entry = kv.entry(&key).await.map_err(|e| {
            tracing::warn!(%client, error = %e, "cluster: session record not readable");
            ClaimError::Unavailable
        })?;
        let (rev, previous) = match &entry {
            Some(e) => {
                let live = matches!(e.operation, async_nats::jetstream::kv::Operation::Put);
                (
                    e.revision,
                    live.then(|| SessionRecord::decode(&e.value, e.revision))
                        .flatten(),
                )
            }
            None => (0, None),
        };
        let previous_node = previous.as_ref().map(|p| p.node.clone());
        let now = crate::store::unix_ms();
        let previous = previous.filter(|p| p.is_live(now));
        let record = SessionRecord {
            node: cluster.cfg.node.clone(),
            expiry_secs: previous.as_ref().map_or(0, |p| p.expiry_secs),
            disconnected_at_ms: None,
            subscriptions: match (&previous, clean_start) {
                (Some(p), false) => p.subscriptions.clone(),
                _ => Vec::new(),
            },
            // A claim: its epoch is the revision it gets.
            epoch: 0,
        };
        match kv.update(&key, Bytes::from(record.encode()), rev).await {
            Ok(new) => {
                tracing::debug!(%client, read = rev, written = new, attempt, "cluster: client id claimed");
                cluster.owned.lock().insert(
                    client.clone(),
                    Owned {
                        epoch: new,
                        revision: new,
                    },
                );
                break (previous, previous_node);
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                tracing::debug!(%client, read = rev, attempt, "cluster: claim refused, the record moved");
                if attempt >= CLAIM_ATTEMPTS {
                    return Err(ClaimError::Lost);
                }
            }
            Err(e) => {
                tracing::warn!(%client, error = %e, "cluster: session record not written");
                return Err(ClaimError::Unavailable);
            }
        }
    };
    // The previous connection was on another node, or on an earlier run of
    // this one: a delayed will it left is cancelled by this reconnection.
    if let Some(node) = previous_node {
        if node != cluster.cfg.node || !held_before {
            super::wills::cancel_delayed(cluster, &node, client).await;
        }
    }
    // A session this node holds itself is resumed locally as usual (the
    // caller checks; after a restart it is not here any more).
    Ok(previous.filter(|_| !clean_start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let r = SessionRecord {
            node: "node-a".into(),
            expiry_secs: 3600,
            disconnected_at_ms: Some(1_700_000_000_000),
            subscriptions: vec![0, 1, b'a', 1, 0, 0, 0, 0],
            epoch: 7,
        };
        assert_eq!(SessionRecord::decode(&r.encode(), 9), Some(r.clone()));
        let connected = SessionRecord {
            disconnected_at_ms: None,
            ..r
        };
        assert_eq!(
            SessionRecord::decode(&connected.encode(), 9),
            Some(connected.clone())
        );
        assert_eq!(SessionRecord::decode(&[], 1), None);
        assert_eq!(SessionRecord::decode(&[9, 0], 1), None);
        assert_eq!(SessionRecord::decode(&[1, 5, b'a'], 1), None);
        assert_eq!(SessionRecord::decode(&[2, 1, b'a', 0, 0], 1), None);
    }

    // A claim does not know its revision when it is written: it is stored
    // with epoch 0 and read back with the revision it got.
    #[test]
    fn a_claim_reads_back_with_its_revision_as_epoch() {
        let claim = SessionRecord {
            node: "node-b".into(),
            expiry_secs: 0,
            disconnected_at_ms: None,
            subscriptions: vec![],
            epoch: 0,
        };
        let read = SessionRecord::decode(&claim.encode(), 42).unwrap();
        assert_eq!(read.epoch, 42);
        // A version 1 record (before epochs) reads as a claim too.
        let mut v1 = vec![1, 1, b'n'];
        v1.extend_from_slice(&30u32.to_be_bytes());
        v1.extend_from_slice(&0u64.to_be_bytes());
        let old = SessionRecord::decode(&v1, 5).unwrap();
        assert_eq!(
            (old.node.as_str(), old.expiry_secs, old.epoch),
            ("n", 30, 5)
        );
    }

    // MQTT 5.0 section 3.1.2.11.2: the session lives Session Expiry
    // Interval seconds after the connection closes; 0 ends it at once.
    #[test]
    fn a_record_is_live_until_its_expiry() {
        let r = |expiry_secs, at| SessionRecord {
            node: "n".into(),
            expiry_secs,
            disconnected_at_ms: at,
            subscriptions: vec![],
            epoch: 1,
        };
        assert!(!r(0, None).is_live(10_000));
        assert!(r(10, None).is_live(10_000));
        assert!(r(10, Some(1_000)).is_live(10_999));
        assert!(!r(10, Some(1_000)).is_live(11_000));
        assert!(r(u32::MAX, Some(0)).is_live(u64::MAX));
    }
}
