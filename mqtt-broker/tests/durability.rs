//! Durable state, tested on the real broker binary: it runs as a child
//! process on a fixed port and a scratch data directory, so it can be
//! stopped with SIGTERM or killed with SIGKILL mid-stream and started again
//! on the same files.
//!
//! - With `durability = "always"` every QoS 1 message acknowledged with
//!   PUBACK and every QoS 2 message acknowledged with PUBREC survives a
//!   SIGKILL and reaches a persistent subscriber, QoS 2 exactly once, whether
//!   the subscriber was offline or online and slow to acknowledge.
//! - Retained messages (and their clearing) and persistent sessions with
//!   their subscriptions survive SIGTERM and SIGKILL.
//! - A session or a queued message that expired while the broker was down is
//!   gone after the restart.
//! - A truncated or overwritten store is set aside and the broker serves.
//! - With `durability = "none"` nothing survives.
//!
//! Timing rules do not wait in real time: downtime is a wall clock moved
//! forward for the next run (`MQTT_BROKER_TEST_CLOCK_SKEW_MS`), and a will
//! delay after a crash runs in a broker restarted in this process on
//! tokio's paused time.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mqtt_codec::{Packet, Pid, Property, ProtocolVersion, PubResp, QoS, QosPid, ReasonCode};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-broker");
const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// How long the broker may take to start or stop: the machine may be busy.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may wait for the next packet of a stream, or for every
/// expected message after a restart.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// Acknowledgements the publisher collects before the broker is killed.
const KILL_AFTER: usize = 300;
/// QoS 1/2 PUBLISH packets the publisher keeps unacknowledged at once.
const WINDOW: u16 = 16;
/// Acknowledgements the slow subscriber holds back; fewer than the
/// broker's `max_inflight` in the online tests, or both would wait forever.
const LAG: usize = 12;
/// The pause before each of the slow subscriber's acknowledgements.
const ACK_PACE: Duration = Duration::from_millis(2);

// ---------------------------------------------------------------------------
// The broker as a child process.

/// A port that was free a moment ago (bound to port 0, then released), so
/// that every start of one test's broker listens on the same address.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().unwrap().port()
}

/// Copies every line of a child's output into `log`.
fn capture(pipe: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
}

/// The broker binary with its configuration and data directory; killed when
/// dropped.
struct BrokerProcess {
    dir: ScratchDir,
    config: PathBuf,
    port: u16,
    child: Option<Child>,
    /// Everything the broker wrote on stdout and stderr, every run.
    log: Arc<Mutex<String>>,
    /// How far ahead of the real one the next run's wall clock is
    /// (`MQTT_BROKER_TEST_CLOCK_SKEW_MS`): downtime that has passed
    /// without the test waiting for it.
    clock_skew: Duration,
}

/// How a test stops the broker.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGTERM, then wait for the orderly exit.
    Term,
    /// SIGKILL: no chance to write anything more.
    Kill,
}

impl BrokerProcess {
    /// Writes a configuration (the `settings` lines come before the
    /// listener table) and starts the broker on it.
    async fn start(tag: &str, settings: &str) -> BrokerProcess {
        let dir = ScratchDir::new(tag);
        let port = free_port();
        let config = dir.file("broker.toml");
        let mut broker = BrokerProcess {
            dir,
            config,
            port,
            child: None,
            log: Arc::default(),
            clock_skew: Duration::ZERO,
        };
        broker.configure(settings);
        broker.launch().await;
        broker
    }

