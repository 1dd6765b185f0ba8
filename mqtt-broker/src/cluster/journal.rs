//! Persistent sessions' queues in the cluster (issue 18): what a single
//! broker keeps in its SQLite store (`store.rs`) a node keeps in JetStream,
//! so the session can be resumed on any node after its own is gone.
//!
//! The stream `P_QUEUES` holds, with one message per subject (the last
//! write of a subject is its value):
//!
//! | subject | value | written when |
//! |---|---|---|
//! | `P.q.<client>.m.<seq>` | the queued message (QoS, RETAIN, subscription ids, its sequence in `P_MESSAGES`, arrival time, the PUBLISH) | it is queued for the session |
//! | `P.q.<client>.s.<seq>` | packet id | it is sent (QoS 1: PUBACK awaited, QoS 2: PUBREC awaited) |
//! | `P.q.<client>.r.<seq>` | packet id | PUBREL is sent (QoS 2: PUBCOMP awaited) |
//! | `P.q.<client>.d.<seq>` | its sequence in `P_MESSAGES` | it is acknowledged, expired or dropped |
//! | `P.o.<client>` | the owning node's incarnation | a node takes the session |
//! | `P.k.<incarnation>` | a sequence of `P_MESSAGES` | see below |
//!
//! Each state has its own subject, so a write retried after a NATS failure
//! can never undo a later one: a message's state is the furthest its
//! subjects say (`d` over `r` over `s` over `m`). When a session's queue is
//! empty, its subjects are purged (up to the last write, which stays: it
//! holds the session's high-water mark in `P_MESSAGES`), so the stream
//! holds what is queued, not the history.
//!
//! Every write goes through one task, in order, pipelined; a barrier
//! answers once every write before it is stored. A connection's
//! acknowledgements and the PUBLISH / PUBREL of a QoS 2 exchange wait for
//! the barrier of the writes they depend on (as they wait for a store sync
//! on a single broker), so nothing acknowledged exists only in a node's
//! memory.
//!
//! Messages from other nodes are queued on the node that owns the session,
//! which reads `P_MESSAGES` in order (`inbound.rs`). The checkpoint
//! `P.k.<incarnation>` says up to which sequence of `P_MESSAGES` every
//! message this node read has reached the queues it belongs to. A node that
//! resumes a session whose owner is gone (or moved it) replays the messages
//! after the owner's checkpoint that match the session's subscriptions and
//! are not in its queue yet (`resume.rs`): the messages the owner read but
//! had not written when it died.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{subject, Cluster};
use crate::store::StoredState;

const ENTRY_VERSION: u8 = 1;

/// After this many writes for a session since its last purge, an empty
/// queue purges its subjects.
const PURGE_AFTER: u32 = 16;

/// A queued message of one session, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Order within the session.
    pub seq: u64,
    /// QoS it is delivered with.
    pub qos: u8,
    /// RETAIN flag it is delivered with.
    pub retain: bool,
    /// Subscription identifiers.
    pub sub_ids: Vec<u32>,
    /// Its sequence in `P_MESSAGES` (0: not from there, e.g. a retained
    /// message sent on SUBSCRIBE).
    pub source: u64,
    /// Arrival time, Unix milliseconds.
    pub received_ms: u64,
    /// The message as an MQTT 5 PUBLISH (`Message::encode_for_store`).
    pub publish: Vec<u8>,
    /// Where it stands.
    pub state: StoredState,
}

impl Entry {
    /// The `m` value: everything but the state.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + 4 * self.sub_ids.len() + self.publish.len());
        out.push(ENTRY_VERSION);
        out.push(self.qos);
        out.push(u8::from(self.retain));
        out.extend_from_slice(&self.source.to_be_bytes());
        out.extend_from_slice(&self.received_ms.to_be_bytes());
        let n = self.sub_ids.len().min(usize::from(u16::MAX));
        out.extend_from_slice(&(n as u16).to_be_bytes());
        for id in &self.sub_ids[..n] {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(&self.publish);
        out
    }

