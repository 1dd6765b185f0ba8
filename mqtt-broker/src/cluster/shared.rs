//! Shared subscriptions across nodes (issue 18; MQTT 5.0 section 4.8.2):
//! each message of `$share/{group}/{filter}` goes to one member of the
//! group in the whole cluster, not one per node.
//!
//! In a cluster the subscription index leaves groups out of ordinary
//! routing (`SubscriptionIndex::groups_elsewhere`). Instead, a node with at
//! least one member of a group takes the group's messages from NATS, where
//! NATS hands each to one node:
//!
//! - QoS 1/2: a durable JetStream push consumer per group and filter
//!   subject on `P_MESSAGES` (`<P>_share_<hash>`, explicit
//!   acknowledgements), delivering to a NATS queue group that every node
//!   with members joins. A message is acknowledged to JetStream
//!   when its member acknowledges it (or it expires or is dropped, counted),
//!   handed back (NAK) when the member's session ends without it, and sent
//!   again by JetStream to another node after `shared_ack_wait_ms` when
//!   the node holding it dies. A persistent member's message is
//!   acknowledged as soon as it is in the member's queue in the cluster: it
//!   belongs to that session then, and moves with it.
//! - QoS 0: a NATS queue subscription per group and filter subject, on a
//!   second connection with echo (this node's own messages included).
//!
//! The node picks the member among its own (round robin, connected ones
//! first). When it has none left, it hands the message back and stops
//! taking the group's messages until a member subscribes again.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ops::Not;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{push, AckPolicy, DeliverPolicy};
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{FutureExt, StreamExt};
use mqtt_codec::QoS;
use tokio::sync::{mpsc, oneshot, watch};

use super::{inbound, subject, Cluster};
use crate::broker::BrokerState;
use crate::message::{Message, Settle};

/// Messages of one group a node may hold unacknowledged at a time, over
/// all nodes (JetStream's `max_ack_pending`).
const MAX_ACK_PENDING: i64 = 4096;

/// The groups this node takes messages for, by (group, filter).
/// A group and its filter.
type ShareKey = (Box<str>, Box<str>);

#[derive(Default)]
pub(super) struct Shares {
    /// Each run's readiness: `None` while it starts, then whether it could.
    running: parking_lot::Mutex<HashMap<ShareKey, watch::Receiver<Option<bool>>>>,
}

/// A member of `group` on `filter` subscribed here: makes sure this node
/// takes the group's messages. Answers `true` once it does (so the SUBACK
/// can wait for it), `false` if NATS could not be asked.
pub(super) fn join(
    cluster: &Arc<Cluster>,
    broker: &Arc<BrokerState>,
    group: &str,
    filter: &str,
) -> oneshot::Receiver<bool> {
    let (tx, rx) = oneshot::channel();
    let key: ShareKey = (group.into(), filter.into());
    let mut ready = {
        let mut running = cluster.shares.running.lock();
        match running.get(&key) {
            // Running, or starting: wait for its answer.
            Some(r) if r.borrow().unwrap_or(true) => r.clone(),
            _ => {
                let (ready_tx, ready_rx) = watch::channel(None);
                running.insert(key.clone(), ready_rx.clone());
                tokio::spawn(run(cluster.clone(), broker.clone(), key, ready_tx));
                ready_rx
            }
        }
    };
    tokio::spawn(async move {
        let ok = loop {
            if let Some(ok) = *ready.borrow_and_update() {
                break ok;
            }
            if ready.changed().await.is_err() {
                break false;
            }
        };
        let _ = tx.send(ok);
    });
    rx
}

/// The durable consumer's name for `group`, `filter` and one of its
/// subjects: the same on every node.
fn consumer_name(cluster: &Cluster, group: &str, filter: &str, subject: &str) -> String {
    let mut h = DefaultHasher::new();
    (group, filter, subject).hash(&mut h);
    format!(
        "{}_share_{:016x}",
        cluster.cfg.subject_prefix.to_ascii_uppercase(),
        h.finish()
    )
}

enum Incoming {
    /// From the group's JetStream consumer: its reply subject acknowledges.
    Stored(Box<async_nats::Message>),
    Volatile(async_nats::Message),
}

