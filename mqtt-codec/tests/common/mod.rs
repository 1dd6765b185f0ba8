//! Shared support for the integration tests: an owned mirror of every packet
//! (so proptest can generate and shrink values that outlive the buffers the
//! codec borrows from), proptest strategies that generate only packets valid
//! for a given protocol version, a few hand-picked sample packets, and the
//! reason-code and property tables transcribed from the MQTT 5.0 text.
#![allow(dead_code)]

use mqtt_codec::{
    decode, Auth, ConnAck, Connect, DecodeOptions, Disconnect, LastWill, List, Packet, PacketType,
    Pid, Properties, Property, PropertyContext, PropertyId, ProtocolVersion, PubResp, Publish, QoS,
    QosPid, ReasonCode, RetainHandling, Status, SubAck, Subscribe, SubscribeFilter,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::Union;

pub use ProtocolVersion::{V3_1, V3_1_1, V5};

/// Every protocol version.
pub const VERSIONS: [ProtocolVersion; 3] = [V3_1, V3_1_1, V5];

/// Every packet type.
pub const PACKET_TYPES: [PacketType; 15] = [
    PacketType::Connect,
    PacketType::ConnAck,
    PacketType::Publish,
    PacketType::PubAck,
    PacketType::PubRec,
    PacketType::PubRel,
    PacketType::PubComp,
    PacketType::Subscribe,
    PacketType::SubAck,
    PacketType::Unsubscribe,
    PacketType::UnsubAck,
    PacketType::PingReq,
    PacketType::PingResp,
    PacketType::Disconnect,
    PacketType::Auth,
];

/// Every property context.
pub const CONTEXTS: [PropertyContext; 11] = [
    PropertyContext::Connect,
    PropertyContext::ConnAck,
    PropertyContext::Publish,
    PropertyContext::Will,
    PropertyContext::PubResp,
    PropertyContext::Subscribe,
    PropertyContext::SubAck,
    PropertyContext::Unsubscribe,
    PropertyContext::UnsubAck,
    PropertyContext::Disconnect,
    PropertyContext::Auth,
];

pub fn pid(n: u16) -> Pid {
    Pid::new(n).expect("non-zero packet identifier")
}

// ---------------------------------------------------------------------------
// Owned mirror of the borrowed packet types.
// ---------------------------------------------------------------------------

/// A property with owned strings and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OProp {
    PayloadFormatIndicator(bool),
    MessageExpiryInterval(u32),
    ContentType(String),
    ResponseTopic(String),
    CorrelationData(Vec<u8>),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(String),
    ServerKeepAlive(u16),
    AuthenticationMethod(String),
    AuthenticationData(Vec<u8>),
    RequestProblemInformation(bool),
    WillDelayInterval(u32),
    RequestResponseInformation(bool),
    ResponseInformation(String),
    ServerReference(String),
    ReasonString(String),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQoS(QoS),
    RetainAvailable(bool),
    UserProperty(String, String),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(bool),
    SubscriptionIdentifierAvailable(bool),
    SharedSubscriptionAvailable(bool),
}

impl OProp {
    pub fn as_prop(&self) -> Property<'_> {
        use OProp as O;
        use Property as P;
        match self {
            O::PayloadFormatIndicator(v) => P::PayloadFormatIndicator(*v),
            O::MessageExpiryInterval(v) => P::MessageExpiryInterval(*v),
            O::ContentType(s) => P::ContentType(s),
            O::ResponseTopic(s) => P::ResponseTopic(s),
            O::CorrelationData(b) => P::CorrelationData(b),
            O::SubscriptionIdentifier(v) => P::SubscriptionIdentifier(*v),
            O::SessionExpiryInterval(v) => P::SessionExpiryInterval(*v),
            O::AssignedClientIdentifier(s) => P::AssignedClientIdentifier(s),
            O::ServerKeepAlive(v) => P::ServerKeepAlive(*v),
            O::AuthenticationMethod(s) => P::AuthenticationMethod(s),
            O::AuthenticationData(b) => P::AuthenticationData(b),
            O::RequestProblemInformation(v) => P::RequestProblemInformation(*v),
            O::WillDelayInterval(v) => P::WillDelayInterval(*v),
            O::RequestResponseInformation(v) => P::RequestResponseInformation(*v),
            O::ResponseInformation(s) => P::ResponseInformation(s),
            O::ServerReference(s) => P::ServerReference(s),
            O::ReasonString(s) => P::ReasonString(s),
            O::ReceiveMaximum(v) => P::ReceiveMaximum(*v),
            O::TopicAliasMaximum(v) => P::TopicAliasMaximum(*v),
            O::TopicAlias(v) => P::TopicAlias(*v),
            O::MaximumQoS(v) => P::MaximumQoS(*v),
            O::RetainAvailable(v) => P::RetainAvailable(*v),
            O::UserProperty(k, v) => P::UserProperty(k, v),
            O::MaximumPacketSize(v) => P::MaximumPacketSize(*v),
            O::WildcardSubscriptionAvailable(v) => P::WildcardSubscriptionAvailable(*v),
            O::SubscriptionIdentifierAvailable(v) => P::SubscriptionIdentifierAvailable(*v),
            O::SharedSubscriptionAvailable(v) => P::SharedSubscriptionAvailable(*v),
        }
    }

    pub fn from_prop(p: &Property<'_>) -> OProp {
        use OProp as O;
        use Property as P;
        match *p {
            P::PayloadFormatIndicator(v) => O::PayloadFormatIndicator(v),
            P::MessageExpiryInterval(v) => O::MessageExpiryInterval(v),
            P::ContentType(s) => O::ContentType(s.into()),
            P::ResponseTopic(s) => O::ResponseTopic(s.into()),
            P::CorrelationData(b) => O::CorrelationData(b.into()),
            P::SubscriptionIdentifier(v) => O::SubscriptionIdentifier(v),
            P::SessionExpiryInterval(v) => O::SessionExpiryInterval(v),
            P::AssignedClientIdentifier(s) => O::AssignedClientIdentifier(s.into()),
            P::ServerKeepAlive(v) => O::ServerKeepAlive(v),
            P::AuthenticationMethod(s) => O::AuthenticationMethod(s.into()),
            P::AuthenticationData(b) => O::AuthenticationData(b.into()),
            P::RequestProblemInformation(v) => O::RequestProblemInformation(v),
            P::WillDelayInterval(v) => O::WillDelayInterval(v),
            P::RequestResponseInformation(v) => O::RequestResponseInformation(v),
            P::ResponseInformation(s) => O::ResponseInformation(s.into()),
            P::ServerReference(s) => O::ServerReference(s.into()),
            P::ReasonString(s) => O::ReasonString(s.into()),
            P::ReceiveMaximum(v) => O::ReceiveMaximum(v),
            P::TopicAliasMaximum(v) => O::TopicAliasMaximum(v),
            P::TopicAlias(v) => O::TopicAlias(v),
            P::MaximumQoS(v) => O::MaximumQoS(v),
            P::RetainAvailable(v) => O::RetainAvailable(v),
            P::UserProperty(k, v) => O::UserProperty(k.into(), v.into()),
            P::MaximumPacketSize(v) => O::MaximumPacketSize(v),
            P::WildcardSubscriptionAvailable(v) => O::WildcardSubscriptionAvailable(v),
            P::SubscriptionIdentifierAvailable(v) => O::SubscriptionIdentifierAvailable(v),
            P::SharedSubscriptionAvailable(v) => O::SharedSubscriptionAvailable(v),
        }
    }

    pub fn id(&self) -> PropertyId {
        self.as_prop().id()
    }

    /// The property's wire bytes, written here independently of the codec:
    /// identifier, then the value in its data type (MQTT 5.0 section 2.2.2.2).
    pub fn raw(&self) -> Vec<u8> {
        use OProp as O;
        let mut out = vec![self.id() as u8];
        let string = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u16).to_be_bytes());
            out.extend_from_slice(b);
        };
        match self {
            O::PayloadFormatIndicator(b)
            | O::RequestProblemInformation(b)
            | O::RequestResponseInformation(b)
            | O::RetainAvailable(b)
            | O::WildcardSubscriptionAvailable(b)
            | O::SubscriptionIdentifierAvailable(b)
            | O::SharedSubscriptionAvailable(b) => out.push(u8::from(*b)),
            O::MaximumQoS(q) => out.push(*q as u8),
            O::ServerKeepAlive(v)
            | O::ReceiveMaximum(v)
            | O::TopicAliasMaximum(v)
            | O::TopicAlias(v) => out.extend_from_slice(&v.to_be_bytes()),
            O::MessageExpiryInterval(v)
            | O::SessionExpiryInterval(v)
            | O::WillDelayInterval(v)
            | O::MaximumPacketSize(v) => out.extend_from_slice(&v.to_be_bytes()),
            O::SubscriptionIdentifier(v) => out.extend_from_slice(&varint(*v)),
            O::ContentType(s)
            | O::ResponseTopic(s)
            | O::AssignedClientIdentifier(s)
            | O::AuthenticationMethod(s)
            | O::ResponseInformation(s)
            | O::ServerReference(s)
            | O::ReasonString(s) => string(&mut out, s.as_bytes()),
            O::CorrelationData(b) | O::AuthenticationData(b) => string(&mut out, b),
            O::UserProperty(k, v) => {
                string(&mut out, k.as_bytes());
                string(&mut out, v.as_bytes());
            }
        }
        out
    }
}

