//! One client connection, from CONNECT to close.
//!
//! A single task owns the socket (or, while the connection is idle, none:
//! `park.rs`). It reads into a buffer that grows on demand
//! and cuts each whole packet out of it once (`Bytes`), so a payload is never
//! copied on its way to subscribers; it writes from a buffer that collects
//! many packets per system call. One `select!` drives reading, writing, the
//! session's wake-ups, keep alive and takeover, so a slow reader only ever
//! slows its own connection.
//!
//! The protocol state that the client shares (framing, keep alive, topic
//! aliases, the QoS transitions, incoming QoS 2 ids, packet identifiers) is
//! `mqtt_proto`'s; these files turn it into store operations and bytes:
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | `serve`, the connection's state (`Conn`) and its `select!` loop |
//! | `reader.rs` | the read side: whole packets out of a buffer that grows on demand |
//! | `connect.rs` | the CONNECT exchange: authentication, the cluster's claim, the session attached, the CONNACK or the refusal (MQTT 5.0 sections 3.1, 3.2) |
//! | `negotiate.rs` | CONNECT negotiation as a pure function: the CONNECT and the configuration give the accepted parameters or the refusal's reason code |
//! | `inbound.rs` | packets from the client: PUBLISH and its acknowledgements, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT (sections 3.3 to 3.14) |
//! | `delivery.rs` | the session's queue to the wire: the inflight window, resends with DUP, topic aliases out (sections 4.3, 4.4, 4.9) |
//! | `outgoing.rs` | `Outbox`: the write buffer, spliced payloads, and the packets held until a store sync (`durability = "always"`) or the cluster; `Conn::send` by `Lane` |
//! | `close.rs` | the end: the server's DISCONNECT, the will, the session handed back |
//! | `park.rs` | idle plain TCP connections parked without a task, one parker task watching them, and `live`, the loop that runs, parks and resumes a connection |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_codec::{
    decode_body, ConnAck, Connect, DecodeError, Disconnect, List, Packet, Pid, Property,
    PropertyId, ProtocolVersion, PubResp, Publish, QoS, QosPid, ReasonCode, RetainHandling, SubAck,
    Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, MAX_PACKET_SIZE,
};
use mqtt_proto::{Frame, InboundAliases, KeepAliveTimeout, OutboundAliases, Qos2Arrival, Reply};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::acl::AclView;
use crate::broker::{split_filter, BrokerState};
use crate::config::ListenerConfig;
use crate::drop_log::DropReason;
use crate::lazy::{LazyDeque, LazyVec};
use crate::log::describe;
use crate::message::Message;
use crate::route::RouteCache;
use crate::session::{Delivery, Kick, OutState, Session, SessionState, SubRecord};
use crate::splice::{Spliced, SPLICE_MIN};
use crate::store::StoredState;
use crate::transport::{ReadSide, Transport};

mod close;
mod connect;
mod delivery;
mod inbound;
mod negotiate;
mod outgoing;
mod park;
mod reader;

use self::connect::*;
use self::negotiate::*;
use self::outgoing::*;
use self::reader::*;

pub(crate) use self::connect::PendingConnect;
use self::park::live;
pub(crate) use self::park::{Held, ParkerCell};

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
/// and freed when they end, and the socket arrives boxed. A plain TCP
/// connection idle for `park_idle_ms` then gives up its task altogether
/// (`park.rs`); others keep the task with `Conn` and `run`'s state
/// (memory per idle connection, issues 7 and 20).
pub(crate) async fn serve<S: Transport>(incoming: Box<Incoming<S>>, held: Option<Held>) {
    let Some(open) = Box::pin(open(incoming)).await else {
        return;
    };
    let mut open = Box::new(open);
    let broker = open.conn.broker.clone();
    broker.stats.clients_connected.inc();
    broker.stats.connections_total.inc();
    // Not exact under a race of two connects (a sum of shards), which is
    // as much as a monitoring maximum needs.
    broker.stats.clients_maximum.fetch_max(
        broker.stats.clients_connected.get(),
        std::sync::atomic::Ordering::Relaxed,
    );
    if let Err(close) = open.conn.start(&mut open.reader) {
        let Open { conn, mut wr, .. } = *open;
        Box::pin(conn.finish(close, &mut wr)).await;
        return;
    }
    live(open, held).await;
}

