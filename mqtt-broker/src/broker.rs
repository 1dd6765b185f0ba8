//! The state every connection shares: sessions by client id, the subscription
//! index, retained messages and counters, and the operations on them that
//! span sessions (routing a message, attaching and detaching a session,
//! wills and expiry).
//!
//! Locks: `sessions` may be taken before `index`; `index` may be taken before
//! a session's own lock; never the other way round, and never across an
//! `.await`. Routing runs on the publisher's own task, so there is no central
//! router for every message to queue behind.
//!
//! Longer than 800 lines on purpose: the operations that span sessions all
//! take the sessions map, the index and a session's lock, and one file keeps
//! their lock order reviewable in one place (about 140 of the lines are tests).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt_codec::topic::parse_shared;
use mqtt_codec::QoS;
use parking_lot::{Mutex, RwLock};

use crate::config::Config;
use crate::drop_log::{DropLog, DropReason};
use crate::message::Message;
use crate::retained::RetainedStore;
use crate::route::{Route, RouteCache, MAX_HELD};
use crate::security::Security;
use crate::session::{
    decode_subscriptions, Delivery, Kick, OutState, PendingWill, Session, SessionMap, SessionState,
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
    sessions: Mutex<SessionMap>,
    /// Every subscription.
    pub index: RwLock<SubscriptionIndex>,
    /// Bumped on every change of `index`.
    index_generation: AtomicU64,
    /// Every retained message.
    pub retained: RwLock<RetainedStore>,
    /// When the broker started.
    pub started: Instant,
    next_assigned_id: AtomicU64,
    /// The number the next stored will gets (see `Store::put_will`).
    next_will_seq: AtomicU64,
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
    /// Run by `expire` before it takes its locks: lets a test reconnect
    /// a client at the instant a session expires.
    #[cfg(test)]
    before_expiry: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Run by `subscribe_then` between adding the subscription and reading
    /// the retained store: lets a test publish in that gap.
    #[cfg(test)]
    after_subscribe: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Rate-limited warnings for dropped messages.
    pub drops: DropLog,
    /// This node's part in a cluster, with `[cluster]`.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Every running bridge by name, with what it shows in `$SYS` and
    /// `/metrics`.
    pub bridges: Mutex<Vec<(String, Arc<crate::bridge::LinkStatus>)>>,
    /// Where idle connections wait without a task (`connection/park.rs`).
    pub(crate) parker: crate::connection::ParkerCell,
}