/// A Variable Byte Integer, encoded independently of the codec.
pub fn varint(mut v: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            return out;
        }
    }
}

/// A packet body framed with a fixed header.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend_from_slice(&varint(body.len() as u32));
    out.extend_from_slice(body);
    out
}

/// A property section: its length, then the properties.
pub fn prop_section(props: &[u8]) -> Vec<u8> {
    let mut out = varint(props.len() as u32);
    out.extend_from_slice(props);
    out
}

pub fn props_of(p: &Properties<'_>) -> Vec<OProp> {
    p.iter().map(|p| OProp::from_prop(&p)).collect()
}

fn borrow_props(props: &[OProp]) -> Vec<Property<'_>> {
    props.iter().map(OProp::as_prop).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OWill {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    pub props: Vec<OProp>,
}

/// Slices that a borrowed packet built from an [`OPacket`] points into.
#[derive(Default)]
pub struct Scratch<'o> {
    props: Vec<Property<'o>>,
    will_props: Vec<Property<'o>>,
    filters: Vec<SubscribeFilter<'o>>,
    unsub: Vec<&'o str>,
}

/// A packet that owns its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OPacket {
    Connect {
        protocol: ProtocolVersion,
        clean_start: bool,
        keep_alive: u16,
        props: Vec<OProp>,
        client_id: String,
        will: Option<OWill>,
        username: Option<String>,
        password: Option<Vec<u8>>,
    },
    ConnAck {
        session_present: bool,
        reason: ReasonCode,
        props: Vec<OProp>,
    },
    Publish {
        dup: bool,
        qos_pid: QosPid,
        retain: bool,
        topic: String,
        props: Vec<OProp>,
        payload: Vec<u8>,
    },
    /// PUBACK, PUBREC, PUBREL or PUBCOMP, told apart by `kind`.
    PubResp {
        kind: PacketType,
        pid: Pid,
        reason: ReasonCode,
        props: Vec<OProp>,
    },
    Subscribe {
        pid: Pid,
        props: Vec<OProp>,
        filters: Vec<(String, SubscriptionOptions)>,
    },
    SubAck {
        pid: Pid,
        props: Vec<OProp>,
        codes: Vec<ReasonCode>,
    },
    Unsubscribe {
        pid: Pid,
        props: Vec<OProp>,
        filters: Vec<String>,
    },
    UnsubAck {
        pid: Pid,
        props: Vec<OProp>,
        codes: Vec<ReasonCode>,
    },
    PingReq,
    PingResp,
    Disconnect {
        reason: ReasonCode,
        props: Vec<OProp>,
    },
    Auth {
        reason: ReasonCode,
        props: Vec<OProp>,
    },
}

impl OPacket {
    pub fn kind(&self) -> PacketType {
        match self {
            OPacket::Connect { .. } => PacketType::Connect,
            OPacket::ConnAck { .. } => PacketType::ConnAck,
            OPacket::Publish { .. } => PacketType::Publish,
            OPacket::PubResp { kind, .. } => *kind,
            OPacket::Subscribe { .. } => PacketType::Subscribe,
            OPacket::SubAck { .. } => PacketType::SubAck,
            OPacket::Unsubscribe { .. } => PacketType::Unsubscribe,
            OPacket::UnsubAck { .. } => PacketType::UnsubAck,
            OPacket::PingReq => PacketType::PingReq,
            OPacket::PingResp => PacketType::PingResp,
            OPacket::Disconnect { .. } => PacketType::Disconnect,
            OPacket::Auth { .. } => PacketType::Auth,
        }
    }

