//! MQTT 5 properties (section 2.2.2): the 27 identifiers, their types, the
//! packets each may appear in, and a property list that is either a view over
//! already-validated wire bytes (when decoded) or a caller's slice (when
//! encoding). Both iterate as [`Property`] values, so nothing is copied or
//! allocated either way.

use core::fmt;

use crate::error::{DecodeError, EncodeError};
use crate::types::QoS;
use crate::wire::{varint_len, Reader, MAX_VARINT};
use crate::writer::{binary_len, string_len, Writer};

macro_rules! property_ids {
    ($($name:ident = $value:literal, $contexts:expr;)*) => {
        /// A property identifier.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        #[allow(missing_docs)]
        pub enum PropertyId {
            $($name = $value,)*
        }

        impl PropertyId {
            /// The identifier for a byte, if MQTT 5 defines it.
            pub fn from_u8(v: u8) -> Option<PropertyId> {
                match v {
                    $($value => Some(PropertyId::$name),)*
                    _ => None,
                }
            }

            /// Every identifier, in numeric order.
            pub const ALL: &'static [PropertyId] = &[$(PropertyId::$name,)*];

            const fn contexts(self) -> u16 {
                match self {
                    $(PropertyId::$name => $contexts,)*
                }
            }
        }
    };
}

/// Where a property list sits; each property may appear in some of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    /// CONNECT.
    Connect,
    /// CONNACK.
    ConnAck,
    /// PUBLISH.
    Publish,
    /// The will properties of CONNECT.
    Will,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    PubResp,
    /// SUBSCRIBE.
    Subscribe,
    /// SUBACK.
    SubAck,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// UNSUBACK.
    UnsubAck,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

impl PropertyContext {
    const fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// The identifiers allowed here, one bit per identifier value.
    #[inline]
    fn allowed_ids(self) -> u64 {
        ALLOWED_IDS[self as usize]
    }

    /// The identifiers that may appear more than once here.
    #[inline]
    fn repeatable_ids(self) -> u64 {
        let sub_id = if matches!(self, PropertyContext::Publish) {
            1 << PropertyId::SubscriptionIdentifier as u8
        } else {
            0
        };
        1 << PropertyId::UserProperty as u8 | sub_id
    }
}

/// Every context's allowed identifiers as a mask, so that placement is
/// checked on encode with a shift and an AND per property.
const ALLOWED_IDS: [u64; 11] = {
    let mut masks = [0; 11];
    let mut c = 0;
    while c < masks.len() {
        let mut i = 0;
        while i < PropertyId::ALL.len() {
            let id = PropertyId::ALL[i];
            if id.contexts() & (1 << c) != 0 {
                masks[c] |= 1 << id as u8;
            }
            i += 1;
        }
        c += 1;
    }
    masks
};

const CONNECT: u16 = PropertyContext::Connect.bit();
const CONNACK: u16 = PropertyContext::ConnAck.bit();
const PUBLISH: u16 = PropertyContext::Publish.bit();
const WILL: u16 = PropertyContext::Will.bit();
const PUBRESP: u16 = PropertyContext::PubResp.bit();
const SUBSCRIBE: u16 = PropertyContext::Subscribe.bit();
const SUBACK: u16 = PropertyContext::SubAck.bit();
const UNSUBSCRIBE: u16 = PropertyContext::Unsubscribe.bit();
const UNSUBACK: u16 = PropertyContext::UnsubAck.bit();
const DISCONNECT: u16 = PropertyContext::Disconnect.bit();
const AUTH: u16 = PropertyContext::Auth.bit();
const ALL: u16 = CONNECT
    | CONNACK
    | PUBLISH
    | WILL
    | PUBRESP
    | SUBSCRIBE
    | SUBACK
    | UNSUBSCRIBE
    | UNSUBACK
    | DISCONNECT
    | AUTH;

