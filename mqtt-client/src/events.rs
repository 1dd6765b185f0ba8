//! A window on what the client does, for tools and diagnostics: every MQTT
//! packet sent and received, and the connection being lost and regained.
//!
//! The `mqtt` tool's `-d` trace and its "connection lost" lines are built on
//! this. The hook runs on the client's background task, so it must be quick
//! and must not block; when none is set, the client pays one `Option` check
//! per packet.

use std::fmt;
use std::sync::Arc;

use mqtt_codec::Packet;

use crate::error::ClientError;

/// Something the client did or saw.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientEvent<'a> {
    /// A packet was queued for writing to the server.
    Sent(&'a Packet<'a>),
    /// A packet arrived from the server.
    Received(&'a Packet<'a>),
    /// The connection was lost; the client reconnects unless reconnection
    /// is off.
    ConnectionLost(&'a ClientError),
    /// A reconnection attempt failed; the client waits and tries again.
    ReconnectFailed(&'a ClientError),
    /// Connected again after a loss (CONNACK accepted).
    Reconnected {
        /// Whether the server resumed the session.
        session_present: bool,
    },
}

/// A function called with every [`ClientEvent`]; set it in
/// [`ConnectOptions::on_event`](crate::ConnectOptions::on_event).
#[derive(Clone)]
pub struct EventHook(Arc<dyn Fn(&ClientEvent<'_>) + Send + Sync>);

impl EventHook {
    /// Wraps a function.
    pub fn new(f: impl Fn(&ClientEvent<'_>) + Send + Sync + 'static) -> Self {
        EventHook(Arc::new(f))
    }

    pub(crate) fn call(&self, event: &ClientEvent<'_>) {
        (self.0)(event)
    }
}

impl fmt::Debug for EventHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventHook")
    }
}