    /// The slices a borrowed version of this packet points into.
    pub fn scratch(&self) -> Scratch<'_> {
        let mut s = Scratch::default();
        match self {
            OPacket::Connect { props, will, .. } => {
                s.props = borrow_props(props);
                if let Some(w) = will {
                    s.will_props = borrow_props(&w.props);
                }
            }
            OPacket::ConnAck { props, .. }
            | OPacket::Publish { props, .. }
            | OPacket::PubResp { props, .. }
            | OPacket::SubAck { props, .. }
            | OPacket::UnsubAck { props, .. }
            | OPacket::Disconnect { props, .. }
            | OPacket::Auth { props, .. } => s.props = borrow_props(props),
            OPacket::Subscribe { props, filters, .. } => {
                s.props = borrow_props(props);
                s.filters = filters
                    .iter()
                    .map(|(filter, options)| SubscribeFilter {
                        filter,
                        options: *options,
                    })
                    .collect();
            }
            OPacket::Unsubscribe { props, filters, .. } => {
                s.props = borrow_props(props);
                s.unsub = filters.iter().map(String::as_str).collect();
            }
            OPacket::PingReq | OPacket::PingResp => {}
        }
        s
    }

    /// The borrowed [`Packet`], its lists made with `from_slice` over
    /// `scratch` (which must come from [`OPacket::scratch`] on `self`).
    pub fn packet<'s>(&'s self, scratch: &'s Scratch<'s>) -> Packet<'s> {
        let properties = Properties::from_slice(&scratch.props);
        match self {
            OPacket::Connect {
                protocol,
                clean_start,
                keep_alive,
                client_id,
                will,
                username,
                password,
                ..
            } => Packet::Connect(Connect {
                protocol: *protocol,
                clean_start: *clean_start,
                keep_alive: *keep_alive,
                properties,
                client_id,
                will: will.as_ref().map(|w| LastWill {
                    topic: &w.topic,
                    payload: &w.payload,
                    qos: w.qos,
                    retain: w.retain,
                    properties: Properties::from_slice(&scratch.will_props),
                }),
                username: username.as_deref(),
                password: password.as_deref(),
            }),
            OPacket::ConnAck {
                session_present,
                reason,
                ..
            } => Packet::ConnAck(ConnAck {
                session_present: *session_present,
                reason: *reason,
                properties,
            }),
            OPacket::Publish {
                dup,
                qos_pid,
                retain,
                topic,
                payload,
                ..
            } => Packet::Publish(Publish {
                dup: *dup,
                qos_pid: *qos_pid,
                retain: *retain,
                topic,
                properties,
                payload,
            }),
            OPacket::PubResp {
                kind, pid, reason, ..
            } => {
                let r = PubResp {
                    pid: *pid,
                    reason: *reason,
                    properties,
                };
                match kind {
                    PacketType::PubAck => Packet::PubAck(r),
                    PacketType::PubRec => Packet::PubRec(r),
                    PacketType::PubRel => Packet::PubRel(r),
                    PacketType::PubComp => Packet::PubComp(r),
                    other => panic!("{other:?} is not a publish response"),
                }
            }
            OPacket::Subscribe { pid, .. } => Packet::Subscribe(Subscribe {
                pid: *pid,
                properties,
                filters: List::from_slice(&scratch.filters),
            }),
            OPacket::SubAck { pid, codes, .. } => Packet::SubAck(SubAck {
                pid: *pid,
                properties,
                codes: List::from_slice(codes),
            }),
            OPacket::Unsubscribe { pid, .. } => Packet::Unsubscribe(Unsubscribe {
                pid: *pid,
                properties,
                filters: List::from_slice(&scratch.unsub),
            }),
            OPacket::UnsubAck { pid, codes, .. } => Packet::UnsubAck(UnsubAck {
                pid: *pid,
                properties,
                codes: List::from_slice(codes),
            }),
            OPacket::PingReq => Packet::PingReq,
            OPacket::PingResp => Packet::PingResp,
            OPacket::Disconnect { reason, .. } => Packet::Disconnect(Disconnect {
                reason: *reason,
                properties,
            }),
            OPacket::Auth { reason, .. } => Packet::Auth(Auth {
                reason: *reason,
                properties,
            }),
        }
    }

    /// Builds the borrowed packet and hands it to `f`.
    pub fn with<R>(&self, f: impl FnOnce(Packet<'_>) -> R) -> R {
        let scratch = self.scratch();
        f(self.packet(&scratch))
    }

    /// Copies a decoded packet into owned data.
    pub fn from_packet(p: &Packet<'_>) -> OPacket {
        let resp = |kind, r: &PubResp<'_>| OPacket::PubResp {
            kind,
            pid: r.pid,
            reason: r.reason,
            props: props_of(&r.properties),
        };
        match p {
            Packet::Connect(c) => OPacket::Connect {
                protocol: c.protocol,
                clean_start: c.clean_start,
                keep_alive: c.keep_alive,
                props: props_of(&c.properties),
                client_id: c.client_id.into(),
                will: c.will.as_ref().map(|w| OWill {
                    topic: w.topic.into(),
                    payload: w.payload.into(),
                    qos: w.qos,
                    retain: w.retain,
                    props: props_of(&w.properties),
                }),
                username: c.username.map(Into::into),
                password: c.password.map(Into::into),
            },
            Packet::ConnAck(c) => OPacket::ConnAck {
                session_present: c.session_present,
                reason: c.reason,
                props: props_of(&c.properties),
            },
            Packet::Publish(p) => OPacket::Publish {
                dup: p.dup,
                qos_pid: p.qos_pid,
                retain: p.retain,
                topic: p.topic.into(),
                props: props_of(&p.properties),
                payload: p.payload.into(),
            },
            Packet::PubAck(r) => resp(PacketType::PubAck, r),
            Packet::PubRec(r) => resp(PacketType::PubRec, r),
            Packet::PubRel(r) => resp(PacketType::PubRel, r),
            Packet::PubComp(r) => resp(PacketType::PubComp, r),
            Packet::Subscribe(s) => OPacket::Subscribe {
                pid: s.pid,
                props: props_of(&s.properties),
                filters: s
                    .filters
                    .iter()
                    .map(|f| (f.filter.to_string(), f.options))
                    .collect(),
            },
            Packet::SubAck(s) => OPacket::SubAck {
                pid: s.pid,
                props: props_of(&s.properties),
                codes: s.codes.iter().collect(),
            },
            Packet::Unsubscribe(u) => OPacket::Unsubscribe {
                pid: u.pid,
                props: props_of(&u.properties),
                filters: u.filters.iter().map(String::from).collect(),
            },
            Packet::UnsubAck(u) => OPacket::UnsubAck {
                pid: u.pid,
                props: props_of(&u.properties),
                codes: u.codes.iter().collect(),
            },
            Packet::PingReq => OPacket::PingReq,
            Packet::PingResp => OPacket::PingResp,
            Packet::Disconnect(d) => OPacket::Disconnect {
                reason: d.reason,
                props: props_of(&d.properties),
            },
            Packet::Auth(a) => OPacket::Auth {
                reason: a.reason,
                props: props_of(&a.properties),
            },
        }
    }

    /// Encodes the packet for `version`, checking that `encoded_len` is
    /// exactly what `encode` writes.
    pub fn encode(&self, version: ProtocolVersion) -> Vec<u8> {
        self.with(|p| encode_packet(&p, version))
    }
}