/// Takes the messages of one group while this node has members of it.
async fn run(
    cluster: Arc<Cluster>,
    broker: Arc<BrokerState>,
    key: ShareKey,
    ready: watch::Sender<Option<bool>>,
) {
    let (group, filter) = (&*key.0, &*key.1);
    let sources = match open_retrying(&cluster, group, filter).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%group, %filter, error = %e, "cluster: shared subscription not set up in NATS");
            let _ = ready.send(Some(false));
            cluster.shares.running.lock().remove(&key);
            return;
        }
    };
    let _ = ready.send(Some(true));
    tracing::debug!(%group, %filter, "cluster: taking the shared subscription's messages");
    let mut sources = Some(sources);
    let (back_tx, mut back_rx) = mpsc::unbounded_channel::<async_nats::Subject>();
    let mut shutdown = cluster.shutdown.subscribe();
    // Messages to hand back (their reply subjects), and whether this node
    // has no member left.
    let mut back: Vec<async_nats::Subject> = Vec::new();
    while let Some(src) = sources.as_mut() {
        let no_member = tokio::select! {
            item = src.next() => {
                let Some(item) = item else { break };
                match item {
                    Incoming::Stored(m) => {
                        !take_stored(&cluster, &broker, group, filter, *m, &back_tx, &mut back)
                    }
                    Incoming::Volatile(m) => !take_volatile(&cluster, &broker, group, filter, m),
                }
            }
            Some(reply) = back_rx.recv() => {
                back.push(reply);
                while let Ok(reply) = back_rx.try_recv() {
                    back.push(reply);
                }
                broker.shared_delivery_possible(group, filter).not()
            }
            _ = shutdown.changed() => break,
        };
        if no_member {
            // Leave the queue group first (the unsubscription is on the
            // wire once `flush` returns), then hand the messages back: they
            // go to the nodes that still have members, not to this one.
            while let Some(Some(Incoming::Stored(m))) = src.next().now_or_never() {
                back.extend(m.reply.clone());
            }
            cluster.shares.running.lock().remove(&key);
            sources = None;
            let _ = cluster.link.client.flush().await;
            if let Some(echo) = cluster.link.echo.get() {
                let _ = echo.flush().await;
            }
        }
        for reply in back.drain(..) {
            nak(&cluster.link.client, reply);
        }
        if no_member {
            break;
        }
    }
    // Later hand-backs (the run is gone) go straight to NATS.
    back_rx.close();
    while let Ok(reply) = back_rx.try_recv() {
        nak(&cluster.link.client, reply);
    }
    cluster.shares.running.lock().remove(&key);
    tracing::debug!(%group, %filter, "cluster: no member of the shared subscription here any more");
}

/// Hands a message back to its group's consumer: JetStream sends it again
/// at once, to a node of the queue group.
fn nak(client: &async_nats::Client, reply: async_nats::Subject) {
    let client = client.clone();
    tokio::spawn(async move {
        let _ = client
            .publish(reply, bytes::Bytes::from_static(b"-NAK"))
            .await;
    });
}

