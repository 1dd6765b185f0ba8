//! `mqtt-broker certs`: a CA, a server certificate that names the host (DNS
//! names and IP addresses in subjectAltName, as TLS clients check), and
//! optionally client certificates, written as PEM files with rcgen.
//!
//! This replaces the openssl recipes that produce certificates TLS clients
//! refuse: `openssl x509 -req` without `-extfile` makes X.509 version 1
//! (rustls: UnsupportedCertVersion), and a one-line `openssl req -x509`
//! makes a CA certificate used as a server certificate (rustls:
//! CaUsedAsEndEntity). Everything here is version 3 with the right
//! extensions: the CA has CA:TRUE and keyCertSign; the server certificate
//! has serverAuth and its names; client certificates have clientAuth and the
//! user name as Common Name (for `use_identity_as_username`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// What to make.
#[derive(Debug, Clone)]
pub struct CertsRequest {
    /// Directory the files are written to (created if missing).
    pub dir: PathBuf,
    /// DNS names of the server (e.g. `raspberrypi.local`).
    pub hosts: Vec<String>,
    /// IP addresses of the server (e.g. its LAN address from `hostname -I`).
    pub ips: Vec<IpAddr>,
    /// Common Names of client certificates to make.
    pub clients: Vec<String>,
    /// Days the server and client certificates are valid.
    pub days: u32,
    /// Replace existing files.
    pub force: bool,
}

/// Days the CA is valid: longer than what it signs, so renewing a server
/// certificate does not mean handing every client a new CA.
const CA_DAYS: i64 = 3650;

/// Makes the files; returns their paths in the order written.
pub fn generate(req: &CertsRequest) -> Result<Vec<PathBuf>, String> {
    if req.hosts.is_empty() && req.ips.is_empty() {
        return Err(
            "name the server: --host NAME (e.g. raspberrypi.local) and/or --ip ADDRESS (e.g. from `hostname -I`)"
                .into(),
        );
    }
    if req.days == 0 {
        return Err("--days must be at least 1".into());
    }
    let mut files = vec![
        "ca.crt".to_string(),
        "ca.key".to_string(),
        "server.crt".to_string(),
        "server.key".to_string(),
    ];
    for c in &req.clients {
        if c.is_empty() || c.contains(['/', '\\']) || c.starts_with('.') {
            return Err(format!("client name {c:?}: use a plain user name"));
        }
        files.push(format!("client-{c}.crt"));
        files.push(format!("client-{c}.key"));
    }
    std::fs::create_dir_all(&req.dir).map_err(|e| format!("{}: {e}", req.dir.display()))?;
    if !req.force {
        if let Some(f) = files.iter().map(|f| req.dir.join(f)).find(|p| p.exists()) {
            return Err(format!(
                "{} exists: give another --dir, or --force to replace the files",
                f.display()
            ));
        }
    }
    let e = |e: rcgen::Error| e.to_string();
    let now = time::OffsetDateTime::now_utc();
    // An hour back, for clocks a little behind (a Pi without a real-time
    // clock before NTP).
    let not_before = now - time::Duration::hours(1);

    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    let host = req
        .hosts
        .first()
        .cloned()
        .or_else(|| req.ips.first().map(|i| i.to_string()))
        .unwrap_or_default();
    ca.distinguished_name
        .push(DnType::CommonName, format!("mqtt-broker CA ({host})"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = now + time::Duration::days(CA_DAYS);
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |cn: &str, eku: ExtendedKeyUsagePurpose, sans: Vec<SanType>| {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![eku];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.use_authority_key_identifier_extension = true;
        p.not_before = not_before;
        p.not_after = now + time::Duration::days(i64::from(req.days));
        let key = KeyPair::generate().map_err(e)?;
        let cert = p.signed_by(&key, &issuer).map_err(e)?;
        Ok::<_, String>((cert.pem(), key.serialize_pem()))
    };

    let mut sans = Vec::new();
    for h in &req.hosts {
        let name = h
            .clone()
            .try_into()
            .map_err(|_| format!("--host {h:?} is not a DNS name"))?;
        sans.push(SanType::DnsName(name));
    }
    sans.extend(req.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let (server_pem, server_key) = leaf(&host, ExtendedKeyUsagePurpose::ServerAuth, sans)?;

    let mut written = Vec::new();
    let mut write = |name: &str, text: &str, secret: bool| -> Result<(), String> {
        let path = req.dir.join(name);
        write_file(&path, text, secret).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
        Ok(())
    };
    write("ca.crt", &ca_cert.pem(), false)?;
    write("ca.key", &ca_key_pem, true)?;
    write("server.crt", &server_pem, false)?;
    write("server.key", &server_key, true)?;
    for c in &req.clients {
        let (pem, key) = leaf(c, ExtendedKeyUsagePurpose::ClientAuth, Vec::new())?;
        write(&format!("client-{c}.crt"), &pem, false)?;
        write(&format!("client-{c}.key"), &key, true)?;
    }
    Ok(written)
}

/// Writes a file; keys are readable by their owner (and group) only.
fn write_file(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if secret { 0o640 } else { 0o644 })
            .open(path)?;
        f.write_all(text.as_bytes())
    }
    #[cfg(not(unix))]
    {
        let _ = secret;
        std::fs::write(path, text)
    }
}