/// What `attach` found.
/// Which sessions a delivery is for (see `BrokerState::deliver_only`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Only {
    All,
    /// Sessions whose QoS 1/2 messages come from the cluster's stream.
    Journaled,
    /// The others.
    NotJournaled,
}

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
    /// With `cluster`, this broker is one node of a cluster.
    pub fn with_cluster(
        config: Config,
        store: Option<Store>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Result<BrokerState, String> {
        let security = Security::load(&config)?;
        let groups_elsewhere = cluster.is_some();
        Ok(BrokerState {
            store,
            drops: DropLog::new(
                config.drop_warnings_per_interval,
                Duration::from_secs(config.drop_warning_interval_secs),
            ),
            cluster,
            bridges: Mutex::new(Vec::new()),
            parker: Default::default(),
            security: RwLock::new(Arc::new(security)),
            auth_permits: tokio::sync::Semaphore::new(4),
            pending_connects: std::sync::atomic::AtomicUsize::new(0),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            config,
            stats: Stats::default(),
            sessions: Mutex::new(SessionMap::default()),
            index: RwLock::new(SubscriptionIndex::new(groups_elsewhere)),
            index_generation: AtomicU64::new(0),
            retained: RwLock::new(RetainedStore::default()),
            started: Instant::now(),
            next_assigned_id: AtomicU64::new(1),
            next_will_seq: AtomicU64::new(1),
            #[cfg(test)]
            before_expiry: Mutex::new(None),
            #[cfg(test)]
            after_subscribe: Mutex::new(None),
        })
    }

    /// Re-reads the password and ACL files (on SIGHUP). New connections use
    /// the new files; a file that cannot be read keeps the old contents.
    pub fn reload_security(&self) {
        crate::security::reload(self);
    }

    /// Counts a dropped message under its reason and writes the
    /// rate-limited warning naming the client and topic.
    pub fn dropped(&self, reason: DropReason, client: &str, topic: &str) {
        let counter = match reason {
            DropReason::QueueFull => &self.stats.dropped_queue_full,
            DropReason::OfflineQos0 => &self.stats.dropped_offline_qos0,
            DropReason::Expired => &self.stats.dropped_expired,
            DropReason::TooLarge => &self.stats.dropped_too_large,
        };
        counter.inc();
        self.drops.record(reason, client, topic);
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
                .chain(st.inflight.iter().map(|o| o.item.msg.payload.len() as u64))
                .sum::<u64>();
        }
        (count, bytes)
    }

    /// A client identifier for a client that sent an empty one.
    pub fn assign_client_id(&self) -> String {
        let n = self.next_assigned_id.fetch_add(1, Ordering::Relaxed);
        let t = self.started.elapsed().as_nanos() as u64 ^ std::process::id() as u64;
        match &self.cluster {
            // Unique in the cluster without asking it.
            Some(c) => format!("auto-{}-{t:x}-{n}", c.node()),
            None => format!("auto-{t:x}-{n}"),
        }
    }

    /// Routes a message to every matching subscription, and stores it as
    /// retained when it carries the RETAIN flag. Returns the number of
    /// sessions with a matching subscription, including those whose full
    /// queue dropped it (counted there): 0 means no matching subscribers.
    pub fn publish(&self, msg: Arc<Message>) -> usize {
        let route = {
            // Held until the route is found: see `subscribe_then`.
            let _retained = self.keep_if_retained(&msg);
            Route::find(&self.index.read(), &msg.topic, msg.publisher.as_deref())
        };
        if let Some(c) = &self.cluster {
            // Wills (and `$SYS`, which stays here): no publisher waits.
            let _ = c.forward(&msg);
        }
        self.deliver(&msg, &route)
    }

    /// Routes a message published on another node of the cluster to this
    /// node's subscribers. Its retained part arrives through the cluster's
    /// retained bucket, not here.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub fn deliver_from_cluster(&self, msg: Arc<Message>, own: bool) -> usize {
        let route = Route::find(&self.index.read(), &msg.topic, msg.publisher.as_deref());
        let only = if own { Only::Journaled } else { Only::All };
        self.deliver_only(&msg, &route, only)
    }

    /// Queues a message replayed from the cluster's stream for `session`
    /// alone, as its subscriptions here match it (`cluster::resume`).
    #[cfg(feature = "cluster")]
    pub(crate) fn deliver_replayed(&self, msg: Arc<Message>, session: &Arc<Session>) -> bool {
        let route = Route::find(&self.index.read(), &msg.topic, msg.publisher.as_deref());
        let mut queued = false;
        for target in &route.targets {
            let (s, delivery) = target.delivery(&msg);
            if Arc::ptr_eq(s, session) && delivery.qos != QoS::AtMostOnce {
                queued |= s.enqueue(delivery, self, false);
            }
        }
        queued
    }

    /// `publish` for a connection: `cache` holds the route of the
    /// connection's last topic and is reused while the index is unchanged.
    /// A QoS 0 message on that route waits in the cache
    /// (`RouteCache::held`) until `queue_held`, which the connection calls
    /// once it has handled the read, or until a message that is not held
    /// comes, so that a publisher's messages keep their order.
    pub(crate) fn publish_cached(
        &self,
        msg: Arc<Message>,
        cache: &mut Option<Box<RouteCache>>,
    ) -> usize {
        if msg.retain {
            // Rare; routed uncached with the retained store held (see
            // `subscribe_then`).
            self.queue_held(cache);
            return self.publish(msg);
        }
        // Read before the index: a change after this makes the next
        // publish look again.
        let generation = self.index_generation.load(Ordering::Acquire);
        if let Some(c) = cache.as_deref_mut() {
            if c.generation == generation && c.topic == msg.topic {
                let targets = c.route.targets.len();
                if msg.qos == QoS::AtMostOnce && c.held.len() < MAX_HELD {
                    if targets > 0 {
                        c.held.push(msg);
                    }
                    return targets;
                }
                self.queue_held_of(c);
                return self.deliver(&msg, &c.route);
            }
            self.queue_held_of(c);
        }
        let route = Route::find(&self.index.read(), &msg.topic, msg.publisher.as_deref());
        let matched = self.deliver(&msg, &route);
        *cache = (!route.per_message).then(|| {
            Box::new(RouteCache {
                topic: msg.topic.clone(),
                generation,
                route,
                held: Vec::new(),
            })
        });
        matched
    }

    /// Queues the messages waiting in a connection's route cache.
    pub(crate) fn queue_held(&self, cache: &mut Option<Box<RouteCache>>) {
        if let Some(c) = cache.as_deref_mut() {
            self.queue_held_of(c);
        }
    }

    fn queue_held_of(&self, c: &mut RouteCache) {
        if c.held.is_empty() {
            return;
        }
        if c.route.targets.len() > 1 {
            // As `deliver_only`: fan-out is encoded once (`fanout`).
            for m in &c.held {
                m.share_head();
            }
        }
        // QoS 0: nothing journaled in a cluster, so no `Only` to apply.
        for target in &c.route.targets {
            target.queue_held(&c.held, self);
        }
        c.held.clear();
    }

    /// Write access to the subscription index; every change invalidates the
    /// routes connections keep.
    fn index_mut(&self) -> parking_lot::RwLockWriteGuard<'_, SubscriptionIndex> {
        let index = self.index.write();
        self.index_generation.fetch_add(1, Ordering::Release);
        index
    }

    /// Keeps a RETAIN message as its topic's retained message. Returns the
    /// retained store, still locked, for the caller to hold until it has
    /// found the message's route.
    fn keep_if_retained(
        &self,
        msg: &Arc<Message>,
    ) -> Option<parking_lot::RwLockWriteGuard<'_, RetainedStore>> {
        if !(msg.retain && self.config.retain_available) {
            return None;
        }
        // Locked first, so the store sees two RETAIN PUBLISHes to one topic
        // in the order memory does.
        let mut retained = self.retained.write();
        // `$SYS` values describe this run: never stored, so a restart
        // starts from fresh figures. In a cluster, the cluster's bucket
        // keeps retained messages (`cluster::outbound`); the local store
        // does not, or a restart would bring back what another node has
        // cleared since.
        if let (Some(store), false, None) = (&self.store, is_sys(&msg.topic), &self.cluster) {
            if msg.payload.is_empty() {
                store.del_retained(&msg.topic);
            } else {
                store.put_retained(&msg.topic, msg.encode_for_store(), msg.received_unix_ms());
            }
        }
        retained.set(msg.clone());
        Some(retained)
    }

    /// Queues `msg` for every session on `route`; returns how many.
    fn deliver(&self, msg: &Arc<Message>, route: &Route) -> usize {
        self.deliver_only(msg, route, Only::All)
    }

    /// Queues `msg` for the sessions on `route` that `only` lets through.
    fn deliver_only(&self, msg: &Arc<Message>, route: &Route, only: Only) -> usize {
        if route.targets.len() > 1 {
            // Fan-out: the shared part of its PUBLISH is encoded once here,
            // not once per subscriber (`fanout`).
            msg.share_head();
        }
        // In a cluster, a persistent session's QoS 1/2 messages all come
        // from the cluster's message stream, in its order, even those
        // published on this node (`cluster::journal`): the local publish
        // leaves them out, and this node's own messages coming back from
        // the stream go only to them.
        let only = match (only, &self.cluster) {
            (Only::All, Some(_)) if msg.cluster_seq == 0 => Only::NotJournaled,
            (only, _) => only,
        };
        for target in &route.targets {
            let (session, delivery) = target.delivery(msg);
            // Without a cluster `only` is `All`: no per-delivery check.
            if only != Only::All {
                let journaled = delivery.qos != QoS::AtMostOnce && session.is_journaled();
                if journaled != (only == Only::Journaled) {
                    continue;
                }
            }
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
        kick: crate::kick::Kicker,
    ) -> Attached {
        let mut sessions = self.sessions.lock();
        let (session, session_present) = match sessions.get(client_id) {
            Some(existing) => {
                let session = existing.clone();
                let dropped = {
                    let mut st = session.lock();
                    if let Some(old) = st.kick.take() {
                        old.send(Kick::TakenOver);
                    }
                    // A reconnection before the will delay passes cancels
                    // the will [MQTT-5: 3.1.3-9]; the stored wills (the
                    // pending one, and the one of a connection taken over,
                    // which that connection publishes itself if it is due
                    // now) give way to the new connection's.
                    let (will, will_stored) = st
                        .rare_if()
                        .map_or((None, None), |r| (r.will.take(), r.will_stored.take()));
                    if let Some(stored) = will.and_then(|w| w.stored) {
                        self.drop_stored_will(client_id, stored);
                    }
                    if let Some(stored) = will_stored {
                        self.drop_stored_will(client_id, stored);
                    }
                    self.cluster_will_gone(client_id, st.generation);
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
                sessions.insert(session.clone());
                (session, false)
            }
        };
        // The new generation is set before the `sessions` lock is released:
        // an expiry timer decides under that lock (see `expire`), so it
        // either ends the session before this found it, or sees that a
        // connection took it.
        let generation = {
            let mut st = session.lock();
            st.generation += 1;
            // Checked under the session lock, which `shutdown_sessions`
            // takes after setting the flag: either it sees this kick or
            // this sees the flag.
            if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                kick.send(Kick::Shutdown);
            } else {
                st.kick = Some(kick);
            }
            st.expiry_secs = expiry_secs;
            st.persistent = expiry_secs > 0;
            session.set_journaled(st.persistent && self.cluster.is_some());
            self.save_session(&session, &st, None);
            st.generation
        };
        session.set_online(true);
        drop(sessions);
        Attached {
            session,
            session_present,
            generation,
        }
    }

    /// The client id connected on another node of the cluster: closes its
    /// connection here (MQTT 5: DISCONNECT 0x8E, Session taken over) and
    /// forgets the session, which now lives on that node. A will without a
    /// delay is published as for any takeover; a delayed will is cancelled
    /// by the reconnection [MQTT-3.1.3-9].
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub fn hand_over(&self, client_id: &Arc<str>) {
        let mut sessions = self.sessions.lock();
        let Some(session) = sessions.remove(client_id) else {
            return;
        };
        let subs = {
            let mut st = session.lock();
            // The connection's `detach` sees a newer generation, as after a
            // local takeover, and leaves the session alone.
            self.cluster_will_gone(client_id, st.generation);
            st.generation += 1;
            if let Some(kick) = st.kick.take() {
                kick.send(Kick::TakenOver);
            }
            if let Some(r) = st.rare_if() {
                r.will = None;
            }
            std::mem::take(&mut st.subscriptions)
        };
        self.unindex(&session, subs.keys());
        drop(sessions);
        session.set_online(false);
        if let Some(store) = &self.store {
            store.del_session(client_id);
        }
    }

    /// The delivery of `msg` to one member of share group `group` on
    /// `filter` here (`cluster::shared`), if the group has one.
    #[cfg(feature = "cluster")]
    pub(crate) fn shared_delivery(
        &self,
        group: &str,
        filter: &str,
        msg: &Arc<Message>,
    ) -> Option<(Arc<Session>, Delivery)> {
        let index = self.index.read();
        let sub = index.pick_shared(filter, group)?;
        let delivery = Delivery {
            msg: msg.clone(),
            qos: sub.options.qos.min(msg.qos),
            retain: msg.retain && sub.options.retain_as_published,
            sub_ids: sub.sub_id.into_iter().collect(),
            seq: 0,
        };
        Some((sub.session.clone(), delivery))
    }

    /// Whether share group `group` on `filter` has a member here.
    #[cfg(feature = "cluster")]
    pub(crate) fn shared_delivery_possible(&self, group: &str, filter: &str) -> bool {
        self.index.read().pick_shared(filter, group).is_some()
    }

    /// Whether this node holds a session for `client_id`.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub fn has_session(&self, client_id: &str) -> bool {
        self.sessions.lock().contains_key(client_id)
    }

    /// Installs a session the cluster held for `client_id` (its
    /// subscriptions from the session record, its queue from the cluster's
    /// journal), replacing any this node still had, so the connection being
    /// accepted resumes it. New messages get sequence numbers above
    /// `max_seq`.
    #[cfg(feature = "cluster")]
    pub fn adopt_session(
        &self,
        client_id: &Arc<str>,
        expiry_secs: u32,
        subscriptions: &[u8],
        entries: Vec<crate::cluster::QueueEntry>,
        max_seq: u64,
    ) -> Arc<Session> {
        self.hand_over(client_id);
        let session = Arc::new(Session::new(client_id.clone()));
        let subs = decode_subscriptions(subscriptions);
        let now = crate::clock::now();
        {
            let mut st = session.lock();
            st.persistent = expiry_secs > 0;
            session.set_journaled(st.persistent);
            st.expiry_secs = expiry_secs;
            st.next_seq = max_seq;
            for (filter, rec) in &subs {
                st.subscriptions.insert(filter.as_str().into(), *rec);
            }
            for e in entries {
                let Some(msg) = Message::from_stored(&e.publish, e.received_ms) else {
                    continue;
                };
                let mut msg = msg;
                msg.cluster_seq = e.source;
                let d = Delivery {
                    msg: Arc::new(msg),
                    qos: QoS::from_u8(e.qos).unwrap_or_default(),
                    retain: e.retain,
                    sub_ids: e.sub_ids.into_boxed_slice(),
                    seq: e.seq,
                };
                if d.msg.is_expired(now) {
                    self.dropped(DropReason::Expired, client_id, &d.msg.topic);
                    self.forget_message(&session, &st, &d);
                    continue;
                }
                match in_flight(d.qos, e.state) {
                    Some((pid, state)) => st.inflight.restore(pid, state, d),
                    None => {
                        st.pending_bytes += d.msg.size();
                        st.pending.push_back(d);
                    }
                }
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
        self.sessions.lock().insert(session.clone());
        session
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
                kick.send(Kick::Shutdown);
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
            // Taken over: the new connection owns the session (and the
            // stored will is its own). A will with a delay is cancelled by
            // the reconnection; one without is due now.
            drop(st);
            if let Some((msg, 0)) = will {
                self.publish_will(msg);
            }
            return;
        }
        st.kick = None;
        st.expiry_secs = expiry_secs;
        st.persistent = expiry_secs > 0;
        session.set_journaled(st.persistent && self.cluster.is_some());
        self.save_session(session, &st, Some(crate::store::unix_ms() / 1000));
        session.set_online(false);
        if expiry_secs == 0 {
            // Ended under the `sessions` lock, unless a new connection took
            // the session since the check above (then, as on a takeover, a
            // will without a delay is due and one with a delay is
            // cancelled).
            let stored = st.rare_if().and_then(|r| r.will_stored.take());
            drop(st);
            self.cluster_will_gone(&session.id, generation);
            let ended = self.expire(session, generation);
            if let Some((msg, delay)) = will {
                if ended || delay == 0 {
                    self.publish_will(msg);
                }
            }
            if let Some(stored) = stored {
                self.drop_stored_will(&session.id, stored);
            }
            return;
        }
        let stored = st.rare_if().and_then(|r| r.will_stored.take());
        match will {
            Some((msg, delay)) if delay > 0 => {
                // Stays in the store until published or cancelled.
                st.rare_mut().will = Some(PendingWill { msg, stored });
                drop(st);
                self.will_later(session, generation, Duration::from_secs(u64::from(delay)));
            }
            Some((msg, _)) => {
                drop(st);
                self.cluster_will_gone(&session.id, generation);
                self.publish_will(msg);
                if let Some(stored) = stored {
                    self.drop_stored_will(&session.id, stored);
                }
            }
            None => {
                drop(st);
                self.cluster_will_gone(&session.id, generation);
                if let Some(stored) = stored {
                    self.drop_stored_will(&session.id, stored);
                }
            }
        }
        if expiry_secs != u32::MAX {
            self.expire_later(
                session,
                generation,
                Duration::from_secs(u64::from(expiry_secs)),
            );
        }
    }

    /// Publishes the session's pending will after `after`, unless a
    /// connection took the session (or the session ended) meanwhile.
    fn will_later(self: &Arc<Self>, session: &Arc<Session>, generation: u64, after: Duration) {
        let broker = self.clone();
        let s = session.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let due = {
                let mut st = s.lock();
                if st.generation == generation {
                    st.rare_if().and_then(|r| r.will.take())
                } else {
                    None
                }
            };
            if let Some(w) = due {
                broker.cluster_will_gone(&s.id, generation);
                broker.publish_pending_will(&s.id, w);
            }
        });
    }

    /// Keeps the will of the connection of `generation` in the store, so
    /// that a crash does not lose it (see `restore`). A connection taken
    /// over meanwhile stores nothing: the new one owns the session.
    pub fn keep_will(
        &self,
        session: &Session,
        generation: u64,
        will: Option<&(Arc<Message>, u32)>,
    ) {
        let (Some(store), Some((msg, delay))) = (&self.store, will) else {
            return;
        };
        let mut st = session.lock();
        if st.generation != generation {
            return;
        }
        let seq = self.next_will_seq.fetch_add(1, Ordering::Relaxed);
        store.put_will(&session.id, seq, msg.encode_for_store(), *delay);
        st.rare_mut().will_stored = Some(seq);
    }

    /// In a cluster: the will of `client_id`'s connection of `generation`
    /// is published here or cancelled, so no other node may publish it
    /// when this one dies (`cluster::wills`).
    fn cluster_will_gone(&self, client_id: &str, generation: u64) {
        if let Some(c) = &self.cluster {
            c.will_gone(client_id, generation);
        }
    }

    /// Writes the cluster record of every connected session again (this
    /// node was cut off from the cluster long enough to be declared dead).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub fn resave_online_sessions(&self) {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            if session.is_online() {
                let st = session.lock();
                self.save_session(&session, &st, None);
            }
        }
    }

    /// Writes the record of `client_id`'s session again, if it is online
    /// here (the cluster saw another node's stale write over it).
    #[cfg(feature = "cluster")]
    pub fn resave_session(&self, client_id: &str) {
        let session = self.sessions.lock().get(client_id).cloned();
        if let Some(session) = session.filter(|s| s.is_online()) {
            let st = session.lock();
            self.save_session(&session, &st, None);
        }
    }

    /// Deletes will number `seq` of `client_id` from the store.
    fn drop_stored_will(&self, client_id: &str, seq: u64) {
        if let Some(store) = &self.store {
            store.del_will(client_id, seq);
        }
    }

    /// Publishes a will whose delay (or session) ended, then forgets it.
    fn publish_pending_will(&self, client_id: &str, w: PendingWill) {
        self.publish_will(w.msg);
        if let Some(stored) = w.stored {
            self.drop_stored_will(client_id, stored);
        }
    }

    /// Removes a session and its subscriptions, if it is still the one
    /// registered under its client id: the part done under the `sessions`
    /// lock.
    fn end_session_locked(&self, sessions: &mut SessionMap, session: &Arc<Session>) {
        if sessions
            .get(&session.id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.id);
        }
        let subs = std::mem::take(&mut session.lock().subscriptions);
        self.unindex(session, subs.keys());
    }

    /// The part of ending a session done after the `sessions` lock.
    fn session_ended(&self, session: &Session) {
        if let Some(store) = &self.store {
            store.del_session(&session.id);
        }
        if let Some(c) = &self.cluster {
            c.session_ended(&session.id);
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
        self.subscribe_then(session, filter, record, |_, _| ()).0
    }

    /// Adds a subscription (returns whether it replaced one), then runs
    /// `then` with whether it existed and the retained store, which is
    /// read-locked from before the subscription enters the index until
    /// `then` returns. A retained PUBLISH holds the store write-locked from
    /// setting its message until its route is found (`publish`), so it
    /// falls wholly before (sent by `then` as retained, not routed here) or
    /// wholly after (routed here, not yet retained when `then` reads): a
    /// subscriber never gets it twice, or not at all.
    pub fn subscribe_then<T>(
        &self,
        session: &Arc<Session>,
        filter: &str,
        record: SubRecord,
        then: impl FnOnce(bool, &RetainedStore) -> T,
    ) -> (bool, T) {
        let existed = {
            let mut st = session.lock();
            let existed = st.subscriptions.insert(filter.into(), record).is_some();
            self.save_session(session, &st, None);
            existed
        };
        let (group, plain) = split_filter(filter);
        // Lock order: retained store, then index (as in `publish`).
        let retained = self.retained.read();
        self.index_mut().insert(
            plain,
            group,
            Subscriber {
                session: session.clone(),
                options: record.options,
                sub_id: record.sub_id,
            },
        );
        #[cfg(test)]
        if let Some(hook) = self.after_subscribe.lock().take() {
            hook();
        }
        let t = then(existed, &retained);
        (existed, t)
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
        if let Some(c) = &self.cluster {
            let subs = if st.persistent {
                st.encode_subscriptions()
            } else {
                Vec::new()
            };
            c.save_session(
                &session.id,
                st.expiry_secs,
                disconnected_at.map(|s| s * 1000),
                subs,
            );
        }
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
        #[cfg(feature = "cluster")]
        if let (Some(c), true, true) = (&self.cluster, st.persistent, d.qos != QoS::AtMostOnce) {
            // In a cluster the session's queue lives in the cluster
            // (`cluster::journal`), not in this node's store.
            c.queue_put(&session.id, d);
            return;
        }
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
        #[cfg(feature = "cluster")]
        if let (Some(c), true, true) = (&self.cluster, st.persistent, d.qos != QoS::AtMostOnce) {
            c.queue_state(&session.id, d.seq, state);
            return;
        }
        if let (Some(store), true, true) = (&self.store, st.persistent, d.qos != QoS::AtMostOnce) {
            store.set_state(&session.id, d.seq, state);
        }
    }

    /// Forgets a stored message: acknowledged, expired or dropped.
    pub fn forget_message(&self, session: &Session, st: &SessionState, d: &Delivery) {
        if let Some(s) = &d.msg.settle {
            s.settle(true);
        }
        #[cfg(feature = "cluster")]
        if let (Some(c), true, true) = (&self.cluster, st.persistent, d.qos != QoS::AtMostOnce) {
            // `d` has left the queue and the inflight window already.
            let empty = st.pending.is_empty() && st.inflight.is_empty();
            c.queue_done(&session.id, d, empty);
            return;
        }
        if let (Some(store), true, true) = (&self.store, st.persistent, d.qos != QoS::AtMostOnce) {
            store.del_message(&session.id, d.seq);
        }
    }

    /// Rebuilds retained messages and persistent sessions read from the
    /// store at start. Sessions that expired while the broker was down are
    /// dropped; expired messages are not restored.
    pub fn restore(self: &Arc<Self>, restored: Restored) {
        let now_ms = crate::store::unix_ms();
        let now = crate::clock::now();
        {
            let mut retained = self.retained.write();
            for (bytes, received_ms) in &restored.retained {
                if let Some(msg) = Message::from_stored(bytes, *received_ms) {
                    if is_sys(&msg.topic) {
                        // Stored by an older version: a previous run's
                        // figures, not served and not kept.
                        if let Some(store) = &self.store {
                            store.del_retained(&msg.topic);
                        }
                    } else if !msg.is_expired(now) {
                        retained.set(Arc::new(msg));
                    }
                }
            }
        }
        let mut sessions_restored = 0;
        // Restored sessions by client id, with how long their client has
        // been gone (0 if it was connected when the broker stopped).
        let mut back: HashMap<String, (Arc<Session>, u64)> = HashMap::new();
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
                session.set_journaled(self.cluster.is_some());
                st.expiry_secs = stored.expiry_secs;
                st.generation = 1;
                if !stored.incoming_qos2.is_empty() {
                    st.rare_mut().incoming_qos2 = stored.incoming_qos2.iter().copied().collect();
                }
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
                        self.dropped(DropReason::Expired, &stored.client_id, &d.msg.topic);
                        if let Some(store) = store {
                            store.del_message(&stored.client_id, m.seq);
                        }
                        continue;
                    }
                    match in_flight(d.qos, m.state) {
                        Some((pid, state)) => st.inflight.restore(pid, state, d),
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
            self.sessions.lock().insert(session.clone());
            back.insert(stored.client_id.clone(), (session.clone(), gone_for));
            sessions_restored += 1;
            // The restart counts as a disconnection: the expiry runs from
            // when the client left, or from now if it was connected.
            if stored.expiry_secs != u32::MAX {
                let left = u64::from(stored.expiry_secs).saturating_sub(gone_for);
                self.expire_later(&session, 1, Duration::from_secs(left));
            }
        }
        let wills = self.restore_wills(restored.wills, &back, now_ms);
        let retained = self.retained.read().len();
        if sessions_restored > 0 || retained > 0 || wills > 0 {
            tracing::info!(
                sessions = sessions_restored,
                retained,
                wills,
                "state restored from the store"
            );
        }
    }

    /// The wills of clients that were connected when the broker stopped
    /// (or whose will waited for its delay): the broker's stop closed their
    /// network connections without a DISCONNECT, so each is due as after a
    /// live close (the Will Flag, section 3.1.2.5 in 3.1.1 and 5.0). A will of a
    /// session that lives on waits out what is left of its delay (counted
    /// from the restart for a client that was connected, from its leaving
    /// otherwise) and is cancelled if the client comes back first; the end
    /// of the session cuts it short. A will whose session is gone (expiry
    /// 0, or it expired while the broker was down) is published now.
    /// Returns how many wills were restored.
    fn restore_wills(
        self: &Arc<Self>,
        wills: Vec<crate::store::StoredWill>,
        back: &HashMap<String, (Arc<Session>, u64)>,
        now_ms: u64,
    ) -> usize {
        let count = wills.len();
        let mut due = Vec::new();
        for w in wills {
            self.next_will_seq.fetch_max(w.seq + 1, Ordering::Relaxed);
            // Its Message Expiry Interval starts when it is published.
            let Some(msg) = Message::from_stored(&w.publish, now_ms) else {
                tracing::warn!(client = %w.client_id, "unreadable stored will dropped");
                self.drop_stored_will(&w.client_id, w.seq);
                continue;
            };
            let pending = PendingWill {
                msg: Arc::new(msg),
                stored: Some(w.seq),
            };
            match back.get(&w.client_id) {
                Some((session, gone_for)) if u64::from(w.delay_secs) > *gone_for => {
                    let left = u64::from(w.delay_secs) - gone_for;
                    session.lock().rare_mut().will = Some(pending);
                    // Generation 1 is the restored session's (see above).
                    self.will_later(session, 1, Duration::from_secs(left));
                }
                _ => due.push((w.client_id, pending)),
            }
        }
        for (client_id, pending) in due {
            tracing::info!(client = %client_id, topic = %pending.msg.topic, "publishing the will of a client connected before the restart");
            self.publish_pending_will(&client_id, pending);
        }
        count
    }

    /// Ends the session after `after` unless a connection took it meanwhile.
    fn expire_later(self: &Arc<Self>, session: &Arc<Session>, generation: u64, after: Duration) {
        let broker = self.clone();
        let s = session.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if broker.expire(&s, generation) {
                broker.stats.sessions_expired.inc();
            }
        });
    }

    /// Ends the session if it is still the one of `generation`, offline.
    /// The check and the removal happen under the `sessions` lock, which
    /// `attach` holds while it takes a session and starts a new generation:
    /// a client that reconnects as the expiry runs out either keeps its
    /// session (and this leaves it) or gets a new one with Session Present
    /// 0, never a session that is removed after it was told it is present.
    /// Returns whether it ended the session.
    fn expire(&self, session: &Arc<Session>, generation: u64) -> bool {
        #[cfg(test)]
        if let Some(hook) = self.before_expiry.lock().take() {
            hook();
        }
        let mut sessions = self.sessions.lock();
        let will = {
            let mut st = session.lock();
            if st.generation != generation || session.is_online() {
                return false;
            }
            st.rare_if().and_then(|r| r.will.take())
        };
        self.end_session_locked(&mut sessions, session);
        drop(sessions);
        self.session_ended(session);
        self.cluster_will_gone(&session.id, generation);
        // The session ended before the will delay did.
        if let Some(w) = will {
            self.publish_pending_will(&session.id, w);
        }
        true
    }

    fn publish_will(&self, msg: Arc<Message>) {
        tracing::debug!(topic = %msg.topic, "publishing will");
        self.publish(msg);
    }
}

