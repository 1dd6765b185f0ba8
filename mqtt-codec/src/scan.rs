//! Byte scans for the checks every string gets on decode and on encode:
//! U+0000 anywhere, wildcards in topic names, and the position of each
//! wildcard in a topic filter.
//!
//! Where the target has 16-byte vectors (SSE2, NEON, wasm SIMD), a string is
//! read 16 bytes at a time through a plain OR over an array of 16, which LLVM
//! turns into a few vector compares and one mask test; shorter strings, and
//! every string on other targets, are read eight bytes at a time as `u64`
//! words (SWAR), where a handful of integer operations test all eight bytes.
//! A tail shorter than a chunk is read as the (overlapping) last chunk of the
//! string, and a string shorter than a word as a word built from its own
//! bytes, so no byte loop runs for the "is there any" questions.
//!
//! The encoder uses the `copy_*` forms, which copy a string into the packet
//! with the same loads that check it.

use crate::writer::copy;

/// Whether 16-byte chunks are cheaper to test than two `u64` words.
const VECTOR: bool = cfg!(any(
    target_feature = "sse2",
    target_feature = "neon",
    target_feature = "simd128"
));

const LO: u64 = u64::from_le_bytes([0x01; 8]);
const HI: u64 = u64::from_le_bytes([0x80; 8]);
const LOW7: u64 = u64::from_le_bytes([0x7f; 8]);

/// `0x80` in some byte when any byte of `x` is zero. Cheaper than
/// [`zero_bytes`], but a borrow can also flag bytes above a real zero, so it
/// only answers "any".
#[inline(always)]
fn any_zero(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

/// `0x80` in exactly the bytes of `x` that are zero: adding `0x7f` to the low
/// seven bits of a byte cannot carry into the next byte.
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    !(((x & LOW7) + LOW7) | x) & HI
}

/// `x` with `+` and `#` both turned into `+`: they differ only in bit `0x08`,
/// and no other byte maps to `+`.
#[inline(always)]
fn fold_wildcards(v: u64) -> u64 {
    (v | (LO * 0x08)) ^ (LO * u64::from(b'+'))
}

/// Non-zero when `v` may hold `+`, `#` or a zero byte: a byte is flagged
/// when its set bits all lie within those of `+` (`0x2b`), which `#` and zero
/// do, as do a few others (space, `!`, `"`, `(`, `)`, `*` and some control
/// characters). One AND and the zero test, where the exact test takes two
/// zero tests; a flagged word is then looked at exactly.
#[inline(always)]
fn maybe_wildcard_or_nul(v: u64) -> u64 {
    any_zero(v & (LO * 0xd4))
}

/// `0x80` in exactly the bytes of `v` that are `+` or `#`.
#[inline(always)]
fn wildcard_bytes(v: u64) -> u64 {
    zero_bytes(fold_wildcards(v))
}

/// A word holding only bytes of `bytes` (some repeated), for a slice shorter
/// than a word; a word of `0x01` bytes, which no scan looks for, when empty.
#[inline(always)]
fn short_word(bytes: &[u8]) -> u64 {
    if let (Some(head), Some(tail)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        return u64::from(u32::from_le_bytes(*head)) | u64::from(u32::from_le_bytes(*tail)) << 32;
    }
    match (bytes.first(), bytes.get(bytes.len() / 2), bytes.last()) {
        (Some(&a), Some(&b), Some(&c)) => {
            let three = u64::from(a) | u64::from(b) << 8 | u64::from(c) << 16;
            three | three << 24 | three << 48
        }
        _ => LO,
    }
}

/// ORs `hit` over every byte of `bytes`, a word at a time. The first and the
/// last word (which may overlap) are read without a loop, so a string of up
/// to 16 bytes costs two loads and no branch back.
#[inline(always)]
fn any_swar(bytes: &[u8], hit: impl Fn(u64) -> u64) -> bool {
    let acc = match (bytes.first_chunk::<8>(), bytes.last_chunk::<8>()) {
        (Some(first), Some(last)) => {
            let mut acc = hit(u64::from_le_bytes(*first)) | hit(u64::from_le_bytes(*last));
            if let Some(rest) = bytes.get(8..).filter(|r| r.len() > 8) {
                // The words after the first; `last` covers what is left.
                for w in rest.as_chunks::<8>().0 {
                    acc |= hit(u64::from_le_bytes(*w));
                }
            }
            acc
        }
        _ => hit(short_word(bytes)),
    };
    acc != 0
}

/// Whether any byte of a 16-byte chunk passes `hit`, written so that it
/// compiles to vector compares and a single mask test.
#[inline(always)]
fn chunk_any(chunk: &[u8; 16], hit: impl Fn(u8) -> bool) -> bool {
    chunk.iter().fold(false, |acc, &b| acc | hit(b))
}

