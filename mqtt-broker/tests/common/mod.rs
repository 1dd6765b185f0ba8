//! Test harness: a broker on an ephemeral port and a raw client that speaks
//! packets built with `mqtt-codec`, asserting on exactly what comes back.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_broker::{Broker, BrokerHandle, Config};
use mqtt_codec::Property;
use mqtt_codec::{
    decode, ConnAck, Connect, DecodeOptions, Disconnect, List, Packet, Pid, Properties,
    ProtocolVersion, PubResp, Publish, QoS, QosPid, ReasonCode, Status, SubAck, Subscribe,
    SubscribeFilter, SubscriptionOptions, Unsubscribe,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single expected event may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Starts a broker with the test configuration (ephemeral port, `$SYS` off).
pub async fn broker() -> BrokerHandle {
    broker_with(Config::ephemeral()).await
}

/// Starts a broker with `config` (its listeners should use port 0).
pub async fn broker_with(config: Config) -> BrokerHandle {
    Broker::start(config).await.expect("broker starts")
}

/// A decoded packet that owns its bytes: the packet is re-decoded on access.
pub struct Received {
    pub bytes: Vec<u8>,
    pub version: ProtocolVersion,
}

impl Received {
    pub fn packet(&self) -> Packet<'_> {
        match decode(&self.bytes, &DecodeOptions::new(self.version)) {
            Ok(Status::Complete((p, _))) => p,
            other => panic!(
                "received bytes do not decode: {other:?} {:02x?}",
                self.bytes
            ),
        }
    }
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.packet())
    }
}

/// A client that sends and receives raw packets.
pub struct RawClient {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    buf: BytesMut,
}

