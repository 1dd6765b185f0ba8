//! A client's session: what outlives one network connection. Subscriptions,
//! the queue of messages not yet sent, QoS 1/2 messages in flight in both
//! directions, and the session's expiry.
//!
//! The state sits behind a short-held mutex: publishers on other connections
//! push into `pending` and wake the owning connection with `notify`; only the
//! owning connection drains it. No lock is held across an `.await`.

use std::borrow::Borrow;
use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

use mqtt_codec::{Pid, QoS, SubscriptionOptions};
use mqtt_proto::{IncomingQos2, Inflight, PidAllocator};
use parking_lot::{Mutex, MutexGuard};

use crate::broker::BrokerState;
use crate::config::QueuePolicy;
use crate::drop_log::DropReason;
use crate::message::Message;

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared message.
    pub msg: Arc<Message>,
    /// The QoS it is delivered with: the lower of the message's and the
    /// subscription's.
    pub qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// Subscription Identifiers of every matching subscription.
    pub sub_ids: Box<[u32]>,
    /// Order within the session (set when queued), the store's key.
    pub seq: u64,
}

/// Where an outgoing QoS 1/2 message stands; its transitions are
/// `mqtt_proto::outgoing`'s, shared with the client.
pub use mqtt_proto::OutState;

/// A subscription as the session remembers it.
#[derive(Debug, Clone, Copy)]
pub struct SubRecord {
    /// The options granted.
    pub options: SubscriptionOptions,
    /// The Subscription Identifier.
    pub sub_id: Option<u32>,
}

/// A will waiting for its delay to pass while the session lives on.
#[derive(Debug)]
pub struct PendingWill {
    /// The will message.
    pub msg: Arc<Message>,
    /// Its number in the store, if stored.
    pub stored: Option<u64>,
}

/// Why a connection is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// Another connection took the session over.
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
}

/// How a session's subscription filters are hashed: SipHash with keys
/// drawn once per process, as `RandomState` draws them (a client cannot
/// choose filters that collide), but not carried in every session's map:
/// `RandomState` is 16 bytes, and every connected client has a session.
#[derive(Debug, Clone, Copy, Default)]
pub struct FilterHasher;

impl BuildHasher for FilterHasher {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        KEYS.get_or_init(RandomState::new).build_hasher()
    }
}

/// The mutable part of a session.
#[derive(Debug, Default)]
pub struct SessionState {
    /// Subscriptions by full filter (including `$share/{group}/`).
    pub subscriptions: HashMap<Box<str>, SubRecord, FilterHasher>,
    /// Messages waiting for the inflight window.
    pub pending: VecDeque<Delivery>,
    /// Payload bytes in `pending`.
    pub pending_bytes: usize,
    /// Outgoing QoS 1/2 messages awaiting acknowledgement, in send order:
    /// the window, the legal replies and the resends on resume are
    /// `mqtt_proto::Inflight`'s, the same as the client's.
    pub inflight: Inflight<Delivery>,
    /// What few sessions use; made on first use (see [`Rare`]).
    rare: Option<Box<Rare>>,
    pids: PidAllocator,
    /// Session Expiry Interval in seconds; `u32::MAX` never expires.
    pub expiry_secs: u32,
    /// Bumped on every new connection, so timers of an older one can tell
    /// they are stale.
    pub generation: u64,
    /// Stops the connection that currently owns the session.
    pub kick: Option<crate::kick::Kicker>,
    /// Whether the session outlives its connection (expiry > 0), and so is
    /// kept in the store.
    pub persistent: bool,
    /// The last `Delivery::seq` given.
    pub next_seq: u64,
}

/// The parts of a session few use: a delayed will, the store's number of
/// a will, incoming QoS 2 exchanges, a bridge's queue limits, a full
/// queue's drop count. Boxed and made on first use, so the session of an
/// idle connection (a device fleet is mostly those) carries 8 bytes for
/// them, not 96.
#[derive(Debug, Default)]
pub struct Rare {
    /// A delayed will, published when its delay or the session ends.
    pub will: Option<PendingWill>,
    /// The number of the connection's will in the store, deleted once
    /// the will is published or the connection leaves without one.
    pub will_stored: Option<u64>,
    /// Identifiers of incoming QoS 2 messages awaiting PUBREL (method A).
    pub incoming_qos2: IncomingQos2,
    /// Queue limits (messages, bytes) of this session instead of the
    /// broker's: a bridge has its own.
    pub queue_limits: Option<(usize, usize)>,
    /// Messages this session's full queue dropped.
    pub dropped: u64,
}

