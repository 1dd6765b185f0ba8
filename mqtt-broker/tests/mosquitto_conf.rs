//! Mosquitto's configuration format (mosquitto.conf(5)) translated into the
//! broker's `Config`: Debian's shipped file, the documentation's examples,
//! and a refusal naming file, line and key for every setting we do not have.
//! WebSocket listeners and bridges are also run: a broker started from the
//! translated file serves a WebSocket client and files, and a bridge block
//! forwards messages between two brokers over real sockets.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::BytesMut;
use common::{broker, broker_with, connect_packet, publish, RawClient, Received, TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use mqtt_broker::bridge::config::{Addresses, BridgeProtocol, RestartTimeout};
use mqtt_broker::mosquitto_conf::{looks_like_mosquitto, translate};
use mqtt_broker::store::Durability;
use mqtt_broker::{Config, ListenerProtocol};
use mqtt_codec::{
    decode, DecodeOptions, List, Packet, Properties, ProtocolVersion, QoS, ReasonCode, Status,
    Subscribe, SubscribeFilter, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;

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

/// Mosquitto's file cannot ask for "any free port" (`listener 0` is a Unix
/// socket there), so a test translates a real port and then moves every
/// listener to port 0, keeping the address, before starting the broker.
fn on_free_ports(mut c: Config) -> Config {
    for l in &mut c.listeners {
        l.bind.set_port(0);
    }
    c
}

/// `protocol websockets` makes the listener a WebSocket one and `http_dir`
/// serves files on it (before or after the `protocol` line); TLS keys make
/// it wss; `protocol mqtt` stays plain.
#[test]
fn websockets_listeners_translate_with_http_dir_and_tls() {
    let text = "listener 1883\nprotocol mqtt\n\nlistener 9001 127.0.0.1\nhttp_dir /var/www/dashboard\nprotocol websockets\n\nlistener 9443\nprotocol websockets\ncertfile /etc/mosquitto/certs/server.crt\nkeyfile /etc/mosquitto/certs/server.key\n";
    let (c, warnings) = ok(text);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.listeners.len(), 3);
    assert_eq!(c.listeners[0].protocol, ListenerProtocol::Mqtt);
    assert_eq!(c.listeners[0].http_dir, None);
    assert_eq!(c.listeners[1].bind, addr("127.0.0.1:9001"));
    assert_eq!(c.listeners[1].protocol, ListenerProtocol::Websockets);
    assert_eq!(
        c.listeners[1].http_dir,
        Some(PathBuf::from("/var/www/dashboard"))
    );
    assert!(c.listeners[1].tls.is_none());
    assert_eq!(c.listeners[2].protocol, ListenerProtocol::Websockets);
    let tls = c.listeners[2].tls.as_ref().expect("wss on 9443");
    assert_eq!(
        tls.cert_file,
        PathBuf::from("/etc/mosquitto/certs/server.crt")
    );
    // --check prints it and the output reads back.
    let again = Config::from_toml(&c.to_toml()).expect("--check output reads back");
    assert_eq!(format!("{c:?}"), format!("{again:?}"));
}

/// An MQTT client over WebSocket: codec packets in binary messages.
struct WsMqtt {
    ws: WebSocketStream<TcpStream>,
    buf: BytesMut,
}

impl WsMqtt {
    /// Upgrades with the `mqtt` subprotocol and checks the server chose it.
    async fn open(addr: SocketAddr) -> WsMqtt {
        let mut req = format!("ws://{addr}/mqtt").into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (ws, resp) = tokio_tungstenite::client_async(req, tcp)
            .await
            .expect("WebSocket upgrade");
        assert_eq!(
            resp.headers()
                .get("Sec-WebSocket-Protocol")
                .map(|v| v.to_str().unwrap()),
            Some("mqtt")
        );
        WsMqtt {
            ws,
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, packet: &Packet<'_>) {
        let mut bytes = vec![0u8; packet.encoded_len(V3).unwrap()];
        packet.encode(V3, &mut bytes).unwrap();
        self.ws.send(Message::Binary(bytes.into())).await.unwrap();
    }

    /// The next packet; a message may hold several, or part of one.
    async fn recv(&mut self) -> Received {
        let next = async {
            loop {
                if let Ok(Status::Complete((_, n))) = decode(&self.buf, &DecodeOptions::new(V3)) {
                    return Received {
                        bytes: self.buf.split_to(n).to_vec(),
                        version: V3,
                    };
                }
                match self.ws.next().await {
                    Some(Ok(Message::Binary(b))) => self.buf.extend_from_slice(&b),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => panic!("expected a binary message, got {other:?}"),
                }
            }
        };
        tokio::time::timeout(TIMEOUT, next)
            .await
            .expect("a packet in time")
    }
}

/// A broker started from a mosquitto.conf with a WebSocket listener serves
/// an MQTT client over WebSocket (CONNECT, SUBSCRIBE, a message published
/// by a TCP client on the plain listener) and GET of a file from http_dir.
#[tokio::test]
async fn a_websockets_listener_from_mosquitto_conf_serves_mqtt_and_files() {
    let site = Scratch::new("ws-site");
    std::fs::write(site.0.join("index.html"), "<h1>dashboard</h1>").unwrap();
    let text = format!(
        "allow_anonymous true\nlistener 1883 127.0.0.1\nlistener 9001 127.0.0.1\nprotocol websockets\nhttp_dir {}\n",
        site.0.display()
    );
    let (c, _) = ok(&text);
    assert_eq!(c.listeners[1].protocol, ListenerProtocol::Websockets);
    assert_eq!(c.listeners[1].http_dir.as_deref(), Some(site.0.as_path()));
    let broker = broker_with(on_free_ports(c)).await;
    let (tcp_addr, ws_addr) = (broker.local_addrs()[0], broker.local_addrs()[1]);

    let mut ws = WsMqtt::open(ws_addr).await;
    ws.send(&Packet::Connect(connect_packet(V3, "browser", true)))
        .await;
    match ws.recv().await.packet() {
        Packet::ConnAck(a) => assert_eq!(a.reason, ReasonCode::Success),
        p => panic!("expected CONNACK, got {p:?}"),
    }
    let filters = [SubscribeFilter {
        filter: "dash/#",
        options: SubscriptionOptions::qos(QoS::AtLeastOnce),
    }];
    ws.send(&Packet::Subscribe(Subscribe {
        pid: common::pid_(1),
        properties: Properties::EMPTY,
        filters: List::from_slice(&filters),
    }))
    .await;
    assert!(matches!(ws.recv().await.packet(), Packet::SubAck(_)));
    // The SUBACK means the subscription is in place before the publish.
    let mut tcp = RawClient::connect(tcp_addr, V3, "sensor").await;
    tcp.publish_flow(publish("dash/temp", b"21.5", QoS::AtMostOnce, 0, false))
        .await;
    let got = ws.recv().await;
    let p = got.publish();
    assert_eq!((p.topic, p.payload), ("dash/temp", &b"21.5"[..]));

    let mut http = TcpStream::connect(ws_addr).await.unwrap();
    http.write_all(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, http.read_to_end(&mut answer))
        .await
        .expect("the file is served and the connection closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n<h1>dashboard</h1>"), "{answer}");
    broker.shutdown().await;
}

/// Every bridge setting Mosquitto documents that this broker has is
/// translated into the `[[bridges]]` entry; `topic` lines stay as written;
/// settings at the value this broker follows anyway are accepted; a
/// `listener` line does not end the block (Mosquitto's parser keeps the
/// bridge until the next `connection` or the end of the file).
#[test]
fn a_bridge_block_translates_every_bridge_setting() {
    let text = "\
listener 1883 127.0.0.1
connection cloud
address ::1:8883
clientid edge-1
local_clientid edge-local
username edge
password secret
cleansession true
local_cleansession true
keepalive_interval 30
restart_timeout 2 20
try_private false
notifications false
notification_topic edge/bridge/state
bridge_protocol_version mqttv50
bridge_session_expiry_interval 0
bridge_outgoing_retain false
bridge_cafile /etc/mosquitto/ca.crt
bridge_certfile /etc/mosquitto/edge.crt
bridge_keyfile /etc/mosquitto/edge.key
bridge_insecure false
start_type automatic
round_robin false
bridge_attempt_unsubscribe true
notifications_local_only false
idle_timeout 60
threshold 10
bridge_max_packet_size 0
bridge_reload_type lazy
bridge_require_ocsp false
bridge_tls_use_os_certs false
bridge_tls_version tlsv1.2
bridge_max_topic_alias 10
topic sensors/# out 1 edge/ site/
listener 1884 127.0.0.1
topic \"\" in 2 cmd/reboot cloud/cmd/reboot
connection backup
addresses 10.0.0.1 10.0.0.2:1884 # the second one is the standby
topic # both
";
    let (c, warnings) = ok(text);
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.bridges.len(), 2);
    let b = &c.bridges[0];
    assert_eq!(b.name, "cloud");
    assert!(
        matches!(&b.address, Addresses::One(a) if a == "[::1]:8883"),
        "{:?}",
        b.address
    );
    assert_eq!(
        b.topics,
        [
            "sensors/# out 1 edge/ site/",
            "\"\" in 2 cmd/reboot cloud/cmd/reboot"
        ],
        "verbatim, the second after a listener line"
    );
    assert_eq!(b.remote_clientid.as_deref(), Some("edge-1"));
    assert_eq!(b.local_clientid.as_deref(), Some("edge-local"));
    assert_eq!(b.remote_username.as_deref(), Some("edge"));
    assert_eq!(b.remote_password.as_deref(), Some("secret"));
    assert!(b.cleansession && !b.try_private && !b.notifications && !b.outgoing_retain);
    assert_eq!(b.keepalive_interval, 30);
    assert!(matches!(
        b.restart_timeout,
        RestartTimeout::Backoff([2, 20])
    ));
    assert_eq!(b.notification_topic.as_deref(), Some("edge/bridge/state"));
    assert_eq!(b.protocol_version, BridgeProtocol::Mqttv50);
    let tls = b.tls.as_ref().expect("TLS with bridge_cafile");
    assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/mosquitto/ca.crt")));
    assert_eq!(
        tls.cert_file,
        Some(PathBuf::from("/etc/mosquitto/edge.crt"))
    );
    assert_eq!(tls.key_file, Some(PathBuf::from("/etc/mosquitto/edge.key")));
    assert!(!tls.insecure);

    let backup = &c.bridges[1];
    assert!(
        matches!(&backup.address, Addresses::Many(a) if a == &["10.0.0.1", "10.0.0.2:1884"]),
        "{:?}",
        backup.address
    );
    assert!(backup.tls.is_none() && !backup.cleansession && backup.notifications);
    assert!(matches!(
        backup.restart_timeout,
        RestartTimeout::Backoff([5, 30])
    ));

    // Warnings, each naming its line: the two settings that change
    // nothing delivered, and the failover order of several addresses.
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings[0].starts_with("test.conf:32: bridge_tls_version: ignored"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].starts_with("test.conf:33: bridge_max_topic_alias: ignored"),
        "{warnings:?}"
    );
    assert!(
        warnings[2].starts_with("test.conf:38: addresses: several addresses"),
        "{warnings:?}"
    );

    // --check prints the bridges (not the password) and the output reads back.
    let printed = c.to_toml();
    assert!(!printed.contains("secret"), "{printed}");
    Config::from_toml(&printed).expect("--check output reads back");
}

