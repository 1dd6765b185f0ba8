//! SUBSCRIBE (section 3.8), SUBACK (3.9), UNSUBSCRIBE (3.10) and UNSUBACK
//! (3.11). Their lists are [`List`]s: lazy views when decoded.

use crate::error::{DecodeError, EncodeError};
use crate::header::PacketType;
use crate::list::{List, Repr, VARIANT_UNSUBACK, VARIANT_V3, VARIANT_V5};
use crate::properties::{with_length_prefix, Properties, PropertyContext};
use crate::reason::ReasonCode;
use crate::topic::{filter_ok, parse_shared, valid_topic_filter};
use crate::types::{Pid, ProtocolVersion, QoS};
use crate::wire::Reader;
use crate::writer::{discard, Writer};

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

    /// Bytes of this entry on the wire, after the checks a decoder would make
    /// and, before 5.0, that the options fit the 3.1.1 byte.
    #[inline(always)]
    fn checked_len(&self, v5: bool) -> Result<usize, EncodeError> {
        self.check()?;
        self.options_byte(v5)?;
        // check() refused a NUL and a filter over 65,535 bytes.
        Ok(2 + self.filter.len() + 1)
    }

    /// The options byte, if `version` has room for the options.
    #[inline(always)]
    fn options_byte(&self, v5: bool) -> Result<u8, EncodeError> {
        let o = self.options;
        if v5 {
            return Ok(o.to_byte());
        }
        // 3.1.1 has room for the QoS alone: the other options must be off
        // (tested as they are stored, without assembling the 5.0 byte).
        if o.no_local | o.retain_as_published | (o.retain_handling != RetainHandling::default()) {
            return Err(EncodeError::NotInVersion);
        }
        Ok(o.qos.as_u8())
    }

    /// Writes the entry, checking the filter as it is copied: the checks of
    /// `checked_len`, the options (which need no scan) first.
    #[inline(always)]
    fn write(&self, w: &mut Writer<'_>, v5: bool) -> Result<(), EncodeError> {
        let byte = self.options_byte(v5)?;
        // The options byte goes in with the filter: one reservation for the
        // entry.
        w.topic_filter(self.filter, [byte])?;
        if self.options.no_local && parse_shared(self.filter).is_some() {
            return Err(DecodeError::NoLocalOnSharedSubscription.into());
        }
        Ok(())
    }

    #[inline(always)]
    fn check(&self) -> Result<(), DecodeError> {
        if !filter_ok(self.filter) {
            return Err(DecodeError::InvalidTopicFilter);
        }
        // [MQTT-5: 3.8.3-4] No Local on a shared subscription is a Protocol Error.
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

    /// A caller's filters are checked only when `SCAN`; `encode` checks each
    /// as it copies it.
    #[inline]
    pub(crate) fn body_len<const SCAN: bool>(
        &self,
        version: ProtocolVersion,
    ) -> Result<(usize, usize), EncodeError> {
        let v5 = version.is_v5();
        let mut len = 2;
        let mut props = 0;
        if v5 {
            props = self
                .properties
                .body_len::<SCAN>(PropertyContext::Subscribe)?;
            len += with_length_prefix(props)?;
        }
        match self.filters.repr() {
            Repr::Items([]) => return Err(DecodeError::NoTopicFilters.into()),
            Repr::Items(filters) => {
                for f in filters {
                    len += if SCAN {
                        f.checked_len(v5)?
                    } else {
                        2 + f.filter.len() + 1
                    };
                }
            }
            // Decoded filters were checked then; only 5.0 options sent to a
            // 3.1.1 peer can be new errors.
            Repr::Encoded(bytes, variant) => {
                if !v5 && variant != VARIANT_V3 {
                    self.filters
                        .try_for_each(|f| f.options_byte(false).map(drop))?;
                }
                len += bytes.len();
            }
        }
        Ok((len, props))
    }

    #[inline]
    pub(crate) fn encode(
        &self,
        version: ProtocolVersion,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        if version.is_v5() {
            self.encode_in::<true>(buf)
        } else {
            self.encode_in::<false>(buf)
        }
    }

    /// One encoder per protocol family: the 3.1.1 one carries no property
    /// code to keep registers for.
    #[inline(never)]
    fn encode_in<const V5: bool>(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let version = if V5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V3_1_1
        };
        let (body, props) = self.body_len::<false>(version)?;
        let w = Writer::packet(&mut *buf, PacketType::Subscribe.first_byte(), body)?;
        match self.write(w, version, props) {
            Ok(w) => w.finish(body),
            Err(e) => Err(discard(buf, body, e)),
        }
    }

    #[inline(always)]
    fn write<'b>(
        &self,
        mut w: Writer<'b>,
        version: ProtocolVersion,
        props: usize,
    ) -> Result<Writer<'b>, EncodeError> {
        let v5 = version.is_v5();
        w.u16(self.pid.get());
        if v5 {
            self.properties.write(&mut w, props)?;
        }
        match self.filters.repr() {
            Repr::Items(filters) => {
                for f in filters {
                    f.write(&mut w, v5)?;
                }
            }
            // 3.1.1 and 5.0 entries have the same layout, and body_len saw
            // that the options fit.
            Repr::Encoded(bytes, _) => w.bytes(bytes),
        }
        Ok(w)
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

    /// Decoded codes are copied as they are when read with SUBACK's 3.1.1
    /// rules (which 5.0 accepts) or its 5.0 rules for a 5.0 peer; codes read
    /// from an UNSUBACK are checked again.
    #[inline]
    fn encoded_codes(&self, v5: bool) -> Option<&'a [u8]> {
        match self.codes.repr() {
            Repr::Encoded(bytes, VARIANT_V3) => Some(bytes),
            Repr::Encoded(bytes, VARIANT_V5) if v5 => Some(bytes),
            _ => None,
        }
    }

    pub(crate) fn body_len<const SCAN: bool>(
        &self,
        version: ProtocolVersion,
    ) -> Result<(usize, usize), EncodeError> {
        let v5 = version.is_v5();
        let codes = match self.encoded_codes(v5) {
            Some(bytes) => bytes.len(),
            None => codes_len(self.codes, PacketType::SubAck)?,
        };
        let mut len = 2 + codes;
        let mut props = 0;
        if v5 {
            props = self.properties.body_len::<SCAN>(PropertyContext::SubAck)?;
            len += with_length_prefix(props)?;
        }
        Ok((len, props))
    }

    pub(crate) fn encode(
        &self,
        version: ProtocolVersion,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let (body, props) = self.body_len::<false>(version)?;
        let w = Writer::packet(&mut *buf, PacketType::SubAck.first_byte(), body)?;
        match self.write(w, version, props) {
            Ok(w) => w.finish(body),
            Err(e) => Err(discard(buf, body, e)),
        }
    }

    fn write<'b>(
        &self,
        mut w: Writer<'b>,
        version: ProtocolVersion,
        props: usize,
    ) -> Result<Writer<'b>, EncodeError> {
        let v5 = version.is_v5();
        w.u16(self.pid.get());
        if v5 {
            self.properties.write(&mut w, props)?;
        }
        match self.encoded_codes(v5) {
            Some(bytes) => w.bytes(bytes),
            None => self.codes.for_each(|c| {
                // A 3.1.1 SUBACK has one failure code.
                w.u8(if !v5 && c.is_error() { 0x80 } else { c.as_u8() });
            }),
        }
        Ok(w)
    }
}

