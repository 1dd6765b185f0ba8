//! The configuration file: the reference (`mqtt-broker.example.toml`) is
//! complete and true, a bad TOML file gets one error line that names the
//! place and the fix, and listeners named in a file follow Mosquitto 2 on
//! anonymous clients (refused unless the listener says
//! `allow_anonymous = true`, whatever its address; only the built-in
//! local-only listener lets them in by default), checked over real sockets
//! on the library and on the binary.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use mqtt_broker::bridge::config::BridgeTls;
use mqtt_broker::bridge::BridgeConfig;
use mqtt_broker::config::{field_names, TlsListenerConfig};
use mqtt_broker::{ClusterConfig, Config, ListenerConfig, MetricsConfig};
use mqtt_codec::ProtocolVersion;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-broker");
const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V3_1_1, ProtocolVersion::V5];
const EXAMPLE: &str = include_str!("../mqtt-broker.example.toml");

#[test]
fn example_config_parses_to_the_defaults() {
    let parsed = Config::from_toml(EXAMPLE).expect("example config parses");
    let defaults = Config::default();
    assert_eq!(format!("{parsed:?}"), format!("{defaults:?}"));
}

/// Whether the example documents `key`: as a setting (`key = ...`, maybe
/// commented out) or, for a table, as its header.
fn documented(key: &str, headers: &[&str]) -> bool {
    EXAMPLE.lines().any(|line| {
        let line = line.trim_start_matches(['#', ' ']);
        let setting = line
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        setting || headers.iter().any(|h| line.starts_with(h))
    })
}