property_ids! {
    PayloadFormatIndicator = 0x01, PUBLISH | WILL;
    MessageExpiryInterval = 0x02, PUBLISH | WILL;
    ContentType = 0x03, PUBLISH | WILL;
    ResponseTopic = 0x08, PUBLISH | WILL;
    CorrelationData = 0x09, PUBLISH | WILL;
    SubscriptionIdentifier = 0x0B, PUBLISH | SUBSCRIBE;
    SessionExpiryInterval = 0x11, CONNECT | CONNACK | DISCONNECT;
    AssignedClientIdentifier = 0x12, CONNACK;
    ServerKeepAlive = 0x13, CONNACK;
    AuthenticationMethod = 0x15, CONNECT | CONNACK | AUTH;
    AuthenticationData = 0x16, CONNECT | CONNACK | AUTH;
    RequestProblemInformation = 0x17, CONNECT;
    WillDelayInterval = 0x18, WILL;
    RequestResponseInformation = 0x19, CONNECT;
    ResponseInformation = 0x1A, CONNACK;
    ServerReference = 0x1C, CONNACK | DISCONNECT;
    ReasonString = 0x1F, CONNACK | PUBRESP | SUBACK | UNSUBACK | DISCONNECT | AUTH;
    ReceiveMaximum = 0x21, CONNECT | CONNACK;
    TopicAliasMaximum = 0x22, CONNECT | CONNACK;
    TopicAlias = 0x23, PUBLISH;
    MaximumQoS = 0x24, CONNACK;
    RetainAvailable = 0x25, CONNACK;
    UserProperty = 0x26, ALL;
    MaximumPacketSize = 0x27, CONNECT | CONNACK;
    WildcardSubscriptionAvailable = 0x28, CONNACK;
    SubscriptionIdentifierAvailable = 0x29, CONNACK;
    SharedSubscriptionAvailable = 0x2A, CONNACK;
}

impl PropertyId {
    /// Whether this property may appear in `ctx`.
    pub fn allowed_in(self, ctx: PropertyContext) -> bool {
        self.contexts() & ctx.bit() != 0
    }

    /// Whether this property may appear more than once in `ctx`: User Property
    /// anywhere, Subscription Identifier in PUBLISH.
    pub fn may_repeat(self, ctx: PropertyContext) -> bool {
        match self {
            PropertyId::UserProperty => true,
            PropertyId::SubscriptionIdentifier => ctx == PropertyContext::Publish,
            _ => false,
        }
    }
}

