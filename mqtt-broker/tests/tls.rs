//! TLS listeners over real sockets: certificates made with rcgen in a temp
//! dir, a rustls client forcing TLS 1.2 or 1.3, raw MQTT packets from
//! mqtt-codec. Mutual TLS, the certificate's Common Name as user name, and a
//! certificate reload that leaves connected clients alone.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use common::*;
use mqtt_broker::config::TlsListenerConfig;
use mqtt_broker::{BrokerHandle, Config, ListenerConfig};
use mqtt_codec::{
    decode, DecodeOptions, Packet, ProtocolVersion, QoS, ReasonCode, Status, SubscribeFilter,
    SubscriptionOptions,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::version::{TLS12, TLS13};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio_rustls::TlsConnector;

const BOTH_TLS: [&SupportedProtocolVersion; 2] = [&TLS12, &TLS13];

// ---------------------------------------------------------------------------
// Certificates.

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "mqtt-broker-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// Writes `text` to `name` in the directory and returns its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Leaf {
    fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert.as_bytes()).unwrap()
    }
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    fn server(&self) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate with Common Name `cn`.
    fn client(&self, cn: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Leaf {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A CA, the server's files signed by it in a temp dir, and a TLS listener
/// configuration pointing at them (no client certificates asked).
struct Pki {
    dir: TempDir,
    ca: Ca,
    server: Leaf,
    tls: TlsListenerConfig,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new();
        let ca = Ca::new("test CA");
        let server = ca.server();
        let tls = TlsListenerConfig {
            cert_file: dir.write("server.crt", &server.cert),
            key_file: dir.write("server.key", &server.key),
            ca_file: None,
            require_certificate: false,
            use_identity_as_username: false,
        };
        Pki {
            dir,
            ca,
            server,
            tls,
        }
    }

    /// Verifies client certificates against this CA.
    fn with_client_ca(mut self, required: bool) -> Pki {
        self.tls.ca_file = Some(self.dir.write("ca.crt", &self.ca.pem));
        self.tls.require_certificate = required;
        self
    }
}

/// A broker with one TLS listener on 127.0.0.1 and `$SYS` off.
async fn tls_broker(tls: &TlsListenerConfig, allow_anonymous: bool) -> BrokerHandle {
    tls_broker_with(Config::ephemeral(), tls, allow_anonymous).await
}

async fn tls_broker_with(
    mut config: Config,
    tls: &TlsListenerConfig,
    allow_anonymous: bool,
) -> BrokerHandle {
    config.listeners = vec![ListenerConfig {
        allow_anonymous: Some(allow_anonymous),
        tls: Some(tls.clone()),
        ..ListenerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))
    }];
    broker_with(config).await
}

// ---------------------------------------------------------------------------
// A TLS client speaking raw packets.

/// How the test client does TLS.
struct ClientTls<'a> {
    /// CA certificate (PEM) the server certificate must chain to.
    trust: &'a str,
    /// Client certificate and key, if any.
    identity: Option<&'a Leaf>,
    /// The only TLS version offered.
    version: &'static SupportedProtocolVersion,
    /// A socket receive buffer this small (bytes), to make a slow reader.
    receive_buffer: Option<u32>,
}

impl<'a> ClientTls<'a> {
    fn new(trust: &'a str) -> Self {
        ClientTls {
            trust,
            identity: None,
            version: &TLS13,
            receive_buffer: None,
        }
    }

    fn config(&self) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.trust.as_bytes()).unwrap())
            .unwrap();
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[self.version])
                .unwrap()
                .with_root_certificates(roots);
        match self.identity {
            None => builder.with_no_client_auth(),
            Some(leaf) => builder
                .with_client_auth_cert(
                    vec![leaf.der()],
                    PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
                )
                .unwrap(),
        }
    }

    /// Opens TCP and runs the handshake (from the client's side: with TLS 1.3
    /// a refused client certificate shows only on the first read).
    async fn open(&self, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some(size) = self.receive_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let tcp = socket.connect(addr).await?;
        tcp.set_nodelay(true)?;
        let connector = TlsConnector::from(Arc::new(self.config()));
        tokio::time::timeout(
            TIMEOUT,
            connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
        )
        .await
        .expect("handshake within TIMEOUT")
    }
}

struct TlsClient {
    stream: TlsStream<TcpStream>,
    version: ProtocolVersion,
    buf: BytesMut,
}

