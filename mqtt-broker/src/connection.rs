//! One client connection, from CONNECT to close.
//!
//! A single task owns the socket. It reads into a buffer that grows on demand
//! and cuts each whole packet out of it once (`Bytes`), so a payload is never
//! copied on its way to subscribers; it writes from a buffer that collects
//! many packets per system call. One `select!` drives reading, writing, the
//! session's wake-ups, keep alive and takeover, so a slow reader only ever
//! slows its own connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_codec::{
    decode_body, ConnAck, Connect, DecodeError, Disconnect, List, Packet, Pid, Property,
    PropertyId, ProtocolVersion, PubResp, Publish, QoS, QosPid, ReasonCode, RetainHandling, SubAck,
    Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, MAX_PACKET_SIZE,
};
use mqtt_proto::{
    Frame, InboundAliases, KeepAliveTimeout, OutAlias, OutboundAliases, Qos2Arrival, Reply,
};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::acl::AclView;
use crate::broker::{split_filter, BrokerState};
use crate::config::ListenerConfig;
use crate::drop_log::DropReason;
use crate::log::describe;
use crate::message::Message;
use crate::route::RouteCache;
use crate::session::{
    Delivery, Kick, OutState, Outgoing, ReplyEffect, Session, SessionState, SubRecord,
};
use crate::splice::{Spliced, SPLICE_MIN};
use crate::store::StoredState;
use crate::transport::{ReadSide, Transport};

/// Stop reading and stop draining the session queue while this much is
/// waiting to be written: backpressure towards a slow reader.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// First allocation of a write buffer.
const WRITE_START: usize = 4 * 1024;
/// How long the final packets (DISCONNECT) may take to write on close.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

/// Why a connection ends.
#[derive(Debug)]
enum Close {
    /// The client sent DISCONNECT; `will` says whether to publish the will
    /// anyway (MQTT 5 reason other than 0x00).
    Disconnect { will: bool },
    /// The socket closed or failed without DISCONNECT.
    Network,
    /// The server closes; MQTT 5 clients get a DISCONNECT with this reason
    /// code and, unless they asked not to, this text as its Reason String.
    Server(ReasonCode, &'static str),
    /// Another connection took the session over.
    TakenOver,
}

/// Reads whole packets from a byte stream.
struct Reader<R> {
    io: R,
    buf: BytesMut,
    max_packet_size: u32,
    /// Bytes to make room for before a read: starts small (a CONNECT, a
    /// PINGREQ) and doubles while reads fill it, so idle connections stay
    /// small and busy ones read in large chunks.
    read_size: usize,
}

const MIN_READ: usize = 256;
const MAX_READ: usize = 64 * 1024;

impl<R: ReadSide> Reader<R> {
    /// A whole packet from the buffer, if one is there. Type, flags and size
    /// are checked from the header before the body is waited for.
    fn try_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let frame = mqtt_proto::next_frame(&mut self.buf, self.max_packet_size)?;
        if frame.is_some() && self.buf.is_empty() {
            // The frames hold the old allocation for as long as they live;
            // an idle connection keeps no read buffer at all.
            self.buf = BytesMut::new();
        }
        Ok(frame)
    }

    /// Reads more bytes; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() == self.buf.len() {
            if self.buf.is_empty() {
                // Idle: take a buffer only once there is something to read.
                std::future::poll_fn(|cx| self.io.poll_read_ready(cx)).await?;
            }
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = self.io.read_buf(&mut self.buf).await?;
        self.read_size = if n == room {
            (self.read_size * 2).min(MAX_READ)
        } else {
            (self.read_size / 2).max(MIN_READ)
        };
        Ok(n)
    }

    /// Waits for the first packet, refusing anything but CONNECT from its
    /// first byte [MQTT-3.1.1/5: 3.1.0-1], so a client that has not connected cannot
    /// make the broker wait for (and buffer) a large body.
    async fn connect_frame(&mut self) -> Result<Option<Frame>, ConnError> {
        loop {
            if self
                .buf
                .first()
                .is_some_and(|b| b >> 4 != mqtt_codec::PacketType::Connect as u8)
            {
                return Err(ConnError::NotConnect);
            }
            if let Some(frame) = self.try_frame()? {
                return Ok(Some(frame));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }
}

/// Errors that end a connection.
#[derive(Debug)]
enum ConnError {
    Io(std::io::Error),
    Decode(DecodeError),
    /// The first packet is not CONNECT.
    NotConnect,
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "{e}"),
            ConnError::Decode(e) => write!(f, "{e}"),
            ConnError::NotConnect => f.write_str("first packet is not CONNECT"),
        }
    }
}

impl From<std::io::Error> for ConnError {
    fn from(e: std::io::Error) -> Self {
        ConnError::Io(e)
    }
}

impl From<DecodeError> for ConnError {
    fn from(e: DecodeError) -> Self {
        ConnError::Decode(e)
    }
}

/// Encodes a packet onto the end of `out`, if it takes at most `limit`
/// bytes.
fn push_packet(
    out: &mut BytesMut,
    version: ProtocolVersion,
    packet: &Packet<'_>,
    limit: usize,
) -> Result<usize, mqtt_codec::EncodeError> {
    if out.capacity() == 0 {
        // The write buffer is dropped whenever it empties (idle connections
        // keep none); start the next one at a size that takes a burst
        // without a chain of reallocations.
        out.reserve(WRITE_START);
    }
    packet.encode_to(version, out, limit)
}