impl RawClient {
    /// Opens a TCP connection; sends nothing yet.
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            version,
            buf: BytesMut::new(),
        }
    }

    /// Wraps a socket accepted by a test playing the server (a fake remote
    /// for a bridge).
    pub fn from_stream(stream: TcpStream, version: ProtocolVersion) -> RawClient {
        RawClient {
            stream,
            version,
            buf: BytesMut::new(),
        }
    }

    /// Connects with `client_id` and clean start, and checks CONNACK success.
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion, client_id: &str) -> RawClient {
        Self::connect_with(addr, connect_packet(version, client_id, true)).await
    }

    /// Sends `connect` and checks that the CONNACK accepts it.
    pub async fn connect_with(addr: SocketAddr, connect: Connect<'_>) -> RawClient {
        let mut c = RawClient::open(addr, connect.protocol).await;
        c.send(&Packet::Connect(connect)).await;
        let ack = c.recv().await;
        match ack.packet() {
            Packet::ConnAck(a) => assert_eq!(a.reason, ReasonCode::Success, "CONNACK: {a:?}"),
            p => panic!("expected CONNACK, got {p:?}"),
        }
        c
    }

    /// Sends one packet.
    pub async fn send(&mut self, packet: &Packet<'_>) {
        let mut buf = vec![0u8; packet.encoded_len(self.version).expect("encodable")];
        packet.encode(self.version, &mut buf).unwrap();
        self.send_raw(&buf).await;
    }

    /// Sends `packets` back to back in one write (so the broker mostly
    /// reads them at once).
    pub async fn send_burst(&mut self, packets: &[Packet<'_>]) {
        let mut out = Vec::new();
        for p in packets {
            let start = out.len();
            out.resize(start + p.encoded_len(self.version).expect("encodable"), 0);
            p.encode(self.version, &mut out[start..]).unwrap();
        }
        self.send_raw(&out).await;
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Receives the next packet, failing the test after `TIMEOUT`.
    pub async fn recv(&mut self) -> Received {
        match tokio::time::timeout(TIMEOUT, self.try_recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => panic!("connection closed while a packet was expected"),
            Err(_) => panic!("no packet within {TIMEOUT:?}"),
        }
    }

    /// Receives the next packet, or `None` when the connection closes.
    pub async fn try_recv(&mut self) -> Option<Received> {
        loop {
            match decode(&self.buf, &DecodeOptions::new(self.version)) {
                Ok(Status::Complete((_, n))) => {
                    let bytes = self.buf.split_to(n).to_vec();
                    return Some(Received {
                        bytes,
                        version: self.version,
                    });
                }
                Ok(Status::Partial(_)) => {}
                Err(e) => panic!("server sent a malformed packet: {e} {:02x?}", &self.buf[..]),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Receives the next packet and checks it is exactly `expected`.
    pub async fn expect(&mut self, expected: &Packet<'_>) {
        let got = self.recv().await;
        assert_eq!(&got.packet(), expected, "bytes {:02x?}", got.bytes);
    }

    /// Receives and checks the exact bytes.
    pub async fn expect_bytes(&mut self, expected: &[u8]) {
        let got = self.recv().await;
        assert_eq!(got.bytes, expected, "got {:?}", got);
    }

    /// Waits until the server closes the connection, returning any packets
    /// it sent first (e.g. a DISCONNECT).
    pub async fn expect_close(&mut self) -> Vec<Received> {
        let mut before = Vec::new();
        let closed = tokio::time::timeout(TIMEOUT, async {
            while let Some(p) = self.try_recv().await {
                before.push(p);
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "connection not closed within {TIMEOUT:?}; got {before:?}"
        );
        before
    }

    /// Proves nothing else is queued: a PINGREQ must be answered by the very
    /// next packet, PINGRESP.
    pub async fn expect_nothing_pending(&mut self) {
        self.send(&Packet::PingReq).await;
        let got = self.recv().await;
        assert_eq!(got.packet(), Packet::PingResp, "expected only PINGRESP");
    }

    /// Subscribes to one filter and checks the SUBACK grants `qos`.
    pub async fn subscribe(&mut self, pid: u16, filter: &str, qos: QoS) {
        let filters = [SubscribeFilter {
            filter,
            options: SubscriptionOptions::qos(qos),
        }];
        self.send(&Packet::Subscribe(Subscribe {
            pid: pid_(pid),
            properties: Properties::EMPTY,
            filters: List::from_slice(&filters),
        }))
        .await;
        let code = match qos {
            QoS::AtMostOnce => ReasonCode::Success,
            QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        };
        self.expect(&Packet::SubAck(SubAck {
            pid: pid_(pid),
            properties: Properties::EMPTY,
            codes: List::from_slice(&[code]),
        }))
        .await;
    }

    /// Sends a clean DISCONNECT.
    pub async fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Disconnect::NORMAL)).await;
        let _ = self.stream.shutdown().await;
    }
}

/// A packet identifier from a non-zero number.
pub fn pid_(n: u16) -> Pid {
    Pid::new(n).expect("non-zero packet id")
}

/// A CONNECT with no will, user name or properties, keep alive 60.
pub fn connect_packet(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect<'_> {
    Connect {
        protocol: version,
        clean_start,
        keep_alive: 60,
        properties: Properties::EMPTY,
        client_id,
        will: None,
        username: None,
        password: None,
    }
}

/// A PUBLISH with no properties.
pub fn publish<'a>(
    topic: &'a str,
    payload: &'a [u8],
    qos: QoS,
    pid: u16,
    retain: bool,
) -> Publish<'a> {
    Publish {
        dup: false,
        qos_pid: match qos {
            QoS::AtMostOnce => QosPid::AtMostOnce,
            QoS::AtLeastOnce => QosPid::AtLeastOnce(pid_(pid)),
            QoS::ExactlyOnce => QosPid::ExactlyOnce(pid_(pid)),
        },
        retain,
        topic,
        properties: Properties::EMPTY,
        payload,
    }
}

/// A successful acknowledgement.
pub fn ack(pid: u16) -> PubResp<'static> {
    PubResp::new(pid_(pid))
}

/// An UNSUBSCRIBE of one filter.
pub fn unsubscribe<'a>(pid: u16, filters: &'a [&'a str]) -> Unsubscribe<'a> {
    Unsubscribe {
        pid: pid_(pid),
        properties: Properties::EMPTY,
        filters: List::from_slice(filters),
    }
}

/// A CONNACK as the broker sends it for a plain accepted connection.
pub fn connack(session_present: bool) -> ConnAck<'static> {
    ConnAck {
        session_present,
        reason: ReasonCode::Success,
        properties: Properties::EMPTY,
    }
}

// ---------------------------------------------------------------------------
// Publish / subscribe helpers (qos.rs, subscribe.rs, retained.rs, mqtt5.rs,
// limits.rs).

/// The protocol versions a rule that exists in both is run for.
pub const V3_AND_V5: [ProtocolVersion; 2] = [ProtocolVersion::V3_1_1, ProtocolVersion::V5];

impl Received {
    /// The packet as a PUBLISH; fails the test if it is anything else.
    pub fn publish(&self) -> Publish<'_> {
        match self.packet() {
            Packet::Publish(p) => p,
            p => panic!("expected PUBLISH, got {p:?}"),
        }
    }
}