/// [`any_swar`] 16 bytes at a time where that is cheaper: `byte_hit` and
/// `word_hit` are the same test on a byte and on a word.
#[inline(always)]
fn any_byte(bytes: &[u8], byte_hit: impl Fn(u8) -> bool, word_hit: impl Fn(u64) -> u64) -> bool {
    if VECTOR {
        if let (Some(first), Some(last)) = (bytes.first_chunk::<16>(), bytes.last_chunk::<16>()) {
            let mut acc = chunk_any(first, &byte_hit) | chunk_any(last, &byte_hit);
            if let Some(rest) = bytes.get(16..).filter(|r| r.len() > 16) {
                for chunk in rest.as_chunks::<16>().0 {
                    acc |= chunk_any(chunk, &byte_hit);
                }
            }
            return acc;
        }
    }
    any_swar(bytes, word_hit)
}

/// Whether `bytes` holds a zero byte (U+0000 in a string).
#[inline]
pub(crate) fn has_nul(bytes: &[u8]) -> bool {
    any_byte(bytes, |b| b == 0, any_zero)
}

/// Whether `bytes` holds `+`, `#` or a zero byte: what a topic name may not.
#[inline]
pub(crate) fn has_wildcard_or_nul(bytes: &[u8]) -> bool {
    any_byte(
        bytes,
        |b| (b | 0x08 == b'+') | (b == 0),
        |v| any_zero(fold_wildcards(v)) | any_zero(v),
    )
}

/// Copies `src` into `dst` (of the same length) and says whether any byte
/// passes the test, reading each chunk or word once for both: the encoder's
/// string checks cost no pass of their own over the string. The copy stops at
/// the first hit, since the encoder then discards the packet (and the early
/// exit keeps LLVM from unrolling the loop for long strings, which costs the
/// short ones).
#[inline(always)]
fn copy_any(
    dst: &mut [u8],
    src: &[u8],
    byte_hit: impl Fn(u8) -> bool,
    word_hit: impl Fn(u64) -> u64,
) -> bool {
    let n = src.len();
    // A hit ends the copy: the encoder discards the packet.
    if VECTOR && n >= 16 {
        let chunk = |d: &mut [u8; 16], s: &[u8; 16]| {
            // Loaded once into a local, tested, then stored: testing the
            // source after the store would make LLVM load it again.
            let c = *s;
            *d = c;
            chunk_any(&c, &byte_hit)
        };
        if let (Some(d), Some(s)) = (dst.first_chunk_mut::<16>(), src.first_chunk::<16>()) {
            if chunk(d, s) {
                return true;
            }
        }
        if let (Some(d), Some(s)) = (dst.get_mut(16..), src.get(16..).filter(|r| r.len() > 16)) {
            // The chunks after the first; the last chunk covers what is left.
            for (d, s) in d
                .as_chunks_mut::<16>()
                .0
                .iter_mut()
                .zip(s.as_chunks::<16>().0)
            {
                if chunk(d, s) {
                    return true;
                }
            }
        }
        return match (dst.last_chunk_mut::<16>(), src.last_chunk::<16>()) {
            (Some(d), Some(s)) => chunk(d, s),
            _ => false,
        };
    }
    if n >= 8 {
        let word = |d: &mut [u8; 8], s: &[u8; 8]| {
            let c = *s;
            *d = c;
            word_hit(u64::from_le_bytes(c)) != 0
        };
        if let (Some(d), Some(s)) = (dst.first_chunk_mut::<8>(), src.first_chunk::<8>()) {
            if word(d, s) {
                return true;
            }
        }
        if let (Some(d), Some(s)) = (dst.get_mut(8..), src.get(8..).filter(|r| r.len() > 8)) {
            for (d, s) in d
                .as_chunks_mut::<8>()
                .0
                .iter_mut()
                .zip(s.as_chunks::<8>().0)
            {
                if word(d, s) {
                    return true;
                }
            }
        }
        return match (dst.last_chunk_mut::<8>(), src.last_chunk::<8>()) {
            (Some(d), Some(s)) => word(d, s),
            _ => false,
        };
    }
    copy(dst, src);
    word_hit(short_word(src)) != 0
}

/// Copies a string, saying whether it is free of U+0000.
#[inline(always)]
pub(crate) fn copy_nul_free(dst: &mut [u8], src: &str) -> bool {
    !copy_any(dst, src.as_bytes(), |b| b == 0, any_zero)
}

/// Copies a topic name, saying whether it is free of `+`, `#` and U+0000.
#[inline(always)]
pub(crate) fn copy_plain_name(dst: &mut [u8], src: &[u8]) -> bool {
    !copy_any(
        dst,
        src,
        |b| (b | 0x08 == b'+') | (b == 0),
        |v| any_zero(fold_wildcards(v)) | any_zero(v),
    )
}

