//! Several brokers as one MQTT service over a NATS cluster with JetStream
//! (issue 17, cluster part 1): one topic space, cluster-wide retained
//! messages, and a client identifier owned by one node at a time.
//!
//! What travels where (every name starts with `subject_prefix`, `mqtt` by
//! default; `P` is that prefix upper-cased):
//!
//! | what | NATS | file |
//! |---|---|---|
//! | QoS 0 messages | core publish on `mqtt.v.<topic>` | `outbound.rs`, `inbound.rs` |
//! | QoS 1/2 messages | JetStream stream `P_MESSAGES` (`mqtt.d.>`), acknowledged to the MQTT publisher only after JetStream's ack | `outbound.rs`, `inbound.rs` |
//! | retained messages | key-value bucket `P_retained`, one key per topic | `outbound.rs`, `inbound.rs` |
//! | who owns a client id | key-value bucket `P_sessions`, written with compare-and-set | `sessions.rs` |
//! | which nodes are alive | key-value bucket `P_nodes`, a heartbeat per node | `liveness.rs` |
//! | wills of connected clients | key-value bucket `P_wills`, published by a survivor when their node dies | `wills.rs` |
//! | sessions of dead nodes | `P_sessions` records marked disconnected, deleted when expired | `expiry.rs` |
//!
//! Topics become subjects through the reversible escaping in `subject.rs`.
//! Every node subscribes to all of `mqtt.v.>` and `mqtt.d.>` and routes what
//! arrives through its own subscription index, exactly like a local publish:
//! the per-subscription options (No Local, Retain As Published, subscription
//! identifiers, one copy for overlapping subscriptions) are applied where the
//! subscriber is. Subscribing to everything, rather than to each filter,
//! means a SUBSCRIBE needs no NATS round trip and cannot race with interest
//! spreading through the NATS routes. The publishing node routes to its own
//! subscribers at once and does not receive its own messages back (NATS
//! `no_echo`). `$SYS` topics stay on their node.
//!
//! `link.rs` holds the NATS connection, the streams and buckets and the
//! connection state reported in the log and in `$SYS/broker/cluster/state`
//! (`up`, `degraded`: JetStream does not store, `down`: no NATS).

mod expiry;
mod inbound;
mod journal;
mod link;
mod liveness;
mod outbound;
mod resume;
mod sessions;
mod shared;
pub mod subject;
mod wills;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::broker::BrokerState;
use crate::config::ClusterConfig;
use crate::message::Message;

pub use journal::Entry as QueueEntry;
pub use sessions::{ClaimError, SessionRecord};
pub use wills::WillRecord;

/// Counters of what crossed the cluster, shown in `$SYS/broker/cluster/`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Messages handed to NATS.
    pub forwarded: AtomicU64,
    /// Messages received from other nodes.
    pub received: AtomicU64,
    /// QoS 0 messages not sent to other nodes (outbound queue full, or the
    /// message too large for NATS). Each is also logged.
    pub dropped_qos0: AtomicU64,
    /// QoS 1/2 messages JetStream did not store in time: their publisher was
    /// disconnected without an acknowledgement.
    pub not_stored: AtomicU64,
    /// Messages from NATS that could not be read (not from a broker).
    pub malformed: AtomicU64,
    /// CONNECTs refused because the client id could not be claimed.
    pub claims_refused: AtomicU64,
    /// Sessions handed to another node that took their client id over.
    pub handed_over: AtomicU64,
    /// Session queue writes JetStream did not store in `ack_timeout_ms`
    /// (the acknowledgements waiting for them were not sent).
    pub journal_failed: AtomicU64,
    /// Sessions resumed from the cluster's queues (moved from another
    /// node, or back after this node restarted).
    pub sessions_resumed: AtomicU64,
    /// Messages replayed into resumed sessions from the message stream
    /// (read by the previous owner but not yet in the session's queue).
    pub messages_replayed: AtomicU64,
    /// Times another node was declared dead (not heard for
    /// `node_timeout_ms`, or restarted).
    pub nodes_dead: AtomicU64,
    /// Times a node declared dead was heard again.
    pub nodes_back: AtomicU64,
    /// Times this node wrote its records and wills again after being cut
    /// off from NATS for half of `node_timeout_ms` or longer.
    pub reasserted: AtomicU64,
    /// Wills of dead nodes' clients this node published.
    pub wills_published: AtomicU64,
    /// Delayed wills of dead nodes' clients dropped because the client
    /// reconnected.
    pub wills_cancelled: AtomicU64,
    /// Wills that could not be written to the cluster (kept on this node).
    pub wills_not_written: AtomicU64,
    /// Session records of dead nodes marked disconnected.
    pub records_marked: AtomicU64,
    /// Session records of dead nodes deleted after their expiry.
    pub records_expired: AtomicU64,
}

