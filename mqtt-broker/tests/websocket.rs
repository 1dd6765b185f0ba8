//! WebSocket listeners over real sockets (MQTT 5.0 / 3.1.1 section 6 on RFC
//! 6455): the handshake and its refusals, framing rules, limits, wss, and
//! `http_dir`. A tokio-tungstenite client speaks WebSocket; packets are
//! built with `mqtt-codec`; raw TCP is used where the test needs bytes no
//! well-behaved client sends.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use futures_util::{SinkExt, StreamExt};
use mqtt_broker::{BrokerHandle, Config, ListenerConfig, ListenerProtocol};
use mqtt_codec::{
    decode, DecodeOptions, LastWill, Packet, Properties, ProtocolVersion, QoS, ReasonCode, Status,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket listener (and nothing else) with `f` applied to the config.
async fn ws_broker(f: impl FnOnce(&mut Config)) -> BrokerHandle {
    let mut config = Config::ephemeral();
    config.listeners[0].protocol = ListenerProtocol::Websockets;
    f(&mut config);
    broker_with(config).await
}

/// A broker with a TCP listener first and a WebSocket listener second.
async fn tcp_and_ws_broker() -> BrokerHandle {
    let mut config = Config::ephemeral();
    let mut ws = config.listeners[0].clone();
    ws.protocol = ListenerProtocol::Websockets;
    config.listeners.push(ws);
    broker_with(config).await
}

/// An MQTT client over WebSocket that sends and receives codec packets.
struct WsClient<S> {
    ws: WebSocketStream<S>,
    version: ProtocolVersion,
    buf: BytesMut,
}

fn encode(packet: &Packet<'_>, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = vec![0u8; packet.encoded_len(version).expect("encodable")];
    packet.encode(version, &mut buf).unwrap();
    buf
}

/// Opens the WebSocket offering `protocols`; returns the server's answer
/// (the chosen subprotocol) with the stream.
async fn ws_open_over<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    url: &str,
    protocols: &str,
) -> Result<(WebSocketStream<S>, Option<String>), tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request().unwrap();
    if !protocols.is_empty() {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::client_async(req, stream).await?;
    let chosen = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_string());
    Ok((ws, chosen))
}

impl WsClient<TcpStream> {
    async fn open(addr: SocketAddr, version: ProtocolVersion) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (ws, chosen) = ws_open_over(tcp, &format!("ws://{addr}/mqtt"), "mqtt")
            .await
            .expect("WebSocket handshake");
        assert_eq!(chosen.as_deref(), Some("mqtt"));
        WsClient {
            ws,
            version,
            buf: BytesMut::new(),
        }
    }

    async fn connect(addr: SocketAddr, version: ProtocolVersion, id: &str) -> Self {
        let mut c = Self::open(addr, version).await;
        c.send(&Packet::Connect(connect_packet(version, id, true)))
            .await;
        c.expect_connack(ReasonCode::Success).await;
        c
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsClient<S> {
    async fn send(&mut self, packet: &Packet<'_>) {
        let bytes = encode(packet, self.version);
        self.ws.send(Message::Binary(bytes.into())).await.unwrap();
    }

    /// The next packet; `None` once the connection is closed.
    async fn try_recv(&mut self) -> Option<Received> {
        loop {
            match decode(&self.buf, &DecodeOptions::new(self.version)) {
                Ok(Status::Complete((_, n))) => {
                    return Some(Received {
                        bytes: self.buf.split_to(n).to_vec(),
                        version: self.version,
                    })
                }
                Ok(Status::Partial(_)) => {}
                Err(e) => panic!("malformed packet from the server: {e}"),
            }
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => self.buf.extend_from_slice(&b),
                Some(Ok(Message::Text(_))) => panic!("the server sent a text frame"),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }

    async fn recv(&mut self) -> Received {
        tokio::time::timeout(TIMEOUT, self.try_recv())
            .await
            .expect("a packet in time")
            .expect("connection open")
    }

    async fn expect_connack(&mut self, reason: ReasonCode) {
        match self.recv().await.packet() {
            Packet::ConnAck(a) => assert_eq!(a.reason, reason),
            p => panic!("expected CONNACK, got {p:?}"),
        }
    }

    /// Waits for the close frame the server sends, returning its code.
    async fn expect_close_code(&mut self) -> Option<CloseCode> {
        let got = tokio::time::timeout(TIMEOUT, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(f))) => return f.map(|f| f.code),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("connection ended without a close frame: {e}"),
                    None => panic!("connection ended without a close frame"),
                }
            }
        })
        .await;
        got.expect("a close frame in time")
    }
}

