//! Durable broker state in SQLite (WAL): retained messages, persistent
//! sessions with their subscriptions, queued and in-flight QoS 1/2 messages,
//! incoming QoS 2 identifiers awaiting PUBREL, and the wills of connected
//! clients (and delayed wills not yet due), so a crash does not lose them.
//!
//! Writes are incremental: the broker sends small operations to one writer
//! thread, which applies everything that has arrived in one transaction and
//! commits it. With `durability = "always"` every commit is synced
//! (`synchronous = FULL`) and a QoS 1/2 PUBLISH is acknowledged only after the
//! commit that holds its effects, so many messages share one sync. With
//! `"periodic"` commits are not synced and the WAL is checkpointed with a
//! sync at an interval. Operations on one key inside one batch collapse to the
//! last one, so a message that is queued, sent and acknowledged within one
//! batch never touches the disk.
//!
//! A store that cannot be opened or read is moved aside (`*.damaged-<time>`)
//! with an error in the log, whatever could be read from it is kept, and the
//! broker starts on a fresh file.
//!
//! Longer than 800 lines on purpose: the schema, the writer thread's batching
//! and the restore read and write the same tables, and split apart each would
//! need the others' SQL (about 100 of the lines are tests).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// How hard the store works to keep what was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Every commit is synced before the QoS 1/2 acknowledgements it covers
    /// are sent: nothing acknowledged is lost, even on power loss.
    #[default]
    Always,
    /// Commits are written at once but synced every `sync_interval_ms`: a
    /// crash of the broker loses nothing, a power loss at most that interval.
    Periodic,
    /// In memory only: everything is lost on restart.
    None,
}

/// The state a message is in for its session, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredState {
    /// Waiting in the queue.
    Queued,
    /// Sent; PUBACK (QoS 1) or PUBREC (QoS 2) awaited.
    Sent(u16),
    /// PUBREL sent; PUBCOMP awaited.
    Released(u16),
}

impl StoredState {
    fn to_columns(self) -> (i64, i64) {
        match self {
            StoredState::Queued => (0, 0),
            StoredState::Sent(pid) => (1, i64::from(pid)),
            StoredState::Released(pid) => (2, i64::from(pid)),
        }
    }

    fn from_columns(state: i64, pid: i64) -> Option<StoredState> {
        let pid = u16::try_from(pid).ok();
        match state {
            0 => Some(StoredState::Queued),
            1 => Some(StoredState::Sent(pid?)),
            2 => Some(StoredState::Released(pid?)),
            _ => None,
        }
    }
}

/// A queued or in-flight message of one session, as stored.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Order within the session.
    pub seq: u64,
    /// Where it stands.
    pub state: StoredState,
    /// QoS it is delivered with.
    pub qos: u8,
    /// RETAIN flag it is delivered with.
    pub retain: bool,
    /// Subscription identifiers.
    pub sub_ids: Vec<u32>,
    /// The message as an MQTT 5 PUBLISH (see `message.rs`).
    pub publish: Vec<u8>,
    /// When the broker received it, in Unix milliseconds.
    pub received_ms: u64,
}

/// A persistent session, as stored.
#[derive(Debug, Clone, Default)]
pub struct StoredSession {
    /// Client identifier.
    pub client_id: String,
    /// Session Expiry Interval.
    pub expiry_secs: u32,
    /// When its client went away (Unix seconds); `None` while connected.
    pub disconnected_at: Option<u64>,
    /// Subscriptions, encoded by `session.rs`.
    pub subscriptions: Vec<u8>,
    /// Queued and in-flight messages, in order.
    pub messages: Vec<StoredMessage>,
    /// Incoming QoS 2 identifiers awaiting PUBREL.
    pub incoming_qos2: Vec<u16>,
}

