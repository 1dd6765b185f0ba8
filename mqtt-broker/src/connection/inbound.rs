//! Packets from the client after CONNECT (MQTT 5.0 sections 3.3 to 3.14):
//! PUBLISH (topic aliases, method A for QoS 2, ACLs, the routing), the
//! acknowledgements of messages to the client, SUBSCRIBE with its
//! retained messages, UNSUBSCRIBE, PINGREQ and DISCONNECT.

use super::*;
use mqtt_proto::Outcome;

impl Conn {
    pub(super) fn handle(&mut self, frame: Frame) -> Step {
        let packet = decode_body(
            frame.header.packet_type,
            frame.header.flags,
            frame.body(),
            self.version,
        )
        .map_err(|e| self.decode_error(e))?;
        tracing::debug!(target: "mqtt_broker::packets", "{} -> {}", self.client_id, describe(&packet));
        if !matches!(packet, Packet::Publish(_)) {
            // Held QoS 0 messages go first: whatever this packet does
            // (a SUBSCRIBE's retained messages, an acknowledgement that
            // frees the window) comes after them, as the client sent it.
            self.broker.queue_held(&mut self.route);
        }
        match packet {
            Packet::Publish(p) => self.on_publish(&p, &frame),
            Packet::PubAck(r) => self.on_reply(r.pid, Reply::PubAck(r.reason)),
            Packet::PubRec(r) => self.on_reply(r.pid, Reply::PubRec(r.reason)),
            Packet::PubRel(r) => {
                let known = self.forget_incoming(r.pid.get());
                let mut comp = PubResp::new(r.pid);
                if !known {
                    comp.reason = ReasonCode::PacketIdentifierNotFound;
                }
                self.send(&Packet::PubComp(comp), Lane::Ack);
                Ok(())
            }
            Packet::PubComp(r) => self.on_reply(r.pid, Reply::PubComp(r.reason)),
            Packet::Subscribe(s) => self.on_subscribe(&s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(&u),
            Packet::PingReq => {
                // Whatever was queued for this client before the PINGREQ goes
                // out before the PINGRESP (as in Mosquitto), so a PINGRESP
                // tells the client it has been sent everything due so far.
                // Packets held for the store count as sent before it.
                self.fill();
                let lane = if self.outbox.nothing_held() {
                    Lane::Now
                } else {
                    Lane::Held
                };
                self.send(&Packet::PingResp, lane);
                Ok(())
            }
            Packet::Disconnect(d) => self.on_disconnect(&d),
            Packet::Connect(_) => {
                Err(self.protocol_error(ReasonCode::ProtocolError, "second CONNECT"))
            }
            Packet::Auth(_) => Err(self.protocol_error(
                ReasonCode::ProtocolError,
                "AUTH without an authentication method",
            )),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(self.protocol_error(
                    ReasonCode::ProtocolError,
                    "server-only packet from a client",
                ))
            }
        }
    }