/// Encodes into a buffer with spare room and checks the written length
/// against `encoded_len`.
pub fn encode_packet(p: &Packet<'_>, version: ProtocolVersion) -> Vec<u8> {
    let len = p
        .encoded_len(version)
        .unwrap_or_else(|e| panic!("encoded_len of {p:?} in {version:?}: {e:?}"));
    let mut buf = vec![0xAA; len + 7];
    let n = p
        .encode(version, &mut buf)
        .unwrap_or_else(|e| panic!("encode of {p:?} in {version:?}: {e:?}"));
    assert_eq!(n, len, "encoded_len disagrees with encode for {p:?}");
    assert!(
        buf[n..].iter().all(|&b| b == 0xAA),
        "encode wrote past its length"
    );
    buf.truncate(n);
    buf
}

/// Decodes exactly one packet that must fill `bytes`.
pub fn decode_one(bytes: &[u8], version: ProtocolVersion) -> Packet<'_> {
    match decode(bytes, &DecodeOptions::new(version)) {
        Ok(Status::Complete((p, n))) => {
            assert_eq!(n, bytes.len(), "decode used {n} of {} bytes", bytes.len());
            p
        }
        other => panic!("decoding {bytes:02x?} in {version:?}: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Tables transcribed from the MQTT 5.0 specification.
// ---------------------------------------------------------------------------

/// Reason codes allowed in each packet, MQTT 5.0 tables 3-1 (CONNACK), 3-4
/// (PUBACK), 3-5 (PUBREC), 3-6 (PUBREL), 3-7 (PUBCOMP), 3-8 (SUBACK), 3-9
/// (UNSUBACK), 3-10 (DISCONNECT) and 3-11 (AUTH).
pub fn spec_reason_codes(kind: PacketType) -> &'static [u8] {
    match kind {
        PacketType::ConnAck => &[
            0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90,
            0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
        ],
        PacketType::PubAck | PacketType::PubRec => {
            &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]
        }
        PacketType::PubRel | PacketType::PubComp => &[0x00, 0x92],
        PacketType::SubAck => &[
            0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
        ],
        PacketType::UnsubAck => &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91],
        PacketType::Disconnect => &[
            0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
            0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1,
            0xA2,
        ],
        PacketType::Auth => &[0x00, 0x18, 0x19],
        _ => &[],
    }
}

pub fn reason(b: u8) -> ReasonCode {
    ReasonCode::from_u8(b).expect("defined reason code")
}

/// Where each property may appear, MQTT 5.0 table 2-4.
pub fn spec_contexts(id: PropertyId) -> &'static [PropertyContext] {
    use PropertyContext as C;
    use PropertyId as I;
    match id {
        I::PayloadFormatIndicator
        | I::MessageExpiryInterval
        | I::ContentType
        | I::ResponseTopic
        | I::CorrelationData => &[C::Publish, C::Will],
        I::SubscriptionIdentifier => &[C::Publish, C::Subscribe],
        I::SessionExpiryInterval => &[C::Connect, C::ConnAck, C::Disconnect],
        I::AssignedClientIdentifier | I::ServerKeepAlive => &[C::ConnAck],
        I::AuthenticationMethod | I::AuthenticationData => &[C::Connect, C::ConnAck, C::Auth],
        I::RequestProblemInformation | I::RequestResponseInformation => &[C::Connect],
        I::WillDelayInterval => &[C::Will],
        I::ResponseInformation => &[C::ConnAck],
        I::ServerReference => &[C::ConnAck, C::Disconnect],
        I::ReasonString => &[
            C::ConnAck,
            C::PubResp,
            C::SubAck,
            C::UnsubAck,
            C::Disconnect,
            C::Auth,
        ],
        I::ReceiveMaximum | I::TopicAliasMaximum | I::MaximumPacketSize => {
            &[C::Connect, C::ConnAck]
        }
        I::TopicAlias => &[C::Publish],
        I::MaximumQoS
        | I::RetainAvailable
        | I::WildcardSubscriptionAvailable
        | I::SubscriptionIdentifierAvailable
        | I::SharedSubscriptionAvailable => &[C::ConnAck],
        I::UserProperty => &CONTEXTS,
    }
}

/// A valid example value of every property.
pub fn sample_prop(id: PropertyId) -> OProp {
    use OProp as O;
    use PropertyId as I;
    match id {
        I::PayloadFormatIndicator => O::PayloadFormatIndicator(true),
        I::MessageExpiryInterval => O::MessageExpiryInterval(3600),
        I::ContentType => O::ContentType("text/plain".into()),
        I::ResponseTopic => O::ResponseTopic("reply/here".into()),
        I::CorrelationData => O::CorrelationData(vec![1, 2, 3]),
        I::SubscriptionIdentifier => O::SubscriptionIdentifier(268_435_455),
        I::SessionExpiryInterval => O::SessionExpiryInterval(0xFFFF_FFFF),
        I::AssignedClientIdentifier => O::AssignedClientIdentifier("auto-1".into()),
        I::ServerKeepAlive => O::ServerKeepAlive(30),
        I::AuthenticationMethod => O::AuthenticationMethod("SCRAM-SHA-1".into()),
        I::AuthenticationData => O::AuthenticationData(vec![0, 0xff]),
        I::RequestProblemInformation => O::RequestProblemInformation(false),
        I::WillDelayInterval => O::WillDelayInterval(10),
        I::RequestResponseInformation => O::RequestResponseInformation(true),
        I::ResponseInformation => O::ResponseInformation("resp/".into()),
        I::ServerReference => O::ServerReference("other:1883".into()),
        I::ReasonString => O::ReasonString("because".into()),
        I::ReceiveMaximum => O::ReceiveMaximum(1),
        I::TopicAliasMaximum => O::TopicAliasMaximum(0),
        I::TopicAlias => O::TopicAlias(65535),
        I::MaximumQoS => O::MaximumQoS(QoS::AtLeastOnce),
        I::RetainAvailable => O::RetainAvailable(false),
        I::UserProperty => O::UserProperty("k".into(), "v".into()),
        I::MaximumPacketSize => O::MaximumPacketSize(1),
        I::WildcardSubscriptionAvailable => O::WildcardSubscriptionAvailable(true),
        I::SubscriptionIdentifierAvailable => O::SubscriptionIdentifierAvailable(false),
        I::SharedSubscriptionAvailable => O::SharedSubscriptionAvailable(true),
    }
}

