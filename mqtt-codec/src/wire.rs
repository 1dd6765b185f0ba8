//! The data representations of MQTT section 1.5: a checked cursor that reads
//! them from exactly one packet body, and a checked writer that writes them.
//!
//! Every packet parser reads through [`Reader`], which can only ever see the
//! bytes of its own frame, so a field that claims more bytes than the frame
//! holds is an error instead of a read of the next packet.

use crate::error::{DecodeError, EncodeError};

/// The largest value a Variable Byte Integer can hold.
pub const MAX_VARINT: u32 = 268_435_455;

/// Decodes a Variable Byte Integer from the start of `buf`.
///
/// `Ok(None)` means more bytes are needed. Encodings longer than four bytes or
/// longer than the value needs are malformed [MQTT-1.5.5-1].
pub(crate) fn read_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // A final byte of 0 after at least one continuation byte means a
            // shorter encoding existed.
            if i > 0 && byte == 0 {
                return Err(DecodeError::MalformedRemainingLength);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::MalformedRemainingLength)
    } else {
        Ok(None)
    }
}

/// Bytes the Variable Byte Integer encoding of `value` takes.
pub const fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Reads the fields of one packet body, never past its end.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::UnexpectedEnd);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn varint(&mut self) -> Result<u32, DecodeError> {
        match read_varint(self.buf) {
            Ok(Some((v, n))) => {
                self.buf = &self.buf[n..];
                Ok(v)
            }
            Ok(None) => Err(DecodeError::UnexpectedEnd),
            Err(e) => Err(e),
        }
    }

    /// Binary Data: a two-byte length, then that many bytes.
    pub fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// UTF-8 Encoded String: well-formed and without U+0000.
    pub fn string(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.binary()?;
        check_str(bytes)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Checks the MQTT string rules on raw bytes [MQTT-1.5.4-1/2].
pub(crate) fn check_str(bytes: &[u8]) -> Result<&str, DecodeError> {
    let s = core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    if contains_any(bytes, [0]) {
        return Err(DecodeError::NullCharacter);
    }
    Ok(s)
}

/// Whether any byte of `bytes` is one of `needles`.
///
/// Every string is checked for U+0000 and every topic name for wildcards, on
/// decode and on encode, so this reads eight bytes at a time instead of one: a
/// word holds a needle exactly when `x = word ^ needle * 0x0101..` has a zero
/// byte, which `(x - 0x0101..) & !x & 0x8080..` detects without false
/// positives. A tail shorter than a word is read as the (overlapping) last
/// word of the slice.
#[inline]
pub(crate) fn contains_any<const N: usize>(bytes: &[u8], needles: [u8; N]) -> bool {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    let hit = |word: &[u8; 8]| {
        let v = u64::from_ne_bytes(*word);
        needles.iter().fold(0, |acc, &n| {
            let x = v ^ (LO * u64::from(n));
            acc | (x.wrapping_sub(LO) & !x & HI)
        }) != 0
    };
    let (words, tail) = bytes.as_chunks::<8>();
    if words.iter().any(hit) {
        return true;
    }
    match bytes.last_chunk::<8>() {
        Some(last) if !tail.is_empty() => hit(last),
        _ => tail.iter().any(|b| needles.contains(b)),
    }
}

/// Writes fields into a caller's buffer whose size was checked up front.
///
/// Packet encoders compute their exact length first and check the buffer once,
/// so the writer itself only guards against logic errors: it never panics, it
/// reports `BufferTooSmall` instead.
pub(crate) struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn bytes(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos + data.len();
        match self.buf.get_mut(self.pos..end) {
            Some(dst) => {
                dst.copy_from_slice(data);
                self.pos = end;
                Ok(())
            }
            None => Err(EncodeError::BufferTooSmall { required: end }),
        }
    }

    pub fn u8(&mut self, v: u8) -> Result<(), EncodeError> {
        self.bytes(&[v])
    }

    pub fn u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.bytes(&v.to_be_bytes())
    }

    pub fn u32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.bytes(&v.to_be_bytes())
    }

    pub fn varint(&mut self, mut v: u32) -> Result<(), EncodeError> {
        if v > MAX_VARINT {
            return Err(EncodeError::PacketTooLarge);
        }
        loop {
            let mut byte = (v & 0x7f) as u8;
            v >>= 7;
            if v > 0 {
                byte |= 0x80;
            }
            self.u8(byte)?;
            if v == 0 {
                return Ok(());
            }
        }
    }

    pub fn binary(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(data.len()).map_err(|_| EncodeError::FieldTooLong)?;
        self.u16(len)?;
        self.bytes(data)
    }

    pub fn string(&mut self, s: &str) -> Result<(), EncodeError> {
        self.binary(s.as_bytes())
    }
}