/// One property with its typed value. Strings and binary data borrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Property<'a> {
    /// True when the payload is UTF-8 text.
    PayloadFormatIndicator(bool),
    MessageExpiryInterval(u32),
    ContentType(&'a str),
    ResponseTopic(&'a str),
    CorrelationData(&'a [u8]),
    /// 1 to 268,435,455.
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(&'a str),
    ServerKeepAlive(u16),
    AuthenticationMethod(&'a str),
    AuthenticationData(&'a [u8]),
    RequestProblemInformation(bool),
    WillDelayInterval(u32),
    RequestResponseInformation(bool),
    ResponseInformation(&'a str),
    ServerReference(&'a str),
    ReasonString(&'a str),
    /// Not 0.
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    /// Not 0.
    TopicAlias(u16),
    /// QoS 0 or 1 (a server that supports QoS 2 omits the property).
    MaximumQoS(QoS),
    RetainAvailable(bool),
    /// A name and a value.
    UserProperty(&'a str, &'a str),
    /// Not 0.
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(bool),
    SubscriptionIdentifierAvailable(bool),
    SharedSubscriptionAvailable(bool),
}

impl<'a> Property<'a> {
    /// The property's identifier.
    pub fn id(&self) -> PropertyId {
        use Property as P;
        use PropertyId as I;
        match self {
            P::PayloadFormatIndicator(_) => I::PayloadFormatIndicator,
            P::MessageExpiryInterval(_) => I::MessageExpiryInterval,
            P::ContentType(_) => I::ContentType,
            P::ResponseTopic(_) => I::ResponseTopic,
            P::CorrelationData(_) => I::CorrelationData,
            P::SubscriptionIdentifier(_) => I::SubscriptionIdentifier,
            P::SessionExpiryInterval(_) => I::SessionExpiryInterval,
            P::AssignedClientIdentifier(_) => I::AssignedClientIdentifier,
            P::ServerKeepAlive(_) => I::ServerKeepAlive,
            P::AuthenticationMethod(_) => I::AuthenticationMethod,
            P::AuthenticationData(_) => I::AuthenticationData,
            P::RequestProblemInformation(_) => I::RequestProblemInformation,
            P::WillDelayInterval(_) => I::WillDelayInterval,
            P::RequestResponseInformation(_) => I::RequestResponseInformation,
            P::ResponseInformation(_) => I::ResponseInformation,
            P::ServerReference(_) => I::ServerReference,
            P::ReasonString(_) => I::ReasonString,
            P::ReceiveMaximum(_) => I::ReceiveMaximum,
            P::TopicAliasMaximum(_) => I::TopicAliasMaximum,
            P::TopicAlias(_) => I::TopicAlias,
            P::MaximumQoS(_) => I::MaximumQoS,
            P::RetainAvailable(_) => I::RetainAvailable,
            P::UserProperty(..) => I::UserProperty,
            P::MaximumPacketSize(_) => I::MaximumPacketSize,
            P::WildcardSubscriptionAvailable(_) => I::WildcardSubscriptionAvailable,
            P::SubscriptionIdentifierAvailable(_) => I::SubscriptionIdentifierAvailable,
            P::SharedSubscriptionAvailable(_) => I::SharedSubscriptionAvailable,
        }
    }

    fn decode(r: &mut Reader<'a>) -> Result<Property<'a>, DecodeError> {
        use Property as P;
        use PropertyId as I;
        let byte = r.u8()?;
        let id = PropertyId::from_u8(byte).ok_or(DecodeError::UnknownProperty(byte))?;
        let flag = |r: &mut Reader<'a>| -> Result<bool, DecodeError> {
            match r.u8()? {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(DecodeError::InvalidPropertyValue(id)),
            }
        };
        let prop = match id {
            I::PayloadFormatIndicator => P::PayloadFormatIndicator(flag(r)?),
            I::MessageExpiryInterval => P::MessageExpiryInterval(r.u32()?),
            I::ContentType => P::ContentType(r.string()?),
            I::ResponseTopic => P::ResponseTopic(r.string()?),
            I::CorrelationData => P::CorrelationData(r.binary()?),
            I::SubscriptionIdentifier => P::SubscriptionIdentifier(r.varint()?),
            I::SessionExpiryInterval => P::SessionExpiryInterval(r.u32()?),
            I::AssignedClientIdentifier => P::AssignedClientIdentifier(r.string()?),
            I::ServerKeepAlive => P::ServerKeepAlive(r.u16()?),
            I::AuthenticationMethod => P::AuthenticationMethod(r.string()?),
            I::AuthenticationData => P::AuthenticationData(r.binary()?),
            I::RequestProblemInformation => P::RequestProblemInformation(flag(r)?),
            I::WillDelayInterval => P::WillDelayInterval(r.u32()?),
            I::RequestResponseInformation => P::RequestResponseInformation(flag(r)?),
            I::ResponseInformation => P::ResponseInformation(r.string()?),
            I::ServerReference => P::ServerReference(r.string()?),
            I::ReasonString => P::ReasonString(r.string()?),
            I::ReceiveMaximum => P::ReceiveMaximum(r.u16()?),
            I::TopicAliasMaximum => P::TopicAliasMaximum(r.u16()?),
            I::TopicAlias => P::TopicAlias(r.u16()?),
            I::MaximumQoS => P::MaximumQoS(match r.u8()? {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => return Err(DecodeError::InvalidPropertyValue(id)),
            }),
            I::RetainAvailable => P::RetainAvailable(flag(r)?),
            I::UserProperty => P::UserProperty(r.string()?, r.string()?),
            I::MaximumPacketSize => P::MaximumPacketSize(r.u32()?),
            I::WildcardSubscriptionAvailable => P::WildcardSubscriptionAvailable(flag(r)?),
            I::SubscriptionIdentifierAvailable => P::SubscriptionIdentifierAvailable(flag(r)?),
            I::SharedSubscriptionAvailable => P::SharedSubscriptionAvailable(flag(r)?),
        };
        prop.check_value()?;
        Ok(prop)
    }

    /// Range rules that the type alone does not enforce.
    fn check_value(&self) -> Result<(), DecodeError> {
        let ok = match *self {
            Property::SubscriptionIdentifier(v) => (1..=MAX_VARINT).contains(&v),
            Property::ReceiveMaximum(v) | Property::TopicAlias(v) => v != 0,
            Property::MaximumPacketSize(v) => v != 0,
            Property::MaximumQoS(q) => q != QoS::ExactlyOnce,
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(DecodeError::InvalidPropertyValue(self.id()))
        }
    }

    /// Bytes this property takes on the wire, identifier included.
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        self.sized::<false, true>()
    }

    /// [`encoded_len`](Property::encoded_len), with the value range checks of
    /// [`check_value`](Property::check_value) done in the same match when
    /// `CHECK` (the encoder's one pass over a caller's property), and strings
    /// checked for U+0000 only when `SCAN` (`encode` checks them as it copies
    /// them).
    #[inline(always)]
    fn sized<const CHECK: bool, const SCAN: bool>(&self) -> Result<usize, EncodeError> {
        use Property as P;
        let in_range = |ok: bool| {
            if CHECK && !ok {
                Err(EncodeError::from(DecodeError::InvalidPropertyValue(
                    self.id(),
                )))
            } else {
                Ok(())
            }
        };
        let body = match *self {
            P::PayloadFormatIndicator(_)
            | P::RequestProblemInformation(_)
            | P::RequestResponseInformation(_)
            | P::RetainAvailable(_)
            | P::WildcardSubscriptionAvailable(_)
            | P::SubscriptionIdentifierAvailable(_)
            | P::SharedSubscriptionAvailable(_) => 1,
            P::MaximumQoS(q) => {
                in_range(q != QoS::ExactlyOnce)?;
                1
            }
            P::ServerKeepAlive(_) | P::TopicAliasMaximum(_) => 2,
            P::ReceiveMaximum(v) | P::TopicAlias(v) => {
                in_range(v != 0)?;
                2
            }
            P::MessageExpiryInterval(_) | P::SessionExpiryInterval(_) | P::WillDelayInterval(_) => {
                4
            }
            P::MaximumPacketSize(v) => {
                in_range(v != 0)?;
                4
            }
            P::SubscriptionIdentifier(v) => {
                in_range((1..=MAX_VARINT).contains(&v))?;
                varint_len(v)
            }
            P::ContentType(s)
            | P::ResponseTopic(s)
            | P::AssignedClientIdentifier(s)
            | P::AuthenticationMethod(s)
            | P::ResponseInformation(s)
            | P::ServerReference(s)
            | P::ReasonString(s) => string_len::<SCAN>(s)?,
            P::CorrelationData(b) | P::AuthenticationData(b) => binary_len(b)?,
            P::UserProperty(k, v) => string_len::<SCAN>(k)? + string_len::<SCAN>(v)?,
        };
        Ok(1 + body)
    }

    /// Writes the identifier and the value with one reservation each for
    /// the fixed-size values and for a string with its header.
    #[inline(always)]
    fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        use Property as P;
        let id = self.id() as u8;
        match *self {
            P::PayloadFormatIndicator(b)
            | P::RequestProblemInformation(b)
            | P::RequestResponseInformation(b)
            | P::RetainAvailable(b)
            | P::WildcardSubscriptionAvailable(b)
            | P::SubscriptionIdentifierAvailable(b)
            | P::SharedSubscriptionAvailable(b) => w.array([id, u8::from(b)]),
            P::MaximumQoS(q) => w.array([id, q.as_u8()]),
            P::ServerKeepAlive(v)
            | P::ReceiveMaximum(v)
            | P::TopicAliasMaximum(v)
            | P::TopicAlias(v) => {
                let [a, b] = v.to_be_bytes();
                w.array([id, a, b]);
            }
            P::MessageExpiryInterval(v)
            | P::SessionExpiryInterval(v)
            | P::WillDelayInterval(v)
            | P::MaximumPacketSize(v) => {
                let [a, b, c, d] = v.to_be_bytes();
                w.array([id, a, b, c, d]);
            }
            P::SubscriptionIdentifier(v) => {
                w.u8(id);
                w.varint(v);
            }
            P::ContentType(s)
            | P::ResponseTopic(s)
            | P::AssignedClientIdentifier(s)
            | P::AuthenticationMethod(s)
            | P::ResponseInformation(s)
            | P::ServerReference(s)
            | P::ReasonString(s) => return w.id_string(id, s),
            P::CorrelationData(b) | P::AuthenticationData(b) => {
                w.u8(id);
                w.binary(b);
            }
            P::UserProperty(k, v) => {
                w.id_string(id, k)?;
                return w.string(v);
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Repr<'a> {
    /// Wire bytes (without the length prefix) that were validated when decoded.
    Encoded(&'a [u8]),
    /// A caller's list, validated when encoded.
    List(&'a [Property<'a>]),
}

/// A property list.
///
/// Decoding yields a view over the packet's bytes; to encode, build one from a
/// slice with [`Properties::from_slice`]. Two lists are equal when they hold the
/// same properties in the same order, whichever way they were made.
#[derive(Clone, Copy)]
pub struct Properties<'a>(Repr<'a>);

impl Default for Properties<'_> {
    fn default() -> Self {
        Properties::EMPTY
    }
}

impl<'a> Properties<'a> {
    /// No properties.
    pub const EMPTY: Properties<'static> = Properties(Repr::List(&[]));

    /// A list to encode.
    pub const fn from_slice(props: &'a [Property<'a>]) -> Self {
        Properties(Repr::List(props))
    }

    /// True when the list holds no property.
    pub fn is_empty(&self) -> bool {
        match self.0 {
            Repr::Encoded(b) => b.is_empty(),
            Repr::List(l) => l.is_empty(),
        }
    }

    /// The properties in wire order.
    pub fn iter(&self) -> PropertyIter<'a> {
        PropertyIter(match self.0 {
            Repr::Encoded(b) => IterRepr::Encoded(Reader::new(b)),
            Repr::List(l) => IterRepr::List(l.iter()),
        })
    }

    /// The first property with this identifier.
    pub fn get(&self, id: PropertyId) -> Option<Property<'a>> {
        self.iter().find(|p| p.id() == id)
    }

    /// Every User Property, as (name, value) pairs in order.
    pub fn user_properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.iter().filter_map(|p| match p {
            Property::UserProperty(k, v) => Some((k, v)),
            _ => None,
        })
    }

    /// Every Subscription Identifier, in order.
    pub fn subscription_identifiers(&self) -> impl Iterator<Item = u32> + 'a {
        self.iter().filter_map(|p| match p {
            Property::SubscriptionIdentifier(v) => Some(v),
            _ => None,
        })
    }

    /// The wire bytes, when this list was decoded.
    pub fn as_encoded(&self) -> Option<&'a [u8]> {
        match self.0 {
            Repr::Encoded(b) => Some(b),
            Repr::List(_) => None,
        }
    }

    /// Reads the length prefix and the properties, validating each for `ctx`.
    pub(crate) fn decode(r: &mut Reader<'a>, ctx: PropertyContext) -> Result<Self, DecodeError> {
        let len = r.varint()?;
        let bytes = r.take(len as usize)?;
        Self::decode_body(bytes, ctx)
    }

    /// Validates property bytes (without their length prefix) for `ctx`.
    pub(crate) fn decode_body(bytes: &'a [u8], ctx: PropertyContext) -> Result<Self, DecodeError> {
        let mut seen = 0u64;
        let mut r = Reader::new(bytes);
        while !r.is_empty() {
            let p = Property::decode(&mut r)?;
            check_placement(p.id(), ctx, &mut seen)?;
        }
        Ok(Properties(Repr::Encoded(bytes)))
    }

    /// Bytes of the properties without the length prefix, validating a
    /// caller's list for `ctx` (its strings only when `SCAN`: `write` checks
    /// them as it copies them). A decoded list was validated when it was read
    /// and is copied as it is.
    #[inline(never)]
    pub(crate) fn body_len<const SCAN: bool>(
        &self,
        ctx: PropertyContext,
    ) -> Result<usize, EncodeError> {
        self.measure::<SCAN>(ctx)
    }

    /// [`body_len`](Properties::body_len) inlined, for the 5.0 encoders of
    /// PUBLISH and CONNECT, which carry most properties.
    #[inline(always)]
    pub(crate) fn measure<const SCAN: bool>(
        &self,
        ctx: PropertyContext,
    ) -> Result<usize, EncodeError> {
        match self.0 {
            Repr::Encoded(b) => Ok(b.len()),
            Repr::List(list) => {
                let allowed = ctx.allowed_ids();
                let repeatable = ctx.repeatable_ids();
                let mut seen = 0u64;
                let mut len = 0usize;
                for p in list {
                    let bit = 1u64 << (p.id() as u8);
                    if (bit & !allowed) | (bit & seen & !repeatable) != 0 {
                        check_placement(p.id(), ctx, &mut seen)?;
                    }
                    seen |= bit;
                    len += p.sized::<true, SCAN>()?;
                }
                Ok(len)
            }
        }
    }

    /// Writes the length prefix and the properties. The caller has validated
    /// them through `body_len`.
    ///
    /// Inlined, like every function that writes through a `Writer`: a writer
    /// passed to a function that is not would be kept in memory by every
    /// encoder, its position stored after each field, even in 3.1.1 where
    /// this is never called.
    #[inline(always)]
    pub(crate) fn write(&self, w: &mut Writer<'_>, body_len: usize) -> Result<(), EncodeError> {
        w.varint(body_len as u32);
        match self.0 {
            Repr::Encoded(b) => w.bytes(b),
            Repr::List(list) => {
                for p in list {
                    p.write(w)?;
                }
            }
        }
        Ok(())
    }
}

/// Bytes of a property section whose properties take `body` bytes
/// ([`Properties::body_len`], computed once per encode): the body and its
/// length prefix.
pub(crate) fn with_length_prefix(body: usize) -> Result<usize, EncodeError> {
    let body32 = u32::try_from(body).map_err(|_| EncodeError::PacketTooLarge)?;
    if body32 > MAX_VARINT {
        return Err(EncodeError::PacketTooLarge);
    }
    Ok(varint_len(body32) + body)
}

fn check_placement(
    id: PropertyId,
    ctx: PropertyContext,
    seen: &mut u64,
) -> Result<(), DecodeError> {
    if !id.allowed_in(ctx) {
        return Err(DecodeError::PropertyNotAllowed(id));
    }
    let bit = 1u64 << (id as u8);
    if *seen & bit != 0 && !id.may_repeat(ctx) {
        return Err(DecodeError::DuplicateProperty(id));
    }
    *seen |= bit;
    Ok(())
}

impl PartialEq for Properties<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Properties<'_> {}

impl fmt::Debug for Properties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for Properties<'a> {
    type Item = Property<'a>;
    type IntoIter = PropertyIter<'a>;
    fn into_iter(self) -> PropertyIter<'a> {
        self.iter()
    }
}

