//! What arrives from the other nodes: messages (routed through this node's
//! subscription index, as a local publish would be), retained messages
//! (kept in this node's retained store, so a SUBSCRIBE is answered
//! locally) and session records (a client id taken over elsewhere closes
//! its connection here).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::kv::{Operation, Store};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::outbound::{CLIENT_HEADER, TIME_HEADER};
use super::sessions::SessionRecord;
use super::{journal, resume, subject, Cluster};
use crate::broker::BrokerState;
use crate::message::Message;

/// How often the position reached in the message stream is recorded as
/// this node's checkpoint (once the queue writes before it are stored).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// How long the stream reader may go without a message before it checks
/// whether the stream has messages it is not getting.
const STALL_CHECK: Duration = Duration::from_secs(2);

/// Receives the QoS 0 messages published on other nodes (core NATS, at
/// most once) and routes them here.
pub(super) async fn run_messages(
    cluster: Arc<Cluster>,
    broker: Arc<BrokerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The client subscribes again after every reconnection by itself.
    let subject = format!("{}.>", cluster.link.volatile);
    let mut sub = loop {
        match cluster.link.client.subscribe(subject.clone()).await {
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
    loop {
        let m = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => return },
            _ = shutdown.changed() => return,
        };
        let Some(msg) = message(&cluster, m.headers.as_ref(), m.payload.clone(), 0) else {
            continue;
        };
        cluster.stats.received.fetch_add(1, Ordering::Relaxed);
        broker.deliver_from_cluster(Arc::new(msg), false);
    }
}

/// A message as a broker put it on NATS (`outbound::encode`); `None`
/// (counted) for anything else.
pub(super) fn message(
    cluster: &Cluster,
    headers: Option<&async_nats::HeaderMap>,
    payload: bytes::Bytes,
    stream_seq: u64,
) -> Option<Message> {
    let header = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    let received_ms = header(TIME_HEADER)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(crate::store::unix_ms);
    let publisher = header(CLIENT_HEADER).map(|c| Arc::<str>::from(c.as_str()));
    let Some(mut msg) = Message::from_stored_bytes(payload, received_ms) else {
        cluster.stats.malformed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("cluster: message that is not an MQTT PUBLISH ignored");
        return None;
    };
    msg.publisher = publisher;
    msg.cluster_seq = stream_seq;
    Some(msg)
}

