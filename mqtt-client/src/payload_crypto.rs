//! End-to-end payload encryption as Fernet tokens, interoperable with
//! Python's `cryptography.fernet.Fernet`.
//!
//! A token (the public Fernet spec, github.com/fernet/spec `Spec.md`) is
//! URL-safe base64 of: version `0x80`, the creation time (seconds since
//! 1970, big endian u64), a random 128-bit IV, the plaintext encrypted with
//! AES-128-CBC and PKCS7 padding, and an HMAC-SHA256 over all of that. The
//! key is 32 bytes in URL-safe base64: the first half signs, the second
//! encrypts. The broker only ever sees the token.
//!
//! The cryptography is the `fernet` crate on RustCrypto primitives (no
//! OpenSSL); this module adds the key file, the payload types, a TTL check
//! that cannot overflow, and errors that say what went wrong.
//!
//! ```
//! use mqtt_client::payload_crypto::FernetKey;
//!
//! let key = FernetKey::new(&FernetKey::generate()).unwrap();
//! let token = key.encrypt(b"22.5");
//! assert_eq!(&key.decrypt(&token, None).unwrap()[..], b"22.5");
//! ```

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Why a payload could not be decrypted, or a key not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FernetError {
    /// The key is not 32 bytes of URL-safe base64 (as
    /// `Fernet.generate_key()` writes it).
    BadKey(String),
    /// The payload is not a token made with this key: a wrong key, a token
    /// changed on the way, a token from too far in the future, or not a
    /// token at all. Fernet cannot tell these apart, by design.
    Invalid,
    /// The token is authentic but older than the time-to-live.
    Expired {
        /// Seconds since the token was made.
        age_secs: u64,
        /// The time-to-live it was checked against.
        ttl_secs: u64,
    },
}

impl std::fmt::Display for FernetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FernetError::BadKey(why) => write!(f, "not a Fernet key: {why}"),
            FernetError::Invalid => f.write_str(
                "not a Fernet token for this key (wrong key, altered on the way, or not encrypted)",
            ),
            FernetError::Expired { age_secs, ttl_secs } => write!(
                f,
                "Fernet token expired: made {age_secs} s ago, time-to-live {ttl_secs} s"
            ),
        }
    }
}

impl std::error::Error for FernetError {}

/// A Fernet key: encrypts payloads into tokens and decrypts tokens.
#[derive(Clone)]
pub struct FernetKey {
    inner: fernet::Fernet,
}

impl std::fmt::Debug for FernetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("FernetKey(..)")
    }
}

/// Seconds since 1970 now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl FernetKey {
    /// A new random key in the text form `Fernet.generate_key()` returns:
    /// 32 random bytes, URL-safe base64 with padding (44 characters).
    pub fn generate() -> String {
        fernet::Fernet::generate_key()
    }

    /// Reads a key from its text form; surrounding whitespace (a trailing
    /// newline in a key file) is ignored.
    pub fn new(text: &str) -> Result<FernetKey, FernetError> {
        let text = text.trim();
        fernet::Fernet::new(text)
            .map(|inner| FernetKey { inner })
            .ok_or_else(|| {
                FernetError::BadKey(format!(
                    "expected 44 characters of URL-safe base64 (32 bytes), got {} characters",
                    text.len()
                ))
            })
    }

    /// Reads a key file: one key as `mqtt keygen` or Python's
    /// `Fernet.generate_key()` writes it.
    pub fn from_file(path: &Path) -> Result<FernetKey, FernetError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FernetError::BadKey(format!("{}: {e}", path.display())))?;
        FernetKey::new(&text).map_err(|e| match e {
            FernetError::BadKey(why) => FernetError::BadKey(format!("{}: {why}", path.display())),
            other => other,
        })
    }

    /// Encrypts a payload into a token made now.
    pub fn encrypt(&self, plaintext: &[u8]) -> Bytes {
        self.encrypt_at(plaintext, unix_now())
    }

    /// Encrypts a payload into a token dated `unix_secs` (for tests of
    /// expiry; use [`FernetKey::encrypt`] otherwise).
    pub fn encrypt_at(&self, plaintext: &[u8], unix_secs: u64) -> Bytes {
        Bytes::from(self.inner.encrypt_at_time(plaintext, unix_secs))
    }

    /// Decrypts a token, refusing it when it is older than `ttl` (Python's
    /// `Fernet.decrypt(token, ttl=...)`).
    pub fn decrypt(&self, token: &[u8], ttl: Option<Duration>) -> Result<Bytes, FernetError> {
        self.decrypt_at(token, ttl.map(|t| t.as_secs()), unix_now())
    }

    /// [`FernetKey::decrypt`] at the time `now_unix`, with the TTL in
    /// seconds.
    ///
    /// The token is authenticated first, so an altered token is `Invalid`,
    /// never `Expired`; the age check saturates, so a token dated near the
    /// end of time cannot overflow it.
    pub fn decrypt_at(
        &self,
        token: &[u8],
        ttl_secs: Option<u64>,
        now_unix: u64,
    ) -> Result<Bytes, FernetError> {
        let text = std::str::from_utf8(token).map_err(|_| FernetError::Invalid)?;
        let plaintext = self
            .inner
            .decrypt_at_time(text, None, now_unix)
            .map_err(|_| FernetError::Invalid)?;
        if let Some(ttl_secs) = ttl_secs {
            let made = token_time(text).ok_or(FernetError::Invalid)?;
            if made.saturating_add(ttl_secs) < now_unix {
                return Err(FernetError::Expired {
                    age_secs: now_unix - made,
                    ttl_secs,
                });
            }
        }
        Ok(Bytes::from(plaintext))
    }
}

