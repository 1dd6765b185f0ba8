//! Shared test harness: our broker in-process on an ephemeral port, client
//! options pointing at it, bounded waits, and a scripted fake server that
//! speaks raw packets built with `mqtt-codec` for the cases a real broker
//! cannot be made to produce on demand.
#![allow(dead_code)]

pub mod cli;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_broker::{Broker, BrokerHandle, Config};
use mqtt_client::{Client, ConnectOptions, Message, Messages, ProtocolVersion};
use mqtt_codec::{
    check_header, decode_body, ConnAck, Connect, Packet, Properties, ReasonCode, Status,
    MAX_PACKET_SIZE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long any single expected event may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Both protocol versions the client speaks.
pub const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V3_1_1, ProtocolVersion::V5];

/// Starts a broker with the test configuration (ephemeral port, `$SYS` off).
pub async fn broker() -> BrokerHandle {
    broker_with(Config::ephemeral()).await
}

/// Starts a broker with `config`.
pub async fn broker_with(config: Config) -> BrokerHandle {
    Broker::start(config).await.expect("broker starts")
}

/// Starts a broker on a given address (to restart one on the same port).
/// The old listener may linger for a moment on some systems: retry briefly.
pub async fn broker_on(addr: SocketAddr) -> BrokerHandle {
    broker_on_with(addr, Config::ephemeral()).await
}

/// Like [`broker_on`], with a configuration (its listener address is set).
pub async fn broker_on_with(addr: SocketAddr, mut config: Config) -> BrokerHandle {
    config.listeners[0].bind = addr;
    within("rebinding the port", async {
        loop {
            match Broker::start(config.clone()).await {
                Ok(b) => return b,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    tokio::task::yield_now().await
                }
                Err(e) => panic!("broker on {addr}: {e}"),
            }
        }
    })
    .await
}

/// Options for a client of `addr`.
pub fn opts(addr: SocketAddr, version: ProtocolVersion, id: &str) -> ConnectOptions {
    ConnectOptions::new(addr.ip().to_string(), addr.port())
        .version(version)
        .client_id(id)
}

/// Connects, panicking on failure.
pub async fn connect(o: ConnectOptions) -> (Client, Messages) {
    within("connect", Client::connect(o))
        .await
        .expect("client connects")
}

/// Runs `f`, failing the test if it takes longer than `TIMEOUT`.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    within_for(TIMEOUT, what, f).await
}

/// Runs `f`, failing the test if it takes longer than `d`.
pub async fn within_for<T>(d: Duration, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(d, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {d:?}: {what}"),
    }
}

/// The next message, within `TIMEOUT`.
pub async fn next(messages: &mut Messages) -> Message {
    within("waiting for a message", messages.recv())
        .await
        .expect("message stream ended")
}

/// Waits until `cond` holds, checking after every scheduler turn and every
/// few milliseconds. For states that have no notification of their own
/// (e.g. "the client noticed the connection is gone").
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
}

/// A fake server: accepts connections and exchanges raw packets, so a test
/// can script exactly what the client sees.
pub struct FakeServer {
    listener: TcpListener,
}

impl FakeServer {
    pub async fn start() -> FakeServer {
        FakeServer {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// Accepts the next connection and reads its CONNECT (raw bytes kept).
    pub async fn accept(&self) -> (RawConn, Vec<u8>) {
        let (stream, _) = within("fake server accept", self.listener.accept())
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let mut conn = RawConn {
            stream,
            version: ProtocolVersion::V5,
            buf: BytesMut::new(),
        };
        let frame = conn.recv_frame().await.expect("CONNECT");
        // CONNECT carries its own version.
        let version = match decode_body(
            mqtt_codec::PacketType::Connect,
            0,
            &frame[header_len(&frame)..],
            ProtocolVersion::V5,
        ) {
            Ok(Packet::Connect(c)) => c.protocol,
            other => panic!("expected CONNECT, got {other:?}"),
        };
        conn.version = version;
        (conn, frame)
    }
}

fn header_len(frame: &[u8]) -> usize {
    match check_header(frame, MAX_PACKET_SIZE) {
        Ok(Status::Complete(h)) => h.header_len,
        other => panic!("bad frame {other:?}"),
    }
}

/// Decodes a CONNECT frame.
pub fn decode_connect(frame: &[u8]) -> Connect<'_> {
    match decode_body(
        mqtt_codec::PacketType::Connect,
        0,
        &frame[header_len(frame)..],
        ProtocolVersion::V5,
    ) {
        Ok(Packet::Connect(c)) => c,
        other => panic!("expected CONNECT, got {other:?}"),
    }
}

/// One raw connection (either side).
pub struct RawConn {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    buf: BytesMut,
}

impl RawConn {
    /// Opens a TCP connection as a client; sends nothing yet.
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> RawConn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        RawConn {
            stream,
            version,
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, packet: &Packet<'_>) {
        let mut buf = vec![0u8; packet.encoded_len(self.version).expect("encodable")];
        packet.encode(self.version, &mut buf).unwrap();
        self.stream.write_all(&buf).await.expect("write");
    }

    /// Sends a CONNACK.
    pub async fn connack(&mut self, session_present: bool, properties: Properties<'_>) {
        self.send(&Packet::ConnAck(ConnAck {
            session_present,
            reason: ReasonCode::Success,
            properties,
        }))
        .await;
    }

    /// The next whole packet's bytes, or `None` once the peer closed.
    pub async fn recv_frame(&mut self) -> Option<Vec<u8>> {
        within("waiting for a packet", async {
            loop {
                if let Ok(Status::Complete(h)) = check_header(&self.buf, MAX_PACKET_SIZE) {
                    if self.buf.len() >= h.packet_len() {
                        return Some(self.buf.split_to(h.packet_len()).to_vec());
                    }
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    /// Receives the next packet and hands it to `f` decoded.
    pub async fn recv_with<T>(&mut self, f: impl FnOnce(Packet<'_>) -> T) -> T {
        let frame = self.recv_frame().await.expect("connection closed");
        let h = match check_header(&frame, MAX_PACKET_SIZE) {
            Ok(Status::Complete(h)) => h,
            other => panic!("bad frame {other:?}"),
        };
        let p = decode_body(h.packet_type, h.flags, &frame[h.header_len..], self.version)
            .expect("decodable packet");
        f(p)
    }

    /// Waits until the peer closes the connection.
    pub async fn expect_close(&mut self) {
        while self.recv_frame().await.is_some() {}
    }
}
