//! Arbitrary bytes on a broker connection. One broker runs for the whole
//! process (on one tokio runtime, both started once). Each input opens a
//! fresh TCP connection and sends a valid CONNECT — MQTT 3.1.1 when the
//! input's first byte is even, 5.0 when it is odd — followed by the rest of
//! the input, raw; then closes its sending side and reads until the broker
//! closes the connection (or a short timeout). Then:
//!
//! - everything the broker sent must decode, starting with a successful
//!   CONNACK, with no partial packet before the close;
//! - a separate well-behaved client must still be able to connect,
//!   subscribe and receive its own publish.
//!
//! Any failure panics, which libFuzzer reports as a crash. Every wait is
//! bounded. The broker's configuration is `Config::ephemeral()` with
//! `max_packet_size` 65536, as in mqtt-broker/tests/malformed_corpus.rs,
//! which replays the seed corpus.
#![no_main]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mqtt_broker::{Broker, Config};
use mqtt_codec::{
    decode, Connect, DecodeOptions, Disconnect, List, Packet, Pid, Properties, ProtocolVersion,
    PubResp, Publish, QoS, QosPid, ReasonCode, RetainHandling, Status, Subscribe, SubscribeFilter,
    SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// How long the hostile connection's write and read may take.
const HOSTILE_WAIT: Duration = Duration::from_secs(2);
/// How long the well-behaved client's whole exchange may take.
const CHECK_WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    runtime: Runtime,
    addr: SocketAddr,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let config = Config {
            max_packet_size: 65536,
            ..Config::ephemeral()
        };
        let broker = runtime
            .block_on(Broker::start(config))
            .expect("broker starts");
        let addr = broker.local_addr();
        // The broker serves until the process ends.
        std::mem::forget(broker);
        Fixture { runtime, addr }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let version = if selector % 2 == 0 {
        ProtocolVersion::V3_1_1
    } else {
        ProtocolVersion::V5
    };
    let f = fixture();
    f.runtime.block_on(async {
        hostile(f.addr, version, rest).await;
        tokio::time::timeout(CHECK_WAIT, still_serving(f.addr, version))
            .await
            .expect("the broker stopped serving a well-behaved client");
    });
});

fn encode(version: ProtocolVersion, packet: &Packet<'_>) -> Vec<u8> {
    let mut out = vec![0u8; packet.encoded_len(version).expect("encodable")];
    packet.encode(version, &mut out).expect("encodes");
    out
}

fn connect(version: ProtocolVersion, client_id: &str) -> Vec<u8> {
    encode(
        version,
        &Packet::Connect(Connect {
            protocol: version,
            clean_start: true,
            keep_alive: 60,
            properties: Properties::EMPTY,
            client_id,
            will: None,
            username: None,
            password: None,
        }),
    )
}

/// Sends CONNECT and `rest`, half-closes, and reads until the broker
/// closes; checks what came back.
async fn hostile(addr: SocketAddr, version: ProtocolVersion, rest: &[u8]) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // Small writes must not wait for the broker's delayed ACK.
    let _ = stream.set_nodelay(true);
    let mut bytes = connect(version, "fuzz");
    bytes.extend_from_slice(rest);
    // The broker may close before reading everything: a failed write is fine.
    let _ = tokio::time::timeout(HOSTILE_WAIT, stream.write_all(&bytes)).await;
    let _ = stream.shutdown().await;
    let mut got = Vec::new();
    let mut clean_close = false;
    let _ = tokio::time::timeout(HOSTILE_WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => {
                    clean_close = true;
                    return;
                }
                // Reset: the broker closed with input left unread, and
                // what it sent last may be lost.
                Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    check_output(&got, version, clean_close);
}

/// Everything the broker sends decodes, and the first packet is a
/// successful CONNACK (the CONNECT is valid). After a clean close (FIN, not
/// a reset or a timeout), the output must be complete: a CONNACK at least,
/// and no partial packet at the end.
fn check_output(mut got: &[u8], version: ProtocolVersion, clean_close: bool) {
    let opts = DecodeOptions::new(version);
    let mut first = true;
    while !got.is_empty() {
        match decode(got, &opts) {
            Ok(Status::Complete((packet, used))) => {
                if first {
                    match packet {
                        Packet::ConnAck(a) => assert_eq!(a.reason, ReasonCode::Success),
                        p => panic!("first packet is not CONNACK: {p:?}"),
                    }
                    first = false;
                }
                got = &got[used..];
            }
            Ok(Status::Partial(_)) => {
                assert!(
                    !clean_close,
                    "the broker closed in the middle of a packet: {got:02x?}"
                );
                return;
            }
            Err(e) => panic!("the broker sent a malformed packet: {e} {got:02x?}"),
        }
    }
    assert!(!(first && clean_close), "closed without a CONNACK");
}