impl RawClient {
    /// Connects with `client_id`, `clean_start` and CONNECT `properties`
    /// (5.0 only; pass `&[]` for 3.1.1), and checks CONNACK success.
    pub async fn connect_props(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        clean_start: bool,
        properties: &[Property<'_>],
    ) -> RawClient {
        let mut c = connect_packet(version, client_id, clean_start);
        c.properties = Properties::from_slice(properties);
        Self::connect_with(addr, c).await
    }

    /// Sends a SUBSCRIBE of `filters` with `properties` and returns the
    /// SUBACK's codes, after checking its packet identifier.
    pub async fn subscribe_many(
        &mut self,
        pid: u16,
        filters: &[SubscribeFilter<'_>],
        properties: &[Property<'_>],
    ) -> Vec<ReasonCode> {
        self.send(&Packet::Subscribe(Subscribe {
            pid: pid_(pid),
            properties: Properties::from_slice(properties),
            filters: List::from_slice(filters),
        }))
        .await;
        let got = self.recv().await;
        match got.packet() {
            Packet::SubAck(a) => {
                assert_eq!(a.pid, pid_(pid), "SUBACK for another SUBSCRIBE");
                a.codes.iter().collect()
            }
            p => panic!("expected SUBACK, got {p:?}"),
        }
    }

    /// Subscribes to one filter with full options (and an optional
    /// Subscription Identifier) and checks the SUBACK grants the QoS asked.
    pub async fn subscribe_opts(
        &mut self,
        pid: u16,
        filter: &str,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
    ) {
        let props: Vec<Property<'_>> = sub_id
            .map(Property::SubscriptionIdentifier)
            .into_iter()
            .collect();
        let codes = self
            .subscribe_many(pid, &[SubscribeFilter { filter, options }], &props)
            .await;
        assert_eq!(codes, [granted(options.qos)], "SUBACK for {filter}");
    }

    /// Receives a PUBLISH and checks it is byte for byte `expected`, except
    /// for the packet identifier, which the broker chooses: the received one
    /// is put into `expected` before comparing, and returned.
    pub async fn expect_publish(&mut self, expected: Publish<'_>) -> Option<Pid> {
        let got = self.recv().await;
        let pid = got.publish().qos_pid.pid();
        let expected = Publish {
            qos_pid: match (expected.qos_pid, pid) {
                (QosPid::AtMostOnce, _) | (_, None) => expected.qos_pid,
                (q, Some(pid)) => QosPid::from_qos(q.qos(), pid),
            },
            ..expected
        };
        let expected = Packet::Publish(expected);
        let mut want = vec![0u8; expected.encoded_len(self.version).expect("encodable")];
        expected.encode(self.version, &mut want).unwrap();
        assert!(
            got.bytes == want,
            "PUBLISH differs\n  got      {:?}\n  expected {:?}\n  got bytes      {:02x?}\n  expected bytes {:02x?}",
            got.packet(),
            expected,
            got.bytes,
            want
        );
        pid
    }

    /// Receives the next packet and checks that it is a PUBLISH.
    pub async fn recv_publish(&mut self) -> Received {
        let got = self.recv().await;
        got.publish();
        got
    }

    /// Receives the next packet and checks its bytes are exactly the encoding
    /// of `expected` in this client's version; prints both decoded if not.
    pub async fn expect_exact(&mut self, expected: &Packet<'_>) {
        let mut want = vec![0u8; expected.encoded_len(self.version).expect("encodable")];
        expected.encode(self.version, &mut want).unwrap();
        let got = self.recv().await;
        assert!(
            got.bytes == want,
            "packet differs\n  got      {:?}\n  expected {:?}\n  got bytes      {:02x?}\n  expected bytes {:02x?}",
            got.packet(),
            expected,
            got.bytes,
            want
        );
    }

    /// Sends `publish` and completes the publisher's side of its QoS flow
    /// (PUBACK; or PUBREC, PUBREL, PUBCOMP), returning the reason code of
    /// the PUBACK or PUBREC (`Success` for QoS 0).
    pub async fn publish_flow(&mut self, publish: Publish<'_>) -> ReasonCode {
        self.send(&Packet::Publish(publish)).await;
        match publish.qos_pid {
            QosPid::AtMostOnce => ReasonCode::Success,
            QosPid::AtLeastOnce(pid) => {
                let got = self.recv().await;
                match got.packet() {
                    Packet::PubAck(a) if a.pid == pid => a.reason,
                    p => panic!("expected PUBACK {pid:?}, got {p:?}"),
                }
            }
            QosPid::ExactlyOnce(pid) => {
                let got = self.recv().await;
                let reason = match got.packet() {
                    Packet::PubRec(a) if a.pid == pid => a.reason,
                    p => panic!("expected PUBREC {pid:?}, got {p:?}"),
                };
                if !reason.is_error() {
                    self.send(&Packet::PubRel(PubResp::new(pid))).await;
                    self.expect(&Packet::PubComp(PubResp::new(pid))).await;
                }
                reason
            }
        }
    }

    /// Completes the receiver's side of a delivered PUBLISH: PUBACK for QoS
    /// 1; PUBREC, then the PUBREL expected, then PUBCOMP for QoS 2.
    pub async fn ack_delivery(&mut self, publish: &Publish<'_>) {
        match publish.qos_pid {
            QosPid::AtMostOnce => {}
            QosPid::AtLeastOnce(pid) => self.send(&Packet::PubAck(PubResp::new(pid))).await,
            QosPid::ExactlyOnce(pid) => {
                self.send(&Packet::PubRec(PubResp::new(pid))).await;
                self.expect(&Packet::PubRel(PubResp::new(pid))).await;
                self.send(&Packet::PubComp(PubResp::new(pid))).await;
            }
        }
    }
}

/// The SUBACK code that grants `qos`.
pub fn granted(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::Success,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}

/// A PUBLISH with properties (5.0).
pub fn publish_props<'a>(
    topic: &'a str,
    payload: &'a [u8],
    qos: QoS,
    pid: u16,
    retain: bool,
    properties: &'a [Property<'a>],
) -> Publish<'a> {
    Publish {
        properties: Properties::from_slice(properties),
        ..publish(topic, payload, qos, pid, retain)
    }
}