/// Sends raw HTTP and returns the whole response (the server closes after
/// it).
async fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn upgrade_request(protocol_header: &str) -> String {
    format!(
        "GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol_header}\r\n"
    )
}

/// Upgrades a raw TCP socket and returns it, for tests that write frames
/// by hand.
async fn raw_upgrade(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(upgrade_request("Sec-WebSocket-Protocol: mqtt\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A masked client frame (RFC 6455 section 5.2) with a payload under 126
/// bytes.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

// --- The handshake ---

/// MQTT 5.0 section 6: the server echoes the `mqtt` subprotocol, and MQTT
/// 3.1, 3.1.1 and 5.0 clients all connect over it.
#[tokio::test]
async fn every_protocol_version_connects_over_websocket() {
    let broker = ws_broker(|_| {}).await;
    for (v, id) in [
        (ProtocolVersion::V3_1, "v31"),
        (ProtocolVersion::V3_1_1, "v311"),
        (ProtocolVersion::V5, "v5"),
    ] {
        let mut c = WsClient::connect(broker.local_addr(), v, id).await;
        c.send(&Packet::PingReq).await;
        assert_eq!(c.recv().await.packet(), Packet::PingResp);
    }
}

/// Older clients offer `mqttv3.1`; the server accepts and echoes it.
#[tokio::test]
async fn mqttv31_subprotocol_is_echoed() {
    let broker = ws_broker(|_| {}).await;
    let addr = broker.local_addr();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (_, chosen) = ws_open_over(tcp, &format!("ws://{addr}/"), "mqttv3.1")
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some("mqttv3.1"));
}

/// The request path carries no meaning: any path is accepted.
#[tokio::test]
async fn any_request_path_is_accepted() {
    let broker = ws_broker(|_| {}).await;
    let addr = broker.local_addr();
    for path in ["/", "/mqtt", "/some/deep/path?x=1"] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (ws, _) = ws_open_over(tcp, &format!("ws://{addr}{path}"), "mqtt")
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        drop(ws);
    }
}

/// An upgrade without an MQTT subprotocol is refused with a clear HTTP
/// error, not upgraded and left hanging (Mosquitto's libwebsockets build
/// upgrades it and never answers the CONNECT).
#[tokio::test]
async fn upgrade_without_mqtt_subprotocol_gets_400() {
    let broker = ws_broker(|_| {}).await;
    let resp = http(broker.local_addr(), &upgrade_request("")).await;
    assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{resp}");
    assert!(resp.contains("\"mqtt\""), "{resp}");
    let resp = http(
        broker.local_addr(),
        &upgrade_request("Sec-WebSocket-Protocol: chat\r\n"),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    assert_eq!(broker.stats().websocket_errors.get(), 2);
}

/// A plain HTTP request (not an upgrade) on a listener without `http_dir`
/// gets 426 Upgrade Required at once, not a hang.
#[tokio::test]
async fn plain_http_request_gets_426() {
    let broker = ws_broker(|_| {}).await;
    let resp = http(
        broker.local_addr(),
        "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{resp}"
    );
    assert!(resp.contains("MQTT over WebSocket"), "{resp}");
}

/// Something that is not HTTP at all (an MQTT CONNECT sent to the
/// WebSocket port) gets 400 and a close.
#[tokio::test]
async fn raw_mqtt_on_the_websocket_port_gets_400() {
    let broker = ws_broker(|_| {}).await;
    let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();
    let connect = encode(
        &Packet::Connect(connect_packet(ProtocolVersion::V3_1_1, "x", true)),
        ProtocolVersion::V3_1_1,
    );
    s.write_all(&connect).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with(b"HTTP/1.1 400 "), "{out:?}");
}

/// Slowloris: an upgrade request that never ends is answered 408 and closed
/// once the CONNECT timeout runs out (virtual time).
#[tokio::test(start_paused = true)]
async fn slow_upgrade_request_is_closed_after_the_connect_timeout() {
    let broker = ws_broker(|c| c.connect_timeout_secs = 7).await;
    let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();
    let start = tokio::time::Instant::now();
    s.write_all(b"GET /mqtt HTTP/1.1\r\nHost: local")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(7));
    assert!(
        out.starts_with(b"HTTP/1.1 408 "),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(broker.stats().websocket_errors.get(), 1);
}

/// A request head above 8 KiB is refused with 431 without reading on.
#[tokio::test]
async fn oversized_request_head_gets_431() {
    let broker = ws_broker(|_| {}).await;
    let req = format!(
        "GET / HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();
    // The server may close before taking everything; only the answer counts.
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out)).await;
    assert!(
        out.starts_with(b"HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

// --- Framing ---

/// MQTT-6.0.0-2/3: a frame may hold several packets, and a packet may span
/// frames.
#[tokio::test]
async fn packets_may_share_frames_and_span_frames() {
    let broker = ws_broker(|_| {}).await;
    let v = ProtocolVersion::V3_1_1;
    let mut c = WsClient::open(broker.local_addr(), v).await;
    // CONNECT and SUBSCRIBE in one frame.
    let mut both = encode(&Packet::Connect(connect_packet(v, "frames", true)), v);
    let filters = [mqtt_codec::SubscribeFilter {
        filter: "t",
        options: mqtt_codec::SubscriptionOptions::qos(QoS::AtMostOnce),
    }];
    let sub = mqtt_codec::Subscribe {
        pid: pid_(1),
        properties: Properties::EMPTY,
        filters: mqtt_codec::List::from_slice(&filters),
    };
    both.extend(encode(&Packet::Subscribe(sub), v));
    c.ws.send(Message::Binary(both.into())).await.unwrap();
    c.expect_connack(ReasonCode::Success).await;
    assert!(matches!(c.recv().await.packet(), Packet::SubAck(_)));
    // A PUBLISH cut into three frames.
    let p = encode(
        &Packet::Publish(publish("t", b"split payload", QoS::AtMostOnce, 0, false)),
        v,
    );
    for part in [&p[..1], &p[1..5], &p[5..]] {
        c.ws.send(Message::Binary(part.to_vec().into()))
            .await
            .unwrap();
    }
    match c.recv().await.packet() {
        Packet::Publish(got) => assert_eq!(got.payload, b"split payload"),
        other => panic!("{other:?}"),
    }
}

/// MQTT-6.0.0-1: a text frame closes the connection (close code 1003), and
/// other clients are unaffected.
#[tokio::test]
async fn text_frame_closes_with_1003() {
    let broker = ws_broker(|_| {}).await;
    let addr = broker.local_addr();
    let mut other = WsClient::connect(addr, ProtocolVersion::V5, "bystander").await;
    let mut c = WsClient::connect(addr, ProtocolVersion::V5, "texter").await;
    c.ws.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(c.expect_close_code().await, Some(CloseCode::Unsupported));
    assert_eq!(broker.stats().websocket_errors.get(), 1);
    other.send(&Packet::PingReq).await;
    assert_eq!(other.recv().await.packet(), Packet::PingResp);
}

/// The WebSocket message size is capped by `max_packet_size`: a larger
/// message closes the connection with 1009 (Message Too Big).
#[tokio::test]
async fn message_larger_than_max_packet_size_closes_with_1009() {
    let broker = ws_broker(|c| c.max_packet_size = 1024).await;
    let mut c = WsClient::connect(broker.local_addr(), ProtocolVersion::V5, "big").await;
    c.ws.send(Message::Binary(vec![0x30; 2000].into()))
        .await
        .unwrap();
    assert_eq!(c.expect_close_code().await, Some(CloseCode::Size));
    assert_eq!(broker.stats().websocket_errors.get(), 1);
}

/// An oversized MQTT packet inside an allowed message is refused from its
/// header as on TCP (MQTT 5: DISCONNECT 0x95).
#[tokio::test]
async fn oversized_packet_is_refused_as_on_tcp() {
    let broker = ws_broker(|c| c.max_packet_size = 1024).await;
    let mut c = WsClient::connect(broker.local_addr(), ProtocolVersion::V5, "big").await;
    // A PUBLISH header announcing 2000 bytes, in a small frame.
    c.ws.send(Message::Binary(vec![0x30, 0xd0, 0x0f].into()))
        .await
        .unwrap();
    match c.recv().await.packet() {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::PacketTooLarge),
        other => panic!("{other:?}"),
    }
}

/// RFC 6455 section 5.5.2: a ping is answered with a pong carrying the same
/// data.
#[tokio::test]
async fn ping_frame_is_answered_with_pong() {
    let broker = ws_broker(|_| {}).await;
    let mut c = WsClient::connect(broker.local_addr(), ProtocolVersion::V3_1_1, "pinger").await;
    c.ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(Ok(Message::Pong(p))) = c.ws.next().await {
                return p;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(&pong[..], b"are you there");
}

/// A close frame without DISCONNECT is answered with a close frame, and,
/// like a network close on TCP, publishes the will [MQTT-3.1.2-8].
#[tokio::test]
async fn close_frame_is_echoed_and_publishes_the_will() {
    let broker = tcp_and_ws_broker().await;
    let (tcp, ws) = (broker.local_addrs()[0], broker.local_addrs()[1]);
    let mut watcher = RawClient::connect(tcp, ProtocolVersion::V3_1_1, "watcher").await;
    watcher.subscribe(1, "wills/#", QoS::AtMostOnce).await;
    let v = ProtocolVersion::V3_1_1;
    let mut c = WsClient::open(ws, v).await;
    let connect = mqtt_codec::Connect {
        will: Some(LastWill {
            topic: "wills/browser",
            payload: b"gone",
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::EMPTY,
        }),
        ..connect_packet(v, "browser", true)
    };
    c.send(&Packet::Connect(connect)).await;
    c.expect_connack(ReasonCode::Success).await;
    c.ws.close(None).await.unwrap();
    // The server's answering close ends the stream cleanly.
    let end = tokio::time::timeout(TIMEOUT, c.ws.next()).await.unwrap();
    assert!(matches!(end, None | Some(Ok(Message::Close(_)))), "{end:?}");
    match watcher.recv().await.packet() {
        Packet::Publish(p) => assert_eq!((p.topic, p.payload), ("wills/browser", &b"gone"[..])),
        other => panic!("{other:?}"),
    }
}

/// A frame cut short by the end of the connection closes the connection
/// cleanly; it is counted, and other clients are unaffected.
#[tokio::test]
async fn truncated_frame_closes_the_connection() {
    let broker = ws_broker(|_| {}).await;
    let addr = broker.local_addr();
    let mut other = WsClient::connect(addr, ProtocolVersion::V3_1_1, "other").await;
    let mut s = raw_upgrade(addr).await;
    let frame = client_frame(0x2, &[0x10; 100]);
    s.write_all(&frame[..30]).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out))
        .await
        .expect("the server closes")
        .unwrap();
    eventually("the truncated frame counted", || {
        broker.stats().websocket_errors.get() == 1
    })
    .await;
    other.send(&Packet::PingReq).await;
    assert_eq!(other.recv().await.packet(), Packet::PingResp);
}

/// RFC 6455 section 5.1: a client frame must be masked; an unmasked one is
/// a protocol error (close code 1002).
#[tokio::test]
async fn unmasked_client_frame_closes_with_1002() {
    let broker = ws_broker(|_| {}).await;
    let mut s = raw_upgrade(broker.local_addr()).await;
    s.write_all(&[0x82, 0x02, 0xc0, 0x00]).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out))
        .await
        .expect("the server closes")
        .unwrap();
    // An unmasked server close frame: 0x88, length, then the code.
    assert!(out.len() >= 4 && out[0] == 0x88, "{out:02x?}");
    assert_eq!(u16::from_be_bytes([out[2], out[3]]), 1002);
}