/// Raw MQTT 5.0 bytes of a small valid packet whose property section (the
/// will properties for `Will`) is `props` (without its length prefix).
pub fn v5_packet_with_props(ctx: PropertyContext, props: &[u8]) -> Vec<u8> {
    let section = prop_section(props);
    let mut body = Vec::new();
    let first = match ctx {
        PropertyContext::Connect | PropertyContext::Will => {
            body.extend_from_slice(b"\x00\x04MQTT\x05");
            if ctx == PropertyContext::Will {
                body.extend_from_slice(&[0x06, 0x00, 0x3c, 0x00]); // clean start + will, no props
                body.extend_from_slice(b"\x00\x01c");
                body.extend_from_slice(&section);
                body.extend_from_slice(b"\x00\x01t\x00\x02hi");
            } else {
                body.extend_from_slice(&[0x02, 0x00, 0x3c]);
                body.extend_from_slice(&section);
                body.extend_from_slice(b"\x00\x01c");
            }
            0x10
        }
        PropertyContext::ConnAck => {
            body.extend_from_slice(&[0x00, 0x00]);
            body.extend_from_slice(&section);
            0x20
        }
        PropertyContext::Publish => {
            body.extend_from_slice(b"\x00\x01t");
            body.extend_from_slice(&section);
            body.extend_from_slice(b"payload");
            0x30
        }
        PropertyContext::PubResp => {
            body.extend_from_slice(&[0x00, 0x01, 0x00]);
            body.extend_from_slice(&section);
            0x40
        }
        PropertyContext::Subscribe => {
            body.extend_from_slice(&[0x00, 0x01]);
            body.extend_from_slice(&section);
            body.extend_from_slice(b"\x00\x01a\x00");
            0x82
        }
        PropertyContext::SubAck => {
            body.extend_from_slice(&[0x00, 0x01]);
            body.extend_from_slice(&section);
            body.push(0x00);
            0x90
        }
        PropertyContext::Unsubscribe => {
            body.extend_from_slice(&[0x00, 0x01]);
            body.extend_from_slice(&section);
            body.extend_from_slice(b"\x00\x01a");
            0xa2
        }
        PropertyContext::UnsubAck => {
            body.extend_from_slice(&[0x00, 0x01]);
            body.extend_from_slice(&section);
            body.push(0x00);
            0xb0
        }
        PropertyContext::Disconnect => {
            body.push(0x00);
            body.extend_from_slice(&section);
            0xe0
        }
        PropertyContext::Auth => {
            body.push(0x00);
            body.extend_from_slice(&section);
            0xf0
        }
    };
    frame(first, &body)
}

/// The properties a decoded packet carries in `ctx` (the will's for `Will`).
pub fn decoded_props(p: &Packet<'_>, ctx: PropertyContext) -> Vec<OProp> {
    let props = match (p, ctx) {
        (Packet::Connect(c), PropertyContext::Will) => c.will.expect("a will").properties,
        (Packet::Connect(c), _) => c.properties,
        (Packet::ConnAck(c), _) => c.properties,
        (Packet::Publish(p), _) => p.properties,
        (Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r), _) => {
            r.properties
        }
        (Packet::Subscribe(s), _) => s.properties,
        (Packet::SubAck(s), _) => s.properties,
        (Packet::Unsubscribe(u), _) => u.properties,
        (Packet::UnsubAck(u), _) => u.properties,
        (Packet::Disconnect(d), _) => d.properties,
        (Packet::Auth(a), _) => a.properties,
        other => panic!("no properties in {other:?}"),
    };
    props_of(&props)
}

// ---------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------

pub fn arb_version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V3_1), Just(V3_1_1), Just(V5)]
}

fn no_nul_char() -> impl Strategy<Value = char> {
    any::<char>().prop_filter("U+0000 is not allowed in MQTT strings", |c| *c != '\0')
}

/// Any MQTT string: well-formed UTF-8 without U+0000.
pub fn arb_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => vec(
            prop::sample::select(vec!['a', 'b', 'z', '0', '9', '-', '_', ' ', '/', 'é', '温', '🌡']),
            0..12
        ),
        1 => vec(no_nul_char(), 0..6),
    ]
    .prop_map(|chars| chars.into_iter().collect())
    .boxed()
}

pub fn arb_bytes(max: usize) -> BoxedStrategy<Vec<u8>> {
    vec(any::<u8>(), 0..max).boxed()
}

/// One topic level without separators or wildcards (may be empty).
fn arb_level() -> BoxedStrategy<String> {
    vec(
        prop_oneof![
            6 => prop::sample::select(vec!['a', 'b', 'c', 'x', '0', '1', '_', '-', ' ', '.', 'é', '温', '🌡', '\u{feff}']),
            1 => no_nul_char().prop_filter("no separator or wildcard", |c| !matches!(c, '/' | '+' | '#' | '$')),
        ],
        0..6,
    )
    .prop_map(|chars| chars.into_iter().collect())
    .boxed()
}

/// A valid topic name: non-empty, no wildcards.
pub fn arb_topic() -> BoxedStrategy<String> {
    (vec(arb_level(), 1..4), any::<bool>())
        .prop_map(|(levels, sys)| {
            let mut t = levels.join("/");
            if sys {
                t.insert_str(0, "$SYS/");
            }
            if t.is_empty() {
                t.push('t');
            }
            t
        })
        .boxed()
}

/// A valid topic filter; with `shared`, sometimes `$share/{group}/{filter}`.
pub fn arb_filter(shared: bool) -> BoxedStrategy<String> {
    let level = prop_oneof![4 => arb_level(), 1 => Just("+".to_string())];
    let group = vec(prop::sample::select(vec!['g', 'h', '1', '_', 'é']), 1..5)
        .prop_map(|c| c.into_iter().collect::<String>());
    (
        vec(level, 1..4),
        any::<bool>(),
        prop::option::weighted(0.3, group).prop_map(move |g| g.filter(|_| shared)),
    )
        .prop_map(|(levels, hash, group)| {
            let mut f = levels.join("/");
            if hash {
                if levels.len() == 1 && levels[0].is_empty() {
                    f = "#".into();
                } else {
                    f.push_str("/#");
                }
            }
            if f.is_empty() {
                f.push('#');
            }
            match group {
                Some(g) => format!("$share/{g}/{f}"),
                None => f,
            }
        })
        .boxed()
}

