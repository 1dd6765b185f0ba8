//! The state every connection shares: sessions by client id, the subscription
//! index, retained messages and counters, and the operations on them that
//! span sessions (routing a message, attaching and detaching a session,
//! wills and expiry).
//!
//! Locks: `sessions` may be taken before `index`; `index` may be taken before
//! a session's own lock; never the other way round, and never across an
//! `.await`. Routing runs on the publisher's own task, so there is no central
//! router for every message to queue behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt_codec::topic::parse_shared;
use mqtt_codec::QoS;
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::message::Message;
use crate::retained::RetainedStore;
use crate::route::{Route, RouteCache};
use crate::security::Security;
use crate::session::{
    decode_subscriptions, Delivery, Kick, OutState, Outgoing, PendingWill, Session, SessionState,
    SubRecord,
};
use crate::stats::Stats;
use crate::store::{Restored, Store, StoredMessage, StoredState};
use crate::topic_index::{Subscriber, SubscriptionIndex};

/// Shared broker state.
pub struct BrokerState {
    /// The configuration in force.
    pub config: Config,
    /// Counters.
    pub stats: Stats,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    /// Every subscription.
    pub index: RwLock<SubscriptionIndex>,
    /// Bumped on every change of `index`.
    index_generation: AtomicU64,
    /// Every retained message.
    pub retained: RwLock<RetainedStore>,
    /// When the broker started.
    pub started: Instant,
    next_assigned_id: AtomicU64,
    /// Password file and ACL in force; swapped whole on reload.
    pub security: RwLock<Arc<Security>>,
    /// Password checks running at once: a hash costs CPU (and Argon2 costs
    /// memory), so a burst of logins must not take the machine.
    pub auth_permits: tokio::sync::Semaphore,
    /// Sockets that have not completed CONNECT.
    pub pending_connects: std::sync::atomic::AtomicUsize,
    /// Set once by `shutdown_sessions`: sessions attached after it are told
    /// to close at once.
    shutting_down: std::sync::atomic::AtomicBool,
    /// The durable store, unless `durability = "none"`.
    pub store: Option<Store>,
}

/// What `attach` found.
pub struct Attached {
    /// The session now owned by the connection.
    pub session: Arc<Session>,
    /// Whether an existing session was resumed.
    pub session_present: bool,
    /// The connection's generation, to tell stale timers apart.
    pub generation: u64,
}

impl BrokerState {
    /// Fresh state for `config`; fails when its password or ACL file cannot
    /// be read.
    /// The store, if any, was opened by the caller; see
    /// [`BrokerState::restore`] for what it read back.
    pub fn with_store(config: Config, store: Option<Store>) -> Result<BrokerState, String> {
        let security = Security::load(&config)?;
        Ok(BrokerState {
            store,
            security: RwLock::new(Arc::new(security)),
            auth_permits: tokio::sync::Semaphore::new(4),
            pending_connects: std::sync::atomic::AtomicUsize::new(0),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            config,
            stats: Stats::default(),
            sessions: Mutex::new(HashMap::new()),
            index: RwLock::new(SubscriptionIndex::default()),
            index_generation: AtomicU64::new(0),
            retained: RwLock::new(RetainedStore::default()),
            started: Instant::now(),
            next_assigned_id: AtomicU64::new(1),
        })
    }

    /// Re-reads the password and ACL files (on SIGHUP). New connections use
    /// the new files; a file that cannot be read keeps the old contents.
    pub fn reload_security(&self) {
        crate::security::reload(self);
    }