/// [`open`], tried again with backoff until `ack_timeout_ms` has passed:
/// JetStream can take seconds to answer again after a NATS server restart
/// or a lost quorum, and a member's SUBACK (which waits for this) should
/// not fail on the first slow answer. An attempt that failed half way
/// leaves nothing behind: the consumers it created are durable and found
/// again, and its queue subscriptions end when their streams are dropped.
async fn open_retrying(
    cluster: &Cluster,
    group: &str,
    filter: &str,
) -> Result<SelectAll<BoxStream<'static, Incoming>>, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(cluster.cfg.ack_timeout_ms);
    let mut delay = Duration::from_millis(50);
    loop {
        match open(cluster, group, filter).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() + delay >= deadline => return Err(e),
            Err(e) => {
                tracing::debug!(%group, %filter, error = %e, "cluster: shared subscription set-up failed; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The consumers and queue subscriptions of a group, as one stream.
async fn open(
    cluster: &Cluster,
    group: &str,
    filter: &str,
) -> Result<SelectAll<BoxStream<'static, Incoming>>, String> {
    let link = &cluster.link;
    let echo = link
        .echo
        .get_or_try_init(|| super::link::connect_with_echo(&cluster.cfg))
        .await?;
    let stream = link
        .js
        .get_stream(&link.messages_stream)
        .await
        .map_err(|e| e.to_string())?;
    let mut all: SelectAll<BoxStream<'static, Incoming>> = SelectAll::new();
    for s in subject::filter_to_subjects(&link.durable, filter) {
        // A push consumer delivering to a NATS queue group: each message
        // goes to one node of those subscribed, and again (after the ack
        // wait) to one still there.
        let name = consumer_name(cluster, group, filter, &s);
        let deliver_subject = format!("{}.sd.{name}", cluster.cfg.subject_prefix);
        stream
            .get_or_create_consumer(
                &name,
                push::Config {
                    durable_name: Some(name.clone()),
                    deliver_subject: deliver_subject.clone(),
                    deliver_group: Some(name.clone()),
                    filter_subject: s,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_millis(cluster.cfg.shared_ack_wait_ms),
                    deliver_policy: DeliverPolicy::New,
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let sub = link
            .client
            .queue_subscribe(deliver_subject, name)
            .await
            .map_err(|e| e.to_string())?;
        all.push(sub.map(|m| Incoming::Stored(Box::new(m))).boxed());
    }
    for s in subject::filter_to_subjects(&link.volatile, filter) {
        let queue = consumer_name(cluster, group, filter, &s);
        let sub = echo
            .queue_subscribe(s, queue)
            .await
            .map_err(|e| e.to_string())?;
        all.push(sub.map(Incoming::Volatile).boxed());
    }
    // A subscription is only written to the connection's buffer: without
    // the flush (a PING answered by the server once it has the SUBs), the
    // SUBACK could go out before NATS knows this node takes the group's
    // QoS 0 messages, and the first ones published after it would reach no
    // member (the first ten of 50 were lost in a run of `cluster.rs`).
    link.client.flush().await.map_err(|e| e.to_string())?;
    echo.flush().await.map_err(|e| e.to_string())?;
    Ok(all)
}

/// A QoS 1/2 message of the group: to a member here. Returns whether the
/// group has one (if not, the message is in `back`, to be handed back).
fn take_stored(
    cluster: &Arc<Cluster>,
    broker: &Arc<BrokerState>,
    group: &str,
    filter: &str,
    m: async_nats::Message,
    back_tx: &mpsc::UnboundedSender<async_nats::Subject>,
    back: &mut Vec<async_nats::Subject>,
) -> bool {
    // `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`
    let seq = m
        .reply
        .as_deref()
        .and_then(|r| r.split('.').nth(5))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let hook = Arc::new(JetStreamSettle {
        client: cluster.link.client.clone(),
        reply: m.reply.clone(),
        back: back_tx.clone(),
        settled: AtomicBool::new(false),
    });
    let Some(mut msg) = inbound::message(cluster, m.headers.as_ref(), m.payload.clone(), seq)
    else {
        hook.settle(true);
        return true;
    };
    if !mqtt_codec::topic::matches(filter, &msg.topic) {
        // A `$` topic under a wildcard NATS cannot tell apart.
        hook.settle(true);
        return true;
    }
    msg.settle = Some(hook.clone());
    let msg = Arc::new(msg);
    let Some((session, delivery)) = broker.shared_delivery(group, filter, &msg) else {
        hook.settled.store(true, Ordering::Release);
        back.extend(m.reply.clone());
        return false;
    };
    drop(msg);
    let qos = delivery.qos;
    let queued = session.enqueue(delivery, broker, false);
    if !queued || qos == QoS::AtMostOnce {
        // Dropped (counted) or sent at most once: done with here.
        hook.settle(true);
    } else if session.is_journaled() {
        // The member's queue in the cluster holds it once this barrier
        // passes: it is the session's from then on.
        let barrier = cluster.queue_barrier();
        tokio::spawn(async move {
            if barrier.await.unwrap_or(false) {
                hook.settle(true);
            }
        });
    }
    true
}

/// A QoS 0 message of the group: to a member here.
fn take_volatile(
    cluster: &Arc<Cluster>,
    broker: &Arc<BrokerState>,
    group: &str,
    filter: &str,
    m: async_nats::Message,
) -> bool {
    let Some(msg) = inbound::message(cluster, m.headers.as_ref(), m.payload.clone(), 0) else {
        return true;
    };
    if !mqtt_codec::topic::matches(filter, &msg.topic) {
        return true;
    }
    let msg: Arc<Message> = Arc::new(msg);
    match broker.shared_delivery(group, filter, &msg) {
        Some((session, delivery)) => {
            session.enqueue(delivery, broker, false);
            true
        }
        None => false,
    }
}

/// Acknowledges a message to its group's consumer, or hands it back
/// (through the group's task, which first leaves the queue group when this
/// node has no member left); if neither happened when the message is
/// dropped (its session ended with it), hands it back then.
#[derive(Debug)]
struct JetStreamSettle {
    client: async_nats::Client,
    reply: Option<async_nats::Subject>,
    back: mpsc::UnboundedSender<async_nats::Subject>,
    settled: AtomicBool,
}

impl Settle for JetStreamSettle {
    fn settle(&self, done: bool) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(reply) = self.reply.clone() else {
            return;
        };
        if done {
            let client = self.client.clone();
            tokio::spawn(async move {
                let _ = client
                    .publish(reply, bytes::Bytes::from_static(b"+ACK"))
                    .await;
            });
        } else if let Err(e) = self.back.send(reply) {
            // The group's task is gone: straight to NATS.
            nak(&self.client, e.0);
        }
    }
}

impl Drop for JetStreamSettle {
    fn drop(&mut self) {
        if !self.settled.load(Ordering::Acquire) && tokio::runtime::Handle::try_current().is_ok() {
            self.settle(false);
        }
    }
}
