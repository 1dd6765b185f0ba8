//! Where a topic's messages go, and the per-publisher cache of it.
//!
//! Matching a topic against the subscription trie, merging overlapping
//! subscriptions of one session and applying No Local is most of the work
//! of a publish. Publishers mostly publish to the same topic again, so each
//! connection keeps the route of its last topic, valid as long as the index
//! has not changed since (the index generation).

use std::sync::Arc;

use mqtt_codec::QoS;

use crate::broker::BrokerState;
use crate::message::Message;
use crate::session::{Delivery, Session};
use crate::topic_index::{Subscriber, SubscriptionIndex};

/// One session a topic's messages go to, its overlapping subscriptions
/// merged [MQTT-5: 3.3.4-2..5].
pub(crate) struct Target {
    session: Arc<Session>,
    /// The highest QoS among its matching subscriptions.
    max_qos: QoS,
    /// Whether any of them has Retain As Published.
    retain_as_published: bool,
    /// Every matching Subscription Identifier.
    sub_ids: Box<[u32]>,
}

impl Target {
    /// The delivery of `msg` to this session.
    pub(crate) fn delivery(&self, msg: &Arc<Message>) -> (&Arc<Session>, Delivery) {
        let delivery = Delivery {
            msg: msg.clone(),
            qos: self.max_qos.min(msg.qos),
            // [MQTT-3.1.1: 3.3.1-9] RETAIN is cleared towards existing subscriptions
            // unless Retain As Published is set.
            retain: msg.retain && self.retain_as_published,
            sub_ids: self.sub_ids.clone(),
            seq: 0,
        };
        (&self.session, delivery)
    }

    /// Queues `held`, QoS 0 messages to one topic in the order published,
    /// for this session under one lock.
    pub(crate) fn queue_held(&self, held: &[Arc<Message>], broker: &BrokerState) {
        self.session
            .enqueue_qos0(held.iter().map(|m| self.delivery(m).1), broker);
    }
}

/// The route of one topic for one publisher.
pub(crate) struct Route {
    pub targets: Vec<Target>,
    /// A shared group matched: its member is picked per message, so the
    /// route must not be reused.
    pub per_message: bool,
}

impl Route {
    /// Matches `topic` in `index`; `publisher` is left out of No Local
    /// subscriptions [MQTT-5: 3.8.3-3].
    pub(crate) fn find(index: &SubscriptionIndex, topic: &str, publisher: Option<&str>) -> Route {
        let mut matches: Vec<&Subscriber> = Vec::new();
        let per_message = index.matches(topic, &mut matches);
        matches.retain(|s| !(s.options.no_local && publisher == Some(&*s.session.id)));
        matches.sort_by_key(|s| Arc::as_ptr(&s.session));
        let mut targets = Vec::with_capacity(matches.len());
        for same in matches.chunk_by(|a, b| Arc::ptr_eq(&a.session, &b.session)) {
            targets.push(Target {
                session: same[0].session.clone(),
                max_qos: same
                    .iter()
                    .map(|s| s.options.qos)
                    .max()
                    .unwrap_or(QoS::AtMostOnce),
                retain_as_published: same.iter().any(|s| s.options.retain_as_published),
                sub_ids: same.iter().filter_map(|s| s.sub_id).collect(),
            });
        }
        Route {
            targets,
            per_message,
        }
    }
}

/// A connection's last route, with the topic and index generation it is
/// valid for, and the QoS 0 messages to that topic routed but not queued
/// yet.
pub(crate) struct RouteCache {
    pub topic: Arc<str>,
    pub generation: u64,
    pub route: Route,
    /// QoS 0 messages of this read to `topic`, in order, queued together
    /// (`Target::queue_held`) when the read has been handled, or before
    /// anything else this connection sends on: one lock and one wake-up
    /// per subscriber per read instead of one per message.
    pub held: Vec<Arc<Message>>,
}

/// At most this many messages wait in `RouteCache::held` (2 KiB of
/// pointers): a read of up to 64 KiB of small messages is queued in a few
/// steps, and the first message of a long burst does not wait for the
/// whole read.
pub(crate) const MAX_HELD: usize = 256;
