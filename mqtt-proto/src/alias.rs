//! Topic aliases (MQTT 5.0 section 3.3.2.3.4), per connection and per
//! direction: each side announces its Topic Alias Maximum in CONNECT or
//! CONNACK, and the other side may use aliases 1 to that maximum when it
//! sends [MQTT-5: 3.3.2-8..12]. Aliases do not outlive the connection
//! [MQTT-5: 3.3.2-7].

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use mqtt_codec::{Property, ReasonCode};

/// Why an incoming PUBLISH's topic alias is refused (the connection closes
/// with the reason code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasError {
    /// 0, or above the maximum this side announced (none when it announced
    /// 0): 0x94 Topic Alias invalid [MQTT-5: 3.3.2-9, 3.3.2-10].
    OutOfRange(u16),
    /// An empty topic with an alias that was never set on this connection:
    /// 0x82 Protocol Error (MQTT 5.0 section 3.3.2.3.4).
    Unknown(u16),
    /// An empty topic and no alias: 0x82 Protocol Error [MQTT-5: 3.3.2-1
    /// with 3.3.2.3.4].
    NoTopic,
}

impl AliasError {
    /// The DISCONNECT reason code.
    pub fn reason_code(self) -> ReasonCode {
        match self {
            AliasError::OutOfRange(_) => ReasonCode::TopicAliasInvalid,
            AliasError::Unknown(_) | AliasError::NoTopic => ReasonCode::ProtocolError,
        }
    }

    /// Words for a log line or a Reason String.
    pub fn as_str(self) -> &'static str {
        match self {
            AliasError::OutOfRange(_) => "topic alias above the maximum",
            AliasError::Unknown(_) => "unknown topic alias",
            AliasError::NoTopic => "empty topic without a topic alias",
        }
    }
}

/// Aliases the peer sets on what it sends us.
#[derive(Debug, Clone, Default)]
pub struct InboundAliases {
    max: u16,
    topics: BTreeMap<u16, Arc<str>>,
}

impl InboundAliases {
    /// With the Topic Alias Maximum this side announced.
    pub fn new(max: u16) -> Self {
        InboundAliases {
            max,
            topics: BTreeMap::new(),
        }
    }

    /// The maximum announced.
    pub fn max(&self) -> u16 {
        self.max
    }

    /// The topic of a PUBLISH with `topic` and Topic Alias `alias`:
    /// `Ok(None)` when it carries no alias (the topic is its own), else
    /// the topic the alias stands for, set by this PUBLISH (a topic and an
    /// alias) or earlier (an empty topic and an alias).
    pub fn resolve(
        &mut self,
        topic: &str,
        alias: Option<u16>,
    ) -> Result<Option<Arc<str>>, AliasError> {
        let Some(a) = alias else {
            return if topic.is_empty() {
                Err(AliasError::NoTopic)
            } else {
                Ok(None)
            };
        };
        Self::check(self.max, a)?;
        if topic.is_empty() {
            return match self.topics.get(&a) {
                Some(t) => Ok(Some(t.clone())),
                None => Err(AliasError::Unknown(a)),
            };
        }
        let t: Arc<str> = topic.into();
        self.topics.insert(a, t.clone());
        Ok(Some(t))
    }

    /// Whether `alias` is within `max` (for a caller that has not made
    /// the table yet).
    pub fn check(max: u16, alias: u16) -> Result<(), AliasError> {
        if alias == 0 || alias > max {
            Err(AliasError::OutOfRange(alias))
        } else {
            Ok(())
        }
    }
}

/// What to put in an outgoing PUBLISH, from [`OutboundAliases::choose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutAlias {
    /// The topic, no alias (the peer takes none, or all are taken).
    None,
    /// An empty topic and this alias: the peer knows it.
    Existing(u16),
    /// The topic and this new alias; [`OutboundAliases::confirm`] it once
    /// the PUBLISH is actually sent (it may turn out too large).
    New(u16),
}

/// Aliases this side sets on what it sends, within the peer's maximum.
/// Aliases are given first come, first served and kept for the
/// connection: a publisher's topics repeat, and replacing one would cost
/// a full topic to each side.
#[derive(Debug, Clone, Default)]
pub struct OutboundAliases {
    max: u16,
    aliases: BTreeMap<Arc<str>, u16>,
}

impl OutboundAliases {
    /// With the peer's Topic Alias Maximum.
    pub fn new(max: u16) -> Self {
        OutboundAliases {
            max,
            aliases: BTreeMap::new(),
        }
    }

    /// The alias to send `topic` with; never above the peer's maximum
    /// [MQTT-5: 3.3.2-8].
    pub fn choose(&self, topic: &str) -> OutAlias {
        if self.max == 0 {
            return OutAlias::None;
        }
        match self.aliases.get(topic) {
            Some(&a) => OutAlias::Existing(a),
            None if self.aliases.len() < usize::from(self.max) => {
                OutAlias::New(self.aliases.len() as u16 + 1)
            }
            None => OutAlias::None,
        }
    }

