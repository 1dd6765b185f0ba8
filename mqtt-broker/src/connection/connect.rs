//! The CONNECT exchange (MQTT 5.0 sections 3.1 and 3.2; 3.1.1 sections
//! 3.1 and 3.2): the first packet read within the CONNECT timeout,
//! authentication (password file or TLS identity), the cluster's claim on
//! the client id, the negotiation (`negotiate.rs`), the ACL on the will
//! topic, the session attached, and the CONNACK: accepting, or refusing
//! with the reason code and, for 5.0, a Reason String.

use super::*;

/// Reads and answers the CONNECT: the session is attached and the CONNACK
/// queued, or the client was refused (or never sent one) and `None` returns.
pub(super) async fn open<S: Transport>(incoming: Box<Incoming<S>>) -> Option<Open<S>> {
    let Incoming {
        stream,
        peer,
        broker,
        listener,
        tls_identity,
        pending,
    } = *incoming;
    let (rd, mut wr) = stream.split();
    let mut reader = Reader {
        read_size: MIN_READ,
        io: rd,
        buf: BytesMut::new(),
        max_packet_size: broker.config.max_packet_size,
    };
    let first = tokio::time::timeout(broker.config.connect_timeout(), reader.connect_frame()).await;
    let frame = match first {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => return None,
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT in time: closing");
            return None;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "bad first packet: closing");
            broker.stats.protocol_errors.inc();
            return None;
        }
    };
    broker.stats.messages_received.inc();
    broker.stats.bytes_received.add(frame.bytes.len() as u64);
    if frame.header.packet_type != mqtt_codec::PacketType::Connect {
        // [MQTT-3.1.1/5: 3.1.0-1] the first packet must be CONNECT.
        tracing::debug!(%peer, "first packet is not CONNECT: closing");
        broker.stats.protocol_errors.inc();
        return None;
    }
    // Mosquitto's bridges (`try_private`) set the high bit of the protocol
    // level of a 3.1 / 3.1.1 CONNECT. Accept them, and treat the client as
    // a bridge: it is not sent its own messages back, and retained ones
    // keep their flag (see `Conn::bridge`).
    let (frame, bridge) = unmark_bridge(frame);
    let connect = match decode_body(
        frame.header.packet_type,
        frame.header.flags,
        frame.body(),
        ProtocolVersion::V5,
    ) {
        Ok(Packet::Connect(c)) => c,
        Ok(_) => return None,
        Err(e) => {
            refuse_bad_connect(&mut wr, frame.body(), e, peer).await;
            broker.stats.protocol_errors.inc();
            return None;
        }
    };
    tracing::debug!(target: "mqtt_broker::packets", "{peer} -> {}", describe(&Packet::Connect(connect)));

    let accepted = match authenticate(&broker, &listener, &connect, tls_identity, peer).await {
        Ok(username) => match claim_in_cluster(&broker, &connect).await {
            Ok(()) => Conn::accept(
                &broker,
                &connect,
                &frame,
                peer,
                username.map(String::into_boxed_str),
                bridge,
            ),
            Err(reason) => Err((reason, cluster_refusal_text(reason))),
        },
        Err(e) => Err(e),
    }
    .map_err(|(reason, why)| Refusal {
        reason,
        version: connect.protocol,
        why,
    });
    drop(pending);
    if let Ok(conn) = &accepted {
        confirm_claim(&broker, &connect, &conn.client_id);
        keep_will_in_cluster(&broker, conn).await;
    }
    match accepted {
        Ok(conn) => Some(Open { conn, reader, wr }),
        Err(refusal) => {
            let out = refusal.connack(&connect);
            tracing::info!(%peer, client = connect.client_id, reason = ?refusal.reason, why = refusal.why, "connection refused");
            let _ = tokio::time::timeout(CLOSE_FLUSH, wr.write_all(&out)).await;
            None
        }
    }
}

/// Why a CONNECT is refused: the CONNACK reason code, the version to answer
/// in, and the text of the MQTT 5 Reason String.
pub(super) struct Refusal {
    pub(super) reason: ReasonCode,
    pub(super) version: ProtocolVersion,
    pub(super) why: &'static str,
}

