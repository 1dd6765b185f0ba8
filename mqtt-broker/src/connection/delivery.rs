//! The session's queue to the wire (MQTT 5.0 sections 4.3, 4.4 and 4.9):
//! messages move into the write buffer while the inflight window (the
//! client's Receive Maximum and `max_inflight`) and the buffer allow, with
//! packet identifiers, topic aliases and the remaining expiry; on resume,
//! every unacknowledged PUBLISH again with DUP and every PUBREL again
//! [MQTT-3.1.1/5: 4.4.0-1].

use super::*;
use mqtt_proto::Resend;

impl Conn {
    /// Moves queued messages into the write buffer while the inflight window
    /// and the buffer allow.
    pub(super) fn fill(&mut self) {
        let mark = crate::store::ops_sent_on_this_thread();
        let now = crate::clock::now();
        let session = self.session.clone();
        let mut st = session.lock();
        if st.generation != self.generation {
            // Taken over while this task was busy: the queue is the new
            // connection's now. Taking from it here would put messages in
            // flight on a dead socket after the new one resent in-flight ones.
            return;
        }
        if st.inflight.unsent() > 0 {
            self.resend_unsent(&mut st);
        }
        let mut reserved = false;
        // Held packets count against the high water mark too.
        while self.outbox.backlog() < WRITE_HIGH_WATER {
            let Some(front) = st.pending.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && !st.inflight.has_room(usize::from(self.send_window))
            {
                break;
            }
            if !reserved {
                reserved = true;
                self.outbox.reserve_for(st.pending.len(), st.pending_bytes);
            }
            let Some(d) = st.pending.pop_front() else {
                break;
            };
            st.pending_bytes -= d.msg.size();
            if d.msg.is_expired(now) {
                self.broker
                    .dropped(DropReason::Expired, &self.client_id, &d.msg.topic);
                self.broker.forget_message(&session, &st, &d);
                continue;
            }
            if !self.acl.can_receive(&d.msg.topic) {
                // Read access is checked per message, so overlapping grants
                // and denies (and retained messages) are exact.
                self.broker.stats.acl_denied.inc();
                self.broker.forget_message(&session, &st, &d);
                continue;
            }
            let qos_pid = match d.qos {
                QoS::AtMostOnce => QosPid::AtMostOnce,
                q => QosPid::from_qos(q, st.next_pid()),
            };
            let lane = match self.hold_outgoing(&st, d.qos == QoS::ExactlyOnce) {
                true => Lane::Held,
                false => Lane::Now,
            };
            let written = self.write_publish(&d, qos_pid, false, now, lane);
            if !written {
                self.broker.forget_message(&session, &st, &d);
            } else {
                if let Some(pid) = qos_pid.pid() {
                    self.broker
                        .message_state(&session, &st, &d, StoredState::Sent(pid.get()));
                    st.push_sent(pid, d);
                }
            }
        }
        drop(st);
        if reserved {
            // Room made for messages that were then dropped (expired, not
            // allowed, too large) is not kept.
            self.outbox.give_back_if_empty();
        }
        self.seal_held(mark);
    }

    /// On session resume: every unacknowledged PUBLISH again with DUP, and
    /// every PUBREL again [MQTT-3.1.1/5: 4.4.0-1].
    pub(super) fn resend_inflight(&mut self) {
        let mark = crate::store::ops_sent_on_this_thread();
        let session = self.session.clone();
        let mut st = session.lock();
        // The client resumed its session (Clean Start 0), so it keeps its
        // half: nothing is complete without its answer.
        let _ = st.inflight.resume(true);
        self.resend_unsent(&mut st);
        drop(st);
        self.seal_held(mark);
    }