    /// Number of sessions, connected or not.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Messages queued or in flight in all sessions, and their payload
    /// bytes (`$SYS/broker/store/messages/...`). Takes each session's lock
    /// in turn, once per `$SYS` interval.
    pub fn queued_totals(&self) -> (u64, u64) {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        let (mut count, mut bytes) = (0u64, 0u64);
        for s in sessions {
            let st = s.lock();
            count += (st.pending.len() + st.inflight.len()) as u64;
            // Payload bytes, as Mosquitto counts them (`pending_bytes`
            // also counts topics, for the queue limit).
            bytes += st
                .pending
                .iter()
                .map(|d| d.msg.payload.len() as u64)
                .chain(
                    st.inflight
                        .iter()
                        .map(|o| o.delivery.msg.payload.len() as u64),
                )
                .sum::<u64>();
        }
        (count, bytes)
    }

    /// A client identifier for a client that sent an empty one.
    pub fn assign_client_id(&self) -> String {
        let n = self.next_assigned_id.fetch_add(1, Ordering::Relaxed);
        let t = self.started.elapsed().as_nanos() as u64 ^ std::process::id() as u64;
        format!("auto-{t:x}-{n}")
    }

    /// Routes a message to every matching subscription, and stores it as
    /// retained when it carries the RETAIN flag. Returns the number of
    /// sessions with a matching subscription, including those whose full
    /// queue dropped it (counted there): 0 means no matching subscribers.
    pub fn publish(&self, msg: Arc<Message>) -> usize {
        self.keep_if_retained(&msg);
        let route = Route::find(&self.index.read(), &msg.topic, msg.publisher.as_deref());
        self.deliver(&msg, &route)
    }

    /// `publish` for a connection: `cache` holds the route of the
    /// connection's last topic and is reused while the index is unchanged.
    pub(crate) fn publish_cached(
        &self,
        msg: Arc<Message>,
        cache: &mut Option<Box<RouteCache>>,
    ) -> usize {
        self.keep_if_retained(&msg);
        // Read before the index: a change after this makes the next
        // publish look again.
        let generation = self.index_generation.load(Ordering::Acquire);
        if let Some(c) = cache.as_deref() {
            if c.generation == generation && c.topic == msg.topic {
                return self.deliver(&msg, &c.route);
            }
        }
        let route = Route::find(&self.index.read(), &msg.topic, msg.publisher.as_deref());
        let matched = self.deliver(&msg, &route);
        *cache = (!route.per_message).then(|| {
            Box::new(RouteCache {
                topic: msg.topic.clone(),
                generation,
                route,
            })
        });
        matched
    }