/// The will of a client that was connected (or whose will waited for its
/// delay) when it was stored: published after a restart unless the client
/// comes back within the delay.
#[derive(Debug, Clone, Default)]
pub struct StoredWill {
    /// Client identifier.
    pub client_id: String,
    /// Which of the client's wills this is: every will stored gets a new
    /// number, so deleting a will that was published or cancelled never
    /// deletes a newer one of the same client.
    pub seq: u64,
    /// The will as an MQTT 5 PUBLISH (see `message.rs`): topic, payload,
    /// QoS, RETAIN and properties.
    pub publish: Vec<u8>,
    /// Will Delay Interval in seconds.
    pub delay_secs: u32,
}

/// Everything read back at start.
#[derive(Debug, Default)]
pub struct Restored {
    /// Retained messages: (PUBLISH bytes, received Unix ms).
    pub retained: Vec<(Vec<u8>, u64)>,
    /// Persistent sessions.
    pub sessions: Vec<StoredSession>,
    /// Wills of the clients that did not disconnect cleanly before the
    /// broker stopped.
    pub wills: Vec<StoredWill>,
}

#[derive(Debug)]
enum Op {
    PutRetained {
        topic: String,
        publish: Vec<u8>,
        received_ms: u64,
    },
    DelRetained {
        topic: String,
    },
    PutSession {
        client_id: String,
        expiry_secs: u32,
        disconnected_at: Option<u64>,
        subscriptions: Vec<u8>,
    },
    DelSession {
        client_id: String,
    },
    PutMessage {
        client_id: String,
        msg: StoredMessage,
    },
    SetState {
        client_id: String,
        seq: u64,
        state: StoredState,
    },
    DelMessage {
        client_id: String,
        seq: u64,
    },
    PutQos2 {
        client_id: String,
        pid: u16,
    },
    DelQos2 {
        client_id: String,
        pid: u16,
    },
    PutWill {
        client_id: String,
        seq: u64,
        publish: Vec<u8>,
        delay_secs: u32,
    },
    DelWill {
        client_id: String,
        seq: u64,
    },
    Barrier(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// The handle the broker writes through. Cheap to call from any task: each
/// call sends one operation to the writer thread.
#[derive(Debug)]
pub struct Store {
    tx: mpsc::Sender<Op>,
    durability: Durability,
    /// How long each commit took (synced with `always`): the metrics
    /// endpoint's `mqtt_store_sync_duration_seconds`.
    sync_latency: std::sync::Arc<crate::stats::Histogram>,
}

/// Current Unix time in milliseconds: the broker's wall clock
/// (`crate::clock::unix_ms`).
pub fn unix_ms() -> u64 {
    crate::clock::unix_ms()
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS retained (topic TEXT PRIMARY KEY, publish BLOB NOT NULL, received_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (client_id TEXT PRIMARY KEY, expiry_secs INTEGER NOT NULL,
    disconnected_at INTEGER, subscriptions BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS messages (client_id TEXT NOT NULL, seq INTEGER NOT NULL, state INTEGER NOT NULL,
    pid INTEGER NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, sub_ids BLOB NOT NULL,
    publish BLOB NOT NULL, received_ms INTEGER NOT NULL, PRIMARY KEY (client_id, seq));
CREATE TABLE IF NOT EXISTS incoming_qos2 (client_id TEXT NOT NULL, pid INTEGER NOT NULL, PRIMARY KEY (client_id, pid));
CREATE TABLE IF NOT EXISTS wills (client_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, publish BLOB NOT NULL,
    delay_secs INTEGER NOT NULL);
";

thread_local! {
    /// Writes sent to the store from this thread, by any store.
    static OPS_SENT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many writes this thread has sent to the store so far. A connection
/// reads it before and after handling packets (with no await in between, so
/// on one thread): if it has not moved, nothing it did needs a sync, and its
/// acknowledgements need not wait for one.
pub(crate) fn ops_sent_on_this_thread() -> u64 {
    OPS_SENT.with(|n| n.get())
}

/// Counts a write sent to another durable store (the cluster's session
/// queues) like a write to this one, so the connection's acknowledgements
/// wait for it (`Conn::seal_held`).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) fn note_op_sent() {
    OPS_SENT.with(|n| n.set(n.get() + 1));
}

impl Store {
    /// Opens (or creates) the store in `dir` and reads it back. Never fails
    /// the broker's start because of the file's contents: a damaged file is
    /// set aside. Fails only when `dir` cannot be created or written.
    pub fn open(
        dir: &Path,
        durability: Durability,
        sync_interval: Duration,
    ) -> std::io::Result<(Store, Restored)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("broker.db");
        let (conn, restored) = open_or_salvage(&path, durability)?;
        let (tx, rx) = mpsc::channel();
        let sync_latency = std::sync::Arc::new(crate::stats::Histogram::default());
        let latency = sync_latency.clone();
        std::thread::Builder::new()
            .name("mqtt-store".into())
            .spawn(move || writer(conn, rx, sync_interval, &latency))?;
        Ok((
            Store {
                tx,
                durability,
                sync_latency,
            },
            restored,
        ))
    }

    /// Commit latencies so far.
    pub fn sync_latency(&self) -> &crate::stats::Histogram {
        &self.sync_latency
    }

    /// The durability setting.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    fn send(&self, op: Op) {
        if !matches!(op, Op::Barrier(_)) {
            OPS_SENT.with(|n| n.set(n.get() + 1));
        }
        // The writer only stops at shutdown; a send after that is moot.
        let _ = self.tx.send(op);
    }

    /// Stores the retained message of a topic.
    pub fn put_retained(&self, topic: &str, publish: Vec<u8>, received_ms: u64) {
        self.send(Op::PutRetained {
            topic: topic.to_string(),
            publish,
            received_ms,
        });
    }

    /// Clears the retained message of a topic.
    pub fn del_retained(&self, topic: &str) {
        self.send(Op::DelRetained {
            topic: topic.to_string(),
        });
    }

    /// Stores a session's record (not its messages).
    pub fn put_session(
        &self,
        client_id: &str,
        expiry_secs: u32,
        disconnected_at: Option<u64>,
        subscriptions: Vec<u8>,
    ) {
        self.send(Op::PutSession {
            client_id: client_id.to_string(),
            expiry_secs,
            disconnected_at,
            subscriptions,
        });
    }

    /// Removes a session with its messages and QoS 2 state.
    pub fn del_session(&self, client_id: &str) {
        self.send(Op::DelSession {
            client_id: client_id.to_string(),
        });
    }

    /// Stores a queued message.
    pub fn put_message(&self, client_id: &str, msg: StoredMessage) {
        self.send(Op::PutMessage {
            client_id: client_id.to_string(),
            msg,
        });
    }

    /// Records that a message was sent or released.
    pub fn set_state(&self, client_id: &str, seq: u64, state: StoredState) {
        self.send(Op::SetState {
            client_id: client_id.to_string(),
            seq,
            state,
        });
    }

    /// Forgets a message (acknowledged, expired or dropped).
    pub fn del_message(&self, client_id: &str, seq: u64) {
        self.send(Op::DelMessage {
            client_id: client_id.to_string(),
            seq,
        });
    }

    /// Remembers an incoming QoS 2 identifier until PUBREL.
    pub fn put_qos2(&self, client_id: &str, pid: u16) {
        self.send(Op::PutQos2 {
            client_id: client_id.to_string(),
            pid,
        });
    }

    /// Forgets an incoming QoS 2 identifier.
    pub fn del_qos2(&self, client_id: &str, pid: u16) {
        self.send(Op::DelQos2 {
            client_id: client_id.to_string(),
            pid,
        });
    }

    /// Keeps the will of a connected client as will number `seq`
    /// (replacing any earlier one of the client), so that it can be
    /// published after a crash.
    pub fn put_will(&self, client_id: &str, seq: u64, publish: Vec<u8>, delay_secs: u32) {
        self.send(Op::PutWill {
            client_id: client_id.to_string(),
            seq,
            publish,
            delay_secs,
        });
    }

    /// Forgets will number `seq` of a client (published, cancelled, or its
    /// client left with a normal DISCONNECT); a newer will of the client
    /// stays.
    pub fn del_will(&self, client_id: &str, seq: u64) {
        self.send(Op::DelWill {
            client_id: client_id.to_string(),
            seq,
        });
    }

    /// Completes when everything sent before it is committed (and synced
    /// with `always`).
    pub fn barrier(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Barrier(tx));
        rx
    }

    /// Commits and syncs what is pending, then stops the writer.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Shutdown(tx));
        let _ = rx.await;
    }
}

fn open_conn(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = if durability == Durability::Always {
        "FULL"
    } else {
        "NORMAL"
    };
    conn.pragma_update(None, "synchronous", sync)?;
    // Checkpoints are run by the writer, off the commit path.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn open_or_salvage(path: &Path, durability: Durability) -> std::io::Result<(Connection, Restored)> {
    let attempt = open_conn(path, durability).and_then(|conn| {
        let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if ok != "ok" {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(ok),
            ));
        }
        let restored = read_all(&conn, false)?;
        Ok((conn, restored))
    });
    match attempt {
        Ok(v) => {
            tracing::info!(
                path = %path.display(),
                retained = v.1.retained.len(),
                sessions = v.1.sessions.len(),
                "store opened"
            );
            Ok(v)
        }
        Err(e) => {
            // Keep the damaged files for inspection, salvage what reads.
            tracing::error!(path = %path.display(), error = %e, "store is damaged; setting it aside and starting with what could be read");
            let salvaged = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .ok()
                .and_then(|c| {
                    // Lets SQLite read the schema of a file whose size no
                    // longer matches its header (truncation).
                    let _ = c.pragma_update(None, "writable_schema", "ON");
                    read_all(&c, true).ok()
                })
                .unwrap_or_default();
            let stamp = unix_ms();
            for suffix in ["", "-wal", "-shm"] {
                let from = PathBuf::from(format!("{}{suffix}", path.display()));
                if from.exists() {
                    let to = PathBuf::from(format!("{}.damaged-{stamp}{suffix}", path.display()));
                    std::fs::rename(&from, &to)?;
                    tracing::error!(kept = %to.display(), "damaged store file kept aside");
                }
            }
            let conn = open_conn(path, durability).map_err(std::io::Error::other)?;
            tracing::warn!(
                retained = salvaged.retained.len(),
                sessions = salvaged.sessions.len(),
                "salvaged from the damaged store"
            );
            let mut batch = Batch::default();
            for (publish, received_ms) in &salvaged.retained {
                if let Some(topic) = crate::message::stored_topic(publish) {
                    batch
                        .retained
                        .insert(topic, Some((publish.clone(), *received_ms)));
                }
            }
            for s in &salvaged.sessions {
                batch.sessions.insert(
                    s.client_id.clone(),
                    Some((s.expiry_secs, s.disconnected_at, s.subscriptions.clone())),
                );
                for m in &s.messages {
                    batch
                        .messages
                        .insert((s.client_id.clone(), m.seq), MsgOp::Put(m.clone()));
                }
                for pid in &s.incoming_qos2 {
                    batch.qos2.insert((s.client_id.clone(), *pid), true);
                }
            }
            for w in &salvaged.wills {
                batch.wills.insert(
                    w.client_id.clone(),
                    WillOp::Put(w.seq, w.publish.clone(), w.delay_secs),
                );
            }
            let mut conn = conn;
            batch.apply(&mut conn).map_err(std::io::Error::other)?;
            Ok((conn, salvaged))
        }
    }
}

