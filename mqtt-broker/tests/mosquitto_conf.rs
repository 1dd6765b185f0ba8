//! Mosquitto's configuration format (mosquitto.conf(5)) translated into the
//! broker's `Config`: Debian's shipped file, the documentation's examples,
//! and a refusal naming file, line and key for every setting we do not have.

use std::net::SocketAddr;
use std::path::PathBuf;

use mqtt_broker::mosquitto_conf::{looks_like_mosquitto, translate};
use mqtt_broker::store::Durability;
use mqtt_broker::Config;

const DEBIAN: &str = include_str!("data/debian-mosquitto.conf");

fn ok(text: &str) -> (Config, Vec<String>) {
    translate("test.conf", text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn err(text: &str) -> String {
    match translate("test.conf", text) {
        Ok((c, _)) => panic!("{text:?} was accepted: {c:?}"),
        Err(e) => {
            assert!(!e.0.contains('\n'), "one line: {e}");
            e.0
        }
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A scratch directory removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("mqtt-mconf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Files are told apart by content: `key value` is Mosquitto's, `key =
/// value` and `[table]` are TOML.
#[test]
fn the_format_is_recognised_by_content() {
    assert!(looks_like_mosquitto(DEBIAN));
    assert!(looks_like_mosquitto("listener 1883\n"));
    assert!(looks_like_mosquitto("# comment\n\nallow_anonymous true\n"));
    assert!(!looks_like_mosquitto("max_qos = 1\n"));
    assert!(!looks_like_mosquitto(
        "# c\n[[listeners]]\nbind = \"127.0.0.1:1\"\n"
    ));
    assert!(!looks_like_mosquitto(""));
    assert!(!looks_like_mosquitto(include_str!(
        "../mqtt-broker.example.toml"
    )));
}

/// Debian's /etc/mosquitto/mosquitto.conf (mosquitto 2.0.11-1.2+deb12u2,
/// committed as test data): pid file, persistence in /var/lib/mosquitto,
/// a log file (a warning: logs go to standard output), conf.d included.
/// No listener: Mosquitto 2's local-only mode.
#[test]
fn debians_shipped_mosquitto_conf_is_read() {
    let scratch = Scratch::new("debian");
    let conf_d = scratch.0.join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    std::fs::write(
        conf_d.join("README"),
        "Any files placed in this directory ...\n",
    )
    .unwrap();
    let text = DEBIAN.replace("/etc/mosquitto/conf.d", conf_d.to_str().unwrap());
    let (c, warnings) = ok(&text);
    assert_eq!(
        c.pid_file,
        Some(PathBuf::from("/run/mosquitto/mosquitto.pid"))
    );
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/mosquitto/"));
    assert_eq!(c.durability, Durability::Always);
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].bind, addr("127.0.0.1:1883"));
    assert!(c.listeners[0].allows_anonymous());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("test.conf:11: log_dest: ignored"),
        "{warnings:?}"
    );
}

/// include_dir reads DIR/*.conf in name order, and each file's settings
/// apply as if written there; other files are skipped.
#[test]
fn include_dir_reads_conf_files_in_name_order() {
    let scratch = Scratch::new("include");
    std::fs::write(
        scratch.0.join("20-lan.conf"),
        "listener 1884\nmax_queued_messages 50\n",
    )
    .unwrap();
    std::fs::write(
        scratch.0.join("10-local.conf"),
        "listener 1883 127.0.0.1\nmax_queued_messages 7\n",
    )
    .unwrap();
    std::fs::write(scratch.0.join("README"), "not a setting\n").unwrap();
    let text = format!(
        "allow_anonymous true\ninclude_dir {}\n",
        scratch.0.display()
    );
    let (c, _) = ok(&text);
    let binds: Vec<_> = c.listeners.iter().map(|l| l.bind).collect();
    assert_eq!(binds, [addr("127.0.0.1:1883"), addr("0.0.0.0:1884")]);
    assert_eq!(c.max_queued_messages, 50, "the later file wins");
    assert!(c.listeners.iter().all(|l| l.allows_anonymous()));

    // An error inside an included file names that file.
    std::fs::write(scratch.0.join("30-bad.conf"), "\nmax_qos 3\n").unwrap();
    let e = err(&text);
    let bad = scratch.0.join("30-bad.conf");
    assert_eq!(
        e,
        format!("{}:2: max_qos: must be 0, 1 or 2", bad.display())
    );

    let e = err("include_dir /nonexistent/mqtt-conf.d\n");
    assert!(
        e.starts_with("test.conf:1: include_dir: cannot read directory /nonexistent/mqtt-conf.d"),
        "{e}"
    );
}

/// mosquitto.conf(5): a listener on all interfaces with a password file and
/// anonymous access off (the usual LAN setup).
#[test]
fn a_lan_listener_with_a_password_file() {
    let (c, _) = ok("listener 1883\npassword_file /etc/mosquitto/passwd\nallow_anonymous false\n");
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].bind, addr("0.0.0.0:1883"));
    assert!(!c.listeners[0].allows_anonymous());
    assert_eq!(
        c.password_file,
        Some(PathBuf::from("/etc/mosquitto/passwd"))
    );
    assert_eq!(
        c.durability,
        Durability::None,
        "no persistence line: in memory, as Mosquitto"
    );
}

