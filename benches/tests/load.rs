//! The load generator against the forwarder, both as built binaries: short
//! runs of each delivery pattern must deliver everything exactly once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Forwarder {
    child: Child,
    port: u16,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forwarder() -> Forwarder {
    let mut child = Command::new(env!("CARGO_BIN_EXE_forwarder"))
        .args(["-p", "0", "--threads", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the forwarder");
    let mut line = String::new();
    BufReader::new(child.stderr.take().expect("stderr"))
        .read_line(&mut line)
        .expect("read its first line");
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Forwarder { child, port }
}

/// The number after `"name":` in a one-line JSON object.
fn field(json: &str, name: &str) -> f64 {
    let key = format!("\"{name}\":");
    let at = json
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {json}"))
        + key.len();
    let rest = &json[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{name} in {json}"))
}

fn bench(port: u16, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mqtt-bench"))
        .args(args)
        .args(["--port", &port.to_string()])
        .args(["--duration", "0.3", "--drain", "5", "--json", "--quiet"])
        .args(["--threads", "1"])
        .output()
        .expect("run mqtt-bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn every_pattern_delivers_everything_once() {
    let f = forwarder();
    for args in [
        &["pairs", "--clients", "2", "--qos", "0"][..],
        &["pairs", "--clients", "2", "--qos", "1", "--window", "8"],
        &["pairs", "--clients", "2", "--qos", "2", "--window", "8"],
        &["fan-in", "--clients", "3", "--qos", "1"],
        &["fan-out", "--clients", "3", "--qos", "0"],
        &[
            "pairs",
            "--clients",
            "2",
            "--rate",
            "2000",
            "--payload",
            "10",
        ],
    ] {
        let json = bench(f.port, args);
        assert!(field(&json, "sent") > 0.0, "{args:?}: {json}");
        assert_eq!(
            field(&json, "expected"),
            field(&json, "delivered"),
            "{json}"
        );
        assert_eq!(field(&json, "lost"), 0.0, "{args:?}: {json}");
        assert_eq!(field(&json, "duplicates"), 0.0, "{args:?}: {json}");
        assert_eq!(field(&json, "errors"), 0.0, "{args:?}: {json}");
        assert!(field(&json, "p50_ms") >= 0.0, "{json}");
        if args.contains(&"--qos") && !args.contains(&"0") {
            assert_eq!(field(&json, "unacked"), 0.0, "{args:?}: {json}");
            assert_eq!(field(&json, "acked"), field(&json, "sent"), "{json}");
        }
        if args.contains(&"--rate") {
            // 2 publishers at 2,000 msg/s for 0.3 s.
            let sent = field(&json, "sent");
            assert!((1000.0..=1400.0).contains(&sent), "{json}");
        }
    }
}

#[test]
fn idle_connections_are_counted() {
    let f = forwarder();
    let json = bench(f.port, &["idle", "--clients", "50"]);
    assert_eq!(field(&json, "connected"), 50.0, "{json}");
    assert_eq!(field(&json, "alive_at_end"), 50.0, "{json}");
}

// `--sub-port` puts the subscribers on another broker (bridged runs): here a
// second forwarder, which never sees a publish, so nothing can arrive.
#[test]
fn subscribers_go_to_the_sub_port() {
    let publishers = forwarder();
    let subscribers = forwarder();
    let port = subscribers.port.to_string();
    let json = bench(
        publishers.port,
        &[
            "pairs",
            "--clients",
            "1",
            "--qos",
            "0",
            "--sub-port",
            &port,
            "--drain-idle",
            "0.2",
        ],
    );
    assert!(field(&json, "sent") > 0.0, "{json}");
    assert_eq!(field(&json, "delivered"), 0.0, "{json}");
}