/// Encoded size of a Binary Data or UTF-8 string field, checking its limits.
pub(crate) fn binary_len(data: &[u8]) -> Result<usize, EncodeError> {
    if data.len() > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong);
    }
    Ok(2 + data.len())
}

/// Encoded size of a UTF-8 string field, checking its limits and U+0000.
pub(crate) fn string_len(s: &str) -> Result<usize, EncodeError> {
    if contains_any(s.as_bytes(), [0]) {
        return Err(EncodeError::NullCharacter);
    }
    binary_len(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_round_trip() {
        for v in [
            0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_VARINT,
        ] {
            let mut buf = [0u8; 4];
            let mut w = Writer::new(&mut buf);
            w.varint(v).unwrap();
            let n = w.position();
            assert_eq!(n, varint_len(v));
            assert_eq!(read_varint(&buf[..n]), Ok(Some((v, n))));
            // Every strict prefix asks for more.
            for cut in 0..n {
                assert_eq!(read_varint(&buf[..cut]), Ok(None));
            }
        }
    }

    #[test]
    fn five_byte_varint_is_malformed() {
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(DecodeError::MalformedRemainingLength)
        );
        assert_eq!(
            read_varint(&[0x80, 0x80, 0x80, 0x80]),
            Err(DecodeError::MalformedRemainingLength)
        );
    }

    #[test]
    fn non_minimal_varint_is_malformed() {
        assert_eq!(
            read_varint(&[0x80, 0x00]),
            Err(DecodeError::MalformedRemainingLength)
        );
        assert_eq!(
            read_varint(&[0xff, 0x80, 0x00]),
            Err(DecodeError::MalformedRemainingLength)
        );
    }

    #[test]
    fn varint_over_max_does_not_encode() {
        let mut buf = [0u8; 8];
        assert_eq!(
            Writer::new(&mut buf).varint(MAX_VARINT + 1),
            Err(EncodeError::PacketTooLarge)
        );
    }

    #[test]
    fn word_at_a_time_search_matches_a_byte_loop() {
        let mut buf = [b'x'; 40];
        for len in 0..=buf.len() {
            assert!(!contains_any(&buf[..len], [b'+', b'#', 0]));
            for at in 0..len {
                for needle in [b'+', b'#', 0] {
                    buf[at] = needle;
                    assert!(contains_any(&buf[..len], [b'+', b'#', 0]), "{len} {at}");
                    assert_eq!(contains_any(&buf[..len], [0]), needle == 0);
                    buf[at] = b'x';
                }
                // Bytes next to a needle in value are not matches.
                for other in [b'*', b',', b'"', b'$', 1, 0x80, 0xff] {
                    buf[at] = other;
                    assert!(!contains_any(&buf[..len], [b'+', b'#', 0]), "{len} {at}");
                    buf[at] = b'x';
                }
            }
        }
    }

    #[test]
    fn strings_reject_nul_and_bad_utf8() {
        assert_eq!(check_str(b"a\0b"), Err(DecodeError::NullCharacter));
        assert_eq!(check_str(&[0xc3, 0x28]), Err(DecodeError::InvalidUtf8));
        assert_eq!(check_str(b"ok"), Ok("ok"));
    }
}
