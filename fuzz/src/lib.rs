//! The checks behind the fuzz targets, kept in a library so that every target
//! (and `examples/gen_corpus.rs`) shares them.
//!
//! Every check panics on failure, which libFuzzer reports as a crash.

use mqtt_codec::topic::{matches, parse_shared, valid_topic_filter, valid_topic_name};
use mqtt_codec::{
    check_header, decode, DecodeError, DecodeOptions, Needed, Packet, ProtocolVersion, Status,
    MAX_PACKET_SIZE,
};

/// All protocol versions, in the order the roundtrip target's first byte picks
/// them (`byte % 3`).
pub const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// The version selected by the roundtrip target's first byte.
pub fn version_from_byte(b: u8) -> ProtocolVersion {
    VERSIONS[usize::from(b % 3)]
}

/// Decodes `data` as a stream of packets for a connection speaking `version`,
/// until an error or a partial packet, checking every decoded packet with
/// [`check_decoded`].
pub fn decode_stream(data: &[u8], version: ProtocolVersion) {
    let opts = DecodeOptions::new(version);
    let mut rest = data;
    loop {
        match decode(rest, &opts) {
            Ok(Status::Complete((packet, used))) => {
                check_decoded(rest, version, &packet, used);
                rest = &rest[used..];
            }
            Ok(Status::Partial(needed)) => {
                if let Needed::Bytes(n) = needed {
                    assert!(n > 0, "Partial(Bytes(0)) for {rest:02x?}");
                }
                return;
            }
            Err(_) => return,
        }
    }
}

/// Checks one packet decoded from the start of `buf` using `used` bytes:
///
/// - every strict prefix of it is `Partial`, with the exact count of missing
///   bytes once the fixed header is complete;
/// - a maximum packet size of exactly `used` accepts it and one less refuses
///   it from the header;
/// - in every version: `encoded_len` agrees with `encode` (bytes written, or
///   the same error), a buffer one byte short is refused with the right
///   `required`, and whatever encodes decodes again in that version into a
///   packet that re-encodes to the same bytes. When the target version reads
///   the packet the same way as `version` (same version, 3.1 vs 3.1.1, or a
///   CONNECT, which carries its own), the re-decoded packet is equal.
pub fn check_decoded<'a>(
    buf: &'a [u8],
    version: ProtocolVersion,
    packet: &Packet<'a>,
    used: usize,
) {
    assert!(
        used >= 2 && used <= buf.len(),
        "used {used} of {}",
        buf.len()
    );
    let opts = DecodeOptions::new(version);
    let whole = &buf[..used];

    let header_len = match check_header(whole, MAX_PACKET_SIZE) {
        Ok(Status::Complete(h)) => {
            assert_eq!(h.packet_len(), used, "header of {whole:02x?}");
            h.header_len
        }
        other => panic!("check_header({whole:02x?}) gave {other:?}"),
    };
    for k in 0..used {
        let got = decode(&whole[..k], &opts);
        let want = if k < header_len {
            Needed::Unknown
        } else {
            Needed::Bytes(used - k)
        };
        assert_eq!(
            got,
            Ok(Status::Partial(want)),
            "{k}-byte prefix of {whole:02x?}"
        );
    }

    let exact = DecodeOptions {
        version,
        max_packet_size: used as u32,
    };
    match decode(whole, &exact) {
        Ok(Status::Complete((p, n))) => {
            assert_eq!(n, used);
            assert_eq!(&p, packet);
        }
        other => panic!("max_packet_size = size refused {whole:02x?}: {other:?}"),
    }
    let short = DecodeOptions {
        version,
        max_packet_size: used as u32 - 1,
    };
    assert_eq!(
        decode(whole, &short),
        Err(DecodeError::PacketTooLarge {
            size: used,
            max: used as u32 - 1
        }),
        "max_packet_size = size - 1 for {whole:02x?}"
    );

    for v in VERSIONS {
        let same_reading = v == version
            || (!v.is_v5() && !version.is_v5())
            || matches!(packet, Packet::Connect(_));
        check_encode(packet, v, same_reading);
    }
}

