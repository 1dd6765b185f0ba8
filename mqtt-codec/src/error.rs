//! Typed errors for decoding and encoding, and the MQTT 5 reason code each one
//! calls for when a server has to tell the peer why it is closing.

use core::fmt;

use crate::properties::PropertyId;
use crate::reason::ReasonCode;

/// Why a byte sequence is not a valid MQTT packet.
///
/// Every variant is a small `Copy` value with a static description, so a
/// firmware build can match on it without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The first byte names packet type 0, which is reserved.
    ReservedPacketType,
    /// The fixed-header flags are not the ones the packet type requires
    /// [MQTT-3.1.1: 2.2.2-1/2].
    InvalidHeaderFlags {
        /// The first byte of the packet.
        byte: u8,
    },
    /// The Remaining Length uses more than four bytes, or more bytes than the
    /// value needs [MQTT-5: 1.5.5-1].
    MalformedRemainingLength,
    /// The packet is larger than the maximum the caller accepts.
    PacketTooLarge {
        /// The size the fixed header announces (header included).
        size: usize,
        /// The caller's maximum.
        max: u32,
    },
    /// A field runs past the end of the packet's body.
    UnexpectedEnd,
    /// The body has bytes left over after its last field.
    TrailingBytes,
    /// A string is not well-formed UTF-8 [MQTT-5: 1.5.4-1].
    InvalidUtf8,
    /// A string contains U+0000 [MQTT-5: 1.5.4-2].
    NullCharacter,
    /// CONNECT names a protocol other than `MQTT` / `MQIsdp`.
    InvalidProtocolName,
    /// CONNECT asks for a protocol level this codec does not speak. The server
    /// answers with CONNACK 0x01 (3.1.1) or 0x84 (5.0) and closes.
    UnsupportedProtocolVersion(u8),
    /// CONNECT flags are inconsistent or use the reserved bit [MQTT-3.1.1/5: 3.1.2-3,
    /// MQTT-3.1.1: 3.1.2-11..15, MQTT-3.1.1: 3.1.2-22].
    InvalidConnectFlags,
    /// A QoS field holds 3.
    InvalidQoS,
    /// A QoS 0 PUBLISH has the DUP flag set [MQTT-3.1.1/5: 3.3.1-2].
    DupWithQoS0,
    /// A packet identifier is zero where it must be non-zero [MQTT-5: 2.2.1-3].
    ZeroPacketId,
    /// A PUBLISH topic name is empty (without a topic alias) or holds a wildcard.
    InvalidTopicName,
    /// A topic filter is empty or misuses `+`, `#` or `$share`.
    InvalidTopicFilter,
    /// SUBSCRIBE or UNSUBSCRIBE carries no topic filter [MQTT-3.1.1: 3.8.3-3, MQTT-3.1.1/5: 3.10.3-2].
    NoTopicFilters,
    /// Subscription options use reserved bits ([MQTT-3.1.1: 3.8.3-4],
    /// [MQTT-5: 3.8.3-5]).
    InvalidSubscriptionOptions,
    /// Subscription options ask for Retain Handling 3, a Protocol Error in
    /// MQTT 5 (section 3.8.3.1).
    InvalidRetainHandling,
    /// No Local is set on a shared subscription, a Protocol Error
    /// [MQTT-5: 3.8.3-4].
    NoLocalOnSharedSubscription,
    /// A property identifier that MQTT 5 does not define.
    UnknownProperty(u8),
    /// A property that does not belong to this packet.
    PropertyNotAllowed(PropertyId),
    /// A property that may appear once appears again.
    DuplicateProperty(PropertyId),
    /// A property value outside its allowed range (for example Receive Maximum 0).
    InvalidPropertyValue(PropertyId),
    /// A reason code that is not defined for this packet.
    InvalidReasonCode(u8),
    /// A packet that does not exist in the negotiated protocol version (AUTH
    /// before 5.0).
    PacketNotInVersion,
}

