//! Large payloads written from the message itself, not copied into the
//! write buffer.
//!
//! A connection writes from one buffer that collects many packets. For a
//! PUBLISH with a large payload (at least [`SPLICE_MIN`]), only its fixed
//! and variable header go into that buffer; the payload, a `Bytes` that
//! shares the publisher's frame, is recorded here with the buffer position
//! it follows, and the write loop sends it from there. So relaying a
//! 200 MB message holds one copy of it, not two (issue 14), whatever
//! number of subscribers it goes to.
//!
//! The wire format is unchanged: the header carries the Remaining Length
//! of the whole packet (MQTT 5 section 2.1.4, 3.1.1 section 2.2.3), the
//! payload follows it directly.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Payloads at least this large are spliced rather than copied: below it,
/// a copy costs less than the extra write call.
pub const SPLICE_MIN: usize = 64 * 1024;

/// Payloads waiting to be written, each after a given number of bytes of
/// the write buffer. One pointer, and no allocation while nothing waits:
/// every connection's task carries one for its whole life.
#[derive(Debug, Default)]
pub struct Spliced(Option<Box<Queue>>);

#[derive(Debug, Default)]
struct Queue {
    /// (bytes of the write buffer that go before it, payload), in order;
    /// positions are relative to the buffer's current start.
    queue: VecDeque<(usize, Bytes)>,
    /// Payload bytes not yet written.
    bytes: usize,
}

impl Spliced {
    /// Payload bytes not yet written: they count against the write high
    /// water mark like buffered bytes.
    pub fn pending(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.bytes)
    }

    /// Records `payload` to follow the `at` bytes the buffer holds now.
    pub fn push(&mut self, at: usize, payload: Bytes) {
        let q = self.0.get_or_insert_default();
        q.bytes += payload.len();
        q.queue.push_back((at, payload));
    }

    /// What to write next: the buffer up to the next payload, or the
    /// payload itself once the buffer before it is written.
    pub fn next<'a>(&'a self, out: &'a [u8]) -> &'a [u8] {
        match self.0.as_ref().and_then(|q| q.queue.front()) {
            Some((0, payload)) => payload,
            Some((at, _)) => &out[..*at],
            None => out,
        }
    }

    /// Whether anything, buffer or payload, waits to be written.
    pub fn has_output(&self, out: &BytesMut) -> bool {
        !out.is_empty() || self.0.is_some()
    }

    /// Takes `n` written bytes off what [`Spliced::next`] returned.
    pub fn advance(&mut self, out: &mut BytesMut, n: usize) {
        let Some(q) = self.0.as_mut() else {
            out.advance(n);
            return;
        };
        match q.queue.front_mut() {
            Some((0, payload)) => {
                payload.advance(n);
                q.bytes -= n;
                if payload.is_empty() {
                    q.queue.pop_front();
                    if q.queue.is_empty() {
                        // The last payload is out: nothing kept.
                        self.0 = None;
                    }
                }
            }
            _ => {
                out.advance(n);
                for (at, _) in q.queue.iter_mut() {
                    *at -= n;
                }
            }
        }
    }
}

/// Appends to `out` the PUBLISH whose encoding without payload is `head`
/// (as the codec wrote it, with a Remaining Length that counts no payload),
/// with a Remaining Length that counts `payload_len` more bytes; returns
/// the whole packet's size, or `None` when it would exceed `limit` or the
/// largest Remaining Length, writing nothing.
pub fn put_header(
    out: &mut BytesMut,
    head: &[u8],
    payload_len: usize,
    limit: usize,
) -> Option<usize> {
    // The codec wrote a complete packet: a valid first byte and a
    // Remaining Length that ends within four bytes.
    let (first, rest) = head.split_first()?;
    let mut rl = 0usize;
    let mut len_bytes = 0;
    for (i, b) in rest.iter().take(4).enumerate() {
        rl |= usize::from(b & 0x7f) << (7 * i);
        len_bytes = i + 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    let body = rest.get(len_bytes..)?;
    let total_rl = rl.checked_add(payload_len)?;
    if total_rl > 268_435_455 {
        return None;
    }
    let mut varint = [0u8; 4];
    let mut n = 0;
    let mut v = total_rl;
    loop {
        let mut byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            byte |= 0x80;
        }
        varint[n] = byte;
        n += 1;
        if v == 0 {
            break;
        }
    }
    let size = 1 + n + total_rl;
    if size > limit {
        return None;
    }
    out.reserve(1 + n + body.len());
    out.put_u8(*first);
    out.put_slice(&varint[..n]);
    out.put_slice(body);
    Some(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buffer bytes and payloads come out in the order they were queued.
    #[test]
    fn writes_in_order() {
        let mut out = BytesMut::from(&b"ab"[..]);
        let mut s = Spliced::default();
        s.push(out.len(), Bytes::from_static(b"PAYLOAD"));
        out.extend_from_slice(b"cd");
        s.push(out.len(), Bytes::from_static(b"XY"));
        out.extend_from_slice(b"e");
        assert_eq!(s.pending(), 9);
        let mut written = Vec::new();
        // Write at most 3 bytes at a time, as a socket might.
        while s.has_output(&out) {
            let chunk = s.next(&out);
            let n = chunk.len().min(3);
            written.extend_from_slice(&chunk[..n]);
            s.advance(&mut out, n);
        }
        assert_eq!(written, b"abPAYLOADcdXYe");
        assert_eq!(s.pending(), 0);
        // Nothing kept once everything is written.
        assert!(s.0.is_none());
    }

    /// The header gets the Remaining Length of the whole packet, in as
    /// many bytes as it needs, and a packet over the limit writes nothing.
    #[test]
    fn header_counts_the_payload() {
        // PUBLISH QoS 0, topic "t", empty payload: 30 03 00 01 74.
        let head = [0x30, 0x03, 0x00, 0x01, b't'];
        let mut out = BytesMut::new();
        let size = put_header(&mut out, &head, 200 * 1024 * 1024, usize::MAX).unwrap();
        // 3 + 209715200 = 209715203 needs four bytes of Remaining Length.
        assert_eq!(&out[..], &[0x30, 0x83, 0x80, 0x80, 0x64, 0x00, 0x01, b't']);
        assert_eq!(size, 1 + 4 + 3 + 200 * 1024 * 1024);
        let mut none = BytesMut::new();
        assert_eq!(put_header(&mut none, &head, 100, 50), None);
        assert!(none.is_empty());
        assert_eq!(put_header(&mut none, &head, 268_435_453, usize::MAX), None);
    }
}