    pub(super) fn on_publish(&mut self, p: &Publish<'_>, frame: &Frame) -> Step {
        self.count_publish();
        let config = &self.broker.config;
        self.broker.stats.publish_received.inc();
        let qos = p.qos_pid.qos();
        let q = usize::from(qos.as_u8().min(2));
        self.broker.stats.publish_received_by_qos[q].inc();
        self.broker.stats.publish_bytes_received_by_qos[q].add(p.payload.len() as u64);
        if qos.as_u8() > config.max_qos {
            return Err(self.protocol_error(ReasonCode::QoSNotSupported, "QoS above the maximum"));
        }
        if p.retain && !config.retain_available {
            return Err(self.protocol_error(ReasonCode::RetainNotSupported, "retain not available"));
        }
        // Topic alias [MQTT-5: 3.3.2-7..12].
        let mut alias = None;
        let mut utf8 = false;
        for prop in p.properties.iter() {
            match prop {
                Property::TopicAlias(a) => alias = Some(a),
                Property::PayloadFormatIndicator(b) => utf8 = b,
                Property::SubscriptionIdentifier(_) => {
                    return Err(self.protocol_error(
                        ReasonCode::ProtocolError,
                        "subscription identifier in PUBLISH from a client",
                    ));
                }
                _ => {}
            }
        }
        let topic: Arc<str> = match alias {
            // The same topic as the last PUBLISH: share its name.
            None => match &self.route {
                Some(r) if *r.topic == *p.topic => r.topic.clone(),
                _ => p.topic.into(),
            },
            // Within the broker's Topic Alias Maximum [MQTT-5: 3.3.2-9, 3.3.2-10].
            Some(a) => match InboundAliases::check(self.broker.config.topic_alias_maximum, a)
                .and_then(|()| self.aliases().incoming.resolve(p.topic, Some(a)))
            {
                Ok(Some(topic)) => topic,
                Ok(None) => p.topic.into(),
                Err(e) => return Err(self.protocol_error(e.reason_code(), e.as_str())),
            },
        };

        if let QosPid::ExactlyOnce(pid) = p.qos_pid {
            let mut st = self.session.lock();
            match st
                .rare_mut()
                .incoming_qos2
                .on_publish(pid, self.broker.config.receive_maximum)
            {
                Ok(Qos2Arrival::New) => {
                    if let (Some(store), true) = (&self.broker.store, st.persistent) {
                        store.put_qos2(&self.client_id, pid.get());
                    }
                }
                Ok(Qos2Arrival::Duplicate) => {
                    // [MQTT-5: 4.3.3-10] a duplicate before PUBREL: acknowledge
                    // again, do not deliver again.
                    drop(st);
                    self.send(&Packet::PubRec(PubResp::new(pid)), Lane::Ack);
                    return Ok(());
                }
                Err(e) => {
                    drop(st);
                    return Err(self.protocol_error(e.reason_code(), "receive maximum exceeded"));
                }
            }
        }

        let mut reason = ReasonCode::Success;
        if utf8 && std::str::from_utf8(p.payload).is_err() {
            reason = ReasonCode::PayloadFormatInvalid;
        } else if (topic.starts_with('$') && !own_state_topic(&self.client_id, &topic))
            || !self.acl.can_publish(&topic)
        {
            // Clients do not publish into `$SYS` or other `$` topics, nor
            // where the ACL does not let them. MQTT 5 says so in the ack;
            // 3.1.1 has no way to, so the message is dropped silently, as the
            // 3.1.1 specification allows.
            reason = ReasonCode::NotAuthorized;
            tracing::debug!(client = %self.client_id, user = ?self.username, %topic, "publish denied");
        } else if self.topic_too_big(&topic) {
            reason = ReasonCode::TopicNameInvalid;
        } else if self
            .broker
            .cluster
            .as_ref()
            // The body holds topic, properties and payload; the subject
            // holds the topic again, escaped (up to three bytes a byte).
            .is_some_and(|c| !c.fits(frame.body().len() + topic.len() * 3))
        {
            // Larger than one NATS message: it could reach only this node's
            // subscribers, so it is refused as a whole.
            tracing::warn!(client = %self.client_id, %topic, size = p.payload.len(), "message too large for the cluster (NATS max_payload): refused");
            reason = ReasonCode::QuotaExceeded;
        } else {
            let payload = frame.bytes.slice_ref(p.payload);
            // The time its bytes were read: one clock read per read, not
            // per message.
            let msg = Message::from_publish(
                p,
                topic.clone(),
                payload,
                Some(self.client_id.clone()),
                self.last_rx,
            );
            let msg = Arc::new(msg);
            let matched = self.broker.publish_cached(msg.clone(), &mut self.route);
            match &self.broker.cluster {
                // Subscribers elsewhere are not known here.
                Some(cluster) => {
                    if let Some(stored) = cluster.forward(&msg) {
                        self.cluster_waits.push(stored);
                        if let QosPid::ExactlyOnce(pid) = p.qos_pid {
                            self.cluster_qos2.push(pid.get());
                        }
                    }
                }
                None if matched == 0 => reason = ReasonCode::NoMatchingSubscribers,
                None => {}
            }
        }
        if reason.is_error() {
            tracing::debug!(client = %self.client_id, %topic, ?reason, "PUBLISH not accepted");
        }
        match p.qos_pid {
            QosPid::AtMostOnce => {}
            QosPid::AtLeastOnce(pid) => {
                let ack = PubResp {
                    reason,
                    ..PubResp::new(pid)
                };
                self.send(&Packet::PubAck(ack), Lane::Ack);
            }
            QosPid::ExactlyOnce(pid) => {
                if reason.is_error() {
                    // A failed PUBREC ends the exchange (MQTT 5.0 section 4.3.3):
                    // forget the identifier.
                    self.forget_incoming(pid.get());
                }
                let rec = PubResp {
                    reason,
                    ..PubResp::new(pid)
                };
                self.send(&Packet::PubRec(rec), Lane::Ack);
            }
        }
        Ok(())
    }

