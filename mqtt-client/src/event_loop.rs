//! The background task that owns the connection: it connects, keeps the
//! connection alive, runs the QoS flows, and reconnects with exponential
//! backoff and jitter, resuming the session (every unacknowledged PUBLISH
//! again with DUP, every PUBREL again) or restoring the subscriptions when
//! the server lost it.
//!
//! It never waits on the application: commands are taken only when the
//! inflight window has room, and incoming messages that the application has
//! not taken yet wait in a backlog while reading from the socket pauses.
//!
//! A QoS 1 or 2 message that has to wait in the backlog is acknowledged
//! only when the application takes it, so the server's inflight window
//! (our Receive Maximum) bounds the backlog. Reading goes on while the
//! client awaits an answer of its own (PUBACK, PUBREC, PUBCOMP, SUBACK,
//! UNSUBACK, PINGRESP): that answer may sit behind messages the
//! application has not taken, and the application may be waiting for it,
//! e.g. when it publishes from its message loop.
//!
//! The protocol state itself (packet identifiers, the QoS 1/2 flows and
//! their legal replies, incoming QoS 2 identifiers, topic aliases, the ping
//! schedule, framing) is `mqtt-proto`'s, shared with the broker: this file
//! turns its outcomes into completed futures and bytes on the socket.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use mqtt_codec::{
    decode_body, ConnAck, Connect, Disconnect, EncodeError, LastWill, List, Packet, Pid,
    Properties, Property, ProtocolVersion, PubResp, Publish, QoS, QosPid, ReasonCode, Subscribe,
    SubscribeFilter, SubscriptionOptions, Unsubscribe, MAX_PACKET_SIZE,
};
use mqtt_proto::{
    next_frame, InboundAliases, IncomingQos2, Inflight, OutboundAliases, Outcome, PidAllocator,
    PingAction, PingSchedule, Qos2Arrival, Reply, Resend,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::client::{Command, Shared};
use crate::error::ClientError;
use crate::events::ClientEvent;
use crate::message::{Message, OutgoingMessage};
use crate::options::ConnectOptions;
use crate::transport::{self, Stream};

type Done<T> = oneshot::Sender<Result<T, ClientError>>;

/// Longest wait, on `disconnect`, for the PUBREL of QoS 2 messages received.
const STOP_LINGER: Duration = Duration::from_secs(5);

/// Stop taking commands while this much waits to be written.
const WRITE_HIGH_WATER: usize = 256 * 1024;

/// An outgoing QoS 1/2 message in flight (its state is `Inflight`'s).
struct InFlight {
    msg: OutgoingMessage,
    done: Option<Done<ReasonCode>>,
}

impl InFlight {
    /// Completes the application's future with the outcome the server told.
    fn complete(self, reason: ReasonCode) {
        if let Some(d) = self.done {
            let result = if reason.is_error() {
                Err(ClientError::Rejected(reason))
            } else {
                Ok(reason)
            };
            let _ = d.send(result);
        }
    }
}

/// The acknowledgement an incoming message still owes the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    PubAck(Pid),
    PubRec(Pid),
}

/// A received message the application has not taken yet.
struct Waiting {
    msg: Message,
    /// Sent when the application takes the message.
    ack: Option<Ack>,
}

enum Request {
    Subscribe {
        filters: Vec<(String, SubscriptionOptions)>,
        sub_id: Option<u32>,
        done: Option<Done<Vec<ReasonCode>>>,
    },
    Unsubscribe {
        filters: Vec<String>,
        done: Option<Done<Vec<ReasonCode>>>,
    },
}

/// What the server told us in CONNACK.
#[derive(Debug, Clone, Copy)]
struct ServerLimits {
    receive_maximum: u16,
    max_packet_size: u32,
    topic_alias_maximum: u16,
    keep_alive: Duration,
}

/// A connected stream and whatever was read past the CONNACK.
pub(crate) struct Connection {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    session_present: bool,
}

enum Exit {
    Stopped,
    Lost(ClientError),
}

pub(crate) struct EventLoop {
    opts: ConnectOptions,
    commands: mpsc::Receiver<Command>,
    incoming: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    pids: PidAllocator,
    inflight: Inflight<InFlight>,
    incoming_qos2: IncomingQos2,
    requests: HashMap<u16, Request>,
    /// Granted subscriptions, to restore when the server lost the session.
    subscriptions: Vec<(String, SubscriptionOptions, Option<u32>)>,
    server: ServerLimits,
    in_aliases: InboundAliases,
    out_aliases: OutboundAliases,
    backlog: VecDeque<Waiting>,
    /// Packet identifiers of backlog messages not acknowledged yet: a
    /// redelivery of one of them (DUP, after a reconnection) is the same
    /// message, already waiting.
    unacked: HashSet<u16>,
    /// QoS 0 publishes that complete once the write buffer is flushed.
    flush_waiters: Vec<Done<ReasonCode>>,
    assigned_client_id: Option<String>,
}