/// Mosquitto 2: a listener refuses anonymous clients unless allow_anonymous
/// true says otherwise.
#[test]
fn a_listener_refuses_anonymous_clients_by_default() {
    let (c, _) = ok("listener 1883 192.168.1.10\n");
    assert_eq!(c.listeners[0].bind, addr("192.168.1.10:1883"));
    assert!(!c.listeners[0].allows_anonymous());
    let (c, _) = ok("listener 1883 ::\nsocket_domain ipv6\nallow_anonymous true\n");
    assert_eq!(c.listeners[0].bind, addr("[::]:1883"));
    assert!(c.listeners[0].allows_anonymous());
}

/// mosquitto.conf(5) / mosquitto-tls(7): a TLS listener with client
/// certificates whose Common Name is the user name.
#[test]
fn a_tls_listener_with_client_certificates() {
    let text = "listener 1883 127.0.0.1\n\nlistener 8883\ncafile /etc/mosquitto/ca_certificates/ca.crt\ncertfile /etc/mosquitto/certs/server.crt\nkeyfile /etc/mosquitto/certs/server.key\nrequire_certificate true\nuse_identity_as_username true\ntls_version tlsv1.2\n";
    let (c, _) = ok(text);
    assert_eq!(c.listeners.len(), 2);
    assert!(c.listeners[0].tls.is_none());
    let tls = c.listeners[1].tls.as_ref().expect("TLS on 8883");
    assert_eq!(
        tls.cert_file,
        PathBuf::from("/etc/mosquitto/certs/server.crt")
    );
    assert_eq!(
        tls.key_file,
        PathBuf::from("/etc/mosquitto/certs/server.key")
    );
    assert_eq!(
        tls.ca_file,
        Some(PathBuf::from("/etc/mosquitto/ca_certificates/ca.crt"))
    );
    assert!(tls.require_certificate && tls.use_identity_as_username);

    let e = err("listener 8883\ncertfile /x.crt\n");
    assert_eq!(
        e,
        "test.conf:1: listener 8883: TLS needs both certfile and keyfile"
    );
}

/// Limits and persistence, with Mosquitto's units ("0: no limit",
/// persistent_client_expiration in h/d/w/m/y, autosave_interval seconds).
#[test]
fn limits_and_persistence_translate_with_their_units() {
    let text = "persistence true\npersistence_location /var/lib/mosquitto/\nautosave_interval 60\nmax_inflight_messages 20\nmax_queued_messages 100\nmax_queued_bytes 0\nmax_packet_size 1048576\nmax_keepalive 120\nmax_connections -1\nsys_interval 30\npersistent_client_expiration 2d\nqueue_qos0_messages true\nretain_available false\nmax_qos 1\n";
    let (c, _) = ok(text);
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/mosquitto/"));
    assert_eq!(c.durability, Durability::Periodic);
    assert_eq!(c.sync_interval_ms, 60_000);
    assert_eq!(c.max_inflight, 20);
    assert_eq!(c.max_queued_messages, 100);
    assert!(c.max_queued_bytes >= i64::MAX as usize, "no limit");
    // The effective settings print and read back (--check).
    let again = Config::from_toml(&c.to_toml()).expect("--check output reads back");
    assert_eq!(format!("{c:?}"), format!("{again:?}"));
    assert_eq!(c.max_packet_size, 1_048_576);
    assert_eq!(c.max_keepalive, 120);
    assert!(c.max_connections >= 100_000_000);
    assert_eq!(c.sys_interval_secs, 30);
    assert_eq!(c.persistent_client_expiration_secs, Some(2 * 86_400));
    assert!(c.queue_qos0_messages && !c.retain_available);
    assert_eq!(c.max_qos, 1);
}