impl Refusal {
    /// The refusing CONNACK. An MQTT 5 client gets a Reason String saying
    /// why, as with the server's DISCONNECTs, unless it set Request Problem
    /// Information to 0 (the specification allows the string on CONNACK
    /// either way [MQTT-5: 3.1.2-29]; the client asked for less) or the
    /// string would take the CONNACK over the client's Maximum Packet Size
    /// [MQTT-5: 3.2.2-19].
    fn connack(&self, c: &Connect<'_>) -> BytesMut {
        let mut wants_text = true;
        let mut max_packet = MAX_PACKET_SIZE;
        for p in c.properties.iter() {
            match p {
                Property::RequestProblemInformation(b) => wants_text = b,
                Property::MaximumPacketSize(n) => max_packet = n,
                _ => {}
            }
        }
        let mut out = BytesMut::new();
        if self.version.is_v5() && wants_text {
            let props = [Property::ReasonString(self.why)];
            let ack = Packet::ConnAck(ConnAck {
                session_present: false,
                reason: self.reason,
                properties: mqtt_codec::Properties::from_slice(&props),
            });
            if push_packet(&mut out, self.version, &ack, max_packet as usize).is_ok() {
                return out;
            }
            out.clear();
        }
        let ack = Packet::ConnAck(ConnAck {
            session_present: false,
            reason: self.reason,
            properties: mqtt_codec::Properties::EMPTY,
        });
        let _ = push_packet(&mut out, self.version, &ack, usize::MAX);
        out
    }
}

/// In a cluster, makes this node the owner of the client id before the
/// session is attached (`cluster::sessions`), taking over the session
/// another node held for it. A client id taken by another node at the same
/// moment is refused with 0x89 Server busy; without NATS, 0x88 Server
/// unavailable (3.1.1: return code 3 for both), as this node cannot tell
/// whether the id is in use elsewhere.
#[cfg(feature = "cluster")]
pub(super) async fn claim_in_cluster(
    broker: &Arc<BrokerState>,
    c: &Connect<'_>,
) -> Result<(), ReasonCode> {
    let Some(cluster) = &broker.cluster else {
        return Ok(());
    };
    // An empty id gets one made unique by the node's name.
    if c.client_id.is_empty() {
        return Ok(());
    }
    let client_id: Arc<str> = c.client_id.into();
    match cluster.claim(&client_id, c.clean_start).await {
        Ok(Some(previous))
            if previous.node != cluster.node() || !broker.has_session(&client_id) =>
        {
            tracing::info!(client = %client_id, from = %previous.node, "cluster: session moves to this node");
            cluster
                .resume(&client_id, previous, broker)
                .await
                .map_err(|_| ReasonCode::ServerUnavailable)
        }
        Ok(_) => {
            cluster.take_session(&client_id);
            Ok(())
        }
        Err(crate::cluster::ClaimError::Lost) => Err(ReasonCode::ServerBusy),
        Err(crate::cluster::ClaimError::Unavailable) => Err(ReasonCode::ServerUnavailable),
    }
}

/// Another node may have claimed the client id between this node's claim
/// and the attach: then the session was handed over before it existed here,
/// so hand it over now (the new connection gets DISCONNECT 0x8E at once).
#[cfg(feature = "cluster")]
pub(super) fn confirm_claim(broker: &Arc<BrokerState>, c: &Connect<'_>, client_id: &Arc<str>) {
    if let Some(cluster) = &broker.cluster {
        if !c.client_id.is_empty() && !cluster.owns(client_id) {
            tracing::info!(client = %client_id, "cluster: client id claimed by another node meanwhile");
            broker.hand_over(client_id);
        }
    }
}

/// In a cluster, writes the connection's will to the cluster before the
/// CONNACK goes out, so another node publishes it if this one dies
/// (`cluster::wills`).
#[cfg(feature = "cluster")]
async fn keep_will_in_cluster(broker: &Arc<BrokerState>, conn: &Conn) {
    let (Some(cluster), Some((msg, delay))) = (&broker.cluster, &conn.will) else {
        return;
    };
    // Handed over already (`confirm_claim`): the will is not this node's.
    if conn.session.lock().generation != conn.generation {
        return;
    }
    cluster
        .keep_will(
            &conn.client_id,
            conn.generation,
            msg,
            *delay,
            conn.expiry_secs,
        )
        .await;
    // Taken over while the will was written: the takeover found nothing
    // to delete yet.
    if conn.session.lock().generation != conn.generation {
        cluster.will_gone(&conn.client_id, conn.generation);
    }
}

