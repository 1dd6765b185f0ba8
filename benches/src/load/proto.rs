//! MQTT 3.1.1 over tokio TCP (or WebSocket, `ws.rs`) with `mqtt-codec`: connecting, subscribing,
//! and a pre-encoded PUBLISH template that is copied and patched per
//! message instead of encoded from scratch.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use mqtt_codec::{
    decode, Connect, DecodeOptions, List, Packet, Pid, Properties, ProtocolVersion, Publish, QoS,
    QosPid, Status, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The protocol the generator speaks.
pub const VERSION: ProtocolVersion = ProtocolVersion::V3_1_1;

/// Decoder options for packets from the broker.
pub const OPTS: DecodeOptions = DecodeOptions::new(VERSION);

/// Bytes asked for on each read.
pub const READ_CHUNK: usize = 64 * 1024;

/// Appends the encoding of `packet` to `out`.
pub fn push(out: &mut Vec<u8>, packet: &Packet<'_>) {
    let n = packet
        .encoded_len(VERSION)
        .expect("the generator builds valid packets");
    let start = out.len();
    out.resize(start + n, 0);
    packet
        .encode(VERSION, &mut out[start..])
        .expect("the length was computed");
}

/// Appends a PUBACK, PUBREC, PUBREL or PUBCOMP for `pid` (4 bytes).
#[inline]
pub fn push_ack(out: &mut Vec<u8>, first_byte: u8, pid: u16) {
    let [hi, lo] = pid.to_be_bytes();
    out.extend_from_slice(&[first_byte, 2, hi, lo]);
}

/// First bytes of the acknowledgements.
pub const PUBACK: u8 = 0x40;
/// PUBREC.
pub const PUBREC: u8 = 0x50;
/// PUBREL (its flags are 0010).
pub const PUBREL: u8 = 0x62;
/// PUBCOMP.
pub const PUBCOMP: u8 = 0x70;
/// PINGREQ, whole.
pub const PINGREQ: [u8; 2] = [0xc0, 0];
/// DISCONNECT, whole.
pub const DISCONNECT: [u8; 2] = [0xe0, 0];

/// An established connection: both halves and what was read past CONNACK
/// (or SUBACK).
pub struct Conn {
    /// Read half.
    pub rd: super::ws::Rd,
    /// Write half.
    pub wr: super::ws::Wr,
    /// Bytes read but not consumed yet.
    pub buf: BytesMut,
}