    /// Reads [`Entry::encode`]'s bytes (state `Queued`); `None` for
    /// anything else.
    pub fn decode(seq: u64, b: &[u8]) -> Option<Entry> {
        if *b.first()? != ENTRY_VERSION {
            return None;
        }
        let qos = *b.get(1)?;
        let retain = *b.get(2)? != 0;
        let source = u64::from_be_bytes(b.get(3..11)?.try_into().ok()?);
        let received_ms = u64::from_be_bytes(b.get(11..19)?.try_into().ok()?);
        let n = usize::from(u16::from_be_bytes(b.get(19..21)?.try_into().ok()?));
        let mut sub_ids = Vec::with_capacity(n);
        for i in 0..n {
            let at = 21 + 4 * i;
            sub_ids.push(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?));
        }
        let publish = b.get(21 + 4 * n..)?.to_vec();
        Some(Entry {
            seq,
            qos,
            retain,
            sub_ids,
            source,
            received_ms,
            publish,
            state: StoredState::Queued,
        })
    }
}

/// The journal subjects of one session's entries, parsed: builds the
/// queue back from the writes read, in any order.
#[derive(Debug, Default)]
pub struct Loaded {
    entries: HashMap<u64, Entry>,
    sent: HashMap<u64, u16>,
    released: HashMap<u64, u16>,
    done: BTreeSet<u64>,
    /// The highest `P_MESSAGES` sequence the session's queue ever held
    /// (its owner queues them in the stream's order): a replay starts
    /// after it.
    pub high: u64,
    /// Entries that could not be read.
    pub malformed: usize,
}

impl Loaded {
    /// Takes one journal message: `kind` and `seq` from its subject.
    pub fn add(&mut self, kind: &str, seq: u64, value: &[u8]) {
        let pid = || value.get(..2).map(|p| u16::from_be_bytes([p[0], p[1]]));
        match kind {
            "m" => match Entry::decode(seq, value) {
                Some(e) => {
                    self.high = self.high.max(e.source);
                    self.entries.insert(seq, e);
                }
                None => self.malformed += 1,
            },
            "s" => match pid() {
                Some(p) => {
                    self.sent.insert(seq, p);
                }
                None => self.malformed += 1,
            },
            "r" => match pid() {
                Some(p) => {
                    self.released.insert(seq, p);
                }
                None => self.malformed += 1,
            },
            "d" => {
                self.done.insert(seq);
                if let Some(b) = value.get(..8) {
                    let source = u64::from_be_bytes(b.try_into().unwrap_or_default());
                    self.high = self.high.max(source);
                }
            }
            _ => self.malformed += 1,
        }
    }

    /// The highest sequence any write used (new ones go above it).
    pub fn max_seq(&self) -> u64 {
        let keys = self
            .entries
            .keys()
            .chain(self.sent.keys())
            .chain(self.released.keys())
            .chain(self.done.iter());
        keys.copied().max().unwrap_or(0)
    }

    /// The live entries in queue order, each in its furthest state.
    pub fn into_entries(mut self) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .entries
            .drain()
            .filter(|(seq, _)| !self.done.contains(seq))
            .map(|(seq, mut e)| {
                if let Some(p) = self.released.get(&seq) {
                    e.state = StoredState::Released(*p);
                } else if let Some(p) = self.sent.get(&seq) {
                    e.state = StoredState::Sent(*p);
                }
                e
            })
            .collect();
        out.sort_by_key(|e| e.seq);
        out
    }
}

pub(super) enum JournalOp {
    Write {
        client: Arc<str>,
        subject: String,
        value: Bytes,
        /// The write leaves the session's queue empty.
        empty_after: bool,
    },
    /// Every subject of the session goes (the session ended).
    Purge { client: Arc<str> },
    /// Answers `true` once every write before it is stored, `false` if one
    /// of them could not be.
    Barrier(oneshot::Sender<bool>),
}

