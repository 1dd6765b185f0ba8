//! What can go wrong, as one error type with a variant per cause a program
//! may want to handle differently.

use std::fmt;

use mqtt_codec::ReasonCode;

/// A client error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The server refused the connection with this CONNACK reason (3.1.1
    /// return codes are mapped to their MQTT 5 equivalents).
    Refused(ReasonCode),
    /// The network connection failed (DNS, TCP, TLS, or closed).
    Connection(String),
    /// No answer within the configured time.
    Timeout,
    /// The offline queue is full while the client is disconnected.
    QueueFull,
    /// The server rejected an operation with this reason code.
    Rejected(ReasonCode),
    /// The argument cannot be sent (invalid topic, payload too large...).
    Invalid(String),
    /// The client was disconnected by the application.
    Closed,
    /// The server broke the protocol.
    Protocol(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Refused(r) => write!(
                f,
                "connection refused: {} (reason code {:#04x})",
                reason_text(*r),
                r.as_u8()
            ),
            ClientError::Connection(e) => write!(f, "connection failed: {e}"),
            ClientError::Timeout => f.write_str("timed out"),
            ClientError::QueueFull => f.write_str("offline queue full: message not accepted"),
            ClientError::Rejected(r) => write!(
                f,
                "rejected by the server: {} (reason code {:#04x})",
                reason_text(*r),
                r.as_u8()
            ),
            ClientError::Invalid(e) => write!(f, "invalid request: {e}"),
            ClientError::Closed => f.write_str("client disconnected"),
            ClientError::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Human words for the reason codes a user is likely to see.
pub fn reason_text(r: ReasonCode) -> &'static str {
    use ReasonCode as R;
    match r {
        R::Success => "success",
        R::UnsupportedProtocolVersion => "unacceptable protocol version",
        R::ClientIdentifierNotValid => "identifier rejected",
        R::ServerUnavailable => "server unavailable",
        R::BadUserNameOrPassword => "bad user name or password",
        R::NotAuthorized => "not authorised",
        R::BadAuthenticationMethod => "bad authentication method",
        R::Banned => "banned",
        R::ServerBusy => "server busy",
        R::QuotaExceeded => "quota exceeded",
        R::TopicNameInvalid => "topic name invalid",
        R::TopicFilterInvalid => "topic filter invalid",
        R::PacketTooLarge => "packet too large",
        R::QoSNotSupported => "QoS not supported",
        R::RetainNotSupported => "retain not supported",
        R::PayloadFormatInvalid => "payload format invalid",
        R::NoMatchingSubscribers => "no matching subscribers",
        R::SessionTakenOver => "session taken over",
        R::KeepAliveTimeout => "keep alive timeout",
        R::ServerShuttingDown => "server shutting down",
        R::MalformedPacket => "malformed packet",
        R::ProtocolError => "protocol error",
        R::SharedSubscriptionsNotSupported => "shared subscriptions not supported",
        R::WildcardSubscriptionsNotSupported => "wildcard subscriptions not supported",
        R::SubscriptionIdentifiersNotSupported => "subscription identifiers not supported",
        R::UseAnotherServer => "use another server",
        R::ServerMoved => "server moved",
        _ => "error",
    }
}