/// The creation time of a token: bytes 1..9 after base64, which the first
/// 12 characters hold.
fn token_time(token: &str) -> Option<u64> {
    use base64::Engine;
    let head = token.get(..12)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()?;
    let time: [u8; 8] = bytes.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(time))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token decrypts to what was encrypted, with the same key only.
    #[test]
    fn round_trip_and_wrong_key() {
        let key = FernetKey::new(&FernetKey::generate()).unwrap();
        let other = FernetKey::new(&FernetKey::generate()).unwrap();
        let token = key.encrypt(b"hello");
        assert!(token.starts_with(b"gAAAAA"), "version 0x80");
        assert_eq!(&key.decrypt(&token, None).unwrap()[..], b"hello");
        assert_eq!(other.decrypt(&token, None), Err(FernetError::Invalid));
    }

    /// A generated key is 44 characters of URL-safe base64, as Python's.
    #[test]
    fn generated_key_has_python_form() {
        let k = FernetKey::generate();
        assert_eq!(k.len(), 44);
        assert!(k.ends_with('='));
        assert!(k[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    /// The TTL refuses old tokens with `Expired`, and accepts one exactly
    /// at its limit (Python: `timestamp + ttl < now` fails).
    #[test]
    fn ttl_expiry() {
        let key = FernetKey::new(&FernetKey::generate()).unwrap();
        let token = key.encrypt_at(b"x", 1_000_000);
        assert!(key.decrypt_at(&token, Some(60), 1_000_060).is_ok());
        assert_eq!(
            key.decrypt_at(&token, Some(60), 1_000_061),
            Err(FernetError::Expired {
                age_secs: 61,
                ttl_secs: 60
            })
        );
        assert!(key.decrypt_at(&token, None, 9_000_000).is_ok());
    }

    /// A huge TTL saturates instead of overflowing (a panic in debug
    /// builds); a token from the far future is refused (clock skew).
    #[test]
    fn ttl_check_does_not_overflow() {
        let key = FernetKey::new(&FernetKey::generate()).unwrap();
        let token = key.encrypt_at(b"x", 1_000);
        assert!(key.decrypt_at(&token, Some(u64::MAX), 2_000).is_ok());
        let future = key.encrypt_at(b"x", u64::MAX - 5);
        assert_eq!(
            key.decrypt_at(&future, Some(u64::MAX), 1_000),
            Err(FernetError::Invalid)
        );
    }

    /// Keys that are not 32 bytes of base64 are refused with a reason;
    /// whitespace around a key is ignored.
    #[test]
    fn bad_keys_refused() {
        assert!(matches!(FernetKey::new("abc"), Err(FernetError::BadKey(_))));
        assert!(matches!(FernetKey::new(""), Err(FernetError::BadKey(_))));
        let k = FernetKey::generate();
        assert!(FernetKey::new(&format!("  {k}\n")).is_ok());
    }

    /// Payloads that are not UTF-8 (plain binary) are `Invalid`, not a
    /// panic.
    #[test]
    fn binary_payload_is_invalid() {
        let key = FernetKey::new(&FernetKey::generate()).unwrap();
        assert_eq!(
            key.decrypt(&[0xff, 0xfe, 0], None),
            Err(FernetError::Invalid)
        );
        assert_eq!(key.decrypt(b"", None), Err(FernetError::Invalid));
    }
}