/// The subject prefix of a session's queue: `P.q.<client>`.
pub(super) fn queue_prefix(cluster: &Cluster, client: &str) -> String {
    format!(
        "{}.q.{}",
        cluster.cfg.subject_prefix,
        subject::key_token(client)
    )
}

/// The subject naming a session's owner: `P.o.<client>`.
pub(super) fn owner_subject(cluster: &Cluster, client: &str) -> String {
    format!(
        "{}.o.{}",
        cluster.cfg.subject_prefix,
        subject::key_token(client)
    )
}

/// The subject of an incarnation's checkpoint: `P.k.<incarnation>`.
pub(super) fn checkpoint_subject(cluster: &Cluster, incarnation: &str) -> String {
    format!(
        "{}.k.{}",
        cluster.cfg.subject_prefix,
        subject::key_token(incarnation)
    )
}

fn send(cluster: &Cluster, op: JournalOp) {
    if !matches!(op, JournalOp::Barrier(_)) {
        crate::store::note_op_sent();
    }
    // Unbounded: every write belongs to a message a session holds in
    // memory, within the session's queue limits. A send fails only after
    // shutdown.
    let _ = cluster.journal.send(op);
}

/// A message queued for `client`.
pub(super) fn put(cluster: &Cluster, client: &Arc<str>, entry: &Entry) {
    let subject = format!("{}.m.{}", queue_prefix(cluster, client), entry.seq);
    send(
        cluster,
        JournalOp::Write {
            client: client.clone(),
            subject,
            value: Bytes::from(entry.encode()),
            empty_after: false,
        },
    );
}

/// A message's new state.
pub(super) fn state(cluster: &Cluster, client: &Arc<str>, seq: u64, state: StoredState) {
    let (kind, pid) = match state {
        StoredState::Queued => return,
        StoredState::Sent(p) => ("s", p),
        StoredState::Released(p) => ("r", p),
    };
    let subject = format!("{}.{kind}.{seq}", queue_prefix(cluster, client));
    send(
        cluster,
        JournalOp::Write {
            client: client.clone(),
            subject,
            value: Bytes::copy_from_slice(&pid.to_be_bytes()),
            empty_after: false,
        },
    );
}

/// A message acknowledged, expired or dropped; `source` is its sequence
/// in `P_MESSAGES` (kept, so the session's high-water mark outlives the
/// entry); `empty_after`: the queue has nothing else.
pub(super) fn done(cluster: &Cluster, client: &Arc<str>, seq: u64, source: u64, empty_after: bool) {
    let subject = format!("{}.d.{seq}", queue_prefix(cluster, client));
    send(
        cluster,
        JournalOp::Write {
            client: client.clone(),
            subject,
            value: Bytes::copy_from_slice(&source.to_be_bytes()),
            empty_after,
        },
    );
}

/// This node takes the session of `client`.
pub(super) fn owner(cluster: &Cluster, client: &Arc<str>) {
    send(
        cluster,
        JournalOp::Write {
            client: client.clone(),
            subject: owner_subject(cluster, client),
            value: Bytes::from(cluster.incarnation().into_bytes()),
            empty_after: false,
        },
    );
}

/// The session of `client` ended: its queue goes.
pub(super) fn purge(cluster: &Cluster, client: &Arc<str>) {
    send(
        cluster,
        JournalOp::Purge {
            client: client.clone(),
        },
    );
}

/// See [`JournalOp::Barrier`].
pub(super) fn barrier(cluster: &Cluster) -> oneshot::Receiver<bool> {
    let (tx, rx) = oneshot::channel();
    if let Err(mpsc::error::SendError(JournalOp::Barrier(tx))) =
        cluster.journal.send(JournalOp::Barrier(tx))
    {
        let _ = tx.send(false);
    }
    rx
}

/// A write finished (`ok`: stored), with the stream sequence it got.
struct Finished {
    index: u64,
    ok: bool,
    stream_seq: u64,
    /// Set when the write emptied its session's queue: purge up to it.
    purge: Option<Arc<str>>,
}