impl SessionState {
    /// The rarely used parts, if they were ever made.
    pub fn rare(&self) -> Option<&Rare> {
        self.rare.as_deref()
    }

    /// The rarely used parts, if they were ever made, to change (taking a
    /// will out of a session that never had one makes nothing).
    pub fn rare_if(&mut self) -> Option<&mut Rare> {
        self.rare.as_deref_mut()
    }

    /// The rarely used parts, made now if they were not.
    pub fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    /// Puts a PUBLISH just written with `pid` in flight: awaiting PUBACK at
    /// QoS 1, PUBREC at QoS 2. (Client connections and bridges both.)
    pub fn push_sent(&mut self, pid: Pid, delivery: Delivery) {
        let qos = delivery.qos;
        // Only a QoS 1/2 PUBLISH has a packet identifier, so nothing is
        // handed back.
        let _ = self.inflight.push(pid, qos, delivery);
    }

    /// The next free packet identifier.
    pub fn next_pid(&mut self) -> Pid {
        let inflight = &self.inflight;
        // Always found: the inflight window is a u16 Receive Maximum or
        // `max_inflight`, so at most 65,535 are in flight, and a full
        // window takes no new message.
        self.pids.next(|p| inflight.contains(p)).unwrap_or_default()
    }

    /// Forgets everything but the identity: for Clean Start.
    pub fn reset(&mut self) {
        let generation = self.generation;
        let next_seq = self.next_seq;
        *self = SessionState {
            generation,
            next_seq,
            ..Default::default()
        };
    }

    /// The subscriptions in the store's format: per subscription, the filter
    /// (u16 length + bytes), the options byte, and the subscription
    /// identifier (u32, 0 for none).
    pub fn encode_subscriptions(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (filter, rec) in &self.subscriptions {
            out.extend_from_slice(&(filter.len() as u16).to_be_bytes());
            out.extend_from_slice(filter.as_bytes());
            out.push(rec.options.to_byte());
            out.extend_from_slice(&rec.sub_id.unwrap_or(0).to_be_bytes());
        }
        out
    }
}

/// Reads subscriptions written by [`SessionState::encode_subscriptions`];
/// stops at the first entry that does not parse.
pub fn decode_subscriptions(mut b: &[u8]) -> Vec<(String, SubRecord)> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([b[0], b[1]]));
        let Some(rest) = b.get(2..) else { break };
        if rest.len() < len + 5 {
            break;
        }
        let Ok(filter) = std::str::from_utf8(&rest[..len]) else {
            break;
        };
        let options = mqtt_codec::SubscriptionOptions {
            qos: QoS::from_u8(rest[len] & 3).unwrap_or_default(),
            no_local: rest[len] & 4 != 0,
            retain_as_published: rest[len] & 8 != 0,
            retain_handling: match (rest[len] >> 4) & 3 {
                1 => mqtt_codec::RetainHandling::SendIfNew,
                2 => mqtt_codec::RetainHandling::DoNotSend,
                _ => mqtt_codec::RetainHandling::SendOnSubscribe,
            },
        };
        let id = u32::from_be_bytes([rest[len + 1], rest[len + 2], rest[len + 3], rest[len + 4]]);
        out.push((
            filter.to_string(),
            SubRecord {
                options,
                sub_id: (id != 0).then_some(id),
            },
        ));
        b = &rest[len + 5..];
    }
    out
}

/// A session, shared between its connection, the subscription index and
/// the timers that expire it.
#[derive(Debug)]
pub struct Session {
    /// The client identifier.
    pub id: Arc<str>,
    state: Mutex<SessionState>,
    /// Wakes the owning connection when `pending` gains a message. Also
    /// holds the flags `ONLINE` and `JOURNALED`, in its byte.
    pub notify: crate::wakeup::Wakeup,
}

