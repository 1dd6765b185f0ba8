//! What every benchmark payload starts with: the publisher's number, a
//! sequence number and the send time, little-endian; the rest is filler.

/// Bytes of the header; payloads are at least this long.
pub const HEADER_LEN: usize = 20;

/// The header of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Which publisher sent it (0-based).
    pub publisher: u32,
    /// Its sequence number at that publisher, from 0.
    pub seq: u64,
    /// Monotonic nanoseconds since the run's shared start `Instant`.
    pub sent_ns: u64,
}

impl Stamp {
    /// Writes the header into the start of `payload`.
    pub fn write(&self, payload: &mut [u8]) {
        payload[0..4].copy_from_slice(&self.publisher.to_le_bytes());
        payload[4..12].copy_from_slice(&self.seq.to_le_bytes());
        payload[12..20].copy_from_slice(&self.sent_ns.to_le_bytes());
    }

    /// Reads the header, or `None` for a payload too short to hold one.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let h = payload.get(..HEADER_LEN)?;
        Some(Stamp {
            publisher: u32::from_le_bytes(h[0..4].try_into().ok()?),
            seq: u64::from_le_bytes(h[4..12].try_into().ok()?),
            sent_ns: u64::from_le_bytes(h[12..20].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = Stamp {
            publisher: 7,
            seq: 1 << 40,
            sent_ns: 123_456_789,
        };
        let mut p = [0xaa; 64];
        s.write(&mut p);
        assert_eq!(Stamp::read(&p), Some(s));
        assert_eq!(Stamp::read(&p[..19]), None);
    }
}