/// Copies a (non-shared) topic filter, saying whether it follows the
/// wildcard rules and is free of U+0000: [`plain_filter_ok`] with the copy
/// done by the same loads.
#[inline(always)]
pub(crate) fn copy_plain_filter(dst: &mut [u8], src: &[u8]) -> bool {
    let n = src.len();
    if n < 8 {
        copy(dst, src);
        return maybe_wildcard_or_nul(short_word(src)) == 0 || plain_filter_ok::<true>(src);
    }
    let word_ok = |base: usize, d: &mut [u8; 8], s: &[u8; 8]| {
        *d = *s;
        let v = u64::from_le_bytes(*s);
        maybe_wildcard_or_nul(v) == 0 || wildcards_fill_levels::<true>(src, base, v)
    };
    // Whole words from the start, then the last word, which may overlap.
    let (dst_words, _) = dst.as_chunks_mut::<8>();
    for (k, (d, s)) in dst_words.iter_mut().zip(src.as_chunks::<8>().0).enumerate() {
        if !word_ok(8 * k, d, s) {
            return false;
        }
    }
    match (dst.last_chunk_mut::<8>(), src.last_chunk::<8>()) {
        (Some(d), Some(s)) if !n.is_multiple_of(8) => word_ok(n - 8, d, s),
        _ => true,
    }
}

/// Whether the wildcard at `i` fills its level: `/` (or the start) before it,
/// `/` (or the end) after it, and for `#` the end [MQTT-3.1.1: 4.7.1-2/3].
#[inline(always)]
fn fills_level(bytes: &[u8], i: usize) -> bool {
    let prev = match i.checked_sub(1) {
        Some(p) => bytes.get(p).copied(),
        None => Some(b'/'),
    };
    prev == Some(b'/')
        && match bytes.get(i + 1) {
            None => true,
            Some(b'/') => bytes.get(i) == Some(&b'+'),
            Some(_) => false,
        }
}

/// The wildcard rules of a (non-shared) topic filter, and with `NUL` no zero
/// byte. A word without a wildcard (or NUL), the common case, costs one test;
/// a word with one is looked at again byte by byte.
///
/// Filters are checked word by word on every target: finding where the
/// wildcards are (not only whether there is one) is what a filter needs, and
/// 16-byte compares do not give positions cheaply.
#[inline(always)]
pub(crate) fn plain_filter_ok<const NUL: bool>(bytes: &[u8]) -> bool {
    let word_ok = |base: usize, v: u64| {
        let suspect = any_zero(fold_wildcards(v)) | if NUL { any_zero(v) } else { 0 };
        suspect == 0 || wildcards_fill_levels::<NUL>(bytes, base, v)
    };
    let n = bytes.len();
    if n < 8 {
        return bytes.iter().enumerate().all(|(i, &b)| match b {
            0 => !NUL,
            b'+' | b'#' => fills_level(bytes, i),
            _ => true,
        });
    }
    // Whole words from the start, then the last word, which may overlap.
    let mut base = 0;
    while base + 8 < n {
        match word_at(bytes, base) {
            Some(v) if word_ok(base, v) => base += 8,
            _ => return false,
        }
    }
    matches!(word_at(bytes, n - 8), Some(v) if word_ok(n - 8, v))
}

/// The eight bytes of `bytes` from `at`, as a little-endian word.
#[inline(always)]
fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk = bytes.get(at..)?.first_chunk::<8>()?;
    Some(u64::from_le_bytes(*chunk))
}