    /// Writes the configuration the next start reads: the `settings` lines
    /// (`$SYS` off unless they say otherwise) before the listener table.
    fn configure(&self, settings: &str) {
        let sys = if settings.contains("sys_interval_secs") {
            ""
        } else {
            "sys_interval_secs = 0\n"
        };
        let text = format!(
            "data_dir = '{}'\n{sys}max_queued_messages = 100000\n{settings}\n\n\
             [[listeners]]\nbind = \"127.0.0.1:{}\"\nallow_anonymous = true\n",
            self.dir.file("data").display(),
            self.port,
        );
        std::fs::write(&self.config, text).expect("write the configuration");
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn data_file(&self, name: &str) -> PathBuf {
        self.dir.file("data").join(name)
    }

    /// The names of the files in the data directory.
    fn data_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.file("data"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Starts the binary and waits until the port accepts connections.
    async fn launch(&mut self) {
        assert!(self.child.is_none(), "the broker is running already");
        let mut child = Command::new(BIN)
            .arg("-c")
            .arg(&self.config)
            .env(
                "MQTT_BROKER_TEST_CLOCK_SKEW_MS",
                self.clock_skew.as_millis().to_string(),
            )
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mqtt-broker");
        capture(child.stdout.take().unwrap(), self.log.clone());
        capture(child.stderr.take().unwrap(), self.log.clone());
        self.child = Some(child);
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("the broker exited at start ({status}):\n{}", self.log());
            }
            if tokio::net::TcpStream::connect(self.addr()).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not accept connections within {PROCESS_TIMEOUT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the broker the way `how` says and waits until it is gone.
    async fn stop(&mut self, how: Stop) {
        let mut child = self.child.take().expect("the broker is running");
        match how {
            Stop::Kill => {
                child.kill().expect("SIGKILL");
                child.wait().expect("wait for the killed broker");
            }
            Stop::Term => {
                let sent = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status()
                    .expect("run kill");
                assert!(sent.success(), "kill -TERM failed");
                let deadline = Instant::now() + PROCESS_TIMEOUT;
                let status = loop {
                    if let Some(status) = child.try_wait().unwrap() {
                        break status;
                    }
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!(
                            "the broker did not exit within {PROCESS_TIMEOUT:?} of SIGTERM:\n{}",
                            self.log()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                };
                assert!(
                    status.success(),
                    "exit after SIGTERM: {status}\n{}",
                    self.log()
                );
            }
        }
    }

    /// Stops the broker and starts it again on the same files and port.
    async fn restart(&mut self, how: Stop) {
        self.stop(how).await;
        self.launch().await;
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Clients.

/// Sends a packet; false once the connection is gone (the broker was
/// killed), where `RawClient::send` would fail the test.
async fn try_send(c: &mut RawClient, packet: &Packet<'_>) -> bool {
    let mut buf = vec![0u8; packet.encoded_len(c.version).expect("encodable")];
    packet.encode(c.version, &mut buf).unwrap();
    c.stream.write_all(&buf).await.is_ok()
}

/// The persistent subscriber of the stream tests: 3.1.1 with clean session
/// 0, or 5.0 with a session expiry of an hour (clean start only the first
/// time).
async fn connect_persistent(
    addr: SocketAddr,
    version: ProtocolVersion,
    id: &str,
    first: bool,
) -> RawClient {
    let props = [Property::SessionExpiryInterval(3600)];
    let mut connect = connect_packet(version, id, version.is_v5() && first);
    if version.is_v5() {
        connect.properties = mqtt_codec::Properties::from_slice(&props);
    }
    RawClient::connect_session(addr, connect, !first).await
}

/// Publishes `items` (topic, payload, QoS, retain) at QoS 1 or 2, all sent
/// before any acknowledgement is read, and checks every PUBACK / PUBREC
/// accepts (completing QoS 2 with PUBREL / PUBCOMP).
async fn publish_all(c: &mut RawClient, items: &[(String, Vec<u8>, QoS, bool)]) {
    assert!(items.len() < 60_000);
    for (i, (topic, payload, qos, retain)) in items.iter().enumerate() {
        assert_ne!(*qos, QoS::AtMostOnce);
        let p = publish(topic, payload, *qos, i as u16 + 1, *retain);
        c.send(&Packet::Publish(p)).await;
    }
    let mut open: BTreeSet<u16> = (1..=items.len() as u16).collect();
    while !open.is_empty() {
        let got = c.recv().await;
        match got.packet() {
            Packet::PubAck(a) => {
                assert!(a.reason == ReasonCode::Success, "PUBACK {a:?}");
                assert!(open.remove(&a.pid.get()), "unexpected {a:?}");
            }
            Packet::PubRec(a) => {
                assert!(a.reason == ReasonCode::Success, "PUBREC {a:?}");
                c.send(&Packet::PubRel(PubResp::new(a.pid))).await;
            }
            Packet::PubComp(a) => assert!(open.remove(&a.pid.get()), "unexpected {a:?}"),
            p => panic!("expected acknowledgements, got {p:?}"),
        }
    }
}

/// A delivered message: topic, payload, QoS, RETAIN.
type Got = (String, Vec<u8>, QoS, bool);

/// Sends PINGREQ and collects the PUBLISH packets that come before the
/// PINGRESP, acknowledging each (QoS 2 up to PUBREC: the tests that use this
/// subscribe at QoS 1 at most).
async fn collect_until_pingresp(c: &mut RawClient) -> Vec<Got> {
    c.send(&Packet::PingReq).await;
    let mut got = Vec::new();
    loop {
        let r = c.recv().await;
        match r.packet() {
            Packet::PingResp => return got,
            Packet::Publish(p) => {
                got.push((
                    p.topic.to_string(),
                    p.payload.to_vec(),
                    p.qos_pid.qos(),
                    p.retain,
                ));
                match p.qos_pid {
                    QosPid::AtMostOnce => {}
                    QosPid::AtLeastOnce(pid) => c.send(&Packet::PubAck(PubResp::new(pid))).await,
                    QosPid::ExactlyOnce(pid) => c.send(&Packet::PubRec(PubResp::new(pid))).await,
                }
            }
            p => panic!("expected PUBLISH or PINGRESP, got {p:?}"),
        }
    }
}

/// Subscribes a new clean client to `filter` at QoS 1 and returns the
/// retained messages it is sent, sorted by topic.
async fn retained_under(addr: SocketAddr, filter: &str) -> Vec<Got> {
    let mut c = RawClient::connect(addr, V3, "retained-reader").await;
    c.subscribe(1, filter, QoS::AtLeastOnce).await;
    let mut got = collect_until_pingresp(&mut c).await;
    c.disconnect_and_wait().await;
    got.sort();
    got
}

fn got(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Got {
    (topic.to_string(), payload.to_vec(), qos, retain)
}

/// Proves the broker serves: a client subscribes, publishes at QoS 1 and
/// receives its own message. (PUBACK and the PUBLISH may come in either
/// order: with `always` the PUBACK waits for the disk.)
async fn assert_serves(addr: SocketAddr) {
    let mut c = RawClient::connect(addr, V3, "probe").await;
    c.subscribe(1, "probe/t", QoS::AtLeastOnce).await;
    c.send(&Packet::Publish(publish(
        "probe/t",
        b"alive",
        QoS::AtLeastOnce,
        1,
        false,
    )))
    .await;
    let (mut acked, mut received) = (false, false);
    while !(acked && received) {
        let r = c.recv().await;
        match r.packet() {
            Packet::PubAck(a) if a.pid == pid_(1) && !acked => acked = true,
            Packet::Publish(p) if !received => {
                assert_eq!((p.topic, p.payload), ("probe/t", &b"alive"[..]));
                c.send(&Packet::PubAck(PubResp::new(p.qos_pid.pid().unwrap())))
                    .await;
                received = true;
            }
            p => panic!("unexpected {p:?}"),
        }
    }
    c.disconnect_and_wait().await;
}

// ---------------------------------------------------------------------------
// The stream: a publisher of numbered QoS 1 / QoS 2 messages and a
// subscriber that checks what arrives.

/// Message `seq` of the stream: even ones at QoS 1 on t/1, odd ones at QoS 2
/// on t/2.
fn stream_message(seq: u32) -> (&'static str, QoS) {
    if seq.is_multiple_of(2) {
        ("t/1", QoS::AtLeastOnce)
    } else {
        ("t/2", QoS::ExactlyOnce)
    }
}

/// What the broker acknowledged to the publisher: PUBACK (QoS 1) or PUBREC
/// (QoS 2) received.
#[derive(Debug, Default)]
struct Acked {
    q1: BTreeSet<u32>,
    q2: BTreeSet<u32>,
    /// The first sequence number not sent.
    next: u32,
}

/// Publishes the stream with up to `WINDOW` messages unacknowledged until
/// the connection breaks, reporting the number acknowledged on `progress`.
async fn publish_stream(addr: SocketAddr, first: u32, progress: watch::Sender<usize>) -> Acked {
    let mut c = RawClient::connect(addr, V3, "stream-publisher").await;
    let mut free: Vec<u16> = (1..=WINDOW).rev().collect();
    // Packet identifier -> sequence number, until PUBACK or PUBCOMP.
    let mut busy: HashMap<u16, u32> = HashMap::new();
    let mut acked = Acked::default();
    let mut next = first;
    loop {
        while next < first + 100_000 {
            let Some(pid) = free.pop() else { break };
            let seq = next;
            // Used even if the write fails: part of it may have gone out.
            next += 1;
            acked.next = next;
            let (topic, qos) = stream_message(seq);
            let payload = seq.to_string();
            let p = publish(topic, payload.as_bytes(), qos, pid, false);
            if !try_send(&mut c, &Packet::Publish(p)).await {
                return acked;
            }
            busy.insert(pid, seq);
        }
        let r = match timeout(STREAM_TIMEOUT, c.try_recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => return acked,
            Err(_) => panic!(
                "publisher: no acknowledgement within {STREAM_TIMEOUT:?} ({} acknowledged)",
                acked.q1.len() + acked.q2.len()
            ),
        };
        match r.packet() {
            Packet::PubAck(a) => {
                let seq = busy.remove(&a.pid.get()).expect("PUBACK of a sent PUBLISH");
                assert_eq!(stream_message(seq).1, QoS::AtLeastOnce);
                assert!(a.reason == ReasonCode::Success, "{a:?}");
                acked.q1.insert(seq);
                free.push(a.pid.get());
            }
            Packet::PubRec(a) => {
                let seq = *busy.get(&a.pid.get()).expect("PUBREC of a sent PUBLISH");
                assert_eq!(stream_message(seq).1, QoS::ExactlyOnce);
                assert!(a.reason == ReasonCode::Success, "{a:?}");
                acked.q2.insert(seq);
                if !try_send(&mut c, &Packet::PubRel(PubResp::new(a.pid))).await {
                    return acked;
                }
            }
            Packet::PubComp(a) => {
                busy.remove(&a.pid.get())
                    .expect("PUBCOMP of a released PUBLISH");
                free.push(a.pid.get());
            }
            p => panic!("publisher: unexpected {p:?}"),
        }
        progress.send_replace(acked.q1.len() + acked.q2.len());
    }
}

/// An acknowledgement the subscriber owes the broker.
#[derive(Debug, Clone, Copy)]
enum Owed {
    Ack(Pid),
    Rec(Pid),
    Comp(Pid),
}

impl Owed {
    fn packet(self) -> Packet<'static> {
        match self {
            Owed::Ack(pid) => Packet::PubAck(PubResp::new(pid)),
            Owed::Rec(pid) => Packet::PubRec(PubResp::new(pid)),
            Owed::Comp(pid) => Packet::PubComp(PubResp::new(pid)),
        }
    }
}

/// The subscriber's side of the session, kept across its connections. QoS 2
/// is received as the specification's "method B": the message is delivered
/// when its PUBLISH first arrives and its packet identifier is kept until
/// PUBREL, so a PUBLISH with a kept identifier is a resend, not a new
/// message.
#[derive(Debug, Default)]
struct Subscriber {
    /// Deliveries per sequence number.
    q1: BTreeMap<u32, u32>,
    q2: BTreeMap<u32, u32>,
    /// QoS 2 packet identifiers awaiting PUBREL, with their sequence number.
    awaiting_rel: HashMap<u16, u32>,
    /// Everything that breaks the protocol or the stream.
    violations: Vec<String>,
}

impl Subscriber {
    /// Takes one packet; returns the acknowledgement it calls for.
    fn handle(&mut self, packet: &Packet<'_>) -> Option<Owed> {
        match packet {
            Packet::Publish(p) => {
                let seq: Option<u32> = std::str::from_utf8(p.payload)
                    .ok()
                    .and_then(|s| s.parse().ok());
                let Some(seq) = seq else {
                    self.violations.push(format!("unexpected payload: {p:?}"));
                    return None;
                };
                let (topic, qos) = stream_message(seq);
                if p.topic != topic || p.qos_pid.qos() != qos {
                    self.violations.push(format!(
                        "message {seq} arrived on {} at {:?}",
                        p.topic,
                        p.qos_pid.qos()
                    ));
                }
                match p.qos_pid {
                    QosPid::AtMostOnce => {
                        self.violations.push(format!("message {seq} at QoS 0"));
                        None
                    }
                    QosPid::AtLeastOnce(pid) => {
                        *self.q1.entry(seq).or_default() += 1;
                        Some(Owed::Ack(pid))
                    }
                    QosPid::ExactlyOnce(pid) => {
                        match self.awaiting_rel.get(&pid.get()) {
                            Some(&kept) if kept == seq => {} // a resend
                            Some(&kept) => self.violations.push(format!(
                                "packet id {} used for message {seq} while message {kept} \
                                 still awaits its PUBREL: a receiver drops it as a resend",
                                pid.get()
                            )),
                            None => {
                                self.awaiting_rel.insert(pid.get(), seq);
                                let n = self.q2.entry(seq).or_default();
                                *n += 1;
                                if *n > 1 {
                                    self.violations.push(format!(
                                        "QoS 2 message {seq} delivered {n} times (packet id {})",
                                        pid.get()
                                    ));
                                }
                            }
                        }
                        Some(Owed::Rec(pid))
                    }
                }
            }
            Packet::PubRel(r) => {
                self.awaiting_rel.remove(&r.pid.get());
                Some(Owed::Comp(r.pid))
            }
            p => {
                self.violations.push(format!("unexpected {p:?}"));
                None
            }
        }
    }

    /// Acknowledged messages not delivered yet.
    fn missing(&self, acked: &Acked) -> (Vec<u32>, Vec<u32>) {
        let q1 = acked
            .q1
            .iter()
            .filter(|s| !self.q1.contains_key(s))
            .copied()
            .collect();
        let q2 = acked
            .q2
            .iter()
            .filter(|s| !self.q2.contains_key(s))
            .copied()
            .collect();
        (q1, q2)
    }
}

/// The online subscriber during the stream: reads everything at once but
/// holds back its last `LAG` acknowledgements, so messages are always in
/// flight (sent, or released, and not yet acknowledged). Returns its state
/// when the connection breaks.
///
/// Once `armed` is set, the next PUBLISH it receives fires `kill`: the
/// broker is then killed just after sending a message, while what it stored
/// about it may still be on its way to the disk.
async fn slow_subscriber(
    mut c: RawClient,
    mut sub: Subscriber,
    armed: watch::Receiver<bool>,
    kill: tokio::sync::oneshot::Sender<()>,
) -> Subscriber {
    let mut kill = Some(kill);
    let mut owed: VecDeque<Owed> = VecDeque::new();
    // Once a write fails (the broker is gone), what it sent before is still
    // read: a client may well have handled it.
    let mut writable = true;
    loop {
        let r = match timeout(STREAM_TIMEOUT, c.try_recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => return sub,
            Err(_) => {
                sub.violations
                    .push("online subscriber: stream stalled".into());
                return sub;
            }
        };
        let packet = r.packet();
        if matches!(packet, Packet::Publish(_)) && *armed.borrow() {
            if let Some(kill) = kill.take() {
                let _ = kill.send(());
            }
        }
        if let Some(ack) = sub.handle(&packet) {
            owed.push_back(ack);
        }
        while writable && owed.len() > LAG {
            let ack = owed.pop_front().unwrap();
            // Slower than the publisher, so a queue builds up.
            tokio::time::sleep(ACK_PACE).await;
            writable = try_send(&mut c, &ack.packet()).await;
        }
    }
}

/// After the restart: acknowledges promptly until every acknowledged message
/// is delivered, then until a PINGREQ is answered with nothing before its
/// PINGRESP (so late resends would be seen too).
async fn drain(c: &mut RawClient, sub: &mut Subscriber, acked: &Acked) {
    let deadline = Instant::now() + STREAM_TIMEOUT;
    loop {
        let (q1, q2) = sub.missing(acked);
        if q1.is_empty() && q2.is_empty() {
            break;
        }
        if !sub.violations.is_empty() {
            // Reported by the caller; a message may never come now.
            return;
        }
        let r = match timeout_at(deadline, c.try_recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                panic!("subscriber connection closed; still missing QoS 1 {q1:?}, QoS 2 {q2:?}")
            }
            Err(_) => panic!(
                "acknowledged messages not delivered within {STREAM_TIMEOUT:?}: \
                 QoS 1 {q1:?}, QoS 2 {q2:?}; violations {:?}",
                sub.violations
            ),
        };
        if let Some(ack) = sub.handle(&r.packet()) {
            c.send(&ack.packet()).await;
        }
    }
    loop {
        c.send(&Packet::PingReq).await;
        let mut quiet = true;
        loop {
            let r = match timeout_at(deadline, c.try_recv()).await {
                Ok(Some(r)) => r,
                Ok(None) => panic!("subscriber connection closed"),
                Err(_) => panic!("the stream did not settle within {STREAM_TIMEOUT:?}"),
            };
            let packet = r.packet();
            if packet == Packet::PingResp {
                break;
            }
            quiet = false;
            if let Some(ack) = sub.handle(&packet) {
                c.send(&ack.packet()).await;
            }
        }
        if quiet {
            return;
        }
    }
}

/// The key test: acknowledged means durable, across SIGKILLs mid-stream.
/// The online subscriber goes through several kills, each just after it
/// received a message, with its own state kept across them as a client's
/// would be.
async fn acknowledged_messages_survive_sigkill(version: ProtocolVersion, online: bool) {
    let tag = format!(
        "stream-v{}-{}",
        version.level(),
        if online { "online" } else { "offline" }
    );
    // A small inflight window (Mosquitto's default) in the online tests: a
    // message is then sent when an earlier one is acknowledged, long after
    // it was stored as queued.
    let settings = if online {
        "durability = \"always\"\nmax_inflight = 20"
    } else {
        "durability = \"always\""
    };
    let rounds = if online { 3 } else { 1 };
    let mut broker = BrokerProcess::start(&tag, settings).await;
    let addr = broker.addr();
    let id = "stream-subscriber";

    let mut c = connect_persistent(addr, version, id, true).await;
    c.subscribe(1, "t/#", QoS::ExactlyOnce).await;
    let mut online_client = None;
    if online {
        online_client = Some(c);
    } else {
        c.disconnect_and_wait().await;
    }
    let mut sub = Subscriber::default();
    let mut acked = Acked::default();
    let mut before_restart = Vec::new();
    for round in 0..rounds {
        let (arm, armed) = watch::channel(false);
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel();
        let online_task = online_client.take().map(|c| {
            let state = std::mem::take(&mut sub);
            tokio::spawn(slow_subscriber(c, state, armed, kill_tx))
        });

        let (progress_tx, mut progress) = watch::channel(0usize);
        let publisher = tokio::spawn(publish_stream(addr, acked.next, progress_tx));
        let reached = timeout(STREAM_TIMEOUT, progress.wait_for(|n| *n >= KILL_AFTER))
            .await
            .map(|r| r.map(|n| *n));
        assert!(
            matches!(reached, Ok(Ok(_))),
            "the publisher did not get {KILL_AFTER} acknowledgements: {reached:?}\n{}",
            broker.log()
        );
        if online {
            arm.send_replace(true);
            let sent = timeout(STREAM_TIMEOUT, kill_rx).await;
            assert!(
                matches!(sent, Ok(Ok(()))),
                "the subscriber received nothing more: {sent:?}"
            );
        }
        broker.stop(Stop::Kill).await;

        let got = timeout(STREAM_TIMEOUT, publisher)
            .await
            .expect("the publisher notices the kill")
            .expect("publisher task");
        acked.q1.extend(got.q1);
        acked.q2.extend(got.q2);
        acked.next = got.next;
        if let Some(task) = online_task {
            sub = timeout(STREAM_TIMEOUT, task)
                .await
                .expect("the subscriber notices the kill")
                .expect("subscriber task");
        }
        before_restart.push((sub.q1.len(), sub.q2.len(), sub.awaiting_rel.len()));

        broker.launch().await;
        if online && round + 1 < rounds {
            online_client = Some(connect_persistent(addr, version, id, false).await);
        }
    }
    let mut c = connect_persistent(addr, version, id, false).await;
    drain(&mut c, &mut sub, &acked).await;

    let q1_duplicates: u32 = sub.q1.values().map(|n| n - 1).sum();
    eprintln!(
        "{tag}: acknowledged QoS 1 {} QoS 2 {}; delivered before each kill \
         (QoS 1, QoS 2, awaiting PUBREL) {before_restart:?}; in all QoS 1 {} \
         (duplicates {q1_duplicates}) QoS 2 {}",
        acked.q1.len(),
        acked.q2.len(),
        sub.q1.len(),
        sub.q2.len()
    );
    assert!(
        acked.q1.len() + acked.q2.len() >= rounds * KILL_AFTER,
        "{acked:?}"
    );
    assert!(
        sub.violations.is_empty(),
        "{tag}: {:#?}\n{}",
        sub.violations,
        broker.log()
    );
    let (q1, q2) = sub.missing(&acked);
    assert!(
        q1.is_empty() && q2.is_empty(),
        "lost: QoS 1 {q1:?}, QoS 2 {q2:?}"
    );
    c.disconnect_and_wait().await;
}

#[tokio::test]
async fn acknowledged_messages_survive_sigkill_for_an_offline_3_1_1_session() {
    acknowledged_messages_survive_sigkill(V3, false).await;
}

#[tokio::test]
async fn acknowledged_messages_survive_sigkill_for_an_offline_5_0_session() {
    acknowledged_messages_survive_sigkill(V5, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn acknowledged_and_in_flight_messages_survive_sigkill_for_an_online_slow_3_1_1_subscriber() {
    acknowledged_messages_survive_sigkill(V3, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn acknowledged_and_in_flight_messages_survive_sigkill_for_an_online_slow_5_0_subscriber() {
    acknowledged_messages_survive_sigkill(V5, true).await;
}

// ---------------------------------------------------------------------------
// Retained messages and sessions.

/// Retained messages (set and cleared) and a persistent session's
/// subscription survive two restarts of kind `how`.
async fn retained_and_sessions_survive(how: Stop) {
    let mut broker =
        BrokerProcess::start(&format!("retained-{how:?}"), "durability = \"always\"").await;
    let addr = broker.addr();

    // A persistent session subscribes and leaves.
    let keeper = || connect_packet(V3, "keeper", false);
    let mut s = RawClient::connect_session(addr, keeper(), false).await;
    s.subscribe(1, "s/#", QoS::AtLeastOnce).await;
    s.disconnect_and_wait().await;

    // Retained messages at QoS 1 and 2; r/b is set, then cleared.
    let mut p = RawClient::connect(addr, V3, "retainer").await;
    let item = |t: &str, v: &[u8], q| (t.to_string(), v.to_vec(), q, true);
    publish_all(
        &mut p,
        &[
            item("r/a", b"one", QoS::AtLeastOnce),
            item("r/b", b"two", QoS::AtLeastOnce),
            item("r/c", b"three", QoS::ExactlyOnce),
        ],
    )
    .await;
    publish_all(&mut p, &[item("r/b", b"", QoS::AtLeastOnce)]).await;
    p.disconnect_and_wait().await;

    broker.restart(how).await;
    let q1 = QoS::AtLeastOnce;
    assert_eq!(
        retained_under(addr, "r/#").await,
        [got("r/a", b"one", q1, true), got("r/c", b"three", q1, true)],
        "retained messages after the first restart"
    );
    // The session is there and still routes, without subscribing again.
    let mut s = RawClient::connect_session(addr, keeper(), true).await;
    let mut p = RawClient::connect(addr, V3, "retainer").await;
    publish_all(&mut p, &[("s/x".into(), b"routed".to_vec(), q1, false)]).await;
    assert_eq!(
        collect_until_pingresp(&mut s).await,
        [got("s/x", b"routed", q1, false)]
    );

    // A retained message read back from the store is cleared, another set;
    // the session stays connected through the second restart.
    publish_all(
        &mut p,
        &[
            item("r/a", b"", QoS::AtLeastOnce),
            item("r/d", b"four", QoS::ExactlyOnce),
        ],
    )
    .await;
    p.disconnect_and_wait().await;
    broker.restart(how).await;
    drop(s);
    assert_eq!(
        retained_under(addr, "r/#").await,
        [
            got("r/c", b"three", q1, true),
            got("r/d", b"four", q1, true)
        ],
        "retained messages after the second restart"
    );
    let mut s = RawClient::connect_session(addr, keeper(), true).await;
    let mut p = RawClient::connect(addr, V3, "retainer").await;
    publish_all(&mut p, &[("s/y".into(), b"again".to_vec(), q1, false)]).await;
    p.disconnect_and_wait().await;
    assert_eq!(
        collect_until_pingresp(&mut s).await,
        [got("s/y", b"again", q1, false)]
    );
    s.disconnect_and_wait().await;
}

#[tokio::test]
async fn retained_messages_and_sessions_survive_sigterm() {
    retained_and_sessions_survive(Stop::Term).await;
}

#[tokio::test]
async fn retained_messages_and_sessions_survive_sigkill() {
    retained_and_sessions_survive(Stop::Kill).await;
}

// ---------------------------------------------------------------------------
// Expiry while the broker is down.

#[tokio::test]
async fn sessions_and_messages_that_expire_while_the_broker_is_down_are_gone() {
    let mut broker = BrokerProcess::start("expiry", "durability = \"always\"").await;
    let addr = broker.addr();
    let session = |id, clean, expiry| {
        let mut c = connect_packet(V5, id, clean);
        c.properties = mqtt_codec::Properties::from_slice(expiry);
        c
    };
    let short = [Property::SessionExpiryInterval(2)];
    let long = [Property::SessionExpiryInterval(3600)];

    // A session that lives 2 s after its client leaves, with a message
    // queued; and a long-lived one with one message that expires after 1 s
    // and one that does not.
    let mut c = RawClient::connect_session(addr, session("short-lived", true, &short), false).await;
    c.subscribe(1, "e/#", QoS::AtLeastOnce).await;
    c.disconnect_and_wait().await;
    let mut c = RawClient::connect_session(addr, session("long-lived", true, &long), false).await;
    c.subscribe(1, "m/#", QoS::AtLeastOnce).await;
    c.disconnect_and_wait().await;

    let mut p = RawClient::connect(addr, V5, "expiry-publisher").await;
    let expiring = [Property::MessageExpiryInterval(1)];
    for (pid, msg) in [
        (
            1,
            publish("e/1", b"for the short session", QoS::AtLeastOnce, 1, false),
        ),
        (
            2,
            publish_props("m/1", b"expires", QoS::AtLeastOnce, 2, false, &expiring),
        ),
        (3, publish("m/2", b"stays", QoS::AtLeastOnce, 3, false)),
    ] {
        let reason = p.publish_flow(msg).await;
        assert_eq!(reason, ReasonCode::Success, "PUBACK of message {pid}");
    }
    p.disconnect_and_wait().await;

    broker.stop(Stop::Term).await;
    // The timers under test run out while the broker is down: the next
    // run's wall clock is 3 s ahead (past the 2 s session and the 1 s
    // message, with the store's whole seconds), instead of the test
    // waiting for the time to pass.
    broker.clock_skew = Duration::from_secs(3);
    broker.launch().await;

    let mut c =
        RawClient::connect_session(addr, session("short-lived", false, &short), false).await;
    c.expect_nothing_pending().await;
    c.disconnect_and_wait().await;

    let mut c = RawClient::connect_session(addr, session("long-lived", false, &long), true).await;
    assert_eq!(
        collect_until_pingresp(&mut c).await,
        [got("m/2", b"stays", QoS::AtLeastOnce, false)],
        "only the message that has not expired"
    );
    c.disconnect_and_wait().await;
}

// ---------------------------------------------------------------------------
// Damaged store files.

/// Fills the store: a persistent session with `n` queued messages, and `n`
/// retained messages `d/0`.. of 600 bytes each, published at QoS 1, all at
/// once or (`one_by_one`) each after the previous one's PUBACK, so each is
/// its own commit.
async fn fill_store(addr: SocketAddr, n: usize, one_by_one: bool) {
    let mut s = RawClient::connect_session(addr, connect_packet(V3, "queued", false), false).await;
    s.subscribe(1, "d/#", QoS::AtLeastOnce).await;
    s.disconnect_and_wait().await;
    let mut p = RawClient::connect(addr, V3, "filler").await;
    let items: Vec<_> = (0..n)
        .map(|i| {
            let mut payload = format!("{i}:").into_bytes();
            payload.resize(600, b'x');
            (format!("d/{i}"), payload, QoS::AtLeastOnce, true)
        })
        .collect();
    if one_by_one {
        for item in items {
            publish_all(&mut p, &[item]).await;
        }
    } else {
        publish_all(&mut p, &items).await;
    }
    p.disconnect_and_wait().await;
}

/// The numbers of `d/N` messages, in the order given.
fn d_numbers(got: &[Got]) -> Vec<usize> {
    got.iter()
        .map(|(t, ..)| {
            t.strip_prefix("d/")
                .and_then(|n| n.parse().ok())
                .expect("d/N")
        })
        .collect()
}

/// After a damaged store was set aside: the broker serves, the log says so,
/// the damaged file is kept, and the fresh store keeps what is written to it
/// across a SIGKILL.
async fn assert_damaged_store_set_aside(broker: &mut BrokerProcess) {
    let addr = broker.addr();
    assert_serves(addr).await;
    let files = broker.data_files();
    assert!(
        files.iter().any(|f| f.starts_with("broker.db.damaged-")),
        "no damaged store kept aside: {files:?}"
    );
    let log = broker.log();
    assert!(
        log.lines()
            .any(|l| l.contains("damaged") && l.contains("broker.db")),
        "the log does not mention the damaged store:\n{log}"
    );
    // Whatever was salvaged reads back cleanly.
    let salvaged = retained_under(addr, "d/#").await;
    eprintln!("salvaged {} retained messages", salvaged.len());

    let mut p = RawClient::connect(addr, V3, "after-damage").await;
    publish_all(
        &mut p,
        &[(
            "after/damage".into(),
            b"kept".to_vec(),
            QoS::AtLeastOnce,
            true,
        )],
    )
    .await;
    p.disconnect_and_wait().await;
    broker.restart(Stop::Kill).await;
    assert_eq!(
        retained_under(addr, "after/#").await,
        [got("after/damage", b"kept", QoS::AtLeastOnce, true)]
    );
    let damaged = |files: &[String]| {
        files
            .iter()
            .filter(|f| {
                f.starts_with("broker.db.damaged-") && !f.contains("-wal") && !f.contains("-shm")
            })
            .count()
    };
    assert_eq!(
        damaged(&broker.data_files()),
        1,
        "{:?}",
        broker.data_files()
    );
}

#[tokio::test]
async fn a_truncated_store_is_set_aside_and_the_broker_serves() {
    let mut broker = BrokerProcess::start("truncated", "durability = \"always\"").await;
    fill_store(broker.addr(), 150, false).await;
    broker.stop(Stop::Term).await;
    let db = broker.data_file("broker.db");
    let len = std::fs::metadata(&db).unwrap().len();
    assert!(len > 100_000, "the store holds the messages: {len} bytes");
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.set_len(len / 2 + 1234).unwrap();
    drop(f);
    broker.launch().await;
    assert_damaged_store_set_aside(&mut broker).await;
}

#[tokio::test]
async fn a_store_overwritten_with_garbage_is_set_aside_and_the_broker_serves() {
    let mut broker = BrokerProcess::start("garbage", "durability = \"always\"").await;
    fill_store(broker.addr(), 150, false).await;
    broker.stop(Stop::Term).await;
    let db = broker.data_file("broker.db");
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 100_000, "the store holds the messages");
    // Three pages' worth of pseudo-random bytes in the middle.
    let start = bytes.len() / 2 / 4096 * 4096;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in &mut bytes[start..start + 3 * 4096] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&db, &bytes).unwrap();
    broker.launch().await;
    assert_damaged_store_set_aside(&mut broker).await;
}

#[tokio::test]
async fn a_truncated_write_ahead_log_keeps_a_consistent_prefix() {
    // No checkpoint during the test: everything stays in the WAL.
    let mut broker = BrokerProcess::start(
        "truncated-wal",
        "durability = \"always\"\nsync_interval_ms = 600000",
    )
    .await;
    let addr = broker.addr();
    fill_store(addr, 150, true).await;
    broker.stop(Stop::Kill).await;
    let wal = broker.data_file("broker.db-wal");
    let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(len > 100_000, "the WAL holds the messages: {len} bytes");
    let f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    f.set_len(len / 2 + 777).unwrap();
    drop(f);
    broker.launch().await;
    assert_serves(addr).await;

    // What was committed before the cut is back, with no holes: retained
    // messages and the queue are each a prefix of what was published.
    let retained = d_numbers(&retained_under(addr, "d/#").await);
    let mut sorted = retained.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..sorted.len()).collect::<Vec<_>>(), "retained");
    assert!(sorted.len() < 150, "the cut lost the last commits");
    let mut s = RawClient::connect_session(addr, connect_packet(V3, "queued", false), true).await;
    let queued = d_numbers(&collect_until_pingresp(&mut s).await);
    assert_eq!(
        queued,
        (0..queued.len()).collect::<Vec<_>>(),
        "queued, in order"
    );
    s.disconnect_and_wait().await;
    eprintln!(
        "after the WAL cut: {} retained, {} queued; files {:?}",
        retained.len(),
        queued.len(),
        broker.data_files()
    );
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn with_durability_none_nothing_survives_a_restart() {
    let mut broker = BrokerProcess::start("none", "durability = \"none\"").await;
    let addr = broker.addr();
    let mut s =
        RawClient::connect_session(addr, connect_packet(V3, "forgotten", false), false).await;
    s.subscribe(1, "n/#", QoS::AtLeastOnce).await;
    s.disconnect_and_wait().await;
    let mut p = RawClient::connect(addr, V3, "publisher").await;
    publish_all(
        &mut p,
        &[
            ("n/retained".into(), b"r".to_vec(), QoS::AtLeastOnce, true),
            ("n/queued".into(), b"q".to_vec(), QoS::ExactlyOnce, false),
        ],
    )
    .await;
    p.disconnect_and_wait().await;

    broker.restart(Stop::Term).await;
    assert_eq!(retained_under(addr, "n/#").await, Vec::<Got>::new());
    let mut s =
        RawClient::connect_session(addr, connect_packet(V3, "forgotten", false), false).await;
    s.expect_nothing_pending().await;
    s.disconnect_and_wait().await;
    assert!(
        !broker.data_file("broker.db").exists(),
        "no store file: {:?}",
        broker.data_files()
    );
}

// ---------------------------------------------------------------------------
// Wills of clients that were connected when the broker stopped.

/// The watcher: a persistent 3.1.1 session subscribed to `will/#` at QoS 1
/// (clean session 0), so what is published while it is away waits for it.
async fn will_watcher(addr: SocketAddr, first: bool) -> RawClient {
    let mut c =
        RawClient::connect_session(addr, connect_packet(V3, "will-watcher", false), !first).await;
    if first {
        c.subscribe(1, "will/#", QoS::AtLeastOnce).await;
    }
    c
}

/// The timing part of a test after the crash part: pauses tokio's clock
/// and starts the broker again in this process, on the killed broker's
/// files and port, so that a will delay runs on virtual time the test
/// controls instead of real seconds. `periodic`, not `always`: the crash
/// part already wrote what is restored, and with `always` an
/// acknowledgement would wait for the store's thread, while the paused
/// clock jumps ahead to the next timer. Returns the broker and the
/// (virtual) time the restart began.
async fn restart_in_process_on_paused_time(
    broker: &BrokerProcess,
) -> (mqtt_broker::BrokerHandle, Instant) {
    tokio::time::pause();
    let restarted = Instant::now();
    let text = format!(
        "data_dir = '{}'\nsys_interval_secs = 0\ndurability = \"periodic\"\n\n\
         [[listeners]]\nbind = \"127.0.0.1:{}\"\nallow_anonymous = true\n",
        broker.dir.file("data").display(),
        broker.port,
    );
    let config = mqtt_broker::Config::from_toml(&text).expect("configuration");
    (broker_with(config).await, restarted)
}

/// Connects `id` with a QoS 1 will to `will/{id}` (payload `gone`; in 5.0
/// with a Content Type, the session expiry and the will delay given), then
/// publishes `will/ready` at QoS 1 and waits for its PUBACK. The watcher's
/// session is stored, so that PUBACK waits for a commit behind the stored
/// will: once it arrives, the will is on disk.
async fn connect_with_will(
    addr: SocketAddr,
    v: ProtocolVersion,
    id: &str,
    expiry: u32,
    delay: u32,
) -> RawClient {
    let topic = format!("will/{id}");
    let will_props = [
        Property::ContentType("text/plain"),
        Property::WillDelayInterval(delay),
    ];
    let props = [Property::SessionExpiryInterval(expiry)];
    let mut connect = connect_packet(v, id, true);
    connect.will = Some(mqtt_codec::LastWill {
        topic: &topic,
        payload: b"gone",
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: if v.is_v5() {
            mqtt_codec::Properties::from_slice(&will_props)
        } else {
            mqtt_codec::Properties::EMPTY
        },
    });
    if v.is_v5() {
        connect.properties = mqtt_codec::Properties::from_slice(&props);
    }
    let mut c = RawClient::connect_session(addr, connect, false).await;
    let r = c
        .publish_flow(publish(
            "will/ready",
            id.as_bytes(),
            QoS::AtLeastOnce,
            1,
            false,
        ))
        .await;
    assert_eq!(r, ReasonCode::Success);
    c
}

/// Receives PUBLISH packets (acknowledging them) until PINGRESP, keeping
/// the whole packets.
async fn publishes_until_pingresp(c: &mut RawClient) -> Vec<Received> {
    c.send(&Packet::PingReq).await;
    let mut got = Vec::new();
    loop {
        let r = c.recv().await;
        match r.packet() {
            Packet::PingResp => return got,
            Packet::Publish(p) => {
                if let QosPid::AtLeastOnce(pid) = p.qos_pid {
                    c.send(&Packet::PubAck(PubResp::new(pid))).await;
                }
                got.push(r);
            }
            p => panic!("expected PUBLISH or PINGRESP, got {p:?}"),
        }
    }
}

/// Topic and payload of each received PUBLISH.
fn topics_and_payloads(got: &[Received]) -> Vec<(String, Vec<u8>)> {
    got.iter()
        .map(|r| {
            let p = r.publish();
            (p.topic.to_string(), p.payload.to_vec())
        })
        .collect()
}

/// A client connected with a will when the broker is killed (SIGKILL: no
/// DISCONNECT, no chance to publish anything) lost its network connection,
/// so its will is due: after the restart on the same data directory a
/// persistent subscriber gets it, with its properties, exactly once (a
/// second restart does not publish it again).
async fn will_of_a_client_connected_at_a_sigkill(v: ProtocolVersion) {
    let mut broker = BrokerProcess::start(
        &format!("will-kill-{}", v.level()),
        "durability = \"always\"",
    )
    .await;
    let addr = broker.addr();
    will_watcher(addr, true).await.disconnect_and_wait().await;
    let dying = connect_with_will(addr, v, "dying", 0, 0).await;

    broker.restart(Stop::Kill).await;
    drop(dying);
    let mut w = will_watcher(addr, false).await;
    let got = publishes_until_pingresp(&mut w).await;
    assert_eq!(
        topics_and_payloads(&got),
        [
            ("will/ready".to_string(), b"dying".to_vec()),
            ("will/dying".to_string(), b"gone".to_vec()),
        ],
        "{}",
        broker.log()
    );
    assert_eq!(got[1].publish().qos_pid.qos(), QoS::AtLeastOnce);
    assert!(!got[1].publish().retain);
    w.disconnect_and_wait().await;

    // Exactly once: nothing more after another restart.
    broker.restart(Stop::Term).await;
    let mut w = will_watcher(addr, false).await;
    assert!(
        publishes_until_pingresp(&mut w).await.is_empty(),
        "the will again"
    );
    w.disconnect_and_wait().await;
}

#[tokio::test]
async fn will_of_a_3_1_1_client_connected_at_a_sigkill_is_published_once_after_the_restart() {
    will_of_a_client_connected_at_a_sigkill(V3).await;
}

#[tokio::test]
async fn will_of_a_5_0_client_connected_at_a_sigkill_is_published_once_after_the_restart() {
    will_of_a_client_connected_at_a_sigkill(V5).await;
}

/// The will keeps its MQTT 5 properties across the crash: the watcher,
/// here a 5.0 client, sees the Content Type the will was given.
#[tokio::test]
async fn a_will_published_after_a_sigkill_keeps_its_properties() {
    let mut broker = BrokerProcess::start("will-props", "durability = \"always\"").await;
    let addr = broker.addr();
    let props = [Property::SessionExpiryInterval(3600)];
    let watcher = |first| {
        let mut c = connect_packet(V5, "will-watcher-5", first);
        c.properties = mqtt_codec::Properties::from_slice(&props);
        RawClient::connect_session(addr, c, !first)
    };
    let mut w = watcher(true).await;
    w.subscribe(1, "will/#", QoS::AtLeastOnce).await;
    w.disconnect_and_wait().await;
    let dying = connect_with_will(addr, V5, "props", 0, 0).await;
    broker.restart(Stop::Kill).await;
    drop(dying);
    let mut w = watcher(false).await;
    let got = publishes_until_pingresp(&mut w).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let will = got[1].publish();
    assert_eq!(will.topic, "will/props");
    assert!(
        will.properties
            .iter()
            .any(|p| p == Property::ContentType("text/plain")),
        "{will:?}"
    );
    w.disconnect_and_wait().await;
}

/// A will with a delay, of a client whose session outlives the crash: it
/// is published no sooner than the delay after the restart began (the
/// client was connected, so the delay runs from the restart), and once.
/// The crash is a SIGKILL of the broker process; the restart runs in this
/// process on paused time, so the delay is not waited for in real time.
#[tokio::test]
async fn a_will_delay_is_honoured_after_a_sigkill() {
    const DELAY: u32 = 3;
    let mut broker = BrokerProcess::start("will-delay", "durability = \"always\"").await;
    let addr = broker.addr();
    will_watcher(addr, true).await.disconnect_and_wait().await;
    let dying = connect_with_will(addr, V5, "delayed", 3600, DELAY).await;

    broker.stop(Stop::Kill).await;
    drop(dying);
    let (restarted_broker, restarted) = restart_in_process_on_paused_time(&broker).await;
    let mut w = will_watcher(addr, false).await;
    let mut got = topics_and_payloads(&publishes_until_pingresp(&mut w).await);
    if got.len() < 2 {
        // Not due yet: it comes while the watcher is connected.
        let next = timeout(STREAM_TIMEOUT, w.try_recv())
            .await
            .expect("the will within the delay and then some")
            .expect("connection open");
        let p = next.publish();
        got.push((p.topic.to_string(), p.payload.to_vec()));
        if let QosPid::AtLeastOnce(pid) = p.qos_pid {
            w.send(&Packet::PubAck(PubResp::new(pid))).await;
        }
    }
    let elapsed = restarted.elapsed();
    assert_eq!(
        got,
        [
            ("will/ready".to_string(), b"delayed".to_vec()),
            ("will/delayed".to_string(), b"gone".to_vec()),
        ]
    );
    assert!(
        elapsed >= Duration::from_secs(u64::from(DELAY)),
        "the will came {elapsed:?} after the restart began, before its {DELAY} s delay"
    );
    w.expect_nothing_pending().await;
    w.disconnect_and_wait().await;
    restarted_broker.shutdown().await;
}

/// A client that reconnects to its session within the will delay after the
/// restart cancels the will, as in a live close [MQTT-5: 3.1.3-9]: when
/// the delay has passed, the watcher has had nothing but the marker. The
/// restart after the SIGKILL runs in this process on paused time.
#[tokio::test]
async fn a_reconnection_within_the_will_delay_after_a_sigkill_cancels_the_will() {
    const DELAY: u32 = 3;
    let mut broker = BrokerProcess::start("will-cancel", "durability = \"always\"").await;
    let addr = broker.addr();
    will_watcher(addr, true).await.disconnect_and_wait().await;
    let dying = connect_with_will(addr, V5, "back", 3600, DELAY).await;

    broker.stop(Stop::Kill).await;
    drop(dying);
    let (restarted_broker, restarted) = restart_in_process_on_paused_time(&broker).await;
    // Back, without a will this time, before the delay has passed.
    let props = [Property::SessionExpiryInterval(3600)];
    let mut connect = connect_packet(V5, "back", false);
    connect.properties = mqtt_codec::Properties::from_slice(&props);
    let mut back = RawClient::connect_session(addr, connect, true).await;
    assert!(
        restarted.elapsed() < Duration::from_secs(u64::from(DELAY)),
        "the machine is too slow for this test: reconnected {:?} after the restart began",
        restarted.elapsed()
    );
    // Wait out the delay (and a second for the timer; virtual time), then
    // send a marker: a will would have been queued before it.
    tokio::time::sleep_until(restarted + Duration::from_secs(u64::from(DELAY) + 1)).await;
    let r = back
        .publish_flow(publish("will/marker", b"m", QoS::AtLeastOnce, 2, false))
        .await;
    assert_eq!(r, ReasonCode::Success);
    let mut w = will_watcher(addr, false).await;
    assert_eq!(
        topics_and_payloads(&publishes_until_pingresp(&mut w).await),
        [
            ("will/ready".to_string(), b"back".to_vec()),
            ("will/marker".to_string(), b"m".to_vec()),
        ]
    );
    w.disconnect_and_wait().await;
    back.disconnect_and_wait().await;
    restarted_broker.shutdown().await;
}

// ---------------------------------------------------------------------------
// `$SYS` values.

/// `$SYS/broker/...` values are retained for subscribers but never stored:
/// after a restart (here with `$SYS` turned off) no value of the previous
/// run is served, and the store holds no retained message.
#[tokio::test]
async fn sys_values_are_not_persisted() {
    let mut broker = BrokerProcess::start(
        "sys-not-stored",
        "durability = \"always\"\nsys_interval_secs = 1",
    )
    .await;
    let addr = broker.addr();
    // A value of this run is published (live or retained), then a new
    // subscriber gets it retained.
    let mut c = RawClient::connect(addr, V3, "sys-reader").await;
    c.subscribe(1, "$SYS/broker/version", QoS::AtMostOnce).await;
    c.recv_publish().await;
    c.disconnect_and_wait().await;
    let mut c = RawClient::connect(addr, V3, "sys-reader").await;
    c.subscribe(1, "$SYS/broker/version", QoS::AtMostOnce).await;
    let got = c.recv_publish().await;
    assert!(got.publish().retain, "{got:?}");
    c.disconnect_and_wait().await;

    broker.stop(Stop::Term).await;
    broker.configure("durability = \"always\"\nsys_interval_secs = 0");
    broker.launch().await;
    let mut c = RawClient::connect(addr, V3, "sys-reader").await;
    c.subscribe(1, "$SYS/#", QoS::AtMostOnce).await;
    assert!(
        collect_until_pingresp(&mut c).await.is_empty(),
        "a $SYS value of the previous run"
    );
    c.disconnect_and_wait().await;
    assert!(
        !broker.log().contains("state restored from the store"),
        "something was restored:\n{}",
        broker.log()
    );
}