/// This node's part in the cluster. Held by the broker state; the tasks in
/// `inbound.rs`, `outbound.rs` and `sessions.rs` do the NATS work.
pub struct Cluster {
    cfg: ClusterConfig,
    link: link::Link,
    out: mpsc::Sender<outbound::Outbound>,
    records: mpsc::Sender<sessions::RecordOp>,
    /// Writes to the persistent sessions' queues (`journal.rs`).
    journal: mpsc::UnboundedSender<journal::JournalOp>,
    /// Sessions to install on the task that reads the message stream, so
    /// they start at a known position of it (`resume.rs`).
    adopt: mpsc::Sender<resume::Adopt>,
    /// The shared subscriptions this node takes messages for (`shared.rs`).
    shares: shared::Shares,
    /// Resumes in progress, by client id (see `resume`).
    resuming: parking_lot::Mutex<std::collections::HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>>,
    /// Client ids this node owns, with its claim's and its last write's
    /// revisions.
    owned: parking_lot::Mutex<std::collections::HashMap<Arc<str>, sessions::Owned>>,
    /// Wills this node wrote to `P_wills`, by client id.
    wills: wills::HeldWills,
    will_ops: Arc<wills::WillOps>,
    /// The other nodes, alive or dead.
    liveness: parking_lot::Mutex<liveness::Liveness>,
    /// Unique per message this node publishes (with the node name and a
    /// start nonce): the JetStream de-duplication id.
    next_id: AtomicU64,
    nonce: u64,
    /// Counters.
    pub stats: ClusterStats,
    /// Whether the retained messages of the cluster have been loaded.
    retained_loaded: AtomicBool,
    /// Whether the reader of the message stream knows where it starts: a
    /// QoS 1/2 message published on another node from then on reaches this
    /// node's subscribers.
    stream_positioned: AtomicBool,
    /// Whether JetStream's last answer was a stored message (false while it
    /// has no quorum, though NATS itself answers).
    jetstream_ok: AtomicBool,
    shutdown: watch::Sender<bool>,
    tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The receiving ends, until `start` hands them to their tasks.
    pending: parking_lot::Mutex<Option<Pending>>,
}

struct Pending {
    out: mpsc::Receiver<outbound::Outbound>,
    records: mpsc::Receiver<sessions::RecordOp>,
    journal: mpsc::UnboundedReceiver<journal::JournalOp>,
    adopt: mpsc::Receiver<resume::Adopt>,
}

impl Cluster {
    /// Connects to NATS (in the background when no server answers yet: the
    /// node starts anyway and keeps trying). Nothing is routed until
    /// [`Cluster::start`].
    pub async fn connect(cfg: &ClusterConfig) -> Result<Arc<Cluster>, String> {
        let link = link::Link::connect(cfg).await?;
        let (out_tx, out_rx) = mpsc::channel(cfg.max_outbound);
        let (rec_tx, rec_rx) = mpsc::channel(cfg.max_outbound);
        let (journal_tx, journal_rx) = mpsc::unbounded_channel();
        let (adopt_tx, adopt_rx) = mpsc::channel(1024);
        let nonce = crate::store::unix_ms() ^ (u64::from(std::process::id()) << 40);
        Ok(Arc::new(Cluster {
            cfg: cfg.clone(),
            link,
            out: out_tx,
            records: rec_tx,
            journal: journal_tx,
            adopt: adopt_tx,
            resuming: Default::default(),
            shares: Default::default(),
            owned: Default::default(),
            wills: Default::default(),
            will_ops: Default::default(),
            liveness: parking_lot::Mutex::new(liveness::Liveness::new(
                std::time::Duration::from_millis(cfg.node_timeout_ms),
            )),
            next_id: AtomicU64::new(1),
            nonce,
            stats: ClusterStats::default(),
            retained_loaded: AtomicBool::new(false),
            stream_positioned: AtomicBool::new(false),
            jetstream_ok: AtomicBool::new(true),
            shutdown: watch::channel(false).0,
            tasks: Default::default(),
            pending: parking_lot::Mutex::new(Some(Pending {
                out: out_rx,
                records: rec_rx,
                journal: journal_rx,
                adopt: adopt_rx,
            })),
        }))
    }

