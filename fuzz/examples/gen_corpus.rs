//! Writes the seed corpus under `fuzz/corpus/` (run from `fuzz/`):
//!
//! ```text
//! cargo run --example gen_corpus
//! ```
//!
//! Valid packets of every type are produced by the codec's own encoder and
//! checked to decode; malformed ones are written by hand. Each file holds a
//! short stream of packets, since the decode targets read until the first
//! error. The output is deterministic; rerunning rewrites the same files.

use std::fs;
use std::path::Path;

use mqtt_codec::{
    decode, Auth, ConnAck, Connect, DecodeOptions, Disconnect, LastWill, List, Packet, Pid,
    Properties, Property, ProtocolVersion, PubResp, Publish, QoS, QosPid, ReasonCode,
    RetainHandling, Status, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck,
    Unsubscribe,
};
use ProtocolVersion::{V3_1, V3_1_1, V5};

fn pid(n: u16) -> Pid {
    Pid::new(n).unwrap()
}

/// Encodes `p` for `v` and checks that it decodes back to the same packet.
fn enc(p: &Packet<'_>, v: ProtocolVersion) -> Vec<u8> {
    let mut out = vec![0u8; p.encoded_len(v).unwrap()];
    let n = p.encode(v, &mut out).unwrap();
    assert_eq!(n, out.len());
    match decode(&out, &DecodeOptions::new(v)) {
        Ok(Status::Complete((q, used))) => {
            assert_eq!(used, n);
            assert_eq!(&q, p);
        }
        other => panic!("{p:?} for {v:?} does not decode: {other:?}"),
    }
    out
}

/// A packet from a first byte and a body, with the Remaining Length between.
fn raw(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len & 0x7f) as u8;
        len >>= 7;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field.