    /// Chooses the alias for `topic` and applies it to a PUBLISH being
    /// built (what the broker and the client both do): pushes the Topic
    /// Alias property onto `props`, and returns the topic name to send
    /// (empty when the peer knows the alias) with the new alias to
    /// [`confirm`](Self::confirm) once the PUBLISH is actually sent.
    pub fn apply<'t>(
        &self,
        topic: &'t str,
        props: &mut Vec<Property<'_>>,
    ) -> (&'t str, Option<u16>) {
        match self.choose(topic) {
            OutAlias::Existing(a) => {
                props.push(Property::TopicAlias(a));
                ("", None)
            }
            OutAlias::New(a) => {
                props.push(Property::TopicAlias(a));
                (topic, Some(a))
            }
            OutAlias::None => (topic, None),
        }
    }

    /// Records an alias chosen as [`OutAlias::New`] once its PUBLISH went out.
    pub fn confirm(&mut self, topic: Arc<str>, alias: u16) {
        self.aliases.insert(topic, alias);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_without_alias_keeps_its_topic() {
        let mut a = InboundAliases::new(0);
        assert_eq!(a.resolve("t", None), Ok(None));
    }

    #[test]
    fn alias_set_then_used_with_an_empty_topic() {
        // MQTT 5.0 section 3.3.2.3.4.
        let mut a = InboundAliases::new(5);
        assert_eq!(a.resolve("x/y", Some(2)).unwrap().as_deref(), Some("x/y"));
        assert_eq!(a.resolve("", Some(2)).unwrap().as_deref(), Some("x/y"));
        // Set again to another topic.
        assert_eq!(a.resolve("z", Some(2)).unwrap().as_deref(), Some("z"));
        assert_eq!(a.resolve("", Some(2)).unwrap().as_deref(), Some("z"));
    }

    #[test]
    fn alias_zero_or_above_the_maximum_is_invalid() {
        // [MQTT-5: 3.3.2-9, 3.3.2-10]
        let mut a = InboundAliases::new(3);
        assert_eq!(a.resolve("t", Some(0)), Err(AliasError::OutOfRange(0)));
        assert_eq!(a.resolve("t", Some(4)), Err(AliasError::OutOfRange(4)));
        assert_eq!(
            AliasError::OutOfRange(4).reason_code(),
            ReasonCode::TopicAliasInvalid
        );
        let mut none = InboundAliases::new(0);
        assert_eq!(none.resolve("t", Some(1)), Err(AliasError::OutOfRange(1)));
    }

    #[test]
    fn unknown_alias_with_empty_topic_is_a_protocol_error() {
        let mut a = InboundAliases::new(3);
        assert_eq!(a.resolve("", Some(1)), Err(AliasError::Unknown(1)));
        assert_eq!(
            AliasError::Unknown(1).reason_code(),
            ReasonCode::ProtocolError
        );
    }

    #[test]
    fn empty_topic_without_alias_is_a_protocol_error() {
        let mut a = InboundAliases::new(3);
        assert_eq!(a.resolve("", None), Err(AliasError::NoTopic));
    }

    #[test]
    fn outbound_aliases_need_a_maximum() {
        let o = OutboundAliases::new(0);
        assert_eq!(o.choose("t"), OutAlias::None);
    }

    #[test]
    fn outbound_alias_is_new_until_confirmed_then_existing() {
        let mut o = OutboundAliases::new(2);
        assert_eq!(o.choose("a"), OutAlias::New(1));
        // Not sent (e.g. too large): still new.
        assert_eq!(o.choose("a"), OutAlias::New(1));
        o.confirm("a".into(), 1);
        assert_eq!(o.choose("a"), OutAlias::Existing(1));
        assert_eq!(o.choose("b"), OutAlias::New(2));
    }

    #[test]
    fn apply_sends_a_new_alias_with_its_topic_and_a_known_one_without() {
        // MQTT 5.0 section 3.3.2.3.4: a new alias goes with the topic name;
        // once the peer has it, the topic name is empty.
        let mut o = OutboundAliases::new(1);
        let mut props = Vec::new();
        assert_eq!(o.apply("a", &mut props), ("a", Some(1)));
        assert_eq!(props, [Property::TopicAlias(1)]);
        o.confirm("a".into(), 1);
        props.clear();
        assert_eq!(o.apply("a", &mut props), ("", None));
        assert_eq!(props, [Property::TopicAlias(1)]);
        // Past the peer's maximum: the topic, and no property at all.
        props.clear();
        assert_eq!(o.apply("b", &mut props), ("b", None));
        assert!(props.is_empty());
    }

    #[test]
    fn outbound_aliases_stop_at_the_peers_maximum() {
        // [MQTT-5: 3.3.2-8] never above the receiver's Topic Alias Maximum.
        let mut o = OutboundAliases::new(1);
        o.confirm("a".into(), 1);
        assert_eq!(o.choose("b"), OutAlias::None);
        assert_eq!(o.choose("a"), OutAlias::Existing(1));
    }
}