    /// An acknowledgement of a message to this client: a finished one is
    /// forgotten (in the store too), a released one stored as such, and a
    /// PUBREL sent where the table says so.
    pub(super) fn on_reply(&mut self, pid: Pid, reply: Reply) -> Step {
        let mut st = self.session.lock();
        let rel = match st.inflight.on_reply(pid, reply) {
            Outcome::Completed { item, .. } => {
                self.broker.forget_message(&self.session, &st, &item);
                if let Reply::PubRec(_) = reply {
                    // The receiver refused the message: room in the window.
                    drop(st);
                    self.fill();
                }
                return Ok(());
            }
            Outcome::Ignored => return Ok(()),
            Outcome::Released { index, .. } => {
                if let Some(o) = st.inflight.get(index) {
                    self.broker.message_state(
                        &self.session,
                        &st,
                        &o.item,
                        StoredState::Released(pid.get()),
                    );
                }
                PubResp::new(pid)
            }
            Outcome::SendPubRel(pid, reason) => PubResp {
                reason,
                ..PubResp::new(pid)
            },
        };
        let hold = self.hold_outgoing(&st, true);
        drop(st);
        if hold {
            self.send(&Packet::PubRel(rel), Lane::Held);
        } else {
            self.send(&Packet::PubRel(rel), Lane::Now);
        }
        Ok(())
    }

    /// Forgets an incoming QoS 2 identifier; returns whether it was known.
    pub(super) fn forget_incoming(&self, pid: u16) -> bool {
        let mut st = self.session.lock();
        let known = st.rare_if().is_some_and(|r| r.incoming_qos2.remove(pid));
        if let (Some(store), true, true) = (&self.broker.store, st.persistent, known) {
            store.del_qos2(&self.client_id, pid);
        }
        known
    }

    pub(super) fn on_subscribe(&mut self, s: &Subscribe<'_>) -> Step {
        let config = &self.broker.config;
        let sub_id = s.properties.subscription_identifiers().next();
        let mut codes = Vec::with_capacity(4);
        let mut retained = Vec::new();
        let now = crate::clock::now();
        #[allow(unused_mut)]
        let mut share_joined = false;
        for f in s.filters.iter() {
            if let Some(refusal) = self.check_subscription(f.filter) {
                codes.push(refusal);
                continue;
            }
            let granted =
                QoS::from_u8(f.options.qos.as_u8().min(config.max_qos)).unwrap_or_default();
            let shared = split_filter(f.filter).0.is_some();
            let options = SubscriptionOptions {
                qos: granted,
                no_local: f.options.no_local || (self.bridge && !shared),
                retain_as_published: f.options.retain_as_published || self.bridge,
                ..f.options
            };
            codes.push(match granted {
                QoS::AtMostOnce => ReasonCode::Success,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            });
            // Retained messages, except for shared subscriptions (MQTT 5.0,
            // Shared Subscriptions) and as Retain Handling says; read with
            // the subscription's insertion, so a retained PUBLISH racing
            // this SUBSCRIBE arrives once, live or retained, not both.
            let (group, plain) = split_filter(f.filter);
            #[cfg(feature = "cluster")]
            if let (Some(c), Some(g)) = (&self.broker.cluster, group) {
                // The SUBACK waits until this node takes the group's
                // messages from the cluster.
                self.cluster_waits
                    .push(c.join_share(&self.broker, g, plain));
                share_joined = true;
            }
            let record = SubRecord { options, sub_id };
            self.broker
                .subscribe_then(&self.session, f.filter, record, |existed, store| {
                    let send_retained = group.is_none()
                        && match options.retain_handling {
                            RetainHandling::SendOnSubscribe => true,
                            RetainHandling::SendIfNew => !existed,
                            RetainHandling::DoNotSend => false,
                        };
                    if send_retained {
                        for msg in store.matching(plain, now) {
                            retained.push(Delivery {
                                qos: msg.qos.min(granted),
                                retain: true,
                                sub_ids: sub_id.into_iter().collect(),
                                seq: 0,
                                msg,
                            });
                        }
                    }
                });
        }
        let ack = SubAck {
            pid: s.pid,
            properties: mqtt_codec::Properties::EMPTY,
            codes: List::from_slice(&codes),
        };
        // A stored session's subscriptions are durable before they are
        // acknowledged, like its messages.
        if share_joined || self.session.lock().persistent {
            if let Some(c) = &self.broker.cluster {
                // ... and written to the cluster's session record.
                self.cluster_waits.push(c.records_written());
            }
            self.send(&Packet::SubAck(ack), Lane::Ack);
        } else {
            self.send(&Packet::SubAck(ack), Lane::Now);
        }
        for d in retained {
            self.session.enqueue(d, &self.broker, true);
        }
        self.fill();
        Ok(())
    }