impl TlsClient {
    fn new(stream: TlsStream<TcpStream>) -> TlsClient {
        TlsClient {
            stream,
            version: ProtocolVersion::V3_1_1,
            buf: BytesMut::new(),
        }
    }

    /// Handshakes, sends `connect` (MQTT 3.1.1) and returns the CONNACK's
    /// reason, or `None` when the connection fails before a CONNACK.
    async fn try_connect(
        tls: &ClientTls<'_>,
        addr: SocketAddr,
        connect: mqtt_codec::Connect<'_>,
    ) -> (Option<ReasonCode>, Option<TlsClient>) {
        let Ok(stream) = tls.open(addr).await else {
            return (None, None);
        };
        let mut c = TlsClient::new(stream);
        c.version = connect.protocol;
        if !c.try_send(&Packet::Connect(connect)).await {
            return (None, None);
        }
        match tokio::time::timeout(TIMEOUT, c.try_recv())
            .await
            .expect("CONNACK or close within TIMEOUT")
        {
            Some(r) => match r.packet() {
                Packet::ConnAck(a) => {
                    let reason = a.reason;
                    (Some(reason), Some(c))
                }
                p => panic!("expected CONNACK, got {p:?}"),
            },
            None => (None, None),
        }
    }

    /// Connects as `client_id` and checks the CONNACK accepts it.
    async fn connect(tls: &ClientTls<'_>, addr: SocketAddr, client_id: &str) -> TlsClient {
        let connect = connect_packet(ProtocolVersion::V3_1_1, client_id, true);
        match TlsClient::try_connect(tls, addr, connect).await {
            (Some(ReasonCode::Success), Some(c)) => c,
            (reason, _) => panic!("{client_id}: expected CONNACK success, got {reason:?}"),
        }
    }

    /// Whether the packet could be written.
    async fn try_send(&mut self, packet: &Packet<'_>) -> bool {
        let mut buf = vec![0u8; packet.encoded_len(self.version).expect("encodable")];
        packet.encode(self.version, &mut buf).unwrap();
        self.stream.write_all(&buf).await.is_ok() && self.stream.flush().await.is_ok()
    }

    async fn send(&mut self, packet: &Packet<'_>) {
        assert!(self.try_send(packet).await, "write failed");
    }

    async fn try_recv(&mut self) -> Option<Received> {
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
                Err(e) => panic!("server sent a malformed packet: {e}"),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    async fn recv(&mut self) -> Received {
        match tokio::time::timeout(TIMEOUT, self.try_recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => panic!("connection closed while a packet was expected"),
            Err(_) => panic!("no packet within {TIMEOUT:?}"),
        }
    }

    async fn expect(&mut self, expected: &Packet<'_>) {
        let got = self.recv().await;
        assert_eq!(&got.packet(), expected);
    }

    async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        self.expect(&Packet::PingResp).await;
    }

    /// Subscribes to `topic` at QoS 1, publishes to it at QoS 1 and
    /// receives its own message back.
    async fn round_trip(&mut self, topic: &str, payload: &[u8]) {
        let codes = self.subscribe_codes(1, topic).await;
        assert_eq!(codes, [ReasonCode::GrantedQoS1], "SUBACK for {topic}");
        self.send(&Packet::Publish(publish(
            topic,
            payload,
            QoS::AtLeastOnce,
            2,
            false,
        )))
        .await;
        let mut got_ack = false;
        let mut got_msg = false;
        while !(got_ack && got_msg) {
            let r = self.recv().await;
            match r.packet() {
                Packet::PubAck(a) => {
                    assert_eq!(a.pid, pid_(2));
                    got_ack = true;
                }
                Packet::Publish(p) => {
                    assert_eq!((p.topic, p.payload), (topic, payload));
                    let pid = p.qos_pid.pid().expect("QoS 1");
                    self.send(&Packet::PubAck(mqtt_codec::PubResp::new(pid)))
                        .await;
                    got_msg = true;
                }
                p => panic!("unexpected {p:?}"),
            }
        }
    }

    async fn subscribe_codes(&mut self, pid: u16, filter: &str) -> Vec<ReasonCode> {
        let filters = [SubscribeFilter {
            filter,
            options: SubscriptionOptions::qos(QoS::AtLeastOnce),
        }];
        self.send(&Packet::Subscribe(mqtt_codec::Subscribe {
            pid: pid_(pid),
            properties: mqtt_codec::Properties::EMPTY,
            filters: mqtt_codec::List::from_slice(&filters),
        }))
        .await;
        match self.recv().await.packet() {
            Packet::SubAck(a) => {
                assert_eq!(a.pid, pid_(pid));
                a.codes.iter().collect()
            }
            p => panic!("expected SUBACK, got {p:?}"),
        }
    }

