//! DISCONNECT (section 3.14) and AUTH (3.15): a reason code and properties,
//! both left out when the reason is success and there are no properties.

use crate::error::{DecodeError, EncodeError};
use crate::header::PacketType;
use crate::properties::{with_length_prefix, Properties, PropertyContext};
use crate::reason::ReasonCode;
use crate::types::ProtocolVersion;
use crate::wire::Reader;
use crate::writer::{discard, Writer};

/// A DISCONNECT packet (empty in 3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnect<'a> {
    /// Why the sender disconnects (5.0); `Success` is Normal disconnection.
    pub reason: ReasonCode,
    /// Properties (5.0 only).
    pub properties: Properties<'a>,
}

/// An AUTH packet (5.0 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth<'a> {
    /// `Success`, `ContinueAuthentication` or `ReAuthenticate`.
    pub reason: ReasonCode,
    /// Properties: Authentication Method and Data, Reason String, User Property.
    pub properties: Properties<'a>,
}

impl<'a> Disconnect<'a> {
    /// A normal disconnection with no properties.
    pub const NORMAL: Disconnect<'static> = Disconnect {
        reason: ReasonCode::Success,
        properties: Properties::EMPTY,
    };

    /// A disconnection for `reason` with no properties.
    pub fn new(reason: ReasonCode) -> Self {
        Disconnect {
            reason,
            properties: Properties::EMPTY,
        }
    }
}

/// Decodes the shared shape: empty, a reason code, or a reason code and
/// properties (sections 3.14.2.1 and 3.15.2.1).
fn decode_reason_props<'a>(
    body: &'a [u8],
    kind: PacketType,
    ctx: PropertyContext,
) -> Result<(ReasonCode, Properties<'a>), DecodeError> {
    let mut r = Reader::new(body);
    let mut reason = ReasonCode::Success;
    let mut properties = Properties::EMPTY;
    if !r.is_empty() {
        reason = ReasonCode::decode_for(r.u8()?, kind)?;
    }
    if !r.is_empty() {
        properties = Properties::decode(&mut r, ctx)?;
    }
    r.finish()?;
    Ok((reason, properties))
}

fn reason_props_len<const SCAN: bool>(
    reason: ReasonCode,
    properties: &Properties<'_>,
    kind: PacketType,
    ctx: PropertyContext,
) -> Result<(usize, usize), EncodeError> {
    if !reason.allowed_in(kind) {
        return Err(DecodeError::InvalidReasonCode(reason.as_u8()).into());
    }
    if properties.is_empty() {
        let len = usize::from(reason != ReasonCode::Success);
        return Ok((len, 0));
    }
    let props = properties.body_len::<SCAN>(ctx)?;
    Ok((1 + with_length_prefix(props)?, props))
}

/// Writes the shared shape after `reason_props_len` chose how much of it to
/// send.
fn encode_reason_props(
    buf: &mut [u8],
    kind: PacketType,
    reason: ReasonCode,
    properties: &Properties<'_>,
    (body, props): (usize, usize),
) -> Result<usize, EncodeError> {
    let mut w = Writer::packet(&mut *buf, kind.first_byte(), body)?;
    if body > 0 {
        w.u8(reason.as_u8());
    }
    let written = if body > 1 {
        properties.write(&mut w, props)
    } else {
        Ok(())
    };
    match written {
        Ok(()) => w.finish(body),
        Err(e) => Err(discard(buf, body, e)),
    }
}

impl<'a> Disconnect<'a> {
    pub(crate) fn decode(body: &'a [u8], version: ProtocolVersion) -> Result<Self, DecodeError> {
        if !version.is_v5() {
            Reader::new(body).finish()?;
            return Ok(Disconnect::NORMAL);
        }
        let (reason, properties) =
            decode_reason_props(body, PacketType::Disconnect, PropertyContext::Disconnect)?;
        Ok(Disconnect { reason, properties })
    }

    /// In 3.1.1 DISCONNECT has no body, so reason and properties are not sent.
    pub(crate) fn body_len<const SCAN: bool>(
        &self,
        version: ProtocolVersion,
    ) -> Result<(usize, usize), EncodeError> {
        if !version.is_v5() {
            return Ok((0, 0));
        }
        reason_props_len::<SCAN>(
            self.reason,
            &self.properties,
            PacketType::Disconnect,
            PropertyContext::Disconnect,
        )
    }

    /// Only called for 5.0: a 3.1.1 DISCONNECT has no body.
    pub(crate) fn encode_v5(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let len = self.body_len::<false>(ProtocolVersion::V5)?;
        encode_reason_props(
            buf,
            PacketType::Disconnect,
            self.reason,
            &self.properties,
            len,
        )
    }
}

impl<'a> Auth<'a> {
    pub(crate) fn decode(body: &'a [u8], version: ProtocolVersion) -> Result<Self, DecodeError> {
        if !version.is_v5() {
            return Err(DecodeError::PacketNotInVersion);
        }
        let (reason, properties) =
            decode_reason_props(body, PacketType::Auth, PropertyContext::Auth)?;
        Ok(Auth { reason, properties })
    }

    pub(crate) fn body_len<const SCAN: bool>(
        &self,
        version: ProtocolVersion,
    ) -> Result<(usize, usize), EncodeError> {
        if !version.is_v5() {
            return Err(EncodeError::NotInVersion);
        }
        reason_props_len::<SCAN>(
            self.reason,
            &self.properties,
            PacketType::Auth,
            PropertyContext::Auth,
        )
    }

    pub(crate) fn encode(
        &self,
        version: ProtocolVersion,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let len = self.body_len::<false>(version)?;
        encode_reason_props(buf, PacketType::Auth, self.reason, &self.properties, len)
    }
}