/// Reads every table. With `lenient`, rows and tables that fail to read are
/// skipped instead of failing the whole read.
fn read_all(conn: &Connection, lenient: bool) -> rusqlite::Result<Restored> {
    let mut out = Restored::default();
    let mut sessions: HashMap<String, StoredSession> = HashMap::new();

    // Normal reads fail on the first error. Lenient reads (salvage) walk
    // each table in rowid order, which needs only the table's own pages, and
    // jump past pages that cannot be read, so everything readable is kept.
    macro_rules! rows {
        ($cols:expr, $table:expr, $order:expr, $map:expr, $each:expr) => {{
            if !lenient {
                let mut stmt = conn.prepare(&format!("SELECT {} FROM {} {}", $cols, $table, $order))?;
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    $each($map(row)?);
                }
            } else {
                let ncols = $cols.split(',').count();
                let sql = format!("SELECT {}, rowid FROM {} WHERE rowid > ?1 ORDER BY rowid", $cols, $table);
                let mut last: i64 = i64::MIN;
                let mut failures = 0u32;
                'table: loop {
                    let Ok(mut stmt) = conn.prepare(&sql) else {
                        tracing::warn!(table = $table, "table unreadable");
                        break;
                    };
                    let Ok(mut rows) = stmt.query([last]) else {
                        break;
                    };
                    loop {
                        match rows.next() {
                            Ok(Some(row)) => {
                                if let Ok(id) = row.get::<_, i64>(ncols) {
                                    last = id;
                                }
                                match $map(row) {
                                    Ok(v) => $each(v),
                                    Err(e) => tracing::warn!(table = $table, error = %e, "unreadable row skipped"),
                                }
                            }
                            Ok(None) => break 'table,
                            Err(e) => {
                                failures += 1;
                                if failures > 1000 || last == i64::MAX {
                                    tracing::warn!(table = $table, error = %e, "table read stopped");
                                    break 'table;
                                }
                                // Skip past the damaged page.
                                last = if last == i64::MIN { 0 } else { last.saturating_add(64) };
                                continue 'table;
                            }
                        }
                    }
                }
            }
        }};
    }

    rows!(
        "publish, received_ms",
        "retained",
        "",
        |r: &rusqlite::Row| -> rusqlite::Result<(Vec<u8>, u64)> {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)? as u64))
        },
        |v| out.retained.push(v)
    );
    rows!(
        "client_id, expiry_secs, disconnected_at, subscriptions",
        "sessions",
        "",
        |r: &rusqlite::Row| -> rusqlite::Result<StoredSession> {
            Ok(StoredSession {
                client_id: r.get(0)?,
                expiry_secs: r.get::<_, i64>(1)? as u32,
                disconnected_at: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                subscriptions: r.get(3)?,
                ..Default::default()
            })
        },
        |s: StoredSession| {
            sessions.insert(s.client_id.clone(), s);
        }
    );
    rows!(
        "client_id, seq, state, pid, qos, retain, sub_ids, publish, received_ms",
        "messages",
        "ORDER BY client_id, seq",
        |r: &rusqlite::Row| -> rusqlite::Result<(String, StoredMessage)> {
            let state = StoredState::from_columns(r.get(2)?, r.get(3)?)
                .ok_or(rusqlite::Error::IntegralValueOutOfRange(2, 0))?;
            let sub_ids: Vec<u8> = r.get(6)?;
            Ok((
                r.get::<_, String>(0)?,
                StoredMessage {
                    seq: r.get::<_, i64>(1)? as u64,
                    state,
                    qos: r.get::<_, i64>(4)? as u8,
                    retain: r.get::<_, i64>(5)? != 0,
                    sub_ids: sub_ids
                        .chunks_exact(4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                    publish: r.get(7)?,
                    received_ms: r.get::<_, i64>(8)? as u64,
                },
            ))
        },
        |(id, m): (String, StoredMessage)| {
            if let Some(s) = sessions.get_mut(&id) {
                s.messages.push(m);
            }
        }
    );
    rows!(
        "client_id, pid",
        "incoming_qos2",
        "",
        |r: &rusqlite::Row| -> rusqlite::Result<(String, u16)> {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u16))
        },
        |(id, pid): (String, u16)| {
            if let Some(s) = sessions.get_mut(&id) {
                s.incoming_qos2.push(pid);
            }
        }
    );
    rows!(
        "client_id, seq, publish, delay_secs",
        "wills",
        "",
        |r: &rusqlite::Row| -> rusqlite::Result<StoredWill> {
            Ok(StoredWill {
                client_id: r.get(0)?,
                seq: r.get::<_, i64>(1)? as u64,
                publish: r.get(2)?,
                delay_secs: r.get::<_, i64>(3)?.clamp(0, i64::from(u32::MAX)) as u32,
            })
        },
        |w: StoredWill| out.wills.push(w)
    );
    out.sessions = sessions.into_values().collect();
    for s in &mut out.sessions {
        // Salvage reads in rowid order; a session's queue goes by seq.
        s.messages.sort_by_key(|m| m.seq);
        s.messages.dedup_by_key(|m| m.seq);
    }
    Ok(out)
}

