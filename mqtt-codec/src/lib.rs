//! A `no_std`, allocation-free codec for MQTT 3.1, 3.1.1 and 5.0.
//!
//! - **Decoding borrows.** [`decode`] takes a byte slice and returns a
//!   [`Packet`] whose topic is a `&str` and whose payload is a `&[u8]` into that
//!   slice; property lists, subscription lists and reason-code lists are lazy
//!   views over bytes that were validated once. Nothing is copied or allocated
//!   and no list has a fixed cap.
//! - **Streaming is first-class.** A buffer that ends mid-packet gives
//!   [`Status::Partial`] with the bytes still needed once the header is known;
//!   [`check_header`] refuses a bad type, bad flags or an oversize packet from
//!   the first bytes, before the body is buffered.
//! - **Encoding writes into the caller's buffer.** [`Packet::encode`] returns
//!   the bytes written or says how many are required; [`Packet::encoded_len`]
//!   is exact.
//! - **Strict.** Every rule of the specifications' data representation and
//!   packet formats is checked and reported as a typed [`DecodeError`], which
//!   names the MQTT 5 reason code a server sends for it. No input panics.
//! - **Topics.** [`topic`] validates names and filters, matches them with the
//!   `$` rule, and splits shared subscriptions.
//!
//! # Dependencies
//! None. The issue that started this crate suggested `nom` and `heapless`
//! where they fit. MQTT's grammar is length-prefixed fields inside a frame of
//! known size, which a 100-line checked cursor (`wire.rs`) reads with exact
//! error reporting and no combinator overhead, so `nom` would add compile time
//! and a second error type without removing code. `heapless` would only be
//! needed to collect lists, and the lists here are views instead, with no
//! capacity to choose. Firmware pulls in nothing but this crate.
//!
//! # Features
//! - `std`: implements `std::error::Error` for [`DecodeError`] and
//!   [`EncodeError`]. Off by default.
//! - `bytes`: `Packet::encode_to`, which appends a packet to a growable
//!   `bytes::BytesMut` (a socket's write buffer), for the broker and client
//!   built on this crate. Needs an allocator; off by default.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

mod connect;
mod disconnect;
mod error;
mod header;
mod list;
mod packet;
mod properties;
mod publish;
mod reason;
mod scan;
mod subscribe;
pub mod topic;
mod types;
mod wire;
mod writer;

pub use connect::{ConnAck, Connect, LastWill};
pub use disconnect::{Auth, Disconnect};
pub use error::{DecodeError, EncodeError};
pub use header::{check_header, FixedHeader, Needed, PacketType, Status, MAX_PACKET_SIZE};
pub use list::{List, ListItem, ListIter};
pub use packet::{decode, decode_body, DecodeOptions, Packet};
pub use properties::{Properties, Property, PropertyContext, PropertyId, PropertyIter};
pub use publish::{PubResp, Publish};
pub use reason::ReasonCode;
pub use subscribe::{
    RetainHandling, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe,
};
pub use types::{Pid, ProtocolVersion, QoS, QosPid};
pub use wire::{varint_len, MAX_VARINT};
