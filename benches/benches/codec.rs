//! Decode and encode benchmarks of `mqtt-codec` against rumqttc's `mqttbytes`,
//! on the same bytes, side by side in the same criterion groups
//! (`decode/publish/1KiB` with the functions `mqtt-codec` and `rumqttc`).
//!
//! Every case is checked before it is measured: both codecs encode the packet
//! to identical bytes, and both decode those bytes back to the packet they
//! started from. `cargo test --benches` runs each benchmark once, so these
//! checks double as a test.
//!
//! Fairness:
//! - Decode. `mqtt-codec` decodes from a `&[u8]`. rumqttc's `Packet::read`
//!   consumes a `BytesMut`, so each iteration gets its own copy, made by the
//!   untimed setup of `iter_batched`. The copy is put in the shared (ARC)
//!   state a streaming read buffer is in after its first `split_to`, so the
//!   timed read does not pay the one-off promotion allocation. The returned
//!   packet and buffer are dropped outside the timing. Batches are sized to
//!   stay cache-resident (see [`batch`]).
//! - Encode. `mqtt-codec` writes into a reused `&mut [u8]`; rumqttc writes into
//!   a reused `BytesMut` that is `clear()`ed each time, so it never allocates.
//! - Both use their top-level packet API (`decode` / `Packet::read`,
//!   `Packet::encode` / `Packet::write`), which dispatch on the packet type.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use mqtt_codec::{
    decode, ConnAck, Connect, DecodeOptions, Disconnect, LastWill, List, Packet, Pid, Properties,
    Property, ProtocolVersion, PubResp, Publish, QoS, QosPid, ReasonCode, Status, SubAck,
    SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

/// The largest remaining length MQTT allows; passed to rumqttc as its limit.
const MAX_REMAINING: usize = 268_435_455;

const TOPIC: &str = "home/livingroom/sensor-42/temperature";
const CLIENT_ID: &str = "bench-client-0001";
const WILL_TOPIC: &str = "clients/bench-client-0001/status";
const USERNAME: &str = "bench-user";
const PASSWORD: &str = "bench-password";
const FILTERS: [(&str, QoS); 3] = [
    ("home/+/temperature", QoS::AtLeastOnce),
    ("alerts/#", QoS::ExactlyOnce),
    ("status/online", QoS::AtMostOnce),
];

fn pid(v: u16) -> Pid {
    Pid::new(v).expect("non-zero packet identifier")
}

/// rumqttc's side of a case: a 3.1.1 or a 5.0 packet.
enum Theirs {
    V4(v4::Packet),
    V5(Box<v5::Packet>),
}

impl Theirs {
    fn write(&self, out: &mut BytesMut) -> usize {
        match self {
            Theirs::V4(p) => p.write(out, MAX_REMAINING).expect("rumqttc encodes"),
            Theirs::V5(p) => p
                .write(out, Some(MAX_REMAINING as u32))
                .expect("rumqttc encodes"),
        }
    }
}

/// Iterations per `iter_batched` batch: enough to amortise the timer, few
/// enough that the batch's copies (about 256 KiB in all) stay in L2, as a
/// streaming read buffer would. Larger batches would charge rumqttc for cache
/// misses on inputs `mqtt-codec` never has.
fn batch(frame_len: usize) -> BatchSize {
    BatchSize::NumIterations(((256 * 1024) / (frame_len + 64)).clamp(8, 1024) as u64)
}

/// A fresh copy of `template` in the shared state.
fn shared_copy(template: &BytesMut) -> BytesMut {
    let mut buf = template.clone();
    let at = buf.len();
    drop(buf.split_off(at));
    buf
}