#[derive(Debug)]
enum MsgOp {
    Put(StoredMessage),
    State(StoredState),
    Del,
}

/// A session row: expiry, disconnection time, encoded subscriptions.
type SessionRow = (u32, Option<u64>, Vec<u8>);

/// Operations of one commit, collapsed per key.
#[derive(Default)]
struct Batch {
    retained: HashMap<String, Option<(Vec<u8>, u64)>>,
    sessions: HashMap<String, Option<SessionRow>>,
    /// Whole sessions deleted in this batch, applied before the rest.
    deleted_sessions: Vec<String>,
    messages: HashMap<(String, u64), MsgOp>,
    qos2: HashMap<(String, u16), bool>,
    /// The last will operation per client id.
    wills: HashMap<String, WillOp>,
}

/// A will written or deleted, by its number.
#[derive(Debug)]
enum WillOp {
    /// Will number, PUBLISH bytes, delay.
    Put(u64, Vec<u8>, u32),
    Del(u64),
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.retained.is_empty()
            && self.sessions.is_empty()
            && self.deleted_sessions.is_empty()
            && self.messages.is_empty()
            && self.qos2.is_empty()
            && self.wills.is_empty()
    }

    fn add(&mut self, op: Op) {
        match op {
            Op::PutRetained {
                topic,
                publish,
                received_ms,
            } => {
                self.retained.insert(topic, Some((publish, received_ms)));
            }
            Op::DelRetained { topic } => {
                self.retained.insert(topic, None);
            }
            Op::PutSession {
                client_id,
                expiry_secs,
                disconnected_at,
                subscriptions,
            } => {
                self.sessions.insert(
                    client_id,
                    Some((expiry_secs, disconnected_at, subscriptions)),
                );
            }
            Op::DelSession { client_id } => {
                self.messages.retain(|(c, _), _| *c != client_id);
                self.qos2.retain(|(c, _), _| *c != client_id);
                self.sessions.insert(client_id.clone(), None);
                self.deleted_sessions.push(client_id);
            }
            Op::PutMessage { client_id, msg } => {
                self.messages.insert((client_id, msg.seq), MsgOp::Put(msg));
            }
            Op::SetState {
                client_id,
                seq,
                state,
            } => {
                let key = (client_id, seq);
                match self.messages.get_mut(&key) {
                    Some(MsgOp::Put(m)) => m.state = state,
                    Some(MsgOp::Del) => {}
                    _ => {
                        self.messages.insert(key, MsgOp::State(state));
                    }
                }
            }
            Op::DelMessage { client_id, seq } => {
                self.messages.insert((client_id, seq), MsgOp::Del);
            }
            Op::PutQos2 { client_id, pid } => {
                self.qos2.insert((client_id, pid), true);
            }
            Op::DelQos2 { client_id, pid } => {
                self.qos2.insert((client_id, pid), false);
            }
            Op::PutWill {
                client_id,
                seq,
                publish,
                delay_secs,
            } => {
                self.wills
                    .insert(client_id, WillOp::Put(seq, publish, delay_secs));
            }
            Op::DelWill { client_id, seq } => match self.wills.get(&client_id) {
                // A newer will of the client, in this batch: it stays.
                Some(WillOp::Put(newer, ..)) if *newer != seq => {}
                _ => {
                    self.wills.insert(client_id, WillOp::Del(seq));
                }
            },
            Op::Barrier(_) | Op::Shutdown(_) => {}
        }
    }

    fn apply(&mut self, conn: &mut Connection) -> rusqlite::Result<()> {
        let tx = conn.transaction()?;
        for id in self.deleted_sessions.drain(..) {
            tx.execute("DELETE FROM messages WHERE client_id = ?1", params![id])?;
            tx.execute(
                "DELETE FROM incoming_qos2 WHERE client_id = ?1",
                params![id],
            )?;
        }
        {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO retained (topic, publish, received_ms) VALUES (?1, ?2, ?3)",
            )?;
            let mut del = tx.prepare_cached("DELETE FROM retained WHERE topic = ?1")?;
            for (topic, v) in self.retained.drain() {
                match v {
                    Some((publish, ms)) => put.execute(params![topic, publish, ms as i64])?,
                    None => del.execute(params![topic])?,
                };
            }
        }
        {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO sessions (client_id, expiry_secs, disconnected_at, subscriptions) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut del = tx.prepare_cached("DELETE FROM sessions WHERE client_id = ?1")?;
            for (id, v) in self.sessions.drain() {
                match v {
                    Some((expiry, at, subs)) => {
                        put.execute(params![id, expiry, at.map(|v| v as i64), subs])?
                    }
                    None => del.execute(params![id])?,
                };
            }
        }
        {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO messages (client_id, seq, state, pid, qos, retain, sub_ids, publish, received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            let mut set = tx.prepare_cached(
                "UPDATE messages SET state = ?3, pid = ?4 WHERE client_id = ?1 AND seq = ?2",
            )?;
            let mut del =
                tx.prepare_cached("DELETE FROM messages WHERE client_id = ?1 AND seq = ?2")?;
            for ((id, seq), op) in self.messages.drain() {
                let seq = seq as i64;
                match op {
                    MsgOp::Put(m) => {
                        let (state, pid) = m.state.to_columns();
                        let sub_ids: Vec<u8> =
                            m.sub_ids.iter().flat_map(|v| v.to_be_bytes()).collect();
                        put.execute(params![
                            id,
                            seq,
                            state,
                            pid,
                            i64::from(m.qos),
                            i64::from(m.retain),
                            sub_ids,
                            m.publish,
                            m.received_ms as i64
                        ])?
                    }
                    MsgOp::State(s) => {
                        let (state, pid) = s.to_columns();
                        set.execute(params![id, seq, state, pid])?
                    }
                    MsgOp::Del => del.execute(params![id, seq])?,
                };
            }
        }
        {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO incoming_qos2 (client_id, pid) VALUES (?1, ?2)",
            )?;
            let mut del =
                tx.prepare_cached("DELETE FROM incoming_qos2 WHERE client_id = ?1 AND pid = ?2")?;
            for ((id, pid), present) in self.qos2.drain() {
                if present {
                    put.execute(params![id, pid])?;
                } else {
                    del.execute(params![id, pid])?;
                }
            }
        }
        {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO wills (client_id, seq, publish, delay_secs) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut del =
                tx.prepare_cached("DELETE FROM wills WHERE client_id = ?1 AND seq = ?2")?;
            for (id, op) in self.wills.drain() {
                match op {
                    WillOp::Put(seq, publish, delay) => {
                        put.execute(params![id, seq as i64, publish, delay])?
                    }
                    WillOp::Del(seq) => del.execute(params![id, seq as i64])?,
                };
            }
        }
        tx.commit()
    }
}