impl EventLoop {
    pub(crate) fn new(
        opts: ConnectOptions,
        commands: mpsc::Receiver<Command>,
        incoming: mpsc::Sender<Message>,
        shared: Arc<Shared>,
    ) -> Self {
        let keep_alive = opts.keep_alive;
        EventLoop {
            opts,
            commands,
            incoming,
            shared,
            pids: PidAllocator::new(),
            inflight: Inflight::new(),
            incoming_qos2: IncomingQos2::new(),
            requests: HashMap::new(),
            subscriptions: Vec::new(),
            server: ServerLimits {
                receive_maximum: u16::MAX,
                max_packet_size: MAX_PACKET_SIZE,
                topic_alias_maximum: 0,
                keep_alive,
            },
            in_aliases: InboundAliases::new(0),
            out_aliases: OutboundAliases::new(0),
            backlog: VecDeque::new(),
            unacked: HashSet::new(),
            flush_waiters: Vec::new(),
            assigned_client_id: None,
        }
    }

    /// Tells the application's hook, if any, what happened.
    fn emit(&self, event: &ClientEvent<'_>) {
        if let Some(hook) = &self.opts.on_event {
            hook.call(event);
        }
    }

    fn version(&self) -> ProtocolVersion {
        self.opts.version
    }

    /// A packet identifier that no message in flight and no request
    /// awaiting its answer uses; `None` when all 65,535 are taken.
    fn next_pid(&mut self) -> Option<Pid> {
        let (inflight, requests) = (&self.inflight, &self.requests);
        self.pids
            .next(|p| inflight.contains(p) || requests.contains_key(&p))
    }

    /// Opens the transport, sends CONNECT and waits for CONNACK.
    pub(crate) async fn establish(&mut self) -> Result<Connection, ClientError> {
        let timeout = self.opts.connect_timeout;
        tokio::time::timeout(timeout, self.establish_inner())
            .await
            .unwrap_or(Err(ClientError::Timeout))
    }

