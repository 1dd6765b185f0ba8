//! Idle connections parked without a task (issue 20).
//!
//! A device fleet is mostly connections that send a PINGREQ a minute. A
//! task per connection would keep, for each of them, tokio's task cell
//! (the connection's whole future: about 1 KiB) and tokio's socket
//! registration (256 bytes) for as long as it is connected. So a plain TCP
//! connection that has had nothing to do for `park_idle_ms` gives both up:
//! its task ends, its socket leaves tokio, and what remains, `Parked`
//! (the connection's state, the socket's descriptor, its keep-alive
//! deadline), waits here.
//!
//! One task, the parker, watches every parked socket through an epoll set
//! of its own (mio's `Poll`, whose descriptor tokio watches in turn), and
//! their keep-alive deadlines with one timer. A parked connection is
//! resumed, as a new task with the same state, when:
//! - its socket has bytes (or the client closed it);
//! - its session has a message for it (`Session::notify`);
//! - it is told to close (taken over, server shutting down);
//! - its keep alive runs out: the resumed task finds it expired and closes
//!   it, as an active connection would.
//!
//! TLS and WebSocket connections are not parked: their streams hold state
//! (a TLS session, a partial frame) that a bare descriptor cannot.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::net::{SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use mio::unix::SourceFd;
use parking_lot::Mutex;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

use super::*;

/// What a connection holds that is not its state: its place under
/// `max_connections` and the server's count of running connections
/// (`Server::shutdown` waits for every one of them).
pub(crate) type Held = (
    tokio::sync::OwnedSemaphorePermit,
    tokio::sync::mpsc::Sender<()>,
);

/// A connection without a task.
struct Parked {
    conn: Dormant,
    stream: std::net::TcpStream,
    read_size: u32,
    max_packet_size: u32,
    held: Option<Held>,
}

/// A parked connection's state: its `Conn` less what a parked connection
/// has empty (the outbox, the cluster's answers, a read pause) or can make
/// again when it resumes (the client id, which is its session's; the route
/// cache; the broker, which the parker holds): 184 bytes less per idle
/// connection than the whole `Conn`.
struct Dormant {
    session: Arc<Session>,
    generation: u64,
    peer: Peer,
    last_rx: Instant,
    will: Option<(Arc<Message>, u32)>,
    acl: AclView,
    username: Option<Box<str>>,
    aliases: Option<Box<TopicAliases>>,
    rate_window: Option<Box<(Instant, u32)>>,
    kick: crate::kick::Kicked,
    keep_alive_timeout: Option<KeepAliveTimeout>,
    expiry_secs: u32,
    client_max_packet: u32,
    send_window: u16,
    client_alias_max: u16,
    version: ProtocolVersion,
    session_present: bool,
    bridge: bool,
    hold_acks: bool,
}

/// A peer's address in 16 bytes instead of `SocketAddr`'s 32: an IPv4
/// address in place, an IPv6 one (rarer, and 28 bytes) behind a pointer.
enum Peer {
    V4(SocketAddrV4),
    V6(Box<SocketAddrV6>),
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Peer {
        match a {
            SocketAddr::V4(a) => Peer::V4(a),
            SocketAddr::V6(a) => Peer::V6(Box::new(a)),
        }
    }
}

impl From<Peer> for SocketAddr {
    fn from(p: Peer) -> SocketAddr {
        match p {
            Peer::V4(a) => SocketAddr::V4(a),
            Peer::V6(a) => SocketAddr::V6(*a),
        }
    }
}

impl Dormant {
    /// `conn`, which `Conn::parkable` found with nothing pending.
    fn of(conn: Conn) -> Dormant {
        // Every field named, so a new one cannot be forgotten here.
        let Conn {
            broker: _,
            session,
            generation,
            client_id: _,
            peer,
            version,
            keep_alive_timeout,
            send_window,
            client_max_packet,
            client_alias_max,
            aliases,
            route: _,
            will,
            expiry_secs,
            kick,
            session_present,
            acl,
            username,
            rate_window,
            read_paused_until: _,
            last_rx,
            outbox,
            bridge,
            cluster_waits: _,
            cluster_qos2: _,
        } = conn;
        debug_assert!(
            outbox.backlog() == 0 && outbox.nothing_held(),
            "parked with output pending"
        );
        Dormant {
            session,
            generation,
            peer: peer.into(),
            last_rx,
            will,
            acl,
            username,
            aliases,
            rate_window,
            kick,
            keep_alive_timeout,
            expiry_secs,
            client_max_packet,
            send_window,
            client_alias_max,
            version,
            session_present,
            bridge,
            hold_acks: outbox.hold_acks(),
        }
    }