/// Whether a connection owns the session now.
const ONLINE: u8 = 2;
/// In a cluster: persistent, so its QoS 1/2 messages come from the
/// cluster's stream and its queue is kept there (`cluster::journal`).
const JOURNALED: u8 = 4;

impl Session {
    /// A new, empty, offline session.
    pub fn new(id: Arc<str>) -> Session {
        Session {
            id,
            state: Mutex::new(SessionState::default()),
            notify: Default::default(),
        }
    }

    /// See `journaled`; set with `SessionState::persistent`.
    pub fn set_journaled(&self, on: bool) {
        self.notify.set_flag(JOURNALED, on);
    }

    /// Whether its queue is kept in the cluster.
    pub fn is_journaled(&self) -> bool {
        self.notify.flag(JOURNALED)
    }

    /// Locks the state. Never hold the guard across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock()
    }

    /// Whether a connection owns the session now.
    pub fn is_online(&self) -> bool {
        self.notify.flag(ONLINE)
    }

    /// Marks the session connected or not.
    pub fn set_online(&self, online: bool) {
        self.notify.set_flag(ONLINE, online);
    }

    /// Queues a message for delivery, applying the queue limits. Returns
    /// false when the message was dropped (counted and logged).
    ///
    /// The limits bound a backlog, not a message: an empty queue always
    /// takes the next message, whatever its size (the packet size limits,
    /// `max_packet_size` on the way in and the client's Maximum Packet Size
    /// on the way out, are what bound one message). Otherwise a message
    /// is queued only if the queue then holds at most
    /// `max_queued_messages` messages and `max_queued_bytes` bytes;
    /// `drop_new` drops the message that does not fit, `drop_oldest` drops
    /// from the front until it fits (or the queue is empty).
    ///
    /// `bypass_limits` is for retained messages sent because of a SUBSCRIBE:
    /// a wildcard subscription receives all of them, paced by flow control,
    /// rather than having them cut short by the queue limit.
    pub fn enqueue(&self, d: Delivery, broker: &BrokerState, bypass_limits: bool) -> bool {
        let online = self.is_online();
        if !online && d.qos == QoS::AtMostOnce && !broker.config.queue_qos0_messages {
            broker.dropped(DropReason::OfflineQos0, &self.id, &d.msg.topic);
            return false;
        }
        let queued = self.push(&mut self.lock(), d, broker, bypass_limits);
        if queued && online {
            self.notify.notify();
        }
        queued
    }

    /// `enqueue` for QoS 0 deliveries of one publisher's read, in order:
    /// the lock taken and the owner woken once for all of them.
    pub fn enqueue_qos0(&self, deliveries: impl Iterator<Item = Delivery>, broker: &BrokerState) {
        let online = self.is_online();
        if !online && !broker.config.queue_qos0_messages {
            for d in deliveries {
                broker.dropped(DropReason::OfflineQos0, &self.id, &d.msg.topic);
            }
            return;
        }
        let mut queued = false;
        {
            let mut st = self.lock();
            for d in deliveries {
                debug_assert_eq!(d.qos, QoS::AtMostOnce);
                queued |= self.push(&mut st, d, broker, false);
            }
        }
        if queued && online {
            self.notify.notify();
        }
    }

    /// Puts `d` at the end of the queue as `enqueue` describes.
    fn push(
        &self,
        st: &mut SessionState,
        mut d: Delivery,
        broker: &BrokerState,
        bypass_limits: bool,
    ) -> bool {
        let config = &broker.config;
        let size = d.msg.size();
        let (max_messages, max_bytes) = st
            .rare()
            .and_then(|r| r.queue_limits)
            .unwrap_or((config.max_queued_messages, config.max_queued_bytes));
        let full = |st: &SessionState| {
            !st.pending.is_empty()
                && (st.pending.len() >= max_messages || st.pending_bytes + size > max_bytes)
        };
        if !bypass_limits && full(st) {
            match config.queue_policy {
                QueuePolicy::DropNew => {
                    st.rare_mut().dropped += 1;
                    broker.dropped(DropReason::QueueFull, &self.id, &d.msg.topic);
                    return false;
                }
                QueuePolicy::DropOldest => {
                    while full(st) {
                        let Some(old) = st.pending.pop_front() else {
                            break;
                        };
                        st.pending_bytes -= old.msg.size();
                        st.rare_mut().dropped += 1;
                        broker.dropped(DropReason::QueueFull, &self.id, &old.msg.topic);
                        broker.forget_message(self, st, &old);
                    }
                }
            }
        }
        st.next_seq += 1;
        d.seq = st.next_seq;
        if st.persistent && d.qos != QoS::AtMostOnce {
            // Tested here too: a call per delivery otherwise, for the
            // QoS 0 and clean sessions that are most of a fan-out.
            broker.remember_message(self, st, &d);
        }
        st.pending_bytes += size;
        st.pending.push_back(d);
        true
    }
}