// --- Same code path as TCP ---

/// Messages cross between TCP and WebSocket clients in both directions.
#[tokio::test]
async fn messages_cross_between_tcp_and_websocket() {
    let broker = tcp_and_ws_broker().await;
    let (tcp, ws) = (broker.local_addrs()[0], broker.local_addrs()[1]);
    let mut t = RawClient::connect(tcp, ProtocolVersion::V5, "tcp").await;
    t.subscribe(1, "room_temp", QoS::AtLeastOnce).await;
    let mut w = WsClient::connect(ws, ProtocolVersion::V5, "ws").await;
    let filters = [mqtt_codec::SubscribeFilter {
        filter: "cmd",
        options: mqtt_codec::SubscriptionOptions::qos(QoS::AtLeastOnce),
    }];
    let sub = mqtt_codec::Subscribe {
        pid: pid_(1),
        properties: Properties::EMPTY,
        filters: mqtt_codec::List::from_slice(&filters),
    };
    w.send(&Packet::Subscribe(sub)).await;
    assert!(matches!(w.recv().await.packet(), Packet::SubAck(_)));

    w.send(&Packet::Publish(publish(
        "room_temp",
        b"21.5",
        QoS::AtLeastOnce,
        7,
        false,
    )))
    .await;
    assert!(matches!(w.recv().await.packet(), Packet::PubAck(a) if a.pid == pid_(7)));
    match t.recv().await.packet() {
        Packet::Publish(p) => assert_eq!((p.topic, p.payload), ("room_temp", &b"21.5"[..])),
        other => panic!("{other:?}"),
    }

    t.send(&Packet::Publish(publish(
        "cmd",
        b"on",
        QoS::AtMostOnce,
        0,
        false,
    )))
    .await;
    match w.recv().await.packet() {
        Packet::Publish(p) => assert_eq!((p.topic, p.payload), ("cmd", &b"on"[..])),
        other => panic!("{other:?}"),
    }
}

