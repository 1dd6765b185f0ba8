//! The MQTT protocol state that a client and a server share, apart from
//! sockets and the clock (the model of quinn-proto and h2).
//!
//! Inputs in, decisions out: the caller feeds in what arrived (an
//! acknowledgement, a PUBLISH's packet identifier and topic alias, bytes
//! read) and what time it is, and gets back what to send or what happened.
//! Nothing here reads a clock, opens a socket or spawns a task; every
//! function that needs the time takes `now` as an argument, as any type
//! that is [`Instant`]: `std::time::Instant`, `tokio::time::Instant`, or
//! [`Millis`] in tests. The broker turns the outcomes into store operations,
//! the client into completed futures.
//!
//! | module | holds | specification |
//! |---|---|---|
//! | [`pid`] | packet identifier allocation | MQTT 3.1.1 / 5.0 section 2.2.1 (3.1.1: 2.3.1) |
//! | [`outgoing`] | outgoing QoS 1 and 2 flows: states, legal replies, inflight window, resend with DUP on resume | sections 4.3, 4.4, 4.9 |
//! | [`incoming`] | incoming QoS 2 identifiers, "method A" | section 4.3.3 |
//! | [`alias`] | topic aliases in both directions, with their maximums | MQTT 5.0 section 3.3.2.3.4 |
//! | [`keepalive`] | the server's 1.5 x deadline, the client's ping schedule | section 3.1.2.10 (3.1.1: 3.1.2.10) |
//! | [`framing`] | cutting whole packets out of a read buffer | section 2.1 (fixed header) |
//!
//! `no_std` with `alloc`; no unsafe code.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod alias;
pub mod framing;
pub mod incoming;
pub mod keepalive;
pub mod outgoing;
pub mod pid;
mod time;

pub use alias::{AliasError, InboundAliases, OutAlias, OutboundAliases};
pub use framing::{next_frame, Frame};
pub use incoming::{IncomingQos2, Qos2Arrival, ReceiveMaximumExceeded};
pub use keepalive::{KeepAliveTimeout, PingAction, PingSchedule};
pub use outgoing::{Inflight, InflightEntry, OutState, Outcome, Reply, Resend, Transition};
pub use pid::PidAllocator;
pub use time::{Instant, Millis};