fn codes_len(codes: List<'_, ReasonCode>, kind: PacketType) -> Result<usize, EncodeError> {
    let mut n = 0;
    codes.try_for_each(|c| {
        if !c.allowed_in(kind) {
            return Err(DecodeError::InvalidReasonCode(c.as_u8()));
        }
        n += 1;
        Ok(())
    })?;
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

    /// A caller's filters are checked only when `SCAN`; `encode` checks each
    /// as it copies it.
    #[inline]
    pub(crate) fn body_len<const SCAN: bool>(
        &self,
        version: ProtocolVersion,
    ) -> Result<(usize, usize), EncodeError> {
        let mut len = 2;
        let mut props = 0;
        if version.is_v5() {
            props = self
                .properties
                .body_len::<SCAN>(PropertyContext::Unsubscribe)?;
            len += with_length_prefix(props)?;
        }
        match self.filters.repr() {
            Repr::Items([]) => return Err(DecodeError::NoTopicFilters.into()),
            Repr::Items(filters) => {
                for f in filters {
                    if SCAN && !filter_ok(f) {
                        return Err(DecodeError::InvalidTopicFilter.into());
                    }
                    len += 2 + f.len();
                }
            }
            // Decoded filters were checked with the same rules in every
            // version.
            Repr::Encoded(bytes, _) => len += bytes.len(),
        }
        Ok((len, props))
    }

    #[inline]
    pub(crate) fn encode(
        &self,
        version: ProtocolVersion,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        if version.is_v5() {
            self.encode_in::<true>(buf)
        } else {
            self.encode_in::<false>(buf)
        }
    }

    /// One encoder per protocol family: the 3.1.1 one carries no property
    /// code to keep registers for.
    #[inline(never)]
    fn encode_in<const V5: bool>(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let version = if V5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V3_1_1
        };
        let (body, props) = self.body_len::<false>(version)?;
        let w = Writer::packet(&mut *buf, PacketType::Unsubscribe.first_byte(), body)?;
        match self.write(w, version, props) {
            Ok(w) => w.finish(body),
            Err(e) => Err(discard(buf, body, e)),
        }
    }

    #[inline(always)]
    fn write<'b>(
        &self,
        mut w: Writer<'b>,
        version: ProtocolVersion,
        props: usize,
    ) -> Result<Writer<'b>, EncodeError> {
        w.u16(self.pid.get());
        if version.is_v5() {
            self.properties.write(&mut w, props)?;
        }
        match self.filters.repr() {
            Repr::Items(filters) => {
                for f in filters {
                    w.topic_filter(f, [])?;
                }
            }
            Repr::Encoded(bytes, _) => w.bytes(bytes),
        }
        Ok(w)
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

    /// Only called for 5.0: a 3.1.1 UNSUBACK is the identifier alone.
    pub(crate) fn body_len_v5<const SCAN: bool>(&self) -> Result<(usize, usize), EncodeError> {
        let props = self
            .properties
            .body_len::<SCAN>(PropertyContext::UnsubAck)?;
        // Codes decoded from an UNSUBACK were checked with its (5.0) rules;
        // codes taken from a SUBACK are checked again.
        let codes = match self.codes.repr() {
            Repr::Encoded(bytes, VARIANT_UNSUBACK) => bytes.len(),
            _ => codes_len(self.codes, PacketType::UnsubAck)?,
        };
        Ok((2 + with_length_prefix(props)? + codes, props))
    }

    /// Only called for 5.0: a 3.1.1 UNSUBACK is the identifier alone.
    pub(crate) fn encode_v5(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let (body, props) = self.body_len_v5::<false>()?;
        let w = Writer::packet(&mut *buf, PacketType::UnsubAck.first_byte(), body)?;
        match self.write_v5(w, props) {
            Ok(w) => w.finish(body),
            Err(e) => Err(discard(buf, body, e)),
        }
    }

    fn write_v5<'b>(&self, mut w: Writer<'b>, props: usize) -> Result<Writer<'b>, EncodeError> {
        w.u16(self.pid.get());
        self.properties.write(&mut w, props)?;
        match self.codes.repr() {
            Repr::Encoded(bytes, VARIANT_UNSUBACK) => w.bytes(bytes),
            _ => self.codes.for_each(|c| w.u8(c.as_u8())),
        }
        Ok(w)
    }
}
