//! CONNECT (sections 3.1) and CONNACK (3.2), with the will message.

use crate::error::{DecodeError, EncodeError};
use crate::header::PacketType;
use crate::properties::{with_length_prefix, Properties, PropertyContext};
use crate::reason::ReasonCode;
use crate::topic::valid_topic_name;
use crate::types::{ProtocolVersion, QoS};
use crate::wire::Reader;
use crate::writer::{binary_len, discard, fixed, string_len, Writer};

/// A CONNECT packet. Its protocol version is read from the packet itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connect<'a> {
    /// The protocol version the client asks for.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1, 3.1.1) or Clean Start (5.0).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// CONNECT properties (5.0 only; empty before).
    pub properties: Properties<'a>,
    /// The client identifier; may be empty.
    pub client_id: &'a str,
    /// The will message.
    pub will: Option<LastWill<'a>>,
    /// The user name.
    pub username: Option<&'a str>,
    /// The password (binary data).
    pub password: Option<&'a [u8]>,
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastWill<'a> {
    /// The topic the will is published to.
    pub topic: &'a str,
    /// The will payload.
    pub payload: &'a [u8],
    /// The QoS to publish it with.
    pub qos: QoS,
    /// Whether it is published retained.
    pub retain: bool,
    /// Will properties (5.0 only).
    pub properties: Properties<'a>,
}

const USERNAME: u8 = 0x80;
const PASSWORD: u8 = 0x40;
const WILL_RETAIN: u8 = 0x20;
const WILL_FLAG: u8 = 0x04;
const CLEAN: u8 = 0x02;
const RESERVED: u8 = 0x01;

impl<'a> Connect<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let name = r.string()?;
        let level = r.u8()?;
        let protocol = match (name, level) {
            ("MQTT", 4) => ProtocolVersion::V3_1_1,
            ("MQTT", 5) => ProtocolVersion::V5,
            ("MQIsdp", 3) => ProtocolVersion::V3_1,
            ("MQTT", _) | ("MQIsdp", _) => {
                return Err(DecodeError::UnsupportedProtocolVersion(level))
            }
            _ => return Err(DecodeError::InvalidProtocolName),
        };
        let flags = r.u8()?;
        let keep_alive = r.u16()?;
        let v5 = protocol.is_v5();
        let properties = if v5 {
            Properties::decode(&mut r, PropertyContext::Connect)?
        } else {
            Properties::EMPTY
        };

        // [MQTT-3.1.1/5: 3.1.2-3] reserved bit; [MQTT-3.1.1: 3.1.2-11/13/15] will QoS and retain
        // only with a will; [MQTT-3.1.1: 3.1.2-22] a 3.1.1 password needs a user name.
        let will_qos = QoS::from_u8((flags >> 3) & 0b11)?;
        let has_will = flags & WILL_FLAG != 0;
        if flags & RESERVED != 0
            || (!has_will && (will_qos != QoS::AtMostOnce || flags & WILL_RETAIN != 0))
            || (!v5 && flags & PASSWORD != 0 && flags & USERNAME == 0)
        {
            return Err(DecodeError::InvalidConnectFlags);
        }

        let client_id = r.string()?;
        let will = if has_will {
            let properties = if v5 {
                Properties::decode(&mut r, PropertyContext::Will)?
            } else {
                Properties::EMPTY
            };
            let topic = r.string()?;
            if !valid_topic_name(topic) {
                return Err(DecodeError::InvalidTopicName);
            }
            Some(LastWill {
                topic,
                payload: r.binary()?,
                qos: will_qos,
                retain: flags & WILL_RETAIN != 0,
                properties,
            })
        } else {
            None
        };
        let username = if flags & USERNAME != 0 {
            Some(r.string()?)
        } else {
            None
        };
        let password = if flags & PASSWORD != 0 {
            Some(r.binary()?)
        } else {
            None
        };
        r.finish()?;
        Ok(Connect {
            protocol,
            clean_start: flags & CLEAN != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.clean_start {
            flags |= CLEAN;
        }
        if let Some(w) = &self.will {
            flags |= WILL_FLAG | (w.qos.as_u8() << 3);
            if w.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        flags
    }

    /// Body length, and the property lengths to write (connect, will). The
    /// strings' contents are checked only when `SCAN`; `encode` checks them
    /// as it copies them.
    pub(crate) fn body_len<const SCAN: bool>(&self) -> Result<(usize, usize, usize), EncodeError> {
        if self.protocol.is_v5() {
            self.measure::<SCAN, true>()
        } else {
            self.measure::<SCAN, false>()
        }
    }

    /// [`body_len`](Connect::body_len) for one protocol family.
    #[inline(always)]
    fn measure<const SCAN: bool, const V5: bool>(
        &self,
    ) -> Result<(usize, usize, usize), EncodeError> {
        let v5 = V5;
        if !v5 && self.password.is_some() && self.username.is_none() {
            return Err(DecodeError::InvalidConnectFlags.into());
        }
        // "MQTT" or "MQIsdp", a constant: no NUL to look for.
        let mut len = 2 + self.protocol.protocol_name().len() + 1 + 1 + 2;
        let mut props = 0;
        let mut will_props = 0;
        if v5 {
            props = self.properties.measure::<SCAN>(PropertyContext::Connect)?;
            len += with_length_prefix(props)?;
        }
        len += string_len::<SCAN>(self.client_id)?;
        if let Some(w) = &self.will {
            let topic_ok = if SCAN {
                valid_topic_name(w.topic)
            } else {
                !w.topic.is_empty() && w.topic.len() <= usize::from(u16::MAX)
            };
            if !topic_ok {
                return Err(DecodeError::InvalidTopicName.into());
            }
            if v5 {
                will_props = w.properties.measure::<SCAN>(PropertyContext::Will)?;
                len += with_length_prefix(will_props)?;
            }
            len += 2 + w.topic.len() + binary_len(w.payload)?;
        }
        if let Some(u) = self.username {
            len += string_len::<SCAN>(u)?;
        }
        if let Some(p) = self.password {
            len += binary_len(p)?;
        }
        Ok((len, props, will_props))
    }

    #[inline]
    pub(crate) fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        if self.protocol.is_v5() {
            self.encode_in::<true>(buf)
        } else {
            self.encode_in::<false>(buf)
        }
    }

    /// One encoder per protocol family: the 3.1.1 one carries no property
    /// code to keep registers for.
    #[inline(never)]
    fn encode_in<const V5: bool>(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let (body, props, will_props) = self.measure::<false, V5>()?;
        let w = Writer::packet(&mut *buf, PacketType::Connect.first_byte(), body)?;
        match self.write::<V5>(w, props, will_props) {
            Ok(w) => w.finish(body),
            Err(e) => Err(discard(buf, body, e)),
        }
    }

    #[inline(always)]
    fn write<'b, const V5: bool>(
        &self,
        mut w: Writer<'b>,
        props: usize,
        will_props: usize,
    ) -> Result<Writer<'b>, EncodeError> {
        let v5 = V5;
        // Protocol name and level: constants, written as one array each.
        match self.protocol {
            ProtocolVersion::V3_1 => w.bytes(b"\x00\x06MQIsdp\x03"),
            ProtocolVersion::V3_1_1 => w.bytes(b"\x00\x04MQTT\x04"),
            ProtocolVersion::V5 => w.bytes(b"\x00\x04MQTT\x05"),
        }
        w.u8(self.flags());
        w.u16(self.keep_alive);
        if v5 {
            self.properties.write(&mut w, props)?;
        }
        w.string(self.client_id)?;
        if let Some(will) = &self.will {
            if v5 {
                will.properties.write(&mut w, will_props)?;
            }
            w.topic_name(will.topic)?;
            w.binary(will.payload);
        }
        if let Some(u) = self.username {
            w.string(u)?;
        }
        if let Some(p) = self.password {
            w.binary(p);
        }
        Ok(w)
    }
}

