//! `mqtt keygen`, `mqtt pub --fernet-key-file` and `mqtt sub
//! --fernet-key-file [--fernet-ttl]` (issue 14), as built, against our
//! broker in-process: what crosses the broker is a Fernet token, what the
//! subscriber prints is the plaintext, and what does not decrypt is
//! reported with its topic and never printed.

#![cfg(feature = "fernet")]

mod common;

use std::path::PathBuf;
use std::process::{Output, Stdio};

use common::*;
use mqtt_broker::BrokerHandle;
use mqtt_client::payload_crypto::FernetKey;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

fn mqtt(port: u16, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mqtt"));
    c.args(&args[..1])
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn run(port: u16, args: &[&str]) -> Output {
    within(&format!("mqtt {args:?}"), mqtt(port, args).output())
        .await
        .unwrap()
}

async fn finish(child: Child) -> Output {
    within("mqtt sub to exit", child.wait_with_output())
        .await
        .unwrap()
}

/// Starts `mqtt sub` and waits until the broker holds its subscription.
async fn sub(broker: &BrokerHandle, args: &[&str]) -> Child {
    let before = broker.subscription_count();
    let child = mqtt(broker.local_addr().port(), args).spawn().unwrap();
    until("mqtt sub subscribed", || {
        broker.subscription_count() > before
    })
    .await;
    child
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status,
        text(&o.stderr)
    );
}

/// A key file with a fresh key; removed when dropped.
struct KeyFile {
    path: PathBuf,
    key: FernetKey,
}

impl KeyFile {
    fn new(tag: &str) -> KeyFile {
        let text = FernetKey::generate();
        let path =
            std::env::temp_dir().join(format!("mqtt-fernet-{tag}-{}.key", std::process::id()));
        std::fs::write(&path, format!("{text}\n")).unwrap();
        KeyFile {
            key: FernetKey::new(&text).unwrap(),
            path,
        }
    }
    fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `mqtt keygen` prints one key in `Fernet.generate_key()`'s form, and a
/// new one each time.
#[tokio::test]
async fn keygen_prints_a_new_usable_key() {
    let a = within(
        "keygen",
        Command::new(env!("CARGO_BIN_EXE_mqtt"))
            .arg("keygen")
            .output(),
    )
    .await
    .unwrap();
    let b = within(
        "keygen",
        Command::new(env!("CARGO_BIN_EXE_mqtt"))
            .arg("keygen")
            .output(),
    )
    .await
    .unwrap();
    ok(&a);
    let key = text(&a.stdout);
    assert_eq!(key.len(), 45, "44 characters and a newline: {key:?}");
    assert!(FernetKey::new(&key).is_ok());
    assert_ne!(a.stdout, b.stdout);
}

/// With a key, every payload form of `pub` (-m, -f, -s, -l) crosses the
/// broker as a token only (a subscriber without the key sees no
/// plaintext), and `sub` with the key prints the plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_encrypts_every_payload_form_and_sub_decrypts() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let key = KeyFile::new("forms");
    let file = std::env::temp_dir().join(format!("mqtt-fernet-{}.bin", std::process::id()));
    std::fs::write(&file, b"from a file").unwrap();
    let raw = sub(&broker, &["sub", "-t", "secret", "-C", "5", "-q", "1"]).await;
    let plain = sub(
        &broker,
        &[
            "sub",
            "-t",
            "secret",
            "-C",
            "5",
            "-q",
            "1",
            "--fernet-key-file",
            key.arg(),
        ],
    )
    .await;
    let k = key.arg();
    ok(&run(
        port,
        &[
            "pub",
            "-t",
            "secret",
            "-q",
            "1",
            "-m",
            "room 22.5",
            "--fernet-key-file",
            k,
        ],
    )
    .await);
    ok(&run(
        port,
        &[
            "pub",
            "-t",
            "secret",
            "-q",
            "1",
            "-f",
            file.to_str().unwrap(),
            "--fernet-key-file",
            k,
        ],
    )
    .await);
    for (flag, input) in [
        ("-s", &b"all of stdin"[..]),
        ("-l", &b"line one\nline two\n"[..]),
    ] {
        let mut p = mqtt(
            port,
            &[
                "pub",
                "-t",
                "secret",
                "-q",
                "1",
                flag,
                "--fernet-key-file",
                k,
            ],
        )
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
        let mut stdin = p.stdin.take().unwrap();
        stdin.write_all(input).await.unwrap();
        drop(stdin);
        ok(&within("mqtt pub", p.wait_with_output()).await.unwrap());
    }
    std::fs::remove_file(&file).unwrap();
    let out = finish(plain).await;
    ok(&out);
    assert_eq!(
        text(&out.stdout),
        "room 22.5\nfrom a file\nall of stdin\nline one\nline two\n"
    );
    let out = finish(raw).await;
    ok(&out);
    let tokens = text(&out.stdout);
    let tokens: Vec<&str> = tokens.lines().collect();
    assert_eq!(tokens.len(), 5);
    for t in &tokens {
        assert!(t.starts_with("gAAAAA"), "not a token: {t}");
        assert!(!t.contains("room") && !t.contains("line"));
        key.key
            .decrypt(t.as_bytes(), None)
            .expect("a token for this key");
    }
    broker.shutdown().await;
}