    /// The connection again, as it was when parked, of `broker`.
    fn wake(self, broker: Arc<BrokerState>) -> Conn {
        let Dormant {
            session,
            generation,
            peer,
            last_rx,
            will,
            acl,
            username,
            aliases,
            rate_window,
            kick,
            keep_alive_timeout,
            expiry_secs,
            client_max_packet,
            send_window,
            client_alias_max,
            version,
            session_present,
            bridge,
            hold_acks,
        } = self;
        Conn {
            broker,
            client_id: session.id.clone(),
            session,
            generation,
            peer: peer.into(),
            version,
            keep_alive_timeout,
            send_window,
            client_max_packet,
            client_alias_max,
            aliases,
            route: None,
            will,
            expiry_secs,
            kick,
            session_present,
            acl,
            username,
            rate_window,
            read_paused_until: None,
            last_rx,
            outbox: Outbox::new(hold_acks, BytesMut::new()),
            bridge,
            cluster_waits: Default::default(),
            cluster_qos2: Default::default(),
        }
    }
}

/// The broker's parker, started on first use. `None` when the epoll set
/// could not be made: connections then stay tasks.
#[derive(Default)]
pub(crate) struct ParkerCell(OnceLock<Option<Parker>>);

impl ParkerCell {
    /// `broker`'s parker (the cell is `broker.parker`).
    pub(super) fn get(&self, broker: &Arc<BrokerState>) -> Option<&Parker> {
        self.0.get_or_init(|| Parker::start(broker)).as_ref()
    }
}

pub(crate) struct Parker {
    shared: Arc<Shared>,
}

struct Shared {
    /// The broker of every connection parked here, which they get back
    /// when they resume. (Weak: the broker holds the parker.)
    broker: Weak<BrokerState>,
    /// Adds and removes parked sockets from any thread.
    registry: mio::Registry,
    slots: Mutex<Slots>,
    /// Tokens of parked connections to resume, pushed by their wakers.
    woken: Mutex<Vec<u64>>,
    /// The parker task.
    task: AtomicWaker,
    /// Set if the parker's epoll set failed: nothing parks any more.
    failed: std::sync::atomic::AtomicBool,
}

/// Parked connections by token: the slot's index in the low 32 bits, its
/// generation in the high ones, so a waker left behind by a connection
/// that has since resumed never resumes the one parked after it.
struct Slots {
    entries: Vec<(u32, Option<Box<Parked>>)>,
    free: Vec<u32>,
    /// Keep-alive deadlines, soonest first; entries whose connection has
    /// resumed are skipped when they come up.
    deadlines: BinaryHeap<Reverse<Due>>,
    /// What `Due::at_ms` counts from.
    epoch: Instant,
    parked: usize,
}

/// A keep-alive deadline of the connection parked under `token`, in
/// milliseconds from `Slots::epoch`: 16 bytes, not the 24 of an `Instant`
/// and a token, as the heap holds one per parked connection. The token's
/// generation tells an entry left by a connection that has since resumed
/// (`prune` drops those), even when the same connection parks again in
/// the same slot with the same deadline, as one that only receives does.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at_ms: u64,
    token: u64,
}

impl Default for Slots {
    fn default() -> Slots {
        Slots {
            entries: Vec::new(),
            free: Vec::new(),
            deadlines: BinaryHeap::new(),
            epoch: crate::clock::now(),
            parked: 0,
        }
    }
}

