//! TLS listeners: a rustls server configuration (ring, TLS 1.2 and 1.3 only)
//! built from a listener's PEM files, swappable at run time so certificates
//! can be renewed (SIGHUP) without dropping connected clients, the client
//! certificate's Common Name for `use_identity_as_username`, and a stream
//! adapter that keeps TLS records from lingering unsent.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use parking_lot::RwLock;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::version::{TLS12, TLS13};
use tokio_rustls::rustls::{RootCertStore, ServerConfig, ServerConnection};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsListenerConfig;

/// A TLS configuration that could not be built.
#[derive(Debug)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// Builds the server configuration of one listener from its files.
pub fn server_config(cfg: &TlsListenerConfig) -> Result<Arc<ServerConfig>, TlsError> {
    if cfg.ca_file.is_none() {
        if cfg.require_certificate {
            return Err(TlsError("require_certificate needs ca_file".into()));
        }
        if cfg.use_identity_as_username {
            return Err(TlsError("use_identity_as_username needs ca_file".into()));
        }
    }
    let chain = read_certs(&cfg.cert_file, "cert_file")?;
    check_server_certificate(&chain[0], &cfg.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| {
        TlsError(format!(
            "key_file {}: no usable private key: {e}",
            cfg.key_file.display()
        ))
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?;
    let builder = match &cfg.ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca, "ca_file")? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError(format!("ca_file {}: unusable CA: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider());
            let verifier = if cfg.require_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError(format!("ca_file {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError(format!(
            "cert_file {} / key_file {}: {e}",
            cfg.cert_file.display(),
            cfg.key_file.display()
        ))
    })?;
    Ok(Arc::new(config))
}

/// Refuses a server certificate that TLS clients built on rustls or webpki
/// (ours, rumqttc, many others) would refuse, with what to do instead, and
/// warns about one that some clients refuse. The refusals people meet
/// first: `openssl x509 -req` without `-extfile` makes an X.509 version 1
/// certificate ("UnsupportedCertVersion"), and a one-line self-signed
/// `openssl req -x509` makes a CA certificate ("CaUsedAsEndEntity").
fn check_server_certificate(der: &[u8], path: &std::path::Path) -> Result<(), TlsError> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Err(TlsError(format!(
            "cert_file {}: the first certificate cannot be parsed (is it a certificate, not a key or a request?)",
            path.display()
        )));
    };
    if cert.version() != x509_parser::x509::X509Version::V3 {
        return Err(TlsError(format!(
            "cert_file {}: an X.509 version {} certificate (what `openssl x509 -req` makes without -extfile); \
             TLS clients refuse it (UnsupportedCertVersion): make a version 3 certificate with \
             `mqtt-broker certs --host NAME --ip ADDRESS`",
            path.display(),
            cert.version().0 + 1
        )));
    }
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca);
    if is_ca {
        tracing::warn!(
            cert_file = %path.display(),
            "the server certificate is a CA certificate (CA:TRUE, as a one-line `openssl req -x509` makes): \
             clients built on rustls refuse it (CaUsedAsEndEntity); make a CA and a server certificate \
             with `mqtt-broker certs --host NAME --ip ADDRESS`"
        );
    }
    if cert.subject_alternative_name().ok().flatten().is_none() {
        tracing::warn!(
            cert_file = %path.display(),
            "the server certificate names no host (no subjectAltName): clients that check the host \
             name refuse it; `mqtt-broker certs --host NAME --ip ADDRESS` makes one that names them"
        );
    }
    Ok(())
}

/// A failed handshake as a sentence that says what is wrong and what to
/// do, for the log line (rustls's own names, such as `UnknownIssuer`, mean
/// little to someone who made a certificate with openssl).
pub fn explain(e: &io::Error) -> String {
    use tokio_rustls::rustls::{CertificateError, Error};
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) else {
        return e.to_string();
    };
    match err {
        Error::InvalidCertificate(c) => {
            let what = match c {
                CertificateError::UnknownIssuer => {
                    "is not signed by a CA in ca_file: give the client a certificate from that CA, or add its CA to ca_file".to_string()
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "has expired: make a new one".to_string()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "is not valid yet: check the clocks of both machines".to_string()
                }
                CertificateError::BadSignature => "has a bad signature".to_string(),
                other => {
                    let name = format!("{other:?}");
                    if name.contains("UnsupportedCertVersion") {
                        "is X.509 version 1 (what `openssl x509 -req` makes without -extfile): make a version 3 one, e.g. `mqtt-broker certs --client NAME`".to_string()
                    } else if name.contains("CaUsedAsEndEntity") {
                        "is a CA certificate (CA:TRUE), which cannot identify a client: make a client certificate signed by the CA".to_string()
                    } else {
                        format!("was refused: {other}")
                    }
                }
            };
            format!("the client's certificate {what}")
        }
        Error::NoCertificatesPresented => {
            "the client sent no certificate, and require_certificate is on".to_string()
        }
        Error::AlertReceived(alert) => format!(
            "the client refused the handshake ({alert:?}): most often it does not trust our \
             certificate: its CA file must hold the CA that signed cert_file, and the certificate \
             must name the host or address the client connects to"
        ),
        Error::InvalidMessage(_) => {
            "the client does not speak TLS (plain MQTT on a TLS port?)".to_string()
        }
        Error::PeerIncompatible(p) => format!(
            "no TLS version or cipher suite in common (this listener offers TLS 1.2 and 1.3): {p:?}"
        ),
        other => other.to_string(),
    }
}