/// Encodes `packet` for `v` and checks the result (see [`check_decoded`]).
fn check_encode(packet: &Packet<'_>, v: ProtocolVersion, expect_equal: bool) {
    let len = match packet.encoded_len(v) {
        Ok(len) => len,
        Err(e) => {
            // encode computes the same layout before it looks at the buffer.
            assert_eq!(
                packet.encode(v, &mut []),
                Err(e),
                "encoded_len and encode disagree for {v:?}: {packet:?}"
            );
            return;
        }
    };
    let mut out = vec![0u8; len];
    match packet.encode(v, &mut out) {
        Ok(n) => assert_eq!(n, len, "encoded_len != bytes written for {v:?}: {packet:?}"),
        Err(e) => {
            panic!("encoded_len Ok({len}) but encode failed with {e:?} for {v:?}: {packet:?}")
        }
    }
    let mut short = vec![0u8; len - 1];
    assert_eq!(
        packet.encode(v, &mut short),
        Err(mqtt_codec::EncodeError::BufferTooSmall { required: len }),
        "one-byte-short buffer for {v:?}: {packet:?}"
    );

    let again = match decode(&out, &DecodeOptions::new(v)) {
        Ok(Status::Complete((p, n))) => {
            assert_eq!(
                n, len,
                "re-decode used {n} of {len} bytes for {v:?}: {out:02x?}"
            );
            p
        }
        other => panic!("encoded {v:?} bytes {out:02x?} of {packet:?} do not decode: {other:?}"),
    };
    if expect_equal {
        assert_eq!(
            &again, packet,
            "{v:?} round trip changed the packet; bytes {out:02x?}"
        );
    }
    let mut out2 = vec![0u8; len];
    assert_eq!(
        again.encode(v, &mut out2),
        Ok(len),
        "re-encode {v:?}: {again:?}"
    );
    assert_eq!(
        out, out2,
        "re-encoding is not stable for {v:?}: {packet:?} / {again:?}"
    );
}

/// The roundtrip target: the first byte picks the version, the rest is a
/// stream of packets. Every packet that decodes must encode; decoding that
/// gives an equal packet, which encodes to identical bytes.
pub fn roundtrip(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let version = version_from_byte(first);
    let opts = DecodeOptions::new(version);
    while let Ok(Status::Complete((packet, used))) = decode(rest, &opts) {
        rest = &rest[used..];
        // A CONNECT is encoded in its own protocol version whatever `version`
        // says; every other packet in `version`.
        let first = match packet.encoded_len(version) {
            Ok(len) => {
                let mut out = vec![0u8; len];
                match packet.encode(version, &mut out) {
                    Ok(n) => assert_eq!(n, len, "encoded_len != written: {packet:?}"),
                    Err(e) => panic!("decoded packet does not encode ({e:?}): {packet:?}"),
                }
                out
            }
            Err(e) => panic!("decoded packet does not encode ({e:?}): {packet:?}"),
        };
        let again = match decode(&first, &opts) {
            Ok(Status::Complete((p, n))) => {
                assert_eq!(n, first.len(), "re-decode left bytes: {first:02x?}");
                p
            }
            other => panic!("encoding {first:02x?} of {packet:?} does not decode: {other:?}"),
        };
        assert_eq!(
            packet, again,
            "round trip changed the packet; bytes {first:02x?}"
        );
        let mut second = vec![0u8; first.len()];
        assert_eq!(again.encode(version, &mut second), Ok(first.len()));
        assert_eq!(first, second, "second encoding differs: {packet:?}");
    }
}

