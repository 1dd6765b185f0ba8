//! The application's handle: cheap to clone, usable from any task, including
//! from inside the code that handles incoming messages. Every call hands a
//! command to the background task that owns the connection, which never
//! waits for the application, so no call can deadlock against it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use mqtt_codec::{ReasonCode, SubscriptionOptions};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::ClientError;
use crate::event_loop::EventLoop;
use crate::message::{Message, OutgoingMessage};
use crate::options::ConnectOptions;
use mqtt_codec::QoS;

/// What the application asks of the background task.
pub(crate) enum Command {
    Publish {
        msg: OutgoingMessage,
        done: oneshot::Sender<Result<ReasonCode, ClientError>>,
    },
    Subscribe {
        filters: Vec<(String, SubscriptionOptions)>,
        sub_id: Option<u32>,
        done: oneshot::Sender<Result<Vec<ReasonCode>, ClientError>>,
    },
    Unsubscribe {
        filters: Vec<String>,
        done: oneshot::Sender<Result<Vec<ReasonCode>, ClientError>>,
    },
}

/// State shared between the handles and the background task.
pub(crate) struct Shared {
    pub connected: AtomicBool,
    /// Set to true by `disconnect`.
    pub stop: watch::Sender<bool>,
}

/// A connected client. Clone it freely; all clones share one connection.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

/// The stream of incoming messages. Messages wait here (and, past its
/// capacity, the client stops reading from the network) until taken: none
/// is dropped.
pub struct Messages {
    rx: mpsc::Receiver<Message>,
}

impl Messages {
    /// The next message; `None` once the client has stopped for good.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }

    pub(crate) fn blocking_recv(&mut self) -> Option<Message> {
        self.rx.blocking_recv()
    }
}

impl futures_core::Stream for Messages {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

/// Completes when a publish is done for its QoS: written (QoS 0), PUBACK
/// (QoS 1) or PUBCOMP (QoS 2). Gives the server's reason code.
pub struct PublishToken {
    rx: oneshot::Receiver<Result<ReasonCode, ClientError>>,
}

impl Future for PublishToken {
    type Output = Result<ReasonCode, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

impl Client {
    /// Connects, waits for the server's CONNACK, and starts the background
    /// task that keeps the connection alive and reconnects. A refusal or a
    /// failure of this first attempt is returned as an error.
    pub async fn connect(opts: ConnectOptions) -> Result<(Client, Messages), ClientError> {
        // MQTT 3.1 (protocol "MQIsdp", level 3) is 3.1.1 on the wire but for
        // the client identifier: 1 to 23 characters, none assigned by the
        // server (3.1 section 3.1, Client Identifier).
        if opts.version == mqtt_codec::ProtocolVersion::V3_1
            && !(1..=23).contains(&opts.client_id.len())
        {
            return Err(ClientError::Invalid(format!(
                "MQTT 3.1 needs a client identifier of 1 to 23 characters, not {:?}",
                opts.client_id
            )));
        }
        let (tx, rx) = mpsc::channel(opts.offline_queue.max(1));
        let (in_tx, in_rx) = mpsc::channel(opts.incoming_capacity.max(1));
        // The receiver exists before `disconnect` can be called, so a
        // disconnect right after connect is never missed.
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            connected: AtomicBool::new(false),
            stop,
        });
        let mut event_loop = EventLoop::new(opts, rx, in_tx, shared.clone());
        let conn = event_loop.establish().await?;
        shared.connected.store(true, Ordering::Release);
        let task = tokio::spawn(event_loop.run(conn, stop_rx));
        Ok((
            Client {
                tx,
                shared,
                task: Arc::new(tokio::sync::Mutex::new(Some(task))),
            },
            Messages { rx: in_rx },
        ))
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    async fn enqueue(&self, cmd: Command) -> Result<(), ClientError> {
        if self.is_connected() {
            // Connected: wait for room, the background task is draining.
            self.tx.send(cmd).await.map_err(|_| ClientError::Closed)
        } else {
            match self.tx.try_send(cmd) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => Err(ClientError::QueueFull),
                Err(mpsc::error::TrySendError::Closed(_)) => Err(ClientError::Closed),
            }
        }
    }

