//! Writing a packet into a caller's buffer: the lengths of its fields, the one
//! capacity check, and the writer that fills the checked buffer.
//!
//! Every encoder computes the packet's exact length (checking everything but
//! the contents of its strings) before it writes a byte, so the buffer is
//! checked once, up front. The writes after that cannot run out of room:
//! they return nothing, and [`Writer::finish`] confirms the body came out at
//! the length the layout promised. Strings are checked (for U+0000, or as
//! topic names or filters) as they are copied, by the same loads; when one
//! fails, [`discard`] zeroes what was written, so an invalid packet never
//! leaves its bytes in the caller's buffer, and the error is returned.
//! `encoded_len` checks the strings in its length pass instead.

use crate::error::{DecodeError, EncodeError};
use crate::scan::{copy_nul_free, has_nul};
use crate::topic::{copy_filter, copy_name};
use crate::wire::{varint_len, MAX_VARINT};

/// The whole packet's size for a body of `body` bytes: first byte, Remaining
/// Length and body.
#[inline]
pub(crate) fn packet_len(body: usize) -> Result<usize, EncodeError> {
    if body > MAX_VARINT as usize {
        return Err(EncodeError::PacketTooLarge);
    }
    Ok(1 + varint_len(body as u32) + body)
}

/// Encoded size of a Binary Data or UTF-8 string field, checking its limits.
#[inline]
pub(crate) fn binary_len(data: &[u8]) -> Result<usize, EncodeError> {
    if data.len() > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong);
    }
    Ok(2 + data.len())
}

/// Encoded size of a UTF-8 string field, checking its limits and, when
/// `SCAN` (in `encoded_len`, where nothing is copied), U+0000. A `&str` is
/// well-formed UTF-8 already, so only the MQTT rules are left.
#[inline]
pub(crate) fn string_len<const SCAN: bool>(s: &str) -> Result<usize, EncodeError> {
    if SCAN && has_nul(s.as_bytes()) {
        return Err(EncodeError::NullCharacter);
    }
    binary_len(s.as_bytes())
}

/// The result of a check made while copying.
#[inline(always)]
fn passed(ok: bool, e: EncodeError) -> Result<(), EncodeError> {
    if ok {
        Ok(())
    } else {
        Err(e)
    }
}

/// Zeroes the packet an encoder gave up on when a string failed its check as
/// it was copied, so that no part of an invalid packet is left in `buf`, and
/// passes the error on.
#[cold]
pub(crate) fn discard(buf: &mut [u8], body: usize, e: EncodeError) -> EncodeError {
    let total = packet_len(body).unwrap_or(0).min(buf.len());
    if let Some(written) = buf.get_mut(..total) {
        written.fill(0);
    }
    e
}

/// Writes a packet that is the same few bytes every time (PINGREQ, a 3.1.1
/// PUBACK), with no layout to compute.
#[inline]
pub(crate) fn fixed<const N: usize>(buf: &mut [u8], bytes: [u8; N]) -> Result<usize, EncodeError> {
    match buf.first_chunk_mut::<N>() {
        Some(dst) => {
            *dst = bytes;
            Ok(N)
        }
        None => Err(EncodeError::BufferTooSmall { required: N }),
    }
}

/// Copies `src` into `dst` of the same length. Most MQTT strings are a few
/// dozen bytes or less, for which two overlapping loads and stores are
/// cheaper than a call to `memcpy` (and the registers the caller saves around
/// it); longer data goes to `memcpy`.
#[inline(always)]
pub(crate) fn copy(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if n <= 16 {
        if n >= 8 {
            copy_ends::<8>(dst, src);
        } else if n >= 4 {
            copy_ends::<4>(dst, src);
        } else if let (Some(&a), Some(&b), Some(&c)) = (src.first(), src.get(n / 2), src.last()) {
            // One to three bytes: first, middle and last cover them all.
            if let Some(d) = dst.first_mut() {
                *d = a;
            }
            if let Some(d) = dst.get_mut(n / 2) {
                *d = b;
            }
            if let Some(d) = dst.last_mut() {
                *d = c;
            }
        }
    } else if n <= 32 {
        copy_ends::<16>(dst, src);
    } else if let Some(dst) = dst.get_mut(..n) {
        dst.copy_from_slice(src);
    }
}