/// Every key the broker reads, at every level, is in the example file
/// (so a new key without documentation fails here).
#[test]
fn every_config_key_is_in_the_example_file() {
    let tables: [(&[&str], &[&str]); 7] = [
        (field_names::<Config>(), &[]),
        (field_names::<ListenerConfig>(), &[]),
        (field_names::<TlsListenerConfig>(), &[]),
        (field_names::<MetricsConfig>(), &[]),
        (field_names::<BridgeConfig>(), &[]),
        (field_names::<BridgeTls>(), &[]),
        (field_names::<ClusterConfig>(), &[]),
    ];
    assert!(field_names::<Config>().len() > 20, "field names found");
    let mut missing = Vec::new();
    for (fields, _) in tables {
        for key in fields {
            let headers: &[&str] = match *key {
                "listeners" => &["[[listeners]]"],
                "tls" => &["[listeners.tls]"],
                "metrics" => &["[metrics]"],
                "bridges" => &["[[bridges]]"],
                "cluster" => &["[cluster]"],
                _ => &[],
            };
            if !documented(key, headers) {
                missing.push(*key);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in mqtt-broker.example.toml: {missing:?}"
    );
}

#[test]
fn unknown_keys_are_rejected() {
    assert!(Config::from_toml("max_inflihgt = 3").is_err());
}

/// The case: a file with a password file and a `[[listeners]]`
/// entry on loopback that does not mention `allow_anonymous`. Mosquitto 2
/// refuses anonymous clients there ("not authorised"), so does this broker;
/// a user from the password file gets in.
#[tokio::test]
async fn a_listener_named_in_a_file_refuses_anonymous_clients_by_default() {
    let dir = ScratchDir::new("config-anon");
    let passwords = dir.file("passwd");
    std::fs::write(
        &passwords,
        format!(
            "alice:{}\n",
            mosquitto_pbkdf2_hash(b"secret", b"0123456789ab")
        ),
    )
    .unwrap();
    let config = Config::from_toml(&format!(
        "password_file = {:?}\nsys_interval_secs = 0\ndurability = \"none\"\n\n\
         [[listeners]]\nbind = \"127.0.0.1:0\"\n",
        passwords.to_str().unwrap()
    ))
    .expect("config parses");
    assert!(!config.listeners[0].allows_anonymous());
    let broker = broker_with(config).await;
    let addr = broker.local_addr();
    for v in VERSIONS {
        let got = RawClient::connect_refused(addr, login_packet(v, "anon", None, None)).await;
        assert_refusal(&got, v, 0x05, 0x87);
        let c = RawClient::connect_with(
            addr,
            login_packet(v, "alice", Some("alice"), Some(b"secret")),
        )
        .await;
        c.disconnect_and_wait().await;
    }
    assert_eq!(broker.stats().auth_failures.get(), 2);
    broker.shutdown().await;
}

/// A file without `[[listeners]]` keeps the built-in listener: loopback,
/// anonymous clients allowed (Mosquitto 2 without a `listener` line).
#[tokio::test]
async fn a_file_without_listeners_keeps_the_local_only_anonymous_listener() {
    let mut config =
        Config::from_toml("sys_interval_secs = 0\ndurability = \"none\"\n").expect("config parses");
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(
        config.listeners[0].bind,
        SocketAddr::from(([127, 0, 0, 1], 1883))
    );
    // As `-p` does: another port, same listener.
    config.listeners[0].bind.set_port(0);
    let broker = broker_with(config).await;
    for v in VERSIONS {
        let c =
            RawClient::connect_with(broker.local_addr(), login_packet(v, "anon", None, None)).await;
        c.disconnect_and_wait().await;
    }
    broker.shutdown().await;
}

/// The binary, killed when dropped, with its stdout lines read until both
/// listeners have reported.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address after `addr=` in a log line.
fn addr_in(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("addr=")? + 5..];
    rest.split_whitespace().next()?.parse().ok()
}

/// On the binary: of two listeners in a file, the one that says
/// `allow_anonymous = true` lets anonymous clients in and is named in the
/// startup log; the other refuses them and is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_startup_log_names_each_listener_that_allows_anonymous_clients() {
    let dir = ScratchDir::new("config-anon-log");
    let config = dir.file("broker.toml");
    std::fs::write(
        &config,
        "sys_interval_secs = 0\ndurability = \"none\"\n\n\
         [[listeners]]\nbind = \"127.0.0.1:0\"\nallow_anonymous = true\n\n\
         [[listeners]]\nbind = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("-c")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mqtt-broker");
    let stdout = child.stdout.take().unwrap();
    let running = Running { child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Lines up to "running", which comes after every listener's lines.
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no \"running\" line; got {lines:#?}"));
        let done = line.contains("running");
        lines.push(line);
        if done {
            break;
        }
    }
    let listening: Vec<SocketAddr> = lines
        .iter()
        .filter(|l| l.contains("listening"))
        .filter_map(|l| addr_in(l))
        .collect();
    assert_eq!(listening.len(), 2, "{lines:#?}");
    let open: Vec<SocketAddr> = lines
        .iter()
        .filter(|l| l.contains("allows anonymous clients"))
        .filter_map(|l| addr_in(l))
        .collect();
    assert_eq!(open, [listening[0]], "{lines:#?}");

    for v in VERSIONS {
        let c = RawClient::connect_with(listening[0], login_packet(v, "anon", None, None)).await;
        c.disconnect_and_wait().await;
        let got =
            RawClient::connect_refused(listening[1], login_packet(v, "anon", None, None)).await;
        assert_refusal(&got, v, 0x05, 0x87);
    }
    drop(running);
}
// [cluster] (issue 17): the section with only a node name takes the
// documented defaults, and what the cluster cannot work with is refused.
#[cfg(feature = "cluster")]
#[test]
fn cluster_section_parses_and_is_checked() {
    let c = Config::from_toml("[cluster]\nnode = \"node-a\"\n").expect("parses");
    assert_eq!(
        c.cluster,
        Some(mqtt_broker::ClusterConfig {
            node: "node-a".into(),
            ..Default::default()
        })
    );
    // The example's commented block, uncommented, parses too.
    let text = include_str!("../mqtt-broker.example.toml");
    let block: String = text
        .lines()
        .skip_while(|l| !l.starts_with("# [cluster]"))
        .take_while(|l| !l.starts_with("# --- end of [cluster]"))
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    // Credentials are alternatives; keep user and password only.
    let block = block
        .lines()
        .filter(|l| {
            !l.starts_with("token")
                && !l.starts_with("credentials_file")
                && !l.starts_with("nkey_seed_file")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let example = Config::from_toml(&block).expect("example [cluster] parses");
    let example = example.cluster.unwrap();
    assert_eq!(example.node, "node-a");
    assert_eq!(
        (example.heartbeat_ms, example.node_timeout_ms),
        (1000, 5000)
    );
    for bad in [
        "[cluster]\n",
        "[cluster]\nnode = \"a.b\"\n",
        "[cluster]\nnode = \"a\"\nnats = []\n",
        "[cluster]\nnode = \"a\"\nreplicas = 0\n",
        "[cluster]\nnode = \"a\"\nuser = \"u\"\n",
        "[cluster]\nnode = \"a\"\nsubject_prefix = \"a.b\"\n",
        "[cluster]\nnode = \"a\"\nnats_url = \"x\"\n",
        // Issue 18: a node must not be declared dead for one late heartbeat.
        "[cluster]\nnode = \"a\"\nheartbeat_ms = 0\n",
        "[cluster]\nnode = \"a\"\nheartbeat_ms = 1000\nnode_timeout_ms = 1500\n",
    ] {
        assert!(Config::from_toml(bad).is_err(), "accepted {bad:?}");
    }
}

/// A misspelt key: the error names the line and the key it resembles.
#[test]
fn a_misspelt_key_names_the_line_and_the_right_key() {
    let e = Config::from_toml("max_qos = 1\nmax_inflihgt = 3\n")
        .unwrap_err()
        .0;
    assert_eq!(
        e,
        "config:2: unknown key `max_inflihgt`: did you mean `max_inflight`?"
    );
}

/// A top-level key written after `[[listeners]]` lands in that table in
/// TOML; the error says to move it.
#[test]
fn a_top_level_key_after_listeners_says_to_move_it() {
    let text = "[[listeners]]\nbind = \"127.0.0.1:1883\"\nmax_inflight = 3\n";
    let e = Config::from_toml(text).unwrap_err().0;
    assert!(
        e.starts_with(
            "config:3: `max_inflight` is a top-level key: move it above the first [[listeners]]"
        ),
        "{e}"
    );
}

/// `bind` needs an IP address and a port; the error shows the form.
#[test]
fn bind_without_an_ip_address_and_port_says_how_to_write_it() {
    for bad in ["localhost:1883", "0.0.0.0", "1883"] {
        let text = format!("[[listeners]]\nbind = \"{bad}\"\n");
        let e = Config::from_toml(&text).unwrap_err().0;
        assert!(e.starts_with("config:2: bind = \""), "{e}");
        assert!(
            e.contains("needs an IP address and a port, like \"0.0.0.0:1883\""),
            "{e}"
        );
    }
}

/// Every error is one line.
#[test]
fn errors_are_one_line() {
    for text in [
        "max_qos = \"two\"",
        "max_qos = 7",
        "durability = \"sometimes\"",
        "[[listeners]]\nbind = \"127.0.0.1:1\"\n[[listeners]]\nbind = \"127.0.0.1:1\"\n",
        "[metrics]\nbind = \"127.0.0.1:1883\"\n[[listeners]]\nbind = \"127.0.0.1:1883\"\n",
        "= broken",
    ] {
        let e = Config::from_toml(text).unwrap_err().0;
        assert!(!e.contains('\n'), "{text:?} gave a multi-line error: {e}");
        assert!(e.starts_with("config"), "{e}");
    }
}

/// `--check` prints the effective settings as TOML, which reads back to
/// the same configuration.
#[test]
fn effective_settings_read_back_the_same() {
    let text = "max_qos = 1\nlog_format = \"json\"\npid_file = \"/tmp/x.pid\"\n[[listeners]]\nbind = \"0.0.0.0:1884\"\n[metrics]\nbind = \"127.0.0.1:9234\"\n";
    let c = Config::from_toml(text).unwrap();
    let again = Config::from_toml(&c.to_toml()).unwrap();
    assert_eq!(format!("{c:?}"), format!("{again:?}"));
}
