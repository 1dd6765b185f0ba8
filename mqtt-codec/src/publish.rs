//! PUBLISH (section 3.3) and its four acknowledgements PUBACK, PUBREC, PUBREL
//! and PUBCOMP (3.4 to 3.7), which share one shape.

use crate::error::{DecodeError, EncodeError};
use crate::header::PacketType;
use crate::properties::{with_length_prefix, Properties, PropertyContext, PropertyId};
use crate::reason::ReasonCode;
use crate::topic::valid_topic_name;
use crate::types::{Pid, ProtocolVersion, QoS, QosPid};
use crate::wire::Reader;
use crate::writer::{discard, fixed, Writer};

/// A PUBLISH packet. Topic and payload borrow from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    /// Set on a redelivery of a QoS 1 or 2 message.
    pub dup: bool,
    /// QoS and, for QoS 1 and 2, the packet identifier.
    pub qos_pid: QosPid,
    /// The retain flag.
    pub retain: bool,
    /// The topic name; empty only in MQTT 5 with a Topic Alias property.
    pub topic: &'a str,
    /// PUBLISH properties (5.0 only).
    pub properties: Properties<'a>,
    /// The application message: opaque bytes.
    pub payload: &'a [u8],
}

impl<'a> Publish<'a> {
    /// A QoS 0 PUBLISH with no properties.
    pub fn new(topic: &'a str, payload: &'a [u8]) -> Self {
        Publish {
            dup: false,
            qos_pid: QosPid::AtMostOnce,
            retain: false,
            topic,
            properties: Properties::EMPTY,
            payload,
        }
    }