/// Reads packets from `stream` into `buf`, returning the next one's bytes.
async fn next_packet(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    version: ProtocolVersion,
) -> Vec<u8> {
    let opts = DecodeOptions::new(version);
    loop {
        match decode(buf, &opts) {
            Ok(Status::Complete((_, used))) => return buf.drain(..used).collect(),
            Ok(Status::Partial(_)) => {}
            Err(e) => panic!("the broker sent a malformed packet: {e} {buf:02x?}"),
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) => panic!("the broker closed a well-behaved client's connection"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// One whole packet, as `next_packet` returned it.
fn decode_one(bytes: &[u8], version: ProtocolVersion) -> Packet<'_> {
    match decode(bytes, &DecodeOptions::new(version)) {
        Ok(Status::Complete((p, _))) => p,
        other => panic!("{other:?}"),
    }
}

/// A well-behaved client connects, subscribes, publishes at QoS 1 and
/// receives its own message. Retained messages earlier inputs left on the
/// topic are skipped (5.0 does not ask for them).
async fn still_serving(addr: SocketAddr, version: ProtocolVersion) {
    static N: AtomicU64 = AtomicU64::new(0);
    let payload = format!("alive {}", N.fetch_add(1, Ordering::Relaxed));
    let topic = "fuzz/check";
    let pid = Pid::new(1).unwrap();

    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // Small writes must not wait for the broker's delayed ACK.
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    stream
        .write_all(&connect(version, "fuzz-check"))
        .await
        .expect("write");
    let ack = next_packet(&mut stream, &mut buf, version).await;
    match decode_one(&ack, version) {
        Packet::ConnAck(a) => assert_eq!(a.reason, ReasonCode::Success, "CONNACK"),
        p => panic!("expected CONNACK, got {p:?}"),
    }

    let filters = [SubscribeFilter {
        filter: topic,
        options: SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            // 3.1.1 cannot say so: retained messages are skipped below.
            retain_handling: if version.is_v5() {
                RetainHandling::DoNotSend
            } else {
                RetainHandling::SendOnSubscribe
            },
            ..SubscriptionOptions::default()
        },
    }];
    let subscribe = Packet::Subscribe(Subscribe {
        pid,
        properties: Properties::EMPTY,
        filters: List::from_slice(&filters),
    });
    stream
        .write_all(&encode(version, &subscribe))
        .await
        .expect("write");
    let publish = Packet::Publish(Publish {
        dup: false,
        qos_pid: QosPid::AtLeastOnce(pid),
        retain: false,
        topic,
        properties: Properties::EMPTY,
        payload: payload.as_bytes(),
    });
    stream
        .write_all(&encode(version, &publish))
        .await
        .expect("write");

    let (mut subacked, mut acked, mut received) = (false, false, false);
    while !(subacked && acked && received) {
        let bytes = next_packet(&mut stream, &mut buf, version).await;
        match decode_one(&bytes, version) {
            Packet::SubAck(a) => {
                assert!(!subacked && a.pid == pid, "SUBACK {a:?}");
                assert_eq!(
                    a.codes.iter().collect::<Vec<_>>(),
                    [ReasonCode::GrantedQoS1]
                );
                subacked = true;
            }
            Packet::PubAck(a) => {
                assert!(!acked && a.pid == pid, "PUBACK {a:?}");
                assert_eq!(a.reason, ReasonCode::Success);
                acked = true;
            }
            Packet::Publish(p) => {
                if p.payload == payload.as_bytes() {
                    assert!(subacked && !received, "own message out of order");
                    received = true;
                }
                // Acknowledge everything, ours and any retained message.
                if let Some(id) = p.qos_pid.pid() {
                    let ack = match p.qos_pid.qos() {
                        QoS::AtLeastOnce => Packet::PubAck(PubResp::new(id)),
                        _ => Packet::PubRec(PubResp::new(id)),
                    };
                    stream
                        .write_all(&encode(version, &ack))
                        .await
                        .expect("write");
                }
            }
            Packet::PubRel(r) => {
                let comp = Packet::PubComp(PubResp::new(r.pid));
                stream
                    .write_all(&encode(version, &comp))
                    .await
                    .expect("write");
            }
            p => panic!("unexpected packet for a well-behaved client: {p:?}"),
        }
    }
    let bye = encode(version, &Packet::Disconnect(Disconnect::NORMAL));
    stream.write_all(&bye).await.expect("write");
    // Wait for the close, so that connections do not pile up.
    let mut rest = [0u8; 256];
    while let Ok(n) = stream.read(&mut rest).await {
        if n == 0 {
            break;
        }
    }
}