impl Slots {
    /// Puts `parked` in a free slot: its token, and the connection there.
    fn insert(&mut self, parked: Box<Parked>) -> (u64, &mut Parked) {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push((0, None));
                (self.entries.len() - 1) as u32
            }
        };
        self.parked += 1;
        let slot = &mut self.entries[index as usize];
        let token = (u64::from(slot.0) << 32) | u64::from(index);
        (token, slot.1.insert(parked))
    }

    fn take(&mut self, token: u64) -> Option<Box<Parked>> {
        let index = (token & 0xffff_ffff) as u32;
        let slot = self.entries.get_mut(index as usize)?;
        if u64::from(slot.0) != token >> 32 {
            return None;
        }
        let parked = slot.1.take()?;
        slot.0 = slot.0.wrapping_add(1);
        self.free.push(index);
        self.parked -= 1;
        Some(parked)
    }

    /// Drops the deadlines of resumed connections once they outnumber the
    /// parked ones (a connection that parks and resumes often would
    /// otherwise leave one behind each time).
    fn prune(&mut self) {
        if self.deadlines.len() <= 2 * self.parked + 64 {
            return;
        }
        let mut deadlines = std::mem::take(&mut self.deadlines);
        deadlines.retain(|Reverse(due)| self.current(*due).is_some());
        self.deadlines = deadlines;
    }

    /// A connection's keep-alive deadline in `Due::at_ms`'s terms, rounded
    /// up (a connection resumed for its keep alive is then never early).
    fn at_ms(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.epoch);
        let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// When `at_ms` falls, as an `Instant`.
    fn instant(&self, at_ms: u64) -> Instant {
        self.epoch + Duration::from_millis(at_ms)
    }

    /// The token `due` was pushed with, if that connection is still parked
    /// (the slot's generation has not moved on).
    fn current(&self, due: Due) -> Option<u64> {
        let token = due.token;
        let (generation, parked) = self.entries.get((token & 0xffff_ffff) as usize)?;
        (u64::from(*generation) == token >> 32 && parked.is_some()).then_some(token)
    }
}

/// Wakes the parker for one parked connection.
struct ParkWake {
    shared: Arc<Shared>,
    token: u64,
}

impl Wake for ParkWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.resume_later(self.token);
    }
}

impl Shared {
    fn resume_later(&self, token: u64) {
        self.woken.lock().push(token);
        self.task.wake();
    }
}

/// The parker's epoll set, for tokio to watch.
struct EpollFd(mio::Poll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Parker {
    fn start(broker: &Arc<BrokerState>) -> Option<Parker> {
        let made = mio::Poll::new().and_then(|poll| {
            let registry = poll.registry().try_clone()?;
            // Deprecated for a descriptor the `AsyncFd` might not own (I/O
            // safety); this one owns its `Poll` and so the descriptor.
            #[allow(deprecated)]
            let fd = AsyncFd::with_interest(EpollFd(poll), tokio::io::Interest::READABLE)?;
            Ok((registry, fd))
        });
        let (registry, fd) = match made {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch parked connections; idle connections keep their tasks");
                return None;
            }
        };
        let shared = Arc::new(Shared {
            broker: Arc::downgrade(broker),
            registry,
            slots: Mutex::new(Slots::default()),
            woken: Mutex::new(Vec::new()),
            task: AtomicWaker::new(),
            failed: Default::default(),
        });
        tokio::spawn(run(shared.clone(), fd));
        Some(Parker { shared })
    }

    /// Leaves `parked`, a connection of `broker`, here until something
    /// happens to it.
    fn park(&self, broker: Arc<BrokerState>, parked: Box<Parked>) {
        let fd = parked.stream.as_raw_fd();
        let deadline = parked
            .conn
            .keep_alive_timeout
            .map(|k| k.deadline(parked.conn.last_rx));
        let shared = &self.shared;
        let mut slots = shared.slots.lock();
        // Checked under the lock that `fail` takes after setting it: a
        // connection parked here is either seen by `fail` or resumed now.
        if shared.failed.load(std::sync::atomic::Ordering::Acquire) {
            drop(slots);
            tokio::spawn(resume(broker, parked));
            return;
        }
        let (token, parked) = slots.insert(parked);
        // The wakers are left before the socket is watched, under the lock:
        // whatever wakes the connection finds it in its slot.
        let waker = Waker::from(Arc::new(ParkWake {
            shared: shared.clone(),
            token,
        }));
        let mut cx = Context::from_waker(&waker);
        let conn = &mut parked.conn;
        // A kick stays ready: the task that resumes it sees it again.
        let kicked = Pin::new(&mut conn.kick).poll(&mut cx).is_ready();
        // A message queued meanwhile: the resumed task's first `fill` sends
        // it.
        let ready = kicked || conn.session.notify.poll_notified(&mut cx).is_ready();
        let mut earliest = false;
        if let Some(at) = deadline {
            let due = Due {
                at_ms: slots.at_ms(at),
                token,
            };
            slots.deadlines.push(Reverse(due));
            slots.prune();
            earliest = slots.deadlines.peek() == Some(&Reverse(due));
        }
        broker.stats.connections_parked.inc();
        let watched = shared.registry.register(
            &mut SourceFd(&fd),
            mio::Token(token as usize),
            mio::Interest::READABLE,
        );
        drop(slots);
        if let Err(e) = &watched {
            tracing::warn!(error = %e, "cannot watch a parked connection; resuming it");
        }
        if ready || watched.is_err() {
            shared.resume_later(token);
        } else if earliest {
            // The parker's timer waits for a later deadline: have it look
            // again (no connection has this token).
            shared.resume_later(u64::MAX);
        }
    }
}