/// Every certificate of a PEM file; an error if there is none.
fn read_certs(path: &std::path::Path, key: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{key} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{key} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// One TLS listener's settings and the server configuration in force, which
/// [`TlsListener::reload`] replaces. A handshake takes the configuration in
/// force when it starts; established connections are not touched by a reload.
pub struct TlsListener {
    cfg: TlsListenerConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsListener {
    /// Loads the files; fails if they are unusable.
    pub fn load(cfg: &TlsListenerConfig) -> Result<TlsListener, TlsError> {
        Ok(TlsListener {
            current: RwLock::new(server_config(cfg)?),
            cfg: cfg.clone(),
        })
    }

    /// An acceptor with the configuration in force.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }

    /// Whether the client certificate's Common Name is the user name.
    pub fn identity_as_username(&self) -> bool {
        self.cfg.use_identity_as_username
    }

    /// Rebuilds the configuration from the files. On error the one in force
    /// stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.cfg)?;
        *self.current.write() = fresh;
        Ok(())
    }
}

/// What the client certificate of a finished handshake says about the user.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    /// No client certificate was presented.
    None,
    /// The certificate's (first) Common Name.
    CommonName(String),
    /// A certificate without a usable Common Name.
    Unusable,
}

/// The Common Name of the client's certificate.
pub fn peer_identity(conn: &ServerConnection) -> PeerIdentity {
    match conn.peer_certificates().and_then(|c| c.first()) {
        None => PeerIdentity::None,
        Some(cert) => match common_name(cert) {
            Some(cn) => PeerIdentity::CommonName(cn),
            None => PeerIdentity::Unusable,
        },
    }
}

/// The first Common Name of a DER certificate's subject, if it is a non-empty
/// string.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    let cn = cn.as_str().ok()?;
    (!cn.is_empty()).then(|| cn.to_string())
}

/// A stream whose writes complete only once the bytes are on their way to
/// the socket.
///
/// A TLS stream accepts plaintext into its record buffer and reports it
/// written even when the socket is full; the records then wait for the next
/// write or flush. The connection loop neither flushes nor writes when it has
/// nothing more to send, so the tail of a burst to a slow reader could wait
/// forever. Here a write that could not reach the socket completely stays
/// pending (and is woken when the socket drains); when it completes it
/// reports the bytes it had taken. The caller must retry with the same bytes
/// at the front of its buffer, as writers draining an output buffer do.
pub struct WriteThrough<S> {
    inner: S,
    /// Bytes taken into the TLS buffer but not yet reported written.
    taken: usize,
}

impl<S> WriteThrough<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        WriteThrough { inner, taken: 0 }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteThrough<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteThrough<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.taken == 0 {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            this.taken = n;
        }
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        Poll::Ready(Ok(std::mem::take(&mut this.taken)))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_certificate_without_ca_is_refused() {
        let cfg = TlsListenerConfig {
            cert_file: "/nonexistent.crt".into(),
            key_file: "/nonexistent.key".into(),
            ca_file: None,
            require_certificate: true,
            use_identity_as_username: false,
        };
        let e = server_config(&cfg).unwrap_err();
        assert!(e.0.contains("ca_file"), "{e}");
    }

    #[test]
    fn missing_files_are_named() {
        let cfg = TlsListenerConfig {
            cert_file: "/nonexistent.crt".into(),
            key_file: "/nonexistent.key".into(),
            ca_file: None,
            require_certificate: false,
            use_identity_as_username: false,
        };
        let e = server_config(&cfg).unwrap_err();
        assert!(e.0.contains("/nonexistent.crt"), "{e}");
    }
}