/// Properties sorted by identifier, keeping the relative order of repeated
/// ones (User Properties): the order the spec leaves free is ignored, the
/// order it fixes is kept.
pub fn props_by_id<'a>(properties: Properties<'a>) -> Vec<Property<'a>> {
    let mut v: Vec<Property<'a>> = properties.iter().collect();
    v.sort_by_key(|p| p.id() as u8);
    v
}

/// Waits until `cond` holds, failing the test after `TIMEOUT`. For state the
/// broker updates asynchronously (counters), never as a delay.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {TIMEOUT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------
// CONNECT / session / will / malformed-input helpers (connect.rs,
// session.rs, will.rs, keepalive.rs, malformed.rs).

impl RawClient {
    /// Sends `connect` and checks the CONNACK accepts it with the given
    /// Session Present flag.
    pub async fn connect_session(
        addr: SocketAddr,
        connect: Connect<'_>,
        session_present: bool,
    ) -> RawClient {
        let mut c = RawClient::open(addr, connect.protocol).await;
        c.send(&Packet::Connect(connect)).await;
        let got = c.recv().await;
        match got.packet() {
            Packet::ConnAck(a) => {
                assert_eq!(a.reason, ReasonCode::Success, "CONNACK: {a:?}");
                assert_eq!(a.session_present, session_present, "Session Present: {a:?}");
            }
            p => panic!("expected CONNACK, got {p:?}"),
        }
        c
    }

    /// Waits for the server to close the connection after a protocol
    /// violation: an MQTT 5 client first gets exactly DISCONNECT with
    /// `reason`, an older one gets nothing.
    pub async fn expect_closed_with(&mut self, reason: ReasonCode) {
        let before = self.expect_close().await;
        let got: Vec<&[u8]> = before.iter().map(|r| r.bytes.as_slice()).collect();
        if self.version.is_v5() {
            assert_eq!(
                got.len(),
                1,
                "expected DISCONNECT {reason:?} then close; got {before:?}"
            );
            assert_server_disconnect(&before[0], reason);
        } else {
            assert!(
                got.is_empty(),
                "expected a close without packets; got {before:?}"
            );
        }
    }

    /// Sends a normal DISCONNECT and waits until the server has closed the
    /// connection, checking it sent nothing more.
    pub async fn disconnect_and_wait(mut self) {
        self.send(&Packet::Disconnect(Disconnect::NORMAL)).await;
        let before = self.expect_close().await;
        assert!(before.is_empty(), "packets before the close: {before:?}");
    }
}

/// Proves the broker still serves after a misbehaving client: a new client
/// connects, subscribes, publishes at QoS 1 and receives its own message.
pub async fn assert_still_serving(addr: SocketAddr, version: ProtocolVersion) {
    let mut c = RawClient::connect(addr, version, "well-behaved").await;
    c.subscribe(1, "still/serving", QoS::AtMostOnce).await;
    c.send(&Packet::Publish(publish(
        "still/serving",
        b"yes",
        QoS::AtLeastOnce,
        1,
        false,
    )))
    .await;
    c.expect(&Packet::PubAck(ack(1))).await;
    c.expect(&Packet::Publish(publish(
        "still/serving",
        b"yes",
        QoS::AtMostOnce,
        0,
        false,
    )))
    .await;
    c.disconnect_and_wait().await;
}

