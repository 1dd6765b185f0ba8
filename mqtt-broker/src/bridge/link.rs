//! One bridge at run time: a session on this broker, and one MQTT client
//! connection to the remote broker, reconnected with backoff.
//!
//! Outward, the bridge is a local subscriber like any other: its session
//! subscribes to each `out` / `both` line's local filter (with No Local, so
//! what the bridge itself brought in is not sent back, and Retain As
//! Published), and its queue is the session queue, kept in the store under
//! the broker's `durability` while the remote is away. The remote takes the
//! place of the session's client: what the session has in flight (packet
//! id, PUBLISH or PUBREL stage) is what the remote has not acknowledged, so
//! after a reconnection, or a restart of this broker, the same packets go
//! out again with DUP, and PUBRELs resume [MQTT-4.4.0-1].
//!
//! Inward, a PUBLISH from the remote is routed here as if a local client had
//! published it (under the bridge's client id, which the No Local above
//! filters out), and acknowledged once what it put in the store is synced.
//! QoS 2 inbound uses the session's incoming ids, stored, as connections do.
//!
//! Toward the remote the bridge is a client: it sends no more QoS 1/2
//! messages than the remote's Receive Maximum allows (from its MQTT 5
//! CONNACK; the rest wait in the queue, resends after a reconnection
//! included) [MQTT-5: 3.3.4-7, 3.3.4-9], and it keeps `mqtt_proto`'s ping
//! schedule: PINGREQ after a Keep Alive with nothing sent, and a remote
//! that leaves it unanswered for another Keep Alive is dropped and
//! reconnected, as Mosquitto's bridge does (MQTT 5.0 section 3.1.2.10).
//! Times are the broker's clock (`crate::clock`), so tests run them on
//! tokio's paused time.
//!
//! The codec is driven directly rather than through `mqtt-client`: the
//! bridge's in-flight state must be the session's own, stored state (the
//! client library keeps its own, in memory, and would lose it on a restart),
//! and `try_private` needs a protocol level the client does not send.
//!
//! Longer than 800 lines on purpose: the bridge's connection is a small MQTT
//! client of its own (CONNECT, QoS flows both ways, reconnection, resends),
//! kept with its loop; its in-flight window, QoS transitions and resends
//! are the session's `mqtt_proto::Inflight`, as a client connection's are.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_codec::topic::valid_topic_name;
use mqtt_codec::{
    check_header, decode_body, ConnAck, Connect, Disconnect, LastWill, List, Packet, Pid,
    Properties, Property, ProtocolVersion, PubResp, Publish, QoS, QosPid, ReasonCode,
    RetainHandling, Status, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::watch;
use tokio_rustls::rustls::ClientConfig;

use super::config::Bridge;
use super::transport::{self, Stream};
use crate::broker::BrokerState;
use crate::kick::Kicked;
use crate::message::Message;
use crate::session::{Delivery, Kick, Session, SessionState, SubRecord};
use crate::store::{Durability, StoredState};
use mqtt_proto::{Outcome, PingAction, PingSchedule, Reply, Resend};
use tokio::time::Instant as TokioInstant;

/// Stop taking from the queue while this much waits to be written.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// TCP, TLS and CONNACK must complete within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Fingerprints of sent messages kept to recognise echoes (3.1.1 remotes
/// without `try_private`).
const ECHO_MEMORY: usize = 65_536;

/// What a running bridge shows in `$SYS` and the log.
#[derive(Debug, Default)]
pub struct LinkStatus {
    /// Connected to the remote now.
    pub connected: AtomicBool,
    /// Messages sent to the remote.
    pub sent: AtomicU64,
    /// Messages received from the remote and published here.
    pub received: AtomicU64,
    /// Messages from the remote recognised as our own, echoed back, and
    /// not published again (loop prevention for plain 3.1.1 remotes).
    pub echoes_dropped: AtomicU64,
    /// Successful connections so far.
    pub connects: AtomicU64,
    /// The bridge's local session (its queue): replaced when the session is
    /// attached again after a local client took it over.
    session: parking_lot::Mutex<Option<Arc<Session>>>,
}

impl LinkStatus {
    /// Queued, in flight, and dropped by the queue limit so far.
    pub fn depth(&self) -> (usize, usize, u64) {
        match &*self.session.lock() {
            Some(s) => {
                let st = s.lock();
                (
                    st.pending.len(),
                    st.inflight.len(),
                    st.rare().map_or(0, |r| r.dropped),
                )
            }
            None => (0, 0, 0),
        }
    }
}

/// Why a connection to the remote ended.
enum End {
    /// This broker is shutting down.
    Shutdown,
    /// A local client took the bridge's session (same client id).
    TakenOver,
    /// The connection failed; the reason is for the log.
    Lost(String),
}

/// The bridge's side of its local session.
pub struct Link {
    broker: Arc<BrokerState>,
    bridge: Arc<Bridge>,
    tls: Option<Arc<ClientConfig>>,
    /// Shared with the `$SYS` task.
    pub status: Arc<LinkStatus>,
    session: Arc<Session>,
    generation: u64,
    kick: Option<Kicked>,
    client_id: Arc<str>,
    version: ProtocolVersion,
    /// Whether the remote sends our own messages back to us: a 3.1 / 3.1.1
    /// remote not told (by `try_private`) that we are a bridge.
    remote_echoes: bool,
    echo: Echoes,
    /// Set once subscriptions were sent to the remote since this start.
    subscribed_once: bool,
}

/// Per connection: what the remote allows, and the buffers.
struct Conn {
    rd: ReadHalf<Box<dyn Stream>>,
    wr: WriteHalf<Box<dyn Stream>>,
    rbuf: BytesMut,
    out: BytesMut,
    /// Acknowledgements of incoming messages, held until the store has
    /// what the messages changed.
    acks: BytesMut,
    window: usize,
    max_packet: usize,
    max_qos: QoS,
    retain_available: bool,
    /// When to send PINGREQ, and when an unanswered one means the remote
    /// is gone (`mqtt_proto`'s client schedule, as Mosquitto's bridge
    /// does it: PINGREQ after a Keep Alive with nothing sent, the link
    /// given up when no answer comes within another).
    ping: PingSchedule<TokioInstant>,
}

/// Remembers fingerprints of messages sent to the remote, so that the copy
/// a plain 3.1.1 remote sends back on a `both` line is recognised.
#[derive(Default)]
struct Echoes {
    counts: HashMap<u64, u32>,
    order: VecDeque<u64>,
    hasher: std::collections::hash_map::RandomState,
}

impl Echoes {
    fn key(&self, topic: &str, payload: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(topic.as_bytes());
        h.write_u8(0xff);
        h.write(payload);
        h.finish()
    }

    fn sent(&mut self, topic: &str, payload: &[u8]) {
        let k = self.key(topic, payload);
        *self.counts.entry(k).or_default() += 1;
        self.order.push_back(k);
        if self.order.len() > ECHO_MEMORY {
            if let Some(old) = self.order.pop_front() {
                self.forget(old);
            }
        }
    }

    fn forget(&mut self, k: u64) {
        if let Some(c) = self.counts.get_mut(&k) {
            *c -= 1;
            if *c == 0 {
                self.counts.remove(&k);
            }
        }
    }

    /// True (and forgotten) when `topic`/`payload` is one we sent.
    fn is_echo(&mut self, topic: &str, payload: &[u8]) -> bool {
        let k = self.key(topic, payload);
        if self.counts.contains_key(&k) {
            self.forget(k);
            if let Some(i) = self.order.iter().position(|o| *o == k) {
                self.order.remove(i);
            }
            true
        } else {
            false
        }
    }
}

/// A number in [0, 1) for jitter, from the standard library's random keys.
fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl Link {
    /// Attaches the bridge's session and subscribes it locally.
    pub fn new(
        broker: Arc<BrokerState>,
        bridge: Arc<Bridge>,
        tls: Option<Arc<ClientConfig>>,
    ) -> Link {
        let version = bridge.cfg.protocol_version.version();
        let remote_echoes = !version.is_v5() && !bridge.cfg.try_private;
        let client_id: Arc<str> = bridge.local_clientid.as_str().into();
        let (session, generation, kick) = attach(&broker, &bridge, &client_id);
        let status = Arc::new(LinkStatus::default());
        *status.session.lock() = Some(session.clone());
        Link {
            broker,
            bridge,
            tls,
            status,
            session,
            generation,
            kick: Some(kick),
            client_id,
            version,
            remote_echoes,
            echo: Echoes::default(),
            subscribed_once: false,
        }
    }

    /// Connects, serves and reconnects until this broker shuts down.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let name = self.bridge.cfg.name.clone();
        let mut failures: u32 = 0;
        let mut next_addr = 0usize;
        self.notify_local(false);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let (host, port) =
                self.bridge.addresses[next_addr % self.bridge.addresses.len()].clone();
            // A remote that does not answer must not hold up a shutdown.
            let attempt = tokio::select! {
                r = self.connect(&host, port) => r,
                _ = shutdown.changed() => break,
            };
            let end = match attempt {
                Ok((conn, session_present)) => {
                    failures = 0;
                    self.status.connected.store(true, Ordering::Release);
                    self.status.connects.fetch_add(1, Ordering::Relaxed);
                    let (queued, inflight, dropped) = self.depth();
                    tracing::info!(bridge = %name, remote = %format!("{host}:{port}"), session_present, queued, inflight, dropped, "bridge connected");
                    let end = self.serve(conn, session_present, &mut shutdown).await;
                    self.status.connected.store(false, Ordering::Release);
                    self.notify_local(false);
                    end
                }
                Err(e) => {
                    failures += 1;
                    next_addr += 1;
                    let (queued, inflight, dropped) = self.depth();
                    tracing::warn!(bridge = %name, remote = %format!("{host}:{port}"), error = %e, queued, inflight, dropped, "bridge cannot connect");
                    End::Lost(String::new())
                }
            };
            match end {
                End::Shutdown => break,
                End::TakenOver => {
                    tracing::error!(bridge = %name, client = %self.client_id, "a client connected with the bridge's local client id; taking the session back");
                    self.reattach();
                    failures = failures.max(1);
                }
                End::Lost(reason) if !reason.is_empty() => {
                    let (queued, inflight, dropped) = self.depth();
                    tracing::warn!(bridge = %name, %reason, queued, inflight, dropped, "bridge disconnected");
                    failures = failures.max(1);
                }
                End::Lost(_) => {}
            }
            let delay = self.bridge.backoff(failures.max(1), jitter());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => break,
                k = kicked(&mut self.kick) => {
                    if k == Kick::Shutdown { break; }
                    self.reattach();
                }
            }
        }
        self.status.connected.store(false, Ordering::Release);
        // The session stays in the store with what it holds; the next start
        // resumes it.
        let expiry = if self.bridge.cfg.cleansession {
            0
        } else {
            u32::MAX
        };
        self.broker
            .detach(&self.session, self.generation, None, expiry);
        tracing::info!(bridge = %name, "bridge stopped");
    }

    /// Queued, in flight, dropped by the queue limit so far.
    fn depth(&self) -> (usize, usize, u64) {
        self.status.depth()
    }

    fn reattach(&mut self) {
        let (session, generation, kick) = attach(&self.broker, &self.bridge, &self.client_id);
        *self.status.session.lock() = Some(session.clone());
        self.session = session;
        self.generation = generation;
        self.kick = Some(kick);
    }

    /// Publishes the connection state locally (retained).
    fn notify_local(&self, up: bool) {
        if !self.bridge.cfg.notifications {
            return;
        }
        let payload = Bytes::from_static(if up { b"1" } else { b"0" });
        let msg = Message::new(
            &self.bridge.notification_topic,
            payload,
            QoS::AtLeastOnce,
            true,
        );
        self.broker.publish(Arc::new(msg));
    }

    /// TCP (and TLS), CONNECT, CONNACK.
    async fn connect(&mut self, host: &str, port: u16) -> Result<(Conn, bool), String> {
        let cfg = &self.bridge.cfg;
        let tls = match (&self.tls, &cfg.tls) {
            (Some(c), Some(t)) => Some((c, t)),
            _ => None,
        };
        let mut stream = transport::open(host, port, tls, CONNECT_TIMEOUT).await?;
        let v5 = self.version.is_v5();
        let mut props = Vec::new();
        if v5 {
            // A session that outlives the connection, as 3.1.1's Clean
            // Session 0 does.
            if !cfg.cleansession {
                props.push(Property::SessionExpiryInterval(u32::MAX));
            }
            props.push(Property::ReceiveMaximum(self.broker.config.receive_maximum));
            props.push(Property::MaximumPacketSize(
                self.broker.config.max_packet_size,
            ));
        }
        let connect = Connect {
            protocol: self.version,
            clean_start: cfg.cleansession,
            keep_alive: cfg.keepalive_interval,
            properties: Properties::from_slice(&props),
            client_id: &self.bridge.remote_clientid,
            will: cfg.notifications.then(|| LastWill {
                topic: &self.bridge.notification_topic,
                payload: b"0",
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties::EMPTY,
            }),
            username: cfg.remote_username.as_deref(),
            password: cfg.remote_password.as_deref().map(str::as_bytes),
        };
        let mut out = BytesMut::new();
        Packet::Connect(connect)
            .encode_to(self.version, &mut out, usize::MAX)
            .map_err(|e| format!("CONNECT: {e}"))?;
        if cfg.try_private && !v5 {
            set_bridge_bit(&mut out);
        }
        let io = async {
            stream
                .write_all(&out)
                .await
                .map_err(|e| format!("write: {e}"))?;
            let mut rbuf = BytesMut::with_capacity(256);
            loop {
                if let Some(f) = mqtt_proto::next_frame(&mut rbuf, 64 * 1024)
                    .map_err(|e| format!("CONNACK: {e}"))?
                {
                    return Ok::<_, String>((f.header, f.bytes, rbuf));
                }
                let n = stream
                    .read_buf(&mut rbuf)
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("closed by the remote before CONNACK".into());
                }
            }
        };
        let (h, frame, rbuf) = tokio::time::timeout(CONNECT_TIMEOUT, io)
            .await
            .map_err(|_| "no CONNACK in time".to_string())??;
        let packet = decode_body(h.packet_type, h.flags, &frame[h.header_len..], self.version)
            .map_err(|e| format!("CONNACK: {e}"))?;
        let Packet::ConnAck(ack) = packet else {
            return Err(format!("expected CONNACK, got {:?}", h.packet_type));
        };
        if ack.reason.is_error() {
            return Err(format!("refused by the remote: {:?}", ack.reason));
        }
        let conn = self.limits(&ack, stream, rbuf);
        Ok((conn, ack.session_present))
    }

    fn limits(&self, ack: &ConnAck<'_>, stream: Box<dyn Stream>, rbuf: BytesMut) -> Conn {
        let mut window = usize::from(self.bridge.cfg.max_inflight);
        let mut max_packet = mqtt_codec::MAX_PACKET_SIZE as usize;
        let mut max_qos = QoS::ExactlyOnce;
        let mut retain_available = true;
        let mut keep_alive = self.bridge.cfg.keepalive_interval;
        for p in ack.properties.iter() {
            match p {
                Property::ReceiveMaximum(r) => window = window.min(usize::from(r)),
                Property::MaximumPacketSize(m) => max_packet = m as usize,
                Property::MaximumQoS(q) => max_qos = q,
                Property::RetainAvailable(r) => retain_available = r,
                Property::ServerKeepAlive(k) => keep_alive = k,
                _ => {}
            }
        }
        let (rd, wr) = tokio::io::split(stream);
        Conn {
            rd,
            wr,
            rbuf,
            out: BytesMut::new(),
            acks: BytesMut::new(),
            window,
            max_packet,
            max_qos,
            retain_available,
            ping: PingSchedule::new(
                Duration::from_secs(u64::from(keep_alive)),
                TokioInstant::now(),
            ),
        }
    }

    /// Runs one connection until it ends.
    async fn serve(
        &mut self,
        mut c: Conn,
        session_present: bool,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        if !session_present || !self.subscribed_once {
            self.subscribe_remote(&mut c, session_present);
        }
        if self.bridge.cfg.notifications {
            // QoS 0: a PUBACK for an id the session does not track could
            // be taken for one it does. If the connection fails before it
            // lands, the will says 0, which is then true.
            let p = Publish {
                dup: false,
                qos_pid: QosPid::AtMostOnce,
                retain: true,
                topic: &self.bridge.notification_topic,
                properties: Properties::EMPTY,
                payload: b"1",
            };
            self.send(&mut c, &Packet::Publish(p));
        }
        // After the SUBSCRIBEs: whoever sees `1` on either side knows the
        // bridge's subscriptions are in place.
        self.notify_local(true);
        self.resend_inflight(&mut c, session_present);
        self.fill(&mut c);
        // One timer for the ping schedule, moved when its deadline moves.
        let ping_timer = tokio::time::sleep_until(TokioInstant::now());
        tokio::pin!(ping_timer);
        loop {
            let session = self.session.clone();
            let ping_at = c.ping.poll_timeout();
            if let Some(at) = ping_at {
                if ping_timer.deadline() != at {
                    ping_timer.as_mut().reset(at);
                }
            }
            // Reading and writing go on together: a remote that is itself
            // waiting to write to us is never stuck behind our write.
            tokio::select! {
                r = c.rd.read_buf(&mut c.rbuf) => {
                    match r {
                        Ok(0) => return End::Lost("closed by the remote".into()),
                        Ok(_) => {
                            // Whatever arrived, the remote is alive.
                            c.ping.on_received();
                            if let Err(e) = self.on_read(&mut c).await {
                                return End::Lost(e);
                            }
                        }
                        Err(e) => return End::Lost(format!("read: {e}")),
                    }
                }
                w = c.wr.write_buf(&mut c.out), if !c.out.is_empty() => {
                    match w {
                        Err(e) => return End::Lost(format!("write: {e}")),
                        Ok(n) if n > 0 => c.ping.on_sent(TokioInstant::now()),
                        Ok(_) => {}
                    }
                    if c.out.is_empty() && c.out.capacity() > 4 * WRITE_HIGH_WATER {
                        c.out = BytesMut::new();
                    }
                    if c.out.len() < WRITE_HIGH_WATER {
                        // Room again: take more from the queue.
                        self.fill(&mut c);
                    }
                }
                _ = session.notify.notified() => self.fill(&mut c),
                _ = &mut ping_timer, if ping_at.is_some() => {
                    match c.ping.handle_timeout(TokioInstant::now()) {
                        PingAction::Dead => {
                            return End::Lost("no answer to PINGREQ within the keep alive".into());
                        }
                        PingAction::SendPing => self.send(&mut c, &Packet::PingReq),
                        PingAction::Wait => {}
                    }
                }
                _ = shutdown.changed() => {
                    self.goodbye(&mut c).await;
                    return End::Shutdown;
                }
                k = kicked(&mut self.kick) => {
                    self.goodbye(&mut c).await;
                    return if k == Kick::Shutdown { End::Shutdown } else { End::TakenOver };
                }
            }
        }
    }

    /// A clean close: the state topic says 0 (DISCONNECT suppresses the
    /// will that would), then DISCONNECT.
    async fn goodbye(&mut self, c: &mut Conn) {
        if self.bridge.cfg.notifications {
            let p = Publish {
                dup: false,
                qos_pid: QosPid::AtMostOnce,
                retain: true,
                topic: &self.bridge.notification_topic,
                properties: Properties::EMPTY,
                payload: b"0",
            };
            self.send(c, &Packet::Publish(p));
        }
        self.send(
            c,
            &Packet::Disconnect(Disconnect {
                reason: ReasonCode::Success,
                properties: Properties::EMPTY,
            }),
        );
        let _ = self.flush(c).await;
        let _ = c.wr.shutdown().await;
    }

    /// Writes what is buffered, within a bound (used on close).
    async fn flush(&self, c: &mut Conn) -> Result<(), String> {
        match tokio::time::timeout(Duration::from_secs(5), c.wr.write_all_buf(&mut c.out)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write: {e}")),
            Err(_) => Err("the remote stopped reading".into()),
        }
    }

    fn send(&self, c: &mut Conn, packet: &Packet<'_>) {
        if let Err(e) = packet.encode_to(self.version, &mut c.out, usize::MAX) {
            tracing::warn!(bridge = %self.bridge.cfg.name, error = %e, "packet not encodable; not sent");
        }
    }

    /// Subscribes on the remote to every `in` / `both` line.
    fn subscribe_remote(&mut self, c: &mut Conn, session_present: bool) {
        let v5 = self.version.is_v5();
        let filters: Vec<SubscribeFilter<'_>> = self
            .bridge
            .lines
            .iter()
            .filter(|l| l.direction.inward())
            .map(|l| SubscribeFilter {
                filter: &l.remote_filter,
                options: SubscriptionOptions {
                    qos: l.qos,
                    // Our own messages do not come back [MQTT-3.8.3-3], and
                    // retained ones stay retained across the bridge.
                    no_local: v5,
                    retain_as_published: v5,
                    retain_handling: if session_present {
                        RetainHandling::SendIfNew
                    } else {
                        RetainHandling::SendOnSubscribe
                    },
                },
            })
            .collect();
        self.subscribed_once = true;
        if filters.is_empty() {
            return;
        }
        // One filter per SUBSCRIBE keeps within any remote's limits and
        // lets a refusal name its filter.
        for f in filters {
            let pid = self.session.lock().next_pid();
            let list = [f];
            let packet = Packet::Subscribe(Subscribe {
                pid,
                properties: Properties::EMPTY,
                filters: List::from_slice(&list),
            });
            if let Err(e) = packet.encode_to(self.version, &mut c.out, usize::MAX) {
                tracing::warn!(bridge = %self.bridge.cfg.name, filter = f.filter, error = %e, "SUBSCRIBE not encodable");
            }
        }
    }

    /// After a reconnection: every unacknowledged PUBLISH again with DUP,
    /// every PUBREL again, as far as the remote's Receive Maximum allows
    /// (the rest follows as acknowledgements free the window). When the
    /// remote lost the session, messages it had already received (PUBREL
    /// stage) are done.
    fn resend_inflight(&mut self, c: &mut Conn, session_present: bool) {
        let session = self.session.clone();
        let mut st = session.lock();
        if st.generation != self.generation {
            return;
        }
        let done: Vec<Delivery> = st
            .inflight
            .resume(session_present)
            .map(|(d, _)| d)
            .collect();
        for d in &done {
            self.broker.forget_message(&session, &st, d);
        }
        self.resend_unsent(c, &mut st);
    }

    /// Resends what a reconnection owes while the window has room.
    fn resend_unsent(&mut self, c: &mut Conn, st: &mut SessionState) {
        let now = crate::clock::now();
        while let Some(i) = st.inflight.next_resend_index(c.window) {
            let Some(o) = st.inflight.get(i) else { break };
            let d = match o.resend() {
                Resend::PubRel(pid) => {
                    self.send(c, &Packet::PubRel(PubResp::new(pid)));
                    continue;
                }
                Resend::Publish(_, d) => d,
            };
            let qos_pid = QosPid::from_qos(d.qos, o.pid);
            let sent = match self.out_topic(&d.msg.topic) {
                Some((_, topic)) => self.write_publish(c, d, &topic, qos_pid, true, now),
                None => false,
            };
            if !sent {
                if let Some(gone) = st.inflight.remove(i) {
                    self.broker.forget_message(&self.session, st, &gone.item);
                }
            }
        }
    }

    /// Moves queued messages to the remote, as far as the window and the
    /// write buffer allow.
    fn fill(&mut self, c: &mut Conn) {
        let session = self.session.clone();
        let mut st = session.lock();
        if st.generation != self.generation {
            return;
        }
        if st.inflight.unsent() > 0 {
            self.resend_unsent(c, &mut st);
        }
        let now = crate::clock::now();
        while c.out.len() < WRITE_HIGH_WATER {
            let Some(front) = st.pending.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && !st.inflight.has_room(c.window) {
                break;
            }
            let Some(mut d) = st.pending.pop_front() else {
                break;
            };
            st.pending_bytes -= d.msg.size();
            if d.msg.is_expired(now) {
                self.broker.stats.dropped_expired.inc();
                self.broker.forget_message(&session, &st, &d);
                continue;
            }
            let Some((line_qos, topic)) = self.out_topic(&d.msg.topic) else {
                tracing::debug!(bridge = %self.bridge.cfg.name, topic = %d.msg.topic, "no out line maps the topic any more; dropped");
                self.broker.forget_message(&session, &st, &d);
                continue;
            };
            // The lower of the message's QoS, the line's and the remote's.
            // The store keeps the message under the QoS it was queued with,
            // so forgetting it must use that one, not the lowered one
            // (a message sent at QoS 0 would otherwise stay in the store
            // and be sent again after a restart).
            let queued_qos = d.qos;
            d.qos = d.qos.min(line_qos).min(c.max_qos);
            let qos_pid = match d.qos {
                QoS::AtMostOnce => QosPid::AtMostOnce,
                q => QosPid::from_qos(q, st.next_pid()),
            };
            if !self.write_publish(c, &d, &topic, qos_pid, false, now) {
                d.qos = queued_qos;
                self.broker.forget_message(&session, &st, &d);
                continue;
            }
            match qos_pid.pid() {
                Some(pid) => {
                    self.broker
                        .message_state(&session, &st, &d, StoredState::Sent(pid.get()));
                    st.push_sent(pid, d);
                }
                None => {
                    d.qos = queued_qos;
                    self.broker.forget_message(&session, &st, &d);
                }
            }
        }
    }

    /// The QoS of the first out line that maps a local topic, and the
    /// remote topic it maps it to.
    fn out_topic(&self, local: &str) -> Option<(QoS, String)> {
        self.bridge
            .lines
            .iter()
            .filter(|l| l.direction.out())
            .find_map(|l| l.to_remote(local).map(|t| (l.qos, t)))
    }

    /// Encodes one PUBLISH to the remote under `topic`. False when it is
    /// larger than the remote accepts: it is dropped, and counted.
    fn write_publish(
        &mut self,
        c: &mut Conn,
        d: &Delivery,
        topic: &str,
        qos_pid: QosPid,
        dup: bool,
        now: Instant,
    ) -> bool {
        let mut props = Vec::new();
        if self.version.is_v5() {
            d.msg.push_properties(now, &mut props);
        }
        let retain = d.retain && self.bridge.cfg.outgoing_retain && c.retain_available;
        let packet = Packet::Publish(Publish {
            dup,
            qos_pid,
            retain,
            topic,
            properties: Properties::from_slice(&props),
            payload: &d.msg.payload,
        });
        match packet.encode_to(self.version, &mut c.out, c.max_packet) {
            Ok(_) => {}
            Err(e) => {
                self.broker.stats.dropped_too_large.inc();
                tracing::warn!(bridge = %self.bridge.cfg.name, %topic, error = %e, "message not sendable to the remote; dropped");
                return false;
            }
        }
        if self.remote_echoes && !dup {
            let comes_back = self.bridge.lines.iter().any(|l| {
                l.direction.inward() && mqtt_codec::topic::matches(&l.remote_filter, topic)
            });
            if comes_back {
                self.echo.sent(topic, &d.msg.payload);
            }
        }
        self.broker.stats.publish_sent.inc();
        self.status.sent.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Handles every whole packet read, then releases the acknowledgements
    /// of incoming messages once the store has what they changed.
    async fn on_read(&mut self, c: &mut Conn) -> Result<(), String> {
        let mark = crate::store::ops_sent_on_this_thread();
        let max = self.broker.config.max_packet_size;
        while let Some(f) =
            mqtt_proto::next_frame(&mut c.rbuf, max).map_err(|e| format!("from the remote: {e}"))?
        {
            let h = f.header;
            let packet = decode_body(h.packet_type, h.flags, f.body(), self.version)
                .map_err(|e| format!("from the remote: {e}"))?;
            self.handle(c, packet, &f.bytes)?;
        }
        if c.rbuf.is_empty() && c.rbuf.capacity() > 64 * 1024 {
            c.rbuf = BytesMut::new();
        }
        if !c.acks.is_empty() {
            let wrote = crate::store::ops_sent_on_this_thread() != mark;
            if let (Some(store), true) = (&self.broker.store, wrote) {
                if store.durability() == Durability::Always {
                    let _ = store.barrier().await;
                }
            }
            let acks = c.acks.split();
            c.out.extend_from_slice(&acks);
        }
        Ok(())
    }

    fn handle(&mut self, c: &mut Conn, packet: Packet<'_>, frame: &Bytes) -> Result<(), String> {
        match packet {
            Packet::Publish(p) => self.on_publish(c, &p, frame),
            Packet::PubAck(r) => self.on_reply(c, r.pid, Reply::PubAck(r.reason)),
            Packet::PubRec(r) => self.on_reply(c, r.pid, Reply::PubRec(r.reason)),
            Packet::PubComp(r) => self.on_reply(c, r.pid, Reply::PubComp(r.reason)),
            Packet::PubRel(r) => {
                let known = {
                    let mut st = self.session.lock();
                    let known = st
                        .rare_if()
                        .is_some_and(|rare| rare.incoming_qos2.remove(r.pid.get()));
                    if let (Some(store), true, true) = (&self.broker.store, st.persistent, known) {
                        store.del_qos2(&self.client_id, r.pid.get());
                    }
                    known
                };
                let mut comp = PubResp::new(r.pid);
                if !known {
                    comp.reason = ReasonCode::PacketIdentifierNotFound;
                }
                let _ = Packet::PubComp(comp).encode_to(self.version, &mut c.acks, usize::MAX);
            }
            Packet::SubAck(a) => {
                for code in a.codes.iter() {
                    if code.is_error() {
                        tracing::warn!(bridge = %self.bridge.cfg.name, ?code, "the remote refused a subscription");
                    }
                }
            }
            // Any packet read already told the ping schedule.
            Packet::PingResp => {}
            Packet::Disconnect(d) => {
                return Err(format!("the remote sent DISCONNECT ({:?})", d.reason));
            }
            Packet::UnsubAck(_) => {}
            other => {
                return Err(format!(
                    "unexpected {:?} from the remote",
                    other.packet_type()
                ));
            }
        }
        Ok(())
    }

    fn on_publish(&mut self, c: &mut Conn, p: &Publish<'_>, frame: &Bytes) {
        self.broker.stats.publish_received.inc();
        if let QosPid::ExactlyOnce(pid) = p.qos_pid {
            let mut st = self.session.lock();
            if st
                .rare()
                .is_some_and(|r| r.incoming_qos2.contains(pid.get()))
            {
                // [MQTT-4.3.3-10] a resent PUBLISH before PUBREL: PUBREC
                // again, not delivered again.
                drop(st);
                let _ = Packet::PubRec(PubResp::new(pid)).encode_to(
                    self.version,
                    &mut c.acks,
                    usize::MAX,
                );
                return;
            }
            st.rare_mut().incoming_qos2.insert(pid.get());
            if let (Some(store), true) = (&self.broker.store, st.persistent) {
                store.put_qos2(&self.client_id, pid.get());
            }
        }
        let echo = self.remote_echoes && self.echo.is_echo(p.topic, p.payload);
        let local = self
            .bridge
            .lines
            .iter()
            .filter(|l| l.direction.inward())
            .find_map(|l| l.to_local(p.topic));
        match local {
            _ if echo => {
                self.status.echoes_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Some(topic) if valid_topic_name(&topic) => {
                let payload = frame.slice_ref(p.payload);
                let msg = Message::from_publish(
                    p,
                    topic.as_str().into(),
                    payload,
                    Some(self.client_id.clone()),
                    crate::clock::now(),
                );
                self.broker.publish(Arc::new(msg));
                self.status.received.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                tracing::debug!(bridge = %self.bridge.cfg.name, topic = p.topic, "no in line maps the remote topic; dropped");
            }
        }
        let ack = match p.qos_pid {
            QosPid::AtMostOnce => return,
            QosPid::AtLeastOnce(pid) => Packet::PubAck(PubResp::new(pid)),
            QosPid::ExactlyOnce(pid) => Packet::PubRec(PubResp::new(pid)),
        };
        let _ = ack.encode_to(self.version, &mut c.acks, usize::MAX);
    }

    /// An acknowledgement from the remote (the transitions are the
    /// session's, from `mqtt_proto`): a finished message is forgotten and
    /// frees the window, a released one is stored as such.
    fn on_reply(&mut self, c: &mut Conn, pid: Pid, reply: Reply) {
        let session = self.session.clone();
        let mut st = session.lock();
        let rel = match st.inflight.on_reply(pid, reply) {
            Outcome::Completed { item, .. } => {
                self.broker.forget_message(&session, &st, &item);
                drop(st);
                self.fill(c);
                return;
            }
            Outcome::Ignored => return,
            Outcome::Released { index, .. } => {
                if let Some(o) = st.inflight.get(index) {
                    self.broker.message_state(
                        &session,
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
        drop(st);
        self.send(c, &Packet::PubRel(rel));
    }
}

/// Waits for the session's kick, if there is one to wait for.
async fn kicked(kick: &mut Option<Kicked>) -> Kick {
    match kick.as_mut() {
        Some(rx) => {
            let k = rx.await.unwrap_or(Kick::Shutdown);
            *kick = None;
            k
        }
        None => std::future::pending().await,
    }
}

/// Sets the high bit of the protocol level of an encoded 3.x CONNECT:
/// Mosquitto's `try_private`, which tells the remote that this client is a
/// bridge (it then neither echoes our messages nor clears their retain flag).
fn set_bridge_bit(connect: &mut BytesMut) {
    if let Ok(Status::Complete(h)) = check_header(connect, u32::MAX) {
        let name_len = connect
            .get(h.header_len..h.header_len + 2)
            .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        if let Some(level) = connect.get_mut(h.header_len + 2 + name_len) {
            *level |= 0x80;
        }
    }
}

/// Attaches (or resumes) the bridge's local session and makes its
/// subscriptions those of the configured out lines.
fn attach(
    broker: &Arc<BrokerState>,
    bridge: &Bridge,
    id: &Arc<str>,
) -> (Arc<Session>, u64, Kicked) {
    let (tx, rx) = crate::kick::channel();
    let clean = bridge.cfg.cleansession;
    let a = broker.attach(id, clean, if clean { 0 } else { u32::MAX }, tx);
    a.session.lock().rare_mut().queue_limits =
        Some((bridge.cfg.max_queued_messages, bridge.cfg.max_queued_bytes));
    // Wanted: each out line's local filter at the highest QoS asked for it.
    let mut wanted: Vec<(&str, QoS)> = Vec::new();
    for l in bridge.lines.iter().filter(|l| l.direction.out()) {
        match wanted.iter_mut().find(|(f, _)| *f == l.local_filter) {
            Some(w) => w.1 = w.1.max(l.qos),
            None => wanted.push((&l.local_filter, l.qos)),
        }
    }
    let old: Vec<(Box<str>, SubRecord)> = a
        .session
        .lock()
        .subscriptions
        .iter()
        .map(|(f, r)| (f.clone(), *r))
        .collect();
    for (f, _) in &old {
        if !wanted.iter().any(|(w, _)| **w == **f) {
            broker.unsubscribe(&a.session, f);
        }
    }
    let now = crate::clock::now();
    for (filter, qos) in wanted {
        let options = SubscriptionOptions {
            qos,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::SendIfNew,
        };
        let same = old
            .iter()
            .any(|(f, r)| **f == *filter && r.options == options);
        if same {
            continue;
        }
        let existed = broker.subscribe(
            &a.session,
            filter,
            SubRecord {
                options,
                sub_id: None,
            },
        );
        if !existed {
            // A new out line takes the retained messages it matches, once.
            let retained = broker.retained.read().matching(filter, now);
            for msg in retained {
                let d = Delivery {
                    qos: msg.qos.min(qos),
                    retain: true,
                    sub_ids: Box::new([]),
                    seq: 0,
                    msg,
                };
                a.session.enqueue(d, broker, true);
            }
        }
    }
    (a.session, a.generation, rx)
}
