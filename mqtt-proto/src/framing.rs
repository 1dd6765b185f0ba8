//! Cutting whole packets out of a read buffer (MQTT 5.0 section 2.1: the
//! fixed header gives the packet's length).
//!
//! The header is checked as soon as its bytes are there: a bad type, bad
//! flags or a packet over the maximum size is refused before its body is
//! waited for (MQTT 5.0 section 3.1.2.11.4, Maximum Packet Size), so a
//! peer cannot make this side buffer 256 MB by sending five bytes. A whole
//! packet leaves the buffer as one `Bytes`, so its payload is never copied
//! again.

use bytes::{Bytes, BytesMut};
use mqtt_codec::{check_header, DecodeError, FixedHeader, Status};

/// The most a buffer grows at once towards an announced packet: the peer
/// has to actually send the bytes before more is taken.
const GROW_STEP: usize = 64 * 1024;

/// One packet cut out of the read buffer.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Its fixed header.
    pub header: FixedHeader,
    /// The whole packet, fixed header included.
    pub bytes: Bytes,
}

impl Frame {
    /// The bytes after the fixed header.
    pub fn body(&self) -> &[u8] {
        &self.bytes[self.header.header_len..]
    }
}

/// Cuts the next whole packet off the front of `buf`: `Ok(None)` until
/// all of it is there (the buffer then has room reserved towards it, at
/// most 64 KiB at a time until an eighth of it is there, then all of
/// it), an error as soon as the header is bad or
/// announces more than `max_packet_size` bytes.
pub fn next_frame(buf: &mut BytesMut, max_packet_size: u32) -> Result<Option<Frame>, DecodeError> {
    let header = match check_header(buf, max_packet_size)? {
        Status::Complete(h) => h,
        Status::Partial(_) => return Ok(None),
    };
    let total = header.packet_len();
    if buf.len() < total {
        let missing = total - buf.len();
        // Once an eighth of the packet is here, the rest is taken at once:
        // growing by doubling to the end would copy the buffer at each
        // step, and an allocator that cannot move pages (mimalloc, unlike
        // glibc's mremap) would hold the old and the new buffer together,
        // 1.7 times a 200 MiB payload at the peak. Before that, the peer
        // has to send what it announced, a step at a time.
        let step = if buf.len() >= total / 8 {
            missing
        } else {
            missing.min(GROW_STEP)
        };
        buf.reserve(step);
        return Ok(None);
    }
    Ok(Some(Frame {
        header,
        bytes: buf.split_to(total).freeze(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_codec::PacketType;

    #[test]
    fn every_strict_prefix_is_incomplete_and_the_whole_is_one_frame() {
        // PUBLISH QoS 0 "a" / "hi", then a PINGREQ.
        let packet = [0x30, 0x05, 0x00, 0x01, b'a', b'h', b'i'];
        for n in 0..packet.len() {
            let mut buf = BytesMut::from(&packet[..n]);
            assert!(next_frame(&mut buf, 1024).unwrap().is_none(), "prefix {n}");
            assert_eq!(buf.len(), n, "nothing consumed");
        }
        let mut buf = BytesMut::from(&packet[..]);
        buf.extend_from_slice(&[0xc0, 0x00]);
        let f = next_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f.header.packet_type, PacketType::Publish);
        assert_eq!(f.body(), &packet[2..]);
        let ping = next_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(ping.header.packet_type, PacketType::PingReq);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversize_packet_is_refused_from_its_header() {
        // 5 bytes announcing 268,435,455: refused before any body arrives.
        let mut buf = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0x7f][..]);
        assert!(matches!(
            next_frame(&mut buf, 1024),
            Err(DecodeError::PacketTooLarge { .. })
        ));
    }

    #[test]
    fn bad_flags_are_refused_from_the_first_byte() {
        // [MQTT-5: 2.2.2-2] PUBREL carries flags 0010.
        let mut buf = BytesMut::from(&[0x60][..]);
        assert!(next_frame(&mut buf, 1024).is_err());
    }

    #[test]
    fn room_is_reserved_towards_a_large_packet_in_steps() {
        // A 200,000-byte PUBLISH announced: at most 64 KiB taken at once.
        let mut buf = BytesMut::from(&[0x30, 0xc0, 0x9a, 0x0c][..]);
        assert!(next_frame(&mut buf, u32::MAX >> 4).unwrap().is_none());
        assert!(buf.capacity() >= GROW_STEP && buf.capacity() < 2 * GROW_STEP + 64);
    }

    #[test]
    fn once_an_eighth_is_here_the_rest_is_reserved_at_once() {
        // A 2,000,000-byte PUBLISH (Remaining Length 1,999,996: 4 bytes).
        let total = 2_000_000;
        let mut buf = BytesMut::from(&[0x30, 0xfc, 0x88, 0x7a][..]);
        buf.resize(total / 8 - 1, 0);
        assert!(next_frame(&mut buf, u32::MAX >> 4).unwrap().is_none());
        assert!(buf.capacity() < total / 2, "all reserved too early");
        buf.resize(total / 8, 0);
        assert!(next_frame(&mut buf, u32::MAX >> 4).unwrap().is_none());
        let cap = buf.capacity();
        assert!(cap >= total, "the rest is not reserved: {cap}");
        buf.resize(total, 0);
        assert_eq!(buf.capacity(), cap, "the buffer moved again");
        assert_eq!(
            next_frame(&mut buf, u32::MAX >> 4)
                .unwrap()
                .unwrap()
                .bytes
                .len(),
            total
        );
    }
}
