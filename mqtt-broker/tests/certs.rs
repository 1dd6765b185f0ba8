//! `mqtt-broker certs` makes certificates TLS clients accept (version 3, the
//! host's names, a CA that is not the server certificate), and a version 1
//! certificate, as `openssl x509 -req` makes by default, is refused at start
//! with a sentence that says what to do.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::TIMEOUT;
use mqtt_broker::config::TlsListenerConfig;
use mqtt_broker::{Broker, Config, ListenerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-broker");

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("mqtt-certs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_certs(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("certs")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run mqtt-broker certs")
}

fn tls_config(dir: &Path, require: bool) -> Config {
    Config {
        listeners: vec![ListenerConfig {
            allow_anonymous: Some(false),
            tls: Some(TlsListenerConfig {
                cert_file: dir.join("server.crt"),
                key_file: dir.join("server.key"),
                ca_file: require.then(|| dir.join("ca.crt")),
                require_certificate: require,
                use_identity_as_username: require,
            }),
            ..ListenerConfig::new("127.0.0.1:0".parse().unwrap())
        }],
        ..Config::ephemeral()
    }
}

/// CONNECT over TLS, trusting only `ca.crt`, with the client certificate
/// `client` if given; returns the CONNACK return code.
async fn connect(
    addr: std::net::SocketAddr,
    dir: &Path,
    server_name: ServerName<'static>,
    client: Option<&str>,
) -> u8 {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let chain = CertificateDer::pem_file_iter(dir.join(format!("client-{name}.crt")))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(dir.join(format!("client-{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio::time::timeout(
        TIMEOUT,
        TlsConnector::from(Arc::new(config)).connect(server_name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("the client accepts the server's certificate");
    // MQTT 3.1.1 CONNECT, no user name: only the certificate can let it in.
    tls.write_all(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c',
    ])
    .await
    .unwrap();
    let mut ack = [0u8; 4];
    tokio::time::timeout(TIMEOUT, tls.read_exact(&mut ack))
        .await
        .expect("CONNACK in time")
        .unwrap();
    assert_eq!(&ack[..3], &[0x20, 2, 0]);
    ack[3]
}

/// The server certificate names the --host and --ip given, chains to the CA
/// (which is not the server certificate), and a client certificate made
/// with --client logs in by its Common Name.
#[tokio::test]
async fn certs_makes_a_ca_a_server_certificate_and_client_certificates_clients_accept() {
    let dir = Scratch::new("ok");
    let out = run_certs(
        &dir.0,
        &[
            "--host",
            "pi.local",
            "--ip",
            "127.0.0.1",
            "--client",
            "alice",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "client-alice.crt",
        "client-alice.key",
    ] {
        assert!(dir.0.join(f).is_file(), "{f} written");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.0.join("server.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0o040, "keys: owner and group read only");
    }
    let broker = Broker::start(tls_config(&dir.0, true))
        .await
        .expect("the files load");
    let addr = broker.local_addr();
    let by_name = ServerName::try_from("pi.local").unwrap();
    let by_ip = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    assert_eq!(connect(addr, &dir.0, by_name, Some("alice")).await, 0);
    assert_eq!(connect(addr, &dir.0, by_ip, Some("alice")).await, 0);
    broker.shutdown().await;
}

/// Existing files are not replaced without --force; a server with no name
/// is refused.
#[test]
fn certs_refuses_to_overwrite_or_to_make_a_nameless_server() {
    let dir = Scratch::new("refuse");
    assert!(run_certs(&dir.0, &["--host", "a.local"]).status.success());
    let out = run_certs(&dir.0, &["--host", "a.local"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists: give another --dir, or --force"));
    assert!(run_certs(&dir.0, &["--host", "a.local", "--force"])
        .status
        .success());
    let out = run_certs(&dir.0, &["--force"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("name the server: --host NAME"));
}

/// An X.509 version 1 server certificate (made by `openssl x509 -req`
/// without -extfile; committed as test data) is refused at start with what
/// to do, instead of every client failing with UnsupportedCertVersion.
#[tokio::test]
async fn a_version_1_certificate_is_refused_with_what_to_do() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut config = tls_config(&data, false);
    let tls = config.listeners[0].tls.as_mut().unwrap();
    tls.cert_file = data.join("v1-server.crt");
    tls.key_file = data.join("v1-server.key");
    let e = match Broker::start(config).await {
        Ok(_) => panic!("a version 1 certificate was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("an X.509 version 1 certificate"), "{e}");
    assert!(e.contains("mqtt-broker certs --host NAME"), "{e}");
}
