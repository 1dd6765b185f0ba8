//! Opening the byte stream: TCP, optionally wrapped in TLS through rustls,
//! optionally carrying a WebSocket (`websocket.rs`).

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::error::ClientError;
use crate::options::{ConnectOptions, TlsOptions};

/// A connected byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

fn conn_err(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Connection(format!("{what}: {e}"))
}

/// Opens TCP (and TLS, and a WebSocket, when configured) to the server.
pub async fn open(opts: &ConnectOptions) -> Result<Box<dyn Stream>, ClientError> {
    let stream = open_tcp_tls(opts).await?;
    match &opts.websocket {
        Some(ws) => Ok(Box::new(
            crate::websocket::upgrade(stream, opts, &ws.path).await?,
        )),
        None => Ok(stream),
    }
}

async fn open_tcp_tls(opts: &ConnectOptions) -> Result<Box<dyn Stream>, ClientError> {
    let tcp = connect_tcp(opts)
        .await
        .map_err(|e| conn_err(&format!("{}:{}", opts.host, opts.port), e))?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &opts.tls else {
        return Ok(Box::new(tcp));
    };
    let config = tls_config(tls)?;
    let name = tls.server_name.clone().unwrap_or_else(|| opts.host.clone());
    let server_name = ServerName::try_from(name).map_err(|e| conn_err("TLS server name", e))?;
    let stream = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| conn_err("TLS handshake", explain(&e)))?;
    Ok(Box::new(stream))
}

/// TCP to the server, from `bind_address` when one is set (the first
/// resolved address of the same family as the bind address is used).
async fn connect_tcp(opts: &ConnectOptions) -> std::io::Result<TcpStream> {
    let Some(local) = opts.bind_address else {
        return TcpStream::connect((opts.host.as_str(), opts.port)).await;
    };
    let remote = tokio::net::lookup_host((opts.host.as_str(), opts.port))
        .await?
        .find(|a| a.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                format!("no address of {} in the family of {local}", opts.host),
            )
        })?;
    let socket = if local.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket
        .bind(std::net::SocketAddr::new(local, 0))
        .map_err(|e| std::io::Error::new(e.kind(), format!("bind to {local}: {e}")))?;
    socket.connect(remote).await
}

/// A refused server certificate as a sentence that says what is wrong and
/// what to do, followed by rustls's own words. The common cases come from
/// openssl recipes: a one-line `openssl req -x509` makes a CA certificate
/// (CaUsedAsEndEntity), `openssl x509 -req` without -extfile makes an X.509
/// version 1 one (UnsupportedCertVersion).
fn explain(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error};
    let Some(Error::InvalidCertificate(c)) = e.get_ref().and_then(|i| i.downcast_ref::<Error>())
    else {
        return e.to_string();
    };
    let name = format!("{c:?}");
    let what = if name.contains("CaUsedAsEndEntity") {
        "the server's certificate is a CA certificate (as a one-line `openssl req -x509` makes), \
         which cannot identify a server: make a CA and a server certificate signed by it \
         (`mqtt-broker certs --host NAME`) and give the client the CA (--cafile)"
    } else if name.contains("UnsupportedCertVersion") {
        "the server's certificate is X.509 version 1 (as `openssl x509 -req` makes without \
         -extfile): make a version 3 one (`mqtt-broker certs --host NAME`)"
    } else {
        match c {
            CertificateError::UnknownIssuer => {
                "the server's certificate is not signed by a CA the client trusts: give the CA that \
                 signed it with --cafile"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate does not name the host connected to: connect with a name \
                 or address it has, or remake it with that --host / --ip"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet: check the clocks"
            }
            _ => return e.to_string(),
        }
    };
    format!("{what} ({e})")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client configuration.
pub fn tls_config(tls: &TlsOptions) -> Result<ClientConfig, ClientError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| conn_err("TLS", e))?;
    let builder = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(insecure::NoVerification(provider())))
    } else {
        let mut roots = RootCertStore::empty();
        if let Some(path) = &tls.ca_file {
            add_pem_file(&mut roots, path)?;
        }
        if let Some(dir) = &tls.ca_dir {
            add_pem_dir(&mut roots, dir)?;
        }
        if tls.ca_file.is_none() && tls.ca_dir.is_none() {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| conn_err(&cert.display().to_string(), e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| conn_err(&cert.display().to_string(), e))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| conn_err(&key.display().to_string(), e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| conn_err("client certificate", e))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(ClientError::Invalid(
            "a client certificate needs both --cert and --key".into(),
        )),
    }?;
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(config)
}

/// Adds every certificate of one PEM file to `roots`.
fn add_pem_file(roots: &mut RootCertStore, path: &std::path::Path) -> Result<usize, ClientError> {
    let mut added = 0;
    for cert in
        CertificateDer::pem_file_iter(path).map_err(|e| conn_err(&path.display().to_string(), e))?
    {
        let cert = cert.map_err(|e| conn_err(&path.display().to_string(), e))?;
        roots.add(cert).map_err(|e| conn_err("CA certificate", e))?;
        added += 1;
    }
    Ok(added)
}

/// Adds the certificates of every PEM file in `dir` (mosquitto's
/// `--capath`). Files that hold no certificate (a CRL, a README) are
/// passed over, as OpenSSL does; a directory that yields none is an error,
/// since nothing could be verified.
fn add_pem_dir(roots: &mut RootCertStore, dir: &std::path::Path) -> Result<(), ClientError> {
    let entries = std::fs::read_dir(dir).map_err(|e| conn_err(&dir.display().to_string(), e))?;
    let mut names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort();
    let mut added = 0;
    for path in names.iter().filter(|p| p.is_file()) {
        added += add_pem_file(roots, path).unwrap_or(0);
    }
    if added == 0 {
        return Err(ClientError::Connection(format!(
            "{}: no CA certificate (PEM) in this directory",
            dir.display()
        )));
    }
    Ok(())
}

mod insecure {
    use std::sync::Arc;

    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio_rustls::rustls::client::danger::{
        HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
    };
    use tokio_rustls::rustls::crypto::{
        verify_tls12_signature, verify_tls13_signature, CryptoProvider,
    };
    use tokio_rustls::rustls::{DigitallySignedStruct, Error, SignatureScheme};

    /// Accepts any certificate (still checking handshake signatures), for
    /// `--insecure`.
    #[derive(Debug)]
    pub struct NoVerification(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for NoVerification {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