/// An accepted socket, before its CONNECT.
pub(crate) struct Incoming<S> {
    pub stream: S,
    pub peer: SocketAddr,
    pub broker: Arc<BrokerState>,
    pub listener: Arc<ListenerConfig>,
    /// The client certificate's name, when the listener uses it.
    pub tls_identity: Option<String>,
    /// This socket's place among those waiting for CONNECT, taken when it
    /// was accepted.
    pub pending: PendingConnect,
}

/// Serves one accepted socket until it closes.
///
/// The CONNECT exchange and the close run once each, so their state is boxed
/// and freed when they end, and the socket arrives boxed: what an idle
/// connection keeps for its whole life is the task with `Conn` and `run`'s
/// state (memory per idle connection, issue 7).
pub(crate) async fn serve<S: Transport>(incoming: Box<Incoming<S>>) {
    let Some(mut open) = Box::pin(open(incoming)).await else {
        return;
    };
    let broker = open.conn.broker.clone();
    broker.stats.clients_connected.inc();
    broker.stats.connections_total.inc();
    // Not exact under a race of two connects (a sum of shards), which is
    // as much as a monitoring maximum needs.
    broker.stats.clients_maximum.fetch_max(
        broker.stats.clients_connected.get(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let close = open
        .conn
        .run(&mut open.reader, &mut open.wr, &mut open.out)
        .await;
    broker.stats.clients_connected.dec();
    let Open {
        conn,
        mut wr,
        mut out,
        ..
    } = open;
    Box::pin(conn.finish(close, &mut wr, &mut out)).await;
}

/// A connection past its CONNACK.
struct Open<S: Transport> {
    conn: Conn,
    reader: Reader<S::Read>,
    wr: S::Write,
    /// Bytes waiting to be written, starting with the CONNACK.
    out: BytesMut,
}

/// Reads and answers the CONNECT: the session is attached and the CONNACK
/// queued, or the client was refused (or never sent one) and `None` returns.
async fn open<S: Transport>(incoming: Box<Incoming<S>>) -> Option<Open<S>> {
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
    if let Ok((conn, _)) = &accepted {
        confirm_claim(&broker, &connect, &conn.client_id);
    }
    match accepted {
        Ok((conn, out)) => Some(Open {
            conn,
            reader,
            wr,
            out,
        }),
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
struct Refusal {
    reason: ReasonCode,
    version: ProtocolVersion,
    why: &'static str,
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
async fn claim_in_cluster(broker: &Arc<BrokerState>, c: &Connect<'_>) -> Result<(), ReasonCode> {
    let Some(cluster) = &broker.cluster else {
        return Ok(());
    };
    // An empty id gets one made unique by the node's name.
    if c.client_id.is_empty() {
        return Ok(());
    }
    let client_id: Arc<str> = c.client_id.into();
    match cluster.claim(&client_id, c.clean_start).await {
        Ok(Some(previous)) => {
            tracing::info!(client = %client_id, from = %previous.node, "cluster: session moves to this node");
            broker.adopt_session(&client_id, previous.expiry_secs, &previous.subscriptions);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(crate::cluster::ClaimError::Lost) => Err(ReasonCode::ServerBusy),
        Err(crate::cluster::ClaimError::Unavailable) => Err(ReasonCode::ServerUnavailable),
    }
}

/// Another node may have claimed the client id between this node's claim
/// and the attach: then the session was handed over before it existed here,
/// so hand it over now (the new connection gets DISCONNECT 0x8E at once).
#[cfg(feature = "cluster")]
fn confirm_claim(broker: &Arc<BrokerState>, c: &Connect<'_>, client_id: &Arc<str>) {
    if let Some(cluster) = &broker.cluster {
        if !c.client_id.is_empty() && !cluster.owns(client_id) {
            tracing::info!(client = %client_id, "cluster: client id claimed by another node meanwhile");
            broker.hand_over(client_id);
        }
    }
}

#[cfg(not(feature = "cluster"))]
fn confirm_claim(_: &Arc<BrokerState>, _: &Connect<'_>, _: &Arc<str>) {}

#[cfg(not(feature = "cluster"))]
async fn claim_in_cluster(_: &Arc<BrokerState>, _: &Connect<'_>) -> Result<(), ReasonCode> {
    Ok(())
}

/// The Reason String of a CONNACK refused by `claim_in_cluster`.
fn cluster_refusal_text(reason: ReasonCode) -> &'static str {
    if reason == ReasonCode::ServerBusy {
        "the client id is being taken by another node of the cluster"
    } else {
        "the cluster cannot be reached to check the client id"
    }
}

/// Answers an undecodable CONNECT: CONNACK 0x01 (3.1.1) or 0x84 (5.0) for an
/// unknown protocol level [MQTT-3.1.1/5: 3.1.2-2]; a 5.0 client gets the reason code
/// of a malformed CONNECT too. Then the connection closes.
async fn refuse_bad_connect<W: AsyncWrite + Unpin>(
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
fn own_state_topic(client_id: &str, topic: &str) -> bool {
    topic
        .strip_prefix("$SYS/broker/connection/")
        .and_then(|rest| rest.strip_suffix("/state"))
        == Some(client_id)
}

/// A CONNECT with the bridge bit (0x80) on a 3.1 / 3.1.1 protocol level,
/// as Mosquitto's bridges send it, becomes a plain one; the flag says
/// whether it was marked.
fn unmark_bridge(frame: Frame) -> (Frame, bool) {
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
fn sniff_level(body: &[u8]) -> Option<u8> {
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
async fn authenticate(
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

/// Topic aliases of one connection (MQTT 5), both directions.
struct TopicAliases {
    /// Given by the broker, within the client's Topic Alias Maximum.
    outgoing: OutboundAliases,
    /// Set by the client, within the broker's.
    incoming: InboundAliases,
}

/// The state of one connected client.
struct Conn {
    broker: Arc<BrokerState>,
    session: Arc<Session>,
    generation: u64,
    client_id: Arc<str>,
    peer: SocketAddr,
    version: ProtocolVersion,
    /// 1.5 times the keep alive, or `None` when keep alive is off.
    keep_alive_timeout: Option<KeepAliveTimeout>,
    /// Most outgoing QoS 1/2 messages in flight.
    send_window: u16,
    /// The client's Maximum Packet Size.
    client_max_packet: u32,
    /// The client's Topic Alias Maximum.
    client_alias_max: u16,
    /// Topic aliases in both directions; boxed and made on first use, as
    /// most clients use none and every idle connection would carry them.
    aliases: Option<Box<TopicAliases>>,
    /// Where this client's last topic goes (see `route`).
    route: Option<Box<RouteCache>>,
    will: Option<(Arc<Message>, u32)>,
    /// Session Expiry Interval, possibly changed by DISCONNECT.
    expiry_secs: u32,
    kick: oneshot::Receiver<Kick>,
    session_present: bool,
    /// The ACL rules for this client.
    acl: AclView,
    /// The authenticated user name, if any.
    username: Option<Box<str>>,
    /// Start of the current one-second window and PUBLISH packets in it,
    /// for `max_publish_rate`.
    rate_window: (Instant, u32),
    read_paused_until: Option<Instant>,
    /// When bytes last arrived: for keep alive, and the arrival time of
    /// the messages in them.
    last_rx: Instant,
    /// With `durability = "always"`: acknowledgements wait for the store.
    hold_acks: bool,
    /// Acknowledgements of the packets being handled now.
    held: BytesMut,
    /// Acknowledgements waiting for a sync or the cluster, oldest first.
    durable_acks: std::collections::VecDeque<(Gate, BytesMut)>,
    /// Large payloads written from the message, between the bytes of the
    /// write buffer (see `splice`).
    spliced: Spliced,
    /// A 3.x bridge that said so (Mosquitto's `try_private`): its
    /// subscriptions get No Local and Retain As Published, so what it
    /// forwards is not echoed back to it (a loop on a `both` line) and
    /// retained messages stay retained on the other side.
    bridge: bool,
    /// The cluster's answers for the QoS 1/2 messages of the packets being
    /// handled now (`cluster::Cluster::forward`).
    cluster_waits: Vec<oneshot::Receiver<bool>>,
    /// Packet identifiers of the QoS 2 PUBLISHes among them.
    cluster_qos2: Vec<u16>,
}

/// What held acknowledgements wait for: a store sync, and the cluster
/// storing the messages they acknowledge.
struct Gate {
    store: Option<oneshot::Receiver<()>>,
    cluster: Vec<oneshot::Receiver<bool>>,
    /// The cluster did not store a message: the acknowledgements must not go.
    failed: bool,
    /// Incoming QoS 2 packet identifiers whose PUBREC waits here: forgotten
    /// if the gate fails, so the client's resent PUBLISH is taken as new
    /// (and sent to the cluster) rather than as a duplicate.
    qos2: Vec<u16>,
}

impl Gate {
    /// Waits for everything (cancel-safe: what completed is removed).
    async fn wait(&mut self) {
        if let Some(rx) = self.store.as_mut() {
            let _ = rx.await;
            self.store = None;
        }
        while let Some(rx) = self.cluster.last_mut() {
            let stored = rx.await.unwrap_or(false);
            self.cluster.pop();
            if !stored {
                self.failed = true;
                return;
            }
        }
    }

    /// `Some(true)` when everything is done, `Some(false)` when the cluster
    /// failed, `None` while something is pending.
    fn check(&mut self) -> Option<bool> {
        if self.failed {
            return Some(false);
        }
        if let Some(rx) = self.store.as_mut() {
            match rx.try_recv() {
                Ok(()) | Err(oneshot::error::TryRecvError::Closed) => self.store = None,
                Err(oneshot::error::TryRecvError::Empty) => return None,
            }
        }
        while let Some(rx) = self.cluster.last_mut() {
            match rx.try_recv() {
                Ok(true) => {
                    self.cluster.pop();
                }
                Ok(false) | Err(oneshot::error::TryRecvError::Closed) => {
                    self.failed = true;
                    return Some(false);
                }
                Err(oneshot::error::TryRecvError::Empty) => return None,
            }
        }
        Some(true)
    }
}

impl Conn {
    /// Checks a CONNECT and takes over or creates the session. On refusal,
    /// returns the reason and why.
    fn accept(
        broker: &Arc<BrokerState>,
        c: &Connect<'_>,
        frame: &Frame,
        peer: SocketAddr,
        username: Option<Box<str>>,
        bridge: bool,
    ) -> Result<(Conn, BytesMut), (ReasonCode, &'static str)> {
        let config = &broker.config;
        let v = c.protocol;
        let refuse = |r: ReasonCode, why: &'static str| (r, why);

        // Client identifier [MQTT-3.1.1/5: 3.1.3-6..8].
        let mut assigned = None;
        let client_id: Arc<str> = if c.client_id.is_empty() {
            let allowed = match v {
                ProtocolVersion::V3_1 => false,
                ProtocolVersion::V3_1_1 => c.clean_start,
                ProtocolVersion::V5 => true,
            };
            if !allowed {
                return Err(refuse(
                    ReasonCode::ClientIdentifierNotValid,
                    "an empty client identifier needs a clean session",
                ));
            }
            let id = broker.assign_client_id();
            assigned = Some(id.clone());
            id.into()
        } else {
            c.client_id.into()
        };

        let will = match &c.will {
            None => None,
            Some(w) => {
                if w.qos.as_u8() > config.max_qos {
                    return Err(refuse(
                        ReasonCode::QoSNotSupported,
                        "will QoS above the server's maximum QoS",
                    ));
                }
                if w.retain && !config.retain_available {
                    return Err(refuse(
                        ReasonCode::RetainNotSupported,
                        "retained wills are not supported",
                    ));
                }
                let mut delay = 0;
                let mut utf8 = false;
                for p in w.properties.iter() {
                    match p {
                        Property::WillDelayInterval(d) => delay = d,
                        Property::PayloadFormatIndicator(b) => utf8 = b,
                        _ => {}
                    }
                }
                if utf8 && std::str::from_utf8(w.payload).is_err() {
                    return Err(refuse(
                        ReasonCode::PayloadFormatInvalid,
                        "will payload is not the UTF-8 its format indicator says",
                    ));
                }
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
                    Instant::now(),
                );
                Some((Arc::new(msg), delay))
            }
        };

        let mut expiry_secs = if v.is_v5() {
            c.properties
                .iter()
                .find_map(|p| match p {
                    Property::SessionExpiryInterval(s) => Some(s),
                    _ => None,
                })
                .unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            config.persistent_client_expiration_secs.unwrap_or(u32::MAX)
        };
        let mut capped_expiry = None;
        if let Some(max) = config.max_session_expiry_secs {
            if expiry_secs > max {
                expiry_secs = max;
                capped_expiry = Some(max);
            }
        }

        let mut receive_max = u16::MAX;
        let mut client_max_packet = MAX_PACKET_SIZE;
        let mut client_alias_max = 0;
        for p in c.properties.iter() {
            match p {
                Property::ReceiveMaximum(n) => receive_max = n,
                Property::MaximumPacketSize(n) => client_max_packet = n,
                Property::TopicAliasMaximum(n) => client_alias_max = n,
                _ => {}
            }
        }

        let mut keep_alive = c.keep_alive;
        let mut server_keep_alive = None;
        if config.max_keepalive > 0 && (keep_alive == 0 || keep_alive > config.max_keepalive) {
            if !v.is_v5() {
                // A 3.1 / 3.1.1 client cannot be told a shorter keep alive,
                // and closing it sooner than 1.5 times its own would break
                // [MQTT-3.1.1: 3.1.2-24]: refuse it, as Mosquitto does.
                tracing::info!(%peer, keep_alive, "keep alive above max_keepalive refused");
                return Err(refuse(
                    ReasonCode::ClientIdentifierNotValid,
                    "keep alive above the server's max_keepalive",
                ));
            }
            keep_alive = config.max_keepalive;
            server_keep_alive = Some(keep_alive);
        }

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

        let (kick_tx, kick_rx) = oneshot::channel();
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
            rate_window: (Instant::now(), 0),
            read_paused_until: None,
            last_rx: Instant::now(),
            // In a cluster, QoS 1/2 acknowledgements wait for JetStream.
            hold_acks: broker.cluster.is_some()
                || broker
                    .store
                    .as_ref()
                    .is_some_and(|s| s.durability() == crate::store::Durability::Always),
            held: BytesMut::new(),
            durable_acks: Default::default(),
            spliced: Spliced::default(),
            bridge,
            cluster_waits: Vec::new(),
            cluster_qos2: Vec::new(),
        };
        Ok((conn, out))
    }
}

/// What handling one packet asks for next.
type Step = Result<(), Close>;

impl Conn {
    /// The connection's topic aliases, made on first use.
    fn aliases(&mut self) -> &mut TopicAliases {
        let (client_max, server_max) = (
            self.client_alias_max,
            self.broker.config.topic_alias_maximum,
        );
        self.aliases.get_or_insert_with(|| {
            Box::new(TopicAliases {
                outgoing: OutboundAliases::new(client_max),
                incoming: InboundAliases::new(server_max),
            })
        })
    }

    /// The connection's main loop.
    async fn run<R, W>(&mut self, reader: &mut Reader<R>, wr: &mut W, out: &mut BytesMut) -> Close
    where
        R: ReadSide,
        W: AsyncWrite + Unpin,
    {
        if self.session_present {
            self.resend_inflight(out);
        }
        self.fill(out);
        // Packets that arrived together with CONNECT.
        if let Err(close) = self.drain_frames(reader, out) {
            return close;
        }
        let session = self.session.clone();
        self.last_rx = Instant::now();
        // One timer serves keep alive and the publish-rate pause. Keep alive
        // is checked lazily: the timer is not moved on every packet read,
        // only when it fires and finds that the client has been heard since.
        let mut keep_alive_check = self.keep_alive_timeout.map(|k| k.deadline(self.last_rx));
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        loop {
            // A pause that has already ended fires at once below, and
            // handles what it held back.
            let paused_until = self.read_paused_until;
            let wake_at = match (paused_until, keep_alive_check) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(at) = wake_at {
                let at = tokio::time::Instant::from_std(at);
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
            }
            tokio::select! {
                biased;
                kick = &mut self.kick => return match kick {
                    Ok(Kick::Shutdown) => Close::Server(ReasonCode::ServerShuttingDown, "server shutting down"),
                    // A dropped sender: the session was handed on.
                    Ok(Kick::TakenOver) | Err(_) => Close::TakenOver,
                },
                written = wr.write(self.spliced.next(out)), if self.spliced.has_output(out) => {
                    match written {
                        Ok(0) | Err(_) => return Close::Network,
                        Ok(n) => {
                            self.broker.stats.bytes_sent.add(n as u64);
                            self.spliced.advance(out, n);
                            if out.is_empty() {
                                // Nothing waits: an idle connection keeps no
                                // write buffer.
                                *out = BytesMut::new();
                            }
                            self.fill(out);
                        }
                    }
                }
                () = &mut timer, if wake_at.is_some() => {
                    let now = Instant::now();
                    if paused_until.is_some_and(|p| p <= now) {
                        self.read_paused_until = None;
                        // Packets read before the pause began are still waiting.
                        if let Err(close) = self.drain_frames(reader, out) {
                            return close;
                        }
                        self.fill(out);
                    } else if let Some(k) = self.keep_alive_timeout {
                        if keep_alive_check.is_some_and(|c| c <= now) {
                            // [MQTT-3.1.1/5: 3.1.2-24] 1.5 x keep alive.
                            if k.expired(self.last_rx, now) {
                                tracing::info!(client = %self.client_id, "keep alive timeout");
                                return Close::Server(ReasonCode::KeepAliveTimeout, "keep alive timeout");
                            }
                            keep_alive_check = Some(k.deadline(self.last_rx));
                        }
                    }
                }
                read = reader.fill(), if out.len() + self.spliced.pending() < WRITE_HIGH_WATER && paused_until.is_none() => {
                    match read {
                        Ok(0) | Err(_) => return Close::Network,
                        Ok(n) => {
                            self.broker.stats.bytes_received.add(n as u64);
                            self.last_rx = Instant::now();
                            if let Err(close) = self.drain_frames(reader, out) {
                                return close;
                            }
                            self.fill(out);
                        }
                    }
                }
                _ = session.notify.notified(), if out.len() + self.spliced.pending() < WRITE_HIGH_WATER => self.fill(out),
                _ = wait_front(&mut self.durable_acks), if !self.durable_acks.is_empty() => {
                    if let Err(close) = self.release_acks(out) {
                        return close;
                    }
                }
            }
        }
    }

    /// Handles every whole packet in the read buffer.
    fn drain_frames<R: ReadSide>(&mut self, reader: &mut Reader<R>, out: &mut BytesMut) -> Step {
        let mark = crate::store::ops_sent_on_this_thread();
        let result = loop {
            // Over `max_publish_rate`: packets already read wait as well,
            // or a flood written at once would be handled at once.
            if self.read_paused_until.is_some() {
                break Ok(());
            }
            let frame = match reader.try_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break Ok(()),
                Err(e) => break Err(self.decode_error(e)),
            };
            self.broker.stats.messages_received.inc();
            if let Err(close) = self.handle(frame, out) {
                break Err(close);
            }
        };
        // One sync covers every acknowledgement of this read.
        self.seal_held(out, mark);
        result
    }

    /// Puts what `held` collected behind one store barrier, if the packets
    /// handled since `mark` (see `store::ops_sent_on_this_thread`) wrote to
    /// the store. If they did not (clean sessions, no retained message),
    /// nothing needs a sync: the packets only keep their place behind those
    /// already waiting. A barrier costs a wake-up of the writer thread and
    /// one back, per read.
    fn seal_held(&mut self, out: &mut BytesMut, mark: u64) {
        if self.held.is_empty() {
            return;
        }
        let store = match &self.broker.store {
            Some(store) if crate::store::ops_sent_on_this_thread() != mark => Some(store.barrier()),
            _ => None,
        };
        let cluster = std::mem::take(&mut self.cluster_waits);
        let qos2 = std::mem::take(&mut self.cluster_qos2);
        if store.is_some() || !cluster.is_empty() {
            let gate = Gate {
                store,
                // `Gate` takes them from the back: the last one first.
                cluster,
                failed: false,
                qos2,
            };
            self.durable_acks.push_back((gate, self.held.split()));
        } else if let Some((_, waiting)) = self.durable_acks.back_mut() {
            waiting.unsplit(self.held.split());
        } else {
            out.unsplit(self.held.split());
        }
    }

    /// Encodes a packet into `held`, to leave once the store has synced.
    fn send_held(&mut self, packet: &Packet<'_>) {
        let mut held = std::mem::take(&mut self.held);
        self.send(&mut held, packet);
        self.held = held;
    }

    /// Whether a PUBLISH or PUBREL to this client waits in `held`. With
    /// `durability = "always"` and a stored session, a QoS 2 PUBLISH or a
    /// PUBREL (`needs_store`) leaves only once the store has its new state:
    /// else a restart could send the message again under another packet
    /// identifier, or send the PUBLISH again after its PUBREL, and the
    /// client would take it for a new message. Whatever follows a held
    /// packet is held too, so the order (and topic aliases) stay as sent.
    fn hold_outgoing(&self, st: &SessionState, needs_store: bool) -> bool {
        self.hold_acks
            && st.persistent
            && (needs_store || !self.held.is_empty() || !self.durable_acks.is_empty())
    }

    /// Sends a QoS acknowledgement, or with `durability = "always"` holds it
    /// until the store has synced what the packet changed.
    fn send_ack(&mut self, out: &mut BytesMut, packet: &Packet<'_>) {
        if self.hold_acks {
            self.send_held(packet);
        } else {
            self.send(out, packet);
        }
    }

    /// Moves acknowledgements whose sync (and cluster store) has completed
    /// to the write buffer, in order. A message the cluster did not store
    /// closes the connection with its acknowledgement and every later one
    /// unsent, so the client sends them again (MQTT 5: DISCONNECT 0x80).
    fn release_acks(&mut self, out: &mut BytesMut) -> Step {
        while let Some((gate, _)) = self.durable_acks.front_mut() {
            match gate.check() {
                Some(true) => {
                    if let Some((_, bytes)) = self.durable_acks.pop_front() {
                        out.extend_from_slice(&bytes);
                    }
                }
                Some(false) => {
                    // None of the held PUBRECs goes out: forget their ids.
                    let pids: Vec<u16> = self
                        .durable_acks
                        .iter()
                        .flat_map(|(g, _)| g.qos2.iter().copied())
                        .collect();
                    for pid in pids {
                        self.forget_incoming(pid);
                    }
                    tracing::warn!(
                        client = %self.client_id,
                        "cluster did not store a QoS 1/2 message in time: closing without acknowledging it"
                    );
                    return Err(Close::Server(
                        ReasonCode::UnspecifiedError,
                        "the cluster could not store the message; send it again",
                    ));
                }
                None => break,
            }
        }
        Ok(())
    }

    fn decode_error(&self, e: DecodeError) -> Close {
        tracing::info!(client = %self.client_id, peer = %self.peer, error = %e, "malformed packet");
        self.broker.stats.protocol_errors.inc();
        Close::Server(e.reason_code(), e.as_str())
    }

    fn protocol_error(&self, reason: ReasonCode, what: &'static str) -> Close {
        tracing::info!(client = %self.client_id, peer = %self.peer, ?reason, "{what}");
        self.broker.stats.protocol_errors.inc();
        Close::Server(reason, what)
    }

    fn send(&self, out: &mut BytesMut, packet: &Packet<'_>) {
        // Packets the broker builds itself are valid by construction.
        self.send_within(out, packet, usize::MAX);
    }

    /// [`send`](Conn::send) if the packet takes at most `limit` bytes (the
    /// client's Maximum Packet Size); says whether it was sent.
    fn send_within(&self, out: &mut BytesMut, packet: &Packet<'_>, limit: usize) -> bool {
        if push_packet(out, self.version, packet, limit).is_err() {
            return false;
        }
        tracing::debug!(target: "mqtt_broker::packets", "{} <- {}", self.client_id, describe(packet));
        self.broker.stats.messages_sent.inc();
        true
    }

    /// Sends a PUBLISH whose large payload is written from the message
    /// (see `splice`): the header goes into `out`, the payload is queued
    /// after it. Says whether it was within the client's Maximum Packet
    /// Size.
    fn send_spliced(&mut self, out: &mut BytesMut, publish: Publish<'_>, payload: &Bytes) -> bool {
        let mut head = BytesMut::new();
        let headless = Packet::Publish(Publish {
            payload: &[],
            ..publish
        });
        if push_packet(&mut head, self.version, &headless, usize::MAX).is_err() {
            return false;
        }
        let limit = self.client_max_packet as usize;
        if crate::splice::put_header(out, &head, payload.len(), limit).is_none() {
            return false;
        }
        self.spliced.push(out.len(), payload.clone());
        tracing::debug!(target: "mqtt_broker::packets", "{} <- {}", self.client_id, describe(&Packet::Publish(publish)));
        self.broker.stats.messages_sent.inc();
        true
    }

    fn handle(&mut self, frame: Frame, out: &mut BytesMut) -> Step {
        let packet = decode_body(
            frame.header.packet_type,
            frame.header.flags,
            frame.body(),
            self.version,
        )
        .map_err(|e| self.decode_error(e))?;
        tracing::debug!(target: "mqtt_broker::packets", "{} -> {}", self.client_id, describe(&packet));
        match packet {
            Packet::Publish(p) => self.on_publish(&p, &frame, out),
            Packet::PubAck(r) => self.on_reply(r.pid, Reply::PubAck(r.reason), out),
            Packet::PubRec(r) => self.on_reply(r.pid, Reply::PubRec(r.reason), out),
            Packet::PubRel(r) => {
                let known = self.forget_incoming(r.pid.get());
                let mut comp = PubResp::new(r.pid);
                if !known {
                    comp.reason = ReasonCode::PacketIdentifierNotFound;
                }
                self.send_ack(out, &Packet::PubComp(comp));
                Ok(())
            }
            Packet::PubComp(r) => self.on_reply(r.pid, Reply::PubComp(r.reason), out),
            Packet::Subscribe(s) => self.on_subscribe(&s, out),
            Packet::Unsubscribe(u) => self.on_unsubscribe(&u, out),
            Packet::PingReq => {
                // Whatever was queued for this client before the PINGREQ goes
                // out before the PINGRESP (as in Mosquitto), so a PINGRESP
                // tells the client it has been sent everything due so far.
                // Packets held for the store count as sent before it.
                self.fill(out);
                if self.held.is_empty() && self.durable_acks.is_empty() {
                    self.send(out, &Packet::PingResp);
                } else {
                    self.send_held(&Packet::PingResp);
                }
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

    fn on_publish(&mut self, p: &Publish<'_>, frame: &Frame, out: &mut BytesMut) -> Step {
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
                    self.send_ack(out, &Packet::PubRec(PubResp::new(pid)));
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
                self.send_ack(out, &Packet::PubAck(ack));
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
                self.send_ack(out, &Packet::PubRec(rec));
            }
        }
        Ok(())
    }

    /// An acknowledgement of a message to this client: a finished one is
    /// forgotten (in the store too), a released one stored as such, and a
    /// PUBREL sent where the table says so.
    fn on_reply(&mut self, pid: Pid, reply: Reply, out: &mut BytesMut) -> Step {
        let mut st = self.session.lock();
        let rel = match st.on_reply(pid, reply) {
            ReplyEffect::Done(done) => {
                self.broker
                    .forget_message(&self.session, &st, &done.delivery);
                if let Reply::PubRec(_) = reply {
                    // The receiver refused the message: room in the window.
                    drop(st);
                    self.fill(out);
                }
                return Ok(());
            }
            ReplyEffect::Ignore => return Ok(()),
            ReplyEffect::Released(i) => {
                self.broker.message_state(
                    &self.session,
                    &st,
                    &st.inflight[i].delivery,
                    StoredState::Released(pid.get()),
                );
                PubResp::new(pid)
            }
            ReplyEffect::SendPubRel(reason) => PubResp {
                reason,
                ..PubResp::new(pid)
            },
        };
        let hold = self.hold_outgoing(&st, true);
        drop(st);
        if hold {
            self.send_held(&Packet::PubRel(rel));
        } else {
            self.send(out, &Packet::PubRel(rel));
        }
        Ok(())
    }

    /// Forgets an incoming QoS 2 identifier; returns whether it was known.
    fn forget_incoming(&self, pid: u16) -> bool {
        let mut st = self.session.lock();
        let known = st.incoming_qos2.remove(pid);
        if let (Some(store), true, true) = (&self.broker.store, st.persistent, known) {
            store.del_qos2(&self.client_id, pid);
        }
        known
    }

    fn on_subscribe(&mut self, s: &Subscribe<'_>, out: &mut BytesMut) -> Step {
        let config = &self.broker.config;
        let sub_id = s.properties.subscription_identifiers().next();
        let mut codes = Vec::with_capacity(4);
        let mut retained = Vec::new();
        let now = Instant::now();
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
        if self.session.lock().persistent {
            if let Some(c) = &self.broker.cluster {
                // ... and written to the cluster's session record.
                self.cluster_waits.push(c.records_written());
            }
            self.send_ack(out, &Packet::SubAck(ack));
        } else {
            self.send(out, &Packet::SubAck(ack));
        }
        for d in retained {
            self.session.enqueue(d, &self.broker, true);
        }
        self.fill(out);
        Ok(())
    }

    /// The SUBACK failure for a filter this client may not subscribe to.
    fn check_subscription(&self, filter: &str) -> Option<ReasonCode> {
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
    fn topic_too_big(&self, topic: &str) -> bool {
        let config = &self.broker.config;
        (config.max_topic_length > 0 && topic.len() > config.max_topic_length)
            || (config.max_topic_levels > 0 && topic.split('/').count() > config.max_topic_levels)
    }

    /// Counts a PUBLISH against `max_publish_rate`; a client over its rate
    /// is neither read from nor has its already-read packets handled until
    /// the current second ends, so a flood slows the flooder without
    /// starving anyone else.
    fn count_publish(&mut self) {
        let limit = self.broker.config.max_publish_rate;
        if limit == 0 {
            return;
        }
        let now = Instant::now();
        let (start, count) = &mut self.rate_window;
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count >= limit {
            self.read_paused_until = Some(*start + Duration::from_secs(1));
        }
    }

    fn on_unsubscribe(&mut self, u: &Unsubscribe<'_>, out: &mut BytesMut) -> Step {
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
            self.send_ack(out, &Packet::UnsubAck(ack));
        } else {
            self.send(out, &Packet::UnsubAck(ack));
        }
        Ok(())
    }

    fn on_disconnect(&mut self, d: &Disconnect<'_>) -> Step {
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

    /// Moves queued messages into the write buffer while the inflight window
    /// and the buffer allow.
    fn fill(&mut self, out: &mut BytesMut) {
        let mark = crate::store::ops_sent_on_this_thread();
        let now = Instant::now();
        let session = self.session.clone();
        let mut st = session.lock();
        if st.generation != self.generation {
            // Taken over while this task was busy: the queue is the new
            // connection's now. Taking from it here would put messages in
            // flight on a dead socket after the new one resent in-flight ones.
            return;
        }
        if st.unsent > 0 {
            self.resend_unsent(&mut st, out);
        }
        // Held packets count against the high water mark too.
        let waiting: usize = self.durable_acks.iter().map(|(_, b)| b.len()).sum();
        while out.len() + self.spliced.pending() + self.held.len() + waiting < WRITE_HIGH_WATER {
            let Some(front) = st.pending.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && st.inflight.len() >= usize::from(self.send_window) {
                break;
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
            let hold = self.hold_outgoing(&st, d.qos == QoS::ExactlyOnce);
            let mut held = std::mem::take(&mut self.held);
            let written = self.write_publish(
                &d,
                qos_pid,
                false,
                now,
                if hold { &mut held } else { out },
                !hold,
            );
            self.held = held;
            if !written {
                self.broker.forget_message(&session, &st, &d);
            } else {
                if let Some(pid) = qos_pid.pid() {
                    self.broker
                        .message_state(&session, &st, &d, StoredState::Sent(pid.get()));
                    let state = if d.qos == QoS::AtLeastOnce {
                        OutState::AwaitPubAck
                    } else {
                        OutState::AwaitPubRec
                    };
                    st.inflight.push_back(Outgoing {
                        pid,
                        delivery: d,
                        state,
                        unsent: false,
                    });
                }
            }
        }
        drop(st);
        self.seal_held(out, mark);
    }

    /// On session resume: every unacknowledged PUBLISH again with DUP, and
    /// every PUBREL again [MQTT-3.1.1/5: 4.4.0-1].
    fn resend_inflight(&mut self, out: &mut BytesMut) {
        let mark = crate::store::ops_sent_on_this_thread();
        {
            let mut st = self.session.lock();
            for o in st.inflight.iter_mut() {
                o.unsent = true;
            }
            st.unsent = st.inflight.len();
        }
        let session = self.session.clone();
        let mut st = session.lock();
        self.resend_unsent(&mut st, out);
        drop(st);
        self.seal_held(out, mark);
    }

    /// Resends what a reconnection owes, as far as the client's Receive
    /// Maximum allows; the rest follows as acknowledgements free the window.
    fn resend_unsent(&mut self, st: &mut SessionState, out: &mut BytesMut) {
        let now = Instant::now();
        let mut i = 0;
        while st.unsent > 0
            && i < st.inflight.len()
            && st.inflight.len() - st.unsent < usize::from(self.send_window)
        {
            if st.inflight[i].unsent {
                let o = &st.inflight[i];
                // Held like first sends (see `hold_outgoing`): after a
                // takeover the state may not be on disk yet.
                let hold = self.hold_outgoing(st, o.state != OutState::AwaitPubAck);
                let mut held = std::mem::take(&mut self.held);
                let to = if hold { &mut held } else { &mut *out };
                match o.state {
                    OutState::AwaitPubAck | OutState::AwaitPubRec => {
                        let qos_pid = QosPid::from_qos(o.delivery.qos, o.pid);
                        self.write_publish(&o.delivery, qos_pid, true, now, to, !hold);
                    }
                    OutState::AwaitPubComp => {
                        let pid = o.pid;
                        self.send(to, &Packet::PubRel(PubResp::new(pid)));
                    }
                }
                self.held = held;
                st.inflight[i].unsent = false;
                st.unsent -= 1;
            }
            i += 1;
        }
    }

    /// Encodes one PUBLISH to this client. Returns false when the message is
    /// larger than the client accepts; it is dropped and counted
    /// [MQTT-5: 3.1.2-25]. `direct` says `out` is the write buffer itself (not
    /// `held`), so a large payload can be spliced in rather than copied.
    fn write_publish(
        &mut self,
        d: &Delivery,
        qos_pid: QosPid,
        dup: bool,
        now: Instant,
        out: &mut BytesMut,
        direct: bool,
    ) -> bool {
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
                match self.aliases().outgoing.choose(topic) {
                    OutAlias::Existing(a) => {
                        props.push(Property::TopicAlias(a));
                        topic = "";
                    }
                    OutAlias::New(a) => {
                        new_alias = Some(a);
                        props.push(Property::TopicAlias(a));
                    }
                    OutAlias::None => {}
                }
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
        let sent = if direct && d.msg.payload.len() >= SPLICE_MIN {
            self.send_spliced(out, publish, &d.msg.payload)
        } else {
            self.send_within(out, &packet, self.client_max_packet as usize)
        };
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

    /// Sends the server's DISCONNECT if any, flushes, and hands the session
    /// back with the will and expiry the close calls for.
    async fn finish<W: AsyncWrite + Unpin>(mut self, close: Close, wr: &mut W, out: &mut BytesMut) {
        let publish_will = match close {
            Close::Disconnect { will } => will,
            Close::Network | Close::Server(..) | Close::TakenOver => true,
        };
        let reason = match close {
            Close::Server(r, text) => Some((r, text)),
            Close::TakenOver => Some((
                ReasonCode::SessionTakenOver,
                "another connection took the session over",
            )),
            _ => None,
        };
        if let (Some((reason, text)), true) = (reason, self.version.is_v5()) {
            let reason = if reason.allowed_in(mqtt_codec::PacketType::Disconnect) {
                reason
            } else {
                ReasonCode::UnspecifiedError
            };
            let props = [Property::ReasonString(text)];
            // [MQTT-5: 3.1.2-29] Request Problem Information 0 allows the
            // Reason String only on CONNACK and DISCONNECT, which this is.
            let disconnect = Disconnect {
                reason,
                properties: mqtt_codec::Properties::from_slice(&props),
            };
            let packet = Packet::Disconnect(disconnect);
            if !self.send_within(out, &packet, self.client_max_packet as usize) {
                // Too large for the client with the text: send the code alone.
                self.send(out, &Packet::Disconnect(Disconnect::new(reason)));
            }
        }
        if self.spliced.has_output(out) {
            let spliced = &mut self.spliced;
            let _ = tokio::time::timeout(CLOSE_FLUSH, async {
                while spliced.has_output(out) {
                    let n = wr.write(spliced.next(out)).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::WriteZero.into());
                    }
                    spliced.advance(out, n);
                }
                wr.flush().await
            })
            .await;
        }
        let _ = tokio::time::timeout(CLOSE_FLUSH, wr.shutdown()).await;
        tracing::info!(client = %self.client_id, peer = %self.peer, ?close, "client disconnected");
        let will = if publish_will {
            self.will.clone()
        } else {
            None
        };
        self.broker
            .detach(&self.session, self.generation, will, self.expiry_secs);
    }
}

/// Completes when the oldest held acknowledgement's gate is done.
async fn wait_front(waiting: &mut std::collections::VecDeque<(Gate, BytesMut)>) {
    match waiting.front_mut() {
        Some((gate, _)) => gate.wait().await,
        None => std::future::pending().await,
    }
}