/// A `connection` block ends with its file: an included file starts
/// outside any block, and the including file's block goes on after the
/// `include_dir` line.
#[test]
fn a_connection_block_ends_with_its_file() {
    let scratch = Scratch::new("bridge-include");
    std::fs::write(scratch.0.join("bridge.conf"), "\ntopic a/# out\n").unwrap();
    let text = format!(
        "connection up\naddress 127.0.0.1\ninclude_dir {}\n",
        scratch.0.display()
    );
    let bad = scratch.0.join("bridge.conf");
    let e = err(&text);
    assert!(
        e.starts_with(&format!(
            "{}:2: topic: is a bridge setting, but no `connection NAME` line",
            bad.display()
        )),
        "{e}"
    );
    std::fs::write(
        scratch.0.join("bridge.conf"),
        "connection other\naddress 127.0.0.2\ntopic b/# in\n",
    )
    .unwrap();
    let (c, _) = ok(&format!("{text}topic a/# out\n"));
    assert_eq!(c.bridges[0].name, "up");
    assert_eq!(c.bridges[0].topics, ["a/# out"]);
    assert_eq!(c.bridges[1].name, "other");
    assert_eq!(c.bridges[1].topics, ["b/# in"]);
}

/// Every refusal about WebSocket listeners and bridges is one line with
/// file:line, the key, and what to do instead.
#[test]
fn websockets_and_bridge_refusals_name_file_line_and_key() {
    const B: &str = "connection up\naddress 127.0.0.1\ntopic a/# out\n";
    let cases: &[(String, &str)] = &[
        // http_dir only on WebSocket listeners, whichever line comes first.
        ("listener 1883\nhttp_dir /var/www\nprotocol mqtt\n".into(), "test.conf:2: http_dir: serves files on WebSocket listeners only"),
        ("listener 8080\nprotocol websocket\n".into(), "test.conf:2: protocol: must be mqtt or websockets"),
        ("listener 8080\nprotocol websockets\nwebsockets_origin https://x\n".into(), "test.conf:3: websockets_origin: not supported: "),
        ("websockets_headers_size 65535\n".into(), "test.conf:1: websockets_headers_size: not supported above 8192"),
        // Bridge settings need a connection block.
        ("listener 1883\ntopic a/# out\n".into(), "test.conf:2: topic: is a bridge setting, but no `connection NAME` line"),
        ("bridge_capath /etc/ssl/certs\n".into(), "test.conf:1: bridge_capath: is a bridge setting"),
        // The block itself.
        ("connection\n".into(), "test.conf:1: connection: needs the bridge's name"),
        ("connection up\ntopic a/#\n".into(), "test.conf:1: connection: bridge `up` has no `address` line"),
        ("connection up\naddress h\n".into(), "test.conf:1: connection: bridge `up` has no `topic` line"),
        (format!("{B}connection up\n"), "test.conf:4: connection: the name `up` is already used by the bridge at test.conf:1"),
        (format!("{B}address h2\n"), "test.conf:4: address: given twice for bridge `up` (first at test.conf:2)"),
        // The bridge's own checks, at the line they are about.
        ("connection up\naddress h\ntopic a/# sideways\n".into(), "test.conf:3: topic: direction \"sideways\""),
        ("connection up\naddress h\ntopic a/# out 1 x/\n".into(), "test.conf:3: topic: "),
        ("connection up\naddress h:0\ntopic #\n".into(), "test.conf:2: address: \"h:0\": port"),
        (format!("{B}remote_password x\n"), "test.conf:4: remote_password: needs remote_username"),
        (format!("{B}notification_topic a/+/state\n"), "test.conf:4: notification_topic: "),
        (format!("{B}local_clientid same\nconnection two\naddress h\ntopic #\nlocal_clientid same\n"), "test.conf:8: local_clientid: \"same\" is used by another bridge"),
        (format!("{B}keepalive_interval 70000\n"), "test.conf:4: keepalive_interval: must be at most 65535"),
        (format!("{B}restart_timeout 30 5\n"), "test.conf:4: restart_timeout: the cap (second value) is lower than the base"),
        (format!("{B}restart_timeout 5 30 60\n"), "test.conf:4: restart_timeout: the third value (stable) is not supported"),
        (format!("{B}bridge_protocol_version mqttv5\n"), "test.conf:4: bridge_protocol_version: must be mqttv31, mqttv311 or mqttv50"),
        (format!("{B}cleansession yes\n"), "test.conf:4: cleansession: must be true or false"),
        // TLS to the remote.
        (format!("{B}bridge_certfile /c.crt\nbridge_keyfile /c.key\n"), "test.conf:4: bridge_certfile: needs bridge_cafile"),
        (format!("{B}bridge_cafile /ca.crt\nbridge_certfile /c.crt\n"), "test.conf:5: bridge_certfile: needs bridge_keyfile"),
        (format!("{B}bridge_cafile /ca.crt\nbridge_insecure true\n"), "test.conf:5: bridge_insecure: `true` is not supported: Mosquitto then skips only the host name check"),
        (format!("{B}bridge_tls_version tlsv1.1\n"), "test.conf:4: bridge_tls_version: `tlsv1.1` is not supported"),
        (format!("{B}bridge_tls_use_os_certs true\n"), "test.conf:4: bridge_tls_use_os_certs: `true` is not supported: give the system's CA file with bridge_cafile"),
        (format!("{B}bridge_require_ocsp true\n"), "test.conf:4: bridge_require_ocsp: `true` is not supported"),
        // Mosquitto settings this broker does not have, at values it does
        // not follow.
        (format!("{B}start_type lazy\n"), "test.conf:4: start_type: `lazy` is not supported: the bridge connects at start and reconnects"),
        (format!("{B}start_type once\n"), "test.conf:4: start_type: `once` is not supported"),
        (format!("{B}start_type manual\n"), "test.conf:4: start_type: must be automatic, lazy or once"),
        ("connection up\naddress h1 h2\ntopic #\nround_robin false\n".into(), "test.conf:4: round_robin: `false` is not supported: the bridge moves to the next address"),
        (format!("{B}idle_timeout 30\n"), "test.conf:4: idle_timeout: `30` is not supported: it only acts with start_type lazy"),
        (format!("{B}threshold 5\n"), "test.conf:4: threshold: `5` is not supported"),
        (format!("{B}bridge_max_packet_size 1024\n"), "test.conf:4: bridge_max_packet_size: `1024` is not supported: messages to the remote are limited"),
        (format!("{B}notifications_local_only true\n"), "test.conf:4: notifications_local_only: `true` is not supported"),
        (format!("{B}bridge_reload_type immediate\n"), "test.conf:4: bridge_reload_type: `immediate` is not supported"),
        (format!("{B}cleansession false\nlocal_cleansession true\n"), "test.conf:5: local_cleansession: differs from cleansession (false)"),
        (format!("{B}bridge_protocol_version mqttv50\nbridge_session_expiry_interval 60\n"), "test.conf:5: bridge_session_expiry_interval: `60` is not supported"),
        (format!("{B}bridge_capath /etc/ssl/certs\n"), "test.conf:4: bridge_capath: not supported: put the CA certificates into one PEM file"),
        (format!("{B}bridge_identity edge\n"), "test.conf:4: bridge_identity: not supported: TLS-PSK"),
        (format!("{B}bridge_psk 0123\n"), "test.conf:4: bridge_psk: not supported: TLS-PSK"),
        (format!("{B}local_username u\n"), "test.conf:4: local_username: not supported: the bridge's session on this broker"),
        (format!("{B}local_password p\n"), "test.conf:4: local_password: not supported"),
        (format!("{B}bridge_receive_maximum 10\n"), "test.conf:4: bridge_receive_maximum: not supported"),
        (format!("{B}bridge_bind_address 10.0.0.5\n"), "test.conf:4: bridge_bind_address: not supported"),
        (format!("{B}bridge_alpn mqtt\n"), "test.conf:4: bridge_alpn: not supported"),
        (format!("{B}bridge_ciphers ECDHE\n"), "test.conf:4: bridge_ciphers: not supported"),
        (format!("{B}bridge_tcp_keepalive 60 10 3\n"), "test.conf:4: bridge_tcp_keepalive: not supported"),
        (format!("{B}bridge_tcp_user_timeout 5000\n"), "test.conf:4: bridge_tcp_user_timeout: not supported"),
    ];
    for (text, expected) in cases {
        let e = err(text);
        assert!(
            e.starts_with(expected),
            "{text:?}\n  got      {e}\n  expected {expected}..."
        );
    }
    // Mosquitto's floors are kept, with a warning naming the line.
    let (c, warnings) = ok(&format!("{B}keepalive_interval 1\nrestart_timeout 0\n"));
    assert_eq!(c.bridges[0].keepalive_interval, 5);
    assert!(matches!(
        c.bridges[0].restart_timeout,
        RestartTimeout::Constant(1)
    ));
    assert!(
        warnings[0].starts_with("test.conf:4: keepalive_interval: 1 is below 5"),
        "{warnings:?}"
    );
}