/// Copies `src` (between `N` and `2 * N` bytes) as its first and its last `N`
/// bytes, which overlap.
#[inline(always)]
fn copy_ends<const N: usize>(dst: &mut [u8], src: &[u8]) {
    if let (Some(a), Some(b)) = (src.first_chunk::<N>(), src.last_chunk::<N>()) {
        let (a, b) = (*a, *b);
        if let Some(d) = dst.first_chunk_mut::<N>() {
            *d = a;
        }
        if let Some(d) = dst.last_chunk_mut::<N>() {
            *d = b;
        }
    }
}

/// Fills a buffer of exactly the packet's size.
///
/// A write past the end (which a correct layout never asks for) is dropped
/// rather than panicking, and `finish` reports it, so no input can make the
/// encoder panic and each write is a compare, a copy and a pointer bump. Every
/// function that writes through a writer is inlined into its encoder, so that
/// the writer lives in registers rather than being stored back to memory
/// after each field.
pub(crate) struct Writer<'b> {
    /// The part of the packet not written yet.
    rest: &'b mut [u8],
    overrun: bool,
}

impl<'b> Writer<'b> {
    /// Checks that a packet with a body of `body` bytes fits in `buf` and
    /// writes its fixed header.
    #[inline]
    pub fn packet(buf: &'b mut [u8], first_byte: u8, body: usize) -> Result<Self, EncodeError> {
        let total = packet_len(body)?;
        let Some(rest) = buf.get_mut(..total) else {
            return Err(EncodeError::BufferTooSmall { required: total });
        };
        let mut w = Writer {
            rest,
            overrun: false,
        };
        w.u8(first_byte);
        w.varint(body as u32);
        Ok(w)
    }

    /// The bytes written, once a body of `body` bytes has come out at that
    /// length.
    #[inline]
    pub fn finish(self, body: usize) -> Result<usize, EncodeError> {
        let total = packet_len(body)?;
        let exact = self.rest.is_empty() && !self.overrun;
        debug_assert!(exact, "layout and writes disagree");
        if exact {
            Ok(total)
        } else {
            Err(EncodeError::BufferTooSmall { required: total })
        }
    }