    /// Starts the tasks that talk to NATS for `broker`.
    pub fn start(self: &Arc<Self>, broker: &Arc<BrokerState>) {
        let Some(pending) = self.pending.lock().take() else {
            return;
        };
        let mut tasks = self.tasks.lock();
        tasks.push(tokio::spawn(link::supervise(
            self.clone(),
            self.shutdown.subscribe(),
        )));
        tasks.push(tokio::spawn(outbound::run(self.clone(), pending.out)));
        tasks.push(tokio::spawn(sessions::run(
            self.clone(),
            broker.clone(),
            pending.records,
        )));
        tasks.push(tokio::spawn(journal::run(self.clone(), pending.journal)));
        tasks.push(tokio::spawn(inbound::run_messages(
            self.clone(),
            broker.clone(),
            self.shutdown.subscribe(),
        )));
        tasks.push(tokio::spawn(inbound::run_stream(
            self.clone(),
            broker.clone(),
            pending.adopt,
            self.shutdown.subscribe(),
        )));
        tasks.push(tokio::spawn(inbound::run_retained(
            self.clone(),
            broker.clone(),
            self.shutdown.subscribe(),
        )));
        tasks.push(tokio::spawn(inbound::run_sessions(
            self.clone(),
            broker.clone(),
            self.shutdown.subscribe(),
        )));
        tasks.push(tokio::spawn(liveness::run(
            self.clone(),
            broker.clone(),
            self.shutdown.subscribe(),
        )));
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.cfg.node
    }

    /// This run of this node: its name and a start nonce, so a restarted
    /// node's checkpoints are not mistaken for the previous run's.
    pub fn incarnation(&self) -> String {
        format!("{}-{:x}", self.cfg.node, self.nonce)
    }

    /// A QoS 1/2 message queued for a persistent session (`journal.rs`).
    pub fn queue_put(&self, client: &Arc<str>, d: &crate::session::Delivery) {
        let entry = journal::Entry {
            seq: d.seq,
            qos: d.qos.as_u8(),
            retain: d.retain,
            sub_ids: d.sub_ids.to_vec(),
            source: d.msg.cluster_seq,
            received_ms: d.msg.received_unix_ms(),
            publish: d.msg.encode_for_store(),
            state: crate::store::StoredState::Queued,
        };
        journal::put(self, client, &entry);
    }

    /// A queued message's new state.
    pub fn queue_state(&self, client: &Arc<str>, seq: u64, state: crate::store::StoredState) {
        journal::state(self, client, seq, state);
    }

    /// A queued message is gone (acknowledged, expired, dropped); `empty`:
    /// the session's queue and inflight window hold nothing else.
    pub fn queue_done(&self, client: &Arc<str>, d: &crate::session::Delivery, empty: bool) {
        journal::done(self, client, d.seq, d.msg.cluster_seq, empty);
    }

    /// Answers once every queue write so far is stored (`false`: one was not).
    pub fn queue_barrier(&self) -> oneshot::Receiver<bool> {
        journal::barrier(self)
    }

    /// Resumes the session `record` describes on this node: its queue
    /// read from the cluster, the messages its previous owner had not
    /// queued yet replayed (`resume.rs`).
    pub async fn resume(
        self: &Arc<Self>,
        client_id: &Arc<str>,
        record: SessionRecord,
        broker: &BrokerState,
    ) -> Result<(), ClaimError> {
        // One resume of a client id at a time on this node: a second
        // CONNECT racing the first waits, then finds the session here.
        let lock = self
            .resuming
            .lock()
            .entry(client_id.clone())
            .or_default()
            .clone();
        let (guard, waited) = match lock.try_lock() {
            Ok(g) => (g, false),
            Err(_) => (lock.lock().await, true),
        };
        let result = if waited && broker.has_session(client_id) {
            Ok(())
        } else {
            resume::resume(self, client_id, record).await
        };
        drop(guard);
        let mut resuming = self.resuming.lock();
        if Arc::strong_count(&lock) == 2 {
            resuming.remove(client_id);
        }
        result
    }

