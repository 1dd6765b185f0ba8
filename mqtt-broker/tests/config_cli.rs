//! The binary and its configuration: a bad configuration (unknown key, bad
//! value, missing file, port in use) is one error line and exit status 1
//! without starting half a broker; `--check` prints the effective settings;
//! `-c mosquitto.conf` runs the broker with Mosquitto's own format.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-broker");

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("mqtt-cfgcli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the broker to completion (it must exit on its own: a bad config),
/// killing it after 30 s so a broker that started anyway fails the test.
fn run(args: &[&str], cwd: &Path) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mqtt-broker");
    for _ in 0..300 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!(
        "mqtt-broker {args:?} did not exit: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Checks exit status 1 and exactly one line on standard error; returns it.
fn fails_with_one_line(args: &[&str], cwd: &Path) -> String {
    let out = run(args, cwd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status of {args:?}; stderr: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one error line: {stderr:?}");
    assert!(stderr.starts_with("mqtt-broker: "), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("listening"), "nothing started: {stdout}");
    stderr.trim_end().to_string()
}

#[test]
fn an_unknown_key_is_one_line_and_exit_1() {
    let dir = Scratch::new("unknown");
    let f = dir.write("b.toml", "max_qos = 1\nmax_inflihgt = 3\n");
    let e = fails_with_one_line(&["-c", f.to_str().unwrap()], &dir.0);
    assert!(
        e.ends_with("b.toml:2: unknown key `max_inflihgt`: did you mean `max_inflight`?"),
        "{e}"
    );

    let f = dir.write("m.conf", "listener 1883\nallow_anonymus true\n");
    let e = fails_with_one_line(&["-c", f.to_str().unwrap()], &dir.0);
    assert!(
        e.contains("m.conf:2: allow_anonymus: unknown setting"),
        "{e}"
    );
}

#[test]
fn a_bad_value_is_one_line_and_exit_1() {
    let dir = Scratch::new("badvalue");
    let f = dir.write("b.toml", "durability = \"sometimes\"\n");
    let e = fails_with_one_line(&["-c", f.to_str().unwrap()], &dir.0);
    assert!(e.contains("b.toml:1: unknown variant `sometimes`"), "{e}");
    let f = dir.write("m.conf", "max_qos 3\n");
    let e = fails_with_one_line(&["-c", f.to_str().unwrap()], &dir.0);
    assert!(e.ends_with("m.conf:1: max_qos: must be 0, 1 or 2"), "{e}");
}

#[test]
fn a_missing_file_is_one_line_and_exit_1() {
    let dir = Scratch::new("missing");
    let e = fails_with_one_line(&["-c", "no-such.conf"], &dir.0);
    assert!(
        e.starts_with("mqtt-broker: cannot read no-such.conf: "),
        "{e}"
    );
    // A file the configuration names, too (checked before anything starts).
    let f = dir.write(
        "b.toml",
        "password_file = \"nope\"\ndurability = \"none\"\n[[listeners]]\nbind = \"127.0.0.1:0\"\n",
    );
    let e = fails_with_one_line(&["-c", f.to_str().unwrap()], &dir.0);
    assert!(e.contains("password file nope"), "{e}");
}

/// A port in use: one line, exit 1, and the store was never opened (its
/// directory does not exist).
#[test]
fn a_port_in_use_is_one_line_and_exit_1_before_the_store_opens() {
    let dir = Scratch::new("inuse");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let f = dir.write(
        "b.toml",
        &format!("data_dir = \"data\"\n[[listeners]]\nbind = \"127.0.0.1:{port}\"\n"),
    );
    let e = fails_with_one_line(&["-c", f.to_str().unwrap()], &dir.0);
    assert!(
        e.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{e}"
    );
    assert!(!dir.0.join("data").exists(), "the store was opened");
}

/// `--check` validates and prints the effective settings as TOML (which
/// read back as a configuration), warnings on standard error.
#[test]
fn check_prints_the_effective_settings() {
    let dir = Scratch::new("check");
    let f = dir.write(
        "m.conf",
        "log_dest syslog\nlistener 1883 127.0.0.1\nmax_inflight_messages 20\n",
    );
    let out = run(&["--check", "-c", f.to_str().unwrap()], &dir.0);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let c = mqtt_broker::Config::from_toml(&stdout).expect("the output is a TOML configuration");
    assert_eq!(c.max_inflight, 20);
    assert_eq!(
        c.listeners[0].bind,
        "127.0.0.1:1883".parse::<SocketAddr>().unwrap()
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("m.conf:1: log_dest: ignored"));

    let f = dir.write("bad.conf", "listener 1883\nmax_qos 9\n");
    fails_with_one_line(&["--check", "-c", f.to_str().unwrap()], &dir.0);
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The broker process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the broker and waits (30 s at most) until it has logged `n`
/// "listening" lines.
fn start(config: &Path, cwd: &Path, n: usize) -> Running {
    let mut child = Command::new(BIN)
        .arg("-c")
        .arg(config)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mqtt-broker");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("listening") {
                let _ = tx.send(());
            }
        }
    });
    let running = Running(child);
    for _ in 0..n {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the broker listens");
    }
    running
}

/// CONNECT (MQTT 3.1.1, no user name) and the CONNACK return code.
fn connack_code(port: u16) -> u8 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'a',
    ])
    .unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(&ack[..3], &[0x20, 2, 0]);
    ack[3]
}

/// `-c mosquitto.conf` runs the broker: per_listener_settings gives one
/// listener anonymous access and not the other (Mosquitto 2 default for a
/// listener: refused, return code 5). [MQTT-3.2.2-3]
#[test]
fn a_mosquitto_conf_runs_the_broker_with_its_listeners() {
    let dir = Scratch::new("run");
    let (open, closed) = (free_port(), free_port());
    let f = dir.write(
        "mosquitto.conf",
        &format!(
            "# as Mosquitto reads it\nper_listener_settings true\nlistener {open} 127.0.0.1\nallow_anonymous true\n\nlistener {closed} 127.0.0.1\nlog_type all\n"
        ),
    );
    let _broker = start(&f, &dir.0, 2);
    assert_eq!(connack_code(open), 0, "anonymous allowed");
    assert_eq!(
        connack_code(closed),
        5,
        "anonymous refused (not authorized)"
    );
}

/// pid_file (Mosquitto's too): written with the process id before the
/// broker listens; one that cannot be written stops the start.
#[test]
fn pid_file_is_written_before_listening_or_stops_the_start() {
    let dir = Scratch::new("pid");
    let port = free_port();
    let pid = dir.0.join("broker.pid");
    let f = dir.write(
        "m.conf",
        &format!("pid_file {}\nlistener {port} 127.0.0.1\n", pid.display()),
    );
    let broker = start(&f, &dir.0, 1);
    let written = std::fs::read_to_string(&pid).expect("pid file written");
    assert_eq!(written.trim(), broker.0.id().to_string());
    drop(broker);

    let f = dir.write(
        "bad.conf",
        "pid_file /nonexistent-dir/mqtt.pid\nlistener 1883 127.0.0.1\n",
    );
    let e = fails_with_one_line(&["-c", f.to_str().unwrap()], &dir.0);
    assert!(
        e.starts_with("mqtt-broker: pid_file /nonexistent-dir/mqtt.pid: "),
        "{e}"
    );
}