/// The word of `bytes` at `base`, `v`, seen to hold a wildcard (or with `NUL`
/// maybe a zero byte): each of its wildcards must fill its level.
#[inline(always)]
fn wildcards_fill_levels<const NUL: bool>(bytes: &[u8], base: usize, v: u64) -> bool {
    if NUL && any_zero(v) != 0 {
        return false;
    }
    let mut hits = wildcard_bytes(v);
    while hits != 0 {
        if !fills_level(bytes, base + (hits.trailing_zeros() / 8) as usize) {
            return false;
        }
        hits &= hits - 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_match_a_byte_loop() {
        let mut buf = [b'x'; 40];
        for len in 0..=buf.len() {
            assert!(!has_wildcard_or_nul(&buf[..len]));
            assert!(!has_nul(&buf[..len]));
            for at in 0..len {
                for needle in [b'+', b'#', 0] {
                    buf[at] = needle;
                    assert!(has_wildcard_or_nul(&buf[..len]), "{len} {at}");
                    assert_eq!(has_nul(&buf[..len]), needle == 0, "{len} {at}");
                    buf[at] = b'x';
                }
                // Bytes next to a needle in value are not matches.
                for other in [
                    b'*', b',', b'"', b'$', b'\'', b'/', 1, 0x80, 0xab, 0xa3, 0xff,
                ] {
                    buf[at] = other;
                    assert!(!has_wildcard_or_nul(&buf[..len]), "{len} {at}");
                    assert!(!has_nul(&buf[..len]), "{len} {at}");
                    buf[at] = b'x';
                }
            }
        }
    }

    /// Both forms of each test (the vector one is what `has_nul` uses for 16
    /// bytes and more on this target), and the copying forms, against a byte
    /// loop, for every length up to 40 and every position of every needle.
    #[test]
    fn every_form_of_the_scans_matches_a_byte_loop() {
        let nul_word = any_zero;
        let name_word = |v| any_zero(fold_wildcards(v)) | any_zero(v);
        let mut buf = [b'x'; 40];
        for len in 0..=buf.len() {
            for at in 0..=len {
                for needle in [b'+', b'#', 0, b'/', 0xa3, 0xab] {
                    if at < len {
                        buf[at] = needle;
                    }
                    let src = &buf[..len];
                    let nul = src.contains(&0);
                    let bad_name = src.iter().any(|&b| matches!(b, 0 | b'+' | b'#'));
                    assert_eq!(any_swar(src, nul_word), nul, "{len} {at}");
                    assert_eq!(any_swar(src, name_word), bad_name, "{len} {at}");
                    assert_eq!(has_nul(src), nul, "{len} {at}");
                    assert_eq!(has_wildcard_or_nul(src), bad_name, "{len} {at}");
                    let s = core::str::from_utf8(src).unwrap_or("");
                    if s.len() == len {
                        let mut out = [0xee; 40];
                        assert_eq!(copy_nul_free(&mut out[..len], s), !nul, "{len} {at}");
                        if !nul {
                            assert_eq!(&out[..len], src, "{len} {at}");
                        }
                    }
                    let mut out = [0xee; 40];
                    assert_eq!(
                        copy_plain_name(&mut out[..len], src),
                        !bad_name,
                        "{len} {at}"
                    );
                    if !bad_name {
                        assert_eq!(&out[..len], src, "{len} {at}");
                    }
                    if at < len {
                        buf[at] = b'x';
                    }
                }
            }
        }
    }

    /// The copying filter check agrees with the one that only reads, over a
    /// fixed pseudo-random walk of strings made of the bytes that matter.
    #[test]
    fn copying_filter_check_matches_the_reading_one() {
        let alphabet = [b'a', b'/', b'+', b'#', b'/', b' ', 0, b'a'];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut buf = [0u8; 40];
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 41) as usize;
            let mut bits = state >> 6;
            for (i, b) in buf[..len].iter_mut().enumerate() {
                if i % 19 == 18 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    bits = state;
                }
                *b = alphabet[(bits & 7) as usize];
                bits >>= 3;
            }
            let src = &buf[..len];
            let mut out = [0xee; 40];
            let ok = copy_plain_filter(&mut out[..len], src);
            assert_eq!(ok, plain_filter_ok::<true>(src), "{src:?}");
            if ok {
                assert_eq!(&out[..len], src, "{src:?}");
            }
        }
    }

    #[test]
    fn the_loose_filter_test_flags_every_wildcard_and_nul() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut word = [b'a'; 8];
                word[at] = b;
                let flagged = maybe_wildcard_or_nul(u64::from_le_bytes(word)) != 0;
                assert_eq!(flagged, b & 0xd4 == 0, "{b:#x} {at}");
                if matches!(b, 0 | b'+' | b'#') {
                    assert!(flagged, "{b:#x} {at}");
                }
            }
        }
        // Words flagged for a byte that is neither still copy and pass.
        for f in ["a b/c d/e", "x(y)!z", "a\"b*/+/c d"] {
            let mut out = [0u8; 16];
            assert!(copy_plain_filter(&mut out[..f.len()], f.as_bytes()), "{f}");
            assert_eq!(&out[..f.len()], f.as_bytes());
        }
    }

    #[test]
    fn exact_masks_flag_only_their_bytes() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut word = [0x5a; 8];
                word[at] = b;
                let v = u64::from_le_bytes(word);
                let expect = |yes: bool| if yes { 0x80u64 << (8 * at) } else { 0 };
                assert_eq!(zero_bytes(v), expect(b == 0), "{b:#x} {at}");
                assert_eq!(
                    wildcard_bytes(v),
                    expect(b == b'+' || b == b'#'),
                    "{b:#x} {at}"
                );
            }
        }
        // Neighbouring hits do not hide or invent each other.
        let v = u64::from_le_bytes([0, 0, b'+', b'#', 1, 0, b'#', 0x80]);
        assert_eq!(zero_bytes(v), 0x0000_8000_0000_8080);
        assert_eq!(wildcard_bytes(v), 0x0080_0000_8080_0000);
    }
}