#[cfg(not(feature = "cluster"))]
async fn keep_will_in_cluster(_: &Arc<BrokerState>, _: &Conn) {}

#[cfg(not(feature = "cluster"))]
pub(super) fn confirm_claim(_: &Arc<BrokerState>, _: &Connect<'_>, _: &Arc<str>) {}

#[cfg(not(feature = "cluster"))]
pub(super) async fn claim_in_cluster(
    _: &Arc<BrokerState>,
    _: &Connect<'_>,
) -> Result<(), ReasonCode> {
    Ok(())
}

/// The Reason String of a CONNACK refused by `claim_in_cluster`.
pub(super) fn cluster_refusal_text(reason: ReasonCode) -> &'static str {
    if reason == ReasonCode::ServerBusy {
        "the client id is being taken by another node of the cluster"
    } else {
        "the cluster cannot be reached to check the client id"
    }
}

/// Answers an undecodable CONNECT: CONNACK 0x01 (3.1.1) or 0x84 (5.0) for an
/// unknown protocol level [MQTT-3.1.1/5: 3.1.2-2]; a 5.0 client gets the reason code
/// of a malformed CONNECT too. Then the connection closes.
pub(super) async fn refuse_bad_connect<W: AsyncWrite + Unpin>(
    wr: &mut W,
    body: &[u8],
    err: DecodeError,
    peer: SocketAddr,
) {
    tracing::debug!(%peer, error = %err, "bad CONNECT");
    let level = sniff_level(body);
    let (version, reason) = match (err, level) {
        (DecodeError::UnsupportedProtocolVersion(_), _) => (
            ProtocolVersion::V3_1_1,
            ReasonCode::UnsupportedProtocolVersion,
        ),
        (e, Some(5)) => (ProtocolVersion::V5, e.reason_code()),
        _ => return,
    };
    let reason = if version.is_v5() && !reason.allowed_in(mqtt_codec::PacketType::ConnAck) {
        ReasonCode::MalformedPacket
    } else {
        reason
    };
    let ack = Packet::ConnAck(ConnAck {
        session_present: false,
        reason,
        properties: mqtt_codec::Properties::EMPTY,
    });
    let mut out = BytesMut::new();
    if push_packet(&mut out, version, &ack, usize::MAX).is_ok() {
        let _ = tokio::time::timeout(CLOSE_FLUSH, wr.write_all(&out)).await;
    }
}

/// Whether `topic` is the client's own connection state,
/// `$SYS/broker/connection/<client id>/state`: the one `$` topic a client
/// may publish to (and set its will on), because bridges (Mosquitto's, and
/// ours, of any protocol version) report their state there.
pub(super) fn own_state_topic(client_id: &str, topic: &str) -> bool {
    topic
        .strip_prefix("$SYS/broker/connection/")
        .and_then(|rest| rest.strip_suffix("/state"))
        == Some(client_id)
}

/// A CONNECT with the bridge bit (0x80) on a 3.1 / 3.1.1 protocol level,
/// as Mosquitto's bridges send it, becomes a plain one; the flag says
/// whether it was marked.
pub(super) fn unmark_bridge(frame: Frame) -> (Frame, bool) {
    let body = frame.body();
    let Some(name_len) = body
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return (frame, false);
    };
    let at = frame.header.header_len + 2 + name_len;
    match frame.bytes.get(at) {
        Some(0x83 | 0x84) => {
            let mut bytes = frame.bytes.to_vec();
            bytes[at] &= 0x7f;
            let header = frame.header;
            (
                Frame {
                    header,
                    bytes: Bytes::from(bytes),
                },
                true,
            )
        }
        _ => (frame, false),
    }
}

/// The protocol level byte of a CONNECT body, if it can be found.
pub(super) fn sniff_level(body: &[u8]) -> Option<u8> {
    let len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + len).copied()
}

