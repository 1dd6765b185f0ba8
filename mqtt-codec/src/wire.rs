//! The data representations of MQTT section 1.5 and a checked cursor that
//! reads them from exactly one packet body (`writer.rs` writes them).
//!
//! Every packet parser reads through [`Reader`], which can only ever see the
//! bytes of its own frame, so a field that claims more bytes than the frame
//! holds is an error instead of a read of the next packet.

use crate::error::DecodeError;
use crate::scan::has_nul;

/// The largest value a Variable Byte Integer can hold.
pub const MAX_VARINT: u32 = 268_435_455;

/// Decodes a Variable Byte Integer from the start of `buf`.
///
/// `Ok(None)` means more bytes are needed. Encodings longer than four bytes or
/// longer than the value needs are malformed [MQTT-5: 1.5.5-1].
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

/// Checks the MQTT string rules on raw bytes [MQTT-5: 1.5.4-1/2].
pub(crate) fn check_str(bytes: &[u8]) -> Result<&str, DecodeError> {
    let s = core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    if has_nul(bytes) {
        return Err(DecodeError::NullCharacter);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn strings_reject_nul_and_bad_utf8() {
        assert_eq!(check_str(b"a\0b"), Err(DecodeError::NullCharacter));
        assert_eq!(check_str(&[0xc3, 0x28]), Err(DecodeError::InvalidUtf8));
        assert_eq!(check_str(b"ok"), Ok("ok"));
    }
}