/// A message that does not decrypt (plaintext, another key) is reported on
/// stderr with its topic and not printed; the subscriber goes on to the
/// next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecryptable_messages_are_reported_with_their_topic_and_skipped() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let key = KeyFile::new("mine");
    let other = KeyFile::new("other");
    let child = sub(
        &broker,
        &[
            "sub",
            "-t",
            "lab/#",
            "-C",
            "1",
            "-q",
            "1",
            "--fernet-key-file",
            key.arg(),
        ],
    )
    .await;
    ok(&run(
        port,
        &["pub", "-t", "lab/plain", "-q", "1", "-m", "PLAIN-A"],
    )
    .await);
    ok(&run(
        port,
        &[
            "pub",
            "-t",
            "lab/other",
            "-q",
            "1",
            "-m",
            "PLAIN-B",
            "--fernet-key-file",
            other.arg(),
        ],
    )
    .await);
    ok(&run(
        port,
        &[
            "pub",
            "-t",
            "lab/good",
            "-q",
            "1",
            "-m",
            "good",
            "--fernet-key-file",
            key.arg(),
        ],
    )
    .await);
    let out = finish(child).await;
    ok(&out);
    assert_eq!(text(&out.stdout), "good\n");
    let err = text(&out.stderr);
    assert!(err.contains("topic lab/plain"), "{err}");
    assert!(err.contains("topic lab/other"), "{err}");
    assert!(
        !err.contains("PLAIN-A") && !err.contains("PLAIN-B"),
        "{err}"
    );
    broker.shutdown().await;
}

/// `--fernet-ttl SECS` refuses a token made longer ago than SECS, saying it
/// expired, and still prints a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fernet_ttl_refuses_old_tokens() {
    let broker = broker().await;
    let port = broker.local_addr().port();
    let key = KeyFile::new("ttl");
    let child = sub(
        &broker,
        &[
            "sub",
            "-t",
            "ttl",
            "-C",
            "1",
            "-q",
            "1",
            "--fernet-key-file",
            key.arg(),
            "--fernet-ttl",
            "60",
        ],
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let old = key.key.encrypt_at(b"stale", now - 3600);
    ok(&run(
        port,
        &[
            "pub",
            "-t",
            "ttl",
            "-q",
            "1",
            "-m",
            std::str::from_utf8(&old).unwrap(),
        ],
    )
    .await);
    ok(&run(
        port,
        &[
            "pub",
            "-t",
            "ttl",
            "-q",
            "1",
            "-m",
            "fresh",
            "--fernet-key-file",
            key.arg(),
        ],
    )
    .await);
    let out = finish(child).await;
    ok(&out);
    assert_eq!(text(&out.stdout), "fresh\n");
    assert!(
        text(&out.stderr).contains("expired"),
        "{}",
        text(&out.stderr)
    );
    broker.shutdown().await;
}

/// A key file that is missing or holds no key is an error before any
/// connection, naming the file.
#[tokio::test]
async fn unusable_key_file_is_an_error() {
    let missing = std::env::temp_dir().join("mqtt-fernet-no-such.key");
    let out = run(
        1,
        &[
            "pub",
            "-t",
            "x",
            "-m",
            "y",
            "--fernet-key-file",
            missing.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("mqtt-fernet-no-such.key"),
        "{}",
        text(&out.stderr)
    );
    let bad = std::env::temp_dir().join(format!("mqtt-fernet-bad-{}.key", std::process::id()));
    std::fs::write(&bad, "password123\n").unwrap();
    let out = run(
        1,
        &["sub", "-t", "x", "--fernet-key-file", bad.to_str().unwrap()],
    )
    .await;
    std::fs::remove_file(&bad).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a Fernet key"),
        "{}",
        text(&out.stderr)
    );
}