    /// The SUBACK failure for a filter this client may not subscribe to.
    pub(super) fn check_subscription(&self, filter: &str) -> Option<ReasonCode> {
        let config = &self.broker.config;
        if self.topic_too_big(filter) {
            return Some(ReasonCode::TopicFilterInvalid);
        }
        if !self.acl.can_subscribe(filter) {
            tracing::debug!(client = %self.client_id, user = ?self.username, filter, "subscribe denied");
            return Some(ReasonCode::NotAuthorized);
        }
        if config.max_subscriptions_per_client > 0 {
            let st = self.session.lock();
            let replacing = st.subscriptions.contains_key(filter);
            if !replacing && st.subscriptions.len() >= config.max_subscriptions_per_client {
                return Some(ReasonCode::QuotaExceeded);
            }
        }
        None
    }

    /// Whether a topic or filter exceeds the configured length or depth.
    pub(super) fn topic_too_big(&self, topic: &str) -> bool {
        let config = &self.broker.config;
        (config.max_topic_length > 0 && topic.len() > config.max_topic_length)
            || (config.max_topic_levels > 0 && topic.split('/').count() > config.max_topic_levels)
    }

    /// Counts a PUBLISH against `max_publish_rate`; a client over its rate
    /// is neither read from nor has its already-read packets handled until
    /// the current second ends, so a flood slows the flooder without
    /// starving anyone else.
    pub(super) fn count_publish(&mut self) {
        let limit = self.broker.config.max_publish_rate;
        if limit == 0 {
            return;
        }
        let now = crate::clock::now();
        let (start, count) = &mut **self.rate_window.get_or_insert_with(|| Box::new((now, 0)));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count >= limit {
            self.read_paused_until = Some(*start + Duration::from_secs(1));
        }
    }

    pub(super) fn on_unsubscribe(&mut self, u: &Unsubscribe<'_>) -> Step {
        let codes: Vec<ReasonCode> = u
            .filters
            .iter()
            .map(|f| {
                if self.broker.unsubscribe(&self.session, f) {
                    ReasonCode::Success
                } else {
                    ReasonCode::NoSubscriptionExisted
                }
            })
            .collect();
        let ack = UnsubAck {
            pid: u.pid,
            properties: mqtt_codec::Properties::EMPTY,
            codes: List::from_slice(&codes),
        };
        // A stored session's subscriptions are durable before they are
        // acknowledged, like its messages.
        if self.session.lock().persistent {
            if let Some(c) = &self.broker.cluster {
                // ... and written to the cluster's session record.
                self.cluster_waits.push(c.records_written());
            }
            self.send(&Packet::UnsubAck(ack), Lane::Ack);
        } else {
            self.send(&Packet::UnsubAck(ack), Lane::Now);
        }
        Ok(())
    }

    pub(super) fn on_disconnect(&mut self, d: &Disconnect<'_>) -> Step {
        for p in d.properties.iter() {
            if let Property::SessionExpiryInterval(s) = p {
                // [MQTT-5: 3.14.2-2] a session that was to end with the
                // connection cannot be given an expiry now.
                if self.expiry_secs == 0 && s != 0 {
                    return Err(self.protocol_error(
                        ReasonCode::ProtocolError,
                        "session expiry set on DISCONNECT after 0",
                    ));
                }
                self.expiry_secs = match self.broker.config.max_session_expiry_secs {
                    Some(max) => s.min(max),
                    None => s,
                };
            }
        }
        Err(Close::Disconnect {
            will: d.reason != ReasonCode::Success,
        })
    }
}