/// Whether `topic` is one of the broker's own `$SYS` topics.
/// Where a stored message of QoS `qos` in `state` stands in the inflight
/// window: `None` while it waits in the queue.
fn in_flight(qos: QoS, state: StoredState) -> Option<(mqtt_codec::Pid, OutState)> {
    let sent = |pid: u16, state: OutState| mqtt_codec::Pid::new(pid).map(|pid| (pid, state));
    match state {
        StoredState::Queued => None,
        StoredState::Sent(pid) if qos == QoS::AtLeastOnce => sent(pid, OutState::AwaitPubAck),
        StoredState::Sent(pid) => sent(pid, OutState::AwaitPubRec),
        StoredState::Released(pid) => sent(pid, OutState::AwaitPubComp),
    }
}

fn is_sys(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

/// Splits `$share/{group}/{filter}` into its group and filter.
pub fn split_filter(filter: &str) -> (Option<&str>, &str) {
    match parse_shared(filter) {
        Some(s) => (Some(s.group), s.filter),
        None => (None, filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_codec::SubscriptionOptions;
    use std::sync::Weak;

    fn record() -> SubRecord {
        SubRecord {
            options: SubscriptionOptions::default(),
            sub_id: None,
        }
    }

    /// A client that reconnects (Clean Start 0) at the instant its session
    /// expires keeps the session it is told is present, with its
    /// subscriptions (MQTT 5.0 section 4.1, Session State). The test's hook runs when
    /// the expiry timer fires, before the expiry looks at the session: the
    /// gap where the reconnection used to be lost. Time is paused, so the
    /// timer fires when the test says.
    #[tokio::test(start_paused = true)]
    async fn a_session_resumed_as_its_expiry_fires_is_kept() {
        let state = Arc::new(BrokerState::with_cluster(Config::ephemeral(), None, None).unwrap());
        let id: Arc<str> = "c".into();
        let (kick, _kicked) = crate::kick::channel();
        let first = state.attach(&id, true, 10, kick);
        state.subscribe(&first.session, "t", record());
        state.detach(&first.session, first.generation, None, 10);

        let resumed = Arc::new(Mutex::new(None));
        {
            let weak: Weak<BrokerState> = Arc::downgrade(&state);
            let (id, resumed) = (id.clone(), resumed.clone());
            *state.before_expiry.lock() = Some(Box::new(move || {
                let state = weak.upgrade().unwrap();
                let (kick, kicked) = crate::kick::channel();
                let a = state.attach(&id, false, 10, kick);
                *resumed.lock() = Some((a.session, a.session_present, kicked));
            }));
        }
        tokio::time::sleep(Duration::from_secs(11)).await;

        let (session, present, _kicked) = resumed.lock().take().expect("the hook ran");
        assert!(present, "the reconnection was told the session is present");
        let registered = state.sessions.lock().get(&id).cloned();
        assert!(
            registered.is_some_and(|s| Arc::ptr_eq(&s, &session)),
            "the resumed session is still registered"
        );
        assert_eq!(session.lock().subscriptions.len(), 1, "subscription kept");
        let routed = state.publish(Arc::new(Message::new(
            "t",
            bytes::Bytes::from_static(b"x"),
            QoS::AtMostOnce,
            false,
        )));
        assert_eq!(routed, 1, "the subscription still routes");
    }

    /// The same gap for a session that ends with its connection (expiry
    /// 0): a client that resumes it between the close's check and its end
    /// keeps what it was told is present.
    #[tokio::test(start_paused = true)]
    async fn a_session_resumed_as_its_connection_closes_is_kept() {
        let state = Arc::new(BrokerState::with_cluster(Config::ephemeral(), None, None).unwrap());
        let id: Arc<str> = "c0".into();
        let (kick, _kicked) = crate::kick::channel();
        let first = state.attach(&id, true, 0, kick);
        state.subscribe(&first.session, "t", record());
        let resumed = Arc::new(Mutex::new(None));
        {
            let weak: Weak<BrokerState> = Arc::downgrade(&state);
            let (id, resumed) = (id.clone(), resumed.clone());
            *state.before_expiry.lock() = Some(Box::new(move || {
                let state = weak.upgrade().unwrap();
                let (kick, kicked) = crate::kick::channel();
                let a = state.attach(&id, false, 0, kick);
                *resumed.lock() = Some((a.session, a.session_present, kicked));
            }));
        }
        state.detach(&first.session, first.generation, None, 0);

        let (session, present, _kicked) = resumed.lock().take().expect("the hook ran");
        assert!(present);
        let registered = state.sessions.lock().get(&id).cloned();
        assert!(registered.is_some_and(|s| Arc::ptr_eq(&s, &session)));
        assert_eq!(session.lock().subscriptions.len(), 1, "subscription kept");
    }

    /// A retained PUBLISH that lands while a SUBSCRIBE is between adding
    /// its subscription and reading the retained store reaches the
    /// subscriber once (live), not also as a retained copy: a QoS 2 message
    /// is delivered exactly once [MQTT-3.1.1/5: 4.3.3]. The hook starts the
    /// publish in that gap and gives it a moment to finish: without the
    /// lock it does, and the subscriber got the message twice.
    #[test]
    fn a_retained_publish_racing_a_subscribe_arrives_once() {
        let state = Arc::new(BrokerState::with_cluster(Config::ephemeral(), None, None).unwrap());
        let id: Arc<str> = "s".into();
        let (kick, _kicked) = crate::kick::channel();
        let sub = state.attach(&id, true, 0, kick);
        let publisher = Arc::new(Mutex::new(None));
        {
            let weak: Weak<BrokerState> = Arc::downgrade(&state);
            let publisher = publisher.clone();
            *state.after_subscribe.lock() = Some(Box::new(move || {
                let state = weak.upgrade().unwrap();
                let (done, finished) = std::sync::mpsc::channel();
                *publisher.lock() = Some(std::thread::spawn(move || {
                    let msg =
                        Message::new("t", bytes::Bytes::from_static(b"x"), QoS::ExactlyOnce, true);
                    state.publish(Arc::new(msg));
                    let _ = done.send(());
                }));
                // Finishes here without the lock; with it, it cannot
                // until the SUBSCRIBE has read the retained store.
                let _ = finished.recv_timeout(Duration::from_millis(300));
            }));
        }
        let options = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            ..SubscriptionOptions::default()
        };
        let record = SubRecord {
            options,
            sub_id: None,
        };
        let (_, retained) = state.subscribe_then(&sub.session, "t", record, |_, store| {
            store.matching("t", Instant::now()).len()
        });
        let thread = publisher.lock().take().expect("the hook ran");
        thread.join().unwrap();
        let live = sub.session.lock().pending.len();
        assert_eq!(
            retained + live,
            1,
            "retained copies {retained}, live {live}"
        );
        assert_eq!(state.retained.read().len(), 1, "the message is retained");
    }
}