    async fn establish_inner(&mut self) -> Result<Connection, ClientError> {
        let mut stream = transport::open(&self.opts).await?;
        let o = &self.opts;
        let v5 = o.version.is_v5();
        let mut props = Vec::new();
        let mut will_props = Vec::new();
        if v5 {
            if o.session_expiry_secs > 0 {
                props.push(Property::SessionExpiryInterval(o.session_expiry_secs));
            }
            if let Some(r) = o.receive_maximum {
                props.push(Property::ReceiveMaximum(r));
            }
            if let Some(m) = o.max_packet_size {
                props.push(Property::MaximumPacketSize(m));
            }
            if o.topic_alias_maximum > 0 {
                props.push(Property::TopicAliasMaximum(o.topic_alias_maximum));
            }
            for (k, v) in &o.user_properties {
                props.push(Property::UserProperty(k, v));
            }
            if let Some(w) = &o.will {
                if let Some(d) = w.delay_secs {
                    will_props.push(Property::WillDelayInterval(d));
                }
                w.properties.push_to(&mut will_props);
            }
        }
        // A reconnection after the server assigned an identifier reuses it,
        // so the session can be resumed.
        let client_id = match (&self.assigned_client_id, o.client_id.is_empty()) {
            (Some(id), true) => id.as_str(),
            _ => o.client_id.as_str(),
        };
        let connect = Connect {
            protocol: o.version,
            clean_start: o.clean_start,
            keep_alive: o.keep_alive.as_secs().min(u64::from(u16::MAX)) as u16,
            properties: Properties::from_slice(&props),
            client_id,
            will: o.will.as_ref().map(|w| LastWill {
                topic: &w.topic,
                payload: &w.payload,
                qos: w.qos,
                retain: w.retain,
                properties: Properties::from_slice(&will_props),
            }),
            username: o.username.as_deref(),
            password: o.password.as_deref(),
        };
        let mut out = BytesMut::new();
        let packet = Packet::Connect(connect);
        packet
            .encode_to(o.version, &mut out, usize::MAX)
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.emit(&ClientEvent::Sent(&packet));
        stream
            .write_all(&out)
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))?;

        let mut buf = BytesMut::with_capacity(256);
        let (header, frame) = loop {
            // 0x15 / 0x16 open a TLS alert / handshake record: a TLS port
            // answering plain MQTT. Say so rather than "invalid header".
            if o.tls.is_none() && matches!(buf.first(), Some(0x15 | 0x16)) {
                return Err(ClientError::Connection(format!(
                    "{}:{} answered with TLS (first byte {:#04x}): it looks like a TLS port; \
                     connect with TLS",
                    o.host, o.port, buf[0]
                )));
            }
            if let Some(f) = next_frame(&mut buf, MAX_PACKET_SIZE)
                .map_err(|e| ClientError::Protocol(e.to_string()))?
            {
                break (f.header, f.bytes);
            }
            let n = stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| ClientError::Connection(e.to_string()))?;
            if n == 0 {
                return Err(ClientError::Connection(
                    "closed by the server before CONNACK".into(),
                ));
            }
        };
        let packet = decode_body(
            header.packet_type,
            header.flags,
            &frame[header.header_len..],
            o.version,
        )
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.emit(&ClientEvent::Received(&packet));
        let Packet::ConnAck(ack) = packet else {
            return Err(ClientError::Protocol("expected CONNACK".into()));
        };
        if ack.reason.is_error() {
            return Err(ClientError::Refused(ack.reason));
        }
        self.apply_connack(&ack);
        tracing::debug!(session_present = ack.session_present, "connected");
        Ok(Connection {
            stream,
            buf,
            session_present: ack.session_present,
        })
    }

    fn apply_connack(&mut self, ack: &ConnAck<'_>) {
        self.server = ServerLimits {
            receive_maximum: u16::MAX,
            max_packet_size: MAX_PACKET_SIZE,
            topic_alias_maximum: 0,
            keep_alive: self.opts.keep_alive,
        };
        for p in ack.properties.iter() {
            match p {
                Property::ReceiveMaximum(n) => self.server.receive_maximum = n,
                Property::MaximumPacketSize(n) => self.server.max_packet_size = n,
                Property::TopicAliasMaximum(n) => self.server.topic_alias_maximum = n,
                Property::ServerKeepAlive(k) => {
                    self.server.keep_alive = Duration::from_secs(u64::from(k))
                }
                Property::AssignedClientIdentifier(id) => {
                    self.assigned_client_id = Some(id.to_owned())
                }
                _ => {}
            }
        }
        // Aliases last as long as the connection [MQTT-5: 3.3.2-7].
        self.in_aliases = InboundAliases::new(self.opts.topic_alias_maximum);
        self.out_aliases = OutboundAliases::new(self.server.topic_alias_maximum);
    }

    /// Runs until `disconnect`, or until the connection is lost and
    /// reconnection is off.
    pub(crate) async fn run(
        mut self,
        first: Connection,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut conn = first;
        loop {
            let exit = self.run_connected(conn, &mut stop).await;
            self.shared.connected.store(false, Ordering::Release);
            let err = match exit {
                Exit::Stopped => break,
                Exit::Lost(e) => e,
            };
            tracing::debug!(error = %err, "connection lost");
            self.emit(&ClientEvent::ConnectionLost(&err));
            for w in self.flush_waiters.drain(..) {
                let _ = w.send(Err(err.clone()));
            }
            if !self.opts.reconnect {
                self.fail_all(&err);
                return;
            }
            let mut backoff = self.opts.min_backoff;
            conn = loop {
                let delay = jitter(backoff);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => { self.fail_all(&ClientError::Closed); return; }
                }
                match self.establish().await {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::debug!(error = %e, "reconnect failed");
                        self.emit(&ClientEvent::ReconnectFailed(&e));
                        backoff = (backoff * 2).min(self.opts.max_backoff);
                    }
                }
            };
            self.shared.connected.store(true, Ordering::Release);
            self.emit(&ClientEvent::Reconnected {
                session_present: conn.session_present,
            });
        }
        self.fail_all(&ClientError::Closed);
    }

    fn fail_all(&mut self, err: &ClientError) {
        for o in self.inflight.drain() {
            if let Some(d) = o.item.done {
                let _ = d.send(Err(err.clone()));
            }
        }
        for (_, r) in self.requests.drain() {
            match r {
                Request::Subscribe { done: Some(d), .. }
                | Request::Unsubscribe { done: Some(d), .. } => {
                    let _ = d.send(Err(err.clone()));
                }
                _ => {}
            }
        }
        for w in self.flush_waiters.drain(..) {
            let _ = w.send(Err(err.clone()));
        }
    }

    fn window(&self) -> usize {
        usize::from(self.opts.max_inflight.min(self.server.receive_maximum)).max(1)
    }

    async fn run_connected(
        &mut self,
        conn: Connection,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Exit {
        let Connection {
            stream,
            buf,
            session_present,
        } = conn;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut rbuf = buf;
        let mut out = BytesMut::new();
        self.resume(session_present, &mut out);
        if let Err(e) = self.drain_frames(&mut rbuf, &mut out) {
            return self.end_on(e, &mut wr, &mut out).await;
        }
        let keep_alive = self.server.keep_alive;
        // A local handle, so that a reserved slot does not borrow `self`.
        let incoming = self.incoming.clone();
        let mut ping = PingSchedule::new(keep_alive, Instant::now());
        // Set by `disconnect` while a QoS 2 message we received still
        // awaits its PUBREL: the exchange is finished first (briefly), so
        // the server does not keep it for a session that may never return.
        let mut stopping: Option<Instant> = None;
        loop {
            if let Some(deadline) = stopping {
                if !self.awaiting_pubrel() || Instant::now() >= deadline {
                    return self.close(&mut wr, &mut out).await;
                }
            }
            let ping_at = ping.poll_timeout();
            let take_commands = self.inflight.len() < self.window() && out.len() < WRITE_HIGH_WATER;
            // Past the application's capacity, read only while an answer
            // is awaited; QoS 1/2 messages read meanwhile stay
            // unacknowledged, which stops the server at its inflight window.
            let read_open = self.backlog.len() < self.opts.incoming_capacity
                || !self.inflight.is_empty()
                || !self.requests.is_empty()
                || ping.awaiting_pingresp();
            tokio::select! {
                biased;
                _ = stop.changed(), if stopping.is_none() => {
                    if self.awaiting_pubrel() {
                        stopping = Some(Instant::now() + STOP_LINGER);
                        continue;
                    }
                    return self.close(&mut wr, &mut out).await;
                }
                _ = sleep_until_opt(stopping) => continue,
                written = wr.write(&out), if !out.is_empty() => match written {
                    Ok(0) | Err(_) => return Exit::Lost(ClientError::Connection("write failed".into())),
                    Ok(n) => {
                        out.advance(n);
                        ping.on_sent(Instant::now());
                        if out.is_empty() {
                            for w in self.flush_waiters.drain(..) {
                                let _ = w.send(Ok(ReasonCode::Success));
                            }
                        }
                    }
                },
                read = rd.read_buf(&mut rbuf), if read_open => match read {
                    Ok(0) => return Exit::Lost(ClientError::Connection("closed by the server".into())),
                    Err(e) => return Exit::Lost(ClientError::Connection(e.to_string())),
                    Ok(_) => {
                        ping.on_received();
                        if let Err(e) = self.drain_frames(&mut rbuf, &mut out) {
                            return self.end_on(e, &mut wr, &mut out).await;
                        }
                    }
                },
                permit = incoming.reserve(), if !self.backlog.is_empty() => {
                    match permit {
                        Ok(p) => {
                            if let Some(w) = self.backlog.pop_front() {
                                p.send(w.msg);
                                self.send_ack(w.ack, &mut out);
                            }
                        }
                        // Nobody listens for messages any more.
                        Err(_) => {
                            for w in std::mem::take(&mut self.backlog) {
                                self.send_ack(w.ack, &mut out);
                            }
                        }
                    }
                }
                cmd = self.commands.recv(), if take_commands && stopping.is_none() => match cmd {
                    Some(cmd) => self.handle_command(cmd, &mut out),
                    // Every handle is gone: nothing more can be asked.
                    None => {
                        self.shared.stop.send_replace(true);
                    }
                },
                _ = sleep_until_opt(ping_at) => match ping.handle_timeout(Instant::now()) {
                    // No PINGRESP within keep alive: the connection is dead.
                    PingAction::Dead => return Exit::Lost(ClientError::Timeout),
                    PingAction::SendPing => self.send(&mut out, &Packet::PingReq),
                    PingAction::Wait => {}
                }
            }
        }
    }

    /// Ends the connection on what the server sent: an MQTT 5 server that
    /// broke the protocol is told why in a DISCONNECT first (MQTT 5.0
    /// section 4.13.1); then the connection is lost (and reconnected as usual).
    async fn end_on<W: tokio::io::AsyncWrite + Unpin>(
        &mut self,
        e: ReadError,
        wr: &mut W,
        out: &mut BytesMut,
    ) -> Exit {
        if let (ReadError::Violation(reason, text), true) = (&e, self.version().is_v5()) {
            tracing::warn!(reason = ?reason, "{text}: disconnecting");
            let reason = if reason.allowed_in(mqtt_codec::PacketType::Disconnect) {
                *reason
            } else {
                ReasonCode::ProtocolError
            };
            out.clear();
            self.send(out, &Packet::Disconnect(Disconnect::new(reason)));
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                wr.write_all(out).await?;
                wr.flush().await?;
                wr.shutdown().await
            })
            .await;
        }
        Exit::Lost(e.into_error())
    }

    /// Whether a QoS 2 message we received and answered with PUBREC still
    /// awaits the server's PUBREL.
    fn awaiting_pubrel(&self) -> bool {
        self.incoming_qos2
            .iter()
            .any(|pid| !self.unacked.contains(&pid))
    }

    /// Sends DISCONNECT after what is already queued, closes, and completes
    /// the QoS 0 publishes that were written.
    async fn close(
        &mut self,
        wr: &mut tokio::io::WriteHalf<Box<dyn Stream>>,
        out: &mut BytesMut,
    ) -> Exit {
        self.send(out, &Packet::Disconnect(Disconnect::NORMAL));
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            wr.write_all(out).await?;
            wr.flush().await?;
            wr.shutdown().await
        })
        .await;
        for w in self.flush_waiters.drain(..) {
            let _ = w.send(Ok(ReasonCode::Success));
        }
        Exit::Stopped
    }

    /// After CONNACK: resend what the session still owes, or restore the
    /// subscriptions when the server has no session.
    fn resume(&mut self, session_present: bool, out: &mut BytesMut) {
        // Subscribe / unsubscribe requests that were not answered, taken
        // before the restored subscriptions are sent (themselves requests).
        let pending: Vec<Request> = self.requests.drain().map(|(_, r)| r).collect();
        if !session_present {
            self.incoming_qos2.clear();
            // Messages still waiting for the application are kept, but the
            // server no longer expects their acknowledgements.
            for w in self.backlog.iter_mut() {
                w.ack = None;
            }
            self.unacked.clear();
            // One SUBSCRIBE per Subscription Identifier: a packet carries
            // at most one.
            let mut ids: Vec<Option<u32>> = Vec::new();
            for (_, _, id) in &self.subscriptions {
                if !ids.contains(id) {
                    ids.push(*id);
                }
            }
            for sub_id in ids {
                let filters: Vec<(String, SubscriptionOptions)> = self
                    .subscriptions
                    .iter()
                    .filter(|(_, _, id)| *id == sub_id)
                    .map(|(f, o, _)| (f.clone(), *o))
                    .collect();
                self.send_request(
                    out,
                    Request::Subscribe {
                        filters,
                        sub_id,
                        done: None,
                    },
                );
            }
        }
        for r in pending {
            self.send_request(out, r);
        }
        // Every unacknowledged PUBLISH again with DUP, every PUBREL again
        // [MQTT-3.1.1/5: 4.4.0-1]. Without a session on the server, the
        // QoS 2 exchanges that got PUBREC are complete: it had the message.
        for (o, reason) in self.inflight.resume(session_present) {
            o.complete(reason);
        }
        self.resend_due(out);
    }

    /// Resends what a reconnection owes, as far as the server's Receive
    /// Maximum allows [MQTT-5: 3.3.4-9]; the rest follows as
    /// acknowledgements free the window.
    fn resend_due(&mut self, out: &mut BytesMut) {
        let window = self.window();
        while let Some(r) = self.inflight.next_resend(window) {
            match r {
                Resend::PubRel(pid) => self.send(out, &Packet::PubRel(PubResp::new(pid))),
                Resend::Publish(pid, o) => {
                    let msg = o.msg.clone();
                    let _ = self.write_publish(out, &msg, QosPid::from_qos(msg.qos, pid), true);
                }
            }
        }
    }

    fn send(&self, out: &mut BytesMut, packet: &Packet<'_>) {
        match packet.encode_to(self.version(), out, usize::MAX) {
            Ok(_) => self.emit(&ClientEvent::Sent(packet)),
            Err(e) => tracing::warn!(error = %e, "packet not encodable"),
        }
    }

    fn handle_command(&mut self, cmd: Command, out: &mut BytesMut) {
        match cmd {
            Command::Publish { msg, done } => {
                if msg.qos == QoS::AtMostOnce {
                    match self.write_publish(out, &msg, QosPid::AtMostOnce, false) {
                        Ok(()) => self.flush_waiters.push(done),
                        Err(e) => {
                            let _ = done.send(Err(e));
                        }
                    }
                    return;
                }
                let Some(pid) = self.next_pid() else {
                    let _ = done.send(Err(no_free_pid()));
                    return;
                };
                match self.write_publish(out, &msg, QosPid::from_qos(msg.qos, pid), false) {
                    Ok(()) => {
                        let qos = msg.qos;
                        let item = InFlight {
                            msg,
                            done: Some(done),
                        };
                        // QoS 0 returned above: the push takes the message.
                        if let Err(item) = self.inflight.push(pid, qos, item) {
                            item.complete(ReasonCode::Success);
                        }
                    }
                    Err(e) => {
                        let _ = done.send(Err(e));
                    }
                }
            }
            Command::Subscribe {
                filters,
                sub_id,
                done,
            } => self.send_request(
                out,
                Request::Subscribe {
                    filters,
                    sub_id,
                    done: Some(done),
                },
            ),
            Command::Unsubscribe { filters, done } => self.send_request(
                out,
                Request::Unsubscribe {
                    filters,
                    done: Some(done),
                },
            ),
        }
    }

    fn send_request(&mut self, out: &mut BytesMut, req: Request) {
        let Some(pid) = self.next_pid() else {
            if let Request::Subscribe { done: Some(d), .. }
            | Request::Unsubscribe { done: Some(d), .. } = req
            {
                let _ = d.send(Err(no_free_pid()));
            }
            return;
        };
        let mut props = Vec::new();
        match &req {
            Request::Subscribe {
                filters, sub_id, ..
            } => {
                if let (Some(id), true) = (sub_id, self.version().is_v5()) {
                    props.push(Property::SubscriptionIdentifier(*id));
                }
                let entries: Vec<SubscribeFilter<'_>> = filters
                    .iter()
                    .map(|(f, o)| SubscribeFilter {
                        filter: f,
                        options: *o,
                    })
                    .collect();
                let packet = Packet::Subscribe(Subscribe {
                    pid,
                    properties: Properties::from_slice(&props),
                    filters: List::from_slice(&entries),
                });
                self.send(out, &packet);
            }
            Request::Unsubscribe { filters, .. } => {
                let names: Vec<&str> = filters.iter().map(String::as_str).collect();
                let packet = Packet::Unsubscribe(Unsubscribe {
                    pid,
                    properties: Properties::EMPTY,
                    filters: List::from_slice(&names),
                });
                self.send(out, &packet);
            }
        }
        self.requests.insert(pid.get(), req);
    }

    fn write_publish(
        &mut self,
        out: &mut BytesMut,
        msg: &OutgoingMessage,
        qos_pid: QosPid,
        dup: bool,
    ) -> Result<(), ClientError> {
        let mut props = Vec::new();
        let mut topic = msg.topic.as_str();
        // A new alias is recorded only once the PUBLISH that sets it is
        // encoded (it may be over the server's Maximum Packet Size).
        let mut new_alias = None;
        if self.version().is_v5() {
            msg.properties.push_to(&mut props);
            (topic, new_alias) = self.out_aliases.apply(topic, &mut props);
        }
        let packet = Packet::Publish(Publish {
            dup,
            qos_pid,
            retain: msg.retain,
            topic,
            properties: Properties::from_slice(&props),
            payload: &msg.payload,
        });
        match packet.encode_to(self.version(), out, self.server.max_packet_size as usize) {
            Ok(_) => {
                if let Some(a) = new_alias {
                    self.out_aliases.confirm(msg.topic.as_str().into(), a);
                }
                self.emit(&ClientEvent::Sent(&packet));
                Ok(())
            }
            // Over the server's Maximum Packet Size.
            Err(EncodeError::BufferTooSmall { .. }) => {
                Err(ClientError::Rejected(ReasonCode::PacketTooLarge))
            }
            Err(e) => Err(ClientError::Invalid(e.to_string())),
        }
    }

    fn drain_frames(&mut self, rbuf: &mut BytesMut, out: &mut BytesMut) -> Result<(), ReadError> {
        loop {
            let limit = self.opts.max_packet_size.unwrap_or(MAX_PACKET_SIZE);
            let Some(f) = next_frame(rbuf, limit).map_err(ReadError::decode)? else {
                return Ok(());
            };
            let (header, frame) = (f.header, f.bytes);
            let packet = decode_body(
                header.packet_type,
                header.flags,
                &frame[header.header_len..],
                self.version(),
            )
            .map_err(ReadError::decode)?;
            self.emit(&ClientEvent::Received(&packet));
            self.handle_packet(packet, &frame, out)?;
        }
    }

    fn handle_packet(
        &mut self,
        packet: Packet<'_>,
        frame: &bytes::Bytes,
        out: &mut BytesMut,
    ) -> Result<(), ReadError> {
        match packet {
            Packet::Publish(p) => self.on_publish(&p, frame, out),
            Packet::PubAck(r) => {
                self.on_reply(r.pid, Reply::PubAck(r.reason), out);
                Ok(())
            }
            Packet::PubRec(r) => {
                self.on_reply(r.pid, Reply::PubRec(r.reason), out);
                Ok(())
            }
            Packet::PubComp(r) => {
                self.on_reply(r.pid, Reply::PubComp(r.reason), out);
                Ok(())
            }
            Packet::PubRel(r) => {
                let comp = PubResp {
                    reason: self.incoming_qos2.on_pubrel(r.pid),
                    ..PubResp::new(r.pid)
                };
                self.send(out, &Packet::PubComp(comp));
                Ok(())
            }
            Packet::SubAck(s) => {
                let codes: Vec<ReasonCode> = s.codes.iter().collect();
                if let Some(Request::Subscribe {
                    filters,
                    sub_id,
                    done,
                }) = self.requests.remove(&s.pid.get())
                {
                    for ((filter, options), code) in filters.into_iter().zip(&codes) {
                        self.subscriptions.retain(|(f, _, _)| *f != filter);
                        if !code.is_error() {
                            self.subscriptions.push((filter, options, sub_id));
                        }
                    }
                    if let Some(d) = done {
                        let _ = d.send(Ok(codes));
                    }
                }
                Ok(())
            }
            Packet::UnsubAck(u) => {
                if let Some(Request::Unsubscribe { filters, done }) =
                    self.requests.remove(&u.pid.get())
                {
                    self.subscriptions.retain(|(f, _, _)| !filters.contains(f));
                    let mut codes: Vec<ReasonCode> = u.codes.iter().collect();
                    if codes.is_empty() {
                        // 3.1.1 UNSUBACK has no codes: success for each.
                        codes = vec![ReasonCode::Success; filters.len()];
                    }
                    if let Some(d) = done {
                        let _ = d.send(Ok(codes));
                    }
                }
                Ok(())
            }
            Packet::PingResp => Ok(()),
            Packet::Disconnect(d) => Err(ReadError::Disconnected(d.reason)),
            Packet::Auth(_) => Err(ReadError::Violation(
                ReasonCode::ProtocolError,
                "AUTH without an authentication method".into(),
            )),
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq => Err(ReadError::Violation(
                ReasonCode::ProtocolError,
                "client-only packet from the server".into(),
            )),
        }
    }

    /// An acknowledgement of one of our messages: the transitions and
    /// which replies are legal where are `mqtt_proto::outgoing`'s. A
    /// completed message frees a place in the window for what a
    /// reconnection still owes.
    fn on_reply(&mut self, pid: Pid, reply: Reply, out: &mut BytesMut) {
        match self.inflight.on_reply(pid, reply) {
            Outcome::Completed { item, reason } => {
                item.complete(reason);
                self.resend_due(out);
            }
            Outcome::Released { pid, .. } => self.send(out, &Packet::PubRel(PubResp::new(pid))),
            Outcome::SendPubRel(pid, reason) => {
                let rel = PubResp {
                    reason,
                    ..PubResp::new(pid)
                };
                self.send(out, &Packet::PubRel(rel));
            }
            Outcome::Ignored => {}
        }
    }

    fn on_publish(
        &mut self,
        p: &Publish<'_>,
        frame: &bytes::Bytes,
        out: &mut BytesMut,
    ) -> Result<(), ReadError> {
        let alias = p.properties.iter().find_map(|x| match x {
            Property::TopicAlias(a) => Some(a),
            _ => None,
        });
        // Within the Topic Alias Maximum this client announced (none when
        // it announced 0) [MQTT-5: 3.3.2-9, 3.3.2-10].
        let topic = match self.in_aliases.resolve(p.topic, alias) {
            Ok(None) => p.topic.to_owned(),
            Ok(Some(t)) => t.to_string(),
            Err(e) => {
                return Err(ReadError::Violation(
                    e.reason_code(),
                    format!(
                        "{} (alias {:?}, maximum {})",
                        e.as_str(),
                        alias,
                        self.in_aliases.max()
                    ),
                ))
            }
        };
        let ack = match p.qos_pid {
            QosPid::AtMostOnce => None,
            QosPid::AtLeastOnce(pid) => Some(Ack::PubAck(pid)),
            QosPid::ExactlyOnce(pid) => Some(Ack::PubRec(pid)),
        };
        if let Some(pid) = p.qos_pid.pid() {
            if self.unacked.contains(&pid.get()) {
                // A redelivery of a message still waiting in the backlog: it
                // is acknowledged when the application takes it.
                return Ok(());
            }
        }
        // Method A: delivered on PUBLISH, remembered until PUBREL; at most
        // our Receive Maximum await it [MQTT-5: 3.3.4-8].
        let duplicate = match p.qos_pid {
            QosPid::ExactlyOnce(pid) => {
                // (Announced in a 5.0 CONNECT only.)
                let max = match self.version().is_v5() {
                    true => self.opts.receive_maximum.unwrap_or(u16::MAX),
                    false => u16::MAX,
                };
                match self.incoming_qos2.on_publish(pid, max) {
                    Ok(arrival) => arrival == Qos2Arrival::Duplicate,
                    Err(e) => {
                        return Err(ReadError::Violation(
                            e.reason_code(),
                            "more QoS 2 messages awaiting PUBREL than our Receive Maximum".into(),
                        ))
                    }
                }
            }
            _ => false,
        };
        if duplicate {
            // Delivered already; the server missed our PUBREC.
            self.send_ack(ack, out);
            return Ok(());
        }
        let msg = Message::from_publish(p, topic, frame.slice_ref(p.payload));
        self.deliver(msg, ack, out);
        Ok(())
    }

    /// Hands a message to the application, or to the backlog when the
    /// application's channel is full. Acknowledges it once it is handed over.
    fn deliver(&mut self, msg: Message, ack: Option<Ack>, out: &mut BytesMut) {
        if self.backlog.is_empty() {
            match self.incoming.try_send(msg) {
                Err(mpsc::error::TrySendError::Full(msg)) => self.wait(msg, ack),
                // Delivered; or the application dropped its `Messages` and
                // does not want them, but the server still needs its
                // acknowledgement.
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => self.send_ack(ack, out),
            }
        } else {
            self.wait(msg, ack);
        }
    }

    fn wait(&mut self, msg: Message, ack: Option<Ack>) {
        if let Some(Ack::PubAck(pid) | Ack::PubRec(pid)) = ack {
            self.unacked.insert(pid.get());
        }
        self.backlog.push_back(Waiting { msg, ack });
    }

    fn send_ack(&mut self, ack: Option<Ack>, out: &mut BytesMut) {
        match ack {
            None => {}
            Some(Ack::PubAck(pid)) => {
                self.unacked.remove(&pid.get());
                self.send(out, &Packet::PubAck(PubResp::new(pid)));
            }
            Some(Ack::PubRec(pid)) => {
                self.unacked.remove(&pid.get());
                self.send(out, &Packet::PubRec(PubResp::new(pid)));
            }
        }
    }
}

/// A delay between half and all of `d`, chosen at random, so that many
/// clients cut off together do not reconnect together.
/// Why the server's packets end the connection.
enum ReadError {
    /// The server broke the protocol; an MQTT 5 server is sent DISCONNECT
    /// with this reason code.
    Violation(ReasonCode, String),
    /// The server sent DISCONNECT with this reason code.
    Disconnected(ReasonCode),
}

impl ReadError {
    /// A packet that does not decode: malformed, or a protocol error.
    fn decode(e: mqtt_codec::DecodeError) -> ReadError {
        ReadError::Violation(e.reason_code(), e.to_string())
    }

    fn into_error(self) -> ClientError {
        match self {
            ReadError::Violation(_, text) => ClientError::Protocol(text),
            ReadError::Disconnected(reason) => ClientError::Rejected(reason),
        }
    }
}

fn no_free_pid() -> ClientError {
    ClientError::Invalid("all 65,535 packet identifiers are in use".into())
}

fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(d.as_nanos() as u64);
    let r = h.finish() % 1000;
    d / 2 + d * r as u32 / 2000
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