/// Authentication is the TCP code path: a listener that refuses anonymous
/// clients refuses them over WebSocket too (CONNACK 0x87).
#[tokio::test]
async fn anonymous_client_is_refused_when_the_listener_requires_a_user() {
    let broker = ws_broker(|c| c.listeners[0].allow_anonymous = Some(false)).await;
    let mut c = WsClient::open(broker.local_addr(), ProtocolVersion::V5).await;
    c.send(&Packet::Connect(connect_packet(
        ProtocolVersion::V5,
        "anon",
        true,
    )))
    .await;
    c.expect_connack(ReasonCode::NotAuthorized).await;
}

/// wss: the same listener behind TLS (`[listeners.tls]`).
#[tokio::test]
async fn wss_listener_carries_mqtt() {
    let dir = Scratch::new("wss");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_file = dir.write("server.crt", cert.pem().as_bytes());
    let key_file = dir.write("server.key", key.serialize_pem().as_bytes());
    let broker = ws_broker(|c| {
        c.listeners[0].tls = Some(mqtt_broker::config::TlsListenerConfig {
            cert_file,
            key_file,
            ca_file: None,
            require_certificate: false,
            use_identity_as_username: false,
        })
    })
    .await;

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(broker.local_addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/mqtt", broker.local_addr().port());
    let (ws, chosen) = ws_open_over(tls, &url, "mqtt").await.unwrap();
    assert_eq!(chosen.as_deref(), Some("mqtt"));
    let v = ProtocolVersion::V5;
    let mut c = WsClient {
        ws,
        version: v,
        buf: BytesMut::new(),
    };
    c.send(&Packet::Connect(connect_packet(v, "secure", true)))
        .await;
    c.expect_connack(ReasonCode::Success).await;
    c.send(&Packet::PingReq).await;
    assert_eq!(c.recv().await.packet(), Packet::PingResp);
}

// --- http_dir ---

/// A scratch folder, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "mqtt-ws-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A folder `site/` with files, a secret next to it, and a symbolic link
/// from inside the site to the secret.
async fn site_broker(tag: &str) -> (BrokerHandle, Scratch) {
    let dir = Scratch::new(tag);
    dir.write("site/index.html", b"<h1>dashboard</h1>");
    dir.write("site/js/app.js", b"console.log(1)");
    dir.write("site/data.json", b"{}");
    dir.write("secret.txt", b"TOP SECRET");
    std::os::unix::fs::symlink(dir.0.join("secret.txt"), dir.0.join("site/leak.txt")).unwrap();
    let site = dir.0.join("site");
    let broker = ws_broker(|c| c.listeners[0].http_dir = Some(site)).await;
    (broker, dir)
}

async fn get(addr: SocketAddr, path: &str) -> String {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    )
    .await
}