/// The parker task: resumes parked connections when their sockets are
/// readable, their wakers fire or their keep alive runs out.
async fn run(shared: Arc<Shared>, mut fd: AsyncFd<EpollFd>) {
    let mut events = mio::Events::with_capacity(1024);
    let mut due = Vec::new();
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    loop {
        let next = {
            let slots = shared.slots.lock();
            slots
                .deadlines
                .peek()
                .map(|Reverse(due)| slots.instant(due.at_ms))
        };
        if let Some(at) = next {
            let at = tokio::time::Instant::from_std(at);
            if timer.deadline() != at {
                timer.as_mut().reset(at);
            }
        }
        tokio::select! {
            ready = fd.readable_mut() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => return fail(&shared, e),
                };
                loop {
                    if let Err(e) = guard.get_inner_mut().0.poll(&mut events, Some(Duration::ZERO)) {
                        if e.kind() != std::io::ErrorKind::Interrupted {
                            return fail(&shared, e);
                        }
                    }
                    let n = events.iter().count();
                    due.extend(events.iter().map(|e| e.token().0 as u64));
                    if n < events.capacity() {
                        break;
                    }
                }
                guard.clear_ready();
            }
            () = std::future::poll_fn(|cx| {
                shared.task.register(cx.waker());
                if shared.woken.lock().is_empty() { Poll::Pending } else { Poll::Ready(()) }
            }) => {
                due.append(&mut shared.woken.lock());
            }
            () = &mut timer, if next.is_some() => {
                let now = crate::clock::now();
                let mut slots = shared.slots.lock();
                while let Some(Reverse(d)) = slots.deadlines.peek().copied() {
                    if slots.instant(d.at_ms) > now {
                        break;
                    }
                    slots.deadlines.pop();
                    due.extend(slots.current(d));
                }
            }
        }
        for token in due.drain(..) {
            resume_token(&shared, token);
        }
    }
}

/// The epoll set failed: every parked connection gets its task back, and
/// none parks again.
fn fail(shared: &Shared, e: std::io::Error) {
    tracing::error!(error = %e, "parked connections' epoll set failed: idle connections keep their tasks from now on");
    shared
        .failed
        .store(true, std::sync::atomic::Ordering::Release);
    let tokens: Vec<u64> = {
        let slots = shared.slots.lock();
        slots
            .entries
            .iter()
            .enumerate()
            .filter(|(_, s)| s.1.is_some())
            .map(|(i, s)| (u64::from(s.0) << 32) | i as u64)
            .collect()
    };
    for token in tokens {
        resume_token(shared, token);
    }
}