/// Most operations in one transaction, so a flood still commits regularly.
const MAX_BATCH: usize = 10_000;

fn writer(
    mut conn: Connection,
    rx: mpsc::Receiver<Op>,
    sync_interval: Duration,
    latency: &crate::stats::Histogram,
) {
    let mut batch = Batch::default();
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut last_checkpoint = std::time::Instant::now();
    let mut shutdown = None;
    loop {
        let first = match rx.recv_timeout(sync_interval.max(Duration::from_millis(10))) {
            Ok(op) => Some(op),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut n = 0;
        let mut next = first;
        while let Some(op) = next {
            match op {
                Op::Barrier(tx) => waiters.push(tx),
                Op::Shutdown(tx) => shutdown = Some(tx),
                op => batch.add(op),
            }
            n += 1;
            if n >= MAX_BATCH || shutdown.is_some() {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            let started = std::time::Instant::now();
            let applied = batch.apply(&mut conn);
            latency.observe(started.elapsed());
            if let Err(e) = applied {
                // The disk refused: keep serving from memory and say so.
                tracing::error!(error = %e, "store commit failed; state since the last commit is not durable");
                batch = Batch::default();
            }
        }
        // Everything up to here is committed (and, with `always`, synced):
        // the acknowledgements waiting on it need not wait for a checkpoint.
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
        // With `always` each commit was synced already and the checkpoint
        // only keeps the WAL small; with `periodic` it is the sync.
        if shutdown.is_some() || last_checkpoint.elapsed() >= sync_interval {
            // TRUNCATE copies the WAL into the database file, syncs, and
            // resets the WAL.
            if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                tracing::warn!(error = %e, "store checkpoint failed");
            }
            last_checkpoint = std::time::Instant::now();
        }
        if let Some(done) = shutdown.take() {
            let _ = done.send(());
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> StoredMessage {
        StoredMessage {
            seq,
            state: StoredState::Queued,
            qos: 1,
            retain: false,
            sub_ids: vec![],
            publish: vec![0u8; 200],
            received_ms: 0,
        }
    }

    /// Deleting a client's will by number leaves a newer will of the same
    /// client, whether the two operations share a commit or not.
    #[test]
    fn deleting_an_older_will_keeps_the_newer_one() {
        let dir = std::env::temp_dir().join(format!("store-wills-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("broker.db");
        let put = |seq: u64| Op::PutWill {
            client_id: "c".into(),
            seq,
            publish: vec![seq as u8],
            delay_secs: 0,
        };
        let del = |seq: u64| Op::DelWill {
            client_id: "c".into(),
            seq,
        };
        let (mut conn, _) = open_or_salvage(&path, Durability::Always).unwrap();
        // One commit: will 1 replaced by will 2, then will 1 deleted.
        let mut batch = Batch::default();
        for op in [put(1), put(2), del(1)] {
            batch.add(op);
        }
        batch.apply(&mut conn).unwrap();
        assert_eq!(read_all(&conn, false).unwrap().wills[0].seq, 2);
        // Separate commits: will 3 stored, then will 2 deleted.
        for op in [put(3), del(2)] {
            let mut batch = Batch::default();
            batch.add(op);
            batch.apply(&mut conn).unwrap();
        }
        let wills = read_all(&conn, false).unwrap().wills;
        assert_eq!((wills.len(), wills[0].seq), (1, 3));
        // Its own number deletes it.
        let mut batch = Batch::default();
        batch.add(del(3));
        batch.apply(&mut conn).unwrap();
        assert!(read_all(&conn, false).unwrap().wills.is_empty());
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_truncated_store_is_set_aside_and_what_reads_is_kept() {
        let dir = std::env::temp_dir().join(format!("store-salvage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("broker.db");
        {
            let (mut conn, _) = open_or_salvage(&path, Durability::Always).unwrap();
            let mut batch = Batch::default();
            batch
                .sessions
                .insert("s".into(), Some((u32::MAX, None, vec![])));
            for seq in 1..=2000 {
                batch
                    .messages
                    .insert(("s".into(), seq), MsgOp::Put(message(seq)));
            }
            batch.apply(&mut conn).unwrap();
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
        }
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len / 2).unwrap();
        drop(f);

        let (_conn, restored) = open_or_salvage(&path, Durability::Always).unwrap();
        let kept: usize = restored.sessions.iter().map(|s| s.messages.len()).sum();
        assert!(kept > 0 && kept < 2000, "salvaged {kept} of 2000");
        let seqs: Vec<u64> = restored.sessions[0]
            .messages
            .iter()
            .map(|m| m.seq)
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "salvaged queue keeps its order"
        );
        let aside = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains("damaged"));
        assert!(aside, "the damaged file is kept aside");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
