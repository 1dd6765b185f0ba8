//! The fixed header (MQTT section 2.1): packet type, flags and Remaining
//! Length, checked from the first bytes so that a bad or oversize packet is
//! refused before its body is buffered.

use crate::error::DecodeError;
use crate::wire::read_varint;

/// The largest packet the protocol allows: 268,435,455 bytes of body plus a
/// five-byte fixed header.
pub const MAX_PACKET_SIZE: u32 = 268_435_460;

/// The result of decoding from a buffer that may not hold a whole packet yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Status<T> {
    /// Decoded; the value says how many bytes it used where that matters.
    Complete(T),
    /// The buffer ends before the packet does.
    Partial(Needed),
}

impl<T> Status<T> {
    /// The value, if complete.
    pub fn complete(self) -> Option<T> {
        match self {
            Status::Complete(v) => Some(v),
            Status::Partial(_) => None,
        }
    }
}

/// How many more bytes a partial packet needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needed {
    /// The fixed header itself is not complete, so the total is not known yet;
    /// at least one more byte is needed.
    Unknown,
    /// Exactly this many more bytes complete the packet.
    Bytes(usize),
}

/// The control packet types (MQTT section 2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    /// Parses the first byte of a packet, checking the flags each type requires
    /// [MQTT-3.1.1: 2.2.2-1/2]. PUBLISH flags are checked for QoS 3 here too.
    pub fn from_first_byte(byte: u8) -> Result<PacketType, DecodeError> {
        let flags = byte & 0x0f;
        let t = match byte >> 4 {
            0 => return Err(DecodeError::ReservedPacketType),
            1 => PacketType::Connect,
            2 => PacketType::ConnAck,
            3 => {
                if (flags >> 1) & 0b11 == 3 {
                    return Err(DecodeError::InvalidQoS);
                }
                return Ok(PacketType::Publish);
            }
            4 => PacketType::PubAck,
            5 => PacketType::PubRec,
            6 => PacketType::PubRel,
            7 => PacketType::PubComp,
            8 => PacketType::Subscribe,
            9 => PacketType::SubAck,
            10 => PacketType::Unsubscribe,
            11 => PacketType::UnsubAck,
            12 => PacketType::PingReq,
            13 => PacketType::PingResp,
            14 => PacketType::Disconnect,
            _ => PacketType::Auth,
        };
        if flags != t.required_flags() {
            return Err(DecodeError::InvalidHeaderFlags { byte });
        }
        Ok(t)
    }

    /// The fixed-header flags every packet of this type carries (PUBLISH's are
    /// variable and reported as 0).
    #[inline]
    pub fn required_flags(self) -> u8 {
        match self {
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
            _ => 0,
        }
    }

    /// The first byte of a packet of this type (PUBLISH with flags 0).
    #[inline]
    pub fn first_byte(self) -> u8 {
        ((self as u8) << 4) | self.required_flags()
    }
}

/// A checked fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// The packet type.
    pub packet_type: PacketType,
    /// The low four bits of the first byte.
    pub flags: u8,
    /// The Remaining Length: bytes of the body after the fixed header.
    pub remaining_len: u32,
    /// Bytes of the fixed header itself (2 to 5).
    pub header_len: usize,
}

impl FixedHeader {
    /// The whole packet's size: fixed header plus body.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining_len as usize
    }
}

/// Checks the fixed header at the start of `buf`, as early as the bytes allow.
///
/// The first byte alone is enough to refuse a reserved type or wrong flags; the
/// Remaining Length is enough to refuse a packet larger than `max_packet_size`
/// (counted with its header, as MQTT 5's Maximum Packet Size is). Nothing past
/// the header is read, so a caller can refuse a 256 MB packet after five bytes.
pub fn check_header(buf: &[u8], max_packet_size: u32) -> Result<Status<FixedHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(Status::Partial(Needed::Unknown));
    };
    let packet_type = PacketType::from_first_byte(first)?;
    let Some((remaining_len, n)) = read_varint(&buf[1..])? else {
        return Ok(Status::Partial(Needed::Unknown));
    };
    let header = FixedHeader {
        packet_type,
        flags: first & 0x0f,
        remaining_len,
        header_len: 1 + n,
    };
    let size = header.packet_len();
    if size > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    Ok(Status::Complete(header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_flags_are_rejected_from_the_first_byte() {
        // PUBREL, SUBSCRIBE and UNSUBSCRIBE need 0010; the rest 0000.
        for (byte, ok) in [
            (0x62, true),
            (0x60, false),
            (0x82, true),
            (0x80, false),
            (0xa2, true),
            (0xa3, false),
            (0xc0, true),
            (0xc1, false),
            (0x10, true),
            (0x18, false),
            (0xf0, true),
            (0xf2, false),
        ] {
            assert_eq!(check_header(&[byte], 1000).is_ok(), ok, "{byte:#04x}");
        }
        assert_eq!(
            check_header(&[0x00], 1000),
            Err(DecodeError::ReservedPacketType)
        );
        assert_eq!(check_header(&[0x36], 1000), Err(DecodeError::InvalidQoS));
    }

    #[test]
    fn oversize_is_refused_from_the_header() {
        // 256 MB announced in five bytes.
        assert_eq!(
            check_header(&[0x30, 0xff, 0xff, 0xff, 0x7f], 1024),
            Err(DecodeError::PacketTooLarge {
                size: 268_435_460,
                max: 1024
            })
        );
        assert!(matches!(
            check_header(&[0x30, 0xff, 0xff, 0xff, 0x7f], MAX_PACKET_SIZE),
            Ok(Status::Complete(_))
        ));
    }
}