pub fn arb_pid() -> BoxedStrategy<Pid> {
    prop_oneof![
        1 => Just(1u16),
        1 => Just(u16::MAX),
        6 => 1u16..=u16::MAX,
    ]
    .prop_map(pid)
    .boxed()
}

pub fn arb_qos() -> BoxedStrategy<QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
    .boxed()
}

fn arb_nonzero_u16() -> BoxedStrategy<u16> {
    prop_oneof![Just(1u16), Just(u16::MAX), 1u16..=u16::MAX].boxed()
}

/// A value of property `id` inside its allowed range.
pub fn arb_prop(id: PropertyId) -> BoxedStrategy<OProp> {
    use OProp as O;
    use PropertyId as I;
    match id {
        I::PayloadFormatIndicator => any::<bool>().prop_map(O::PayloadFormatIndicator).boxed(),
        I::MessageExpiryInterval => any::<u32>().prop_map(O::MessageExpiryInterval).boxed(),
        I::ContentType => arb_string().prop_map(O::ContentType).boxed(),
        I::ResponseTopic => arb_topic().prop_map(O::ResponseTopic).boxed(),
        I::CorrelationData => arb_bytes(16).prop_map(O::CorrelationData).boxed(),
        I::SubscriptionIdentifier => prop_oneof![
            prop::sample::select(vec![
                1u32,
                127,
                128,
                16_383,
                16_384,
                2_097_151,
                2_097_152,
                268_435_455
            ]),
            1u32..=268_435_455,
        ]
        .prop_map(O::SubscriptionIdentifier)
        .boxed(),
        I::SessionExpiryInterval => any::<u32>().prop_map(O::SessionExpiryInterval).boxed(),
        I::AssignedClientIdentifier => arb_string().prop_map(O::AssignedClientIdentifier).boxed(),
        I::ServerKeepAlive => any::<u16>().prop_map(O::ServerKeepAlive).boxed(),
        I::AuthenticationMethod => arb_string().prop_map(O::AuthenticationMethod).boxed(),
        I::AuthenticationData => arb_bytes(16).prop_map(O::AuthenticationData).boxed(),
        I::RequestProblemInformation => {
            any::<bool>().prop_map(O::RequestProblemInformation).boxed()
        }
        I::WillDelayInterval => any::<u32>().prop_map(O::WillDelayInterval).boxed(),
        I::RequestResponseInformation => any::<bool>()
            .prop_map(O::RequestResponseInformation)
            .boxed(),
        I::ResponseInformation => arb_string().prop_map(O::ResponseInformation).boxed(),
        I::ServerReference => arb_string().prop_map(O::ServerReference).boxed(),
        I::ReasonString => arb_string().prop_map(O::ReasonString).boxed(),
        I::ReceiveMaximum => arb_nonzero_u16().prop_map(O::ReceiveMaximum).boxed(),
        I::TopicAliasMaximum => any::<u16>().prop_map(O::TopicAliasMaximum).boxed(),
        I::TopicAlias => arb_nonzero_u16().prop_map(O::TopicAlias).boxed(),
        I::MaximumQoS => prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]
            .prop_map(O::MaximumQoS)
            .boxed(),
        I::RetainAvailable => any::<bool>().prop_map(O::RetainAvailable).boxed(),
        I::UserProperty => (arb_string(), arb_string())
            .prop_map(|(k, v)| O::UserProperty(k, v))
            .boxed(),
        I::MaximumPacketSize => prop_oneof![Just(1u32), Just(u32::MAX), 1u32..]
            .prop_map(O::MaximumPacketSize)
            .boxed(),
        I::WildcardSubscriptionAvailable => any::<bool>()
            .prop_map(O::WildcardSubscriptionAvailable)
            .boxed(),
        I::SubscriptionIdentifierAvailable => any::<bool>()
            .prop_map(O::SubscriptionIdentifierAvailable)
            .boxed(),
        I::SharedSubscriptionAvailable => any::<bool>()
            .prop_map(O::SharedSubscriptionAvailable)
            .boxed(),
    }
}

/// A valid property list for `ctx`: each allowed property at most once, except
/// those that may repeat there (User Property, and Subscription Identifier in
/// PUBLISH), in any order. Empty before MQTT 5.
pub fn arb_props(ctx: PropertyContext, version: ProtocolVersion) -> BoxedStrategy<Vec<OProp>> {
    if !version.is_v5() {
        return Just(Vec::new()).boxed();
    }
    let groups: Vec<BoxedStrategy<Vec<OProp>>> = PropertyId::ALL
        .iter()
        .copied()
        .filter(|id| id.allowed_in(ctx))
        .map(|id| {
            if id.may_repeat(ctx) {
                vec(arb_prop(id), 0..=3).boxed()
            } else {
                prop::option::weighted(0.4, arb_prop(id))
                    .prop_map(|p| p.into_iter().collect())
                    .boxed()
            }
        })
        .collect();
    groups
        .prop_map(|g| g.into_iter().flatten().collect::<Vec<_>>())
        .prop_shuffle()
        .boxed()
}

fn arb_reason(kind: PacketType) -> BoxedStrategy<ReasonCode> {
    prop::sample::select(spec_reason_codes(kind))
        .prop_map(reason)
        .boxed()
}

