//! `mqtt-broker passwd [-c] [-b] [-D] FILE USER [PASSWORD]`, run as the
//! built binary: it writes Argon2id entries, adds, replaces and deletes
//! users, refuses bad invocations, and the broker binary started on the file
//! lets exactly those users in.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;
use mqtt_codec::ProtocolVersion;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-broker");

/// Runs `mqtt-broker passwd ARGS` with `stdin` as its input.
fn passwd(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mqtt-broker passwd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `mqtt-broker passwd ARGS` and checks it succeeds.
fn passwd_ok(args: &[&str]) {
    let out = passwd(args, "");
    assert!(
        out.status.success(),
        "passwd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `mqtt-broker passwd ARGS`, checks it fails, and returns its stderr.
fn passwd_fails(args: &[&str]) -> String {
    let out = passwd(args, "");
    assert!(!out.status.success(), "passwd {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `(user, hash)` pairs of a password file, in order.
fn entries(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (u, h) = l.split_once(':').expect("user:hash");
            (u.to_string(), h.to_string())
        })
        .collect()
}

fn users(path: &Path) -> Vec<String> {
    entries(path).into_iter().map(|(u, _)| u).collect()
}

fn hash_of(path: &Path, user: &str) -> String {
    entries(path)
        .into_iter()
        .find(|(u, _)| u == user)
        .unwrap_or_else(|| panic!("{user} not in the file"))
        .1
}

/// The broker binary, killed when dropped.
struct BrokerProcess {
    child: Child,
    addr: SocketAddr,
}

impl BrokerProcess {
    /// Starts `mqtt-broker -c CONFIG` and waits for its "listening" line to
    /// learn the port it was given.
    fn start(config: &Path) -> BrokerProcess {
        let mut child = Command::new(BIN)
            .arg("-c")
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mqtt-broker");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr);
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => BrokerProcess { child, addr },
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the broker did not report its address: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a log line such as `... INFO listening addr=127.0.0.1:4242
/// anonymous=false`, colours or not.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    // Strip ANSI escape sequences (`ESC [ ... letter`).
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    if !plain.contains("listening") {
        return None;
    }
    let rest = &plain[plain.find("addr=")? + 5..];
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn passwd_writes_argon2id_entries_and_adds_replaces_and_deletes_users() {
    let dir = ScratchDir::new("passwd-cli");
    let file = dir.file("passwd");
    let f = file.to_str().unwrap();

    passwd_ok(&["-c", "-b", f, "alice", "pw1"]);
    assert_eq!(users(&file), ["alice"]);
    let alice1 = hash_of(&file, "alice");
    assert!(alice1.starts_with("$argon2id$v=19$"), "{alice1}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the file holds hashes: owner only");
    }

    // A second user is added; the first is kept as it was.
    passwd_ok(&["-b", f, "bob", "pw2"]);
    assert_eq!(users(&file), ["alice", "bob"]);
    assert_eq!(hash_of(&file, "alice"), alice1);
    assert!(hash_of(&file, "bob").starts_with("$argon2id$"));

    // The same password twice gives different entries (random salt).
    passwd_ok(&["-b", f, "alice", "pw1"]);
    assert_ne!(hash_of(&file, "alice"), alice1);
    // A new password replaces the entry in place.
    passwd_ok(&["-b", f, "alice", "pw3"]);
    assert_eq!(users(&file), ["alice", "bob"]);

    // Without -b the password is read from standard input when it is not a
    // terminal.
    let out = passwd(&[f, "carol"], "pw4\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(users(&file), ["alice", "bob", "carol"]);

    // -D deletes; deleting a user who is not there fails.
    passwd_ok(&["-D", f, "bob"]);
    assert_eq!(users(&file), ["alice", "carol"]);
    let err = passwd_fails(&["-D", f, "bob"]);
    assert!(err.contains("not found"), "{err}");
    assert_eq!(users(&file), ["alice", "carol"]);

    // Bad invocations change nothing.
    let before = std::fs::read_to_string(&file).unwrap();
    passwd_fails(&["-b", f, "dave"]);
    passwd_fails(&[f, "dave", "pw-without-b"]);
    passwd_fails(&["-b", f, "da:ve", "pw"]);
    passwd_fails(&["-b", f, "", "pw"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);

    // -c starts the file afresh.
    let other = dir.file("other");
    let o = other.to_str().unwrap();
    passwd_ok(&["-c", "-b", o, "zed", "pw"]);
    passwd_ok(&["-c", "-b", o, "yan", "pw"]);
    assert_eq!(users(&other), ["yan"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_binary_accepts_the_users_passwd_wrote() {
    let dir = ScratchDir::new("passwd-broker");
    let file = dir.file("passwd");
    let f = file.to_str().unwrap();
    passwd_ok(&["-c", "-b", f, "alice", "old"]);
    passwd_ok(&["-b", f, "bob", "bob-pw"]);
    passwd_ok(&["-b", f, "alice", "new"]);
    passwd_ok(&["-b", f, "carol", "carol-pw"]);
    passwd_ok(&["-D", f, "carol"]);

    let config = dir.file("broker.toml");
    std::fs::write(
        &config,
        format!(
            "password_file = {:?}\nsys_interval_secs = 0\n\n[[listeners]]\nbind = \"127.0.0.1:0\"\nallow_anonymous = false\n",
            f
        ),
    )
    .unwrap();
    let broker = BrokerProcess::start(&config);
    let addr = broker.addr;
    for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        for (user, pw) in [("alice", "new"), ("bob", "bob-pw")] {
            let mut c = RawClient::connect_with(
                addr,
                login_packet(v, user, Some(user), Some(pw.as_bytes())),
            )
            .await;
            c.expect_nothing_pending().await;
            c.disconnect_and_wait().await;
        }
        // The replaced password, a deleted user.
        for (user, pw) in [("alice", "old"), ("carol", "carol-pw")] {
            let got = RawClient::connect_refused(
                addr,
                login_packet(v, "x", Some(user), Some(pw.as_bytes())),
            )
            .await;
            assert_refusal(&got, v, 0x04, 0x86);
        }
        // No user name on a listener that wants one.
        let got = RawClient::connect_refused(addr, login_packet(v, "x", None, None)).await;
        assert_refusal(&got, v, 0x05, 0x87);
    }
    drop(broker);
}