/// The topic_match target: `filter 0xff topic`, both UTF-8.
pub fn topic_match(data: &[u8]) {
    let Some(split) = data.iter().position(|&b| b == 0xff) else {
        return;
    };
    let (Ok(filter), Ok(topic)) = (
        core::str::from_utf8(&data[..split]),
        core::str::from_utf8(&data[split + 1..]),
    ) else {
        return;
    };

    // Validation of both strings in both roles.
    for s in [filter, topic] {
        assert_eq!(
            valid_topic_name(s),
            ref_valid_name(s),
            "valid_topic_name({s:?})"
        );
        assert_eq!(
            valid_topic_filter(s),
            ref_valid_filter(s),
            "valid_topic_filter({s:?})"
        );
        let shared = parse_shared(s);
        if let Some(rest) = s.strip_prefix("$share/") {
            let expect = ref_split_shared(rest);
            if valid_topic_filter(s) {
                assert_eq!(
                    shared.map(|sh| (sh.group, sh.filter)),
                    expect,
                    "parse_shared({s:?})"
                );
            }
            if shared.is_some() && !s.contains('\0') {
                assert!(valid_topic_filter(s), "parse_shared accepts invalid {s:?}");
            }
        } else {
            assert_eq!(shared, None, "parse_shared({s:?})");
        }
    }

    if valid_topic_name(topic) {
        assert!(
            matches(topic, topic),
            "a topic name does not match itself: {topic:?}"
        );
    }
    if filter.starts_with("$share/") || !valid_topic_filter(filter) || !valid_topic_name(topic) {
        return;
    }
    assert_eq!(
        matches(filter, topic),
        ref_matches(filter, topic),
        "matches({filter:?}, {topic:?})"
    );
}

/// Reference: a topic name is non-empty, at most 65,535 bytes, and has no
/// `+`, `#` or NUL.
pub fn ref_valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 65_535 && !s.contains(['+', '#', '\0'])
}

/// Reference: every level is `+`, `#` (last level only) or free of both.
fn ref_valid_plain_filter(s: &str) -> bool {
    let levels: Vec<&str> = s.split('/').collect();
    !s.is_empty()
        && levels.iter().enumerate().all(|(i, level)| match *level {
            "+" => true,
            "#" => i == levels.len() - 1,
            l => !l.contains(['+', '#']),
        })
}

/// Reference: `{group}/{filter}` after `$share/`, with a non-empty group free
/// of `+`, `#` (and `/`, which ends it) and a valid plain filter.
fn ref_split_shared(rest: &str) -> Option<(&str, &str)> {
    let slash = rest.find('/')?;
    let (group, filter) = (&rest[..slash], &rest[slash + 1..]);
    (!group.is_empty() && !group.contains(['+', '#']) && ref_valid_plain_filter(filter))
        .then_some((group, filter))
}

/// Reference: a filter is non-empty, at most 65,535 bytes, has no NUL, and is
/// a valid plain filter or a valid `$share/{group}/{filter}`.
pub fn ref_valid_filter(s: &str) -> bool {
    if s.is_empty() || s.len() > 65_535 || s.contains('\0') {
        return false;
    }
    match s.strip_prefix("$share/") {
        Some(rest) => ref_split_shared(rest).is_some(),
        None => ref_valid_plain_filter(s),
    }
}

/// Reference matcher for a valid non-shared filter and a valid topic name,
/// recursive over `/`-separated levels: `+` matches exactly one level, `#`
/// (always last) matches zero or more remaining levels, anything else matches
/// an equal level. A topic starting with `$` is not matched by a filter whose
/// first character is a wildcard.
pub fn ref_matches(filter: &str, topic: &str) -> bool {
    fn levels(f: &[&str], t: &[&str]) -> bool {
        match (f.split_first(), t.split_first()) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some((&"#", rest)), _) => rest.is_empty(),
            (Some(_), None) => false,
            (Some((&"+", f_rest)), Some((_, t_rest))) => levels(f_rest, t_rest),
            (Some((fl, f_rest)), Some((tl, t_rest))) => fl == tl && levels(f_rest, t_rest),
        }
    }
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    levels(&f, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_matcher_follows_the_spec_examples() {
        assert!(ref_matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1"
        ));
        assert!(ref_matches("sport/#", "sport"));
        assert!(ref_matches("#", "a/b/c"));
        assert!(ref_matches("+/+", "/finance"));
        assert!(ref_matches("/+", "/finance"));
        assert!(!ref_matches("+", "/finance"));
        assert!(!ref_matches("sport/+", "sport/tennis/player1"));
        assert!(!ref_matches("#", "$SYS/x"));
        assert!(!ref_matches("+/x", "$SYS/x"));
        assert!(ref_matches("$SYS/#", "$SYS/x"));
        assert!(ref_matches("+/#", "a"));
        assert!(!ref_matches("a/+", "a"));
    }
}