/// A valid packet of type `kind` for `version` (AUTH only in MQTT 5).
pub fn arb_packet_of(kind: PacketType, version: ProtocolVersion) -> BoxedStrategy<OPacket> {
    let v5 = version.is_v5();
    match kind {
        PacketType::Connect => {
            let will = (
                arb_topic(),
                arb_bytes(16),
                arb_qos(),
                any::<bool>(),
                arb_props(PropertyContext::Will, version),
            )
                .prop_map(|(topic, payload, qos, retain, props)| OWill {
                    topic,
                    payload,
                    qos,
                    retain,
                    props,
                });
            (
                any::<bool>(),
                any::<u16>(),
                arb_props(PropertyContext::Connect, version),
                arb_string(),
                prop::option::of(will),
                prop::option::of(arb_string()),
                prop::option::of(arb_bytes(12)),
            )
                .prop_map(
                    move |(clean_start, keep_alive, props, client_id, will, username, password)| {
                        // [MQTT-3.1.1: 3.1.2-22]: a password needs a user name.
                        let username = match (&username, &password) {
                            (None, Some(_)) if !v5 => Some(String::new()),
                            _ => username,
                        };
                        OPacket::Connect {
                            protocol: version,
                            clean_start,
                            keep_alive,
                            props,
                            client_id,
                            will,
                            username,
                            password,
                        }
                    },
                )
                .boxed()
        }
        PacketType::ConnAck => {
            let reason = if v5 {
                arb_reason(PacketType::ConnAck)
            } else {
                (0u8..=5)
                    .prop_map(|c| ReasonCode::from_v3_connack(c).unwrap())
                    .boxed()
            };
            (
                any::<bool>(),
                reason,
                arb_props(PropertyContext::ConnAck, version),
            )
                .prop_map(|(sp, reason, props)| OPacket::ConnAck {
                    // A refused connection has no session.
                    session_present: sp && reason == ReasonCode::Success,
                    reason,
                    props,
                })
                .boxed()
        }
        PacketType::Publish => (
            any::<bool>(),
            0u8..=2,
            arb_pid(),
            any::<bool>(),
            arb_topic(),
            any::<bool>(),
            arb_props(PropertyContext::Publish, version),
            arb_bytes(32),
        )
            .prop_map(
                |(dup, qos, pid, retain, topic, alias_only, props, payload)| {
                    let qos_pid = match qos {
                        0 => QosPid::AtMostOnce,
                        1 => QosPid::AtLeastOnce(pid),
                        _ => QosPid::ExactlyOnce(pid),
                    };
                    // An empty topic is valid only with a Topic Alias.
                    let has_alias = props.iter().any(|p| matches!(p, OProp::TopicAlias(_)));
                    OPacket::Publish {
                        dup: dup && qos > 0,
                        qos_pid,
                        retain,
                        topic: if has_alias && alias_only {
                            String::new()
                        } else {
                            topic
                        },
                        props,
                        payload,
                    }
                },
            )
            .boxed(),
        PacketType::PubAck | PacketType::PubRec | PacketType::PubRel | PacketType::PubComp => {
            let reason = if v5 {
                arb_reason(kind)
            } else {
                Just(ReasonCode::Success).boxed()
            };
            (
                arb_pid(),
                reason,
                arb_props(PropertyContext::PubResp, version),
            )
                .prop_map(move |(pid, reason, props)| OPacket::PubResp {
                    kind,
                    pid,
                    reason,
                    props,
                })
                .boxed()
        }
        PacketType::Subscribe => {
            let options = (arb_qos(), any::<bool>(), any::<bool>(), 0u8..=2).prop_map(
                move |(qos, no_local, rap, rh)| {
                    if v5 {
                        SubscriptionOptions {
                            qos,
                            no_local,
                            retain_as_published: rap,
                            retain_handling: match rh {
                                0 => RetainHandling::SendOnSubscribe,
                                1 => RetainHandling::SendIfNew,
                                _ => RetainHandling::DoNotSend,
                            },
                        }
                    } else {
                        SubscriptionOptions::qos(qos)
                    }
                },
            );
            let entry = (arb_filter(v5), options).prop_map(|(filter, mut options)| {
                // [MQTT-5: 3.8.3-4] No Local is a Protocol Error on a shared subscription.
                if filter.starts_with("$share/") {
                    options.no_local = false;
                }
                (filter, options)
            });
            (
                arb_pid(),
                arb_props(PropertyContext::Subscribe, version),
                vec(entry, 1..5),
            )
                .prop_map(|(pid, props, filters)| OPacket::Subscribe {
                    pid,
                    props,
                    filters,
                })
                .boxed()
        }
        PacketType::SubAck => {
            let code = if v5 {
                arb_reason(PacketType::SubAck)
            } else {
                prop::sample::select(vec![0x00u8, 0x01, 0x02, 0x80])
                    .prop_map(reason)
                    .boxed()
            };
            (
                arb_pid(),
                arb_props(PropertyContext::SubAck, version),
                vec(code, 1..6),
            )
                .prop_map(|(pid, props, codes)| OPacket::SubAck { pid, props, codes })
                .boxed()
        }
        PacketType::Unsubscribe => (
            arb_pid(),
            arb_props(PropertyContext::Unsubscribe, version),
            vec(arb_filter(v5), 1..5),
        )
            .prop_map(|(pid, props, filters)| OPacket::Unsubscribe {
                pid,
                props,
                filters,
            })
            .boxed(),
        PacketType::UnsubAck => {
            let codes = if v5 {
                vec(arb_reason(PacketType::UnsubAck), 1..6).boxed()
            } else {
                // 3.1.1 UNSUBACK has no payload.
                Just(Vec::new()).boxed()
            };
            (
                arb_pid(),
                arb_props(PropertyContext::UnsubAck, version),
                codes,
            )
                .prop_map(|(pid, props, codes)| OPacket::UnsubAck { pid, props, codes })
                .boxed()
        }
        PacketType::PingReq => Just(OPacket::PingReq).boxed(),
        PacketType::PingResp => Just(OPacket::PingResp).boxed(),
        PacketType::Disconnect => {
            if v5 {
                (
                    arb_reason(PacketType::Disconnect),
                    arb_props(PropertyContext::Disconnect, version),
                )
                    .prop_map(|(reason, props)| OPacket::Disconnect { reason, props })
                    .boxed()
            } else {
                Just(OPacket::Disconnect {
                    reason: ReasonCode::Success,
                    props: Vec::new(),
                })
                .boxed()
            }
        }
        PacketType::Auth => {
            assert!(v5, "AUTH exists only in MQTT 5");
            (
                arb_reason(PacketType::Auth),
                arb_props(PropertyContext::Auth, version),
            )
                .prop_map(|(reason, props)| OPacket::Auth { reason, props })
                .boxed()
        }
    }
}

/// The packet types that exist in `version`.
pub fn types_in(version: ProtocolVersion) -> Vec<PacketType> {
    PACKET_TYPES
        .iter()
        .copied()
        .filter(|t| version.is_v5() || *t != PacketType::Auth)
        .collect()
}

/// Any valid packet for `version`.
pub fn arb_packet(version: ProtocolVersion) -> BoxedStrategy<OPacket> {
    Union::new(
        types_in(version)
            .into_iter()
            .map(|t| arb_packet_of(t, version)),
    )
    .boxed()
}

/// A version together with a valid packet for it.
pub fn arb_versioned_packet() -> BoxedStrategy<(ProtocolVersion, OPacket)> {
    arb_version()
        .prop_flat_map(|v| arb_packet(v).prop_map(move |p| (v, p)))
        .boxed()
}