fn s(v: &[u8]) -> Vec<u8> {
    let mut out = (v.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(v);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Named streams of valid packets of every type for `v`.
fn valid(v: ProtocolVersion) -> Vec<(&'static str, Vec<u8>)> {
    let v5 = v.is_v5();
    let mut files = Vec::new();

    // CONNECT: minimal, then will + user name + password (+ properties in 5.0).
    let connect_props = [
        Property::SessionExpiryInterval(3600),
        Property::ReceiveMaximum(10),
        Property::MaximumPacketSize(1024),
        Property::TopicAliasMaximum(5),
        Property::RequestResponseInformation(true),
        Property::RequestProblemInformation(false),
        Property::UserProperty("k", "v"),
        Property::AuthenticationMethod("SCRAM"),
        Property::AuthenticationData(b"x"),
    ];
    let will_props = [
        Property::WillDelayInterval(5),
        Property::PayloadFormatIndicator(true),
        Property::MessageExpiryInterval(60),
        Property::ContentType("text/plain"),
        Property::ResponseTopic("resp/t"),
        Property::CorrelationData(b"id"),
        Property::UserProperty("a", "b"),
    ];
    let pick = |p: &'static [Property<'static>]| {
        if v5 {
            Properties::from_slice(p)
        } else {
            Properties::EMPTY
        }
    };
    let connect_props: &'static [Property<'static>] = Box::leak(Box::new(connect_props));
    let will_props: &'static [Property<'static>] = Box::leak(Box::new(will_props));
    let minimal = Connect {
        protocol: v,
        clean_start: true,
        keep_alive: 60,
        properties: Properties::EMPTY,
        client_id: "c1",
        will: None,
        username: None,
        password: None,
    };
    let full = Connect {
        protocol: v,
        clean_start: false,
        keep_alive: 0,
        properties: pick(connect_props),
        client_id: "client-42",
        will: Some(LastWill {
            topic: "will/t",
            payload: b"bye",
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: pick(will_props),
        }),
        username: Some("user"),
        password: Some(b"pw"),
    };
    let user_only = Connect {
        will: Some(LastWill {
            topic: "w",
            payload: b"",
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: Properties::EMPTY,
        }),
        username: Some("u"),
        client_id: "",
        ..minimal
    };
    files.push((
        "connect",
        cat(&[
            &enc(&Packet::Connect(minimal), v),
            &enc(&Packet::Connect(full), v),
            &enc(&Packet::Connect(user_only), v),
        ]),
    ));

    // CONNACK.
    let connack_props: &'static [Property<'static>] = Box::leak(Box::new([
        Property::SessionExpiryInterval(0),
        Property::ReceiveMaximum(20),
        Property::MaximumQoS(QoS::AtLeastOnce),
        Property::RetainAvailable(false),
        Property::MaximumPacketSize(65536),
        Property::AssignedClientIdentifier("auto-1"),
        Property::TopicAliasMaximum(10),
        Property::ReasonString("ok"),
        Property::WildcardSubscriptionAvailable(true),
        Property::SubscriptionIdentifierAvailable(true),
        Property::SharedSubscriptionAvailable(false),
        Property::ServerKeepAlive(30),
        Property::ResponseInformation("ri"),
        Property::ServerReference("other"),
        Property::UserProperty("k", "v"),
    ]));
    let ok = ConnAck {
        session_present: true,
        reason: ReasonCode::Success,
        properties: pick(connack_props),
    };
    let refused = ConnAck {
        session_present: false,
        reason: if v5 {
            ReasonCode::BadAuthenticationMethod
        } else {
            ReasonCode::NotAuthorized
        },
        properties: Properties::EMPTY,
    };
    files.push((
        "connack",
        cat(&[
            &enc(&Packet::ConnAck(ok), v),
            &enc(&Packet::ConnAck(refused), v),
        ]),
    ));

    // PUBLISH at each QoS.
    let publish_props: &'static [Property<'static>] = Box::leak(Box::new([
        Property::PayloadFormatIndicator(true),
        Property::MessageExpiryInterval(30),
        Property::TopicAlias(3),
        Property::ResponseTopic("reply"),
        Property::CorrelationData(b"\x01\x02"),
        Property::SubscriptionIdentifier(1),
        Property::SubscriptionIdentifier(200_000),
        Property::ContentType("json"),
        Property::UserProperty("k", "v"),
    ]));
    let q0 = Publish::new("room_temp", b"22.5");
    let q1 = Publish {
        dup: true,
        qos_pid: QosPid::AtLeastOnce(pid(10)),
        retain: false,
        topic: "a/b/c",
        properties: pick(publish_props),
        payload: b"{\"t\":1}",
    };
    let q2 = Publish {
        dup: false,
        qos_pid: QosPid::ExactlyOnce(pid(65535)),
        retain: true,
        topic: "$SYS/x",
        properties: Properties::EMPTY,
        payload: b"",
    };
    let mut publishes = cat(&[
        &enc(&Packet::Publish(q0), v),
        &enc(&Packet::Publish(q1), v),
        &enc(&Packet::Publish(q2), v),
    ]);
    if v5 {
        // Topic alias in place of the topic.
        let alias: &'static [Property<'static>] = Box::leak(Box::new([Property::TopicAlias(3)]));
        let aliased = Publish {
            topic: "",
            properties: Properties::from_slice(alias),
            ..Publish::new("", b"x")
        };
        publishes.extend(enc(&Packet::Publish(aliased), v));
    }
    files.push(("publish", publishes));

    // PUBACK, PUBREC, PUBREL, PUBCOMP.
    let resp_props: &'static [Property<'static>] = Box::leak(Box::new([
        Property::ReasonString("why"),
        Property::UserProperty("k", "v"),
    ]));
    let plain = PubResp::new(pid(10));
    let with = |reason| PubResp {
        pid: pid(7),
        reason,
        properties: pick(resp_props),
    };
    let mut acks = Vec::new();
    acks.extend(enc(&Packet::PubAck(plain), v));
    acks.extend(enc(&Packet::PubRec(plain), v));
    acks.extend(enc(&Packet::PubRel(plain), v));
    acks.extend(enc(&Packet::PubComp(plain), v));
    if v5 {
        acks.extend(enc(
            &Packet::PubAck(with(ReasonCode::NoMatchingSubscribers)),
            v,
        ));
        acks.extend(enc(&Packet::PubRec(with(ReasonCode::QuotaExceeded)), v));
        acks.extend(enc(
            &Packet::PubRel(with(ReasonCode::PacketIdentifierNotFound)),
            v,
        ));
        acks.extend(enc(
            &Packet::PubComp(PubResp::new(pid(1)).tap_reason(ReasonCode::PacketIdentifierNotFound)),
            v,
        ));
    }
    files.push(("pub_acks", acks));

    // SUBSCRIBE / SUBACK / UNSUBSCRIBE / UNSUBACK.
    let one: &'static [SubscribeFilter<'static>] = Box::leak(Box::new([SubscribeFilter {
        filter: "room_temp",
        options: SubscriptionOptions::qos(QoS::AtMostOnce),
    }]));
    let many: &'static [SubscribeFilter<'static>] = if v5 {
        Box::leak(Box::new([
            SubscribeFilter {
                filter: "a/+/c",
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::SendIfNew,
                },
            },
            SubscribeFilter {
                filter: "$share/g/sport/#",
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::DoNotSend,
                },
            },
            SubscribeFilter {
                filter: "#",
                options: SubscriptionOptions::qos(QoS::AtMostOnce),
            },
        ]))
    } else {
        Box::leak(Box::new([
            SubscribeFilter {
                filter: "a/+/c",
                options: SubscriptionOptions::qos(QoS::AtLeastOnce),
            },
            SubscribeFilter {
                filter: "sport/#",
                options: SubscriptionOptions::qos(QoS::ExactlyOnce),
            },
            SubscribeFilter {
                filter: "+",
                options: SubscriptionOptions::qos(QoS::AtMostOnce),
            },
        ]))
    };
    let sub_props: &'static [Property<'static>] = Box::leak(Box::new([
        Property::SubscriptionIdentifier(42),
        Property::UserProperty("k", "v"),
    ]));
    let unsub_props: &'static [Property<'static>] =
        Box::leak(Box::new([Property::UserProperty("k", "v")]));
    let ack_props: &'static [Property<'static>] = Box::leak(Box::new([
        Property::ReasonString("r"),
        Property::UserProperty("k", "v"),
    ]));
    let mut subs = Vec::new();
    subs.extend(enc(
        &Packet::Subscribe(Subscribe {
            pid: pid(1),
            properties: Properties::EMPTY,
            filters: List::from_slice(one),
        }),
        v,
    ));
    subs.extend(enc(
        &Packet::Subscribe(Subscribe {
            pid: pid(2),
            properties: pick(sub_props),
            filters: List::from_slice(many),
        }),
        v,
    ));
    files.push(("subscribe", subs));

    let codes: &'static [ReasonCode] = if v5 {
        Box::leak(Box::new([
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::Success,
            ReasonCode::TopicFilterInvalid,
            ReasonCode::WildcardSubscriptionsNotSupported,
        ]))
    } else {
        Box::leak(Box::new([
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ]))
    };
    let mut subacks = Vec::new();
    subacks.extend(enc(
        &Packet::SubAck(SubAck {
            pid: pid(1),
            properties: Properties::EMPTY,
            codes: List::from_slice(&[ReasonCode::Success]),
        }),
        v,
    ));
    subacks.extend(enc(
        &Packet::SubAck(SubAck {
            pid: pid(2),
            properties: pick(ack_props),
            codes: List::from_slice(codes),
        }),
        v,
    ));
    files.push(("suback", subacks));

    let unsub_filters: &'static [&'static str] =
        Box::leak(Box::new(["room_temp", "a/+/#", "$share/g/x"]));
    files.push((
        "unsubscribe",
        enc(
            &Packet::Unsubscribe(Unsubscribe {
                pid: pid(3),
                properties: pick(unsub_props),
                filters: List::from_slice(unsub_filters),
            }),
            v,
        ),
    ));
    let unsub_codes: &'static [ReasonCode] = if v5 {
        Box::leak(Box::new([
            ReasonCode::Success,
            ReasonCode::NoSubscriptionExisted,
            ReasonCode::NotAuthorized,
        ]))
    } else {
        &[]
    };
    files.push((
        "unsuback",
        enc(
            &Packet::UnsubAck(UnsubAck {
                pid: pid(3),
                properties: pick(ack_props),
                codes: List::from_slice(unsub_codes),
            }),
            v,
        ),
    ));

    // PINGREQ, PINGRESP, DISCONNECT (and AUTH in 5.0).
    let mut tail = cat(&[
        &enc(&Packet::PingReq, v),
        &enc(&Packet::PingResp, v),
        &enc(&Packet::Disconnect(Disconnect::NORMAL), v),
    ]);
    if v5 {
        let disc_props: &'static [Property<'static>] = Box::leak(Box::new([
            Property::SessionExpiryInterval(10),
            Property::ReasonString("bye"),
            Property::ServerReference("s2"),
            Property::UserProperty("k", "v"),
        ]));
        tail.extend(enc(
            &Packet::Disconnect(Disconnect::new(ReasonCode::ServerShuttingDown)),
            v,
        ));
        tail.extend(enc(
            &Packet::Disconnect(Disconnect {
                reason: ReasonCode::DisconnectWithWillMessage,
                properties: Properties::from_slice(disc_props),
            }),
            v,
        ));
        let auth_props: &'static [Property<'static>] = Box::leak(Box::new([
            Property::AuthenticationMethod("SCRAM"),
            Property::AuthenticationData(b"\x00\xff"),
            Property::ReasonString("more"),
        ]));
        let auth = cat(&[
            &enc(
                &Packet::Auth(Auth {
                    reason: ReasonCode::ContinueAuthentication,
                    properties: Properties::from_slice(auth_props),
                }),
                v,
            ),
            &enc(
                &Packet::Auth(Auth {
                    reason: ReasonCode::Success,
                    properties: Properties::EMPTY,
                }),
                v,
            ),
        ]);
        files.push(("auth", auth));
    }
    files.push(("ping_disconnect", tail));
    files
}

