//! Replays the seed corpus of the `broker_connection` fuzz target
//! (fuzz/corpus/broker_connection/, written by fuzz/examples/gen_corpus.rs)
//! as the target does: a valid CONNECT — 3.1.1 when the file's first byte
//! is even, 5.0 when odd — then the rest of the file, raw. Every file ends
//! in a malformed packet or a protocol violation, and its name says what
//! must happen:
//!
//! - `v311-KIND`: the broker closes the connection, sending no DISCONNECT
//!   (3.1.1 has none from the server);
//! - `v5-RR-KIND`: the last packet before the close is DISCONNECT with
//!   reason code RR (hex): 0x81 Malformed Packet, 0x82 Protocol Error, 0x8F
//!   Topic Filter invalid, 0x90 Topic Name invalid, 0x94 Topic Alias
//!   invalid or 0x95 Packet too large.
//!
//! After each, another client is still served. Files with other names
//! (inputs a fuzzing run may have added, named by hash) are not replayed.

mod common;

use std::path::PathBuf;

use common::*;
use mqtt_broker::Config;
use mqtt_codec::{Packet, ProtocolVersion, ReasonCode};

/// The reason codes a server closes a connection with for bad input.
const ALLOWED: [u8; 6] = [0x81, 0x82, 0x8f, 0x90, 0x94, 0x95];

struct Case {
    name: String,
    version: ProtocolVersion,
    /// The MQTT 5 DISCONNECT reason code the name asks for.
    reason: Option<u8>,
    rest: Vec<u8>,
}

fn corpus() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fuzz/corpus/broker_connection");
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (version, reason) = if let Some(rest) = name.strip_prefix("v5-") {
            let code = rest.split('-').next().unwrap();
            let code = u8::from_str_radix(code, 16)
                .unwrap_or_else(|_| panic!("{name}: no reason code after v5-"));
            (ProtocolVersion::V5, Some(code))
        } else if name.starts_with("v311-") {
            (ProtocolVersion::V3_1_1, None)
        } else {
            continue;
        };
        let bytes = std::fs::read(&path).unwrap();
        let (&selector, rest) = bytes.split_first().expect("empty corpus file");
        let selected = if selector % 2 == 0 {
            ProtocolVersion::V3_1_1
        } else {
            ProtocolVersion::V5
        };
        assert_eq!(selected, version, "{name}: first byte and name disagree");
        if let Some(r) = reason {
            assert!(
                ALLOWED.contains(&r),
                "{name}: {r:#04x} is not a reason for bad input"
            );
        }
        cases.push(Case {
            name,
            version,
            reason,
            rest: rest.to_vec(),
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

fn encode(v: ProtocolVersion, packet: &Packet<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; packet.encoded_len(v).unwrap()];
    packet.encode(v, &mut buf).unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_input_in_the_fuzz_corpus_closes_the_connection() {
    let cases = corpus();
    assert!(
        cases.iter().filter(|c| c.version.is_v5()).count() >= 20
            && cases.iter().filter(|c| !c.version.is_v5()).count() >= 15,
        "the seed corpus is missing; run `cargo run --example gen_corpus` in fuzz/"
    );
    // The fuzz target's configuration.
    let broker = broker_with(Config {
        max_packet_size: 65536,
        ..Config::ephemeral()
    })
    .await;
    let addr = broker.local_addr();
    let mut failures = Vec::new();
    for case in &cases {
        let v = case.version;
        let errors_before = broker.stats().protocol_errors.get();
        let mut c = RawClient::open(addr, v).await;
        let mut bytes = encode(v, &Packet::Connect(connect_packet(v, "fuzz", true)));
        bytes.extend_from_slice(&case.rest);
        c.send_raw(&bytes).await;
        let got = c.expect_close().await;
        let packets: Vec<Packet<'_>> = got.iter().map(|r| r.packet()).collect();
        match packets.first() {
            Some(Packet::ConnAck(a)) if a.reason == ReasonCode::Success => {}
            other => panic!("{}: expected CONNACK first, got {other:?}", case.name),
        }
        let last = packets.last().unwrap();
        let ok = match (case.reason, last) {
            (Some(r), Packet::Disconnect(d)) => d.reason.as_u8() == r,
            (Some(_), _) => false,
            (None, p) => !matches!(p, Packet::Disconnect(_)),
        };
        if !ok {
            failures.push(format!("{}: ended with {last:?}", case.name));
        }
        if broker.stats().protocol_errors.get() != errors_before + 1 {
            failures.push(format!("{}: not counted as one protocol error", case.name));
        }
        assert_still_serving(addr, v).await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    broker.shutdown().await;
}