/// Checks that both codecs agree on `ours` / `theirs`, then benchmarks
/// decoding and encoding it as `decode/{id}` and `encode/{id}`.
fn compare(
    c: &mut Criterion,
    id: &str,
    version: ProtocolVersion,
    ours: &Packet<'_>,
    theirs: &Theirs,
) {
    let opts = DecodeOptions::new(version);
    let len = ours
        .encoded_len(version)
        .expect("mqtt-codec sizes the packet");
    let mut frame = vec![0u8; len];
    assert_eq!(ours.encode(version, &mut frame), Ok(len), "{id}");
    let mut their_frame = BytesMut::new();
    assert_eq!(theirs.write(&mut their_frame), len, "{id}");
    assert_eq!(
        &their_frame[..],
        &frame[..],
        "{id}: the codecs encode differently"
    );

    match decode(&frame, &opts) {
        Ok(Status::Complete((decoded, used))) => {
            assert_eq!(used, len, "{id}");
            assert_eq!(&decoded, ours, "{id}: mqtt-codec round trip");
        }
        other => panic!("{id}: mqtt-codec failed to decode: {other:?}"),
    }
    let template = BytesMut::from(&frame[..]);
    match theirs {
        Theirs::V4(p) => {
            let decoded = v4::Packet::read(&mut shared_copy(&template), MAX_REMAINING);
            assert_eq!(decoded.as_ref().ok(), Some(p), "{id}: rumqttc round trip");
        }
        Theirs::V5(p) => {
            let decoded = v5::Packet::read(&mut shared_copy(&template), Some(MAX_REMAINING as u32));
            assert_eq!(
                decoded.as_ref().ok(),
                Some(&**p),
                "{id}: rumqttc round trip"
            );
        }
    }

    let mut group = c.benchmark_group(format!("decode/{id}"));
    group.bench_function("mqtt-codec", |b| {
        b.iter(|| decode(black_box(&frame), black_box(&opts)))
    });
    match theirs {
        Theirs::V4(_) => group.bench_function("rumqttc", |b| {
            b.iter_batched(
                || shared_copy(&template),
                |mut buf| (v4::Packet::read(&mut buf, black_box(MAX_REMAINING)), buf),
                batch(len),
            )
        }),
        Theirs::V5(_) => group.bench_function("rumqttc", |b| {
            b.iter_batched(
                || shared_copy(&template),
                |mut buf| {
                    let max = Some(black_box(MAX_REMAINING as u32));
                    (v5::Packet::read(&mut buf, max), buf)
                },
                batch(len),
            )
        }),
    };
    group.finish();

    let mut group = c.benchmark_group(format!("encode/{id}"));
    let mut out = vec![0u8; len];
    group.bench_function("mqtt-codec", |b| {
        b.iter(|| black_box(ours).encode(version, black_box(&mut out[..])))
    });
    let mut out = BytesMut::with_capacity(len);
    match theirs {
        Theirs::V4(p) => group.bench_function("rumqttc", |b| {
            b.iter(|| {
                out.clear();
                black_box(p).write(black_box(&mut out), MAX_REMAINING)
            })
        }),
        Theirs::V5(p) => group.bench_function("rumqttc", |b| {
            b.iter(|| {
                out.clear();
                black_box(p).write(black_box(&mut out), Some(MAX_REMAINING as u32))
            })
        }),
    };
    group.finish();
}

fn v3_connect(c: &mut Criterion) {
    let ours = Packet::Connect(Connect {
        protocol: ProtocolVersion::V3_1_1,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::EMPTY,
        client_id: CLIENT_ID,
        will: Some(LastWill {
            topic: WILL_TOPIC,
            payload: b"offline",
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::EMPTY,
        }),
        username: Some(USERNAME),
        password: Some(PASSWORD.as_bytes()),
    });
    let theirs = v4::Packet::Connect(v4::Connect {
        protocol: rumqttc::mqttbytes::Protocol::V4,
        keep_alive: 60,
        client_id: CLIENT_ID.into(),
        clean_session: true,
        last_will: Some(v4::LastWill::new(
            WILL_TOPIC,
            "offline",
            rumqttc::mqttbytes::QoS::AtLeastOnce,
            true,
        )),
        login: Some(v4::Login::new(USERNAME, PASSWORD)),
    });
    compare(
        c,
        "connect",
        ProtocolVersion::V3_1_1,
        &ours,
        &Theirs::V4(theirs),
    );
}

fn v3_connack(c: &mut Criterion) {
    let ours = Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::Success,
        properties: Properties::EMPTY,
    });
    let theirs = v4::Packet::ConnAck(v4::ConnAck::new(v4::ConnectReturnCode::Success, false));
    compare(
        c,
        "connack",
        ProtocolVersion::V3_1_1,
        &ours,
        &Theirs::V4(theirs),
    );
}

