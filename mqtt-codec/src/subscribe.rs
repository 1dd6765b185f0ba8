//! SUBSCRIBE (section 3.8), SUBACK (3.9), UNSUBSCRIBE (3.10) and UNSUBACK
//! (3.11). Their lists are [`List`]s: lazy views when decoded.

use crate::error::{DecodeError, EncodeError};
use crate::header::PacketType;
use crate::list::{List, VARIANT_UNSUBACK, VARIANT_V3, VARIANT_V5};
use crate::properties::{with_length_prefix, Properties, PropertyContext};
use crate::reason::ReasonCode;
use crate::topic::{parse_shared, valid_topic_filter};
use crate::types::{Pid, ProtocolVersion, QoS};
use crate::wire::{binary_len, Reader, Writer};

/// What to do with retained messages when a subscription is made (5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// Send retained messages at subscribe time.
    #[default]
    SendOnSubscribe = 0,
    /// Send them only if the subscription did not exist.
    SendIfNew = 1,
    /// Do not send them.
    DoNotSend = 2,
}

/// The options byte of one SUBSCRIBE entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS of messages delivered on this subscription.
    pub qos: QoS,
    /// Do not deliver the client's own messages (5.0).
    pub no_local: bool,
    /// Keep the RETAIN flag of forwarded messages (5.0).
    pub retain_as_published: bool,
    /// Retained message handling (5.0).
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with only a QoS, as in 3.1.1.
    pub fn qos(qos: QoS) -> Self {
        SubscriptionOptions {
            qos,
            ..Default::default()
        }
    }

    fn from_byte(b: u8, v5: bool) -> Result<Self, DecodeError> {
        let reserved = if v5 { 0xc0 } else { 0xfc };
        if b & reserved != 0 {
            return Err(DecodeError::InvalidSubscriptionOptions);
        }
        let retain_handling = match (b >> 4) & 0b11 {
            0 => RetainHandling::SendOnSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            // Only reachable in 5.0: in 3.1.1 these are reserved bits.
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        Ok(SubscriptionOptions {
            qos: QoS::from_u8(b & 0b11)?,
            no_local: b & 0b100 != 0,
            retain_as_published: b & 0b1000 != 0,
            retain_handling,
        })
    }

    /// The options as their wire byte.
    pub fn to_byte(self) -> u8 {
        self.qos.as_u8()
            | (u8::from(self.no_local) << 2)
            | (u8::from(self.retain_as_published) << 3)
            | ((self.retain_handling as u8) << 4)
    }
}

/// One SUBSCRIBE entry: a topic filter and its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscribeFilter<'a> {
    /// The topic filter, possibly `$share/{group}/{filter}`.
    pub filter: &'a str,
    /// The subscription options.
    pub options: SubscriptionOptions,
}

impl<'a> SubscribeFilter<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, v5: bool) -> Result<Self, DecodeError> {
        let filter = r.string()?;
        let options = SubscriptionOptions::from_byte(r.u8()?, v5)?;
        let entry = SubscribeFilter { filter, options };
        entry.check()?;
        Ok(entry)
    }

    fn check(&self) -> Result<(), DecodeError> {
        if !valid_topic_filter(self.filter) {
            return Err(DecodeError::InvalidTopicFilter);
        }
        // [MQTT-3.8.3-4] No Local on a shared subscription is a Protocol Error.
        if self.options.no_local && parse_shared(self.filter).is_some() {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
        Ok(())
    }
}

/// A SUBSCRIBE packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribe<'a> {
    /// The packet identifier.
    pub pid: Pid,
    /// SUBSCRIBE properties (5.0 only): Subscription Identifier, User Property.
    pub properties: Properties<'a>,
    /// One or more filters with their options.
    pub filters: List<'a, SubscribeFilter<'a>>,
}