enum IterRepr<'a> {
    Encoded(Reader<'a>),
    List(core::slice::Iter<'a, Property<'a>>),
}

/// Iterator over a property list.
pub struct PropertyIter<'a>(IterRepr<'a>);

impl<'a> Iterator for PropertyIter<'a> {
    type Item = Property<'a>;

    fn next(&mut self) -> Option<Property<'a>> {
        match &mut self.0 {
            // The bytes were validated when the packet was decoded, so an error
            // here cannot happen; ending the iteration keeps it panic-free.
            IterRepr::Encoded(r) if r.is_empty() => None,
            IterRepr::Encoded(r) => Property::decode(r).ok(),
            IterRepr::List(it) => it.next().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_27_properties() {
        assert_eq!(PropertyId::ALL.len(), 27);
        for id in PropertyId::ALL {
            assert_eq!(PropertyId::from_u8(*id as u8), Some(*id));
        }
    }

    #[test]
    fn placement_masks_agree_with_the_table() {
        use PropertyContext as C;
        for ctx in [
            C::Connect,
            C::ConnAck,
            C::Publish,
            C::Will,
            C::PubResp,
            C::Subscribe,
            C::SubAck,
            C::Unsubscribe,
            C::UnsubAck,
            C::Disconnect,
            C::Auth,
        ] {
            for &id in PropertyId::ALL {
                let bit = 1u64 << id as u8;
                assert_eq!(
                    ctx.allowed_ids() & bit != 0,
                    id.allowed_in(ctx),
                    "{ctx:?} {id:?}"
                );
                assert_eq!(
                    ctx.repeatable_ids() & bit != 0,
                    id.may_repeat(ctx),
                    "{ctx:?} {id:?}"
                );
            }
        }
    }

    #[test]
    fn duplicate_single_property_is_a_protocol_error() {
        let bytes = [0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2];
        assert_eq!(
            Properties::decode_body(&bytes, PropertyContext::Connect).map(|_| ()),
            Err(DecodeError::DuplicateProperty(
                PropertyId::SessionExpiryInterval
            ))
        );
    }

    #[test]
    fn user_property_may_repeat() {
        let bytes = [0x26, 0, 1, b'a', 0, 1, b'b', 0x26, 0, 1, b'a', 0, 1, b'c'];
        let props = Properties::decode_body(&bytes, PropertyContext::Publish).unwrap();
        let mut it = props.user_properties();
        assert_eq!(it.next(), Some(("a", "b")));
        assert_eq!(it.next(), Some(("a", "c")));
        assert_eq!(it.next(), None);
    }

    #[test]
    fn property_of_another_packet_is_rejected() {
        // Topic Alias in CONNECT.
        let bytes = [0x23, 0, 1];
        assert_eq!(
            Properties::decode_body(&bytes, PropertyContext::Connect).map(|_| ()),
            Err(DecodeError::PropertyNotAllowed(PropertyId::TopicAlias))
        );
    }

    #[test]
    fn unknown_property_is_malformed() {
        assert_eq!(
            Properties::decode_body(&[0x04, 0], PropertyContext::Publish).map(|_| ()),
            Err(DecodeError::UnknownProperty(0x04))
        );
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        for bytes in [
            &[0x21u8, 0, 0][..],     // Receive Maximum 0
            &[0x27, 0, 0, 0, 0][..], // Maximum Packet Size 0
            &[0x17, 2][..],          // Request Problem Information 2
        ] {
            assert!(matches!(
                Properties::decode_body(bytes, PropertyContext::Connect),
                Err(DecodeError::InvalidPropertyValue(_))
            ));
        }
    }
}