fn v3_publish(c: &mut Criterion) {
    for (name, size) in [("16B", 16), ("1KiB", 1024), ("64KiB", 64 * 1024)] {
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let ours = Packet::Publish(Publish {
            qos_pid: QosPid::AtLeastOnce(pid(10)),
            ..Publish::new(TOPIC, &payload)
        });
        let mut theirs = v4::Publish::from_bytes(
            TOPIC,
            rumqttc::mqttbytes::QoS::AtLeastOnce,
            Bytes::from(payload.clone()),
        );
        theirs.pkid = 10;
        compare(
            c,
            &format!("publish/{name}"),
            ProtocolVersion::V3_1_1,
            &ours,
            &Theirs::V4(v4::Packet::Publish(theirs)),
        );
    }
}

fn v3_acks(c: &mut Criterion) {
    let resp = PubResp::new(pid(10));
    let cases = [
        (
            "puback",
            Packet::PubAck(resp),
            v4::Packet::PubAck(v4::PubAck::new(10)),
        ),
        (
            "pubrec",
            Packet::PubRec(resp),
            v4::Packet::PubRec(v4::PubRec::new(10)),
        ),
        (
            "pubrel",
            Packet::PubRel(resp),
            v4::Packet::PubRel(v4::PubRel::new(10)),
        ),
        (
            "pubcomp",
            Packet::PubComp(resp),
            v4::Packet::PubComp(v4::PubComp::new(10)),
        ),
    ];
    for (name, ours, theirs) in cases {
        compare(c, name, ProtocolVersion::V3_1_1, &ours, &Theirs::V4(theirs));
    }
}

fn v3_subscribe(c: &mut Criterion) {
    let filters = FILTERS.map(|(filter, qos)| SubscribeFilter {
        filter,
        options: SubscriptionOptions::qos(qos),
    });
    let ours = Packet::Subscribe(mqtt_codec::Subscribe {
        pid: pid(11),
        properties: Properties::EMPTY,
        filters: List::from_slice(&filters),
    });
    let mut theirs = v4::Subscribe::new_many(FILTERS.map(|(filter, qos)| {
        let qos = match qos {
            QoS::AtMostOnce => rumqttc::mqttbytes::QoS::AtMostOnce,
            QoS::AtLeastOnce => rumqttc::mqttbytes::QoS::AtLeastOnce,
            QoS::ExactlyOnce => rumqttc::mqttbytes::QoS::ExactlyOnce,
        };
        v4::SubscribeFilter::new(filter.into(), qos)
    }));
    theirs.pkid = 11;
    compare(
        c,
        "subscribe",
        ProtocolVersion::V3_1_1,
        &ours,
        &Theirs::V4(v4::Packet::Subscribe(theirs)),
    );
}

fn v3_suback(c: &mut Criterion) {
    let codes = [
        ReasonCode::GrantedQoS1,
        ReasonCode::GrantedQoS2,
        ReasonCode::UnspecifiedError,
    ];
    let ours = Packet::SubAck(SubAck {
        pid: pid(11),
        properties: Properties::EMPTY,
        codes: List::from_slice(&codes),
    });
    let theirs = v4::SubAck::new(
        11,
        vec![
            v4::SubscribeReasonCode::Success(rumqttc::mqttbytes::QoS::AtLeastOnce),
            v4::SubscribeReasonCode::Success(rumqttc::mqttbytes::QoS::ExactlyOnce),
            v4::SubscribeReasonCode::Failure,
        ],
    );
    compare(
        c,
        "suback",
        ProtocolVersion::V3_1_1,
        &ours,
        &Theirs::V4(v4::Packet::SubAck(theirs)),
    );
}

fn v3_unsubscribe(c: &mut Criterion) {
    let filters = [FILTERS[0].0, FILTERS[1].0];
    let ours = Packet::Unsubscribe(Unsubscribe {
        pid: pid(12),
        properties: Properties::EMPTY,
        filters: List::from_slice(&filters),
    });
    let theirs = v4::Unsubscribe {
        pkid: 12,
        topics: filters.map(String::from).to_vec(),
    };
    compare(
        c,
        "unsubscribe",
        ProtocolVersion::V3_1_1,
        &ours,
        &Theirs::V4(v4::Packet::Unsubscribe(theirs)),
    );
    let ours = Packet::UnsubAck(UnsubAck {
        pid: pid(12),
        properties: Properties::EMPTY,
        codes: List::from_slice(&[]),
    });
    let theirs = v4::Packet::UnsubAck(v4::UnsubAck::new(12));
    compare(
        c,
        "unsuback",
        ProtocolVersion::V3_1_1,
        &ours,
        &Theirs::V4(theirs),
    );
}