/// The journal task: sends the writes in order, pipelined, and answers
/// barriers as the writes before them are stored. A write NATS does not
/// acknowledge is tried again (the same message id, so it is stored once)
/// until `ack_timeout_ms`; then the barriers after it answer `false`.
pub(super) async fn run(cluster: Arc<Cluster>, mut rx: mpsc::UnboundedReceiver<JournalOp>) {
    let (fin_tx, mut fin_rx) = mpsc::unbounded_channel::<Finished>();
    let mut next_index: u64 = 0;
    // Writes sent and not finished, by index.
    let mut open: BTreeSet<u64> = BTreeSet::new();
    // The lowest index that failed since the oldest waiting barrier.
    let mut failed_below: Option<u64> = None;
    let mut barriers: VecDeque<(u64, oneshot::Sender<bool>)> = VecDeque::new();
    // Writes per session since its last purge.
    let mut since_purge: HashMap<Arc<str>, u32> = HashMap::new();
    loop {
        tokio::select! {
            op = rx.recv() => {
                let Some(op) = op else { return };
                match op {
                    JournalOp::Barrier(tx) => {
                        if open.is_empty() {
                            let _ = tx.send(failed_below.take().is_none());
                        } else {
                            barriers.push_back((next_index, tx));
                        }
                    }
                    JournalOp::Purge { client } => {
                        since_purge.remove(&client);
                        let c = cluster.clone();
                        // After every write before it: a purge racing its
                        // own session's writes would leave half a state.
                        let wait = barrier_after(&mut open, next_index, &mut barriers);
                        tokio::spawn(async move {
                            let _ = wait.await;
                            purge_subjects(&c, &client, None).await;
                        });
                    }
                    JournalOp::Write { client, subject, value, empty_after } => {
                        let index = next_index;
                        next_index += 1;
                        open.insert(index);
                        let count = since_purge.entry(client.clone()).or_insert(0);
                        *count += 1;
                        let purge = if empty_after && *count >= PURGE_AFTER {
                            since_purge.remove(&client);
                            Some(client)
                        } else {
                            None
                        };
                        let id = format!("{}-j{index:x}", cluster.incarnation());
                        let mut headers = async_nats::HeaderMap::new();
                        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
                        let msg = PublishMessage::build().payload(value).headers(headers);
                        let first = cluster.link.js.send_publish(subject.clone(), msg.clone()).await;
                        let c = cluster.clone();
                        let fin = fin_tx.clone();
                        tokio::spawn(async move {
                            let mut result = match first {
                                Ok(fut) => fut.await.map(|a| a.sequence).map_err(|e| e.to_string()),
                                Err(e) => Err(e.to_string()),
                            };
                            if result.is_err() {
                                result = retry(&c, &subject, msg).await;
                            }
                            let (ok, stream_seq) = match result {
                                Ok(s) => (true, s),
                                Err(e) => {
                                    c.stats.journal_failed.fetch_add(1, Ordering::Relaxed);
                                    tracing::warn!(%subject, error = %e, "cluster: session queue write not stored; the acknowledgements waiting for it are not sent");
                                    (false, 0)
                                }
                            };
                            let _ = fin.send(Finished { index, ok, stream_seq, purge });
                        });
                    }
                }
            }
            Some(f) = fin_rx.recv() => {
                open.remove(&f.index);
                if !f.ok {
                    failed_below = Some(failed_below.map_or(f.index, |x| x.min(f.index)));
                }
                if let (Some(client), true) = (f.purge, f.ok) {
                    let c = cluster.clone();
                    // Below the `d` write itself: it stays, with the
                    // session's high-water mark.
                    tokio::spawn(async move { purge_subjects(&c, &client, Some(f.stream_seq)).await });
                }
                let lowest_open = open.first().copied().unwrap_or(next_index);
                while let Some((at, _)) = barriers.front() {
                    if *at > lowest_open {
                        break;
                    }
                    let (at, tx) = barriers.pop_front().expect("front exists");
                    let ok = failed_below.is_none_or(|f| f >= at);
                    let _ = tx.send(ok);
                }
                if barriers.is_empty() && open.is_empty() {
                    // Every barrier that covered a failure has answered.
                    failed_below = None;
                }
            }
        }
    }
}