/// Reads the QoS 1/2 message stream in order, from where it ends when this
/// node starts: other nodes' messages are routed here like a local publish;
/// this node's own go to its persistent sessions only (they were routed to
/// the others when published). Sessions resumed from the cluster are
/// installed between two messages (`resume::adopt`), and every
/// `CHECKPOINT_EVERY` the position reached is recorded once the queue
/// writes it caused are stored (`journal.rs`).
pub(super) async fn run_stream(
    cluster: Arc<Cluster>,
    broker: Arc<BrokerState>,
    mut adopt: mpsc::Receiver<resume::Adopt>,
    mut shutdown: watch::Receiver<bool>,
) {
    let own_prefix = format!("{}-", cluster.incarnation());
    // The last sequence routed; `None` until the stream's end is known.
    let mut position: Option<u64> = None;
    let mut checkpoint = Checkpoint::default();
    'connect: loop {
        if !cluster.link.wait_ready(Duration::from_secs(1)).await {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => continue 'connect,
                _ = shutdown.changed() => return,
            }
        }
        let stream = match cluster
            .link
            .js
            .get_stream(&cluster.link.messages_stream)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: message stream not readable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue 'connect,
                    _ = shutdown.changed() => return,
                }
            }
        };
        let from = match position {
            Some(p) => p,
            None => {
                let p = stream.cached_info().state.last_sequence;
                cluster.stream_positioned.store(true, Ordering::Release);
                // Recorded before anything is read: a session resumed from
                // this run never replays from before it.
                checkpoint.write_now(&cluster, p).await;
                position = Some(p);
                p
            }
        };
        let consumer = match stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: format!("{}.>", cluster.link.durable),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from + 1,
                },
                ..Default::default()
            })
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot read the message stream; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue 'connect,
                    _ = shutdown.changed() => return,
                }
            }
        };
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot read the message stream; retrying");
                continue 'connect;
            }
        };
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        let mut last_progress = tokio::time::Instant::now();
        loop {
            tokio::select! {
                m = messages.next() => {
                    let m = match m {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            // Read again from where this node stands, on a
                            // new consumer: the ordered consumer's own
                            // recovery can stall when its server is gone.
                            tracing::warn!(error = %e, position = position.unwrap_or(0), "cluster: message stream read interrupted; reading on from the position reached");
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(200)) => continue 'connect,
                                _ = shutdown.changed() => return,
                            }
                        }
                        None => continue 'connect,
                    };
                    let Ok(seq) = m.info().map(|i| i.stream_sequence) else {
                        continue;
                    };
                    let p = position.unwrap_or(0);
                    if seq <= p {
                        continue;
                    }
                    position = Some(seq);
                    last_progress = tokio::time::Instant::now();
                    let own = m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                        .is_some_and(|id| id.as_str().starts_with(&own_prefix));
                    let Some(msg) = message(&cluster, m.headers.as_ref(), m.payload.clone(), seq) else {
                        continue;
                    };
                    if !own {
                        cluster.stats.received.fetch_add(1, Ordering::Relaxed);
                    }
                    broker.deliver_from_cluster(Arc::new(msg), own);
                }
                a = adopt.recv() => {
                    let Some(a) = a else { return };
                    resume::adopt(&cluster, &broker, &stream, a, position.unwrap_or(0)).await;
                }
                _ = tick.tick() => {
                    checkpoint.maybe_write(&cluster, position.unwrap_or(0));
                    // A reader silent while the stream has grown is stuck
                    // (seen after a nats-server was SIGKILLed): read on, on
                    // a new consumer, from the position reached.
                    if last_progress.elapsed() >= STALL_CHECK {
                        last_progress = tokio::time::Instant::now();
                        let behind = match cluster.link.js.get_stream(&cluster.link.messages_stream).await {
                            Ok(s) => s.cached_info().state.last_sequence > position.unwrap_or(0),
                            Err(_) => false,
                        };
                        if behind {
                            tracing::warn!(position = position.unwrap_or(0), "cluster: message stream reader stalled; reading on from the position reached");
                            continue 'connect;
                        }
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// This node's checkpoint: the position written last, and whether a write
/// is on its way.
#[derive(Default)]
struct Checkpoint {
    written: u64,
    busy: Arc<std::sync::atomic::AtomicBool>,
}

impl Checkpoint {
    /// Writes `position` once the queue writes before now are stored (in
    /// the background; skipped while the previous write is on its way).
    fn maybe_write(&mut self, cluster: &Arc<Cluster>, position: u64) {
        if position == self.written || self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        self.written = position;
        let barrier = cluster.queue_barrier();
        let c = cluster.clone();
        let busy = self.busy.clone();
        tokio::spawn(async move {
            if barrier.await.unwrap_or(false) {
                write(&c, position).await;
            }
            busy.store(false, Ordering::Release);
        });
    }

    async fn write_now(&mut self, cluster: &Arc<Cluster>, position: u64) {
        self.written = position;
        write(cluster, position).await;
    }
}

async fn write(cluster: &Cluster, position: u64) {
    let subject = journal::checkpoint_subject(cluster, &cluster.incarnation());
    let payload = bytes::Bytes::copy_from_slice(&position.to_be_bytes());
    let stored = match cluster.link.js.publish(subject, payload).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    if !stored {
        tracing::debug!(
            position,
            "cluster: checkpoint not written; the next one covers it"
        );
    }
}

/// Waits until the link is ready and `cell` holds its bucket.
pub(super) async fn bucket<'a>(
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
            let Some(record) = SessionRecord::decode(&entry.value, entry.revision) else {
                continue;
            };
            if record.node == cluster.cfg.node {
                continue;
            }
            let Ok(client) = subject::key_from_token(&entry.key) else {
                continue;
            };
            let client: Arc<str> = client.into();
            // The claim with the highest epoch owns the client id
            // (`sessions.rs`): a later claim elsewhere takes it over; a
            // write for an older claim slipped past the compare-and-set,
            // and this owner writes its record over it.
            let (lost, stale) = {
                let mut owned = cluster.owned.lock();
                tracing::debug!(%client, node = %record.node, revision = entry.revision, epoch = record.epoch, held = ?owned.get(&client), "cluster: another node wrote a session record");
                match owned.get(&client) {
                    Some(held) if held.epoch < record.epoch => {
                        owned.remove(&client);
                        (true, false)
                    }
                    Some(held) => (false, held.revision < entry.revision),
                    None => (false, false),
                }
            };
            if lost {
                tracing::info!(%client, to = %record.node, "cluster: client connected on another node; closing it here");
                cluster.stats.handed_over.fetch_add(1, Ordering::Relaxed);
                broker.hand_over(&client);
            } else if stale {
                tracing::info!(%client, from = %record.node, "cluster: a record written for an older claim; writing this node's over it");
                broker.resave_session(&client);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