    pub(crate) fn decode(
        flags: u8,
        body: &'a [u8],
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let dup = flags & 0b1000 != 0;
        let qos = QoS::from_u8((flags >> 1) & 0b11)?;
        let retain = flags & 1 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupWithQoS0);
        }
        let mut r = Reader::new(body);
        let topic = r.string()?;
        let qos_pid = match qos {
            QoS::AtMostOnce => QosPid::AtMostOnce,
            QoS::AtLeastOnce => QosPid::AtLeastOnce(Pid::decode(r.u16()?)?),
            QoS::ExactlyOnce => QosPid::ExactlyOnce(Pid::decode(r.u16()?)?),
        };
        let properties = if version.is_v5() {
            Properties::decode(&mut r, PropertyContext::Publish)?
        } else {
            Properties::EMPTY
        };
        let publish = Publish {
            dup,
            qos_pid,
            retain,
            topic,
            properties,
            payload: r.rest(),
        };
        publish.check_topic(version)?;
        Ok(publish)
    }

    fn check_topic(&self, version: ProtocolVersion) -> Result<(), DecodeError> {
        let ok = if self.topic.is_empty() {
            version.is_v5() && self.properties.get(PropertyId::TopicAlias).is_some()
        } else {
            valid_topic_name(self.topic)
        };
        if ok {
            Ok(())
        } else {
            Err(DecodeError::InvalidTopicName)
        }
    }

    #[inline]
    pub(crate) fn first_byte(&self) -> u8 {
        let mut b = 0x30 | (self.qos_pid.qos().as_u8() << 1);
        if self.dup {
            b |= 0b1000;
        }
        if self.retain {
            b |= 1;
        }
        b
    }

    /// The topic's contents are checked only when `SCAN`; `encode` checks
    /// them as it copies them.
    #[inline]
    pub(crate) fn body_len<const SCAN: bool>(
        &self,
        version: ProtocolVersion,
    ) -> Result<(usize, usize), EncodeError> {
        if version.is_v5() {
            self.measure::<SCAN, true>()
        } else {
            self.measure::<SCAN, false>()
        }
    }

    /// [`body_len`](Publish::body_len) for one protocol family.
    #[inline(always)]
    fn measure<const SCAN: bool, const V5: bool>(&self) -> Result<(usize, usize), EncodeError> {
        if self.dup && self.qos_pid == QosPid::AtMostOnce {
            return Err(DecodeError::DupWithQoS0.into());
        }
        // A 3.1.1 subscriber cannot receive a topic alias: the topic is needed.
        let v5 = V5;
        let topic_ok = if self.topic.is_empty() {
            v5 && self.properties.get(PropertyId::TopicAlias).is_some()
        } else if SCAN {
            valid_topic_name(self.topic)
        } else {
            self.topic.len() <= usize::from(u16::MAX)
        };
        if !topic_ok {
            return Err(DecodeError::InvalidTopicName.into());
        }
        let mut len = 2 + self.topic.len() + self.payload.len();
        if self.qos_pid != QosPid::AtMostOnce {
            len += 2;
        }
        let mut props = 0;
        if v5 {
            props = self.properties.measure::<SCAN>(PropertyContext::Publish)?;
            len += with_length_prefix(props)?;
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
        let (body, props) = self.measure::<false, V5>()?;
        let w = Writer::packet(&mut *buf, self.first_byte(), body)?;
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
        if self.topic.is_empty() {
            // Allowed by body_len: a 5.0 topic alias stands in for it.
            w.u16(0);
        } else {
            w.topic_name(self.topic)?;
        }
        if let Some(pid) = self.qos_pid.pid() {
            w.u16(pid.get());
        }
        if version.is_v5() {
            self.properties.write(&mut w, props)?;
        }
        w.bytes(self.payload);
        Ok(w)
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP: a packet identifier, and in MQTT 5 a
/// reason code and properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubResp<'a> {
    /// The identifier of the PUBLISH (or PUBREL) being answered.
    pub pid: Pid,
    /// The result (5.0); always `Success` when decoded from 3.1.1.
    pub reason: ReasonCode,
    /// Properties (5.0 only).
    pub properties: Properties<'a>,
}

impl<'a> PubResp<'a> {
    /// A successful acknowledgement of `pid` with no properties.
    pub fn new(pid: Pid) -> Self {
        PubResp {
            pid,
            reason: ReasonCode::Success,
            properties: Properties::EMPTY,
        }
    }

    pub(crate) fn decode(
        kind: PacketType,
        body: &'a [u8],
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let pid = Pid::decode(r.u16()?)?;
        let mut resp = PubResp::new(pid);
        if version.is_v5() {
            // A 2-byte body means Success with no properties; 3 bytes, a reason
            // code with no properties (section 3.4.2.1).
            if !r.is_empty() {
                resp.reason = ReasonCode::decode_for(r.u8()?, kind)?;
            }
            if !r.is_empty() {
                resp.properties = Properties::decode(&mut r, PropertyContext::PubResp)?;
            }
        }
        r.finish()?;
        Ok(resp)
    }

    /// In 3.1.1 only the identifier is sent: a 3.1.1 peer has no field for a
    /// reason code or properties.
    pub(crate) fn body_len<const SCAN: bool>(
        &self,
        kind: PacketType,
        version: ProtocolVersion,
    ) -> Result<(usize, usize), EncodeError> {
        if !version.is_v5() {
            return Ok((2, 0));
        }
        if !self.reason.allowed_in(kind) {
            return Err(DecodeError::InvalidReasonCode(self.reason.as_u8()).into());
        }
        if self.properties.is_empty() {
            let len = if self.reason == ReasonCode::Success {
                2
            } else {
                3
            };
            return Ok((len, 0));
        }
        let props = self.properties.body_len::<SCAN>(PropertyContext::PubResp)?;
        Ok((3 + with_length_prefix(props)?, props))
    }

    #[inline]
    pub(crate) fn encode(
        &self,
        kind: PacketType,
        version: ProtocolVersion,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        if !version.is_v5() {
            let [hi, lo] = self.pid.get().to_be_bytes();
            return fixed(buf, [kind.first_byte(), 2, hi, lo]);
        }
        self.encode_v5(kind, buf)
    }

    fn encode_v5(&self, kind: PacketType, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let (body, props) = self.body_len::<false>(kind, ProtocolVersion::V5)?;
        let w = Writer::packet(&mut *buf, kind.first_byte(), body)?;
        match self.write_v5(w, body, props) {
            Ok(w) => w.finish(body),
            Err(e) => Err(discard(buf, body, e)),
        }
    }

    fn write_v5<'b>(
        &self,
        mut w: Writer<'b>,
        body: usize,
        props: usize,
    ) -> Result<Writer<'b>, EncodeError> {
        w.u16(self.pid.get());
        if body > 2 {
            w.u8(self.reason.as_u8());
        }
        if body > 3 {
            self.properties.write(&mut w, props)?;
        }
        Ok(w)
    }
}
