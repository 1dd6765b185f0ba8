//! User names and passwords, from a password file in Mosquitto's format so
//! existing files keep working:
//!
//! - `user:$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512 (mosquitto_passwd 2.x);
//! - `user:$6$SALT$HASH`: SHA-512 of password and salt (mosquitto_passwd 1.x);
//! - `user:$argon2id$v=19$m=...,t=...,p=...$SALT$HASH`: Argon2id in the PHC
//!   string format, which `mqtt-broker passwd` writes for new entries.
//!
//! Salts and hashes of the `$6$` / `$7$` forms are standard base64. Every
//! comparison runs in constant time, and an unknown user costs as much as a
//! wrong password, so timing tells nothing about which users exist.

use std::collections::HashMap;
use std::path::Path;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// One stored credential.
#[derive(Debug, Clone)]
enum Hash {
    Pbkdf2Sha512 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Sha512 {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Argon2(String),
}

/// The users of a password file.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, Hash>,
}

impl PasswordFile {
    /// Reads a password file. Lines that cannot be used are reported with
    /// their number and skipped, so one bad line does not lock everyone out.
    pub fn load(path: &Path) -> std::io::Result<PasswordFile> {
        let text = std::fs::read_to_string(path)?;
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                tracing::warn!(file = %path.display(), line = n + 1, "password file line without ':' ignored");
                continue;
            };
            match parse_hash(hash) {
                Some(h) => {
                    users.insert(user.to_string(), h);
                }
                None => {
                    tracing::warn!(file = %path.display(), line = n + 1, user, "unrecognised password hash ignored")
                }
            }
        }
        Ok(PasswordFile { users })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `user` exists and `password` is theirs.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(h) => verify_hash(h, password),
            None => {
                // Same work as a real check, so that missing users do not
                // answer faster.
                let dummy = Hash::Pbkdf2Sha512 {
                    iterations: 101,
                    salt: vec![0; 12],
                    hash: vec![0; 64],
                };
                let _ = verify_hash(&dummy, password);
                false
            }
        }
    }
}

fn parse_hash(s: &str) -> Option<Hash> {
    if s.starts_with("$argon2") {
        PasswordHash::new(s).ok()?;
        return Some(Hash::Argon2(s.to_string()));
    }
    let mut parts = s.split('$');
    if !parts.next()?.is_empty() {
        return None;
    }
    match parts.next()? {
        "7" => {
            let iterations = parts.next()?.parse().ok()?;
            let salt = B64.decode(parts.next()?).ok()?;
            let hash = B64.decode(parts.next()?).ok()?;
            Some(Hash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            })
        }
        "6" => {
            let salt = B64.decode(parts.next()?).ok()?;
            let hash = B64.decode(parts.next()?).ok()?;
            Some(Hash::Sha512 { salt, hash })
        }
        _ => None,
    }
}

fn verify_hash(h: &Hash, password: &[u8]) -> bool {
    match h {
        Hash::Pbkdf2Sha512 {
            iterations,
            salt,
            hash,
        } => {
            let mut out = vec![0u8; hash.len()];
            pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
            out.ct_eq(hash).into()
        }
        Hash::Sha512 { salt, hash } => {
            let mut d = Sha512::new();
            d.update(password);
            d.update(salt);
            d.finalize().as_slice().ct_eq(hash).into()
        }
        Hash::Argon2(phc) => match PasswordHash::new(phc) {
            // argon2's verifier compares in constant time.
            Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
            Err(_) => false,
        },
    }
}

/// A new Argon2id entry for `password` in the PHC string format.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Writes `user` with `password` into the password file at `path`, replacing
/// an existing entry and keeping every other line. With `create`, starts a
/// new file. The file is replaced atomically.
pub fn set_password(path: &Path, user: &str, password: &[u8], create: bool) -> Result<(), String> {
    if user.is_empty() || user.contains(':') {
        return Err("a user name must not be empty or contain ':'".into());
    }
    let existing = if create {
        String::new()
    } else {
        match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    };
    let entry = format!("{user}:{}", hash_password(password)?);
    let mut lines: Vec<String> = Vec::new();
    let mut replaced = false;
    for line in existing.lines() {
        if line.split_once(':').is_some_and(|(u, _)| u == user) {
            lines.push(entry.clone());
            replaced = true;
        } else {
            lines.push(line.to_string());
        }
    }
    if !replaced {
        lines.push(entry);
    }
    write_atomically(path, &(lines.join("\n") + "\n"))
}

/// Removes `user` from the password file.
pub fn delete_user(path: &Path, user: &str) -> Result<(), String> {
    let existing = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let kept: Vec<&str> = existing
        .lines()
        .filter(|l| l.split_once(':').is_none_or(|(u, _)| u != user))
        .collect();
    if kept.len() == existing.lines().count() {
        return Err(format!("user {user} not found"));
    }
    write_atomically(path, &(kept.join("\n") + "\n"))
}

fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_entry_in_mosquitto_format_verifies() {
        // PBKDF2-HMAC-SHA512, 101 iterations, as mosquitto_passwd writes.
        let salt = b"0123456789ab";
        let mut hash = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<Sha512>(b"secret", salt, 101, &mut hash);
        let line = format!("$7$101${}${}", B64.encode(salt), B64.encode(hash));
        let h = parse_hash(&line).expect("parses");
        assert!(verify_hash(&h, b"secret"));
        assert!(!verify_hash(&h, b"Secret"));
    }

    #[test]
    fn sha512_entry_verifies() {
        let salt = b"saltsalt";
        let mut d = Sha512::new();
        d.update(b"pw");
        d.update(salt);
        let line = format!("$6${}${}", B64.encode(salt), B64.encode(d.finalize()));
        let h = parse_hash(&line).expect("parses");
        assert!(verify_hash(&h, b"pw"));
        assert!(!verify_hash(&h, b"px"));
    }

    #[test]
    fn argon2_entries_round_trip() {
        let phc = hash_password(b"hunter2").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        let h = parse_hash(&phc).unwrap();
        assert!(verify_hash(&h, b"hunter2"));
        assert!(!verify_hash(&h, b"hunter3"));
    }

    #[test]
    fn unknown_users_and_garbage_lines_are_refused() {
        let dir = std::env::temp_dir().join(format!("pwfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pw");
        set_password(&path, "alice", b"a", true).unwrap();
        set_password(&path, "bob", b"b", false).unwrap();
        set_password(&path, "alice", b"a2", false).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("broken line\ncarol:$9$nope\n");
        std::fs::write(&path, text).unwrap();
        let f = PasswordFile::load(&path).unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.verify("alice", b"a2"));
        assert!(!f.verify("alice", b"a"));
        assert!(f.verify("bob", b"b"));
        assert!(!f.verify("carol", b""));
        assert!(!f.verify("dave", b"b"));
        delete_user(&path, "bob").unwrap();
        assert!(!PasswordFile::load(&path).unwrap().verify("bob", b"b"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
