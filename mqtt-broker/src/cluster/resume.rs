//! A session resumed on this node from the cluster (issue 18): the client
//! connected here, and its session was last owned by another node (alive,
//! or killed), or by this node before a restart.
//!
//! 1. The connection's task reads the session's queue from the journal
//!    (`journal.rs`: every entry in its furthest state) and the previous
//!    owner's incarnation, then that incarnation's checkpoint: the position
//!    in `P_MESSAGES` up to which everything it read had reached its
//!    sessions' queues.
//! 2. The task that reads `P_MESSAGES` (`inbound::run_stream`) installs the
//!    session between two messages, at its position P, and replays the
//!    messages after the checkpoint up to P that match the session's
//!    subscriptions and are not in its queue already (by their stream
//!    sequence): those the previous owner read but had not written when it
//!    died. From P on, the session gets messages like any other here.
//!    Once the replayed messages are stored in its queue, this node is
//!    marked as the session's owner (its checkpoint covers the session from
//!    then on).
//! 3. The connection attaches the session: session present, the queue, and
//!    the messages that were in flight sent again with DUP, PUBRELs again
//!    (MQTT 5.0 section 4.4).
//!
//! Queue limits apply to the replayed messages as to any others (drops are
//! counted); messages whose Message Expiry Interval has passed are dropped.
//! A previous owner without a checkpoint (its journal entry lost) means no
//! replay: only the queue as written is resumed.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::journal::{self, Entry, Loaded};
use super::sessions::{ClaimError, SessionRecord};
use super::{inbound, Cluster};
use crate::broker::BrokerState;

/// A session for the stream task to install (step 2).
pub(super) struct Adopt {
    client: Arc<str>,
    record: SessionRecord,
    entries: Vec<Entry>,
    max_seq: u64,
    checkpoint: Option<u64>,
    reply: oneshot::Sender<()>,
}

/// How long reading a session's queue may take before the CONNECT is
/// refused as the cluster being unavailable.
const READ_LIMIT: Duration = Duration::from_secs(10);

/// How long installing (and replaying into) a session may take.
const ADOPT_LIMIT: Duration = Duration::from_secs(60);

/// See [`Cluster::resume`].
pub(super) async fn resume(
    cluster: &Arc<Cluster>,
    client: &Arc<str>,
    record: SessionRecord,
) -> Result<(), ClaimError> {
    let read = tokio::time::timeout(READ_LIMIT, read_session(cluster, client)).await;
    let (loaded, checkpoint) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(%client, error = %e, "cluster: session queue not readable");
            return Err(ClaimError::Unavailable);
        }
        Err(_) => {
            tracing::warn!(%client, "cluster: session queue not read in time");
            return Err(ClaimError::Unavailable);
        }
    };
    if loaded.malformed > 0 {
        tracing::warn!(%client, entries = loaded.malformed, "cluster: unreadable session queue entries skipped");
    }
    let max_seq = loaded.max_seq();
    // Replay after what the owner surely read (its checkpoint) and after
    // what the session's queue already held.
    let replay_after = checkpoint.map_or(loaded.high, |k| k.max(loaded.high));
    let checkpoint = (checkpoint.is_some() || loaded.high > 0).then_some(replay_after);
    let (reply, rx) = oneshot::channel();
    let adopt = Adopt {
        client: client.clone(),
        record,
        entries: loaded.into_entries(),
        max_seq,
        checkpoint,
        reply,
    };
    if cluster.adopt.send(adopt).await.is_err() {
        return Err(ClaimError::Unavailable);
    }
    if !matches!(tokio::time::timeout(ADOPT_LIMIT, rx).await, Ok(Ok(()))) {
        return Err(ClaimError::Unavailable);
    }
    // Only once what was replayed is in the session's queue does this
    // node's checkpoint stand for the session: until then a resume
    // elsewhere must replay from the previous owner's.
    if !matches!(
        tokio::time::timeout(READ_LIMIT, journal::barrier(cluster)).await,
        Ok(Ok(true))
    ) {
        return Err(ClaimError::Unavailable);
    }
    journal::owner(cluster, client);
    Ok(())
}