    /// Write access to the subscription index; every change invalidates the
    /// routes connections keep.
    fn index_mut(&self) -> parking_lot::RwLockWriteGuard<'_, SubscriptionIndex> {
        let index = self.index.write();
        self.index_generation.fetch_add(1, Ordering::Release);
        index
    }

    fn keep_if_retained(&self, msg: &Arc<Message>) {
        if msg.retain && self.config.retain_available {
            if let Some(store) = &self.store {
                if msg.payload.is_empty() {
                    store.del_retained(&msg.topic);
                } else {
                    store.put_retained(&msg.topic, msg.encode_for_store(), msg.received_unix_ms());
                }
            }
            self.retained.write().set(msg.clone());
        }
    }

    /// Queues `msg` for every session on `route`; returns how many.
    fn deliver(&self, msg: &Arc<Message>, route: &Route) -> usize {
        for target in &route.targets {
            let (session, delivery) = target.delivery(msg);
            session.enqueue(delivery, self, false);
        }
        route.targets.len()
    }

    /// Gives the session of `client_id` to a new connection, creating it if
    /// needed, discarding it first for Clean Start, and stopping the
    /// connection that owned it before (session takeover).
    pub fn attach(
        &self,
        client_id: &Arc<str>,
        clean_start: bool,
        expiry_secs: u32,
        kick: oneshot::Sender<Kick>,
    ) -> Attached {
        let mut sessions = self.sessions.lock();
        let (session, session_present) = match sessions.get(client_id) {
            Some(existing) => {
                let session = existing.clone();
                let dropped = {
                    let mut st = session.lock();
                    if let Some(old) = st.kick.take() {
                        let _ = old.send(Kick::TakenOver);
                    }
                    // A reconnection before the will delay passes cancels
                    // the will [MQTT-3.1.3-9].
                    st.will = None;
                    if clean_start {
                        let subs = std::mem::take(&mut st.subscriptions);
                        st.reset();
                        if let Some(store) = &self.store {
                            store.del_session(client_id);
                        }
                        Some(subs)
                    } else {
                        None
                    }
                };
                match dropped {
                    Some(subs) => {
                        self.unindex(&session, subs.keys());
                        (session, false)
                    }
                    None => (session, true),
                }
            }
            None => {
                let session = Arc::new(Session::new(client_id.clone()));
                sessions.insert(client_id.clone(), session.clone());
                (session, false)
            }
        };
        drop(sessions);
        let generation = {
            let mut st = session.lock();
            st.generation += 1;
            // Checked under the session lock, which `shutdown_sessions`
            // takes after setting the flag: either it sees this kick or
            // this sees the flag.
            if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = kick.send(Kick::Shutdown);
            } else {
                st.kick = Some(kick);
            }
            st.expiry_secs = expiry_secs;
            st.persistent = expiry_secs > 0;
            self.save_session(&session, &st, None);
            st.generation
        };
        session.set_online(true);
        Attached {
            session,
            session_present,
            generation,
        }
    }

    /// Tells every connected client's task to close (server shutting down),
    /// and every one that attaches from now on.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn shutdown_sessions(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            if let Some(kick) = session.lock().kick.take() {
                let _ = kick.send(Kick::Shutdown);
            }
        }
    }

    /// Called when a connection ends. Publishes or schedules the will, and
    /// ends or schedules the end of the session by its expiry interval.
    pub fn detach(
        self: &Arc<Self>,
        session: &Arc<Session>,
        generation: u64,
        will: Option<(Arc<Message>, u32)>,
        expiry_secs: u32,
    ) {
        let mut st = session.lock();
        if st.generation != generation {
            // Taken over: the new connection owns the session. A will with a
            // delay is cancelled by the reconnection; one without is due now.
            drop(st);
            if let Some((msg, 0)) = will {
                self.publish_will(msg);
            }
            return;
        }
        st.kick = None;
        st.expiry_secs = expiry_secs;
        st.persistent = expiry_secs > 0;
        self.save_session(session, &st, Some(crate::store::unix_ms() / 1000));
        session.set_online(false);
        if expiry_secs == 0 {
            drop(st);
            self.end_session(session);
            if let Some((msg, _)) = will {
                self.publish_will(msg);
            }
            return;
        }
        match will {
            Some((msg, delay)) if delay > 0 => {
                st.will = Some(PendingWill { msg });
                let broker = self.clone();
                let s = session.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
                    let due = {
                        let mut st = s.lock();
                        if st.generation == generation {
                            st.will.take()
                        } else {
                            None
                        }
                    };
                    if let Some(w) = due {
                        broker.publish_will(w.msg);
                    }
                });
            }
            Some((msg, _)) => {
                drop(st);
                self.publish_will(msg);
            }
            None => {}
        }
        if expiry_secs != u32::MAX {
            self.expire_later(
                session,
                generation,
                Duration::from_secs(u64::from(expiry_secs)),
            );
        }
    }

    /// Removes a session and its subscriptions, if it is still the one
    /// registered under its client id.
    fn end_session(&self, session: &Arc<Session>) {
        let mut sessions = self.sessions.lock();
        if sessions
            .get(&session.id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.id);
        }
        let subs = std::mem::take(&mut session.lock().subscriptions);
        self.unindex(session, subs.keys());
        drop(sessions);
        if let Some(store) = &self.store {
            store.del_session(&session.id);
        }
        tracing::debug!(client = %session.id, "session ended");
    }

    fn unindex<'a>(&self, session: &Arc<Session>, filters: impl Iterator<Item = &'a Box<str>>) {
        let mut index = self.index_mut();
        for filter in filters {
            let (group, plain) = split_filter(filter);
            index.remove(plain, group, session);
        }
    }

    /// Adds one subscription to a session and the index. Returns whether the
    /// session already had a subscription to that filter.
    pub fn subscribe(&self, session: &Arc<Session>, filter: &str, record: SubRecord) -> bool {
        let existed = {
            let mut st = session.lock();
            let existed = st.subscriptions.insert(filter.into(), record).is_some();
            self.save_session(session, &st, None);
            existed
        };
        let (group, plain) = split_filter(filter);
        self.index_mut().insert(
            plain,
            group,
            Subscriber {
                session: session.clone(),
                options: record.options,
                sub_id: record.sub_id,
            },
        );
        existed
    }

    /// Removes one subscription; returns whether it existed.
    pub fn unsubscribe(&self, session: &Arc<Session>, filter: &str) -> bool {
        let existed = {
            let mut st = session.lock();
            let existed = st.subscriptions.remove(filter).is_some();
            if existed {
                self.save_session(session, &st, None);
            }
            existed
        };
        let (group, plain) = split_filter(filter);
        self.index_mut().remove(plain, group, session);
        existed
    }

    /// Writes a persistent session's record (expiry, subscriptions).
    fn save_session(&self, session: &Session, st: &SessionState, disconnected_at: Option<u64>) {
        if let (Some(store), true) = (&self.store, st.persistent) {
            store.put_session(
                &session.id,
                st.expiry_secs,
                disconnected_at,
                st.encode_subscriptions(),
            );
        }
    }

    /// Stores a newly queued QoS 1/2 message of a persistent session.
    pub fn remember_message(&self, session: &Session, st: &SessionState, d: &Delivery) {
        if let (Some(store), true, true) = (&self.store, st.persistent, d.qos != QoS::AtMostOnce) {
            store.put_message(
                &session.id,
                StoredMessage {
                    seq: d.seq,
                    state: StoredState::Queued,
                    qos: d.qos.as_u8(),
                    retain: d.retain,
                    sub_ids: d.sub_ids.to_vec(),
                    publish: d.msg.encode_for_store(),
                    received_ms: d.msg.received_unix_ms(),
                },
            );
        }
    }

    /// Records a state change of a stored message.
    pub fn message_state(
        &self,
        session: &Session,
        st: &SessionState,
        d: &Delivery,
        state: StoredState,
    ) {
        if let (Some(store), true, true) = (&self.store, st.persistent, d.qos != QoS::AtMostOnce) {
            store.set_state(&session.id, d.seq, state);
        }
    }

    /// Forgets a stored message: acknowledged, expired or dropped.
    pub fn forget_message(&self, session: &Session, st: &SessionState, d: &Delivery) {
        if let (Some(store), true, true) = (&self.store, st.persistent, d.qos != QoS::AtMostOnce) {
            store.del_message(&session.id, d.seq);
        }
    }

    /// Rebuilds retained messages and persistent sessions read from the
    /// store at start. Sessions that expired while the broker was down are
    /// dropped; expired messages are not restored.
    pub fn restore(self: &Arc<Self>, restored: Restored) {
        let now_ms = crate::store::unix_ms();
        let now = Instant::now();
        {
            let mut retained = self.retained.write();
            for (bytes, received_ms) in &restored.retained {
                if let Some(msg) = Message::from_stored(bytes, *received_ms) {
                    if !msg.is_expired(now) {
                        retained.set(Arc::new(msg));
                    }
                }
            }
        }
        let mut sessions_restored = 0;
        for stored in restored.sessions {
            let gone_for = stored
                .disconnected_at
                .map_or(0, |at| (now_ms / 1000).saturating_sub(at));
            let store = self.store.as_ref();
            if stored.expiry_secs != u32::MAX && gone_for >= u64::from(stored.expiry_secs) {
                self.stats.sessions_expired.inc();
                if let Some(store) = store {
                    store.del_session(&stored.client_id);
                }
                continue;
            }
            let id: Arc<str> = stored.client_id.as_str().into();
            let session = Arc::new(Session::new(id.clone()));
            let subs = decode_subscriptions(&stored.subscriptions);
            {
                let mut st = session.lock();
                st.persistent = true;
                st.expiry_secs = stored.expiry_secs;
                st.generation = 1;
                st.incoming_qos2 = stored.incoming_qos2.iter().copied().collect();
                for m in stored.messages {
                    st.next_seq = st.next_seq.max(m.seq);
                    let Some(msg) = Message::from_stored(&m.publish, m.received_ms) else {
                        continue;
                    };
                    let d = Delivery {
                        msg: Arc::new(msg),
                        qos: QoS::from_u8(m.qos).unwrap_or_default(),
                        retain: m.retain,
                        sub_ids: m.sub_ids.into_boxed_slice(),
                        seq: m.seq,
                    };
                    if d.msg.is_expired(now) {
                        self.stats.dropped_expired.inc();
                        if let Some(store) = store {
                            store.del_message(&stored.client_id, m.seq);
                        }
                        continue;
                    }
                    let sent = |pid: u16, state: OutState| {
                        mqtt_codec::Pid::new(pid).map(|pid| (pid, state))
                    };
                    let inflight = match m.state {
                        StoredState::Queued => None,
                        StoredState::Sent(pid) if d.qos == QoS::AtLeastOnce => {
                            sent(pid, OutState::AwaitPubAck)
                        }
                        StoredState::Sent(pid) => sent(pid, OutState::AwaitPubRec),
                        StoredState::Released(pid) => sent(pid, OutState::AwaitPubComp),
                    };
                    match inflight {
                        Some((pid, state)) => st.inflight.push_back(Outgoing {
                            pid,
                            delivery: d,
                            state,
                            unsent: false,
                        }),
                        None => {
                            st.pending_bytes += d.msg.size();
                            st.pending.push_back(d);
                        }
                    }
                }
                for (filter, rec) in &subs {
                    st.subscriptions.insert(filter.as_str().into(), *rec);
                }
            }
            {
                let mut index = self.index_mut();
                for (filter, rec) in &subs {
                    let (group, plain) = split_filter(filter);
                    index.insert(
                        plain,
                        group,
                        Subscriber {
                            session: session.clone(),
                            options: rec.options,
                            sub_id: rec.sub_id,
                        },
                    );
                }
            }
            self.sessions.lock().insert(id, session.clone());
            sessions_restored += 1;
            // The restart counts as a disconnection: the expiry runs from
            // when the client left, or from now if it was connected.
            if stored.expiry_secs != u32::MAX {
                let left = u64::from(stored.expiry_secs).saturating_sub(gone_for);
                self.expire_later(&session, 1, Duration::from_secs(left));
            }
        }
        if sessions_restored > 0 || !restored.retained.is_empty() {
            tracing::info!(
                sessions = sessions_restored,
                retained = self.retained.read().len(),
                "state restored from the store"
            );
        }
    }

    /// Ends the session after `after` unless a connection took it meanwhile.
    fn expire_later(self: &Arc<Self>, session: &Arc<Session>, generation: u64, after: Duration) {
        let broker = self.clone();
        let s = session.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let expired = s.lock().generation == generation && !s.is_online();
            if expired {
                broker.stats.sessions_expired.inc();
                let will = s.lock().will.take();
                broker.end_session(&s);
                // The session ended before the will delay did.
                if let Some(w) = will {
                    broker.publish_will(w.msg);
                }
            }
        });
    }

    fn publish_will(&self, msg: Arc<Message>) {
        tracing::debug!(topic = %msg.topic, "publishing will");
        self.publish(msg);
    }
}

/// Splits `$share/{group}/{filter}` into its group and filter.
pub fn split_filter(filter: &str) -> (Option<&str>, &str) {
    match parse_shared(filter) {
        Some(s) => (Some(s.group), s.filter),
        None => (None, filter),
    }
}