    /// Resends what a reconnection owes, as far as the client's Receive
    /// Maximum allows; the rest follows as acknowledgements free the window.
    pub(super) fn resend_unsent(&mut self, st: &mut SessionState) {
        let now = crate::clock::now();
        let window = usize::from(self.send_window);
        while let Some(i) = st.inflight.next_resend_index(window) {
            let Some(o) = st.inflight.get(i) else { break };
            // Held like first sends (see `hold_outgoing`): after a
            // takeover the state may not be on disk yet.
            let lane = match self.hold_outgoing(st, o.state != OutState::AwaitPubAck) {
                true => Lane::Held,
                false => Lane::Now,
            };
            match o.resend() {
                Resend::Publish(pid, d) => {
                    let qos_pid = QosPid::from_qos(d.qos, pid);
                    self.write_publish(d, qos_pid, true, now, lane);
                }
                Resend::PubRel(pid) => self.send(&Packet::PubRel(PubResp::new(pid)), lane),
            }
        }
    }

    /// Encodes one PUBLISH to this client by `lane`. Returns false when
    /// the message is larger than the client accepts; it is dropped and
    /// counted [MQTT-5: 3.1.2-25]. A large payload sent now is spliced in
    /// rather than copied.
    pub(super) fn write_publish(
        &mut self,
        d: &Delivery,
        qos_pid: QosPid,
        dup: bool,
        now: Instant,
        lane: Lane,
    ) -> bool {
        // Fan-out: what all subscribers share was encoded once (`fanout`);
        // not with Subscription Identifiers or topic aliases, which are this
        // subscriber's own.
        let aliases = self.version.is_v5() && self.client_alias_max > 0;
        if let (Some(head), true) = (d.msg.shared_head(), d.sub_ids.is_empty() && !aliases) {
            let shared = crate::fanout::Delivery {
                version: self.version,
                dup,
                qos_pid,
                retain: d.retain,
                topic_len: d.msg.topic.len(),
                payload: &d.msg.payload,
            };
            let limit = self.client_max_packet as usize;
            let sent = self.outbox.push_shared(head, &shared, limit, lane);
            if sent {
                tracing::debug!(target: "mqtt_broker::packets", "{} <- {}", self.client_id, describe(&Packet::Publish(Publish {
                    dup,
                    qos_pid,
                    retain: d.retain,
                    topic: &d.msg.topic,
                    properties: mqtt_codec::Properties::EMPTY,
                    payload: &d.msg.payload,
                })));
                self.broker.stats.messages_sent.inc();
            }
            return self.published(d, qos_pid, sent, None);
        }
        let mut props = Vec::new();
        let mut topic: &str = &d.msg.topic;
        // A new alias is recorded only once the PUBLISH that sets it is sent.
        let mut new_alias = None;
        if self.version.is_v5() {
            d.msg.push_properties(now, &mut props);
            for id in d.sub_ids.iter() {
                props.push(Property::SubscriptionIdentifier(*id));
            }
            if self.client_alias_max > 0 {
                (topic, new_alias) = self.aliases().outgoing.apply(topic, &mut props);
            }
        }
        let publish = Publish {
            dup,
            qos_pid,
            retain: d.retain,
            topic,
            properties: mqtt_codec::Properties::from_slice(&props),
            payload: &d.msg.payload,
        };
        let packet = Packet::Publish(publish);
        // Spliced only into the write buffer itself, not into held packets.
        let sent = if lane == Lane::Now && d.msg.payload.len() >= SPLICE_MIN {
            self.send_spliced(publish, &d.msg.payload)
        } else {
            self.send_within(&packet, lane, self.client_max_packet as usize)
        };
        self.published(d, qos_pid, sent, new_alias)
    }

    /// The bookkeeping after a PUBLISH to this client was written (`sent`)
    /// or found too large: counters, the new topic alias, or the drop.
    fn published(
        &mut self,
        d: &Delivery,
        qos_pid: QosPid,
        sent: bool,
        new_alias: Option<u16>,
    ) -> bool {
        if !sent {
            self.broker
                .dropped(DropReason::TooLarge, &self.client_id, &d.msg.topic);
            return false;
        }
        if let Some(a) = new_alias {
            self.aliases().outgoing.confirm(d.msg.topic.clone(), a);
        }
        self.broker.stats.publish_sent.inc();
        let q = usize::from(qos_pid.qos().as_u8().min(2));
        self.broker.stats.publish_sent_by_qos[q].inc();
        self.broker.stats.publish_bytes_sent_by_qos[q].add(d.msg.payload.len() as u64);
        true
    }
}