fn v3_empty(c: &mut Criterion) {
    let cases = [
        ("pingreq", Packet::PingReq, v4::Packet::PingReq),
        ("pingresp", Packet::PingResp, v4::Packet::PingResp),
        (
            "disconnect",
            Packet::Disconnect(Disconnect::NORMAL),
            v4::Packet::Disconnect,
        ),
    ];
    for (name, ours, theirs) in cases {
        compare(c, name, ProtocolVersion::V3_1_1, &ours, &Theirs::V4(theirs));
    }
}

fn v5_publish(c: &mut Criterion) {
    let payload: Vec<u8> = (0..16).map(|i| i as u8).collect();
    // In the order rumqttc writes them, so both encode the same bytes.
    let props = [
        Property::PayloadFormatIndicator(true),
        Property::MessageExpiryInterval(3600),
        Property::ResponseTopic("replies/sensor-42"),
        Property::CorrelationData(b"req-000001"),
        Property::UserProperty("trace-id", "4bf92f3577b34da6"),
        Property::ContentType("application/json"),
    ];
    let ours = Packet::Publish(Publish {
        qos_pid: QosPid::AtLeastOnce(pid(10)),
        properties: Properties::from_slice(&props),
        ..Publish::new(TOPIC, &payload)
    });
    let mut theirs = v5::Publish::new(
        TOPIC,
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        payload.clone(),
        Some(v5::PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(3600),
            topic_alias: None,
            response_topic: Some("replies/sensor-42".into()),
            correlation_data: Some(Bytes::from_static(b"req-000001")),
            user_properties: vec![("trace-id".into(), "4bf92f3577b34da6".into())],
            subscription_identifiers: Vec::new(),
            content_type: Some("application/json".into()),
        }),
    );
    theirs.pkid = 10;
    compare(
        c,
        "v5/publish",
        ProtocolVersion::V5,
        &ours,
        &Theirs::V5(Box::new(v5::Packet::Publish(theirs))),
    );
}

fn v5_connect(c: &mut Criterion) {
    // In the order rumqttc writes them, so both encode the same bytes.
    let props = [
        Property::SessionExpiryInterval(3600),
        Property::ReceiveMaximum(100),
        Property::MaximumPacketSize(1 << 20),
        Property::TopicAliasMaximum(16),
        Property::RequestResponseInformation(true),
        Property::RequestProblemInformation(true),
        Property::UserProperty("app", "bench"),
    ];
    let will_props = [
        Property::WillDelayInterval(30),
        Property::PayloadFormatIndicator(true),
        Property::ContentType("text/plain"),
    ];
    let ours = Packet::Connect(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::from_slice(&props),
        client_id: CLIENT_ID,
        will: Some(LastWill {
            topic: WILL_TOPIC,
            payload: b"offline",
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::from_slice(&will_props),
        }),
        username: Some(USERNAME),
        password: Some(PASSWORD.as_bytes()),
    });
    let connect = v5::Connect {
        keep_alive: 60,
        client_id: CLIENT_ID.into(),
        clean_start: true,
        properties: Some(v5::ConnectProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(100),
            max_packet_size: Some(1 << 20),
            topic_alias_max: Some(16),
            request_response_info: Some(1),
            request_problem_info: Some(1),
            user_properties: vec![("app".into(), "bench".into())],
            authentication_method: None,
            authentication_data: None,
        }),
    };
    let will = v5::LastWill::new(
        WILL_TOPIC,
        "offline",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        true,
        Some(v5::LastWillProperties {
            delay_interval: Some(30),
            payload_format_indicator: Some(1),
            message_expiry_interval: None,
            content_type: Some("text/plain".into()),
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        }),
    );
    let theirs = v5::Packet::Connect(
        connect,
        Some(will),
        Some(v5::Login::new(USERNAME, PASSWORD)),
    );
    compare(
        c,
        "v5/connect",
        ProtocolVersion::V5,
        &ours,
        &Theirs::V5(Box::new(theirs)),
    );
}

criterion_group!(
    benches,
    v3_connect,
    v3_connack,
    v3_publish,
    v3_acks,
    v3_subscribe,
    v3_suback,
    v3_unsubscribe,
    v3_empty,
    v5_publish,
    v5_connect
);
criterion_main!(benches);