trait TapReason {
    fn tap_reason(self, r: ReasonCode) -> Self;
}

impl TapReason for PubResp<'_> {
    fn tap_reason(mut self, r: ReasonCode) -> Self {
        self.reason = r;
        self
    }
}

/// Hand-written malformed packets, each after a valid PINGREQ so that the
/// decoder has consumed one packet first.
fn malformed(v: ProtocolVersion) -> Vec<(&'static str, Vec<u8>)> {
    let ping = [0xc0, 0x00];
    let (name, level): (&[u8], u8) = match v {
        V3_1 => (b"MQIsdp", 3),
        V3_1_1 => (b"MQTT", 4),
        V5 => (b"MQTT", 5),
    };
    let props0: &[u8] = if v.is_v5() { &[0] } else { &[] };
    let connect_with_flags = |flags: u8| {
        raw(
            0x10,
            &cat(&[
                &s(name),
                &[level, flags, 0, 60],
                props0,
                &s(b"c"),
                &s(b"u"),
                &s(b"p"),
            ]),
        )
    };
    let mut files = vec![
        (
            "bad_header",
            cat(&[
                &ping,
                // PUBREL with flags 0000 instead of 0010.
                &[0x60, 0x02, 0x00, 0x01],
            ]),
        ),
        // A five-byte Remaining Length, then a non-minimal one.
        (
            "bad_remaining_length",
            cat(&[&ping, &[0x30, 0xff, 0xff, 0xff, 0xff, 0x7f]]),
        ),
        ("non_minimal_length", vec![0x30, 0x80, 0x00]),
        // QoS 3 PUBLISH; QoS 0 with DUP; wildcard topic; truncated.
        ("publish_qos3", raw(0x36, &cat(&[&s(b"a"), &[0, 1]]))),
        (
            "publish_dup_qos0",
            raw(0x38, &cat(&[&s(b"a"), props0, b"x"])),
        ),
        (
            "publish_wildcard",
            raw(0x30, &cat(&[&s(b"a/+"), props0, b"x"])),
        ),
        (
            "publish_truncated",
            vec![0x30, 0x0f, 0x00, 0x09, b'r', b'o', b'o', b'm'],
        ),
        (
            "publish_bad_utf8",
            raw(0x30, &cat(&[&s(b"a\xc3\x28"), props0])),
        ),
        ("publish_nul", raw(0x30, &cat(&[&s(b"a\x00b"), props0]))),
        // CONNECT with the reserved flag; with a password but no user name
        // (allowed in 5.0); with an unknown protocol level.
        ("connect_reserved_flag", connect_with_flags(0xc3)),
        ("connect_password_only", connect_with_flags(0x42)),
        (
            "connect_bad_level",
            raw(0x10, &cat(&[&s(b"MQTT"), &[6, 2, 0, 60], &s(b"c")])),
        ),
        // SUBSCRIBE with packet id 0; bad filter; no filter.
        (
            "subscribe_pid0",
            raw(0x82, &cat(&[&[0, 0], props0, &s(b"a"), &[0]])),
        ),
        (
            "subscribe_bad_filter",
            raw(0x82, &cat(&[&[0, 1], props0, &s(b"a/#/b"), &[0]])),
        ),
        ("subscribe_empty", raw(0x82, &cat(&[&[0, 1], props0]))),
        // Trailing bytes after a PUBACK.
        ("puback_trailing", raw(0x40, &[0, 1, 0, 0, 0, 0, 0])),
    ];
    if v == V3_1 {
        // 3.1 reads everything but CONNECT as 3.1.1 does: keep its own CONNECT
        // cases and leave the rest to the 3.1.1 corpus.
        files.retain(|(name, _)| name.starts_with("connect") || *name == "bad_header");
    }
    if v.is_v5() {
        // Duplicate Session Expiry Interval; Topic Alias in CONNECT; unknown
        // property 0x04; Receive Maximum 0.
        let props = |p: &[u8]| cat(&[&[p.len() as u8], p]);
        let connect_props = |p: &[u8]| {
            raw(
                0x10,
                &cat(&[&s(b"MQTT"), &[5, 2, 0, 60], &props(p), &s(b"c")]),
            )
        };
        files.push((
            "props_duplicate",
            connect_props(&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2]),
        ));
        files.push(("props_not_allowed", connect_props(&[0x23, 0, 1])));
        files.push(("props_unknown", connect_props(&[0x04, 0])));
        files.push(("props_zero", connect_props(&[0x21, 0, 0])));
        // Reason code not allowed in PUBREL; AUTH with a bad reason code.
        files.push(("pubrel_bad_reason", raw(0x62, &[0, 1, 0x10])));
        files.push(("auth_bad_reason", raw(0xf0, &[0x80, 0])));
    } else {
        // AUTH does not exist before 5.0.
        files.push(("auth_v3", vec![0xf0, 0x00]));
    }
    files
}