    /// Whether NATS is connected, the streams and buckets are in place and
    /// the message stream is being read.
    pub fn is_ready(&self) -> bool {
        self.link.is_ready() && self.stream_positioned.load(Ordering::Acquire)
    }

    /// `up`; `degraded` when NATS answers but JetStream does not store
    /// (no quorum); `down` when NATS is unreachable.
    pub fn state(&self) -> &'static str {
        match (self.is_ready(), self.jetstream_ok.load(Ordering::Relaxed)) {
            (false, _) => "down",
            (true, false) => "degraded",
            (true, true) => "up",
        }
    }

    /// Records whether JetStream stored the last message, logging changes.
    fn jetstream_stored(&self, ok: bool) {
        if self.jetstream_ok.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!(node = %self.cfg.node, "cluster: JetStream stores messages again");
            } else {
                tracing::warn!(node = %self.cfg.node, "cluster: JetStream does not store messages (no quorum?); QoS 1/2 publishers are not acknowledged");
            }
        }
    }

    /// Whether the cluster's retained messages have been read in.
    pub fn retained_loaded(&self) -> bool {
        self.retained_loaded.load(Ordering::Acquire)
    }

    /// Sends `msg` (already routed to this node's subscribers) to the other
    /// nodes, and sets or clears it as the cluster's retained message when it
    /// carries RETAIN. For QoS 1 and 2, the receiver answers `true` once
    /// JetStream has stored it (and the retained change), `false` if it could
    /// not in `ack_timeout_ms`: the publisher must not be acknowledged then.
    /// `$SYS` topics stay on this node.
    pub fn forward(&self, msg: &Arc<Message>) -> Option<oneshot::Receiver<bool>> {
        if msg.topic.starts_with("$SYS") {
            return None;
        }
        outbound::forward(self, msg)
    }

    /// Claims `client_id` for a new connection on this node. Returns the
    /// session the cluster held for it (on another node, or on this one
    /// before a restart), if that one is still live and not discarded by
    /// `clean_start`, so it can be resumed here.
    pub async fn claim(
        &self,
        client_id: &Arc<str>,
        clean_start: bool,
    ) -> Result<Option<SessionRecord>, ClaimError> {
        let claimed = sessions::claim(self, client_id, clean_start).await;
        if claimed.is_ok() && clean_start {
            // [MQTT-3.1.2-4]: a new session; the old one's queue goes.
            journal::purge(self, client_id);
        }
        claimed
    }

    /// A member of share group `group` on `filter` subscribed on this node:
    /// the answer comes once this node takes the group's messages from the
    /// cluster (`shared.rs`).
    pub fn join_share(
        self: &Arc<Self>,
        broker: &Arc<BrokerState>,
        group: &str,
        filter: &str,
    ) -> oneshot::Receiver<bool> {
        shared::join(self, broker, group, filter)
    }

    /// Marks this node as the owner of the session of `client_id` in the
    /// cluster's queues (its checkpoints then cover the session).
    pub fn take_session(&self, client_id: &Arc<str>) {
        journal::owner(self, client_id);
    }

    /// Whether this node owns `client_id` (its last claim has not been
    /// overtaken by another node's).
    pub fn owns(&self, client_id: &Arc<str>) -> bool {
        self.owned.lock().contains_key(client_id)
    }

    /// Publishes the state of a session this node owns (after a connect,
    /// a (un)subscribe, or a disconnect).
    pub fn save_session(
        &self,
        client_id: &Arc<str>,
        expiry_secs: u32,
        disconnected_at_ms: Option<u64>,
        subscriptions: Vec<u8>,
    ) {
        sessions::save(
            self,
            client_id,
            expiry_secs,
            disconnected_at_ms,
            subscriptions,
        );
    }

    /// Answers once the session record writes asked for so far are done, so
    /// a SUBACK can wait until the subscription would move with its client.
    pub fn records_written(&self) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        if let Err(
            mpsc::error::TrySendError::Full(sessions::RecordOp::Flush(tx))
            | mpsc::error::TrySendError::Closed(sessions::RecordOp::Flush(tx)),
        ) = self.records.try_send(sessions::RecordOp::Flush(tx))
        {
            // The record write was dropped (and logged) already; the
            // subscription holds on this node all the same.
            let _ = tx.send(true);
        }
        rx
    }

    /// Writes the will of `client_id`'s connection of `generation` to the
    /// cluster, so another node publishes it if this one dies. Returns
    /// whether it was written (else it holds on this node only, logged and
    /// counted).
    pub async fn keep_will(
        &self,
        client_id: &Arc<str>,
        generation: u64,
        msg: &Message,
        delay_secs: u32,
        expiry_secs: u32,
    ) -> bool {
        wills::keep(self, client_id, generation, msg, delay_secs, expiry_secs).await
    }

    /// The will of `client_id`'s connection of `generation` must not be
    /// published by anyone else any more (published here, cancelled, or
    /// replaced): its key goes, unless it is newer than that connection.
    pub fn will_gone(&self, client_id: &str, generation: u64) {
        wills::gone(self, client_id, generation);
    }

    /// The session of `client_id` ended here: its record goes, unless
    /// another node owns it by now.
    pub fn session_ended(&self, client_id: &Arc<str>) {
        journal::purge(self, client_id);
        sessions::ended(self, client_id);
    }

    /// Whether a message of about `size` bytes (topic, properties and
    /// payload) fits in one NATS message (`max_payload`, 1 MiB by default).
    pub fn fits(&self, size: usize) -> bool {
        outbound::fits(self, size)
    }

    /// `$SYS/broker/cluster/...` values.
    pub fn sys_values(&self) -> Vec<(&'static str, String)> {
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        // One lock, released before the list is built (a guard in the
        // `vec!` would live to its end, and a second one would deadlock).
        let (alive, dead) = {
            let l = self.liveness.lock();
            (l.alive_count() + 1, l.dead_nodes().join(","))
        };
        vec![
            ("cluster/node", self.cfg.node.clone()),
            ("cluster/state", self.state().to_string()),
            ("cluster/messages/forwarded", n(&s.forwarded)),
            ("cluster/messages/received", n(&s.received)),
            ("cluster/messages/dropped_qos0", n(&s.dropped_qos0)),
            ("cluster/messages/not_stored", n(&s.not_stored)),
            ("cluster/messages/malformed", n(&s.malformed)),
            ("cluster/clients/claims_refused", n(&s.claims_refused)),
            ("cluster/clients/handed_over", n(&s.handed_over)),
            ("cluster/sessions/resumed", n(&s.sessions_resumed)),
            (
                "cluster/sessions/messages_replayed",
                n(&s.messages_replayed),
            ),
            ("cluster/sessions/queue_writes_failed", n(&s.journal_failed)),
            ("cluster/nodes/alive", alive.to_string()),
            ("cluster/nodes/dead", dead),
            ("cluster/nodes/declared_dead", n(&s.nodes_dead)),
            ("cluster/nodes/back", n(&s.nodes_back)),
            ("cluster/nodes/reasserted", n(&s.reasserted)),
            ("cluster/wills/published", n(&s.wills_published)),
            ("cluster/wills/cancelled", n(&s.wills_cancelled)),
            ("cluster/wills/not_written", n(&s.wills_not_written)),
            ("cluster/sessions/marked_disconnected", n(&s.records_marked)),
            ("cluster/sessions/expired", n(&s.records_expired)),
        ]
    }

    /// Lets queued record writes and publishes go out (bounded), then stops
    /// every cluster task.
    pub async fn close(&self) {
        // The wills this node published as it closed its connections are
        // deleted before it goes (else the others would publish them again).
        self.will_ops
            .settled(std::time::Duration::from_secs(2))
            .await;
        let (tx, rx) = oneshot::channel();
        if self
            .records
            .send(sessions::RecordOp::Flush(tx))
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rx).await;
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.queue_barrier()).await;
        let (tx, rx) = oneshot::channel();
        if self.out.send(outbound::Outbound::Flush(tx)).await.is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rx).await;
        }
        let _ = self.shutdown.send(true);
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(1), self.link.client.flush()).await;
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }

    fn message_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{:x}-{n:x}", self.cfg.node, self.nonce)
    }
}
