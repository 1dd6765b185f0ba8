//! The broker's owned application message, shared by every subscriber it is
//! delivered to, and its conversion from and to the codec's borrowed PUBLISH.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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

/// Where a message came from wants to know what became of it: a message a
/// cluster's shared subscription handed to this node is acknowledged there
/// once its subscriber is done with it, or handed back for another member.
pub trait Settle: Send + Sync + std::fmt::Debug {
    /// `done`: acknowledged by the subscriber, expired or dropped (each
    /// counted where it happens); otherwise not delivered. Only the first
    /// call counts.
    fn settle(&self, done: bool);
}

/// An application message inside the broker.
#[derive(Debug)]
pub struct Message {
    /// The topic name.
    pub topic: Arc<str>,
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
    /// Its sequence number in the cluster's message stream, when it came
    /// from there (0 otherwise): a session's queue in the cluster records
    /// it, so a replay after a node's loss adds each message once.
    pub cluster_seq: u64,
    /// Told when the one session it was queued for is done with it (see
    /// [`Settle`]); `None` for almost every message.
    pub settle: Option<Arc<dyn Settle>>,
    /// The topic and properties of its PUBLISH, encoded once when it fans
    /// out to several subscribers (see `fanout`).
    shared_head: OnceLock<Box<[u8]>>,
}

impl Message {
    /// A message from the codec's PUBLISH. `payload` is the same bytes as
    /// `publish.payload`, already owned (normally a slice of the read buffer).
    pub fn from_publish(
        publish: &Publish<'_>,
        topic: Arc<str>,
        payload: Bytes,
        publisher: Option<Arc<str>>,
        received: Instant,
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
            topic,
            payload,
            qos: publish.qos_pid.qos(),
            retain: publish.retain,
            props: (!props.is_empty()).then(|| Box::new(props)),
            received,
            publisher,
            cluster_seq: 0,
            settle: None,
            shared_head: OnceLock::new(),
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
            received: crate::clock::now(),
            publisher: None,
            cluster_seq: 0,
            settle: None,
            shared_head: OnceLock::new(),
        }
    }

    /// Encodes the part of its PUBLISH every subscriber shares (see
    /// `fanout`), once: called when it is routed to more than one session.
    pub(crate) fn share_head(&self) {
        if self.shared_head.get().is_none() {
            if let Some(head) = crate::fanout::encode_head(self) {
                // Another thread may have set it meanwhile: same bytes.
                let _ = self.shared_head.set(head);
            }
        }
    }

    /// The shared head, if [`Message::share_head`] made one.
    pub(crate) fn shared_head(&self) -> Option<&[u8]> {
        self.shared_head.get().map(|h| &h[..])
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

    /// When the broker received it, as Unix milliseconds.
    pub fn received_unix_ms(&self) -> u64 {
        crate::store::unix_ms().saturating_sub(self.received.elapsed().as_millis() as u64)
    }

    /// Bytes this message counts against a queue limit.
    pub fn size(&self) -> usize {
        self.payload.len() + self.topic.len()
    }

    /// Appends this message's properties for a subscriber: the remaining
    /// expiry interval rather than the original [MQTT-5: 3.3.2-6].
    pub fn push_properties<'a>(&'a self, now: Instant, out: &mut Vec<Property<'a>>) {
        self.push_props(self.remaining_expiry(now), out);
    }

    /// The properties with `expiry` as the Message Expiry Interval.
    fn push_props<'a>(&'a self, expiry: Option<u32>, out: &mut Vec<Property<'a>>) {
        let Some(p) = self.props.as_deref() else {
            return;
        };
        if let Some(b) = p.payload_format_utf8 {
            out.push(Property::PayloadFormatIndicator(b));
        }
        if let Some(v) = expiry {
            out.push(Property::MessageExpiryInterval(v));
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

/// The topic of a message stored by [`Message::encode_for_store`].
pub fn stored_topic(publish: &[u8]) -> Option<String> {
    let opts = mqtt_codec::DecodeOptions::new(mqtt_codec::ProtocolVersion::V5);
    match mqtt_codec::decode(publish, &opts) {
        Ok(mqtt_codec::Status::Complete((mqtt_codec::Packet::Publish(p), _))) => {
            Some(p.topic.to_string())
        }
        _ => None,
    }
}

impl Message {
    /// The message as an MQTT 5 PUBLISH with its own QoS (the packet id is a
    /// placeholder) and the original expiry interval: the format the store
    /// keeps. The codec already reads and writes every property, so no second
    /// format exists.
    pub fn encode_for_store(&self) -> Vec<u8> {
        let mut props = Vec::new();
        self.push_props(
            self.props.as_ref().and_then(|p| p.message_expiry),
            &mut props,
        );
        let publish = Publish {
            dup: false,
            qos_pid: mqtt_codec::QosPid::from_qos(self.qos, mqtt_codec::Pid::default()),
            retain: self.retain,
            topic: &self.topic,
            properties: mqtt_codec::Properties::from_slice(&props),
            payload: &self.payload,
        };
        let packet = mqtt_codec::Packet::Publish(publish);
        let mut buf = vec![
            0u8;
            packet
                .encoded_len(mqtt_codec::ProtocolVersion::V5)
                .unwrap_or(0)
        ];
        match packet.encode(mqtt_codec::ProtocolVersion::V5, &mut buf) {
            Ok(n) => buf.truncate(n),
            Err(_) => buf.clear(),
        }
        buf
    }

    /// A message read back from the store. `received_ms` (Unix time) dates
    /// it so that expiry carries on across restarts.
    pub fn from_stored(bytes: &[u8], received_ms: u64) -> Option<Message> {
        Message::from_stored_bytes(Bytes::copy_from_slice(bytes), received_ms)
    }

    /// [`Message::from_stored`] for bytes already owned (a message from
    /// another node of a cluster): the payload is a slice of `frame`.
    pub fn from_stored_bytes(frame: Bytes, received_ms: u64) -> Option<Message> {
        let opts = mqtt_codec::DecodeOptions::new(mqtt_codec::ProtocolVersion::V5);
        let Ok(mqtt_codec::Status::Complete((mqtt_codec::Packet::Publish(p), _))) =
            mqtt_codec::decode(&frame, &opts)
        else {
            return None;
        };
        let payload = frame.slice_ref(p.payload);
        let age = Duration::from_millis(crate::store::unix_ms().saturating_sub(received_ms));
        let now = crate::clock::now();
        let received = now.checked_sub(age).unwrap_or(now);
        Some(Message::from_publish(
            &p,
            p.topic.into(),
            payload,
            None,
            received,
        ))
    }
}