/// Reads the session's queue and its previous owner's checkpoint.
async fn read_session(
    cluster: &Cluster,
    client: &Arc<str>,
) -> Result<(Loaded, Option<u64>), String> {
    let stream = cluster
        .link
        .js
        .get_stream(&cluster.link.queues_stream)
        .await
        .map_err(|e| e.to_string())?;
    let owner = match last_value(&stream, journal::owner_subject(cluster, client)).await? {
        Some(v) => String::from_utf8(v).ok(),
        None => None,
    };
    let checkpoint = match owner {
        Some(incarnation) => {
            last_value(&stream, journal::checkpoint_subject(cluster, &incarnation))
                .await?
                .and_then(|v| {
                    v.get(..8)
                        .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
                })
        }
        None => None,
    };
    let prefix = journal::queue_prefix(cluster, client);
    let mut loaded = Loaded::default();
    let mut consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("{prefix}.>"),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let pending = consumer
        .info()
        .await
        .map_err(|e| e.to_string())?
        .num_pending;
    if pending > 0 {
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        let mut read = 0;
        while read < pending {
            let m = messages
                .next()
                .await
                .ok_or("the session queue ended early")?
                .map_err(|e| e.to_string())?;
            read += 1;
            let rest = m
                .subject
                .strip_prefix(prefix.as_str())
                .and_then(|r| r.strip_prefix('.'));
            let parsed = rest
                .and_then(|r| r.split_once('.'))
                .and_then(|(kind, seq)| Some((kind, seq.parse::<u64>().ok()?)));
            match parsed {
                Some((kind, seq)) => loaded.add(kind, seq, &m.payload),
                None => loaded.malformed += 1,
            }
            if m.info().is_ok_and(|i| i.pending == 0) {
                break;
            }
        }
    }
    Ok((loaded, checkpoint))
}

/// The last value of `subject` in `stream`, `None` if it has none.
async fn last_value(stream: &Stream, subject: String) -> Result<Option<Vec<u8>>, String> {
    match stream.direct_get_last_for_subject(subject).await {
        Ok(m) => Ok(Some(m.payload.to_vec())),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Step 2, on the stream task at `position`.
pub(super) async fn adopt(
    cluster: &Arc<Cluster>,
    broker: &Arc<BrokerState>,
    stream: &Stream,
    a: Adopt,
    position: u64,
) {
    let seen: HashSet<u64> = a
        .entries
        .iter()
        .map(|e| e.source)
        .filter(|s| *s > 0)
        .collect();
    let session = broker.adopt_session(
        &a.client,
        a.record.expiry_secs,
        &a.record.subscriptions,
        a.entries,
        a.max_seq,
    );
    let mut replayed = 0u64;
    if let Some(from) = a.checkpoint.map(|c| c + 1).filter(|f| *f <= position) {
        match replay(cluster, broker, stream, &session, from, position, &seen).await {
            Ok(n) => replayed = n,
            Err(e) => {
                tracing::warn!(client = %a.client, error = %e, "cluster: messages after the previous owner's checkpoint not replayed")
            }
        }
    }
    cluster
        .stats
        .sessions_resumed
        .fetch_add(1, Ordering::Relaxed);
    cluster
        .stats
        .messages_replayed
        .fetch_add(replayed, Ordering::Relaxed);
    tracing::info!(client = %a.client, replayed, "cluster: session resumed from the cluster");
    let _ = a.reply.send(());
}

/// Queues for `session` the messages `from..=to` of the stream it
/// subscribes to and does not hold yet. Returns how many were queued.
async fn replay(
    cluster: &Arc<Cluster>,
    broker: &Arc<BrokerState>,
    stream: &Stream,
    session: &Arc<crate::session::Session>,
    from: u64,
    to: u64,
    seen: &HashSet<u64>,
) -> Result<u64, String> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("{}.>", cluster.link.durable),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut queued = 0;
    loop {
        let m = match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(None) => break,
            // Nothing more (the range's end aged out of the stream).
            Err(_) => break,
        };
        let Ok((seq, pending)) = m.info().map(|i| (i.stream_sequence, i.pending)) else {
            continue;
        };
        if seq > to {
            break;
        }
        if !seen.contains(&seq) {
            if let Some(msg) = inbound::message(cluster, m.headers.as_ref(), m.payload.clone(), seq)
            {
                if broker.deliver_replayed(Arc::new(msg), session) {
                    queued += 1;
                }
            }
        }
        if seq == to || pending == 0 {
            break;
        }
    }
    Ok(queued)
}