/// per_listener_settings true: allow_anonymous per listener; one password
/// file for all (this broker has one), or an error naming both places.
#[test]
fn per_listener_settings_gives_each_listener_its_anonymous_rule() {
    let text = "per_listener_settings true\nlistener 1883 127.0.0.1\nallow_anonymous true\nlistener 8883\nallow_anonymous false\n";
    let (c, _) = ok(text);
    assert!(c.listeners[0].allows_anonymous());
    assert!(!c.listeners[1].allows_anonymous());

    let text = "per_listener_settings true\nlistener 1883\npassword_file /a\nlistener 1884\npassword_file /b\n";
    assert_eq!(
        err(text),
        "test.conf:5: password_file: differs from the one at test.conf:3: this broker has one password_file for all listeners"
    );
    let e = err("allow_anonymous true\nper_listener_settings true\n");
    assert!(
        e.starts_with("test.conf:2: per_listener_settings: must come before"),
        "{e}"
    );
}

/// A setting we do not have is an error with file, line and key, and
/// what to do instead; never silently ignored.
#[test]
fn an_unknown_or_unsupported_setting_is_an_error_naming_file_line_and_key() {
    assert_eq!(
        err("listener 1883\n\nallow_anonymus true\n"),
        "test.conf:3: allow_anonymus: unknown setting (see mosquitto.conf(5); if it is a Mosquitto setting, this broker does not have it)"
    );
    let e = err("persistence_file mosquitto.db\n");
    assert!(
        e.starts_with("test.conf:1: persistence_file: not supported: "),
        "{e}"
    );
    let e = err("listener 1883\nmount_point site/\n");
    assert!(
        e.starts_with("test.conf:2: mount_point: not supported"),
        "{e}"
    );
    let e = err("allow_anonymous yes\n");
    assert_eq!(
        e,
        "test.conf:1: allow_anonymous: must be true or false, not `yes`"
    );
    let e = err("listener 1883 mqtt.example.com\n");
    assert!(e.contains("is not an IP address"), "{e}");
    let e = err("certfile /x.crt\nkeyfile /x.key\nlistener 8883\n");
    assert!(
        e.starts_with("test.conf:1: listener option before the first `listener` line"),
        "{e}"
    );
}

/// Features that other branches add are refused clearly for now: bridges
/// (`connection`), WebSocket listeners, http_dir.
#[test]
fn bridges_and_websockets_are_not_supported_yet() {
    let e = err("connection other\naddress 192.168.1.2:1883\ntopic # both 0\n");
    assert!(
        e.starts_with("test.conf:1: connection: bridges are not supported yet"),
        "{e}"
    );
    let e = err("listener 8080\nprotocol websockets\n");
    assert!(
        e.starts_with("test.conf:2: protocol: WebSocket listeners are not supported yet"),
        "{e}"
    );
    let e = err("listener 8080\nhttp_dir /var/www\n");
    assert!(e.starts_with("test.conf:2: http_dir: "), "{e}");
}

/// Logging-only settings are warnings with file and line; the rest stands.
#[test]
fn logging_settings_are_warnings() {
    let (c, warnings) = ok("log_dest syslog\nlog_type all\nconnection_messages true\nlog_timestamp false\nlistener 1883\n");
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    assert!(
        warnings[1].starts_with("test.conf:2: log_type: ignored"),
        "{warnings:?}"
    );
}