impl DecodeError {
    /// The MQTT 5 reason code a server sends in DISCONNECT (or CONNACK) before
    /// closing the connection because of this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::UnsupportedProtocolVersion(_) => ReasonCode::UnsupportedProtocolVersion,
            DecodeError::InvalidTopicName => ReasonCode::TopicNameInvalid,
            DecodeError::InvalidTopicFilter => ReasonCode::TopicFilterInvalid,
            // [MQTT-5: 3.8.3-2] / [MQTT-3.1.1/5: 3.10.3-2]: "A SUBSCRIBE (UNSUBSCRIBE)
            // packet with no Payload is a Protocol Error."
            DecodeError::DuplicateProperty(_)
            | DecodeError::InvalidPropertyValue(_)
            | DecodeError::NoTopicFilters
            | DecodeError::InvalidRetainHandling
            | DecodeError::NoLocalOnSharedSubscription
            | DecodeError::PacketNotInVersion => ReasonCode::ProtocolError,
            _ => ReasonCode::MalformedPacket,
        }
    }

    /// A short static description.
    pub fn as_str(&self) -> &'static str {
        match self {
            DecodeError::ReservedPacketType => "reserved packet type 0",
            DecodeError::InvalidHeaderFlags { .. } => "invalid fixed header flags",
            DecodeError::MalformedRemainingLength => "malformed remaining length",
            DecodeError::PacketTooLarge { .. } => "packet larger than the maximum packet size",
            DecodeError::UnexpectedEnd => "field runs past the end of the packet",
            DecodeError::TrailingBytes => "bytes left over after the last field",
            DecodeError::InvalidUtf8 => "string is not valid UTF-8",
            DecodeError::NullCharacter => "string contains U+0000",
            DecodeError::InvalidProtocolName => "invalid protocol name",
            DecodeError::UnsupportedProtocolVersion(_) => "unsupported protocol version",
            DecodeError::InvalidConnectFlags => "invalid CONNECT flags",
            DecodeError::InvalidQoS => "QoS 3 is not a valid QoS",
            DecodeError::DupWithQoS0 => "DUP flag set on a QoS 0 PUBLISH",
            DecodeError::ZeroPacketId => "packet identifier 0",
            DecodeError::InvalidTopicName => "invalid topic name",
            DecodeError::InvalidTopicFilter => "invalid topic filter",
            DecodeError::NoTopicFilters => "no topic filters",
            DecodeError::InvalidSubscriptionOptions => "invalid subscription options",
            DecodeError::InvalidRetainHandling => "retain handling 3 is not a valid value",
            DecodeError::NoLocalOnSharedSubscription => "no local set on a shared subscription",
            DecodeError::UnknownProperty(_) => "unknown property identifier",
            DecodeError::PropertyNotAllowed(_) => "property not allowed in this packet",
            DecodeError::DuplicateProperty(_) => "property appears more than once",
            DecodeError::InvalidPropertyValue(_) => "property value out of range",
            DecodeError::InvalidReasonCode(_) => "reason code not allowed in this packet",
            DecodeError::PacketNotInVersion => "packet type not defined in this protocol version",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::InvalidHeaderFlags { byte } => {
                write!(f, "{} (first byte {byte:#04x})", self.as_str())
            }
            DecodeError::PacketTooLarge { size, max } => {
                write!(f, "{}: {size} > {max}", self.as_str())
            }
            DecodeError::UnsupportedProtocolVersion(v) => write!(f, "{} {v}", self.as_str()),
            DecodeError::UnknownProperty(id) => write!(f, "{} {id:#04x}", self.as_str()),
            DecodeError::PropertyNotAllowed(id)
            | DecodeError::DuplicateProperty(id)
            | DecodeError::InvalidPropertyValue(id) => write!(f, "{}: {id:?}", self.as_str()),
            DecodeError::InvalidReasonCode(c) => write!(f, "{} ({c:#04x})", self.as_str()),
            _ => f.write_str(self.as_str()),
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small; `required` is the packet's full size.
    BufferTooSmall {
        /// Bytes the whole packet needs.
        required: usize,
    },
    /// The packet would exceed the Remaining Length limit of 268,435,455.
    PacketTooLarge,
    /// A string or binary field is longer than 65,535 bytes.
    FieldTooLong,
    /// A string would be invalid on the wire (contains U+0000).
    NullCharacter,
    /// A field is not valid for this packet (the decode error it would cause).
    Invalid(DecodeError),
    /// The packet or one of its fields does not exist in the chosen protocol
    /// version (for example a reason code with no 3.1.1 equivalent).
    NotInVersion,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { required } => {
                write!(f, "output buffer too small: {required} bytes required")
            }
            EncodeError::PacketTooLarge => f.write_str("packet exceeds 268435455 bytes"),
            EncodeError::FieldTooLong => f.write_str("string or binary field over 65535 bytes"),
            EncodeError::NullCharacter => f.write_str("string contains U+0000"),
            EncodeError::Invalid(e) => write!(f, "invalid packet: {e}"),
            EncodeError::NotInVersion => f.write_str("not representable in this protocol version"),
        }
    }
}

impl From<DecodeError> for EncodeError {
    fn from(e: DecodeError) -> Self {
        EncodeError::Invalid(e)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}
#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}