fn proto_err(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Conn {
    /// Opens a TCP connection, sends CONNECT and waits for a successful
    /// CONNACK.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        keep_alive: u16,
        clean_start: bool,
        timeout: Duration,
    ) -> io::Result<Conn> {
        let fut = async {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (rd, wr) = super::ws::open(stream, addr).await?;
            let mut conn = Conn {
                rd,
                wr,
                buf: BytesMut::with_capacity(256),
            };
            let mut out = Vec::with_capacity(64);
            push(
                &mut out,
                &Packet::Connect(Connect {
                    protocol: VERSION,
                    clean_start,
                    keep_alive,
                    properties: Properties::EMPTY,
                    client_id,
                    will: None,
                    username: None,
                    password: None,
                }),
            );
            conn.wr.write_all(&out).await?;
            conn.expect(|p| match p {
                Packet::ConnAck(c) if c.reason.is_error() => {
                    Some(Err(proto_err(format!("CONNACK refused: {:?}", c.reason))))
                }
                Packet::ConnAck(_) => Some(Ok(())),
                _ => None,
            })
            .await?;
            Ok(conn)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "CONNECT timed out"))?
    }

    /// Subscribes to one filter and waits for a SUBACK that grants it.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS, timeout: Duration) -> io::Result<()> {
        let entries = [SubscribeFilter {
            filter,
            options: SubscriptionOptions::qos(qos),
        }];
        let mut out = Vec::with_capacity(64);
        push(
            &mut out,
            &Packet::Subscribe(Subscribe {
                pid: Pid::new(1).expect("nonzero"),
                properties: Properties::EMPTY,
                filters: List::from_slice(&entries),
            }),
        );
        let fut = async {
            self.wr.write_all(&out).await?;
            self.expect(|p| match p {
                Packet::SubAck(s) => Some(match s.codes.iter().next() {
                    Some(code) if code.as_u8() < 0x80 => Ok(()),
                    code => Err(proto_err(format!("SUBACK refused {filter}: {code:?}"))),
                }),
                _ => None,
            })
            .await
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "SUBSCRIBE timed out"))?
    }

    /// Reads packets until `want` returns `Some`; other packets are skipped.
    async fn expect<T>(
        &mut self,
        mut want: impl FnMut(&Packet<'_>) -> Option<io::Result<T>>,
    ) -> io::Result<T> {
        loop {
            let step = match decode(&self.buf, &OPTS) {
                Ok(Status::Complete((packet, used))) => Some((want(&packet), used)),
                Ok(Status::Partial(_)) => None,
                Err(e) => return Err(proto_err(format!("bad packet from the broker: {e}"))),
            };
            match step {
                Some((Some(result), used)) => {
                    self.buf.advance(used);
                    return result;
                }
                Some((None, used)) => self.buf.advance(used),
                None => {
                    self.buf.reserve(4096);
                    if self.rd.read_buf(&mut self.buf).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
            }
        }
    }

    /// Waits up to `timeout` for the first PUBLISH and returns its payload.
    pub async fn next_payload(&mut self, timeout: Duration) -> io::Result<Vec<u8>> {
        tokio::time::timeout(
            timeout,
            self.expect(|p| match p {
                Packet::Publish(p) => Some(Ok(p.payload.to_vec())),
                _ => None,
            }),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no PUBLISH"))?
    }
}

/// A PUBLISH encoded once; each message copies it and patches the packet
/// identifier and the payload header.
pub struct PublishTemplate {
    bytes: Vec<u8>,
    pid_at: Option<usize>,
    payload_at: usize,
}

impl PublishTemplate {
    /// A PUBLISH of `payload_len` bytes to `topic` at `qos`.
    pub fn new(topic: &str, qos: QoS, payload_len: usize) -> PublishTemplate {
        let payload = vec![0x5a; payload_len];
        let pid = Pid::new(1).expect("nonzero");
        let publish = Publish {
            qos_pid: QosPid::from_qos(qos, pid),
            ..Publish::new(topic, &payload)
        };
        let mut bytes = Vec::new();
        push(&mut bytes, &Packet::Publish(publish));
        let payload_at = bytes.len() - payload_len;
        // The identifier sits right before the payload in 3.1.1.
        let pid_at = (qos != QoS::AtMostOnce).then(|| payload_at - 2);
        PublishTemplate {
            bytes,
            pid_at,
            payload_at,
        }
    }

    /// Bytes of one message.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a PUBLISH has a header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends one message with packet identifier `pid` (ignored at QoS 0);
    /// returns the payload's range in `out` for the caller to stamp.
    #[inline]
    pub fn push(&self, out: &mut Vec<u8>, pid: u16) -> std::ops::Range<usize> {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        if let Some(at) = self.pid_at {
            out[start + at..start + at + 2].copy_from_slice(&pid.to_be_bytes());
        }
        start + self.payload_at..out.len()
    }
}

/// Acknowledgement replies a QoS 1/2 subscriber owes.
pub fn ack_for(qos_pid: QosPid) -> Option<(u8, u16)> {
    match qos_pid {
        QosPid::AtMostOnce => None,
        QosPid::AtLeastOnce(pid) => Some((PUBACK, pid.get())),
        QosPid::ExactlyOnce(pid) => Some((PUBREC, pid.get())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_patches_pid_and_payload() {
        let t = PublishTemplate::new("bench/1", QoS::AtLeastOnce, 32);
        let mut out = Vec::new();
        let range = t.push(&mut out, 0x1234);
        out[range.clone()][..4].copy_from_slice(b"abcd");
        let Ok(Status::Complete((Packet::Publish(p), used))) = decode(&out, &OPTS) else {
            panic!("not a PUBLISH");
        };
        assert_eq!(used, out.len());
        assert_eq!(p.topic, "bench/1");
        assert_eq!(p.qos_pid.pid().map(|p| p.get()), Some(0x1234));
        assert_eq!(&p.payload[..4], b"abcd");
        assert_eq!(p.payload.len(), 32);

        let t0 = PublishTemplate::new("t", QoS::AtMostOnce, 20);
        let mut out = Vec::new();
        t0.push(&mut out, 9);
        let Ok(Status::Complete((Packet::Publish(p), _))) = decode(&out, &OPTS) else {
            panic!("not a PUBLISH");
        };
        assert_eq!(p.qos_pid, QosPid::AtMostOnce);
        assert_eq!(p.payload.len(), 20);
    }
}
