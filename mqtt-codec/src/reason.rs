//! MQTT 5 reason codes (section 2.4) and which packets may carry each one,
//! plus the MQTT 3.1.1 CONNACK return codes they map to.

use crate::error::DecodeError;
use crate::header::PacketType;

macro_rules! reason_codes {
    ($($name:ident = $value:literal, $doc:literal;)*) => {
        /// An MQTT 5 reason code. In MQTT 3.1.1 the same values serve as SUBACK
        /// return codes, and CONNACK return codes map onto them (see
        /// [`ReasonCode::to_v3_connack`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        #[allow(missing_docs)]
        pub enum ReasonCode {
            $(#[doc = $doc] $name = $value,)*
        }

        impl ReasonCode {
            /// The code for a byte, if MQTT 5 defines one.
            pub fn from_u8(value: u8) -> Option<ReasonCode> {
                match value {
                    $($value => Some(ReasonCode::$name),)*
                    _ => None,
                }
            }
        }
    };
}

reason_codes! {
    Success = 0x00, "Success; also Normal disconnection and Granted QoS 0.";
    GrantedQoS1 = 0x01, "Granted QoS 1.";
    GrantedQoS2 = 0x02, "Granted QoS 2.";
    DisconnectWithWillMessage = 0x04, "Disconnect with Will Message.";
    NoMatchingSubscribers = 0x10, "No matching subscribers.";
    NoSubscriptionExisted = 0x11, "No subscription existed.";
    ContinueAuthentication = 0x18, "Continue authentication.";
    ReAuthenticate = 0x19, "Re-authenticate.";
    UnspecifiedError = 0x80, "Unspecified error.";
    MalformedPacket = 0x81, "Malformed Packet.";
    ProtocolError = 0x82, "Protocol Error.";
    ImplementationSpecificError = 0x83, "Implementation specific error.";
    UnsupportedProtocolVersion = 0x84, "Unsupported Protocol Version.";
    ClientIdentifierNotValid = 0x85, "Client Identifier not valid.";
    BadUserNameOrPassword = 0x86, "Bad User Name or Password.";
    NotAuthorized = 0x87, "Not authorized.";
    ServerUnavailable = 0x88, "Server unavailable.";
    ServerBusy = 0x89, "Server busy.";
    Banned = 0x8A, "Banned.";
    ServerShuttingDown = 0x8B, "Server shutting down.";
    BadAuthenticationMethod = 0x8C, "Bad authentication method.";
    KeepAliveTimeout = 0x8D, "Keep Alive timeout.";
    SessionTakenOver = 0x8E, "Session taken over.";
    TopicFilterInvalid = 0x8F, "Topic Filter invalid.";
    TopicNameInvalid = 0x90, "Topic Name invalid.";
    PacketIdentifierInUse = 0x91, "Packet Identifier in use.";
    PacketIdentifierNotFound = 0x92, "Packet Identifier not found.";
    ReceiveMaximumExceeded = 0x93, "Receive Maximum exceeded.";
    TopicAliasInvalid = 0x94, "Topic Alias invalid.";
    PacketTooLarge = 0x95, "Packet too large.";
    MessageRateTooHigh = 0x96, "Message rate too high.";
    QuotaExceeded = 0x97, "Quota exceeded.";
    AdministrativeAction = 0x98, "Administrative action.";
    PayloadFormatInvalid = 0x99, "Payload format invalid.";
    RetainNotSupported = 0x9A, "Retain not supported.";
    QoSNotSupported = 0x9B, "QoS not supported.";
    UseAnotherServer = 0x9C, "Use another server.";
    ServerMoved = 0x9D, "Server moved.";
    SharedSubscriptionsNotSupported = 0x9E, "Shared Subscriptions not supported.";
    ConnectionRateExceeded = 0x9F, "Connection rate exceeded.";
    MaximumConnectTime = 0xA0, "Maximum connect time.";
    SubscriptionIdentifiersNotSupported = 0xA1, "Subscription Identifiers not supported.";
    WildcardSubscriptionsNotSupported = 0xA2, "Wildcard Subscriptions not supported.";
}

use ReasonCode as R;

const CONNACK: &[ReasonCode] = &[
    R::Success,
    R::UnspecifiedError,
    R::MalformedPacket,
    R::ProtocolError,
    R::ImplementationSpecificError,
    R::UnsupportedProtocolVersion,
    R::ClientIdentifierNotValid,
    R::BadUserNameOrPassword,
    R::NotAuthorized,
    R::ServerUnavailable,
    R::ServerBusy,
    R::Banned,
    R::BadAuthenticationMethod,
    R::TopicNameInvalid,
    R::PacketTooLarge,
    R::QuotaExceeded,
    R::PayloadFormatInvalid,
    R::RetainNotSupported,
    R::QoSNotSupported,
    R::UseAnotherServer,
    R::ServerMoved,
    R::ConnectionRateExceeded,
];

const PUBACK_PUBREC: &[ReasonCode] = &[
    R::Success,
    R::NoMatchingSubscribers,
    R::UnspecifiedError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::TopicNameInvalid,
    R::PacketIdentifierInUse,
    R::QuotaExceeded,
    R::PayloadFormatInvalid,
];

const PUBREL_PUBCOMP: &[ReasonCode] = &[R::Success, R::PacketIdentifierNotFound];

const SUBACK: &[ReasonCode] = &[
    R::Success,
    R::GrantedQoS1,
    R::GrantedQoS2,
    R::UnspecifiedError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::TopicFilterInvalid,
    R::PacketIdentifierInUse,
    R::QuotaExceeded,
    R::SharedSubscriptionsNotSupported,
    R::SubscriptionIdentifiersNotSupported,
    R::WildcardSubscriptionsNotSupported,
];

const UNSUBACK: &[ReasonCode] = &[
    R::Success,
    R::NoSubscriptionExisted,
    R::UnspecifiedError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::TopicFilterInvalid,
    R::PacketIdentifierInUse,
];

const DISCONNECT: &[ReasonCode] = &[
    R::Success,
    R::DisconnectWithWillMessage,
    R::UnspecifiedError,
    R::MalformedPacket,
    R::ProtocolError,
    R::ImplementationSpecificError,
    R::NotAuthorized,
    R::ServerBusy,
    R::ServerShuttingDown,
    R::KeepAliveTimeout,
    R::SessionTakenOver,
    R::TopicFilterInvalid,
    R::TopicNameInvalid,
    R::ReceiveMaximumExceeded,
    R::TopicAliasInvalid,
    R::PacketTooLarge,
    R::MessageRateTooHigh,
    R::QuotaExceeded,
    R::AdministrativeAction,
    R::PayloadFormatInvalid,
    R::RetainNotSupported,
    R::QoSNotSupported,
    R::UseAnotherServer,
    R::ServerMoved,
    R::SharedSubscriptionsNotSupported,
    R::ConnectionRateExceeded,
    R::MaximumConnectTime,
    R::SubscriptionIdentifiersNotSupported,
    R::WildcardSubscriptionsNotSupported,
];

const AUTH: &[ReasonCode] = &[R::Success, R::ContinueAuthentication, R::ReAuthenticate];

/// A list of codes as a 256-bit set, one bit per byte value, so that checking
/// a code on encode is a shift instead of a search of the list.
type CodeSet = [u64; 4];

const fn code_set(list: &[ReasonCode]) -> CodeSet {
    let mut set = [0; 4];
    let mut i = 0;
    while i < list.len() {
        let code = list[i] as u8;
        set[(code >> 6) as usize] |= 1 << (code & 63);
        i += 1;
    }
    set
}

const CONNACK_SET: CodeSet = code_set(CONNACK);
const PUBACK_PUBREC_SET: CodeSet = code_set(PUBACK_PUBREC);
const PUBREL_PUBCOMP_SET: CodeSet = code_set(PUBREL_PUBCOMP);
const SUBACK_SET: CodeSet = code_set(SUBACK);
const UNSUBACK_SET: CodeSet = code_set(UNSUBACK);
const DISCONNECT_SET: CodeSet = code_set(DISCONNECT);
const AUTH_SET: CodeSet = code_set(AUTH);

impl ReasonCode {
    /// The code as a byte.
    #[inline]
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// True for codes 0x80 and above, which report a failure.
    #[inline]
    pub fn is_error(self) -> bool {
        self.as_u8() >= 0x80
    }

    /// Whether MQTT 5 allows this code in a packet of type `packet`.
    #[inline]
    pub fn allowed_in(self, packet: PacketType) -> bool {
        let set = match packet {
            PacketType::ConnAck => &CONNACK_SET,
            PacketType::PubAck | PacketType::PubRec => &PUBACK_PUBREC_SET,
            PacketType::PubRel | PacketType::PubComp => &PUBREL_PUBCOMP_SET,
            PacketType::SubAck => &SUBACK_SET,
            PacketType::UnsubAck => &UNSUBACK_SET,
            PacketType::Disconnect => &DISCONNECT_SET,
            PacketType::Auth => &AUTH_SET,
            _ => return false,
        };
        let code = self.as_u8();
        set[usize::from(code >> 6)] >> (code & 63) & 1 != 0
    }

    /// Parses a byte as a reason code for a packet of type `packet`.
    pub(crate) fn decode_for(value: u8, packet: PacketType) -> Result<ReasonCode, DecodeError> {
        match ReasonCode::from_u8(value) {
            Some(code) if code.allowed_in(packet) => Ok(code),
            _ => Err(DecodeError::InvalidReasonCode(value)),
        }
    }

    /// The MQTT 3.1 / 3.1.1 CONNACK return code for this reason, if one exists:
    /// 0 accepted, 1 unacceptable protocol version, 2 identifier rejected,
    /// 3 server unavailable, 4 bad user name or password, 5 not authorized.
    pub fn to_v3_connack(self) -> Option<u8> {
        Some(match self {
            R::Success => 0,
            R::UnsupportedProtocolVersion => 1,
            R::ClientIdentifierNotValid => 2,
            R::ServerUnavailable => 3,
            R::BadUserNameOrPassword => 4,
            R::NotAuthorized => 5,
            _ => return None,
        })
    }

    /// The reason code for an MQTT 3.1 / 3.1.1 CONNACK return code.
    pub fn from_v3_connack(code: u8) -> Option<ReasonCode> {
        Some(match code {
            0 => R::Success,
            1 => R::UnsupportedProtocolVersion,
            2 => R::ClientIdentifierNotValid,
            3 => R::ServerUnavailable,
            4 => R::BadUserNameOrPassword,
            5 => R::NotAuthorized,
            _ => return None,
        })
    }

    /// The nearest MQTT 3.1.1 CONNACK return code, for a server that must
    /// refuse a 3.1.1 client for a reason only MQTT 5 can name.
    pub fn to_v3_connack_lossy(self) -> u8 {
        self.to_v3_connack().unwrap_or(match self {
            R::BadAuthenticationMethod | R::Banned => 5,
            R::ClientIdentifierNotValid => 2,
            _ => 3,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_sets_hold_exactly_their_lists() {
        let lists: [(&[PacketType], &[ReasonCode]); 7] = [
            (&[PacketType::ConnAck], CONNACK),
            (&[PacketType::PubAck, PacketType::PubRec], PUBACK_PUBREC),
            (&[PacketType::PubRel, PacketType::PubComp], PUBREL_PUBCOMP),
            (&[PacketType::SubAck], SUBACK),
            (&[PacketType::UnsubAck], UNSUBACK),
            (&[PacketType::Disconnect], DISCONNECT),
            (&[PacketType::Auth], AUTH),
        ];
        for byte in 0..=255 {
            let Some(code) = ReasonCode::from_u8(byte) else {
                continue;
            };
            for (types, list) in lists {
                for &t in types {
                    assert_eq!(code.allowed_in(t), list.contains(&code), "{code:?} {t:?}");
                }
            }
            for t in [
                PacketType::Connect,
                PacketType::Publish,
                PacketType::Subscribe,
                PacketType::Unsubscribe,
                PacketType::PingReq,
                PacketType::PingResp,
            ] {
                assert!(!code.allowed_in(t));
            }
        }
    }
}
