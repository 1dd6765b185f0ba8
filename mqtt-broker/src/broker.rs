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
use crate::security::Security;
use crate::session::{Delivery, Kick, PendingWill, Session, SubRecord};
use crate::stats::Stats;
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
    pub fn new(config: Config) -> Result<BrokerState, String> {
        let security = Security::load(&config)?;
        Ok(BrokerState {
            security: RwLock::new(Arc::new(security)),
            auth_permits: tokio::sync::Semaphore::new(4),
            pending_connects: std::sync::atomic::AtomicUsize::new(0),
            config,
            stats: Stats::default(),
            sessions: Mutex::new(HashMap::new()),
            index: RwLock::new(SubscriptionIndex::default()),
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

    /// A client identifier for a client that sent an empty one.
    pub fn assign_client_id(&self) -> String {
        let n = self.next_assigned_id.fetch_add(1, Ordering::Relaxed);
        let t = self.started.elapsed().as_nanos() as u64 ^ std::process::id() as u64;
        format!("auto-{t:x}-{n}")
    }

    /// Routes a message to every matching subscription, and stores it as
    /// retained when it carries the RETAIN flag. Returns the number of
    /// sessions it was queued for.
    pub fn publish(&self, msg: Arc<Message>) -> usize {
        if msg.retain && self.config.retain_available {
            self.retained.write().set(msg.clone());
        }
        let index = self.index.read();
        let mut matches: Vec<&Subscriber> = Vec::new();
        index.matches(&msg.topic, &mut matches);
        if matches.is_empty() {
            return 0;
        }
        // No Local: not back to the publisher [MQTT-3.8.3-3].
        matches
            .retain(|s| !(s.options.no_local && msg.publisher.as_deref() == Some(&*s.session.id)));
        // Overlapping subscriptions of one session: one copy with the highest
        // QoS and every Subscription Identifier [MQTT-3.3.4-2..5].
        matches.sort_by_key(|s| Arc::as_ptr(&s.session));
        let mut delivered = 0;
        let mut i = 0;
        while i < matches.len() {
            let session = &matches[i].session;
            let mut j = i;
            let mut qos = QoS::AtMostOnce;
            let mut retain_as_published = false;
            let mut sub_ids = Vec::new();
            while j < matches.len() && Arc::ptr_eq(&matches[j].session, session) {
                let s = matches[j];
                qos = qos.max(s.options.qos.min(msg.qos));
                retain_as_published |= s.options.retain_as_published;
                sub_ids.extend(s.sub_id);
                j += 1;
            }
            let delivery = Delivery {
                msg: msg.clone(),
                qos,
                // [MQTT-3.3.1-9] RETAIN is cleared towards existing
                // subscriptions unless Retain As Published is set.
                retain: msg.retain && retain_as_published,
                sub_ids: sub_ids.into_boxed_slice(),
            };
            if session.enqueue(delivery, &self.config, &self.stats, false) {
                delivered += 1;
            }
            i = j;
        }
        delivered
    }

    /// Gives the session of `client_id` to a new connection, creating it if
    /// needed, discarding it first for Clean Start, and stopping the
    /// connection that owned it before (session takeover).
    pub fn attach(
        &self,
        client_id: &Arc<str>,
        clean_start: bool,
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
            st.kick = Some(kick);
            st.generation
        };
        session.set_online(true);
        Attached {
            session,
            session_present,
            generation,
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
            let broker = self.clone();
            let s = session.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(u64::from(expiry_secs))).await;
                let expired = s.lock().generation == generation && !s.is_online();
                if expired {
                    let will = s.lock().will.take();
                    broker.end_session(&s);
                    // The session ended before the will delay did.
                    if let Some(w) = will {
                        broker.publish_will(w.msg);
                    }
                }
            });
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
        tracing::debug!(client = %session.id, "session ended");
    }

    fn unindex<'a>(&self, session: &Arc<Session>, filters: impl Iterator<Item = &'a Box<str>>) {
        let mut index = self.index.write();
        for filter in filters {
            let (group, plain) = split_filter(filter);
            index.remove(plain, group, session);
        }
    }

    /// Adds one subscription to a session and the index. Returns whether the
    /// session already had a subscription to that filter.
    pub fn subscribe(&self, session: &Arc<Session>, filter: &str, record: SubRecord) -> bool {
        let existed = session
            .lock()
            .subscriptions
            .insert(filter.into(), record)
            .is_some();
        let (group, plain) = split_filter(filter);
        self.index.write().insert(
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
        let existed = session.lock().subscriptions.remove(filter).is_some();
        let (group, plain) = split_filter(filter);
        self.index.write().remove(plain, group, session);
        existed
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
