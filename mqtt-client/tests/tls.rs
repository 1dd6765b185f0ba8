//! The client over TLS (rustls) against the broker's TLS listener: a CA
//! file, mutual TLS with a client certificate, the explicit insecure option,
//! and refusal of a server whose certificate the client does not trust.

mod common;

use std::path::PathBuf;

use common::*;
use mqtt_broker::config::TlsListenerConfig;
use mqtt_client::{ClientError, ConnectOptions, ProtocolVersion, QoS, TlsOptions};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
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

    /// (certificate, key) PEM signed by this CA.
    fn leaf(
        &self,
        mut params: CertificateParams,
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("mqtt-client-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A broker with one TLS listener whose certificate `ca` signed; client
/// certificates from `ca` are required when `mutual`.
async fn tls_broker(dir: &Dir, ca: &Ca, mutual: bool) -> mqtt_broker::BrokerHandle {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let (cert, key) = ca.leaf(params, ExtendedKeyUsagePurpose::ServerAuth);
    let mut config = mqtt_broker::Config::ephemeral();
    config.listeners[0].tls = Some(TlsListenerConfig {
        cert_file: dir.write("server.crt", &cert),
        key_file: dir.write("server.key", &key),
        ca_file: mutual.then(|| dir.write("clients-ca.crt", &ca.pem)),
        require_certificate: mutual,
        use_identity_as_username: false,
    });
    broker_with(config).await
}

fn tls_opts(addr: std::net::SocketAddr, id: &str, tls: TlsOptions) -> ConnectOptions {
    let mut o = ConnectOptions::new("localhost", addr.port())
        .client_id(id)
        .version(ProtocolVersion::V5);
    o.tls = Some(tls);
    o.reconnect = false;
    o
}

async fn round_trip(o: ConnectOptions) {
    let (client, mut messages) = connect(o).await;
    client.subscribe("tls/t", QoS::AtLeastOnce).await.unwrap();
    client
        .publish("tls/t", "over tls", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = within("message over TLS", messages.recv()).await.unwrap();
    assert_eq!(m.payload_str(), Some("over tls"));
    client.disconnect().await.unwrap();
}

fn ca_file(dir: &Dir, ca: &Ca) -> PathBuf {
    dir.write("ca.crt", &ca.pem)
}

#[tokio::test]
async fn client_verifies_the_server_against_a_ca_file() {
    let dir = Dir::new("ca");
    let ca = Ca::new("test ca");
    let broker = tls_broker(&dir, &ca, false).await;
    let tls = TlsOptions {
        ca_file: Some(ca_file(&dir, &ca)),
        ..Default::default()
    };
    round_trip(tls_opts(broker.local_addr(), "tls-ca", tls)).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn client_refuses_a_server_signed_by_another_ca() {
    let dir = Dir::new("other");
    let ca = Ca::new("server ca");
    let other = Ca::new("other ca");
    let broker = tls_broker(&dir, &ca, false).await;
    let other_file = dir.write("other.crt", &other.pem);
    let tls = TlsOptions {
        ca_file: Some(other_file),
        ..Default::default()
    };
    let err = mqtt_client::Client::connect(tls_opts(broker.local_addr(), "tls-bad", tls))
        .await
        .err()
        .expect("an untrusted server is refused");
    assert!(
        matches!(err, ClientError::Connection(ref e) if e.contains("TLS")),
        "{err}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn insecure_option_skips_verification() {
    let dir = Dir::new("insecure");
    let ca = Ca::new("unknown ca");
    let broker = tls_broker(&dir, &ca, false).await;
    let tls = TlsOptions {
        insecure: true,
        ..Default::default()
    };
    round_trip(tls_opts(broker.local_addr(), "tls-insecure", tls)).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn client_certificate_for_mutual_tls() {
    let dir = Dir::new("mutual");
    let ca = Ca::new("mutual ca");
    let broker = tls_broker(&dir, &ca, true).await;
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "device-1");
    let (cert, key) = ca.leaf(params, ExtendedKeyUsagePurpose::ClientAuth);
    let tls = TlsOptions {
        ca_file: Some(ca_file(&dir, &ca)),
        cert_file: Some(dir.write("client.crt", &cert)),
        key_file: Some(dir.write("client.key", &key)),
        ..Default::default()
    };
    round_trip(tls_opts(broker.local_addr(), "tls-mutual", tls)).await;

    // Without a certificate the same server refuses the client.
    let tls = TlsOptions {
        ca_file: Some(ca_file(&dir, &ca)),
        ..Default::default()
    };
    assert!(
        mqtt_client::Client::connect(tls_opts(broker.local_addr(), "tls-nocert", tls))
            .await
            .is_err()
    );
    broker.shutdown().await;
}

/// Plain MQTT to a TLS port: the server answers with a TLS alert (first
/// byte 0x15); the tool says it looks like a TLS port and how to use TLS,
/// not "invalid fixed header flags".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_tool_on_a_tls_port_says_to_use_tls() {
    let dir = Dir::new("plain-to-tls");
    let ca = Ca::new("test ca");
    let broker = tls_broker(&dir, &ca, false).await;
    let port = broker.local_addr().port();
    let out = common::cli::run(port, &["pub", "-t", "x", "-m", "y"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = common::cli::text(&out.stderr);
    assert!(err.contains("looks like a TLS port"), "{err}");
    assert!(err.contains("--cafile"), "{err}");
    assert!(!err.contains("fixed header"), "{err}");
    // And with --cafile it connects.
    let ca_path = ca_file(&dir, &ca);
    let out = common::cli::run(
        port,
        &[
            "pub",
            "--cafile",
            ca_path.to_str().unwrap(),
            "-t",
            "x",
            "-m",
            "y",
        ],
    )
    .await;
    common::cli::ok(&out);
    broker.shutdown().await;
}

/// A self-signed CA certificate used as the server's own (what a one-line
/// `openssl req -x509` makes): the error is a sentence that says what is
/// wrong and what to do, not only rustls's "CaUsedAsEndEntity".
#[tokio::test]
async fn a_ca_certificate_as_the_servers_is_explained() {
    let dir = Dir::new("ca-as-server");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap().pem();
    let mut config = mqtt_broker::Config::ephemeral();
    config.listeners[0].tls = Some(TlsListenerConfig {
        cert_file: dir.write("server.crt", &cert),
        key_file: dir.write("server.key", &key.serialize_pem()),
        ca_file: None,
        require_certificate: false,
        use_identity_as_username: false,
    });
    let broker = broker_with(config).await;
    let tls = TlsOptions {
        ca_file: Some(dir.write("ca.crt", &cert)),
        ..Default::default()
    };
    let err = mqtt_client::Client::connect(tls_opts(broker.local_addr(), "tls-ca-leaf", tls))
        .await
        .err()
        .expect("a CA certificate as the server's is refused");
    let text = err.to_string();
    assert!(text.contains("is a CA certificate"), "{text}");
    assert!(text.contains("mqtt-broker certs --host NAME"), "{text}");
    broker.shutdown().await;
}

/// `--capath DIR` (mosquitto's): every PEM file in the directory is a
/// trusted CA; files without a certificate are passed over; a directory
/// holding only another CA is refused like a wrong `--cafile`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_directory_is_trusted_like_a_ca_file() {
    let dir = Dir::new("capath");
    let ca = Ca::new("dir ca");
    let other = Ca::new("other ca");
    let broker = tls_broker(&dir, &ca, false).await;
    let good = Dir::new("capath-good");
    good.write("0a1b2c3d.0", &other.pem);
    good.write("5e6f7a8b.0", &ca.pem);
    good.write("README", "not a certificate\n");
    let tls = TlsOptions {
        ca_dir: Some(good.0.clone()),
        ..Default::default()
    };
    round_trip(tls_opts(broker.local_addr(), "tls-capath", tls)).await;

    let bad = Dir::new("capath-bad");
    bad.write("other.pem", &other.pem);
    let tls = TlsOptions {
        ca_dir: Some(bad.0.clone()),
        ..Default::default()
    };
    let err = mqtt_client::Client::connect(tls_opts(broker.local_addr(), "tls-capath-bad", tls))
        .await
        .err()
        .expect("a server signed by a CA not in the directory is refused");
    assert!(
        matches!(err, ClientError::Connection(ref e) if e.contains("TLS")),
        "{err}"
    );

    // Through the tool: --capath alone turns TLS on.
    let port = broker.local_addr().port();
    let out = common::cli::run(
        port,
        &[
            "pub",
            "--capath",
            good.0.to_str().unwrap(),
            "-t",
            "x",
            "-m",
            "y",
        ],
    )
    .await;
    common::cli::ok(&out);
    let empty = Dir::new("capath-empty");
    let out = common::cli::run(
        port,
        &[
            "pub",
            "--capath",
            empty.0.to_str().unwrap(),
            "-t",
            "x",
            "-m",
            "y",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = common::cli::text(&out.stderr);
    assert!(err.contains("no CA certificate"), "{err}");
    // --insecure connects without any CA.
    let out = common::cli::run(port, &["pub", "--insecure", "-t", "x", "-m", "y"]).await;
    common::cli::ok(&out);
    broker.shutdown().await;
}

/// `--tls-alpn NAME` offers NAME in the handshake (RFC 7301), as brokers
/// behind a port-443 ALPN router need (AWS IoT's `mqtt`). A TLS server in
/// the test records what was negotiated; a server that speaks only another
/// protocol refuses the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_names_are_offered_in_the_handshake() {
    use std::sync::Arc;
    use tokio_rustls::rustls;

    let dir = Dir::new("alpn");
    let ca = Ca::new("alpn ca");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let (cert, key) = ca.leaf(params, ExtendedKeyUsagePurpose::ServerAuth);
    let server = |alpn: &[u8]| {
        use rustls::pki_types::pem::PemObject;
        let chain =
            vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        c.alpn_protocols = vec![alpn.to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(c))
    };
    let ca_path = ca_file(&dir, &ca);

    for (server_alpn, accepted) in [(&b"mqtt"[..], true), (&b"x-other"[..], false)] {
        let acceptor = server(server_alpn);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor
                .accept(tcp)
                .await
                .map(|s| s.get_ref().1.alpn_protocol().map(|p| p.to_vec()))
        });
        let tls = TlsOptions {
            ca_file: Some(ca_path.clone()),
            alpn: vec!["mqtt".into()],
            ..Default::default()
        };
        let mut o = ConnectOptions::new("localhost", port).client_id("alpn");
        o.tls = Some(tls);
        o.reconnect = false;
        o.connect_timeout = std::time::Duration::from_secs(2);
        // No MQTT server behind the TLS: the connection fails either way;
        // what matters is the handshake the server saw.
        let _ = mqtt_client::Client::connect(o).await;
        let got = within("the TLS handshake", accept).await.unwrap();
        if accepted {
            assert_eq!(got.unwrap(), Some(b"mqtt".to_vec()));
        } else {
            assert!(got.is_err(), "no common protocol: the handshake fails");
        }
    }
}