/// A socket's place among those waiting for CONNECT (or in their TLS
/// handshake), held until its CONNECT is answered.
///
/// Taken in the accept loop, before the connection's task is spawned: a
/// count raised by the task itself would let a burst of accepts run ahead
/// of `max_pending_connects` until their tasks first ran.
pub(crate) struct PendingConnect(Arc<BrokerState>);

impl PendingConnect {
    /// A place, unless `max_pending_connects` sockets hold one already.
    pub fn try_take(broker: &Arc<BrokerState>) -> Option<Self> {
        let count = &broker.pending_connects;
        let before = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if before >= broker.config.max_pending_connects {
            count.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        Some(PendingConnect(broker.clone()))
    }
}

impl Drop for PendingConnect {
    fn drop(&mut self) {
        self.0
            .pending_connects
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Decides who the client is: the TLS certificate's name when the listener
/// uses it, else the CONNECT user name checked against the password file.
/// Returns the user name, or the CONNACK reason for a refusal.
pub(super) async fn authenticate(
    broker: &Arc<BrokerState>,
    listener: &ListenerConfig,
    c: &Connect<'_>,
    tls_identity: Option<String>,
    peer: SocketAddr,
) -> Result<Option<String>, (ReasonCode, &'static str)> {
    if c.properties.get(PropertyId::AuthenticationMethod).is_some() {
        // No enhanced authentication method is supported.
        return Err((
            ReasonCode::BadAuthenticationMethod,
            "no enhanced authentication method is supported",
        ));
    }
    let use_identity = listener
        .tls
        .as_ref()
        .is_some_and(|t| t.use_identity_as_username);
    if use_identity {
        if let Some(id) = tls_identity {
            return Ok(Some(id));
        }
    }
    let Some(user) = c.username else {
        if listener.allows_anonymous() {
            return Ok(None);
        }
        broker.stats.auth_failures.inc();
        tracing::warn!(%peer, client = c.client_id, "anonymous client refused");
        return Err((
            ReasonCode::NotAuthorized,
            "this listener does not allow anonymous clients",
        ));
    };
    let security = broker.security.read().clone();
    let Some(passwords) = &security.passwords else {
        // No password file: user names are not checked, as in Mosquitto.
        return Ok(Some(user.to_string()));
    };
    let password = c.password.unwrap_or_default().to_vec();
    let name = user.to_string();
    let ok = {
        let _permit = broker.auth_permits.acquire().await;
        let sec = security.clone();
        let n = name.clone();
        tokio::task::spawn_blocking(move || {
            sec.passwords
                .as_ref()
                .is_some_and(|p| p.verify(&n, &password))
        })
        .await
        .unwrap_or(false)
    };
    let _ = passwords;
    if ok {
        Ok(Some(name))
    } else {
        broker.stats.auth_failures.inc();
        tracing::warn!(%peer, client = c.client_id, user = %name, "bad user name or password");
        Err((
            ReasonCode::BadUserNameOrPassword,
            "bad user name or password",
        ))
    }
}

impl Conn {
    /// Checks a CONNECT and takes over or creates the session. On refusal,
    /// returns the reason and why.
    pub(super) fn accept(
        broker: &Arc<BrokerState>,
        c: &Connect<'_>,
        frame: &Frame,
        peer: SocketAddr,
        username: Option<Box<str>>,
        bridge: bool,
    ) -> Result<Conn, (ReasonCode, &'static str)> {
        let config = &broker.config;
        let v = c.protocol;
        let refuse = |r: ReasonCode, why: &'static str| (r, why);
        // `open` logs a refusal with its reason.
        let n = negotiate(config, c)?;
        let Negotiated {
            expiry_secs,
            capped_expiry,
            receive_max,
            client_max_packet,
            client_alias_max,
            keep_alive,
            server_keep_alive,
            will_delay,
        } = n;

        let mut assigned = None;
        let client_id: Arc<str> = if c.client_id.is_empty() {
            let id = broker.assign_client_id();
            assigned = Some(id.clone());
            id.into()
        } else {
            c.client_id.into()
        };

        let will = match (&c.will, will_delay) {
            (Some(w), Some(delay)) => {
                let publish = Publish {
                    dup: false,
                    qos_pid: QosPid::from_qos(w.qos, Pid::default()),
                    retain: w.retain,
                    topic: w.topic,
                    properties: w.properties,
                    payload: w.payload,
                };
                let payload = frame.bytes.slice_ref(w.payload);
                let msg = Message::from_publish(
                    &publish,
                    w.topic.into(),
                    payload,
                    Some(client_id.clone()),
                    crate::clock::now(),
                );
                Some((Arc::new(msg), delay))
            }
            _ => None,
        };

        let acl = match &broker.security.read().acl {
            Some(acl) => acl.view(username.as_deref(), &client_id),
            None => AclView::allow_all(),
        };
        if let Some(w) = &will {
            // Like a PUBLISH, a will may not go to a `$` topic.
            let dollar = w.0.topic.starts_with('$') && !own_state_topic(&client_id, &w.0.topic);
            if dollar || !acl.can_publish(&w.0.topic) {
                tracing::warn!(%peer, client = %client_id, topic = %w.0.topic, "will topic not allowed");
                return Err(refuse(
                    ReasonCode::NotAuthorized,
                    "the will topic is not allowed",
                ));
            }
        }

        let (kick_tx, kick_rx) = crate::kick::channel();
        let attached = broker.attach(&client_id, c.clean_start, expiry_secs, kick_tx);
        // Stored with the session, so that a crash of the broker (which
        // closes this connection without DISCONNECT) does not lose it.
        broker.keep_will(&attached.session, attached.generation, will.as_ref());

        // CONNACK, with what a 5.0 client needs to know about this server.
        let mut props = Vec::new();
        if v.is_v5() {
            if let Some(id) = &assigned {
                props.push(Property::AssignedClientIdentifier(id));
            }
            if config.receive_maximum < u16::MAX {
                props.push(Property::ReceiveMaximum(config.receive_maximum));
            }
            if config.max_packet_size < MAX_PACKET_SIZE {
                props.push(Property::MaximumPacketSize(config.max_packet_size));
            }
            if config.topic_alias_maximum > 0 {
                props.push(Property::TopicAliasMaximum(config.topic_alias_maximum));
            }
            if !config.retain_available {
                props.push(Property::RetainAvailable(false));
            }
            if config.max_qos < 2 {
                let q = if config.max_qos == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                };
                props.push(Property::MaximumQoS(q));
            }
            if let Some(k) = server_keep_alive {
                props.push(Property::ServerKeepAlive(k));
            }
            if let Some(s) = capped_expiry {
                props.push(Property::SessionExpiryInterval(s));
            }
        }
        let ack = Packet::ConnAck(ConnAck {
            session_present: attached.session_present,
            reason: ReasonCode::Success,
            properties: mqtt_codec::Properties::from_slice(&props),
        });
        let mut out = BytesMut::new();
        // The CONNACK is built from valid parts; encoding cannot fail.
        let _ = push_packet(&mut out, v, &ack, usize::MAX);
        // With `durability = "always"` QoS 1/2 acknowledgements wait for
        // the store; in a cluster, for JetStream.
        let hold_acks = broker.cluster.is_some()
            || broker
                .store
                .as_ref()
                .is_some_and(|s| s.durability() == crate::store::Durability::Always);
        tracing::debug!(target: "mqtt_broker::packets", "{client_id} <- {}", describe(&ack));
        tracing::info!(
            %peer,
            client = %client_id,
            // The authenticated user (or the certificate's Common Name);
            // "-" for an anonymous client, so the field is always there.
            user = %username.as_deref().unwrap_or("-"),
            version = v.level(),
            clean_start = c.clean_start,
            keep_alive,
            session_present = attached.session_present,
            "client connected"
        );

        let conn = Conn {
            broker: broker.clone(),
            session: attached.session,
            generation: attached.generation,
            client_id,
            peer,
            version: v,
            keep_alive_timeout: KeepAliveTimeout::new(keep_alive),
            send_window: receive_max.min(config.max_inflight),
            client_max_packet,
            client_alias_max,
            aliases: None,
            route: None,
            will,
            expiry_secs,
            kick: kick_rx,
            session_present: attached.session_present,
            acl,
            username,
            rate_window: None,
            read_paused_until: None,
            last_rx: crate::clock::now(),
            outbox: Outbox::new(hold_acks, out),
            bridge,
            cluster_waits: LazyVec::default(),
            cluster_qos2: LazyVec::default(),
        };
        Ok(conn)
    }
}
