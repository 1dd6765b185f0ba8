//! An async MQTT 3.1.1 / 5.0 client that never loses or blocks.
//!
//! ```no_run
//! use mqtt_client::{Client, ConnectOptions, QoS};
//!
//! # async fn demo() -> Result<(), mqtt_client::ClientError> {
//! let (client, mut messages) = Client::connect(ConnectOptions::new("localhost", 1883).client_id("thermostat")).await?;
//! client.subscribe("room/+/temp", QoS::AtLeastOnce).await?;
//! client.publish("room/kitchen/temp", "22.5", QoS::AtLeastOnce, false).await?;
//! while let Some(msg) = messages.recv().await {
//!     println!("{} {:?}", msg.topic, msg.payload);
//!     // Publishing from the message handler never deadlocks.
//!     client.publish("ack", msg.payload, QoS::AtMostOnce, false).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! - [`Client::publish`] completes when the message is done for its QoS:
//!   written (0), PUBACK (1), PUBCOMP (2), with the server's reason code.
//! - A background task owns the connection: keep alive, reconnect with
//!   exponential backoff and jitter, session resume (unacknowledged PUBLISH
//!   with DUP and PUBREL resent), subscriptions restored when the server lost
//!   the session, a bounded offline queue ([`ClientError::QueueFull`]).
//! - [`ConnectOptions::from_url`] takes `mqtt://`, `mqtts://`, `ws://` and
//!   `wss://` URLs; WebSocket (MQTT over WebSocket, section 6) runs over
//!   the same TCP and TLS code.
//! - [`blocking`] offers the same client without an async runtime.
//! - [`payload_crypto`] (feature `fernet`, on by default) encrypts payloads
//!   end to end as Fernet tokens, as Python's `cryptography` does.

pub mod blocking;
mod client;
mod error;
mod event_loop;
mod events;
mod message;
mod options;
#[cfg(feature = "fernet")]
pub mod payload_crypto;
mod transport;
mod url;
mod websocket;

pub use client::{Client, Messages, PublishToken};
pub use error::{reason_text, ClientError};
pub use events::{ClientEvent, EventHook};
pub use message::{Message, OutgoingMessage, PublishProperties};
/// The codec's packet types, as seen by an [`EventHook`].
pub use mqtt_codec::Packet;
pub use mqtt_codec::{ProtocolVersion, QoS, ReasonCode, RetainHandling, SubscriptionOptions};
pub use options::{ConnectOptions, TlsOptions, WebSocketOptions, Will};
pub use url::BrokerUrl;