    /// The certificate the server presented.
    fn server_cert(&self) -> CertificateDer<'static> {
        self.stream.get_ref().1.peer_certificates().unwrap()[0].clone()
    }

    async fn disconnect(mut self) {
        self.send(&Packet::Disconnect(mqtt_codec::Disconnect::NORMAL))
            .await;
        let _ = self.stream.shutdown().await;
    }
}

/// Checks that a client is refused: the handshake fails, or (TLS 1.3, where
/// the client finishes first) the connection closes before any CONNACK.
async fn assert_refused(tls: &ClientTls<'_>, addr: SocketAddr, what: &str) {
    let connect = connect_packet(ProtocolVersion::V3_1_1, "refused", true);
    let (reason, _) = TlsClient::try_connect(tls, addr, connect).await;
    assert_eq!(reason, None, "{what}: expected the connection refused");
}

// ---------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn tls_listener_serves_mqtt_over_tls_1_2_and_1_3() {
    let pki = Pki::new();
    let broker = tls_broker(&pki.tls, true).await;
    let addr = broker.local_addr();
    for (i, version) in BOTH_TLS.into_iter().enumerate() {
        let tls = ClientTls {
            version,
            ..ClientTls::new(&pki.ca.pem)
        };
        let mut c = TlsClient::connect(&tls, addr, &format!("tls-{i}")).await;
        assert_eq!(
            c.stream.get_ref().1.protocol_version(),
            Some(version.version),
            "negotiated version"
        );
        assert_eq!(c.server_cert(), pki.server.der());
        c.round_trip("tls/echo", b"over tls").await;
        c.ping().await;
        c.disconnect().await;
    }
    assert_eq!(broker.stats().tls_handshake_failures.get(), 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn plain_mqtt_on_a_tls_port_fails_the_handshake_and_is_counted() {
    let pki = Pki::new();
    let broker = tls_broker(&pki.tls, true).await;
    let mut plain = RawClient::open(broker.local_addr(), ProtocolVersion::V3_1_1).await;
    plain
        .send(&Packet::Connect(connect_packet(
            ProtocolVersion::V3_1_1,
            "plain",
            true,
        )))
        .await;
    // Whatever comes back is a TLS alert, not MQTT; the socket is closed.
    let closed = tokio::time::timeout(TIMEOUT, async {
        let mut buf = [0u8; 64];
        while let Ok(n) = plain.stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            assert_ne!(buf[0], 0x20, "an MQTT CONNACK on a TLS port");
        }
    })
    .await;
    assert!(closed.is_ok(), "connection not closed");
    eventually("handshake failure counted", || {
        broker.stats().tls_handshake_failures.get() == 1
    })
    .await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_stalled_handshake_does_not_block_others_and_times_out() {
    let pki = Pki::new();
    let config = Config {
        connect_timeout_secs: 1,
        ..Config::ephemeral()
    };
    let broker = tls_broker_with(config, &pki.tls, true).await;
    let addr = broker.local_addr();
    // A socket that never says anything.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Meanwhile a real client gets through.
    let tls = ClientTls::new(&pki.ca.pem);
    let mut c = TlsClient::connect(&tls, addr, "busy").await;
    c.ping().await;
    // The silent socket is closed after the connect timeout, and counted.
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(TIMEOUT, silent.read(&mut buf))
        .await
        .expect("silent socket closed within TIMEOUT");
    assert!(matches!(n, Ok(0) | Err(_)), "got {n:?}");
    eventually("stalled handshake counted", || {
        broker.stats().tls_handshake_failures.get() == 1
    })
    .await;
    c.ping().await;
    c.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn required_client_certificate_must_be_signed_by_the_ca() {
    let pki = Pki::new().with_client_ca(true);
    let broker = tls_broker(&pki.tls, true).await;
    let addr = broker.local_addr();
    let good = pki.ca.client("device-1");
    let other_ca = Ca::new("another CA");
    let forged = other_ca.client("device-1");
    let mut refused = 0;
    for version in BOTH_TLS {
        let base = ClientTls {
            version,
            ..ClientTls::new(&pki.ca.pem)
        };
        let with_cert = ClientTls {
            identity: Some(&good),
            ..base
        };
        let mut c = TlsClient::connect(&with_cert, addr, "device-1").await;
        c.round_trip("devices/1", b"hello").await;
        c.disconnect().await;

        assert_refused(&base, addr, "no client certificate").await;
        let from_other_ca = ClientTls {
            identity: Some(&forged),
            ..base
        };
        assert_refused(&from_other_ca, addr, "certificate of another CA").await;
        refused += 2;
    }
    eventually("every refused handshake counted", || {
        broker.stats().tls_handshake_failures.get() == refused
    })
    .await;
    broker.shutdown().await;
}

#[tokio::test]
async fn optional_client_certificate_lets_clients_without_one_in() {
    let pki = Pki::new().with_client_ca(false);
    let broker = tls_broker(&pki.tls, true).await;
    let addr = broker.local_addr();
    let good = pki.ca.client("device-2");
    let forged = Ca::new("another CA").client("device-2");
    let base = ClientTls::new(&pki.ca.pem);
    let mut without = TlsClient::connect(&base, addr, "without").await;
    without.ping().await;
    let with_cert = ClientTls {
        identity: Some(&good),
        ..ClientTls::new(&pki.ca.pem)
    };
    let mut with = TlsClient::connect(&with_cert, addr, "with").await;
    with.ping().await;
    // A certificate that is presented must still be valid.
    let bad = ClientTls {
        identity: Some(&forged),
        ..ClientTls::new(&pki.ca.pem)
    };
    assert_refused(&bad, addr, "certificate of another CA").await;
    without.disconnect().await;
    with.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn identity_as_username_makes_the_common_name_the_user_name() {
    let mut pki = Pki::new().with_client_ca(false);
    pki.tls.use_identity_as_username = true;
    // The ACL grants topics by user name: only the CN "sensor-7" may use
    // sensors/7/#.
    let acl = pki.dir.write(
        "acl",
        "user sensor-7\ntopic readwrite sensors/7/#\nuser someone-else\ntopic readwrite #\n",
    );
    let config = Config {
        acl_file: Some(acl),
        ..Config::ephemeral()
    };
    // Anonymous clients are refused on this listener.
    let broker = tls_broker_with(config, &pki.tls, false).await;
    let addr = broker.local_addr();

    let sensor = pki.ca.client("sensor-7");
    for version in BOTH_TLS {
        let tls = ClientTls {
            identity: Some(&sensor),
            version,
            ..ClientTls::new(&pki.ca.pem)
        };
        // No user name, no password in CONNECT: accepted as "sensor-7".
        let mut c = TlsClient::connect(&tls, addr, "sensor").await;
        c.round_trip("sensors/7/temp", b"21.5").await;
        assert_eq!(
            c.subscribe_codes(3, "sensors/8/temp").await,
            [ReasonCode::UnspecifiedError],
            "sensors/8 is not granted to sensor-7"
        );
        c.disconnect().await;
    }

    // A CONNECT user name does not override the certificate's.
    let tls = ClientTls {
        identity: Some(&sensor),
        ..ClientTls::new(&pki.ca.pem)
    };
    let mut connect = connect_packet(ProtocolVersion::V3_1_1, "sensor-claims", true);
    connect.username = Some("someone-else");
    let (reason, c) = TlsClient::try_connect(&tls, addr, connect).await;
    assert_eq!(reason, Some(ReasonCode::Success));
    let mut c = c.unwrap();
    assert_eq!(
        c.subscribe_codes(1, "other/topic").await,
        [ReasonCode::UnspecifiedError],
        "the user is the CN, not the CONNECT user name"
    );
    c.disconnect().await;

    // Without a certificate the client is anonymous, and refused.
    let anonymous = ClientTls::new(&pki.ca.pem);
    let (reason, _) = TlsClient::try_connect(
        &anonymous,
        addr,
        connect_packet(ProtocolVersion::V3_1_1, "anon", true),
    )
    .await;
    assert_eq!(reason, Some(ReasonCode::NotAuthorized));
    broker.shutdown().await;
}

#[tokio::test]
async fn reload_serves_new_certificates_and_keeps_connected_clients() {
    let pki = Pki::new();
    let broker = tls_broker(&pki.tls, true).await;
    let addr = broker.local_addr();
    let old_trust = ClientTls::new(&pki.ca.pem);
    let mut old = TlsClient::connect(&old_trust, addr, "old").await;
    old.ping().await;

    // Renew: a new CA and server certificate replace the files.
    let new_ca = Ca::new("renewed CA");
    let renewed = new_ca.server();
    std::fs::write(&pki.tls.cert_file, &renewed.cert).unwrap();
    std::fs::write(&pki.tls.key_file, &renewed.key).unwrap();
    broker.reload();

    let new_trust = ClientTls::new(&new_ca.pem);
    let mut new = TlsClient::connect(&new_trust, addr, "new").await;
    assert_eq!(
        new.server_cert(),
        renewed.der(),
        "new connections get the new certificate"
    );
    assert_refused(&old_trust, addr, "client trusting only the old CA").await;

    // The connection made before the reload is untouched.
    old.ping().await;
    old.round_trip("still/here", b"yes").await;

    // Unusable files: the reload is refused and the certificate in force stays.
    std::fs::write(&pki.tls.cert_file, "not a certificate").unwrap();
    broker.reload();
    let mut after_bad = TlsClient::connect(&new_trust, addr, "after-bad").await;
    assert_eq!(after_bad.server_cert(), renewed.der());
    after_bad.ping().await;

    new.ping().await;
    old.ping().await;
    for c in [old, new, after_bad] {
        c.disconnect().await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_slow_reader_over_tls_receives_every_byte() {
    // A burst far larger than the socket buffers to a subscriber that reads
    // only once the publisher is done: the tail of the burst must not wait
    // in the TLS layer for a write that never comes.
    let pki = Pki::new();
    let broker = tls_broker(&pki.tls, true).await;
    let addr = broker.local_addr();
    let tls = ClientTls::new(&pki.ca.pem);
    let slow = ClientTls {
        receive_buffer: Some(4096),
        ..ClientTls::new(&pki.ca.pem)
    };
    let mut sub = TlsClient::connect(&slow, addr, "slow").await;
    assert_eq!(
        sub.subscribe_codes(1, "bulk").await,
        [ReasonCode::GrantedQoS1]
    );
    let mut publisher = TlsClient::connect(&tls, addr, "fast").await;
    const N: usize = 120;
    let payload = vec![0x5a; 64 * 1024];
    for i in 0..N {
        let mut p = publish("bulk", &payload, QoS::AtMostOnce, 0, false);
        if i == N - 1 {
            p.payload = b"last";
        }
        publisher.send(&Packet::Publish(p)).await;
    }
    // Every PUBLISH before it has been routed once PINGRESP is back.
    publisher.ping().await;
    for i in 0..N {
        let r = sub.recv().await;
        let p = r.publish();
        let want: &[u8] = if i == N - 1 { b"last" } else { &payload };
        assert!(p.payload == want, "message {i}");
    }
    sub.ping().await;
    publisher.disconnect().await;
    sub.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn unusable_tls_files_fail_start() {
    let pki = Pki::new();
    let mut config = Config::ephemeral();
    let mut tls = pki.tls.clone();
    tls.key_file = pki.dir.write("empty.key", "");
    config.listeners[0].tls = Some(tls);
    let err = mqtt_broker::Broker::start(config)
        .await
        .err()
        .expect("start refused");
    assert!(err.to_string().contains("key_file"), "{err}");

    // require_certificate without a CA to check against.
    let mut config = Config::ephemeral();
    let mut tls = pki.tls.clone();
    tls.require_certificate = true;
    config.listeners[0].tls = Some(tls);
    let err = mqtt_broker::Broker::start(config)
        .await
        .err()
        .expect("start refused");
    assert!(err.to_string().contains("ca_file"), "{err}");
}

#[test]
fn example_config_tls_listener_parses() {
    // The commented-out TLS listener in the example file, uncommented.
    let text = include_str!("../mqtt-broker.example.toml");
    let start = text.find("# A TLS listener").expect("TLS example");
    let start = start
        + text[start..]
            .find("# [[listeners]]")
            .expect("listener table");
    let block: String = text[start..]
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    let config = Config::from_toml(&block).expect("TLS example parses");
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(
        config.listeners[0].tls,
        Some(TlsListenerConfig {
            cert_file: "/etc/mqtt-broker/server.crt".into(),
            key_file: "/etc/mqtt-broker/server.key".into(),
            ca_file: Some("/etc/mqtt-broker/ca.crt".into()),
            require_certificate: false,
            use_identity_as_username: false,
        })
    );
}
