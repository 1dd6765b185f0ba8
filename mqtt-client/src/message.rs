//! Owned messages: what the application publishes and what it receives.

use bytes::Bytes;
use mqtt_codec::{Property, Publish, QoS};

/// MQTT 5 properties of a PUBLISH (or will) that travel with the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// Payload Format Indicator: `Some(true)` for UTF-8 text.
    pub payload_format_utf8: Option<bool>,
    /// Message Expiry Interval in seconds.
    pub message_expiry_secs: Option<u32>,
    /// Content Type.
    pub content_type: Option<String>,
    /// Response Topic.
    pub response_topic: Option<String>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User Properties, in order.
    pub user_properties: Vec<(String, String)>,
    /// Subscription Identifiers (received messages only).
    pub subscription_identifiers: Vec<u32>,
}

impl PublishProperties {
    pub(crate) fn from_codec(props: &mqtt_codec::Properties<'_>) -> Self {
        let mut out = PublishProperties::default();
        for p in props.iter() {
            match p {
                Property::PayloadFormatIndicator(b) => out.payload_format_utf8 = Some(b),
                Property::MessageExpiryInterval(v) => out.message_expiry_secs = Some(v),
                Property::ContentType(s) => out.content_type = Some(s.to_owned()),
                Property::ResponseTopic(s) => out.response_topic = Some(s.to_owned()),
                Property::CorrelationData(b) => {
                    out.correlation_data = Some(Bytes::copy_from_slice(b))
                }
                Property::UserProperty(k, v) => {
                    out.user_properties.push((k.to_owned(), v.to_owned()))
                }
                Property::SubscriptionIdentifier(id) => out.subscription_identifiers.push(id),
                _ => {}
            }
        }
        out
    }

    /// Appends these properties for encoding (without subscription ids).
    pub(crate) fn push_to<'a>(&'a self, out: &mut Vec<Property<'a>>) {
        if let Some(b) = self.payload_format_utf8 {
            out.push(Property::PayloadFormatIndicator(b));
        }
        if let Some(v) = self.message_expiry_secs {
            out.push(Property::MessageExpiryInterval(v));
        }
        if let Some(s) = &self.content_type {
            out.push(Property::ContentType(s));
        }
        if let Some(s) = &self.response_topic {
            out.push(Property::ResponseTopic(s));
        }
        if let Some(b) = &self.correlation_data {
            out.push(Property::CorrelationData(b));
        }
        for (k, v) in &self.user_properties {
            out.push(Property::UserProperty(k, v));
        }
    }
}

/// A message received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic (aliases already resolved).
    pub topic: String,
    /// The payload bytes.
    pub payload: Bytes,
    /// The QoS it was delivered with.
    pub qos: QoS,
    /// The RETAIN flag: set for retained messages sent on subscribe.
    pub retain: bool,
    /// The DUP flag.
    pub dup: bool,
    /// The packet identifier it arrived with (QoS 1 and 2), for display
    /// (mosquitto_sub's `%m`); 0 for QoS 0.
    pub packet_id: u16,
    /// MQTT 5 properties.
    pub properties: PublishProperties,
}

impl Message {
    pub(crate) fn from_publish(p: &Publish<'_>, topic: String, payload: Bytes) -> Message {
        Message {
            topic,
            payload,
            qos: p.qos_pid.qos(),
            retain: p.retain,
            dup: p.dup,
            packet_id: p.qos_pid.pid().map_or(0, |pid| pid.get()),
            properties: PublishProperties::from_codec(&p.properties),
        }
    }

    /// The payload as UTF-8 text, if it is.
    pub fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 properties.
    pub properties: PublishProperties,
}

impl OutgoingMessage {
    /// A message with no properties.
    pub fn new(
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Self {
        OutgoingMessage {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            properties: PublishProperties::default(),
        }
    }
}