/// The broker's sessions by client id: a set of sessions, each found by
/// its own `id`, not a map from a copy of the id. Every connected client
/// has an entry, so an entry is 8 bytes (the `Arc`), not 24; with the
/// table's spare room that is about 30 bytes less per idle connection.
#[derive(Debug, Default)]
pub struct SessionMap(HashSet<ById>);

/// A session, hashed and compared by its client id.
#[derive(Debug)]
struct ById(Arc<Session>);

impl PartialEq for ById {
    fn eq(&self, other: &ById) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl Hash for ById {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // As `str` hashes: `Borrow<str>` requires the two to agree.
        (*self.0.id).hash(h);
    }
}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

impl SessionMap {
    /// The session of `client_id`.
    pub fn get(&self, client_id: &str) -> Option<&Arc<Session>> {
        self.0.get(client_id).map(|s| &s.0)
    }

    /// Whether `client_id` has a session.
    pub fn contains_key(&self, client_id: &str) -> bool {
        self.0.contains(client_id)
    }

    /// Registers `session` under its id, in place of the one there.
    pub fn insert(&mut self, session: Arc<Session>) -> Option<Arc<Session>> {
        self.0.replace(ById(session)).map(|s| s.0)
    }

    /// Takes out the session of `client_id`.
    pub fn remove(&mut self, client_id: &str) -> Option<Arc<Session>> {
        self.0.take(client_id).map(|s| s.0)
    }

    /// Every session.
    pub fn values(&self) -> impl Iterator<Item = &Arc<Session>> {
        self.0.iter().map(|s| &s.0)
    }

    /// The number of sessions.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    /// Every connected client has a session for as long as it is
    /// connected, idle or not: 336 bytes before the rarely used parts went
    /// behind one pointer (`Rare`), 248 before the filters' hasher, the
    /// kicker and the flags were made smaller. With the `Arc`'s counts,
    /// 208 is mimalloc's 224-byte class (249 to 264 bytes took 320).
    #[test]
    fn a_session_without_rare_parts_stays_small() {
        let size = std::mem::size_of::<super::Session>();
        assert!(size <= 208, "Session is {size} bytes");
    }

    #[test]
    fn the_session_map_finds_a_session_by_its_id() {
        use super::{Session, SessionMap};
        use std::sync::Arc;
        let mut map = SessionMap::default();
        let a = Arc::new(Session::new("a".into()));
        assert!(map.insert(a.clone()).is_none());
        assert!(map.insert(Arc::new(Session::new("b".into()))).is_none());
        assert!(Arc::ptr_eq(map.get("a").unwrap(), &a));
        assert!(map.contains_key("b") && !map.contains_key("c"));
        let a2 = Arc::new(Session::new("a".into()));
        let old = map.insert(a2.clone()).unwrap();
        assert!(Arc::ptr_eq(&old, &a) && Arc::ptr_eq(map.get("a").unwrap(), &a2));
        assert_eq!(map.len(), 2);
        assert!(Arc::ptr_eq(&map.remove("a").unwrap(), &a2));
        assert!(map.remove("a").is_none() && map.get("a").is_none());
        assert_eq!(map.values().count(), 1);
    }
}