impl<'a> Subscribe<'a> {
    pub(crate) fn decode(body: &'a [u8], version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let pid = Pid::decode(r.u16()?)?;
        let v5 = version.is_v5();
        let properties = if v5 {
            Properties::decode(&mut r, PropertyContext::Subscribe)?
        } else {
            Properties::EMPTY
        };
        let filters = List::decode(r.rest(), if v5 { VARIANT_V5 } else { VARIANT_V3 })?;
        Ok(Subscribe {
            pid,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        let v5 = version.is_v5();
        let mut len = 2;
        let mut props = 0;
        if v5 {
            props = self.properties.body_len(PropertyContext::Subscribe)?;
            len += with_length_prefix(props)?;
        }
        if self.filters.is_empty() {
            return Err(DecodeError::NoTopicFilters.into());
        }
        for f in self.filters.iter() {
            f.check()?;
            if !v5 && f.options.to_byte() & 0xfc != 0 {
                return Err(EncodeError::NotInVersion);
            }
            // check() refused a NUL; only the length is left to check.
            len += binary_len(f.filter.as_bytes())? + 1;
        }
        Ok((len, props))
    }

    pub(crate) fn write(
        &self,
        w: &mut Writer<'_>,
        version: ProtocolVersion,
        props: usize,
    ) -> Result<(), EncodeError> {
        w.u16(self.pid.get())?;
        if version.is_v5() {
            self.properties.write(w, props)?;
        }
        for f in self.filters.iter() {
            w.string(f.filter)?;
            w.u8(f.options.to_byte())?;
        }
        Ok(())
    }
}

pub(crate) fn read_code<'a>(
    r: &mut Reader<'a>,
    kind: PacketType,
    v5: bool,
) -> Result<ReasonCode, DecodeError> {
    let b = r.u8()?;
    let code = ReasonCode::decode_for(b, kind)?;
    // 3.1.1 SUBACK return codes: 0x00, 0x01, 0x02 and 0x80.
    if !v5 && !matches!(b, 0x00..=0x02 | 0x80) {
        return Err(DecodeError::InvalidReasonCode(b));
    }
    Ok(code)
}

/// A SUBACK packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubAck<'a> {
    /// The SUBSCRIBE's identifier.
    pub pid: Pid,
    /// Properties (5.0 only).
    pub properties: Properties<'a>,
    /// One code per filter, in order: a granted QoS or a failure. To a 3.1.1
    /// client every failure is sent as 0x80.
    pub codes: List<'a, ReasonCode>,
}

impl<'a> SubAck<'a> {
    pub(crate) fn decode(body: &'a [u8], version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let pid = Pid::decode(r.u16()?)?;
        let v5 = version.is_v5();
        let properties = if v5 {
            Properties::decode(&mut r, PropertyContext::SubAck)?
        } else {
            Properties::EMPTY
        };
        let codes = List::decode(r.rest(), if v5 { VARIANT_V5 } else { VARIANT_V3 })?;
        Ok(SubAck {
            pid,
            properties,
            codes,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        let mut len = 2 + codes_len(self.codes, PacketType::SubAck)?;
        let mut props = 0;
        if version.is_v5() {
            props = self.properties.body_len(PropertyContext::SubAck)?;
            len += with_length_prefix(props)?;
        }
        Ok((len, props))
    }

    pub(crate) fn write(
        &self,
        w: &mut Writer<'_>,
        version: ProtocolVersion,
        props: usize,
    ) -> Result<(), EncodeError> {
        w.u16(self.pid.get())?;
        if version.is_v5() {
            self.properties.write(w, props)?;
        }
        for c in self.codes.iter() {
            let b = if !version.is_v5() && c.is_error() {
                0x80
            } else {
                c.as_u8()
            };
            w.u8(b)?;
        }
        Ok(())
    }
}

fn codes_len(codes: List<'_, ReasonCode>, kind: PacketType) -> Result<usize, EncodeError> {
    let mut n = 0;
    for c in codes.iter() {
        if !c.allowed_in(kind) {
            return Err(DecodeError::InvalidReasonCode(c.as_u8()).into());
        }
        n += 1;
    }
    if n == 0 {
        return Err(DecodeError::NoTopicFilters.into());
    }
    Ok(n)
}

pub(crate) fn read_filter<'a>(r: &mut Reader<'a>) -> Result<&'a str, DecodeError> {
    let filter = r.string()?;
    if !valid_topic_filter(filter) {
        return Err(DecodeError::InvalidTopicFilter);
    }
    Ok(filter)
}