// ---------------------------------------------------------------------------
// Hand-picked packets.
// ---------------------------------------------------------------------------

fn ps(props: &[OProp]) -> Vec<OProp> {
    props.to_vec()
}

/// A fixed set of valid packets for `version`: every type, several shapes.
pub fn sample_packets(version: ProtocolVersion) -> Vec<OPacket> {
    let v5 = version.is_v5();
    let props = |p: &[OProp]| if v5 { ps(p) } else { Vec::new() };
    let user = OProp::UserProperty("k".into(), "v".into());
    let reason = |v5_code: u8| {
        if v5 {
            self::reason(v5_code)
        } else {
            ReasonCode::Success
        }
    };
    let mut out = vec![
        OPacket::Connect {
            protocol: version,
            clean_start: true,
            keep_alive: 60,
            props: props(&[
                OProp::SessionExpiryInterval(120),
                OProp::ReceiveMaximum(20),
                user.clone(),
            ]),
            client_id: "client-1".into(),
            will: Some(OWill {
                topic: "status/client-1".into(),
                payload: b"offline".to_vec(),
                qos: QoS::AtLeastOnce,
                retain: true,
                props: props(&[OProp::WillDelayInterval(5), OProp::ContentType("t".into())]),
            }),
            username: Some("user".into()),
            password: Some(b"secret".to_vec()),
        },
        OPacket::Connect {
            protocol: version,
            clean_start: false,
            keep_alive: 0,
            props: Vec::new(),
            client_id: String::new(),
            will: None,
            username: None,
            password: None,
        },
        OPacket::ConnAck {
            session_present: true,
            reason: ReasonCode::Success,
            props: props(&[
                OProp::AssignedClientIdentifier("auto".into()),
                OProp::MaximumQoS(QoS::AtLeastOnce),
                OProp::TopicAliasMaximum(10),
            ]),
        },
        OPacket::ConnAck {
            session_present: false,
            reason: ReasonCode::NotAuthorized,
            props: Vec::new(),
        },
        OPacket::Publish {
            dup: false,
            qos_pid: QosPid::AtMostOnce,
            retain: false,
            topic: "room_temp".into(),
            props: Vec::new(),
            payload: b"22.5".to_vec(),
        },
        OPacket::Publish {
            dup: true,
            qos_pid: QosPid::AtLeastOnce(pid(7)),
            retain: true,
            topic: "a/b/c".into(),
            props: props(&[
                OProp::PayloadFormatIndicator(true),
                OProp::SubscriptionIdentifier(1),
                OProp::SubscriptionIdentifier(268_435_455),
                user.clone(),
            ]),
            payload: Vec::new(),
        },
        OPacket::Publish {
            dup: false,
            qos_pid: QosPid::ExactlyOnce(pid(65535)),
            retain: false,
            topic: "温度/🌡".into(),
            props: Vec::new(),
            payload: vec![0; 300],
        },
        OPacket::PubResp {
            kind: PacketType::PubAck,
            pid: pid(7),
            reason: ReasonCode::Success,
            props: Vec::new(),
        },
        OPacket::PubResp {
            kind: PacketType::PubAck,
            pid: pid(8),
            reason: reason(0x10),
            props: Vec::new(),
        },
        OPacket::PubResp {
            kind: PacketType::PubRec,
            pid: pid(9),
            reason: reason(0x80),
            props: props(&[OProp::ReasonString("no".into())]),
        },
        OPacket::PubResp {
            kind: PacketType::PubRel,
            pid: pid(9),
            reason: ReasonCode::Success,
            props: props(std::slice::from_ref(&user)),
        },
        OPacket::PubResp {
            kind: PacketType::PubComp,
            pid: pid(9),
            reason: reason(0x92),
            props: Vec::new(),
        },
        OPacket::Subscribe {
            pid: pid(1),
            props: props(&[OProp::SubscriptionIdentifier(42)]),
            filters: vec![
                (
                    "room_temp".into(),
                    SubscriptionOptions::qos(QoS::AtMostOnce),
                ),
                (
                    "sport/+/player1".into(),
                    SubscriptionOptions::qos(QoS::ExactlyOnce),
                ),
                ("#".into(), SubscriptionOptions::qos(QoS::AtLeastOnce)),
            ],
        },
        OPacket::SubAck {
            pid: pid(1),
            props: props(&[OProp::ReasonString("ok".into())]),
            codes: vec![
                ReasonCode::Success,
                ReasonCode::GrantedQoS2,
                ReasonCode::UnspecifiedError,
            ],
        },
        OPacket::Unsubscribe {
            pid: pid(2),
            props: props(std::slice::from_ref(&user)),
            filters: vec!["room_temp".into(), "a/#".into()],
        },
        OPacket::UnsubAck {
            pid: pid(2),
            props: Vec::new(),
            codes: if v5 {
                vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
            } else {
                Vec::new()
            },
        },
        OPacket::PingReq,
        OPacket::PingResp,
        OPacket::Disconnect {
            reason: ReasonCode::Success,
            props: Vec::new(),
        },
    ];
    if v5 {
        out.extend([
            OPacket::Publish {
                dup: false,
                qos_pid: QosPid::AtMostOnce,
                retain: false,
                topic: String::new(),
                props: ps(&[OProp::TopicAlias(3)]),
                payload: b"aliased".to_vec(),
            },
            OPacket::Subscribe {
                pid: pid(3),
                props: Vec::new(),
                filters: vec![(
                    "$share/group/a/+".into(),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: false,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                )],
            },
            OPacket::Disconnect {
                reason: ReasonCode::DisconnectWithWillMessage,
                props: Vec::new(),
            },
            OPacket::Disconnect {
                reason: ReasonCode::ServerMoved,
                props: ps(&[
                    OProp::ServerReference("other".into()),
                    OProp::SessionExpiryInterval(0),
                ]),
            },
            OPacket::Auth {
                reason: ReasonCode::Success,
                props: Vec::new(),
            },
            OPacket::Auth {
                reason: ReasonCode::ContinueAuthentication,
                props: ps(&[
                    OProp::AuthenticationMethod("SCRAM-SHA-1".into()),
                    OProp::AuthenticationData(b"client-first".to_vec()),
                ]),
            },
        ]);
    }
    out
}

/// Bytes from space-separated hex pairs.
pub fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

/// A Binary Data / UTF-8 string field: two-byte length, then the bytes.
pub fn field(b: &[u8]) -> Vec<u8> {
    let mut out = (b.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(b);
    out
}
