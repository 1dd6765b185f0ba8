//! MQTT over WebSocket from the client library and the `mqtt` tool
//! (`ws://`, `wss://`, `-L URL`), against our broker's WebSocket listener
//! over real sockets.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use mqtt_broker::config::TlsListenerConfig;
use mqtt_broker::{BrokerHandle, Config, ListenerProtocol};
use mqtt_client::{ConnectOptions, ProtocolVersion, QoS, TlsOptions};
use tokio::process::Command;

/// A broker with a TCP listener (first) and a WebSocket listener (second).
async fn tcp_and_ws_broker() -> BrokerHandle {
    let mut config = Config::ephemeral();
    let mut ws = config.listeners[0].clone();
    ws.protocol = ListenerProtocol::Websockets;
    config.listeners.push(ws);
    broker_with(config).await
}

fn ws_url(broker: &BrokerHandle, path_and_topic: &str) -> String {
    format!(
        "ws://127.0.0.1:{}{path_and_topic}",
        broker.local_addrs()[1].port()
    )
}

/// A client from a `ws://` URL publishes and receives at every QoS, with
/// both protocol versions.
#[tokio::test]
async fn ws_url_client_round_trips_every_qos() {
    let broker = tcp_and_ws_broker().await;
    for v in VERSIONS {
        let mut o = ConnectOptions::from_url(&ws_url(&broker, "/mqtt"))
            .unwrap()
            .version(v)
            .client_id(format!("ws-{v:?}"));
        o.reconnect = false;
        let (client, mut messages) = connect(o).await;
        client.subscribe("ws/#", QoS::ExactlyOnce).await.unwrap();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let payload = format!("{qos:?}");
            client
                .publish("ws/t", payload.clone(), qos, false)
                .await
                .unwrap();
            let m = within("message over WebSocket", messages.recv())
                .await
                .unwrap();
            assert_eq!(m.payload_str(), Some(payload.as_str()));
            assert_eq!(m.qos, qos);
        }
        client.disconnect().await.unwrap();
    }
}

