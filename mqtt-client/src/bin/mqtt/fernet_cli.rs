//! `mqtt keygen`, `--fernet-key-file` and `--fernet-ttl`: end-to-end
//! payload encryption in the tools, one helper per direction so the rest
//! of the tool does not change.
//!
//! `pub` encrypts every payload it sends (`-m`, `-f`, `-s`, `-l`); `-n`
//! stays empty, so it still clears a retained message. `sub` decrypts every
//! message before printing or writing it; one that does not decrypt is
//! reported on stderr with its topic and skipped (never printed as if it
//! were plaintext). An empty payload, which carries nothing to decrypt
//! (a cleared retained message), passes through empty.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use mqtt_client::payload_crypto::FernetKey;
use mqtt_client::{ClientError, Message};

/// The flags both tools take.
#[derive(Args, Clone, Default)]
pub struct FernetArgs {
    /// Encrypt (pub) or decrypt (sub) payloads as Fernet tokens with the key
    /// in FILE (as written by `mqtt keygen` or Python's
    /// `Fernet.generate_key()`).
    #[arg(long, value_name = "FILE")]
    pub fernet_key_file: Option<PathBuf>,
}

impl FernetArgs {
    /// The key, if one was given; a key file that cannot be used is an error
    /// before connecting.
    pub fn key(&self) -> Result<Option<FernetKey>, ClientError> {
        self.fernet_key_file
            .as_deref()
            .map(FernetKey::from_file)
            .transpose()
            .map_err(|e| ClientError::Invalid(e.to_string()))
    }
}

/// Prints a new key, as `Fernet.generate_key()` returns it.
pub fn keygen() -> u8 {
    println!("{}", FernetKey::generate());
    0
}

/// The payload to send: a token when there is a key.
pub fn seal(key: Option<&FernetKey>, payload: Bytes) -> Bytes {
    match key {
        Some(k) => k.encrypt(&payload),
        None => payload,
    }
}

/// The message to print: decrypted when there is a key, or `None` (after
/// saying why on stderr) when it does not decrypt.
pub fn open(key: Option<&FernetKey>, ttl_secs: Option<u64>, msg: Message) -> Option<Message> {
    let Some(k) = key else { return Some(msg) };
    if msg.payload.is_empty() {
        return Some(msg);
    }
    match k.decrypt(&msg.payload, ttl_secs.map(Duration::from_secs)) {
        Ok(plain) => Some(Message {
            payload: plain,
            ..msg
        }),
        Err(e) => {
            eprintln!("Error: message on topic {} not shown: {e}", msg.topic);
            None
        }
    }
}