/// A bridge block between two of our brokers, both started in the test:
/// the remote first, its port written into the local broker's
/// mosquitto.conf. A message crosses the `out` line with its prefix
/// swapped, and one from the remote crosses the `in` line.
#[tokio::test]
async fn a_bridge_block_from_mosquitto_conf_forwards_out_and_in() {
    let remote = broker().await;
    let text = format!(
        "\
listener 1883 127.0.0.1
allow_anonymous true

# to the cloud broker
connection cloud
address 127.0.0.1:{}
remote_clientid edge
notification_topic bridge/edge/state
restart_timeout 1
topic sensors/# out 1 edge/ site/
topic cmd/# in 1 dev/ cloud/
",
        remote.local_addr().port()
    );
    let (c, _) = ok(&text);
    assert_eq!(c.bridges.len(), 1);
    let local = broker_with(on_free_ports(c)).await;

    // The bridge publishes `1` on the remote once its SUBSCRIBEs are sent,
    // so the remote has the `in` line's subscription when `1` arrives.
    let mut watch = RawClient::connect(remote.local_addr(), V3, "watch").await;
    watch
        .subscribe(1, "bridge/edge/state", QoS::AtMostOnce)
        .await;
    while watch.recv_publish().await.publish().payload != b"1" {}

    // Out: edge/sensors/t here is site/sensors/t there.
    let mut cloud_sub = RawClient::connect(remote.local_addr(), V3, "cloud-sub").await;
    cloud_sub.subscribe(1, "site/#", QoS::AtLeastOnce).await;
    let mut edge_pub = RawClient::connect(local.local_addr(), V3, "edge-pub").await;
    edge_pub
        .publish_flow(publish("edge/sensors/t", b"21", QoS::AtLeastOnce, 1, false))
        .await;
    let got = cloud_sub.recv_publish().await;
    let p = got.publish();
    assert_eq!((p.topic, p.payload), ("site/sensors/t", &b"21"[..]));
    cloud_sub.ack_delivery(&p).await;

    // In: cloud/cmd/reboot there is dev/cmd/reboot here.
    let mut dev_sub = RawClient::connect(local.local_addr(), V3, "dev-sub").await;
    dev_sub.subscribe(1, "dev/#", QoS::AtLeastOnce).await;
    let mut cloud_pub = RawClient::connect(remote.local_addr(), V3, "cloud-pub").await;
    cloud_pub
        .publish_flow(publish(
            "cloud/cmd/reboot",
            b"now",
            QoS::AtLeastOnce,
            1,
            false,
        ))
        .await;
    let got = dev_sub.recv_publish().await;
    let p = got.publish();
    assert_eq!((p.topic, p.payload), ("dev/cmd/reboot", &b"now"[..]));
    dev_sub.ack_delivery(&p).await;

    local.shutdown().await;
    remote.shutdown().await;
}