    /// The next `n` bytes of the packet, for the caller to fill (`None`
    /// past the end, which `finish` reports). One check for a whole field
    /// instead of one per part of it.
    #[inline(always)]
    pub fn room(&mut self, n: usize) -> Option<&'b mut [u8]> {
        if n <= self.rest.len() {
            let (dst, rest) = core::mem::take(&mut self.rest).split_at_mut(n);
            self.rest = rest;
            Some(dst)
        } else {
            self.overrun = true;
            None
        }
    }

    #[inline(always)]
    pub fn bytes(&mut self, data: &[u8]) {
        if let Some(dst) = self.room(data.len()) {
            copy(dst, data);
        }
    }

    /// A field of a size known at compile time, stored straight into the
    /// packet. Through [`bytes`](Writer::bytes) LLVM would first assemble
    /// it on the stack and copy it with overlapping loads, which the CPU
    /// cannot forward from the smaller stores that built it (a stall of a
    /// dozen cycles per property in a 5.0 CONNECT).
    #[inline(always)]
    pub fn array<const N: usize>(&mut self, a: [u8; N]) {
        if let Some(dst) = self.room(N).and_then(|r| r.first_chunk_mut::<N>()) {
            *dst = a;
        }
    }

    #[inline(always)]
    pub fn u8(&mut self, v: u8) {
        self.array([v]);
    }

    #[inline(always)]
    pub fn u16(&mut self, v: u16) {
        self.array(v.to_be_bytes());
    }

    /// A Variable Byte Integer; `v` was checked against [`MAX_VARINT`] when
    /// the layout was computed.
    #[inline(always)]
    pub fn varint(&mut self, mut v: u32) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                return self.u8(byte);
            }
            self.u8(byte | 0x80);
        }
    }

    /// Binary Data or a string whose length was checked by [`binary_len`].
    #[inline(always)]
    pub fn binary(&mut self, data: &[u8]) {
        self.u16(data.len() as u16);
        self.bytes(data);
    }

    /// Room for `head` then a string's bytes, with `head` written: the
    /// string's bytes are left for the caller to copy in and check.
    #[inline(always)]
    fn string_room<const H: usize>(&mut self, head: [u8; H], s: &str) -> Option<&'b mut [u8]> {
        let (h, body) = self.room(H + s.len())?.split_first_chunk_mut::<H>()?;
        *h = head;
        Some(body)
    }

    /// A UTF-8 string measured by [`string_len`], checked for U+0000 here.
    #[inline(always)]
    pub fn string(&mut self, s: &str) -> Result<(), EncodeError> {
        let len = (s.len() as u16).to_be_bytes();
        match self.string_room(len, s) {
            Some(body) => passed(copy_nul_free(body, s), EncodeError::NullCharacter),
            None => Ok(()),
        }
    }

    /// A property identifier and its UTF-8 string value, checked for U+0000
    /// here. The identifier and the length are stored as a byte and a `u16`:
    /// as a three-byte array LLVM assembles them with shifts first.
    #[inline(always)]
    pub fn id_string(&mut self, id: u8, s: &str) -> Result<(), EncodeError> {
        let Some((head, rest)) = self.room(3 + s.len()).and_then(|r| r.split_first_mut()) else {
            return Ok(());
        };
        *head = id;
        let len = (s.len() as u16).to_be_bytes();
        match rest.split_first_chunk_mut::<2>().map(|(h, body)| {
            *h = len;
            body
        }) {
            Some(body) => passed(copy_nul_free(body, s), EncodeError::NullCharacter),
            None => Ok(()),
        }
    }

    /// A non-empty topic name of at most 65,535 bytes, checked for
    /// wildcards and U+0000 here.
    #[inline(always)]
    pub fn topic_name(&mut self, s: &str) -> Result<(), EncodeError> {
        let len = (s.len() as u16).to_be_bytes();
        match self.string_room(len, s) {
            Some(body) => passed(copy_name(body, s), DecodeError::InvalidTopicName.into()),
            None => Ok(()),
        }
    }

    /// A topic filter and, after it, `tail` (a SUBSCRIBE entry's options),
    /// the filter checked in full here: the layout only counted it.
    #[inline(always)]
    pub fn topic_filter<const T: usize>(
        &mut self,
        s: &str,
        tail: [u8; T],
    ) -> Result<(), EncodeError> {
        if s.is_empty() || s.len() > usize::from(u16::MAX) {
            return Err(DecodeError::InvalidTopicFilter.into());
        }
        let len = (s.len() as u16).to_be_bytes();
        let Some(room) = self.room(2 + s.len() + T) else {
            return Ok(());
        };
        let Some((head, rest)) = room.split_first_chunk_mut::<2>() else {
            return Ok(());
        };
        *head = len;
        let Some((body, end)) = rest.split_last_chunk_mut::<T>() else {
            return Ok(());
        };
        *end = tail;
        passed(copy_filter(body, s), DecodeError::InvalidTopicFilter.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::read_varint;

    #[test]
    fn varint_boundaries_round_trip() {
        for v in [
            0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_VARINT,
        ] {
            let mut out = [0u8; 4];
            let n = varint_len(v);
            let mut w = Writer {
                rest: &mut out[..n],
                overrun: false,
            };
            w.varint(v);
            assert!(w.rest.is_empty() && !w.overrun);
            assert_eq!(read_varint(&out[..n]), Ok(Some((v, n))));
            // Every strict prefix asks for more.
            for cut in 0..n {
                assert_eq!(read_varint(&out[..cut]), Ok(None));
            }
        }
    }

    #[test]
    fn body_over_max_varint_does_not_encode() {
        assert_eq!(packet_len(MAX_VARINT as usize), Ok(5 + MAX_VARINT as usize));
        assert_eq!(
            packet_len(MAX_VARINT as usize + 1),
            Err(EncodeError::PacketTooLarge)
        );
    }

    #[test]
    fn a_write_past_the_layout_is_reported_not_panicked() {
        let mut out = [0u8; 3];
        let mut w = Writer {
            rest: &mut out,
            overrun: false,
        };
        w.u16(1);
        w.u16(2);
        assert!(w.overrun);
    }

    #[test]
    fn short_copies_copy_every_length() {
        let src: [u8; 70] = core::array::from_fn(|i| i as u8 + 1);
        for len in 0..=src.len() {
            let mut dst = [0u8; 70];
            copy(&mut dst[..len], &src[..len]);
            assert_eq!(dst[..len], src[..len], "{len}");
            assert!(dst[len..].iter().all(|&b| b == 0), "{len}");
        }
    }
}