/// A 1 MB binary payload crosses from a WebSocket client to a TCP client
/// intact (it spans many TCP segments and one WebSocket message).
#[tokio::test]
async fn large_binary_payload_crosses_websocket_to_tcp() {
    let broker = tcp_and_ws_broker().await;
    let (tcp_client, mut tcp_messages) = connect(opts(
        broker.local_addrs()[0],
        ProtocolVersion::V5,
        "tcp-sub",
    ))
    .await;
    tcp_client
        .subscribe("blob", QoS::AtLeastOnce)
        .await
        .unwrap();
    let o = ConnectOptions::from_url(&ws_url(&broker, "/"))
        .unwrap()
        .version(ProtocolVersion::V5)
        .client_id("ws-pub");
    let (ws_client, _m) = connect(o).await;
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    ws_client
        .publish("blob", payload.clone(), QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = within("1 MB message", tcp_messages.recv()).await.unwrap();
    assert_eq!(m.payload.len(), payload.len());
    assert!(m.payload[..] == payload[..], "payload changed on the way");
}

/// `wss://`: the WebSocket runs over the client's rustls TLS, verified
/// against a CA file.
#[tokio::test]
async fn wss_url_client_round_trips() {
    let dir = std::env::temp_dir().join(format!("mqtt-client-wss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: String| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut config = Config::ephemeral();
    config.listeners[0].protocol = ListenerProtocol::Websockets;
    config.listeners[0].tls = Some(TlsListenerConfig {
        cert_file: write("server.crt", cert.pem()),
        key_file: write("server.key", key.serialize_pem()),
        ca_file: None,
        require_certificate: false,
        use_identity_as_username: false,
    });
    let broker = broker_with(config).await;
    let url = format!("wss://localhost:{}/mqtt", broker.local_addr().port());
    let mut o = ConnectOptions::from_url(&url)
        .unwrap()
        .version(ProtocolVersion::V5)
        .client_id("wss");
    o.tls = Some(TlsOptions {
        ca_file: Some(write("ca.crt", cert.pem())),
        ..Default::default()
    });
    o.reconnect = false;
    let (client, mut messages) = connect(o).await;
    client.subscribe("secure", QoS::AtLeastOnce).await.unwrap();
    client
        .publish("secure", "over wss", QoS::AtLeastOnce, false)
        .await
        .unwrap();
    let m = within("message over wss", messages.recv()).await.unwrap();
    assert_eq!(m.payload_str(), Some("over wss"));
    client.disconnect().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `ws://` URL pointed at a plain MQTT port fails with a clear connection
/// error (no upgrade answer), not a hang.
#[tokio::test]
async fn ws_url_to_a_tcp_port_fails_clearly() {
    let broker = broker().await;
    let mut o = ConnectOptions::from_url(&format!("ws://{}/mqtt", broker.local_addr())).unwrap();
    o.reconnect = false;
    o.connect_timeout = Duration::from_secs(3);
    let err = within("connect error", mqtt_client::Client::connect(o))
        .await
        .err()
        .expect("connecting fails");
    assert!(
        matches!(
            err,
            mqtt_client::ClientError::Connection(_) | mqtt_client::ClientError::Timeout
        ),
        "{err}"
    );
}

fn mqtt_tool(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mqtt"));
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// `mqtt pub -L ws://host:port/mqtt/room_temp` (like mosquitto_pub -L):
/// the first path segment is the WebSocket path, the rest the topic.
#[tokio::test]
async fn mqtt_pub_with_a_ws_url_reaches_a_tcp_subscriber() {
    let broker = tcp_and_ws_broker().await;
    let (sub, mut messages) = connect(opts(
        broker.local_addrs()[0],
        ProtocolVersion::V3_1_1,
        "tcp",
    ))
    .await;
    sub.subscribe("room_temp", QoS::AtMostOnce).await.unwrap();
    let url = ws_url(&broker, "/mqtt/room_temp");
    let out = within(
        "mqtt pub",
        mqtt_tool(&["pub", "-L", &url, "-m", "21.5"]).output(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = within("message", messages.recv()).await.unwrap();
    assert_eq!(
        (m.topic.as_str(), m.payload_str()),
        ("room_temp", Some("21.5"))
    );
}

/// `mqtt sub -L ws://...` receives what a TCP client publishes; `-L
/// mqtt://host:port/topic` works for TCP.
#[tokio::test]
async fn mqtt_sub_with_a_ws_url_and_pub_with_an_mqtt_url() {
    let broker = tcp_and_ws_broker().await;
    let before = broker.subscription_count();
    let child = mqtt_tool(&[
        "sub",
        "-L",
        &ws_url(&broker, "/mqtt/sensors/+"),
        "-C",
        "1",
        "-v",
    ])
    .spawn()
    .unwrap();
    within("mqtt sub subscribed", async {
        while broker.subscription_count() == before {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let url = format!(
        "mqtt://127.0.0.1:{}/sensors/kitchen",
        broker.local_addrs()[0].port()
    );
    let out = within(
        "mqtt pub",
        mqtt_tool(&["pub", "-L", &url, "-m", "19"]).output(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sub = within("mqtt sub exits", child.wait_with_output())
        .await
        .unwrap();
    assert!(
        sub.status.success(),
        "{}",
        String::from_utf8_lossy(&sub.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&sub.stdout), "sensors/kitchen 19\n");
}

/// A bad -L URL is a usage error with a message, not a connection attempt.
#[tokio::test]
async fn mqtt_pub_with_a_bad_url_fails_with_a_message() {
    let out = within(
        "mqtt pub",
        mqtt_tool(&["pub", "-L", "http://127.0.0.1/x", "-m", "1"]).output(),
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("scheme"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// RFC 6455 section 4.1: a server that upgrades without choosing the
/// offered `mqtt` subprotocol is not spoken to; the client fails with a
/// connection error instead of sending CONNECT into the void.
#[tokio::test]
async fn server_that_does_not_echo_the_subprotocol_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let text = String::from_utf8(head).unwrap();
        assert!(text.contains("Sec-WebSocket-Protocol: mqtt\r\n"), "{text}");
        let key = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("sec-websocket-key: ")
                    .or(l.strip_prefix("Sec-WebSocket-Key: "))
            })
            .unwrap();
        let accept =
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        s.write_all(resp.as_bytes()).await.unwrap();
        // Whatever the client does next, it must not be a CONNECT frame.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        rest
    });
    let mut o = ConnectOptions::from_url(&format!("ws://{addr}/mqtt")).unwrap();
    o.reconnect = false;
    let err = within("connect error", mqtt_client::Client::connect(o))
        .await
        .err()
        .expect("connecting fails");
    assert!(
        matches!(&err, mqtt_client::ClientError::Connection(m) if m.contains("WebSocket")),
        "{err}"
    );
    let rest = server.await.unwrap();
    // A masked binary frame would start with 0x82; nothing of the kind.
    assert!(rest.first() != Some(&0x82), "{rest:02x?}");
}