/// `http_dir` serves files with their content type; `/` is `index.html`.
#[tokio::test]
async fn http_dir_serves_files_with_content_types() {
    let (broker, _dir) = site_broker("types").await;
    let addr = broker.local_addr();
    let index = get(addr, "/").await;
    assert!(index.starts_with("HTTP/1.1 200 OK\r\n"), "{index}");
    assert!(index.contains("Content-Type: text/html; charset=utf-8\r\n"));
    assert!(index.contains("Content-Length: 18\r\n"));
    assert!(index.ends_with("\r\n\r\n<h1>dashboard</h1>"));
    let js = get(addr, "/js/app.js?v=2").await;
    assert!(
        js.contains("Content-Type: text/javascript; charset=utf-8\r\n"),
        "{js}"
    );
    assert!(js.ends_with("console.log(1)"));
    let json = get(addr, "/data.json").await;
    assert!(
        json.contains("Content-Type: application/json\r\n"),
        "{json}"
    );
    let missing = get(addr, "/nope.html").await;
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
}

/// Nothing outside `http_dir` can be read: `..`, its percent-encoded forms
/// and a symbolic link that leads out are all refused.
#[tokio::test]
async fn http_dir_refuses_paths_that_leave_it() {
    let (broker, _dir) = site_broker("traversal").await;
    let addr = broker.local_addr();
    for path in [
        "/../secret.txt",
        "/js/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/js/..%2f..%2fsecret.txt",
        "/leak.txt",
        "/..\\secret.txt",
    ] {
        let resp = get(addr, path).await;
        assert!(
            resp.starts_with("HTTP/1.1 403 ")
                || resp.starts_with("HTTP/1.1 400 ")
                || resp.starts_with("HTTP/1.1 404 "),
            "{path}: {resp}"
        );
        assert!(!resp.contains("TOP SECRET"), "{path} leaked: {resp}");
    }
    assert!(get(addr, "/leak.txt").await.starts_with("HTTP/1.1 403 "));
    assert!(get(addr, "/%2e%2e/secret.txt")
        .await
        .starts_with("HTTP/1.1 403 "));
}