/// A connection past its CONNACK.
struct Open<S: Transport> {
    conn: Conn,
    reader: Reader<S::Read>,
    wr: S::Write,
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
    kick: crate::kick::Kicked,
    session_present: bool,
    /// The ACL rules for this client.
    acl: AclView,
    /// The authenticated user name, if any.
    username: Option<Box<str>>,
    /// Start of the current one-second window and PUBLISH packets in it,
    /// for `max_publish_rate` (boxed, made on first use: most brokers set
    /// no rate and every idle connection would carry it).
    rate_window: Option<Box<(Instant, u32)>>,
    read_paused_until: Option<Instant>,
    /// When bytes last arrived: for keep alive, and the arrival time of
    /// the messages in them.
    last_rx: Instant,
    /// What waits to be written, and what is held for the store.
    outbox: Outbox,
    /// A 3.x bridge that said so (Mosquitto's `try_private`): its
    /// subscriptions get No Local and Retain As Published, so what it
    /// forwards is not echoed back to it (a loop on a `both` line) and
    /// retained messages stay retained on the other side.
    bridge: bool,
    /// The cluster's answers for the QoS 1/2 messages of the packets being
    /// handled now (`cluster::Cluster::forward`).
    cluster_waits: LazyVec<oneshot::Receiver<bool>>,
    /// Packet identifiers of the QoS 2 PUBLISHes among them.
    cluster_qos2: LazyVec<u16>,
}

/// What handling one packet asks for next.
type Step = Result<(), Close>;

