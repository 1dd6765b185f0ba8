//! What the broker's log looks like to a log shipper or a journal:
//! `log_format = "json"` is one JSON object per line; the human format has
//! no colour codes when the output is not a terminal; the connect line
//! names the user.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-broker");

/// The broker with its stdout lines on a channel; killed when dropped.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Running {
    fn start(name: &str, extra: &str, port: u16) -> Running {
        let dir = std::env::temp_dir().join(format!("mqtt-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("b.toml");
        std::fs::write(
            &cfg,
            format!("durability = \"none\"\nsys_interval_secs = 0\n{extra}\n[[listeners]]\nbind = \"127.0.0.1:{port}\"\nallow_anonymous = true\n"),
        )
        .unwrap();
        let mut child = Command::new(BIN)
            .arg("-c")
            .arg(&cfg)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mqtt-broker");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines, dir }
    }

    /// The next line containing `text` (30 s at most).
    fn line_with(&self, text: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no log line with {text:?}"));
            if line.contains(text) {
                return line;
            }
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// CONNECT 3.1.1 with a user name (the broker has no password file, so the
/// name is taken as given) and wait for CONNACK.
fn connect_as(port: u16, user: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x82, 0, 60, 0, 1, b'c'];
    body.extend_from_slice(&(user.len() as u16).to_be_bytes());
    body.extend_from_slice(user.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    s.write_all(&packet).unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0]);
    s
}

/// log_format = "json": every line is a JSON object with a level and a
/// message; the connect line carries the user as a field.
#[test]
fn json_logs_are_one_object_per_line_and_name_the_user() {
    let port = free_port();
    let broker = Running::start("json", "log_format = \"json\"", port);
    let first = broker.line_with("listening");
    let v: serde_json::Value = serde_json::from_str(&first).expect("a JSON line");
    assert_eq!(v["level"], "INFO", "{first}");
    let _c = connect_as(port, "alice");
    let line = broker.line_with("client connected");
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["user"], "alice", "{line}");
    assert_eq!(v["message"], "client connected", "{line}");
}

/// Human lines on a pipe (a journal, a file) have no ANSI escape codes; the
/// connect line says user=NAME.
#[test]
fn human_logs_have_no_colour_on_a_pipe_and_name_the_user() {
    let port = free_port();
    let broker = Running::start("human", "", port);
    let first = broker.line_with("listening");
    assert!(
        !first.contains('\u{1b}'),
        "colour codes on a pipe: {first:?}"
    );
    let _c = connect_as(port, "bob");
    let line = broker.line_with("client connected");
    assert!(line.contains("user=bob"), "{line}");
    assert!(!line.contains('\u{1b}'), "{line:?}");
}
