//! The [`Packet`] enum and the two entry points: [`decode`] from a (possibly
//! partial) buffer and [`Packet::encode`] into a caller's buffer.

use crate::connect::{ConnAck, Connect};
use crate::disconnect::{Auth, Disconnect};
use crate::error::{DecodeError, EncodeError};
use crate::header::{check_header, Needed, PacketType, Status, MAX_PACKET_SIZE};
use crate::publish::{PubResp, Publish};
use crate::subscribe::{SubAck, Subscribe, UnsubAck, Unsubscribe};
use crate::types::ProtocolVersion;
use crate::wire::Reader;
use crate::writer::{fixed, packet_len};

/// Any MQTT control packet, borrowing from the buffer it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet<'a> {
    Connect(Connect<'a>),
    ConnAck(ConnAck<'a>),
    Publish(Publish<'a>),
    PubAck(PubResp<'a>),
    PubRec(PubResp<'a>),
    PubRel(PubResp<'a>),
    PubComp(PubResp<'a>),
    Subscribe(Subscribe<'a>),
    SubAck(SubAck<'a>),
    Unsubscribe(Unsubscribe<'a>),
    UnsubAck(UnsubAck<'a>),
    PingReq,
    PingResp,
    Disconnect(Disconnect<'a>),
    Auth(Auth<'a>),
}

/// What the decoder needs to know about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// The negotiated protocol version. CONNECT carries its own and ignores
    /// this; every other packet is read as this version.
    pub version: ProtocolVersion,
    /// The largest packet accepted, fixed header included.
    pub max_packet_size: u32,
}

impl DecodeOptions {
    /// Options for `version` with the protocol's maximum packet size.
    pub const fn new(version: ProtocolVersion) -> Self {
        DecodeOptions {
            version,
            max_packet_size: MAX_PACKET_SIZE,
        }
    }
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions::new(ProtocolVersion::V5)
    }
}

/// Decodes one packet from the start of `buf`.
///
/// `Complete((packet, n))` borrows from `buf` and used its first `n` bytes;
/// `Partial(needed)` asks for more input. Bad types, flags and oversize
/// packets are refused from the header, before the body has arrived.
///
/// ```
/// use mqtt_codec::{decode, DecodeOptions, Packet, ProtocolVersion, Status};
///
/// // A QoS 0 PUBLISH of `22.5` to `room_temp`, arriving in two reads.
/// let wire = [
///     0x30, 0x0f, 0x00, 0x09, b'r', b'o', b'o', b'm', b'_', b't', b'e', b'm', b'p',
///     b'2', b'2', b'.', b'5',
/// ];
/// let opts = DecodeOptions::new(ProtocolVersion::V3_1_1);
/// let mut stream = Vec::new();
/// stream.extend_from_slice(&wire[..6]);
/// assert!(matches!(decode(&stream, &opts), Ok(Status::Partial(_))));
///
/// stream.extend_from_slice(&wire[6..]);
/// let Ok(Status::Complete((Packet::Publish(publish), used))) = decode(&stream, &opts) else {
///     panic!("expected a PUBLISH");
/// };
/// assert_eq!(used, 17);
/// assert_eq!(publish.topic, "room_temp");
/// assert_eq!(publish.payload, b"22.5");
/// ```
pub fn decode<'a>(
    buf: &'a [u8],
    opts: &DecodeOptions,
) -> Result<Status<(Packet<'a>, usize)>, DecodeError> {
    let header = match check_header(buf, opts.max_packet_size)? {
        Status::Complete(h) => h,
        Status::Partial(n) => return Ok(Status::Partial(n)),
    };
    let total = header.packet_len();
    if buf.len() < total {
        return Ok(Status::Partial(Needed::Bytes(total - buf.len())));
    }
    let body = &buf[header.header_len..total];
    let packet = decode_body(header.packet_type, header.flags, body, opts.version)?;
    Ok(Status::Complete((packet, total)))
}

/// Decodes a packet body whose fixed header was already checked.
pub fn decode_body(
    packet_type: PacketType,
    flags: u8,
    body: &[u8],
    version: ProtocolVersion,
) -> Result<Packet<'_>, DecodeError> {
    Ok(match packet_type {
        PacketType::Connect => Packet::Connect(Connect::decode(body)?),
        PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(body, version)?),
        PacketType::Publish => Packet::Publish(Publish::decode(flags, body, version)?),
        PacketType::PubAck => Packet::PubAck(PubResp::decode(packet_type, body, version)?),
        PacketType::PubRec => Packet::PubRec(PubResp::decode(packet_type, body, version)?),
        PacketType::PubRel => Packet::PubRel(PubResp::decode(packet_type, body, version)?),
        PacketType::PubComp => Packet::PubComp(PubResp::decode(packet_type, body, version)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(body, version)?),
        PacketType::SubAck => Packet::SubAck(SubAck::decode(body, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(body, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(body, version)?),
        PacketType::PingReq => {
            Reader::new(body).finish()?;
            Packet::PingReq
        }
        PacketType::PingResp => {
            Reader::new(body).finish()?;
            Packet::PingResp
        }
        PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(body, version)?),
        PacketType::Auth => Packet::Auth(Auth::decode(body, version)?),
    })
}

impl<'a> Packet<'a> {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// The exact number of bytes [`encode`](Packet::encode) writes for this
    /// packet in `version` (CONNECT uses its own version).
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let v5 = version.is_v5();
        // Strings are checked here, in the length pass, since nothing is
        // copied; `encode` checks them as it copies them.
        const SCAN: bool = true;
        let body = match self {
            Packet::Connect(c) => c.body_len::<SCAN>()?.0,
            Packet::ConnAck(c) => c.body_len::<SCAN>(version)?.0,
            Packet::Publish(p) => p.body_len::<SCAN>(version)?.0,
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                r.body_len::<SCAN>(self.packet_type(), version)?.0
            }
            Packet::Subscribe(s) => s.body_len::<SCAN>(version)?.0,
            Packet::SubAck(s) => s.body_len::<SCAN>(version)?.0,
            Packet::Unsubscribe(u) => u.body_len::<SCAN>(version)?.0,
            Packet::UnsubAck(u) if v5 => u.body_len_v5::<SCAN>()?.0,
            Packet::UnsubAck(_) => 2,
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(d) => d.body_len::<SCAN>(version)?.0,
            Packet::Auth(a) => a.body_len::<SCAN>(version)?.0,
        };
        packet_len(body)
    }

    /// Encodes the packet for a connection speaking `version` into `buf` and
    /// returns the bytes written. A CONNECT is encoded in its own
    /// `protocol`. For 3.1 / 3.1.1, fields that version has no place for
    /// (properties, acknowledgement reason codes) are left out.
    ///
    /// ```
    /// use mqtt_codec::{EncodeError, Packet, ProtocolVersion, Publish};
    ///
    /// let packet = Packet::Publish(Publish::new("room_temp", b"22.5"));
    /// let mut small = [0u8; 8];
    /// assert_eq!(
    ///     packet.encode(ProtocolVersion::V3_1_1, &mut small),
    ///     Err(EncodeError::BufferTooSmall { required: 17 })
    /// );
    /// let mut buf = [0u8; 64];
    /// let n = packet.encode(ProtocolVersion::V3_1_1, &mut buf).unwrap();
    /// assert_eq!(&buf[..n], b"\x30\x0f\x00\x09room_temp22.5");
    /// ```
    ///
    /// An invalid packet is refused with the error [`encoded_len`] gives for
    /// it (for a packet with several faults, possibly another of them), and
    /// leaves no bytes of itself in `buf`: strings are checked as they are
    /// copied, and a packet found invalid part-way is zeroed. A buffer too
    /// small for the packet is reported before its strings are checked.
    ///
    /// [`encoded_len`]: Packet::encoded_len
    pub fn encode(&self, version: ProtocolVersion, buf: &mut [u8]) -> Result<usize, EncodeError> {
        // Each type encodes in its own function, so that the short packets do
        // not pay for the registers the long ones need.
        let v5 = version.is_v5();
        match self {
            Packet::Connect(c) => c.encode(buf),
            Packet::ConnAck(c) => c.encode(version, buf),
            Packet::Publish(p) => p.encode(version, buf),
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                r.encode(self.packet_type(), version, buf)
            }
            Packet::Subscribe(s) => s.encode(version, buf),
            Packet::SubAck(s) => s.encode(version, buf),
            Packet::Unsubscribe(u) => u.encode(version, buf),
            Packet::UnsubAck(u) if v5 => u.encode_v5(buf),
            Packet::UnsubAck(u) => {
                let [hi, lo] = u.pid.get().to_be_bytes();
                fixed(buf, [PacketType::UnsubAck.first_byte(), 2, hi, lo])
            }
            Packet::PingReq => fixed(buf, [PacketType::PingReq.first_byte(), 0]),
            Packet::PingResp => fixed(buf, [PacketType::PingResp.first_byte(), 0]),
            Packet::Disconnect(d) if v5 => d.encode_v5(buf),
            Packet::Disconnect(_) => fixed(buf, [PacketType::Disconnect.first_byte(), 0]),
            Packet::Auth(a) => a.encode(version, buf),
        }
    }

    /// Appends the packet to `out`, growing it to fit, if the packet takes
    /// at most `limit` bytes (a peer's Maximum Packet Size, or `usize::MAX`),
    /// and returns the bytes written. A larger packet gets
    /// `BufferTooSmall` with the size it needs, as [`encode`] into a buffer
    /// of `limit` bytes would; the packet is measured once either way. On
    /// an error `out` is left as it was.
    ///
    /// [`encode`]: Packet::encode
    #[cfg(feature = "bytes")]
    #[inline]
    pub fn encode_to(
        &self,
        version: ProtocolVersion,
        out: &mut bytes::BytesMut,
        limit: usize,
    ) -> Result<usize, EncodeError> {
        let len = self.encoded_len(version)?;
        if len > limit {
            return Err(EncodeError::BufferTooSmall { required: len });
        }
        let start = out.len();
        out.resize(start + len, 0);
        let written = self.encode(version, &mut out[start..]);
        if written.is_err() {
            out.truncate(start);
        }
        written
    }
}
