//! A WebSocket connection seen as a byte stream, so the MQTT connection code
//! (CONNECT checks, auth, ACLs, limits, keep alive, wills) runs unchanged
//! over it.
//!
//! MQTT 5.0 section 6 / 3.1.1 section 6: packets travel in binary frames
//! only; a frame may hold several packets or part of one, so the payloads
//! are simply concatenated into the byte stream the packet reader cuts.
//! A text frame closes the connection [MQTT-6.0.0-1] (close code 1003);
//! a message larger than `max_packet_size` closes it with 1009, a framing
//! error with 1002. Pings are answered and a close is echoed by tungstenite.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::broker::BrokerState;
use crate::transport::Transport;

/// MQTT over one WebSocket connection.
pub(crate) struct WsStream<S> {
    ws: WebSocketStream<S>,
    peer: SocketAddr,
    broker: Arc<BrokerState>,
    /// The unread rest of the last binary message.
    rest: Bytes,
    /// Bytes handed to the WebSocket but not yet reported written: a write
    /// completes only once its frame is flushed, so nothing waits in
    /// tungstenite's buffer after the connection stops writing.
    taken: usize,
    /// Set when this side closes the WebSocket for an error, so the socket
    /// lingers for the client's close (`linger.rs`).
    failed: Arc<AtomicBool>,
    /// How the stream ended, met while a read had bytes to give already.
    ended: Option<End>,
}

impl<S> WsStream<S> {
    pub fn new(
        ws: WebSocketStream<S>,
        peer: SocketAddr,
        broker: Arc<BrokerState>,
        failed: Arc<AtomicBool>,
    ) -> Self {
        WsStream {
            ws,
            peer,
            broker,
            rest: Bytes::new(),
            taken: 0,
            failed,
            ended: None,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Logs and counts a violation, starts the close handshake with `code`
    /// (best effort: a peer that does not read does not hold us up), and
    /// returns the error that ends the connection.
    fn fail(&mut self, cx: &mut Context<'_>, code: CloseCode, why: String) -> io::Error {
        self.broker.stats.websocket_errors.inc();
        self.failed.store(true, Ordering::Relaxed);
        tracing::warn!(peer = %self.peer, close_code = u16::from(code), "WebSocket: {why}: closing");
        let mut ws = Pin::new(&mut self.ws);
        if let Poll::Ready(Ok(())) = ws.as_mut().poll_ready(cx) {
            let frame = CloseFrame {
                code,
                reason: why.as_str().into(),
            };
            if ws.as_mut().start_send(Message::Close(Some(frame))).is_ok() {
                let _ = ws.poll_flush(cx);
            }
        }
        io::Error::new(io::ErrorKind::InvalidData, why)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// The next binary payload, or how the stream ends. Pings, pongs and
    /// close frames are tungstenite's business and passed over.
    fn poll_payload(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, End>> {
        loop {
            let msg = match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                // The close handshake is complete, or the peer went away.
                None => return Poll::Ready(Err(End::Eof)),
                Some(m) => m,
            };
            let e = match msg {
                Ok(Message::Binary(b)) => return Poll::Ready(Ok(b)),
                // Pings are answered by tungstenite on the next read or
                // write; a received close is echoed on the next poll, which
                // then ends the stream.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_)) => {
                    continue
                }
                Ok(Message::Text(_)) => self.fail(
                    cx,
                    CloseCode::Unsupported,
                    "text frame (MQTT uses binary frames only, MQTT-6.0.0-1)".into(),
                ),
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    return Poll::Ready(Err(End::Eof))
                }
                Err(WsError::Capacity(e)) => self.fail(
                    cx,
                    CloseCode::Size,
                    format!("message larger than max_packet_size ({e})"),
                ),
                Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    // The TCP connection ended, possibly mid-frame.
                    self.broker.stats.websocket_errors.inc();
                    tracing::info!(peer = %self.peer, "WebSocket: connection ended without a close frame");
                    io::ErrorKind::UnexpectedEof.into()
                }
                Err(WsError::Protocol(e)) => {
                    self.fail(cx, CloseCode::Protocol, format!("framing error ({e})"))
                }
                Err(WsError::Io(e)) => e,
                Err(e) => self.fail(cx, CloseCode::Protocol, e.to_string()),
            };
            return Poll::Ready(Err(End::Error(e)));
        }
    }
}

/// How the byte stream ends.
enum End {
    Eof,
    Error(io::Error),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    /// Fills `buf` with as many binary payloads as are ready, not just one:
    /// a client that sends each packet in its own frame (most do) then
    /// still has a window of packets read, handled and acknowledged in one
    /// go, as over TCP, instead of one wake-up and one written frame per
    /// packet. An end met after some bytes were given is reported on the
    /// next read.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let start = buf.filled().len();
        loop {
            if !this.rest.is_empty() {
                let n = this.rest.len().min(buf.remaining());
                buf.put_slice(&this.rest[..n]);
                this.rest.advance(n);
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
            }
            if let Some(end) = this.ended.take() {
                if buf.filled().len() > start {
                    this.ended = Some(end);
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(match end {
                    End::Eof => Ok(()),
                    End::Error(e) => Err(e),
                });
            }
            match this.poll_payload(cx) {
                Poll::Ready(Ok(b)) => this.rest = b,
                Poll::Ready(Err(end)) => this.ended = Some(end),
                Poll::Pending if buf.filled().len() > start => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
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
            // One binary frame per write: the connection already gathers
            // many packets into one write.
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

    /// Sends a close frame (1000) unless one was sent already, and waits
    /// for it to be written.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        e => io::Error::other(e),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for WsStream<S> {
    type Read = ReadHalf<Self>;
    type Write = WriteHalf<Self>;

    /// Reading and writing share the WebSocket state (a read may answer a
    /// ping), so the halves share it through tokio's split, as TLS does.
    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}
