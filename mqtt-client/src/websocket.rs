//! MQTT over WebSocket (`ws://`, `wss://`; MQTT 5.0 / 3.1.1 section 6): the
//! upgrade offering the `mqtt` subprotocol over the TCP or TLS stream
//! `transport.rs` opened, and the WebSocket seen as a byte stream so the
//! event loop runs unchanged over it. Packets go out in binary frames (one
//! per write); incoming binary frames are concatenated, since a frame may
//! hold several packets or part of one. A text frame from the server ends
//! the connection [MQTT-6.0.0-1].

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::error::ClientError;
use crate::options::ConnectOptions;
use crate::transport::Stream;

/// The largest MQTT packet (and so WebSocket message) there can be.
const MQTT_MAX_PACKET: usize = 268_435_460;

/// Upgrades `stream` to a WebSocket at `path` on the options' host, offering
/// the `mqtt` subprotocol, and checks the server chose it.
pub(crate) async fn upgrade(
    stream: Box<dyn Stream>,
    opts: &ConnectOptions,
    path: &str,
) -> Result<WsStream, ClientError> {
    let scheme = if opts.tls.is_some() { "wss" } else { "ws" };
    let host = if opts.host.contains(':') {
        format!("[{}]", opts.host)
    } else {
        opts.host.clone()
    };
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let url = format!("{scheme}://{host}:{}{path}", opts.port);
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::Invalid(format!("WebSocket URL {url}: {e}")))?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static("mqtt"),
    );
    let max = opts.max_packet_size.map_or(MQTT_MAX_PACKET, |m| m as usize);
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .write_buffer_size(0);
    // tungstenite checks that the server echoed the subprotocol offered.
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .map_err(|e| ClientError::Connection(format!("WebSocket upgrade at {url}: {e}")))?;
    Ok(WsStream {
        ws,
        rest: Bytes::new(),
        taken: 0,
    })
}

/// A WebSocket connection as a byte stream.
pub(crate) struct WsStream {
    ws: WebSocketStream<Box<dyn Stream>>,
    /// The unread rest of the last binary message.
    rest: Bytes,
    /// Bytes handed to the WebSocket but not yet reported written: a write
    /// completes once its frame is flushed.
    taken: usize,
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        e => io::Error::other(e),
    }
}

impl AsyncRead for WsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.rest.is_empty() {
                let n = this.rest.len().min(buf.remaining());
                buf.put_slice(&this.rest[..n]);
                this.rest.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Poll::Ready(Ok(()))
                }
                Some(Ok(Message::Binary(b))) => this.rest = b,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the server sent a WebSocket text frame (MQTT uses binary frames)",
                    )))
                }
                // Pings are answered by tungstenite; a close is echoed on
                // the next poll, which then ends the stream.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.taken == 0 {
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(to_io)?;
            Pin::new(&mut this.ws)
                .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
                .map_err(to_io)?;
            this.taken = buf.len();
        }
        ready!(Pin::new(&mut this.ws).poll_flush(cx)).map_err(to_io)?;
        Poll::Ready(Ok(std::mem::take(&mut this.taken)))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}