/// A barrier at the current end of the writes, for the task's own use.
fn barrier_after(
    open: &mut BTreeSet<u64>,
    next_index: u64,
    barriers: &mut VecDeque<(u64, oneshot::Sender<bool>)>,
) -> oneshot::Receiver<bool> {
    let (tx, rx) = oneshot::channel();
    if open.is_empty() {
        let _ = tx.send(true);
    } else {
        barriers.push_back((next_index, tx));
    }
    rx
}

/// Tries a write again until `ack_timeout_ms` has passed.
async fn retry(cluster: &Cluster, subject: &str, msg: PublishMessage) -> Result<u64, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(cluster.cfg.ack_timeout_ms);
    let mut delay = Duration::from_millis(50);
    let mut last = String::from("not acknowledged");
    while tokio::time::Instant::now() + delay < deadline {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
        match cluster
            .link
            .js
            .send_publish(subject.to_string(), msg.clone())
            .await
        {
            Ok(fut) => match fut.await {
                Ok(a) => return Ok(a.sequence),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// Purges a session's queue subjects: below `below` (a stream sequence)
/// when given, all of them otherwise. The owner subject stays: the next
/// claim overwrites it.
async fn purge_subjects(cluster: &Cluster, client: &Arc<str>, below: Option<u64>) {
    let Ok(stream) = cluster
        .link
        .js
        .get_stream(&cluster.link.queues_stream)
        .await
    else {
        return;
    };
    let filter = format!("{}.>", queue_prefix(cluster, client));
    let result = match below {
        Some(seq) => stream.purge().filter(filter).sequence(seq).await,
        None => stream.purge().filter(filter).await,
    };
    if let Err(e) = result {
        tracing::debug!(%client, error = %e, "cluster: session queue not purged");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            qos: 2,
            retain: true,
            sub_ids: vec![1, 268_435_455],
            source: 77,
            received_ms: 1_700_000_000_000,
            publish: vec![0x30, 3, 0, 1, b'a'],
            state: StoredState::Queued,
        }
    }

    #[test]
    fn an_entry_round_trips() {
        let e = entry(5);
        assert_eq!(Entry::decode(5, &e.encode()), Some(e));
        assert_eq!(Entry::decode(5, &[]), None);
        assert_eq!(Entry::decode(5, &[9, 1, 0]), None);
        // Cut short inside the subscription ids.
        assert_eq!(Entry::decode(5, &entry(5).encode()[..22]), None);
    }

    // A write retried after a failure may land after a later one: the
    // state is the furthest any subject says, whatever the order read.
    #[test]
    fn the_furthest_state_wins_in_any_order() {
        let orders: [&[&str]; 3] = [&["m", "s", "r"], &["r", "s", "m"], &["s", "m", "r"]];
        for order in orders {
            let mut l = Loaded::default();
            for kind in order {
                let value = if *kind == "m" {
                    entry(3).encode()
                } else {
                    7u16.to_be_bytes().to_vec()
                };
                l.add(kind, 3, &value);
            }
            let got = l.into_entries();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].state, StoredState::Released(7));
        }
    }

    #[test]
    fn done_entries_are_gone_and_order_is_by_sequence() {
        let mut l = Loaded::default();
        l.add("d", 2, &90u64.to_be_bytes());
        for seq in [4, 2, 1] {
            l.add("m", seq, &entry(seq).encode());
        }
        l.add("s", 4, &9u16.to_be_bytes());
        l.add("x", 4, &[]);
        assert_eq!(l.max_seq(), 4);
        // The highest source of any entry, done ones included.
        assert_eq!(l.high, 90);
        assert_eq!(l.malformed, 1);
        let got = l.into_entries();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(got[0].state, StoredState::Queued);
        assert_eq!(got[1].state, StoredState::Sent(9));
    }
}