/// An UNSUBSCRIBE packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsubscribe<'a> {
    /// The packet identifier.
    pub pid: Pid,
    /// Properties (5.0 only).
    pub properties: Properties<'a>,
    /// One or more topic filters.
    pub filters: List<'a, &'a str>,
}

impl<'a> Unsubscribe<'a> {
    pub(crate) fn decode(body: &'a [u8], version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let pid = Pid::decode(r.u16()?)?;
        let properties = if version.is_v5() {
            Properties::decode(&mut r, PropertyContext::Unsubscribe)?
        } else {
            Properties::EMPTY
        };
        let filters = List::decode(r.rest(), VARIANT_V3)?;
        Ok(Unsubscribe {
            pid,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        let mut len = 2;
        let mut props = 0;
        if version.is_v5() {
            props = self.properties.body_len(PropertyContext::Unsubscribe)?;
            len += with_length_prefix(props)?;
        }
        if self.filters.is_empty() {
            return Err(DecodeError::NoTopicFilters.into());
        }
        for f in self.filters.iter() {
            if !valid_topic_filter(f) {
                return Err(DecodeError::InvalidTopicFilter.into());
            }
            len += binary_len(f.as_bytes())?;
        }
        Ok((len, props))
    }

    pub(crate) fn write(
        &self,
        w: &mut Writer<'_>,
        version: ProtocolVersion,
        props: usize,
    ) -> Result<(), EncodeError> {
        w.u16(self.pid.get())?;
        if version.is_v5() {
            self.properties.write(w, props)?;
        }
        self.filters.iter().try_for_each(|f| w.string(f))
    }
}

/// An UNSUBACK packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsubAck<'a> {
    /// The UNSUBSCRIBE's identifier.
    pub pid: Pid,
    /// Properties (5.0 only).
    pub properties: Properties<'a>,
    /// One code per filter (5.0 only: 3.1.1 UNSUBACK has no payload, so the
    /// codes are not sent and decode as an empty list).
    pub codes: List<'a, ReasonCode>,
}

impl<'a> UnsubAck<'a> {
    pub(crate) fn decode(body: &'a [u8], version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let pid = Pid::decode(r.u16()?)?;
        if !version.is_v5() {
            r.finish()?;
            return Ok(UnsubAck {
                pid,
                properties: Properties::EMPTY,
                codes: List::from_slice(&[]),
            });
        }
        let properties = Properties::decode(&mut r, PropertyContext::UnsubAck)?;
        let codes = List::decode(r.rest(), VARIANT_UNSUBACK)?;
        Ok(UnsubAck {
            pid,
            properties,
            codes,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        if !version.is_v5() {
            return Ok((2, 0));
        }
        let props = self.properties.body_len(PropertyContext::UnsubAck)?;
        let len = 2 + with_length_prefix(props)? + codes_len(self.codes, PacketType::UnsubAck)?;
        Ok((len, props))
    }

    pub(crate) fn write(
        &self,
        w: &mut Writer<'_>,
        version: ProtocolVersion,
        props: usize,
    ) -> Result<(), EncodeError> {
        w.u16(self.pid.get())?;
        if version.is_v5() {
            self.properties.write(w, props)?;
            self.codes.iter().try_for_each(|c| w.u8(c.as_u8()))?;
        }
        Ok(())
    }
}
