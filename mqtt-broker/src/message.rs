//! The broker's owned application message, shared by every subscriber it is
//! delivered to, and its conversion from and to the codec's borrowed PUBLISH.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use mqtt_codec::{Property, Publish, QoS};

/// The MQTT 5 properties a message carries from publisher to subscriber.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProps {
    /// Payload Format Indicator: `Some(true)` for UTF-8 text.
    pub payload_format_utf8: Option<bool>,
    /// Message Expiry Interval as sent by the publisher, in seconds.
    pub message_expiry: Option<u32>,
    /// Content Type.
    pub content_type: Option<String>,
    /// Response Topic.
    pub response_topic: Option<String>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User Properties in order.
    pub user_properties: Vec<(String, String)>,
}

impl MessageProps {
    fn is_empty(&self) -> bool {
        *self == MessageProps::default()
    }
}

/// An application message inside the broker.
#[derive(Debug)]
pub struct Message {
    /// The topic name.
    pub topic: Box<str>,
    /// The payload, cut once out of the publisher's read buffer.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// MQTT 5 properties; `None` when there are none (the common case).
    pub props: Option<Box<MessageProps>>,
    /// When it arrived, for the Message Expiry Interval.
    pub received: Instant,
    /// The publishing client, for No Local; `None` for wills and `$SYS`.
    pub publisher: Option<Arc<str>>,
}

impl Message {
    /// A message from the codec's PUBLISH. `payload` is the same bytes as
    /// `publish.payload`, already owned (normally a slice of the read buffer).
    pub fn from_publish(
        publish: &Publish<'_>,
        topic: &str,
        payload: Bytes,
        publisher: Option<Arc<str>>,
    ) -> Message {
        let mut props = MessageProps::default();
        for p in publish.properties.iter() {
            match p {
                Property::PayloadFormatIndicator(b) => props.payload_format_utf8 = Some(b),
                Property::MessageExpiryInterval(v) => props.message_expiry = Some(v),
                Property::ContentType(s) => props.content_type = Some(s.to_owned()),
                Property::ResponseTopic(s) => props.response_topic = Some(s.to_owned()),
                Property::CorrelationData(b) => {
                    props.correlation_data = Some(Bytes::copy_from_slice(b))
                }
                Property::UserProperty(k, v) => {
                    props.user_properties.push((k.to_owned(), v.to_owned()))
                }
                // Topic Alias is per connection; Subscription Identifiers are
                // the broker's to set.
                _ => {}
            }
        }
        Message {
            topic: topic.into(),
            payload,
            qos: publish.qos_pid.qos(),
            retain: publish.retain,
            props: (!props.is_empty()).then(|| Box::new(props)),
            received: Instant::now(),
            publisher,
        }
    }

    /// A message made by the broker itself (`$SYS`).
    pub fn new(topic: &str, payload: Bytes, qos: QoS, retain: bool) -> Message {
        Message {
            topic: topic.into(),
            payload,
            qos,
            retain,
            props: None,
            received: Instant::now(),
            publisher: None,
        }
    }

    /// Seconds left of the Message Expiry Interval at `now`: `None` when the
    /// message does not expire, `Some(0)` once it has expired.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let interval = self.props.as_ref()?.message_expiry?;
        let elapsed = now.saturating_duration_since(self.received).as_secs();
        Some(u64::from(interval).saturating_sub(elapsed) as u32)
    }

    /// True once the Message Expiry Interval has run out.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.remaining_expiry(now) == Some(0)
    }

    /// Bytes this message counts against a queue limit.
    pub fn size(&self) -> usize {
        self.payload.len() + self.topic.len()
    }

    /// Appends this message's properties for a subscriber: the remaining
    /// expiry interval rather than the original [MQTT-3.3.2-6].
    pub fn push_properties<'a>(&'a self, now: Instant, out: &mut Vec<Property<'a>>) {
        let Some(p) = self.props.as_deref() else {
            return;
        };
        if let Some(b) = p.payload_format_utf8 {
            out.push(Property::PayloadFormatIndicator(b));
        }
        if let Some(left) = self.remaining_expiry(now) {
            out.push(Property::MessageExpiryInterval(left));
        }
        if let Some(s) = &p.content_type {
            out.push(Property::ContentType(s));
        }
        if let Some(s) = &p.response_topic {
            out.push(Property::ResponseTopic(s));
        }
        if let Some(b) = &p.correlation_data {
            out.push(Property::CorrelationData(b));
        }
        for (k, v) in &p.user_properties {
            out.push(Property::UserProperty(k, v));
        }
    }
}