/// Only GET and HEAD are served; HEAD sends the headers without the body.
#[tokio::test]
async fn http_dir_allows_get_and_head_only() {
    let (broker, _dir) = site_broker("methods").await;
    let addr = broker.local_addr();
    let post = http(
        addr,
        "POST /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    let head = http(addr, "HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Length: 18\r\n"));
    assert!(head.ends_with("\r\n\r\n"), "{head}");
}

/// A listener with `http_dir` still upgrades WebSocket requests on the same
/// port.
#[tokio::test]
async fn http_dir_listener_still_upgrades() {
    let (broker, _dir) = site_broker("upgrade").await;
    let mut c = WsClient::connect(broker.local_addr(), ProtocolVersion::V5, "both").await;
    c.send(&Packet::PingReq).await;
    assert_eq!(c.recv().await.packet(), Packet::PingResp);
}

/// `http_dir` on a plain MQTT listener is a configuration error, and a
/// missing folder stops the broker from starting.
#[tokio::test]
async fn http_dir_needs_a_websocket_listener_and_an_existing_folder() {
    let err = Config::from_toml("[[listeners]]\nbind = \"127.0.0.1:0\"\nhttp_dir = \"/tmp\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("websockets"), "{err}");
    let mut config = Config::ephemeral();
    config.listeners = vec![ListenerConfig {
        protocol: ListenerProtocol::Websockets,
        http_dir: Some("/nonexistent/folder".into()),
        ..config.listeners[0].clone()
    }];
    let err = mqtt_broker::Broker::start(config).await.err().unwrap();
    assert!(err.to_string().contains("http_dir"), "{err}");
}

/// The TOML keys are Mosquitto's words.
#[test]
fn websocket_listener_parses_from_toml() {
    let c = Config::from_toml(
        "[[listeners]]\nbind = \"127.0.0.1:9001\"\nprotocol = \"websockets\"\nhttp_dir = \"www\"\n",
    )
    .unwrap();
    assert_eq!(c.listeners[0].protocol, ListenerProtocol::Websockets);
    assert_eq!(
        c.listeners[0].http_dir.as_deref(),
        Some(std::path::Path::new("www"))
    );
}

/// Keep alive is the TCP code path too: a WebSocket client silent for 1.5 x
/// its keep alive is disconnected (MQTT 5: 0x8D) [MQTT-3.1.2-24]. Real
/// time, as in keepalive.rs: the broker's keep alive runs on the system
/// clock.
#[tokio::test]
async fn silent_websocket_client_is_disconnected_after_one_and_a_half_keep_alives() {
    let broker = ws_broker(|_| {}).await;
    let v = ProtocolVersion::V5;
    let mut c = WsClient::open(broker.local_addr(), v).await;
    let connect = mqtt_codec::Connect {
        keep_alive: 1,
        ..connect_packet(v, "quiet", true)
    };
    let start = std::time::Instant::now();
    c.send(&Packet::Connect(connect)).await;
    c.expect_connack(ReasonCode::Success).await;
    match c.recv().await.packet() {
        Packet::Disconnect(d) => assert_eq!(d.reason, ReasonCode::KeepAliveTimeout),
        other => panic!("{other:?}"),
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

/// The commented-out WebSocket listeners of the example file, uncommented,
/// parse into what they say.
#[test]
fn example_config_websocket_listeners_parse() {
    let text = include_str!("../mqtt-broker.example.toml");
    let start = text
        .find("# --- WebSocket listeners")
        .expect("WebSocket example");
    let start = start
        + text[start..]
            .find("# [[listeners]]")
            .expect("listener table");
    let end = start + text[start..].find("\n\n").expect("end of the block");
    let block: String = text[start..end]
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    let config = Config::from_toml(&block).expect("WebSocket example parses");
    assert_eq!(config.listeners.len(), 2);
    assert!(config
        .listeners
        .iter()
        .all(|l| l.protocol == ListenerProtocol::Websockets));
    assert_eq!(
        config.listeners[0].http_dir.as_deref(),
        Some(std::path::Path::new("examples/web"))
    );
    assert!(config.listeners[1].tls.is_some());
}
