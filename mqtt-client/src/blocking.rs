//! A blocking facade for programs without an async runtime: the same client,
//! driven by a small runtime of its own, with the same guarantees.

use bytes::Bytes;
use mqtt_codec::{QoS, ReasonCode, SubscriptionOptions};

use crate::client::{Client as AsyncClient, Messages as AsyncMessages};
use crate::error::ClientError;
use crate::message::{Message, OutgoingMessage};
use crate::options::ConnectOptions;

/// A blocking client. Clone it to use it from several threads; publishing
/// from the thread that reads messages is fine.
#[derive(Clone)]
pub struct Client {
    inner: AsyncClient,
    runtime: std::sync::Arc<tokio::runtime::Runtime>,
}

/// Blocking iterator over incoming messages.
pub struct Messages {
    inner: AsyncMessages,
}

impl Client {
    /// Connects (see [`crate::Client::connect`]).
    pub fn connect(opts: ConnectOptions) -> Result<(Client, Messages), ClientError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mqtt-client")
            .enable_all()
            .build()
            .map_err(|e| ClientError::Connection(format!("cannot start the runtime: {e}")))?;
        let (inner, messages) = runtime.block_on(AsyncClient::connect(opts))?;
        Ok((
            Client {
                inner,
                runtime: std::sync::Arc::new(runtime),
            },
            Messages { inner: messages },
        ))
    }

    /// Publishes and blocks until it is done for its QoS.
    pub fn publish(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<ReasonCode, ClientError> {
        self.runtime
            .block_on(self.inner.publish(topic, payload, qos, retain))
    }

    /// Publishes a message with properties and blocks until it is done.
    pub fn publish_message(&self, msg: OutgoingMessage) -> Result<ReasonCode, ClientError> {
        self.runtime.block_on(self.inner.publish_message(msg))
    }

    /// Subscribes to one filter.
    pub fn subscribe(
        &self,
        filter: impl Into<String>,
        qos: QoS,
    ) -> Result<ReasonCode, ClientError> {
        self.runtime.block_on(self.inner.subscribe(filter, qos))
    }

    /// Subscribes with full options.
    pub fn subscribe_with(
        &self,
        filters: Vec<(String, SubscriptionOptions)>,
        sub_id: Option<u32>,
    ) -> Result<Vec<ReasonCode>, ClientError> {
        self.runtime
            .block_on(self.inner.subscribe_with(filters, sub_id))
    }

    /// Unsubscribes.
    pub fn unsubscribe(&self, filter: impl Into<String>) -> Result<ReasonCode, ClientError> {
        self.runtime.block_on(self.inner.unsubscribe(filter))
    }

    /// Disconnects cleanly.
    pub fn disconnect(&self) -> Result<(), ClientError> {
        self.runtime.block_on(self.inner.disconnect())
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }
}

impl Messages {
    /// Blocks for the next message; `None` once the client stopped.
    pub fn recv(&mut self) -> Option<Message> {
        self.inner.blocking_recv()
    }
}

impl Iterator for Messages {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        self.recv()
    }
}