/// How `Conn::run` ends.
enum Ran {
    Closed(Close),
    /// Nothing happened for the time asked and nothing is pending: the
    /// connection may be parked (`park.rs`).
    Idle,
}

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

    /// What runs once, right after the CONNACK: the session's messages in
    /// flight sent again, and the packets that arrived with CONNECT.
    fn start<R: ReadSide>(&mut self, reader: &mut Reader<R>) -> Step {
        if self.session_present {
            self.resend_inflight();
        }
        self.last_rx = crate::clock::now();
        self.fill();
        self.drain_frames(reader)
    }

    /// The connection's main loop, until it closes or, with `park_after`,
    /// until it has been idle that long with nothing pending.
    async fn run<R, W>(
        &mut self,
        reader: &mut Reader<R>,
        wr: &mut W,
        park_after: Option<Duration>,
    ) -> Ran
    where
        R: ReadSide,
        W: AsyncWrite + Unpin,
    {
        // Resumed from parking: what was queued meanwhile.
        self.fill();
        let session = self.session.clone();
        // One timer serves keep alive, the publish-rate pause and parking.
        // Keep alive is checked lazily: the timer is not moved on every
        // packet read, only when it fires and finds that the client has been
        // heard since; parking likewise counts events and looks at the
        // count when the timer fires.
        let mut keep_alive_check = self.keep_alive_timeout.map(|k| k.deadline(self.last_rx));
        let mut park_check = park_after.map(|d| crate::clock::now() + d);
        let mut events: u32 = 0;
        let mut events_at_check: u32 = 0;
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        loop {
            // A pause that has already ended fires at once below, and
            // handles what it held back.
            let paused_until = self.read_paused_until;
            let wake_at = [paused_until, keep_alive_check, park_check]
                .into_iter()
                .flatten()
                .min();
            if let Some(at) = wake_at {
                let at = tokio::time::Instant::from_std(at);
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
            }
            tokio::select! {
                biased;
                kick = &mut self.kick => return Ran::Closed(match kick {
                    Ok(Kick::Shutdown) => Close::Server(ReasonCode::ServerShuttingDown, "server shutting down"),
                    // A dropped sender: the session was handed on.
                    Ok(Kick::TakenOver) | Err(_) => Close::TakenOver,
                }),
                written = wr.write(self.outbox.spliced.next(&self.outbox.buf)), if self.outbox.has_output() => {
                    match written {
                        Ok(0) | Err(_) => return Ran::Closed(Close::Network),
                        Ok(n) => {
                            events = events.wrapping_add(1);
                            self.broker.stats.bytes_sent.add(n as u64);
                            self.outbox.advance(n);
                            self.fill();
                        }
                    }
                }
                () = &mut timer, if wake_at.is_some() => {
                    let now = crate::clock::now();
                    if paused_until.is_some_and(|p| p <= now) {
                        self.read_paused_until = None;
                        // Packets read before the pause began are still waiting.
                        if let Err(close) = self.drain_frames(reader) {
                            return Ran::Closed(close);
                        }
                        self.fill();
                    } else {
                        if let Some(k) = self.keep_alive_timeout {
                            if keep_alive_check.is_some_and(|c| c <= now) {
                                // [MQTT-3.1.1/5: 3.1.2-24] 1.5 x keep alive.
                                if k.expired(self.last_rx, now) {
                                    tracing::info!(client = %self.client_id, "keep alive timeout");
                                    return Ran::Closed(Close::Server(ReasonCode::KeepAliveTimeout, "keep alive timeout"));
                                }
                                keep_alive_check = Some(k.deadline(self.last_rx));
                            }
                        }
                        if park_check.is_some_and(|c| c <= now) {
                            if events == events_at_check && self.parkable(reader) {
                                return Ran::Idle;
                            }
                            events_at_check = events;
                            park_check = park_after.map(|d| now + d);
                        }
                    }
                }
                read = reader.fill(), if self.outbox.unwritten() < WRITE_HIGH_WATER && paused_until.is_none() => {
                    match read {
                        Ok(0) | Err(_) => return Ran::Closed(Close::Network),
                        Ok(n) => {
                            events = events.wrapping_add(1);
                            self.broker.stats.bytes_received.add(n as u64);
                            self.last_rx = crate::clock::now();
                            if let Err(close) = self.drain_frames(reader) {
                                return Ran::Closed(close);
                            }
                            self.fill();
                        }
                    }
                }
                _ = session.notify.notified(), if self.outbox.unwritten() < WRITE_HIGH_WATER => {
                    events = events.wrapping_add(1);
                    self.fill();
                }
                _ = wait_front(&mut self.outbox.waiting), if !self.outbox.waiting.is_empty() => {
                    events = events.wrapping_add(1);
                    if let Err(close) = self.release_acks() {
                        return Ran::Closed(close);
                    }
                }
            }
        }
    }

    /// Nothing half done: no bytes to write or held, no partial packet
    /// read, no answer awaited, no pause.
    fn parkable<R>(&self, reader: &Reader<R>) -> bool {
        !self.outbox.has_output()
            && self.outbox.waiting.is_empty()
            && self.cluster_waits.is_empty()
            && self.read_paused_until.is_none()
            && reader.buf.is_empty()
    }

    /// Handles every whole packet in the read buffer.
    fn drain_frames<R: ReadSide>(&mut self, reader: &mut Reader<R>) -> Step {
        let mark = crate::store::ops_sent_on_this_thread();
        // Subscribers wake once this read's messages are all queued.
        let _wakes = crate::wakeup::Batch::begin();
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
            if let Err(close) = self.handle(frame) {
                break Err(close);
            }
        };
        // QoS 0 messages of this read still held (`RouteCache::held`) are
        // queued before anything else happens: before the wake-ups above
        // and before a close publishes the will.
        self.broker.queue_held(&mut self.route);
        // One sync covers every acknowledgement of this read.
        self.seal_held(mark);
        result
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
}