// ---------------------------------------------------------------------------
// Security helpers (security.rs, limits_security.rs, passwd_cli.rs,
// malformed_corpus.rs).

/// A fresh directory under the system temporary directory, removed (with
/// everything in it) on drop.
pub struct ScratchDir {
    pub path: std::path::PathBuf,
}

impl ScratchDir {
    /// A new empty directory whose name includes `tag`, the process id and a
    /// counter, so parallel tests never share one.
    pub fn new(tag: &str) -> ScratchDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("mqtt-broker-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch directory");
        ScratchDir { path }
    }

    /// The path of `name` inside the directory.
    pub fn file(&self, name: &str) -> std::path::PathBuf {
        self.path.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The hash part of a password file line as mosquitto_passwd 2.x writes it:
/// `$7$101$SALT$HASH`, PBKDF2-HMAC-SHA512 over 101 iterations with a 12-byte
/// salt and a 64-byte result, both in standard base64. Computed here, not by
/// the broker, so the test checks compatibility with Mosquitto's files.
pub fn mosquitto_pbkdf2_hash(password: &[u8], salt: &[u8; 12]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut hash = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, 101, &mut hash);
    format!("$7$101${}${}", b64.encode(salt), b64.encode(hash))
}

/// A CONNECT with clean start, keep alive 60 and the given credentials.
pub fn login_packet<'a>(
    version: ProtocolVersion,
    client_id: &'a str,
    username: Option<&'a str>,
    password: Option<&'a [u8]>,
) -> Connect<'a> {
    Connect {
        username,
        password,
        ..connect_packet(version, client_id, true)
    }
}

impl RawClient {
    /// Sends `connect`, expects a CONNACK and then the close of the
    /// connection (a refusal), and returns the CONNACK's exact bytes.
    pub async fn connect_refused(addr: SocketAddr, connect: Connect<'_>) -> Vec<u8> {
        let mut c = RawClient::open(addr, connect.protocol).await;
        c.send(&Packet::Connect(connect)).await;
        let ack = c.recv().await;
        assert!(
            matches!(ack.packet(), Packet::ConnAck(_)),
            "expected CONNACK, got {ack:?}"
        );
        let after = c.expect_close().await;
        assert!(
            after.is_empty(),
            "packets after a refusing CONNACK: {after:?}"
        );
        ack.bytes
    }
}

/// Checks a server DISCONNECT: the reason code, and nothing but a Reason
/// String among its properties.
pub fn assert_server_disconnect(got: &Received, reason: ReasonCode) {
    match got.packet() {
        Packet::Disconnect(d) => {
            assert_eq!(d.reason, reason, "DISCONNECT reason: {d:?}");
            for p in d.properties.iter() {
                assert!(
                    matches!(p, Property::ReasonString(s) if !s.is_empty()),
                    "unexpected property {p:?}"
                );
            }
        }
        p => panic!("expected DISCONNECT {reason:?}, got {p:?}"),
    }
}

impl RawClient {
    /// Receives the server's DISCONNECT and checks its reason code.
    pub async fn expect_disconnect(&mut self, reason: ReasonCode) {
        let got = self.recv().await;
        assert_server_disconnect(&got, reason);
    }
}

/// Checks a refusing CONNACK's bytes: 3.1.1 exactly return code `v3`; 5.0
/// reason code `v5`, Session Present 0, and as its only property a Reason
/// String that says why (the broker says why it refuses, as in its
/// DISCONNECTs).
pub fn assert_refusal(got: &[u8], v: ProtocolVersion, v3: u8, v5: u8) {
    if !v.is_v5() {
        assert_eq!(got, [0x20, 0x02, 0x00, v3], "3.1.1 CONNACK");
        return;
    }
    let r = Received {
        bytes: got.to_vec(),
        version: v,
    };
    match r.packet() {
        Packet::ConnAck(a) => {
            assert!(!a.session_present, "{a:?}");
            assert_eq!(a.reason.as_u8(), v5, "{a:?}");
            let props: Vec<_> = a.properties.iter().collect();
            assert!(
                matches!(props[..], [Property::ReasonString(s)] if !s.is_empty()),
                "expected a Reason String alone: {a:?}"
            );
        }
        p => panic!("expected CONNACK, got {p:?}"),
    }
}