/// The broker_connection target: a selector byte (even: 3.1.1, odd: 5.0),
/// then bytes the target sends raw after its own valid CONNECT. Every file
/// ends in one malformed packet or protocol violation (some after a valid
/// exchange), and its name says what the broker must do about it:
/// `v311-KIND`: close the connection; `v5-RR-KIND`: send DISCONNECT with
/// reason code RR (hex), then close. mqtt-broker/tests/malformed_corpus.rs
/// replays them against a broker with `max_packet_size` 65536.
fn broker_connection() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for (selector, v) in [(0u8, V3_1_1), (1u8, V5)] {
        let v5 = v.is_v5();
        // A property list (5.0) or nothing (3.1.1).
        let props = |p: &[u8]| -> Vec<u8> {
            if v5 {
                cat(&[&[p.len() as u8], p])
            } else {
                Vec::new()
            }
        };
        let publish0 = |topic: &[u8], p: &[u8]| raw(0x30, &cat(&[topic, &props(p), b"x"]));
        let subscribe =
            |filter: &[u8], opts: u8| raw(0x82, &cat(&[&[0, 1], &props(&[]), filter, &[opts]]));
        let connect = enc(
            &Packet::Connect(Connect {
                protocol: v,
                clean_start: true,
                keep_alive: 60,
                properties: Properties::EMPTY,
                client_id: "fuzz",
                will: None,
                username: None,
                password: None,
            }),
            v,
        );
        // A valid exchange to start from: subscribe, publish at QoS 1 and
        // 2, release, ping, unsubscribe.
        let t = [SubscribeFilter {
            filter: "t/#",
            options: SubscriptionOptions::qos(QoS::ExactlyOnce),
        }];
        let session = cat(&[
            &enc(
                &Packet::Subscribe(Subscribe {
                    pid: pid(1),
                    properties: Properties::EMPTY,
                    filters: List::from_slice(&t),
                }),
                v,
            ),
            &enc(
                &Packet::Publish(Publish {
                    dup: false,
                    qos_pid: QosPid::AtLeastOnce(pid(2)),
                    retain: false,
                    topic: "t/1",
                    properties: Properties::EMPTY,
                    payload: b"one",
                }),
                v,
            ),
            &enc(
                &Packet::Publish(Publish {
                    dup: false,
                    qos_pid: QosPid::ExactlyOnce(pid(3)),
                    retain: true,
                    topic: "t/2",
                    properties: Properties::EMPTY,
                    payload: b"two",
                }),
                v,
            ),
            &enc(&Packet::PubRel(PubResp::new(pid(3))), v),
            &enc(&Packet::PingReq, v),
            &enc(
                &Packet::Unsubscribe(Unsubscribe {
                    pid: pid(4),
                    properties: Properties::EMPTY,
                    filters: List::from_slice(&["t/#"]),
                }),
                v,
            ),
        ]);

        // (reason in 5.0, kind, bytes); the reason is ignored for 3.1.1.
        let mut cases: Vec<(u8, &str, Vec<u8>)> = vec![
            // PUBREL must have flags 0b0010.
            (0x81, "bad-flags", raw(0x60, &[0, 1])),
            (
                0x81,
                "qos3",
                raw(0x36, &cat(&[&s(b"a"), &[0, 1], &props(&[]), b"x"])),
            ),
            (
                0x81,
                "dup-qos0",
                raw(0x38, &cat(&[&s(b"a"), &props(&[]), b"x"])),
            ),
            (
                0x81,
                "remaining-length-5-bytes",
                vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            // Announces 1 MiB, over the broker's 64 KiB.
            (
                0x95,
                "oversize",
                cat(&[&[0x30, 0x80, 0x80, 0x40], &s(b"a"), b"big"]),
            ),
            (0x81, "bad-utf8", publish0(&[0, 2, b'a', 0xff], &[])),
            (0x81, "null-character", publish0(&[0, 2, b'a', 0], &[])),
            (0x81, "string-past-end", raw(0x30, &[0, 9, b'a'])),
            (0x90, "wildcard-topic", publish0(&s(b"a/+"), &[])),
            (0x90, "wildcard-topic-hash", publish0(&s(b"#"), &[])),
            (
                0x81,
                "zero-packet-id",
                raw(0x32, &cat(&[&s(b"a"), &[0, 0], &props(&[]), b"x"])),
            ),
            (
                0x82,
                "empty-subscribe",
                raw(0x82, &cat(&[&[0, 1], &props(&[])])),
            ),
            (
                0x82,
                "empty-unsubscribe",
                raw(0xa2, &cat(&[&[0, 1], &props(&[])])),
            ),
            (0x8f, "bad-filter", subscribe(&s(b"a/#/b"), 0)),
            (0x8f, "bad-filter-plus", subscribe(&s(b"a/b+"), 0)),
            (
                0x81,
                "subscription-options-reserved",
                subscribe(&s(b"a"), 0xc0),
            ),
            (0x82, "second-connect", connect.clone()),
            (0x81, "reserved-type", vec![0x00, 0x00]),
            // PINGREQ with a body.
            (0x81, "trailing-bytes", raw(0xc0, &[0])),
            (
                0x82,
                "session-then-second-connect",
                cat(&[&session, &connect]),
            ),
        ];
        if v5 {
            cases.extend([
                (
                    0x82,
                    "duplicate-property",
                    publish0(&s(b"a"), &[0x01, 0, 0x01, 1]),
                ),
                (0x81, "unknown-property", publish0(&s(b"a"), &[0x7f, 0])),
                // Session Expiry Interval belongs to CONNECT and DISCONNECT.
                (
                    0x81,
                    "property-not-allowed",
                    publish0(&s(b"a"), &[0x11, 0, 0, 0, 1]),
                ),
                (
                    0x82,
                    "subscription-id-in-publish",
                    publish0(&s(b"a"), &[0x0b, 1]),
                ),
                (
                    0x94,
                    "topic-alias-too-big",
                    publish0(&s(b"a"), &[0x23, 0x03, 0xe8]),
                ),
                (0x82, "topic-alias-zero", publish0(&s(b"a"), &[0x23, 0, 0])),
                (
                    0x82,
                    "topic-alias-unknown",
                    publish0(&s(b""), &[0x23, 0, 5]),
                ),
                (
                    0x94,
                    "topic-aliases-then-too-big",
                    cat(&[
                        &publish0(&s(b"x"), &[0x23, 0, 1]),
                        &publish0(&s(b""), &[0x23, 0, 1]),
                        &publish0(&s(b""), &[0x23, 0, 100]),
                    ]),
                ),
                (0x82, "retain-handling-3", subscribe(&s(b"a"), 0x30)),
                (
                    0x82,
                    "no-local-on-shared",
                    subscribe(&s(b"$share/g/a"), 0x04),
                ),
                (0x82, "auth", vec![0xf0, 0x00]),
                (0x82, "session-then-auth", cat(&[&session, &[0xf0, 0x00]])),
                (0x82, "connack-from-client", raw(0x20, &[0, 0, 0])),
                (0x82, "suback-from-client", raw(0x90, &[0, 1, 0, 0])),
                (0x82, "pingresp-from-client", vec![0xd0, 0x00]),
                // Session Expiry Interval set on DISCONNECT after 0.
                (
                    0x82,
                    "session-expiry-after-zero",
                    raw(0xe0, &[0, 5, 0x11, 0, 0, 0, 5]),
                ),
                (0x81, "puback-bad-reason", raw(0x40, &[0, 1, 0x05])),
            ]);
        } else {
            cases.extend([
                (0, "auth", vec![0xf0, 0x00]),
                (0, "connack-from-client", raw(0x20, &[0, 0])),
                (0, "disconnect-with-body", raw(0xe0, &[0])),
                // 3.1.1 subscription options: only the QoS bits.
                (
                    0,
                    "subscription-options-no-local",
                    subscribe(&s(b"a"), 0x04),
                ),
                (
                    0,
                    "session-then-bad-flags",
                    cat(&[&session, &raw(0x60, &[0, 1])]),
                ),
            ]);
        }
        for (reason, kind, bytes) in cases {
            let name = if v5 {
                format!("v5-{reason:02x}-{kind}")
            } else {
                format!("v311-{kind}")
            };
            files.push((name, cat(&[&[selector], &bytes])));
        }
    }
    files
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, v) in [
        ("decode_v3_1", V3_1),
        ("decode_v3_1_1", V3_1_1),
        ("decode_v5", V5),
    ] {
        let dir = root.join(target);
        for (name, bytes) in valid(v).into_iter().chain(malformed(v)) {
            write(&dir, name, &bytes);
        }
    }

    // The roundtrip target: a version byte, then a stream of valid packets.
    let dir = root.join("roundtrip");
    for (i, (tag, v)) in [("v3_1", V3_1), ("v3_1_1", V3_1_1), ("v5", V5)]
        .into_iter()
        .enumerate()
    {
        let mut groups: Vec<(&str, Vec<u8>)> = Vec::new();
        for (name, bytes) in valid(v) {
            let group = match name {
                "connect" | "connack" => "connect",
                "publish" | "pub_acks" => "publish",
                "subscribe" | "suback" | "unsubscribe" | "unsuback" => "subscribe",
                _ => "control",
            };
            match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, b)) => b.extend(bytes),
                None => groups.push((group, cat(&[&[i as u8], &bytes]))),
            }
        }
        for (group, bytes) in groups {
            write(&dir, &format!("{tag}_{group}"), &bytes);
        }
    }

    // The broker_connection target: malformed input after a valid CONNECT.
    let dir = root.join("broker_connection");
    for (name, bytes) in broker_connection() {
        write(&dir, &name, &bytes);
    }

    // The topic_match target: filter 0xff topic.
    let dir = root.join("topic_match");
    for (i, (filter, topic)) in [
        ("sport/tennis/player1/#", "sport/tennis/player1"),
        ("sport/+/player1", "sport/tennis/player1"),
        ("+/+", "/finance"),
        ("+", "/finance"),
        ("#", "$SYS/uptime"),
        ("$SYS/#", "$SYS/uptime"),
        ("+/#", "a"),
        ("a/b", "a/b/c"),
        ("a//+", "a//"),
        ("$share/g/a/+", "a/b"),
        ("a/#/b", "a/x/b"),
        ("a+", "a+"),
    ]
    .into_iter()
    .enumerate()
    {
        write(
            &dir,
            &format!("pair{i:02}"),
            &cat(&[filter.as_bytes(), &[0xff], topic.as_bytes()]),
        );
    }
}