    /// Publishes and waits until it is done for its QoS.
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<ReasonCode, ClientError> {
        self.publish_message(OutgoingMessage::new(topic, payload, qos, retain))
            .await
    }

    /// Publishes a message with properties and waits until it is done.
    pub async fn publish_message(&self, msg: OutgoingMessage) -> Result<ReasonCode, ClientError> {
        self.start_publish(msg).await?.await
    }

    /// Queues a message and returns as soon as it is accepted, with a token
    /// that completes when it is done: for pipelining many publishes.
    pub async fn start_publish(&self, msg: OutgoingMessage) -> Result<PublishToken, ClientError> {
        if !mqtt_codec::topic::valid_topic_name(&msg.topic) {
            return Err(ClientError::Invalid(format!(
                "invalid topic name {:?}",
                msg.topic
            )));
        }
        let (done, rx) = oneshot::channel();
        self.enqueue(Command::Publish { msg, done }).await?;
        Ok(PublishToken { rx })
    }

    /// Subscribes to one filter; returns the granted QoS as a reason code
    /// (`Success` = QoS 0, `GrantedQoS1`, `GrantedQoS2`) or the failure.
    pub async fn subscribe(
        &self,
        filter: impl Into<String>,
        qos: QoS,
    ) -> Result<ReasonCode, ClientError> {
        let codes = self
            .subscribe_with(vec![(filter.into(), SubscriptionOptions::qos(qos))], None)
            .await?;
        first_code(codes)
    }

    /// Subscribes to several filters with full MQTT 5 options and an
    /// optional Subscription Identifier; returns one code per filter.
    pub async fn subscribe_with(
        &self,
        filters: Vec<(String, SubscriptionOptions)>,
        sub_id: Option<u32>,
    ) -> Result<Vec<ReasonCode>, ClientError> {
        if filters.is_empty() {
            return Err(ClientError::Invalid("no topic filter".into()));
        }
        if let Some((f, _)) = filters
            .iter()
            .find(|(f, _)| !mqtt_codec::topic::valid_topic_filter(f))
        {
            return Err(ClientError::Invalid(format!("invalid topic filter {f:?}")));
        }
        let (done, rx) = oneshot::channel();
        self.enqueue(Command::Subscribe {
            filters,
            sub_id,
            done,
        })
        .await?;
        rx.await.unwrap_or(Err(ClientError::Closed))
    }

    /// Unsubscribes from one filter.
    pub async fn unsubscribe(&self, filter: impl Into<String>) -> Result<ReasonCode, ClientError> {
        let filters = vec![filter.into()];
        if !mqtt_codec::topic::valid_topic_filter(&filters[0]) {
            return Err(ClientError::Invalid(format!(
                "invalid topic filter {:?}",
                filters[0]
            )));
        }
        let (done, rx) = oneshot::channel();
        self.enqueue(Command::Unsubscribe { filters, done }).await?;
        first_code(rx.await.unwrap_or(Err(ClientError::Closed))?)
    }

    /// Sends DISCONNECT (so no will is published), closes the connection and
    /// stops reconnecting. Packets already written are flushed first;
    /// publishes not yet sent fail with [`ClientError::Closed`], so await
    /// the publishes that must go out before disconnecting.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        self.shared.stop.send_replace(true);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
        Ok(())
    }
}

fn first_code(codes: Vec<ReasonCode>) -> Result<ReasonCode, ClientError> {
    match codes.first() {
        Some(c) if c.is_error() => Err(ClientError::Rejected(*c)),
        Some(c) => Ok(*c),
        None => Err(ClientError::Protocol(
            "acknowledgement without reason codes".into(),
        )),
    }
}