/// A CONNACK packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck<'a> {
    /// Whether the server resumed a session.
    pub session_present: bool,
    /// The result. For 3.1 / 3.1.1 the return codes 0 to 5 map to `Success`,
    /// `UnsupportedProtocolVersion`, `ClientIdentifierNotValid`,
    /// `ServerUnavailable`, `BadUserNameOrPassword` and `NotAuthorized`; other
    /// codes are sent to a 3.1.1 client as the nearest of those.
    pub reason: ReasonCode,
    /// CONNACK properties (5.0 only).
    pub properties: Properties<'a>,
}

impl<'a> ConnAck<'a> {
    pub(crate) fn decode(body: &'a [u8], version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let flags = r.u8()?;
        if flags & 0xfe != 0 {
            return Err(DecodeError::InvalidConnectFlags);
        }
        let code = r.u8()?;
        let (reason, properties) = if version.is_v5() {
            let reason = ReasonCode::decode_for(code, PacketType::ConnAck)?;
            (
                reason,
                Properties::decode(&mut r, PropertyContext::ConnAck)?,
            )
        } else {
            let reason =
                ReasonCode::from_v3_connack(code).ok_or(DecodeError::InvalidReasonCode(code))?;
            (reason, Properties::EMPTY)
        };
        r.finish()?;
        // [MQTT-3.1.1: 3.2.2-4] a refused connection never has a session.
        let session_present = flags & 1 != 0;
        if session_present && reason.is_error() {
            return Err(DecodeError::InvalidConnectFlags);
        }
        Ok(ConnAck {
            session_present,
            reason,
            properties,
        })
    }

    pub(crate) fn body_len<const SCAN: bool>(
        &self,
        version: ProtocolVersion,
    ) -> Result<(usize, usize), EncodeError> {
        if self.session_present && self.reason.is_error() {
            return Err(DecodeError::InvalidConnectFlags.into());
        }
        if version.is_v5() {
            if !self.reason.allowed_in(PacketType::ConnAck) {
                return Err(DecodeError::InvalidReasonCode(self.reason.as_u8()).into());
            }
            let props = self.properties.body_len::<SCAN>(PropertyContext::ConnAck)?;
            Ok((2 + with_length_prefix(props)?, props))
        } else {
            Ok((2, 0))
        }
    }

    pub(crate) fn encode(
        &self,
        version: ProtocolVersion,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let (body, props) = self.body_len::<false>(version)?;
        if !version.is_v5() {
            // Four bytes, the same layout every time.
            let flags = u8::from(self.session_present);
            let code = self.reason.to_v3_connack_lossy();
            return fixed(buf, [PacketType::ConnAck.first_byte(), 2, flags, code]);
        }
        let w = Writer::packet(&mut *buf, PacketType::ConnAck.first_byte(), body)?;
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
        w.u8(u8::from(self.session_present));
        if version.is_v5() {
            w.u8(self.reason.as_u8());
            self.properties.write(&mut w, props)?;
        } else {
            w.u8(self.reason.to_v3_connack_lossy());
        }
        Ok(w)
    }
}