/// Takes a parked connection out of the epoll set and gives it a task.
fn resume_token(shared: &Shared, token: u64) {
    let Some(parked) = shared.slots.lock().take(token) else {
        // Already resumed, or the parker's own wake-up (`u64::MAX`).
        return;
    };
    let _ = shared
        .registry
        .deregister(&mut SourceFd(&parked.stream.as_raw_fd()));
    // The broker is gone only if its last handle was dropped without a
    // shutdown: the connection, its socket and its permit go with it.
    let Some(broker) = shared.broker.upgrade() else {
        return;
    };
    broker.stats.connections_parked.dec();
    tokio::spawn(resume(broker, parked));
}

/// A parked connection's new task.
async fn resume(broker: Arc<BrokerState>, parked: Box<Parked>) {
    let Parked {
        conn,
        stream,
        read_size,
        max_packet_size,
        held,
    } = *parked;
    match TcpStream::from_std(stream) {
        Ok(stream) => {
            let (io, wr) = stream.into_split();
            let reader = Reader {
                io,
                buf: BytesMut::new(),
                max_packet_size,
                read_size,
            };
            let conn = conn.wake(broker);
            live::<TcpStream>(Box::new(Open { conn, reader, wr }), held).await;
        }
        Err(e) => {
            let conn = conn.wake(broker);
            tracing::warn!(client = %conn.client_id, error = %e, "cannot resume a parked connection");
            Box::pin(conn.finish(Close::Network, &mut tokio::io::sink())).await;
            drop(held);
        }
    }
}

/// Runs a connection past its CONNACK until it closes, or until it is
/// parked (its task then ends here and another one resumes it).
pub(super) async fn live<S: Transport>(mut open: Box<Open<S>>, held: Option<Held>) {
    let broker = open.conn.broker.clone();
    let parker = (S::PARKS && broker.config.park_idle_ms > 0)
        .then(|| broker.parker.get(&broker))
        .flatten();
    let park_after = parker.map(|_| Duration::from_millis(broker.config.park_idle_ms));
    let close = loop {
        match open
            .conn
            .run(&mut open.reader, &mut open.wr, park_after)
            .await
        {
            Ran::Closed(close) => break close,
            Ran::Idle => {
                let Open { conn, reader, wr } = *open;
                match S::unsplit_std(reader.io, wr) {
                    Ok(stream) => {
                        let parked = Box::new(Parked {
                            conn: Dormant::of(conn),
                            stream,
                            read_size: reader.read_size,
                            max_packet_size: reader.max_packet_size,
                            held,
                        });
                        // `run` is idle only with a parker.
                        if let Some(parker) = parker {
                            parker.park(broker.clone(), parked);
                        }
                        return;
                    }
                    Err(Some((io, wr))) => {
                        *open = Open {
                            conn,
                            reader: Reader { io, ..reader },
                            wr,
                        };
                    }
                    Err(None) => {
                        // The socket could not leave tokio, and is closed.
                        Box::pin(conn.finish(Close::Network, &mut tokio::io::sink())).await;
                        return;
                    }
                }
            }
        }
    };
    let Open { conn, mut wr, .. } = *open;
    Box::pin(conn.finish(close, &mut wr)).await;
    drop(held);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each parked connection keeps one of these for as long as it is idle
    /// (with its session and a waker): 352 bytes when it held the whole
    /// `Conn`, 208 with the broker and a whole `SocketAddr`. At most 192
    /// keeps it in mimalloc's 192-byte class.
    #[test]
    fn a_parked_connection_keeps_at_most_192_bytes_of_its_own() {
        let size = std::mem::size_of::<Parked>();
        assert!(size <= 192, "Parked is {size} bytes");
    }

    #[test]
    fn a_peer_address_comes_back_as_it_was() {
        for a in ["192.0.2.7:1883", "[2001:db8::1]:8883"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(SocketAddr::from(Peer::from(a)), a);
        }
        assert_eq!(std::mem::size_of::<Peer>(), 16);
    }

    #[test]
    fn a_deadline_is_kept_in_whole_milliseconds_never_early() {
        let slots = Slots::default();
        let at = slots.epoch + Duration::from_micros(1_500);
        assert_eq!(slots.at_ms(at), 2);
        assert!(slots.instant(slots.at_ms(at)) >= at);
        assert_eq!(slots.at_ms(slots.epoch + Duration::from_millis(7)), 7);
        assert_eq!(std::mem::size_of::<Due>(), 16);
    }
}
