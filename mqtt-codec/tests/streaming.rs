//! Streaming: input split anywhere decodes to the same packets as the whole
//! buffer, and a strict prefix of a packet is always `Partial`, with the exact
//! number of missing bytes once the fixed header is complete.

mod common;

use common::*;
use mqtt_codec::{check_header, decode, DecodeOptions, Needed, ProtocolVersion, Status};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// Encoded packets and the stream they make back to back.
struct Stream {
    packets: Vec<OPacket>,
    frames: Vec<Vec<u8>>,
    bytes: Vec<u8>,
}

impl Stream {
    fn new(packets: Vec<OPacket>, version: ProtocolVersion) -> Stream {
        let frames: Vec<Vec<u8>> = packets.iter().map(|p| p.encode(version)).collect();
        let bytes = frames.concat();
        Stream {
            packets,
            frames,
            bytes,
        }
    }
}

/// Decodes the whole buffer at once, walking it with a cursor.
fn decode_all(bytes: &[u8], version: ProtocolVersion) -> Vec<OPacket> {
    let opts = DecodeOptions::new(version);
    let mut at = 0;
    let mut out = Vec::new();
    while at < bytes.len() {
        match decode(&bytes[at..], &opts) {
            Ok(Status::Complete((p, n))) => {
                out.push(OPacket::from_packet(&p));
                at += n;
            }
            other => panic!("at {at}: {other:?}"),
        }
    }
    out
}

/// What a network reader does: append each read to a buffer, decode as many
/// packets as it holds, drain what they used, and wait for more on
/// `Partial`. `cuts` are the offsets where one read ends and the next begins.
///
/// Every `Partial` is checked against the frame being assembled: before its
/// fixed header is complete it must be `Unknown`, after it the exact number
/// of missing bytes.
fn read_in_chunks(stream: &Stream, cuts: &[usize], version: ProtocolVersion) -> Vec<OPacket> {
    let opts = DecodeOptions::new(version);
    let mut buffer: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut start = 0;
    let ends = cuts
        .iter()
        .copied()
        .chain(std::iter::once(stream.bytes.len()));
    for end in ends {
        buffer.extend_from_slice(&stream.bytes[start..end]);
        start = end;
        loop {
            match decode(&buffer, &opts) {
                Ok(Status::Complete((p, used))) => {
                    let frame = &stream.frames[out.len()];
                    assert_eq!(used, frame.len());
                    out.push(OPacket::from_packet(&p));
                    buffer.drain(..used);
                }
                Ok(Status::Partial(needed)) => {
                    if let Some(frame) = stream.frames.get(out.len()) {
                        check_partial(frame, buffer.len(), needed);
                    } else {
                        assert!(buffer.is_empty());
                    }
                    break;
                }
                Err(e) => panic!("{e:?} with {} bytes buffered", buffer.len()),
            }
        }
    }
    assert!(buffer.is_empty(), "{} bytes left over", buffer.len());
    out
}

/// `needed` is right for a buffer holding the first `have` bytes of `frame`.
fn check_partial(frame: &[u8], have: usize, needed: Needed) {
    assert!(have < frame.len());
    let Ok(Status::Complete(header)) = check_header(frame, u32::MAX) else {
        panic!("bad frame");
    };
    if have < header.header_len {
        assert_eq!(needed, Needed::Unknown, "{have} bytes of {frame:02x?}");
    } else {
        assert_eq!(
            needed,
            Needed::Bytes(frame.len() - have),
            "{have} bytes of {frame:02x?}"
        );
    }
}

/// Every strict prefix of `frame` is `Partial` with the right `Needed`.
fn check_prefixes(frame: &[u8], version: ProtocolVersion) {
    let opts = DecodeOptions::new(version);
    for k in 0..frame.len() {
        match decode(&frame[..k], &opts) {
            Ok(Status::Partial(needed)) => check_partial(frame, k, needed),
            other => panic!("prefix of {k} bytes of {frame:02x?}: {other:?}"),
        }
    }
}

fn sample_stream(version: ProtocolVersion) -> Stream {
    // Every sample twice, the second time in reverse order, so each packet
    // type follows several others.
    let mut packets = sample_packets(version);
    let reversed: Vec<OPacket> = packets.iter().rev().cloned().collect();
    packets.extend(reversed);
    Stream::new(packets, version)
}

#[test]
fn every_strict_prefix_of_a_sample_packet_is_partial() {
    for version in VERSIONS {
        for op in sample_packets(version) {
            check_prefixes(&op.encode(version), version);
        }
    }
}

#[test]
fn a_stream_split_at_every_byte_boundary_decodes_the_same() {
    for version in VERSIONS {
        let stream = sample_stream(version);
        assert!(stream.bytes.len() > 1000, "a moderate but varied input");
        let whole = decode_all(&stream.bytes, version);
        assert_eq!(whole, stream.packets);
        for cut in 0..=stream.bytes.len() {
            assert_eq!(
                read_in_chunks(&stream, &[cut], version),
                whole,
                "split at {cut}"
            );
        }
    }
}

#[test]
fn a_stream_fed_one_byte_at_a_time_decodes_the_same() {
    for version in VERSIONS {
        let stream = sample_stream(version);
        let cuts: Vec<usize> = (1..stream.bytes.len()).collect();
        assert_eq!(read_in_chunks(&stream, &cuts, version), stream.packets);
    }
}

#[test]
fn a_stream_fed_in_reads_of_every_fixed_size_decodes_the_same() {
    let version = V5;
    let stream = sample_stream(version);
    for size in 2..64 {
        let cuts: Vec<usize> = (1..)
            .map(|i| i * size)
            .take_while(|&c| c < stream.bytes.len())
            .collect();
        assert_eq!(
            read_in_chunks(&stream, &cuts, version),
            stream.packets,
            "reads of {size}"
        );
    }
}

/// Decoding borrows: a packet decoded from the front of a buffer is
/// independent of what follows it, even a partial packet.
#[test]
fn a_complete_packet_followed_by_a_partial_one_is_decoded() {
    let version = V3_1_1;
    let stream = sample_stream(version);
    let first = &stream.frames[0];
    let second = &stream.frames[1];
    for k in 0..second.len() {
        let mut buf = first.clone();
        buf.extend_from_slice(&second[..k]);
        let Ok(Status::Complete((p, n))) = decode(&buf, &DecodeOptions::new(version)) else {
            panic!("with {k} bytes of the second packet");
        };
        assert_eq!(n, first.len());
        assert_eq!(OPacket::from_packet(&p), stream.packets[0]);
        check_partial(
            second,
            k,
            match decode(&buf[n..], &DecodeOptions::new(version)) {
                Ok(Status::Partial(needed)) => needed,
                other => panic!("{other:?}"),
            },
        );
    }
}

fn arb_stream() -> impl Strategy<Value = (ProtocolVersion, Vec<OPacket>, Vec<Index>)> {
    arb_version().prop_flat_map(|v| {
        (
            Just(v),
            vec(arb_packet(v), 1..10),
            vec(any::<Index>(), 0..12),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_packet_sequences_split_at_random_points_decode_the_same(
        (version, packets, cuts) in arb_stream()
    ) {
        let stream = Stream::new(packets, version);
        let whole = decode_all(&stream.bytes, version);
        prop_assert_eq!(&whole, &stream.packets);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.bytes.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(read_in_chunks(&stream, &cuts, version), whole);
    }

    #[test]
    fn every_strict_prefix_of_a_random_packet_is_partial(
        (version, op) in arb_versioned_packet()
    ) {
        check_prefixes(&op.encode(version), version);
    }
}
